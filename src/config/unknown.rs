//! Unknown keys: every one at once, in file order, each with the key it most likely meant.
//!
//! The tables do not deny unknown fields (serde would stop at the first); instead the file
//! is read through `serde_ignored`, which reports each key no table took, and the keys a
//! table does take come from the table's own `Deserialize` implementation (the field list
//! serde's derive hands to `deserialize_struct`), so no list of names is written twice.
//! `strsim` picks the suggestion.

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::types::{
    AggregationSection, CacheSection, CollectorSection, Config, DpdkSection, EventsSection,
    ExportSection, KpiSection, LoggingSection, MonitorSection, PortSection, SamplingSection,
    StatsSection, WorkersSection,
};
use super::validate::{KeyPath, Segment};

/// The fields a struct's derived `Deserialize` asks for, found by asking it to deserialize
/// from a deserializer that only records them.
fn fields_of<T: for<'de> Deserialize<'de>>() -> &'static [&'static str] {
    struct Recorder<'a>(&'a mut &'static [&'static str]);

    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("fields recorded")
        }
    }
    impl std::error::Error for Stop {}
    impl de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Stop {
            Stop
        }
    }

    impl<'de> Deserializer<'de> for Recorder<'_> {
        type Error = Stop;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            *self.0 = fields;
            Err(Stop)
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
            enum identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Recorder(&mut fields));
    fields
}

/// The keys the table at `table` takes (`[cache]`, `[[collector]] #2`, the top level).
pub(crate) fn accepted_keys(table: &KeyPath) -> Option<&'static [&'static str]> {
    let name = match table.0.first() {
        None => return Some(fields_of::<Config>()),
        Some(Segment::Key(name)) => name.as_str(),
        Some(Segment::Index(_)) => return None,
    };
    if name == "analyzers" {
        return analyzer_keys(&table.0[1..]);
    }
    if name == "sampling" && matches!(&table.0[1..], [Segment::Key(t)] if t == "adaptive") {
        return Some(fields_of::<super::types::AdaptiveSection>());
    }
    // Only a table's own keys: deeper paths have no struct of ours here.
    let depth = match table.0.get(1) {
        Some(Segment::Index(_)) => 2,
        _ => 1,
    };
    if table.0.len() != depth {
        return None;
    }
    Some(match name {
        "dpdk" => fields_of::<DpdkSection>(),
        "port" => fields_of::<PortSection>(),
        "workers" => fields_of::<WorkersSection>(),
        "sampling" => fields_of::<SamplingSection>(),
        "cache" => fields_of::<CacheSection>(),
        "aggregation" => fields_of::<AggregationSection>(),
        "collector" => fields_of::<CollectorSection>(),
        "export" => fields_of::<ExportSection>(),
        "logging" => fields_of::<LoggingSection>(),
        "stats" => fields_of::<StatsSection>(),
        "events" => fields_of::<EventsSection>(),
        "monitor" => fields_of::<MonitorSection>(),
        "policy" => fields_of::<super::policy::PolicySection>(),
        "kpi" => fields_of::<KpiSection>(),
        _ => return None,
    })
}

/// `[analyzers]` and its four tables (`[analyzers.syn_flood]`, ...).
fn analyzer_keys(rest: &[Segment]) -> Option<&'static [&'static str]> {
    use super::analyzers::{
        AnalyzersSection, DnsSection, HalfOpenSection, PerDestinationSection, SynFloodSection,
    };
    match rest {
        [] => Some(fields_of::<AnalyzersSection>()),
        [Segment::Key(table)] => Some(match table.as_str() {
            "syn_flood" => fields_of::<SynFloodSection>(),
            "half_open" => fields_of::<HalfOpenSection>(),
            "dns" => fields_of::<DnsSection>(),
            "per_destination" => fields_of::<PerDestinationSection>(),
            _ => return None,
        }),
        _ => None,
    }
}

/// The accepted key most like `typo`, if one is like enough to be a likely slip.
pub(crate) fn did_you_mean(typo: &str, accepted: &[&'static str]) -> Option<&'static str> {
    accepted
        .iter()
        .map(|&candidate| (strsim::jaro_winkler(typo, candidate), candidate))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}

/// A `serde_ignored` path as the file's key path (`collector[1].mtus`).
pub(crate) fn key_path(path: &serde_ignored::Path<'_>) -> KeyPath {
    let mut segments = Vec::new();
    push_segments(path, &mut segments);
    KeyPath(segments)
}

fn push_segments(path: &serde_ignored::Path<'_>, out: &mut Vec<Segment>) {
    use serde_ignored::Path;
    match path {
        Path::Root => {}
        Path::Seq { parent, index } => {
            push_segments(parent, out);
            out.push(Segment::Index(*index));
        }
        Path::Map { parent, key } => {
            push_segments(parent, out);
            out.push(Segment::Key(key.clone()));
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => push_segments(parent, out),
    }
}

/// The message for the unknown key at `path`: where it is, what it likely meant, and what
/// the table takes.
pub(crate) fn message(path: &KeyPath) -> String {
    let mut table = path.clone();
    let unknown = match table.0.pop() {
        Some(Segment::Key(key)) => key,
        Some(Segment::Index(i)) => i.to_string(),
        None => String::new(),
    };
    let place = match table.table_name() {
        Some(name) => format!("in {name}"),
        None => "at the top level".to_string(),
    };
    let mut message = format!("unknown key `{unknown}` {place}");
    if let Some(accepted) = accepted_keys(&table) {
        if let Some(likely) = did_you_mean(&unknown, accepted) {
            message.push_str(&format!(" (did you mean `{likely}`?)"));
        }
        if accepted.is_empty() {
            message.push_str("; this table takes no keys");
        } else {
            message.push_str("; expected one of: ");
            message.push_str(&accepted.join(", "));
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_names_its_own_fields() {
        let cache = fields_of::<CacheSection>();
        assert!(cache.contains(&"capacity") && cache.contains(&"inactive_timeout"));
        let top = accepted_keys(&KeyPath::default()).unwrap();
        assert!(top.contains(&"collector") && top.contains(&"cache"));
        assert_eq!(
            accepted_keys(&KeyPath::item("collector", 3)),
            Some(fields_of::<CollectorSection>())
        );
    }

    #[test]
    fn suggestions_are_likely_slips_only() {
        let accepted = fields_of::<CacheSection>();
        assert_eq!(did_you_mean("capactiy", accepted), Some("capacity"));
        assert_eq!(
            did_you_mean("inactive_timout", accepted),
            Some("inactive_timeout")
        );
        assert_eq!(did_you_mean("zzz", accepted), None);
    }
}
