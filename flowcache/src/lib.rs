//! tapflow's flow cache. See README.md.
mod aggregate;
mod config;
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
/// For extensions' own tables (the KPI extension's conversation table prefetches too).
pub use hint::prefetch_read;
pub use record::{
    AggregateRecord, EndReason, FlowKey, FlowRecord, Observation, SamplingAlgorithm, SamplingInfo,
};
pub use sampler::{DEFAULT_RANDOM_SEED, Sampler, SamplerSpec, SamplerSpecError};
pub use shard::{CacheStats, ENTRY_BYTES, FlowShard, HINT_TRUST_MS, MAX_TIMEOUT_MS};
