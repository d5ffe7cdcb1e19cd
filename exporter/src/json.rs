//! JSON lines: flow records for scripts and jq (`--records-json`, the `json` collector),
//! and the destination that records and events are written to.
//!
//! Every record field is named once, here; docs/RECORDS.md is the schema and a test holds
//! it to [`record_to_json`]. Extension sections (`RecordExtras`) add their fields only
//! when present, so a record without extensions carries only the flow fields.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

use flowcache::{
    AggregateRecord, DnsTransaction, FlowRecord, PolicyMark, ReverseCounters, SamplingAlgorithm,
    TcpDirectionKpis, TcpKpis,
};
use serde_json::{Map, Value};

/// Where JSON lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JsonDestination {
    /// `-`: standard output.
    Stdout,
    /// A file: `tapflow run` appends to it, a replay starts it anew (see
    /// [`JsonLinesWriter::open`]).
    File(PathBuf),
    /// `udp:HOST:PORT`: one datagram per line.
    Udp(SocketAddr),
    /// `unix:/path`: one datagram per line to a Unix datagram socket.
    Unix(PathBuf),
}

impl std::str::FromStr for JsonDestination {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "-" {
            Ok(JsonDestination::Stdout)
        } else if let Some(addr) = s.strip_prefix("udp:") {
            let resolved = addr
                .to_socket_addrs()
                .map_err(|e| format!("{s:?}: expected udp:HOST:PORT ({e})"))?
                .next()
                .ok_or_else(|| format!("{s:?}: {addr} resolves to no address"))?;
            Ok(JsonDestination::Udp(resolved))
        } else if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(format!("{s:?}: expected unix:/path/to/socket"));
            }
            Ok(JsonDestination::Unix(path.into()))
        } else if s.is_empty() {
            Err(
                "empty destination: give a file path, - for stdout, udp:HOST:PORT or unix:/path"
                    .into(),
            )
        } else {
            Ok(JsonDestination::File(s.into()))
        }
    }
}

impl fmt::Display for JsonDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonDestination::Stdout => write!(f, "-"),
            JsonDestination::File(p) => write!(f, "{}", p.display()),
            JsonDestination::Udp(a) => write!(f, "udp:{a}"),
            JsonDestination::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

enum Sink {
    Stream(BufWriter<Box<dyn Write + Send>>),
    Udp(UdpSocket),
    Unix(UnixDatagram, PathBuf),
}

impl fmt::Debug for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Sink::Stream(_) => "Stream",
            Sink::Udp(_) => "Udp",
            Sink::Unix(..) => "Unix",
        })
    }
}

/// Counters of one JSON lines output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JsonCounters {
    /// Lines written (or datagrams sent).
    pub lines: u64,
    pub bytes: u64,
    /// Lines lost to a failed write or send.
    pub errors: u64,
}

/// Writes one JSON value per line to a [`JsonDestination`]. A failed write is counted
/// and logged once per failure run, never fatal: a reader that went away must not stop
/// the appliance.
#[derive(Debug)]
pub struct JsonLinesWriter {
    destination: JsonDestination,
    sink: Sink,
    line: Vec<u8>,
    counters: JsonCounters,
    failing: bool,
}

impl JsonLinesWriter {
    /// Opens `destination`; a file is appended to when `append`, else truncated (a replay's
    /// output describes that replay alone; an appliance's survives restarts).
    pub fn open(destination: &JsonDestination, append: bool) -> io::Result<JsonLinesWriter> {
        let sink = match destination {
            JsonDestination::Stdout => Sink::Stream(BufWriter::new(Box::new(io::stdout()))),
            JsonDestination::File(path) => {
                let file: File = OpenOptions::new()
                    .create(true)
                    .write(true)
                    .append(append)
                    .truncate(!append)
                    .open(path)
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
                Sink::Stream(BufWriter::new(Box::new(file)))
            }
            JsonDestination::Udp(addr) => {
                let bind: SocketAddr = if addr.is_ipv4() {
                    "0.0.0.0:0".parse().expect("literal")
                } else {
                    "[::]:0".parse().expect("literal")
                };
                let socket = UdpSocket::bind(bind)?;
                socket.connect(addr)?;
                Sink::Udp(socket)
            }
            JsonDestination::Unix(path) => Sink::Unix(UnixDatagram::unbound()?, path.clone()),
        };
        Ok(JsonLinesWriter {
            destination: destination.clone(),
            sink,
            line: Vec::with_capacity(512),
            counters: JsonCounters::default(),
            failing: false,
        })
    }

    pub fn destination(&self) -> &JsonDestination {
        &self.destination
    }

    pub fn counters(&self) -> JsonCounters {
        self.counters
    }

