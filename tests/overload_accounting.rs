//! Under overload every packet is still accounted for: a flow cache far smaller than the
//! traffic's flows, an export queue that fills because the collector is slow (or gone),
//! and still
//!
//! received = unaccounted (not IP) + sampled out + packets in records the exporter got
//!            + packets in records dropped at the full queue + packets still cached (0)
//!
//! checked exactly, with the frame and IP packet counts taken from the capture by an
//! independent decoder (etherparse).

mod common;

use std::net::TcpListener;
use std::sync::atomic::AtomicBool;

use common::{generate_pcap, ground_truth, read_pcap_frames, scratch_dir, sum, tapflow, text};
use exporter::{CollectorConfig, SessionConfig, TransportKind};
use flowcache::{CacheConfig, Sampler, SamplerSpec};
use probe::export_loop::{ExportLoop, ExportLoopConfig, ExportReport};
use probe::pcap::FileSource;
use probe::worker::{Backpressure, Clock, Worker, WorkerConfig, WorkerReport};

const SAMPLE_ONE_IN: u64 = 3;

/// A cache of 64 entries (4 buckets of 16) for a trace keeping 100 flows live at once.
fn tiny_cache() -> CacheConfig {
    CacheConfig {
        capacity: 64,
        ..CacheConfig::default()
    }
}

fn sampler() -> Sampler {
    Sampler::new(SamplerSpec::Deterministic(SAMPLE_ONE_IN as u32))
}

/// A worker over `pcap` that drops batches when its queue of two is full.
fn worker(
    pcap: &std::path::Path,
    to_exporter: crossbeam_channel::Sender<probe::worker::ToExporter>,
    recycled: crossbeam_channel::Receiver<Vec<flowcache::FlowRecord>>,
) -> Worker {
    let mut config = WorkerConfig::new(0, tiny_cache(), Clock::Packet, Backpressure::Drop);
    config.batch_records = 32;
    let source = FileSource::open(pcap, 0).unwrap();
    Worker::new(config, Box::new(source), sampler(), to_exporter, recycled)
}

/// The identity, and the independent counts it rests on.
fn assert_every_packet_accounted(pcap: &std::path::Path, report: &WorkerReport, packets_in: u64) {
    let frames = read_pcap_frames(pcap).len() as u64;
    let (ip_packets, _) = sum(&ground_truth(pcap));
    let w = &report.worker;
    let cache = &report.cache;
    assert_eq!(w.packets, frames, "{report:?}");
    assert_eq!(w.unaccounted, frames - ip_packets, "{report:?}");
    assert_eq!(
        w.sampled_out,
        ip_packets - ip_packets / SAMPLE_ONE_IN,
        "{report:?}"
    );
    // Nothing is left in the cache after the final flush.
    assert_eq!(cache.flows_created, cache.records(), "{report:?}");
    assert_eq!(
        w.packets,
        w.unaccounted + w.sampled_out + packets_in + w.packets_dropped,
        "received != unaccounted + sampled out + exported + dropped: {report:?}"
    );
    assert_eq!(cache.packets, packets_in + w.packets_dropped, "{report:?}");
}

#[test]
fn a_full_cache_and_a_slow_collector_lose_no_packet_uncounted() {
    let dir = scratch_dir("overload-slow");
    let pcap = generate_pcap(&dir, 4_000, 8, true);
    // An IPFIX/TCP collector that accepts the connection but never reads, paced to a few
    // hundred datagrams a second: the export loop falls far behind the worker.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut collector = CollectorConfig::new(
        listener.local_addr().unwrap(),
        TransportKind::Tcp,
        SessionConfig::default(),
    );
    collector.pace_datagrams_per_sec = Some(200);
    let start_ms = 1_700_000_000_000;
    let export = ExportLoopConfig {
        collectors: vec![collector],
        aggregate_interval_ms: None,
        options_interval_ms: 60_000,
        sampling: sampler().info(),
        clock: Clock::Packet,
        json_records: None,
        json_append: false,
    };
    let exporter = ExportLoop::new(export, start_ms).unwrap();
    let (to_exporter, from_workers) = crossbeam_channel::bounded(2);
    let (recycle, recycled) = crossbeam_channel::bounded(2);
    let worker = worker(&pcap, to_exporter, recycled);
    let export_thread = std::thread::spawn(move || exporter.run(from_workers, recycle, 1));
    let report = worker.run(&AtomicBool::new(false));
    let export: ExportReport = export_thread.join().unwrap();

    let w = &report.worker;
    assert!(
        report.cache.evictions > 0,
        "the cache should overflow: {report:?}"
    );
    assert!(w.records_dropped > 0 && w.batches_dropped > 0, "{report:?}");
    assert!(w.packets_dropped > 0 && w.octets_dropped > 0, "{report:?}");
    assert_eq!(export.records_in, w.records_sent, "{report:?}");
    assert_eq!(
        report.cache.records(),
        w.records_sent + w.records_dropped,
        "{report:?}"
    );
    assert_eq!(
        report.cache.octets,
        export.octets_in + w.octets_dropped,
        "{report:?}"
    );
    assert_every_packet_accounted(&pcap, &report, export.packets_in);
    drop(listener);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_gone_exporter_drops_and_counts_everything() {
    let dir = scratch_dir("overload-gone");
    let pcap = generate_pcap(&dir, 500, 4, true);
    let (to_exporter, from_workers) = crossbeam_channel::bounded(2);
    let (_recycle, recycled) = crossbeam_channel::bounded(2);
    drop(from_workers);
    let report = worker(&pcap, to_exporter, recycled).run(&AtomicBool::new(false));
    let w = &report.worker;
    assert_eq!(w.records_sent, 0, "{report:?}");
    assert_eq!(w.records_dropped, report.cache.records(), "{report:?}");
    assert_eq!(w.octets_dropped, report.cache.octets, "{report:?}");
    assert_every_packet_accounted(&pcap, &report, 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A counter from `tapflow replay`'s final table, e.g. "packets received   1,234".
#[test]
fn replay_with_a_cache_far_too_small_accounts_every_packet() {
    let dir = scratch_dir("overload-replay");
    let pcap = generate_pcap(&dir, 3_000, 6, true);
    let collector = common::UdpCollector::bind();
    let out = tapflow()
        .arg("replay")
        .arg(&pcap)
        .args(["--source", "file", "--cache-size", "64"])
        .args(["--sample", &format!("deterministic:{SAMPLE_ONE_IN}")])
        .args(["--collector", &collector.addr()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let frames = read_pcap_frames(&pcap).len() as u64;
    let (ip_packets, _) = sum(&ground_truth(&pcap));
    let received = common::counter(&stdout, "packets received");
    let unaccounted = common::counter(&stdout, "not in any flow");
    let sampled_out = common::counter(&stdout, "sampled out");
    let in_records = common::counter(&stdout, "packets in records");
    assert!(
        common::counter(&stdout, "flows ended: lack_of_resources") > 0,
        "{stdout}"
    );
    // A replay waits for the exporter instead of dropping.
    assert_eq!(common::counter(&stdout, "records dropped (queue full)"), 0);
    assert_eq!(received, frames, "{stdout}");
    assert_eq!(unaccounted, frames - ip_packets, "{stdout}");
    assert_eq!(received, unaccounted + sampled_out + in_records, "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}
