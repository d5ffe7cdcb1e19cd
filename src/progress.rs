//! A progress line for long replays, drawn only when stderr is a terminal: logs and CI
//! output stay clean.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts drawing `counters` (summed) against `total` packets, if stderr is a terminal.
    pub fn start(counters: Vec<Arc<AtomicU64>>, total: u64) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::io::stderr().is_terminal().then(|| {
            let stop = stop.clone();
            std::thread::spawn(move || draw_until(&stop, &counters, total))
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

fn draw_until(stop: &AtomicBool, counters: &[Arc<AtomicU64>], total: u64) {
    let started = Instant::now();
    let mut drawn = false;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(250));
        let done: u64 = counters.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        let secs = started.elapsed().as_secs_f64().max(1e-3);
        let mut err = std::io::stderr().lock();
        let mpps = done as f64 / secs / 1e6;
        // A live or looped source has no total: no percentage then.
        let _ = if total > 0 {
            let pct = done as f64 * 100.0 / total as f64;
            write!(
                err,
                "\r  {pct:5.1}%  {done} of {total} packets  {mpps:.2} Mpps "
            )
        } else {
            write!(err, "\r  {done} packets  {mpps:.2} Mpps ")
        };
        let _ = err.flush();
        drawn = true;
    }
    if drawn {
        let _ = write!(std::io::stderr(), "\r{:60}\r", "");
    }
}
