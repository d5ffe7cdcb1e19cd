//! `tapflow bench`: how fast the data plane runs, against the most its packet source can
//! deliver on the same machine, measured in the same process.
//!
//! Each worker thread goes through the phases below one after the other, all workers at
//! once; every phase first warms up (every flow of the trace delivered once, and at least
//! [`WARM_UP`]), then counts for a fixed time:
//!
//! 1. **ceiling**: receive and free only (DPDK: `rte_eth_rx_burst` and
//!    `rte_pktmbuf_free_bulk`; synthetic: writing the burst's frames), nothing else;
//! 2. **source** (DPDK only): the same through `DpdkSource`, the worker's source type, with
//!    a sink that only counts, so the source's own per-burst cost shows;
//! 3. **worker**: `probe::worker::Worker`, exactly as `tapflow run` drives it (parse,
//!    sample, flow cache, expiry sweep, batches to the export loop on the main thread).
//!    With DPDK, the worker's window also holds **paired ceiling slices**: every
//!    [`CEILING_SLICE_EVERY`] the source runs the raw receive loop for [`CEILING_SLICE`]
//!    instead of feeding the worker, metered apart. The ratio divides the worker's rate by
//!    that paired ceiling (the same seconds, so the machine's drift cancels); the ratio to
//!    the ceiling's own phase is printed beside it.
//!
//! Sources: `--pcap FILE` replays the file in a loop through DPDK's pcap driver
//! (`infinite_rx=1`, one vdev per worker, each with a mempool holding the whole file);
//! `--synthetic FLOWS` rewrites the addresses of a few template frames per burst to cycle
//! through FLOWS flows, with no file and no DPDK, for flow counts a pcap cannot hold in
//! mbufs.
//!
//! Time: the worker runs with [`Clock::Wall`], as `tapflow run` does on live ports, and the
//! sources stamp packets with the time they were received (the pcap driver leaves looped
//! packets unstamped, so `DpdkSource` uses the TSC). A looped file's own timestamps repeat
//! every loop: with the replay clock (`Clock::Packet`) time would stand still after the
//! first loop and nothing would ever expire.

use std::fmt::Write as _;
use std::net::{SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use exporter::{CollectorConfig, ExportVersion, SessionConfig, TransportKind};
use flowcache::counters::CounterSet;
use flowcache::{CacheConfig, CacheStats, ENTRY_BYTES, EndReason, FlowKey, Sampler, SamplerSpec};
use probe::export_loop::{ExportLoopConfig, ExportReport};
use probe::parse::parse_frame;
use probe::pcap::FileSource;
use probe::synth::{FrameLen, FrameOptions, ProtocolMix, TrafficSpec};
use probe::worker::{Backpressure, Clock, WorkerStats, wall_clock_ms};
use probe::{BurstStatus, MAX_BURST, Packet, PacketSource, SourceError, SourceStats};

use crate::pipeline::{PipelineSpec, ThreadPlacement, report_rows, run_pipeline};
use crate::summary::{Table, thousands};
use tapflow::config::{Config, Purpose};

/// Shortest warm-up of a phase, even when every flow was delivered sooner.
const WARM_UP: Duration = Duration::from_millis(500);
/// A phase that has not finished its warm-up by then is stuck (a source delivering nothing).
const WARM_UP_LIMIT: Duration = Duration::from_secs(120);
/// Polls between two reads of the clock while measuring.
const POLLS_PER_CLOCK_READ: u32 = 16;
/// The DPDK ceiling is measured again in slices of this long inside the worker's window,
/// one every [`CEILING_SLICE_EVERY`] of it, so worker and ceiling see the same seconds of
/// a machine whose speed drifts (see [`MeasuredSource`]). Long enough that the switch
/// between the two loops is a small part of a slice: with 20 ms slices the paired ceiling
/// ran 13% below the ceiling's own phase, with 100 ms slices 7% (BENCHMARKS.md).
const CEILING_SLICE: Duration = Duration::from_millis(100);
const CEILING_SLICE_EVERY: Duration = Duration::from_millis(400);
/// Batches in flight to the export loop (as `tapflow run`'s default `queue_batches`).
const EXPORT_QUEUE_BATCHES: usize = 1024;
/// Ethernet's preamble, start delimiter, FCS and inter-frame gap: what a frame costs on the
/// wire beyond its captured bytes.
const WIRE_OVERHEAD_BYTES: u64 = 24;

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("traffic").required(true).args(["pcap", "synthetic"])))]
pub struct BenchArgs {
    /// Capture to replay in a loop through DPDK's pcap driver (one vdev per worker).
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    /// Write FILE first: this many IPv4/UDP flows, round-robin, so each flow comes back
    /// once per round (and per loop of the file), of --frame-size bytes.
    #[arg(long, value_name = "FLOWS", requires = "pcap")]
    pub create_flows: Option<u32>,
    /// Rounds (packets per flow) of the file --create-flows writes. Default: enough for
    /// 65 536 packets.
    #[arg(long, requires = "create_flows")]
    pub rounds: Option<u32>,
    /// Only write the --create-flows file, measure nothing.
    #[arg(long, requires = "create_flows")]
    pub create_only: bool,
    /// No file and no DPDK: each worker cycles through this many flows of its own by
    /// rewriting addresses into template frames.
    #[arg(long, value_name = "FLOWS", conflicts_with = "pcap")]
    pub synthetic: Option<u64>,
    /// Frame size in bytes without FCS (60 = a 64-byte frame) for --synthetic and
    /// --create-flows.
    #[arg(long, value_name = "BYTES", default_value_t = 60)]
    pub frame_size: u16,
    /// Worker threads, each with its own source (pcap: its own vdev of the same file) and
    /// its own flow cache shard.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Seconds the worker phase measures, after its warm-up. With DPDK the window also
    /// holds the paired ceiling: 100 ms of bare receive-and-free every 400 ms, metered
    /// apart and added to the window, so worker and ceiling share the same seconds.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub duration: f64,
    /// Seconds each ceiling phase measures, after its warm-up.
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    pub ceiling_duration: f64,
    /// Flow cache capacity per worker (entries; rounded up to a power-of-two number of
    /// buckets). Default: 1.5 times the flows each worker sees, at least 65 536.
    #[arg(long, value_name = "ENTRIES")]
    pub cache_size: Option<usize>,
    /// Where expired records go: an IPFIX encoder sending UDP to a loopback socket that
    /// nobody reads (the full export path), or nowhere (counted only).
    #[arg(long, value_enum, default_value = "ipfix")]
    pub export: BenchExport,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Attach the extensions (KPIs, monitors, analyzers) this configuration enables and
    /// apply its [[policy]] rules, to measure what they cost; the file's other settings
    /// are not used.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Extra EAL arguments for the pcap replay.
    #[arg(long = "eal-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub eal_args: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchExport {
    /// IPFIX over UDP to 127.0.0.1 on a port bound but never read.
    Ipfix,
    /// Records reach the export loop and are counted, not encoded.
    None,
}

