//! One worker's flow cache: a preallocated set-associative table.
//!
//! A flow's hash picks one bucket of 8 or 16 slots. Each bucket has a header apart from
//! the entries: per slot a 16-bit tag (13 bits of the hash and 3 of the sampling epoch; 0
//! marks a free slot) and a 16-bit deadline hint, 64 bytes for a 16-slot bucket, so one
//! cache line. Each entry is
//! one cache line too (64 bytes, aligned). A lookup reads the header and then only the
//! entries whose tag matches; the sweep reads headers and only the entries whose hint says
//! they may be due. So a packet of a known flow costs two cache lines, both prefetched.
//!
//! One way to account packets per use:
//! - [`FlowShard::update`]: one packet (tests, simple callers);
//! - [`FlowShard::hash_burst`] then [`FlowShard::update_interleaved`]: the worker's way. A
//!   burst is hashed as it arrives and accounted while the next one's bucket headers load,
//!   each entry requested a few packets before its update, so the table's memory latency
//!   overlaps the worker's receive and parse;
//! - [`FlowShard::update_burst_hashed`]: a burst with the caller's hashes (a NIC's RSS);
//! - [`FlowShard::update_interleaved_classified`]: the worker's way with policies. A
//!   packet of a flow the shard holds is counted as above and asks nothing more; only a
//!   packet whose key the shard does not hold goes to the caller's [`Classifier`], which
//!   may skip it, or have it accounted under a key of its choosing with a label that the
//!   record carries out ([`FlowRecord::label`], kept per slot beside the entries after
//!   [`FlowShard::keep_labels`]). So the cache lookup is the decision lookup: a decision
//!   costs a known flow's packet nothing.
//!
//! Step-by-step variants that benchmarks compare (`update_burst`, `prepare_burst`,
//! `prefetch_entries`, `update_prepared`) exist only with the `bench-variants` feature.
//!
//! # Expiry rules
//!
//! A flow with first packet time `first` and last packet time `last` has a deadline
//! `min(last + inactive_timeout, first + active_timeout)`; its time-based end reason is
//! idle if `last + inactive_timeout <= first + active_timeout`, else active. A flow ends:
//! - at a packet for it stamped at or after its deadline: the flow is exported with its
//!   time reason and the packet starts a new record (so a long flow comes out in pieces
//!   each shorter than the active timeout, counters restarting);
//! - at a packet that would take its counters past what an entry holds (2^32 - 1 packets
//!   or 2^40 - 1 octets in one record): exported as active, the packet starts a new record;
//! - in [`FlowShard::expire`] run at a `now` at or after its deadline, with the same reason;
//! - after a TCP packet with FIN or RST when `tcp_end_expiry` is on: the packet is counted
//!   and the flow exported as end of flow; the next packet of the 5-tuple starts a new one;
//! - when a new flow needs a slot in a full bucket: first every flow of the bucket already
//!   past its deadline at the packet's time is exported (time reason); if none was, the one
//!   with the oldest `last` (ties: smallest key) is evicted as lack of resources;
//! - in [`FlowShard::flush`] (or piecewise, [`FlowShard::flush_some`]), as forced;
//! - after a change of sampling ([`FlowShard::set_sampling`]), as forced: at its next
//!   packet, which starts a new record, or when the sweep passes it (see below).
//!
//! # Sampling epochs
//!
//! A record's packets were all sampled one way, and it carries that way out. The sampling
//! in force when a flow's record starts is its epoch, three bits at the top of its slot's
//! tag (so the tag keeps 13 bits of the hash). A lookup asks for the current epoch's tag,
//! so after a change a packet finds no entry of an older epoch: its flow's old record ends
//! then (forced, with the old sampling) and the packet starts a new one in the same slot.
//! The sweep ends the old epochs' other flows as it passes them, a whole pass (about a
//! second of the worker's clock) spreading the work a whole-table flush would do at once.
//! Eight epochs: a change to an epoch that still holds flows (seven changes within one
//! pass) first ends those.
//!
//! Every decision depends only on packet times and the flow's state, never on when the
//! sweep reached a slot. So, for packets in time order and sweeps never run at a `now`
//! later than the next packet's time, the multiset of records is the same however the
//! packets are split into bursts and however often `expire` runs; in particular a replay
//! gives the same records at any speed.
//!
//! # Time in 32 bits
//!
//! Entries keep packet times as the low 32 bits of their millisecond timestamp, decoded
//! against the shard's clock (the latest `now` it was given): exact while every stored time
//! is less than 2^32 ms (49 days) older than the clock. Three rules keep it so: timeouts are
//! at most [`MAX_TIMEOUT_MS`] (12.4 days); an observation more than that older than the
//! clock is accounted at the clock minus that (counted in `stale_timestamps`); and when the
//! clock has moved on more than [`HINT_TRUST_MS`] since the sweep last covered the whole
//! table (a clock jump, or a caller that never sweeps), the next call first sweeps the
//! whole table reading every entry, so no flow can sit forgotten while its times age out.
//! The same rule keeps the 16-bit hints (units of 1.024 s, wrapping every 18.6 hours)
//! unambiguous.

use crate::SamplingInfo;
use crate::counters::Spec;
use crate::hash::flow_hash;
use crate::hint::{
    ZeroedTable, advise_huge_pages, eq_mask, keys_equal, not_after_mask, prefetch_read,
};
use crate::{CacheConfig, CacheConfigError, EndReason, FlowKey, FlowRecord, Observation};

const TCP: u8 = 6;
const TCP_FIN: u8 = 0x01;
const TCP_RST: u8 = 0x04;

/// Observations hashed and prefetched together; longer bursts are taken in chunks.
const CHUNK: usize = 64;

/// How many packets ahead of its update [`FlowShard::update_interleaved`] requests an entry:
/// enough updates to cover a DRAM access, few enough to stay within the miss buffers.
/// Measured with the `update_interleaved` criterion bench against `update_burst` in the
/// same run (8, 16, 24, 32): 16 is best at 100k and 1M flows (BENCHMARKS.md).
pub const PREFETCH_DISTANCE: usize = 16;

/// How far ahead of itself (in header lines) the sweep prefetches.
const SWEEP_PREFETCH_LINES: usize = 8;

/// Longest inactive or active timeout a shard accepts (2^30 ms, about 12.4 days), and how
/// far before the shard's clock an observation may be stamped and still keep its own time.
pub const MAX_TIMEOUT_MS: u64 = 1 << 30;

/// How far the clock may move past the start of the last complete sweep pass before the
/// shard re-reads every entry (2^23 ms, about 2.3 hours). Normally a pass takes a second.
pub const HINT_TRUST_MS: u64 = 1 << 23;

/// How far before the clock a deadline hint may lie (2^22 ms, about 70 minutes).
const HINT_FLOOR_MS: u64 = 1 << 22;

/// Largest octet count one record holds (40 bits, about 1.1 TB).
const MAX_OCTETS: u64 = (1 << 40) - 1;

/// A flow's state in a slot: one cache line. The key comes first; packet times are the low
/// 32 bits of their ms timestamps (see "Time in 32 bits"); octets are 40 bits split in two.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Entry {
    key: FlowKey,
    tcp_flags: u8,
    min_ttl: u8,
    max_ttl: u8,
    octets_high: u8,
    packets: u32,
    octets_low: u32,
    first: u32,
    last: u32,
}

/// Memory per cache slot: the 64-byte entry, its 2-byte tag and its 2-byte deadline hint.
/// A shard of capacity C (after rounding) holds `C * ENTRY_BYTES` bytes, allocated once in
/// [`FlowShard::new`].
pub const ENTRY_BYTES: usize = size_of::<Entry>() + 2 * size_of::<u16>();

const _: () = assert!(size_of::<Entry>() == 64);
const _: () = assert!(ENTRY_BYTES <= 128);

/// What becomes of a packet whose key the shard does not hold (see [`Classifier`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Account it under the observation's key as the classifier left it: counted into
    /// that key's flow if the shard holds it, else starting a record with this label.
    Account(u32),
    /// Account nothing (the shard's packet and octet totals leave it out).
    Skip,
}

/// Decides the packets [`FlowShard::update_interleaved_classified`] does not know: a flow's
/// first packet, and the first packet after its record ended (a time reason, FIN/RST
/// followed by more packets, eviction, a full counter), in packet order.
///
/// A key the classifier rewrites must never be one it is shown unchanged (a reduced key
/// marked in [`FlowKey::_reserved`], say): the shard counts a packet whose key it holds
/// without asking, so a raw key that found a rewritten flow would bypass the decision.
pub trait Classifier {
    /// True for a classifier that never skips a packet nor changes its key (it only
    /// labels records): the shard then leaves the checks for those out of its code.
    const ONLY_LABELS: bool = false;

    /// `index` is the observation's position in the slice being accounted, `hash` its
    /// key's hash as the shard was given it (the same key always comes with the same
    /// hash: the classifier may file its own decisions by it); the observation may be
    /// changed (its key, to account it under another).
    fn admit(&mut self, index: usize, obs: &mut Observation, hash: u64) -> Admission;

