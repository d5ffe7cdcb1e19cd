//! tapflow's data plane. See README.md.
#![forbid(unsafe_code)]
#[cfg(feature = "dpdk")]
pub use dpdk;
#[cfg(feature = "dpdk")]
pub mod dpdk_source;
pub mod event_output;
pub mod export_loop;
pub mod ext;
pub mod parse;
pub mod pcap;
pub mod policy;
pub mod policy_stage;
pub mod source;
pub mod synth;
pub mod worker;

pub use source::{BurstStatus, MAX_BURST, Packet, PacketSource, SourceError, SourceStats};
