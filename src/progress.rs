//! A progress line for long replays, drawn only when stderr is a terminal: logs and CI
//! output stay clean.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a run's end is measured against.
#[derive(Clone, Debug, Default)]
pub enum Goal {
    /// Nothing is known of the end (a live port): packets and rate only.
    #[default]
    Unknown,
    /// This many packets (a DPDK replay counts them before it starts).
    Packets(u64),
    /// A file of `total` bytes, `read` of them consumed so far (the file reader): no
    /// counting pass needed.
    Bytes { read: Arc<AtomicU64>, total: u64 },
}

impl Goal {
    /// How far the run is, 0 to 1, after `done` packets; None when unknown.
    fn fraction(&self, done: u64) -> Option<f64> {
        let (done, total) = match self {
            Goal::Unknown => return None,
            Goal::Packets(total) => (done, *total),
            Goal::Bytes { read, total } => (read.load(Ordering::Relaxed), *total),
        };
        (total > 0).then(|| (done as f64 / total as f64).min(1.0))
    }

    /// The progress line after `done` packets in `secs` seconds.
    fn line(&self, done: u64, secs: f64) -> String {
        let rate = done as f64 / secs.max(1e-3) / 1e6;
        let packets = match self {
            Goal::Packets(total) => format!("{done} of {total} packets"),
            _ => format!("{done} packets"),
        };
        match self.fraction(done) {
            Some(fraction) => format!("{:5.1}%  {packets}  {rate:.2} Mpps", fraction * 100.0),
            None => format!("{packets}  {rate:.2} Mpps"),
        }
    }
}

#[derive(Debug)]
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts drawing `counters` (summed) against `goal`, if stderr is a terminal.
    pub fn start(counters: Vec<Arc<AtomicU64>>, goal: Goal) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::io::stderr().is_terminal().then(|| {
            let stop = stop.clone();
            std::thread::spawn(move || draw_until(&stop, &counters, &goal))
        });
        Progress { stop, thread }
    }

    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn draw_until(stop: &AtomicBool, counters: &[Arc<AtomicU64>], goal: &Goal) {
    let started = Instant::now();
    let mut drawn = false;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(250));
        let done: u64 = counters.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        let line = goal.line(done, started.elapsed().as_secs_f64());
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r  {line} ");
        let _ = err.flush();
        drawn = true;
    }
    if drawn {
        let _ = write!(std::io::stderr(), "\r{:60}\r", "");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_replay_measures_progress_in_bytes_read() {
        let read = Arc::new(AtomicU64::new(0));
        let goal = Goal::Bytes {
            read: read.clone(),
            total: 4000,
        };
        assert_eq!(goal.fraction(0), Some(0.0));
        read.store(1000, Ordering::Relaxed);
        // Packets do not enter the fraction: bytes do.
        assert_eq!(goal.fraction(123_456), Some(0.25));
        assert_eq!(goal.line(500, 1.0), " 25.0%  500 packets  0.00 Mpps");
        read.store(4000, Ordering::Relaxed);
        assert_eq!(goal.fraction(7), Some(1.0));
    }

    #[test]
    fn a_counted_replay_measures_progress_in_packets() {
        let goal = Goal::Packets(200);
        assert_eq!(goal.fraction(50), Some(0.25));
        assert_eq!(goal.line(100, 1.0), " 50.0%  100 of 200 packets  0.00 Mpps");
        // A count that turned out short never shows more than 100%.
        assert_eq!(goal.fraction(300), Some(1.0));
        assert_eq!(Goal::Packets(0).fraction(5), None);
        assert_eq!(Goal::Unknown.line(10, 1.0), "10 packets  0.00 Mpps");
    }
}