/// Packets, bytes and time of one measured window.
#[derive(Clone, Copy, Debug, Default)]
struct Measured {
    packets: u64,
    bytes: u64,
    secs: f64,
    /// Time the measuring thread ran on a CPU, and waited runnable for one, in the window.
    cpu_secs: f64,
    waited_secs: f64,
    /// The process's resident memory when the window ended.
    rss_bytes: u64,
}

impl Measured {
    fn mpps(&self) -> f64 {
        self.packets as f64 / self.secs.max(1e-9) / 1e6
    }

    /// Packets per second of CPU time the thread got: what it does on a core of its own,
    /// when the machine is shared.
    fn mpps_per_cpu(&self) -> f64 {
        self.packets as f64 / self.cpu_secs.max(1e-9) / 1e6
    }

    fn ns_per_packet(&self) -> f64 {
        self.cpu_secs * 1e9 / (self.packets.max(1) as f64)
    }
}

/// The calling thread's time on a CPU and time waiting for one, ns, from the scheduler's
/// statistics (no unsafe clock call needed); zeros when unavailable.
fn thread_times_ns() -> (u64, u64) {
    let Ok(text) = std::fs::read_to_string("/proc/thread-self/schedstat") else {
        return (0, 0);
    };
    let mut fields = text
        .split_whitespace()
        .map(|f| f.parse::<u64>().unwrap_or(0));
    (fields.next().unwrap_or(0), fields.next().unwrap_or(0))
}

/// The sum over workers: rates add up (each worker has a core), times per packet average.
#[derive(Clone, Copy, Debug, Default)]
struct PhaseResult {
    mpps: f64,
    mpps_per_cpu: f64,
    gbps: f64,
    /// Mean over workers of the CPU time each spent per packet.
    ns_per_packet: f64,
    /// Share of the window the threads waited for a CPU (others' load), mean over workers.
    waited: f64,
    packets: u64,
    /// Resident memory of the process at the end of the phase (largest over workers).
    rss_bytes: u64,
}

impl PhaseResult {
    fn of(windows: &[Measured]) -> PhaseResult {
        let n = windows.len().max(1) as f64;
        PhaseResult {
            mpps: windows.iter().map(Measured::mpps).sum(),
            mpps_per_cpu: windows.iter().map(Measured::mpps_per_cpu).sum(),
            waited: windows
                .iter()
                .map(|w| w.waited_secs / w.secs.max(1e-9))
                .sum::<f64>()
                / n,
            gbps: windows
                .iter()
                .map(|w| w.bytes as f64 * 8.0 / w.secs.max(1e-9) / 1e9)
                .sum(),
            ns_per_packet: windows.iter().map(Measured::ns_per_packet).sum::<f64>() / n,
            packets: windows.iter().map(|w| w.packets).sum(),
            rss_bytes: windows.iter().map(|w| w.rss_bytes).max().unwrap_or(0),
        }
    }
}

/// Decides when a phase's measurement starts and ends; fed after every poll.
#[derive(Debug)]
struct Meter {
    warm_packets: u64,
    duration: Duration,
    began: Option<Instant>,
    packets: u64,
    polls: u32,
    /// Start of the window: time, packets, bytes and the thread's CPU and wait times then.
    window: Option<(Instant, u64, u64, (u64, u64))>,
    /// Time inside the window spent on something else (ceiling slices): wall, CPU and
    /// wait, the latter two in ns. The window is extended by the wall time.
    excluded: (Duration, u64, u64),
    result: Option<Measured>,
}

impl Meter {
    fn new(warm_packets: u64, duration: Duration) -> Meter {
        Meter {
            warm_packets,
            duration,
            began: None,
            packets: 0,
            polls: 0,
            window: None,
            excluded: (Duration::ZERO, 0, 0),
            result: None,
        }
    }

    /// Counts a poll that delivered `delivered` packets; `bytes` (the source's byte
    /// counter) is read only at the window's edges. True once the window is over.
    #[inline]
    fn after_poll(&mut self, delivered: usize, bytes: impl FnOnce() -> u64) -> Result<bool> {
        self.packets += delivered as u64;
        self.polls += 1;
        if self.polls < POLLS_PER_CLOCK_READ && self.began.is_some() {
            return Ok(false);
        }
        self.polls = 0;
        let now = Instant::now();
        let began = *self.began.get_or_insert(now);
        match self.window {
            None => {
                let warm = now - began;
                if self.packets >= self.warm_packets && warm >= WARM_UP {
                    self.window = Some((now, self.packets, bytes(), thread_times_ns()));
                } else if warm >= WARM_UP_LIMIT {
                    bail!(
                        "the source delivered {} packets in {} s of warm-up, fewer than the {} \
                         it should have",
                        self.packets,
                        WARM_UP_LIMIT.as_secs(),
                        self.warm_packets
                    );
                }
                Ok(false)
            }
            Some((start, packets, start_bytes, (start_cpu, start_wait))) => {
                let (excluded_wall, excluded_cpu, excluded_wait) = self.excluded;
                if now - start < self.duration + excluded_wall {
                    return Ok(false);
                }
                let (cpu, wait) = thread_times_ns();
                let secs = (now - start).saturating_sub(excluded_wall).as_secs_f64();
                let cpu_secs =
                    cpu.saturating_sub(start_cpu).saturating_sub(excluded_cpu) as f64 / 1e9;
                self.result = Some(Measured {
                    packets: self.packets - packets,
                    bytes: bytes().saturating_sub(start_bytes),
                    secs,
                    // Without scheduler statistics, assume the thread had its core.
                    cpu_secs: if cpu_secs > 0.0 { cpu_secs } else { secs },
                    waited_secs: wait
                        .saturating_sub(start_wait)
                        .saturating_sub(excluded_wait) as f64
                        / 1e9,
                    rss_bytes: status_bytes("VmRSS:"),
                });
                Ok(true)
            }
        }
    }

    /// Whether the window is open (warm-up over, measurement not finished).
    fn measuring(&self) -> bool {
        self.window.is_some() && self.result.is_none()
    }

