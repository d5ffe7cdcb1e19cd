//! Collector faults, through the `tapflow` binary: a UDP collector that is not there
//! (ICMP port unreachable comes back as ECONNREFUSED) and an IPFIX-over-TCP collector that
//! stops and restarts while `tapflow run` is exporting to it. The probe must keep counting
//! every packet, report the failed sends, reconnect by itself (templates first on the new
//! connection) and not grow its memory while the collector is away.

mod common;
#[path = "../exporter/tests/common/mod.rs"]
#[allow(unused_imports)]
mod decode;

use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{
    generate_pcap, ground_truth, scratch_dir, signal, sum, tapflow, text, write_dpdk_run_config,
};
use decode::{Decoder, Message};

/// The numbers of a collector's row in the final table: records, datagrams, bytes,
/// templates, send errors.
fn collector_row(stdout: &str, name: &str) -> [u64; 5] {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no collector {name:?} in:\n{stdout}"));
    let numbers: Vec<u64> = line[name.len()..]
        .split_whitespace()
        .map(|n| n.replace(',', "").parse().unwrap())
        .collect();
    // records, datagrams, bytes, templates, send errors (send retries follow).
    numbers[..5].try_into().unwrap()
}

/// A loopback UDP port with nothing bound to it.
fn closed_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn an_absent_udp_collector_costs_send_errors_and_nothing_else() {
    let dir = scratch_dir("absent-udp");
    let pcap = generate_pcap(&dir, 2_000, 10, true);
    let address = format!("127.0.0.1:{}", closed_udp_port());
    let out = tapflow()
        .arg("replay")
        .arg(&pcap)
        .args(["--collector", &address, "--source", "file"])
        .output()
        .unwrap();
    assert!(out.status.success(), "replay failed: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);

    let (ip_packets, octets) = sum(&ground_truth(&pcap));
    assert_eq!(
        common::counter(&stdout, "packets received"),
        common::counter(&stdout, "packets in file")
    );
    assert_eq!(
        common::counter(&stdout, "packets in records"),
        ip_packets,
        "{stdout}"
    );
    assert_eq!(
        common::counter(&stdout, "octets in records"),
        octets,
        "{stdout}"
    );
    let [_, datagrams, _, _, send_errors] = collector_row(&stdout, &format!("ipfix/udp {address}"));
    assert!(datagrams > 0 && send_errors > 0, "{stdout}");
}

/// stderr lines as they arrive, each with the time it was read.
type Lines = Arc<Mutex<Vec<(Instant, String)>>>;

fn collect_lines(stream: impl Read + Send + 'static) -> (Lines, JoinHandle<()>) {
    let lines: Lines = Arc::default();
    let sink = lines.clone();
    let thread = std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { return };
            sink.lock().unwrap().push((Instant::now(), line));
        }
    });
    (lines, thread)
}

/// The packet count of the periodic statistics line ("rx 1,234 pkts (...)").
fn rx_packets(line: &str) -> Option<u64> {
    let rest = line.split("rx ").nth(1)?;
    rest.split(" pkts").next()?.replace(',', "").parse().ok()
}

fn accept_within(listener: &TcpListener, limit: Duration) -> TcpStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + limit;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                return stream;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("accept: {e}"),
        }
        assert!(
            Instant::now() < deadline,
            "tapflow did not connect within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One collector-side connection: IPFIX messages framed by the length in their 16-byte
/// header, decoded with a decoder of its own (a collector that knows nothing of earlier
/// connections). Bytes of a message not yet complete wait for the next read.
struct Connection {
    stream: TcpStream,
    decoder: Decoder,
    pending: Vec<u8>,
}

impl Connection {
    fn new(stream: TcpStream) -> Connection {
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Connection {
            stream,
            decoder: Decoder::default(),
            pending: Vec::new(),
        }
    }

    /// The messages that arrive within `period`, or until the peer closes.
    fn read_for(&mut self, period: Duration) -> Vec<Message> {
        let deadline = Instant::now() + period;
        let mut messages = Vec::new();
        let mut buf = [0u8; 65536];
        while Instant::now() < deadline {
            match self.stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("read: {e}"),
            }
            while self.pending.len() >= 16 {
                assert_eq!(&self.pending[..2], &[0, 10], "not an IPFIX message");
                let len = usize::from(u16::from_be_bytes([self.pending[2], self.pending[3]]));
                if self.pending.len() < len {
                    break;
                }
                let message: Vec<u8> = self.pending.drain(..len).collect();
                messages.push(self.decoder.message(&message));
            }
        }
        messages
    }
}

