//! A collector: one export session (encoder, sequence numbers, template schedule), one
//! transport, optional pacing, and the send path counters.
//!
//! A collector that is down costs counters, never the data plane: a UDP send refused by
//! the kernel (a full socket buffer) counts a send error and the records in that datagram
//! as dropped. `ECONNREFUSED` is different: the kernel reports the ICMP port unreachable
//! that an *earlier* datagram drew, and refuses the current one for it. That earlier
//! datagram's records are counted as dropped and the current one is retried once
//! (`send_retries`), so a collector that is down, or has just restarted, does not also
//! lose every other datagram to its predecessor's error. A TCP collector
//! that is not connected drops the records of each call without encoding them, while its
//! transport reconnects with backoff. Nothing here blocks for long: UDP sends wait at most
//! [`UDP_SEND_TIMEOUT`](crate::UDP_SEND_TIMEOUT), TCP never blocks.
//!
//! Pacing (`pace_datagrams_per_sec`) is a token bucket on datagrams that sleeps in the
//! calling thread, the exporter's, so a pcap replay does not overrun a collector's socket
//! buffer. It never runs on a worker.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::{Duration, Instant};

use flowcache::counters::Spec;
use flowcache::{AggregateRecord, FlowRecord, SamplingInfo};

use crate::session::{
    ConfigError, DEFAULT_MTU, DEFAULT_MTU_IPV6, Datagram, ExportSession, ExportVersion,
    ExporterStatistics, SessionConfig, SessionCounters, Unsupported,
};
use crate::transport::{Readiness, TcpOptions, TcpTransport, Transport, UdpOptions, UdpTransport};

/// How long `close` waits for a TCP collector to take queued bytes.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TransportKind {
    #[default]
    Udp,
    /// IPFIX only.
    Tcp,
}

impl TransportKind {
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::Udp => "udp",
            TransportKind::Tcp => "tcp",
        }
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `"udp"` or `"tcp"` was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseTransportError(pub String);

impl fmt::Display for ParseTransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown transport {:?}: expected udp or tcp", self.0)
    }
}

impl std::error::Error for ParseTransportError {}

impl FromStr for TransportKind {
    type Err = ParseTransportError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "udp" => Ok(TransportKind::Udp),
            "tcp" => Ok(TransportKind::Tcp),
            _ => Err(ParseTransportError(s.to_string())),
        }
    }
}

/// One collector: where, how, and with which encoder settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollectorConfig {
    pub addr: SocketAddr,
    pub transport: TransportKind,
    pub session: SessionConfig,
    /// Socket send buffer (SO_SNDBUF) in bytes.
    pub send_buffer: Option<usize>,
    /// Local address to send from.
    pub source: Option<SocketAddr>,
    /// At most this many datagrams a second; `None`: unpaced.
    pub pace_datagrams_per_sec: Option<u32>,
    /// TCP connect timeout, backoff and queue bound (TCP only).
    pub tcp: TcpOptions,
}

impl CollectorConfig {
    /// A collector with default socket options. An IPv6 collector given the default MTU
    /// (sized for IPv4) gets [`DEFAULT_MTU_IPV6`], so the default fits a 1500-byte
    /// Ethernet for both families.
    pub fn new(addr: SocketAddr, transport: TransportKind, session: SessionConfig) -> Self {
        let mut session = session;
        if addr.is_ipv6() && session.mtu == DEFAULT_MTU {
            session.mtu = DEFAULT_MTU_IPV6;
        }
        CollectorConfig {
            addr,
            transport,
            session,
            send_buffer: None,
            source: None,
            pace_datagrams_per_sec: None,
            tcp: TcpOptions::default(),
        }
    }
}

/// `reason` label values of `tapflow_export_unsupported_records_total`, by `Unsupported`.
const UNSUPPORTED_REASONS: [&str; 2] = [Unsupported::ALL[0].name(), Unsupported::ALL[1].name()];

