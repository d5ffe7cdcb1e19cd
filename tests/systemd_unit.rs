//! `systemd/tapflow.service` passes `systemd-analyze verify` without a warning, and agrees
//! with the configuration defaults it depends on.
//!
//! `verify` checks that every Exec command exists, so the test verifies a copy of the
//! unit in a temporary directory with `/usr/bin/tapflow` replaced by the binary cargo just
//! built and the hugepage script by the one in the source tree. Everything else is
//! verified as shipped.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use tapflow::config::{DEFAULT_CONFIG_PATH, DpdkSection};

const INSTALLED_BINARY: &str = "/usr/bin/tapflow";
const INSTALLED_HUGEPAGES: &str = "/usr/lib/tapflow/tapflow-hugepages.sh";

fn source_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn unit_text() -> String {
    std::fs::read_to_string(source_dir().join("systemd/tapflow.service")).unwrap()
}

/// `Key=value` settings of the unit, comments and section headers left out.
fn settings(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("not key=value: {l}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn setting(text: &str, key: &str) -> Vec<String> {
    settings(text)
        .into_iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .collect()
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn systemd_analyze() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("systemd-analyze"))
            .find(|p| p.is_file())
    })
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    let Some(analyze) = systemd_analyze() else {
        println!("NOTICE: systemd-analyze is not installed; skipping the unit verification");
        return;
    };
    let text = unit_text();
    assert!(text.contains(&format!("ExecStart={INSTALLED_BINARY} ")));
    assert!(text.contains(&format!("ExecStartPre=+{INSTALLED_HUGEPAGES}\n")));
    let script = source_dir().join("systemd/tapflow-hugepages.sh");
    let patched = text
        .replace(
            &format!("ExecStart={INSTALLED_BINARY} "),
            &format!("ExecStart={} ", env!("CARGO_BIN_EXE_tapflow")),
        )
        .replace(INSTALLED_HUGEPAGES, script.to_str().unwrap());

    let dir = TempDir(std::env::temp_dir().join(format!("tapflow-unit-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let unit = dir.0.join("tapflow.service");
    std::fs::write(&unit, patched).unwrap();

    let out = Command::new(analyze)
        .arg("verify")
        .arg(&unit)
        .env("SYSTEMD_LOG_LEVEL", "warning")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    let about_unit: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("tapflow") || l.contains(dir.0.to_str().unwrap()))
        .collect();
    assert!(about_unit.is_empty(), "warnings about the unit:\n{stderr}");
}

#[test]
fn unit_runs_the_packaged_config_as_a_notify_service_with_a_watchdog() {
    let text = unit_text();
    assert_eq!(setting(&text, "Type"), ["notify"]);
    assert_eq!(setting(&text, "WatchdogSec"), ["30"]);
    assert_eq!(setting(&text, "Restart"), ["on-failure"]);
    assert_eq!(setting(&text, "ExecReload"), ["/bin/kill -HUP $MAINPID"]);
    assert_eq!(
        setting(&text, "ExecStart"),
        [format!(
            "{INSTALLED_BINARY} run --config {DEFAULT_CONFIG_PATH}"
        )]
    );
    assert_eq!(setting(&text, "LimitMEMLOCK"), ["infinity"]);
    for (key, value) in [
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
    ] {
        assert_eq!(setting(&text, key), [value], "{key}");
    }
    // The one directory DPDK writes under ProtectSystem=strict is /run/dpdk/<prefix>: the
    // unit must create it for the default prefix.
    assert_eq!(
        setting(&text, "RuntimeDirectory"),
        [format!("dpdk/{}", DpdkSection::default().file_prefix)]
    );
}

#[test]
fn every_capability_kept_is_justified_in_the_unit() {
    let text = unit_text();
    let kept: BTreeSet<String> = setting(&text, "CapabilityBoundingSet")
        .iter()
        .flat_map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect();
    let expected: BTreeSet<String> = [
        "CAP_IPC_LOCK",
        "CAP_NET_ADMIN",
        "CAP_NET_RAW",
        "CAP_SYS_ADMIN",
        "CAP_SYS_RAWIO",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(kept, expected);
    for cap in &kept {
        let justified = text.lines().any(|l| {
            l.starts_with('#') && l.trim_start_matches(['#', ' ']).starts_with(cap.as_str())
        });
        assert!(justified, "{cap} has no comment saying why it is kept");
    }
    assert!(Path::new(&source_dir().join("systemd/tapflow-hugepages.sh")).is_file());
}