    /// Takes `wall` of wall time, `cpu_ns` of CPU time and `wait_ns` of waiting out of the
    /// open window, and extends the window by `wall`.
    fn exclude(&mut self, wall: Duration, cpu_ns: u64, wait_ns: u64) {
        self.excluded.0 += wall;
        self.excluded.1 += cpu_ns;
        self.excluded.2 += wait_ns;
    }
}

/// What a worker's window measured: the worker, and the ceiling in slices beside it.
#[derive(Clone, Copy, Debug)]
struct WorkerWindow {
    worker: Measured,
    paired_ceiling: Option<Measured>,
}

/// The raw receive ceiling of a worker's own source, measured in slices of its window.
#[derive(Debug)]
struct CeilingSlices<S> {
    /// Receives one burst and frees it, returning how many frames it held.
    receive: fn(&mut S) -> usize,
    next_at: Option<Instant>,
    polls: u32,
    measured: Measured,
}

/// A worker's source that ends once its measured window is over, and publishes the window.
///
/// With `ceiling`, every [`CEILING_SLICE_EVERY`] of the window the source stops feeding the
/// worker for [`CEILING_SLICE`] and runs the raw receive loop on the same queue instead,
/// metered apart and taken out of the worker's window. The ceiling phase before the worker
/// runs seconds earlier, and this machine's speed drifts by 10-30% over seconds to minutes:
/// paired slices put both rates in the same seconds, so the ratio measures tapflow rather
/// than the drift. (Each slice also cools the caches a little for the worker's next
/// packets; that, if anything, counts against the worker.)
struct MeasuredSource<S> {
    inner: S,
    meter: Meter,
    ceiling: Option<CeilingSlices<S>>,
    published: Arc<Mutex<Result<WorkerWindow, String>>>,
}

impl<S> std::fmt::Debug for MeasuredSource<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeasuredSource")
            .field("meter", &self.meter)
            .finish_non_exhaustive()
    }
}

