//! The configuration tree: one struct per TOML table, with the documented defaults.
//!
//! Every table has `#[serde(default)]`: a missing key takes the default below. An unknown
//! key is an error too, but all of them are reported at once (`unknown.rs`), so the tables
//! do not deny unknown fields themselves. Ranges and cross-key rules are checked after
//! deserialisation by [`Config::validate`](super::Config::validate).

use std::fmt;
use std::marker::PhantomData;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// Where the packaged service reads its configuration.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/tapflow/tapflow.toml";

/// Default Prometheus listen address (9464 is the port registered for OpenTelemetry's
/// Prometheus exporter and commonly used by probes; loopback only unless opened up).
pub const DEFAULT_PROMETHEUS_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9464);

/// The whole file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Config {
    pub dpdk: DpdkSection,
    /// `[[port]]`: the NIC ports or virtual devices to capture from.
    #[serde(rename = "port")]
    pub ports: Vec<PortSection>,
    pub workers: WorkersSection,
    pub sampling: SamplingSection,
    pub cache: CacheSection,
    pub aggregation: AggregationSection,
    /// `[[collector]]`: where flows are exported to.
    #[serde(rename = "collector")]
    pub collectors: Vec<CollectorSection>,
    pub export: ExportSection,
    pub logging: LoggingSection,
    pub stats: StatsSection,
    pub events: EventsSection,
    /// `[monitor]`: millisecond link and flow rates, heavy hitters and congestion
    /// (docs/EVENTS.md); on when the section is present.
    pub monitor: Option<MonitorSection>,
    /// `[[policy]]`: what to monitor and how, first match wins.
    #[serde(rename = "policy")]
    pub policies: Vec<super::policy::PolicySection>,
    /// `[analyzers.*]` (issue 18).
    pub analyzers: super::AnalyzersSection,
    pub kpi: KpiSection,
}

/// `[dpdk]`: how the EAL is started. See [`Config::eal_args`](super::Config::eal_args).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct DpdkSection {
    /// DPDK's `-l` core list, e.g. `"0-3"` or `"0,2,4-7"`; `None`: every core (DPDK's
    /// default).
    pub lcores: Option<String>,
    /// `--main-lcore`; `None`: the lowest core of `lcores` (DPDK's default).
    pub main_lcore: Option<u32>,
    /// Use hugepages; `false` adds `--no-huge` (ordinary memory: fine for replays and
    /// af_packet, too slow and unsupported for PCI NICs).
    pub hugepages: bool,
    /// Memory DPDK reserves at start (`-m`), MB; 0: DPDK sizes it on demand.
    pub memory_mb: u32,
    /// Mbufs in the packet pool; 0: sized from the ports (see
    /// [`Config::mempool_size`](super::Config::mempool_size)).
    pub mempool_size: u32,
    /// Per-lcore mbuf cache of the pool (at most 512, DPDK's limit).
    pub mempool_cache: u32,
    /// `--file-prefix`: names DPDK's runtime directory (`/run/dpdk/<prefix>`) and
    /// hugepage files, so several DPDK processes can share a host.
    pub file_prefix: String,
    /// Further EAL arguments, passed last and verbatim.
    pub eal_args: Vec<String>,
}

impl Default for DpdkSection {
    fn default() -> Self {
        DpdkSection {
            lcores: None,
            main_lcore: None,
            hugepages: true,
            memory_mb: 1024,
            mempool_size: 0,
            mempool_cache: 256,
            file_prefix: "tapflow".into(),
            eal_args: Vec::new(),
        }
    }
}

/// One `[[port]]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct PortSection {
    /// A PCI address (`0000:01:00.0`, optionally followed by `,devargs`) of a NIC bound
    /// to vfio-pci, or a DPDK virtual device (`net_pcap0,rx_pcap=/x.pcap`,
    /// `net_af_packet0,iface=eth1`). Required.
    pub device: String,
    /// Label in logs and metrics; `None`: the device name (the part before the first
    /// comma).
    pub name: Option<String>,
    /// Receive queues; RSS spreads flows over them, one worker polls each.
    pub rx_queues: u16,
    /// Descriptors per receive queue (the driver may round this to what it supports).
    pub rx_descriptors: u16,
    /// Receive frames not addressed to the port (a tap or mirror port needs this).
    pub promiscuous: bool,
    /// MB of the kernel's ring for a port read through DPDK's pcap driver on an interface
    /// (`net_af_packet`, `net_pcap` with `iface=`): libpcap's buffer. `None`:
    /// [`DEFAULT_KERNEL_RING_MB`] for such ports.
    pub kernel_ring_mb: Option<u32>,
}

