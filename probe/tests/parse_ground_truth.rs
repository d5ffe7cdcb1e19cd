//! Ground truth for the parser: frames built by etherparse (an independent builder) must
//! parse to what etherparse's own decoder reads from them.

use etherparse::{
    IpAuthHeader, IpDscp, IpEcn, IpFragOffset, IpHeaders, IpNumber, Ipv4Header, Ipv4Options,
    Ipv6Extensions, Ipv6FlowLabel, Ipv6FragmentHeader, Ipv6Header, Ipv6RawExtHeader,
    Ipv6RoutingExtensions, NetSlice, PacketBuilder, SlicedPacket, TransportSlice, VlanId,
    err::packet::BuildWriteError,
};
use probe::parse::{StopReason, parse_frame, parse_frame_with_wire_len};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Vlan {
    None,
    Single(u16),
    Double(u16, u16),
}

#[derive(Clone, Debug)]
enum Ip {
    V4 {
        src: [u8; 4],
        dst: [u8; 4],
        ttl: u8,
        dscp: u8,
        ecn: u8,
        option_words: usize,
        /// Fragment offset (8-byte units) and more-fragments flag.
        fragment: (u16, bool),
    },
    V6 {
        src: [u8; 16],
        dst: [u8; 16],
        hop_limit: u8,
        traffic_class: u8,
        flow_label: u32,
        /// Bits: hop-by-hop, destination options, routing, fragment, authentication.
        extensions: u8,
        fragment: (u16, bool),
    },
}

#[derive(Clone, Debug)]
enum L4 {
    Tcp {
        src: u16,
        dst: u16,
        flags: u8,
        option_words: usize,
    },
    Udp {
        src: u16,
        dst: u16,
    },
    Icmp {
        icmp_type: u8,
        code: u8,
    },
}

#[derive(Clone, Debug)]
struct Case {
    vlan: Vlan,
    ip: Ip,
    l4: L4,
    payload_len: usize,
}

fn vlan_strategy() -> impl Strategy<Value = Vlan> {
    prop_oneof![
        Just(Vlan::None),
        (0u16..4096).prop_map(Vlan::Single),
        (0u16..4096, 0u16..4096).prop_map(|(o, i)| Vlan::Double(o, i)),
    ]
}

fn fragment_strategy() -> impl Strategy<Value = (u16, bool)> {
    prop_oneof![
        3 => Just((0u16, false)),
        1 => Just((0u16, true)),
        1 => (1u16..8192, any::<bool>()),
    ]
}

fn ip_strategy() -> impl Strategy<Value = Ip> {
    prop_oneof![
        (
            any::<[u8; 4]>(),
            any::<[u8; 4]>(),
            any::<u8>(),
            0u8..64,
            0u8..4,
            0usize..=10,
            fragment_strategy()
        )
            .prop_map(
                |(src, dst, ttl, dscp, ecn, option_words, fragment)| Ip::V4 {
                    src,
                    dst,
                    ttl,
                    dscp,
                    ecn,
                    option_words,
                    fragment
                }
            ),
        (
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
            any::<u8>(),
            any::<u8>(),
            0u32..(1 << 20),
            0u8..32,
            fragment_strategy()
        )
            .prop_map(
                |(src, dst, hop_limit, traffic_class, flow_label, extensions, fragment)| {
                    Ip::V6 {
                        src,
                        dst,
                        hop_limit,
                        traffic_class,
                        flow_label,
                        extensions,
                        fragment,
                    }
                }
            ),
    ]
}

fn l4_strategy() -> impl Strategy<Value = L4> {
    prop_oneof![
        (any::<u16>(), any::<u16>(), any::<u8>(), 0usize..=10).prop_map(
            |(src, dst, flags, option_words)| L4::Tcp {
                src,
                dst,
                flags,
                option_words
            }
        ),
        (any::<u16>(), any::<u16>()).prop_map(|(src, dst)| L4::Udp { src, dst }),
        (any::<u8>(), any::<u8>()).prop_map(|(icmp_type, code)| L4::Icmp { icmp_type, code }),
    ]
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (vlan_strategy(), ip_strategy(), l4_strategy(), 0usize..64).prop_map(
        |(vlan, ip, l4, payload_len)| Case {
            vlan,
            ip,
            l4,
            payload_len,
        },
    )
}

