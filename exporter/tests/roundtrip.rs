//! Every version decodes with `netflow_parser` to exactly the records that were encoded;
//! sequence numbers, template schedule and the MTU behave as each protocol defines.

mod common;

use std::net::IpAddr;

use common::*;
use exporter::{
    Datagram, ExportSession, ExportVersion, ExporterStatistics, SessionConfig, Unsupported,
};
use flowcache::{FlowRecord, SamplingAlgorithm, SamplingInfo};
use proptest::prelude::*;

const NOW_MS: u64 = START_MS + 3_600_123;

#[test]
fn v5_round_trip_carries_every_field_and_skips_ipv6() {
    let mut s = ExportSession::new(
        SessionConfig {
            version: ExportVersion::V5,
            engine_type: 1,
            engine_id: 9,
            ..SessionConfig::default()
        },
        START_MS,
    )
    .unwrap();
    let mut records: Vec<FlowRecord> = (0..45).map(flow_v4).collect();
    records.insert(7, flow_v6(1));
    records.push(flow_v6(2));
    let datagrams = collect(|emit| s.encode_flows(&records, NOW_MS, emit));
    assert_eq!(datagrams.len(), 2);
    assert_eq!(s.counters().unsupported.get(Unsupported::Ipv6InV5), 2);
    assert_eq!(s.counters().unsupported.total(), 2);

    let v4: Vec<&FlowRecord> = records.iter().filter(|r| r.key.ip_version == 4).collect();
    let mut decoder = Decoder::default();
    let mut next = 0;
    for (i, bytes) in datagrams.iter().enumerate() {
        assert!(bytes.len() <= exporter::DEFAULT_MTU);
        let m = decoder.v5(bytes);
        let h = m.header;
        assert_eq!(h.version, 5);
        assert_eq!(h.count as usize, if i == 0 { 30 } else { 15 });
        // sysUptime counts from a whole second before the first record, and the header's
        // time minus it gives that epoch exactly.
        let epoch = s.sys_uptime_epoch_ms();
        assert_eq!(epoch, START_MS - 1_000);
        assert_eq!(u64::from(h.sys_up_time), NOW_MS - epoch);
        assert_eq!(u64::from(h.unix_secs), NOW_MS / 1000);
        assert_eq!(h.unix_nsecs, 123_000_000);
        let header_ms = u64::from(h.unix_secs) * 1000 + u64::from(h.unix_nsecs) / 1_000_000;
        assert_eq!(header_ms - u64::from(h.sys_up_time), epoch);
        assert_eq!(h.flow_sequence, if i == 0 { 0 } else { 30 });
        assert_eq!((h.engine_type, h.engine_id), (1, 9));
        assert_eq!(h.sampling_interval, 0);
        for f in &m.flowsets {
            let r = v4[next];
            next += 1;
            assert_eq!(IpAddr::V4(f.src_addr), r.key.src_ip());
            assert_eq!(IpAddr::V4(f.dst_addr), r.key.dst_ip());
            assert_eq!(u32::from(f.next_hop), 0);
            assert_eq!(f.input, r.key.input_port);
            assert_eq!(f.output, 0);
            assert_eq!(u64::from(f.d_pkts), r.packets);
            assert_eq!(u64::from(f.d_octets), r.octets);
            assert_eq!(u64::from(f.first), r.first_ms - epoch);
            assert_eq!(u64::from(f.last), r.last_ms - epoch);
            assert_eq!(f.src_port, r.key.src_port);
            assert_eq!(f.dst_port, r.key.dst_port);
            assert_eq!(f.tcp_flags, r.tcp_flags);
            assert_eq!(f.protocol_number, r.key.protocol);
            assert_eq!(f.tos, r.key.tos);
            assert_eq!((f.src_as, f.dst_as, f.src_mask, f.dst_mask), (0, 0, 0, 0));
        }
    }
    assert_eq!(next, 45);
}

