//! The native capture reader against files written by PcapWriter, by hand per the pcap and
//! pcapng specifications, and (when installed) by Wireshark's editcap.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use probe::pcap::{CaptureFormat, FileSource, PcapWriter};
use probe::synth::{TrafficGenerator, TrafficSpec};
use probe::{BurstStatus, MAX_BURST, PacketSource, SourceError};

/// A packet as delivered, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Owned {
    data: Vec<u8>,
    wire_len: u32,
    timestamp_us: u64,
    port: u16,
}

/// A file under the system temp dir, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str) -> TempFile {
        let path =
            std::env::temp_dir().join(format!("tapflow-pcap-reader-{}-{name}", std::process::id()));
        TempFile(path)
    }

    fn with_bytes(name: &str, bytes: &[u8]) -> TempFile {
        let file = TempFile::new(name);
        fs::write(&file.0, bytes).unwrap();
        file
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Reads a whole source, checking burst sizes, and returns the packets.
fn read_all(source: &mut FileSource) -> Result<Vec<Owned>, SourceError> {
    let mut packets = Vec::new();
    loop {
        let mut delivered = 0;
        let status = source.poll_burst(&mut |burst| {
            delivered = burst.len();
            assert!(!burst.is_empty() && burst.len() <= MAX_BURST);
            packets.extend(burst.iter().map(|p| Owned {
                data: p.data.to_vec(),
                wire_len: p.wire_len,
                timestamp_us: p.timestamp_us,
                port: p.port,
            }));
        })?;
        match status {
            BurstStatus::Delivered(n) => assert_eq!(n, delivered),
            BurstStatus::Ended => {
                assert_eq!(delivered, 0, "an ended poll delivers nothing");
                return Ok(packets);
            }
        }
    }
}

fn read_path(path: &Path) -> Vec<Owned> {
    read_all(&mut FileSource::open(path, 0).unwrap()).unwrap()
}

/// Synthetic frames with timestamps.
fn sample_frames(count: usize) -> Vec<(u64, Vec<u8>)> {
    let spec = TrafficSpec {
        // 50 flows of 10 packets, or as many more flows as `count` needs.
        flows: (count / 10 + 1).max(50) as u32,
        packets_per_flow: 10,
        arp_share: 0.05,
        include_noise: true,
        ..TrafficSpec::default()
    };
    let mut generator = TrafficGenerator::new(&spec);
    let mut frames = Vec::new();
    let mut frame = Vec::new();
    while frames.len() < count {
        let timestamp = generator.next_frame(&mut frame).expect("enough frames");
        frames.push((timestamp, frame.clone()));
    }
    frames
}

fn write_classic(name: &str, frames: &[(u64, Vec<u8>)]) -> TempFile {
    let file = TempFile::new(name);
    let mut writer = PcapWriter::new(fs::File::create(file.path()).unwrap()).unwrap();
    for (timestamp, frame) in frames {
        writer.write_packet(*timestamp, frame).unwrap();
    }
    writer.into_inner().unwrap();
    file
}

fn expected(frames: &[(u64, Vec<u8>)], port: u16) -> Vec<Owned> {
    frames
        .iter()
        .map(|(timestamp, data)| Owned {
            data: data.clone(),
            wire_len: data.len() as u32,
            timestamp_us: *timestamp,
            port,
        })
        .collect()
}

#[test]
fn round_trip_with_pcap_writer() {
    let frames = sample_frames(300);
    let file = write_classic("round-trip.pcap", &frames);
    let mut source = FileSource::open(file.path(), 7).unwrap();
    assert_eq!(source.format(), CaptureFormat::Pcap);
    let packets = read_all(&mut source).unwrap();
    assert_eq!(packets, expected(&frames, 7));
    // Ended stays ended.
    assert_eq!(
        source
            .poll_burst(&mut |_| panic!("no more packets"))
            .unwrap(),
        BurstStatus::Ended
    );

    let stats = source.stats();
    assert_eq!(stats.rx_packets, 300);
    let bytes: usize = frames.iter().map(|(_, f)| f.len()).sum();
    assert_eq!(stats.rx_bytes, bytes as u64);
    let file_stats = source.file_stats();
    assert_eq!(file_stats.packets, 300);
    assert!(!file_stats.truncated_tail);
    assert_eq!(file_stats.skipped_packets, 0);
    assert_eq!(FileSource::count_packets(file.path()).unwrap(), 300);
    assert_eq!(FileSource::scan(file.path()).unwrap(), file_stats);
}

#[test]
fn records_split_across_read_buffers_arrive_whole_and_in_order() {
    // Several MB of frames of every length from 14 to 1514 bytes: records straddle the
    // reader's 1 MB buffer again and again, so the in-place path hands over to the copying
    // one and back; the stream must be exactly what was written, in whole bursts.
    let frames: Vec<(u64, Vec<u8>)> = (0..6000u64)
        .map(|i| {
            let len = 14 + (i as usize * 7919) % 1501;
            let frame: Vec<u8> = (0..len).map(|b| (b as u64 * 31 + i) as u8).collect();
            (1_700_000_000_000_000 + i * 13, frame)
        })
        .collect();
    let file = write_classic("split-records.pcap", &frames);
    assert!(fs::metadata(file.path()).unwrap().len() > 4 << 20);
    let mut source = FileSource::open(file.path(), 3).unwrap();
    let mut bursts = 0;
    let mut packets = Vec::new();
    while let BurstStatus::Delivered(_) = source
        .poll_burst(&mut |burst| {
            bursts += 1;
            packets.extend(burst.iter().map(|p| Owned {
                data: p.data.to_vec(),
                wire_len: p.wire_len,
                timestamp_us: p.timestamp_us,
                port: p.port,
            }));
        })
        .unwrap()
    {}
    assert_eq!(packets, expected(&frames, 3));
    // Mostly whole bursts: a split record costs at most one short burst per buffer.
    assert!(bursts <= 6000 / MAX_BURST + 12, "{bursts} bursts");
    assert_eq!(source.file_stats().packets, 6000);
    assert_eq!(FileSource::scan(file.path()).unwrap(), source.file_stats());
}

/// Classic pcap written by hand: either byte order, either timestamp precision.
fn classic_by_hand(
    big_endian: bool,
    nanos: bool,
    link_type: u32,
    records: &[(u32, u32, &[u8], u32)],
) -> Vec<u8> {
    let u16b = |v: u16| {
        if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let u32b = |v: u32| {
        if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let magic = if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 };
    let mut out = Vec::new();
    out.extend_from_slice(&u32b(magic));
    out.extend_from_slice(&u16b(2));
    out.extend_from_slice(&u16b(4));
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&u32b(65535));
    out.extend_from_slice(&u32b(link_type));
    for (secs, fraction, data, wire_len) in records {
        out.extend_from_slice(&u32b(*secs));
        out.extend_from_slice(&u32b(*fraction));
        out.extend_from_slice(&u32b(data.len() as u32));
        out.extend_from_slice(&u32b(*wire_len));
        out.extend_from_slice(data);
    }
    out
}

#[test]
fn classic_pcap_in_both_byte_orders_and_precisions() {
    let frame_a = [0xaa; 60];
    let frame_b = [0xbb; 42];
    for big_endian in [false, true] {
        for nanos in [false, true] {
            let fraction = if nanos { 123_456_789 } else { 123_456 };
            let bytes = classic_by_hand(
                big_endian,
                nanos,
                1,
                &[
                    (1_700_000_000, fraction, &frame_a, 60),
                    (1_700_000_001, 0, &frame_b, 1500),
                ],
            );
            let file = TempFile::with_bytes(&format!("classic-{big_endian}-{nanos}.pcap"), &bytes);
            let packets = read_path(file.path());
            assert_eq!(packets.len(), 2);
            assert_eq!(packets[0].data, frame_a);
            assert_eq!(packets[0].timestamp_us, 1_700_000_000_123_456);
            assert_eq!(packets[1].data, frame_b);
            assert_eq!(
                packets[1].wire_len, 1500,
                "the original length, not the captured"
            );
            assert_eq!(packets[1].timestamp_us, 1_700_000_001_000_000);
            let stats = FileSource::scan(file.path()).unwrap();
            assert_eq!((stats.packets, stats.snapped_packets), (2, 1));
        }
    }
}

#[test]
fn classic_pcap_of_another_link_type_is_refused() {
    let bytes = classic_by_hand(false, false, 113, &[(1, 0, &[0u8; 20], 20)]);
    let file = TempFile::with_bytes("sll.pcap", &bytes);
    let err = FileSource::open(file.path(), 0).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: link type 113 (LINUX_SLL) is not supported: tapflow reads Ethernet captures \
             (link type 1)",
            file.path().display()
        )
    );
    // Bits above the low 16 (FCS flags) do not change the link type.
    let bytes = classic_by_hand(false, false, 0x1000_0001, &[(1, 0, &[0u8; 20], 20)]);
    let file = TempFile::with_bytes("fcs.pcap", &bytes);
    assert_eq!(read_path(file.path()).len(), 1);
}

