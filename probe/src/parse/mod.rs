//! The packet parser of the hot path: from an Ethernet frame to the flow key and counters
//! of one packet, with no allocation and no owned header structs.
//!
//! # Views
//!
//! Each header has a zero-copy view over the frame's bytes, in the style of smoltcp's
//! `wire` module: [`EthernetFrame`], [`VlanTag`], [`Ipv4Packet`], [`Ipv6Packet`] with
//! [`Ipv6ExtHeader`] and [`Ipv6FragmentHeader`], [`TcpHeader`], [`UdpHeader`],
//! [`IcmpHeader`] (ICMP and ICMPv6) and [`SctpHeader`]. Field offsets are constants in a
//! private `field` module beside each view.
//!
//! **Contract:** a view is built with `new_unchecked` or `new_checked`; once
//! `check_len()` (which `new_checked` calls) has returned `Ok`, no getter of that view
//! panics. [`parse_frame`] never panics on any input, whatever its bytes or length.
//!
//! # Laxness
//!
//! Like etherparse's `LaxSlicedPacket`, [`parse_frame`] returns what it parsed and a
//! [`StopReason`] saying where and why it stopped, instead of an error. Unknown EtherTypes
//! and protocol numbers are values ([`EtherType`], [`IpProtocol`]), not errors: a probe
//! sees everything and counts it. Only the fields the flow key and counters need are read;
//! checksums are not verified (a tap sees what the wire carried, and NetFlow accounts it).
//!
//! # Rules
//!
//! - VLAN: 802.1Q (`0x8100`), 802.1ad (`0x88a8`) and the pre-standard QinQ `0x9100` tags,
//!   stacked in any number. The key's `vlan` is the **outermost** tag's VLAN id (in QinQ
//!   the service tag, the one the tapped port is configured with); inner tags are skipped.
//!   Untagged frames have `vlan` 0.
//! - Octets: the IPv4 total length, or the IPv6 payload length + 40, as NetFlow counts.
//!   A capture that cut the packet short still counts the header's length; Ethernet padding
//!   after the IP packet is ignored.
//! - ToS: the IPv4 ToS byte or the IPv6 traffic class. TTL: the IPv4 TTL or the IPv6 hop
//!   limit.
//! - Ports: TCP, UDP, UDP-Lite and SCTP ports; ICMP and ICMPv6 put `type << 8 | code` in the
//!   destination port and 0 in the source port, as NetFlow does. Every other protocol, a
//!   non-first fragment, or an L4 header that is cut or malformed leaves both ports 0.
//! - IPv4 fragments: offset > 0 stops at [`StopReason::Fragment`]; the first fragment
//!   (offset 0, more-fragments set) carries the L4 header and is parsed fully.
//! - IPv6 extension headers: hop-by-hop (0, first only), routing (43), fragment (44),
//!   destination options (60), AH (51), mobility (135), HIP (139) and shim6 (140) are
//!   walked to the upper-layer protocol, which becomes the key's protocol. A fragment header
//!   with offset 0 is walked through (the L4 header follows it); offset > 0 stops at
//!   [`StopReason::Fragment`] with the fragment header's next header as protocol. Jumbograms
//!   (payload length 0 with a jumbo option) are not supported and stop at
//!   [`StopReason::BadIpv6ExtensionChain`].
//! - TCP: the flags byte (CWR ECE URG ACK PSH RST SYN FIN) is read from the fixed header.
//!   A data offset below 5, or a header longer than the IP packet's payload, is
//!   [`StopReason::BadL4Header`]: the packet is accounted with ports and flags 0, because
//!   no field of a malformed header is trusted. TCP options are never read, so a capture
//!   that cuts them still yields a complete key.

