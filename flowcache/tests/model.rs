//! The shard against a reference model: a plain `HashMap` of flows and the expiry rules of
//! the README written out directly, with no table, no sweep and no bursts.

use std::collections::HashMap;

use flowcache::{
    CacheConfig, EndReason, FlowKey, FlowRecord, FlowShard, Observation, SamplingInfo, flow_hash,
};
use proptest::prelude::*;

const T0: u64 = 1_700_000_000_000;

#[derive(Clone, Copy, Debug)]
struct RefFlow {
    first: u64,
    last: u64,
    packets: u64,
    octets: u64,
    flags: u8,
    min_ttl: u8,
    max_ttl: u8,
}

impl RefFlow {
    fn idle_at(&self, c: &CacheConfig) -> u64 {
        self.last + c.inactive_timeout_ms
    }
    fn active_at(&self, c: &CacheConfig) -> u64 {
        self.first + c.active_timeout_ms
    }
    /// `Some(reason)` if the flow has ended by time `t`.
    fn ended_by(&self, t: u64, c: &CacheConfig) -> Option<EndReason> {
        let (idle, active) = (self.idle_at(c), self.active_at(c));
        if t < idle && t < active {
            None
        } else if idle <= active {
            Some(EndReason::Idle)
        } else {
            Some(EndReason::Active)
        }
    }
    fn record(&self, key: FlowKey, reason: EndReason) -> FlowRecord {
        FlowRecord {
            key,
            packets: self.packets,
            octets: self.octets,
            first_ms: self.first,
            last_ms: self.last,
            tcp_flags: self.flags,
            min_ttl: self.min_ttl,
            max_ttl: self.max_ttl,
            end_reason: reason,
            sampling: SamplingInfo::default(),
            label: 0,
            extras: None,
        }
    }
}

/// Records for `packets` (in time order, or out of order no further than the shard is swept
/// at: see [`shuffled_within_bursts`]), then a sweep at `end` and a forced flush.
fn reference(packets: &[Observation], c: &CacheConfig, end: u64) -> Vec<FlowRecord> {
    reference_and_reordered(packets, c, end).0
}

/// [`reference`], and how many packets joined a live record earlier than its last packet.
fn reference_and_reordered(
    packets: &[Observation],
    c: &CacheConfig,
    end: u64,
) -> (Vec<FlowRecord>, u64) {
    let mut flows: HashMap<FlowKey, RefFlow> = HashMap::new();
    let mut out = Vec::new();
    let mut reordered = 0;
    for p in packets {
        let t = p.timestamp_ms;
        if let Some(f) = flows.get(&p.key)
            && let Some(reason) = f.ended_by(t, c)
        {
            out.push(f.record(p.key, reason));
            flows.remove(&p.key);
        }
        let f = flows.entry(p.key).or_insert(RefFlow {
            first: t,
            last: t,
            packets: 0,
            octets: 0,
            flags: 0,
            min_ttl: u8::MAX,
            max_ttl: 0,
        });
        if t < f.last {
            reordered += 1;
        }
        // A late packet (out of order within its burst) widens the record, never shrinks it.
        f.first = f.first.min(t);
        f.last = f.last.max(t);
        f.packets += 1;
        f.octets += u64::from(p.octets);
        f.flags |= p.tcp_flags;
        f.min_ttl = f.min_ttl.min(p.ttl);
        f.max_ttl = f.max_ttl.max(p.ttl);
        let fin_or_rst = p.tcp_flags & 0x05 != 0;
        if c.tcp_end_expiry && p.key.protocol == 6 && fin_or_rst {
            out.push(f.record(p.key, EndReason::EndOfFlow));
            flows.remove(&p.key);
        }
    }
    for (key, f) in flows {
        out.push(f.record(key, f.ended_by(end, c).unwrap_or(EndReason::Forced)));
    }
    (out, reordered)
}

/// How the shard is driven: burst sizes, sweeps between bursts, and which entry point.
#[derive(Clone, Debug)]
struct Schedule {
    bursts: Vec<usize>,
    sweeps: Vec<(u8, usize)>,
    entry: Entry,
}

#[derive(Clone, Copy, Debug)]
enum Entry {
    PerPacket,
    /// `update_interleaved` with nothing next: the worker draining its held burst.
    Drain,
    /// The caller's hashes, deliberately weak so unrelated flows share buckets and tags.
    WeakHash,
    /// The worker's call: `hash_burst`, then `update_interleaved` with the next burst's
    /// hashes to prefetch.
    Interleaved,
}

