//! Millisecond monitoring (issue 17, after Planck): per-port utilisation and the rates of
//! the heaviest flows over sliding windows of packet time, heavy-hitter and congestion
//! events, and a live "top" view.
//!
//! # Windows
//! Time is the packets' own (capture time on replay, receive time live), cut into 1 ms
//! slots. A window is the last `window_ms` slots; it slides by one slot, so a rate is
//! re-evaluated every millisecond and a step is seen at most one window (plus the slot
//! granularity, 1 ms) after it happened, wherever it falls within a window.
//!
//! # Where windows of several workers meet
//! A worker sees only its rx queue's share of a port, but every packet of a flow (one
//! direction's 5-tuple, input port included) lands on one queue. So:
//! - flow rates, the top-K and heavy-hitter decisions (a flow against a fixed bit rate or
//!   a share of the configured `link_bps`) are each worker's own, exact without a merge;
//! - a port's utilisation is the sum over workers: each worker hands its per-slot port
//!   counts to the shared [`RateHub`], which closes a slot once every worker has moved
//!   past it (or it is [`HUB_LAG_MS`] behind the newest report), slides the port windows
//!   and runs the congestion state machine; the worker whose report closed a slot emits
//!   the congestion events on its event queue;
//! - the hub also keeps each worker's latest top list, merged into [`TopView`] for
//!   `/top` and `tapflow top`.
//!
//! The hub is behind a mutex taken once per millisecond slot per worker, never per packet.
//!
//! # The top-K, bounded and streaming
//! Every IP packet adds its frame bytes to a small count-min sketch (two counters a flow,
//! in one cache line; reset every window); a flow whose sketch estimate reaches a floor
//! (a `1 / (4 K)` share of the worker's traffic in the last or current window) and beats
//! the smallest entry of the summary replaces it (space-saving), starting from the
//! sketch's estimate. Entries then count exactly, per slot, so a heavy flow's window rate
//! is exact once it was admitted. A bit filter over the flow hash keeps the per-packet
//! cost of non-members to one hash, two sketch increments in one cache line and a bit
//! test; nothing on that path divides (the slot index and the floor are kept per slot).
//!
//! # Sampled and oversubscribed input
//! An oversubscribed mirror port drops at random before tapflow sees a packet. For TCP
//! flows in the summary the monitor follows the sequence numbers of the segments it sees:
//! the bytes the sender moved over the window (the highest sequence seen now minus the
//! highest seen before the window) against the payload bytes actually seen. Where fewer
//! than 95% were seen, the flow's rate comes from the sequence progress (frames per
//! payload byte as seen); the ratio over all such flows is the worker's measured sampling
//! rate, which scales its port counts and the rates of its other flows. tapflow's own
//! sampler does not touch any of this: the monitor sees every packet before the sampler.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use flowcache::FlowKey;
use flowcache::counters::{CounterSet, Spec};
use probe::ext::{Event, ExtCounter, ExtOutput, Extension, Interest, PacketView};
use probe::parse::IpProtocol;

/// A slot the hub still waits for is closed anyway once a worker reported this far past it.
pub const HUB_LAG_MS: u64 = 1_000;

/// A worker's summary keeps this many flows unless configured otherwise.
pub const DEFAULT_TOP_FLOWS: usize = 64;

/// Below this share of the bytes the sender moved, a TCP flow's rate comes from sequence
/// numbers rather than from the bytes seen.
const SEEN_SHARE_FOR_COUNTING: f64 = 0.95;

/// A measured sampling rate needs at least this much sequence progress in the window.
const MIN_EVIDENCE_BYTES: f64 = 16.0 * 1460.0;

/// A flow's sequence progress counts only over a few full segments.
const MIN_FLOW_EVIDENCE_BYTES: f64 = 4.0 * 1460.0;

/// The sketch: lines of 16 counters (one cache line), two counters a flow in one line.
const SKETCH_LINES: usize = 512;
const LINE_CELLS: usize = 16;
const FILTER_WORDS: usize = 64;

pub const HEAVY_HITTER_START: &str = "heavy_hitter_start";
pub const HEAVY_HITTER_END: &str = "heavy_hitter_end";
pub const CONGESTION_START: &str = "congestion_start";
pub const CONGESTION_END: &str = "congestion_end";

/// The `[monitor]` settings, as the data plane uses them.
#[derive(Clone, Debug, PartialEq)]
pub struct RateConfig {
    /// Window width, 1..=100 ms.
    pub window_ms: u32,
    /// A port's capacity in bit/s; 0 when unknown (no utilisation, no share thresholds).
    pub link_bps: u64,
    /// A flow is a heavy hitter over this share of `link_bps`...
    pub heavy_hitter_share: Option<f64>,
    /// ...or over this many bit/s.
    pub heavy_hitter_bps: Option<u64>,
    /// A port is congested over this share of `link_bps`.
    pub congestion_utilisation: Option<f64>,
    /// Consecutive windows a condition must hold (or cease) before its event.
    pub windows: u32,
    /// Flows a worker's top-K summary keeps.
    pub top_flows: usize,
}

impl Default for RateConfig {
    fn default() -> Self {
        RateConfig {
            window_ms: 10,
            link_bps: 0,
            heavy_hitter_share: None,
            heavy_hitter_bps: None,
            congestion_utilisation: None,
            windows: 1,
            top_flows: DEFAULT_TOP_FLOWS,
        }
    }
}

impl RateConfig {
    /// The flow rate over which a flow is a heavy hitter, if any threshold applies.
    pub fn heavy_hitter_threshold_bps(&self) -> Option<f64> {
        let share = self
            .heavy_hitter_share
            .filter(|_| self.link_bps > 0)
            .map(|s| s * self.link_bps as f64);
        match (share, self.heavy_hitter_bps.map(|b| b as f64)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn congestion_threshold_bps(&self) -> Option<f64> {
        self.congestion_utilisation
            .filter(|_| self.link_bps > 0)
            .map(|u| u * self.link_bps as f64)
    }

    fn window(&self) -> u64 {
        u64::from(self.window_ms.clamp(1, 100))
    }

    /// How long past its onset a condition must still hold: the other `windows - 1`.
    fn sustain_us(&self) -> u64 {
        u64::from(self.windows.max(1) - 1) * self.window() * 1_000
    }
}

/// A condition that must hold for a while before it counts, and cease as long before it
/// stops counting.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Sustained {
    active: bool,
    /// When the opposite of `active` was first seen (end of that window, µs) and the
    /// rate then.
    onset: Option<(u64, f64)>,
}

impl Sustained {
    /// Feeds one evaluation; returns the change and its onset when it takes effect.
    fn step(&mut self, over: bool, at_us: u64, rate: f64, sustain_us: u64) -> Option<(u64, f64)> {
        if over == self.active {
            self.onset = None;
            return None;
        }
        let (since, onset_rate) = *self.onset.get_or_insert((at_us, rate));
        if at_us - since >= sustain_us {
            self.active = over;
            self.onset = None;
            return Some((since, onset_rate));
        }
        None
    }

