//! The worker's policy stage: classifies a flow on its first packet, keeps the decision
//! with the flow, and applies it (ignore, sample, reduce the key); marks each record
//! leaving the cache with its policy.
//!
//! The decision lives with the flow cache's slot, so a known flow's packet touches no
//! table but the cache. The stage is the shard's [`Classifier`]: the shard asks it only
//! about a packet whose key it does not hold (a first packet, or the first after the
//! flow's record ended), and a packet of a held flow is simply counted. So a flow held
//! under its own key must be one whose every packet is counted as it is: metered with the
//! 5-tuple and sampled whole or not at all. Such a flow ("plain") leaves its decision in the
//! shard as the record's label (rule set generation and rule, written when the record starts,
//! read when it leaves), and the stage keeps nothing for it.
//!
//! The other flows never own an entry under their raw key, so each of their packets comes
//! to the stage, which keeps their decisions in a table of its own (keyed by the raw key,
//! buckets of eight 64-byte slots, allocated once):
//! - ignored flows (no packet accounted; counted as `policy_ignored`);
//! - flows a hash sampler (the rule's, or the worker's for a flow no rule selected)
//!   dropped, decided once per flow like the cache's own hash sampling;
//! - flows sampled packet by packet (deterministic or random: the rule's or the worker's);
//! - flows of a reduced key (`protocol-port`, `destination`).
//!
//! A kept packet of the last two is accounted under a rewritten key, marked in
//! [`FlowKey::_reserved`] so that it never equals a raw key: a reduced key carries its
//! label in address bytes the reduction cleared (two rules never share a reduced flow), a
//! 5-tuple sampled packet by packet only the mark. [`PolicyStage::mark`] clears both. Such a
//! decision lasts while its flow keeps sending: one idle for the cache's inactive timeout
//! has ended, and its next packet is classified again; a full bucket gives up its least
//! recently seen decision (counted), and that flow is classified again on its next packet.
//!
//! A plain flow's decision lasts as long as its record: a record that ends (idle, active
//! timeout, FIN/RST, eviction, a full counter) is followed by a new one whose first packet
//! is classified again.
//!
//! A new rule set (SIGHUP) applies to flows classified from then on; flows with a
//! decision keep it until they end. The stage keeps the last [`GENERATIONS`] rule sets for
//! them; a decision of an older one is taken again from the newest, and its record leaves
//! unmarked. Labels hold a generation in 12 bits and a rule in 20: a rule past the
//! millionth is applied, but its records leave unmarked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use flowcache::{
    Admission, Classifier, FlowKey, FlowRecord, Observation, PolicyMark, RecordExtras, Sampler,
    SamplerSpec, advise_huge_pages, keys_equal, prefetch_read,
};

use flowcache::counters::{CounterSet, Spec};

use crate::ext::ExtCounter;
use crate::policy::{Action, KeyMode, RuleSet};
use crate::source::MAX_BURST;

/// Rule sets kept for the flows that were classified by them.
pub const GENERATIONS: usize = 8;

/// No rule selected the flow: it is metered as without policies.
const NO_RULE: u32 = u32::MAX;

/// [`FlowKey::_reserved`] flags of a rewritten key: reduced (its label in `src_addr[8..12]`),
/// and sampled packet by packet. A parsed key has neither.
const REDUCED: u8 = 0x80;
const SAMPLED: u8 = 0x40;

/// A label is a generation id (12 bits) above a rule index plus one (20 bits); 0: no rule.
const LABEL_RULE_BITS: u32 = 20;
const GENERATION_IDS: u16 = 1 << (32 - LABEL_RULE_BITS);

/// Slots per bucket of the decision table; a bucket's tags are 16 bytes, so a lookup
/// reads a quarter of a tag line and one slot.
const BUCKET: usize = 8;

/// Where a reload (SIGHUP) leaves a new rule set for the workers: each worker looks at
/// the version once per poll (one relaxed load) and takes the rules between bursts, so
/// no packet waits or is lost.
#[derive(Debug)]
pub struct PolicySwap {
    version: AtomicU64,
    rules: Mutex<Arc<RuleSet>>,
}

impl PolicySwap {
    pub fn new(rules: Arc<RuleSet>) -> PolicySwap {
        PolicySwap {
            version: AtomicU64::new(0),
            rules: Mutex::new(rules),
        }
    }

