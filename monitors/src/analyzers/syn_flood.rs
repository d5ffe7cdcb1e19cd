//! SYN-flood detector: counts SYNs per destination address in one-second windows of packet
//! time; an address that receives `syn_per_sec` in one window is a victim from that packet
//! on (`syn_flood_start`, with its ports, rate, sources and a suggested filter) until it
//! stayed below for the hold time (`syn_flood_end`).
//!
//! State is capped twice: destinations (`max_victims`) and (victim, source) pairs
//! (`max_sources`, shared by every victim); a spoofed flood fills the second, whose
//! evictions are counted and still tell the story: many sources, few SYNs each.

use std::hash::BuildHasher;

use probe::ext::{BoundedTable, Event, ExtOutput, Interest, PacketView};
use serde_json::json;

use super::{AddrKey, Analyzer, AnalyzerStats, SynFloodSettings, WINDOW_US, is_syn};
use crate::conn_table::WordHash;

/// A destination enters the table (with its sources and ports) only once the sketch has
/// counted this fraction of `syn_per_sec` for it in the current second: the SYNs of
/// ordinary traffic cost a sketch update, not a table insertion and an eviction each.
const GATE_FRACTION: u64 = 8;
const SKETCH_WIDTH: usize = 4096;
/// Ports remembered per destination.
const PORTS_PER_VICTIM: usize = 8;
/// A flood with at least this many sources averaging at most [`SPOOFED_MAX_PER_SOURCE`]
/// SYNs each looks spoofed: listing its sources says nothing.
const SPOOFED_MIN_SOURCES: u64 = 64;
const SPOOFED_MAX_PER_SOURCE: f64 = 4.0;

#[derive(Debug)]
struct Episode {
    victim: AddrKey,
    ports: Vec<u16>,
    start_us: u64,
    syns: u64,
    sources: u64,
    peak_syn_per_sec: u64,
    window_us: u64,
    window_syns: u64,
    /// Start of the last window at or over the threshold.
    last_above_window_us: u64,
    last_syn_us: u64,
}

impl Episode {
    /// Closes the episode's window if `window_us` is past it.
    fn roll(&mut self, window_us: u64, threshold: u64) {
        if self.window_us == window_us {
            return;
        }
        self.peak_syn_per_sec = self.peak_syn_per_sec.max(self.window_syns);
        if self.window_syns >= threshold {
            self.last_above_window_us = self.window_us;
        }
        self.window_us = window_us;
        self.window_syns = 0;
    }
}

/// A destination's SYNs in the current window, until it becomes a victim.
#[derive(Debug, Default)]
struct Destination {
    window_us: u64,
    /// SYNs this window, including those only the sketch counted.
    window_syns: u64,
    /// SYNs this window before the destination passed the sketch's gate.
    syns_before_tracking: u64,
    /// When tracking started this window.
    first_syn_in_window_us: u64,
    ports: Vec<(u16, u64)>,
    /// Distinct sources seen (a source evicted and seen again counts twice).
    sources: u64,
}

impl Destination {
    fn count_port(&mut self, port: u16) {
        if let Some(entry) = self.ports.iter_mut().find(|(p, _)| *p == port) {
            entry.1 += 1;
        } else if self.ports.len() < PORTS_PER_VICTIM {
            self.ports.push((port, 1));
        }
    }

    fn top_ports(&self) -> Vec<u16> {
        let mut ports = self.ports.clone();
        ports.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        ports.into_iter().map(|(port, _)| port).collect()
    }
}

#[derive(Debug)]
pub struct SynFloodDetector {
    settings: SynFloodSettings,
    destinations: BoundedTable<AddrKey, Destination>,
    sources: BoundedTable<(AddrKey, AddrKey), u64>,
    /// Open floods, outside the destination table so that a scan pushing destinations
    /// out cannot lose a flood's end; at most `max_victims`.
    episodes: Vec<Episode>,
    /// Count-min sketch of this second's SYNs per destination (two rows).
    sketch: Vec<u32>,
    sketch_window_us: u64,
    last_prune_us: u64,
    starts: u64,
    ends: u64,
    episodes_refused: u64,
}

