//! Capture files: a classic pcap writer (for generated test and benchmark traces) and the
//! native pcap/pcapng reader, a [`crate::PacketSource`] that needs no EAL.
//!
//! # Reader
//!
//! [`FileSource`] reads classic pcap (microsecond and nanosecond magic, either byte order)
//! and pcapng (sections in either byte order, several interfaces, enhanced, simple and
//! obsolete packet blocks; every other block is skipped). Timestamps are converted to
//! microseconds since the epoch (pcapng `if_tsresol` and `if_tsoffset` honoured); a simple
//! packet block has no timestamp and takes the previous delivered packet's.
//!
//! Link types: only Ethernet (1) is read. A classic pcap of another link type is refused
//! when opened, naming the link type. A pcapng interface of another link type does not
//! stop the file: its packets are skipped, counted in [`FileStats::skipped_packets`], and a
//! warning naming the link type is logged once per interface.
//!
//! A capture cut in the middle of a record (a full disk, a killed tcpdump) is common: the
//! whole packets before the cut are delivered, a warning is logged, the source ends
//! cleanly and [`FileStats::truncated_tail`] is set. A record that cannot be right (a
//! captured length beyond 256 KiB, a pcapng block length that is not a multiple of 4 or
//! disagrees with its trailer) is an error: the file is corrupt, not cut.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::source::{BurstStatus, MAX_BURST, Packet, PacketSource, SourceError, SourceStats};

/// Classic pcap magic for microsecond timestamps, written in native byte order.
const PCAP_MAGIC_US: u32 = 0xa1b2_c3d4;
const LINKTYPE_ETHERNET: u32 = 1;
const SNAPLEN: u32 = 262_144;

/// Writes classic pcap (microsecond timestamps, Ethernet link type).
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    out: W,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the global header.
    pub fn new(mut out: W) -> io::Result<Self> {
        let mut header = [0u8; 24];
        header[0..4].copy_from_slice(&PCAP_MAGIC_US.to_ne_bytes());
        header[4..6].copy_from_slice(&2u16.to_ne_bytes());
        header[6..8].copy_from_slice(&4u16.to_ne_bytes());
        // thiszone and sigfigs stay zero.
        header[16..20].copy_from_slice(&SNAPLEN.to_ne_bytes());
        header[20..24].copy_from_slice(&LINKTYPE_ETHERNET.to_ne_bytes());
        out.write_all(&header)?;
        Ok(PcapWriter { out })
    }

    /// Appends one frame captured whole at `timestamp_us` (microseconds since the epoch).
    pub fn write_packet(&mut self, timestamp_us: u64, frame: &[u8]) -> io::Result<()> {
        let len = u32::try_from(frame.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
        let secs = u32::try_from(timestamp_us / 1_000_000).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "timestamp beyond pcap's 32-bit seconds",
            )
        })?;
        let mut record = [0u8; 16];
        record[0..4].copy_from_slice(&secs.to_ne_bytes());
        record[4..8].copy_from_slice(&((timestamp_us % 1_000_000) as u32).to_ne_bytes());
        record[8..12].copy_from_slice(&len.to_ne_bytes());
        record[12..16].copy_from_slice(&len.to_ne_bytes());
        self.out.write_all(&record)?;
        self.out.write_all(frame)
    }

    /// Flushes and returns the underlying writer.
    pub fn into_inner(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Largest captured length a record may claim (libpcap's maximum snap length).
const MAX_CAPTURED_LEN: usize = 262_144;
/// Largest pcapng section or interface header block read into memory.
const MAX_HEADER_BLOCK_LEN: usize = 1 << 20;
/// Read buffer of the file: large, so a record is rarely split across reads.
const READ_BUFFER_LEN: usize = 1 << 20;

const PCAP_MAGIC_NS: u32 = 0xa1b2_3c4d;
const PCAPNG_SHB: u32 = 0x0a0d_0d0a;
const PCAPNG_BYTE_ORDER_MAGIC: u32 = 0x1a2b_3c4d;
const PCAPNG_IDB: u32 = 1;
const PCAPNG_OPB: u32 = 2;
const PCAPNG_SPB: u32 = 3;
const PCAPNG_EPB: u32 = 6;
const PCAPNG_OPT_END: u16 = 0;
const PCAPNG_IF_TSRESOL: u16 = 9;
const PCAPNG_IF_TSOFFSET: u16 = 14;

/// Which kind of capture file a source reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CaptureFormat {
    #[default]
    Pcap,
    PcapNg,
}

/// What a reader found in a file beyond the packets it delivered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileStats {
    pub format: CaptureFormat,
    /// Packets delivered (or, from [`FileSource::scan`], that a read would deliver).
    pub packets: u64,
    /// Sum of their lengths on the wire.
    pub wire_bytes: u64,
    /// Delivered packets whose capture is shorter than the wire length (snap length).
    pub snapped_packets: u64,
    /// Packets skipped because their pcapng interface is not Ethernet.
    pub skipped_packets: u64,
    /// The file ends in the middle of a record; the whole packets before it were read.
    pub truncated_tail: bool,
    /// Timestamp of the first delivered packet (microseconds since the epoch): where a
    /// replay's clock starts.
    pub first_timestamp_us: Option<u64>,
}

