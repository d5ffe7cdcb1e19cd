//! Information elements and templates, declared once as data.
//!
//! Every field tapflow exports is an [`Ie`]: an IANA IPFIX information element id (enterprise
//! 0) and the length it is encoded with. NetFlow v9 field type numbers equal the IPFIX ids
//! for every element used here (RFC 3954 §8 vs the IANA IPFIX registry), so one table serves
//! both; where the two protocols differ (v9 has no flowStart/EndMilliseconds and uses
//! sysUptime-relative FIRST_SWITCHED/LAST_SWITCHED; v9's INPUT_SNMP and TCP_FLAGS default to
//! 2 and 1 bytes) the templates below pick per version.
//!
//! A template is a slice of `Ie`s. The same slice writes the template record and drives
//! the record encoder (`session.rs`), so the two cannot disagree.
//!
//! Flow templates end with the two sampling fields; a session that does not put sampling
//! into every record uses the template without its last [`SAMPLING_FIELDS`] elements.

/// One information element: enterprise number and id, encoded length in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ie {
    /// IANA private enterprise number; 0 for IANA's own elements. Only the extension
    /// sections (biflow, TCP KPIs) of IPFIX templates use others (see [`extra`]).
    pub pen: u32,
    pub id: u16,
    pub len: u16,
    pub name: &'static str,
}

const fn ie(id: u16, len: u16, name: &'static str) -> Ie {
    Ie {
        pen: 0,
        id,
        len,
        name,
    }
}

/// IANA IPFIX element ids (and NetFlow v9 field types, which are equal for these).
pub mod id {
    pub const OCTET_DELTA_COUNT: u16 = 1;
    pub const PACKET_DELTA_COUNT: u16 = 2;
    pub const DELTA_FLOW_COUNT: u16 = 3;
    pub const PROTOCOL_IDENTIFIER: u16 = 4;
    pub const IP_CLASS_OF_SERVICE: u16 = 5;
    pub const TCP_CONTROL_BITS: u16 = 6;
    pub const SOURCE_TRANSPORT_PORT: u16 = 7;
    pub const SOURCE_IPV4_ADDRESS: u16 = 8;
    pub const INGRESS_INTERFACE: u16 = 10;
    pub const DESTINATION_TRANSPORT_PORT: u16 = 11;
    pub const DESTINATION_IPV4_ADDRESS: u16 = 12;
    /// v9 LAST_SWITCHED / IPFIX flowEndSysUpTime: sysUptime ms of the last packet.
    pub const LAST_SWITCHED: u16 = 21;
    /// v9 FIRST_SWITCHED / IPFIX flowStartSysUpTime: sysUptime ms of the first packet.
    pub const FIRST_SWITCHED: u16 = 22;
    pub const SOURCE_IPV6_ADDRESS: u16 = 27;
    pub const DESTINATION_IPV6_ADDRESS: u16 = 28;
    pub const ICMP_TYPE_CODE_IPV4: u16 = 32;
    pub const ICMP_TYPE_CODE_IPV6: u16 = 139;
    pub const SAMPLING_INTERVAL: u16 = 34;
    pub const SAMPLING_ALGORITHM: u16 = 35;
    /// exportedOctetTotalCount (v9 TOTAL_BYTES_EXP).
    pub const EXPORTED_OCTET_TOTAL_COUNT: u16 = 40;
    /// exportedMessageTotalCount (v9 TOTAL_PKTS_EXP).
    pub const EXPORTED_MESSAGE_TOTAL_COUNT: u16 = 41;
    /// exportedFlowRecordTotalCount (v9 TOTAL_FLOWS_EXP).
    pub const EXPORTED_FLOW_RECORD_TOTAL_COUNT: u16 = 42;
    pub const MINIMUM_TTL: u16 = 52;
    pub const MAXIMUM_TTL: u16 = 53;
    pub const VLAN_ID: u16 = 58;
    pub const FLOW_END_REASON: u16 = 136;
    pub const OBSERVATION_DOMAIN_ID: u16 = 149;
    pub const FLOW_START_MILLISECONDS: u16 = 152;
    pub const FLOW_END_MILLISECONDS: u16 = 153;
    pub const NOT_SENT_FLOW_TOTAL_COUNT: u16 = 166;
    pub const SAMPLING_PACKET_INTERVAL: u16 = 305;
    pub const SAMPLING_PACKET_SPACE: u16 = 306;
    pub const SELECTOR_ALGORITHM: u16 = 304;
    pub const OBSERVATION_TIME_MILLISECONDS: u16 = 323;
}

/// NetFlow v9 options scope field types (RFC 3954 §6.2): a namespace of its own.
pub mod v9_scope {
    pub const SYSTEM: u16 = 1;
}

pub const OCTET_DELTA_COUNT: Ie = ie(id::OCTET_DELTA_COUNT, 8, "octetDeltaCount");
pub const PACKET_DELTA_COUNT: Ie = ie(id::PACKET_DELTA_COUNT, 8, "packetDeltaCount");
pub const DELTA_FLOW_COUNT: Ie = ie(id::DELTA_FLOW_COUNT, 8, "deltaFlowCount");
pub const PROTOCOL_IDENTIFIER: Ie = ie(id::PROTOCOL_IDENTIFIER, 1, "protocolIdentifier");
pub const IP_CLASS_OF_SERVICE: Ie = ie(id::IP_CLASS_OF_SERVICE, 1, "ipClassOfService");
/// IPFIX tcpControlBits is unsigned16 (RFC 7125); the upper byte carries NS/reserved bits.
pub const TCP_CONTROL_BITS: Ie = ie(id::TCP_CONTROL_BITS, 2, "tcpControlBits");
/// NetFlow v9 TCP_FLAGS is one byte.
pub const TCP_FLAGS_V9: Ie = ie(id::TCP_CONTROL_BITS, 1, "TCP_FLAGS");
pub const SOURCE_TRANSPORT_PORT: Ie = ie(id::SOURCE_TRANSPORT_PORT, 2, "sourceTransportPort");
pub const SOURCE_IPV4_ADDRESS: Ie = ie(id::SOURCE_IPV4_ADDRESS, 4, "sourceIPv4Address");
/// IPFIX ingressInterface is unsigned32.
pub const INGRESS_INTERFACE: Ie = ie(id::INGRESS_INTERFACE, 4, "ingressInterface");
/// NetFlow v9 INPUT_SNMP, default length 2.
pub const INPUT_SNMP_V9: Ie = ie(id::INGRESS_INTERFACE, 2, "INPUT_SNMP");
pub const DESTINATION_TRANSPORT_PORT: Ie = ie(
    id::DESTINATION_TRANSPORT_PORT,
    2,
    "destinationTransportPort",
);
pub const DESTINATION_IPV4_ADDRESS: Ie =
    ie(id::DESTINATION_IPV4_ADDRESS, 4, "destinationIPv4Address");
