//! The one unsafe call of the crate: a cache prefetch hint.
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
