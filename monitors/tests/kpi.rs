//! The KPI extension driven with real frames through a real flow cache shard: handshake
//! figures, outcomes, biflow folding that loses nothing, and property tests for the TCP
//! logic (sequence wraparound, retransmission versus reordering, packets before the
//! handshake, duplicate SYNs, hostile headers).

use etherparse::{PacketBuilder, TcpOptionElement};
use flowcache::{
    CacheConfig, EndReason, FlowKey, FlowRecord, FlowShard, LogStarts, Observation, SamplingInfo,
    TcpKpis, TcpOutcome, Unclassified,
};
use monitors::kpi::{KpiConfig, KpiMonitor};
use probe::ext::{ExtOutput, Extension, Interest, PacketView, RecordFate};
use probe::parse::parse_frame_into;
use proptest::prelude::*;

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

const CLIENT: ([u8; 4], u16) = ([10, 0, 0, 1], 40_000);
const SERVER: ([u8; 4], u16) = ([10, 0, 0, 2], 80);

/// One TCP segment's description.
#[derive(Clone, Copy, Debug)]
struct Seg {
    from_client: bool,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: usize,
    window: u16,
    ts: Option<(u32, u32)>,
}

impl Seg {
    fn new(from_client: bool, seq: u32, ack: u32, flags: u8, payload: usize) -> Seg {
        Seg {
            from_client,
            seq,
            ack,
            flags,
            payload,
            window: 64_000,
            ts: None,
        }
    }
}

fn frame_between(src: ([u8; 4], u16), dst: ([u8; 4], u16), s: &Seg) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4(src.0, dst.0, 64)
        .tcp(src.1, dst.1, s.seq, s.window);
    if s.flags & SYN != 0 {
        b = b.syn();
    }
    if s.flags & FIN != 0 {
        b = b.fin();
    }
    if s.flags & RST != 0 {
        b = b.rst();
    }
    if s.flags & ACK != 0 {
        b = b.ack(s.ack);
    }
    if let Some((val, ecr)) = s.ts {
        b = b.options(&[TcpOptionElement::Timestamp(val, ecr)]).unwrap();
    }
    let payload = vec![0x5a; s.payload];
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, &payload).unwrap();
    out
}

fn udp_between(src: ([u8; 4], u16), dst: ([u8; 4], u16), payload: usize) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4(src.0, dst.0, 64)
        .udp(src.1, dst.1);
    let payload = vec![0x5a; payload];
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, &payload).unwrap();
    out
}

fn frame(s: &Seg) -> Vec<u8> {
    if s.from_client {
        frame_between(CLIENT, SERVER, s)
    } else {
        frame_between(SERVER, CLIENT, s)
    }
}

/// A flow cache shard with the extension attached as the worker attaches it: each packet
/// of its interest is shown before it is accounted, the records the cache started after
/// it, each record as it leaves.
struct Harness {
    monitor: KpiMonitor,
    shard: FlowShard,
    expired: Vec<FlowRecord>,
    exported: Vec<FlowRecord>,
    accounted: u64,
    folded: u64,
}

impl Harness {
    fn new(config: KpiConfig, cache: CacheConfig) -> Harness {
        Harness {
            monitor: KpiMonitor::new(config),
            shard: FlowShard::new(&cache, SamplingInfo::default()),
            expired: Vec::new(),
            exported: Vec::new(),
            accounted: 0,
            folded: 0,
        }
    }

    fn biflow() -> Harness {
        Harness::new(
            KpiConfig::default(),
            CacheConfig {
                capacity: 4096,
                ..CacheConfig::default()
            },
        )
    }

