//! SCTP common header view (RFC 9260 section 3.1).

use super::{HeaderError, be16, be32};

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const VERIFICATION_TAG: usize = 4;
    pub const CHECKSUM: usize = 8;
}

header_view!(
    /// A view of the SCTP common header.
    SctpHeader, fixed 12
);

impl<T: AsRef<[u8]>> SctpHeader<T> {
    #[inline]
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT)
    }

    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT)
    }

    pub fn verification_tag(&self) -> u32 {
        be32(self.buffer.as_ref(), field::VERIFICATION_TAG)
    }

    /// CRC32c of the packet.
    pub fn checksum(&self) -> u32 {
        be32(self.buffer.as_ref(), field::CHECKSUM)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_and_checks_length() {
        // 2905 -> 2944 (M3UA), tag 0x01020304, checksum 0xa1b2c3d4.
        let bytes = [0x0b, 0x59, 0x0b, 0x80, 1, 2, 3, 4, 0xa1, 0xb2, 0xc3, 0xd4];
        let sctp = SctpHeader::new_checked(&bytes[..]).unwrap();
        assert_eq!(sctp.src_port(), 2905);
        assert_eq!(sctp.dst_port(), 2944);
        assert_eq!(sctp.verification_tag(), 0x0102_0304);
        assert_eq!(sctp.checksum(), 0xa1b2_c3d4);
        for len in 0..12 {
            assert_eq!(
                SctpHeader::new_checked(&bytes[..len]).unwrap_err(),
                HeaderError::Truncated
            );
        }
    }
}
