//! What a valid configuration means: defaults, the EAL command line, worker and mempool
//! sizing, and the `check-config` summary.

use std::net::SocketAddr;
use std::time::Duration;

use tapflow::config::{
    Config, DeviceKind, DpdkLogLevel, ExportVersion, LogLevel, SamplingMode, Transport, WorkerCount,
};

fn parse(text: &str) -> Config {
    Config::parse(text, "test.toml").unwrap_or_else(|e| panic!("{e}"))
}

const MINIMAL: &str = "\
[[port]]
device = \"0000:01:00.0\"
[[collector]]
address = \"127.0.0.1:2055\"
";

#[test]
fn a_kernel_interface_worker_sleeps_when_idle_unless_told_otherwise() {
    let af_packet = MINIMAL.replace("0000:01:00.0", "net_af_packet0,iface=eth1");
    assert_eq!(
        parse(&af_packet).idle_sleep(),
        Some(Duration::from_micros(100))
    );
    let xdp = MINIMAL.replace("0000:01:00.0", "net_af_xdp0,iface=eth1");
    assert_eq!(parse(&xdp).idle_sleep(), Some(Duration::from_micros(100)));
    let spinning = format!("{af_packet}[workers]\nidle_sleep_us = 0\n");
    assert_eq!(parse(&spinning).idle_sleep(), None);
}

#[test]
fn an_af_packet_port_gets_a_64_mb_ring_unless_told_otherwise() {
    let af_packet = MINIMAL.replace("0000:01:00.0", "net_af_packet0,iface=eth1");
    assert_eq!(
        parse(&af_packet).ports[0].kernel_ring_bytes(),
        Some(64 << 20)
    );
    let small = af_packet.replace("iface=eth1\"\n", "iface=eth1\"\nkernel_ring_mb = 8\n");
    assert_eq!(parse(&small).ports[0].kernel_ring_bytes(), Some(8 << 20));
    let xdp = MINIMAL.replace("0000:01:00.0", "net_af_xdp0,iface=eth1");
    assert_eq!(parse(&xdp).ports[0].kernel_ring_bytes(), None);
    assert_eq!(parse(MINIMAL).ports[0].kernel_ring_bytes(), None);
}

#[test]
fn minimal_config_takes_the_documented_defaults() {
    let c = parse(MINIMAL);
    assert!(c.dpdk.hugepages);
    assert_eq!(c.dpdk.memory_mb, 1024);
    assert_eq!(c.dpdk.file_prefix, "tapflow");
    assert_eq!(c.dpdk.lcores, None);
    assert_eq!(c.ports[0].rx_queues, 1);
    assert_eq!(c.ports[0].rx_descriptors, 1024);
    assert!(c.ports[0].promiscuous);
    assert_eq!(c.workers.count, WorkerCount::Auto);
    assert_eq!(c.workers.batch_size, 32);
    // A NIC's worker spins on its queue.
    assert_eq!(c.idle_sleep(), None);
    assert_eq!(c.sampling.mode, SamplingMode::None);
    assert_eq!(c.sampling.seed, None);
    assert_eq!(c.cache.capacity, 1 << 20);
    assert_eq!(c.cache.bucket_size, 16);
    assert_eq!(c.cache.inactive_timeout, 15);
    assert_eq!(c.cache.active_timeout, 1800);
    assert!(c.cache.tcp_end_expiry);
    assert_eq!(c.cache.expiry_budget, 1024);
    assert!(!c.aggregation.protocol_port);
    assert_eq!(c.aggregation.interval, 60);
    let col = &c.collectors[0];
    assert_eq!(col.version, ExportVersion::Ipfix);
    assert_eq!(col.transport, Transport::Udp);
    assert_eq!(col.mtu, 1400);
    assert_eq!(col.template_refresh, 30);
    assert_eq!(col.template_refresh_datagrams, 100);
    assert_eq!(col.pace, 0);
    assert_eq!(col.send_buffer, None);
    assert_eq!(col.source, None);
    assert!(!col.sampling_in_records);
    assert_eq!(col.label(), "127.0.0.1:2055");
    assert_eq!(c.export.observation_domain, 1);
    assert_eq!(c.export.options_interval, 60);
    assert_eq!(c.export.queue_batches, 1024);
    assert_eq!(c.logging.level, LogLevel::Info);
    assert_eq!(c.logging.dpdk_level, DpdkLogLevel::Error);
    assert_eq!(c.stats.interval, 60);
    assert_eq!(
        c.stats.prometheus,
        Some("127.0.0.1:9464".parse::<SocketAddr>().unwrap())
    );
}

