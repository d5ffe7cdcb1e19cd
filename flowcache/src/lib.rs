//! tapflow's flow cache. See README.md.
mod aggregate;
mod config;
pub mod counters;
mod extras;
mod hash;
mod hint;
mod record;
mod sampler;
mod shard;

pub use aggregate::{AggregatorStats, DEFAULT_GRACE_MS, ProtocolPortAggregator};
pub use config::{CacheConfig, CacheConfigError, MAX_CAPACITY};
pub use extras::{
    DnsTransaction, PolicyMark, RecordExtras, ReverseCounters, TcpDirectionKpis, TcpKpis,
    TcpOutcome,
};
pub use hash::{flow_hash, flow_sample_hash};
/// For other per-flow tables beside the shard (the worker's policy decisions).
pub use hint::{advise_huge_pages, keys_equal, prefetch_lines, prefetch_read};
pub use record::{
    AggregateRecord, EndReason, FlowKey, FlowRecord, Observation, SamplingAlgorithm, SamplingInfo,
};
pub use sampler::{DEFAULT_RANDOM_SEED, Sampler, SamplerSpec, SamplerSpecError};
pub use shard::{
    Admission, CacheStats, Classifier, ENTRY_BYTES, FlowShard, HINT_TRUST_MS, LogStarts,
    MAX_TIMEOUT_MS, Unclassified,
};
