//! Capture files: a classic pcap writer (for generated test and benchmark traces) and the
//! native pcap/pcapng reader, a [`crate::PacketSource`] that needs no EAL.

use std::io::{self, Write};

/// Classic pcap magic for microsecond timestamps, written in native byte order.
const PCAP_MAGIC_US: u32 = 0xa1b2_c3d4;
const LINKTYPE_ETHERNET: u32 = 1;
const SNAPLEN: u32 = 262_144;

/// Writes classic pcap (microsecond timestamps, Ethernet link type).
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    out: W,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the global header.
    pub fn new(mut out: W) -> io::Result<Self> {
        let mut header = [0u8; 24];
        header[0..4].copy_from_slice(&PCAP_MAGIC_US.to_ne_bytes());
        header[4..6].copy_from_slice(&2u16.to_ne_bytes());
        header[6..8].copy_from_slice(&4u16.to_ne_bytes());
        // thiszone and sigfigs stay zero.
        header[16..20].copy_from_slice(&SNAPLEN.to_ne_bytes());
        header[20..24].copy_from_slice(&LINKTYPE_ETHERNET.to_ne_bytes());
        out.write_all(&header)?;
        Ok(PcapWriter { out })
    }

    /// Appends one frame captured whole at `timestamp_us` (microseconds since the epoch).
    pub fn write_packet(&mut self, timestamp_us: u64, frame: &[u8]) -> io::Result<()> {
        let len = u32::try_from(frame.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
        let secs = u32::try_from(timestamp_us / 1_000_000).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "timestamp beyond pcap's 32-bit seconds")
        })?;
        let mut record = [0u8; 16];
        record[0..4].copy_from_slice(&secs.to_ne_bytes());
        record[4..8].copy_from_slice(&((timestamp_us % 1_000_000) as u32).to_ne_bytes());
        record[8..12].copy_from_slice(&len.to_ne_bytes());
        record[12..16].copy_from_slice(&len.to_ne_bytes());
        self.out.write_all(&record)?;
        self.out.write_all(frame)
    }

    /// Flushes and returns the underlying writer.
    pub fn into_inner(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}
