//! Adaptive sampling: one controller per worker holds the worker's busy share at a budget
//! by raising or lowering hash-based flow sampling, 1 in N with N a power of two between
//! the configured bounds.
//!
//! - **What it measures.** The share of the worker's time spent in polls that worked on
//!   packets (busy: polls that received some, and polls that accounted the burst the
//!   previous poll received and held back for the flow cache, the part of the work that
//!   sampling relieves) against all of its time (busy and idle polls), over each period of
//!   `period_ms`, plus the port's receive drops in the period. The worker reads the
//!   monotonic clock once a poll for it, and only with the controller on: off, the loop is
//!   the one it was.
//! - **Its own work, not its neighbours'.** A busy poll's wall time also holds the time
//!   the worker was runnable but another thread had its CPU (a core shared with the
//!   export thread, the host's other work, a virtual machine's neighbours): then the
//!   share would rise with the host's load and the controller would sample for load that
//!   is not the traffic's. Once a period the worker reads the scheduler's account of its
//!   thread (`/proc/thread-self/schedstat`: time on a CPU, time waiting for one) and the
//!   busy time counts only the part of it the thread was on a CPU, assuming the waits
//!   fell alike on busy and idle polls. On a core of its own the two are the same.
//! - **What it moves.** Hash sampling keeps a flow iff its hash is divisible by N, so with
//!   powers of two the kept flows nest: raising N drops whole flows, lowering it admits
//!   whole flows, and a flow is never kept packet by packet.
//! - **How.** Over budget for two periods in a row (or any receive drop): the smallest
//!   higher N whose predicted busy share fits the budget; under 90% of the budget for two
//!   periods: the lowest N whose predicted share still fits 90% of it. The prediction scales the measured share by the busy time per
//!   received packet measured at each N (remembered per N), and where an N was never
//!   measured, by the bound that sampling at most halves or doubles a worker's work per
//!   doubling of N (optimistic going up, pessimistic going down, so it steps rather than
//!   overshoots). With traffic under the budget it never leaves `min_interval` (1 by
//!   default: nothing sampled).
//! - **What a change costs.** Little: the worker accounts the burst it holds, then the
//!   new interval applies to packets and to the records that start from then on. Flows
//!   cached under the old interval keep it and end lazily, forced, at their next packet
//!   (which starts a record under the new interval) or when the expiry sweep passes them,
//!   about a second later at most (flowcache's "Sampling epochs"): no record mixes two
//!   intervals, each carries its own, and nothing waits for the exporter. The export loop
//!   sends a sampling options record with the new interval and the time it took effect
//!   (docs/IPFIX.md). The period after a change is not judged: its flows end and restart.

use std::time::{Duration, Instant};

use flowcache::counters::Spec;

/// A predicted share must fit under this part of the budget before the interval is
/// lowered: the hysteresis that keeps noise from flapping the interval.
const LOWER_HEADROOM: f64 = 0.9;
/// Fewer packets than this in a period say too little about their cost to remember it.
const MIN_PACKETS_FOR_COST: u64 = 64;
/// Exponents of 2 the interval can take: 2^0 ..= 2^31.
const LEVELS: usize = 32;

/// `[sampling.adaptive]` as the worker needs it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdaptiveConfig {
    /// Busy share to hold (0 < budget < 1).
    pub budget_busy: f64,
    /// Bounds of the interval, powers of two, min <= max.
    pub min_interval: u32,
    pub max_interval: u32,
    /// How often the controller measures and decides.
    pub period_ms: u64,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        AdaptiveConfig {
            budget_busy: 0.5,
            min_interval: 1,
            max_interval: 1024,
            period_ms: 250,
        }
    }
}

