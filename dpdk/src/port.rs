//! Ethdev ports: configured, started, stopped and closed; their settings, counters and
//! rx timestamp field.

use std::ffi::{CStr, CString, c_char};
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use dpdk_sys as sys;

use crate::rx::RxQueue;
use crate::xsk::{self, XdpSocket};
use crate::{DpdkError, Eal, Mempool, strerror};

/// A symmetric Toeplitz key: with the 16-bit pattern repeated, swapping source and
/// destination gives the same hash, so both directions of a flow land on one queue.
const SYMMETRIC_RSS_PATTERN: [u8; 2] = [0x6d, 0x5a];
/// The RSS key of `len` bytes: [`SYMMETRIC_RSS_PATTERN`] repeated.
fn symmetric_rss_key(len: usize) -> Vec<u8> {
    SYMMETRIC_RSS_PATTERN
        .iter()
        .copied()
        .cycle()
        .take(len)
        .collect()
}

/// RSS types tapflow asks for: hash on addresses and ports of IP/TCP/UDP/SCTP.
const WANTED_RSS_HF: u64 = sys::TAPFLOW_ETH_RSS_IP
    | sys::TAPFLOW_ETH_RSS_TCP
    | sys::TAPFLOW_ETH_RSS_UDP
    | sys::TAPFLOW_ETH_RSS_SCTP;

/// A port's receive counters (`rte_eth_stats_get`), for all its queues.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Frames received (ipackets).
    pub packets: u64,
    /// Bytes received (ibytes).
    pub bytes: u64,
    /// Frames dropped because the rx queue was full (imissed).
    pub missed: u64,
    /// Frames received with errors (ierrors).
    pub errors: u64,
    /// Frames dropped because no mbuf was free (rx_nombuf).
    pub nombuf: u64,
    /// `net_af_xdp` only: frames the kernel dropped because a queue's AF_XDP socket had
    /// its rx ring full (the sockets' `rx_ring_full`, which DPDK 22.11 does not report;
    /// its `imissed` holds the sockets' `rx_dropped`, a separate count). 0 elsewhere.
    pub xdp_ring_full: u64,
}

/// What a device can do, from `rte_eth_dev_info_get`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortInfo {
    pub driver: String,
    pub max_rx_queues: u16,
    pub rx_offload_capa: u64,
    pub flow_type_rss_offloads: u64,
    pub hash_key_size: u8,
    /// NUMA node of the device, `None` when unknown (virtual devices).
    pub socket: Option<i32>,
}

/// What `Port::configure` obtained, after masking the request by the device's abilities.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSettings {
    pub rx_queues: u16,
    pub rx_descriptors: u16,
    /// RSS hash types in use (0: no RSS; everything arrives on queue 0).
    pub rss_hf: u64,
    pub rx_offloads: u64,
}

/// Where a driver stamps the rx time in an mbuf: a dynamic field and the `ol_flags` bit
/// that says it is set. Only the pcap driver's is exposed; it writes the capture time in
/// microseconds since the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxTimestamp {
    pub(crate) offset: usize,
    pub(crate) flag: u64,
}

impl RxTimestamp {
    /// Byte offset of the dynamic field inside the mbuf.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The `ol_flags` bit saying the field is set.
    pub fn flag(&self) -> u64 {
        self.flag
    }
}

/// An ethdev port. Once configured, dropping it stops and closes the device (a closed port
/// cannot be opened again) when no [`RxQueue`] of it is left; the queues keep it open
/// until then. A port only opened and inspected is left as it was.
#[derive(Debug)]
pub struct Port {
    shared: Arc<PortShared>,
    settings: Option<PortSettings>,
    queues_taken: Vec<bool>,
}

#[derive(Debug)]
pub(crate) struct PortShared {
    pub(crate) id: u16,
    pub(crate) name: String,
    info: PortInfo,
    device: *mut sys::rte_device,
    /// The device was hotplugged by us (rte_dev_probe) and is removed on close.
    hotplugged: AtomicBool,
    /// Configured by us: closing then releases the queues and their mbufs.
    configured: AtomicBool,
    started: AtomicBool,
    pub(crate) rx_timestamp: Mutex<Option<RxTimestamp>>,
    /// The pool the rx queues were set up with; freed after the port is closed.
    pub(crate) mempool: Mutex<Option<Mempool>>,
    /// `net_af_xdp`: the AF_XDP socket of each rx queue that was found at its setup.
    xdp: Mutex<Vec<XdpQueue>>,
    /// A failed read of the sockets' counters has been logged (once a port).
    xdp_read_failure_told: AtomicBool,
    /// Released after the port is closed, so the device can be opened again.
    _claim: PortClaim,
    pub(crate) eal: Eal,
}