fn ip_headers(ip: &Ip) -> IpHeaders {
    match *ip {
        Ip::V4 {
            src,
            dst,
            ttl,
            dscp,
            ecn,
            option_words,
            fragment,
        } => {
            // NOP options: any content will do, the parser skips them by IHL.
            let options = Ipv4Options::try_from(&vec![1u8; option_words * 4][..]).unwrap();
            let header = Ipv4Header {
                dscp: IpDscp::try_new(dscp).unwrap(),
                ecn: IpEcn::try_new(ecn).unwrap(),
                time_to_live: ttl,
                source: src,
                destination: dst,
                options,
                more_fragments: fragment.1,
                fragment_offset: IpFragOffset::try_new(fragment.0).unwrap(),
                ..Default::default()
            };
            IpHeaders::Ipv4(header, Default::default())
        }
        Ip::V6 {
            src,
            dst,
            hop_limit,
            traffic_class,
            flow_label,
            extensions,
            fragment,
        } => {
            let raw = |len: usize| Ipv6RawExtHeader::new_raw(IpNumber(0), &vec![0u8; len]).unwrap();
            let mut exts = Ipv6Extensions::default();
            if extensions & 1 != 0 {
                exts.hop_by_hop_options = Some(raw(6));
            }
            if extensions & 2 != 0 {
                exts.destination_options = Some(raw(14));
            }
            if extensions & 4 != 0 {
                exts.routing = Some(Ipv6RoutingExtensions {
                    routing: raw(22),
                    final_destination_options: None,
                });
            }
            if extensions & 8 != 0 {
                exts.fragment = Some(Ipv6FragmentHeader::new(
                    IpNumber(0),
                    IpFragOffset::try_new(fragment.0).unwrap(),
                    fragment.1,
                    0x1234_5678,
                ));
            }
            if extensions & 16 != 0 {
                exts.auth = Some(IpAuthHeader::new(IpNumber(0), 7, 1, &[0u8; 12]).unwrap());
            }
            let header = Ipv6Header {
                traffic_class,
                flow_label: Ipv6FlowLabel::try_new(flow_label).unwrap(),
                hop_limit,
                source: src,
                destination: dst,
                ..Default::default()
            };
            IpHeaders::Ipv6(header, exts)
        }
    }
}

fn build(case: &Case) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let ip = ip_headers(&case.ip);
    let payload = vec![0xa5u8; case.payload_len];
    let mut out = Vec::new();
    macro_rules! finish {
        ($step:expr) => {{
            let step = $step;
            let result: Result<(), BuildWriteError> = match &case.l4 {
                L4::Tcp {
                    src,
                    dst,
                    flags,
                    option_words,
                } => {
                    let mut tcp = step.tcp(*src, *dst, 1000, 4096);
                    for (bit, set) in [
                        (0x01u8, 0usize),
                        (0x02, 1),
                        (0x04, 2),
                        (0x08, 3),
                        (0x10, 4),
                        (0x20, 5),
                        (0x40, 6),
                        (0x80, 7),
                    ] {
                        if flags & bit != 0 {
                            tcp = match set {
                                0 => tcp.fin(),
                                1 => tcp.syn(),
                                2 => tcp.rst(),
                                3 => tcp.psh(),
                                4 => tcp.ack(1),
                                5 => tcp.urg(0),
                                6 => tcp.ece(),
                                _ => tcp.cwr(),
                            };
                        }
                    }
                    let tcp = tcp.options_raw(&vec![1u8; option_words * 4]).unwrap();
                    tcp.write(&mut out, &payload)
                }
                L4::Udp { src, dst } => step.udp(*src, *dst).write(&mut out, &payload),
                L4::Icmp { icmp_type, code } => match &case.ip {
                    Ip::V4 { .. } => step
                        .icmpv4_raw(*icmp_type, *code, [0; 4])
                        .write(&mut out, &payload),
                    Ip::V6 { .. } => step
                        .icmpv6_raw(*icmp_type, *code, [0; 4])
                        .write(&mut out, &payload),
                },
            };
            result.unwrap();
        }};
    }
    match case.vlan {
        Vlan::None => finish!(eth.ip(ip)),
        Vlan::Single(id) => finish!(eth.single_vlan(VlanId::try_new(id).unwrap()).ip(ip)),
        Vlan::Double(outer, inner) => finish!(
            eth.double_vlan(
                VlanId::try_new(outer).unwrap(),
                VlanId::try_new(inner).unwrap()
            )
            .ip(ip)
        ),
    }
    out
}

