//! The Prometheus endpoint: a running pipeline's counters in the text exposition format
//! (version 0.0.4) at `GET /metrics`, with the standard process metrics.
//!
//! Nothing here names a counter. The families come from the statistics structs'
//! declarations ([`flowcache::counters!`](macro@flowcache::counters)): a worker's and its
//! cache's counters carry the labels `worker`, `port` and `queue`; the NIC's belong to the
//! port and appear once per port; a collector's carry `collector`; an extension's become
//! `tapflow_<extension>_<name>_total`. A scrape renders the workers' last published
//! snapshots, so the data plane never waits for it. `docs/METRICS.md` documents every
//! family, and a test holds it to what [`render`] emits.
//!
//! The server answers each connection on a thread of its own (at most
//! [`MAX_CONNECTIONS`]; past that the oldest connection still sending its request is
//! closed), and every request must arrive within [`REQUEST_DEADLINE`]: idle or trickling
//! clients cannot hold a scrape back. One request per connection, no keep-alive: all a
//! Prometheus scraper needs.

use std::collections::VecDeque;
use std::fmt::{self, Write as _};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use exporter::CollectorCounters;
use flowcache::counters::{CounterSet, Kind, Series, Spec};
use monitors::analyzers::{DestinationTop, DestinationTotals};
use probe::SourceStats;
use probe::worker::WorkerSnapshot;

/// A series' labels besides the field's own: (name, value).
pub type Labels = Vec<(&'static str, String)>;

/// Writes the text exposition format: a family's `# HELP` and `# TYPE`, then its samples.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", EscapeHelp(help));
        let _ = writeln!(self.text, "# TYPE {name} {}", kind.name());
    }

    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl fmt::Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{label}=\"{}\"", EscapeLabel(value));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    /// Every exported family of `C`, each with one series per item (labelled with the
    /// item's labels, then the field's own label). Fields sharing a family are rendered
    /// under one header. `prefix` and `suffix` wrap the declared family name (extension
    /// counters declare only their own part).
    pub fn counters<C: CounterSet>(&mut self, items: &[(Labels, C)], prefix: &str) {
        let series: Vec<Vec<Series>> = items.iter().map(|(_, c)| c.series()).collect();
        self.series_families(C::SPECS, items.iter().map(|(l, _)| l).zip(&series), prefix);
    }

    fn series_families<'a>(
        &mut self,
        specs: &[Spec],
        items: impl Iterator<Item = (&'a Labels, &'a Vec<Series>)> + Clone,
        prefix: &str,
    ) {
        let mut done: Vec<&str> = Vec::new();
        for spec in specs {
            if !spec.exported() || done.contains(&spec.family) {
                continue;
            }
            done.push(spec.family);
            let name = family_name(prefix, spec);
            self.family(&name, spec.kind, spec.help);
            for (labels, series) in items.clone() {
                for one in series.iter().filter(|s| s.spec.family == spec.family) {
                    let mut all: Vec<(&str, &str)> =
                        labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                    if !one.spec.label.is_empty() {
                        all.push((one.spec.label, one.label_value));
                    }
                    self.sample(&name, &all, one.value);
                }
            }
        }
    }

    pub fn finish(self) -> String {
        self.text
    }
}

