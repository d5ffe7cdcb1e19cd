//! tapflow's exporter: sans-IO NetFlow v5 / v9 / IPFIX encoders and their transports.
//! See README.md.
//!
//! - [`ie`]: information elements and templates, declared once as data.
//! - [`ExportSession`]: one collector's encoder; records in, datagrams out, no I/O.
//! - [`transport`]: UDP and IPFIX-over-TCP transports (the only sockets here).
//! - [`Collector`]: session + transport + pacing + send path counters.
//! - [`json`]: records as JSON lines, and the destinations JSON lines go to.

mod collector;
pub mod ie;
pub use ie::ExtraSections;
pub mod json;
mod session;
pub mod transport;
mod wire;

pub use collector::{
    Collector, CollectorConfig, CollectorCounters, ParseTransportError, TransportKind,
};
pub use session::{
    ConfigError, DEFAULT_MTU, DEFAULT_MTU_IPV6, DEFAULT_TEMPLATE_REFRESH_DATAGRAMS,
    DEFAULT_TEMPLATE_REFRESH_MS, Datagram, ExportSession, ExportVersion, ExporterStatistics,
    MAX_MTU, ParseVersionError, SessionConfig, SessionCounters, Unsupported, UnsupportedCounts,
    sampling_algorithm_code, selector_algorithm_code, v5_sampling_field,
};
pub use transport::{
    Readiness, TcpOptions, TcpStats, TcpTransport, Transport, UDP_SEND_TIMEOUT, UdpOptions,
    UdpTransport,
};