    /// A hint a few packets ahead: a packet with this hash will likely be asked about
    /// (its bucket holds no entry with its tag), so what `admit` reads can start loading.
    #[inline(always)]
    fn prefetch(&mut self, _hash: u64) {}
}

impl<C: Classifier> Classifier for &mut C {
    const ONLY_LABELS: bool = C::ONLY_LABELS;

    #[inline(always)]
    fn admit(&mut self, index: usize, obs: &mut Observation, hash: u64) -> Admission {
        (**self).admit(index, obs, hash)
    }

    #[inline(always)]
    fn prefetch(&mut self, hash: u64) {
        (**self).prefetch(hash);
    }
}

/// Every packet accounted under its own key, unlabelled: the shard without policies.
#[derive(Clone, Copy, Debug, Default)]
pub struct Unclassified;

impl Classifier for Unclassified {
    const ONLY_LABELS: bool = true;

    #[inline(always)]
    fn admit(&mut self, _: usize, _: &mut Observation, _: u64) -> Admission {
        Admission::Account(0)
    }
}

/// [`Classifier`] `C` that also writes down every record the shard starts under the
/// packet's own key: the packet that started it, stamped with the record's first time, in
/// packet order. So an extension can follow what the cache holds per flow rather than per
/// packet (biflows: how many records of each direction are in the cache), at the cost of
/// one push per new record; a known flow's packet never reaches a classifier.
///
/// A packet the classifier skips or moves to another key starts nothing here.
#[derive(Debug)]
pub struct LogStarts<'a, C = Unclassified> {
    pub classifier: C,
    pub starts: &'a mut Vec<Observation>,
}

impl<C: Classifier> Classifier for LogStarts<'_, C> {
    const ONLY_LABELS: bool = C::ONLY_LABELS;

    #[inline(always)]
    fn admit(&mut self, index: usize, obs: &mut Observation, hash: u64) -> Admission {
        let key = obs.key;
        let admission = self.classifier.admit(index, obs, hash);
        if matches!(admission, Admission::Account(_)) && (C::ONLY_LABELS || obs.key == key) {
            self.starts.push(*obs);
        }
        admission
    }

    #[inline(always)]
    fn prefetch(&mut self, hash: u64) {
        self.classifier.prefetch(hash);
    }
}

/// A packet whose decision is made: accounted under its key with this label.
struct Decided(u32);

impl Classifier for Decided {
    const ONLY_LABELS: bool = true;

    #[inline(always)]
    fn admit(&mut self, _: usize, _: &mut Observation, _: u64) -> Admission {
        Admission::Account(self.0)
    }
}

/// Thirty-two words of bucket headers, cache-line aligned. A bucket of B slots has a header
/// of 2B words: B tags, then B deadline hints; a line holds one 16-slot bucket or two
/// 8-slot ones, so tags and hints of a bucket always share its line.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct HeaderLine([u16; 32]);

/// The `reason` label of `tapflow_flows_expired_total`, by `EndReason as usize`.
const END_REASONS: [&str; 6] = {
    let mut names = [""; 6];
    let mut i = 0;
    while i < EndReason::ALL.len() {
        names[EndReason::ALL[i] as usize] = EndReason::ALL[i].name();
        i += 1;
    }
    names
};

/// `tapflow_cache_corrections_total`: a packet or record the cache adjusted, every one
/// still accounted.
const CORRECTIONS: &str = "tapflow_cache_corrections_total";
const CORRECTIONS_HELP: &str = "Packets or records the flow cache had to adjust: \
    future_timestamp, stale_timestamp, reordered, counter_split, resync.";

crate::counters! {
    /// A shard's counters. Sum shards with [`CacheStats::merge`].
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct CacheStats {
        /// Observations accounted into flows (after sampling).
        packets: u64 = Spec::counter("tapflow_cache_packets_total", "packets accounted",
            "Packets accounted into flows (after sampling)."),
        /// Octets (IP total length) of those observations.
        octets: u64 = Spec::counter("tapflow_cache_octets_total", "octets accounted",
            "Octets (IP total length) of the packets accounted into flows."),
        /// Records started: new flows, and new pieces after an idle or active end.
        flows_created: u64 = Spec::counter("tapflow_flows_created_total", "flows created",
            "Flow records started."),
        /// Records emitted, indexed by `EndReason as usize` (index 0 unused).
        expired: [u64; 6] = Spec::counter("tapflow_flows_expired_total", "flows ended",
            "Flow records ended, by reason (IPFIX flowEndReason).").by("reason", &END_REASONS),
        /// Flows evicted from a full bucket; equals `expired[LackOfResources]`.
        evictions: u64 = Spec::counter("tapflow_cache_evictions_total", "evictions (cache full)",
            "Flows ended early because their cache bucket was full.").no_row(),
        /// Observations stamped later than the call's `now`, accounted at `now` instead.
        future_timestamps: u64 = Spec::counter(CORRECTIONS, "cache correction", CORRECTIONS_HELP)
            .by("kind", &["future_timestamp"]).when_nonzero(),
        /// Observations older than their flow's last packet (out-of-order input); counted into
        /// the flow normally.
        reordered: u64 = Spec::counter(CORRECTIONS, "cache correction", CORRECTIONS_HELP)
            .by("kind", &["reordered"]).when_nonzero(),
        /// Observations stamped more than [`MAX_TIMEOUT_MS`] before the shard's clock,
        /// accounted at the clock minus that.
        stale_timestamps: u64 = Spec::counter(CORRECTIONS, "cache correction", CORRECTIONS_HELP)
            .by("kind", &["stale_timestamp"]).when_nonzero(),
        /// Records ended early because their packet or octet counter was full (exported as
        /// active, included in `expired[Active]`).
        counter_splits: u64 = Spec::counter(CORRECTIONS, "cache correction", CORRECTIONS_HELP)
            .by("kind", &["counter_split"]).when_nonzero(),
        /// Whole-table sweeps forced by a clock that moved on too far between passes.
        resyncs: u64 = Spec::counter(CORRECTIONS, "cache correction", CORRECTIONS_HELP)
            .by("kind", &["resync"]).when_nonzero(),
    }
}

impl CacheStats {
    pub fn expired(&self, reason: EndReason) -> u64 {
        self.expired[reason as usize]
    }

    /// Records emitted for every reason.
    pub fn records(&self) -> u64 {
        self.expired.iter().sum()
    }
}

/// One worker's flow cache. Owned by one thread; no locks, and no allocation after
/// [`FlowShard::new`] (records go into the caller's `Vec`, which should be reserved).
#[derive(Debug)]
pub struct FlowShard {
    headers: ZeroedTable<HeaderLine>,
    entries: ZeroedTable<Entry>,
    /// Per slot, its record's label; empty unless [`FlowShard::keep_labels`] was called.
    labels: Vec<u32>,
    bucket_mask: usize,
    bucket_size: usize,
    inactive_timeout_ms: u64,
    active_timeout_ms: u64,
    tcp_end_expiry: bool,
    expiry_budget: usize,
    len: usize,
    sweep_cursor: usize,
    /// Where the next `flush_some` resumes.
    flush_cursor: usize,
    /// The latest packet time accounted, or `now` swept at: stored times are decoded
    /// against it.
    clock_ms: u64,
    /// The clock when the sweep last started a pass at bucket 0, and when the last
    /// complete pass started: every bucket was visited since `trusted_ms`.
    pass_started_ms: u64,
    trusted_ms: u64,
    /// The current sampling epoch (see "Sampling epochs"), as it sits in a tag.
    epoch_bits: u16,
    /// Each epoch's sampling, and how many flows of it the table holds.
    epoch_sampling: [SamplingInfo; EPOCHS],
    epoch_len: [usize; EPOCHS],
    sampling: SamplingInfo,
    stats: CacheStats,
}

/// Sampling epochs a tag can tell apart: its top three bits.
const EPOCHS: usize = 8;
const EPOCH_SHIFT: u32 = 13;
/// The tag's bits that come from the hash.
const TAG_HASH_BITS: u16 = (1 << EPOCH_SHIFT) - 1;

impl FlowShard {
    /// Allocates and touches the whole table.
    ///
    /// # Panics
    /// If the config is invalid ([`CacheConfig::validate`]); use [`FlowShard::try_new`] to
    /// get the error instead.
    pub fn new(config: &CacheConfig, sampling: SamplingInfo) -> FlowShard {
        match FlowShard::try_new(config, sampling) {
            Ok(shard) => shard,
            Err(e) => panic!("{e}"),
        }
    }

    pub fn try_new(
        config: &CacheConfig,
        sampling: SamplingInfo,
    ) -> Result<FlowShard, CacheConfigError> {
        config.validate()?;
        let buckets = config.bucket_count();
        let slots = buckets * config.bucket_size;
        Ok(FlowShard {
            headers: ZeroedTable::new((slots * 2).div_ceil(32)),
            entries: ZeroedTable::new(slots),
            labels: Vec::new(),
            bucket_mask: buckets - 1,
            bucket_size: config.bucket_size,
            inactive_timeout_ms: config.inactive_timeout_ms,
            active_timeout_ms: config.active_timeout_ms,
            tcp_end_expiry: config.tcp_end_expiry,
            expiry_budget: config.expiry_budget,
            len: 0,
            sweep_cursor: 0,
            flush_cursor: 0,
            clock_ms: 0,
            pass_started_ms: 0,
            trusted_ms: 0,
            epoch_bits: 0,
            epoch_sampling: [sampling; EPOCHS],
            epoch_len: [0; EPOCHS],
            sampling,
            stats: CacheStats::default(),
        })
    }