pub const FIRST_SWITCHED: Ie = ie(id::FIRST_SWITCHED, 4, "FIRST_SWITCHED");
pub const LAST_SWITCHED: Ie = ie(id::LAST_SWITCHED, 4, "LAST_SWITCHED");
pub const SOURCE_IPV6_ADDRESS: Ie = ie(id::SOURCE_IPV6_ADDRESS, 16, "sourceIPv6Address");
pub const DESTINATION_IPV6_ADDRESS: Ie =
    ie(id::DESTINATION_IPV6_ADDRESS, 16, "destinationIPv6Address");
pub const SAMPLING_INTERVAL: Ie = ie(id::SAMPLING_INTERVAL, 4, "samplingInterval");
/// dateTimeMilliseconds (RFC 7012): in a sampling options record, when the interval it
/// reports took effect (adaptive sampling).
pub const OBSERVATION_TIME_MILLISECONDS: Ie = ie(
    id::OBSERVATION_TIME_MILLISECONDS,
    8,
    "observationTimeMilliseconds",
);
pub const SAMPLING_ALGORITHM: Ie = ie(id::SAMPLING_ALGORITHM, 1, "samplingAlgorithm");
pub const EXPORTED_OCTET_TOTAL_COUNT: Ie =
    ie(id::EXPORTED_OCTET_TOTAL_COUNT, 8, "exportedOctetTotalCount");
pub const EXPORTED_MESSAGE_TOTAL_COUNT: Ie = ie(
    id::EXPORTED_MESSAGE_TOTAL_COUNT,
    8,
    "exportedMessageTotalCount",
);
pub const EXPORTED_FLOW_RECORD_TOTAL_COUNT: Ie = ie(
    id::EXPORTED_FLOW_RECORD_TOTAL_COUNT,
    8,
    "exportedFlowRecordTotalCount",
);
/// ICMP and ICMPv6 type << 8 | code: v9's ICMP_TYPE (32) serves both IP versions. nfdump's
/// v9 decoder takes ICMP type and code only from this element, not from the destination
/// port as its IPFIX decoder does.
pub const ICMP_TYPE_V9: Ie = ie(id::ICMP_TYPE_CODE_IPV4, 2, "ICMP_TYPE");
/// IPFIX ICMP type << 8 | code, for collectors that read it rather than the destination
/// port (which carries the same value, as NetFlow always did).
pub const ICMP_TYPE_CODE_IPV4: Ie = ie(id::ICMP_TYPE_CODE_IPV4, 2, "icmpTypeCodeIPv4");
pub const ICMP_TYPE_CODE_IPV6: Ie = ie(id::ICMP_TYPE_CODE_IPV6, 2, "icmpTypeCodeIPv6");
pub const MINIMUM_TTL: Ie = ie(id::MINIMUM_TTL, 1, "minimumTTL");
pub const MAXIMUM_TTL: Ie = ie(id::MAXIMUM_TTL, 1, "maximumTTL");
pub const VLAN_ID: Ie = ie(id::VLAN_ID, 2, "vlanId");
pub const FLOW_END_REASON: Ie = ie(id::FLOW_END_REASON, 1, "flowEndReason");
pub const OBSERVATION_DOMAIN_ID: Ie = ie(id::OBSERVATION_DOMAIN_ID, 4, "observationDomainId");
pub const FLOW_START_MILLISECONDS: Ie = ie(id::FLOW_START_MILLISECONDS, 8, "flowStartMilliseconds");
pub const FLOW_END_MILLISECONDS: Ie = ie(id::FLOW_END_MILLISECONDS, 8, "flowEndMilliseconds");
pub const NOT_SENT_FLOW_TOTAL_COUNT: Ie =
    ie(id::NOT_SENT_FLOW_TOTAL_COUNT, 8, "notSentFlowTotalCount");
/// Packets selected in a row (RFC 5477): always 1 here.
pub const SAMPLING_PACKET_INTERVAL: Ie =
    ie(id::SAMPLING_PACKET_INTERVAL, 4, "samplingPacketInterval");
/// Packets skipped between selections (RFC 5477): interval - 1.
pub const SAMPLING_PACKET_SPACE: Ie = ie(id::SAMPLING_PACKET_SPACE, 4, "samplingPacketSpace");
/// RFC 5475 selection algorithm (IANA "Packet Sampling / Selection Algorithm" registry):
/// says what the sampler really is, hash-based filtering included (see `session.rs`).
pub const SELECTOR_ALGORITHM: Ie = ie(id::SELECTOR_ALGORITHM, 2, "selectorAlgorithm");
/// v9 options scope "System", 4 bytes, carrying the source id.
pub const V9_SCOPE_SYSTEM: Ie = ie(v9_scope::SYSTEM, 4, "System");

/// An element's length that says "variable" (RFC 7011 §7): each value carries its own
/// length before it.
pub const VARIABLE_LENGTH: u16 = 0xffff;

/// Longest value written into a variable-length element; longer ones are cut (at a
/// character boundary). A query name is at most 255 octets on the wire, so only names
/// with escaped bytes (`\DDD`, four characters for one octet) can be longer; the bound
/// keeps the smallest MTU that fits a DNS record below the template bundle's.
pub const MAX_VARIABLE_OCTETS: usize = 255;

impl Ie {
    pub const fn is_variable(&self) -> bool {
        self.len == VARIABLE_LENGTH
    }
}

/// The extension sections a session's flow templates carry besides the flow fields: the
/// reverse direction of a biflow, the TCP KPIs and the DNS transaction
/// (`flowcache::RecordExtras`).
///
/// The biflow and KPI sections widen every flow record. The DNS section does not: a
/// record with a DNS transaction goes out in a template of its own (see [`DnsShape`]),
/// so records without one stay the size they were.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ExtraSections {
    pub reverse: bool,
    pub tcp: bool,
    pub dns: bool,
}

impl ExtraSections {
    pub fn any(self) -> bool {
        self.reverse || self.tcp || self.dns
    }

    /// Whether every flow record carries extension fields.
    pub fn widen_flow_records(self) -> bool {
        self.reverse || self.tcp
    }
}

/// What a record's DNS transaction holds, each with a template of its own, so that a
/// figure that was not seen is absent rather than a zero that reads as a value (rcode 0
/// is NOERROR).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DnsShape {
    /// A query without a response: name and type.
    Query = 0,
    /// A response whose query was not seen: also response code and answer count.
    Response = 1,
    /// A query and its response: also the latency.
    Transaction = 2,
}

impl DnsShape {
    pub const ALL: [DnsShape; 3] = [DnsShape::Query, DnsShape::Response, DnsShape::Transaction];

