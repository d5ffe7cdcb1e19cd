//! Updates per second of one shard on one core, with 10k, 100k and 1M concurrent flows in
//! a cache of twice that capacity. Packets pick flows uniformly at random (the worst case
//! for the CPU caches), in bursts of 64. `generate_only` measures the benchmark's own
//! packet generation, to be subtracted from the others; `generate_and_hash` adds the
//! table hash (ahash) of each key. `update_interleaved` is the worker's way: hash a burst,
//! then account the one before it while the new one's headers load.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use flowcache::{
    CacheConfig, FlowKey, FlowRecord, FlowShard, Observation, SamplingInfo, flow_hash,
};

const BURST: usize = 64;
const FLOW_COUNTS: [usize; 3] = [10_000, 100_000, 1_000_000];
const T0: u64 = 1_700_000_000_000;

/// Flow `i`'s key, computed rather than looked up so the benchmark itself touches no
/// memory beyond the shard.
#[inline]
fn key(i: u32) -> FlowKey {
    let mut k = FlowKey {
        protocol: 6,
        ip_version: 4,
        dst_port: 443,
        ..FlowKey::default()
    };
    k.src_addr[..4].copy_from_slice(&(0x0a00_0000 | (i >> 8)).to_be_bytes());
    k.dst_addr[..4].copy_from_slice(&[192, 0, 2, 1]);
    k.src_port = 1024 + (i & 0xff) as u16;
    k
}

/// A picker of flows, uniform over `flows`.
struct Traffic {
    flows: u64,
    state: u64,
}

impl Traffic {
    fn new(flows: usize) -> Traffic {
        Traffic {
            flows: flows as u64,
            state: 0x1234_5678,
        }
    }

    #[inline]
    fn next_flow(&mut self) -> u32 {
        self.state = self.state.wrapping_add(0xa076_1d64_78bd_642f);
        let p = u128::from(self.state) * u128::from(self.state ^ 0xe703_7ed1_a0b4_28db);
        let r = (p >> 64) as u64 ^ p as u64;
        ((u128::from(r) * u128::from(self.flows)) >> 64) as u32
    }

    #[inline]
    fn fill(&mut self, burst: &mut [Observation; BURST]) {
        for obs in burst.iter_mut() {
            let i = self.next_flow();
            obs.key = key(i);
            obs.octets = 64 + (i & 0x3ff);
        }
    }

    #[inline]
    fn fill_hashed(&mut self, burst: &mut [Observation; BURST], hashes: &mut [u32; BURST]) {
        for (obs, hash) in burst.iter_mut().zip(hashes) {
            let i = self.next_flow();
            obs.key = key(i);
            obs.octets = 64 + (i & 0x3ff);
            *hash = nic_hash(i);
        }
    }
}