#[test]
fn v5_header_carries_sampling_and_a_change_starts_a_new_datagram() {
    let mut s = session(ExportVersion::V5);
    let records = [
        sampled(flow_v4(1), SamplingAlgorithm::Deterministic, 100),
        sampled(flow_v4(2), SamplingAlgorithm::Deterministic, 100),
        sampled(flow_v4(3), SamplingAlgorithm::Random, 20_000),
    ];
    let datagrams = collect(|emit| s.encode_flows(&records, NOW_MS, emit));
    assert_eq!(datagrams.len(), 2);
    let mut d = Decoder::default();
    let first = d.v5(&datagrams[0]).header;
    assert_eq!((first.count, first.sampling_interval), (2, 0x4000 | 100));
    let second = d.v5(&datagrams[1]).header;
    // Random is mode 2; 20000 does not fit 14 bits and is clamped (and counted).
    assert_eq!(
        (second.count, second.sampling_interval),
        (1, 0x8000 | 0x3fff)
    );
    assert_eq!(second.flow_sequence, 2);
    assert_eq!(s.counters().clamped_fields, 1);
}

#[test]
fn v5_skips_aggregates_and_clamps_what_does_not_fit() {
    let mut s = session(ExportVersion::V5);
    let none = collect(|emit| s.encode_aggregates(&[aggregate(1), aggregate(2)], NOW_MS, emit));
    assert!(none.is_empty());
    assert_eq!(s.counters().unsupported.get(Unsupported::AggregateInV5), 2);
    assert_eq!(s.counters().unsupported.get(Unsupported::Ipv6InV5), 0);
    let mut r = flow_v4(1);
    r.first_ms = START_MS - 5_000; // began before the exporter did
    r.octets = u64::from(u32::MAX) + 10;
    let datagrams = collect(|emit| s.encode_flows(&[r], NOW_MS, emit));
    let f = Decoder::default().v5(&datagrams[0]).flowsets[0].clone();
    assert_eq!(f.first, 0);
    assert_eq!(f.d_octets, u32::MAX);
    assert_eq!(s.counters().clamped_fields, 2);
}

fn round_trip(version: ExportVersion, sampling_in_records: bool) {
    let mut s = ExportSession::new(
        SessionConfig {
            version,
            observation_domain_id: 0xabcd,
            sampling_in_records,
            ..SessionConfig::default()
        },
        START_MS,
    )
    .unwrap();
    let flows: Vec<FlowRecord> = (0..40)
        .map(|i| {
            let r = if i % 3 == 0 { flow_v6(i) } else { flow_v4(i) };
            sampled(r, SamplingAlgorithm::Random, 64)
        })
        .collect();
    let aggregates: Vec<_> = (0..25).map(aggregate).collect();
    let sampling = SamplingInfo {
        algorithm: SamplingAlgorithm::Deterministic,
        interval: 10,
    };
    let stats = ExporterStatistics {
        exported_messages: 11,
        exported_records: 222,
        exported_octets: 33_333,
        not_sent_records: 4,
    };
    let mut datagrams = collect(|emit| s.encode_flows(&flows, NOW_MS, emit));
    datagrams.extend(collect(|emit| {
        s.encode_aggregates(&aggregates, NOW_MS, emit)
    }));
    datagrams.extend(collect(|emit| {
        s.encode_options(sampling, &stats, NOW_MS, emit)
    }));

    let mut decoder = Decoder::default();
    let messages: Vec<Message> = datagrams.iter().map(|d| decoder.message(d)).collect();
    let header_version = if version == ExportVersion::V9 { 9 } else { 10 };
    let epoch = s.sys_uptime_epoch_ms();
    for (m, bytes) in messages.iter().zip(&datagrams) {
        assert_eq!(m.version, header_version);
        assert_eq!(m.domain, 0xabcd);
        if version == ExportVersion::V9 {
            // Whole seconds, rounded up so no record is later than the header; sysUptime
            // is the uptime at exactly that second, so a collector's boot time
            // (unix_secs - sysUptime) is the epoch to the millisecond.
            assert_eq!(u64::from(m.unix_secs), NOW_MS.div_ceil(1000));
            assert_eq!(
                u64::from(m.unix_secs) * 1000 - u64::from(m.sys_uptime),
                epoch
            );
            assert_eq!(epoch, START_MS - 1_000);
            let records = m.records.len() + m.templates.len() + m.options_templates.len();
            assert_eq!(m.count_or_length as usize, records);
        } else {
            assert_eq!(u64::from(m.unix_secs), NOW_MS / 1000);
            assert_eq!(m.count_or_length as usize, bytes.len());
        }
    }
    // Templates came first, once: all three data templates and the options templates
    // (IPFIX adds the selector options, 261).
    assert_eq!(messages[0].templates, [256, 257, 258]);
    let options_templates: &[u16] = if version == ExportVersion::Ipfix {
        &[259, 260, 261]
    } else {
        &[259, 260]
    };
    assert_eq!(messages[0].options_templates, options_templates);
    assert!(messages[1..].iter().all(|m| m.templates.is_empty()));

    let data: Vec<&Record> = messages.iter().flat_map(|m| m.data()).collect();
    assert_eq!(data.len(), flows.len() + aggregates.len());
    for (r, d) in flows.iter().zip(&data) {
        let want_template = if r.key.ip_version == 6 { 257 } else { 256 };
        assert_eq!(d.template_id, want_template);
        let expected = if version == ExportVersion::Ipfix {
            expected_ipfix_flow(r, sampling_in_records)
        } else {
            expected_v9_flow(r, epoch, sampling_in_records)
        };
        assert_eq!(d.fields, expected);
    }
    for (a, d) in aggregates.iter().zip(&data[flows.len()..]) {
        assert_eq!(d.template_id, 258);
        let mut expected = expected_aggregate(a, version, epoch);
        if sampling_in_records {
            expected.insert(34, num(1));
            expected.insert(35, num(0));
        }
        assert_eq!(d.fields, expected);
    }

    let options: Vec<&Record> = messages.iter().flat_map(|m| m.options()).collect();
    assert_eq!(options.len(), options_templates.len());
    let scope = if version == ExportVersion::Ipfix {
        149
    } else {
        1
    };
    assert_eq!(options[0].template_id, 259);
    assert_eq!(
        options[0].fields,
        [
            (scope, num(0xabcd)),
            (305, num(1)),
            (34, num(10)),
            (35, num(1)),
            (306, num(9)),
        ]
        .into()
    );
    if version == ExportVersion::Ipfix {
        // selectorAlgorithm 1: systematic count-based (RFC 5475).
        let selector = options.iter().find(|r| r.template_id == 261).unwrap();
        assert_eq!(selector.fields, [(149, num(0xabcd)), (304, num(1))].into());
    }
    let statistics = options.last().unwrap();
    assert_eq!(statistics.template_id, 260);
    assert_eq!(
        statistics.fields,
        [
            (scope, num(0xabcd)),
            (41, num(11)),
            (42, num(222)),
            (40, num(33_333)),
            (166, num(4)),
        ]
        .into()
    );
}