    /// Offers `rules` to every worker.
    pub fn publish(&self, rules: Arc<RuleSet>) {
        if let Ok(mut slot) = self.rules.lock() {
            *slot = rules;
            self.version.fetch_add(1, Ordering::Release);
        }
    }

    #[inline]
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn rules(&self) -> Arc<RuleSet> {
        match self.rules.lock() {
            Ok(slot) => slot.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// What the stage decided for one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    SampledOut,
    Ignored,
}

/// One rule as the worker applies it.
#[derive(Debug)]
struct RuleState {
    ignore: bool,
    key: KeyMode,
    /// The rule's own sampler; `None`: the worker's.
    sampler: Option<Sampler>,
    mark: PolicyMark,
}

#[derive(Debug)]
struct Generation {
    id: u16,
    rules: Arc<RuleSet>,
    state: Vec<RuleState>,
}

impl Generation {
    fn new(id: u16, rules: Arc<RuleSet>) -> Generation {
        let state = rules
            .rules()
            .iter()
            .map(|rule| match &rule.action {
                Action::Ignore => RuleState {
                    ignore: true,
                    key: KeyMode::FiveTuple,
                    sampler: None,
                    mark: PolicyMark {
                        name: rule.name.clone(),
                        tag: None,
                    },
                },
                Action::Meter(meter) => RuleState {
                    ignore: false,
                    key: meter.key,
                    sampler: meter.sampling.map(Sampler::new),
                    mark: PolicyMark {
                        name: rule.name.clone(),
                        tag: meter.tag,
                    },
                },
            })
            .collect();
        Generation { id, rules, state }
    }
}

/// How a flow's packets are treated, beyond "counted as they are" (which the cache keeps).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    /// Counted under the raw key: lives in the cache, never in the stage's table.
    #[default]
    Plain,
    Ignore,
    /// Dropped whole by a hash sampler.
    SampledOut,
    /// Sampled packet by packet; kept packets are counted under a marked key.
    PerPacket,
    /// Counted under the rule's reduced key.
    Reduce,
}

/// A kept decision: one cache line.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    key: FlowKey,
    rule: u32,
    /// Low 32 bits of the last packet's ms time.
    last_ms: u32,
    generation: u16,
    kind: Kind,
    /// The worker's sampling interval the decision was taken under, if it took the
    /// worker's sampler (0: the rule's own, or none): adaptive sampling changes it, and
    /// then the flow is decided again (see [`PolicyStage::decide`]).
    worker_interval: u32,
}

const _: () = assert!(size_of::<Slot>() == 64);

flowcache::counters! {
    /// The stage's counters: on the metrics endpoint as `tapflow_policy_<name>_total`
    /// (the packets of ignored flows are a worker counter, `policy_ignored`).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct PolicyCounters {
        /// Flows classified (first packets, and flows whose decision ended or was evicted).
        classified: u64 = Spec::counter("classified_flows", "flows classified",
            "Flows classified by the policy rules (first packets)."),
        /// Classifications that matched a rule.
        matched: u64 = Spec::counter("matched_flows", "flows a rule selected",
            "Classified flows that a policy rule selected."),
        /// Decisions given up for room while their flow was still sending.
        evicted: u64 = Spec::counter("evicted_decisions", "decisions evicted",
            "Cached policy decisions given up for room while their flow was live.")
            .when_nonzero(),
        /// Records that left with a policy mark.
        marked_records: u64 = Spec::counter("marked_records", "records marked",
            "Records exported with a policy name and tag."),
        /// Rule set swaps (SIGHUP).
        reloads: u64 = Spec::counter("reloads", "rule sets reloaded",
            "Policy rule sets swapped in (SIGHUP).").when_nonzero(),
    }
}

