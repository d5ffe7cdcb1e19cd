//! The sans-IO export session: one per collector. It turns records into complete export
//! messages (datagrams) no larger than the configured MTU, owns the sequence numbers and
//! the template schedule, and hands every finished message to a caller's closure. It never
//! touches a socket or a clock: every call takes `now_ms`.
//!
//! One buffer, allocated when the session is built with the MTU as its capacity, holds the
//! message being built; records are written into it field by field and the finished message
//! is lent to the caller as a slice of it, so encoding allocates nothing per record or per
//! datagram.
//!
//! Messages are finished at the end of every `encode_*` call: callers that want full
//! datagrams pass large batches (the export loop hands over whatever the workers sent).

use std::fmt;
use std::str::FromStr;

use flowcache::{AggregateRecord, FlowRecord, SamplingAlgorithm, SamplingInfo};

use crate::ie::{self, Ie, OptionsTemplate, TemplateSet, id, record_len};
use crate::wire::{
    IPFIX_HEADER_LEN, IpfixHeader, SET_HEADER_LEN, SetHeader, V5_HEADER_LEN, V5Header, V5Start,
    V9_HEADER_LEN, V9Header,
};

/// Largest export message: the largest UDP payload over IPv4 (65535 - 20 - 8).
pub const MAX_MTU: usize = 65_507;
/// Default message size: a 1500-byte Ethernet frame less the IPv4 (20) and UDP (8) headers.
/// With it a NetFlow v5 datagram carries the full 30 records (24 + 30 * 48 = 1464 bytes).
pub const DEFAULT_MTU: usize = 1472;
/// The same for an IPv6 collector: 1500 less 40 (IPv6) and 8 (UDP).
/// `CollectorConfig::new` picks it when an IPv6 collector is given the default MTU.
pub const DEFAULT_MTU_IPV6: usize = 1452;
/// Default template refresh interval for UDP (RFC 7011 §8.4 asks for a periodic one).
pub const DEFAULT_TEMPLATE_REFRESH_MS: u64 = 30_000;
/// Default template refresh by count: every this many datagrams without templates.
pub const DEFAULT_TEMPLATE_REFRESH_DATAGRAMS: u32 = 100;

pub(crate) const V5_RECORD_LEN: usize = 48;
pub(crate) const V5_MAX_RECORDS: usize = 30;

/// Export protocol of one collector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ExportVersion {
    V5,
    V9,
    #[default]
    Ipfix,
}

impl ExportVersion {
    pub fn name(self) -> &'static str {
        match self {
            ExportVersion::V5 => "v5",
            ExportVersion::V9 => "v9",
            ExportVersion::Ipfix => "ipfix",
        }
    }
}

impl fmt::Display for ExportVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `"v5"`, `"v9"` or `"ipfix"` was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseVersionError(pub String);

impl fmt::Display for ParseVersionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown export version {:?}: expected v5, v9 or ipfix",
            self.0
        )
    }
}

impl std::error::Error for ParseVersionError {}

impl FromStr for ExportVersion {
    type Err = ParseVersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "v5" => Ok(ExportVersion::V5),
            "v9" => Ok(ExportVersion::V9),
            "ipfix" => Ok(ExportVersion::Ipfix),
            _ => Err(ParseVersionError(s.to_string())),
        }
    }
}

/// One collector's encoder settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    pub version: ExportVersion,
    /// IPFIX observation domain id; NetFlow v9 source id. (v5 has neither.)
    pub observation_domain_id: u32,
    /// Largest export message in bytes: the UDP payload, without IP and UDP headers.
    pub mtu: usize,
    /// Resend templates when this long has passed since they were last sent; 0: never by time.
    pub template_refresh_ms: u64,
    /// Resend templates after this many datagrams without them; 0: never by count.
    pub template_refresh_datagrams: u32,
    /// NetFlow v5 header engine type and id.
    pub engine_type: u8,
    pub engine_id: u8,
    /// Also put samplingInterval and samplingAlgorithm into every v9/IPFIX flow record,
    /// not only into the sampling options records.
    pub sampling_in_records: bool,
    /// Extension sections (biflow, TCP KPIs) the v9/IPFIX flow templates carry; a record
    /// without a section writes zeros in its fields.
    pub extras: ie::ExtraSections,
    /// The sampling options say when their interval took effect (observationTimeMilliseconds),
    /// and each change is sent at once ([`ExportSession::encode_sampling_change`]): for
    /// adaptive sampling, whose interval moves.
    pub sampling_time: bool,
}

impl SessionConfig {
    /// The templates this configuration exports.
    fn templates(&self) -> TemplateSet {
        let templates = TemplateSet::new(
            self.version == ExportVersion::Ipfix,
            self.sampling_in_records,
            self.extras,
        );
        if self.sampling_time {
            templates.with_sampling_time()
        } else {
            templates
        }
    }

    /// The smallest `mtu` this configuration works with: every template goes out in one
    /// datagram, and the largest record fits one. [`ExportSession::new`] refuses less.
    pub fn minimum_mtu(&self) -> usize {
        minimum_mtu(self.version, &self.templates())
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            version: ExportVersion::default(),
            observation_domain_id: 0,
            mtu: DEFAULT_MTU,
            template_refresh_ms: DEFAULT_TEMPLATE_REFRESH_MS,
            template_refresh_datagrams: DEFAULT_TEMPLATE_REFRESH_DATAGRAMS,
            engine_type: 0,
            engine_id: 0,
            sampling_in_records: false,
            extras: ie::ExtraSections::default(),
            sampling_time: false,
        }
    }
}

/// A session configuration that cannot work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// The MTU cannot hold a header, the templates and one record.
    MtuTooSmall {
        version: ExportVersion,
        mtu: usize,
        minimum: usize,
    },
    MtuTooLarge {
        mtu: usize,
        maximum: usize,
    },
    /// Only IPFIX can be carried over TCP: NetFlow headers have no length to frame a stream.
    TcpNeedsIpfix {
        version: ExportVersion,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::MtuTooSmall {
                version,
                mtu,
                minimum,
            } => write!(
                f,
                "mtu {mtu} is too small for {version}: at least {minimum} bytes are needed \
                 (every template goes out in one datagram; [analyzers.dns] adds six)"
            ),
            ConfigError::MtuTooLarge { mtu, maximum } => {
                write!(
                    f,
                    "mtu {mtu} is larger than the largest UDP payload, {maximum}"
                )
            }
            ConfigError::TcpNeedsIpfix { version } => write!(
                f,
                "{version} cannot be exported over TCP (only IPFIX frames messages on a stream)"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Exporter-wide statistics the caller reports in the exporter statistics options record
/// (RFC 7011 §4.3 style), usually this collector's own counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExporterStatistics {
    /// exportedMessageTotalCount (41).
    pub exported_messages: u64,
    /// exportedFlowRecordTotalCount (42).
    pub exported_records: u64,
    /// exportedOctetTotalCount (40).
    pub exported_octets: u64,
    /// notSentFlowTotalCount (166): records lost before reaching the wire.
    pub not_sent_records: u64,
}

/// Why a record could not be exported in the collector's format. A configuration that makes
/// one of these certain is refused at start; what remains is counted per reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Unsupported {
    /// NetFlow v5 has IPv4 addresses only.
    Ipv6InV5,
    /// NetFlow v5 has no place for a protocol-port aggregate's flow count.
    AggregateInV5,
}

impl Unsupported {
    pub const ALL: [Unsupported; 2] = [Unsupported::Ipv6InV5, Unsupported::AggregateInV5];

    /// The metrics label and summary name.
    pub const fn name(self) -> &'static str {
        match self {
            Unsupported::Ipv6InV5 => "ipv6_in_v5",
            Unsupported::AggregateInV5 => "aggregate_in_v5",
        }
    }

    /// What an operator reads in the warning.
    pub fn describe(self) -> &'static str {
        match self {
            Unsupported::Ipv6InV5 => "NetFlow v5 cannot carry IPv6 flows",
            Unsupported::AggregateInV5 => "NetFlow v5 cannot carry protocol-port aggregates",
        }
    }
}

/// Records skipped because the format cannot carry them, per [`Unsupported`] reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnsupportedCounts([u64; 2]);