    fn idle(&self) -> bool {
        !self.active && self.onset.is_none()
    }
}

/// A flow's 5-tuple as events and `/top` show it.
pub fn flow_json(key: &FlowKey) -> serde_json::Value {
    serde_json::json!({
        "src_addr": key.src_ip().to_string(),
        "dst_addr": key.dst_ip().to_string(),
        "src_port": key.src_port,
        "dst_port": key.dst_port,
        "protocol": key.protocol,
    })
}

/// A sequence number point: the end of a segment and when it was seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct SeqPoint {
    seq: u32,
    time_us: u64,
}

/// `a` is after `b` in sequence space.
fn seq_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// One slot of a flow's window.
#[derive(Clone, Copy, Debug, Default)]
struct FlowSlot {
    bytes: u64,
    packets: u32,
    /// TCP payload bytes seen, and the frame bytes that carried them.
    payload: u64,
    payload_frames: u64,
    /// The highest segment end seen in the slot.
    last: Option<SeqPoint>,
}

/// How a flow's rate was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateMethod {
    /// Bytes seen (scaled by the measured sampling rate when it is below 1).
    Counted,
    /// TCP sequence-number progress.
    Sequence,
}

impl RateMethod {
    pub fn name(self) -> &'static str {
        match self {
            RateMethod::Counted => "counted",
            RateMethod::Sequence => "sequence",
        }
    }
}

/// A flow's rate over the current window.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowRate {
    pub key: FlowKey,
    pub rate_bps: f64,
    pub packets_per_second: f64,
    pub method: RateMethod,
    pub heavy: bool,
    /// End of the window the rate covers (packet time, µs).
    pub time_us: u64,
}

/// A port's rate over the current window, summed over workers.
#[derive(Clone, Debug, PartialEq)]
pub struct PortRate {
    pub port: u16,
    pub rate_bps: f64,
    pub packets_per_second: f64,
    /// `rate_bps / link_bps`, when the capacity is configured.
    pub utilisation: Option<f64>,
    pub congested: bool,
}

/// The live view: each port's utilisation and the heaviest flows, as of `time_us`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TopView {
    pub time_us: u64,
    pub window_ms: u32,
    pub link_bps: u64,
    pub ports: Vec<PortRate>,
    pub flows: Vec<FlowRate>,
}

impl TopView {
    pub fn to_json(&self) -> serde_json::Value {
        let ports: Vec<_> = self
            .ports
            .iter()
            .map(|p| {
                serde_json::json!({
                    "port": p.port,
                    "rate_bps": p.rate_bps.round() as u64,
                    "packets_per_second": p.packets_per_second.round() as u64,
                    "utilisation": p.utilisation,
                    "congested": p.congested,
                })
            })
            .collect();
        let flows: Vec<_> = self
            .flows
            .iter()
            .map(|f| {
                serde_json::json!({
                    "port": f.key.input_port,
                    "flow": flow_json(&f.key),
                    "rate_bps": f.rate_bps.round() as u64,
                    "packets_per_second": f.packets_per_second.round() as u64,
                    "method": f.method.name(),
                    "heavy_hitter": f.heavy,
                })
            })
            .collect();
        serde_json::json!({
            "time_us": self.time_us,
            "window_ms": self.window_ms,
            "link_bps": self.link_bps,
            "ports": ports,
            "flows": flows,
        })
    }
}

/// One port's merged window at the hub.
#[derive(Debug)]
struct HubPort {
    port: u16,
    slots: Vec<(f64, f64)>,
    bytes: f64,
    packets: f64,
    congestion: Sustained,
    latest: PortRate,
}

#[derive(Debug, Default)]
struct HubWorker {
    live: bool,
    /// Every slot before this one is reported.
    through_ms: Option<u64>,
    top: Vec<FlowRate>,
}

#[derive(Debug)]
struct HubState {
    config: RateConfig,
    workers: Vec<HubWorker>,
    /// Port counts (port, bytes, packets, already scaled) of slots not yet closed.
    pending: BTreeMap<u64, Vec<(u16, f64, f64)>>,
    /// The next slot to close.
    next_ms: Option<u64>,
    ports: Vec<HubPort>,
    time_us: u64,
}

/// Where the workers' port windows are summed and the live view is kept (see the module
/// documentation). One per pipeline, shared by every worker's [`RateMonitor`].
#[derive(Debug)]
pub struct RateHub {
    state: Mutex<HubState>,
}

