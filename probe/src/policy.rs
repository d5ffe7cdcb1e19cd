//! Policies: operator-written rules that say, per flow, whether it is accounted, under
//! which key, how it is sampled, which collectors get its records and which tag they carry.
//!
//! Rules are ordered and the first match wins. A flow is classified once, on its first
//! packet ([`RuleSet::classify`]); the worker caches the decision with the flow, so the
//! rule count never shows in the cost of a known flow's packets.
//!
//! The classifier is priority-pruned tuple space search (Srinivasan, Suri and Varghese,
//! SIGCOMM 1999): each rule is split into sub-rules over one source prefix, one destination
//! prefix and, where the rule names them, one protocol and one destination port; sub-rules
//! with the same prefix lengths and the same exact fields share a hash table (a tuple). A
//! lookup masks the key once per tuple and probes its table. Tuples are visited in the
//! order of the first rule they hold, so the search stops as soon as no later tuple can
//! hold an earlier match. The number of tuples depends on how many distinct prefix-length
//! pairs the rules use (a few dozen in practice), not on how many rules there are; the
//! `policy` criterion bench compares it with a linear first-match scan (BENCHMARKS.md).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use flowcache::{FlowKey, SamplerSpec};

/// An address prefix of one IP version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Prefix {
    /// 4 or 6.
    pub version: u8,
    /// Network address, stored as in [`FlowKey`] (IPv4 in the first four bytes), host bits
    /// zero.
    pub addr: [u8; 16],
    pub len: u8,
}

/// `addr` with every bit past the first `len` cleared.
#[inline]
fn mask(addr: &[u8; 16], len: u8) -> [u8; 16] {
    mask_bits(u128::from_be_bytes(*addr), len).to_be_bytes()
}

#[inline]
fn mask_bits(bits: u128, len: u8) -> u128 {
    match len {
        0 => 0,
        128.. => bits,
        n => bits & (u128::MAX << (128 - u32::from(n))),
    }
}

impl Prefix {
    /// The prefix of `ip` and `len`; refuses host bits set past `len` (usually a typo).
    pub fn new(ip: IpAddr, len: u8) -> Result<Prefix, String> {
        let (version, addr, max) = match ip {
            IpAddr::V4(v4) => {
                let mut addr = [0; 16];
                addr[..4].copy_from_slice(&v4.octets());
                (4, addr, 32)
            }
            IpAddr::V6(v6) => (6, v6.octets(), 128),
        };
        if len > max {
            return Err(format!("/{len} is longer than an IPv{version} address"));
        }
        let masked = mask(&addr, len);
        if masked != addr {
            let network = Prefix {
                version,
                addr: masked,
                len,
            };
            return Err(format!(
                "{ip}/{len} has host bits set (did you mean {network}?)"
            ));
        }
        Ok(Prefix { version, addr, len })
    }

    /// Whether the address `addr` of an IPv`version` packet lies in this prefix.
    #[inline]
    pub fn contains_addr(&self, version: u8, addr: &[u8; 16]) -> bool {
        version == self.version && mask(addr, self.len) == self.addr
    }

    /// Whether every address of `other` lies in this prefix.
    pub fn contains(&self, other: &Prefix) -> bool {
        self.version == other.version
            && self.len <= other.len
            && mask(&other.addr, self.len) == self.addr
    }

    pub fn overlaps(&self, other: &Prefix) -> bool {
        self.contains(other) || other.contains(self)
    }

    fn ip(&self) -> IpAddr {
        if self.version == 4 {
            IpAddr::from([self.addr[0], self.addr[1], self.addr[2], self.addr[3]])
        } else {
            IpAddr::from(self.addr)
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip(), self.len)
    }
}

impl FromStr for Prefix {
    type Err = String;

    /// `10.0.0.0/8`, `2001:db8::/32`, or a bare address (a host prefix).
    fn from_str(s: &str) -> Result<Prefix, String> {
        let form = "expected a prefix such as \"10.0.0.0/8\" or \"2001:db8::/32\", or an address";
        let (ip, len) = match s.split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (s, None),
        };
        let ip: IpAddr = ip
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an address prefix: {form}"))?;
        let len = match len {
            Some(len) => len
                .trim()
                .parse::<u8>()
                .map_err(|_| format!("{s:?} has no valid prefix length: {form}"))?,
            None if ip.is_ipv4() => 32,
            None => 128,
        };
        Prefix::new(ip, len).map_err(|why| format!("{s:?}: {why}"))
    }
}

/// An inclusive range of port numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub const ALL: PortRange = PortRange { lo: 0, hi: 65535 };

    #[inline]
    pub fn contains(&self, port: u16) -> bool {
        (self.lo..=self.hi).contains(&port)
    }

    fn single(&self) -> Option<u16> {
        (self.lo == self.hi).then_some(self.lo)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.single() {
            Some(port) => write!(f, "{port}"),
            None => write!(f, "{}-{}", self.lo, self.hi),
        }
    }
}

impl FromStr for PortRange {
    type Err = String;

    /// `443` or `8000-8100`.
    fn from_str(s: &str) -> Result<PortRange, String> {
        let port = |p: &str| {
            p.trim().parse::<u16>().map_err(|_| {
                format!("{s:?} is not a port or port range: expected \"443\" or \"8000-8100\" (0 to 65535)")
            })
        };
        let (lo, hi) = match s.split_once('-') {
            Some((lo, hi)) => (port(lo)?, port(hi)?),
            None => {
                let p = port(s)?;
                (p, p)
            }
        };
        if lo > hi {
            return Err(format!("the port range {s:?} runs backwards"));
        }
        Ok(PortRange { lo, hi })
    }
}

