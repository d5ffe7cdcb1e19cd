//! Synthetic traces: written by `synth::write_pcap`, read back by the native reader, and
//! checked against etherparse (frames, checksums) and against the spec (flows, timing,
//! concurrency, noise).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use flowcache::FlowKey;
use probe::parse::{StopReason, parse_frame};
use probe::pcap::FileSource;
use probe::synth::{self, FrameLen, Noise, TrafficGenerator, TrafficSpec, tcp_flags};
use probe::{BurstStatus, PacketSource};

struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str) -> TempFile {
        TempFile(
            std::env::temp_dir().join(format!("tapflow-pcap-synth-{}-{name}", std::process::id())),
        )
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// (timestamp, frame) of every packet of a file, read with the native reader.
fn read(path: &Path) -> Vec<(u64, Vec<u8>)> {
    let mut source = FileSource::open(path, 0).unwrap();
    let mut out = Vec::new();
    while let BurstStatus::Delivered(_) = source
        .poll_burst(&mut |burst| {
            out.extend(burst.iter().map(|p| (p.timestamp_us, p.data.to_vec())));
        })
        .unwrap()
    {}
    out
}

/// Checks every checksum of an IP frame with etherparse and returns its flow-key fields.
fn etherparse_key(frame: &[u8]) -> (Vec<u8>, Vec<u8>, u8, u16, u16) {
    let sliced = SlicedPacket::from_ethernet(frame).unwrap();
    let (src, dst, protocol): (Vec<u8>, Vec<u8>, u8) = match sliced.net.as_ref().unwrap() {
        NetSlice::Ipv4(ip) => {
            let header = ip.header();
            assert_eq!(
                header.to_header().calc_header_checksum(),
                header.header_checksum()
            );
            (
                header.source().to_vec(),
                header.destination().to_vec(),
                header.protocol().0,
            )
        }
        NetSlice::Ipv6(ip) => (
            ip.header().source().to_vec(),
            ip.header().destination().to_vec(),
            ip.header().next_header().0,
        ),
        NetSlice::Arp(_) => panic!("not an IP frame"),
    };
    let v4 = |bytes: &[u8]| <[u8; 4]>::try_from(bytes).unwrap();
    let v6 = |bytes: &[u8]| <[u8; 16]>::try_from(bytes).unwrap();
    let (src_port, dst_port) = match sliced.transport.as_ref().unwrap() {
        TransportSlice::Tcp(tcp) => {
            let sum = if src.len() == 4 {
                tcp.calc_checksum_ipv4(v4(&src), v4(&dst)).unwrap()
            } else {
                tcp.calc_checksum_ipv6(v6(&src), v6(&dst)).unwrap()
            };
            assert_eq!(sum, tcp.checksum());
            (tcp.source_port(), tcp.destination_port())
        }
        TransportSlice::Udp(udp) => {
            let header = udp.to_header();
            let sum = if src.len() == 4 {
                header.calc_checksum_ipv4_raw(v4(&src), v4(&dst), udp.payload())
            } else {
                header.calc_checksum_ipv6_raw(v6(&src), v6(&dst), udp.payload())
            };
            assert_eq!(sum.unwrap(), udp.checksum());
            (udp.source_port(), udp.destination_port())
        }
        TransportSlice::Icmpv4(icmp) => {
            assert_eq!(
                icmp.icmp_type().calc_checksum(icmp.payload()),
                icmp.checksum()
            );
            (
                0,
                u16::from(icmp.type_u8()) << 8 | u16::from(icmp.code_u8()),
            )
        }
        TransportSlice::Icmpv6(icmp) => {
            let sum = icmp
                .icmp_type()
                .calc_checksum(v6(&src), v6(&dst), icmp.payload())
                .unwrap();
            assert_eq!(sum, icmp.checksum());
            (
                0,
                u16::from(icmp.type_u8()) << 8 | u16::from(icmp.code_u8()),
            )
        }
        TransportSlice::Igmp(_) => panic!("synth makes no IGMP"),
    };
    (src, dst, protocol, src_port, dst_port)
}

#[test]
fn a_trace_holds_the_flows_its_spec_promises() {
    let spec = TrafficSpec {
        flows: 300,
        packets_per_flow: 7,
        live_flows: 50,
        ipv6_share: 0.3,
        vlan_share: 0.2,
        arp_share: 0.02,
        include_noise: true,
        spacing_us: 3,
        seed: 42,
        ..TrafficSpec::default()
    };
    let file = TempFile::new("promises.pcap");
    let written = synth::write_pcap(&spec, &file.0).unwrap();
    assert_eq!(FileSource::count_packets(&file.0).unwrap(), written);
    let packets = read(&file.0);
    assert_eq!(packets.len() as u64, written);

    let mut stops = [0u64; StopReason::COUNT];
    // Per flow key: packet indexes in the trace and TCP flags in order.
    let mut flows: HashMap<FlowKey, Vec<(usize, u8)>> = HashMap::new();
    for (index, (timestamp, frame)) in packets.iter().enumerate() {
        assert_eq!(*timestamp, spec.start_us + index as u64 * spec.spacing_us);
        let parsed = parse_frame(frame);
        stops[parsed.stop as usize] += 1;
        if !parsed.stop.accounted() {
            continue;
        }
        assert_eq!(parsed.stop, StopReason::Complete);
        let (src, dst, protocol, src_port, dst_port) = etherparse_key(frame);
        let len = src.len();
        assert_eq!(&parsed.key.src_addr[..len], &src[..]);
        assert_eq!(&parsed.key.dst_addr[..len], &dst[..]);
        assert_eq!(
            (
                parsed.key.protocol,
                parsed.key.src_port,
                parsed.key.dst_port
            ),
            (protocol, src_port, dst_port)
        );
        flows
            .entry(parsed.key)
            .or_default()
            .push((index, parsed.tcp_flags));
    }

    assert_eq!(stops[StopReason::Complete as usize], spec.flow_packets());
    assert_eq!(flows.len(), 300);
    assert!(flows.values().all(|packets| packets.len() == 7));
    // Noise: every kind showed up and none of it was accounted.
    for kind in Noise::ALL {
        assert!(stops[kind.expected_stop() as usize] > 0, "{kind:?}");
    }
    let unaccounted: u64 = StopReason::ALL
        .iter()
        .filter(|r| !r.accounted())
        .map(|r| stops[*r as usize])
        .sum();
    assert_eq!(unaccounted, written - spec.flow_packets());

    // The default mix: both IP versions, TCP, UDP, ICMP and ICMPv6, tagged and untagged.
    let keys: Vec<&FlowKey> = flows.keys().collect();
    for (what, present) in [
        ("IPv4", keys.iter().any(|k| k.ip_version == 4)),
        ("IPv6", keys.iter().any(|k| k.ip_version == 6)),
        ("TCP", keys.iter().any(|k| k.protocol == 6)),
        ("UDP", keys.iter().any(|k| k.protocol == 17)),
        ("ICMP", keys.iter().any(|k| k.protocol == 1)),
        ("ICMPv6", keys.iter().any(|k| k.protocol == 58)),
        ("VLAN", keys.iter().any(|k| k.vlan != 0)),
        ("untagged", keys.iter().any(|k| k.vlan == 0)),
    ] {
        assert!(present, "no {what} flow");
    }

    // TCP flows open with SYN and close with FIN.
    for (key, packets) in &flows {
        if key.protocol == 6 {
            assert_eq!(packets[0].1, tcp_flags::SYN, "{key:?}");
            assert_eq!(packets[6].1, tcp_flags::FIN | tcp_flags::ACK, "{key:?}");
            assert!(packets[1..6].iter().all(|p| p.1 & tcp_flags::ACK != 0));
        }
    }

    // Exactly `live_flows` flows are in progress at the busiest moment.
    let mut events: Vec<(usize, i32)> = flows
        .values()
        .flat_map(|p| [(p[0].0, 1), (p[6].0 + 1, -1)])
        .collect();
    events.sort_unstable();
    let mut live = 0;
    let mut busiest = 0;
    for (_, change) in events {
        live += change;
        busiest = busiest.max(live);
    }
    assert_eq!(busiest, 50);
}

#[test]
fn every_flow_can_be_live_at_once() {
    let spec = TrafficSpec {
        flows: 100,
        packets_per_flow: 3,
        live_flows: 0,
        arp_share: 0.0,
        ..TrafficSpec::default()
    };
    let mut generator = TrafficGenerator::new(&spec);
    let mut frame = Vec::new();
    let mut keys = Vec::new();
    while generator.next_frame(&mut frame).is_some() {
        keys.push(parse_frame(&frame).key);
    }
    assert_eq!(keys.len(), 300);
    // Round-robin: the first hundred packets are a hundred different flows, then again.
    for round in keys.chunks(100) {
        assert_eq!(round.iter().collect::<HashSet<_>>().len(), 100);
        assert_eq!(round, &keys[..100]);
    }
}

#[test]
fn traces_are_deterministic_from_the_seed() {
    let spec = TrafficSpec {
        flows: 40,
        include_noise: true,
        ..TrafficSpec::default()
    };
    let (a, b, c) = (
        TempFile::new("a.pcap"),
        TempFile::new("b.pcap"),
        TempFile::new("c.pcap"),
    );
    synth::write_pcap(&spec, &a.0).unwrap();
    synth::write_pcap(&spec, &b.0).unwrap();
    synth::write_pcap(&TrafficSpec { seed: 2, ..spec }, &c.0).unwrap();
    let (a, b, c) = (
        fs::read(&a.0).unwrap(),
        fs::read(&b.0).unwrap(),
        fs::read(&c.0).unwrap(),
    );
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn frame_sizes() {
    for (frame_len, check) in [
        (FrameLen::Fixed(60), (60usize, 82usize)),
        (FrameLen::Fixed(1000), (1000, 1000)),
        (FrameLen::Uniform { min: 200, max: 300 }, (200, 300)),
    ] {
        let spec = TrafficSpec {
            flows: 200,
            packets_per_flow: 2,
            frame_len,
            vlan_share: 0.5,
            arp_share: 0.0,
            ..TrafficSpec::default()
        };
        let mut generator = TrafficGenerator::new(&spec);
        let mut frame = Vec::new();
        let mut sizes = HashSet::new();
        while generator.next_frame(&mut frame).is_some() {
            let parsed = parse_frame(&frame);
            assert_eq!(parsed.stop, StopReason::Complete);
            assert!(
                (check.0..=check.1).contains(&frame.len()),
                "{} in {check:?}",
                frame.len()
            );
            // The IP packet fills the frame unless the frame was padded to 60 bytes.
            let l2 = frame.len() - parsed.octets as usize;
            assert!(matches!(l2, 14 | 18 | 22) || frame.len() == 60, "l2 {l2}");
            sizes.insert(frame.len());
        }
        if let FrameLen::Uniform { .. } = frame_len {
            assert!(sizes.len() > 50, "sizes vary: {}", sizes.len());
        }
    }
}
