//! Traces with known rate steps, for testing the millisecond monitor against a truth it
//! cannot see: flows sending evenly spaced frames at fixed bit rates between a start and an
//! end time, optionally thinned at random before the probe (an oversubscribed mirror).
//! Deterministic from a seed. The truth ([`StepTrace::window_bits`]) is computed from the
//! generated packets, every one of them, kept or not.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::SocketAddrV4;
use std::path::Path;

use probe::pcap::PcapWriter;
use probe::synth::{FrameOptions, eth_ipv4_tcp, eth_ipv4_udp, tcp_flags};

/// Ethernet + IPv4 + TCP headers of a synthesized frame (no VLAN, no options).
const TCP_FRAME_HEADERS: usize = 14 + 20 + 20;
const UDP_FRAME_HEADERS: usize = 14 + 20 + 8;

/// One flow of a trace: frames of `frame_len` bytes at `rate_bps` (frame bits) from
/// `start_us` to `end_us`, relative to the trace's start.
#[derive(Clone, Debug, PartialEq)]
pub struct StepFlow {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub tcp: bool,
    pub frame_len: usize,
    pub rate_bps: u64,
    pub start_us: u64,
    pub end_us: u64,
}

/// A generated packet: which flow, when, and whether it survives the drop before the probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TracePacket {
    pub time_us: u64,
    pub flow: usize,
    /// The TCP sequence number of its first payload byte (0 for UDP).
    pub seq: u32,
    pub kept: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StepTrace {
    /// Absolute time of the trace's start, µs since the epoch.
    pub start_us: u64,
    pub flows: Vec<StepFlow>,
    /// Keep each packet with chance 1 in this (1 keeps all).
    pub keep_one_in: u32,
    pub seed: u64,
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn udp_flow(
    i: u32,
    tag: u8,
    frame_len: usize,
    rate_bps: u64,
    start_us: u64,
    end_us: u64,
) -> StepFlow {
    StepFlow {
        src: SocketAddrV4::new([10, tag, (i >> 8) as u8, i as u8].into(), 40_000 + i as u16),
        dst: SocketAddrV4::new([192, 0, 2, tag].into(), 5_000),
        tcp: false,
        frame_len,
        rate_bps,
        start_us,
        end_us,
    }
}

impl StepTrace {
    /// The scenario on a 1 Gbit/s port: a steady background of `background_flows`
    /// UDP flows sharing `background_bps`; from `t0_us` one TCP flow at `heavy_bps`; from
    /// `t1_us` a surge of `surge_flows` UDP flows sharing `surge_bps`; `duration_us` long.
    /// A step at `u64::MAX` never happens.
    #[allow(clippy::too_many_arguments)]
    pub fn steps(
        background_flows: u32,
        background_bps: u64,
        t0_us: u64,
        heavy_bps: u64,
        t1_us: u64,
        surge_flows: u32,
        surge_bps: u64,
        duration_us: u64,
    ) -> StepTrace {
        let mut flows: Vec<StepFlow> = (0..background_flows)
            .map(|i| {
                udp_flow(
                    i,
                    1,
                    1_000,
                    background_bps / u64::from(background_flows),
                    // Staggered by a little so the flows do not send in lockstep.
                    u64::from(i) * 7,
                    duration_us,
                )
            })
            .collect();
        if t0_us < duration_us {
            flows.push(StepFlow {
                src: SocketAddrV4::new([10, 9, 9, 9].into(), 33_333),
                dst: SocketAddrV4::new([192, 0, 2, 80].into(), 80),
                tcp: true,
                frame_len: 1_514,
                rate_bps: heavy_bps,
                start_us: t0_us,
                end_us: duration_us,
            });
        }
        if t1_us < duration_us {
            flows.extend((0..surge_flows).map(|i| {
                udp_flow(
                    i,
                    2,
                    1_200,
                    surge_bps / u64::from(surge_flows),
                    t1_us + u64::from(i) * 3,
                    duration_us,
                )
            }));
        }
        StepTrace {
            start_us: 1_700_000_000_000_000,
            flows,
            keep_one_in: 1,
            seed: 17,
        }
    }

    /// Every generated packet in time order (ties by flow), with whether it is kept.
    pub fn packets(&self) -> Vec<TracePacket> {
        let mut rng = self.seed;
        let mut next: BinaryHeap<Reverse<(u64, usize, u64)>> = BinaryHeap::new();
        for (i, flow) in self.flows.iter().enumerate() {
            if flow.rate_bps > 0 && flow.start_us < flow.end_us {
                next.push(Reverse((flow.start_us, i, 0)));
            }
        }
        let mut out = Vec::new();
        while let Some(Reverse((at_us, i, n))) = next.pop() {
            let flow = &self.flows[i];
            let payload = (flow.frame_len - TCP_FRAME_HEADERS) as u64;
            let kept = self.keep_one_in <= 1
                || splitmix(&mut rng).is_multiple_of(u64::from(self.keep_one_in));
            out.push(TracePacket {
                time_us: self.start_us + at_us,
                flow: i,
                seq: if flow.tcp {
                    (1 + n * payload) as u32
                } else {
                    0
                },
                kept,
            });
            // Evenly spaced at the flow's rate, from its start (no drift from rounding).
            let bits = (flow.frame_len * 8) as u64;
            let following = flow.start_us + (n + 1) * bits * 1_000_000 / flow.rate_bps;
            if following < flow.end_us {
                next.push(Reverse((following, i, n + 1)));
            }
        }
        out
    }

    /// The frame of a packet, into `out`.
    pub fn frame(&self, packet: &TracePacket, out: &mut Vec<u8>) {
        let flow = &self.flows[packet.flow];
        if flow.tcp {
            let opts = FrameOptions {
                payload_len: flow.frame_len - TCP_FRAME_HEADERS,
                ..FrameOptions::default()
            };
            eth_ipv4_tcp(
                out,
                flow.src,
                flow.dst,
                tcp_flags::ACK | tcp_flags::PSH,
                &opts,
            );
            set_tcp_sequence(out, flow, packet.seq);
        } else {
            let opts = FrameOptions {
                payload_len: flow.frame_len - UDP_FRAME_HEADERS,
                ..FrameOptions::default()
            };
            eth_ipv4_udp(out, flow.src, flow.dst, &opts);
        }
    }

    /// Writes the kept packets as a classic pcap; returns how many.
    pub fn write_pcap(&self, path: &Path) -> io::Result<u64> {
        let file = io::BufWriter::new(std::fs::File::create(path)?);
        let mut writer = PcapWriter::new(file)?;
        let mut frame = Vec::with_capacity(1_600);
        let mut written = 0;
        for packet in self.packets().iter().filter(|p| p.kept) {
            self.frame(packet, &mut frame);
            writer.write_packet(packet.time_us, &frame)?;
            written += 1;
        }
        writer.into_inner()?;
        Ok(written)
    }

    /// Frame bits of every generated packet (kept or not) of the flows `select` picks,
    /// stamped in `[end_us - window_us, end_us)`: the truth a window ending at `end_us`
    /// must show.
    pub fn window_bits(
        &self,
        packets: &[TracePacket],
        end_us: u64,
        window_us: u64,
        select: impl Fn(usize) -> bool,
    ) -> u64 {
        let from = end_us.saturating_sub(window_us);
        let first = packets.partition_point(|p| p.time_us < from);
        packets[first..]
            .iter()
            .take_while(|p| p.time_us < end_us)
            .filter(|p| select(p.flow))
            .map(|p| (self.flows[p.flow].frame_len * 8) as u64)
            .sum()
    }
}

/// Puts `seq` into a synthesized IPv4 TCP frame and recomputes the TCP checksum (the
/// payload is zeros, so the header and the pseudo-header are the whole sum).
fn set_tcp_sequence(frame: &mut [u8], flow: &StepFlow, seq: u32) {
    let tcp = 14 + 20;
    frame[tcp + 4..tcp + 8].copy_from_slice(&seq.to_be_bytes());
    frame[tcp + 16..tcp + 18].copy_from_slice(&[0, 0]);
    let tcp_len = (flow.frame_len - 14 - 20) as u32;
    let mut sum = 6 + tcp_len;
    for pair in flow
        .src
        .ip()
        .octets()
        .chunks(2)
        .chain(flow.dst.ip().octets().chunks(2))
        .chain(frame[tcp..tcp + 20].chunks(2))
    {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    frame[tcp + 16..tcp + 18].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_the_sequence_with_a_valid_checksum() {
        let trace = StepTrace::steps(2, 10_000_000, 0, 100_000_000, u64::MAX, 1, 1, 2_000);
        let packets = trace.packets();
        let tcp: Vec<_> = packets.iter().filter(|p| trace.flows[p.flow].tcp).collect();
        assert!(tcp.len() > 10);
        let mut frame = Vec::new();
        for (n, p) in tcp.iter().enumerate() {
            trace.frame(p, &mut frame);
            let parsed = etherparse::SlicedPacket::from_ethernet(&frame).unwrap();
            let Some(etherparse::TransportSlice::Tcp(header)) = parsed.transport else {
                panic!("not TCP");
            };
            assert_eq!(header.sequence_number(), 1 + n as u32 * 1_460);
            let Some(etherparse::NetSlice::Ipv4(ip)) = parsed.net else {
                panic!("not IPv4");
            };
            let expected = header
                .to_header()
                .calc_checksum_ipv4(&ip.header().to_header(), header.payload())
                .unwrap();
            assert_eq!(header.checksum(), expected);
        }
        // 100 Mbit/s of 1514-byte frames: one every 121.12 µs.
        let spacing = tcp[1].time_us - tcp[0].time_us;
        assert!((121..=122).contains(&spacing), "{spacing}");
    }
}
