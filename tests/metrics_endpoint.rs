//! The metrics endpoint of `tapflow run`, scraped as Prometheus would: two named DPDK
//! ports (pcap vdevs looping forever), the NIC's counters once per port, a worker's
//! counters labelled with its port and queue, the process metrics checked against the
//! kernel's view of the process, and scrapes that succeed while 130 idle connections and a
//! client trickling a byte a second hold connections open.
#![cfg(feature = "dpdk")]

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{generate_pcap, scratch_dir, signal, status_kb, tapflow};

/// One sample: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// A scrape with a generous timeout: `None` when it did not succeed.
fn scrape(addr: SocketAddr) -> Option<Vec<Sample>> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(60)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: tapflow\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200 ") {
        return None;
    }
    Some(body.lines().filter_map(parse_line).collect())
}

/// `name{a="x",b="y"} value` (label values without escapes: the test's names have none).
fn parse_line(line: &str) -> Option<Sample> {
    if line.starts_with('#') {
        return None;
    }
    let (series, value) = line.rsplit_once(' ')?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, rest.strip_suffix('}')?),
        None => (series, ""),
    };
    let labels = labels
        .split(',')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once('=')?;
            Some((k.to_string(), v.trim_matches('"').to_string()))
        })
        .collect::<Option<_>>()?;
    Some((name.to_string(), labels, value.parse().ok()?))
}

fn find<'a>(samples: &'a [Sample], name: &str) -> Vec<&'a Sample> {
    samples.iter().filter(|s| s.0 == name).collect()
}

