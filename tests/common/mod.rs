//! Shared pieces of the end-to-end tests: generated captures, an independent ground truth,
//! and the collectors (a plain UDP socket decoded by `netflow_parser`, and nfdump's nfcapd).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A flow as the tests compare it: addresses, ports (ICMP: 0 and type << 8 | code), protocol.
pub type FiveTuple = (IpAddr, IpAddr, u16, u16, u8);

/// Packets and octets (IP total length) per five-tuple.
pub type Totals = BTreeMap<FiveTuple, (u64, u64)>;

pub fn tapflow() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tapflow"))
}

/// A directory of its own for one test, under the target dir, emptied first.
pub fn scratch_dir(name: &str) -> PathBuf {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tapflow-test-{}-{}-{}",
        name,
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes a synthetic capture with `tapflow generate` and returns its path.
pub fn generate_pcap(dir: &Path, flows: u32, packets_per_flow: u32, noise: bool) -> PathBuf {
    let path = dir.join("trace.pcap");
    let mut cmd = tapflow();
    cmd.arg("generate")
        .arg(&path)
        .args(["--flows", &flows.to_string()])
        .args(["--packets-per-flow", &packets_per_flow.to_string()]);
    if noise {
        cmd.arg("--noise");
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "generate failed: {}", text(&out));
    path
}

pub fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Reads a classic pcap without tapflow's code: the ground truth must not share its bugs.
pub fn read_pcap_frames(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    let magic = u32::from_le_bytes(bytes[0..4].try_into().unwrap());
    let le = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        other => panic!("not a classic pcap: magic {other:#x}"),
    };
    let u32_at = |b: &[u8], at: usize| {
        let v: [u8; 4] = b[at..at + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(v)
        } else {
            u32::from_be_bytes(v)
        }
    };
    let mut frames = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let caplen = u32_at(&bytes, at + 8) as usize;
        at += 16;
        frames.push(bytes[at..at + caplen].to_vec());
        at += caplen;
    }
    frames
}

/// Reads a classic pcap's records as (timestamp in microseconds, frame).
pub fn read_pcap_records(path: &Path) -> Vec<(u64, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let magic = u32::from_le_bytes(bytes[0..4].try_into().unwrap());
    let (le, nanos) = match magic {
        0xa1b2_c3d4 => (true, false),
        0xa1b2_3c4d => (true, true),
        0xd4c3_b2a1 => (false, false),
        0x4d3c_b2a1 => (false, true),
        other => panic!("not a classic pcap: magic {other:#x}"),
    };
    let u32_at = |b: &[u8], at: usize| {
        let v: [u8; 4] = b[at..at + 4].try_into().unwrap();
        u64::from(if le {
            u32::from_le_bytes(v)
        } else {
            u32::from_be_bytes(v)
        })
    };
    let mut records = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let fraction = u32_at(&bytes, at + 4);
        let us = u32_at(&bytes, at) * 1_000_000 + if nanos { fraction / 1000 } else { fraction };
        let caplen = u32_at(&bytes, at + 8) as usize;
        at += 16;
        records.push((us, bytes[at..at + caplen].to_vec()));
        at += caplen;
    }
    records
}

/// A flow of the ground truth with its times: milliseconds since the epoch of its first
/// and last packet (the capture's microseconds, truncated, as a probe stamps them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowTruth {
    pub packets: u64,
    pub octets: u64,
    pub first_ms: u64,
    pub last_ms: u64,
}

/// [`ground_truth`] with each flow's first and last packet times.
pub fn ground_truth_timed(path: &Path) -> BTreeMap<FiveTuple, FlowTruth> {
    let mut flows = BTreeMap::new();
    for (us, frame) in read_pcap_records(path) {
        if let Some((tuple, octets)) = classify(&frame) {
            let ms = us / 1000;
            let e = flows.entry(tuple).or_insert(FlowTruth {
                first_ms: ms,
                last_ms: ms,
                ..FlowTruth::default()
            });
            e.packets += 1;
            e.octets += octets;
            e.first_ms = e.first_ms.min(ms);
            e.last_ms = e.last_ms.max(ms);
        }
    }
    flows
}

/// Per-flow packets and octets computed with etherparse, independently of tapflow's parser.
pub fn ground_truth(path: &Path) -> Totals {
    let mut totals = Totals::new();
    for frame in read_pcap_frames(path) {
        if let Some((tuple, octets)) = classify(&frame) {
            let e = totals.entry(tuple).or_default();
            e.0 += 1;
            e.1 += octets;
        }
    }
    totals
}

