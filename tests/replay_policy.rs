//! Policies end to end: a capture with traffic for each rule, replayed with a
//! configuration of two collectors (nfcapd each). At the collectors (nfdump's decoding)
//! and in the JSON records: each rule's flows arrive under its key, sampled as it says,
//! with its policy name and tag; ignored traffic makes no record; each collector gets
//! only its policies' records; traffic no rule selects is metered as without policies.
//! The truth is built here from the generated flows.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::path::Path;

use common::{FiveTuple, Nfcapd, have, scratch_dir, tapflow, text};
use flowcache::{FlowKey, flow_sample_hash};
use probe::synth::{FrameOptions, eth_ipv4_tcp, eth_ipv4_udp, tcp_flags};

/// Writes `frames` as a pcap (microsecond timestamps, Ethernet), one every 100 µs.
fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    let start_us: u64 = 1_700_000_000_000_000;
    for (i, frame) in frames.iter().enumerate() {
        let us = start_us + i as u64 * 100;
        out.extend_from_slice(&((us / 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((us % 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(frame);
    }
    std::fs::write(path, out).unwrap();
}

/// One generated flow: its 5-tuple and its packets (all of one size).
#[derive(Clone, Copy, Debug)]
struct Flow {
    src: SocketAddrV4,
    dst: SocketAddrV4,
    tcp: bool,
    packets: u64,
}

impl Flow {
    fn tuple(&self) -> FiveTuple {
        (
            IpAddr::V4(*self.src.ip()),
            IpAddr::V4(*self.dst.ip()),
            self.src.port(),
            self.dst.port(),
            if self.tcp { 6 } else { 17 },
        )
    }

    fn frame(&self) -> Vec<u8> {
        let mut frame = Vec::new();
        if self.tcp {
            eth_ipv4_tcp(
                &mut frame,
                self.src,
                self.dst,
                tcp_flags::ACK,
                &FrameOptions::default(),
            );
        } else {
            eth_ipv4_udp(&mut frame, self.src, self.dst, &FrameOptions::default());
        }
        frame
    }

    /// IP total length: 40 for TCP, 28 for UDP (no payload).
    fn octets(&self) -> u64 {
        self.packets * if self.tcp { 40 } else { 28 }
    }

    fn sample_hash(&self) -> u64 {
        let mut key = FlowKey {
            protocol: if self.tcp { 6 } else { 17 },
            src_port: self.src.port(),
            dst_port: self.dst.port(),
            ..FlowKey::default()
        };
        key.set_addrs(IpAddr::V4(*self.src.ip()), IpAddr::V4(*self.dst.ip()));
        flow_sample_hash(&key)
    }
}

fn v4(a: u8, b: u8, c: u8, d: u8, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), port)
}

const ZERO: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

type Expected = BTreeMap<FiveTuple, (u64, u64)>;

fn add(expected: &mut Expected, tuple: FiveTuple, packets: u64, octets: u64) {
    let e = expected.entry(tuple).or_default();
    e.0 += packets;
    e.1 += octets;
}

#[test]
fn each_rule_gets_its_key_sampling_tag_and_collectors() {
    if !have("nfcapd") || !have("nfdump") {
        panic!("nfcapd and nfdump (package nfdump) must be installed: scripts/setup.sh does it");
    }
    let dir = scratch_dir("replay-policy");
    // dmz-web: 5-tuple, hash:4, to "nfcapd" only, tag 7.
    let web: Vec<Flow> = (0..80)
        .map(|i| Flow {
            src: v4(10, 0, (i / 200) as u8, (i % 200) as u8 + 1, 40_000 + i),
            dst: v4(192, 0, 2, (i % 5) as u8 + 10, 443),
            tcp: true,
            packets: 10,
        })
        .collect();
    // backups: ignored.
    let backups: Vec<Flow> = (0..12)
        .map(|i| Flow {
            src: v4(10, 9, 0, i as u8 + 1, 50_000 + i),
            dst: v4(192, 0, 2, 9, 873),
            tcp: true,
            packets: 6,
        })
        .collect();
    // dns: protocol-port key, to "dmz" only, tag 5. Five source ports over 20 flows.
    let dns: Vec<Flow> = (0..20)
        .map(|i| Flow {
            src: v4(10, 1, 0, i as u8 + 1, 5_000 + i % 5),
            dst: v4(198, 51, 100, 53, 53),
            tcp: false,
            packets: 3,
        })
        .collect();
    // per-dst: destination key, every collector, tag 9. Three destinations.
    let per_dst: Vec<Flow> = (0..30)
        .map(|i| Flow {
            src: v4(172, 20, 0, i as u8 + 1, 6_000 + i),
            dst: v4(203, 0, 113, (i % 3) as u8 + 1, 8_080 + i),
            tcp: i % 2 == 0,
            packets: 4,
        })
        .collect();
    // No rule: metered as without policies, to every collector.
    let other: Vec<Flow> = (0..15)
        .map(|i| Flow {
            src: v4(172, 16, 0, i as u8 + 1, 7_000 + i),
            dst: v4(172, 17, 0, 1, 9_999),
            tcp: false,
            packets: 5,
        })
        .collect();
    let all: Vec<&Flow> = web
        .iter()
        .chain(&backups)
        .chain(&dns)
        .chain(&per_dst)
        .chain(&other)
        .collect();
    // Packets round-robin over the flows, so flows interleave as on a link.
    let rounds = all.iter().map(|f| f.packets).max().unwrap();
    let mut frames = Vec::new();
    for round in 0..rounds {
        for flow in &all {
            if round < flow.packets {
                frames.push(flow.frame());
            }
        }
    }
    let pcap = dir.join("policy.pcap");
    write_pcap(&pcap, &frames);

    // The truth per collector, as nfdump prints keys (reduced keys have 0 addresses).
    let kept_web: Vec<&Flow> = web.iter().filter(|f| f.sample_hash() % 4 == 0).collect();
    assert!(
        !kept_web.is_empty() && kept_web.len() < web.len() / 2,
        "hash:4 keeps about a quarter of 80 flows, not {}",
        kept_web.len()
    );
    let mut shared = Expected::new();
    for f in &per_dst {
        add(
            &mut shared,
            (ZERO, IpAddr::V4(*f.dst.ip()), 0, 0, 0),
            f.packets,
            f.octets(),
        );
    }
    for f in &other {
        add(&mut shared, f.tuple(), f.packets, f.octets());
    }
    let mut expect_nfcapd = shared.clone();
    for f in &kept_web {
        add(&mut expect_nfcapd, f.tuple(), f.packets, f.octets());
    }
    let mut expect_dmz = shared.clone();
    for f in &dns {
        add(
            &mut expect_dmz,
            (ZERO, ZERO, f.src.port(), 53, 17),
            f.packets,
            f.octets(),
        );
    }
    assert_eq!(expect_dmz.len(), 3 + 15 + 5);

    let first = Nfcapd::start(&dir.join("first"));
    let second = Nfcapd::start(&dir.join("second"));
    let config = dir.join("tapflow.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[port]]
device = "net_pcap0,rx_pcap={pcap}"

[[collector]]
address = "{first}"
name = "nfcapd"

[[collector]]
address = "{second}"
name = "dmz"

[[policy]]
name = "backups"
dst_port = [873]
action = "ignore"

[[policy]]
name = "dmz-web"
src = ["10.0.0.0/8"]
dst = ["192.0.2.0/24", "2001:db8::/32"]
proto = ["tcp"]
dst_port = ["443", "8000-8100"]
action = "meter"
key = "5-tuple"
sampling = "hash:4"
collectors = ["nfcapd"]
tag = 7

[[policy]]
name = "dns"
proto = ["udp"]
dst_port = [53]
key = "protocol-port"
collectors = ["dmz"]
tag = 5

[[policy]]
name = "per-dst"
dst = ["203.0.113.0/24"]
key = "destination"
tag = 9
"#,
            pcap = pcap.display(),
            first = first.addr(),
            second = second.addr(),
        ),
    )
    .unwrap();
    let json = dir.join("records.jsonl");
    let run = tapflow()
        .args(["replay", pcap.to_str().unwrap(), "--source", "file"])
        .arg("--config")
        .arg(&config)
        .arg("--records-json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", text(&run));
    let stdout = String::from_utf8_lossy(&run.stdout);
    let ignored: u64 = backups.iter().map(|f| f.packets).sum();
    assert_eq!(
        common::counter(&stdout, "ignored by policy"),
        ignored,
        "{stdout}"
    );

    let at_first = common::totals_from_nfdump(&first.stop_and_read());
    let at_second = common::totals_from_nfdump(&second.stop_and_read());
    common::assert_same_flows("collector nfcapd", &expect_nfcapd, &at_first);
    common::assert_same_flows("collector dmz", &expect_dmz, &at_second);

    // The JSON records carry the policy, its tag and its sampling.
    let records: Vec<serde_json::Value> = std::fs::read_to_string(&json)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        records.len(),
        kept_web.len() + 5 + 3 + other.len(),
        "one record per flow or reduced flow, none for backups"
    );
    for r in &records {
        let policy = r.get("policy").and_then(|p| p.as_str());
        let tag = r.get("tag").and_then(|t| t.as_u64());
        let dport = r["dport"].as_u64().unwrap();
        assert_ne!(dport, 873, "ignored traffic made a record: {r}");
        match policy {
            Some("dmz-web") => {
                assert_eq!(tag, Some(7), "{r}");
                assert_eq!(r["sampling"], "hash", "{r}");
                assert_eq!(r["sampling_interval"], 4, "{r}");
                assert_eq!(dport, 443, "{r}");
            }
            Some("dns") => {
                assert_eq!(tag, Some(5), "{r}");
                assert_eq!(
                    (r["src"].as_str(), r["dst"].as_str()),
                    (Some("0.0.0.0"), Some("0.0.0.0"))
                );
                assert_eq!(r["sampling_interval"], 1, "{r}");
            }
            Some("per-dst") => {
                assert_eq!(tag, Some(9), "{r}");
                assert_eq!(r["src"], "0.0.0.0", "{r}");
                assert!(r["dst"].as_str().unwrap().starts_with("203.0.113."), "{r}");
            }
            None => {
                assert_eq!(tag, None, "{r}");
                assert_eq!(r["dst"], "172.17.0.1", "{r}");
            }
            Some(other) => panic!("unknown policy {other}: {r}"),
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
