//! Assembles sources, workers and the export loop into one run, and reports on it.

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::Sender;

use anyhow::{Context, Result, anyhow, bail};
use exporter::{CollectorConfig, CollectorCounters, SessionConfig, TransportKind};
use flowcache::counters::{CounterSet, Series, Show};
use flowcache::{CacheConfig, Sampler, SamplerSpec};
use probe::export_loop::{ExportLoop, ExportLoopConfig, ExportReport, SharedCollectorCounters};
use probe::pcap::FileSource;
use probe::policy_stage::{PolicyStage, PolicySwap};
use probe::worker::{Backpressure, Clock, SharedSnapshot, ToExporter, Worker, WorkerConfig};
use probe::{PacketSource, SourceStats};

use crate::progress::{Goal, Progress};
use crate::summary::{Table, thousands};
use exporter::ExportVersion;
use exporter::json::JsonDestination;
use probe::event_output::{SharedEventCounts, run_event_output};
use probe::ext::{Extension, Extensions};
use tapflow::config::{CacheSection, Config, Purpose};

/// Batches in flight between the workers and the exporter.
const EXPORT_QUEUE_BATCHES: usize = 1024;

/// Emptied batch vectors kept for the workers to reuse. Small on purpose: a pool as deep
/// as the queue keeps every vector a past backlog ever needed (up to 2 x 1024 x ~30 KB),
/// so resident memory ratchets up with each new high-water mark, which a soak shows as a
/// slow, leak-like creep (docs/RELIABILITY.md). With a short pool, memory follows the
/// queue's actual depth; workers allocate only while more batches are queued than this.
const RECYCLED_BATCHES: usize = 16;

/// The replay's datagram payload limit when collectors come from `--collector` flags.
const DEFAULT_REPLAY_MTU: usize = 1400;

/// Where a replay reads its capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplaySource {
    /// DPDK's pcap driver (net_pcap vdev): the same data path as a NIC.
    Dpdk,
    /// tapflow's own pcap/pcapng reader.
    File,
}

/// A replay as the command line asked for it: a capture, an optional configuration file,
/// and the stable flags, each `None` when not given (the file's value, else the default,
/// then holds).
#[derive(Clone, Debug)]
pub struct ReplaySpec {
    pub file: PathBuf,
    pub config: Option<PathBuf>,
    /// HOST:PORT of each `--collector`; they replace the file's collectors.
    pub collectors: Vec<String>,
    pub records_json: Option<JsonDestination>,
    pub events_json: Option<JsonDestination>,
    pub export: Option<ExportVersion>,
    pub source: ReplaySource,
    pub active_timeout: Option<u64>,
    pub inactive_timeout: Option<u64>,
    pub sample: Option<SamplerSpec>,
    /// Protocol-port aggregation on (it is the only scheme).
    pub aggregate: bool,
    pub aggregate_interval: Option<u64>,
    pub cache_size: Option<usize>,
    pub observation_domain: Option<u32>,
    pub mtu: Option<usize>,
    pub pace: Option<u32>,
    pub template_refresh_datagrams: Option<u32>,
    pub eal_args: Vec<String>,
    /// The summary as one JSON object instead of tables.
    pub json: bool,
    /// `[kpi] biflow` on, whatever the file says.
    pub biflow: bool,
    /// `[kpi] tcp` on, whatever the file says.
    pub tcp_kpis: bool,
    /// Deliver at the capture's pace through a receive ring of this many frames
    /// (`--realtime`); `None`: as fast as the worker reads.
    pub realtime: Option<usize>,
}

/// Resolves HOST:PORT (names allowed), taking the first address.
pub fn resolve_collector(spec: &str) -> Result<SocketAddr> {
    let mut addrs = spec
        .to_socket_addrs()
        .with_context(|| format!("collector {spec:?}: expected HOST:PORT, e.g. 127.0.0.1:2055"))?;
    match addrs.next() {
        Some(addr) => Ok(addr),
        None => bail!("collector {spec:?} resolves to no address"),
    }
}

