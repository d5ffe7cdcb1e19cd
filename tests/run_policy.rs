//! `tapflow run` with `[[policy]]` and a SIGHUP that changes the rules: the workers take the
//! new rules without losing a packet, and flows already classified keep their decision
//! until they end (the looping capture's flows never idle, so they keep theirs to the end).
#![cfg(feature = "dpdk")]

mod common;

use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Nfcapd, generate_pcap, scratch_dir, signal, tapflow, write_dpdk_run_config};

fn write_config(path: &Path, pcap: &Path, prefix: &str, collector: &str, policies: &str) {
    write_dpdk_run_config(path, pcap, prefix, &format!("address = \"{collector}\""));
    let mut text = std::fs::read_to_string(path).unwrap();
    text.push_str(policies);
    std::fs::write(path, text).unwrap();
}

#[test]
fn sighup_swaps_the_rules_losing_no_packet_and_cached_flows_keep_theirs() {
    let dir = scratch_dir("run-policy-sighup");
    let pcap = generate_pcap(&dir, 200, 10, false);
    let nfcapd = Nfcapd::start(&dir);
    let config = dir.join("tapflow.toml");
    let prefix = format!("tapflow-test-policy-{}", std::process::id());
    let ignore_udp = "\n[[policy]]\nname = \"no-udp\"\nproto = [\"udp\"]\naction = \"ignore\"\n";
    let ignore_tcp = "\n[[policy]]\nname = \"no-tcp\"\nproto = [\"tcp\"]\naction = \"ignore\"\n";
    write_config(&config, &pcap, &prefix, &nfcapd.addr(), ignore_udp);

    let mut child = tapflow()
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // The new rules would ignore TCP instead; every flow of the loop is cached by now.
    write_config(&config, &pcap, &prefix, &nfcapd.addr(), ignore_tcp);
    signal(&child, "HUP");
    std::thread::sleep(Duration::from_millis(1500));
    signal(&child, "TERM");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "tapflow run did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("reload: 1 policy rule(s)"), "{stderr}");
    let flows = nfcapd.stop_and_read();

    let received = common::counter(&stdout, "packets received");
    let unaccounted = common::counter(&stdout, "not in any flow");
    let ignored = common::counter(&stdout, "ignored by policy");
    let recorded = common::counter(&stdout, "packets in records");
    assert!(ignored > 0 && recorded > 0, "{stdout}");
    // Nothing lost across the swap: every packet is in a record or was ignored.
    assert_eq!(received - unaccounted, recorded + ignored, "{stdout}");
    let packets: u64 = flows.iter().map(|f| f.packets).sum();
    assert_eq!(packets, recorded, "{stdout}");
    // The UDP flows were classified before the reload and kept their decision: not one
    // reached the collector; the TCP flows kept theirs too and were all exported.
    assert!(
        flows.iter().all(|f| f.tuple.4 != 17),
        "a UDP flow was exported"
    );
    assert!(
        flows.iter().any(|f| f.tuple.4 == 6),
        "no TCP flow was exported"
    );
}
