//! Packet sources: everything that delivers bursts of frames to a worker.

use std::fmt;

/// Most frames a source delivers in one burst.
pub const MAX_BURST: usize = 64;

/// One received frame, borrowed from the source for the duration of a burst callback.
#[derive(Clone, Copy, Debug, Default)]
pub struct Packet<'a> {
    /// Captured bytes, starting at the Ethernet header.
    pub data: &'a [u8],
    /// Length on the wire (may exceed `data.len()` when the capture was truncated).
    pub wire_len: u32,
    /// Receive or capture time, microseconds since the Unix epoch.
    pub timestamp_us: u64,
    /// Input port (ingressInterface).
    pub port: u16,
}

/// What one poll of a source produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BurstStatus {
    /// This many packets were handed to the sink (possibly 0 on a live port).
    Delivered(usize),
    /// The source has nothing more to deliver (end of a file or replay).
    Ended,
}

/// Counters a source keeps about what it received and what the device dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Frames the NIC dropped because the rx queue was full (DPDK imissed).
    pub rx_missed: u64,
    /// Frames the NIC received with errors (DPDK ierrors).
    pub rx_errors: u64,
    /// Frames dropped because no mbuf was free (DPDK rx_nombuf).
    pub rx_nombuf: u64,
}

/// Why a source failed. Always carries a message an operator can act on.
#[derive(Debug)]
pub struct SourceError {
    pub message: String,
}

impl SourceError {
    pub fn new(message: impl Into<String>) -> Self {
        SourceError {
            message: message.into(),
        }
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SourceError {}

/// A burst-oriented source of frames: a DPDK port queue or a capture file.
pub trait PacketSource {
    /// Receives at most [`MAX_BURST`] frames and hands them to `sink` in one call.
    /// The frames are valid only during the call.
    fn poll_burst(
        &mut self,
        sink: &mut dyn FnMut(&[Packet<'_>]),
    ) -> Result<BurstStatus, SourceError>;

    /// Counters so far.
    fn stats(&self) -> SourceStats;
}
