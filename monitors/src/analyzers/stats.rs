//! The shared statistics the analyzers' triggers read: new flows per second, SYNs per
//! second to the busiest destination, and the share of handshakes left half-open. Kept
//! for every packet of their class in fixed-size arrays (no allocation, no per-flow state),
//! over one-second windows of packet time.

use std::hash::Hash;

use flowcache::FlowKey;
use probe::ext::{Interest, PacketView};

use super::{Statistic, is_handshake_ack, is_syn};

/// Windows are one second of packet time: thresholds are per second.
pub const WINDOW_US: u64 = 1_000_000;
/// Flows remembered per window to tell a new flow from a known one (bits).
const FLOW_BITS: usize = 1 << 20;
/// Count-min sketch of SYNs per destination: rows and counters per row.
const SKETCH_ROWS: usize = 2;
const SKETCH_WIDTH: usize = 4096;
/// Handshakes awaiting their ACK (bits).
const HANDSHAKE_BITS: usize = 1 << 20;
/// Fewer SYNs than this in a window leave the half-open share at zero: a handful of
/// unanswered SYNs is no sign of anything.
pub const HALF_OPEN_MIN_SYNS: u64 = 20;

/// A fixed set of bits addressed by hash.
#[derive(Debug)]
struct BitSet(Vec<u64>);

impl BitSet {
    fn new(bits: usize) -> BitSet {
        BitSet(vec![0; bits / 64])
    }

    fn index(&self, hash: u64) -> (usize, u64) {
        let bit = (hash as usize) % (self.0.len() * 64);
        (bit / 64, 1 << (bit % 64))
    }

    /// Sets the bit; whether it was already set.
    fn test_and_set(&mut self, hash: u64) -> bool {
        let (word, mask) = self.index(hash);
        let was = self.0[word] & mask != 0;
        self.0[word] |= mask;
        was
    }

    fn test(&self, hash: u64) -> bool {
        let (word, mask) = self.index(hash);
        self.0[word] & mask != 0
    }

    /// Clears the bit; whether it was set.
    fn test_and_clear(&mut self, hash: u64) -> bool {
        let (word, mask) = self.index(hash);
        let was = self.0[word] & mask != 0;
        self.0[word] &= !mask;
        was
    }

    fn clear(&mut self) {
        self.0.fill(0);
    }
}

/// The statistics of one window, finished or in progress.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct WindowStats {
    pub new_flows: u64,
    /// The most SYNs one destination received (sketch estimate, never an undercount).
    pub max_syns_to_one_destination: u64,
    pub syns: u64,
    pub completed_handshakes: u64,
}

impl WindowStats {
    /// Handshakes started in the window and not completed in it.
    pub fn half_open_share(&self) -> f64 {
        if self.syns < HALF_OPEN_MIN_SYNS {
            return 0.0;
        }
        1.0 - (self.completed_handshakes.min(self.syns) as f64 / self.syns as f64)
    }
}

/// The shared statistics, fed only the classes some trigger reads.
#[derive(Debug)]
pub struct SharedStats {
    hasher: ahash::RandomState,
    track_new_flows: bool,
    track_syns: bool,
    track_handshakes: bool,
    /// Flows seen in this window and in the last: a flow is new when in neither.
    flows_now: BitSet,
    flows_before: BitSet,
    sketch: Vec<u32>,
    handshakes: BitSet,
    window_start_us: u64,
    current: WindowStats,
    last: WindowStats,
}

impl SharedStats {
    /// Keeps only what `statistics` need.
    pub fn new(statistics: &[Statistic]) -> SharedStats {
        let needs = |s: Statistic| statistics.contains(&s);
        let track_new_flows = needs(Statistic::NewFlowsPerSec);
        let track_syns = needs(Statistic::SynsPerSecToOneDestination);
        let track_handshakes = needs(Statistic::HalfOpenShare);
        SharedStats {
            hasher: ahash::RandomState::with_seeds(0x7a70, 0xf10, 0x18, 0x5e),
            track_new_flows,
            track_syns,
            track_handshakes,
            flows_now: BitSet::new(if track_new_flows { FLOW_BITS } else { 64 }),
            flows_before: BitSet::new(if track_new_flows { FLOW_BITS } else { 64 }),
            sketch: vec![
                0;
                if track_syns {
                    SKETCH_ROWS * SKETCH_WIDTH
                } else {
                    0
                }
            ],
            handshakes: BitSet::new(if track_handshakes { HANDSHAKE_BITS } else { 64 }),
            window_start_us: 0,
            current: WindowStats::default(),
            last: WindowStats::default(),
        }
    }

    /// The packet classes the kept statistics read.
    pub fn interest(&self) -> Interest {
        let mut interest = Interest::NONE;
        if self.track_new_flows {
            interest = interest.union(Interest::IP);
        }
        if self.track_syns {
            interest = interest.union(Interest::TCP_CONTROL);
        }
        if self.track_handshakes {
            interest = interest.union(Interest::TCP);
        }
        interest
    }

    fn hash(&self, value: impl Hash) -> u64 {
        self.hasher.hash_one(value)
    }

    #[inline]
    pub fn observe(&mut self, packet: &PacketView<'_>) {
        self.advance(packet.timestamp_us);
        let key = packet.key;
        if self.track_new_flows && packet.classes.intersects(Interest::IP) {
            let hash = self.hash(key);
            if !self.flows_now.test_and_set(hash) && !self.flows_before.test(hash) {
                self.current.new_flows += 1;
            }
        }
        if key.protocol != 6 {
            return;
        }
        let flags = packet.meta.tcp_flags;
        if is_syn(flags) {
            if self.track_syns {
                self.count_syn(&key.dst_addr);
            }
            if self.track_handshakes {
                self.current.syns += 1;
                let hash = self.hash(handshake(key));
                self.handshakes.test_and_set(hash);
            }
        } else if self.track_handshakes && is_handshake_ack(flags) {
            let hash = self.hash(handshake(key));
            if self.handshakes.test_and_clear(hash) {
                self.current.completed_handshakes += 1;
            }
        }
    }

