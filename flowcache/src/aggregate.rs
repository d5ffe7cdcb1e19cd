//! Protocol-port aggregation (Cisco's scheme) over expired flow records.
//!
//! Records are summed by (protocol, source port, destination port) within fixed intervals
//! of `interval_ms` aligned to the Unix epoch. A record belongs to the interval holding its
//! `last_ms`, so the result depends only on the records, not on when they arrive.
//!
//! Records reach the aggregator some time after their last packet: up to an inactive
//! timeout (plus sweep and channel latency) for idle ends. An interval is therefore closed
//! and emitted by [`ProtocolPortAggregator::poll`] only once `now` has passed its end by
//! `grace_ms`. A record that arrives for an interval already emitted is not lost: it is
//! counted as late and emitted at the next poll as a further aggregate of that interval,
//! so totals always add up.
//!
//! Records with different sampling are never summed together (in practice every record
//! of a probe has the same sampling, so the key is the three fields).

use std::collections::{BTreeMap, HashMap};

use crate::{AggregateRecord, FlowRecord, SamplingInfo};

/// Default lateness allowance: the default inactive timeout plus one second for the sweep
/// and the hand-over from the workers.
pub const DEFAULT_GRACE_MS: u64 = 16_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct AggregateKey {
    protocol: u8,
    src_port: u16,
    dst_port: u16,
    sampling: SamplingInfo,
}

/// The aggregator's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AggregatorStats {
    /// Flow records added.
    pub records_in: u64,
    /// Records added for an interval that had already been emitted.
    pub late_records: u64,
    /// Aggregate records emitted.
    pub aggregates_out: u64,
}

/// Sums expired flows per protocol and ports per interval. Runs beside the exporter, not
/// on a worker: it allocates as new keys appear.
#[derive(Debug)]
pub struct ProtocolPortAggregator {
    interval_ms: u64,
    grace_ms: u64,
    open: BTreeMap<u64, HashMap<AggregateKey, AggregateRecord>>,
    /// Intervals with an index below this have been emitted.
    closed_below: u64,
    stats: AggregatorStats,
}

impl ProtocolPortAggregator {
    /// Aggregates over intervals of `interval_ms` (0 counts as 1), with the default grace.
    pub fn new(interval_ms: u64) -> ProtocolPortAggregator {
        ProtocolPortAggregator {
            interval_ms: interval_ms.max(1),
            grace_ms: DEFAULT_GRACE_MS,
            open: BTreeMap::new(),
            closed_below: 0,
            stats: AggregatorStats::default(),
        }
    }

    /// How long after an interval's end to wait for its records; set it to at least the
    /// cache's inactive timeout.
    pub fn with_grace(mut self, grace_ms: u64) -> ProtocolPortAggregator {
        self.grace_ms = grace_ms;
        self
    }

    pub fn interval_ms(&self) -> u64 {
        self.interval_ms
    }

    pub fn stats(&self) -> &AggregatorStats {
        &self.stats
    }

    pub fn add(&mut self, rec: &FlowRecord) {
        let interval = rec.last_ms / self.interval_ms;
        self.stats.records_in += 1;
        if interval < self.closed_below {
            self.stats.late_records += 1;
        }
        let key = AggregateKey {
            protocol: rec.key.protocol,
            src_port: rec.key.src_port,
            dst_port: rec.key.dst_port,
            sampling: rec.sampling,
        };
        let aggregate = self
            .open
            .entry(interval)
            .or_default()
            .entry(key)
            .or_insert_with(|| AggregateRecord {
                protocol: key.protocol,
                src_port: key.src_port,
                dst_port: key.dst_port,
                flows: 0,
                packets: 0,
                octets: 0,
                first_ms: rec.first_ms,
                last_ms: rec.last_ms,
                sampling: key.sampling,
            });
        aggregate.flows += 1;
        aggregate.packets += rec.packets;
        aggregate.octets += rec.octets;
        aggregate.first_ms = aggregate.first_ms.min(rec.first_ms);
        aggregate.last_ms = aggregate.last_ms.max(rec.last_ms);
    }

    /// When [`ProtocolPortAggregator::poll`] will next have something to emit.
    pub fn next_deadline(&self) -> Option<u64> {
        let (&first, _) = self.open.first_key_value()?;
        Some(self.closes_at(first))
    }

    fn closes_at(&self, interval: u64) -> u64 {
        (interval + 1)
            .saturating_mul(self.interval_ms)
            .saturating_add(self.grace_ms)
    }

    /// Emits the aggregates of every interval that ended at least `grace_ms` before
    /// `now_ms`, oldest interval first, each sorted by protocol and ports. Returns how many.
    pub fn poll(&mut self, now_ms: u64, out: &mut Vec<AggregateRecord>) -> usize {
        let before = out.len();
        while let Some((&interval, _)) = self.open.first_key_value() {
            if self.closes_at(interval) > now_ms {
                break;
            }
            self.emit_first(out);
            self.closed_below = self.closed_below.max(interval + 1);
        }
        out.len() - before
    }

    /// Emits everything still open, as at shutdown.
    pub fn flush(&mut self, out: &mut Vec<AggregateRecord>) -> usize {
        let before = out.len();
        while let Some(interval) = self.emit_first(out) {
            self.closed_below = self.closed_below.max(interval + 1);
        }
        out.len() - before
    }

