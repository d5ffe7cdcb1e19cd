//! Traffic synthesizer: well-formed Ethernet frames and whole traces, deterministic from a
//! seed, for tests, the demo and benchmarks.
//!
//! Frame builders ([`eth_ipv4_tcp`], [`eth_ipv4_udp`], [`eth_ipv6_tcp`], [`eth_ipv6_udp`],
//! [`eth_ipv4_icmp`], [`eth_ipv6_icmp`], [`eth_arp_request`]) write one frame into a
//! caller's buffer, so a loop reusing the buffer allocates nothing. Frames carry correct
//! IPv4 header and L4 checksums, a zero-filled payload, and are padded to Ethernet's
//! 60-byte minimum (without FCS). [`noise_frame`] writes deliberately malformed frames.
//!
//! [`TrafficSpec`] describes a trace (flows, packets per flow, how many flows are live at
//! once, IPv4/IPv6 and protocol mix, VLANs, frame sizes, timing, ARP and malformed
//! noise); [`TrafficGenerator`] streams its frames one at a time, and [`write_pcap`]
//! streams them to a classic pcap file, so traces of millions of packets cost no memory.

use std::fs::File;
use std::io::{self, BufWriter};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::path::Path;

use crate::parse::StopReason;
use crate::pcap::PcapWriter;

/// Source MAC address of every synthesized frame (locally administered).
pub const SRC_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
/// Destination MAC address of every synthesized frame except ARP requests (broadcast).
pub const DST_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];

/// Shortest Ethernet frame without its FCS; shorter frames are padded with zeros.
pub const MIN_FRAME_LEN: usize = 60;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const TPID_8021Q: u16 = 0x8100;
const TPID_8021AD: u16 = 0x88a8;
const ETHERTYPE_LLDP: u16 = 0x88cc;

const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_ICMPV6: u8 = 58;

/// TCP flag bits, as in the TCP header's flags byte.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// The IP and link fields a frame builder does not take as arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameOptions {
    /// 802.1Q tag; `None` for an untagged frame.
    pub vlan: Option<u16>,
    /// With `vlan`, makes the frame QinQ: an 802.1ad tag with `vlan` outside an 802.1Q tag
    /// with this id. Ignored without `vlan`.
    pub inner_vlan: Option<u16>,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// IPv4 ToS or IPv6 traffic class.
    pub tos: u8,
    /// Bytes of (zero) payload after the L4 header.
    pub payload_len: usize,
}

