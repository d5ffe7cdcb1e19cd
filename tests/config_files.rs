//! The shipped configuration files: every one parses and validates, and the commented
//! reference `etc/tapflow.toml` states the true defaults and documents every key.

use std::path::{Path, PathBuf};

use tapflow::config::{
    AggregationSection, AnalyzersSection, CacheSection, CollectorSection, Config, DeviceKind,
    DpdkSection, ExportSection, LoggingSection, PortSection, SamplingSection, StatsSection,
    WorkersSection,
};

fn etc() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("etc")
}

fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            toml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
}

#[test]
fn every_toml_file_under_etc_validates() {
    let mut files = Vec::new();
    toml_files(&etc(), &mut files);
    files.sort();
    // The reference and at least the replay, af_packet and dual-port examples.
    assert!(files.len() >= 4, "found only {files:?}");
    for file in &files {
        let config = Config::load(file).unwrap_or_else(|e| panic!("{e}"));
        assert!(!config.ports.is_empty(), "{}", file.display());
        assert!(!config.collectors.is_empty(), "{}", file.display());
        assert_eq!(config.validate(), Ok(()), "{}", file.display());
        assert!(!config.eal_args().is_empty());
        assert!(config.describe().starts_with("ports"), "{}", file.display());
    }
}

#[test]
fn reference_file_values_are_the_defaults() {
    let config = Config::load(&etc().join("tapflow.toml")).unwrap();
    // Every key written uncommented in the reference shows its default value, so what the
    // file says and what a missing key means cannot drift apart.
    assert_eq!(config.dpdk, DpdkSection::default());
    assert_eq!(config.workers, WorkersSection::default());
    assert_eq!(config.sampling, SamplingSection::default());
    assert_eq!(config.cache, CacheSection::default());
    assert_eq!(config.aggregation, AggregationSection::default());
    assert_eq!(config.export, ExportSection::default());
    assert_eq!(config.logging, LoggingSection::default());
    assert_eq!(config.stats, StatsSection::default());
    assert_eq!(config.analyzers, AnalyzersSection::default());
    assert_eq!(config.ports.len(), 1);
    assert_eq!(
        config.ports[0],
        PortSection {
            device: config.ports[0].device.clone(),
            ..PortSection::default()
        }
    );
    assert_eq!(config.collectors.len(), 1);
    assert_eq!(
        config.collectors[0],
        CollectorSection {
            address: config.collectors[0].address.clone(),
            ..CollectorSection::default()
        }
    );
}

/// The keys a table accepts, as the deserialiser lists them when given an unknown one.
fn accepted_keys(table_header: &str) -> Vec<String> {
    let text = format!("{table_header}\nzz_not_a_key = 1\n");
    let err = Config::parse(&text, "probe.toml").unwrap_err();
    let message = &err
        .diagnostics()
        .iter()
        .find(|d| d.message.starts_with("unknown key `zz_not_a_key`"))
        .unwrap_or_else(|| panic!("{err}"))
        .message;
    let list = message
        .split_once("expected one of: ")
        .unwrap_or_else(|| panic!("{message}"))
        .1;
    list.split(", ").map(str::to_string).collect()
}

#[test]
fn reference_file_documents_every_key() {
    let reference = std::fs::read_to_string(etc().join("tapflow.toml")).unwrap();
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/CONFIG.md"))
            .unwrap();
    let tables = [
        "[dpdk]",
        "[[port]]",
        "[workers]",
        "[sampling]",
        "[sampling.adaptive]",
        "[cache]",
        "[aggregation]",
        "[[collector]]",
        "[export]",
        "[logging]",
        "[stats]",
        "[events]",
        "[monitor]",
        "[[policy]]",
        "[analyzers.syn_flood]",
        "[analyzers.half_open]",
        "[analyzers.dns]",
        "[analyzers.per_destination]",
        "[kpi]",
    ];
    let top = accepted_keys("");
    let mut top_tables: Vec<&str> = tables
        .iter()
        .map(|t| t.trim_matches(['[', ']']).split('.').next().unwrap())
        .collect();
    top_tables.dedup();
    assert_eq!(top.len(), top_tables.len(), "{top:?}");
    for table in tables {
        // Present, or commented out (a table whose mere presence acts, as [[policy]]).
        assert!(
            reference.contains(&format!("\n{table}\n"))
                || reference.contains(&format!("\n# {table}\n")),
            "{table} missing"
        );
        assert!(docs.contains(table), "docs/CONFIG.md lacks {table}");
        let keys = accepted_keys(table);
        assert!(!keys.is_empty());
        for key in keys {
            // A key that is a table of its own ([sampling] adaptive) is checked as one.
            let inner = table.trim_matches(['[', ']']);
            if tables.contains(&format!("[{inner}.{key}]").as_str()) {
                continue;
            }
            // Written, or commented out as "# key = ...".
            let documented = reference.lines().any(|l| {
                l.trim_start_matches(['#', ' '])
                    .starts_with(&format!("{key} = "))
            });
            assert!(documented, "etc/tapflow.toml does not show {table} {key}");
            assert!(
                docs.contains(&format!("`{key}`")),
                "docs/CONFIG.md does not describe {table} {key}"
            );
        }
    }
}

#[test]
fn replay_example_composes_a_sandbox_eal_command_line() {
    let config = Config::load(&etc().join("examples/replay-pcap.toml")).unwrap();
    assert_eq!(config.ports[0].kind(), Some(DeviceKind::Vdev));
    let args = config.eal_args();
    for expected in ["--no-huge", "--no-pci", "-m", "1024"] {
        assert!(
            args.iter().any(|a| a == expected),
            "{expected} not in {args:?}"
        );
    }
    assert!(
        args.iter()
            .any(|a| a.starts_with("--vdev=net_pcap0,rx_pcap=")),
        "{args:?}"
    );
    assert!(!args.iter().any(|a| a == "-a"), "{args:?}");
}
