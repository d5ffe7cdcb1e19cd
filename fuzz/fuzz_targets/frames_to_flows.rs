//! Arbitrary frames, with arbitrary timestamps (steps forward, backwards by an hour,
//! forward by days), through the parser and a tiny flow cache exactly as a worker feeds
//! them: whatever the bytes, every accounted packet comes out in exactly one record of its
//! own flow, no flow's counters absorb another's, no record ends before it starts, and
//! the cache is empty after the flush.
//!
//! Input: records of `[control, length_hi, length_lo, frame...]`; the control byte picks
//! the time step and whether the burst ends after this frame.
#![no_main]

use std::collections::BTreeMap;

use flowcache::{CacheConfig, FlowKey, FlowRecord, FlowShard, Observation, SamplingInfo};
use libfuzzer_sys::fuzz_target;
use probe::parse::parse_frame_with_wire_len;

const START_MS: u64 = 1_700_000_000_000;
const HOUR_MS: u64 = 3_600_000;
const MAX_BURST: usize = 64;

/// The time step a control byte asks for.
fn step(control: u8, now: u64) -> u64 {
    match control & 0x07 {
        0 => now,
        1 => now + 1,
        2 => now + 999,
        3 => now + 15_000,
        4 => now + 31 * 60_000,
        5 => now.saturating_sub(HOUR_MS),
        6 => now + 3 * 24 * HOUR_MS,
        _ => now + u64::from(control >> 3) * 100,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&shape, mut rest)) = data.split_first() else {
        return;
    };
    let config = CacheConfig {
        capacity: 16,
        bucket_size: if shape & 1 == 0 { 8 } else { 16 },
        inactive_timeout_ms: 15_000,
        active_timeout_ms: 1_800_000,
        tcp_end_expiry: shape & 2 == 0,
        expiry_budget: 1 + usize::from(shape >> 2),
    };
    let mut shard = FlowShard::new(&config, SamplingInfo::default());
    let mut records: Vec<FlowRecord> = Vec::new();
    let mut expected: BTreeMap<FlowKey, (u64, u64)> = BTreeMap::new();
    let mut burst: Vec<Observation> = Vec::with_capacity(MAX_BURST);
    let mut packet_ms = START_MS;
    let mut now = 0u64;
    let mut latest = 0u64;

    while rest.len() >= 3 {
        let control = rest[0];
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let frame = &rest[3..3 + len];
        rest = &rest[3 + len..];
        packet_ms = step(control, packet_ms);
        let parsed = parse_frame_with_wire_len(frame, frame.len() as u32);
        if parsed.stop.accounted() {
            let entry = expected.entry(parsed.key).or_default();
            entry.0 += 1;
            entry.1 += u64::from(parsed.octets);
            latest = latest.max(packet_ms);
            burst.push(Observation {
                key: parsed.key,
                octets: parsed.octets,
                tcp_flags: parsed.tcp_flags,
                ttl: parsed.ttl,
                timestamp_ms: packet_ms,
            });
        }
        if control & 0x80 != 0 || burst.len() == MAX_BURST || rest.len() < 3 {
            // The worker's clock: the latest packet time seen, never going backwards.
            now = now.max(latest);
            let mut hashes = vec![0u64; burst.len()];
            FlowShard::hash_burst(&burst, &mut hashes);
            shard.update_interleaved(&burst, &hashes, now, &[], &mut records);
            shard.expire(now, &mut records);
            burst.clear();
        }
    }
    shard.flush(&mut records);
    assert!(shard.is_empty());

    let mut actual: BTreeMap<FlowKey, (u64, u64)> = BTreeMap::new();
    for r in &records {
        assert!(r.packets >= 1, "{r:?}");
        assert!(
            r.first_ms <= r.last_ms,
            "record ends before it starts: {r:?}"
        );
        assert!(
            r.last_ms <= now.max(START_MS),
            "record from the future: {r:?}"
        );
        let entry = actual.entry(r.key).or_default();
        entry.0 += r.packets;
        entry.1 += r.octets;
    }
    assert_eq!(actual, expected);
    let stats = shard.stats();
    assert_eq!(stats.flows_created, records.len() as u64);
    assert_eq!(stats.records(), records.len() as u64);
});
