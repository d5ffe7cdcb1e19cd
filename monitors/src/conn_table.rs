//! A capped table for extensions that look an entry up per packet or per record: open
//! addressing with linear probing over cache-line-aligned slots, so an entry's slot can be
//! prefetched when the packet (or record) is seen and read a little later, when the miss
//! is over.
//!
//! A slot holds the key and what the entry keeps beside it ([`Slot::live`]: the analyzers'
//! SYN time or packet and octet totals in the slot's one cache line; the KPI monitor's
//! counts per endpoint and a TCP connection's per-packet state, a second line, prefetched
//! with the first); the rest of an entry's state, if any, lives in a slab beside the
//! slots, reached through the slot (or by its slab index, [`ConnTable::value_index`]), so
//! the slots stay small and a table of a million entries stays small to probe. At
//! `max_len` entries nothing more is inserted (the caller counts what it could not track);
//! the table grows by doubling up to twice `max_len` slots, so probes stay short. Removal
//! shifts the rest of the probe chain back (no tombstones), so a table with churn never
//! needs rebuilding.

use std::hash::{BuildHasher, Hash, Hasher};

use flowcache::{advise_huge_pages, prefetch_lines};

/// One slot: the key, the entry's slab index + 1 (0: empty), the low bits of the key's
/// hash (where its probe starts in any table of up to 2^32 slots: removal and growth move
/// entries without hashing their keys again), and the entry's in-line state. What a probe
/// reads (key, value) comes first, so that a slot of two lines (an in-line state larger
/// than the first line's rest) is probed on its first line.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Slot<K, L = [u64; 2]> {
    pub key: K,
    value: u32,
    home: u32,
    pub live: L,
}

impl<K: Copy + Default, L: Copy + Default> Slot<K, L> {
    fn empty() -> Slot<K, L> {
        Slot {
            key: K::default(),
            live: L::default(),
            value: 0,
            home: 0,
        }
    }

    /// `n` empty slots, on huge pages where the kernel has them: looked up at random, a
    /// large table on 4 KB pages also misses the TLB on nearly every lookup.
    fn table(n: usize) -> Vec<Slot<K, L>> {
        let mut slots = Vec::with_capacity(n);
        advise_huge_pages(&slots);
        slots.resize(n, Slot::empty());
        slots
    }
}

/// The table's hash: a multiply-rotate step per word of the key and a 64-bit finalizer, so
/// the low bits that pick the slot depend on every bit of the key. Keys are a few words
/// (addresses and ports) hashed once per packet or record, where ahash's general-purpose
/// rounds and length prefixes cost several times as many instructions. Fixed seed, like
/// the ahash seeds it replaces: not meant to resist chosen keys; the table's cap bounds
/// what they could do.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct WordHash;

#[derive(Clone, Copy, Debug)]
pub(crate) struct WordHasher(u64);

impl WordHasher {
    const SEED: u64 = 0x6b70_6974_6162_6c65;
    const K: u64 = 0x9e37_79b9_7f4a_7c15;

    #[inline(always)]
    fn add(&mut self, word: u64) {
        self.0 = (self.0 ^ word).wrapping_mul(Self::K).rotate_left(29);
    }
}

impl Hasher for WordHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word) ^ (rest.len() as u64) << 59);
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // murmur3's fmix64.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

impl BuildHasher for WordHash {
    type Hasher = WordHasher;

    #[inline]
    fn build_hasher(&self) -> WordHasher {
        WordHasher(WordHasher::SEED)
    }
}

#[derive(Debug)]
pub(crate) struct ConnTable<K, V, L = [u64; 2]> {
    slots: Vec<Slot<K, L>>,
    mask: usize,
    len: usize,
    max_len: usize,
    values: Vec<V>,
    free: Vec<u32>,
}

/// Slots to start with: enough for a small link without growing, 4 MB.
const INITIAL_SLOTS: usize = 1 << 16;

