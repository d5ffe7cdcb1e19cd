//! Which extensions (transport KPIs, monitors, analyzers) each worker gets, from the
//! configuration. One place, so `replay`, `run` and `bench` attach the same ones.

use probe::ext::Extension;
use tapflow::config::Config;

/// A fresh set of extensions for one worker (each worker owns its own state).
pub fn worker_extensions(config: &Config) -> Vec<Box<dyn Extension>> {
    let mut extensions: Vec<Box<dyn Extension>> = Vec::new();
    if config.kpi.biflow || config.kpi.tcp {
        extensions.push(Box::new(monitors::kpi::KpiMonitor::new(
            monitors::kpi::KpiConfig {
                biflow: config.kpi.biflow,
                tcp: config.kpi.tcp,
                // A conversation's state lives while either direction is in this worker's
                // shard; the margin covers a held burst and finished conversations
                // lingering for stray packets.
                capacity: config.cache.capacity.saturating_add(1 << 16),
                ..monitors::kpi::KpiConfig::default()
            },
        )));
    }
    extensions
}
