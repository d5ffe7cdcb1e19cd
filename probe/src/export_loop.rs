//! The exporter side of the data plane: drains the workers' batches, optionally aggregates
//! them by protocol and ports, and drives every collector (encoder + transport).
//!
//! It runs on the main lcore, off the data plane: pacing, reconnects and slow collectors
//! cost time here, never on a worker.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use exporter::json::{
    JsonCounters, JsonDestination, JsonLinesWriter, aggregate_to_json, record_to_json,
};
use exporter::{Collector, CollectorConfig, CollectorCounters, ExporterStatistics};
use flowcache::{AggregateRecord, FlowRecord, ProtocolPortAggregator, SamplingInfo};

use crate::worker::{Clock, SamplingChange, ToExporter, WorkerReport, wall_clock_ms};

#[derive(Clone, Debug)]
pub struct ExportLoopConfig {
    pub collectors: Vec<CollectorConfig>,
    /// Protocol-port aggregation interval; `None` exports every flow as it expires.
    pub aggregate_interval_ms: Option<u64>,
    /// How often sampling and exporter-statistics options records are sent.
    pub options_interval_ms: u64,
    pub sampling: SamplingInfo,
    pub clock: Clock,
    /// Every exported record (or aggregate) also as a JSON line here.
    pub json_records: Option<JsonDestination>,
    /// Whether a JSON file output is appended to (the appliance) or started anew (a
    /// replay).
    pub json_append: bool,
}

/// What the export loop did, for the summary and for tests.
#[derive(Clone, Debug, Default)]
pub struct ExportReport {
    pub workers: Vec<WorkerReport>,
    /// Records received from the workers, and the packets and octets in them.
    pub records_in: u64,
    pub packets_in: u64,
    pub octets_in: u64,
    /// Aggregate records produced (0 without aggregation).
    pub aggregates_out: u64,
    pub collectors: Vec<(String, CollectorCounters)>,
    /// The JSON records output and what it wrote.
    pub json_records: Option<(JsonDestination, JsonCounters)>,
    /// The event output's report, when extensions ran (filled by whoever ran it).
    pub events: Option<crate::event_output::EventOutputReport>,
    /// Sampling changes the workers' adaptive controllers made.
    pub sampling_changes: u64,
}

/// Per-collector counters as last published by the export loop (name, counters).
pub type SharedCollectorCounters = Arc<Mutex<Vec<(String, CollectorCounters)>>>;

#[derive(Debug)]
pub struct ExportLoop {
    config: ExportLoopConfig,
    collectors: Vec<Collector>,
    aggregator: Option<ProtocolPortAggregator>,
    aggregates: Vec<AggregateRecord>,
    now_ms: u64,
    last_options_ms: Option<u64>,
    report: ExportReport,
    published: Option<SharedCollectorCounters>,
    heartbeat: Option<Arc<AtomicU64>>,
    start_ms: u64,
    json_records: Option<JsonLinesWriter>,
    /// Policy name to the collectors (bit i: collector i) its records go to; a record of
    /// a policy not listed, or of none, goes to every collector.
    routes: HashMap<Arc<str>, u64>,
    /// Records routed to one collector, rebuilt per batch and collector.
    routed: Vec<FlowRecord>,
}

impl ExportLoop {
    /// Opens every collector's transport. `start_ms` is the exporter's boot time, from which
    /// NetFlow's sysUptime counts (for replays: the first packet's time).
    pub fn new(config: ExportLoopConfig, start_ms: u64) -> std::io::Result<Self> {
        let collectors = config
            .collectors
            .iter()
            .map(|c| Collector::new(c.clone(), start_ms))
            .collect::<std::io::Result<Vec<_>>>()?;
        let aggregator = config
            .aggregate_interval_ms
            .map(ProtocolPortAggregator::new);
        let json_records = config
            .json_records
            .as_ref()
            .map(|d| JsonLinesWriter::open(d, config.json_append))
            .transpose()?;
        Ok(ExportLoop {
            config,
            collectors,
            aggregator,
            aggregates: Vec::new(),
            now_ms: start_ms,
            last_options_ms: None,
            report: ExportReport::default(),
            published: None,
            heartbeat: None,
            start_ms,
            json_records,
            routes: HashMap::new(),
            routed: Vec::new(),
        })
    }

