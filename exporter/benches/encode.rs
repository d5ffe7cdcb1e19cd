//! Encoding throughput per version: records into complete datagrams, discarded. Also
//! IPFIX with the DNS section on: a batch without DNS transactions (what the section
//! costs the other records) and one with a transaction on every tenth record.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use exporter::{Datagram, ExportSession, ExportVersion, SessionConfig};
use flowcache::{FlowKey, FlowRecord};

const START_MS: u64 = 1_700_000_000_000;

fn records(n: u32) -> Vec<FlowRecord> {
    (0..n)
        .map(|i| {
            let mut key = FlowKey::default();
            if i % 4 == 3 {
                key.set_addrs(
                    std::net::Ipv6Addr::from(u128::from(i)).into(),
                    std::net::Ipv6Addr::LOCALHOST.into(),
                );
            } else {
                key.set_addrs(
                    std::net::Ipv4Addr::from(i).into(),
                    std::net::Ipv4Addr::LOCALHOST.into(),
                );
            }
            key.src_port = i as u16;
            key.dst_port = 443;
            key.protocol = 6;
            FlowRecord {
                key,
                packets: 10,
                octets: 15_000,
                first_ms: START_MS + u64::from(i),
                last_ms: START_MS + 1_000 + u64::from(i),
                ..FlowRecord::default()
            }
        })
        .collect()
}

fn encode(c: &mut Criterion) {
    let batch = records(10_000);
    let mut group = c.benchmark_group("encode_flows");
    group.throughput(Throughput::Elements(batch.len() as u64));
    for version in [ExportVersion::V5, ExportVersion::V9, ExportVersion::Ipfix] {
        let mut session = ExportSession::new(
            SessionConfig {
                version,
                ..SessionConfig::default()
            },
            START_MS,
        )
        .unwrap();
        let mut now = START_MS + 10_000;
        group.bench_function(version.name(), |b| {
            b.iter(|| {
                now += 1;
                let mut bytes = 0usize;
                session.encode_flows(&batch, now, &mut |d: &Datagram<'_>| {
                    bytes += black_box(d.bytes).len()
                });
                bytes
            })
        });
    }
    let with_dns: Vec<FlowRecord> = batch
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut r = r.clone();
            if i % 10 == 0 {
                r.extras = Some(Box::new(flowcache::RecordExtras {
                    dns: Some(flowcache::DnsTransaction {
                        qname: format!("host-{i}.example.org"),
                        qtype: 1,
                        rcode: Some(0),
                        answers: Some(1),
                        latency_us: Some(1_500),
                    }),
                    ..Default::default()
                }));
            }
            r
        })
        .collect();
    for (name, records) in [
        ("ipfix_dns_section", &batch),
        ("ipfix_dns_every_tenth", &with_dns),
    ] {
        let mut session = ExportSession::new(
            SessionConfig {
                extras: exporter::ExtraSections {
                    dns: true,
                    ..Default::default()
                },
                ..SessionConfig::default()
            },
            START_MS,
        )
        .unwrap();
        let mut now = START_MS + 10_000;
        group.bench_function(name, |b| {
            b.iter(|| {
                now += 1;
                let mut bytes = 0usize;
                session.encode_flows(records, now, &mut |d: &Datagram<'_>| {
                    bytes += black_box(d.bytes).len()
                });
                bytes
            })
        });
    }
    group.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
