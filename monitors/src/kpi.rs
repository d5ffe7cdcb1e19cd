//! Transport KPIs and biflows (issue 16, after Flowcorder): per TCP connection the
//! handshake RTT split at the tap, application latency, RTT samples, retransmissions,
//! reordering, zero windows, SYN retransmissions and the connection's outcome; and both
//! directions of a conversation in one record (RFC 5103).
//!
//! State lives here, keyed by a direction-independent [`ConnKey`], never in the cache's
//! entries. The cache keeps accounting each direction as its own flow; the records meet
//! here when they leave it:
//!
//! - Each conversation counts, per endpoint, what of it the cache holds (`held`): a TCP
//!   connection with KPIs, whose every packet is looked at here anyway, the packets
//!   accounted and not yet exported (a record leaving subtracts its packets); any other
//!   conversation (UDP, ICMP, TCP without KPIs) the records the cache started and still
//!   holds, from the cache's own word ([`Extension::on_flow_starts`]; a record leaving
//!   subtracts one). So a biflow of the latter costs a lookup here per record, not per
//!   packet: its packets are never shown to this extension.
//! - With biflows on, a record is folded (kept here, `RecordFate::Folded`) while the
//!   conversation still has packets in the cache, which will leave later and carry it;
//!   otherwise (the last piece, or an active timeout, which must not wait) it becomes the
//!   biflow record: the initiator's key and counters forward, the responder's in
//!   [`ReverseCounters`], the KPIs in [`TcpKpis`]. So every accounted packet is exported
//!   exactly once, forward or reverse.
//! - The initiator is the SYN sender (the receiver of a SYN-ACK when the SYN was missed),
//!   otherwise the sender of the first packet seen. Without TCP KPIs both are read from
//!   the first record the cache started for the conversation, whose first packet is the
//!   conversation's first; only with them does a SYN that comes after the other side's
//!   packets swap the roles.
//!
//! Speed: for TCP with KPIs the table is looked up once per packet, at random, like the
//! flow cache. So it is the cache's kind of table (`conn_table`: open addressing over
//! cache-line-aligned slots, capped, counted when full) rather than a `BoundedTable`'s hash
//! map, and packets (and record starts) are taken in two steps: `on_packet` reads the TCP
//! header and prefetches the conversation's slot; once per burst (`on_clock`, and before
//! any record) they are accounted in order. A slot is two cache lines, prefetched
//! together: the key and the counts per endpoint, then the connection's per-packet TCP
//! state (`TcpHot`: both directions' sequence, timed segment, flags and retransmissions
//! in one line). The rest of a connection's state (`TcpCold`: holes, timestamps
//! awaiting their echo, RTT statistics, the other counters, handshake times) lives in a
//! vector beside the table, by the slot's slab index, and is read only by a segment that
//! changes it: a handshake, RST or FIN, one with timestamps (those are prefetched before
//! the batch is accounted), a gap or its fill, an RTT sample, a zero window. So a segment
//! of an established connection without timestamps reads the slot's two lines and nothing
//! else; the conversation's record state (`Conn`) only records read.
//!
//! Hostile input: every sequence comparison is modular (RFC 1982 style), a jump of more
//! than 2^30 resynchronises instead of counting, options are read within their declared
//! and captured bounds, and per-connection buffers are fixed arrays. One connection's
//! packets only ever touch its own entry.

use flowcache::counters::{CounterSet, Spec};
use flowcache::{
    EndReason, FlowKey, FlowRecord, Observation, RecordExtras, ReverseCounters, TcpDirectionKpis,
    TcpKpis, TcpOutcome, prefetch_lines,
};
use probe::ext::{ExtCounter, ExtOutput, Extension, Interest, PacketView, RecordFate};

use crate::conn_table::ConnTable;

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// How often finished connections are purged, in packet time.
const PURGE_PERIOD_US: u64 = 1_000_000;
/// A sequence jump larger than this is a desynchronisation (or a crafted packet), not a
/// gap: the direction restarts from it instead of counting a retransmission or a hole.
const MAX_SEQ_JUMP: u32 = 1 << 30;
/// Gaps in a direction's sequence space remembered at once; older ones are forgotten
/// (their late fill then counts as a retransmission).
const MAX_HOLES: usize = 4;
/// Timestamp values awaiting their echo, per direction.
const TS_SLOTS: usize = 8;
/// Packets seen before they are accounted: a burst's worth (`probe::MAX_BURST`).
const SEEN_BATCH: usize = 64;

/// What the KPI extension does: `[kpi]` in the configuration file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KpiConfig {
    /// Both directions of a conversation in one record (RFC 5103).
    pub biflow: bool,
    /// Per-connection TCP KPIs.
    pub tcp: bool,
    /// Connections tracked at once per worker. To lose nothing it should be at least the
    /// cache shard's capacity: a connection's state lives while either direction is in
    /// the cache.
    pub capacity: usize,
    /// How long a finished connection's state is kept for stray packets (the last ACK
    /// after both FINs, a retransmitted FIN), microseconds.
    pub linger_us: u64,
}

impl Default for KpiConfig {
    fn default() -> Self {
        KpiConfig {
            biflow: true,
            tcp: true,
            capacity: 1 << 20,
            linger_us: 30_000_000,
        }
    }
}

/// A conversation's identity, the same for both directions: the two endpoints in order,
/// protocol, VLAN and IP version. ToS and input port are left out: on a tap the two
/// directions often arrive on different ports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnKey {
    lo_addr: [u8; 16],
    hi_addr: [u8; 16],
    lo_port: u16,
    hi_port: u16,
    vlan: u16,
    protocol: u8,
    ip_version: u8,
}