/// Protocol names a rule may use besides numbers 0 to 255.
pub const PROTOCOL_NAMES: &[(&str, u8)] = &[
    ("icmp", 1),
    ("igmp", 2),
    ("tcp", 6),
    ("udp", 17),
    ("gre", 47),
    ("esp", 50),
    ("ah", 51),
    ("icmpv6", 58),
    ("ipv6-icmp", 58),
    ("ospf", 89),
    ("sctp", 132),
];

/// A protocol name (`tcp`, `udp`, `icmp`, ...) or number.
pub fn parse_protocol(s: &str) -> Result<u8, String> {
    let s = s.trim();
    if let Some((_, n)) = PROTOCOL_NAMES
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(s))
    {
        return Ok(*n);
    }
    s.parse::<u8>().map_err(|_| {
        let names: Vec<&str> = PROTOCOL_NAMES.iter().map(|(n, _)| *n).collect();
        format!(
            "{s:?} is not a protocol: expected a number from 0 to 255 or one of {}",
            names.join(", ")
        )
    })
}

/// The protocol's name, or its number.
pub fn protocol_name(protocol: u8) -> String {
    PROTOCOL_NAMES
        .iter()
        .find(|(_, n)| *n == protocol)
        .map_or_else(|| protocol.to_string(), |(name, _)| (*name).to_string())
}

/// Protocols whose flow keys hold real ports (for the others they hold ICMP type and code,
/// or nothing): port conditions match only these.
#[inline]
fn has_ports(protocol: u8) -> bool {
    matches!(protocol, 6 | 17 | 132)
}

/// Which traffic a rule selects. Every list means "any of"; an empty list matches anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Match {
    pub src: Vec<Prefix>,
    pub dst: Vec<Prefix>,
    pub proto: Vec<u8>,
    /// Port conditions match TCP, UDP and SCTP only.
    pub src_port: Vec<PortRange>,
    pub dst_port: Vec<PortRange>,
    pub vlan: Vec<u16>,
    pub input_port: Vec<u16>,
}

/// One condition of a rule, for explanations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Src,
    Dst,
    Proto,
    SrcPort,
    DstPort,
    Vlan,
    InputPort,
}

impl Field {
    /// The TOML key.
    pub fn key(self) -> &'static str {
        match self {
            Field::Src => "src",
            Field::Dst => "dst",
            Field::Proto => "proto",
            Field::SrcPort => "src_port",
            Field::DstPort => "dst_port",
            Field::Vlan => "vlan",
            Field::InputPort => "input_port",
        }
    }
}

fn prefixes_match(list: &[Prefix], version: u8, addr: &[u8; 16]) -> bool {
    list.is_empty() || list.iter().any(|p| p.contains_addr(version, addr))
}

fn ports_match(list: &[PortRange], protocol: u8, port: u16) -> bool {
    list.is_empty() || (has_ports(protocol) && list.iter().any(|r| r.contains(port)))
}

/// Sorted, merged ranges ("1-5", "6-9" become "1-9"), so containment is one range's.
fn merged(list: &[PortRange]) -> Vec<PortRange> {
    let mut sorted = list.to_vec();
    sorted.sort();
    let mut out: Vec<PortRange> = Vec::with_capacity(sorted.len());
    for r in sorted {
        match out.last_mut() {
            Some(last) if u32::from(r.lo) <= u32::from(last.hi) + 1 => last.hi = last.hi.max(r.hi),
            _ => out.push(r),
        }
    }
    out
}

/// Whether `outer` ("any of", empty = everything) holds every address of `inner`.
fn prefixes_cover(outer: &[Prefix], inner: &[Prefix]) -> bool {
    if outer.is_empty() {
        return true;
    }
    let whole = |v: u8| outer.iter().any(|p| p.version == v && p.len == 0);
    if inner.is_empty() {
        return whole(4) && whole(6);
    }
    inner.iter().all(|i| outer.iter().any(|o| o.contains(i)))
}

fn prefixes_overlap(a: &[Prefix], b: &[Prefix]) -> bool {
    a.is_empty() || b.is_empty() || a.iter().any(|x| b.iter().any(|y| x.overlaps(y)))
}

fn ports_cover(outer: &[PortRange], inner: &[PortRange]) -> bool {
    if outer.is_empty() {
        return true;
    }
    let outer = merged(outer);
    let inner = if inner.is_empty() {
        vec![PortRange::ALL]
    } else {
        inner.to_vec()
    };
    inner
        .iter()
        .all(|i| outer.iter().any(|o| o.lo <= i.lo && i.hi <= o.hi))
}

fn ports_overlap(a: &[PortRange], b: &[PortRange]) -> bool {
    a.is_empty()
        || b.is_empty()
        || a.iter()
            .any(|x| b.iter().any(|y| x.lo <= y.hi && y.lo <= x.hi))
}

fn values_cover<T: PartialEq>(outer: &[T], inner: &[T]) -> bool {
    outer.is_empty() || (!inner.is_empty() && inner.iter().all(|i| outer.contains(i)))
}

fn values_overlap<T: PartialEq>(a: &[T], b: &[T]) -> bool {
    a.is_empty() || b.is_empty() || a.iter().any(|x| b.contains(x))
}

impl Match {
    /// Whether a packet of flow `key` is selected.
    #[inline]
    pub fn matches(&self, key: &FlowKey) -> bool {
        prefixes_match(&self.src, key.ip_version, &key.src_addr)
            && prefixes_match(&self.dst, key.ip_version, &key.dst_addr)
            && self.matches_rest(key)
    }

