//! Range and consistency checks that deserialisation cannot express.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use super::types::{
    Config, DeviceKind, KERNEL_RING_MB_RANGE, MAX_BATCH_SIZE, MAX_IDLE_SLEEP_US, SamplingMode,
    Transport, WorkerCount, parse_source,
};

/// Largest flow cache per worker: 2^31 entries (well over 100 GB), so a typo such as an
/// extra zero is refused instead of exhausting memory slowly. Same as flowcache's bound.
pub const MAX_CACHE_CAPACITY: usize = 1 << 31;
/// Smallest and largest collector `mtu`. 576 is the smallest datagram every IPv4 host
/// must accept; above 65000 a datagram no longer fits a UDP/IPv4 packet with headroom.
pub const MTU_RANGE: (u32, u32) = (576, 65_000);
/// Longest timeout or interval accepted, seconds (one week): longer is a typo, and
/// NetFlow's millisecond uptime fields would wrap.
pub const MAX_SECONDS: u64 = 7 * 24 * 3600;
/// Most receive queues per port, and most workers (DPDK's RTE_MAX_QUEUES_PER_PORT).
pub const MAX_QUEUES: u32 = 1024;
/// DPDK's largest per-lcore mempool cache (RTE_MEMPOOL_CACHE_MAX_SIZE).
pub const MAX_MEMPOOL_CACHE: u32 = 512;
/// Largest interval adaptive sampling may reach (2^30).
pub const MAX_ADAPTIVE_INTERVAL: u32 = 1 << 30;

/// One step of a key path: a table key or an array index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// Where a value lives in the file: `cache.inactive_timeout`, `collector[1].mtu`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<Segment>);

impl KeyPath {
    /// `[table]` or a top-level key.
    pub fn key(name: &str) -> KeyPath {
        KeyPath(vec![Segment::Key(name.into())])
    }

    /// Item `index` of an array of tables (`[[port]]`).
    pub fn item(array: &str, index: usize) -> KeyPath {
        KeyPath(vec![Segment::Key(array.into()), Segment::Index(index)])
    }

    /// This path extended by `key`.
    pub fn then(&self, key: &str) -> KeyPath {
        let mut path = self.clone();
        path.0.push(Segment::Key(key.into()));
        path
    }

    /// How the table this path names is written in the file: `[cache]`, `[[port]] #2`.
    pub(crate) fn table_name(&self) -> Option<String> {
        let segments = &self.0;
        if segments.is_empty() {
            return None;
        }
        let all_keys = |s: &[Segment]| s.iter().all(|x| matches!(x, Segment::Key(_)));
        match segments.split_last() {
            Some((Segment::Index(i), head)) if all_keys(head) => {
                Some(format!("[[{}]] #{}", KeyPath(head.to_vec()), i + 1))
            }
            _ => Some(format!("[{self}]")),
        }
    }

