//! One worker's flow cache: a preallocated set-associative table.
//!
//! A flow's hash picks one bucket of 8 or 16 slots. Each bucket has a header of one cache
//! line (two for 16 slots), apart from the entries: per slot a 32-bit tag (a slice of the
//! hash; 0 marks a free slot) and a 32-bit deadline hint. A lookup reads the header and
//! then only the entries whose tag matches; the sweep reads headers and only the entries
//! whose hint says they may be due. A burst is hashed first, each bucket's header
//! prefetched as soon as its hash is known, then each packet's likely entry prefetched.
//!
//! # Expiry rules
//!
//! A flow with first packet time `first` and last packet time `last` has a deadline
//! `min(last + inactive_timeout, first + active_timeout)`; its time-based end reason is
//! idle if `last + inactive_timeout <= first + active_timeout`, else active. A flow ends:
//! - at a packet for it stamped at or after its deadline: the flow is exported with its
//!   time reason and the packet starts a new record (so a long flow comes out in pieces
//!   each shorter than the active timeout, counters restarting);
//! - in [`FlowShard::expire`] run at a `now` at or after its deadline, with the same reason;
//! - after a TCP packet with FIN or RST when `tcp_end_expiry` is on: the packet is counted
//!   and the flow exported as end of flow; the next packet of the 5-tuple starts a new one;
//! - when a new flow needs a slot in a full bucket: first every flow of the bucket already
//!   past its deadline at the packet's time is exported (time reason); if none was, the one
//!   with the oldest `last` (ties: smallest key) is evicted as lack of resources;
//! - in [`FlowShard::flush`], as forced.
//!
//! Every decision depends only on packet times and the flow's state, never on when the
//! sweep reached a slot. So, for packets in time order and sweeps never run at a `now`
//! later than the next packet's time, the multiset of records is the same however the
//! packets are split into bursts and however often `expire` runs; in particular a replay
//! gives the same records at any speed.

use crate::SamplingInfo;
use crate::hash::flow_hash;
use crate::prefetch::prefetch_read;
use crate::{CacheConfig, CacheConfigError, EndReason, FlowKey, FlowRecord, Observation};

const TCP: u8 = 6;
const TCP_FIN: u8 = 0x01;
const TCP_RST: u8 = 0x04;

/// Observations hashed and prefetched together; longer bursts are taken in chunks.
const CHUNK: usize = 64;

/// How far ahead of itself (in header lines) the sweep prefetches.
const SWEEP_PREFETCH_LINES: usize = 8;

/// A flow's state in a slot. `#[repr(C)]`, 80 bytes; the key comes first so a lookup's key
/// comparison touches the entry's first cache line.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    key: FlowKey,
    tcp_flags: u8,
    min_ttl: u8,
    max_ttl: u8,
    _pad: u8,
    packets: u64,
    octets: u64,
    first_ms: u64,
    last_ms: u64,
}

/// Memory per cache slot: the 80-byte entry, its 4-byte tag and its 4-byte deadline hint.
/// A shard of capacity C (after rounding) holds `C * ENTRY_BYTES` bytes, allocated once in
/// [`FlowShard::new`].
pub const ENTRY_BYTES: usize = size_of::<Entry>() + 2 * size_of::<u32>();

const _: () = assert!(size_of::<Entry>() == 80);
const _: () = assert!(ENTRY_BYTES <= 128);

/// Sixteen words of a bucket header, cache-line aligned. A bucket of B slots has a header
/// of 2B words: B tags, then B deadline hints; one line for B = 8, two for B = 16.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Default)]
struct HeaderLine([u32; 16]);

/// A shard's counters. Sum shards with [`CacheStats::merge`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Observations accounted into flows (after sampling).
    pub packets: u64,
    /// Octets (IP total length) of those observations.
    pub octets: u64,
    /// Records started: new flows, and new pieces after an idle or active end.
    pub flows_created: u64,
    /// Records emitted, indexed by `EndReason as usize` (index 0 unused).
    pub expired: [u64; 6],
    /// Flows evicted from a full bucket; equals `expired[LackOfResources]`.
    pub evictions: u64,
    /// Observations stamped later than the call's `now`, accounted at `now` instead.
    pub future_timestamps: u64,
    /// Observations older than their flow's last packet (out-of-order input); counted into
    /// the flow normally.
    pub reordered: u64,
}

