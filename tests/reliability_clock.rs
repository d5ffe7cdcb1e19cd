//! A capture whose clock misbehaves, through the `tapflow` binary: timestamps step back
//! by an hour, return, jump forward by three days, then step back by those days again.
//! The replay must finish promptly, every flow must keep exactly the packets and octets
//! of the ground truth, no record may end before it starts or lie outside the capture's
//! time span, and expiry must keep working (flows idle across the jump end as idle, not
//! as forced at the end of the replay).

mod common;
#[path = "../exporter/tests/common/mod.rs"]
#[allow(unused_imports)]
mod decode;

use std::collections::BTreeMap;
use std::io::{BufWriter, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4, SocketAddrV6};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{
    FiveTuple, Totals, UdpCollector, assert_same_flows, ground_truth, scratch_dir, tapflow,
};
use decode::{Decoder, Record, Value};
use probe::pcap::PcapWriter;
use probe::synth::{self, FrameOptions, tcp_flags};

const T0_MS: u64 = 1_700_000_000_000;
const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;
const SPACING_MS: u64 = 7;

/// Which flows send in a phase.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Set {
    /// IPv4 TCP flows that send only before the backward step.
    EarlyOnly,
    /// IPv4 UDP flows that send only while the clock is an hour behind.
    HourBehind,
    /// IPv6 UDP flows that send in every phase.
    Always,
    /// IPv4 TCP flows that send during the jump and end with FIN.
    FinAfterJump,
}

const FLOWS_PER_SET: u32 = 20;
const PACKETS_PER_PHASE: u32 = 10;

/// Phases: (start of the phase, the sets sending).
fn phases() -> Vec<(u64, Vec<Set>)> {
    use Set::*;
    vec![
        (T0_MS, vec![EarlyOnly, Always]),
        (T0_MS - HOUR_MS, vec![HourBehind, Always]),
        (T0_MS + 10_000, vec![Always]),
        (T0_MS + 3 * DAY_MS, vec![Always, FinAfterJump]),
        (T0_MS + 20_000, vec![Always]),
    ]
}

fn write_frame(set: Set, flow: u32, seq: u32, frame: &mut Vec<u8>) {
    let opts = FrameOptions {
        payload_len: (seq * 37 + flow * 11) as usize % 900,
        ..FrameOptions::default()
    };
    let host = |net: u32| Ipv4Addr::from(net | flow);
    match set {
        Set::EarlyOnly => synth::eth_ipv4_tcp(
            frame,
            SocketAddrV4::new(host(0x0a0a_0000), 30_000),
            SocketAddrV4::new(Ipv4Addr::new(10, 20, 0, 1), 80),
            if seq == 0 {
                tcp_flags::SYN
            } else {
                tcp_flags::ACK
            },
            &opts,
        ),
        Set::HourBehind => synth::eth_ipv4_udp(
            frame,
            SocketAddrV4::new(host(0x0a0b_0000), 5000),
            SocketAddrV4::new(Ipv4Addr::new(10, 20, 0, 2), 53),
            &opts,
        ),
        Set::Always => synth::eth_ipv6_udp(
            frame,
            SocketAddrV6::new(format!("fd00::1:{flow:x}").parse().unwrap(), 6000, 0, 0),
            SocketAddrV6::new("fd00::2".parse().unwrap(), 4789, 0, 0),
            &opts,
        ),
        Set::FinAfterJump => synth::eth_ipv4_tcp(
            frame,
            SocketAddrV4::new(host(0x0a0c_0000), 40_000),
            SocketAddrV4::new(Ipv4Addr::new(10, 20, 0, 3), 443),
            if seq + 1 == PACKETS_PER_PHASE {
                tcp_flags::FIN | tcp_flags::ACK
            } else {
                tcp_flags::ACK
            },
            &opts,
        ),
    }
}

/// Writes the capture; returns the earliest and latest packet time (ms).
fn write_capture(path: &Path) -> (u64, u64) {
    let file = std::fs::File::create(path).unwrap();
    let mut writer = PcapWriter::new(BufWriter::new(file)).unwrap();
    let mut frame = Vec::new();
    let (mut earliest, mut latest) = (u64::MAX, 0);
    for (start, sets) in phases() {
        let mut t = start;
        for seq in 0..PACKETS_PER_PHASE {
            for &set in &sets {
                for flow in 1..=FLOWS_PER_SET {
                    write_frame(set, flow, seq, &mut frame);
                    writer.write_packet(t * 1000, &frame).unwrap();
                    earliest = earliest.min(t);
                    latest = latest.max(t);
                    t += SPACING_MS;
                }
            }
        }
    }
    writer.into_inner().unwrap();
    (earliest, latest)
}

/// One decoded flow record: five-tuple, packets, octets, start, end, end reason.
struct Flow {
    tuple: FiveTuple,
    packets: u64,
    octets: u64,
    start_ms: u64,
    end_ms: u64,
    reason: u64,
}