    /// Writes `value` as one line.
    pub fn write(&mut self, value: &Value) {
        self.line.clear();
        if serde_json::to_writer(&mut self.line, value).is_err() {
            self.counters.errors += 1;
            return;
        }
        self.line.push(b'\n');
        let result = match &mut self.sink {
            Sink::Stream(w) => w.write_all(&self.line),
            // A datagram per line, without the newline.
            Sink::Udp(socket) => socket.send(&self.line[..self.line.len() - 1]).map(|_| ()),
            Sink::Unix(socket, path) => socket
                .send_to(&self.line[..self.line.len() - 1], &*path)
                .map(|_| ()),
        };
        match result {
            Ok(()) => {
                self.counters.lines += 1;
                self.counters.bytes += self.line.len() as u64;
                self.failing = false;
            }
            Err(e) => {
                self.counters.errors += 1;
                if !self.failing {
                    log::warn!(
                        "JSON output {}: {e}; lines are lost until it recovers",
                        self.destination
                    );
                    self.failing = true;
                }
            }
        }
    }

    /// Pushes buffered lines out (stream destinations).
    pub fn flush(&mut self) {
        if let Sink::Stream(w) = &mut self.sink
            && let Err(e) = w.flush()
        {
            self.counters.errors += 1;
            log::warn!("JSON output {}: {e}", self.destination);
        }
    }
}

impl Drop for JsonLinesWriter {
    fn drop(&mut self) {
        self.flush();
    }
}

fn sampling_name(algorithm: SamplingAlgorithm) -> &'static str {
    match algorithm {
        SamplingAlgorithm::None => "none",
        SamplingAlgorithm::Deterministic => "deterministic",
        SamplingAlgorithm::Random => "random",
        SamplingAlgorithm::Hash => "hash",
    }
}

fn put(object: &mut Map<String, Value>, name: &str, value: impl Into<Value>) {
    object.insert(name.to_string(), value.into());
}

fn put_some<T: Into<Value>>(object: &mut Map<String, Value>, name: &str, value: Option<T>) {
    if let Some(value) = value {
        put(object, name, value);
    }
}

/// A flow record as a JSON object (docs/RECORDS.md).
pub fn record_to_json(record: &FlowRecord) -> Value {
    let key = &record.key;
    let mut o = Map::with_capacity(24);
    put(&mut o, "src", key.src_ip().to_string());
    put(&mut o, "dst", key.dst_ip().to_string());
    put(&mut o, "sport", key.src_port);
    put(&mut o, "dport", key.dst_port);
    put(&mut o, "proto", key.protocol);
    put(&mut o, "ip_version", key.ip_version);
    put(&mut o, "tos", key.tos);
    put(&mut o, "vlan", key.vlan);
    put(&mut o, "input_port", key.input_port);
    put(&mut o, "packets", record.packets);
    put(&mut o, "octets", record.octets);
    put(&mut o, "first_ms", record.first_ms);
    put(&mut o, "last_ms", record.last_ms);
    put(&mut o, "tcp_flags", record.tcp_flags);
    put(&mut o, "min_ttl", record.min_ttl);
    put(&mut o, "max_ttl", record.max_ttl);
    put(&mut o, "end_reason", record.end_reason.name());
    put(&mut o, "sampling", sampling_name(record.sampling.algorithm));
    put(&mut o, "sampling_interval", record.sampling.interval);
    if let Some(extras) = &record.extras {
        if let Some(reverse) = &extras.reverse {
            put_reverse(&mut o, reverse);
        }
        if let Some(tcp) = &extras.tcp {
            put_tcp(&mut o, tcp, extras.reverse.is_some());
        }
        if let Some(dns) = &extras.dns {
            put_dns(&mut o, dns);
        }
        if let Some(policy) = &extras.policy {
            put_policy(&mut o, policy);
        }
    }
    Value::Object(o)
}

fn put_reverse(o: &mut Map<String, Value>, r: &ReverseCounters) {
    put(o, "packets_rev", r.packets);
    put(o, "octets_rev", r.octets);
    put(o, "first_ms_rev", r.first_ms);
    put(o, "last_ms_rev", r.last_ms);
    put(o, "tcp_flags_rev", r.tcp_flags);
    put(o, "min_ttl_rev", r.min_ttl);
    put(o, "max_ttl_rev", r.max_ttl);
    put(o, "end_reason_rev", r.end_reason.name());
}

fn put_tcp_direction(o: &mut Map<String, Value>, d: &TcpDirectionKpis, suffix: &str) {
    put_some(o, &format!("rtt_min_us{suffix}"), d.rtt_min_us);
    put_some(o, &format!("rtt_mean_us{suffix}"), d.rtt_mean_us);
    put_some(o, &format!("rtt_max_us{suffix}"), d.rtt_max_us);
    put(o, &format!("retrans_packets{suffix}"), d.retrans_packets);
    put(o, &format!("retrans_octets{suffix}"), d.retrans_octets);
    put(
        o,
        &format!("out_of_order_packets{suffix}"),
        d.out_of_order_packets,
    );
    put(
        o,
        &format!("zero_window_events{suffix}"),
        d.zero_window_events,
    );
    put(o, &format!("syn_retransmits{suffix}"), d.syn_retransmits);
}

