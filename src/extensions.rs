//! Which extensions (transport KPIs, monitors, analyzers) each worker gets, from the
//! configuration. One place, so `replay`, `run` and `bench` attach the same ones.

use std::sync::{Arc, Mutex};

use monitors::analyzers::{self as an, Analyzers};
use monitors::rate::{RateConfig, RateHub, RateMonitor};
use probe::ext::Extension;
use tapflow::config::{self as cfg, Config, MonitorSection};

/// A fresh set of extensions for one worker (each worker owns its own state).
pub fn worker_extensions(config: &Config) -> Vec<Box<dyn Extension>> {
    let mut extensions: Vec<Box<dyn Extension>> = Vec::new();
    if let Some(monitor) = config.monitor() {
        let hub = rate_hub_for_run(monitor);
        extensions.push(Box::new(RateMonitor::new(rate_config(monitor), hub)));
    }
    let settings = analyzer_settings(&config.analyzers);
    let hub = (settings.per_destination.trigger.mode != an::TriggerMode::Off)
        .then(|| destination_hub_for_run(settings.per_destination));
    if let Some(analyzers) = Analyzers::with_destination_hub(&settings, hub) {
        extensions.push(Box::new(analyzers));
    }
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

/// The current run's live view as `/top` serves it: the monitor's ports and flows if it
/// is on, and the busiest destinations (`destinations`) if per-destination accounting
/// is on.
pub fn top_json() -> Option<String> {
    let rate = RATE_HUB.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let destinations = DESTINATION_HUB
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if rate.is_none() && destinations.is_none() {
        return None;
    }
    let mut view = rate.map_or_else(
        || serde_json::json!({}),
        |hub| hub.top(TOP_FLOWS_SHOWN).to_json(),
    );
    if let Some(hub) = destinations {
        view["destinations"] = destinations_json(hub.latest().as_ref());
    }
    Some(view.to_string())
}

/// The busiest destinations of the last finished interval (an empty list before the
/// first), as `/top` shows them.
fn destinations_json(top: Option<&an::DestinationTop>) -> serde_json::Value {
    let ranked: Vec<serde_json::Value> = top
        .map(|t| t.destinations.as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(rank, d)| {
            serde_json::json!({
                "rank": rank + 1,
                "destination": d.destination,
                "packets": d.packets,
                "octets": d.octets,
            })
        })
        .collect();
    serde_json::json!({
        "interval_start_us": top.map(|t| t.interval_start_us),
        "interval_us": top.map(|t| t.interval_us),
        "top": ranked,
    })
}

/// Where the current run's per-destination accounting sums its workers' totals (and the
/// metrics endpoint reads the top destinations); a run's, as [`RATE_HUB`].
static DESTINATION_HUB: Mutex<Option<Arc<an::DestinationHub>>> = Mutex::new(None);

fn destination_hub_for_run(settings: an::PerDestinationSettings) -> Arc<an::DestinationHub> {
    let mut slot = DESTINATION_HUB.lock().unwrap_or_else(|e| e.into_inner());
    match slot.as_ref() {
        Some(hub) if !hub.finished() => hub.clone(),
        _ => {
            let hub = an::DestinationHub::new(settings);
            *slot = Some(hub.clone());
            hub
        }
    }
}

/// The current run's busiest destinations of the last finished interval, summed over its
/// workers, if per-destination accounting is on.
pub fn destination_top() -> Option<an::DestinationTop> {
    let hub = DESTINATION_HUB
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()?;
    hub.latest()
}

/// Flows `/top` lists.
pub const TOP_FLOWS_SHOWN: usize = 50;

const SECOND_US: u64 = 1_000_000;

fn trigger(
    mode: cfg::TriggerMode,
    statistic: cfg::TriggerStatistic,
    threshold: u64,
    hold_s: u64,
) -> an::TriggerSettings {
    let (statistic, threshold) = match statistic {
        cfg::TriggerStatistic::NewFlowsPerSec => (an::Statistic::NewFlowsPerSec, threshold as f64),
        cfg::TriggerStatistic::SynsPerSecToOneDestination => {
            (an::Statistic::SynsPerSecToOneDestination, threshold as f64)
        }
        // Percent in the file, a share in the statistic.
        cfg::TriggerStatistic::HalfOpenShare => {
            (an::Statistic::HalfOpenShare, threshold as f64 / 100.0)
        }
    };
    an::TriggerSettings {
        mode: match mode {
            cfg::TriggerMode::Always => an::TriggerMode::Always,
            cfg::TriggerMode::Off => an::TriggerMode::Off,
            cfg::TriggerMode::Auto => an::TriggerMode::Auto,
        },
        statistic,
        threshold,
        hold_us: hold_s.saturating_mul(SECOND_US),
    }
}

/// `[analyzers.*]` as the analyzers take it.
pub fn analyzer_settings(a: &cfg::AnalyzersSection) -> an::AnalyzersSettings {
    let (s, h, d, p) = (&a.syn_flood, &a.half_open, &a.dns, &a.per_destination);
    an::AnalyzersSettings {
        syn_flood: an::SynFloodSettings {
            trigger: trigger(s.trigger, s.trigger_statistic, s.trigger_threshold, s.hold),
            syn_per_sec: s.syn_per_sec,
            hold_us: s.flood_hold.saturating_mul(SECOND_US),
            max_victims: s.max_victims,
            max_sources: s.max_sources,
            top_sources: s.top_sources,
        },
        half_open: an::HalfOpenSettings {
            trigger: trigger(h.trigger, h.trigger_statistic, h.trigger_threshold, h.hold),
            timeout_us: h.timeout_ms.saturating_mul(1_000),
            threshold: h.threshold,
            max_pending: h.max_pending,
            max_destinations: h.max_destinations,
            top_n: h.top_n,
        },
        dns: an::DnsSettings {
            trigger: trigger(d.trigger, d.trigger_statistic, d.trigger_threshold, d.hold),
            max_pending: d.max_pending,
            max_transactions: d.max_transactions,
        },
        per_destination: an::PerDestinationSettings {
            trigger: trigger(p.trigger, p.trigger_statistic, p.trigger_threshold, p.hold),
            prefix_len_v4: p.prefix_len_v4,
            prefix_len_v6: p.prefix_len_v6,
            max_destinations: p.max_destinations,
            top_n: p.top_n,
            interval_us: p.interval.saturating_mul(SECOND_US),
        },
    }
}
