//! Every kind of configuration mistake gives one clear message that names the file, the
//! line and column, and the key. Expected lines are found in the test input itself, by
//! looking for the offending text, not taken from the implementation.

use std::path::Path;

use tapflow::config::{Config, ConfigError, Diagnostic, Location};

/// A valid base: one port, one collector, nothing else.
const BASE: &str = "\
[[port]]
device = \"0000:01:00.0\"

[[collector]]
address = \"127.0.0.1:2055\"
";

/// The 1-based line of the only line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    let lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(lines.len(), 1, "{needle:?} should be on exactly one line");
    lines[0]
}

/// The 1-based column where `needle` starts on its line.
fn column_of(text: &str, needle: &str) -> usize {
    let line = text.lines().find(|l| l.contains(needle)).unwrap();
    line[..line.find(needle).unwrap()].chars().count() + 1
}

/// Parses `text` as `tapflow.toml`, expecting exactly one problem; checks the rendered
/// message is one line starting `tapflow.toml:LINE:COL: ` and returns the diagnostic.
fn one_error(text: &str) -> (Diagnostic, String) {
    let err = Config::parse(text, "tapflow.toml").expect_err("accepted a bad config");
    let rendered = err.to_string();
    assert_eq!(err.diagnostics().len(), 1, "{rendered}");
    assert_eq!(rendered.lines().count(), 1, "{rendered}");
    (err.diagnostics()[0].clone(), rendered)
}

fn at(line: usize, column: usize) -> Option<Location> {
    Some(Location { line, column })
}

#[test]
fn base_config_is_valid() {
    let config = Config::parse(BASE, "tapflow.toml").unwrap();
    assert_eq!(config.ports[0].device, "0000:01:00.0");
    assert_eq!(config.collectors[0].address, "127.0.0.1:2055");
}

#[test]
fn toml_syntax_error_points_at_the_line() {
    let text = format!("{BASE}\n[cache\ncapacity = 10\n");
    let (d, rendered) = one_error(&text);
    let line = line_of(&text, "[cache");
    assert_eq!(d.location.unwrap().line, line);
    assert!(
        rendered.starts_with(&format!("tapflow.toml:{line}:")),
        "{rendered}"
    );
    assert!(d.message.starts_with("invalid TOML: "), "{rendered}");
    assert_eq!(d.key, None);

    let text = format!("{BASE}\n[cache]\ncapacity = 10 10\n");
    let (d, _) = one_error(&text);
    assert_eq!(d.location.unwrap().line, line_of(&text, "capacity = 10 10"));
}

#[test]
fn duplicate_key_names_the_key() {
    let text = format!("{BASE}\n[cache]\ncapacity = 10\ncapacity = 20\n");
    let (d, rendered) = one_error(&text);
    assert_eq!(d.location, at(line_of(&text, "capacity = 20"), 1));
    assert!(d.message.contains("duplicate key `capacity`"), "{rendered}");
}

#[test]
fn wrong_type_names_key_table_and_expected_type() {
    let text = format!("{BASE}\n[cache]\ncapacity = 4096\ninactive_timeout = \"15\"\n");
    let (d, rendered) = one_error(&text);
    let line = line_of(&text, "inactive_timeout");
    let column = column_of(&text, "\"15\"");
    assert_eq!(d.location, at(line, column));
    assert_eq!(d.key.as_deref(), Some("cache.inactive_timeout"));
    assert_eq!(
        rendered,
        format!(
            "tapflow.toml:{line}:{column}: `inactive_timeout` in [cache]: expected a whole \
             number, found string \"15\""
        )
    );
}