    pub fn of(dns: &flowcache::DnsTransaction) -> DnsShape {
        match (dns.rcode.is_some(), dns.latency_us.is_some()) {
            (false, _) => DnsShape::Query,
            (true, false) => DnsShape::Response,
            (true, true) => DnsShape::Transaction,
        }
    }

    /// The elements of this shape's DNS section. v9 has no latency element: a
    /// transaction goes out as a response there.
    pub fn fields(self, ipfix: bool) -> &'static [Ie] {
        let all = if ipfix {
            extra::IPFIX_DNS
        } else {
            extra::V9_DNS
        };
        match self {
            DnsShape::Query => &all[..2],
            DnsShape::Response => &all[..4],
            DnsShape::Transaction => all,
        }
    }

    /// The template id of this shape's records of one IP version.
    pub const fn template_id(self, ipv6: bool) -> u16 {
        template_id::DNS_FLOWS + 2 * self as u16 + ipv6 as u16
    }
}

/// Elements of the extension sections (docs/IPFIX.md lists them all, with units).
///
/// IPFIX: the reverse direction in RFC 5103 reverse elements (enterprise 29305, the
/// forward element's id) and biflowDirection; the KPIs in tapflow's own elements under
/// enterprise 32473, whose reverse (the responder's direction) sets bit 14 of the id (RFC
/// 5103 §6.2). nProbe's latency elements are not used in IPFIX: nfdump's IPFIX decoder
/// reads no ntop element, and Wireshark reads ntop ids 82-87 as throughputs.
///
/// NetFlow v9 has no enterprise numbers: it carries the reverse packets and octets in
/// OUT_PKTS/OUT_BYTES (24/23) and the handshake latencies in nProbe's v9 field types
/// 57554-57559 (seconds plus residual microseconds), which nfdump reads for
/// `%cl %sl %al`, and the DNS fields in nProbe's DNS field types (a fixed-length name),
/// which Wireshark reads; the rest does not fit v9.
///
/// The DNS transaction is IPFIX elements 32473/20-24, the name a variable-length string.
pub mod extra {
    use super::Ie;

    /// RFC 5103 reverse information elements.
    pub const REVERSE_PEN: u32 = 29305;
    /// tapflow's elements. 32473 is the number IANA reserves for documentation (RFC
    /// 5612): tapflow has no enterprise number of its own, and a documentation number
    /// cannot collide with a real vendor's elements.
    pub const TAPFLOW_PEN: u32 = 32473;
    /// RFC 5103 §6.2: the reverse of an enterprise-specific element.
    pub const REVERSE_BIT: u16 = 0x4000;
    /// nProbe's v9 field types are its ntop element ids plus this.
    pub const NTOP_V9_BASE: u16 = 57472;

    /// IANA biflowDirection (239): 1, the source is the initiator.
    pub const BIFLOW_DIRECTION: u16 = 239;
    /// v9 OUT_BYTES / OUT_PKTS.
    pub const V9_OUT_BYTES: u16 = 23;
    pub const V9_OUT_PKTS: u16 = 24;

    /// nProbe's (ntop's) element ids; v9 field type = id + [`NTOP_V9_BASE`].
    pub const CLIENT_NW_DELAY_SEC: u16 = 82;
    pub const CLIENT_NW_DELAY_USEC: u16 = 83;
    pub const SERVER_NW_DELAY_SEC: u16 = 84;
    pub const SERVER_NW_DELAY_USEC: u16 = 85;
    pub const APPL_LATENCY_SEC: u16 = 86;
    pub const APPL_LATENCY_USEC: u16 = 87;
    pub const DNS_QUERY: u16 = 205;
    pub const DNS_QUERY_TYPE: u16 = 207;
    pub const DNS_RET_CODE: u16 = 208;
    pub const DNS_NUM_ANSWERS: u16 = 209;
    /// Octets of the fixed-length v9 query name: v9 has no variable-length encoding;
    /// longer names are cut, shorter ones padded with zeros.
    pub const V9_DNS_QUERY_LEN: u16 = 128;

    /// tapflow element ids (enterprise [`TAPFLOW_PEN`]).
    pub const TCP_OUTCOME: u16 = 1;
    pub const RTT_MIN_US: u16 = 2;
    pub const RTT_MEAN_US: u16 = 3;
    pub const RTT_MAX_US: u16 = 4;
    pub const RETRANS_PACKETS: u16 = 5;
    pub const RETRANS_OCTETS: u16 = 6;
    pub const OUT_OF_ORDER_PACKETS: u16 = 7;
    pub const ZERO_WINDOW_EVENTS: u16 = 8;
    pub const SYN_RETRANSMITS: u16 = 9;
    pub const RTT_SERVER_US: u16 = 10;
    pub const RTT_CLIENT_US: u16 = 11;
    pub const APP_LATENCY_US: u16 = 12;
    pub const DNS_QUERY_NAME: u16 = 20;
    pub const DNS_QUERY_TYPE_ID: u16 = 21;
    pub const DNS_RESPONSE_CODE: u16 = 22;
    pub const DNS_ANSWER_COUNT: u16 = 23;
    pub const DNS_LATENCY_US: u16 = 24;

    const fn pen(pen: u32, id: u16, len: u16, name: &'static str) -> Ie {
        Ie { pen, id, len, name }
    }

    const fn reverse_of(forward: Ie, name: &'static str) -> Ie {
        if forward.pen == 0 {
            pen(REVERSE_PEN, forward.id, forward.len, name)
        } else {
            pen(forward.pen, forward.id | REVERSE_BIT, forward.len, name)
        }
    }

    use super::{
        FLOW_END_MILLISECONDS, FLOW_START_MILLISECONDS, MAXIMUM_TTL, MINIMUM_TTL,
        OCTET_DELTA_COUNT, PACKET_DELTA_COUNT, TCP_CONTROL_BITS,
    };

    /// IPFIX biflow section.
    pub const IPFIX_REVERSE: &[Ie] = &[
        pen(0, BIFLOW_DIRECTION, 1, "biflowDirection"),
        reverse_of(PACKET_DELTA_COUNT, "reversePacketDeltaCount"),
        reverse_of(OCTET_DELTA_COUNT, "reverseOctetDeltaCount"),
        reverse_of(FLOW_START_MILLISECONDS, "reverseFlowStartMilliseconds"),
        reverse_of(FLOW_END_MILLISECONDS, "reverseFlowEndMilliseconds"),
        reverse_of(TCP_CONTROL_BITS, "reverseTcpControlBits"),
        reverse_of(MINIMUM_TTL, "reverseMinimumTTL"),
        reverse_of(MAXIMUM_TTL, "reverseMaximumTTL"),
    ];