/// etherparse's strict decoder: a frame it rejects (bad lengths, broken extension chains)
/// belongs to no flow, which is also what a probe must conclude.
pub fn classify(frame: &[u8]) -> Option<(FiveTuple, u64)> {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let packet = SlicedPacket::from_ethernet(frame).ok()?;
    let (src, dst, proto, octets, fragmented, payload) = match packet.net.as_ref()? {
        NetSlice::Ipv4(ip) => {
            let h = ip.header();
            (
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                h.protocol().0,
                u64::from(h.total_len()),
                h.fragments_offset().value() > 0,
                ip.payload().payload,
            )
        }
        NetSlice::Ipv6(ip) => {
            let h = ip.header();
            (
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                ip.payload().ip_number.0,
                u64::from(h.payload_length()) + 40,
                ip.payload().fragmented,
                ip.payload().payload,
            )
        }
        _ => return None,
    };
    let (sp, dp) = if fragmented {
        (0, 0)
    } else {
        match &packet.transport {
            Some(TransportSlice::Tcp(t)) => (t.source_port(), t.destination_port()),
            Some(TransportSlice::Udp(u)) => (u.source_port(), u.destination_port()),
            Some(TransportSlice::Icmpv4(i)) => (0, u16::from_be_bytes([i.type_u8(), i.code_u8()])),
            Some(TransportSlice::Icmpv6(i)) => (0, u16::from_be_bytes([i.type_u8(), i.code_u8()])),
            // An IPv4 first fragment (offset 0, more to come): etherparse leaves its L4
            // header unsliced, but it is there, and a probe reads the ports from it.
            None if matches!(proto, 6 | 17) && payload.len() >= 4 => (
                u16::from_be_bytes([payload[0], payload[1]]),
                u16::from_be_bytes([payload[2], payload[3]]),
            ),
            _ => (0, 0),
        }
    };
    Some(((src, dst, sp, dp, proto), octets))
}

pub fn sum(totals: &Totals) -> (u64, u64) {
    totals
        .values()
        .fold((0, 0), |(p, o), (dp, dob)| (p + dp, o + dob))
}

/// A UDP socket on loopback that keeps every datagram it receives.
pub struct UdpCollector {
    pub socket: UdpSocket,
}

impl UdpCollector {
    pub fn bind() -> UdpCollector {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sock = socket2::SockRef::from(&socket);
        let _ = sock.set_recv_buffer_size(64 << 20);
        socket
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        UdpCollector { socket }
    }

    pub fn addr(&self) -> String {
        self.socket.local_addr().unwrap().to_string()
    }

    /// Everything received until the socket has been quiet for a moment.
    pub fn drain(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = self.socket.recv(&mut buf) {
            out.push(buf[..n].to_vec());
        }
        out
    }
}

/// A UDP socket on loopback drained by a thread of its own while tapflow runs, so a long
/// export does not overflow the socket buffer (capped by net.core.rmem_max).
pub struct BackgroundCollector {
    pub addr: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Vec<u8>>>,
}

impl BackgroundCollector {
    pub fn start() -> BackgroundCollector {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(64 << 20);
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = socket.local_addr().unwrap().to_string();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut buf = vec![0u8; 65536];
            loop {
                match socket.recv(&mut buf) {
                    Ok(n) => out.push(buf[..n].to_vec()),
                    Err(_) if stopping.load(Ordering::Relaxed) => return out,
                    Err(_) => {}
                }
            }
        });
        BackgroundCollector { addr, stop, thread }
    }

    /// Stops once the socket has been quiet for a moment; returns every datagram.
    pub fn finish(self) -> Vec<Vec<u8>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// A counter from tapflow's final table, e.g. "packets received   1,234"; None when the
/// row is absent (parse stops are listed only when non-zero).
pub fn summary_counter(stdout: &str, name: &str) -> Option<u64> {
    stdout
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with("  "))
        .map(|line| line[name.len()..].trim().replace(',', "").parse().unwrap())
}

/// A counter from tapflow's final table that must be there.
pub fn counter(stdout: &str, name: &str) -> u64 {
    summary_counter(stdout, name).unwrap_or_else(|| panic!("no {name:?} in:\n{stdout}"))
}

/// A value from /proc/PID/status in kB (VmHWM, VmRSS).
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// nfdump's collector, on a loopback port of its own, writing into `dir`.
pub struct Nfcapd {
    child: Child,
    pub dir: PathBuf,
    pub port: u16,
}

pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

