//! The DNS reader and the DNS analyzer on arbitrary bytes (compression loops, truncated
//! names, labels past the end, counts that promise more records than there are): the
//! reader must never panic or loop and must read the same bytes the same way; the bytes as
//! a query and as a response through the analyzers extension must never panic either.
#![no_main]

use flowcache::FlowKey;
use libfuzzer_sys::fuzz_target;
use monitors::analyzers::dns_wire::parse_message;
use monitors::analyzers::{
    Analyzers, AnalyzersSettings, DnsSettings, HalfOpenSettings, PerDestinationSettings, Statistic,
    SynFloodSettings, TriggerMode, TriggerSettings,
};
use probe::ext::{ExtOutput, Extension, Interest, PacketView};
use probe::parse::parse_frame_into;

/// Longest possible name text: 255 wire octets, every byte escaped as `\DDD`.
const MAX_NAME_TEXT: usize = 255 * 4;

fuzz_target!(|message: &[u8]| {
    if let Ok(parsed) = parse_message(message) {
        assert!(
            parsed.qname.len() <= MAX_NAME_TEXT,
            "{}",
            parsed.qname.len()
        );
        assert_eq!(parse_message(message), Ok(parsed));
    }
    let mut analyzers = Analyzers::new(&dns_only()).expect("dns is on");
    let mut events = Vec::new();
    // The same id and ports both ways: the response may match the query.
    for (src, sport, dst, dport, t) in [
        ([10, 0, 0, 1], 40000, [10, 0, 0, 53], 53, 1_000),
        ([10, 0, 0, 53], 53, [10, 0, 0, 1], 40000, 2_000),
    ] {
        let frame = udp_frame(src, sport, dst, dport, message);
        let mut key = FlowKey::default();
        let meta = parse_frame_into(&frame, frame.len() as u32, &mut key);
        let view = PacketView {
            frame: &frame,
            wire_len: frame.len() as u32,
            timestamp_us: t,
            key: &key,
            hash: flowcache::flow_hash(&key),
            meta,
            sampled: true,
            classes: Interest::of(&key, &meta),
        };
        analyzers.on_packet(&view, &mut ExtOutput::new(&mut events));
    }
    let mut counters = Vec::new();
    analyzers.counters(&mut counters);
});

fn udp_frame(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
    let builder = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, dst, 64)
        .udp(sport, dport);
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    // Payloads past an IP packet's size cannot be built: the reader alone saw them.
    let _ = builder.write(&mut frame, payload);
    frame
}

fn dns_only() -> AnalyzersSettings {
    let off = TriggerSettings {
        mode: TriggerMode::Off,
        statistic: Statistic::NewFlowsPerSec,
        threshold: 1.0,
        hold_us: 0,
    };
    AnalyzersSettings {
        syn_flood: SynFloodSettings {
            trigger: off,
            syn_per_sec: 1,
            hold_us: 0,
            max_victims: 1,
            max_sources: 1,
            top_sources: 0,
        },
        half_open: HalfOpenSettings {
            trigger: off,
            timeout_us: 1,
            threshold: 1,
            max_pending: 1,
            max_destinations: 1,
            top_n: 0,
        },
        dns: DnsSettings {
            trigger: TriggerSettings {
                mode: TriggerMode::Always,
                ..off
            },
            max_pending: 4,
            max_transactions: 4,
        },
        per_destination: PerDestinationSettings {
            trigger: off,
            prefix_len_v4: 32,
            prefix_len_v6: 128,
            max_destinations: 1,
            top_n: 1,
            interval_us: 1,
        },
    }
}