/// Five words into the table's word hash (`conn_table::WordHash`), where the derived
/// impl would write eleven (each field, and the arrays' lengths).
impl std::hash::Hash for ConnKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let halves = |addr: [u8; 16]| {
            let a = u128::from_le_bytes(addr);
            (a as u64, (a >> 64) as u64)
        };
        let (lo_a, lo_b) = halves(self.lo_addr);
        let (hi_a, hi_b) = halves(self.hi_addr);
        state.write_u64(lo_a);
        state.write_u64(lo_b);
        state.write_u64(hi_a);
        state.write_u64(hi_b);
        state.write_u64(
            u64::from(self.lo_port)
                | u64::from(self.hi_port) << 16
                | u64::from(self.vlan) << 32
                | u64::from(self.protocol) << 48
                | u64::from(self.ip_version) << 56,
        );
    }
}

impl ConnKey {
    /// The key and whether `key`'s source is the lower endpoint.
    pub fn of(key: &FlowKey) -> (ConnKey, bool) {
        // Big-endian integers order like the bytes: two wide compares, not a byte loop.
        let src = (u128::from_be_bytes(key.src_addr), key.src_port);
        let dst = (u128::from_be_bytes(key.dst_addr), key.dst_port);
        let src_is_lo = src <= dst;
        let (src, dst) = ((key.src_addr, key.src_port), (key.dst_addr, key.dst_port));
        let (lo, hi) = if src_is_lo { (src, dst) } else { (dst, src) };
        (
            ConnKey {
                lo_addr: lo.0,
                hi_addr: hi.0,
                lo_port: lo.1,
                hi_port: hi.1,
                vlan: key.vlan,
                protocol: key.protocol,
                ip_version: key.ip_version,
            },
            src_is_lo,
        )
    }
}

/// Record counters of one direction folded here and not yet exported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Pending {
    packets: u64,
    octets: u64,
    first_ms: u64,
    last_ms: u64,
    tcp_flags: u8,
    min_ttl: u8,
    max_ttl: u8,
}

impl Pending {
    fn add(&mut self, record: &FlowRecord) {
        if record.packets == 0 {
            return;
        }
        if self.packets == 0 {
            self.first_ms = record.first_ms;
            self.last_ms = record.last_ms;
            self.min_ttl = record.min_ttl;
            self.max_ttl = record.max_ttl;
        } else {
            self.first_ms = self.first_ms.min(record.first_ms);
            self.last_ms = self.last_ms.max(record.last_ms);
            self.min_ttl = self.min_ttl.min(record.min_ttl);
            self.max_ttl = self.max_ttl.max(record.max_ttl);
        }
        self.packets += record.packets;
        self.octets += record.octets;
        self.tcp_flags |= record.tcp_flags;
    }
}

/// One conversation's state beside its slot, read by its records (a TCP packet reads
/// only its slot, unless something happens to its connection: [`TcpCold`]).
#[derive(Debug)]
struct Conn {
    /// The conversation has TCP KPIs: a [`TcpHot`] in its slot, a [`TcpCold`] beside it.
    tcp: bool,
    /// Whether the initiator is the key's lower endpoint.
    initiator_is_lo: bool,
    /// The initiator's flow key as its first packet had it, for a biflow record that
    /// leaves on a responder's record.
    initiator_key: Option<FlowKey>,
    /// Record counters folded here, per direction (0: from the initiator). The packets
    /// accounted and not yet exported are in the table's slot, per endpoint
    /// (`InLine::held`, 0: from the lower endpoint).
    pending: [Pending; 2],
    /// When a record of the conversation last left: finished conversations linger from
    /// then (`KpiConfig::linger_us`).
    last_us: u64,
}

impl Conn {
    fn nothing_folded(&self) -> bool {
        self.pending[0].packets == 0 && self.pending[1].packets == 0
    }

    fn direction(&self, src_is_lo: bool) -> usize {
        usize::from(src_is_lo != self.initiator_is_lo)
    }

    /// The responder turns out to be the initiator (its SYN came after packets of the
    /// other side): the directions change places, with everything counted for them (the
    /// TCP state's too: [`Tcp::swap_roles`]).
    fn swap_roles(&mut self) {
        self.initiator_is_lo = !self.initiator_is_lo;
        self.pending.swap(0, 1);
    }
}

/// Running RTT statistics, microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct RttStats {
    min: u32,
    max: u32,
    sum: u64,
    count: u32,
}

impl RttStats {
    fn add(&mut self, sample_us: u64) {
        let sample = u32::try_from(sample_us).unwrap_or(u32::MAX);
        if self.count == 0 {
            self.min = sample;
            self.max = sample;
        } else {
            self.min = self.min.min(sample);
            self.max = self.max.max(sample);
        }
        self.sum += u64::from(sample);
        self.count = self.count.saturating_add(1);
    }
}

/// Flags of a direction's per-packet state ([`HotDir::flags`]).
const HAS_NEXT: u8 = 1;
/// A data segment is timed for sequence/ack matching.
const TIMED: u8 = 2;
const ZERO_WINDOW: u8 = 4;
/// The sender uses timestamps: RTT from echoes only.
const USES_TS: u8 = 8;
/// The direction's first data was seen (its time is `ColdDir::first_data_us`).
const FIRST_DATA: u8 = 16;
const FIN_SEEN: u8 = 32;

/// How far before a connection's first packet its epoch lies: timing offsets are `u32`
/// microseconds after the epoch, so packet times up to this far back (a capture merged
/// out of order) and about as far ahead are timed without rebasing.
const EPOCH_SLACK_US: u64 = 1 << 31;

