//! Transports: the only module of the exporter that touches sockets.
//!
//! - [`UdpTransport`]: one connected UDP socket (IPv4 or IPv6) per collector, with an
//!   optional send buffer size and source address. Connecting lets the kernel report a
//!   collector's ICMP port unreachable as `ECONNREFUSED` on a later send, which the
//!   collector counts as a send error and moves on. Sends block for at most
//!   [`UDP_SEND_TIMEOUT`] when the socket buffer is full.
//! - [`TcpTransport`]: IPFIX over TCP (RFC 7011 §10.4). Non-blocking throughout: a
//!   non-blocking connect checked on every poll, exponential backoff between attempts, a
//!   bounded queue of unsent bytes when the collector reads slowly. Every new connection is
//!   a new transport session; [`Transport::poll`] says so with [`Readiness::NewSession`] and
//!   the collector sends the templates again before any data.

use std::fmt;
use std::io::{self, ErrorKind, Read};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Longest a UDP send waits for room in a full socket buffer before it fails.
pub const UDP_SEND_TIMEOUT: Duration = Duration::from_millis(50);

/// What a transport can do right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Sends go out.
    Ready,
    /// Sends go out on a transport session that is new since the last poll: the
    /// collector knows no templates yet.
    NewSession,
    /// Nothing can be sent (TCP not connected); sends would fail.
    Down,
}

/// Carries finished export messages to one collector.
pub trait Transport: fmt::Debug + Send {
    /// Sends one export message (UDP: one datagram; TCP: onto the stream, queued if the
    /// socket is full). An error means the message is lost.
    fn send(&mut self, message: &[u8]) -> io::Result<()>;
    /// Makes progress (connects, flushes queued bytes, notices a closed peer) without
    /// blocking, and says whether sending is possible.
    fn poll(&mut self) -> Readiness;
    /// Flushes what is queued, waiting at most `timeout`, then closes.
    fn close(&mut self, _timeout: Duration) {}
}

/// UDP socket options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpOptions {
    /// SO_SNDBUF in bytes (the kernel doubles it and caps it at net.core.wmem_max).
    pub send_buffer: Option<usize>,
    /// Local address (and port, 0 for any) to send from.
    pub source: Option<SocketAddr>,
}

/// A connected UDP socket to one collector.
#[derive(Debug)]
pub struct UdpTransport {
    socket: Socket,
    dest: SocketAddr,
}

impl UdpTransport {
    pub fn new(dest: SocketAddr, opts: &UdpOptions) -> io::Result<UdpTransport> {
        let socket = Socket::new(Domain::for_address(dest), Type::DGRAM, Some(Protocol::UDP))?;
        if let Some(size) = opts.send_buffer {
            socket.set_send_buffer_size(size)?;
        }
        if let Some(source) = opts.source {
            socket.bind(&source.into()).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot bind to source {source}: {e}"))
            })?;
        }
        socket.set_write_timeout(Some(UDP_SEND_TIMEOUT))?;
        socket
            .connect(&dest.into())
            .map_err(|e| io::Error::new(e.kind(), format!("cannot connect to {dest}: {e}")))?;
        Ok(UdpTransport { socket, dest })
    }

    pub fn dest(&self) -> SocketAddr {
        self.dest
    }

    /// The send buffer size the kernel actually granted.
    pub fn send_buffer_size(&self) -> io::Result<usize> {
        self.socket.send_buffer_size()
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        sock_addr(self.socket.local_addr()?)
    }
}

impl Transport for UdpTransport {
    fn send(&mut self, message: &[u8]) -> io::Result<()> {
        let sent = self.socket.send(message)?;
        if sent != message.len() {
            return Err(io::Error::new(
                ErrorKind::WriteZero,
                format!("short UDP send: {sent} of {} bytes", message.len()),
            ));
        }
        Ok(())
    }

    fn poll(&mut self) -> Readiness {
        Readiness::Ready
    }
}

/// TCP connection behaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpOptions {
    /// A connect that has not completed in this long is abandoned.
    pub connect_timeout: Duration,
    /// Wait after a failed attempt or a lost connection, doubled per failure up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Unsent bytes kept while the collector reads slowly; messages beyond it are dropped.
    pub max_queued_bytes: usize,
    pub send_buffer: Option<usize>,
    pub source: Option<SocketAddr>,
}

impl Default for TcpOptions {
    fn default() -> Self {
        TcpOptions {
            connect_timeout: Duration::from_secs(2),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            max_queued_bytes: 1 << 20,
            send_buffer: None,
            source: None,
        }
    }
}

