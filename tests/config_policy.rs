//! `[[policy]]` tables: the issue's form parses into the data plane's rules; bad values,
//! unknown collectors and useless keys are refused with their line; shadowed and
//! conflicting rules are pointed out with their lines. Expected lines are found in the
//! test input itself.

use probe::policy::{Action, KeyMode, RuleSet, parse_packet};
use tapflow::config::Config;

const BASE: &str = "\
[[port]]
device = \"0000:01:00.0\"

[[collector]]
address = \"127.0.0.1:2055\"
name = \"nfcapd\"

[[collector]]
address = \"127.0.0.1:2056\"
name = \"dmz\"
";

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

#[test]
fn the_issue_form_parses_into_rules_that_classify() {
    let text = format!(
        "{BASE}
[[policy]]
name = \"dmz-web\"
src = [\"10.0.0.0/8\"]
dst = [\"192.0.2.0/24\", \"2001:db8::/32\"]
proto = [\"tcp\"]
dst_port = [\"443\", \"8000-8100\"]
action = \"meter\"            # or \"ignore\"
key = \"5-tuple\"             # or \"protocol-port\", \"destination\"
sampling = \"hash:10\"        # as --sample
collectors = [\"nfcapd\"]     # names of [[collector]] tables
tag = 7

[[policy]]
name = \"backups\"
dst_port = [873]
action = \"ignore\"

[[policy]]
name = \"dns\"
proto = [\"udp\", 6]
src_port = [53]
vlan = [10]
input_port = [0]
key = \"protocol-port\"
collectors = [\"dmz\"]
"
    );
    let config = Config::parse(&text, "tapflow.toml").unwrap();
    let rules = config.policy_rules();
    assert_eq!(rules.len(), 3);
    let Action::Meter(web) = &rules[0].action else {
        panic!("dmz-web meters")
    };
    assert_eq!(web.tag, Some(7));
    assert_eq!(web.sampling, Some(flowcache::SamplerSpec::Hash(10)));
    assert_eq!(&*web.collectors[0], "nfcapd");
    assert_eq!(rules[1].action, Action::Ignore);
    let Action::Meter(dns) = &rules[2].action else {
        panic!("dns meters")
    };
    assert_eq!(dns.key, KeyMode::ProtocolPort);
    assert_eq!(rules[2].matcher.proto, [17, 6]);
    let set = RuleSet::new(rules);
    let classify = |p: &str| set.classify(&parse_packet(p).unwrap());
    assert_eq!(classify("tcp 10.0.0.1:1234 > 192.0.2.5:443"), Some(0));
    assert_eq!(classify("tcp 10.0.0.1:1234 > 192.0.2.5:873"), Some(1));
    assert_eq!(
        classify("udp 192.0.2.1:53 > 10.0.0.1:9999 vlan 10"),
        Some(2)
    );
    assert_eq!(classify("udp 192.0.2.1:53 > 10.0.0.1:9999 vlan 11"), None);
    // "dns" (TCP from port 53) and "dmz-web" (TCP from 10/8 to port 443) share packets
    // and treat them differently: pointed out at "dns".
    let warnings = config.policy_warnings(&text);
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert_eq!(
        warnings[0].location.unwrap().line,
        line_of(&text, "name = \"dns\"")
    );
    assert!(
        warnings[0]
            .message
            .contains("overlaps [[policy]] #1 \"dmz-web\""),
        "{}",
        warnings[0].message
    );
}

#[test]
fn bad_values_unknown_collectors_and_useless_keys_are_refused_at_their_line() {
    let text = format!(
        "{BASE}
[[policy]]
name = \"a\"
src = [\"10.0.0.0/8\", \"10.0.0.1/8\"]
dst_port = [\"443\", \"9000-8000\"]
proto = [\"tpc\"]
collectors = [\"nfcapd\", \"nfdump\"]
key = \"4-tuple\"

[[policy]]
name = \"a\"
action = \"drop\"

[[policy]]
name = \"b\"
action = \"ignore\"
tag = 3
"
    );
    let err = Config::parse(&text, "tapflow.toml").unwrap_err();
    let rendered = err.to_string();
    let expect = [
        ("\"10.0.0.1/8\"", "did you mean 10.0.0.0/8"),
        ("\"9000-8000\"", "runs backwards"),
        ("\"tpc\"", "is not a protocol"),
        ("\"nfdump\"", "\"nfdump\" names no [[collector]]"),
        ("\"4-tuple\"", "is not a flow key"),
        ("action = \"drop\"", "is not an action"),
        ("tag = 3", "has no effect with action = \"ignore\""),
    ];
    for (needle, message) in expect {
        let line = line_of(&text, needle);
        assert!(
            rendered
                .lines()
                .any(|l| l.starts_with(&format!("tapflow.toml:{line}:")) && l.contains(message)),
            "no {message:?} at line {line}:\n{rendered}"
        );
    }
    // The duplicate name is the second `name = "a"`, at the second table.
    assert!(
        rendered.contains("\"a\" is already the name of [[policy]] #1"),
        "{rendered}"
    );
    assert_eq!(err.diagnostics().len(), expect.len() + 1, "{rendered}");
}

#[test]
fn shadowed_overlapping_and_empty_rules_are_pointed_out_with_their_lines() {
    let text = format!(
        "{BASE}
[[policy]]
name = \"web\"
dst = [\"192.0.2.0/24\"]
dst_port = [\"1-1000\"]

[[policy]]
name = \"https\"
dst = [\"192.0.2.128/25\"]
proto = [\"tcp\"]
dst_port = [443]
tag = 4

[[policy]]
name = \"high\"
dst = [\"192.0.0.0/16\"]
dst_port = [\"900-2000\"]
action = \"ignore\"

[[policy]]
name = \"mixed\"
src = [\"10.0.0.0/8\"]
dst = [\"2001:db8::/32\"]
"
    );
    let config = Config::parse(&text, "tapflow.toml").unwrap();
    let warnings = config.policy_warnings(&text);
    let lines: Vec<(usize, &str)> = warnings
        .iter()
        .map(|d| (d.location.unwrap().line, d.message.as_str()))
        .collect();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    let web = line_of(&text, "name = \"web\"");
    assert_eq!(lines[0].0, line_of(&text, "name = \"https\""));
    assert!(
        lines[0].1.contains(&format!(
            "\"https\" is shadowed by [[policy]] #1 \"web\", line {web}"
        )),
        "{}",
        lines[0].1
    );
    assert_eq!(lines[1].0, line_of(&text, "name = \"high\""));
    assert!(
        lines[1]
            .1
            .contains(&format!("overlaps [[policy]] #1 \"web\", line {web}")),
        "{}",
        lines[1].1
    );
    assert_eq!(lines[2].0, line_of(&text, "name = \"mixed\""));
    assert!(lines[2].1.contains("matches nothing"), "{}", lines[2].1);
}

#[test]
fn explain_names_the_matching_rule_and_why() {
    let dir = std::env::temp_dir().join(format!("tapflow-explain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tapflow.toml");
    let text = format!(
        "{BASE}
[[policy]]
name = \"backups\"
dst_port = [873]
action = \"ignore\"

[[policy]]
name = \"dmz-web\"
src = [\"10.0.0.0/8\"]
dst = [\"192.0.2.0/24\"]
proto = [\"tcp\"]
dst_port = [\"443\", \"8000-8100\"]
tag = 7
"
    );
    std::fs::write(&path, &text).unwrap();
    let run = |packet: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tapflow"))
            .args(["explain", "--config"])
            .arg(&path)
            .args(["--packet", packet])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let web = run("tcp 10.0.0.1:1234 > 192.0.2.5:443");
    assert!(
        web.starts_with("matches [[policy]] #2 \"dmz-web\": meter"),
        "{web}"
    );
    for why in [
        "src 10.0.0.1 is in 10.0.0.0/8",
        "dst 192.0.2.5 is in 192.0.2.0/24",
        "proto is tcp",
        "dst_port 443 is in 443",
        "\"backups\": dst_port 443 is in none of 873",
    ] {
        assert!(web.contains(why), "{why:?} missing:\n{web}");
    }
    let none = run("udp 10.0.0.1:1234 > 192.0.2.5:443");
    assert!(none.starts_with("no policy matches"), "{none}");
    assert!(none.contains("proto udp is not one of tcp"), "{none}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tapflow"))
        .args(["explain", "--config"])
        .arg(&path)
        .args(["--packet", "tcp 10.0.0.1 192.0.2.5"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--packet"));
    std::fs::remove_dir_all(&dir).unwrap();
}
