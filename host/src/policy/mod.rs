//! The policy runtime: loads, sandboxes and calls WebAssembly policy plugins, validates every
//! answer, and applies each hook's failure policy.
//!
//! [`Policies`] is what `decide` calls; production binds it to wasm plugins, tests of `decide`
//! may bind it to the native defaults.

pub mod bench;
mod bound;
pub mod builtin;
mod cache;
pub use cache::CacheLimits;
mod call;
pub mod config_schema;
pub mod contract;
mod convert;
mod determinism;
mod engine;
mod error;
mod hook;
pub mod logs;
mod memo;
pub mod metadata;
pub use memo::{MemoLimits, MemoStats};
pub mod input;
pub mod native;
mod plugin;
pub mod replay;
pub mod retry;
mod runtime;
pub mod sandbox;
pub mod scenario;
pub mod source;
mod stderr;
pub mod text;
pub mod validate;

pub use bound::{HookSetting, PolicySettings, Preloaded, WasmPolicies};
pub use engine::MAX_MEMORIES_PER_COMPONENT;
pub use error::PolicyError;
pub use hook::{
    DECISION_ANSWER_BYTES, DECISION_REQUEST_BYTES, Decided, DecisionRecord, FailurePolicy, Hook,
    HookProblem, json_text,
};
pub use plugin::{Limits, Plugin};
pub use retry::{HookFailure, HookRetry, Retried, Retrying};
pub use runtime::{DEFAULT_MAX_PLUGIN_BYTES, LoadLimits, PolicyRuntime};

use kvpilot_sdk::{
    MemberSchedule, RolloutRequest, ScheduleRequest, Selection, SelectionRequest, Step,
};
use std::future::Future;

/// The three hooks, as `decide` sees them. An implementation is bound to one cluster's policy
/// settings: it fills in each request's `config`, calls the plugin, validates the answer and
/// applies the hook's failure policy. `Err` means the hook failed under `FailurePolicy::Fail`.
pub trait Policies: Send + Sync {
    /// The hooks whose plugin could not be bound, and why: status reports them even when no
    /// decision needed them (docs/architecture.md, rule 11).
    fn bind_problems(&self) -> Vec<HookProblem> {
        Vec::new()
    }

    fn select_replica(
        &self,
        request: SelectionRequest,
    ) -> impl Future<Output = Result<Decided<Selection>, PolicyError>> + Send;

    fn schedule_snapshots(
        &self,
        request: ScheduleRequest,
    ) -> impl Future<Output = Result<Decided<Vec<MemberSchedule>>, PolicyError>> + Send;

    fn rollout_step(
        &self,
        request: RolloutRequest,
    ) -> impl Future<Output = Result<Decided<Step>, PolicyError>> + Send;
}