    fn count_syn(&mut self, dst: &[u8; 16]) {
        let mut estimate = u32::MAX;
        for row in 0..SKETCH_ROWS {
            let slot = row * SKETCH_WIDTH + (self.hash((row, dst)) as usize) % SKETCH_WIDTH;
            let counter = &mut self.sketch[slot];
            *counter = counter.saturating_add(1);
            estimate = estimate.min(*counter);
        }
        let estimate = u64::from(estimate);
        if estimate > self.current.max_syns_to_one_destination {
            self.current.max_syns_to_one_destination = estimate;
        }
    }

    /// Moves the window to `now_us` (packet time), closing finished windows.
    pub fn advance(&mut self, now_us: u64) {
        if self.window_start_us == 0 {
            self.window_start_us = now_us - now_us % WINDOW_US;
            return;
        }
        if now_us < self.window_start_us + WINDOW_US {
            return;
        }
        let gap = now_us - self.window_start_us >= 2 * WINDOW_US;
        self.last = if gap {
            WindowStats::default()
        } else {
            self.current
        };
        self.current = WindowStats::default();
        std::mem::swap(&mut self.flows_now, &mut self.flows_before);
        self.flows_now.clear();
        if gap {
            self.flows_before.clear();
        }
        self.sketch.fill(0);
        // Pending handshakes start afresh each second (a handshake takes a round trip, far
        // less), so a flood's SYNs cannot fill the set and pass other flows' ACKs off as
        // completions.
        self.handshakes.clear();
        self.window_start_us = now_us - now_us % WINDOW_US;
    }

    /// The statistic's value now: a rate is the larger of the last finished window and
    /// the window in progress (counts only grow within a window, so a count past the
    /// threshold already proves the rate); the share is the last finished window's.
    pub fn value(&self, statistic: Statistic) -> f64 {
        match statistic {
            Statistic::NewFlowsPerSec => self.last.new_flows.max(self.current.new_flows) as f64,
            Statistic::SynsPerSecToOneDestination => {
                self.last
                    .max_syns_to_one_destination
                    .max(self.current.max_syns_to_one_destination) as f64
            }
            Statistic::HalfOpenShare => self.last.half_open_share(),
        }
    }

    /// The last finished window.
    pub fn last_window(&self) -> WindowStats {
        self.last
    }
}

/// A handshake's identity, the same from the SYN and from the client's ACK.
fn handshake(key: &FlowKey) -> ([u8; 16], [u8; 16], u16, u16) {
    (key.src_addr, key.dst_addr, key.src_port, key.dst_port)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{View, tcp, udp};
    use super::*;
    use probe::synth::tcp_flags::{ACK, SYN};

    #[test]
    fn new_flows_count_once_across_adjacent_windows() {
        let mut stats = SharedStats::new(&[Statistic::NewFlowsPerSec]);
        let t0 = 1_700_000_000_000_000;
        for i in 0..100u16 {
            stats.observe(&View::new(udp([10, 0, 0, 1], i, [10, 0, 0, 2], 53), t0 + 10).view());
        }
        assert_eq!(stats.value(Statistic::NewFlowsPerSec), 100.0);
        // The same flows in the next window are not new; ten more are.
        for i in 0..110u16 {
            stats.observe(
                &View::new(udp([10, 0, 0, 1], i, [10, 0, 0, 2], 53), t0 + 1_200_000).view(),
            );
        }
        assert_eq!(stats.last_window().new_flows, 100);
        assert_eq!(stats.current.new_flows, 10);
    }

    #[test]
    fn syns_to_one_destination_and_half_open_share() {
        let mut stats = SharedStats::new(&[
            Statistic::SynsPerSecToOneDestination,
            Statistic::HalfOpenShare,
        ]);
        let t0 = 1_700_000_000_000_000;
        // 300 SYNs to one victim from many sources, 40 handshakes elsewhere completed.
        for i in 0..300u32 {
            let src = [172, 16, (i >> 8) as u8, i as u8];
            stats.observe(
                &View::new(tcp(src, 1000, [10, 0, 0, 9], 80, SYN), t0 + u64::from(i)).view(),
            );
        }
        for i in 0..40u16 {
            stats.observe(
                &View::new(
                    tcp([10, 1, 0, 1], 2000 + i, [10, 0, 0, 7], 443, SYN),
                    t0 + 500,
                )
                .view(),
            );
            stats.observe(
                &View::new(
                    tcp([10, 1, 0, 1], 2000 + i, [10, 0, 0, 7], 443, ACK),
                    t0 + 900,
                )
                .view(),
            );
        }
        assert!(stats.value(Statistic::SynsPerSecToOneDestination) >= 300.0);
        assert!(stats.value(Statistic::SynsPerSecToOneDestination) < 340.0);
        stats.advance(t0 + WINDOW_US);
        let share = stats.value(Statistic::HalfOpenShare);
        assert!((share - 300.0 / 340.0).abs() < 0.01, "share {share}");
        // A quiet second later, nothing is left of it.
        stats.advance(t0 + 3 * WINDOW_US);
        assert_eq!(stats.value(Statistic::HalfOpenShare), 0.0);
        assert_eq!(stats.value(Statistic::SynsPerSecToOneDestination), 0.0);
    }
}