    /// The key and its table in words: "`mtu` in [[collector]] #2".
    pub(crate) fn subject(&self) -> Option<String> {
        match self.0.split_last()? {
            (Segment::Key(key), []) => Some(format!("`{key}`")),
            (Segment::Key(key), head) => {
                let table = KeyPath(head.to_vec()).table_name()?;
                Some(format!("`{key}` in {table}"))
            }
            (Segment::Index(_), _) => self.table_name(),
        }
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(k) if i == 0 => f.write_str(k)?,
                Segment::Key(k) => write!(f, ".{k}")?,
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A value out of range, or keys that contradict each other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The key at fault (the table, when the problem is a missing key or table).
    pub path: KeyPath,
    /// What is wrong and what is accepted.
    pub message: String,
}

impl Problem {
    fn new(path: KeyPath, message: impl Into<String>) -> Problem {
        Problem {
            path,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.path.subject() {
            Some(subject) => write!(f, "{subject}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Collects problems; `range` and friends keep the checks one line each.
#[derive(Debug, Default)]
pub(super) struct Checker {
    pub(super) problems: Vec<Problem>,
}

impl Checker {
    pub(super) fn fail(&mut self, path: KeyPath, message: impl Into<String>) {
        self.problems.push(Problem::new(path, message));
    }

    fn range<T: PartialOrd + fmt::Display + Copy>(
        &mut self,
        path: KeyPath,
        value: T,
        min: T,
        max: T,
        unit: &str,
    ) {
        if value < min || value > max {
            self.fail(
                path,
                format!("{value}{unit} is out of range ({min} to {max}{unit})"),
            );
        }
    }
}

/// Parses DPDK's `-l` core list (`0-3,5,7-8`) into its cores.
pub(crate) fn parse_core_list(list: &str) -> Result<BTreeSet<u32>, String> {
    let mut cores = BTreeSet::new();
    if list.trim().is_empty() {
        return Err("the core list is empty".into());
    }
    for part in list.split(',') {
        let part = part.trim();
        let number = |s: &str| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| format!("{s:?} is not a core number"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (number(a)?, number(b)?);
                if a > b {
                    return Err(format!("the range {part:?} runs backwards"));
                }
                if b - a >= 4096 {
                    return Err(format!("the range {part:?} is too wide"));
                }
                cores.extend(a..=b);
            }
            None => {
                cores.insert(number(part)?);
            }
        }
    }
    Ok(cores)
}

/// `HOST:PORT` with a port from 1 to 65535 and a plausible host (an IP literal, IPv6 in
/// brackets, or a DNS name). Nothing is resolved here.
pub(crate) fn check_host_port(address: &str) -> Result<(), String> {
    const FORM: &str = "expected HOST:PORT, e.g. \"192.0.2.10:2055\", \"[2001:db8::1]:4739\" \
                        or \"collector.example.net:2055\"";
    if let Ok(addr) = address.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err(format!("{address:?} has port 0; {FORM}"));
        }
        return Ok(());
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(format!("{address:?} has no port; {FORM}"));
    };
    match port.parse::<u16>() {
        Ok(0) | Err(_) => return Err(format!("{address:?} has no valid port; {FORM}")),
        Ok(_) => {}
    }
    if host.parse::<IpAddr>().is_ok() {
        // An IPv6 literal with a port must be bracketed, or its colons are ambiguous.
        return Err(format!(
            "{address:?}: put an IPv6 address in brackets; {FORM}"
        ));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
        return Err(format!("{address:?} does not name a host; {FORM}"));
    }
    Ok(())
}

/// EAL options tapflow sets itself from `[dpdk]` and `[[port]]` keys, and the key to use
/// instead.
const OWNED_EAL_OPTIONS: &[(&str, &str)] = &[
    ("-l", "dpdk.lcores"),
    ("--lcores", "dpdk.lcores"),
    ("-c", "dpdk.lcores"),
    ("--main-lcore", "dpdk.main_lcore"),
    ("-m", "dpdk.memory_mb"),
    ("--no-huge", "dpdk.hugepages"),
    ("--file-prefix", "dpdk.file_prefix"),
    ("--log-level", "logging.dpdk_level"),
    ("-a", "[[port]] device"),
    ("--allow", "[[port]] device"),
    ("--vdev", "[[port]] device"),
    ("--no-pci", "[[port]] device"),
    ("-h", "nothing: DPDK would print its usage and exit"),
    ("--help", "nothing: DPDK would print its usage and exit"),
];

/// What a configuration is loaded for: the appliance needs ports and collectors; a replay
/// of a capture through it reads the file instead of the ports, and may write only JSON.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Purpose {
    #[default]
    Run,
    Replay,
}

impl Config {
    /// Every range and consistency problem of this configuration (not only the first).
    pub fn validate(&self) -> Result<(), Vec<Problem>> {
        self.validate_for(Purpose::Run)
    }