/// `biflow`: the record carries both directions, so the other direction's KPIs (`_rev`)
/// belong to it too.
fn put_tcp(o: &mut Map<String, Value>, tcp: &TcpKpis, biflow: bool) {
    put_some(o, "rtt_server_us", tcp.rtt_server_us);
    put_some(o, "rtt_client_us", tcp.rtt_client_us);
    put_some(o, "app_latency_us", tcp.app_latency_us);
    put_tcp_direction(o, &tcp.forward, "");
    if biflow {
        put_tcp_direction(o, &tcp.reverse, "_rev");
    }
    put(o, "tcp_outcome", tcp.outcome.name());
}

fn put_dns(o: &mut Map<String, Value>, dns: &DnsTransaction) {
    put(o, "dns_qname", dns.qname.clone());
    put(o, "dns_qtype", dns.qtype);
    put_some(o, "dns_rcode", dns.rcode);
    put_some(o, "dns_answers", dns.answers);
    put_some(o, "dns_latency_us", dns.latency_us);
}

fn put_policy(o: &mut Map<String, Value>, policy: &PolicyMark) {
    put(o, "policy", policy.name.to_string());
    put_some(o, "tag", policy.tag);
}

/// A protocol-port aggregate as a JSON object (docs/RECORDS.md).
pub fn aggregate_to_json(record: &AggregateRecord) -> Value {
    let mut o = Map::with_capacity(10);
    put(&mut o, "aggregate", "protocol-port");
    put(&mut o, "proto", record.protocol);
    put(&mut o, "sport", record.src_port);
    put(&mut o, "dport", record.dst_port);
    put(&mut o, "flows", record.flows);
    put(&mut o, "packets", record.packets);
    put(&mut o, "octets", record.octets);
    put(&mut o, "first_ms", record.first_ms);
    put(&mut o, "last_ms", record.last_ms);
    put(&mut o, "sampling", sampling_name(record.sampling.algorithm));
    put(&mut o, "sampling_interval", record.sampling.interval);
    Value::Object(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowcache::{EndReason, FlowKey, RecordExtras, TcpOutcome};

    #[test]
    fn destinations_parse() {
        assert_eq!("-".parse(), Ok(JsonDestination::Stdout));
        assert_eq!(
            "udp:127.0.0.1:9999".parse(),
            Ok(JsonDestination::Udp("127.0.0.1:9999".parse().unwrap()))
        );
        assert_eq!(
            "unix:/run/x.sock".parse(),
            Ok(JsonDestination::Unix("/run/x.sock".into()))
        );
        assert_eq!(
            "out.jsonl".parse(),
            Ok(JsonDestination::File("out.jsonl".into()))
        );
        assert!("unix:".parse::<JsonDestination>().is_err());
        assert!("udp:nohost".parse::<JsonDestination>().is_err());
    }

    #[test]
    fn a_record_names_its_fields_and_its_extension_sections() {
        let mut key = FlowKey {
            src_port: 1234,
            dst_port: 443,
            protocol: 6,
            ..FlowKey::default()
        };
        key.set_addrs("10.0.0.1".parse().unwrap(), "2001:db8::1".parse().unwrap());
        let mut record = FlowRecord {
            key,
            packets: 3,
            octets: 180,
            first_ms: 1_000,
            last_ms: 2_000,
            end_reason: EndReason::EndOfFlow,
            ..FlowRecord::default()
        };
        let plain = record_to_json(&record);
        assert_eq!(plain["end_reason"], "end_of_flow");
        assert_eq!(plain["proto"], 6);
        assert!(plain.get("tcp_outcome").is_none());
        record.extras = Some(Box::new(RecordExtras {
            tcp: Some(TcpKpis {
                rtt_server_us: Some(1500),
                outcome: TcpOutcome::Closed,
                ..TcpKpis::default()
            }),
            ..RecordExtras::default()
        }));
        let with_kpis = record_to_json(&record);
        assert_eq!(with_kpis["rtt_server_us"], 1500);
        assert_eq!(with_kpis["tcp_outcome"], "closed");
        assert_eq!(with_kpis["retrans_packets"], 0);
        assert!(with_kpis.get("retrans_packets_rev").is_none(), "no biflow");
        assert!(with_kpis.get("rtt_client_us").is_none());
        record.extras.as_mut().unwrap().reverse = Some(ReverseCounters::default());
        assert_eq!(record_to_json(&record)["retrans_packets_rev"], 0);
    }

    #[test]
    fn lines_reach_a_unix_datagram_socket() {
        let dir = std::env::temp_dir().join(format!("tapflow-json-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.sock");
        let _ = std::fs::remove_file(&path);
        let reader = UnixDatagram::bind(&path).unwrap();
        let mut writer = JsonLinesWriter::open(&JsonDestination::Unix(path.clone()), true).unwrap();
        writer.write(&serde_json::json!({"type": "x", "time_us": 1}));
        let mut buf = [0u8; 256];
        let n = reader.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], br#"{"type":"x","time_us":1}"#);
        assert_eq!(writer.counters().lines, 1);
        drop(reader);
        std::fs::remove_file(&path).unwrap();
        writer.write(&serde_json::json!({"type": "y"}));
        assert_eq!(
            writer.counters().errors,
            1,
            "a gone reader is counted, not fatal"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
