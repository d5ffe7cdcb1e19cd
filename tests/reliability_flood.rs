//! A SYN flood into a small cache, through the `tapflow` binary: two long-lived large
//! flows interleaved with about a million one-packet SYN flows from distinct sources,
//! replayed with `--cache-size 4096`. The cache must evict (counted as lack of
//! resources) instead of growing, the large flows must keep exact counts, every IP packet
//! of the file must come out in some record, and the process's memory must stay bounded
//! by what the cache and the export queue can hold, not by the number of flows.

mod common;
#[path = "../exporter/tests/common/mod.rs"]
#[allow(unused_imports)]
mod decode;

use std::io::{BufWriter, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4, SocketAddrV6};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{BackgroundCollector, FiveTuple, Totals, assert_same_flows, scratch_dir, tapflow};
use decode::Decoder;
use probe::pcap::PcapWriter;
use probe::synth::{self, FrameOptions, tcp_flags};

/// One-packet SYN flows in the flood.
const SYN_FLOWS: u32 = 1_000_000;
/// A packet of each large flow after every this many SYNs.
const LARGE_EVERY: u32 = 50;
const CACHE_SIZE: usize = 4096;
const START_US: u64 = 1_700_000_000_000_000;

/// Peak resident memory allowed to the replay. What tapflow holds, worst case: the cache
/// (4096 x 68 bytes = 0.3 MB), the export queue and the recycling queue (1024 batches each,
/// of up to 320 records of 96 bytes: 2 x 31 MB), the capture reader's burst buffer and
/// per-collector datagram buffers (well under 1 MB), plus the debug binary and its
/// libraries (about 20 MB, DPDK's shared objects mapped). 128 MB covers that with margin,
/// and is far below what keeping every flow would take (a million flows at 68 bytes in a
/// table sized for them, 2^21 x 68 = 143 MB, plus their records).
const PEAK_RSS_LIMIT_KB: u64 = 128 * 1024;

fn large_v4() -> (SocketAddrV4, SocketAddrV4) {
    (
        "10.1.0.1:40000".parse().unwrap(),
        "10.2.0.1:443".parse().unwrap(),
    )
}

fn large_v6() -> (SocketAddrV6, SocketAddrV6) {
    (
        "[fd00::a]:50000".parse().unwrap(),
        "[fd00::b]:4789".parse().unwrap(),
    )
}

/// Writes the flood; returns the capture's frame count and the large flows' totals
/// (octets read back from each frame's IP header by etherparse).
fn write_flood(path: &Path) -> (u64, Totals) {
    let file = std::fs::File::create(path).unwrap();
    let mut writer = PcapWriter::new(BufWriter::with_capacity(1 << 20, file)).unwrap();
    let mut frame = Vec::with_capacity(2048);
    let mut large = Totals::new();
    let mut frames = 0u64;
    let mut time_us = START_US;
    let mut write = |frame: &[u8], large_flow: bool, large: &mut Totals| {
        writer.write_packet(time_us, frame).unwrap();
        time_us += 1;
        frames += 1;
        if large_flow {
            let (tuple, octets) = tuple_of(frame);
            let e = large.entry(tuple).or_default();
            e.0 += 1;
            e.1 += octets;
        }
    };
    let (a_src, a_dst) = large_v4();
    let (b_src, b_dst) = large_v6();
    for i in 0..SYN_FLOWS {
        if i % LARGE_EVERY == 0 {
            let payload_len = (i / LARGE_EVERY % 1400) as usize;
            let opts = FrameOptions {
                payload_len,
                ..FrameOptions::default()
            };
            let flags = if i == 0 {
                tcp_flags::SYN
            } else {
                tcp_flags::ACK | tcp_flags::PSH
            };
            synth::eth_ipv4_tcp(&mut frame, a_src, a_dst, flags, &opts);
            write(&frame, true, &mut large);
            synth::eth_ipv6_udp(&mut frame, b_src, b_dst, &opts);
            write(&frame, true, &mut large);
        }
        // Distinct sources from 100.64.0.0/10, the ports varying as well.
        let src = SocketAddrV4::new(Ipv4Addr::from(0x6440_0000 | i), 1024 + (i % 60_000) as u16);
        let dst = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1), 80);
        synth::eth_ipv4_tcp(
            &mut frame,
            src,
            dst,
            tcp_flags::SYN,
            &FrameOptions::default(),
        );
        write(&frame, false, &mut large);
    }
    writer.into_inner().unwrap();
    (frames, large)
}

