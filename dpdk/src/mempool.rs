//! Mbuf pools.

use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::Arc;

use dpdk_sys as sys;

use crate::{DpdkError, Eal};

/// DPDK's default mbuf data room (`RTE_MBUF_DEFAULT_BUF_SIZE`): headroom plus a 2 KB
/// frame.
pub const DEFAULT_DATA_ROOM: u16 = sys::RTE_MBUF_DEFAULT_BUF_SIZE as u16;

/// A pool of packet mbufs. Cheap to clone; freed when the last clone (ports hold one) goes.
#[derive(Clone, Debug)]
pub struct Mempool {
    inner: Arc<MempoolInner>,
}

#[derive(Debug)]
struct MempoolInner {
    pool: NonNull<sys::rte_mempool>,
    name: String,
    size: u32,
    _eal: Eal,
}

// SAFETY: the pool pointer is only used for MT-safe operations (counts, and the single free
// in Drop once nothing else refers to it); mbuf get/put go through DPDK's thread-safe ops.
unsafe impl Send for MempoolInner {}
// SAFETY: as above; no method mutates through &self except via MT-safe DPDK calls.
unsafe impl Sync for MempoolInner {}

/// Largest per-lcore cache DPDK accepts (RTE_MEMPOOL_CACHE_MAX_SIZE).
const MEMPOOL_CACHE_MAX: u32 = 512;

impl Mempool {
    /// Creates a pool of `size` mbufs (2^k - 1 is most memory-efficient), each with
    /// `data_room` bytes of buffer including DPDK's headroom (2176 is DPDK's default: room
    /// for a 2048-byte frame). `cache_size` is clamped to what DPDK allows. `socket`
    /// `None` means any NUMA node.
    pub fn new(
        eal: &Eal,
        name: &str,
        size: u32,
        cache_size: u32,
        data_room: u16,
        socket: Option<i32>,
    ) -> Result<Mempool, DpdkError> {
        let c_name = CString::new(name)
            .map_err(|_| DpdkError::new(format!("mempool name {name:?} contains a NUL byte")))?;
        // DPDK refuses a cache larger than its maximum or than size / 1.5.
        let cache = cache_size.min(MEMPOOL_CACHE_MAX).min(size * 2 / 3);
        if cache != cache_size {
            log::debug!("mempool {name}: cache size {cache_size} reduced to {cache}");
        }
        // SAFETY: the EAL is initialised (we hold it); c_name is NUL-terminated and copied.
        let pool = unsafe {
            sys::rte_pktmbuf_pool_create(
                c_name.as_ptr(),
                size,
                cache,
                0,
                data_room,
                socket.unwrap_or(sys::SOCKET_ID_ANY),
            )
        };
        let pool = NonNull::new(pool).ok_or_else(|| {
            DpdkError::from_rte_errno(
                format!("creating mempool {name} of {size} mbufs of {data_room} bytes"),
                "lower the mempool size, give DPDK more memory (-m), or use a unique name",
            )
        })?;
        Ok(Mempool {
            inner: Arc::new(MempoolInner {
                pool,
                name: name.to_owned(),
                size,
                _eal: eal.clone(),
            }),
        })
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Mbufs in the pool.
    pub fn size(&self) -> u32 {
        self.inner.size
    }

    /// Mbufs free (in the pool or its caches).
    pub fn available(&self) -> u32 {
        // SAFETY: the pool is alive (we hold it); counting is read-only and MT-safe.
        unsafe { sys::rte_mempool_avail_count(self.inner.pool.as_ptr()) }
    }

    /// Mbufs handed out (held by drivers, queues or batches).
    pub fn in_use(&self) -> u32 {
        // SAFETY: as for `available`.
        unsafe { sys::rte_mempool_in_use_count(self.inner.pool.as_ptr()) }
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::rte_mempool {
        self.inner.pool.as_ptr()
    }
}

impl Drop for MempoolInner {
    fn drop(&mut self) {
        // SAFETY: the last handle: every port set up with this pool (they hold handles) is
        // closed, and batches keep their port alive, so no mbuf of it is in use.
        unsafe { sys::rte_mempool_free(self.pool.as_ptr()) };
    }
}