/// A pcapng file written block by block, per draft-ietf-opsawg-pcapng.
struct PcapNg {
    big_endian: bool,
    bytes: Vec<u8>,
}

impl PcapNg {
    fn new() -> PcapNg {
        PcapNg {
            big_endian: false,
            bytes: Vec::new(),
        }
    }

    fn u16b(&self, v: u16) -> [u8; 2] {
        if self.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }

    fn u32b(&self, v: u32) -> [u8; 4] {
        if self.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }

    fn block(&mut self, block_type: u32, body: &[u8]) {
        let padded = body.len().div_ceil(4) * 4;
        let len = (12 + padded) as u32;
        let (t, l) = (self.u32b(block_type), self.u32b(len));
        self.bytes.extend_from_slice(&t);
        self.bytes.extend_from_slice(&l);
        self.bytes.extend_from_slice(body);
        self.bytes.resize(self.bytes.len() + padded - body.len(), 0);
        self.bytes.extend_from_slice(&l);
    }

    fn options(&self, options: &[(u16, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (code, value) in options {
            out.extend_from_slice(&self.u16b(*code));
            out.extend_from_slice(&self.u16b(value.len() as u16));
            out.extend_from_slice(value);
            out.resize(out.len().div_ceil(4) * 4, 0);
        }
        if !options.is_empty() {
            out.extend_from_slice(&[0; 4]);
        }
        out
    }

    fn section(&mut self, big_endian: bool) {
        self.big_endian = big_endian;
        let mut body = Vec::new();
        body.extend_from_slice(&self.u32b(0x1a2b_3c4d));
        body.extend_from_slice(&self.u16b(1));
        body.extend_from_slice(&self.u16b(0));
        body.extend_from_slice(&[0xff; 8]);
        let options = self.options(&[(4, b"tapflow test")]);
        body.extend_from_slice(&options);
        self.block(0x0a0d_0d0a, &body);
    }

    fn interface(&mut self, link_type: u16, snaplen: u32, options: &[(u16, &[u8])]) {
        let mut body = Vec::new();
        body.extend_from_slice(&self.u16b(link_type));
        body.extend_from_slice(&[0, 0]);
        body.extend_from_slice(&self.u32b(snaplen));
        body.extend_from_slice(&self.options(options));
        self.block(1, &body);
    }

    fn enhanced(&mut self, interface: u32, ticks: u64, data: &[u8], wire_len: u32) {
        let mut body = Vec::new();
        body.extend_from_slice(&self.u32b(interface));
        body.extend_from_slice(&self.u32b((ticks >> 32) as u32));
        body.extend_from_slice(&self.u32b(ticks as u32));
        body.extend_from_slice(&self.u32b(data.len() as u32));
        body.extend_from_slice(&self.u32b(wire_len));
        body.extend_from_slice(data);
        body.resize(body.len().div_ceil(4) * 4, 0);
        // An epb_flags option, to be skipped.
        body.extend_from_slice(&self.options(&[(2, &[0, 0, 0, 1])]));
        self.block(6, &body);
    }

    fn simple(&mut self, data: &[u8]) {
        let mut body = self.u32b(data.len() as u32).to_vec();
        body.extend_from_slice(data);
        self.block(3, &body);
    }
}

fn frame(fill: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| fill.wrapping_add(i as u8)).collect()
}

/// Two sections (little then big endian), nanosecond and binary timestamp resolutions, a
/// non-Ethernet interface, a simple packet block and blocks the reader must skip.
fn handmade_pcapng() -> (Vec<u8>, Vec<Owned>) {
    let mut ng = PcapNg::new();
    let mut expected = Vec::new();
    let mut push = |data: Vec<u8>, wire_len: u32, timestamp_us: u64| {
        expected.push(Owned {
            data,
            wire_len,
            timestamp_us,
            port: 3,
        });
    };
    ng.section(false);
    ng.interface(1, 0, &[(2, b"eth0"), (9, &[9])]);
    ng.interface(113, 0, &[]);
    ng.enhanced(0, 1_700_000_000_123_456_789, &frame(1, 60), 60);
    push(frame(1, 60), 60, 1_700_000_000_123_456);
    // Three bytes of padding, and a snap length shorter than the wire.
    ng.enhanced(0, 1_700_000_000_200_000_999, &frame(2, 61), 1514);
    push(frame(2, 61), 1514, 1_700_000_000_200_000);
    // On the Linux cooked interface: skipped and counted.
    ng.enhanced(1, 1_700_000_000_300_000_000, &frame(3, 44), 44);
    // Blocks to skip: name resolution, interface statistics, a custom block (0x0bad) and
    // a type no specification defines.
    ng.block(4, &[0; 8]);
    ng.block(5, &[0; 20]);
    ng.block(0x0000_0bad, &[1, 2, 3, 4, 5]);
    ng.block(0x0000_0099, &[9; 7]);
    // A simple packet block has no timestamp: it takes the previous delivered packet's.
    ng.simple(&frame(4, 64));
    push(frame(4, 64), 64, 1_700_000_000_200_000);

    ng.section(true);
    // 2^-10 s units, and an offset of 1000 s.
    ng.interface(1, 0, &[(9, &[0x80 | 10]), (14, &1000i64.to_be_bytes())]);
    ng.interface(1, 0, &[]);
    ng.enhanced(0, 2048 * 1024, &frame(5, 70), 70);
    push(frame(5, 70), 70, 2_048_000_000 + 1_000_000_000);
    // Default resolution: microseconds.
    ng.enhanced(1, 1_700_000_001_000_001, &frame(6, 128), 128);
    push(frame(6, 128), 128, 1_700_000_001_000_001);
    (ng.bytes, expected)
}

#[test]
fn reads_a_handmade_pcapng() {
    let (bytes, expected) = handmade_pcapng();
    let file = TempFile::with_bytes("handmade.pcapng", &bytes);
    let mut source = FileSource::open(file.path(), 3).unwrap();
    assert_eq!(source.format(), CaptureFormat::PcapNg);
    assert_eq!(read_all(&mut source).unwrap(), expected);
    let stats = source.file_stats();
    assert_eq!(stats.packets, 5);
    assert_eq!(stats.skipped_packets, 1);
    assert_eq!(stats.snapped_packets, 1);
    assert!(!stats.truncated_tail);
    assert_eq!(FileSource::count_packets(file.path()).unwrap(), 5);
}

#[test]
fn truncated_tails_end_cleanly() {
    let frames = sample_frames(10);
    let whole = write_classic("whole.pcap", &frames);
    let bytes = fs::read(whole.path()).unwrap();
    let last_len = frames[9].1.len();
    // Inside the last record's header, and inside its data.
    for cut in [last_len + 16 - 5, 3] {
        let file = TempFile::with_bytes(&format!("cut-{cut}.pcap"), &bytes[..bytes.len() - cut]);
        let mut source = FileSource::open(file.path(), 0).unwrap();
        assert_eq!(read_all(&mut source).unwrap(), expected(&frames[..9], 0));
        assert!(source.file_stats().truncated_tail);
        assert_eq!(FileSource::count_packets(file.path()).unwrap(), 9);
    }
    // Cut exactly between records: nothing is truncated.
    let file = TempFile::with_bytes("cut-clean.pcap", &bytes[..bytes.len() - last_len - 16]);
    let mut source = FileSource::open(file.path(), 0).unwrap();
    assert_eq!(read_all(&mut source).unwrap().len(), 9);
    assert!(!source.file_stats().truncated_tail);

    // pcapng: every cut inside the last block (the big-endian section's second packet).
    let (bytes, expected) = handmade_pcapng();
    let last_block = 12 + 20 + 128 + 12;
    for cut in 1..last_block {
        let file = TempFile::with_bytes("cut.pcapng", &bytes[..bytes.len() - cut]);
        let mut source = FileSource::open(file.path(), 3).unwrap();
        assert_eq!(read_all(&mut source).unwrap(), expected[..4], "cut {cut}");
        assert!(source.file_stats().truncated_tail, "cut {cut}");
    }
}

#[test]
fn missing_file() {
    let path = Path::new("/nonexistent/tapflow/trace.pcap");
    let message = "cannot open /nonexistent/tapflow/trace.pcap: No such file or directory";
    assert_eq!(FileSource::open(path, 0).unwrap_err().to_string(), message);
    assert_eq!(
        FileSource::count_packets(path).unwrap_err().to_string(),
        message
    );
}

#[test]
fn not_a_capture() {
    let file = TempFile::with_bytes("garbage.pcap", b"<html><body>not a capture</body></html>");
    assert_eq!(
        FileSource::open(file.path(), 0).unwrap_err().to_string(),
        format!(
            "{} is not a pcap or pcapng file (magic 0x3c68746d)",
            file.path().display()
        )
    );
    let empty = TempFile::with_bytes("empty.pcap", b"");
    assert_eq!(
        FileSource::open(empty.path(), 0).unwrap_err().to_string(),
        format!(
            "{} is not a pcap or pcapng file (it is empty)",
            empty.path().display()
        )
    );
    let short = TempFile::with_bytes("short.pcap", &[0xd4, 0xc3]);
    assert!(
        FileSource::open(short.path(), 0)
            .unwrap_err()
            .to_string()
            .ends_with("is not a pcap or pcapng file (only 2 bytes)")
    );
    // The right magic and nothing else.
    let header_only = TempFile::with_bytes("magic-only.pcap", &0xa1b2_c3d4u32.to_le_bytes());
    assert!(
        FileSource::open(header_only.path(), 0)
            .unwrap_err()
            .to_string()
            .ends_with("truncated pcap file header")
    );
}

#[test]
fn corrupt_records_are_errors_after_the_good_packets() {
    let frame_a = [0x11u8; 60];
    let mut bytes = classic_by_hand(false, false, 1, &[(1, 0, &frame_a, 60)]);
    // A record claiming 10 MB of captured data.
    bytes.extend_from_slice(&[0; 8]);
    bytes.extend_from_slice(&10_000_000u32.to_le_bytes());
    bytes.extend_from_slice(&10_000_000u32.to_le_bytes());
    bytes.extend_from_slice(&[0; 100]);
    let file = TempFile::with_bytes("corrupt.pcap", &bytes);
    let mut source = FileSource::open(file.path(), 0).unwrap();
    let mut got = 0;
    assert_eq!(
        source.poll_burst(&mut |burst| got = burst.len()).unwrap(),
        BurstStatus::Delivered(1)
    );
    assert_eq!(got, 1);
    let err = source
        .poll_burst(&mut |_| panic!("nothing more"))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: record at byte 100 claims 10000000 captured bytes (more than 262144): corrupt \
             file",
            file.path().display()
        )
    );
    assert!(FileSource::count_packets(file.path()).is_err());

    // A pcapng block whose trailing length disagrees with its leading length.
    let mut ng = PcapNg::new();
    ng.section(false);
    ng.interface(1, 0, &[]);
    ng.enhanced(0, 1, &frame(1, 60), 60);
    let at = ng.bytes.len() - 4;
    ng.bytes[at] ^= 0x40;
    let file = TempFile::with_bytes("corrupt.pcapng", &ng.bytes);
    let err = FileSource::count_packets(file.path()).unwrap_err();
    assert!(err.to_string().contains("trailing length"), "{err}");

    // A packet on an interface the section never described.
    let mut ng = PcapNg::new();
    ng.section(false);
    ng.enhanced(0, 1, &frame(1, 60), 60);
    let file = TempFile::with_bytes("no-interface.pcapng", &ng.bytes);
    let err = FileSource::count_packets(file.path()).unwrap_err();
    assert!(err.to_string().contains("refers to interface 0"), "{err}");
}

