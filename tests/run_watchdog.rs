//! systemd's watchdog is fed only while the data plane makes progress. tapflow runs with a
//! notification socket of the test's own and `WATCHDOG_USEC` set, reading a DPDK pcap
//! port whose input is a FIFO the test writes: while frames come, the worker polls and
//! `WATCHDOG=1` arrives; when the test stops writing, the worker is stuck inside the
//! driver's read (a real stalled rx call, while tapflow's other threads run on) and the
//! pings must stop; when frames come again they resume. Start-up and the final flush send
//! `EXTEND_TIMEOUT_USEC` instead.
#![cfg(feature = "dpdk")]

mod common;

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{UdpCollector, scratch_dir, signal, tapflow};
use probe::pcap::PcapWriter;
use probe::synth::{self, FrameOptions};

/// The watchdog timeout the test gives tapflow: it pings every half of it.
const WATCHDOG_USEC: u64 = 1_000_000;

fn frame() -> Vec<u8> {
    let mut f = Vec::new();
    synth::eth_ipv4_udp(
        &mut f,
        "10.7.0.1:1000".parse().unwrap(),
        "10.7.0.2:2000".parse().unwrap(),
        &FrameOptions::default(),
    );
    f
}

/// Bytes of a classic pcap file's global header.
const PCAP_HEADER_LEN: usize = 24;

/// A pcap file header followed by `records` records, as bytes.
fn pcap_bytes(records: usize) -> (Vec<u8>, usize) {
    let mut writer = PcapWriter::new(Vec::new()).unwrap();
    let header_len = PCAP_HEADER_LEN;
    for i in 0..records {
        writer
            .write_packet(1_700_000_000_000_000 + i as u64, &frame())
            .unwrap();
    }
    (writer.into_inner().unwrap(), header_len)
}

/// Notifications received until `until` says stop or `limit` passes; returns them all.
fn collect(
    socket: &UnixDatagram,
    limit: Duration,
    mut until: impl FnMut(&[String]) -> bool,
) -> Vec<String> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline && !until(&seen) {
        if let Ok(n) = socket.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    seen
}

fn count(messages: &[String], what: &str) -> usize {
    messages.iter().filter(|m| m.starts_with(what)).count()
}

fn write_config(path: &Path, fifo: &Path, collector: &str) {
    let text = format!(
        r#"
[dpdk]
hugepages = false
memory_mb = 512
file_prefix = "tapflow-watchdog-{}"

[[port]]
device = "net_pcap0,rx_pcap={}"

[cache]
capacity = 4096

[[collector]]
address = "{collector}"

[stats]
interval = 1
prometheus = false
"#,
        std::process::id(),
        fifo.display()
    );
    std::fs::write(path, text).unwrap();
}

#[test]
fn a_stalled_worker_stops_the_watchdog_pings() {
    let dir = scratch_dir("watchdog");
    let fifo = dir.join("frames.pcap");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    // Read and write: opening the FIFO never blocks, and tapflow's reads find a writer.
    let mut writer = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .unwrap();
    let (header_and_one, header_len) = pcap_bytes(1);
    let record = header_and_one[header_len..].to_vec();
    writer.write_all(&header_and_one).unwrap();

    let notify_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&notify_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let collector = UdpCollector::bind();
    let config = dir.join("tapflow.toml");
    write_config(&config, &fifo, &collector.addr());

    // Frames every 20 ms while `feeding` is set.
    let feeding = Arc::new(AtomicBool::new(true));
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = {
        let (feeding, stop) = (feeding.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if feeding.load(Ordering::Relaxed) {
                    writer.write_all(&record).unwrap();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            writer
        })
    };

    let mut child = tapflow()
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", WATCHDOG_USEC.to_string())
        .env_remove("WATCHDOG_PID")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Running: ready, then pings.
    let start = collect(&socket, Duration::from_secs(30), |m| {
        count(m, "WATCHDOG=1") >= 3
    });
    let ready_at = start.iter().position(|m| m == "READY=1");
    let extend_at = start
        .iter()
        .position(|m| m.starts_with("EXTEND_TIMEOUT_USEC="));
    assert!(
        matches!((extend_at, ready_at), (Some(e), Some(r)) if e < r),
        "start-up must extend the start timeout before READY=1: {start:?}"
    );
    assert!(
        count(&start, "WATCHDOG=1") >= 3,
        "no pings while running: {start:?}"
    );

    // Stalled: the worker blocks in the driver's read; the pings must stop and stay
    // stopped for several watchdog intervals.
    feeding.store(false, Ordering::Relaxed);
    let quiet_for = Duration::from_micros(3 * WATCHDOG_USEC);
    let mut last_ping = Instant::now();
    let mut pings = 0;
    let stalled = collect(&socket, Duration::from_secs(30), |m| {
        if count(m, "WATCHDOG=1") > pings {
            pings = count(m, "WATCHDOG=1");
            last_ping = Instant::now();
        }
        last_ping.elapsed() >= quiet_for
    });
    assert!(
        last_ping.elapsed() >= quiet_for,
        "the watchdog was still fed with the worker stuck: {stalled:?}"
    );

    // Moving again: the pings come back.
    feeding.store(true, Ordering::Relaxed);
    let resumed = collect(&socket, Duration::from_secs(30), |m| {
        count(m, "WATCHDOG=1") >= 1
    });
    assert_eq!(
        count(&resumed, "WATCHDOG=1"),
        1,
        "no pings after the worker moved again"
    );

    // Stop (frames keep coming, so the worker sees the signal): STOPPING=1, then the stop
    // timeout is extended while the flush runs.
    signal(&child, "TERM");
    let stopping = collect(&socket, Duration::from_secs(30), |m| {
        m.iter()
            .skip_while(|m| *m != "STOPPING=1")
            .any(|m| m.starts_with("EXTEND_TIMEOUT_USEC="))
    });
    let status = child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    drop(feeder.join().unwrap());
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    assert!(
        stopping
            .iter()
            .skip_while(|m| *m != "STOPPING=1")
            .any(|m| m.starts_with("EXTEND_TIMEOUT_USEC=")),
        "no stop-timeout extension after STOPPING=1: {stopping:?}"
    );
    assert!(
        stderr.contains("worker 0 made no progress"),
        "the stall must be logged, naming the worker:\n{stderr}"
    );
}