/// The family name of a spec: declared whole, or (extension counters) wrapped as
/// `<prefix><name>_total`.
fn family_name(prefix: &str, spec: &Spec) -> String {
    if prefix.is_empty() {
        spec.family.to_string()
    } else if spec.kind == Kind::Counter {
        format!("{prefix}{}_total", spec.family)
    } else {
        format!("{prefix}{}", spec.family)
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

/// One worker as the endpoint shows it: where it receives, and its last snapshot.
#[derive(Clone, Debug, Default)]
pub struct WorkerView {
    /// The port's `name` (or device name) and the receive queue the worker polls.
    pub port: String,
    pub queue: u16,
    pub snapshot: WorkerSnapshot,
}

/// What a scrape shows of a running pipeline.
#[derive(Clone, Debug, Default)]
pub struct RunView {
    pub workers: Vec<WorkerView>,
    pub collectors: Vec<(String, CollectorCounters)>,
    /// Events the event output received, by type.
    pub events: Vec<(&'static str, u64)>,
    /// Per-destination accounting's busiest destinations, summed over the workers.
    pub destinations: Option<DestinationTop>,
}

const FLOWS_ACTIVE: Spec = Spec::gauge(
    "tapflow_flows_active",
    "flows active",
    "Flows currently in each worker's flow cache.",
);
const EVENTS: Spec = Spec::counter(
    "tapflow_events_total",
    "events",
    "Events the extensions emitted, by type, as the event output received them.",
);
const DESTINATION_TOP_OCTETS: Spec = Spec::gauge(
    "tapflow_destination_top_octets",
    "busiest destinations: octets",
    "IP octets to each of the busiest destination prefixes ([analyzers.per_destination]) over the last finished interval, summed over the workers; rank 1 is the busiest.",
);
const DESTINATION_TOP_PACKETS: Spec = Spec::gauge(
    "tapflow_destination_top_packets",
    "busiest destinations: packets",
    "Packets to each of the busiest destination prefixes over the same interval, ranked as tapflow_destination_top_octets.",
);
const DESTINATION_TOP_INTERVAL: Spec = Spec::gauge(
    "tapflow_destination_top_interval_start_seconds",
    "busiest destinations: interval start",
    "Start of the interval the busiest destinations were counted over, Unix seconds (packet time).",
);
const BUILD_INFO: Spec = Spec::gauge(
    "tapflow_build_info",
    "",
    "Always 1; the labels tell the tapflow and DPDK versions running.",
);

/// The whole exposition of a run: build and process metrics, then every family of the
/// workers, caches, ports, collectors, events and extensions.
pub fn render(view: &RunView) -> String {
    let mut out = Exposition::default();
    out.family(BUILD_INFO.family, BUILD_INFO.kind, BUILD_INFO.help);
    out.sample(
        BUILD_INFO.family,
        &[
            ("version", env!("CARGO_PKG_VERSION")),
            ("dpdk", env!("TAPFLOW_DPDK_VERSION")),
        ],
        1,
    );
    process_metrics(&mut out);

    let worker_labels = |id: usize, w: &WorkerView| {
        vec![
            ("worker", id.to_string()),
            ("port", w.port.clone()),
            ("queue", w.queue.to_string()),
        ]
    };
    let per_worker = |f: &dyn Fn(&WorkerSnapshot) -> u64| -> Vec<_> {
        view.workers
            .iter()
            .enumerate()
            .map(|(id, w)| (worker_labels(id, w), f(&w.snapshot)))
            .collect()
    };
    out.counters(
        &view
            .workers
            .iter()
            .enumerate()
            .map(|(id, w)| (worker_labels(id, w), w.snapshot.worker))
            .collect::<Vec<_>>(),
        "",
    );
    out.counters(
        &view
            .workers
            .iter()
            .enumerate()
            .map(|(id, w)| (worker_labels(id, w), w.snapshot.cache))
            .collect::<Vec<_>>(),
        "",
    );
    out.family(FLOWS_ACTIVE.family, FLOWS_ACTIVE.kind, FLOWS_ACTIVE.help);
    for (labels, value) in per_worker(&|s| s.flows_active) {
        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        out.sample(FLOWS_ACTIVE.family, &labels, value);
    }

    // The device counters are the port's: one queue of each reports them, so the sum over
    // a port's workers is the port's, shown once.
    let mut ports: Vec<(Labels, SourceStats)> = Vec::new();
    for w in &view.workers {
        match ports.iter_mut().find(|(labels, _)| labels[0].1 == w.port) {
            Some((_, stats)) => stats.merge(&w.snapshot.source),
            None => ports.push((vec![("port", w.port.clone())], w.snapshot.source)),
        }
    }
    out.counters(&ports, "");

    out.counters(
        &view
            .collectors
            .iter()
            .map(|(name, c)| (vec![("collector", name.clone())], *c))
            .collect::<Vec<_>>(),
        "",
    );

    out.family(EVENTS.family, EVENTS.kind, EVENTS.help);
    for (kind, n) in &view.events {
        out.sample(EVENTS.family, &[("type", kind)], n);
    }

    if let Some(top) = &view.destinations {
        destination_top(&mut out, top);
    }

    // Extension counters: every worker runs the same extensions, each reporting its series.
    let mut extensions: Vec<&'static str> = Vec::new();
    for w in &view.workers {
        for (name, _) in &w.snapshot.extensions {
            if !extensions.contains(name) {
                extensions.push(name);
            }
        }
    }
    for extension in extensions {
        let items: Vec<(Labels, Vec<Series>)> = view
            .workers
            .iter()
            .enumerate()
            .filter_map(|(id, w)| {
                let (_, series) = w
                    .snapshot
                    .extensions
                    .iter()
                    .find(|(name, _)| *name == extension)?;
                Some((worker_labels(id, w), series.clone()))
            })
            .collect();
        let mut specs: Vec<Spec> = Vec::new();
        for (_, series) in &items {
            for s in series {
                if !specs.iter().any(|spec| spec.family == s.spec.family) {
                    specs.push(*s.spec);
                }
            }
        }
        out.series_families(
            &specs,
            items.iter().map(|(l, s)| (l, s)),
            &format!("tapflow_{extension}_"),
        );
    }
    out.finish()
}

/// The busiest destinations of the last finished per-destination interval: one series
/// per destination and rank in each of the octets and packets families.
fn destination_top(out: &mut Exposition, top: &DestinationTop) {
    let i = DESTINATION_TOP_INTERVAL;
    out.family(i.family, i.kind, i.help);
    out.sample(i.family, &[], top.interval_start_us as f64 / 1_000_000.0);
    type Figure = fn(&DestinationTotals) -> u64;
    let families: [(Spec, Figure); 2] = [
        (DESTINATION_TOP_OCTETS, |d| d.octets),
        (DESTINATION_TOP_PACKETS, |d| d.packets),
    ];
    for (spec, value) in families {
        out.family(spec.family, spec.kind, spec.help);
        for (rank, d) in top.destinations.iter().enumerate() {
            let rank = (rank + 1).to_string();
            out.sample(
                spec.family,
                &[("destination", &d.destination), ("rank", &rank)],
                value(d),
            );
        }
    }
}

/// The process metrics every Prometheus client library exports, from /proc.
fn process_metrics(out: &mut Exposition) {
    let Some(process) = ProcessStats::read() else {
        return;
    };
    out.family(
        "process_cpu_seconds_total",
        Kind::Counter,
        "Total user and system CPU time spent in seconds.",
    );
    out.sample("process_cpu_seconds_total", &[], process.cpu_seconds);
    out.family(
        "process_resident_memory_bytes",
        Kind::Gauge,
        "Resident memory size in bytes.",
    );
    out.sample("process_resident_memory_bytes", &[], process.resident_bytes);
    out.family(
        "process_open_fds",
        Kind::Gauge,
        "Number of open file descriptors.",
    );
    out.sample("process_open_fds", &[], process.open_fds);
    out.family(
        "process_start_time_seconds",
        Kind::Gauge,
        "Start time of the process since unix epoch in seconds.",
    );
    out.sample(
        "process_start_time_seconds",
        &[],
        process.start_time_seconds,
    );
}

/// The unit of /proc's CPU and start times. Linux fixes it at 100 for user space
/// whatever the kernel's tick (sysconf(_SC_CLK_TCK) returns it); Prometheus' own /proc
/// reader assumes the same.
const USER_HZ: f64 = 100.0;

/// This process's figures, as /proc tells them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub open_fds: u64,
    pub start_time_seconds: f64,
}

impl ProcessStats {
    /// None where /proc is missing or unreadable.
    pub fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name (field 2) may hold spaces and parentheses: fields are counted
        // after its closing parenthesis, which is followed by field 3 (state).
        let after = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
        let cpu_ticks = field(14)? + field(15)?;
        let start_ticks = field(22)?;
        let rss_kb: u64 = std::fs::read_to_string("/proc/self/status")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        let boot_time: u64 = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        Some(ProcessStats {
            cpu_seconds: cpu_ticks as f64 / USER_HZ,
            resident_bytes: rss_kb * 1024,
            // read_dir holds one descriptor of its own while listing.
            open_fds: open_fds.saturating_sub(1),
            start_time_seconds: boot_time as f64 + start_ticks as f64 / USER_HZ,
        })
    }
}

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How often the idle accept loop looks at its stop flag.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// A client must have sent its whole request by then, however it trickles, and read the
/// answer within as long again: a stuck or hostile client holds only its own connection.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// Connections served at once; past that, the oldest one still sending its request is
/// closed to make room, so idle connections cannot lock scrapers out.
pub const MAX_CONNECTIONS: usize = 64;
/// Longest request head read.
const MAX_REQUEST: usize = 8192;

/// What the server shows: rendered afresh for each scrape.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// The JSON body of `GET /top` (the millisecond monitor's live view), read afresh for each
/// request; `None` while there is nothing to show.
pub type TopSource = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// Everything one connection may be asked for.
#[derive(Clone)]
struct Pages {
    metrics: Render,
    top: Option<TopSource>,
}

/// Serves `GET /metrics` until dropped.
pub struct MetricsServer {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    connections: Arc<Connections>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsServer")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl MetricsServer {
    /// Binds `addr` (port 0 picks a free port: see [`MetricsServer::local_addr`]) and
    /// serves what `render` returns from a thread named `tapflow-metrics`.
    pub fn start(addr: SocketAddr, render: Render) -> io::Result<MetricsServer> {
        MetricsServer::start_with_top(addr, render, None)
    }

    /// [`MetricsServer::start`], also serving `top` at `GET /top` as JSON.
    pub fn start_with_top(
        addr: SocketAddr,
        render: Render,
        top: Option<TopSource>,
    ) -> io::Result<MetricsServer> {
        let pages = Pages {
            metrics: render,
            top,
        };
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
        let connections = Arc::new(Connections::default());
        let thread = {
            let stop = stop.clone();
            let connections = connections.clone();
            thread::Builder::new()
                .name("tapflow-metrics".into())
                .spawn(move || serve(&listener, &pages, &stop, &connections))?
        };
        Ok(MetricsServer {
            local_addr,
            stop,
            connections,
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
        self.connections.close_all();
    }
}

/// The connections being served, oldest first, so the oldest still reading its request
/// can be closed when the cap is reached.
#[derive(Debug, Default)]
struct Connections {
    open: Mutex<VecDeque<Open>>,
    next_id: AtomicU64,
}

#[derive(Debug)]
struct Open {
    id: u64,
    stream: TcpStream,
    /// Its request is complete and being answered: not closed to make room.
    answering: bool,
}

impl Connections {
    /// Registers a connection; `None` when every slot is answering a request.
    fn admit(&self, stream: &TcpStream) -> Option<u64> {
        let handle = stream.try_clone().ok()?;
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.len() >= MAX_CONNECTIONS {
            let oldest = open.iter().position(|o| !o.answering)?;
            let evicted = open.remove(oldest)?;
            // Its thread's read returns at once and the thread ends.
            let _ = evicted.stream.shutdown(Shutdown::Both);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        open.push_back(Open {
            id,
            stream: handle,
            answering: false,
        });
        Some(id)
    }

    fn answering(&self, id: u64) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(o) = open.iter_mut().find(|o| o.id == id) {
            o.answering = true;
        }
    }

    fn release(&self, id: u64) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.retain(|o| o.id != id);
    }

    fn close_all(&self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        for o in open.drain(..) {
            let _ = o.stream.shutdown(Shutdown::Both);
        }
    }
}

fn serve(listener: &TcpListener, pages: &Pages, stop: &AtomicBool, connections: &Arc<Connections>) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, peer)) => {
                let Some(id) = connections.admit(&stream) else {
                    log::debug!(
                        "metrics endpoint: {MAX_CONNECTIONS} requests in progress, closing {peer}"
                    );
                    continue;
                };
                let pages = pages.clone();
                let connections_for_thread = connections.clone();
                let spawned = thread::Builder::new()
                    .name("tapflow-metrics-conn".into())
                    .spawn(move || {
                        if let Err(e) =
                            answer(stream, &pages, || connections_for_thread.answering(id))
                        {
                            log::debug!("metrics endpoint: request from {peer}: {e}");
                        }
                        connections_for_thread.release(id);
                    });
                if let Err(e) = spawned {
                    log::warn!("metrics endpoint: cannot start a connection thread: {e}");
                    connections.release(id);
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

/// Reads one request head (by [`REQUEST_DEADLINE`], however slowly it comes) and answers
/// it; the connection closes after.
fn answer(mut stream: TcpStream, pages: &Pages, answering: impl FnOnce()) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(REQUEST_DEADLINE))?;
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return respond(
                &mut stream,
                408,
                "Request Timeout",
                "request too slow\n",
                true,
            );
        }
        stream.set_read_timeout(Some(left))?;
        let n = match stream.read(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return respond(
                    &mut stream,
                    408,
                    "Request Timeout",
                    "request too slow\n",
                    true,
                );
            }
            Err(e) => return Err(e),
        };
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
    answering();
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
        let body = (pages.metrics)();
        let body = if head_only { "" } else { body.as_str() };
        respond(&mut stream, 200, "OK", body, !head_only)
    } else if path == "/top" {
        match pages.top.as_ref().and_then(|top| top()) {
            Some(body) => respond_as(&mut stream, 200, "OK", JSON_TYPE, &body, !head_only),
            None => respond(
                &mut stream,
                404,
                "Not Found",
                "no live view: [monitor] and [analyzers.per_destination] are off\n",
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
    let _ = stream.shutdown(Shutdown::Write);
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

    fn empty_render() -> Render {
        Arc::new(|| render(&RunView::default()))
    }

    flowcache::counters! {
        #[derive(Clone, Copy, Debug, Default)]
        struct ProbeStats {
            seen: u64 = Spec::counter("seen", "packets seen", "Packets the test extension saw."),
            depth: u64 = Spec::gauge("depth", "table depth", "Entries the test extension holds."),
        }
    }

    /// Three workers: port p0 with queues 0 and 1, port p1 with queue 0; two collectors,
    /// events of two types and an extension.
    fn sample_run() -> RunView {
        let worker = |port: &str, queue: u16, packets: u64, missed: u64| {
            let mut snapshot = WorkerSnapshot::default();
            snapshot.worker.packets = packets;
            snapshot.worker.bytes = packets * 100;
            snapshot.worker.parse_stops[probe::parse::StopReason::Complete as usize] = packets;
            snapshot.worker.parse_stops[probe::parse::StopReason::NonIp as usize] = 2;
            snapshot.cache.expired[flowcache::EndReason::Idle as usize] = 3;
            snapshot.cache.reordered = 4;
            snapshot.source.rx_missed = missed;
            snapshot.flows_active = packets / 10;
            snapshot.extensions = vec![(
                "probe_ext",
                ProbeStats {
                    seen: packets,
                    depth: 9,
                }
                .series(),
            )];
            WorkerView {
                port: port.to_string(),
                queue,
                snapshot,
            }
        };
        RunView {
            workers: vec![
                worker("p0", 0, 1000, 5),
                worker("p0", 1, 700, 0),
                worker("p1", 0, 10, 7),
            ],
            collectors: vec![
                (
                    "nfcapd \"main\"\\ site\nB".to_string(),
                    CollectorCounters {
                        datagrams: 9,
                        ..Default::default()
                    },
                ),
                (
                    "c2".to_string(),
                    CollectorCounters {
                        records: 11,
                        ..Default::default()
                    },
                ),
            ],
            events: vec![("syn_flood", 2), ("heavy_hitter", 1)],
            destinations: Some(monitors::analyzers::DestinationTop {
                interval_start_us: 1_700_000_010_500_000,
                interval_us: 10_000_000,
                destinations: vec![
                    monitors::analyzers::DestinationTotals {
                        destination: "192.0.2.0/24".into(),
                        packets: 30,
                        octets: 9_000,
                    },
                    monitors::analyzers::DestinationTotals {
                        destination: "2001:db8::/48".into(),
                        packets: 40,
                        octets: 4_000,
                    },
                ],
            }),
        }
    }

    #[test]
    fn a_run_renders_as_valid_exposition_with_every_series_labelled_where_it_belongs() {
        let body = render(&sample_run());
        let samples = parse_exposition(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
        let v = |name, l: &[(&str, &str)]| value_of(&samples, name, l);
        let w = |id: &'static str, port: &'static str, queue: &'static str| {
            [("worker", id), ("port", port), ("queue", queue)]
        };
        assert_eq!(
            v("tapflow_rx_packets_total", &w("0", "p0", "0")),
            Some(1000.0)
        );
        assert_eq!(
            v("tapflow_rx_packets_total", &w("1", "p0", "1")),
            Some(700.0)
        );
        assert_eq!(
            v("tapflow_rx_bytes_total", &w("2", "p1", "0")),
            Some(1000.0)
        );
        assert_eq!(v("tapflow_flows_active", &w("1", "p0", "1")), Some(70.0));
        // The NIC's counters are the port's: once per port, no worker or queue label.
        assert_eq!(v("tapflow_nic_missed_total", &[("port", "p0")]), Some(5.0));
        assert_eq!(v("tapflow_nic_missed_total", &[("port", "p1")]), Some(7.0));
        assert_eq!(
            samples
                .iter()
                .filter(|s| s.0.starts_with("tapflow_nic_"))
                .count(),
            2 * 4,
            "four NIC families, two ports"
        );
        // Labelled fields: parse stops by reason (a complete parse is no stop), ends by
        // reason, corrections by kind.
        let mut stop = w("0", "p0", "0").to_vec();
        stop.push(("reason", "non_ip"));
        assert_eq!(v("tapflow_parse_stops_total", &stop), Some(2.0));
        assert!(
            !samples
                .iter()
                .any(|s| s.1.get("reason").is_some_and(|r| r == "complete")),
            "{body}"
        );
        let mut idle = w("2", "p1", "0").to_vec();
        idle.push(("reason", "idle"));
        assert_eq!(v("tapflow_flows_expired_total", &idle), Some(3.0));
        let mut reordered = w("2", "p1", "0").to_vec();
        reordered.push(("kind", "reordered"));
        assert_eq!(v("tapflow_cache_corrections_total", &reordered), Some(4.0));
        // The escaped label value comes back exactly.
        assert_eq!(
            v(
                "tapflow_export_datagrams_total",
                &[("collector", "nfcapd \"main\"\\ site\nB")]
            ),
            Some(9.0)
        );
        assert_eq!(
            v("tapflow_export_records_total", &[("collector", "c2")]),
            Some(11.0)
        );
        assert_eq!(
            v("tapflow_events_total", &[("type", "syn_flood")]),
            Some(2.0)
        );
        // The busiest destinations, by rank.
        let top =
            |name, destination, rank| v(name, &[("destination", destination), ("rank", rank)]);
        assert_eq!(
            top("tapflow_destination_top_octets", "192.0.2.0/24", "1"),
            Some(9_000.0)
        );
        assert_eq!(
            top("tapflow_destination_top_packets", "2001:db8::/48", "2"),
            Some(40.0)
        );
        assert_eq!(
            v("tapflow_destination_top_interval_start_seconds", &[]),
            Some(1_700_000_010.5)
        );
        // Extension counters: tapflow_<extension>_<name>_total, a gauge without _total.
        assert_eq!(
            v("tapflow_probe_ext_seen_total", &w("1", "p0", "1")),
            Some(700.0)
        );
        assert_eq!(v("tapflow_probe_ext_depth", &w("2", "p1", "0")), Some(9.0));
        assert_eq!(
            v(
                "tapflow_build_info",
                &[
                    ("version", env!("CARGO_PKG_VERSION")),
                    ("dpdk", env!("TAPFLOW_DPDK_VERSION"))
                ]
            ),
            Some(1.0)
        );
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_start_time_seconds",
        ] {
            assert!(v(name, &[]).is_some(), "{name} missing:\n{body}");
        }
    }

    #[test]
    fn the_endpoint_serves_the_rendering_of_the_moment() {
        let packets = Arc::new(AtomicU64::new(1000));
        let render: Render = {
            let packets = packets.clone();
            Arc::new(move || {
                let mut view = sample_run();
                view.workers[0].snapshot.worker.packets = packets.load(Ordering::Relaxed);
                super::render(&view)
            })
        };
        let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), render).unwrap();
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
        let labels = [("worker", "0"), ("port", "p0"), ("queue", "0")];
        let samples = parse_exposition(&body).unwrap();
        assert_eq!(
            value_of(&samples, "tapflow_rx_packets_total", &labels),
            Some(1000.0)
        );
        packets.store(1025, Ordering::Relaxed);
        let (_, body) = http(server.local_addr(), "GET /metrics HTTP/1.0\r\n\r\n");
        let samples = parse_exposition(&body).unwrap();
        assert_eq!(
            value_of(&samples, "tapflow_rx_packets_total", &labels),
            Some(1025.0)
        );
    }

    /// A scrape with a generous timeout; panics when it does not succeed.
    fn scrape_ok(addr: SocketAddr) -> Vec<Sample> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(60))
            .expect("connect to the endpoint");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .expect("the scrape was answered");
        let (head, body) = response.split_once("\r\n\r\n").expect("no header end");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        parse_exposition(body).unwrap()
    }

    #[test]
    fn idle_and_trickling_clients_do_not_hold_a_scrape_back() {
        let server = MetricsServer::start(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(|| render(&sample_run())),
        )
        .unwrap();
        let addr = server.local_addr();
        // 130 connections that never send a byte: more than the listen backlog (128) and
        // than the server's connection cap.
        let idle: Vec<TcpStream> = (0..130)
            .map(|_| TcpStream::connect(addr).expect("idle connection"))
            .collect();
        // A client sending its request one byte a second.
        let stop = Arc::new(AtomicBool::new(false));
        let slow = {
            let stop = stop.clone();
            thread::spawn(move || {
                let Ok(mut stream) = TcpStream::connect(addr) else {
                    return;
                };
                for byte in b"GET /metrics HTTP/1.1\r\nHost: slow\r\n\r\n" {
                    if stop.load(Ordering::Relaxed) || stream.write_all(&[*byte]).is_err() {
                        return;
                    }
                    thread::sleep(Duration::from_secs(1));
                }
            })
        };
        thread::sleep(Duration::from_millis(1500));
        for _ in 0..3 {
            let samples = scrape_ok(addr);
            assert!(
                value_of(
                    &samples,
                    "tapflow_rx_packets_total",
                    &[("worker", "0"), ("port", "p0"), ("queue", "0")]
                )
                .is_some()
            );
        }
        drop(idle);
        stop.store(true, Ordering::Relaxed);
        slow.join().unwrap();
    }

    #[test]
    fn a_request_that_does_not_arrive_in_time_is_refused_and_closed() {
        let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), empty_render()).unwrap();
        let mut stream = TcpStream::connect(server.local_addr()).unwrap();
        // Part of a request, then nothing: the server gives up at its deadline.
        stream.write_all(b"GET /metr").unwrap();
        stream.set_read_timeout(Some(REQUEST_DEADLINE * 6)).unwrap();
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .expect("the server closed the connection");
        assert!(response.starts_with("HTTP/1.1 408 "), "{response}");
    }

    #[test]
    fn process_metrics_agree_with_the_kernel() {
        let before = ProcessStats::read().expect("/proc is readable");
        let files: Vec<std::fs::File> = (0..64)
            .map(|_| std::fs::File::open("/dev/null").unwrap())
            .collect();
        let during = ProcessStats::read().unwrap();
        // Other tests open and close sockets concurrently: at least the 64 files show.
        assert!(
            during.open_fds >= before.open_fds.saturating_sub(16) + 64,
            "{before:?} {during:?}"
        );
        drop(files);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            during.start_time_seconds <= now + 1.0 && during.start_time_seconds > now - 3600.0,
            "start {} now {now}",
            during.start_time_seconds
        );
        // CPU time cannot exceed wall time on every core since the start.
        let cores = thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        assert!(
            during.cpu_seconds >= 0.0
                && during.cpu_seconds <= (now - during.start_time_seconds + 1.0) * cores,
            "{during:?}"
        );
        // ps(1) reads the resident size its own way; both see the same process.
        let ps = std::process::Command::new("ps")
            .args(["-o", "rss=", "-p", &std::process::id().to_string()])
            .output();
        if let Some(out) = ps.ok().filter(|o| o.status.success()) {
            let ps_kb: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
            let ours_kb = during.resident_bytes / 1024;
            assert!(
                ours_kb * 2 > ps_kb && ps_kb * 2 > ours_kb,
                "ours {ours_kb} kB, ps {ps_kb} kB"
            );
        }
    }

    /// The families of `docs/METRICS.md`'s tables: name, type, labels.
    fn documented_families() -> BTreeMap<String, (String, String)> {
        let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/METRICS.md"))
            .unwrap();
        docs.lines()
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
                (name.starts_with("tapflow_") || name.starts_with("process_")).then(|| {
                    (
                        name.to_string(),
                        (cells[2].to_string(), cells[3].to_string()),
                    )
                })
            })
            .collect()
    }

    /// A zero series for every label value of every spec.
    fn zero_series(specs: &'static [Spec]) -> Vec<Series> {
        specs
            .iter()
            .flat_map(|spec| {
                let values: Vec<&'static str> = if spec.values.is_empty() {
                    vec![""]
                } else {
                    spec.values
                        .iter()
                        .copied()
                        .filter(|v| !v.is_empty())
                        .collect()
                };
                values.into_iter().map(move |label_value| Series {
                    spec,
                    label_value,
                    value: 0,
                })
            })
            .collect()
    }

    #[test]
    fn the_document_lists_exactly_the_families_emitted() {
        // The sample run has a series in every family; the monitors' extensions are
        // attached to its first worker.
        let mut run = sample_run();
        for (extension, specs) in monitors::COUNTERS {
            run.workers[0]
                .snapshot
                .extensions
                .push((extension, zero_series(specs)));
        }
        run.workers[0].snapshot.extensions.push((
            "adaptive",
            zero_series(
                <probe::adaptive::AdaptiveCounters as flowcache::counters::CounterSet>::SPECS,
            ),
        ));
        let body = render(&run);
        let samples = parse_exposition(&body).unwrap();
        let documented = documented_families();
        let mut emitted = BTreeMap::new();
        for line in body.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                if !name.starts_with("tapflow_probe_ext_") {
                    emitted.insert(name.to_string(), kind.to_string());
                }
            }
        }
        for (name, kind) in &emitted {
            let (doc_kind, doc_labels) = documented
                .get(name)
                .unwrap_or_else(|| panic!("docs/METRICS.md has no row for {name}"));
            assert_eq!(doc_kind, kind, "{name}");
            let labels: HashSet<&String> = samples
                .iter()
                .filter(|s| &s.0 == name)
                .flat_map(|s| s.1.keys())
                .collect();
            for label in labels {
                assert!(
                    doc_labels.contains(&format!("`{label}`")),
                    "{name}: label {label} not documented ({doc_labels})"
                );
            }
        }
        for name in documented.keys() {
            assert!(
                emitted.contains_key(name),
                "docs/METRICS.md documents {name}, which is not emitted"
            );
        }
    }

    #[test]
    fn top_serves_its_source_as_json_and_is_a_404_without_one() {
        let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), empty_render()).unwrap();
        let (head, body) = http(server.local_addr(), "GET /top HTTP/1.0\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 404 "), "{head}");
        assert!(body.contains("[monitor]"), "{body}");
        let shown = Arc::new(AtomicU64::new(0));
        let counter = shown.clone();
        let top: TopSource = Arc::new(move || {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            Some(format!("{{\"refresh\":{n}}}"))
        });
        let server = MetricsServer::start_with_top(
            "127.0.0.1:0".parse().unwrap(),
            empty_render(),
            Some(top),
        )
        .unwrap();
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
        let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), empty_render()).unwrap();
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
        let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), empty_render()).unwrap();
        let addr = server.local_addr();
        drop(server);
        let err = TcpStream::connect(addr).expect_err("still listening after drop");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn binding_a_busy_port_names_the_address() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = MetricsServer::start(addr, empty_render()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
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
}