fn one(samples: &[Sample], name: &str) -> f64 {
    let found = find(samples, name);
    assert_eq!(found.len(), 1, "{name}: {found:?}");
    found[0].2
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Run(Child);

impl Drop for Run {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn a_running_probe_serves_its_counters_by_port_and_its_process_metrics() {
    let dir = scratch_dir("metrics-endpoint");
    let pcap = generate_pcap(&dir, 200, 10, true);
    let metrics_port = free_port();
    let collector = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let config = dir.join("tapflow.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[dpdk]
hugepages = false
memory_mb = 512
file_prefix = "tapflow-test-metrics-{pid}"

[[port]]
name = "tap-a"
device = "net_pcap0,rx_pcap={pcap},infinite_rx=1"

[[port]]
name = "tap-b"
device = "net_pcap1,rx_pcap={pcap},infinite_rx=1"

[cache]
capacity = 65536

[[collector]]
address = "{collector}"

[stats]
interval = 1
prometheus = "127.0.0.1:{metrics_port}"
"#,
            pid = std::process::id(),
            pcap = pcap.display(),
            collector = collector.local_addr().unwrap(),
        ),
    )
    .unwrap();
    let started = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let mut run = Run(tapflow()
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    let pid = run.0.id();
    let addr: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();

    // Wait (bounded) until both workers have published packets.
    let deadline = Instant::now() + Duration::from_secs(60);
    let samples = loop {
        assert!(
            run.0.try_wait().unwrap().is_none(),
            "tapflow run exited early"
        );
        if let Some(samples) = scrape(addr) {
            let busy = find(&samples, "tapflow_rx_packets_total")
                .iter()
                .filter(|s| s.2 > 0.0)
                .count();
            if busy == 2 {
                break samples;
            }
        }
        assert!(Instant::now() < deadline, "no packets on both workers");
        std::thread::sleep(Duration::from_millis(300));
    };

    // A worker's series say which port and queue it polls.
    let mut rx: Vec<(String, String, String)> = find(&samples, "tapflow_rx_packets_total")
        .iter()
        .map(|s| {
            (
                s.1["worker"].clone(),
                s.1["port"].clone(),
                s.1["queue"].clone(),
            )
        })
        .collect();
    rx.sort();
    assert_eq!(
        rx,
        [
            ("0".into(), "tap-a".into(), "0".into()),
            ("1".into(), "tap-b".into(), "0".into())
        ]
    );
    // The NIC's counters: one series per port, labelled by its name alone.
    for family in [
        "tapflow_nic_missed_total",
        "tapflow_nic_errors_total",
        "tapflow_nic_nombuf_total",
        "tapflow_nic_xdp_ring_full_total",
    ] {
        let mut ports: Vec<BTreeMap<String, String>> =
            find(&samples, family).iter().map(|s| s.1.clone()).collect();
        ports.sort();
        let expected: Vec<BTreeMap<String, String>> = ["tap-a", "tap-b"]
            .iter()
            .map(|p| BTreeMap::from([("port".to_string(), p.to_string())]))
            .collect();
        assert_eq!(ports, expected, "{family}");
    }
    assert_eq!(find(&samples, "tapflow_flows_expired_total").len(), 2 * 5);

    // The process metrics describe this very process, as the kernel sees it.
    let start = one(&samples, "process_start_time_seconds");
    assert!(
        (start - started.as_secs_f64()).abs() < 30.0,
        "start {start}, spawned at {started:?}"
    );
    let cpu = one(&samples, "process_cpu_seconds_total");
    assert!(cpu > 0.0, "two polling workers used no CPU: {cpu}");
    let fds = one(&samples, "process_open_fds");
    let listed = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as f64;
    assert!(
        (fds - listed).abs() <= 8.0,
        "process_open_fds {fds}, /proc/{pid}/fd lists {listed}"
    );
    let rss = one(&samples, "process_resident_memory_bytes");
    let hwm = status_kb(pid, "VmHWM").unwrap() as f64 * 1024.0;
    assert!(rss > 1e6 && rss <= hwm, "resident {rss} bytes, peak {hwm}");

    // Hostile clients: 130 connections that never send a byte, and one sending its
    // request a byte a second. Scrapes still succeed.
    let idle: Vec<TcpStream> = (0..130)
        .map(|_| TcpStream::connect(addr).expect("idle connection"))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let slow = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let Ok(mut stream) = TcpStream::connect(addr) else {
                return;
            };
            for byte in b"GET /metrics HTTP/1.1\r\nHost: slow\r\n\r\n" {
                if stop.load(Ordering::Relaxed) || stream.write_all(&[*byte]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    let mut last_packets = 0.0;
    for _ in 0..3 {
        let samples = scrape(addr).expect("a scrape beside idle and slow clients");
        let packets: f64 = find(&samples, "tapflow_rx_packets_total")
            .iter()
            .map(|s| s.2)
            .sum();
        assert!(packets >= last_packets, "counters went backwards");
        last_packets = packets;
    }
    stop.store(true, Ordering::Relaxed);
    slow.join().unwrap();
    drop(idle);

    signal(&run.0, "TERM");
    let deadline = Instant::now() + Duration::from_secs(60);
    while run.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "tapflow run did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut stdout = String::new();
    run.0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    // The final summary counts at least what the last scrape saw.
    let received = common::counter(&stdout, "packets received") as f64;
    assert!(
        received >= last_packets && last_packets > 0.0,
        "summary {received}, scraped {last_packets}\n{stdout}"
    );
}

/// Destinations (a /24 each) and the traffic each of two ports sends them: (third octet,
/// packets, IP length). Each port's own top two (X, Y on a; W, Z on b) is not the top
/// two of the sums (Z, Y): the endpoint must rank the sums.
const PORT_A: &[(u8, u64, u64)] = &[(1, 10, 1000), (2, 9, 1000), (3, 8, 1000)];
const PORT_B: &[(u8, u64, u64)] = &[(4, 95, 100), (3, 8, 1000), (2, 2, 600)];

/// Writes `traffic` as UDP packets from 192.0.2.x to 10.1.<third>.<host>, spread over
/// two hosts of each /24 and several flows; returns the pcap.
fn destination_pcap(
    dir: &std::path::Path,
    name: &str,
    traffic: &[(u8, u64, u64)],
) -> std::path::PathBuf {
    let path = dir.join(name);
    let mut out = probe::pcap::PcapWriter::new(std::io::BufWriter::new(
        std::fs::File::create(&path).unwrap(),
    ))
    .unwrap();
    let mut time_us = 1_700_000_000_000_000u64;
    for &(third, packets, ip_len) in traffic {
        for i in 0..packets {
            let mut frame = Vec::new();
            etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                .ipv4(
                    [192, 0, 2, 1 + (i % 3) as u8],
                    [10, 1, third, 1 + (i % 2) as u8],
                    64,
                )
                .udp(40_000 + (i % 5) as u16, 9_000)
                .write(&mut frame, &vec![0; ip_len as usize - 28])
                .unwrap();
            out.write_packet(time_us, &frame).unwrap();
            time_us += 100;
        }
    }
    std::io::Write::flush(&mut out.into_inner().unwrap()).unwrap();
    path
}

/// Per /24: (packets, octets) summed over the ports, busiest by octets first.
fn ranked_truth(ports: &[&[(u8, u64, u64)]]) -> Vec<(String, u64, u64)> {
    let mut sums: BTreeMap<u8, (u64, u64)> = BTreeMap::new();
    for traffic in ports {
        for &(third, packets, ip_len) in *traffic {
            let sum = sums.entry(third).or_default();
            sum.0 += packets;
            sum.1 += packets * ip_len;
        }
    }
    let mut ranked: Vec<(String, u64, u64)> = sums
        .into_iter()
        .map(|(third, (p, o))| (format!("10.1.{third}.0/24"), p, o))
        .collect();
    ranked.sort_by_key(|t| std::cmp::Reverse(t.2));
    ranked
}

#[test]
fn the_busiest_destinations_are_ranked_over_every_worker() {
    let dir = scratch_dir("metrics-destinations");
    let a = destination_pcap(&dir, "a.pcap", PORT_A);
    let b = destination_pcap(&dir, "b.pcap", PORT_B);
    let truth = ranked_truth(&[PORT_A, PORT_B]);
    // What ranking each port's own top would give: another pair.
    let mut union_of_tops: Vec<(String, u64, u64)> = [PORT_A, PORT_B]
        .iter()
        .flat_map(|port| ranked_truth(&[port]).into_iter().take(2))
        .collect();
    union_of_tops.sort_by_key(|t| std::cmp::Reverse(t.2));
    assert_ne!(
        union_of_tops[..2],
        truth[..2],
        "the traffic must tell them apart"
    );
    let metrics_port = free_port();
    let collector = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let config = dir.join("tapflow.toml");
    // The records leave the cache a second after the file was read, well inside the
    // first 5-second interval, which then closes on both workers' clocks.
    std::fs::write(
        &config,
        format!(
            r#"
[dpdk]
hugepages = false
memory_mb = 512
file_prefix = "tapflow-test-destinations-{pid}"

[[port]]
name = "tap-a"
device = "net_pcap0,rx_pcap={a}"

[[port]]
name = "tap-b"
device = "net_pcap1,rx_pcap={b}"

[cache]
capacity = 4096
inactive_timeout = 1

[[collector]]
address = "{collector}"

[analyzers.per_destination]
trigger = "always"
prefix_len_v4 = 24
top_n = 2
interval = 5

[stats]
interval = 1
prometheus = "127.0.0.1:{metrics_port}"
"#,
            pid = std::process::id(),
            a = a.display(),
            b = b.display(),
            collector = collector.local_addr().unwrap(),
        ),
    )
    .unwrap();
    let mut run = Run(tapflow()
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    let addr: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let samples = loop {
        assert!(
            run.0.try_wait().unwrap().is_none(),
            "tapflow run exited early"
        );
        if let Some(samples) = scrape(addr)
            && !find(&samples, "tapflow_destination_top_octets").is_empty()
        {
            break samples;
        }
        assert!(Instant::now() < deadline, "no busiest destinations shown");
        std::thread::sleep(Duration::from_millis(300));
    };
    let shown = |family: &str| -> Vec<(String, String, u64)> {
        let mut series: Vec<(String, String, u64)> = find(&samples, family)
            .iter()
            .map(|s| (s.1["rank"].clone(), s.1["destination"].clone(), s.2 as u64))
            .collect();
        series.sort();
        series
    };
    let expected = |value: fn(&(String, u64, u64)) -> u64| -> Vec<(String, String, u64)> {
        truth
            .iter()
            .take(2)
            .enumerate()
            .map(|(rank, t)| ((rank + 1).to_string(), t.0.clone(), value(t)))
            .collect()
    };
    assert_eq!(shown("tapflow_destination_top_octets"), expected(|t| t.2));
    assert_eq!(shown("tapflow_destination_top_packets"), expected(|t| t.1));
    let start = one(&samples, "tapflow_destination_top_interval_start_seconds");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        start <= now - 5.0 && start > now - 60.0,
        "interval start {start}, now {now}"
    );
    // `/top` shows the same ranking (no [monitor] here: the destinations alone).
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(b"GET /top HTTP/1.0\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let view: serde_json::Value = serde_json::from_str(body).unwrap();
    let ranked: Vec<(String, String, u64)> = view["destinations"]["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["rank"].to_string(),
                d["destination"].as_str().unwrap().to_string(),
                d["octets"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ranked, expected(|t| t.2), "{body}");
    assert_eq!(
        view["destinations"]["interval_start_us"].as_f64().unwrap() / 1e6,
        start
    );
    signal(&run.0, "TERM");
    let deadline = Instant::now() + Duration::from_secs(60);
    while run.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "tapflow run did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}
