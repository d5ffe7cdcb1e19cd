//! `tapflow explain`: which `[[policy]]` a packet falls under, and why.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Result, anyhow};
use probe::policy::{RuleSet, parse_packet};
use tapflow::config::Config;

pub fn explain(config_path: &Path, packet: &str) -> Result<ExitCode> {
    let config = Config::load(config_path)?;
    let key = parse_packet(packet).map_err(|e| anyhow!("--packet: {e}"))?;
    let set = RuleSet::new(config.policy_rules());
    print!("{}", report(&config, &set, &key));
    Ok(ExitCode::SUCCESS)
}

/// The matching rule with the reason for each of its conditions, the earlier rules with
/// the condition each one failed, and the later rules that would also have matched.
fn report(config: &Config, set: &RuleSet, key: &flowcache::FlowKey) -> String {
    let mut out = String::new();
    let title = |i: usize| format!("[[policy]] #{} {:?}", i + 1, config.policies[i].name);
    let Some(matched) = set.classify(key) else {
        let _ = writeln!(
            out,
            "no policy matches: the flow is metered as without policies (5-tuple key, \
             sampling {}, every collector)",
            config.sampling.mode
        );
        for (i, rule) in set.rules().iter().enumerate() {
            if let Err((_, why)) = rule.matcher.explain(key) {
                let _ = writeln!(out, "  {}: {why}", title(i));
            }
        }
        return out;
    };
    let matched = matched as usize;
    let rule = &set.rules()[matched];
    let _ = writeln!(out, "matches {}: {}", title(matched), rule.action);
    for why in rule.matcher.explain(key).unwrap_or_default() {
        let _ = writeln!(out, "  {why}");
    }
    if matched > 0 {
        let _ = writeln!(out, "earlier rules that do not match:");
        for (i, earlier) in set.rules()[..matched].iter().enumerate() {
            if let Err((_, why)) = earlier.matcher.explain(key) {
                let _ = writeln!(out, "  {}: {why}", title(i));
            }
        }
    }
    let later: Vec<String> = set.rules()[matched + 1..]
        .iter()
        .enumerate()
        .filter(|(_, r)| r.matcher.matches(key))
        .map(|(j, _)| title(matched + 1 + j))
        .collect();
    if !later.is_empty() {
        let _ = writeln!(
            out,
            "also selected by, but first match wins: {}",
            later.join(", ")
        );
    }
    out
}
