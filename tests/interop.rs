//! The interoperability matrix (issue 20): one capture with every frame class (IPv4 and
//! IPv6, TCP handshakes, FIN and RST, DNS, ICMP and ICMPv6, VLAN and QinQ, IPv4 fragments)
//! replayed by tapflow as NetFlow v5, v9 and IPFIX, unsampled and 1-in-10 (`hash:10`), into
//! six independent decoders at once: nfdump's nfcapd, pmacct's nfacctd, the PyPI `netflow`
//! collector and FastNetMon listening on loopback ports of their own, and tshark and
//! libfixbuf's ipfixDump reading the very datagrams a plain socket received.
//!
//! Each decoder's reading is compared with the capture's ground truth (etherparse, not
//! tapflow's parser): per-5-tuple packets and octets, first and last times within 1 ms
//! where the format and the decoder carry them, the sampling rate, ICMP type and code; and
//! any error or warning line a decoder logs fails the test. What a decoder cannot read at
//! all is a quirk documented in docs/COLLECTORS.md and skipped here by name (`Quirk`).
//!
//! With `hash:10` whole flows are selected, so every flow a decoder reports must match the
//! truth exactly (times to the ms, packets and octets raw or scaled by 10), and all
//! decoders must report the same flows.
//!
//! A tool that is not installed is skipped with a NOTICE (scripts/setup.sh installs all).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{
    BackgroundCollector, FiveTuple, FlowTruth, ground_truth_timed, have, scratch_dir, tapflow, text,
};
use probe::pcap::PcapWriter;
use probe::synth::{self, FrameOptions, tcp_flags};

/// The capture's first frame: a whole second plus 123.456 ms, so that times are checked
/// below the second (NetFlow v9's header has whole seconds only).
const T0_US: u64 = 1_700_000_000_123_456;
/// Conversations in the capture; kinds cycle, so every frame class occurs many times.
const CONVERSATIONS: u32 = 90;
/// `--sample hash:SAMPLE` for the sampled half of the matrix.
const SAMPLE: u32 = 10;

// ---- the capture ---------------------------------------------------------------------

struct Capture {
    out: PcapWriter<BufWriter<File>>,
    now_us: u64,
    frame: Vec<u8>,
}

impl Capture {
    /// Writes one frame `step_us` after the previous one.
    fn frame(&mut self, step_us: u64, build: impl FnOnce(&mut Vec<u8>)) {
        self.frame.clear();
        build(&mut self.frame);
        self.out.write_packet(self.now_us, &self.frame).unwrap();
        self.now_us += step_us;
    }
}

fn v4(net: u8, host: u32, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, net, (host >> 8) as u8, host as u8), port)
}

fn v6(net: u16, host: u32, port: u16) -> SocketAddrV6 {
    SocketAddrV6::new(
        Ipv6Addr::new(
            0x2001,
            0xdb8,
            net,
            0,
            0,
            0,
            (host >> 16) as u16,
            host as u16,
        ),
        port,
        0,
        0,
    )
}

fn opts(conversation: u32, payload_len: usize) -> FrameOptions {
    // Every seventh conversation in a VLAN, every seventh (others) QinQ.
    let (vlan, inner_vlan) = match conversation % 7 {
        3 => (Some(100 + conversation as u16), None),
        5 => (Some(200), Some(300 + conversation as u16)),
        _ => (None, None),
    };
    FrameOptions {
        vlan,
        inner_vlan,
        payload_len,
        ..FrameOptions::default()
    }
}

