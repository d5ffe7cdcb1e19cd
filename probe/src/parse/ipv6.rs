//! IPv6 header (RFC 8200) and extension header views.

use super::{HeaderError, IpProtocol, be16, be32};

mod field {
    use std::ops::Range;
    pub const VER_TC_FLOW: usize = 0;
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Range<usize> = 8..24;
    pub const DST_ADDR: Range<usize> = 24..40;
}

header_view!(
    /// A view of the fixed IPv6 header and what follows it.
    Ipv6Packet
);

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    pub const HEADER_LEN: usize = 40;

    /// Ok when the buffer holds the fixed 40-byte header. The payload may be cut short.
    pub fn check_len(&self) -> Result<(), HeaderError> {
        if self.buffer.as_ref().len() < Self::HEADER_LEN {
            Err(HeaderError::Truncated)
        } else {
            Ok(())
        }
    }

    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TC_FLOW] >> 4
    }

    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (be16(self.buffer.as_ref(), field::VER_TC_FLOW) >> 4) as u8
    }

    pub fn flow_label(&self) -> u32 {
        be32(self.buffer.as_ref(), field::VER_TC_FLOW) & 0x000f_ffff
    }

    #[inline]
    pub fn payload_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::PAYLOAD_LEN)
    }

    #[inline]
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[field::NEXT_HEADER])
    }

    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    #[inline]
    pub fn src_addr(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out.copy_from_slice(&self.buffer.as_ref()[field::SRC_ADDR]);
        out
    }

    #[inline]
    pub fn dst_addr(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out.copy_from_slice(&self.buffer.as_ref()[field::DST_ADDR]);
        out
    }

    /// The captured part of the payload, up to the payload length.
    pub fn payload(&self) -> &[u8] {
        let bytes = self.buffer.as_ref();
        let end = (Self::HEADER_LEN + usize::from(self.payload_len())).min(bytes.len());
        &bytes[Self::HEADER_LEN..end]
    }
}

mod ext_field {
    pub const NEXT_HEADER: usize = 0;
    pub const LEN: usize = 1;
}

header_view!(
    /// A view of any IPv6 extension header's first bytes: the next header and the length.
    /// Every extension header starts this way and is at least 8 bytes long.
    Ipv6ExtHeader
);

impl<T: AsRef<[u8]>> Ipv6ExtHeader<T> {
    /// The shortest extension header.
    pub const MIN_LEN: usize = 8;

    /// Ok when the buffer holds the first 8 bytes; the full length depends on the header
    /// kind, see [`Self::header_len`].
    pub fn check_len(&self) -> Result<(), HeaderError> {
        if self.buffer.as_ref().len() < Self::MIN_LEN {
            Err(HeaderError::Truncated)
        } else {
            Ok(())
        }
    }

    #[inline]
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[ext_field::NEXT_HEADER])
    }

    /// The raw length field.
    pub fn len_field(&self) -> u8 {
        self.buffer.as_ref()[ext_field::LEN]
    }

    /// Length in bytes of this header, which is of kind `kind` (the previous header's next
    /// header value): AH counts 4-byte units minus 2 (RFC 4302), the fragment header is
    /// always 8 bytes, the others count 8-byte units beyond the first 8.
    #[inline]
    pub fn header_len(&self, kind: IpProtocol) -> usize {
        let units = usize::from(self.len_field());
        match kind {
            IpProtocol::AH => (units + 2) * 4,
            IpProtocol::IPV6_FRAG => 8,
            _ => (units + 1) * 8,
        }
    }
}

mod frag_field {
    pub const NEXT_HEADER: usize = 0;
    pub const OFFSET_FLAGS: usize = 2;
    pub const IDENT: usize = 4;
}

header_view!(
    /// A view of the IPv6 fragment header (RFC 8200 section 4.5).
    Ipv6FragmentHeader, fixed 8
);