/// Declares a zero-copy header view over `T: AsRef<[u8]>` with its two constructors:
/// `new_unchecked` (call `check_len` before any getter) and `new_checked`. With `fixed LEN`
/// it also defines `HEADER_LEN` and a `check_len` that asks for exactly that many bytes;
/// views of variable-length headers write their own `check_len`.
macro_rules! header_view {
    ($(#[$meta:meta])* $name:ident, fixed $len:expr) => {
        header_view!($(#[$meta])* $name);

        impl<T: AsRef<[u8]>> $name<T> {
            pub const HEADER_LEN: usize = $len;

            pub fn check_len(&self) -> Result<(), HeaderError> {
                if self.buffer.as_ref().len() < Self::HEADER_LEN {
                    Err(HeaderError::Truncated)
                } else {
                    Ok(())
                }
            }
        }
    };
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug)]
        pub struct $name<T: AsRef<[u8]>> {
            buffer: T,
        }

        impl<T: AsRef<[u8]>> $name<T> {
            /// Wraps a buffer without checking it: call `check_len` before any getter.
            pub fn new_unchecked(buffer: T) -> Self {
                $name { buffer }
            }

            /// Wraps a buffer whose length `check_len` accepts.
            pub fn new_checked(buffer: T) -> Result<Self, HeaderError> {
                let view = Self::new_unchecked(buffer);
                view.check_len()?;
                Ok(view)
            }
        }
    };
}

mod ethernet;
mod icmp;
mod ip;
mod ipv4;
mod ipv6;
mod locate;
mod sctp;
mod tcp;
mod udp;
mod vlan;

pub use ethernet::{EtherType, EthernetFrame};
pub use icmp::IcmpHeader;
pub use ip::IpProtocol;
pub use ipv4::Ipv4Packet;
pub use ipv6::{Ipv6ExtHeader, Ipv6FragmentHeader, Ipv6Packet};
pub use locate::{Transport, locate_transport};
pub use sctp::SctpHeader;
pub use tcp::TcpHeader;
pub use udp::UdpHeader;
pub use vlan::VlanTag;

use flowcache::FlowKey;

/// Why a header view rejected its buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// The buffer ends before the header does.
    Truncated,
    /// A length field contradicts the header's own rules (e.g. an IPv4 IHL below 5).
    Malformed,
}

/// Reads a big-endian `u16` at `at`. Callers have checked the length.
#[inline(always)]
fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

/// Reads a big-endian `u32` at `at`. Callers have checked the length.
#[inline(always)]
fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Where and why [`parse_frame`] stopped. Each reason is an operator-visible counter
/// (`parse_stops.<name>`), indexed by `reason as usize`.
///
/// The first five reasons are *accounted*: the IP header was valid, so the packet belongs
/// to a flow and its octets are counted. The others are not.
#[repr(u8)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StopReason {
    /// Everything the flow key needs was parsed, ports included.
    #[default]
    Complete = 0,
    /// An IP protocol without ports parsed here (GRE, ESP, OSPF, IGMP, IPv6 no-next-header,
    /// ...): accounted with ports 0.
    UnknownL4,
    /// A non-first IP fragment: accounted with ports 0.
    Fragment,
    /// The IP header is fine but the capture ends inside the L4 header: accounted with
    /// ports 0.
    TruncatedL4,
    /// The L4 header does not fit in the IP payload the IP header declares, or a TCP data
    /// offset is below 5: accounted with ports 0.
    BadL4Header,
    /// Not IPv4 or IPv6 (ARP, LLDP, any other EtherType): not accounted.
    NonIp,
    /// The frame ends inside the Ethernet header or a VLAN tag: not accounted.
    TruncatedL2,
    /// The frame ends inside the IPv4 header (options included) or the IPv6 header or its
    /// extension headers: not accounted.
    TruncatedL3,
    /// The IP header is invalid: wrong version, IPv4 IHL below 5, total length smaller than
    /// the header, or a length larger than the frame on the wire: not accounted.
    BadIpHeader,
    /// An IPv6 extension header runs past the declared payload, or hop-by-hop is not
    /// first: not accounted.
    BadIpv6ExtensionChain,
}

impl StopReason {
    /// Number of reasons: the length of a counter array indexed by `reason as usize`.
    pub const COUNT: usize = 10;

    /// Every reason, in discriminant order (`ALL[r as usize] == r`).
    pub const ALL: [StopReason; StopReason::COUNT] = [
        StopReason::Complete,
        StopReason::UnknownL4,
        StopReason::Fragment,
        StopReason::TruncatedL4,
        StopReason::BadL4Header,
        StopReason::NonIp,
        StopReason::TruncatedL2,
        StopReason::TruncatedL3,
        StopReason::BadIpHeader,
        StopReason::BadIpv6ExtensionChain,
    ];