impl UnsupportedCounts {
    pub fn get(&self, reason: Unsupported) -> u64 {
        self.0[reason as usize]
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    fn add(&mut self, reason: Unsupported, n: u64) {
        self.0[reason as usize] += n;
    }
}

/// What one session has encoded. Every record handed in ends up in exactly one of
/// `flow_records`, `aggregate_records` or `unsupported`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionCounters {
    /// Export messages (datagrams) emitted, and their bytes.
    pub datagrams: u64,
    pub bytes: u64,
    /// Flow data records emitted.
    pub flow_records: u64,
    /// Protocol-port aggregate data records emitted.
    pub aggregate_records: u64,
    /// Options data records emitted (sampling, exporter statistics).
    pub options_records: u64,
    /// Times the full template set was sent, and the template + options template records in them.
    pub template_sends: u64,
    pub template_records: u64,
    /// Records the version cannot carry, skipped, by reason: v5 gets IPv6 flows and aggregates.
    pub unsupported: UnsupportedCounts,
    /// Values that did not fit their field and were clamped: v5 32-bit counters over
    /// 2^32-1, v5/v9 times before the session's start (sent as 0 uptime).
    pub clamped_fields: u64,
}

impl SessionCounters {
    /// Data records of any kind: the IPFIX sequence number counts these.
    pub fn data_records(&self) -> u64 {
        self.flow_records + self.aggregate_records + self.options_records
    }
}

/// One finished export message, lent to the caller for sending.
#[derive(Clone, Copy, Debug)]
pub struct Datagram<'a> {
    pub bytes: &'a [u8],
    /// Flow or aggregate data records in it.
    pub data_records: u32,
    /// Options data records in it.
    pub options_records: u32,
    /// Template and options template records in it.
    pub template_records: u32,
}

#[derive(Clone, Copy, Debug, Default)]
struct MessageCounts {
    data: u32,
    aggregates: u32,
    options: u32,
    templates: u32,
    carries_templates: bool,
}

#[derive(Clone, Copy, Debug)]
struct OpenSet {
    id: u16,
    start: usize,
}

/// The per-collector encoder. See the module docs.
#[derive(Debug)]
pub struct ExportSession {
    config: SessionConfig,
    start_ms: u64,
    /// NetFlow's sysUptime 0, see [`netflow_boot_ms`].
    boot_ms: u64,
    templates: TemplateSet,
    buf: Vec<u8>,
    message_open: bool,
    open_set: Option<OpenSet>,
    message: MessageCounts,
    /// v5: the sampling every record of the open datagram shares (it is in the header).
    v5_sampling: SamplingInfo,
    v5_max_records: usize,
    templates_sent_ms: Option<u64>,
    /// Datagrams finished without templates since templates were last sent.
    datagrams_since_templates: u64,
    templates_forced: bool,
    /// Last sampling reported through `encode_options`, resent with every template refresh.
    sampling: Option<SamplingInfo>,
    /// When that sampling took effect (ms on the records' clock): the session's start
    /// until a change says otherwise.
    sampling_since_ms: u64,
    counters: SessionCounters,
}

impl ExportSession {
    /// `start_ms` is the exporter's boot time on the same clock as `now_ms` and the records'
    /// times; NetFlow's sysUptime counts from it.
    pub fn new(config: SessionConfig, start_ms: u64) -> Result<ExportSession, ConfigError> {
        let templates = config.templates();
        let minimum = minimum_mtu(config.version, &templates);
        if config.mtu < minimum {
            return Err(ConfigError::MtuTooSmall {
                version: config.version,
                mtu: config.mtu,
                minimum,
            });
        }
        if config.mtu > MAX_MTU {
            return Err(ConfigError::MtuTooLarge {
                mtu: config.mtu,
                maximum: MAX_MTU,
            });
        }
        Ok(ExportSession {
            config,
            start_ms,
            boot_ms: netflow_boot_ms(start_ms),
            templates,
            buf: Vec::with_capacity(config.mtu),
            message_open: false,
            open_set: None,
            message: MessageCounts::default(),
            v5_sampling: SamplingInfo::default(),
            v5_max_records: ((config.mtu - V5_HEADER_LEN) / V5_RECORD_LEN).min(V5_MAX_RECORDS),
            templates_sent_ms: None,
            datagrams_since_templates: 0,
            templates_forced: false,
            sampling: None,
            sampling_since_ms: start_ms,
            counters: SessionCounters::default(),
        })
    }

    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    pub fn counters(&self) -> &SessionCounters {
        &self.counters
    }

    /// Capacity of the one encoder buffer; it never grows after `new`.
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Sends the templates with the next message, whatever the schedule says: for a new
    /// transport session (a TCP reconnect) or a collector known to have restarted.
    pub fn force_template_refresh(&mut self) {
        self.templates_forced = true;
    }

