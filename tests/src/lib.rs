//! Harness for kvpilot's end-to-end tests: real `valkey-server`/`redis-server` groups on
//! loopback driven by the real reconciler ([`kvpilot::platform::local::LocalCluster`]), with
//! real wasm plugins, checked over RESP.
//!
//! Every wait is bounded ([`group::PHASE_LIMIT`]) and every member process is killed when a
//! [`group::Group`] is dropped, also when a test panics.

pub mod availability;
pub mod group;
pub mod plugins;
pub mod probe;
pub mod saves;
pub mod spec;

pub use group::{Group, PHASE_LIMIT, StepRecord};
pub use kvpilot_sdk::Engine;
pub use spec::{PolicyChoice, Spec};