pub fn replay(plan: &ReplaySpec) -> Result<ExitCode> {
    let path = plan.file.as_path();
    let mut config = match &plan.config {
        Some(file) => Config::load_for(file, Purpose::Replay)?,
        None => Config::default(),
    };
    apply_replay_flags(plan, &mut config);
    let sampling = match plan.sample {
        Some(spec) => spec,
        None => config.sampler_spec(),
    };
    let collectors = replay_collectors(plan, &config)?;
    if config.aggregation.protocol_port
        && collectors
            .iter()
            .any(|c| c.session.version == ExportVersion::V5)
    {
        bail!(
            "--export v5 cannot carry --aggregate protocol-port: v5 has no place for an \
             aggregate's flow count, and with aggregation nothing else is exported, so the \
             collector would receive nothing (use --export v9 or ipfix, or drop --aggregate)"
        );
    }
    let events = plan.events_json.clone().or(config.events_output());
    let json_records = plan
        .records_json
        .clone()
        .or_else(|| config.json_collector());
    if collectors.is_empty() && json_records.is_none() && events.is_none() {
        bail!(
            "nowhere to export to: give --collector HOST:PORT, --records-json PATH (- for \
             stdout) or --events-json PATH, or a --config file with [[collector]] tables"
        );
    }
    let mut cache = config.cache_config();
    if cache.inactive_timeout_ms == 0 || cache.active_timeout_ms == 0 {
        bail!("--inactive-timeout and --active-timeout must be at least 1 second");
    }
    if plan.cache_size.is_none() && config.cache.capacity == CacheSection::default().capacity {
        cache.capacity = replay_cache_capacity(path, cache.capacity);
    }
    log::info!(
        "replay {}: {} collector(s), cache {} entries, timeouts {} s idle / {} s active, \
         sampling {sampling}{}{}",
        plan.file.display(),
        collectors.len(),
        cache.capacity,
        cache.inactive_timeout_ms / 1000,
        cache.active_timeout_ms / 1000,
        plan.records_json
            .as_ref()
            .map(|d| format!(", records to {d}"))
            .unwrap_or_default(),
        events
            .as_ref()
            .map(|d| format!(", events to {d}"))
            .unwrap_or_default(),
    );
    // One pass over the file. The file reader finds the first timestamp as it starts and
    // measures progress in bytes read. The DPDK replay must know the file's packet count
    // to know when it has ended (the pcap driver gives no end-of-file signal), so it scans
    // the file first, which also yields the first timestamp.
    let (opened, total, start_us, goal) = match plan.source {
        ReplaySource::File => {
            let mut source = FileSource::open(path, 0).map_err(|e| anyhow!("{e}"))?;
            let start_us = source.first_timestamp_us().map_err(|e| anyhow!("{e}"))?;
            let goal = match source.file_len() {
                Some(total) => Goal::Bytes {
                    read: source.bytes_read(),
                    total,
                },
                None => Goal::Unknown,
            };
            (Some(source), None, start_us, goal)
        }
        ReplaySource::Dpdk => {
            let scanned = FileSource::scan(path).map_err(|e| anyhow!("{e}"))?;
            let goal = Goal::Packets(scanned.packets);
            (
                None,
                Some(scanned.packets),
                scanned.first_timestamp_us,
                goal,
            )
        }
    };
    let start_ms = start_us.unwrap_or(0) / 1000;

    // Read as fast as it goes, a file keeps the worker always busy: a controller would
    // only climb to its ceiling.
    let adaptive = config.adaptive_config();
    let adaptive = match (adaptive, plan.realtime) {
        (Some(_), None) => {
            log::warn!(
                "[sampling.adaptive] needs a load, not a file read as fast as it goes: \
                 ignored without --realtime"
            );
            None
        }
        (adaptive, _) => adaptive,
    };
    if plan.realtime.is_some() && plan.source != ReplaySource::File {
        bail!("--realtime needs --source file");
    }
    let sampler = Sampler::new(sampling);
    let aggregated = config.aggregation.protocol_port;
    let export = ExportLoopConfig {
        collectors,
        aggregate_interval_ms: aggregated
            .then(|| config.aggregation.interval.max(1).saturating_mul(1000)),
        options_interval_ms: 60_000,
        sampling: sampler.info(),
        clock: Clock::Packet,
        json_records,
        json_append: false,
    };

    let (source, placement): (Box<dyn PacketSource + Send>, ThreadPlacement) = match opened {
        Some(source) => match plan.realtime {
            Some(ring) => (
                Box::new(probe::paced::PacedSource::new(source, ring)),
                ThreadPlacement::default(),
            ),
            None => (Box::new(source), ThreadPlacement::default()),
        },
        None => dpdk_replay_source(path, total.unwrap_or(0), &plan.eal_args)?,
    };

    let started = Instant::now();
    let spec = PipelineSpec {
        cache,
        export,
        start_ms,
        progress: goal,
        clock: Clock::Packet,
        backpressure: Backpressure::Block,
        queue_batches: EXPORT_QUEUE_BATCHES,
        placement,
        extensions: vec![crate::extensions::worker_extensions(&config)],
        events,
        events_queue: config.events.queue,
        policy: config.policy_set(),
        // Collectors given as flags replace the file's, and with them its routes.
        policy_routes: if plan.collectors.is_empty() {
            config.policy_routes()
        } else {
            Vec::new()
        },
        adaptive,
        // A file source is never idle but at its end.
        idle_sleep: None,
        // A paced replay is measured as a port is (busy share, adaptive sampling).
        touch_table_at_start: plan.realtime.is_some(),
    };
    let report = run_pipeline(vec![(source, sampler)], spec, |_| None)?;
    let elapsed = started.elapsed();
    // Read to its end, the file holds what the reader delivered.
    let file_packets = total.or_else(|| {
        report
            .workers
            .iter()
            .all(|w| w.source_ended && w.error.is_none())
            .then(|| {
                report
                    .workers
                    .iter()
                    .map(|w| w.source.rx_packets + w.source.rx_missed)
                    .sum()
            })
    });
    let export_name = replay_export_name(plan, &config);
    print_replay_summary(
        plan,
        &export_name,
        file_packets,
        &report,
        elapsed.as_secs_f64(),
        aggregated,
    );
    if let Some(err) = report.workers.iter().find_map(|w| w.error.clone()) {
        bail!("replay stopped early: {err}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The stable replay flags override the configuration file's values.
fn apply_replay_flags(plan: &ReplaySpec, config: &mut Config) {
    if let Some(n) = plan.cache_size {
        config.cache.capacity = n;
    }
    if let Some(secs) = plan.inactive_timeout {
        config.cache.inactive_timeout = secs;
    }
    if let Some(secs) = plan.active_timeout {
        config.cache.active_timeout = secs;
    }
    if plan.aggregate {
        config.aggregation.protocol_port = true;
    }
    if let Some(secs) = plan.aggregate_interval {
        config.aggregation.interval = secs;
    }
    if let Some(id) = plan.observation_domain {
        config.export.observation_domain = id;
    }
    config.kpi.biflow |= plan.biflow;
    config.kpi.tcp |= plan.tcp_kpis;
}

/// `--collector` flags replace the file's collectors; `--export`, `--mtu` and `--pace`
/// apply to whichever collectors remain.
fn replay_collectors(plan: &ReplaySpec, config: &Config) -> Result<Vec<CollectorConfig>> {
    let domain = config.export.observation_domain;
    let mut collectors = if plan.collectors.is_empty() {
        config.collector_configs()?
    } else {
        let mut flagged = Vec::new();
        for spec in &plan.collectors {
            let addr = resolve_collector(spec)?;
            let session = SessionConfig {
                version: ExportVersion::Ipfix,
                observation_domain_id: domain,
                engine_id: (domain & 0xff) as u8,
                mtu: DEFAULT_REPLAY_MTU,
                extras: config.export_extras(),
                sampling_time: config.sampling.adaptive.enabled,
                ..SessionConfig::default()
            };
            flagged.push(CollectorConfig::new(addr, TransportKind::Udp, session));
        }
        flagged
    };
    for collector in &mut collectors {
        if let Some(version) = plan.export {
            collector.session.version = version;
        }
        if let Some(mtu) = plan.mtu {
            collector.session.mtu = mtu;
        }
        if let Some(pace) = plan.pace {
            collector.pace_datagrams_per_sec = (pace > 0).then_some(pace);
        }
        if let Some(n) = plan.template_refresh_datagrams {
            collector.session.template_refresh_datagrams = n;
        }
    }
    Ok(collectors)
}

/// The export formats in use, for the summary's first line.
fn replay_export_name(plan: &ReplaySpec, config: &Config) -> String {
    if !plan.collectors.is_empty() || config.collectors.is_empty() {
        return plan.export.unwrap_or(ExportVersion::Ipfix).to_string();
    }
    let mut names: Vec<String> = config
        .collectors
        .iter()
        .map(|c| {
            plan.export
                .map_or_else(|| c.version.name().to_string(), |v| v.to_string())
        })
        .collect();
    names.dedup();
    names.join("+")
}

#[cfg(feature = "dpdk")]
fn dpdk_replay_source(
    path: &Path,
    total: u64,
    extra_eal_args: &[String],
) -> Result<(Box<dyn PacketSource + Send>, ThreadPlacement)> {
    use probe::dpdk_source::{DpdkPortConfig, DpdkSource, EalArgs};
    let vdev = format!("net_pcap0,rx_pcap={}", path.display());
    let mut eal_args = EalArgs::sandbox().vdev(&vdev);
    for arg in extra_eal_args {
        eal_args = eal_args.arg(arg);
    }
    let eal = eal_args.init().map_err(|e| anyhow!("{e}"))?;
    let config = DpdkPortConfig::new("net_pcap0").expected_packets(Some(total));
    let source = DpdkSource::open(&eal, &config).map_err(|e| anyhow!("{e}"))?;
    let placement = ThreadPlacement::on_lcores(&eal.lcore_cpus(), 1);
    Ok((Box::new(source), placement))
}

#[cfg(not(feature = "dpdk"))]
fn dpdk_replay_source(
    _path: &Path,
    _total: u64,
    _extra_eal_args: &[String],
) -> Result<(Box<dyn PacketSource + Send>, ThreadPlacement)> {
    bail!("this tapflow was built without DPDK; use --source file")
}

/// Smallest flow table a replay sizes from its file.
const REPLAY_MIN_CAPACITY: usize = 4096;
/// Fewest bytes a capture spends on a packet that can start a flow: a 16-byte classic pcap
/// record header (a pcapng packet block spends 32) and an Ethernet and IPv4 header.
const MIN_FLOW_RECORD_BYTES: u64 = 16 + 14 + 20;
/// Slots per flow the file could hold at most, so that a bucket fills no more often than
/// in a table sized for a live port.
const REPLAY_SLOTS_PER_FLOW: u64 = 8;

/// A replay's flow table when the operator left the capacity at its default (`default`,
/// sized for a live port): no larger than 8 slots for every flow the file could hold (one
/// per `MIN_FLOW_RECORD_BYTES`). The table is written whole when a worker starts, and the
/// kernel zeroes each page on that first touch: for the default 1M entries (68 MB) that is
/// 11-39 ms, most of a short replay's time. The file cannot hold more flows than that, so
/// results are the same. Live ports stay preallocated at the configured size.
fn replay_cache_capacity(path: &Path, default: usize) -> usize {
    let Ok(len) = std::fs::metadata(path).map(|m| m.len()) else {
        return default;
    };
    let most_flows = len / MIN_FLOW_RECORD_BYTES;
    let wanted = usize::try_from(most_flows.saturating_mul(REPLAY_SLOTS_PER_FLOW));
    wanted
        .unwrap_or(usize::MAX)
        .max(REPLAY_MIN_CAPACITY)
        .min(default)
}

/// What a running pipeline shares with whoever supervises it (`tapflow run`).
#[derive(Debug)]
pub struct PipelineHandles {
    pub snapshots: Vec<SharedSnapshot>,
    pub collectors: SharedCollectorCounters,
    /// Events by type, as the event output last published them.
    pub events: SharedEventCounts,
    /// Messages the export loop took from the workers: moves while it drains their queue.
    pub exporter_heartbeat: Arc<AtomicU64>,
    /// Lets the supervisor send reloaded collectors to the export loop.
    pub to_exporter: Sender<ToExporter>,
    /// Set by SIGINT/SIGTERM: the workers flush and stop.
    pub quit: Arc<AtomicBool>,
    /// Set once the export loop has finished.
    pub done: Arc<AtomicBool>,
    /// Lets the supervisor hand reloaded `[[policy]]` rules to the workers (when the run
    /// started with policies).
    pub policy_swap: Option<Arc<PolicySwap>>,
}

/// Which CPU each of a run's threads is bound to; empty: none is (the scheduler places
/// them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThreadPlacement {
    pub exporter: Option<u32>,
    /// Worker `i` on `workers[i]`.
    pub workers: Vec<u32>,
}

impl ThreadPlacement {
    /// The exporter on the main lcore, worker `i` on the `i`-th worker lcore; nothing bound
    /// (and a warning) when there are fewer worker lcores than workers, since two pollers
    /// on one core would each run at half speed.
    #[cfg(feature = "dpdk")]
    pub fn on_lcores(cpus: &probe::dpdk::LcoreCpus, workers: usize) -> ThreadPlacement {
        if cpus.workers.len() < workers {
            log::warn!(
                "{workers} worker(s) but {} worker lcore(s) besides the main one: threads are \
                 not bound to cores; give [dpdk] lcores one core more than the workers",
                cpus.workers.len()
            );
            return ThreadPlacement::default();
        }
        ThreadPlacement {
            exporter: cpus.main,
            workers: cpus.workers[..workers].to_vec(),
        }
    }

    pub fn bind(cpu: Option<u32>, what: &str) {
        let Some(cpu) = cpu else { return };
        match bind_current_thread(cpu) {
            Ok(()) => log::debug!("{what} bound to CPU {cpu}"),
            Err(e) => log::warn!("{what} runs unbound: {e}"),
        }
    }
}

#[cfg(feature = "dpdk")]
fn bind_current_thread(cpu: u32) -> Result<()> {
    probe::dpdk::pin_current_thread(cpu).map_err(|e| anyhow!("{e}"))
}

#[cfg(not(feature = "dpdk"))]
fn bind_current_thread(_cpu: u32) -> Result<()> {
    bail!("this tapflow was built without DPDK, which binds threads to cores")
}

/// Everything one run needs besides its sources.
#[derive(Debug)]
pub struct PipelineSpec {
    pub cache: CacheConfig,
    pub export: ExportLoopConfig,
    pub start_ms: u64,
    /// What the progress line measures against (replays).
    pub progress: Goal,
    pub clock: Clock,
    pub backpressure: Backpressure,
    pub queue_batches: usize,
    pub placement: ThreadPlacement,
    /// Worker `i` gets `extensions[i]` (none past the end).
    pub extensions: Vec<Vec<Box<dyn Extension>>>,
    /// Where the extensions' events go as JSON lines (besides the log).
    pub events: Option<JsonDestination>,
    /// Events that may wait for the event output.
    pub events_queue: usize,
    /// `[[policy]]` rules every worker applies, and the collectors each rule's records
    /// go to (by index; rules not listed go to every collector).
    pub policy: Option<Arc<probe::policy::RuleSet>>,
    pub policy_routes: Vec<(Arc<str>, Vec<usize>)>,
    /// `[sampling.adaptive]`: every worker gets a controller of its own.
    pub adaptive: Option<probe::adaptive::AdaptiveConfig>,
    /// `[workers] idle_sleep_us` as it applies to these sources (`Config::idle_sleep`).
    pub idle_sleep: Option<std::time::Duration>,
    /// [`WorkerConfig::touch_table_at_start`] for every worker.
    pub touch_table_at_start: bool,
}

/// Runs one worker thread per source and the export loop on this thread until every
/// source has ended (or SIGINT/SIGTERM), then returns what happened. `supervise` is
/// started once everything runs, and joined at the end.
pub fn run_pipeline(
    sources: Vec<(Box<dyn PacketSource + Send>, Sampler)>,
    spec: PipelineSpec,
    supervise: impl FnOnce(PipelineHandles) -> Option<JoinHandle<()>>,
) -> Result<ExportReport> {
    let PipelineSpec {
        cache,
        export,
        start_ms,
        progress: goal,
        clock,
        backpressure,
        queue_batches,
        placement,
        extensions,
        events,
        events_queue,
        policy,
        policy_routes,
        adaptive,
        idle_sleep,
        touch_table_at_start,
    } = spec;
    let mut extensions = extensions.into_iter();
    let policy_swap = policy
        .as_ref()
        .map(|rules| Arc::new(PolicySwap::new(rules.clone())));
    let quit = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, quit.clone())
            .context("cannot install the SIGINT/SIGTERM handler")?;
    }
    let published: SharedCollectorCounters = Arc::default();
    let exporter_heartbeat = Arc::new(AtomicU64::new(0));
    let mut export = export;
    if let Some(config) = adaptive {
        // The collectors' first sampling record says what the workers start at.
        let start = probe::adaptive::AdaptiveController::new(config, std::time::Instant::now());
        export.sampling = match start.interval() {
            1 => SamplerSpec::None.info(),
            n => SamplerSpec::Hash(n).info(),
        };
    }
    let exporter = ExportLoop::new(export, start_ms)
        .context("cannot open the collectors' sockets")?
        .with_published_counters(published.clone())
        .with_policy_routes(&policy_routes)
        .with_heartbeat(exporter_heartbeat.clone());
    let (to_exporter, from_workers) = crossbeam_channel::bounded(queue_batches.max(1));
    let (recycle, recycled) = crossbeam_channel::bounded(RECYCLED_BATCHES);
    let workers = sources.len();
    let per_worker: Vec<Extensions> = (0..workers)
        .map(|_| Extensions::new(extensions.next().unwrap_or_default()))
        .collect();
    let event_counts = SharedEventCounts::default();
    // The event output exists when some worker has an extension that may emit.
    let (event_queue, event_thread) = if per_worker.iter().any(|e| !e.is_empty()) {
        let (tx, rx) = crossbeam_channel::bounded(events_queue.max(1));
        let output = events.clone();
        let append = clock == Clock::Wall;
        let published = event_counts.clone();
        let thread = std::thread::Builder::new()
            .name("tapflow-events".into())
            .spawn(move || run_event_output(rx, output, append, &published))
            .context("cannot start the event output thread")?;
        (Some(tx), Some(thread))
    } else {
        (None, None)
    };
    let mut per_worker = per_worker.into_iter();
    let mut counters = Vec::new();
    let mut snapshots = Vec::new();
    let mut threads = Vec::new();
    for (id, (source, sampler)) in sources.into_iter().enumerate() {
        let config = WorkerConfig {
            idle_sleep,
            touch_table_at_start,
            ..WorkerConfig::new(id, cache, clock, backpressure)
        };
        let progress = Arc::new(AtomicU64::new(0));
        counters.push(progress.clone());
        let snapshot = SharedSnapshot::default();
        snapshots.push(snapshot.clone());
        let worker = Worker::new(
            config,
            source,
            sampler,
            to_exporter.clone(),
            recycled.clone(),
        )
        .with_progress(progress)
        .with_snapshot(snapshot);
        let worker = match (&policy, &policy_swap) {
            (Some(rules), Some(swap)) => worker
                .with_policy(PolicyStage::new(
                    rules.clone(),
                    cache.capacity,
                    cache.inactive_timeout_ms,
                ))
                .with_policy_swap(swap.clone()),
            _ => worker,
        };
        let worker = match adaptive {
            Some(config) => worker.with_adaptive(probe::adaptive::AdaptiveController::new(
                config,
                std::time::Instant::now(),
            )),
            None => worker,
        };
        let worker = match (&event_queue, per_worker.next()) {
            (Some(queue), Some(attached)) if !attached.is_empty() => {
                worker.with_extensions(attached, queue.clone())
            }
            _ => worker,
        };
        let quit = quit.clone();
        let cpu = placement.workers.get(id).copied();
        let thread = std::thread::Builder::new()
            .name(format!("tapflow-worker-{id}"))
            .spawn(move || {
                ThreadPlacement::bind(cpu, &format!("worker {id}"));
                worker.run(&quit)
            })
            .context("cannot start a worker thread")?;
        threads.push(thread);
    }
    let done = Arc::new(AtomicBool::new(false));
    let supervisor = supervise(PipelineHandles {
        snapshots,
        collectors: published,
        events: event_counts,
        exporter_heartbeat,
        to_exporter: to_exporter.clone(),
        quit: quit.clone(),
        done: done.clone(),
        policy_swap: policy_swap.clone(),
    });
    drop(to_exporter);
    // Bound after the workers were spawned, so they do not inherit the exporter's CPU.
    ThreadPlacement::bind(placement.exporter, "the exporter");
    let progress = Progress::start(counters, goal);
    let mut report = exporter.run(from_workers, recycle, workers);
    progress.finish();
    done.store(true, Ordering::Relaxed);
    for thread in threads {
        thread
            .join()
            .map_err(|_| anyhow!("a worker thread panicked"))?;
    }
    drop(event_queue);
    if let Some(thread) = event_thread {
        let written = thread
            .join()
            .map_err(|_| anyhow!("the event output thread panicked"))?;
        report.events = Some(written.with_context(|| {
            format!(
                "cannot open the event output {}",
                events.map(|d| d.to_string()).unwrap_or_default()
            )
        })?);
    }
    if let Some(supervisor) = supervisor {
        let _ = supervisor.join();
    }
    Ok(report)
}

