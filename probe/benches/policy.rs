//! Policy classification cost per new flow: priority-pruned tuple space search against a
//! linear first-match scan, with 10, 1,000 and 10,000 generated rules, over keys of which
//! about half match some rule (the rest fall through every rule, the classifier's worst
//! case).

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use flowcache::FlowKey;
use probe::policy::{RuleSet, generated_rules};

/// Keys drawn from the rules' own address space: `count` keys, deterministic.
fn keys(count: usize) -> Vec<FlowKey> {
    let mut state = 7u64;
    let mut next = move |bound: u64| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % bound
    };
    (0..count)
        .map(|_| {
            let mut key = FlowKey {
                protocol: if next(3) == 0 { 17 } else { 6 },
                src_port: 1024 + next(60_000) as u16,
                dst_port: [22u16, 53, 80, 443, 873, 3306, 8080, 9999][next(8) as usize],
                ..FlowKey::default()
            };
            let src = IpAddr::from([10, next(256) as u8, next(256) as u8, next(256) as u8]);
            let dst = IpAddr::from([172, 16 + next(16) as u8, next(256) as u8, next(256) as u8]);
            key.set_addrs(src, dst);
            key
        })
        .collect()
}

fn classify(c: &mut Criterion) {
    let keys = keys(4096);
    let mut group = c.benchmark_group("policy_classify");
    group.throughput(Throughput::Elements(keys.len() as u64));
    for rules in [10usize, 1_000, 10_000] {
        let set = RuleSet::new(generated_rules(rules, 1));
        let matched = keys.iter().filter(|k| set.classify(k).is_some()).count();
        eprintln!(
            "{rules} rules: {} tuples, {matched} of {} keys match",
            set.tuples(),
            keys.len()
        );
        group.bench_with_input(BenchmarkId::new("tuple_space", rules), &set, |b, set| {
            b.iter(|| {
                keys.iter()
                    .map(|k| set.classify(black_box(k)).map_or(0, |r| r as u64))
                    .sum::<u64>()
            })
        });
        group.bench_with_input(BenchmarkId::new("linear", rules), &set, |b, set| {
            b.iter(|| {
                keys.iter()
                    .map(|k| set.classify_linear(black_box(k)).map_or(0, |r| r as u64))
                    .sum::<u64>()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, classify);
criterion_main!(benches);