    /// Sends each policy's records only to its collectors (indices into the collectors;
    /// at most 64).
    pub fn with_policy_routes(mut self, routes: &[(Arc<str>, Vec<usize>)]) -> Self {
        self.routes = routes
            .iter()
            .map(|(name, collectors)| {
                let bits = collectors
                    .iter()
                    .filter(|&&i| i < 64)
                    .fold(0u64, |bits, &i| bits | 1 << i);
                (name.clone(), bits)
            })
            .collect();
        self
    }

    /// Whether collector `index` receives `record`.
    fn routed_to(&self, record: &FlowRecord, index: usize) -> bool {
        let policy = record.extras.as_ref().and_then(|e| e.policy.as_ref());
        match policy.and_then(|p| self.routes.get(&p.name)) {
            Some(bits) => bits & (1 << index.min(63)) != 0,
            None => true,
        }
    }

    /// Publishes collector counters into `shared` whenever the clock advances.
    /// Counts the messages the loop takes from the workers into `heartbeat` (records, and
    /// each worker's tick about once a second even when idle): a supervisor sees from it
    /// that the exporter drains.
    pub fn with_heartbeat(mut self, heartbeat: Arc<AtomicU64>) -> Self {
        self.heartbeat = Some(heartbeat);
        self
    }

    pub fn with_published_counters(mut self, shared: SharedCollectorCounters) -> Self {
        self.published = Some(shared);
        self
    }

    /// Replaces the collectors (SIGHUP reload). The old ones are closed first, so their
    /// last datagrams leave; their counters stay in the final report.
    pub fn reconfigure(&mut self, collectors: Vec<CollectorConfig>) -> std::io::Result<()> {
        let fresh = collectors
            .iter()
            .map(|c| Collector::new(c.clone(), self.start_ms))
            .collect::<std::io::Result<Vec<_>>>()?;
        for mut old in std::mem::replace(&mut self.collectors, fresh) {
            old.close(self.now_ms);
            self.report
                .collectors
                .push((old.name().to_string(), *old.counters()));
        }
        self.config.collectors = collectors;
        self.last_options_ms = None;
        Ok(())
    }

    fn publish(&self) {
        if let Some(shared) = &self.published
            && let Ok(mut slot) = shared.lock()
        {
            *slot = self
                .collectors
                .iter()
                .map(|c| (c.name().to_string(), *c.counters()))
                .collect();
        }
    }