fn print_replay_summary(
    plan: &ReplaySpec,
    export_name: &str,
    file_packets: Option<u64>,
    report: &ExportReport,
    secs: f64,
    aggregated: bool,
) {
    let packets: u64 = report.workers.iter().map(|w| w.worker.packets).sum();
    let mut text = format!(
        "tapflow replay {}: {} packets via {} source, {} export, {:.2} s ({:.2} Mpps)\n\n",
        plan.file.display(),
        thousands(packets),
        match plan.source {
            ReplaySource::Dpdk => "dpdk",
            ReplaySource::File => "file",
        },
        export_name,
        secs,
        packets as f64 / secs.max(1e-9) / 1e6
    );
    if plan.json {
        let summary = serde_json::json!({
            "file": plan.file.display().to_string(),
            "source": match plan.source {
                ReplaySource::Dpdk => "dpdk",
                ReplaySource::File => "file",
            },
            "export": export_name,
            "seconds": (secs * 1e3).round() / 1e3,
            "packets_in_file": file_packets,
            "counters": report_json(report),
        });
        text = summary.to_string();
        text.push('\n');
    } else {
        text.push_str(&report_tables(report, file_packets, aggregated));
    }
    // JSON lines on stdout are for a script: the summary then goes to stderr.
    let json_on_stdout = [&plan.records_json, &plan.events_json]
        .iter()
        .any(|d| **d == Some(JsonDestination::Stdout));
    let written = if json_on_stdout {
        std::io::stderr().write_all(text.as_bytes())
    } else {
        std::io::stdout().write_all(text.as_bytes())
    };
    // A closed pipe (`| head`) is the reader's choice, not an error of the replay.
    let _ = written;
}

