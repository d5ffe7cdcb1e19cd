//! tapflow's data plane. See README.md.
pub mod pcap;
pub mod source;

pub use source::{BurstStatus, MAX_BURST, Packet, PacketSource, SourceError, SourceStats};
