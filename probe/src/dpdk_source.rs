//! A [`PacketSource`] over one rx queue of a DPDK port, and the helpers that set it up:
//! [`EalArgs`] (EAL arguments, sandbox defaults) and [`DpdkPortConfig`] (device, queues,
//! pool sizes, replay length).
//!
//! Replays through DPDK's pcap driver (`net_pcap0,rx_pcap=FILE`) get no end-of-file signal
//! from the driver: the caller passes the file's packet count (known from the native
//! reader) as `expected_packets`, and the source ends once that many were delivered. If
//! the driver stops short, the source fails after `stall_timeout` without packets rather
//! than polling forever.

use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::dpdk::{
    DpdkError, Eal, MbufBatch, Mempool, Port, PortStats, RxQueue, RxTimestamp, TscClock,
};
use crate::source::{BurstStatus, MAX_BURST, Packet, PacketSource, SourceError, SourceStats};

// A DPDK burst must fit the worker's: the source hands an rx burst over whole.
const _: () = assert!(crate::dpdk::BURST <= MAX_BURST);

impl From<DpdkError> for SourceError {
    fn from(e: DpdkError) -> Self {
        SourceError::new(e.to_string())
    }
}

impl From<PortStats> for SourceStats {
    fn from(port: PortStats) -> Self {
        SourceStats {
            rx_packets: port.packets,
            rx_bytes: port.bytes,
            rx_missed: port.missed,
            rx_errors: port.errors,
            rx_nombuf: port.nombuf,
            rx_xdp_ring_full: port.xdp_ring_full,
        }
    }
}

/// Builds EAL arguments so callers do not hand-craft them.
///
/// ```
/// # use probe::dpdk_source::EalArgs;
/// let args = EalArgs::sandbox().vdev("net_pcap0,rx_pcap=/tmp/trace.pcap").to_args();
/// assert!(args.contains(&"--no-huge".to_string()));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EalArgs {
    hugepages: bool,
    pci: bool,
    memory_mb: Option<u32>,
    file_prefix: String,
    log_level: String,
    lcores: Option<String>,
    telemetry: bool,
    shared_config: bool,
    vdevs: Vec<String>,
    allowed_pci: Vec<String>,
    extra: Vec<String>,
}

/// DPDK's log is quiet unless something fails (level 4 = error).
const DEFAULT_LOG_LEVEL: &str = "4";

static PREFIX_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A `--file-prefix` no other process (or EAL of this process) uses: DPDK keeps its runtime
/// files under it, and two processes sharing one would collide.
fn unique_file_prefix() -> String {
    let n = PREFIX_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("tapflow-{}-{n}", std::process::id())
}

impl Default for EalArgs {
    fn default() -> Self {
        Self::new()
    }
}

impl EalArgs {
    /// For an appliance: hugepages, PCI devices, DPDK's own memory sizing, and the fixed
    /// file prefix `tapflow` (so DPDK's tools attach with `--file-prefix=tapflow`, and a
    /// second instance on the same hugepages is refused by the EAL rather than colliding).
    pub fn new() -> Self {
        EalArgs {
            hugepages: true,
            pci: true,
            memory_mb: None,
            file_prefix: "tapflow".into(),
            log_level: DEFAULT_LOG_LEVEL.into(),
            lcores: None,
            telemetry: true,
            shared_config: true,
            vdevs: Vec::new(),
            allowed_pci: Vec::new(),
            extra: Vec::new(),
        }
    }

    /// For a machine with no hugepages and no NIC (tests, replays, containers):
    /// `--no-huge --no-pci -m 1024 --no-telemetry --no-shconf`. Without shared config files
    /// the process leaves nothing behind in DPDK's runtime directory (/var/run/dpdk), which
    /// otherwise keeps about 12 MB of files per run on tmpfs; secondary processes cannot
    /// attach, which tapflow never needs.
    pub fn sandbox() -> Self {
        EalArgs {
            hugepages: false,
            pci: false,
            memory_mb: Some(1024),
            telemetry: false,
            shared_config: false,
            file_prefix: unique_file_prefix(),
            ..Self::new()
        }
    }

