//! What one reconcile reports: the members, the conditions and the last decisions. The local
//! platform writes it to a file for `kvpilot local status`; Kubernetes writes it to
//! `KvCluster.status`.

use crate::decide::{Blocker, Plan};
use crate::observe::{KnownRole, LastKnown, Observed};
use crate::policy::{DecisionRecord, FailurePolicy, Hook, HookProblem, text};
use serde::{Deserialize, Serialize};

/// Decisions kept in status, newest last.
pub const DECISION_HISTORY: usize = 20;
/// The most bytes of text the kept decisions may hold together (answers, requests, fallback
/// reasons); the oldest go first. With the per-record bounds (`DecisionRecord::new`: a
/// request of at most 8 KiB) this keeps a status far below what the API server accepts
/// (docs/architecture.md, rule 10).
pub const DECISION_BYTES: usize = 96 * 1024;
/// Events kept in status, newest last.
pub const EVENT_HISTORY: usize = 50;
/// An event's message, as Kubernetes caps an Event note.
pub const EVENT_MESSAGE_BYTES: usize = 1024;
/// A condition's message (Kubernetes accepts 32 KiB).
pub const CONDITION_MESSAGE_BYTES: usize = 8 * 1024;

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
    /// Cluster mode only: the shards and the addresses a cluster client starts from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterModeStatus>,
}

/// Cluster mode (`spec.shards` > 1), as the members see it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterModeStatus {
    /// Client addresses of the members (`host:port`): a cluster client's seeds. It follows
    /// MOVED/ASK from there; there is no primary endpoint in cluster mode.
    pub seeds: Vec<String>,
    /// Shards whose primary serves and whose members are all ready replicas of it.
    pub shards_ready: u32,
    pub shards: Vec<ShardStatus>,
}

/// One shard of a cluster-mode group (also `KvCluster.status.cluster.shards[]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardStatus {
    /// The shard's index (its StatefulSet is `<name>-s<shard>`).
    pub shard: u32,
    /// The member that owns the shard's slots and answers, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    /// The config epoch of the shard's slot owner.
    pub config_epoch: u64,
    /// The slot ranges the shard's owner holds (`0-5460`).
    pub slots: Vec<String>,
    /// Its primary serves and every member is a ready replica of it.
    pub ready: bool,
    /// `cluster_state` as the shard's primary reports it (`-` when no primary answers).
    pub cluster_state: String,
    /// Each member and its node id (`-` when unknown).
    pub nodes: Vec<ShardNode>,
}

/// A member of a shard and its cluster node id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardNode {
    /// The member (pod) name.
    pub member: String,
    /// Its cluster node id (`-` when unknown).
    pub node_id: String,
}

/// The shards of `observed` as status shows them; `None` in replication mode.
pub fn cluster_mode_status(observed: &Observed) -> Option<ClusterModeStatus> {
    let count = observed.cluster_shards()?;
    let shards: Vec<ShardStatus> = crate::decide::shards::shards(observed, count)
        .iter()
        .map(|sh| ShardStatus {
            shard: sh.index,
            primary: sh.primary.map(|p| p.name.clone()),
            config_epoch: sh.owner.as_ref().map_or(0, |o| o.config_epoch),
            slots: sh
                .owner
                .as_ref()
                .map(|o| o.slots.iter().map(|r| r.to_string()).collect())
                .unwrap_or_default(),
            ready: crate::decide::shards::shard_ready(sh),
            cluster_state: sh
                .primary
                .and_then(|p| p.cluster.as_ref())
                .map(|v| match &v.info.state {
                    crate::engine::ClusterState::Ok => "ok".to_string(),
                    crate::engine::ClusterState::Fail => "fail".to_string(),
                    crate::engine::ClusterState::Other(o) => text::clean(o, 32),
                })
                .unwrap_or_else(|| "-".to_string()),
            nodes: sh
                .members
                .iter()
                .map(|m| ShardNode {
                    member: m.name.clone(),
                    node_id: crate::decide::shards::node_id(m, observed)
                        .unwrap_or_else(|| "-".to_string()),
                })
                .collect(),
        })
        .collect();
    Some(ClusterModeStatus {
        seeds: crate::decide::shards::seeds(observed),
        shards_ready: u32::try_from(shards.iter().filter(|s| s.ready).count()).unwrap_or(0),
        shards,
    })
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
    /// When the operator snapshots it next, at the earliest (Unix seconds), as `decide`
    /// computes it: the first firing of its schedule after its last snapshot, or the retry
    /// time after a failed one. In the past when it is due and waits for its turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_snapshot_unix: Option<i64>,
    /// Due now (by the member's clock) and waiting for its turn: another member is saving,
    /// it is not ready or syncing, or a rollout runs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub snapshot_due: bool,
    /// Its last snapshot failed and is retried at `next_snapshot_unix`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub snapshot_retrying: bool,
    /// What it last answered with its dataset loaded (role, replication history, keys) and
    /// whether a fence of its clients is pending; kept while it is down or loading, and read
    /// back after an operator restart (safety rules 2 and 7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_known: Option<LastKnown>,
}

