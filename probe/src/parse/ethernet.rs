//! Ethernet II header view and EtherType values.

use std::fmt;

use super::{HeaderError, be16};

/// An EtherType. Unknown values are ordinary values, not errors.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EtherType(pub u16);

impl EtherType {
    pub const IPV4: EtherType = EtherType(0x0800);
    pub const ARP: EtherType = EtherType(0x0806);
    /// 802.1Q customer VLAN tag.
    pub const VLAN: EtherType = EtherType(0x8100);
    pub const IPV6: EtherType = EtherType(0x86dd);
    pub const MPLS: EtherType = EtherType(0x8847);
    /// 802.1ad service VLAN tag (QinQ outer tag).
    pub const QINQ: EtherType = EtherType(0x88a8);
    pub const LLDP: EtherType = EtherType(0x88cc);
    /// Pre-standard QinQ outer tag used by some switches.
    pub const QINQ_9100: EtherType = EtherType(0x9100);

    /// True for the tag protocol identifiers the parser steps over (802.1Q, 802.1ad, 0x9100).
    #[inline]
    pub fn is_vlan_tpid(self) -> bool {
        matches!(
            self,
            EtherType::VLAN | EtherType::QINQ | EtherType::QINQ_9100
        )
    }
}

impl fmt::Debug for EtherType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EtherType({:#06x})", self.0)
    }
}

mod field {
    use std::ops::Range;
    pub const DST_ADDR: Range<usize> = 0..6;
    pub const SRC_ADDR: Range<usize> = 6..12;
    pub const ETHERTYPE: usize = 12;
}

header_view!(
    /// A view of an Ethernet II header and what follows it.
    EthernetFrame, fixed 14
);

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    pub fn dst_addr(&self) -> [u8; 6] {
        let mut out = [0u8; 6];
        out.copy_from_slice(&self.buffer.as_ref()[field::DST_ADDR]);
        out
    }

    pub fn src_addr(&self) -> [u8; 6] {
        let mut out = [0u8; 6];
        out.copy_from_slice(&self.buffer.as_ref()[field::SRC_ADDR]);
        out
    }

    /// The EtherType (or a VLAN tag protocol identifier).
    #[inline]
    pub fn ethertype(&self) -> EtherType {
        EtherType(be16(self.buffer.as_ref(), field::ETHERTYPE))
    }

    /// Everything after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[Self::HEADER_LEN..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // dst 00:11:22:33:44:55, src 66:77:88:99:aa:bb, IPv4, one payload byte.
    const FRAME: [u8; 15] = [
        0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0x08, 0x00, 0xff,
    ];

    #[test]
    fn reads_fields() {
        let frame = EthernetFrame::new_checked(&FRAME[..]).unwrap();
        assert_eq!(frame.dst_addr(), [0x00, 0x11, 0x22, 0x33, 0x44, 0x55]);
        assert_eq!(frame.src_addr(), [0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb]);
        assert_eq!(frame.ethertype(), EtherType::IPV4);
        assert_eq!(frame.payload(), &[0xff]);
    }

    #[test]
    fn short_buffers_are_truncated() {
        for len in 0..14 {
            assert_eq!(
                EthernetFrame::new_checked(&FRAME[..len]).unwrap_err(),
                HeaderError::Truncated
            );
        }
        assert!(
            EthernetFrame::new_checked(&FRAME[..14])
                .unwrap()
                .payload()
                .is_empty()
        );
    }

    #[test]
    fn vlan_tpids() {
        assert!(EtherType(0x8100).is_vlan_tpid());
        assert!(EtherType(0x88a8).is_vlan_tpid());
        assert!(EtherType(0x9100).is_vlan_tpid());
        assert!(!EtherType::IPV4.is_vlan_tpid());
        assert!(!EtherType(0x9200).is_vlan_tpid());
        assert_eq!(format!("{:?}", EtherType::ARP), "EtherType(0x0806)");
    }
}
