//! Error paths and limits of the DPDK source with a working EAL: bad devices, replays that
//! stall or stop at a count, pools too small for infinite_rx, misuse of ports and queues.
//! One EAL per process, so the cases run in order inside one test.
#![cfg(feature = "dpdk")]

mod dpdk_common;

use std::path::Path;
use std::time::{Duration, Instant};

use dpdk_common::{TempDir, drain, frames, write_pcap};
use probe::dpdk::{Eal, Mempool, Port};
use probe::dpdk_source::{DpdkPortConfig, DpdkSource, EalArgs};
use probe::{BurstStatus, PacketSource};

#[test]
fn dpdk_error_paths_are_clear_errors() {
    let dir = TempDir::new("dpdk-errors");
    let trace = dir.path().join("ten.pcap");
    let written = frames(10, 3);
    write_pcap(&trace, &written);
    // DPDK logs each failure below at error level; keep the test output quiet.
    let eal = EalArgs::sandbox().log_level("1").init().expect("EAL init");

    second_init_is_refused();
    missing_pcap_is_refused_before_dpdk(&eal, dir.path());
    dpdk_probe_failures_are_reported(&eal, dir.path());
    unknown_devices_list_the_ports(&eal);
    replay_stops_at_the_expected_count(&eal, &trace, &written);
    stalled_replay_fails_instead_of_hanging(&eal, &trace);
    infinite_rx_needs_a_pool_for_the_whole_file(&eal, dir.path());
    ports_refuse_misuse(&eal, &trace);
    drop(eal);
}

fn second_init_is_refused() {
    let err = Eal::init(&EalArgs::sandbox().to_args()).expect_err("second init");
    assert!(err.message().contains("already initialised"), "{err}");
    assert!(Eal::get().is_some());
}

fn missing_pcap_is_refused_before_dpdk(eal: &Eal, dir: &Path) {
    let missing = dir.join("missing.pcap");
    let spec = format!("net_pcap10,rx_pcap={}", missing.display());
    let err = DpdkSource::open(eal, &DpdkPortConfig::new(&spec)).expect_err("missing file");
    assert!(
        err.message.contains(&missing.display().to_string()),
        "{err}"
    );
    assert!(err.message.contains("No such file"), "{err}");
}

fn dpdk_probe_failures_are_reported(eal: &Eal, dir: &Path) {
    // Past our own checks, DPDK's failure comes back as an error with its reason.
    let missing = dir.join("also-missing.pcap");
    let err = eal
        .probe_device(&format!("net_pcap11,rx_pcap={}", missing.display()))
        .expect_err("DPDK cannot open the file");
    assert!(
        err.message().contains("could not probe device net_pcap11"),
        "{err}"
    );
    assert!(err.errno().is_some());

    let garbage = dir.join("garbage.pcap");
    std::fs::write(&garbage, [0u8; 64]).expect("write");
    let spec = format!("net_pcap12,rx_pcap={}", garbage.display());
    let err = DpdkSource::open(eal, &DpdkPortConfig::new(&spec)).expect_err("not a capture");
    assert!(
        err.message.contains("could not probe device net_pcap12"),
        "{err}"
    );
}

fn unknown_devices_list_the_ports(eal: &Eal) {
    let err = DpdkSource::open(eal, &DpdkPortConfig::new("0000:00:1f.6")).expect_err("no NIC");
    assert!(err.message.contains("no port named 0000:00:1f.6"), "{err}");
    assert!(err.message.contains("ports: none"), "{err}");
    let err = Port::by_id(eal, 31).expect_err("no port 31");
    assert!(err.message().contains("no port 31"), "{err}");
}

fn replay_stops_at_the_expected_count(eal: &Eal, trace: &Path, written: &[dpdk_common::Frame]) {
    let spec = format!("net_pcap13,rx_pcap={}", trace.display());
    let config = DpdkPortConfig::new(spec).expected_packets(Some(4));
    let mut source = DpdkSource::open(eal, &config).expect("open");
    let got = drain(&mut source, 100_000).expect("replay");
    let frames: Vec<_> = got.into_iter().map(|(f, _, _)| f).collect();
    assert_eq!(frames, written[..4]);
    assert_eq!(source.stats().rx_packets, 4);
}

