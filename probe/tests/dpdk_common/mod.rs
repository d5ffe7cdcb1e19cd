//! Shared by the dpdk_* tests: generated pcap traces with known contents.
#![allow(dead_code)]

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use probe::pcap::PcapWriter;

/// One frame as written to a trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub timestamp_us: u64,
    pub bytes: Vec<u8>,
}

/// A directory under the system temp dir, unique to this process and call, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("tapflow-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `count` frames of lengths spread over 60..=1514, each with bytes unique to it (its
/// index is in the first payload bytes) and strictly increasing, irregular timestamps.
pub fn frames(count: usize, seed: u8) -> Vec<Frame> {
    let mut timestamp_us = 1_700_000_000_000_000u64 + u64::from(seed) * 1_000_000;
    (0..count)
        .map(|i| {
            let len = 60 + (i * 397 + usize::from(seed) * 31) % (1514 - 60 + 1);
            let mut bytes = Vec::with_capacity(len);
            // Ethernet: locally administered MACs, the local experimental EtherType.
            bytes.extend_from_slice(&[0x02, 0, 0, 0, seed, 1, 0x02, 0, 0, 0, seed, 2, 0x88, 0xb5]);
            bytes.extend_from_slice(&(i as u32).to_be_bytes());
            while bytes.len() < len {
                let j = bytes.len();
                bytes.push((i.wrapping_mul(31) ^ j.wrapping_mul(7) ^ usize::from(seed)) as u8);
            }
            timestamp_us += 1 + (i as u64 * 7919) % 250_000;
            Frame {
                timestamp_us,
                bytes,
            }
        })
        .collect()
}

/// Writes `frames` as a classic pcap file.
pub fn write_pcap(path: &Path, frames: &[Frame]) {
    let mut writer = PcapWriter::new(BufWriter::new(File::create(path).expect("create pcap")))
        .expect("pcap header");
    for f in frames {
        writer
            .write_packet(f.timestamp_us, &f.bytes)
            .expect("write frame");
    }
    writer.into_inner().expect("flush pcap");
}

/// Polls `source` to its end, collecting every frame; panics after `max_polls` polls so a
/// broken source fails the test instead of hanging it.
pub fn drain(
    source: &mut dyn probe::PacketSource,
    max_polls: usize,
) -> Result<Vec<(Frame, u32, u16)>, probe::SourceError> {
    let mut got = Vec::new();
    for _ in 0..max_polls {
        let status = source.poll_burst(&mut |packets| {
            for p in packets {
                got.push((
                    Frame {
                        timestamp_us: p.timestamp_us,
                        bytes: p.data.to_vec(),
                    },
                    p.wire_len,
                    p.port,
                ));
            }
        })?;
        if status == probe::BurstStatus::Ended {
            return Ok(got);
        }
    }
    panic!(
        "source did not end within {max_polls} polls ({} frames so far)",
        got.len()
    );
}