fn editcap() -> Option<&'static str> {
    let found = Command::new("editcap").arg("-h").output().is_ok();
    if !found {
        println!("editcap not installed (Debian: wireshark-common); skipping");
    }
    found.then_some("editcap")
}

/// Wireshark's editcap converts a pcap to pcapng and nanosecond pcap; the reader must see
/// the same packets in every form.
#[test]
fn editcap_conversions_read_identically() {
    let Some(editcap) = editcap() else {
        return;
    };
    let frames = sample_frames(200);
    let original = write_classic("editcap-in.pcap", &frames);
    let reference = read_path(original.path());
    assert_eq!(reference, expected(&frames, 0));
    for (format, expect) in [
        ("pcapng", CaptureFormat::PcapNg),
        ("nsecpcap", CaptureFormat::Pcap),
    ] {
        let converted = TempFile::new(&format!("editcap-out.{format}"));
        let status = Command::new(editcap)
            .args(["-F", format])
            .arg(original.path())
            .arg(converted.path())
            .status()
            .unwrap();
        assert!(status.success(), "editcap -F {format} failed");
        let mut source = FileSource::open(converted.path(), 0).unwrap();
        assert_eq!(source.format(), expect);
        assert_eq!(read_all(&mut source).unwrap(), reference, "{format}");
    }
}