flowcache::counters! {
    /// Send path counters of one collector. The summary's collector table has a column for
    /// each counter shown always, in this order.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct CollectorCounters {
        /// Flow and aggregate data records in datagrams the transport accepted.
        records: u64 = Spec::counter("tapflow_export_records_total", "records",
            "Flow (or aggregate) records sent to each collector."),
        /// Options data records in datagrams the transport accepted.
        options_records: u64 = Spec::counter("tapflow_export_options_records_total",
            "options records", "Options records (sampling, exporter statistics) sent to each \
            collector.").when_nonzero(),
        /// Datagrams (export messages) the transport accepted, and their bytes.
        datagrams: u64 = Spec::counter("tapflow_export_datagrams_total", "datagrams",
            "Export messages sent to each collector."),
        bytes: u64 = Spec::counter("tapflow_export_bytes_total", "bytes",
            "Bytes of export messages sent to each collector."),
        /// Datagrams carrying the template set that the transport accepted.
        template_sends: u64 = Spec::counter("tapflow_export_template_sends_total", "templates",
            "Times the templates were sent to each collector."),
        /// Datagrams the transport refused (collector down, buffer full), ICMP unreachable
        /// reports for an earlier datagram (UDP `ECONNREFUSED`), and export calls refused
        /// whole because a TCP collector was not connected (one per call: nothing was
        /// encoded, but the operator must see the loss here as well as in `records_dropped`).
        send_errors: u64 = Spec::counter("tapflow_export_send_errors_total", "send errors",
            "Export messages the operating system refused to send to each collector."),
        /// Data records that never reached the wire: in a refused datagram, or handed in
        /// while a TCP collector was not connected.
        records_dropped: u64 = Spec::counter("tapflow_export_lost_records_total",
            "records lost", "Records that never reached each collector: in a refused \
            message, or while a TCP collector was not connected.").when_nonzero(),
        /// Records the version cannot carry, skipped, indexed by `Unsupported as usize`
        /// (v5: IPv6 flows, aggregates).
        unsupported: [u64; 2] = Spec::counter("tapflow_export_unsupported_records_total",
            "records the version cannot carry", "Records the collector's export version \
            cannot carry, skipped, by reason.").by("reason", &UNSUPPORTED_REASONS)
            .when_nonzero(),
        /// UDP sends refused because an earlier datagram drew an ICMP port unreachable, and
        /// retried once.
        send_retries: u64 = Spec::counter("tapflow_export_send_retries_total", "send retries",
            "UDP sends refused for an earlier datagram's ICMP port unreachable, retried once.")
            .when_nonzero(),
        /// TCP connections established after the first (each restarts the templates).
        reconnects: u64 = Spec::counter("tapflow_export_reconnects_total", "reconnects",
            "TCP connections to each collector established after the first.").when_nonzero(),
    }
}

impl CollectorCounters {
    /// Records lost on this collector's send path, for notSentFlowTotalCount.
    pub fn send_errors_records(&self) -> u64 {
        self.records_dropped
    }
}

/// Token bucket on datagrams; sleeps the calling thread when over the rate.
#[derive(Debug)]
struct Pacer {
    interval: Duration,
    /// How far behind schedule the bucket may fall: the burst allowed after idling.
    burst: Duration,
    next: Instant,
}

impl Pacer {
    fn new(per_sec: u32) -> Pacer {
        let per_sec = per_sec.max(1);
        let interval = Duration::from_secs(1) / per_sec;
        // 20 ms worth of datagrams may go back to back, at least one.
        let burst = interval * (per_sec / 50).max(1);
        Pacer {
            interval,
            burst,
            next: Instant::now(),
        }
    }

    fn wait(&mut self) {
        let now = Instant::now();
        if let Some(earliest) = now.checked_sub(self.burst)
            && self.next < earliest
        {
            self.next = earliest;
        }
        if self.next > now {
            std::thread::sleep(self.next - now);
        }
        self.next += self.interval;
    }
}