/// Series as JSON, by family: a number, or an object by label value.
fn series_json(series: impl IntoIterator<Item = Series>, prefix: &str) -> serde_json::Value {
    let mut families = serde_json::Map::new();
    for s in series {
        let name = format!("{prefix}{}", s.spec.family);
        if s.label_value.is_empty() {
            families.insert(name, s.value.into());
        } else if let serde_json::Value::Object(by_label) = families
            .entry(name)
            .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()))
        {
            by_label.insert(s.label_value.to_string(), s.value.into());
        }
    }
    serde_json::Value::Object(families)
}

/// Everything a run counted, named by the metrics families (docs/METRICS.md): the
/// workers', caches' and sources' counters summed, each extension's and each collector's,
/// and what the JSON outputs wrote.
fn report_json(report: &ExportReport) -> serde_json::Value {
    let source = SourceStats::sum(report.workers.iter().map(|w| &w.source));
    let worker = probe::worker::WorkerStats::sum(report.workers.iter().map(|w| &w.worker));
    let cache = flowcache::CacheStats::sum(report.workers.iter().map(|w| &w.cache));
    let mut extensions: std::collections::BTreeMap<&str, std::collections::BTreeMap<String, u64>> =
        Default::default();
    for w in &report.workers {
        for (extension, series) in &w.extensions {
            let counters = extensions.entry(extension).or_default();
            for s in series {
                let key = if s.label_value.is_empty() {
                    s.spec.family.to_string()
                } else {
                    format!("{}{{{}}}", s.spec.family, s.label_value)
                };
                *counters.entry(key).or_default() += s.value;
            }
        }
    }
    let collectors: Vec<serde_json::Value> = report
        .collectors
        .iter()
        .map(|(name, counters)| {
            serde_json::json!({ "name": name, "counters": series_json(counters.series(), "") })
        })
        .collect();
    serde_json::json!({
        "totals": series_json(
            [worker.series(), cache.series(), source.series()].into_iter().flatten(),
            "",
        ),
        "extensions": extensions,
        "collectors": collectors,
        "json_records": report.json_records.as_ref().map(|(destination, written)| {
            serde_json::json!({
                "destination": destination.to_string(),
                "lines": written.lines,
                "errors": written.errors,
            })
        }),
        "events": report.events.as_ref().map(|events| {
            serde_json::json!({
                "by_type": events.by_type.iter().map(|(k, n)| (k.to_string(), *n))
                    .collect::<std::collections::BTreeMap<_, _>>(),
                "errors": events.written.errors,
            })
        }),
    })
}