impl SynFloodDetector {
    pub fn new(settings: SynFloodSettings) -> SynFloodDetector {
        SynFloodDetector {
            settings,
            destinations: BoundedTable::new(settings.max_victims),
            sources: BoundedTable::new(settings.max_sources),
            episodes: Vec::new(),
            sketch: vec![0; 2 * SKETCH_WIDTH],
            sketch_window_us: 0,
            last_prune_us: 0,
            starts: 0,
            ends: 0,
            episodes_refused: 0,
        }
    }

    /// Counts a SYN to `key` in the sketch; this second's count so far (never less).
    fn sketch_count(&mut self, key: &AddrKey, window_us: u64) -> u64 {
        if self.sketch_window_us != window_us {
            self.sketch.fill(0);
            self.sketch_window_us = window_us;
        }
        let hash = WordHash.hash_one(key);
        let slots = [
            (hash as usize) % SKETCH_WIDTH,
            SKETCH_WIDTH + ((hash >> 32) as usize) % SKETCH_WIDTH,
        ];
        let mut estimate = u32::MAX;
        for slot in slots {
            let counter = &mut self.sketch[slot];
            *counter = counter.saturating_add(1);
            estimate = estimate.min(*counter);
        }
        u64::from(estimate)
    }

    fn start_event(&self, key: &AddrKey, destination: &Destination, now_us: u64) -> Event {
        let ip = key.ip();
        let ports = destination.top_ports();
        let elapsed = now_us
            .saturating_sub(destination.first_syn_in_window_us)
            .max(1_000);
        let tracked = destination.window_syns - destination.syns_before_tracking;
        let rate = tracked * 1_000_000 / elapsed;
        let spoofed = looks_spoofed(destination.sources, tracked);
        let top_sources = if spoofed {
            Vec::new()
        } else {
            self.top_sources(key)
        };
        let prefix = format!("{ip}/{}", key.host_len());
        let mut filter = format!("dst net {prefix}");
        if let Some(port) = ports.first() {
            filter.push_str(&format!(" and tcp dst port {port}"));
        }
        Event::new("syn_flood_start", now_us)
            .with("victim", ip.to_string())
            .with("victim_ports", ports.clone())
            .with("syn_per_sec", rate)
            .with("syns", destination.window_syns)
            .with("sources", destination.sources)
            .with("spoofed", spoofed)
            .with("top_sources", top_sources)
            .with("filter_prefix", prefix)
            .with("filter_port", ports.first().copied())
            .with("filter", filter)
    }

    fn top_sources(&self, victim: &AddrKey) -> Vec<serde_json::Value> {
        let mut sources: Vec<(AddrKey, u64)> = self
            .sources
            .iter()
            .filter(|((v, _), _)| v == victim)
            .map(|((_, s), n)| (*s, *n))
            .collect();
        sources.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        sources
            .into_iter()
            .take(self.settings.top_sources)
            .map(|(source, syns)| json!({"source": source.ip().to_string(), "syns": syns}))
            .collect()
    }

    fn end_event(episode: &Episode, now_us: u64) -> Event {
        Event::new("syn_flood_end", now_us)
            .with("victim", episode.victim.ip().to_string())
            .with("victim_ports", episode.ports.clone())
            .with("started_us", episode.start_us)
            .with("last_syn_us", episode.last_syn_us)
            .with("duration_us", episode.last_syn_us - episode.start_us)
            .with("syns", episode.syns)
            .with("peak_syn_per_sec", episode.peak_syn_per_sec)
            .with("sources", episode.sources)
            .with("spoofed", looks_spoofed(episode.sources, episode.syns))
    }
}

fn looks_spoofed(sources: u64, syns: u64) -> bool {
    sources >= SPOOFED_MIN_SOURCES && syns as f64 / sources as f64 <= SPOOFED_MAX_PER_SOURCE
}