/// tshark (Wireshark) reads the handmade pcapng as the reader does: the file is right by
/// an independent reading of the specification, not only by the reader's.
#[test]
fn tshark_agrees_on_the_handmade_pcapng() {
    if Command::new("tshark").arg("-v").output().is_err() {
        println!("tshark not installed; skipping");
        return;
    }
    let (bytes, expected) = handmade_pcapng();
    let file = TempFile::with_bytes("tshark.pcapng", &bytes);
    let output = Command::new("tshark")
        .arg("-r")
        .arg(file.path())
        .args(["-T", "fields", "-e", "frame.time_epoch", "-e", "frame.len"])
        .args(["-e", "frame.cap_len", "-e", "frame.encap_type"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Ethernet frames with a timestamp (the simple packet block has none).
    let seen: Vec<(u64, u32, usize)> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            if fields.len() != 4 || fields[3] != "1" || fields[0].is_empty() {
                return None;
            }
            let (secs, fraction) = fields[0].split_once('.').unwrap();
            let micros =
                secs.parse::<u64>().unwrap() * 1_000_000 + fraction[..6].parse::<u64>().unwrap();
            Some((
                micros,
                fields[1].parse().unwrap(),
                fields[2].parse().unwrap(),
            ))
        })
        .collect();
    let ours: Vec<(u64, u32, usize)> = expected
        .iter()
        .enumerate()
        // expected[2] came from the simple packet block.
        .filter(|(index, _)| *index != 2)
        .map(|(_, p)| (p.timestamp_us, p.wire_len, p.data.len()))
        .collect();
    assert_eq!(seen, ours);
}