impl RateHub {
    pub fn new(config: RateConfig) -> Arc<RateHub> {
        Arc::new(RateHub {
            state: Mutex::new(HubState {
                config,
                workers: Vec::new(),
                pending: BTreeMap::new(),
                next_ms: None,
                ports: Vec::new(),
                time_us: 0,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        // A worker that panicked holding the lock left consistent counts behind (every
        // update is a few additions): keep serving them.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(&self) -> usize {
        let mut state = self.lock();
        state.workers.push(HubWorker {
            live: true,
            ..HubWorker::default()
        });
        state.workers.len() - 1
    }

    /// A worker reports slot `ms` closed with its port counts (scaled); returns how many
    /// came too late to count. Congestion events of the slots this closes go to `out`.
    fn report(
        &self,
        worker: usize,
        ms: u64,
        counts: &[(u16, f64, f64)],
        out: &mut Vec<Event>,
    ) -> u64 {
        let mut state = self.lock();
        let mut late = 0;
        if !counts.is_empty() {
            if state.next_ms.is_some_and(|next| ms < next) {
                late = 1;
            } else {
                let slot = state.pending.entry(ms).or_default();
                for &(port, bytes, packets) in counts {
                    match slot.iter_mut().find(|(p, _, _)| *p == port) {
                        Some(c) => {
                            c.1 += bytes;
                            c.2 += packets;
                        }
                        None => slot.push((port, bytes, packets)),
                    }
                }
            }
        }
        state.advance(worker, ms + 1, out);
        late
    }

    /// A worker has nothing before `through_ms` (an idle stretch).
    fn report_idle(&self, worker: usize, through_ms: u64, out: &mut Vec<Event>) {
        self.lock().advance(worker, through_ms, out);
    }

    fn publish_top(&self, worker: usize, top: &[FlowRate]) {
        let mut state = self.lock();
        let slot = &mut state.workers[worker].top;
        slot.clear();
        slot.extend_from_slice(top);
    }

    /// The worker stopped: the hub no longer waits for it.
    fn finish(&self, worker: usize, out: &mut Vec<Event>) {
        let mut state = self.lock();
        state.workers[worker].live = false;
        if let Some(through) = state.workers.iter().filter_map(|w| w.through_ms).max() {
            state.close_ready(through, out);
        }
    }

    /// Every worker that registered has finished (a run that is over).
    pub fn finished(&self) -> bool {
        let state = self.lock();
        !state.workers.is_empty() && state.workers.iter().all(|w| !w.live)
    }

    /// The current view: ports as of the last closed slot, flows as of each worker's last
    /// window, heaviest first, at most `limit`.
    pub fn top(&self, limit: usize) -> TopView {
        let state = self.lock();
        let mut flows: Vec<FlowRate> = state
            .workers
            .iter()
            .flat_map(|w| w.top.iter().cloned())
            .collect();
        flows.sort_by(|a, b| b.rate_bps.total_cmp(&a.rate_bps));
        flows.truncate(limit);
        let mut ports: Vec<PortRate> = state.ports.iter().map(|p| p.latest.clone()).collect();
        ports.sort_by_key(|p| p.port);
        TopView {
            time_us: state.time_us,
            window_ms: state.config.window() as u32,
            link_bps: state.config.link_bps,
            ports,
            flows,
        }
    }
}

impl HubState {
    fn advance(&mut self, worker: usize, through_ms: u64, out: &mut Vec<Event>) {
        let w = &mut self.workers[worker];
        w.through_ms = Some(w.through_ms.map_or(through_ms, |t| t.max(through_ms)));
        let newest = self
            .workers
            .iter()
            .filter_map(|w| w.through_ms)
            .max()
            .unwrap_or(through_ms);
        // Every live worker has moved past a slot (one that never reported does not hold
        // the others up beyond the lag).
        let all = self
            .workers
            .iter()
            .filter(|w| w.live)
            .map(|w| w.through_ms.unwrap_or(0))
            .min()
            .unwrap_or(newest);
        let until = all.max(newest.saturating_sub(HUB_LAG_MS));
        self.close_ready(until, out);
    }

    /// Closes every slot before `until_ms`.
    fn close_ready(&mut self, until_ms: u64, out: &mut Vec<Event>) {
        let window = self.config.window();
        let mut next = match self.next_ms {
            Some(next) => next,
            None => match self.pending.keys().next() {
                Some(&first) => first,
                None => return,
            },
        };
        while next < until_ms {
            let idle = self
                .ports
                .iter()
                .all(|p| p.bytes == 0.0 && p.congestion.idle());
            if idle {
                // Nothing in the windows and no condition pending: jump to the next slot
                // with counts.
                match self.pending.keys().next() {
                    Some(&first) if first < until_ms => next = next.max(first),
                    _ => {
                        next = until_ms;
                        break;
                    }
                }
            }
            let counts = self.pending.remove(&next).unwrap_or_default();
            self.close_slot(next, window, &counts, out);
            next += 1;
        }
        self.next_ms = Some(next);
    }

    fn close_slot(
        &mut self,
        ms: u64,
        window: u64,
        counts: &[(u16, f64, f64)],
        out: &mut Vec<Event>,
    ) {
        for &(port, _, _) in counts {
            if !self.ports.iter().any(|p| p.port == port) {
                self.ports.push(HubPort {
                    port,
                    slots: vec![(0.0, 0.0); window as usize],
                    bytes: 0.0,
                    packets: 0.0,
                    congestion: Sustained::default(),
                    latest: PortRate {
                        port,
                        rate_bps: 0.0,
                        packets_per_second: 0.0,
                        utilisation: None,
                        congested: false,
                    },
                });
            }
        }
        let end_us = (ms + 1) * 1_000;
        self.time_us = end_us;
        let seconds = window as f64 / 1_000.0;
        let threshold = self.config.congestion_threshold_bps();
        let sustain = self.config.sustain_us();
        let link = self.config.link_bps;
        for port in &mut self.ports {
            let slot = &mut port.slots[(ms % window) as usize];
            port.bytes -= slot.0;
            port.packets -= slot.1;
            *slot = counts
                .iter()
                .find(|c| c.0 == port.port)
                .map_or((0.0, 0.0), |c| (c.1, c.2));
            port.bytes += slot.0;
            port.packets += slot.1;
            if port.bytes < 0.5 {
                // Sums of scaled counts drift by rounding; an empty window is empty.
                port.bytes = port.slots.iter().map(|s| s.0).sum();
                port.packets = port.slots.iter().map(|s| s.1).sum();
            }
            let rate = port.bytes * 8.0 / seconds;
            port.latest.rate_bps = rate;
            port.latest.packets_per_second = port.packets / seconds;
            port.latest.utilisation = (link > 0).then(|| rate / link as f64);
            if let Some(threshold) = threshold
                && let Some((onset, onset_rate)) =
                    port.congestion
                        .step(rate >= threshold, end_us, rate, sustain)
            {
                let kind = if port.congestion.active {
                    CONGESTION_START
                } else {
                    CONGESTION_END
                };
                out.push(
                    Event::new(kind, onset)
                        .with("port", port.port)
                        .with("rate_bps", onset_rate.round() as u64)
                        .with("utilisation", onset_rate / link as f64)
                        .with("window_ms", window),
                );
            }
            port.latest.congested = port.congestion.active;
        }
    }
}

/// A flow in a worker's summary.
#[derive(Clone, Debug)]
struct Entry {
    key: FlowKey,
    hash: u64,
    slots: Vec<FlowSlot>,
    bytes: u64,
    packets: u64,
    payload: u64,
    payload_frames: u64,
    tcp: bool,
    /// The first segment end seen since admission, and the last one that left the window.
    first: Option<SeqPoint>,
    anchor: Option<SeqPoint>,
    /// The highest segment end seen.
    last: Option<SeqPoint>,
    heavy: Sustained,
    rate: f64,
    method: RateMethod,
}

/// What a window says about a TCP flow's sequence progress.
#[derive(Clone, Copy, Debug)]
struct SeqEstimate {
    /// Payload bytes the sender moved (since the last segment before the window, or since
    /// the first one seen) and the payload bytes seen in the window.
    moved: f64,
    seen: f64,
    /// The time `moved` took.
    span_s: f64,
}

impl SeqEstimate {
    /// Fewer segments were seen than were sent: rates come from the sequence numbers.
    fn lossy(&self) -> bool {
        self.seen < SEEN_SHARE_FOR_COUNTING * self.moved
    }
}

impl Entry {
    fn new(window: usize) -> Entry {
        Entry {
            key: FlowKey::default(),
            hash: 0,
            slots: vec![FlowSlot::default(); window],
            bytes: 0,
            packets: 0,
            payload: 0,
            payload_frames: 0,
            tcp: false,
            first: None,
            anchor: None,
            last: None,
            heavy: Sustained::default(),
            rate: 0.0,
            method: RateMethod::Counted,
        }
    }

    fn reset(&mut self, key: &FlowKey, hash: u64) {
        self.key = *key;
        self.hash = hash;
        self.slots.fill(FlowSlot::default());
        self.bytes = 0;
        self.packets = 0;
        self.payload = 0;
        self.payload_frames = 0;
        self.tcp = key.protocol == 6;
        self.first = None;
        self.anchor = None;
        self.last = None;
        self.heavy = Sustained::default();
        self.rate = 0.0;
        self.method = RateMethod::Counted;
    }

    fn seq_estimate(&self, window_s: f64) -> Option<SeqEstimate> {
        let last = self.last?;
        let (base, span_s) = match self.anchor {
            // From the last segment before the window to the last one in it.
            Some(anchor) => (
                anchor,
                (last.time_us.saturating_sub(anchor.time_us)) as f64 / 1e6,
            ),
            // The flow started within the window: what it moved in it.
            None => (self.first?, window_s),
        };
        if span_s <= 0.0 || !seq_after(last.seq, base.seq) {
            return None;
        }
        let moved = f64::from(last.seq.wrapping_sub(base.seq));
        if moved < MIN_FLOW_EVIDENCE_BYTES {
            return None;
        }
        Some(SeqEstimate {
            moved,
            seen: self.payload as f64,
            span_s,
        })
    }
}

flowcache::counters! {
    /// The monitor's counters: `tapflow_monitor_<name>_total` on the metrics endpoint.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct MonitorStats {
        /// Events emitted, by type (in the order of [`EVENT_TYPES`]).
        events: [u64; 4] = Spec::counter(
            "events",
            "monitor events",
            "Events the millisecond monitor emitted, by type.",
        )
        .by("type", &EVENT_TYPES),
        topk_admissions: u64 = Spec::counter(
            "topk_admissions",
            "monitor top-K admissions",
            "Flows admitted into a worker's top-K summary.",
        ),
        topk_evictions: u64 = Spec::counter(
            "topk_evictions",
            "monitor top-K evictions",
            "Flows pushed out of a full top-K summary by a heavier one.",
        ),
        late_packets: u64 = Spec::counter(
            "late_packets",
            "monitor late packets",
            "Packets stamped before the open millisecond slot, counted in it.",
        )
        .when_nonzero(),
        late_slots: u64 = Spec::counter(
            "late_slots",
            "monitor late slots",
            "A worker's port counts that reached the hub after their slot was closed.",
        )
        .when_nonzero(),
    }
}

/// The event types, as `MonitorStats::events` counts them.
pub const EVENT_TYPES: [&str; 4] = [
    HEAVY_HITTER_START,
    HEAVY_HITTER_END,
    CONGESTION_START,
    CONGESTION_END,
];

/// The per-worker monitor (see the module documentation).
#[derive(Debug)]
pub struct RateMonitor {
    config: RateConfig,
    window: u64,
    hub: Arc<RateHub>,
    worker: usize,
    /// The open slot (ms since the epoch); `None` before the first packet.
    current_ms: Option<u64>,
    /// The last packet's time while the clock has not moved since (`u64::MAX` when it
    /// has), and whether that time was before the open slot: a packet with the same time
    /// needs no division or comparison.
    last_stamp_us: u64,
    stamp_late: bool,
    /// Port counts of the open slot: (port, frame bytes, packets).
    port_slot: Vec<(u16, u64, u64)>,
    /// A fixed-size array, so its indexing needs no bounds check.
    sketch: Box<[u32; SKETCH_LINES * LINE_CELLS]>,
    /// Frame bytes of the current and last sketch epochs (one window each).
    epoch_bytes: u64,
    last_epoch_bytes: u64,
    epoch_start_ms: u64,
    filter: [u64; FILTER_WORDS],
    entries: Vec<Entry>,
    index: HashMap<FlowKey, usize, ahash::RandomState>,
    /// A flow's sketch estimate must reach this to be considered (updated once a slot).
    floor: u64,
    /// The open slot's index in the windows' rings (`current_ms % window`).
    slot_index: usize,
    /// A lower bound of the smallest entry's window bytes (exact after each slot).
    min_bytes: u64,
    /// Measured share of packets that reach the probe (1 with no loss before it).
    kept_share: f64,
    counters: MonitorStats,
    scratch_counts: Vec<(u16, f64, f64)>,
    scratch_top: Vec<FlowRate>,
    scratch_events: Vec<Event>,
}

impl RateMonitor {
    pub fn new(config: RateConfig, hub: Arc<RateHub>) -> RateMonitor {
        let window = config.window();
        let k = config.top_flows.max(1);
        let worker = hub.register();
        let mut index = HashMap::with_hasher(ahash::RandomState::with_seeds(7, 11, 13, 17));
        index.reserve(k * 2);
        RateMonitor {
            window,
            hub,
            worker,
            current_ms: None,
            last_stamp_us: u64::MAX,
            stamp_late: false,
            port_slot: Vec::with_capacity(4),
            sketch: vec![0; SKETCH_LINES * LINE_CELLS]
                .into_boxed_slice()
                .try_into()
                .expect("the sketch's size"),
            epoch_bytes: 0,
            last_epoch_bytes: 0,
            epoch_start_ms: 0,
            filter: [0; FILTER_WORDS],
            entries: Vec::with_capacity(k),
            index,
            min_bytes: 0,
            floor: 1,
            slot_index: 0,
            kept_share: 1.0,
            counters: MonitorStats::default(),
            scratch_counts: Vec::with_capacity(4),
            scratch_top: Vec::with_capacity(k),
            scratch_events: Vec::new(),
            config,
        }
    }

    fn capacity(&self) -> usize {
        self.config.top_flows.max(1)
    }

    fn filter_bit(hash: u64) -> (usize, u64) {
        let bit = (hash >> 52) as usize % (FILTER_WORDS * 64);
        (bit / 64, 1 << (bit % 64))
    }

    fn rebuild_filter(&mut self) {
        self.filter = [0; FILTER_WORDS];
        for entry in &self.entries {
            let (word, mask) = Self::filter_bit(entry.hash);
            self.filter[word] |= mask;
        }
    }

    /// Adds a packet to the sketch; returns the flow's estimate for this epoch.
    #[inline]
    fn sketch_add(&mut self, hash: u64, bytes: u32) -> u32 {
        // Both counters in one line (a blocked count-min): one cache miss a packet, not two.
        let line = (hash as usize % SKETCH_LINES) * LINE_CELLS;
        let first = (hash >> 9) as usize % LINE_CELLS;
        // Never the same counter: 1 to 15 cells further on (the step scaled from 16 bits of
        // the hash by a multiply, where `%` by 15 would cost a division's worth).
        let step = 1 + ((hash >> 13) as usize & 0xffff) * (LINE_CELLS - 1) / 0x1_0000;
        let second = (first + step) % LINE_CELLS;
        let (a, b) = (line + first, line + second);
        self.sketch[a] = self.sketch[a].saturating_add(bytes);
        self.sketch[b] = self.sketch[b].saturating_add(bytes);
        self.sketch[a].min(self.sketch[b])
    }

    /// Admits a flow whose sketch estimate passed the floor, if it beats the smallest entry.
    fn admit(&mut self, key: &FlowKey, hash: u64, estimate: u64) -> Option<usize> {
        if estimate <= self.min_bytes && self.entries.len() >= self.capacity() {
            return None;
        }
        let slot = if self.entries.len() < self.capacity() {
            self.entries.push(Entry::new(self.window as usize));
            self.entries.len() - 1
        } else {
            // Space-saving: replace the smallest entry that is not a heavy hitter.
            let (victim, bytes) = self
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.heavy.idle())
                .map(|(i, e)| (i, e.bytes))
                .min_by_key(|&(_, b)| b)?;
            self.min_bytes = bytes;
            if estimate <= bytes {
                return None;
            }
            self.index.remove(&self.entries[victim].key);
            self.counters.topk_evictions += 1;
            victim
        };
        self.counters.topk_admissions += 1;
        self.entries[slot].reset(key, hash);
        self.index.insert(*key, slot);
        self.rebuild_filter();
        Some(slot)
    }

    #[inline]
    fn account_flow(&mut self, packet: &PacketView<'_>, slot_index: usize) {
        // The cache's hash, computed once by the worker for both.
        let hash = packet.hash;
        let estimate = self.sketch_add(hash, packet.wire_len);
        let (word, mask) = Self::filter_bit(hash);
        let candidate = self.filter[word] & mask != 0;
        // Most packets: a flow neither tracked nor heavy enough to be.
        if !candidate && u64::from(estimate) < self.floor {
            return;
        }
        self.account_candidate(packet, hash, estimate, candidate, slot_index);
    }

    /// A packet of a tracked flow (as far as the filter knows) or of one whose estimate
    /// passed the floor. Out of line, so the common packet's path stays short.
    #[inline(never)]
    fn account_candidate(
        &mut self,
        packet: &PacketView<'_>,
        hash: u64,
        estimate: u32,
        candidate: bool,
        slot_index: usize,
    ) {
        let member = if candidate {
            self.index.get(packet.key).copied()
        } else {
            None
        };
        let (entry, first_bytes) = match member {
            Some(i) => (i, u64::from(packet.wire_len)),
            None => {
                if u64::from(estimate) < self.floor {
                    return;
                }
                match self.admit(packet.key, hash, u64::from(estimate)) {
                    // What the sketch saw of the flow this epoch, this packet included.
                    Some(i) => (i, u64::from(estimate)),
                    None => return,
                }
            }
        };
        let entry = &mut self.entries[entry];
        let slot = &mut entry.slots[slot_index];
        slot.bytes += first_bytes;
        slot.packets += 1;
        entry.bytes += first_bytes;
        entry.packets += 1;
        if entry.tcp {
            track_sequence(entry, slot_index, packet);
        }
    }

    /// A packet with a time other than the last one's: moves the clock (closing slots) or
    /// notes that it is late. Out of line, so the common packet's path stays short.
    #[cold]
    #[inline(never)]
    fn stamp_changed(&mut self, timestamp_us: u64, out: &mut ExtOutput<'_>) {
        let ms = timestamp_us / 1_000;
        self.stamp_late = false;
        match self.current_ms {
            Some(current) if ms > current => {
                let mut events = std::mem::take(&mut self.scratch_events);
                self.advance_to(ms, &mut events);
                Self::emit_all(&mut events, out);
                self.scratch_events = events;
            }
            Some(current) if ms < current => {
                self.stamp_late = true;
                self.counters.late_packets += 1;
            }
            Some(_) => {}
            None => {
                self.epoch_start_ms = ms;
                self.set_current(ms);
            }
        }
        self.last_stamp_us = timestamp_us;
    }

    /// A frame of a port other than the first one this slot (rare: mostly one port a
    /// worker).
    #[cold]
    #[inline(never)]
    fn count_other_port(&mut self, port: u16, wire: u64) {
        match self.port_slot.iter_mut().find(|(p, _, _)| *p == port) {
            Some(counts) => {
                counts.1 += wire;
                counts.2 += 1;
            }
            None => self.port_slot.push((port, wire, 1)),
        }
    }

    /// Closes every slot before `ms`.
    fn advance_to(&mut self, ms: u64, events: &mut Vec<Event>) {
        let Some(mut current) = self.current_ms else {
            self.epoch_start_ms = ms;
            self.set_current(ms);
            return;
        };
        while current < ms {
            if self.entries.is_empty() && self.port_slot.is_empty() && current + 1 < ms {
                // Idle: nothing to slide; jump (the hub learns the stretch was empty).
                self.hub.report_idle(self.worker, ms, events);
                current = ms;
                self.last_epoch_bytes = self.epoch_bytes;
                self.epoch_bytes = 0;
                self.epoch_start_ms = ms;
                self.sketch.fill(0);
                break;
            }
            self.close_slot(current, events);
            current += 1;
            if current - self.epoch_start_ms >= self.window {
                self.last_epoch_bytes = self.epoch_bytes;
                self.epoch_bytes = 0;
                self.epoch_start_ms = current;
                self.sketch.fill(0);
                self.publish_top(current * 1_000);
            }
        }
        self.set_current(current);
    }

    /// Opens slot `ms`; the admission floor follows the traffic of the last or current
    /// window (a `1 / (4 K)` share of it, so at most about 4 K flows can pass it).
    fn set_current(&mut self, ms: u64) {
        self.current_ms = Some(ms);
        // The clock moved: the next packet's time is compared with it again.
        self.last_stamp_us = u64::MAX;
        self.slot_index = (ms % self.window) as usize;
        self.floor =
            (self.last_epoch_bytes.max(self.epoch_bytes) / (4 * self.capacity() as u64)).max(1);
    }

    fn close_slot(&mut self, ms: u64, events: &mut Vec<Event>) {
        let window_s = self.window as f64 / 1_000.0;
        let end_us = (ms + 1) * 1_000;
        // The measured sampling rate over this worker's TCP flows.
        let (mut moved, mut seen) = (0.0, 0.0);
        for entry in &self.entries {
            if let Some(e) = entry.seq_estimate(window_s) {
                moved += e.moved;
                seen += e.seen.min(e.moved);
            }
        }
        if moved >= MIN_EVIDENCE_BYTES {
            let share = (seen / moved).clamp(0.001, 1.0);
            self.kept_share = if share >= SEEN_SHARE_FOR_COUNTING {
                1.0
            } else {
                share
            };
        }
        let scale = 1.0 / self.kept_share;
        let threshold = self.config.heavy_hitter_threshold_bps();
        let sustain = self.config.sustain_us();
        let link = self.config.link_bps;
        let mut min_bytes = u64::MAX;
        for entry in &mut self.entries {
            let counted = entry.bytes as f64 * 8.0 / window_s;
            let (rate, method) = match entry.seq_estimate(window_s) {
                Some(e) if e.lossy() => {
                    let frames_per_payload =
                        entry.payload_frames as f64 / entry.payload.max(1) as f64;
                    (
                        e.moved / e.span_s * frames_per_payload * 8.0,
                        RateMethod::Sequence,
                    )
                }
                // A TCP flow seen whole needs no scaling.
                Some(_) => (counted, RateMethod::Counted),
                None => (counted * scale, RateMethod::Counted),
            };
            entry.rate = rate;
            entry.method = method;
            if let Some(threshold) = threshold
                && let Some((onset, onset_rate)) =
                    entry.heavy.step(rate >= threshold, end_us, rate, sustain)
            {
                let (kind, index) = if entry.heavy.active {
                    (HEAVY_HITTER_START, 0)
                } else {
                    (HEAVY_HITTER_END, 1)
                };
                self.counters.events[index] += 1;
                let mut event = Event::new(kind, onset)
                    .with("port", entry.key.input_port)
                    .with("flow", flow_json(&entry.key))
                    .with("rate_bps", onset_rate.round() as u64)
                    .with("window_ms", self.window)
                    .with("method", method.name());
                if link > 0 {
                    event = event.with("share", onset_rate / link as f64);
                }
                events.push(event);
            }
            // Slide: the next slot to fill is the oldest one.
            let next = ((ms + 1) % self.window) as usize;
            let old = std::mem::take(&mut entry.slots[next]);
            entry.bytes -= old.bytes;
            entry.packets -= u64::from(old.packets);
            entry.payload -= old.payload;
            entry.payload_frames -= old.payload_frames;
            if old.last.is_some() {
                entry.anchor = old.last;
            }
            min_bytes = min_bytes.min(entry.bytes);
        }
        // Entries with nothing left in the window and no open heavy-hitter state go.
        let before = self.entries.len();
        self.entries.retain(|e| e.packets > 0 || !e.heavy.idle());
        if self.entries.len() != before {
            self.index.clear();
            for (i, e) in self.entries.iter().enumerate() {
                self.index.insert(e.key, i);
            }
            self.rebuild_filter();
        }
        self.min_bytes = if self.entries.is_empty() {
            0
        } else {
            min_bytes
        };
        // The port counts, scaled by the measured sampling rate, to the hub.
        self.scratch_counts.clear();
        for &(port, bytes, packets) in &self.port_slot {
            self.scratch_counts
                .push((port, bytes as f64 * scale, packets as f64 * scale));
        }
        self.port_slot.clear();
        let first_new = self.scratch_events.len();
        self.counters.late_slots += self.hub.report(
            self.worker,
            ms,
            &self.scratch_counts,
            &mut self.scratch_events,
        );
        for event in &self.scratch_events[first_new..] {
            match event.kind {
                CONGESTION_START => self.counters.events[2] += 1,
                CONGESTION_END => self.counters.events[3] += 1,
                _ => {}
            }
        }
        events.append(&mut self.scratch_events);
    }

    /// Hands the summary's rates over the window ending at `end_us` to the hub.
    fn publish_top(&mut self, end_us: u64) {
        self.scratch_top.clear();
        for entry in &self.entries {
            if entry.packets == 0 {
                continue;
            }
            self.scratch_top.push(FlowRate {
                key: entry.key,
                rate_bps: entry.rate,
                packets_per_second: entry.packets as f64 * 1_000.0 / self.window as f64,
                method: entry.method,
                heavy: entry.heavy.active,
                time_us: end_us,
            });
        }
        self.hub.publish_top(self.worker, &self.scratch_top);
    }

    fn emit_all(events: &mut Vec<Event>, out: &mut ExtOutput<'_>) {
        // The event output logs each at info, off the data plane.
        for event in events.drain(..) {
            out.emit(event);
        }
    }
}

/// Follows a TCP segment's sequence numbers into its flow's entry.
fn track_sequence(entry: &mut Entry, slot_index: usize, packet: &PacketView<'_>) {
    let Some(transport) = packet.transport() else {
        return;
    };
    if transport.protocol != IpProtocol::TCP || transport.bytes.len() < 20 {
        return;
    }
    let tcp = transport.bytes;
    let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    let header = usize::from(tcp[12] >> 4) * 4;
    let payload = transport.declared_len.saturating_sub(header) as u32;
    if payload == 0 {
        return;
    }
    let end = SeqPoint {
        seq: seq.wrapping_add(payload),
        time_us: packet.timestamp_us,
    };
    if entry.first.is_none() {
        entry.first = Some(SeqPoint {
            seq,
            time_us: packet.timestamp_us,
        });
    }
    let slot = &mut entry.slots[slot_index];
    slot.payload += u64::from(payload);
    slot.payload_frames += u64::from(packet.wire_len);
    entry.payload += u64::from(payload);
    entry.payload_frames += u64::from(packet.wire_len);
    if slot.last.is_none_or(|l| seq_after(end.seq, l.seq)) {
        slot.last = Some(end);
    }
    if entry.last.is_none_or(|l| seq_after(end.seq, l.seq)) {
        entry.last = Some(end);
    }
}

impl Extension for RateMonitor {
    fn name(&self) -> &'static str {
        "monitor"
    }

    fn interest(&self) -> Interest {
        Interest::ALL
    }

    #[inline]
    fn on_packet(&mut self, packet: &PacketView<'_>, out: &mut ExtOutput<'_>) {
        // A burst's frames mostly share one time: divide only when it changes.
        if packet.timestamp_us != self.last_stamp_us {
            self.stamp_changed(packet.timestamp_us, out);
        } else if self.stamp_late {
            self.counters.late_packets += 1;
        }
        let wire = u64::from(packet.wire_len);
        let port = packet.key.input_port;
        // Mostly one port a worker: the first entry is it.
        match self.port_slot.first_mut() {
            Some(counts) if counts.0 == port => {
                counts.1 += wire;
                counts.2 += 1;
            }
            _ => self.count_other_port(port, wire),
        }
        self.epoch_bytes += wire;
        if !packet.classes.intersects(Interest::IP) {
            return;
        }
        self.account_flow(packet, self.slot_index);
    }

    fn on_clock(&mut self, now_us: u64, out: &mut ExtOutput<'_>) {
        let ms = now_us / 1_000;
        if self.current_ms.is_some_and(|c| ms > c) {
            let mut events = std::mem::take(&mut self.scratch_events);
            self.advance_to(ms, &mut events);
            Self::emit_all(&mut events, out);
            self.scratch_events = events;
        }
    }

    fn on_finish(&mut self, now_us: u64, out: &mut ExtOutput<'_>) {
        let mut events = std::mem::take(&mut self.scratch_events);
        if let Some(current) = self.current_ms {
            // The open slot ends with the last packet.
            self.advance_to(current.max(now_us / 1_000) + 1, &mut events);
        }
        if let Some(current) = self.current_ms {
            self.publish_top(current * 1_000);
        }
        self.hub.finish(self.worker, &mut events);
        Self::emit_all(&mut events, out);
        self.scratch_events = events;
    }

    fn counters(&self, out: &mut Vec<ExtCounter>) {
        self.counters.visit(&mut |series| out.push(series));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate_trace::{StepTrace, TracePacket};
    use probe::parse::parse_frame_into;

    const WINDOW_US: u64 = 10_000;

    fn config() -> RateConfig {
        RateConfig {
            window_ms: 10,
            link_bps: 1_000_000_000,
            heavy_hitter_share: Some(0.2),
            heavy_hitter_bps: None,
            congestion_utilisation: Some(0.9),
            windows: 1,
            top_flows: 64,
        }
    }

    /// What a run showed: its events, and each published top view.
    #[derive(Default)]
    struct Run {
        events: Vec<Event>,
        views: Vec<TopView>,
    }

    /// Feeds the kept packets to `monitors` (packet `i` of flow `f` to monitor
    /// `route(f)`), in bursts of 32 with a clock after each, as a worker does.
    fn feed(
        trace: &StepTrace,
        packets: &[TracePacket],
        monitors: &mut [RateMonitor],
        hub: &RateHub,
        route: impl Fn(usize) -> usize,
    ) -> Run {
        let mut run = Run::default();
        let mut frame = Vec::new();
        let kept: Vec<&TracePacket> = packets.iter().filter(|p| p.kept).collect();
        let mut last_view = 0;
        for burst in kept.chunks(32) {
            let mut now = vec![0u64; monitors.len()];
            for packet in burst {
                trace.frame(packet, &mut frame);
                let mut key = FlowKey::default();
                let meta = parse_frame_into(&frame, frame.len() as u32, &mut key);
                let view = PacketView {
                    frame: &frame,
                    wire_len: frame.len() as u32,
                    timestamp_us: packet.time_us,
                    key: &key,
                    hash: flowcache::flow_hash(&key),
                    meta,
                    sampled: true,
                    classes: Interest::of(&key, &meta),
                };
                let m = route(packet.flow);
                monitors[m].on_packet(&view, &mut ExtOutput::new(&mut run.events));
                now[m] = now[m].max(packet.time_us);
            }
            for (m, monitor) in monitors.iter_mut().enumerate() {
                if now[m] > 0 {
                    monitor.on_clock(now[m], &mut ExtOutput::new(&mut run.events));
                }
            }
            let view = hub.top(100);
            let published = view.flows.iter().map(|f| f.time_us).max().unwrap_or(0);
            if published > last_view {
                last_view = published;
                run.views.push(view);
            }
        }
        let end = kept.last().map_or(0, |p| p.time_us);
        for monitor in monitors.iter_mut() {
            monitor.on_finish(end, &mut ExtOutput::new(&mut run.events));
        }
        run
    }

    fn one_worker(trace: &StepTrace, config: RateConfig) -> (Run, Vec<TracePacket>) {
        let hub = RateHub::new(config.clone());
        let mut monitors = vec![RateMonitor::new(config, hub.clone())];
        let packets = trace.packets();
        let run = feed(trace, &packets, &mut monitors, &hub, |_| 0);
        (run, packets)
    }

    fn of_kind<'a>(events: &'a [Event], kind: &str) -> Vec<&'a Event> {
        events.iter().filter(|e| e.kind == kind).collect()
    }