    /// The `reason` label of `tapflow_parse_stops_total`, by `reason as usize`; empty for
    /// `Complete`, which is no stop.
    pub const STOP_LABELS: [&'static str; StopReason::COUNT] = {
        let mut names = [""; StopReason::COUNT];
        let mut i = 1;
        while i < StopReason::COUNT {
            names[i] = StopReason::ALL[i].name();
            i += 1;
        }
        names
    };

    /// True iff the IP header was valid, so the packet belongs to a flow.
    #[inline]
    pub fn accounted(self) -> bool {
        (self as u8) <= (StopReason::BadL4Header as u8)
    }

    /// The counter name, snake case.
    pub const fn name(self) -> &'static str {
        match self {
            StopReason::Complete => "complete",
            StopReason::UnknownL4 => "unknown_l4",
            StopReason::Fragment => "fragment",
            StopReason::TruncatedL4 => "truncated_l4",
            StopReason::BadL4Header => "bad_l4_header",
            StopReason::NonIp => "non_ip",
            StopReason::TruncatedL2 => "truncated_l2",
            StopReason::TruncatedL3 => "truncated_l3",
            StopReason::BadIpHeader => "bad_ip_header",
            StopReason::BadIpv6ExtensionChain => "bad_ipv6_ext_chain",
        }
    }

    /// One line for an operator: what the counter counts.
    pub fn description(self) -> &'static str {
        match self {
            StopReason::Complete => {
                "parsed to the L4 ports (TCP, UDP, UDP-Lite, SCTP, ICMP type/code)"
            }
            StopReason::UnknownL4 => {
                "IP protocol without ports here (GRE, ESP, OSPF, ...); ports 0"
            }
            StopReason::Fragment => "non-first IP fragment; ports 0",
            StopReason::TruncatedL4 => "capture ends inside the L4 header; ports 0",
            StopReason::BadL4Header => {
                "L4 header longer than the IP payload, or TCP data offset < 5; ports 0"
            }
            StopReason::NonIp => "not IPv4/IPv6 (ARP, LLDP, other EtherType)",
            StopReason::TruncatedL2 => "frame ends inside the Ethernet header or a VLAN tag",
            StopReason::TruncatedL3 => "frame ends inside the IP header or IPv6 extension headers",
            StopReason::BadIpHeader => {
                "bad IP version, IHL < 5, total length < header or > frame on the wire"
            }
            StopReason::BadIpv6ExtensionChain => {
                "IPv6 extension header past the payload, or hop-by-hop not first"
            }
        }
    }
}

/// What the flow cache needs from one frame.
///
/// When `stop.accounted()` is false only `stop` is meaningful; the other fields hold
/// whatever was parsed before the stop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParsedPacket {
    /// The flow key; `input_port` is left 0 for the caller to fill.
    pub key: FlowKey,
    /// IPv4 total length, or IPv6 payload length + 40.
    pub octets: u32,
    /// TCP flags byte; 0 for other protocols or when the TCP header was not parsed.
    pub tcp_flags: u8,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// Where and why parsing stopped.
    pub stop: StopReason,
}

/// Parses one captured Ethernet frame. Never panics, never allocates.
///
/// The capture may be shorter than the packet on the wire (a snap length); the IP
/// header's length is then trusted. Use [`parse_frame_with_wire_len`] when the length on
/// the wire is known, to also reject IP lengths larger than the frame that carried them.
#[inline]
pub fn parse_frame(frame: &[u8]) -> ParsedPacket {
    parse(frame, usize::MAX)
}

/// Like [`parse_frame`], but an IP packet whose declared length exceeds what the frame
/// carried on the wire (`wire_len`, Ethernet and VLAN headers included) stops at
/// [`StopReason::BadIpHeader`] instead of being accounted with a length it never had.
#[inline]
pub fn parse_frame_with_wire_len(frame: &[u8], wire_len: u32) -> ParsedPacket {
    // A wire length below the captured length is a source bug; trust the bytes we hold.
    parse(frame, (wire_len as usize).max(frame.len()))
}

