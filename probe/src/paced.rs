//! A capture replayed at its own pace, as a live port receives it (`tapflow replay
//! --realtime`): each packet arrives when the wall clock since the first packet reaches
//! its capture time since the first packet, into a receive ring of fixed size, and the
//! worker takes bursts from the ring. A packet that arrives while the ring is full is
//! dropped and counted as `rx_missed`, as a NIC counts imissed. Packets keep their capture
//! timestamps, so records stay comparable to the capture.
//!
//! The ring holds copies (the inner source lends a burst only for one call, and its
//! packets arrive over time). That copy is this source's receive cost, the worker's like a
//! NIC driver's; and as a driver takes its buffers from a mempool whose per-core cache
//! hands back the most recently freed first, the copies go into frames from a pool kept
//! last-in first-out. The ring itself is a ring of frame indices: however large it is, a
//! worker that keeps up touches the same few dozen frames over and over, and one cache
//! line of the ring per sixteen packets. (A ring of the frames themselves cycled through
//! all of them: at 131,072 frames two cold lines a packet, most of the receive cost.)

use std::time::Instant;

use crate::source::{BurstStatus, MAX_BURST, Packet, PacketSource, SourceError, SourceStats};

/// Frames the receive ring holds by default (a typical NIC rx ring).
pub const DEFAULT_RING_FRAMES: usize = 4096;

#[derive(Clone, Debug, Default)]
struct Frame {
    data: Vec<u8>,
    wire_len: u32,
    timestamp_us: u64,
    port: u16,
}

impl Frame {
    fn fill(&mut self, packet: &Packet<'_>) {
        self.data.clear();
        self.data.extend_from_slice(packet.data);
        self.wire_len = packet.wire_len;
        self.timestamp_us = packet.timestamp_us;
        self.port = packet.port;
    }
}

/// `inner` replayed at its capture pace through a ring of `ring_frames` (see the module).
pub struct PacedSource<S> {
    inner: S,
    /// Every frame: the ring's, the staged burst's and the one being delivered.
    frames: Vec<Frame>,
    /// Indices of the frames in none of those, the most recently freed last.
    free: Vec<u32>,
    /// The receive ring: `len` frame indices from `head`.
    ring: Vec<u32>,
    head: usize,
    len: usize,
    /// The inner source's last burst: packets read but not yet arrived, from `staged_at`.
    staged: [u32; MAX_BURST],
    staged_at: usize,
    staged_len: usize,
    /// The wall clock and capture time of the first packet.
    origin: Option<(Instant, u64)>,
    inner_ended: bool,
    stats: SourceStats,
}

impl<S> std::fmt::Debug for PacedSource<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacedSource")
            .field("ring_frames", &self.ring.len())
            .field("queued", &self.len)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<S: PacketSource> PacedSource<S> {
    pub fn new(inner: S, ring_frames: usize) -> PacedSource<S> {
        let ring_frames = ring_frames.max(MAX_BURST);
        // The ring full, a burst staged, and a burst out to the worker.
        let frames = ring_frames + 2 * MAX_BURST;
        PacedSource {
            inner,
            frames: vec![Frame::default(); frames],
            free: (0..frames as u32).rev().collect(),
            ring: vec![0; ring_frames],
            head: 0,
            len: 0,
            staged: [0; MAX_BURST],
            staged_at: 0,
            staged_len: 0,
            origin: None,
            inner_ended: false,
            stats: SourceStats::default(),
        }
    }

    /// Moves every staged packet whose time has come into the ring (or drops it, the ring
    /// being full), reading further bursts from the inner source as the staged ones run
    /// out. Stops at the first packet still in the future.
    fn arrive(&mut self, now: Instant) -> Result<(), SourceError> {
        loop {
            while self.staged_at < self.staged_len {
                let frame = self.staged[self.staged_at];
                let at_us = self.frames[frame as usize].timestamp_us;
                let (start, first_us) = *self.origin.get_or_insert((now, at_us));
                let due_us = at_us.saturating_sub(first_us);
                if due_us > now.saturating_duration_since(start).as_micros() as u64 {
                    return Ok(());
                }
                if self.len == self.ring.len() {
                    self.stats.rx_missed += 1;
                    self.free.push(frame);
                } else {
                    let mut tail = self.head + self.len;
                    if tail >= self.ring.len() {
                        tail -= self.ring.len();
                    }
                    self.ring[tail] = frame;
                    self.len += 1;
                }
                self.staged_at += 1;
            }
            if self.inner_ended {
                return Ok(());
            }
            let (frames, free, staged) = (&mut self.frames, &mut self.free, &mut self.staged);
            let mut count = 0;
            let status = self.inner.poll_burst(&mut |burst: &[Packet<'_>]| {
                for (index, packet) in staged.iter_mut().zip(burst) {
                    // Never empty: the pool holds a staged burst beyond a full ring and
                    // the burst out to the worker.
                    *index = free.pop().expect("a free frame");
                    frames[*index as usize].fill(packet);
                }
                count = burst.len().min(MAX_BURST);
            })?;
            self.staged_at = 0;
            self.staged_len = count;
            match status {
                BurstStatus::Ended => self.inner_ended = true,
                BurstStatus::Delivered(0) => return Ok(()),
                BurstStatus::Delivered(_) => {}
            }
        }
    }
}

