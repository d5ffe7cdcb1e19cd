//! The crate's only unsafe code: hints to the CPU (prefetch a cache line) and to the kernel
//! (back the table with huge pages). Neither changes what any program computes.
#![allow(unsafe_code)]

/// Asks the CPU to start loading the cache line holding `item`. No effect on results.
#[inline(always)]
pub(crate) fn prefetch_read<T>(item: &T) {
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

/// Tables smaller than this stay on ordinary pages: a huge page would mostly be waste.
const HUGE_PAGE_MIN_BYTES: usize = 4 << 20;

/// Asks the kernel to back the not yet touched allocation behind `buffer` (its whole
/// capacity) with transparent huge pages. A flow table is read at random: with 4 KB pages
/// nearly every packet also misses the TLB, which costs about as much as the cache miss
/// itself (BENCHMARKS.md). Returns whether the kernel took the advice; refusal (THP off,
/// not Linux) only costs speed.
pub(crate) fn advise_huge_pages<T>(buffer: &Vec<T>) -> bool {
    let bytes = buffer.capacity() * size_of::<T>();
    if bytes < HUGE_PAGE_MIN_BYTES {
        return false;
    }
    advise(buffer.as_ptr().cast(), bytes)
}

#[cfg(target_os = "linux")]
fn advise(start: *const u8, bytes: usize) -> bool {
    // madvise wants a page-aligned start: advise the whole pages inside the allocation.
    let page = 4096usize;
    let first = (start as usize).next_multiple_of(page);
    let end = (start as usize + bytes) & !(page - 1);
    if end <= first {
        return false;
    }
    // SAFETY: the range lies inside one live allocation this process owns (the Vec's
    // buffer, page-aligned inward), and MADV_HUGEPAGE only changes how the kernel backs
    // those pages, never their contents or mapping: no Rust reference is invalidated.
    let rc = unsafe { libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE) };
    rc == 0
}

#[cfg(not(target_os = "linux"))]
fn advise(_start: *const u8, _bytes: usize) -> bool {
    false
}
