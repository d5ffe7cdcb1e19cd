//! The worker loop: one per (port, rx queue). It owns its source, sampler and cache shard,
//! and hands expired records to the exporter in batches over a bounded channel.
//!
//! Per burst: parse every frame, sample, account the kept ones into the shard in bulk, run a
//! bounded expiry sweep, and ship what expired. The clock is read once per burst; in
//! [`Clock::Packet`] mode (replays) "now" is the latest packet time seen, so a replay is
//! deterministic and its records do not depend on how fast it ran.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use flowcache::{CacheConfig, CacheStats, FlowRecord, FlowShard, Observation, Sampler};

use crate::parse::{ParsedPacket, StopReason, parse_frame_with_wire_len};
use crate::source::{BurstStatus, MAX_BURST, Packet, PacketSource, SourceError, SourceStats};

/// Where a worker's notion of "now" comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// The packets' own timestamps (replays): deterministic, speed-independent.
    Packet,
    /// Wall time read once per burst (live ports): flows expire while the link is idle.
    Wall,
}

/// What a full queue to the exporter does to the worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backpressure {
    /// Wait for the exporter (replays: nothing may be lost, time is the packets').
    Block,
    /// Drop the batch and count its records (live ports: the NIC must keep being drained).
    Drop,
}

/// A batch of expired records on its way to the exporter.
#[derive(Debug)]
pub struct ExportBatch {
    pub worker: usize,
    pub records: Vec<FlowRecord>,
    /// The worker's clock when the batch was sent, ms since the epoch.
    pub now_ms: u64,
}

/// Messages from workers to the export loop.
#[derive(Debug)]
pub enum ToExporter {
    Records(ExportBatch),
    /// The worker's clock moved on without records (drives template refresh, aggregation).
    Tick {
        worker: usize,
        now_ms: u64,
    },
    /// The worker has stopped; its cache was flushed into earlier batches.
    Finished(Box<WorkerReport>),
    /// New collectors from a configuration reload (sent by the supervisor, not a worker).
    Reconfigure(Vec<exporter::CollectorConfig>),
}

#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub id: usize,
    pub cache: CacheConfig,
    pub clock: Clock,
    pub backpressure: Backpressure,
    /// Records per batch before it is sent even mid-burst.
    pub batch_records: usize,
    /// How often (ms of the worker's clock) an otherwise idle worker ticks the exporter.
    pub tick_interval_ms: u64,
}

impl WorkerConfig {
    pub fn new(id: usize, cache: CacheConfig, clock: Clock, backpressure: Backpressure) -> Self {
        WorkerConfig {
            id,
            cache,
            clock,
            backpressure,
            batch_records: 256,
            tick_interval_ms: 1_000,
        }
    }
}

/// Counters a worker keeps beside its cache's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Frames the worker took from its source.
    pub packets: u64,
    pub bytes: u64,
    /// Frames by where parsing stopped, indexed by `StopReason as usize`.
    pub parse_stops: [u64; StopReason::COUNT],
    /// Frames that did not belong to any flow (not IP, or an IP header that failed checks).
    pub unaccounted: u64,
    /// IP packets the sampler dropped.
    pub sampled_out: u64,
    /// Records and batches lost because the exporter queue was full (Backpressure::Drop).
    pub records_dropped: u64,
    pub batches_dropped: u64,
    /// Records handed to the exporter.
    pub records_sent: u64,
}

impl WorkerStats {
    pub fn merge(&mut self, other: &WorkerStats) {
        self.packets += other.packets;
        self.bytes += other.bytes;
        for (a, b) in self.parse_stops.iter_mut().zip(other.parse_stops.iter()) {
            *a += b;
        }
        self.unaccounted += other.unaccounted;
        self.sampled_out += other.sampled_out;
        self.records_dropped += other.records_dropped;
        self.batches_dropped += other.batches_dropped;
        self.records_sent += other.records_sent;
    }
}

/// Everything a worker knew when it stopped.
#[derive(Clone, Debug)]
pub struct WorkerReport {
    pub id: usize,
    pub worker: WorkerStats,
    pub cache: CacheStats,
    pub source: SourceStats,
    /// Set when the source failed; the cache was still flushed.
    pub error: Option<String>,
}

/// A worker's counters as last published, for the statistics log line and the metrics
/// endpoint. Published once per tick (about a second of the worker's clock), never per packet.
#[derive(Clone, Copy, Debug, Default)]
pub struct WorkerSnapshot {
    pub worker: WorkerStats,
    pub cache: CacheStats,
    pub source: SourceStats,
    pub flows_active: u64,
}

/// Where a worker publishes its snapshot; read by the supervisor thread.
pub type SharedSnapshot = Arc<Mutex<WorkerSnapshot>>;

