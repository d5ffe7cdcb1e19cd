//! Packet sampling in front of the cache.
//!
//! - `none`: every packet is kept.
//! - `deterministic:N`: the Nth, 2Nth, 3Nth, ... packet the sampler sees is kept (counting
//!   from 1), whatever flow it belongs to.
//! - `random:N`: each packet is kept independently with probability 1/N, drawn from a
//!   wyrand generator (seed from [`Sampler::with_seed`], or a fixed constant).
//! - `hash:N`: flow sampling; a packet is kept iff [`crate::flow_sample_hash`] of its key
//!   is divisible by N, so a flow is kept or dropped whole, in both directions, on every
//!   probe using the same N.
//!
//! The kind and N travel with every record as [`SamplingInfo`], so the exporter can report
//! them and collectors can scale counts back up.

use std::fmt;
use std::str::FromStr;

use crate::{FlowKey, SamplingAlgorithm, SamplingInfo, flow_sample_hash};

/// Which sampler, and its 1-in-N interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SamplerSpec {
    #[default]
    None,
    Deterministic(u32),
    Random(u32),
    Hash(u32),
}

impl SamplerSpec {
    /// The 1-in-N interval (1 for `None`; an interval of 0 built in code counts as 1).
    pub fn interval(self) -> u32 {
        match self {
            SamplerSpec::None => 1,
            SamplerSpec::Deterministic(n) | SamplerSpec::Random(n) | SamplerSpec::Hash(n) => {
                n.max(1)
            }
        }
    }

    pub fn info(self) -> SamplingInfo {
        let algorithm = match self {
            SamplerSpec::None => SamplingAlgorithm::None,
            SamplerSpec::Deterministic(_) => SamplingAlgorithm::Deterministic,
            SamplerSpec::Random(_) => SamplingAlgorithm::Random,
            SamplerSpec::Hash(_) => SamplingAlgorithm::Hash,
        };
        SamplingInfo {
            algorithm,
            interval: self.interval(),
        }
    }
}

impl fmt::Display for SamplerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SamplerSpec::None => write!(f, "none"),
            SamplerSpec::Deterministic(n) => write!(f, "deterministic:{n}"),
            SamplerSpec::Random(n) => write!(f, "random:{n}"),
            SamplerSpec::Hash(n) => write!(f, "hash:{n}"),
        }
    }
}

/// Why a sampler specification did not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SamplerSpecError {
    input: String,
    reason: &'static str,
}

impl fmt::Display for SamplerSpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid sampler {:?}: {} (expected \"none\", \"deterministic:N\", \"random:N\" or \
             \"hash:N\" with N from 1 to {})",
            self.input,
            self.reason,
            u32::MAX
        )
    }
}

impl std::error::Error for SamplerSpecError {}

impl FromStr for SamplerSpec {
    type Err = SamplerSpecError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let error = |reason| SamplerSpecError {
            input: input.to_owned(),
            reason,
        };
        if input == "none" {
            return Ok(SamplerSpec::None);
        }
        let Some((kind, rate)) = input.split_once(':') else {
            return Err(error("unknown sampler kind"));
        };
        let make: fn(u32) -> SamplerSpec = match kind {
            "deterministic" => SamplerSpec::Deterministic,
            "random" => SamplerSpec::Random,
            "hash" => SamplerSpec::Hash,
            "none" => return Err(error("\"none\" takes no rate")),
            _ => return Err(error("unknown sampler kind")),
        };
        if rate.is_empty() || !rate.bytes().all(|b| b.is_ascii_digit()) {
            return Err(error("the rate N is not a whole number"));
        }
        match rate.parse::<u32>() {
            Ok(0) => Err(error("the rate N must be at least 1")),
            Ok(n) => Ok(make(n)),
            Err(_) => Err(error("the rate N is too large")),
        }
    }
}

/// Seed used by [`Sampler::new`] for the random sampler.
pub const DEFAULT_RANDOM_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// A packet sampler; one per worker, no locks, no allocation.
#[derive(Clone, Debug)]
pub struct Sampler {
    spec: SamplerSpec,
    interval: u32,
    /// `interval - 1` when the interval is a power of two (hash sampling's `h % N == 0` is
    /// then a mask, not a 64-bit division on every packet), else 0.
    pow2_mask: u64,
    /// Packets seen since the last one kept (deterministic).
    countdown: u32,
    rng: u64,
    sampled_in: u64,
    sampled_out: u64,
}

