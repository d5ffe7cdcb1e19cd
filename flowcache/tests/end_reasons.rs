//! Crafted packet sequences, one per end reason, and the shard's bookkeeping around them.

use std::collections::HashMap;

use flowcache::{
    CacheConfig, ENTRY_BYTES, EndReason, FlowKey, FlowRecord, FlowShard, Observation,
    SamplingAlgorithm, SamplingInfo,
};

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;
const T0: u64 = 1_700_000_000_000;

fn key(n: u32, protocol: u8) -> FlowKey {
    let mut k = FlowKey {
        protocol,
        ip_version: 4,
        src_port: 40_000,
        dst_port: 443,
        ..FlowKey::default()
    };
    k.src_addr[..4].copy_from_slice(&n.to_be_bytes());
    k.dst_addr[..4].copy_from_slice(&[192, 0, 2, 1]);
    k
}

fn packet(key: FlowKey, time: u64, octets: u32, flags: u8) -> Observation {
    Observation {
        key,
        octets,
        tcp_flags: flags,
        ttl: 64,
        timestamp_ms: time,
    }
}

fn shard(config: CacheConfig) -> FlowShard {
    FlowShard::new(&config, SamplingInfo::default())
}

fn small() -> CacheConfig {
    CacheConfig {
        capacity: 1024,
        ..CacheConfig::default()
    }
}

fn feed(shard: &mut FlowShard, packets: &[Observation]) -> Vec<FlowRecord> {
    let mut out = Vec::new();
    for p in packets {
        shard.update(p, p.timestamp_ms, &mut out);
    }
    out
}

#[test]
fn fin_counts_the_packet_then_ends_the_flow() {
    let mut s = shard(small());
    let k = key(1, 6);
    let packets = [
        packet(k, T0, 60, SYN),
        packet(k, T0 + 10, 52, ACK),
        packet(k, T0 + 20, 1500, ACK),
        packet(k, T0 + 30, 52, FIN | ACK),
    ];
    let out = feed(&mut s, &packets);
    assert_eq!(out.len(), 1);
    let r = out[0].clone();
    assert_eq!(r.end_reason, EndReason::EndOfFlow);
    assert_eq!((r.packets, r.octets), (4, 60 + 52 + 1500 + 52));
    assert_eq!((r.first_ms, r.last_ms), (T0, T0 + 30));
    assert_eq!(r.tcp_flags, SYN | ACK | FIN);
    assert!(s.is_empty());
    // The peer's last ACK after the FIN starts a new flow of its own.
    let out = feed(&mut s, &[packet(k, T0 + 40, 52, ACK)]);
    assert!(out.is_empty());
    assert_eq!(s.len(), 1);
    assert_eq!(s.stats().flows_created, 2);
    assert_eq!(s.stats().expired(EndReason::EndOfFlow), 1);
}

#[test]
fn rst_ends_the_flow_even_as_its_first_packet() {
    let mut s = shard(small());
    let k = key(2, 6);
    let out = feed(&mut s, &[packet(k, T0, 40, RST)]);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].end_reason, out[0].packets, out[0].tcp_flags),
        (EndReason::EndOfFlow, 1, RST)
    );
    assert!(s.is_empty());
    let out = feed(
        &mut s,
        &[packet(k, T0 + 1, 40, ACK), packet(k, T0 + 2, 40, RST | ACK)],
    );
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].packets, out[0].first_ms), (2, T0 + 1));
}

#[test]
fn fin_on_udp_or_with_tcp_end_expiry_off_does_not_end_a_flow() {
    let mut s = shard(small());
    assert!(feed(&mut s, &[packet(key(3, 17), T0, 100, FIN)]).is_empty());
    let mut s = shard(CacheConfig {
        tcp_end_expiry: false,
        ..small()
    });
    let k = key(3, 6);
    assert!(
        feed(
            &mut s,
            &[packet(k, T0, 40, SYN), packet(k, T0 + 1, 40, FIN)]
        )
        .is_empty()
    );
    let mut out = Vec::new();
    s.flush(&mut out);
    assert_eq!((out[0].packets, out[0].end_reason), (2, EndReason::Forced));
}