impl<S: PacketSource> PacketSource for MeasuredSource<S> {
    fn poll_burst(
        &mut self,
        sink: &mut dyn FnMut(&[Packet<'_>]),
    ) -> Result<BurstStatus, SourceError> {
        let status = self.inner.poll_burst(sink)?;
        let delivered = match status {
            BurstStatus::Delivered(n) => n,
            BurstStatus::Ended => return self.fail("the source ended before the measurement"),
        };
        let inner = &self.inner;
        match self.meter.after_poll(delivered, || inner.stats().rx_bytes) {
            Ok(false) => {
                self.maybe_ceiling_slice();
                Ok(status)
            }
            Ok(true) => {
                if let (Some(worker), Ok(mut slot)) = (self.meter.result, self.published.lock()) {
                    *slot = Ok(WorkerWindow {
                        worker,
                        paired_ceiling: self.ceiling.as_ref().map(|c| c.measured),
                    });
                }
                Ok(BurstStatus::Ended)
            }
            Err(e) => self.fail(&e.to_string()),
        }
    }

    fn stats(&self) -> SourceStats {
        self.inner.stats()
    }
}

impl<S> MeasuredSource<S> {
    /// Runs a slice of the raw receive ceiling when one is due (see [`MeasuredSource`]).
    #[inline]
    fn maybe_ceiling_slice(&mut self) {
        let Some(ceiling) = &mut self.ceiling else {
            return;
        };
        if !self.meter.measuring() {
            return;
        }
        ceiling.polls += 1;
        if ceiling.polls < POLLS_PER_CLOCK_READ {
            return;
        }
        ceiling.polls = 0;
        let now = Instant::now();
        // The first slice opens the window, so even a short window has one.
        let due = *ceiling.next_at.get_or_insert(now);
        if now < due {
            return;
        }
        let (cpu_before, wait_before) = thread_times_ns();
        let mut packets = 0u64;
        let mut polls = 0u32;
        let wall = loop {
            packets += (ceiling.receive)(&mut self.inner) as u64;
            polls += 1;
            if polls.is_multiple_of(POLLS_PER_CLOCK_READ) {
                let wall = now.elapsed();
                if wall >= CEILING_SLICE {
                    break wall;
                }
            }
        };
        let (cpu_after, wait_after) = thread_times_ns();
        let cpu_ns = cpu_after.saturating_sub(cpu_before);
        let wait_ns = wait_after.saturating_sub(wait_before);
        let m = &mut ceiling.measured;
        m.packets += packets;
        m.secs += wall.as_secs_f64();
        m.cpu_secs += if cpu_ns > 0 {
            cpu_ns as f64 / 1e9
        } else {
            wall.as_secs_f64()
        };
        m.waited_secs += wait_ns as f64 / 1e9;
        self.meter.exclude(wall, cpu_ns, wait_ns);
        ceiling.next_at = Some(now + wall + CEILING_SLICE_EVERY);
    }

    fn fail(&mut self, why: &str) -> Result<BurstStatus, SourceError> {
        if let Ok(mut slot) = self.published.lock() {
            *slot = Err(why.to_string());
        }
        Err(SourceError::new(why))
    }
}

/// Frames cycling through `flows` IPv4/UDP flows, written into [`MAX_BURST`] template
/// frames per burst: only the source address and port change (the checksums are left
/// stale: the parser does not verify them, as a probe should not). Packets are stamped
/// with the time of the burst.
#[derive(Debug)]
pub struct SyntheticSource {
    frames: Vec<Vec<u8>>,
    flows: u64,
    first_flow: u64,
    next: u64,
    port: u16,
    wire_len: u32,
    anchor: Instant,
    anchor_us: u64,
    stats: SourceStats,
}

/// Where the IPv4 source address and UDP source port sit in an untagged frame.
const IPV4_SRC_AT: usize = 14 + 12;
const UDP_SRC_PORT_AT: usize = 14 + 20;

impl SyntheticSource {
    /// Flows `first_flow .. first_flow + flows` (flow `i`: source 10.0.0.0 + i mod 2^24,
    /// source port 1024 + i / 2^24), frames of `frame_len` bytes, input port `port`.
    pub fn new(flows: u64, first_flow: u64, frame_len: u16, port: u16) -> SyntheticSource {
        let mut template = Vec::with_capacity(usize::from(frame_len).max(64));
        let headers = 14 + 20 + 8;
        probe::synth::eth_ipv4_udp(
            &mut template,
            SocketAddrV4::new([10, 0, 0, 0].into(), 1024),
            SocketAddrV4::new([172, 16, 0, 1].into(), 5201),
            &FrameOptions {
                payload_len: usize::from(frame_len).saturating_sub(headers),
                ..FrameOptions::default()
            },
        );
        let anchor_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        SyntheticSource {
            wire_len: template.len() as u32,
            frames: vec![template; MAX_BURST],
            flows: flows.max(1),
            first_flow,
            next: 0,
            port,
            anchor: Instant::now(),
            anchor_us,
            stats: SourceStats::default(),
        }
    }
}

impl PacketSource for SyntheticSource {
    fn poll_burst(
        &mut self,
        sink: &mut dyn FnMut(&[Packet<'_>]),
    ) -> Result<BurstStatus, SourceError> {
        let timestamp_us = self.anchor_us + self.anchor.elapsed().as_micros() as u64;
        for frame in &mut self.frames {
            let flow = self.first_flow + self.next;
            self.next += 1;
            if self.next == self.flows {
                self.next = 0;
            }
            let addr = 0x0a00_0000 | (flow as u32 & 0x00ff_ffff);
            frame[IPV4_SRC_AT..IPV4_SRC_AT + 4].copy_from_slice(&addr.to_be_bytes());
            let port = 1024u16.wrapping_add((flow >> 24) as u16);
            frame[UDP_SRC_PORT_AT..UDP_SRC_PORT_AT + 2].copy_from_slice(&port.to_be_bytes());
        }
        let mut packets = [Packet::default(); MAX_BURST];
        for (packet, frame) in packets.iter_mut().zip(&self.frames) {
            *packet = Packet {
                data: frame,
                wire_len: self.wire_len,
                timestamp_us,
                port: self.port,
            };
        }
        sink(&packets);
        self.stats.rx_packets += MAX_BURST as u64;
        self.stats.rx_bytes += MAX_BURST as u64 * u64::from(self.wire_len);
        Ok(BurstStatus::Delivered(MAX_BURST))
    }

    fn stats(&self) -> SourceStats {
        self.stats
    }
}

/// What the bench learns about a capture before replaying it (for the DPDK replay).
#[cfg_attr(not(feature = "dpdk"), allow(dead_code))]
#[derive(Clone, Copy, Debug, Default)]
struct TraceInfo {
    packets: u64,
    bytes: u64,
    max_frame: usize,
    flows: u64,
}

#[cfg_attr(not(feature = "dpdk"), allow(dead_code))]
impl TraceInfo {
    fn scan(path: &Path) -> Result<TraceInfo> {
        let mut source = FileSource::open(path, 0).map_err(|e| anyhow!("{e}"))?;
        let mut info = TraceInfo::default();
        let mut keys = std::collections::HashSet::<FlowKey>::new();
        loop {
            let status = source
                .poll_burst(&mut |burst| {
                    for packet in burst {
                        info.packets += 1;
                        info.bytes += u64::from(packet.wire_len);
                        info.max_frame = info.max_frame.max(packet.data.len());
                        let parsed = parse_frame(packet.data);
                        if parsed.stop.accounted() {
                            keys.insert(parsed.key);
                        }
                    }
                })
                .map_err(|e| anyhow!("{e}"))?;
            if status == BurstStatus::Ended {
                break;
            }
        }
        info.flows = keys.len() as u64;
        if info.packets == 0 {
            bail!("{} holds no packets", path.display());
        }
        Ok(info)
    }

    fn mean_frame(&self) -> f64 {
        self.bytes as f64 / self.packets.max(1) as f64
    }
}

/// The bench trace `--create-flows` writes: `flows` IPv4/UDP flows, round-robin, so each
/// flow comes back once per loop of the file and stays in the cache.
fn create_trace(path: &Path, flows: u32, rounds: Option<u32>, frame_size: u16) -> Result<u64> {
    if flows == 0 {
        bail!("--create-flows needs at least one flow");
    }
    let rounds = rounds.unwrap_or_else(|| 65_536u32.div_ceil(flows)).max(1);
    let spec = TrafficSpec {
        flows,
        packets_per_flow: rounds,
        live_flows: 0,
        ipv6_share: 0.0,
        mix: ProtocolMix {
            tcp: 0,
            udp: 1,
            icmp: 0,
        },
        vlan_share: 0.0,
        frame_len: FrameLen::Fixed(usize::from(frame_size)),
        spacing_us: 1,
        arp_share: 0.0,
        include_noise: false,
        ..TrafficSpec::default()
    };
    probe::synth::write_pcap(&spec, path)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Everything the report needs.
#[derive(Debug)]
struct Outcome {
    source: &'static str,
    workers: usize,
    flows_per_worker: u64,
    mean_frame: f64,
    /// The ceiling's own phase, before the worker's.
    ceiling: PhaseResult,
    /// The ceiling in slices of the worker's window (DPDK), see [`MeasuredSource`].
    paired_ceiling: Option<PhaseResult>,
    source_only: Option<PhaseResult>,
    worker: PhaseResult,
    cache_capacity: usize,
    stats: WorkerStats,
    cache: CacheStats,
    export: ExportReport,
    table_bytes: u64,
    dpdk_memory_bytes: u64,
    peak_rss_bytes: u64,
    load_before: String,
    load_after: String,
    export_kind: BenchExport,
}

pub fn bench(args: &BenchArgs) -> Result<ExitCode> {
    if args.workers == 0 {
        bail!("--workers must be at least 1");
    }
    if !(args.duration > 0.0 && args.ceiling_duration > 0.0) {
        bail!("--duration and --ceiling-duration must be positive");
    }
    if usize::from(args.frame_size) < 60 || args.frame_size > 9000 {
        bail!("--frame-size must be 60 to 9000 bytes");
    }
    let load_before = load_average();
    let outcome = match (&args.pcap, args.synthetic) {
        (Some(path), _) => {
            if let Some(flows) = args.create_flows {
                let packets = create_trace(path, flows, args.rounds, args.frame_size)?;
                if args.create_only {
                    println!(
                        "wrote {} packets of {} flows to {}",
                        thousands(packets),
                        thousands(u64::from(flows)),
                        path.display()
                    );
                    return Ok(ExitCode::SUCCESS);
                }
                if !args.json {
                    eprintln!(
                        "tapflow bench: wrote {} packets of {} flows to {}",
                        thousands(packets),
                        thousands(u64::from(flows)),
                        path.display()
                    );
                }
            }
            run_pcap(args, path, load_before)?
        }
        (None, Some(flows)) => run_synthetic(args, flows, load_before)?,
        (None, None) => bail!("give --pcap FILE or --synthetic FLOWS"),
    };
    if args.json {
        println!("{}", json(&outcome));
    } else {
        print!("{}", text(&outcome));
    }
    Ok(ExitCode::SUCCESS)
}

/// Smallest default cache: few flows in a tiny table would crowd some buckets past their
/// 16 slots and measure evictions rather than updates.
const MIN_DEFAULT_CAPACITY: u64 = 65_536;

fn cache_config(args: &BenchArgs, flows_per_worker: u64) -> CacheConfig {
    let default = (flows_per_worker.saturating_mul(3) / 2).max(MIN_DEFAULT_CAPACITY);
    let capacity = args
        .cache_size
        .unwrap_or_else(|| usize::try_from(default).unwrap_or(usize::MAX))
        .max(1);
    CacheConfig {
        capacity,
        ..CacheConfig::default()
    }
}

fn run_synthetic(args: &BenchArgs, flows: u64, load_before: String) -> Result<Outcome> {
    if flows == 0 {
        bail!("--synthetic needs at least one flow");
    }
    let make = |w: usize| {
        SyntheticSource::new(
            flows,
            w as u64 * flows,
            args.frame_size,
            u16::try_from(w).unwrap_or(u16::MAX),
        )
    };
    // Ceiling: writing the frames and handing them over is all this source does.
    let ceiling = run_phase(
        (0..args.workers).map(make).collect(),
        flows,
        args.ceiling_duration,
        &ThreadPlacement::default(),
        |source: &mut SyntheticSource, meter: &mut Meter| loop {
            let mut seen = 0usize;
            let status = source
                .poll_burst(&mut |burst| seen += burst.len())
                .map_err(|e| anyhow!("{e}"))?;
            let delivered = match status {
                BurstStatus::Delivered(n) => n.min(seen),
                BurstStatus::Ended => bail!("the synthetic source ended"),
            };
            let bytes = source.stats().rx_bytes;
            if meter.after_poll(delivered, || bytes)? {
                return Ok(());
            }
        },
    )?;
    let sources: Vec<SyntheticSource> = (0..args.workers).map(make).collect();
    let cache = cache_config(args, flows);
    // No paired slices: this source's "ceiling" is writing frames, not a receive path.
    let run = run_workers(
        args,
        sources,
        None,
        flows,
        cache,
        &ThreadPlacement::default(),
    )?;
    Ok(Outcome {
        source: "synthetic",
        workers: args.workers,
        flows_per_worker: flows,
        mean_frame: f64::from(args.frame_size.max(60)),
        ceiling: PhaseResult::of(&ceiling.1),
        paired_ceiling: None,
        source_only: None,
        worker: PhaseResult::of(&run.windows),
        cache_capacity: run.capacity,
        stats: run.stats,
        cache: run.cache,
        export: run.export,
        table_bytes: run.table_bytes,
        dpdk_memory_bytes: 0,
        peak_rss_bytes: peak_rss_bytes(),
        load_before,
        load_after: load_average(),
        export_kind: args.export,
    })
}

#[cfg(feature = "dpdk")]
fn run_pcap(args: &BenchArgs, path: &Path, load_before: String) -> Result<Outcome> {
    use probe::dpdk::{MbufBatch, RxQueue};
    use probe::dpdk_source::DpdkSource;

    let info = TraceInfo::scan(path)?;
    let rig = dpdk_rig::open(path, args.workers, &info, &args.eal_args)?;
    let dpdk_memory_bytes = rig.memory_bytes;
    // Every phase on the same cores, as `tapflow run` binds its workers.
    let placement = ThreadPlacement::on_lcores(&rig.lcore_cpus, args.workers);
    let ceiling_secs = args.ceiling_duration;
    // Ceiling: receive and free, on the same queues the workers will use.
    let (queues, ceiling) = run_phase(
        rig.queues,
        info.packets,
        ceiling_secs,
        &placement,
        |queue: &mut RxQueue, meter: &mut Meter| {
            let _ = queue.eal().register_current_thread();
            let mut batch = MbufBatch::new();
            loop {
                let n = queue.rx_burst(&mut batch);
                if meter.after_poll(n, || 0)? {
                    batch.clear();
                    return Ok(());
                }
            }
        },
    )?;
    let sources: Vec<DpdkSource> = queues
        .into_iter()
        .map(|q| DpdkSource::from_queue(q, None))
        .collect();
    // The worker's source type with a sink that only counts.
    let (sources, source_only) = run_phase(
        sources,
        info.packets,
        ceiling_secs,
        &placement,
        |source: &mut DpdkSource, meter: &mut Meter| loop {
            let status = source.poll_burst(&mut |_| {}).map_err(|e| anyhow!("{e}"))?;
            let BurstStatus::Delivered(n) = status else {
                bail!("the DPDK source ended");
            };
            if meter.after_poll(n, || source.stats().rx_bytes)? {
                return Ok(());
            }
        },
    )?;
    let cache = cache_config(args, info.flows);
    let run = run_workers(
        args,
        sources,
        Some(DpdkSource::receive_and_free),
        info.packets,
        cache,
        &placement,
    )?;
    let mean_frame = info.mean_frame();
    let with_bytes = |mut phase: PhaseResult| {
        phase.gbps = phase.mpps * 1e6 * mean_frame * 8.0 / 1e9;
        phase
    };
    Ok(Outcome {
        source: "dpdk-pcap",
        workers: args.workers,
        flows_per_worker: info.flows,
        mean_frame,
        ceiling: with_bytes(PhaseResult::of(&ceiling)),
        paired_ceiling: (!run.paired_ceiling.is_empty())
            .then(|| with_bytes(PhaseResult::of(&run.paired_ceiling))),
        source_only: Some(PhaseResult::of(&source_only)),
        worker: PhaseResult::of(&run.windows),
        cache_capacity: run.capacity,
        stats: run.stats,
        cache: run.cache,
        export: run.export,
        table_bytes: run.table_bytes,
        dpdk_memory_bytes,
        peak_rss_bytes: peak_rss_bytes(),
        load_before,
        load_after: load_average(),
        export_kind: args.export,
    })
}

#[cfg(not(feature = "dpdk"))]
fn run_pcap(_args: &BenchArgs, _path: &Path, _load_before: String) -> Result<Outcome> {
    bail!("this tapflow was built without DPDK; use --synthetic FLOWS")
}

#[cfg(feature = "dpdk")]
mod dpdk_rig {
    use std::path::Path;

    use anyhow::{Result, anyhow, bail};
    use probe::dpdk::{Eal, Mempool, Port, RxQueue};
    use probe::dpdk_source::EalArgs;

    use super::TraceInfo;

    const RX_DESCRIPTORS: u16 = 1024;
    const MEMPOOL_CACHE: u32 = 256;
    /// DPDK's headroom before the frame in every mbuf.
    const HEADROOM: usize = 128;
    /// Per mbuf beyond its data room: the mbuf header (two cache lines) and the mempool's
    /// object header.
    const MBUF_OVERHEAD: u64 = 128 + 64;

    #[derive(Debug)]
    pub struct Rig {
        pub queues: Vec<RxQueue>,
        pub lcore_cpus: probe::dpdk::LcoreCpus,
        /// DPDK memory reserved (`-m`), bytes.
        pub memory_bytes: u64,
        _eal: Eal,
    }

    /// One `net_pcap` vdev per worker, each looping the whole file from a mempool that
    /// holds it (the driver copies every packet of the file into an mbuf at start).
    pub fn open(path: &Path, workers: usize, info: &TraceInfo, extra: &[String]) -> Result<Rig> {
        let data_room = (HEADROOM + info.max_frame).next_multiple_of(64).max(256);
        let data_room =
            u16::try_from(data_room).map_err(|_| anyhow!("frames of the file are too long"))?;
        let headroom_mbufs = u64::from(RX_DESCRIPTORS) + 4 * 64 + 2 * u64::from(MEMPOOL_CACHE) * 8;
        let pool_mbufs = info.packets + headroom_mbufs;
        let pool_mbufs = u32::try_from(pool_mbufs)
            .map_err(|_| anyhow!("{} packets do not fit in a mempool", info.packets))?;
        let pool_bytes = u64::from(pool_mbufs) * (u64::from(data_room) + MBUF_OVERHEAD);
        let memory_mb = (workers as u64 * pool_bytes * 11 / 10).div_ceil(1 << 20) + 256;
        let memory_mb = u32::try_from(memory_mb).unwrap_or(u32::MAX);
        let mut eal_args = EalArgs::sandbox().memory_mb(memory_mb);
        for w in 0..workers {
            eal_args = eal_args.vdev(format!(
                "net_pcap{w},rx_pcap={},infinite_rx=1",
                path.display()
            ));
        }
        for arg in extra {
            eal_args = eal_args.arg(arg);
        }
        let eal = eal_args.init().map_err(|e| anyhow!("{e}"))?;
        let mut queues = Vec::with_capacity(workers);
        for w in 0..workers {
            let name = format!("net_pcap{w}");
            let mut port = Port::by_name(&eal, &name).map_err(|e| anyhow!("{e}"))?;
            let mempool = Mempool::new(
                &eal,
                &format!("bench-{w}"),
                pool_mbufs,
                MEMPOOL_CACHE,
                data_room,
                port.info().socket,
            )
            .map_err(|e| anyhow!("{e}"))?;
            port.configure(1, RX_DESCRIPTORS, &mempool, false)
                .map_err(|e| anyhow!("{e}"))?;
            port.start().map_err(|e| anyhow!("{e}"))?;
            // The driver took the whole file from the pool; what is left feeds the ring.
            if mempool.available() < 4 * 64 {
                bail!(
                    "{name}: the pcap driver left {} of {} mbufs free; the file has {} packets",
                    mempool.available(),
                    mempool.size(),
                    info.packets
                );
            }
            queues.push(port.rx_queue(0).map_err(|e| anyhow!("{e}"))?);
        }
        Ok(Rig {
            queues,
            lcore_cpus: eal.lcore_cpus(),
            memory_bytes: u64::from(memory_mb) << 20,
            _eal: eal,
        })
    }
}

/// Runs `body` on one thread per item, each with its own meter, and gives the items back
/// with their measured windows.
fn run_phase<T: Send>(
    items: Vec<T>,
    warm_packets: u64,
    secs: f64,
    placement: &ThreadPlacement,
    body: impl Fn(&mut T, &mut Meter) -> Result<()> + Sync,
) -> Result<(Vec<T>, Vec<Measured>)> {
    let duration = Duration::from_secs_f64(secs);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .into_iter()
            .enumerate()
            .map(|(i, mut item)| {
                let body = &body;
                let cpu = placement.workers.get(i).copied();
                std::thread::Builder::new()
                    .name(format!("tapflow-bench-{i}"))
                    .spawn_scoped(scope, move || {
                        ThreadPlacement::bind(cpu, &format!("bench thread {i}"));
                        let mut meter = Meter::new(warm_packets, duration);
                        body(&mut item, &mut meter)?;
                        let measured = meter.result.ok_or_else(|| anyhow!("no measurement"))?;
                        Ok::<_, anyhow::Error>((item, measured))
                    })
                    .context("cannot start a bench thread")
            })
            .collect::<Result<_>>()?;
        let mut items = Vec::new();
        let mut windows = Vec::new();
        for handle in handles {
            let (item, measured) = handle
                .join()
                .map_err(|_| anyhow!("a bench thread panicked"))??;
            items.push(item);
            windows.push(measured);
        }
        Ok((items, windows))
    })
}

#[derive(Debug)]
struct WorkersRun {
    windows: Vec<Measured>,
    /// The ceiling measured in slices of each worker's window (sources that have one).
    paired_ceiling: Vec<Measured>,
    stats: WorkerStats,
    cache: CacheStats,
    export: ExportReport,
    capacity: usize,
    table_bytes: u64,
}

/// The worker phase: real `Worker`s on their own threads, the export loop on this one.
fn run_workers<S: PacketSource + Send + 'static>(
    args: &BenchArgs,
    sources: Vec<S>,
    ceiling: Option<fn(&mut S) -> usize>,
    warm_packets: u64,
    cache: CacheConfig,
    placement: &ThreadPlacement,
) -> Result<WorkersRun> {
    cache.validate().map_err(|e| anyhow!("{e}"))?;
    let config = &match &args.config {
        Some(path) => Config::load_for(path, Purpose::Replay)?,
        None => Config::default(),
    };
    let slots = cache.bucket_count() * cache.bucket_size;
    // Bound but never read: the kernel drops what overflows its buffer, as a busy
    // collector's would; the exporter still encodes and sends every datagram.
    let sink = UdpSocket::bind("127.0.0.1:0").context("cannot bind the export sink")?;
    let collectors = match args.export {
        BenchExport::Ipfix => vec![CollectorConfig::new(
            sink.local_addr()?,
            TransportKind::Udp,
            SessionConfig {
                version: ExportVersion::Ipfix,
                ..SessionConfig::default()
            },
        )],
        BenchExport::None => Vec::new(),
    };
    let sampler = Sampler::new(SamplerSpec::None);
    let export = ExportLoopConfig {
        collectors,
        aggregate_interval_ms: None,
        options_interval_ms: 60_000,
        sampling: sampler.info(),
        clock: Clock::Wall,
        json_records: None,
        json_append: false,
    };
    let workers = sources.len();
    let mut windows = Vec::new();
    let mut measured_sources: Vec<(Box<dyn PacketSource + Send>, Sampler)> = Vec::new();
    for source in sources {
        let published = Arc::new(Mutex::new(Err("the worker did not finish".to_string())));
        windows.push(published.clone());
        let measured = MeasuredSource {
            inner: source,
            meter: Meter::new(warm_packets, Duration::from_secs_f64(args.duration)),
            ceiling: ceiling.map(|receive| CeilingSlices {
                receive,
                next_at: None,
                polls: 0,
                measured: Measured::default(),
            }),
            published,
        };
        measured_sources.push((Box::new(measured), sampler.clone()));
    }
    // The pipeline `tapflow run` runs, with a live port's settings: wall clock, and a full
    // export queue drops rather than blocks.
    let spec = PipelineSpec {
        cache,
        export,
        start_ms: wall_clock_ms(),
        progress: crate::progress::Goal::Unknown,
        clock: Clock::Wall,
        backpressure: Backpressure::Drop,
        queue_batches: EXPORT_QUEUE_BATCHES,
        placement: placement.clone(),
        extensions: (0..workers)
            .map(|_| crate::extensions::worker_extensions(config))
            .collect(),
        events: None,
        events_queue: config.events.queue,
        policy: config.policy_set(),
        policy_routes: Vec::new(),
        adaptive: config.adaptive_config(),
        // The bench measures the worker's throughput: it never waits for packets.
        idle_sleep: None,
        touch_table_at_start: true,
    };
    let export = run_pipeline(measured_sources, spec, |_| None)?;
    drop(sink);
    let mut stats = WorkerStats::default();
    let mut cache_stats = CacheStats::default();
    for report in &export.workers {
        stats.merge(&report.worker);
        cache_stats.merge(&report.cache);
    }
    let windows = windows
        .iter()
        .map(|w| match w.lock().map(|r| r.clone()) {
            Ok(Ok(m)) => Ok(m),
            Ok(Err(why)) => Err(anyhow!("worker phase: {why}")),
            Err(_) => Err(anyhow!("worker phase: lost the measurement")),
        })
        .collect::<Result<Vec<_>>>()?;
    // A ratio needs every worker's paired ceiling; without them all, the phase's is used.
    let paired_ceiling = windows
        .iter()
        .map(|w| w.paired_ceiling.filter(|m| m.packets > 0))
        .collect::<Option<Vec<_>>>()
        .unwrap_or_default();
    Ok(WorkersRun {
        windows: windows.iter().map(|w| w.worker).collect(),
        paired_ceiling,
        stats,
        cache: cache_stats,
        export,
        capacity: slots,
        table_bytes: (slots * ENTRY_BYTES * workers) as u64,
    })
}

/// The 1-, 5- and 15-minute load averages, as the kernel gives them.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

/// The process's peak resident set (VmHWM), bytes; 0 when unknown.
fn peak_rss_bytes() -> u64 {
    status_bytes("VmHWM:")
}

/// A `kB` field of /proc/self/status (e.g. `VmRSS:`), bytes; 0 when unknown.
fn status_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

impl Outcome {
    /// The ceiling the ratio divides by: the paired slices where there are some, else the
    /// ceiling's own phase.
    fn ratio_ceiling(&self) -> &PhaseResult {
        self.paired_ceiling.as_ref().unwrap_or(&self.ceiling)
    }

    /// Worker over ceiling, each per second of CPU time its threads got: robust to other
    /// processes taking turns on the cores.
    fn ratio(&self) -> f64 {
        self.worker.mpps_per_cpu / self.ratio_ceiling().mpps_per_cpu.max(1e-9)
    }

    /// The same by wall-clock rates.
    fn ratio_wall(&self) -> f64 {
        self.worker.mpps / self.ratio_ceiling().mpps.max(1e-9)
    }

    /// Worker over the ceiling's own phase (measured seconds before the worker).
    fn ratio_phase(&self) -> f64 {
        self.worker.mpps_per_cpu / self.ceiling.mpps_per_cpu.max(1e-9)
    }

    /// Flows in the caches when the measurement ended (they all left as forced at the end).
    fn flows_cached(&self) -> u64 {
        self.cache.expired(EndReason::Forced)
    }

    fn bytes_per_flow(&self) -> f64 {
        self.table_bytes as f64 / (self.flows_per_worker * self.workers as u64).max(1) as f64
    }

    fn wire_gbps(&self, phase: &PhaseResult) -> f64 {
        phase.mpps * 1e6 * (self.mean_frame + WIRE_OVERHEAD_BYTES as f64) * 8.0 / 1e9
    }
}

fn text(o: &Outcome) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "tapflow bench: {} source, {} worker(s), {} flows per worker, {:.0}-byte frames \
         (load before {}, after {})",
        o.source,
        o.workers,
        thousands(o.flows_per_worker),
        o.mean_frame,
        o.load_before,
        o.load_after
    );
    let _ = writeln!(out);
    let mut t = Table::new([
        "phase",
        "Mpps",
        "Mpps per CPU-s",
        "Gbps",
        "Gbps on wire",
        "ns/packet (CPU)",
        "waited for CPU",
    ]);
    let mut row = |name: &str, p: &PhaseResult| {
        t.row([
            name.to_string(),
            format!("{:.2}", p.mpps),
            format!("{:.2}", p.mpps_per_cpu),
            format!("{:.2}", p.gbps),
            format!("{:.2}", o.wire_gbps(p)),
            format!("{:.1}", p.ns_per_packet),
            format!("{:.1}%", p.waited * 100.0),
        ]);
    };
    row("ceiling (rx + free)", &o.ceiling);
    if let Some(source) = &o.source_only {
        row("source only", source);
    }
    if let Some(paired) = &o.paired_ceiling {
        row("ceiling, paired slices", paired);
    }
    row("tapflow worker", &o.worker);
    out.push_str(&t.render());
    let _ = writeln!(
        out,
        "\nworker / ceiling: {:.2} per CPU-second ({:.2} by wall clock); rates are summed \
         over workers, ns/packet is CPU time per packet on one worker",
        o.ratio(),
        o.ratio_wall()
    );
    if o.paired_ceiling.is_some() {
        let _ = writeln!(
            out,
            "(against the ceiling measured in {} ms slices every {} ms of the worker's \
             window; against the ceiling's own phase, seconds earlier: {:.2})",
            CEILING_SLICE.as_millis(),
            CEILING_SLICE_EVERY.as_millis(),
            o.ratio_phase()
        );
    }
    let _ = writeln!(out);
    let mut c = Table::new(["cache and export", "value"]);
    c.row([
        "capacity per worker (entries)".to_string(),
        thousands(o.cache_capacity as u64),
    ]);
    c.row([
        "flow table memory".to_string(),
        format!(
            "{} MB ({} bytes per entry, {:.0} per flow)",
            o.table_bytes >> 20,
            ENTRY_BYTES,
            o.bytes_per_flow()
        ),
    ]);
    c.row([
        "flows cached at the end".to_string(),
        thousands(o.flows_cached()),
    ]);
    let source = SourceStats::sum(o.export.workers.iter().map(|w| &w.source));
    for (name, value) in report_rows(&o.stats, &o.cache, &source) {
        c.row([name, thousands(value)]);
    }
    c.row([
        "records to exporter".to_string(),
        thousands(o.export.records_in),
    ]);
    c.row([
        "export".to_string(),
        match o.export_kind {
            BenchExport::Ipfix => format!(
                "IPFIX/UDP to an unread loopback socket: {} datagrams",
                thousands(o.export.collectors.iter().map(|(_, c)| c.datagrams).sum())
            ),
            BenchExport::None => "counted only".to_string(),
        },
    ]);
    if o.dpdk_memory_bytes > 0 {
        c.row([
            "DPDK memory (-m)".to_string(),
            format!("{} MB", o.dpdk_memory_bytes >> 20),
        ]);
    }
    c.row([
        "RSS at the end of the measurement".to_string(),
        format!("{} MB", o.worker.rss_bytes >> 20),
    ]);
    c.row([
        "peak RSS (shutdown flush included)".to_string(),
        format!("{} MB", o.peak_rss_bytes >> 20),
    ]);
    out.push_str(&c.render());
    out
}