    /// [`Config::validate`] for `purpose`: a replay checks neither ports nor that a
    /// collector exists.
    pub fn validate_for(&self, purpose: Purpose) -> Result<(), Vec<Problem>> {
        let mut c = Checker {
            problems: Vec::new(),
        };
        self.check_dpdk(&mut c);
        if purpose == Purpose::Run {
            self.check_ports(&mut c);
            self.check_workers(&mut c);
        }
        self.check_sampling(&mut c);
        self.check_cache(&mut c);
        self.check_collectors(&mut c, purpose == Purpose::Run);
        self.check_rest(&mut c);
        self.check_monitor(&mut c);
        self.check_policies(&mut c);
        self.check_analyzers(&mut c);
        if c.problems.is_empty() {
            Ok(())
        } else {
            Err(c.problems)
        }
    }

    fn check_dpdk(&self, c: &mut Checker) {
        let dpdk = &self.dpdk;
        let at = |key: &str| KeyPath::key("dpdk").then(key);
        let cores = match &dpdk.lcores {
            Some(list) => match parse_core_list(list) {
                Ok(cores) => Some(cores),
                Err(why) => {
                    c.fail(
                        at("lcores"),
                        format!("{why}; expected a core list such as \"0-3\" or \"0,2,4-7\""),
                    );
                    None
                }
            },
            None => None,
        };
        if let (Some(main), Some(cores)) = (dpdk.main_lcore, &cores)
            && !cores.contains(&main)
        {
            c.fail(
                at("main_lcore"),
                format!(
                    "core {main} is not in lcores = {:?}",
                    dpdk.lcores.as_deref().unwrap_or_default()
                ),
            );
        }
        c.range(at("memory_mb"), dpdk.memory_mb, 0, 1 << 20, " MB");
        if dpdk.mempool_cache > MAX_MEMPOOL_CACHE {
            c.fail(
                at("mempool_cache"),
                format!(
                    "{} is above DPDK's limit of {MAX_MEMPOOL_CACHE} mbufs",
                    dpdk.mempool_cache
                ),
            );
        }
        if dpdk.mempool_size > 0 {
            let descriptors = self.total_rx_descriptors();
            if u64::from(dpdk.mempool_size) <= descriptors {
                c.fail(
                    at("mempool_size"),
                    format!(
                        "{} mbufs cannot refill the {descriptors} receive descriptors of \
                         the ports; use at least twice that, or 0 to size it automatically",
                        dpdk.mempool_size
                    ),
                );
            }
            // DPDK refuses a cache larger than 2/3 of the pool (cache * 1.5 > size).
            if u64::from(dpdk.mempool_cache) * 3 > u64::from(dpdk.mempool_size) * 2 {
                c.fail(
                    at("mempool_cache"),
                    format!(
                        "{} is more than 2/3 of mempool_size = {}, which DPDK refuses",
                        dpdk.mempool_cache, dpdk.mempool_size
                    ),
                );
            }
        }
        let prefix = &dpdk.file_prefix;
        if prefix.is_empty()
            || prefix.len() > 64
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            || prefix.starts_with('.')
        {
            c.fail(
                at("file_prefix"),
                format!(
                    "{prefix:?} is not a usable prefix: 1 to 64 letters, digits, '-', '_' or \
                     '.', not starting with '.'"
                ),
            );
        }
        for arg in &dpdk.eal_args {
            let option = arg.split_once('=').map_or(arg.as_str(), |(o, _)| o);
            let option = if option.starts_with("--") || option.len() <= 2 {
                option
            } else {
                // "-l0-3": a short option glued to its value.
                &option[..2]
            };
            if let Some((_, instead)) = OWNED_EAL_OPTIONS.iter().find(|(o, _)| *o == option) {
                c.fail(
                    at("eal_args"),
                    format!("{arg:?} is set by tapflow; use {instead} instead"),
                );
            }
        }
    }