#[test]
fn idle_flow_ends_by_sweep_exactly_at_the_inactive_timeout() {
    let mut s = shard(CacheConfig {
        inactive_timeout_ms: 15_000,
        ..small()
    });
    let k = key(4, 17);
    feed(
        &mut s,
        &[packet(k, T0, 100, 0), packet(k, T0 + 1_000, 100, 0)],
    );
    let mut out = Vec::new();
    assert_eq!(s.expire_all(T0 + 15_999, &mut out), 0);
    assert_eq!(s.expire_all(T0 + 16_000, &mut out), 1);
    assert_eq!(
        (out[0].end_reason, out[0].packets, out[0].last_ms),
        (EndReason::Idle, 2, T0 + 1_000)
    );
    assert!(s.is_empty());
    assert_eq!(s.stats().expired(EndReason::Idle), 1);
}

#[test]
fn a_packet_after_the_idle_gap_ends_the_old_record_and_starts_a_new_one() {
    let mut s = shard(CacheConfig {
        inactive_timeout_ms: 15_000,
        ..small()
    });
    let k = key(5, 17);
    let out = feed(
        &mut s,
        &[
            packet(k, T0, 100, 0),
            packet(k, T0 + 14_999, 100, 0), // gap just under the timeout: same flow
            packet(k, T0 + 29_999, 100, 0), // gap of exactly the timeout: new flow
        ],
    );
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].end_reason, out[0].packets, out[0].last_ms),
        (EndReason::Idle, 2, T0 + 14_999)
    );
    assert_eq!(s.len(), 1);
}

#[test]
fn a_one_hour_flow_with_a_30_minute_active_timeout_gives_exactly_two_records() {
    let mut s = shard(CacheConfig {
        active_timeout_ms: 1_800_000,
        ..small()
    });
    let k = key(6, 6);
    // One packet a second for an hour: T0 .. T0 + 3599 s.
    let packets: Vec<Observation> = (0..3600u64)
        .map(|i| packet(k, T0 + i * 1000, 1000 + (i % 2) as u32, ACK))
        .collect();
    let mut out = Vec::new();
    for chunk in packets.chunks(64) {
        let now = chunk.last().unwrap().timestamp_ms;
        account_burst(&mut s, chunk, now, &mut out);
        s.expire(now, &mut out);
    }
    let end = T0 + 3_599_000;
    s.expire_all(end + 15_000, &mut out);
    assert_eq!(out.len(), 2, "{out:?}");
    let (a, b) = (out[0].clone(), out[1].clone());
    assert_eq!(
        (a.end_reason, a.first_ms, a.last_ms, a.packets),
        (EndReason::Active, T0, T0 + 1_799_000, 1800)
    );
    // The second piece reaches its active deadline (T0 + 3600 s) before its idle one
    // (T0 + 3614 s), so it too ends as active.
    assert_eq!(
        (b.end_reason, b.first_ms, b.last_ms, b.packets),
        (EndReason::Active, T0 + 1_800_000, end, 1800)
    );
    let octets: u64 = packets.iter().map(|p| u64::from(p.octets)).sum();
    assert_eq!(a.octets + b.octets, octets);
    assert_eq!(s.stats().flows_created, 2);
}

#[test]
fn the_sweep_ends_an_overlong_flow_as_active_at_the_active_timeout() {
    let mut s = shard(CacheConfig {
        inactive_timeout_ms: 15_000,
        active_timeout_ms: 60_000,
        ..small()
    });
    let k = key(7, 17);
    let packets: Vec<Observation> = (0..=50u64)
        .map(|i| packet(k, T0 + i * 1000, 10, 0))
        .collect();
    feed(&mut s, &packets);
    let mut out = Vec::new();
    // Idle deadline is T0 + 65 s, active deadline T0 + 60 s: the active one comes first.
    assert_eq!(s.expire_all(T0 + 59_999, &mut out), 0);
    assert_eq!(s.expire_all(T0 + 60_000, &mut out), 1);
    assert_eq!((out[0].end_reason, out[0].packets), (EndReason::Active, 51));
}

