//! The EAL: initialised once per process, cleaned up when the last handle goes; where its
//! lcores run, and threads pinned or registered as lcores.

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_int};
use std::ptr;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use dpdk_sys as sys;

use crate::port::{port_id_by_name, port_name};
use crate::{DpdkError, TscClock, rte_errno, strerror};

/// Where this process is in the EAL's once-only life.
enum EalState {
    Uninitialised,
    Running(Weak<EalInner>),
    Failed(String),
    CleanedUp,
}

static EAL_STATE: Mutex<EalState> = Mutex::new(EalState::Uninitialised);

/// The initialised DPDK environment. Cheap to clone; `rte_eal_cleanup` runs when the last
/// clone (including those held by mempools, ports and queues) is dropped.
#[derive(Clone, Debug)]
pub struct Eal {
    inner: Arc<EalInner>,
}

#[derive(Debug)]
struct EalInner {
    args: Vec<String>,
    /// The argv rte_eal_init saw; kept until cleanup in case DPDK kept pointers into it.
    _argv: Vec<CString>,
}

impl Eal {
    /// Initialises the EAL with `args` (EAL options only; the program name is added).
    ///
    /// DPDK allows this once per process: a second call, or a call after an earlier failure
    /// or after cleanup, returns an error without touching DPDK. DPDK's log goes to stderr.
    /// The calling thread's CPU affinity is restored after init (the EAL pins it to the
    /// main lcore), so threads spawned later are not all bound to one CPU.
    pub fn init(args: &[String]) -> Result<Eal, DpdkError> {
        let mut state = EAL_STATE.lock().unwrap_or_else(PoisonError::into_inner);
        match &*state {
            EalState::Uninitialised => {}
            EalState::Running(weak) if weak.strong_count() > 0 => {
                return Err(DpdkError::new(
                    "the DPDK EAL is already initialised in this process; \
                     share the existing Eal handle (Eal::get or clone) instead",
                ));
            }
            EalState::Running(_) | EalState::CleanedUp => {
                return Err(DpdkError::new(
                    "the DPDK EAL was already initialised and cleaned up in this process; \
                     DPDK cannot initialise twice: restart the process",
                ));
            }
            EalState::Failed(why) => {
                return Err(DpdkError::new(format!(
                    "an earlier DPDK EAL initialisation failed in this process ({why}); \
                     DPDK cannot retry: fix the cause and restart the process"
                )));
            }
        }
        if let Some(bad) = args.iter().find(|a| matches!(a.as_str(), "-h" | "--help")) {
            // DPDK prints its usage and exits the process on these.
            return Err(DpdkError::new(format!(
                "EAL argument {bad} is not allowed here"
            )));
        }
        let mut owned = Vec::with_capacity(args.len() + 1);
        for arg in std::iter::once("tapflow").chain(args.iter().map(String::as_str)) {
            owned.push(CString::new(arg).map_err(|_| {
                DpdkError::new(format!("EAL argument {arg:?} contains a NUL byte"))
            })?);
        }
        let mut argv: Vec<*mut c_char> = owned.iter().map(|a| a.as_ptr().cast_mut()).collect();
        let argc =
            c_int::try_from(argv.len()).map_err(|_| DpdkError::new("too many EAL arguments"))?;
        argv.push(ptr::null_mut());

        log_to_stderr();
        let affinity = CpuAffinity::of_current_thread();
        // SAFETY: argv holds argc valid NUL-terminated strings plus a terminating null, all
        // alive (in `owned`) until cleanup; EAL_STATE guarantees this is the process's only
        // call; DPDK may permute argv's pointers, which only touches our Vec.
        let rc = unsafe { sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        if let Some(affinity) = affinity {
            affinity.restore();
        }
        if rc < 0 {
            let code = rte_errno();
            let hint = match code {
                libc::EACCES => "run as root or with CAP_SYS_ADMIN/CAP_IPC_LOCK",
                libc::ENOMEM | libc::ENODEV => {
                    "not enough memory: reserve hugepages, or pass --no-huge -m <MB>"
                }
                libc::ENOTSUP => "a device or bus failed to probe; DPDK's log above says which",
                libc::EALREADY => "the EAL was initialised elsewhere in this process",
                _ => "check the EAL arguments; DPDK's log above has details",
            };
            let err = DpdkError::from_code(
                format!(
                    "DPDK EAL initialisation failed (arguments: {})",
                    args.join(" ")
                ),
                code,
                hint,
            );
            *state = EalState::Failed(err.message.clone());
            return Err(err);
        }
        let inner = Arc::new(EalInner {
            args: args.to_vec(),
            _argv: owned,
        });
        *state = EalState::Running(Arc::downgrade(&inner));
        Ok(Eal { inner })
    }

    /// The running EAL, if this process initialised it and some handle is still alive.
    pub fn get() -> Option<Eal> {
        let state = EAL_STATE.lock().unwrap_or_else(PoisonError::into_inner);
        match &*state {
            EalState::Running(weak) => weak.upgrade().map(|inner| Eal { inner }),
            _ => None,
        }
    }

    /// The EAL arguments this process was initialised with.
    pub fn args(&self) -> &[String] {
        &self.inner.args
    }

    /// The ethdev ports DPDK knows, as (port id, device name).
    pub fn ports(&self) -> Vec<(u16, String)> {
        let mut ports = Vec::new();
        for id in 0..sys::RTE_MAX_ETHPORTS as u16 {
            // SAFETY: EAL is initialised (we hold it); any port id may be asked about.
            if unsafe { sys::rte_eth_dev_is_valid_port(id) } == 1
                && let Ok(name) = port_name(id)
            {
                ports.push((id, name));
            }
        }
        ports
    }

    /// The id of the port of device `name`, if DPDK has one.
    pub fn port_id(&self, name: &str) -> Option<u16> {
        port_id_by_name(name)
    }

    /// Probes a device after init (hotplug), e.g. `net_pcap1,rx_pcap=trace.pcap`: the
    /// same string `--vdev` takes, or a PCI address.
    pub fn probe_device(&self, devargs: &str) -> Result<(), DpdkError> {
        let c = CString::new(devargs)
            .map_err(|_| DpdkError::new(format!("device {devargs:?} contains a NUL byte")))?;
        // SAFETY: EAL is initialised; c is a valid NUL-terminated string DPDK copies.
        let rc = unsafe { sys::rte_dev_probe(c.as_ptr()) };
        if rc < 0 {
            return Err(DpdkError::from_code(
                format!("DPDK could not probe device {devargs}"),
                -rc,
                "check the device arguments (is the file readable? is the PCI device bound \
                 to vfio-pci?); DPDK's log above says why",
            ));
        }
        Ok(())
    }

    /// Gives the calling (non-EAL) thread an lcore id, so mempool per-lcore caches serve it;
    /// undone when the thread exits. Returns the thread's lcore id, or `None` when all
    /// lcore slots are taken (the thread still works, only slower).
    pub fn register_current_thread(&self) -> Result<Option<u32>, DpdkError> {
        if let Some(id) = current_lcore() {
            return Ok(Some(id));
        }
        // SAFETY: EAL is initialised (we hold it); registering an unregistered thread.
        if unsafe { sys::rte_thread_register() } != 0 {
            return Err(DpdkError::from_rte_errno(
                "registering a thread with DPDK",
                "",
            ));
        }
        LCORE_REGISTRATION.with(|slot| {
            *slot.borrow_mut() = Some(LcoreRegistration { _eal: self.clone() });
        });
        Ok(current_lcore())
    }

    /// The CPUs of the EAL's lcores (`-l`; every core when not given): the main lcore's,
    /// and the worker lcores' in lcore order. tapflow runs its exporter on the first and
    /// one worker on each of the others.
    pub fn lcore_cpus(&self) -> LcoreCpus {
        // SAFETY: the EAL is initialised (we hold it); these read its lcore configuration,
        // which does not change after init.
        let main = unsafe { sys::rte_get_main_lcore() };
        let cpu_of = |lcore: u32| {
            // SAFETY: as above; any lcore id below RTE_MAX_LCORE is valid to ask about.
            let cpu = unsafe { sys::rte_lcore_to_cpu_id(lcore as c_int) };
            u32::try_from(cpu).ok()
        };
        let workers = (0..sys::RTE_MAX_LCORE)
            // SAFETY: as above.
            .filter(|&lcore| lcore != main && unsafe { sys::rte_lcore_is_enabled(lcore) } != 0)
            .filter_map(cpu_of)
            .collect();
        LcoreCpus {
            main: cpu_of(main),
            workers,
        }
    }

    /// The TSC mapped to wall time (for live ports), anchored now.
    pub fn tsc_clock(&self) -> TscClock {
        TscClock::new(self)
    }
}

impl Drop for EalInner {
    fn drop(&mut self) {
        let mut state = EAL_STATE.lock().unwrap_or_else(PoisonError::into_inner);
        *state = EalState::CleanedUp;
        // SAFETY: the EAL is initialised; the result is a static NUL-terminated path.
        let runtime_dir = unsafe { sys::rte_eal_get_runtime_dir() };
        let runtime_dir = (!runtime_dir.is_null()).then(|| {
            // SAFETY: non-null, NUL-terminated, static.
            let dir = unsafe { CStr::from_ptr(runtime_dir) };
            std::path::PathBuf::from(dir.to_string_lossy().into_owned())
        });
        // SAFETY: this is the last handle: every mempool, port and queue holds one, so no
        // DPDK object remains in use, and init ran successfully exactly once.
        let rc = unsafe { sys::rte_eal_cleanup() };
        if rc < 0 {
            log::warn!("rte_eal_cleanup failed: {}", strerror(-rc));
        }
        // DPDK leaves its runtime directory behind; remove it when nothing is in it
        // (always, with --no-shconf). A non-empty one is left alone.
        if let Some(dir) = runtime_dir {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Sends DPDK's log to stderr only (DPDK's Linux default is stdout plus syslog).
fn log_to_stderr() {
    // SAFETY: dup and fdopen have no preconditions; the resulting FILE is handed to DPDK
    // for the rest of the process and never closed by us.
    unsafe {
        let fd = libc::dup(libc::STDERR_FILENO);
        if fd < 0 {
            return;
        }
        let stream = libc::fdopen(fd, c"w".as_ptr());
        if stream.is_null() {
            libc::close(fd);
            return;
        }
        libc::setvbuf(stream, ptr::null_mut(), libc::_IOLBF, 0);
        sys::rte_openlog_stream(stream.cast());
    }
}

/// Where the EAL's lcores run: see [`Eal::lcore_cpus`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LcoreCpus {
    /// The main lcore's CPU.
    pub main: Option<u32>,
    /// The worker lcores' CPUs, in lcore order.
    pub workers: Vec<u32>,
}

/// Binds the calling thread to one CPU, as DPDK binds its lcore threads: a poll-mode worker
/// that the scheduler moves between cores loses its caches and competes with whatever it
/// lands beside.
pub fn pin_current_thread(cpu: u32) -> Result<(), DpdkError> {
    let cpu = cpu as usize;
    // SAFETY: cpu_set_t is plain data; all-zero is a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= 8 * std::mem::size_of::<libc::cpu_set_t>() {
        return Err(DpdkError::new(format!(
            "CPU {cpu} is beyond the CPU set's size"
        )));
    }
    // SAFETY: `cpu` is within the set's bits (checked above); CPU_SET only writes the set.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; the size matches the set we pass.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(DpdkError::new(format!(
            "cannot bind a thread to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

struct CpuAffinity(libc::cpu_set_t);

impl CpuAffinity {
    fn of_current_thread() -> Option<Self> {
        // SAFETY: cpu_set_t is plain data; all-zero is a valid (empty) set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: pid 0 is the calling thread; the size matches the set we pass.
        let rc =
            unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
        (rc == 0).then_some(CpuAffinity(set))
    }

    fn restore(&self) {
        // SAFETY: as above; the set came from sched_getaffinity.
        let rc =
            unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.0) };
        if rc != 0 {
            log::debug!("could not restore the main thread's CPU affinity after EAL init");
        }
    }
}

fn current_lcore() -> Option<u32> {
    // SAFETY: reads the calling thread's lcore id (thread-local); no preconditions.
    let id = unsafe { sys::rte_lcore_id() };
    (id != sys::LCORE_ID_ANY).then_some(id)
}

struct LcoreRegistration {
    _eal: Eal,
}

impl Drop for LcoreRegistration {
    fn drop(&mut self) {
        // SAFETY: this thread registered itself (see register_current_thread) and the EAL
        // is alive (held by `_eal`, dropped after this).
        unsafe { sys::rte_thread_unregister() };
    }
}

thread_local! {
    static LCORE_REGISTRATION: RefCell<Option<LcoreRegistration>> = const { RefCell::new(None) };
}
