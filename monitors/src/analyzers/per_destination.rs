//! Per-destination accounting: packets and octets per destination prefix (configurable
//! length per family), over intervals of packet time; at each interval's end the top
//! destinations by octets leave as `destination_totals` records (JSON lines on the event
//! output) and become the snapshot [`PerDestination::top`] shares.
//!
//! It counts the flow records leaving the cache, not packets: the cache already summed
//! each flow's packets and octets, so accounting costs nothing per packet (a hash-map
//! update per packet cost half the worker's throughput at 100k destinations,
//! BENCHMARKS.md). A flow's traffic lands in the interval its record is exported in
//! (inactive timeout after its last packet, or its active timeout); a biflow record's
//! reverse direction is counted for its own destination, the record's source.

use std::sync::{Arc, Mutex};

use flowcache::FlowRecord;
use probe::ext::{BoundedTable, Event, ExtOutput, Interest, PacketView};

use super::{AddrKey, Analyzer, AnalyzerStats, PerDestinationSettings};

/// One destination's totals over an interval.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DestinationTotals {
    /// `address/length`.
    pub destination: String,
    pub packets: u64,
    pub octets: u64,
}

#[derive(Debug)]
pub struct PerDestination {
    settings: PerDestinationSettings,
    totals: BoundedTable<AddrKey, (u64, u64)>,
    interval_start_us: u64,
    /// The last finished interval's top destinations, shared with whoever publishes them.
    top: Arc<Mutex<Vec<DestinationTotals>>>,
    records: u64,
}

/// `bytes` with every bit past `len` cleared.
fn mask(mut bytes: [u8; 16], len: u8) -> [u8; 16] {
    let len = usize::from(len);
    for (i, byte) in bytes.iter_mut().enumerate() {
        let keep = len.saturating_sub(i * 8).min(8);
        *byte &= !(0xffu16 >> keep) as u8;
    }
    bytes
}

impl PerDestination {
    pub fn new(settings: PerDestinationSettings) -> PerDestination {
        PerDestination {
            settings,
            totals: BoundedTable::new(settings.max_destinations),
            interval_start_us: 0,
            top: Arc::default(),
            records: 0,
        }
    }

    /// The last finished interval's top destinations.
    pub fn top(&self) -> Arc<Mutex<Vec<DestinationTotals>>> {
        Arc::clone(&self.top)
    }

    fn count(&mut self, version: u8, addr: [u8; 16], packets: u64, octets: u64) {
        if packets == 0 {
            return;
        }
        let prefix = AddrKey {
            version,
            bytes: mask(addr, self.prefix_len(version)),
        };
        let totals = self.totals.get_or_insert_with(&prefix, || (0, 0));
        totals.0 += packets;
        totals.1 += octets;
    }

    fn prefix_len(&self, version: u8) -> u8 {
        if version == 6 {
            self.settings.prefix_len_v6
        } else {
            self.settings.prefix_len_v4
        }
    }

    /// Exports the interval's top destinations and starts the next interval.
    fn flush(&mut self, now_us: u64, out: &mut ExtOutput<'_>) {
        let mut all: Vec<(AddrKey, u64, u64)> = self
            .totals
            .iter()
            .map(|(k, (packets, octets))| (*k, *packets, *octets))
            .collect();
        all.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
        all.truncate(self.settings.top_n);
        let top: Vec<DestinationTotals> = all
            .into_iter()
            .map(|(key, packets, octets)| DestinationTotals {
                destination: format!("{}/{}", key.ip(), self.prefix_len(key.version)),
                packets,
                octets,
            })
            .collect();
        for (rank, totals) in top.iter().enumerate() {
            out.emit(
                Event::new("destination_totals", now_us)
                    .with("destination", totals.destination.clone())
                    .with("packets", totals.packets)
                    .with("octets", totals.octets)
                    .with("rank", rank as u64 + 1)
                    .with("interval_start_us", self.interval_start_us),
            );
            self.records += 1;
        }
        if let Ok(mut shared) = self.top.lock() {
            *shared = top;
        }
        self.totals.retain(|_, _| false);
        self.interval_start_us = now_us;
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
        if self.interval_start_us == 0 {
            self.interval_start_us = now_us;
        } else if now_us.saturating_sub(self.interval_start_us) >= self.settings.interval_us {
            self.flush(now_us, out);
        }
    }

    fn stop(&mut self, now_us: u64, out: &mut ExtOutput<'_>) {
        if !self.totals.is_empty() {
            self.flush(now_us, out);
        }
        self.interval_start_us = 0;
    }

    fn counters(&self, stats: &mut AnalyzerStats) {
        stats.per_destination_records = self.records;
        stats.per_destination_evictions = self.totals.evictions();
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
        assert_eq!(accounting.top().lock().unwrap().len(), 2);
        assert!(accounting.totals.is_empty());
    }
}
