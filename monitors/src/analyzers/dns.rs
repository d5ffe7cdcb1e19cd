//! DNS transactions: a query is matched to its response by addresses, ports and message
//! id; the transaction (name, type, response code, answer count, latency) is attached as
//! [`flowcache::DnsTransaction`] to the records of both directions' flows, the first
//! transaction of each flow. Malformed messages are counted and skipped.

use flowcache::{DnsTransaction, FlowKey, FlowRecord, RecordExtras};
use probe::ext::{BoundedTable, ExtOutput, Interest, PacketView};
use probe::parse::IpProtocol;

use super::dns_wire::parse_message;
use super::{Analyzer, AnalyzerStats, DnsSettings};

const UDP_HEADER_LEN: usize = 8;

/// A flow without the fields that may differ between its packets or directions
/// (ToS, input port): addresses, ports, protocol and VLAN, as sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FlowId {
    src: [u8; 16],
    dst: [u8; 16],
    src_port: u16,
    dst_port: u16,
    protocol: u8,
    vlan: u16,
}

impl FlowId {
    fn of(key: &FlowKey) -> FlowId {
        FlowId {
            src: key.src_addr,
            dst: key.dst_addr,
            src_port: key.src_port,
            dst_port: key.dst_port,
            protocol: key.protocol,
            vlan: key.vlan,
        }
    }

    fn reversed(self) -> FlowId {
        FlowId {
            src: self.dst,
            dst: self.src,
            src_port: self.dst_port,
            dst_port: self.src_port,
            ..self
        }
    }
}

#[derive(Debug)]
struct PendingQuery {
    time_us: u64,
    qname: String,
    qtype: u16,
}

#[derive(Debug)]
pub struct DnsAnalyzer {
    /// Queries by (client to server flow, message id).
    pending: BoundedTable<(FlowId, u16), PendingQuery>,
    /// Each flow's first transaction, until its record leaves the cache.
    transactions: BoundedTable<FlowId, DnsTransaction>,
    queries: u64,
    responses: u64,
    unmatched_responses: u64,
    malformed: u64,
}

impl DnsAnalyzer {
    pub fn new(settings: DnsSettings) -> DnsAnalyzer {
        DnsAnalyzer {
            pending: BoundedTable::new(settings.max_pending),
            transactions: BoundedTable::new(settings.max_transactions),
            queries: 0,
            responses: 0,
            unmatched_responses: 0,
            malformed: 0,
        }
    }

    /// The DNS message in the packet: a UDP payload, or a TCP segment holding a whole
    /// length-prefixed message (DNS over TCP split over segments is not reassembled).
    fn message<'a>(packet: &PacketView<'a>) -> Option<&'a [u8]> {
        let transport = packet.transport()?;
        match transport.protocol {
            IpProtocol::UDP => transport.bytes.get(UDP_HEADER_LEN..),
            IpProtocol::TCP => {
                let offset = usize::from(*transport.bytes.get(12)? >> 4) * 4;
                let payload = transport.bytes.get(offset..)?;
                let len = usize::from(u16::from_be_bytes([*payload.first()?, *payload.get(1)?]));
                payload.get(2..2 + len)
            }
            _ => None,
        }
    }

    fn record(&mut self, flow: FlowId, transaction: &DnsTransaction) {
        let entry = self
            .transactions
            .get_or_insert_with(&flow, || transaction.clone());
        // A query's transaction is completed by its response, never replaced by a later one.
        if entry.qname == transaction.qname
            && entry.qtype == transaction.qtype
            && entry.rcode.is_none()
        {
            *entry = transaction.clone();
        }
    }
}

impl Analyzer for DnsAnalyzer {
    fn name(&self) -> &'static str {
        "dns"
    }

    fn interest(&self) -> Interest {
        Interest::DNS
    }

    fn on_packet(&mut self, packet: &PacketView<'_>, _out: &mut ExtOutput<'_>) {
        let Some(bytes) = Self::message(packet) else {
            // A TCP segment without a payload (handshake, ACK) carries no message.
            if packet.key.protocol == 17 {
                self.malformed += 1;
            }
            return;
        };
        let message = match parse_message(bytes) {
            Ok(message) => message,
            Err(_) => {
                self.malformed += 1;
                return;
            }
        };
        let flow = FlowId::of(packet.key);
        if !message.response {
            self.queries += 1;
            let transaction = DnsTransaction {
                qname: message.qname.clone(),
                qtype: message.qtype,
                ..DnsTransaction::default()
            };
            self.record(flow, &transaction);
            *self
                .pending
                .get_or_insert_with(&(flow, message.id), || PendingQuery {
                    time_us: 0,
                    qname: String::new(),
                    qtype: 0,
                }) = PendingQuery {
                time_us: packet.timestamp_us,
                qname: message.qname,
                qtype: message.qtype,
            };
            return;
        }
        self.responses += 1;
        let query_flow = flow.reversed();
        let query = self
            .pending
            .remove(&(query_flow, message.id))
            .filter(|q| q.qname.eq_ignore_ascii_case(&message.qname) && q.qtype == message.qtype);
        if query.is_none() {
            self.unmatched_responses += 1;
        }
        let transaction = DnsTransaction {
            latency_us: query.as_ref().map(|q| {
                u32::try_from(packet.timestamp_us.saturating_sub(q.time_us)).unwrap_or(u32::MAX)
            }),
            qname: query.map(|q| q.qname).unwrap_or(message.qname),
            qtype: message.qtype,
            rcode: Some(message.rcode),
            answers: Some(message.answers),
        };
        self.record(query_flow, &transaction);
        self.record(flow, &transaction);
    }

    fn on_record(&mut self, record: &mut FlowRecord, _on: bool) {
        if record.key.src_port != 53 && record.key.dst_port != 53 {
            return;
        }
        if let Some(transaction) = self.transactions.remove(&FlowId::of(&record.key)) {
            record
                .extras
                .get_or_insert_with(|| Box::new(RecordExtras::default()))
                .dns = Some(transaction);
        }
    }

    fn stop(&mut self, _now_us: u64, _out: &mut ExtOutput<'_>) {
        // Queries still waiting will not be matched; finished transactions stay for their
        // records.
        self.pending.retain(|_, _| false);
    }

    fn counters(&self, stats: &mut AnalyzerStats) {
        stats.dns_queries = self.queries;
        stats.dns_responses = self.responses;
        stats.dns_unmatched_responses = self.unmatched_responses;
        stats.dns_malformed = self.malformed;
        stats.dns_query_evictions = self.pending.evictions();
        stats.dns_transaction_evictions = self.transactions.evictions();
    }
}

