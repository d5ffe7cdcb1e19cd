//! The analyzers (issue 18): a SYN-flood detector, a half-open TCP tracker, a DNS
//! transaction analyzer and per-destination accounting, run on shared statistics and each
//! only when needed.
//!
//! One extension, [`Analyzers`], is attached to a worker when at least one analyzer is not
//! `off`. It keeps the [`SharedStats`] (new flows per second, SYNs per second to the
//! busiest destination, share of handshakes left half-open), fed only the packet classes
//! some trigger reads, and dispatches each packet to the analyzers whose [`Trigger`] is on
//! and whose classes it belongs to. An `off` analyzer is not built at all; an `auto` one
//! costs one flag test per packet of its class until its statistic crosses the threshold
//! (`trigger_on`), and stops when the statistic stayed below it for the hold time
//! (`trigger_off`, after the analyzer closed what it had open).

mod dns;
pub mod dns_wire;
mod half_open;
mod per_destination;
mod stats;
mod syn_flood;

use std::fmt;
use std::net::IpAddr;

use flowcache::counters::{CounterSet, Spec};
use flowcache::{FlowKey, FlowRecord};
use probe::ext::{
    Burst, Event, ExtCounter, ExtOutput, Extension, Interest, PacketView, RecordFate,
};

pub use dns::DnsAnalyzer;
pub use half_open::HalfOpenTracker;
pub use per_destination::{DestinationHub, DestinationTop, DestinationTotals, PerDestination};
pub use stats::{SharedStats, WINDOW_US, WindowStats};
pub use syn_flood::SynFloodDetector;

/// When an analyzer runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TriggerMode {
    Always,
    #[default]
    Off,
    /// While a shared statistic is over a threshold, and for the hold time after.
    Auto,
}

impl TriggerMode {
    pub const NAMES: [&'static str; 3] = ["always", "off", "auto"];

    pub fn from_name(name: &str) -> Option<TriggerMode> {
        match name {
            "always" => Some(TriggerMode::Always),
            "off" => Some(TriggerMode::Off),
            "auto" => Some(TriggerMode::Auto),
            _ => None,
        }
    }
}

/// A shared statistic a trigger can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Statistic {
    /// Flows first seen per second (a flow idle for a whole second counts again).
    NewFlowsPerSec,
    /// SYNs per second to the destination address that receives the most.
    SynsPerSecToOneDestination,
    /// Share (0 to 1) of the last second's handshakes whose ACK did not follow in it.
    HalfOpenShare,
}

impl Statistic {
    pub const NAMES: [&'static str; 3] = [
        "new_flows_per_sec",
        "syns_per_sec_to_one_destination",
        "half_open_share",
    ];

    pub fn name(self) -> &'static str {
        match self {
            Statistic::NewFlowsPerSec => Self::NAMES[0],
            Statistic::SynsPerSecToOneDestination => Self::NAMES[1],
            Statistic::HalfOpenShare => Self::NAMES[2],
        }
    }

    pub fn from_name(name: &str) -> Option<Statistic> {
        [
            Statistic::NewFlowsPerSec,
            Statistic::SynsPerSecToOneDestination,
            Statistic::HalfOpenShare,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }
}

