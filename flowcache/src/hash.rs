//! The two hashes of a flow key.
//!
//! [`flow_hash`] places a flow in a shard's table: ahash with fixed seeds, fast and the same
//! in every run of one build (so replays are reproducible), but free to change with the
//! ahash version or CPU features. [`flow_sample_hash`] decides hash-based flow sampling:
//! a small, fully specified function of the key's bytes, so that every probe, build and
//! implementation following the spec keeps the same flows.

use std::hash::{BuildHasher, Hasher};

use crate::FlowKey;

/// Fixed seeds: the table layout, and so the cache's behaviour when full, is the same in
/// every run of a build.
const TABLE_HASH: ahash::RandomState = ahash::RandomState::with_seeds(
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7344,
    0xa409_3822_299f_31d0,
    0x082e_fa98_ec4e_6c89,
);

/// The hash a shard files `key` under when the caller supplies none.
#[inline]
pub fn flow_hash(key: &FlowKey) -> u64 {
    let mut h = TABLE_HASH.build_hasher();
    h.write_u128(u128::from_le_bytes(key.src_addr));
    h.write_u128(u128::from_le_bytes(key.dst_addr));
    h.write_u64(
        u64::from(key.src_port)
            | u64::from(key.dst_port) << 16
            | u64::from(key.vlan) << 32
            | u64::from(key.input_port) << 48,
    );
    h.write_u32(
        u32::from(key.protocol) | u32::from(key.tos) << 8 | u32::from(key.ip_version) << 16,
    );
    h.finish()
}

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;