    /// Touches every page of the table now. A new table is zeroed memory the kernel backs
    /// with pages as they are first touched; a live port calls this at start, so that
    /// zeroing is not paid by its first packets.
    pub fn prefault(&mut self) {
        const PAGE: usize = 4096;
        for line in self
            .headers
            .iter_mut()
            .step_by(PAGE / size_of::<HeaderLine>())
        {
            *line = HeaderLine::default();
        }
        for entry in self.entries.iter_mut().step_by(PAGE / size_of::<Entry>()) {
            *entry = Entry::default();
        }
    }

    /// Keeps a label per slot from now on (4 bytes a slot, allocated here once), so that
    /// records carry the label their [`Classifier`] gave them. Only written when a record
    /// starts and read when it ends: a packet of a known flow never touches it.
    pub fn keep_labels(&mut self) {
        if self.labels.is_empty() {
            let mut labels = Vec::with_capacity(self.entries.len());
            advise_huge_pages(&labels);
            labels.resize(self.entries.len(), 0);
            self.labels = labels;
        }
    }

    /// Changes the inactive and active timeouts of a running shard. Flows already cached
    /// are judged by the new timeouts from now on: one pass over the table recomputes every
    /// deadline hint, so the sweep stays exact. Flows the change puts past their deadline
    /// leave at the next sweep or packet, as usual. (`tapflow run` does not call it on a
    /// reload: a timeout change there takes effect after a restart, docs/CONFIG.md.)
    pub fn set_timeouts(
        &mut self,
        inactive_timeout_ms: u64,
        active_timeout_ms: u64,
    ) -> Result<(), CacheConfigError> {
        CacheConfig {
            inactive_timeout_ms,
            active_timeout_ms,
            ..CacheConfig::default()
        }
        .validate()?;
        self.inactive_timeout_ms = inactive_timeout_ms;
        self.active_timeout_ms = active_timeout_ms;
        self.rehint_all();
        Ok(())
    }

    /// The inactive and active timeouts in force, in ms.
    pub fn timeouts(&self) -> (u64, u64) {
        (self.inactive_timeout_ms, self.active_timeout_ms)
    }

    /// Flows currently held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Slots in the table (the configured capacity rounded up).
    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    pub fn bucket_size(&self) -> usize {
        self.bucket_size
    }

    /// Bytes the table occupies.
    pub fn memory_bytes(&self) -> usize {
        self.entries.len() * size_of::<Entry>()
            + self.headers.len() * size_of::<HeaderLine>()
            + self.labels.len() * size_of::<u32>()
    }

    pub fn sampling(&self) -> SamplingInfo {
        self.sampling
    }

    /// Sets the sampling of the records that start from now on. Flows already cached
    /// keep theirs: each ends (forced) at its next packet, which starts a new record, or
    /// when the sweep passes it (see "Sampling epochs"). Records that must end at once
    /// (flows of the epoch this one reuses, still cached after seven changes within one
    /// sweep pass) go to `expired`; returns how many.
    pub fn set_sampling(&mut self, sampling: SamplingInfo, expired: &mut Vec<FlowRecord>) -> usize {
        let current = self.epoch();
        if self.len == 0 {
            // Nothing cached: the current epoch can take the new way.
            self.epoch_sampling[current] = sampling;
            self.sampling = sampling;
            return 0;
        }
        let next = (current + 1) % EPOCHS;
        let mut ended = 0;
        if self.epoch_len[next] > 0 {
            for slot in 0..self.entries.len() {
                let tag = self.tag(slot);
                if tag != 0 && usize::from(tag >> EPOCH_SHIFT) == next {
                    self.retire(slot, EndReason::Forced, expired);
                    ended += 1;
                }
            }
        }
        self.epoch_bits = (next as u16) << EPOCH_SHIFT;
        self.epoch_sampling[next] = sampling;
        self.sampling = sampling;
        ended
    }

    /// Flows cached from before the last change of sampling (they end at their next
    /// packet or when the sweep passes them).
    pub fn flows_of_older_sampling(&self) -> usize {
        self.len - self.epoch_len[self.epoch()]
    }

    #[inline(always)]
    fn epoch(&self) -> usize {
        usize::from(self.epoch_bits >> EPOCH_SHIFT)
    }