fn parse(frame: &[u8], wire_len: usize) -> ParsedPacket {
    let mut out = ParsedPacket::default();
    let meta = parse_meta(frame, wire_len, &mut out.key);
    out.octets = meta.octets;
    out.tcp_flags = meta.tcp_flags;
    out.ttl = meta.ttl;
    out.stop = meta.stop;
    out
}

/// What [`parse_frame_into`] returns beside the key it writes: small enough to come back
/// in registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketMeta {
    /// IPv4 total length, or IPv6 payload length + 40.
    pub octets: u32,
    /// TCP flags byte; 0 for other protocols or when the TCP header was not parsed.
    pub tcp_flags: u8,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// Where and why parsing stopped; when `stop.accounted()` is false the other fields
    /// (and the key) hold whatever was parsed before the stop.
    pub stop: StopReason,
}

/// [`parse_frame_with_wire_len`] writing the flow key straight into the caller's `key`,
/// which must be all zeros but for `input_port` (left alone). For the hot path: a result
/// returned by value is read back wide right after the parser's narrow stores into it,
/// and such a load waits for the stores to commit; written in place, the key is next read
/// a whole burst later.
#[inline]
pub fn parse_frame_into(frame: &[u8], wire_len: u32, key: &mut FlowKey) -> PacketMeta {
    parse_meta(frame, (wire_len as usize).max(frame.len()), key)
}

#[inline]
fn parse_meta(frame: &[u8], wire_len: usize, key: &mut FlowKey) -> PacketMeta {
    let mut out = Sink {
        key,
        octets: 0,
        tcp_flags: 0,
        ttl: 0,
    };
    let stop = parse_into(frame, wire_len, &mut out);
    PacketMeta {
        octets: out.octets,
        tcp_flags: out.tcp_flags,
        ttl: out.ttl,
        stop,
    }
}

/// Where the parser writes: the caller's key, and the counters' fields.
struct Sink<'a> {
    key: &'a mut FlowKey,
    octets: u32,
    tcp_flags: u8,
    ttl: u8,
}

// Inlined into the caller's loop: the fast path's results then stay in registers rather
// than going out through the sink and back, and no call is made for the common frame.
#[inline(always)]
fn parse_into(frame: &[u8], wire_len: usize, out: &mut Sink<'_>) -> StopReason {
    if parse_plain_ipv4(frame, wire_len, out) {
        return StopReason::Complete;
    }
    parse_general(frame, wire_len, out)
}

/// Every frame, through the header views. Kept out of line: it is the uncommon path, and
/// inlined it would bury the fast one.
#[inline(never)]
fn parse_general(frame: &[u8], wire_len: usize, out: &mut Sink<'_>) -> StopReason {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return StopReason::TruncatedL2;
    };
    let mut ethertype = eth.ethertype();
    let mut offset = EthernetFrame::<&[u8]>::HEADER_LEN;
    let mut outermost = true;
    while ethertype.is_vlan_tpid() {
        let Ok(tag) = VlanTag::new_checked(&frame[offset..]) else {
            return StopReason::TruncatedL2;
        };
        if outermost {
            out.key.vlan = tag.vlan_id();
            outermost = false;
        }
        ethertype = tag.ethertype();
        offset += VlanTag::<&[u8]>::HEADER_LEN;
    }
    let l3 = &frame[offset..];
    let l3_on_wire = wire_len - offset;
    match ethertype {
        EtherType::IPV4 => parse_ipv4(l3, l3_on_wire, out),
        EtherType::IPV6 => parse_ipv6(l3, l3_on_wire, out),
        _ => StopReason::NonIp,
    }
}