    /// Runs until all `workers` have reported `Finished`, then flushes aggregation and
    /// sends final options records. Used vectors go back to the workers on `recycle`.
    pub fn run(
        mut self,
        from_workers: Receiver<ToExporter>,
        recycle: Sender<Vec<FlowRecord>>,
        workers: usize,
    ) -> ExportReport {
        let mut finished = 0;
        while finished < workers {
            let message = from_workers.recv_timeout(Duration::from_millis(200));
            if let (Some(heartbeat), Ok(_)) = (&self.heartbeat, &message) {
                heartbeat.fetch_add(1, Ordering::Relaxed);
            }
            match message {
                Ok(ToExporter::Records(mut batch)) => {
                    self.advance(batch.now_ms);
                    self.export_records(&batch.records);
                    batch.records.clear();
                    let _ = recycle.try_send(batch.records);
                }
                Ok(ToExporter::Tick { now_ms, .. }) => self.advance(now_ms),
                Ok(ToExporter::Reconfigure(collectors)) => match self.reconfigure(collectors) {
                    Ok(()) => log::info!("collectors reloaded"),
                    Err(e) => log::error!(
                        "reload: cannot open the new collectors ({e}); keeping the old ones"
                    ),
                },
                Ok(ToExporter::PolicyRoutes(routes)) => {
                    self = self.with_policy_routes(&routes);
                }
                Ok(ToExporter::SamplingChanged(change)) => self.sampling_changed(change),
                Ok(ToExporter::Finished(report)) => {
                    finished += 1;
                    self.report.workers.push(*report);
                }
                Err(RecvTimeoutError::Timeout) => {
                    if self.config.clock == Clock::Wall {
                        self.advance(wall_clock_ms());
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.finish()
    }

    fn advance(&mut self, now_ms: u64) {
        // The first call always runs, even at the start's own millisecond: collectors must
        // learn templates and sampling before the first data record (FastNetMon applies
        // the sampling it knows when a record arrives, and a whole capture can fit in 1 ms).
        if now_ms <= self.now_ms && self.last_options_ms.is_some() {
            return;
        }
        self.now_ms = self.now_ms.max(now_ms);
        if let Some(aggregator) = self.aggregator.as_mut() {
            aggregator.poll(now_ms, &mut self.aggregates);
            self.send_aggregates();
        }
        for collector in &mut self.collectors {
            collector.tick(now_ms);
        }
        let options_due = match self.last_options_ms {
            None => true,
            Some(last) => now_ms.saturating_sub(last) >= self.config.options_interval_ms,
        };
        if options_due {
            self.send_options();
        }
        self.publish();
    }

    fn export_records(&mut self, records: &[FlowRecord]) {
        self.report.records_in += records.len() as u64;
        for r in records {
            self.report.packets_in += r.packets;
            self.report.octets_in += r.octets;
        }
        match self.aggregator.as_mut() {
            Some(aggregator) => {
                for r in records {
                    aggregator.add(r);
                }
            }
            None if !self.routes.is_empty() => {
                for i in 0..self.collectors.len() {
                    let mut routed = std::mem::take(&mut self.routed);
                    routed.clear();
                    routed.extend(records.iter().filter(|r| self.routed_to(r, i)).cloned());
                    self.collectors[i].export_flows(&routed, self.now_ms);
                    self.routed = routed;
                }
                if let Some(json) = self.json_records.as_mut() {
                    for r in records {
                        json.write(&record_to_json(r));
                    }
                }
            }
            None => {
                for collector in &mut self.collectors {
                    collector.export_flows(records, self.now_ms);
                }
                if let Some(json) = self.json_records.as_mut() {
                    for r in records {
                        json.write(&record_to_json(r));
                    }
                }
            }
        }
    }

    fn send_aggregates(&mut self) {
        if self.aggregates.is_empty() {
            return;
        }
        self.report.aggregates_out += self.aggregates.len() as u64;
        for collector in &mut self.collectors {
            collector.export_aggregates(&self.aggregates, self.now_ms);
        }
        if let Some(json) = self.json_records.as_mut() {
            for a in &self.aggregates {
                json.write(&aggregate_to_json(a));
            }
        }
        self.aggregates.clear();
    }

    /// A worker's adaptive controller moved its interval: the collectors learn the new
    /// interval now, with the time it took effect, and every later options record repeats
    /// it. Records of flows the worker cached before the change still carry the old one.
    fn sampling_changed(&mut self, change: SamplingChange) {
        log::info!(
            "worker {}: sampling 1 in {} -> 1 in {} from {} ms (busy {:.0}% in the last \
             period, {} receive drops)",
            change.worker,
            change.from,
            change.sampling.interval,
            change.since_ms,
            change.busy * 100.0,
            change.drops
        );
        self.report.sampling_changes += 1;
        self.config.sampling = change.sampling;
        let now = self.now_ms.max(change.since_ms);
        for collector in &mut self.collectors {
            collector.export_sampling_change(change.sampling, change.since_ms, now);
        }
    }

    fn send_options(&mut self) {
        self.last_options_ms = Some(self.now_ms);
        for collector in &mut self.collectors {
            let c = collector.counters();
            let stats = ExporterStatistics {
                exported_messages: c.datagrams,
                exported_records: c.records,
                exported_octets: c.bytes,
                not_sent_records: c.send_errors_records(),
            };
            collector.export_options(self.config.sampling, &stats, self.now_ms);
        }
    }

    fn finish(mut self) -> ExportReport {
        if let Some(aggregator) = self.aggregator.as_mut() {
            aggregator.flush(&mut self.aggregates);
            self.send_aggregates();
        }
        self.send_options();
        for collector in &mut self.collectors {
            collector.close(self.now_ms);
        }
        self.publish();
        if let Some(mut json) = self.json_records.take() {
            json.flush();
            self.report.json_records = Some((json.destination().clone(), json.counters()));
        }
        let current: Vec<_> = self
            .collectors
            .iter()
            .map(|c| (c.name().to_string(), *c.counters()))
            .collect();
        self.report.collectors.extend(current);
        self.report
    }
}