flowcache::counters! {
    /// The controller's state and its changes: on the metrics endpoint as
    /// `tapflow_adaptive_<name>` (gauges) and `tapflow_adaptive_<name>_total`.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct AdaptiveCounters {
        /// The interval in force (1 in N).
        interval: u64 = Spec::gauge("interval", "adaptive sampling interval",
            "Sampling interval in force (1 in N flows, 1: unsampled), set by the adaptive \
            controller."),
        /// The busy share of the last period, in thousandths.
        busy_permille: u64 = Spec::gauge("busy_permille", "busy share (permille)",
            "Share of the worker's time spent on received packets in the controller's last \
            period, in thousandths."),
        raises: u64 = Spec::counter("raises", "sampling interval raised",
            "Times the controller raised the sampling interval (over budget or receive \
            drops)."),
        lowers: u64 = Spec::counter("lowers", "sampling interval lowered",
            "Times the controller lowered the sampling interval (under budget)."),
        /// Time measured, and the part of it in polls that received packets: their ratio
        /// is the busy share over the run.
        observed_us: u64 = Spec::counter("observed_microseconds", "time observed (us)",
            "Microseconds of the worker's time the controller measured.").no_row(),
        busy_us: u64 = Spec::counter("busy_microseconds", "busy time (us)",
            "Microseconds of the measured time spent in polls that received packets, on a \
            CPU.")
            .no_row(),
        /// Time the worker thread was runnable but had no CPU (the scheduler's account).
        waiting_us: u64 = Spec::counter("waiting_microseconds",
            "time waiting for a CPU (us)",
            "Microseconds the worker thread was runnable but another thread had its CPU; \
            left out of the busy time.").no_row(),
    }
}

/// The scheduler's account of one thread: nanoseconds on a CPU and waiting for one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedTime {
    pub on_cpu_ns: u64,
    pub waiting_ns: u64,
}

impl SchedTime {
    /// The calling thread's, from `/proc/thread-self/schedstat`; `None` where the kernel
    /// keeps no such account (then busy time is wall time).
    pub fn of_this_thread() -> Option<SchedTime> {
        SchedTime::parse(&std::fs::read_to_string("/proc/thread-self/schedstat").ok()?)
    }

    /// `"<on cpu ns> <waiting ns> <timeslices>"`.
    fn parse(text: &str) -> Option<SchedTime> {
        let mut fields = text.split_ascii_whitespace().map(str::parse::<u64>);
        Some(SchedTime {
            on_cpu_ns: fields.next()?.ok()?,
            waiting_ns: fields.next()?.ok()?,
        })
    }

    /// The share of the runnable time between `earlier` and `self` spent on a CPU (1 when
    /// unknown or when the thread never waited).
    fn on_cpu_share_since(&self, earlier: &SchedTime) -> f64 {
        let on_cpu = self.on_cpu_ns.saturating_sub(earlier.on_cpu_ns);
        let waiting = self.waiting_ns.saturating_sub(earlier.waiting_ns);
        if on_cpu + waiting == 0 {
            1.0
        } else {
            on_cpu as f64 / (on_cpu + waiting) as f64
        }
    }
}

/// A change of interval the controller decided, and why.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Change {
    pub from: u32,
    pub to: u32,
    /// Busy share measured in the period that led to it.
    pub busy: f64,
    /// Receive drops in that period.
    pub drops: u64,
}

/// The controller of one worker.
#[derive(Clone, Debug)]
pub struct AdaptiveController {
    config: AdaptiveConfig,
    exponent: u32,
    min_exponent: u32,
    max_exponent: u32,
    period: Duration,
    period_start: Instant,
    last_poll: Instant,
    busy: Duration,
    packets_at_start: u64,
    drops_at_start: u64,
    sched_at_start: Option<SchedTime>,
    /// Busy nanoseconds per received packet last measured at each exponent (NaN: never).
    cost_ns: [f64; LEVELS],
    /// The period after a change is not judged: the cached flows of the old interval end
    /// and restart in it, work that says nothing about the new interval.
    settling: bool,
    /// The busy share of the last judged period at this interval: a move needs two periods
    /// in a row on the same side of the budget, so one noisy period (the host's other
    /// work) moves nothing.
    previous_busy: Option<f64>,
    /// Whether a poll was observed yet: the first period starts at the first poll, not
    /// when the worker was built (thread start and first touch of the table are no load).
    polled: bool,
    counters: AdaptiveCounters,
}