/// `kernel_ring_mb` when the file says nothing: at 1 ms a block (TPACKET_V3 hands a block
/// over every millisecond however full), 2,048 blocks of 32 KB hold two seconds of a slow
/// link, and a burst of 40,000 small frames (tests/live_tap.rs); libpcap's own 2 MB held 64 ms.
pub const DEFAULT_KERNEL_RING_MB: u32 = 64;
/// The range of `kernel_ring_mb`.
pub const KERNEL_RING_MB_RANGE: (u32, u32) = (1, 1024);

impl Default for PortSection {
    fn default() -> Self {
        PortSection {
            device: String::new(),
            name: None,
            rx_queues: 1,
            rx_descriptors: 1024,
            promiscuous: true,
            kernel_ring_mb: None,
        }
    }
}

/// What kind of device a [`PortSection::device`] names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// A PCI NIC, given to the EAL with `-a`.
    Pci,
    /// A virtual device, given to the EAL with `--vdev`.
    Vdev,
}

impl PortSection {
    /// The device name: `device` up to its first comma (`net_pcap0`, `0000:01:00.0`).
    pub fn device_name(&self) -> &str {
        self.device
            .split_once(',')
            .map_or(self.device.as_str(), |(name, _)| name)
            .trim()
    }

    /// The arguments after the device name (`rx_pcap=/x.pcap`), empty if none.
    pub fn device_args(&self) -> &str {
        self.device.split_once(',').map_or("", |(_, args)| args)
    }

    /// The value of driver argument `key` (`iface` in `net_af_packet0,iface=eth1`).
    pub fn device_arg(&self, key: &str) -> Option<&str> {
        self.device_args()
            .split(',')
            .find_map(|kv| kv.split_once('=').filter(|(k, _)| k.trim() == key))
            .map(|(_, v)| v.trim())
    }

    /// The DPDK driver of a virtual device: `af_packet` for `net_af_packet0`.
    pub fn vdev_driver(&self) -> &str {
        let driver = self
            .device_name()
            .trim_end_matches(|ch: char| ch.is_ascii_digit());
        let driver = driver.strip_prefix("eth_").unwrap_or(driver);
        driver.strip_prefix("net_").unwrap_or(driver)
    }

    /// The kernel interface a live virtual device reads (af_packet, af_xdp, pcap).
    pub fn kernel_interface(&self) -> Option<&str> {
        match self.vdev_driver() {
            "af_packet" | "af_xdp" => self.device_arg("iface"),
            "pcap" => ["rx_iface", "rx_iface_in", "iface"]
                .iter()
                .find_map(|key| self.device_arg(key)),
            _ => None,
        }
    }

    /// The device as the EAL gets it. An af_packet device is read through DPDK's pcap
    /// driver on the same interface instead: DPDK 22.11's af_packet driver joins every
    /// socket to a PACKET_FANOUT group with PACKET_FANOUT_FLAG_DEFRAG (not configurable),
    /// so the kernel reassembles IPv4 fragments before they reach the ring: fragments
    /// vanish and the reassembled datagrams are cut at the ring's frame size. libpcap
    /// reads the same kind of AF_PACKET ring without a fanout, reports the socket's drop
    /// counter (PACKET_STATISTICS) as the port's missed frames, puts stripped VLAN tags
    /// back, and chains frames longer than an mbuf.
    pub fn eal_device(&self) -> String {
        match (self.vdev_driver(), self.kernel_interface()) {
            ("af_packet", Some(iface)) => format!("{},rx_iface={iface}", self.eal_device_name()),
            _ => self.device.trim().to_string(),
        }
    }

    /// The port name the EAL knows the device by (see [`PortSection::eal_device`]).
    pub fn eal_device_name(&self) -> String {
        match self.vdev_driver() {
            "af_packet" => format!("net_pcap_{}", self.device_name().trim_start_matches("net_")),
            _ => self.device_name().to_string(),
        }
    }