/// Session + transport + counters for one collector.
#[derive(Debug)]
pub struct Collector {
    name: String,
    addr: SocketAddr,
    session: ExportSession,
    transport: Box<dyn Transport>,
    pacer: Option<Pacer>,
    counters: CollectorCounters,
    sessions_started: u64,
    last_error_log: Option<Instant>,
    /// UDP: `ECONNREFUSED` reports an earlier datagram's ICMP error; retry the current one.
    retry_refused: bool,
    /// The last datagram the transport accepted, until an ICMP error is reported for it.
    last_accepted: Option<Accepted>,
}

/// What a datagram the transport accepted carried.
#[derive(Clone, Copy, Debug)]
struct Accepted {
    data_records: u32,
    templates: bool,
}

impl Collector {
    /// Opens the transport (UDP: binds and connects; TCP: starts a non-blocking connect).
    /// Over TCP templates are sent once per connection, not refreshed (RFC 7011 §8).
    pub fn new(config: CollectorConfig, start_ms: u64) -> io::Result<Collector> {
        let transport: Box<dyn Transport> = match config.transport {
            TransportKind::Udp => {
                let opts = UdpOptions {
                    send_buffer: config.send_buffer,
                    source: config.source,
                };
                Box::new(UdpTransport::new(config.addr, &opts)?)
            }
            TransportKind::Tcp => {
                if config.session.version != ExportVersion::Ipfix {
                    return Err(invalid(ConfigError::TcpNeedsIpfix {
                        version: config.session.version,
                    }));
                }
                let opts = TcpOptions {
                    send_buffer: config.send_buffer,
                    source: config.source,
                    ..config.tcp
                };
                Box::new(TcpTransport::new(config.addr, &opts))
            }
        };
        Collector::with_transport(config, transport, start_ms)
    }

    /// A collector over a caller's transport (tests, other transports).
    pub fn with_transport(
        config: CollectorConfig,
        transport: Box<dyn Transport>,
        start_ms: u64,
    ) -> io::Result<Collector> {
        let mut session_config = config.session;
        if config.transport == TransportKind::Tcp {
            session_config.template_refresh_ms = 0;
            session_config.template_refresh_datagrams = 0;
        }
        let session = ExportSession::new(session_config, start_ms).map_err(invalid)?;
        Ok(Collector {
            name: format!(
                "{}/{} {}",
                config.session.version, config.transport, config.addr
            ),
            addr: config.addr,
            session,
            transport,
            pacer: config
                .pace_datagrams_per_sec
                .filter(|&r| r > 0)
                .map(Pacer::new),
            counters: CollectorCounters::default(),
            sessions_started: 0,
            last_error_log: None,
            retry_refused: config.transport == TransportKind::Udp,
            last_accepted: None,
        })
    }

