//! Snapshots: the snapshot-schedule plugin gives each member a schedule; the host applies it.
//!
//! On Valkey/Redis the engine saves nothing by itself (`save ""`, drift corrected) and the
//! operator runs `BGSAVE` when a member's schedule fires: never on a member already saving,
//! never on the primary in replicas-only mode, never two members of a shard at once. On
//! Dragonfly each member's `snapshot_cron` is set to its schedule.

use super::Input;
use super::members;
use super::plan::{Action, Plan};
use super::topology::policy_failed;
use crate::observe::ObservedMember;
use crate::policy::Policies;
use kvpilot_sdk::cron::Cron;
use kvpilot_sdk::{Engine, MemberSchedule, ScheduleRequest, SnapshotMode};
use std::time::Duration;

/// What the spec asks of snapshots, in the terms `decide` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotPolicy {
    pub mode: SnapshotMode,
    /// Base 5-field cron schedule.
    pub schedule: String,
    pub stagger_minutes: u32,
}

/// The next snapshot step once topology and rollout have nothing to do.
pub(super) async fn next<P: Policies>(
    input: &Input<'_>,
    policies: &P,
    mut plan: Plan,
    primary: &ObservedMember,
    policy: &SnapshotPolicy,
) -> Plan {
    let obs = input.observed;
    let s = input.settings;
    let request = ScheduleRequest {
        mode: policy.mode,
        cluster: members::cluster(obs, input.spec),
        schedule: policy.schedule.clone(),
        stagger_minutes: policy.stagger_minutes,
        members: obs
            .members
            .iter()
            .map(|m| members::member(m, Some(primary), &obs.desired_revision))
            .collect(),
        config: kvpilot_sdk::empty_config(),
    };
    let schedules = match policies.schedule_snapshots(request).await {
        Err(e) => return policy_failed(plan, e, s.policy_retry),
        Ok(decided) => {
            plan.decisions.push(decided.record);
            decided.answer
        }
    };
    // Safety: in replicas-only mode the primary never snapshots, whatever the plugin said.
    let schedules: Vec<MemberSchedule> = schedules
        .into_iter()
        .map(|ms| {
            if policy.mode == SnapshotMode::ReplicasOnly && ms.member == primary.name {
                MemberSchedule {
                    member: ms.member,
                    cron: None,
                }
            } else {
                ms
            }
        })
        .collect();
    plan.schedules = schedules.clone();
    if obs.engine == Engine::Dragonfly {
        return dragonfly(plan, obs, &schedules, s.probe_interval);
    }
    // Drift: the engine must not save on its own schedule.
    if let Some(m) = obs.members.iter().find(|m| {
        m.report
            .as_ref()
            .is_some_and(|r| r.snapshot_config.as_deref().is_some_and(|v| !v.is_empty()))
    }) {
        return plan.act(
            Action::Configure {
                member: m.name.clone(),
                key: "save".into(),
                value: String::new(),
            },
            s.probe_interval,
        );
    }
    // One BGSAVE per shard at a time.
    if let Some(m) = obs
        .members
        .iter()
        .find(|m| m.report.as_ref().is_some_and(|r| r.bgsave_in_progress))
    {
        plan.requeue_after = s.probe_interval;
        tracing::debug!(member = %m.name, "a snapshot is running; the next one waits");
        return plan;
    }
    let now = obs.now_unix;
    let mut next_due: Option<i64> = None;
    for ms in &schedules {
        let Some(cron) = ms.cron.as_deref().and_then(|c| c.parse::<Cron>().ok()) else {
            continue;
        };
        let Some(m) = obs.members.iter().find(|m| m.name == ms.member) else {
            continue;
        };
        let Some(r) = m.report.as_ref() else {
            continue;
        };
        if !m.ready() || r.syncing {
            continue;
        }
        let since = r.last_save_unix.unwrap_or(0);
        match cron.next_after(since) {
            Some(due) if due <= now => {
                return plan.act(
                    Action::Snapshot {
                        member: m.name.clone(),
                    },
                    s.probe_interval,
                );
            }
            Some(due) => next_due = Some(next_due.map_or(due, |d| d.min(due))),
            None => {}
        }
    }
    if let Some(due) = next_due {
        let wait = Duration::from_secs(u64::try_from(due - now).unwrap_or(0).max(1));
        plan.requeue_after = plan.requeue_after.min(wait);
    }
    plan
}

/// Dragonfly snapshots by itself: set each member's `snapshot_cron` to its schedule.
fn dragonfly(
    plan: Plan,
    obs: &crate::observe::Observed,
    schedules: &[MemberSchedule],
    retry: Duration,
) -> Plan {
    for ms in schedules {
        let want = ms.cron.clone().unwrap_or_default();
        let drifted = obs.members.iter().any(|m| {
            m.name == ms.member
                && m.report
                    .as_ref()
                    .is_some_and(|r| r.snapshot_config.as_deref() != Some(want.as_str()))
        });
        if drifted {
            return plan.act(
                Action::Configure {
                    member: ms.member.clone(),
                    key: "snapshot_cron".into(),
                    value: want,
                },
                retry,
            );
        }
    }
    plan
}