    fn packet(&mut self, frame: &[u8], time_us: u64) {
        let mut key = FlowKey::default();
        let meta = parse_frame_into(frame, frame.len() as u32, &mut key);
        let classes = Interest::of(&key, &meta);
        let mut events = Vec::new();
        let mut out = ExtOutput::new(&mut events);
        if self.monitor.interest().intersects(classes) {
            let view = PacketView {
                frame,
                wire_len: frame.len() as u32,
                timestamp_us: time_us,
                key: &key,
                hash: flowcache::flow_hash(&key),
                meta,
                sampled: true,
                classes,
            };
            self.monitor.on_packet(&view, &mut out);
        }
        self.monitor.on_clock(time_us, &mut out);
        if !meta.stop.accounted() {
            return;
        }
        self.accounted += 1;
        let observation = Observation {
            key,
            octets: meta.octets,
            tcp_flags: meta.tcp_flags,
            ttl: meta.ttl,
            timestamp_ms: time_us / 1_000,
        };
        let mut starts = Vec::new();
        self.shard.update_interleaved_classified(
            &[observation],
            &[flowcache::flow_hash(&key)],
            time_us / 1_000,
            &[],
            &mut LogStarts {
                classifier: Unclassified,
                starts: &mut starts,
            },
            &mut self.expired,
        );
        if self.monitor.wants_flow_starts() {
            self.monitor.on_flow_starts(&starts);
        }
        self.records();
    }

    fn seg(&mut self, s: Seg, time_us: u64) {
        self.packet(&frame(&s), time_us);
    }

    fn expire(&mut self, now_us: u64) {
        self.shard.expire_all(now_us / 1_000, &mut self.expired);
        self.records();
    }

    fn finish(&mut self) {
        self.shard.flush(&mut self.expired);
        self.records();
    }

    fn records(&mut self) {
        for mut record in self.expired.drain(..) {
            match self.monitor.on_record(&mut record) {
                RecordFate::Keep => self.exported.push(record),
                RecordFate::Folded => self.folded += 1,
            }
        }
    }

    /// Every accounted packet is exported exactly once, forward or reverse.
    fn assert_nothing_lost(&self) {
        let exported: u64 = self
            .exported
            .iter()
            .map(|r| r.packets + reverse(r).map_or(0, |rev| rev.packets))
            .sum();
        assert_eq!(exported, self.accounted, "records: {:#?}", self.exported);
    }

    /// The first exported record's KPIs.
    fn kpis(&self) -> TcpKpis {
        self.exported
            .first()
            .and_then(|r| r.extras.as_ref())
            .and_then(|e| e.tcp)
            .expect("a record with KPIs")
    }
}

fn reverse(record: &FlowRecord) -> Option<flowcache::ReverseCounters> {
    record.extras.as_ref().and_then(|e| e.reverse)
}

const CISN: u32 = 1_000;
const SISN: u32 = 50_000;

/// A handshake, a request and a response, both FINs and the last ACK. Times: SYN at 0,
/// SYN-ACK at `server_rtt`, ACK `client_rtt` later; the request 100 us after, the
/// response `app` after the request.
fn http_like(h: &mut Harness, t0: u64, server_rtt: u64, client_rtt: u64, app: u64) {
    let c = CISN + 1;
    let s = SISN + 1;
    h.seg(Seg::new(true, CISN, 0, SYN, 0), t0);
    let t = t0 + server_rtt;
    h.seg(Seg::new(false, SISN, c, SYN | ACK, 0), t);
    let t = t + client_rtt;
    h.seg(Seg::new(true, c, s, ACK, 0), t);
    let t = t + 100;
    h.seg(Seg::new(true, c, s, ACK, 300), t);
    let t = t + app;
    h.seg(Seg::new(false, s, c + 300, ACK, 1_000), t);
    h.seg(Seg::new(true, c + 300, s + 1_000, ACK | FIN, 0), t + 5_000);
    h.seg(Seg::new(false, s + 1_000, c + 301, ACK | FIN, 0), t + 6_000);
    h.seg(Seg::new(true, c + 301, s + 1_001, ACK, 0), t + 7_000);
}