    fn check_ports(&self, c: &mut Checker) {
        if self.ports.is_empty() {
            c.fail(
                KeyPath::default(),
                "no [[port]] configured: add at least one, e.g. [[port]] with device = \
                 \"0000:01:00.0\" (a NIC bound to vfio-pci) or \"net_af_packet0,iface=eth1\"",
            );
        }
        let mut devices: HashMap<&str, usize> = HashMap::new();
        let mut labels: HashMap<&str, usize> = HashMap::new();
        for (i, port) in self.ports.iter().enumerate() {
            let at = |key: &str| KeyPath::item("port", i).then(key);
            let name = port.device_name();
            if port.device.trim().is_empty() {
                c.fail(
                    at("device"),
                    "is required: a PCI address such as \"0000:01:00.0\" or a DPDK virtual \
                     device such as \"net_pcap0,rx_pcap=/path/trace.pcap\"",
                );
                continue;
            }
            match port.kind() {
                None => c.fail(
                    at("device"),
                    format!(
                        "{name:?} is neither a PCI address (\"0000:01:00.0\") nor a DPDK \
                         virtual device (\"net_pcap0,rx_pcap=FILE\", \
                         \"net_af_packet0,iface=eth1\")"
                    ),
                ),
                Some(DeviceKind::Vdev) => {
                    let args: Vec<&str> = port.device_args().split(',').collect();
                    let has = |keys: &[&str]| {
                        args.iter()
                            .any(|a| keys.iter().any(|k| a.trim().starts_with(&format!("{k}="))))
                    };
                    let driver = port.vdev_driver();
                    if driver == "pcap" && !has(&["rx_pcap", "rx_iface", "rx_iface_in", "iface"]) {
                        c.fail(
                            at("device"),
                            format!(
                                "{:?}: a pcap device needs an input: rx_pcap=FILE or \
                                 iface=IFNAME",
                                port.device
                            ),
                        );
                    }
                    if driver == "af_packet" && !has(&["iface"]) {
                        c.fail(
                            at("device"),
                            format!("{:?}: an af_packet device needs iface=IFNAME", port.device),
                        );
                    }
                    let qpairs = port.device_arg("qpairs").unwrap_or("1");
                    if driver == "af_packet" && (qpairs != "1" || port.rx_queues != 1) {
                        c.fail(
                            at("device"),
                            format!(
                                "{:?}: an af_packet device takes one queue (qpairs=1, \
                                 rx_queues = 1). DPDK's af_packet driver spreads queues with \
                                 a PACKET_FANOUT group that makes the kernel reassemble IPv4 \
                                 fragments, so tapflow reads the interface through one \
                                 AF_PACKET socket without fanout; for several queues use \
                                 \"net_af_xdp0,iface=IFNAME,queue_count=N\" (docs/INSTALL.md)",
                                port.device
                            ),
                        );
                    }
                }
                Some(DeviceKind::Pci) => {}
            }
            if let Some(first) = devices.insert(name, i) {
                c.fail(
                    at("device"),
                    format!("{name:?} is already used by [[port]] #{}", first + 1),
                );
            }
            if let Some(first) = labels.insert(port.label(), i)
                && port.name.is_some()
            {
                c.fail(
                    at("name"),
                    format!(
                        "{:?} is already the name of [[port]] #{}",
                        port.label(),
                        first + 1
                    ),
                );
            }
            c.range(
                at("rx_queues"),
                u32::from(port.rx_queues),
                1,
                MAX_QUEUES,
                "",
            );
            c.range(at("rx_descriptors"), port.rx_descriptors, 32, 32_768, "");
            if let Some(mb) = port.kernel_ring_mb {
                let (min, max) = KERNEL_RING_MB_RANGE;
                c.range(at("kernel_ring_mb"), mb, min, max, "");
                if port.kernel_ring_bytes().is_none() {
                    c.fail(
                        at("kernel_ring_mb"),
                        format!(
                            "{:?}: kernel_ring_mb sizes the ring of a port read through libpcap \
                             (\"net_af_packet0,iface=IFNAME\"); an AF_XDP port's ring is \
                             rx_descriptors, a NIC's too",
                            port.device
                        ),
                    );
                }
            }
        }
    }