    fn rate_of(event: &Event) -> f64 {
        event.fields["rate_bps"].as_u64().unwrap() as f64
    }

    fn within(estimate: f64, truth: f64, tolerance: f64) -> bool {
        (estimate - truth).abs() <= tolerance * truth
    }

    // A flow of 300 Mbit/s from t0, a surge of 400 Mbit/s from t1 over 400 Mbit/s of
    // background on a 1 Gbit/s port: 1.1 Gbit/s at the end.
    const T0_US: u64 = 103_300;
    const T1_US: u64 = 256_100;

    fn planck_trace() -> StepTrace {
        StepTrace::steps(
            50,
            400_000_000,
            T0_US,
            300_000_000,
            T1_US,
            20,
            400_000_000,
            400_000,
        )
    }

    #[test]
    fn steps_raise_events_within_a_window_and_rates_match_the_truth() {
        let trace = planck_trace();
        let (run, packets) = one_worker(&trace, config());
        let t0 = trace.start_us + T0_US;
        let t1 = trace.start_us + T1_US;
        let heavy = of_kind(&run.events, HEAVY_HITTER_START);
        assert_eq!(heavy.len(), 1, "{:?}", run.events);
        let event = heavy[0];
        assert!(
            event.time_us >= t0 && event.time_us <= t0 + WINDOW_US + 1_000,
            "{event:?}"
        );
        assert_eq!(event.fields["flow"]["src_addr"], "10.9.9.9");
        assert_eq!(event.fields["flow"]["dst_port"], 80);
        assert_eq!(event.fields["flow"]["protocol"], 6);
        assert_eq!(event.fields["port"], 0);
        assert_eq!(event.fields["window_ms"], 10);
        let heavy_flow = trace.flows.iter().position(|f| f.tcp).unwrap();
        let truth = trace.window_bits(&packets, event.time_us, WINDOW_US, |f| f == heavy_flow);
        assert!(
            within(rate_of(event), truth as f64 * 100.0, 0.05),
            "{event:?} vs {truth}"
        );

        let congestion = of_kind(&run.events, CONGESTION_START);
        assert_eq!(congestion.len(), 1, "{:?}", run.events);
        let event = congestion[0];
        assert!(
            event.time_us >= t1 && event.time_us <= t1 + WINDOW_US + 1_000,
            "{event:?}"
        );
        let truth = trace.window_bits(&packets, event.time_us, WINDOW_US, |_| true);
        assert!(
            within(rate_of(event), truth as f64 * 100.0, 0.05),
            "{event:?} vs {truth}"
        );
        assert!(of_kind(&run.events, HEAVY_HITTER_END).is_empty());
        assert!(of_kind(&run.events, CONGESTION_END).is_empty());

        // Every published window: the port and every listed flow within 5% of the truth.
        let mut checked_flows = 0;
        for view in &run.views {
            let port = &view.ports[0];
            let truth =
                trace.window_bits(&packets, view.time_us, WINDOW_US, |_| true) as f64 * 100.0;
            assert!(
                within(port.rate_bps, truth, 0.05),
                "port at {}: {} vs {truth}",
                view.time_us,
                port.rate_bps
            );
            for flow in &view.flows {
                let index = trace
                    .flows
                    .iter()
                    .position(|f| {
                        f.src.port() == flow.key.src_port
                            && f.src.ip().octets()[..] == flow.key.src_addr[..4]
                    })
                    .unwrap();
                let spec = &trace.flows[index];
                // Only windows the flow filled from start to end.
                if flow.time_us < trace.start_us + spec.start_us + WINDOW_US + 1_000 {
                    continue;
                }
                let truth = trace.window_bits(&packets, flow.time_us, WINDOW_US, |f| f == index)
                    as f64
                    * 100.0;
                assert!(within(flow.rate_bps, truth, 0.05), "{flow:?} vs {truth}");
                checked_flows += 1;
            }
        }
        assert!(run.views.len() >= 35, "{}", run.views.len());
        assert!(checked_flows >= 25, "{checked_flows}");
        let monitor_counters = {
            let hub = RateHub::new(config());
            let m = RateMonitor::new(config(), hub);
            let mut out = Vec::new();
            m.counters(&mut out);
            out.len()
        };
        assert_eq!(monitor_counters, 8);
    }

