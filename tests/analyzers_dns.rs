//! The DNS analyzer against a real resolver: dnsmasq runs in a network namespace this test
//! creates, `dig` in a second one asks it for names that get A, AAAA, NODATA, NXDOMAIN and
//! SERVFAIL answers, dumpcap captures the exchange on the client's veth, and `tapflow
//! replay --records-json` of that capture must show, on the records of both directions of
//! each transaction, the name, type, response code and answer count tshark's DNS dissector
//! reads, and a latency within 1 ms of tshark's `dns.time`.
//!
//! The same replay exported as IPFIX to a socket must carry the same figures in tapflow's
//! DNS elements, as ipfixDump (libfixbuf) decodes them with docs/tapflow-ipfix.xml, and
//! exported as NetFlow v9 the same names, types, codes and counts in nProbe's DNS fields,
//! as tshark's cflow dissector reads them.
//!
//! SERVFAIL comes from dnsmasq's own DNSSEC validation: the resolver trusts the root key
//! but its upstream (a second dnsmasq) cannot prove anything, so validation of a forwarded
//! answer is abandoned and the client gets SERVFAIL.

mod common;

use std::collections::HashMap;
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{have, scratch_dir, signal, tapflow, text};

const SERVER: &str = "10.53.0.2";
const CLIENT: &str = "10.53.0.1";
/// The root zone's KSK-2017 DS record: any trust anchor the upstream cannot match will do.
const ROOT_DS: &str =
    ".,20326,8,2,E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D";

/// The questions and what dnsmasq is configured to answer (checked against tshark, not
/// against this list).
const QUERIES: &[(&str, &str)] = &[
    ("www.tapflow.test", "A"),
    ("www.tapflow.test", "AAAA"),
    ("multi.tapflow.test", "A"),
    ("www.tapflow.test", "MX"),
    ("nx.tapflow.test", "A"),
    ("nx.tapflow.test", "AAAA"),
    ("host.fail.test", "A"),
];

/// A network namespace this test created, deleted on drop.
struct Netns(String);

impl Netns {
    fn add(name: String) -> Option<Netns> {
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Netns(name))
    }

    fn exec(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.0, program]);
        cmd
    }

    fn ip(&self, args: &str) {
        let status = Command::new("ip")
            .arg("-n")
            .arg(&self.0)
            .args(args.split_whitespace())
            .status()
            .unwrap();
        assert!(status.success(), "ip -n {} {args}", self.0);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A process this test started, stopped by its PID on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn dnsmasq(ns: &Netns, dir: &Path, name: &str, args: &[&str]) -> Guard {
    let child = ns
        .exec("dnsmasq")
        .args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            "--bind-interfaces",
            &format!("--listen-address={SERVER}"),
            &format!("--pid-file={}", dir.join(format!("{name}.pid")).display()),
            &format!(
                "--log-facility={}",
                dir.join(format!("{name}.log")).display()
            ),
            "--log-queries",
        ])
        .args(args)
        .spawn()
        .unwrap();
    Guard(child)
}

fn dig(ns: &Netns, name: &str, qtype: &str) -> String {
    let out = ns
        .exec("dig")
        .args([&format!("@{SERVER}"), "+tries=1", "+time=5", name, qtype])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One DNS response as tshark dissects it.
#[derive(Debug)]
struct Dissected {
    client_port: u16,
    qname: String,
    qtype: u64,
    rcode: u64,
    answers: u64,
    latency_us: f64,
}

fn tshark_responses(capture: &Path) -> Vec<Dissected> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(capture)
        .args(["-Y", "dns.flags.response == 1", "-T", "fields"])
        .args([
            "-E",
            "separator=/t",
            "-e",
            "udp.dstport",
            "-e",
            "dns.qry.name",
        ])
        .args([
            "-e",
            "dns.qry.type",
            "-e",
            "dns.flags.rcode",
            "-e",
            "dns.count.answers",
        ])
        .args(["-e", "dns.time"])
        .output()
        .unwrap();
    assert!(out.status.success(), "tshark: {}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            assert_eq!(f.len(), 6, "{line}");
            Dissected {
                client_port: f[0].parse().unwrap(),
                qname: f[1].to_string(),
                qtype: f[2].parse().unwrap(),
                rcode: f[3].parse().unwrap(),
                answers: f[4].parse().unwrap(),
                latency_us: f[5].parse::<f64>().unwrap() * 1e6,
            }
        })
        .collect()
}

