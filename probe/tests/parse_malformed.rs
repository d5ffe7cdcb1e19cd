//! Crafted and random malformed frames: each stops where and why the rules say, is
//! counted under its own kind, and nothing ever panics.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

use probe::parse::{ParsedPacket, StopReason, parse_frame, parse_frame_with_wire_len};
use probe::synth::{self, FrameOptions, Noise, tcp_flags};
use proptest::prelude::*;

const ETH: usize = 14;

fn v4_tcp(payload_len: usize) -> Vec<u8> {
    let mut frame = Vec::new();
    synth::eth_ipv4_tcp(
        &mut frame,
        SocketAddrV4::new(Ipv4Addr::new(10, 1, 2, 3), 40000),
        SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 80), 443),
        tcp_flags::SYN | tcp_flags::ACK,
        &FrameOptions {
            payload_len,
            tos: 0x28,
            ttl: 61,
            ..FrameOptions::default()
        },
    );
    frame
}

fn v4_udp(opts: &FrameOptions) -> Vec<u8> {
    let mut frame = Vec::new();
    synth::eth_ipv4_udp(
        &mut frame,
        SocketAddrV4::new(Ipv4Addr::new(10, 1, 2, 3), 5353),
        SocketAddrV4::new(Ipv4Addr::new(224, 0, 0, 251), 5353),
        opts,
    );
    frame
}

fn v6_src() -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)
}

fn v6_dst() -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2)
}

fn v6_udp(payload_len: usize) -> Vec<u8> {
    let mut frame = Vec::new();
    synth::eth_ipv6_udp(
        &mut frame,
        SocketAddrV6::new(v6_src(), 1000, 0, 0),
        SocketAddrV6::new(v6_dst(), 2000, 0, 0),
        &FrameOptions {
            payload_len,
            ..FrameOptions::default()
        },
    );
    frame
}