impl AdaptiveController {
    /// Starts at `min_interval`. Bounds that are not powers of two are rounded up to one.
    pub fn new(config: AdaptiveConfig, now: Instant) -> AdaptiveController {
        let exponent_of = |n: u32| n.max(1).next_power_of_two().trailing_zeros();
        let min_exponent = exponent_of(config.min_interval);
        let max_exponent = exponent_of(config.max_interval).max(min_exponent);
        let mut controller = AdaptiveController {
            config,
            exponent: min_exponent,
            min_exponent,
            max_exponent,
            period: Duration::from_millis(config.period_ms.max(1)),
            period_start: now,
            last_poll: now,
            busy: Duration::ZERO,
            packets_at_start: 0,
            drops_at_start: 0,
            sched_at_start: None,
            cost_ns: [f64::NAN; LEVELS],
            settling: false,
            previous_busy: None,
            polled: false,
            counters: AdaptiveCounters::default(),
        };
        controller.counters.interval = u64::from(controller.interval());
        controller
    }

    /// The interval in force (1 in N).
    pub fn interval(&self) -> u32 {
        1 << self.exponent
    }

    pub fn config(&self) -> &AdaptiveConfig {
        &self.config
    }

    pub fn counters(&self) -> &AdaptiveCounters {
        &self.counters
    }

    /// After each poll: `delivered` when it received packets. True when a period is over
    /// and [`AdaptiveController::decide`] is due.
    #[inline]
    pub fn observe(&mut self, delivered: bool, now: Instant) -> bool {
        if !self.polled {
            self.polled = true;
            self.period_start = now;
            self.last_poll = now;
            self.sched_at_start = SchedTime::of_this_thread();
            return false;
        }
        if delivered {
            self.busy += now.saturating_duration_since(self.last_poll);
        }
        self.last_poll = now;
        now.saturating_duration_since(self.period_start) >= self.period
    }

    /// Ends the period: `packets` and `drops` are the worker's running totals of received
    /// packets and receive drops, `sched` its thread's scheduler account now. Returns the
    /// change to apply, if any; the caller applies it and then calls
    /// [`AdaptiveController::restart`]. Without a change the next period starts here.
    pub fn decide(
        &mut self,
        packets: u64,
        drops: u64,
        sched: Option<SchedTime>,
        now: Instant,
    ) -> Option<Change> {
        let elapsed = now.saturating_duration_since(self.period_start);
        let received = packets.saturating_sub(self.packets_at_start);
        let dropped = drops.saturating_sub(self.drops_at_start);
        let on_cpu = match (sched, self.sched_at_start) {
            (Some(end), Some(start)) => {
                self.counters.waiting_us += end.waiting_ns.saturating_sub(start.waiting_ns) / 1000;
                end.on_cpu_share_since(&start)
            }
            _ => 1.0,
        };
        let busy_time = self.busy.mul_f64(on_cpu);
        let busy = if elapsed.is_zero() {
            0.0
        } else {
            (busy_time.as_secs_f64() / elapsed.as_secs_f64()).min(1.0)
        };
        self.counters.busy_permille = (busy * 1000.0).round() as u64;
        self.counters.observed_us += elapsed.as_micros() as u64;
        self.counters.busy_us += busy_time.as_micros() as u64;
        if std::mem::take(&mut self.settling) {
            self.restart(now, packets, drops, sched);
            return None;
        }
        let k = self.exponent as usize;
        if received >= MIN_PACKETS_FOR_COST {
            self.cost_ns[k] = busy_time.as_nanos() as f64 / received as f64;
        }
        let target = match self.previous_busy.replace(busy) {
            _ if dropped > 0 => (self.exponent + 1).min(self.max_exponent),
            Some(previous) => self.target(busy.min(previous), busy.max(previous)),
            None => self.exponent,
        };
        self.restart(now, packets, drops, sched);
        if target == self.exponent {
            return None;
        }
        let change = Change {
            from: self.interval(),
            to: 1 << target,
            busy,
            drops: dropped,
        };
        if target > self.exponent {
            self.counters.raises += 1;
        } else {
            self.counters.lowers += 1;
        }
        self.exponent = target;
        self.counters.interval = u64::from(self.interval());
        self.settling = true;
        self.previous_busy = None;
        Some(change)
    }

    /// Starts a new period at `now` (after a change has been applied, so applying it is
    /// not measured as the new interval's work).
    pub fn restart(&mut self, now: Instant, packets: u64, drops: u64, sched: Option<SchedTime>) {
        self.period_start = now;
        self.sched_at_start = sched;
        self.last_poll = now;
        self.busy = Duration::ZERO;
        self.packets_at_start = packets;
        self.drops_at_start = drops;
    }