/// What etherparse decodes from a frame, in flow-key terms.
#[derive(Debug, PartialEq, Eq)]
struct Truth {
    vlan: u16,
    ip_version: u8,
    src: [u8; 16],
    dst: [u8; 16],
    protocol: u8,
    tos: u8,
    ttl: u8,
    octets: u32,
    src_port: u16,
    dst_port: u16,
    tcp_flags: u8,
    stop: StopReason,
}

fn tcp_flags_of(tcp: &etherparse::TcpSlice<'_>) -> u8 {
    [
        tcp.fin(),
        tcp.syn(),
        tcp.rst(),
        tcp.psh(),
        tcp.ack(),
        tcp.urg(),
        tcp.ece(),
        tcp.cwr(),
    ]
    .iter()
    .enumerate()
    .map(|(bit, set)| u8::from(*set) << bit)
    .sum()
}

fn etherparse_truth(frame: &[u8]) -> Truth {
    let sliced = SlicedPacket::from_ethernet(frame).expect("etherparse decodes its own frame");
    let vlan = sliced.vlan_ids().first().map_or(0, |id| id.value());
    let mut truth = Truth {
        vlan,
        ip_version: 0,
        src: [0; 16],
        dst: [0; 16],
        protocol: 0,
        tos: 0,
        ttl: 0,
        octets: 0,
        src_port: 0,
        dst_port: 0,
        tcp_flags: 0,
        stop: StopReason::Complete,
    };
    // Offset of a fragment, or None when the packet is not a fragment at all.
    let fragment_offset = match sliced.net.as_ref().expect("IP frame") {
        NetSlice::Ipv4(ip) => {
            let header = ip.header();
            truth.ip_version = 4;
            truth.src[..4].copy_from_slice(&header.source());
            truth.dst[..4].copy_from_slice(&header.destination());
            truth.protocol = header.protocol().0;
            truth.tos = header.dcp().value() << 2 | header.ecn().value();
            truth.ttl = header.ttl();
            truth.octets = u32::from(header.total_len());
            header.fragments_offset().value()
        }
        NetSlice::Ipv6(ip) => {
            let header = ip.header();
            truth.ip_version = 6;
            truth.src = header.source();
            truth.dst = header.destination();
            truth.protocol = ip.payload().ip_number.0;
            truth.tos = header.traffic_class();
            truth.ttl = header.hop_limit();
            truth.octets = u32::from(header.payload_length()) + 40;
            let fragment = ip
                .extensions()
                .clone()
                .into_iter()
                .find_map(|ext| match ext {
                    etherparse::Ipv6ExtensionSlice::Fragment(f) => Some(f),
                    _ => None,
                });
            match fragment {
                Some(f) if f.fragment_offset().value() != 0 => {
                    // RFC 8200 4.5: in a non-first fragment the fragment header's next
                    // header names the first header of the fragmentable part, which only
                    // the first fragment carries; etherparse reads on regardless.
                    truth.protocol = f.next_header().0;
                    f.fragment_offset().value()
                }
                _ => 0,
            }
        }
        NetSlice::Arp(_) => unreachable!("the cases build IP frames"),
    };
    if fragment_offset != 0 {
        truth.stop = StopReason::Fragment;
        return truth;
    }
    match &sliced.transport {
        Some(TransportSlice::Tcp(tcp)) => {
            truth.src_port = tcp.source_port();
            truth.dst_port = tcp.destination_port();
            truth.tcp_flags = tcp_flags_of(tcp);
        }
        Some(TransportSlice::Udp(udp)) => {
            truth.src_port = udp.source_port();
            truth.dst_port = udp.destination_port();
        }
        Some(TransportSlice::Icmpv4(icmp)) => {
            truth.dst_port = u16::from(icmp.type_u8()) << 8 | u16::from(icmp.code_u8());
        }
        Some(TransportSlice::Icmpv6(icmp)) => {
            truth.dst_port = u16::from(icmp.type_u8()) << 8 | u16::from(icmp.code_u8());
        }
        Some(TransportSlice::Igmp(_)) => truth.stop = StopReason::UnknownL4,
        None => {
            // etherparse leaves the first fragment (offset 0, more fragments) undecoded;
            // decode its L4 header from the IP payload with etherparse's own slices.
            let payload = sliced
                .net
                .as_ref()
                .and_then(|n| n.ip_payload_ref())
                .unwrap();
            assert!(payload.fragmented, "only first fragments stay undecoded");
            let bytes = payload.payload;
            match payload.ip_number {
                etherparse::ip_number::TCP => {
                    let tcp = etherparse::TcpSlice::from_slice(bytes).unwrap();
                    truth.src_port = tcp.source_port();
                    truth.dst_port = tcp.destination_port();
                    truth.tcp_flags = tcp_flags_of(&tcp);
                }
                etherparse::ip_number::UDP => {
                    let udp = etherparse::UdpHeaderSlice::from_slice(bytes).unwrap();
                    truth.src_port = udp.source_port();
                    truth.dst_port = udp.destination_port();
                }
                etherparse::ip_number::ICMP | etherparse::ip_number::IPV6_ICMP => {
                    truth.dst_port = u16::from(bytes[0]) << 8 | u16::from(bytes[1]);
                }
                other => panic!("unexpected protocol {other:?}"),
            }
        }
    }
    truth
}

