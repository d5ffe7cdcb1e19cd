//! `[[policy]]`: ordered rules that select traffic and say what to do with it (see
//! `probe::policy` for what they mean on the data path and how they are classified).
//!
//! The values are kept as written and checked here with the data plane's own parsers
//! (`probe::policy`: prefixes, port ranges, protocol names, key modes), so a value the
//! data plane would refuse is reported with its key and line by check-config, and
//! [`Config::policy_rules`] cannot fail on a validated file.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use probe::policy::{
    Action, Finding, KeyMode, Match, Meter, PortRange, Prefix, Rule, RuleSet, parse_protocol,
};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::error::{Diagnostic, Document};
use super::types::{Config, SamplingMode};
use super::validate::{Checker, KeyPath, Problem, Segment};

/// One `[[policy]]`; every key but `name` is optional and every list means "any of".
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct PolicySection {
    /// Names the rule in records (`policy`), logs and check-config. Required, unique.
    pub name: String,
    /// Source and destination prefixes (`"10.0.0.0/8"`, `"2001:db8::/32"`, an address).
    pub src: Vec<String>,
    pub dst: Vec<String>,
    /// Protocol names or numbers (`"tcp"`, `"udp"`, `47`).
    pub proto: Vec<Scalar>,
    /// Ports or ranges (`443`, `"8000-8100"`); they match TCP, UDP and SCTP only.
    pub src_port: Vec<Scalar>,
    pub dst_port: Vec<Scalar>,
    /// 802.1Q VLAN ids (the outer tag's).
    pub vlan: Vec<u16>,
    /// Input port numbers (the order of the `[[port]]` tables, from 0).
    pub input_port: Vec<u16>,
    /// `"meter"` (the default) or `"ignore"`.
    pub action: String,
    /// `"5-tuple"` (the default), `"protocol-port"` or `"destination"`.
    pub key: String,
    /// As `--sample` / `[sampling] mode`; absent: the probe's sampling.
    pub sampling: Option<SamplingMode>,
    /// Names of `[[collector]]` tables that receive the records; empty: all of them.
    pub collectors: Vec<String>,
    /// Exported as `tag` with each record.
    pub tag: Option<u32>,
}

/// A TOML string or integer, kept as text (`443` and `"443"` are the same port).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scalar(pub String);

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl Visitor<'_> for ScalarVisitor {
            type Value = Scalar;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a number")
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        deserializer.deserialize_any(ScalarVisitor)
    }
}

/// How many overlaps check-config lists before it only counts them.
const MAX_OVERLAPS_LISTED: usize = 50;

fn element(path: &KeyPath, index: usize) -> KeyPath {
    let mut path = path.clone();
    path.0.push(Segment::Index(index));
    path
}

/// Parses every item of `list`, reporting each bad one at its own index.
fn parse_list<T, S: fmt::Display>(
    c: &mut Checker,
    at: &KeyPath,
    list: &[S],
    parse: impl Fn(&str) -> Result<T, String>,
) -> Vec<T> {
    list.iter()
        .enumerate()
        .filter_map(|(j, item)| match parse(&item.to_string()) {
            Ok(value) => Some(value),
            Err(why) => {
                c.fail(element(at, j), why);
                None
            }
        })
        .collect()
}

impl PolicySection {
    fn action(&self) -> Result<bool, String> {
        match self.action.as_str() {
            "" | "meter" => Ok(true),
            "ignore" => Ok(false),
            other => Err(format!(
                "{other:?} is not an action: expected \"meter\" or \"ignore\""
            )),
        }
    }

    fn key_mode(&self) -> Result<KeyMode, String> {
        if self.key.is_empty() {
            Ok(KeyMode::FiveTuple)
        } else {
            self.key.parse()
        }
    }

    /// The rule, with every value checked; problems go to `c` at their keys.
    fn rule(&self, index: usize, c: &mut Checker) -> Rule {
        let at = |key: &str| KeyPath::item("policy", index).then(key);
        let matcher = Match {
            src: parse_list(c, &at("src"), &self.src, |s| s.parse::<Prefix>()),
            dst: parse_list(c, &at("dst"), &self.dst, |s| s.parse::<Prefix>()),
            proto: parse_list(c, &at("proto"), &self.proto, parse_protocol),
            src_port: parse_list(c, &at("src_port"), &self.src_port, |s| {
                s.parse::<PortRange>()
            }),
            dst_port: parse_list(c, &at("dst_port"), &self.dst_port, |s| {
                s.parse::<PortRange>()
            }),
            vlan: self.vlan.clone(),
            input_port: self.input_port.clone(),
        };
        let key = self.key_mode().unwrap_or_else(|why| {
            c.fail(at("key"), why);
            KeyMode::FiveTuple
        });
        let meter = self.action().unwrap_or_else(|why| {
            c.fail(at("action"), why);
            true
        });
        let action = if meter {
            Action::Meter(Meter {
                key,
                sampling: self.sampling.map(sampler_spec),
                collectors: self
                    .collectors
                    .iter()
                    .map(|s| Arc::from(s.as_str()))
                    .collect(),
                tag: self.tag,
            })
        } else {
            Action::Ignore
        };
        Rule {
            name: Arc::from(self.name.as_str()),
            matcher,
            action,
        }
    }
}

fn sampler_spec(mode: SamplingMode) -> flowcache::SamplerSpec {
    use flowcache::SamplerSpec;
    match mode {
        SamplingMode::None => SamplerSpec::None,
        SamplingMode::Deterministic(n) => SamplerSpec::Deterministic(n),
        SamplingMode::Random(n) => SamplerSpec::Random(n),
        SamplingMode::Hash(n) => SamplerSpec::Hash(n),
    }
}