fn weak_hash(key: &FlowKey) -> u32 {
    (flow_hash(key) % 3) as u32
}

fn run_shard(
    packets: &[Observation],
    c: &CacheConfig,
    s: &Schedule,
    end: u64,
) -> (Vec<FlowRecord>, FlowShard) {
    let mut shard = FlowShard::new(c, SamplingInfo::default());
    let mut out = Vec::new();
    let mut rest = packets;
    let mut i = 0;
    while !rest.is_empty() {
        let n = s.bursts[i % s.bursts.len()].min(rest.len());
        let (burst, tail) = rest.split_at(n);
        let now = burst.iter().map(|p| p.timestamp_ms).max().unwrap_or(T0);
        match s.entry {
            Entry::Interleaved => {
                let hashes_of = |b: &[Observation]| {
                    let mut h = vec![0u64; b.len()];
                    FlowShard::hash_burst(b, &mut h);
                    h
                };
                let next = &tail[..s.bursts[(i + 1) % s.bursts.len()].min(tail.len())];
                let (hashes, next_hashes) = (hashes_of(burst), hashes_of(next));
                shard.update_interleaved(burst, &hashes, now, &next_hashes, &mut out);
            }
            Entry::PerPacket => burst.iter().for_each(|p| shard.update(p, now, &mut out)),
            Entry::Drain => {
                let mut hashes = vec![0u64; burst.len()];
                FlowShard::hash_burst(burst, &mut hashes);
                shard.update_interleaved(burst, &hashes, now, &[], &mut out);
            }
            Entry::WeakHash => {
                let hashes: Vec<u32> = burst.iter().map(|p| weak_hash(&p.key)).collect();
                shard.update_burst_hashed(burst, &hashes, now, &mut out);
            }
        }
        let (calls, budget_scale) = s.sweeps[i % s.sweeps.len()];
        for _ in 0..calls {
            if budget_scale == 0 {
                shard.expire(now, &mut out);
            } else {
                shard.expire_all(now, &mut out);
            }
        }
        rest = tail;
        i += 1;
    }
    shard.expire_all(end, &mut out);
    shard.flush(&mut out);
    (out, shard)
}

/// `packets` reordered inside each burst `s` will hand the shard, by `order` (one sort key
/// per packet). The shard is swept only at a burst's latest time, so no packet arrives
/// after a sweep later than itself: the reference model, which has no sweeps, still
/// applies. That is the worker's case: a driver or a tap hands a burst over out of order.
fn shuffled_within_bursts(
    packets: &[Observation],
    s: &Schedule,
    order: &[u32],
) -> Vec<Observation> {
    let mut out = Vec::with_capacity(packets.len());
    let mut rest = packets;
    let mut i = 0;
    while !rest.is_empty() {
        let n = s.bursts[i % s.bursts.len()].min(rest.len());
        let (burst, tail) = rest.split_at(n);
        let start = out.len();
        let mut keyed: Vec<(u32, Observation)> = burst
            .iter()
            .enumerate()
            .map(|(j, p)| (order[(start + j) % order.len()], *p))
            .collect();
        keyed.sort_by_key(|&(k, _)| k);
        out.extend(keyed.into_iter().map(|(_, p)| p));
        rest = tail;
        i += 1;
    }
    out
}

fn sorted(mut records: Vec<FlowRecord>) -> Vec<FlowRecord> {
    records.sort_by_key(|r| {
        (
            r.key,
            r.first_ms,
            r.last_ms,
            r.packets,
            r.octets,
            r.end_reason,
            r.tcp_flags,
            r.min_ttl,
            r.max_ttl,
        )
    });
    records
}

fn flow_key(index: u8, protocol: u8) -> FlowKey {
    let mut k = FlowKey {
        protocol,
        ip_version: if index.is_multiple_of(5) { 6 } else { 4 },
        src_port: 1000 + u16::from(index),
        dst_port: if protocol == 1 { 8 << 8 } else { 80 },
        ..FlowKey::default()
    };
    k.src_addr[0] = 10;
    k.src_addr[3] = index;
    k.dst_addr[0] = 192;
    k
}

prop_compose! {
    fn config()(inactive in 1u64..60, active in 1u64..300, tcp_end in any::<bool>(),
                budget in 1usize..64, bucket_size in prop_oneof![Just(8usize), Just(16)]) -> CacheConfig {
        CacheConfig {
            capacity: 1024,
            bucket_size,
            inactive_timeout_ms: inactive,
            active_timeout_ms: active,
            tcp_end_expiry: tcp_end,
            expiry_budget: budget,
        }
    }
}

