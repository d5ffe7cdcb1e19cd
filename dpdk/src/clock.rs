//! Wall time from the CPU's time-stamp counter.

use std::time::{SystemTime, UNIX_EPOCH};

use dpdk_sys as sys;

use crate::Eal;

/// The CPU's time-stamp counter mapped to wall time: one `rdtsc` per reading, no syscall.
/// Re-anchor now and then (`reanchor`) to follow wall-clock adjustments.
#[derive(Clone, Copy, Debug)]
pub struct TscClock {
    hz: u64,
    anchor_tsc: u64,
    anchor_us: u64,
}

impl TscClock {
    /// Anchors the TSC to the wall clock now. The EAL measured the TSC frequency at init.
    pub fn new(_eal: &Eal) -> Self {
        // SAFETY: the EAL is initialised (we hold it), which is all rte_get_tsc_hz needs.
        let hz = unsafe { sys::rte_get_tsc_hz() }.max(1);
        let mut clock = TscClock {
            hz,
            anchor_tsc: 0,
            anchor_us: 0,
        };
        clock.reanchor();
        clock
    }

    /// The raw counter.
    #[inline]
    pub fn cycles() -> u64 {
        // SAFETY: rte_rdtsc executes rdtsc; no preconditions.
        unsafe { sys::rte_rdtsc() }
    }

    /// Counter ticks per second.
    pub fn hz(&self) -> u64 {
        self.hz
    }

    /// Re-reads the wall clock and the counter together.
    pub fn reanchor(&mut self) {
        self.anchor_tsc = Self::cycles();
        self.anchor_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
    }

    /// Counter ticks since the anchor.
    #[inline]
    pub fn elapsed_cycles(&self) -> u64 {
        Self::cycles().wrapping_sub(self.anchor_tsc)
    }

    /// Wall time now, microseconds since the Unix epoch.
    #[inline]
    pub fn now_us(&self) -> u64 {
        let elapsed = u128::from(self.elapsed_cycles()) * 1_000_000 / u128::from(self.hz);
        self.anchor_us + elapsed as u64
    }
}
