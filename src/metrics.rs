//! Counters and gauges in Prometheus' text exposition format (version 0.0.4), and a
//! minimal HTTP endpoint serving them at `GET /metrics`.
//!
//! The registry is a list of metric families ([`Family`]: name, help, type, label names),
//! each with its series (one value per combination of label values). A series is an
//! `AtomicU64` behind an `Arc`: the pipeline takes a [`Metric`] handle once and then adds
//! to it or sets it without locking; only creating a series and rendering take the
//! registry's lock. Every family of [`STANDARD_FAMILIES`] is documented in
//! `docs/METRICS.md`.
//!
//! The endpoint is a plain `std::net::TcpListener` on its own thread: one request per
//! connection, no keep-alive, no HTTP library. That is all a Prometheus scraper needs.

use std::fmt::{self, Write as _};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Counter (only goes up, `_total` names) or gauge (a current level).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
}

impl MetricType {
    pub fn name(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
        }
    }
}

/// A metric family: what `# HELP` and `# TYPE` describe, and the names of its labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: MetricType,
    pub labels: &'static [&'static str],
}

const fn counter(
    name: &'static str,
    labels: &'static [&'static str],
    help: &'static str,
) -> Family {
    Family {
        name,
        help,
        kind: MetricType::Counter,
        labels,
    }
}

pub const RX_PACKETS: Family = counter(
    "tapflow_rx_packets_total",
    &["worker"],
    "Packets received by each worker from its receive queues.",
);
pub const RX_BYTES: Family = counter(
    "tapflow_rx_bytes_total",
    &["worker"],
    "Bytes (whole frames) received by each worker.",
);
pub const NIC_MISSED: Family = counter(
    "tapflow_nic_missed_total",
    &["port"],
    "Packets the NIC dropped because the receive rings were full (imissed).",
);
pub const NIC_ERRORS: Family = counter(
    "tapflow_nic_errors_total",
    &["port"],
    "Erroneous packets the NIC received (ierrors: bad CRC, runts, ...).",
);
pub const NIC_NOMBUF: Family = counter(
    "tapflow_nic_nombuf_total",
    &["port"],
    "Receive buffer allocation failures of the port (rx_nombuf): the mempool ran dry.",
);
pub const PARSE_STOPS: Family = counter(
    "tapflow_parse_stops_total",
    &["reason"],
    "Packets whose parsing stopped before the transport header, by reason.",
);
pub const SAMPLED_OUT: Family = counter(
    "tapflow_sampled_out_total",
    &[],
    "Packets skipped by packet sampling.",
);
pub const FLOWS_ACTIVE: Family = Family {
    name: "tapflow_flows_active",
    help: "Flows currently in the flow caches of all workers.",
    kind: MetricType::Gauge,
    labels: &[],
};
pub const FLOWS_CREATED: Family = counter(
    "tapflow_flows_created_total",
    &[],
    "Flow records started in the flow caches.",
);
pub const FLOWS_EXPIRED: Family = counter(
    "tapflow_flows_expired_total",
    &["reason"],
    "Flow records ended, by reason (idle, active, end_of_flow, forced, lack_of_resources).",
);
pub const CACHE_EVICTIONS: Family = counter(
    "tapflow_cache_evictions_total",
    &[],
    "Flows ended early because their cache bucket was full.",
);
pub const CACHE_CORRECTIONS: Family = counter(
    "tapflow_cache_corrections_total",
    &["kind"],
    "Packets or records the flow caches had to adjust: future_timestamp, stale_timestamp, \
     reordered, counter_split, resync.",
);
pub const EXPORT_RECORDS: Family = counter(
    "tapflow_export_records_total",
    &["collector"],
    "Flow (or aggregate) records sent to each collector.",
);
pub const EXPORT_DATAGRAMS: Family = counter(
    "tapflow_export_datagrams_total",
    &["collector"],
    "Export messages (datagrams) sent to each collector.",
);
pub const EXPORT_BYTES: Family = counter(
    "tapflow_export_bytes_total",
    &["collector"],
    "Bytes of export messages sent to each collector.",
);
pub const EXPORT_TEMPLATE_SENDS: Family = counter(
    "tapflow_export_template_sends_total",
    &["collector"],
    "Times the templates were sent to each collector.",
);
pub const EXPORT_SEND_ERRORS: Family = counter(
    "tapflow_export_send_errors_total",
    &["collector"],
    "Export messages the operating system refused to send to each collector.",
);
pub const EXPORT_QUEUE_DROPPED_RECORDS: Family = counter(
    "tapflow_export_queue_dropped_records_total",
    &[],
    "Expired flow records dropped because the queue to the exporter was full.",
);
pub const BUILD_INFO: Family = Family {
    name: "tapflow_build_info",
    help: "Always 1; the labels tell the tapflow and DPDK versions running.",
    kind: MetricType::Gauge,
    labels: &["version", "dpdk"],
};