#[test]
fn forced_flush_exports_everything_and_empties_the_cache() {
    let mut s = shard(small());
    let packets: Vec<Observation> = (0..300u32)
        .map(|i| packet(key(i % 100, 17), T0 + u64::from(i), 64, 0))
        .collect();
    feed(&mut s, &packets);
    assert_eq!(s.len(), 100);
    let mut out = Vec::new();
    s.flush(&mut out);
    assert_eq!(out.len(), 100);
    assert!(
        out.iter()
            .all(|r| r.end_reason == EndReason::Forced && r.packets == 3)
    );
    assert_eq!(s.len(), 0);
    assert_eq!(s.stats().expired(EndReason::Forced), 100);
    s.flush(&mut out);
    assert_eq!(out.len(), 100, "a second flush finds nothing");
}

#[test]
fn a_flood_into_a_small_cache_evicts_without_losing_any_packet() {
    let config = CacheConfig {
        capacity: 64,
        bucket_size: 8,
        ..CacheConfig::default()
    };
    let mut s = shard(config);
    let mut truth: HashMap<FlowKey, (u64, u64)> = HashMap::new();
    let mut out = Vec::new();
    let mut burst = Vec::new();
    for i in 0..20_000u32 {
        // Mostly new flows, with some returning ones so evicted flows come back.
        let k = key(if i % 4 == 0 { i % 97 } else { i }, 17);
        let p = packet(k, T0 + u64::from(i / 10), 40 + i % 1400, 0);
        let t = truth.entry(k).or_default();
        t.0 += 1;
        t.1 += u64::from(p.octets);
        burst.push(p);
        if burst.len() == 32 {
            account_burst(&mut s, &burst, burst[31].timestamp_ms, &mut out);
            burst.clear();
        }
    }
    account_burst(&mut s, &burst, T0 + 2_000, &mut out);
    assert!(s.len() <= s.capacity());
    let evictions = s.stats().evictions;
    assert!(evictions > 10_000, "only {evictions} evictions");
    assert_eq!(
        out.iter()
            .filter(|r| r.end_reason == EndReason::LackOfResources)
            .count() as u64,
        evictions
    );
    assert_eq!(s.stats().expired(EndReason::LackOfResources), evictions);
    s.flush(&mut out);
    let mut seen: HashMap<FlowKey, (u64, u64)> = HashMap::new();
    for r in &out {
        let t = seen.entry(r.key).or_default();
        t.0 += r.packets;
        t.1 += r.octets;
    }
    assert_eq!(seen, truth);
    assert_eq!(s.stats().flows_created, out.len() as u64);
}

#[test]
fn a_full_bucket_evicts_its_least_recently_used_flow() {
    // One bucket of 8 slots: the ninth flow must evict.
    let mut s = shard(CacheConfig {
        capacity: 8,
        bucket_size: 8,
        ..CacheConfig::default()
    });
    let mut out = Vec::new();
    for i in 0..8u32 {
        s.update(
            &packet(key(i, 17), T0 + u64::from(i), 10, 0),
            T0 + 10,
            &mut out,
        );
    }
    // Refresh flow 0 so flow 1 becomes the least recently used.
    s.update(&packet(key(0, 17), T0 + 8, 10, 0), T0 + 10, &mut out);
    assert!(out.is_empty());
    s.update(&packet(key(8, 17), T0 + 9, 10, 0), T0 + 10, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].key, out[0].end_reason),
        (key(1, 17), EndReason::LackOfResources)
    );
    assert_eq!(s.len(), 8);
}