/// One worker's policy stage.
#[derive(Debug)]
pub struct PolicyStage {
    /// Newest last.
    generations: Vec<Generation>,
    /// Decisions of the flows that are not plain (see the module doc).
    slots: Vec<Slot>,
    /// Per slot: 0 when empty, else the high bits of the key's hash (never 0), so a
    /// lookup compares only the slot whose tag matches.
    tags: Vec<u16>,
    bucket_mask: usize,
    idle_ms: u32,
    counters: PolicyCounters,
    /// Packets not accounted since [`PolicyStage::take_unaccounted`]: sampled out, ignored.
    sampled_out: u64,
    ignored: u64,
    /// Per packet of the burst being accounted, when recording: the verdict and the key it
    /// is accounted under, for the packets the cache asked about.
    verdicts: Vec<Option<(Verdict, FlowKey)>>,
    recording: bool,
}

impl PolicyStage {
    /// A stage for `rules`, with room for about `flows` concurrent decisions, where a
    /// decision idle for `idle_ms` (the cache's inactive timeout) has ended.
    pub fn new(rules: Arc<RuleSet>, flows: usize, idle_ms: u64) -> PolicyStage {
        let buckets = flows.div_ceil(BUCKET).max(1).next_power_of_two();
        // Huge pages before the first write, as the flow cache's: read at random.
        let mut slots = Vec::with_capacity(buckets * BUCKET);
        let mut tags = Vec::with_capacity(buckets * BUCKET);
        advise_huge_pages(&slots);
        advise_huge_pages(&tags);
        slots.resize(buckets * BUCKET, Slot::default());
        tags.resize(buckets * BUCKET, 0);
        PolicyStage {
            generations: vec![Generation::new(0, rules)],
            slots,
            tags,
            bucket_mask: buckets - 1,
            // Times are refreshed once a second: a second's slack.
            idle_ms: u32::try_from(idle_ms.saturating_add(1_000)).unwrap_or(u32::MAX / 2),
            counters: PolicyCounters::default(),
            sampled_out: 0,
            ignored: 0,
            verdicts: Vec::with_capacity(MAX_BURST),
            recording: false,
        }
    }

    pub fn counters(&self) -> PolicyCounters {
        self.counters
    }

