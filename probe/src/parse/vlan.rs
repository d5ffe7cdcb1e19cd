//! 802.1Q / 802.1ad VLAN tag view: the four bytes after a tag protocol identifier.

use super::{EtherType, HeaderError, be16};

mod field {
    pub const TCI: usize = 0;
    pub const ETHERTYPE: usize = 2;
}

header_view!(
    /// A view of one VLAN tag's control information and the EtherType that follows it. The
    /// buffer starts right after the tag protocol identifier (`0x8100`, `0x88a8`, `0x9100`).
    VlanTag, fixed 4
);

impl<T: AsRef<[u8]>> VlanTag<T> {
    /// Priority code point (802.1p), 0..=7.
    pub fn priority(&self) -> u8 {
        (be16(self.buffer.as_ref(), field::TCI) >> 13) as u8
    }

    /// Drop eligible indicator.
    pub fn drop_eligible(&self) -> bool {
        be16(self.buffer.as_ref(), field::TCI) & 0x1000 != 0
    }

    /// VLAN identifier, 0..=4095.
    #[inline]
    pub fn vlan_id(&self) -> u16 {
        be16(self.buffer.as_ref(), field::TCI) & 0x0fff
    }

    /// The EtherType (or the next tag's protocol identifier) after this tag.
    #[inline]
    pub fn ethertype(&self) -> EtherType {
        EtherType(be16(self.buffer.as_ref(), field::ETHERTYPE))
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[Self::HEADER_LEN..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tci_and_ethertype() {
        // PCP 5, DEI 1, VID 0x123, then IPv6.
        let bytes = [0xb1, 0x23, 0x86, 0xdd, 0x60];
        let tag = VlanTag::new_checked(&bytes[..]).unwrap();
        assert_eq!(tag.priority(), 5);
        assert!(tag.drop_eligible());
        assert_eq!(tag.vlan_id(), 0x123);
        assert_eq!(tag.ethertype(), EtherType::IPV6);
        assert_eq!(tag.payload(), &[0x60]);
    }

    #[test]
    fn short_buffers_are_truncated() {
        let bytes = [0x00, 0x0a, 0x08, 0x00];
        for len in 0..4 {
            assert_eq!(
                VlanTag::new_checked(&bytes[..len]).unwrap_err(),
                HeaderError::Truncated
            );
        }
        assert_eq!(VlanTag::new_checked(&bytes[..]).unwrap().vlan_id(), 10);
    }
}