/// Connection history of a [`TcpTransport`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpStats {
    /// Connections established.
    pub connects: u64,
    /// Connect attempts that failed or timed out.
    pub connect_failures: u64,
    /// Established connections lost (peer closed, reset, write error).
    pub disconnects: u64,
    /// Messages refused because the queue of unsent bytes was full.
    pub queue_full: u64,
}

#[derive(Debug)]
enum TcpState {
    Idle { retry_at: Instant },
    Connecting { socket: Socket, deadline: Instant },
    Connected { socket: Socket },
}

/// IPFIX over TCP to one collector; see the module docs.
#[derive(Debug)]
pub struct TcpTransport {
    dest: SocketAddr,
    opts: TcpOptions,
    state: TcpState,
    backoff: Duration,
    /// Bytes accepted by `send` but not yet taken by the kernel, from `queued_from` on.
    queued: Vec<u8>,
    queued_from: usize,
    new_session: bool,
    stats: TcpStats,
}

impl TcpTransport {
    /// Starts connecting at once; never blocks.
    pub fn new(dest: SocketAddr, opts: &TcpOptions) -> TcpTransport {
        let mut t = TcpTransport {
            dest,
            opts: *opts,
            state: TcpState::Idle {
                retry_at: Instant::now(),
            },
            backoff: opts.backoff_min,
            queued: Vec::new(),
            queued_from: 0,
            new_session: false,
            stats: TcpStats::default(),
        };
        t.make_progress();
        t
    }

    pub fn stats(&self) -> &TcpStats {
        &self.stats
    }

    pub fn is_connected(&self) -> bool {
        matches!(self.state, TcpState::Connected { .. })
    }

    /// Bytes waiting for the kernel to take them.
    pub fn queued_bytes(&self) -> usize {
        self.queued.len() - self.queued_from
    }

    fn start_connect(&mut self, now: Instant) {
        match self.open_socket() {
            Ok(socket) => match socket.connect(&self.dest.into()) {
                Ok(()) => self.connected(socket),
                Err(e) if in_progress(&e) => {
                    self.state = TcpState::Connecting {
                        socket,
                        deadline: now + self.opts.connect_timeout,
                    }
                }
                Err(e) => self.connect_failed(now, &e),
            },
            Err(e) => self.connect_failed(now, &e),
        }
    }

