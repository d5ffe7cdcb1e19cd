//! UDP header view (RFC 768); UDP-Lite (RFC 3828) shares its layout.

use super::{HeaderError, be16};

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
}

header_view!(
    /// A view of a UDP header.
    UdpHeader, fixed 8
);

impl<T: AsRef<[u8]>> UdpHeader<T> {
    #[inline]
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT)
    }

    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// UDP length (header included); UDP-Lite's checksum coverage.
    pub fn length(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_and_checks_length() {
        // 53 -> 33000, length 12, checksum 0xbeef.
        let bytes = [0x00, 0x35, 0x80, 0xe8, 0x00, 0x0c, 0xbe, 0xef];
        let udp = UdpHeader::new_checked(&bytes[..]).unwrap();
        assert_eq!(udp.src_port(), 53);
        assert_eq!(udp.dst_port(), 33000);
        assert_eq!(udp.length(), 12);
        assert_eq!(udp.checksum(), 0xbeef);
        for len in 0..8 {
            assert_eq!(
                UdpHeader::new_checked(&bytes[..len]).unwrap_err(),
                HeaderError::Truncated
            );
        }
    }
}