/// What one direction's segments read and write on every packet: sequence, the timed
/// segment, flags, retransmissions not yet added to the KPIs. Everything else (holes,
/// timestamps awaiting their echo, RTT statistics, the other counters) is in [`ColdDir`],
/// touched only on an event.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct HotDir {
    /// One past the highest sequence number seen (data and FIN), with `HAS_NEXT`.
    next_seq: u32,
    /// The segment timed for sequence/ack matching (`TIMED`; Karn: dropped on
    /// retransmission): its end, and when it was seen, microseconds after
    /// [`TcpHot::epoch_us`].
    timed_end: u32,
    timed_at: u32,
    /// Retransmitted packets and octets since they were last added to `ColdDir::kpis`.
    retrans_packets: u32,
    retrans_octets: u32,
    flags: u8,
    /// Gaps in `ColdDir::holes`.
    hole_count: u8,
}

impl HotDir {
    fn next_seq(&self) -> Option<u32> {
        (self.flags & HAS_NEXT != 0).then_some(self.next_seq)
    }
}

/// A TCP connection's per-packet state, both directions in one cache line: the second line
/// of its conversation's slot ([`InLine`]), loaded with the first when a packet is seen.
/// A segment of an established connection with nothing to note (no handshake, hole, RTT
/// sample, zero window, timestamps or close) touches nothing else.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct TcpHot {
    epoch_us: u64,
    /// Per direction, 0: the initiator.
    dirs: [HotDir; 2],
    handshake: Handshake,
    /// The first packet seen was neither a SYN nor a SYN-ACK.
    midstream: bool,
    /// Whether the initiator is the key's lower endpoint (as `Conn::initiator_is_lo`,
    /// here so that a packet reads nothing beyond its slot).
    initiator_is_lo: bool,
}

/// A conversation slot's in-line state.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct InLine {
    /// What of the conversation the cache holds, per endpoint (0: the key's lower one):
    /// packets accounted and not yet exported for a TCP connection with KPIs, records
    /// started and not yet exported for any other.
    held: [u64; 2],
    tcp: TcpHot,
}

/// One direction of a TCP connection, what only events touch: the sequence space's
/// start and gaps, timestamps awaiting their echo, RTT statistics and KPI counters since
/// they were last exported.
#[derive(Clone, Debug, Default)]
struct ColdDir {
    /// Sequence number of this direction's SYN (or SYN-ACK).
    isn: Option<u32>,
    /// Sequence ranges skipped (seen later data, not these): a segment filling one is
    /// out of order, not a retransmission. `HotDir::hole_count` of them are in use.
    holes: [(u32, u32); MAX_HOLES],
    /// Data segments' timestamp values awaiting their echo, with the time first seen.
    ts_pending: [(u32, u64); TS_SLOTS],
    ts_next: usize,
    first_data_us: Option<u64>,
    rtt: RttStats,
    kpis: TcpDirectionKpis,
}

/// A TCP connection's state beyond its slot, indexed like its `Conn` (the table's slab
/// index), so that its address is known from the slot alone.
#[derive(Clone, Debug, Default)]
struct TcpCold {
    dirs: [ColdDir; 2],
    syn_us: u64,
    synack_us: u64,
    rtt_server_us: Option<u32>,
    rtt_client_us: Option<u32>,
    app_latency_us: Option<u32>,
    /// A RST was seen; true when the handshake had completed by then.
    rst: Option<bool>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
enum Handshake {
    #[default]
    None,
    SynSeen,
    SynAckSeen,
    Established,
}

/// A TCP connection's KPI state: its slot's line and its cold part. Holding the reference
/// to the cold part loads nothing; only the events that read it do.
struct Tcp<'a> {
    hot: &'a mut TcpHot,
    cold: &'a mut TcpCold,
}

fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

fn seq_le(a: u32, b: u32) -> bool {
    !seq_lt(b, a)
}

fn micros(later: u64, earlier: u64) -> u32 {
    u32::try_from(later.saturating_sub(earlier)).unwrap_or(u32::MAX)
}

/// The parts of a TCP segment the KPIs read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Segment {
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    payload_len: u32,
    /// TSval, TSecr.
    timestamps: Option<(u32, u32)>,
}

impl Segment {
    /// Whether the segment reads its connection's cold state whatever the hot state says
    /// (a handshake, a reset or a close, timestamps).
    fn reads_cold(&self) -> bool {
        self.flags & (SYN | RST | FIN) != 0 || self.timestamps.is_some()
    }

    /// Reads a TCP header from the transport bytes; `declared_len` is the transport length
    /// the IP header gives. `None` when the fixed header is not all there or its data
    /// offset is impossible. Options are read only within the header and the capture.
    fn parse(bytes: &[u8], declared_len: usize) -> Option<Segment> {
        let fixed = bytes.get(..20)?;
        let header_len = usize::from(fixed[12] >> 4) * 4;
        if header_len < 20 || header_len > declared_len {
            return None;
        }
        let be32 = |at: usize| {
            u32::from_be_bytes([fixed[at], fixed[at + 1], fixed[at + 2], fixed[at + 3]])
        };
        let options = bytes.get(20..header_len.min(bytes.len())).unwrap_or(&[]);
        Some(Segment {
            seq: be32(4),
            ack: be32(8),
            flags: fixed[13],
            window: u16::from_be_bytes([fixed[14], fixed[15]]),
            payload_len: u32::try_from(declared_len - header_len).unwrap_or(u32::MAX),
            timestamps: find_timestamps(options),
        })
    }
}