    /// The conditions other than the addresses.
    #[inline]
    fn matches_rest(&self, key: &FlowKey) -> bool {
        (self.proto.is_empty() || self.proto.contains(&key.protocol))
            && ports_match(&self.src_port, key.protocol, key.src_port)
            && ports_match(&self.dst_port, key.protocol, key.dst_port)
            && (self.vlan.is_empty() || self.vlan.contains(&key.vlan))
            && (self.input_port.is_empty() || self.input_port.contains(&key.input_port))
    }

    /// Why `key` is selected (one line per condition the rule has), or the first condition
    /// it fails.
    pub fn explain(&self, key: &FlowKey) -> Result<Vec<String>, (Field, String)> {
        let mut why = Vec::new();
        let src = key.src_ip();
        let dst = key.dst_ip();
        let prefix = |field: Field, list: &[Prefix], version, addr, ip: IpAddr| {
            if list.is_empty() {
                return Ok(None);
            }
            match list.iter().find(|p| p.contains_addr(version, addr)) {
                Some(p) => Ok(Some(format!("{} {ip} is in {p}", field.key()))),
                None => Err((
                    field,
                    format!("{} {ip} is in none of {}", field.key(), join(list)),
                )),
            }
        };
        why.extend(prefix(
            Field::Src,
            &self.src,
            key.ip_version,
            &key.src_addr,
            src,
        )?);
        why.extend(prefix(
            Field::Dst,
            &self.dst,
            key.ip_version,
            &key.dst_addr,
            dst,
        )?);
        if !self.proto.is_empty() {
            let name = protocol_name(key.protocol);
            if !self.proto.contains(&key.protocol) {
                let names: Vec<String> = self.proto.iter().map(|p| protocol_name(*p)).collect();
                return Err((
                    Field::Proto,
                    format!("proto {name} is not one of {}", names.join(", ")),
                ));
            }
            why.push(format!("proto is {name}"));
        }
        for (field, list, port) in [
            (Field::SrcPort, &self.src_port, key.src_port),
            (Field::DstPort, &self.dst_port, key.dst_port),
        ] {
            if list.is_empty() {
                continue;
            }
            if !has_ports(key.protocol) {
                return Err((
                    field,
                    format!(
                        "{} needs TCP, UDP or SCTP; the packet is {}",
                        field.key(),
                        protocol_name(key.protocol)
                    ),
                ));
            }
            match list.iter().find(|r| r.contains(port)) {
                Some(r) => why.push(format!("{} {port} is in {r}", field.key())),
                None => {
                    return Err((
                        field,
                        format!("{} {port} is in none of {}", field.key(), join(list)),
                    ));
                }
            }
        }
        for (field, list, value) in [
            (Field::Vlan, &self.vlan, key.vlan),
            (Field::InputPort, &self.input_port, key.input_port),
        ] {
            if list.is_empty() {
                continue;
            }
            if list.contains(&value) {
                why.push(format!("{} is {value}", field.key()));
            } else {
                return Err((
                    field,
                    format!("{} {value} is not one of {}", field.key(), join(list)),
                ));
            }
        }
        if why.is_empty() {
            why.push("the rule has no conditions: it matches everything".into());
        }
        Ok(why)
    }

    /// Whether every packet `other` selects is selected by `self` too.
    pub fn covers(&self, other: &Match) -> bool {
        // A rule with port conditions selects TCP, UDP and SCTP only.
        let ported = |m: &Match| -> Vec<u8> {
            if (m.src_port.is_empty() && m.dst_port.is_empty()) || !m.proto.is_empty() {
                m.proto.clone()
            } else {
                vec![6, 17, 132]
            }
        };
        prefixes_cover(&self.src, &other.src)
            && prefixes_cover(&self.dst, &other.dst)
            && values_cover(&ported(self), &ported(other))
            && ports_cover(&self.src_port, &other.src_port)
            && ports_cover(&self.dst_port, &other.dst_port)
            && values_cover(&self.vlan, &other.vlan)
            && values_cover(&self.input_port, &other.input_port)
            && self.families().contains(other.families())
    }

    /// Whether some packet is selected by both.
    pub fn overlaps(&self, other: &Match) -> bool {
        let ports = |m: &Match| !(m.src_port.is_empty() && m.dst_port.is_empty());
        let proto_ok = match (ports(self), ports(other)) {
            (false, false) => values_overlap(&self.proto, &other.proto),
            _ => {
                let ported = [6u8, 17, 132];
                let a: Vec<u8> = if self.proto.is_empty() && ports(self) {
                    ported.to_vec()
                } else {
                    self.proto.clone()
                };
                let b: Vec<u8> = if other.proto.is_empty() && ports(other) {
                    ported.to_vec()
                } else {
                    other.proto.clone()
                };
                values_overlap(&a, &b)
            }
        };
        self.families().intersects(other.families())
            && prefixes_overlap(&self.src, &other.src)
            && prefixes_overlap(&self.dst, &other.dst)
            && proto_ok
            && ports_overlap(&self.src_port, &other.src_port)
            && ports_overlap(&self.dst_port, &other.dst_port)
            && values_overlap(&self.vlan, &other.vlan)
            && values_overlap(&self.input_port, &other.input_port)
    }

    /// The IP versions the rule can match.
    fn families(&self) -> Families {
        let of = |list: &[Prefix]| {
            if list.is_empty() {
                Families::BOTH
            } else {
                Families {
                    v4: list.iter().any(|p| p.version == 4),
                    v6: list.iter().any(|p| p.version == 6),
                }
            }
        };
        let (s, d) = (of(&self.src), of(&self.dst));
        Families {
            v4: s.v4 && d.v4,
            v6: s.v6 && d.v6,
        }
    }

