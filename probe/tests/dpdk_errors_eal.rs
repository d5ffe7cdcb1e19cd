//! An EAL given (raw, unchecked) pcap vdevs that cannot probe (a missing file, a file that
//! is not a capture) fails with a clear error at init or when the port is opened: never a
//! panic or a hang. One EAL per process, hence a file of its own.
#![cfg(feature = "dpdk")]

mod dpdk_common;

use dpdk_common::TempDir;
use probe::dpdk::Eal;
use probe::dpdk_source::{DpdkPortConfig, DpdkSource, EalArgs};

#[test]
fn vdevs_that_fail_to_probe_at_eal_init_are_clear_errors() {
    let dir = TempDir::new("dpdk-errors-eal");
    let missing = dir.path().join("missing.pcap");
    let garbage = dir.path().join("garbage.pcap");
    std::fs::write(&garbage, b"this is not a capture file, just text\n").expect("write");
    let missing_spec = format!("net_pcap0,rx_pcap={}", missing.display());
    let garbage_spec = format!("net_pcap1,rx_pcap={}", garbage.display());

    // The checked path refuses before DPDK runs, naming the file and the OS's reason.
    // DPDK logs each failed probe at error level; keep the test output quiet.
    let args = EalArgs::sandbox()
        .log_level("1")
        .vdev(&missing_spec)
        .vdev(&garbage_spec);
    let err = args
        .init()
        .expect_err("checked init must refuse a missing pcap");
    assert!(
        err.message.contains(&missing.display().to_string()),
        "{err}"
    );
    assert!(err.message.contains("No such file"), "{err}");
    assert!(
        Eal::get().is_none(),
        "the refused init did not start the EAL"
    );

    // Unchecked: DPDK itself meets the bad files. DPDK 22.11 logs the failed probe and
    // carries on, so the error comes when the port is opened.
    match Eal::init(&args.to_args()) {
        Err(err) => {
            assert!(err.message().contains("EAL initialisation failed"), "{err}");
            let again = Eal::init(&EalArgs::sandbox().to_args()).expect_err("no second try");
            assert!(
                again
                    .message()
                    .contains("earlier DPDK EAL initialisation failed"),
                "{again}"
            );
        }
        Ok(eal) => {
            let err = DpdkSource::open(&eal, &DpdkPortConfig::new("net_pcap0"))
                .expect_err("missing file");
            assert!(
                err.message.contains(&missing.display().to_string()),
                "{err}"
            );
            assert!(err.message.contains("No such file"), "{err}");

            let err = DpdkSource::open(&eal, &DpdkPortConfig::new("net_pcap1"))
                .expect_err("not a capture");
            assert!(
                err.message.contains("net_pcap1") && err.message.contains("did not probe"),
                "{err}"
            );
            let again = Eal::init(&EalArgs::sandbox().to_args()).expect_err("no second init");
            assert!(again.message().contains("already initialised"), "{again}");
            drop(eal);
            let again = Eal::init(&EalArgs::sandbox().to_args()).expect_err("no re-init");
            assert!(
                again.message().contains("cannot initialise twice"),
                "{again}"
            );
        }
    }
}