/// An analyzer's trigger, as configured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TriggerSettings {
    pub mode: TriggerMode,
    pub statistic: Statistic,
    pub threshold: f64,
    /// How long the statistic must stay below the threshold before the analyzer stops.
    pub hold_us: u64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SynFloodSettings {
    pub trigger: TriggerSettings,
    /// SYNs per second to one address that make it a victim.
    pub syn_per_sec: u64,
    /// A flood ends when its victim stayed below `syn_per_sec` this long.
    pub hold_us: u64,
    /// Destinations tracked at once.
    pub max_victims: usize,
    /// (victim, source) pairs tracked at once, over all victims.
    pub max_sources: usize,
    /// Sources listed in a start event when the flood does not look spoofed.
    pub top_sources: usize,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HalfOpenSettings {
    pub trigger: TriggerSettings,
    /// A handshake not completed this long after its SYN is half-open.
    pub timeout_us: u64,
    /// Half-open handshakes per second to one destination that raise a `half_open` event.
    pub threshold: u64,
    pub max_pending: usize,
    pub max_destinations: usize,
    /// Destinations listed in the event.
    pub top_n: usize,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DnsSettings {
    pub trigger: TriggerSettings,
    /// Queries awaiting their response.
    pub max_pending: usize,
    /// Finished transactions awaiting their flow's record.
    pub max_transactions: usize,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PerDestinationSettings {
    pub trigger: TriggerSettings,
    /// Destinations are counted per prefix of this length.
    pub prefix_len_v4: u8,
    pub prefix_len_v6: u8,
    pub max_destinations: usize,
    /// Destinations exported per interval (the busiest by octets).
    pub top_n: usize,
    /// Totals are exported and restarted once per interval.
    pub interval_us: u64,
}

/// Every analyzer's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AnalyzersSettings {
    pub syn_flood: SynFloodSettings,
    pub half_open: HalfOpenSettings,
    pub dns: DnsSettings,
    pub per_destination: PerDestinationSettings,
}

flowcache::counters! {
    /// The analyzers' counters (`tapflow_analyzers_<name>_total`), summed over the
    /// analyzers that are built; an `off` analyzer's stay zero.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct AnalyzerStats {
        syn_flood_starts: u64 = Spec::counter("syn_flood_starts", "analyzers: syn flood starts", "SYN floods detected (syn_flood_start events).").when_nonzero(),
        syn_flood_ends: u64 = Spec::counter("syn_flood_ends", "analyzers: syn flood ends", "SYN floods ended (syn_flood_end events).").when_nonzero(),
        syn_flood_destination_evictions: u64 = Spec::counter("syn_flood_destination_evictions", "analyzers: syn flood destination evictions", "Destinations the SYN-flood detector dropped because its table was full.").when_nonzero(),
        syn_flood_source_evictions: u64 = Spec::counter("syn_flood_source_evictions", "analyzers: syn flood source evictions", "(victim, source) pairs the SYN-flood detector dropped because its table was full.").when_nonzero(),
        syn_flood_victims_refused: u64 = Spec::counter("syn_flood_victims_refused", "analyzers: syn flood victims refused", "Floods not reported because max_victims floods were already open.").when_nonzero(),
        half_open_handshakes: u64 = Spec::counter("half_open_handshakes", "analyzers: half open handshakes", "TCP handshakes not completed within the half-open timeout.").when_nonzero(),
        half_open_completed: u64 = Spec::counter("half_open_completed", "analyzers: half open completed", "TCP handshakes the half-open tracker saw completed.").when_nonzero(),
        half_open_events: u64 = Spec::counter("half_open_events", "analyzers: half open events", "half_open events raised.").when_nonzero(),
        half_open_pending_evictions: u64 = Spec::counter("half_open_pending_evictions", "analyzers: half open pending evictions", "SYNs not tracked because max_pending handshakes were pending.").when_nonzero(),
        half_open_destination_evictions: u64 = Spec::counter("half_open_destination_evictions", "analyzers: half open destination evictions", "Destinations dropped from the half-open counts because the table was full.").when_nonzero(),
        dns_queries: u64 = Spec::counter("dns_queries", "analyzers: dns queries", "DNS queries read.").when_nonzero(),
        dns_responses: u64 = Spec::counter("dns_responses", "analyzers: dns responses", "DNS responses read.").when_nonzero(),
        dns_unmatched_responses: u64 = Spec::counter("dns_unmatched_responses", "analyzers: dns unmatched responses", "DNS responses whose query was not seen (latency unknown).").when_nonzero(),
        dns_malformed: u64 = Spec::counter("dns_malformed", "analyzers: dns malformed", "Packets to or from port 53 that hold no readable DNS message.").when_nonzero(),
        dns_query_evictions: u64 = Spec::counter("dns_query_evictions", "analyzers: dns query evictions", "Unanswered DNS queries dropped because the table was full.").when_nonzero(),
        dns_transaction_evictions: u64 = Spec::counter("dns_transaction_evictions", "analyzers: dns transaction evictions", "DNS transactions dropped before their flow's record because the table was full.").when_nonzero(),
        per_destination_records: u64 = Spec::counter("per_destination_records", "analyzers: per destination records", "destination_totals records exported.").when_nonzero(),
        per_destination_evictions: u64 = Spec::counter("per_destination_evictions", "analyzers: per destination evictions", "Record directions left out of an interval's totals because max_destinations prefixes were counted already.").when_nonzero(),
        per_destination_late: u64 = Spec::counter("per_destination_late", "analyzers: per destination late", "Interval totals a worker handed over after the sum over the workers had closed that interval: in its destination_totals records, not in the metrics endpoint's top.").when_nonzero(),
        trigger_changes: u64 = Spec::counter("trigger_changes", "analyzers: trigger changes", "Analyzer triggers switched on or off (trigger_on and trigger_off events).").when_nonzero(),
    }
}

/// What every analyzer does; [`Analyzers`] calls it only while the trigger is on.
trait Analyzer: fmt::Debug + Send {
    fn name(&self) -> &'static str;
    fn interest(&self) -> Interest;
    fn on_packet(&mut self, packet: &PacketView<'_>, out: &mut ExtOutput<'_>);
    fn on_clock(&mut self, _now_us: u64, _out: &mut ExtOutput<'_>) {}
    /// Called for every record, whatever the trigger (`on` says whether it is on): fields
    /// found while on still go out.
    fn on_record(&mut self, _record: &mut FlowRecord, _on: bool) {}
    /// The trigger went off or the worker stops: close what is open, drop working state.
    fn stop(&mut self, _now_us: u64, _out: &mut ExtOutput<'_>) {}
    /// The worker stops, whatever the trigger (after `stop` when it was on).
    fn finish(&mut self) {}
    fn counters(&self, _stats: &mut AnalyzerStats) {}
}

/// An analyzer's on/off state.
#[derive(Debug)]
pub struct Trigger {
    analyzer: &'static str,
    settings: TriggerSettings,
    on: bool,
    on_since_us: u64,
    /// Last time the statistic was at or over the threshold.
    above_us: u64,
    pub changes: u64,
}

/// What a trigger did on a clock step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TriggerChange {
    On,
    Off,
}

impl Trigger {
    pub fn new(analyzer: &'static str, settings: TriggerSettings) -> Trigger {
        Trigger {
            analyzer,
            settings,
            on: settings.mode == TriggerMode::Always,
            on_since_us: 0,
            above_us: 0,
            changes: 0,
        }
    }

    pub fn is_on(&self) -> bool {
        self.on
    }

    /// Reads the statistic at `now_us`; switches (and emits `trigger_on` or `trigger_off`)
    /// when an `auto` trigger crosses.
    pub fn update(
        &mut self,
        now_us: u64,
        stats: &SharedStats,
        out: &mut ExtOutput<'_>,
    ) -> Option<TriggerChange> {
        if self.settings.mode != TriggerMode::Auto {
            return None;
        }
        let value = stats.value(self.settings.statistic);
        let above = value >= self.settings.threshold;
        if above {
            self.above_us = now_us;
        }
        let change = match (self.on, above) {
            (false, true) => {
                self.on = true;
                self.on_since_us = now_us;
                TriggerChange::On
            }
            (true, false) if now_us.saturating_sub(self.above_us) >= self.settings.hold_us => {
                self.on = false;
                TriggerChange::Off
            }
            _ => return None,
        };
        self.changes += 1;
        let kind = match change {
            TriggerChange::On => "trigger_on",
            TriggerChange::Off => "trigger_off",
        };
        let mut event = Event::new(kind, now_us)
            .with("analyzer", self.analyzer)
            .with("statistic", self.settings.statistic.name())
            .with("value", value)
            .with("threshold", self.settings.threshold);
        if change == TriggerChange::Off {
            event = event.with("on_for_us", now_us - self.on_since_us);
        }
        out.emit(event);
        Some(change)
    }
}

/// One analyzer that is built, by its type: the per-packet and per-record calls go
/// straight to it (and are inlined into the dispatch); the rest go through
/// [`Analyzer`] as a trait object.
#[derive(Debug)]
enum Kind {
    SynFlood(SynFloodDetector),
    HalfOpen(HalfOpenTracker),
    Dns(DnsAnalyzer),
    PerDestination(PerDestination),
}

impl Kind {
    fn get(&self) -> &dyn Analyzer {
        match self {
            Kind::SynFlood(a) => a,
            Kind::HalfOpen(a) => a,
            Kind::Dns(a) => a,
            Kind::PerDestination(a) => a,
        }
    }

    fn get_mut(&mut self) -> &mut dyn Analyzer {
        match self {
            Kind::SynFlood(a) => a,
            Kind::HalfOpen(a) => a,
            Kind::Dns(a) => a,
            Kind::PerDestination(a) => a,
        }
    }

    #[inline(always)]
    fn on_packet(&mut self, packet: &PacketView<'_>, out: &mut ExtOutput<'_>) {
        match self {
            Kind::SynFlood(a) => a.on_packet(packet, out),
            Kind::HalfOpen(a) => a.on_packet(packet, out),
            Kind::Dns(a) => a.on_packet(packet, out),
            Kind::PerDestination(a) => a.on_packet(packet, out),
        }
    }

    #[inline]
    fn on_record(&mut self, record: &mut FlowRecord, on: bool) {
        match self {
            Kind::SynFlood(a) => a.on_record(record, on),
            Kind::HalfOpen(a) => a.on_record(record, on),
            Kind::Dns(a) => a.on_record(record, on),
            Kind::PerDestination(a) => a.on_record(record, on),
        }
    }
}

#[derive(Debug)]
struct Slot {
    trigger: Trigger,
    interest: Interest,
    /// `interest` while the trigger is on, none while it is off: the one test a packet
    /// pays per analyzer.
    live: Interest,
    analyzer: Kind,
}

impl Slot {
    fn follow_trigger(&mut self) {
        self.live = if self.trigger.is_on() {
            self.interest
        } else {
            Interest::NONE
        };
    }
}

/// The `analyzers` extension: the shared statistics and the analyzers not `off`.
#[derive(Debug)]
pub struct Analyzers {
    stats: SharedStats,
    stats_interest: Interest,
    slots: Vec<Slot>,
    interest: Interest,
}

impl Analyzers {
    /// `None` when every analyzer is off: then nothing is attached and nothing runs.
    pub fn new(settings: &AnalyzersSettings) -> Option<Analyzers> {
        Analyzers::with_destination_hub(settings, None)
    }

    /// [`Analyzers::new`], with per-destination accounting also summed at `hub` with
    /// the other workers' (what the metrics endpoint shows).
    pub fn with_destination_hub(
        settings: &AnalyzersSettings,
        hub: Option<std::sync::Arc<DestinationHub>>,
    ) -> Option<Analyzers> {
        let mut analyzers: Vec<(TriggerSettings, Kind)> = Vec::new();
        let s = settings;
        if s.syn_flood.trigger.mode != TriggerMode::Off {
            analyzers.push((
                s.syn_flood.trigger,
                Kind::SynFlood(SynFloodDetector::new(s.syn_flood)),
            ));
        }
        if s.half_open.trigger.mode != TriggerMode::Off {
            analyzers.push((
                s.half_open.trigger,
                Kind::HalfOpen(HalfOpenTracker::new(s.half_open)),
            ));
        }
        if s.dns.trigger.mode != TriggerMode::Off {
            analyzers.push((s.dns.trigger, Kind::Dns(DnsAnalyzer::new(s.dns))));
        }
        if s.per_destination.trigger.mode != TriggerMode::Off {
            analyzers.push((
                s.per_destination.trigger,
                Kind::PerDestination(match hub {
                    Some(hub) => PerDestination::with_hub(s.per_destination, hub),
                    None => PerDestination::new(s.per_destination),
                }),
            ));
        }
        if analyzers.is_empty() {
            return None;
        }
        let statistics: Vec<Statistic> = analyzers
            .iter()
            .filter(|(trigger, _)| trigger.mode == TriggerMode::Auto)
            .map(|(trigger, _)| trigger.statistic)
            .collect();
        let stats = SharedStats::new(&statistics);
        let stats_interest = stats.interest();
        let slots: Vec<Slot> = analyzers
            .into_iter()
            .map(|(trigger, analyzer)| {
                let mut slot = Slot {
                    trigger: Trigger::new(analyzer.get().name(), trigger),
                    interest: analyzer.get().interest(),
                    live: Interest::NONE,
                    analyzer,
                };
                slot.follow_trigger();
                slot
            })
            .collect();
        let interest = slots
            .iter()
            .fold(stats_interest, |all, slot| all.union(slot.interest));
        Some(Analyzers {
            stats,
            stats_interest,
            slots,
            interest,
        })
    }

    /// Whether the named analyzer runs now.
    pub fn is_on(&self, analyzer: &str) -> bool {
        self.slots
            .iter()
            .any(|slot| slot.analyzer.get().name() == analyzer && slot.trigger.is_on())
    }
}

impl Extension for Analyzers {
    fn name(&self) -> &'static str {
        "analyzers"
    }

    fn interest(&self) -> Interest {
        self.interest
    }

    #[inline]
    fn on_packet(&mut self, packet: &PacketView<'_>, out: &mut ExtOutput<'_>) {
        if self.stats_interest.intersects(packet.classes) {
            self.stats.observe(packet);
        }
        for slot in &mut self.slots {
            if slot.live.intersects(packet.classes) {
                slot.analyzer.on_packet(packet, out);
            }
        }
    }

    fn on_burst(&mut self, burst: &Burst<'_>, out: &mut ExtOutput<'_>) {
        if self.stats_interest.intersects(burst.classes()) {
            for packet in burst.views(self.stats_interest) {
                self.stats.observe(&packet);
            }
        }
        // Analyzer by analyzer, each over the whole burst: a loop per analyzer type with
        // its `on_packet` inlined, and the packets of no subscribed class skipped in it.
        for slot in &mut self.slots {
            let live = slot.live;
            if !live.intersects(burst.classes()) {
                continue;
            }
            match &mut slot.analyzer {
                Kind::SynFlood(a) => run(a, burst, live, out),
                Kind::HalfOpen(a) => run(a, burst, live, out),
                Kind::Dns(a) => run(a, burst, live, out),
                Kind::PerDestination(a) => run(a, burst, live, out),
            }
        }
    }

    fn on_clock(&mut self, now_us: u64, out: &mut ExtOutput<'_>) {
        self.stats.advance(now_us);
        for slot in &mut self.slots {
            match slot.trigger.update(now_us, &self.stats, out) {
                Some(TriggerChange::Off) => slot.analyzer.get_mut().stop(now_us, out),
                Some(TriggerChange::On) | None => {}
            }
            slot.follow_trigger();
            if slot.trigger.is_on() {
                slot.analyzer.get_mut().on_clock(now_us, out);
            }
        }
    }

    fn on_record(&mut self, record: &mut FlowRecord) -> RecordFate {
        for slot in &mut self.slots {
            slot.analyzer.on_record(record, slot.trigger.is_on());
        }
        RecordFate::Keep
    }

    fn on_finish(&mut self, now_us: u64, out: &mut ExtOutput<'_>) {
        for slot in &mut self.slots {
            let analyzer = slot.analyzer.get_mut();
            if slot.trigger.is_on() {
                analyzer.on_clock(now_us, out);
                analyzer.stop(now_us, out);
            }
            analyzer.finish();
        }
    }

    fn counters(&self, out: &mut Vec<ExtCounter>) {
        let mut stats = AnalyzerStats {
            trigger_changes: self.slots.iter().map(|slot| slot.trigger.changes).sum(),
            ..AnalyzerStats::default()
        };
        for slot in &self.slots {
            slot.analyzer.get().counters(&mut stats);
        }
        out.extend(stats.series());
    }
}

#[inline(always)]
fn run<A: Analyzer>(analyzer: &mut A, burst: &Burst<'_>, live: Interest, out: &mut ExtOutput<'_>) {
    for packet in burst.views(live) {
        analyzer.on_packet(&packet, out);
    }
}

/// A SYN opening a connection (not the SYN-ACK).
#[inline]
pub(crate) fn is_syn(flags: u8) -> bool {
    flags & 0x12 == 0x02
}

/// An ACK without SYN, FIN or RST: what completes a handshake.
#[inline]
pub(crate) fn is_handshake_ack(flags: u8) -> bool {
    flags & 0x17 == 0x10
}

/// An address as a compact map key: version and the 16 address bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AddrKey {
    pub version: u8,
    pub bytes: [u8; 16],
}

