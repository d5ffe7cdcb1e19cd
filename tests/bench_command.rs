//! `tapflow bench` as the bench scripts run it: the JSON it prints holds together. Nothing
//! here judges speed (that is BENCHMARKS.md's business); these check that the measurement
//! is made the way it says and that its counters account for the trace it replays.

mod common;

use common::{scratch_dir, tapflow, text};

/// `key`'s value in tapflow bench's JSON object.
fn field(json: &serde_json::Value, key: &str) -> serde_json::Value {
    json.get(key)
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        .clone()
}

fn number(json: &serde_json::Value, key: &str) -> f64 {
    field(json, key)
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {json}"))
}

fn bench_json(args: &[&str]) -> serde_json::Value {
    let out = tapflow()
        .arg("bench")
        .args(args)
        .args(["--duration", "0.4", "--ceiling-duration", "0.2", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out)))
}

/// Ratios are the quotient of the rates printed beside them.
fn assert_ratios_consistent(json: &serde_json::Value) {
    let worker = number(json, "mpps_cpu");
    let ceiling = number(json, "ceiling_mpps_cpu");
    let phase = number(json, "ceiling_phase_mpps_cpu");
    assert!(worker > 0.0 && ceiling > 0.0 && phase > 0.0, "{json}");
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-3 * b.max(1.0) + 1e-3;
    assert!(close(number(json, "ratio"), worker / ceiling), "{json}");
    assert!(close(number(json, "ratio_phase"), worker / phase), "{json}");
}

#[test]
fn dpdk_bench_pairs_the_ceiling_and_accounts_for_every_flow_of_the_trace() {
    let dir = scratch_dir("bench-dpdk");
    let pcap = dir.join("flows.pcap");
    let pcap = pcap.to_str().unwrap();
    let out = tapflow()
        .args([
            "bench",
            "--pcap",
            pcap,
            "--create-flows",
            "3000",
            "--create-only",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let json = bench_json(&["--pcap", pcap]);

    assert_eq!(field(&json, "source"), "dpdk-pcap");
    assert_eq!(number(&json, "flows"), 3000.0);
    // The ceiling the ratio divides by was measured in slices of the worker's window.
    assert_eq!(field(&json, "ceiling_paired"), true, "{json}");
    assert!(number(&json, "ceiling_packets") > 0.0, "{json}");
    assert_ratios_consistent(&json);
    // 3000 flows in a 65 536-entry cache: each flow of the looped file is created once,
    // never evicted, and every one leaves at shutdown and reaches the exporter.
    assert_eq!(number(&json, "flows_created"), 3000.0, "{json}");
    assert_eq!(number(&json, "evictions"), 0.0, "{json}");
    assert_eq!(number(&json, "flows_cached"), 3000.0, "{json}");
    assert_eq!(
        number(&json, "records_exported") + number(&json, "records_dropped"),
        3000.0,
        "{json}"
    );
    // The measured window is part of what the worker received.
    assert!(
        number(&json, "packets_measured") <= number(&json, "packets"),
        "{json}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn synthetic_bench_has_no_paired_ceiling_and_says_so() {
    let json = bench_json(&["--synthetic", "2000"]);
    assert_eq!(field(&json, "source"), "synthetic");
    assert_eq!(field(&json, "ceiling_paired"), false, "{json}");
    assert_ratios_consistent(&json);
    assert_eq!(
        number(&json, "ratio"),
        number(&json, "ratio_phase"),
        "{json}"
    );
    assert_eq!(number(&json, "flows_created"), 2000.0, "{json}");
    assert_eq!(number(&json, "flows_cached"), 2000.0, "{json}");
}
