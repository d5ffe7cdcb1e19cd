//! The packet parser on arbitrary bytes: it must never panic, its result must keep the
//! rules the flow cache relies on, and wherever etherparse's strict decoder (an
//! independent implementation) reads a valid IP packet, the parser must account the same
//! packet: same addresses, octets and, where both reach it, the same ports.
#![no_main]

use etherparse::{LinkExtSlice, NetSlice, SlicedPacket, TransportSlice};
use libfuzzer_sys::fuzz_target;
use probe::parse::{ParsedPacket, StopReason, parse_frame, parse_frame_with_wire_len};

const ETHERNET_HEADER: usize = 14;
/// The VLAN tag protocol ids the parser walks (802.1Q, 802.1ad, pre-standard QinQ).
const VLAN_TPIDS: [u16; 3] = [0x8100, 0x88a8, 0x9100];
/// IPv6 extension headers the parser walks and etherparse 0.21 does not (RFC 7045 list).
const MORE_IPV6_EXTENSIONS: [u8; 3] = [135, 139, 140];

fuzz_target!(|frame: &[u8]| {
    let lax = parse_frame(frame);
    check_rules(&lax);
    // Without a wire length the parser must behave as with an unbounded one.
    assert_eq!(lax, parse_frame_with_wire_len(frame, u32::MAX));

    let whole = parse_frame_with_wire_len(frame, frame.len() as u32);
    check_rules(&whole);
    if whole.stop.accounted() {
        // The frame was captured whole: the IP length cannot exceed what it carried.
        assert!(whole.octets as usize <= frame.len() - ETHERNET_HEADER);
        // Knowing the wire length only ever rejects; it never changes an accepted packet.
        assert_eq!(whole, lax);
    }
    compare_with_etherparse(frame, &whole);
});

fn check_rules(parsed: &ParsedPacket) {
    if parsed.stop.accounted() {
        let min_octets = match parsed.key.ip_version {
            4 => 20,
            6 => 40,
            other => panic!("accounted with IP version {other}"),
        };
        assert!(parsed.octets >= min_octets, "{parsed:?}");
    }
    if parsed.stop != StopReason::Complete {
        // No field of a header that was not fully parsed may leak into the key.
        assert_eq!(
            (parsed.key.src_port, parsed.key.dst_port),
            (0, 0),
            "{parsed:?}"
        );
        assert_eq!(parsed.tcp_flags, 0, "{parsed:?}");
    }
    assert_eq!(parsed.key.input_port, 0);
}

/// Where etherparse's strict decoder finds a valid IPv4 or IPv6 packet behind Ethernet
/// and VLAN tags the parser knows, the parser must account it identically.
fn compare_with_etherparse(frame: &[u8], ours: &ParsedPacket) {
    let Ok(packet) = SlicedPacket::from_ethernet(frame) else {
        return;
    };
    let vlan_ids: Option<Vec<u16>> = packet
        .link_exts
        .iter()
        .map(|ext| match ext {
            LinkExtSlice::Vlan(tag) => Some(tag.vlan_identifier().value()),
            LinkExtSlice::Macsec(_) => None,
        })
        .collect();
    let Some(vlan_ids) = vlan_ids else {
        return;
    };
    if !frame_tpids_known(frame, vlan_ids.len()) {
        return;
    }
    let (src, dst, octets, fragmented) = match packet.net.as_ref() {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header();
            let mut src = [0u8; 16];
            let mut dst = [0u8; 16];
            src[..4].copy_from_slice(&h.source());
            dst[..4].copy_from_slice(&h.destination());
            (src, dst, u32::from(h.total_len()), ip.payload().fragmented)
        }
        // etherparse reads a zero payload length as "the rest of the slice" (jumbograms);
        // the parser refuses jumbograms by design (probe/README.md).
        Some(NetSlice::Ipv6(ip)) if ip.header().payload_length() == 0 => return,
        // etherparse stops at mobility, HIP and shim6 headers, which the parser walks.
        Some(NetSlice::Ipv6(ip)) if MORE_IPV6_EXTENSIONS.contains(&ip.payload().ip_number.0) => {
            return;
        }
        Some(NetSlice::Ipv6(ip)) => {
            let h = ip.header();
            (
                h.source(),
                h.destination(),
                u32::from(h.payload_length()) + 40,
                ip.payload().fragmented,
            )
        }
        _ => return,
    };
    assert!(
        ours.stop.accounted(),
        "etherparse reads a valid IP packet, the parser stops at {:?}",
        ours.stop
    );
    assert_eq!(ours.key.src_addr, src);
    assert_eq!(ours.key.dst_addr, dst);
    assert_eq!(ours.octets, octets);
    assert_eq!(ours.key.vlan, vlan_ids.first().copied().unwrap_or(0));
    if ours.stop != StopReason::Complete || fragmented {
        return;
    }
    let ports = match &packet.transport {
        Some(TransportSlice::Tcp(t)) => (t.source_port(), t.destination_port()),
        Some(TransportSlice::Udp(u)) => (u.source_port(), u.destination_port()),
        Some(TransportSlice::Icmpv4(i)) => (0, u16::from_be_bytes([i.type_u8(), i.code_u8()])),
        Some(TransportSlice::Icmpv6(i)) => (0, u16::from_be_bytes([i.type_u8(), i.code_u8()])),
        _ => return,
    };
    assert_eq!((ours.key.src_port, ours.key.dst_port), ports);
}

/// True when the first `tags` EtherTypes of the frame are VLAN TPIDs the parser walks.
fn frame_tpids_known(frame: &[u8], tags: usize) -> bool {
    (0..tags).all(|i| {
        let at = 12 + 4 * i;
        frame
            .get(at..at + 2)
            .is_some_and(|b| VLAN_TPIDS.contains(&u16::from_be_bytes([b[0], b[1]])))
    })
}