impl Default for FrameOptions {
    fn default() -> Self {
        FrameOptions {
            vlan: None,
            inner_vlan: None,
            ttl: 64,
            tos: 0,
            payload_len: 0,
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Addrs {
    V4(Ipv4Addr, Ipv4Addr),
    V6(Ipv6Addr, Ipv6Addr),
}

/// One's complement sum of 16-bit big-endian words (an odd last byte padded with zero).
fn sum_words(bytes: &[u8], mut sum: u32) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    for pair in &mut chunks {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

fn fold_checksum(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn push_ethernet(out: &mut Vec<u8>, dst: [u8; 6], ethertype: u16, opts: &FrameOptions) {
    out.extend_from_slice(&dst);
    out.extend_from_slice(&SRC_MAC);
    match (opts.vlan, opts.inner_vlan) {
        (Some(outer), Some(inner)) => {
            out.extend_from_slice(&TPID_8021AD.to_be_bytes());
            out.extend_from_slice(&(outer & 0x0fff).to_be_bytes());
            out.extend_from_slice(&TPID_8021Q.to_be_bytes());
            out.extend_from_slice(&(inner & 0x0fff).to_be_bytes());
        }
        (Some(vlan), None) => {
            out.extend_from_slice(&TPID_8021Q.to_be_bytes());
            out.extend_from_slice(&(vlan & 0x0fff).to_be_bytes());
        }
        (None, _) => {}
    }
    out.extend_from_slice(&ethertype.to_be_bytes());
}

/// Writes Ethernet, IP, the given L4 header (checksum field zero) and a zero payload,
/// then fills in the L4 checksum at `checksum_at` within the L4 header.
fn ip_frame(
    out: &mut Vec<u8>,
    addrs: Addrs,
    protocol: u8,
    l4_header: &[u8],
    checksum_at: usize,
    opts: &FrameOptions,
) {
    out.clear();
    let l4_len = l4_header.len() + opts.payload_len;
    // The pseudo-header sum; the zero payload adds nothing to any checksum.
    let mut pseudo = u32::from(protocol) + l4_len as u32;
    match addrs {
        Addrs::V4(src, dst) => {
            push_ethernet(out, DST_MAC, ETHERTYPE_IPV4, opts);
            let ip_start = out.len();
            let total_len = u16::try_from(20 + l4_len).unwrap_or(u16::MAX);
            out.extend_from_slice(&[0x45, opts.tos]);
            out.extend_from_slice(&total_len.to_be_bytes());
            // Identification 0, don't fragment.
            out.extend_from_slice(&[0, 0, 0x40, 0, opts.ttl, protocol, 0, 0]);
            out.extend_from_slice(&src.octets());
            out.extend_from_slice(&dst.octets());
            let checksum = fold_checksum(sum_words(&out[ip_start..], 0));
            out[ip_start + 10..ip_start + 12].copy_from_slice(&checksum.to_be_bytes());
            pseudo = sum_words(&src.octets(), sum_words(&dst.octets(), pseudo));
            if protocol == PROTO_ICMP {
                // ICMPv4 has no pseudo-header.
                pseudo = 0;
            }
        }
        Addrs::V6(src, dst) => {
            push_ethernet(out, DST_MAC, ETHERTYPE_IPV6, opts);
            let payload_len = u16::try_from(l4_len).unwrap_or(u16::MAX);
            let first_word = 0x6000_0000u32 | (u32::from(opts.tos) << 20);
            out.extend_from_slice(&first_word.to_be_bytes());
            out.extend_from_slice(&payload_len.to_be_bytes());
            out.extend_from_slice(&[protocol, opts.ttl]);
            out.extend_from_slice(&src.octets());
            out.extend_from_slice(&dst.octets());
            pseudo = sum_words(&src.octets(), sum_words(&dst.octets(), pseudo));
        }
    }
    let l4_start = out.len();
    out.extend_from_slice(l4_header);
    let mut checksum = fold_checksum(sum_words(l4_header, pseudo));
    if protocol == PROTO_UDP && checksum == 0 {
        // UDP sends a computed zero as all ones (zero means "no checksum").
        checksum = 0xffff;
    }
    out[l4_start + checksum_at..l4_start + checksum_at + 2]
        .copy_from_slice(&checksum.to_be_bytes());
    out.resize(out.len() + opts.payload_len, 0);
    pad(out);
}

fn pad(out: &mut Vec<u8>) {
    if out.len() < MIN_FRAME_LEN {
        out.resize(MIN_FRAME_LEN, 0);
    }
}

fn tcp_header(src_port: u16, dst_port: u16, flags: u8) -> [u8; 20] {
    let mut header = [0u8; 20];
    header[0..2].copy_from_slice(&src_port.to_be_bytes());
    header[2..4].copy_from_slice(&dst_port.to_be_bytes());
    header[4..8].copy_from_slice(&1u32.to_be_bytes());
    if flags & tcp_flags::ACK != 0 {
        header[8..12].copy_from_slice(&1u32.to_be_bytes());
    }
    header[12] = 5 << 4;
    header[13] = flags;
    header[14..16].copy_from_slice(&65535u16.to_be_bytes());
    header
}

fn udp_header(src_port: u16, dst_port: u16, payload_len: usize) -> [u8; 8] {
    let mut header = [0u8; 8];
    header[0..2].copy_from_slice(&src_port.to_be_bytes());
    header[2..4].copy_from_slice(&dst_port.to_be_bytes());
    let len = u16::try_from(8 + payload_len).unwrap_or(u16::MAX);
    header[4..6].copy_from_slice(&len.to_be_bytes());
    header
}

fn icmp_header(icmp_type: u8, code: u8) -> [u8; 8] {
    // Type, code, checksum, then identifier 1 and sequence 1 for echo messages (ICMP 0
    // and 8, ICMPv6 128 and 129); the other messages this builds leave the word unused,
    // which must be zero.
    let echo = matches!(icmp_type, 0 | 8 | 128 | 129);
    let (id, seq) = if echo { (1, 1) } else { (0, 0) };
    [icmp_type, code, 0, 0, 0, id, 0, seq]
}

/// Ethernet + IPv4 + TCP (no options) into `out`, replacing its contents.
pub fn eth_ipv4_tcp(
    out: &mut Vec<u8>,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    flags: u8,
    opts: &FrameOptions,
) {
    let tcp = tcp_header(src.port(), dst.port(), flags);
    ip_frame(
        out,
        Addrs::V4(*src.ip(), *dst.ip()),
        PROTO_TCP,
        &tcp,
        16,
        opts,
    );
}

/// Ethernet + IPv4 + UDP into `out`, replacing its contents.
pub fn eth_ipv4_udp(out: &mut Vec<u8>, src: SocketAddrV4, dst: SocketAddrV4, opts: &FrameOptions) {
    let udp = udp_header(src.port(), dst.port(), opts.payload_len);
    ip_frame(
        out,
        Addrs::V4(*src.ip(), *dst.ip()),
        PROTO_UDP,
        &udp,
        6,
        opts,
    );
}

/// Ethernet + IPv6 + TCP (no options) into `out`, replacing its contents.
pub fn eth_ipv6_tcp(
    out: &mut Vec<u8>,
    src: SocketAddrV6,
    dst: SocketAddrV6,
    flags: u8,
    opts: &FrameOptions,
) {
    let tcp = tcp_header(src.port(), dst.port(), flags);
    ip_frame(
        out,
        Addrs::V6(*src.ip(), *dst.ip()),
        PROTO_TCP,
        &tcp,
        16,
        opts,
    );
}

/// Ethernet + IPv6 + UDP into `out`, replacing its contents.
pub fn eth_ipv6_udp(out: &mut Vec<u8>, src: SocketAddrV6, dst: SocketAddrV6, opts: &FrameOptions) {
    let udp = udp_header(src.port(), dst.port(), opts.payload_len);
    ip_frame(
        out,
        Addrs::V6(*src.ip(), *dst.ip()),
        PROTO_UDP,
        &udp,
        6,
        opts,
    );
}

/// Ethernet + IPv4 + an 8-byte ICMP header of `icmp_type`/`code` into `out`.
pub fn eth_ipv4_icmp(
    out: &mut Vec<u8>,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    icmp_type: u8,
    code: u8,
    opts: &FrameOptions,
) {
    let icmp = icmp_header(icmp_type, code);
    ip_frame(out, Addrs::V4(src, dst), PROTO_ICMP, &icmp, 2, opts);
}

/// Ethernet + IPv6 + an 8-byte ICMPv6 header of `icmp_type`/`code` into `out`.
pub fn eth_ipv6_icmp(
    out: &mut Vec<u8>,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    icmp_type: u8,
    code: u8,
    opts: &FrameOptions,
) {
    let icmp = icmp_header(icmp_type, code);
    ip_frame(out, Addrs::V6(src, dst), PROTO_ICMPV6, &icmp, 2, opts);
}

/// A broadcast ARP request ("who has `target`? tell `sender`") into `out`.
pub fn eth_arp_request(out: &mut Vec<u8>, sender: Ipv4Addr, target: Ipv4Addr, vlan: Option<u16>) {
    out.clear();
    let opts = FrameOptions {
        vlan,
        ..FrameOptions::default()
    };
    push_ethernet(out, [0xff; 6], ETHERTYPE_ARP, &opts);
    // Ethernet hardware, IPv4 protocol, address lengths 6 and 4, operation request.
    out.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    out.extend_from_slice(&SRC_MAC);
    out.extend_from_slice(&sender.octets());
    out.extend_from_slice(&[0; 6]);
    out.extend_from_slice(&target.octets());
    pad(out);
}

/// Kinds of malformed or non-IP frames a trace can carry as noise. None of them belongs to
/// a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Noise {
    /// A 10-byte runt: shorter than an Ethernet header.
    Runt,
    /// An IPv4 frame cut after 12 bytes of the IP header.
    TruncatedIpv4,
    /// IPv4 with IHL 3.
    BadIhl,
    /// EtherType IPv4 but IP version 5.
    BadVersion,
    /// IPv4 whose total length (10) is shorter than its header.
    ShortTotalLength,
    /// IPv6 whose hop-by-hop header claims to run past the payload.
    BadIpv6ExtensionChain,
    /// An LLDP frame (EtherType 0x88cc).
    UnknownEtherType,
}

impl Noise {
    pub const ALL: [Noise; 7] = [
        Noise::Runt,
        Noise::TruncatedIpv4,
        Noise::BadIhl,
        Noise::BadVersion,
        Noise::ShortTotalLength,
        Noise::BadIpv6ExtensionChain,
        Noise::UnknownEtherType,
    ];

    /// Where the parser stops on this kind of frame.
    pub fn expected_stop(self) -> StopReason {
        match self {
            Noise::Runt => StopReason::TruncatedL2,
            Noise::TruncatedIpv4 => StopReason::TruncatedL3,
            Noise::BadIhl | Noise::BadVersion | Noise::ShortTotalLength => StopReason::BadIpHeader,
            Noise::BadIpv6ExtensionChain => StopReason::BadIpv6ExtensionChain,
            Noise::UnknownEtherType => StopReason::NonIp,
        }
    }
}

/// A malformed or non-IP frame of `kind` into `out`.
pub fn noise_frame(out: &mut Vec<u8>, kind: Noise) {
    let opts = FrameOptions {
        payload_len: 16,
        ..FrameOptions::default()
    };
    let v4 = |out: &mut Vec<u8>| {
        eth_ipv4_udp(
            out,
            SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 9),
            SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 2), 9),
            &opts,
        );
    };
    match kind {
        Noise::Runt => {
            out.clear();
            out.extend_from_slice(&DST_MAC);
            out.extend_from_slice(&SRC_MAC[..4]);
        }
        Noise::TruncatedIpv4 => {
            v4(out);
            out.truncate(14 + 12);
        }
        Noise::BadIhl => {
            v4(out);
            out[14] = 0x43;
        }
        Noise::BadVersion => {
            v4(out);
            out[14] = 0x55;
        }
        Noise::ShortTotalLength => {
            v4(out);
            out[16..18].copy_from_slice(&10u16.to_be_bytes());
        }
        Noise::BadIpv6ExtensionChain => {
            eth_ipv6_udp(
                out,
                SocketAddrV6::new(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), 9, 0, 0),
                SocketAddrV6::new(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2), 9, 0, 0),
                &opts,
            );
            // Next header hop-by-hop; its length (255 -> 2048 bytes) overruns the payload.
            out[14 + 6] = 0;
            out[14 + 40] = PROTO_UDP;
            out[14 + 41] = 255;
        }
        Noise::UnknownEtherType => {
            out.clear();
            out.extend_from_slice(&[0x01, 0x80, 0xc2, 0x00, 0x00, 0x0e]);
            out.extend_from_slice(&SRC_MAC);
            out.extend_from_slice(&ETHERTYPE_LLDP.to_be_bytes());
            pad(out);
        }
    }
}

