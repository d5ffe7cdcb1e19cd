//! Issue 20 on the metrics endpoint: `tapflow run` exporting NetFlow v5 to a UDP port
//! nothing listens on, from a capture with IPv6 flows. The IPv6 records v5 cannot carry are
//! counted by reason, and the sends the kernel refused for an earlier datagram's ICMP port
//! unreachable are counted as retried, both on `GET /metrics`.
#![cfg(feature = "dpdk")]

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{generate_pcap, scratch_dir, signal, tapflow};

fn scrape(addr: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: tapflow\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    Some(text)
}

/// The value of the first series of `family` whose labels contain `label`.
fn series(text: &str, family: &str, label: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(&format!("{family}{{")) && l.contains(label))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn run_counts_unexportable_records_and_retried_sends_on_the_metrics_endpoint() {
    let dir = scratch_dir("export-metrics");
    let pcap = generate_pcap(&dir, 200, 10, false);
    let closed = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let metrics_addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let config = dir.join("tapflow.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[dpdk]
hugepages = false
memory_mb = 512
file_prefix = "tapflow-export-metrics-{pid}"

[[port]]
device = "net_pcap0,rx_pcap={pcap},infinite_rx=1"

[cache]
capacity = 65536
active_timeout = 1
inactive_timeout = 1

[[collector]]
address = "{closed}"
version = "v5"

[stats]
interval = 1
prometheus = "{metrics_addr}"
"#,
            pid = std::process::id(),
            pcap = pcap.display()
        ),
    )
    .unwrap();
    let mut child = tapflow()
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let label = format!("collector=\"v5/udp {closed}\"");
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut last = String::new();
    let (unsupported, retries) = loop {
        if let Some(text) = scrape(&metrics_addr) {
            let unsupported = series(
                &text,
                "tapflow_export_unsupported_records_total",
                "reason=\"ipv6_in_v5\"",
            );
            let retries = series(&text, "tapflow_export_send_retries_total", &label);
            if unsupported.unwrap_or(0) > 0 && retries.unwrap_or(0) > 0 {
                break (unsupported, retries);
            }
            last = text;
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("no unsupported/retry counts within 40 s; last scrape:\n{last}\nstderr:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    signal(&child, "TERM");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    println!("ipv6_in_v5 {unsupported:?}, send retries {retries:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
