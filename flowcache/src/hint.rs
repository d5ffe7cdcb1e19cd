//! The crate's only unsafe code: hints to the CPU (prefetch a cache line) and to the kernel
//! (back the table with huge pages), which change no result, the SIMD compares of a
//! bucket's tags and of two flow keys, and the table taken from zeroed memory.
#![allow(unsafe_code)]

use std::alloc::{Layout, alloc_zeroed, dealloc, handle_alloc_error};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use crate::FlowKey;

/// Asks the CPU to start loading the cache line holding `item`. No effect on results.
#[inline(always)]
pub fn prefetch_read<T>(item: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is only a hint: it never faults, whatever the address, and reads
    // or writes nothing architecturally visible. `item` is a live reference anyway. SSE is
    // part of the x86_64 baseline, so the instruction exists on every x86_64 CPU.
    unsafe {
        use core::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>((item as *const T).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = item;
}

/// Asks the CPU to start loading every cache line `item` spans (a value of several lines,
/// read together). No effect on results.
#[inline(always)]
pub fn prefetch_lines<T>(item: &T) {
    let start = (item as *const T).cast::<u8>();
    let mut line = 0;
    while line < std::mem::size_of::<T>().max(1) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `prefetch_read`: a hint that never faults; the addresses are within
        // `item` anyway (`wrapping_add` keeps the arithmetic defined whatever they are).
        unsafe {
            use core::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(line).cast::<i8>());
        }
        line += 64;
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = start;
}

/// Tables smaller than this stay on ordinary pages: a huge page would mostly be waste.
const HUGE_PAGE_MIN_BYTES: usize = 4 << 20;

/// Asks the kernel to back the not yet touched allocation behind `buffer` (its whole
/// capacity) with transparent huge pages. A flow table is read at random: with 4 KB pages
/// nearly every packet also misses the TLB, which costs about as much as the cache miss
/// itself (BENCHMARKS.md). Refusal (THP off, not Linux) only costs speed, so it is not
/// reported.
pub fn advise_huge_pages<T>(buffer: &Vec<T>) {
    let bytes = buffer.capacity() * size_of::<T>();
    if bytes >= HUGE_PAGE_MIN_BYTES {
        advise(buffer.as_ptr().cast(), bytes);
    }
}

/// Types whose all-zero bits are a valid value, equal to their `Default`.
///
/// # Safety
/// Implement only for types made of integers and arrays of them (no references, enums,
/// `bool` or niches), whose `Default` is every field zero.
pub(crate) unsafe trait ZeroIsDefault: Copy {}

// SAFETY: an entry is a flow key (integers and byte arrays) and integer counters, all
// defaulting to zero; a header line is 32 u16s, defaulting to zero.
unsafe impl ZeroIsDefault for crate::shard::Entry {}
// SAFETY: as above.
unsafe impl ZeroIsDefault for crate::shard::HeaderLine {}

/// A table of `len` values of `T`, each `T::default()` at the start, that costs no write to
/// build: it is taken from the allocator's zeroed memory, which for a table this large is
/// fresh pages that the kernel zeroes when each is first touched. `Vec::resize` would write
/// every byte once more and fault every page in at start-up, where a replay of a small
/// capture touches a fraction of a table sized for a live port. Advised for huge pages like
/// [`advise_huge_pages`], before any page is touched.
pub(crate) struct ZeroedTable<T: ZeroIsDefault> {
    /// What the allocator returned, with the layout it was asked for.
    base: NonNull<u8>,
    layout: Layout,
    /// `base` rounded up to `T`'s alignment.
    items: NonNull<T>,
    len: usize,
}

// SAFETY: the table owns its items (as a Vec would); `T: Copy` values have no thread ties
// beyond their own Send and Sync.
unsafe impl<T: ZeroIsDefault + Send> Send for ZeroedTable<T> {}
// SAFETY: shared access only reads items, as through a `&[T]`.
unsafe impl<T: ZeroIsDefault + Sync> Sync for ZeroedTable<T> {}

impl<T: ZeroIsDefault> ZeroedTable<T> {
    pub(crate) fn new(len: usize) -> ZeroedTable<T> {
        let bytes = len
            .checked_mul(size_of::<T>())
            .and_then(|bytes| bytes.checked_add(align_of::<T>()))
            .expect("table size overflows");
        // Asked with the allocator's smallest alignment, so the allocator can hand out
        // memory it knows is zero (calloc) instead of clearing it; the items start at the
        // first multiple of T's alignment inside.
        let layout = Layout::from_size_align(bytes, 1).expect("table layout");
        // SAFETY: the layout's size is at least align_of::<T>() >= 1, never zero.
        let Some(base) = NonNull::new(unsafe { alloc_zeroed(layout) }) else {
            handle_alloc_error(layout)
        };
        let offset = base.as_ptr().align_offset(align_of::<T>());
        // SAFETY: offset < align_of::<T>(), which the layout added after the items' bytes,
        // so `items` and the `len` items after it lie inside the allocation.
        let items = unsafe { base.add(offset) }.cast::<T>();
        let table = ZeroedTable {
            base,
            layout,
            items,
            len,
        };
        if len * size_of::<T>() >= HUGE_PAGE_MIN_BYTES {
            advise(items.as_ptr().cast(), len * size_of::<T>());
        }
        table
    }
}

impl<T: ZeroIsDefault> Deref for ZeroedTable<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `items` is aligned for T and heads `len` initialised values (all-zero
        // bits are a valid T: ZeroIsDefault) inside the live allocation the table owns.
        unsafe { std::slice::from_raw_parts(self.items.as_ptr(), self.len) }
    }
}