#[test]
fn handshake_rtts_application_latency_and_a_closed_biflow() {
    let mut h = Harness::biflow();
    http_like(&mut h, 1_000_000_000, 3_000, 7_000, 3_500);
    h.finish();
    h.assert_nothing_lost();
    let first = &h.exported[0];
    assert_eq!(first.key.src_port, CLIENT.1, "the SYN sender is the source");
    assert_eq!(first.packets, 4, "SYN, ACK, request, FIN from the client");
    assert_eq!(reverse(first).unwrap().packets, 3);
    let kpis = h.kpis();
    assert_eq!(kpis.rtt_server_us, Some(3_000));
    assert_eq!(kpis.rtt_client_us, Some(7_000));
    assert_eq!(kpis.app_latency_us, Some(3_500));
    assert_eq!(kpis.outcome, TcpOutcome::Closed);
    // The last ACK after both FINs comes out on its own, still as the closed connection.
    for record in &h.exported[1..] {
        let tcp = record.extras.as_ref().unwrap().tcp.unwrap();
        assert_eq!(tcp.outcome, TcpOutcome::Closed);
        assert_eq!(
            tcp.rtt_server_us, None,
            "handshake figures are exported once"
        );
    }
}

#[test]
fn rtt_samples_from_timestamp_echoes() {
    let mut h = Harness::biflow();
    let t0 = 5_000_000;
    let mut syn = Seg::new(true, CISN, 0, SYN, 0);
    syn.ts = Some((100, 0));
    h.seg(syn, t0);
    let mut synack = Seg::new(false, SISN, CISN + 1, SYN | ACK, 0);
    synack.ts = Some((9_000, 100));
    h.seg(synack, t0 + 2_000);
    // The server sends three segments; the client's ACKs echo them 4, 6 and 8 ms later.
    let mut t = t0 + 10_000;
    for (i, delay) in [4_000u64, 6_000, 8_000].into_iter().enumerate() {
        let i = i as u32;
        let mut data = Seg::new(false, SISN + 1 + i * 100, CISN + 1, ACK, 100);
        data.ts = Some((9_001 + i, 200 + i));
        h.seg(data, t);
        let mut ack = Seg::new(true, CISN + 1, SISN + 101 + i * 100, ACK, 0);
        ack.ts = Some((300 + i, 9_001 + i));
        h.seg(ack, t + delay);
        t += 20_000;
    }
    h.finish();
    h.assert_nothing_lost();
    let kpis = h.kpis();
    assert_eq!(kpis.reverse.rtt_min_us, Some(4_000));
    assert_eq!(kpis.reverse.rtt_mean_us, Some(6_000));
    assert_eq!(kpis.reverse.rtt_max_us, Some(8_000));
    assert_eq!(kpis.forward.rtt_min_us, None, "the client sent no data");
}

#[test]
fn rtt_samples_from_sequence_and_ack_without_timestamps() {
    let mut h = Harness::biflow();
    http_like(&mut h, 0, 1_000, 1_000, 2_000);
    h.finish();
    let kpis = h.kpis();
    // The request (300 bytes) is acknowledged by the response 2 ms later, the client's
    // FIN by the server's 1 ms later.
    assert_eq!(kpis.forward.rtt_min_us, Some(1_000));
    assert_eq!(kpis.forward.rtt_max_us, Some(2_000));
    // The response is acknowledged by the client's FIN 5 ms later; the server's FIN by
    // the last ACK, which leaves in the record after.
    assert_eq!(kpis.reverse.rtt_min_us, Some(5_000));
    assert_eq!(kpis.reverse.rtt_max_us, Some(5_000));
    let tail = h.exported[1].extras.as_ref().unwrap().tcp.unwrap();
    assert_eq!(tail.reverse.rtt_mean_us, Some(1_000));
}

fn outcome_of(segments: &[(Seg, u64)], end: Option<u64>) -> (TcpOutcome, Harness) {
    let mut h = Harness::biflow();
    for (s, t) in segments {
        h.seg(*s, *t);
    }
    match end {
        Some(now) => h.expire(now),
        None => h.finish(),
    }
    h.assert_nothing_lost();
    (h.kpis().outcome, h)
}