    fn check_workers(&self, c: &mut Checker) {
        let at = |key: &str| KeyPath::key("workers").then(key);
        if let WorkerCount::Fixed(n) = self.workers.count {
            let queues = self.total_rx_queues();
            if n == 0 {
                c.fail(at("count"), "must be at least 1 (or \"auto\")");
            } else if n > MAX_QUEUES {
                c.fail(
                    at("count"),
                    format!("{n} is out of range (1 to {MAX_QUEUES})"),
                );
            } else if queues > 0 && u64::from(n) > queues {
                c.fail(
                    at("count"),
                    format!(
                        "{n} workers but only {queues} receive queues in all [[port]] tables: \
                         each worker needs a queue of its own (raise rx_queues, or use \
                         \"auto\")"
                    ),
                );
            }
        }
        c.range(
            at("batch_size"),
            self.workers.batch_size,
            1,
            MAX_BATCH_SIZE,
            "",
        );
        if let Some(us) = self.workers.idle_sleep_us {
            c.range(at("idle_sleep_us"), us, 0, MAX_IDLE_SLEEP_US, "");
        }
    }

    fn check_sampling(&self, c: &mut Checker) {
        let mode = self.sampling.mode;
        if mode != SamplingMode::None && mode.interval() == 0 {
            c.fail(
                KeyPath::key("sampling").then("mode"),
                format!("{mode}: N must be at least 1"),
            );
        }
        let adaptive = &self.sampling.adaptive;
        let at = |key: &str| KeyPath::key("sampling").then("adaptive").then(key);
        let budget = adaptive.budget_busy;
        if !(budget > 0.0 && budget < 1.0) {
            c.fail(
                at("budget_busy"),
                format!("{budget} is not a share of the worker's time: use a number in (0, 1)"),
            );
        }
        for (key, n) in [
            ("min_interval", adaptive.min_interval),
            ("max_interval", adaptive.max_interval),
        ] {
            if !n.is_power_of_two() || n > MAX_ADAPTIVE_INTERVAL {
                c.fail(
                    at(key),
                    format!(
                        "{n} is not a power of two from 1 to {MAX_ADAPTIVE_INTERVAL} (hash \
                         sampling nests only at powers of two)"
                    ),
                );
            }
        }
        if adaptive.min_interval > adaptive.max_interval {
            c.fail(
                at("max_interval"),
                format!(
                    "{} is below min_interval ({})",
                    adaptive.max_interval, adaptive.min_interval
                ),
            );
        }
        c.range(
            at("adjust_period_ms"),
            adaptive.adjust_period_ms,
            10,
            60_000,
            " ms",
        );
        if adaptive.enabled && mode != SamplingMode::None {
            c.fail(
                KeyPath::key("sampling").then("mode"),
                format!(
                    "{mode} with [sampling.adaptive] enabled: the controller sets the \
                     sampling itself (hash, 1 in min_interval to max_interval); use \"none\""
                ),
            );
        }
    }

    fn check_cache(&self, c: &mut Checker) {
        let cache = &self.cache;
        let at = |key: &str| KeyPath::key("cache").then(key);
        c.range(
            at("capacity"),
            cache.capacity,
            1,
            MAX_CACHE_CAPACITY,
            " entries",
        );
        if cache.bucket_size != 8 && cache.bucket_size != 16 {
            c.fail(
                at("bucket_size"),
                format!("{} is not supported: use 8 or 16", cache.bucket_size),
            );
        }
        c.range(
            at("inactive_timeout"),
            cache.inactive_timeout,
            1,
            MAX_SECONDS,
            " s",
        );
        c.range(
            at("active_timeout"),
            cache.active_timeout,
            1,
            MAX_SECONDS,
            " s",
        );
        c.range(
            at("expiry_budget"),
            cache.expiry_budget,
            1,
            1 << 24,
            " slots",
        );
    }