/// The timestamps option (kind 8, length 10), if the options hold a well-formed one.
fn find_timestamps(mut options: &[u8]) -> Option<(u32, u32)> {
    while let Some(&kind) = options.first() {
        match kind {
            0 => return None,
            1 => options = &options[1..],
            _ => {
                let len = usize::from(*options.get(1)?);
                if len < 2 || len > options.len() {
                    return None;
                }
                if kind == 8 && len == 10 {
                    let v = &options[2..10];
                    return Some((
                        u32::from_be_bytes([v[0], v[1], v[2], v[3]]),
                        u32::from_be_bytes([v[4], v[5], v[6], v[7]]),
                    ));
                }
                options = &options[len..];
            }
        }
    }
    None
}

impl Tcp<'_> {
    /// Starts a connection's state at its first packet, `now_us`.
    fn start(&mut self, initiator_is_lo: bool, now_us: u64) {
        *self.hot = TcpHot {
            epoch_us: now_us.saturating_sub(EPOCH_SLACK_US),
            initiator_is_lo,
            ..TcpHot::default()
        };
        *self.cold = TcpCold::default();
    }

    /// The directions change places (see `Conn::swap_roles`).
    fn swap_roles(&mut self) {
        self.hot.initiator_is_lo = !self.hot.initiator_is_lo;
        self.hot.dirs.swap(0, 1);
        self.cold.dirs.swap(0, 1);
    }

    fn restart_sequence(&mut self, d: usize, next: u32) {
        let dir = &mut self.hot.dirs[d];
        dir.next_seq = next;
        dir.flags = (dir.flags | HAS_NEXT) & !TIMED;
        dir.hole_count = 0;
    }

    fn add_hole(&mut self, d: usize, from: u32, to: u32) {
        let count = &mut self.hot.dirs[d].hole_count;
        let holes = &mut self.cold.dirs[d].holes;
        if usize::from(*count) == MAX_HOLES {
            holes.copy_within(1.., 0);
            *count -= 1;
        }
        holes[usize::from(*count)] = (from, to);
        *count += 1;
    }

    /// Takes `[seq, end)` out of direction `d`'s holes when it lies within one; true if it
    /// did.
    fn fill_hole(&mut self, d: usize, seq: u32, end: u32) -> bool {
        let count = usize::from(self.hot.dirs[d].hole_count);
        for i in 0..count {
            let (from, to) = self.cold.dirs[d].holes[i];
            if seq_le(from, seq) && seq_le(end, to) {
                let left = (from, seq);
                let right = (end, to);
                let mut pieces = [left, right].into_iter().filter(|(a, b)| a != b);
                match (pieces.next(), pieces.next()) {
                    (None, _) => {
                        self.cold.dirs[d].holes.copy_within(i + 1..count, i);
                        self.hot.dirs[d].hole_count -= 1;
                    }
                    (Some(one), None) => self.cold.dirs[d].holes[i] = one,
                    (Some(one), Some(two)) => {
                        self.cold.dirs[d].holes[i] = one;
                        self.add_hole(d, two.0, two.1);
                    }
                }
                return true;
            }
        }
        false
    }

    /// Times direction `d`'s segment ending at `end`, seen at `now_us`.
    fn start_timing(&mut self, d: usize, end: u32, now_us: u64) {
        let at = match now_us
            .checked_sub(self.hot.epoch_us)
            .and_then(|at| u32::try_from(at).ok())
        {
            Some(at) => at,
            None => {
                // Over an hour from the epoch: a new one; what was timed against the old
                // one goes untimed (one sample lost).
                self.hot.epoch_us = now_us.saturating_sub(EPOCH_SLACK_US);
                for dir in &mut self.hot.dirs {
                    dir.flags &= !TIMED;
                }
                (now_us - self.hot.epoch_us) as u32
            }
        };
        let dir = &mut self.hot.dirs[d];
        dir.timed_end = end;
        dir.timed_at = at;
        dir.flags |= TIMED;
    }

    fn count_retransmission(&mut self, d: usize, octets: u32) {
        let dir = &mut self.hot.dirs[d];
        if dir.retrans_packets == u32::MAX || dir.retrans_octets.checked_add(octets).is_none() {
            self.flush_retransmissions(d);
        }
        let dir = &mut self.hot.dirs[d];
        dir.retrans_packets += 1;
        dir.retrans_octets += octets;
    }

    /// Adds direction `d`'s retransmissions counted in the hot line to its KPIs.
    fn flush_retransmissions(&mut self, d: usize) {
        let dir = &mut self.hot.dirs[d];
        let kpis = &mut self.cold.dirs[d].kpis;
        kpis.retrans_packets = kpis.retrans_packets.saturating_add(dir.retrans_packets);
        kpis.retrans_octets = kpis
            .retrans_octets
            .saturating_add(u64::from(dir.retrans_octets));
        dir.retrans_packets = 0;
        dir.retrans_octets = 0;
    }

    /// One segment from direction `d` (0: the initiator) at `now_us`.
    fn segment(&mut self, d: usize, seg: &Segment, now_us: u64, counters: &mut Counters) {
        let o = 1 - d;
        if seg.flags & RST != 0 {
            if self.cold.rst.is_none() {
                self.cold.rst =
                    Some(self.hot.handshake == Handshake::Established || self.hot.midstream);
            }
            return;
        }
        let syn = seg.flags & SYN != 0;
        let ack = seg.flags & ACK != 0;
        if syn {
            self.syn_segment(d, seg, ack, now_us);
            return;
        }
        if self.hot.handshake == Handshake::None {
            self.hot.midstream = true;
        }
        if ack
            && d == 0
            && self.hot.handshake == Handshake::SynAckSeen
            && self.cold.dirs[1]
                .isn
                .is_some_and(|isn| seq_le(isn.wrapping_add(1), seg.ack))
        {
            self.hot.handshake = Handshake::Established;
            self.cold.rtt_client_us = Some(micros(now_us, self.cold.synack_us));
        }
        if ack {
            self.acknowledge(o, seg, now_us);
        }
        let seg_len = seg.payload_len.saturating_add(u32::from(seg.flags & FIN));
        if seg_len > 0 {
            self.sequence(d, seg, seg_len, now_us, counters);
        }
        let dir = &mut self.hot.dirs[d];
        if seg.flags & FIN != 0 {
            dir.flags |= FIN_SEEN;
        }
        if seg.window == 0 {
            if dir.flags & ZERO_WINDOW == 0 {
                self.cold.dirs[d].kpis.zero_window_events += 1;
            }
            dir.flags |= ZERO_WINDOW;
        } else {
            dir.flags &= !ZERO_WINDOW;
        }
    }

    fn syn_segment(&mut self, d: usize, seg: &Segment, ack: bool, now_us: u64) {
        let cold = &mut self.cold.dirs[d];
        if cold.isn == Some(seg.seq) {
            cold.kpis.syn_retransmits += 1;
        } else {
            cold.isn = Some(seg.seq);
            self.restart_sequence(d, seg.seq.wrapping_add(1));
        }
        if seg.timestamps.is_some() {
            self.hot.dirs[d].flags |= USES_TS;
        }
        let hot = &mut *self.hot;
        if !ack {
            // The answer goes to the latest SYN: a first SYN lost after the tap is
            // answered by its retransmission. Whatever came before it was not this
            // connection's.
            if hot.handshake <= Handshake::SynSeen {
                self.cold.syn_us = now_us;
                hot.handshake = Handshake::SynSeen;
                hot.midstream = false;
            }
        } else if hot.handshake <= Handshake::SynAckSeen {
            if hot.handshake == Handshake::SynSeen {
                self.cold.rtt_server_us = Some(micros(now_us, self.cold.syn_us));
            }
            if hot.handshake == Handshake::None {
                hot.midstream = false;
            }
            hot.handshake = Handshake::SynAckSeen;
            self.cold.synack_us = now_us;
        }
    }

    /// An acknowledgement from the other side for direction `d`'s data: RTT samples.
    fn acknowledge(&mut self, d: usize, seg: &Segment, now_us: u64) {
        let dir = &mut self.hot.dirs[d];
        if dir.flags & USES_TS != 0 {
            let Some((_, echo)) = seg.timestamps else {
                return;
            };
            let cold = &mut self.cold.dirs[d];
            for slot in &mut cold.ts_pending {
                if slot.1 != 0 && slot.0 == echo {
                    cold.rtt.add(now_us.saturating_sub(slot.1));
                    *slot = (0, 0);
                }
            }
        } else if dir.flags & TIMED != 0 && seq_le(dir.timed_end, seg.ack) {
            let sent_us = self.hot.epoch_us + u64::from(dir.timed_at);
            dir.flags &= !TIMED;
            self.cold.dirs[d].rtt.add(now_us.saturating_sub(sent_us));
        }
    }

    /// A segment carrying `seg_len` sequence numbers (data, FIN) from direction `d`.
    fn sequence(
        &mut self,
        d: usize,
        seg: &Segment,
        seg_len: u32,
        now_us: u64,
        counters: &mut Counters,
    ) {
        let seq = seg.seq;
        let end = seq.wrapping_add(seg_len);
        if let Some((tsval, _)) = seg.timestamps {
            self.hot.dirs[d].flags |= USES_TS;
            let cold = &mut self.cold.dirs[d];
            let known = cold
                .ts_pending
                .iter()
                .any(|slot| slot.1 != 0 && slot.0 == tsval);
            if !known {
                cold.ts_pending[cold.ts_next] = (tsval, now_us.max(1));
                cold.ts_next = (cold.ts_next + 1) % TS_SLOTS;
            }
        }
        let Some(next) = self.hot.dirs[d].next_seq() else {
            // Picked up here: the direction's sequence space starts with this segment.
            self.restart_sequence(d, end);
            self.first_data(d, now_us);
            return;
        };
        let ahead = seq.wrapping_sub(next);
        let behind = next.wrapping_sub(seq);
        if ahead >= MAX_SEQ_JUMP && behind >= MAX_SEQ_JUMP {
            counters.desyncs += 1;
            self.restart_sequence(d, end);
            return;
        }
        if seq_le(next, seq) {
            // New data, perhaps after a gap the tap never saw filled.
            if seq != next {
                self.add_hole(d, next, seq);
            }
            self.hot.dirs[d].next_seq = end;
            if seg.payload_len > 0
                && self.first_data(d, now_us)
                && d == 1
                && self.hot.handshake >= Handshake::SynAckSeen
                && let Some(asked) = self.cold.dirs[0].first_data_us
            {
                self.cold.app_latency_us = Some(micros(now_us, asked));
            }
            if self.hot.dirs[d].flags & (TIMED | USES_TS) == 0 {
                self.start_timing(d, end, now_us);
            }
            return;
        }
        if self.fill_hole(d, seq, end) {
            self.cold.dirs[d].kpis.out_of_order_packets += 1;
            return;
        }
        // Bytes the tap had already seen go by again.
        self.count_retransmission(d, seg.payload_len);
        let dir = &mut self.hot.dirs[d];
        if dir.flags & TIMED != 0 && seq_lt(seq, dir.timed_end) {
            dir.flags &= !TIMED;
        }
        if seq_lt(next, end) {
            dir.next_seq = end;
        }
    }

    /// Notes direction `d`'s first data at `now_us` unless it has been; true if this is it.
    fn first_data(&mut self, d: usize, now_us: u64) -> bool {
        let dir = &mut self.hot.dirs[d];
        if dir.flags & FIRST_DATA != 0 {
            return false;
        }
        dir.flags |= FIRST_DATA;
        self.cold.dirs[d].first_data_us = Some(now_us);
        true
    }

    fn outcome(&self, end_reason: EndReason) -> TcpOutcome {
        let fin = |d: usize| self.hot.dirs[d].flags & FIN_SEEN != 0;
        if self.hot.midstream {
            TcpOutcome::Midstream
        } else if let Some(established) = self.cold.rst {
            if established {
                TcpOutcome::Reset
            } else {
                TcpOutcome::Rejected
            }
        } else if fin(0) && fin(1) {
            TcpOutcome::Closed
        } else if self.hot.handshake != Handshake::Established {
            TcpOutcome::HalfOpen
        } else if matches!(end_reason, EndReason::Active | EndReason::Forced) {
            TcpOutcome::Open
        } else {
            TcpOutcome::Established
        }
    }

    /// Direction `d`'s KPIs since they were last taken.
    fn take_direction(&mut self, d: usize) -> TcpDirectionKpis {
        self.flush_retransmissions(d);
        let dir = &mut self.cold.dirs[d];
        let mut kpis = std::mem::take(&mut dir.kpis);
        let rtt = std::mem::take(&mut dir.rtt);
        if rtt.count > 0 {
            kpis.rtt_min_us = Some(rtt.min);
            kpis.rtt_max_us = Some(rtt.max);
            kpis.rtt_mean_us = Some((rtt.sum / u64::from(rtt.count)) as u32);
        }
        kpis
    }

    /// The KPIs since the last export: `forward` is direction `d`.
    fn take(&mut self, d: usize, end_reason: EndReason) -> TcpKpis {
        let mut kpis = TcpKpis {
            forward: self.take_direction(d),
            reverse: self.take_direction(1 - d),
            outcome: self.outcome(end_reason),
            ..TcpKpis::default()
        };
        // Handshake figures go out once, with the first record after they are known.
        kpis.rtt_server_us = self.cold.rtt_server_us.take();
        kpis.rtt_client_us = self.cold.rtt_client_us.take();
        kpis.app_latency_us = self.cold.app_latency_us.take();
        kpis
    }
}