    /// Adds a virtual device, e.g. `net_pcap0,rx_pcap=trace.pcap`.
    pub fn vdev(mut self, spec: impl Into<String>) -> Self {
        self.vdevs.push(spec.into());
        self
    }

    /// Restricts PCI probing to `address` (may be repeated); implies PCI.
    pub fn allow_pci(mut self, address: impl Into<String>) -> Self {
        self.pci = true;
        self.allowed_pci.push(address.into());
        self
    }

    /// Memory DPDK reserves, MB.
    pub fn memory_mb(mut self, mb: u32) -> Self {
        self.memory_mb = Some(mb);
        self
    }

    /// DPDK's `--log-level` value, e.g. `8` (debug) or `pmd.net.pcap:debug`.
    pub fn log_level(mut self, level: impl Into<String>) -> Self {
        self.log_level = level.into();
        self
    }

    /// DPDK's `-l` core list (default: all cores).
    pub fn lcores(mut self, list: impl Into<String>) -> Self {
        self.lcores = Some(list.into());
        self
    }

    /// Whether DPDK keeps shared config files (needed only for secondary processes).
    pub fn shared_config(mut self, on: bool) -> Self {
        self.shared_config = on;
        self
    }

    pub fn file_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.file_prefix = prefix.into();
        self
    }

    /// Any other EAL argument, passed through verbatim.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra.push(arg.into());
        self
    }

    /// The virtual devices added so far.
    pub fn vdevs(&self) -> &[String] {
        &self.vdevs
    }

    /// The argument list for [`Eal::init`].
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(lcores) = &self.lcores {
            args.push(format!("-l{lcores}"));
        }
        if !self.hugepages {
            args.push("--no-huge".into());
        }
        if !self.pci {
            args.push("--no-pci".into());
        }
        if let Some(mb) = self.memory_mb {
            args.push("-m".into());
            args.push(mb.to_string());
        }
        args.push(format!("--file-prefix={}", self.file_prefix));
        args.push(format!("--log-level={}", self.log_level));
        if !self.telemetry {
            args.push("--no-telemetry".into());
        }
        if !self.shared_config {
            args.push("--no-shconf".into());
        }
        args.extend(self.allowed_pci.iter().map(|a| format!("--allow={a}")));
        args.extend(self.vdevs.iter().map(|v| format!("--vdev={v}")));
        args.extend(self.extra.iter().cloned());
        args
    }

    /// Checks what can be checked before DPDK runs (pcap files of vdevs are readable).
    pub fn check(&self) -> Result<(), SourceError> {
        self.vdevs.iter().try_for_each(|v| check_device_files(v))
    }

    /// Checks, then initialises the EAL with these arguments.
    pub fn init(&self) -> Result<Eal, SourceError> {
        self.check()?;
        Ok(Eal::init(&self.to_args())?)
    }
}

/// The device name in a device spec: the part before the first comma
/// (`net_pcap0,rx_pcap=x.pcap` -> `net_pcap0`).
pub fn device_name(spec: &str) -> &str {
    spec.split_once(',').map_or(spec, |(name, _)| name).trim()
}

/// The value of `key=` in a device spec's arguments.
fn device_arg<'a>(spec: &'a str, key: &str) -> Option<&'a str> {
    spec.split(',')
        .skip(1)
        .find_map(|kv| kv.split_once('=').filter(|(k, _)| k.trim() == key))
        .map(|(_, v)| v.trim())
}

/// The `--vdev` spec (`--vdev=SPEC` or `--vdev SPEC`) of device `name` among EAL args.
fn eal_vdev_spec<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let mut specs = args
        .iter()
        .enumerate()
        .filter_map(|(i, a)| match a.strip_prefix("--vdev") {
            Some("") => args.get(i + 1).map(String::as_str),
            Some(rest) => rest.strip_prefix('='),
            None => None,
        });
    specs.find(|spec| device_name(spec) == name)
}

