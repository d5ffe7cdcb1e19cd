//! The extension point: per-packet analysis beside the flow cache (transport KPIs,
//! millisecond monitors, analyzers), per-flow fields on the exported records, and events.
//!
//! An [`Extension`] declares the packet classes it wants ([`Interest`]); the worker shows
//! it each such packet after parsing, with the flow key and the parser's results
//! ([`PacketView`]), before the packet is accounted. It keeps its own bounded state
//! (per-flow state keyed by flow, never in the cache's 64-byte entries; [`BoundedTable`]
//! is the shared way to cap it and count evictions), attaches per-flow fields to records
//! as they leave the cache ([`Extension::on_record`], filling [`flowcache::RecordExtras`]),
//! and emits [`Event`]s, which leave the worker over their own bounded channel: a full
//! queue drops and counts, never blocks.
//!
//! Nothing attached costs nothing: the worker's parse loop is compiled twice, and the copy
//! without extensions has no hook at all (`worker::parse_burst`).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::Hash;

use flowcache::{FlowKey, FlowRecord, Observation};

use crate::parse::{PacketMeta, StopReason, Transport, locate_transport};
use crate::source::Packet;

/// Packet classes, as a bit set: an extension subscribes to a union of them and sees every
/// packet that belongs to at least one.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Interest(u32);

impl Interest {
    pub const NONE: Interest = Interest(0);
    /// Every TCP packet accounted into a flow.
    pub const TCP: Interest = Interest(1);
    /// TCP packets with SYN, FIN or RST set.
    pub const TCP_CONTROL: Interest = Interest(1 << 1);
    /// Every UDP packet.
    pub const UDP: Interest = Interest(1 << 2);
    /// UDP or TCP to or from port 53.
    pub const DNS: Interest = Interest(1 << 3);
    /// ICMP and ICMPv6.
    pub const ICMP: Interest = Interest(1 << 4);
    /// Any other IP protocol, and later fragments.
    pub const OTHER_IP: Interest = Interest(1 << 5);
    /// Frames that belong to no flow (non-IP, malformed): for link-level counts.
    pub const UNACCOUNTED: Interest = Interest(1 << 6);
    /// TCP packets opening a connection: SYN without ACK.
    pub const TCP_SYN: Interest = Interest(1 << 7);
    /// TCP packets that open, complete or refuse a handshake: SYN without ACK, ACK
    /// without SYN, FIN or RST (the client's completing ACK, and every later data
    /// segment), and RST.
    pub const TCP_HANDSHAKE: Interest = Interest(1 << 8);
    /// Every IP packet accounted into a flow.
    pub const IP: Interest = Interest(1 | 1 << 2 | 1 << 4 | 1 << 5);
    /// Every frame.
    pub const ALL: Interest = Interest(Self::IP.0 | Self::UNACCOUNTED.0);

    #[inline]
    pub const fn union(self, other: Interest) -> Interest {
        Interest(self.0 | other.0)
    }

    #[inline]
    pub const fn intersects(self, other: Interest) -> bool {
        self.0 & other.0 != 0
    }

    #[inline]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The classes a parsed packet belongs to.
    #[inline]
    pub fn of(key: &FlowKey, meta: &PacketMeta) -> Interest {
        if !meta.stop.accounted() {
            return Interest::UNACCOUNTED;
        }
        if meta.stop == StopReason::Fragment {
            return Interest::OTHER_IP;
        }
        let dns = key.src_port == 53 || key.dst_port == 53;
        match key.protocol {
            6 => {
                let flags = meta.tcp_flags;
                let mut classes = Interest::TCP;
                if flags & 0x07 != 0 {
                    classes = classes.union(Interest::TCP_CONTROL);
                }
                if flags & 0x12 == 0x02 {
                    classes = classes.union(Interest::TCP_SYN.union(Interest::TCP_HANDSHAKE));
                } else if flags & 0x17 == 0x10 || flags & 0x04 != 0 {
                    classes = classes.union(Interest::TCP_HANDSHAKE);
                }
                if dns {
                    classes = classes.union(Interest::DNS);
                }
                classes
            }
            17 if dns => Interest::UDP.union(Interest::DNS),
            17 => Interest::UDP,
            1 | 58 => Interest::ICMP,
            _ => Interest::OTHER_IP,
        }
    }
}