    /// Whether the rule can match anything at all (its source and destination prefixes
    /// share an IP version).
    pub fn satisfiable(&self) -> bool {
        self.families().intersects(Families::BOTH)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Families {
    v4: bool,
    v6: bool,
}

impl Families {
    const BOTH: Families = Families { v4: true, v6: true };

    fn contains(self, other: Families) -> bool {
        (self.v4 || !other.v4) && (self.v6 || !other.v6)
    }

    fn intersects(self, other: Families) -> bool {
        (self.v4 && other.v4) || (self.v6 && other.v6)
    }
}

fn join<T: fmt::Display>(list: &[T]) -> String {
    let items: Vec<String> = list.iter().map(|x| x.to_string()).collect();
    items.join(", ")
}

/// The flow key a metered flow is accounted under.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KeyMode {
    /// The whole key, as without policies.
    #[default]
    FiveTuple,
    /// Cisco's protocol-port aggregate: protocol, source and destination port (addresses,
    /// ToS cleared).
    ProtocolPort,
    /// One flow per destination address.
    Destination,
}

impl KeyMode {
    pub const ALL: [KeyMode; 3] = [
        KeyMode::FiveTuple,
        KeyMode::ProtocolPort,
        KeyMode::Destination,
    ];

    /// The name in the configuration file.
    pub fn name(self) -> &'static str {
        match self {
            KeyMode::FiveTuple => "5-tuple",
            KeyMode::ProtocolPort => "protocol-port",
            KeyMode::Destination => "destination",
        }
    }

    /// Reduces `key` to this mode's fields (VLAN and input port are kept: they say where
    /// the traffic was seen).
    #[inline]
    pub fn apply(self, key: &mut FlowKey) {
        match self {
            KeyMode::FiveTuple => {}
            KeyMode::ProtocolPort => {
                key.src_addr = [0; 16];
                key.dst_addr = [0; 16];
                key.tos = 0;
            }
            KeyMode::Destination => {
                key.src_addr = [0; 16];
                key.src_port = 0;
                key.dst_port = 0;
                key.protocol = 0;
                key.tos = 0;
            }
        }
    }
}

impl FromStr for KeyMode {
    type Err = String;

    fn from_str(s: &str) -> Result<KeyMode, String> {
        KeyMode::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("{s:?} is not a flow key: expected \"5-tuple\", \"protocol-port\" or \"destination\"")
            })
    }
}

impl fmt::Display for KeyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a metering rule does with the flows it selects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meter {
    pub key: KeyMode,
    /// The rule's own sampling; `None`: the probe's (`--sample`, `[sampling]`).
    pub sampling: Option<SamplerSpec>,
    /// Names of the collectors that receive the records; empty: all of them.
    pub collectors: Vec<Arc<str>>,
    /// Exported with each record; `None`: no tag.
    pub tag: Option<u32>,
}

/// What a rule does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Not accounted: no flow, no record.
    Ignore,
    Meter(Meter),
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Ignore => "ignore",
            Action::Meter(_) => "meter",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Ignore => f.write_str("ignore (no record)"),
            Action::Meter(m) => {
                write!(f, "meter, key {}", m.key)?;
                match m.sampling {
                    Some(s) => write!(f, ", sampling {s}")?,
                    None => f.write_str(", the probe's sampling")?,
                }
                if m.collectors.is_empty() {
                    f.write_str(", to every collector")?;
                } else {
                    write!(f, ", to {}", join(&m.collectors))?;
                }
                if let Some(tag) = m.tag {
                    write!(f, ", tag {tag}")?;
                }
                Ok(())
            }
        }
    }
}

/// One `[[policy]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub name: Arc<str>,
    pub matcher: Match,
    pub action: Action,
}

/// The ordered rules and their classifier.
#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    classifier: TupleSpace,
}

impl RuleSet {
    pub fn new(rules: Vec<Rule>) -> RuleSet {
        let classifier = TupleSpace::build(&rules);
        RuleSet { rules, classifier }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// The index of the first rule that selects `key`, or `None` (metered as without
    /// policies).
    #[inline]
    pub fn classify(&self, key: &FlowKey) -> Option<u32> {
        self.classifier.lookup(&self.rules, key)
    }

    /// The same answer by trying every rule in order: the reference the classifier is
    /// tested and measured against.
    pub fn classify_linear(&self, key: &FlowKey) -> Option<u32> {
        self.rules
            .iter()
            .position(|r| r.matcher.matches(key))
            .map(|i| i as u32)
    }

    /// Tuples the classifier searches (for the bench and the log).
    pub fn tuples(&self) -> usize {
        self.classifier.tuples.len()
    }

    /// Shadowed rules and overlapping rules with different actions, in rule order.
    pub fn findings(&self) -> Vec<Finding> {
        findings(&self.rules)
    }
}

/// Something check-config points out about a rule set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// Rule `rule` can never match: every packet it selects is taken by earlier rule `by`.
    Shadowed { rule: usize, by: usize },
    /// Rules `earlier` and `rule` select some packets in common and do different things:
    /// those packets follow `earlier`.
    Overlap { rule: usize, earlier: usize },
    /// The rule's source and destination prefixes share no IP version: it matches nothing.
    Unsatisfiable { rule: usize },
}

/// Whether two actions treat traffic differently (a different name or tag is not a
/// different action; different accounting, sampling or destinations are).
fn same_treatment(a: &Action, b: &Action) -> bool {
    match (a, b) {
        (Action::Ignore, Action::Ignore) => true,
        (Action::Meter(x), Action::Meter(y)) => {
            x.key == y.key && x.sampling == y.sampling && x.collectors == y.collectors
        }
        _ => false,
    }
}