/// The families [`Metrics::new`] registers, in the order they are rendered.
pub const STANDARD_FAMILIES: &[Family] = &[
    RX_PACKETS,
    RX_BYTES,
    NIC_MISSED,
    NIC_ERRORS,
    NIC_NOMBUF,
    PARSE_STOPS,
    SAMPLED_OUT,
    FLOWS_ACTIVE,
    FLOWS_CREATED,
    FLOWS_EXPIRED,
    CACHE_EVICTIONS,
    CACHE_CORRECTIONS,
    EXPORT_RECORDS,
    EXPORT_DATAGRAMS,
    EXPORT_BYTES,
    EXPORT_TEMPLATE_SENDS,
    EXPORT_SEND_ERRORS,
    EXPORT_QUEUE_DROPPED_RECORDS,
    BUILD_INFO,
];

/// A handle on one series. Cheap to clone; every clone updates the same value.
#[derive(Clone, Debug, Default)]
pub struct Metric(Arc<AtomicU64>);

impl Metric {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets the value: for gauges, and for counters copied from a source that keeps its
    /// own running total (NIC statistics).
    pub fn set(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
struct Series {
    label_values: Vec<String>,
    value: Metric,
}

#[derive(Debug)]
struct FamilyState {
    family: Family,
    series: Vec<Series>,
}

/// The registry the pipeline fills and the endpoint renders.
#[derive(Debug)]
pub struct Metrics {
    families: RwLock<Vec<FamilyState>>,
    /// What `GET /top` serves (the millisecond monitor's live view), when something does.
    top: RwLock<Option<TopSource>>,
}

/// A function producing the JSON body of `/top`; `None` while there is nothing to show.
#[derive(Clone)]
pub struct TopSource(pub Arc<dyn Fn() -> Option<String> + Send + Sync>);

impl fmt::Debug for TopSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TopSource")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every family of [`STANDARD_FAMILIES`]; those without labels start
    /// with one series at 0, so they are scraped before anything happens.
    pub fn new() -> Metrics {
        let metrics = Metrics::empty();
        for family in STANDARD_FAMILIES {
            metrics.register(family);
        }
        metrics
    }

    /// A registry with no families.
    pub fn empty() -> Metrics {
        Metrics {
            families: RwLock::new(Vec::new()),
            top: RwLock::new(None),
        }
    }

    /// Serves `source`'s JSON at `GET /top`.
    pub fn serve_top(&self, source: TopSource) {
        *self.top.write().unwrap_or_else(PoisonError::into_inner) = Some(source);
    }

    fn top_json(&self) -> Option<String> {
        let source = self
            .top
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()?;
        (source.0)()
    }

    /// Adds `family` (rendered after those registered before it); registering a name
    /// again is a no-op.
    pub fn register(&self, family: &Family) {
        let mut families = self
            .families
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if families.iter().any(|f| f.family.name == family.name) {
            return;
        }
        let mut series = Vec::new();
        if family.labels.is_empty() {
            series.push(Series {
                label_values: Vec::new(),
                value: Metric::default(),
            });
        }
        families.push(FamilyState {
            family: *family,
            series,
        });
    }

    /// The series of `family` with these label values (in the order of
    /// `family.labels`), created at 0 (and the family registered) if new.
    ///
    /// # Panics
    /// If the number of label values differs from the family's label names: a bug in the
    /// caller, caught by any test that touches the metric.
    pub fn metric(&self, family: &Family, label_values: &[&str]) -> Metric {
        assert_eq!(
            label_values.len(),
            family.labels.len(),
            "metric {} takes labels {:?}, got values {:?}",
            family.name,
            family.labels,
            label_values
        );
        if let Some(found) = self.find(family, label_values) {
            return found;
        }
        self.register(family);
        let mut families = self
            .families
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let state = families
            .iter_mut()
            .find(|f| f.family.name == family.name)
            .expect("registered just above");
        // Another thread may have created it between the two locks.
        if let Some(series) = state.series.iter().find(|s| {
            s.label_values
                .iter()
                .map(String::as_str)
                .eq(label_values.iter().copied())
        }) {
            return series.value.clone();
        }
        let value = Metric::default();
        state.series.push(Series {
            label_values: label_values.iter().map(|v| v.to_string()).collect(),
            value: value.clone(),
        });
        value
    }

    fn find(&self, family: &Family, label_values: &[&str]) -> Option<Metric> {
        let families = self.families.read().unwrap_or_else(PoisonError::into_inner);
        let state = families.iter().find(|f| f.family.name == family.name)?;
        state
            .series
            .iter()
            .find(|s| {
                s.label_values
                    .iter()
                    .map(String::as_str)
                    .eq(label_values.iter().copied())
            })
            .map(|s| s.value.clone())
    }

    /// Sets a series (see [`Metrics::metric`]).
    pub fn set(&self, family: &Family, label_values: &[&str], value: u64) {
        self.metric(family, label_values).set(value);
    }

    /// Adds to a series (see [`Metrics::metric`]).
    pub fn add(&self, family: &Family, label_values: &[&str], n: u64) {
        self.metric(family, label_values).add(n);
    }

    /// The value of a series, if it exists.
    pub fn value(&self, family: &Family, label_values: &[&str]) -> Option<u64> {
        self.find(family, label_values).map(|m| m.get())
    }

    /// Every family in the text exposition format: `# HELP` and `# TYPE` once per family,
    /// then one `name{label="value",...} value` line per series.
    pub fn render(&self) -> String {
        let families = self.families.read().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::with_capacity(4096);
        for state in families.iter() {
            let family = &state.family;
            let _ = writeln!(out, "# HELP {} {}", family.name, EscapeHelp(family.help));
            let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind.name());
            for series in &state.series {
                out.push_str(family.name);
                if !family.labels.is_empty() {
                    out.push('{');
                    for (i, (name, value)) in
                        family.labels.iter().zip(&series.label_values).enumerate()
                    {
                        if i > 0 {
                            out.push(',');
                        }
                        let _ = write!(out, "{name}=\"{}\"", EscapeLabel(value));
                    }
                    out.push('}');
                }
                let _ = writeln!(out, " {}", series.value.get());
            }
        }
        out
    }
}

