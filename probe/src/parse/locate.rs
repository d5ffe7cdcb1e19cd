//! Finding a frame's transport header again, for extensions that read beyond the flow key
//! (TCP sequence numbers and options, a DNS message).
//!
//! The hot parser keeps no offsets: the cache needs none, and storing them costs every
//! packet. An extension that wants the transport bytes of a packet it subscribed to calls
//! [`locate_transport`], which walks the same headers with the same views; only packets
//! some extension asked for pay for the walk.

use super::ethernet::{EtherType, EthernetFrame};
use super::ip::IpProtocol;
use super::ipv4::Ipv4Packet;
use super::ipv6::{Ipv6ExtHeader, Ipv6FragmentHeader, Ipv6Packet};
use super::vlan::VlanTag;

/// A packet's transport layer: the header and the payload after it, as captured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transport<'a> {
    pub protocol: IpProtocol,
    /// From the first byte of the transport header to the end of the IP payload, cut at
    /// the end of the capture.
    pub bytes: &'a [u8],
    /// The transport length the IP header declares (header and payload), which may exceed
    /// `bytes.len()` when the capture was cut.
    pub declared_len: usize,
}

/// Walks Ethernet, VLAN tags, IPv4 or IPv6 and its extension headers to the transport
/// header. `None` for non-IP frames, later fragments and anything malformed or cut before
/// the transport header starts. Never panics.
pub fn locate_transport(frame: &[u8]) -> Option<Transport<'_>> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let mut ethertype = eth.ethertype();
    let mut offset = EthernetFrame::<&[u8]>::HEADER_LEN;
    while ethertype.is_vlan_tpid() {
        let tag = VlanTag::new_checked(frame.get(offset..)?).ok()?;
        ethertype = tag.ethertype();
        offset += VlanTag::<&[u8]>::HEADER_LEN;
    }
    let l3 = frame.get(offset..)?;
    match ethertype {
        EtherType::IPV4 => {
            let ip = Ipv4Packet::new_checked(l3).ok()?;
            let header_len = ip.header_len();
            let total = usize::from(ip.total_len());
            if ip.version() != 4 || header_len < 20 || total < header_len || ip.frag_offset() != 0 {
                return None;
            }
            let end = total.min(l3.len());
            Some(Transport {
                protocol: ip.protocol(),
                bytes: l3.get(header_len..end)?,
                declared_len: total - header_len,
            })
        }
        EtherType::IPV6 => {
            let ip = Ipv6Packet::new_checked(l3).ok()?;
            let header_len = Ipv6Packet::<&[u8]>::HEADER_LEN;
            let payload_len = usize::from(ip.payload_len());
            let payload = l3.get(header_len..(header_len + payload_len).min(l3.len()))?;
            let mut next = ip.next_header();
            let mut at = 0usize;
            while next.is_ipv6_extension() {
                let ext = Ipv6ExtHeader::new_checked(payload.get(at..)?).ok()?;
                if next == IpProtocol::IPV6_FRAG
                    && Ipv6FragmentHeader::new_checked(payload.get(at..)?)
                        .ok()?
                        .frag_offset()
                        != 0
                {
                    return None;
                }
                let len = ext.header_len(next);
                if at + len > payload_len {
                    return None;
                }
                next = ext.next_header();
                at += len;
            }
            Some(Transport {
                protocol: next,
                bytes: payload.get(at..)?,
                declared_len: payload_len - at,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{FrameOptions, eth_ipv4_udp};
    use std::net::SocketAddrV4;

    #[test]
    fn finds_the_udp_header_of_a_tagged_frame() {
        let mut frame = Vec::new();
        let options = FrameOptions {
            vlan: Some(7),
            ..FrameOptions::default()
        };
        eth_ipv4_udp(
            &mut frame,
            SocketAddrV4::new([10, 0, 0, 1].into(), 5353),
            SocketAddrV4::new([10, 0, 0, 2].into(), 53),
            &options,
        );
        let t = locate_transport(&frame).expect("a UDP header");
        assert_eq!(t.protocol, IpProtocol::UDP);
        assert_eq!(&t.bytes[..4], &[0x14, 0xe9, 0x00, 0x35]);
        assert_eq!(t.declared_len, t.bytes.len());
    }

    #[test]
    fn never_panics_on_cut_frames() {
        let mut frame = Vec::new();
        eth_ipv4_udp(
            &mut frame,
            SocketAddrV4::new([10, 0, 0, 1].into(), 1),
            SocketAddrV4::new([10, 0, 0, 2].into(), 2),
            &FrameOptions::default(),
        );
        for len in 0..frame.len() {
            let _ = locate_transport(&frame[..len]);
        }
    }
}
