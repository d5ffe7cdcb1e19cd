//! Per-flow fields that extensions attach to an expired record: the reverse direction of a
//! biflow, transport KPIs, DNS transactions and the policy that selected the flow.
//!
//! They travel beside the record (`FlowRecord::extras`, boxed and absent unless an
//! extension filled them), so a record without extensions stays small and the cache's
//! 64-byte entries never hold them. Each section is one plain struct; the exporter lists
//! the information elements of each section once (`exporter::ie`) and the JSON record
//! writer names each field once (`exporter::json`). Field names here are the JSON names
//! without the `_rev` suffix that the reverse direction adds.

/// Everything extensions attached to one record. A section is `None` when no extension
/// filled it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordExtras {
    /// The reverse direction of a biflow (RFC 5103): the record's key is the initiator's.
    pub reverse: Option<ReverseCounters>,
    /// Transport KPIs of a TCP connection.
    pub tcp: Option<TcpKpis>,
    /// The flow's DNS transaction (the first query and its response).
    pub dns: Option<DnsTransaction>,
    /// The policy rule that selected the flow.
    pub policy: Option<PolicyMark>,
}

impl RecordExtras {
    pub fn is_empty(&self) -> bool {
        self.reverse.is_none() && self.tcp.is_none() && self.dns.is_none() && self.policy.is_none()
    }
}

/// Counters of a biflow's reverse direction (responder to initiator).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReverseCounters {
    pub packets: u64,
    pub octets: u64,
    /// First and last packet times, milliseconds since the Unix epoch; 0 when no packet
    /// went that way.
    pub first_ms: u64,
    pub last_ms: u64,
    pub tcp_flags: u8,
    pub min_ttl: u8,
    pub max_ttl: u8,
    pub end_reason: crate::EndReason,
}

/// How a TCP connection ended, as far as the tap saw it.
#[repr(u8)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TcpOutcome {
    /// Handshake completed, then the flow ended without FIN both ways or RST (idle).
    Established = 1,
    /// FIN seen in both directions.
    Closed = 2,
    /// RST answered a SYN.
    Rejected = 3,
    /// RST after the handshake completed.
    Reset = 4,
    /// SYN never answered.
    HalfOpen = 5,
    /// Still open when the record was exported.
    #[default]
    Open = 6,
    /// Picked up mid-connection: no handshake seen.
    Midstream = 7,
}

impl TcpOutcome {
    pub const ALL: [TcpOutcome; 7] = [
        TcpOutcome::Established,
        TcpOutcome::Closed,
        TcpOutcome::Rejected,
        TcpOutcome::Reset,
        TcpOutcome::HalfOpen,
        TcpOutcome::Open,
        TcpOutcome::Midstream,
    ];

    /// The JSON value of `tcp_outcome`.
    pub fn name(self) -> &'static str {
        match self {
            TcpOutcome::Established => "established",
            TcpOutcome::Closed => "closed",
            TcpOutcome::Rejected => "rejected",
            TcpOutcome::Reset => "reset",
            TcpOutcome::HalfOpen => "half_open",
            TcpOutcome::Open => "open",
            TcpOutcome::Midstream => "midstream",
        }
    }
}

/// One direction's transport KPIs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpDirectionKpis {
    /// RTT samples (timestamp echo or sequence/ack matching), microseconds; `None` without
    /// a sample.
    pub rtt_min_us: Option<u32>,
    pub rtt_mean_us: Option<u32>,
    pub rtt_max_us: Option<u32>,
    pub retrans_packets: u32,
    pub retrans_octets: u64,
    pub out_of_order_packets: u32,
    pub zero_window_events: u32,
    pub syn_retransmits: u32,
}

/// Transport KPIs of one TCP connection, measured at the tap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpKpis {
    /// SYN to SYN-ACK: the server side of the handshake, microseconds.
    pub rtt_server_us: Option<u32>,
    /// SYN-ACK to the client's ACK: the client side, microseconds.
    pub rtt_client_us: Option<u32>,
    /// The client's first data segment to the server's first data segment, microseconds.
    pub app_latency_us: Option<u32>,
    /// The record's direction (initiator to responder in a biflow).
    pub forward: TcpDirectionKpis,
    /// The other direction; only meaningful in a biflow.
    pub reverse: TcpDirectionKpis,
    pub outcome: TcpOutcome,
}

/// A DNS transaction seen in a flow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsTransaction {
    /// The query name, dotted, without the trailing dot; lossy for non-printable bytes.
    pub qname: String,
    pub qtype: u16,
    /// Response code; `None` when no response was seen.
    pub rcode: Option<u8>,
    pub answers: Option<u16>,
    /// Query to response, microseconds.
    pub latency_us: Option<u32>,
}

/// The policy rule that selected a flow, and the tag it gives the flow's records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyMark {
    pub name: std::sync::Arc<str>,
    pub tag: Option<u32>,
}
