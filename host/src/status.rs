//! What one reconcile reports: the members, the conditions and the last decisions. The local
//! platform writes it to a file for `kvpilot local status`; Kubernetes writes it to
//! `KvCluster.status`.

use crate::decide::{Blocker, Plan};
use crate::observe::Observed;
use crate::policy::DecisionRecord;
use serde::{Deserialize, Serialize};

/// Decisions kept in status, newest last.
pub const DECISION_HISTORY: usize = 20;
/// Events kept in status, newest last.
pub const EVENT_HISTORY: usize = 50;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    pub primary: Option<String>,
    pub desired_revision: String,
    pub members: Vec<MemberStatus>,
    pub conditions: Vec<Condition>,
    pub last_decisions: Vec<TimedDecision>,
    pub events: Vec<Event>,
    /// Unix milliseconds of the last reconcile.
    pub updated_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    pub name: String,
    pub address: String,
    /// `primary`, `replica`, or `down`.
    pub role: String,
    pub revision: Option<String>,
    pub ready: bool,
    pub offset: u64,
    pub keys: u64,
    pub link_up: bool,
    /// When the member last made a snapshot (Unix seconds). Absent when the server has made
    /// none since it started: the engine then reports its start time, which is no snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_snapshot_unix: Option<i64>,
    /// Whether the last `BGSAVE` succeeded (`rdb_last_bgsave_status`). A failure is always
    /// shown; success only once the server has made a snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_snapshot_ok: Option<bool>,
    /// The member's snapshot schedule, when snapshots are configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_schedule: Option<String>,
    /// When its schedule fires next (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_snapshot_unix: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Ready, Progressing, Degraded, PolicyFailed, RolloutBlocked.
    #[serde(rename = "type")]
    pub kind: String,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimedDecision {
    #[serde(flatten)]
    pub decision: DecisionRecord,
    pub time_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub time_ms: u64,
    /// Normal or Warning, as Kubernetes events.
    pub kind: String,
    pub reason: String,
    pub message: String,
}

impl ClusterStatus {
    /// Folds one reconcile into the status.
    pub fn record(&mut self, observed: &Observed, plan: &Plan, now_ms: u64) {
        self.updated_ms = now_ms;
        self.primary = plan.primary.clone();
        self.desired_revision = observed.desired_revision.clone();
        self.members = observed
            .members
            .iter()
            .map(|m| member_status(m, plan, observed.now_unix))
            .collect();
        self.conditions = conditions(observed, plan);
        for d in &plan.decisions {
            self.last_decisions.push(TimedDecision {
                decision: d.clone(),
                time_ms: now_ms,
            });
        }
        trim(&mut self.last_decisions, DECISION_HISTORY);
    }

    /// Appends an event (a decision, an action, a failure).
    pub fn event(&mut self, now_ms: u64, warning: bool, reason: &str, message: String) {
        self.events.push(Event {
            time_ms: now_ms,
            kind: if warning { "Warning" } else { "Normal" }.to_string(),
            reason: reason.to_string(),
            message,
        });
        trim(&mut self.events, EVENT_HISTORY);
    }

    /// Says in the conditions that `action` failed `attempts` times in a row. A failed
    /// handover or restart blocks the rollout. A member that cannot start degrades the
    /// cluster, and blocks a pending rollout too (no other member may go down meanwhile).
    /// Any other failed step is retried: the cluster is still progressing.
    pub fn action_failed(&mut self, action: &crate::decide::Action, attempts: u32, error: &str) {
        use crate::decide::Action;
        let message = format!(
            "{} failed ({attempts} in a row): {error}",
            action.describe()
        );
        let rollout_pending = self.members.iter().any(|m| {
            m.revision
                .as_deref()
                .is_some_and(|r| r != self.desired_revision)
        });
        let marks: &[(&str, &str)] = match action {
            Action::Handover { .. } => &[("RolloutBlocked", "HandoverFailed")],
            Action::Restart { .. } => &[("RolloutBlocked", "RestartFailed")],
            Action::Start { .. } if rollout_pending => &[
                ("Degraded", "StartFailed"),
                ("RolloutBlocked", "StartFailed"),
            ],
            Action::Start { .. } => &[("Degraded", "StartFailed")],
            _ => &[("Progressing", "Retrying")],
        };
        for (kind, reason) in marks {
            if let Some(c) = self.conditions.iter_mut().find(|c| c.kind == *kind) {
                c.status = true;
                c.reason = (*reason).to_string();
                c.message.clone_from(&message);
            }
        }
    }

    pub fn condition(&self, kind: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.kind == kind)
    }
}

fn trim<T>(v: &mut Vec<T>, keep: usize) {
    if v.len() > keep {
        v.drain(..v.len() - keep);
    }
}

