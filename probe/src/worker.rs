//! The worker loop: one per (port, rx queue). It owns its source, sampler and cache shard,
//! and hands expired records to the exporter in batches over a bounded channel.
//!
//! Per burst, inside the source's callback while the frames are still lent: read the clock
//! once, parse every frame into a fixed array of observations, sample, then account the
//! kept ones into the shard in bulk (hash all, prefetch their buckets, update). After the
//! burst: a paced slice of the expiry sweep, and shipping what expired. Nothing on this
//! path allocates, locks, logs or makes a system call (batch vectors are recycled by the
//! exporter; the wall clock is the vDSO's). In [`Clock::Packet`] mode (replays) "now" is
//! the latest packet time seen, so a replay is deterministic and its records do not depend
//! on how fast it ran.
//!
//! The sweep is paced by the worker's clock, not by bursts: about one pass over the whole
//! table per [`SWEEP_PERIOD_MS`], one `expire` call (the cache's `expiry_budget` slots) per
//! poll at most. Sweeping once a burst would scan a large table hundreds of times a second
//! for nothing. The flow cache's decisions depend only on packet times, so the pace changes
//! when a record leaves, never what it holds; shutdown sweeps the whole table before the
//! final flush, so a replay's records do not depend on the pace either.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use flowcache::counters::{CounterSet, Spec};
use flowcache::{
    CacheConfig, CacheStats, FlowKey, FlowRecord, FlowShard, LogStarts, Observation, Sampler,
    Unclassified, flow_hash,
};

use crate::adaptive::{AdaptiveController, Change, SchedTime};
use crate::ext::{Burst, Event, ExtCounter, Extensions, Interest, RecordFate, Shown};
use crate::parse::{PacketMeta, StopReason, parse_frame_into};
use crate::policy_stage::{PolicyStage, PolicySwap, StageClassifier, Verdict};
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
    /// New policy routes from a reload: policy name, indices of its collectors.
    PolicyRoutes(Vec<(Arc<str>, Vec<usize>)>),
    /// A worker's adaptive controller changed its sampling interval. Records of flows
    /// cached before it keep the old interval and may still follow (each record carries
    /// its own, [`FlowRecord::sampling`]); every record that starts later has the new one.
    SamplingChanged(SamplingChange),
}

/// A change of a worker's sampling interval (adaptive sampling), and when it took effect.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplingChange {
    pub worker: usize,
    /// The sampling from now on.
    pub sampling: flowcache::SamplingInfo,
    /// The worker's clock when it took effect, ms since the epoch: records of the old
    /// interval end at or before it, records of the new one start at or after it (in the
    /// same millisecond only for packets stamped in it).
    pub since_ms: u64,
    /// What the controller saw: the interval before, the busy share and receive drops of
    /// the period that led to the change.
    pub from: u32,
    pub busy: f64,
    pub drops: u64,
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
    /// Sleep this long after [`IDLE_POLLS_BEFORE_SLEEP`] empty polls in a row; `None`
    /// spins. A queue the kernel fills (af_packet, AF_XDP) needs CPU time on the same
    /// cores that a spinning worker would take.
    pub idle_sleep: Option<Duration>,
    /// Touch every page of the flow table when the worker is built, so the kernel's
    /// zeroing of them is not paid under the first packets: live ports, the bench and
    /// paced replays, which are measured as ports. Off, a replay pays for the pages its
    /// flows land on and no more. Default: on with the wall clock.
    pub touch_table_at_start: bool,
}

/// Consecutive empty polls before a worker with [`WorkerConfig::idle_sleep`] sleeps: a
/// burst still arriving is not slept through.
pub const IDLE_POLLS_BEFORE_SLEEP: u32 = 16;

impl WorkerConfig {
    pub fn new(id: usize, cache: CacheConfig, clock: Clock, backpressure: Backpressure) -> Self {
        WorkerConfig {
            id,
            cache,
            clock,
            backpressure,
            batch_records: 256,
            tick_interval_ms: 1_000,
            idle_sleep: None,
            touch_table_at_start: clock == Clock::Wall,
        }
    }
}