/// Untagged IPv4 without options, not a later fragment, carrying a whole TCP or UDP
/// header: most of any link's packets. Parsed straight from fixed offsets after one length
/// check, to exactly what the general path gives such a frame. Anything else (and any
/// frame this path would have to reject) returns false untouched for the general path,
/// which also names the reason.
#[inline(always)]
fn parse_plain_ipv4(frame: &[u8], wire_len: usize, out: &mut Sink<'_>) -> bool {
    const ETH: usize = 14;
    const IP: usize = 20;
    // Ethernet, an IPv4 header of 20 bytes, and the 8 bytes a UDP header needs.
    if frame.len() < ETH + IP + 8 || frame[12..14] != [0x08, 0x00] || frame[ETH] != 0x45 {
        return false;
    }
    let total_len = usize::from(be16(frame, ETH + 2));
    let later_fragment = be16(frame, ETH + 6) & 0x1fff != 0;
    if total_len < IP || total_len > wire_len - ETH || later_fragment {
        return false;
    }
    let declared = total_len - IP;
    let captured = total_len.min(frame.len() - ETH) - IP;
    let l4 = ETH + IP;
    let tcp_flags = match frame[ETH + 9] {
        6 => {
            // `captured` bounds the frame: checked before the header's bytes are read.
            if declared < 20 || captured < 20 {
                return false;
            }
            let data_offset = usize::from(frame[l4 + 12] >> 4) * 4;
            if data_offset < 20 || data_offset > declared {
                return false;
            }
            frame[l4 + 13]
        }
        17 if declared >= 8 && captured >= 8 => 0,
        _ => return false,
    };
    let key = &mut *out.key;
    key.ip_version = 4;
    key.src_addr[..4].copy_from_slice(&frame[ETH + 12..ETH + 16]);
    key.dst_addr[..4].copy_from_slice(&frame[ETH + 16..ETH + 20]);
    key.protocol = frame[ETH + 9];
    key.tos = frame[ETH + 1];
    key.src_port = be16(frame, l4);
    key.dst_port = be16(frame, l4 + 2);
    out.ttl = frame[ETH + 8];
    out.octets = total_len as u32;
    out.tcp_flags = tcp_flags;
    true
}

#[inline]
fn parse_ipv4(l3: &[u8], l3_on_wire: usize, out: &mut Sink<'_>) -> StopReason {
    let ip = Ipv4Packet::new_unchecked(l3);
    match ip.check_len() {
        Ok(()) => {}
        Err(HeaderError::Truncated) => return StopReason::TruncatedL3,
        Err(HeaderError::Malformed) => return StopReason::BadIpHeader,
    }
    if ip.version() != 4 {
        return StopReason::BadIpHeader;
    }
    let total_len = usize::from(ip.total_len());
    if total_len > l3_on_wire {
        return StopReason::BadIpHeader;
    }
    let protocol = ip.protocol();
    let key = &mut *out.key;
    key.ip_version = 4;
    key.src_addr[..4].copy_from_slice(&ip.src_addr());
    key.dst_addr[..4].copy_from_slice(&ip.dst_addr());
    key.protocol = protocol.0;
    key.tos = ip.tos();
    out.ttl = ip.ttl();
    out.octets = total_len as u32;
    if ip.frag_offset() != 0 {
        return StopReason::Fragment;
    }
    let header_len = ip.header_len();
    // check_len guarantees header_len <= total_len and header_len <= l3.len().
    let l4 = &l3[header_len..total_len.min(l3.len())];
    parse_l4(protocol, l4, total_len - header_len, out)
}

