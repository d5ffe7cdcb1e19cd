//! The configuration loader on arbitrary text: it must never panic, whatever the TOML,
//! and every error it reports must name a place inside the text it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapflow::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, "fuzz.toml") {
        Ok(config) => {
            // A valid configuration describes itself and derives its DPDK settings.
            let _ = config.describe();
            let _ = config.eal_args();
            let _ = config.mempool_size();
            assert!(config.worker_count() >= 1);
        }
        Err(error) => {
            let lines = text.matches('\n').count() + 1;
            for diagnostic in error.diagnostics() {
                if let Some(location) = diagnostic.location {
                    assert!(
                        location.line >= 1 && location.line <= lines,
                        "{diagnostic:?}"
                    );
                    assert!(location.column >= 1, "{diagnostic:?}");
                }
            }
            let _ = error.to_string();
        }
    }
});