#[test]
fn dns_transactions_from_dnsmasq_equal_tsharks_reading() {
    for tool in ["dnsmasq", "dig", "dumpcap", "tshark", "ipfixDump"] {
        assert!(have(tool), "{tool} is missing: run scripts/setup.sh");
    }
    let pid = std::process::id();
    let (Some(client), Some(server)) = (
        Netns::add(format!("tf-dnsc-{pid}")),
        Netns::add(format!("tf-dnss-{pid}")),
    ) else {
        eprintln!("SKIP: cannot create a network namespace here (needs root)");
        return;
    };
    let status = Command::new("ip")
        .args(["link", "add", "tfdc0", "netns", &client.0, "type", "veth"])
        .args(["peer", "name", "tfds0", "netns", &server.0])
        .status()
        .unwrap();
    assert!(status.success());
    client.ip(&format!("addr add {CLIENT}/24 dev tfdc0"));
    server.ip(&format!("addr add {SERVER}/24 dev tfds0"));
    for (ns, dev) in [(&client, "tfdc0"), (&server, "tfds0")] {
        ns.ip(&format!("link set {dev} up"));
        ns.ip("link set lo up");
    }

    let dir = scratch_dir("dns-dnsmasq");
    let _upstream = dnsmasq(
        &server,
        &dir,
        "upstream",
        &[
            "--port=5300",
            "--local=/fail.test/",
            "--host-record=host.fail.test,10.9.9.9",
        ],
    );
    let _resolver = dnsmasq(
        &server,
        &dir,
        "resolver",
        &[
            "--host-record=www.tapflow.test,10.1.2.3,fd00::3",
            "--host-record=multi.tapflow.test,10.1.2.4",
            "--host-record=multi.tapflow.test,10.1.2.5",
            "--local=/tapflow.test/",
            &format!("--server={SERVER}#5300"),
            "--dnssec",
            "--dnssec-check-unsigned",
            &format!("--trust-anchor={ROOT_DS}"),
        ],
    );
    // Until the resolver answers (outside the capture).
    let ready = (0..50).any(|_| {
        let answer = dig(&client, "www.tapflow.test", "A");
        answer.contains("10.1.2.3") || {
            std::thread::sleep(Duration::from_millis(100));
            false
        }
    });
    assert!(ready, "dnsmasq never answered");

    let capture = dir.join("dns.pcap");
    // dumpcap stops by itself after every query and response: stopping it by a signal
    // could lose the packets still in the kernel's ring.
    let packets = 2 * QUERIES.len();
    let mut dumpcap = Guard(
        client
            .exec("dumpcap")
            .args(["-q", "-P", "-i", "tfdc0", "-f", "udp port 53"])
            .args(["-c", &packets.to_string(), "-w"])
            .arg(&capture)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // dumpcap writes the file header once it captures.
    let capturing = (0..100).any(|_| {
        std::fs::metadata(&capture).is_ok_and(|m| m.len() >= 24) || {
            std::thread::sleep(Duration::from_millis(50));
            false
        }
    });
    assert!(capturing, "dumpcap did not start");
    for (name, qtype) in QUERIES {
        let answer = dig(&client, name, qtype);
        assert!(
            answer.contains("status: "),
            "no answer to {name} {qtype}: {answer}"
        );
    }
    let stopped = (0..200).any(|_| {
        dumpcap.0.try_wait().unwrap().is_some() || {
            std::thread::sleep(Duration::from_millis(50));
            false
        }
    });
    if !stopped {
        signal(&dumpcap.0, "INT");
    }
    dumpcap.0.wait().unwrap();

    let dissected = tshark_responses(&capture);
    assert_eq!(dissected.len(), QUERIES.len(), "{dissected:?}");
    let rcodes: Vec<u64> = dissected.iter().map(|d| d.rcode).collect();
    for rcode in [0, 2, 3] {
        assert!(
            rcodes.contains(&rcode),
            "no rcode {rcode} among {dissected:?}"
        );
    }

    let records_path = dir.join("records.jsonl");
    let config = dir.join("dns.toml");
    std::fs::write(&config, "[analyzers.dns]\ntrigger = \"always\"\n").unwrap();
    let out = tapflow()
        .arg("replay")
        .arg(&capture)
        .args(["--source", "file", "--config", config.to_str().unwrap()])
        .args(["--records-json", records_path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let records: Vec<serde_json::Value> = std::fs::read_to_string(&records_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Records by (source port, destination port).
    let by_ports: HashMap<(u64, u64), &serde_json::Value> = records
        .iter()
        .map(|r| {
            (
                (r["sport"].as_u64().unwrap(), r["dport"].as_u64().unwrap()),
                r,
            )
        })
        .collect();
    for d in &dissected {
        let port = u64::from(d.client_port);
        for ports in [(port, 53), (53, port)] {
            let record = by_ports
                .get(&ports)
                .unwrap_or_else(|| panic!("no record for ports {ports:?}: {records:?}"));
            let what = format!("{d:?} vs {record}");
            assert_eq!(record["dns_qname"], d.qname.as_str(), "{what}");
            assert_eq!(record["dns_qtype"], d.qtype, "{what}");
            assert_eq!(record["dns_rcode"], d.rcode, "{what}");
            assert_eq!(record["dns_answers"], d.answers, "{what}");
            let latency = record["dns_latency_us"].as_f64().unwrap();
            assert!((latency - d.latency_us).abs() <= 1_000.0, "{what}");
        }
    }

    let v9 = v9_records(&capture, &config, &dir);
    assert_eq!(v9.len(), 2 * QUERIES.len(), "{v9:?}");
    for d in &dissected {
        for ports in [(d.client_port, 53), (53, d.client_port)] {
            let record = v9
                .iter()
                .find(|r| (r.0, r.1) == ports)
                .unwrap_or_else(|| panic!("no v9 record for {ports:?}: {v9:?}"));
            assert_eq!(
                (record.2.as_str(), record.3, record.4, record.5),
                (d.qname.as_str(), d.qtype, d.rcode, d.answers),
                "{d:?}"
            );
        }
    }

    let ipfix = ipfix_records(&capture, &config, &dir);
    let with_dns = ipfix.iter().filter(|r| r.contains_key("dnsQueryName"));
    assert_eq!(with_dns.count(), 2 * QUERIES.len(), "{ipfix:?}");
    for d in &dissected {
        let port = d.client_port.to_string();
        for (sport, dport) in [(port.as_str(), "53"), ("53", port.as_str())] {
            let record = ipfix
                .iter()
                .find(|r| {
                    r["sourceTransportPort"] == sport && r["destinationTransportPort"] == dport
                })
                .unwrap_or_else(|| panic!("no IPFIX record for {sport} -> {dport}: {ipfix:?}"));
            let what = format!("{d:?} vs {record:?}");
            // ipfixDump shows a string as "(len: N) value".
            let name = record["dnsQueryName"].split_once(") ").map(|(_, n)| n);
            assert_eq!(name, Some(d.qname.as_str()), "{what}");
            let number = |k: &str| record[k].parse::<u64>().unwrap();
            assert_eq!(number("dnsQueryType"), d.qtype, "{what}");
            assert_eq!(number("dnsResponseCode"), d.rcode, "{what}");
            assert_eq!(number("dnsAnswerCount"), d.answers, "{what}");
            let latency = number("dnsLatencyMicroseconds") as f64;
            assert!((latency - d.latency_us).abs() <= 1_000.0, "{what}");
        }
    }
}

/// Replays `capture` into a collector socket in `format` and returns the datagrams.
fn export(capture: &Path, config: &Path, format: &str) -> Vec<Vec<u8>> {
    let collector = UdpSocket::bind("127.0.0.1:0").unwrap();
    let out = tapflow()
        .arg("replay")
        .arg(capture)
        .args(["--source", "file", "--config", config.to_str().unwrap()])
        .args(["--export", format, "--collector"])
        .arg(collector.local_addr().unwrap().to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // The replay has ended: every datagram is in the socket's buffer.
    collector.set_nonblocking(true).unwrap();
    let mut datagrams = Vec::new();
    let mut buf = vec![0; 65_536];
    while let Ok(n) = collector.recv(&mut buf) {
        datagrams.push(buf[..n].to_vec());
    }
    datagrams
}

/// One v9 record's ports and nProbe DNS fields as tshark reads them: source port,
/// destination port, name, type, response code, answers.
type V9Dns = (u16, u16, String, u64, u64, u64);

/// Replays `capture` as NetFlow v9 and reads the records' DNS fields with tshark.
fn v9_records(capture: &Path, config: &Path, dir: &Path) -> Vec<V9Dns> {
    let pcap = dir.join("export-v9.pcap");
    let file = std::io::BufWriter::new(std::fs::File::create(&pcap).unwrap());
    let mut writer = probe::pcap::PcapWriter::new(file).unwrap();
    for (i, d) in export(capture, config, "v9").iter().enumerate() {
        let mut frame = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([192, 0, 2, 1], [192, 0, 2, 2], 64)
            .udp(50_000, 2055)
            .write(&mut frame, d)
            .unwrap();
        writer
            .write_packet(1_000_000 * (i as u64 + 1), &frame)
            .unwrap();
    }
    std::io::Write::flush(&mut writer.into_inner().unwrap()).unwrap();
    let out = Command::new("tshark")
        .arg("-r")
        .arg(&pcap)
        .args(["-d", "udp.port==2055,cflow", "-T", "fields"])
        .args(["-e", "cflow.srcport", "-e", "cflow.dstport"])
        .args(["-e", "cflow.pie.ntop.dns_query"])
        .args(["-e", "cflow.pie.ntop.dns_query_type"])
        .args(["-e", "cflow.pie.ntop.dns_ret_code"])
        .args(["-e", "cflow.pie.ntop.dns_num_answers"])
        .output()
        .unwrap();
    assert!(out.status.success(), "tshark: {}", text(&out));
    // One line a datagram; each field lists its records' values, comma-separated, in
    // record order (every record here has every field).
    let mut records = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let columns: Vec<Vec<&str>> = line.split('\t').map(|c| c.split(',').collect()).collect();
        if columns.len() != 6 || columns[2] == [""] {
            continue;
        }
        assert!(
            columns.iter().all(|c| c.len() == columns[0].len()),
            "{line}"
        );
        let value = |column: usize, i: usize| columns[column][i];
        records.extend((0..columns[0].len()).map(|i| {
            (
                value(0, i).parse().unwrap(),
                value(1, i).parse().unwrap(),
                value(2, i).to_string(),
                value(3, i).parse().unwrap(),
                value(4, i).parse().unwrap(),
                value(5, i).parse().unwrap(),
            )
        }));
    }
    records
}

/// Replays `capture` into an IPFIX collector socket and returns the flow records as
/// ipfixDump reads them, with tapflow's element file: element name to value.
fn ipfix_records(capture: &Path, config: &Path, dir: &Path) -> Vec<HashMap<String, String>> {
    let file = dir.join("export.ipfix");
    std::fs::write(&file, export(capture, config, "ipfix").concat()).unwrap();
    let elements = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/tapflow-ipfix.xml");
    let out = Command::new("ipfixDump")
        .arg("--in")
        .arg(&file)
        .args(["--element-file", elements])
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "ipfixDump: {}",
        text(&out)
    );
    let mut records = Vec::new();
    let mut record: Option<HashMap<String, String>> = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if line.starts_with("--- ") {
            records.extend(record.take());
            record = line.starts_with("--- data record").then(HashMap::new);
        } else if let (Some(fields), Some((name, value))) =
            (record.as_mut(), line.trim().split_once(" : "))
        {
            // "(32473/20)                  dnsQueryName : (len: 15) nx.tapflow.test"
            let name = name.split_whitespace().last().unwrap_or_default();
            fields.insert(name.to_string(), value.to_string());
        }
    }
    records.extend(record);
    records.retain(|r| r.contains_key("sourceTransportPort"));
    records
}
