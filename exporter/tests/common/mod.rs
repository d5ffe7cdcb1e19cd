//! Test helpers: record builders and an independent decoder built on `netflow_parser`.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use exporter::{Datagram, ExportSession, ExportVersion, SessionConfig};
use flowcache::{AggregateRecord, EndReason, FlowKey, FlowRecord, SamplingAlgorithm, SamplingInfo};
use netflow_parser::static_versions::v5::V5;
use netflow_parser::variable_versions::ipfix::{self, IPFix};
use netflow_parser::variable_versions::v9::{self, ScopeDataField, V9};
use netflow_parser::{FieldValue, NetflowPacket, NetflowParser};

/// Boot time of the sessions under test: 2023-11-14T22:13:20Z.
pub const START_MS: u64 = 1_700_000_000_000;

pub fn flow_v4(i: u32) -> FlowRecord {
    let mut key = FlowKey::default();
    key.set_addrs(
        Ipv4Addr::from(0x0a00_0000 + i).into(),
        Ipv4Addr::new(192, 0, 2, (i % 250) as u8 + 1).into(),
    );
    key.src_port = 1024 + (i % 60_000) as u16;
    key.dst_port = 443;
    key.protocol = 6;
    key.tos = 0x28;
    key.vlan = 100 + (i % 7) as u16;
    key.input_port = (i % 4) as u16;
    FlowRecord {
        key,
        packets: 10 + u64::from(i),
        octets: 1500 * (10 + u64::from(i)),
        first_ms: START_MS + 1_000 + u64::from(i),
        last_ms: START_MS + 9_000 + 2 * u64::from(i),
        tcp_flags: 0x1b,
        min_ttl: 60,
        max_ttl: 64,
        end_reason: EndReason::EndOfFlow,
        sampling: SamplingInfo::default(),
        label: 0,
        extras: None,
    }
}

pub fn flow_v6(i: u32) -> FlowRecord {
    let mut r = flow_v4(i);
    r.key.set_addrs(
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i as u16 + 1).into(),
        Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0x53).into(),
    );
    r.key.protocol = 17;
    r.key.dst_port = 53;
    r.tcp_flags = 0;
    r.end_reason = EndReason::Idle;
    r
}

pub fn aggregate(i: u32) -> AggregateRecord {
    AggregateRecord {
        protocol: if i.is_multiple_of(2) { 6 } else { 17 },
        src_port: 0,
        dst_port: 80 + i as u16,
        flows: 3 + u64::from(i),
        packets: 100 + u64::from(i),
        octets: 64_000 + u64::from(i),
        first_ms: START_MS + 60_000,
        last_ms: START_MS + 119_999,
        sampling: SamplingInfo::default(),
    }
}

pub fn sampled(mut r: FlowRecord, algorithm: SamplingAlgorithm, interval: u32) -> FlowRecord {
    r.sampling = SamplingInfo {
        algorithm,
        interval,
    };
    r
}

pub fn session(version: ExportVersion) -> ExportSession {
    ExportSession::new(
        SessionConfig {
            version,
            observation_domain_id: 42,
            ..SessionConfig::default()
        },
        START_MS,
    )
    .unwrap()
}

/// Every datagram an encoder call emits, copied out.
pub fn collect(f: impl FnOnce(&mut dyn FnMut(&Datagram<'_>))) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    f(&mut |d: &Datagram<'_>| out.push(d.bytes.to_vec()));
    out
}

/// A decoded field value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Value {
    Num(u64),
    Addr(IpAddr),
}

pub fn num(v: u64) -> Value {
    Value::Num(v)
}

pub fn addr(a: IpAddr) -> Value {
    Value::Addr(a)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub template_id: u16,
    pub options: bool,
    pub fields: BTreeMap<u16, Value>,
}