/// The summary rows of a worker's, its cache's and its source's counters (summed over
/// workers), as their declarations show them.
pub fn report_rows(
    worker: &probe::worker::WorkerStats,
    cache: &flowcache::CacheStats,
    source: &SourceStats,
) -> Vec<(String, u64)> {
    [worker.series(), cache.series(), source.series()]
        .into_iter()
        .flatten()
        .filter(Series::shown)
        .map(|s| (s.row_name(), s.value))
        .collect()
}

/// The counter table and the per-collector table that end every run.
pub fn print_report_tables(report: &ExportReport, file_packets: Option<u64>, aggregated: bool) {
    let _ = std::io::stdout().write_all(report_tables(report, file_packets, aggregated).as_bytes());
}

fn report_tables(report: &ExportReport, file_packets: Option<u64>, aggregated: bool) -> String {
    let source = SourceStats::sum(report.workers.iter().map(|w| &w.source));
    let worker = probe::worker::WorkerStats::sum(report.workers.iter().map(|w| &w.worker));
    let cache = flowcache::CacheStats::sum(report.workers.iter().map(|w| &w.cache));
    let mut t = Table::new(["counter", "value"]);
    if let Some(total) = file_packets {
        t.row(["packets in file".to_string(), thousands(total)]);
    }
    for (name, value) in report_rows(&worker, &cache, &source) {
        t.row([name, thousands(value)]);
    }
    // Extension counters, summed over workers, by extension.
    let mut extensions: Vec<(String, u64, bool)> = Vec::new();
    for w in &report.workers {
        for (extension, series) in &w.extensions {
            for s in series {
                let name = format!("{extension}: {}", s.row_name());
                match extensions.iter_mut().find(|(n, _, _)| *n == name) {
                    Some((_, value, shown)) => {
                        *value += s.value;
                        *shown |= s.shown();
                    }
                    None => extensions.push((name, s.value, s.shown())),
                }
            }
        }
    }
    for (name, value, shown) in extensions {
        if shown {
            t.row([name, thousands(value)]);
        }
    }
    t.row([
        "records to exporter".to_string(),
        thousands(report.records_in),
    ]);
    t.row([
        "packets in records".to_string(),
        thousands(report.packets_in),
    ]);
    t.row(["octets in records".to_string(), thousands(report.octets_in)]);
    if aggregated {
        t.row([
            "aggregate records".to_string(),
            thousands(report.aggregates_out),
        ]);
    }
    if let Some((destination, written)) = &report.json_records {
        t.row([
            format!("JSON records to {destination}"),
            thousands(written.lines),
        ]);
        if written.errors > 0 {
            t.row([
                "JSON record write errors".to_string(),
                thousands(written.errors),
            ]);
        }
    }
    if let Some(events) = &report.events {
        t.row(["events".to_string(), thousands(events.events())]);
        for (kind, n) in &events.by_type {
            t.row([format!("events: {kind}"), thousands(*n)]);
        }
        if events.written.errors > 0 {
            t.row([
                "event write errors".to_string(),
                thousands(events.written.errors),
            ]);
        }
    }
    // A collector's counters shown always are the columns of its table; the rare ones
    // are rows here when they happened.
    for (name, counters) in &report.collectors {
        for s in counters.series() {
            if s.spec.show == Show::NonZero && s.shown() {
                t.row([
                    format!("collector {name}: {}", s.row_name()),
                    thousands(s.value),
                ]);
            }
        }
    }
    let mut text = t.render();
    text.push('\n');
    let columns = CollectorCounters::SPECS
        .iter()
        .filter(|spec| spec.show == Show::Always);
    let mut c = Table::new(std::iter::once("collector").chain(columns.map(|spec| spec.row)));
    for (name, counters) in &report.collectors {
        let values = counters
            .series()
            .into_iter()
            .filter(|s| s.spec.show == Show::Always)
            .map(|s| thousands(s.value));
        c.row(std::iter::once(name.clone()).chain(values));
    }
    text.push_str(&c.render());
    text
}

pub fn generate(spec: &probe::synth::TrafficSpec, output: &Path) -> Result<ExitCode> {
    let packets = probe::synth::write_pcap(spec, output)
        .with_context(|| format!("cannot write {}", output.display()))?;
    println!(
        "wrote {} packets in {} flows to {}",
        thousands(packets),
        thousands(u64::from(spec.flows)),
        output.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(all(test, feature = "dpdk"))]
mod tests {
    use super::*;
    use probe::dpdk::LcoreCpus;

    #[test]
    fn workers_go_to_worker_lcores_and_the_exporter_to_the_main_one() {
        let cpus = LcoreCpus {
            main: Some(2),
            workers: vec![3, 5, 7],
        };
        assert_eq!(
            ThreadPlacement::on_lcores(&cpus, 2),
            ThreadPlacement {
                exporter: Some(2),
                workers: vec![3, 5],
            }
        );
        // More workers than worker lcores: nothing is bound rather than doubling up.
        assert_eq!(
            ThreadPlacement::on_lcores(&cpus, 4),
            ThreadPlacement::default()
        );
    }
}
