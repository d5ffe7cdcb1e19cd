//! Per-destination accounting: packets and octets per destination prefix (configurable
//! length per family), over intervals of packet time; at each interval's end the top
//! destinations by octets leave as `destination_totals` records (JSON lines on the event
//! output), and the whole interval's totals go to the [`DestinationHub`], where the
//! workers' totals are summed and the top of the sum is what the metrics endpoint shows.
//!
//! It counts the flow records leaving the cache, not packets: the cache already summed
//! each flow's packets and octets, so accounting costs nothing per packet (a hash-map
//! update per packet cost half the worker's throughput at 100k destinations,
//! BENCHMARKS.md). A record's destination is looked up at random all the same: the
//! totals live in a [`ConnTable`] (packets and octets in the prefix's 64-byte slot), and
//! records are taken in two steps: `on_record` masks and hashes the prefix and prefetches
//! its slot; a batch later (or at the next clock) the totals are added. A flow's traffic lands in the interval its record is exported in
//! (inactive timeout after its last packet, or its active timeout); a biflow record's
//! reverse direction is counted for its own destination, the record's source.
//!
//! Intervals start at the first clock seen (one worker's own, or the first any worker of
//! the hub saw) and follow each other without gaps, so every worker of a hub cuts its
//! totals at the same instants and the hub sums like with like.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use flowcache::FlowRecord;
use probe::ext::{Event, ExtOutput, Interest, PacketView};

use super::{AddrKey, Analyzer, AnalyzerStats, PerDestinationSettings};
use crate::conn_table::ConnTable;

/// One destination's totals over an interval.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DestinationTotals {
    /// `address/length`.
    pub destination: String,
    pub packets: u64,
    pub octets: u64,
}

/// The busiest destinations of one finished interval, over every worker of a hub.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DestinationTop {
    /// Start of the interval, microseconds since the Unix epoch (packet time).
    pub interval_start_us: u64,
    pub interval_us: u64,
    /// Busiest first (by octets; equal octets by address), at most `top_n`.
    pub destinations: Vec<DestinationTotals>,
}

/// One destination prefix's totals: (packets, octets).
type Totals = (u64, u64);

/// The interval totals of a table, busiest first (by octets, then by address).
fn ranked(totals: impl Iterator<Item = (AddrKey, Totals)>) -> Vec<(AddrKey, Totals)> {
    let mut all: Vec<(AddrKey, Totals)> = totals.collect();
    all.sort_by(|a, b| b.1.1.cmp(&a.1.1).then(a.0.cmp(&b.0)));
    all
}

fn prefix_len(settings: &PerDestinationSettings, version: u8) -> u8 {
    if version == 6 {
        settings.prefix_len_v6
    } else {
        settings.prefix_len_v4
    }
}

fn named(
    settings: &PerDestinationSettings,
    (key, (packets, octets)): (AddrKey, Totals),
) -> DestinationTotals {
    DestinationTotals {
        destination: format!("{}/{}", key.ip(), prefix_len(settings, key.version)),
        packets,
        octets,
    }
}

#[derive(Debug, Default)]
struct HubWorker {
    live: bool,
    /// Intervals before this one are published.
    through: u64,
}

#[derive(Debug, Default)]
struct HubState {
    /// The first clock any worker saw: where interval 0 starts.
    epoch_us: Option<u64>,
    workers: Vec<HubWorker>,
    /// Summed totals of intervals not yet closed, by interval number.
    open: BTreeMap<u64, HashMap<AddrKey, Totals, ahash::RandomState>>,
    /// Intervals before this one are closed: what arrives for them is late.
    closed_through: u64,
    latest: Option<DestinationTop>,
}

/// Where the workers' per-destination totals are summed: one per pipeline, shared by
/// every worker's [`PerDestination`]. A worker hands over its whole table (bounded by
/// `max_destinations`) once per interval, under a lock the hot path never takes; an
/// interval closes when every live worker has handed it over, or when a worker is two
/// intervals on (a worker whose accounting is off does not hold the others up), and its
/// top `top_n` of the sum becomes [`DestinationHub::latest`]: the top of the merged
/// totals, which a union of each worker's own top could miss.
#[derive(Debug)]
pub struct DestinationHub {
    settings: PerDestinationSettings,
    state: Mutex<HubState>,
}

