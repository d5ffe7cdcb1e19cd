//! A capped table of conversations for extensions that look one up per packet: open
//! addressing with linear probing over 64-byte slots, so a packet's slot can be
//! prefetched when the packet is seen and read a burst later, when the miss is over.
//!
//! A slot holds the key and the per-packet counters ([`Slot::live`]); the rest of a
//! conversation's state lives in a slab beside it, reached through the slot, so the slots
//! stay one cache line each and a table of a million conversations stays small to probe.
//! At `max_len` entries nothing more is inserted (the caller counts what it could not
//! track); the table grows by doubling up to twice `max_len` slots, so probes stay short.

use std::hash::Hash;

use flowcache::prefetch_read;

/// One slot: the key, packets seen per endpoint and not yet exported, and the entry's slab
/// index + 1 (0: empty).
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Slot<K> {
    pub key: K,
    pub live: [u64; 2],
    value: u32,
}

impl<K: Copy + Default> Slot<K> {
    fn empty() -> Slot<K> {
        Slot {
            key: K::default(),
            live: [0, 0],
            value: 0,
        }
    }
}

#[derive(Debug)]
pub(crate) struct ConnTable<K, V> {
    slots: Vec<Slot<K>>,
    mask: usize,
    len: usize,
    max_len: usize,
    values: Vec<V>,
    free: Vec<u32>,
    hasher: ahash::RandomState,
}

/// Slots to start with: enough for a small link without growing, 4 MB.
const INITIAL_SLOTS: usize = 1 << 16;

impl<K: Copy + Default + Eq + Hash, V> ConnTable<K, V> {
    pub fn new(max_len: usize) -> ConnTable<K, V> {
        let max_len = max_len.clamp(1, u32::MAX as usize - 1);
        let slots = (max_len * 2).next_power_of_two().min(INITIAL_SLOTS);
        ConnTable {
            slots: vec![Slot::empty(); slots],
            mask: slots - 1,
            len: 0,
            max_len,
            values: Vec::new(),
            free: Vec::new(),
            hasher: ahash::RandomState::with_seeds(0x6b70, 0x6974, 0x6162, 0x6c65),
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_full(&self) -> bool {
        self.len >= self.max_len
    }

    pub fn hash(&self, key: &K) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Starts loading the slot where a lookup of `hash` begins.
    #[inline]
    pub fn prefetch_slot(&self, hash: u64) {
        prefetch_read(&self.slots[hash as usize & self.mask]);
    }

    /// Starts loading the value of the entry in `slot`.
    #[inline]
    pub fn prefetch_value(&self, slot: usize) {
        if let Some(value) = self
            .values
            .get(self.slots[slot].value.wrapping_sub(1) as usize)
        {
            prefetch_read(value);
        }
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

    /// Inserts `key` (absent) with `value`; `None` when the table is full.
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
            live: [0, 0],
            value: index + 1,
        };
        self.len += 1;
        Some(i)
    }

    pub fn value(&self, slot: usize) -> &V {
        &self.values[self.slots[slot].value as usize - 1]
    }

    #[cfg(test)]
    pub fn slot(&self, slot: usize) -> &Slot<K> {
        &self.slots[slot]
    }

    /// The slot's counters and its value.
    pub fn entry_mut(&mut self, slot: usize) -> (&mut Slot<K>, &mut V) {
        let s = &mut self.slots[slot];
        let value = &mut self.values[s.value as usize - 1];
        (s, value)
    }

    /// Removes every entry for which `keep` is false (its value stays in the slab, to be
    /// reused).
    pub fn retain(&mut self, mut keep: impl FnMut(&Slot<K>, &mut V) -> bool) {
        let mut removed = false;
        for slot in &mut self.slots {
            if slot.value != 0 && !keep(slot, &mut self.values[slot.value as usize - 1]) {
                self.free.push(slot.value - 1);
                slot.value = 0;
                self.len -= 1;
                removed = true;
            }
        }
        if removed {
            // Removal broke probe chains: place the survivors again.
            self.rebuild(self.slots.len());
        }
    }

    fn grow(&mut self) {
        let limit = (self.max_len * 2).next_power_of_two();
        if self.slots.len() < limit {
            self.rebuild(self.slots.len() * 2);
        }
    }

    fn rebuild(&mut self, slots: usize) {
        let old = std::mem::replace(&mut self.slots, vec![Slot::empty(); slots]);
        self.mask = slots - 1;
        for slot in old.into_iter().filter(|s| s.value != 0) {
            let mut i = self.hash(&slot.key) as usize & self.mask;
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
        table.retain(|slot, value| {
            assert_eq!(*value, slot.key * 10);
            slot.key % 2 == 0
        });
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
    }
}