#[test]
fn wrong_types_elsewhere_are_located_too() {
    let cases = [
        (
            "[dpdk]\nhugepages = \"no\"\n",
            "hugepages",
            "dpdk.hugepages",
            "true or false",
        ),
        (
            "[dpdk]\neal_args = \"--iova-mode=va\"\n",
            "eal_args",
            "dpdk.eal_args",
            "an array",
        ),
        (
            "[workers]\ncount = 2.5\n",
            "count",
            "workers.count",
            "a number of workers",
        ),
        (
            "[[port]]\ndevice = 7\n",
            "device = 7",
            "port[1].device",
            "a string",
        ),
        (
            "[stats]\nprometheus = 9464\n",
            "prometheus",
            "stats.prometheus",
            "listen address",
        ),
        (
            "[export]\nobservation_domain = -1\n",
            "observation_domain",
            "export.observation_domain",
            "-1 is negative",
        ),
        (
            "[[port]]\ndevice = \"0000:02:00.0\"\nrx_queues = 70000\n",
            "70000",
            "port[1].rx_queues",
            "70000 is too large",
        ),
        (
            "[cache]\nactive_timeout = 1e3\n",
            "1e3",
            "cache.active_timeout",
            "whole number",
        ),
    ];
    for (extra, needle, key, words) in cases {
        let text = format!("{BASE}\n{extra}");
        let (d, rendered) = one_error(&text);
        assert_eq!(
            d.location.unwrap().line,
            line_of(&text, needle),
            "{rendered}"
        );
        assert_eq!(d.key.as_deref(), Some(key), "{rendered}");
        assert!(rendered.contains(words), "{rendered} lacks {words:?}");
    }
    // A top-level key must come before the first table header.
    let text = format!("dpdk = 3\n{BASE}");
    let (d, rendered) = one_error(&text);
    assert_eq!(d.location, at(1, 8), "{rendered}");
    assert_eq!(d.key.as_deref(), Some("dpdk"));
    assert!(
        rendered.contains("`dpdk`: expected a table, found integer `3`"),
        "{rendered}"
    );
}

#[test]
fn unknown_key_lists_the_accepted_keys() {
    let text = format!("{BASE}\n[cache]\ncapacity = 4096\ncapactiy = 5\n");
    let (d, rendered) = one_error(&text);
    let line = line_of(&text, "capactiy");
    assert_eq!(
        rendered,
        format!(
            "tapflow.toml:{line}:1: unknown key `capactiy` in [cache] (did you mean \
             `capacity`?); expected one of: capacity, bucket_size, inactive_timeout, \
             active_timeout, tcp_end_expiry, expiry_budget"
        )
    );
    assert_eq!(d.key.as_deref(), Some("cache.capactiy"));
}

#[test]
fn an_mtu_too_small_for_the_dns_templates_is_refused_at_its_line() {
    let text = "[[port]]\ndevice = \"0000:01:00.0\"\n\n[[collector]]\naddress = \"127.0.0.1:4739\"\n\
                mtu = 600\n\n[analyzers.dns]\ntrigger = \"always\"\n";
    let (d, rendered) = one_error(text);
    assert_eq!(d.location, at(line_of(text, "mtu = 600"), 7));
    assert_eq!(d.key.as_deref(), Some("collector[0].mtu"));
    assert!(
        rendered.contains("600 is too small for ipfix with this configuration: at least"),
        "{rendered}"
    );
    // Without the DNS templates the same MTU is fine.
    let without = text.replace("trigger = \"always\"", "trigger = \"off\"");
    assert!(Config::parse(&without, "tapflow.toml").is_ok());
}

#[test]
fn unknown_key_in_sampling_adaptive_names_its_table() {
    let text = format!("{BASE}\n[sampling.adaptive]\nenabled = true\nbudget = 0.4\n");
    let (d, rendered) = one_error(&text);
    assert_eq!(d.location, at(line_of(&text, "budget ="), 1));
    assert!(
        rendered
            .contains("unknown key `budget` in [sampling.adaptive] (did you mean `budget_busy`?)"),
        "{rendered}"
    );
    assert_eq!(d.key.as_deref(), Some("sampling.adaptive.budget"));
}

#[test]
fn unknown_key_in_the_second_collector_names_that_collector() {
    let text = format!("{BASE}\n[[collector]]\naddress = \"127.0.0.1:4739\"\nmtus = 1400\n");
    let (d, rendered) = one_error(&text);
    assert_eq!(d.location, at(line_of(&text, "mtus"), 1));
    assert!(
        rendered.contains("unknown key `mtus` in [[collector]] #2 (did you mean `mtu`?)"),
        "{rendered}"
    );
    assert_eq!(d.key.as_deref(), Some("collector[1].mtus"));
}

