//! The worker's policy stage: classifies a flow on its first packet, caches the decision
//! with the flow, and applies it to every packet (ignore, sample, reduce the key) before
//! the packet reaches the cache; marks each record leaving the cache with its policy.
//!
//! Decisions live in a per-worker table keyed by the packet's flow key (buckets of four
//! 64-byte slots, allocated once). A known flow's packet costs one hash and one bucket
//! probe whatever the number of rules; only a flow's first packet runs the classifier. A
//! decision lasts while its flow keeps sending: one idle for the cache's inactive timeout
//! has ended, and its next packet is classified again. A full bucket gives up its least
//! recently seen decision (counted): that flow is classified again on its next packet.
//!
//! A record learns its policy in one of two ways. A flow accounted under a reduced key
//! (`protocol-port`, `destination`) carries its rule in the key itself, in address bytes
//! the reduction cleared (flagged in [`FlowKey::_reserved`]): two rules never share a
//! reduced flow, and the record needs no lookup; the bytes are cleared again before
//! export. A 5-tuple flow's record finds its decision in the table by its key.
//!
//! A new rule set (SIGHUP) applies to flows classified from then on; flows with a cached
//! decision keep it until they end. The stage keeps the last [`GENERATIONS`] rule sets
//! for them; a decision of an older one is taken again from the newest.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use flowcache::{
    FlowKey, FlowRecord, PolicyMark, RecordExtras, Sampler, advise_huge_pages, flow_hash,
    keys_equal, prefetch_read,
};

use flowcache::counters::{CounterSet, Spec};

use crate::ext::ExtCounter;
use crate::policy::{Action, KeyMode, RuleSet};

/// Rule sets kept for the flows that were classified by them.
pub const GENERATIONS: usize = 8;

/// No rule selected the flow: it is metered as without policies.
const NO_RULE: u32 = u32::MAX;

/// [`FlowKey::_reserved`] flag: the key was reduced and carries its rule in `src_addr`.
const REDUCED: u8 = 0x80;

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

