//! `[analyzers.*]`: the SYN-flood detector, the half-open TCP tracker, the DNS analyzer and
//! per-destination accounting (issue 18; docs/CONFIG.md). Each is `off` unless its
//! `trigger` says `always` or `auto`.

use serde::Deserialize;

/// When an analyzer runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerMode {
    Always,
    #[default]
    Off,
    /// While `trigger_statistic` is at or over `trigger_threshold`, and `hold` seconds after.
    Auto,
}

/// The shared statistic an `auto` trigger reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerStatistic {
    NewFlowsPerSec,
    SynsPerSecToOneDestination,
    /// In percent, in `trigger_threshold`.
    HalfOpenShare,
}

/// `[analyzers]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct AnalyzersSection {
    pub syn_flood: SynFloodSection,
    pub half_open: HalfOpenSection,
    pub dns: DnsSection,
    pub per_destination: PerDestinationSection,
}

impl AnalyzersSection {
    /// Whether any analyzer is not `off`.
    pub fn any_enabled(&self) -> bool {
        [
            self.syn_flood.trigger,
            self.half_open.trigger,
            self.dns.trigger,
            self.per_destination.trigger,
        ]
        .iter()
        .any(|t| *t != TriggerMode::Off)
    }
}

/// `[analyzers.syn_flood]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct SynFloodSection {
    pub trigger: TriggerMode,
    pub trigger_statistic: TriggerStatistic,
    pub trigger_threshold: u64,
    /// Seconds the statistic must stay below the threshold before the analyzer stops.
    pub hold: u64,
    /// SYNs per second to one address that make it a victim.
    pub syn_per_sec: u64,
    /// Seconds a victim must stay below `syn_per_sec` before its flood ends.
    pub flood_hold: u64,
    pub max_victims: usize,
    pub max_sources: usize,
    pub top_sources: usize,
}

impl Default for SynFloodSection {
    fn default() -> Self {
        SynFloodSection {
            trigger: TriggerMode::Off,
            trigger_statistic: TriggerStatistic::SynsPerSecToOneDestination,
            trigger_threshold: 1000,
            hold: 10,
            syn_per_sec: 1000,
            flood_hold: 2,
            max_victims: 4096,
            max_sources: 65536,
            top_sources: 5,
        }
    }
}

/// `[analyzers.half_open]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct HalfOpenSection {
    pub trigger: TriggerMode,
    pub trigger_statistic: TriggerStatistic,
    pub trigger_threshold: u64,
    pub hold: u64,
    /// Milliseconds after its SYN by which a handshake must complete.
    pub timeout_ms: u64,
    /// Half-open handshakes per second to one destination that raise a `half_open` event.
    pub threshold: u64,
    pub max_pending: usize,
    pub max_destinations: usize,
    pub top_n: usize,
}

impl Default for HalfOpenSection {
    fn default() -> Self {
        HalfOpenSection {
            trigger: TriggerMode::Off,
            trigger_statistic: TriggerStatistic::HalfOpenShare,
            trigger_threshold: 50,
            hold: 10,
            timeout_ms: 3000,
            threshold: 100,
            max_pending: 262144,
            max_destinations: 4096,
            top_n: 5,
        }
    }
}

/// `[analyzers.dns]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct DnsSection {
    pub trigger: TriggerMode,
    pub trigger_statistic: TriggerStatistic,
    pub trigger_threshold: u64,
    pub hold: u64,
    pub max_pending: usize,
    pub max_transactions: usize,
}

impl Default for DnsSection {
    fn default() -> Self {
        DnsSection {
            trigger: TriggerMode::Off,
            trigger_statistic: TriggerStatistic::NewFlowsPerSec,
            trigger_threshold: 10000,
            hold: 10,
            max_pending: 65536,
            max_transactions: 65536,
        }
    }
}

/// `[analyzers.per_destination]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct PerDestinationSection {
    pub trigger: TriggerMode,
    pub trigger_statistic: TriggerStatistic,
    pub trigger_threshold: u64,
    pub hold: u64,
    pub prefix_len_v4: u8,
    pub prefix_len_v6: u8,
    pub max_destinations: usize,
    pub top_n: usize,
    /// Seconds per accounting interval.
    pub interval: u64,
}

impl Default for PerDestinationSection {
    fn default() -> Self {
        PerDestinationSection {
            trigger: TriggerMode::Off,
            trigger_statistic: TriggerStatistic::NewFlowsPerSec,
            trigger_threshold: 10000,
            hold: 10,
            prefix_len_v4: 32,
            prefix_len_v6: 128,
            max_destinations: 262144,
            top_n: 20,
            interval: 60,
        }
    }
}