#[inline]
fn parse_ipv6(l3: &[u8], l3_on_wire: usize, out: &mut Sink<'_>) -> StopReason {
    let ip = Ipv6Packet::new_unchecked(l3);
    if ip.check_len().is_err() {
        return StopReason::TruncatedL3;
    }
    if ip.version() != 6 {
        return StopReason::BadIpHeader;
    }
    let header_len = Ipv6Packet::<&[u8]>::HEADER_LEN;
    let payload_len = usize::from(ip.payload_len());
    if header_len + payload_len > l3_on_wire {
        return StopReason::BadIpHeader;
    }
    let key = &mut *out.key;
    key.ip_version = 6;
    key.src_addr = ip.src_addr();
    key.dst_addr = ip.dst_addr();
    key.tos = ip.traffic_class();
    out.ttl = ip.hop_limit();
    out.octets = (header_len + payload_len) as u32;

    let payload = &l3[header_len..(header_len + payload_len).min(l3.len())];
    let mut next = ip.next_header();
    let mut offset = 0usize;
    while next.is_ipv6_extension() {
        if next == IpProtocol::HOPOPT && offset != 0 {
            return StopReason::BadIpv6ExtensionChain;
        }
        // Every extension header is at least 8 bytes; its length field sits in the first two.
        if offset + Ipv6ExtHeader::<&[u8]>::MIN_LEN > payload_len {
            return StopReason::BadIpv6ExtensionChain;
        }
        let ext = Ipv6ExtHeader::new_unchecked(&payload[offset..]);
        if ext.check_len().is_err() {
            return StopReason::TruncatedL3;
        }
        let ext_len = ext.header_len(next);
        if offset + ext_len > payload_len {
            return StopReason::BadIpv6ExtensionChain;
        }
        if offset + ext_len > payload.len() {
            return StopReason::TruncatedL3;
        }
        if next == IpProtocol::IPV6_FRAG {
            let fragment = Ipv6FragmentHeader::new_unchecked(&payload[offset..]);
            if fragment.frag_offset() != 0 {
                out.key.protocol = fragment.next_header().0;
                return StopReason::Fragment;
            }
        }
        next = ext.next_header();
        offset += ext_len;
    }
    out.key.protocol = next.0;
    parse_l4(next, &payload[offset..], payload_len - offset, out)
}

