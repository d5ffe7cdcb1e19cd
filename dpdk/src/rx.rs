//! Rx queues and the mbufs of one burst.
//!
//! What runs per packet or per burst is `#[inline]`: the release build has no LTO, and
//! across a crate boundary only inline-marked functions inline into the worker loop.

use std::fmt;
use std::ptr;
use std::sync::{Arc, PoisonError};

use dpdk_sys as sys;

use crate::port::{PortShared, PortStats, RxTimestamp};
use crate::{DpdkError, Eal, Mempool};

/// Most frames one [`RxQueue::rx_burst`] receives (the size of an [`MbufBatch`]).
pub const BURST: usize = 64;

/// One rx queue of a started port. Unique: taken once from [`Port::rx_queue`](crate::Port::rx_queue), it can move
/// to the thread that polls it.
#[derive(Debug)]
pub struct RxQueue {
    pub(crate) port: Arc<PortShared>,
    pub(crate) queue: u16,
}

impl RxQueue {
    pub fn port_id(&self) -> u16 {
        self.port.id
    }

    pub fn queue_id(&self) -> u16 {
        self.queue
    }

    pub fn port_name(&self) -> &str {
        &self.port.name
    }

    /// Where the driver stamps rx time (see [`Port::rx_timestamp`](crate::Port::rx_timestamp)).
    pub fn rx_timestamp(&self) -> Option<RxTimestamp> {
        *self
            .port
            .rx_timestamp
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The EAL this queue's port lives in.
    pub fn eal(&self) -> &Eal {
        &self.port.eal
    }

    /// Device counters of the whole port (all queues).
    pub fn port_stats(&self) -> Result<PortStats, DpdkError> {
        self.port.stats()
    }

    /// The mempool the queue fills from.
    pub fn mempool(&self) -> Option<Mempool> {
        self.port
            .mempool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Frees what `batch` held, then receives up to [`BURST`] frames into it.
    #[inline]
    pub fn rx_burst(&mut self, batch: &mut MbufBatch) -> usize {
        batch.clear();
        // SAFETY: the port is started (queues are only handed out by a started port, and
        // stop/configure refuse while this queue exists) and this queue is polled only
        // through &mut self; the array has room for BURST pointers, which DPDK fills
        // with mbufs it hands over to us.
        let n = unsafe {
            sys::rte_eth_rx_burst(
                self.port.id,
                self.queue,
                batch.mbufs.as_mut_ptr(),
                BURST as u16,
            )
        };
        batch.len = usize::from(n).min(BURST);
        if batch.len > 0 {
            batch.owner = Some(Arc::clone(&self.port));
        }
        batch.len
    }
}

/// The mbufs of one burst, owned until the next burst, [`MbufBatch::clear`] or drop.
pub struct MbufBatch {
    mbufs: [*mut sys::rte_mbuf; BURST],
    len: usize,
    /// While mbufs are held: keeps their port, and so the mempool they return to, alive.
    owner: Option<Arc<PortShared>>,
}

// SAFETY: the batch exclusively owns its mbufs; reading them and returning them to their
// mempool (MT-safe ops) works from any thread.
unsafe impl Send for MbufBatch {}

impl fmt::Debug for MbufBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MbufBatch")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl Default for MbufBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl MbufBatch {
    pub fn new() -> Self {
        MbufBatch {
            mbufs: [ptr::null_mut(); BURST],
            len: 0,
            owner: None,
        }
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Returns every mbuf to its pool.
    #[inline]
    pub fn clear(&mut self) {
        if self.len > 0 {
            // SAFETY: the first len pointers are mbufs this batch owns (from rx_burst), each
            // freed exactly once here; their pool is alive (owner holds the port).
            unsafe { sys::rte_pktmbuf_free_bulk(self.mbufs.as_mut_ptr(), self.len as u32) };
            self.len = 0;
        }
        self.owner = None;
    }

    /// The `i`th mbuf of the burst.
    #[inline]
    pub fn get(&self, i: usize) -> Option<MbufRef<'_>> {
        (i < self.len).then(|| {
            // SAFETY: an owned, non-null mbuf (DPDK filled the first len slots), valid and
            // unchanged while the batch is borrowed.
            MbufRef {
                mbuf: unsafe { &*self.mbufs[i] },
            }
        })
    }

    #[inline]
    pub fn iter(&self) -> impl ExactSizeIterator<Item = MbufRef<'_>> + '_ {
        (0..self.len).map(|i| MbufRef {
            // SAFETY: as in `get`.
            mbuf: unsafe { &*self.mbufs[i] },
        })
    }
}

impl Drop for MbufBatch {
    #[inline]
    fn drop(&mut self) {
        self.clear();
    }
}

/// A received frame, borrowed from its batch.
#[derive(Clone, Copy)]
pub struct MbufRef<'a> {
    mbuf: &'a sys::rte_mbuf,
}

impl fmt::Debug for MbufRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MbufRef")
            .field("port", &self.port())
            .field("pkt_len", &self.pkt_len())
            .field("data_len", &self.data().len())
            .finish()
    }
}

impl<'a> MbufRef<'a> {
    /// The frame's bytes in the first segment (all of it unless the frame was chained
    /// over several mbufs; then `data().len() < pkt_len()`).
    #[inline]
    pub fn data(&self) -> &'a [u8] {
        let m = self.mbuf;
        if m.buf_addr.is_null() {
            return &[];
        }
        // SAFETY: DPDK filled data_len bytes at buf_addr + data_off of this owned mbuf's
        // buffer, which stays valid and unchanged for 'a (the batch owns it).
        unsafe {
            std::slice::from_raw_parts(
                m.buf_addr.cast::<u8>().add(usize::from(m.data_off)),
                usize::from(m.data_len),
            )
        }
    }

    /// Length of the whole frame (all segments).
    #[inline]
    pub fn pkt_len(&self) -> u32 {
        self.mbuf.pkt_len
    }

    /// Segments the frame spans.
    #[inline]
    pub fn segments(&self) -> u16 {
        self.mbuf.nb_segs
    }

    /// Input port as the driver set it.
    #[inline]
    pub fn port(&self) -> u16 {
        self.mbuf.port
    }

    #[inline]
    pub fn ol_flags(&self) -> u64 {
        self.mbuf.ol_flags
    }

    /// The device's RSS hash, when it delivered one.
    #[inline]
    pub fn rss_hash(&self) -> Option<u32> {
        if self.mbuf.ol_flags & u64::from(sys::RTE_MBUF_F_RX_RSS_HASH) == 0 {
            return None;
        }
        // SAFETY: with RX_RSS_HASH set the union holds the rss member; any bits are a u32.
        Some(unsafe { self.mbuf.__bindgen_anon_2.hash.rss })
    }

    /// The rx timestamp in the field `ts` describes, when the driver set it on this mbuf
    /// (for the pcap driver: capture time, microseconds since the epoch).
    #[inline]
    pub fn rx_timestamp(&self, ts: &RxTimestamp) -> Option<u64> {
        if self.mbuf.ol_flags & ts.flag == 0 {
            return None;
        }
        let base: *const sys::rte_mbuf = self.mbuf;
        // SAFETY: RxTimestamp guarantees offset + 8 <= size_of::<rte_mbuf>(), so the read
        // stays inside this owned mbuf; the field may be unaligned, hence read_unaligned.
        Some(unsafe {
            base.cast::<u8>()
                .add(ts.offset)
                .cast::<u64>()
                .read_unaligned()
        })
    }
}
