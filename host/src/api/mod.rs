//! The user-facing API: the `KvCluster` and `PolicyPlugin` custom resources (group
//! `kvpilot.dev`, version `v1alpha1`), the spec's validation, and the CRDs `kvpilot crdgen`
//! writes. `KvClusterSpec` is also the local platform's spec file.

pub mod crd;
mod failure_detection;
mod plugin;
mod schema;
mod snapshots;
mod spec;
mod status;
mod validate;
mod workload;

pub use failure_detection::FailureDetectionSpec;
pub use plugin::*;
pub use snapshots::*;
pub use spec::*;
pub use status::*;
pub use validate::{MAX_REPLICAS, MAX_SHARDS, SpecError, validate_spec};
pub use workload::*;
