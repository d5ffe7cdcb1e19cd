//! Raw FFI bindings to the system DPDK, generated at build time by bindgen from
//! `wrapper.h` through a narrow allowlist (see `build.rs` and README.md).
//!
//! DPDK's `static inline` functions (`rte_eth_rx_burst`, `rte_pktmbuf_alloc`, `rte_rdtsc`,
//! `rte_lcore_id`, ...) are bound under their own names; the symbols behind them are
//! small C wrappers bindgen generated and `cc` compiled. `rte_errno` is thread-local C
//! state and is reached through [`tapflow_rte_errno`] / [`tapflow_rte_errno_set`].
//!
//! Everything here is `unsafe` to call; the safe wrapper lives in `probe::dpdk`.
#![allow(
    unsafe_code,
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    dead_code,
    missing_debug_implementations,
    unsafe_op_in_unsafe_fn,
    clippy::all
)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));

/// The DPDK version pkg-config reported when these bindings were built.
pub const PKG_CONFIG_VERSION: &str = env!("DPDK_SYS_PKG_VERSION");