    /// The rule set new flows are classified by.
    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.generations.last().expect("a rule set").rules
    }

    /// Classifies new flows by `rules` from now on; decisions already made stay.
    pub fn swap(&mut self, rules: Arc<RuleSet>) {
        let id = self
            .generations
            .last()
            .map_or(0, |g| (g.id + 1) % GENERATION_IDS);
        if self.generations.len() == GENERATIONS {
            self.generations.remove(0);
        }
        self.generations.push(Generation::new(id, rules));
        self.counters.reloads += 1;
    }

    /// The stage as the flow cache's classifier, with the worker's sampler for the flows no
    /// rule samples (see [`FlowShard::update_interleaved_classified`]).
    ///
    /// [`FlowShard::update_interleaved_classified`]: flowcache::FlowShard::update_interleaved_classified
    pub fn classifier<'a>(&'a mut self, worker_sampler: &'a mut Sampler) -> StageClassifier<'a> {
        StageClassifier {
            stage: self,
            sampler: worker_sampler,
        }
    }

    /// Packets sampled out and ignored since the last call.
    pub fn take_unaccounted(&mut self) -> (u64, u64) {
        let taken = (self.sampled_out, self.ignored);
        (self.sampled_out, self.ignored) = (0, 0);
        taken
    }

    /// Records the verdicts of the next `packets` accounted (for extensions, which see
    /// each packet with its fate), until [`PolicyStage::stop_recording`].
    pub fn record_verdicts(&mut self, packets: usize) {
        self.verdicts.clear();
        self.verdicts.resize(packets, None);
        self.recording = true;
    }

    /// The verdict of the packet at `index` of the recorded burst and the key it was
    /// accounted under; `None` if the cache did not ask (it held the flow: kept, raw key).
    pub fn verdict(&self, index: usize) -> Option<(Verdict, FlowKey)> {
        self.verdicts.get(index).copied().flatten()
    }

    pub fn stop_recording(&mut self) {
        self.recording = false;
    }

    #[inline]
    fn bucket(&self, hash: u64) -> usize {
        (hash as usize & self.bucket_mask) * BUCKET
    }

    #[inline]
    fn tag(hash: u64) -> u16 {
        (hash >> 48) as u16 | 1
    }

    /// The slot holding `key`'s decision, if any (ended or not).
    #[inline]
    fn find(&self, key: &FlowKey, hash: u64) -> Option<usize> {
        let base = self.bucket(hash);
        let tag = Self::tag(hash);
        let tags = &self.tags[base..base + BUCKET];
        (0..BUCKET)
            .find(|&i| tags[i] == tag && keys_equal(&self.slots[base + i].key, key))
            .map(|i| base + i)
    }

    fn generation(&mut self, id: u16) -> Option<&mut Generation> {
        self.generations.iter_mut().rev().find(|g| g.id == id)
    }

    /// The fate of a packet whose flow the cache does not hold (its key raw), and the label
    /// of the record it is accounted into. A kept packet's key may be rewritten.
    fn decide(
        &mut self,
        key: &mut FlowKey,
        hash: u64,
        now_ms: u64,
        worker_sampler: &mut Sampler,
    ) -> (Verdict, u32) {
        let now = now_ms as u32;
        let idle = self.idle_ms;
        // A decision taken under another interval of the worker's sampler (adaptive
        // sampling moved it) is taken again, as the cache's own flows restart under the
        // new interval: a flow sampled out may now be kept and one kept, reduced, dropped.
        let worker_interval = worker_sampler.spec().interval();
        let kept = self.find(key, hash).filter(|&i| {
            let slot = &self.slots[i];
            now.wrapping_sub(slot.last_ms) <= idle
                && (slot.worker_interval == 0 || slot.worker_interval == worker_interval)
                && self.generations.iter().any(|g| g.id == slot.generation)
        });
        let (generation, rule, kind) = match kept {
            Some(i) => {
                let slot = &mut self.slots[i];
                // Refreshed at most once a second: an unchanged line is not written back.
                if now.wrapping_sub(slot.last_ms) >= 1_000 {
                    slot.last_ms = now;
                }
                (slot.generation, slot.rule, slot.kind)
            }
            None => {
                let (generation, rule, kind, by_worker) = self.classify(key, worker_sampler);
                if kind == Kind::Plain {
                    return (Verdict::Keep, label_of(generation, rule));
                }
                let under = if by_worker { worker_interval } else { 0 };
                self.keep(key, hash, now, (generation, rule, kind, under));
                (generation, rule, kind)
            }
        };
        let label = label_of(generation, rule);
        match kind {
            Kind::Plain => (Verdict::Keep, label),
            Kind::Ignore => (Verdict::Ignored, 0),
            Kind::SampledOut => (Verdict::SampledOut, 0),
            Kind::PerPacket | Kind::Reduce => {
                let state = self
                    .generation(generation)
                    .and_then(|g| g.state.get_mut(rule as usize));
                let mode = state.as_ref().map_or(KeyMode::FiveTuple, |s| s.key);
                if kind == Kind::PerPacket {
                    let sampler = match state.and_then(|s| s.sampler.as_mut()) {
                        Some(own) => own,
                        None => worker_sampler,
                    };
                    if !sampler.keep(key) {
                        return (Verdict::SampledOut, 0);
                    }
                }
                if mode == KeyMode::FiveTuple {
                    key._reserved |= SAMPLED;
                } else {
                    mode.apply(key);
                    key.src_addr[8..12].copy_from_slice(&label.to_le_bytes());
                    key._reserved |= REDUCED;
                }
                (Verdict::Keep, label)
            }
        }
    }

    /// Classifies a flow by the newest rules: its generation, rule and kind, and whether
    /// the worker's sampler took part. A hash sampler decides here, once for the flow.
    fn classify(&mut self, key: &FlowKey, worker_sampler: &mut Sampler) -> (u16, u32, Kind, bool) {
        let newest = self.generations.last_mut().expect("a rule set");
        let rule = newest.rules.classify(key).unwrap_or(NO_RULE);
        self.counters.classified += 1;
        self.counters.matched += u64::from(rule != NO_RULE);
        let state = newest.state.get_mut(rule as usize);
        if state.as_ref().is_some_and(|s| s.ignore) {
            return (newest.id, rule, Kind::Ignore, false);
        }
        let mode = state.as_ref().map_or(KeyMode::FiveTuple, |s| s.key);
        let (sampler, by_worker) = match state.and_then(|s| s.sampler.as_mut()) {
            Some(own) => (own, false),
            None => (worker_sampler, true),
        };
        let kind = match sampler.spec() {
            SamplerSpec::Deterministic(_) | SamplerSpec::Random(_) => Kind::PerPacket,
            SamplerSpec::Hash(_) if !sampler.keep(key) => Kind::SampledOut,
            SamplerSpec::None | SamplerSpec::Hash(_) if mode == KeyMode::FiveTuple => Kind::Plain,
            SamplerSpec::None | SamplerSpec::Hash(_) => Kind::Reduce,
        };
        (newest.id, rule, kind, by_worker)
    }

    /// Keeps a decision: in the slot of this key's ended decision, a free slot, an ended
    /// decision's, or the least recently seen one's.
    fn keep(
        &mut self,
        key: &FlowKey,
        hash: u64,
        now: u32,
        (generation, rule, kind, worker_interval): (u16, u32, Kind, u32),
    ) {
        let base = self.bucket(hash);
        let idle = self.idle_ms;
        let victim = self.find(key, hash).unwrap_or_else(|| {
            (base..base + BUCKET)
                .max_by_key(|&i| {
                    if self.tags[i] == 0 {
                        u64::MAX
                    } else {
                        u64::from(now.wrapping_sub(self.slots[i].last_ms))
                    }
                })
                .expect("a bucket has slots")
        });
        if self.tags[victim] != 0
            && !keys_equal(&self.slots[victim].key, key)
            && now.wrapping_sub(self.slots[victim].last_ms) <= idle
        {
            self.counters.evicted += 1;
        }
        self.tags[victim] = Self::tag(hash);
        self.slots[victim] = Slot {
            key: *key,
            rule,
            last_ms: now,
            generation,
            kind,
            worker_interval,
        };
    }

    /// Gives a record leaving the cache its policy: the mark (name and tag), the rule's
    /// sampling, and its key as parsed or reduced, without the stage's marks.
    pub fn mark(&mut self, record: &mut FlowRecord) {
        let key = &mut record.key;
        if key._reserved & REDUCED != 0 {
            key.src_addr[8..12].fill(0);
        }
        key._reserved &= !(REDUCED | SAMPLED);
        let label = record.label;
        if label == 0 {
            return;
        }
        let (generation, rule) = ((label >> LABEL_RULE_BITS) as u16, (label & RULE_MASK) - 1);
        // A decision of a rule set no longer kept leaves unmarked.
        let Some(state) = self
            .generations
            .iter()
            .rev()
            .find(|g| g.id == generation)
            .and_then(|g| g.state.get(rule as usize))
        else {
            return;
        };
        if let Some(sampler) = &state.sampler {
            record.sampling = sampler.info();
        }
        record
            .extras
            .get_or_insert_with(|| Box::new(RecordExtras::default()))
            .policy = Some(state.mark.clone());
        self.counters.marked_records += 1;
    }

    /// The counters as the metrics endpoint shows them.
    pub fn ext_counters(&self) -> Vec<ExtCounter> {
        self.counters.series()
    }
}