impl<K: Copy + Default + Eq + Hash, V, L: Copy + Default> ConnTable<K, V, L> {
    pub fn new(max_len: usize) -> ConnTable<K, V, L> {
        // Slots are numbered by u32 (`home`): at most 2^31 entries in 2^32 slots.
        let max_len = max_len.clamp(1, 1 << 31);
        let slots = (max_len * 2).next_power_of_two().min(INITIAL_SLOTS);
        ConnTable {
            slots: Slot::table(slots),
            mask: slots - 1,
            len: 0,
            max_len,
            values: Vec::new(),
            free: Vec::new(),
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_full(&self) -> bool {
        self.len >= self.max_len
    }

    #[inline]
    pub fn hash(&self, key: &K) -> u64 {
        WordHash.hash_one(key)
    }

    /// Starts loading the slot where a lookup of `hash` begins: all its cache lines.
    #[inline]
    pub fn prefetch_slot(&self, hash: u64) {
        prefetch_lines(&self.slots[hash as usize & self.mask]);
    }

    /// The slab index of the entry in `slot`: stable while the entry lives (removal and
    /// growth move slots, never values), so state kept beside the table can be indexed
    /// by it.
    #[inline]
    pub fn value_index(&self, slot: usize) -> usize {
        self.slots[slot].value as usize - 1
    }

    /// The slot holding `key`.
    #[inline]
    pub fn find(&self, key: &K, hash: u64) -> Option<usize> {
        let mut i = hash as usize & self.mask;
        loop {
            let slot = &self.slots[i];
            if slot.value == 0 {
                return None;
            }
            if slot.key == *key {
                return Some(i);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Inserts `key` (absent) with `value` and a default in-line state; `None` when the
    /// table is full.
    pub fn insert(&mut self, key: K, hash: u64, value: V) -> Option<usize> {
        if self.is_full() {
            return None;
        }
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let index = match self.free.pop() {
            Some(index) => {
                self.values[index as usize] = value;
                index
            }
            None => {
                self.values.push(value);
                (self.values.len() - 1) as u32
            }
        };
        let mut i = hash as usize & self.mask;
        while self.slots[i].value != 0 {
            i = (i + 1) & self.mask;
        }
        self.slots[i] = Slot {
            key,
            live: L::default(),
            value: index + 1,
            home: hash as u32,
        };
        self.len += 1;
        Some(i)
    }

    #[cfg(test)]
    pub fn slot(&self, slot: usize) -> &Slot<K, L> {
        &self.slots[slot]
    }

    /// The slot's in-line state and its value.
    pub fn entry_mut(&mut self, slot: usize) -> (&mut Slot<K, L>, &mut V) {
        let s = &mut self.slots[slot];
        let value = &mut self.values[s.value as usize - 1];
        (s, value)
    }

    /// Removes the entry in `slot` (its value stays in the slab, to be reused). Slot
    /// numbers found before are stale afterwards.
    pub fn remove(&mut self, slot: usize) {
        self.free.push(self.slots[slot].value - 1);
        self.len -= 1;
        // Backward shift: every later entry of the probe chain whose home is not between
        // the hole and itself moves into the hole, so no chain is broken.
        let mut hole = slot;
        let mut i = (slot + 1) & self.mask;
        while self.slots[i].value != 0 {
            let home = self.slots[i].home as usize & self.mask;
            if (i.wrapping_sub(home) & self.mask) >= (i.wrapping_sub(hole) & self.mask) {
                self.slots[hole] = self.slots[i];
                hole = i;
            }
            i = (i + 1) & self.mask;
        }
        self.slots[hole].value = 0;
    }

    /// Removes every entry for which `keep` is false, in place; `keep` sees each entry
    /// once.
    pub fn retain(&mut self, mut keep: impl FnMut(&mut Slot<K, L>, &mut V) -> bool) {
        if self.len == 0 {
            return;
        }
        // Start after an empty slot: no probe chain wraps past it, so an entry shifted
        // back by a removal comes from a slot not visited yet.
        let start = self
            .slots
            .iter()
            .position(|s| s.value == 0)
            .expect("at most half the slots are used");
        let mut visited = 0;
        let mut i = (start + 1) & self.mask;
        while visited < self.slots.len() {
            let slot = &mut self.slots[i];
            if slot.value != 0 && !keep(slot, &mut self.values[slot.value as usize - 1]) {
                // The slot now holds the next entry of the chain, or nothing.
                self.remove(i);
                continue;
            }
            visited += 1;
            i = (i + 1) & self.mask;
        }
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        if self.len > 0 {
            self.slots.fill(Slot::empty());
            self.values.clear();
            self.free.clear();
            self.len = 0;
        }
    }

    /// Every entry: its slot and its value.
    pub fn iter(&self) -> impl Iterator<Item = (&Slot<K, L>, &V)> {
        self.slots
            .iter()
            .filter(|s| s.value != 0)
            .map(|s| (s, &self.values[s.value as usize - 1]))
    }

    fn grow(&mut self) {
        let limit = (self.max_len * 2).next_power_of_two();
        if self.slots.len() < limit {
            self.rebuild(self.slots.len() * 2);
        }
    }

    fn rebuild(&mut self, slots: usize) {
        let old = std::mem::replace(&mut self.slots, Slot::table(slots));
        self.mask = slots - 1;
        for slot in old.into_iter().filter(|s| s.value != 0) {
            let mut i = slot.home as usize & self.mask;
            while self.slots[i].value != 0 {
                i = (i + 1) & self.mask;
            }
            self.slots[i] = slot;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_finds_grows_and_retains() {
        let mut table: ConnTable<u64, u64> = ConnTable::new(100_000);
        for k in 1..=70_000u64 {
            let h = table.hash(&k);
            assert!(table.find(&k, h).is_none());
            let slot = table.insert(k, h, k * 10).unwrap();
            table.entry_mut(slot).0.live[0] = k;
        }
        assert_eq!(table.len(), 70_000);
        let mut seen = 0;
        table.retain(|slot, value| {
            assert_eq!(*value, slot.key * 10);
            seen += 1;
            slot.key % 2 == 0
        });
        assert_eq!(seen, 70_000, "each entry once");
        assert_eq!(table.len(), 35_000);
        for k in 1..=70_000u64 {
            let found = table.find(&k, table.hash(&k));
            assert_eq!(found.is_some(), k % 2 == 0, "{k}");
            if let Some(slot) = found {
                assert_eq!(table.slot(slot).live[0], k);
                assert_eq!(*table.entry_mut(slot).1, k * 10);
            }
        }
        // Freed values are reused; a full table refuses.
        let mut small: ConnTable<u64, u64> = ConnTable::new(3);
        for k in 0..3u64 {
            assert!(small.insert(k, small.hash(&k), k).is_some());
        }
        assert!(small.insert(9, small.hash(&9), 9).is_none());
        small.retain(|s, _| s.key != 1);
        assert!(small.insert(9, small.hash(&9), 90).is_some());
        assert_eq!(small.values.len(), 3);
        small.clear();
        assert!(small.is_empty() && small.iter().next().is_none());
    }

    /// Removal keeps every other key findable, against a std `HashMap` as the truth, in a
    /// table filled to its cap, where probe chains are long and wrap around the end.
    #[test]
    fn removal_keeps_the_other_chains_whole() {
        use std::collections::HashMap;
        let mut table: ConnTable<u32, (), u32> = ConnTable::new(500);
        let mut truth = HashMap::new();
        let mut random = 0x1234_5678u32;
        for step in 0..200_000u32 {
            random ^= random << 13;
            random ^= random >> 17;
            random ^= random << 5;
            let key = random % 900;
            let hash = table.hash(&key);
            match table.find(&key, hash) {
                Some(slot) if random & 0x100 != 0 => {
                    assert_eq!(table.slot(slot).live, truth[&key]);
                    table.remove(slot);
                    truth.remove(&key);
                }
                Some(_) => {}
                None => {
                    assert!(!truth.contains_key(&key), "{key} lost at step {step}");
                    if let Some(slot) = table.insert(key, hash, ()) {
                        table.entry_mut(slot).0.live = step;
                        truth.insert(key, step);
                    } else {
                        assert_eq!(truth.len(), 500);
                    }
                }
            }
            assert_eq!(table.len(), truth.len());
        }
        let mut listed: Vec<(u32, u32)> = table.iter().map(|(s, _)| (s.key, s.live)).collect();
        let mut expected: Vec<(u32, u32)> = truth.into_iter().collect();
        listed.sort_unstable();
        expected.sort_unstable();
        assert_eq!(listed, expected);
    }
}