    /// The tag a flow with this hash has in the current epoch.
    #[inline(always)]
    fn tag_for(&self, hash: u64) -> u16 {
        tag_of(hash) | self.epoch_bits
    }

    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }

    /// Accounts one packet. `now_ms` is the caller's clock: an observation stamped later is
    /// accounted at `now_ms` (and counted in `future_timestamps`). Records that end here
    /// (time reasons met by this packet, FIN/RST, evictions) are pushed to `expired`.
    pub fn update(&mut self, obs: &Observation, now_ms: u64, expired: &mut Vec<FlowRecord>) {
        self.count(std::slice::from_ref(obs));
        let hash = flow_hash(&obs.key);
        match self.bucket_size {
            8 => self.update_one::<8, _>(0, obs, hash, now_ms, &mut Unclassified, expired),
            _ => self.update_one::<16, _>(0, obs, hash, now_ms, &mut Unclassified, expired),
        }
    }

    /// Accounts a burst, in order, hashing every key first and prefetching the buckets.
    /// (A step-by-step variant kept for benchmarks; the worker uses
    /// [`FlowShard::update_interleaved`].)
    #[cfg(feature = "bench-variants")]
    pub fn update_burst(
        &mut self,
        observations: &[Observation],
        now_ms: u64,
        expired: &mut Vec<FlowRecord>,
    ) {
        let mut hashes = [0u64; CHUNK];
        for chunk in observations.chunks(CHUNK) {
            let hashes = &mut hashes[..chunk.len()];
            self.prepare_burst(chunk, hashes);
            self.prefetch_entries(hashes);
            self.update_prepared(chunk, hashes, now_ms, expired);
        }
    }

    /// Accounts a burst, in order, with the caller's hashes (e.g. the NIC's RSS hash), one
    /// per observation. A shard must be fed one kind of hash only: the same key must
    /// always come with the same hash.
    ///
    /// # Panics
    /// If the slices differ in length.
    pub fn update_burst_hashed(
        &mut self,
        observations: &[Observation],
        hashes: &[u32],
        now_ms: u64,
        expired: &mut Vec<FlowRecord>,
    ) {
        assert_eq!(observations.len(), hashes.len(), "one hash per observation");
        let mut wide = [0u64; CHUNK];
        for (chunk, chunk_hashes) in observations.chunks(CHUNK).zip(hashes.chunks(CHUNK)) {
            let wide = &mut wide[..chunk.len()];
            for ((w, &h), obs) in wide.iter_mut().zip(chunk_hashes).zip(chunk) {
                *w = widen_nic_hash(h, &obs.key);
                self.prefetch_header(*w);
            }
            self.update_interleaved(chunk, wide, now_ms, &[], expired);
        }
    }

    /// First step of a pipelined update: hashes each observation's key into `hashes` (one
    /// per observation) and starts loading its bucket header. Only reads the table.
    ///
    /// # Panics
    /// If the slices differ in length.
    #[cfg(feature = "bench-variants")]
    #[inline]
    pub fn prepare_burst(&self, observations: &[Observation], hashes: &mut [u64]) {
        assert_eq!(observations.len(), hashes.len(), "one hash per observation");
        // Each header is requested as soon as its hash is known, so hashing the rest of
        // the burst overlaps the memory latency.
        for (hash, obs) in hashes.iter_mut().zip(observations) {
            *hash = flow_hash(&obs.key);
            self.prefetch_header(*hash);
        }
    }

    /// Hashes each observation's key into `hashes`, touching no memory of the table: for
    /// [`FlowShard::update_interleaved`], which spreads the header prefetches out.
    ///
    /// # Panics
    /// If the slices differ in length.
    #[inline]
    pub fn hash_burst(observations: &[Observation], hashes: &mut [u64]) {
        assert_eq!(observations.len(), hashes.len(), "one hash per observation");
        for (hash, obs) in hashes.iter_mut().zip(observations) {
            *hash = flow_hash(&obs.key);
        }
    }

    /// Accounts a held burst (hashed with [`FlowShard::hash_burst`]), in order, while
    /// keeping a steady stream of loads going: each held packet's entry is requested a
    /// few packets (`PREFETCH_DISTANCE`) before its
    /// update, and one header of the `next` burst per update. At the end the first entries
    /// of `next` are requested, so they load while the caller receives its next burst.
    /// A few loads in flight all the time beat a whole burst's worth at once: past the
    /// CPU's miss buffers a prefetch stalls like a load.
    ///
    /// # Panics
    /// If `observations` and `hashes` differ in length.
    pub fn update_interleaved(
        &mut self,
        observations: &[Observation],
        hashes: &[u64],
        now_ms: u64,
        next: &[u64],
        expired: &mut Vec<FlowRecord>,
    ) {
        self.update_interleaved_classified(
            observations,
            hashes,
            now_ms,
            next,
            &mut Unclassified,
            expired,
        );
    }

    /// [`FlowShard::update_interleaved`] with a [`Classifier`] asked about every packet
    /// whose key the shard does not hold (see "One way to account packets per use"); a
    /// known flow's packet costs what it costs without one.
    ///
    /// # Panics
    /// If `observations` and `hashes` differ in length.
    #[inline]
    pub fn update_interleaved_classified<C: Classifier>(
        &mut self,
        observations: &[Observation],
        hashes: &[u64],
        now_ms: u64,
        next: &[u64],
        classifier: &mut C,
        expired: &mut Vec<FlowRecord>,
    ) {
        assert_eq!(observations.len(), hashes.len(), "one hash per observation");
        match self.bucket_size {
            8 => self.update_interleaved_in::<8, C>(
                observations,
                hashes,
                now_ms,
                next,
                classifier,
                expired,
            ),
            _ => self.update_interleaved_in::<16, C>(
                observations,
                hashes,
                now_ms,
                next,
                classifier,
                expired,
            ),
        }
    }

    fn update_interleaved_in<const B: usize, C: Classifier>(
        &mut self,
        observations: &[Observation],
        hashes: &[u64],
        now_ms: u64,
        next: &[u64],
        classifier: &mut C,
        expired: &mut Vec<FlowRecord>,
    ) {
        let n = observations.len();
        self.count(observations);
        for i in 0..n.max(next.len()) {
            if let Some(&hash) = next.get(i) {
                self.prefetch_header_in::<B>(hash);
            }
            if let Some(&hash) = hashes.get(i + PREFETCH_DISTANCE)
                && !self.prefetch_entry::<B>(hash)
                && !C::ONLY_LABELS
            {
                classifier.prefetch(hash);
            }
            if i < n {
                let (obs, hash) = (&observations[i], hashes[i]);
                if !self.count_live::<B>(obs, hash, now_ms) {
                    self.update_one::<B, C>(i, obs, hash, now_ms, classifier, expired);
                }
            }
        }
        for &hash in next.iter().take(PREFETCH_DISTANCE) {
            if !self.prefetch_entry::<B>(hash) && !C::ONLY_LABELS {
                classifier.prefetch(hash);
            }
        }
    }

    /// Starts loading the entry `hash` will likely use (its key's, or the free slot it
    /// would take): reads the bucket's header, so that should be on its way already.
    /// Says whether the bucket holds the hash's tag (false: likely a flow it does not hold).
    #[inline(always)]
    fn prefetch_entry<const B: usize>(&self, hash: u64) -> bool {
        let bucket = self.bucket_of(hash);
        let (tags, _) = self.header::<B>(bucket);
        // The flow's own slot if its tag is there (the common case), else a free one.
        let mut candidates = mask_of(tags, self.tag_for(hash));
        let held = candidates != 0;
        if !held {
            candidates = mask_of(tags, 0);
        }
        if candidates != 0 {
            let slot = bucket * B + candidates.trailing_zeros() as usize;
            prefetch_read(&self.entries[slot]);
        }
        held
    }

    /// Second step: with the headers loaded (or on their way), starts loading the entry
    /// each hash will likely use (its key's, or the free slot it would take). Only a hint:
    /// the update looks again, as earlier packets may change the bucket.
    #[cfg(feature = "bench-variants")]
    #[inline]
    pub fn prefetch_entries(&self, hashes: &[u64]) {
        match self.bucket_size {
            8 => self.prefetch_entries_in::<8>(hashes),
            _ => self.prefetch_entries_in::<16>(hashes),
        }
    }

    /// Last step: accounts the observations, in order, with the hashes
    /// [`FlowShard::prepare_burst`] gave them. Correct whether or not the prefetches of the
    /// earlier steps have completed, or were made at all.
    ///
    /// # Panics
    /// If the slices differ in length.
    #[cfg(feature = "bench-variants")]
    pub fn update_prepared(
        &mut self,
        observations: &[Observation],
        hashes: &[u64],
        now_ms: u64,
        expired: &mut Vec<FlowRecord>,
    ) {
        assert_eq!(observations.len(), hashes.len(), "one hash per observation");
        self.count(observations);
        match self.bucket_size {
            8 => self.update_prepared_in::<8>(observations, hashes, now_ms, expired),
            _ => self.update_prepared_in::<16>(observations, hashes, now_ms, expired),
        }
    }

    #[cfg(feature = "bench-variants")]
    fn update_prepared_in<const B: usize>(
        &mut self,
        observations: &[Observation],
        hashes: &[u64],
        now_ms: u64,
        expired: &mut Vec<FlowRecord>,
    ) {
        for (obs, &hash) in observations.iter().zip(hashes) {
            self.update_one::<B, _>(0, obs, hash, now_ms, &mut Unclassified, expired);
        }
    }

    #[cfg(feature = "bench-variants")]
    fn prefetch_entries_in<const B: usize>(&self, hashes: &[u64]) {
        for &hash in hashes {
            let _ = self.prefetch_entry::<B>(hash);
        }
    }

    /// [`FlowShard::prefetch_header`] for buckets of `B`: the line index by shifts, with no
    /// multiply by the run-time bucket size.
    #[inline(always)]
    fn prefetch_header_in<const B: usize>(&self, hash: u64) {
        let (line, _) = header_place::<B>(self.bucket_of(hash));
        prefetch_read(&self.headers[line]);
    }

    #[inline(always)]
    fn prefetch_header(&self, hash: u64) {
        let word = self.bucket_of(hash) * self.bucket_size * 2;
        prefetch_read(&self.headers[word / 32]);
    }

    #[inline]
    fn bucket_of(&self, hash: u64) -> usize {
        hash as usize & self.bucket_mask
    }

    /// The bucket's tags and hints.
    #[inline(always)]
    fn header<const B: usize>(&self, bucket: usize) -> (&[u16; B], &[u16; B]) {
        let (line, at) = header_place::<B>(bucket);
        let line = &self.headers[line].0;
        match (
            line[at..at + B].try_into(),
            line[at + B..at + 2 * B].try_into(),
        ) {
            (Ok(tags), Ok(hints)) => (tags, hints),
            _ => unreachable!("a header line holds whole buckets"),
        }
    }

    /// Whether `bucket` holds no flow.
    #[inline]
    fn bucket_is_empty(&self, bucket: usize) -> bool {
        match self.bucket_size {
            8 => mask_of(self.header::<8>(bucket).0, 0) == 0xff,
            _ => mask_of(self.header::<16>(bucket).0, 0) == 0xffff,
        }
    }

    /// Header line and word of a slot's tag; its hint is `bucket_size` words further on.
    #[inline(always)]
    fn header_word(&self, slot: usize) -> (usize, usize) {
        // Bucket sizes are powers of two: a mask, not a division.
        let word = 2 * slot - (slot & (self.bucket_size - 1));
        (word / 32, word % 32)
    }

    #[inline(always)]
    fn tag(&self, slot: usize) -> u16 {
        let (line, word) = self.header_word(slot);
        self.headers[line].0[word]
    }

    #[inline(always)]
    fn set_tag(&mut self, slot: usize, tag: u16) {
        let (line, word) = self.header_word(slot);
        self.headers[line].0[word] = tag;
    }

    /// Records the deadline of the flow in `slot` beside its tag, so the sweep can pass
    /// over live flows without reading their entries. A flow long due is hinted at
    /// [`HINT_FLOOR_MS`] before the clock, so no hint lies further in the past than 16 bits
    /// tell apart, and a sweep at a `now` up to that much before the clock is still exact.
    #[inline(always)]
    fn set_hint(&mut self, slot: usize) {
        let floor = self.clock_ms.saturating_sub(HINT_FLOOR_MS);
        let deadline = self.deadline(&self.entries[slot]).max(floor);
        let (line, word) = self.header_word(slot);
        self.headers[line].0[word + self.bucket_size] = hint_of(deadline);
    }

    /// [`FlowShard::set_hint`] with the deadline already known, in a bucket of `B`.
    #[inline(always)]
    fn store_hint<const B: usize>(&mut self, slot: usize, deadline_ms: u64) {
        let floor = self.clock_ms.saturating_sub(HINT_FLOOR_MS);
        let word = 2 * slot - (slot & (B - 1)) + B;
        self.headers[word / 32].0[word % 32] = hint_of(deadline_ms.max(floor));
    }

    /// A stored time, decoded against the clock.
    #[inline(always)]
    fn time(&self, stored: u32) -> u64 {
        decode_time(self.clock_ms, stored)
    }

    #[inline]
    fn deadline(&self, e: &Entry) -> u64 {
        let idle_at = self.time(e.last) + self.inactive_timeout_ms;
        let active_at = self.time(e.first) + self.active_timeout_ms;
        idle_at.min(active_at)
    }

    /// The end reason of a flow past its deadline.
    #[inline]
    fn time_reason(&self, e: &Entry) -> EndReason {
        let idle_at = self.time(e.last) + self.inactive_timeout_ms;
        let active_at = self.time(e.first) + self.active_timeout_ms;
        if idle_at <= active_at {
            EndReason::Idle
        } else {
            EndReason::Active
        }
    }

    /// Counts observations into the packet and octet totals, once per burst: a counter
    /// in memory bumped per packet would chain every update to the previous one's store.
    #[inline(always)]
    fn count(&mut self, observations: &[Observation]) {
        self.stats.packets += observations.len() as u64;
        self.stats.octets += observations
            .iter()
            .map(|o| u64::from(o.octets))
            .sum::<u64>();
    }

    /// Moves the clock to `now_ms` if it is later. If the sweep has not covered the whole
    /// table for too long a stretch of the clock, first re-reads every entry (see "Time in
    /// 32 bits"): stored times and hints are decoded against the old clock while it still
    /// can.
    #[inline(always)]
    fn advance_clock(&mut self, now_ms: u64, expired: &mut Vec<FlowRecord>) {
        if now_ms <= self.clock_ms {
            return;
        }
        if now_ms - self.trusted_ms > HINT_TRUST_MS {
            self.resync(now_ms, expired);
        }
        self.clock_ms = now_ms;
    }

    #[cold]
    fn resync(&mut self, now_ms: u64, expired: &mut Vec<FlowRecord>) {
        // An empty table (the very first call, say) has nothing to re-read.
        let occupied = self.len > 0;
        if occupied {
            self.stats.resyncs += 1;
            for slot in 0..self.entries.len() {
                if self.tag(slot) != 0 {
                    self.retire_if_due(slot, now_ms, expired);
                }
            }
        }
        // Survivors are not due at `now_ms`, so their times lie within the timeouts of it;
        // re-encode nothing, but hint them against the new clock.
        self.clock_ms = now_ms;
        if occupied {
            self.rehint_all();
        }
        self.trusted_ms = now_ms;
        self.pass_started_ms = now_ms;
        self.sweep_cursor = 0;
    }

    /// Recomputes every occupied slot's deadline hint (new timeouts, or a new clock).
    fn rehint_all(&mut self) {
        for slot in 0..self.entries.len() {
            if self.tag(slot) != 0 {
                self.set_hint(slot);
            }
        }
    }

    /// Exports the flow in `slot` with `reason` and frees the slot.
    #[inline]
    fn retire(&mut self, slot: usize, reason: EndReason, expired: &mut Vec<FlowRecord>) {
        let entry = self.entries[slot];
        self.emit(
            &entry,
            self.slot_sampling(slot),
            self.label(slot),
            reason,
            expired,
        );
        self.free(slot);
    }

    /// Empties `slot` (its record already emitted).
    #[inline]
    fn free(&mut self, slot: usize) {
        let epoch = usize::from(self.tag(slot) >> EPOCH_SHIFT);
        self.epoch_len[epoch] -= 1;
        self.set_tag(slot, 0);
        self.len -= 1;
    }

    /// The sampling of the record in `slot`: its epoch's.
    #[inline(always)]
    fn slot_sampling(&self, slot: usize) -> SamplingInfo {
        self.epoch_sampling[usize::from(self.tag(slot) >> EPOCH_SHIFT)]
    }

    /// Ends, forced, the record of an older sampling epoch that `key` has in the bucket
    /// at `base` (its tag: `tag` in another epoch), if there is one.
    #[cold]
    #[inline(never)]
    fn end_older_epoch<const B: usize>(
        &mut self,
        base: usize,
        tag: u16,
        key: &FlowKey,
        expired: &mut Vec<FlowRecord>,
    ) {
        for slot in base..base + B {
            let stored = self.tag(slot);
            if stored != 0
                && stored != tag
                && stored & TAG_HASH_BITS == tag & TAG_HASH_BITS
                && keys_equal(&self.entries[slot].key, key)
            {
                self.retire(slot, EndReason::Forced, expired);
                return;
            }
        }
    }

    #[inline(always)]
    fn label(&self, slot: usize) -> u32 {
        self.labels.get(slot).copied().unwrap_or(0)
    }

    #[inline(always)]
    fn set_label(&mut self, slot: usize, label: u32) {
        if let Some(stored) = self.labels.get_mut(slot) {
            *stored = label;
        }
    }

    /// Leaves a packet the classifier skipped out of the totals (counted per burst).
    #[cold]
    fn uncount(&mut self, obs: &Observation) {
        self.stats.packets -= 1;
        self.stats.octets -= u64::from(obs.octets);
    }

    /// Accounts a packet its classifier moved to another key (stamped with its corrected
    /// time): that key's hash, and no second question.
    #[cold]
    #[inline(never)]
    fn update_rewritten<const B: usize>(
        &mut self,
        index: usize,
        obs: &Observation,
        now_ms: u64,
        label: u32,
        expired: &mut Vec<FlowRecord>,
    ) {
        let hash = flow_hash(&obs.key);
        self.update_one::<B, _>(index, obs, hash, now_ms, &mut Decided(label), expired);
    }

    /// Retires the flow in `slot` with its time reason if it is due at `time`; says whether
    /// it was.
    #[inline]
    fn retire_if_due(&mut self, slot: usize, time: u64, expired: &mut Vec<FlowRecord>) -> bool {
        let entry = &self.entries[slot];
        if time < self.deadline(entry) {
            return false;
        }
        let reason = self.time_reason(entry);
        self.retire(slot, reason, expired);
        true
    }

    /// The common case of [`FlowShard::update_one`], on locals: a packet of a live flow, in
    /// time order, that neither ends nor times out the flow nor fills its counters. Counts
    /// it and returns true; for anything else changes nothing and returns false, and the
    /// caller takes the general path, which decides the same way from scratch.
    ///
    /// Why a second path: the general one reads the shard's fields afresh after every store
    /// into the table (the compiler cannot tell a table slot from the shard itself) and
    /// keeps room for every rare case; this one copies what it needs once and works on
    /// borrowed slices, so the lookup and the update stay in registers.
    #[inline(always)]
    fn count_live<const B: usize>(&mut self, obs: &Observation, hash: u64, now_ms: u64) -> bool {
        let time = obs.timestamp_ms;
        let stored_clock = self.clock_ms;
        let inactive = self.inactive_timeout_ms;
        let active = self.active_timeout_ms;
        if time > now_ms || time < stored_clock.saturating_sub(MAX_TIMEOUT_MS) {
            return false;
        }
        // A later packet moves the clock on, as `advance_clock` does, unless the table is
        // due to be re-read first.
        let clock = if time > stored_clock {
            if time - self.trusted_ms > HINT_TRUST_MS {
                return false;
            }
            time
        } else {
            stored_clock
        };
        if self.tcp_end_expiry
            && obs.key.protocol == TCP
            && obs.tcp_flags & (TCP_FIN | TCP_RST) != 0
        {
            return false;
        }
        let bucket = hash as usize & self.bucket_mask;
        let tag = self.tag_for(hash);
        let (headers, entries) = (&mut self.headers[..], &mut self.entries[..]);
        let (line_index, at) = header_place::<B>(bucket);
        let Some(HeaderLine(line)) = headers.get_mut(line_index) else {
            return false;
        };
        let Ok(tags) = <&[u16; B]>::try_from(&line[at..at + B]) else {
            return false;
        };
        let Some(bucket_entries) = entries.get_mut(bucket * B..bucket * B + B) else {
            return false;
        };
        let mut matches = eq_mask(tags, tag);
        while matches != 0 {
            let index = matches.trailing_zeros() as usize;
            matches &= matches - 1;
            let entry = &mut bucket_entries[index];
            if !keys_equal(&entry.key, &obs.key) {
                continue;
            }
            let last = decode_time(clock, entry.last);
            let first = decode_time(clock, entry.first);
            let octets = entry.octets() + u64::from(obs.octets);
            if time < last
                || time >= (last + inactive).min(first + active)
                || entry.packets == u32::MAX
                || octets > MAX_OCTETS
            {
                // Out of order, due, or full: the general path counts or ends it.
                return false;
            }
            entry.count(obs, octets, first, time);
            let deadline = (time + inactive).min(first + active);
            line[at + B + index] = hint_of(deadline.max(clock.saturating_sub(HINT_FLOOR_MS)));
            self.clock_ms = clock;
            return true;
        }
        false
    }

    #[inline(always)]
    fn update_one<const B: usize, C: Classifier>(
        &mut self,
        index: usize,
        obs: &Observation,
        hash: u64,
        now_ms: u64,
        classifier: &mut C,
        expired: &mut Vec<FlowRecord>,
    ) {
        let mut time = if obs.timestamp_ms > now_ms {
            self.stats.future_timestamps += 1;
            now_ms
        } else {
            obs.timestamp_ms
        };
        // The clock follows packet times (not the call's `now`), so packets of one burst
        // that spans a long gap keep their own times.
        if time > self.clock_ms {
            self.advance_clock(time, expired);
        }
        let oldest = self.clock_ms.saturating_sub(MAX_TIMEOUT_MS);
        if time < oldest {
            self.stats.stale_timestamps += 1;
            time = oldest;
        }
        let ends_flow = self.tcp_end_expiry
            && obs.key.protocol == TCP
            && obs.tcp_flags & (TCP_FIN | TCP_RST) != 0;

        let bucket = self.bucket_of(hash);
        let base = bucket * B;
        let tag = self.tag_for(hash);
        let (tags, _) = self.header::<B>(bucket);
        let mut free_slots = mask_of(tags, 0);
        let mut matches = mask_of(tags, tag);
        while matches != 0 {
            let slot = base + matches.trailing_zeros() as usize;
            if keys_equal(&self.entries[slot].key, &obs.key) {
                self.update_found::<B, C>(
                    slot, index, obs, hash, time, ends_flow, classifier, expired,
                );
                return;
            }
            matches &= matches - 1;
        }
        if self.len != self.epoch_len[self.epoch()] {
            // The flow may have a record of an older sampling: it ends here.
            self.end_older_epoch::<B>(base, tag, &obs.key, expired);
            free_slots = mask_of(self.header::<B>(bucket).0, 0);
        }

        let mut decided = Observation {
            timestamp_ms: time,
            ..*obs
        };
        let label = match classifier.admit(index, &mut decided, hash) {
            Admission::Account(label) if C::ONLY_LABELS => label,
            Admission::Skip => {
                self.uncount(obs);
                return;
            }
            Admission::Account(label) => {
                if !keys_equal(&decided.key, &obs.key) {
                    self.update_rewritten::<B>(index, &decided, now_ms, label, expired);
                    return;
                }
                label
            }
        };
        self.stats.flows_created += 1;
        if ends_flow {
            // A one-packet flow that ends at once needs no slot and so evicts nothing.
            self.emit(
                &Entry::start(obs, time),
                self.sampling,
                label,
                EndReason::EndOfFlow,
                expired,
            );
            return;
        }
        let slot = if free_slots != 0 {
            base + free_slots.trailing_zeros() as usize
        } else {
            self.make_room(base, time, expired)
        };
        self.entries[slot] = Entry::start(obs, time);
        self.set_label(slot, label);
        self.set_tag(slot, tag);
        self.set_hint(slot);
        self.len += 1;
        self.epoch_len[self.epoch()] += 1;
    }

    /// Counts `obs` at `time` into the live flow in `slot`. The common case (the flow goes
    /// on) decodes the stored times once and derives the new deadline from them, rather
    /// than decoding again for the hint.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn update_found<const B: usize, C: Classifier>(
        &mut self,
        slot: usize,
        index: usize,
        obs: &Observation,
        hash: u64,
        time: u64,
        ends_flow: bool,
        classifier: &mut C,
        expired: &mut Vec<FlowRecord>,
    ) {
        let clock = self.clock_ms;
        let entry = &mut self.entries[slot];
        let last = decode_time(clock, entry.last);
        let first = decode_time(clock, entry.first);
        let deadline = (last + self.inactive_timeout_ms).min(first + self.active_timeout_ms);
        let octets = entry.octets() + u64::from(obs.octets);
        if time >= deadline || entry.packets == u32::MAX || octets > MAX_OCTETS {
            // Due, or a counter would overflow: `restart` tells which.
            if !self.restart::<B, C>(slot, index, obs, hash, time, classifier, expired) {
                // The classifier skipped the packet or moved it to another key.
                return;
            }
        } else {
            if time < last {
                self.stats.reordered += 1;
            }
            let (first, last) = (first.min(time), last.max(time));
            entry.count(obs, octets, first, last);
            if !ends_flow {
                let deadline =
                    (last + self.inactive_timeout_ms).min(first + self.active_timeout_ms);
                self.store_hint::<B>(slot, deadline);
                return;
            }
        }
        if ends_flow {
            self.retire(slot, EndReason::EndOfFlow, expired);
        } else {
            self.set_hint(slot);
        }
    }

    /// Ends the record in `slot` (its time reason, or active when its counters are full)
    /// and starts a new one with this packet, which is a first packet again: true if the
    /// new record is in `slot`; false if the classifier skipped the packet or moved it to
    /// another key (accounted there; `slot` is free).
    #[cold]
    #[allow(clippy::too_many_arguments)]
    fn restart<const B: usize, C: Classifier>(
        &mut self,
        slot: usize,
        index: usize,
        obs: &Observation,
        hash: u64,
        time: u64,
        classifier: &mut C,
        expired: &mut Vec<FlowRecord>,
    ) -> bool {
        let entry = self.entries[slot];
        let reason = if time >= self.deadline(&entry) {
            self.time_reason(&entry)
        } else {
            self.stats.counter_splits += 1;
            EndReason::Active
        };
        self.emit(
            &entry,
            self.slot_sampling(slot),
            self.label(slot),
            reason,
            expired,
        );
        let mut decided = Observation {
            timestamp_ms: time,
            ..*obs
        };
        match classifier.admit(index, &mut decided, hash) {
            Admission::Account(label) if C::ONLY_LABELS || keys_equal(&decided.key, &obs.key) => {
                self.entries[slot] = Entry::start(obs, time);
                self.set_label(slot, label);
                self.stats.flows_created += 1;
                true
            }
            Admission::Account(label) => {
                self.free(slot);
                self.update_rewritten::<B>(index, &decided, time, label, expired);
                false
            }
            Admission::Skip => {
                self.free(slot);
                self.uncount(obs);
                false
            }
        }
    }

    /// Frees a slot of the full bucket at `base` for a packet at `time`: exports the flows
    /// already past their deadline, or else evicts the least recently used one.
    #[cold]
    fn make_room(&mut self, base: usize, time: u64, expired: &mut Vec<FlowRecord>) -> usize {
        let mut free = None;
        for slot in base..base + self.bucket_size {
            if self.retire_if_due(slot, time, expired) {
                free.get_or_insert(slot);
            }
        }
        if let Some(slot) = free {
            return slot;
        }
        let victim = (base..base + self.bucket_size)
            .min_by_key(|&slot| (self.time(self.entries[slot].last), self.entries[slot].key))
            .unwrap_or(base);
        self.retire(victim, EndReason::LackOfResources, expired);
        self.stats.evictions += 1;
        victim
    }

    #[inline]
    fn emit(
        &mut self,
        entry: &Entry,
        sampling: SamplingInfo,
        label: u32,
        reason: EndReason,
        expired: &mut Vec<FlowRecord>,
    ) {
        self.stats.expired[reason as usize] += 1;
        expired.push(FlowRecord {
            key: entry.key,
            packets: u64::from(entry.packets),
            octets: entry.octets(),
            first_ms: self.time(entry.first),
            last_ms: self.time(entry.last),
            tcp_flags: entry.tcp_flags,
            min_ttl: entry.min_ttl,
            max_ttl: entry.max_ttl,
            end_reason: reason,
            sampling,
            label,
            extras: None,
        });
    }

    /// Incremental sweep: examines the next `expiry_budget` slots (rounded up to whole
    /// buckets, wrapping around the table) and exports every flow whose deadline is at or
    /// before `now_ms`, idle or active. Returns how many it exported.
    pub fn expire(&mut self, now_ms: u64, expired: &mut Vec<FlowRecord>) -> usize {
        self.advance_clock(now_ms, expired);
        self.sweep(self.expiry_budget, now_ms, expired)
    }

    /// A full sweep of the table at `now_ms` (the work of `capacity / expiry_budget` calls
    /// of [`FlowShard::expire`]): afterwards no flow past its deadline remains.
    pub fn expire_all(&mut self, now_ms: u64, expired: &mut Vec<FlowRecord>) -> usize {
        self.advance_clock(now_ms, expired);
        self.sweep(self.entries.len(), now_ms, expired)
    }

    fn sweep(&mut self, budget: usize, now_ms: u64, expired: &mut Vec<FlowRecord>) -> usize {
        match self.bucket_size {
            8 => self.sweep_in::<8>(budget, now_ms, expired),
            _ => self.sweep_in::<16>(budget, now_ms, expired),
        }
    }

    fn sweep_in<const B: usize>(
        &mut self,
        budget: usize,
        now_ms: u64,
        expired: &mut Vec<FlowRecord>,
    ) -> usize {
        let buckets = self.bucket_mask + 1;
        let lines = self.headers.len();
        let now_hint = hint_of(now_ms);
        let mut count = 0;
        for _ in 0..budget.div_ceil(B).min(buckets) {
            let bucket = self.sweep_cursor;
            if bucket == 0 {
                self.pass_started_ms = now_ms.min(self.clock_ms);
            }
            self.sweep_cursor = (bucket + 1) & self.bucket_mask;
            if self.sweep_cursor == 0 {
                // A whole pass done: every bucket was visited since it started.
                self.trusted_ms = self.pass_started_ms;
            }
            // Headers are read in order; ask for the ones a few buckets on already.
            prefetch_read(&self.headers[(bucket * 2 * B / 32 + SWEEP_PREFETCH_LINES) % lines]);
            // A flow can be due only if its hint (deadline rounded down) is not after now's.
            let (tags, hints) = self.header::<B>(bucket);
            let occupied = !mask_of(tags, 0) & (u32::MAX >> (32 - B));
            if occupied == 0 {
                // Most buckets of a table sized for more flows than it holds.
                continue;
            }
            let mut due = occupied & not_after_mask(hints, now_hint);
            if self.len != self.epoch_len[self.epoch()] {
                // Flows of an older sampling epoch end as the sweep passes them.
                let current = self.epoch_bits;
                let older = tags.iter().enumerate().fold(0u32, |m, (i, &t)| {
                    m | u32::from(t & !TAG_HASH_BITS != current) << i
                }) & occupied;
                let mut stale = older;
                while stale != 0 {
                    let slot = bucket * B + stale.trailing_zeros() as usize;
                    stale &= stale - 1;
                    self.retire(slot, EndReason::Forced, expired);
                    count += 1;
                }
                due &= !older;
            }
            while due != 0 {
                let slot = bucket * B + due.trailing_zeros() as usize;
                due &= due - 1;
                if self.retire_if_due(slot, now_ms, expired) {
                    count += 1;
                }
            }
        }
        count
    }

    /// Forced end: exports every flow (reason forced) and leaves the shard empty.
    pub fn flush(&mut self, expired: &mut Vec<FlowRecord>) {
        while !self.flush_some(usize::MAX, expired) {}
    }

    /// Forced end in pieces: exports at most `max_records` flows (reason forced), resuming
    /// where the last call stopped, so a caller can ship each piece before the next and
    /// never holds a whole table of records at once. True once the shard is empty.
    pub fn flush_some(&mut self, max_records: usize, expired: &mut Vec<FlowRecord>) -> bool {
        let mut left = max_records;
        while self.len > 0 && left > 0 && self.flush_cursor < self.entries.len() {
            let slot = self.flush_cursor;
            // Empty buckets are passed over whole, from their tags alone: a replay's end
            // walks a table sized for far more flows than are left in it.
            if slot & (self.bucket_size - 1) == 0 && self.bucket_is_empty(slot / self.bucket_size) {
                self.flush_cursor += self.bucket_size;
                continue;
            }
            self.flush_cursor += 1;
            if self.tag(slot) != 0 {
                self.retire(slot, EndReason::Forced, expired);
                left -= 1;
            }
        }
        if self.len > 0 {
            // Flows a caller added between pieces, behind the cursor, are found by a new
            // round.
            if self.flush_cursor == self.entries.len() {
                self.flush_cursor = 0;
            }
            return false;
        }
        self.flush_cursor = 0;
        self.sweep_cursor = 0;
        true
    }
}

