//! Real collectors decode what tapflow exports: nfdump's nfcapd (over the UDP transport)
//! and tshark (from a pcap of the same datagrams). Skipped, with a notice, when the tools
//! are not installed; CI installs them (Debian: nfdump, tshark).

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use exporter::{
    Collector, CollectorConfig, Datagram, ExportSession, ExportVersion, ExporterStatistics,
    SessionConfig, TransportKind,
};
use flowcache::{AggregateRecord, FlowRecord, SamplingAlgorithm, SamplingInfo};

fn installed(tool: &str, version_flag: &str) -> bool {
    let found = Command::new(tool)
        .arg(version_flag)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        println!("NOTICE: {tool} is not installed; skipping this collector check");
    }
    found
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tapflow-exporter-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Set TAPFLOW_KEEP_ARTIFACTS=1 to keep the nfcapd files and pcaps for a look by hand.
fn clean_up(dir: &Path) {
    if std::env::var_os("TAPFLOW_KEEP_ARTIFACTS").is_some() {
        println!("kept {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An nfcapd we started, on a port of its own, writing into a scratch directory. It logs
/// to stderr, which is read line by line.
struct Nfcapd {
    child: Child,
    dir: PathBuf,
    port: u16,
    lines: mpsc::Receiver<String>,
}

impl Nfcapd {
    /// Another test may take the free port we picked before nfcapd binds it: retry.
    fn start(name: &str) -> Nfcapd {
        let mut last = Vec::new();
        for _ in 0..5 {
            match Nfcapd::try_start(name) {
                Ok(n) => return n,
                Err(said) => last = said,
            }
        }
        panic!("nfcapd did not start; it said {last:#?}");
    }

    fn try_start(name: &str) -> Result<Nfcapd, Vec<String>> {
        let dir = scratch_dir(name);
        let port = free_udp_port();
        let mut child = Command::new("nfcapd")
            .arg("-w")
            .arg(&dir)
            .args([
                "-b",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-B",
                "8388608",
                "-v",
                "-v",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nfcapd");
        let (tx, lines) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut n = Nfcapd {
            child,
            dir,
            port,
            lines,
        };
        match n.wait_for("Startup", Duration::from_secs(10)) {
            Ok(_) => Ok(n),
            Err(said) => {
                let _ = n.child.kill();
                let _ = n.child.wait();
                Err(said)
            }
        }
    }

    fn wait_for(&self, needle: &str, timeout: Duration) -> Result<Vec<String>, Vec<String>> {
        let mut seen = Vec::new();
        let deadline = std::time::Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let done = line.contains(needle);
                    seen.push(line);
                    if done {
                        return Ok(seen);
                    }
                }
                Err(_) => break,
            }
        }
        Err(seen)
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Stops nfcapd (SIGTERM to our child only, so it closes its file) and returns its
    /// closing statistics line.
    fn stop(mut self) -> (PathBuf, String) {
        std::thread::sleep(Duration::from_millis(300));
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let lines = self
            .wait_for("Terminating", Duration::from_secs(10))
            .unwrap_or_else(|said| panic!("nfcapd did not stop: {said:#?}"));
        self.child.wait().unwrap();
        for line in &lines {
            println!("nfcapd: {line}");
        }
        let stats = lines
            .into_iter()
            .rfind(|l| l.contains("Sequence Errors"))
            .expect("nfcapd statistics line");
        (self.dir.clone(), stats)
    }
}

/// A failing test must not leave its nfcapd behind.
impl Drop for Nfcapd {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// nfdump's view of every flow in `dir`, one line each.
fn nfdump(dir: &Path, format: &str) -> Vec<String> {
    let out = Command::new("nfdump")
        .arg("-R")
        .arg(dir)
        .args(["-q", "-N", "-6", "-o", format])
        .output()
        .expect("run nfdump");
    assert!(
        out.status.success(),
        "nfdump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect()
}

const FORMAT: &str = "fmt:%tsr %ter %pr %sa %da %sp %dp %pkt %byt %fl %stos %in %svln";

fn expected_line(r: &FlowRecord, version: ExportVersion, scale: u64) -> String {
    let k = &r.key;
    // NetFlow v5 records have no VLAN field.
    let vlan = if version == ExportVersion::V5 {
        0
    } else {
        k.vlan
    };
    format!(
        "{}.{:03} {}.{:03} {} {} {} {} {} {} {} 1 {} {} {}",
        r.first_ms / 1000,
        r.first_ms % 1000,
        r.last_ms / 1000,
        r.last_ms % 1000,
        k.protocol,
        k.src_ip(),
        k.dst_ip(),
        k.src_port,
        k.dst_port,
        r.packets * scale,
        r.octets * scale,
        k.tos,
        k.input_port,
        vlan,
    )
}

/// Records with times on a whole second (v9's header gives the collector only whole
/// seconds to place sysUptime-relative times: see README) and plain, unscaled counts.
fn records(version: ExportVersion, now_ms: u64) -> Vec<FlowRecord> {
    let mut out: Vec<FlowRecord> = (0..70)
        .map(|i| {
            let mut r = if i % 5 == 4 && version != ExportVersion::V5 {
                flow_v6(i)
            } else {
                flow_v4(i)
            };
            r.first_ms = now_ms - 20_000 + 7 * u64::from(i);
            r.last_ms = now_ms - 1_000 + u64::from(i);
            r
        })
        .collect();
    out.sort_by_key(|r| r.key.src_port);
    out
}

fn check_nfcapd(version: ExportVersion, sampling: SamplingInfo, scale: u64) {
    let nfcapd = Nfcapd::start(&format!("nfcapd-{version}-{}", sampling.interval));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    // Whole seconds: v9 times then decode exactly (see README, "Times").
    let now_ms = now_ms - now_ms % 1000;
    let start_ms = now_ms - 3_600_000;
    let session = SessionConfig {
        version,
        observation_domain_id: 7,
        ..SessionConfig::default()
    };
    let mut collector = Collector::new(
        CollectorConfig::new(nfcapd.addr(), TransportKind::Udp, session),
        start_ms,
    )
    .unwrap();
    let flows = records(version, now_ms);
    collector.export_options(sampling, &ExporterStatistics::default(), now_ms);
    for chunk in flows.chunks(16) {
        collector.export_flows(chunk, now_ms);
    }
    let aggregates: Vec<AggregateRecord> = (0..5)
        .map(|i| AggregateRecord {
            first_ms: now_ms - 60_000,
            last_ms: now_ms - 1_000,
            ..aggregate(i)
        })
        .collect();
    collector.export_aggregates(&aggregates, now_ms);
    let sent = *collector.counters();
    assert_eq!(sent.send_errors, 0);
    let (dir, stats) = nfcapd.stop();
    println!("{version}: nfcapd says: {stats}");
    assert!(stats.contains("Sequence Errors: 0"), "{stats}");
    assert!(stats.contains("Bad Packets: 0"), "{stats}");
    let aggregates_sent = if version == ExportVersion::V5 {
        0
    } else {
        aggregates.len()
    };
    assert!(
        stats.contains(&format!("Flows: {}", flows.len() + aggregates_sent)),
        "{stats}"
    );

    let got: BTreeSet<String> = nfdump(&dir, FORMAT).into_iter().collect();
    let mut want: BTreeSet<String> = flows
        .iter()
        .map(|r| expected_line(r, version, scale))
        .collect();
    // An aggregate has no addresses, so nfdump shows 0.0.0.0, and its flow count.
    want.extend(aggregates[..aggregates_sent].iter().map(|a| {
        format!(
            "{}.000 {}.000 {} 0.0.0.0 0.0.0.0 {} {} {} {} {} 0 0 0",
            a.first_ms / 1000,
            a.last_ms / 1000,
            a.protocol,
            a.src_port,
            a.dst_port,
            a.packets * scale,
            a.octets * scale,
            a.flows,
        )
    }));
    let missing: Vec<&String> = want.difference(&got).take(3).collect();
    let unexpected: Vec<&String> = got.difference(&want).take(3).collect();
    assert!(
        missing.is_empty() && unexpected.is_empty() && got.len() == want.len(),
        "{version}: nfdump decoded other flows than were sent ({FORMAT}):\n\
         missing {missing:#?}\nunexpected {unexpected:#?}"
    );
    clean_up(&dir);
}

#[test]
fn nfcapd_decodes_v5() {
    if installed("nfcapd", "-V") && installed("nfdump", "-V") {
        check_nfcapd(ExportVersion::V5, SamplingInfo::default(), 1);
    }
}

#[test]
fn nfcapd_decodes_v9() {
    if installed("nfcapd", "-V") && installed("nfdump", "-V") {
        check_nfcapd(ExportVersion::V9, SamplingInfo::default(), 1);
    }
}

#[test]
fn nfcapd_decodes_ipfix() {
    if installed("nfcapd", "-V") && installed("nfdump", "-V") {
        check_nfcapd(ExportVersion::Ipfix, SamplingInfo::default(), 1);
    }
}

/// nfdump reads the sampling options record and scales counts by the interval.
#[test]
fn nfcapd_applies_the_sampling_options() {
    if installed("nfcapd", "-V") && installed("nfdump", "-V") {
        let sampling = SamplingInfo {
            algorithm: SamplingAlgorithm::Deterministic,
            interval: 10,
        };
        check_nfcapd(ExportVersion::V9, sampling, 10);
        check_nfcapd(ExportVersion::Ipfix, sampling, 10);
    }
}

/// A classic pcap of the datagrams, as UDP from 192.0.2.1:50000 to 192.0.2.2:`port`.
fn write_pcap(path: &Path, port: u16, datagrams: &[Vec<u8>], first_secs: u32) {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65_535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // Ethernet
    for (i, d) in datagrams.iter().enumerate() {
        let mut frame = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([192, 0, 2, 1], [192, 0, 2, 2], 64)
            .udp(50_000, port)
            .write(&mut frame, d)
            .unwrap();
        out.extend_from_slice(&first_secs.to_le_bytes());
        out.extend_from_slice(&(i as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame);
    }
    std::fs::File::create(path)
        .unwrap()
        .write_all(&out)
        .unwrap();
}

fn check_tshark(version: ExportVersion, sampling_in_records: bool) {
    let now_ms = START_MS + 3_600_000;
    let mut s = ExportSession::new(
        SessionConfig {
            version,
            observation_domain_id: 7,
            sampling_in_records,
            ..SessionConfig::default()
        },
        START_MS,
    )
    .unwrap();
    let sampling = SamplingInfo {
        algorithm: SamplingAlgorithm::Random,
        interval: 100,
    };
    let flows: Vec<FlowRecord> = records(version, now_ms)
        .into_iter()
        .map(|r| self::sampled(r, SamplingAlgorithm::Random, 100))
        .collect();
    let mut datagrams = Vec::new();
    let mut push = |d: &Datagram<'_>| datagrams.push(d.bytes.to_vec());
    s.handle_timeout(now_ms, &mut push);
    s.encode_options(sampling, &ExporterStatistics::default(), now_ms, &mut push);
    s.encode_flows(&flows, now_ms, &mut push);
    s.encode_aggregates(
        &(0..20).map(aggregate).collect::<Vec<_>>(),
        now_ms,
        &mut push,
    );

    let dir = scratch_dir(&format!("tshark-{version}-{sampling_in_records}"));
    let pcap = dir.join("export.pcap");
    let port = 2055;
    write_pcap(&pcap, port, &datagrams, (now_ms / 1000) as u32);
    let out = Command::new("tshark")
        .arg("-r")
        .arg(&pcap)
        .args(["-d", &format!("udp.port=={port},cflow"), "-V"])
        .output()
        .expect("run tshark");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for bad in [
        "Malformed",
        "Expert Info (Warn",
        "Expert Info (Error",
        "Unknown(",
    ] {
        let hits: Vec<&str> = text.lines().filter(|l| l.contains(bad)).take(5).collect();
        assert!(
            hits.is_empty(),
            "{version}: tshark reports {bad:?}: {hits:#?}"
        );
    }
    // Every record we encoded is dissected: tshark heads each with "Flow N" (v9, IPFIX)
    // or "pdu N/M" (v5).
    let is_record_heading = |line: &str| {
        let mut words = line.split_whitespace();
        let numbered = |w: Option<&str>| {
            w.is_some_and(|w| {
                w.split('/')
                    .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
        };
        match (words.next(), words.next(), words.next()) {
            (Some("Flow" | "pdu"), n, None) => numbered(n),
            _ => false,
        }
    };
    let flow_lines = text.lines().filter(|l| is_record_heading(l)).count();
    let expected = match version {
        ExportVersion::V5 => flows.len(),
        // flows, aggregates, options records: sampling, statistics (and IPFIX's selector)
        ExportVersion::V9 => flows.len() + 20 + 2,
        ExportVersion::Ipfix => flows.len() + 20 + 3,
    };
    assert_eq!(
        flow_lines, expected,
        "{version}: records dissected by tshark"
    );
    clean_up(&dir);
}

#[test]
fn tshark_dissects_v5_cleanly() {
    if installed("tshark", "-v") {
        check_tshark(ExportVersion::V5, false);
    }
}

#[test]
fn tshark_dissects_v9_cleanly() {
    if installed("tshark", "-v") {
        check_tshark(ExportVersion::V9, false);
        check_tshark(ExportVersion::V9, true);
    }
}

#[test]
fn tshark_dissects_ipfix_cleanly() {
    if installed("tshark", "-v") {
        check_tshark(ExportVersion::Ipfix, false);
        check_tshark(ExportVersion::Ipfix, true);
    }
}

/// nfcapd starts after the exporter: what it receives before the next template refresh
/// cannot be decoded, everything from the refresh on is.
#[test]
fn nfcapd_started_late_decodes_from_the_next_template_refresh() {
    if !(installed("nfcapd", "-V") && installed("nfdump", "-V")) {
        return;
    }
    for version in [ExportVersion::V9, ExportVersion::Ipfix] {
        let now_ms = START_MS + 3_600_000;
        let mut s = ExportSession::new(
            SessionConfig {
                version,
                template_refresh_datagrams: 5,
                ..SessionConfig::default()
            },
            START_MS,
        )
        .unwrap();
        // One datagram per call: 0 and 6 carry templates.
        let mut datagrams = Vec::new();
        let mut batches = Vec::new();
        for i in 0..12u32 {
            let batch: Vec<FlowRecord> = (i * 10..i * 10 + 10).map(flow_v4).collect();
            let before = datagrams.len();
            s.encode_flows(&batch, now_ms, &mut |d: &Datagram<'_>| {
                datagrams.push(d.bytes.to_vec())
            });
            assert_eq!(datagrams.len(), before + 1);
            batches.push(batch);
        }
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let nfcapd = Nfcapd::start(&format!("late-{version}"));
        // Datagrams 0..3 went out before nfcapd was there: lost.
        for d in &datagrams[3..] {
            sender.send_to(d, nfcapd.addr()).unwrap();
        }
        let (dir, stats) = nfcapd.stop();
        assert!(stats.contains("Flows: 60"), "{version}: {stats}");
        let got: BTreeSet<String> = nfdump(&dir, "fmt:%sa %sp").into_iter().collect();
        let want: BTreeSet<String> = batches[6..]
            .iter()
            .flatten()
            .map(|r| format!("{} {}", r.key.src_ip(), r.key.src_port))
            .collect();
        assert_eq!(got, want, "{version}");
        clean_up(&dir);
    }
}

/// A record as the KPI extension leaves it: a biflow with TCP KPIs. `i` varies the
/// figures so that each record's fields can be told apart.
fn kpi_record(mut r: FlowRecord, i: u32) -> FlowRecord {
    use flowcache::{RecordExtras, ReverseCounters, TcpDirectionKpis, TcpKpis, TcpOutcome};
    let i64 = u64::from(i);
    r.extras = Some(Box::new(RecordExtras {
        reverse: Some(ReverseCounters {
            packets: 1_000 + i64,
            octets: 900_000 + i64,
            first_ms: r.first_ms + 1,
            last_ms: r.last_ms,
            tcp_flags: 0x12,
            min_ttl: 60,
            max_ttl: 61,
            end_reason: r.end_reason,
        }),
        tcp: Some(TcpKpis {
            rtt_server_us: Some(1_234_567 + i),
            rtt_client_us: Some(2_500 + i),
            app_latency_us: Some(45_000 + i),
            forward: TcpDirectionKpis {
                rtt_min_us: Some(100 + i),
                rtt_mean_us: Some(200 + i),
                rtt_max_us: Some(300 + i),
                retrans_packets: 7 + i,
                retrans_octets: 7_000 + i64,
                out_of_order_packets: 3,
                zero_window_events: 1,
                syn_retransmits: 2,
            },
            reverse: TcpDirectionKpis {
                retrans_packets: 11 + i,
                ..TcpDirectionKpis::default()
            },
            outcome: TcpOutcome::ALL[i as usize % TcpOutcome::ALL.len()],
        }),
        ..RecordExtras::default()
    }));
    r
}

/// KPI records (every other one without the TCP section, as a UDP biflow has none).
fn kpi_records(version: ExportVersion, now_ms: u64) -> Vec<FlowRecord> {
    records(version, now_ms)
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let mut r = kpi_record(r, i as u32);
            if i % 2 == 1 {
                r.extras.as_mut().unwrap().tcp = None;
            }
            r
        })
        .collect()
}

const ALL_SECTIONS: exporter::ExtraSections = exporter::ExtraSections {
    reverse: true,
    tcp: true,
    dns: false,
};

/// tshark dissects the biflow and KPI elements (RFC 5103 reverse elements, nProbe's
/// latencies, tapflow's enterprise elements) with no malformed or warning flag, and reads
/// the values that were sent.
#[test]
fn tshark_dissects_the_kpi_elements_cleanly() {
    if !installed("tshark", "-v") {
        return;
    }
    for version in [ExportVersion::Ipfix, ExportVersion::V9] {
        let now_ms = START_MS + 3_600_000;
        let mut s = ExportSession::new(
            SessionConfig {
                version,
                observation_domain_id: 7,
                extras: ALL_SECTIONS,
                ..SessionConfig::default()
            },
            START_MS,
        )
        .unwrap();
        let flows = kpi_records(version, now_ms);
        let mut datagrams = Vec::new();
        let mut push = |d: &Datagram<'_>| datagrams.push(d.bytes.to_vec());
        s.handle_timeout(now_ms, &mut push);
        s.encode_flows(&flows, now_ms, &mut push);
        let dir = scratch_dir(&format!("tshark-kpi-{version}"));
        let pcap = dir.join("export.pcap");
        write_pcap(&pcap, 2055, &datagrams, (now_ms / 1000) as u32);
        let out = Command::new("tshark")
            .arg("-r")
            .arg(&pcap)
            .args(["-d", "udp.port==2055,cflow", "-V"])
            .output()
            .expect("run tshark");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        for bad in ["Malformed", "Expert Info (Warn", "Expert Info (Error"] {
            let hits: Vec<&str> = text.lines().filter(|l| l.contains(bad)).take(5).collect();
            assert!(
                hits.is_empty(),
                "{version}: tshark reports {bad:?}: {hits:#?}"
            );
        }
        if std::env::var_os("TAPFLOW_SHOW_TSHARK").is_some() {
            println!("{text}");
        }
        let flow_lines = text
            .lines()
            .filter(|l| l.trim_start().starts_with("Flow ") && l.split_whitespace().count() == 2)
            .count();
        assert_eq!(flow_lines, flows.len(), "{version}: records dissected");
        // The first record's values, as tshark reads them.
        let expected: &[&str] = if version == ExportVersion::Ipfix {
            &[
                "Biflow Direction: Initiator (1)",
                "Packets: 1000 (Reverse Type 2 PKTS)",
                "Octets: 900000 (Reverse Type 1 BYTES)",
                // rtt_server_us 1234567, tapflow element 10 (enterprise 32473)
                "Type 10: Value (hex bytes): 00 12 d6 87",
                // retransmitted packets of the responder's direction: 11, element 5 | 0x4000
                "Type 16389: Value (hex bytes): 00 00 00 0b",
            ]
        } else {
            &["Post Packets: 1000", "Post Octets: 900000"]
        };
        let first: String = text
            .split("Flow 1\n")
            .nth(1)
            .and_then(|rest| rest.split("Flow 2\n").next())
            .unwrap_or_default()
            .to_string();
        for want in expected {
            assert!(first.contains(want), "{version}: no {want:?} in {first}");
        }
        clean_up(&dir);
    }
}

/// nfdump shows the handshake latencies (`%cl %sl %al`, from nProbe's v9 elements) and a
/// biflow's reverse counters (`%opkt %obyt`: v9 OUT_PKTS/OUT_BYTES, IPFIX RFC 5103 reverse
/// elements) as they were sent.
#[test]
fn nfdump_shows_latencies_and_reverse_counters() {
    if !(installed("nfcapd", "-V") && installed("nfdump", "-V")) {
        return;
    }
    for version in [ExportVersion::V9, ExportVersion::Ipfix] {
        let nfcapd = Nfcapd::start(&format!("nfcapd-kpi-{version}"));
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let now_ms = now_ms - now_ms % 1000;
        let session = SessionConfig {
            version,
            observation_domain_id: 7,
            extras: ALL_SECTIONS,
            ..SessionConfig::default()
        };
        let mut collector = Collector::new(
            CollectorConfig::new(nfcapd.addr(), TransportKind::Udp, session),
            now_ms - 3_600_000,
        )
        .unwrap();
        let flows = kpi_records(version, now_ms);
        for chunk in flows.chunks(16) {
            collector.export_flows(chunk, now_ms);
        }
        let (dir, stats) = nfcapd.stop();
        assert!(stats.contains("Bad Packets: 0"), "{stats}");
        let got: BTreeSet<String> = nfdump(&dir, "fmt:%sa %sp %opkt %obyt %cl %sl %al")
            .into_iter()
            .collect();
        let ms = |us: Option<u32>| format!("{:.3}", f64::from(us.unwrap_or(0)) / 1000.0);
        let want: BTreeSet<String> = flows
            .iter()
            .map(|r| {
                let extras = r.extras.as_ref().unwrap();
                let reverse = extras.reverse.unwrap();
                let tcp = extras.tcp.unwrap_or_default();
                // nfdump 1.7 reads the latencies from v9 only (its IPFIX decoder maps no
                // ntop element).
                let (cl, sl, al) = if version == ExportVersion::V9 {
                    (
                        ms(tcp.rtt_client_us),
                        ms(tcp.rtt_server_us),
                        ms(tcp.app_latency_us),
                    )
                } else {
                    (ms(None), ms(None), ms(None))
                };
                format!(
                    "{} {} {} {} {cl} {sl} {al}",
                    r.key.src_ip(),
                    r.key.src_port,
                    reverse.packets,
                    reverse.octets,
                )
            })
            .collect();
        let missing: Vec<&String> = want.difference(&got).take(3).collect();
        let unexpected: Vec<&String> = got.difference(&want).take(3).collect();
        assert!(
            missing.is_empty() && unexpected.is_empty(),
            "{version}: missing {missing:#?}\nunexpected {unexpected:#?}"
        );
        clean_up(&dir);
    }
}
