//! Hostile frames through the whole probe: a capture mixing good flows with every kind of
//! malformed frame (synth's noise kinds; a valid frame cut at every byte offset, on the
//! wire and by a snap length; bad IHLs; broken IPv6 extension chains; zero-length and
//! oversized TCP options; 9000-byte jumbo frames; unknown EtherTypes; IPv4 and IPv6
//! fragments) is replayed by the `tapflow` binary. Each malformed kind must be counted
//! under the parse stop the rules give it (probe/README.md), the good flows must match
//! etherparse's ground truth exactly, and the malformed frames that are still accounted
//! must land in flows of their own with exactly the packets and octets written.

mod common;
#[path = "../exporter/tests/common/mod.rs"]
#[allow(unused_imports)]
mod decode;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::path::Path;

use common::{
    FiveTuple, Totals, UdpCollector, assert_same_flows, ground_truth, scratch_dir, tapflow, text,
};
use decode::Decoder;
use probe::parse::StopReason;
use probe::pcap::PcapWriter;
use probe::synth::{self, FrameOptions, Noise, tcp_flags};

const ETH: usize = 14;
const START_US: u64 = 1_700_000_000_000_000;

/// What the probe must make of one frame.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// A frame of a good flow: etherparse's ground truth decides.
    Good,
    /// Counted under `stop`; if accounted, in flow `tuple` with `octets`.
    Stop {
        stop: StopReason,
        tuple: Option<FiveTuple>,
        octets: u64,
    },
}

/// One record of the capture: bytes as captured, length on the wire, expectation.
struct Frame {
    bytes: Vec<u8>,
    wire_len: usize,
    expect: Expect,
}

/// Frames of the malformed address space (documentation prefixes), never in a good flow.
fn bad_v4(host: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, host)
}

fn bad_v6(host: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, host)
}

fn not_accounted(stop: StopReason) -> Expect {
    assert!(!stop.accounted());
    Expect::Stop {
        stop,
        tuple: None,
        octets: 0,
    }
}

fn accounted(stop: StopReason, tuple: FiveTuple, octets: u64) -> Expect {
    assert!(stop.accounted());
    Expect::Stop {
        stop,
        tuple: Some(tuple),
        octets,
    }
}

fn whole(bytes: Vec<u8>, expect: Expect) -> Frame {
    let wire_len = bytes.len();
    Frame {
        bytes,
        wire_len,
        expect,
    }
}