#[test]
fn each_outcome() {
    let syn = Seg::new(true, CISN, 0, SYN, 0);
    let synack = Seg::new(false, SISN, CISN + 1, SYN | ACK, 0);
    let ack = Seg::new(true, CISN + 1, SISN + 1, ACK, 0);
    let data = Seg::new(true, CISN + 1, SISN + 1, ACK, 10);
    let refused = Seg::new(false, 0, CISN + 1, RST | ACK, 0);
    let reset = Seg::new(false, SISN + 1, CISN + 11, RST | ACK, 0);
    let (outcome, _) = outcome_of(&[(syn, 0), (refused, 500)], None);
    assert_eq!(outcome, TcpOutcome::Rejected);
    let (outcome, h) = outcome_of(&[(syn, 0), (syn, 1_000_000), (syn, 3_000_000)], None);
    assert_eq!(outcome, TcpOutcome::HalfOpen);
    assert_eq!(h.kpis().forward.syn_retransmits, 2);
    let (outcome, _) = outcome_of(
        &[(syn, 0), (synack, 10), (ack, 20), (data, 30), (reset, 40)],
        None,
    );
    assert_eq!(outcome, TcpOutcome::Reset);
    let (outcome, _) = outcome_of(&[(syn, 0), (synack, 10), (ack, 20), (data, 30)], None);
    assert_eq!(outcome, TcpOutcome::Open, "still open at the forced flush");
    let (outcome, _) = outcome_of(
        &[(syn, 0), (synack, 10), (ack, 20), (data, 30)],
        Some(60_000_000),
    );
    assert_eq!(outcome, TcpOutcome::Established, "ended idle");
    let mid = Seg::new(true, 77_777, 88_888, ACK, 100);
    let mid_back = Seg::new(false, 88_888, 77_877, ACK, 0);
    let (outcome, h) = outcome_of(&[(mid, 0), (mid_back, 10), (mid, 20)], None);
    assert_eq!(outcome, TcpOutcome::Midstream);
    assert_eq!(h.kpis().forward.retrans_packets, 1);
}

#[test]
fn zero_window_events_count_transitions() {
    let mut h = Harness::biflow();
    http_like(&mut h, 0, 1_000, 1_000, 2_000);
    let mut zero = Seg::new(false, SISN + 1_001, CISN + 301, ACK, 0);
    zero.window = 0;
    h.seg(zero, 20_000);
    h.seg(zero, 21_000);
    let mut open = zero;
    open.window = 1_000;
    h.seg(open, 22_000);
    h.seg(zero, 23_000);
    h.finish();
    h.assert_nothing_lost();
    let zero_windows: u32 = h
        .exported
        .iter()
        .filter_map(|r| r.extras.as_ref()?.tcp)
        .map(|k| k.reverse.zero_window_events)
        .sum();
    assert_eq!(zero_windows, 2);
}

#[test]
fn without_biflow_each_direction_keeps_its_record_and_kpis() {
    let mut h = Harness::new(
        KpiConfig {
            biflow: false,
            ..KpiConfig::default()
        },
        CacheConfig {
            capacity: 4096,
            ..CacheConfig::default()
        },
    );
    http_like(&mut h, 0, 1_000, 2_000, 3_000);
    h.finish();
    assert_eq!(h.folded, 0);
    assert!(h.exported.iter().all(|r| reverse(r).is_none()));
    let total: u64 = h.exported.iter().map(|r| r.packets).sum();
    assert_eq!(total, h.accounted);
    let with_handshake: Vec<_> = h
        .exported
        .iter()
        .filter_map(|r| r.extras.as_ref()?.tcp)
        .filter(|k| k.rtt_client_us.is_some())
        .collect();
    assert_eq!(with_handshake.len(), 1);
    assert_eq!(with_handshake[0].rtt_server_us, Some(1_000));
}