/// HELP text escaping: backslash and newline.
struct EscapeHelp<'a>(&'a str);

impl fmt::Display for EscapeHelp<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// Label value escaping: backslash, double quote and newline.
struct EscapeLabel<'a>(&'a str);

impl fmt::Display for EscapeLabel<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                '\n' => f.write_str("\\n")?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How often the idle server thread looks at its stop flag.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// A client that neither sends its request nor reads the answer in this time is dropped,
/// so one stuck scraper cannot hold the endpoint.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest request head read.
const MAX_REQUEST: usize = 8192;

/// Serves `GET /metrics` until dropped.
#[derive(Debug)]
pub struct MetricsServer {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` (port 0 picks a free port: see [`MetricsServer::local_addr`]) and
    /// serves `registry` from a thread named `tapflow-metrics`.
    pub fn start(addr: SocketAddr, registry: Arc<Metrics>) -> io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("metrics endpoint: cannot listen on {addr}: {e}"),
            )
        })?;
        // Non-blocking accept lets the thread notice the stop flag without a wake-up
        // connection, which a firewall or a wildcard address could make fail.
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            thread::Builder::new()
                .name("tapflow-metrics".into())
                .spawn(move || serve(&listener, &registry, &stop))?
        };
        Ok(MetricsServer {
            local_addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(listener: &TcpListener, registry: &Metrics, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, peer)) => {
                if let Err(e) = answer(stream, registry) {
                    log::debug!("metrics endpoint: request from {peer}: {e}");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(POLL_INTERVAL),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // Out of file descriptors and the like: say so, back off, keep serving.
                log::warn!("metrics endpoint: accept failed: {e}");
                thread::sleep(POLL_INTERVAL * 10);
            }
        }
    }
}

/// Reads one request head and answers it; the connection closes after.
fn answer(mut stream: TcpStream, registry: &Metrics) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_REQUEST {
            return respond(
                &mut stream,
                431,
                "Request Header Fields Too Large",
                "",
                false,
            );
        }
    }
    let head = String::from_utf8_lossy(&head);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return respond(&mut stream, 400, "Bad Request", "bad request line\n", true);
    };
    if !version.starts_with("HTTP/1.") {
        return respond(&mut stream, 400, "Bad Request", "HTTP/1.x only\n", true);
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return respond(&mut stream, 405, "Method Not Allowed", "use GET\n", true),
    };
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if path == "/metrics" {
        let body = registry.render();
        let body = if head_only { "" } else { body.as_str() };
        respond(&mut stream, 200, "OK", body, !head_only)
    } else if path == "/top" {
        match registry.top_json() {
            Some(body) => respond_as(&mut stream, 200, "OK", JSON_TYPE, &body, !head_only),
            None => respond(
                &mut stream,
                404,
                "Not Found",
                "no live view: the [monitor] section is off\n",
                !head_only,
            ),
        }
    } else {
        respond(
            &mut stream,
            404,
            "Not Found",
            "tapflow serves its metrics at /metrics\n",
            !head_only,
        )
    }
}

const JSON_TYPE: &str = "application/json";

fn respond(
    stream: &mut TcpStream,
    code: u16,
    reason: &str,
    body: &str,
    with_body: bool,
) -> io::Result<()> {
    respond_as(stream, code, reason, CONTENT_TYPE, body, with_body)
}

fn respond_as(
    stream: &mut TcpStream,
    code: u16,
    reason: &str,
    content_type: &str,
    body: &str,
    with_body: bool,
) -> io::Result<()> {
    let mut response = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n",
        body.len()
    );
    if code == 405 {
        response.push_str("Allow: GET, HEAD\r\n");
    }
    response.push_str("\r\n");
    if with_body {
        response.push_str(body);
    }
    stream.write_all(response.as_bytes())?;
    stream.flush()?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashMap, HashSet};

    /// One parsed sample line: name, labels, value.
    type Sample = (String, BTreeMap<String, String>, f64);

    fn is_metric_name(s: &str) -> bool {
        let mut chars = s.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    /// Parses `name{a="x",b="y"} value` independently of the renderer; `Err` on any
    /// deviation from the exposition format.
    fn parse_sample(line: &str) -> Result<Sample, String> {
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| format!("no value: {line}"))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(format!("bad metric name {name:?}"));
        }
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(after) = rest.strip_prefix('{') {
            let mut chars = after.char_indices().peekable();
            loop {
                let start = chars.peek().map(|&(i, _)| i).ok_or("unterminated labels")?;
                if after[start..].starts_with('}') {
                    rest = &after[start + 1..];
                    break;
                }
                let eq = after[start..].find('=').ok_or("label without =")? + start;
                let label = &after[start..eq];
                if !is_metric_name(label) || label.contains(':') {
                    return Err(format!("bad label name {label:?}"));
                }
                while chars.peek().is_some_and(|&(i, _)| i <= eq) {
                    chars.next();
                }
                if chars.next().map(|(_, c)| c) != Some('"') {
                    return Err("label value not quoted".into());
                }
                let mut value = String::new();
                loop {
                    match chars.next().ok_or("unterminated label value")?.1 {
                        '"' => break,
                        '\\' => match chars.next().ok_or("dangling escape")?.1 {
                            '\\' => value.push('\\'),
                            '"' => value.push('"'),
                            'n' => value.push('\n'),
                            c => return Err(format!("bad escape \\{c}")),
                        },
                        '\n' => return Err("raw newline in label value".into()),
                        c => value.push(c),
                    }
                }
                if labels.insert(label.to_string(), value).is_some() {
                    return Err(format!("label {label} repeated"));
                }
                if let Some(&(_, ',')) = chars.peek() {
                    chars.next();
                }
            }
        }
        let value = rest
            .strip_prefix(' ')
            .ok_or_else(|| format!("no space before value: {line}"))?;
        let value: f64 = value
            .parse()
            .map_err(|_| format!("bad value {value:?} in {line}"))?;
        Ok((name.to_string(), labels, value))
    }

    /// Checks a whole exposition: HELP and TYPE exactly once per family, before its
    /// samples; every sample's family declared; no sample repeated.
    fn parse_exposition(text: &str) -> Result<Vec<Sample>, String> {
        let mut helps = HashSet::new();
        let mut types = HashMap::new();
        let mut seen = HashSet::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or("");
                if !helps.insert(name.to_string()) {
                    return Err(format!("HELP twice for {name}"));
                }
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').ok_or("TYPE without type")?;
                if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                    return Err(format!("bad type {kind}"));
                }
                if types.insert(name.to_string(), kind.to_string()).is_some() {
                    return Err(format!("TYPE twice for {name}"));
                }
            } else if line.starts_with('#') || line.is_empty() {
                return Err(format!("unexpected line {line:?}"));
            } else {
                let sample = parse_sample(line)?;
                if !helps.contains(&sample.0) || !types.contains_key(&sample.0) {
                    return Err(format!("{} has no HELP/TYPE before it", sample.0));
                }
                if types[&sample.0] == "counter" && !sample.0.ends_with("_total") {
                    return Err(format!("counter {} does not end in _total", sample.0));
                }
                if !seen.insert((sample.0.clone(), sample.1.clone())) {
                    return Err(format!("sample repeated: {line}"));
                }
                samples.push(sample);
            }
        }
        if helps.len() != types.len() {
            return Err("a family has HELP without TYPE or the reverse".into());
        }
        Ok(samples)
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn value_of(samples: &[Sample], name: &str, l: &[(&str, &str)]) -> Option<f64> {
        let l = labels(l);
        samples
            .iter()
            .find(|(n, ls, _)| n == name && *ls == l)
            .map(|s| s.2)
    }

    fn http(addr: SocketAddr, request: &str) -> (String, String) {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").expect("no header end");
        (head.to_string(), body.to_string())
    }

    #[test]
    fn scrape_returns_valid_exposition_with_the_values_set() {
        let metrics = Arc::new(Metrics::new());
        metrics.add(&RX_PACKETS, &["0"], 1000);
        metrics.add(&RX_PACKETS, &["1"], 7);
        let worker0 = metrics.metric(&RX_PACKETS, &["0"]);
        worker0.add(24);
        metrics.set(&NIC_MISSED, &["0000:01:00.0"], 5);
        metrics.set(&FLOWS_ACTIVE, &[], 4242);
        metrics.add(&FLOWS_EXPIRED, &["idle"], 3);
        metrics.add(&FLOWS_EXPIRED, &["end_of_flow"], 2);
        metrics.add(&EXPORT_DATAGRAMS, &["nfcapd \"main\"\\ site\nB"], 9);
        metrics.set(&BUILD_INFO, &["0.1.0", "22.11.11"], 1);

        let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), metrics.clone()).unwrap();
        let (head, body) = http(
            server.local_addr(),
            "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\n\r\n",
        );
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.contains("Content-Type: text/plain; version=0.0.4"),
            "{head}"
        );
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(length, body.len());

        let samples = parse_exposition(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
        let v = |name, l: &[(&str, &str)]| value_of(&samples, name, l);
        assert_eq!(
            v("tapflow_rx_packets_total", &[("worker", "0")]),
            Some(1024.0)
        );
        assert_eq!(v("tapflow_rx_packets_total", &[("worker", "1")]), Some(7.0));
        assert_eq!(
            v("tapflow_nic_missed_total", &[("port", "0000:01:00.0")]),
            Some(5.0)
        );
        assert_eq!(v("tapflow_flows_active", &[]), Some(4242.0));
        assert_eq!(
            v("tapflow_flows_expired_total", &[("reason", "idle")]),
            Some(3.0)
        );
        assert_eq!(
            v("tapflow_flows_expired_total", &[("reason", "end_of_flow")]),
            Some(2.0)
        );
        // The escaped label value comes back exactly.
        assert_eq!(
            v(
                "tapflow_export_datagrams_total",
                &[("collector", "nfcapd \"main\"\\ site\nB")]
            ),
            Some(9.0)
        );
        assert_eq!(
            v(
                "tapflow_build_info",
                &[("version", "0.1.0"), ("dpdk", "22.11.11")]
            ),
            Some(1.0)
        );
        // Unlabelled families are scraped at 0 before anything happened.
        assert_eq!(v("tapflow_sampled_out_total", &[]), Some(0.0));
        assert_eq!(
            v("tapflow_export_queue_dropped_records_total", &[]),
            Some(0.0)
        );
        // Every standard family is declared, labelled or not.
        for family in STANDARD_FAMILIES {
            assert!(
                body.contains(&format!("# TYPE {} {}\n", family.name, family.kind.name())),
                "{} missing",
                family.name
            );
        }

        // A later scrape sees later values.
        worker0.add(1);
        let (_, body) = http(server.local_addr(), "GET /metrics HTTP/1.0\r\n\r\n");
        let samples = parse_exposition(&body).unwrap();
        assert_eq!(
            value_of(&samples, "tapflow_rx_packets_total", &[("worker", "0")]),
            Some(1025.0)
        );
    }

    #[test]
    fn top_serves_its_source_as_json_and_is_a_404_without_one() {
        let metrics = Arc::new(Metrics::new());
        let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), metrics.clone()).unwrap();
        let (head, body) = http(server.local_addr(), "GET /top HTTP/1.0\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 404 "), "{head}");
        assert!(body.contains("[monitor]"), "{body}");
        let shown = Arc::new(AtomicU64::new(0));
        let counter = shown.clone();
        metrics.serve_top(TopSource(Arc::new(move || {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            Some(format!("{{\"refresh\":{n}}}"))
        })));
        for n in 0..2 {
            let (head, body) = http(server.local_addr(), "GET /top HTTP/1.1\r\n\r\n");
            assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
            assert!(head.contains("Content-Type: application/json"), "{head}");
            assert_eq!(
                body,
                format!("{{\"refresh\":{n}}}"),
                "each request reads it anew"
            );
        }
    }

    #[test]
    fn other_paths_and_methods_are_refused() {
        let server =
            MetricsServer::start("127.0.0.1:0".parse().unwrap(), Arc::new(Metrics::new())).unwrap();
        let (head, _) = http(server.local_addr(), "GET / HTTP/1.1\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 404 "), "{head}");
        let (head, _) = http(server.local_addr(), "GET /metricsx HTTP/1.1\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 404 "), "{head}");
        let (head, _) = http(server.local_addr(), "POST /metrics HTTP/1.1\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 405 "), "{head}");
        assert!(head.contains("Allow: GET, HEAD"), "{head}");
        let (head, _) = http(server.local_addr(), "garbage\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
        let (head, body) = http(server.local_addr(), "HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        assert_eq!(body, "");
        // Still serving after the refusals.
        let (head, body) = http(server.local_addr(), "GET /metrics?x=1 HTTP/1.1\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        assert!(parse_exposition(&body).is_ok());
    }

    #[test]
    fn dropping_the_server_closes_the_port() {
        let server =
            MetricsServer::start("127.0.0.1:0".parse().unwrap(), Arc::new(Metrics::new())).unwrap();
        let addr = server.local_addr();
        drop(server);
        let err = TcpStream::connect(addr).expect_err("still listening after drop");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn binding_a_busy_port_names_the_address() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = MetricsServer::start(addr, Arc::new(Metrics::new())).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }

    #[test]
    fn handles_from_any_thread_update_one_series() {
        let metrics = Arc::new(Metrics::empty());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let metrics = metrics.clone();
                thread::spawn(move || {
                    for _ in 0..1000 {
                        metrics.metric(&FLOWS_CREATED, &[]).inc();
                        metrics.add(&EXPORT_RECORDS, &["c1"], 2);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(metrics.value(&FLOWS_CREATED, &[]), Some(4000));
        assert_eq!(metrics.value(&EXPORT_RECORDS, &["c1"]), Some(8000));
        assert_eq!(metrics.value(&EXPORT_RECORDS, &["c2"]), None);
        let samples = parse_exposition(&metrics.render()).unwrap();
        assert_eq!(samples.len(), 2);
    }

    #[test]
    fn the_checker_rejects_malformed_expositions() {
        // The checker above is what the endpoint tests rely on: make sure it can fail.
        for bad in [
            "x_total 1\n",
            "# HELP x_total h\n# TYPE x_total counter\nx_total{a=\"1} 2\n",
            "# HELP x_total h\n# TYPE x_total counter\nx_total{a=1} 2\n",
            "# HELP x_total h\n# TYPE x_total counter\nx_total 1\nx_total 2\n",
            "# HELP x_total h\n# HELP x_total h\n# TYPE x_total counter\n",
            "# HELP x h\n# TYPE x counter\nx 1\n",
            "# HELP x_total h\n# TYPE x_total counter\nx_total one\n",
        ] {
            assert!(parse_exposition(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn every_family_is_documented() {
        let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/METRICS.md"))
            .unwrap();
        for family in STANDARD_FAMILIES {
            let row = docs
                .lines()
                .find(|l| l.starts_with(&format!("| `{}` |", family.name)))
                .unwrap_or_else(|| panic!("docs/METRICS.md has no row for {}", family.name));
            assert!(
                row.contains(&format!("| {} |", family.kind.name())),
                "{row}"
            );
            for label in family.labels {
                assert!(
                    row.contains(&format!("`{label}`")),
                    "{row} lacks label {label}"
                );
            }
        }
    }

    #[test]
    #[should_panic(expected = "takes labels")]
    fn wrong_label_count_is_a_caller_bug() {
        Metrics::new().metric(&RX_PACKETS, &[]);
    }
}
