//! A bounds-checked DNS message reader (RFC 1035): the header, the first question and a
//! walk over every resource record, so a message that does not hold together is reported
//! as malformed instead of half-read.
//!
//! Hostile input is expected: every read is checked against the message's end, a name is
//! at most 255 octets, and a compression pointer must point strictly before the label
//! that holds it, so pointers can never loop (a hop limit backs that up).

use std::fmt;

/// Longest name on the wire, length octets included (RFC 1035 section 3.1).
const MAX_NAME_LEN: usize = 255;
/// Pointers followed while reading one name; pointing strictly backwards already
/// bounds the walk, this keeps it short.
const MAX_POINTER_HOPS: usize = 64;
pub const HEADER_LEN: usize = 12;

/// Why a message could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsError {
    /// Shorter than the 12-byte header.
    ShortHeader,
    /// A name, question or record runs past the end of the message.
    Truncated,
    /// A compression pointer that does not point strictly backwards.
    PointerLoop,
    /// A name longer than 255 octets.
    NameTooLong,
    /// A label type other than a plain label or a pointer (0x40, 0x80).
    BadLabelType,
    /// QDCOUNT is zero: nothing to name the transaction by.
    NoQuestion,
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            DnsError::ShortHeader => "shorter than the DNS header",
            DnsError::Truncated => "runs past the end of the message",
            DnsError::PointerLoop => "compression pointer does not point backwards",
            DnsError::NameTooLong => "name longer than 255 octets",
            DnsError::BadLabelType => "reserved label type",
            DnsError::NoQuestion => "no question",
        };
        f.write_str(text)
    }
}

/// What the analyzer needs from one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsMessage {
    pub id: u16,
    pub response: bool,
    pub rcode: u8,
    pub answers: u16,
    /// The first question's name, dotted, without the trailing dot.
    pub qname: String,
    pub qtype: u16,
}

fn be16(message: &[u8], at: usize) -> Result<u16, DnsError> {
    let bytes = message.get(at..at + 2).ok_or(DnsError::Truncated)?;
    Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
}

/// Reads the name at `start`; returns the offset just past it (past the first pointer if
/// it is compressed). With `text`, appends the dotted name to it.
fn read_name(
    message: &[u8],
    start: usize,
    mut text: Option<&mut String>,
) -> Result<usize, DnsError> {
    let mut at = start;
    // Where the name continues in the message after its first pointer.
    let mut end = None;
    let mut wire_len = 0usize;
    let mut hops = 0usize;
    // Pointers must go strictly below the lowest label read so far.
    let mut floor = start;
    loop {
        let len = *message.get(at).ok_or(DnsError::Truncated)?;
        match len & 0xc0 {
            0x00 => {
                wire_len += 1 + usize::from(len);
                if wire_len > MAX_NAME_LEN {
                    return Err(DnsError::NameTooLong);
                }
                if len == 0 {
                    return Ok(end.unwrap_or(at + 1));
                }
                let label = message
                    .get(at + 1..at + 1 + usize::from(len))
                    .ok_or(DnsError::Truncated)?;
                if let Some(text) = text.as_deref_mut() {
                    if !text.is_empty() {
                        text.push('.');
                    }
                    push_label(text, label);
                }
                at += 1 + usize::from(len);
            }
            0xc0 => {
                let low = *message.get(at + 1).ok_or(DnsError::Truncated)?;
                let target = usize::from(len & 0x3f) << 8 | usize::from(low);
                hops += 1;
                if target >= floor || hops > MAX_POINTER_HOPS {
                    return Err(DnsError::PointerLoop);
                }
                end.get_or_insert(at + 2);
                floor = target;
                at = target;
            }
            _ => return Err(DnsError::BadLabelType),
        }
    }
}

/// Printable ASCII as is; dots, backslashes and other bytes escaped as `\DDD`
/// (RFC 4343's presentation form), so a hostile label cannot fake a label boundary.
fn push_label(text: &mut String, label: &[u8]) {
    for &b in label {
        if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
            text.push(char::from(b));
        } else {
            text.push_str(&format!("\\{b:03}"));
        }
    }
}

/// Skips one resource record (name, type, class, TTL, RDATA) at `at`.
fn skip_record(message: &[u8], at: usize) -> Result<usize, DnsError> {
    let at = read_name(message, at, None)?;
    let rdlength = usize::from(be16(message, at + 8)?);
    let end = at + 10 + rdlength;
    if end > message.len() {
        return Err(DnsError::Truncated);
    }
    Ok(end)
}