    /// Bytes of libpcap's ring for a port DPDK's pcap driver reads from an interface
    /// (`kernel_ring_mb`), `None` for other ports.
    pub fn kernel_ring_bytes(&self) -> Option<u32> {
        let through_pcap = matches!(self.vdev_driver(), "af_packet" | "pcap");
        (through_pcap && self.kernel_interface().is_some()).then(|| {
            self.kernel_ring_mb
                .unwrap_or(DEFAULT_KERNEL_RING_MB)
                .saturating_mul(1 << 20)
        })
    }

    /// PCI or vdev, or `None` if `device` is neither.
    pub fn kind(&self) -> Option<DeviceKind> {
        let name = self.device_name();
        if is_pci_address(name) {
            Some(DeviceKind::Pci)
        } else if is_vdev_name(name) {
            Some(DeviceKind::Vdev)
        } else {
            None
        }
    }

    /// The label for logs and metrics: `name`, or the device name.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or_else(|| self.device_name())
    }
}

/// `DDDD:BB:DD.F` (domain optional), hex digits, function 0-7.
pub(crate) fn is_pci_address(s: &str) -> bool {
    let hex = |p: &str, min: usize, max: usize| {
        (min..=max).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_hexdigit())
    };
    let Some((rest, function)) = s.rsplit_once('.') else {
        return false;
    };
    if function.len() != 1 || !matches!(function.as_bytes()[0], b'0'..=b'7') {
        return false;
    }
    let parts: Vec<&str> = rest.split(':').collect();
    match parts.as_slice() {
        [bus, dev] => hex(bus, 2, 2) && hex(dev, 2, 2),
        [domain, bus, dev] => hex(domain, 4, 8) && hex(bus, 2, 2) && hex(dev, 2, 2),
        _ => false,
    }
}

/// DPDK ethdev virtual device names start `net_` (`eth_` is the old alias).
pub(crate) fn is_vdev_name(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("net_").or_else(|| s.strip_prefix("eth_")) else {
        return false;
    };
    !rest.is_empty()
        && rest
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// `[workers]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct WorkersSection {
    /// Worker threads: a number, or `"auto"` for one per receive queue.
    pub count: WorkerCount,
    /// Packets received per burst (at most [`MAX_BATCH_SIZE`]).
    pub batch_size: u16,
    /// Bind each worker to a worker lcore of `[dpdk] lcores` and the exporter to the main
    /// lcore (when there are enough lcores for the workers).
    pub pin: bool,
    /// Microseconds a worker sleeps once its queue has come back empty several times in
    /// a row (`probe::worker::IDLE_POLLS_BEFORE_SLEEP`); 0 polls without pause. `None`:
    /// [`KERNEL_INTERFACE_IDLE_SLEEP_US`] when a port reads a kernel interface, else 0
    /// (`Config::idle_sleep`).
    pub idle_sleep_us: Option<u32>,
}

/// `idle_sleep_us` when a worker reads a kernel interface and the file says nothing.
pub const KERNEL_INTERFACE_IDLE_SLEEP_US: u32 = 100;
/// Largest `idle_sleep_us`: a sleeping worker must still see its queue fill.
pub const MAX_IDLE_SLEEP_US: u32 = 10_000;

/// Largest `batch_size`: the data plane's largest rx burst.
pub const MAX_BATCH_SIZE: u16 = 64;

impl Default for WorkersSection {
    fn default() -> Self {
        WorkersSection {
            count: WorkerCount::Auto,
            batch_size: 32,
            pin: true,
            idle_sleep_us: None,
        }
    }
}

/// `count = "auto"` or `count = N`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WorkerCount {
    /// One worker per receive queue of all ports.
    #[default]
    Auto,
    Fixed(u32),
}

impl fmt::Display for WorkerCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkerCount::Auto => f.write_str("auto"),
            WorkerCount::Fixed(n) => write!(f, "{n}"),
        }
    }
}