    /// Encodes flow records. v5 skips non-IPv4 records (counted in `unsupported`).
    pub fn encode_flows(
        &mut self,
        records: &[FlowRecord],
        now_ms: u64,
        emit: &mut dyn FnMut(&Datagram<'_>),
    ) {
        match self.config.version {
            ExportVersion::V5 => self.encode_v5(records, now_ms, emit),
            ExportVersion::V9 | ExportVersion::Ipfix => {
                if self.templates.dns.is_some() {
                    // Runs of records without a DNS transaction keep the usual path;
                    // each record with one goes out in its DNS template.
                    let mut rest = records;
                    while !rest.is_empty() {
                        let plain = rest.iter().position(|r| dns_of(r).is_some());
                        let (head, tail) = rest.split_at(plain.unwrap_or(rest.len()));
                        self.encode_plain_flow_records(head, now_ms, emit);
                        let with_dns = tail.iter().position(|r| dns_of(r).is_none());
                        let (head, tail) = tail.split_at(with_dns.unwrap_or(tail.len()));
                        for r in head {
                            if let Some(dns) = dns_of(r) {
                                self.encode_dns_flow_record(r, dns, now_ms, emit);
                            }
                        }
                        rest = tail;
                    }
                } else {
                    self.encode_plain_flow_records(records, now_ms, emit);
                }
                self.finish_message(emit);
            }
        }
    }

    /// v9 / IPFIX flow records in the session's IPv4 and IPv6 flow templates.
    fn encode_plain_flow_records(
        &mut self,
        records: &[FlowRecord],
        now_ms: u64,
        emit: &mut dyn FnMut(&Datagram<'_>),
    ) {
        if records.is_empty() {
            return;
        }
        if self.config.extras.widen_flow_records() {
            return self.encode_extended_flow_records(records, now_ms, emit);
        }
        match (self.is_ipfix(), self.config.sampling_in_records) {
            (true, true) => self.encode_flow_records::<true, true>(records, now_ms, emit),
            (true, false) => self.encode_flow_records::<true, false>(records, now_ms, emit),
            (false, true) => self.encode_flow_records::<false, true>(records, now_ms, emit),
            (false, false) => self.encode_flow_records::<false, false>(records, now_ms, emit),
        }
    }

    /// One flow record with its DNS transaction, in the DNS template of the
    /// transaction's shape: the session's flow fields, the DNS section (the query name a
    /// variable-length string in IPFIX, a fixed-length one in v9), the sampling fields.
    fn encode_dns_flow_record(
        &mut self,
        r: &FlowRecord,
        dns: &flowcache::DnsTransaction,
        now_ms: u64,
        emit: &mut dyn FnMut(&Datagram<'_>),
    ) {
        let Some((template, fields)) = self
            .templates
            .dns_template(ie::DnsShape::of(dns), r.key.ip_version == 6)
        else {
            return self.encode_plain_flow_records(std::slice::from_ref(r), now_ms, emit);
        };
        let qname = cut_to(&dns.qname, ie::MAX_VARIABLE_OCTETS).as_bytes();
        let variable = fields.iter().any(Ie::is_variable);
        let len = record_len(fields)
            + if variable {
                ie::variable_len(qname.len())
            } else {
                0
            };
        self.reserve_record(template, len, now_ms, emit);
        let start = self.buf.len();
        self.buf.resize(start + len, 0);
        let mut at = start;
        for f in fields {
            at = if f.is_variable() {
                put_variable_at(&mut self.buf, at, qname)
            } else if ie::extra::is_query_name(f) {
                // Fixed length: cut, and padded by the zeros the record was reserved with.
                let name = cut_to(&dns.qname, usize::from(f.len)).as_bytes();
                self.buf[at..at + name.len()].copy_from_slice(name);
                at + usize::from(f.len)
            } else {
                self.write_flow_field(f, at, r)
            };
        }
        debug_assert_eq!(at, start + len);
        self.message.data += 1;
    }

    /// v9 / IPFIX flow records, compiled once per template: with the field list a
    /// constant, the per-field dispatch of [`ExportSession::write_flow_record`] unrolls
    /// into fixed stores (about 830 -> 200 instructions a record, see BENCHMARKS.md).
    /// That matters where every packet is a record (a SYN flood) and the export thread
    /// bounds what the probe sustains.
    fn encode_flow_records<const IPFIX: bool, const SAMPLED: bool>(
        &mut self,
        records: &[FlowRecord],
        now_ms: u64,
        emit: &mut dyn FnMut(&Datagram<'_>),
    ) {
        let (ipv4, ipv6) = ie::flow_templates(IPFIX, SAMPLED);
        debug_assert!(ipv4 == self.templates.ipv4 && ipv6 == self.templates.ipv6);
        let (ipv4_len, ipv6_len) = (record_len(ipv4), record_len(ipv6));
        for r in records {
            if r.key.ip_version == 6 {
                self.reserve_record(ie::template_id::IPV6_FLOW, ipv6_len, now_ms, emit);
                self.write_flow_record(ipv6, ipv6_len, r);
            } else {
                self.reserve_record(ie::template_id::IPV4_FLOW, ipv4_len, now_ms, emit);
                self.write_flow_record(ipv4, ipv4_len, r);
            }
            self.message.data += 1;
        }
    }

    /// v9 / IPFIX flow records with extension sections: the templates are built at run
    /// time (`ie::ExtraSections`), so the fields are dispatched one by one.
    fn encode_extended_flow_records(
        &mut self,
        records: &[FlowRecord],
        now_ms: u64,
        emit: &mut dyn FnMut(&Datagram<'_>),
    ) {
        let (ipv4, ipv6) = (self.templates.ipv4, self.templates.ipv6);
        let (ipv4_len, ipv6_len) = (record_len(ipv4), record_len(ipv6));
        for r in records {
            if r.key.ip_version == 6 {
                self.reserve_record(ie::template_id::IPV6_FLOW, ipv6_len, now_ms, emit);
                self.write_flow_record(ipv6, ipv6_len, r);
            } else {
                self.reserve_record(ie::template_id::IPV4_FLOW, ipv4_len, now_ms, emit);
                self.write_flow_record(ipv4, ipv4_len, r);
            }
            self.message.data += 1;
        }
    }

    /// Encodes protocol-port aggregates. v5 has no place for them: they are skipped and
    /// counted in `unsupported` (mapping them onto 0.0.0.0 flows would mislead).
    pub fn encode_aggregates(
        &mut self,
        records: &[AggregateRecord],
        now_ms: u64,
        emit: &mut dyn FnMut(&Datagram<'_>),
    ) {
        if self.config.version == ExportVersion::V5 {
            self.counters
                .unsupported
                .add(Unsupported::AggregateInV5, records.len() as u64);
            return;
        }
        let fields = self.templates.aggregate;
        let len = record_len(fields);
        for r in records {
            self.reserve_record(ie::template_id::PROTOCOL_PORT_AGGREGATE, len, now_ms, emit);
            for field in fields {
                self.write_aggregate_field(field, r);
            }
            self.message.aggregates += 1;
        }
        self.finish_message(emit);
    }

    /// Sends a sampling options record and an exporter statistics options record. The
    /// sampling is remembered and resent with every later template refresh. v5 carries
    /// sampling in its header and has no options: nothing is sent.
    pub fn encode_options(
        &mut self,
        sampling: SamplingInfo,
        stats: &ExporterStatistics,
        now_ms: u64,
        emit: &mut dyn FnMut(&Datagram<'_>),
    ) {
        if self.config.version == ExportVersion::V5 {
            return;
        }
        self.sampling = Some(sampling);
        let stats_template = self.templates.statistics;
        for t in self.templates.sampling_templates() {
            self.reserve_record(t.id, t.record_len(), now_ms, emit);
            // A template refresh in this message already carries the sampling records.
            if !self.message.carries_templates {
                self.write_sampling_record(t, sampling);
            }
        }
        self.reserve_record(stats_template.id, stats_template.record_len(), now_ms, emit);
        self.write_scope(stats_template);
        for (field, value) in stats_template.fields.iter().zip([
            stats.exported_messages,
            stats.exported_records,
            stats.exported_octets,
            stats.not_sent_records,
        ]) {
            put_uint(&mut self.buf, value, field.len);
        }
        self.message.options += 1;
        self.finish_message(emit);
    }

    /// Sends sampling options records at once for a change of sampling that took effect at
    /// `since_ms`; later options records and template refreshes repeat it. v5 carries
    /// sampling in its header: nothing is sent.
    pub fn encode_sampling_change(
        &mut self,
        sampling: SamplingInfo,
        since_ms: u64,
        now_ms: u64,
        emit: &mut dyn FnMut(&Datagram<'_>),
    ) {
        if self.config.version == ExportVersion::V5 {
            return;
        }
        self.sampling = Some(sampling);
        self.sampling_since_ms = since_ms;
        for t in self.templates.sampling_templates() {
            self.reserve_record(t.id, t.record_len(), now_ms, emit);
            if !self.message.carries_templates {
                self.write_sampling_record(t, sampling);
            }
        }
        self.finish_message(emit);
    }

    /// When `handle_timeout` next has work (absolute ms on the caller's clock), or `None`.
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.config.version == ExportVersion::V5 {
            return None;
        }
        match self.templates_sent_ms {
            _ if self.templates_forced => Some(self.start_ms),
            None => Some(self.start_ms),
            Some(_) if self.config.template_refresh_ms == 0 => None,
            Some(sent) => Some(sent.saturating_add(self.config.template_refresh_ms)),
        }
    }

    /// Sends a template-only message when templates are due (start-up, refresh by time,
    /// forced) and no data went out to carry them.
    pub fn handle_timeout(&mut self, now_ms: u64, emit: &mut dyn FnMut(&Datagram<'_>)) {
        if self.config.version == ExportVersion::V5 || !self.templates_due(now_ms) {
            return;
        }
        self.begin_message(now_ms);
        self.finish_message(emit);
    }

    fn templates_due(&self, now_ms: u64) -> bool {
        let Some(sent) = self.templates_sent_ms else {
            return true;
        };
        let by_time = self.config.template_refresh_ms > 0
            && now_ms.saturating_sub(sent) >= self.config.template_refresh_ms;
        let by_count = self.config.template_refresh_datagrams > 0
            && self.datagrams_since_templates >= u64::from(self.config.template_refresh_datagrams);
        self.templates_forced || by_time || by_count
    }

    fn is_ipfix(&self) -> bool {
        self.config.version == ExportVersion::Ipfix
    }

    /// Milliseconds since the session's boot as NetFlow's 32-bit sysUptime (wrapping after
    /// 49.7 days, as routers' does); times before the boot are clamped to 0 and counted.
    fn uptime(&mut self, ms: u64) -> u32 {
        if ms < self.boot_ms {
            self.counters.clamped_fields += 1;
            return 0;
        }
        (ms - self.boot_ms) as u32
    }

    /// The instant NetFlow's sysUptime counts from (v5 and v9): collectors place a record
    /// at this + its FIRST/LAST_SWITCHED.
    pub fn sys_uptime_epoch_ms(&self) -> u64 {
        self.boot_ms
    }

    // ---- v9 / IPFIX message building -------------------------------------------------

    fn begin_message(&mut self, now_ms: u64) {
        debug_assert!(!self.message_open);
        self.buf.clear();
        self.message = MessageCounts::default();
        self.open_set = None;
        self.message_open = true;
        if self.is_ipfix() {
            IpfixHeader::append(
                &mut self.buf,
                (now_ms / 1000) as u32,
                self.config.observation_domain_id,
            );
        } else {
            // The header has whole seconds only, and collectors place records at
            // unix_secs - sysUptime + FIRST_SWITCHED: so sysUptime is the uptime at exactly
            // unix_secs, which makes that boot time exact to the ms. The second is rounded
            // up, so no record is later than the header (collectors subtract unsigned).
            let secs = now_ms.div_ceil(1000);
            let uptime = (secs * 1000).saturating_sub(self.boot_ms) as u32;
            V9Header::append(
                &mut self.buf,
                uptime,
                secs as u32,
                self.config.observation_domain_id,
            );
        }
        if self.templates_due(now_ms) {
            self.write_template_bundle(now_ms);
        }
    }

    fn uptime_for_header(&self, now_ms: u64) -> u32 {
        now_ms.saturating_sub(self.boot_ms) as u32
    }

    /// All data templates, all options templates and, if known, the sampling record.
    fn write_template_bundle(&mut self, now_ms: u64) {
        let ipfix = self.is_ipfix();
        self.open_set(if ipfix { 2 } else { 0 });
        for (template_id, fields) in self.templates.data_templates() {
            put_u16(&mut self.buf, template_id);
            put_u16(&mut self.buf, fields.len() as u16);
            for f in fields {
                if f.pen == 0 {
                    put_u16(&mut self.buf, f.id);
                    put_u16(&mut self.buf, f.len);
                } else {
                    // RFC 7011 §3.2: the enterprise bit, then the enterprise number.
                    debug_assert!(ipfix, "v9 templates have no enterprise elements");
                    put_u16(&mut self.buf, f.id | 0x8000);
                    put_u16(&mut self.buf, f.len);
                    put_u32(&mut self.buf, f.pen);
                }
            }
            self.message.templates += 1;
        }
        for t in self.templates.options_templates() {
            // One options template a set: valid either way (RFC 7011 §3.3.2), but the PyPI
            // `netflow` decoder crashes on the second, nfacctd drops it as malformed and
            // FastNetMon never learns it (docs/COLLECTORS.md).
            self.open_set(if ipfix { 3 } else { 1 });
            put_u16(&mut self.buf, t.id);
            if ipfix {
                put_u16(&mut self.buf, (t.scope.len() + t.fields.len()) as u16);
                put_u16(&mut self.buf, t.scope.len() as u16);
            } else {
                // v9 counts scope and option fields in bytes of field specifiers.
                put_u16(&mut self.buf, (t.scope.len() * 4) as u16);
                put_u16(&mut self.buf, (t.fields.len() * 4) as u16);
            }
            for f in t.scope.iter().chain(t.fields) {
                put_u16(&mut self.buf, f.id);
                put_u16(&mut self.buf, f.len);
            }
            self.message.templates += 1;
        }
        if let Some(sampling) = self.sampling {
            for t in self.templates.sampling_templates() {
                self.open_set(t.id);
                self.write_sampling_record(t, sampling);
            }
        }
        self.message.carries_templates = true;
        self.templates_sent_ms = Some(now_ms);
        self.templates_forced = false;
        self.datagrams_since_templates = 0;
        self.counters.template_sends += 1;
    }

    fn write_scope(&mut self, t: OptionsTemplate) {
        for f in t.scope {
            // Both scopes (IPFIX observationDomainId, v9 System) carry the domain / source id.
            put_uint(
                &mut self.buf,
                u64::from(self.config.observation_domain_id),
                f.len,
            );
        }
    }

    fn write_sampling_record(&mut self, t: OptionsTemplate, sampling: SamplingInfo) {
        self.write_scope(t);
        for f in t.fields {
            self.write_sampling_field(f, sampling);
        }
        self.message.options += 1;
    }

    fn write_sampling_field(&mut self, f: &Ie, sampling: SamplingInfo) {
        if f.id == id::OBSERVATION_TIME_MILLISECONDS {
            put_uint(&mut self.buf, self.sampling_since_ms, f.len);
            return;
        }
        match sampling_value(f.id, sampling) {
            Some(v) => put_uint(&mut self.buf, v, f.len),
            None => unreachable_field(&mut self.buf, f),
        }
    }

    /// Bytes a set of `len` bytes (header included) needs to end on a 4-byte boundary.
    fn set_padding(&self, len: usize) -> usize {
        if self.is_ipfix() {
            0
        } else {
            (4 - len % 4) % 4
        }
    }

    /// Starts a set, closing the open one (RFC 7011 §3.3 / RFC 3954 §5.3).
    fn open_set(&mut self, id: u16) {
        self.close_set();
        self.open_set = Some(OpenSet {
            id,
            start: self.buf.len(),
        });
        SetHeader::append(&mut self.buf, id);
    }

    fn close_set(&mut self) {
        let Some(set) = self.open_set.take() else {
            return;
        };
        // v9 SHOULD pad a FlowSet to 32 bits (RFC 3954 §5.3); IPFIX packs densely.
        let padding = self.set_padding(self.buf.len() - set.start);
        self.buf.resize(self.buf.len() + padding, 0);
        let len = (self.buf.len() - set.start) as u16;
        SetHeader::new(&mut self.buf[set.start..]).set_length(len);
    }

    /// Makes room for one record of `len` bytes in set `set_id`, finishing the message and
    /// starting a new one when it would not fit the MTU.
    fn reserve_record(
        &mut self,
        set_id: u16,
        len: usize,
        now_ms: u64,
        emit: &mut dyn FnMut(&Datagram<'_>),
    ) {
        if self.message_open && !self.fits(set_id, len) {
            self.finish_message(emit);
        }
        if !self.message_open {
            self.begin_message(now_ms);
            if !self.fits(set_id, len) {
                // The template bundle filled this one: send it and start afresh. `new`
                // guaranteed a header and one record always fit.
                self.finish_message(emit);
                self.begin_message(now_ms);
            }
        }
        if self.open_set.map(|s| s.id) != Some(set_id) {
            self.open_set(set_id);
        }
    }

    /// Whether one more record of `len` bytes in set `set_id`, with the padding that would
    /// close its set, stays within the MTU.
    fn fits(&self, set_id: u16, len: usize) -> bool {
        let end = match self.open_set {
            Some(set) if set.id == set_id => {
                let set_len = self.buf.len() - set.start + len;
                self.buf.len() + len + self.set_padding(set_len)
            }
            Some(set) => {
                let closed = self.buf.len() + self.set_padding(self.buf.len() - set.start);
                closed + SET_HEADER_LEN + len + self.set_padding(SET_HEADER_LEN + len)
            }
            None => self.buf.len() + SET_HEADER_LEN + len + self.set_padding(SET_HEADER_LEN + len),
        };
        end <= self.config.mtu
    }

    fn finish_message(&mut self, emit: &mut dyn FnMut(&Datagram<'_>)) {
        if !self.message_open {
            return;
        }
        self.message_open = false;
        self.close_set();
        let m = self.message;
        if self.is_ipfix() {
            let len = self.buf.len() as u16;
            // RFC 7011 §3.1: data records sent before this message, modulo 2^32; template
            // records do not count, options data records do.
            let sequence = self.counters.data_records() as u32;
            let mut header = IpfixHeader::new(&mut self.buf[..]);
            header.set_length(len);
            header.set_sequence(sequence);
        } else {
            // RFC 3954 §5.1: count is every record in the packet, templates included;
            // sequence counts export packets sent before this one.
            let count = (m.data + m.aggregates + m.options + m.templates) as u16;
            let sequence = self.counters.datagrams as u32;
            let mut header = V9Header::new(&mut self.buf[..]);
            header.set_count(count);
            header.set_sequence(sequence);
        }
        self.counters.flow_records += u64::from(m.data);
        self.counters.aggregate_records += u64::from(m.aggregates);
        self.counters.options_records += u64::from(m.options);
        self.counters.template_records += u64::from(m.templates);
        self.emit_buffer(
            m.data + m.aggregates,
            m.options,
            m.templates,
            m.carries_templates,
            emit,
        );
    }

    fn emit_buffer(
        &mut self,
        data_records: u32,
        options_records: u32,
        template_records: u32,
        carries_templates: bool,
        emit: &mut dyn FnMut(&Datagram<'_>),
    ) {
        debug_assert!(self.buf.len() <= self.config.mtu);
        self.counters.datagrams += 1;
        self.counters.bytes += self.buf.len() as u64;
        if !carries_templates {
            self.datagrams_since_templates += 1;
        }
        emit(&Datagram {
            bytes: &self.buf,
            data_records,
            options_records,
            template_records,
        });
    }

    /// Appends one flow record laid out as `fields` (`len` bytes in all): the record's
    /// bytes are reserved at once and each field written in place, where pushing field by
    /// field cost a capacity check, and for run-time sizes a memcpy call, per field.
    /// The fields are written out one index at a time rather than looped over: for a
    /// constant template (see [`ExportSession::encode_flow_records`]) each index, element
    /// id and length then folds, and the record compiles to a run of fixed stores.
    #[inline(always)]
    fn write_flow_record(&mut self, fields: &[Ie], len: usize, r: &FlowRecord) {
        let start = self.buf.len();
        self.buf.resize(start + len, 0);
        let mut at = start;
        macro_rules! fields_at {
            ($($i:literal)*) => {$(
                if let Some(f) = fields.get($i) {
                    at = self.write_flow_field(f, at, r);
                }
            )*};
        }
        fields_at!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19);
        for f in fields.iter().skip(20) {
            at = self.write_flow_field(f, at, r);
        }
    }

    /// Writes field `f` of `r` at `at` in the buffer; returns where the next field starts.
    #[inline(always)]
    fn write_flow_field(&mut self, f: &Ie, at: usize, r: &FlowRecord) -> usize {
        let end = at + usize::from(f.len);
        let value = self.flow_field_value(f, r);
        let slot = &mut self.buf[at..end];
        match value {
            FieldValue::Uint(v) => put_uint_into(slot, v),
            // Whole-array copies for addresses, so no memcpy call.
            FieldValue::Bytes(bytes) => {
                if let (Ok(to), Ok(from)) = (
                    <&mut [u8; 4]>::try_from(&mut *slot),
                    <&[u8; 4]>::try_from(bytes),
                ) {
                    *to = *from;
                } else if let (Ok(to), Ok(from)) = (
                    <&mut [u8; 16]>::try_from(&mut *slot),
                    <&[u8; 16]>::try_from(bytes),
                ) {
                    *to = *from;
                } else {
                    let n = slot.len().min(bytes.len());
                    slot[..n].copy_from_slice(&bytes[..n]);
                }
            }
        }
        end
    }

    #[inline(always)]
    fn flow_field_value<'r>(&mut self, f: &Ie, r: &'r FlowRecord) -> FieldValue<'r> {
        use FieldValue::{Bytes, Uint};
        let k = &r.key;
        if f.pen != 0 {
            return Uint(extra_value(f, r));
        }
        match f.id {
            id::SOURCE_IPV4_ADDRESS => Bytes(&k.src_addr[..4]),
            id::DESTINATION_IPV4_ADDRESS => Bytes(&k.dst_addr[..4]),
            id::SOURCE_IPV6_ADDRESS => Bytes(&k.src_addr),
            id::DESTINATION_IPV6_ADDRESS => Bytes(&k.dst_addr),
            id::SOURCE_TRANSPORT_PORT => Uint(u64::from(k.src_port)),
            id::DESTINATION_TRANSPORT_PORT => Uint(u64::from(k.dst_port)),
            id::ICMP_TYPE_CODE_IPV4 | id::ICMP_TYPE_CODE_IPV6 => {
                // The key keeps ICMP type << 8 | code in the destination port.
                let icmp = matches!(k.protocol, 1 | 58);
                Uint(if icmp { u64::from(k.dst_port) } else { 0 })
            }
            id::PROTOCOL_IDENTIFIER => Uint(u64::from(k.protocol)),
            id::IP_CLASS_OF_SERVICE => Uint(u64::from(k.tos)),
            id::TCP_CONTROL_BITS => Uint(u64::from(r.tcp_flags)),
            id::PACKET_DELTA_COUNT => Uint(r.packets),
            id::OCTET_DELTA_COUNT => Uint(r.octets),
            id::FLOW_START_MILLISECONDS => Uint(r.first_ms),
            id::FLOW_END_MILLISECONDS => Uint(r.last_ms),
            id::FIRST_SWITCHED => Uint(u64::from(self.uptime(r.first_ms))),
            id::LAST_SWITCHED => Uint(u64::from(self.uptime(r.last_ms))),
            id::INGRESS_INTERFACE => Uint(u64::from(k.input_port)),
            id::VLAN_ID => Uint(u64::from(k.vlan)),
            id::MINIMUM_TTL => Uint(u64::from(r.min_ttl)),
            id::MAXIMUM_TTL => Uint(u64::from(r.max_ttl)),
            id::FLOW_END_REASON => Uint(r.end_reason as u64),
            _ => match sampling_value(f.id, r.sampling) {
                Some(v) => Uint(v),
                None => Uint(extra_value(f, r)),
            },
        }
    }

    fn write_aggregate_field(&mut self, f: &Ie, r: &AggregateRecord) {
        let out = &mut self.buf;
        match f.id {
            id::PROTOCOL_IDENTIFIER => put_uint(out, u64::from(r.protocol), f.len),
            id::SOURCE_TRANSPORT_PORT => put_uint(out, u64::from(r.src_port), f.len),
            id::DESTINATION_TRANSPORT_PORT => put_uint(out, u64::from(r.dst_port), f.len),
            id::PACKET_DELTA_COUNT => put_uint(out, r.packets, f.len),
            id::OCTET_DELTA_COUNT => put_uint(out, r.octets, f.len),
            id::DELTA_FLOW_COUNT => put_uint(out, r.flows, f.len),
            id::FLOW_START_MILLISECONDS => put_uint(out, r.first_ms, f.len),
            id::FLOW_END_MILLISECONDS => put_uint(out, r.last_ms, f.len),
            id::FIRST_SWITCHED => {
                let t = self.uptime(r.first_ms);
                put_uint(&mut self.buf, u64::from(t), f.len)
            }
            id::LAST_SWITCHED => {
                let t = self.uptime(r.last_ms);
                put_uint(&mut self.buf, u64::from(t), f.len)
            }
            id::SAMPLING_INTERVAL | id::SAMPLING_ALGORITHM => {
                self.write_sampling_field(f, r.sampling)
            }
            _ => unreachable_field(out, f),
        }
    }

    // ---- NetFlow v5 --------------------------------------------------------------------

    fn encode_v5(
        &mut self,
        records: &[FlowRecord],
        now_ms: u64,
        emit: &mut dyn FnMut(&Datagram<'_>),
    ) {
        for r in records {
            if r.key.ip_version != 4 {
                self.counters.unsupported.add(Unsupported::Ipv6InV5, 1);
                continue;
            }
            // The header's sampling covers every record, so a change starts a new datagram.
            if self.message_open
                && (self.message.data as usize == self.v5_max_records
                    || r.sampling != self.v5_sampling)
            {
                self.finish_v5(emit);
            }
            if !self.message_open {
                self.begin_v5(now_ms, r.sampling);
            }
            self.write_v5_record(r);
            self.message.data += 1;
        }
        self.finish_v5(emit);
    }

    fn begin_v5(&mut self, now_ms: u64, sampling: SamplingInfo) {
        self.buf.clear();
        self.message = MessageCounts::default();
        self.message_open = true;
        self.v5_sampling = sampling;
        let uptime = self.uptime_for_header(now_ms);
        let sampling_field = v5_sampling_field(sampling);
        if sampling_field != 0 && sampling.interval > 0x3fff {
            self.counters.clamped_fields += 1;
        }
        V5Header::append(
            &mut self.buf,
            V5Start {
                sys_uptime_ms: uptime,
                unix_secs: (now_ms / 1000) as u32,
                unix_nsecs: ((now_ms % 1000) * 1_000_000) as u32,
                engine_type: self.config.engine_type,
                engine_id: self.config.engine_id,
                sampling: sampling_field,
            },
        );
    }

    fn write_v5_record(&mut self, r: &FlowRecord) {
        let first = self.uptime(r.first_ms);
        let last = self.uptime(r.last_ms);
        let packets = self.clamp_u32(r.packets);
        let octets = self.clamp_u32(r.octets);
        let k = &r.key;
        let out = &mut self.buf;
        out.extend_from_slice(&k.src_addr[..4]);
        out.extend_from_slice(&k.dst_addr[..4]);
        put_u32(out, 0); // next hop: a probe routes nothing
        put_u16(out, k.input_port);
        put_u16(out, 0); // output interface
        put_u32(out, packets);
        put_u32(out, octets);
        put_u32(out, first);
        put_u32(out, last);
        put_u16(out, k.src_port);
        put_u16(out, k.dst_port);
        out.push(0); // pad1
        out.push(r.tcp_flags);
        out.push(k.protocol);
        out.push(k.tos);
        put_u16(out, 0); // src AS
        put_u16(out, 0); // dst AS
        out.push(0); // src mask
        out.push(0); // dst mask
        put_u16(out, 0); // pad2
    }

    fn clamp_u32(&mut self, value: u64) -> u32 {
        u32::try_from(value).unwrap_or_else(|_| {
            self.counters.clamped_fields += 1;
            u32::MAX
        })
    }

    fn finish_v5(&mut self, emit: &mut dyn FnMut(&Datagram<'_>)) {
        if !self.message_open {
            return;
        }
        self.message_open = false;
        let count = self.message.data;
        // Flow sequence: flows sent before this datagram's first.
        let sequence = self.counters.flow_records as u32;
        let mut header = V5Header::new(&mut self.buf[..]);
        header.set_count(count as u16);
        header.set_flow_sequence(sequence);
        self.counters.flow_records += u64::from(count);
        self.emit_buffer(count, 0, 0, true, emit);
    }
}

/// NetFlow's boot instant for a session started at `start_ms`: the whole second one to two
/// seconds before it. Whole, so that v9's header (whole seconds) can state it exactly; before
/// the first packet, so no record has FIRST_SWITCHED 0, which nfdump takes for "unset" and
/// shows as 1970.
fn netflow_boot_ms(start_ms: u64) -> u64 {
    (start_ms / 1000).saturating_sub(1) * 1000
}

/// Smallest MTU a version and its templates work with: a header plus the template bundle,
/// and a header plus one set holding the largest record.
fn minimum_mtu(version: ExportVersion, templates: &TemplateSet) -> usize {
    let pad = |len: usize| {
        if version == ExportVersion::V9 {
            len.div_ceil(4) * 4
        } else {
            len
        }
    };
    match version {
        ExportVersion::V5 => V5_HEADER_LEN + V5_RECORD_LEN,
        ExportVersion::V9 | ExportVersion::Ipfix => {
            let header = if version == ExportVersion::V9 {
                V9_HEADER_LEN
            } else {
                IPFIX_HEADER_LEN
            };
            let template_set = SET_HEADER_LEN
                + templates
                    .data_templates()
                    .iter()
                    .map(|(_, f)| 4 + f.iter().map(field_specifier_len).sum::<usize>())
                    .sum::<usize>();
            let options_sets = templates
                .options_templates()
                .map(|t| pad(SET_HEADER_LEN + 6 + 4 * (t.scope.len() + t.fields.len())))
                .sum::<usize>();
            let sampling_sets = templates
                .sampling_templates()
                .map(|t| pad(SET_HEADER_LEN + t.record_len()))
                .sum::<usize>();
            let bundle = pad(template_set) + options_sets + sampling_sets;
            let largest_record = templates
                .data_templates()
                .iter()
                .map(|(_, f)| ie::max_record_len(f))
                .chain(templates.options_templates().map(|t| t.record_len()))
                .max()
                .unwrap_or(0);
            (header + bundle).max(header + pad(SET_HEADER_LEN + largest_record))
        }
    }
}

/// Bytes of one field specifier in a template: 8 with an enterprise number.
fn field_specifier_len(f: &Ie) -> usize {
    if f.pen == 0 { 4 } else { 8 }
}

/// The value of an extension section's element (`ie::extra`); 0 when the record has no
/// such section or no such figure (an RTT without a sample).
fn extra_value(f: &Ie, r: &FlowRecord) -> u64 {
    use ie::extra::*;
    let extras = r.extras.as_deref();
    let reverse = extras.and_then(|e| e.reverse);
    let tcp = extras.and_then(|e| e.tcp);
    let rev = |get: fn(&flowcache::ReverseCounters) -> u64| reverse.as_ref().map_or(0, get);
    let seconds = |us: Option<u32>| us.map_or(0, |us| u64::from(us / 1_000_000));
    let residual_us = |us: Option<u32>| us.map_or(0, |us| u64::from(us % 1_000_000));
    let latency = |get: fn(&flowcache::TcpKpis) -> Option<u32>| tcp.as_ref().and_then(get);
    let dns = extras.and_then(|e| e.dns.as_ref());
    if f.pen == 0 && f.id > NTOP_V9_BASE {
        return match f.id - NTOP_V9_BASE {
            CLIENT_NW_DELAY_SEC => seconds(latency(|t| t.rtt_client_us)),
            CLIENT_NW_DELAY_USEC => residual_us(latency(|t| t.rtt_client_us)),
            SERVER_NW_DELAY_SEC => seconds(latency(|t| t.rtt_server_us)),
            SERVER_NW_DELAY_USEC => residual_us(latency(|t| t.rtt_server_us)),
            APPL_LATENCY_SEC => seconds(latency(|t| t.app_latency_us)),
            APPL_LATENCY_USEC => residual_us(latency(|t| t.app_latency_us)),
            DNS_QUERY_TYPE => dns.map_or(0, |d| u64::from(d.qtype)),
            DNS_RET_CODE => dns.and_then(|d| d.rcode).map_or(0, u64::from),
            DNS_NUM_ANSWERS => dns.and_then(|d| d.answers).map_or(0, u64::from),
            _ => unknown_extra(f),
        };
    }
    match (f.pen, f.id) {
        (0, BIFLOW_DIRECTION) => u64::from(reverse.is_some()),
        (0, V9_OUT_PKTS) | (REVERSE_PEN, id::PACKET_DELTA_COUNT) => rev(|r| r.packets),
        (0, V9_OUT_BYTES) | (REVERSE_PEN, id::OCTET_DELTA_COUNT) => rev(|r| r.octets),
        (REVERSE_PEN, id::FLOW_START_MILLISECONDS) => rev(|r| r.first_ms),
        (REVERSE_PEN, id::FLOW_END_MILLISECONDS) => rev(|r| r.last_ms),
        (REVERSE_PEN, id::TCP_CONTROL_BITS) => rev(|r| u64::from(r.tcp_flags)),
        (REVERSE_PEN, id::MINIMUM_TTL) => rev(|r| u64::from(r.min_ttl)),
        (REVERSE_PEN, id::MAXIMUM_TTL) => rev(|r| u64::from(r.max_ttl)),
        (TAPFLOW_PEN, TCP_OUTCOME) => tcp.map_or(0, |t| t.outcome as u64),
        (TAPFLOW_PEN, RTT_SERVER_US) => latency(|t| t.rtt_server_us).map_or(0, u64::from),
        (TAPFLOW_PEN, RTT_CLIENT_US) => latency(|t| t.rtt_client_us).map_or(0, u64::from),
        (TAPFLOW_PEN, APP_LATENCY_US) => latency(|t| t.app_latency_us).map_or(0, u64::from),
        (TAPFLOW_PEN, DNS_QUERY_TYPE_ID) => dns.map_or(0, |d| u64::from(d.qtype)),
        (TAPFLOW_PEN, DNS_RESPONSE_CODE) => dns.and_then(|d| d.rcode).map_or(0, u64::from),
        (TAPFLOW_PEN, DNS_ANSWER_COUNT) => dns.and_then(|d| d.answers).map_or(0, u64::from),
        (TAPFLOW_PEN, DNS_LATENCY_US) => dns.and_then(|d| d.latency_us).map_or(0, u64::from),
        (TAPFLOW_PEN, element) => {
            let Some(t) = tcp else { return 0 };
            let d = if element & REVERSE_BIT != 0 {
                t.reverse
            } else {
                t.forward
            };
            match element & !REVERSE_BIT {
                RTT_MIN_US => d.rtt_min_us.map_or(0, u64::from),
                RTT_MEAN_US => d.rtt_mean_us.map_or(0, u64::from),
                RTT_MAX_US => d.rtt_max_us.map_or(0, u64::from),
                RETRANS_PACKETS => u64::from(d.retrans_packets),
                RETRANS_OCTETS => d.retrans_octets,
                OUT_OF_ORDER_PACKETS => u64::from(d.out_of_order_packets),
                ZERO_WINDOW_EVENTS => u64::from(d.zero_window_events),
                SYN_RETRANSMITS => u64::from(d.syn_retransmits),
                _ => unknown_extra(f),
            }
        }
        _ => unknown_extra(f),
    }
}

/// The record's DNS transaction, if an analyzer attached one.
#[inline]
fn dns_of(r: &FlowRecord) -> Option<&flowcache::DnsTransaction> {
    r.extras.as_deref()?.dns.as_ref()
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn cut_to(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Writes `value` at `at` as a variable-length field (RFC 7011 §7: the length in one
/// octet below 255, else 255 and the length in two); returns where the next field
/// starts. The caller reserved [`ie::variable_len`] bytes.
fn put_variable_at(buf: &mut [u8], at: usize, value: &[u8]) -> usize {
    let mut at = at;
    if value.len() < 255 {
        buf[at] = value.len() as u8;
        at += 1;
    } else {
        buf[at] = 255;
        buf[at + 1..at + 3].copy_from_slice(&(value.len() as u16).to_be_bytes());
        at += 3;
    }
    buf[at..at + value.len()].copy_from_slice(value);
    at + value.len()
}

/// A template holds an element no encoder knows: a programming error caught by the tests;
/// in release the field is zero-filled so the record keeps its length.
fn unknown_extra(f: &Ie) -> u64 {
    debug_assert!(false, "no encoder for {f:?}");
    0
}

/// samplingAlgorithm / SAMPLING_ALGORITHM code: 1 deterministic, 2 random. Hash-based
/// selection has no code of its own there and, being pseudo-random per flow, is reported as
/// 2 so that collectors scale by its interval; IPFIX also says what it is with
/// selectorAlgorithm ([`selector_algorithm_code`]). Unsampled is 0 (with interval 1).
pub fn sampling_algorithm_code(a: SamplingAlgorithm) -> u8 {
    match a {
        SamplingAlgorithm::None => 0,
        SamplingAlgorithm::Deterministic => 1,
        SamplingAlgorithm::Random | SamplingAlgorithm::Hash => 2,
    }
}

/// selectorAlgorithm (RFC 5475 §6, IANA "Packet Sampling/Selection Algorithm"): 1
/// systematic count-based (also unsampled: every packet, 1 in 1), 4 uniform probabilistic
/// (random 1-in-N), 6 hash-based filtering (`hash:N` keeps the packets whose flow key hashes
/// into 1/N of the hash range: whole flows, selected independently of their size).
pub fn selector_algorithm_code(a: SamplingAlgorithm) -> u16 {
    match a {
        SamplingAlgorithm::None | SamplingAlgorithm::Deterministic => 1,
        SamplingAlgorithm::Random => 4,
        SamplingAlgorithm::Hash => 6,
    }
}

/// The v5 header's sampling field: mode in the top 2 bits (1 deterministic, 2 random),
/// interval in the low 14 (clamped to 16383). Unsampled is 0.
pub fn v5_sampling_field(s: SamplingInfo) -> u16 {
    if s.algorithm == SamplingAlgorithm::None || s.interval <= 1 {
        return 0;
    }
    let mode = u16::from(sampling_algorithm_code(s.algorithm)) << 14;
    mode | s.interval.min(0x3fff) as u16
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// An unsigned value in `len` bytes, network order; saturates when it does not fit
/// (reduced-size encoding, RFC 7011 §6.2).
/// A flow field's value, before it is laid out in its record.
enum FieldValue<'a> {
    /// Big-endian in the field's size, saturated.
    Uint(u64),
    /// Copied as is (addresses).
    Bytes(&'a [u8]),
}

/// The value of a sampling element, for flow records and the sampling options record.
fn sampling_value(element: u16, sampling: SamplingInfo) -> Option<u64> {
    Some(match element {
        id::SAMPLING_INTERVAL => u64::from(sampling.interval),
        id::SAMPLING_ALGORITHM => u64::from(sampling_algorithm_code(sampling.algorithm)),
        id::SAMPLING_PACKET_INTERVAL => 1,
        id::SAMPLING_PACKET_SPACE => u64::from(sampling.interval.max(1) - 1),
        id::SELECTOR_ALGORITHM => u64::from(selector_algorithm_code(sampling.algorithm)),
        _ => return None,
    })
}

/// Writes `value` big-endian into all of `slot`, saturated to what it holds (a slot wider
/// than 8 bytes gets leading zeros).
#[inline]
fn put_uint_into(slot: &mut [u8], value: u64) {
    // Whole-array stores for the usual sizes: written as slice copies, the arms fold into
    // one memcpy call of run-time length.
    if let Ok(bytes) = <&mut [u8; 8]>::try_from(&mut *slot) {
        *bytes = value.to_be_bytes();
    } else if let Ok(bytes) = <&mut [u8; 4]>::try_from(&mut *slot) {
        *bytes = (value.min(0xffff_ffff) as u32).to_be_bytes();
    } else if let Ok(bytes) = <&mut [u8; 2]>::try_from(&mut *slot) {
        *bytes = (value.min(0xffff) as u16).to_be_bytes();
    } else if let [byte] = slot {
        *byte = value.min(0xff) as u8;
    } else if slot.len() > 8 {
        let n = slot.len();
        slot[..n - 8].fill(0);
        slot[n - 8..].copy_from_slice(&value.to_be_bytes());
    } else {
        let n = slot.len();
        let max = (1u64 << (8 * n)) - 1;
        slot.copy_from_slice(&value.min(max).to_be_bytes()[8 - n..]);
    }
}

#[inline]
fn put_uint(out: &mut Vec<u8>, value: u64, len: u16) {
    // The usual sizes as fixed-size writes: a slice of run-time length costs a memcpy call
    // per field, and a record has about twenty.
    match len {
        1 => return out.push(value.min(0xff) as u8),
        2 => return out.extend_from_slice(&(value.min(0xffff) as u16).to_be_bytes()),
        4 => return out.extend_from_slice(&(value.min(0xffff_ffff) as u32).to_be_bytes()),
        8 => return out.extend_from_slice(&value.to_be_bytes()),
        _ => {}
    }
    let len = usize::from(len).min(8);
    let max = if len == 8 {
        u64::MAX
    } else {
        (1u64 << (8 * len)) - 1
    };
    let bytes = value.min(max).to_be_bytes();
    out.extend_from_slice(&bytes[8 - len..]);
}

/// A template holds an element its encoder has no value for: a programming error caught by
/// the tests; in release the field is zero-filled so the record keeps its length.
fn unreachable_field(out: &mut Vec<u8>, f: &Ie) {
    debug_assert!(false, "no encoder for {f:?}");
    out.resize(out.len() + usize::from(f.len), 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_parses_and_prints() {
        for v in [ExportVersion::V5, ExportVersion::V9, ExportVersion::Ipfix] {
            assert_eq!(v.to_string().parse::<ExportVersion>(), Ok(v));
        }
        assert_eq!("IPFIX".parse::<ExportVersion>(), Ok(ExportVersion::Ipfix));
        let err = "v10".parse::<ExportVersion>().unwrap_err();
        assert!(err.to_string().contains("v10"));
    }

    #[test]
    fn put_uint_saturates_in_reduced_sizes() {
        let mut out = Vec::new();
        put_uint(&mut out, 0x1_0000, 2);
        put_uint(&mut out, 0x0102, 2);
        put_uint(&mut out, 7, 1);
        put_uint(&mut out, 0x0102_0304_0506_0708, 8);
        assert_eq!(out, [0xff, 0xff, 0x01, 0x02, 7, 1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn put_uint_into_agrees_with_put_uint_in_every_size() {
        for len in 0..=8u16 {
            for value in [0, 1, 0xff, 0x100, 0xffff, 0x1_0000, 0x0102_0304, u64::MAX] {
                let mut pushed = Vec::new();
                put_uint(&mut pushed, value, len);
                let mut slot = vec![0xaa; usize::from(len)];
                put_uint_into(&mut slot, value);
                assert_eq!(slot, pushed, "{value:#x} in {len} bytes");
            }
        }
        let mut wide = [0xaa; 10];
        put_uint_into(&mut wide, 0x0102);
        assert_eq!(wide, [0, 0, 0, 0, 0, 0, 0, 0, 1, 2]);
    }

    #[test]
    fn v5_sampling_field_packs_mode_and_interval() {
        let s = |algorithm, interval| SamplingInfo {
            algorithm,
            interval,
        };
        assert_eq!(v5_sampling_field(SamplingInfo::default()), 0);
        assert_eq!(
            v5_sampling_field(s(SamplingAlgorithm::Deterministic, 100)),
            0x4000 | 100
        );
        assert_eq!(
            v5_sampling_field(s(SamplingAlgorithm::Random, 10)),
            0x8000 | 10
        );
        assert_eq!(
            v5_sampling_field(s(SamplingAlgorithm::Random, 1_000_000)),
            0x8000 | 0x3fff
        );
    }

    #[test]
    fn netflow_boot_is_a_whole_second_one_to_two_seconds_before_the_start() {
        // A flow at the capture's first instant must not get FIRST_SWITCHED 0 (issue 20).
        for start in [1_700_000_000_000, 1_700_000_000_001, 1_700_000_000_999] {
            let boot = netflow_boot_ms(start);
            assert_eq!(boot % 1000, 0);
            assert!(
                start - boot >= 1000 && start - boot < 2000,
                "{start} -> {boot}"
            );
        }
        assert_eq!(netflow_boot_ms(0), 0);
    }

    #[test]
    fn selector_algorithm_says_what_the_sampler_is() {
        assert_eq!(selector_algorithm_code(SamplingAlgorithm::None), 1);
        assert_eq!(selector_algorithm_code(SamplingAlgorithm::Deterministic), 1);
        assert_eq!(selector_algorithm_code(SamplingAlgorithm::Random), 4);
        assert_eq!(selector_algorithm_code(SamplingAlgorithm::Hash), 6);
    }

    fn udp_record(src_port: u16, dns: Option<flowcache::DnsTransaction>) -> FlowRecord {
        let mut key = flowcache::FlowKey {
            src_port,
            dst_port: 53,
            protocol: 17,
            ip_version: 4,
            ..flowcache::FlowKey::default()
        };
        key.src_addr[..4].copy_from_slice(&[10, 0, 0, 1]);
        key.dst_addr[..4].copy_from_slice(&[10, 0, 0, 53]);
        FlowRecord {
            key,
            packets: 1,
            octets: 60,
            first_ms: 1_700_000_000_000,
            last_ms: 1_700_000_000_000,
            min_ttl: 64,
            max_ttl: 64,
            extras: dns.map(|dns| {
                Box::new(flowcache::RecordExtras {
                    dns: Some(dns),
                    ..Default::default()
                })
            }),
            ..FlowRecord::default()
        }
    }

    /// The data sets of IPFIX (or v9) messages: (set id, set body).
    fn data_sets(datagrams: &[Vec<u8>]) -> Vec<(u16, Vec<u8>)> {
        let mut sets = Vec::new();
        for d in datagrams {
            let header = if d[1] == 9 {
                V9_HEADER_LEN
            } else {
                IPFIX_HEADER_LEN
            };
            let mut at = header;
            while at < d.len() {
                let id = u16::from_be_bytes([d[at], d[at + 1]]);
                let len = usize::from(u16::from_be_bytes([d[at + 2], d[at + 3]]));
                if id >= 256 {
                    sets.push((id, d[at + 4..at + len].to_vec()));
                }
                at += len;
            }
        }
        sets
    }

    fn encode(
        version: ExportVersion,
        extras: ie::ExtraSections,
        records: &[FlowRecord],
    ) -> Vec<Vec<u8>> {
        let config = SessionConfig {
            version,
            extras,
            ..SessionConfig::default()
        };
        let mut session = ExportSession::new(config, 1_700_000_000_000).unwrap();
        let mut out = Vec::new();
        session.encode_flows(records, 1_700_000_001_000, &mut |d| {
            out.push(d.bytes.to_vec())
        });
        out
    }

    #[test]
    fn dns_transactions_go_out_in_their_own_templates_and_other_records_do_not_grow() {
        let dns = ie::ExtraSections {
            dns: true,
            ..ie::ExtraSections::default()
        };
        let long_name = "a".repeat(300);
        let transaction = flowcache::DnsTransaction {
            qname: "www.example.org".into(),
            qtype: 28,
            rcode: Some(3),
            answers: Some(2),
            latency_us: Some(1_234),
        };
        let records = [
            udp_record(1000, None),
            udp_record(1001, Some(transaction.clone())),
            udp_record(1002, None),
            udp_record(
                1003,
                Some(flowcache::DnsTransaction {
                    qname: long_name.clone(),
                    qtype: 1,
                    ..Default::default()
                }),
            ),
        ];
        let plain_len = record_len(without_sampling_v4());
        let sets = data_sets(&encode(ExportVersion::Ipfix, dns, &records));
        let ids: Vec<u16> = sets.iter().map(|(id, _)| *id).collect();
        let transaction_v4 = ie::DnsShape::Transaction.template_id(false);
        let query_v4 = ie::DnsShape::Query.template_id(false);
        assert_eq!(ids, [256, transaction_v4, 256, query_v4]);
        // Records without DNS are exactly as long as in a session without the section.
        assert_eq!(sets[0].1.len(), plain_len);
        assert_eq!(sets[2].1.len(), plain_len);
        let without = data_sets(&encode(
            ExportVersion::Ipfix,
            ie::ExtraSections::default(),
            &records,
        ));
        assert_eq!(without.len(), 1);
        let (id, without) = &without[0];
        assert_eq!((*id, without.len()), (256, 4 * plain_len));
        assert_eq!(without[..plain_len], sets[0].1);
        // The flow fields, then a one-octet length and the name, type, rcode, answers,
        // latency.
        let body = &sets[1].1;
        assert_eq!(body[..plain_len], without[plain_len..2 * plain_len]);
        let mut tail = Vec::from([15u8]);
        tail.extend_from_slice(b"www.example.org");
        tail.extend_from_slice(&[0, 28, 3, 0, 2]);
        tail.extend_from_slice(&1_234u32.to_be_bytes());
        assert_eq!(body[plain_len..], tail[..]);
        // A long name is cut to 255 octets: 255, then the length in two octets. A query
        // has name and type only.
        let body = &sets[3].1;
        assert_eq!(body[plain_len..plain_len + 3], [255, 0, 255]);
        assert_eq!(
            &body[plain_len + 3..plain_len + 258],
            &long_name.as_bytes()[..255]
        );
        assert_eq!(body[plain_len + 258..], [0, 1]);

        // v9: a 128-octet name (cut, or padded with zeros), type, rcode, answers; no
        // latency, so the transaction goes out as a response; sets padded to 4 octets.
        let sets = data_sets(&encode(ExportVersion::V9, dns, &records));
        let ids: Vec<u16> = sets.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [256, transaction_v4, 256, query_v4]);
        let plain_len = record_len(ie::flow_templates(false, false).0);
        let padded = |len: usize| (4 + len).div_ceil(4) * 4 - 4;
        assert_eq!(sets[0].1.len(), padded(plain_len));
        let body = &sets[1].1;
        assert_eq!(body.len(), padded(plain_len + 128 + 5));
        let mut name = b"www.example.org".to_vec();
        name.resize(128, 0);
        assert_eq!(body[plain_len..plain_len + 128], name[..]);
        assert_eq!(body[plain_len + 128..plain_len + 133], [0, 28, 3, 0, 2]);
        let body = &sets[3].1;
        assert_eq!(
            body[plain_len..plain_len + 128],
            long_name.as_bytes()[..128]
        );
        assert_eq!(body[plain_len + 128..plain_len + 130], [0, 1]);
    }

    fn without_sampling_v4() -> &'static [Ie] {
        ie::flow_templates(true, false).0
    }

    #[test]
    fn variable_length_values_take_one_or_three_octets_of_length() {
        assert_eq!(ie::variable_len(0), 1);
        assert_eq!(ie::variable_len(254), 255);
        assert_eq!(ie::variable_len(255), 258);
        let mut buf = vec![0; 300];
        assert_eq!(put_variable_at(&mut buf, 0, b"abc"), 4);
        assert_eq!(buf[..4], *b"\x03abc");
        assert_eq!(cut_to("aé", 2), "a");
        assert_eq!(cut_to("abc", 5), "abc");
    }

    #[test]
    fn mtu_limits_are_errors_not_panics() {
        for version in [ExportVersion::V5, ExportVersion::V9, ExportVersion::Ipfix] {
            let config = SessionConfig {
                version,
                mtu: 60,
                ..SessionConfig::default()
            };
            let err = ExportSession::new(config, 0).unwrap_err();
            assert!(matches!(err, ConfigError::MtuTooSmall { .. }), "{err}");
            let config = SessionConfig {
                version,
                mtu: 70_000,
                ..SessionConfig::default()
            };
            assert!(ExportSession::new(config, 0).is_err());
        }
    }
}