#[test]
fn v9_round_trip_ipv4_ipv6_aggregates_and_options() {
    round_trip(ExportVersion::V9, false);
}

#[test]
fn v9_round_trip_with_sampling_in_every_record() {
    round_trip(ExportVersion::V9, true);
}

#[test]
fn ipfix_round_trip_ipv4_ipv6_aggregates_and_options() {
    round_trip(ExportVersion::Ipfix, false);
}

#[test]
fn ipfix_round_trip_with_sampling_in_every_record() {
    round_trip(ExportVersion::Ipfix, true);
}

/// Encodes `calls` batches and returns each datagram's sequence number and what it held.
fn sequences(version: ExportVersion, calls: &[usize]) -> Vec<(u32, usize)> {
    let mut s = session(version);
    let mut decoder = Decoder::default();
    let mut out = Vec::new();
    let mut i = 0;
    for &n in calls {
        let records: Vec<_> = (i..i + n as u32).map(flow_v4).collect();
        i += n as u32;
        for d in collect(|emit| s.encode_flows(&records, NOW_MS, emit)) {
            if version == ExportVersion::V5 {
                let m = decoder.v5(&d);
                out.push((m.header.flow_sequence, m.flowsets.len()));
            } else {
                let m = decoder.message(&d);
                out.push((m.sequence, m.records.len()));
            }
        }
        if version != ExportVersion::V5 {
            let stats = ExporterStatistics::default();
            for d in collect(|emit| s.encode_options(SamplingInfo::default(), &stats, NOW_MS, emit))
            {
                let m = decoder.message(&d);
                out.push((m.sequence, m.records.len()));
            }
        }
    }
    out
}

#[test]
fn v5_sequence_counts_flows_before_the_datagram() {
    let seq = sequences(ExportVersion::V5, &[45, 3, 30]);
    assert_eq!(seq, [(0, 30), (30, 15), (45, 3), (48, 30)]);
}

#[test]
fn v9_sequence_counts_export_packets() {
    let seq = sequences(ExportVersion::V9, &[45, 3]);
    let numbers: Vec<u32> = seq.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, (0..seq.len() as u32).collect::<Vec<_>>());
}