impl<T: AsRef<[u8]>> Ipv6FragmentHeader<T> {
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[frag_field::NEXT_HEADER])
    }

    /// Fragment offset in 8-byte units.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        be16(self.buffer.as_ref(), frag_field::OFFSET_FLAGS) >> 3
    }

    pub fn more_frags(&self) -> bool {
        be16(self.buffer.as_ref(), frag_field::OFFSET_FLAGS) & 1 != 0
    }

    pub fn ident(&self) -> u32 {
        be32(self.buffer.as_ref(), frag_field::IDENT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Version 6, traffic class 0xb8, flow label 0x12345, payload 8, UDP, hop limit 255,
    // 2001:db8::1 -> 2001:db8::2, then 8 payload bytes.
    const PACKET: [u8; 48] = [
        0x6b, 0x81, 0x23, 0x45, 0x00, 0x08, 17, 255, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 1, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 1, 2, 3, 4, 5,
        6, 7, 8,
    ];

    #[test]
    fn reads_fields() {
        let ip = Ipv6Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(ip.version(), 6);
        assert_eq!(ip.traffic_class(), 0xb8);
        assert_eq!(ip.flow_label(), 0x12345);
        assert_eq!(ip.payload_len(), 8);
        assert_eq!(ip.next_header(), IpProtocol::UDP);
        assert_eq!(ip.hop_limit(), 255);
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        src[15] = 1;
        assert_eq!(ip.src_addr(), src);
        src[15] = 2;
        assert_eq!(ip.dst_addr(), src);
        assert_eq!(ip.payload(), &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            Ipv6Packet::new_checked(&PACKET[..42]).unwrap().payload(),
            &[1, 2]
        );
    }

    #[test]
    fn short_buffers_are_truncated() {
        for len in 0..40 {
            assert_eq!(
                Ipv6Packet::new_checked(&PACKET[..len]).unwrap_err(),
                HeaderError::Truncated
            );
        }
    }

    #[test]
    fn extension_header_lengths() {
        // Destination options, next header TCP, length field 1 -> 16 bytes.
        let opts = [6u8, 1, 0, 0, 0, 0, 0, 0];
        let ext = Ipv6ExtHeader::new_checked(&opts[..]).unwrap();
        assert_eq!(ext.next_header(), IpProtocol::TCP);
        assert_eq!(ext.header_len(IpProtocol::IPV6_OPTS), 16);
        assert_eq!(ext.header_len(IpProtocol::HOPOPT), 16);
        // AH: payload length 4 -> (4 + 2) * 4 = 24 bytes.
        let ah = [17u8, 4, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            Ipv6ExtHeader::new_checked(&ah[..])
                .unwrap()
                .header_len(IpProtocol::AH),
            24
        );
        // The fragment header's second byte is reserved, whatever it holds.
        let frag = [17u8, 9, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            Ipv6ExtHeader::new_checked(&frag[..])
                .unwrap()
                .header_len(IpProtocol::IPV6_FRAG),
            8
        );
        assert_eq!(
            Ipv6ExtHeader::new_checked(&opts[..7]).unwrap_err(),
            HeaderError::Truncated
        );
    }

    #[test]
    fn fragment_header_fields() {
        // Next header UDP, offset 185 (1480 bytes), M set, ident 0xdeadbeef.
        let bytes = [17u8, 0, 0x05, 0xc9, 0xde, 0xad, 0xbe, 0xef];
        let frag = Ipv6FragmentHeader::new_checked(&bytes[..]).unwrap();
        assert_eq!(frag.next_header(), IpProtocol::UDP);
        assert_eq!(frag.frag_offset(), 185);
        assert!(frag.more_frags());
        assert_eq!(frag.ident(), 0xdead_beef);
        assert_eq!(
            Ipv6FragmentHeader::new_checked(&bytes[..7]).unwrap_err(),
            HeaderError::Truncated
        );
    }
}