    fn check_collectors(&self, c: &mut Checker, required: bool) {
        if required && self.collectors.is_empty() {
            c.fail(
                KeyPath::default(),
                "no [[collector]] configured: add at least one, e.g. [[collector]] with \
                 address = \"192.0.2.10:2055\"",
            );
        }
        let mut seen: HashMap<(String, Transport), usize> = HashMap::new();
        let mut labels: HashMap<&str, usize> = HashMap::new();
        let mut json_collector: Option<usize> = None;
        for (i, collector) in self.collectors.iter().enumerate() {
            let at = |key: &str| KeyPath::item("collector", i).then(key);
            if let Some(first) = labels.insert(collector.label(), i)
                && collector.name.is_some()
            {
                c.fail(
                    at("name"),
                    format!(
                        "{:?} is already the name of [[collector]] #{}",
                        collector.label(),
                        first + 1
                    ),
                );
            }
            if collector.version == super::types::ExportVersion::Json {
                if let Err(why) = collector.address.parse::<exporter::json::JsonDestination>() {
                    c.fail(at("address"), why);
                }
                if let Some(first) = json_collector.replace(i) {
                    c.fail(
                        at("version"),
                        format!(
                            "[[collector]] #{} already writes JSON records; one JSON \
                             collector is supported (read its file or socket from several \
                             places instead)",
                            first + 1
                        ),
                    );
                }
                continue;
            }
            if collector.address.trim().is_empty() {
                c.fail(
                    at("address"),
                    "is required: HOST:PORT, e.g. \"192.0.2.10:2055\"",
                );
            } else if let Err(why) = check_host_port(&collector.address) {
                c.fail(at("address"), why);
            } else if let Some(first) =
                seen.insert((collector.address.clone(), collector.transport), i)
            {
                c.fail(
                    at("address"),
                    format!(
                        "{:?} over {} is already [[collector]] #{}",
                        collector.address,
                        collector.transport,
                        first + 1
                    ),
                );
            }
            if collector.transport == Transport::Tcp
                && collector.version != super::types::ExportVersion::Ipfix
            {
                c.fail(
                    at("transport"),
                    format!(
                        "tcp carries only IPFIX; this collector has version = \"{}\" (use \
                         udp, or version = \"ipfix\")",
                        collector.version
                    ),
                );
            }
            if self.aggregation.protocol_port
                && collector.version == super::types::ExportVersion::V5
            {
                c.fail(
                    at("version"),
                    "v5 cannot carry protocol-port aggregates, and with [aggregation] \
                     protocol_port = true nothing else is exported: this collector would \
                     receive nothing (use version = \"v9\" or \"ipfix\", or turn \
                     aggregation off)",
                );
            }
            c.range(at("mtu"), collector.mtu, MTU_RANGE.0, MTU_RANGE.1, " bytes");
            if let Some(session) = self.session_config(collector) {
                let minimum = session.minimum_mtu();
                if (MTU_RANGE.0..=MTU_RANGE.1).contains(&collector.mtu)
                    && (collector.mtu as usize) < minimum
                {
                    c.fail(
                        at("mtu"),
                        format!(
                            "{} is too small for {} with this configuration: at least {minimum} \
                             bytes are needed (every template goes out in one datagram, and [kpi] \
                             and [analyzers.dns] add templates)",
                            collector.mtu, collector.version
                        ),
                    );
                }
            }
            c.range(
                at("template_refresh"),
                collector.template_refresh,
                0,
                MAX_SECONDS,
                " s",
            );
            if collector.transport == Transport::Udp
                && collector.version != super::types::ExportVersion::V5
                && collector.template_refresh == 0
                && collector.template_refresh_datagrams == 0
            {
                c.fail(
                    at("template_refresh"),
                    "templates would never be resent over UDP, so a collector that restarts \
                     could not decode anything: set template_refresh or \
                     template_refresh_datagrams above 0",
                );
            }
            if let Some(bytes) = collector.send_buffer {
                c.range(at("send_buffer"), bytes, 4096, 1 << 30, " bytes");
            }
            if let Some(source) = &collector.source {
                match parse_source(source) {
                    Err(why) => c.fail(at("source"), why),
                    Ok(src) => {
                        if let Ok(dst) = collector.address.parse::<SocketAddr>()
                            && src.is_ipv4() != dst.is_ipv4()
                        {
                            c.fail(
                                at("source"),
                                format!(
                                    "{source:?} and address {:?} are of different IP versions",
                                    collector.address
                                ),
                            );
                        }
                    }
                }
            }
        }
    }