/// An IPv4 UDP datagram of `payload_len` bytes cut into two fragments (the first holds the
/// UDP header and 504 bytes, the second the rest at offset 64).
fn ipv4_fragments(src: SocketAddrV4, dst: SocketAddrV4, payload_len: usize) -> [Vec<u8>; 2] {
    let mut whole = Vec::new();
    let plain = FrameOptions {
        payload_len,
        ..FrameOptions::default()
    };
    synth::eth_ipv4_udp(&mut whole, src, dst, &plain);
    let (eth, rest) = whole.split_at(14);
    let (header, ip_payload) = rest.split_at(20);
    let ip_payload = &ip_payload[..8 + payload_len];
    let piece = |data: &[u8], offset_units: u16, more: bool| {
        let mut h = header.to_vec();
        h[2..4].copy_from_slice(&((20 + data.len()) as u16).to_be_bytes());
        let flags_offset = offset_units | if more { 0x2000 } else { 0 };
        h[6..8].copy_from_slice(&flags_offset.to_be_bytes());
        h[10..12].copy_from_slice(&[0, 0]);
        let mut sum: u32 = h
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        h[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        let mut frame = eth.to_vec();
        frame.extend_from_slice(&h);
        frame.extend_from_slice(data);
        frame.resize(frame.len().max(60), 0);
        frame
    };
    [
        piece(&ip_payload[..512], 0, true),
        piece(&ip_payload[512..], 64, false),
    ]
}

/// Writes the matrix's capture: a lone packet at the first instant, then conversations of
/// nine kinds in turn, 250 µs between frames.
fn write_capture(path: &Path) {
    let file = BufWriter::new(File::create(path).unwrap());
    let mut c = Capture {
        out: PcapWriter::new(file).unwrap(),
        now_us: T0_US,
        frame: Vec::new(),
    };
    let step = 250;
    // A flow that exists only at the capture's first instant (NTP).
    c.frame(step, |f| {
        synth::eth_ipv4_udp(f, v4(1, 9999, 123), v4(2, 9999, 123), &opts(0, 48))
    });
    for i in 0..CONVERSATIONS {
        let port = 20_000 + i as u16;
        let o = |payload| opts(i, payload);
        match i % 9 {
            // TCP over IPv4: handshake, data both ways, FIN from both sides.
            0 => {
                let (cl, sv) = (v4(1, i, port), v4(2, i, 80));
                for (from_client, flags, payload) in [
                    (true, tcp_flags::SYN, 0),
                    (false, tcp_flags::SYN | tcp_flags::ACK, 0),
                    (true, tcp_flags::ACK, 0),
                    (true, tcp_flags::PSH | tcp_flags::ACK, 120),
                    (false, tcp_flags::PSH | tcp_flags::ACK, 900),
                    (true, tcp_flags::FIN | tcp_flags::ACK, 0),
                    (false, tcp_flags::FIN | tcp_flags::ACK, 0),
                ] {
                    let (a, b) = if from_client { (cl, sv) } else { (sv, cl) };
                    c.frame(step, |f| synth::eth_ipv4_tcp(f, a, b, flags, &o(payload)));
                }
            }
            // TCP over IPv6: handshake, data, FIN.
            1 => {
                let (cl, sv) = (v6(1, i, port), v6(2, i, 443));
                for (from_client, flags, payload) in [
                    (true, tcp_flags::SYN, 0),
                    (false, tcp_flags::SYN | tcp_flags::ACK, 0),
                    (true, tcp_flags::ACK, 0),
                    (true, tcp_flags::PSH | tcp_flags::ACK, 300),
                    (false, tcp_flags::FIN | tcp_flags::ACK, 0),
                    (true, tcp_flags::FIN | tcp_flags::ACK, 0),
                ] {
                    let (a, b) = if from_client { (cl, sv) } else { (sv, cl) };
                    c.frame(step, |f| synth::eth_ipv6_tcp(f, a, b, flags, &o(payload)));
                }
            }
            // TCP over IPv4 refused: SYN, RST.
            2 => {
                let (cl, sv) = (v4(1, i, port), v4(2, i, 25));
                c.frame(step, |f| {
                    synth::eth_ipv4_tcp(f, cl, sv, tcp_flags::SYN, &o(0))
                });
                let rst = tcp_flags::RST | tcp_flags::ACK;
                c.frame(step, |f| synth::eth_ipv4_tcp(f, sv, cl, rst, &o(0)));
            }
            // DNS over IPv4 and IPv6: query and answer.
            3 => {
                let (cl, sv) = (v4(1, i, port), v4(2, i, 53));
                c.frame(step, |f| synth::eth_ipv4_udp(f, cl, sv, &o(33)));
                c.frame(step, |f| synth::eth_ipv4_udp(f, sv, cl, &o(120)));
            }
            4 => {
                let (cl, sv) = (v6(1, i, port), v6(2, i, 53));
                c.frame(step, |f| synth::eth_ipv6_udp(f, cl, sv, &o(40)));
                c.frame(step, |f| synth::eth_ipv6_udp(f, sv, cl, &o(200)));
            }
            // ICMP: echo request and reply, then a port unreachable.
            5 => {
                let (cl, sv) = (*v4(1, i, 0).ip(), *v4(2, i, 0).ip());
                c.frame(step, |f| synth::eth_ipv4_icmp(f, cl, sv, 8, 0, &o(56)));
                c.frame(step, |f| synth::eth_ipv4_icmp(f, sv, cl, 0, 0, &o(56)));
                c.frame(step, |f| synth::eth_ipv4_icmp(f, sv, cl, 3, 3, &o(28)));
            }
            // ICMPv6: echo request and reply, then an address unreachable.
            6 => {
                let (cl, sv) = (*v6(1, i, 0).ip(), *v6(2, i, 0).ip());
                c.frame(step, |f| synth::eth_ipv6_icmp(f, cl, sv, 128, 0, &o(56)));
                c.frame(step, |f| synth::eth_ipv6_icmp(f, sv, cl, 129, 0, &o(56)));
                c.frame(step, |f| synth::eth_ipv6_icmp(f, sv, cl, 1, 3, &o(48)));
            }
            // A fragmented IPv4 UDP datagram and its (whole) answer.
            7 => {
                let (cl, sv) = (v4(1, i, port), v4(2, i, 4789));
                for piece in ipv4_fragments(cl, sv, 1200) {
                    c.frame(step, |f| f.extend_from_slice(&piece));
                }
                c.frame(step, |f| synth::eth_ipv4_udp(f, sv, cl, &o(64)));
            }
            // TCP over IPv6 reset mid-way.
            _ => {
                let (cl, sv) = (v6(1, i, port), v6(2, i, 22));
                c.frame(step, |f| {
                    synth::eth_ipv6_tcp(f, cl, sv, tcp_flags::SYN, &o(0))
                });
                let syn_ack = tcp_flags::SYN | tcp_flags::ACK;
                c.frame(step, |f| synth::eth_ipv6_tcp(f, sv, cl, syn_ack, &o(0)));
                c.frame(step, |f| {
                    synth::eth_ipv6_tcp(f, cl, sv, tcp_flags::RST, &o(0))
                });
            }
        }
    }
    c.out.into_inner().unwrap().flush().unwrap();
}

/// The capture and its truth, made once for every test of this file.
fn capture() -> &'static (PathBuf, BTreeMap<FiveTuple, FlowTruth>) {
    static CAPTURE: OnceLock<(PathBuf, BTreeMap<FiveTuple, FlowTruth>)> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let dir = scratch_dir("interop-capture");
        let path = dir.join("classes.pcap");
        write_capture(&path);
        let truth = ground_truth_timed(&path);
        (path, truth)
    })
}

// ---- what a decoder read -------------------------------------------------------------

/// One decoder's reading of one replay, per 5-tuple (records of one 5-tuple summed, first
/// and last the earliest and latest).
#[derive(Debug, Default)]
struct Reading {
    flows: BTreeMap<FiveTuple, Got>,
    /// Sampling intervals the decoder reported (options records, v5 headers, per record).
    sampling: BTreeSet<u64>,
    /// ICMP type << 8 | code from a dedicated field, where the decoder shows one.
    icmp: BTreeMap<FiveTuple, u64>,
    /// Error and warning lines the decoder logged.
    problems: Vec<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Got {
    packets: u64,
    octets: u64,
    first_ms: Option<u64>,
    last_ms: Option<u64>,
}

impl Reading {
    fn add(&mut self, tuple: FiveTuple, packets: u64, octets: u64, times: Option<(u64, u64)>) {
        let g = self.flows.entry(tuple).or_default();
        g.packets += packets;
        g.octets += octets;
        if let Some((first, last)) = times {
            g.first_ms = Some(g.first_ms.map_or(first, |f| f.min(first)));
            g.last_ms = Some(g.last_ms.map_or(last, |l| l.max(last)));
        }
    }
}

/// What a decoder cannot read in a format: documented in docs/COLLECTORS.md.
#[derive(Clone, Copy, Debug, Default)]
struct Quirks {
    /// Reports no flow times (or only whole seconds).
    no_times: bool,
    /// Does not report the sampling rate.
    no_sampling: bool,
    /// Scales packets and octets by the sampling rate it learnt.
    scales: bool,
    /// Shows ICMP (IPv4) flows without type and code (port 0), merging them.
    no_icmp_type: bool,
    /// Places times to the whole second only: compared within a second, not 1 ms.
    seconds_only: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    V5,
    V9,
    Ipfix,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::V5 => "v5",
            Format::V9 => "v9",
            Format::Ipfix => "ipfix",
        }
    }
}