impl fmt::Debug for Interest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Interest({:#x})", self.0)
    }
}

/// One packet as an extension sees it: the frame (lent for the call only), the flow key
/// the cache accounts it under, and what the parser found.
#[derive(Clone, Copy, Debug)]
pub struct PacketView<'a> {
    pub frame: &'a [u8],
    pub wire_len: u32,
    /// Packet time, microseconds since the Unix epoch (capture time on replay).
    pub timestamp_us: u64,
    pub key: &'a FlowKey,
    /// The cache's hash of `key` ([`flowcache::flow_hash`]), computed once by the worker
    /// for the cache and the extensions alike; 0 for frames that belong to no flow.
    pub hash: u64,
    pub meta: PacketMeta,
    /// Whether the sampler kept the packet (it is accounted into the cache).
    pub sampled: bool,
    pub classes: Interest,
}

impl<'a> PacketView<'a> {
    /// The transport header and payload, found again on demand (see `parse::locate`).
    pub fn transport(&self) -> Option<Transport<'a>> {
        locate_transport(self.frame)
    }
}

/// A packet of a burst, as the parse loop wrote it down for the extensions: the frame by
/// its index in the burst, the rest by value (the key's slot in the burst may have gone
/// to a later packet by the time the extensions see it).
#[derive(Clone, Copy, Debug, Default)]
pub struct Shown {
    pub frame: usize,
    pub key: FlowKey,
    pub hash: u64,
    pub meta: PacketMeta,
    pub sampled: bool,
    pub classes: Interest,
}

/// The packets of one burst that some extension wants, in arrival order, shown to each
/// extension in one call ([`Extension::on_burst`]): a call per extension and burst rather
/// than per packet, and each extension's loop over them compiled for it alone.
#[derive(Clone, Copy, Debug)]
pub struct Burst<'a> {
    frames: &'a [Packet<'a>],
    shown: &'a [Shown],
    /// Every class some packet of the burst belongs to.
    classes: Interest,
}

impl<'a> Burst<'a> {
    /// `shown[i].frame` indexes `frames`.
    pub fn new(frames: &'a [Packet<'a>], shown: &'a [Shown]) -> Burst<'a> {
        let classes = shown
            .iter()
            .fold(Interest::NONE, |all, s| all.union(s.classes));
        Burst {
            frames,
            shown,
            classes,
        }
    }

    pub fn classes(&self) -> Interest {
        self.classes
    }

    /// The packets of the burst of a class in `interest`, in order.
    #[inline]
    pub fn views(&self, interest: Interest) -> impl Iterator<Item = PacketView<'a>> + 'a {
        let frames = self.frames;
        self.shown
            .iter()
            .filter(move |s| interest.intersects(s.classes))
            .map(move |s| {
                let frame = &frames[s.frame];
                PacketView {
                    frame: frame.data,
                    wire_len: frame.wire_len,
                    timestamp_us: frame.timestamp_us,
                    key: &s.key,
                    hash: s.hash,
                    meta: s.meta,
                    sampled: s.sampled,
                    classes: s.classes,
                }
            })
    }
}

/// Something an extension noticed: JSON lines with `type` and `time_us` first, then the
/// event's own fields (docs/EVENTS.md lists every type).
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The `type` field: `heavy_hitter_start`, `syn_flood_start`, `trigger_on`, ...
    pub kind: &'static str,
    /// Packet time of what triggered it, microseconds since the Unix epoch.
    pub time_us: u64,
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl Event {
    pub fn new(kind: &'static str, time_us: u64) -> Event {
        Event {
            kind,
            time_us,
            fields: serde_json::Map::new(),
        }
    }

    /// Adds a field (builder style).
    pub fn with(mut self, name: &str, value: impl Into<serde_json::Value>) -> Event {
        self.fields.insert(name.to_string(), value.into());
        self
    }

    /// The event as one JSON object, `type` and `time_us` first.
    pub fn to_json(&self) -> serde_json::Value {
        let mut object = serde_json::Map::with_capacity(self.fields.len() + 2);
        object.insert("type".into(), self.kind.into());
        object.insert("time_us".into(), self.time_us.into());
        for (name, value) in &self.fields {
            object.insert(name.clone(), value.clone());
        }
        serde_json::Value::Object(object)
    }
}

