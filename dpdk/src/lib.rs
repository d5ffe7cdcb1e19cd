//! The safe wrapper over DPDK (`dpdk-sys`): the only crate of tapflow besides `dpdk-sys`
//! and `flowcache`'s SIMD loads that uses `unsafe`; `probe` forbids it.
//!
//! It owns the lifetimes DPDK leaves to its caller:
//! - [`Eal`]: the environment, initialised once per process (`rte_eal_init`) and cleaned
//!   up (`rte_eal_cleanup`) when the last handle goes. Every other object here holds an
//!   `Eal` handle, so nothing outlives the environment.
//! - [`Mempool`]: an mbuf pool (`rte_pktmbuf_pool_create`), freed when the last handle goes.
//! - [`Port`]: an ethdev port, configured, started, stopped; closed when the port and all
//!   its [`RxQueue`]s are gone. A port keeps the mempool its queues were set up with.
//! - [`RxQueue`]: one rx queue of a started port, handed out at most once, so exactly one
//!   thread polls it.
//! - [`MbufBatch`]: the mbufs of one burst, owned until the next burst, `clear` or drop.
//!   It keeps the port (and so the mempool) its mbufs came from alive.
//!
//! # Soundness
//!
//! The argument each `// SAFETY:` comment below draws on:
//! 1. DPDK functions are called only while the EAL is initialised: every type that calls
//!    them holds an [`Eal`], whose last drop is the only place `rte_eal_cleanup` runs, and
//!    `rte_eal_init` runs at most once per process (a process-wide state machine).
//! 2. Pointers handed to DPDK (mempools, mbufs) stay valid as long as DPDK may use them:
//!    a mempool is freed only after every port set up with it is closed (the port holds
//!    it), and a mbuf is freed exactly once, by the batch that owns it.
//! 3. DPDK's data path is not thread-safe per queue; an [`RxQueue`] is unique (a device
//!    has at most one [`Port`] in the process, and a port hands each queue out once per
//!    start) and `rx_burst` takes `&mut self`. Its control path (configure, start, stop,
//!    close) is not thread-safe per port; those calls take `&mut Port` or happen in the
//!    drop of the last reference to the port. Mempool get/put are multi-thread safe (the
//!    default ring_mp_mc ops), which is what lets a batch be freed on any thread.
//! 4. Mbuf contents are read only while the batch owns the mbuf, and only within the
//!    buffer DPDK filled (`buf_addr + data_off`, `data_len` bytes).
//! 5. `rte_errno` is thread-local C state: it is read through a C accessor, on the thread
//!    of the call that set it, before any other DPDK call.
//!
//! Around the EAL: its log goes to stderr only (DPDK's Linux default is stdout and
//! syslog), the calling thread's CPU affinity is restored after `rte_eal_init` (which
//! pins it to the main lcore, and every thread spawned later would inherit that), and
//! worker threads register as lcores on first poll so mempool caches serve them.
//!
//! One module per concern: [`eal`] (the environment, lcores, thread pinning), [`clock`]
//! (the TSC clock), [`mempool`], [`port`] (ethdev ports and their settings), [`rx`] (rx
//! queues and the mbufs of a burst) and [`xsk`] (the kernel's counters of the AF_XDP
//! sockets the af_xdp driver opens, which DPDK does not report in full).

#![allow(unsafe_code)]

use std::ffi::CStr;
use std::fmt;

use dpdk_sys as sys;

pub mod clock;
pub mod eal;
pub mod mempool;
pub mod pcap_ring;
pub mod port;
pub mod rx;
pub mod xsk;

pub use clock::TscClock;
pub use eal::{Eal, LcoreCpus, pin_current_thread};
pub use mempool::Mempool;
pub use port::{Port, PortInfo, PortSettings, PortStats, RxTimestamp};
pub use rx::{BURST, MbufBatch, MbufRef, RxQueue};

/// A DPDK call failed. The message says what failed, DPDK's reason, and what to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DpdkError {
    message: String,
    errno: Option<i32>,
}

impl DpdkError {
    /// An error with no DPDK error code behind it.
    pub fn new(message: impl Into<String>) -> Self {
        DpdkError {
            message: message.into(),
            errno: None,
        }
    }

    /// `what` failed with the (positive) DPDK/errno code `code`.
    fn from_code(what: impl fmt::Display, code: i32, hint: &str) -> Self {
        let mut message = format!("{what}: {} (error {code})", strerror(code));
        if !hint.is_empty() {
            message.push_str("; ");
            message.push_str(hint);
        }
        DpdkError {
            message,
            errno: Some(code),
        }
    }

    /// `what` failed and left its reason in `rte_errno`.
    fn from_rte_errno(what: impl fmt::Display, hint: &str) -> Self {
        Self::from_code(what, rte_errno(), hint)
    }

    /// The operator-facing message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The DPDK/errno code, when DPDK gave one.
    pub fn errno(&self) -> Option<i32> {
        self.errno
    }
}

impl fmt::Display for DpdkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DpdkError {}

pub(crate) fn rte_errno() -> i32 {
    // SAFETY: reads the calling thread's rte_errno through a C accessor; no preconditions.
    unsafe { sys::tapflow_rte_errno() }
}

pub(crate) fn strerror(code: i32) -> String {
    // SAFETY: rte_strerror accepts any value and returns a pointer to a NUL-terminated
    // string in static or thread-local storage, copied out before the next call.
    let text = unsafe { sys::rte_strerror(code) };
    if text.is_null() {
        return format!("error {code}");
    }
    // SAFETY: non-null, NUL-terminated, valid until this thread's next rte_strerror call.
    unsafe { CStr::from_ptr(text) }
        .to_string_lossy()
        .into_owned()
}

/// The DPDK library version this process runs against, e.g. "DPDK 22.11.11".
pub fn dpdk_version() -> String {
    // SAFETY: rte_version needs no EAL and returns a static NUL-terminated string.
    let version = unsafe { sys::rte_version() };
    if version.is_null() {
        return "DPDK (unknown version)".into();
    }
    // SAFETY: non-null and static, per above.
    unsafe { CStr::from_ptr(version) }
        .to_string_lossy()
        .into_owned()
}