#[test]
fn a_full_bucket_prefers_ending_expired_flows_to_evicting() {
    let config = CacheConfig {
        capacity: 8,
        bucket_size: 8,
        inactive_timeout_ms: 1_000,
        ..CacheConfig::default()
    };
    let mut s = shard(config);
    let mut out = Vec::new();
    for i in 0..8u32 {
        let time = if i < 3 { T0 } else { T0 + 5_000 };
        s.update(&packet(key(i, 17), time, 10, 0), T0 + 5_000, &mut out);
    }
    s.update(&packet(key(8, 17), T0 + 5_500, 10, 0), T0 + 5_500, &mut out);
    assert_eq!(out.len(), 3, "the three idle flows, nothing evicted");
    assert!(out.iter().all(|r| r.end_reason == EndReason::Idle));
    assert_eq!(s.stats().evictions, 0);
    assert_eq!(s.len(), 6);
}

#[test]
fn the_sweep_does_bounded_work_and_covers_the_table_over_calls() {
    let config = CacheConfig {
        capacity: 4096,
        expiry_budget: 256,
        inactive_timeout_ms: 10,
        ..CacheConfig::default()
    };
    let mut s = shard(config);
    let mut out = Vec::new();
    for i in 0..1000u32 {
        s.update(&packet(key(i, 17), T0, 10, 0), T0, &mut out);
    }
    let calls = s.capacity() / 256;
    let mut total = 0;
    for _ in 0..calls {
        let n = s.expire(T0 + 10, &mut out);
        assert!(n <= 256);
        total += n;
    }
    assert_eq!(total, 1000);
    assert!(s.is_empty());
}

#[test]
fn observations_from_the_future_are_accounted_at_now() {
    let mut s = shard(small());
    let mut out = Vec::new();
    s.update(&packet(key(9, 17), T0 + 60_000, 10, 0), T0, &mut out);
    s.flush(&mut out);
    assert_eq!((out[0].first_ms, out[0].last_ms), (T0, T0));
    assert_eq!(s.stats().future_timestamps, 1);
}

#[test]
fn out_of_order_packets_widen_the_flow_and_are_counted() {
    let mut s = shard(small());
    let k = key(10, 17);
    let out = feed(
        &mut s,
        &[
            packet(k, T0 + 100, 10, 0),
            packet(k, T0 + 50, 10, 0),
            packet(k, T0 + 200, 10, 0),
        ],
    );
    assert!(out.is_empty());
    let mut out = Vec::new();
    s.flush(&mut out);
    assert_eq!(
        (out[0].first_ms, out[0].last_ms, out[0].packets),
        (T0 + 50, T0 + 200, 3)
    );
    assert_eq!(s.stats().reordered, 1);
}

#[test]
fn counters_ttl_and_sampling_go_into_the_record() {
    let sampling = SamplingInfo {
        algorithm: SamplingAlgorithm::Hash,
        interval: 16,
    };
    let mut s = FlowShard::new(&small(), sampling);
    let k = key(11, 6);
    let mut out = Vec::new();
    for (i, ttl) in [64u8, 63, 250, 1].into_iter().enumerate() {
        let p = Observation {
            ttl,
            ..packet(k, T0 + i as u64, 100, ACK)
        };
        s.update(&p, T0 + 10, &mut out);
    }
    s.flush(&mut out);
    let r = out[0].clone();
    assert_eq!(
        (r.min_ttl, r.max_ttl, r.packets, r.octets),
        (1, 250, 4, 400)
    );
    assert_eq!(r.sampling, sampling);
}

#[test]
fn nic_hashes_work_even_when_they_all_collide() {
    // Every packet hashed to the same value: one bucket holds all flows, key compare decides.
    let mut s = shard(CacheConfig {
        capacity: 64,
        bucket_size: 16,
        ..CacheConfig::default()
    });
    let packets: Vec<Observation> = (0..160u32)
        .map(|i| packet(key(i % 10, 17), T0 + u64::from(i), 10, 0))
        .collect();
    let mut out = Vec::new();
    s.update_burst_hashed(&packets, &[0xdead_beef; 160], T0 + 200, &mut out);
    assert!(out.is_empty());
    assert_eq!(s.len(), 10);
    s.flush(&mut out);
    assert!(out.iter().all(|r| r.packets == 16));
}