    #[test]
    fn a_steady_background_raises_no_event() {
        let trace = StepTrace::steps(50, 800_000_000, u64::MAX, 0, u64::MAX, 1, 0, 300_000);
        let (run, _) = one_worker(&trace, config());
        assert!(run.events.is_empty(), "{:?}", run.events);
        // 80% of the link was seen all along.
        let last = run.views.last().unwrap();
        assert!(
            within(last.ports[0].utilisation.unwrap(), 0.8, 0.05),
            "{last:?}"
        );
    }

    #[test]
    fn one_packet_in_ten_tcp_rates_come_from_sequence_numbers() {
        let mut trace = planck_trace();
        trace.keep_one_in = 10;
        let (run, packets) = one_worker(&trace, config());
        let heavy_flow = trace.flows.iter().position(|f| f.tcp).unwrap();
        let mut checked = 0;
        let (mut port_estimates, mut port_truth) = (0.0, 0.0);
        for view in &run.views {
            if let Some(flow) = view.flows.iter().find(|f| f.key.protocol == 6)
                && flow.time_us >= trace.start_us + T0_US + 2 * WINDOW_US
            {
                let truth = trace
                    .window_bits(&packets, flow.time_us, WINDOW_US, |f| f == heavy_flow)
                    as f64
                    * 100.0;
                assert_eq!(flow.method, RateMethod::Sequence);
                assert!(within(flow.rate_bps, truth, 0.10), "{flow:?} vs {truth}");
                checked += 1;
            }
            if view.time_us >= trace.start_us + T0_US + 5 * WINDOW_US {
                port_estimates += view.ports[0].rate_bps;
                port_truth +=
                    trace.window_bits(&packets, view.time_us, WINDOW_US, |_| true) as f64 * 100.0;
            }
        }
        assert!(checked >= 25, "{checked}");
        // Port counts scaled by the measured sampling rate: right on average.
        assert!(
            within(port_estimates, port_truth, 0.10),
            "{port_estimates} vs {port_truth}"
        );
        let heavy = of_kind(&run.events, HEAVY_HITTER_START);
        assert_eq!(heavy.len(), 1, "{:?}", run.events);
        let t0 = trace.start_us + T0_US;
        assert!(heavy[0].time_us >= t0 && heavy[0].time_us <= t0 + WINDOW_US + 1_000);
    }