#[test]
fn unknown_table_is_an_unknown_top_level_key() {
    let text = format!("{BASE}\n[cahce]\ncapacity = 5\n");
    let (d, rendered) = one_error(&text);
    assert_eq!(d.location.unwrap().line, line_of(&text, "[cahce]"));
    assert!(
        rendered.contains("unknown key `cahce` at the top level (did you mean `cache`?)"),
        "{rendered}"
    );
    assert!(
        rendered.contains("expected one of: dpdk, port,"),
        "{rendered}"
    );
}

#[test]
fn a_single_port_table_instead_of_an_array_is_explained() {
    let text = "port = { device = \"0000:01:00.0\" }\n[[collector]]\naddress = \"127.0.0.1:1\"\n";
    let (d, rendered) = one_error(text);
    assert_eq!(d.location.unwrap().line, 1);
    assert!(
        rendered.contains("expected an array, found a table"),
        "{rendered}"
    );
    assert!(rendered.contains("[[port]]"), "{rendered}");
}

#[test]
fn missing_file_says_cannot_read() {
    let path = Path::new("/nonexistent-tapflow-dir/tapflow.toml");
    let err = Config::load(path).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert_eq!(
        err.to_string(),
        "cannot read /nonexistent-tapflow-dir/tapflow.toml: No such file or directory"
    );
}

#[test]
fn load_names_the_file_in_every_message() {
    let dir = std::env::temp_dir().join(format!("tapflow-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    let text = format!("{BASE}\n[cache]\ninactive_timeout = 0\n");
    std::fs::write(&path, &text).unwrap();
    let err = Config::load(&path).unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    let line = line_of(&text, "inactive_timeout");
    let column = column_of(&text, "inactive_timeout = 0") + "inactive_timeout = ".len();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:{line}:{column}: `inactive_timeout` in [cache]: 0 s is out of range (1 to \
             604800 s)",
            path.display()
        )
    );
}