#[test]
fn capacity_rounds_up_and_memory_is_as_stated() {
    let s = shard(CacheConfig {
        capacity: 1000,
        bucket_size: 16,
        ..CacheConfig::default()
    });
    assert_eq!(s.capacity(), 1024);
    assert_eq!(s.memory_bytes(), 1024 * ENTRY_BYTES);
    assert!(
        FlowShard::try_new(
            &CacheConfig {
                bucket_size: 12,
                ..small()
            },
            SamplingInfo::default()
        )
        .is_err()
    );
}

#[test]
fn stats_of_shards_merge_by_summing() {
    let mut a = shard(small());
    let mut b = shard(small());
    let mut out = Vec::new();
    a.update(&packet(key(1, 6), T0, 10, RST), T0, &mut out);
    b.update(&packet(key(2, 17), T0, 30, 0), T0, &mut out);
    b.flush(&mut out);
    let mut total = *a.stats();
    total.merge(b.stats());
    assert_eq!(
        (
            total.packets,
            total.octets,
            total.flows_created,
            total.records()
        ),
        (2, 40, 2, 2)
    );
    assert_eq!(
        total.expired(EndReason::EndOfFlow) + total.expired(EndReason::Forced),
        2
    );
}

/// A shard whose active timeout (10 s) ends flows long before the inactive one (60 s), so
/// a late packet that moves a flow's first time back moves its deadline back too.
fn active_first_shard() -> (FlowShard, FlowKey) {
    let config = CacheConfig {
        inactive_timeout_ms: 60_000,
        active_timeout_ms: 10_000,
        ..small()
    };
    (shard(config), key(12, 17))
}

#[test]
fn the_sweep_finds_a_flow_whose_deadline_moved_earlier() {
    // Out-of-order input can move a deadline back: an earlier first packet brings the
    // active deadline forward. The sweep must still end the flow on time.
    let (mut s, k) = active_first_shard();
    feed(
        &mut s,
        &[packet(k, T0 + 5_000, 10, 0), packet(k, T0, 10, 0)],
    );
    let mut out = Vec::new();
    assert_eq!(s.expire_all(T0 + 9_999, &mut out), 0);
    assert_eq!(s.expire_all(T0 + 10_000, &mut out), 1);
    assert_eq!(
        (out[0].end_reason, out[0].first_ms, out[0].last_ms),
        (EndReason::Active, T0, T0 + 5_000)
    );
}

#[test]
fn the_workers_path_counts_a_late_packet_as_the_general_path_does() {
    // The same out-of-order pair as above through `update_interleaved`, whose live-flow
    // path must leave the late packet to the general one: first moves back, last stays.
    let (mut s, k) = active_first_shard();
    let mut out = Vec::new();
    for p in [
        packet(k, T0 + 5_000, 10, 0),
        packet(k, T0 + 6_000, 10, 0),
        packet(k, T0, 10, 0),
    ] {
        let mut hash = [0u64; 1];
        FlowShard::hash_burst(std::slice::from_ref(&p), &mut hash);
        s.update_interleaved(std::slice::from_ref(&p), &hash, T0 + 6_000, &[], &mut out);
    }
    assert_eq!(s.stats().reordered, 1);
    assert_eq!(s.expire_all(T0 + 9_999, &mut out), 0);
    assert_eq!(s.expire_all(T0 + 10_000, &mut out), 1);
    assert_eq!(
        (
            out[0].end_reason,
            out[0].first_ms,
            out[0].last_ms,
            out[0].packets
        ),
        (EndReason::Active, T0, T0 + 6_000, 3)
    );
}