flowcache::counters! {
    /// The KPI extension's counters: `tapflow_kpi_<name>_total` on the metrics endpoint.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct KpiStats {
        connections: u64 = Spec::counter("connections", "kpi conversations",
            "Conversations tracked (both directions as one)."),
        tcp_connections: u64 = Spec::counter("tcp_connections", "kpi tcp connections",
            "TCP connections with KPI state."),
        untracked_packets: u64 = Spec::counter("untracked_packets", "kpi untracked packets",
            "Packets of new conversations the full KPI table could not track (for \
            conversations without TCP KPIs, the first packet of each record).")
            .when_nonzero(),
        malformed_tcp: u64 = Spec::counter("malformed_tcp", "kpi malformed tcp",
            "TCP packets whose header the KPIs could not read.").when_nonzero(),
        desyncs: u64 = Spec::counter("sequence_desyncs", "kpi sequence desyncs",
            "TCP segments whose sequence number jumped by more than 2^30.").when_nonzero(),
        untracked_records: u64 = Spec::counter("untracked_records", "kpi untracked records",
            "Records of conversations with no KPI state (exported as they were).")
            .when_nonzero(),
    }
}

type Counters = KpiStats;

/// A packet seen (or a record started, for conversations followed per record) and not
/// yet accounted.
#[derive(Clone, Copy, Debug)]
struct Seen {
    key: ConnKey,
    hash: u64,
    src_is_lo: bool,
    /// What the flow key has beyond `key` and `src_is_lo` ([`Seen::flow_key`]): read
    /// only for a new conversation or a late SYN, not copied for every packet.
    tos: u8,
    reserved: u8,
    input_port: u16,
    time_us: u64,
    /// The TCP flags byte (0 for other protocols).
    tcp_flags: u8,
    segment: Option<Segment>,
}