flowcache::counters! {
    /// Counters a worker keeps beside its cache's.
    ///
    /// Every packet taken from the source ends up in exactly one place:
    /// `packets == unaccounted + sampled_out + policy_ignored + (packets in records handed
    /// to the exporter) + packets_dropped + (packets in flows still cached)`; after the final flush nothing is
    /// cached. The same holds for IP octets with `octets_dropped`.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct WorkerStats {
        /// Frames the worker took from its source.
        packets: u64 = Spec::counter("tapflow_rx_packets_total", "packets received",
            "Packets a worker took from its receive queue."),
        bytes: u64 = Spec::counter("tapflow_rx_bytes_total", "bytes received",
            "Bytes (whole frames) a worker received."),
        /// Frames by where parsing stopped, indexed by `StopReason as usize`.
        parse_stops: [u64; StopReason::COUNT] = Spec::counter("tapflow_parse_stops_total",
            "parse stop", "Packets whose parsing stopped before the transport header, by \
            reason.").by("reason", &StopReason::STOP_LABELS).when_nonzero(),
        /// Frames that did not belong to any flow (not IP, or an IP header that failed checks).
        unaccounted: u64 = Spec::counter("tapflow_unaccounted_packets_total", "not in any flow",
            "Packets that belong to no flow: not IP, or an IP header that failed its checks."),
        /// IP packets the sampler dropped.
        sampled_out: u64 = Spec::counter("tapflow_sampled_out_total", "sampled out",
            "Packets skipped by packet sampling."),
        /// IP packets of flows a policy ignores.
        policy_ignored: u64 = Spec::counter("tapflow_policy_ignored_packets_total",
            "ignored by policy", "Packets of flows an ignore [[policy]] selected: not \
            accounted, no record.").when_nonzero(),
        /// Records and batches lost because the exporter queue was full (Backpressure::Drop)
        /// or the exporter was gone.
        records_dropped: u64 = Spec::counter("tapflow_export_queue_dropped_records_total",
            "records dropped (queue full)", "Expired flow records dropped because the queue to \
            the exporter was full."),
        batches_dropped: u64 = Spec::counter("tapflow_export_queue_dropped_batches_total",
            "batches dropped (queue full)", "Batches of records dropped because the queue to \
            the exporter was full.").when_nonzero(),
        /// Packets and IP octets counted in those lost records.
        packets_dropped: u64 = Spec::counter("tapflow_export_queue_dropped_packets_total",
            "packets in dropped records", "Packets counted in the records dropped at the \
            queue to the exporter.").when_nonzero(),
        octets_dropped: u64 = Spec::counter("tapflow_export_queue_dropped_octets_total",
            "octets in dropped records", "IP octets counted in the records dropped at the \
            queue to the exporter.").when_nonzero(),
        /// Records handed to the exporter.
        records_sent: u64 = Spec::counter("tapflow_worker_records_total",
            "records sent by workers", "Flow records a worker handed to the exporter.").no_row(),
        /// Records an extension folded into another (a biflow's reverse direction), and the
        /// packets in them: exported inside that other record, not on their own.
        records_folded: u64 = Spec::counter("tapflow_records_folded_total",
            "records folded into biflows", "Records folded into another (a biflow's reverse \
            direction): exported inside that record, not on their own.").when_nonzero(),
        packets_folded: u64 = Spec::counter("tapflow_packets_folded_total",
            "packets in folded records", "Packets in the records folded into another.")
            .when_nonzero(),
        /// Events handed to the event output, and events lost to a full event queue.
        events_sent: u64 = Spec::counter("tapflow_events_queued_total", "events queued",
            "Events a worker's extensions handed to the event output.").no_row(),
        events_dropped: u64 = Spec::counter("tapflow_events_dropped_total",
            "events dropped (queue full)", "Events dropped because the queue to the event \
            output was full.").when_nonzero(),
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
    /// The source ran to its end (a replay read the whole file), rather than failing or
    /// being stopped.
    pub source_ended: bool,
    /// Each attached extension's counters, by extension name.
    pub extensions: Vec<(&'static str, Vec<ExtCounter>)>,
}

/// A worker's counters as last published, for the statistics log line and the metrics
/// endpoint. Published once per tick (about a second of the worker's clock), never per packet.
#[derive(Clone, Debug, Default)]
pub struct WorkerSnapshot {
    pub worker: WorkerStats,
    pub cache: CacheStats,
    pub source: SourceStats,
    pub flows_active: u64,
    /// Each attached extension's counters, by extension name.
    pub extensions: Vec<(&'static str, Vec<ExtCounter>)>,
    /// Snapshots published so far: it moves while the worker's loop runs (idle or not)
    /// and stops when the worker is stuck, which is what systemd's watchdog must see.
    pub ticks: u64,
}

/// Where a worker publishes its snapshot; read by the supervisor thread.
pub type SharedSnapshot = Arc<Mutex<WorkerSnapshot>>;

/// One full pass of the expiry sweep over the table per this much of the worker's clock.
pub const SWEEP_PERIOD_MS: u64 = 1_000;

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
    /// The last burst's kept packets, hashed and prefetched but not yet accounted, and the
    /// buffer the next burst is parsed into (see [`BurstPipeline`]).
    pipeline: Box<BurstPipeline>,
    now_ms: u64,
    last_tick_ms: u64,
    sweep: SweepPacer,
    /// Packets taken so far, published once per burst for a progress display.
    progress: Option<Arc<AtomicU64>>,
    snapshot: Option<SharedSnapshot>,
    /// Per-packet analysis beside the cache; empty unless something is enabled.
    extensions: Extensions,
    /// Events emitted during the current burst, and where they go.
    events: Vec<Event>,
    event_queue: Option<Sender<Event>>,
    ticks: u64,
    /// Policies: classified on a flow's first packet; `None` without `[[policy]]`.
    policy: Option<Box<PolicyStage>>,
    /// Where reloaded rules arrive, and the version last taken.
    policy_swap: Option<(Arc<PolicySwap>, u64)>,
    /// Adaptive sampling; `None` (the loop as it was) unless `[sampling.adaptive]` is on.
    adaptive: Option<Box<AdaptiveController>>,
    /// The last poll received nothing but accounted the burst held from the poll before:
    /// work on packets (the flow cache's part of it), which the busy share must count.
    accounted_held: bool,
    /// Scratch for showing packets to extensions after the policy stage decided them.
    origins: Box<Origins>,
    /// A burst's packets the extensions want, written down by the parse loop.
    shown: Vec<Shown>,
    /// The records the cache started since the extensions were last told; `None` unless
    /// an extension wants them ([`crate::ext::Extension::wants_flow_starts`]).
    flow_starts: Option<Vec<Observation>>,
}

/// Spreads the expiry sweep over the worker's clock: credit accrues in slot-milliseconds
/// (table slots times elapsed ms) and each `expire` call spends its slots times
/// [`SWEEP_PERIOD_MS`]. Credit is capped at one pass, so a clock jump costs at most one
/// pass, spread over the following polls.
#[derive(Clone, Copy, Debug)]
struct SweepPacer {
    credit: u64,
    cap: u64,
    cost: u64,
    capacity: u64,
    accounted_to_ms: u64,
}

impl SweepPacer {
    fn new(shard: &FlowShard, expiry_budget: usize) -> SweepPacer {
        let bucket = shard.bucket_size().max(1);
        let per_call = (expiry_budget.max(1).div_ceil(bucket) * bucket).min(shard.capacity());
        let capacity = shard.capacity() as u64;
        SweepPacer {
            credit: 0,
            cap: capacity.saturating_mul(SWEEP_PERIOD_MS),
            cost: (per_call as u64).saturating_mul(SWEEP_PERIOD_MS).max(1),
            capacity,
            accounted_to_ms: 0,
        }
    }

    /// Whether a slice of the sweep is due at `now_ms`.
    #[inline]
    fn due(&mut self, now_ms: u64) -> bool {
        if now_ms > self.accounted_to_ms {
            let elapsed = now_ms - self.accounted_to_ms;
            self.accounted_to_ms = now_ms;
            self.credit = self
                .credit
                .saturating_add(self.capacity.saturating_mul(elapsed))
                .min(self.cap);
        }
        if self.credit >= self.cost {
            self.credit -= self.cost;
            true
        } else {
            false
        }
    }
}

/// One burst's kept packets with their flow hashes, filled by index, never pushed.
#[derive(Clone, Copy, Debug)]
struct PreparedBurst {
    observations: [Observation; MAX_BURST],
    hashes: [u64; MAX_BURST],
    len: usize,
    now_ms: u64,
}

/// Two bursts in flight through the flow cache, so its memory latency overlaps other work
/// instead of stalling the worker. A burst is parsed and hashed as it arrives; its bucket
/// headers are requested one by one while the previous burst is accounted; it is accounted
/// after the next burst was received and parsed, each entry requested a few packets before
/// its update ([`FlowShard::update_interleaved`]). Bursts are accounted in arrival order,
/// each with its own `now`, so the records are the same as without the pipeline; the held
/// burst is accounted before anything that must see every packet: a sweep, an idle poll,
/// a snapshot, shutdown.
#[derive(Debug)]
struct BurstPipeline {
    bursts: [PreparedBurst; 2],
    /// Index of the burst being filled; the other one is held (when its `len` > 0).
    filling: usize,
}

impl BurstPipeline {
    fn new() -> Box<BurstPipeline> {
        let empty = PreparedBurst {
            observations: [Observation::default(); MAX_BURST],
            hashes: [0; MAX_BURST],
            len: 0,
            now_ms: 0,
        };
        Box::new(BurstPipeline {
            bursts: [empty; 2],
            filling: 0,
        })
    }

    /// The burst to fill and the held one.
    #[inline]
    fn split(&mut self) -> (&mut PreparedBurst, &mut PreparedBurst) {
        let [a, b] = &mut self.bursts;
        if self.filling == 0 { (a, b) } else { (b, a) }
    }

    /// Accounts the held burst, if any; says whether there was one.
    #[inline]
    fn drain(
        &mut self,
        shard: &mut FlowShard,
        policy: Option<&mut StageClassifier<'_>>,
        starts: Option<&mut Vec<Observation>>,
        expired: &mut Vec<FlowRecord>,
    ) -> bool {
        let (_, held) = self.split();
        let any = held.len > 0;
        if any {
            let n = held.len;
            account(
                shard,
                &held.observations[..n],
                &held.hashes[..n],
                held.now_ms,
                &[],
                policy,
                starts,
                expired,
            );
            held.len = 0;
        }
        any
    }

    /// Takes a freshly parsed burst (in the filling buffer, `len` set): hashes it (unless
    /// `hashed`: the parse loop did, for the extensions), accounts the held burst while
    /// requesting the fresh burst's headers one per update, and holds the fresh burst.
    /// Without extensions hashing is a pass of its own, not part of the parse loop: there
    /// the hash's wide loads of the key would wait on the parser's narrow stores into it.
    #[inline]
    fn advance(
        &mut self,
        shard: &mut FlowShard,
        policy: Option<&mut StageClassifier<'_>>,
        starts: Option<&mut Vec<Observation>>,
        expired: &mut Vec<FlowRecord>,
        hashed: bool,
    ) {
        let (fresh, held) = self.split();
        let n = fresh.len;
        if !hashed {
            FlowShard::hash_burst(&fresh.observations[..n], &mut fresh.hashes[..n]);
        }
        let h = held.len;
        account(
            shard,
            &held.observations[..h],
            &held.hashes[..h],
            held.now_ms,
            &fresh.hashes[..n],
            policy,
            starts,
            expired,
        );
        held.len = 0;
        self.filling ^= 1;
    }
}

/// Accounts a hashed burst into the shard, through the policy stage if there is one (it
/// decides the packets of flows the cache does not hold; see [`PolicyStage`]), writing
/// down the records it starts if `starts` is given (for extensions, [`LogStarts`]).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn account(
    shard: &mut FlowShard,
    observations: &[Observation],
    hashes: &[u64],
    now_ms: u64,
    next: &[u64],
    policy: Option<&mut StageClassifier<'_>>,
    starts: Option<&mut Vec<Observation>>,
    expired: &mut Vec<FlowRecord>,
) {
    match (policy, starts) {
        (None, None) => shard.update_interleaved(observations, hashes, now_ms, next, expired),
        (Some(classifier), None) => shard.update_interleaved_classified(
            observations,
            hashes,
            now_ms,
            next,
            classifier,
            expired,
        ),
        (None, Some(starts)) => shard.update_interleaved_classified(
            observations,
            hashes,
            now_ms,
            next,
            &mut LogStarts {
                classifier: Unclassified,
                starts,
            },
            expired,
        ),
        (Some(classifier), Some(starts)) => shard.update_interleaved_classified(
            observations,
            hashes,
            now_ms,
            next,
            &mut LogStarts { classifier, starts },
            expired,
        ),
    }
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("config", &self.config)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// One burst's counters, kept on the stack and added to [`WorkerStats`] once per burst.
#[derive(Clone, Copy, Debug, Default)]
struct BurstCounters {
    packets: u64,
    bytes: u64,
    /// Stops other than `Complete` (the common case is derived, so the loop does not
    /// increment one memory counter per packet in a chain).
    parse_stops: [u64; StopReason::COUNT],
    incomplete: u64,
    unaccounted: u64,
    sampled_out: u64,
    policy_ignored: u64,
}

impl BurstCounters {
    #[inline]
    fn add_to(&self, stats: &mut WorkerStats) {
        stats.packets += self.packets;
        stats.bytes += self.bytes;
        for (total, n) in stats.parse_stops.iter_mut().zip(self.parse_stops) {
            *total += n;
        }
        stats.parse_stops[StopReason::Complete as usize] += self.packets - self.incomplete;
        stats.unaccounted += self.unaccounted;
        stats.sampled_out += self.sampled_out;
        stats.policy_ignored += self.policy_ignored;
    }
}

/// What the parse loop shows each frame to, besides the cache. The loop is compiled once
/// per hook, so [`NoHook`] (no extension attached) costs nothing.
trait PacketHook {
    /// Whether the hook looks at packets at all.
    const ACTIVE: bool = true;
    /// `frame` is the packet's index in its burst.
    fn packet(&mut self, frame: usize, key: &FlowKey, hash: u64, meta: PacketMeta, sampled: bool);
}

struct NoHook;

impl PacketHook for NoHook {
    const ACTIVE: bool = false;
    #[inline(always)]
    fn packet(&mut self, _: usize, _: &FlowKey, _: u64, _: PacketMeta, _: bool) {}
}

/// Writes down each frame of a subscribed class, for the extensions to see once the
/// burst is parsed ([`Extensions::on_burst`]): a call per extension and burst, not per
/// packet, and the parse loop stays small.
struct ExtensionHook<'a> {
    interest: Interest,
    shown: &'a mut Vec<Shown>,
}