/// SplitMix64: tiny, fast, and good enough to vary test traffic deterministically.
#[derive(Clone, Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }
}

/// SplitMix64's finalizer: a stateless hash of one word.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform value in `[0, 1)` from a random word.
fn unit(random: u64) -> f32 {
    (random >> 40) as f32 / (1u64 << 24) as f32
}

/// A uniform value in `[0, n)` from a random word.
fn below(random: u64, n: u64) -> u64 {
    ((u128::from(random) * u128::from(n)) >> 64) as u64
}

/// Relative weights of the L4 protocols among a trace's flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProtocolMix {
    pub tcp: u32,
    pub udp: u32,
    pub icmp: u32,
}

impl Default for ProtocolMix {
    fn default() -> Self {
        ProtocolMix {
            tcp: 6,
            udp: 3,
            icmp: 1,
        }
    }
}

/// Frame sizes of a trace's flow packets, captured bytes without FCS. A frame never gets
/// shorter than its headers (or 60 bytes); the payload fills the rest with zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameLen {
    /// Every frame this long (60 for "64-byte" benchmark frames, which count the FCS).
    Fixed(usize),
    /// Uniform in `min..=max`, drawn per packet.
    Uniform { min: usize, max: usize },
}

/// A synthetic trace. Flow `i`'s key depends only on `seed` and `i`; packets of the flows
/// in progress are interleaved round-robin.
#[derive(Clone, Debug, PartialEq)]
pub struct TrafficSpec {
    pub flows: u32,
    pub packets_per_flow: u32,
    /// How many flows are in progress at once (a cache benchmark's working set). When one
    /// ends the next starts. 0, or at least `flows`, makes every flow live from the start.
    pub live_flows: u32,
    /// Fraction of flows over IPv6, 0..=1.
    pub ipv6_share: f32,
    pub mix: ProtocolMix,
    /// Fraction of flows carried in a VLAN (a quarter of them QinQ), 0..=1.
    pub vlan_share: f32,
    pub frame_len: FrameLen,
    /// Time of the first frame, microseconds since the epoch.
    pub start_us: u64,
    /// Time between consecutive frames of the trace.
    pub spacing_us: u64,
    /// Frames that arrive together, back to back, at the time of a train's first frame
    /// (the average rate is still one frame per `spacing_us`): links deliver trains, and
    /// a poll-mode worker then takes bursts rather than single frames. 0 or 1: none.
    pub train: u32,
    /// Chance that an ARP request is slipped in before a flow packet, 0..=1.
    pub arp_share: f32,
    /// Also slip in malformed and non-IP frames (each [`Noise`] kind), about 1 in 100.
    pub include_noise: bool,
    pub seed: u64,
}

