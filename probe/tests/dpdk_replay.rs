//! A pcap replayed through DPDK's pcap driver (vdev given to the EAL) arrives whole:
//! every frame, byte for byte, with its capture time.
#![cfg(feature = "dpdk")]

mod dpdk_common;

use std::time::{SystemTime, UNIX_EPOCH};

use dpdk_common::{TempDir, drain, frames, write_pcap};
use probe::PacketSource;
use probe::dpdk::{Port, dpdk_version};
use probe::dpdk_source::{DpdkPortConfig, DpdkSource, EalArgs};

#[test]
fn pcap_vdev_replay_delivers_every_frame_with_its_timestamp() {
    let dir = TempDir::new("dpdk-replay");
    let trace = dir.path().join("trace.pcap");
    let written = frames(300, 1);
    write_pcap(&trace, &written);

    let cpus_before = std::thread::available_parallelism().expect("cpu count");
    let eal = EalArgs::sandbox()
        .vdev(format!("net_pcap0,rx_pcap={}", trace.display()))
        .init()
        .expect("EAL init");
    // The EAL pins its caller to one CPU; Eal::init undoes that so later threads spread.
    assert_eq!(
        std::thread::available_parallelism().expect("cpu count"),
        cpus_before
    );
    // The TSC clock reads wall time.
    let wall_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_micros();
    let tsc_us = u128::from(eal.tsc_clock().now_us());
    assert!(
        tsc_us.abs_diff(wall_us) < 1_000_000,
        "tsc {tsc_us} vs wall {wall_us}"
    );
    assert!(
        dpdk_version().starts_with("DPDK 22.11"),
        "{}",
        dpdk_version()
    );
    let port_id = Port::by_name(&eal, "net_pcap0").expect("port probed").id();

    let config = DpdkPortConfig::new("net_pcap0").expected_packets(Some(written.len() as u64));
    let mut source = DpdkSource::open(&eal, &config).expect("open source");
    assert!(
        source.has_driver_timestamps(),
        "pcap driver stamps capture times"
    );
    let got = drain(&mut source, 100_000).expect("replay");

    assert_eq!(got.len(), written.len());
    for (i, ((frame, wire_len, port), want)) in got.iter().zip(&written).enumerate() {
        assert_eq!(frame, want, "frame {i}");
        assert_eq!(*wire_len as usize, want.bytes.len(), "frame {i} length");
        assert_eq!(*port, port_id, "frame {i} port");
    }
    let stats = source.stats();
    assert_eq!(stats.rx_packets, written.len() as u64);
    assert_eq!(
        stats.rx_bytes,
        written.iter().map(|f| f.bytes.len() as u64).sum::<u64>()
    );
    assert_eq!(stats.rx_nombuf, 0);
    let port_stats = source.port_stats().expect("port stats");
    assert_eq!(port_stats.rx_packets, written.len() as u64);
    assert_eq!(port_stats.rx_bytes, stats.rx_bytes);

    // Ended stays ended.
    assert_eq!(
        source
            .poll_burst(&mut |_| panic!("no frames after the end"))
            .expect("poll"),
        probe::BurstStatus::Ended
    );
}