impl Analyzer for SynFloodDetector {
    fn name(&self) -> &'static str {
        "syn_flood"
    }

    fn interest(&self) -> Interest {
        Interest::TCP_SYN
    }

    fn on_packet(&mut self, packet: &PacketView<'_>, out: &mut ExtOutput<'_>) {
        if !is_syn(packet.meta.tcp_flags) {
            return;
        }
        let now = packet.timestamp_us;
        let window = now - now % WINDOW_US;
        let key = AddrKey::dst(packet.key);
        let source = AddrKey::src(packet.key);
        let threshold = self.settings.syn_per_sec;
        if let Some(episode) = self.episodes.iter_mut().find(|e| e.victim == key) {
            let mut new_source = false;
            *self.sources.get_or_insert_with(&(key, source), || {
                new_source = true;
                0
            }) += 1;
            episode.roll(window, threshold);
            episode.window_syns += 1;
            episode.syns += 1;
            episode.sources += u64::from(new_source);
            episode.last_syn_us = now;
            if episode.window_syns >= threshold {
                episode.last_above_window_us = window;
            }
            return;
        }
        let estimate = self.sketch_count(&key, window);
        if estimate < (threshold / GATE_FRACTION).max(1) {
            return;
        }
        let mut new_source = false;
        *self.sources.get_or_insert_with(&(key, source), || {
            new_source = true;
            0
        }) += 1;
        let destination = self
            .destinations
            .get_or_insert_with(&key, Destination::default);
        if destination.window_us != window {
            // Tracked from here on; the sketch knows (never less than) the SYNs before.
            destination.window_us = window;
            destination.window_syns = estimate - 1;
            destination.syns_before_tracking = estimate - 1;
            destination.first_syn_in_window_us = now;
        }
        destination.window_syns += 1;
        destination.sources += u64::from(new_source);
        destination.count_port(packet.key.dst_port);
        if destination.window_syns < threshold {
            return;
        }
        if self.episodes.len() >= self.settings.max_victims {
            self.episodes_refused += 1;
            return;
        }
        let destination = self.destinations.remove(&key).expect("counted just above");
        out.emit(self.start_event(&key, &destination, now));
        self.starts += 1;
        self.episodes.push(Episode {
            victim: key,
            ports: destination.top_ports(),
            start_us: now,
            syns: destination.window_syns,
            sources: destination.sources,
            peak_syn_per_sec: 0,
            window_us: window,
            window_syns: destination.window_syns,
            last_above_window_us: window,
            last_syn_us: now,
        });
    }

    fn on_clock(&mut self, now_us: u64, out: &mut ExtOutput<'_>) {
        let window = now_us - now_us % WINDOW_US;
        let threshold = self.settings.syn_per_sec;
        let hold = self.settings.hold_us;
        let mut ended = 0;
        self.episodes.retain_mut(|episode| {
            if episode.window_us < window {
                episode.roll(window, threshold);
            }
            let below_since = episode.last_above_window_us + WINDOW_US;
            if now_us.saturating_sub(below_since) < hold {
                return true;
            }
            out.emit(Self::end_event(episode, now_us));
            ended += 1;
            false
        });
        self.ends += ended;
        // Quiet destinations leave once a second, so the tables hold the current ones.
        if now_us.saturating_sub(self.last_prune_us) >= WINDOW_US {
            self.last_prune_us = now_us;
            let stale = window.saturating_sub(WINDOW_US);
            self.destinations.retain(|_, d| d.window_us >= stale);
            let destinations = &self.destinations;
            let episodes = &self.episodes;
            self.sources.retain(|(victim, _), _| {
                destinations.get(victim).is_some() || episodes.iter().any(|e| e.victim == *victim)
            });
        }
    }

    fn stop(&mut self, now_us: u64, out: &mut ExtOutput<'_>) {
        for episode in std::mem::take(&mut self.episodes) {
            out.emit(Self::end_event(&episode, now_us));
            self.ends += 1;
        }
        self.destinations.retain(|_, _| false);
        self.sources.retain(|_, _| false);
    }

    fn counters(&self, stats: &mut AnalyzerStats) {
        stats.syn_flood_starts = self.starts;
        stats.syn_flood_ends = self.ends;
        stats.syn_flood_destination_evictions = self.destinations.evictions();
        stats.syn_flood_source_evictions = self.sources.evictions();
        stats.syn_flood_victims_refused = self.episodes_refused;
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{View, settings, tcp};
    use super::*;
    use probe::synth::tcp_flags::{ACK, SYN};

    fn run(
        detector: &mut SynFloodDetector,
        frames: impl IntoIterator<Item = (u64, Vec<u8>)>,
        events: &mut Vec<Event>,
    ) {
        for (t, frame) in frames {
            let v = View::new(frame, t);
            detector.on_packet(&v.view(), &mut ExtOutput::new(events));
            detector.on_clock(t, &mut ExtOutput::new(events));
        }
    }

    /// Benign handshakes: 200 a second to 50 servers, for `seconds`.
    fn background(t0: u64, seconds: u64) -> Vec<(u64, Vec<u8>)> {
        (0..seconds * 200)
            .flat_map(|i| {
                let t = t0 + i * 5_000;
                let client = [192, 168, (i >> 8) as u8, i as u8];
                let server = [10, 1, 0, (i % 50) as u8];
                let port = 1024 + (i % 60000) as u16;
                [
                    (t, tcp(client, port, server, 443, SYN)),
                    (t + 300, tcp(server, 443, client, port, SYN | ACK)),
                    (t + 600, tcp(client, port, server, 443, ACK)),
                ]
            })
            .collect()
    }

    #[test]
    fn a_spoofed_flood_starts_and_ends_with_its_victim() {
        let s = settings().syn_flood;
        let mut detector = SynFloodDetector::new(s);
        let t0 = 1_700_000_000_000_000u64;
        let mut frames = background(t0, 10);
        let flood_at = t0 + 3_250_000;
        // 5000 SYNs a second for 2 s to 10.0.0.80:80 from 10000 sources.
        frames.extend((0..10_000u64).map(|i| {
            let src = [100, 64 + (i >> 16) as u8, (i >> 8) as u8, i as u8];
            (
                flood_at + i * 200,
                tcp(src, 40000 + i as u16, [10, 0, 0, 80], 80, SYN),
            )
        }));
        frames.sort_by_key(|(t, _)| *t);
        let mut events = Vec::new();
        run(&mut detector, frames, &mut events);
        let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["syn_flood_start", "syn_flood_end"], "{events:?}");
        let start = &events[0];
        assert_eq!(start.fields["victim"], "10.0.0.80");
        assert!(start.time_us >= flood_at && start.time_us - flood_at < 1_000_000);
        assert_eq!(start.fields["victim_ports"], json!([80]));
        assert_eq!(start.fields["spoofed"], true);
        assert_eq!(
            start.fields["filter"],
            "dst net 10.0.0.80/32 and tcp dst port 80"
        );
        let rate = start.fields["syn_per_sec"].as_u64().unwrap();
        assert!((4000..=6000).contains(&rate), "rate {rate}");
        let end = &events[1];
        assert_eq!(end.fields["victim"], "10.0.0.80");
        let flood_stop = flood_at + 2_000_000;
        assert!(
            end.time_us >= flood_stop + s.hold_us - WINDOW_US
                && end.time_us <= flood_stop + s.hold_us + 2 * WINDOW_US
        );
        assert_eq!(end.fields["syns"], 10_000);
        assert!(end.fields["peak_syn_per_sec"].as_u64().unwrap() >= 4000);
    }

    #[test]
    fn background_alone_raises_nothing() {
        let mut detector = SynFloodDetector::new(settings().syn_flood);
        let mut events = Vec::new();
        run(
            &mut detector,
            background(1_700_000_000_000_000, 10),
            &mut events,
        );
        assert!(events.is_empty(), "{events:?}");
    }

    #[test]
    fn a_flood_from_few_sources_names_them_and_state_stays_capped() {
        let mut s = settings().syn_flood;
        s.max_sources = 100;
        s.max_victims = 10;
        let mut detector = SynFloodDetector::new(s);
        let t0 = 1_700_000_000_000_000u64;
        let mut events = Vec::new();
        // Three sources at 1000 SYNs a second each; then 70 SYNs (past the sketch's gate of
        // 62) to each of 50 other addresses.
        let flood = (0..3000u64).map(|i| {
            let src = [198, 51, 100, (i % 3) as u8 + 1];
            (
                t0 + i * 333,
                tcp(src, 1000 + (i / 3) as u16, [10, 0, 0, 1], 22, SYN),
            )
        });
        let scan = (0..3500u64).map(|i| {
            let dst = [10, 2, 0, (i % 50) as u8];
            (t0 + 1_500_000 + i, tcp([1, 1, 1, 1], 9, dst, 22, SYN))
        });
        run(&mut detector, flood.chain(scan), &mut events);
        let start = &events[0];
        assert_eq!(start.fields["spoofed"], false);
        let top = start.fields["top_sources"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        assert!(detector.destinations.len() <= 10 && detector.sources.len() <= 100);
        assert!(detector.destinations.evictions() > 0);
        // The scan pushed destinations out, never the open flood.
        assert_eq!(detector.episodes.len(), 1);
    }
}
