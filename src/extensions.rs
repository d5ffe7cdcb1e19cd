//! Which extensions (transport KPIs, monitors, analyzers) each worker gets, from the
//! configuration. One place, so `replay`, `run` and `bench` attach the same ones.

use monitors::analyzers::{self as an, Analyzers};
use probe::ext::Extension;
use tapflow::config::{self as cfg, Config};

/// A fresh set of extensions for one worker (each worker owns its own state).
pub fn worker_extensions(config: &Config) -> Vec<Box<dyn Extension>> {
    let mut extensions: Vec<Box<dyn Extension>> = Vec::new();
    if let Some(analyzers) = Analyzers::new(&analyzer_settings(&config.analyzers)) {
        extensions.push(Box::new(analyzers));
    }
    extensions
}

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