/// Packets in time order over `keys` flows; gaps straddle the timeouts, flags include
/// FIN and RST now and then.
fn packets(keys: u8, max_len: usize) -> impl Strategy<Value = Vec<Observation>> {
    packets_with_gaps(
        keys,
        max_len,
        prop_oneof![6 => 0u64..5, 3 => 5u64..40, 1 => 40u64..120].boxed(),
    )
}

/// Like [`packets`], with the gaps between packets drawn from `gaps` (ms).
fn packets_with_gaps(
    keys: u8,
    max_len: usize,
    gaps: BoxedStrategy<u64>,
) -> impl Strategy<Value = Vec<Observation>> {
    let protocols = proptest::collection::vec(
        prop_oneof![4 => Just(6u8), 3 => Just(17u8), 1 => Just(1u8)],
        keys as usize,
    );
    let steps = proptest::collection::vec(
        (
            0..keys,
            gaps,
            20u32..1500,
            prop_oneof![8 => Just(0x10u8), 1 => Just(0x02), 1 => Just(0x11), 1 => Just(0x14), 1 => Just(0x04)],
            1u8..=255,
        ),
        1..max_len,
    );
    (protocols, steps).prop_map(|(protocols, steps)| {
        let mut time = T0;
        steps
            .into_iter()
            .map(|(k, gap, octets, flags, ttl)| {
                time += gap;
                let protocol = protocols[k as usize];
                Observation {
                    key: flow_key(k, protocol),
                    octets,
                    tcp_flags: if protocol == 6 { flags } else { 0 },
                    ttl,
                    timestamp_ms: time,
                }
            })
            .collect()
    })
}

/// `packets` (drawn over 12 flows) folded onto `keys` flows, so flows meet again often.
fn folded_onto(packets: Vec<Observation>, keys: u8) -> Vec<Observation> {
    packets
        .into_iter()
        .map(|mut p| {
            let index = (p.key.src_port - 1000) as u8 % keys;
            p.key = flow_key(index, p.key.protocol);
            p
        })
        .collect()
}