impl Default for TrafficSpec {
    fn default() -> Self {
        TrafficSpec {
            flows: 1_000,
            packets_per_flow: 10,
            live_flows: 100,
            ipv6_share: 0.25,
            mix: ProtocolMix::default(),
            vlan_share: 0.1,
            frame_len: FrameLen::Uniform { min: 60, max: 1514 },
            start_us: 1_700_000_000_000_000,
            spacing_us: 10,
            train: 1,
            arp_share: 0.005,
            include_noise: false,
            seed: 1,
        }
    }
}

impl TrafficSpec {
    /// Packets that belong to flows (noise and ARP excluded).
    pub fn flow_packets(&self) -> u64 {
        u64::from(self.flows) * u64::from(self.packets_per_flow)
    }
}

/// Chance of a noise frame before each flow packet when `include_noise` is set.
const NOISE_SHARE: f32 = 0.01;

const TOS_CHOICES: [u8; 4] = [0x00, 0x00, 0x10, 0xb8];
const TTL_CHOICES: [u8; 4] = [64, 128, 255, 57];
const SERVER_PORTS: [u16; 8] = [80, 443, 53, 123, 22, 8080, 5201, 4789];
const ICMPV4_TYPES: [(u8, u8); 4] = [(8, 0), (0, 0), (3, 3), (11, 0)];
const ICMPV6_TYPES: [(u8, u8); 4] = [(128, 0), (129, 0), (1, 4), (3, 0)];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FlowKind {
    Tcp,
    Udp,
    Icmp(u8, u8),
}