/// A frame's five-tuple and IP length, by etherparse.
fn tuple_of(frame: &[u8]) -> (FiveTuple, u64) {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let packet = SlicedPacket::from_ethernet(frame).unwrap();
    let (src, dst, proto, octets) = match packet.net.unwrap() {
        NetSlice::Ipv4(ip) => {
            let h = ip.header();
            (
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                h.protocol().0,
                u64::from(h.total_len()),
            )
        }
        NetSlice::Ipv6(ip) => {
            let h = ip.header();
            (
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                ip.payload().ip_number.0,
                u64::from(h.payload_length()) + 40,
            )
        }
        other => panic!("unexpected {other:?}"),
    };
    let (sp, dp) = match packet.transport.unwrap() {
        TransportSlice::Tcp(t) => (t.source_port(), t.destination_port()),
        TransportSlice::Udp(u) => (u.source_port(), u.destination_port()),
        other => panic!("unexpected {other:?}"),
    };
    ((src, dst, sp, dp, proto), octets)
}

/// Runs `child` to completion, reading its peak RSS (VmHWM) while it lives; returns its
/// stdout, stderr, success and the last peak seen.
fn run_measured(mut child: Child) -> (String, String, bool, u64) {
    let pid = child.id();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).unwrap();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).unwrap();
        s
    });
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut peak_kb = 0;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        // VmHWM only grows, so the last reading before exit is the peak but for the
        // process's last few milliseconds (the final summary).
        if let Some(hwm) = common::status_kb(pid, "VmHWM") {
            peak_kb = peak_kb.max(hwm);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("replay did not finish within 300 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        out.join().unwrap(),
        err.join().unwrap(),
        status.success(),
        peak_kb,
    )
}

/// Per-flow totals and the number of flow records among IPFIX `datagrams`.
fn ipfix_totals(datagrams: &[Vec<u8>]) -> (Totals, u64) {
    let mut decoder = Decoder::default();
    let mut totals = Totals::new();
    let mut records = 0;
    for d in datagrams {
        for r in decoder.message(d).data() {
            records += 1;
            let (key, (packets, octets)) = r.five_tuple_and_counts();
            let e = totals.entry(key).or_default();
            e.0 += packets;
            e.1 += octets;
        }
    }
    (totals, records)
}

fn flood(source: &str, rss_limit_kb: u64) {
    let dir = scratch_dir(&format!("flood-{source}"));
    let pcap = dir.join("flood.pcap");
    let (frames, large) = write_flood(&pcap);
    assert_eq!(large.len(), 2);

    let receiver = BackgroundCollector::start();
    let child = tapflow()
        .arg("replay")
        .arg(&pcap)
        .args(["--collector", &receiver.addr, "--source", source])
        .args(["--cache-size", &CACHE_SIZE.to_string()])
        // Paced so the test's receiver keeps up; the workers wait (replays lose nothing).
        .args(["--pace", "40000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (stdout, stderr, ok, peak_kb) = run_measured(child);
    let datagrams = receiver.finish();
    let _ = std::fs::remove_file(&pcap);
    assert!(ok, "replay failed:\n{stdout}\n{stderr}");
    eprintln!(
        "flood via {source}: {frames} frames, peak RSS {} MB",
        peak_kb / 1024
    );

    // The cache evicted instead of growing, and said why.
    let evicted = common::counter(&stdout, "flows ended: lack_of_resources");
    assert!(
        evicted > u64::from(SYN_FLOWS) - CACHE_SIZE as u64 * 2,
        "{stdout}"
    );
    // Every IP packet of the file is in some record, and the records reached the socket.
    assert_eq!(
        common::counter(&stdout, "packets received"),
        frames,
        "{stdout}"
    );
    assert_eq!(common::counter(&stdout, "not in any flow"), 0, "{stdout}");
    assert_eq!(
        common::counter(&stdout, "packets in records"),
        frames,
        "{stdout}"
    );
    let (totals, records) = ipfix_totals(&datagrams);
    assert_eq!(
        records,
        common::counter(&stdout, "records to exporter"),
        "{stdout}"
    );
    assert_eq!(totals.values().map(|t| t.0).sum::<u64>(), frames);

    // The large flows kept exact counts through the flood.
    let actual_large: Totals = totals
        .into_iter()
        .filter(|(k, _)| large.contains_key(k))
        .collect();
    assert_same_flows("large flows", &large, &actual_large);

    assert!(peak_kb > 0, "no VmHWM read");
    assert!(
        peak_kb <= rss_limit_kb,
        "peak RSS {} MB over the {} MB bound",
        peak_kb / 1024,
        rss_limit_kb / 1024
    );
}

#[test]
fn a_syn_flood_into_a_small_cache_evicts_and_keeps_large_flows_exact() {
    flood("file", PEAK_RSS_LIMIT_KB);
}

/// Through DPDK's pcap driver: EAL and the packet pool add their own fixed memory (about
/// 70 MB measured for a replay, whatever the capture's size), hence the larger bound.
#[cfg(feature = "dpdk")]
#[test]
fn a_syn_flood_through_dpdk_evicts_and_keeps_large_flows_exact() {
    flood("dpdk", PEAK_RSS_LIMIT_KB + 96 * 1024);
}