#[test]
fn a_file_source_can_move_to_a_worker_thread() {
    fn boxed_for_a_worker(source: FileSource) -> Box<dyn PacketSource + Send> {
        Box::new(source)
    }
    let frames = sample_frames(5);
    let file = write_classic("send.pcap", &frames);
    let mut source = boxed_for_a_worker(FileSource::open(file.path(), 1).unwrap());
    let packets = std::thread::spawn(move || {
        let mut count = 0;
        while let BurstStatus::Delivered(n) = source.poll_burst(&mut |_| {}).unwrap() {
            count += n;
        }
        count
    })
    .join()
    .unwrap();
    assert_eq!(packets, 5);
}

/// Many pcapng sections in a row, each the handmade one: every kind of block lands on
/// both sides of the 1 MB read buffer's edges, so packet blocks lent in place and the
/// blocks read by copying alternate, and the packets must come out exactly as written.
#[test]
fn pcapng_across_read_buffers_arrives_whole_and_in_order() {
    let (section, expected_once) = handmade_pcapng();
    // About 3.5 MB: the section's length is not a divisor of the buffer's, so the edges fall
    // on every offset of the section.
    let repeats = (3_500_000 / section.len()) + 1;
    let bytes = section.repeat(repeats);
    let file = TempFile::with_bytes("repeated.pcapng", &bytes);
    let mut source = FileSource::open(file.path(), 3).unwrap();
    let got = read_all(&mut source).unwrap();
    let expected: Vec<Owned> = (0..repeats).flat_map(|_| expected_once.clone()).collect();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "packets differ from what was written");
    let stats = source.file_stats();
    assert_eq!(stats.packets, 5 * repeats as u64);
    assert_eq!(stats.skipped_packets, repeats as u64);
    assert_eq!(stats.snapped_packets, repeats as u64);
    assert_eq!(FileSource::scan(file.path()).unwrap(), stats);
}

