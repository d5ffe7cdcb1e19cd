//! The kernel's own counters of the AF_XDP sockets DPDK's af_xdp driver opens for this
//! process's ports.
//!
//! DPDK 22.11's driver reports only a socket's `rx_dropped` (frames longer than a UMEM
//! frame, and, in copy mode, frames that found the fill ring empty) as `imissed`. A frame
//! that finds the socket's rx ring full is dropped by the kernel into `rx_ring_full`
//! (Linux 5.9 and later), which the driver never reads, and the driver gives no handle on
//! its sockets. So the port finds each queue's socket itself: the driver creates it inside
//! `rte_eth_rx_queue_setup`, and the one AF_XDP socket this process has after that call
//! and did not have before it is that queue's ([`Port::configure`](crate::Port::configure)).
//!
//! The counters are read with `getsockopt(SOL_XDP, XDP_STATISTICS)` on the socket's
//! descriptor, the call DPDK itself makes for `rx_dropped` and the same counters the
//! kernel's sock_diag interface for AF_XDP (`ss --xdp -e`) shows; sock_diag would need
//! CONFIG_XDP_SOCKETS_DIAG, which not every kernel with AF_XDP has, while the socket
//! option needs nothing beyond the socket. Before each read the descriptor's link in
//! `/proc/self/fd` is checked to still name the socket's inode.

use std::io;
use std::mem;
use std::os::fd::RawFd;

/// One AF_XDP socket of this process: its descriptor and the inode that descriptor named
/// when it was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XdpSocket {
    fd: RawFd,
    inode: u64,
}

/// What the kernel counts for one AF_XDP socket (`struct xdp_statistics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpSocketStats {
    /// Frames dropped for want of a fill-ring buffer or for being longer than a UMEM
    /// frame; DPDK's driver already reports these as `imissed`.
    pub rx_dropped: u64,
    /// Frames dropped because the socket's rx ring was full: counted nowhere else.
    pub rx_ring_full: u64,
    /// Times the kernel found the fill ring empty. In copy mode each such frame is also
    /// in `rx_dropped`; in zero-copy mode it counts refill attempts, not frames.
    pub fill_ring_empty: u64,
}

impl XdpSocket {
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    pub fn inode(&self) -> u64 {
        self.inode
    }

    /// The socket's counters now. Fails when the descriptor no longer names this socket,
    /// or when the kernel predates `rx_ring_full` (Linux 5.9).
    pub fn stats(&self) -> io::Result<XdpSocketStats> {
        if socket_inode(self.fd) != Some(self.inode) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "descriptor {} no longer names AF_XDP socket {}",
                    self.fd, self.inode
                ),
            ));
        }
        let raw = xdp_statistics(self.fd)?;
        match raw {
            Statistics::Full(s) => Ok(XdpSocketStats {
                rx_dropped: s.rx_dropped,
                rx_ring_full: s.rx_ring_full,
                fill_ring_empty: s.rx_fill_ring_empty_descs,
            }),
            Statistics::V1 => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this kernel reports no rx_ring_full for AF_XDP sockets (Linux 5.9 and later do)",
            )),
        }
    }
}

enum Statistics {
    Full(libc::xdp_statistics),
    /// A kernel before 5.9: rx_dropped and the invalid descriptors only.
    V1,
}

/// `getsockopt(fd, SOL_XDP, XDP_STATISTICS)`; fails on anything but an AF_XDP socket.
fn xdp_statistics(fd: RawFd) -> io::Result<Statistics> {
    // SAFETY: all-zero is a valid xdp_statistics (plain integers).
    let mut stats: libc::xdp_statistics = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::xdp_statistics>() as libc::socklen_t;
    // SAFETY: stats is writable for len bytes and len is a valid socklen_t; the kernel
    // writes at most len bytes and stores the length written in len. A descriptor that is
    // not an AF_XDP socket (or not open) makes the call fail, with nothing written.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_XDP,
            libc::XDP_STATISTICS,
            (&raw mut stats).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if (len as usize) < mem::size_of::<libc::xdp_statistics>() {
        return Ok(Statistics::V1);
    }
    Ok(Statistics::Full(stats))
}

/// The inode of the socket descriptor `fd` names (its `/proc/self/fd` link reads
/// `socket:[INODE]`), or `None` for a closed descriptor or one that is no socket.
fn socket_inode(fd: RawFd) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    parse_socket_link(link.to_str()?)
}

fn parse_socket_link(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// This process's AF_XDP sockets now: the socket descriptors in `/proc/self/fd` that
/// answer `XDP_STATISTICS`.
pub fn own_xdp_sockets() -> io::Result<Vec<XdpSocket>> {
    let mut sockets = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Some(fd) = entry?
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<RawFd>().ok())
        else {
            continue;
        };
        if let Some(inode) = socket_inode(fd)
            && xdp_statistics(fd).is_ok()
        {
            sockets.push(XdpSocket { fd, inode });
        }
    }
    Ok(sockets)
}

/// The sockets of `after` that `before` did not have (by inode: a descriptor number may
/// be reused).
pub fn new_sockets(before: &[XdpSocket], after: &[XdpSocket]) -> Vec<XdpSocket> {
    after
        .iter()
        .filter(|s| !before.iter().any(|b| b.inode == s.inode))
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_link_names_its_inode() {
        assert_eq!(parse_socket_link("socket:[123456]"), Some(123_456));
        assert_eq!(parse_socket_link("pipe:[123456]"), None);
        assert_eq!(parse_socket_link("/dev/null"), None);
        assert_eq!(parse_socket_link("socket:[12x]"), None);
    }

    #[test]
    fn a_new_socket_is_told_by_its_inode_not_its_descriptor() {
        let s = |fd, inode| XdpSocket { fd, inode };
        // Descriptor 7 was closed and reused by a new socket.
        let before = [s(5, 100), s(7, 101)];
        let after = [s(5, 100), s(7, 205), s(9, 206)];
        assert_eq!(new_sockets(&before, &after), [s(7, 205), s(9, 206)]);
    }

    /// An AF_XDP socket of this process, or `None` where the kernel or the permissions
    /// allow none.
    fn xdp_socket() -> Option<std::os::fd::OwnedFd> {
        use std::os::fd::FromRawFd;
        // SAFETY: socket() takes no pointers; a non-negative result is a new descriptor
        // that nothing else owns, so OwnedFd may take it.
        let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        // SAFETY: as above.
        (fd >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
    }

    /// Around the creation of an AF_XDP socket, the difference of this process's AF_XDP
    /// sockets is that socket, and its counters read; a UDP socket is no AF_XDP socket.
    #[test]
    fn the_new_xdp_socket_is_found_and_read() {
        use std::os::fd::AsRawFd;
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let before = own_xdp_sockets().unwrap();
        assert!(!before.iter().any(|s| s.fd == udp.as_raw_fd()));
        let Some(xsk) = xdp_socket() else {
            eprintln!(
                "SKIP: cannot open an AF_XDP socket here: {}",
                io::Error::last_os_error()
            );
            return;
        };
        let after = own_xdp_sockets().unwrap();
        let new = new_sockets(&before, &after);
        assert_eq!(new.len(), 1, "{before:?} -> {after:?}");
        assert_eq!(new[0].fd(), xsk.as_raw_fd());
        assert_eq!(new[0].stats().unwrap(), XdpSocketStats::default());
        // Closed, its descriptor names it no more.
        let found = new[0];
        drop(xsk);
        assert_eq!(found.stats().unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}