/// What an extension's hooks write to: events, buffered per burst by the worker.
#[derive(Debug)]
pub struct ExtOutput<'a> {
    events: &'a mut Vec<Event>,
}

impl<'a> ExtOutput<'a> {
    pub fn new(events: &'a mut Vec<Event>) -> ExtOutput<'a> {
        ExtOutput { events }
    }

    pub fn emit(&mut self, event: Event) {
        self.events.push(event);
    }
}

/// What happens to a record after an extension saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordFate {
    /// Exported (with whatever fields the extension attached).
    Keep,
    /// Folded into another record (a biflow's reverse direction, carried by the
    /// initiator's record): not exported on its own, counted as folded.
    Folded,
}

/// A counter an extension reports for the metrics endpoint and the summary: one series of
/// a statistics struct the extension declares with [`flowcache::counters!`], whose spec
/// names only the extension's own part of the family (`timeouts` becomes
/// `tapflow_<extension>_timeouts_total`). Report them with
/// `out.extend(stats.series())`.
pub type ExtCounter = flowcache::counters::Series;

/// A per-packet analysis attached to a worker.
pub trait Extension: Send + fmt::Debug {
    /// Short snake-case name: metrics family prefix and log lines.
    fn name(&self) -> &'static str;

    /// The packet classes to be shown. Read once when the worker starts.
    fn interest(&self) -> Interest;

    /// A packet of a subscribed class, before it is accounted into the cache.
    fn on_packet(&mut self, packet: &PacketView<'_>, out: &mut ExtOutput<'_>);

    /// A burst's packets, each of a subscribed class shown in order; by default to
    /// [`Extension::on_packet`] one by one. Called before the burst is accounted.
    fn on_burst(&mut self, burst: &Burst<'_>, out: &mut ExtOutput<'_>) {
        for packet in burst.views(self.interest()) {
            self.on_packet(&packet, out);
        }
    }

