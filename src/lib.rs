//! `tapflow`'s library side: the configuration file, the Prometheus metrics endpoint and
//! systemd readiness notification, shared by the binary and the integration tests.

pub mod config;
pub mod metrics;
pub mod sdnotify;