impl DestinationHub {
    pub fn new(settings: PerDestinationSettings) -> Arc<DestinationHub> {
        Arc::new(DestinationHub {
            settings,
            state: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        // Every update leaves consistent sums behind: a worker that panicked holding the
        // lock does not spoil them.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(&self) -> usize {
        let mut state = self.lock();
        state.workers.push(HubWorker {
            live: true,
            through: 0,
        });
        state.workers.len() - 1
    }

    /// Where interval 0 starts: the first clock any worker offered.
    fn epoch(&self, now_us: u64) -> u64 {
        *self.lock().epoch_us.get_or_insert(now_us)
    }

    /// A worker's totals of interval `interval`; it will not add to intervals before
    /// `through`. False when the interval was already closed: the totals came too late to
    /// count.
    fn publish(
        &self,
        worker: usize,
        interval: u64,
        totals: &[(AddrKey, Totals)],
        through: u64,
    ) -> bool {
        let mut state = self.lock();
        let in_time = totals.is_empty() || interval >= state.closed_through;
        if in_time && !totals.is_empty() {
            let sums = state.open.entry(interval).or_default();
            for (key, (packets, octets)) in totals {
                let sum = sums.entry(*key).or_default();
                sum.0 += packets;
                sum.1 += octets;
            }
        }
        let w = &mut state.workers[worker];
        w.through = w.through.max(through);
        self.close_ready(&mut state);
        in_time
    }

    /// The worker stopped: the hub no longer waits for it.
    fn finish(&self, worker: usize) {
        let mut state = self.lock();
        state.workers[worker].live = false;
        self.close_ready(&mut state);
    }

    fn close_ready(&self, state: &mut HubState) {
        let newest = state.workers.iter().map(|w| w.through).max().unwrap_or(0);
        let all = state
            .workers
            .iter()
            .filter(|w| w.live)
            .map(|w| w.through)
            .min();
        // With no worker left, nothing more is coming.
        let until = all.map_or(u64::MAX, |all| all.max(newest.saturating_sub(1)));
        while let Some(entry) = state.open.first_entry() {
            if *entry.key() >= until {
                break;
            }
            let (interval, sums) = entry.remove_entry();
            let mut top = ranked(sums.into_iter());
            top.truncate(self.settings.top_n);
            state.latest = Some(DestinationTop {
                interval_start_us: state.epoch_us.unwrap_or(0)
                    + interval * self.settings.interval_us,
                interval_us: self.settings.interval_us,
                destinations: top.into_iter().map(|t| named(&self.settings, t)).collect(),
            });
        }
        state.closed_through = state.closed_through.max(until);
    }

    /// The top destinations of the last closed interval that had traffic.
    pub fn latest(&self) -> Option<DestinationTop> {
        self.lock().latest.clone()
    }

    /// Every worker that registered has finished (a run that is over).
    pub fn finished(&self) -> bool {
        let state = self.lock();
        !state.workers.is_empty() && state.workers.iter().all(|w| !w.live)
    }
}

// A prefix's slot is one cache line: the prefetch in `count` loads all of it.
const _: () = assert!(size_of::<crate::conn_table::Slot<AddrKey, Totals>>() == 64);

/// Records' directions waiting to be added: enough for their slots to arrive meanwhile.
const SEEN_BATCH: usize = 32;

/// One direction of a record, seen and not yet added.
#[derive(Clone, Copy, Debug)]
struct Seen {
    prefix: AddrKey,
    hash: u64,
    totals: Totals,
}

#[derive(Debug)]
pub struct PerDestination {
    settings: PerDestinationSettings,
    totals: ConnTable<AddrKey, (), Totals>,
    seen: Vec<Seen>,
    /// Directions not counted because `max_destinations` prefixes were counted already.
    refused: u64,
    /// Where interval 0 starts; `None` until the first clock.
    epoch_us: Option<u64>,
    /// The interval being counted.
    interval: u64,
    hub: Option<(Arc<DestinationHub>, usize)>,
    records: u64,
    /// Intervals handed to the hub too late to count.
    late: u64,
}

/// `bytes` with every bit past `len` cleared.
fn mask(bytes: [u8; 16], len: u8) -> [u8; 16] {
    let keep = u128::MAX
        .checked_shl(128 - u32::from(len.min(128)))
        .unwrap_or(0);
    (u128::from_be_bytes(bytes) & keep).to_be_bytes()
}

impl PerDestination {
    pub fn new(settings: PerDestinationSettings) -> PerDestination {
        PerDestination {
            settings,
            totals: ConnTable::new(settings.max_destinations),
            seen: Vec::with_capacity(SEEN_BATCH),
            refused: 0,
            epoch_us: None,
            interval: 0,
            hub: None,
            records: 0,
            late: 0,
        }
    }

    /// Accounting whose totals are also summed at `hub` with the other workers'.
    pub fn with_hub(settings: PerDestinationSettings, hub: Arc<DestinationHub>) -> PerDestination {
        let worker = hub.register();
        PerDestination {
            hub: Some((hub, worker)),
            ..PerDestination::new(settings)
        }
    }

    fn count(&mut self, version: u8, addr: [u8; 16], packets: u64, octets: u64) {
        if packets == 0 {
            return;
        }
        let prefix = AddrKey {
            version,
            bytes: mask(addr, prefix_len(&self.settings, version)),
        };
        let hash = self.totals.hash(&prefix);
        self.totals.prefetch_slot(hash);
        self.seen.push(Seen {
            prefix,
            hash,
            totals: (packets, octets),
        });
        if self.seen.len() >= SEEN_BATCH {
            self.add_seen();
        }
    }

    /// Adds the directions seen so far (their slots were prefetched as they were seen).
    fn add_seen(&mut self) {
        for s in self.seen.drain(..) {
            let slot = match self.totals.find(&s.prefix, s.hash) {
                Some(slot) => slot,
                None => match self.totals.insert(s.prefix, s.hash, ()) {
                    Some(slot) => slot,
                    None => {
                        self.refused += 1;
                        continue;
                    }
                },
            };
            let totals = &mut self.totals.entry_mut(slot).0.live;
            totals.0 += s.totals.0;
            totals.1 += s.totals.1;
        }
    }

    fn interval_start_us(&self, interval: u64) -> u64 {
        self.epoch_us.unwrap_or(0) + interval * self.settings.interval_us
    }

    /// Exports the current interval's top destinations, hands its totals to the hub
    /// (which then waits for nothing before `through`), and starts counting afresh.
    fn flush(&mut self, now_us: u64, through: u64, out: &mut ExtOutput<'_>) {
        self.add_seen();
        let all = ranked(self.totals.iter().map(|(slot, ())| (slot.key, slot.live)));
        for (rank, totals) in all.iter().take(self.settings.top_n).enumerate() {
            let totals = named(&self.settings, *totals);
            out.emit(
                Event::new("destination_totals", now_us)
                    .with("destination", totals.destination)
                    .with("packets", totals.packets)
                    .with("octets", totals.octets)
                    .with("rank", rank as u64 + 1)
                    .with("interval_start_us", self.interval_start_us(self.interval)),
            );
            self.records += 1;
        }
        if let Some((hub, worker)) = &self.hub
            && !hub.publish(*worker, self.interval, &all, through)
        {
            self.late += 1;
        }
        self.totals.clear();
    }
}

impl Analyzer for PerDestination {
    fn name(&self) -> &'static str {
        "per_destination"
    }

    fn interest(&self) -> Interest {
        Interest::NONE
    }

    fn on_packet(&mut self, _packet: &PacketView<'_>, _out: &mut ExtOutput<'_>) {}

    fn on_record(&mut self, record: &mut FlowRecord, on: bool) {
        if !on {
            return;
        }
        let key = &record.key;
        self.count(key.ip_version, key.dst_addr, record.packets, record.octets);
        if let Some(reverse) = record.extras.as_ref().and_then(|e| e.reverse) {
            self.count(
                key.ip_version,
                key.src_addr,
                reverse.packets,
                reverse.octets,
            );
        }
    }

    fn on_clock(&mut self, now_us: u64, out: &mut ExtOutput<'_>) {
        // Records shown before this clock belong to the interval they were shown in.
        self.add_seen();
        let epoch = *self.epoch_us.get_or_insert_with(|| match &self.hub {
            Some((hub, _)) => hub.epoch(now_us),
            None => now_us,
        });
        let interval = now_us.saturating_sub(epoch) / self.settings.interval_us.max(1);
        if interval > self.interval {
            self.flush(now_us, interval, out);
            self.interval = interval;
        }
    }

    fn stop(&mut self, now_us: u64, out: &mut ExtOutput<'_>) {
        // The interval is not over: the hub still waits for its end.
        self.add_seen();
        if !self.totals.is_empty() {
            self.flush(now_us, self.interval, out);
        }
    }

    fn finish(&mut self) {
        if let Some((hub, worker)) = &self.hub {
            hub.finish(*worker);
        }
    }

    fn counters(&self, stats: &mut AnalyzerStats) {
        stats.per_destination_records = self.records;
        stats.per_destination_evictions = self.refused;
        stats.per_destination_late = self.late;
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{View, settings, tcp, udp};
    use super::*;

    #[test]
    fn masks() {
        let mut b = [0xffu8; 16];
        b[4..].fill(0);
        assert_eq!(&mask(b, 24)[..4], &[0xff, 0xff, 0xff, 0]);
        assert_eq!(&mask(b, 20)[..4], &[0xff, 0xff, 0xf0, 0]);
        assert_eq!(&mask(b, 32)[..4], &[0xff; 4]);
        assert_eq!(mask([0xff; 16], 0), [0; 16]);
        assert_eq!(mask([0xff; 16], 128), [0xff; 16]);
    }

    fn record(frame: Vec<u8>, packets: u64, octets: u64) -> FlowRecord {
        let v = View::new(frame, 0);
        FlowRecord {
            key: v.key,
            packets,
            octets,
            first_ms: 0,
            last_ms: 0,
            tcp_flags: 0,
            min_ttl: 0,
            max_ttl: 0,
            end_reason: flowcache::EndReason::Idle,
            sampling: Default::default(),
            label: 0,
            extras: None,
        }
    }

    #[test]
    fn totals_per_prefix_and_the_top_as_records() {
        let mut s = settings().per_destination;
        s.top_n = 2;
        let mut accounting = PerDestination::new(s);
        let mut events = Vec::new();
        let t0 = 1_700_000_000_000_000u64;
        accounting.on_clock(t0, &mut ExtOutput::new(&mut events));
        let mut records = [
            record(udp([1, 1, 1, 1], 1, [10, 0, 1, 1], 2), 1, 46),
            record(udp([1, 1, 1, 1], 1, [10, 0, 1, 200], 2), 1, 46),
            record(tcp([1, 1, 1, 1], 1, [10, 0, 2, 1], 2, 0x10), 1, 40),
            record(udp([1, 1, 1, 1], 1, [10, 0, 3, 1], 2), 3, 138),
        ];
        for r in &mut records {
            accounting.on_record(r, true);
        }
        // While the trigger is off nothing is counted.
        accounting.on_record(
            &mut record(udp([1, 1, 1, 1], 1, [10, 0, 2, 1], 2), 100, 4600),
            false,
        );
        // A biflow's reverse direction counts for the record's source.
        let mut biflow = record(udp([10, 0, 4, 4], 5, [10, 0, 5, 5], 6), 1, 10);
        biflow.extras = Some(Box::new(flowcache::RecordExtras {
            reverse: Some(flowcache::ReverseCounters {
                packets: 4,
                octets: 1000,
                ..Default::default()
            }),
            ..Default::default()
        }));
        accounting.on_record(&mut biflow, true);
        accounting.on_clock(t0 + s.interval_us - 1, &mut ExtOutput::new(&mut events));
        assert!(events.is_empty());
        accounting.on_clock(t0 + s.interval_us, &mut ExtOutput::new(&mut events));
        let rows: Vec<_> = events
            .iter()
            .map(|e| {
                (
                    e.fields["destination"].as_str().unwrap(),
                    e.fields["packets"].as_u64().unwrap(),
                    e.fields["octets"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(rows, [("10.0.4.0/24", 4, 1000), ("10.0.3.0/24", 3, 138)]);
        assert!(accounting.totals.is_empty());
    }

    fn to(accounting: &mut PerDestination, third_octet: u8, octets: u64) {
        accounting.on_record(
            &mut record(
                udp([1, 1, 1, 1], 1, [10, 0, third_octet, 9], 2),
                octets / 10,
                octets,
            ),
            true,
        );
    }

    #[test]
    fn the_hub_ranks_the_sum_of_the_workers_not_the_union_of_their_tops() {
        let mut s = settings().per_destination;
        s.top_n = 2;
        s.interval_us = 1_000_000;
        let hub = DestinationHub::new(s);
        let mut a = PerDestination::with_hub(s, hub.clone());
        let mut b = PerDestination::with_hub(s, hub.clone());
        let (mut a_events, mut b_events) = (Vec::new(), Vec::new());
        let t0 = 1_700_000_000_000_000u64;
        a.on_clock(t0, &mut ExtOutput::new(&mut a_events));
        // b starts later, but cuts its intervals where a does.
        b.on_clock(t0 + 300_000, &mut ExtOutput::new(&mut b_events));
        // a: X (10.0.1) 1000, Y (10.0.2) 910, Z (10.0.3) 800; b: W (10.0.4) 950, Z 800,
        // Y 100. Each worker's own top 2 is X, Y and W, Z; the sum's is Z, Y.
        for (third, octets) in [(1, 1000), (2, 910), (3, 800)] {
            to(&mut a, third, octets);
        }
        for (third, octets) in [(4, 950), (3, 800), (2, 100)] {
            to(&mut b, third, octets);
        }
        a.on_clock(t0 + 1_000_000, &mut ExtOutput::new(&mut a_events));
        assert_eq!(hub.latest(), None, "b has not handed interval 0 over");
        b.on_clock(t0 + 1_000_001, &mut ExtOutput::new(&mut b_events));
        let destination = |e: &Event| e.fields["destination"].as_str().unwrap().to_string();
        assert_eq!(
            a_events.iter().map(destination).collect::<Vec<_>>(),
            ["10.0.1.0/24", "10.0.2.0/24"]
        );
        assert_eq!(
            b_events.iter().map(destination).collect::<Vec<_>>(),
            ["10.0.4.0/24", "10.0.3.0/24"]
        );
        let totals = |destination: &str, packets, octets| DestinationTotals {
            destination: destination.into(),
            packets,
            octets,
        };
        assert_eq!(
            hub.latest(),
            Some(DestinationTop {
                interval_start_us: t0,
                interval_us: 1_000_000,
                destinations: vec![
                    totals("10.0.3.0/24", 160, 1600),
                    totals("10.0.2.0/24", 101, 1010)
                ],
            })
        );
        // A worker that stops handing over (its trigger went off) holds the others up
        // for one interval at most.
        to(&mut a, 5, 70);
        a.on_clock(t0 + 2_000_000, &mut ExtOutput::new(&mut a_events));
        assert_eq!(hub.latest().unwrap().interval_start_us, t0);
        a.on_clock(t0 + 3_000_000, &mut ExtOutput::new(&mut a_events));
        let latest = hub.latest().unwrap();
        assert_eq!(latest.interval_start_us, t0 + 1_000_000);
        assert_eq!(latest.destinations, [totals("10.0.5.0/24", 7, 70)]);
        // What a worker hands over at its end is shown once every worker has finished.
        // b's interval 1 comes after the hub closed it: counted late, not summed.
        to(&mut b, 7, 30);
        b.on_clock(t0 + 3_500_000, &mut ExtOutput::new(&mut b_events));
        assert_eq!((a.late, b.late), (0, 1));
        assert_eq!(latest, hub.latest().unwrap());
        to(&mut b, 6, 40);
        b.stop(t0 + 3_500_000, &mut ExtOutput::new(&mut b_events));
        b.finish();
        a.finish();
        assert!(hub.finished());
        assert_eq!(
            hub.latest().unwrap().destinations,
            [totals("10.0.6.0/24", 4, 40)]
        );
    }
}
