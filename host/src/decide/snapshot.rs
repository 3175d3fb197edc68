//! Snapshots: the snapshot-schedule plugin gives each member a schedule; the host applies it.
//!
//! On Valkey/Redis the engine saves nothing by itself (`save ""`, drift corrected) and the
//! operator runs `BGSAVE` when a member's schedule fires: never on a member already saving,
//! never on the primary in replicas-only mode, never two members of a shard at once, and after
//! a failed save not again before a bounded, growing delay. On Dragonfly each member's
//! `snapshot_cron` is set to its schedule.
//!
//! A member is due when its schedule fired after its last snapshot (`LASTSAVE`). Both sides of
//! that comparison are read on the member's own clock (`server_time_usec`), so an operator
//! whose clock is off does not snapshot early or late; the operator's clock is only the
//! fallback for an engine that does not report its time.

use super::Input;
use super::members;
use super::plan::{Action, Plan};
use super::topology::policy_failed;
use crate::observe::{Observed, ObservedMember, Replication};
use crate::policy::Policies;
use kvpilot_sdk::cron::Cron;
use kvpilot_sdk::{Engine, MemberSchedule, ScheduleRequest, SnapshotMode};
use std::collections::BTreeMap;
use std::time::Duration;

/// Longest wait before retrying a member whose saves keep failing.
pub const MAX_SAVE_RETRY: Duration = Duration::from_secs(600);

/// What the spec asks of snapshots, in the terms `decide` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotPolicy {
    pub mode: SnapshotMode,
    /// Base 5-field cron schedule.
    pub schedule: String,
    pub stagger_minutes: u32,
}

/// Where one member stands with its snapshots, as `decide` sees it (status shows this).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSnapshot {
    pub member: String,
    /// The member's schedule; `None` when it does not snapshot.
    pub cron: Option<String>,
    /// The earliest time `decide` snapshots it (Unix seconds): the first firing of its
    /// schedule after its last snapshot, or the retry time after a failed save. In the past
    /// when the member is due and waits for its turn (another member saving, not ready,
    /// syncing, a rollout). On Dragonfly, which fires on its own, the next firing.
    pub next_unix: Option<i64>,
    /// Due now, by the member's clock.
    pub due: bool,
    /// The last save the operator started failed; `next_unix` is when it is retried.
    pub retrying: bool,
}

/// The BGSAVEs the operator started, remembered between reconciles so that a save that fails
/// (a full disk, a failed fork) is retried after a delay instead of at every probe.
///
/// This cannot be read off the members: Valkey 8 and Redis 7 report that the last save failed
/// (`rdb_last_bgsave_status:err`) but not when — `LASTSAVE` only moves on success,
/// `rdb_last_bgsave_time_sec` is a duration, and `rdb_saves` counts attempts. The record is
/// kept in memory by the reconciler and handed to `decide` as input; losing it (an operator
/// restart) costs at most one early retry per member, after which the delay starts over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SaveAttempts {
    by_member: BTreeMap<String, Attempt>,
}

/// One BGSAVE the operator started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// When it was started, on the member's clock (Unix seconds).
    pub at_unix: i64,
    /// How many saves of this member had failed in a row before it.
    pub failed_before: u32,
}

impl SaveAttempts {
    /// Remembers the BGSAVE that `plan` started, if any. Called after the action ran, whether
    /// it succeeded or not: a BGSAVE the server refused (its fork failed) must wait too.
    pub fn note(&mut self, observed: &Observed, plan: &Plan) {
        self.by_member
            .retain(|name, _| observed.members.iter().any(|m| &m.name == name));
        let Some(Action::Snapshot { member }) = &plan.action else {
            return;
        };
        let Some(r) = observed
            .members
            .iter()
            .find(|m| &m.name == member)
            .and_then(|m| m.report.as_ref())
        else {
            return;
        };
        let failed_before = self
            .failed(member, r)
            .map_or(0, |a| a.failed_before.saturating_add(1));
        self.by_member.insert(
            member.clone(),
            Attempt {
                at_unix: r.clock_unix.unwrap_or(observed.now_unix),
                failed_before,
            },
        );
    }

    /// Records an attempt directly (tests, and a reconciler that learns of one otherwise).
    pub fn insert(&mut self, member: &str, attempt: Attempt) {
        self.by_member.insert(member.to_string(), attempt);
    }

    /// The operator's last save on `member` if it failed: none is running and no snapshot
    /// was made since it started (a successful save ends at or after its start, and
    /// `LASTSAVE` has second resolution, so an earlier `LASTSAVE` means it failed).
    pub fn failed(&self, member: &str, r: &Replication) -> Option<&Attempt> {
        let a = self.by_member.get(member)?;
        let failed = !r.bgsave_in_progress && r.last_save_unix.is_none_or(|t| t < a.at_unix);
        failed.then_some(a)
    }
}

