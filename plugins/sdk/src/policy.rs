//! [`Policy`]: a plugin's decisions as plain Rust functions of the sdk's records.
//!
//! Implement it once; [`export_policy!`](crate::export_policy) turns it into a component
//! (wit-bindgen glue and record conversions), and [`scenario`](crate::scenario) runs the same
//! functions natively on scenario files in `cargo test`.

use crate::hook::Hook;
use crate::prelude::*;
use crate::types::{
    MemberSchedule, PluginInfo, RolloutRequest, ScheduleRequest, Selection, SelectionRequest, Step,
};

/// A policy plugin. Every function is pure: the host calls each in a fresh sandbox with
/// frozen clocks and fixed randomness, so an answer may depend on the request alone.
///
/// Implement the functions of the hooks in [`HOOKS`](Policy::HOOKS); the others keep their
/// default, which answers with an error (as the host does when a plugin lacks the hook).
pub trait Policy {
    /// The hooks the plugin answers: the same list as given to
    /// [`export_policy!`](crate::export_policy), which checks it at compile time.
    const HOOKS: &'static [Hook];

    /// Who the plugin is (shown by `kvpilot policy list|check` and in status).
    fn info() -> PluginInfo;

    /// Check the settings (a JSON object text, `{}` when none were given) before any decision
    /// uses them. Return a message naming the bad field.
    fn validate_config(config: &str) -> Result<(), String>;

    /// `replica-selection`: promote one of `request.candidates`, or wait.
    fn select(request: &SelectionRequest) -> Result<Selection, String> {
        let _ = request;
        Err(not_exported(Hook::ReplicaSelection))
    }

    /// `snapshot-schedule`: one schedule per member of `request.members`.
    fn schedule(request: &ScheduleRequest) -> Result<Vec<MemberSchedule>, String> {
        let _ = request;
        Err(not_exported(Hook::SnapshotSchedule))
    }

    /// `rollout-order`: the next step of a shard's rollout.
    fn next(request: &RolloutRequest) -> Result<Step, String> {
        let _ = request;
        Err(not_exported(Hook::RolloutOrder))
    }
}

/// The error of a hook the plugin does not answer; the host's own message ends the same way.
pub fn not_exported(hook: Hook) -> String {
    format!("does not export the {hook} hook")
}