/// A conversation whose initiator has two records in the cache at once (its packets with
/// two ToS values: two flows of the cache, one conversation) and a responder with one
/// leaves as one biflow when the cache is flushed: each record folds while another of
/// the conversation is still cached, whatever the order they leave in. Followed packet by
/// packet (TCP with KPIs) and record by record (UDP; TCP without KPIs).
#[test]
fn records_of_a_conversation_in_the_cache_together_leave_as_one_biflow() {
    for (udp, tcp_kpis) in [(true, true), (true, false), (false, false), (false, true)] {
        let config = KpiConfig {
            tcp: tcp_kpis,
            ..KpiConfig::default()
        };
        let mut h = Harness::new(
            config,
            CacheConfig {
                capacity: 4096,
                ..CacheConfig::default()
            },
        );
        let between = |src, dst, tos: u8| {
            let mut f = if udp {
                udp_between(src, dst, 20)
            } else {
                frame_between(src, dst, &Seg::new(true, 1, 1, ACK, 20))
            };
            f[15] = tos;
            f
        };
        let mut t = 1_000_000;
        for tos in [0, 0x10, 0, 0x10, 0x10] {
            h.packet(&between(CLIENT, SERVER, tos), t);
            t += 1_000;
        }
        for _ in 0..2 {
            h.packet(&between(SERVER, CLIENT, 0), t);
            t += 1_000;
        }
        h.finish();
        h.assert_nothing_lost();
        assert_eq!(
            h.exported.len(),
            1,
            "udp {udp}, tcp kpis {tcp_kpis}: {:#?}",
            h.exported
        );
        let r = &h.exported[0];
        assert_eq!((r.key.src_port, r.packets), (CLIENT.1, 5));
        assert_eq!(reverse(r).map(|rev| rev.packets), Some(2));
        assert_eq!(h.folded, 2);
    }
}

/// A connection picked up at its SYN-ACK (the SYN missed): the SYN-ACK's receiver is the
/// initiator, with TCP KPIs or without (then from the record the SYN-ACK started).
#[test]
fn the_receiver_of_a_first_syn_ack_initiates() {
    for tcp_kpis in [false, true] {
        let mut h = Harness::new(
            KpiConfig {
                tcp: tcp_kpis,
                ..KpiConfig::default()
            },
            CacheConfig {
                capacity: 4096,
                ..CacheConfig::default()
            },
        );
        h.seg(Seg::new(false, SISN, CISN + 1, SYN | ACK, 0), 1_000_000);
        h.seg(Seg::new(true, CISN + 1, SISN + 1, ACK, 0), 1_001_000);
        h.seg(Seg::new(true, CISN + 1, SISN + 1, ACK, 100), 1_002_000);
        h.finish();
        h.assert_nothing_lost();
        assert_eq!(
            h.exported.len(),
            1,
            "tcp kpis {tcp_kpis}: {:#?}",
            h.exported
        );
        let r = &h.exported[0];
        assert_eq!(
            (r.key.src_port, r.packets),
            (CLIENT.1, 2),
            "tcp kpis {tcp_kpis}"
        );
        assert_eq!(reverse(r).map(|rev| rev.packets), Some(1));
    }
}

/// Segments of one direction's data: `sizes` bytes each from `isn + 1`.
fn data_segments(isn: u32, sizes: &[usize]) -> Vec<Seg> {
    let mut seq = isn.wrapping_add(1);
    sizes
        .iter()
        .map(|&size| {
            let s = Seg::new(true, seq, SISN + 1, ACK, size);
            seq = seq.wrapping_add(size as u32);
            s
        })
        .collect()
}

fn handshake(h: &mut Harness, isn: u32) {
    h.seg(Seg::new(true, isn, 0, SYN, 0), 1_000);
    h.seg(
        Seg::new(false, SISN, isn.wrapping_add(1), SYN | ACK, 0),
        2_000,
    );
    h.seg(Seg::new(true, isn.wrapping_add(1), SISN + 1, ACK, 0), 3_000);
}