#[test]
fn out_of_range_values_are_located_at_their_value() {
    // (text added to BASE, text on the offending line, key, words in the message)
    let cases = [
        (
            "[cache]\ninactive_timeout = 0\n",
            "inactive_timeout",
            "cache.inactive_timeout",
            "out of range (1 to 604800 s)",
        ),
        (
            "[cache]\nactive_timeout = 0\n",
            "active_timeout",
            "cache.active_timeout",
            "out of range",
        ),
        (
            "[cache]\nbucket_size = 12\n",
            "bucket_size",
            "cache.bucket_size",
            "use 8 or 16",
        ),
        (
            "[cache]\ncapacity = 0\n",
            "capacity",
            "cache.capacity",
            "out of range (1 to 2147483648 entries)",
        ),
        (
            "[cache]\nexpiry_budget = 0\n",
            "expiry_budget",
            "cache.expiry_budget",
            "out of range",
        ),
        (
            "[sampling]\nmode = \"random:0\"\n",
            "random:0",
            "sampling.mode",
            "N must be at least 1",
        ),
        (
            "[sampling]\nmode = \"sometimes\"\n",
            "sometimes",
            "sampling.mode",
            "unknown mode",
        ),
        (
            "[sampling]\nmode = \"none:3\"\n",
            "none:3",
            "sampling.mode",
            "takes no N",
        ),
        (
            "[sampling]\nmode = \"hash:x\"\n",
            "hash:x",
            "sampling.mode",
            "not a whole number",
        ),
        (
            "[workers]\ncount = 0\n",
            "count",
            "workers.count",
            "at least 1",
        ),
        (
            "[workers]\ncount = 2\n",
            "count",
            "workers.count",
            "only 1 receive queues",
        ),
        (
            "[workers]\ncount = \"many\"\n",
            "many",
            "workers.count",
            "use a number or \"auto\"",
        ),
        (
            "[workers]\nbatch_size = 65\n",
            "batch_size",
            "workers.batch_size",
            "out of range (1 to 64)",
        ),
        (
            "[workers]\nidle_sleep_us = 20000\n",
            "idle_sleep_us",
            "workers.idle_sleep_us",
            "out of range (0 to 10000)",
        ),
        (
            "[dpdk]\nlcores = \"3-1\"\n",
            "lcores",
            "dpdk.lcores",
            "runs backwards",
        ),
        (
            "[dpdk]\nlcores = \"0-3\"\nmain_lcore = 5\n",
            "main_lcore",
            "dpdk.main_lcore",
            "not in lcores",
        ),
        (
            "[dpdk]\nmempool_cache = 600\n",
            "mempool_cache",
            "dpdk.mempool_cache",
            "limit of 512",
        ),
        (
            "[dpdk]\nmempool_size = 1000\n",
            "mempool_size",
            "dpdk.mempool_size",
            "cannot refill the 1024 receive descriptors",
        ),
        (
            "[dpdk]\nfile_prefix = \"a/b\"\n",
            "file_prefix",
            "dpdk.file_prefix",
            "not a usable prefix",
        ),
        (
            "[dpdk]\neal_args = [\"--iova-mode=va\", \"--no-huge\"]\n",
            "eal_args",
            "dpdk.eal_args",
            "\"--no-huge\" is set by tapflow; use dpdk.hugepages instead",
        ),
        (
            "[dpdk]\neal_args = [\"-l0-3\"]\n",
            "eal_args",
            "dpdk.eal_args",
            "use dpdk.lcores instead",
        ),
        (
            "[aggregation]\ninterval = 0\n",
            "interval",
            "aggregation.interval",
            "out of range",
        ),
        (
            "[export]\nqueue_batches = 0\n",
            "queue_batches",
            "export.queue_batches",
            "out of range",
        ),
        (
            "[stats]\nprometheus = \"localhost:9464\"\n",
            "localhost",
            "stats.prometheus",
            "not a listen address",
        ),
        (
            "[stats]\nprometheus = \"127.0.0.1:0\"\n",
            "127.0.0.1:0",
            "stats.prometheus",
            "port 0",
        ),
        (
            "[logging]\nlevel = \"verbose\"\n",
            "verbose",
            "logging.level",
            "\"error\", \"warn\", \"info\", \"debug\", \"trace\"",
        ),
        (
            "[logging]\ndpdk_level = 9\n",
            "dpdk_level",
            "logging.dpdk_level",
            "a DPDK log level",
        ),
        (
            "[sampling.adaptive]\nbudget_busy = 1.5\n",
            "budget_busy",
            "sampling.adaptive.budget_busy",
            "not a share of the worker's time",
        ),
        (
            "[sampling.adaptive]\nmin_interval = 3\n",
            "min_interval",
            "sampling.adaptive.min_interval",
            "not a power of two",
        ),
        (
            "[sampling.adaptive]\nmin_interval = 64\nmax_interval = 8\n",
            "max_interval",
            "sampling.adaptive.max_interval",
            "below min_interval",
        ),
        (
            "[sampling.adaptive]\nadjust_period_ms = 5\n",
            "adjust_period_ms",
            "sampling.adaptive.adjust_period_ms",
            "out of range (10 to 60000 ms)",
        ),
        (
            "[sampling]\nmode = \"hash:8\"\n[sampling.adaptive]\nenabled = true\n",
            "hash:8",
            "sampling.mode",
            "the controller sets the sampling itself",
        ),
    ];
    for (extra, needle, key, words) in cases {
        let text = format!("{BASE}\n{extra}");
        let (d, rendered) = one_error(&text);
        let line = line_of(&text, needle);
        assert_eq!(d.location.map(|l| l.line), Some(line), "{rendered}");
        assert!(
            rendered.starts_with(&format!("tapflow.toml:{line}:")),
            "{rendered}"
        );
        assert_eq!(d.key.as_deref(), Some(key), "{rendered}");
        assert!(rendered.contains(words), "{rendered} lacks {words:?}");
        let last = key.rsplit('.').next().unwrap();
        assert!(
            rendered.contains(&format!("`{last}`")),
            "{rendered} does not name {last}"
        );
    }
}