    fn emit_first(&mut self, out: &mut Vec<AggregateRecord>) -> Option<u64> {
        let (interval, aggregates) = self.open.pop_first()?;
        let start = out.len();
        out.extend(aggregates.into_values());
        out[start..].sort_unstable_by_key(|a| {
            (
                a.protocol,
                a.src_port,
                a.dst_port,
                a.sampling.algorithm as u8,
                a.sampling.interval,
            )
        });
        self.stats.aggregates_out += (out.len() - start) as u64;
        Some(interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FlowKey, SamplingAlgorithm};

    fn record(protocol: u8, sport: u16, dport: u16, first: u64, last: u64, pk: u64) -> FlowRecord {
        FlowRecord {
            key: FlowKey {
                protocol,
                src_port: sport,
                dst_port: dport,
                ..FlowKey::default()
            },
            packets: pk,
            octets: pk * 100,
            first_ms: first,
            last_ms: last,
            ..FlowRecord::default()
        }
    }

    #[test]
    fn sums_by_protocol_and_ports_within_an_interval() {
        let mut agg = ProtocolPortAggregator::new(60_000).with_grace(0);
        agg.add(&record(6, 1000, 80, 1_000, 5_000, 3));
        agg.add(&record(6, 1000, 80, 500, 59_999, 2));
        agg.add(&record(17, 1000, 80, 2_000, 3_000, 7));
        agg.add(&record(6, 1001, 80, 2_000, 3_000, 1));
        let mut out = Vec::new();
        assert_eq!(
            agg.poll(59_999, &mut out),
            0,
            "interval [0, 60 s) still open"
        );
        assert_eq!(agg.next_deadline(), Some(60_000));
        assert_eq!(agg.poll(60_000, &mut out), 3);
        assert_eq!(
            out[0],
            AggregateRecord {
                protocol: 6,
                src_port: 1000,
                dst_port: 80,
                flows: 2,
                packets: 5,
                octets: 500,
                first_ms: 500,
                last_ms: 59_999,
                sampling: SamplingInfo::default(),
            }
        );
        assert_eq!(
            (out[1].protocol, out[1].src_port, out[1].flows),
            (6, 1001, 1)
        );
        assert_eq!((out[2].protocol, out[2].packets), (17, 7));
        assert_eq!(agg.next_deadline(), None);
        assert_eq!(agg.stats().aggregates_out, 3);
    }

    #[test]
    fn a_record_belongs_to_the_interval_of_its_last_packet() {
        let mut agg = ProtocolPortAggregator::new(1_000).with_grace(0);
        agg.add(&record(6, 1, 2, 900, 1_000, 1)); // interval [1000, 2000)
        agg.add(&record(6, 1, 2, 100, 999, 1)); // interval [0, 1000)
        let mut out = Vec::new();
        assert_eq!(agg.poll(1_000, &mut out), 1);
        assert_eq!((out[0].first_ms, out[0].last_ms), (100, 999));
        assert_eq!(agg.poll(2_000, &mut out), 1);
        assert_eq!((out[1].first_ms, out[1].last_ms), (900, 1_000));
    }

    #[test]
    fn grace_delays_closing_and_late_records_are_still_emitted() {
        let mut agg = ProtocolPortAggregator::new(10_000).with_grace(15_000);
        agg.add(&record(17, 53, 53, 0, 9_000, 1));
        let mut out = Vec::new();
        assert_eq!(agg.poll(24_999, &mut out), 0);
        // An idle record of the same interval arriving within the grace joins the aggregate.
        agg.add(&record(17, 53, 53, 1_000, 9_500, 2));
        assert_eq!(agg.poll(25_000, &mut out), 1);
        assert_eq!((out[0].flows, out[0].packets), (2, 3));
        // Past the grace it comes out separately, and is counted as late.
        agg.add(&record(17, 53, 53, 2_000, 9_900, 4));
        assert_eq!(agg.stats().late_records, 1);
        assert_eq!(agg.poll(25_001, &mut out), 1);
        assert_eq!(
            (out[1].flows, out[1].packets, out[1].last_ms),
            (1, 4, 9_900)
        );
    }

    #[test]
    fn flush_emits_everything_and_totals_add_up() {
        let mut agg = ProtocolPortAggregator::new(1_000);
        let mut packets = 0;
        for i in 0..500u64 {
            let r = record(
                (i % 3) as u8,
                (i % 7) as u16,
                80,
                i * 37,
                i * 37 + i % 5,
                i + 1,
            );
            packets += r.packets;
            agg.add(&r);
        }
        let mut out = Vec::new();
        agg.flush(&mut out);
        assert_eq!(out.iter().map(|a| a.packets).sum::<u64>(), packets);
        assert_eq!(out.iter().map(|a| a.flows).sum::<u64>(), 500);
        assert_eq!(agg.next_deadline(), None);
        assert_eq!(agg.flush(&mut out), 0);
    }

    #[test]
    fn differently_sampled_records_stay_apart() {
        let mut agg = ProtocolPortAggregator::new(1_000);
        let sampled = FlowRecord {
            sampling: SamplingInfo {
                algorithm: SamplingAlgorithm::Random,
                interval: 10,
            },
            ..record(6, 1, 2, 0, 10, 1)
        };
        agg.add(&record(6, 1, 2, 0, 10, 1));
        agg.add(&sampled);
        let mut out = Vec::new();
        assert_eq!(agg.flush(&mut out), 2);
        assert!(
            out.iter()
                .any(|a| a.sampling == sampled.sampling && a.flows == 1)
        );
    }
}