    /// NetFlow v9 biflow section.
    pub const V9_REVERSE: &[Ie] = &[
        pen(0, V9_OUT_PKTS, 8, "OUT_PKTS"),
        pen(0, V9_OUT_BYTES, 8, "OUT_BYTES"),
    ];

    const fn ntop_v9(id: u16, name: &'static str) -> Ie {
        pen(0, NTOP_V9_BASE + id, 4, name)
    }

    const fn tapflow(id: u16, len: u16, name: &'static str) -> Ie {
        pen(TAPFLOW_PEN, id, len, name)
    }

    const RTT_MIN: Ie = tapflow(RTT_MIN_US, 4, "tcpRttMinMicroseconds");
    const RTT_MEAN: Ie = tapflow(RTT_MEAN_US, 4, "tcpRttMeanMicroseconds");
    const RTT_MAX: Ie = tapflow(RTT_MAX_US, 4, "tcpRttMaxMicroseconds");
    const RETRANS_PKTS: Ie = tapflow(RETRANS_PACKETS, 4, "tcpRetransmittedPackets");
    const RETRANS_BYTES: Ie = tapflow(RETRANS_OCTETS, 8, "tcpRetransmittedOctets");
    const OUT_OF_ORDER: Ie = tapflow(OUT_OF_ORDER_PACKETS, 4, "tcpOutOfOrderPackets");
    const ZERO_WINDOWS: Ie = tapflow(ZERO_WINDOW_EVENTS, 4, "tcpZeroWindowEvents");
    const SYN_RETRANS: Ie = tapflow(SYN_RETRANSMITS, 4, "tcpSynRetransmits");

    /// IPFIX TCP KPI section without the responder's direction.
    pub const IPFIX_TCP: &[Ie] = &[
        tapflow(RTT_SERVER_US, 4, "tcpServerRttMicroseconds"),
        tapflow(RTT_CLIENT_US, 4, "tcpClientRttMicroseconds"),
        tapflow(APP_LATENCY_US, 4, "tcpApplicationLatencyMicroseconds"),
        tapflow(TCP_OUTCOME, 1, "tcpOutcome"),
        RTT_MIN,
        RTT_MEAN,
        RTT_MAX,
        RETRANS_PKTS,
        RETRANS_BYTES,
        OUT_OF_ORDER,
        ZERO_WINDOWS,
        SYN_RETRANS,
    ];

    /// IPFIX TCP KPIs of a biflow's responder direction.
    pub const IPFIX_TCP_REVERSE: &[Ie] = &[
        reverse_of(RTT_MIN, "reverseTcpRttMinMicroseconds"),
        reverse_of(RTT_MEAN, "reverseTcpRttMeanMicroseconds"),
        reverse_of(RTT_MAX, "reverseTcpRttMaxMicroseconds"),
        reverse_of(RETRANS_PKTS, "reverseTcpRetransmittedPackets"),
        reverse_of(RETRANS_BYTES, "reverseTcpRetransmittedOctets"),
        reverse_of(OUT_OF_ORDER, "reverseTcpOutOfOrderPackets"),
        reverse_of(ZERO_WINDOWS, "reverseTcpZeroWindowEvents"),
        reverse_of(SYN_RETRANS, "reverseTcpSynRetransmits"),
    ];

    /// IPFIX DNS section, in the order [`super::DnsShape`] cuts it: what a query has,
    /// what a response adds, what matching them adds.
    pub const IPFIX_DNS: &[Ie] = &[
        tapflow(DNS_QUERY_NAME, super::VARIABLE_LENGTH, "dnsQueryName"),
        tapflow(DNS_QUERY_TYPE_ID, 2, "dnsQueryType"),
        tapflow(DNS_RESPONSE_CODE, 1, "dnsResponseCode"),
        tapflow(DNS_ANSWER_COUNT, 2, "dnsAnswerCount"),
        tapflow(DNS_LATENCY_US, 4, "dnsLatencyMicroseconds"),
    ];

    /// NetFlow v9 DNS section: nProbe's DNS fields (what Wireshark reads), cut as
    /// [`super::DnsShape`] cuts [`IPFIX_DNS`]; no latency.
    pub const V9_DNS: &[Ie] = &[
        pen(0, NTOP_V9_BASE + DNS_QUERY, V9_DNS_QUERY_LEN, "DNS_QUERY"),
        pen(0, NTOP_V9_BASE + DNS_QUERY_TYPE, 2, "DNS_QUERY_TYPE"),
        pen(0, NTOP_V9_BASE + DNS_RET_CODE, 1, "DNS_RET_CODE"),
        pen(0, NTOP_V9_BASE + DNS_NUM_ANSWERS, 2, "DNS_NUM_ANSWERS"),
    ];

    /// Whether `f` carries the query name as text (variable-length in IPFIX, fixed in v9).
    pub fn is_query_name(f: &Ie) -> bool {
        (f.pen, f.id) == (TAPFLOW_PEN, DNS_QUERY_NAME)
            || (f.pen, f.id) == (0, NTOP_V9_BASE + DNS_QUERY)
    }

    /// NetFlow v9 TCP KPI section: the latencies nfdump reads.
    pub const V9_TCP: &[Ie] = &[
        ntop_v9(CLIENT_NW_DELAY_SEC, "CLIENT_NW_DELAY_SEC"),
        ntop_v9(CLIENT_NW_DELAY_USEC, "CLIENT_NW_DELAY_USEC"),
        ntop_v9(SERVER_NW_DELAY_SEC, "SERVER_NW_DELAY_SEC"),
        ntop_v9(SERVER_NW_DELAY_USEC, "SERVER_NW_DELAY_USEC"),
        ntop_v9(APPL_LATENCY_SEC, "APPL_LATENCY_SEC"),
        ntop_v9(APPL_LATENCY_USEC, "APPL_LATENCY_USEC"),
    ];
}

/// A flow template with extension sections: the flow fields, the sections, then the
/// sampling fields when `sampled`.
fn extended_template(
    ipfix: bool,
    sampled: bool,
    ipv6: bool,
    sections: ExtraSections,
    dns: Option<DnsShape>,
) -> Vec<Ie> {
    let (v4, v6) = flow_templates(ipfix, false);
    let mut fields = if ipv6 { v6 } else { v4 }.to_vec();
    if sections.reverse {
        fields.extend_from_slice(if ipfix {
            extra::IPFIX_REVERSE
        } else {
            extra::V9_REVERSE
        });
    }
    if sections.tcp {
        fields.extend_from_slice(if ipfix {
            extra::IPFIX_TCP
        } else {
            extra::V9_TCP
        });
        if ipfix && sections.reverse {
            fields.extend_from_slice(extra::IPFIX_TCP_REVERSE);
        }
    }
    if let Some(shape) = dns {
        fields.extend_from_slice(shape.fields(ipfix));
    }
    if sampled {
        fields.extend_from_slice(&[SAMPLING_INTERVAL, SAMPLING_ALGORITHM]);
    }
    fields
}