#[test]
fn port_and_collector_problems_name_their_table() {
    let port = "[[port]]\ndevice = \"0000:01:00.0\"\n";
    let collector = "[[collector]]\naddress = \"127.0.0.1:2055\"\n";
    // (whole text, text on the offending line, key, words in the message)
    let cases = [
        (
            format!("{port}rx_queues = 0\n{collector}"),
            "rx_queues",
            "port[0].rx_queues",
            "`rx_queues` in [[port]] #1: 0 is out of range (1 to 1024)",
        ),
        (
            format!("{port}rx_descriptors = 8\n{collector}"),
            "rx_descriptors",
            "port[0].rx_descriptors",
            "out of range (32 to 32768)",
        ),
        (
            format!("{port}[[port]]\ndevice = \"eth1\"\n{collector}"),
            "eth1",
            "port[1].device",
            "`device` in [[port]] #2: \"eth1\" is neither a PCI address",
        ),
        (
            format!("{port}[[port]]\ndevice = '0000:01:00.0'\n{collector}"),
            "'0000:01:00.0'",
            "port[1].device",
            "already used by [[port]] #1",
        ),
        (
            format!("[[port]]\ndevice = \"net_pcap0\"\n{collector}"),
            "net_pcap0",
            "port[0].device",
            "rx_pcap=FILE",
        ),
        (
            format!("[[port]]\ndevice = \"net_af_packet0\"\n{collector}"),
            "net_af_packet0",
            "port[0].device",
            "iface=IFNAME",
        ),
        (
            format!("[[port]]\ndevice = \"net_af_packet0,iface=eth1,qpairs=2\"\n{collector}"),
            "net_af_packet0,iface=eth1,qpairs=2",
            "port[0].device",
            "takes one queue (qpairs=1, rx_queues = 1)",
        ),
        (
            format!(
                "[[port]]\ndevice = \"net_af_packet0,iface=eth1\"\nkernel_ring_mb = 0\n{collector}"
            ),
            "kernel_ring_mb",
            "port[0].kernel_ring_mb",
            "out of range (1 to 1024)",
        ),
        (
            format!(
                "[[port]]\ndevice = \"net_af_xdp0,iface=eth1\"\nkernel_ring_mb = 64\n{collector}"
            ),
            "kernel_ring_mb",
            "port[0].kernel_ring_mb",
            "an AF_XDP port's ring is rx_descriptors",
        ),
        (
            format!("{port}{collector}mtu = 100\n"),
            "mtu",
            "collector[0].mtu",
            "`mtu` in [[collector]] #1: 100 bytes is out of range (576 to 65000 bytes)",
        ),
        (
            format!("{port}{collector}mtu = 65001\n"),
            "mtu",
            "collector[0].mtu",
            "out of range",
        ),
        (
            format!("{port}[[collector]]\naddress = \"nope\"\n"),
            "nope",
            "collector[0].address",
            "\"nope\" has no port",
        ),
        (
            format!("{port}[[collector]]\naddress = \"10.0.0.1:0\"\n"),
            "10.0.0.1:0",
            "collector[0].address",
            "port 0",
        ),
        (
            format!("{port}[[collector]]\naddress = \"::1:2055\"\n"),
            "::1:2055",
            "collector[0].address",
            "brackets",
        ),
        (
            format!("{port}{collector}transport = \"tcp\"\nversion = \"v9\"\n"),
            "tcp",
            "collector[0].transport",
            "tcp carries only IPFIX",
        ),
        (
            format!("{port}[aggregation]\nprotocol_port = true\n{collector}version = \"v5\"\n"),
            "v5",
            "collector[0].version",
            "v5 cannot carry protocol-port aggregates",
        ),
        (
            format!("{port}{collector}transport = \"sctp\"\n"),
            "sctp",
            "collector[0].transport",
            "expected one of \"udp\", \"tcp\"",
        ),
        (
            format!("{port}{collector}version = \"v10\"\n"),
            "v10",
            "collector[0].version",
            "expected one of \"v5\", \"v9\", \"ipfix\"",
        ),
        (
            format!("{port}{collector}template_refresh = 0\ntemplate_refresh_datagrams = 0\n"),
            "template_refresh = 0",
            "collector[0].template_refresh",
            "never be resent",
        ),
        (
            format!("{port}{collector}send_buffer = 10\n"),
            "send_buffer",
            "collector[0].send_buffer",
            "out of range",
        ),
        (
            format!("{port}{collector}source = \"10.0.0.300\"\n"),
            "10.0.0.300",
            "collector[0].source",
            "not an IP address",
        ),
        (
            format!("{port}{collector}source = \"::1\"\n"),
            "::1",
            "collector[0].source",
            "different IP versions",
        ),
    ];
    for (text, needle, key, words) in cases {
        let (d, rendered) = one_error(&text);
        let line = line_of(&text, needle);
        assert_eq!(d.location.map(|l| l.line), Some(line), "{rendered}");
        assert_eq!(d.key.as_deref(), Some(key), "{rendered}");
        assert!(rendered.contains(words), "{rendered} lacks {words:?}");
    }
}