/// The 64-bit hash a shard files a NIC hash under. Bucket from the hash's low bits; the tag
/// from its high bits, where the ports are folded in: a symmetric RSS key gives both
/// directions of a conversation one hash, and folding keeps them from matching each other's
/// tag (and costing a key comparison) in their bucket.
#[inline]
fn widen_nic_hash(hash: u32, key: &FlowKey) -> u64 {
    let ports = u32::from(key.src_port) << 16 | u32::from(key.dst_port);
    let mixed = (hash ^ ports).wrapping_mul(0x9e37_79b9);
    u64::from(mixed) << 32 | u64::from(hash)
}

/// Where the header of `bucket` (of `B` slots) lies: its line, and the word in that line
/// where its `B` tags start (its `B` hints follow them).
#[inline(always)]
fn header_place<const B: usize>(bucket: usize) -> (usize, usize) {
    let word = bucket * 2 * B;
    (word / 32, word % 32)
}

/// A stored 32-bit time, as the latest time at or before `clock_ms` with those low bits.
#[inline(always)]
fn decode_time(clock_ms: u64, stored: u32) -> u64 {
    clock_ms - u64::from((clock_ms as u32).wrapping_sub(stored))
}

/// A deadline in units of 1.024 s, modulo 2^16 (18.6 hours); compared by wrapping
/// difference, so it is unambiguous within 9.3 hours either side of the clock.
#[inline(always)]
fn hint_of(deadline_ms: u64) -> u16 {
    (deadline_ms >> 10) as u16
}

