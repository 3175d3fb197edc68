//! Planned rollouts: the rollout-order plugin picks the step, replica-selection picks the
//! handover target, and the host refuses any step that breaks safety rules 3–5.

use super::Input;
use super::members;
use super::plan::{Action, Blocker, Plan};
use super::topology::policy_failed;
use crate::observe::ObservedMember;
use crate::policy::Policies;
use kvpilot_sdk::{Member, RolloutRequest, Selection, SelectionReason, SelectionRequest, Step};

pub(super) async fn next<P: Policies>(
    input: &Input<'_>,
    policies: &P,
    mut plan: Plan,
    primary: &ObservedMember,
) -> Plan {
    let obs = input.observed;
    let s = input.settings;
    let max_lag = input.spec.rollout.max_lag_bytes;
    plan.primary = Some(primary.name.clone());
    if obs.desired_revision.is_empty() {
        // Not known yet (in Kubernetes: the StatefulSet controller has not reported the update
        // revision of the current template). Against "" every member would look stale:
        // never roll on it.
        return plan.wait(
            Blocker::InProgress,
            "the desired revision is not known yet (StatefulSet status not observed): not rolling out",
            s.probe_interval,
        );
    }
    let view = staying(input, primary);
    if view.iter().all(|m| m.on_desired_revision) {
        if let Some(m) = view
            .iter()
            .find(|m| m.name != primary.name && !m.in_sync(max_lag))
        {
            // Not Ready until every replica is proven in sync (safety rule 5).
            return plan.wait(
                Blocker::InProgress,
                format!("waiting for {} to sync with {}", m.name, primary.name),
                s.probe_interval,
            );
        }
        plan.requeue_after = s.steady_interval;
        return plan;
    }
    plan.rolling = true;
    let request = RolloutRequest {
        cluster: members::cluster(obs, input.spec),
        members: view.clone(),
        max_in_flight: 1,
        max_lag_bytes: max_lag,
        config: kvpilot_sdk::empty_config(),
    };
    let step = match policies.rollout_step(request).await {
        Err(e) => return policy_failed(plan, e, s.policy_retry),
        Ok(decided) => {
            plan.decisions.push(decided.record);
            decided.answer
        }
    };
    match step {
        Step::Wait(reason) => plan.wait(Blocker::RolloutBlocked, reason, s.probe_interval),
        Step::Done => {
            let stale: Vec<&str> = view
                .iter()
                .filter(|m| !m.on_desired_revision)
                .map(|m| m.name.as_str())
                .collect();
            plan.wait(
                Blocker::RolloutBlocked,
                format!(
                    "rollout-order answered done, but {} not on the desired revision",
                    stale.join(", ")
                ),
                s.probe_interval,
            )
        }
        Step::Restart(name) => restart(input, plan, &view, primary, name),
        Step::Handover { from, .. } => handover(input, policies, plan, &view, primary, from).await,
    }
}

/// The members a rollout concerns, as plugins see them: those that stay, and the primary
/// even when it is retiring (it still serves and must hand over). A retiring replica is
/// neither restarted nor a handover target, nor waited for: a scale-down removes it.
fn staying(input: &Input<'_>, primary: &ObservedMember) -> Vec<Member> {
    let obs = input.observed;
    obs.members
        .iter()
        .filter(|m| !m.retiring || m.name == primary.name)
        .map(|m| members::member(m, Some(primary), &obs.desired_revision))
        .collect()
}

/// Safety rules 3–5 for a restart: never the primary while it has replicas, and only while
/// every other member is ready and proven in sync.
fn restart(
    input: &Input<'_>,
    plan: Plan,
    view: &[Member],
    primary: &ObservedMember,
    name: String,
) -> Plan {
    let s = input.settings;
    let max_lag = input.spec.rollout.max_lag_bytes;
    if name == primary.name && view.len() > 1 {
        return plan.wait(
            Blocker::RolloutBlocked,
            format!(
                "refusing to restart primary {name} while it has replicas: a handover comes first"
            ),
            s.probe_interval,
        );
    }
    if let Some(busy) = view
        .iter()
        .find(|m| m.name != name && m.name != primary.name && !m.in_sync(max_lag))
    {
        return plan.wait(
            Blocker::InProgress,
            format!(
                "waiting for {} to be ready and in sync before restarting {name}",
                busy.name
            ),
            s.probe_interval,
        );
    }
    plan.act(
        Action::Restart {
            member: name.clone(),
            replica_of: (name != primary.name).then(|| primary.name.clone()),
        },
        s.probe_interval,
    )
}

/// A planned handover away from the primary (stale, or retiring in a scale-down), to a
/// replica in `view` the replica-selection plugin chooses among those on the desired revision
/// and proven in sync.
async fn handover<P: Policies>(
    input: &Input<'_>,
    policies: &P,
    mut plan: Plan,
    view: &[Member],
    primary: &ObservedMember,
    from: String,
) -> Plan {
    let s = input.settings;
    let max_lag = input.spec.rollout.max_lag_bytes;
    if from != primary.name {
        return plan.wait(
            Blocker::RolloutBlocked,
            format!(
                "rollout-order asked for a handover from {from}, but the primary is {}",
                primary.name
            ),
            s.probe_interval,
        );
    }
    if let Some(busy) = view.iter().find(|m| !m.ready) {
        return plan.wait(
            Blocker::InProgress,
            format!("waiting for {} to be ready before handing over", busy.name),
            s.probe_interval,
        );
    }
    let candidates: Vec<Member> = view
        .iter()
        .filter(|m| m.name != primary.name && m.on_desired_revision && m.in_sync(max_lag))
        .cloned()
        .collect();
    if candidates.is_empty() {
        return plan.wait(
            Blocker::RolloutBlocked,
            format!("no replica of {from} is on the desired revision and in sync: waiting before the handover"),
            s.probe_interval,
        );
    }
    let request = SelectionRequest {
        reason: SelectionReason::PlannedHandover,
        cluster: members::cluster(input.observed, input.spec),
        primary: view.iter().find(|m| m.name == primary.name).cloned(),
        candidates,
        config: kvpilot_sdk::empty_config(),
    };
    match policies.select_replica(request).await {
        Err(e) => policy_failed(plan, e, s.policy_retry),
        Ok(decided) => {
            plan.decisions.push(decided.record);
            match decided.answer {
                Selection::Wait(reason) => {
                    plan.wait(Blocker::RolloutBlocked, reason, s.probe_interval)
                }
                Selection::Promote(to) => plan.act(Action::Handover { from, to }, s.probe_interval),
            }
        }
    }
}