impl<'de> Deserialize<'de> for WorkerCount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CountVisitor;
        impl Visitor<'_> for CountVisitor {
            type Value = WorkerCount;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of workers or \"auto\"")
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<WorkerCount, E> {
                u32::try_from(v).map(WorkerCount::Fixed).map_err(|_| {
                    E::custom(format!(
                        "{v} workers is out of range (1 to 1024, or \"auto\")"
                    ))
                })
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<WorkerCount, E> {
                u32::try_from(v).map(WorkerCount::Fixed).map_err(|_| {
                    E::custom(format!(
                        "{v} workers is out of range (1 to 1024, or \"auto\")"
                    ))
                })
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<WorkerCount, E> {
                if v == "auto" {
                    Ok(WorkerCount::Auto)
                } else {
                    Err(E::custom(format!(
                        "{v:?} is not a worker count: use a number or \"auto\""
                    )))
                }
            }
        }
        deserializer.deserialize_any(CountVisitor)
    }
}

/// `[sampling]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct SamplingSection {
    pub mode: SamplingMode,
    /// Seed of the `random` sampler; `None`: a fixed built-in seed, so runs repeat.
    pub seed: Option<u64>,
    /// `[sampling.adaptive]`: each worker holds a busy budget by moving hash sampling.
    pub adaptive: AdaptiveSection,
}

/// `[sampling.adaptive]`: a controller per worker raises or lowers hash-based flow
/// sampling (1 in N, N a power of two within the bounds) to hold the worker's busy share
/// at `budget_busy` and its receive drops at zero (`probe::adaptive`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default)]
pub struct AdaptiveSection {
    pub enabled: bool,
    /// Share of the worker's time (0-1, exclusive) it may spend on received packets.
    pub budget_busy: f64,
    /// Bounds of the interval, powers of two.
    pub min_interval: u32,
    pub max_interval: u32,
    /// How often the controller measures and decides, ms.
    pub adjust_period_ms: u64,
}

// Validation rejects NaN, the only value for which equality is not reflexive.
impl Eq for AdaptiveSection {}

impl Default for AdaptiveSection {
    fn default() -> Self {
        AdaptiveSection {
            enabled: false,
            budget_busy: 0.5,
            min_interval: 1,
            max_interval: 1024,
            adjust_period_ms: 250,
        }
    }
}

/// Packet sampling in front of the flow cache; the text form is
/// `none | deterministic:N | random:N | hash:N` (1 in N packets, N >= 1), the same as
/// `flowcache::SamplerSpec`'s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SamplingMode {
    #[default]
    None,
    /// Every Nth packet.
    Deterministic(u32),
    /// Each packet with probability 1/N.
    Random(u32),
    /// Whole flows, chosen by a hash of the flow key (1 in N flows).
    Hash(u32),
}

impl SamplingMode {
    /// N of "1 in N" (1 for `None`).
    pub fn interval(self) -> u32 {
        match self {
            SamplingMode::None => 1,
            SamplingMode::Deterministic(n) | SamplingMode::Random(n) | SamplingMode::Hash(n) => n,
        }
    }
}

impl fmt::Display for SamplingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SamplingMode::None => f.write_str("none"),
            SamplingMode::Deterministic(n) => write!(f, "deterministic:{n}"),
            SamplingMode::Random(n) => write!(f, "random:{n}"),
            SamplingMode::Hash(n) => write!(f, "hash:{n}"),
        }
    }
}

const SAMPLING_SYNTAX: &str = "expected \"none\", \"deterministic:N\", \"random:N\" or \
                               \"hash:N\" with N from 1 to 4294967295";

impl FromStr for SamplingMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "none" {
            return Ok(SamplingMode::None);
        }
        let bad = |why: &str| format!("{s:?} is not a sampling mode: {why}; {SAMPLING_SYNTAX}");
        let Some((kind, n)) = s.split_once(':') else {
            return Err(bad("unknown mode"));
        };
        let make: fn(u32) -> SamplingMode = match kind {
            "deterministic" => SamplingMode::Deterministic,
            "random" => SamplingMode::Random,
            "hash" => SamplingMode::Hash,
            "none" => return Err(bad("\"none\" takes no N")),
            _ => return Err(bad("unknown mode")),
        };
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("N is not a whole number"));
        }
        match n.parse::<u32>() {
            Ok(0) => Err(bad("N must be at least 1")),
            Ok(n) => Ok(make(n)),
            Err(_) => Err(bad("N is too large")),
        }
    }
}