fn schedule() -> impl Strategy<Value = Schedule> {
    (
        proptest::collection::vec(1usize..70, 1..6),
        proptest::collection::vec((0u8..3, 0usize..4), 1..6),
        prop_oneof![
            Just(Entry::PerPacket),
            Just(Entry::Drain),
            Just(Entry::WeakHash),
            Just(Entry::Interleaved)
        ],
    )
        .prop_map(|(bursts, sweeps, entry)| Schedule {
            bursts,
            // Mostly budgeted sweeps; now and then a full one.
            sweeps: sweeps
                .into_iter()
                .map(|(calls, kind)| (calls, usize::from(kind == 3)))
                .collect(),
            entry,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn shard_equals_the_reference_model_flow_for_flow(
        c in config(),
        keys in 1u8..9,
        seed_packets in packets(12, 300),
        s in schedule(),
        tail in 0u64..100,
    ) {
        let packets = folded_onto(seed_packets, keys);
        let end = packets.last().map_or(T0, |p| p.timestamp_ms) + tail;
        let (records, shard) = run_shard(&packets, &c, &s, end);
        prop_assert_eq!(shard.stats().evictions, 0, "model assumes no eviction");
        let expected = reference(&packets, &c, end);
        prop_assert_eq!(sorted(records.clone()), sorted(expected));

        prop_assert_eq!(shard.len(), 0);
        let packets_in: u64 = packets.len() as u64;
        let octets_in: u64 = packets.iter().map(|p| u64::from(p.octets)).sum();
        prop_assert_eq!(records.iter().map(|r| r.packets).sum::<u64>(), packets_in);
        prop_assert_eq!(records.iter().map(|r| r.octets).sum::<u64>(), octets_in);
        let stats = shard.stats();
        prop_assert_eq!((stats.packets, stats.octets), (packets_in, octets_in));
        prop_assert_eq!(stats.flows_created, records.len() as u64);
        for reason in EndReason::ALL {
            let n = records.iter().filter(|r| r.end_reason == reason).count() as u64;
            prop_assert_eq!(stats.expired(reason), n, "{:?}", reason);
        }
    }

    #[test]
    fn packets_out_of_order_within_a_burst_match_the_reference_model(
        c in config(),
        keys in 1u8..6,
        seed_packets in packets(12, 300),
        s in schedule(),
        order in proptest::collection::vec(any::<u32>(), 1..300),
        tail in 0u64..100,
    ) {
        let packets = shuffled_within_bursts(&folded_onto(seed_packets, keys), &s, &order);
        let end = packets.iter().map(|p| p.timestamp_ms).max().unwrap_or(T0) + tail;
        let (records, shard) = run_shard(&packets, &c, &s, end);
        prop_assert_eq!(shard.stats().evictions, 0, "model assumes no eviction");
        let (expected, reordered) = reference_and_reordered(&packets, &c, end);
        prop_assert_eq!(sorted(records), sorted(expected));
        prop_assert_eq!(shard.len(), 0);
        prop_assert_eq!(shard.stats().reordered, reordered);
    }

    #[test]
    fn a_full_cache_loses_no_accounting_and_splitting_bursts_changes_nothing(
        c in config(),
        bucket_size in prop_oneof![Just(8usize), Just(16)],
        capacity in 8usize..64,
        packets in packets(120, 400),
        coarseness in 1u64..12,
        s1 in schedule(),
        s2 in schedule(),
        tail in 0u64..100,
    ) {
        let c = CacheConfig { capacity, bucket_size, ..c };
        // Coarse clocks make many packets share a millisecond, so LRU ties are common.
        let packets: Vec<Observation> = packets
            .into_iter()
            .map(|p| Observation { timestamp_ms: p.timestamp_ms / coarseness * coarseness, ..p })
            .collect();
        let end = packets.last().map_or(T0, |p| p.timestamp_ms) + tail;
        // The weak hash files flows differently from ahash, so it is compared with itself.
        let s2 = match (s1.entry, s2.entry) {
            (Entry::WeakHash, _) => Schedule { entry: Entry::WeakHash, ..s2 },
            (_, Entry::WeakHash) => Schedule { entry: s1.entry, ..s2 },
            _ => s2,
        };
        let (a, shard_a) = run_shard(&packets, &c, &s1, end);
        let (b, shard_b) = run_shard(&packets, &c, &s2, end);

        let mut truth: HashMap<FlowKey, (u64, u64)> = HashMap::new();
        for p in &packets {
            let t = truth.entry(p.key).or_default();
            t.0 += 1;
            t.1 += u64::from(p.octets);
        }
        let mut seen: HashMap<FlowKey, (u64, u64)> = HashMap::new();
        for r in &a {
            let t = seen.entry(r.key).or_default();
            t.0 += r.packets;
            t.1 += r.octets;
            prop_assert!(r.first_ms <= r.last_ms);
            prop_assert!(r.packets >= 1);
        }
        prop_assert_eq!(seen, truth);
        prop_assert_eq!(shard_a.len(), 0);
        prop_assert_eq!(shard_a.stats().flows_created, a.len() as u64);
        prop_assert_eq!(shard_a.stats().evictions, shard_a.stats().expired(EndReason::LackOfResources));

        prop_assert_eq!(sorted(a), sorted(b));
        prop_assert_eq!(shard_a.stats(), shard_b.stats());
    }

    #[test]
    fn clock_jumps_of_hours_and_days_change_nothing(
        inactive in prop_oneof![1u64..60_000, 3_600_000u64..7_200_000],
        active in prop_oneof![1u64..600_000, 86_400_000u64..864_000_000],
        tcp_end in any::<bool>(),
        packets in packets_with_gaps(
            6,
            120,
            // Milliseconds, seconds, hours (past the hint horizon) and days (past 2^32 ms
            // in a few steps) between packets.
            prop_oneof![5 => 0u64..5, 2 => 1_000u64..60_000, 1 => 3_600_000u64..10_800_000,
                        1 => 86_400_000u64..1_728_000_000].boxed(),
        ),
        s in schedule(),
        tail in prop_oneof![0u64..100, 86_400_000u64..172_800_000],
    ) {
        let c = CacheConfig {
            capacity: 1024,
            bucket_size: 16,
            inactive_timeout_ms: inactive,
            active_timeout_ms: active,
            tcp_end_expiry: tcp_end,
            expiry_budget: 64,
        };
        let end = packets.last().map_or(T0, |p| p.timestamp_ms) + tail;
        let (records, shard) = run_shard(&packets, &c, &s, end);
        prop_assert_eq!(sorted(records), sorted(reference(&packets, &c, end)));
        prop_assert_eq!(shard.len(), 0);
    }
}
