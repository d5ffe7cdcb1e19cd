//! TCP header view (RFC 9293).

use super::{HeaderError, be16, be32};

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ_NUM: usize = 4;
    pub const ACK_NUM: usize = 8;
    pub const DATA_OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: usize = 14;
}

header_view!(
    /// A view of a TCP header. Only the fixed 20 bytes are read; options never are.
    TcpHeader
);

impl<T: AsRef<[u8]>> TcpHeader<T> {
    /// Length of the header without options.
    pub const HEADER_LEN: usize = 20;

    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;

    /// Ok when the buffer holds the fixed 20-byte header and the data offset is at least 5.
    /// The options may be cut by the capture: nothing here reads them.
    pub fn check_len(&self) -> Result<(), HeaderError> {
        if self.buffer.as_ref().len() < Self::HEADER_LEN {
            return Err(HeaderError::Truncated);
        }
        if self.header_len() < Self::HEADER_LEN {
            return Err(HeaderError::Malformed);
        }
        Ok(())
    }

    #[inline]
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT)
    }

    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT)
    }

    pub fn seq_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::SEQ_NUM)
    }

    pub fn ack_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::ACK_NUM)
    }

    /// Header length in bytes (data offset * 4), options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFFSET] >> 4) * 4
    }

    /// The flags byte: CWR ECE URG ACK PSH RST SYN FIN (the NS/AE bit is not included).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    pub fn window(&self) -> u16 {
        be16(self.buffer.as_ref(), field::WINDOW)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 49152 -> 443, seq 1, ack 2, data offset 5, SYN|ACK, window 65535.
    const HEADER: [u8; 20] = [
        0xc0, 0x00, 0x01, 0xbb, 0, 0, 0, 1, 0, 0, 0, 2, 0x50, 0x12, 0xff, 0xff, 0, 0, 0, 0,
    ];

    #[test]
    fn reads_fields() {
        let tcp = TcpHeader::new_checked(&HEADER[..]).unwrap();
        assert_eq!(tcp.src_port(), 49152);
        assert_eq!(tcp.dst_port(), 443);
        assert_eq!(tcp.seq_number(), 1);
        assert_eq!(tcp.ack_number(), 2);
        assert_eq!(tcp.header_len(), 20);
        type Tcp<'a> = TcpHeader<&'a [u8]>;
        assert_eq!(tcp.flags(), Tcp::SYN | Tcp::ACK);
        assert_eq!(tcp.window(), 65535);
    }

    #[test]
    fn length_checks() {
        for len in 0..20 {
            assert_eq!(
                TcpHeader::new_checked(&HEADER[..len]).unwrap_err(),
                HeaderError::Truncated
            );
        }
        for offset in 0..5u8 {
            let mut bytes = HEADER;
            bytes[12] = offset << 4;
            assert_eq!(
                TcpHeader::new_checked(&bytes[..]).unwrap_err(),
                HeaderError::Malformed
            );
        }
        // Data offset 15 (60 bytes) with the options cut by the capture is still readable.
        let mut bytes = HEADER;
        bytes[12] = 0xf0;
        assert_eq!(TcpHeader::new_checked(&bytes[..]).unwrap().header_len(), 60);
    }
}
