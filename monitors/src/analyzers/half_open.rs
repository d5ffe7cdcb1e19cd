//! Half-open TCP tracker: every SYN opens a pending handshake, the client's first ACK
//! completes it, a RST from either side closes it; a handshake still pending `timeout`
//! after its SYN is half-open and counted against its destination. A destination with
//! `threshold` half-open handshakes in one second raises a `half_open` event listing the
//! top destinations.
//!
//! Speed: every TCP packet may complete a handshake, so the pending handshakes are looked
//! up once per packet, at random: they live in a [`ConnTable`] (one 64-byte slot per
//! handshake, SYN time in the slot), and packets are taken in two steps, as the KPI
//! monitor does: `on_packet` hashes the handshake and prefetches its slot; once per burst
//! (`on_clock`, or when a burst's worth waits) the packets are applied in order, their
//! slots loaded meanwhile. A hash map cost a cache miss per packet on the critical path
//! (BENCHMARKS.md). Most ACKs complete nothing (every data segment of an established
//! connection is one): a [`PendingFilter`], a byte per slot of the table's size, says
//! when no pending handshake can share the ACK's hash, and such an ACK stops there.

use std::hash::{BuildHasher, Hash, Hasher};

use flowcache::FlowKey;
use probe::ext::{BoundedTable, Event, ExtOutput, Interest, PacketView};
use serde_json::json;

use super::{
    AddrKey, Analyzer, AnalyzerStats, HalfOpenSettings, WINDOW_US, is_handshake_ack, is_syn,
};
use crate::conn_table::{ConnTable, WordHash};

/// A handshake's identity, the same from the SYN and from the client's ACK.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Handshake {
    client: [u8; 16],
    server: [u8; 16],
    client_port: u16,
    server_port: u16,
}

impl Hash for Handshake {
    // Five words (the derived hash adds a length per address and a word per port).
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(&self.client);
        state.write(&self.server);
        state.write_u32(u32::from(self.client_port) << 16 | u32::from(self.server_port));
    }
}

impl Handshake {
    /// The handshake `key`'s sender opens, as its client.
    fn from_client(key: &FlowKey) -> Handshake {
        Handshake {
            client: key.src_addr,
            server: key.dst_addr,
            client_port: key.src_port,
            server_port: key.dst_port,
        }
    }

    /// The same connection seen from the other side.
    fn reversed(self) -> Handshake {
        Handshake {
            client: self.server,
            server: self.client,
            client_port: self.server_port,
            server_port: self.client_port,
        }
    }
}

/// What a pending handshake keeps in its slot.
#[derive(Clone, Copy, Debug, Default)]
struct Pending {
    syn_us: u64,
    ip_version: u8,
}

// A pending handshake's slot is one cache line: the prefetch in `on_packet` loads all of it.
const _: () = assert!(size_of::<crate::conn_table::Slot<Handshake, Pending>>() == 64);

/// How many handshakes, pending or on their way to the table, have a hash with the same
/// low bits: a byte a counter, so the filter stays in the near caches while the table
/// misses them. A counter that reaches 255 stays there (it then only ever says "maybe",
/// which costs a lookup, never a wrong answer).
#[derive(Debug)]
struct PendingFilter {
    counts: Vec<u8>,
    mask: usize,
}

impl PendingFilter {
    fn new(max_pending: usize) -> PendingFilter {
        // Twice the entries, at most 64 KB: the filter must stay in the near caches, or
        // a SYN's count waits on a miss as long as the lookup it saves (at 512 KB it was
        // the tracker's hottest instruction on a trace with 60k handshakes open). Past 32k pending handshakes counters are shared more and filter less.
        let len = (max_pending.max(1) * 2).next_power_of_two().min(1 << 16);
        PendingFilter {
            counts: vec![0; len],
            mask: len - 1,
        }
    }

    #[inline]
    fn may_hold(&self, hash: u64) -> bool {
        self.counts[hash as usize & self.mask] != 0
    }

    #[inline]
    fn add(&mut self, hash: u64) {
        let count = &mut self.counts[hash as usize & self.mask];
        *count = count.saturating_add(1);
    }

    #[inline]
    fn remove(&mut self, hash: u64) {
        let count = &mut self.counts[hash as usize & self.mask];
        if *count != u8::MAX {
            *count -= 1;
        }
    }

    fn clear(&mut self) {
        self.counts.fill(0);
    }
}

/// Packets waiting to be applied: a burst's worth (`probe::MAX_BURST`).
const SEEN_BATCH: usize = 64;

/// What a packet does to the pending handshakes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// A SYN: opens the handshake (a retransmission keeps the first SYN's time).
    Open,
    /// The client's ACK: completes it.
    Complete,
    /// A RST, from either side: closes it, refused.
    Reset,
}