/// The ports open in this process, by id.
static OPEN_PORTS: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// This process's exclusive hold on a port id, released on drop.
#[derive(Debug)]
struct PortClaim(u16);

impl PortClaim {
    fn new(id: u16, name: &str) -> Result<PortClaim, DpdkError> {
        let mut open = OPEN_PORTS.lock().unwrap_or_else(PoisonError::into_inner);
        if open.contains(&id) {
            return Err(DpdkError::new(format!(
                "port {name} ({id}) is already open in this process; use that Port or its \
                 queues"
            )));
        }
        open.push(id);
        Ok(PortClaim(id))
    }
}

impl Drop for PortClaim {
    fn drop(&mut self) {
        OPEN_PORTS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|id| *id != self.0);
    }
}

// SAFETY: `device` is an opaque handle DPDK owns, used only by rte_dev_remove in Drop (one
// thread, the last owner). Other fields are Send + Sync. Control-path calls take &mut Port
// or run in Drop of the last reference; rx_burst needs &mut RxQueue (unique per queue).
unsafe impl Send for PortShared {}
// SAFETY: shared access only reads plain fields or calls read-only, MT-tolerant DPDK
// functions (stats, validity); see the Send justification.
unsafe impl Sync for PortShared {}

pub(crate) fn port_name(id: u16) -> Result<String, DpdkError> {
    let mut buf = [0 as c_char; sys::RTE_ETH_NAME_MAX_LEN as usize];
    // SAFETY: buf holds RTE_ETH_NAME_MAX_LEN bytes, the most DPDK writes.
    let rc = unsafe { sys::rte_eth_dev_get_name_by_port(id, buf.as_mut_ptr()) };
    if rc < 0 {
        return Err(DpdkError::from_code(
            format!("no name for port {id}"),
            -rc,
            "",
        ));
    }
    // SAFETY: DPDK NUL-terminated it within the buffer.
    Ok(unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned())
}

impl Port {
    /// Opens port `id`.
    pub fn by_id(eal: &Eal, id: u16) -> Result<Port, DpdkError> {
        // SAFETY: EAL initialised (we hold it); any id may be asked about.
        if unsafe { sys::rte_eth_dev_is_valid_port(id) } != 1 {
            return Err(DpdkError::new(format!(
                "DPDK has no port {id}; ports: {}",
                describe_ports(eal)
            )));
        }
        let name = port_name(id)?;
        Self::open(eal, id, name)
    }

    /// Opens the port of device `name` (a PCI address such as `0000:01:00.0` or a vdev
    /// name such as `net_pcap0`).
    pub fn by_name(eal: &Eal, name: &str) -> Result<Port, DpdkError> {
        let id = port_id_by_name(name).ok_or_else(|| {
            DpdkError::new(format!(
                "DPDK has no port named {name}; ports: {}. A vdev must be given to the EAL \
                 (--vdev={name},...) or probed; a PCI NIC must be bound to vfio-pci and \
                 allowed (-a)",
                describe_ports(eal)
            ))
        })?;
        Self::open(eal, id, name.to_owned())
    }

