//! `tapflow run` as an operator runs it: a configuration file, a DPDK port (a pcap vdev
//! looping forever), signals. SIGTERM must flush every flow so that the collector receives
//! every accounted packet; SIGHUP must move export to new collectors without losing any.
#![cfg(feature = "dpdk")]

mod common;
#[path = "../exporter/tests/common/mod.rs"]
#[allow(unused_imports)]
mod decode;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{
    BackgroundCollector, Nfcapd, generate_pcap, scratch_dir, signal, tapflow, totals_from_nfdump,
    write_dpdk_run_config,
};
use decode::{Decoder, Value};

/// The run configuration, exporting IPFIX over UDP (the default) to `collector`.
fn write_config(path: &Path, pcap: &Path, prefix: &str, collector: &str) {
    write_dpdk_run_config(path, pcap, prefix, &format!("address = \"{collector}\""));
}

fn start_run(config: &Path) -> Child {
    tapflow()
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits (bounded) for the process to exit and returns (stdout, stderr).
fn wait_output(mut child: Child) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut out = String::new();
            let mut err = String::new();
            child
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            assert!(status.success(), "run failed: {status:?}\n{out}\n{err}");
            return (out, err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tapflow run did not stop within 60 s of the signal");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigterm_midway_flushes_every_packet_to_the_collector() {
    let dir = scratch_dir("run-sigterm");
    let pcap = generate_pcap(&dir, 300, 20, true);
    let nfcapd = Nfcapd::start(&dir);
    let config = dir.join("tapflow.toml");
    let prefix = format!("tapflow-test-sigterm-{}", std::process::id());
    write_config(&config, &pcap, &prefix, &nfcapd.addr());

    let child = start_run(&config);
    std::thread::sleep(Duration::from_secs(2));
    signal(&child, "TERM");
    let (stdout, _) = wait_output(child);
    let flows = nfcapd.stop_and_read();

    let received = common::counter(&stdout, "packets received");
    let unaccounted = common::counter(&stdout, "not in any flow");
    let dropped = common::counter(&stdout, "records dropped (queue full)");
    assert!(
        received > 6_000,
        "the port should have looped the file: {stdout}"
    );
    assert_eq!(dropped, 0, "{stdout}");
    assert!(
        common::counter(&stdout, "flows ended: forced") > 0,
        "{stdout}"
    );
    let (packets, octets) = totals_from_nfdump(&flows)
        .values()
        .fold((0, 0), |(p, o), (dp, doct)| (p + dp, o + doct));
    assert_eq!(packets, received - unaccounted, "{stdout}");
    assert_eq!(packets, common::counter(&stdout, "packets in records"));
    assert_eq!(octets, common::counter(&stdout, "octets in records"));
}

/// Packets in the IPFIX flow records among `datagrams`.
fn ipfix_packets(datagrams: &[Vec<u8>]) -> u64 {
    let mut decoder = Decoder::default();
    let mut packets = 0;
    for d in datagrams {
        for r in decoder.message(d).records.iter().filter(|r| !r.options) {
            if let Some(Value::Num(n)) = r.fields.get(&2) {
                packets += n;
            }
        }
    }
    packets
}

#[test]
fn sighup_moves_export_to_the_new_collector_losing_nothing() {
    let dir = scratch_dir("run-sighup");
    let pcap = generate_pcap(&dir, 200, 10, false);
    let first = BackgroundCollector::start();
    let second = BackgroundCollector::start();
    let config = dir.join("tapflow.toml");
    let prefix = format!("tapflow-test-sighup-{}", std::process::id());
    write_config(&config, &pcap, &prefix, &first.addr);

    let child = start_run(&config);
    std::thread::sleep(Duration::from_millis(1500));
    write_config(&config, &pcap, &prefix, &second.addr);
    signal(&child, "HUP");
    std::thread::sleep(Duration::from_millis(1500));
    signal(&child, "TERM");
    let (stdout, stderr) = wait_output(child);

    assert!(stderr.contains("reload: 1 collector(s)"), "{stderr}");
    let to_first = ipfix_packets(&first.finish());
    let to_second = ipfix_packets(&second.finish());
    assert!(
        to_first > 0 && to_second > 0,
        "{to_first} / {to_second}\n{stdout}"
    );
    assert_eq!(
        to_first + to_second,
        common::counter(&stdout, "packets in records"),
        "{stdout}"
    );
    assert_eq!(
        to_first + to_second,
        common::counter(&stdout, "packets received") - common::counter(&stdout, "not in any flow")
    );
}

#[test]
fn a_json_collector_receives_every_record_of_the_run() {
    let dir = scratch_dir("run-json");
    let pcap = generate_pcap(&dir, 200, 10, false);
    let records = dir.join("records.jsonl");
    let config = dir.join("tapflow.toml");
    let prefix = format!("tapflow-test-json-{}", std::process::id());
    write_dpdk_run_config(
        &config,
        &pcap,
        &prefix,
        &format!("version = \"json\"\naddress = \"{}\"", records.display()),
    );
    let child = start_run(&config);
    std::thread::sleep(Duration::from_secs(2));
    signal(&child, "TERM");
    let (stdout, _) = wait_output(child);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&records)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let packets: u64 = lines.iter().map(|r| r["packets"].as_u64().unwrap()).sum();
    let octets: u64 = lines.iter().map(|r| r["octets"].as_u64().unwrap()).sum();
    assert_eq!(
        packets,
        common::counter(&stdout, "packets in records"),
        "{stdout}"
    );
    assert_eq!(octets, common::counter(&stdout, "octets in records"));
    assert!(
        packets > 2_000,
        "the port should have looped the file: {stdout}"
    );
}