impl MemberStatus {
    /// A member known only by what status recorded (status read back after a restart).
    pub fn remembered(name: &str, last_known: Option<LastKnown>) -> MemberStatus {
        MemberStatus {
            name: name.to_string(),
            address: String::new(),
            role: "down".to_string(),
            revision: None,
            ready: false,
            offset: 0,
            keys: 0,
            link_up: false,
            last_snapshot_unix: None,
            last_snapshot_ok: None,
            snapshot_schedule: None,
            next_snapshot_unix: None,
            snapshot_due: false,
            snapshot_retrying: false,
            last_known,
        }
    }
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
    /// Folds one reconcile into the status; returns the decisions it recorded, which are the
    /// ones worth an event.
    ///
    /// The snapshot-schedule hook is asked on every settled reconcile and mostly gives the
    /// same answer: it is recorded only when the answer differs from the last one recorded,
    /// so it does not push failover and rollout decisions out of the short history. (Metrics
    /// see every call: they read the plan.)
    pub fn record(&mut self, observed: &Observed, plan: &Plan, now_ms: u64) -> Vec<DecisionRecord> {
        self.updated_ms = now_ms;
        self.primary = plan.primary.clone();
        self.desired_revision = observed.desired_revision.clone();
        let previous = std::mem::take(&mut self.members);
        self.members = observed
            .members
            .iter()
            .map(|m| {
                let before = previous.iter().find(|p| p.name == m.name);
                member_status(m, plan, before, observed.now_unix)
            })
            .collect();
        self.cluster = cluster_mode_status(observed);
        self.conditions = conditions(observed, plan);
        let mut recorded = Vec::new();
        for d in &plan.decisions {
            let d = d.bounded();
            if d.hook == Hook::SnapshotSchedule && self.repeats_last_schedule(&d) {
                continue;
            }
            self.last_decisions.push(TimedDecision {
                decision: d.clone(),
                time_ms: now_ms,
            });
            recorded.push(d);
        }
        trim(&mut self.last_decisions, DECISION_HISTORY);
        while self.last_decisions.len() > 1
            && self
                .last_decisions
                .iter()
                .map(|t| decision_bytes(&t.decision))
                .sum::<usize>()
                > DECISION_BYTES
        {
            self.last_decisions.remove(0);
        }
        recorded
    }

    /// Whether `d` says what the last snapshot-schedule decision recorded said (same plugin
    /// and build, same answer, same fallback). Latency and time do not count. If that record
    /// has been trimmed away, `d` is recorded again: once per history's worth of decisions.
    fn repeats_last_schedule(&self, d: &DecisionRecord) -> bool {
        self.last_decisions
            .iter()
            .rev()
            .find(|t| t.decision.hook == Hook::SnapshotSchedule)
            .is_some_and(|t| {
                let last = &t.decision;
                last.plugin == d.plugin
                    && last.sha256 == d.sha256
                    && last.answer == d.answer
                    && last.fallback_from == d.fallback_from
            })
    }

    /// Appends an event (a decision, an action, a failure); its message is cleaned and cut
    /// (it may quote a plugin or a user).
    pub fn event(&mut self, now_ms: u64, warning: bool, reason: &str, message: String) {
        self.events.push(Event {
            time_ms: now_ms,
            kind: if warning { "Warning" } else { "Normal" }.to_string(),
            reason: reason.to_string(),
            message: text::clean(&message, EVENT_MESSAGE_BYTES),
        });
        trim(&mut self.events, EVENT_HISTORY);
    }

