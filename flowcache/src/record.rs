//! The plain types the flow cache shares with the rest of tapflow: the flow key a packet is
//! accounted under, the observation a worker feeds in, and the expired [`FlowRecord`] that
//! is handed to the exporter. Nothing here knows of DPDK, sockets or wire formats.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::extras::RecordExtras;

/// Identity of a flow, as NetFlow defines it: addresses, ports (ICMP type and code in the
/// destination port, `type << 8 | code`), protocol, ToS, VLAN and input port.
///
/// Addresses are stored in 16 bytes; an IPv4 address occupies the first four and the rest
/// are zero, so a key is compared and hashed as plain bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    pub vlan: u16,
    pub input_port: u16,
    pub protocol: u8,
    pub tos: u8,
    /// 4 or 6.
    pub ip_version: u8,
    pub _reserved: u8,
}

const _: () = assert!(std::mem::size_of::<FlowKey>() == 44);

impl FlowKey {
    pub fn src_ip(&self) -> IpAddr {
        addr_from_bytes(self.ip_version, &self.src_addr)
    }

    pub fn dst_ip(&self) -> IpAddr {
        addr_from_bytes(self.ip_version, &self.dst_addr)
    }

    /// Stores an address, choosing the IP version from its kind.
    pub fn set_addrs(&mut self, src: IpAddr, dst: IpAddr) {
        let (v, s) = addr_to_bytes(src);
        let (_, d) = addr_to_bytes(dst);
        self.ip_version = v;
        self.src_addr = s;
        self.dst_addr = d;
    }
}

fn addr_from_bytes(version: u8, b: &[u8; 16]) -> IpAddr {
    if version == 6 {
        IpAddr::V6(Ipv6Addr::from(*b))
    } else {
        IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    }
}

fn addr_to_bytes(addr: IpAddr) -> (u8, [u8; 16]) {
    let mut out = [0u8; 16];
    match addr {
        IpAddr::V4(a) => {
            out[..4].copy_from_slice(&a.octets());
            (4, out)
        }
        IpAddr::V6(a) => (6, a.octets()),
    }
}

/// One parsed packet as the cache needs it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    pub key: FlowKey,
    /// IP total length (IPv6: payload length + 40), as NetFlow counts octets.
    pub octets: u32,
    /// TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10, URG 0x20, ...); 0 otherwise.
    pub tcp_flags: u8,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// Packet time in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
}

/// Why a flow left the cache. The discriminants are IPFIX flowEndReason (IANA IE 136).
#[repr(u8)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EndReason {
    /// Inactive timeout.
    #[default]
    Idle = 1,
    /// Active timeout: a long flow is exported in pieces.
    Active = 2,
    /// TCP FIN or RST seen.
    EndOfFlow = 3,
    /// Shutdown, reload or explicit flush.
    Forced = 4,
    /// Cache full: the least recently used entry of the bucket was evicted.
    LackOfResources = 5,
}

impl EndReason {
    pub const ALL: [EndReason; 5] = [
        EndReason::Idle,
        EndReason::Active,
        EndReason::EndOfFlow,
        EndReason::Forced,
        EndReason::LackOfResources,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            EndReason::Idle => "idle",
            EndReason::Active => "active",
            EndReason::EndOfFlow => "end_of_flow",
            EndReason::Forced => "forced",
            EndReason::LackOfResources => "lack_of_resources",
        }
    }
}

/// Packet sampling algorithm, numbered as IPFIX samplingAlgorithm / NetFlow v9
/// SAMPLING_ALGORITHM where those define one (1 deterministic, 2 random); hash-based
/// flow sampling has no v9 code and is reported as random with its interval.
#[repr(u8)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SamplingAlgorithm {
    #[default]
    None = 0,
    Deterministic = 1,
    Random = 2,
    Hash = 3,
}

/// How the packets behind a record were sampled: 1 in `interval` (1 when unsampled).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SamplingInfo {
    pub algorithm: SamplingAlgorithm,
    pub interval: u32,
}

impl Default for SamplingInfo {
    fn default() -> Self {
        SamplingInfo {
            algorithm: SamplingAlgorithm::None,
            interval: 1,
        }
    }
}

/// An expired flow, handed from the cache to the exporter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowRecord {
    pub key: FlowKey,
    pub packets: u64,
    pub octets: u64,
    /// First and last packet times, milliseconds since the Unix epoch.
    pub first_ms: u64,
    pub last_ms: u64,
    /// OR of the TCP flags of every packet.
    pub tcp_flags: u8,
    pub min_ttl: u8,
    pub max_ttl: u8,
    pub end_reason: EndReason,
    pub sampling: SamplingInfo,
    /// The label a [`Classifier`](crate::Classifier) gave the record's first packet; 0
    /// when the shard keeps no labels ([`FlowShard::keep_labels`](crate::FlowShard::keep_labels)).
    pub label: u32,
    /// Fields that extensions attached (biflow, KPIs, DNS, policy); `None` without any.
    pub extras: Option<Box<RecordExtras>>,
}

/// Protocol-port aggregate (Cisco's scheme): flows summed over protocol, source port and
/// destination port within one aggregation interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AggregateRecord {
    pub protocol: u8,
    pub src_port: u16,
    pub dst_port: u16,
    pub flows: u64,
    pub packets: u64,
    pub octets: u64,
    pub first_ms: u64,
    pub last_ms: u64,
    pub sampling: SamplingInfo,
}