    #[test]
    fn ports_are_summed_over_workers() {
        // Neither worker alone carries more than 90% of the link after t1; together they do.
        let trace = planck_trace();
        let config = config();
        let hub = RateHub::new(config.clone());
        let mut monitors = vec![
            RateMonitor::new(config.clone(), hub.clone()),
            RateMonitor::new(config, hub.clone()),
        ];
        let packets = trace.packets();
        let run = feed(&trace, &packets, &mut monitors, &hub, |f| f % 2);
        let congestion = of_kind(&run.events, CONGESTION_START);
        assert_eq!(congestion.len(), 1, "{:?}", run.events);
        let t1 = trace.start_us + T1_US;
        assert!(congestion[0].time_us >= t1 && congestion[0].time_us <= t1 + WINDOW_US + 1_000);
        assert_eq!(of_kind(&run.events, HEAVY_HITTER_START).len(), 1);
        let view = hub.top(100);
        assert!(within(view.ports[0].rate_bps, 1.1e9, 0.05), "{view:?}");
    }

    #[test]
    fn heavy_hitters_end_after_the_flow_stops_and_windows_delay_both() {
        let mut trace = StepTrace::steps(
            10,
            100_000_000,
            50_000,
            300_000_000,
            u64::MAX,
            1,
            0,
            300_000,
        );
        trace.flows.last_mut().unwrap().end_us = 150_000;
        let config = RateConfig {
            windows: 3,
            ..config()
        };
        let (run, _) = one_worker(&trace, config);
        let start = of_kind(&run.events, HEAVY_HITTER_START);
        let end = of_kind(&run.events, HEAVY_HITTER_END);
        assert_eq!((start.len(), end.len()), (1, 1), "{:?}", run.events);
        // The onset is reported, however many windows confirmed it.
        let t0 = trace.start_us + 50_000;
        assert!(start[0].time_us >= t0 && start[0].time_us <= t0 + WINDOW_US + 1_000);
        let t_end = trace.start_us + 150_000;
        assert!(
            end[0].time_us >= t_end && end[0].time_us <= t_end + WINDOW_US + 1_000,
            "{:?}",
            end[0]
        );
    }