    /// Says in the conditions that `action` failed `attempts` times in a row. A failed
    /// handover or restart blocks the rollout. A member that cannot start degrades the
    /// cluster, and blocks a pending rollout too (no other member may go down meanwhile).
    /// Any other failed step is retried: the cluster is still progressing.
    pub fn action_failed(&mut self, action: &crate::decide::Action, attempts: u32, error: &str) {
        use crate::decide::Action;
        let message = text::clean(
            &format!(
                "{} failed ({attempts} in a row): {error}",
                action.describe()
            ),
            CONDITION_MESSAGE_BYTES,
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

    /// Says in `PolicyFailed` which hooks cannot be used (their plugin could not be bound
    /// under `failurePolicy: Fail`) and why, also when no decision needed them this time; the
    /// other hooks keep working, so Ready is left as the plan made it. Hooks under `Fallback`
    /// are answered by their builtin: each decision says so in `fallbackFrom`.
    pub fn unusable_hooks(&mut self, problems: &[HookProblem]) {
        let failing: Vec<String> = problems
            .iter()
            .filter(|p| p.failure == FailurePolicy::Fail)
            .map(HookProblem::to_string)
            .collect();
        if failing.is_empty() {
            return;
        }
        let Some(c) = self
            .conditions
            .iter_mut()
            .find(|c| c.kind == "PolicyFailed")
        else {
            return;
        };
        let mut parts: Vec<String> = Vec::new();
        if c.status && !c.message.is_empty() {
            parts.push(std::mem::take(&mut c.message));
        }
        for problem in failing {
            if !parts.iter().any(|p| p.contains(&problem)) {
                parts.push(problem);
            }
        }
        c.status = true;
        c.reason = "PolicyFailed".to_string();
        c.message = text::clean(&parts.join("; "), CONDITION_MESSAGE_BYTES);
    }

    pub fn condition(&self, kind: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.kind == kind)
    }

    /// Hands decide what status recorded of each member (rules 2 and 7): it is all that is
    /// known of a member that is down, hung or loading.
    pub fn remember(&self, observed: &mut Observed) {
        for m in &mut observed.members {
            m.last_known = self
                .members
                .iter()
                .find(|s| s.name == m.name)
                .and_then(|s| s.last_known.clone());
        }
    }

    /// `members` had their normal clients disconnected after their demotion: no fence is
    /// pending for them any more, and they count as replicas.
    pub fn fence_done(&mut self, members: &[String]) {
        for m in self
            .members
            .iter_mut()
            .filter(|m| members.contains(&m.name))
        {
            if let Some(known) = m.last_known.as_mut() {
                known.fence_pending = false;
                known.role = KnownRole::Replica;
            }
        }
    }
}

/// The bytes of text a kept decision holds.
fn decision_bytes(d: &DecisionRecord) -> usize {
    d.plugin.len()
        + d.sha256.len()
        + d.answer.len()
        + d.request.as_ref().map_or(0, String::len)
        + d.fallback_from.as_ref().map_or(0, String::len)
}

/// A schedule as status shows it: its canonical text (what a plugin wrote may carry any
/// spacing), or, should it not parse, cleaned and cut.
fn schedule_text(cron: &str) -> String {
    match cron.parse::<kvpilot_sdk::cron::Cron>() {
        Ok(c) => c.to_string(),
        Err(_) => text::one_line(cron, text::NAME_BYTES),
    }
}

fn trim<T>(v: &mut Vec<T>, keep: usize) {
    if v.len() > keep {
        v.drain(..v.len() - keep);
    }
}

fn member_status(
    m: &crate::observe::ObservedMember,
    plan: &Plan,
    before: Option<&MemberStatus>,
    now_unix: i64,
) -> MemberStatus {
    let r = m.report.as_ref();
    let role = match r.map(|r| r.role) {
        Some(kvpilot_sdk::Role::Primary) => "primary",
        Some(kvpilot_sdk::Role::Replica) => "replica",
        _ => "down",
    }
    .to_string();
    let mut status = MemberStatus {
        name: m.name.clone(),
        address: m.addr.to_string(),
        role,
        revision: m.revision.clone(),
        ready: m.ready(),
        offset: r.map(|r| r.offset).unwrap_or(0),
        keys: r.and_then(|r| r.keys).unwrap_or(0),
        link_up: r.is_some_and(|r| r.link_up || r.role == kvpilot_sdk::Role::Primary),
        last_snapshot_unix: r.and_then(last_snapshot),
        last_snapshot_ok: r.and_then(|r| match r.last_bgsave_ok {
            // A failure is shown even before any success.
            Some(false) => Some(false),
            Some(true) if last_snapshot(r).is_none() => None,
            ok => ok,
        }),
        snapshot_schedule: None,
        next_snapshot_unix: None,
        snapshot_due: false,
        snapshot_retrying: false,
        last_known: last_known(m, plan, before),
    };
    if let Some(s) = plan.schedules.iter().find(|s| s.member == m.name) {
        status.snapshot_schedule = s.cron.as_deref().map(schedule_text);
        status.next_snapshot_unix = s.next_unix;
        status.snapshot_due = s.due;
        status.snapshot_retrying = s.retrying;
    } else if plan.snapshots_deferred
        && let Some(b) = before.filter(|b| b.role == status.role)
        && let Some(cron) = b.snapshot_schedule.clone()
    {
        // Decided on before something else started moving, and the member's role has not
        // changed since (a role change recomputes schedules): still its schedule. The next
        // time is recomputed as decide would (a restart moves `LASTSAVE`); a pending retry
        // is not known here and shows as due.
        let now = r.and_then(|r| r.clock_unix).unwrap_or(now_unix);
        status.next_snapshot_unix = cron
            .parse::<kvpilot_sdk::cron::Cron>()
            .ok()
            .zip(r.and_then(|r| r.last_save_unix))
            .and_then(|(c, since)| c.next_after(since));
        status.snapshot_due = status.next_snapshot_unix.is_some_and(|t| t <= now);
        status.snapshot_schedule = Some(cron);
    }
    status
}

/// What to keep of `m`: what it answered now if it answered with its dataset loaded, else
/// what was kept before; with the fence `decide` found pending.
fn last_known(
    m: &crate::observe::ObservedMember,
    plan: &Plan,
    before: Option<&MemberStatus>,
) -> Option<LastKnown> {
    let pending = plan.fence_pending.contains(&m.name);
    let now = m.report.as_ref().filter(|r| m.running && !r.loading);
    let role = now.and_then(|r| match r.role {
        kvpilot_sdk::Role::Primary => Some(KnownRole::Primary),
        kvpilot_sdk::Role::Replica => Some(KnownRole::Replica),
        kvpilot_sdk::Role::Unknown => None,
    });
    match (now, role) {
        (Some(r), Some(role)) if r.history.is_some() && r.keys.is_some() => Some(LastKnown {
            role,
            history: r.history.clone().unwrap_or_default(),
            keys: r.keys.unwrap_or(0),
            started_unix: r.started_unix,
            fence_pending: pending,
        }),
        _ => before.and_then(|b| b.last_known.clone()).map(|mut k| {
            k.fence_pending = pending;
            k
        }),
    }
}

/// The member's last snapshot, if this server process made one. `LASTSAVE` is the start time
/// until the first successful save, and `rdb_saves` counts attempts, failed ones too; so a
/// `LASTSAVE` no later than the process's start (read on the member's clock) is no snapshot.
fn last_snapshot(r: &crate::observe::Replication) -> Option<i64> {
    let t = r.last_save_unix?;
    if r.saves_since_start == Some(0) || r.started_unix.is_some_and(|start| t <= start) {
        return None;
    }
    Some(t)
}

fn conditions(observed: &Observed, plan: &Plan) -> Vec<Condition> {
    let cond = |kind: &str, status: bool, reason: &str, message: String| Condition {
        kind: kind.to_string(),
        status,
        reason: reason.to_string(),
        message,
    };
    let blocker = plan.wait.as_ref().map(|w| w.blocker);
    // A wait reason may be a plugin's (a rollout-order `wait`): cleaned and cut.
    let wait_message = plan
        .wait
        .as_ref()
        .map(|w| text::clean(&w.reason, CONDITION_MESSAGE_BYTES))
        .unwrap_or_default();
    let unready: Vec<&str> = observed
        .members
        .iter()
        .filter(|m| !m.ready())
        .map(|m| m.name.as_str())
        .collect();
    let settled = plan.action.is_none() && plan.wait.is_none() && !plan.rolling;
    let cluster_mode = observed.cluster_shards().is_some();
    let formed = cluster_mode && crate::decide::shards::formed(observed);
    let mut out = vec![
        cond(
            "Ready",
            settled && unready.is_empty() && (plan.primary.is_some() || formed),
            if settled { "AsDesired" } else { "Reconciling" },
            match &plan.primary {
                Some(p) => format!("primary is {p}"),
                None if cluster_mode => format!(
                    "cluster mode: {}",
                    if formed { "formed" } else { "not formed" }
                ),
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
    ];
    if cluster_mode {
        let assigned = crate::decide::shards::slots_assigned(observed);
        out.push(cond(
            "ClusterFormed",
            formed,
            if formed { "ClusterStateOk" } else { "Forming" },
            if formed {
                "every member reports cluster_state:ok with 16384 slots assigned".to_string()
            } else {
                "not every member reports cluster_state:ok with 16384 slots assigned yet"
                    .to_string()
            },
        ));
        out.push(cond(
            "SlotsAssigned",
            assigned,
            if assigned {
                "AllSlotsAssigned"
            } else {
                "SlotsUnassigned"
            },
            if assigned {
                "every member sees all 16384 slots assigned".to_string()
            } else {
                "some member sees slots without an owner".to_string()
            },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::MemberSnapshot;
    use crate::observe::{ObservedMember, Replication};
    use std::time::Duration;

    const STARTED: i64 = 1_800_000_000;

    fn member(saves: Option<u64>, ok: Option<bool>, last_save: i64) -> ObservedMember {
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
                last_save_unix: Some(last_save),
                last_bgsave_ok: ok,
                saves_since_start: saves,
                started_unix: Some(STARTED),
                clock_unix: Some(STARTED + 100),
                ..Default::default()
            }),
            last_known: None,
            cluster: None,
        }
    }

    fn observed(members: Vec<ObservedMember>) -> Observed {
        Observed {
            name: "kv".into(),
            namespace: "local".into(),
            engine: kvpilot_sdk::Engine::Valkey,
            engine_version: "8.0.1".into(),
            desired_revision: "rev".into(),
            members,
            endpoint: None,
            primary_missing_probes: 0,
            shard_missing_probes: Vec::new(),
            now_unix: STARTED + 100,
        }
    }

    fn snapshot(
        saves: Option<u64>,
        ok: Option<bool>,
        last_save: i64,
    ) -> (Option<i64>, Option<bool>) {
        let plan = Plan::new(Duration::from_secs(1));
        let s = member_status(&member(saves, ok, last_save), &plan, None, STARTED + 100);
        (s.last_snapshot_unix, s.last_snapshot_ok)
    }

    #[test]
    fn a_server_that_never_saved_shows_no_snapshot_but_always_shows_a_failure() {
        // LASTSAVE is the start time until the first save: not a snapshot.
        assert_eq!(snapshot(Some(0), Some(true), STARTED), (None, None));
        assert_eq!(
            snapshot(Some(2), Some(true), STARTED + 50),
            (Some(STARTED + 50), Some(true))
        );
        // A failed BGSAVE is shown even before any success; `rdb_saves` counted it, but
        // LASTSAVE is still the start time, which is no snapshot.
        assert_eq!(snapshot(Some(1), Some(false), STARTED), (None, Some(false)));
        assert_eq!(
            snapshot(Some(3), Some(false), STARTED + 20),
            (Some(STARTED + 20), Some(false))
        );
        // Dragonfly reports no save count and no start: the time is taken as reported.
        let mut m = member(None, None, STARTED);
        if let Some(r) = m.report.as_mut() {
            r.started_unix = None;
        }
        let s = member_status(&m, &Plan::new(Duration::from_secs(1)), None, STARTED);
        assert_eq!(
            (s.last_snapshot_unix, s.last_snapshot_ok),
            (Some(STARTED), None)
        );
    }

    #[test]
    fn status_shows_what_decide_decided_about_each_members_snapshot() {
        let obs = observed(vec![member(Some(1), Some(true), STARTED + 10)]);
        let mut plan = Plan::new(Duration::from_secs(1));
        plan.schedules = vec![MemberSnapshot {
            member: "kv-0".into(),
            cron: Some("* * * * *".into()),
            next_unix: Some(STARTED + 60),
            due: true,
            retrying: false,
        }];
        let mut status = ClusterStatus::default();
        status.record(&obs, &plan, 1);
        let m = &status.members[0];
        assert_eq!(m.snapshot_schedule.as_deref(), Some("* * * * *"));
        // Overdue (next < now) and shown as such, not as the next firing after now.
        assert_eq!(m.next_snapshot_unix, Some(STARTED + 60));
        assert!(m.snapshot_due);
        assert!(!m.snapshot_retrying);
    }

    #[test]
    fn schedules_survive_a_deferred_reconcile_unless_the_role_changed() {
        let mut primary = member(Some(1), Some(true), STARTED + 10);
        primary.name = "kv-1".into();
        if let Some(r) = primary.report.as_mut() {
            r.role = kvpilot_sdk::Role::Primary;
        }
        let replica = member(Some(1), Some(true), STARTED + 10);
        let obs = observed(vec![replica.clone(), primary.clone()]);
        let mut plan = Plan::new(Duration::from_secs(1));
        plan.schedules = ["kv-0", "kv-1"]
            .iter()
            .map(|m| MemberSnapshot {
                member: m.to_string(),
                cron: Some("0 3 * * *".into()),
                next_unix: Some(STARTED + 3_600),
                due: false,
                retrying: false,
            })
            .collect();
        let mut status = ClusterStatus::default();
        status.record(&obs, &plan, 1);

        // A rollout runs: no schedules decided. kv-0 restarted (LASTSAVE = its new start),
        // kv-1 was handed over to and is now a replica.
        let mut restarted = replica.clone();
        if let Some(r) = restarted.report.as_mut() {
            r.last_save_unix = Some(STARTED + 90);
        }
        let mut demoted = primary.clone();
        if let Some(r) = demoted.report.as_mut() {
            r.role = kvpilot_sdk::Role::Replica;
        }
        let mut deferred = Plan::new(Duration::from_secs(1));
        deferred.snapshots_deferred = true;
        status.record(&observed(vec![restarted, demoted]), &deferred, 2);
        let kept = &status.members[0];
        assert_eq!(kept.snapshot_schedule.as_deref(), Some("0 3 * * *"));
        let want = "0 3 * * *"
            .parse::<kvpilot_sdk::cron::Cron>()
            .expect("cron")
            .next_after(STARTED + 90);
        assert_eq!(kept.next_snapshot_unix, want);
        assert_eq!(status.members[1].snapshot_schedule, None, "role changed");

        // Snapshots no longer configured: nothing is kept.
        status.record(&obs, &Plan::new(Duration::from_secs(1)), 3);
        status.record(&obs, &Plan::new(Duration::from_secs(1)), 4);
        assert!(status.members.iter().all(|m| m.snapshot_schedule.is_none()));
    }

    fn decision(hook: Hook, answer: &str, micros: u64) -> DecisionRecord {
        DecisionRecord {
            hook,
            plugin: "builtin:stagger".into(),
            sha256: "ab".repeat(32),
            answer: answer.into(),
            request: None,
            latency: Duration::from_micros(micros),
            fallback_from: None,
        }
    }

    /// Whatever a plan carries, what status keeps is clean and bounded: each decision's texts,
    /// their sum over the history, each event, each condition (rule 10).
    #[test]
    fn what_status_keeps_is_clean_and_bounded_in_bytes() {
        let hostile = format!("\u{1b}[31m\0{}\u{202e}", "z".repeat(1 << 20));
        let obs = observed(vec![member(Some(0), Some(true), STARTED)]);
        let mut status = ClusterStatus::default();
        for i in 0..100 {
            let mut plan = Plan::new(Duration::from_secs(1));
            plan.decisions = vec![DecisionRecord {
                fallback_from: Some(hostile.clone()),
                plugin: hostile.clone(),
                ..decision(Hook::RolloutOrder, &hostile, i)
            }];
            plan.wait = Some(crate::decide::Wait {
                blocker: Blocker::RolloutBlocked,
                reason: hostile.clone(),
            });
            status.record(&obs, &plan, i);
            status.event(i, true, "Waiting", hostile.clone());
        }
        let bytes: usize = status
            .last_decisions
            .iter()
            .map(|t| decision_bytes(&t.decision))
            .sum();
        assert!(bytes <= DECISION_BYTES, "{bytes}");
        assert!(!status.last_decisions.is_empty());
        assert_eq!(
            status.last_decisions.last().unwrap().time_ms,
            99,
            "newest kept"
        );
        let json = serde_json::to_string(&status).unwrap();
        assert!(json.len() < 200 * 1024, "{} bytes", json.len());
        assert!(!json.contains("\\u001b") && !json.contains("\\u0000"));
        assert!(!json.contains('\u{202e}'));
        let blocked = status.condition("RolloutBlocked").unwrap();
        assert!(blocked.message.len() <= CONDITION_MESSAGE_BYTES + 32);
        assert!(
            status
                .events
                .iter()
                .all(|e| e.message.len() <= EVENT_MESSAGE_BYTES + 32)
        );
    }

    #[test]
    fn a_snapshot_schedule_is_recorded_only_when_its_answer_changes() {
        let obs = observed(vec![member(Some(0), Some(true), STARTED)]);
        let mut status = ClusterStatus::default();
        let mut recorded = 0;
        let mut record = |status: &mut ClusterStatus, decisions: Vec<DecisionRecord>| {
            let mut plan = Plan::new(Duration::from_secs(1));
            plan.decisions = decisions;
            let new = status.record(&obs, &plan, 1);
            recorded += new.len();
            new
        };
        let a = decision(Hook::SnapshotSchedule, "[a]", 100);
        assert_eq!(record(&mut status, vec![a.clone()]).len(), 1);
        // The same answer, another latency: not new.
        for i in 0..50 {
            assert!(
                record(
                    &mut status,
                    vec![decision(Hook::SnapshotSchedule, "[a]", i)]
                )
                .is_empty()
            );
        }
        // A failover decision in between does not make the schedule new again.
        let failover = decision(Hook::ReplicaSelection, "kv-1", 5);
        assert_eq!(record(&mut status, vec![failover.clone()]).len(), 1);
        assert!(record(&mut status, vec![a.clone()]).is_empty());
        // A changed answer is recorded, and so is the old one when it comes back.
        assert_eq!(
            record(
                &mut status,
                vec![decision(Hook::SnapshotSchedule, "[b]", 1)]
            )
            .len(),
            1
        );
        assert_eq!(record(&mut status, vec![a.clone()]).len(), 1);
        // Other hooks are recorded every time.
        assert_eq!(record(&mut status, vec![failover.clone()]).len(), 1);
        assert_eq!(record(&mut status, vec![failover]).len(), 1);
        assert_eq!(recorded, 6);
        assert_eq!(
            status.last_decisions.len(),
            6,
            "the failover decisions were kept"
        );
    }

    #[test]
    fn what_a_member_last_answered_is_kept_while_it_is_down_or_loading() {
        use crate::observe::History;
        let history = |offset| History {
            replid: "r1".into(),
            offset,
            ..Default::default()
        };
        let mut m = member(Some(0), Some(true), STARTED);
        if let Some(r) = m.report.as_mut() {
            r.role = kvpilot_sdk::Role::Primary;
            r.history = Some(history(500));
            r.keys = Some(7);
        }
        let mut plan = Plan::new(Duration::from_secs(1));
        let mut status = ClusterStatus::default();
        status.record(&observed(vec![m.clone()]), &plan, 1);
        let kept = status.members[0].last_known.clone().expect("recorded");
        assert_eq!(kept.role, KnownRole::Primary);
        assert_eq!(kept.history.offset, 500);
        assert_eq!(kept.keys, 7);
        assert!(!kept.fence_pending);
        // Loading (keys and history unknown), then down: the record stays; decide's pending
        // fence is recorded with it.
        let mut loading = m.clone();
        if let Some(r) = loading.report.as_mut() {
            r.loading = true;
            r.keys = None;
            r.history = None;
        }
        plan.fence_pending = vec!["kv-0".into()];
        status.record(&observed(vec![loading]), &plan, 2);
        let kept = status.members[0].last_known.clone().expect("kept");
        assert_eq!((kept.history.offset, kept.keys), (500, 7));
        assert!(kept.fence_pending);
        let mut down = m;
        down.running = false;
        down.report = None;
        status.record(&observed(vec![down.clone()]), &plan, 3);
        assert_eq!(
            status.members[0].last_known.as_ref().map(|k| k.keys),
            Some(7)
        );
        // Read back by the next decide, and cleared by a successful fence.
        let mut obs = observed(vec![down]);
        status.remember(&mut obs);
        assert_eq!(obs.members[0].last_known, status.members[0].last_known);
        status.fence_done(&["kv-0".to_string()]);
        let done = status.members[0].last_known.clone().expect("kept");
        assert!(!done.fence_pending);
        assert_eq!(done.role, KnownRole::Replica);
        // It survives a round trip through the status file.
        let text = serde_json::to_string(&status).expect("json");
        let back: ClusterStatus = serde_json::from_str(&text).expect("parse");
        assert_eq!(back.members[0].last_known, status.members[0].last_known);
    }
}