/// Deserialises a type from a TOML string through its `FromStr`, whose error text becomes
/// the message.
struct FromStrVisitor<T>(&'static str, PhantomData<T>);

impl<T> Visitor<'_> for FromStrVisitor<T>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for SamplingMode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(FromStrVisitor(
            "a sampling mode string such as \"none\" or \"random:100\"",
            PhantomData,
        ))
    }
}

/// A closed set of lowercase names, parsed case-insensitively.
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal,
     { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in documentation order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name used in the file.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, String> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| v.name().eq_ignore_ascii_case(s))
                    .ok_or_else(|| {
                        let names: Vec<String> =
                            $name::ALL.iter().map(|v| format!("\"{}\"", v.name())).collect();
                        format!("{s:?} is not {}: expected one of {}", $what, names.join(", "))
                    })
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_str(FromStrVisitor(
                    concat!("a string naming ", $what),
                    PhantomData,
                ))
            }
        }
    };
}

named_enum!(
    /// A collector's export protocol.
    ExportVersion, "an export version", {
        /// NetFlow v5: IPv4 only, fixed record.
        V5 => "v5",
        /// NetFlow v9 (RFC 3954).
        V9 => "v9",
        /// IPFIX (RFC 7011).
        #[default]
        Ipfix => "ipfix",
        /// JSON lines (docs/RECORDS.md) to `address`: a file path (appended to),
        /// `udp:HOST:PORT` or `unix:/path` (a datagram per record).
        Json => "json",
    }
);

impl ExportVersion {
    /// The exporter's protocol for a NetFlow/IPFIX collector; `None` for JSON records.
    pub fn netflow(self) -> Option<exporter::ExportVersion> {
        match self {
            ExportVersion::V5 => Some(exporter::ExportVersion::V5),
            ExportVersion::V9 => Some(exporter::ExportVersion::V9),
            ExportVersion::Ipfix => Some(exporter::ExportVersion::Ipfix),
            ExportVersion::Json => None,
        }
    }
}

named_enum!(
    /// How datagrams reach a collector.
    Transport, "a transport", {
        #[default]
        Udp => "udp",
        /// IPFIX only.
        Tcp => "tcp",
    }
);

named_enum!(
    /// tapflow's own log level.
    LogLevel, "a log level", {
        Error => "error",
        Warn => "warn",
        #[default]
        Info => "info",
        Debug => "debug",
        Trace => "trace",
    }
);

named_enum!(
    /// DPDK's log level (its syslog-style levels).
    DpdkLogLevel, "a DPDK log level", {
        Emergency => "emergency",
        Alert => "alert",
        Critical => "critical",
        #[default]
        Error => "error",
        Warning => "warning",
        Notice => "notice",
        Info => "info",
        Debug => "debug",
    }
);

impl LogLevel {
    pub fn to_level_filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

impl DpdkLogLevel {
    /// The number `--log-level` takes (RTE_LOG_EMERG = 1 ... RTE_LOG_DEBUG = 8).
    pub fn number(self) -> u32 {
        match self {
            DpdkLogLevel::Emergency => 1,
            DpdkLogLevel::Alert => 2,
            DpdkLogLevel::Critical => 3,
            DpdkLogLevel::Error => 4,
            DpdkLogLevel::Warning => 5,
            DpdkLogLevel::Notice => 6,
            DpdkLogLevel::Info => 7,
            DpdkLogLevel::Debug => 8,
        }
    }
}

/// `[cache]`: the per-worker flow cache shard.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct CacheSection {
    /// Flow entries per worker (each worker owns one shard of this size).
    pub capacity: usize,
    /// Slots per hash bucket: 8 or 16.
    pub bucket_size: usize,
    /// Seconds without packets after which a flow ends (idle).
    pub inactive_timeout: u64,
    /// Seconds after a flow's first packet after which it is exported (active timeout);
    /// a longer flow continues in a new record.
    pub active_timeout: u64,
    /// End a TCP flow when a FIN or RST is seen.
    pub tcp_end_expiry: bool,
    /// Cache slots examined for expiry per worker loop iteration.
    pub expiry_budget: usize,
}

impl Default for CacheSection {
    fn default() -> Self {
        CacheSection {
            capacity: 1 << 20,
            // 16, as flowcache: 13x fewer early evictions than 8 for ~10% throughput (BENCHMARKS.md).
            bucket_size: 16,
            inactive_timeout: 15,
            active_timeout: 1800,
            tcp_end_expiry: true,
            expiry_budget: 1024,
        }
    }
}