/// Where a template sits in [`EXTENDED_TEMPLATES`]: one bit per flag, the DNS shape (or
/// none) in the top two.
fn extended_index(
    ipfix: bool,
    sampled: bool,
    ipv6: bool,
    sections: ExtraSections,
    dns: Option<DnsShape>,
) -> usize {
    usize::from(ipfix)
        | usize::from(sampled) << 1
        | usize::from(ipv6) << 2
        | usize::from(sections.reverse) << 3
        | usize::from(sections.tcp) << 4
        | dns.map_or(0, |shape| shape as usize + 1) << 5
}

/// Every extended flow template, built once.
static EXTENDED_TEMPLATES: std::sync::LazyLock<Vec<Vec<Ie>>> = std::sync::LazyLock::new(|| {
    let mut all = vec![Vec::new(); 4 << 5];
    for bits in 0..1 << 5 {
        let (ipfix, sampled, ipv6) = (bits & 1 != 0, bits & 2 != 0, bits & 4 != 0);
        let sections = ExtraSections {
            reverse: bits & 8 != 0,
            tcp: bits & 16 != 0,
            dns: false,
        };
        for dns in [None].into_iter().chain(DnsShape::ALL.map(Some)) {
            all[extended_index(ipfix, sampled, ipv6, sections, dns)] =
                extended_template(ipfix, sampled, ipv6, sections, dns);
        }
    }
    all
});

fn extended(
    ipfix: bool,
    sampled: bool,
    ipv6: bool,
    sections: ExtraSections,
    dns: Option<DnsShape>,
) -> &'static [Ie] {
    EXTENDED_TEMPLATES[extended_index(ipfix, sampled, ipv6, sections, dns)].as_slice()
}

/// How many trailing elements of a flow template are the optional sampling fields.
pub const SAMPLING_FIELDS: usize = 2;

/// Template ids (RFC 7011 §3.4.1 / RFC 3954 §5.2: data templates are numbered from 256).
pub mod template_id {
    pub const IPV4_FLOW: u16 = 256;
    pub const IPV6_FLOW: u16 = 257;
    pub const PROTOCOL_PORT_AGGREGATE: u16 = 258;
    pub const SAMPLING_OPTIONS: u16 = 259;
    pub const EXPORTER_STATISTICS_OPTIONS: u16 = 260;
    pub const SELECTOR_OPTIONS: u16 = 261;
    /// The first of the DNS flow templates, 262 to 267: IPv4 and IPv6 of each
    /// [`super::DnsShape`] (`DnsShape::template_id`).
    pub const DNS_FLOWS: u16 = 262;
}

/// An options template: scope fields, then the other fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionsTemplate {
    pub id: u16,
    pub scope: &'static [Ie],
    pub fields: &'static [Ie],
}

impl OptionsTemplate {
    /// Length of one options data record.
    pub fn record_len(&self) -> usize {
        record_len(self.scope) + record_len(self.fields)
    }
}

/// Length of one data record of `fields`, without the values of variable-length
/// elements (their length prefixes included).
pub const fn record_len(fields: &[Ie]) -> usize {
    let mut total = 0;
    let mut i = 0;
    while i < fields.len() {
        if !fields[i].is_variable() {
            total += fields[i].len as usize;
        }
        i += 1;
    }
    total
}

/// Bytes a variable-length value of `len` octets takes with its length prefix (RFC 7011
/// §7: one octet below 255, else 255 and two octets).
pub const fn variable_len(len: usize) -> usize {
    if len < 255 { 1 + len } else { 3 + len }
}

/// Length of the largest data record of `fields`.
pub const fn max_record_len(fields: &[Ie]) -> usize {
    let mut total = record_len(fields);
    let mut i = 0;
    while i < fields.len() {
        if fields[i].is_variable() {
            total += variable_len(MAX_VARIABLE_OCTETS);
        }
        i += 1;
    }
    total
}

/// IPFIX IPv4 flow template (id 256).
pub const IPFIX_IPV4_FLOW: &[Ie] = &[
    SOURCE_IPV4_ADDRESS,
    DESTINATION_IPV4_ADDRESS,
    SOURCE_TRANSPORT_PORT,
    DESTINATION_TRANSPORT_PORT,
    ICMP_TYPE_CODE_IPV4,
    PROTOCOL_IDENTIFIER,
    IP_CLASS_OF_SERVICE,
    TCP_CONTROL_BITS,
    PACKET_DELTA_COUNT,
    OCTET_DELTA_COUNT,
    FLOW_START_MILLISECONDS,
    FLOW_END_MILLISECONDS,
    INGRESS_INTERFACE,
    VLAN_ID,
    MINIMUM_TTL,
    MAXIMUM_TTL,
    FLOW_END_REASON,
    SAMPLING_INTERVAL,
    SAMPLING_ALGORITHM,
];

/// IPFIX IPv6 flow template (id 257).
pub const IPFIX_IPV6_FLOW: &[Ie] = &[
    SOURCE_IPV6_ADDRESS,
    DESTINATION_IPV6_ADDRESS,
    SOURCE_TRANSPORT_PORT,
    DESTINATION_TRANSPORT_PORT,
    ICMP_TYPE_CODE_IPV6,
    PROTOCOL_IDENTIFIER,
    IP_CLASS_OF_SERVICE,
    TCP_CONTROL_BITS,
    PACKET_DELTA_COUNT,
    OCTET_DELTA_COUNT,
    FLOW_START_MILLISECONDS,
    FLOW_END_MILLISECONDS,
    INGRESS_INTERFACE,
    VLAN_ID,
    MINIMUM_TTL,
    MAXIMUM_TTL,
    FLOW_END_REASON,
    SAMPLING_INTERVAL,
    SAMPLING_ALGORITHM,
];

/// IPFIX protocol-port aggregate template (id 258).
pub const IPFIX_AGGREGATE: &[Ie] = &[
    PROTOCOL_IDENTIFIER,
    SOURCE_TRANSPORT_PORT,
    DESTINATION_TRANSPORT_PORT,
    PACKET_DELTA_COUNT,
    OCTET_DELTA_COUNT,
    DELTA_FLOW_COUNT,
    FLOW_START_MILLISECONDS,
    FLOW_END_MILLISECONDS,
    SAMPLING_INTERVAL,
    SAMPLING_ALGORITHM,
];