impl PacketHook for ExtensionHook<'_> {
    // Into the parse loop: a call here would pass the key and parse results through
    // memory and save and restore the loop's registers, a packet at a time.
    #[inline(always)]
    fn packet(&mut self, frame: usize, key: &FlowKey, hash: u64, meta: PacketMeta, sampled: bool) {
        let classes = Interest::of(key, &meta);
        if !self.interest.intersects(classes) {
            return;
        }
        self.shown.push(Shown {
            frame,
            key: *key,
            hash,
            meta,
            sampled,
            classes,
        });
    }
}

/// Where each accounted packet of a burst came from, for showing it to extensions after
/// the policy stage decided its fate: its frame's index and what the parser found.
struct Origins {
    frame: [usize; MAX_BURST],
    meta: [PacketMeta; MAX_BURST],
}

/// The parse loop of a worker with policies: every accounted packet goes on to the cache,
/// where the policy stage decides the packets of flows the cache does not hold (so it
/// does not sample here). Frames that belong to no flow are shown to `hook` here; the
/// others after accounting, with their fate, from `origins`. Returns how many were
/// accounted.
#[inline]
fn parse_burst_policy<H: PacketHook>(
    packets: &[Packet<'_>],
    observations: &mut [Observation; MAX_BURST],
    counters: &mut BurstCounters,
    hook: &mut H,
    origins: &mut Origins,
) -> usize {
    let mut accounted = 0;
    let (mut stamp_us, mut stamp_ms) = (u64::MAX, u64::MAX / 1_000);
    for (index, packet) in packets.iter().enumerate().take(MAX_BURST) {
        counters.bytes += u64::from(packet.wire_len);
        let observation = &mut observations[accounted];
        observation.key = FlowKey {
            input_port: packet.port,
            ..FlowKey::default()
        };
        let meta = parse_frame_into(packet.data, packet.wire_len, &mut observation.key);
        if meta.stop != StopReason::Complete {
            counters.parse_stops[meta.stop as usize] += 1;
            counters.incomplete += 1;
        }
        if !meta.stop.accounted() {
            counters.unaccounted += 1;
            hook.packet(index, &observation.key, 0, meta, false);
            continue;
        }
        observation.octets = meta.octets;
        observation.tcp_flags = meta.tcp_flags;
        observation.ttl = meta.ttl;
        if packet.timestamp_us != stamp_us {
            stamp_us = packet.timestamp_us;
            stamp_ms = stamp_us / 1_000;
        }
        observation.timestamp_ms = stamp_ms;
        if H::ACTIVE {
            origins.frame[accounted] = index;
            origins.meta[accounted] = meta;
        }
        accounted += 1;
    }
    counters.packets += packets.len().min(MAX_BURST) as u64;
    accounted
}

/// Parses `packets` (at most [`MAX_BURST`]) into `observations`, keeping those the sampler
/// keeps; returns how many were kept. Every frame is shown to `hook`. With an active hook
/// the kept packets' flow hashes are computed here, once for the hook and the cache, into
/// `hashes` (without one they are left to [`BurstPipeline::advance`]).
#[inline]
fn parse_burst<H: PacketHook>(
    packets: &[Packet<'_>],
    sampler: &mut Sampler,
    observations: &mut [Observation; MAX_BURST],
    hashes: &mut [u64; MAX_BURST],
    counters: &mut BurstCounters,
    hook: &mut H,
) -> usize {
    let keep_all = sampler.keeps_all();
    if !H::ACTIVE && !keep_all {
        return parse_burst_then_sample(packets, sampler, observations, counters);
    }
    let mut kept = 0;
    // A driver stamps a burst's frames with one time, mostly: divide only when it changes.
    let (mut stamp_us, mut stamp_ms) = (u64::MAX, u64::MAX / 1_000);
    // A kept packet is hashed and shown to the hook one packet late, after the next one is
    // parsed: by then the parser's narrow stores into its key have left the store buffer,
    // and the hash's wide loads of the key do not wait for them. The order is kept: the
    // late packet is shown before any later one.
    let mut late: Option<(usize, PacketMeta)> = None;
    for (packet, index) in packets.iter().zip(0..MAX_BURST) {
        counters.bytes += u64::from(packet.wire_len);
        // The key is parsed straight into its slot (see `parse_frame_into`); a packet that
        // is not kept leaves the slot to the next one.
        let observation = &mut observations[kept];
        observation.key = FlowKey {
            input_port: packet.port,
            ..FlowKey::default()
        };
        let meta = parse_frame_into(packet.data, packet.wire_len, &mut observation.key);
        if H::ACTIVE
            && let Some((late_index, late_meta)) = late.take()
        {
            let key = &observations[kept - 1].key;
            let hash = flow_hash(key);
            hashes[kept - 1] = hash;
            hook.packet(late_index, key, hash, late_meta, true);
        }
        let observation = &mut observations[kept];
        if meta.stop != StopReason::Complete {
            counters.parse_stops[meta.stop as usize] += 1;
            counters.incomplete += 1;
        }
        if !meta.stop.accounted() {
            counters.unaccounted += 1;
            hook.packet(index, &observation.key, 0, meta, false);
            continue;
        }
        observation.octets = meta.octets;
        observation.tcp_flags = meta.tcp_flags;
        observation.ttl = meta.ttl;
        if packet.timestamp_us != stamp_us {
            stamp_us = packet.timestamp_us;
            stamp_ms = stamp_us / 1_000;
        }
        observation.timestamp_ms = stamp_ms;
        let sampled = keep_all || sampler.keep(&observation.key);
        if sampled {
            if H::ACTIVE {
                late = Some((index, meta));
            }
            kept += 1;
        } else {
            // Its slot goes to the next packet: shown now.
            if H::ACTIVE {
                let hash = flow_hash(&observation.key);
                hook.packet(index, &observation.key, hash, meta, false);
            }
            counters.sampled_out += 1;
        }
    }
    if let Some((late_index, late_meta)) = late {
        let key = &observations[kept - 1].key;
        let hash = flow_hash(key);
        hashes[kept - 1] = hash;
        hook.packet(late_index, key, hash, late_meta, true);
    }
    counters.packets += packets.len().min(MAX_BURST) as u64;
    if keep_all {
        sampler.kept_all(kept as u64);
    }
    kept
}

/// [`parse_burst`] for a sampling worker with nothing to show packets to: the whole burst
/// is parsed first, then sampled in a pass of its own, then the kept packets are moved
/// together. Every packet pays for the sampling decision, kept or not, and the hash-sampling
/// hash is a chain of dependent multiplies: decided as each packet is parsed, the next
/// packet's slot depends on it and the chains run one after another; in a pass of their own
/// the packets' chains are independent and the CPU runs several at once.
#[inline]
fn parse_burst_then_sample(
    packets: &[Packet<'_>],
    sampler: &mut Sampler,
    observations: &mut [Observation; MAX_BURST],
    counters: &mut BurstCounters,
) -> usize {
    let mut parsed = 0;
    let (mut stamp_us, mut stamp_ms) = (u64::MAX, u64::MAX / 1_000);
    for (packet, _) in packets.iter().zip(0..MAX_BURST) {
        counters.bytes += u64::from(packet.wire_len);
        let observation = &mut observations[parsed];
        observation.key = FlowKey {
            input_port: packet.port,
            ..FlowKey::default()
        };
        let meta = parse_frame_into(packet.data, packet.wire_len, &mut observation.key);
        if meta.stop != StopReason::Complete {
            counters.parse_stops[meta.stop as usize] += 1;
            counters.incomplete += 1;
        }
        if !meta.stop.accounted() {
            counters.unaccounted += 1;
            continue;
        }
        observation.octets = meta.octets;
        observation.tcp_flags = meta.tcp_flags;
        observation.ttl = meta.ttl;
        if packet.timestamp_us != stamp_us {
            stamp_us = packet.timestamp_us;
            stamp_ms = stamp_us / 1_000;
        }
        observation.timestamp_ms = stamp_ms;
        parsed += 1;
    }
    counters.packets += packets.len().min(MAX_BURST) as u64;
    let mut keep = [false; MAX_BURST];
    for (verdict, observation) in keep.iter_mut().zip(&observations[..parsed]) {
        *verdict = sampler.keep(&observation.key);
    }
    let mut kept = 0;
    for j in 0..parsed {
        if keep[j] {
            observations[kept] = observations[j];
            kept += 1;
        }
    }
    counters.sampled_out += (parsed - kept) as u64;
    kept
}

impl Worker {
    pub fn new(
        config: WorkerConfig,
        source: Box<dyn PacketSource + Send>,
        sampler: Sampler,
        to_exporter: Sender<ToExporter>,
        recycled: Receiver<Vec<FlowRecord>>,
    ) -> Self {
        let mut shard = FlowShard::new(&config.cache, sampler.info());
        if config.touch_table_at_start {
            shard.prefault();
        }
        let pending = Vec::with_capacity(config.batch_records + MAX_BURST);
        let sweep = SweepPacer::new(&shard, config.cache.expiry_budget);
        Worker {
            config,
            source,
            sampler,
            shard,
            to_exporter,
            recycled,
            stats: WorkerStats::default(),
            pending,
            pipeline: BurstPipeline::new(),
            now_ms: 0,
            last_tick_ms: 0,
            ticks: 0,
            sweep,
            progress: None,
            snapshot: None,
            extensions: Extensions::default(),
            events: Vec::new(),
            event_queue: None,
            policy: None,
            policy_swap: None,
            adaptive: None,
            accounted_held: false,
            origins: Box::new(Origins {
                frame: [0; MAX_BURST],
                meta: [PacketMeta::default(); MAX_BURST],
            }),
            shown: Vec::with_capacity(MAX_BURST),
            flow_starts: None,
        }
    }

    /// Lets `controller` set the sampling interval (hash-based, whole flows); the sampler
    /// starts at the controller's interval.
    pub fn with_adaptive(mut self, controller: AdaptiveController) -> Self {
        self.sampler.set_hash_interval(controller.interval());
        self.shard
            .set_sampling(self.sampler.info(), &mut self.pending);
        self.adaptive = Some(Box::new(controller));
        self
    }

    /// Takes new rules from `swap` when a reload publishes them (with a policy stage).
    pub fn with_policy_swap(mut self, swap: Arc<PolicySwap>) -> Self {
        let version = swap.version();
        self.policy_swap = Some((swap, version));
        self
    }

    /// Swaps in reloaded rules, between bursts.
    fn take_new_rules(&mut self) {
        if let (Some((swap, seen)), Some(stage)) = (&mut self.policy_swap, &mut self.policy) {
            let version = swap.version();
            if version != *seen {
                *seen = version;
                stage.swap(swap.rules());
            }
        }
    }

    /// Applies policies to the flows (see [`PolicyStage`]).
    pub fn with_policy(mut self, stage: PolicyStage) -> Self {
        // The decision of a flow the cache holds is its record's label.
        self.shard.keep_labels();
        self.policy = Some(Box::new(stage));
        self
    }

    /// Attaches extensions; their events go to `event_queue` (a full queue drops and
    /// counts them: a worker never waits for the event output).
    pub fn with_extensions(mut self, extensions: Extensions, event_queue: Sender<Event>) -> Self {
        self.flow_starts = extensions
            .wants_flow_starts()
            .then(|| Vec::with_capacity(2 * MAX_BURST));
        self.extensions = extensions;
        self.event_queue = Some(event_queue);
        self
    }

    /// Publishes counters into `snapshot` once per tick.
    pub fn with_snapshot(mut self, snapshot: SharedSnapshot) -> Self {
        self.snapshot = Some(snapshot);
        self
    }

    fn publish_snapshot(&mut self) {
        if let Some(stage) = self.policy.as_deref_mut() {
            // Counted by the stage as the cache asked it, folded in here.
            let (sampled_out, ignored) = stage.take_unaccounted();
            self.stats.sampled_out += sampled_out;
            self.stats.policy_ignored += ignored;
        }
        self.ticks += 1;
        if let Some(shared) = &self.snapshot {
            let snapshot = WorkerSnapshot {
                ticks: self.ticks,
                worker: self.stats,
                cache: *self.shard.stats(),
                source: self.source.stats(),
                flows_active: self.shard.len() as u64,
                extensions: self.extension_counters(),
            };
            if let Ok(mut slot) = shared.lock() {
                *slot = snapshot;
            }
        }
    }

    /// Each extension's counters, and the policy stage's as extension `policy`.
    fn extension_counters(&self) -> Vec<(&'static str, Vec<ExtCounter>)> {
        let mut counters = self.extensions.counters();
        if let Some(stage) = &self.policy {
            counters.push(("policy", stage.ext_counters()));
        }
        if let Some(controller) = &self.adaptive {
            counters.push(("adaptive", controller.counters().series()));
        }
        counters
    }

    /// Publishes the packet count into `counter` once per burst.
    pub fn with_progress(mut self, counter: Arc<AtomicU64>) -> Self {
        self.progress = Some(counter);
        self
    }

    /// Runs until the source ends, fails, or `quit` is set; then flushes the cache
    /// (every flow leaves with EndReason::Forced) and reports.
    pub fn run(mut self, quit: &AtomicBool) -> WorkerReport {
        let adaptive = self.adaptive.is_some();
        let (error, ended) = match self.config.idle_sleep {
            None if adaptive => self.poll_until_stopped(quit, Worker::after_poll_adaptive),
            None => self.poll_until_stopped(quit, |_, _| {}),
            Some(sleep) => {
                let mut empty_polls = 0u32;
                self.poll_until_stopped(quit, move |worker, status| {
                    if status == BurstStatus::Delivered(0) {
                        empty_polls = empty_polls.saturating_add(1);
                        if empty_polls >= IDLE_POLLS_BEFORE_SLEEP {
                            std::thread::sleep(sleep);
                        }
                    } else {
                        empty_polls = 0;
                    }
                    // After the sleep: it belongs to this empty poll, idle time, not to
                    // the next poll, which may receive packets.
                    if adaptive {
                        worker.after_poll_adaptive(status);
                    }
                })
            }
        };
        self.finish(error, ended)
    }

    /// Polls until the source ends, fails, or `quit` is set, calling `after_poll` after
    /// each poll that did not end the loop (a no-op closure compiles to the bare loop).
    /// Returns the source's error and whether it ended.
    #[inline]
    fn poll_until_stopped(
        &mut self,
        quit: &AtomicBool,
        mut after_poll: impl FnMut(&mut Self, BurstStatus),
    ) -> (Option<String>, bool) {
        while !quit.load(Ordering::Relaxed) {
            match self.poll_once() {
                Ok(status @ BurstStatus::Delivered(_)) => after_poll(self, status),
                Ok(BurstStatus::Ended) => return (None, true),
                Err(e) => return (Some(e.message), false),
            }
        }
        (None, false)
    }

    /// After a poll with adaptive sampling: at the end of a period the controller decides,
    /// and a change is applied. Flows cached under the old interval keep it: each ends
    /// (forced) at its next packet, which starts a record under the new one, or when the
    /// sweep passes it (flowcache's "Sampling epochs"), so no record mixes two intervals
    /// and nothing waits for the exporter. The exporter learns the change in the same queue.
    fn after_poll_adaptive(&mut self, status: BurstStatus) {
        // A poll worked on packets when it received some, or when it accounted the burst
        // the poll before held back (the pipeline): with a worker that keeps up, that is
        // the next, otherwise idle, poll, and it does the flow cache's part of the work,
        // the part sampling relieves.
        let busy = self.accounted_held || matches!(status, BurstStatus::Delivered(n) if n > 0);
        let now = Instant::now();
        let Some(controller) = self.adaptive.as_deref_mut() else {
            return;
        };
        if !controller.observe(busy, now) {
            return;
        }
        let source = self.source.stats();
        let drops = source.rx_missed + source.rx_nombuf + source.rx_xdp_ring_full;
        let decided =
            controller.decide(self.stats.packets, drops, SchedTime::of_this_thread(), now);
        // One line a period, for plots of the controller (bench/adaptive.sh); off by default.
        log::debug!(
            target: "probe::adaptive",
            "worker {} period at {} ms: busy {} permille, interval {}",
            self.config.id,
            self.now_ms,
            controller.counters().busy_permille,
            controller.interval()
        );
        let Some(change) = decided else {
            return;
        };
        self.apply_sampling_change(change);
        let packets = self.stats.packets;
        if let Some(controller) = self.adaptive.as_deref_mut() {
            controller.restart(Instant::now(), packets, drops, SchedTime::of_this_thread());
        }
    }

    fn apply_sampling_change(&mut self, change: Change) {
        // The held packets were sampled the old way: they are accounted under it.
        self.drain_pipeline();
        // Cached flows keep the sampling they started with and end lazily (at their next
        // packet, or as the sweep passes them): no flush, no wait for the exporter.
        self.sampler.set_hash_interval(change.to);
        self.shard
            .set_sampling(self.sampler.info(), &mut self.pending);
        let message = ToExporter::SamplingChanged(SamplingChange {
            worker: self.config.id,
            sampling: self.sampler.info(),
            since_ms: self.now_ms,
            from: change.from,
            busy: change.busy,
            drops: change.drops,
        });
        // Rare, and the collectors cannot scale without it: it waits for room.
        let _ = self.to_exporter.send(message);
    }

    /// One iteration: a burst, a paced expiry slice, and shipping what expired.
    pub fn poll_once(&mut self) -> Result<BurstStatus, SourceError> {
        let Worker {
            config,
            source,
            sampler,
            shard,
            stats,
            pending,
            pipeline,
            now_ms,
            extensions,
            events,
            policy,
            origins,
            shown,
            flow_starts,
            ..
        } = self;
        let clock = config.clock;
        // Extensions that want no packet (biflows without TCP state follow the records the
        // cache starts instead) leave the parse loop without a hook.
        let interest = extensions.interest();
        let with_hook = !interest.is_empty();
        let status = source.poll_burst(&mut |burst: &[Packet<'_>]| {
            // The clock, once per burst: the burst's latest packet time, or the wall's.
            let now = match clock {
                // Flooring commutes with max: one division a burst.
                Clock::Packet => {
                    let latest_us = burst.iter().map(|p| p.timestamp_us).max().unwrap_or(0);
                    (latest_us / 1_000).max(*now_ms)
                }
                Clock::Wall => (*now_ms).max(wall_clock_ms()),
            };
            *now_ms = now;
            // A source may not hand over more than MAX_BURST frames, but if one did, its
            // frames would still be counted and accounted, a burst's worth at a time.
            for chunk in burst.chunks(MAX_BURST) {
                let mut counters = BurstCounters::default();
                let (fresh, _) = pipeline.split();
                let observations = &mut fresh.observations;
                let kept = match (with_hook, policy.as_deref_mut()) {
                    (true, Some(stage)) => {
                        let mut hook = ExtensionHook {
                            interest,
                            shown: &mut *shown,
                        };
                        let n = parse_burst_policy(
                            chunk,
                            observations,
                            &mut counters,
                            &mut hook,
                            origins,
                        );
                        // Accounted at once, not held: the extensions see each packet
                        // with its fate while its frame is still lent.
                        let hashes = &mut fresh.hashes[..n];
                        FlowShard::hash_burst(&observations[..n], hashes);
                        stage.record_verdicts(n);
                        account(
                            shard,
                            &observations[..n],
                            hashes,
                            now,
                            &[],
                            Some(&mut stage.classifier(sampler)),
                            flow_starts.as_mut(),
                            pending,
                        );
                        stage.stop_recording();
                        for (j, observation) in observations[..n].iter().enumerate() {
                            let (verdict, key) =
                                stage.verdict(j).unwrap_or((Verdict::Keep, observation.key));
                            // A policy may account the packet under another key.
                            let hash = if key == observation.key {
                                hashes[j]
                            } else {
                                flow_hash(&key)
                            };
                            hook.packet(
                                origins.frame[j],
                                &key,
                                hash,
                                origins.meta[j],
                                verdict == Verdict::Keep,
                            );
                        }
                        0
                    }
                    (true, None) => {
                        let mut hook = ExtensionHook {
                            interest,
                            shown: &mut *shown,
                        };
                        parse_burst(
                            chunk,
                            sampler,
                            observations,
                            &mut fresh.hashes,
                            &mut counters,
                            &mut hook,
                        )
                    }
                    (false, Some(_)) => {
                        parse_burst_policy(chunk, observations, &mut counters, &mut NoHook, origins)
                    }
                    (false, None) => parse_burst(
                        chunk,
                        sampler,
                        observations,
                        &mut fresh.hashes,
                        &mut counters,
                        &mut NoHook,
                    ),
                };
                counters.add_to(stats);
                if !shown.is_empty() {
                    extensions.on_burst(&Burst::new(chunk, shown), events);
                    shown.clear();
                }
                if kept > 0 {
                    fresh.len = kept;
                    fresh.now_ms = now;
                    let mut classifier = policy.as_deref_mut().map(|s| s.classifier(sampler));
                    // With a hook the parse loop hashed the burst for it.
                    pipeline.advance(
                        shard,
                        classifier.as_mut(),
                        flow_starts.as_mut(),
                        pending,
                        with_hook,
                    );
                }
            }
        })?;
        if self.policy_swap.is_some() {
            self.take_new_rules();
        }
        self.accounted_held = false;
        if !matches!(status, BurstStatus::Delivered(n) if n > 0) {
            // Nothing new is coming to push the held burst through: account it now.
            self.accounted_held = self.drain_pipeline();
        }
        if let Some(progress) = &self.progress {
            progress.store(self.stats.packets, Ordering::Relaxed);
        }
        if !self.extensions.is_empty() {
            self.flow_starts_to_extensions();
            let now_us = self.now_ms.max(wall_idle_ms(self.config.clock, status)) * 1_000;
            if now_us != 0 {
                self.extensions.on_clock(now_us, &mut self.events);
            }
            self.ship_events();
        }
        if self.config.clock == Clock::Wall && status == BurstStatus::Delivered(0) {
            // An idle port: time goes on, and flows must still expire.
            self.now_ms = self.now_ms.max(wall_clock_ms());
        }
        let now = self.now_ms;
        if now != 0 && self.sweep.due(now) {
            // The sweep must see the held packets: one of them may keep a flow alive.
            self.drain_pipeline();
            self.shard.expire(now, &mut self.pending);
        }
        if self.pending.len() >= self.config.batch_records {
            self.ship(self.config.backpressure);
        }
        if now.saturating_sub(self.last_tick_ms) >= self.config.tick_interval_ms {
            if self.pending.is_empty() {
                self.send_tick(now, self.config.backpressure);
            } else {
                self.ship(self.config.backpressure);
            }
            self.last_tick_ms = now;
            self.drain_pipeline();
            self.publish_snapshot();
        }
        Ok(status)
    }

    /// Accounts the held burst, if any, now; says whether there was one.
    fn drain_pipeline(&mut self) -> bool {
        let Worker {
            pipeline,
            shard,
            pending,
            policy,
            sampler,
            flow_starts,
            ..
        } = self;
        let mut classifier = policy.as_deref_mut().map(|s| s.classifier(sampler));
        pipeline.drain(shard, classifier.as_mut(), flow_starts.as_mut(), pending)
    }

    /// Tells the extensions of the records the cache started since they were last told.
    fn flow_starts_to_extensions(&mut self) {
        if let Some(starts) = &mut self.flow_starts {
            self.extensions.on_flow_starts(starts);
            starts.clear();
        }
    }

    /// Hands the burst's events to the event output; a full queue drops and counts them.
    fn ship_events(&mut self) {
        for event in self.events.drain(..) {
            let sent = match &self.event_queue {
                Some(queue) => queue.try_send(event).is_ok(),
                None => false,
            };
            if sent {
                self.stats.events_sent += 1;
            } else {
                self.stats.events_dropped += 1;
            }
        }
    }

    /// Shows each pending record to the extensions, which attach their fields, and takes
    /// out the records they folded into others.
    fn records_to_extensions(&mut self) {
        // A record is shown after the start of every record begun before it left.
        self.flow_starts_to_extensions();
        let Worker {
            extensions,
            pending,
            stats,
            ..
        } = self;
        pending.retain_mut(|record| match extensions.on_record(record) {
            RecordFate::Keep => true,
            RecordFate::Folded => {
                stats.records_folded += 1;
                stats.packets_folded += record.packets;
                false
            }
        });
    }

    /// Sends the pending records as one batch. A refused batch (full queue with
    /// Backpressure::Drop, or a gone exporter) is counted, packets and octets included,
    /// and its vector is kept for the next batch.
    fn ship(&mut self, backpressure: Backpressure) {
        if let Some(stage) = self.policy.as_deref_mut() {
            for record in &mut self.pending {
                stage.mark(record);
            }
        }
        if !self.extensions.is_empty() {
            self.records_to_extensions();
        }
        if self.pending.is_empty() {
            return;
        }
        let records = std::mem::take(&mut self.pending);
        let count = records.len() as u64;
        let batch = ToExporter::Records(ExportBatch {
            worker: self.config.id,
            records,
            now_ms: self.now_ms,
        });
        let refused = match backpressure {
            Backpressure::Block => self.to_exporter.send(batch).err().map(|e| e.into_inner()),
            Backpressure::Drop => match self.to_exporter.try_send(batch) {
                Ok(()) => None,
                Err(TrySendError::Full(batch)) | Err(TrySendError::Disconnected(batch)) => {
                    Some(batch)
                }
            },
        };
        match refused {
            None => {
                self.stats.records_sent += count;
                self.pending = self
                    .recycled
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(self.config.batch_records + MAX_BURST));
            }
            Some(ToExporter::Records(ExportBatch { mut records, .. })) => {
                self.stats.records_dropped += count;
                self.stats.batches_dropped += 1;
                for r in &records {
                    self.stats.packets_dropped += r.packets;
                    self.stats.octets_dropped += r.octets;
                }
                records.clear();
                self.pending = records;
            }
            Some(_) => unreachable!("a refused send hands back the batch it was given"),
        }
    }

    /// Tells the exporter the clock moved on; a tick lost to a full queue does no harm.
    fn send_tick(&mut self, now_ms: u64, backpressure: Backpressure) {
        let tick = ToExporter::Tick {
            worker: self.config.id,
            now_ms,
        };
        let _ = match backpressure {
            Backpressure::Block => self.to_exporter.send(tick).is_ok(),
            Backpressure::Drop => self.to_exporter.try_send(tick).is_ok(),
        };
    }

    fn finish(mut self, error: Option<String>, source_ended: bool) -> WorkerReport {
        self.drain_pipeline();
        if !self.extensions.is_empty() {
            self.extensions
                .on_finish(self.now_ms * 1_000, &mut self.events);
            self.ship_events();
        }
        // Flows already past their deadline leave with their time reason, whatever the
        // sweep's pace; then every other flow is flushed as forced.
        // Shutdown loses nothing: the flows wait for room in the queue, in batches of the
        // usual size, taken from the shard a slice at a time so that a large table never
        // exists twice in memory (once as entries, once as records).
        let batch = self.config.batch_records.max(1);
        if self.now_ms != 0 {
            // One whole pass of the sweep, in its usual slices.
            let slices = self
                .shard
                .capacity()
                .div_ceil(self.config.cache.expiry_budget.max(1));
            for _ in 0..slices {
                self.shard.expire(self.now_ms, &mut self.pending);
                if self.pending.len() >= batch {
                    self.ship(Backpressure::Block);
                }
            }
        }
        loop {
            self.ship(Backpressure::Block);
            let room = batch.saturating_sub(self.pending.len()).max(1);
            if self.shard.flush_some(room, &mut self.pending) {
                break;
            }
        }
        self.ship(Backpressure::Block);
        self.publish_snapshot();
        let report = WorkerReport {
            id: self.config.id,
            worker: self.stats,
            cache: *self.shard.stats(),
            source: self.source.stats(),
            error,
            source_ended,
            extensions: self.extension_counters(),
        };
        // The final report always blocks: the exporter must learn the worker is done.
        let _ = self
            .to_exporter
            .send(ToExporter::Finished(Box::new(report.clone())));
        report
    }
}

/// The wall clock for an idle live port (its flows and windows must still move on), else 0.
fn wall_idle_ms(clock: Clock, status: BurstStatus) -> u64 {
    match (clock, status) {
        (Clock::Wall, BurstStatus::Delivered(0)) => wall_clock_ms(),
        _ => 0,
    }
}

pub fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ext::PacketView;
    use crate::synth::{FrameOptions, eth_ipv4_udp};
    use flowcache::counters::CounterSet;
    use flowcache::{EndReason, SamplerSpec};
    use std::net::SocketAddrV4;

    fn shard(capacity: usize) -> FlowShard {
        let config = CacheConfig {
            capacity,
            ..CacheConfig::default()
        };
        FlowShard::new(&config, SamplerSpec::None.info())
    }

    /// How many sweep slices `pacer` grants while the clock runs from `from` to `to` ms,
    /// polled `per_ms` times a millisecond.
    fn slices(pacer: &mut SweepPacer, from: u64, to: u64, per_ms: u32) -> u64 {
        let mut granted = 0;
        for ms in from..to {
            for _ in 0..per_ms {
                granted += u64::from(pacer.due(ms));
            }
        }
        granted
    }

    #[test]
    fn the_sweep_passes_over_the_table_once_per_period() {
        let shard = shard(1 << 16);
        let mut pacer = SweepPacer::new(&shard, 1024);
        let start = 1_700_000_000_000;
        // The first poll grants a whole pass's credit (one table: 64 slices of 1024).
        assert_eq!(slices(&mut pacer, start, start + 1, 100), 64);
        for second in 0..3 {
            let from = start + 1 + second * SWEEP_PERIOD_MS;
            let granted = slices(&mut pacer, from, from + SWEEP_PERIOD_MS, 10);
            assert!((63..=65).contains(&granted), "second {second}: {granted}");
        }
    }

    #[test]
    fn a_clock_jump_costs_at_most_one_pass_spread_over_polls() {
        let shard = shard(1 << 16);
        let mut pacer = SweepPacer::new(&shard, 1024);
        let t = 1_700_000_000_000;
        slices(&mut pacer, t, t + 1, 100);
        // An hour later: one pass (64 slices), one per poll, then nothing more.
        let jumped = t + 3_600_000;
        let granted: Vec<bool> = (0..100).map(|_| pacer.due(jumped)).collect();
        assert!(granted[..64].iter().all(|&g| g));
        assert!(granted[64..].iter().all(|&g| !g));
    }

    #[test]
    fn a_small_table_is_swept_whole_once_per_period() {
        // Capacity 64 with a budget of 1024: each slice is the whole table.
        let shard = shard(64);
        let mut pacer = SweepPacer::new(&shard, 1024);
        let t = 1_700_000_000_000;
        assert_eq!(slices(&mut pacer, t, t + 1, 10), 1);
        let granted = slices(&mut pacer, t + 1, t + 1 + 10 * SWEEP_PERIOD_MS, 2);
        assert!((9..=11).contains(&granted), "{granted}");
    }

    /// Frames with their times; a burst is a run of equal times (at most MAX_BURST).
    struct Frames {
        frames: Vec<(u64, Vec<u8>)>,
        next: usize,
    }

    impl PacketSource for Frames {
        fn poll_burst(
            &mut self,
            sink: &mut dyn FnMut(&[Packet<'_>]),
        ) -> Result<BurstStatus, SourceError> {
            let rest = &self.frames[self.next..];
            if rest.is_empty() {
                return Ok(BurstStatus::Ended);
            }
            let n = rest
                .iter()
                .take(MAX_BURST)
                .take_while(|(us, _)| *us == rest[0].0)
                .count();
            let packets: Vec<Packet<'_>> = rest[..n]
                .iter()
                .map(|(us, frame)| Packet {
                    data: frame,
                    wire_len: frame.len() as u32,
                    timestamp_us: *us,
                    port: 0,
                })
                .collect();
            sink(&packets);
            self.next += n;
            Ok(BurstStatus::Delivered(n))
        }

        fn stats(&self) -> SourceStats {
            SourceStats::default()
        }
    }

    /// A worker over `frames`, on packet time, unsampled, and the queue it sends the
    /// exporter. Nothing recycles its batches: it allocates them.
    fn frames_worker(
        frames: Vec<(u64, Vec<u8>)>,
        cache: CacheConfig,
    ) -> (Worker, Receiver<ToExporter>) {
        let (to_exporter, from_worker) = crossbeam_channel::unbounded();
        let (_, recycled) = crossbeam_channel::unbounded();
        let config = WorkerConfig::new(0, cache, Clock::Packet, Backpressure::Block);
        let worker = Worker::new(
            config,
            Box::new(Frames { frames, next: 0 }),
            Sampler::new(SamplerSpec::None),
            to_exporter,
            recycled,
        );
        (worker, from_worker)
    }

    /// The flow records the worker has sent so far, in order.
    fn records_sent(from_worker: &Receiver<ToExporter>) -> Vec<FlowRecord> {
        from_worker
            .try_iter()
            .filter_map(|m| match m {
                ToExporter::Records(batch) => Some(batch.records),
                _ => None,
            })
            .flatten()
            .collect()
    }

    fn udp_frame(src_port: u16) -> Vec<u8> {
        let mut frame = Vec::new();
        eth_ipv4_udp(
            &mut frame,
            SocketAddrV4::new([10, 0, 0, 1].into(), src_port),
            SocketAddrV4::new([10, 0, 0, 2].into(), 53),
            &FrameOptions::default(),
        );
        frame
    }

    #[test]
    fn idle_flows_leave_through_the_paced_sweep_before_shutdown() {
        let t0_us = 1_700_000_000_000_000u64;
        // Ten flows at t0, then one packet of another flow every 100 ms for 10 s.
        let mut frames: Vec<(u64, Vec<u8>)> =
            (0..10).map(|p| (t0_us, udp_frame(1000 + p))).collect();
        frames.extend((1..=100).map(|i| (t0_us + i * 100_000, udp_frame(2000))));
        let cache = CacheConfig {
            capacity: 1 << 12,
            inactive_timeout_ms: 1_000,
            ..CacheConfig::default()
        };
        let (mut worker, from_worker) = frames_worker(frames, cache);
        while worker.poll_once().unwrap() != BurstStatus::Ended {}
        // Before shutdown: the ten flows idled out at t0 + 1 s and the sweep found them
        // (it passes over the table once a second of packet time).
        let idle = records_sent(&from_worker);
        assert_eq!(idle.len(), 10, "{idle:?}");
        assert!(idle.iter().all(|r| r.end_reason == EndReason::Idle));
        assert!(idle.iter().all(|r| r.key.src_port < 2000 && r.packets == 1));
        // Shutdown: the live flow is flushed as forced.
        let report = worker.finish(None, true);
        assert_eq!(report.cache.records(), 11);
        assert_eq!(report.cache.expired(EndReason::Forced), 1);
    }

    /// Counts what it is shown, emits an event per packet, tags every record and folds the
    /// records of source port 2000.
    #[derive(Debug, Default)]
    struct Recorder {
        packets: u64,
        unsampled: u64,
    }

    flowcache::counters! {
        #[derive(Clone, Copy, Debug, Default)]
        struct RecorderStats {
            packets: u64 = Spec::counter("packets", "packets seen", "Packets seen."),
        }
    }

    impl crate::ext::Extension for Recorder {
        fn name(&self) -> &'static str {
            "recorder"
        }
        fn interest(&self) -> Interest {
            Interest::UDP
        }
        fn on_packet(&mut self, packet: &PacketView<'_>, out: &mut crate::ext::ExtOutput<'_>) {
            self.packets += 1;
            self.unsampled += u64::from(!packet.sampled);
            let udp = packet.transport().expect("a UDP header");
            assert_eq!(udp.protocol, crate::parse::IpProtocol::UDP);
            out.emit(Event::new("seen", packet.timestamp_us));
        }
        fn on_record(&mut self, record: &mut FlowRecord) -> RecordFate {
            if record.key.src_port == 2000 {
                return RecordFate::Folded;
            }
            record.extras = Some(Box::new(flowcache::RecordExtras {
                policy: Some(flowcache::PolicyMark {
                    name: "seen".into(),
                    tag: Some(7),
                }),
                ..Default::default()
            }));
            RecordFate::Keep
        }
        fn counters(&self, out: &mut Vec<ExtCounter>) {
            out.extend(
                RecorderStats {
                    packets: self.packets,
                }
                .series(),
            );
        }
    }

    #[test]
    fn extensions_see_packets_tag_records_fold_and_emit_events() {
        let t0_us = 1_700_000_000_000_000u64;
        let mut frames: Vec<(u64, Vec<u8>)> =
            (0..10).map(|p| (t0_us, udp_frame(1000 + p))).collect();
        frames.extend((1..=5).map(|i| (t0_us + i * 1_000, udp_frame(2000))));
        // Room for 12 events: the other 3 are dropped and counted, never waited for.
        let (events_tx, events_rx) = crossbeam_channel::bounded(12);
        let (worker, from_worker) = frames_worker(frames, CacheConfig::default());
        let worker = worker.with_extensions(
            Extensions::new(vec![Box::new(Recorder::default())]),
            events_tx,
        );
        let report = worker.run(&AtomicBool::new(false));
        let records = records_sent(&from_worker);
        assert_eq!(records.len(), 10, "the port-2000 flow was folded");
        assert!(records.iter().all(|r| {
            r.extras
                .as_ref()
                .and_then(|e| e.policy.as_ref())
                .map(|p| p.tag)
                == Some(Some(7))
        }));
        assert_eq!(report.worker.records_folded, 1);
        assert_eq!(report.worker.packets_folded, 5);
        assert_eq!(events_rx.try_iter().count(), 12);
        assert_eq!(report.worker.events_sent, 12);
        assert_eq!(report.worker.events_dropped, 3);
        assert_eq!(report.extensions[0].0, "recorder");
        assert_eq!(report.extensions[0].1[0].value, 15);
    }

    /// Wants no packet, only the records the cache starts; checks that each record it is
    /// shown was started (and reported) before it left.
    #[derive(Debug, Default)]
    struct StartWatcher {
        /// Per source port: records started, records seen leaving.
        flows: std::collections::HashMap<u16, (u64, u64)>,
    }

    impl crate::ext::Extension for StartWatcher {
        fn name(&self) -> &'static str {
            "starts"
        }
        fn interest(&self) -> Interest {
            Interest::NONE
        }
        fn wants_flow_starts(&self) -> bool {
            true
        }
        fn on_flow_starts(&mut self, starts: &[Observation]) {
            for start in starts {
                self.flows.entry(start.key.src_port).or_default().0 += 1;
            }
        }
        fn on_packet(&mut self, _: &PacketView<'_>, _: &mut crate::ext::ExtOutput<'_>) {
            panic!("an extension that wants no packet class is shown none");
        }
        fn on_record(&mut self, record: &mut FlowRecord) -> RecordFate {
            let (started, left) = self.flows.entry(record.key.src_port).or_default();
            *left += 1;
            assert!(
                *left <= *started,
                "record {record:?} left before its start was told"
            );
            RecordFate::Keep
        }
    }

    #[test]
    fn an_extension_is_told_of_every_record_start_before_the_record_leaves() {
        let t0_us = 1_700_000_000_000_000u64;
        // Three flows, idle for longer than the inactive timeout, then back: two records
        // each, the first leaving through the sweep while packets keep coming.
        let mut frames: Vec<(u64, Vec<u8>)> = Vec::new();
        for round in 0..2u64 {
            for i in 0..40u64 {
                let t = t0_us + round * 40_000_000 + i * 500_000;
                frames.push((t, udp_frame(1000 + (i % 3) as u16)));
            }
        }
        let (events_tx, _events_rx) = crossbeam_channel::unbounded();
        let cache = CacheConfig {
            inactive_timeout_ms: 15_000,
            ..CacheConfig::default()
        };
        let (worker, from_worker) = frames_worker(frames, cache);
        let watcher = Box::new(StartWatcher::default());
        let worker = worker.with_extensions(Extensions::new(vec![watcher]), events_tx);
        let report = worker.run(&AtomicBool::new(false));
        let records = records_sent(&from_worker);
        assert_eq!(records.len(), 6);
        assert_eq!(report.cache.flows_created, 6);
        assert_eq!(report.cache.expired(flowcache::EndReason::Idle), 3);
    }

    fn policy(
        name: &str,
        matcher: crate::policy::Match,
        action: crate::policy::Action,
    ) -> crate::policy::Rule {
        crate::policy::Rule {
            name: name.into(),
            matcher,
            action,
        }
    }

    /// Counts the packets it is shown by fate, and those shown under a reduced key.
    #[derive(Debug, Default)]
    struct Fates {
        stats: FateStats,
    }

    flowcache::counters! {
        #[derive(Clone, Copy, Debug, Default)]
        struct FateStats {
            kept: u64 = Spec::counter("kept", "kept", "Packets shown as accounted."),
            dropped: u64 = Spec::counter("dropped", "dropped", "Packets shown as not accounted."),
            reduced: u64 = Spec::counter("reduced", "reduced", "Packets shown under a reduced key."),
        }
    }

    impl crate::ext::Extension for Fates {
        fn name(&self) -> &'static str {
            "fates"
        }
        fn interest(&self) -> Interest {
            Interest::UDP
        }
        fn on_packet(&mut self, packet: &PacketView<'_>, _: &mut crate::ext::ExtOutput<'_>) {
            self.stats.kept += u64::from(packet.sampled);
            self.stats.dropped += u64::from(!packet.sampled);
            self.stats.reduced += u64::from(packet.sampled && packet.key.src_addr[..4] == [0; 4]);
        }
        fn counters(&self, out: &mut Vec<ExtCounter>) {
            out.extend(self.stats.series());
        }
    }

    fn udp_to(src: [u8; 4], src_port: u16, dst_port: u16) -> Vec<u8> {
        let mut frame = Vec::new();
        eth_ipv4_udp(
            &mut frame,
            SocketAddrV4::new(src.into(), src_port),
            SocketAddrV4::new([10, 0, 0, 2].into(), dst_port),
            &FrameOptions::default(),
        );
        frame
    }

    /// Ignore, sample packet by packet, reduce the key, meter as is: the records and
    /// counts each policy must give, with and without an extension watching, against
    /// what the rules say of the trace.
    #[test]
    fn each_policy_applies_with_its_decision_kept_in_the_cache_or_the_stage() {
        use crate::policy::{Action, KeyMode, Match, Meter, RuleSet};
        let to_port = |port: &str| Match {
            dst_port: vec![port.parse().unwrap()],
            ..Match::default()
        };
        let meter = |key, sampling, tag| {
            Action::Meter(Meter {
                key,
                sampling,
                tag: Some(tag),
                ..Meter::default()
            })
        };
        let rules = Arc::new(RuleSet::new(vec![
            policy("skip", to_port("9"), Action::Ignore),
            policy(
                "half",
                to_port("7"),
                meter(KeyMode::FiveTuple, Some(SamplerSpec::Deterministic(2)), 2),
            ),
            policy("ports", to_port("5"), meter(KeyMode::ProtocolPort, None, 3)),
            policy("rest", Match::default(), meter(KeyMode::FiveTuple, None, 4)),
        ]));
        // Round-robin, one packet a millisecond: 6 ignored, 10 sampled 1 in 2, 3 + 3 from
        // two hosts under one protocol-port key, 4 metered as they are.
        let flows: [([u8; 4], u16, u16, usize); 5] = [
            ([10, 0, 0, 1], 1000, 9, 6),
            ([10, 0, 0, 1], 1001, 7, 10),
            ([10, 0, 0, 1], 1002, 5, 3),
            ([10, 0, 0, 3], 1002, 5, 3),
            ([10, 0, 0, 1], 1003, 80, 4),
        ];
        let t0_us = 1_700_000_000_000_000u64;
        let mut frames = Vec::new();
        for round in 0..10 {
            for &(src, sport, dport, count) in &flows {
                if round < count {
                    let us = t0_us + frames.len() as u64 * 1_000;
                    frames.push((us, udp_to(src, sport, dport)));
                }
            }
        }
        let total = frames.len() as u64;
        // Source, its port, destination port, packets, rule, tag, sampling interval.
        type Row = (String, u16, u16, u64, String, Option<u32>, u32);
        for watched in [false, true] {
            let (events, _events) = crossbeam_channel::unbounded();
            let (worker, from_worker) = frames_worker(frames.clone(), CacheConfig::default());
            let mut worker = worker.with_policy(PolicyStage::new(rules.clone(), 1 << 12, 15_000));
            if watched {
                worker = worker
                    .with_extensions(Extensions::new(vec![Box::new(Fates::default())]), events);
            }
            let report = worker.run(&AtomicBool::new(false));
            let mut records: Vec<Row> = records_sent(&from_worker)
                .into_iter()
                .map(|r| {
                    let mark = r.extras.as_ref().and_then(|e| e.policy.clone()).unwrap();
                    assert_eq!(r.key._reserved, 0, "{r:?}");
                    (
                        r.key.src_ip().to_string(),
                        r.key.src_port,
                        r.key.dst_port,
                        r.packets,
                        mark.name.to_string(),
                        mark.tag,
                        r.sampling.interval,
                    )
                })
                .collect();
            records.sort();
            let row = |src: &str, sport, dport, packets, name: &str, tag, interval| {
                (
                    src.to_string(),
                    sport,
                    dport,
                    packets,
                    name.to_string(),
                    Some(tag),
                    interval,
                )
            };
            assert_eq!(
                records,
                [
                    row("0.0.0.0", 1002, 5, 6, "ports", 3, 1),
                    row("10.0.0.1", 1001, 7, 5, "half", 2, 2),
                    row("10.0.0.1", 1003, 80, 4, "rest", 4, 1),
                ],
                "watched: {watched}"
            );
            assert_eq!(report.worker.policy_ignored, 6);
            assert_eq!(report.worker.sampled_out, 5);
            assert_eq!(report.cache.packets, 15);
            assert_eq!(report.worker.packets, total);
            let policy = &report
                .extensions
                .iter()
                .find(|(n, _)| *n == "policy")
                .unwrap()
                .1;
            let get = |counters: &[ExtCounter], name: &str| {
                counters
                    .iter()
                    .find(|c| c.spec.family == name)
                    .unwrap()
                    .value
            };
            // One classification per flow: the cache holds the metered one, the stage the rest.
            assert_eq!(get(policy, "classified_flows"), 5);
            if watched {
                let fates = &report
                    .extensions
                    .iter()
                    .find(|(n, _)| *n == "fates")
                    .unwrap()
                    .1;
                assert_eq!(get(fates, "kept"), 15);
                assert_eq!(get(fates, "dropped"), 11);
                assert_eq!(get(fates, "reduced"), 6);
            }
        }
    }

    /// Adaptive sampling with policies: the worker's interval moves 1 -> 4 -> 1 while
    /// flows without a rule (5-tuple) and flows under a rule's reduced key (protocol-port,
    /// no sampling of its own) keep sending. Each record holds exactly the packets sampled
    /// at the interval it carries: decisions taken under the old interval are taken again.
    #[test]
    fn policy_decisions_follow_adaptive_sampling_changes() {
        use crate::policy::{Action, KeyMode, Match, Meter, RuleSet};
        let rules = Arc::new(RuleSet::new(vec![policy(
            "ports",
            Match {
                dst_port: vec!["5".parse().unwrap()],
                ..Match::default()
            },
            Action::Meter(Meter {
                key: KeyMode::ProtocolPort,
                ..Meter::default()
            }),
        )]));
        // 24 flows from distinct source ports: 16 to port 80 (no rule), 8 to port 5.
        let flows: Vec<(u16, u16)> = (0..24u16)
            .map(|i| (2000 + i, if i < 16 { 80 } else { 5 }))
            .collect();
        let t0_us = 1_700_000_000_000_000u64;
        let frames: Vec<(u64, Vec<u8>)> = (0..20u64)
            .flat_map(|round| {
                flows.iter().map(move |&(sport, dport)| {
                    (t0_us + round * 1_000, udp_to([10, 0, 0, 1], sport, dport))
                })
            })
            .collect();
        let (worker, from_worker) = frames_worker(frames, CacheConfig::default());
        let mut worker = worker.with_policy(PolicyStage::new(rules, 1 << 12, 15_000));
        let change = |from, to| Change {
            from,
            to,
            busy: 0.0,
            drops: 0,
        };
        // A round a poll (one timestamp each): rounds 0-9 at 1, 10-14 at 4, 15-19 at 1.
        for _ in 0..10 {
            worker.poll_once().unwrap();
        }
        worker.apply_sampling_change(change(1, 4));
        for _ in 0..5 {
            worker.poll_once().unwrap();
        }
        worker.apply_sampling_change(change(4, 1));
        worker.run(&AtomicBool::new(false));
        let key_of = |sport: u16, dport: u16| {
            crate::policy::parse_packet(&format!("udp 10.0.0.1:{sport} > 10.0.0.2:{dport}"))
                .unwrap()
        };
        let mut at_4 = Sampler::new(SamplerSpec::Hash(4));
        let kept_at_4: Vec<bool> = flows
            .iter()
            .map(|&(s, d)| at_4.keep(&key_of(s, d)))
            .collect();
        assert!(
            kept_at_4.iter().any(|&k| k) && !kept_at_4.iter().all(|&k| k),
            "{kept_at_4:?}"
        );
        // (source port, destination port, interval) -> packets; protocol-port keeps both
        // ports and clears the addresses.
        let mut got = std::collections::BTreeMap::<(u16, u16, u32), u64>::new();
        for r in records_sent(&from_worker) {
            *got.entry((r.key.src_port, r.key.dst_port, r.sampling.interval))
                .or_default() += r.packets;
        }
        let mut want = std::collections::BTreeMap::<(u16, u16, u32), u64>::new();
        for (&(sport, dport), &kept) in flows.iter().zip(&kept_at_4) {
            *want.entry((sport, dport, 1)).or_default() += 15;
            if kept {
                *want.entry((sport, dport, 4)).or_default() += 5;
            }
        }
        assert_eq!(got, want);
    }

    #[test]
    fn a_metered_flow_keeps_its_rule_across_a_reload_and_a_new_record_takes_the_new_one() {
        use crate::policy::{Action, Match, Meter, RuleSet};
        let tagged = |tag| {
            Arc::new(RuleSet::new(vec![policy(
                "all",
                Match::default(),
                Action::Meter(Meter {
                    tag: Some(tag),
                    ..Meter::default()
                }),
            )]))
        };
        let t0_us = 1_700_000_000_000_000u64;
        // A flow before and after the reload; after its idle timeout (1 s) once more.
        let frames = vec![
            (t0_us, udp_frame(1000)),
            (t0_us + 1_000, udp_frame(1000)),
            (t0_us + 5_000_000, udp_frame(1000)),
        ];
        let swap = Arc::new(PolicySwap::new(tagged(1)));
        let cache = CacheConfig {
            inactive_timeout_ms: 1_000,
            ..CacheConfig::default()
        };
        let (worker, from_worker) = frames_worker(frames, cache);
        let mut worker = worker
            .with_policy(PolicyStage::new(swap.rules(), 1 << 12, 1_000))
            .with_policy_swap(swap.clone());
        assert_eq!(worker.poll_once().unwrap(), BurstStatus::Delivered(1));
        swap.publish(tagged(2));
        while worker.poll_once().unwrap() != BurstStatus::Ended {}
        worker.finish(None, true);
        let mut records: Vec<(u64, Option<u32>)> = records_sent(&from_worker)
            .into_iter()
            .map(|r| (r.packets, r.extras.unwrap().policy.unwrap().tag))
            .collect();
        records.sort();
        assert_eq!(records, [(1, Some(2)), (2, Some(1))]);
    }

    #[test]
    fn a_reload_applies_to_new_flows_and_cached_flows_keep_their_decision() {
        use crate::policy::{Action, Match, Meter, RuleSet};
        let t0_us = 1_700_000_000_000_000u64;
        // Ten flows at t0; after the reload one more packet of each, and five new flows.
        let mut frames: Vec<(u64, Vec<u8>)> =
            (0..10).map(|p| (t0_us, udp_frame(1000 + p))).collect();
        frames.extend((0..10).map(|p| (t0_us + 1_000, udp_frame(1000 + p))));
        frames.extend((0..5).map(|p| (t0_us + 2_000, udp_frame(2000 + p))));
        let ignore_dns = RuleSet::new(vec![policy(
            "no-dns",
            Match {
                dst_port: vec!["53".parse().unwrap()],
                ..Match::default()
            },
            Action::Ignore,
        )]);
        let meter_all = RuleSet::new(vec![policy(
            "all",
            Match::default(),
            Action::Meter(Meter {
                tag: Some(1),
                ..Meter::default()
            }),
        )]);
        let swap = Arc::new(PolicySwap::new(Arc::new(ignore_dns)));
        let (worker, from_worker) = frames_worker(frames, CacheConfig::default());
        let mut worker = worker
            .with_policy(PolicyStage::new(swap.rules(), 1 << 12, 15_000))
            .with_policy_swap(swap.clone());
        assert_eq!(worker.poll_once().unwrap(), BurstStatus::Delivered(10));
        swap.publish(Arc::new(meter_all));
        while worker.poll_once().unwrap() != BurstStatus::Ended {}
        let report = worker.finish(None, true);
        let records = records_sent(&from_worker);
        // The ten flows classified before the reload stayed ignored: no packet of theirs
        // was accounted; the five new flows were metered under the new rules.
        assert_eq!(report.worker.policy_ignored, 20);
        assert_eq!(records.len(), 5, "{records:?}");
        for r in &records {
            assert!((2000..2005).contains(&r.key.src_port), "{r:?}");
            let mark = r.extras.as_ref().and_then(|e| e.policy.clone()).unwrap();
            assert_eq!((&*mark.name, mark.tag), ("all", Some(1)));
        }
        // Every packet is accounted for: nothing was lost across the swap.
        let recorded: u64 = records.iter().map(|r| r.packets).sum();
        assert_eq!(
            report.worker.packets,
            recorded + report.worker.policy_ignored
        );
        let counters = &report
            .extensions
            .iter()
            .find(|(n, _)| *n == "policy")
            .unwrap()
            .1;
        let get = |name: &str| {
            counters
                .iter()
                .find(|c| c.spec.family == name)
                .unwrap()
                .value
        };
        assert_eq!(get("reloads"), 1);
        assert_eq!(get("classified_flows"), 15);
        assert_eq!(get("marked_records"), 5);
    }
}