    /// `"ipfix/udp 127.0.0.1:4739"`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn version(&self) -> ExportVersion {
        self.session.config().version
    }

    pub fn counters(&self) -> &CollectorCounters {
        &self.counters
    }

    pub fn session_counters(&self) -> &SessionCounters {
        self.session.counters()
    }

    /// When `tick` next has work to do (template refresh), on the records' clock.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.session.poll_timeout()
    }

    pub fn export_flows(&mut self, records: &[FlowRecord], now_ms: u64) {
        if records.is_empty() {
            return;
        }
        if !self.ready() {
            self.counters.records_dropped += records.len() as u64;
            self.counters.send_errors += 1;
            return;
        }
        self.drive(|session, emit| session.encode_flows(records, now_ms, emit));
    }

    pub fn export_aggregates(&mut self, records: &[AggregateRecord], now_ms: u64) {
        if records.is_empty() {
            return;
        }
        if !self.ready() {
            self.counters.records_dropped += records.len() as u64;
            self.counters.send_errors += 1;
            return;
        }
        self.drive(|session, emit| session.encode_aggregates(records, now_ms, emit));
    }

    /// Sends sampling and exporter statistics options records (nothing for v5).
    pub fn export_options(
        &mut self,
        sampling: SamplingInfo,
        stats: &ExporterStatistics,
        now_ms: u64,
    ) {
        if !self.ready() {
            return;
        }
        self.drive(|session, emit| session.encode_options(sampling, stats, now_ms, emit));
    }

    /// Sends sampling options records for a change of sampling that took effect at
    /// `since_ms` (nothing for v5).
    pub fn export_sampling_change(&mut self, sampling: SamplingInfo, since_ms: u64, now_ms: u64) {
        if !self.ready() {
            return;
        }
        self.drive(|session, emit| {
            session.encode_sampling_change(sampling, since_ms, now_ms, emit)
        });
    }

    /// Lets the transport make progress and sends templates when they are due by time.
    pub fn tick(&mut self, now_ms: u64) {
        if !self.ready() {
            return;
        }
        self.drive(|session, emit| session.handle_timeout(now_ms, emit));
    }

    /// Flushes what the transport still holds (TCP: waits up to 2 s) and closes it.
    pub fn close(&mut self, now_ms: u64) {
        self.tick(now_ms);
        self.transport.close(CLOSE_FLUSH_TIMEOUT);
    }

    fn ready(&mut self) -> bool {
        match self.transport.poll() {
            Readiness::Ready => true,
            Readiness::NewSession => {
                if self.sessions_started > 0 {
                    self.counters.reconnects += 1;
                }
                self.sessions_started += 1;
                self.session.force_template_refresh();
                true
            }
            Readiness::Down => false,
        }
    }

    /// Runs one encoder call, sending each datagram as it is finished.
    fn drive(&mut self, encode: impl FnOnce(&mut ExportSession, &mut dyn FnMut(&Datagram<'_>))) {
        let Collector {
            name,
            session,
            transport,
            pacer,
            counters,
            last_error_log,
            retry_refused,
            last_accepted,
            ..
        } = self;
        let mut lost_templates = false;
        encode(session, &mut |d: &Datagram<'_>| {
            if let Some(pacer) = pacer.as_mut() {
                pacer.wait();
            }
            let mut sent = transport.send(d.bytes);
            if *retry_refused
                && let Err(e) = &sent
                && e.kind() == io::ErrorKind::ConnectionRefused
            {
                // The error belongs to an earlier datagram: that one is lost, this one
                // was not sent yet.
                counters.send_errors += 1;
                if let Some(earlier) = last_accepted.take() {
                    let records = u64::from(earlier.data_records);
                    counters.records = counters.records.saturating_sub(records);
                    counters.records_dropped += records;
                    lost_templates |= earlier.templates;
                }
                log_send_error(name, last_error_log, e, counters.send_errors);
                counters.send_retries += 1;
                sent = transport.send(d.bytes);
            }
            match sent {
                Ok(()) => {
                    counters.datagrams += 1;
                    counters.bytes += d.bytes.len() as u64;
                    counters.records += u64::from(d.data_records);
                    counters.options_records += u64::from(d.options_records);
                    if d.template_records > 0 {
                        counters.template_sends += 1;
                    }
                    *last_accepted = Some(Accepted {
                        data_records: d.data_records,
                        templates: d.template_records > 0,
                    });
                }
                Err(e) => {
                    counters.send_errors += 1;
                    counters.records_dropped += u64::from(d.data_records);
                    lost_templates |= d.template_records > 0;
                    log_send_error(name, last_error_log, &e, counters.send_errors);
                }
            }
        });
        let unsupported = self.session.counters().unsupported;
        for reason in Unsupported::ALL {
            if self.counters.unsupported[reason as usize] == 0 && unsupported.get(reason) > 0 {
                log::warn!(
                    "collector {}: {}: skipping them (counted as not exportable, {})",
                    self.name,
                    reason.describe(),
                    reason.name()
                );
            }
        }
        for reason in Unsupported::ALL {
            self.counters.unsupported[reason as usize] = unsupported.get(reason);
        }
        if lost_templates {
            // The collector may never have seen them: send them again with the next datagram.
            self.session.force_template_refresh();
        }
    }
}