/// Reads a DNS message (UDP payload, or a TCP segment's message after its length
/// prefix). Never panics, whatever the bytes.
pub fn parse_message(message: &[u8]) -> Result<DnsMessage, DnsError> {
    if message.len() < HEADER_LEN {
        return Err(DnsError::ShortHeader);
    }
    let id = be16(message, 0)?;
    let flags = be16(message, 2)?;
    let counts = [
        be16(message, 4)?,
        be16(message, 6)?,
        be16(message, 8)?,
        be16(message, 10)?,
    ];
    if counts[0] == 0 {
        return Err(DnsError::NoQuestion);
    }
    let mut qname = String::new();
    let mut at = read_name(message, HEADER_LEN, Some(&mut qname))?;
    let qtype = be16(message, at)?;
    be16(message, at + 2)?;
    at += 4;
    for _ in 1..counts[0] {
        at = read_name(message, at, None)? + 4;
        if at > message.len() {
            return Err(DnsError::Truncated);
        }
    }
    let records = u32::from(counts[1]) + u32::from(counts[2]) + u32::from(counts[3]);
    for _ in 0..records {
        at = skip_record(message, at)?;
    }
    Ok(DnsMessage {
        id,
        response: flags & 0x8000 != 0,
        rcode: (flags & 0x000f) as u8,
        answers: counts[1],
        qname,
        qtype,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A message with one question and `answers` A records, each naming the question by
    /// a pointer.
    pub(crate) fn message(id: u16, flags: u16, name: &str, qtype: u16, answers: u16) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(&flags.to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        m.extend_from_slice(&answers.to_be_bytes());
        m.extend_from_slice(&[0, 0, 0, 0]);
        for label in name.split('.').filter(|l| !l.is_empty()) {
            m.push(label.len() as u8);
            m.extend_from_slice(label.as_bytes());
        }
        m.push(0);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        for i in 0..answers {
            m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, i as u8]);
        }
        m
    }

    #[test]
    fn reads_a_query_and_a_compressed_response() {
        let query = parse_message(&message(0x1234, 0x0100, "www.example.org", 28, 0)).unwrap();
        assert_eq!(
            query,
            DnsMessage {
                id: 0x1234,
                response: false,
                rcode: 0,
                answers: 0,
                qname: "www.example.org".into(),
                qtype: 28
            }
        );
        let response = parse_message(&message(7, 0x8183, "nx.example", 1, 2)).unwrap();
        assert!(response.response);
        assert_eq!((response.rcode, response.answers), (3, 2));
        assert_eq!(response.qname, "nx.example");
    }

    #[test]
    fn hostile_names_are_errors_not_panics() {
        let mut looped = message(1, 0x8180, "a", 1, 0);
        // The question's name is a pointer to itself.
        looped.truncate(HEADER_LEN);
        looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(parse_message(&looped), Err(DnsError::PointerLoop));
        // Two names pointing at each other: the first answer points forward.
        let mut pair = message(1, 0x8180, "a", 1, 1);
        let answer = pair.len() - 16;
        pair[answer..answer + 2].copy_from_slice(&[0xc0, (answer + 2) as u8]);
        assert_eq!(parse_message(&pair), Err(DnsError::PointerLoop));
        // A label past the end.
        let mut past = message(1, 0x0100, "example", 1, 0);
        past[HEADER_LEN] = 60;
        assert_eq!(parse_message(&past), Err(DnsError::Truncated));
        // A name cut before its terminating zero.
        let cut = &message(1, 0x0100, "example", 1, 0)[..HEADER_LEN + 8];
        assert_eq!(parse_message(cut), Err(DnsError::Truncated));
        // Answer records the header promises but the message lacks.
        let mut short = message(1, 0x8180, "a", 1, 2);
        short.truncate(short.len() - 3);
        assert_eq!(parse_message(&short), Err(DnsError::Truncated));
        assert_eq!(parse_message(&[0; 5]), Err(DnsError::ShortHeader));
        let long = format!("{0}.{0}.{0}.{0}.{0}", "x".repeat(60));
        assert_eq!(
            parse_message(&message(1, 0, &long, 1, 0)),
            Err(DnsError::NameTooLong)
        );
        let mut reserved = message(1, 0, "a", 1, 0);
        reserved[HEADER_LEN] = 0x41;
        assert_eq!(parse_message(&reserved), Err(DnsError::BadLabelType));
    }

    #[test]
    fn odd_bytes_are_escaped() {
        let mut m = message(1, 0, "ab", 1, 0);
        m[HEADER_LEN + 1] = b'.';
        m[HEADER_LEN + 2] = 0x07;
        assert_eq!(parse_message(&m).unwrap().qname, "\\046\\007");
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_message(&bytes);
        }

        #[test]
        fn mutated_messages_parse_or_fail_cleanly(
            answers in 0u16..5,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
        ) {
            let mut m = message(9, 0x8180, "host.example.net", 1, answers);
            for (at, byte) in flips {
                let at = at % m.len();
                m[at] = byte;
            }
            let cut = cut % (m.len() + 1);
            let _ = parse_message(&m[..cut]);
        }

        #[test]
        fn well_formed_names_round_trip(labels in proptest::collection::vec("[a-z0-9-]{1,20}", 1..6), qtype in any::<u16>()) {
            let name = labels.join(".");
            let parsed = parse_message(&message(3, 0x0100, &name, qtype, 0)).unwrap();
            prop_assert_eq!(parsed.qname, name);
            prop_assert_eq!(parsed.qtype, qtype);
        }
    }
}