/// NetFlow v9 IPv4 flow template (id 256).
pub const V9_IPV4_FLOW: &[Ie] = &[
    SOURCE_IPV4_ADDRESS,
    DESTINATION_IPV4_ADDRESS,
    SOURCE_TRANSPORT_PORT,
    DESTINATION_TRANSPORT_PORT,
    ICMP_TYPE_V9,
    PROTOCOL_IDENTIFIER,
    IP_CLASS_OF_SERVICE,
    TCP_FLAGS_V9,
    PACKET_DELTA_COUNT,
    OCTET_DELTA_COUNT,
    FIRST_SWITCHED,
    LAST_SWITCHED,
    INPUT_SNMP_V9,
    VLAN_ID,
    MINIMUM_TTL,
    MAXIMUM_TTL,
    FLOW_END_REASON,
    SAMPLING_INTERVAL,
    SAMPLING_ALGORITHM,
];

/// NetFlow v9 IPv6 flow template (id 257).
pub const V9_IPV6_FLOW: &[Ie] = &[
    SOURCE_IPV6_ADDRESS,
    DESTINATION_IPV6_ADDRESS,
    SOURCE_TRANSPORT_PORT,
    DESTINATION_TRANSPORT_PORT,
    ICMP_TYPE_V9,
    PROTOCOL_IDENTIFIER,
    IP_CLASS_OF_SERVICE,
    TCP_FLAGS_V9,
    PACKET_DELTA_COUNT,
    OCTET_DELTA_COUNT,
    FIRST_SWITCHED,
    LAST_SWITCHED,
    INPUT_SNMP_V9,
    VLAN_ID,
    MINIMUM_TTL,
    MAXIMUM_TTL,
    FLOW_END_REASON,
    SAMPLING_INTERVAL,
    SAMPLING_ALGORITHM,
];

/// NetFlow v9 protocol-port aggregate template (id 258).
pub const V9_AGGREGATE: &[Ie] = &[
    PROTOCOL_IDENTIFIER,
    SOURCE_TRANSPORT_PORT,
    DESTINATION_TRANSPORT_PORT,
    PACKET_DELTA_COUNT,
    OCTET_DELTA_COUNT,
    DELTA_FLOW_COUNT,
    FIRST_SWITCHED,
    LAST_SWITCHED,
    SAMPLING_INTERVAL,
    SAMPLING_ALGORITHM,
];

/// IPFIX sampling options (id 259), scoped to the observation domain. Both notations:
/// samplingInterval/samplingAlgorithm (34/35, deprecated but what most collectors read) and
/// samplingPacketInterval/samplingPacketSpace (305/306, RFC 5477), which is what nfdump 1.7.1
/// (Debian 12) applies; it ignores 34/35 without a selector id. The order is what lets every
/// collector read the same interval: nfdump maps 34 and 306 onto one slot and FastNetMon 1.2
/// maps 34 and 305 onto one, the later field winning in both, so 305 comes first, 306 last.
pub const IPFIX_SAMPLING_OPTIONS: OptionsTemplate = OptionsTemplate {
    id: template_id::SAMPLING_OPTIONS,
    scope: &[OBSERVATION_DOMAIN_ID],
    fields: SAMPLING_OPTION_FIELDS,
};

const SAMPLING_OPTION_FIELDS: &[Ie] = &[
    SAMPLING_PACKET_INTERVAL,
    SAMPLING_INTERVAL,
    SAMPLING_ALGORITHM,
    SAMPLING_PACKET_SPACE,
];

/// The sampling options fields with observationTimeMilliseconds (323) last: when the
/// interval took effect. Sent only with adaptive sampling, whose interval changes; the
/// other fields keep their order, so a collector reads the interval as before.
const TIMED_SAMPLING_OPTION_FIELDS: &[Ie] = &[
    SAMPLING_PACKET_INTERVAL,
    SAMPLING_INTERVAL,
    SAMPLING_ALGORITHM,
    SAMPLING_PACKET_SPACE,
    OBSERVATION_TIME_MILLISECONDS,
];

/// IPFIX selector options (id 261): selectorAlgorithm (304, RFC 5475) says what the sampler
/// is, which samplingAlgorithm (35: deterministic or random) cannot, e.g. hash-based
/// filtering for `hash:N`. A template of its own: nfdump 1.7.1 maps 304 and 35 onto one
/// slot and, with 304 in the sampling template, applies no sampling at all.
pub const IPFIX_SELECTOR_OPTIONS: OptionsTemplate = OptionsTemplate {
    id: template_id::SELECTOR_OPTIONS,
    scope: &[OBSERVATION_DOMAIN_ID],
    fields: &[SELECTOR_ALGORITHM],
};

/// IPFIX exporter statistics options (id 260), after RFC 7011 §4.3.
pub const IPFIX_STATISTICS_OPTIONS: OptionsTemplate = OptionsTemplate {
    id: template_id::EXPORTER_STATISTICS_OPTIONS,
    scope: &[OBSERVATION_DOMAIN_ID],
    fields: &[
        EXPORTED_MESSAGE_TOTAL_COUNT,
        EXPORTED_FLOW_RECORD_TOTAL_COUNT,
        EXPORTED_OCTET_TOTAL_COUNT,
        NOT_SENT_FLOW_TOTAL_COUNT,
    ],
};

/// NetFlow v9 sampling options (id 259), scope System: IPFIX's fields in the same order.
/// v9 gets no selector options: RFC 3954 does not define selectorAlgorithm.
pub const V9_SAMPLING_OPTIONS: OptionsTemplate = OptionsTemplate {
    id: template_id::SAMPLING_OPTIONS,
    scope: &[V9_SCOPE_SYSTEM],
    fields: SAMPLING_OPTION_FIELDS,
};

/// NetFlow v9 exporter statistics options (id 260), scope System.
pub const V9_STATISTICS_OPTIONS: OptionsTemplate = OptionsTemplate {
    id: template_id::EXPORTER_STATISTICS_OPTIONS,
    scope: &[V9_SCOPE_SYSTEM],
    fields: &[
        EXPORTED_MESSAGE_TOTAL_COUNT,
        EXPORTED_FLOW_RECORD_TOTAL_COUNT,
        EXPORTED_OCTET_TOTAL_COUNT,
        NOT_SENT_FLOW_TOTAL_COUNT,
    ],
};