/// A pcapng written by editcap from a classic pcap of several read buffers delivers the
/// classic file's packets, byte for byte, with the same counts.
#[test]
fn a_large_pcapng_reads_as_its_classic_pcap() {
    let Some(editcap) = editcap() else {
        return;
    };
    let frames = sample_frames(40_000);
    let classic = write_classic("large.pcap", &frames);
    let converted = TempFile::new("large.pcapng");
    let status = Command::new(editcap)
        .args(["-F", "pcapng"])
        .arg(classic.path())
        .arg(converted.path())
        .status()
        .unwrap();
    assert!(status.success(), "editcap -F pcapng failed");
    assert!(fs::metadata(converted.path()).unwrap().len() > 3 << 20);
    let mut classic_source = FileSource::open(classic.path(), 0).unwrap();
    let mut ng_source = FileSource::open(converted.path(), 0).unwrap();
    let from_classic = read_all(&mut classic_source).unwrap();
    let from_ng = read_all(&mut ng_source).unwrap();
    assert_eq!(from_classic.len(), frames.len());
    assert!(from_ng == from_classic, "pcapng packets differ from pcap's");
    assert!(from_classic == expected(&frames, 0));
    let (mut classic_stats, ng_stats) = (classic_source.file_stats(), ng_source.file_stats());
    classic_stats.format = CaptureFormat::PcapNg;
    assert_eq!(ng_stats, classic_stats);
}