fn findings(rules: &[Rule]) -> Vec<Finding> {
    let mut out = Vec::new();
    for (j, rule) in rules.iter().enumerate() {
        if !rule.matcher.satisfiable() {
            out.push(Finding::Unsatisfiable { rule: j });
            continue;
        }
        if let Some(by) = rules[..j]
            .iter()
            .position(|earlier| earlier.matcher.covers(&rule.matcher))
        {
            out.push(Finding::Shadowed { rule: j, by });
            continue;
        }
        if let Some(earlier) = rules[..j].iter().position(|earlier| {
            !same_treatment(&earlier.action, &rule.action)
                && earlier.matcher.overlaps(&rule.matcher)
        }) {
            out.push(Finding::Overlap { rule: j, earlier });
        }
    }
    out
}

/// Sub-rules per rule above which a rule's protocols and ports are left to the residual
/// check instead of being expanded into the tuples.
const MAX_EXPANSION: usize = 4096;

/// The exact-match part of one tuple's hash key: masked addresses as integers, protocol
/// and destination port in one word (hashed as three words, not byte by byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TupleKey {
    src: u128,
    dst: u128,
    protocol_port: u32,
}

impl std::hash::Hash for TupleKey {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u128(self.src ^ self.dst.rotate_left(64));
        state.write_u32(self.protocol_port);
    }
}

/// One tuple: sub-rules with the same prefix lengths and the same exact fields.
#[derive(Clone, Debug)]
struct Tuple {
    /// 0: both IP versions (the rules have no prefixes).
    version: u8,
    src_len: u8,
    dst_len: u8,
    exact_protocol: bool,
    exact_dst_port: bool,
    /// The first rule any of its sub-rules belongs to.
    first_rule: u32,
    /// Rule indices per key, ascending.
    table: HashMap<TupleKey, Vec<u32>, ahash::RandomState>,
}

#[derive(Clone, Debug, Default)]
struct TupleSpace {
    /// Ascending by `first_rule`.
    tuples: Vec<Tuple>,
}

impl TupleSpace {
    fn build(rules: &[Rule]) -> TupleSpace {
        type Shape = (u8, u8, u8, bool, bool);
        let mut tuples: HashMap<Shape, Tuple> = HashMap::new();
        for (index, rule) in rules.iter().enumerate() {
            let index = index as u32;
            let m = &rule.matcher;
            // None stands for "any" in each dimension.
            let src: Vec<Option<Prefix>> = if m.src.is_empty() {
                vec![None]
            } else {
                m.src.iter().copied().map(Some).collect()
            };
            let dst: Vec<Option<Prefix>> = if m.dst.is_empty() {
                vec![None]
            } else {
                m.dst.iter().copied().map(Some).collect()
            };
            let singles: Vec<u16> = m.dst_port.iter().filter_map(PortRange::single).collect();
            let all_single = !m.dst_port.is_empty() && singles.len() == m.dst_port.len();
            let expand = src.len() * dst.len() * m.proto.len().max(1) * singles.len().max(1)
                <= MAX_EXPANSION;
            let protos: Vec<Option<u8>> = if m.proto.is_empty() || !expand {
                vec![None]
            } else {
                m.proto.iter().copied().map(Some).collect()
            };
            let ports: Vec<Option<u16>> = if all_single && expand {
                singles.into_iter().map(Some).collect()
            } else {
                vec![None]
            };
            for s in &src {
                for d in &dst {
                    let version = match (s, d) {
                        (Some(s), Some(d)) if s.version != d.version => continue,
                        (Some(p), _) | (_, Some(p)) => p.version,
                        (None, None) => 0,
                    };
                    for proto in &protos {
                        for port in &ports {
                            // An exact port needs a protocol with ports in the tuple key.
                            let (proto, port) = match (proto, port) {
                                (Some(p), Some(port)) if has_ports(*p) => (Some(*p), Some(*port)),
                                (Some(_), Some(_)) => continue,
                                (p, _) => (*p, None),
                            };
                            let shape: Shape = (
                                version,
                                s.map_or(0, |p| p.len),
                                d.map_or(0, |p| p.len),
                                proto.is_some(),
                                port.is_some(),
                            );
                            let tuple = tuples.entry(shape).or_insert_with(|| Tuple {
                                version,
                                src_len: shape.1,
                                dst_len: shape.2,
                                exact_protocol: shape.3,
                                exact_dst_port: shape.4,
                                first_rule: index,
                                table: HashMap::with_hasher(ahash::RandomState::with_seeds(
                                    1, 2, 3, 4,
                                )),
                            });
                            let key = TupleKey {
                                src: s.map_or(0, |p| u128::from_be_bytes(p.addr)),
                                dst: d.map_or(0, |p| u128::from_be_bytes(p.addr)),
                                protocol_port: u32::from(proto.unwrap_or(0)) << 16
                                    | u32::from(port.unwrap_or(0)),
                            };
                            let list = tuple.table.entry(key).or_default();
                            if list.last() != Some(&index) {
                                list.push(index);
                            }
                        }
                    }
                }
            }
        }
        let mut tuples: Vec<Tuple> = tuples.into_values().collect();
        tuples.sort_by_key(|t| (t.first_rule, t.version, t.src_len, t.dst_len));
        TupleSpace { tuples }
    }