#[test]
fn a_slot_reused_by_an_earlier_stamped_flow_is_swept_on_time() {
    // One bucket: flow A takes slot 0 and leaves by FIN; flow B, stamped earlier than A
    // (input from two links merged out of order), takes the same slot.
    let mut s = shard(CacheConfig {
        capacity: 8,
        bucket_size: 8,
        inactive_timeout_ms: 15_000,
        ..CacheConfig::default()
    });
    let (a, b) = (key(13, 6), key(14, 17));
    let mut out = feed(
        &mut s,
        &[
            packet(a, T0 + 19_000, 40, ACK),
            packet(a, T0 + 20_000, 40, ACK),
            packet(a, T0 + 20_000, 40, FIN | ACK),
        ],
    );
    s.update(&packet(b, T0, 10, 0), T0 + 20_000, &mut out);
    assert_eq!(s.len(), 1);
    assert_eq!(s.expire_all(T0 + 15_000, &mut out), 1);
    assert_eq!((out[1].key, out[1].end_reason), (b, EndReason::Idle));
}

#[test]
fn both_directions_under_one_symmetric_nic_hash_are_two_flows() {
    let mut s = shard(small());
    let fwd = key(15, 6);
    let rev = FlowKey {
        src_addr: fwd.dst_addr,
        dst_addr: fwd.src_addr,
        src_port: fwd.dst_port,
        dst_port: fwd.src_port,
        ..fwd
    };
    let packets: Vec<Observation> = (0..10u64)
        .map(|i| packet(if i % 2 == 0 { fwd } else { rev }, T0 + i, 100, ACK))
        .collect();
    let mut out = Vec::new();
    s.update_burst_hashed(&packets, &[0x1234_5678; 10], T0 + 10, &mut out);
    assert_eq!(s.len(), 2);
    s.flush(&mut out);
    let mut got: Vec<(FlowKey, u64)> = out.iter().map(|r| (r.key, r.packets)).collect();
    got.sort();
    let mut want = vec![(fwd, 5), (rev, 5)];
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn new_timeouts_apply_to_cached_flows_and_their_sweep_hints() {
    let mut s = shard(CacheConfig {
        inactive_timeout_ms: 60_000,
        active_timeout_ms: 1_800_000,
        ..small()
    });
    // 100 flows, each last seen at T0 + n seconds.
    let packets: Vec<_> = (0..100)
        .map(|n| packet(key(n, 17), T0 + u64::from(n) * 1_000, 100, 0))
        .collect();
    feed(&mut s, &packets);
    let mut out = Vec::new();
    // Under the 60 s timeout, flows last seen before T0 + 40 s are due at T0 + 100 s.
    assert_eq!(s.expire_all(T0 + 100_000, &mut out), 41);
    assert_eq!(s.len(), 59);

    // A 10 s inactive timeout: flows last seen at or before T0 + 90 s are due at T0 + 100 s.
    // Their old deadlines (101..150 s) are after now, so a sweep that kept the old hints
    // would pass them over.
    s.set_timeouts(10_000, 1_800_000).unwrap();
    assert_eq!(s.timeouts(), (10_000, 1_800_000));
    out.clear();
    assert_eq!(s.expire(T0 + 100_000, &mut out), 50);
    let mut due: Vec<u64> = out.iter().map(|r| (r.last_ms - T0) / 1_000).collect();
    due.sort_unstable();
    assert_eq!(due, (41..=90).collect::<Vec<u64>>());
    assert!(out.iter().all(|r| r.end_reason == EndReason::Idle));

    // A longer timeout keeps the rest past their old deadline.
    s.set_timeouts(3_600_000, 7_200_000).unwrap();
    out.clear();
    assert_eq!(s.expire_all(T0 + 1_000_000, &mut out), 0);
    assert_eq!(s.len(), 9);
    assert!(s.set_timeouts(0, 1).is_err());
    assert!(s.set_timeouts(1, 0).is_err());
}

/// A burst the worker's way: hashed, then accounted with nothing next.
fn account_burst(s: &mut FlowShard, burst: &[Observation], now: u64, out: &mut Vec<FlowRecord>) {
    let mut hashes = vec![0u64; burst.len()];
    FlowShard::hash_burst(burst, &mut hashes);
    s.update_interleaved(burst, &hashes, now, &[], out);
}