impl CacheStats {
    pub fn expired(&self, reason: EndReason) -> u64 {
        self.expired[reason as usize]
    }

    /// Records emitted for every reason.
    pub fn records(&self) -> u64 {
        self.expired.iter().sum()
    }

    pub fn merge(&mut self, other: &CacheStats) {
        self.packets += other.packets;
        self.octets += other.octets;
        self.flows_created += other.flows_created;
        for (mine, theirs) in self.expired.iter_mut().zip(other.expired) {
            *mine += theirs;
        }
        self.evictions += other.evictions;
        self.future_timestamps += other.future_timestamps;
        self.reordered += other.reordered;
    }
}

/// One worker's flow cache. Owned by one thread; no locks, and no allocation after
/// [`FlowShard::new`] (records go into the caller's `Vec`, which should be reserved).
#[derive(Debug)]
pub struct FlowShard {
    headers: Vec<HeaderLine>,
    entries: Vec<Entry>,
    bucket_mask: usize,
    bucket_size: usize,
    inactive_timeout_ms: u64,
    active_timeout_ms: u64,
    tcp_end_expiry: bool,
    expiry_budget: usize,
    len: usize,
    sweep_cursor: usize,
    sampling: SamplingInfo,
    stats: CacheStats,
}

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
            headers: vec![HeaderLine::default(); slots / 8],
            entries: vec![Entry::default(); slots],
            bucket_mask: buckets - 1,
            bucket_size: config.bucket_size,
            inactive_timeout_ms: config.inactive_timeout_ms,
            active_timeout_ms: config.active_timeout_ms,
            tcp_end_expiry: config.tcp_end_expiry,
            expiry_budget: config.expiry_budget,
            len: 0,
            sweep_cursor: 0,
            sampling,
            stats: CacheStats::default(),
        })
    }

    /// Changes the inactive and active timeouts of a running shard (a configuration
    /// reload). Flows already cached are judged by the new timeouts from now on: one pass
    /// over the table recomputes every deadline hint, so the sweep stays exact. Flows the
    /// change puts past their deadline leave at the next sweep or packet, as usual.
    pub fn set_timeouts(
        &mut self,
        inactive_timeout_ms: u64,
        active_timeout_ms: u64,
    ) -> Result<(), CacheConfigError> {
        if inactive_timeout_ms == 0 {
            return Err(CacheConfigError::InactiveTimeoutZero);
        }
        if active_timeout_ms == 0 {
            return Err(CacheConfigError::ActiveTimeoutZero);
        }
        self.inactive_timeout_ms = inactive_timeout_ms;
        self.active_timeout_ms = active_timeout_ms;
        for slot in 0..self.entries.len() {
            if self.tag(slot) != 0 {
                self.set_hint(slot);
            }
        }
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
        self.entries.len() * size_of::<Entry>() + self.headers.len() * size_of::<HeaderLine>()
    }

    pub fn sampling(&self) -> SamplingInfo {
        self.sampling
    }

    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }

    /// Accounts one packet. `now_ms` is the caller's clock: an observation stamped later is
    /// accounted at `now_ms` (and counted in `future_timestamps`). Records that end here
    /// (time reasons met by this packet, FIN/RST, evictions) are pushed to `expired`.
    pub fn update(&mut self, obs: &Observation, now_ms: u64, expired: &mut Vec<FlowRecord>) {
        let hash = flow_hash(&obs.key);
        match self.bucket_size {
            8 => self.update_one::<8>(obs, hash, now_ms, expired),
            _ => self.update_one::<16>(obs, hash, now_ms, expired),
        }
    }

    /// Accounts a burst, in order, hashing every key first and prefetching the buckets.
    pub fn update_burst(
        &mut self,
        observations: &[Observation],
        now_ms: u64,
        expired: &mut Vec<FlowRecord>,
    ) {
        let mut hashes = [0u64; CHUNK];
        for chunk in observations.chunks(CHUNK) {
            // Each bucket's header is requested as soon as its hash is known, so the
            // hashing of the rest of the chunk overlaps the memory latency.
            for (hash, obs) in hashes.iter_mut().zip(chunk) {
                *hash = flow_hash(&obs.key);
                self.prefetch_header(*hash);
            }
            self.update_chunk(chunk, &hashes[..chunk.len()], now_ms, expired);
        }
    }

    /// Like [`FlowShard::update_burst`] with the caller's hashes (e.g. the NIC's RSS hash),
    /// one per observation. A shard must be fed one kind of hash only: the same key must
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
            for ((w, &h), obs) in wide.iter_mut().zip(chunk_hashes).zip(chunk) {
                // Bucket from the hash's low bits. A symmetric RSS key gives both directions
                // of a conversation one hash; folding the ports into the tag keeps them from
                // matching each other's tag (and costing a key comparison) in their bucket.
                let ports = u32::from(obs.key.src_port) << 16 | u32::from(obs.key.dst_port);
                *w = u64::from(h ^ ports) << 32 | u64::from(h);
                self.prefetch_header(*w);
            }
            self.update_chunk(chunk, &wide[..chunk.len()], now_ms, expired);
        }
    }

    fn update_chunk(
        &mut self,
        chunk: &[Observation],
        hashes: &[u64],
        now_ms: u64,
        expired: &mut Vec<FlowRecord>,
    ) {
        match self.bucket_size {
            8 => self.update_chunk_in::<8>(chunk, hashes, now_ms, expired),
            _ => self.update_chunk_in::<16>(chunk, hashes, now_ms, expired),
        }
    }

    fn update_chunk_in<const B: usize>(
        &mut self,
        chunk: &[Observation],
        hashes: &[u64],
        now_ms: u64,
        expired: &mut Vec<FlowRecord>,
    ) {
        // With the headers on their way, find each packet's likely slot (its key's, or the
        // free one it would take) and prefetch that entry. Only a hint: the update below
        // looks again, as earlier packets of the chunk may change the bucket.
        for &hash in hashes {
            let bucket = self.bucket_of(hash);
            let tags = self.tags::<B>(bucket);
            let candidates = mask_of(tags, tag_of(hash)) | mask_of(tags, 0);
            if candidates != 0 {
                // 80-byte entries straddle two cache lines; the counters lie in the second.
                let entry = &self.entries[bucket * B + candidates.trailing_zeros() as usize];
                prefetch_read(&entry.key);
                prefetch_read(&entry.last_ms);
            }
        }
        for (obs, &hash) in chunk.iter().zip(hashes) {
            self.update_one::<B>(obs, hash, now_ms, expired);
        }
    }

    #[inline(always)]
    fn prefetch_header(&self, hash: u64) {
        let first_line = self.bucket_of(hash) * self.bucket_size / 8;
        prefetch_read(&self.headers[first_line]);
        if self.bucket_size == 16 {
            prefetch_read(&self.headers[first_line + 1]);
        }
    }

    #[inline]
    fn bucket_of(&self, hash: u64) -> usize {
        hash as usize & self.bucket_mask
    }

    /// The bucket's tags: its header's first B words.
    #[inline(always)]
    fn tags<const B: usize>(&self, bucket: usize) -> &[u32; B] {
        match self.headers[bucket * B / 8].0[..B].try_into() {
            Ok(tags) => tags,
            Err(_) => unreachable!("a bucket's tags fill the start of its header"),
        }
    }

    #[inline(always)]
    fn tags_and_hints<const B: usize>(&self, bucket: usize) -> (&[u32; B], &[u32; B]) {
        // B = 8: one line, tags then hints. B = 16: a line of tags, then a line of hints.
        let first = bucket * B / 8;
        let tags = &self.headers[first].0[..B];
        let hints = &self.headers[first + B / 16].0[B % 16..B % 16 + B];
        match (tags.try_into(), hints.try_into()) {
            (Ok(tags), Ok(hints)) => (tags, hints),
            _ => unreachable!("a header holds B tags then B hints"),
        }
    }

    /// Header line and word of a slot's tag; its hint is `B` words further on.
    #[inline(always)]
    fn header_word(&self, slot: usize) -> (usize, usize) {
        let word = 2 * slot - slot % self.bucket_size;
        (word / 16, word % 16)
    }

    #[inline(always)]
    fn tag(&self, slot: usize) -> u32 {
        let (line, word) = self.header_word(slot);
        self.headers[line].0[word]
    }

    #[inline(always)]
    fn set_tag(&mut self, slot: usize, tag: u32) {
        let (line, word) = self.header_word(slot);
        self.headers[line].0[word] = tag;
    }

    /// Records the deadline of the flow in `slot` beside its tag, so the sweep can pass
    /// over live flows without reading their entries.
    #[inline(always)]
    fn set_hint(&mut self, slot: usize) {
        let hint = hint_of(self.deadline(&self.entries[slot]));
        let word = 2 * slot - slot % self.bucket_size + self.bucket_size;
        self.headers[word / 16].0[word % 16] = hint;
    }

    #[inline]
    fn deadline(&self, e: &Entry) -> u64 {
        let idle_at = e.last_ms.saturating_add(self.inactive_timeout_ms);
        let active_at = e.first_ms.saturating_add(self.active_timeout_ms);
        idle_at.min(active_at)
    }

    /// The end reason of a flow past its deadline.
    #[inline]
    fn time_reason(&self, e: &Entry) -> EndReason {
        let idle_at = e.last_ms.saturating_add(self.inactive_timeout_ms);
        let active_at = e.first_ms.saturating_add(self.active_timeout_ms);
        if idle_at <= active_at {
            EndReason::Idle
        } else {
            EndReason::Active
        }
    }

    #[inline(always)]
    fn update_one<const B: usize>(
        &mut self,
        obs: &Observation,
        hash: u64,
        now_ms: u64,
        expired: &mut Vec<FlowRecord>,
    ) {
        let time = if obs.timestamp_ms > now_ms {
            self.stats.future_timestamps += 1;
            now_ms
        } else {
            obs.timestamp_ms
        };
        self.stats.packets += 1;
        self.stats.octets += u64::from(obs.octets);
        let ends_flow = self.tcp_end_expiry
            && obs.key.protocol == TCP
            && obs.tcp_flags & (TCP_FIN | TCP_RST) != 0;

        let bucket = self.bucket_of(hash);
        let base = bucket * B;
        let tag = tag_of(hash);
        let tags = self.tags::<B>(bucket);
        let free_slots = mask_of(tags, 0);
        let mut matches = mask_of(tags, tag);
        let mut found = None;
        while matches != 0 {
            let slot = base + matches.trailing_zeros() as usize;
            if self.entries[slot].key == obs.key {
                found = Some(slot);
                break;
            }
            matches &= matches - 1;
        }

        if let Some(slot) = found {
            let entry = &self.entries[slot];
            if time >= self.deadline(entry) {
                let entry = *entry;
                self.emit(&entry, self.time_reason(&entry), expired);
                self.entries[slot] = Entry::start(obs, time);
                self.stats.flows_created += 1;
            } else {
                if time < entry.last_ms {
                    self.stats.reordered += 1;
                }
                self.entries[slot].add(obs, time);
            }
            if ends_flow {
                let entry = self.entries[slot];
                self.emit(&entry, EndReason::EndOfFlow, expired);
                self.set_tag(slot, 0);
                self.len -= 1;
            } else {
                self.set_hint(slot);
            }
            return;
        }

        self.stats.flows_created += 1;
        if ends_flow {
            // A one-packet flow that ends at once needs no slot and so evicts nothing.
            self.emit(&Entry::start(obs, time), EndReason::EndOfFlow, expired);
            return;
        }
        let slot = if free_slots != 0 {
            base + free_slots.trailing_zeros() as usize
        } else {
            self.make_room(base, time, expired)
        };
        self.entries[slot] = Entry::start(obs, time);
        self.set_tag(slot, tag);
        self.set_hint(slot);
        self.len += 1;
    }

    /// Frees a slot of the full bucket at `base` for a packet at `time`: exports the flows
    /// already past their deadline, or else evicts the least recently used one.
    #[cold]
    fn make_room(&mut self, base: usize, time: u64, expired: &mut Vec<FlowRecord>) -> usize {
        let mut free = None;
        for slot in base..base + self.bucket_size {
            let entry = self.entries[slot];
            if time >= self.deadline(&entry) {
                self.emit(&entry, self.time_reason(&entry), expired);
                self.set_tag(slot, 0);
                self.len -= 1;
                free.get_or_insert(slot);
            }
        }
        if let Some(slot) = free {
            return slot;
        }
        let victim = (base..base + self.bucket_size)
            .min_by_key(|&slot| (self.entries[slot].last_ms, self.entries[slot].key))
            .unwrap_or(base);
        let entry = self.entries[victim];
        self.emit(&entry, EndReason::LackOfResources, expired);
        self.stats.evictions += 1;
        self.set_tag(victim, 0);
        self.len -= 1;
        victim
    }

    #[inline]
    fn emit(&mut self, entry: &Entry, reason: EndReason, expired: &mut Vec<FlowRecord>) {
        self.stats.expired[reason as usize] += 1;
        expired.push(FlowRecord {
            key: entry.key,
            packets: entry.packets,
            octets: entry.octets,
            first_ms: entry.first_ms,
            last_ms: entry.last_ms,
            tcp_flags: entry.tcp_flags,
            min_ttl: entry.min_ttl,
            max_ttl: entry.max_ttl,
            end_reason: reason,
            sampling: self.sampling,
        });
    }

    /// Incremental sweep: examines the next `expiry_budget` slots (rounded up to whole
    /// buckets, wrapping around the table) and exports every flow whose deadline is at or
    /// before `now_ms`, idle or active. Returns how many it exported.
    pub fn expire(&mut self, now_ms: u64, expired: &mut Vec<FlowRecord>) -> usize {
        self.sweep(self.expiry_budget, now_ms, expired)
    }

    /// A full sweep of the table at `now_ms` (the work of `capacity / expiry_budget` calls
    /// of [`FlowShard::expire`]): afterwards no flow past its deadline remains.
    pub fn expire_all(&mut self, now_ms: u64, expired: &mut Vec<FlowRecord>) -> usize {
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
            self.sweep_cursor = (bucket + 1) & self.bucket_mask;
            // Headers are read in order; ask for the ones a few buckets on already.
            prefetch_read(&self.headers[(bucket * B / 8 + SWEEP_PREFETCH_LINES) % lines]);
            // A flow can be due only if its hint (deadline rounded down) is not after now's.
            let (tags, hints) = self.tags_and_hints::<B>(bucket);
            let occupied = !mask_of(tags, 0);
            let hinted_due = hints
                .iter()
                .enumerate()
                .fold(0u32, |m, (i, &h)| m | u32::from(h <= now_hint) << i);
            let mut due = occupied & hinted_due;
            while due != 0 {
                let slot = bucket * B + due.trailing_zeros() as usize;
                due &= due - 1;
                let entry = self.entries[slot];
                if now_ms >= self.deadline(&entry) {
                    self.emit(&entry, self.time_reason(&entry), expired);
                    self.set_tag(slot, 0);
                    self.len -= 1;
                    count += 1;
                }
            }
        }
        count
    }

    /// Forced end: exports every flow (reason forced) and leaves the shard empty.
    pub fn flush(&mut self, expired: &mut Vec<FlowRecord>) {
        for slot in 0..self.entries.len() {
            if self.tag(slot) != 0 {
                let entry = self.entries[slot];
                self.emit(&entry, EndReason::Forced, expired);
                self.set_tag(slot, 0);
            }
        }
        self.len = 0;
        self.sweep_cursor = 0;
    }
}