/// A corrupt pcapng block after good ones: the good packets are delivered, then the error.
#[test]
fn a_corrupt_pcapng_block_is_an_error_after_the_good_packets() {
    let mut ng = PcapNg::new();
    ng.section(false);
    ng.interface(1, 0, &[]);
    for i in 0..3 {
        ng.enhanced(0, 1_000_000 + i, &frame(i as u8, 60), 60);
    }
    let good = ng.bytes.len();
    ng.enhanced(0, 2_000_000, &frame(9, 60), 60);
    let at = ng.bytes.len() - 4;
    ng.bytes[at] ^= 0x40;
    let file = TempFile::with_bytes("corrupt-after-good.pcapng", &ng.bytes);
    let mut source = FileSource::open(file.path(), 0).unwrap();
    let mut got = 0;
    assert_eq!(
        source.poll_burst(&mut |burst| got = burst.len()).unwrap(),
        BurstStatus::Delivered(3)
    );
    assert_eq!(got, 3);
    let err = source
        .poll_burst(&mut |_| panic!("nothing more"))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: pcapng block at byte {good}: length 104 but trailing length 40: corrupt file",
            file.path().display()
        )
    );
}

/// The first packet's timestamp is known before the first poll, from the same reader,
/// and reading it ahead neither loses nor repeats that packet.
#[test]
fn the_first_timestamp_comes_from_the_reader_as_it_starts() {
    let frames = sample_frames(300);
    let classic = write_classic("first.pcap", &frames);
    let (bytes, handmade) = handmade_pcapng();
    let ng = TempFile::with_bytes("first.pcapng", &bytes);
    for (file, port, expected) in [(&classic, 0, expected(&frames, 0)), (&ng, 3, handmade)] {
        let mut source = FileSource::open(file.path(), port).unwrap();
        assert_eq!(
            source.first_timestamp_us().unwrap(),
            Some(expected[0].timestamp_us)
        );
        // Asking again reads nothing more.
        assert_eq!(
            source.first_timestamp_us().unwrap(),
            Some(expected[0].timestamp_us)
        );
        assert_eq!(read_all(&mut source).unwrap(), expected);
        assert_eq!(FileSource::scan(file.path()).unwrap(), source.file_stats());
        assert_eq!(
            source.file_stats().first_timestamp_us,
            Some(expected[0].timestamp_us)
        );
    }

    // A capture with no packet has no first timestamp, and ends at once.
    let empty = write_classic("first-empty.pcap", &[]);
    let mut source = FileSource::open(empty.path(), 0).unwrap();
    assert_eq!(source.first_timestamp_us().unwrap(), None);
    assert_eq!(read_all(&mut source).unwrap(), vec![]);

    // A first record that cannot be right is the reader's first error, and the poll
    // after it returns it again.
    let mut bytes = classic_by_hand(false, false, 1, &[]);
    bytes.extend_from_slice(&[0; 8]);
    bytes.extend_from_slice(&10_000_000u32.to_le_bytes());
    bytes.extend_from_slice(&10_000_000u32.to_le_bytes());
    let corrupt = TempFile::with_bytes("first-corrupt.pcap", &bytes);
    let mut source = FileSource::open(corrupt.path(), 0).unwrap();
    let first = source.first_timestamp_us().unwrap_err().to_string();
    assert!(first.contains("claims 10000000 captured bytes"), "{first}");
    let polled = source.poll_burst(&mut |_| panic!("no packet")).unwrap_err();
    assert_eq!(polled.to_string(), first);
}