fn data_records(messages: &[Message]) -> usize {
    messages.iter().map(|m| m.data().count()).sum()
}

#[cfg(feature = "dpdk")]
#[test]
fn a_restarting_tcp_collector_gets_a_new_connection_with_templates_first() {
    let dir = scratch_dir("tcp-restart");
    let pcap = generate_pcap(&dir, 300, 20, true);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let config = dir.join("tapflow.toml");
    let prefix = format!("tapflow-test-tcp-restart-{}", std::process::id());
    let collector = format!("address = \"{address}\"\nversion = \"ipfix\"\ntransport = \"tcp\"");
    write_dpdk_run_config(&config, &pcap, &prefix, &collector);

    let mut child = tapflow()
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (log, log_thread) = collect_lines(child.stderr.take().unwrap());
    let mut stdout_pipe = child.stdout.take().unwrap();
    let stdout_thread = std::thread::spawn(move || {
        let mut s = String::new();
        stdout_pipe.read_to_string(&mut s).unwrap();
        s
    });

    // First connection: templates, then flow records (TCP flows end on FIN all along).
    let mut first = Connection::new(accept_within(&listener, Duration::from_secs(30)));
    let before = first.read_for(Duration::from_secs(3));
    assert!(
        before.first().is_some_and(|m| m.templates.contains(&256)),
        "the first message must carry the templates"
    );
    let records_before = data_records(&before);
    assert!(records_before > 0);

    // The collector goes away: the connection closes and nothing listens on the port.
    drop(first);
    drop(listener);
    let down_at = Instant::now();
    let mut rss_while_down = Vec::new();
    while down_at.elapsed() < Duration::from_secs(4) {
        rss_while_down.extend(common::status_kb(pid, "VmRSS"));
        std::thread::sleep(Duration::from_millis(100));
    }
    let up_at = Instant::now();

    // It comes back on the same port: tapflow reconnects and starts with the templates,
    // so a collector that lost its state decodes the very first records.
    let listener = TcpListener::bind(address).unwrap();
    let mut second = Connection::new(accept_within(&listener, Duration::from_secs(40)));
    let after = second.read_for(Duration::from_secs(3));
    assert!(
        after.first().is_some_and(|m| m.templates.contains(&256)),
        "the new connection must start with the templates"
    );
    assert!(data_records(&after) > 0, "no records after the reconnect");

    signal(&child, "TERM");
    let tail = std::thread::spawn(move || data_records(&second.read_for(Duration::from_secs(30))));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "tapflow run did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = stdout_thread.join().unwrap();
    log_thread.join().unwrap();
    let records_tail = tail.join().unwrap();
    let log = log.lock().unwrap().clone();
    let stderr: Vec<&str> = log.iter().map(|(_, l)| l.as_str()).collect();
    assert!(status.success(), "{stdout}\n{}", stderr.join("\n"));

    // Counting went on while the collector was away.
    let rx_while_down: Vec<u64> = log
        .iter()
        .filter(|(at, _)| *at > down_at && *at < up_at)
        .filter_map(|(_, l)| rx_packets(l))
        .collect();
    assert!(
        rx_while_down.len() >= 2 && rx_while_down.last() > rx_while_down.first(),
        "packets were not counted while the collector was down: {rx_while_down:?}"
    );
    // Every packet is still in a record handed to the exporter.
    assert_eq!(
        common::counter(&stdout, "packets in records"),
        common::counter(&stdout, "packets received") - common::counter(&stdout, "not in any flow"),
        "{stdout}"
    );
    // The refused sends are reported; what reached the collector was accepted by the
    // transport (records queued at the moment of the disconnect may be lost with it).
    let [records, _, _, templates, send_errors] =
        collector_row(&stdout, &format!("ipfix/tcp {address}"));
    assert!(send_errors > 0, "{stdout}");
    assert!(templates >= 2, "{stdout}");
    let received = (records_before + data_records(&after) + records_tail) as u64;
    assert!(
        received <= records,
        "{received} received, {records} sent\n{stdout}"
    );
    // No queue grew while the collector was away (the TCP queue is capped at 1 MiB).
    let (low, high) = (
        rss_while_down.iter().min().copied().unwrap(),
        rss_while_down.iter().max().copied().unwrap(),
    );
    assert!(
        high - low <= 8 * 1024,
        "RSS grew from {low} kB to {high} kB while the collector was down"
    );
    eprintln!(
        "tcp restart: {records_before} records before, {} after, {records_tail} at shutdown; \
         {send_errors} send errors; RSS while down {low}..{high} kB",
        data_records(&after)
    );
}