    fn open(eal: &Eal, id: u16, name: String) -> Result<Port, DpdkError> {
        // One Port per device: two could each hand out "the" queue 0 to different threads.
        let claim = PortClaim::new(id, &name)?;
        // SAFETY: all-zero is a valid rte_eth_dev_info (null pointers, zero counts).
        let mut raw: sys::rte_eth_dev_info = unsafe { std::mem::zeroed() };
        // SAFETY: id is a valid port; raw is a writable rte_eth_dev_info.
        let rc = unsafe { sys::rte_eth_dev_info_get(id, &mut raw) };
        if rc < 0 {
            return Err(DpdkError::from_code(
                format!("reading port {name}'s info"),
                -rc,
                "",
            ));
        }
        let driver = if raw.driver_name.is_null() {
            String::from("unknown")
        } else {
            // SAFETY: the driver name is a static NUL-terminated string of the driver.
            unsafe { CStr::from_ptr(raw.driver_name) }
                .to_string_lossy()
                .into_owned()
        };
        // SAFETY: id is a valid port.
        let socket = unsafe { sys::rte_eth_dev_socket_id(id) };
        let info = PortInfo {
            driver,
            max_rx_queues: raw.max_rx_queues,
            rx_offload_capa: raw.rx_offload_capa,
            flow_type_rss_offloads: raw.flow_type_rss_offloads,
            hash_key_size: raw.hash_key_size,
            socket: (socket >= 0).then_some(socket),
        };
        Ok(Port {
            shared: Arc::new(PortShared {
                id,
                name,
                info,
                device: raw.device,
                hotplugged: AtomicBool::new(false),
                configured: AtomicBool::new(false),
                started: AtomicBool::new(false),
                rx_timestamp: Mutex::new(None),
                mempool: Mutex::new(None),
                xdp: Mutex::new(Vec::new()),
                xdp_read_failure_told: AtomicBool::new(false),
                _claim: claim,
                eal: eal.clone(),
            }),
            settings: None,
            queues_taken: Vec::new(),
        })
    }

    /// Marks the device as hotplugged by the caller, so closing the port also removes the
    /// device and the same vdev can be probed again later.
    pub fn set_hotplugged(&mut self) {
        self.shared.hotplugged.store(true, Ordering::Relaxed);
    }