fn member_status(m: &crate::observe::ObservedMember, plan: &Plan, now_unix: i64) -> MemberStatus {
    let r = m.report.as_ref();
    let schedule = plan
        .schedules
        .iter()
        .find(|s| s.member == m.name)
        .and_then(|s| s.cron.clone());
    let next_snapshot_unix = schedule
        .as_deref()
        .and_then(|c| c.parse::<kvpilot_sdk::cron::Cron>().ok())
        .and_then(|c| c.next_after(now_unix));
    MemberStatus {
        name: m.name.clone(),
        address: m.addr.to_string(),
        role: match r.map(|r| r.role) {
            Some(kvpilot_sdk::Role::Primary) => "primary",
            Some(kvpilot_sdk::Role::Replica) => "replica",
            _ => "down",
        }
        .to_string(),
        revision: m.revision.clone(),
        ready: m.ready(),
        offset: r.map(|r| r.offset).unwrap_or(0),
        keys: r.map(|r| r.keys).unwrap_or(0),
        link_up: r.is_some_and(|r| r.link_up || r.role == kvpilot_sdk::Role::Primary),
        last_snapshot_unix: r
            .filter(|r| r.saves_since_start != Some(0))
            .and_then(|r| r.last_save_unix),
        last_snapshot_ok: r.and_then(|r| match (r.last_bgsave_ok, r.saves_since_start) {
            (Some(false), _) => Some(false),
            (Some(true), Some(0)) => None,
            (ok, _) => ok,
        }),
        snapshot_schedule: schedule,
        next_snapshot_unix,
    }
}

fn conditions(observed: &Observed, plan: &Plan) -> Vec<Condition> {
    let cond = |kind: &str, status: bool, reason: &str, message: String| Condition {
        kind: kind.to_string(),
        status,
        reason: reason.to_string(),
        message,
    };
    let blocker = plan.wait.as_ref().map(|w| w.blocker);
    let wait_message = plan
        .wait
        .as_ref()
        .map(|w| w.reason.clone())
        .unwrap_or_default();
    let unready: Vec<&str> = observed
        .members
        .iter()
        .filter(|m| !m.ready())
        .map(|m| m.name.as_str())
        .collect();
    let settled = plan.action.is_none() && plan.wait.is_none() && !plan.rolling;
    vec![
        cond(
            "Ready",
            settled && unready.is_empty() && plan.primary.is_some(),
            if settled { "AsDesired" } else { "Reconciling" },
            match &plan.primary {
                Some(p) => format!("primary is {p}"),
                None => "no primary".to_string(),
            },
        ),
        cond(
            "Progressing",
            plan.action.is_some() || plan.rolling,
            if plan.rolling {
                "RollingOut"
            } else {
                "Converging"
            },
            plan.action
                .as_ref()
                .map(|a| a.describe())
                .unwrap_or_else(|| wait_message.clone()),
        ),
        cond(
            "Degraded",
            !unready.is_empty(),
            if unready.is_empty() {
                "AllMembersReady"
            } else {
                "MembersNotReady"
            },
            unready.join(", "),
        ),
        cond(
            "PolicyFailed",
            blocker == Some(Blocker::PolicyFailed),
            "PolicyFailed",
            if blocker == Some(Blocker::PolicyFailed) {
                wait_message.clone()
            } else {
                String::new()
            },
        ),
        cond(
            "RolloutBlocked",
            blocker == Some(Blocker::RolloutBlocked) || blocker == Some(Blocker::InvalidSpec),
            match blocker {
                Some(Blocker::InvalidSpec) => "InvalidSpec",
                _ => "RolloutBlocked",
            },
            if matches!(
                blocker,
                Some(Blocker::RolloutBlocked) | Some(Blocker::InvalidSpec)
            ) {
                wait_message
            } else {
                String::new()
            },
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::{ObservedMember, Replication};

    fn member(saves: Option<u64>, ok: Option<bool>) -> ObservedMember {
        ObservedMember {
            name: "kv-0".into(),
            shard: 0,
            ordinal: 0,
            addr: "127.0.0.1:6379".parse().expect("addr"),
            revision: None,
            running: true,
            zone: None,
            node: None,
            retiring: false,
            report: Some(Replication {
                last_save_unix: Some(1_800_000_000),
                last_bgsave_ok: ok,
                saves_since_start: saves,
                ..Default::default()
            }),
        }
    }

    fn snapshot(saves: Option<u64>, ok: Option<bool>) -> (Option<i64>, Option<bool>) {
        let plan = Plan::new(std::time::Duration::from_secs(1));
        let s = member_status(&member(saves, ok), &plan, 1_800_000_100);
        (s.last_snapshot_unix, s.last_snapshot_ok)
    }

    #[test]
    fn a_server_that_never_saved_shows_no_snapshot_but_always_shows_a_failure() {
        // LASTSAVE is the start time until the first save: not a snapshot.
        assert_eq!(snapshot(Some(0), Some(true)), (None, None));
        assert_eq!(
            snapshot(Some(2), Some(true)),
            (Some(1_800_000_000), Some(true))
        );
        // A failed BGSAVE is shown even before any success.
        assert_eq!(snapshot(Some(0), Some(false)), (None, Some(false)));
        // Dragonfly reports no save count: the time is taken as reported.
        assert_eq!(snapshot(None, None), (Some(1_800_000_000), None));
    }
}
