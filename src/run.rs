//! `tapflow run` (the appliance) and `tapflow check-config`.
//!
//! `run` assembles ports, workers and collectors from the configuration, then supervises
//! them from a thread of its own: the periodic statistics line, the Prometheus endpoint,
//! systemd's readiness and watchdog, and SIGHUP reloads.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use exporter::{CollectorConfig, ExportVersion, SessionConfig, TransportKind};
use flowcache::{CacheConfig, EndReason, Sampler, SamplerSpec};
use probe::PacketSource;
use probe::export_loop::ExportLoopConfig;
use probe::parse::StopReason;
use probe::worker::{Backpressure, Clock, ToExporter, WorkerSnapshot, wall_clock_ms};
use tapflow::config::{CollectorSection, Config, SamplingMode, Transport};
use tapflow::metrics::{self, Metrics, MetricsServer};
use tapflow::sdnotify;

use crate::pipeline::{
    PipelineHandles, PipelineSpec, ThreadPlacement, print_report_tables, run_pipeline,
};
use crate::summary::thousands;

pub fn check_config(path: &Path) -> Result<ExitCode> {
    let config = Config::load(path)?;
    println!("{}: ok", path.display());
    println!();
    print!("{}", config.describe());
    Ok(ExitCode::SUCCESS)
}

/// Turns the configuration's collectors into the exporter's.
pub fn collector_configs(config: &Config) -> Result<Vec<CollectorConfig>> {
    config
        .collectors
        .iter()
        .map(|c| collector_config(config, c))
        .collect()
}

fn collector_config(config: &Config, c: &CollectorSection) -> Result<CollectorConfig> {
    let addr = c
        .resolve()
        .with_context(|| format!("collector {}: cannot resolve {}", c.label(), c.address))?;
    let version = match c.version {
        tapflow::config::ExportVersion::V5 => ExportVersion::V5,
        tapflow::config::ExportVersion::V9 => ExportVersion::V9,
        tapflow::config::ExportVersion::Ipfix => ExportVersion::Ipfix,
    };
    let transport = match c.transport {
        Transport::Udp => TransportKind::Udp,
        Transport::Tcp => TransportKind::Tcp,
    };
    let session = SessionConfig {
        version,
        observation_domain_id: config.export.observation_domain,
        mtu: c.mtu as usize,
        template_refresh_ms: c.template_refresh.saturating_mul(1000),
        template_refresh_datagrams: c.template_refresh_datagrams,
        engine_id: (config.export.observation_domain & 0xff) as u8,
        sampling_in_records: c.sampling_in_records,
        extras: kpi_sections(config),
        ..SessionConfig::default()
    };
    let mut collector = CollectorConfig::new(addr, transport, session);
    // The configured MTU is the operator's word; CollectorConfig::new may lower its default.
    collector.session.mtu = c.mtu as usize;
    collector.send_buffer = c.send_buffer;
    collector.source = c
        .source_addr()
        .map_err(|e| anyhow!("collector {}: {e}", c.label()))?;
    collector.pace_datagrams_per_sec = (c.pace > 0).then_some(c.pace);
    Ok(collector)
}

pub fn cache_config(config: &Config) -> CacheConfig {
    CacheConfig {
        capacity: config.cache.capacity,
        bucket_size: config.cache.bucket_size,
        inactive_timeout_ms: config.cache.inactive_timeout.saturating_mul(1000),
        active_timeout_ms: config.cache.active_timeout.saturating_mul(1000),
        tcp_end_expiry: config.cache.tcp_end_expiry,
        expiry_budget: config.cache.expiry_budget,
    }
}

pub fn sampler_spec(config: &Config) -> SamplerSpec {
    match config.sampling.mode {
        SamplingMode::None => SamplerSpec::None,
        SamplingMode::Deterministic(n) => SamplerSpec::Deterministic(n),
        SamplingMode::Random(n) => SamplerSpec::Random(n),
        SamplingMode::Hash(n) => SamplerSpec::Hash(n),
    }
}