/// A deadline rounded down to units of 1.024 s, as 32 bits (enough until the year 2109).
#[inline(always)]
fn hint_of(deadline_ms: u64) -> u32 {
    (deadline_ms >> 10).min(u64::from(u32::MAX)) as u32
}

/// Bit `i` set iff `tags[i] == tag`; written branch-free so it compiles to vector compares.
#[inline(always)]
fn mask_of<const B: usize>(tags: &[u32; B], tag: u32) -> u32 {
    tags.iter()
        .enumerate()
        .fold(0, |mask, (i, &t)| mask | u32::from(t == tag) << i)
}

/// The tag stored for a hash: its high half, with 0 (free slot) moved to 1.
#[inline]
fn tag_of(hash: u64) -> u32 {
    ((hash >> 32) as u32).max(1)
}

impl Entry {
    #[inline]
    fn start(obs: &Observation, time: u64) -> Entry {
        Entry {
            key: obs.key,
            tcp_flags: obs.tcp_flags,
            min_ttl: obs.ttl,
            max_ttl: obs.ttl,
            _pad: 0,
            packets: 1,
            octets: u64::from(obs.octets),
            first_ms: time,
            last_ms: time,
        }
    }

    #[inline]
    fn add(&mut self, obs: &Observation, time: u64) {
        self.packets += 1;
        self.octets += u64::from(obs.octets);
        self.first_ms = self.first_ms.min(time);
        self.last_ms = self.last_ms.max(time);
        self.tcp_flags |= obs.tcp_flags;
        self.min_ttl = self.min_ttl.min(obs.ttl);
        self.max_ttl = self.max_ttl.max(obs.ttl);
    }
}