const RULE_MASK: u32 = (1 << LABEL_RULE_BITS) - 1;

/// The label of a decision; 0 for no rule (and for a rule past what a label holds).
#[inline]
fn label_of(generation: u16, rule: u32) -> u32 {
    if rule >= RULE_MASK {
        0
    } else {
        u32::from(generation) << LABEL_RULE_BITS | (rule + 1)
    }
}

/// The stage with the worker's sampler, as the flow cache's [`Classifier`].
#[derive(Debug)]
pub struct StageClassifier<'a> {
    stage: &'a mut PolicyStage,
    sampler: &'a mut Sampler,
}

impl Classifier for StageClassifier<'_> {
    /// The decision's slot, if its tag is there (a first packet's classification needs
    /// no slot).
    #[inline]
    fn prefetch(&mut self, hash: u64) {
        let stage = &*self.stage;
        let base = stage.bucket(hash);
        let tag = PolicyStage::tag(hash);
        if let Some(i) = stage.tags[base..base + BUCKET]
            .iter()
            .position(|&t| t == tag)
        {
            prefetch_read(&stage.slots[base + i]);
        }
    }

    #[inline]
    fn admit(&mut self, index: usize, obs: &mut Observation, hash: u64) -> Admission {
        let stage = &mut *self.stage;
        let (verdict, label) = stage.decide(&mut obs.key, hash, obs.timestamp_ms, self.sampler);
        if stage.recording
            && let Some(seen) = stage.verdicts.get_mut(index)
        {
            *seen = Some((verdict, obs.key));
        }
        match verdict {
            Verdict::Keep => Admission::Account(label),
            Verdict::SampledOut => {
                stage.sampled_out += 1;
                Admission::Skip
            }
            Verdict::Ignored => {
                stage.ignored += 1;
                Admission::Skip
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Match, Meter, Rule, parse_packet};

    /// A flow's decision taken under the worker's sampler at one interval, looked up
    /// after adaptive sampling moved the interval: `packet` names the flow.
    fn decide_at(stage: &mut PolicyStage, sampler: &mut Sampler, packet: &str) -> Verdict {
        let mut key = parse_packet(packet).unwrap();
        let hash = flowcache::flow_hash(&key);
        stage.decide(&mut key, hash, 1_000, sampler).0
    }

    /// Flows of `proto` and ports `port..` the worker's hash sampler at 1 in 4 drops.
    fn dropped_at_4(proto: &str, port: u16) -> String {
        let mut sampler = Sampler::new(SamplerSpec::Hash(4));
        (port..)
            .map(|p| format!("{proto} 10.0.0.1:{p} > 192.0.2.5:53"))
            .find(|packet| !sampler.keep(&parse_packet(packet).unwrap()))
            .unwrap()
    }

    /// A stage with one rule: what `matcher` selects is metered as `meter` says.
    fn one_rule_stage(matcher: Match, meter: Meter) -> PolicyStage {
        let rules = RuleSet::new(vec![Rule {
            name: "rule".into(),
            matcher,
            action: Action::Meter(meter),
        }]);
        PolicyStage::new(Arc::new(rules), 1 << 10, 15_000)
    }

    #[test]
    fn decisions_of_the_workers_sampler_follow_its_interval() {
        let udp_only = Match {
            proto: vec![17],
            ..Match::default()
        };
        let by_port = Meter {
            key: KeyMode::ProtocolPort,
            ..Meter::default()
        };
        let mut stage = one_rule_stage(udp_only, by_port);
        let mut sampler = Sampler::new(SamplerSpec::Hash(4));
        // No rule (TCP): sampled out whole at 1 in 4; metered once the interval is 1.
        let tcp = dropped_at_4("tcp", 1000);
        assert_eq!(
            decide_at(&mut stage, &mut sampler, &tcp),
            Verdict::SampledOut
        );
        assert_eq!(
            decide_at(&mut stage, &mut sampler, &tcp),
            Verdict::SampledOut
        );
        sampler.set_hash_interval(1);
        assert_eq!(decide_at(&mut stage, &mut sampler, &tcp), Verdict::Keep);
        // A reduced key (UDP): kept at 1, and dropped once the interval is 4 again (a
        // kept decision would put its packets in records that say 1 in 4).
        let udp = dropped_at_4("udp", 1000);
        assert_eq!(decide_at(&mut stage, &mut sampler, &udp), Verdict::Keep);
        assert_eq!(decide_at(&mut stage, &mut sampler, &udp), Verdict::Keep);
        sampler.set_hash_interval(4);
        assert_eq!(
            decide_at(&mut stage, &mut sampler, &udp),
            Verdict::SampledOut
        );
        assert_eq!(
            decide_at(&mut stage, &mut sampler, &tcp),
            Verdict::SampledOut
        );
    }

    #[test]
    fn decisions_of_a_rules_own_sampler_stay() {
        let own_sampling = Meter {
            sampling: Some(SamplerSpec::Hash(4)),
            ..Meter::default()
        };
        let mut stage = one_rule_stage(Match::default(), own_sampling);
        let mut sampler = Sampler::new(SamplerSpec::Hash(2));
        let tcp = dropped_at_4("tcp", 2000);
        assert_eq!(
            decide_at(&mut stage, &mut sampler, &tcp),
            Verdict::SampledOut
        );
        let classified = stage.counters.classified;
        sampler.set_hash_interval(1);
        assert_eq!(
            decide_at(&mut stage, &mut sampler, &tcp),
            Verdict::SampledOut
        );
        assert_eq!(stage.counters.classified, classified, "decided again");
    }
}