    #[test]
    fn a_blip_shorter_than_the_windows_raises_nothing() {
        let mut trace = StepTrace::steps(
            10,
            100_000_000,
            50_000,
            300_000_000,
            u64::MAX,
            1,
            0,
            200_000,
        );
        // 15 ms over the threshold: more than one window, less than three.
        trace.flows.last_mut().unwrap().end_us = 65_000;
        let (run, _) = one_worker(
            &trace,
            RateConfig {
                windows: 3,
                ..config()
            },
        );
        assert!(run.events.is_empty(), "{:?}", run.events);
        let (run, _) = one_worker(&trace, config());
        assert_eq!(of_kind(&run.events, HEAVY_HITTER_START).len(), 1);
    }

    #[test]
    fn the_summary_stays_bounded_under_many_small_flows() {
        // 5000 flows of 0.1 Mbit/s and one of 200 Mbit/s, with room for 16.
        let mut trace = StepTrace::steps(
            5_000,
            500_000_000,
            20_000,
            200_000_000,
            u64::MAX,
            1,
            0,
            120_000,
        );
        trace.seed = 3;
        let config = RateConfig {
            top_flows: 16,
            heavy_hitter_share: Some(0.1),
            ..config()
        };
        let hub = RateHub::new(config.clone());
        let mut monitors = vec![RateMonitor::new(config, hub.clone())];
        let packets = trace.packets();
        let run = feed(&trace, &packets, &mut monitors, &hub, |_| 0);
        assert!(monitors[0].entries.len() <= 16);
        assert!(monitors[0].index.len() <= 16);
        let last = run.views.last().unwrap();
        let top = &last.flows[0];
        assert_eq!(top.key.protocol, 6, "{last:?}");
        assert!(within(top.rate_bps, 2e8, 0.05), "{top:?}");
        assert_eq!(
            of_kind(&run.events, HEAVY_HITTER_START).len(),
            1,
            "{:?}",
            run.events
        );
    }