fn set_u16(frame: &mut [u8], at: usize, value: u16) {
    frame[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

/// IPv4 TCP 192.0.2.10:1000 -> 192.0.2.20:2000 with 10 payload bytes: 64 bytes, IP 50.
fn v4_tcp_base() -> Vec<u8> {
    let mut frame = Vec::new();
    synth::eth_ipv4_tcp(
        &mut frame,
        SocketAddrV4::new(bad_v4(10), 1000),
        SocketAddrV4::new(bad_v4(20), 2000),
        tcp_flags::ACK,
        &FrameOptions {
            payload_len: 10,
            ..FrameOptions::default()
        },
    );
    assert_eq!(frame.len(), 64);
    frame
}

fn v4_tcp_tuple(ports: (u16, u16)) -> FiveTuple {
    (
        IpAddr::V4(bad_v4(10)),
        IpAddr::V4(bad_v4(20)),
        ports.0,
        ports.1,
        6,
    )
}

/// IPv6 UDP 2001:db8::10:3000 -> ::20:4000 in VLAN 7 with 6 payload bytes: 72 bytes, IP 54.
fn v6_udp_base(payload_len: usize) -> Vec<u8> {
    let mut frame = Vec::new();
    synth::eth_ipv6_udp(
        &mut frame,
        SocketAddrV6::new(bad_v6(0x10), 3000, 0, 0),
        SocketAddrV6::new(bad_v6(0x20), 4000, 0, 0),
        &FrameOptions {
            vlan: Some(7),
            payload_len,
            ..FrameOptions::default()
        },
    );
    frame
}

fn v6_tuple(ports: (u16, u16), protocol: u8) -> FiveTuple {
    (
        IpAddr::V6(bad_v6(0x10)),
        IpAddr::V6(bad_v6(0x20)),
        ports.0,
        ports.1,
        protocol,
    )
}

/// Inserts IPv6 extension headers `(kind, bytes)` after the fixed header of a VLAN-tagged
/// IPv6 frame, chaining next headers and growing the payload length.
fn with_v6_extensions(frame: &[u8], extensions: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let ip = ETH + 4;
    let upper = frame[ip + 6];
    let mut out = frame[..ip + 40].to_vec();
    let mut added = 0;
    for (index, (kind, bytes)) in extensions.iter().enumerate() {
        let mut bytes = bytes.clone();
        bytes[0] = extensions.get(index + 1).map_or(upper, |next| next.0);
        if index == 0 {
            out[ip + 6] = *kind;
        }
        added += bytes.len();
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(&frame[ip + 40..]);
    let payload_len = u16::from_be_bytes([frame[ip + 4], frame[ip + 5]]) + added as u16;
    set_u16(&mut out, ip + 4, payload_len);
    out
}

/// An extension header of `units` 8-byte units beyond the first (options: PadN zeros).
fn ext_header(units: u8) -> Vec<u8> {
    let mut bytes = vec![0u8; (usize::from(units) + 1) * 8];
    bytes[1] = units;
    bytes
}

fn fragment_header(offset: u16, more: bool) -> Vec<u8> {
    let mut bytes = vec![0u8; 8];
    set_u16(&mut bytes, 2, (offset << 3) | u16::from(more));
    bytes[4..8].copy_from_slice(&0x0bad_f00du32.to_be_bytes());
    bytes
}

/// Every malformed kind, each with where the rules say the parser stops.
fn malformed_frames() -> Vec<Frame> {
    let mut frames = Vec::new();
    let mut buf = Vec::new();

    // synth's noise kinds, three of each.
    for kind in Noise::ALL {
        let stop = match kind {
            Noise::Runt => StopReason::TruncatedL2,
            Noise::TruncatedIpv4 => StopReason::TruncatedL3,
            Noise::BadIhl | Noise::BadVersion | Noise::ShortTotalLength => StopReason::BadIpHeader,
            Noise::BadIpv6ExtensionChain => StopReason::BadIpv6ExtensionChain,
            Noise::UnknownEtherType => StopReason::NonIp,
        };
        for _ in 0..3 {
            synth::noise_frame(&mut buf, kind);
            frames.push(whole(buf.clone(), not_accounted(stop)));
        }
    }

    // A valid IPv4 TCP frame cut at every byte offset, on the wire (the IP length then
    // exceeds the frame) and by a snap length (the wire length stays whole).
    let v4 = v4_tcp_base();
    for cut in 0..v4.len() {
        let stop = match cut {
            0..14 => StopReason::TruncatedL2,
            14..34 => StopReason::TruncatedL3,
            _ => StopReason::BadIpHeader,
        };
        frames.push(whole(v4[..cut].to_vec(), not_accounted(stop)));
        let expect = match cut {
            0..14 => not_accounted(StopReason::TruncatedL2),
            14..34 => not_accounted(StopReason::TruncatedL3),
            34..54 => accounted(StopReason::TruncatedL4, v4_tcp_tuple((0, 0)), 50),
            _ => accounted(StopReason::Complete, v4_tcp_tuple((1000, 2000)), 50),
        };
        frames.push(Frame {
            bytes: v4[..cut].to_vec(),
            wire_len: v4.len(),
            expect,
        });
    }
    // The same for a VLAN-tagged IPv6 UDP frame (18 bytes of link header, 40 of IPv6).
    let v6 = v6_udp_base(6);
    assert_eq!(v6.len(), 72);
    for cut in 0..v6.len() {
        let stop = match cut {
            0..18 => StopReason::TruncatedL2,
            18..58 => StopReason::TruncatedL3,
            _ => StopReason::BadIpHeader,
        };
        frames.push(whole(v6[..cut].to_vec(), not_accounted(stop)));
        let expect = match cut {
            0..18 => not_accounted(StopReason::TruncatedL2),
            18..58 => not_accounted(StopReason::TruncatedL3),
            58..66 => accounted(StopReason::TruncatedL4, v6_tuple((0, 0), 17), 54),
            _ => accounted(StopReason::Complete, v6_tuple((3000, 4000), 17), 54),
        };
        frames.push(Frame {
            bytes: v6[..cut].to_vec(),
            wire_len: v6.len(),
            expect,
        });
    }

    // Bad IHLs: below 5; 15 (a 60-byte header) in a 50-byte packet; 15 leaving 20 bytes
    // of L4 that hold no valid TCP header (data offset 0).
    for ihl in [0u8, 1, 4] {
        let mut frame = v4_tcp_base();
        frame[ETH] = 0x40 | ihl;
        frames.push(whole(frame, not_accounted(StopReason::BadIpHeader)));
    }
    let mut frame = v4_tcp_base();
    frame[ETH] = 0x4f;
    frames.push(whole(frame, not_accounted(StopReason::TruncatedL3)));
    let mut frame = Vec::new();
    synth::eth_ipv4_tcp(
        &mut frame,
        SocketAddrV4::new(bad_v4(10), 1000),
        SocketAddrV4::new(bad_v4(20), 2000),
        tcp_flags::ACK,
        &FrameOptions {
            payload_len: 40,
            ..FrameOptions::default()
        },
    );
    frame[ETH] = 0x4f;
    frames.push(whole(
        frame,
        accounted(StopReason::BadL4Header, v4_tcp_tuple((0, 0)), 80),
    ));

    // Broken IPv6 extension chains.
    let udp16 = v6_udp_base(16);
    // Hop-by-hop after destination options.
    frames.push(whole(
        with_v6_extensions(&udp16, &[(60, ext_header(0)), (0, ext_header(0))]),
        not_accounted(StopReason::BadIpv6ExtensionChain),
    ));
    // A routing header claiming 2048 bytes in a 48-byte payload.
    frames.push(whole(
        with_v6_extensions(&udp16, &[(43, ext_header(0))])
            .into_iter()
            .enumerate()
            .map(|(i, b)| if i == ETH + 4 + 40 + 1 { 255 } else { b })
            .collect(),
        not_accounted(StopReason::BadIpv6ExtensionChain),
    ));
    // A chain cut by the capture inside its second header (wire length whole).
    let chained = with_v6_extensions(&udp16, &[(0, ext_header(0)), (60, ext_header(1))]);
    frames.push(Frame {
        bytes: chained[..ETH + 4 + 40 + 8 + 10].to_vec(),
        wire_len: chained.len(),
        expect: not_accounted(StopReason::TruncatedL3),
    });
    // A well-formed long chain reaches UDP: hop-by-hop, destination options, routing, AH.
    let long = with_v6_extensions(
        &udp16,
        &[
            (0, ext_header(0)),
            (60, ext_header(2)),
            (43, ext_header(1)),
            (51, {
                // AH counts its length in 4-byte units, minus 2: 4 -> 24 bytes.
                let mut ah = vec![0u8; 24];
                ah[1] = 4;
                ah
            }),
        ],
    );
    let long_octets = 40 + 8 + 24 + 16 + 24 + 8 + 16;
    frames.push(whole(
        long,
        accounted(
            StopReason::Complete,
            v6_tuple((3000, 4000), 17),
            long_octets,
        ),
    ));
    // IPv6 fragments: a later fragment stops (ports 0, protocol from the fragment header);
    // the first one carries the UDP header and is parsed to its ports.
    frames.push(whole(
        with_v6_extensions(&udp16, &[(44, fragment_header(100, true))]),
        accounted(StopReason::Fragment, v6_tuple((0, 0), 17), 40 + 8 + 8 + 16),
    ));
    frames.push(whole(
        with_v6_extensions(&udp16, &[(44, fragment_header(0, true))]),
        accounted(
            StopReason::Complete,
            v6_tuple((3000, 4000), 17),
            40 + 8 + 8 + 16,
        ),
    ));

    // TCP options: a zero-length MSS option, 40 bytes of NOPs ending in a zero-length
    // option, a data offset below 5, and one claiming more than the packet holds.
    let tcp_with_options = |data_offset: u8, options: &[u8], payload: usize| {
        let mut frame = Vec::new();
        synth::eth_ipv4_tcp(
            &mut frame,
            SocketAddrV4::new(bad_v4(11), 1001),
            SocketAddrV4::new(bad_v4(21), 2001),
            tcp_flags::SYN,
            &FrameOptions {
                payload_len: options.len() + payload,
                ..FrameOptions::default()
            },
        );
        let tcp = ETH + 20;
        frame[tcp + 12] = data_offset << 4;
        frame[tcp + 20..tcp + 20 + options.len()].copy_from_slice(options);
        frame
    };
    let tuple = |ports: (u16, u16)| {
        (
            IpAddr::V4(bad_v4(11)),
            IpAddr::V4(bad_v4(21)),
            ports.0,
            ports.1,
            6,
        )
    };
    frames.push(whole(
        tcp_with_options(6, &[2, 0, 0, 0], 0),
        accounted(StopReason::Complete, tuple((1001, 2001)), 44),
    ));
    let mut nops = [1u8; 40];
    nops[38] = 8;
    nops[39] = 0;
    frames.push(whole(
        tcp_with_options(15, &nops, 4),
        accounted(StopReason::Complete, tuple((1001, 2001)), 84),
    ));
    frames.push(whole(
        tcp_with_options(4, &[], 0),
        accounted(StopReason::BadL4Header, tuple((0, 0)), 40),
    ));
    frames.push(whole(
        tcp_with_options(15, &[2, 0, 0, 0], 0),
        accounted(StopReason::BadL4Header, tuple((0, 0)), 44),
    ));

    // A 9000-byte jumbo captured with a 1514-byte snap length: accounted whole.
    let mut jumbo = Vec::new();
    synth::eth_ipv4_udp(
        &mut jumbo,
        SocketAddrV4::new(bad_v4(12), 5000),
        SocketAddrV4::new(bad_v4(22), 6000),
        &FrameOptions {
            payload_len: 9000 - 28,
            ..FrameOptions::default()
        },
    );
    frames.push(Frame {
        bytes: jumbo[..1514].to_vec(),
        wire_len: jumbo.len(),
        expect: accounted(
            StopReason::Complete,
            (
                IpAddr::V4(bad_v4(12)),
                IpAddr::V4(bad_v4(22)),
                5000,
                6000,
                17,
            ),
            9000,
        ),
    });

    // Unknown EtherTypes, tagged and untagged, and an 802.3 length frame; ARP.
    for (ethertype, vlan) in [
        (0x88b5u16, None),
        (0x8847, None),
        (0x88e5, None),
        (0x0026, None),
        (0x88b5, Some(5u16)),
    ] {
        let mut frame = vec![0xff; 12];
        if let Some(id) = vlan {
            frame.extend_from_slice(&0x8100u16.to_be_bytes());
            frame.extend_from_slice(&id.to_be_bytes());
        }
        frame.extend_from_slice(&ethertype.to_be_bytes());
        frame.resize(60, 0xab);
        frames.push(whole(frame, not_accounted(StopReason::NonIp)));
    }
    synth::eth_arp_request(&mut buf, bad_v4(1), bad_v4(2), Some(9));
    frames.push(whole(buf.clone(), not_accounted(StopReason::NonIp)));

    // Protocols without ports: GRE over IPv4, IPv6 "no next header".
    let mut gre = v4_tcp_base();
    gre[ETH + 9] = 47;
    frames.push(whole(
        gre,
        accounted(
            StopReason::UnknownL4,
            (IpAddr::V4(bad_v4(10)), IpAddr::V4(bad_v4(20)), 0, 0, 47),
            50,
        ),
    ));
    let mut no_next = v6_udp_base(16);
    no_next[ETH + 4 + 6] = 59;
    frames.push(whole(
        no_next,
        accounted(StopReason::UnknownL4, v6_tuple((0, 0), 59), 64),
    ));

    // IPv4 fragments: the first carries the ports; middle and last are fragments.
    for (flags_offset, expect) in [
        (
            0x2000u16,
            accounted(StopReason::Complete, v4_tcp_tuple((1000, 2000)), 50),
        ),
        (
            0x2000 | 185,
            accounted(StopReason::Fragment, v4_tcp_tuple((0, 0)), 50),
        ),
        (
            370,
            accounted(StopReason::Fragment, v4_tcp_tuple((0, 0)), 50),
        ),
    ] {
        let mut frame = v4_tcp_base();
        set_u16(&mut frame, ETH + 6, flags_offset);
        frames.push(whole(frame, expect));
    }
    frames
}

/// Good flows in 10.0.0.0/8 and fd00::/8: several protocols, VLANs, QinQ, and 9000-byte
/// jumbo frames, with varying payload sizes.
fn good_frames() -> Vec<Frame> {
    let mut frames = Vec::new();
    for i in 0..30usize {
        let opts = |payload_len: usize, vlan: Option<u16>, inner_vlan: Option<u16>| FrameOptions {
            payload_len,
            vlan,
            inner_vlan,
            ..FrameOptions::default()
        };
        let mut f = Vec::new();
        let flags = if i == 0 {
            tcp_flags::SYN
        } else {
            tcp_flags::ACK
        };
        synth::eth_ipv4_tcp(
            &mut f,
            "10.0.0.1:40000".parse().unwrap(),
            "10.0.0.2:443".parse().unwrap(),
            flags,
            &opts(i * 47, None, None),
        );
        frames.push(whole(f.clone(), Expect::Good));
        if i < 20 {
            synth::eth_ipv4_udp(
                &mut f,
                "10.0.0.3:5353".parse().unwrap(),
                "10.0.0.4:53".parse().unwrap(),
                &opts(i * 13, Some(100), None),
            );
            frames.push(whole(f.clone(), Expect::Good));
            synth::eth_ipv6_tcp(
                &mut f,
                "[fd00::1]:50000".parse().unwrap(),
                "[fd00::2]:22".parse().unwrap(),
                flags,
                &opts(i * 61, None, None),
            );
            frames.push(whole(f.clone(), Expect::Good));
        }
        if i < 10 {
            synth::eth_ipv6_udp(
                &mut f,
                "[fd00::3]:1234".parse().unwrap(),
                "[fd00::4]:4789".parse().unwrap(),
                &opts(i * 100, Some(200), Some(300)),
            );
            frames.push(whole(f.clone(), Expect::Good));
            synth::eth_ipv4_icmp(
                &mut f,
                Ipv4Addr::new(10, 0, 0, 5),
                Ipv4Addr::new(10, 0, 0, 6),
                8,
                0,
                &opts(56, None, None),
            );
            frames.push(whole(f.clone(), Expect::Good));
        }
        if i < 5 {
            synth::eth_ipv4_udp(
                &mut f,
                "10.0.0.7:7000".parse().unwrap(),
                "10.0.0.8:7001".parse().unwrap(),
                &opts(9000 - 28, None, None),
            );
            assert_eq!(f.len(), 9014);
            frames.push(whole(f.clone(), Expect::Good));
            synth::eth_ipv6_udp(
                &mut f,
                "[fd00::7]:7000".parse().unwrap(),
                "[fd00::8]:7001".parse().unwrap(),
                &opts(9000 - 48, None, None),
            );
            frames.push(whole(f.clone(), Expect::Good));
        }
    }
    frames
}

/// Good and malformed frames interleaved: each good frame is followed by a few bad ones.
fn interleave(good: Vec<Frame>, bad: Vec<Frame>) -> Vec<Frame> {
    let per_good = bad.len().div_ceil(good.len());
    let mut bad = bad.into_iter();
    let mut out = Vec::new();
    for frame in good {
        out.push(frame);
        out.extend(bad.by_ref().take(per_good));
    }
    out.extend(bad);
    out
}

/// A classic pcap (microseconds, Ethernet) whose records may be snapped: written by hand
/// because PcapWriter always records the captured length as the wire length.
fn write_capture(path: &Path, frames: &[&Frame]) {
    // Magic, version 2.4, zone and accuracy 0, snap length, link type Ethernet.
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&[2, 0, 4, 0]);
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&262_144u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for (i, frame) in frames.iter().enumerate() {
        let t = START_US + i as u64 * 1000;
        for word in [
            (t / 1_000_000) as u32,
            (t % 1_000_000) as u32,
            frame.bytes.len() as u32,
            frame.wire_len as u32,
        ] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        out.extend_from_slice(&frame.bytes);
    }
    std::fs::write(path, out).unwrap();
}

/// The good frames alone, with PcapWriter: what etherparse's ground truth is taken from.
fn write_good(path: &Path, frames: &[&Frame]) {
    let file = std::fs::File::create(path).unwrap();
    let mut writer = PcapWriter::new(std::io::BufWriter::new(file)).unwrap();
    for (i, frame) in frames.iter().enumerate() {
        writer
            .write_packet(START_US + i as u64 * 1000, &frame.bytes)
            .unwrap();
    }
    writer.into_inner().unwrap();
}

/// Per-flow totals of the IPFIX data records among `datagrams`.
fn ipfix_totals(datagrams: &[Vec<u8>]) -> Totals {
    let mut decoder = Decoder::default();
    let mut totals = Totals::new();
    for d in datagrams {
        for r in decoder.message(d).data() {
            let (key, (packets, octets)) = r.five_tuple_and_counts();
            let e = totals.entry(key).or_default();
            e.0 += packets;
            e.1 += octets;
        }
    }
    totals
}

fn is_good_space(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => a.octets()[0] == 10,
        IpAddr::V6(a) => a.segments()[0] == 0xfd00,
    }
}

fn replay_and_check(source: &str, include_snapped: bool) {
    let dir = scratch_dir(&format!("malformed-{source}"));
    let frames: Vec<Frame> = interleave(good_frames(), malformed_frames())
        .into_iter()
        .filter(|f| include_snapped || f.wire_len == f.bytes.len())
        .collect();
    let all: Vec<&Frame> = frames.iter().collect();
    let good: Vec<&Frame> = frames
        .iter()
        .filter(|f| matches!(f.expect, Expect::Good))
        .collect();
    let capture = dir.join("mixed.pcap");
    let good_only = dir.join("good.pcap");
    write_capture(&capture, &all);
    write_good(&good_only, &good);

    // What the rules say, kind by kind.
    let mut stops = [0u64; StopReason::COUNT];
    let mut bad_flows = Totals::new();
    for frame in &frames {
        match frame.expect {
            Expect::Good => stops[StopReason::Complete as usize] += 1,
            Expect::Stop {
                stop,
                tuple,
                octets,
            } => {
                stops[stop as usize] += 1;
                if let Some(tuple) = tuple {
                    let e = bad_flows.entry(tuple).or_default();
                    e.0 += 1;
                    e.1 += octets;
                }
            }
        }
    }
    let unaccounted: u64 = StopReason::ALL
        .iter()
        .filter(|r| !r.accounted())
        .map(|r| stops[*r as usize])
        .sum();

    eprintln!(
        "malformed via {source}: {} frames ({} good); stops: {}",
        frames.len(),
        good.len(),
        StopReason::ALL
            .iter()
            .map(|r| format!("{} {}", r.name(), stops[*r as usize]))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if include_snapped {
        assert!(
            stops.iter().all(|&n| n > 0),
            "a parse stop is not exercised"
        );
    }
    let collector = UdpCollector::bind();
    let out = tapflow()
        .arg("replay")
        .arg(&capture)
        .args(["--collector", &collector.addr(), "--source", source])
        .output()
        .unwrap();
    assert!(out.status.success(), "replay failed: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();

    assert_eq!(
        common::summary_counter(&stdout, "packets received"),
        Some(frames.len() as u64),
        "{stdout}"
    );
    for reason in StopReason::ALL {
        if reason == StopReason::Complete {
            continue;
        }
        let row = format!("parse stop: {}", reason.name());
        assert_eq!(
            common::summary_counter(&stdout, &row).unwrap_or(0),
            stops[reason as usize],
            "{row}\n{stdout}"
        );
    }
    assert_eq!(
        common::summary_counter(&stdout, "not in any flow"),
        Some(unaccounted),
        "{stdout}"
    );

    let actual = ipfix_totals(&collector.drain());
    let (actual_good, actual_bad): (Totals, Totals) =
        actual.into_iter().partition(|(k, _)| is_good_space(k.0));
    let expected_good = ground_truth(&good_only);
    assert_eq!(expected_good.len(), 7, "{expected_good:?}");
    assert_same_flows(
        &format!("good flows via {source}"),
        &expected_good,
        &actual_good,
    );
    assert_same_flows(
        &format!("accounted malformed frames via {source}"),
        &bad_flows,
        &actual_bad,
    );
    let in_records = common::summary_counter(&stdout, "packets in records").unwrap();
    assert_eq!(in_records, frames.len() as u64 - unaccounted, "{stdout}");
}

#[test]
fn every_malformed_kind_is_counted_and_good_flows_stay_exact_file_source() {
    replay_and_check("file", true);
}

/// DPDK's pcap driver records the captured length as the packet's length, so snapped
/// records cannot be told apart from frames cut on the wire: they are left out here.
#[cfg(feature = "dpdk")]
#[test]
fn every_malformed_kind_is_counted_and_good_flows_stay_exact_dpdk_source() {
    replay_and_check("dpdk", false);
}