impl Record {
    /// A flow record's addresses, ports and protocol, with its packets and octets.
    #[allow(clippy::type_complexity)]
    pub fn five_tuple_and_counts(&self) -> ((IpAddr, IpAddr, u16, u16, u8), (u64, u64)) {
        let num = |id: u16| match self.fields.get(&id) {
            Some(Value::Num(n)) => *n,
            other => panic!("field {id}: {other:?} in {self:?}"),
        };
        let addr = |v4: u16, v6: u16| match self.fields.get(&v4).or(self.fields.get(&v6)) {
            Some(Value::Addr(a)) => *a,
            other => panic!("address field {v4}/{v6}: {other:?}"),
        };
        (
            (
                addr(8, 27),
                addr(12, 28),
                num(7) as u16,
                num(11) as u16,
                num(4) as u8,
            ),
            (num(2), num(1)),
        )
    }
}

/// One decoded v9 or IPFIX message.
#[derive(Clone, Debug, Default)]
pub struct Message {
    pub version: u16,
    /// v9: count; IPFIX: length.
    pub count_or_length: u16,
    pub sys_uptime: u32,
    pub unix_secs: u32,
    pub sequence: u32,
    pub domain: u32,
    pub templates: Vec<u16>,
    pub options_templates: Vec<u16>,
    pub records: Vec<Record>,
}

impl Message {
    pub fn data(&self) -> impl Iterator<Item = &Record> {
        self.records.iter().filter(|r| !r.options)
    }

    pub fn options(&self) -> impl Iterator<Item = &Record> {
        self.records.iter().filter(|r| r.options)
    }
}

/// Decodes a stream of messages with `netflow_parser`, keeping its template cache.
#[derive(Default)]
pub struct Decoder {
    parser: NetflowParser,
    /// IPFIX template id -> element ids in order (the parser's record pairs follow it).
    ipfix_fields: HashMap<u16, Vec<u16>>,
}

impl Decoder {
    fn parse_one(&mut self, bytes: &[u8]) -> NetflowPacket {
        let result = self.parser.parse_bytes(bytes);
        assert!(result.error.is_none(), "parse error: {:?}", result.error);
        assert_eq!(result.packets.len(), 1, "one message per datagram");
        result.packets.into_iter().next().unwrap()
    }

    pub fn v5(&mut self, bytes: &[u8]) -> V5 {
        match self.parse_one(bytes) {
            NetflowPacket::V5(v5) => v5,
            other => panic!("expected v5, got {other:?}"),
        }
    }

    pub fn message(&mut self, bytes: &[u8]) -> Message {
        match self.parse_one(bytes) {
            NetflowPacket::V9(v9) => decode_v9(v9),
            NetflowPacket::IPFix(ipfix) => self.decode_ipfix(ipfix),
            other => panic!("expected v9 or IPFIX, got {other:?}"),
        }
    }

    fn decode_ipfix(&mut self, m: IPFix) -> Message {
        let mut out = Message {
            version: m.header.version,
            count_or_length: m.header.length,
            unix_secs: m.header.export_time,
            sequence: m.header.sequence_number,
            domain: m.header.observation_domain_id,
            ..Message::default()
        };
        for set in m.flowsets {
            let template_id = set.header.header_id;
            match set.body {
                ipfix::FlowSetBody::Template(t) => self.ipfix_template(&mut out, t),
                ipfix::FlowSetBody::Templates(ts) => {
                    for t in ts {
                        self.ipfix_template(&mut out, t)
                    }
                }
                ipfix::FlowSetBody::OptionsTemplate(t) => self.ipfix_options_template(&mut out, t),
                ipfix::FlowSetBody::OptionsTemplates(ts) => {
                    for t in ts {
                        self.ipfix_options_template(&mut out, t)
                    }
                }
                ipfix::FlowSetBody::Data(d) => {
                    for rec in d.fields {
                        out.records
                            .push(self.ipfix_record(template_id, false, &rec));
                    }
                }
                ipfix::FlowSetBody::OptionsData(d) => {
                    for rec in d.fields {
                        out.records.push(self.ipfix_record(template_id, true, &rec));
                    }
                }
                other => panic!("unexpected IPFIX set {template_id}: {other:?}"),
            }
        }
        out
    }