/// Stands in for the 32-bit RSS hash a NIC delivers with each packet of flow `i`, at next
/// to no cost: murmur3's finalizer, a bijection, so flows never share a hash.
#[inline]
fn nic_hash(i: u32) -> u32 {
    let mut h = i ^ (i >> 16);
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// A shard holding `flows` flows, filled by `update` or, if `nic_hashes`, by
/// `update_burst_hashed` (a shard must always be fed the same kind of hash).
fn full_shard(flows: usize, bucket_size: usize, nic_hashes: bool) -> FlowShard {
    let config = CacheConfig {
        capacity: 2 * flows,
        bucket_size,
        ..CacheConfig::default()
    };
    let mut shard = FlowShard::new(&config, SamplingInfo::default());
    let mut out = Vec::new();
    for i in 0..flows as u32 {
        let obs = Observation {
            key: key(i),
            octets: 64,
            tcp_flags: 0x10,
            ttl: 64,
            timestamp_ms: T0,
        };
        if nic_hashes {
            shard.update_burst_hashed(&[obs], &[nic_hash(i)], T0, &mut out);
        } else {
            shard.update(&obs, T0, &mut out);
        }
    }
    // A set-associative table turns a few flows of overfull buckets away even at half load.
    eprintln!(
        "{flows} flows into {} slots of {bucket_size}-slot buckets: {} held, {} evicted while filling",
        shard.capacity(),
        shard.len(),
        shard.stats().evictions
    );
    shard
}

fn template() -> [Observation; BURST] {
    [Observation {
        tcp_flags: 0x10,
        ttl: 64,
        timestamp_ms: T0,
        ..Observation::default()
    }; BURST]
}

fn bench_shard(c: &mut Criterion) {
    let mut group = c.benchmark_group("shard");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .throughput(Throughput::Elements(BURST as u64));
    for flows in FLOW_COUNTS {
        let default_buckets = CacheConfig::default().bucket_size;
        let other_buckets = if default_buckets == 8 { 16 } else { 8 };
        let mut shard = full_shard(flows, default_buckets, false);
        let mut out: Vec<FlowRecord> = Vec::with_capacity(4 * BURST);
        let mut burst = template();

        let mut traffic = Traffic::new(flows);
        group.bench_function(BenchmarkId::new("generate_only", flows), |b| {
            b.iter(|| {
                traffic.fill(&mut burst);
                black_box(&burst);
            })
        });

        let mut traffic = Traffic::new(flows);
        let mut table_hashes = [0u64; BURST];
        group.bench_function(BenchmarkId::new("generate_and_hash", flows), |b| {
            b.iter(|| {
                traffic.fill(&mut burst);
                for (h, obs) in table_hashes.iter_mut().zip(&burst) {
                    *h = flow_hash(&obs.key);
                }
                black_box(&table_hashes);
            })
        });

        let mut traffic = Traffic::new(flows);
        group.bench_function(BenchmarkId::new("update_burst", flows), |b| {
            b.iter(|| {
                traffic.fill(&mut burst);
                shard.update_burst(&burst, T0, &mut out);
                out.clear();
            })
        });

        // As the worker runs it: each burst is held until the next one is hashed, and
        // accounted while the next one's headers load (`FlowShard::update_interleaved`).
        let mut traffic = Traffic::new(flows);
        let mut bursts = [template(), template()];
        let mut burst_hashes = [[0u64; BURST]; 2];
        let mut fresh = 0;
        traffic.fill(&mut bursts[1]);
        FlowShard::hash_burst(&bursts[1], &mut burst_hashes[1]);
        group.bench_function(BenchmarkId::new("update_interleaved", flows), |b| {
            b.iter(|| {
                let held = fresh ^ 1;
                traffic.fill(&mut bursts[fresh]);
                FlowShard::hash_burst(&bursts[fresh], &mut burst_hashes[fresh]);
                shard.update_interleaved(
                    &bursts[held],
                    &burst_hashes[held],
                    T0,
                    &burst_hashes[fresh],
                    &mut out,
                );
                out.clear();
                fresh = held;
            })
        });

        let mut hashed_shard = full_shard(flows, default_buckets, true);
        let mut traffic = Traffic::new(flows);
        let mut hashes = [0u32; BURST];
        group.bench_function(BenchmarkId::new("update_burst_hashed", flows), |b| {
            b.iter(|| {
                traffic.fill_hashed(&mut burst, &mut hashes);
                hashed_shard.update_burst_hashed(&burst, &hashes, T0, &mut out);
                out.clear();
            })
        });
        drop(hashed_shard);

        let mut other_shard = full_shard(flows, other_buckets, false);
        let mut traffic = Traffic::new(flows);
        group.bench_function(
            BenchmarkId::new(format!("update_burst_{other_buckets}_slot_buckets"), flows),
            |b| {
                b.iter(|| {
                    traffic.fill(&mut burst);
                    other_shard.update_burst(&burst, T0, &mut out);
                    out.clear();
                })
            },
        );
        drop(other_shard);

        let mut traffic = Traffic::new(flows);
        group.bench_function(BenchmarkId::new("update", flows), |b| {
            b.iter(|| {
                traffic.fill(&mut burst);
                for obs in &burst {
                    shard.update(obs, T0, &mut out);
                }
                out.clear();
            })
        });

        let mut traffic = Traffic::new(flows);
        group.bench_function(BenchmarkId::new("update_burst_and_expire", flows), |b| {
            b.iter(|| {
                traffic.fill(&mut burst);
                shard.update_burst(&burst, T0, &mut out);
                shard.expire(T0, &mut out);
                out.clear();
            })
        });
        eprintln!(
            "{flows} flows after the runs: {} evictions",
            shard.stats().evictions
        );
    }
    group.finish();
}

criterion_group!(benches, bench_shard);
criterion_main!(benches);