/// A pcap vdev whose input file cannot be read fails deep inside DPDK with a terse log
/// line; say so first, with the file's name and the OS's reason.
fn check_device_files(spec: &str) -> Result<(), SourceError> {
    for kv in spec.split(',').skip(1) {
        if let Some((key, file)) = kv.split_once('=')
            && key.trim() == "rx_pcap"
        {
            File::open(file.trim()).map_err(|e| {
                SourceError::new(format!(
                    "cannot read pcap file {} for DPDK device {}: {e}; check the path and \
                     its permissions",
                    file.trim(),
                    device_name(spec)
                ))
            })?;
        }
    }
    Ok(())
}

/// How to open a DPDK port for [`DpdkSource`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DpdkPortConfig {
    /// A PCI address (`0000:01:00.0`), the name of a port the EAL already has
    /// (`net_pcap0`, given with `--vdev`), or a vdev spec (`net_pcap0,rx_pcap=FILE`) that is
    /// probed now if no port of that name exists.
    pub device: String,
    /// Rx queues; more than one spreads flows by symmetric RSS where the device can.
    pub rx_queues: u16,
    /// Descriptors per rx queue (the driver may adjust it).
    pub rx_descriptors: u16,
    /// Mbufs in the port's pool. The default 8191 suits a live port or a plain replay; an
    /// `infinite_rx=1` replay keeps the whole file in mbufs, so it needs at least the
    /// file's packet count plus headroom: see [`DpdkPortConfig::replay_mempool_size`].
    pub mempool_size: u32,
    /// Per-lcore mbuf cache of the pool.
    pub mempool_cache: u32,
    /// Buffer bytes per mbuf including DPDK's 128-byte headroom (default 2176: a whole
    /// 2048-byte frame; longer frames are chained and only their first segment is shown).
    pub data_room: u16,
    /// Ask for RSS when there is more than one queue.
    pub rss: bool,
    /// For replays: end after this many packets (all queues together). `None`: poll
    /// forever (live port).
    pub expected_packets: Option<u64>,
    /// For replays: fail when no packet came for this long before `expected_packets`.
    pub stall_timeout: Duration,
}

impl DpdkPortConfig {
    pub const DEFAULT_MEMPOOL_SIZE: u32 = 8191;

    pub fn new(device: impl Into<String>) -> Self {
        DpdkPortConfig {
            device: device.into(),
            rx_queues: 1,
            rx_descriptors: 1024,
            mempool_size: Self::DEFAULT_MEMPOOL_SIZE,
            mempool_cache: 256,
            data_room: crate::dpdk::mempool::DEFAULT_DATA_ROOM,
            rss: true,
            expected_packets: None,
            stall_timeout: Duration::from_secs(5),
        }
    }

    pub fn rx_queues(mut self, queues: u16) -> Self {
        self.rx_queues = queues;
        self
    }

    pub fn rx_descriptors(mut self, descriptors: u16) -> Self {
        self.rx_descriptors = descriptors;
        self
    }

    pub fn mempool_size(mut self, mbufs: u32) -> Self {
        self.mempool_size = mbufs;
        self
    }

    pub fn expected_packets(mut self, packets: Option<u64>) -> Self {
        self.expected_packets = packets;
        self
    }

    pub fn stall_timeout(mut self, timeout: Duration) -> Self {
        self.stall_timeout = timeout;
        self
    }

    /// A pool size for an `infinite_rx=1` replay of a file of `file_packets` packets: the
    /// file, plus the rx rings, plus bursts in flight and the per-lcore caches, rounded up
    /// to 2^k - 1 (DPDK's most compact size).
    pub fn replay_mempool_size(&self, file_packets: u64) -> u32 {
        let headroom = u64::from(self.rx_queues)
            * (u64::from(self.rx_descriptors) + 4 * MAX_BURST as u64)
            + 2 * u64::from(self.mempool_cache) * 8;
        let wanted = (file_packets + headroom + 1).next_power_of_two() - 1;
        u32::try_from(wanted).unwrap_or(u32::MAX)
    }
}