impl Nfcapd {
    pub fn start(dir: &Path) -> Nfcapd {
        let flows = dir.join("nfcapd");
        std::fs::create_dir_all(&flows).unwrap();
        // A free port: bind, note it, release it for nfcapd.
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("nfcapd")
            .arg("-w")
            .arg(&flows)
            .args(["-b", "127.0.0.1", "-p", &port.to_string()])
            .args(["-B", "67108864", "-t", "3600"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nfcapd (package nfdump) must be installed: scripts/setup.sh does it");
        // nfcapd binds quickly; wait until the port is taken.
        let deadline = Instant::now() + Duration::from_secs(5);
        while UdpSocket::bind(("127.0.0.1", port)).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        Nfcapd {
            child,
            dir: flows,
            port,
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops nfcapd (it writes its file on SIGTERM) and returns the decoded flows.
    pub fn stop_and_read(mut self) -> Vec<NfdumpFlow> {
        std::thread::sleep(Duration::from_millis(500));
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        read_nfdump(&self.dir)
    }
}

impl Drop for Nfcapd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One flow as nfdump decoded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NfdumpFlow {
    pub tuple: FiveTuple,
    pub packets: u64,
    pub bytes: u64,
}

pub fn read_nfdump(dir: &Path) -> Vec<NfdumpFlow> {
    let out = Command::new("nfdump")
        .arg("-R")
        .arg(dir)
        .args(["-q", "-N", "-6", "-o", "fmt:%sa|%da|%sp|%dp|%pr|%pkt|%byt"])
        .output()
        .unwrap();
    assert!(out.status.success(), "nfdump failed: {}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split('|').map(str::trim).collect();
            assert_eq!(f.len(), 7, "unexpected nfdump line {line:?}");
            NfdumpFlow {
                tuple: (
                    f[0].parse().unwrap(),
                    f[1].parse().unwrap(),
                    parse_port(f[2]),
                    parse_port(f[3]),
                    protocol_number(f[4]),
                ),
                packets: f[5].parse().unwrap(),
                bytes: f[6].parse().unwrap(),
            }
        })
        .collect()
}

/// nfdump prints ICMP type/code in the destination port as "type.code".
fn parse_port(s: &str) -> u16 {
    match s.split_once('.') {
        Some((t, c)) => (t.parse::<u16>().unwrap() << 8) | c.parse::<u16>().unwrap(),
        None => s.parse().unwrap(),
    }
}

fn protocol_number(s: &str) -> u8 {
    match s.to_ascii_uppercase().as_str() {
        "TCP" => 6,
        "UDP" => 17,
        "ICMP" => 1,
        "ICMP6" | "IPV6-ICMP" => 58,
        "SCTP" => 132,
        other => other
            .parse()
            .unwrap_or_else(|_| panic!("unknown protocol name {other:?} from nfdump")),
    }
}

pub fn totals_from_nfdump(flows: &[NfdumpFlow]) -> Totals {
    let mut totals = Totals::new();
    for f in flows {
        let e = totals.entry(f.tuple).or_default();
        e.0 += f.packets;
        e.1 += f.bytes;
    }
    totals
}

/// Asserts equality flow by flow, with a readable account of the first differences.
pub fn assert_same_flows(what: &str, expected: &Totals, actual: &Totals) {
    if expected == actual {
        return;
    }
    let mut report = String::new();
    for (k, v) in expected {
        match actual.get(k) {
            None => report.push_str(&format!("missing {k:?}: expected {v:?}\n")),
            Some(a) if a != v => report.push_str(&format!("{k:?}: expected {v:?}, got {a:?}\n")),
            _ => {}
        }
    }
    for (k, v) in actual {
        if !expected.contains_key(k) {
            report.push_str(&format!("unexpected {k:?}: {v:?}\n"));
        }
    }
    let lines: Vec<&str> = report.lines().take(20).collect();
    panic!(
        "{what}: {} expected flows, {} actual; first differences:\n{}",
        expected.len(),
        actual.len(),
        lines.join("\n")
    );
}

/// Writes a `tapflow run` configuration for a DPDK pcap port looping over `pcap` forever
/// (own `file_prefix`, no hugepages), exporting to the collector described by
/// `collector_lines` (the body of its `[[collector]]` table).
pub fn write_dpdk_run_config(path: &Path, pcap: &Path, prefix: &str, collector_lines: &str) {
    let text = format!(
        r#"
[dpdk]
hugepages = false
memory_mb = 512
file_prefix = "{prefix}"

[[port]]
device = "net_pcap0,rx_pcap={pcap},infinite_rx=1"

[cache]
capacity = 65536

[[collector]]
{collector_lines}

[stats]
interval = 1
prometheus = false
"#,
        pcap = pcap.display()
    );
    std::fs::write(path, text).unwrap();
}

/// Sends signal `name` (TERM, HUP, ...) to a child this test started.
pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}