/// Progress without a counting pass: the bytes consumed, published after every burst,
/// climb to the file's size.
#[test]
fn bytes_read_climb_to_the_file_size() {
    for (name, format) in [("progress.pcap", None), ("progress.pcapng", Some("pcapng"))] {
        let frames = sample_frames(30_000);
        let classic = write_classic(name, &frames);
        let file = match format {
            None => classic,
            Some(format) => {
                let Some(editcap) = editcap() else {
                    continue;
                };
                let converted = TempFile::new(&format!("converted-{name}"));
                let status = Command::new(editcap)
                    .args(["-F", format])
                    .arg(classic.path())
                    .arg(converted.path())
                    .status()
                    .unwrap();
                assert!(status.success());
                converted
            }
        };
        let size = fs::metadata(file.path()).unwrap().len();
        let mut source = FileSource::open(file.path(), 0).unwrap();
        assert_eq!(source.file_len(), Some(size));
        let read = source.bytes_read();
        let mut seen = vec![read.load(std::sync::atomic::Ordering::Relaxed)];
        while let BurstStatus::Delivered(_) = source.poll_burst(&mut |_| {}).unwrap() {
            seen.push(read.load(std::sync::atomic::Ordering::Relaxed));
        }
        assert!(
            seen[0] < 4096,
            "{name}: only the file header before the first poll"
        );
        assert!(
            seen.windows(2).all(|w| w[0] <= w[1]),
            "{name}: never backwards"
        );
        assert!(
            seen.iter().any(|&b| b > size / 3 && b < size * 2 / 3),
            "{name}"
        );
        assert_eq!(
            *seen.last().unwrap(),
            size,
            "{name}: the whole file at the end"
        );
    }
}