impl AddrKey {
    pub fn dst(key: &FlowKey) -> AddrKey {
        AddrKey {
            version: key.ip_version,
            bytes: key.dst_addr,
        }
    }

    pub fn src(key: &FlowKey) -> AddrKey {
        AddrKey {
            version: key.ip_version,
            bytes: key.src_addr,
        }
    }

    pub fn ip(&self) -> IpAddr {
        let key = FlowKey {
            ip_version: self.version,
            dst_addr: self.bytes,
            ..FlowKey::default()
        };
        key.dst_ip()
    }

    /// Full-length prefix length of the address family.
    pub fn host_len(&self) -> u8 {
        if self.version == 6 { 128 } else { 32 }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};

    use probe::ext::PacketView;
    use probe::parse::parse_frame_into;
    use probe::synth::{FrameOptions, eth_ipv4_tcp};

    use super::*;

    /// A frame with what the worker would show of it.
    pub(crate) struct View {
        pub frame: Vec<u8>,
        pub key: FlowKey,
        pub meta: probe::parse::PacketMeta,
        pub time_us: u64,
    }

    impl View {
        pub(crate) fn new(frame: Vec<u8>, time_us: u64) -> View {
            let mut key = FlowKey::default();
            let meta = parse_frame_into(&frame, frame.len() as u32, &mut key);
            View {
                frame,
                key,
                meta,
                time_us,
            }
        }

