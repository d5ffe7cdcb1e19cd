//! One source per rx queue, each polled on its own thread, together deliver every frame:
//! the pcap driver makes one rx queue per rx_pcap file.
#![cfg(feature = "dpdk")]

mod dpdk_common;

use std::thread;

use dpdk_common::{Frame, TempDir, drain, frames, write_pcap};
use probe::dpdk_source::{DpdkPortConfig, DpdkSource, EalArgs};

#[test]
fn each_queue_on_its_own_thread_receives_its_file() {
    let dir = TempDir::new("dpdk-multiqueue");
    let files: Vec<(std::path::PathBuf, Vec<Frame>)> = (0..2u8)
        .map(|q| {
            let path = dir.path().join(format!("queue{q}.pcap"));
            let written = frames(150 + 40 * usize::from(q), 20 + q);
            write_pcap(&path, &written);
            (path, written)
        })
        .collect();
    let vdev = format!(
        "net_pcap0,rx_pcap={},rx_pcap={}",
        files[0].0.display(),
        files[1].0.display()
    );
    let eal = EalArgs::sandbox().vdev(vdev).init().expect("EAL init");
    let total: u64 = files.iter().map(|(_, w)| w.len() as u64).sum();
    let config = DpdkPortConfig::new("net_pcap0")
        .rx_queues(2)
        .expected_packets(Some(total));
    let sources = DpdkSource::open_queues(&eal, &config).expect("open queues");
    assert_eq!(sources.len(), 2);

    let workers: Vec<_> = sources
        .into_iter()
        .map(|mut source| {
            thread::spawn(move || {
                let queue = source.queue_id();
                let got = drain(&mut source, 1_000_000).expect("replay");
                (queue, got, probe::PacketSource::stats(&source))
            })
        })
        .collect();
    let mut results: Vec<_> = workers
        .into_iter()
        .map(|w| w.join().expect("worker"))
        .collect();
    results.sort_by_key(|(queue, _, _)| *queue);

    for ((queue, got, stats), (_, written)) in results.iter().zip(&files) {
        let frames: Vec<&Frame> = got.iter().map(|(f, _, _)| f).collect();
        assert_eq!(frames, written.iter().collect::<Vec<_>>(), "queue {queue}");
        assert_eq!(stats.rx_packets, written.len() as u64, "queue {queue}");
    }
    drop(eal);
}
