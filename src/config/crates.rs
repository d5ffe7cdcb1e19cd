//! How the configuration maps onto the crates' own types: the flow cache's, the sampler's,
//! the exporter's sessions and collectors, the adaptive controller's. Declared here once,
//! for `run`, `replay`, `bench` and validation alike.

use anyhow::{Context, Result, anyhow, bail};
use exporter::{CollectorConfig, TransportKind};
use flowcache::{CacheConfig, SamplerSpec};

use super::types::{CollectorSection, Config, ExportVersion, SamplingMode, Transport};

impl Config {
    /// The per-flow sections records carry beyond the flow's own fields.
    pub fn export_extras(&self) -> exporter::ExtraSections {
        exporter::ExtraSections {
            reverse: self.kpi.biflow,
            tcp: self.kpi.tcp,
            dns: self.analyzers.dns.trigger != super::TriggerMode::Off,
        }
    }

    /// The export session of a NetFlow/IPFIX collector; `None` for the JSON one.
    pub fn session_config(&self, c: &CollectorSection) -> Option<exporter::SessionConfig> {
        Some(exporter::SessionConfig {
            version: c.version.netflow()?,
            observation_domain_id: self.export.observation_domain,
            mtu: c.mtu as usize,
            template_refresh_ms: c.template_refresh.saturating_mul(1000),
            template_refresh_datagrams: c.template_refresh_datagrams,
            engine_id: (self.export.observation_domain & 0xff) as u8,
            sampling_in_records: c.sampling_in_records,
            extras: self.export_extras(),
            sampling_time: self.sampling.adaptive.enabled,
            ..exporter::SessionConfig::default()
        })
    }

    /// Turns the configuration's collectors into the exporter's.
    pub fn collector_configs(&self) -> Result<Vec<CollectorConfig>> {
        self.collectors
            .iter()
            .filter(|c| c.version != ExportVersion::Json)
            .map(|c| self.collector_config(c))
            .collect()
    }

    fn collector_config(&self, c: &CollectorSection) -> Result<CollectorConfig> {
        let addr = c
            .resolve()
            .with_context(|| format!("collector {}: cannot resolve {}", c.label(), c.address))?;
        let Some(session) = self.session_config(c) else {
            bail!(
                "collector {}: JSON records are not a NetFlow/IPFIX export",
                c.label()
            )
        };
        let transport = match c.transport {
            Transport::Udp => TransportKind::Udp,
            Transport::Tcp => TransportKind::Tcp,
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

    /// Where the `version = "json"` collector writes, if there is one (validation allows one,
    /// with a destination that parses).
    pub fn json_collector(&self) -> Option<exporter::json::JsonDestination> {
        self.collectors
            .iter()
            .find(|c| c.version == ExportVersion::Json)
            .and_then(|c| c.address.parse().ok())
    }

    /// The flow cache of each worker.
    pub fn cache_config(&self) -> CacheConfig {
        CacheConfig {
            capacity: self.cache.capacity,
            bucket_size: self.cache.bucket_size,
            inactive_timeout_ms: self.cache.inactive_timeout.saturating_mul(1000),
            active_timeout_ms: self.cache.active_timeout.saturating_mul(1000),
            tcp_end_expiry: self.cache.tcp_end_expiry,
            expiry_budget: self.cache.expiry_budget,
        }
    }

    /// How long an idle worker sleeps (`[workers] idle_sleep_us`), `None` to poll without
    /// pause. By default a worker that reads a kernel interface (af_packet, af_xdp, pcap
    /// on an interface) sleeps: the kernel fills that queue on the same CPUs, from the
    /// sender's softirq, and a worker spinning on an empty queue takes the CPU time that
    /// filling it needs (on 2 cores, tcpreplay into a veth lost frames at 25 kpps; with a
    /// 100 us sleep none up to its own cap of 370 kpps). A NIC's queue fills by DMA: its
    /// worker spins.
    pub fn idle_sleep(&self) -> Option<std::time::Duration> {
        let kernel_interface = self.ports.iter().any(|p| p.kernel_interface().is_some());
        let us = self.workers.idle_sleep_us.unwrap_or(if kernel_interface {
            super::KERNEL_INTERFACE_IDLE_SLEEP_US
        } else {
            0
        });
        (us > 0).then(|| std::time::Duration::from_micros(u64::from(us)))
    }

    /// `[sampling.adaptive]` for the workers, when it is enabled.
    pub fn adaptive_config(&self) -> Option<probe::adaptive::AdaptiveConfig> {
        let a = &self.sampling.adaptive;
        a.enabled.then_some(probe::adaptive::AdaptiveConfig {
            budget_busy: a.budget_busy,
            min_interval: a.min_interval,
            max_interval: a.max_interval,
            period_ms: a.adjust_period_ms,
        })
    }

    /// The workers' sampler, from `[sampling] mode`.
    pub fn sampler_spec(&self) -> SamplerSpec {
        match self.sampling.mode {
            SamplingMode::None => SamplerSpec::None,
            SamplingMode::Deterministic(n) => SamplerSpec::Deterministic(n),
            SamplingMode::Random(n) => SamplerSpec::Random(n),
            SamplingMode::Hash(n) => SamplerSpec::Hash(n),
        }
    }
}
