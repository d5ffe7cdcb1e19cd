//! tapflow's monitoring extensions: each module implements [`probe::ext::Extension`] and
//! is attached to the workers when its configuration section enables it. They know
//! nothing of DPDK, sockets or wire formats: packets come in as parsed views, fields go
//! out in [`flowcache::RecordExtras`], events as [`probe::ext::Event`].
//!
//! No module here is compiled into the worker's loop unless attached: with nothing
//! enabled, the workers run the loop without any hook (see `probe::ext`).

mod conn_table;
pub mod kpi;
pub mod rate;
pub mod rate_trace;

use flowcache::counters::{CounterSet, Spec};

/// Each extension's counters, by extension name: the families the metrics endpoint shows
/// as `tapflow_<extension>_<name>_total` when it runs. A test holds docs/METRICS.md to this
/// list; an extension adds its line (`("tcp_kpi", <TcpKpiStats as CounterSet>::SPECS)`).
pub const COUNTERS: &[(&str, &[Spec])] = &[
    ("monitor", rate::MonitorStats::SPECS),
    (
        "kpi",
        <kpi::KpiStats as flowcache::counters::CounterSet>::SPECS,
    ),
    (
        "analyzers",
        <analyzers::AnalyzerStats as flowcache::counters::CounterSet>::SPECS,
    ),
];

pub mod analyzers;