    /// The worker's clock moved to `now_us` (once per burst, and while idle): windows,
    /// triggers and timeouts.
    fn on_clock(&mut self, _now_us: u64, _out: &mut ExtOutput<'_>) {}

    /// Whether to be told of every record the cache starts ([`Extension::on_flow_starts`]).
    /// Read once when the worker starts.
    fn wants_flow_starts(&self) -> bool {
        false
    }

    /// Records the cache started since the last call, in packet order, each as the packet
    /// that started it (stamped with the record's first time): a flow's first packet, and
    /// the first packet after its record ended. Called once per burst and before any
    /// record is shown, so an extension knows, per flow and without a per-packet hook,
    /// which records are in the cache. A packet a policy skipped or moved to another key
    /// starts nothing here.
    fn on_flow_starts(&mut self, _starts: &[Observation]) {}

    /// A record leaves the cache: attach fields, release the flow's state.
    fn on_record(&mut self, _record: &mut FlowRecord) -> RecordFate {
        RecordFate::Keep
    }

    /// The worker is stopping, after its last packet and before the final flush.
    fn on_finish(&mut self, _now_us: u64, _out: &mut ExtOutput<'_>) {}

    /// Current counters (published once per tick, never per packet).
    fn counters(&self, _out: &mut Vec<ExtCounter>) {}
}

/// The extensions attached to one worker, with their interests read once.
#[derive(Debug, Default)]
pub struct Extensions {
    attached: Vec<(Interest, Box<dyn Extension>)>,
    union: Interest,
    wants_flow_starts: bool,
}

impl Extensions {
    pub fn new(extensions: Vec<Box<dyn Extension>>) -> Extensions {
        let attached: Vec<_> = extensions.into_iter().map(|e| (e.interest(), e)).collect();
        let union = attached
            .iter()
            .fold(Interest::NONE, |all, (interest, _)| all.union(*interest));
        let wants_flow_starts = attached.iter().any(|(_, e)| e.wants_flow_starts());
        Extensions {
            attached,
            union,
            wants_flow_starts,
        }
    }

    /// Whether some extension wants to be told of the records the cache starts.
    pub fn wants_flow_starts(&self) -> bool {
        self.wants_flow_starts
    }

    /// Shows the records the cache started to the extensions that want them.
    pub fn on_flow_starts(&mut self, starts: &[Observation]) {
        if starts.is_empty() {
            return;
        }
        for (_, extension) in &mut self.attached {
            if extension.wants_flow_starts() {
                extension.on_flow_starts(starts);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.attached.is_empty()
    }

    /// Every class some extension wants.
    pub fn interest(&self) -> Interest {
        self.union
    }

    #[inline]
    pub fn on_packet(&mut self, packet: &PacketView<'_>, events: &mut Vec<Event>) {
        let mut out = ExtOutput::new(events);
        for (interest, extension) in &mut self.attached {
            if interest.intersects(packet.classes) {
                extension.on_packet(packet, &mut out);
            }
        }
    }

    /// Shows a burst's packets to the extensions that want some of them.
    #[inline]
    pub fn on_burst(&mut self, burst: &Burst<'_>, events: &mut Vec<Event>) {
        let mut out = ExtOutput::new(events);
        for (interest, extension) in &mut self.attached {
            if interest.intersects(burst.classes()) {
                extension.on_burst(burst, &mut out);
            }
        }
    }

    pub fn on_clock(&mut self, now_us: u64, events: &mut Vec<Event>) {
        let mut out = ExtOutput::new(events);
        for (_, extension) in &mut self.attached {
            extension.on_clock(now_us, &mut out);
        }
    }

    /// Shows the record to every extension; folded when any folds it.
    pub fn on_record(&mut self, record: &mut FlowRecord) -> RecordFate {
        let mut fate = RecordFate::Keep;
        for (_, extension) in &mut self.attached {
            if extension.on_record(record) == RecordFate::Folded {
                fate = RecordFate::Folded;
            }
        }
        fate
    }

    pub fn on_finish(&mut self, now_us: u64, events: &mut Vec<Event>) {
        let mut out = ExtOutput::new(events);
        for (_, extension) in &mut self.attached {
            extension.on_finish(now_us, &mut out);
        }
    }

    /// Every extension's counters, by extension name.
    pub fn counters(&self) -> Vec<(&'static str, Vec<ExtCounter>)> {
        self.attached
            .iter()
            .map(|(_, extension)| {
                let mut counters = Vec::new();
                extension.counters(&mut counters);
                (extension.name(), counters)
            })
            .collect()
    }
}

/// A map with a fixed capacity for an extension's state: when full, inserting evicts the
/// oldest entry (by insertion) and counts it, so a flood cannot exhaust memory.
#[derive(Debug)]
pub struct BoundedTable<K, V> {
    map: HashMap<K, V, ahash::RandomState>,
    /// Insertion order; may hold keys already removed (skipped when evicting, compacted
    /// when it grows past twice the capacity).
    order: VecDeque<K>,
    capacity: usize,
    evictions: u64,
}

impl<K: Hash + Eq + Clone, V> BoundedTable<K, V> {
    pub fn new(capacity: usize) -> BoundedTable<K, V> {
        let capacity = capacity.max(1);
        BoundedTable {
            map: HashMap::with_capacity_and_hasher(capacity.min(1 << 16), Default::default()),
            order: VecDeque::new(),
            capacity,
            evictions: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Entries pushed out to make room.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.map.get_mut(key)
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.map.remove(key)
    }

    /// The entry for `key`, inserted with `make` (evicting the oldest when full) if absent.
    pub fn get_or_insert_with(&mut self, key: &K, make: impl FnOnce() -> V) -> &mut V {
        if !self.map.contains_key(key) {
            self.make_room();
            self.order.push_back(key.clone());
            self.map.insert(key.clone(), make());
        }
        self.map.get_mut(key).expect("present or just inserted")
    }

    /// Removes every entry for which `keep` is false.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        self.map.retain(|k, v| keep(k, v));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.map.iter()
    }

    fn make_room(&mut self) {
        while self.map.len() >= self.capacity {
            match self.order.pop_front() {
                Some(oldest) => {
                    if self.map.remove(&oldest).is_some() {
                        self.evictions += 1;
                    }
                }
                None => break,
            }
        }
        if self.order.len() >= self.capacity.saturating_mul(2) {
            let map = &self.map;
            self.order.retain(|k| map.contains_key(k));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_table_evicts_the_oldest_and_counts_it() {
        let mut table = BoundedTable::new(3);
        for k in 0..3u32 {
            *table.get_or_insert_with(&k, || 0) += 1;
        }
        table.remove(&1);
        *table.get_or_insert_with(&3, || 0) += 1;
        assert_eq!(table.evictions(), 0, "room was freed by the removal");
        *table.get_or_insert_with(&4, || 0) += 1;
        assert_eq!(table.evictions(), 1);
        assert!(table.get(&0).is_none(), "the oldest went first");
        assert_eq!(table.len(), 3);
        // Churn never grows the order queue without bound.
        for k in 5..10_000u32 {
            table.get_or_insert_with(&k, || 0);
            table.remove(&(k - 1));
        }
        assert!(table.order.len() <= 2 * table.capacity() + 1);
    }

    #[test]
    fn classes_of_packets() {
        let mut key = FlowKey {
            protocol: 6,
            dst_port: 443,
            ..FlowKey::default()
        };
        let syn = PacketMeta {
            tcp_flags: 0x02,
            ..PacketMeta::default()
        };
        let classes = Interest::of(&key, &syn);
        assert!(classes.intersects(Interest::TCP) && classes.intersects(Interest::TCP_CONTROL));
        assert!(!classes.intersects(Interest::DNS));
        assert!(
            classes.intersects(Interest::TCP_SYN) && classes.intersects(Interest::TCP_HANDSHAKE)
        );
        let with_flags = |tcp_flags| {
            Interest::of(
                &key,
                &PacketMeta {
                    tcp_flags,
                    ..PacketMeta::default()
                },
            )
        };
        // SYN-ACK: neither opens nor completes a handshake.
        assert!(!with_flags(0x12).intersects(Interest::TCP_SYN.union(Interest::TCP_HANDSHAKE)));
        // ACK, PSH+ACK, RST: handshake, not SYN; FIN+ACK: neither.
        for flags in [0x10, 0x18, 0x04, 0x14] {
            let classes = with_flags(flags);
            assert!(classes.intersects(Interest::TCP_HANDSHAKE), "{flags:#x}");
            assert!(!classes.intersects(Interest::TCP_SYN), "{flags:#x}");
        }
        assert!(!with_flags(0x11).intersects(Interest::TCP_SYN.union(Interest::TCP_HANDSHAKE)));
        key.protocol = 17;
        key.dst_port = 53;
        assert!(Interest::of(&key, &PacketMeta::default()).intersects(Interest::DNS));
        let non_ip = PacketMeta {
            stop: StopReason::NonIp,
            ..PacketMeta::default()
        };
        assert_eq!(Interest::of(&key, &non_ip), Interest::UNACCOUNTED);
    }

    #[test]
    fn events_serialize_type_and_time_first() {
        let event = Event::new("trigger_on", 7).with("analyzer", "syn_flood");
        let line = serde_json::to_string(&event.to_json()).unwrap();
        assert_eq!(
            line,
            r#"{"type":"trigger_on","time_us":7,"analyzer":"syn_flood"}"#
        );
    }
}