    fn open_socket(&self) -> io::Result<Socket> {
        let socket = Socket::new(
            Domain::for_address(self.dest),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        socket.set_nonblocking(true)?;
        if let Some(size) = self.opts.send_buffer {
            socket.set_send_buffer_size(size)?;
        }
        if let Some(source) = self.opts.source {
            socket.bind(&source.into())?;
        }
        Ok(socket)
    }

    fn connected(&mut self, socket: Socket) {
        log::info!("IPFIX/TCP collector {} connected", self.dest);
        self.state = TcpState::Connected { socket };
        self.backoff = self.opts.backoff_min;
        self.queued.clear();
        self.queued_from = 0;
        self.new_session = true;
        self.stats.connects += 1;
    }

    fn connect_failed(&mut self, now: Instant, e: &io::Error) {
        log::debug!(
            "IPFIX/TCP collector {}: connect failed ({e}); retry in {:?}",
            self.dest,
            self.backoff
        );
        self.stats.connect_failures += 1;
        self.retry_later(now);
    }

    fn retry_later(&mut self, now: Instant) {
        self.state = TcpState::Idle {
            retry_at: now + self.backoff,
        };
        self.backoff = (self.backoff * 2).min(self.opts.backoff_max);
    }

    /// The connection is gone; whatever was queued is lost with it (a new connection must
    /// start on a message boundary).
    fn disconnected(&mut self, e: &io::Error) {
        log::warn!("IPFIX/TCP collector {} lost: {e}", self.dest);
        self.stats.disconnects += 1;
        self.queued.clear();
        self.queued_from = 0;
        self.new_session = false;
        self.retry_later(Instant::now());
    }

    /// Writes queued bytes until the kernel refuses more. Err: the connection broke.
    fn flush_queued(&mut self) -> io::Result<()> {
        let TcpState::Connected { socket } = &self.state else {
            return Ok(());
        };
        while self.queued_from < self.queued.len() {
            match send_nosignal(socket, &self.queued[self.queued_from..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.queued_from += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.queued_from == self.queued.len() {
            self.queued.clear();
            self.queued_from = 0;
        }
        Ok(())
    }

    /// Reads and discards whatever the collector sent; Ok(false) when it closed.
    fn peer_open(socket: &Socket) -> io::Result<bool> {
        let mut sink = [0u8; 256];
        loop {
            match (&*socket).read(&mut sink) {
                Ok(0) => return Ok(false),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Connects when a retry is due, completes a pending connect, notices a closed peer and
    /// flushes queued bytes. Never blocks.
    fn make_progress(&mut self) {
        let now = Instant::now();
        if let TcpState::Idle { retry_at } = self.state
            && now >= retry_at
        {
            self.start_connect(now);
        }
        if let TcpState::Connecting { socket, deadline } = &self.state {
            let deadline = *deadline;
            let outcome = match socket.take_error() {
                Ok(Some(e)) | Err(e) => Err(e),
                Ok(None) => match socket.peer_addr() {
                    Ok(_) => Ok(true),
                    Err(e) if e.kind() == ErrorKind::NotConnected => Ok(false),
                    Err(e) => Err(e),
                },
            };
            match outcome {
                Ok(true) => {
                    let TcpState::Connecting { socket, .. } =
                        std::mem::replace(&mut self.state, TcpState::Idle { retry_at: now })
                    else {
                        unreachable!("matched above");
                    };
                    self.connected(socket);
                }
                Ok(false) if now >= deadline => {
                    let e = io::Error::new(ErrorKind::TimedOut, "connect timed out");
                    self.connect_failed(now, &e);
                }
                Ok(false) => {}
                Err(e) => self.connect_failed(now, &e),
            }
        }
        if let TcpState::Connected { socket } = &self.state {
            let health = match TcpTransport::peer_open(socket) {
                Ok(true) => Ok(()),
                Ok(false) => Err(io::Error::new(
                    ErrorKind::ConnectionAborted,
                    "collector closed the connection",
                )),
                Err(e) => Err(e),
            };
            if let Err(e) = health.and_then(|()| self.flush_queued()) {
                self.disconnected(&e);
            }
        }
    }

    fn queue(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.queued_bytes() + bytes.len() > self.opts.max_queued_bytes {
            self.stats.queue_full += 1;
            return Err(io::Error::new(
                ErrorKind::WouldBlock,
                "TCP send queue full: the collector reads too slowly",
            ));
        }
        self.queued.extend_from_slice(bytes);
        Ok(())
    }
}

impl Transport for TcpTransport {
    fn send(&mut self, message: &[u8]) -> io::Result<()> {
        if !self.is_connected() {
            return Err(io::Error::new(
                ErrorKind::NotConnected,
                format!("IPFIX/TCP collector {} not connected", self.dest),
            ));
        }
        if let Err(e) = self.flush_queued() {
            self.disconnected(&e);
            return Err(e);
        }
        if self.queued_bytes() > 0 {
            // Keep message order: behind what is already waiting.
            return self.queue(message);
        }
        let TcpState::Connected { socket } = &self.state else {
            unreachable!("checked above");
        };
        match send_nosignal(socket, message) {
            Ok(n) if n == message.len() => Ok(()),
            // The rest of a partly written message must follow before anything else, so
            // it is queued even beyond the limit (at most one message over).
            Ok(n) => {
                self.queued.extend_from_slice(&message[n..]);
                Ok(())
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                self.queue(message)
            }
            Err(e) => {
                self.disconnected(&e);
                Err(e)
            }
        }
    }

    fn poll(&mut self) -> Readiness {
        self.make_progress();
        match self.state {
            TcpState::Connected { .. } if std::mem::take(&mut self.new_session) => {
                Readiness::NewSession
            }
            TcpState::Connected { .. } => Readiness::Ready,
            _ => Readiness::Down,
        }
    }

    fn close(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.is_connected() && self.queued_bytes() > 0 && Instant::now() < deadline {
            if let Err(e) = self.flush_queued() {
                self.disconnected(&e);
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if let TcpState::Connected { socket } = &self.state {
            let _ = socket.shutdown(Shutdown::Write);
        }
        self.state = TcpState::Idle {
            retry_at: Instant::now() + self.opts.backoff_max,
        };
    }
}

fn in_progress(e: &io::Error) -> bool {
    e.kind() == ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::EINPROGRESS)
}

/// MSG_NOSIGNAL: a collector that went away must yield EPIPE, never a SIGPIPE.
fn send_nosignal(socket: &Socket, bytes: &[u8]) -> io::Result<usize> {
    socket.send_with_flags(bytes, libc::MSG_NOSIGNAL)
}

fn sock_addr(addr: SockAddr) -> io::Result<SocketAddr> {
    addr.as_socket()
        .ok_or_else(|| io::Error::new(ErrorKind::InvalidData, "not an IP socket address"))
}