/// Bit `i` set iff `tags[i] == tag`.
#[inline(always)]
fn mask_of<const B: usize>(tags: &[u16; B], tag: u16) -> u32 {
    eq_mask(tags, tag)
}

/// The hash's part of a tag: 13 of its top bits, with 0 (a free slot, in epoch 0) moved
/// to 1. The top three bits are the sampling epoch's.
#[inline]
fn tag_of(hash: u64) -> u16 {
    ((hash >> 48) as u16 & TAG_HASH_BITS).max(1)
}

impl Entry {
    #[inline]
    fn start(obs: &Observation, time: u64) -> Entry {
        Entry {
            key: obs.key,
            tcp_flags: obs.tcp_flags,
            min_ttl: obs.ttl,
            max_ttl: obs.ttl,
            octets_high: 0,
            packets: 1,
            octets_low: obs.octets,
            first: time as u32,
            last: time as u32,
        }
    }

    #[inline(always)]
    fn octets(&self) -> u64 {
        u64::from(self.octets_high) << 32 | u64::from(self.octets_low)
    }

    /// Counts `obs` into the entry: `octets` is the new octet total (at most
    /// [`MAX_OCTETS`]), `first` and `last` the flow's times with this packet, all within
    /// the timeouts of the clock.
    #[inline(always)]
    fn count(&mut self, obs: &Observation, octets: u64, first: u64, last: u64) {
        self.packets += 1;
        self.octets_low = octets as u32;
        self.octets_high = (octets >> 32) as u8;
        self.first = first as u32;
        self.last = last as u32;
        self.tcp_flags |= obs.tcp_flags;
        self.min_ttl = self.min_ttl.min(obs.ttl);
        self.max_ttl = self.max_ttl.max(obs.ttl);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observation(port: u16, time: u64, octets: u32) -> Observation {
        let mut key = FlowKey {
            src_port: port,
            dst_port: 53,
            protocol: 17,
            ip_version: 4,
            ..FlowKey::default()
        };
        key.src_addr[..4].copy_from_slice(&[10, 0, 0, 1]);
        Observation {
            key,
            octets,
            tcp_flags: 0,
            ttl: 64,
            timestamp_ms: time,
        }
    }

    const T0: u64 = 1_700_000_000_000;

    #[test]
    fn a_full_packet_counter_ends_the_record_as_active_and_loses_nothing() {
        let mut s = FlowShard::new(&CacheConfig::default(), SamplingInfo::default());
        let mut out = Vec::new();
        s.update(&observation(1, T0, 100), T0, &mut out);
        // Stand in for four billion packets: the counter one short of full.
        let slot = (0..s.entries.len()).find(|&i| s.tag(i) != 0).unwrap();
        s.entries[slot].packets = u32::MAX - 1;
        s.update(&observation(1, T0 + 1, 100), T0 + 1, &mut out);
        assert!(out.is_empty());
        s.update(&observation(1, T0 + 2, 100), T0 + 2, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].packets, u64::from(u32::MAX));
        assert_eq!(out[0].end_reason, EndReason::Active);
        assert_eq!((out[0].first_ms, out[0].last_ms), (T0, T0 + 1));
        assert_eq!(s.stats().counter_splits, 1);
        s.flush(&mut out);
        assert_eq!(out[1].packets, 1);
        assert_eq!(out[1].first_ms, T0 + 2);
    }

