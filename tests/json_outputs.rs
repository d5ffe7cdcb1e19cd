//! The `--json` outputs scripts read: one JSON object, the same facts as the text.

mod common;

use common::{scratch_dir, tapflow};

#[test]
fn check_config_json_lists_every_problem_with_its_place() {
    let dir = scratch_dir("check-json");
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[cache]\ncapactiy = 5\n\n[[collector]]\naddress = \"127.0.0.1:2055\"\nmtu = 10\n",
    )
    .unwrap();
    let out = tapflow()
        .args(["check-config", "--json", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["valid"], false);
    let problems = report["problems"].as_array().unwrap();
    let at = |key: &str| {
        problems
            .iter()
            .find(|p| p["key"] == key)
            .unwrap_or_else(|| panic!("no {key} in {report}"))
    };
    assert_eq!(at("cache.capactiy")["line"], 2);
    assert!(
        at("cache.capactiy")["message"]
            .as_str()
            .unwrap()
            .contains("did you mean `capacity`")
    );
    assert_eq!(at("collector[0].mtu")["line"], 6);

    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "[[port]]\ndevice = \"net_af_packet0,iface=eth1\"\n\n\
         [[collector]]\naddress = \"127.0.0.1:2055\"\n",
    )
    .unwrap();
    let out = tapflow()
        .args(["check-config", "--json", good.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["valid"], true);
    assert_eq!(report["problems"].as_array().unwrap().len(), 0);
    assert!(
        report["description"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1:2055")
    );
}

#[test]
fn replay_json_summary_counts_what_the_capture_holds() {
    let dir = scratch_dir("replay-json-summary");
    let pcap = common::generate_pcap(&dir, 40, 5, true);
    let truth = common::ground_truth(&pcap);
    let (truth_packets, truth_octets) = common::sum(&truth);
    let out = tapflow()
        .args([
            "replay",
            pcap.to_str().unwrap(),
            "--source",
            "file",
            "--json",
        ])
        .args(["--records-json", dir.join("r.jsonl").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::text(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let totals = &summary["counters"]["totals"];
    let in_file = summary["packets_in_file"].as_u64().unwrap();
    assert_eq!(totals["tapflow_rx_packets_total"], in_file);
    assert_eq!(totals["tapflow_cache_packets_total"], truth_packets);
    assert_eq!(totals["tapflow_cache_octets_total"], truth_octets);
    let unaccounted = totals["tapflow_unaccounted_packets_total"]
        .as_u64()
        .unwrap();
    assert_eq!(unaccounted + truth_packets, in_file, "{summary}");
    let lines = std::fs::read_to_string(dir.join("r.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(summary["counters"]["json_records"]["lines"], lines as u64);
    assert_eq!(lines, truth.len());
}
