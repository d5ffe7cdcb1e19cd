//! `tapflow replay --records-json` and `--config`: every record as a JSON line, equal flow
//! by flow to a ground truth computed by etherparse; a configuration file's settings run
//! the replay, and the stable flags override them.

mod common;

use std::net::IpAddr;
use std::path::Path;

use common::{
    Totals, UdpCollector, assert_same_flows, generate_pcap, ground_truth, scratch_dir, tapflow,
    text,
};

fn records(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn totals(records: &[serde_json::Value]) -> Totals {
    let mut totals = Totals::new();
    for r in records {
        let ip = |name: &str| r[name].as_str().unwrap().parse::<IpAddr>().unwrap();
        let port = |name: &str| r[name].as_u64().unwrap() as u16;
        let key = (
            ip("src"),
            ip("dst"),
            port("sport"),
            port("dport"),
            r["proto"].as_u64().unwrap() as u8,
        );
        let e = totals.entry(key).or_default();
        e.0 += r["packets"].as_u64().unwrap();
        e.1 += r["octets"].as_u64().unwrap();
    }
    totals
}

#[test]
fn json_records_equal_the_ground_truth_with_no_collector() {
    let dir = scratch_dir("replay-json");
    let pcap = generate_pcap(&dir, 300, 7, true);
    let out = dir.join("records.jsonl");
    let run = tapflow()
        .args(["replay", pcap.to_str().unwrap(), "--source", "file"])
        .args(["--records-json", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", text(&run));
    let records = records(&out);
    assert_same_flows("JSON records", &ground_truth(&pcap), &totals(&records));
    for r in &records {
        assert!(r["first_ms"].as_u64().unwrap() <= r["last_ms"].as_u64().unwrap());
        assert!(
            [
                "idle",
                "active",
                "end_of_flow",
                "forced",
                "lack_of_resources"
            ]
            .contains(&r["end_reason"].as_str().unwrap()),
            "{r}"
        );
    }
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.contains(&format!("JSON records to {}", out.display())),
        "{stdout}"
    );
}

#[test]
fn records_on_stdout_leave_the_summary_to_stderr() {
    let dir = scratch_dir("replay-json-stdout");
    let pcap = generate_pcap(&dir, 20, 3, false);
    let run = tapflow()
        .args(["replay", pcap.to_str().unwrap(), "--source", "file"])
        .args(["--records-json", "-"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", text(&run));
    let stdout = String::from_utf8(run.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 20, "one line per flow: {stdout}");
    assert!(stdout.lines().all(|l| l.starts_with('{')));
    assert!(String::from_utf8_lossy(&run.stderr).contains("packets received"));
}

#[test]
fn a_configuration_runs_the_replay_and_flags_override_it() {
    let dir = scratch_dir("replay-config");
    let pcap = generate_pcap(&dir, 50, 4, false);
    let collector = UdpCollector::bind();
    let config = dir.join("tapflow.toml");
    // Ports do not matter to a replay; the file's own collector and aggregation do.
    std::fs::write(
        &config,
        format!(
            "[[port]]\ndevice = \"net_af_packet0,iface=tap0\"\n\n\
             [aggregation]\nprotocol_port = true\n\n\
             [[collector]]\naddress = \"{}\"\nversion = \"v9\"\n",
            collector.addr()
        ),
    )
    .unwrap();
    let out = dir.join("aggregates.jsonl");
    let run = tapflow()
        .args(["replay", pcap.to_str().unwrap(), "--source", "file"])
        .args(["--config", config.to_str().unwrap()])
        .args(["--records-json", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", text(&run));
    let aggregates = records(&out);
    assert!(!aggregates.is_empty());
    assert!(aggregates.iter().all(|a| a["aggregate"] == "protocol-port"));
    let flows: u64 = aggregates
        .iter()
        .map(|a| a["flows"].as_u64().unwrap())
        .sum();
    assert_eq!(flows, 50);
    let datagrams = collector.drain();
    assert!(
        datagrams.iter().all(|d| d[..2] == [0, 9]),
        "v9 from the file"
    );

    // --export overrides the file's version; a bad file names its key and line.
    let collector = UdpCollector::bind();
    std::fs::write(
        &config,
        format!(
            "[[collector]]\naddress = \"{}\"\nversion = \"v9\"\n",
            collector.addr()
        ),
    )
    .unwrap();
    let run = tapflow()
        .args(["replay", pcap.to_str().unwrap(), "--source", "file"])
        .args(["--config", config.to_str().unwrap(), "--export", "ipfix"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", text(&run));
    let datagrams = collector.drain();
    assert!(
        datagrams.iter().all(|d| d[..2] == [0, 10]),
        "IPFIX by the flag"
    );

    std::fs::write(&config, "[cache]\ninactive_timeout = \"soon\"\n").unwrap();
    let run = tapflow()
        .args(["replay", pcap.to_str().unwrap(), "--source", "file"])
        .args(["--config", config.to_str().unwrap(), "--records-json", "-"])
        .output()
        .unwrap();
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("tapflow.toml:2:") && stderr.contains("inactive_timeout"),
        "{stderr}"
    );
}

#[test]
fn a_replay_with_nowhere_to_export_says_what_to_give() {
    let dir = scratch_dir("replay-nowhere");
    let pcap = generate_pcap(&dir, 2, 1, false);
    let run = tapflow()
        .args(["replay", pcap.to_str().unwrap(), "--source", "file"])
        .output()
        .unwrap();
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("--collector") && stderr.contains("--records-json"),
        "{stderr}"
    );
}