/// At most one log line a minute per collector: a down collector must not flood the log.
fn log_send_error(name: &str, last: &mut Option<Instant>, e: &io::Error, total: u64) {
    let now = Instant::now();
    if last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60)) {
        *last = Some(now);
        log::warn!("collector {name}: send failed: {e} ({total} send errors so far)");
    }
}

fn invalid(e: ConfigError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    use flowcache::FlowKey;

    #[derive(Debug, Default)]
    struct Script {
        sent: Vec<Vec<u8>>,
        readiness: Vec<Readiness>,
        fail_sends: bool,
        /// Refuse the next send as the kernel does after an ICMP port unreachable.
        icmp_error_pending: bool,
    }

    #[derive(Debug, Clone, Default)]
    struct FakeTransport(Arc<Mutex<Script>>);

    impl Transport for FakeTransport {
        fn send(&mut self, message: &[u8]) -> io::Result<()> {
            let mut s = self.0.lock().unwrap();
            if s.fail_sends {
                return Err(io::ErrorKind::ConnectionRefused.into());
            }
            if std::mem::take(&mut s.icmp_error_pending) {
                return Err(io::ErrorKind::ConnectionRefused.into());
            }
            s.sent.push(message.to_vec());
            Ok(())
        }

        fn poll(&mut self) -> Readiness {
            let mut s = self.0.lock().unwrap();
            if s.readiness.is_empty() {
                Readiness::Ready
            } else {
                s.readiness.remove(0)
            }
        }
    }

    fn flow(i: u32) -> FlowRecord {
        let mut key = FlowKey::default();
        key.set_addrs(
            std::net::Ipv4Addr::from(0x0a00_0000 + i).into(),
            std::net::Ipv4Addr::new(192, 0, 2, 1).into(),
        );
        key.protocol = 17;
        FlowRecord {
            key,
            packets: 1,
            octets: 100,
            first_ms: 1_000,
            last_ms: 2_000,
            ..FlowRecord::default()
        }
    }

    fn collector(version: ExportVersion, kind: TransportKind) -> (Collector, FakeTransport) {
        let fake = FakeTransport::default();
        let session = SessionConfig {
            version,
            ..SessionConfig::default()
        };
        let config = CollectorConfig::new("127.0.0.1:9".parse().unwrap(), kind, session);
        let c = Collector::with_transport(config, Box::new(fake.clone()), 0).unwrap();
        (c, fake)
    }

    #[test]
    fn refused_sends_count_errors_and_dropped_records_and_retry_templates() {
        let (mut c, fake) = collector(ExportVersion::Ipfix, TransportKind::Udp);
        fake.0.lock().unwrap().fail_sends = true;
        let records: Vec<_> = (0..50).map(flow).collect();
        c.export_flows(&records, 5_000);
        let k = *c.counters();
        assert_eq!(k.records, 0);
        assert_eq!(k.records_dropped, 50);
        assert!(k.send_errors >= 3, "{k:?}");
        assert_eq!(k.template_sends, 0);
        // Back up: the templates go out again at once, not at the next refresh.
        fake.0.lock().unwrap().fail_sends = false;
        c.export_flows(&records[..1], 5_001);
        assert_eq!(c.counters().template_sends, 1);
        assert_eq!(c.counters().records, 1);
    }

    #[test]
    fn an_earlier_datagrams_icmp_error_costs_that_datagram_not_the_current_one() {
        let (mut c, fake) = collector(ExportVersion::Ipfix, TransportKind::Udp);
        c.export_flows(&[flow(1), flow(2)], 5_000);
        assert_eq!(c.counters().records, 2);
        // The collector was down for that datagram: the kernel refuses the next send.
        fake.0.lock().unwrap().icmp_error_pending = true;
        c.export_flows(&[flow(3)], 5_001);
        let k = *c.counters();
        assert_eq!(k.send_retries, 1);
        assert_eq!(k.send_errors, 1);
        assert_eq!((k.records, k.records_dropped), (1, 2), "{k:?}");
        let sent = fake.0.lock().unwrap().sent.len();
        assert_eq!(sent, 2, "the retried datagram went out");
        // The lost datagram carried the templates: they go out again with the next one.
        c.export_flows(&[flow(4)], 5_002);
        assert_eq!(c.counters().template_sends, 2);
    }

    #[test]
    fn tcp_sends_are_not_retried() {
        let (mut c, fake) = collector(ExportVersion::Ipfix, TransportKind::Tcp);
        fake.0.lock().unwrap().icmp_error_pending = true;
        c.export_flows(&[flow(1)], 5_000);
        let k = *c.counters();
        assert_eq!(
            (k.send_retries, k.send_errors, k.records_dropped),
            (0, 1, 1)
        );
    }

    #[test]
    fn down_transport_drops_without_encoding_and_new_session_resends_templates() {
        let (mut c, fake) = collector(ExportVersion::Ipfix, TransportKind::Tcp);
        fake.0.lock().unwrap().readiness = vec![
            Readiness::NewSession,
            Readiness::Ready,
            Readiness::Down,
            Readiness::NewSession,
        ];
        let records: Vec<_> = (0..3).map(flow).collect();
        for _ in 0..4 {
            c.export_flows(&records, 10_000);
        }
        let k = *c.counters();
        assert_eq!(k.records, 9);
        assert_eq!(k.records_dropped, 3);
        assert_eq!(k.send_errors, 1, "refused while down: a send error");
        assert_eq!(k.template_sends, 2, "one per connection, none refreshed");
        assert_eq!(k.reconnects, 1);
        assert_eq!(c.session_counters().flow_records, 9);
    }

    #[test]
    fn tcp_needs_ipfix() {
        let session = SessionConfig {
            version: ExportVersion::V9,
            ..SessionConfig::default()
        };
        let config =
            CollectorConfig::new("127.0.0.1:9".parse().unwrap(), TransportKind::Tcp, session);
        let err = Collector::new(config, 0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("TCP"), "{err}");
    }

    #[test]
    fn ipv6_collectors_get_the_ipv6_default_mtu_unless_set() {
        let v6: SocketAddr = "[::1]:2055".parse().unwrap();
        let c = CollectorConfig::new(v6, TransportKind::Udp, SessionConfig::default());
        assert_eq!(c.session.mtu, DEFAULT_MTU_IPV6);
        let set = SessionConfig {
            mtu: 9000,
            ..SessionConfig::default()
        };
        assert_eq!(
            CollectorConfig::new(v6, TransportKind::Udp, set)
                .session
                .mtu,
            9000
        );
        let v4: SocketAddr = "127.0.0.1:2055".parse().unwrap();
        let c = CollectorConfig::new(v4, TransportKind::Udp, SessionConfig::default());
        assert_eq!(c.session.mtu, DEFAULT_MTU);
    }

    #[test]
    fn transport_kind_parses() {
        assert_eq!("UDP".parse::<TransportKind>(), Ok(TransportKind::Udp));
        assert_eq!("tcp".parse::<TransportKind>(), Ok(TransportKind::Tcp));
        assert!("sctp".parse::<TransportKind>().is_err());
    }

    #[test]
    fn pacer_never_exceeds_its_rate_beyond_the_burst() {
        // 500/s: interval 2 ms, burst 10 datagrams. 60 sends need at least 50 intervals.
        let mut p = Pacer::new(500);
        let start = Instant::now();
        for _ in 0..60 {
            p.wait();
        }
        assert!(start.elapsed() >= Duration::from_millis(2 * 49));
    }
}