/// `[aggregation]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct AggregationSection {
    /// Export Cisco-style protocol-port aggregates (protocol, source port, destination
    /// port) instead of individual flows.
    pub protocol_port: bool,
    /// Seconds each aggregate accumulates before export.
    pub interval: u64,
}

impl Default for AggregationSection {
    fn default() -> Self {
        AggregationSection {
            protocol_port: false,
            interval: 60,
        }
    }
}

/// One `[[collector]]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct CollectorSection {
    /// `HOST:PORT` (`[v6]:PORT` for an IPv6 literal). Required.
    pub address: String,
    /// Label in logs and metrics; `None`: the address.
    pub name: Option<String>,
    pub version: ExportVersion,
    pub transport: Transport,
    /// Largest export datagram payload, bytes (without IP and UDP headers).
    pub mtu: u32,
    /// Seconds between template resends (v9, IPFIX); 0: never by time.
    pub template_refresh: u64,
    /// Resend templates after this many datagrams without them; 0: never by count.
    pub template_refresh_datagrams: u32,
    /// At most this many datagrams a second; 0: unpaced.
    pub pace: u32,
    /// Socket send buffer (SO_SNDBUF), bytes; `None`: the system default.
    pub send_buffer: Option<usize>,
    /// Local address to send from: `IP` or `IP:PORT`; `None`: chosen by the kernel.
    pub source: Option<String>,
    /// Put the sampling interval and algorithm into every v9/IPFIX record too, not only
    /// into the sampling options records (for collectors that ignore options).
    pub sampling_in_records: bool,
}

impl Default for CollectorSection {
    fn default() -> Self {
        CollectorSection {
            address: String::new(),
            name: None,
            version: ExportVersion::Ipfix,
            transport: Transport::Udp,
            mtu: 1400,
            template_refresh: 30,
            template_refresh_datagrams: 100,
            pace: 0,
            send_buffer: None,
            source: None,
            sampling_in_records: false,
        }
    }
}

impl CollectorSection {
    /// The label for logs and metrics: `name`, or the address.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.address)
    }

    /// Resolves `address` (host names allowed), taking the first address.
    pub fn resolve(&self) -> std::io::Result<SocketAddr> {
        use std::net::ToSocketAddrs;
        self.address.to_socket_addrs()?.next().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("collector {} resolves to no address", self.address),
            )
        })
    }

    /// `source` as a socket address (`IP` means port 0: any port).
    pub fn source_addr(&self) -> Result<Option<SocketAddr>, String> {
        self.source.as_deref().map(parse_source).transpose()
    }
}

pub(crate) fn parse_source(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    s.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 0))
        .map_err(|_| format!("{s:?} is not an IP address or IP:PORT"))
}

/// `[export]`: settings shared by all collectors.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ExportSection {
    /// IPFIX observation domain id / NetFlow v9 source id (the low byte is the v5 engine
    /// id).
    pub observation_domain: u32,
    /// Seconds between options records (sampling, exporter statistics); 0: never.
    pub options_interval: u64,
    /// Batches of expired flows that may wait between the workers and the exporter.
    pub queue_batches: usize,
}

impl Default for ExportSection {
    fn default() -> Self {
        ExportSection {
            observation_domain: 1,
            options_interval: 60,
            queue_batches: 1024,
        }
    }
}

/// `[logging]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct LoggingSection {
    pub level: LogLevel,
    /// DPDK's own log level (`--log-level`).
    pub dpdk_level: DpdkLogLevel,
}

/// `[stats]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct StatsSection {
    /// Seconds between counter lines in the log; 0: never.
    pub interval: u64,
    /// Prometheus endpoint (`http://ADDR/metrics`); `None` (`""` or `false` in the file):
    /// no endpoint.
    #[serde(deserialize_with = "deserialize_listen")]
    pub prometheus: Option<SocketAddr>,
}

impl Default for StatsSection {
    fn default() -> Self {
        StatsSection {
            interval: 60,
            prometheus: Some(DEFAULT_PROMETHEUS_LISTEN),
        }
    }
}