/// A cached decision: one cache line.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    key: FlowKey,
    rule: u32,
    /// Low 32 bits of the last packet's ms time.
    last_ms: u32,
    generation: u16,
    used: bool,
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
    slots: Vec<Slot>,
    /// Per slot: 0 when empty, else the high bits of the key's hash (never 0), so a
    /// lookup compares only the slot whose tag matches.
    tags: Vec<u16>,
    bucket_mask: usize,
    idle_ms: u32,
    counters: PolicyCounters,
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
        }
    }

    pub fn counters(&self) -> PolicyCounters {
        self.counters
    }

    /// The rule set new flows are classified by.
    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.generations.last().expect("a rule set").rules
    }

    /// Classifies new flows by `rules` from now on; cached decisions stay.
    pub fn swap(&mut self, rules: Arc<RuleSet>) {
        let id = self.generations.last().map_or(0, |g| g.id.wrapping_add(1));
        if self.generations.len() == GENERATIONS {
            self.generations.remove(0);
        }
        self.generations.push(Generation::new(id, rules));
        self.counters.reloads += 1;
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

    /// The packet's fate under its flow's decision (classifying the flow if it has none).
    /// A kept packet's key is reduced to its rule's flow key.
    #[inline]
    pub fn select(
        &mut self,
        key: &mut FlowKey,
        worker_sampler: &mut Sampler,
        keep_all: bool,
        now_ms: u64,
    ) -> Verdict {
        let hash = flow_hash(key);
        self.select_hashed(key, hash, worker_sampler, keep_all, now_ms)
    }

    /// The hash of a key, as [`PolicyStage::select_hashed`] and the prefetches take it.
    #[inline]
    pub fn hash(key: &FlowKey) -> u64 {
        flow_hash(key)
    }

    /// Requests the tags of `hash`'s bucket, ahead of its lookup.
    #[inline]
    pub fn prefetch_tags(&self, hash: u64) {
        prefetch_read(&self.tags[self.bucket(hash)]);
    }

    /// Requests the slot whose tag matches `hash` (its tags requested earlier).
    #[inline]
    pub fn prefetch_slot(&self, hash: u64) {
        let base = self.bucket(hash);
        let tag = Self::tag(hash);
        if let Some(i) = self.tags[base..base + BUCKET]
            .iter()
            .position(|&t| t == tag)
        {
            prefetch_read(&self.slots[base + i]);
        }
    }

    /// [`PolicyStage::select`] with the key's hash already computed.
    #[inline]
    pub fn select_hashed(
        &mut self,
        key: &mut FlowKey,
        hash: u64,
        worker_sampler: &mut Sampler,
        keep_all: bool,
        now_ms: u64,
    ) -> Verdict {
        let now = now_ms as u32;
        let idle = self.idle_ms;
        let found = self
            .find(key, hash)
            .filter(|&i| now.wrapping_sub(self.slots[i].last_ms) <= idle);
        let (generation, rule) = match found {
            Some(i) => {
                let slot = &mut self.slots[i];
                // Refreshed at most once a second: an unchanged line is not written back.
                if now.wrapping_sub(slot.last_ms) >= 1_000 {
                    slot.last_ms = now;
                }
                (slot.generation, slot.rule)
            }
            None => {
                let newest = self.generations.last().expect("a rule set");
                let rule = newest.rules.classify(key).unwrap_or(NO_RULE);
                self.counters.classified += 1;
                self.counters.matched += u64::from(rule != NO_RULE);
                // The ended decision of this key, a free slot, an ended decision, or the
                // least recently seen one.
                let base = self.bucket(hash);
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
                    generation: newest.id,
                    used: true,
                };
                (newest.id, rule)
            }
        };
        if rule == NO_RULE {
            return sample(worker_sampler, keep_all, key);
        }
        let Some(g) = self
            .generations
            .iter_mut()
            .rev()
            .find(|g| g.id == generation)
        else {
            // Its rule set is gone: the newest decides from now on.
            self.forget(key);
            return self.select(key, worker_sampler, keep_all, now_ms);
        };
        let state = &mut g.state[rule as usize];
        if state.ignore {
            return Verdict::Ignored;
        }
        let verdict = match state.sampler.as_mut() {
            Some(sampler) => sample(sampler, sampler.keeps_all(), key),
            None => sample(worker_sampler, keep_all, key),
        };
        if verdict == Verdict::Keep && state.key != KeyMode::FiveTuple {
            state.key.apply(key);
            key.src_addr[8..12].copy_from_slice(&rule.to_le_bytes());
            key.src_addr[12..14].copy_from_slice(&generation.to_le_bytes());
            key._reserved |= REDUCED;
        }
        verdict
    }

    fn forget(&mut self, key: &FlowKey) {
        if let Some(i) = self.find(key, flow_hash(key)) {
            self.tags[i] = 0;
            self.slots[i].used = false;
        }
    }

    /// Gives a record leaving the cache its policy: the mark (name and tag), the rule's
    /// sampling, and the reduced key without the rule it carried.
    pub fn mark(&mut self, record: &mut FlowRecord) {
        let key = &mut record.key;
        let (generation, rule) = if key._reserved & REDUCED != 0 {
            let rule = u32::from_le_bytes(key.src_addr[8..12].try_into().expect("4 bytes"));
            let generation = u16::from_le_bytes(key.src_addr[12..14].try_into().expect("2 bytes"));
            key.src_addr[8..14].fill(0);
            key._reserved &= !REDUCED;
            (generation, rule)
        } else {
            match self.find(key, flow_hash(key)).map(|i| &self.slots[i]) {
                Some(slot) => (slot.generation, slot.rule),
                None => {
                    // Its decision was given up for room: the newest rules decide.
                    let newest = self.generations.last().expect("a rule set");
                    (newest.id, newest.rules.classify(key).unwrap_or(NO_RULE))
                }
            }
        };
        if rule == NO_RULE {
            return;
        }
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

#[inline(always)]
fn sample(sampler: &mut Sampler, keep_all: bool, key: &FlowKey) -> Verdict {
    if keep_all || sampler.keep(key) {
        Verdict::Keep
    } else {
        Verdict::SampledOut
    }
}
