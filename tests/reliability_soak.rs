//! A soak: `tapflow run` on a DPDK pcap port looping its capture forever, with short
//! timeouts and a cache smaller than the capture's flows, so flows are created, evicted,
//! expired and exported all the time. Its resident memory is sampled every second and
//! must not grow once warmed up; SIGTERM must then stop it cleanly with every accounted
//! packet in a record.
//!
//! The duration is `TAPFLOW_SOAK_SECS` (default 60; use e.g. 1800 for a local soak).
//! The rule: split the samples in thirds; the largest RSS of the last third may exceed
//! the largest of the first third (which includes the warm-up) by at most 8 MB.
//!
//! What may legitimately vary: the export queue's backlog (a moment of CPU contention
//! lets batches pile up, each vector about 30 KB). The queue is set to 64 batches here,
//! so its whole depth is 2 MB and any growth beyond the tolerance is the probe's own.
#![cfg(feature = "dpdk")]

mod common;

use std::io::Read;
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{generate_pcap, scratch_dir, tapflow};

const DEFAULT_SECS: u64 = 60;
const GROWTH_LIMIT_KB: u64 = 8 * 1024;

fn write_config(path: &Path, pcap: &Path, prefix: &str, collector: &str) {
    let text = format!(
        r#"
[dpdk]
hugepages = false
memory_mb = 512
mempool_size = 65535
file_prefix = "{prefix}"

[[port]]
device = "net_pcap0,rx_pcap={pcap},infinite_rx=1"

[cache]
capacity = 8192
inactive_timeout = 1
active_timeout = 5

[[collector]]
address = "{collector}"
template_refresh = 5

[export]
options_interval = 5
queue_batches = 64

[stats]
interval = 5
prometheus = false
"#,
        pcap = pcap.display()
    );
    std::fs::write(path, text).unwrap();
}

#[test]
fn memory_stays_flat_under_constant_flow_churn() {
    let secs: u64 = std::env::var("TAPFLOW_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SECS)
        .max(6);
    let dir = scratch_dir("soak");
    // 20,000 flows against an 8,192-entry cache: evictions, FIN ends, idle and active
    // timeouts all happen on every loop of the file. The pcap driver keeps the whole
    // file in mbufs (about 41,000 packets; mempool_size above).
    let pcap = generate_pcap(&dir, 20_000, 2, true);

    // A collector that counts and discards, so the test's own memory stays flat too.
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(16 << 20);
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let collector = socket.local_addr().unwrap().to_string();
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let receiver = {
        let (received, stop) = (received.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !stop.load(Ordering::Relaxed) {
                if socket.recv(&mut buf).is_ok() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    let config = dir.join("tapflow.toml");
    let prefix = format!("tapflow-test-soak-{}", std::process::id());
    write_config(&config, &pcap, &prefix, &collector);
    let mut child = tapflow()
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut stdout_pipe = child.stdout.take().unwrap();
    let mut stderr_pipe = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        stdout_pipe.read_to_string(&mut s).unwrap();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        stderr_pipe.read_to_string(&mut s).unwrap();
        s
    });

    // Sampling starts once datagrams flow: the port is up and records are leaving.
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.load(Ordering::Relaxed) == 0 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "tapflow run exited early"
        );
        assert!(Instant::now() < deadline, "no datagram within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut samples = Vec::new();
    let started = Instant::now();
    for second in 1..=secs {
        let next = started + Duration::from_secs(second);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        assert!(
            child.try_wait().unwrap().is_none(),
            "tapflow run exited during the soak"
        );
        samples.push(common::status_kb(pid, "VmRSS").expect("VmRSS"));
    }
    let datagrams_during_soak = received.load(Ordering::Relaxed);

    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "tapflow run did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    stop.store(true, Ordering::Relaxed);
    receiver.join().unwrap();
    let stdout = out.join().unwrap();
    let stderr = err.join().unwrap();
    let _ = std::fs::remove_file(&pcap);
    assert!(status.success(), "{status:?}\n{stdout}\n{stderr}");

    let third = samples.len() / 3;
    let first_max = *samples[..third].iter().max().unwrap();
    let last_max = *samples[samples.len() - third..].iter().max().unwrap();
    let (low, high) = (
        *samples.iter().min().unwrap(),
        *samples.iter().max().unwrap(),
    );
    let mean = samples.iter().sum::<u64>() / samples.len() as u64;
    let received_packets = common::counter(&stdout, "packets received");
    eprintln!(
        "soak {secs} s: {received_packets} packets, {datagrams_during_soak} datagrams; \
         RSS kB min {low} mean {mean} max {high}; first-third max {first_max}, \
         last-third max {last_max}; samples {samples:?}"
    );
    assert!(
        last_max <= first_max + GROWTH_LIMIT_KB,
        "RSS grew: first third max {first_max} kB, last third max {last_max} kB: {samples:?}"
    );

    // Churn really happened, and the shutdown lost nothing that was accounted.
    assert!(
        common::counter(&stdout, "flows ended: lack_of_resources") > 0,
        "{stdout}"
    );
    assert!(
        common::counter(&stdout, "flows ended: end_of_flow") > 0,
        "{stdout}"
    );
    assert!(
        common::counter(&stdout, "flows ended: idle")
            + common::counter(&stdout, "flows ended: active")
            > 0
    );
    assert!(datagrams_during_soak > secs, "{stdout}");
    let dropped = common::counter(&stdout, "records dropped (queue full)");
    let accounted = received_packets - common::counter(&stdout, "not in any flow");
    let in_records = common::counter(&stdout, "packets in records");
    if dropped == 0 {
        assert_eq!(in_records, accounted, "{stdout}");
    } else {
        // A live port drops batches it cannot queue (and counts them): then only fewer.
        assert!(in_records < accounted, "{stdout}");
    }
}