#[cfg(test)]
mod tests {
    use super::super::dns_wire::tests::message;
    use super::super::tests::{View, settings, udp_with};
    use super::*;
    use flowcache::EndReason;

    fn show(analyzer: &mut DnsAnalyzer, frame: Vec<u8>, time_us: u64) {
        let v = View::new(frame, time_us);
        analyzer.on_packet(&v.view(), &mut ExtOutput::new(&mut Vec::new()));
    }

    fn record_of(analyzer: &mut DnsAnalyzer, frame: Vec<u8>) -> FlowRecord {
        let v = View::new(frame, 0);
        let mut record = FlowRecord {
            key: v.key,
            packets: 1,
            octets: 0,
            first_ms: 0,
            last_ms: 0,
            tcp_flags: 0,
            min_ttl: 0,
            max_ttl: 0,
            end_reason: EndReason::Idle,
            sampling: Default::default(),
            label: 0,
            extras: None,
        };
        analyzer.on_record(&mut record, true);
        record
    }

    const CLIENT: [u8; 4] = [10, 0, 0, 1];
    const SERVER: [u8; 4] = [10, 0, 0, 53];

    #[test]
    fn a_query_and_its_response_make_one_transaction_on_both_records() {
        let mut dns = DnsAnalyzer::new(settings().dns);
        let t = 1_700_000_000_000_000;
        let query = message(0xbeef, 0x0100, "www.example.org", 1, 0);
        show(&mut dns, udp_with(CLIENT, 40000, SERVER, 53, &query), t);
        let response = message(0xbeef, 0x8180, "www.example.org", 1, 2);
        show(
            &mut dns,
            udp_with(SERVER, 53, CLIENT, 40000, &response),
            t + 1_234,
        );
        let expected = DnsTransaction {
            qname: "www.example.org".into(),
            qtype: 1,
            rcode: Some(0),
            answers: Some(2),
            latency_us: Some(1_234),
        };
        let forward = record_of(&mut dns, udp_with(CLIENT, 40000, SERVER, 53, &[]));
        assert_eq!(forward.extras.unwrap().dns, Some(expected.clone()));
        let reverse = record_of(&mut dns, udp_with(SERVER, 53, CLIENT, 40000, &[]));
        assert_eq!(reverse.extras.unwrap().dns, Some(expected));
        assert!(dns.transactions.is_empty() && dns.pending.is_empty());
    }

    #[test]
    fn unanswered_unmatched_and_malformed() {
        let mut dns = DnsAnalyzer::new(settings().dns);
        let t = 1_700_000_000_000_000;
        show(
            &mut dns,
            udp_with(CLIENT, 1, SERVER, 53, &message(1, 0x0100, "a.test", 28, 0)),
            t,
        );
        let alone = record_of(&mut dns, udp_with(CLIENT, 1, SERVER, 53, &[]));
        let transaction = alone.extras.unwrap().dns.unwrap();
        assert_eq!(
            (transaction.qtype, transaction.rcode, transaction.latency_us),
            (28, None, None)
        );
        // A response with another id matches nothing: no latency.
        show(
            &mut dns,
            udp_with(SERVER, 53, CLIENT, 2, &message(9, 0x8183, "b.test", 1, 0)),
            t,
        );
        let unmatched = record_of(&mut dns, udp_with(SERVER, 53, CLIENT, 2, &[]));
        let transaction = unmatched.extras.unwrap().dns.unwrap();
        assert_eq!((transaction.rcode, transaction.latency_us), (Some(3), None));
        assert_eq!(dns.unmatched_responses, 1);
        // Garbage on port 53 is counted and attaches nothing.
        let mut looped = message(1, 0x0100, "x", 1, 0);
        looped.truncate(12);
        looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        show(&mut dns, udp_with(CLIENT, 3, SERVER, 53, &looped), t);
        show(&mut dns, udp_with(CLIENT, 3, SERVER, 53, &[1, 2, 3]), t);
        assert_eq!(dns.malformed, 2);
        assert!(
            record_of(&mut dns, udp_with(CLIENT, 3, SERVER, 53, &[]))
                .extras
                .is_none()
        );
    }

    #[test]
    fn state_is_capped() {
        let mut s = settings().dns;
        s.max_pending = 10;
        s.max_transactions = 10;
        let mut dns = DnsAnalyzer::new(s);
        for port in 0..100 {
            show(
                &mut dns,
                udp_with(
                    CLIENT,
                    port,
                    SERVER,
                    53,
                    &message(port, 0x0100, "q.test", 1, 0),
                ),
                1,
            );
        }
        assert_eq!((dns.pending.len(), dns.transactions.len()), (10, 10));
        assert_eq!(dns.pending.evictions(), 90);
    }
}