    fn check_monitor(&self, c: &mut Checker) {
        let Some(monitor) = &self.monitor else {
            return;
        };
        let at = |key: &str| KeyPath::key("monitor").then(key);
        c.range(at("window_ms"), monitor.window_ms, 1, 100, " ms");
        c.range(at("windows"), monitor.windows, 1, 1_000, "");
        c.range(at("top_flows"), monitor.top_flows, 1, 4_096, "");
        if let Some(bps) = monitor.link_bps {
            c.range(at("link_bps"), bps, 1, 10u64.pow(13), " bit/s");
        }
        if let Some(bps) = monitor.heavy_hitter_bps {
            c.range(at("heavy_hitter_bps"), bps, 1, 10u64.pow(13), " bit/s");
        }
        for (key, share) in [
            ("heavy_hitter_share", monitor.heavy_hitter_share),
            ("congestion_utilisation", monitor.congestion_utilisation),
        ] {
            let Some(share) = share else { continue };
            if !(share > 0.0 && share <= 1.0) {
                c.fail(
                    at(key),
                    format!("{share} is not a share: use a number in (0, 1]"),
                );
            } else if monitor.link_bps.is_none() {
                c.fail(
                    at(key),
                    "is a share of link_bps: set link_bps, the port's capacity in bit/s",
                );
            }
        }
    }

    fn check_rest(&self, c: &mut Checker) {
        let agg = KeyPath::key("aggregation").then("interval");
        c.range(agg, self.aggregation.interval, 1, MAX_SECONDS, " s");
        let at = |key: &str| KeyPath::key("export").then(key);
        c.range(
            at("options_interval"),
            self.export.options_interval,
            0,
            MAX_SECONDS,
            " s",
        );
        c.range(
            at("queue_batches"),
            self.export.queue_batches,
            1,
            1 << 20,
            "",
        );
        let at = |key: &str| KeyPath::key("stats").then(key);
        c.range(at("interval"), self.stats.interval, 0, MAX_SECONDS, " s");
        if let Some(addr) = self.stats.prometheus
            && addr.port() == 0
        {
            c.fail(
                at("prometheus"),
                format!("{addr} has port 0; scrapers need a fixed port such as 9464"),
            );
        }
    }