/// The flow-sampling hash: identical for both directions of a conversation and
/// independent of ToS, VLAN and input port, so two probes on different taps of the same
/// link keep or drop the same conversations.
///
/// Specification (stable; changing it is a breaking change):
/// 1. Each endpoint is 18 bytes: its 16 address bytes as stored in [`FlowKey`] (IPv4 in
///    the first four, rest zero), then its port in network byte order. For ICMP (1) and
///    ICMPv6 (58) both ports count as 0, because the type/code differ by direction.
/// 2. Canonical bytes (38): `ip_version`, `protocol`, then the lexicographically smaller
///    endpoint, then the other.
/// 3. h = 64-bit FNV-1a of those bytes (offset basis 0xcbf29ce484222325, prime
///    0x100000001b3), then the SplitMix64 finalizer: h ^= h >> 30; h *= 0xbf58476d1ce4e5b9;
///    h ^= h >> 27; h *= 0x94d049bb133111eb; h ^= h >> 31 (wrapping arithmetic).
///
/// A flow is kept under `hash:N` iff `h % N == 0`.
///
/// Every packet pays for this decision, sampled out or not, so it is computed without the
/// 38 dependent multiplies of the byte-wise definition: an FNV-1a step on a zero byte is a
/// multiply by the prime alone, so a run of zeros (an IPv4 address's twelve trailing
/// bytes, both ports of ICMP) is one multiply by a power of the prime. An IPv4 key takes 16
/// dependent steps instead of 38 (BENCHMARKS.md, "Adaptive sampling"); the result is the
/// specification's, byte for byte (a test holds it to a byte-wise reference).
#[inline]
pub fn flow_sample_hash(key: &FlowKey) -> u64 {
    let ports_count = !matches!(key.protocol, IPPROTO_ICMP | IPPROTO_ICMPV6);
    let (src_port, dst_port) = if ports_count {
        (key.src_port, key.dst_port)
    } else {
        (0, 0)
    };
    // An endpoint's 18 bytes compare as its address (big-endian) and then its port.
    let src = u128::from_be_bytes(key.src_addr);
    let dst = u128::from_be_bytes(key.dst_addr);
    let ((low, low_port), (high, high_port)) = if (src, src_port) <= (dst, dst_port) {
        ((src, src_port), (dst, dst_port))
    } else {
        ((dst, dst_port), (src, src_port))
    };
    let mut h = fnv_byte(FNV_OFFSET, key.ip_version);
    h = fnv_byte(h, key.protocol);
    h = fnv_endpoint(h, low, low_port);
    h = fnv_endpoint(h, high, high_port);
    splitmix64_finalize(h)
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
/// FNV-1a over `n` zero bytes is a multiply by `FNV_PRIME^n`.
const FNV_PRIME_POW_2: u64 = FNV_PRIME.wrapping_mul(FNV_PRIME);
const FNV_PRIME_POW_12: u64 = {
    let p4 = FNV_PRIME_POW_2.wrapping_mul(FNV_PRIME_POW_2);
    p4.wrapping_mul(p4).wrapping_mul(p4)
};

#[inline(always)]
fn fnv_byte(h: u64, byte: u8) -> u64 {
    (h ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
}

/// FNV-1a over an endpoint's 16 address bytes (as a big-endian integer) and its port in
/// network byte order, skipping zero runs: the last 12 address bytes (IPv4), the port
/// (ICMP).
#[inline(always)]
fn fnv_endpoint(mut h: u64, addr: u128, port: u16) -> u64 {
    let bytes = addr.to_be_bytes();
    if addr as u64 == 0 && (addr >> 64) as u32 == 0 {
        for &b in &bytes[..4] {
            h = fnv_byte(h, b);
        }
        h = h.wrapping_mul(FNV_PRIME_POW_12);
    } else {
        for &b in &bytes {
            h = fnv_byte(h, b);
        }
    }
    if port == 0 {
        h.wrapping_mul(FNV_PRIME_POW_2)
    } else {
        let [a, b] = port.to_be_bytes();
        fnv_byte(fnv_byte(h, a), b)
    }
}

/// The specification above, byte by byte: what [`flow_sample_hash`] is tested against.
#[cfg(test)]
fn reference_sample_hash(key: &FlowKey) -> u64 {
    let ports_count = !matches!(key.protocol, IPPROTO_ICMP | IPPROTO_ICMPV6);
    let endpoint = |addr: &[u8; 16], port: u16| {
        let mut e = [0u8; 18];
        e[..16].copy_from_slice(addr);
        if ports_count {
            e[16..].copy_from_slice(&port.to_be_bytes());
        }
        e
    };
    let a = endpoint(&key.src_addr, key.src_port);
    let b = endpoint(&key.dst_addr, key.dst_port);
    let (low, high) = if a <= b { (a, b) } else { (b, a) };

    let mut h: u64 = FNV_OFFSET;
    let mut eat = |byte: u8| {
        h ^= u64::from(byte);
        h = h.wrapping_mul(FNV_PRIME);
    };
    eat(key.ip_version);
    eat(key.protocol);
    low.iter().chain(high.iter()).for_each(|&byte| eat(byte));
    splitmix64_finalize(h)
}

#[inline]
pub(crate) fn splitmix64_finalize(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn key(src: &str, sport: u16, dst: &str, dport: u16, protocol: u8) -> FlowKey {
        let mut k = FlowKey {
            src_port: sport,
            dst_port: dport,
            protocol,
            ..FlowKey::default()
        };
        k.set_addrs(
            src.parse::<IpAddr>().unwrap(),
            dst.parse::<IpAddr>().unwrap(),
        );
        k
    }

    #[test]
    fn sample_hash_matches_the_specification_vector() {
        // Computed outside Rust from the specification in the doc comment (Python):
        //   b = bytes([4, 6]) + a(10.0.0.1)+port(1234) + a(192.168.1.9)+port(80), then FNV-1a
        //   64 and the SplitMix64 finalizer.
        let k = key("192.168.1.9", 80, "10.0.0.1", 1234, 6);
        assert_eq!(flow_sample_hash(&k), 0x7fb2_f13d_81ff_17a3);
        let k6 = key("2001:db8::2", 53, "2001:db8::1", 40000, 17);
        assert_eq!(flow_sample_hash(&k6), 0xc20e_ea5c_1e75_54cc);
    }

    #[test]
    fn sample_hash_skipping_zero_runs_is_the_byte_wise_specification() {
        // Keys of every shape the shortcuts distinguish: IPv4 (zero address tails), IPv6
        // with and without zero runs, ICMP (ports count as zero), zero ports, endpoints
        // that differ only in the port, and random bytes.
        let mut keys = vec![
            key("10.0.0.1", 1234, "192.168.1.9", 80, 6),
            key("10.0.0.1", 1234, "10.0.0.1", 80, 17),
            key("10.0.0.1", 0, "10.0.0.2", 0, 17),
            key("0.0.0.0", 0, "0.0.0.0", 0, 6),
            key("10.1.1.1", 0, "10.2.2.2", 8 << 8, 1),
            key("2001:db8::1", 40000, "2001:db8::2", 53, 17),
            key("::", 1, "::1", 2, 17),
            key("fe80::1:0:0:0", 5, "fe80::", 5, 58),
        ];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..5_000 {
            let mut k = FlowKey {
                src_port: next() as u16,
                dst_port: next() as u16,
                protocol: [6, 17, 1, 58, 132][i % 5],
                ip_version: if i % 2 == 0 { 4 } else { 6 },
                ..FlowKey::default()
            };
            let (s, d) = (
                u128::from(next()) << 64 | u128::from(next()),
                u128::from(next()),
            );
            k.src_addr = s.to_be_bytes();
            k.dst_addr = d.to_be_bytes();
            if k.ip_version == 4 {
                k.src_addr[4..].fill(0);
                k.dst_addr[4..].fill(0);
            }
            if i % 7 == 0 {
                k.dst_addr = k.src_addr;
            }
            keys.push(k);
        }
        for k in &keys {
            assert_eq!(flow_sample_hash(k), reference_sample_hash(k), "{k:?}");
        }
    }

    #[test]
    fn sample_hash_is_direction_independent_and_ignores_tap_fields() {
        let fwd = key("10.1.1.1", 40000, "10.2.2.2", 443, 6);
        let rev = key("10.2.2.2", 443, "10.1.1.1", 40000, 6);
        assert_eq!(flow_sample_hash(&fwd), flow_sample_hash(&rev));
        let tapped = FlowKey {
            vlan: 12,
            input_port: 3,
            tos: 0x28,
            ..fwd
        };
        assert_eq!(flow_sample_hash(&fwd), flow_sample_hash(&tapped));
        let other_port = key("10.1.1.1", 40001, "10.2.2.2", 443, 6);
        assert_ne!(flow_sample_hash(&fwd), flow_sample_hash(&other_port));
        // ICMP echo request and reply carry different type/code but are one conversation.
        let request = key("10.1.1.1", 0, "10.2.2.2", 8 << 8, 1);
        let reply = key("10.2.2.2", 0, "10.1.1.1", 0, 1);
        assert_eq!(flow_sample_hash(&request), flow_sample_hash(&reply));
    }

    #[test]
    fn table_hash_depends_on_every_key_field() {
        let base = key("10.1.1.1", 1, "10.2.2.2", 2, 17);
        let variants = [
            FlowKey {
                src_port: 9,
                ..base
            },
            FlowKey {
                dst_port: 9,
                ..base
            },
            FlowKey { vlan: 9, ..base },
            FlowKey {
                input_port: 9,
                ..base
            },
            FlowKey {
                protocol: 6,
                ..base
            },
            FlowKey { tos: 9, ..base },
            FlowKey {
                ip_version: 6,
                ..base
            },
            key("10.1.1.9", 1, "10.2.2.2", 2, 17),
            key("10.1.1.1", 1, "10.2.2.9", 2, 17),
        ];
        for v in variants {
            assert_ne!(flow_hash(&base), flow_hash(&v), "{v:?}");
        }
        assert_eq!(flow_hash(&base), flow_hash(&{ base }));
    }
}
