//! IPv4 header view (RFC 791).

use super::{HeaderError, IpProtocol, be16};

mod field {
    use std::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const TOTAL_LEN: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG_OFFSET: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC_ADDR: Range<usize> = 12..16;
    pub const DST_ADDR: Range<usize> = 16..20;
}

header_view!(
    /// A view of an IPv4 header (options included) and what follows it.
    Ipv4Packet
);

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Length of the header without options.
    pub const MIN_HEADER_LEN: usize = 20;

    /// Ok when the buffer holds the whole header, options included, and the header's
    /// lengths are consistent (IHL >= 5, total length >= header length). The buffer may
    /// end before the total length: captures are often cut short.
    pub fn check_len(&self) -> Result<(), HeaderError> {
        let len = self.buffer.as_ref().len();
        if len < Self::MIN_HEADER_LEN {
            return Err(HeaderError::Truncated);
        }
        let header_len = self.header_len();
        if header_len < Self::MIN_HEADER_LEN {
            return Err(HeaderError::Malformed);
        }
        if len < header_len {
            return Err(HeaderError::Truncated);
        }
        if usize::from(self.total_len()) < header_len {
            return Err(HeaderError::Malformed);
        }
        Ok(())
    }

    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL * 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// Type of service byte (DSCP and ECN).
    #[inline]
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[field::TOS]
    }

    #[inline]
    pub fn total_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::TOTAL_LEN)
    }

    pub fn ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::IDENT)
    }

    pub fn dont_frag(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLAGS_FRAG_OFFSET) & 0x4000 != 0
    }

    pub fn more_frags(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLAGS_FRAG_OFFSET) & 0x2000 != 0
    }

    /// Fragment offset in 8-byte units.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        be16(self.buffer.as_ref(), field::FLAGS_FRAG_OFFSET) & 0x1fff
    }

    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    #[inline]
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[field::PROTOCOL])
    }

    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    #[inline]
    pub fn src_addr(&self) -> [u8; 4] {
        let mut out = [0u8; 4];
        out.copy_from_slice(&self.buffer.as_ref()[field::SRC_ADDR]);
        out
    }

    #[inline]
    pub fn dst_addr(&self) -> [u8; 4] {
        let mut out = [0u8; 4];
        out.copy_from_slice(&self.buffer.as_ref()[field::DST_ADDR]);
        out
    }

    /// The captured part of the payload: after the header, up to the total length.
    pub fn payload(&self) -> &[u8] {
        let bytes = self.buffer.as_ref();
        let end = usize::from(self.total_len()).min(bytes.len());
        &bytes[self.header_len()..end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 192.168.1.1 -> 10.0.0.2, TOS 0xb8, total 24, ident 0x1234, DF, TTL 64, UDP,
    // checksum 0xabcd, then 4 payload bytes and 2 bytes of Ethernet padding.
    const PACKET: [u8; 26] = [
        0x45, 0xb8, 0x00, 0x18, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0xab, 0xcd, 192, 168, 1, 1, 10,
        0, 0, 2, 1, 2, 3, 4, 0, 0,
    ];

    #[test]
    fn reads_fields() {
        let ip = Ipv4Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(ip.version(), 4);
        assert_eq!(ip.header_len(), 20);
        assert_eq!(ip.tos(), 0xb8);
        assert_eq!(ip.total_len(), 24);
        assert_eq!(ip.ident(), 0x1234);
        assert!(ip.dont_frag());
        assert!(!ip.more_frags());
        assert_eq!(ip.frag_offset(), 0);
        assert_eq!(ip.ttl(), 64);
        assert_eq!(ip.protocol(), IpProtocol::UDP);
        assert_eq!(ip.checksum(), 0xabcd);
        assert_eq!(ip.src_addr(), [192, 168, 1, 1]);
        assert_eq!(ip.dst_addr(), [10, 0, 0, 2]);
        assert_eq!(ip.payload(), &[1, 2, 3, 4]);
    }

    #[test]
    fn fragment_fields() {
        let mut bytes = PACKET;
        // MF set, offset 185 (1480 bytes).
        bytes[6] = 0x20;
        bytes[7] = 185;
        let ip = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert!(ip.more_frags());
        assert!(!ip.dont_frag());
        assert_eq!(ip.frag_offset(), 185);
    }

    #[test]
    fn length_checks() {
        for len in 0..20 {
            assert_eq!(
                Ipv4Packet::new_checked(&PACKET[..len]).unwrap_err(),
                HeaderError::Truncated
            );
        }
        // A payload cut by the capture is fine.
        assert_eq!(
            Ipv4Packet::new_checked(&PACKET[..21]).unwrap().payload(),
            &[1]
        );

        let mut bad_ihl = PACKET;
        bad_ihl[0] = 0x44;
        assert_eq!(
            Ipv4Packet::new_checked(&bad_ihl[..]).unwrap_err(),
            HeaderError::Malformed
        );

        // IHL 6 needs 24 bytes of header.
        let mut options = PACKET;
        options[0] = 0x46;
        assert_eq!(
            Ipv4Packet::new_checked(&options[..23]).unwrap_err(),
            HeaderError::Truncated
        );
        let ip = Ipv4Packet::new_checked(&options[..]).unwrap();
        assert_eq!(ip.header_len(), 24);
        assert!(ip.payload().is_empty());

        let mut short_total = PACKET;
        short_total[3] = 19;
        assert_eq!(
            Ipv4Packet::new_checked(&short_total[..]).unwrap_err(),
            HeaderError::Malformed
        );
    }
}
