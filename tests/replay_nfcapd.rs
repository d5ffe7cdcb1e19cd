//! End to end with a real collector: captures replayed through DPDK's pcap driver into
//! nfdump's nfcapd, whose decoded flows must equal the capture's ground truth, per flow.

mod common;

use common::{
    Nfcapd, assert_same_flows, generate_pcap, ground_truth, scratch_dir, tapflow, text,
    totals_from_nfdump,
};

fn replay_into_nfcapd(version: &str) {
    let dir = scratch_dir(&format!("nfcapd-{version}"));
    let pcap = generate_pcap(&dir, 500, 10, true);
    let nfcapd = Nfcapd::start(&dir);
    let source = if cfg!(feature = "dpdk") {
        "dpdk"
    } else {
        "file"
    };
    let out = tapflow()
        .arg("replay")
        .arg(&pcap)
        .args([
            "--collector",
            &nfcapd.addr(),
            "--export",
            version,
            "--source",
            source,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "replay failed: {}", text(&out));
    let flows = nfcapd.stop_and_read();

    let mut expected = ground_truth(&pcap);
    if version == "v5" {
        expected.retain(|k, _| k.0.is_ipv4());
    }
    assert_same_flows(
        &format!("nfcapd {version}"),
        &expected,
        &totals_from_nfdump(&flows),
    );
}

#[test]
fn nfcapd_decodes_ipfix_exactly() {
    replay_into_nfcapd("ipfix");
}

#[test]
fn nfcapd_decodes_v9_exactly() {
    replay_into_nfcapd("v9");
}

#[test]
fn nfcapd_decodes_v5_exactly() {
    replay_into_nfcapd("v5");
}