/// A packet seen and not yet applied; `handshake` as the packet's sender is the client.
#[derive(Clone, Copy, Debug)]
struct Seen {
    step: Step,
    handshake: Handshake,
    hash: u64,
    time_us: u64,
    ip_version: u8,
}

#[derive(Debug, Default)]
struct DestinationCount {
    window_us: u64,
    half_open: u64,
    total: u64,
    /// The window already reported: one event per destination and second.
    reported_window_us: Option<u64>,
}

#[derive(Debug)]
pub struct HalfOpenTracker {
    settings: HalfOpenSettings,
    /// Pending handshakes, at most `max_pending`.
    pending: ConnTable<Handshake, (), Pending>,
    /// Counts the pending handshakes and the SYNs seen and not yet applied.
    filter: PendingFilter,
    seen: Vec<Seen>,
    destinations: BoundedTable<AddrKey, DestinationCount>,
    next_sweep_us: u64,
    completed: u64,
    half_open: u64,
    events: u64,
    /// SYNs not tracked because `max_pending` handshakes were pending.
    refused: u64,
}

impl HalfOpenTracker {
    pub fn new(settings: HalfOpenSettings) -> HalfOpenTracker {
        HalfOpenTracker {
            settings,
            pending: ConnTable::new(settings.max_pending),
            filter: PendingFilter::new(settings.max_pending),
            seen: Vec::with_capacity(SEEN_BATCH),
            destinations: BoundedTable::new(settings.max_destinations),
            next_sweep_us: 0,
            completed: 0,
            half_open: 0,
            events: 0,
            refused: 0,
        }
    }

    /// Applies the packets seen so far, in order (their slots were prefetched as they
    /// were seen).
    fn apply_seen(&mut self) {
        for i in 0..self.seen.len() {
            let s = self.seen[i];
            match s.step {
                Step::Open => {
                    // Counted in the filter when seen: stays counted only if it is new.
                    if self.pending.find(&s.handshake, s.hash).is_some() {
                        self.filter.remove(s.hash);
                        continue;
                    }
                    match self.pending.insert(s.handshake, s.hash, ()) {
                        Some(slot) => {
                            self.pending.entry_mut(slot).0.live = Pending {
                                syn_us: s.time_us,
                                ip_version: s.ip_version,
                            }
                        }
                        None => {
                            self.filter.remove(s.hash);
                            self.refused += 1;
                        }
                    }
                }
                Step::Complete => {
                    if let Some(slot) = self.pending.find(&s.handshake, s.hash) {
                        self.pending.remove(slot);
                        self.filter.remove(s.hash);
                        self.completed += 1;
                    }
                }
                Step::Reset => {
                    // Whichever side sent it: the server's RST is the handshake reversed.
                    let server_side = s.handshake.reversed();
                    let hash = self.pending.hash(&server_side);
                    if let Some(slot) = self.pending.find(&server_side, hash) {
                        self.pending.remove(slot);
                        self.filter.remove(hash);
                    } else if let Some(slot) = self.pending.find(&s.handshake, s.hash) {
                        self.pending.remove(slot);
                        self.filter.remove(s.hash);
                    }
                }
            }
        }
        self.seen.clear();
    }

    fn top(&self, window_us: u64) -> Vec<serde_json::Value> {
        let mut top: Vec<(AddrKey, u64)> = self
            .destinations
            .iter()
            .filter(|(_, d)| d.window_us == window_us && d.half_open > 0)
            .map(|(k, d)| (*k, d.half_open))
            .collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        top.into_iter()
            .take(self.settings.top_n)
            .map(|(k, n)| json!({"destination": k.ip().to_string(), "half_open": n}))
            .collect()
    }

    /// Counts the handshakes pending past the timeout as half-open.
    fn sweep(&mut self, now_us: u64, out: &mut ExtOutput<'_>) {
        self.apply_seen();
        let timeout = self.settings.timeout_us;
        let mut expired = Vec::new();
        let filter = &mut self.filter;
        self.pending.retain(|slot, ()| {
            if now_us.saturating_sub(slot.live.syn_us) < timeout {
                return true;
            }
            filter.remove(WordHash.hash_one(slot.key));
            expired.push(AddrKey {
                version: slot.live.ip_version,
                bytes: slot.key.server,
            });
            false
        });
        let window = now_us - now_us % WINDOW_US;
        let mut crossed = Vec::new();
        for server in expired {
            self.half_open += 1;
            let count = self
                .destinations
                .get_or_insert_with(&server, DestinationCount::default);
            if count.window_us != window {
                count.window_us = window;
                count.half_open = 0;
            }
            count.half_open += 1;
            count.total += 1;
            if count.half_open >= self.settings.threshold
                && count.reported_window_us != Some(window)
            {
                count.reported_window_us = Some(window);
                crossed.push(server);
            }
        }
        for server in crossed {
            let count = self.destinations.get(&server).expect("counted above");
            let event = Event::new("half_open", now_us)
                .with("victim", server.ip().to_string())
                .with("half_open", count.half_open)
                .with("half_open_total", count.total)
                .with("timeout_us", timeout)
                .with("top_destinations", self.top(window));
            out.emit(event);
            self.events += 1;
        }
    }
}