    fn ipfix_template(&mut self, out: &mut Message, t: ipfix::Template) {
        assert!(t.fields.iter().all(|f| f.enterprise_number.is_none()));
        self.ipfix_fields.insert(
            t.template_id,
            t.fields.iter().map(|f| f.field_type_number).collect(),
        );
        out.templates.push(t.template_id);
    }

    fn ipfix_options_template(&mut self, out: &mut Message, t: ipfix::OptionsTemplate) {
        assert_eq!(t.scope_field_count, 1);
        self.ipfix_fields.insert(
            t.template_id,
            t.fields.iter().map(|f| f.field_type_number).collect(),
        );
        out.options_templates.push(t.template_id);
    }

    fn ipfix_record(
        &self,
        template_id: u16,
        options: bool,
        pairs: &[(ipfix::lookup::IPFixField, FieldValue)],
    ) -> Record {
        let ids = &self.ipfix_fields[&template_id];
        assert_eq!(ids.len(), pairs.len());
        let fields = ids
            .iter()
            .zip(pairs)
            .map(|(&id, (field, v))| {
                assert_eq!(*field, ipfix::lookup::IPFixField::new(id, None));
                (id, value(v))
            })
            .collect();
        Record {
            template_id,
            options,
            fields,
        }
    }
}

fn decode_v9(m: V9) -> Message {
    let mut out = Message {
        version: m.header.version,
        count_or_length: m.header.count,
        sys_uptime: m.header.sys_up_time,
        unix_secs: m.header.unix_secs,
        sequence: m.header.sequence_number,
        domain: m.header.source_id,
        ..Message::default()
    };
    for set in m.flowsets {
        let template_id = set.header.flowset_id;
        match set.body {
            v9::FlowSetBody::Template(ts) => out
                .templates
                .extend(ts.templates.iter().map(|t| t.template_id)),
            v9::FlowSetBody::OptionsTemplate(ts) => out
                .options_templates
                .extend(ts.templates.iter().map(|t| t.template_id)),
            v9::FlowSetBody::Data(d) => {
                for rec in d.fields {
                    let fields = rec.iter().map(|(f, v)| (u16::from(*f), value(v))).collect();
                    out.records.push(Record {
                        template_id,
                        options: false,
                        fields,
                    });
                }
            }
            v9::FlowSetBody::OptionsData(d) => {
                for rec in d.fields {
                    let mut fields = BTreeMap::new();
                    for scope in &rec.scope_fields {
                        match scope {
                            // Keyed by scope type 1 (System); no option field uses id 1 here.
                            ScopeDataField::System(bytes) => {
                                fields.insert(1, Value::Num(be(bytes)));
                            }
                            other => panic!("unexpected scope {other:?}"),
                        }
                    }
                    for (f, v) in &rec.options_fields {
                        fields.insert(u16::from(*f), value(v));
                    }
                    out.records.push(Record {
                        template_id,
                        options: true,
                        fields,
                    });
                }
            }
            other => panic!("unexpected v9 flowset {template_id}: {other:?}"),
        }
    }
    out
}

fn be(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0, |acc, &b| acc << 8 | u64::from(b))
}

fn value(v: &FieldValue) -> Value {
    match v {
        FieldValue::Ip4Addr(a) => Value::Addr(IpAddr::V4(*a)),
        FieldValue::Ip6Addr(a) => Value::Addr(IpAddr::V6(*a)),
        FieldValue::DataNumber(_) | FieldValue::Duration(_) => {
            Value::Num(v.as_u64().expect("unsigned number"))
        }
        FieldValue::ProtocolType(p) => Value::Num(u64::from(u8::from(*p))),
        FieldValue::TcpControlBits(t, _) => Value::Num(u64::from(u16::from(*t))),
        FieldValue::FlowEndReason(r) => Value::Num(u64::from(u8::from(*r))),
        FieldValue::Vec(bytes) => Value::Num(be(bytes)),
        other => panic!("unexpected field value {other:?}"),
    }
}