    #[inline]
    fn lookup(&self, rules: &[Rule], key: &FlowKey) -> Option<u32> {
        let mut best = u32::MAX;
        let src = u128::from_be_bytes(key.src_addr);
        let dst = u128::from_be_bytes(key.dst_addr);
        for tuple in &self.tuples {
            if tuple.first_rule >= best {
                // Later tuples start later still.
                break;
            }
            if tuple.version != 0 && tuple.version != key.ip_version {
                continue;
            }
            let protocol = if tuple.exact_protocol {
                key.protocol
            } else {
                0
            };
            let port = if tuple.exact_dst_port {
                key.dst_port
            } else {
                0
            };
            let probe = TupleKey {
                src: mask_bits(src, tuple.src_len),
                dst: mask_bits(dst, tuple.dst_len),
                protocol_port: u32::from(protocol) << 16 | u32::from(port),
            };
            if let Some(list) = tuple.table.get(&probe) {
                for &rule in list {
                    if rule >= best {
                        break;
                    }
                    // The tuple fixed the prefixes it was built from, not the rule's other
                    // prefixes or conditions: the rule's own check decides.
                    if rules[rule as usize].matcher.matches_rest(key) {
                        best = rule;
                        break;
                    }
                }
            }
        }
        (best != u32::MAX).then_some(best)
    }
}

/// `n` rules shaped like an operator's (host and subnet sources in 10/8, destination
/// subnets and hosts in 172.16/12 and 2001:db8::/32, TCP or UDP service ports and port
/// ranges, a few catch-alls), the same for the same `seed`: for benchmarks.
pub fn generated_rules(n: usize, seed: u64) -> Vec<Rule> {
    let mut state = seed;
    let mut next = move |bound: u64| {
        // SplitMix64: small, and fine for shaping rules.
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % bound
    };
    let v4 = |bytes: [u8; 4], len: u8| {
        let mut addr = [0; 16];
        addr[..4].copy_from_slice(&bytes);
        Prefix {
            version: 4,
            addr: mask(&addr, len),
            len,
        }
    };
    (0..n)
        .map(|i| {
            let mut m = Match::default();
            let v6 = next(8) == 0;
            if v6 {
                let mut addr = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                addr[4] = next(256) as u8;
                addr[5] = next(256) as u8;
                addr[15] = next(256) as u8;
                let len = [48u8, 64, 128][next(3) as usize];
                m.dst.push(Prefix {
                    version: 6,
                    addr: mask(&addr, len),
                    len,
                });
            } else {
                if next(4) != 0 {
                    let len = [16u8, 24, 32][next(3) as usize];
                    let bytes = [10, next(256) as u8, next(256) as u8, next(256) as u8];
                    m.src.push(v4(bytes, len));
                }
                let len = [20u8, 24, 28, 32][next(4) as usize];
                let bytes = [172, 16 + next(16) as u8, next(256) as u8, next(256) as u8];
                m.dst.push(v4(bytes, len));
            }
            match next(6) {
                0 => {}
                1 => m.proto.push(17),
                _ => m.proto.push(6),
            }
            if !m.proto.is_empty() {
                match next(4) {
                    0 => {
                        let lo = 1024 + next(60_000) as u16;
                        m.dst_port.push(PortRange { lo, hi: lo + 100 });
                    }
                    1 => {}
                    _ => {
                        let port = [22u16, 53, 80, 123, 443, 873, 3306, 5432, 8080, 8443]
                            [next(10) as usize];
                        m.dst_port.push(PortRange { lo: port, hi: port });
                    }
                }
            }
            let action = if next(5) == 0 {
                Action::Ignore
            } else {
                Action::Meter(Meter {
                    tag: Some(i as u32),
                    ..Meter::default()
                })
            };
            Rule {
                name: format!("rule-{i}").into(),
                matcher: m,
                action,
            }
        })
        .collect()
}

