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
/// New flows are counted on a hash-chosen 1/16 of the flows and scaled up: a packet of
/// the other 15/16 costs a hash and a branch, and the slots fit in 16 KB, where a table
/// of every flow (256 KB) missed the cache on every packet and cost a quarter of the
/// worker's throughput (BENCHMARKS.md). A threshold of 10 000 new flows a second is then
/// judged on about 625 sampled flows (a few percent of error).
const FLOW_SAMPLE_BITS: u32 = 4;
/// Slots (by hash) of the sampled flows, remembered to tell a new flow from a known one.
const FLOW_SLOTS: usize = 1 << 16;
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

/// Which flows were seen this window and the last: two bits per slot in one word, so a
/// packet costs one memory access (the slot's word), and a window's turn one pass.
#[derive(Debug)]
struct FlowsSeen(Vec<u64>);

impl FlowsSeen {
    const NOW: u64 = 0x5555_5555_5555_5555;

    fn new(slots: usize) -> FlowsSeen {
        FlowsSeen(vec![0; slots.div_ceil(32)])
    }

    /// Marks the flow seen now; whether it was seen in neither window.
    #[inline]
    fn first_sighting(&mut self, hash: u64) -> bool {
        let slot = (hash as usize) % (self.0.len() * 32);
        let word = &mut self.0[slot / 32];
        let shift = (slot % 32) * 2;
        let new = (*word >> shift) & 3 == 0;
        *word |= 1 << shift;
        new
    }

    /// This window becomes the last; with `gap` (a window without packets between) the
    /// last is empty too.
    fn turn(&mut self, gap: bool) {
        for word in &mut self.0 {
            *word = if gap { 0 } else { (*word & Self::NOW) << 1 };
        }
    }
}

/// A cheap hash of the flow's addresses, ports and protocol (the new-flow test runs on
/// every packet; a collision only undercounts new flows).
#[inline]
fn flow_hash(key: &FlowKey) -> u64 {
    let word = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
    let mut h = word(&key.src_addr[..8])
        ^ word(&key.src_addr[8..]).rotate_left(17)
        ^ word(&key.dst_addr[..8]).rotate_left(31)
        ^ word(&key.dst_addr[8..]).rotate_left(47)
        ^ (u64::from(key.src_port) << 16 | u64::from(key.dst_port) << 40 | u64::from(key.protocol));
    h = (h ^ (h >> 32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^ (h >> 29)
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
    /// A flow is new when seen in neither this window nor the last.
    flows: FlowsSeen,
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
            flows: FlowsSeen::new(if track_new_flows { FLOW_SLOTS } else { 32 }),
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
            interest = interest.union(Interest::TCP_SYN);
        }
        if self.track_handshakes {
            interest = interest.union(Interest::TCP_HANDSHAKE);
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
            let hash = flow_hash(key);
            if hash >> (64 - FLOW_SAMPLE_BITS) == 0 && self.flows.first_sighting(hash) {
                self.current.new_flows += 1 << FLOW_SAMPLE_BITS;
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
        self.flows.turn(gap);
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
        let flow = |i: u32, t| {
            let src = [10, 0, (i >> 8) as u8, i as u8];
            View::new(udp(src, 1000, [10, 0, 0, 2], 53), t)
        };
        for i in 0..20_000 {
            stats.observe(&flow(i, t0 + 10).view());
        }
        let estimate = stats.value(Statistic::NewFlowsPerSec);
        assert!((17_000.0..=23_000.0).contains(&estimate), "{estimate}");
        // The same flows in the next window are not new; 2000 more are (sampled too).
        for i in 0..22_000 {
            stats.observe(&flow(i, t0 + 1_200_000).view());
        }
        assert_eq!(stats.last_window().new_flows as f64, estimate);
        let more = stats.current.new_flows;
        assert!((500..=4000).contains(&more), "{more}");
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