/// How far a replay over one or more queues has come.
#[derive(Debug)]
struct ReplayProgress {
    expected: u64,
    delivered: AtomicU64,
}

static MEMPOOL_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Frames from one rx queue of a DPDK port. `Send`: each queue is polled by exactly one
/// thread (the one its source was moved to).
#[derive(Debug)]
pub struct DpdkSource {
    queue: RxQueue,
    batch: MbufBatch,
    timestamp: Option<RxTimestamp>,
    clock: TscClock,
    replay: Option<Arc<ReplayProgress>>,
    stall_timeout: Duration,
    /// The replay total last seen moving, and when.
    progress_seen: u64,
    progress_at: Option<Instant>,
    /// Queue 0 reports the port's drop counters, so summing all queues counts them once.
    reports_port_counters: bool,
    registered_thread: bool,
    ended: bool,
    delivered_packets: u64,
    delivered_bytes: u64,
}

impl DpdkSource {
    /// Opens, configures and starts the port of `config.device` with one rx queue and
    /// returns its source.
    pub fn open(eal: &Eal, config: &DpdkPortConfig) -> Result<DpdkSource, SourceError> {
        if config.rx_queues != 1 {
            return Err(SourceError::new(format!(
                "DpdkSource::open takes one rx queue; use DpdkSource::open_queues for {}",
                config.rx_queues
            )));
        }
        let mut sources = Self::open_queues(eal, config)?;
        Ok(sources.remove(0))
    }

