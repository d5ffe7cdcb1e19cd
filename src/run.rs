//! `tapflow run` (the appliance) and `tapflow check-config`.
//!
//! `run` assembles ports, workers and collectors from the configuration, then supervises
//! them from a thread of its own: the periodic statistics line, the Prometheus endpoint,
//! systemd's readiness and watchdog, and SIGHUP reloads.

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use flowcache::Sampler;
use probe::PacketSource;
use probe::export_loop::ExportLoopConfig;
use probe::worker::{Backpressure, Clock, ToExporter, WorkerSnapshot, wall_clock_ms};
use tapflow::config::{Config, PortSection};
use tapflow::metrics::{self, MetricsServer, RunView, WorkerView};
use tapflow::sdnotify;

use crate::pipeline::{
    PipelineHandles, PipelineSpec, ThreadPlacement, print_report_tables, report_rows, run_pipeline,
};
use crate::summary::thousands;

pub fn check_config(path: &Path, json: bool) -> Result<ExitCode> {
    if !json {
        let config = Config::load(path)?;
        let text = std::fs::read_to_string(path)?;
        for warning in config.policy_warnings(&text) {
            match warning.location {
                Some(at) => println!("{}:{at}: warning: {}", path.display(), warning.message),
                None => println!("{}: warning: {}", path.display(), warning.message),
            }
        }
        println!("{}: ok", path.display());
        println!();
        print!("{}", config.describe());
        return Ok(ExitCode::SUCCESS);
    }
    let loaded = Config::load(path);
    let problems: Vec<serde_json::Value> = match &loaded {
        Ok(_) => Vec::new(),
        Err(e @ tapflow::config::ConfigError::Read { .. }) => {
            vec![
                serde_json::json!({ "line": null, "column": null, "key": null, "message": e.to_string() }),
            ]
        }
        Err(e) => e
            .diagnostics()
            .iter()
            .map(|d| {
                serde_json::json!({
                    "line": d.location.map(|l| l.line),
                    "column": d.location.map(|l| l.column),
                    "key": d.key,
                    "message": d.message,
                })
            })
            .collect(),
    };
    let report = serde_json::json!({
        "file": path.display().to_string(),
        "valid": loaded.is_ok(),
        "problems": problems,
        "description": loaded.as_ref().ok().map(Config::describe),
    });
    println!("{report}");
    Ok(if loaded.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub fn run(path: &Path, verbose: u8) -> Result<ExitCode> {
    let config = Config::load(path)?;
    if verbose == 0 && !crate::logging::level_is_from_env() {
        log::set_max_level(config.logging.level.to_level_filter());
    }
    let (sources, placement, origins) = open_ports(&config)?;
    let spec = config.sampler_spec();
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
        collectors: config.collector_configs()?,
        aggregate_interval_ms: config
            .aggregation
            .protocol_port
            .then(|| config.aggregation.interval.saturating_mul(1000)),
        options_interval_ms: config.export.options_interval.saturating_mul(1000),
        sampling,
        clock: Clock::Wall,
        json_records: config.json_collector(),
        json_append: true,
    };
    let workers = sources.len();
    let spec = PipelineSpec {
        cache: config.cache_config(),
        export,
        start_ms: wall_clock_ms(),
        progress: crate::progress::Goal::Unknown,
        clock: Clock::Wall,
        backpressure: Backpressure::Drop,
        queue_batches: config.export.queue_batches,
        placement,
        extensions: (0..workers)
            .map(|_| crate::extensions::worker_extensions(&config))
            .collect(),
        events: config.events_output(),
        events_queue: config.events.queue,
        policy: config.policy_set(),
        policy_routes: config.policy_routes(),
        adaptive: config.adaptive_config(),
        idle_sleep: config.idle_sleep(),
        touch_table_at_start: true,
    };
    // The endpoint answers from the start; the workers' counters join once they run.
    let live: Arc<OnceLock<Live>> = Arc::default();
    let server = match config.stats.prometheus {
        Some(addr) => {
            let live = live.clone();
            let render: metrics::Render =
                Arc::new(move || metrics::render(&live.get().map(Live::view).unwrap_or_default()));
            let accounting =
                config.analyzers.per_destination.trigger != tapflow::config::TriggerMode::Off;
            let top: Option<metrics::TopSource> =
                (config.monitor().is_some() || accounting).then(|| {
                    let top: metrics::TopSource = Arc::new(crate::extensions::top_json);
                    top
                });
            Some(MetricsServer::start_with_top(addr, render, top).with_context(|| {
                format!(
                    "cannot serve metrics on {addr}; change [stats] prometheus or set it to false"
                )
            })?)
        }
        None => None,
    };
    log::info!(
        "running: {workers} worker(s){}, {} collector(s){}",
        spec.idle_sleep
            .map(|d| format!(" (sleeping {} us when idle)", d.as_micros()))
            .unwrap_or_default(),
        config.collectors.len(),
        server
            .as_ref()
            .map(|s| format!(", metrics on http://{}/metrics", s.local_addr()))
            .unwrap_or_default()
    );
    let config_path = path.to_path_buf();
    let report = run_pipeline(sources, spec, |handles| {
        let _ = live.set(Live {
            snapshots: handles.snapshots.clone(),
            collectors: handles.collectors.clone(),
            events: handles.events.clone(),
            origins,
        });
        let supervisor = Supervisor {
            handles,
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

/// Each worker's port (its `name`, or device name) and receive queue, in worker order.
type Origins = Vec<(String, u16)>;
type Sources = Vec<Box<dyn PacketSource + Send>>;

#[cfg(feature = "dpdk")]
fn open_ports(config: &Config) -> Result<(Sources, ThreadPlacement, Origins)> {
    use probe::dpdk::Eal;
    use probe::dpdk_source::{DpdkPortConfig, DpdkSource};
    for port in &config.ports {
        check_kernel_interface(port)?;
        if let (Some(iface), Some(bytes)) = (port.kernel_interface(), port.kernel_ring_bytes()) {
            probe::dpdk::pcap_ring::set_ring_bytes(iface, bytes);
        }
    }
    let _ = sdnotify::extend_timeout(EAL_START_EXTENSION);
    let eal = Eal::init(&config.eal_args()).map_err(|e| anyhow!("{e}"))?;
    let mut sources: Vec<Box<dyn PacketSource + Send>> = Vec::new();
    let mut origins = Origins::new();
    for port in &config.ports {
        let _ = sdnotify::extend_timeout(PORT_START_EXTENSION);
        let port_config = DpdkPortConfig::new(port.eal_device_name())
            .rx_queues(port.rx_queues)
            .rx_descriptors(port.rx_descriptors)
            .mempool_size(config.mempool_size());
        let queues = DpdkSource::open_queues(&eal, &port_config)
            .map_err(|e| anyhow!("port {}: {e}", port.label()))?;
        if let (Some(iface), Some(bytes)) = (port.kernel_interface(), port.kernel_ring_bytes()) {
            match probe::dpdk::pcap_ring::opened_with(iface) {
                Some(Some(opened)) if opened == bytes => log::info!(
                    "port {}: {iface}'s ring is {} MB (kernel_ring_mb)",
                    port.label(),
                    bytes >> 20
                ),
                _ => log::warn!(
                    "port {}: DPDK's pcap driver opened {iface} without tapflow's ring size, \
                     so libpcap's 2 MB default applies and kernel_ring_mb does not: frames \
                     are lost (and counted as nic missed) after tens of milliseconds \
                     without a poll",
                    port.label()
                ),
            }
        }
        for queue in queues {
            origins.push((port.label().to_string(), queue.queue_id()));
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
    Ok((sources, placement, origins))
}

/// Bytes of a frame DPDK 22.11's pcap driver captures (RTE_ETH_PCAP_SNAPLEN); it keeps
/// the captured length as the frame's length, so a longer frame would be cut unseen.
const PCAP_SNAPLEN: u32 = 16_128;

/// Bytes of a frame an AF_XDP socket of DPDK 22.11 takes: an mbuf's 2176-byte buffer less
/// its 128-byte headroom and the kernel's 256-byte XDP headroom. No multi-buffer support:
/// the kernel drops a longer frame (counted as the port's missed frames).
const AF_XDP_MAX_FRAME: u32 = 2176 - 128 - 256;

/// Ethernet header and two VLAN tags: a frame's bytes beyond the interface's MTU.
const L2_OVERHEAD: u32 = 14 + 2 * 4;

/// A live port on a kernel interface must be able to carry the interface's largest frame
/// whole; say what to change before DPDK starts rather than cut frames later.
fn check_kernel_interface(port: &PortSection) -> Result<()> {
    let Some(iface) = port.kernel_interface() else {
        return Ok(());
    };
    let mtu_file = Path::new("/sys/class/net").join(iface).join("mtu");
    let mtu: u32 = std::fs::read_to_string(&mtu_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| {
            anyhow!(
                "port {}: there is no interface {iface:?} in this network namespace \
                 (`ip link show` lists them); fix iface= in [[port]] device",
                port.label()
            )
        })?;
    let largest = mtu + L2_OVERHEAD;
    if matches!(port.vdev_driver(), "af_packet" | "pcap") && largest > PCAP_SNAPLEN {
        bail!(
            "port {}: {iface} has MTU {mtu} (frames up to {largest} bytes) but DPDK's pcap \
             driver captures only {PCAP_SNAPLEN} bytes of a frame; lower the MTU to at most \
             {} (`ip link set {iface} mtu N`)",
            port.label(),
            PCAP_SNAPLEN - L2_OVERHEAD
        );
    }
    if port.vdev_driver() == "af_xdp" && largest > AF_XDP_MAX_FRAME {
        bail!(
            "port {}: {iface} has MTU {mtu} (frames up to {largest} bytes) but an AF_XDP \
             socket takes frames of at most {AF_XDP_MAX_FRAME} bytes (no multi-buffer in \
             DPDK 22.11); lower the MTU to at most {} (`ip link set {iface} mtu N`) or read \
             jumbo frames with \"net_af_packet0,iface={iface}\"",
            port.label(),
            AF_XDP_MAX_FRAME - L2_OVERHEAD
        );
    }
    if port.vdev_driver() == "af_packet" {
        log::info!(
            "port {}: reading {iface} through DPDK's pcap driver ({}): DPDK's af_packet \
             driver has the kernel reassemble IPv4 fragments before they are seen",
            port.label(),
            port.eal_device()
        );
    }
    Ok(())
}

#[cfg(not(feature = "dpdk"))]
fn open_ports(_config: &Config) -> Result<(Sources, ThreadPlacement, Origins)> {
    bail!("this tapflow was built without DPDK: `run` needs it (use `replay --source file`)")
}

/// What a scrape reads of the running pipeline.
struct Live {
    snapshots: Vec<probe::worker::SharedSnapshot>,
    collectors: probe::export_loop::SharedCollectorCounters,
    events: probe::event_output::SharedEventCounts,
    origins: Origins,
}

impl Live {
    fn view(&self) -> RunView {
        let workers = self
            .snapshots
            .iter()
            .zip(&self.origins)
            .map(|(shared, (port, queue))| WorkerView {
                port: port.clone(),
                queue: *queue,
                snapshot: shared.lock().map(|s| s.clone()).unwrap_or_default(),
            })
            .collect();
        RunView {
            workers,
            collectors: self
                .collectors
                .lock()
                .map(|c| c.clone())
                .unwrap_or_default(),
            events: self.events.lock().map(|e| e.clone()).unwrap_or_default(),
            destinations: crate::extensions::destination_top(),
        }
    }
}

/// How long a worker or the exporter may show no progress before systemd's watchdog is no
/// longer fed. Workers publish about once a second, idle or not, and each sends the
/// exporter a tick as often: three missed seconds is a stall, not a slow second.
const DATA_PLANE_STALL: Duration = Duration::from_secs(3);

/// Start-up the EAL may take (hugepage mapping, device probing) beyond TimeoutStartSec.
const EAL_START_EXTENSION: Duration = Duration::from_secs(300);

/// Start-up a port may take (mempool allocation, queue set-up).
const PORT_START_EXTENSION: Duration = Duration::from_secs(120);

/// Stop time each second of visible flush progress buys.
const STOP_EXTENSION: Duration = Duration::from_secs(10);

/// Watches the running pipeline from its own thread.
struct Supervisor {
    handles: PipelineHandles,
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
        let mut running = sdnotify::ProgressGate::new(DATA_PLANE_STALL);
        let mut flushing = sdnotify::ProgressGate::new(DATA_PLANE_STALL);
        let mut last_extension: Option<Instant> = None;
        let mut stall_told = false;
        let stats_every = Duration::from_secs(self.config.stats.interval.max(1));
        let mut last_stats = Instant::now();
        let mut last_watchdog = Instant::now();
        let mut last_packets = 0u64;
        let mut stopping_told = false;
        while !self.handles.done.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
            let totals = self.totals();
            let now = Instant::now();
            let progress = self.progress();
            let moving = running.observe(&progress, now);
            if self.handles.quit.load(Ordering::Relaxed) {
                if !stopping_told {
                    let _ = sdnotify::stopping();
                    log::info!("stopping: flushing every flow and draining the exporter");
                    stopping_told = true;
                }
                // The final flush may outlast TimeoutStopSec on a large cache: extend it
                // for as long as records still reach the exporter.
                let flushed = flushing.observe(&[progress.iter().sum()], now);
                if flushed && last_extension.is_none_or(|at| now - at >= Duration::from_secs(1)) {
                    let _ = sdnotify::extend_timeout(STOP_EXTENSION);
                    last_extension = Some(now);
                }
            } else if watchdog.is_some_and(|every| last_watchdog.elapsed() >= every) {
                if moving {
                    let _ = sdnotify::watchdog();
                    last_watchdog = now;
                    stall_told = false;
                } else if !stall_told {
                    if let Some((part, idle)) = running.stalest(now) {
                        let who = match part {
                            p if p < self.handles.snapshots.len() => format!("worker {p}"),
                            _ => "the exporter".to_string(),
                        };
                        log::error!(
                            "{who} made no progress for {:.1} s: systemd's watchdog is no \
                             longer fed, so systemd restarts tapflow if it stays stuck",
                            idle.as_secs_f64()
                        );
                    }
                    stall_told = true;
                }
            }
            if last_stats.elapsed() >= stats_every {
                let secs = last_stats.elapsed().as_secs_f64();
                let packets = totals.worker.packets;
                let counters: Vec<String> =
                    report_rows(&totals.worker, &totals.cache, &totals.source)
                        .into_iter()
                        .map(|(name, value)| format!("{name} {}", thousands(value)))
                        .collect();
                log::info!(
                    "rx {} pkts ({:.0} pps), flows active {}, {}",
                    thousands(packets),
                    (packets - last_packets) as f64 / secs,
                    thousands(totals.flows_active),
                    counters.join(", "),
                );
                last_packets = packets;
                last_stats = Instant::now();
            }
            if hangup.swap(false, Ordering::Relaxed) {
                self.reload();
            }
        }
    }

    /// Each worker's published ticks, then the exporter's count of drained messages.
    fn progress(&self) -> Vec<u64> {
        let mut counters: Vec<u64> = self
            .handles
            .snapshots
            .iter()
            .map(|s| s.lock().map_or(0, |s| s.ticks))
            .collect();
        counters.push(self.handles.exporter_heartbeat.load(Ordering::Relaxed));
        counters
    }

    fn totals(&self) -> WorkerSnapshot {
        let mut totals = WorkerSnapshot::default();
        for shared in &self.handles.snapshots {
            if let Ok(s) = shared.lock() {
                totals.worker.merge(&s.worker);
                totals.cache.merge(&s.cache);
                totals.source.merge(&s.source);
                totals.flows_active += s.flows_active;
            }
        }
        totals
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
                    match new.collector_configs() {
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
                if new.policies != self.config.policies || new.collectors != self.config.collectors
                {
                    self.reload_policies(&new);
                }
                self.config = new;
            }
        }
        let _ = sdnotify::ready();
    }
}

impl Supervisor {
    /// Hands the new rules to the workers (flows already classified keep their decision
    /// until they end) and the new routes to the export loop.
    fn reload_policies(&self, new: &Config) {
        let Some(swap) = &self.handles.policy_swap else {
            if !new.policies.is_empty() {
                log::warn!(
                    "reload: [[policy]] tables added to a run started without any; they take \
                     effect after a restart"
                );
            }
            return;
        };
        let rules = new
            .policy_set()
            .unwrap_or_else(|| Arc::new(probe::policy::RuleSet::default()));
        let count = rules.len();
        swap.publish(rules);
        let _ = self
            .handles
            .to_exporter
            .send(ToExporter::PolicyRoutes(new.policy_routes()));
        log::info!(
            "reload: {count} policy rule(s) for new flows; flows already classified keep \
             their decision until they end"
        );
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
