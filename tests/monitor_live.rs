//! The millisecond monitor on a live port (issue 17): a network namespace and a veth pair
//! made by the test, `tapflow run` reading one end through DPDK's af_packet driver,
//! tcpreplay playing a generated capture into the other end at a fixed packet rate, the
//! events sent to a Unix datagram socket the test reads. A heavy flow and a surge switch on
//! and off every 60 ms; each switch-on must raise `heavy_hitter_start` and
//! `congestion_start`, and the time from the frame that took the window over the threshold
//! entering the interface (dumpcap's kernel timestamp) to the event reaching the socket is
//! measured and printed (BENCHMARKS.md reports it; no timed assertion here). `tapflow top
//! --once` reads the live view from the running appliance meanwhile.
//!
//! Needs root (network namespaces); skips with a message where a namespace cannot be made.
#![cfg(feature = "dpdk")]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddrV4;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{have, scratch_dir, text};
use probe::pcap::PcapWriter;
use probe::synth::{self, FrameOptions, tcp_flags};

/// Packets a second tcpreplay plays.
const PPS: u32 = 15_000;
/// Packets in each on and each off phase (60 ms at `PPS`).
const PHASE: u32 = 900;
const CYCLES: u32 = 40;
const WINDOW_MS: u64 = 10;
const LINK_BPS: u64 = 200_000_000;
/// A flow over 40 Mbit/s is a heavy hitter; the port is congested over 100 Mbit/s.
const HEAVY_BPS: u64 = 40_000_000;
const CONGESTION: f64 = 0.5;
const HEAVY_PORT: u16 = 33_333;
const METRICS_PORT: u16 = 9464;

/// A namespace holding a veth pair `tma` (tcpreplay sends) - `tmb` (tapflow reads).
struct Netns {
    name: String,
}

