//! The message and set headers the encoders write, as typed views in the parser's style:
//! each header's field offsets are named once, a header is appended with the fields known
//! when a message starts, and the fields known only when it is complete (length, count,
//! sequence number) are set through a view over the written bytes.
//!
//! NetFlow v5 (Cisco's format), NetFlow v9 (RFC 3954 §5.1), IPFIX (RFC 7011 §3.1) and the
//! set header both share (RFC 3954 §5.2-5.3, RFC 7011 §3.3.2).

pub(crate) const IPFIX_HEADER_LEN: usize = 16;
pub(crate) const V9_HEADER_LEN: usize = 20;
pub(crate) const V5_HEADER_LEN: usize = 24;
pub(crate) const SET_HEADER_LEN: usize = 4;

/// Writes `value` in network order at `at`.
fn set_be16(buf: &mut [u8], at: usize, value: u16) {
    buf[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

fn set_be32(buf: &mut [u8], at: usize, value: u32) {
    buf[at..at + 4].copy_from_slice(&value.to_be_bytes());
}

/// Declares a header view: a wrapper over the header's bytes (at least `LEN` of them).
macro_rules! header_view {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub(crate) struct $name<T> {
            buffer: T,
        }

        impl<T: AsRef<[u8]>> $name<T> {
            /// Header length in bytes.
            pub(crate) const LEN: usize = $len;

            /// A view of the header at the start of `buffer`, which holds a whole one (the
            /// encoders only view headers they wrote).
            pub(crate) fn new(buffer: T) -> Self {
                assert!(buffer.as_ref().len() >= Self::LEN, "a {} is {} bytes", stringify!($name), Self::LEN);
                $name { buffer }
            }
        }
    };
}

mod ipfix {
    pub const VERSION: usize = 0;
    pub const LENGTH: usize = 2;
    pub const EXPORT_TIME: usize = 4;
    pub const SEQUENCE: usize = 8;
    pub const DOMAIN: usize = 12;
}

header_view!(
    /// An IPFIX message header (RFC 7011 §3.1).
    IpfixHeader, IPFIX_HEADER_LEN
);

impl IpfixHeader<&mut [u8]> {
    /// Appends a header with length and sequence number 0, set at the message's end.
    pub(crate) fn append(out: &mut Vec<u8>, export_time_s: u32, domain: u32) {
        let start = out.len();
        out.resize(start + Self::LEN, 0);
        let h = IpfixHeader::new(&mut out[start..]);
        set_be16(h.buffer, ipfix::VERSION, 10);
        set_be32(h.buffer, ipfix::EXPORT_TIME, export_time_s);
        set_be32(h.buffer, ipfix::DOMAIN, domain);
    }

    /// Total length of the message in bytes, header included.
    pub(crate) fn set_length(&mut self, length: u16) {
        set_be16(self.buffer, ipfix::LENGTH, length);
    }

    /// Data records sent before this message, modulo 2^32 (RFC 7011 §3.1).
    pub(crate) fn set_sequence(&mut self, sequence: u32) {
        set_be32(self.buffer, ipfix::SEQUENCE, sequence);
    }
}

mod v9 {
    pub const VERSION: usize = 0;
    pub const COUNT: usize = 2;
    pub const SYS_UPTIME: usize = 4;
    pub const UNIX_SECS: usize = 8;
    pub const SEQUENCE: usize = 12;
    pub const SOURCE_ID: usize = 16;
}

header_view!(
    /// A NetFlow v9 packet header (RFC 3954 §5.1).
    V9Header, V9_HEADER_LEN
);

impl V9Header<&mut [u8]> {
    /// Appends a header with count and sequence number 0, set at the packet's end.
    pub(crate) fn append(out: &mut Vec<u8>, sys_uptime_ms: u32, unix_secs: u32, source_id: u32) {
        let start = out.len();
        out.resize(start + Self::LEN, 0);
        let h = V9Header::new(&mut out[start..]);
        set_be16(h.buffer, v9::VERSION, 9);
        set_be32(h.buffer, v9::SYS_UPTIME, sys_uptime_ms);
        set_be32(h.buffer, v9::UNIX_SECS, unix_secs);
        set_be32(h.buffer, v9::SOURCE_ID, source_id);
    }

    /// Records in the packet, templates included (RFC 3954 §5.1).
    pub(crate) fn set_count(&mut self, count: u16) {
        set_be16(self.buffer, v9::COUNT, count);
    }

    /// Export packets sent before this one.
    pub(crate) fn set_sequence(&mut self, sequence: u32) {
        set_be32(self.buffer, v9::SEQUENCE, sequence);
    }
}

mod v5 {
    pub const VERSION: usize = 0;
    pub const COUNT: usize = 2;
    pub const SYS_UPTIME: usize = 4;
    pub const UNIX_SECS: usize = 8;
    pub const UNIX_NSECS: usize = 12;
    pub const FLOW_SEQUENCE: usize = 16;
    pub const ENGINE_TYPE: usize = 20;
    pub const ENGINE_ID: usize = 21;
    pub const SAMPLING: usize = 22;
}

/// What a NetFlow v5 header says that is known when the packet starts.
#[derive(Clone, Copy, Debug)]
pub(crate) struct V5Start {
    pub sys_uptime_ms: u32,
    pub unix_secs: u32,
    pub unix_nsecs: u32,
    pub engine_type: u8,
    pub engine_id: u8,
    /// Mode in the top 2 bits, interval in the low 14.
    pub sampling: u16,
}

header_view!(
    /// A NetFlow v5 packet header.
    V5Header, V5_HEADER_LEN
);

impl V5Header<&mut [u8]> {
    /// Appends a header with count and flow sequence 0, set at the packet's end.
    pub(crate) fn append(out: &mut Vec<u8>, start: V5Start) {
        let at = out.len();
        out.resize(at + Self::LEN, 0);
        let h = V5Header::new(&mut out[at..]);
        set_be16(h.buffer, v5::VERSION, 5);
        set_be32(h.buffer, v5::SYS_UPTIME, start.sys_uptime_ms);
        set_be32(h.buffer, v5::UNIX_SECS, start.unix_secs);
        set_be32(h.buffer, v5::UNIX_NSECS, start.unix_nsecs);
        h.buffer[v5::ENGINE_TYPE] = start.engine_type;
        h.buffer[v5::ENGINE_ID] = start.engine_id;
        set_be16(h.buffer, v5::SAMPLING, start.sampling);
    }

    /// Flow records in the packet.
    pub(crate) fn set_count(&mut self, count: u16) {
        set_be16(self.buffer, v5::COUNT, count);
    }

    /// Flows sent before this packet's first.
    pub(crate) fn set_flow_sequence(&mut self, sequence: u32) {
        set_be32(self.buffer, v5::FLOW_SEQUENCE, sequence);
    }
}

mod set {
    pub const ID: usize = 0;
    pub const LENGTH: usize = 2;
}

header_view!(
    /// A set header (an IPFIX set, a v9 FlowSet): the set's id and its length, header and
    /// padding included.
    SetHeader, SET_HEADER_LEN
);

impl SetHeader<&mut [u8]> {
    /// Appends a set header with length 0, set when the set closes.
    pub(crate) fn append(out: &mut Vec<u8>, id: u16) {
        let at = out.len();
        out.resize(at + Self::LEN, 0);
        set_be16(&mut out[at..], set::ID, id);
    }

    pub(crate) fn set_length(&mut self, length: u16) {
        set_be16(self.buffer, set::LENGTH, length);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The headers land where the specifications put them: each test builds the expected
    /// bytes by hand from the RFC's figure, not through the views.
    #[test]
    fn an_ipfix_header_is_rfc_7011_s3_1() {
        let mut out = vec![0xee];
        IpfixHeader::append(&mut out, 0x0102_0304, 0x0a0b_0c0d);
        let mut h = IpfixHeader::new(&mut out[1..]);
        h.set_length(0x1234);
        h.set_sequence(0x5566_7788);
        assert_eq!(
            out,
            [
                0xee, 0x00, 0x0a, 0x12, 0x34, 0x01, 0x02, 0x03, 0x04, 0x55, 0x66, 0x77, 0x88, 0x0a,
                0x0b, 0x0c, 0x0d
            ]
        );
    }

    #[test]
    fn a_v9_header_is_rfc_3954_s5_1() {
        let mut out = Vec::new();
        V9Header::append(&mut out, 0x0000_1000, 0x6000_0000, 7);
        let mut h = V9Header::new(&mut out[..]);
        h.set_count(3);
        h.set_sequence(9);
        assert_eq!(
            out,
            [
                0, 9, 0, 3, 0, 0, 0x10, 0, 0x60, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 7
            ]
        );
    }

    #[test]
    fn a_v5_header_is_ciscos_layout() {
        let start = V5Start {
            sys_uptime_ms: 0x0000_2000,
            unix_secs: 0x6000_0001,
            unix_nsecs: 500_000_000,
            engine_type: 1,
            engine_id: 2,
            sampling: 0x4000 | 100,
        };
        let mut out = Vec::new();
        V5Header::append(&mut out, start);
        let mut h = V5Header::new(&mut out[..]);
        h.set_count(30);
        h.set_flow_sequence(0x0102_0304);
        let nsecs = 500_000_000u32.to_be_bytes();
        assert_eq!(
            out,
            [
                0, 5, 0, 30, 0, 0, 0x20, 0, 0x60, 0, 0, 1, nsecs[0], nsecs[1], nsecs[2], nsecs[3],
                1, 2, 3, 4, 1, 2, 0x40, 100
            ]
        );
    }

    #[test]
    fn a_set_header_is_an_id_and_a_length() {
        let mut out = vec![1, 2];
        SetHeader::append(&mut out, 256);
        SetHeader::new(&mut out[2..]).set_length(44);
        assert_eq!(out, [1, 2, 1, 0, 0, 44]);
    }

    #[test]
    #[should_panic(expected = "is 16 bytes")]
    fn a_view_needs_a_whole_header() {
        IpfixHeader::new(&[0u8; 15][..]);
    }
}
