//! Which extensions (transport KPIs, monitors, analyzers) each worker gets, from the
//! configuration. One place, so `replay`, `run` and `bench` attach the same ones.

use std::sync::{Arc, Mutex};

use monitors::rate::{RateConfig, RateHub, RateMonitor};
use probe::ext::Extension;
use tapflow::config::{Config, MonitorSection};

/// A fresh set of extensions for one worker (each worker owns its own state).
pub fn worker_extensions(config: &Config) -> Vec<Box<dyn Extension>> {
    let mut extensions: Vec<Box<dyn Extension>> = Vec::new();
    if let Some(monitor) = config.monitor() {
        let hub = rate_hub_for_run(monitor);
        extensions.push(Box::new(RateMonitor::new(rate_config(monitor), hub)));
    }
    extensions
}

/// The millisecond monitor's settings for the data plane.
pub fn rate_config(section: &MonitorSection) -> RateConfig {
    RateConfig {
        window_ms: section.window_ms,
        link_bps: section.link_bps.unwrap_or(0),
        heavy_hitter_share: section.heavy_hitter_share,
        heavy_hitter_bps: section.heavy_hitter_bps,
        congestion_utilisation: section.congestion_utilisation,
        windows: section.windows,
        top_flows: section.top_flows,
    }
}

/// The hub where the current run's monitors sum their port windows (and `/top` reads).
/// A process runs one pipeline at a time (`run`, `replay`, or `bench`'s measured runs one
/// after another), and each creates all its workers' extensions before any worker
/// starts: a hub whose workers have all finished belongs to an earlier run, and a new
/// run starts a new one.
static RATE_HUB: Mutex<Option<Arc<RateHub>>> = Mutex::new(None);

fn rate_hub_for_run(section: &MonitorSection) -> Arc<RateHub> {
    let mut slot = RATE_HUB.lock().unwrap_or_else(|e| e.into_inner());
    match slot.as_ref() {
        Some(hub) if !hub.finished() => hub.clone(),
        _ => {
            let hub = RateHub::new(rate_config(section));
            *slot = Some(hub.clone());
            hub
        }
    }
}

/// The current run's live view as `/top` serves it, if the monitor is on.
pub fn top_json() -> Option<String> {
    let hub = RATE_HUB.lock().unwrap_or_else(|e| e.into_inner()).clone()?;
    Some(hub.top(TOP_FLOWS_SHOWN).to_json().to_string())
}

/// Flows `/top` lists.
pub const TOP_FLOWS_SHOWN: usize = 50;
