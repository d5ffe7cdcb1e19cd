//! Transport KPIs against real TCP stacks (issue 16). `tests/kpi/tcp_paths.py` builds
//! client, tap and server namespaces joined by veth pairs, with a user-space relay in the
//! tap namespace that delays each side differently, drops a share of the bulk transfer's
//! data after the tap point and every SYN to one port, and captures at the tap. It runs
//! a bulk transfer each way, a refused connection, a reset, an unanswered SYN and a
//! connection whose capture starts mid-way, and records the kernels' own retransmission
//! counters. tapflow replays the capture (biflows and KPIs on, JSON records and a NetFlow
//! v9 export to nfcapd), and each figure is held to that truth:
//! - handshake RTTs within 1 ms of the relay's delays, on each side;
//! - retransmissions per direction within 1 of the sender's TCP_INFO (`ss -ti`) and of
//!   its namespace's `nstat` TcpRetransSegs;
//! - each connection's outcome;
//! - nfdump shows the handshake latencies (`%cl %sl`) tapflow measured;
//! - every IP frame of the capture is in exactly one record, forward or reverse.
//!
//! Needs root (network namespaces), ip, ethtool, nstat and python3; skipped with a notice
//! where the machine cannot create a namespace.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

/// Whether this machine can run the test; prints why not.
fn can_run() -> bool {
    for tool in ["ip", "ethtool", "nstat", "python3"] {
        if !have(tool) {
            println!(
                "NOTICE: {tool} is not installed (scripts/setup.sh); skipping the KPI path test"
            );
            return false;
        }
    }
    let probe = format!("tfkprobe{}", std::process::id());
    let made = Command::new("ip")
        .args(["netns", "add", &probe])
        .output()
        .is_ok_and(|o| o.status.success());
    if !made {
        println!(
            "NOTICE: cannot create a network namespace here (needs root); skipping the KPI path test"
        );
        return false;
    }
    let _ = Command::new("ip").args(["netns", "del", &probe]).status();
    true
}

fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn u(v: &Value, name: &str) -> i64 {
    v.get(name).and_then(Value::as_i64).unwrap_or(0)
}

fn assert_within(what: &str, got: i64, want: i64, tolerance: i64) {
    assert!(
        (got - want).abs() <= tolerance,
        "{what}: tapflow says {got}, truth is {want} (tolerance {tolerance})"
    );
}

