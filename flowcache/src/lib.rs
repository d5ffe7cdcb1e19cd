//! tapflow's flow cache. See README.md.
mod record;

pub use record::{
    AggregateRecord, EndReason, FlowKey, FlowRecord, Observation, SamplingAlgorithm, SamplingInfo,
};