    pub fn id(&self) -> u16 {
        self.shared.id
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn info(&self) -> &PortInfo {
        &self.shared.info
    }

    /// Where the driver stamps rx time, once the port has started (pcap driver only: it
    /// writes the capture time in microseconds; NIC clocks need conversion tapflow does not
    /// do, so for them the TSC clock is used instead).
    pub fn rx_timestamp(&self) -> Option<RxTimestamp> {
        *self
            .shared
            .rx_timestamp
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the port up for `rx_queues` queues of `rx_descriptors` descriptors each, filled
    /// from `mempool`, with no tx queues. With more than one queue and `rss`, asks for RSS
    /// with a symmetric key on IP/TCP/UDP/SCTP; what the device cannot do is dropped with a
    /// warning in the log rather than failing.
    pub fn configure(
        &mut self,
        rx_queues: u16,
        rx_descriptors: u16,
        mempool: &Mempool,
        rss: bool,
    ) -> Result<PortSettings, DpdkError> {
        if self.shared.started.load(Ordering::Relaxed) {
            return Err(DpdkError::new(format!(
                "port {} is started; stop it before configuring",
                self.name()
            )));
        }
        if Arc::strong_count(&self.shared) > 1 {
            return Err(DpdkError::new(format!(
                "port {} still has rx queues in use; drop them before reconfiguring",
                self.name()
            )));
        }
        let info = &self.shared.info;
        let name = &self.shared.name;
        if rx_queues == 0 || rx_queues > info.max_rx_queues {
            return Err(DpdkError::new(format!(
                "port {name} (driver {}) supports 1 to {} rx queues; {rx_queues} asked for",
                info.driver, info.max_rx_queues
            )));
        }

        // SAFETY: all-zero rte_eth_conf is DPDK's documented "defaults" configuration.
        let mut conf: sys::rte_eth_conf = unsafe { std::mem::zeroed() };
        let key_len = if info.hash_key_size == 0 {
            40
        } else {
            usize::from(info.hash_key_size)
        };
        let mut rss_key = symmetric_rss_key(key_len);
        let mut rss_hf = 0;
        let mut offloads = 0;
        if rx_queues > 1 && rss {
            rss_hf = WANTED_RSS_HF & info.flow_type_rss_offloads;
            if rss_hf == 0 {
                log::warn!(
                    "port {name} (driver {}) has no RSS: all traffic arrives on queue 0 of \
                     {rx_queues}",
                    info.driver
                );
            } else {
                if rss_hf != WANTED_RSS_HF {
                    log::warn!(
                        "port {name} (driver {}) hashes only RSS types {rss_hf:#x} of the \
                         wanted {WANTED_RSS_HF:#x}",
                        info.driver
                    );
                }
                conf.rxmode.mq_mode = sys::RTE_ETH_MQ_RX_RSS;
                conf.rx_adv_conf.rss_conf.rss_key = rss_key.as_mut_ptr();
                conf.rx_adv_conf.rss_conf.rss_key_len = key_len as u8;
                conf.rx_adv_conf.rss_conf.rss_hf = rss_hf;
                if info.rx_offload_capa & sys::TAPFLOW_ETH_RX_OFFLOAD_RSS_HASH != 0 {
                    offloads |= sys::TAPFLOW_ETH_RX_OFFLOAD_RSS_HASH;
                } else {
                    log::info!("port {name}: no RSS hash delivery; the flow cache hashes itself");
                }
            }
        } else if rx_queues > 1 {
            log::warn!("port {name}: {rx_queues} rx queues without RSS: only queue 0 receives");
        }
        conf.rxmode.offloads = offloads;

        let id = self.shared.id;
        // AF_XDP sockets pair an rx with a tx ring and the driver refuses unpaired queues;
        // the tx side is set up and never used.
        let tx_queues = if info.driver == "net_af_xdp" {
            rx_queues
        } else {
            0
        };
        // SAFETY: id is a valid, stopped port with no queues in use; conf and the key it
        // points to are alive for the call (DPDK copies both).
        let rc = unsafe { sys::rte_eth_dev_configure(id, rx_queues, tx_queues, &conf) };
        if rc < 0 {
            return Err(DpdkError::from_code(
                format!("configuring port {name} with {rx_queues} rx queues"),
                -rc,
                "",
            ));
        }
        let mut descriptors = rx_descriptors;
        // SAFETY: valid configured port; a null tx pointer is allowed.
        let rc =
            unsafe { sys::rte_eth_dev_adjust_nb_rx_tx_desc(id, &mut descriptors, ptr::null_mut()) };
        if rc < 0 {
            return Err(DpdkError::from_code(
                format!("sizing port {name}'s rx rings"),
                -rc,
                "",
            ));
        }
        if descriptors != rx_descriptors {
            log::info!(
                "port {name}: {rx_descriptors} rx descriptors adjusted to {descriptors} by the driver"
            );
        }
        // SAFETY: all-zero rte_eth_dev_info is valid; filled again for default_rxconf.
        let mut raw: sys::rte_eth_dev_info = unsafe { std::mem::zeroed() };
        // SAFETY: valid port, writable struct.
        let rc = unsafe { sys::rte_eth_dev_info_get(id, &mut raw) };
        if rc < 0 {
            return Err(DpdkError::from_code(
                format!("reading port {name}'s info"),
                -rc,
                "",
            ));
        }
        let mut rxconf = raw.default_rxconf;
        rxconf.offloads = offloads;
        let socket = info.socket.map_or(sys::SOCKET_ID_ANY as u32, |s| s as u32);
        let af_xdp = info.driver == "net_af_xdp";
        let mut xdp = Vec::new();
        for queue in 0..rx_queues {
            // The af_xdp driver opens the queue's AF_XDP socket in the setup call.
            let sockets_before = af_xdp.then(xsk::own_xdp_sockets);
            // SAFETY: valid configured port; queue < the configured count; rxconf is alive
            // for the call; the mempool outlives the queue, as the port keeps it (below)
            // until after close.
            let rc = unsafe {
                sys::rte_eth_rx_queue_setup(
                    id,
                    queue,
                    descriptors,
                    socket,
                    &rxconf,
                    mempool.as_ptr(),
                )
            };
            if rc < 0 {
                return Err(DpdkError::from_code(
                    format!("setting up rx queue {queue} of port {name}"),
                    -rc,
                    "a larger mempool or fewer descriptors may help",
                ));
            }
            if let Some(before) = sockets_before {
                xdp.extend(queue_xdp_socket(name, queue, before));
            }
        }
        *self
            .shared
            .xdp
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = xdp;
        self.shared
            .xdp_read_failure_told
            .store(false, Ordering::Relaxed);
        for queue in 0..tx_queues {
            // SAFETY: valid configured port; queue < the configured tx count; a null
            // txconf selects the driver's defaults.
            let rc =
                unsafe { sys::rte_eth_tx_queue_setup(id, queue, descriptors, socket, ptr::null()) };
            if rc < 0 {
                return Err(DpdkError::from_code(
                    format!("setting up tx queue {queue} of port {name}"),
                    -rc,
                    "",
                ));
            }
        }
        self.shared.configured.store(true, Ordering::Relaxed);
        *self
            .shared
            .mempool
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(mempool.clone());
        let settings = PortSettings {
            rx_queues,
            rx_descriptors: descriptors,
            rss_hf,
            rx_offloads: offloads,
        };
        self.settings = Some(settings.clone());
        self.queues_taken = vec![false; usize::from(rx_queues)];
        Ok(settings)
    }

    /// Starts the configured port, enables promiscuous mode (a probe must see all traffic;
    /// drivers without it are logged) and finds the rx timestamp field.
    pub fn start(&mut self) -> Result<(), DpdkError> {
        let name = &self.shared.name;
        if self.settings.is_none() {
            return Err(DpdkError::new(format!(
                "port {name} must be configured before start"
            )));
        }
        if self.shared.started.load(Ordering::Relaxed) {
            return Ok(());
        }
        let id = self.shared.id;
        // SAFETY: valid, configured, stopped port; its queues' mempool is alive.
        let rc = unsafe { sys::rte_eth_dev_start(id) };
        if rc < 0 {
            return Err(DpdkError::from_code(
                format!("starting port {name}"),
                -rc,
                "",
            ));
        }
        self.shared.started.store(true, Ordering::Relaxed);
        // SAFETY: valid started port.
        let rc = unsafe { sys::rte_eth_promiscuous_enable(id) };
        if rc < 0 {
            log::debug!(
                "port {name}: promiscuous mode not available ({})",
                strerror(-rc)
            );
        }
        let timestamp = lookup_rx_timestamp();
        let timestamp = timestamp.filter(|_| self.shared.info.driver == "net_pcap");
        *self
            .shared
            .rx_timestamp
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = timestamp;
        Ok(())
    }

    /// Stops the port. Fails while rx queues of it are still held.
    pub fn stop(&mut self) -> Result<(), DpdkError> {
        if Arc::strong_count(&self.shared) > 1 {
            return Err(DpdkError::new(format!(
                "port {} still has rx queues in use; drop them before stopping",
                self.name()
            )));
        }
        self.shared.stop()?;
        self.queues_taken.iter_mut().for_each(|t| *t = false);
        Ok(())
    }

    pub fn is_started(&self) -> bool {
        self.shared.started.load(Ordering::Relaxed)
    }

    /// What `configure` obtained, once configured.
    pub fn settings(&self) -> Option<&PortSettings> {
        self.settings.as_ref()
    }

    /// Takes rx queue `queue` of the started port. Each queue can be taken once per start,
    /// so exactly one thread polls it.
    pub fn rx_queue(&mut self, queue: u16) -> Result<RxQueue, DpdkError> {
        let name = &self.shared.name;
        if !self.shared.started.load(Ordering::Relaxed) {
            return Err(DpdkError::new(format!(
                "port {name} must be started to take queues"
            )));
        }
        let taken = self
            .queues_taken
            .get_mut(usize::from(queue))
            .ok_or_else(|| DpdkError::new(format!("port {name} has no rx queue {queue}")))?;
        if *taken {
            return Err(DpdkError::new(format!(
                "rx queue {queue} of port {name} is already taken"
            )));
        }
        *taken = true;
        Ok(RxQueue {
            port: Arc::clone(&self.shared),
            queue,
        })
    }

    /// Device counters (all queues).
    pub fn stats(&self) -> Result<PortStats, DpdkError> {
        self.shared.stats()
    }
}

/// One rx queue's AF_XDP socket and the last `rx_ring_full` read from it.
#[derive(Debug)]
struct XdpQueue {
    queue: u16,
    socket: XdpSocket,
    ring_full: u64,
}

/// The AF_XDP socket that setting up rx `queue` opened: the one this process has now and
/// did not have `before`. Where it cannot be told, or its counters cannot be read, says
/// once what is not counted and returns `None`.
fn queue_xdp_socket(
    name: &str,
    queue: u16,
    before: std::io::Result<Vec<XdpSocket>>,
) -> Option<XdpQueue> {
    let uncounted = "frames the kernel drops because its rx ring is full are not counted";
    let found = before.and_then(|before| Ok(xsk::new_sockets(&before, &xsk::own_xdp_sockets()?)));
    let socket = match found.as_deref() {
        Ok([socket]) => *socket,
        Ok(sockets) => {
            log::warn!(
                "port {name}: rx queue {queue}'s setup opened {} AF_XDP sockets, not one, so \
                 its own is unknown; {uncounted}",
                sockets.len()
            );
            return None;
        }
        Err(e) => {
            log::warn!(
                "port {name}: cannot list this process's AF_XDP sockets in /proc/self/fd \
                 ({e}); {uncounted}"
            );
            return None;
        }
    };
    match socket.stats() {
        Ok(_) => Some(XdpQueue {
            queue,
            socket,
            ring_full: 0,
        }),
        Err(e) => {
            log::warn!("port {name}: rx queue {queue}: {e}; {uncounted}");
            None
        }
    }
}

pub(crate) fn port_id_by_name(name: &str) -> Option<u16> {
    let c = CString::new(name).ok()?;
    let mut id = 0u16;
    // SAFETY: c is NUL-terminated; id is writable. Only called with the EAL held.
    let rc = unsafe { sys::rte_eth_dev_get_port_by_name(c.as_ptr(), &mut id) };
    (rc == 0).then_some(id)
}

fn describe_ports(eal: &Eal) -> String {
    let ports = eal.ports();
    if ports.is_empty() {
        return "none".into();
    }
    ports
        .iter()
        .map(|(id, name)| format!("{id}={name}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn lookup_rx_timestamp() -> Option<RxTimestamp> {
    // SAFETY: EAL initialised (callers hold it); names are NUL-terminated; a null params
    // pointer is allowed.
    let offset = unsafe {
        sys::rte_mbuf_dynfield_lookup(
            sys::RTE_MBUF_DYNFIELD_TIMESTAMP_NAME.as_ptr().cast(),
            ptr::null_mut(),
        )
    };
    // SAFETY: as above.
    let bit = unsafe {
        sys::rte_mbuf_dynflag_lookup(
            sys::RTE_MBUF_DYNFLAG_RX_TIMESTAMP_NAME.as_ptr().cast(),
            ptr::null_mut(),
        )
    };
    let offset = usize::try_from(offset).ok()?;
    let bit = u32::try_from(bit).ok().filter(|b| *b < 64)?;
    // The field must lie within the mbuf, which MbufRef reads it from.
    (offset + 8 <= std::mem::size_of::<sys::rte_mbuf>()).then_some(RxTimestamp {
        offset,
        flag: 1u64 << bit,
    })
}

impl PortShared {
    pub(crate) fn stats(&self) -> Result<PortStats, DpdkError> {
        // SAFETY: all-zero rte_eth_stats is valid.
        let mut raw: sys::rte_eth_stats = unsafe { std::mem::zeroed() };
        // SAFETY: the port is open (this reference keeps it so); reading counters while
        // another thread polls a queue is how DPDK applications read stats.
        let rc = unsafe { sys::rte_eth_stats_get(self.id, &mut raw) };
        if rc < 0 {
            return Err(DpdkError::from_code(
                format!("reading port {}'s stats", self.name),
                -rc,
                "",
            ));
        }
        Ok(PortStats {
            packets: raw.ipackets,
            bytes: raw.ibytes,
            missed: raw.imissed,
            errors: raw.ierrors,
            nombuf: raw.rx_nombuf,
            xdp_ring_full: self.xdp_ring_full(),
        })
    }

    /// The sum of the queues' AF_XDP `rx_ring_full`. A socket whose read fails keeps its
    /// last value (a counter must not go back), and the first failure is logged.
    fn xdp_ring_full(&self) -> u64 {
        let mut queues = self.xdp.lock().unwrap_or_else(PoisonError::into_inner);
        let mut total = 0;
        for queue in queues.iter_mut() {
            match queue.socket.stats() {
                Ok(stats) => queue.ring_full = stats.rx_ring_full,
                Err(e) => {
                    if !self.xdp_read_failure_told.swap(true, Ordering::Relaxed) {
                        log::warn!(
                            "port {}: cannot read the AF_XDP socket counters of rx queue {} \
                             ({e}); frames the kernel drops on a full rx ring are no longer \
                             counted (nic xdp ring full)",
                            self.name,
                            queue.queue
                        );
                    }
                }
            }
            total += queue.ring_full;
        }
        total
    }

    fn stop(&self) -> Result<(), DpdkError> {
        if !self.started.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        // SAFETY: valid started port; no rx queue is held (callers check or are Drop of
        // the last reference).
        let rc = unsafe { sys::rte_eth_dev_stop(self.id) };
        if rc < 0 {
            return Err(DpdkError::from_code(
                format!("stopping port {}", self.name),
                -rc,
                "",
            ));
        }
        Ok(())
    }
}

impl Drop for PortShared {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            log::warn!("{e}");
        }
        let hotplugged = self.hotplugged.load(Ordering::Relaxed);
        if !self.configured.load(Ordering::Relaxed) && !hotplugged {
            // Only looked at: leave the port as the EAL made it, for whoever opens it next.
            return;
        }
        // SAFETY: the last reference to the port: no queue or batch uses it any more.
        let rc = unsafe { sys::rte_eth_dev_close(self.id) };
        if rc < 0 {
            log::warn!("closing port {}: {}", self.name, strerror(-rc));
        }
        if hotplugged && !self.device.is_null() {
            // SAFETY: the device was probed by us, its only port is closed.
            let rc = unsafe { sys::rte_dev_remove(self.device) };
            if rc < 0 {
                log::warn!("removing device {}: {}", self.name, strerror(-rc));
            }
        }
        // The mempool (and then the EAL handle) drop after this, with the port closed.
    }
}

#[cfg(test)]
mod rss_tests {
    use super::symmetric_rss_key;
    use proptest::prelude::*;

    /// The Toeplitz hash as a NIC computes it (Microsoft's RSS specification): for every
    /// set bit of the input, XOR in the 32 key bits starting at that bit.
    fn toeplitz(key: &[u8], input: &[u8]) -> u32 {
        let mut hash = 0u32;
        for (byte_index, byte) in input.iter().enumerate() {
            for bit in 0..8 {
                if byte & (0x80 >> bit) != 0 {
                    let start = byte_index * 8 + bit;
                    let mut window = 0u32;
                    for i in 0..32 {
                        let at = start + i;
                        let key_bit = (key[at / 8] >> (7 - at % 8)) & 1;
                        window = window << 1 | u32::from(key_bit);
                    }
                    hash ^= window;
                }
            }
        }
        hash
    }

    fn tuple(src: &[u8], dst: &[u8], sport: u16, dport: u16) -> Vec<u8> {
        [src, dst, &sport.to_be_bytes(), &dport.to_be_bytes()].concat()
    }

    proptest! {
        /// Both directions of a conversation hash alike (so reach one queue and one
        /// worker, which biflows and TCP KPIs need), for IPv4 and IPv6 tuples and the
        /// address-only types, with the key length most NICs use (40) and larger ones.
        #[test]
        fn the_rss_key_is_symmetric(
            v4 in any::<([u8; 4], [u8; 4])>(),
            v6 in any::<([u8; 16], [u8; 16])>(),
            ports in any::<(u16, u16)>(),
            key_len in prop::sample::select(vec![40usize, 52]),
        ) {
            let key = symmetric_rss_key(key_len);
            let (sp, dp) = ports;
            prop_assert_eq!(
                toeplitz(&key, &tuple(&v4.0, &v4.1, sp, dp)),
                toeplitz(&key, &tuple(&v4.1, &v4.0, dp, sp))
            );
            prop_assert_eq!(
                toeplitz(&key, &tuple(&v6.0, &v6.1, sp, dp)),
                toeplitz(&key, &tuple(&v6.1, &v6.0, dp, sp))
            );
            prop_assert_eq!(
                toeplitz(&key, &[v4.0, v4.1].concat()),
                toeplitz(&key, &[v4.1, v4.0].concat())
            );
        }
    }

    #[test]
    fn the_reference_toeplitz_matches_the_specification_vector() {
        // Microsoft's verification suite: 66.9.149.187:2794 -> 161.142.100.80:1766 with
        // the default key gives 0x51ccc178.
        let key = [
            0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3,
            0x8f, 0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3,
            0x80, 0x30, 0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
        ];
        let input = tuple(&[66, 9, 149, 187], &[161, 142, 100, 80], 2794, 1766);
        assert_eq!(toeplitz(&key, &input), 0x51cc_c178);
    }
}