/// Rewrites an IPv4 frame's header checksum-free fields in place.
fn set_u16(frame: &mut [u8], at: usize, value: u16) {
    frame[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

/// Inserts IPv6 extension headers `(kind, bytes)` between the fixed header and the
/// upper-layer header of an untagged IPv6 frame, fixing next headers and payload length.
fn with_v6_extensions(frame: &[u8], extensions: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let upper = frame[ETH + 6];
    let mut out = frame[..ETH + 40].to_vec();
    let mut added = 0;
    for (index, (kind, bytes)) in extensions.iter().enumerate() {
        let mut bytes = bytes.clone();
        bytes[0] = extensions.get(index + 1).map_or(upper, |next| next.0);
        if index == 0 {
            out[ETH + 6] = *kind;
        }
        added += bytes.len();
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(&frame[ETH + 40..]);
    let payload_len = u16::from_be_bytes([frame[ETH + 4], frame[ETH + 5]]) + added as u16;
    set_u16(&mut out, ETH + 4, payload_len);
    out
}

fn options_header(units: u8) -> Vec<u8> {
    let mut bytes = vec![0u8; (usize::from(units) + 1) * 8];
    bytes[1] = units;
    bytes
}

fn fragment_header(offset: u16, more: bool) -> Vec<u8> {
    let mut bytes = vec![0u8; 8];
    set_u16(&mut bytes, 2, offset << 3 | u16::from(more));
    bytes[4..8].copy_from_slice(&0xfeed_beefu32.to_be_bytes());
    bytes
}

fn ports(parsed: &ParsedPacket) -> (u16, u16) {
    (parsed.key.src_port, parsed.key.dst_port)
}

#[test]
fn well_formed_v4_tcp() {
    let frame = v4_tcp(10);
    let parsed = parse_frame(&frame);
    assert_eq!(parsed.stop, StopReason::Complete);
    assert_eq!(parsed.key.ip_version, 4);
    assert_eq!(&parsed.key.src_addr[..4], &[10, 1, 2, 3]);
    assert_eq!(&parsed.key.src_addr[4..], &[0; 12]);
    assert_eq!(&parsed.key.dst_addr[..4], &[192, 0, 2, 80]);
    assert_eq!(ports(&parsed), (40000, 443));
    assert_eq!(parsed.key.protocol, 6);
    assert_eq!(parsed.key.tos, 0x28);
    assert_eq!(parsed.key.vlan, 0);
    assert_eq!(parsed.key.input_port, 0);
    assert_eq!(parsed.ttl, 61);
    assert_eq!(parsed.octets, 20 + 20 + 10);
    assert_eq!(parsed.tcp_flags, 0x12);
}

#[test]
fn bad_ihl_is_a_bad_ip_header() {
    for ihl in 0..5u8 {
        let mut frame = v4_tcp(0);
        frame[ETH] = 0x40 | ihl;
        assert_eq!(
            parse_frame(&frame).stop,
            StopReason::BadIpHeader,
            "ihl {ihl}"
        );
    }
    // IHL 15 (60 bytes) when the frame holds less: the header itself is cut.
    let mut frame = v4_tcp(0);
    frame[ETH] = 0x4f;
    assert_eq!(
        parse_frame(&frame[..ETH + 40]).stop,
        StopReason::TruncatedL3
    );
}

#[test]
fn wrong_ip_versions_are_bad_ip_headers() {
    let mut frame = v4_tcp(0);
    frame[ETH] = 0x65;
    assert_eq!(parse_frame(&frame).stop, StopReason::BadIpHeader);
    let mut frame = v6_udp(0);
    frame[ETH] = 0x40 | (frame[ETH] & 0x0f);
    assert_eq!(parse_frame(&frame).stop, StopReason::BadIpHeader);
}

#[test]
fn total_length_rules() {
    // Shorter than the header: malformed.
    let mut frame = v4_tcp(0);
    set_u16(&mut frame, ETH + 2, 19);
    assert_eq!(parse_frame(&frame).stop, StopReason::BadIpHeader);

    // Exactly the header, with Ethernet padding that happens to follow: the padding is not
    // a TCP header.
    let mut frame = v4_tcp(0);
    set_u16(&mut frame, ETH + 2, 20);
    let parsed = parse_frame(&frame);
    assert_eq!(parsed.stop, StopReason::BadL4Header);
    assert_eq!(parsed.octets, 20);
    assert_eq!(ports(&parsed), (0, 0));

    // Longer than the capture (snap length): accounted with the header's length.
    let frame = v4_tcp(1400);
    let snapped = &frame[..ETH + 20 + 20 + 10];
    let parsed = parse_frame(snapped);
    assert_eq!(parsed.stop, StopReason::Complete);
    assert_eq!(parsed.octets, 1440);
    assert_eq!(ports(&parsed), (40000, 443));
    // ... unless the wire carried no more than was captured: then the length is a lie.
    assert_eq!(
        parse_frame_with_wire_len(snapped, snapped.len() as u32).stop,
        StopReason::BadIpHeader
    );
    assert_eq!(
        parse_frame_with_wire_len(snapped, frame.len() as u32),
        parse_frame(snapped)
    );
}

#[test]
fn ethernet_padding_is_not_counted() {
    // A 40-byte IP packet padded to Ethernet's 60-byte minimum.
    let frame = v4_tcp(0);
    assert_eq!(frame.len(), 60);
    let parsed = parse_frame(&frame);
    assert_eq!(parsed.stop, StopReason::Complete);
    assert_eq!(parsed.octets, 40);
    assert_eq!(
        parse_frame_with_wire_len(&frame, 60).stop,
        StopReason::Complete
    );
}

#[test]
fn tcp_data_offset() {
    // Exactly 5: no options, fine.
    let frame = v4_tcp(0);
    assert_eq!(frame[ETH + 20 + 12] >> 4, 5);
    assert_eq!(parse_frame(&frame).stop, StopReason::Complete);

    // Below 5: malformed, accounted without trusting any TCP field.
    for offset in 0..5u8 {
        let mut frame = v4_tcp(8);
        frame[ETH + 20 + 12] = offset << 4;
        let parsed = parse_frame(&frame);
        assert_eq!(parsed.stop, StopReason::BadL4Header, "data offset {offset}");
        assert!(parsed.stop.accounted());
        assert_eq!(ports(&parsed), (0, 0));
        assert_eq!(parsed.tcp_flags, 0);
        assert_eq!(parsed.octets, 48);
    }

    // Longer than the IP payload: malformed.
    let mut frame = v4_tcp(8);
    frame[ETH + 20 + 12] = 8 << 4;
    assert_eq!(parse_frame(&frame).stop, StopReason::BadL4Header);

    // Options within the IP payload but cut by the capture: the fixed header is enough.
    let mut frame = v4_tcp(40);
    frame[ETH + 20 + 12] = 15 << 4;
    let parsed = parse_frame(&frame[..ETH + 20 + 24]);
    assert_eq!(parsed.stop, StopReason::Complete);
    assert_eq!(ports(&parsed), (40000, 443));
}

#[test]
fn jumbo_frames() {
    let frame = v4_tcp(9000 - ETH - 40);
    assert_eq!(frame.len(), 9000);
    let parsed = parse_frame(&frame);
    assert_eq!(parsed.stop, StopReason::Complete);
    assert_eq!(parsed.octets, 9000 - ETH as u32);

    let frame = v6_udp(9000 - ETH - 48);
    let parsed = parse_frame(&frame);
    assert_eq!(parsed.stop, StopReason::Complete);
    assert_eq!(parsed.octets, 9000 - ETH as u32);
    assert_eq!(ports(&parsed), (1000, 2000));
}

#[test]
fn unknown_ethertypes_are_non_ip() {
    for ethertype in [0x0806u16, 0x88cc, 0x8847, 0x05dc, 0x0000, 0xffff, 0x9200] {
        let mut frame = v4_tcp(0);
        set_u16(&mut frame, 12, ethertype);
        let parsed = parse_frame(&frame);
        assert_eq!(parsed.stop, StopReason::NonIp, "{ethertype:#06x}");
        assert!(!parsed.stop.accounted());
    }
    let mut arp = Vec::new();
    synth::eth_arp_request(
        &mut arp,
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(10, 0, 0, 2),
        Some(5),
    );
    assert_eq!(parse_frame(&arp).stop, StopReason::NonIp);
}

#[test]
fn vlan_stacks_report_the_outer_id() {
    let tagged = |opts: &FrameOptions| parse_frame(&v4_udp(opts));
    let single = tagged(&FrameOptions {
        vlan: Some(100),
        ..FrameOptions::default()
    });
    assert_eq!((single.stop, single.key.vlan), (StopReason::Complete, 100));
    let qinq = tagged(&FrameOptions {
        vlan: Some(300),
        inner_vlan: Some(20),
        ..FrameOptions::default()
    });
    assert_eq!((qinq.stop, qinq.key.vlan), (StopReason::Complete, 300));
    assert_eq!(ports(&qinq), (5353, 5353));

    // 0x9100 outer over 0x8100 over 0x8100: three tags.
    let plain = v4_udp(&FrameOptions::default());
    let mut frame = plain[..12].to_vec();
    for (tpid, id) in [(0x9100u16, 4000u16), (0x8100, 2), (0x8100, 3)] {
        frame.extend_from_slice(&tpid.to_be_bytes());
        frame.extend_from_slice(&(0xe000 | id).to_be_bytes());
    }
    frame.extend_from_slice(&plain[12..]);
    let parsed = parse_frame(&frame);
    assert_eq!((parsed.stop, parsed.key.vlan), (StopReason::Complete, 4000));

    // Cut inside any tag: L2 truncation.
    for len in ETH..ETH + 12 {
        assert_eq!(
            parse_frame(&frame[..len]).stop,
            StopReason::TruncatedL2,
            "len {len}"
        );
    }
    assert_eq!(
        parse_frame(&frame[..ETH + 12]).stop,
        StopReason::TruncatedL3
    );
}

#[test]
fn ipv4_fragments() {
    // Non-first fragment: accounted, ports 0, protocol kept.
    let mut frame = v4_tcp(100);
    set_u16(&mut frame, ETH + 6, 0x2000 | 185);
    let parsed = parse_frame(&frame);
    assert_eq!(parsed.stop, StopReason::Fragment);
    assert!(parsed.stop.accounted());
    assert_eq!(ports(&parsed), (0, 0));
    assert_eq!(parsed.key.protocol, 6);
    assert_eq!(parsed.octets, 140);

    // The last fragment (MF clear, offset > 0) too.
    set_u16(&mut frame, ETH + 6, 185);
    assert_eq!(parse_frame(&frame).stop, StopReason::Fragment);

    // First fragment: MF set, offset 0, carries the ports.
    set_u16(&mut frame, ETH + 6, 0x2000);
    let parsed = parse_frame(&frame);
    assert_eq!(parsed.stop, StopReason::Complete);
    assert_eq!(ports(&parsed), (40000, 443));

    // A first fragment too small to hold the TCP header (RFC 1858's tiny fragment).
    set_u16(&mut frame, ETH + 2, 28);
    assert_eq!(parse_frame(&frame).stop, StopReason::BadL4Header);
}

#[test]
fn ipv6_extension_chains() {
    let base = v6_udp(8);

    // Hop-by-hop, destination options, routing: walked to UDP.
    let walked = with_v6_extensions(
        &base,
        &[
            (0, options_header(0)),
            (60, options_header(2)),
            (43, options_header(1)),
        ],
    );
    let parsed = parse_frame(&walked);
    assert_eq!(parsed.stop, StopReason::Complete);
    assert_eq!(parsed.key.protocol, 17);
    assert_eq!(ports(&parsed), (1000, 2000));
    assert_eq!(parsed.octets, 40 + 8 + 24 + 16 + 8 + 8);

    // AH counts 4-byte units minus 2: length field 4 means 24 bytes.
    let mut ah = vec![0u8; 24];
    ah[1] = 4;
    let parsed = parse_frame(&with_v6_extensions(&base, &[(51, ah.clone())]));
    assert_eq!(
        (parsed.stop, parsed.key.protocol),
        (StopReason::Complete, 17)
    );
    assert_eq!(ports(&parsed), (1000, 2000));
    // A wrong AH length lands the walk in the wrong place: here past the payload.
    ah[1] = 200;
    assert_eq!(
        parse_frame(&with_v6_extensions(&base, &[(51, ah)])).stop,
        StopReason::BadIpv6ExtensionChain
    );

    // Hop-by-hop anywhere but first.
    let misplaced = with_v6_extensions(&base, &[(60, options_header(0)), (0, options_header(0))]);
    assert_eq!(
        parse_frame(&misplaced).stop,
        StopReason::BadIpv6ExtensionChain
    );

    // An extension header longer than the declared payload.
    let mut overrun = with_v6_extensions(&base, &[(60, options_header(0))]);
    overrun[ETH + 41] = 10;
    let parsed = parse_frame(&overrun);
    assert_eq!(parsed.stop, StopReason::BadIpv6ExtensionChain);
    assert!(!parsed.stop.accounted());

    // Exactly one 8-byte unit past the declared payload, with the bytes present in the
    // frame: the declared length rules, not the captured bytes.
    let mut one_unit_over = with_v6_extensions(&base, &[(60, options_header(1))]);
    set_u16(&mut one_unit_over, ETH + 4, 8);
    assert_eq!(
        parse_frame(&one_unit_over).stop,
        StopReason::BadIpv6ExtensionChain
    );
    set_u16(&mut one_unit_over, ETH + 4, 16);
    assert_eq!(parse_frame(&one_unit_over).stop, StopReason::BadL4Header);

    // Payload length too short for even one extension header.
    let mut short = with_v6_extensions(&base, &[(60, options_header(0))]);
    set_u16(&mut short, ETH + 4, 4);
    assert_eq!(parse_frame(&short).stop, StopReason::BadIpv6ExtensionChain);

    // The capture ends inside an extension header: the IP header is incomplete.
    let chained = with_v6_extensions(&base, &[(0, options_header(0)), (60, options_header(3))]);
    for len in ETH + 40..ETH + 40 + 8 + 32 {
        assert_eq!(
            parse_frame(&chained[..len]).stop,
            StopReason::TruncatedL3,
            "len {len}"
        );
    }
    assert_eq!(
        parse_frame(&chained[..ETH + 80]).stop,
        StopReason::TruncatedL4
    );

    // No next header (59): accounted without ports.
    let mut none = with_v6_extensions(&base, &[(60, options_header(0))]);
    none[ETH + 40] = 59;
    let parsed = parse_frame(&none);
    assert_eq!(
        (parsed.stop, parsed.key.protocol),
        (StopReason::UnknownL4, 59)
    );

    // Mobility header (135) is walked like the others.
    let parsed = parse_frame(&with_v6_extensions(&base, &[(135, options_header(1))]));
    assert_eq!(
        (parsed.stop, parsed.key.protocol),
        (StopReason::Complete, 17)
    );
}

#[test]
fn ipv6_fragments() {
    let base = v6_udp(8);
    // First fragment: the UDP header follows the fragment header.
    let first = with_v6_extensions(&base, &[(44, fragment_header(0, true))]);
    let parsed = parse_frame(&first);
    assert_eq!(parsed.stop, StopReason::Complete);
    assert_eq!(ports(&parsed), (1000, 2000));
    assert_eq!(parsed.key.protocol, 17);

    // Later fragment: the fragment header names the protocol; no ports.
    let later = with_v6_extensions(
        &base,
        &[(0, options_header(0)), (44, fragment_header(100, false))],
    );
    let parsed = parse_frame(&later);
    assert_eq!(parsed.stop, StopReason::Fragment);
    assert_eq!(parsed.key.protocol, 17);
    assert_eq!(ports(&parsed), (0, 0));
    assert_eq!(parsed.octets, 40 + 8 + 8 + 16);
}

#[test]
fn icmp_sctp_and_portless_protocols() {
    let mut frame = Vec::new();
    synth::eth_ipv4_icmp(
        &mut frame,
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(10, 0, 0, 2),
        3,
        13,
        &FrameOptions::default(),
    );
    let parsed = parse_frame(&frame);
    assert_eq!(parsed.stop, StopReason::Complete);
    assert_eq!(ports(&parsed), (0, 3 << 8 | 13));
    assert_eq!(parsed.key.protocol, 1);

    synth::eth_ipv6_icmp(
        &mut frame,
        v6_src(),
        v6_dst(),
        135,
        0,
        &FrameOptions::default(),
    );
    let parsed = parse_frame(&frame);
    assert_eq!(ports(&parsed), (0, 135 << 8));
    assert_eq!(parsed.key.protocol, 58);

    // Turn a UDP frame into SCTP, UDP-Lite and GRE by its protocol byte: SCTP's and
    // UDP-Lite's ports sit where UDP's do.
    let udp = v4_udp(&FrameOptions {
        payload_len: 8,
        ..FrameOptions::default()
    });
    for (protocol, expected) in [
        (132u8, (StopReason::Complete, (5353, 5353))),
        (136, (StopReason::Complete, (5353, 5353))),
        (47, (StopReason::UnknownL4, (0, 0))),
        (50, (StopReason::UnknownL4, (0, 0))),
    ] {
        let mut frame = udp.clone();
        frame[ETH + 9] = protocol;
        let parsed = parse_frame(&frame);
        assert_eq!(
            (parsed.stop, ports(&parsed)),
            expected,
            "protocol {protocol}"
        );
        assert_eq!(parsed.key.protocol, protocol);
    }
    // SCTP needs its 12-byte common header.
    let mut frame = udp.clone();
    frame[ETH + 9] = 132;
    assert_eq!(
        parse_frame(&frame[..ETH + 20 + 11]).stop,
        StopReason::TruncatedL4
    );
}

/// A corpus with a known number of frames of each kind is counted exactly.
#[test]
fn stops_are_counted_by_kind() {
    let mut corpus: Vec<(Vec<u8>, StopReason)> = Vec::new();
    let mut push = |frame: Vec<u8>, reason: StopReason, times: usize| {
        for _ in 0..times {
            corpus.push((frame.clone(), reason));
        }
    };
    push(v4_tcp(0), StopReason::Complete, 5);
    push(v6_udp(0), StopReason::Complete, 2);
    let mut gre = v4_tcp(0);
    gre[ETH + 9] = 47;
    push(gre, StopReason::UnknownL4, 3);
    let mut fragment = v4_tcp(0);
    set_u16(&mut fragment, ETH + 6, 1);
    push(fragment, StopReason::Fragment, 4);
    push(v4_tcp(0)[..ETH + 30].to_vec(), StopReason::TruncatedL4, 6);
    let mut bad_offset = v4_tcp(0);
    bad_offset[ETH + 32] = 0x20;
    push(bad_offset, StopReason::BadL4Header, 7);
    for (count, kind) in Noise::ALL.into_iter().enumerate() {
        let mut frame = Vec::new();
        synth::noise_frame(&mut frame, kind);
        push(frame, kind.expected_stop(), count + 1);
    }
    let mut counters = [0u64; StopReason::COUNT];
    let mut expected = [0u64; StopReason::COUNT];
    for (frame, reason) in &corpus {
        counters[parse_frame(frame).stop as usize] += 1;
        expected[*reason as usize] += 1;
    }
    assert_eq!(counters, expected);
    // Every reason occurs, so no counter is untested.
    assert!(counters.iter().all(|&n| n > 0), "{counters:?}");
}

fn check_invariants(frame: &[u8]) -> Result<(), TestCaseError> {
    let parsed = parse_frame(frame);
    if parsed.stop.accounted() {
        prop_assert!(matches!(parsed.key.ip_version, 4 | 6));
        let min_octets = if parsed.key.ip_version == 4 { 20 } else { 40 };
        prop_assert!(parsed.octets >= min_octets);
    }
    if !matches!(parsed.stop, StopReason::Complete) {
        prop_assert_eq!(parsed.key.src_port, 0);
        prop_assert_eq!(parsed.tcp_flags, 0);
    }
    let on_wire = parse_frame_with_wire_len(frame, frame.len() as u32);
    if on_wire.stop.accounted() {
        prop_assert!(on_wire.octets as usize <= frame.len() - ETH);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        check_invariants(&bytes)?;
    }

    /// Random bytes behind a plausible prefix reach the deeper layers.
    #[test]
    fn random_bytes_behind_ip_ethertypes_never_panic(
        ethertype in prop_oneof![Just(0x0800u16), Just(0x86dd), Just(0x8100), Just(0x88a8)],
        version in 0u8..16,
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&ethertype.to_be_bytes());
        frame.extend_from_slice(&bytes);
        if let Some(first) = frame.get_mut(ETH) {
            *first = (version << 4) | (*first & 0x0f);
        }
        check_invariants(&frame)?;
    }

    /// Valid frames with a few bytes overwritten.
    #[test]
    fn mutated_frames_never_panic(
        kind in 0usize..3,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut frame = match kind {
            0 => v4_tcp(20),
            1 => with_v6_extensions(&v6_udp(8), &[(0, options_header(0)), (44, fragment_header(0, true))]),
            _ => v4_udp(&FrameOptions { vlan: Some(9), inner_vlan: Some(10), ..FrameOptions::default() }),
        };
        for (index, value) in edits {
            let at = index.index(frame.len());
            frame[at] = value;
        }
        check_invariants(&frame)?;
    }
}
