//! Records build metadata for `tapflow --version`: the git revision and the DPDK version
//! the data plane was built against (from pkg-config; the DPDK build itself is dpdk-sys's).

use std::process::Command;

fn main() {
    let git = Command::new("git")
        .args(["describe", "--always", "--dirty", "--tags"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=TAPFLOW_GIT_REVISION={git}");

    let dpdk = if std::env::var_os("CARGO_FEATURE_DPDK").is_some() {
        Command::new("pkg-config")
            .args(["--modversion", "libdpdk"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "unknown".into())
    } else {
        "none (built without the dpdk feature)".into()
    };
    println!("cargo:rustc-env=TAPFLOW_DPDK_VERSION={dpdk}");
    if std::env::var_os("CARGO_FEATURE_DPDK").is_some() {
        // DPDK's pcap driver, loaded at run time, binds `pcap_open_live` to the
        // executable's own (dpdk::pcap_ring) only if the executable exports it.
        println!("cargo:rustc-link-arg-bins=-Wl,-u,pcap_open_live");
        println!("cargo:rustc-link-arg-bins=-Wl,--export-dynamic-symbol=pcap_open_live");
    }
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/index");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
}
