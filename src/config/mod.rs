//! The appliance's configuration: one TOML file, `/etc/tapflow/tapflow.toml` when
//! installed; `etc/tapflow.toml` in the source tree documents every key.
//!
//! [`Config::load`] reads, parses and validates it. Whatever is wrong (TOML syntax, a value
//! of the wrong type, an unknown key, a value out of range, keys that contradict each
//! other) comes back as a [`ConfigError`] whose lines read
//! `FILE:LINE:COLUMN: message naming the key and its table`.
//!
//! Values are plain Rust types: this module knows nothing of the data-plane crates, which
//! keeps it buildable and testable on its own; the binary maps them onto the probe,
//! flowcache and exporter settings.

mod analyzers;
mod crates;
mod error;
mod policy;
mod types;
mod unknown;
mod validate;

use std::fmt::Write as _;
use std::path::Path;

pub use analyzers::{
    AnalyzersSection, DnsSection, HalfOpenSection, PerDestinationSection, SynFloodSection,
    TriggerMode, TriggerStatistic,
};
pub use error::{ConfigError, Diagnostic, Location};
pub use policy::{PolicySection, Scalar};
pub use types::MonitorSection;
pub use types::{
    AdaptiveSection, AggregationSection, CacheSection, CollectorSection, Config,
    DEFAULT_CONFIG_PATH, DEFAULT_KERNEL_RING_MB, DEFAULT_PROMETHEUS_LISTEN, DeviceKind,
    DpdkLogLevel, DpdkSection, EventsSection, ExportSection, ExportVersion,
    KERNEL_INTERFACE_IDLE_SLEEP_US, KERNEL_RING_MB_RANGE, LogLevel, LoggingSection, MAX_BATCH_SIZE,
    MAX_IDLE_SLEEP_US, PortSection, SamplingMode, SamplingSection, StatsSection, Transport,
    WorkerCount, WorkersSection,
};
pub use validate::{
    KeyPath, MAX_ADAPTIVE_INTERVAL, MAX_CACHE_CAPACITY, MAX_MEMPOOL_CACHE, MAX_QUEUES, MAX_SECONDS,
    MTU_RANGE, Problem, Purpose, Segment,
};

/// File order; problems with no place in the file (a missing table) last.
fn in_file_order(mut diagnostics: Vec<Diagnostic>) -> Vec<Diagnostic> {
    diagnostics.sort_by_key(|d| (d.location.is_none(), d.location));
    diagnostics
}

