//! systemd's service notification protocol (`sd_notify(3)`), without libsystemd.
//!
//! Under `Type=notify` systemd passes the path of a datagram socket in `$NOTIFY_SOCKET`
//! (a file path, or `@name` for the abstract namespace); the service sends newline
//! separated `KEY=VALUE` assignments to it: `READY=1` once it runs, `WATCHDOG=1` at least
//! every half `WatchdogSec`, `STOPPING=1`, `RELOADING=1`, `STATUS=...`. Outside systemd
//! the variable is unset and every call is a no-op returning `Ok(false)`.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::time::{Duration, Instant};

/// Sends `state` (e.g. `"READY=1"`) to `$NOTIFY_SOCKET`. `Ok(false)` when the variable is
/// unset or empty (not started by systemd, or `NotifyAccess` withheld it).
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(socket) if !socket.is_empty() => notify_to(&socket, state).map(|()| true),
        _ => Ok(false),
    }
}

/// Sends `state` to the notification socket `socket`: an absolute path, or `@name` for a
/// socket in the abstract namespace.
pub fn notify_to(socket: &OsStr, state: &str) -> io::Result<()> {
    let sender = UnixDatagram::unbound()?;
    let bytes = socket.as_bytes();
    let sent = match bytes.first() {
        Some(b'@') => {
            let addr = SocketAddr::from_abstract_name(&bytes[1..])?;
            sender.send_to_addr(state.as_bytes(), &addr)?
        }
        Some(b'/') => sender.send_to(state.as_bytes(), Path::new(socket))?,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "NOTIFY_SOCKET={:?} is neither an absolute path nor an @abstract name",
                    socket.to_string_lossy()
                ),
            ));
        }
    };
    if sent != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sent {sent} of {} bytes to NOTIFY_SOCKET", state.len()),
        ));
    }
    Ok(())
}

/// `READY=1`: startup finished (the ports run and the exporter is connected).
pub fn ready() -> io::Result<bool> {
    notify("READY=1")
}

/// `WATCHDOG=1`: still alive; send at least every half [`watchdog_interval`].
pub fn watchdog() -> io::Result<bool> {
    notify("WATCHDOG=1")
}

/// `STOPPING=1`: shutdown began (the cache is being flushed).
pub fn stopping() -> io::Result<bool> {
    notify("STOPPING=1")
}

/// `RELOADING=1`: re-reading the configuration; send [`ready`] when done. (The
/// `MONOTONIC_USEC` that `Type=notify-reload` also wants is not sent; the unit uses
/// `Type=notify` with `ExecReload`.)
pub fn reloading() -> io::Result<bool> {
    notify("RELOADING=1")
}

/// `EXTEND_TIMEOUT_USEC=...`: the start-up or shutdown under way needs up to `more` from
/// now; systemd extends its start or stop timeout rather than kill the service.
pub fn extend_timeout(more: Duration) -> io::Result<bool> {
    notify(&format!("EXTEND_TIMEOUT_USEC={}", more.as_micros()))
}

/// Whether the watchdog may be fed: each part of the data plane (a worker, the exporter)
/// reports a counter that moves while it works, and the gate opens only while every one
/// of them moved within `grace`. A thread that merely runs proves nothing about the
/// workers; their counters do.
#[derive(Clone, Debug)]
pub struct ProgressGate {
    grace: Duration,
    /// Each part's counter as last seen, and when it last changed.
    seen: Vec<(u64, Instant)>,
}

impl ProgressGate {
    pub fn new(grace: Duration) -> ProgressGate {
        ProgressGate {
            grace,
            seen: Vec::new(),
        }
    }

    /// Takes the parts' counters at `now` (always the same parts, in the same order);
    /// true while every part moved within the grace time.
    pub fn observe(&mut self, counters: &[u64], now: Instant) -> bool {
        if self.seen.len() != counters.len() {
            self.seen = counters.iter().map(|&c| (c, now)).collect();
        }
        for (seen, &counter) in self.seen.iter_mut().zip(counters) {
            if seen.0 != counter {
                *seen = (counter, now);
            }
        }
        self.stalest(now).is_none_or(|(_, idle)| idle <= self.grace)
    }

    /// The part that has not moved for longest (the first of equals: a stuck worker
    /// before the exporter its ticks stopped feeding), and for how long.
    pub fn stalest(&self, now: Instant) -> Option<(usize, Duration)> {
        self.seen
            .iter()
            .enumerate()
            .min_by_key(|(_, (_, at))| *at)
            .map(|(part, (_, at))| (part, now.saturating_duration_since(*at)))
    }
}

/// `STATUS=text`: one line shown by `systemctl status`.
pub fn status(text: &str) -> io::Result<bool> {
    notify(&format!("STATUS={}", text.replace('\n', " ")))
}

/// The watchdog timeout systemd expects pings within (`WatchdogSec`), if it is enabled
/// for this process; ping at half of it.
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    watchdog_interval_from(usec.as_deref(), pid.as_deref(), std::process::id())
}