#[test]
fn ipfix_sequence_counts_data_records_before_the_message_options_included() {
    let seq = sequences(ExportVersion::Ipfix, &[45, 3]);
    let mut expected_next = 0u32;
    for (number, records) in &seq {
        assert_eq!(*number, expected_next);
        expected_next += *records as u32;
    }
    // 48 flow records + 2 x (sampling + selector + statistics) options records.
    assert_eq!(expected_next, 54);
}

fn templates_in(decoder: &mut Decoder, datagrams: &[Vec<u8>]) -> Vec<bool> {
    datagrams
        .iter()
        .map(|d| !decoder.message(d).templates.is_empty())
        .collect()
}

#[test]
fn templates_are_refreshed_by_datagram_count() {
    for version in [ExportVersion::V9, ExportVersion::Ipfix] {
        let mut s = ExportSession::new(
            SessionConfig {
                version,
                template_refresh_datagrams: 3,
                template_refresh_ms: 0,
                ..SessionConfig::default()
            },
            START_MS,
        )
        .unwrap();
        let mut decoder = Decoder::default();
        let mut carried = Vec::new();
        for i in 0..9 {
            let d = collect(|emit| s.encode_flows(&[flow_v4(i)], NOW_MS, emit));
            carried.extend(templates_in(&mut decoder, &d));
        }
        // Templates, then 3 datagrams without, then templates again.
        assert_eq!(
            carried,
            [true, false, false, false, true, false, false, false, true]
        );
        assert_eq!(s.counters().template_sends, 3);
    }
}

#[test]
fn templates_are_refreshed_by_time_and_sent_alone_when_idle() {
    for version in [ExportVersion::V9, ExportVersion::Ipfix] {
        let mut s = ExportSession::new(
            SessionConfig {
                version,
                template_refresh_ms: 10_000,
                template_refresh_datagrams: 0,
                ..SessionConfig::default()
            },
            START_MS,
        )
        .unwrap();
        let mut decoder = Decoder::default();
        // Start-up: due at once, even before any data.
        assert_eq!(s.poll_timeout(), Some(START_MS));
        let d = collect(|emit| s.handle_timeout(START_MS, emit));
        assert_eq!(templates_in(&mut decoder, &d), [true]);
        assert_eq!(decoder.message(&d[0]).records.len(), 0);
        assert_eq!(s.poll_timeout(), Some(START_MS + 10_000));
        // Not yet due: nothing to send, and data goes without templates.
        assert!(collect(|emit| s.handle_timeout(START_MS + 9_999, emit)).is_empty());
        let d = collect(|emit| s.encode_flows(&[flow_v4(1)], START_MS + 9_999, emit));
        assert_eq!(templates_in(&mut decoder, &d), [false]);
        // Due by time: the next data carries them ...
        let d = collect(|emit| s.encode_flows(&[flow_v4(2)], START_MS + 10_000, emit));
        assert_eq!(templates_in(&mut decoder, &d), [true]);
        // ... and when idle, handle_timeout sends them alone.
        let d = collect(|emit| s.handle_timeout(START_MS + 20_000, emit));
        assert_eq!(templates_in(&mut decoder, &d), [true]);
        assert_eq!(s.counters().template_sends, 3);
    }
}

#[test]
fn sampling_is_resent_with_every_template_refresh() {
    let mut s = session(ExportVersion::Ipfix);
    let sampling = SamplingInfo {
        algorithm: SamplingAlgorithm::Random,
        interval: 512,
    };
    let _ =
        collect(|emit| s.encode_options(sampling, &ExporterStatistics::default(), NOW_MS, emit));
    s.force_template_refresh();
    let d = collect(|emit| s.encode_flows(&[flow_v4(1)], NOW_MS, emit));
    // A fresh decoder is a collector that just restarted: one datagram teaches it everything.
    let m = Decoder::default().message(&d[0]);
    let opts: Vec<&Record> = m.options().collect();
    assert_eq!(opts.len(), 2, "sampling and selector");
    assert_eq!(opts[1].fields[&304], num(4), "uniform probabilistic");
    assert_eq!(opts[0].fields[&34], num(512));
    assert_eq!(opts[0].fields[&35], num(2));
    assert_eq!(opts[0].fields[&305], num(1));
    assert_eq!(opts[0].fields[&306], num(511));
    assert_eq!(m.data().count(), 1);
}