/// The fields an IPFIX flow record must decode to, written out from the record.
pub fn expected_ipfix_flow(r: &FlowRecord, sampling: bool) -> BTreeMap<u16, Value> {
    let mut m = common_flow_fields(r);
    m.insert(152, num(r.first_ms));
    m.insert(153, num(r.last_ms));
    // icmpTypeCodeIPv4 / icmpTypeCodeIPv6, by the record's IP version.
    let icmp_id = if r.key.ip_version == 6 { 139 } else { 32 };
    m.insert(icmp_id, num(icmp_type_code(r)));
    if sampling {
        insert_sampling(&mut m, r.sampling);
    }
    m
}

/// ICMP type << 8 | code for ICMP and ICMPv6 (the key keeps it in the destination port),
/// zero for every other protocol.
pub fn icmp_type_code(r: &FlowRecord) -> u64 {
    let icmp = matches!(r.key.protocol, 1 | 58);
    if icmp { u64::from(r.key.dst_port) } else { 0 }
}

/// The fields a v9 flow record must decode to: times are ms since the session's sysUptime
/// epoch (`ExportSession::sys_uptime_epoch_ms`).
pub fn expected_v9_flow(r: &FlowRecord, epoch_ms: u64, sampling: bool) -> BTreeMap<u16, Value> {
    let mut m = common_flow_fields(r);
    m.insert(22, num(r.first_ms - epoch_ms));
    m.insert(21, num(r.last_ms - epoch_ms));
    m.insert(32, num(icmp_type_code(r)));
    if sampling {
        insert_sampling(&mut m, r.sampling);
    }
    m
}

fn common_flow_fields(r: &FlowRecord) -> BTreeMap<u16, Value> {
    let k = &r.key;
    let (src_id, dst_id) = if k.ip_version == 6 { (27, 28) } else { (8, 12) };
    BTreeMap::from([
        (src_id, addr(k.src_ip())),
        (dst_id, addr(k.dst_ip())),
        (7, num(k.src_port.into())),
        (11, num(k.dst_port.into())),
        (4, num(k.protocol.into())),
        (5, num(k.tos.into())),
        (6, num(r.tcp_flags.into())),
        (2, num(r.packets)),
        (1, num(r.octets)),
        (10, num(k.input_port.into())),
        (58, num(k.vlan.into())),
        (52, num(r.min_ttl.into())),
        (53, num(r.max_ttl.into())),
        (136, num(r.end_reason as u64)),
    ])
}

fn insert_sampling(m: &mut BTreeMap<u16, Value>, s: SamplingInfo) {
    m.insert(34, num(s.interval.into()));
    let code = match s.algorithm {
        SamplingAlgorithm::None => 0,
        SamplingAlgorithm::Deterministic => 1,
        SamplingAlgorithm::Random | SamplingAlgorithm::Hash => 2,
    };
    m.insert(35, num(code));
}

pub fn expected_aggregate(
    r: &AggregateRecord,
    version: ExportVersion,
    start_ms: u64,
) -> BTreeMap<u16, Value> {
    let mut m = BTreeMap::from([
        (4, num(r.protocol.into())),
        (7, num(r.src_port.into())),
        (11, num(r.dst_port.into())),
        (2, num(r.packets)),
        (1, num(r.octets)),
        (3, num(r.flows)),
    ]);
    if version == ExportVersion::Ipfix {
        m.insert(152, num(r.first_ms));
        m.insert(153, num(r.last_ms));
    } else {
        m.insert(22, num(r.first_ms - start_ms));
        m.insert(21, num(r.last_ms - start_ms));
    }
    m
}