impl Sampler {
    pub fn new(spec: SamplerSpec) -> Sampler {
        Sampler::with_seed(spec, DEFAULT_RANDOM_SEED)
    }

    /// Give each worker its own seed so random samplers on several cores are independent.
    pub fn with_seed(spec: SamplerSpec, seed: u64) -> Sampler {
        let interval = spec.interval();
        Sampler {
            spec,
            interval,
            pow2_mask: pow2_mask(interval),
            countdown: interval,
            rng: seed,
            sampled_in: 0,
            sampled_out: 0,
        }
    }

    /// Whether every packet goes on to the cache (no sampling): a caller may then skip
    /// [`Sampler::keep`] per packet and report the burst with [`Sampler::kept_all`].
    #[inline]
    pub fn keeps_all(&self) -> bool {
        matches!(self.spec, SamplerSpec::None)
    }

    /// Counts `packets` kept without asking [`Sampler::keep`] (only when
    /// [`Sampler::keeps_all`]).
    #[inline]
    pub fn kept_all(&mut self, packets: u64) {
        debug_assert!(self.keeps_all(), "only an unsampled sampler keeps unasked");
        self.sampled_in += packets;
    }

    /// Whether the packet with this key goes on to the cache. Counts it either way.
    #[inline]
    pub fn keep(&mut self, key: &FlowKey) -> bool {
        let keep = match self.spec {
            SamplerSpec::None => true,
            SamplerSpec::Deterministic(_) => {
                self.countdown -= 1;
                if self.countdown == 0 {
                    self.countdown = self.interval;
                    true
                } else {
                    false
                }
            }
            SamplerSpec::Random(_) => {
                // Multiply-shift maps the 64-bit draw onto 0..N without modulo bias.
                let draw = wyrand(&mut self.rng);
                (u128::from(draw) * u128::from(self.interval)) >> 64 == 0
            }
            SamplerSpec::Hash(_) => {
                let h = flow_sample_hash(key);
                if self.pow2_mask != 0 {
                    h & self.pow2_mask == 0
                } else {
                    h.is_multiple_of(u64::from(self.interval))
                }
            }
        };
        if keep {
            self.sampled_in += 1;
        } else {
            self.sampled_out += 1;
        }
        keep
    }

    pub fn spec(&self) -> SamplerSpec {
        self.spec
    }

    /// Switches to hash sampling at 1 in `interval` (1: keep everything), keeping the
    /// counts. With powers of two the kept flows nest: a flow kept at 1 in 2N is kept at
    /// 1 in N, so raising the interval only drops flows and lowering it only adds some
    /// (what adaptive sampling relies on, `probe::adaptive`).
    pub fn set_hash_interval(&mut self, interval: u32) {
        self.spec = if interval <= 1 {
            SamplerSpec::None
        } else {
            SamplerSpec::Hash(interval)
        };
        self.interval = self.spec.interval();
        self.pow2_mask = pow2_mask(self.interval);
        self.countdown = self.interval;
    }

    /// What to record with the flows built from the kept packets.
    pub fn info(&self) -> SamplingInfo {
        self.spec.info()
    }

    /// Packets kept.
    pub fn sampled_in(&self) -> u64 {
        self.sampled_in
    }

    /// Packets dropped by sampling.
    pub fn sampled_out(&self) -> u64 {
        self.sampled_out
    }
}

/// A sampler's `pow2_mask` for `interval`.
fn pow2_mask(interval: u32) -> u64 {
    if interval > 1 && interval.is_power_of_two() {
        u64::from(interval - 1)
    } else {
        0
    }
}