#[test]
fn every_value_is_read() {
    let c = parse(
        "\
[dpdk]
lcores = \"2-4, 6\"
main_lcore = 2
hugepages = false
memory_mb = 512
mempool_size = 65535
mempool_cache = 128
file_prefix = \"probe-b\"
eal_args = [\"--iova-mode=va\"]

[[port]]
device = \"net_pcap0,rx_pcap=/tmp/a.pcap\"
name = \"replay\"
rx_queues = 1
rx_descriptors = 512
promiscuous = false

[[port]]
device = \"0000:5e:00.1\"
rx_queues = 2

[workers]
count = 3
batch_size = 16
idle_sleep_us = 250

[sampling]
mode = \"random:250\"
seed = 99

[cache]
capacity = 5000
bucket_size = 8
inactive_timeout = 5
active_timeout = 120
tcp_end_expiry = false
expiry_budget = 64

[aggregation]
protocol_port = true
interval = 30

[[collector]]
address = \"[::1]:4739\"
name = \"v6\"
version = \"IPFIX\"
transport = \"tcp\"
mtu = 9000
template_refresh = 0
template_refresh_datagrams = 0
pace = 500
send_buffer = 1048576
source = \"::1\"
sampling_in_records = true

[export]
observation_domain = 4000000000
options_interval = 0
queue_batches = 7

[logging]
level = \"debug\"
dpdk_level = \"warning\"

[stats]
interval = 0
prometheus = \"[::1]:9100\"
",
    );
    assert_eq!(c.dpdk.main_lcore, Some(2));
    assert_eq!(c.ports[0].label(), "replay");
    assert_eq!(c.ports[0].kind(), Some(DeviceKind::Vdev));
    assert_eq!(c.ports[0].device_name(), "net_pcap0");
    assert_eq!(c.ports[0].device_args(), "rx_pcap=/tmp/a.pcap");
    assert!(!c.ports[0].promiscuous);
    assert_eq!(c.ports[1].kind(), Some(DeviceKind::Pci));
    assert_eq!(c.ports[1].label(), "0000:5e:00.1");
    assert_eq!(c.workers.count, WorkerCount::Fixed(3));
    assert_eq!(c.worker_count(), 3);
    assert_eq!(c.idle_sleep(), Some(Duration::from_micros(250)));
    assert_eq!(c.sampling.mode, SamplingMode::Random(250));
    assert_eq!(c.sampling.mode.interval(), 250);
    assert_eq!(c.sampling.seed, Some(99));
    assert_eq!(c.cache.bucket_size, 8);
    assert!(!c.cache.tcp_end_expiry);
    assert!(c.aggregation.protocol_port);
    let col = &c.collectors[0];
    assert_eq!(col.version, ExportVersion::Ipfix);
    assert_eq!(col.transport, Transport::Tcp);
    assert_eq!(col.label(), "v6");
    assert_eq!(col.resolve().unwrap(), "[::1]:4739".parse().unwrap());
    assert_eq!(col.source_addr(), Ok(Some("[::1]:0".parse().unwrap())));
    assert_eq!(col.send_buffer, Some(1 << 20));
    assert_eq!(c.export.observation_domain, 4_000_000_000);
    assert_eq!(c.logging.level.to_level_filter(), log::LevelFilter::Debug);
    assert_eq!(c.logging.dpdk_level.number(), 5);
    assert_eq!(c.stats.prometheus, Some("[::1]:9100".parse().unwrap()));
    assert_eq!(c.mempool_size(), 65535);

    assert_eq!(
        c.eal_args(),
        [
            "-l",
            "2-4,6",
            "--main-lcore=2",
            "--no-huge",
            "-m",
            "512",
            "--file-prefix=probe-b",
            "--log-level=5",
            "-a",
            "0000:5e:00.1",
            "--vdev=net_pcap0,rx_pcap=/tmp/a.pcap",
            "--iova-mode=va",
        ]
    );
}

#[test]
fn eal_args_for_pci_ports_use_hugepages_and_allow_each_nic() {
    let c = parse(
        "[[port]]\ndevice = \"0000:01:00.0\"\n[[port]]\ndevice = \"01:00.1,rxq_cqe_comp_en=0\"\n\
         [[collector]]\naddress = \"127.0.0.1:2055\"\n[dpdk]\nmemory_mb = 0\n",
    );
    let args = c.eal_args();
    assert_eq!(
        args,
        [
            "--file-prefix=tapflow",
            "--log-level=4",
            "-a",
            "0000:01:00.0",
            "-a",
            "01:00.1,rxq_cqe_comp_en=0",
        ]
    );
}

#[test]
fn prometheus_can_be_switched_off() {
    for off in ["\"\"", "false"] {
        let c = parse(&format!("{MINIMAL}[stats]\nprometheus = {off}\n"));
        assert_eq!(c.stats.prometheus, None, "{off}");
    }
    let c = parse(&format!("{MINIMAL}[stats]\nprometheus = true\n"));
    assert_eq!(c.stats.prometheus, Some("127.0.0.1:9464".parse().unwrap()));
}

#[test]
fn sampling_modes_round_trip_through_their_text() {
    for text in ["none", "deterministic:1", "random:100", "hash:4294967295"] {
        let c = parse(&format!("{MINIMAL}[sampling]\nmode = \"{text}\"\n"));
        assert_eq!(c.sampling.mode.to_string(), text);
    }
    assert_eq!("hash:7".parse::<SamplingMode>(), Ok(SamplingMode::Hash(7)));
    assert!("hash:4294967296".parse::<SamplingMode>().is_err());
    assert!("deterministic:".parse::<SamplingMode>().is_err());
    assert!("random:-1".parse::<SamplingMode>().is_err());
}

#[test]
fn auto_workers_follow_the_queues() {
    let c = parse(
        "[[port]]\ndevice = \"0000:01:00.0\"\nrx_queues = 4\n\
         [[port]]\ndevice = \"net_af_xdp0,iface=eth2,queue_count=2\"\nrx_queues = 2\n\
         [[collector]]\naddress = \"127.0.0.1:2055\"\n",
    );
    assert_eq!(c.total_rx_queues(), 6);
    assert_eq!(c.worker_count(), 6);
    assert_eq!(c.total_rx_descriptors(), 6 * 1024);
}

#[test]
fn automatic_mempool_holds_twice_the_rings_and_caches() {
    for (queues, descriptors, cache) in [(1u64, 1024u64, 256u64), (8, 4096, 512), (3, 100, 0)] {
        let c = parse(&format!(
            "[dpdk]\nmempool_cache = {cache}\n[[port]]\ndevice = \"0000:01:00.0\"\n\
             rx_queues = {queues}\nrx_descriptors = {descriptors}\n\
             [[collector]]\naddress = \"127.0.0.1:2055\"\n"
        ));
        let size = u64::from(c.mempool_size());
        let in_use = queues * descriptors + queues * 32 + (queues + 1) * cache;
        assert!(size >= 2 * in_use, "{size} for {in_use}");
        assert!(size >= 8191);
        assert!((size + 1).is_power_of_two(), "{size} is not 2^k - 1");
        // Not wastefully large: the next smaller 2^k - 1 would not do.
        assert!(size / 2 < (2 * in_use).max(8191), "{size} for {in_use}");
    }
}

#[test]
fn summary_lists_ports_workers_cache_and_collectors_aligned() {
    let c = parse(
        "[[port]]\ndevice = \"0000:01:00.0\"\nrx_queues = 2\n\
         [[port]]\ndevice = \"net_af_packet0,iface=eth2\"\nname = \"lab\"\n\
         [[collector]]\naddress = \"192.0.2.1:2055\"\nversion = \"v5\"\n\
         [[collector]]\naddress = \"192.0.2.2:4739\"\nname = \"ipfix\"\n",
    );
    let text = c.describe();
    let lines: Vec<&str> = text.lines().collect();
    let value_column = lines[0].find("0000:01:00.0").unwrap();
    for line in &lines {
        // Every value starts in the same column; continuation lines leave the label blank.
        assert!(line.len() > value_column, "{line}");
        assert!(
            !line[value_column..].starts_with(' '),
            "misaligned: {line:?}"
        );
        assert!(line[..value_column].ends_with(' '), "misaligned: {line:?}");
    }
    let labelled = |label: &str| {
        lines
            .iter()
            .position(|l| l.split_whitespace().next() == Some(label))
            .unwrap_or_else(|| panic!("no {label} line in\n{text}"))
    };
    let ports = labelled("ports");
    assert!(
        lines[ports].contains("0000:01:00.0 (PCI): 2 rx queues"),
        "{text}"
    );
    assert!(
        lines[ports + 1].contains("lab = net_af_packet0,iface=eth2 (vdev)"),
        "{text}"
    );
    assert!(
        lines[labelled("workers")].contains("3 (auto: one per rx queue)"),
        "{text}"
    );
    assert!(lines[labelled("cache")].contains("1048576 flows per worker (3145728 in all)"));
    let collectors = labelled("collectors");
    assert!(
        lines[collectors].contains("192.0.2.1:2055 v5 over udp"),
        "{text}"
    );
    assert!(
        !lines[collectors].contains("templates"),
        "v5 has no templates: {text}"
    );
    assert!(lines[collectors + 1].contains("ipfix = 192.0.2.2:4739 ipfix over udp"));
    assert!(
        lines[labelled("eal")].contains("-a 0000:01:00.0 --vdev=net_pcap_af_packet0,rx_iface=eth2")
    );
    assert!(lines[labelled("stats")].contains("http://127.0.0.1:9464/metrics"));
}