impl Analyzer for HalfOpenTracker {
    fn name(&self) -> &'static str {
        "half_open"
    }

    fn interest(&self) -> Interest {
        // SYNs open, the client's ACK completes, RSTs close; FIN and SYN-ACK do nothing.
        Interest::TCP_HANDSHAKE
    }

    fn on_packet(&mut self, packet: &PacketView<'_>, _out: &mut ExtOutput<'_>) {
        let flags = packet.meta.tcp_flags;
        let step = if is_syn(flags) {
            Step::Open
        } else if is_handshake_ack(flags) {
            Step::Complete
        } else if flags & 0x04 != 0 {
            Step::Reset
        } else {
            return;
        };
        let key = packet.key;
        let handshake = Handshake::from_client(key);
        let hash = self.pending.hash(&handshake);
        match step {
            Step::Open => self.filter.add(hash),
            Step::Complete if !self.filter.may_hold(hash) => return,
            Step::Complete | Step::Reset => {}
        }
        self.pending.prefetch_slot(hash);
        self.seen.push(Seen {
            step,
            handshake,
            hash,
            time_us: packet.timestamp_us,
            ip_version: key.ip_version,
        });
        if self.seen.len() >= SEEN_BATCH {
            self.apply_seen();
        }
    }

    fn on_clock(&mut self, now_us: u64, out: &mut ExtOutput<'_>) {
        self.apply_seen();
        if now_us < self.next_sweep_us {
            return;
        }
        // Four sweeps per timeout: a half-open handshake is counted at most a quarter of
        // the timeout late.
        self.next_sweep_us = now_us + (self.settings.timeout_us / 4).max(10_000);
        self.sweep(now_us, out);
    }

    fn stop(&mut self, now_us: u64, out: &mut ExtOutput<'_>) {
        self.sweep(now_us, out);
        self.pending.clear();
        self.filter.clear();
        self.destinations.retain(|_, _| false);
    }

    fn counters(&self, stats: &mut AnalyzerStats) {
        stats.half_open_handshakes = self.half_open;
        stats.half_open_completed = self.completed;
        stats.half_open_events = self.events;
        stats.half_open_pending_evictions = self.refused;
        stats.half_open_destination_evictions = self.destinations.evictions();
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{View, settings, tcp};
    use super::*;
    use probe::synth::tcp_flags::{ACK, RST, SYN};

    fn show(tracker: &mut HalfOpenTracker, events: &mut Vec<Event>, t: u64, frame: Vec<u8>) {
        let v = View::new(frame, t);
        tracker.on_packet(&v.view(), &mut ExtOutput::new(events));
        tracker.on_clock(t, &mut ExtOutput::new(events));
    }

    #[test]
    fn unanswered_handshakes_past_the_timeout_raise_an_event() {
        let s = settings().half_open;
        let mut tracker = HalfOpenTracker::new(s);
        let mut events = Vec::new();
        let t0 = 1_700_000_000_000_000u64;
        // 100 completed, 20 refused, then 80 never completed to 10.0.0.5.
        for i in 0..100u16 {
            let t = t0 + u64::from(i) * 1_000;
            show(
                &mut tracker,
                &mut events,
                t,
                tcp([10, 1, 1, 1], 1000 + i, [10, 0, 0, 5], 80, SYN),
            );
            show(
                &mut tracker,
                &mut events,
                t + 500,
                tcp([10, 1, 1, 1], 1000 + i, [10, 0, 0, 5], 80, ACK),
            );
        }
        for i in 0..20u16 {
            let t = t0 + 200_000 + u64::from(i);
            show(
                &mut tracker,
                &mut events,
                t,
                tcp([10, 1, 1, 1], 3000 + i, [10, 0, 0, 5], 81, SYN),
            );
            show(
                &mut tracker,
                &mut events,
                t + 1,
                tcp([10, 0, 0, 5], 81, [10, 1, 1, 1], 3000 + i, RST | ACK),
            );
        }
        let flood = t0 + 300_000;
        for i in 0..80u16 {
            show(
                &mut tracker,
                &mut events,
                flood + u64::from(i),
                tcp([172, 16, 0, i as u8], 5000, [10, 0, 0, 5], 80, SYN),
            );
        }
        assert!(events.is_empty());
        // Time passes (packets elsewhere, completed).
        let end = flood + s.timeout_us + 1_000_000;
        let mut t = flood;
        while t < end {
            t += 100_000;
            tracker.on_clock(t, &mut ExtOutput::new(&mut events));
        }
        assert_eq!(tracker.half_open, 80);
        assert_eq!(tracker.completed, 100);
        assert_eq!(events.len(), 1, "{events:?}");
        let event = &events[0];
        assert_eq!(event.kind, "half_open");
        assert_eq!(event.fields["victim"], "10.0.0.5");
        assert!(event.fields["half_open"].as_u64().unwrap() >= s.threshold);
        assert!(
            event.time_us >= flood + s.timeout_us
                && event.time_us <= flood + s.timeout_us * 5 / 4 + 200_000
        );
        assert_eq!(
            event.fields["top_destinations"][0]["destination"],
            "10.0.0.5"
        );
    }

    #[test]
    fn pending_state_is_capped() {
        let mut s = settings().half_open;
        s.max_pending = 50;
        let mut tracker = HalfOpenTracker::new(s);
        let mut events = Vec::new();
        for i in 0..500u16 {
            show(
                &mut tracker,
                &mut events,
                1_000 + u64::from(i),
                tcp([1, 2, 3, 4], i, [5, 6, 7, 8], 80, SYN),
            );
        }
        tracker.apply_seen();
        assert_eq!(tracker.pending.len(), 50);
        assert_eq!(tracker.refused, 450);
        // The refused SYNs left the filter: it counts the 50 pending, no more.
        let counted: u64 = tracker.filter.counts.iter().map(|&c| u64::from(c)).sum();
        assert_eq!(counted, 50);
    }

    /// Shows packets without a clock in between: they wait in one batch.
    fn batch(tracker: &mut HalfOpenTracker, t: u64, frames: Vec<Vec<u8>>) {
        let mut events = Vec::new();
        for frame in frames {
            let v = View::new(frame, t);
            tracker.on_packet(&v.view(), &mut ExtOutput::new(&mut events));
        }
    }

    #[test]
    fn the_filter_skips_only_acks_no_pending_handshake_can_match() {
        let s = settings().half_open;
        let mut tracker = HalfOpenTracker::new(s);
        let t0 = 1_700_000_000_000_000u64;
        let client = [10, 1, 1, 1];
        let server = [10, 0, 0, 9];
        // SYN and its ACK in the same batch: the SYN counts in the filter when seen.
        batch(
            &mut tracker,
            t0,
            vec![
                tcp(client, 1000, server, 80, SYN),
                tcp(client, 1000, server, 80, ACK),
                tcp(client, 1001, server, 80, SYN),
                tcp(client, 1001, server, 80, SYN), // retransmitted
                tcp(client, 1002, server, 80, SYN),
            ],
        );
        assert!(tracker.seen.len() == 5, "waiting in one batch");
        tracker.apply_seen();
        assert_eq!(tracker.completed, 1);
        assert_eq!(tracker.pending.len(), 2);
        // Data of the established connection, ACKs of unknown ones: filtered before the batch.
        batch(
            &mut tracker,
            t0 + 1_000,
            vec![
                tcp(client, 1000, server, 80, ACK),
                tcp(client, 2000, server, 80, ACK),
            ],
        );
        assert!(
            tracker.seen.is_empty(),
            "no pending handshake shares their hash"
        );
        // A server's RST refuses 1002; 1001 completes; the filter is empty again.
        batch(
            &mut tracker,
            t0 + 2_000,
            vec![
                tcp(server, 80, client, 1002, RST),
                tcp(client, 1001, server, 80, ACK),
            ],
        );
        tracker.apply_seen();
        assert_eq!(tracker.completed, 2);
        assert!(tracker.pending.is_empty());
        assert!(tracker.filter.counts.iter().all(|&c| c == 0));
        // One left to time out: the sweep takes it out of the filter too.
        batch(
            &mut tracker,
            t0 + 3_000,
            vec![tcp(client, 1003, server, 80, SYN)],
        );
        let mut events = Vec::new();
        tracker.on_clock(t0 + 3_000 + s.timeout_us, &mut ExtOutput::new(&mut events));
        assert_eq!(tracker.half_open, 1);
        assert!(tracker.filter.counts.iter().all(|&c| c == 0));
    }
}