#[test]
fn missing_required_keys_point_at_their_table() {
    let text = "[[port]]\nrx_queues = 2\n\n[[collector]]\nversion = \"v9\"\n";
    let err = Config::parse(text, "tapflow.toml").unwrap_err();
    let rendered = err.to_string();
    let d = err.diagnostics();
    assert_eq!(d.len(), 2, "{rendered}");
    assert_eq!(d[0].location, at(1, 1), "{rendered}");
    assert_eq!(d[0].key.as_deref(), Some("port[0].device"));
    assert!(
        d[0].message
            .starts_with("`device` in [[port]] #1: is required"),
        "{rendered}"
    );
    assert_eq!(d[1].location, at(line_of(text, "[[collector]]"), 1));
    assert!(
        d[1].message
            .contains("`address` in [[collector]] #1: is required"),
        "{rendered}"
    );
}

#[test]
fn missing_port_and_collector_tables_are_reported_without_a_line() {
    let err = Config::parse("[cache]\ncapacity = 100\n", "tapflow.toml").unwrap_err();
    let rendered = err.to_string();
    let d = err.diagnostics();
    assert_eq!(d.len(), 2, "{rendered}");
    assert!(d.iter().all(|d| d.location.is_none() && d.key.is_none()));
    assert!(
        rendered.contains("tapflow.toml: no [[port]] configured"),
        "{rendered}"
    );
    assert!(
        rendered.contains("tapflow.toml: no [[collector]] configured"),
        "{rendered}"
    );
    // An empty file says the same.
    let err = Config::parse("", "empty.toml").unwrap_err();
    assert_eq!(err.diagnostics().len(), 2);
}

#[test]
fn all_problems_are_reported_in_file_order() {
    let text = "\
[[port]]
device = \"0000:01:00.0\"
rx_queues = 0

[cache]
bucket_size = 4
inactive_timeout = 0

[[collector]]
address = \"127.0.0.1:2055\"
mtu = 100
";
    let err = Config::parse(text, "tapflow.toml").unwrap_err();
    let rendered = err.to_string();
    let lines: Vec<usize> = err
        .diagnostics()
        .iter()
        .map(|d| d.location.unwrap().line)
        .collect();
    assert_eq!(
        lines,
        vec![
            line_of(text, "rx_queues"),
            line_of(text, "bucket_size"),
            line_of(text, "inactive_timeout"),
            line_of(text, "mtu"),
        ],
        "{rendered}"
    );
    // One line per problem, each starting with file:line:column.
    assert_eq!(rendered.lines().count(), 4);
    for (line, number) in rendered.lines().zip(&lines) {
        assert!(
            line.starts_with(&format!("tapflow.toml:{number}:")),
            "{line}"
        );
    }
    // validate() on the value gives the same problems without locations.
    let mut config = Config::parse(BASE, "x").unwrap();
    config.ports[0].rx_queues = 0;
    config.cache.bucket_size = 4;
    config.cache.inactive_timeout = 0;
    config.collectors[0].mtu = 100;
    let problems = config.validate().unwrap_err();
    let keys: Vec<String> = problems.iter().map(|p| p.path.to_string()).collect();
    assert_eq!(
        keys,
        [
            "port[0].rx_queues",
            "cache.bucket_size",
            "cache.inactive_timeout",
            "collector[0].mtu"
        ]
    );
}