/// The truth as `format` can carry it (v5 has IPv4 only) and the decoder can show it.
fn expected(
    base: &BTreeMap<FiveTuple, FlowTruth>,
    format: Format,
    quirks: Quirks,
) -> BTreeMap<FiveTuple, FlowTruth> {
    let mut truth = base.clone();
    if format == Format::V5 {
        truth.retain(|k, _| k.0.is_ipv4());
    }
    if quirks.no_icmp_type {
        let mut merged: BTreeMap<FiveTuple, FlowTruth> = BTreeMap::new();
        for (mut k, v) in truth {
            if k.4 == 1 {
                k.3 = 0;
            }
            let e = merged.entry(k).or_insert(FlowTruth {
                first_ms: v.first_ms,
                last_ms: v.last_ms,
                ..FlowTruth::default()
            });
            e.packets += v.packets;
            e.octets += v.octets;
            e.first_ms = e.first_ms.min(v.first_ms);
            e.last_ms = e.last_ms.max(v.last_ms);
        }
        truth = merged;
    }
    truth
}

/// Which flows a decoder must show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Every flow of the truth.
    All,
    /// `hash:SAMPLE`: some flows, each whole.
    HashSampled,
    /// A collector that started late: at least half of the flows, each whole.
    FromARefresh,
}

/// Compares one decoder's reading of the matrix's capture with its truth; returns the
/// 5-tuples it reported.
fn check(
    who: &str,
    format: Format,
    sampled: bool,
    quirks: Quirks,
    reading: &Reading,
) -> BTreeSet<FiveTuple> {
    let expect = if sampled {
        Expect::HashSampled
    } else {
        Expect::All
    };
    check_against(&capture().1, who, format, expect, quirks, reading)
}

