//! Bad input ends with one clear error line and a non-zero exit: never a panic or a hang.

mod common;

use std::time::{Duration, Instant};

use common::{scratch_dir, tapflow, text};

/// Runs tapflow with `args`, bounded in time, and returns (exit code, stderr).
fn run_failing(args: &[&str]) -> (i32, String) {
    let started = Instant::now();
    let out = tapflow().args(args).output().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "tapflow took too long to fail"
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "expected failure: {}", text(&out));
    assert!(
        !stderr.contains("panicked"),
        "tapflow panicked: {}",
        text(&out)
    );
    (out.status.code().unwrap_or(-1), stderr)
}

fn error_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains("error")).collect()
}

#[test]
fn missing_pcap_is_one_clear_error() {
    for source in ["file", "dpdk"] {
        let (code, stderr) = run_failing(&[
            "replay",
            "/nonexistent/trace.pcap",
            "--collector",
            "127.0.0.1:9",
            "--source",
            source,
        ]);
        assert_eq!(code, 1);
        let errors = error_lines(&stderr);
        assert_eq!(errors.len(), 1, "one error line expected: {stderr}");
        assert!(errors[0].contains("/nonexistent/trace.pcap"), "{stderr}");
        assert!(errors[0].contains("No such file"), "{stderr}");
    }
}

#[test]
fn garbage_file_is_one_clear_error() {
    let dir = scratch_dir("garbage");
    let path = dir.join("garbage.pcap");
    std::fs::write(&path, b"this is not a capture file at all, just text\n").unwrap();
    for source in ["file", "dpdk"] {
        let (_, stderr) = run_failing(&[
            "replay",
            path.to_str().unwrap(),
            "--collector",
            "127.0.0.1:9",
            "--source",
            source,
        ]);
        let errors = error_lines(&stderr);
        assert_eq!(errors.len(), 1, "one error line expected: {stderr}");
        assert!(errors[0].contains("not a pcap"), "{stderr}");
    }
}

#[test]
fn unreadable_pcap_is_one_clear_error() {
    let dir = scratch_dir("unreadable");
    // A directory where a file is expected cannot be read, even by root.
    let path = dir.join("dir.pcap");
    std::fs::create_dir_all(&path).unwrap();
    let (_, stderr) = run_failing(&[
        "replay",
        path.to_str().unwrap(),
        "--collector",
        "127.0.0.1:9",
    ]);
    assert_eq!(error_lines(&stderr).len(), 1, "{stderr}");
    assert!(stderr.contains("dir.pcap"), "{stderr}");
}

#[test]
fn bad_collector_and_sampler_are_clear_errors() {
    let dir = scratch_dir("badargs");
    let pcap = common::generate_pcap(&dir, 5, 2, false);
    let pcap = pcap.to_str().unwrap();
    let (_, stderr) = run_failing(&["replay", pcap, "--collector", "nohostport"]);
    assert!(stderr.contains("nohostport"), "{stderr}");
    let (_, stderr) = run_failing(&[
        "replay",
        pcap,
        "--collector",
        "127.0.0.1:9",
        "--sample",
        "sometimes:3",
    ]);
    assert!(stderr.contains("sometimes:3"), "{stderr}");
}

#[cfg(feature = "dpdk")]
#[test]
fn eal_init_failure_is_one_clear_error() {
    let dir = scratch_dir("ealfail");
    let pcap = common::generate_pcap(&dir, 5, 2, false);
    // An EAL option that does not exist makes rte_eal_init fail.
    let (_, stderr) = run_failing(&[
        "replay",
        pcap.to_str().unwrap(),
        "--collector",
        "127.0.0.1:9",
        "--eal-arg=--no-such-eal-option",
    ]);
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), 1, "one error line expected: {stderr}");
    assert!(errors[0].to_lowercase().contains("eal"), "{stderr}");
}