    fn check_analyzers(&self, c: &mut Checker) {
        use super::TriggerStatistic;
        let a = &self.analyzers;
        let triggers = [
            (
                "syn_flood",
                a.syn_flood.trigger_statistic,
                a.syn_flood.trigger_threshold,
                a.syn_flood.hold,
            ),
            (
                "half_open",
                a.half_open.trigger_statistic,
                a.half_open.trigger_threshold,
                a.half_open.hold,
            ),
            (
                "dns",
                a.dns.trigger_statistic,
                a.dns.trigger_threshold,
                a.dns.hold,
            ),
            (
                "per_destination",
                a.per_destination.trigger_statistic,
                a.per_destination.trigger_threshold,
                a.per_destination.hold,
            ),
        ];
        for (name, statistic, threshold, hold) in triggers {
            let at = |key: &str| KeyPath::key("analyzers").then(name).then(key);
            let (max, unit) = match statistic {
                TriggerStatistic::HalfOpenShare => (100, " %"),
                _ => (1 << 32, " per second"),
            };
            c.range(at("trigger_threshold"), threshold, 1, max, unit);
            c.range(at("hold"), hold, 0, MAX_SECONDS, " s");
        }
        let at = |key: &str| KeyPath::key("analyzers").then("syn_flood").then(key);
        let s = &a.syn_flood;
        c.range(at("syn_per_sec"), s.syn_per_sec, 1, 1 << 32, " per second");
        c.range(at("flood_hold"), s.flood_hold, 1, MAX_SECONDS, " s");
        c.range(at("max_victims"), s.max_victims, 1, 1 << 20, "");
        c.range(at("max_sources"), s.max_sources, 1, 1 << 24, "");
        c.range(at("top_sources"), s.top_sources, 0, 1000, "");
        let at = |key: &str| KeyPath::key("analyzers").then("half_open").then(key);
        let h = &a.half_open;
        c.range(at("timeout_ms"), h.timeout_ms, 1, MAX_SECONDS * 1000, " ms");
        c.range(at("threshold"), h.threshold, 1, 1 << 32, " per second");
        c.range(at("max_pending"), h.max_pending, 1, 1 << 24, "");
        c.range(at("max_destinations"), h.max_destinations, 1, 1 << 24, "");
        c.range(at("top_n"), h.top_n, 0, 1000, "");
        let at = |key: &str| KeyPath::key("analyzers").then("dns").then(key);
        c.range(at("max_pending"), a.dns.max_pending, 1, 1 << 24, "");
        c.range(
            at("max_transactions"),
            a.dns.max_transactions,
            1,
            1 << 24,
            "",
        );
        let at = |key: &str| KeyPath::key("analyzers").then("per_destination").then(key);
        let p = &a.per_destination;
        c.range(at("prefix_len_v4"), p.prefix_len_v4, 0, 32, "");
        c.range(at("prefix_len_v6"), p.prefix_len_v6, 0, 128, "");
        c.range(at("max_destinations"), p.max_destinations, 1, 1 << 24, "");
        c.range(at("top_n"), p.top_n, 1, 10_000, "");
        c.range(at("interval"), p.interval, 1, MAX_SECONDS, " s");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_lists_parse_ranges_and_singles() {
        assert_eq!(
            parse_core_list("0-3,5, 7-8")
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 5, 7, 8]
        );
        assert!(parse_core_list("3-1").unwrap_err().contains("backwards"));
        assert!(
            parse_core_list("a")
                .unwrap_err()
                .contains("not a core number")
        );
        assert!(parse_core_list("").is_err());
        assert!(parse_core_list("0-").is_err());
    }

    #[test]
    fn host_port_accepts_ips_bracketed_v6_and_names() {
        for ok in [
            "127.0.0.1:2055",
            "[::1]:4739",
            "collector.example.net:2055",
            "nfcapd:9995",
        ] {
            assert_eq!(check_host_port(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("127.0.0.1", "no port"),
            ("127.0.0.1:0", "port 0"),
            ("127.0.0.1:99999", "no valid port"),
            ("::1:2055", "brackets"),
            ("bad_host:2055", "does not name a host"),
            (":2055", "does not name a host"),
        ] {
            let err = check_host_port(bad).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn key_paths_render_as_written_in_the_file() {
        let p = KeyPath::item("collector", 1).then("mtu");
        assert_eq!(p.to_string(), "collector[1].mtu");
        assert_eq!(p.subject().unwrap(), "`mtu` in [[collector]] #2");
        assert_eq!(
            KeyPath::key("cache").then("capacity").subject().unwrap(),
            "`capacity` in [cache]"
        );
        assert_eq!(KeyPath::item("port", 0).subject().unwrap(), "[[port]] #1");
        assert_eq!(KeyPath::key("bogus").subject().unwrap(), "`bogus`");
        assert_eq!(KeyPath::default().subject(), None);
    }
}