/// Parses an explain packet: `PROTO SRC[:PORT] > DST[:PORT]` with IPv6 addresses in
/// brackets when a port follows (`tcp [2001:db8::1]:1234 > [2001:db8::2]:443`), then
/// optionally `vlan N` and `input_port N`.
pub fn parse_packet(text: &str) -> Result<FlowKey, String> {
    let form = "expected \"PROTO SRC[:PORT] > DST[:PORT] [vlan N] [input_port N]\", e.g. \
                \"tcp 10.0.0.1:1234 > 192.0.2.5:443\"";
    let words: Vec<&str> = text.split_whitespace().collect();
    let (proto, src, arrow, dst, rest) = match words.as_slice() {
        [p, s, a, d, rest @ ..] => (*p, *s, *a, *d, rest),
        _ => return Err(format!("{text:?}: {form}")),
    };
    if arrow != ">" {
        return Err(format!("{text:?}: {form}"));
    }
    let endpoint = |s: &str| -> Result<(IpAddr, u16), String> {
        if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
            return Ok((sa.ip(), sa.port()));
        }
        let bare = s.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok((ip, 0));
        }
        Err(format!("{s:?} is not ADDRESS or ADDRESS:PORT; {form}"))
    };
    let (src_ip, src_port) = endpoint(src)?;
    let (dst_ip, dst_port) = endpoint(dst)?;
    if src_ip.is_ipv4() != dst_ip.is_ipv4() {
        return Err(format!(
            "{text:?}: source and destination are of different IP versions"
        ));
    }
    let mut key = FlowKey {
        protocol: parse_protocol(proto)?,
        src_port,
        dst_port,
        ..FlowKey::default()
    };
    key.set_addrs(src_ip, dst_ip);
    let mut rest = rest.iter();
    while let Some(word) = rest.next() {
        let value = rest
            .next()
            .ok_or_else(|| format!("{word:?} needs a value; {form}"))?;
        let number = value
            .parse::<u16>()
            .map_err(|_| format!("{word} {value:?}: not a number from 0 to 65535"))?;
        match *word {
            "vlan" => key.vlan = number,
            "input_port" | "port" => key.input_port = number,
            _ => return Err(format!("{word:?} is not understood; {form}")),
        }
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn meter() -> Action {
        Action::Meter(Meter::default())
    }

    fn rule(name: &str, matcher: Match, action: Action) -> Rule {
        Rule {
            name: name.into(),
            matcher,
            action,
        }
    }

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    fn ports(list: &[&str]) -> Vec<PortRange> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn prefixes_parse_check_host_bits_and_contain() {
        assert_eq!(p("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(p("192.0.2.7").len, 32);
        assert_eq!(p("2001:db8::/32").to_string(), "2001:db8::/32");
        let err = "10.0.0.1/8".parse::<Prefix>().unwrap_err();
        assert!(err.contains("did you mean 10.0.0.0/8"), "{err}");
        assert!("10.0.0.0/33".parse::<Prefix>().is_err());
        assert!("ten/8".parse::<Prefix>().is_err());
        assert!(p("10.0.0.0/8").contains(&p("10.1.0.0/16")));
        assert!(!p("10.1.0.0/16").contains(&p("10.0.0.0/8")));
        assert!(!p("0.0.0.0/0").contains(&p("::/0")));
        assert!(p("0.0.0.0/0").contains(&p("255.255.255.255/32")));
    }

    #[test]
    fn port_ranges_and_protocols_parse() {
        assert_eq!(
            "8000-8100".parse::<PortRange>(),
            Ok(PortRange { lo: 8000, hi: 8100 })
        );
        assert!(
            "9-1"
                .parse::<PortRange>()
                .unwrap_err()
                .contains("backwards")
        );
        assert!("70000".parse::<PortRange>().is_err());
        assert_eq!(parse_protocol("TCP"), Ok(6));
        assert_eq!(parse_protocol("47"), Ok(47));
        assert!(parse_protocol("tpc").is_err());
    }

    #[test]
    fn the_first_matching_rule_wins_and_explains_itself() {
        let set = RuleSet::new(vec![
            rule(
                "backups",
                Match {
                    dst: vec![p("192.0.2.0/24")],
                    proto: vec![6],
                    dst_port: ports(&["873"]),
                    ..Match::default()
                },
                Action::Ignore,
            ),
            rule(
                "dmz-web",
                Match {
                    src: vec![p("10.0.0.0/8")],
                    dst: vec![p("192.0.2.0/24"), p("2001:db8::/32")],
                    proto: vec![6],
                    dst_port: ports(&["443", "8000-8100"]),
                    ..Match::default()
                },
                meter(),
            ),
            rule("rest", Match::default(), meter()),
        ]);
        let key = parse_packet("tcp 10.0.0.1:1234 > 192.0.2.5:443").unwrap();
        assert_eq!(set.classify(&key), Some(1));
        let why = set.rules()[1].matcher.explain(&key).unwrap();
        assert_eq!(
            why,
            [
                "src 10.0.0.1 is in 10.0.0.0/8",
                "dst 192.0.2.5 is in 192.0.2.0/24",
                "proto is tcp",
                "dst_port 443 is in 443",
            ]
        );
        let (field, _) = set.rules()[0].matcher.explain(&key).unwrap_err();
        assert_eq!(field, Field::DstPort);
        let backup = parse_packet("tcp 10.9.9.9:5000 > 192.0.2.1:873").unwrap();
        assert_eq!(set.classify(&backup), Some(0));
        let range = parse_packet("tcp 10.0.0.1:1 > 192.0.2.5:8050").unwrap();
        assert_eq!(set.classify(&range), Some(1));
        let v6 = parse_packet("tcp [2001:db8::1]:5 > [2001:db8::2]:8000").unwrap();
        assert_eq!(set.classify(&v6), Some(2), "the v6 source is not in 10/8");
        let icmp = parse_packet("icmp 10.0.0.1 > 192.0.2.5").unwrap();
        assert_eq!(set.classify(&icmp), Some(2));
    }

    #[test]
    fn port_conditions_never_match_portless_protocols() {
        // ICMP keeps type and code in dst_port: 8 * 256 = 2048 is an echo request.
        let set = RuleSet::new(vec![rule(
            "ports",
            Match {
                dst_port: ports(&["2048"]),
                ..Match::default()
            },
            meter(),
        )]);
        let mut key = parse_packet("icmp 10.0.0.1 > 10.0.0.2").unwrap();
        key.dst_port = 2048;
        assert_eq!(set.classify(&key), None);
        assert_eq!(set.classify_linear(&key), None);
        key.protocol = 17;
        assert_eq!(set.classify(&key), Some(0));
    }

    #[test]
    fn shadowed_and_conflicting_rules_are_found() {
        let rules = vec![
            rule(
                "web",
                Match {
                    dst: vec![p("192.0.2.0/24")],
                    dst_port: ports(&["1-1000"]),
                    ..Match::default()
                },
                meter(),
            ),
            // Inside "web": shadowed.
            rule(
                "https",
                Match {
                    dst: vec![p("192.0.2.128/25")],
                    proto: vec![6],
                    dst_port: ports(&["443"]),
                    ..Match::default()
                },
                Action::Ignore,
            ),
            // Partly inside "web", ignored: an overlap with a different action.
            rule(
                "high",
                Match {
                    dst: vec![p("192.0.0.0/16")],
                    dst_port: ports(&["900-2000"]),
                    ..Match::default()
                },
                Action::Ignore,
            ),
            // Overlaps "web" but meters the same way: nothing to say.
            rule(
                "same",
                Match {
                    dst_port: ports(&["999-1001"]),
                    ..Match::default()
                },
                meter(),
            ),
            rule(
                "mixed",
                Match {
                    src: vec![p("10.0.0.0/8")],
                    dst: vec![p("2001:db8::/32")],
                    ..Match::default()
                },
                meter(),
            ),
        ];
        assert_eq!(
            findings(&rules),
            [
                Finding::Shadowed { rule: 1, by: 0 },
                Finding::Overlap {
                    rule: 2,
                    earlier: 0
                },
                Finding::Overlap {
                    rule: 3,
                    earlier: 2
                },
                Finding::Unsatisfiable { rule: 4 },
            ]
        );
    }

    #[test]
    fn packets_parse_with_ipv6_vlan_and_input_port() {
        let key =
            parse_packet("udp [2001:db8::1]:53 > [2001:db8::2]:5353 vlan 7 input_port 2").unwrap();
        assert_eq!(key.ip_version, 6);
        assert_eq!(
            (key.src_port, key.dst_port, key.vlan, key.input_port),
            (53, 5353, 7, 2)
        );
        assert!(parse_packet("tcp 10.0.0.1:1 192.0.2.1:2").is_err());
        assert!(parse_packet("tcp 10.0.0.1:1 > [::1]:2").is_err());
    }

    #[test]
    fn key_modes_reduce_the_key() {
        let key = parse_packet("tcp 10.0.0.1:1234 > 192.0.2.5:443 vlan 3").unwrap();
        let mut pp = key;
        KeyMode::ProtocolPort.apply(&mut pp);
        let zero: IpAddr = "0.0.0.0".parse().unwrap();
        assert_eq!((pp.src_ip(), pp.dst_ip()), (zero, zero));
        assert_eq!(
            (pp.protocol, pp.src_port, pp.dst_port, pp.vlan),
            (6, 1234, 443, 3)
        );
        let mut dst = key;
        KeyMode::Destination.apply(&mut dst);
        assert_eq!(dst.dst_ip(), key.dst_ip());
        assert_eq!((dst.src_port, dst.dst_port, dst.protocol), (0, 0, 0));
    }

    // Random rules over a small space of addresses and ports, so rules overlap often.
    fn arb_prefix() -> impl Strategy<Value = Prefix> {
        prop_oneof![
            (0u8..4, prop::sample::select(vec![0u8, 8, 16, 24, 30, 32])).prop_map(|(b, len)| {
                let mut addr = [0; 16];
                addr[..4].copy_from_slice(&[10, b, b.wrapping_mul(7), b.wrapping_mul(3)]);
                Prefix {
                    version: 4,
                    addr: mask(&addr, len),
                    len,
                }
            }),
            (0u8..4, prop::sample::select(vec![0u8, 32, 64, 128])).prop_map(|(b, len)| {
                let mut addr = [0; 16];
                addr[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
                addr[15] = b;
                Prefix {
                    version: 6,
                    addr: mask(&addr, len),
                    len,
                }
            }),
        ]
    }

    fn arb_ports() -> impl Strategy<Value = Vec<PortRange>> {
        prop::collection::vec(
            (0u16..8, 0u16..3).prop_map(|(lo, w)| PortRange {
                lo: 440 + lo,
                hi: 440 + lo + w,
            }),
            0..3,
        )
    }

    fn arb_match() -> impl Strategy<Value = Match> {
        (
            prop::collection::vec(arb_prefix(), 0..3),
            prop::collection::vec(arb_prefix(), 0..3),
            prop::collection::vec(prop::sample::select(vec![1u8, 6, 17]), 0..3),
            arb_ports(),
            arb_ports(),
            prop::collection::vec(0u16..3, 0..2),
            prop::collection::vec(0u16..2, 0..2),
        )
            .prop_map(
                |(src, dst, proto, src_port, dst_port, vlan, input_port)| Match {
                    src,
                    dst,
                    proto,
                    src_port,
                    dst_port,
                    vlan,
                    input_port,
                },
            )
    }

    fn arb_key() -> impl Strategy<Value = FlowKey> {
        (
            any::<bool>(),
            0u8..4,
            0u8..4,
            prop::sample::select(vec![1u8, 6, 17, 47]),
            438u16..452,
            438u16..452,
            0u16..3,
            0u16..2,
        )
            .prop_map(
                |(v6, s, d, protocol, src_port, dst_port, vlan, input_port)| {
                    let mut key = FlowKey {
                        protocol,
                        src_port,
                        dst_port,
                        vlan,
                        input_port,
                        ..FlowKey::default()
                    };
                    if v6 {
                        let mut a = [0u8; 16];
                        a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
                        let mut b = a;
                        a[15] = s;
                        b[15] = d;
                        key.set_addrs(IpAddr::from(a), IpAddr::from(b));
                    } else {
                        key.set_addrs(
                            IpAddr::from([10, s, s.wrapping_mul(7), s.wrapping_mul(3)]),
                            IpAddr::from([10, d, d.wrapping_mul(7), d]),
                        );
                    }
                    key
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn tuple_space_search_agrees_with_a_linear_scan(
            matches in prop::collection::vec(arb_match(), 1..24),
            keys in prop::collection::vec(arb_key(), 64),
        ) {
            let rules: Vec<Rule> = matches
                .into_iter()
                .enumerate()
                .map(|(i, m)| rule(&format!("r{i}"), m, meter()))
                .collect();
            let set = RuleSet::new(rules);
            for key in &keys {
                prop_assert_eq!(set.classify(key), set.classify_linear(key), "{:?}", key);
            }
        }

        #[test]
        fn covers_and_overlaps_agree_with_packets(
            a in arb_match(),
            b in arb_match(),
            keys in prop::collection::vec(arb_key(), 256),
        ) {
            for key in &keys {
                if b.matches(key) {
                    // A cover selects whatever it covers; overlapping is then certain.
                    if a.covers(&b) {
                        prop_assert!(a.matches(key), "{:?} covers {:?} but not {:?}", a, b, key);
                    }
                    if a.matches(key) {
                        prop_assert!(a.overlaps(&b), "{:?} and {:?} both take {:?}", a, b, key);
                    }
                }
            }
        }
    }
}