impl<T: ZeroIsDefault> DerefMut for ZeroedTable<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in deref, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.items.as_ptr(), self.len) }
    }
}

impl<T: ZeroIsDefault> Drop for ZeroedTable<T> {
    fn drop(&mut self) {
        // SAFETY: `base` came from alloc_zeroed with this layout and is freed once, here.
        unsafe { dealloc(self.base.as_ptr(), self.layout) };
    }
}

impl<T: ZeroIsDefault> std::fmt::Debug for ZeroedTable<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZeroedTable")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

#[cfg(target_os = "linux")]
fn advise(start: *const u8, bytes: usize) {
    // madvise wants a page-aligned start: advise the whole pages inside the allocation.
    let page = 4096usize;
    let first = (start as usize).next_multiple_of(page);
    let end = (start as usize + bytes) & !(page - 1);
    if end <= first {
        return;
    }
    // SAFETY: the range lies inside one live allocation this process owns (the Vec's
    // buffer, page-aligned inward), and MADV_HUGEPAGE only changes how the kernel backs
    // those pages, never their contents or mapping: no Rust reference is invalidated.
    unsafe { libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE) };
}

#[cfg(not(target_os = "linux"))]
fn advise(_start: *const u8, _bytes: usize) {}

/// Bit `i` set iff `words[i] == value`, for a bucket's 8 or 16 tags: two (or one) SSE2
/// compares and a byte mask, where the portable fold compiles to a few dozen instructions.
#[inline(always)]
pub(crate) fn eq_mask<const B: usize>(words: &[u16; B], value: u16) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if B == 8 || B == 16 {
        use core::arch::x86_64::{
            __m128i, _mm_cmpeq_epi16, _mm_loadu_si128, _mm_movemask_epi8, _mm_packs_epi16,
            _mm_set1_epi16, _mm_setzero_si128,
        };
        let p = words.as_ptr().cast::<__m128i>();
        // SAFETY: SSE2 is part of the x86_64 baseline, so its intrinsics run on every
        // x86_64 CPU. `words` holds B u16s, 16 or 32 bytes: the first load reads bytes
        // 0..16 and, only when B == 16, the second 16..32, all inside the array; loadu has
        // no alignment requirement.
        let mask = unsafe {
            let v = _mm_set1_epi16(value as i16);
            let low_eq = _mm_cmpeq_epi16(_mm_loadu_si128(p), v);
            let high_eq = if B == 16 {
                _mm_cmpeq_epi16(_mm_loadu_si128(p.add(1)), v)
            } else {
                _mm_setzero_si128()
            };
            // Equal lanes are all ones; packing to bytes (signed saturation keeps -1 and
            // 0) puts lane i's result in byte i, whose top bit the movemask collects.
            _mm_movemask_epi8(_mm_packs_epi16(low_eq, high_eq))
        };
        return mask as u32;
    }
    words
        .iter()
        .enumerate()
        .fold(0, |mask, (i, &t)| mask | u32::from(t == value) << i)
}

/// Whether two keys are equal (as `==`), in three overlapping 16-byte SSE2 compares and
/// no branch: the cache compares a key on every packet, and the derived comparison takes a
/// branch per field.
#[inline(always)]
pub fn keys_equal(a: &FlowKey, b: &FlowKey) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{
            __m128i, _mm_and_si128, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8,
        };
        const LAST: usize = size_of::<FlowKey>() - 16;
        let (pa, pb) = (
            (a as *const FlowKey).cast::<u8>(),
            (b as *const FlowKey).cast::<u8>(),
        );
        // SAFETY: SSE2 is part of the x86_64 baseline. FlowKey is repr(C), 44 bytes of
        // integer fields with no padding (asserted in record.rs), so every byte is
        // initialised; the loads read bytes 0..16, 16..32 and 28..44 of each key, all
        // inside it, and loadu has no alignment requirement.
        let mask = unsafe {
            let eq = |at: usize| {
                _mm_cmpeq_epi8(
                    _mm_loadu_si128(pa.add(at).cast::<__m128i>()),
                    _mm_loadu_si128(pb.add(at).cast::<__m128i>()),
                )
            };
            _mm_movemask_epi8(_mm_and_si128(_mm_and_si128(eq(0), eq(16)), eq(LAST)))
        };
        mask == 0xffff
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        a == b
    }
}