/// Everything fixed about one flow.
#[derive(Clone, Copy, Debug)]
struct FlowShape {
    ipv6: bool,
    kind: FlowKind,
    src_v4: Ipv4Addr,
    dst_v4: Ipv4Addr,
    src_v6: Ipv6Addr,
    dst_v6: Ipv6Addr,
    src_port: u16,
    dst_port: u16,
    opts: FrameOptions,
}

impl FlowShape {
    /// Flow `index` of `spec`. Keys of distinct indexes differ for the first 2^24 flows
    /// (the source address carries the index).
    fn new(spec: &TrafficSpec, index: u32) -> FlowShape {
        let mut random = SplitMix64(mix64(spec.seed ^ u64::from(index).rotate_left(32)));
        let ipv6 = unit(random.next_u64()) < spec.ipv6_share;
        let mix = spec.mix;
        let total = u64::from(mix.tcp) + u64::from(mix.udp) + u64::from(mix.icmp);
        let pick = below(random.next_u64(), total.max(1));
        let icmp_choice = below(random.next_u64(), 4) as usize;
        let kind = if pick < u64::from(mix.tcp) || total == 0 {
            FlowKind::Tcp
        } else if pick < u64::from(mix.tcp) + u64::from(mix.udp) {
            FlowKind::Udp
        } else if ipv6 {
            let (t, c) = ICMPV6_TYPES[icmp_choice];
            FlowKind::Icmp(t, c)
        } else {
            let (t, c) = ICMPV4_TYPES[icmp_choice];
            FlowKind::Icmp(t, c)
        };
        let tagged = unit(random.next_u64()) < spec.vlan_share;
        let vlan_word = random.next_u64();
        let (vlan, inner_vlan) = if tagged {
            let outer = 1 + below(vlan_word, 4094) as u16;
            let inner = (below(vlan_word.rotate_left(17), 4) == 0)
                .then(|| 1 + below(vlan_word.rotate_left(41), 4094) as u16);
            (Some(outer), inner)
        } else {
            (None, None)
        };
        let looks = random.next_u64();
        let opts = FrameOptions {
            vlan,
            inner_vlan,
            ttl: TTL_CHOICES[(looks & 3) as usize],
            tos: TOS_CHOICES[((looks >> 2) & 3) as usize],
            payload_len: 0,
        };
        let dst_word = random.next_u64();
        let low = index & 0x00ff_ffff;
        let src_v4 = Ipv4Addr::from(0x0a00_0000 | low);
        let dst_v4 = Ipv4Addr::from(0xac10_0000 | (dst_word as u32 & 0x000f_ffff));
        let src_v6 = Ipv6Addr::new(0xfd00, 0, 0, 1, 0, 0, (index >> 16) as u16, index as u16);
        let dst_v6 = Ipv6Addr::new(
            0xfd00,
            0,
            0,
            2,
            0,
            0,
            (dst_word >> 32) as u16,
            (dst_word >> 48) as u16,
        );
        let port_word = random.next_u64();
        let src_port = 1024 + below(port_word, 64_512) as u16;
        let dst_port = if port_word & (1 << 63) != 0 {
            SERVER_PORTS[((port_word >> 32) & 7) as usize]
        } else {
            1024 + below(port_word.rotate_left(23), 64_512) as u16
        };
        FlowShape {
            ipv6,
            kind,
            src_v4,
            dst_v4,
            src_v6,
            dst_v6,
            src_port,
            dst_port,
            opts,
        }
    }