/// wyrand (Wang Yi): one 64-bit add and one 64x64->128 multiply per draw; passes BigCrush.
#[inline]
fn wyrand(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0xa076_1d64_78bd_642f);
    let product = u128::from(*state) * u128::from(*state ^ 0xe703_7ed1_a0b4_28db);
    (product >> 64) as u64 ^ product as u64
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn key_number(i: u32) -> FlowKey {
        let mut k = FlowKey {
            protocol: 17,
            ip_version: 4,
            ..FlowKey::default()
        };
        k.src_addr[..4].copy_from_slice(&i.to_be_bytes());
        k.dst_addr[..4].copy_from_slice(&[10, 0, 0, 1]);
        k.src_port = (i % 50_000) as u16;
        k.dst_port = 53;
        k
    }

    #[test]
    fn parses_every_kind_and_round_trips_through_display() {
        let cases = [
            ("none", SamplerSpec::None),
            ("deterministic:1", SamplerSpec::Deterministic(1)),
            ("random:100", SamplerSpec::Random(100)),
            ("hash:4294967295", SamplerSpec::Hash(u32::MAX)),
        ];
        for (text, spec) in cases {
            assert_eq!(text.parse::<SamplerSpec>(), Ok(spec));
            assert_eq!(spec.to_string(), text);
        }
    }

    #[test]
    fn bad_specs_are_refused_with_the_reason() {
        let cases = [
            ("", "unknown sampler kind"),
            ("random", "unknown sampler kind"),
            ("systematic:10", "unknown sampler kind"),
            ("none:5", "takes no rate"),
            ("random:0", "at least 1"),
            ("random:", "not a whole number"),
            ("random:-3", "not a whole number"),
            ("random:+3", "not a whole number"),
            ("hash:1.5", "not a whole number"),
            ("hash:4294967296", "too large"),
            ("Random:10", "unknown sampler kind"),
        ];
        for (text, reason) in cases {
            let err = text.parse::<SamplerSpec>().expect_err(text).to_string();
            assert!(err.contains(reason), "{text:?}: {err}");
            assert!(
                err.contains(&format!("{text:?}")),
                "{err} does not quote the input"
            );
        }
    }

    #[test]
    fn info_carries_kind_and_interval() {
        assert_eq!(
            Sampler::new(SamplerSpec::None).info(),
            SamplingInfo::default()
        );
        let info = Sampler::new(SamplerSpec::Hash(64)).info();
        assert_eq!(
            (info.algorithm, info.interval),
            (SamplingAlgorithm::Hash, 64)
        );
        let info = Sampler::new(SamplerSpec::Deterministic(0)).info();
        assert_eq!(
            (info.algorithm, info.interval),
            (SamplingAlgorithm::Deterministic, 1)
        );
    }

    #[test]
    fn none_keeps_everything() {
        let mut s = Sampler::new(SamplerSpec::None);
        assert!((0..1000).all(|i| s.keep(&key_number(i))));
        assert_eq!((s.sampled_in(), s.sampled_out()), (1000, 0));
    }

    #[test]
    fn deterministic_keeps_exactly_every_nth_packet() {
        for n in [1u32, 2, 7, 100] {
            let mut s = Sampler::new(SamplerSpec::Deterministic(n));
            let kept: Vec<u32> = (1..=1000u32)
                .filter(|&i| s.keep(&key_number(i % 3)))
                .collect();
            let expected: Vec<u32> = (1..=1000u32).filter(|i| i % n == 0).collect();
            assert_eq!(kept, expected, "1 in {n}");
            assert_eq!(s.sampled_in(), u64::from(1000 / n));
            assert_eq!(s.sampled_in() + s.sampled_out(), 1000);
        }
    }

    #[test]
    fn random_rate_is_within_five_sigma_over_a_million_packets() {
        const PACKETS: u64 = 1_000_000;
        for (n, seed) in [(2u32, 1u64), (10, 2), (100, 3), (1000, DEFAULT_RANDOM_SEED)] {
            let mut s = Sampler::with_seed(SamplerSpec::Random(n), seed);
            let key = key_number(1);
            for _ in 0..PACKETS {
                s.keep(&key);
            }
            let p = 1.0 / f64::from(n);
            let mean = PACKETS as f64 * p;
            let sigma = (PACKETS as f64 * p * (1.0 - p)).sqrt();
            let kept = s.sampled_in() as f64;
            assert!(
                (kept - mean).abs() <= 5.0 * sigma,
                "1 in {n}: kept {kept}, expected {mean}"
            );
            assert_eq!(s.sampled_in() + s.sampled_out(), PACKETS);
        }
    }

    #[test]
    fn random_draws_do_not_repeat_a_pattern() {
        // Runs of kept/dropped decisions at 1 in 2 should look like coin flips: the number of
        // changes between consecutive decisions is about half the draws.
        let mut s = Sampler::with_seed(SamplerSpec::Random(2), 7);
        let key = key_number(1);
        let decisions: Vec<bool> = (0..100_000).map(|_| s.keep(&key)).collect();
        let changes = decisions.windows(2).filter(|w| w[0] != w[1]).count() as f64;
        let (mean, sigma) = (99_999.0 * 0.5, (99_999.0f64 * 0.25).sqrt());
        assert!((changes - mean).abs() <= 5.0 * sigma, "{changes} changes");
    }

    #[test]
    fn hash_sampling_keeps_a_key_iff_its_hash_is_a_multiple_of_the_interval() {
        for n in [2u32, 3, 8, 10, 64, 1 << 20] {
            let mut s = Sampler::new(SamplerSpec::Hash(n));
            for i in 0..2_000u16 {
                let key = FlowKey {
                    src_port: i,
                    dst_port: i.wrapping_mul(7),
                    protocol: 17,
                    ip_version: 4,
                    ..FlowKey::default()
                };
                assert_eq!(
                    s.keep(&key),
                    flow_sample_hash(&key).is_multiple_of(u64::from(n)),
                    "1 in {n}, {key:?}"
                );
            }
        }
    }

    #[test]
    fn power_of_two_hash_intervals_nest() {
        let mut coarse = Sampler::new(SamplerSpec::None);
        let mut fine = Sampler::new(SamplerSpec::None);
        for shift in 1..8u32 {
            fine.set_hash_interval(1 << (shift - 1));
            coarse.set_hash_interval(1 << shift);
            assert_eq!(coarse.spec(), SamplerSpec::Hash(1 << shift));
            for i in 0..20_000 {
                let k = key_number(i);
                if coarse.keep(&k) {
                    assert!(
                        fine.keep(&k),
                        "kept at 1 in {} but not half that",
                        1 << shift
                    );
                }
            }
        }
        coarse.set_hash_interval(1);
        assert!(coarse.keeps_all());
        assert_eq!(coarse.info(), SamplingInfo::default());
    }

    #[test]
    fn hash_sampling_keeps_whole_flows_at_about_the_rate() {
        let n = 8u32;
        let mut s = Sampler::new(SamplerSpec::Hash(n));
        let flows = 20_000u32;
        let mut verdicts: HashMap<FlowKey, (u32, u32)> = HashMap::new();
        // Interleave flows, both directions, several packets each.
        for round in 0..4 {
            for i in 0..flows {
                let k = key_number(i);
                let k = if round % 2 == 1 {
                    FlowKey {
                        src_addr: k.dst_addr,
                        dst_addr: k.src_addr,
                        src_port: k.dst_port,
                        dst_port: k.src_port,
                        ..k
                    }
                } else {
                    k
                };
                let kept = s.keep(&k);
                let v = verdicts.entry(key_number(i)).or_default();
                if kept { v.0 += 1 } else { v.1 += 1 }
            }
        }
        assert!(
            verdicts
                .values()
                .all(|&(kept, dropped)| kept == 0 || dropped == 0)
        );
        let kept_flows = verdicts.values().filter(|v| v.0 > 0).count() as f64;
        let p = 1.0 / f64::from(n);
        let sigma = (f64::from(flows) * p * (1.0 - p)).sqrt();
        assert!(
            (kept_flows - f64::from(flows) * p).abs() <= 5.0 * sigma,
            "{kept_flows} kept"
        );
        // A second probe (a fresh sampler) takes the same decisions.
        let mut other = Sampler::with_seed(SamplerSpec::Hash(n), 99);
        for (k, v) in &verdicts {
            assert_eq!(other.keep(k), v.0 > 0);
        }
    }
}