    #[test]
    fn sustained_conditions_report_their_onset() {
        let mut s = Sustained::default();
        assert_eq!(s.step(true, 1_000, 5.0, 2_000), None);
        assert_eq!(s.step(true, 2_000, 6.0, 2_000), None);
        assert_eq!(s.step(true, 3_000, 7.0, 2_000), Some((1_000, 5.0)));
        assert!(s.active);
        // A dip shorter than the sustain time does not end it.
        assert_eq!(s.step(false, 4_000, 1.0, 2_000), None);
        assert_eq!(s.step(true, 5_000, 7.0, 2_000), None);
        assert_eq!(s.step(false, 6_000, 1.0, 2_000), None);
        assert_eq!(s.step(false, 8_000, 1.0, 2_000), Some((6_000, 1.0)));
        assert!(s.idle());
    }

    #[test]
    fn thresholds_combine_share_and_bit_rate() {
        let c = RateConfig {
            heavy_hitter_bps: Some(50_000_000),
            ..config()
        };
        assert_eq!(c.heavy_hitter_threshold_bps(), Some(50_000_000.0));
        let c = RateConfig {
            link_bps: 0,
            ..config()
        };
        assert_eq!(c.heavy_hitter_threshold_bps(), None);
        assert_eq!(c.congestion_threshold_bps(), None);
    }

    #[test]
    fn sequence_numbers_wrap() {
        assert!(seq_after(5, u32::MAX - 5));
        assert!(!seq_after(u32::MAX - 5, 5));
    }
}
