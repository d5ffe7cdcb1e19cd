//! Builds the raw DPDK bindings against the system DPDK.
//!
//! 1. `pkg-config libdpdk` gives the compiler flags (which include `-include rte_config.h`
//!    and `-march=corei7`) and the libraries to link.
//! 2. bindgen turns `wrapper.h` into Rust, through a narrow allowlist, with the same flags.
//! 3. DPDK's fast path is mostly `static inline` C (`rte_eth_rx_burst`, `rte_pktmbuf_alloc`,
//!    `rte_rdtsc`, ...), which has no symbol to link against: bindgen writes a C file with
//!    one exported wrapper per such function, and `cc` compiles it, with the same flags
//!    again, into a static library linked ahead of DPDK's own.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const INSTALL_DPDK: &str = "install libdpdk-dev and pkg-config: apt-get install libdpdk-dev pkg-config \
     (or point PKG_CONFIG_PATH at a DPDK install's lib/pkgconfig directory)";
const INSTALL_CLANG: &str = "install libclang: apt-get install libclang-dev \
     (or set LIBCLANG_PATH to the directory holding libclang.so)";

/// The functions, types and constants tapflow uses; everything else stays unbound.
const FUNCTIONS: &[&str] = &[
    "rte_eal_.*",
    "rte_eth_.*",
    "rte_pktmbuf_.*",
    "rte_mbuf_.*",
    "rte_mempool_free",
    "rte_mempool_avail_count",
    "rte_mempool_in_use_count",
    "rte_mempool_lookup",
    "rte_lcore_.*",
    "rte_get_main_lcore",
    "rte_socket_id",
    "rte_strerror",
    "rte_get_tsc_hz",
    "rte_get_tsc_cycles",
    "rte_rdtsc",
    "rte_version",
    "rte_dev_probe",
    "rte_dev_remove",
    "rte_openlog_stream",
    "rte_thread_register",
    "rte_thread_unregister",
    "tapflow_rte_errno",
    "tapflow_rte_errno_set",
];
const TYPES: &[&str] = &["rte_eth_.*", "rte_mbuf", "rte_mempool", "rte_eth_conf"];
const CONSTANTS: &[&str] = &[
    "RTE_ETH_.*",
    "RTE_MBUF_.*",
    "RTE_PKTMBUF_.*",
    "RTE_MAX_ETHPORTS",
    "RTE_MAX_LCORE",
    "RTE_MAX_QUEUES_PER_PORT",
    "RTE_VERSION.*",
    "RTE_ETHDEV_.*",
    "LCORE_ID_ANY",
    "SOCKET_ID_ANY",
    "TAPFLOW_.*",
    "RTE_MEMPOOL_NAMESIZE",
    "RTE_DEV_NAME_MAX_LEN",
];

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_LIBDIR");
    println!("cargo:rerun-if-env-changed=LIBCLANG_PATH");

    let version = pkg_config(&["--modversion"]);
    let cflags = words(&pkg_config(&["--cflags"]));
    let libs = words(&pkg_config(&["--libs"]));

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let wrapper = manifest_dir.join("wrapper.h");
    let static_fns = out_dir.join("static_fns");

    generate_bindings(&wrapper, &cflags, &out_dir, &static_fns);
    compile_static_fns(&manifest_dir, &cflags, &static_fns);
    link_dpdk(&libs);

    // Dependents see these as DEP_DPDK_VERSION and DEP_DPDK_INCLUDE.
    println!("cargo:version={version}");
    let includes: Vec<&str> = cflags.iter().filter_map(|f| f.strip_prefix("-I")).collect();
    println!("cargo:include={}", includes.join(":"));
    println!("cargo:rustc-env=DPDK_SYS_PKG_VERSION={version}");
}

/// Runs `pkg-config <args> libdpdk` and returns its trimmed output, or stops the build
/// with the package to install.
fn pkg_config(args: &[&str]) -> String {
    let output = Command::new("pkg-config")
        .args(args)
        .arg("libdpdk")
        .output()
        .unwrap_or_else(|e| panic!("dpdk-sys: cannot run pkg-config ({e}); {INSTALL_DPDK}"));
    if !output.status.success() {
        panic!(
            "dpdk-sys: pkg-config cannot find libdpdk: {}; {INSTALL_DPDK}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    String::from_utf8(output.stdout)
        .expect("pkg-config output is UTF-8")
        .trim()
        .to_owned()
}

/// pkg-config's flags, split into words (`-include rte_config.h` stays two consecutive
/// words, which clang and gcc both expect), plus what tapflow adds.
fn compiler_args(cflags: &[String]) -> Vec<String> {
    let mut out = cflags.to_vec();
    // DPDK marks some of the (stable-enough) API used here experimental; without this its
    // headers turn each use into a deprecation warning.
    out.push("-DALLOW_EXPERIMENTAL_API".to_owned());
    out
}

fn words(flags: &str) -> Vec<String> {
    flags.split_whitespace().map(str::to_owned).collect()
}

fn generate_bindings(wrapper: &Path, cflags: &[String], out_dir: &Path, static_fns: &Path) {
    let mut builder = bindgen::Builder::default()
        .header(wrapper.to_string_lossy())
        .clang_args(compiler_args(cflags))
        .rust_edition(bindgen::RustEdition::Edition2024)
        .wrap_static_fns(true)
        .wrap_static_fns_path(static_fns)
        .generate_comments(false)
        .layout_tests(true)
        .derive_default(true)
        .derive_debug(true)
        .impl_debug(false)
        .prepend_enum_name(false)
        .default_enum_style(bindgen::EnumVariation::Consts)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    for f in FUNCTIONS {
        builder = builder.allowlist_function(f);
    }
    for t in TYPES {
        builder = builder.allowlist_type(t);
    }
    for c in CONSTANTS {
        builder = builder.allowlist_var(c);
    }
    // bindgen loads libclang at run time and panics when it is absent; turn that into the
    // one line an operator needs.
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let generated =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || builder.generate()));
    std::panic::set_hook(previous_hook);
    let bindings = match generated {
        Ok(Ok(bindings)) => bindings,
        Ok(Err(e)) => panic!("dpdk-sys: bindgen failed on wrapper.h: {e}"),
        Err(payload) => {
            let why = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("unknown failure");
            if why.contains("libclang") {
                panic!("dpdk-sys: bindgen cannot load libclang ({why}); {INSTALL_CLANG}");
            }
            panic!("dpdk-sys: bindgen failed: {why}");
        }
    };
    bindings
        .write_to_file(out_dir.join("bindings.rs"))
        .expect("write bindings.rs");
}

fn compile_static_fns(manifest_dir: &Path, cflags: &[String], static_fns: &Path) {
    let source = static_fns.with_extension("c");
    let mut build = cc::Build::new();
    build
        .file(&source)
        .include(manifest_dir)
        .warnings(false)
        .opt_level(3);
    for arg in compiler_args(cflags) {
        build.flag(&arg);
    }
    // Printed before DPDK's libraries so the linker resolves the wrappers' references.
    build.compile("dpdk_sys_static_fns");
}

/// Passes pkg-config's link flags on to rustc.
fn link_dpdk(libs: &[String]) {
    for flag in libs {
        if let Some(dir) = flag.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
        } else if let Some(lib) = flag.strip_prefix("-l") {
            println!("cargo:rustc-link-lib={lib}");
        } else if flag.starts_with("-Wl,") {
            // Only `-Wl,--as-needed`, which rustc already passes for GNU targets.
        } else {
            println!("cargo:warning=dpdk-sys: ignoring link flag {flag} from pkg-config");
        }
    }
}