/// Parses the L4 header of a packet whose IP layer declared `declared_len` payload bytes
/// (of which `l4` holds the captured part).
#[inline]
fn parse_l4(
    protocol: IpProtocol,
    l4: &[u8],
    declared_len: usize,
    out: &mut Sink<'_>,
) -> StopReason {
    let key = &mut *out.key;
    match protocol {
        IpProtocol::TCP => {
            let tcp = TcpHeader::new_unchecked(l4);
            if declared_len < TcpHeader::<&[u8]>::HEADER_LEN {
                return StopReason::BadL4Header;
            }
            match tcp.check_len() {
                Ok(()) => {}
                Err(HeaderError::Truncated) => return StopReason::TruncatedL4,
                Err(HeaderError::Malformed) => return StopReason::BadL4Header,
            }
            if tcp.header_len() > declared_len {
                return StopReason::BadL4Header;
            }
            key.src_port = tcp.src_port();
            key.dst_port = tcp.dst_port();
            out.tcp_flags = tcp.flags();
            StopReason::Complete
        }
        IpProtocol::UDP | IpProtocol::UDPLITE => {
            if declared_len < UdpHeader::<&[u8]>::HEADER_LEN {
                return StopReason::BadL4Header;
            }
            let Ok(udp) = UdpHeader::new_checked(l4) else {
                return StopReason::TruncatedL4;
            };
            key.src_port = udp.src_port();
            key.dst_port = udp.dst_port();
            StopReason::Complete
        }
        IpProtocol::SCTP => {
            if declared_len < SctpHeader::<&[u8]>::HEADER_LEN {
                return StopReason::BadL4Header;
            }
            let Ok(sctp) = SctpHeader::new_checked(l4) else {
                return StopReason::TruncatedL4;
            };
            key.src_port = sctp.src_port();
            key.dst_port = sctp.dst_port();
            StopReason::Complete
        }
        IpProtocol::ICMP | IpProtocol::ICMPV6 => {
            if declared_len < IcmpHeader::<&[u8]>::HEADER_LEN {
                return StopReason::BadL4Header;
            }
            let Ok(icmp) = IcmpHeader::new_checked(l4) else {
                return StopReason::TruncatedL4;
            };
            key.dst_port = icmp.type_code();
            StopReason::Complete
        }
        _ => StopReason::UnknownL4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_discriminant_order_and_names_are_unique() {
        for (index, reason) in StopReason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, index);
        }
        let mut names: Vec<&str> = StopReason::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), StopReason::COUNT);
    }

    #[test]
    fn accounted_iff_the_ip_header_was_valid() {
        let accounted: Vec<StopReason> = StopReason::ALL
            .into_iter()
            .filter(|r| r.accounted())
            .collect();
        assert_eq!(
            accounted,
            [
                StopReason::Complete,
                StopReason::UnknownL4,
                StopReason::Fragment,
                StopReason::TruncatedL4,
                StopReason::BadL4Header
            ]
        );
    }

    /// Both paths on one frame: (stop, key, octets, flags, ttl).
    fn both_paths(frame: &[u8], wire_len: usize) -> [(StopReason, FlowKey, u32, u8, u8); 2] {
        let run = |fast: bool| {
            let mut key = FlowKey::default();
            let mut out = Sink {
                key: &mut key,
                octets: 0,
                tcp_flags: 0,
                ttl: 0,
            };
            let stop = if fast {
                parse_into(frame, wire_len, &mut out)
            } else {
                parse_general(frame, wire_len, &mut out)
            };
            let (octets, flags, ttl) = (out.octets, out.tcp_flags, out.ttl);
            (stop, key, octets, flags, ttl)
        };
        [run(true), run(false)]
    }

    #[test]
    fn the_plain_ipv4_path_agrees_with_the_general_one_on_every_variation() {
        // A TCP and a UDP frame with payload, then every cut, and every value of the bytes
        // the fast path reads or relies on: ethertype, version/IHL, total length, fragment
        // field, protocol, TCP data offset; each also cut short and with short wire lengths.
        let mut tcp = vec![0u8; 80];
        tcp[12..14].copy_from_slice(&[0x08, 0x00]);
        tcp[14] = 0x45;
        tcp[15] = 0x28;
        tcp[16..18].copy_from_slice(&66u16.to_be_bytes());
        tcp[22] = 61;
        tcp[23] = 6;
        tcp[26..30].copy_from_slice(&[10, 1, 2, 3]);
        tcp[30..34].copy_from_slice(&[192, 168, 7, 9]);
        tcp[34..38].copy_from_slice(&[0x9c, 0x40, 0x01, 0xbb]);
        tcp[46] = 0x50;
        tcp[47] = 0x12;
        let mut udp = tcp.clone();
        udp[23] = 17;
        let mut checked = 0;
        let mut fast = 0;
        for base in [tcp, udp] {
            let mut variants = vec![base.clone()];
            let bytes: [(usize, &[u8]); 8] = [
                (12, &[0x08, 0x86, 0x81, 0x88]),
                (13, &[0x00, 0xdd, 0x01]),
                (14, &[0x45, 0x46, 0x44, 0x40, 0x65, 0x4f, 0x00]),
                (17, &[0, 19, 20, 27, 28, 39, 40, 41, 59, 60, 66, 200, 255]),
                (16, &[0, 1, 0xff]),
                (20, &[0x00, 0x20, 0x40, 0x1f, 0x01]),
                (23, &[6, 17, 1, 47, 132, 136, 58]),
                (46, &[0x00, 0x40, 0x50, 0x60, 0x80, 0xf0]),
            ];
            for (at, values) in bytes {
                for &v in values {
                    let mut f = base.clone();
                    f[at] = v;
                    variants.push(f);
                }
            }
            variants.push({
                let mut f = base.clone();
                f[21] = 0x08; // fragment offset 8 in the low byte
                f
            });
            for f in variants {
                for len in 0..=f.len() {
                    for wire in [len, len + 10, 40, 54, 60, 80, usize::MAX] {
                        let wire = wire.max(len);
                        let [a, b] = both_paths(&f[..len], wire);
                        assert_eq!(a, b, "frame {:02x?} wire {wire}", &f[..len]);
                        checked += 1;
                        fast += usize::from(parse_plain_ipv4(
                            &f[..len],
                            wire,
                            &mut Sink {
                                key: &mut FlowKey::default(),
                                octets: 0,
                                tcp_flags: 0,
                                ttl: 0,
                            },
                        ));
                    }
                }
            }
        }
        // The variations exercise both outcomes of the fast path, often.
        assert!(
            fast > 1000 && checked - fast > 10_000,
            "{fast} of {checked}"
        );
    }

    #[test]
    fn empty_and_tiny_frames_are_truncated_l2() {
        for len in 0..14 {
            assert_eq!(parse_frame(&[0u8; 14][..len]).stop, StopReason::TruncatedL2);
        }
    }
}