pub fn run(path: &Path, verbose: u8) -> Result<ExitCode> {
    let config = Config::load(path)?;
    if verbose == 0 {
        log::set_max_level(config.logging.level.to_level_filter());
    }
    let (sources, placement) = open_ports(&config)?;
    let spec = sampler_spec(&config);
    let sources: Vec<(Box<dyn PacketSource + Send>, Sampler)> = sources
        .into_iter()
        .map(|s| {
            let sampler = match config.sampling.seed {
                Some(seed) => Sampler::with_seed(spec, seed),
                None => Sampler::new(spec),
            };
            (s, sampler)
        })
        .collect();
    let sampling = sources.first().map(|(_, s)| s.info()).unwrap_or_default();
    let export = ExportLoopConfig {
        collectors: collector_configs(&config)?,
        aggregate_interval_ms: config
            .aggregation
            .protocol_port
            .then(|| config.aggregation.interval.saturating_mul(1000)),
        options_interval_ms: config.export.options_interval.saturating_mul(1000),
        sampling,
        clock: Clock::Wall,
        json_records: None,
        json_append: true,
    };
    let workers = sources.len();
    let spec = PipelineSpec {
        cache: cache_config(&config),
        export,
        start_ms: wall_clock_ms(),
        expected_packets: 0,
        clock: Clock::Wall,
        backpressure: Backpressure::Drop,
        queue_batches: config.export.queue_batches,
        placement,
        extensions: (0..workers)
            .map(|_| crate::extensions::worker_extensions(&config))
            .collect(),
        events: config.events.output.clone(),
        events_queue: config.events.queue,
    };
    let metrics = Arc::new(Metrics::new());
    let server = match config.stats.prometheus {
        Some(addr) => Some(
            MetricsServer::start(addr, metrics.clone()).with_context(|| {
                format!(
                    "cannot serve metrics on {addr}; change [stats] prometheus or set it to false"
                )
            })?,
        ),
        None => None,
    };
    log::info!(
        "running: {workers} worker(s), {} collector(s){}",
        config.collectors.len(),
        server
            .as_ref()
            .map(|s| format!(", metrics on http://{}/metrics", s.local_addr()))
            .unwrap_or_default()
    );
    let config_path = path.to_path_buf();
    let report = run_pipeline(sources, spec, |handles| {
        let supervisor = Supervisor {
            handles,
            metrics,
            config,
            config_path,
        };
        std::thread::Builder::new()
            .name("tapflow-supervisor".into())
            .spawn(move || supervisor.run())
            .ok()
    })?;
    drop(server);
    println!("tapflow run: stopped; every flow in the cache was flushed and exported");
    println!();
    print_report_tables(&report, None, false);
    if let Some(err) = report.workers.iter().find_map(|w| w.error.clone()) {
        bail!("a worker stopped early: {err}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "dpdk")]
fn open_ports(config: &Config) -> Result<(Vec<Box<dyn PacketSource + Send>>, ThreadPlacement)> {
    use probe::dpdk::Eal;
    use probe::dpdk_source::{DpdkPortConfig, DpdkSource};
    let eal = Eal::init(&config.eal_args()).map_err(|e| anyhow!("{e}"))?;
    let mut sources: Vec<Box<dyn PacketSource + Send>> = Vec::new();
    for port in &config.ports {
        let port_config = DpdkPortConfig::new(port.device_name())
            .rx_queues(port.rx_queues)
            .rx_descriptors(port.rx_descriptors)
            .mempool_size(config.mempool_size());
        let queues = DpdkSource::open_queues(&eal, &port_config)
            .map_err(|e| anyhow!("port {}: {e}", port.label()))?;
        for queue in queues {
            sources.push(Box::new(queue));
        }
    }
    if sources.len() != config.worker_count() {
        bail!(
            "[workers] count is {} but the ports have {} rx queues in all; \
             use count = \"auto\" or match the queues",
            config.worker_count(),
            sources.len()
        );
    }
    let placement = if config.workers.pin {
        ThreadPlacement::on_lcores(&eal.lcore_cpus(), sources.len())
    } else {
        ThreadPlacement::default()
    };
    Ok((sources, placement))
}

#[cfg(not(feature = "dpdk"))]
fn open_ports(_config: &Config) -> Result<(Vec<Box<dyn PacketSource + Send>>, ThreadPlacement)> {
    bail!("this tapflow was built without DPDK: `run` needs it (use `replay --source file`)")
}

/// Watches the running pipeline from its own thread.
struct Supervisor {
    handles: PipelineHandles,
    metrics: Arc<Metrics>,
    config: Config,
    config_path: std::path::PathBuf,
}

impl Supervisor {
    fn run(mut self) {
        let hangup = Arc::new(AtomicBool::new(false));
        if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGHUP, hangup.clone()) {
            log::warn!("cannot install the SIGHUP handler, reload is off: {e}");
        }
        let _ = sdnotify::ready();
        let watchdog = sdnotify::watchdog_interval().map(|d| d / 2);
        let stats_every = Duration::from_secs(self.config.stats.interval.max(1));
        let mut last_stats = Instant::now();
        let mut last_watchdog = Instant::now();
        let mut last_packets = 0u64;
        let mut stopping_told = false;
        while !self.handles.done.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
            let totals = self.totals();
            self.update_metrics(&totals);
            if self.handles.quit.load(Ordering::Relaxed) && !stopping_told {
                let _ = sdnotify::stopping();
                log::info!("stopping: flushing every flow and draining the exporter");
                stopping_told = true;
            }
            if watchdog.is_some_and(|every| last_watchdog.elapsed() >= every) {
                let _ = sdnotify::watchdog();
                last_watchdog = Instant::now();
            }
            if last_stats.elapsed() >= stats_every {
                let secs = last_stats.elapsed().as_secs_f64();
                let packets = totals.worker.packets;
                log::info!(
                    "rx {} pkts ({:.0} pps), flows active {}, created {}, records exported {}, \
                     queue drops {}, nic missed {}",
                    thousands(packets),
                    (packets - last_packets) as f64 / secs,
                    thousands(totals.flows_active),
                    thousands(totals.cache.flows_created),
                    thousands(totals.worker.records_sent),
                    thousands(totals.worker.records_dropped),
                    thousands(totals.source.rx_missed),
                );
                last_packets = packets;
                last_stats = Instant::now();
            }
            if hangup.swap(false, Ordering::Relaxed) {
                self.reload();
            }
        }
    }

    fn totals(&self) -> WorkerSnapshot {
        let mut totals = WorkerSnapshot::default();
        for shared in &self.handles.snapshots {
            if let Ok(s) = shared.lock() {
                totals.worker.merge(&s.worker);
                totals.cache.merge(&s.cache);
                totals.source.rx_missed += s.source.rx_missed;
                totals.source.rx_errors += s.source.rx_errors;
                totals.source.rx_nombuf += s.source.rx_nombuf;
                totals.flows_active += s.flows_active;
            }
        }
        totals
    }

    fn update_metrics(&self, totals: &WorkerSnapshot) {
        let m = &self.metrics;
        for (id, shared) in self.handles.snapshots.iter().enumerate() {
            if let Ok(s) = shared.lock() {
                let worker = id.to_string();
                m.set(&metrics::RX_PACKETS, &[&worker], s.worker.packets);
                m.set(&metrics::RX_BYTES, &[&worker], s.worker.bytes);
                m.set(&metrics::NIC_MISSED, &[&worker], s.source.rx_missed);
                m.set(&metrics::NIC_ERRORS, &[&worker], s.source.rx_errors);
                m.set(&metrics::NIC_NOMBUF, &[&worker], s.source.rx_nombuf);
            }
        }
        for reason in StopReason::ALL {
            m.set(
                &metrics::PARSE_STOPS,
                &[reason.name()],
                totals.worker.parse_stops[reason as usize],
            );
        }
        m.set(&metrics::SAMPLED_OUT, &[], totals.worker.sampled_out);
        m.set(&metrics::FLOWS_ACTIVE, &[], totals.flows_active);
        m.set(&metrics::FLOWS_CREATED, &[], totals.cache.flows_created);
        for reason in EndReason::ALL {
            m.set(
                &metrics::FLOWS_EXPIRED,
                &[reason.name()],
                totals.cache.expired(reason),
            );
        }
        m.set(&metrics::CACHE_EVICTIONS, &[], totals.cache.evictions);
        for (kind, count) in crate::pipeline::cache_corrections(&totals.cache) {
            m.set(&metrics::CACHE_CORRECTIONS, &[kind], count);
        }
        m.set(
            &metrics::EXPORT_QUEUE_DROPPED_RECORDS,
            &[],
            totals.worker.records_dropped,
        );
        if let Ok(collectors) = self.handles.collectors.lock() {
            for (name, c) in collectors.iter() {
                let label = [name.as_str()];
                m.set(&metrics::EXPORT_RECORDS, &label, c.records);
                m.set(&metrics::EXPORT_DATAGRAMS, &label, c.datagrams);
                m.set(&metrics::EXPORT_BYTES, &label, c.bytes);
                m.set(&metrics::EXPORT_TEMPLATE_SENDS, &label, c.template_sends);
                m.set(&metrics::EXPORT_SEND_ERRORS, &label, c.send_errors);
            }
        }
    }

    /// SIGHUP: collectors change in place; anything else is named as needing a restart.
    fn reload(&mut self) {
        let _ = sdnotify::reloading();
        match Config::load(&self.config_path) {
            Err(e) => log::error!("reload: {e}; keeping the running configuration"),
            Ok(new) => {
                for (section, changed) in restart_only_changes(&self.config, &new) {
                    if changed {
                        log::warn!("reload: [{section}] changed; it takes effect after a restart");
                    }
                }
                if new.collectors != self.config.collectors {
                    match collector_configs(&new) {
                        Ok(collectors) => {
                            let _ = self
                                .handles
                                .to_exporter
                                .send(ToExporter::Reconfigure(collectors));
                            log::info!("reload: {} collector(s)", new.collectors.len());
                        }
                        Err(e) => log::error!("reload: {e:#}; keeping the old collectors"),
                    }
                }
                self.config = new;
            }
        }
        let _ = sdnotify::ready();
    }
}

/// The sections a running data plane cannot change: ports, EAL, workers and the cache
/// (shards are preallocated and their deadlines computed from the timeouts).
fn restart_only_changes(old: &Config, new: &Config) -> [(&'static str, bool); 6] {
    [
        ("dpdk", old.dpdk != new.dpdk),
        ("port", old.ports != new.ports),
        ("workers", old.workers != new.workers),
        ("cache", old.cache != new.cache),
        ("sampling", old.sampling != new.sampling),
        ("aggregation", old.aggregation != new.aggregation),
    ]
}

/// The extension sections the collectors' templates carry, from `[kpi]`.
pub fn kpi_sections(config: &Config) -> exporter::ExtraSections {
    exporter::ExtraSections {
        reverse: config.kpi.biflow,
        tcp: config.kpi.tcp,
    }
}