#[test]
fn a_collector_that_starts_late_decodes_after_the_next_refresh() {
    let mut s = ExportSession::new(
        SessionConfig {
            version: ExportVersion::Ipfix,
            template_refresh_datagrams: 5,
            ..SessionConfig::default()
        },
        START_MS,
    )
    .unwrap();
    let mut all = Vec::new();
    for i in 0..12 {
        all.extend(collect(|emit| s.encode_flows(&[flow_v4(i)], NOW_MS, emit)));
    }
    // The collector starts after datagram 2: until the refresh it cannot decode data ...
    let mut parser = netflow_parser::NetflowParser::default();
    for d in &all[3..6] {
        let result = parser.parse_bytes(d);
        let Some(netflow_parser::NetflowPacket::IPFix(m)) = result.packets.first() else {
            panic!("not IPFIX: {result:?}");
        };
        assert!(matches!(
            m.flowsets[0].body,
            netflow_parser::variable_versions::ipfix::FlowSetBody::NoTemplate(_)
        ));
    }
    // ... and from the refresh on (datagram 6) it decodes every record.
    let mut late = Decoder::default();
    for d in &all[6..] {
        assert_eq!(late.message(d).data().count(), 1);
    }
}

#[test]
fn one_buffer_is_reused_for_every_datagram() {
    let mut s = session(ExportVersion::Ipfix);
    let capacity = s.buffer_capacity();
    let records: Vec<_> = (0..500).map(flow_v4).collect();
    let mut pointers = Vec::new();
    let mut count = 0;
    s.encode_flows(&records, NOW_MS, &mut |d: &Datagram<'_>| {
        pointers.push(d.bytes.as_ptr() as usize);
        count += 1;
    });
    assert!(count > 10);
    pointers.dedup();
    assert_eq!(
        pointers.len(),
        1,
        "every datagram is lent from the same buffer"
    );
    assert_eq!(s.buffer_capacity(), capacity);
}

fn minimum_mtu(version: ExportVersion, sampling_in_records: bool) -> usize {
    (60..2000)
        .find(|&mtu| {
            ExportSession::new(
                SessionConfig {
                    version,
                    mtu,
                    sampling_in_records,
                    ..SessionConfig::default()
                },
                START_MS,
            )
            .is_ok()
        })
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn datagrams_never_exceed_the_mtu_and_lose_nothing(
        version in prop_oneof![Just(ExportVersion::V5), Just(ExportVersion::V9), Just(ExportVersion::Ipfix)],
        extra_mtu in 0usize..3000,
        flows in 0usize..150,
        v6_every in 1usize..5,
        aggregates in 0usize..60,
        sampling_in_records in any::<bool>(),
    ) {
        let mtu = minimum_mtu(version, sampling_in_records) + extra_mtu;
        let mut s = ExportSession::new(
            SessionConfig { version, mtu, sampling_in_records, ..SessionConfig::default() },
            START_MS,
        ).unwrap();
        let records: Vec<FlowRecord> = (0..flows as u32)
            .map(|i| if (i as usize).is_multiple_of(v6_every) && version != ExportVersion::V5 { flow_v6(i) } else { flow_v4(i) })
            .collect();
        let aggs: Vec<_> = (0..aggregates as u32).map(aggregate).collect();
        let mut datagrams = collect(|emit| s.encode_flows(&records, NOW_MS, emit));
        datagrams.extend(collect(|emit| s.encode_aggregates(&aggs, NOW_MS, emit)));
        let mut decoder = Decoder::default();
        let mut decoded = 0;
        for d in &datagrams {
            prop_assert!(d.len() <= mtu, "{} > {}", d.len(), mtu);
            decoded += if version == ExportVersion::V5 {
                decoder.v5(d).flowsets.len()
            } else {
                decoder.message(d).data().count()
            };
        }
        let expected = if version == ExportVersion::V5 { flows } else { flows + aggregates };
        prop_assert_eq!(decoded, expected);
        let c = s.counters();
        prop_assert_eq!(c.flow_records + c.aggregate_records + c.unsupported.total(),
            (flows + aggregates) as u64);
        prop_assert_eq!(c.datagrams as usize, datagrams.len());
    }

    #[test]
    fn full_datagrams_are_packed_densely(mtu in 200usize..2000) {
        // With one record size (IPv4 flows, IPFIX) every datagram but the last is full:
        // fewer than one record's worth of bytes is left unused.
        let mtu = mtu.max(minimum_mtu(ExportVersion::Ipfix, false));
        let mut s = ExportSession::new(
            SessionConfig { version: ExportVersion::Ipfix, mtu, ..SessionConfig::default() },
            START_MS,
        ).unwrap();
        let _ = collect(|emit| s.handle_timeout(START_MS, emit)); // templates out of the way
        let records: Vec<_> = (0..300).map(flow_v4).collect();
        let datagrams = collect(|emit| s.encode_flows(&records, NOW_MS, emit));
        let template = exporter::ie::IPFIX_IPV4_FLOW;
        let record_len =
            exporter::ie::record_len(&template[..template.len() - exporter::ie::SAMPLING_FIELDS]);
        for d in &datagrams[..datagrams.len() - 1] {
            // A template refresh is due at NOW_MS; near the minimum MTU the datagram that
            // carries the templates (a set with id 2 or 3 first) has no room for a record.
            let first_set = u16::from_be_bytes([d[16], d[17]]);
            if first_set == 2 || first_set == 3 {
                continue;
            }
            prop_assert!(mtu - d.len() < record_len, "{} of {} used", d.len(), mtu);
        }
    }
}