#[test]
fn kpis_match_real_tcp_stacks_across_an_emulated_path() {
    if !can_run() {
        return;
    }
    let dir = scratch_dir("kpi-paths");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kpi/tcp_paths.py");
    let out = Command::new("timeout")
        .args(["120", "python3"])
        .arg(&script)
        .arg("run")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "tcp_paths.py: {}", text(&out));
    let truth: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("truth.json")).unwrap()).unwrap();
    println!("truth: {truth}");
    let pcap = dir.join("tap.pcap");

    let nfcapd = Nfcapd::start(&dir);
    let json = dir.join("records.jsonl");
    let out = tapflow()
        .arg("replay")
        .arg(&pcap)
        .args(["--source", "file", "--biflow", "--tcp-kpis"])
        .args(["--export", "v9", "--collector", &nfcapd.addr()])
        .arg("--records-json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(out.status.success(), "replay: {}", text(&out));
    let nfcapd_dir = nfcapd.dir.clone();
    nfcapd.stop_and_read();
    let records = records(&json);

    // Each scenario's records: the client's port and the server's.
    let client_ip = truth["client_ip"].as_str().unwrap();
    let server_ip = truth["server_ip"].as_str().unwrap();
    let connection = |scenario: &str| -> Vec<&Value> {
        let cport = truth["client_ports"][scenario].as_i64().unwrap();
        let sport = truth["server_ports"][scenario].as_i64().unwrap();
        records
            .iter()
            .filter(|r| {
                u(r, "proto") == 6
                    && ((u(r, "sport"), u(r, "dport")) == (cport, sport)
                        || (u(r, "sport"), u(r, "dport")) == (sport, cport))
            })
            .collect()
    };
    let first = |scenario: &str| -> &Value {
        let found = connection(scenario);
        assert!(!found.is_empty(), "no record of the {scenario} connection");
        found[0]
    };

    // Handshake RTTs: within 1 ms of the relay's delays, on each side.
    let (server_rtt, client_rtt) = (
        truth["rtt_server_us"].as_i64().unwrap(),
        truth["rtt_client_us"].as_i64().unwrap(),
    );
    for scenario in ["bulk", "reset"] {
        let r = first(scenario);
        assert_eq!(
            r["src"], client_ip,
            "{scenario}: the SYN sender is the source"
        );
        assert_within(
            &format!("{scenario} rtt_server_us"),
            u(r, "rtt_server_us"),
            server_rtt,
            1_000,
        );
        assert_within(
            &format!("{scenario} rtt_client_us"),
            u(r, "rtt_client_us"),
            client_rtt,
            1_000,
        );
    }

    // Retransmissions: the relay did drop data, and each direction's count is the
    // sending kernel's (TCP_INFO, as `ss -ti` prints it) within 1.
    assert!(truth["relay"]["dropped_data"].as_i64().unwrap() > 0);
    let bulk = first("bulk");
    let client_retrans = truth["client"]["bulk"]["total_retrans"].as_i64().unwrap();
    let server_retrans = truth["server_bulk"]["total_retrans"].as_i64().unwrap();
    assert!(client_retrans > 0 && server_retrans > 0, "{truth}");
    let bulk_records = connection("bulk");
    let sum = |name: &str| bulk_records.iter().map(|r| u(r, name)).sum::<i64>();
    assert_within(
        "client's retransmissions",
        sum("retrans_packets"),
        client_retrans,
        1,
    );
    assert_within(
        "server's retransmissions",
        sum("retrans_packets_rev"),
        server_retrans,
        1,
    );
    assert_eq!(bulk["tcp_outcome"], "closed");
    assert!(u(bulk, "app_latency_us") > 0);

    // And per namespace, `nstat` TcpRetransSegs: every retransmission a host's kernel made
    // (data, FINs and SYNs), against what tapflow saw that host send again.
    let mut by_sender: BTreeMap<&str, i64> = BTreeMap::new();
    for r in records.iter().filter(|r| u(r, "proto") == 6) {
        let src = r["src"].as_str().unwrap();
        let dst = r["dst"].as_str().unwrap();
        *by_sender.entry(src).or_default() += u(r, "retrans_packets") + u(r, "syn_retransmits");
        *by_sender.entry(dst).or_default() +=
            u(r, "retrans_packets_rev") + u(r, "syn_retransmits_rev");
    }
    for (side, ip) in [("client", client_ip), ("server", server_ip)] {
        assert_within(
            &format!("{side} TcpRetransSegs"),
            by_sender.get(ip).copied().unwrap_or(0),
            truth["nstat_retrans"][side].as_i64().unwrap(),
            1,
        );
    }

    // Outcomes.
    assert_eq!(truth["client"]["refused"], "refused");
    assert_eq!(first("refused")["tcp_outcome"], "rejected");
    assert_eq!(truth["client"]["reset"]["reset"], true);
    assert_eq!(first("reset")["tcp_outcome"], "reset");
    assert_eq!(truth["client"]["unanswered"], "timed out");
    let unanswered = first("unanswered");
    assert_eq!(unanswered["tcp_outcome"], "half_open");
    assert!(u(unanswered, "syn_retransmits") >= 1);
    assert_eq!(u(unanswered, "packets_rev"), 0);
    for r in connection("midstream") {
        assert_eq!(r["tcp_outcome"], "midstream", "{r}");
        assert!(r.get("rtt_server_us").is_none());
    }

    // nfdump shows the latencies tapflow measured (`%cl %sl`, ms with 3 decimals).
    let out = Command::new("nfdump")
        .arg("-R")
        .arg(&nfcapd_dir)
        .args(["-q", "-N", "-o", "fmt:%sa %sp %dp %cl %sl %al"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    let ms = |us: i64| format!("{:.3}", us as f64 / 1000.0);
    let want = format!(
        "{client_ip} {} {} {} {} {}",
        u(bulk, "sport"),
        u(bulk, "dport"),
        ms(u(bulk, "rtt_client_us")),
        ms(u(bulk, "rtt_server_us")),
        ms(u(bulk, "app_latency_us")),
    );
    assert!(
        shown
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") == want),
        "nfdump does not show {want:?}:\n{shown}"
    );

    // Nothing lost, nothing twice: every IP frame of the capture is in one record.
    let ip_frames = read_pcap_frames(&pcap)
        .iter()
        .filter(|f| f.len() >= 14 && matches!(&f[12..14], [0x08, 0x00] | [0x86, 0xdd]))
        .count() as i64;
    let exported: i64 = records
        .iter()
        .map(|r| u(r, "packets") + u(r, "packets_rev"))
        .sum();
    assert_eq!(exported, ip_frames);
    let _ = std::fs::remove_dir_all(&dir);
}