    /// Opens, configures and starts the port of `config.device` and returns one source per
    /// rx queue, in queue order; move each to its own thread. The port closes when the
    /// last of them is dropped.
    pub fn open_queues(eal: &Eal, config: &DpdkPortConfig) -> Result<Vec<DpdkSource>, SourceError> {
        let spec = config.device.trim();
        let name = device_name(spec);
        if name.is_empty() {
            return Err(SourceError::new("empty DPDK device name"));
        }
        // A port given to the EAL as --vdev has its arguments there.
        let eal_spec = eal_vdev_spec(eal.args(), name);
        let full_spec = if spec.contains(',') {
            spec
        } else {
            eal_spec.unwrap_or(spec)
        };
        check_device_files(full_spec)?;
        let mut port = if eal.port_id(name).is_some() {
            Port::by_name(eal, name)?
        } else if let (Some(eal_spec), false) = (eal_spec, spec.contains(',')) {
            return Err(SourceError::new(format!(
                "DPDK device {name} was given to the EAL (--vdev={eal_spec}) but did not \
                 probe; DPDK's log above says why"
            )));
        } else if spec.contains(',') || name.starts_with("net_") {
            eal.probe_device(spec)?;
            let mut port = Port::by_name(eal, name)?;
            port.set_hotplugged();
            port
        } else {
            Port::by_name(eal, name)?
        };
        let pool_name = format!(
            "tapflow-{}-{}",
            port.id(),
            MEMPOOL_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mempool = Mempool::new(
            eal,
            &pool_name,
            config.mempool_size,
            config.mempool_cache,
            config.data_room,
            port.info().socket,
        )?;
        let infinite_rx = device_arg(full_spec, "infinite_rx") == Some("1");
        port.configure(
            config.rx_queues,
            config.rx_descriptors,
            &mempool,
            config.rss,
        )
        .map_err(|e| {
            if infinite_rx {
                infinite_rx_pool_error(full_spec, &mempool, &e.to_string())
            } else {
                e
            }
        })?;
        port.start()?;
        if infinite_rx {
            check_infinite_rx_pool(full_spec, &mempool, config)?;
        }
        let replay = config.expected_packets.map(|expected| {
            Arc::new(ReplayProgress {
                expected,
                delivered: AtomicU64::new(0),
            })
        });
        let mut sources = Vec::with_capacity(usize::from(config.rx_queues));
        for q in 0..config.rx_queues {
            let queue = port.rx_queue(q)?;
            let mut source = DpdkSource::from_queue(queue, None);
            source.replay = replay.clone();
            source.stall_timeout = config.stall_timeout;
            source.reports_port_counters = q == 0;
            sources.push(source);
        }
        log::info!(
            "DPDK port {} ({}, driver {}) started: {} rx queue(s), {} mbufs",
            port.name(),
            port.id(),
            port.info().driver,
            config.rx_queues,
            mempool.size()
        );
        Ok(sources)
    }

    /// A source over a queue the caller set up. It reports the port's drop counters only
    /// if it is queue 0. `expected_packets` as in [`DpdkPortConfig`], for this queue alone.
    pub fn from_queue(queue: RxQueue, expected_packets: Option<u64>) -> DpdkSource {
        let clock = TscClock::new(queue.eal());
        let timestamp = queue.rx_timestamp();
        let reports_port_counters = queue.queue_id() == 0;
        DpdkSource {
            timestamp,
            clock,
            replay: expected_packets.map(|expected| {
                Arc::new(ReplayProgress {
                    expected,
                    delivered: AtomicU64::new(0),
                })
            }),
            stall_timeout: Duration::from_secs(5),
            progress_seen: 0,
            progress_at: None,
            reports_port_counters,
            registered_thread: false,
            ended: false,
            delivered_packets: 0,
            delivered_bytes: 0,
            batch: MbufBatch::new(),
            queue,
        }
    }

    pub fn port_id(&self) -> u16 {
        self.queue.port_id()
    }

    pub fn queue_id(&self) -> u16 {
        self.queue.queue_id()
    }

    pub fn port_name(&self) -> &str {
        self.queue.port_name()
    }

    /// Whether packet times come from the driver (pcap capture times) rather than the TSC.
    pub fn has_driver_timestamps(&self) -> bool {
        self.timestamp.is_some()
    }

    /// The whole port's device counters (all queues).
    pub fn port_stats(&self) -> Result<SourceStats, SourceError> {
        Ok(self.queue.port_stats()?.into())
    }

    /// Empty poll of a replay: end when done, fail when stalled.
    fn replay_idle(&mut self) -> Result<BurstStatus, SourceError> {
        let Some(replay) = &self.replay else {
            return Ok(BurstStatus::Delivered(0));
        };
        let total = replay.delivered.load(Ordering::Relaxed);
        if total >= replay.expected {
            self.ended = true;
            return Ok(BurstStatus::Ended);
        }
        let now = Instant::now();
        match self.progress_at {
            Some(at) if total == self.progress_seen => {
                if now.duration_since(at) >= self.stall_timeout {
                    self.ended = true;
                    let nombuf = self.queue.port_stats().map_or(0, |s| s.nombuf);
                    return Err(SourceError::new(format!(
                        "DPDK port {} delivered {total} of {} expected packets, then nothing \
                         for {:.1} s (mbuf allocation failures: {nombuf}); the packet count \
                         may be wrong or the driver dropped packets (try a larger mempool)",
                        self.queue.port_name(),
                        replay.expected,
                        self.stall_timeout.as_secs_f64(),
                    )));
                }
            }
            _ => {
                self.progress_seen = total;
                self.progress_at = Some(now);
            }
        }
        Ok(BurstStatus::Delivered(0))
    }

    /// Receives one burst and frees it untouched, delivering nothing and counting nothing:
    /// the raw receive ceiling of this queue (`rte_eth_rx_burst` and
    /// `rte_pktmbuf_free_bulk`), for a benchmark that measures it in slices between the
    /// worker's own polls. Returns how many frames the burst held.
    pub fn receive_and_free(&mut self) -> usize {
        let received = self.queue.rx_burst(&mut self.batch);
        self.batch.clear();
        received
    }
}

impl PacketSource for DpdkSource {
    fn poll_burst(
        &mut self,
        sink: &mut dyn FnMut(&[Packet<'_>]),
    ) -> Result<BurstStatus, SourceError> {
        if self.ended {
            return Ok(BurstStatus::Ended);
        }
        if !self.registered_thread {
            self.registered_thread = true;
            if let Err(e) = self.queue.eal().register_current_thread() {
                log::debug!("{e}; polling without a mempool cache");
            }
        }
        if let Some(replay) = &self.replay
            && replay.delivered.load(Ordering::Relaxed) >= replay.expected
        {
            self.ended = true;
            return Ok(BurstStatus::Ended);
        }
        let received = self.queue.rx_burst(&mut self.batch);
        if received == 0 {
            return self.replay_idle();
        }
        let mut deliver = received;
        if let Some(replay) = &self.replay {
            let before = replay
                .delivered
                .fetch_add(received as u64, Ordering::Relaxed);
            deliver = replay.expected.saturating_sub(before).min(received as u64) as usize;
            self.progress_seen = before + received as u64;
            self.progress_at = Some(Instant::now());
        }

        let port = self.queue.port_id();
        // The burst's time, for frames the driver did not stamp: read once, whether or not
        // a frame needs it, so the loop below carries no per-frame "read yet?" test.
        if self.clock.elapsed_cycles() > self.clock.hz() * 60 {
            self.clock.reanchor();
        }
        let burst_us = self.clock.now_us();
        let timestamp = self.timestamp;
        let mut packets = [Packet::default(); MAX_BURST];
        let mut bytes = 0u64;
        let deliver = deliver.min(MAX_BURST);
        for (slot, mbuf) in packets[..deliver].iter_mut().zip(self.batch.iter()) {
            let timestamp_us = timestamp
                .and_then(|ts| mbuf.rx_timestamp(&ts))
                .unwrap_or(burst_us);
            let wire_len = mbuf.pkt_len();
            bytes += u64::from(wire_len);
            *slot = Packet {
                data: mbuf.data(),
                wire_len,
                timestamp_us,
                port,
            };
        }
        if deliver > 0 {
            sink(&packets[..deliver]);
        }
        self.batch.clear();
        self.delivered_packets += deliver as u64;
        self.delivered_bytes += bytes;
        if deliver == 0 {
            // Everything received lies beyond the expected count.
            self.ended = true;
            return Ok(BurstStatus::Ended);
        }
        Ok(BurstStatus::Delivered(deliver))
    }

    fn stats(&self) -> SourceStats {
        let mut stats = SourceStats {
            rx_packets: self.delivered_packets,
            rx_bytes: self.delivered_bytes,
            ..SourceStats::default()
        };
        if self.reports_port_counters
            && let Ok(port) = self.queue.port_stats()
        {
            stats.rx_missed = port.missed;
            stats.rx_errors = port.errors;
            stats.rx_nombuf = port.nombuf;
            stats.rx_xdp_ring_full = port.xdp_ring_full;
        }
        stats
    }
}

/// With `infinite_rx=1` the pcap driver copies the whole file into mbufs of the pool when
/// the queue is set up; a pool too small for that leaves no mbufs to receive into and the
/// driver silently delivers nothing. Refuse instead.
fn check_infinite_rx_pool(
    spec: &str,
    mempool: &Mempool,
    config: &DpdkPortConfig,
) -> Result<(), DpdkError> {
    let free = mempool.available();
    let needed = 2 * MAX_BURST as u32 * u32::from(config.rx_queues);
    if free < needed {
        let held = format!(
            "the pcap driver holds {} of them, leaving {free}",
            mempool.in_use()
        );
        return Err(infinite_rx_pool_error(spec, mempool, &held));
    }
    Ok(())
}

fn infinite_rx_pool_error(spec: &str, mempool: &Mempool, detail: &str) -> DpdkError {
    let file = device_arg(spec, "rx_pcap").unwrap_or("the file");
    DpdkError::new(format!(
        "mempool of {} mbufs is too small for the infinite_rx replay of {file}, which keeps \
         the whole file in mbufs ({detail}); set the mempool size to at least the file's \
         packet count plus headroom (DpdkPortConfig::replay_mempool_size)",
        mempool.size(),
    ))
}

// A source moves to the thread that polls its queue.
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<DpdkSource>();
};