impl Seen {
    /// The packet's flow key, as it was.
    fn flow_key(&self) -> FlowKey {
        let k = &self.key;
        let (src, dst) = if self.src_is_lo {
            ((k.lo_addr, k.lo_port), (k.hi_addr, k.hi_port))
        } else {
            ((k.hi_addr, k.hi_port), (k.lo_addr, k.lo_port))
        };
        FlowKey {
            src_addr: src.0,
            dst_addr: dst.0,
            src_port: src.1,
            dst_port: dst.1,
            vlan: k.vlan,
            input_port: self.input_port,
            protocol: k.protocol,
            tos: self.tos,
            ip_version: k.ip_version,
            _reserved: self.reserved,
        }
    }
}

/// The KPI and biflow extension of one worker.
#[derive(Debug)]
pub struct KpiMonitor {
    config: KpiConfig,
    table: ConnTable<ConnKey, Conn, InLine>,
    /// The TCP connections' cold state, by the table's slab index (empty without TCP
    /// KPIs).
    tcp_cold: Vec<TcpCold>,
    seen: Vec<Seen>,
    /// A packet in `seen` reads its connection's cold state (a SYN, RST or FIN, or one
    /// with timestamps): it is prefetched before the batch is accounted.
    seen_cold: bool,
    counters: Counters,
    next_purge_us: u64,
    now_us: u64,
}

/// Whether the conversations of `protocol` are followed packet by packet (TCP with KPIs)
/// rather than record by record.
fn per_packet(config: &KpiConfig, protocol: u8) -> bool {
    protocol == 6 && config.tcp
}

/// The endpoint a packet came from: 0 the conversation key's lower one.
fn endpoint(src_is_lo: bool) -> usize {
    usize::from(!src_is_lo)
}