impl<S: PacketSource> PacketSource for PacedSource<S> {
    fn poll_burst(
        &mut self,
        sink: &mut dyn FnMut(&[Packet<'_>]),
    ) -> Result<BurstStatus, SourceError> {
        self.arrive(Instant::now())?;
        if self.len == 0 {
            let drained = self.inner_ended && self.staged_at >= self.staged_len;
            return Ok(if drained {
                BurstStatus::Ended
            } else {
                BurstStatus::Delivered(0)
            });
        }
        // Up to a burst, not across the ring's end.
        let n = self.len.min(MAX_BURST).min(self.ring.len() - self.head);
        let delivered = &self.ring[self.head..self.head + n];
        let mut packets = [Packet::default(); MAX_BURST];
        for (packet, &index) in packets.iter_mut().zip(delivered) {
            let frame = &self.frames[index as usize];
            *packet = Packet {
                data: &frame.data,
                wire_len: frame.wire_len,
                timestamp_us: frame.timestamp_us,
                port: frame.port,
            };
            self.stats.rx_bytes += u64::from(frame.wire_len);
        }
        sink(&packets[..n]);
        // Freed last-in first-out: the next burst is copied into these, still in cache.
        self.free.extend(delivered.iter().rev());
        self.stats.rx_packets += n as u64;
        self.head += n;
        if self.head == self.ring.len() {
            self.head = 0;
        }
        self.len -= n;
        Ok(BurstStatus::Delivered(n))
    }

    fn stats(&self) -> SourceStats {
        let inner = self.inner.stats();
        SourceStats {
            rx_missed: self.stats.rx_missed + inner.rx_missed,
            rx_errors: inner.rx_errors,
            rx_nombuf: inner.rx_nombuf,
            rx_xdp_ring_full: inner.rx_xdp_ring_full,
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `count` one-byte frames, `gap_us` apart, in bursts of `burst`.
    struct Timed {
        next: u64,
        count: u64,
        gap_us: u64,
        burst: usize,
        frame: [u8; 1],
    }

    impl PacketSource for Timed {
        fn poll_burst(
            &mut self,
            sink: &mut dyn FnMut(&[Packet<'_>]),
        ) -> Result<BurstStatus, SourceError> {
            if self.next == self.count {
                return Ok(BurstStatus::Ended);
            }
            let n = (self.count - self.next).min(self.burst as u64) as usize;
            let packets: Vec<Packet<'_>> = (0..n as u64)
                .map(|i| Packet {
                    data: &self.frame,
                    wire_len: 1,
                    timestamp_us: 1_000_000 + (self.next + i) * self.gap_us,
                    port: 0,
                })
                .collect();
            sink(&packets);
            self.next += n as u64;
            Ok(BurstStatus::Delivered(n))
        }

        fn stats(&self) -> SourceStats {
            SourceStats::default()
        }
    }

    fn drain(source: &mut PacedSource<Timed>) -> (u64, std::time::Duration) {
        let started = Instant::now();
        let mut got = 0;
        loop {
            match source.poll_burst(&mut |b| got += b.len() as u64).unwrap() {
                BurstStatus::Ended => return (got, started.elapsed()),
                BurstStatus::Delivered(_) => {}
            }
        }
    }

    #[test]
    fn delivers_every_packet_no_sooner_than_its_time() {
        // 200 packets 1 ms apart: about 0.2 s, all delivered, none missed.
        let inner = Timed {
            next: 0,
            count: 200,
            gap_us: 1_000,
            burst: 64,
            frame: [0],
        };
        let mut source = PacedSource::new(inner, 4096);
        let (got, took) = drain(&mut source);
        assert_eq!(got, 200);
        assert!(took.as_millis() >= 199, "{took:?}");
        assert_eq!(source.stats().rx_missed, 0);
        assert_eq!(source.stats().rx_packets, 200);
    }

    #[test]
    fn a_full_ring_drops_and_counts_what_arrives() {
        // All 1000 packets due at once into a 64-frame ring that nobody reads while they
        // arrive: 64 kept, 936 missed.
        let inner = Timed {
            next: 0,
            count: 1000,
            gap_us: 0,
            burst: 64,
            frame: [0],
        };
        let mut source = PacedSource::new(inner, 64);
        source.arrive(Instant::now()).unwrap();
        let (got, _) = drain(&mut source);
        assert_eq!((got, source.stats().rx_missed), (64, 936));
        // Every frame back in the pool: none leaks with drops.
        assert_eq!(source.free.len(), source.frames.len());
    }
}