impl Config {
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_for(path, Purpose::Run)
    }

    /// [`Config::load`], validated for `purpose`.
    pub fn load_for(path: &Path, purpose: Purpose) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        Config::parse_for(&text, &path.display().to_string(), purpose)
    }

    /// Parses and validates `text`; `origin` (usually the file's path) starts every
    /// message.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        Config::parse_for(text, origin, Purpose::Run)
    }

    /// [`Config::parse`], validated for `purpose`.
    pub fn parse_for(text: &str, origin: &str, purpose: Purpose) -> Result<Config, ConfigError> {
        let invalid = |diagnostics| ConfigError::Invalid {
            origin: origin.to_string(),
            diagnostics,
        };
        let document = error::Document::parse(text).map_err(|d| invalid(vec![d]))?;
        let mut unknown = Vec::new();
        let parsed = toml::Deserializer::parse(text).and_then(|de| {
            serde_ignored::deserialize(de, |path| unknown.push(unknown::key_path(&path)))
        });
        let mut diagnostics: Vec<Diagnostic> = unknown
            .iter()
            .map(|path| Diagnostic {
                location: document.key_location(path),
                key: Some(path.to_string()),
                message: unknown::message(path),
            })
            .collect();
        let config: Config = match parsed {
            Ok(config) => config,
            Err(e) => {
                diagnostics.push(document.de_diagnostic(&e));
                return Err(invalid(in_file_order(diagnostics)));
            }
        };
        if let Err(problems) = config.validate_for(purpose) {
            diagnostics.extend(problems.iter().map(|p| document.problem_diagnostic(p)));
        }
        if !diagnostics.is_empty() {
            return Err(invalid(in_file_order(diagnostics)));
        }
        Ok(config)
    }

    /// Receive queues of all ports together.
    pub fn total_rx_queues(&self) -> u64 {
        self.ports.iter().map(|p| u64::from(p.rx_queues)).sum()
    }

    /// Receive descriptors of all queues of all ports together.
    pub fn total_rx_descriptors(&self) -> u64 {
        self.ports
            .iter()
            .map(|p| u64::from(p.rx_queues) * u64::from(p.rx_descriptors))
            .sum()
    }

    /// Worker threads: `workers.count`, or one per receive queue for `"auto"` (at least
    /// one).
    pub fn worker_count(&self) -> usize {
        match self.workers.count {
            WorkerCount::Fixed(n) => n as usize,
            WorkerCount::Auto => usize::try_from(self.total_rx_queues()).unwrap_or(usize::MAX),
        }
        .max(1)
    }

    /// Mbufs in the packet pool: `dpdk.mempool_size`, or when 0, twice what the receive
    /// rings, one burst per worker and the per-lcore caches can hold at once, rounded up
    /// to 2^k - 1 (the size DPDK's ring-backed pools use best) and at least 8191.
    pub fn mempool_size(&self) -> u32 {
        if self.dpdk.mempool_size > 0 {
            return self.dpdk.mempool_size;
        }
        let workers = self.worker_count() as u64;
        let needed = self.total_rx_descriptors()
            + workers * u64::from(self.workers.batch_size)
            + (workers + 1) * u64::from(self.dpdk.mempool_cache);
        let size = (needed * 2 + 1).max(8192).next_power_of_two() - 1;
        u32::try_from(size).unwrap_or(u32::MAX)
    }

    /// The EAL command line (without the program name): core list, memory, runtime file
    /// prefix, DPDK log level, the devices of the `[[port]]` tables (`-a` for PCI NICs,
    /// `--no-pci` when there are none, `--vdev` for virtual devices), then
    /// `dpdk.eal_args` verbatim.
    pub fn eal_args(&self) -> Vec<String> {
        let dpdk = &self.dpdk;
        let mut args = Vec::new();
        if let Some(lcores) = &dpdk.lcores {
            args.push("-l".to_string());
            args.push(lcores.replace(' ', ""));
        }
        if let Some(main) = dpdk.main_lcore {
            args.push(format!("--main-lcore={main}"));
        }
        if !dpdk.hugepages {
            args.push("--no-huge".to_string());
        }
        if dpdk.memory_mb > 0 {
            args.push("-m".to_string());
            args.push(dpdk.memory_mb.to_string());
        }
        args.push(format!("--file-prefix={}", dpdk.file_prefix));
        args.push(format!("--log-level={}", self.logging.dpdk_level.number()));
        let pci: Vec<&PortSection> = self
            .ports
            .iter()
            .filter(|p| p.kind() == Some(DeviceKind::Pci))
            .collect();
        if pci.is_empty() {
            args.push("--no-pci".to_string());
        }
        for port in pci {
            args.push("-a".to_string());
            args.push(port.device.trim().to_string());
        }
        for port in &self.ports {
            if port.kind() == Some(DeviceKind::Vdev) {
                args.push(format!("--vdev={}", port.eal_device()));
            }
        }
        args.extend(dpdk.eal_args.iter().cloned());
        args
    }

    /// The effective configuration, one aligned line per subject, for `check-config`.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        let mut line = |label: &str, value: &str| {
            let _ = writeln!(out, "{label:<13}{value}");
        };

        for (i, port) in self.ports.iter().enumerate() {
            let kind = match port.kind() {
                Some(DeviceKind::Pci) => "PCI",
                Some(DeviceKind::Vdev) => "vdev",
                None => "unknown device",
            };
            let label = if i == 0 { "ports" } else { "" };
            let name = match &port.name {
                Some(name) => format!("{name} = "),
                None => String::new(),
            };
            line(
                label,
                &format!(
                    "{}{} ({kind}): {} rx queue{} x {} descriptors{}",
                    name,
                    port.device,
                    port.rx_queues,
                    if port.rx_queues == 1 { "" } else { "s" },
                    port.rx_descriptors,
                    if port.promiscuous {
                        ", promiscuous"
                    } else {
                        ""
                    },
                ),
            );
        }
        if self.ports.is_empty() {
            line("ports", "none");
        }

        let workers = self.worker_count();
        let how = match self.workers.count {
            WorkerCount::Auto => " (auto: one per rx queue)",
            WorkerCount::Fixed(_) => "",
        };
        line(
            "workers",
            &format!(
                "{workers}{how}, bursts of {} packets, {}",
                self.workers.batch_size,
                if self.workers.pin {
                    "each bound to a worker lcore"
                } else {
                    "not bound to cores"
                }
            ),
        );

        let sampling = &self.sampling;
        let seed = match (sampling.mode, sampling.seed) {
            (SamplingMode::Random(_), Some(seed)) => format!(", seed {seed}"),
            _ => String::new(),
        };
        let adaptive = &sampling.adaptive;
        if adaptive.enabled {
            line(
                "sampling",
                &format!(
                    "adaptive: hash, 1 in {} to {} to hold {:.0}% busy per worker, decided \
                     every {} ms",
                    adaptive.min_interval,
                    adaptive.max_interval,
                    adaptive.budget_busy * 100.0,
                    adaptive.adjust_period_ms
                ),
            );
        } else {
            line("sampling", &format!("{}{seed}", sampling.mode));
        }

        let cache = &self.cache;
        line(
            "cache",
            &format!(
                "{} flows per worker ({} in all), buckets of {}; inactive {} s, active {} s{}",
                cache.capacity,
                cache.capacity.saturating_mul(workers),
                cache.bucket_size,
                cache.inactive_timeout,
                cache.active_timeout,
                if cache.tcp_end_expiry {
                    ", TCP FIN/RST ends a flow"
                } else {
                    ""
                },
            ),
        );

        let aggregation = if self.aggregation.protocol_port {
            format!(
                "protocol-port, exported every {} s",
                self.aggregation.interval
            )
        } else {
            "off (every flow exported)".to_string()
        };
        line("aggregation", &aggregation);

        for (i, c) in self.collectors.iter().enumerate() {
            let label = if i == 0 { "collectors" } else { "" };
            let name = match &c.name {
                Some(name) => format!("{name} = "),
                None => String::new(),
            };
            let mut text = format!(
                "{name}{} {} over {}, mtu {}",
                c.address, c.version, c.transport, c.mtu
            );
            if c.version != ExportVersion::V5 {
                let _ = write!(
                    text,
                    ", templates every {} s / {} datagrams",
                    c.template_refresh, c.template_refresh_datagrams
                );
            }
            if c.pace > 0 {
                let _ = write!(text, ", at most {} datagrams/s", c.pace);
            }
            if let Some(source) = &c.source {
                let _ = write!(text, ", from {source}");
            }
            line(label, &text);
        }
        if self.collectors.is_empty() {
            line("collectors", "none");
        }

        let export = &self.export;
        let options = if export.options_interval == 0 {
            "never".to_string()
        } else {
            format!("every {} s", export.options_interval)
        };
        line(
            "export",
            &format!(
                "observation domain {}, options records {options}, queue of {} batches",
                export.observation_domain, export.queue_batches
            ),
        );

        let dpdk = &self.dpdk;
        line(
            "mempool",
            &format!(
                "{} mbufs{}, {} cached per lcore",
                self.mempool_size(),
                if dpdk.mempool_size == 0 {
                    " (sized from the ports)"
                } else {
                    ""
                },
                dpdk.mempool_cache
            ),
        );
        line("eal", &self.eal_args().join(" "));

        let stats = match (self.stats.interval, self.stats.prometheus) {
            (0, None) => "no periodic log line, no Prometheus endpoint".to_string(),
            (0, Some(addr)) => format!("Prometheus on http://{addr}/metrics"),
            (s, None) => format!("log line every {s} s"),
            (s, Some(addr)) => format!("log line every {s} s, Prometheus on http://{addr}/metrics"),
        };
        line("stats", &stats);
        line(
            "logging",
            &format!("{} (DPDK: {})", self.logging.level, self.logging.dpdk_level),
        );
        out
    }
}