fn check_against(
    base: &BTreeMap<FiveTuple, FlowTruth>,
    who: &str,
    format: Format,
    expect: Expect,
    quirks: Quirks,
    reading: &Reading,
) -> BTreeSet<FiveTuple> {
    let sampled = expect == Expect::HashSampled;
    let truth = expected(base, format, quirks);
    let mut errors = Vec::new();
    for line in &reading.problems {
        errors.push(format!("logged: {line}"));
    }
    if reading.flows.is_empty() {
        errors.push("decoded no flows".to_string());
    }
    let scale = if sampled && quirks.scales {
        u64::from(SAMPLE)
    } else {
        1
    };
    for (tuple, got) in &reading.flows {
        let Some(want) = truth.get(tuple) else {
            errors.push(format!("unexpected flow {tuple:?}: {got:?}"));
            continue;
        };
        if (got.packets, got.octets) != (want.packets * scale, want.octets * scale) {
            errors.push(format!(
                "{tuple:?}: packets/octets {} / {}, expected {} / {} (x{scale})",
                got.packets, got.octets, want.packets, want.octets
            ));
        }
        if format != Format::V5 && !quirks.no_times {
            let tolerance = if quirks.seconds_only { 999 } else { 1 };
            let close =
                |got: Option<u64>, want: u64| got.is_some_and(|g| g.abs_diff(want) <= tolerance);
            if !close(got.first_ms, want.first_ms) || !close(got.last_ms, want.last_ms) {
                errors.push(format!(
                    "{tuple:?}: first/last {:?} / {:?}, expected {} / {} (within {tolerance} ms)",
                    got.first_ms, got.last_ms, want.first_ms, want.last_ms
                ));
            }
        }
    }
    match expect {
        Expect::All => {
            for tuple in truth.keys() {
                if !reading.flows.contains_key(tuple) {
                    errors.push(format!("missing flow {tuple:?}"));
                }
            }
        }
        Expect::HashSampled if reading.flows.len() >= truth.len() => errors.push(format!(
            "hash:{SAMPLE} kept {} of {} flows",
            reading.flows.len(),
            truth.len()
        )),
        Expect::FromARefresh if reading.flows.len() < truth.len() / 2 => errors.push(format!(
            "decoded only {} of {} flows after starting late",
            reading.flows.len(),
            truth.len()
        )),
        _ => {}
    }
    for (tuple, code) in &reading.icmp {
        if matches!(tuple.4, 1 | 58) && u64::from(tuple.3) != *code {
            errors.push(format!("{tuple:?}: ICMP type/code field {code:#06x}"));
        }
    }
    if !quirks.no_sampling {
        let want: BTreeSet<u64> = if sampled {
            [u64::from(SAMPLE)].into()
        } else {
            BTreeSet::new()
        };
        // Unsampled, decoders show 0 or 1; sampled, exactly the interval.
        let mut got = reading.sampling.clone();
        got.retain(|&s| s > 1);
        if got != want {
            errors.push(format!(
                "sampling rates {:?}, expected {want:?}",
                reading.sampling
            ));
        }
    }
    println!(
        "{who}: {} of {} flows, sampling {:?}, {} ICMP fields",
        reading.flows.len(),
        truth.len(),
        reading.sampling,
        reading.icmp.len()
    );
    assert!(
        errors.is_empty(),
        "{who} reading tapflow's {} ({expect:?}): {} problem(s):\n{}",
        format.name(),
        errors.len(),
        errors
            .iter()
            .take(25)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    reading.flows.keys().copied().collect()
}

/// Lines of a log that report an error or a warning.
fn problem_lines(log: &str, ignore: &[&str]) -> Vec<String> {
    log.lines()
        .filter(|l| {
            let lower = l.to_ascii_lowercase();
            (lower.contains("error") || lower.contains("warn"))
                && !ignore.iter().any(|i| l.contains(i))
        })
        .map(str::to_string)
        .collect()
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something has bound UDP `port` on loopback.
fn wait_bound(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while UdpSocket::bind(("127.0.0.1", port)).is_ok() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited at start: {status}");
        }
        assert!(Instant::now() < deadline, "{what} did not bind {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the log at `path` has a line containing `needle` (at most 20 s).
fn wait_logged(path: &Path, needle: &str, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(path).is_ok_and(|log| log.contains(needle)) {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited at start: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not log {needle:?} within 20 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `path` exists and has not grown for `quiet`: a collector that writes as
/// it decodes has caught up with what it received (at most 20 s).
fn wait_quiet(path: &Path, quiet: Duration) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let len = || std::fs::metadata(path).map_or(0, |m| m.len());
    let mut last = len();
    let mut since = Instant::now();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        let now = len();
        if now != last {
            last = now;
            since = Instant::now();
        } else if now > 0 && since.elapsed() >= quiet {
            return;
        }
    }
}

/// Stops a collector we started, by its PID.
fn terminate(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A collector process this test started; killed if the test fails before stopping it.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn ms_from_parts(secs: u64, fraction: &str) -> u64 {
    let digits: String = fraction.chars().chain("000".chars()).take(3).collect();
    secs * 1000 + digits.parse::<u64>().unwrap()
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// "2023-11-14 22:13:20.123000" (UTC) -> ms since the epoch.
fn ms_from_datetime(s: &str) -> u64 {
    let (date, time) = s.trim().split_once(' ').unwrap();
    let d: Vec<i64> = date.split('-').map(|p| p.parse().unwrap()).collect();
    let (hms, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<u64> = hms.split(':').map(|p| p.parse().unwrap()).collect();
    let secs = days_from_civil(d[0], d[1], d[2]) as u64 * 86_400 + t[0] * 3600 + t[1] * 60 + t[2];
    ms_from_parts(secs, fraction)
}

fn protocol_number(name: &str) -> u8 {
    match name.to_ascii_lowercase().as_str() {
        "tcp" => 6,
        "udp" => 17,
        "icmp" => 1,
        // FastNetMon names TCP, UDP and ICMP only; the capture has no other protocol.
        "icmp6" | "ipv6-icmp" | "icmpv6" | "unknown" => 58,
        other => other
            .parse()
            .unwrap_or_else(|_| panic!("unknown protocol {other:?}")),
    }
}

// ---- nfcapd (nfdump 1.7) -------------------------------------------------------------

struct Nfcapd {
    proc: Proc,
    dir: PathBuf,
    log: PathBuf,
    port: u16,
}

fn start_nfcapd(dir: &Path, port: u16) -> Nfcapd {
    let flows = dir.join("nfcapd");
    std::fs::create_dir_all(&flows).unwrap();
    let log = dir.join("nfcapd.log");
    let mut child = Command::new("nfcapd")
        .arg("-w")
        .arg(&flows)
        .args(["-b", "127.0.0.1", "-p", &port.to_string(), "-t", "3600"])
        .stdout(File::create(dir.join("nfcapd.out")).unwrap())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_bound(port, &mut child, "nfcapd");
    Nfcapd {
        proc: Proc(child),
        dir: flows,
        log,
        port,
    }
}

fn read_nfcapd(mut n: Nfcapd) -> Reading {
    // It writes its file on SIGTERM, with what it has taken off its socket by then.
    std::thread::sleep(Duration::from_millis(500));
    terminate(&mut n.proc.0);
    // %ts/%te in UTC: nfdump 1.7.1's %ter prints the end's milliseconds wrong.
    let out = Command::new("nfdump")
        .env("TZ", "UTC")
        .arg("-R")
        .arg(&n.dir)
        .args([
            "-q",
            "-N",
            "-6",
            "-o",
            "fmt:%ts|%te|%sa|%da|%sp|%dp|%pr|%pkt|%byt",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "nfdump: {}", text(&out));
    let mut r = Reading::default();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split('|').map(str::trim).collect();
        if f.len() != 9 {
            continue;
        }
        let time = ms_from_datetime;
        let port = |s: &str| match s.split_once('.') {
            Some((t, c)) => (t.parse::<u16>().unwrap() << 8) | c.parse::<u16>().unwrap(),
            None => s.parse().unwrap(),
        };
        let tuple = (
            f[2].parse().unwrap(),
            f[3].parse().unwrap(),
            port(f[4]),
            port(f[5]),
            protocol_number(f[6]),
        );
        r.add(
            tuple,
            f[7].parse().unwrap(),
            f[8].parse().unwrap(),
            Some((time(f[0]), time(f[1]))),
        );
    }
    let log = std::fs::read_to_string(&n.log).unwrap_or_default();
    // The closing statistics name their error counters; they must be 0.
    for line in log.lines() {
        for counter in ["Sequence Errors: ", "Bad Packets: "] {
            if let Some(rest) = line.split(counter).nth(1) {
                let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
                if n != "0" {
                    r.problems.push(line.to_string());
                }
            }
        }
    }
    r.problems.extend(problem_lines(
        &log,
        &["Sequence Errors: 0, Bad Packets: 0", "Sequence Errors: 0"],
    ));
    r
}

// ---- nfacctd (pmacct 1.7) ------------------------------------------------------------

struct Nfacctd {
    proc: Proc,
    csv: PathBuf,
    log: PathBuf,
    port: u16,
}

fn start_nfacctd(dir: &Path, port: u16) -> Nfacctd {
    let csv = dir.join("nfacctd.csv");
    let log = dir.join("nfacctd.log");
    let conf = dir.join("nfacctd.conf");
    std::fs::write(
        &conf,
        format!(
            "daemonize: false\n\
             nfacctd_ip: 127.0.0.1\n\
             nfacctd_port: {port}\n\
             plugins: print[flows]\n\
             aggregate[flows]: src_host, dst_host, src_port, dst_port, proto, \
             timestamp_start, timestamp_end, sampling_rate\n\
             print_output[flows]: csv\n\
             print_output_file[flows]: {csv}\n\
             print_output_file_append[flows]: true\n\
             print_refresh_time[flows]: 1\n\
             timestamps_secs: false\n\
             timestamps_utc: true\n\
             nfacctd_time_new: false\n",
            csv = csv.display()
        ),
    )
    .unwrap();
    // pmacct logs to stderr: the log the test reads for problems is both streams.
    let log_file = File::create(&log).unwrap();
    let mut child = Command::new("nfacctd")
        .arg("-f")
        .arg(&conf)
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap();
    wait_bound(port, &mut child, "nfacctd");
    // The core binds the port before it forks the print plugin; under load the plugin can
    // start seconds later. Send only once it says it is up.
    wait_logged(
        &log,
        "( flows/print ): cache entries",
        &mut child,
        "nfacctd",
    );
    Nfacctd {
        proc: Proc(child),
        csv,
        log,
        port,
    }
}

fn read_nfacctd(mut n: Nfacctd) -> Reading {
    // The print plugin appends its cache every second and writes nothing on SIGTERM.
    wait_quiet(&n.csv, Duration::from_millis(1_500));
    terminate(&mut n.proc.0);
    let mut r = Reading::default();
    let csv = std::fs::read_to_string(&n.csv).unwrap_or_default();
    for line in csv.lines().filter(|l| !l.starts_with("SRC_IP")) {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != 10 {
            r.problems.push(format!("csv: {line}"));
            continue;
        }
        let tuple = (
            f[0].parse().unwrap(),
            f[1].parse().unwrap(),
            f[2].parse().unwrap(),
            f[3].parse().unwrap(),
            protocol_number(f[4]),
        );
        r.sampling.insert(f[5].parse().unwrap());
        r.add(
            tuple,
            f[8].parse().unwrap(),
            f[9].parse().unwrap(),
            Some((ms_from_datetime(f[6]), ms_from_datetime(f[7]))),
        );
    }
    let log = std::fs::read_to_string(&n.log).unwrap_or_default();
    // Its start-up echo of the build's configure flags names -Werror=format-security.
    r.problems.extend(problem_lines(&log, &["'--build="]));
    r
}

// ---- the PyPI `netflow` collector ----------------------------------------------------

/// The collector's virtual environment: the one scripts/setup.sh makes (target/netflow-venv),
/// else one made here once under the test's temporary dir (pip install netflow==0.12.2);
/// None, with a notice, where python3 -m venv is not available.
fn netflow_python() -> Option<&'static Path> {
    static VENV: OnceLock<Option<PathBuf>> = OnceLock::new();
    VENV.get_or_init(|| {
        let ready = |p: &Path| {
            Command::new(p)
                .args(["-c", "import netflow"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let from_setup = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/netflow-venv");
        if ready(&from_setup.join("bin/python")) {
            return Some(from_setup.join("bin/python"));
        }
        let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("netflow-venv");
        let python = venv.join("bin/python");
        if !ready(&python) {
            let made = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .output()
                .is_ok_and(|o| o.status.success());
            if !made {
                println!("NOTICE: python3 -m venv failed (Debian: python3-venv); skipping");
                return None;
            }
            let out = Command::new(venv.join("bin/pip"))
                .args(["install", "-q", "netflow==0.12.2"])
                .output()
                .unwrap();
            assert!(out.status.success(), "pip install netflow: {}", text(&out));
        }
        Some(python)
    })
    .as_deref()
}

/// Turns the collector's gzipped JSON lines into one line a flow:
/// src|dst|sport|dport|proto|packets|octets|first_ms|last_ms, and `sampling N` lines.
const NETFLOW_PY_READER: &str = r#"
import gzip, ipaddress, json, sys
def addr(f, v4, v6):
    # v5 and IPFIX addresses come as integers
    if v4 in f:
        return ipaddress.IPv4Address(f[v4]) if isinstance(f[v4], int) else f[v4]
    if v6 in f:
        return ipaddress.IPv6Address(f[v6]) if isinstance(f[v6], int) else f[v6]
    return None
for line in gzip.open(sys.argv[1], "rt"):
    for ts, entry in json.loads(line).items():
        h = entry["header"]
        if h["version"] == 5:
            print("sampling", h.get("sampling_interval", 0) & 0x3fff)
            boot = h["timestamp"] * 1000 + h.get("timestamp_nano", 0) // 1000000 - h["uptime"]
        elif h["version"] == 9:
            boot = h["timestamp"] * 1000 - h["uptime"]
        for f in entry["flows"]:
            g = lambda *names: next((f[n] for n in names if n in f), None)
            src = addr(f, "IPV4_SRC_ADDR", "IPV6_SRC_ADDR") or addr(f, "sourceIPv4Address", "sourceIPv6Address")
            dst = addr(f, "IPV4_DST_ADDR", "IPV6_DST_ADDR") or addr(f, "destinationIPv4Address", "destinationIPv6Address")
            if src is None:
                continue
            sport = g("L4_SRC_PORT", "SRC_PORT", "sourceTransportPort")
            dport = g("L4_DST_PORT", "DST_PORT", "destinationTransportPort")
            proto = g("PROTOCOL", "PROTO", "protocolIdentifier")
            pkts = g("IN_PKTS", "IN_PACKETS", "packetDeltaCount")
            octs = g("IN_BYTES", "IN_OCTETS", "octetDeltaCount")
            if h["version"] == 10:
                first, last = g("flowStartMilliseconds"), g("flowEndMilliseconds")
            else:
                first = boot + g("FIRST_SWITCHED", "FIRST")
                last = boot + g("LAST_SWITCHED", "LAST")
            icmp = g("ICMP_TYPE", "icmpTypeCodeIPv4", "icmpTypeCodeIPv6")
            print("|".join(str(v) for v in [src, dst, sport, dport, proto, pkts, octs, first, last, icmp]))
"#;

struct NetflowPy {
    proc: Proc,
    python: &'static Path,
    out: PathBuf,
    log: PathBuf,
    port: u16,
}

fn start_netflow_py(dir: &Path, port: u16) -> Option<NetflowPy> {
    let python = netflow_python()?;
    let out = dir.join("netflow-py.gz");
    let log = dir.join("netflow-py.log");
    let mut child = Command::new(python)
        .args(["-m", "netflow.collector", "--host", "127.0.0.1"])
        .args(["-p", &port.to_string(), "-o"])
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_bound(port, &mut child, "netflow.collector");
    Some(NetflowPy {
        proc: Proc(child),
        python,
        out,
        log,
        port,
    })
}

fn read_netflow_py(mut n: NetflowPy) -> Reading {
    // It decodes on a thread of its own and appends each message as it is decoded.
    wait_quiet(&n.out, Duration::from_millis(1_000));
    terminate(&mut n.proc.0);
    let mut r = Reading::default();
    let log = std::fs::read_to_string(&n.log).unwrap_or_default();
    r.problems.extend(problem_lines(&log, &[]));
    if !n.out.exists() {
        return r;
    }
    let out = Command::new(n.python)
        .args(["-c", NETFLOW_PY_READER])
        .arg(&n.out)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "reading netflow output: {}",
        text(&out)
    );
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(n) = line.strip_prefix("sampling ") {
            r.sampling.insert(n.parse().unwrap());
            continue;
        }
        let f: Vec<&str> = line.split('|').collect();
        let tuple = (
            f[0].parse().unwrap(),
            f[1].parse().unwrap(),
            f[2].parse().unwrap(),
            f[3].parse().unwrap(),
            f[4].parse().unwrap(),
        );
        r.add(
            tuple,
            f[5].parse().unwrap(),
            f[6].parse().unwrap(),
            Some((f[7].parse().unwrap(), f[8].parse().unwrap())),
        );
        if let Ok(icmp) = f[9].parse() {
            r.icmp.insert(tuple, icmp);
        }
    }
    r
}

// ---- FastNetMon 1.2 ------------------------------------------------------------------

struct Fastnetmon {
    proc: Proc,
    log: PathBuf,
    port: u16,
}

/// FastNetMon checks its default notify script and attack folder before it reads the
/// configuration that turns them off: these two lines come at every start.
const FASTNETMON_STARTUP_LINES: [&str; 2] = [
    "We can't find notify script /usr/local/bin/notify_about_attack.sh",
    "Folder for attack details does not exist: /var/log/fastnetmon_attacks",
];

fn start_fastnetmon(dir: &Path, port: u16) -> Fastnetmon {
    let log = dir.join("fastnetmon.log");
    let conf = dir.join("fastnetmon.conf");
    let networks = dir.join("networks_list");
    let whitelist = dir.join("networks_whitelist");
    std::fs::write(&networks, "10.1.0.0/24\n10.2.0.0/24\n2001:db8:1::/64\n").unwrap();
    std::fs::write(&whitelist, "").unwrap();
    std::fs::write(
        &conf,
        format!(
            "netflow = on\nnetflow_host = 127.0.0.1\nnetflow_port = {port}\n\
             netflow_sampling_ratio = 1\ndump_all_traffic = on\n\
             networks_list_path = {}\nwhite_list_path = {}\n\
             notify_script_enabled = off\nenable_api = off\ngraphite = off\nenable_ban = off\n",
            networks.display(),
            whitelist.display()
        ),
    )
    .unwrap();
    let mut child = Command::new("fastnetmon")
        .arg("--configuration_file")
        .arg(&conf)
        .arg("--log_file")
        .arg(&log)
        .arg("--disable_pid_logic")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_bound(port, &mut child, "fastnetmon");
    Fastnetmon {
        proc: Proc(child),
        log,
        port,
    }
}

/// "10.1.0.5:20005" or "2001:db8:1::5:20005" -> (address, port).
fn split_addr_port(s: &str) -> (IpAddr, u16) {
    let (addr, port) = s.rsplit_once(':').unwrap();
    (addr.parse().unwrap(), port.parse().unwrap())
}

fn read_fastnetmon(mut f: Fastnetmon) -> Reading {
    wait_quiet(&f.log, Duration::from_millis(1_000));
    terminate(&mut f.proc.0);
    let log = std::fs::read_to_string(&f.log).unwrap_or_default();
    let mut r = Reading::default();
    r.problems
        .extend(problem_lines(&log, &FASTNETMON_STARTUP_LINES));
    // "Dump: 2023-11-14 22:13:20.000000 10.1.0.5:20005 > 10.2.0.5:80 protocol: tcp
    //  flags: syn frag: 0  packets: 1 size: 60 bytes ttl: 0 sample ratio: 10"
    for line in log.lines() {
        let Some(dump) = line.split("Dump: ").nth(1) else {
            continue;
        };
        let words: Vec<&str> = dump.split_whitespace().collect();
        let after = |key: &str| {
            let at = words.iter().position(|w| *w == key).unwrap();
            words[at + 1]
        };
        let (src, sport) = split_addr_port(words[2]);
        let (dst, dport) = split_addr_port(words[4]);
        let proto = protocol_number(after("protocol:"));
        let ratio: u64 = words[words.len() - 1].parse().unwrap();
        r.sampling.insert(ratio);
        r.add(
            (src, dst, sport, dport, proto),
            after("packets:").parse().unwrap(),
            after("size:").parse().unwrap(),
            None,
        );
    }
    r
}

// ---- offline decoders: tshark and ipfixDump ------------------------------------------

/// The replay's datagrams as a pcap of Ethernet/IPv4/UDP frames to port 2055.
fn write_datagram_pcap(path: &Path, datagrams: &[Vec<u8>]) {
    let file = BufWriter::new(File::create(path).unwrap());
    let mut out = PcapWriter::new(file).unwrap();
    for (i, d) in datagrams.iter().enumerate() {
        let mut frame = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([192, 0, 2, 1], [192, 0, 2, 2], 64)
            .udp(50_000, 2055)
            .write(&mut frame, d)
            .unwrap();
        out.write_packet(T0_US + i as u64, &frame).unwrap();
    }
    out.into_inner().unwrap().flush().unwrap();
}

fn read_tshark(dir: &Path, format: Format, datagrams: &[Vec<u8>]) -> Reading {
    let pcap = dir.join("export.pcap");
    write_datagram_pcap(&pcap, datagrams);
    let out = Command::new("tshark")
        .env("TZ", "UTC")
        .arg("-r")
        .arg(&pcap)
        .args(["-d", "udp.port==2055,cflow", "-V"])
        .output()
        .unwrap();
    assert!(out.status.success(), "tshark: {}", text(&out));
    let mut r = Reading::default();
    let stdout = String::from_utf8_lossy(&out.stdout);
    for bad in ["Malformed", "Expert Info (Warn", "Expert Info (Error"] {
        r.problems.extend(
            stdout
                .lines()
                .filter(|l| l.contains(bad))
                .map(str::to_string),
        );
    }
    r.problems
        .extend(problem_lines(&String::from_utf8_lossy(&out.stderr), &[]));
    // A record is a "Flow N" line and the lines indented below it, "Name: value" each.
    // v5 and v9 times are uptime seconds, placed with the header's time: unix secs
    // (+ nsecs) - sysUptime.
    let indent = |l: &str| l.len() - l.trim_start().len();
    // "..00 0000 0000 1010 = SampleRate: 10": the name follows the bits.
    let name = |k: &str| k.rsplit(" = ").next().unwrap().to_string();
    let mut header: BTreeMap<String, String> = BTreeMap::new();
    let mut record: Option<(usize, BTreeMap<String, String>)> = None;
    let mut records = Vec::new();
    for line in stdout.lines() {
        if let Some((depth, fields)) = record.as_mut() {
            if indent(line) > *depth {
                if let Some((k, v)) = line.trim().split_once(": ") {
                    fields.insert(name(k), v.to_string());
                }
                continue;
            }
            let (_, fields) = record.take().unwrap();
            records.push((header.clone(), fields));
        }
        let t = line.trim();
        if t.starts_with("Cisco NetFlow") {
            header.clear();
        } else if t.starts_with("Flow ") && t[5..].bytes().all(|b| b.is_ascii_digit())
            || t.starts_with("pdu ")
        {
            record = Some((indent(line), BTreeMap::new()));
        } else if let Some((k, v)) = t.split_once(": ") {
            header.insert(name(k), v.to_string());
        }
    }
    if let Some((_, fields)) = record {
        records.push((header.clone(), fields));
    }
    let first_word = |v: &str| v.split_whitespace().next().unwrap_or("").to_string();
    let seconds_ms = |v: &str| {
        let v = first_word(v);
        let (s, f) = v.split_once('.').unwrap_or((&v, "0"));
        ms_from_parts(s.parse().unwrap(), f)
    };
    for (header, f) in records {
        let get = |k: &str| f.get(k).map(String::as_str);
        if let Some(v) = get("Sampling interval").or(header.get("SampleRate").map(String::as_str)) {
            r.sampling.insert(first_word(v).parse().unwrap());
        }
        let (Some(src), Some(dst)) = (get("SrcAddr"), get("DstAddr")) else {
            continue;
        };
        let num = |k: &str| get(k).map(|v| first_word(v).parse::<u64>().unwrap());
        let proto = get("Protocol")
            .and_then(|p| {
                p.rsplit_once('(')
                    .map(|(_, n)| n.trim_end_matches(')').parse().unwrap())
            })
            .unwrap();
        let tuple = (
            src.parse().unwrap(),
            dst.parse().unwrap(),
            num("SrcPort").unwrap() as u16,
            num("DstPort").unwrap() as u16,
            proto,
        );
        let times = match (get("StartTime"), get("EndTime")) {
            (Some(a), Some(b)) if format == Format::Ipfix => {
                Some((ms_from_month_date(a), ms_from_month_date(b)))
            }
            (Some(a), Some(b)) => {
                let secs: u64 = header["CurrentSecs"].parse().unwrap();
                let nsecs: u64 = header.get("CurrentNSecs").map_or(0, |n| n.parse().unwrap());
                let boot = secs * 1000 + nsecs / 1_000_000 - seconds_ms(&header["SysUptime"]);
                Some((boot + seconds_ms(a), boot + seconds_ms(b)))
            }
            _ => None,
        };
        r.add(
            tuple,
            num("Packets").unwrap(),
            num("Octets").unwrap(),
            times,
        );
        if let Some(v) = get("ICMP Type").or(get("ICMP Type Code IPv6")) {
            let hex = first_word(v);
            let code = u64::from_str_radix(hex.trim_start_matches("0x"), 16).unwrap();
            r.icmp.insert(tuple, code);
        }
    }
    r
}

/// "Nov 14, 2023 22:13:20.123000000 UTC" -> ms since the epoch.
fn ms_from_month_date(s: &str) -> u64 {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let w: Vec<&str> = s.split_whitespace().collect();
    let month = MONTHS.iter().position(|m| *m == w[0]).unwrap() + 1;
    let day = w[1].trim_end_matches(',');
    ms_from_datetime(&format!("{}-{month}-{day} {}", w[2], w[3]))
}

fn read_ipfixdump(dir: &Path, datagrams: &[Vec<u8>]) -> Reading {
    let file = dir.join("export.ipfix");
    std::fs::write(&file, datagrams.concat()).unwrap();
    let out = Command::new("ipfixDump")
        .arg("--in")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "ipfixDump: {}", text(&out));
    let mut r = Reading::default();
    r.problems
        .extend(problem_lines(&String::from_utf8_lossy(&out.stderr), &[]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut fields: BTreeMap<String, String> = BTreeMap::new();
    let flush = |fields: &mut BTreeMap<String, String>, r: &mut Reading| {
        let get = |k: &str| fields.get(k).map(String::as_str);
        let num = |k: &str| get(k).map(|v| v.parse::<u64>().unwrap());
        if let Some(s) = num("samplingInterval") {
            r.sampling.insert(s);
        }
        let src = get("sourceIPv4Address").or(get("sourceIPv6Address"));
        let dst = get("destinationIPv4Address").or(get("destinationIPv6Address"));
        if let (Some(src), Some(dst)) = (src, dst) {
            let tuple = (
                src.parse().unwrap(),
                dst.parse().unwrap(),
                num("sourceTransportPort").unwrap() as u16,
                num("destinationTransportPort").unwrap() as u16,
                num("protocolIdentifier").unwrap() as u8,
            );
            let time = |k: &str| get(k).map(ms_from_datetime);
            let times = time("flowStartMilliseconds").zip(time("flowEndMilliseconds"));
            r.add(
                tuple,
                num("packetDeltaCount").unwrap(),
                num("octetDeltaCount").unwrap(),
                times,
            );
            if let Some(icmp) = num("icmpTypeCodeIPv4").or(num("icmpTypeCodeIPv6")) {
                r.icmp.insert(tuple, icmp);
            }
        }
        fields.clear();
    };
    for line in stdout.lines() {
        if line.starts_with("--- ") {
            flush(&mut fields, &mut r);
            continue;
        }
        // "\t(8)              sourceIPv4Address : 10.1.0.1"
        if let Some((k, v)) = line.trim().split_once(" : ") {
            let name = k.split_whitespace().last().unwrap_or("");
            fields.insert(name.to_string(), v.trim().to_string());
        }
    }
    flush(&mut fields, &mut r);
    r
}

// ---- one replay into every decoder ---------------------------------------------------

fn replay_command(
    pcap: &Path,
    collectors: &[String],
    format: Format,
    sample: Option<u32>,
) -> Command {
    let mut cmd = tapflow();
    cmd.arg("replay").arg(pcap);
    for c in collectors {
        cmd.args(["--collector", c]);
    }
    cmd.args(["--export", format.name(), "--source", "file"]);
    if let Some(n) = sample {
        cmd.args(["--sample", &format!("hash:{n}")]);
    }
    cmd
}

fn replay_into(collectors: &[String], format: Format, sample: Option<u32>) {
    let out = replay_command(&capture().0, collectors, format, sample)
        .output()
        .unwrap();
    assert!(out.status.success(), "replay: {}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let unexpected: Vec<&str> = stderr
        .lines()
        .filter(|l| !(format == Format::V5 && l.contains("cannot carry IPv6")))
        .collect();
    assert!(unexpected.is_empty(), "tapflow said: {}", text(&out));
}

fn tools_present() -> bool {
    let tools = [
        "nfcapd",
        "nfdump",
        "nfacctd",
        "tshark",
        "ipfixDump",
        "fastnetmon",
    ];
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !have(t)).collect();
    if !missing.is_empty() {
        println!("NOTICE: {missing:?} not installed (scripts/setup.sh); skipping the matrix");
    }
    missing.is_empty()
}

fn matrix_row(format: Format, sampled: bool) {
    if !tools_present() {
        return;
    }
    let dir = scratch_dir(&format!("interop-{}-{sampled}", format.name()));
    let nfcapd = start_nfcapd(&dir, free_port());
    let nfacctd = start_nfacctd(&dir, free_port());
    let python = start_netflow_py(&dir, free_port());
    let fastnetmon = start_fastnetmon(&dir, free_port());
    let socket = BackgroundCollector::start();
    let mut targets = vec![
        format!("127.0.0.1:{}", nfcapd.port),
        format!("127.0.0.1:{}", nfacctd.port),
        format!("127.0.0.1:{}", fastnetmon.port),
        socket.addr.clone(),
    ];
    if let Some(p) = &python {
        targets.push(format!("127.0.0.1:{}", p.port));
    }
    replay_into(&targets, format, sampled.then_some(SAMPLE));
    let datagrams = socket.finish();

    let mut seen: Vec<(&str, BTreeSet<FiveTuple>)> = Vec::new();
    let quirks = |no_times, no_sampling, scales| Quirks {
        no_times,
        no_sampling,
        scales,
        no_icmp_type: false,
        seconds_only: false,
    };
    // nfdump scales by the sampling it learnt; it shows no rate of its own.
    let r = read_nfcapd(nfcapd);
    seen.push((
        "nfcapd",
        check("nfcapd", format, sampled, quirks(false, true, true), &r),
    ));
    let r = read_nfacctd(nfacctd);
    // nfacctd places v9 records to the second: it drops FIRST/LAST_SWITCHED's milliseconds.
    let nfacctd_quirks = Quirks {
        seconds_only: format == Format::V9,
        ..quirks(false, false, false)
    };
    seen.push((
        "nfacctd",
        check("nfacctd", format, sampled, nfacctd_quirks, &r),
    ));
    if let Some(p) = python {
        let r = read_netflow_py(p);
        // It drops options data records: v9 and IPFIX sampling cannot reach it.
        let no_sampling = format != Format::V5;
        seen.push((
            "netflow (PyPI)",
            check(
                "netflow (PyPI)",
                format,
                sampled,
                quirks(false, no_sampling, false),
                &r,
            ),
        ));
    }
    let r = read_fastnetmon(fastnetmon);
    // FastNetMon keeps no flow times (it logs the arrival second) and, in v9 and IPFIX,
    // shows ICMP flows without type and code (ICMPv6, a protocol it does not name, keeps
    // them in the ports); its flows are compared with that reduced truth.
    let no_icmp_type = format != Format::V5;
    let fastnetmon_quirks = Quirks {
        no_icmp_type,
        ..quirks(true, false, false)
    };
    let fastnetmon_flows = check("FastNetMon", format, sampled, fastnetmon_quirks, &r);
    let r = read_tshark(&dir, format, &datagrams);
    seen.push((
        "tshark",
        check("tshark", format, sampled, quirks(false, false, false), &r),
    ));
    if format == Format::Ipfix {
        let r = read_ipfixdump(&dir, &datagrams);
        seen.push((
            "ipfixDump",
            check(
                "ipfixDump",
                format,
                sampled,
                quirks(false, false, false),
                &r,
            ),
        ));
    }
    // hash:10 keeps whole flows: every decoder must have been sent, and shown, the same.
    let (first, reference) = &seen[0];
    for (who, flows) in &seen[1..] {
        assert_eq!(flows, reference, "{who} and {first} show different flows");
    }
    let without_icmp_type: BTreeSet<FiveTuple> = reference
        .iter()
        .map(|&(s, d, sp, dp, p)| (s, d, sp, if no_icmp_type && p == 1 { 0 } else { dp }, p))
        .collect();
    assert_eq!(
        fastnetmon_flows, without_icmp_type,
        "FastNetMon and {first} show different flows"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn matrix_v5_unsampled() {
    matrix_row(Format::V5, false);
}

#[test]
fn matrix_v5_hash_sampled() {
    matrix_row(Format::V5, true);
}

#[test]
fn matrix_v9_unsampled() {
    matrix_row(Format::V9, false);
}

#[test]
fn matrix_v9_hash_sampled() {
    matrix_row(Format::V9, true);
}

#[test]
fn matrix_ipfix_unsampled() {
    matrix_row(Format::Ipfix, false);
}

#[test]
fn matrix_ipfix_hash_sampled() {
    matrix_row(Format::Ipfix, true);
}

/// Collectors that start after tapflow decode every record from the next template refresh
/// on (issue 20): a replay paced to last a few seconds, refreshing the templates every 20
/// datagrams. Plain sockets on the collectors' ports take its first datagrams (templates,
/// options and some records) and close; then the collectors start.
#[test]
fn late_collectors_recover_at_the_next_template_refresh() {
    if !tools_present() {
        return;
    }
    let dir = scratch_dir("interop-late");
    let pcap = common::generate_pcap(&dir, 2_000, 1, false);
    let truth = ground_truth_timed(&pcap);
    for format in [Format::V9, Format::Ipfix] {
        let sub = dir.join(format.name());
        std::fs::create_dir_all(&sub).unwrap();
        let ports = [free_port(), free_port(), free_port(), free_port()];
        let targets: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let mut replay = replay_command(&pcap, &targets, format, None);
        replay
            .args([
                "--pace",
                "100",
                "--mtu",
                "600",
                "--template-refresh-datagrams",
                "20",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let early: Vec<UdpSocket> = ports
            .iter()
            .map(|p| UdpSocket::bind(("127.0.0.1", *p)).unwrap())
            .collect();
        let child = replay.spawn().unwrap();
        let mut buf = [0u8; 2048];
        for socket in &early {
            socket
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            for _ in 0..5 {
                // A signal to this process (another test's child ending) may interrupt
                // the wait: that is not tapflow failing to send.
                loop {
                    match socket.recv(&mut buf) {
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        other => {
                            other.expect("tapflow sends to every collector");
                            break;
                        }
                    }
                }
            }
        }
        // The collectors are down for a while: sends are refused, as by a collector that
        // is not running. Then the replay is held while the collectors start: under load,
        // starting four of them one after another could outlast the replay, leaving a
        // collector nothing to recover from.
        drop(early);
        std::thread::sleep(Duration::from_millis(300));
        common::signal(&child, "STOP");
        let nfcapd = start_nfcapd(&sub, ports[0]);
        let nfacctd = start_nfacctd(&sub, ports[1]);
        let fastnetmon = start_fastnetmon(&sub, ports[2]);
        let python = start_netflow_py(&sub, ports[3]);
        common::signal(&child, "CONT");
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "replay: {}", text(&out));
        // The collectors were down at first: the summary counts the refused sends.
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("send retries"), "{stdout}");

        let quirks = Quirks::default();
        let late = Expect::FromARefresh;
        let mut r = read_nfcapd(nfcapd);
        if format == Format::Ipfix {
            // nfcapd 1.7.1 leaves options data records out of the IPFIX sequence it
            // expects, so each options message after the first counts as a sequence error
            // (docs/COLLECTORS.md); here every refresh brings one.
            r.problems.retain(|l| !l.contains("Sequence Errors"));
        }
        let flows = check_against(&truth, "nfcapd", format, late, quirks, &r);
        assert!(
            flows.len() < truth.len(),
            "nfcapd started too early to test anything"
        );
        let nfacctd_quirks = Quirks {
            seconds_only: format == Format::V9,
            ..quirks
        };
        let r = read_nfacctd(nfacctd);
        check_against(&truth, "nfacctd", format, late, nfacctd_quirks, &r);
        let fastnetmon_quirks = Quirks {
            no_times: true,
            no_icmp_type: true,
            ..quirks
        };
        let r = read_fastnetmon(fastnetmon);
        check_against(&truth, "FastNetMon", format, late, fastnetmon_quirks, &r);
        if let Some(p) = python {
            let py_quirks = Quirks {
                no_sampling: true,
                ..quirks
            };
            let r = read_netflow_py(p);
            check_against(&truth, "netflow (PyPI)", format, late, py_quirks, &r);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