/// Bit `i` set iff `hints[i]` is not after `now`, both 16-bit times compared by wrapping
/// difference (`(now - hint) as i16 >= 0`), for a bucket's 8 or 16 deadline hints.
#[inline(always)]
pub(crate) fn not_after_mask<const B: usize>(hints: &[u16; B], now: u16) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if B == 8 || B == 16 {
        use core::arch::x86_64::{
            __m128i, _mm_cmpgt_epi16, _mm_loadu_si128, _mm_movemask_epi8, _mm_packs_epi16,
            _mm_set1_epi16, _mm_setzero_si128, _mm_sub_epi16,
        };
        let p = hints.as_ptr().cast::<__m128i>();
        // SAFETY: as in eq_mask: SSE2 is baseline on x86_64, and the loads read bytes
        // 0..16 and, only when B == 16, 16..32 of the B u16s, all inside the array.
        let mask = unsafe {
            let now = _mm_set1_epi16(now as i16);
            let minus_one = _mm_set1_epi16(-1);
            // Lane i: all ones iff (now - hint) as i16 > -1.
            let due = |at: usize| {
                _mm_cmpgt_epi16(_mm_sub_epi16(now, _mm_loadu_si128(p.add(at))), minus_one)
            };
            let high = if B == 16 { due(1) } else { _mm_setzero_si128() };
            _mm_movemask_epi8(_mm_packs_epi16(due(0), high))
        };
        return mask as u32;
    }
    hints.iter().enumerate().fold(0, |mask, (i, &h)| {
        mask | u32::from((now.wrapping_sub(h) as i16) >= 0) << i
    })
}

#[cfg(test)]
mod tests {
    use super::{eq_mask, keys_equal, not_after_mask};

    #[test]
    fn not_after_mask_matches_a_plain_scan() {
        let plain = |hints: &[u16], now: u16| {
            hints.iter().enumerate().fold(0u32, |m, (i, &h)| {
                m | u32::from((now.wrapping_sub(h) as i16) >= 0) << i
            })
        };
        let mut x = 0x9e37_79b9u32;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            // Near `now` half the time, so both sides of the wrap and equality are hit.
            if x & 1 == 0 {
                (x >> 8) as u16
            } else {
                (x >> 16) as u16 % 8
            }
        };
        for _ in 0..4000 {
            let now = next();
            let hints16: [u16; 16] =
                std::array::from_fn(|_| now.wrapping_add(next() % 5).wrapping_sub(2));
            let hints8: [u16; 8] = std::array::from_fn(|_| next());
            assert_eq!(not_after_mask(&hints16, now), plain(&hints16, now));
            assert_eq!(not_after_mask(&hints8, now), plain(&hints8, now));
        }
    }
    use crate::FlowKey;

    #[test]
    fn eq_mask_matches_a_plain_scan() {
        let mut words16 = [0u16; 16];
        let mut words8 = [0u16; 8];
        let mut x = 0x1234_5678u32;
        for round in 0..2000 {
            for w in words16.iter_mut().chain(words8.iter_mut()) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                // Few distinct values, so matches are common; 0 and 0xffff included.
                *w = [0u16, 1, 0x8000, 0xffff, 7][x as usize % 5];
            }
            let value = [0u16, 1, 0x8000, 0xffff, 9][round % 5];
            let plain = |ws: &[u16]| {
                ws.iter()
                    .enumerate()
                    .fold(0u32, |m, (i, &w)| m | u32::from(w == value) << i)
            };
            assert_eq!(eq_mask(&words16, value), plain(&words16));
            assert_eq!(eq_mask(&words8, value), plain(&words8));
        }
    }

    #[test]
    fn keys_equal_matches_the_derived_comparison_byte_by_byte() {
        let mut key = FlowKey {
            src_addr: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            dst_addr: [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9],
            src_port: 443,
            dst_port: 51000,
            vlan: 100,
            input_port: 2,
            protocol: 6,
            tos: 0x10,
            ip_version: 6,
            _reserved: 0,
        };
        assert!(keys_equal(&key, &key.clone()));
        // A difference in any one field (every byte of each is covered by some load)
        // makes the keys unequal, as `==` says.
        let changes: [fn(&mut FlowKey); 12] = [
            |k| k.src_addr[0] ^= 1,
            |k| k.src_addr[15] ^= 0x80,
            |k| k.dst_addr[0] ^= 1,
            |k| k.dst_addr[15] ^= 0x80,
            |k| k.src_port ^= 0x100,
            |k| k.dst_port ^= 1,
            |k| k.vlan ^= 0x8000,
            |k| k.input_port ^= 1,
            |k| k.protocol ^= 0x11,
            |k| k.tos ^= 4,
            |k| k.ip_version = 4,
            |k| k._reserved = 1,
        ];
        for change in changes {
            let mut other = key;
            change(&mut other);
            assert_ne!(key, other);
            assert!(!keys_equal(&key, &other), "{other:?}");
            assert!(!keys_equal(&other, &key));
        }
        key.ip_version = 4;
        assert!(keys_equal(&key, &{ key }));
    }
}
