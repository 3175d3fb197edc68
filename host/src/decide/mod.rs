//! decide: a pure function of what was observed, the spec and the plugins. It applies the host's
//! safety rules (docs/architecture.md) and returns at most one step, or a reason to wait.
//!
//! The only calls out are the policy hooks; there is no I/O and no clock here.

mod cluster;
mod history;
mod in_flight;
mod members;
mod park;
mod plan;
mod rollout;
mod scale;
pub mod shards;
mod snapshot;
mod topology;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_cluster;

pub use plan::{Action, Blocker, Plan, Wait};
pub use snapshot::{Attempt, MAX_SAVE_RETRY, MemberSnapshot, SaveAttempts, SnapshotPolicy};

use crate::api::{KvClusterSpec, validate_spec};
use crate::observe::Observed;
use crate::policy::Policies;
use std::time::Duration;

/// Timing and thresholds of the reconcile loop that `decide` needs to reason about.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Consecutive observations without a primary before the primary counts as lost.
    pub failure_threshold: u32,
    /// Longest one probe of a member (connect, authenticate, `INFO`) may take before the
    /// member counts as not answering.
    pub probe_timeout: Duration,
    /// Requeue delay while something is moving (starting, syncing, no primary).
    pub probe_interval: Duration,
    /// Requeue delay when everything is as desired.
    pub steady_interval: Duration,
    /// Requeue delay after a hook failed under `Fail` (the loop adds backoff on repeats).
    pub policy_retry: Duration,
    /// Wait before retrying a member whose snapshot failed; doubles with each further failure
    /// in a row, up to [`MAX_SAVE_RETRY`].
    pub snapshot_retry: Duration,
    /// Cluster mode: how many shards a rollout may have in flight at once (at least 1, and
    /// never more than a minority of the primaries: [`in_flight::shard_limit`]).
    pub max_shards_in_flight: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            failure_threshold: 3,
            probe_timeout: Duration::from_secs(1),
            probe_interval: Duration::from_millis(200),
            steady_interval: Duration::from_secs(2),
            policy_retry: Duration::from_secs(2),
            // A failed save on a full disk fails again; a fork every 30 s at first, then
            // less often, instead of one per probe.
            snapshot_retry: Duration::from_secs(30),
            max_shards_in_flight: 1,
        }
    }
}

/// Everything one decision looks at.
pub struct Input<'a> {
    pub spec: &'a KvClusterSpec,
    pub observed: &'a Observed,
    pub settings: &'a Settings,
    /// Snapshot settings from the spec, when snapshots are configured.
    pub snapshots: Option<&'a SnapshotPolicy>,
    /// The snapshots the operator started lately (kept by the reconciler, in memory).
    pub save_attempts: &'a SaveAttempts,
}

/// Decides the next step for one cluster.
pub async fn decide<P: Policies>(input: &Input<'_>, policies: &P) -> Plan {
    let mut plan = steps(input, policies).await;
    // Known whatever the plan is (also while it waits), so status never drops a pending fence.
    // In cluster mode nothing is fenced by client kills: a demoted primary answers MOVED for
    // the slots it lost on every connection it has (the writes it acknowledged are its
    // replicas' too, by the graceful CLUSTER FAILOVER), and a primary that stopped answering
    // is killed before its replica is forced over (rule 7).
    plan.fence_pending = if input.observed.cluster_shards().is_some() {
        Vec::new()
    } else {
        input
            .observed
            .members
            .iter()
            .filter(|m| topology::fence_pending(m))
            .map(|m| m.name.clone())
            .collect()
    };
    // Snapshots are configured but this plan did not get to them (something else is moving,
    // or the hook failed): the schedules last decided still hold, and status keeps them.
    plan.snapshots_deferred = input.snapshots.is_some() && plan.schedules.is_empty();
    plan
}

async fn steps<P: Policies>(input: &Input<'_>, policies: &P) -> Plan {
    let plan = Plan::new(input.settings.steady_interval);
    if let Err(e) = validate_spec(input.spec) {
        return plan.wait(
            Blocker::InvalidSpec,
            e.to_string(),
            input.settings.steady_interval,
        );
    }
    if input.spec.shards > 1 {
        return cluster::steps(input, policies, plan).await;
    }
    // A handover already under way finishes (or times out) on its own: never start a second.
    if let Some(m) = input
        .observed
        .members
        .iter()
        .find(|m| m.report.as_ref().is_some_and(|r| r.failover_in_progress))
    {
        return plan.wait(
            Blocker::InProgress,
            format!("a handover is in progress on {}", m.name),
            input.settings.probe_interval,
        );
    }
    let (plan, primary) = match topology::settle(input, policies, plan).await {
        topology::Settled::Primary(plan, primary) => (plan, primary),
        topology::Settled::Done(plan) => return plan,
    };
    if let Some(retire) = scale::retire(input, primary) {
        let mut plan = plan;
        plan.primary = Some(primary.name.clone());
        return plan.act(retire, input.settings.probe_interval);
    }
    let plan = rollout::next(input, policies, plan, primary).await;
    match input.snapshots {
        // Snapshots only while nothing else is moving.
        Some(policy) if plan.action.is_none() && plan.wait.is_none() && !plan.rolling => {
            snapshot::next(input, policies, plan, primary, policy).await
        }
        _ => plan,
    }
}