        pub(crate) fn view(&self) -> PacketView<'_> {
            PacketView {
                frame: &self.frame,
                wire_len: self.frame.len() as u32,
                timestamp_us: self.time_us,
                key: &self.key,
                hash: flowcache::flow_hash(&self.key),
                meta: self.meta,
                sampled: true,
                classes: Interest::of(&self.key, &self.meta),
            }
        }
    }

    pub(crate) fn tcp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, flags: u8) -> Vec<u8> {
        let mut frame = Vec::new();
        eth_ipv4_tcp(
            &mut frame,
            SocketAddrV4::new(Ipv4Addr::from(src), sport),
            SocketAddrV4::new(Ipv4Addr::from(dst), dport),
            flags,
            &FrameOptions::default(),
        );
        frame
    }

    /// Ethernet, IPv4 and UDP around `payload`, built by etherparse.
    pub(crate) fn udp_with(
        src: [u8; 4],
        sport: u16,
        dst: [u8; 4],
        dport: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        let builder = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(src, dst, 64)
            .udp(sport, dport);
        let mut frame = Vec::with_capacity(builder.size(payload.len()));
        builder.write(&mut frame, payload).unwrap();
        frame
    }

    pub(crate) fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
        udp_with(src, sport, dst, dport, &[0; 18])
    }

    pub(crate) fn settings() -> AnalyzersSettings {
        let trigger = TriggerSettings {
            mode: TriggerMode::Always,
            statistic: Statistic::NewFlowsPerSec,
            threshold: 1000.0,
            hold_us: 2_000_000,
        };
        AnalyzersSettings {
            syn_flood: SynFloodSettings {
                trigger,
                syn_per_sec: 500,
                hold_us: 2_000_000,
                max_victims: 1024,
                max_sources: 8192,
                top_sources: 5,
            },
            half_open: HalfOpenSettings {
                trigger,
                timeout_us: 3_000_000,
                threshold: 50,
                max_pending: 8192,
                max_destinations: 1024,
                top_n: 5,
            },
            dns: DnsSettings {
                trigger,
                max_pending: 1024,
                max_transactions: 1024,
            },
            per_destination: PerDestinationSettings {
                trigger,
                prefix_len_v4: 24,
                prefix_len_v6: 64,
                max_destinations: 1024,
                top_n: 10,
                interval_us: 10_000_000,
            },
        }
    }

    fn off() -> AnalyzersSettings {
        let mut s = settings();
        s.syn_flood.trigger.mode = TriggerMode::Off;
        s.half_open.trigger.mode = TriggerMode::Off;
        s.dns.trigger.mode = TriggerMode::Off;
        s.per_destination.trigger.mode = TriggerMode::Off;
        s
    }

    #[test]
    fn all_off_attaches_nothing() {
        assert!(Analyzers::new(&off()).is_none());
        let mut only_dns = off();
        only_dns.dns.trigger.mode = TriggerMode::Always;
        let analyzers = Analyzers::new(&only_dns).unwrap();
        assert_eq!(
            analyzers.interest(),
            Interest::DNS,
            "no statistics without auto"
        );
    }

    #[test]
    fn an_auto_trigger_starts_on_its_statistic_and_stops_after_the_hold() {
        let mut s = off();
        s.syn_flood.trigger = TriggerSettings {
            mode: TriggerMode::Auto,
            statistic: Statistic::SynsPerSecToOneDestination,
            threshold: 200.0,
            hold_us: 2_000_000,
        };
        let mut analyzers = Analyzers::new(&s).unwrap();
        let mut events = Vec::new();
        let t0 = 1_700_000_000_000_000u64;
        let mut t = t0;
        // 150 SYNs a second for 3 s: under the threshold.
        for _ in 0..450 {
            t += 6_667;
            let v = View::new(tcp([10, 9, 9, 9], 4000, [10, 0, 0, 1], 80, 0x02), t);
            analyzers.on_packet(&v.view(), &mut ExtOutput::new(&mut events));
            analyzers.on_clock(t, &mut ExtOutput::new(&mut events));
        }
        assert!(events.is_empty(), "{events:?}");
        assert!(!analyzers.is_on("syn_flood"));
        // 1000 a second for 1 s.
        let flood_start = t;
        for _ in 0..1000 {
            t += 1_000;
            let v = View::new(tcp([10, 9, 9, 9], 4000, [10, 0, 0, 1], 80, 0x02), t);
            analyzers.on_packet(&v.view(), &mut ExtOutput::new(&mut events));
            analyzers.on_clock(t, &mut ExtOutput::new(&mut events));
        }
        assert_eq!(events[0].kind, "trigger_on");
        assert!(events[0].time_us - flood_start < 1_000_000);
        assert!(analyzers.is_on("syn_flood"));
        // Quiet: off once the hold has passed since the last window over the threshold.
        let flood_end = t;
        for step in 1..=50u64 {
            analyzers.on_clock(flood_end + step * 100_000, &mut ExtOutput::new(&mut events));
        }
        let off = events.iter().find(|e| e.kind == "trigger_off").unwrap();
        assert!(off.time_us >= flood_end + 2_000_000 && off.time_us <= flood_end + 3_200_000);
        assert!(!analyzers.is_on("syn_flood"));
    }
}
