//! Reads a capture with tapflow's file reader into a sink that only counts: what reading
//! alone costs a replay (BENCHMARKS.md, "File replay").
//!
//! `cargo run --release -p probe --example read_capture -- FILE [PASSES]`
//!
//! Each pass opens the file and reads it to the end; the CPU time is the thread's own
//! (`/proc/thread-self/schedstat`), so other tenants of a shared machine do not count.
//! Prints each pass and the fastest.

use std::path::PathBuf;

use probe::pcap::FileSource;
use probe::{BurstStatus, PacketSource};

/// Nanoseconds this thread has run on a CPU.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next().map(PathBuf::from) else {
        eprintln!("usage: read_capture FILE [PASSES]");
        std::process::exit(2);
    };
    let passes: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(5);
    let mut best = f64::MAX;
    for pass in 1..=passes {
        let started = thread_cpu_ns();
        let mut source = match FileSource::open(&path, 0) {
            Ok(source) => source,
            Err(err) => {
                eprintln!("{err}");
                std::process::exit(1);
            }
        };
        let (mut packets, mut bytes) = (0u64, 0u64);
        loop {
            match source.poll_burst(&mut |burst| {
                packets += burst.len() as u64;
                bytes += burst.iter().map(|p| p.data.len() as u64).sum::<u64>();
            }) {
                Ok(BurstStatus::Delivered(_)) => {}
                Ok(BurstStatus::Ended) => break,
                Err(err) => {
                    eprintln!("{err}");
                    std::process::exit(1);
                }
            }
        }
        let ns = (thread_cpu_ns() - started) as f64;
        let per_packet = ns / packets.max(1) as f64;
        best = best.min(per_packet);
        println!(
            "pass {pass}: {packets} packets, {bytes} captured bytes, {:.1} ms CPU, {per_packet:.1} ns a packet",
            ns / 1e6
        );
    }
    println!(
        "fastest: {best:.1} ns a packet ({:?})",
        FileSource::open(&path, 0).map(|s| s.format()).ok()
    );
}