impl KpiMonitor {
    pub fn new(config: KpiConfig) -> KpiMonitor {
        KpiMonitor {
            table: ConnTable::new(config.capacity),
            tcp_cold: Vec::new(),
            seen: Vec::with_capacity(SEEN_BATCH),
            seen_cold: false,
            config,
            counters: Counters::default(),
            next_purge_us: 0,
            now_us: 0,
        }
    }

    /// Takes a packet of a conversation followed per packet, or a record start of one
    /// followed per record: its slot starts loading now, it is accounted a batch later.
    fn see(&mut self, key: &FlowKey, time_us: u64, tcp_flags: u8, segment: Option<Segment>) {
        let (conn_key, src_is_lo) = ConnKey::of(key);
        let hash = self.table.hash(&conn_key);
        self.table.prefetch_slot(hash);
        self.seen_cold |= segment.is_some_and(|t| t.reads_cold());
        self.seen.push(Seen {
            key: conn_key,
            hash,
            src_is_lo,
            tos: key.tos,
            reserved: key._reserved,
            input_port: key.input_port,
            time_us,
            tcp_flags,
            segment,
        });
        if self.seen.len() >= SEEN_BATCH {
            self.account_seen();
        }
    }

    /// Drops connections with nothing in the cache and nothing folded that have been
    /// quiet for the linger time (all of them, when `everything_idle`).
    fn purge(&mut self, everything_idle: bool) {
        let (now, linger) = (self.now_us, self.config.linger_us);
        self.table.retain(|slot, conn| {
            !(slot.live.held == [0, 0]
                && conn.nothing_folded()
                && (everything_idle || conn.last_us.saturating_add(linger) <= now))
        });
    }

    /// Accounts the packets seen so far, in order. Their slots, with their connections'
    /// per-packet state, were prefetched as they were seen; the cold state of those that
    /// read it is prefetched first.
    fn account_seen(&mut self) {
        if self.seen.is_empty() {
            return;
        }
        let mut seen = std::mem::take(&mut self.seen);
        if std::mem::take(&mut self.seen_cold) {
            for s in &seen {
                if s.segment.is_some_and(|t| t.reads_cold())
                    && let Some(slot) = self.table.find(&s.key, s.hash)
                    && let Some(cold) = self.tcp_cold.get(self.table.value_index(slot))
                {
                    prefetch_lines(cold);
                }
            }
        }
        for s in seen.drain(..) {
            self.account(&s);
        }
        self.seen = seen;
    }

    fn account(&mut self, s: &Seen) {
        let slot = match self.table.find(&s.key, s.hash) {
            Some(slot) => slot,
            None => match self.start(s) {
                Some(slot) => slot,
                None => {
                    self.counters.untracked_packets += 1;
                    return;
                }
            },
        };
        let index = self.table.value_index(slot);
        let (slot, conn) = self.table.entry_mut(slot);
        slot.live.held[endpoint(s.src_is_lo)] += 1;
        // Only TCP's KPIs need more than the slot's first line (a conversation with a
        // segment has them: it is followed per packet).
        let Some(segment) = &s.segment else {
            return;
        };
        let mut tcp = Tcp {
            hot: &mut slot.live.tcp,
            cold: &mut self.tcp_cold[index],
        };
        let mut d = usize::from(s.src_is_lo != tcp.hot.initiator_is_lo);
        if d == 1
            && segment.flags & (SYN | ACK | RST) == SYN
            && tcp.hot.handshake == Handshake::None
        {
            conn.swap_roles();
            tcp.swap_roles();
            conn.initiator_key = Some(s.flow_key());
            d = 0;
        }
        tcp.segment(d, segment, s.time_us, &mut self.counters);
    }

    /// Starts tracking the conversation of `s`, not in the table; its slot, or `None` when
    /// the table is full.
    fn start(&mut self, s: &Seen) -> Option<usize> {
        if self.table.is_full() {
            self.purge(true);
        }
        let track_tcp = per_packet(&self.config, s.key.protocol);
        // The SYN-ACK's sender is the responder; otherwise the first sender initiates.
        let flags = s.segment.map_or(s.tcp_flags, |t| t.flags);
        let synack = s.key.protocol == 6 && flags & (SYN | ACK) == SYN | ACK;
        let initiator_is_lo = s.src_is_lo != synack;
        let conn = Conn {
            initiator_is_lo,
            initiator_key: (s.src_is_lo == initiator_is_lo).then(|| s.flow_key()),
            pending: [Pending::default(); 2],
            last_us: s.time_us,
            tcp: track_tcp,
        };
        let slot = self.table.insert(s.key, s.hash, conn)?;
        self.counters.connections += 1;
        if track_tcp {
            self.counters.tcp_connections += 1;
            let index = self.table.value_index(slot);
            if index >= self.tcp_cold.len() {
                self.tcp_cold.resize_with(index + 1, TcpCold::default);
            }
            Tcp {
                hot: &mut self.table.entry_mut(slot).0.live.tcp,
                cold: &mut self.tcp_cold[index],
            }
            .start(initiator_is_lo, s.time_us);
        }
        Some(slot)
    }

    /// The TCP state of the conversation in `slot`, if it has TCP KPIs.
    fn tcp_of(&mut self, slot: usize) -> (&mut InLine, &mut Conn, Option<&mut TcpCold>) {
        let index = self.table.value_index(slot);
        let (slot, conn) = self.table.entry_mut(slot);
        let cold = if conn.tcp {
            self.tcp_cold.get_mut(index)
        } else {
            None
        };
        (&mut slot.live, conn, cold)
    }
}

