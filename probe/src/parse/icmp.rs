//! ICMP (RFC 792) and ICMPv6 (RFC 4443) header view: both start with type, code and
//! checksum.

use super::{HeaderError, be16};

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
}

header_view!(
    /// A view of the common ICMP / ICMPv6 header.
    // Type, code and checksum; the rest of the message depends on the type.
    IcmpHeader, fixed 4
);

impl<T: AsRef<[u8]>> IcmpHeader<T> {
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// `type << 8 | code`, the value NetFlow puts in the destination port.
    #[inline]
    pub fn type_code(&self) -> u16 {
        be16(self.buffer.as_ref(), field::TYPE)
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
        // Destination unreachable (3), port unreachable (3).
        let bytes = [3u8, 3, 0x12, 0x34, 0, 0, 0, 0];
        let icmp = IcmpHeader::new_checked(&bytes[..]).unwrap();
        assert_eq!(icmp.msg_type(), 3);
        assert_eq!(icmp.code(), 3);
        assert_eq!(icmp.type_code(), 0x0303);
        assert_eq!(icmp.checksum(), 0x1234);
        for len in 0..4 {
            assert_eq!(
                IcmpHeader::new_checked(&bytes[..len]).unwrap_err(),
                HeaderError::Truncated
            );
        }
    }
}