fn summed(h: &Harness) -> (u32, u64, u32) {
    h.exported
        .iter()
        .filter_map(|r| r.extras.as_ref()?.tcp)
        .fold((0, 0, 0), |(p, o, r), k| {
            (
                p + k.forward.retrans_packets,
                o + k.forward.retrans_octets,
                r + k.forward.out_of_order_packets,
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// In-order data across the 2^32 wrap is neither retransmitted nor reordered;
    /// duplicates of earlier segments are retransmissions, payload octets counted.
    #[test]
    fn sequence_wraparound(
        isn_offset in 0u32..20_000,
        sizes in prop::collection::vec(1usize..1_400, 1..40),
        dups in prop::collection::vec(any::<prop::sample::Index>(), 0..5),
    ) {
        let isn = u32::MAX - isn_offset;
        let mut h = Harness::biflow();
        handshake(&mut h, isn);
        let segments = data_segments(isn, &sizes);
        let mut t = 10_000;
        for s in &segments {
            h.seg(*s, t);
            t += 10;
        }
        let mut octets = 0;
        for d in &dups {
            let s = segments[d.index(segments.len())];
            octets += s.payload as u64;
            h.seg(s, t);
            t += 10;
        }
        h.finish();
        h.assert_nothing_lost();
        prop_assert_eq!(summed(&h), (dups.len() as u32, octets, 0));
    }

    /// Swapping neighbours is reordering; sending again is retransmission.
    #[test]
    fn retransmission_versus_reordering(
        sizes in prop::collection::vec(1usize..1_400, 2..40),
        swaps in prop::collection::vec(any::<bool>(), 40),
        dups in prop::collection::vec(any::<prop::sample::Index>(), 0..5),
        isn in any::<u32>(),
    ) {
        let segments = data_segments(isn, &sizes);
        let mut order: Vec<usize> = (0..segments.len()).collect();
        let mut swapped = 0;
        let mut i = 0;
        while i + 1 < order.len() {
            if swaps[i] {
                order.swap(i, i + 1);
                swapped += 1;
                i += 2;
            } else {
                i += 1;
            }
        }
        let mut h = Harness::biflow();
        handshake(&mut h, isn);
        let mut t = 10_000;
        for &i in &order {
            h.seg(segments[i], t);
            t += 10;
        }
        for d in &dups {
            h.seg(segments[d.index(segments.len())], t);
            t += 10;
        }
        h.finish();
        h.assert_nothing_lost();
        let (retrans, _, reordered) = summed(&h);
        prop_assert_eq!(retrans, dups.len() as u32);
        prop_assert_eq!(reordered, swapped);
    }

    /// Whatever precedes it, a SYN starts the connection again: the handshake is timed
    /// from it and the outcome follows it.
    #[test]
    fn packets_before_the_handshake(
        junk in prop::collection::vec((any::<bool>(), any::<u32>(), any::<u32>(), any::<u8>(), 0usize..100), 0..10),
    ) {
        let mut h = Harness::biflow();
        let mut t = 0;
        for (from_client, seq, ack, flags, len) in junk {
            // Anything but SYN and RST (a RST would end the connection it belongs to).
            h.seg(Seg::new(from_client, seq, ack, flags & !(SYN | RST) | ACK, len), t);
            t += 100;
        }
        let base = t + 1_000_000;
        http_like(&mut h, base, 2_000, 4_000, 1_000);
        h.finish();
        h.assert_nothing_lost();
        let with_handshake: Vec<TcpKpis> = h
            .exported
            .iter()
            .filter_map(|r| r.extras.as_ref()?.tcp)
            .filter(|k| k.rtt_server_us.is_some())
            .collect();
        prop_assert_eq!(with_handshake.len(), 1);
        prop_assert_eq!(with_handshake[0].rtt_server_us, Some(2_000));
        prop_assert_eq!(with_handshake[0].rtt_client_us, Some(4_000));
    }

    /// Every copy of the SYN after the first is a SYN retransmission, and the server side
    /// is timed from the last one (the one answered).
    #[test]
    fn duplicate_syns(copies in 1usize..6, gap in 1u64..2_000_000) {
        let mut h = Harness::biflow();
        let mut t = 0;
        for _ in 0..copies {
            h.seg(Seg::new(true, CISN, 0, SYN, 0), t);
            t += gap;
        }
        h.seg(Seg::new(false, SISN, CISN + 1, SYN | ACK, 0), t);
        h.seg(Seg::new(true, CISN + 1, SISN + 1, ACK, 0), t + 500);
        h.finish();
        h.assert_nothing_lost();
        let kpis = h.kpis();
        prop_assert_eq!(kpis.forward.syn_retransmits, copies as u32 - 1);
        prop_assert_eq!(kpis.rtt_server_us, Some(gap as u32));
        prop_assert_eq!(kpis.outcome, TcpOutcome::Open);
    }

    /// Random bytes as a TCP header and options (any data offset, crafted option lengths)
    /// on one conversation never panic and leave another conversation's KPIs as they are.
    #[test]
    fn hostile_headers_touch_only_their_own_flow(
        hostile in prop::collection::vec(prop::collection::vec(any::<u8>(), 20..80), 1..20),
    ) {
        let clean = |h: &mut Harness| http_like(h, 1_000_000, 3_000, 2_000, 1_000);
        let mut alone = Harness::biflow();
        clean(&mut alone);
        alone.finish();
        let mut mixed = Harness::biflow();
        for (i, bytes) in hostile.iter().enumerate() {
            let mut f = frame_between(([10, 9, 9, 9], 1), ([10, 9, 9, 8], 2), &Seg::new(true, 0, 0, ACK, 0));
            // Replace the TCP header (after 14 + 20 bytes) but keep its ports, then fix the
            // IP length so the frame still parses.
            f.truncate(38);
            f.extend_from_slice(&bytes[4..]);
            let ip_len = (f.len() - 14) as u16;
            f[16..18].copy_from_slice(&ip_len.to_be_bytes());
            mixed.packet(&f, i as u64);
        }
        clean(&mut mixed);
        mixed.finish();
        mixed.assert_nothing_lost();
        let ours = |h: &Harness| -> Vec<FlowRecord> {
            h.exported.iter().filter(|r| r.key.src_port == CLIENT.1).cloned().collect()
        };
        prop_assert_eq!(ours(&alone), ours(&mixed));
    }

    /// Several conversations, both directions, idle gaps and FINs, followed packet by
    /// packet (TCP with KPIs) or record by record (UDP, and TCP without KPIs): every
    /// accounted packet is exported once, and a biflow's source is its initiator.
    #[test]
    fn biflows_lose_nothing(
        packets in prop::collection::vec((0u16..4, any::<bool>(), 0u8..4, 0u64..20_000), 1..200),
        tcp_kpis in any::<bool>(),
        udp in any::<bool>(),
    ) {
        // Conversations are never forgotten here, so each keeps its first initiator.
        let config = KpiConfig { linger_us: u64::MAX / 2, tcp: tcp_kpis, ..KpiConfig::default() };
        let mut h = Harness::new(config, CacheConfig {
            capacity: 64,
            bucket_size: 8,
            inactive_timeout_ms: 5_000,
            active_timeout_ms: 30_000,
            ..CacheConfig::default()
        });
        let mut t = 0;
        let mut first_sender = std::collections::HashMap::new();
        for (conversation, from_a, kind, gap_ms) in packets {
            t += gap_ms * 1_000;
            let a = ([10, 1, 0, conversation as u8], 1_000 + conversation);
            let b = ([10, 2, 0, 1], 443);
            let (src, dst) = if from_a { (a, b) } else { (b, a) };
            first_sender.entry(conversation).or_insert(src);
            let flags = match kind {
                0 => ACK,
                1 => ACK | FIN,
                _ => ACK,
            };
            let f = if udp {
                udp_between(src, dst, 10 + usize::from(kind))
            } else {
                frame_between(src, dst, &Seg::new(true, 1, 1, flags, 10))
            };
            h.packet(&f, t);
            if gap_ms > 15_000 {
                h.expire(t);
            }
        }
        h.finish();
        h.assert_nothing_lost();
        for r in &h.exported {
            let conversation = if r.key.src_port == 443 { r.key.dst_port } else { r.key.src_port } - 1_000;
            let initiator = first_sender[&conversation];
            prop_assert_eq!(r.key.src_port, initiator.1, "record {:?}", r);
            prop_assert!(reverse(r).is_some());
            prop_assert!(r.end_reason != EndReason::Active || r.packets > 0);
        }
    }
}