impl Netns {
    fn create() -> Option<Netns> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "tfmon-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        match Command::new("ip").args(["netns", "add", &name]).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                eprintln!(
                    "SKIP: cannot create a network namespace (needs root): {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                return None;
            }
            Err(e) => {
                eprintln!("SKIP: cannot run `ip netns add` (iproute2): {e}");
                return None;
            }
        }
        let ns = Netns { name };
        ns.run(&[
            "sysctl",
            "-q",
            "-w",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ]);
        ns.run(&[
            "ip", "link", "add", "tma", "type", "veth", "peer", "name", "tmb",
        ]);
        for dev in ["lo", "tma", "tmb"] {
            ns.run(&["ip", "link", "set", dev, "up"]);
        }
        Some(ns)
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    fn run(&self, argv: &[&str]) -> String {
        let out = self.command(argv[0]).args(&argv[1..]).output().unwrap();
        assert!(out.status.success(), "{argv:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A child stopped (by its PID) and reaped when dropped.
struct Stopping(Child);

impl Stopping {
    fn stop(&mut self, signal: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.0.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Stopping {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Reads a child's stderr lines on a thread; waits for one containing `what`.
fn wait_for_line(child: &mut Child, what: &str) -> std::sync::mpsc::Receiver<String> {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = String::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                let found = line.contains(what);
                seen.push_str(&line);
                seen.push('\n');
                if found {
                    return rx;
                }
            }
            Err(_) => break,
        }
    }
    let _ = child.kill();
    panic!("never saw {what:?}:\n{seen}");
}

/// The capture: background UDP frames of 200 bytes all along; in each on phase, two of
/// every three frames belong to one TCP flow of 1400-byte frames. At `PPS` that is
/// 24 Mbit/s off, and 112 Mbit/s heavy + 8 Mbit/s background on.
fn write_capture(path: &Path) -> u64 {
    let mut writer = PcapWriter::new(std::fs::File::create(path).unwrap()).unwrap();
    let mut frame = Vec::new();
    let start_us = 1_700_000_000_000_000u64;
    let mut n = 0u64;
    for cycle in 0..CYCLES {
        for phase in [true, false] {
            for i in 0..PHASE {
                if phase && i % 3 != 2 {
                    synth::eth_ipv4_tcp(
                        &mut frame,
                        SocketAddrV4::new([10, 9, 9, 9].into(), HEAVY_PORT),
                        SocketAddrV4::new([192, 0, 2, 80].into(), 80),
                        tcp_flags::ACK,
                        &FrameOptions {
                            payload_len: 1400 - 54,
                            ..FrameOptions::default()
                        },
                    );
                } else {
                    let k = (cycle * PHASE + i) % 20;
                    synth::eth_ipv4_udp(
                        &mut frame,
                        SocketAddrV4::new([10, 1, 0, k as u8].into(), 40_000 + k as u16),
                        SocketAddrV4::new([192, 0, 2, 1].into(), 5_000),
                        &FrameOptions {
                            payload_len: 200 - 42,
                            ..FrameOptions::default()
                        },
                    );
                }
                writer
                    .write_packet(start_us + n * 1_000_000 / u64::from(PPS), &frame)
                    .unwrap();
                n += 1;
            }
        }
    }
    writer.into_inner().unwrap();
    n
}

/// (kernel receive time µs, frame length, is the heavy flow) of each frame of a classic
/// pcap with microsecond timestamps, as dumpcap -P writes.
fn read_capture(path: &Path) -> Vec<(u64, u64, bool)> {
    let bytes = std::fs::read(path).unwrap();
    let magic = u32::from_le_bytes(bytes[0..4].try_into().unwrap());
    assert_eq!(magic, 0xa1b2_c3d4, "a little-endian microsecond pcap");
    let mut at = 24;
    let mut out = Vec::new();
    while at + 16 <= bytes.len() {
        let word = |o: usize| u64::from(u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap()));
        let (sec, usec, caplen, len) = (word(at), word(at + 4), word(at + 8), word(at + 12));
        let data = &bytes[at + 16..at + 16 + caplen as usize];
        // Ethernet + IPv4 (no options): the TCP source port at 34.
        let heavy = data.len() > 36
            && data[23] == 6
            && u16::from_be_bytes([data[34], data[35]]) == HEAVY_PORT;
        out.push((sec * 1_000_000 + usec, len, heavy));
        at += 16 + caplen as usize;
    }
    out
}

/// The kernel times at which a sliding window of `WINDOW_MS` over the frames `select`
/// picks reached `threshold_bps` after having been below it: when the monitor's condition
/// starts to hold. A stall of tcpreplay within an on phase (a loaded host) adds one.
fn crossings(
    frames: &[(u64, u64, bool)],
    select: impl Fn(bool) -> bool,
    threshold_bps: f64,
) -> Vec<u64> {
    let window_us = WINDOW_MS * 1_000;
    let chosen: Vec<(u64, u64)> = frames
        .iter()
        .filter(|f| select(f.2))
        .map(|f| (f.0, f.1))
        .collect();
    let mut out = Vec::new();
    let (mut first, mut bytes, mut armed) = (0usize, 0u64, true);
    for &(t, len) in &chosen {
        bytes += len;
        while chosen[first].0 + window_us <= t {
            bytes -= chosen[first].1;
            first += 1;
        }
        let rate = bytes as f64 * 8.0 / (window_us as f64 / 1e6);
        if rate >= threshold_bps && armed {
            out.push(t);
            armed = false;
        }
        if rate < threshold_bps {
            armed = true;
        }
    }
    out
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

#[test]
fn live_events_arrive_and_their_latency_is_measured() {
    for tool in ["tcpreplay", "dumpcap"] {
        assert!(
            have(tool),
            "{tool} must be installed: scripts/setup.sh does it"
        );
    }
    let Some(ns) = Netns::create() else {
        return;
    };
    let dir = scratch_dir("monitor-live");
    let capture = dir.join("steps.pcap");
    let frames = write_capture(&capture);

    let socket_path = dir.join("events.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let config = dir.join("tapflow.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[dpdk]
hugepages = false
memory_mb = 512
file_prefix = "tapflow-monlive-{pid}"

[[port]]
device = "net_af_packet0,iface=tmb"

[[collector]]
address = "127.0.0.1:9995"

[stats]
interval = 1
prometheus = "127.0.0.1:{METRICS_PORT}"

[monitor]
window_ms = {WINDOW_MS}
link_bps = {LINK_BPS}
heavy_hitter_bps = {HEAVY_BPS}
congestion_utilisation = {CONGESTION}
windows = 1
events = "unix:{socket}"
"#,
            pid = std::process::id(),
            socket = socket_path.display(),
        ),
    )
    .unwrap();

    let mut run = ns.command(env!("CARGO_BIN_EXE_tapflow"));
    run.args(["run", "-v", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut run = Stopping(run.spawn().unwrap());
    let _run_log = wait_for_line(&mut run.0, "running:");

    let kernel_times = dir.join("kernel.pcap");
    let mut dumpcap = ns.command("dumpcap");
    dumpcap
        .args(["-i", "tmb", "-P", "-w"])
        .arg(&kernel_times)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut dumpcap = Stopping(dumpcap.spawn().unwrap());
    let _dumpcap_log = wait_for_line(&mut dumpcap.0, "Capturing on");

    // Events with their arrival times, read while tcpreplay plays.
    let reader = std::thread::spawn(move || {
        let mut events = Vec::new();
        let mut buf = vec![0u8; 65_536];
        let mut quiet_since = Instant::now();
        while quiet_since.elapsed() < Duration::from_secs(3) {
            if let Ok(n) = socket.recv(&mut buf) {
                let arrived = now_us();
                let event: serde_json::Value = serde_json::from_slice(&buf[..n]).unwrap();
                events.push((arrived, event));
                quiet_since = Instant::now();
            }
        }
        events
    });
    let mut tcpreplay = ns.command("tcpreplay");
    tcpreplay
        .args(["-q", "-i", "tma", "--pps", &PPS.to_string()])
        .arg(&capture);
    let mut tcpreplay = tcpreplay.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(1_500));
    // The live view, from the running appliance, while traffic flows.
    let top = ns
        .command(env!("CARGO_BIN_EXE_tapflow"))
        .args([
            "top",
            "--once",
            "--endpoint",
            &format!("127.0.0.1:{METRICS_PORT}"),
        ])
        .output()
        .unwrap();
    assert!(tcpreplay.wait().unwrap().success());
    let events = reader.join().unwrap();
    dumpcap.stop("INT");
    run.stop("TERM");
    let mut stdout = String::new();
    run.0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();

    assert!(top.status.success(), "tapflow top: {}", text(&top));
    let table = String::from_utf8_lossy(&top.stdout);
    assert!(table.starts_with("tapflow top: 10 ms window"), "{table}");
    let port_row = table.lines().nth(3).unwrap_or_default();
    assert!(port_row.trim_start().starts_with("0 "), "{table}");
    assert!(port_row.contains("bit/s"), "{table}");

    let kernel = read_capture(&kernel_times);
    assert_eq!(
        kernel.len() as u64,
        frames,
        "dumpcap saw other frames than the capture's"
    );
    let of_type = |kind: &str| -> Vec<(u64, &serde_json::Value)> {
        events
            .iter()
            .filter(|(_, e)| e["type"] == kind)
            .map(|(t, e)| (*t, e))
            .collect()
    };
    let mut latencies = Vec::new();
    // From the window's end on tapflow's own receive clock to the socket: the part of the
    // latency after the worker stamped the frames.
    let mut after_stamp = Vec::new();
    let mut counts = String::new();
    for (kind, triggers) in [
        (
            "heavy_hitter_start",
            crossings(&kernel, |heavy| heavy, HEAVY_BPS as f64),
        ),
        (
            "congestion_start",
            crossings(&kernel, |_| true, CONGESTION * LINK_BPS as f64),
        ),
    ] {
        let raised = of_type(kind);
        let ends = of_type(&kind.replace("start", "end"));
        // Every on phase raised the event (a stall of the sender within a phase may end
        // and raise it once more), and every one ended.
        assert!(
            triggers.len() >= CYCLES as usize,
            "{kind}: truth {triggers:?}"
        );
        assert!(
            raised.len() >= CYCLES as usize,
            "{kind}: {events:?}\n{stdout}"
        );
        assert_eq!(raised.len(), ends.len(), "{kind}: {events:?}");
        counts.push_str(&format!(
            " {kind}: {} raised, {} crossings in the kernel's times;",
            raised.len(),
            triggers.len()
        ));
        for (arrived, event) in &raised {
            if kind == "heavy_hitter_start" {
                assert_eq!(event["flow"]["src_port"], HEAVY_PORT, "{event}");
            }
            assert_eq!(event["window_ms"], WINDOW_MS, "{event}");
            // The frame that took the window over: the last crossing before the arrival.
            let trigger = triggers
                .iter()
                .rev()
                .find(|t| **t <= *arrived)
                .unwrap_or_else(|| panic!("{kind} arrived before any frame crossed: {event}"));
            latencies.push(arrived - trigger);
            after_stamp.push(arrived.saturating_sub(event["time_us"].as_u64().unwrap()));
        }
    }
    latencies.sort_unstable();
    after_stamp.sort_unstable();
    println!(
        "live event latency, frame entering tmb -> event at the socket, {} events \
         ({counts} {PPS} pps): p50 {} us, p99 {} us, max {} us",
        latencies.len(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.last().unwrap()
    );
    println!(
        "of which after tapflow's receive stamp (window end -> socket): p50 {} us, p99 {} us",
        percentile(&after_stamp, 0.50),
        percentile(&after_stamp, 0.99),
    );
}