    /// The exponent to move to after two periods whose busy shares were `low` and `high`:
    /// up when even the lower one was over budget, down when even the higher one left
    /// room.
    fn target(&self, low: f64, high: f64) -> u32 {
        let budget = self.config.budget_busy;
        let k = self.exponent;
        if low > budget {
            let busy = low;
            let mut j = k;
            while j < self.max_exponent {
                j += 1;
                if busy * self.scale(k, j) <= budget {
                    break;
                }
            }
            return j;
        }
        let busy = high;
        let mut j = k;
        while j > self.min_exponent && busy * self.scale(k, j - 1) <= budget * LOWER_HEADROOM {
            j -= 1;
        }
        j
    }

    /// Predicted busy share at exponent `to` over the one measured at `from`: the ratio of
    /// their measured costs per packet where both are known (no less than 1 going down,
    /// no more than 1 going up: sampling less never costs less), else the bound that each
    /// doubling of the interval at most halves the work.
    fn scale(&self, from: u32, to: u32) -> f64 {
        let (a, b) = (self.cost_ns[from as usize], self.cost_ns[to as usize]);
        let bound = 2f64.powi(from as i32 - to as i32);
        if a.is_nan() || b.is_nan() || a <= 0.0 {
            return bound;
        }
        let measured = b / a;
        if to < from {
            measured.max(1.0)
        } else {
            measured.min(1.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker whose busy share at rate `pps` and interval N is `pps * (fixed + per_kept / N)`
    /// ns (a fixed receive-and-parse cost per packet, and the flow cache's per kept packet).
    struct Plant {
        fixed_ns: f64,
        per_kept_ns: f64,
    }

    impl Plant {
        fn busy(&self, pps: f64, interval: u32) -> f64 {
            (pps * (self.fixed_ns + self.per_kept_ns / f64::from(interval)) / 1e9).min(1.0)
        }
    }

    /// Runs `periods` periods of `pps` through the controller; returns the interval after
    /// each.
    fn run(
        controller: &mut AdaptiveController,
        plant: &Plant,
        pps: f64,
        periods: usize,
        clock: &mut Instant,
        packets: &mut u64,
    ) -> Vec<u32> {
        let period = Duration::from_millis(controller.config.period_ms);
        (0..periods)
            .map(|_| {
                let busy = plant.busy(pps, controller.interval());
                // One busy poll covering the busy share, then idle polls.
                controller.observe(false, *clock);
                *clock += period.mul_f64(busy);
                controller.observe(true, *clock);
                *clock += period.mul_f64(1.0 - busy);
                assert!(controller.observe(false, *clock));
                *packets += (pps * period.as_secs_f64()) as u64;
                if let Some(change) = controller.decide(*packets, 0, None, *clock) {
                    assert_eq!(change.to, controller.interval());
                }
                controller.interval()
            })
            .collect()
    }

    fn config(budget: f64) -> AdaptiveConfig {
        AdaptiveConfig {
            budget_busy: budget,
            min_interval: 1,
            max_interval: 1024,
            period_ms: 250,
        }
    }

    #[test]
    fn holds_the_budget_within_a_few_periods_and_then_stays() {
        // 80% busy unsampled, a quarter of it fixed: budget 40% needs 1 in 4 (35%).
        let plant = Plant {
            fixed_ns: 200.0,
            per_kept_ns: 600.0,
        };
        let mut clock = Instant::now();
        let mut packets = 0;
        let mut c = AdaptiveController::new(config(0.40), clock);
        let trace = run(&mut c, &plant, 1e6, 20, &mut clock, &mut packets);
        let settled = trace.iter().position(|&n| n == 4).expect("reaches 1 in 4");
        assert!(settled < 10, "took {settled} periods: {trace:?}");
        assert!(trace[settled..].iter().all(|&n| n == 4), "{trace:?}");
        assert!(plant.busy(1e6, 4) <= 0.40 && plant.busy(1e6, 2) > 0.40);
        assert_eq!(c.counters().interval, 4);
        assert!(c.counters().busy_permille <= 400);
    }

    #[test]
    fn under_capacity_nothing_is_sampled() {
        let plant = Plant {
            fixed_ns: 100.0,
            per_kept_ns: 200.0,
        };
        let mut clock = Instant::now();
        let mut packets = 0;
        let mut c = AdaptiveController::new(config(0.40), clock);
        // 30% busy.
        let trace = run(&mut c, &plant, 1e6, 10, &mut clock, &mut packets);
        assert!(trace.iter().all(|&n| n == 1), "{trace:?}");
        assert_eq!((c.counters().raises, c.counters().lowers), (0, 0));
    }

    #[test]
    fn returns_to_unsampled_when_the_load_goes() {
        let plant = Plant {
            fixed_ns: 100.0,
            per_kept_ns: 900.0,
        };
        let mut clock = Instant::now();
        let mut packets = 0;
        let mut c = AdaptiveController::new(config(0.40), clock);
        let loaded = run(&mut c, &plant, 1e6, 12, &mut clock, &mut packets);
        assert!(*loaded.last().unwrap() > 1);
        // A tenth of the load: 10% busy unsampled.
        let light = run(&mut c, &plant, 1e5, 12, &mut clock, &mut packets);
        assert_eq!(*light.last().unwrap(), 1, "{light:?}");
        // Never below the budget's headroom on the way down.
        for pair in light.windows(2) {
            assert!(plant.busy(1e5, pair[1]) <= 0.40, "{light:?}");
        }
    }

    #[test]
    fn stays_within_the_bounds_and_rounds_them_to_powers_of_two() {
        let plant = Plant {
            fixed_ns: 0.0,
            per_kept_ns: 10_000.0,
        };
        let mut clock = Instant::now();
        let mut packets = 0;
        let mut c = AdaptiveController::new(
            AdaptiveConfig {
                min_interval: 3,
                max_interval: 30,
                ..config(0.10)
            },
            clock,
        );
        assert_eq!(c.interval(), 4);
        let trace = run(&mut c, &plant, 1e6, 10, &mut clock, &mut packets);
        assert!(trace.iter().all(|&n| (4..=32).contains(&n)), "{trace:?}");
        assert_eq!(*trace.last().unwrap(), 32);
        let idle = run(&mut c, &plant, 0.0, 3, &mut clock, &mut packets);
        assert_eq!(*idle.last().unwrap(), 4);
    }

    #[test]
    fn a_receive_drop_raises_one_step() {
        let mut clock = Instant::now();
        let mut c = AdaptiveController::new(config(0.40), clock);
        clock += Duration::from_millis(250);
        c.observe(false, clock);
        assert_eq!(c.decide(1000, 3, None, clock).map(|ch| ch.to), Some(2));
        assert_eq!(c.counters().raises, 1);
    }

    #[test]
    fn busy_time_counts_only_the_time_on_a_cpu() {
        // Busy the whole period by the wall clock, but the thread had its CPU for a
        // quarter of the time it was runnable: a quarter busy, and no reason to sample.
        let mut clock = Instant::now();
        let mut c = AdaptiveController::new(config(0.40), clock);
        let sched = |on_cpu_ns, waiting_ns| {
            Some(SchedTime {
                on_cpu_ns,
                waiting_ns,
            })
        };
        c.observe(false, clock);
        c.restart(clock, 0, 0, sched(1_000, 5_000));
        for _ in 0..2 {
            clock += Duration::from_millis(250);
            assert!(c.observe(true, clock));
            let start = c.sched_at_start.unwrap();
            let end = sched(start.on_cpu_ns + 62_500_000, start.waiting_ns + 187_500_000);
            assert_eq!(c.decide(100_000, 0, end, clock), None);
            assert_eq!(c.counters().busy_permille, 250);
        }
        assert_eq!(c.counters().waiting_us, 375_000);
        assert_eq!(c.interval(), 1);
    }

    #[test]
    fn reads_the_scheduler_account() {
        assert_eq!(
            SchedTime::parse("123456 789 10\n"),
            Some(SchedTime {
                on_cpu_ns: 123_456,
                waiting_ns: 789
            })
        );
        assert_eq!(SchedTime::parse("12"), None);
        assert_eq!(SchedTime::parse("x y z"), None);
        // This kernel keeps it (CONFIG_SCHED_INFO, as Debian's does): the worker relies on it.
        // The account advances at the scheduler's ticks: spin past a few first.
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(50) {
            std::hint::spin_loop();
        }
        let own = SchedTime::of_this_thread().expect("/proc/thread-self/schedstat");
        assert!(own.on_cpu_ns > 0, "{own:?}");
    }
}