/// Issue 20 item 7: IPFIX carries ICMP type and code in icmpTypeCodeIPv4 (32) and
/// icmpTypeCodeIPv6 (139) as well as in the destination port; other protocols get 0.
#[test]
fn ipfix_carries_icmp_type_and_code_in_their_own_elements() {
    let mut s = session(ExportVersion::Ipfix);
    let mut echo = flow_v4(1);
    echo.key.protocol = 1;
    echo.key.dst_port = 8 << 8; // echo request, code 0
    let mut unreachable = flow_v6(2);
    unreachable.key.protocol = 58;
    unreachable.key.dst_port = (1 << 8) | 4; // destination unreachable, port unreachable
    let tcp = flow_v4(3);
    let datagrams = collect(|emit| s.encode_flows(&[echo, unreachable, tcp], NOW_MS, emit));
    let mut decoder = Decoder::default();
    let data: Vec<Record> = datagrams
        .iter()
        .flat_map(|d| decoder.message(d).data().cloned().collect::<Vec<_>>())
        .collect();
    assert_eq!(data.len(), 3);
    assert_eq!(data[0].fields[&32], num(0x0800));
    assert_eq!(data[0].fields[&11], num(0x0800));
    assert_eq!(data[1].fields[&139], num(0x0104));
    assert!(!data[1].fields.contains_key(&32));
    assert_eq!(data[2].fields[&32], num(0));
}

/// Issue 20 items 5 and 6: the sampling options say what the sampler is (RFC 5475
/// selectorAlgorithm: 6 hash-based filtering for `hash:N`, 4 uniform probabilistic for
/// random), and every notation gives the same 1-in-N: 34 = N, 305 = 1, 306 = N - 1.
#[test]
fn ipfix_sampling_options_name_the_selector_algorithm() {
    for (algorithm, selector) in [
        (SamplingAlgorithm::Hash, 6),
        (SamplingAlgorithm::Random, 4),
        (SamplingAlgorithm::Deterministic, 1),
        (SamplingAlgorithm::None, 1),
    ] {
        let mut s = session(ExportVersion::Ipfix);
        let interval = if algorithm == SamplingAlgorithm::None {
            1
        } else {
            10
        };
        let sampling = SamplingInfo {
            algorithm,
            interval,
        };
        let datagrams = collect(|emit| {
            s.encode_options(sampling, &ExporterStatistics::default(), NOW_MS, emit)
        });
        let mut decoder = Decoder::default();
        let options: Vec<Record> = datagrams
            .iter()
            .flat_map(|d| decoder.message(d).options().cloned().collect::<Vec<_>>())
            .collect();
        let selector_record = options.iter().find(|r| r.template_id == 261).unwrap();
        assert_eq!(selector_record.fields[&304], num(selector), "{algorithm:?}");
        let sampling_record = options.iter().find(|r| r.template_id == 259).unwrap();
        let f = &sampling_record.fields;
        assert_eq!(f[&34], num(u64::from(interval)));
        assert_eq!(f[&305], num(1));
        assert_eq!(f[&306], num(u64::from(interval) - 1));
    }
}
