//! Sizing and timeouts of one cache shard.

use std::fmt;

/// How a [`crate::FlowShard`] is sized and when its flows end. Every worker's shard is built
/// from the same config; `capacity` is per shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// Entries in the shard. Rounded up to a power-of-two number of buckets of
    /// `bucket_size` slots, so [`crate::FlowShard::capacity`] may be larger.
    pub capacity: usize,
    /// Slots per bucket: 8 or 16. A flow can live only in its hash's bucket; when that
    /// bucket is full the least recently used flow of the bucket is evicted.
    pub bucket_size: usize,
    /// A flow ends (idle) once this long has passed since its last packet.
    pub inactive_timeout_ms: u64,
    /// A flow ends (active) once this long has passed since its first packet; the next
    /// packet starts a new record, so a long flow is exported in pieces. Both timeouts are
    /// at most [`crate::MAX_TIMEOUT_MS`] (about 12 days).
    pub active_timeout_ms: u64,
    /// End a TCP flow on a packet carrying FIN or RST.
    pub tcp_end_expiry: bool,
    /// Slots [`crate::FlowShard::expire`] examines per call.
    pub expiry_budget: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            capacity: 1 << 20,
            bucket_size: 16,
            inactive_timeout_ms: 15_000,
            active_timeout_ms: 1_800_000,
            tcp_end_expiry: true,
            expiry_budget: 1024,
        }
    }
}

/// Largest accepted `capacity`: 2^31 entries (about 180 GB), far beyond any real box, so a
/// typo such as an extra zero is refused instead of exhausting memory slowly.
pub const MAX_CAPACITY: usize = 1 << 31;

/// Why a [`CacheConfig`] was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheConfigError {
    Capacity(usize),
    BucketSize(usize),
    InactiveTimeoutZero,
    ActiveTimeoutZero,
    /// A timeout longer than [`crate::MAX_TIMEOUT_MS`]; the value in ms.
    TimeoutTooLong(u64),
    ExpiryBudgetZero,
}

impl fmt::Display for CacheConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheConfigError::Capacity(c) => {
                write!(
                    f,
                    "cache capacity {c} is out of range (1 to {MAX_CAPACITY} entries)"
                )
            }
            CacheConfigError::BucketSize(b) => {
                write!(f, "cache bucket size {b} is not supported (use 8 or 16)")
            }
            CacheConfigError::InactiveTimeoutZero => {
                write!(f, "inactive timeout must be at least 1 ms")
            }
            CacheConfigError::ActiveTimeoutZero => {
                write!(f, "active timeout must be at least 1 ms")
            }
            CacheConfigError::TimeoutTooLong(ms) => {
                write!(
                    f,
                    "timeout of {ms} ms is too long (at most {} ms, about 12 days)",
                    crate::MAX_TIMEOUT_MS
                )
            }
            CacheConfigError::ExpiryBudgetZero => {
                write!(f, "expiry budget must be at least 1 entry per call")
            }
        }
    }
}

impl std::error::Error for CacheConfigError {}

impl CacheConfig {
    pub fn validate(&self) -> Result<(), CacheConfigError> {
        if self.capacity == 0 || self.capacity > MAX_CAPACITY {
            return Err(CacheConfigError::Capacity(self.capacity));
        }
        if self.bucket_size != 8 && self.bucket_size != 16 {
            return Err(CacheConfigError::BucketSize(self.bucket_size));
        }
        if self.inactive_timeout_ms == 0 {
            return Err(CacheConfigError::InactiveTimeoutZero);
        }
        if self.active_timeout_ms == 0 {
            return Err(CacheConfigError::ActiveTimeoutZero);
        }
        for timeout in [self.inactive_timeout_ms, self.active_timeout_ms] {
            if timeout > crate::MAX_TIMEOUT_MS {
                return Err(CacheConfigError::TimeoutTooLong(timeout));
            }
        }
        if self.expiry_budget == 0 {
            return Err(CacheConfigError::ExpiryBudgetZero);
        }
        Ok(())
    }

    /// Buckets the shard will have: `capacity / bucket_size` rounded up to a power of two.
    pub fn bucket_count(&self) -> usize {
        self.capacity
            .div_ceil(self.bucket_size.max(1))
            .next_power_of_two()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_matches_documented_timeouts() {
        let c = CacheConfig::default();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.inactive_timeout_ms, 15_000);
        assert_eq!(c.active_timeout_ms, 1_800_000);
        assert!(c.tcp_end_expiry);
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        let ok = CacheConfig::default();
        let cases = [
            (CacheConfig { capacity: 0, ..ok }, "capacity 0"),
            (
                CacheConfig {
                    capacity: MAX_CAPACITY + 1,
                    ..ok
                },
                "out of range",
            ),
            (
                CacheConfig {
                    bucket_size: 4,
                    ..ok
                },
                "bucket size 4",
            ),
            (
                CacheConfig {
                    inactive_timeout_ms: 0,
                    ..ok
                },
                "inactive timeout",
            ),
            (
                CacheConfig {
                    active_timeout_ms: 0,
                    ..ok
                },
                "active timeout",
            ),
            (
                CacheConfig {
                    active_timeout_ms: crate::MAX_TIMEOUT_MS + 1,
                    ..ok
                },
                "too long",
            ),
            (
                CacheConfig {
                    expiry_budget: 0,
                    ..ok
                },
                "expiry budget",
            ),
        ];
        for (config, text) in cases {
            let err = config.validate().expect_err(text);
            assert!(err.to_string().contains(text), "{err} lacks {text:?}");
        }
    }

    #[test]
    fn bucket_count_rounds_up_to_a_power_of_two() {
        let c = CacheConfig {
            capacity: 100,
            bucket_size: 8,
            ..CacheConfig::default()
        };
        assert_eq!(c.bucket_count(), 16);
        let c = CacheConfig {
            capacity: 128,
            bucket_size: 16,
            ..CacheConfig::default()
        };
        assert_eq!(c.bucket_count(), 8);
        let c = CacheConfig {
            capacity: 1,
            bucket_size: 16,
            ..CacheConfig::default()
        };
        assert_eq!(c.bucket_count(), 1);
    }
}