/// Makes the record that leaves for connection `conn` on a record of direction `d` (with
/// biflows, the biflow record of everything folded so far) and attaches the TCP KPIs.
fn emit(
    config: &KpiConfig,
    conn: &mut Conn,
    tcp: Option<Tcp<'_>>,
    d: usize,
    record: &mut FlowRecord,
) {
    let extras = record
        .extras
        .get_or_insert_with(Box::<RecordExtras>::default);
    if config.biflow {
        let [forward, reverse] = std::mem::take(&mut conn.pending);
        if d == 1 {
            record.key = conn.initiator_key.unwrap_or_else(|| swapped(&record.key));
        }
        record.packets = forward.packets;
        record.octets = forward.octets;
        record.tcp_flags = forward.tcp_flags;
        record.min_ttl = forward.min_ttl;
        record.max_ttl = forward.max_ttl;
        let times = if forward.packets > 0 {
            forward
        } else {
            reverse
        };
        record.first_ms = times.first_ms;
        record.last_ms = times.last_ms;
        extras.reverse = Some(ReverseCounters {
            packets: reverse.packets,
            octets: reverse.octets,
            first_ms: reverse.first_ms,
            last_ms: reverse.last_ms,
            tcp_flags: reverse.tcp_flags,
            min_ttl: reverse.min_ttl,
            max_ttl: reverse.max_ttl,
            end_reason: record.end_reason,
        });
    }
    if let Some(mut tcp) = tcp {
        let forward = if config.biflow { 0 } else { d };
        let mut kpis = tcp.take(forward, record.end_reason);
        if !config.biflow {
            kpis.reverse = TcpDirectionKpis::default();
        }
        extras.tcp = Some(kpis);
    }
    if extras.is_empty() {
        record.extras = None;
    }
}

fn swapped(key: &FlowKey) -> FlowKey {
    FlowKey {
        src_addr: key.dst_addr,
        dst_addr: key.src_addr,
        src_port: key.dst_port,
        dst_port: key.src_port,
        ..*key
    }
}

impl Extension for KpiMonitor {
    fn name(&self) -> &'static str {
        "kpi"
    }

    fn interest(&self) -> Interest {
        if self.config.tcp {
            Interest::TCP
        } else {
            Interest::NONE
        }
    }

    fn wants_flow_starts(&self) -> bool {
        self.config.biflow
    }

    fn on_flow_starts(&mut self, starts: &[Observation]) {
        for start in starts {
            if per_packet(&self.config, start.key.protocol) {
                continue;
            }
            let time_us = start.timestamp_ms * 1_000;
            self.now_us = self.now_us.max(time_us);
            self.see(&start.key, time_us, start.tcp_flags, None);
        }
    }

    fn on_packet(&mut self, packet: &PacketView<'_>, _out: &mut ExtOutput<'_>) {
        if !packet.sampled || !per_packet(&self.config, packet.key.protocol) {
            return;
        }
        self.now_us = self.now_us.max(packet.timestamp_us);
        let segment = packet
            .transport()
            .and_then(|t| Segment::parse(t.bytes, t.declared_len));
        if segment.is_none() {
            self.counters.malformed_tcp += 1;
        }
        self.see(
            packet.key,
            packet.timestamp_us,
            packet.meta.tcp_flags,
            segment,
        );
    }

    fn on_clock(&mut self, now_us: u64, _out: &mut ExtOutput<'_>) {
        self.account_seen();
        self.now_us = self.now_us.max(now_us);
        if self.now_us >= self.next_purge_us {
            self.purge(false);
            self.next_purge_us = self.now_us + PURGE_PERIOD_US;
        }
    }

    fn on_finish(&mut self, _now_us: u64, _out: &mut ExtOutput<'_>) {
        self.account_seen();
    }

    fn on_record(&mut self, record: &mut FlowRecord) -> RecordFate {
        let per_packet = per_packet(&self.config, record.key.protocol);
        if !self.config.biflow && !per_packet {
            return RecordFate::Keep;
        }
        // The worker shows records after the burst's clock; a record never overtakes the
        // packets seen before it.
        self.account_seen();
        let (conn_key, src_is_lo) = ConnKey::of(&record.key);
        let config = self.config;
        let now_us = self.now_us;
        let Some(slot) = self.table.find(&conn_key, self.table.hash(&conn_key)) else {
            self.counters.untracked_records += 1;
            return RecordFate::Keep;
        };
        let (line, conn, cold) = self.tcp_of(slot);
        let d = conn.direction(src_is_lo);
        let e = endpoint(src_is_lo);
        let held = if per_packet { record.packets } else { 1 };
        line.held[e] = line.held[e].saturating_sub(held);
        let tcp = cold.map(|cold| Tcp {
            hot: &mut line.tcp,
            cold,
        });
        let fate = if config.biflow {
            conn.pending[d].add(record);
            // Fold while the conversation still has packets in the cache: they will leave
            // later and carry this one. An active timeout's record must not wait.
            if line.held != [0, 0] && record.end_reason != EndReason::Active {
                RecordFate::Folded
            } else {
                emit(&config, conn, tcp, d, record);
                RecordFate::Keep
            }
        } else {
            emit(&config, conn, tcp, d, record);
            RecordFate::Keep
        };
        conn.last_us = conn.last_us.max(now_us);
        fate
    }

    fn counters(&self, out: &mut Vec<ExtCounter>) {
        self.counters.visit(&mut |series| out.push(series));
    }
}

// A conversation's slot is two cache lines, key and counts on the first, the TCP state on
// the second: the prefetch as a packet is seen loads both, and a probe reads the first.
const _: () = assert!(std::mem::size_of::<crate::conn_table::Slot<ConnKey, InLine>>() == 128);
const _: () = assert!(std::mem::size_of::<TcpHot>() <= 64);
const _: () = assert!(
    std::mem::offset_of!(crate::conn_table::Slot<ConnKey, InLine>, live)
        + std::mem::offset_of!(InLine, tcp)
        == 64
);