impl Config {
    pub(super) fn check_policies(&self, c: &mut Checker) {
        let collectors: Vec<&str> = self.collectors.iter().map(|c| c.label()).collect();
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (i, policy) in self.policies.iter().enumerate() {
            let at = |key: &str| KeyPath::item("policy", i).then(key);
            if policy.name.trim().is_empty() {
                c.fail(
                    at("name"),
                    "is required: it names the rule in records, logs and check-config",
                );
            } else if let Some(first) = names.insert(&policy.name, i) {
                c.fail(
                    at("name"),
                    format!(
                        "{:?} is already the name of [[policy]] #{}",
                        policy.name,
                        first + 1
                    ),
                );
            }
            let rule = policy.rule(i, c);
            if matches!(rule.action, Action::Ignore) {
                let meter_only = [
                    ("key", !policy.key.is_empty()),
                    ("sampling", policy.sampling.is_some()),
                    ("collectors", !policy.collectors.is_empty()),
                    ("tag", policy.tag.is_some()),
                ];
                for (key, set) in meter_only {
                    if set {
                        c.fail(
                            at(key),
                            "has no effect with action = \"ignore\" (ignored traffic makes \
                             no record): remove it, or use action = \"meter\"",
                        );
                    }
                }
            }
            for (j, name) in policy.collectors.iter().enumerate() {
                if !collectors.contains(&name.as_str()) {
                    let known = if collectors.is_empty() {
                        "there are no [[collector]] tables".to_string()
                    } else {
                        let quoted: Vec<String> =
                            collectors.iter().map(|n| format!("{n:?}")).collect();
                        format!("the collectors are {}", quoted.join(", "))
                    };
                    c.fail(
                        element(&at("collectors"), j),
                        format!("{name:?} names no [[collector]] (by `name`); {known}"),
                    );
                }
            }
        }
    }

    /// The `[[policy]]` tables as the data plane's rules, in file order. The file must
    /// have been validated ([`Config::parse`] does).
    pub fn policy_rules(&self) -> Vec<Rule> {
        let mut c = Checker::default();
        let rules = self
            .policies
            .iter()
            .enumerate()
            .map(|(i, p)| p.rule(i, &mut c))
            .collect();
        debug_assert!(c.problems.is_empty(), "validated: {:?}", c.problems);
        rules
    }

    /// The rule set the workers apply; `None` without `[[policy]]` tables.
    pub fn policy_set(&self) -> Option<Arc<RuleSet>> {
        (!self.policies.is_empty()).then(|| Arc::new(RuleSet::new(self.policy_rules())))
    }

    /// For each metering rule that names collectors, the indices of those collectors in
    /// `[[collector]]` order (what the export loop routes by).
    pub fn policy_routes(&self) -> Vec<(Arc<str>, Vec<usize>)> {
        self.policies
            .iter()
            .filter(|p| !p.collectors.is_empty())
            .map(|p| {
                let indices = self
                    .collectors
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| p.collectors.iter().any(|n| n == c.label()))
                    .map(|(i, _)| i)
                    .collect();
                (Arc::from(p.name.as_str()), indices)
            })
            .collect()
    }

    /// What check-config points out about the policies without refusing them: shadowed
    /// rules, overlapping rules with different actions, rules that can match nothing;
    /// located in `text` (the file this configuration was parsed from).
    pub fn policy_warnings(&self, text: &str) -> Vec<Diagnostic> {
        if self.policies.is_empty() {
            return Vec::new();
        }
        let Ok(document) = Document::parse(text) else {
            return Vec::new();
        };
        let set = RuleSet::new(self.policy_rules());
        let line = |rule: usize| {
            document
                .problem_diagnostic(&Problem {
                    path: KeyPath::item("policy", rule).then("name"),
                    message: String::new(),
                })
                .location
                .map_or_else(String::new, |at| format!(", line {}", at.line))
        };
        let title =
            |rule: usize| format!("[[policy]] #{} {:?}", rule + 1, self.policies[rule].name);
        let mut out = Vec::new();
        let mut overlaps = 0;
        for finding in set.findings() {
            let (rule, message) = match finding {
                Finding::Shadowed { rule, by } => (
                    rule,
                    format!(
                        "{} is shadowed by {}{}: that earlier rule selects every packet this \
                         one does, so this one never matches",
                        title(rule),
                        title(by),
                        line(by)
                    ),
                ),
                Finding::Overlap { rule, earlier } => {
                    overlaps += 1;
                    if overlaps > MAX_OVERLAPS_LISTED {
                        continue;
                    }
                    let (a, b) = (&set.rules()[earlier].action, &set.rules()[rule].action);
                    (
                        rule,
                        format!(
                            "{} overlaps {}{} with a different action ({} vs {}): the packets \
                             both select follow the earlier rule",
                            title(rule),
                            title(earlier),
                            line(earlier),
                            b,
                            a
                        ),
                    )
                }
                Finding::Unsatisfiable { rule } => (
                    rule,
                    format!(
                        "{} matches nothing: its src and dst prefixes share no IP version",
                        title(rule)
                    ),
                ),
            };
            let path = KeyPath::item("policy", rule).then("name");
            let mut diagnostic = document.problem_diagnostic(&Problem {
                path,
                message: String::new(),
            });
            diagnostic.message = message;
            out.push(diagnostic);
        }
        if overlaps > MAX_OVERLAPS_LISTED {
            out.push(Diagnostic {
                location: None,
                key: None,
                message: format!(
                    "... and {} more overlapping rules with different actions",
                    overlaps - MAX_OVERLAPS_LISTED
                ),
            });
        }
        out
    }
}
