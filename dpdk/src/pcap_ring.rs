//! The size of libpcap's ring under DPDK's pcap driver on a live interface.
//!
//! tapflow reads an af_packet port through DPDK's pcap driver (see
//! `PortSection::eal_device` in the tapflow crate for why), and DPDK 22.11 opens that
//! interface with `pcap_open_live`, which leaves libpcap's ring at its default of 2 MB and
//! offers no argument to change it. With TPACKET_V3 the kernel hands that ring over in
//! blocks, one a millisecond even when nearly empty, so at low rates it holds tens of
//! milliseconds: a worker that loses its CPU for longer loses frames.
//!
//! The tapflow executable therefore defines `pcap_open_live` itself and exports it (its
//! build script asks the linker to), so that the driver, which DPDK loads at run time,
//! binds to this one rather than libpcap's: it does what libpcap's does (create, set the
//! snapshot length, promiscuity and timeout, activate), with the buffer size set for that
//! interface by [`set_ring_bytes`] first. An interface without a size, or a DPDK that
//! stops calling `pcap_open_live`, gets libpcap's default: nothing breaks, the ring is
//! merely small again ([`opened_with`] tells which happened).

use std::collections::HashMap;
use std::ffi::{CStr, c_char, c_int};
use std::sync::Mutex;

/// libpcap's opaque handle.
#[derive(Debug)]
#[repr(C)]
pub struct PcapHandle {
    _private: [u8; 0],
}

#[link(name = "pcap")]
unsafe extern "C" {
    fn pcap_create(device: *const c_char, errbuf: *mut c_char) -> *mut PcapHandle;
    fn pcap_set_snaplen(p: *mut PcapHandle, snaplen: c_int) -> c_int;
    fn pcap_set_promisc(p: *mut PcapHandle, promisc: c_int) -> c_int;
    fn pcap_set_timeout(p: *mut PcapHandle, to_ms: c_int) -> c_int;
    fn pcap_set_buffer_size(p: *mut PcapHandle, bytes: c_int) -> c_int;
    fn pcap_activate(p: *mut PcapHandle) -> c_int;
    fn pcap_geterr(p: *mut PcapHandle) -> *const c_char;
    fn pcap_statustostr(status: c_int) -> *const c_char;
    fn pcap_close(p: *mut PcapHandle);
}

/// libpcap's PCAP_ERRBUF_SIZE.
const ERRBUF_SIZE: usize = 256;

struct Rings {
    /// Interface name -> the ring's size in bytes, set before the EAL probes the ports.
    wanted: HashMap<String, c_int>,
    /// Interface name -> the size it was opened with (`None`: libpcap's default).
    opened: HashMap<String, Option<c_int>>,
}

static RINGS: Mutex<Option<Rings>> = Mutex::new(None);

fn with_rings<T>(f: impl FnOnce(&mut Rings) -> T) -> T {
    let mut guard = RINGS.lock().unwrap_or_else(|e| e.into_inner());
    let rings = guard.get_or_insert_with(|| Rings {
        wanted: HashMap::new(),
        opened: HashMap::new(),
    });
    f(rings)
}

/// Sets the ring size libpcap gets when DPDK's pcap driver opens `interface` live. Call it
/// before the EAL starts.
pub fn set_ring_bytes(interface: &str, bytes: u32) {
    let bytes = c_int::try_from(bytes).unwrap_or(c_int::MAX);
    with_rings(|r| r.wanted.insert(interface.to_string(), bytes));
}

/// Whether `interface` was opened through this module, and with what ring size: `None`
/// if it was not (the driver did not call `pcap_open_live`, or the executable did not
/// export it), `Some(None)` if it was but with libpcap's default size.
pub fn opened_with(interface: &str) -> Option<Option<u32>> {
    with_rings(|r| {
        r.opened
            .get(interface)
            .map(|size| size.map(|b| b.unsigned_abs()))
    })
}

/// libpcap's `pcap_open_live`, with the ring size [`set_ring_bytes`] gave the interface.
///
/// # Safety
/// As libpcap's: `device` is a NUL-terminated string or null, and `errbuf` points to at
/// least PCAP_ERRBUF_SIZE (256) writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pcap_open_live(
    device: *const c_char,
    snaplen: c_int,
    promisc: c_int,
    to_ms: c_int,
    errbuf: *mut c_char,
) -> *mut PcapHandle {
    // SAFETY: the caller's contract is libpcap's, which these calls keep.
    unsafe {
        let p = pcap_create(device, errbuf);
        if p.is_null() {
            return p;
        }
        let name = if device.is_null() {
            String::new()
        } else {
            CStr::from_ptr(device).to_string_lossy().into_owned()
        };
        let wanted = with_rings(|r| r.wanted.get(&name).copied());
        pcap_set_snaplen(p, snaplen);
        pcap_set_promisc(p, promisc);
        pcap_set_timeout(p, to_ms);
        if let Some(bytes) = wanted {
            pcap_set_buffer_size(p, bytes);
        }
        let status = pcap_activate(p);
        if status < 0 {
            // As libpcap words it: "device: message" in errbuf, then no handle.
            let status_text = CStr::from_ptr(pcap_statustostr(status)).to_string_lossy();
            let detail = CStr::from_ptr(pcap_geterr(p)).to_string_lossy();
            let message = if status == -1 {
                format!("{name}: {detail}")
            } else {
                format!("{name}: {status_text} ({detail})")
            };
            let bytes = message.as_bytes();
            let n = bytes.len().min(ERRBUF_SIZE - 1);
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), errbuf.cast::<u8>(), n);
            *errbuf.add(n) = 0;
            pcap_close(p);
            return std::ptr::null_mut();
        }
        with_rings(|r| r.opened.insert(name, wanted));
        p
    }
}
