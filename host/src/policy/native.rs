//! The default policies linked natively (the `kvpilot-sdk` functions), behind the same
//! [`Policies`] contract and the same answer validation as the wasm path. Used by tests of
//! `decide` (no sandbox needed) and by the benchmark as the native baseline.

use super::{Decided, DecisionRecord, Hook, Policies, PolicyError, validate};
use kvpilot_sdk::defaults::{most_caught_up, replicas_first, stagger};
use kvpilot_sdk::{
    MemberSchedule, RolloutRequest, ScheduleRequest, Selection, SelectionRequest, Step,
};
use serde::Serialize;
use std::time::Instant;

/// Prefix of the plugin name in decision records of native calls.
pub const NATIVE_PREFIX: &str = "native:";

/// The three defaults, each with its config JSON text.
#[derive(Debug, Clone)]
pub struct NativePolicies {
    pub replica_selection_config: String,
    pub snapshot_schedule_config: String,
    pub rollout_order_config: String,
}

impl Default for NativePolicies {
    fn default() -> Self {
        NativePolicies {
            replica_selection_config: kvpilot_sdk::empty_config(),
            snapshot_schedule_config: kvpilot_sdk::empty_config(),
            rollout_order_config: kvpilot_sdk::empty_config(),
        }
    }
}

impl NativePolicies {
    /// Checks every config with the default's own `validate_config`.
    pub fn new(
        replica_selection_config: &str,
        snapshot_schedule_config: &str,
        rollout_order_config: &str,
    ) -> Result<Self, PolicyError> {
        let check = |hook: Hook, result: Result<(), String>| {
            result.map_err(|message| PolicyError::InvalidConfig {
                plugin: native_name(hook),
                message,
            })
        };
        check(
            Hook::ReplicaSelection,
            most_caught_up::validate_config(replica_selection_config),
        )?;
        check(
            Hook::SnapshotSchedule,
            stagger::validate_config(snapshot_schedule_config),
        )?;
        check(
            Hook::RolloutOrder,
            replicas_first::validate_config(rollout_order_config),
        )?;
        Ok(NativePolicies {
            replica_selection_config: replica_selection_config.to_string(),
            snapshot_schedule_config: snapshot_schedule_config.to_string(),
            rollout_order_config: rollout_order_config.to_string(),
        })
    }
}

fn native_name(hook: Hook) -> String {
    format!("{NATIVE_PREFIX}{}", hook.default_builtin())
}

/// Turns a native answer into a decision: the plugin's error or an invalid answer is a
/// `PolicyError` exactly as on the wasm path.
fn decide<T: Serialize, R: Serialize>(
    hook: Hook,
    started: Instant,
    request: Option<&R>,
    answer: Result<T, String>,
    check: impl FnOnce(&T) -> Result<(), validate::Invalid>,
) -> Result<Decided<T>, PolicyError> {
    let plugin = native_name(hook);
    let answer = answer.map_err(|message| PolicyError::Plugin {
        plugin: plugin.clone(),
        hook,
        message,
    })?;
    check(&answer).map_err(|i| PolicyError::InvalidAnswer {
        plugin: plugin.clone(),
        hook,
        field: i.field,
        message: i.message,
    })?;
    let record = DecisionRecord::new(
        hook,
        &plugin,
        String::new(),
        &answer,
        request,
        started.elapsed(),
        None,
    );
    Ok(Decided { answer, record })
}

/// The native default for replica-selection, validated (`request.config` as given).
pub fn select(request: &SelectionRequest) -> Result<Selection, PolicyError> {
    decide(
        Hook::ReplicaSelection,
        Instant::now(),
        None::<&()>,
        most_caught_up::select(request),
        |a| validate::selection(request, a),
    )
    .map(|d| d.answer)
}

/// The native default for snapshot-schedule, validated.
pub fn schedule(request: &ScheduleRequest) -> Result<Vec<MemberSchedule>, PolicyError> {
    decide(
        Hook::SnapshotSchedule,
        Instant::now(),
        None::<&()>,
        stagger::schedule(request),
        |a| validate::schedules(request, a),
    )
    .map(|d| d.answer)
}

/// The native default for rollout-order, validated.
pub fn next(request: &RolloutRequest) -> Result<Step, PolicyError> {
    decide(
        Hook::RolloutOrder,
        Instant::now(),
        None::<&()>,
        replicas_first::next(request),
        |a| validate::step(request, a),
    )
    .map(|d| d.answer)
}

impl Policies for NativePolicies {
    async fn select_replica(
        &self,
        mut request: SelectionRequest,
    ) -> Result<Decided<Selection>, PolicyError> {
        let started = Instant::now();
        request.config.clone_from(&self.replica_selection_config);
        decide(
            Hook::ReplicaSelection,
            started,
            Some(&request),
            most_caught_up::select(&request),
            |a| validate::selection(&request, a),
        )
    }

    async fn schedule_snapshots(
        &self,
        mut request: ScheduleRequest,
    ) -> Result<Decided<Vec<MemberSchedule>>, PolicyError> {
        let started = Instant::now();
        request.config.clone_from(&self.snapshot_schedule_config);
        decide(
            Hook::SnapshotSchedule,
            started,
            Some(&request),
            stagger::schedule(&request),
            |a| validate::schedules(&request, a),
        )
    }

    async fn rollout_step(
        &self,
        mut request: RolloutRequest,
    ) -> Result<Decided<Step>, PolicyError> {
        let started = Instant::now();
        request.config.clone_from(&self.rollout_order_config);
        decide(
            Hook::RolloutOrder,
            started,
            Some(&request),
            replicas_first::next(&request),
            |a| validate::step(&request, a),
        )
    }
}
