//! Packet sources: everything that delivers bursts of frames to a worker.

use std::fmt;

use flowcache::counters::Spec;

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

flowcache::counters! {
    /// Counters a source keeps about what it received and what the device dropped. The
    /// device's counters (`rx_missed`, `rx_errors`, `rx_nombuf`, `rx_xdp_ring_full`) belong
    /// to the whole port: one queue of each port reports them, the others report 0, so a
    /// sum over workers is the sum over ports.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct SourceStats {
        /// What the source delivered: the worker's `packets` and `bytes` count the same.
        rx_packets: u64 = Spec::counter("", "", "Frames the source delivered.").no_row(),
        rx_bytes: u64 = Spec::counter("", "", "Bytes the source delivered.").no_row(),
        /// Frames the NIC dropped because the rx queue was full (DPDK imissed).
        rx_missed: u64 = Spec::counter("tapflow_nic_missed_total", "nic missed",
            "Packets the NIC dropped because the receive rings were full (imissed).")
            .when_nonzero(),
        /// Frames the NIC received with errors (DPDK ierrors).
        rx_errors: u64 = Spec::counter("tapflow_nic_errors_total", "nic errors",
            "Erroneous packets the NIC received (ierrors: bad CRC, runts, ...).")
            .when_nonzero(),
        /// Frames dropped because no mbuf was free (DPDK rx_nombuf).
        rx_nombuf: u64 = Spec::counter("tapflow_nic_nombuf_total", "nic no mbuf",
            "Receive buffer allocation failures of the port (rx_nombuf): the mempool ran dry.")
            .when_nonzero(),
        /// `net_af_xdp`: frames the kernel dropped because a queue's AF_XDP socket had its
        /// rx ring full (`rx_ring_full`; not in `rx_missed`, which DPDK fills with the
        /// sockets' `rx_dropped`).
        rx_xdp_ring_full: u64 = Spec::counter("tapflow_nic_xdp_ring_full_total",
            "nic xdp ring full",
            "Frames the kernel dropped because an AF_XDP socket's receive ring was full \
             (rx_ring_full; net_af_xdp only).")
            .when_nonzero(),
    }
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
