//! kvpilot: a Kubernetes operator for Redis-protocol datastores whose judgement calls are
//! WebAssembly policy plugins and whose safety rules are host code.
//!
//! One reconcile is `observe → decide → act` (see docs/architecture.md); each stage has its own module.

pub mod act;
pub mod api;
pub mod cli;
pub mod decide;
pub mod demo;
pub mod engine;
pub mod leadership;
pub mod observe;
pub mod platform;
pub mod policy;
pub mod reconcile;
pub mod scaffold;
pub mod shutdown;
pub mod status;
