//! `[analyzers.*]`: values reach the configuration, mistakes name the key and its line.

use tapflow::config::{Config, TriggerMode, TriggerStatistic};

const BASE: &str = "\
[[port]]
device = \"0000:01:00.0\"

[[collector]]
address = \"127.0.0.1:2055\"
";

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn analyzer_tables_parse() {
    let text = format!(
        "{BASE}\n[analyzers.syn_flood]\ntrigger = \"auto\"\ntrigger_threshold = 500\nsyn_per_sec = 200\n\
         [analyzers.dns]\ntrigger = \"always\"\n[analyzers.per_destination]\nprefix_len_v4 = 24\n"
    );
    let config = Config::parse(&text, "t.toml").unwrap();
    let a = &config.analyzers;
    assert_eq!(a.syn_flood.trigger, TriggerMode::Auto);
    assert_eq!(
        a.syn_flood.trigger_statistic,
        TriggerStatistic::SynsPerSecToOneDestination
    );
    assert_eq!(
        (a.syn_flood.trigger_threshold, a.syn_flood.syn_per_sec),
        (500, 200)
    );
    assert_eq!(a.dns.trigger, TriggerMode::Always);
    assert_eq!(a.half_open.trigger, TriggerMode::Off);
    assert_eq!(a.per_destination.prefix_len_v4, 24);
    assert!(a.any_enabled());
    assert!(
        !Config::parse(BASE, "t.toml")
            .unwrap()
            .analyzers
            .any_enabled()
    );
}

#[test]
fn mistakes_name_the_key_and_line() {
    let cases = [
        (
            "[analyzers.dns]\ntrigger = \"sometimes\"\n",
            "sometimes",
            "always",
        ),
        (
            "[analyzers.half_open]\ntrigger_threshold = 101\n",
            "101",
            "1 to 100 %",
        ),
        (
            "[analyzers.per_destination]\nprefix_len_v4 = 33\n",
            "33",
            "prefix_len_v4",
        ),
        (
            "[analyzers.syn_flood]\nsyn_per_sec = 0\n",
            "syn_per_sec",
            "syn_per_sec",
        ),
        (
            "[analyzers.syn_flood]\nsynpersec = 5\n",
            "synpersec",
            "did you mean `syn_per_sec`",
        ),
        (
            "[analyzers.dns]\ntrigger_statistic = \"x\"\n",
            "\"x\"",
            "new_flows_per_sec",
        ),
    ];
    for (table, needle, words) in cases {
        let text = format!("{BASE}\n{table}");
        let err = Config::parse(&text, "t.toml").unwrap_err().to_string();
        let line = line_of(&text, needle);
        assert!(err.starts_with(&format!("t.toml:{line}:")), "{err}");
        assert!(err.contains(words), "{err}");
    }
}