/// Human name of a link type, for error messages.
fn link_type_name(link_type: u32) -> &'static str {
    match link_type {
        0 => "NULL (BSD loopback)",
        1 => "ETHERNET",
        9 => "PPP",
        101 => "RAW (IP)",
        105 => "IEEE802_11",
        108 => "LOOP",
        113 => "LINUX_SLL",
        127 => "IEEE802_11_RADIOTAP",
        228 => "IPV4",
        229 => "IPV6",
        276 => "LINUX_SLL2",
        _ => "unknown",
    }
}

/// `io::Error`'s message without the " (os error N)" suffix.
fn io_message(err: &io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// How a pcapng interface's timestamps count time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TsResolution {
    /// Units of 10^-n seconds.
    Decimal(u8),
    /// Units of 2^-n seconds.
    Binary(u8),
}

impl TsResolution {
    fn from_option(value: u8) -> Self {
        if value & 0x80 == 0 {
            TsResolution::Decimal(value)
        } else {
            TsResolution::Binary(value & 0x7f)
        }
    }

    fn to_micros(self, ticks: u64) -> u64 {
        match self {
            TsResolution::Decimal(6) => ticks,
            TsResolution::Decimal(exp) if exp < 6 => {
                ticks.saturating_mul(10u64.pow(u32::from(6 - exp)))
            }
            TsResolution::Decimal(exp) => match 10u64.checked_pow(u32::from(exp - 6)) {
                Some(divisor) => ticks / divisor,
                None => 0,
            },
            TsResolution::Binary(exp) => {
                ((u128::from(ticks) * 1_000_000) >> exp).min(u128::from(u64::MAX)) as u64
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Interface {
    link_type: u16,
    snaplen: u32,
    resolution: TsResolution,
    /// Seconds added to every timestamp (`if_tsoffset`).
    offset_secs: i64,
}

impl Interface {
    fn timestamp_us(&self, ticks: u64) -> u64 {
        let micros = self.resolution.to_micros(ticks);
        let offset = self.offset_secs.saturating_mul(1_000_000);
        micros.saturating_add_signed(offset)
    }
}

#[derive(Debug)]
enum Format {
    Pcap {
        big_endian: bool,
        nanos: bool,
    },
    PcapNg {
        big_endian: bool,
        interfaces: Vec<Interface>,
        /// For simple packet blocks, which carry no time.
        last_timestamp_us: u64,
    },
}

/// How much of a buffer a read filled.
enum Fill {
    Full,
    /// End of file before the first byte.
    Eof,
    /// End of file after some bytes.
    Partial,
}

/// Where one delivered packet sits in the burst buffer.
#[derive(Clone, Copy, Debug, Default)]
struct RecordMeta {
    start: usize,
    captured: usize,
    wire_len: u32,
    timestamp_us: u64,
}

/// A classic pcap record header (16 bytes), decoded.
#[derive(Clone, Copy, Debug)]
struct PcapRecordHeader {
    captured: usize,
    /// At least `captured`: a capture never holds more than the wire carried.
    wire_len: u32,
    timestamp_us: u64,
}

impl PcapRecordHeader {
    #[inline]
    fn read(header: &[u8], big_endian: bool, nanos: bool) -> PcapRecordHeader {
        let secs = u64::from(u32_at(header, 0, big_endian));
        let fraction = u64::from(u32_at(header, 4, big_endian));
        let captured = u32_at(header, 8, big_endian) as usize;
        let micros = if nanos { fraction / 1_000 } else { fraction };
        PcapRecordHeader {
            captured,
            wire_len: u32_at(header, 12, big_endian).max(captured as u32),
            timestamp_us: secs * 1_000_000 + micros,
        }
    }
}

impl FileStats {
    /// Counts a delivered packet of `captured` bytes that was `wire_len` on the wire.
    #[inline]
    fn count_delivered(&mut self, meta: &RecordMeta) {
        let snapped = u64::from((meta.captured as u64) < u64::from(meta.wire_len));
        self.count_burst(1, u64::from(meta.wire_len), snapped, meta.timestamp_us);
    }

    /// Counts `packets` delivered together, the first stamped `first_timestamp_us`:
    /// `wire_bytes` on the wire, `snapped` of them captured short.
    #[inline]
    fn count_burst(
        &mut self,
        packets: u64,
        wire_bytes: u64,
        snapped: u64,
        first_timestamp_us: u64,
    ) {
        if self.packets == 0 && packets > 0 {
            self.first_timestamp_us = Some(first_timestamp_us);
        }
        self.packets += packets;
        self.wire_bytes += wire_bytes;
        self.snapped_packets += snapped;
    }
}

/// One step of the reader.
enum Step {
    Packet(RecordMeta),
    /// A block or packet that delivers nothing (skipped interface, metadata block).
    Nothing,
    End,
}

fn u16_at(bytes: &[u8], at: usize, big_endian: bool) -> u16 {
    let raw = [bytes[at], bytes[at + 1]];
    if big_endian {
        u16::from_be_bytes(raw)
    } else {
        u16::from_le_bytes(raw)
    }
}

fn u32_at(bytes: &[u8], at: usize, big_endian: bool) -> u32 {
    let raw = [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
    if big_endian {
        u32::from_be_bytes(raw)
    } else {
        u32::from_le_bytes(raw)
    }
}

/// The record-level reader, apart from the burst buffer it fills.
#[derive(Debug)]
struct Reader {
    path: PathBuf,
    input: BufReader<File>,
    /// The file's size when opened (None when it is not a regular file).
    file_len: Option<u64>,
    format: Format,
    /// Bytes consumed so far, for error messages and progress.
    position: u64,
    stats: FileStats,
    /// Pcapng section and interface header blocks are read here; reused.
    scratch: Vec<u8>,
}

impl Reader {
    fn open(path: &Path) -> Result<Reader, SourceError> {
        let file = File::open(path).map_err(|err| {
            SourceError::new(format!(
                "cannot open {}: {}",
                path.display(),
                io_message(&err)
            ))
        })?;
        let file_len = file
            .metadata()
            .ok()
            .filter(|meta| meta.is_file())
            .map(|meta| meta.len());
        let mut reader = Reader {
            path: path.to_path_buf(),
            input: BufReader::with_capacity(READ_BUFFER_LEN, file),
            file_len,
            format: Format::Pcap {
                big_endian: false,
                nanos: false,
            },
            position: 0,
            stats: FileStats::default(),
            scratch: Vec::new(),
        };
        reader.read_file_header()?;
        Ok(reader)
    }

    fn error(&self, message: impl std::fmt::Display) -> SourceError {
        SourceError::new(format!("{}: {message}", self.path.display()))
    }

    fn io_error(&self, err: &io::Error) -> SourceError {
        self.error(format_args!(
            "read error at byte {}: {}",
            self.position,
            io_message(err)
        ))
    }

    /// Reads into all of `buf`, reporting how far the file went.
    fn fill(&mut self, buf: &mut [u8]) -> Result<Fill, SourceError> {
        let mut done = 0;
        while done < buf.len() {
            match self.input.read(&mut buf[done..]) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(self.io_error(&err)),
            }
        }
        self.position += done as u64;
        Ok(if done == buf.len() {
            Fill::Full
        } else if done == 0 {
            Fill::Eof
        } else {
            Fill::Partial
        })
    }

    /// Reads `len` bytes onto the end of `out` (or skips them when `out` is None).
    /// Returns false when the file ends first.
    fn take(&mut self, len: usize, out: Option<&mut Vec<u8>>) -> Result<bool, SourceError> {
        match out {
            Some(out) => {
                let start = out.len();
                out.resize(start + len, 0);
                let complete = matches!(self.fill(&mut out[start..])?, Fill::Full);
                if !complete {
                    out.truncate(start);
                }
                Ok(complete)
            }
            None => {
                let copied = io::copy(&mut (&mut self.input).take(len as u64), &mut io::sink())
                    .map_err(|err| self.io_error(&err))?;
                self.position += copied;
                Ok(copied == len as u64)
            }
        }
    }

    fn read_file_header(&mut self) -> Result<(), SourceError> {
        let mut magic = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            match self.input.read(&mut magic[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(self.io_error(&err)),
            }
        }
        self.position = got as u64;
        if got == 0 {
            return Err(SourceError::new(format!(
                "{} is not a pcap or pcapng file (it is empty)",
                self.path.display()
            )));
        }
        if got < 4 {
            return Err(SourceError::new(format!(
                "{} is not a pcap or pcapng file (only {got} bytes)",
                self.path.display()
            )));
        }
        let as_le = u32::from_le_bytes(magic);
        let as_be = u32::from_be_bytes(magic);
        if as_be == PCAPNG_SHB {
            self.stats.format = CaptureFormat::PcapNg;
            self.format = Format::PcapNg {
                big_endian: false,
                interfaces: Vec::new(),
                last_timestamp_us: 0,
            };
            return match self.read_section_header()? {
                true => Ok(()),
                false => Err(self.error("truncated pcapng section header block")),
            };
        }
        let (big_endian, nanos) = match (as_le, as_be) {
            (PCAP_MAGIC_US, _) => (false, false),
            (PCAP_MAGIC_NS, _) => (false, true),
            (_, PCAP_MAGIC_US) => (true, false),
            (_, PCAP_MAGIC_NS) => (true, true),
            _ => {
                return Err(SourceError::new(format!(
                    "{} is not a pcap or pcapng file (magic {as_be:#010x})",
                    self.path.display()
                )));
            }
        };
        let mut header = [0u8; 20];
        if !matches!(self.fill(&mut header)?, Fill::Full) {
            return Err(self.error("truncated pcap file header"));
        }
        // Only the low 16 bits name the link type; the upper bits may carry FCS flags.
        let link_type = u32_at(&header, 16, big_endian) & 0xffff;
        if link_type != LINKTYPE_ETHERNET {
            return Err(self.error(format_args!(
                "link type {link_type} ({}) is not supported: tapflow reads Ethernet \
                 captures (link type 1)",
                link_type_name(link_type)
            )));
        }
        self.stats.format = CaptureFormat::Pcap;
        self.format = Format::Pcap { big_endian, nanos };
        Ok(())
    }

    /// Reads a section header block whose 4-byte type was just consumed. False when the
    /// file ends inside the block.
    fn read_section_header(&mut self) -> Result<bool, SourceError> {
        let block_start = self.position - 4;
        let mut head = [0u8; 8];
        if !matches!(self.fill(&mut head)?, Fill::Full) {
            return Ok(false);
        }
        let big_endian = match u32::from_le_bytes([head[4], head[5], head[6], head[7]]) {
            PCAPNG_BYTE_ORDER_MAGIC => false,
            _ if u32::from_be_bytes([head[4], head[5], head[6], head[7]])
                == PCAPNG_BYTE_ORDER_MAGIC =>
            {
                true
            }
            _ => {
                return Err(self.error(format_args!(
                    "pcapng section header at byte {block_start} has no valid byte-order magic"
                )));
            }
        };
        let block_len = u32_at(&head, 0, big_endian) as usize;
        if block_len < 28 || !block_len.is_multiple_of(4) || block_len > MAX_HEADER_BLOCK_LEN {
            return Err(self.error(format_args!(
                "pcapng section header at byte {block_start} has an invalid length {block_len}"
            )));
        }
        let mut body = std::mem::take(&mut self.scratch);
        body.clear();
        let complete = self.take(block_len - 12, Some(&mut body))?;
        let result = if !complete {
            Ok(false)
        } else if u32_at(&body, block_len - 16, big_endian) as usize != block_len {
            Err(self.error(format_args!(
                "pcapng section header at byte {block_start}: trailing length differs"
            )))
        } else {
            let major = u16_at(&body, 0, big_endian);
            if major != 1 {
                Err(self.error(format_args!(
                    "pcapng major version {major} is not supported"
                )))
            } else {
                Ok(true)
            }
        };
        self.scratch = body;
        if !result? {
            return Ok(false);
        }
        // A new section starts afresh: its own byte order and interfaces.
        self.format = Format::PcapNg {
            big_endian,
            interfaces: Vec::new(),
            last_timestamp_us: 0,
        };
        Ok(true)
    }

    /// Reads the next record; its bytes go onto the end of `out` (skipped when None).
    fn step(&mut self, out: Option<&mut Vec<u8>>) -> Result<Step, SourceError> {
        match self.format {
            Format::Pcap { big_endian, nanos } => self.step_pcap(big_endian, nanos, out),
            Format::PcapNg { big_endian, .. } => self.step_pcapng(big_endian, out),
        }
    }

    fn truncated_tail(&mut self) -> Step {
        self.stats.truncated_tail = true;
        log::warn!(
            "{}: the capture ends in the middle of a record at byte {}; the {} whole packets \
             before it were read",
            self.path.display(),
            self.position,
            self.stats.packets
        );
        Step::End
    }

    fn deliver(&mut self, meta: RecordMeta) -> Step {
        self.stats.count_delivered(&meta);
        Step::Packet(meta)
    }

    fn step_pcap(
        &mut self,
        big_endian: bool,
        nanos: bool,
        out: Option<&mut Vec<u8>>,
    ) -> Result<Step, SourceError> {
        let record_start = self.position;
        let mut header = [0u8; 16];
        match self.fill(&mut header)? {
            Fill::Full => {}
            Fill::Eof => return Ok(Step::End),
            Fill::Partial => return Ok(self.truncated_tail()),
        }
        let record = PcapRecordHeader::read(&header, big_endian, nanos);
        let captured = record.captured;
        if captured > MAX_CAPTURED_LEN {
            return Err(self.error(format_args!(
                "record at byte {record_start} claims {captured} captured bytes (more than \
                 {MAX_CAPTURED_LEN}): corrupt file"
            )));
        }
        let start = out.as_ref().map_or(0, |buf| buf.len());
        if !self.take(captured, out)? {
            return Ok(self.truncated_tail());
        }
        Ok(self.deliver(RecordMeta {
            start,
            captured,
            wire_len: record.wire_len,
            timestamp_us: record.timestamp_us,
        }))
    }

    fn step_pcapng(
        &mut self,
        big_endian: bool,
        out: Option<&mut Vec<u8>>,
    ) -> Result<Step, SourceError> {
        let block_start = self.position;
        let mut head = [0u8; 8];
        match self.fill(&mut head)? {
            Fill::Full => {}
            Fill::Eof => return Ok(Step::End),
            Fill::Partial => return Ok(self.truncated_tail()),
        }
        if u32::from_be_bytes([head[0], head[1], head[2], head[3]]) == PCAPNG_SHB {
            // The section header's length can only be read once its byte order is known.
            self.position -= 4;
            self.input
                .seek_relative(-4)
                .map_err(|err| self.io_error(&err))?;
            return Ok(match self.read_section_header()? {
                true => Step::Nothing,
                false => self.truncated_tail(),
            });
        }
        let block_type = u32_at(&head, 0, big_endian);
        let block_len = u32_at(&head, 4, big_endian) as usize;
        if block_len < 12 || !block_len.is_multiple_of(4) {
            return Err(self.error(format_args!(
                "pcapng block at byte {block_start} has an invalid length {block_len}: corrupt \
                 file"
            )));
        }
        match block_type {
            PCAPNG_IDB => self.read_interface(block_start, block_len, big_endian),
            PCAPNG_EPB | PCAPNG_OPB => {
                self.read_packet_block(block_start, block_type, block_len, big_endian, out)
            }
            PCAPNG_SPB => self.read_simple_packet(block_start, block_len, big_endian, out),
            _ => {
                if !self.take(block_len - 12, None)? {
                    return Ok(self.truncated_tail());
                }
                self.read_trailer(block_start, block_len, big_endian)
                    .map(|step| step.unwrap_or(Step::Nothing))
            }
        }
    }

    /// Reads a block's trailing length and checks it; `Some(End)` when the file ends first.
    fn read_trailer(
        &mut self,
        block_start: u64,
        block_len: usize,
        big_endian: bool,
    ) -> Result<Option<Step>, SourceError> {
        let mut trailer = [0u8; 4];
        if !matches!(self.fill(&mut trailer)?, Fill::Full) {
            return Ok(Some(self.truncated_tail()));
        }
        let trailing_len = u32_at(&trailer, 0, big_endian) as usize;
        if trailing_len != block_len {
            return Err(self.error(format_args!(
                "pcapng block at byte {block_start}: length {block_len} but trailing length \
                 {trailing_len}: corrupt file"
            )));
        }
        Ok(None)
    }

    fn interfaces(&self) -> &[Interface] {
        match &self.format {
            Format::PcapNg { interfaces, .. } => interfaces,
            Format::Pcap { .. } => &[],
        }
    }

    fn read_interface(
        &mut self,
        block_start: u64,
        block_len: usize,
        big_endian: bool,
    ) -> Result<Step, SourceError> {
        if !(20..=MAX_HEADER_BLOCK_LEN).contains(&block_len) {
            return Err(self.error(format_args!(
                "pcapng interface block at byte {block_start} has an invalid length {block_len}"
            )));
        }
        let mut body = std::mem::take(&mut self.scratch);
        body.clear();
        let complete = self.take(block_len - 12, Some(&mut body))?;
        let parsed = if complete {
            Some(parse_interface(&body, big_endian))
        } else {
            None
        };
        self.scratch = body;
        let Some(interface) = parsed else {
            return Ok(self.truncated_tail());
        };
        if let Some(step) = self.read_trailer(block_start, block_len, big_endian)? {
            return Ok(step);
        }
        let index = self.interfaces().len();
        if u32::from(interface.link_type) != LINKTYPE_ETHERNET {
            log::warn!(
                "{}: pcapng interface {index} has link type {} ({}); its packets are skipped \
                 (tapflow reads Ethernet)",
                self.path.display(),
                interface.link_type,
                link_type_name(u32::from(interface.link_type))
            );
        }
        if let Format::PcapNg { interfaces, .. } = &mut self.format {
            interfaces.push(interface);
        }
        Ok(Step::Nothing)
    }

    fn interface(&self, block_start: u64, id: usize) -> Result<Interface, SourceError> {
        self.interfaces().get(id).copied().ok_or_else(|| {
            self.error(format_args!(
                "pcapng packet block at byte {block_start} refers to interface {id}, but the \
                 section defines {}: corrupt file",
                self.interfaces().len()
            ))
        })
    }

    fn read_packet_block(
        &mut self,
        block_start: u64,
        block_type: u32,
        block_len: usize,
        big_endian: bool,
        out: Option<&mut Vec<u8>>,
    ) -> Result<Step, SourceError> {
        // Interface, timestamp (high, low), captured length, original length, then data.
        const FIXED: usize = 20;
        if block_len < 12 + FIXED {
            return Err(self.error(format_args!(
                "pcapng packet block at byte {block_start} is too short ({block_len} bytes)"
            )));
        }
        let mut fixed = [0u8; FIXED];
        if !matches!(self.fill(&mut fixed)?, Fill::Full) {
            return Ok(self.truncated_tail());
        }
        let interface_id = if block_type == PCAPNG_OPB {
            usize::from(u16_at(&fixed, 0, big_endian))
        } else {
            u32_at(&fixed, 0, big_endian) as usize
        };
        let ticks = (u64::from(u32_at(&fixed, 4, big_endian)) << 32)
            | u64::from(u32_at(&fixed, 8, big_endian));
        let captured = u32_at(&fixed, 12, big_endian) as usize;
        let wire_len = u32_at(&fixed, 16, big_endian);
        let room = block_len - 12 - FIXED;
        if captured > MAX_CAPTURED_LEN || captured > room {
            return Err(self.error(format_args!(
                "pcapng packet block at byte {block_start} claims {captured} captured bytes in \
                 a {block_len}-byte block: corrupt file"
            )));
        }
        let interface = self.interface(block_start, interface_id)?;
        let timestamp_us = interface.timestamp_us(ticks);
        self.finish_packet(
            block_start,
            block_len,
            big_endian,
            interface,
            captured,
            room - captured,
            wire_len,
            timestamp_us,
            out,
        )
    }

    fn read_simple_packet(
        &mut self,
        block_start: u64,
        block_len: usize,
        big_endian: bool,
        out: Option<&mut Vec<u8>>,
    ) -> Result<Step, SourceError> {
        if block_len < 16 {
            return Err(self.error(format_args!(
                "pcapng simple packet block at byte {block_start} is too short"
            )));
        }
        let mut fixed = [0u8; 4];
        if !matches!(self.fill(&mut fixed)?, Fill::Full) {
            return Ok(self.truncated_tail());
        }
        let wire_len = u32_at(&fixed, 0, big_endian);
        let interface = self.interface(block_start, 0)?;
        let room = block_len - 16;
        let mut captured = (wire_len as usize).min(room);
        if interface.snaplen != 0 {
            captured = captured.min(interface.snaplen as usize);
        }
        if captured > MAX_CAPTURED_LEN {
            return Err(self.error(format_args!(
                "pcapng simple packet block at byte {block_start} holds {captured} bytes: \
                 corrupt file"
            )));
        }
        let timestamp_us = match self.format {
            Format::PcapNg {
                last_timestamp_us, ..
            } => last_timestamp_us,
            Format::Pcap { .. } => 0,
        };
        self.finish_packet(
            block_start,
            block_len,
            big_endian,
            interface,
            captured,
            room - captured,
            wire_len,
            timestamp_us,
            out,
        )
    }

    /// Reads (or skips) a packet's data, the rest of its block and the trailer.
    #[allow(clippy::too_many_arguments)]
    fn finish_packet(
        &mut self,
        block_start: u64,
        block_len: usize,
        big_endian: bool,
        interface: Interface,
        captured: usize,
        rest: usize,
        wire_len: u32,
        timestamp_us: u64,
        out: Option<&mut Vec<u8>>,
    ) -> Result<Step, SourceError> {
        let ethernet = u32::from(interface.link_type) == LINKTYPE_ETHERNET;
        let start = out.as_ref().map_or(0, |buf| buf.len());
        let kept = if ethernet { out } else { None };
        let data_complete = self.take(captured, kept)?;
        if !data_complete || !self.take(rest, None)? {
            return Ok(self.truncated_tail());
        }
        if let Some(step) = self.read_trailer(block_start, block_len, big_endian)? {
            // The data was read but the block is cut: drop the packet with the tail.
            return Ok(step);
        }
        if !ethernet {
            self.stats.skipped_packets += 1;
            return Ok(Step::Nothing);
        }
        if let Format::PcapNg {
            last_timestamp_us, ..
        } = &mut self.format
        {
            *last_timestamp_us = timestamp_us;
        }
        Ok(self.deliver(RecordMeta {
            start,
            captured,
            wire_len: wire_len.max(captured as u32),
            timestamp_us,
        }))
    }
}

/// Parses an interface description block's body (after type and length, trailer included).
fn parse_interface(body: &[u8], big_endian: bool) -> Interface {
    let mut interface = Interface {
        link_type: u16_at(body, 0, big_endian),
        snaplen: u32_at(body, 4, big_endian),
        resolution: TsResolution::Decimal(6),
        offset_secs: 0,
    };
    // Options run from byte 8 to the trailer; a malformed option list ends the walk.
    let options_end = body.len() - 4;
    let mut at = 8;
    while at + 4 <= options_end {
        let code = u16_at(body, at, big_endian);
        let len = usize::from(u16_at(body, at + 2, big_endian));
        let value = at + 4;
        if code == PCAPNG_OPT_END || value + len > options_end {
            break;
        }
        match (code, len) {
            (PCAPNG_IF_TSRESOL, 1) => {
                interface.resolution = TsResolution::from_option(body[value]);
            }
            (PCAPNG_IF_TSOFFSET, 8) => {
                let mut raw = [0u8; 8];
                raw.copy_from_slice(&body[value..value + 8]);
                interface.offset_secs = if big_endian {
                    i64::from_be_bytes(raw)
                } else {
                    i64::from_le_bytes(raw)
                };
            }
            _ => {}
        }
        at = value + len.div_ceil(4) * 4;
    }
    interface
}

/// The native capture file reader: a [`PacketSource`] over a pcap or pcapng file.
///
/// Records lying whole in the 1 MB read buffer (classic pcap records, pcapng packet
/// blocks) are lent to the sink in place. The rest (a record split across reads, pcapng
/// section and interface blocks, simple packet blocks, anything malformed) takes the
/// copying path, which owns every error and end-of-file rule and copies packets into one
/// reusable burst buffer, so once that has grown to the largest burst the reader allocates
/// nothing.
pub struct FileSource {
    reader: Reader,
    port: u16,
    burst: Vec<u8>,
    stats: SourceStats,
    /// An error met after part of a burst was read; returned by the next poll.
    pending_error: Option<SourceError>,
    /// The first packet, read ahead by [`FileSource::first_timestamp_us`]; its bytes start
    /// `burst`, and the next poll delivers it.
    lookahead: Option<RecordMeta>,
    /// Bytes of the file consumed, published after each burst ([`FileSource::bytes_read`]).
    bytes_read: Option<Arc<AtomicU64>>,
    ended: bool,
}

impl std::fmt::Debug for FileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSource")
            .field("path", &self.reader.path)
            .field("port", &self.port)
            .field("file_stats", &self.reader.stats)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl FileSource {
    /// Opens a capture and reads its file header; packets are stamped with input `port`.
    pub fn open(path: &Path, port: u16) -> Result<FileSource, SourceError> {
        Ok(FileSource {
            reader: Reader::open(path)?,
            port,
            burst: Vec::new(),
            stats: SourceStats::default(),
            pending_error: None,
            lookahead: None,
            bytes_read: None,
            ended: false,
        })
    }

    /// Reads the whole file without keeping packet data: what a read would deliver.
    pub fn scan(path: &Path) -> Result<FileStats, SourceError> {
        let mut reader = Reader::open(path)?;
        loop {
            if let Step::End = reader.step(None)? {
                return Ok(reader.stats);
            }
        }
    }

    /// How many packets a read of the file delivers (whole Ethernet packets; a cut record
    /// at the end is not counted). A DPDK replay uses it to know when the pcap driver,
    /// which gives no end-of-file signal, has delivered the whole file.
    pub fn count_packets(path: &Path) -> Result<u64, SourceError> {
        Ok(Self::scan(path)?.packets)
    }

    /// The file being read.
    pub fn path(&self) -> &Path {
        &self.reader.path
    }

    /// Pcap or pcapng.
    pub fn format(&self) -> CaptureFormat {
        self.reader.stats.format
    }

    /// What the reader has found so far.
    pub fn file_stats(&self) -> FileStats {
        self.reader.stats
    }

    /// The file's size in bytes when it was opened; None when it is not a regular file.
    pub fn file_len(&self) -> Option<u64> {
        self.reader.file_len
    }

    /// The timestamp of the file's first packet (microseconds since the epoch), None when
    /// the file holds none: where a replay's clock starts. Before the first poll it reads
    /// ahead just that packet and keeps it for the next poll, so the file is still read
    /// once; an error here is the file's first error, and the next poll returns it again
    /// (nothing was delivered before it).
    pub fn first_timestamp_us(&mut self) -> Result<Option<u64>, SourceError> {
        if self.reader.stats.packets == 0 && !self.ended {
            self.burst.clear();
            loop {
                match self.reader.step(Some(&mut self.burst)) {
                    Ok(Step::Packet(meta)) => {
                        self.lookahead = Some(meta);
                        break;
                    }
                    Ok(Step::Nothing) => {}
                    Ok(Step::End) => {
                        self.ended = true;
                        break;
                    }
                    Err(err) => {
                        let copy = SourceError::new(err.to_string());
                        self.pending_error = Some(err);
                        return Err(copy);
                    }
                }
            }
        }
        Ok(self.reader.stats.first_timestamp_us)
    }

    /// A counter of the file's bytes consumed so far, stored after every burst: with
    /// [`FileSource::file_len`], a replay shows its progress without counting the packets
    /// first (which would read the file twice).
    pub fn bytes_read(&mut self) -> Arc<AtomicU64> {
        let position = self.reader.position;
        self.bytes_read
            .get_or_insert_with(|| Arc::new(AtomicU64::new(position)))
            .clone()
    }
}

impl FileSource {
    /// The fast path: lends the sink up to a burst of packets whose records lie whole in
    /// the read buffer, without copying them out. Returns 0 when no packet was lent (end
    /// of file, a record split across reads, a block the copying path must read, a record
    /// that cannot be right): the copying path then handles that record, with its errors
    /// and end-of-file rules.
    fn poll_buffered(&mut self, sink: &mut dyn FnMut(&[Packet<'_>])) -> Result<usize, SourceError> {
        // One copy of each loop per byte order (and time unit), so a record's decoding has
        // no branches.
        match self.reader.format {
            Format::Pcap {
                big_endian: false,
                nanos: false,
            } => self.poll_buffered_pcap::<false, false>(sink),
            Format::Pcap {
                big_endian: false,
                nanos: true,
            } => self.poll_buffered_pcap::<false, true>(sink),
            Format::Pcap {
                big_endian: true,
                nanos: false,
            } => self.poll_buffered_pcap::<true, false>(sink),
            Format::Pcap {
                big_endian: true,
                nanos: true,
            } => self.poll_buffered_pcap::<true, true>(sink),
            Format::PcapNg {
                big_endian: false, ..
            } => self.poll_buffered_pcapng::<false>(sink),
            Format::PcapNg {
                big_endian: true, ..
            } => self.poll_buffered_pcapng::<true>(sink),
        }
    }

    fn poll_buffered_pcap<const BIG_ENDIAN: bool, const NANOS: bool>(
        &mut self,
        sink: &mut dyn FnMut(&[Packet<'_>]),
    ) -> Result<usize, SourceError> {
        if let Err(err) = self.reader.input.fill_buf() {
            return Err(self.reader.io_error(&err));
        }
        let Reader {
            input,
            position,
            stats: file_stats,
            ..
        } = &mut self.reader;
        let buffered = input.buffer();
        let mut packets = [Packet::default(); MAX_BURST];
        let mut count = 0;
        let mut used = 0;
        let mut wire_bytes = 0;
        let mut snapped = 0;
        while count < MAX_BURST {
            let Some(header) = buffered.get(used..used + 16) else {
                break;
            };
            let record = PcapRecordHeader::read(header, BIG_ENDIAN, NANOS);
            let captured = record.captured;
            if captured > MAX_CAPTURED_LEN {
                break;
            }
            let Some(data) = buffered.get(used + 16..used + 16 + captured) else {
                break;
            };
            packets[count] = Packet {
                data,
                wire_len: record.wire_len,
                timestamp_us: record.timestamp_us,
                port: self.port,
            };
            wire_bytes += u64::from(record.wire_len);
            snapped += u64::from((captured as u64) < u64::from(record.wire_len));
            used += 16 + captured;
            count += 1;
        }
        if count > 0 {
            file_stats.count_burst(count as u64, wire_bytes, snapped, packets[0].timestamp_us);
            self.stats.rx_packets += count as u64;
            self.stats.rx_bytes += wire_bytes;
            sink(&packets[..count]);
        }
        input.consume(used);
        *position += used as u64;
        Ok(count)
    }

    /// Pcapng's fast path: enhanced and obsolete packet blocks are lent in place, other
    /// blocks that change nothing (statistics, name resolution, custom) are stepped over.
    /// Section and interface blocks (they change how what follows is read), simple packet
    /// blocks (rare) and any block the copying path would refuse end the walk there.
    fn poll_buffered_pcapng<const BIG_ENDIAN: bool>(
        &mut self,
        sink: &mut dyn FnMut(&[Packet<'_>]),
    ) -> Result<usize, SourceError> {
        // Interface, timestamp (high, low), captured length, original length, then data.
        const DATA_AT: usize = 8 + 20;
        if let Err(err) = self.reader.input.fill_buf() {
            return Err(self.reader.io_error(&err));
        }
        let Reader {
            input,
            position,
            stats: file_stats,
            format,
            ..
        } = &mut self.reader;
        let Format::PcapNg {
            interfaces,
            last_timestamp_us,
            ..
        } = format
        else {
            return Ok(0);
        };
        let buffered = input.buffer();
        let mut packets = [Packet::default(); MAX_BURST];
        let mut count = 0;
        let mut used = 0;
        let mut wire_bytes = 0;
        let mut snapped = 0;
        let mut skipped = 0;
        while count < MAX_BURST {
            let Some(head) = buffered.get(used..used + 8) else {
                break;
            };
            let block_type = u32_at(head, 0, BIG_ENDIAN);
            let block_len = u32_at(head, 4, BIG_ENDIAN) as usize;
            if matches!(block_type, PCAPNG_SHB | PCAPNG_IDB | PCAPNG_SPB)
                || block_len < 12
                || !block_len.is_multiple_of(4)
            {
                break;
            }
            let Some(block) = buffered.get(used..used + block_len) else {
                break;
            };
            if u32_at(block, block_len - 4, BIG_ENDIAN) as usize != block_len {
                break;
            }
            if matches!(block_type, PCAPNG_EPB | PCAPNG_OPB) {
                if block_len < DATA_AT + 4 {
                    break;
                }
                let interface_id = if block_type == PCAPNG_OPB {
                    usize::from(u16_at(block, 8, BIG_ENDIAN))
                } else {
                    u32_at(block, 8, BIG_ENDIAN) as usize
                };
                let ticks = (u64::from(u32_at(block, 12, BIG_ENDIAN)) << 32)
                    | u64::from(u32_at(block, 16, BIG_ENDIAN));
                let captured = u32_at(block, 20, BIG_ENDIAN) as usize;
                if captured > MAX_CAPTURED_LEN || captured > block_len - DATA_AT - 4 {
                    break;
                }
                let Some(interface) = interfaces.get(interface_id) else {
                    break;
                };
                if u32::from(interface.link_type) != LINKTYPE_ETHERNET {
                    skipped += 1;
                } else {
                    let timestamp_us = interface.timestamp_us(ticks);
                    let wire_len = u32_at(block, 24, BIG_ENDIAN).max(captured as u32);
                    packets[count] = Packet {
                        data: &block[DATA_AT..DATA_AT + captured],
                        wire_len,
                        timestamp_us,
                        port: self.port,
                    };
                    *last_timestamp_us = timestamp_us;
                    wire_bytes += u64::from(wire_len);
                    snapped += u64::from((captured as u64) < u64::from(wire_len));
                    count += 1;
                }
            }
            used += block_len;
        }
        file_stats.skipped_packets += skipped;
        if count > 0 {
            file_stats.count_burst(count as u64, wire_bytes, snapped, packets[0].timestamp_us);
            self.stats.rx_packets += count as u64;
            self.stats.rx_bytes += wire_bytes;
            sink(&packets[..count]);
        }
        input.consume(used);
        *position += used as u64;
        Ok(count)
    }

    fn poll_copying(
        &mut self,
        sink: &mut dyn FnMut(&[Packet<'_>]),
    ) -> Result<BurstStatus, SourceError> {
        if let Some(err) = self.pending_error.take() {
            self.ended = true;
            return Err(err);
        }
        if self.ended {
            return Ok(BurstStatus::Ended);
        }
        let mut metas = [RecordMeta::default(); MAX_BURST];
        let mut count = 0;
        if let Some(first) = self.lookahead.take() {
            // Its bytes start the burst buffer; the rest of the burst goes after them.
            metas[0] = first;
            count = 1;
        } else {
            match self.poll_buffered(sink) {
                Ok(0) => {}
                Ok(count) => return Ok(BurstStatus::Delivered(count)),
                Err(err) => {
                    self.ended = true;
                    return Err(err);
                }
            }
            self.burst.clear();
        }
        while count < MAX_BURST {
            match self.reader.step(Some(&mut self.burst)) {
                Ok(Step::Packet(meta)) => {
                    metas[count] = meta;
                    count += 1;
                }
                Ok(Step::Nothing) => {}
                Ok(Step::End) => {
                    self.ended = true;
                    break;
                }
                Err(err) if count == 0 => {
                    self.ended = true;
                    return Err(err);
                }
                Err(err) => {
                    self.pending_error = Some(err);
                    break;
                }
            }
        }
        if count == 0 {
            return Ok(BurstStatus::Ended);
        }
        let mut packets = [Packet::default(); MAX_BURST];
        for (packet, meta) in packets.iter_mut().zip(&metas[..count]) {
            *packet = Packet {
                data: &self.burst[meta.start..meta.start + meta.captured],
                wire_len: meta.wire_len,
                timestamp_us: meta.timestamp_us,
                port: self.port,
            };
            self.stats.rx_packets += 1;
            self.stats.rx_bytes += u64::from(meta.wire_len);
        }
        sink(&packets[..count]);
        Ok(BurstStatus::Delivered(count))
    }
}

impl PacketSource for FileSource {
    fn poll_burst(
        &mut self,
        sink: &mut dyn FnMut(&[Packet<'_>]),
    ) -> Result<BurstStatus, SourceError> {
        let status = self.poll_copying(sink);
        if let Some(bytes_read) = &self.bytes_read {
            bytes_read.store(self.reader.position, Ordering::Relaxed);
        }
        status
    }

    fn stats(&self) -> SourceStats {
        self.stats
    }
}