fn stalled_replay_fails_instead_of_hanging(eal: &Eal, trace: &Path) {
    let spec = format!("net_pcap14,rx_pcap={}", trace.display());
    let config = DpdkPortConfig::new(spec)
        .expected_packets(Some(15))
        .stall_timeout(Duration::from_millis(300));
    let mut source = DpdkSource::open(eal, &config).expect("open");
    let started = Instant::now();
    let mut delivered = 0;
    let err = loop {
        match source.poll_burst(&mut |p| delivered += p.len()) {
            Ok(BurstStatus::Delivered(_)) => {}
            Ok(BurstStatus::Ended) => panic!("a replay short of its count must not end"),
            Err(err) => break err,
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "stall guard never fired"
        );
    };
    assert_eq!(delivered, 10);
    assert!(
        err.message.contains("delivered 10 of 15 expected packets"),
        "{err}"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        source.poll_burst(&mut |_| {}).expect("after the error"),
        BurstStatus::Ended
    );
}

fn infinite_rx_needs_a_pool_for_the_whole_file(eal: &Eal, dir: &Path) {
    let trace = dir.join("big.pcap");
    let written = frames(1500, 9);
    write_pcap(&trace, &written);
    let spec = format!("net_pcap15,rx_pcap={},infinite_rx=1", trace.display());

    // Smaller than the file: the driver refuses the queue.
    let small = DpdkPortConfig::new(&spec)
        .mempool_size(1023)
        .rx_descriptors(256);
    let err = DpdkSource::open(eal, &small).expect_err("pool smaller than the file");
    assert!(
        err.message.contains("too small for the infinite_rx replay"),
        "{err}"
    );
    // The file fits but leaves nothing to receive into: the driver would deliver nothing.
    let mut tight = DpdkPortConfig::new(&spec)
        .mempool_size(1535)
        .rx_descriptors(256);
    tight.mempool_cache = 0;
    let err = DpdkSource::open(eal, &tight).expect_err("no headroom");
    assert!(
        err.message.contains("too small for the infinite_rx replay"),
        "{err}"
    );
    assert!(err.message.contains("leaving 35"), "{err}");

    // Sized from the file, the replay loops: three passes, exactly, in file order.
    let mut config = DpdkPortConfig::new(&spec).expected_packets(Some(3 * 1500));
    config.mempool_size = config.replay_mempool_size(1500);
    let mut source = DpdkSource::open(eal, &config).expect("open infinite replay");
    let got = drain(&mut source, 1_000_000).expect("replay");
    assert_eq!(got.len(), 4500);
    for (i, (frame, _, _)) in got.iter().enumerate() {
        assert_eq!(frame.bytes, written[i % 1500].bytes, "packet {i}");
    }
}

fn ports_refuse_misuse(eal: &Eal, trace: &Path) {
    eal.probe_device(&format!("net_pcap16,rx_pcap={}", trace.display()))
        .expect("probe");
    let mut port = Port::by_name(eal, "net_pcap16").expect("port");
    let err = Port::by_name(eal, "net_pcap16").expect_err("one Port per device");
    assert!(err.message().contains("already open"), "{err}");
    assert_eq!(port.info().driver, "net_pcap");
    let pool = Mempool::new(eal, "tapflow-misuse", 1023, 32, 2176, None).expect("pool");
    let err = port.rx_queue(0).expect_err("not started");
    assert!(err.message().contains("must be started"), "{err}");
    let err = port
        .configure(2, 256, &pool, true)
        .expect_err("one file, one queue");
    assert!(err.message().contains("supports 1 to 1 rx queues"), "{err}");
    port.configure(1, 256, &pool, true).expect("configure");
    port.start().expect("start");
    let queue = port.rx_queue(0).expect("queue 0");
    assert!(port.rx_queue(0).is_err(), "a queue is handed out once");
    assert!(port.stop().is_err(), "cannot stop under a held queue");
    drop(queue);
    port.stop().expect("stop");
    assert!(!port.is_started());
    let err = Mempool::new(eal, "tapflow-misuse", 1023, 32, 2176, None).expect_err("same name");
    assert!(err.message().contains("tapflow-misuse"), "{err}");
}