#[test]
fn dotted_keys_and_inline_tables_are_located_too() {
    // Top-level dotted keys and inline tables come before the first table header.
    let text = format!("cache.inactive_timeout = 0\n{BASE}");
    let (d, _) = one_error(&text);
    assert_eq!(d.location.unwrap().line, line_of(&text, "cache.inactive"));
    let text = format!("aggregation = {{ protocol_port = true, intervall = 5 }}\n{BASE}");
    let (d, rendered) = one_error(&text);
    assert_eq!(
        d.location,
        at(line_of(&text, "intervall"), column_of(&text, "intervall"))
    );
    assert!(
        rendered.contains("unknown key `intervall` in [aggregation]"),
        "{rendered}"
    );
}

#[test]
fn monitor_section_mistakes_name_the_key_and_line() {
    for (body, needle, key, says) in [
        ("window_ms = 0\n", "window_ms", "monitor.window_ms", "1"),
        ("window_ms = 101\n", "window_ms", "monitor.window_ms", "100"),
        (
            "link_bps = 1000\nheavy_hitter_share = 1.5\n",
            "heavy_hitter_share",
            "monitor.heavy_hitter_share",
            "share",
        ),
        (
            "congestion_utilisation = 0.9\n",
            "congestion_utilisation",
            "monitor.congestion_utilisation",
            "link_bps",
        ),
        ("windows = 0\n", "windows", "monitor.windows", "1"),
    ] {
        let text = format!("{BASE}\n[monitor]\n{body}");
        let (d, rendered) = one_error(&text);
        assert_eq!(d.key.as_deref(), Some(key), "{rendered}");
        assert_eq!(
            d.location.unwrap().line,
            line_of(&text, needle),
            "{rendered}"
        );
        assert!(rendered.contains(says), "{rendered}");
    }
    let (d, _) = one_error(&format!("{BASE}\n[monitor]\nwindow = 10\n"));
    assert_eq!(d.key.as_deref(), Some("monitor.window"));
}

#[test]
fn a_monitor_section_turns_the_monitor_on_with_defaults() {
    assert!(
        Config::parse(BASE, "tapflow.toml")
            .unwrap()
            .monitor
            .is_none()
    );
    let text = format!("{BASE}\n[monitor]\nevents = \"-\"\n");
    let config = Config::parse(&text, "tapflow.toml").unwrap();
    let monitor = config.monitor.as_ref().unwrap();
    assert_eq!(
        (monitor.window_ms, monitor.windows, monitor.top_flows),
        (10, 1, 64)
    );
    assert!(
        config.events_output().is_some(),
        "[monitor] events is the event output"
    );
}

#[test]
fn every_unknown_key_is_reported_at_once_in_file_order() {
    let text = "[cache]\ncapactiy = 5\ninactive_timout = 3\n\n[[collector]]\n\
                address = \"127.0.0.1:2055\"\nmtus = 3\n\n[cahce]\n";
    let err = Config::parse(text, "tapflow.toml").unwrap_err();
    let unknown: Vec<(usize, String)> = err
        .diagnostics()
        .iter()
        .filter(|d| d.message.starts_with("unknown key"))
        .map(|d| (d.location.unwrap().line, d.message.clone()))
        .collect();
    let lines: Vec<usize> = unknown.iter().map(|(l, _)| *l).collect();
    assert_eq!(lines, [2, 3, 7, 9], "{err}");
    for (suggestion, (_, message)) in ["capacity", "inactive_timeout", "mtu", "cache"]
        .iter()
        .zip(&unknown)
    {
        assert!(
            message.contains(&format!("(did you mean `{suggestion}`?)")),
            "{message}"
        );
    }
}