    fn hash_sampling(interval: u32) -> SamplingInfo {
        SamplingInfo {
            algorithm: crate::SamplingAlgorithm::Hash,
            interval,
        }
    }

    #[test]
    fn a_change_of_sampling_ends_each_cached_flow_at_its_next_packet_or_sweep() {
        let mut s = FlowShard::new(&CacheConfig::default(), SamplingInfo::default());
        let mut out = Vec::new();
        // Two flows under 1 in 1; both paths of an update (burst and single) see them.
        for t in 0..3 {
            s.update(&observation(1, T0 + t, 100), T0 + t, &mut out);
            s.update(&observation(2, T0 + t, 100), T0 + t, &mut out);
        }
        assert_eq!(s.set_sampling(hash_sampling(4), &mut out), 0);
        assert!(out.is_empty(), "no flush at a change");
        assert_eq!(s.flows_of_older_sampling(), 2);
        // Flow 1 goes on: its old record ends, forced, with the old sampling; the packet
        // starts a record under the new one.
        let next = [observation(1, T0 + 10, 100)];
        let mut hashes = [0];
        FlowShard::hash_burst(&next, &mut hashes);
        s.update_interleaved(&next, &hashes, T0 + 10, &[], &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].key.src_port, out[0].packets, out[0].end_reason),
            (1, 3, EndReason::Forced)
        );
        assert_eq!(out[0].sampling, SamplingInfo::default());
        assert_eq!((s.len(), s.flows_of_older_sampling()), (2, 1));
        // Flow 2 saw no packet since: a sweep pass ends it with its old sampling.
        s.expire_all(T0 + 11, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(
            (out[1].key.src_port, out[1].packets, out[1].end_reason),
            (2, 3, EndReason::Forced)
        );
        assert_eq!(out[1].sampling, SamplingInfo::default());
        assert_eq!(s.flows_of_older_sampling(), 0);
        s.update(&observation(1, T0 + 12, 100), T0 + 12, &mut out);
        s.flush(&mut out);
        assert_eq!(out.len(), 3);
        assert_eq!((out[2].packets, out[2].first_ms), (2, T0 + 10));
        assert_eq!(out[2].sampling, hash_sampling(4));
        // Nothing lost: every packet is in exactly one record.
        assert_eq!(out.iter().map(|r| r.packets).sum::<u64>(), 8);
    }

    #[test]
    fn an_epoch_reused_while_it_still_holds_flows_ends_them_first() {
        let mut s = FlowShard::new(&CacheConfig::default(), SamplingInfo::default());
        let mut out = Vec::new();
        s.update(&observation(1, T0, 100), T0, &mut out);
        // Seven changes, each with a flow of its own that stays; no sweep runs.
        for (i, port) in (2..9).enumerate() {
            s.set_sampling(hash_sampling(2 << i), &mut out);
            s.update(&observation(port, T0, 100), T0, &mut out);
        }
        assert!(out.is_empty());
        assert_eq!((s.len(), s.flows_of_older_sampling()), (8, 7));
        // The eighth reuses flow 1's epoch: flow 1 ends now, with its own sampling.
        assert_eq!(s.set_sampling(hash_sampling(1024), &mut out), 1);
        assert_eq!(
            (out[0].key.src_port, out[0].sampling),
            (1, SamplingInfo::default())
        );
        s.flush(&mut out);
        let by_port: std::collections::BTreeMap<u16, u32> = out
            .iter()
            .map(|r| (r.key.src_port, r.sampling.interval))
            .collect();
        let expected: std::collections::BTreeMap<u16, u32> = (1..9)
            .map(|p| (p, if p == 1 { 1 } else { 1 << (p - 1) }))
            .collect();
        assert_eq!(by_port, expected);
    }

    #[test]
    fn a_full_octet_counter_ends_the_record_as_active() {
        let mut s = FlowShard::new(&CacheConfig::default(), SamplingInfo::default());
        let mut out = Vec::new();
        s.update(&observation(1, T0, 1500), T0, &mut out);
        let slot = (0..s.entries.len()).find(|&i| s.tag(i) != 0).unwrap();
        let near_full = MAX_OCTETS - 1000;
        s.entries[slot].octets_low = near_full as u32;
        s.entries[slot].octets_high = (near_full >> 32) as u8;
        s.update(&observation(1, T0 + 1, 1000), T0 + 1, &mut out);
        assert!(out.is_empty(), "exactly full still fits");
        s.update(&observation(1, T0 + 2, 1), T0 + 2, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].octets, MAX_OCTETS);
        assert_eq!(out[0].end_reason, EndReason::Active);
    }

    #[test]
    fn times_decode_exactly_across_a_32_bit_wrap() {
        // 2^32 ms boundaries: a flow straddling one keeps exact first and last times.
        let wrap = (T0 >> 32 << 32) + (1 << 32);
        let mut s = FlowShard::new(&CacheConfig::default(), SamplingInfo::default());
        let mut out = Vec::new();
        for (i, t) in [wrap - 3, wrap - 1, wrap, wrap + 5].into_iter().enumerate() {
            s.update(&observation(1, t, 10 + i as u32), t, &mut out);
        }
        s.flush(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].first_ms, out[0].last_ms), (wrap - 3, wrap + 5));
        assert_eq!(out[0].packets, 4);
    }

    #[test]
    fn a_clock_jump_past_the_hint_horizon_rereads_the_table() {
        let config = CacheConfig {
            inactive_timeout_ms: 15_000,
            active_timeout_ms: 10 * 86_400_000,
            ..CacheConfig::default()
        };
        let mut s = FlowShard::new(&config, SamplingInfo::default());
        let mut out = Vec::new();
        s.update(&observation(1, T0, 10), T0, &mut out);
        s.expire_all(T0, &mut out);
        // Twenty days on, with no sweep in between: a 16-bit hint has wrapped many times
        // and a 32-bit time would too; the flow still leaves exactly, as idle.
        let later = T0 + 20 * 86_400_000;
        s.update(&observation(2, later, 10), later, &mut out);
        assert_eq!(s.stats().resyncs, 1);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].end_reason, EndReason::Idle);
        assert_eq!((out[0].first_ms, out[0].last_ms), (T0, T0));
        s.flush(&mut out);
        assert_eq!(out[1].first_ms, later);
    }

    #[test]
    fn observations_far_older_than_the_clock_are_clamped_and_counted() {
        let mut s = FlowShard::new(&CacheConfig::default(), SamplingInfo::default());
        let mut out = Vec::new();
        s.update(&observation(1, T0, 10), T0, &mut out);
        let ancient = T0 - 100 * 86_400_000;
        s.update(&observation(2, ancient, 10), T0, &mut out);
        assert_eq!(s.stats().stale_timestamps, 1);
        s.flush(&mut out);
        let old = out.iter().find(|r| r.key.src_port == 2).unwrap();
        assert_eq!(old.first_ms, T0 - MAX_TIMEOUT_MS);
    }

    /// Skips ports 0 mod 3, labels ports 1 mod 3 with their port, and moves ports 2 mod 3
    /// to one aggregate key labelled 99; counts what it is asked.
    #[derive(Default)]
    struct ByPort {
        asked: std::collections::BTreeMap<u16, u32>,
    }

    impl Classifier for ByPort {
        fn admit(&mut self, _: usize, obs: &mut Observation, _: u64) -> Admission {
            let port = obs.key.src_port;
            *self.asked.entry(port).or_default() += 1;
            match port % 3 {
                0 => Admission::Skip,
                1 => Admission::Account(u32::from(port)),
                _ => {
                    obs.key.src_port = 0;
                    obs.key._reserved = 1;
                    Admission::Account(99)
                }
            }
        }
    }

    #[test]
    fn a_classifier_is_asked_only_for_flows_the_shard_does_not_hold() {
        let config = CacheConfig {
            inactive_timeout_ms: 1_000,
            ..CacheConfig::default()
        };
        let mut s = FlowShard::new(&config, SamplingInfo::default());
        s.keep_labels();
        let mut classifier = ByPort::default();
        let mut out = Vec::new();
        // Ports 1..=6, four packets each, in two bursts; then port 1 again after idling.
        let burst: Vec<Observation> = (0..4)
            .flat_map(|_| (1..=6).map(|p| observation(p, T0, 100)))
            .collect();
        for half in burst.chunks(12) {
            let mut hashes = vec![0; half.len()];
            FlowShard::hash_burst(half, &mut hashes);
            s.update_interleaved_classified(half, &hashes, T0, &[], &mut classifier, &mut out);
        }
        let late = [observation(1, T0 + 5_000, 100)];
        let mut hash = [0];
        FlowShard::hash_burst(&late, &mut hash);
        s.update_interleaved_classified(&late, &hash, T0 + 5_000, &[], &mut classifier, &mut out);
        s.flush(&mut out);
        // Held flows (1 and 4) were asked once per record; the others every packet.
        let asked: Vec<(u16, u32)> = classifier.asked.into_iter().collect();
        assert_eq!(asked, [(1, 2), (2, 4), (3, 4), (4, 1), (5, 4), (6, 4)]);
        let mut records: Vec<(u16, u8, u64, u32, EndReason)> = out
            .iter()
            .map(|r| {
                let k = r.key;
                (k.src_port, k._reserved, r.packets, r.label, r.end_reason)
            })
            .collect();
        records.sort_unstable_by_key(|r| (r.0, r.2));
        assert_eq!(
            records,
            [
                (0, 1, 8, 99, EndReason::Forced),
                (1, 0, 1, 1, EndReason::Forced),
                (1, 0, 4, 1, EndReason::Idle),
                (4, 0, 4, 4, EndReason::Forced),
            ]
        );
        // Skipped packets are not accounted.
        assert_eq!(s.stats().packets, 17);
        assert_eq!(s.stats().octets, 1_700);
        assert_eq!(s.stats().flows_created, 4);
    }

    #[test]
    fn a_zeroed_table_holds_default_values() {
        // The table is never written at start: its zero bits must read as Default.
        let entries = ZeroedTable::<Entry>::new(1000);
        let headers = ZeroedTable::<HeaderLine>::new(1000);
        let entry = format!("{:?}", Entry::default());
        let header = format!("{:?}", HeaderLine::default());
        assert!(entries.iter().all(|e| format!("{e:?}") == entry));
        assert!(headers.iter().all(|h| format!("{h:?}") == header));
        assert!(entries.as_ptr().cast::<u8>().align_offset(64) == 0);
    }

    #[test]
    fn flush_some_hands_out_the_table_in_pieces() {
        let mut s = FlowShard::new(
            &CacheConfig {
                capacity: 4096,
                ..CacheConfig::default()
            },
            SamplingInfo::default(),
        );
        let mut out = Vec::new();
        for port in 0..1000 {
            s.update(&observation(port, T0, 10), T0, &mut out);
        }
        let mut pieces = 0;
        loop {
            let mut piece = Vec::new();
            let done = s.flush_some(300, &mut piece);
            assert!(piece.len() <= 300);
            out.extend(piece);
            pieces += 1;
            if done {
                break;
            }
        }
        assert_eq!(pieces, 4);
        assert_eq!(out.len(), 1000);
        assert!(s.is_empty());
        let mut ports: Vec<u16> = out.iter().map(|r| r.key.src_port).collect();
        ports.sort_unstable();
        assert_eq!(ports, (0..1000).collect::<Vec<u16>>());
    }
}