fn deserialize_listen<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    struct ListenVisitor;
    impl Visitor<'_> for ListenVisitor {
        type Value = Option<SocketAddr>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a listen address \"IP:PORT\", \"\" or false")
        }

        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Ok(v.then_some(DEFAULT_PROMETHEUS_LISTEN))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            if v.is_empty() {
                return Ok(None);
            }
            v.parse().map(Some).map_err(|_| {
                E::custom(format!(
                    "{v:?} is not a listen address: expected IP:PORT such as \
                     \"127.0.0.1:9464\" or \"[::1]:9464\", or \"\" or false to disable"
                ))
            })
        }
    }
    d.deserialize_any(ListenVisitor)
}

/// `[events]`: the one event output of the appliance (heavy hitters, congestion, floods,
/// trigger changes; docs/EVENTS.md).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct EventsSection {
    /// Where events go as JSON lines: a file path, `-` for stdout, `udp:HOST:PORT` or
    /// `unix:/path`; `None`: logged only.
    #[serde(deserialize_with = "deserialize_destination")]
    pub output: Option<exporter::json::JsonDestination>,
    /// Events that may wait between the workers and the output; past it they are dropped
    /// and counted.
    pub queue: usize,
}

impl Default for EventsSection {
    fn default() -> Self {
        EventsSection {
            output: None,
            queue: 4096,
        }
    }
}

fn deserialize_destination<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<exporter::json::JsonDestination>, D::Error> {
    let destination: exporter::json::JsonDestination = d.deserialize_str(FromStrVisitor(
        "a JSON lines destination: a file path, \"-\", \"udp:HOST:PORT\" or \"unix:/path\"",
        PhantomData,
    ))?;
    Ok(Some(destination))
}

/// `[monitor]`: per-port utilisation and the heaviest flows' rates over windows of packet
/// time, with heavy-hitter and congestion events (issue 17; docs/EVENTS.md).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default)]
pub struct MonitorSection {
    /// Off with `false`, keeping the other settings (the section's presence turns it on).
    pub enabled: bool,
    /// Window width, 1 to 100 ms; rates are re-evaluated every millisecond.
    pub window_ms: u32,
    /// A port's capacity in bit/s, for utilisation and `heavy_hitter_share`.
    pub link_bps: Option<u64>,
    /// A flow over this share (0-1) of `link_bps` is a heavy hitter.
    pub heavy_hitter_share: Option<f64>,
    /// A flow over this many bit/s is a heavy hitter.
    pub heavy_hitter_bps: Option<u64>,
    /// A port over this share (0-1) of `link_bps` is congested.
    pub congestion_utilisation: Option<f64>,
    /// Consecutive windows a condition must hold (or cease) before its event.
    pub windows: u32,
    /// Where the events go as JSON lines (as `[events] output`, which it overrides).
    #[serde(deserialize_with = "deserialize_destination")]
    pub events: Option<exporter::json::JsonDestination>,
    /// Flows each worker's top-K summary keeps.
    pub top_flows: usize,
}

impl Config {
    /// The `[monitor]` section, when it is present and enabled.
    pub fn monitor(&self) -> Option<&MonitorSection> {
        self.monitor.as_ref().filter(|m| m.enabled)
    }

    /// Where events go: `[monitor] events`, else `[events] output`.
    pub fn events_output(&self) -> Option<exporter::json::JsonDestination> {
        self.monitor()
            .and_then(|m| m.events.clone())
            .or_else(|| self.events.output.clone())
    }
}

// Validation rejects NaN, the only value for which equality is not reflexive.
impl Eq for MonitorSection {}

impl Default for MonitorSection {
    fn default() -> Self {
        MonitorSection {
            enabled: true,
            window_ms: 10,
            link_bps: None,
            heavy_hitter_share: None,
            heavy_hitter_bps: None,
            congestion_utilisation: None,
            windows: 1,
            events: None,
            top_flows: 64,
        }
    }
}

/// `[kpi]`: transport KPIs and biflows (docs/RECORDS.md, docs/IPFIX.md). Both off by
/// default: nothing is attached to the workers unless one is on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct KpiSection {
    /// Both directions of a conversation in one record (RFC 5103), the initiator as source.
    pub biflow: bool,
    /// Per-connection TCP KPIs: handshake RTTs, RTT samples, retransmissions, outcome.
    pub tcp: bool,
}