/// One worker: a source, a sampler and a cache shard.
pub struct Worker {
    config: WorkerConfig,
    source: Box<dyn PacketSource + Send>,
    sampler: Sampler,
    shard: FlowShard,
    to_exporter: Sender<ToExporter>,
    /// Empty record vectors coming back from the exporter, so batches are not reallocated.
    recycled: Receiver<Vec<FlowRecord>>,
    stats: WorkerStats,
    pending: Vec<FlowRecord>,
    observations: Vec<Observation>,
    now_ms: u64,
    last_tick_ms: u64,
    /// Packets taken so far, published once per burst for a progress display.
    progress: Option<Arc<AtomicU64>>,
    snapshot: Option<SharedSnapshot>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("config", &self.config)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Worker {
    pub fn new(
        config: WorkerConfig,
        source: Box<dyn PacketSource + Send>,
        sampler: Sampler,
        to_exporter: Sender<ToExporter>,
        recycled: Receiver<Vec<FlowRecord>>,
    ) -> Self {
        let shard = FlowShard::new(&config.cache, sampler.info());
        let pending = Vec::with_capacity(config.batch_records + MAX_BURST);
        Worker {
            config,
            source,
            sampler,
            shard,
            to_exporter,
            recycled,
            stats: WorkerStats::default(),
            pending,
            observations: Vec::with_capacity(MAX_BURST),
            now_ms: 0,
            last_tick_ms: 0,
            progress: None,
            snapshot: None,
        }
    }

    /// Publishes counters into `snapshot` once per tick.
    pub fn with_snapshot(mut self, snapshot: SharedSnapshot) -> Self {
        self.snapshot = Some(snapshot);
        self
    }

    fn publish_snapshot(&self) {
        if let Some(shared) = &self.snapshot {
            let snapshot = WorkerSnapshot {
                worker: self.stats,
                cache: *self.shard.stats(),
                source: self.source.stats(),
                flows_active: self.shard.len() as u64,
            };
            if let Ok(mut slot) = shared.lock() {
                *slot = snapshot;
            }
        }
    }

    /// Publishes the packet count into `counter` once per burst.
    pub fn with_progress(mut self, counter: Arc<AtomicU64>) -> Self {
        self.progress = Some(counter);
        self
    }

    /// Runs until the source ends, fails, or `quit` is set; then flushes the cache
    /// (every flow leaves with EndReason::Forced) and reports.
    pub fn run(mut self, quit: &AtomicBool) -> WorkerReport {
        let mut error = None;
        while !quit.load(Ordering::Relaxed) {
            match self.poll_once() {
                Ok(BurstStatus::Delivered(_)) => {}
                Ok(BurstStatus::Ended) => break,
                Err(e) => {
                    error = Some(e.message);
                    break;
                }
            }
        }
        self.finish(error)
    }

    /// One iteration: a burst, an expiry slice, and shipping what expired.
    pub fn poll_once(&mut self) -> Result<BurstStatus, SourceError> {
        let Worker {
            source,
            sampler,
            stats,
            observations,
            ..
        } = self;
        observations.clear();
        let mut latest_ms = 0u64;
        let status = source.poll_burst(&mut |burst: &[Packet<'_>]| {
            for packet in burst {
                stats.packets += 1;
                stats.bytes += u64::from(packet.wire_len);
                let parsed: ParsedPacket = parse_frame_with_wire_len(packet.data, packet.wire_len);
                stats.parse_stops[parsed.stop as usize] += 1;
                if !parsed.stop.accounted() {
                    stats.unaccounted += 1;
                    continue;
                }
                let mut key = parsed.key;
                key.input_port = packet.port;
                if !sampler.keep(&key) {
                    stats.sampled_out += 1;
                    continue;
                }
                let timestamp_ms = packet.timestamp_us / 1_000;
                latest_ms = latest_ms.max(timestamp_ms);
                observations.push(Observation {
                    key,
                    octets: parsed.octets,
                    tcp_flags: parsed.tcp_flags,
                    ttl: parsed.ttl,
                    timestamp_ms,
                });
            }
        })?;
        if let Some(progress) = &self.progress {
            progress.store(self.stats.packets, Ordering::Relaxed);
        }
        let now = match self.config.clock {
            Clock::Packet => self.now_ms.max(latest_ms),
            Clock::Wall => self.now_ms.max(wall_clock_ms()),
        };
        self.now_ms = now;
        if !self.observations.is_empty() {
            self.shard
                .update_burst(&self.observations, now, &mut self.pending);
        }
        if now != 0 {
            self.shard.expire(now, &mut self.pending);
        }
        if self.pending.len() >= self.config.batch_records {
            self.ship(self.config.backpressure);
        }
        if now.saturating_sub(self.last_tick_ms) >= self.config.tick_interval_ms {
            if self.pending.is_empty() {
                self.send(
                    ToExporter::Tick {
                        worker: self.config.id,
                        now_ms: now,
                    },
                    self.config.backpressure,
                );
            } else {
                self.ship(self.config.backpressure);
            }
            self.last_tick_ms = now;
            self.publish_snapshot();
        }
        Ok(status)
    }

    fn ship(&mut self, backpressure: Backpressure) {
        if self.pending.is_empty() {
            return;
        }
        let spare = self
            .recycled
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(self.config.batch_records + MAX_BURST));
        let records = std::mem::replace(&mut self.pending, spare);
        let count = records.len() as u64;
        let batch = ToExporter::Records(ExportBatch {
            worker: self.config.id,
            records,
            now_ms: self.now_ms,
        });
        if self.send(batch, backpressure) {
            self.stats.records_sent += count;
        } else {
            self.stats.records_dropped += count;
            self.stats.batches_dropped += 1;
        }
    }

    /// Sends a message; false when it was dropped for backpressure or a gone exporter.
    fn send(&mut self, message: ToExporter, backpressure: Backpressure) -> bool {
        match backpressure {
            Backpressure::Block => self.to_exporter.send(message).is_ok(),
            Backpressure::Drop => match self.to_exporter.try_send(message) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
            },
        }
    }

    fn finish(mut self, error: Option<String>) -> WorkerReport {
        // Shutdown loses nothing: the flushed flows wait for room in the queue.
        self.shard.flush(&mut self.pending);
        self.ship(Backpressure::Block);
        self.publish_snapshot();
        let report = WorkerReport {
            id: self.config.id,
            worker: self.stats,
            cache: *self.shard.stats(),
            source: self.source.stats(),
            error,
        };
        // The final report always blocks: the exporter must learn the worker is done.
        let _ = self
            .to_exporter
            .send(ToExporter::Finished(Box::new(report.clone())));
        report
    }
}

pub fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
