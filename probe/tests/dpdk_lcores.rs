//! The EAL's lcores map to CPUs as `-l` says, and a thread bound to one runs only there
//! (as the kernel reports it).
#![cfg(feature = "dpdk")]

use probe::dpdk::{LcoreCpus, pin_current_thread};
use probe::dpdk_source::EalArgs;

/// The calling thread's allowed CPUs, from the kernel.
fn allowed_cpus() -> String {
    let status = std::fs::read_to_string("/proc/thread-self/status").expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list")
        .trim()
        .to_string()
}

#[test]
fn lcores_map_to_their_cpus_and_a_bound_thread_stays_on_its_cpu() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let last = cpus.min(2) - 1;
    let eal = EalArgs::sandbox()
        .lcores(format!("0-{last}"))
        .init()
        .expect("EAL init");
    let expected = LcoreCpus {
        main: Some(0),
        workers: (1..=last as u32).collect(),
    };
    assert_eq!(eal.lcore_cpus(), expected);
    // The EAL pins the main thread during init; tapflow undoes that so threads spawned
    // later are free until bound on purpose.
    let before = allowed_cpus();
    let target = last as u32;
    let bound = std::thread::spawn(move || {
        pin_current_thread(target).expect("bind");
        allowed_cpus()
    })
    .join()
    .expect("thread");
    assert_eq!(bound, target.to_string());
    assert_eq!(
        allowed_cpus(),
        before,
        "binding one thread leaves the others alone"
    );
    let refused = std::thread::spawn(|| pin_current_thread(100_000))
        .join()
        .expect("thread");
    assert!(refused.is_err());
    drop(eal);
}
