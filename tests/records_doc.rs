//! docs/RECORDS.md names every field the JSON record writer emits, and nothing else.

use std::collections::BTreeSet;
use std::path::Path;

use exporter::json::{aggregate_to_json, record_to_json};
use flowcache::{
    AggregateRecord, DnsTransaction, FlowRecord, PolicyMark, RecordExtras, ReverseCounters,
    TcpDirectionKpis, TcpKpis,
};

fn documented() -> BTreeSet<String> {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/RECORDS.md"))
            .unwrap();
    let mut names = BTreeSet::new();
    for line in doc.lines().filter(|l| l.starts_with("| `")) {
        let first_cell = line.split('|').nth(1).unwrap();
        for name in first_cell.split('`').skip(1).step_by(2) {
            names.insert(name.to_string());
        }
    }
    names
}

#[test]
fn every_emitted_field_is_documented_and_every_documented_one_emitted() {
    let sample = Some(7);
    let direction = TcpDirectionKpis {
        rtt_min_us: sample,
        rtt_mean_us: sample,
        rtt_max_us: sample,
        ..TcpDirectionKpis::default()
    };
    let record = FlowRecord {
        label: 0,
        extras: Some(Box::new(RecordExtras {
            reverse: Some(ReverseCounters::default()),
            tcp: Some(TcpKpis {
                rtt_server_us: sample,
                rtt_client_us: sample,
                app_latency_us: sample,
                forward: direction,
                reverse: direction,
                ..TcpKpis::default()
            }),
            dns: Some(DnsTransaction {
                rcode: Some(0),
                answers: Some(1),
                latency_us: sample,
                ..DnsTransaction::default()
            }),
            policy: Some(PolicyMark {
                name: "p".into(),
                tag: Some(1),
            }),
        })),
        ..FlowRecord::default()
    };
    let mut emitted = BTreeSet::new();
    for value in [
        record_to_json(&record),
        aggregate_to_json(&AggregateRecord::default()),
    ] {
        emitted.extend(value.as_object().unwrap().keys().cloned());
    }
    let documented = documented();
    let undocumented: Vec<_> = emitted.difference(&documented).collect();
    let unwritten: Vec<_> = documented.difference(&emitted).collect();
    assert!(
        undocumented.is_empty(),
        "not in docs/RECORDS.md: {undocumented:?}"
    );
    assert!(
        unwritten.is_empty(),
        "documented but never written: {unwritten:?}"
    );
}