/// [`watchdog_interval`] from the variables' values: `WATCHDOG_USEC` must be a positive
/// number of microseconds and `WATCHDOG_PID`, when set, this process's id (the variables
/// are inherited by children, which must not ping on the parent's behalf).
pub fn watchdog_interval_from(
    usec: Option<&str>,
    pid: Option<&str>,
    own_pid: u32,
) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(own_pid)
    {
        return None;
    }
    Some(Duration::from_micros(usec))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::process::Command;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static N: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "tapflow-sdnotify-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn receiver(dir: &TempDir) -> (PathBuf, UnixDatagram) {
        let path = dir.0.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        (path, socket)
    }

    fn recv(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn states_arrive_at_a_path_socket() {
        let dir = TempDir::new();
        let (path, socket) = receiver(&dir);
        notify_to(path.as_os_str(), "READY=1").unwrap();
        assert_eq!(recv(&socket), "READY=1");
        notify_to(path.as_os_str(), "STATUS=flushing\nSTOPPING=1").unwrap();
        assert_eq!(recv(&socket), "STATUS=flushing\nSTOPPING=1");
    }

    #[test]
    fn states_arrive_at_an_abstract_socket() {
        let name = format!("tapflow-sdnotify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        notify_to(OsStr::new(&format!("@{name}")), "WATCHDOG=1").unwrap();
        assert_eq!(recv(&socket), "WATCHDOG=1");
    }

    #[test]
    fn relative_or_missing_sockets_are_errors() {
        let err = notify_to(OsStr::new("relative.sock"), "READY=1").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let dir = TempDir::new();
        let missing = dir.0.join("nobody-listens.sock");
        let err = notify_to(missing.as_os_str(), "READY=1").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn watchdog_interval_honours_usec_and_pid() {
        let me = 4321;
        assert_eq!(
            watchdog_interval_from(Some("30000000"), None, me),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            watchdog_interval_from(Some("30000000"), Some("4321"), me),
            Some(Duration::from_secs(30))
        );
        // Inherited from a parent: not ours to ping.
        assert_eq!(
            watchdog_interval_from(Some("30000000"), Some("1"), me),
            None
        );
        assert_eq!(
            watchdog_interval_from(Some("30000000"), Some("x"), me),
            None
        );
        assert_eq!(watchdog_interval_from(Some("0"), None, me), None);
        assert_eq!(watchdog_interval_from(Some("-5"), None, me), None);
        assert_eq!(watchdog_interval_from(Some("soon"), None, me), None);
        assert_eq!(watchdog_interval_from(None, Some("4321"), me), None);
    }

    /// Runs in a child process started by
    /// `notify_and_watchdog_read_the_environment`, which sets the variables (setting them
    /// in this process would race with other tests).
    #[test]
    #[ignore = "run in a child process by notify_and_watchdog_read_the_environment"]
    fn child_process_notifies() {
        let Ok(expect) = std::env::var("TAPFLOW_SDNOTIFY_CHILD") else {
            return;
        };
        match expect.as_str() {
            "sent" => {
                assert!(ready().unwrap());
                assert!(status("line one\nline two").unwrap());
                assert_eq!(watchdog_interval(), Some(Duration::from_millis(1500)));
            }
            "unset" => {
                assert!(!ready().unwrap());
                assert_eq!(watchdog_interval(), None);
            }
            other => panic!("unknown expectation {other}"),
        }
    }

    #[test]
    fn notify_and_watchdog_read_the_environment() {
        let dir = TempDir::new();
        let (path, socket) = receiver(&dir);
        let exe = std::env::current_exe().unwrap();
        let run = |cmd: &mut Command| {
            let out = cmd
                .args([
                    "--exact",
                    "sdnotify::tests::child_process_notifies",
                    "--ignored",
                    "--test-threads=1",
                ])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(out.status.success(), "child failed: {text}");
            assert!(text.contains("1 passed"), "child ran no test: {text}");
        };

        let mut child = Command::new(&exe);
        child
            .env("TAPFLOW_SDNOTIFY_CHILD", "sent")
            .env("NOTIFY_SOCKET", &path)
            .env("WATCHDOG_USEC", "1500000")
            .env_remove("WATCHDOG_PID");
        run(&mut child);
        assert_eq!(recv(&socket), "READY=1");
        assert_eq!(recv(&socket), "STATUS=line one line two");

        let mut child = Command::new(&exe);
        child
            .env("TAPFLOW_SDNOTIFY_CHILD", "unset")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID");
        run(&mut child);
    }

    #[test]
    fn progress_gate_closes_when_one_part_stops_moving() {
        let grace = Duration::from_secs(3);
        let mut gate = ProgressGate::new(grace);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(gate.observe(&[0, 0], at(0)));
        assert!(gate.observe(&[1, 5], at(1)));
        // Part 0 stops at 1; part 1 goes on.
        assert!(gate.observe(&[1, 6], at(3)));
        assert!(gate.observe(&[1, 7], at(4)));
        assert!(!gate.observe(&[1, 8], at(5)), "part 0 idle for 4 s");
        assert_eq!(gate.stalest(at(5)), Some((0, Duration::from_secs(4))));
        // It moves again: the gate opens.
        assert!(gate.observe(&[2, 9], at(6)));
    }
}