/// How long to wait after `failed_before + 1` failed saves in a row: `base`, doubling with
/// each further failure, at most [`MAX_SAVE_RETRY`] (or `base` if that is longer).
pub fn retry_delay(base: Duration, failed_before: u32) -> Duration {
    let factor = 2u32.saturating_pow(failed_before.min(16));
    base.saturating_mul(factor).min(MAX_SAVE_RETRY.max(base))
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
    plan.schedules = schedules
        .iter()
        .map(|ms| standing(obs, input.save_attempts, s.snapshot_retry, ms))
        .collect();
    if obs.engine == Engine::Dragonfly {
        return dragonfly(plan, obs, &schedules, s.probe_interval);
    }
    // Drift: the engine must not save on its own schedule, nor delete the last snapshot
    // when a full sync ends (`rdb-del-sync-files`, which applies once `save` is off).
    for m in &obs.members {
        let Some(r) = m.report.as_ref() else {
            continue;
        };
        let fix = if r.snapshot_config.as_deref().is_some_and(|v| !v.is_empty()) {
            Some(("save", ""))
        } else if r.del_sync_files == Some(true) {
            Some(("rdb-del-sync-files", "no"))
        } else {
            None
        };
        if let Some((key, value)) = fix {
            return plan.act(
                Action::Configure {
                    member: m.name.clone(),
                    key: key.into(),
                    value: value.into(),
                },
                s.probe_interval,
            );
        }
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
    // The due member whose time came first (a tie goes to the plugin's order).
    let eligible = plan
        .schedules
        .iter()
        .filter(|ms| ms.due)
        .filter(|ms| {
            obs.members.iter().any(|m| {
                m.name == ms.member && m.ready() && m.report.as_ref().is_some_and(|r| !r.syncing)
            })
        })
        .min_by_key(|ms| ms.next_unix);
    if let Some(ms) = eligible {
        let member = ms.member.clone();
        return plan.act(Action::Snapshot { member }, s.probe_interval);
    }
    // Look again when the first member not yet due becomes due.
    let wait = plan
        .schedules
        .iter()
        .filter(|ms| !ms.due)
        .filter_map(|ms| {
            let next = ms.next_unix?;
            let now = member_clock(obs, &ms.member);
            u64::try_from(next - now).ok()
        })
        .min();
    if let Some(secs) = wait {
        plan.requeue_after = plan.requeue_after.min(Duration::from_secs(secs.max(1)));
    }
    plan
}

/// The member's clock if it reported one, else the operator's.
fn member_clock(obs: &Observed, member: &str) -> i64 {
    obs.members
        .iter()
        .find(|m| m.name == member)
        .and_then(|m| m.report.as_ref())
        .and_then(|r| r.clock_unix)
        .unwrap_or(obs.now_unix)
}

/// When `ms`'s member snapshots next and whether it is due now.
fn standing(
    obs: &Observed,
    attempts: &SaveAttempts,
    retry_base: Duration,
    ms: &MemberSchedule,
) -> MemberSnapshot {
    let mut out = MemberSnapshot {
        member: ms.member.clone(),
        cron: ms.cron.clone(),
        next_unix: None,
        due: false,
        retrying: false,
    };
    let Some(cron) = ms.cron.as_deref().and_then(|c| c.parse::<Cron>().ok()) else {
        return out;
    };
    let now = member_clock(obs, &ms.member);
    let report = obs
        .members
        .iter()
        .find(|m| m.name == ms.member)
        .and_then(|m| m.report.as_ref());
    if obs.engine == Engine::Dragonfly {
        out.next_unix = cron.next_after(now);
        return out;
    }
    let Some(r) = report else {
        return out;
    };
    let fires = cron.next_after(r.last_save_unix.unwrap_or(0));
    let retry = attempts.failed(&ms.member, r).map(|a| {
        let delay = retry_delay(retry_base, a.failed_before).as_secs();
        a.at_unix
            .saturating_add(i64::try_from(delay).unwrap_or(i64::MAX))
    });
    out.retrying = retry.is_some();
    out.next_unix = match (fires, retry) {
        (Some(f), Some(r)) => Some(f.max(r)),
        (f, _) => f,
    };
    out.due = out.next_unix.is_some_and(|t| t <= now);
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_delay_doubles_and_is_bounded() {
        let base = Duration::from_secs(30);
        assert_eq!(retry_delay(base, 0), base);
        assert_eq!(retry_delay(base, 1), Duration::from_secs(60));
        assert_eq!(retry_delay(base, 3), Duration::from_secs(240));
        assert_eq!(retry_delay(base, 5), MAX_SAVE_RETRY);
        assert_eq!(retry_delay(base, u32::MAX), MAX_SAVE_RETRY);
        // A base above the bound is still honoured.
        let long = Duration::from_secs(3600);
        assert_eq!(retry_delay(long, 4), long);
    }
}