fn flows(version: &str, datagrams: &[Vec<u8>]) -> Vec<Flow> {
    let mut decoder = Decoder::default();
    let mut out = Vec::new();
    for d in datagrams {
        let message = decoder.message(d);
        // v9 carries times relative to the exporter's boot: unix_secs - sysUptime.
        let boot_ms = u64::from(message.unix_secs) * 1000 - u64::from(message.sys_uptime);
        for r in message.data() {
            let (start_ms, end_ms) = match version {
                "ipfix" => (num(r, 152), num(r, 153)),
                _ => (boot_ms + num(r, 22), boot_ms + num(r, 21)),
            };
            out.push(Flow {
                tuple: (
                    addr(r, 8, 27),
                    addr(r, 12, 28),
                    num(r, 7) as u16,
                    num(r, 11) as u16,
                    num(r, 4) as u8,
                ),
                packets: num(r, 2),
                octets: num(r, 1),
                start_ms,
                end_ms,
                reason: num(r, 136),
            });
        }
    }
    out
}

fn num(r: &Record, id: u16) -> u64 {
    match r.fields.get(&id) {
        Some(Value::Num(n)) => *n,
        other => panic!("field {id}: {other:?} in {r:?}"),
    }
}

fn addr(r: &Record, v4: u16, v6: u16) -> IpAddr {
    match r.fields.get(&v4).or(r.fields.get(&v6)) {
        Some(Value::Addr(a)) => *a,
        other => panic!("address field {v4}/{v6}: {other:?}"),
    }
}

fn replay(version: &str, source: &str) {
    let dir = scratch_dir(&format!("clock-{version}-{source}"));
    let pcap = dir.join("clock.pcap");
    let (earliest, latest) = write_capture(&pcap);
    let collector = UdpCollector::bind();
    let mut child = tapflow()
        .arg("replay")
        .arg(&pcap)
        .args(["--collector", &collector.addr(), "--source", source])
        .args(["--export", version, "--cache-size", "4096"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A few thousand packets: anything beyond seconds means expiry or the clock wedged.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the replay did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{stdout}\n{stderr}");

    let records = flows(version, &collector.drain());
    let mut actual = Totals::new();
    for f in &records {
        let e = actual.entry(f.tuple).or_default();
        e.0 += f.packets;
        e.1 += f.octets;
    }
    assert_same_flows(
        &format!("{version} via {source}"),
        &ground_truth(&pcap),
        &actual,
    );

    // v9 times are whole seconds of the header minus sysUptime: up to a second early.
    let slack = if version == "ipfix" { 0 } else { 1000 };
    for f in &records {
        assert!(
            f.start_ms <= f.end_ms,
            "negative duration: {:?} {}..{}",
            f.tuple,
            f.start_ms,
            f.end_ms
        );
        assert!(
            f.start_ms + slack >= earliest && f.end_ms <= latest + slack,
            "record outside the capture's time span {earliest}..{latest}: {:?} {}..{}",
            f.tuple,
            f.start_ms,
            f.end_ms
        );
        assert!((1..=5).contains(&f.reason), "flowEndReason {}", f.reason);
    }

    // Flows that went quiet before the jump were ended by the sweep as idle, once each;
    // the FIN flows ended on their FIN.
    let by_source = |net: [u8; 3]| -> BTreeMap<FiveTuple, Vec<&Flow>> {
        let mut map: BTreeMap<FiveTuple, Vec<&Flow>> = BTreeMap::new();
        for f in records.iter().filter(|f| match f.tuple.0 {
            IpAddr::V4(a) => a.octets()[..3] == net,
            IpAddr::V6(_) => false,
        }) {
            map.entry(f.tuple).or_default().push(f);
        }
        map
    };
    let early = by_source([10, 10, 0]);
    assert_eq!(early.len(), FLOWS_PER_SET as usize);
    for (tuple, pieces) in &early {
        assert_eq!(pieces.len(), 1, "{tuple:?}");
        assert_eq!(pieces[0].reason, 1, "{tuple:?} should end idle");
        assert_eq!(pieces[0].packets, u64::from(PACKETS_PER_PHASE));
    }
    let fin = by_source([10, 12, 0]);
    assert_eq!(fin.len(), FLOWS_PER_SET as usize);
    for (tuple, pieces) in &fin {
        assert_eq!(pieces.len(), 1, "{tuple:?}");
        assert_eq!(pieces[0].reason, 3, "{tuple:?} should end on its FIN");
    }
}

#[test]
fn ipfix_records_stay_exact_and_ordered_across_clock_steps() {
    replay("ipfix", "file");
}

#[test]
fn v9_records_stay_exact_and_ordered_across_clock_steps() {
    replay("v9", "file");
}

#[cfg(feature = "dpdk")]
#[test]
fn clock_steps_through_dpdk() {
    replay("ipfix", "dpdk");
}