fn parsed_truth(frame: &[u8]) -> Truth {
    let parsed = parse_frame(frame);
    Truth {
        vlan: parsed.key.vlan,
        ip_version: parsed.key.ip_version,
        src: parsed.key.src_addr,
        dst: parsed.key.dst_addr,
        protocol: parsed.key.protocol,
        tos: parsed.key.tos,
        ttl: parsed.ttl,
        octets: parsed.octets,
        src_port: parsed.key.src_port,
        dst_port: parsed.key.dst_port,
        tcp_flags: parsed.tcp_flags,
        stop: parsed.stop,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parse_frame_agrees_with_etherparse(case in case_strategy()) {
        let frame = build(&case);
        let truth = etherparse_truth(&frame);
        prop_assert_eq!(parsed_truth(&frame), truth);
        // The frame is whole, so knowing its wire length changes nothing.
        prop_assert_eq!(parse_frame_with_wire_len(&frame, frame.len() as u32), parse_frame(&frame));
    }
}

#[test]
fn a_few_fixed_cases_agree_too() {
    // One of each shape, so a failure here names the shape without a proptest seed.
    let cases = [
        Case {
            vlan: Vlan::None,
            ip: Ip::V4 {
                src: [10, 0, 0, 1],
                dst: [10, 0, 0, 2],
                ttl: 64,
                dscp: 46,
                ecn: 1,
                option_words: 0,
                fragment: (0, false),
            },
            l4: L4::Tcp {
                src: 40000,
                dst: 443,
                flags: 0x12,
                option_words: 0,
            },
            payload_len: 0,
        },
        Case {
            vlan: Vlan::Double(100, 200),
            ip: Ip::V6 {
                src: [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                dst: [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
                hop_limit: 3,
                traffic_class: 0xb8,
                flow_label: 5,
                extensions: 31,
                fragment: (0, true),
            },
            l4: L4::Udp { src: 53, dst: 5353 },
            payload_len: 10,
        },
        Case {
            vlan: Vlan::Single(7),
            ip: Ip::V6 {
                src: [1; 16],
                dst: [2; 16],
                hop_limit: 255,
                traffic_class: 0,
                flow_label: 0,
                extensions: 0,
                fragment: (0, false),
            },
            l4: L4::Icmp {
                icmp_type: 128,
                code: 0,
            },
            payload_len: 56,
        },
    ];
    for case in &cases {
        let frame = build(case);
        assert_eq!(parsed_truth(&frame), etherparse_truth(&frame), "{case:?}");
    }
}

/// Where each layer of a built case starts and how much of it the parser needs.
struct Layout {
    l3_start: usize,
    l4_start: usize,
    /// Bytes of L4 header the parser needs before it reports ports.
    l4_needed: usize,
    /// The whole L4 header (TCP options included).
    l4_header_len: usize,
}

fn layout(case: &Case) -> Layout {
    let tags = match case.vlan {
        Vlan::None => 0,
        Vlan::Single(_) => 1,
        Vlan::Double(..) => 2,
    };
    let l3_start = 14 + 4 * tags;
    let ip_len = match case.ip {
        Ip::V4 { option_words, .. } => 20 + 4 * option_words,
        Ip::V6 { extensions, .. } => {
            // Hop-by-hop 8, destination options 16, routing 24, fragment 8, AH 12 + 12.
            let sizes = [8, 16, 24, 8, 24];
            40 + (0..5)
                .filter(|bit| extensions & (1 << bit) != 0)
                .map(|bit| sizes[bit])
                .sum::<usize>()
        }
    };
    let (l4_needed, l4_header_len) = match case.l4 {
        L4::Tcp { option_words, .. } => (20, 20 + 4 * option_words),
        L4::Udp { .. } => (8, 8),
        L4::Icmp { .. } => (4, 8),
    };
    Layout {
        l3_start,
        l4_start: l3_start + ip_len,
        l4_needed,
        l4_header_len,
    }
}

fn unfragmented(mut case: Case) -> Case {
    match &mut case.ip {
        Ip::V4 { fragment, .. } | Ip::V6 { fragment, .. } => *fragment = (0, false),
    }
    case
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Every truncation length of a valid frame stops at the layer the cut falls in, and
    /// an accounted stop still reports the IP header's fields.
    #[test]
    fn every_truncation_stops_at_the_right_layer(case in case_strategy().prop_map(unfragmented)) {
        let frame = build(&case);
        let layout = layout(&case);
        // The layout must describe what etherparse built.
        prop_assert_eq!(layout.l4_start + layout.l4_header_len + case.payload_len, frame.len());
        let whole = parse_frame(&frame);
        prop_assert_eq!(whole.stop, StopReason::Complete);
        for len in 0..=frame.len() {
            let cut = parse_frame(&frame[..len]);
            let expected = if len < layout.l3_start {
                StopReason::TruncatedL2
            } else if len < layout.l4_start {
                StopReason::TruncatedL3
            } else if len < layout.l4_start + layout.l4_needed {
                StopReason::TruncatedL4
            } else {
                StopReason::Complete
            };
            prop_assert_eq!(cut.stop, expected, "cut at {} of {}", len, frame.len());
            if expected.accounted() {
                prop_assert_eq!(cut.key.src_addr, whole.key.src_addr);
                prop_assert_eq!(cut.key.dst_addr, whole.key.dst_addr);
                prop_assert_eq!(cut.key.protocol, whole.key.protocol);
                prop_assert_eq!(cut.key.vlan, whole.key.vlan);
                prop_assert_eq!(cut.octets, whole.octets);
                prop_assert_eq!(cut.ttl, whole.ttl);
            }
            if expected == StopReason::TruncatedL4 {
                prop_assert_eq!((cut.key.src_port, cut.key.dst_port, cut.tcp_flags), (0, 0, 0));
            }
            if expected == StopReason::Complete {
                prop_assert_eq!(cut, whole);
            }
            // Told the frame was this short on the wire too, the IP length is a lie.
            if expected.accounted() && len < frame.len() {
                prop_assert_eq!(
                    parse_frame_with_wire_len(&frame[..len], len as u32).stop,
                    StopReason::BadIpHeader
                );
            }
        }
    }
}