fn json(o: &Outcome) -> String {
    // Rates to four decimals, sizes to one: the precision the measurement has.
    let r4 = |x: f64| (x * 1e4).round() / 1e4;
    let r2 = |x: f64| (x * 1e2).round() / 1e2;
    let r1 = |x: f64| (x * 10.0).round() / 10.0;
    serde_json::json!({
        "source": o.source,
        "workers": o.workers,
        "flows": o.flows_per_worker,
        "frame_bytes": r1(o.mean_frame),
        "mpps": r4(o.worker.mpps),
        "mpps_cpu": r4(o.worker.mpps_per_cpu),
        "gbps": r4(o.worker.gbps),
        "ns_per_packet": r2(o.worker.ns_per_packet),
        "ceiling_mpps": r4(o.ratio_ceiling().mpps),
        "ceiling_mpps_cpu": r4(o.ratio_ceiling().mpps_per_cpu),
        "ceiling_paired": o.paired_ceiling.is_some(),
        "ceiling_packets": o.ratio_ceiling().packets,
        "ceiling_phase_mpps_cpu": r4(o.ceiling.mpps_per_cpu),
        "ratio_phase": r4(o.ratio_phase()),
        "source_mpps": o.source_only.map(|s| r4(s.mpps)),
        "ratio": r4(o.ratio()),
        "ratio_wall": r4(o.ratio_wall()),
        "worker_waited": r4(o.worker.waited),
        "ceiling_waited": r4(o.ratio_ceiling().waited),
        "packets_measured": o.worker.packets,
        "cache_capacity": o.cache_capacity,
        "entry_bytes": ENTRY_BYTES,
        "table_bytes": o.table_bytes,
        "bytes_per_flow": r1(o.bytes_per_flow()),
        "flows_cached": o.flows_cached(),
        "flows_created": o.cache.flows_created,
        "evictions": o.cache.evictions,
        "records_exported": o.export.records_in,
        "records_dropped": o.stats.records_dropped,
        "dpdk_memory_bytes": o.dpdk_memory_bytes,
        "rss_bytes": o.worker.rss_bytes,
        "peak_rss_bytes": o.peak_rss_bytes,
        "packets": o.stats.packets,
        "load_before": o.load_before,
        "load_after": o.load_after,
        "export": match o.export_kind {
            BenchExport::Ipfix => "ipfix-udp",
            BenchExport::None => "none",
        },
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe::parse::StopReason;

    #[test]
    fn synthetic_source_cycles_through_its_flows() {
        let mut source = SyntheticSource::new(100, 1000, 60, 3);
        let mut keys = std::collections::HashMap::<FlowKey, u32>::new();
        for _ in 0..25 {
            source
                .poll_burst(&mut |burst| {
                    for p in burst {
                        let parsed = parse_frame(p.data);
                        assert_eq!(parsed.stop, StopReason::Complete);
                        assert_eq!(p.data.len(), 60);
                        *keys.entry(parsed.key).or_default() += 1;
                    }
                })
                .unwrap();
        }
        // 25 bursts of 64 = 1600 packets over 100 flows: each flow exactly 16 times.
        assert_eq!(keys.len(), 100);
        assert!(keys.values().all(|&n| n == 16));
        let first = keys
            .keys()
            .map(|k| u32::from_be_bytes(k.src_addr[..4].try_into().unwrap()))
            .min()
            .unwrap();
        assert_eq!(first, 0x0a00_0000 + 1000);
    }

    #[test]
    fn synthetic_frames_have_the_asked_size() {
        let mut source = SyntheticSource::new(10, 0, 1000, 0);
        source
            .poll_burst(&mut |burst| {
                assert!(
                    burst
                        .iter()
                        .all(|p| p.data.len() == 1000 && p.wire_len == 1000)
                );
                let parsed = parse_frame(burst[0].data);
                assert_eq!(parsed.octets, 1000 - 14);
            })
            .unwrap();
    }

    #[test]
    fn created_trace_holds_the_asked_flows() {
        let dir = std::env::temp_dir().join(format!("tapflow-bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bench.pcap");
        let packets = create_trace(&path, 1000, None, 60).unwrap();
        let info = TraceInfo::scan(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(info.flows, 1000);
        assert_eq!(info.packets, packets);
        assert_eq!(packets, 66 * 1000);
        assert_eq!(info.max_frame, 60);
    }
}