/// A flow template without its trailing sampling fields.
const fn without_sampling(template: &'static [Ie]) -> &'static [Ie] {
    template.split_at(template.len() - SAMPLING_FIELDS).0
}

/// The IPv4 and IPv6 flow templates of a session: IPFIX or v9, with or without the
/// sampling fields in every record. Inlined where the flags are constants, it hands the
/// record encoder a constant field list, which the compiler unrolls into fixed stores
/// (see `ExportSession::encode_flow_records`).
#[inline(always)]
pub(crate) const fn flow_templates(ipfix: bool, sampled: bool) -> (&'static [Ie], &'static [Ie]) {
    match (ipfix, sampled) {
        (true, true) => (IPFIX_IPV4_FLOW, IPFIX_IPV6_FLOW),
        (true, false) => (
            without_sampling(IPFIX_IPV4_FLOW),
            without_sampling(IPFIX_IPV6_FLOW),
        ),
        (false, true) => (V9_IPV4_FLOW, V9_IPV6_FLOW),
        (false, false) => (
            without_sampling(V9_IPV4_FLOW),
            without_sampling(V9_IPV6_FLOW),
        ),
    }
}

/// The templates one session announces.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TemplateSet {
    pub ipv4: &'static [Ie],
    pub ipv6: &'static [Ie],
    /// IPFIX with the DNS section: the templates of records with a DNS transaction, by
    /// [`DnsShape`], IPv4 then IPv6 (template ids in the same order from
    /// [`template_id::DNS_FLOWS`]).
    pub dns: Option<[&'static [Ie]; 6]>,
    pub aggregate: &'static [Ie],
    pub sampling: OptionsTemplate,
    pub statistics: OptionsTemplate,
    /// IPFIX only: sent with every sampling record.
    pub selector: Option<OptionsTemplate>,
}

impl TemplateSet {
    pub fn new(ipfix: bool, sampling_in_records: bool, sections: ExtraSections) -> TemplateSet {
        let (aggregate, sampling, statistics) = if ipfix {
            (
                IPFIX_AGGREGATE,
                IPFIX_SAMPLING_OPTIONS,
                IPFIX_STATISTICS_OPTIONS,
            )
        } else {
            (V9_AGGREGATE, V9_SAMPLING_OPTIONS, V9_STATISTICS_OPTIONS)
        };
        // The flow templates come from the same function the record encoder uses, so the
        // templates announced and the records written cannot disagree.
        let (ipv4, ipv6) = if sections.widen_flow_records() {
            (
                extended(ipfix, sampling_in_records, false, sections, None),
                extended(ipfix, sampling_in_records, true, sections, None),
            )
        } else {
            flow_templates(ipfix, sampling_in_records)
        };
        let dns = sections.dns.then(|| {
            let mut templates = [ipv4; 6];
            for shape in DnsShape::ALL {
                for ipv6 in [false, true] {
                    let at = usize::from(shape.template_id(ipv6) - template_id::DNS_FLOWS);
                    templates[at] =
                        extended(ipfix, sampling_in_records, ipv6, sections, Some(shape));
                }
            }
            templates
        });
        TemplateSet {
            ipv4,
            ipv6,
            dns,
            aggregate: if sampling_in_records {
                aggregate
            } else {
                without_sampling(aggregate)
            },
            sampling,
            statistics,
            selector: ipfix.then_some(IPFIX_SELECTOR_OPTIONS),
        }
    }

    /// The same set, with the time each sampling interval took effect in the sampling
    /// options (adaptive sampling).
    pub fn with_sampling_time(mut self) -> TemplateSet {
        self.sampling.fields = TIMED_SAMPLING_OPTION_FIELDS;
        self
    }

    pub fn data_templates(&self) -> Vec<(u16, &'static [Ie])> {
        let mut all = vec![
            (template_id::IPV4_FLOW, self.ipv4),
            (template_id::IPV6_FLOW, self.ipv6),
            (template_id::PROTOCOL_PORT_AGGREGATE, self.aggregate),
        ];
        if let Some(dns) = self.dns {
            all.extend((template_id::DNS_FLOWS..).zip(dns));
        }
        all
    }

    /// The template of a record with a DNS transaction of `shape`: its id and fields.
    pub fn dns_template(&self, shape: DnsShape, ipv6: bool) -> Option<(u16, &'static [Ie])> {
        let id = shape.template_id(ipv6);
        Some((id, self.dns?[usize::from(id - template_id::DNS_FLOWS)]))
    }

    /// The options templates whose records say how packets were selected.
    pub fn sampling_templates(&self) -> impl Iterator<Item = OptionsTemplate> + use<> {
        [Some(self.sampling), self.selector].into_iter().flatten()
    }

    pub fn options_templates(&self) -> impl Iterator<Item = OptionsTemplate> + use<> {
        [Some(self.sampling), Some(self.statistics), self.selector]
            .into_iter()
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_templates_drop_exactly_the_sampling_tail() {
        for ipfix in [true, false] {
            let (v4, v6) = if ipfix {
                (IPFIX_IPV4_FLOW, IPFIX_IPV6_FLOW)
            } else {
                (V9_IPV4_FLOW, V9_IPV6_FLOW)
            };
            assert_eq!(flow_templates(ipfix, true), (v4, v6));
            let (u4, u6) = flow_templates(ipfix, false);
            assert_eq!(u4, &v4[..v4.len() - SAMPLING_FIELDS]);
            assert_eq!(u6, &v6[..v6.len() - SAMPLING_FIELDS]);
            for sampled in [true, false] {
                let set = TemplateSet::new(ipfix, sampled, ExtraSections::default());
                assert_eq!((set.ipv4, set.ipv6), flow_templates(ipfix, sampled));
            }
        }
    }

    #[test]
    fn extended_templates_add_their_sections_between_flow_and_sampling_fields() {
        let all = ExtraSections {
            reverse: true,
            tcp: true,
            dns: false,
        };
        for ipfix in [true, false] {
            for sampled in [true, false] {
                let plain = TemplateSet::new(ipfix, sampled, ExtraSections::default());
                let set = TemplateSet::new(ipfix, sampled, all);
                for (base, extended) in [(plain.ipv4, set.ipv4), (plain.ipv6, set.ipv6)] {
                    let flow_fields = base.len() - if sampled { SAMPLING_FIELDS } else { 0 };
                    assert_eq!(extended[..flow_fields], base[..flow_fields]);
                    assert_eq!(
                        extended[extended.len() - (base.len() - flow_fields)..],
                        base[flow_fields..]
                    );
                    assert!(extended.len() > base.len());
                    // v9 has no enterprise numbers; IPFIX enterprise ids leave the top bit
                    // to the template's enterprise flag.
                    for f in extended {
                        assert!(ipfix || f.pen == 0, "{f:?}");
                        assert!(f.pen == 0 || f.id & 0x8000 == 0, "{f:?}");
                    }
                    let mut ids: Vec<(u32, u16)> = extended.iter().map(|f| (f.pen, f.id)).collect();
                    ids.sort_unstable();
                    ids.dedup();
                    assert_eq!(ids.len(), extended.len(), "an element twice");
                }
            }
        }
        // The responder's KPIs are the initiator's with bit 14 set, same enterprise.
        for (forward, reverse) in extra::IPFIX_TCP[4..].iter().zip(extra::IPFIX_TCP_REVERSE) {
            assert_eq!(reverse.pen, forward.pen);
            assert_eq!(reverse.id, forward.id | extra::REVERSE_BIT);
            assert_eq!(reverse.len, forward.len);
        }
    }

    #[test]
    fn dns_templates_are_the_flow_template_with_the_dns_section_before_sampling() {
        for sections in [
            ExtraSections::default(),
            ExtraSections {
                reverse: true,
                tcp: true,
                dns: false,
            },
        ] {
            for sampled in [true, false] {
                let with_dns = ExtraSections {
                    dns: true,
                    ..sections
                };
                let plain = TemplateSet::new(true, sampled, sections);
                let set = TemplateSet::new(true, sampled, with_dns);
                // Records without a transaction keep their templates.
                assert_eq!((set.ipv4, set.ipv6), (plain.ipv4, plain.ipv6));
                assert_eq!(set.data_templates().len(), 3 + 6);
                let tail = if sampled { SAMPLING_FIELDS } else { 0 };
                for shape in DnsShape::ALL {
                    for (ipv6, base) in [(false, plain.ipv4), (true, plain.ipv6)] {
                        let (id, fields) = set.dns_template(shape, ipv6).unwrap();
                        assert!((262..=267).contains(&id));
                        let flow = base.len() - tail;
                        assert_eq!(fields[..flow], base[..flow]);
                        assert_eq!(&fields[flow..fields.len() - tail], shape.fields(true));
                        assert_eq!(fields[fields.len() - tail..], base[flow..]);
                    }
                }
                // v9 has no latency element.
                let v9 = TemplateSet::new(false, sampled, with_dns);
                for ipv6 in [false, true] {
                    let response = v9.dns_template(DnsShape::Response, ipv6).unwrap().1;
                    let transaction = v9.dns_template(DnsShape::Transaction, ipv6).unwrap().1;
                    assert_eq!(response, transaction);
                    assert!(response.iter().all(|f| f.pen == 0));
                }
            }
        }
        let ids: std::collections::HashSet<u16> = DnsShape::ALL
            .iter()
            .flat_map(|s| [s.template_id(false), s.template_id(true)])
            .collect();
        assert_eq!(ids.len(), 6);
        assert_eq!(max_record_len(extra::IPFIX_DNS), 2 + 1 + 2 + 4 + 3 + 255);
    }

    #[test]
    fn the_element_file_for_collectors_describes_every_tapflow_element() {
        let xml = include_str!("../../docs/tapflow-ipfix.xml");
        let records: Vec<(&str, u16, &str)> = xml
            .split("<record>")
            .skip(1)
            .map(|r| {
                let tag = |t: &str| {
                    let open = format!("<{t}>");
                    let from = r.find(&open).unwrap() + open.len();
                    &r[from..from + r[from..].find('<').unwrap()]
                };
                assert_eq!(tag("cert:enterpriseId"), "32473");
                (
                    tag("name"),
                    tag("elementId").parse().unwrap(),
                    tag("dataType"),
                )
            })
            .collect();
        let ours: Vec<&Ie> = extra::IPFIX_TCP.iter().chain(extra::IPFIX_DNS).collect();
        assert_eq!(records.len(), ours.len());
        for f in ours {
            let (_, _, data_type) = records
                .iter()
                .find(|(name, id, _)| *name == f.name && *id == f.id)
                .unwrap_or_else(|| panic!("{f:?} is not in docs/tapflow-ipfix.xml"));
            let expected = match f.len {
                VARIABLE_LENGTH => "string",
                1 => "unsigned8",
                2 => "unsigned16",
                4 => "unsigned32",
                _ => "unsigned64",
            };
            assert_eq!(*data_type, expected, "{f:?}");
        }
    }

    #[test]
    fn sampling_fields_are_the_tail_of_every_flow_template() {
        for t in [
            IPFIX_IPV4_FLOW,
            IPFIX_IPV6_FLOW,
            IPFIX_AGGREGATE,
            V9_IPV4_FLOW,
            V9_IPV6_FLOW,
            V9_AGGREGATE,
        ] {
            let tail = &t[t.len() - SAMPLING_FIELDS..];
            assert_eq!(tail, &[SAMPLING_INTERVAL, SAMPLING_ALGORITHM]);
        }
    }

    #[test]
    fn record_lengths_match_the_field_sums_by_hand() {
        // 4+4+2+2+2(ICMP)+1+1+2+8+8+8+8+4+2+1+1+1 = 59, + 4 + 1 sampling = 64
        assert_eq!(record_len(IPFIX_IPV4_FLOW), 64);
        // 16+16+2+2+2+1+1+2+8+8+8+8+4+2+1+1+1 = 83, + 5 = 88
        assert_eq!(record_len(IPFIX_IPV6_FLOW), 88);
        // 4+4+2+2+2(ICMP_TYPE)+1+1+1+8+8+4+4+2+2+1+1+1 = 48, + 5 = 53
        assert_eq!(record_len(V9_IPV4_FLOW), 53);
        // 1+2+2+8+8+8+8+8 = 45, + 5 = 50
        assert_eq!(record_len(IPFIX_AGGREGATE), 50);
        // 1+2+2+8+8+8+4+4 = 37, + 5 = 42
        assert_eq!(record_len(V9_AGGREGATE), 42);
        assert_eq!(IPFIX_STATISTICS_OPTIONS.record_len(), 4 + 32);
        assert_eq!(V9_SAMPLING_OPTIONS.record_len(), 4 + 4 + 4 + 1 + 4);
        assert_eq!(IPFIX_SAMPLING_OPTIONS.record_len(), 4 + 4 + 4 + 1 + 4);
        assert_eq!(IPFIX_SELECTOR_OPTIONS.record_len(), 4 + 2);
    }

    #[test]
    fn v9_and_ipfix_templates_differ_only_where_the_protocols_do() {
        for (v9, ipfix) in [
            (V9_IPV4_FLOW, IPFIX_IPV4_FLOW),
            (V9_IPV6_FLOW, IPFIX_IPV6_FLOW),
            (V9_AGGREGATE, IPFIX_AGGREGATE),
        ] {
            assert_eq!(v9.len(), ipfix.len());
            for (a, b) in v9.iter().zip(ipfix) {
                // v9's ICMP_TYPE serves both IP versions; IPFIX has one element for each.
                let allowed = matches!(
                    (a.id, b.id),
                    (id::FIRST_SWITCHED, id::FLOW_START_MILLISECONDS)
                        | (id::LAST_SWITCHED, id::FLOW_END_MILLISECONDS)
                        | (id::ICMP_TYPE_CODE_IPV4, id::ICMP_TYPE_CODE_IPV4)
                        | (id::ICMP_TYPE_CODE_IPV4, id::ICMP_TYPE_CODE_IPV6)
                ) || (a.id == b.id
                    && matches!(a.id, id::TCP_CONTROL_BITS | id::INGRESS_INTERFACE));
                assert!(a == b || allowed, "{a:?} vs {b:?}");
            }
        }
    }
}
