//! The DPDK pcap driver and the native reader yield the same packets for the same file,
//! and a hotplugged pcap vdev can be replayed again once its first source is gone.
#![cfg(feature = "dpdk")]

mod dpdk_common;

use dpdk_common::{TempDir, drain, frames, write_pcap};
use probe::dpdk_source::{DpdkPortConfig, DpdkSource, EalArgs};
use probe::pcap::FileSource;

#[test]
fn dpdk_pcap_replay_matches_the_native_reader() {
    let dir = TempDir::new("dpdk-parity");
    let trace = dir.path().join("parity.pcap");
    write_pcap(&trace, &frames(257, 7));

    // No vdev at EAL init: the source probes it (hotplug) from the device spec.
    let eal = EalArgs::sandbox().init().expect("EAL init");
    let expected = FileSource::count_packets(&trace).expect("count packets");
    assert_eq!(expected, 257);
    let spec = format!("net_pcap5,rx_pcap={}", trace.display());
    let config = DpdkPortConfig::new(&spec).expected_packets(Some(expected));

    for round in 0..2 {
        let mut dpdk = DpdkSource::open(&eal, &config).expect("open DPDK source");
        let mut native = FileSource::open(&trace, dpdk.port_id()).expect("open native reader");
        let from_dpdk = drain(&mut dpdk, 100_000).expect("DPDK replay");
        let from_native = drain(&mut native, 100_000).expect("native read");
        assert_eq!(from_dpdk.len(), from_native.len(), "round {round}");
        for (i, (d, n)) in from_dpdk.iter().zip(&from_native).enumerate() {
            assert_eq!(d, n, "round {round}, packet {i}: (frame, wire_len, port)");
        }
        assert_eq!(
            probe::PacketSource::stats(&dpdk).rx_bytes,
            probe::PacketSource::stats(&native).rx_bytes
        );
        // Dropping the source closes the port and removes the hotplugged device, so the
        // same spec can be probed again next round.
    }
    drop(eal);
}
