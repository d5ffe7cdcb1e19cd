//! Log lines as their readers need them: syslog priorities for the journal, times on a
//! terminal or a file, RUST_LOG filters.

mod common;

use std::os::unix::fs::MetadataExt;
use std::process::Stdio;

use common::{generate_pcap, scratch_dir, tapflow};

/// Replays a small capture whose records go to a Unix socket nobody listens on: every
/// record write fails, which tapflow logs once as a warning. Returns stderr.
fn replay_with_a_failing_output(env: &[(&str, &str)], journal: bool) -> String {
    let dir = scratch_dir("logging");
    let pcap = generate_pcap(&dir, 3, 2, false);
    let stderr_path = dir.join("stderr");
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let mut cmd = tapflow();
    cmd.args(["replay", pcap.to_str().unwrap(), "--source", "file"])
        .arg("--records-json")
        .arg(format!("unix:{}", dir.join("nobody.sock").display()))
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .stdout(Stdio::null());
    if journal {
        // As systemd does: JOURNAL_STREAM names the stream stderr is connected to.
        let meta = stderr.metadata().unwrap();
        cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
    }
    cmd.envs(env.iter().copied());
    let status = cmd.stderr(stderr).status().unwrap();
    assert!(status.success());
    std::fs::read_to_string(stderr_path).unwrap()
}

#[test]
fn under_systemd_lines_carry_their_syslog_priority() {
    let stderr = replay_with_a_failing_output(&[], true);
    let warning = stderr
        .lines()
        .find(|l| l.contains("JSON output"))
        .unwrap_or_else(|| panic!("no warning in {stderr:?}"));
    assert!(warning.starts_with("<4>tapflow: warn: "), "{warning}");
}

#[test]
fn elsewhere_lines_start_with_the_utc_time() {
    let stderr = replay_with_a_failing_output(&[], false);
    let warning = stderr
        .lines()
        .find(|l| l.contains("JSON output"))
        .unwrap_or_else(|| panic!("no warning in {stderr:?}"));
    let (time, rest) = warning.split_once(' ').unwrap();
    assert!(rest.starts_with("tapflow: warn: "), "{warning}");
    // 2026-12-04T20:50:01.123Z
    let shape: String = time
        .chars()
        .map(|c| if c.is_ascii_digit() { '9' } else { c })
        .collect();
    assert_eq!(shape, "9999-99-99T99:99:99.999Z", "{warning}");
}

#[test]
fn rust_log_filters_lines() {
    let quiet = replay_with_a_failing_output(&[("RUST_LOG", "error")], false);
    assert!(!quiet.contains("JSON output"), "{quiet}");
    let chatty = replay_with_a_failing_output(&[("RUST_LOG", "info")], false);
    assert!(chatty.contains("JSON output"), "{chatty}");
    assert!(chatty.contains("tapflow: info: replay "), "{chatty}");
    // By module, as env_logger: the exporter's warning silenced, the rest at info.
    let partial = replay_with_a_failing_output(&[("RUST_LOG", "info,exporter=error")], false);
    assert!(!partial.contains("JSON output"), "{partial}");
    assert!(partial.contains("tapflow: info: replay "), "{partial}");
}