    fn headers_len(&self) -> usize {
        let tags = match (self.opts.vlan, self.opts.inner_vlan) {
            (Some(_), Some(_)) => 8,
            (Some(_), None) => 4,
            _ => 0,
        };
        let ip = if self.ipv6 { 40 } else { 20 };
        let l4 = match self.kind {
            FlowKind::Tcp => 20,
            FlowKind::Udp | FlowKind::Icmp(..) => 8,
        };
        14 + tags + ip + l4
    }

    /// Packet `seq` of `total` of this flow, `frame_len` bytes long, into `out`.
    fn write(&self, out: &mut Vec<u8>, seq: u32, total: u32, frame_len: usize) {
        let opts = FrameOptions {
            payload_len: frame_len.saturating_sub(self.headers_len()),
            ..self.opts
        };
        match self.kind {
            FlowKind::Tcp => {
                let flags = if seq == 0 {
                    tcp_flags::SYN
                } else if seq + 1 == total {
                    tcp_flags::FIN | tcp_flags::ACK
                } else if opts.payload_len > 0 {
                    tcp_flags::PSH | tcp_flags::ACK
                } else {
                    tcp_flags::ACK
                };
                if self.ipv6 {
                    eth_ipv6_tcp(
                        out,
                        SocketAddrV6::new(self.src_v6, self.src_port, 0, 0),
                        SocketAddrV6::new(self.dst_v6, self.dst_port, 0, 0),
                        flags,
                        &opts,
                    );
                } else {
                    eth_ipv4_tcp(
                        out,
                        SocketAddrV4::new(self.src_v4, self.src_port),
                        SocketAddrV4::new(self.dst_v4, self.dst_port),
                        flags,
                        &opts,
                    );
                }
            }
            FlowKind::Udp => {
                if self.ipv6 {
                    eth_ipv6_udp(
                        out,
                        SocketAddrV6::new(self.src_v6, self.src_port, 0, 0),
                        SocketAddrV6::new(self.dst_v6, self.dst_port, 0, 0),
                        &opts,
                    );
                } else {
                    eth_ipv4_udp(
                        out,
                        SocketAddrV4::new(self.src_v4, self.src_port),
                        SocketAddrV4::new(self.dst_v4, self.dst_port),
                        &opts,
                    );
                }
            }
            FlowKind::Icmp(icmp_type, code) => {
                if self.ipv6 {
                    eth_ipv6_icmp(out, self.src_v6, self.dst_v6, icmp_type, code, &opts);
                } else {
                    eth_ipv4_icmp(out, self.src_v4, self.dst_v4, icmp_type, code, &opts);
                }
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct LiveFlow {
    shape: FlowShape,
    sent: u32,
}

/// Streams the frames of a [`TrafficSpec`], one at a time, with their timestamps.
#[derive(Debug)]
pub struct TrafficGenerator {
    spec: TrafficSpec,
    random: SplitMix64,
    live: Vec<LiveFlow>,
    cursor: usize,
    next_flow: u32,
    frames: u64,
    noise_turn: usize,
}

impl TrafficGenerator {
    pub fn new(spec: &TrafficSpec) -> TrafficGenerator {
        let live_count = if spec.live_flows == 0 {
            spec.flows
        } else {
            spec.live_flows.min(spec.flows)
        };
        let mut generator = TrafficGenerator {
            spec: spec.clone(),
            random: SplitMix64(mix64(spec.seed ^ 0x5eed_0f7a_1ff1_c0de)),
            live: Vec::with_capacity(live_count as usize),
            cursor: 0,
            next_flow: 0,
            frames: 0,
            noise_turn: 0,
        };
        if spec.packets_per_flow > 0 {
            for _ in 0..live_count {
                generator.start_flow();
            }
        }
        generator
    }

    fn start_flow(&mut self) {
        let shape = FlowShape::new(&self.spec, self.next_flow);
        self.next_flow += 1;
        self.live.push(LiveFlow { shape, sent: 0 });
    }

    /// Frames produced so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Writes the next frame into `out` (replacing its contents) and returns its
    /// timestamp in microseconds since the epoch, or `None` when the trace is complete.
    pub fn next_frame(&mut self, out: &mut Vec<u8>) -> Option<u64> {
        if self.live.is_empty() {
            return None;
        }
        let train = u64::from(self.spec.train.max(1));
        let timestamp_us = self.spec.start_us + self.frames / train * train * self.spec.spacing_us;
        self.frames += 1;
        let draw = unit(self.random.next_u64());
        if draw < self.spec.arp_share {
            let sender = Ipv4Addr::from(0x0a00_0000 | (self.random.next_u64() as u32 & 0xffff));
            let target = Ipv4Addr::from(0x0a00_0000 | (self.random.next_u64() as u32 & 0xffff));
            eth_arp_request(out, sender, target, None);
            return Some(timestamp_us);
        }
        if self.spec.include_noise && draw < self.spec.arp_share + NOISE_SHARE {
            noise_frame(out, Noise::ALL[self.noise_turn % Noise::ALL.len()]);
            self.noise_turn += 1;
            return Some(timestamp_us);
        }
        let frame_len = match self.spec.frame_len {
            FrameLen::Fixed(len) => len,
            FrameLen::Uniform { min, max } => {
                let (low, high) = (min.min(max), min.max(max));
                low + below(self.random.next_u64(), (high - low + 1) as u64) as usize
            }
        };
        let total = self.spec.packets_per_flow;
        let flow = &mut self.live[self.cursor];
        flow.shape.write(out, flow.sent, total, frame_len);
        flow.sent += 1;
        if flow.sent == total && self.next_flow < self.spec.flows {
            self.live[self.cursor] = LiveFlow {
                shape: FlowShape::new(&self.spec, self.next_flow),
                sent: 0,
            };
            self.next_flow += 1;
        }
        // A finished flow with no successor keeps its slot until the round ends, so the
        // others keep their order; then the round's finished flows leave together.
        self.cursor += 1;
        if self.cursor >= self.live.len() {
            self.live.retain(|flow| flow.sent < total);
            self.cursor = 0;
        }
        Some(timestamp_us)
    }
}

/// Writes the trace `spec` describes to a classic pcap file; returns the frames written.
pub fn write_pcap(spec: &TrafficSpec, path: &Path) -> io::Result<u64> {
    let file = File::create(path)?;
    let mut writer = PcapWriter::new(BufWriter::with_capacity(1 << 20, file))?;
    let mut generator = TrafficGenerator::new(spec);
    let mut frame = Vec::with_capacity(2048);
    while let Some(timestamp_us) = generator.next_frame(&mut frame) {
        writer.write_packet(timestamp_us, &frame)?;
    }
    writer.into_inner()?;
    Ok(generator.frames())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_frame;

    #[test]
    fn checksums_verify() {
        let mut frame = Vec::new();
        let opts = FrameOptions {
            payload_len: 3,
            ..FrameOptions::default()
        };
        eth_ipv4_tcp(
            &mut frame,
            "10.0.0.1:1234".parse().unwrap(),
            "10.0.0.2:80".parse().unwrap(),
            tcp_flags::SYN,
            &opts,
        );
        // Summing a header with its checksum in place gives 0xffff.
        assert_eq!(fold_checksum(sum_words(&frame[14..34], 0)), 0);
        let l4 = &frame[34..34 + 23];
        let pseudo = sum_words(&frame[26..34], u32::from(PROTO_TCP) + 23);
        assert_eq!(fold_checksum(sum_words(l4, pseudo)), 0);
    }

    #[test]
    fn every_flow_sends_all_its_packets() {
        let spec = TrafficSpec {
            flows: 7,
            packets_per_flow: 3,
            live_flows: 3,
            arp_share: 0.0,
            ..TrafficSpec::default()
        };
        let mut generator = TrafficGenerator::new(&spec);
        let mut frame = Vec::new();
        let mut per_source = std::collections::HashMap::<[u8; 16], u32>::new();
        while generator.next_frame(&mut frame).is_some() {
            let parsed = parse_frame(&frame);
            *per_source.entry(parsed.key.src_addr).or_default() += 1;
        }
        assert_eq!(generator.frames(), 21);
        assert_eq!(per_source.len(), 7);
        assert!(per_source.values().all(|&n| n == 3));
    }
}
