//! `KvCluster.status`, and its conversion from what one reconcile reports
//! ([`crate::status::ClusterStatus`], shared with the local platform).

use crate::policy::text;
use crate::status::ClusterStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// The condition types kvpilot sets, in the order it reports them.
pub const CONDITION_TYPES: [&str; 6] = [
    "Ready",
    "Progressing",
    "Degraded",
    "PolicyFailed",
    "RolloutBlocked",
    "StorageChangeBlocked",
];
/// The condition types of cluster mode (`spec.shards` > 1), after [`CONDITION_TYPES`];
/// `ShardsChangeBlocked` is set on every Kubernetes cluster (false while `spec.shards` is the
/// shard count the cluster runs).
pub const CLUSTER_CONDITION_TYPES: [&str; 3] =
    ["ClusterFormed", "SlotsAssigned", "ShardsChangeBlocked"];

/// Kubernetes caps a condition message at 32768 bytes.
const MAX_MESSAGE_BYTES: usize = 32 * 1024;
/// The most bytes the whole `status` of one KvCluster may take, as JSON. The object (spec,
/// metadata, status) must stay within what the API server and etcd accept (about 1.5 MiB);
/// a status this size leaves the rest ample room (docs/architecture.md, rule 10).
pub const MAX_STATUS_BYTES: usize = 256 * 1024;
/// What a condition message is cut to when the status is over [`MAX_STATUS_BYTES`].
const SHRUNK_MESSAGE_BYTES: usize = 1024;

/// The observed state of a KvCluster.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KvClusterStatus {
    /// Ready, Progressing, Degraded, PolicyFailed, RolloutBlocked, (Kubernetes)
    /// StorageChangeBlocked: a spec.storage change the StatefulSets cannot take, and in
    /// cluster mode ClusterFormed (every member reports cluster_state:ok with 16384 slots
    /// assigned) and SlotsAssigned; ShardsChangeBlocked when spec.shards changed on a live
    /// cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The member that is primary, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    /// Every member, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberState>,
    /// The revision members run outside a rollout; during one, the revision the members not
    /// yet updated run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_revision: Option<String>,
    /// The revision every member should run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_revision: Option<String>,
    /// The latest plugin decisions, newest last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_decisions: Vec<DecisionState>,
    /// Cluster mode (`spec.shards` > 1) only: the shards as their members see them, and the
    /// addresses a cluster client starts from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterModeState>,
}

/// `status.cluster`: cluster mode as the members see it (derived by
/// [`crate::status::cluster_mode_status`], shared with the local platform).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterModeState {
    /// Shards ready / shards (`2/3`): a shard is ready when its primary serves and every other
    /// member is a ready replica of it.
    pub shards_ready: String,
    /// Where a cluster client starts (`host:port`, each member's stable DNS name on
    /// Kubernetes); it follows MOVED/ASK from there. There is no primary endpoint.
    #[serde(default)]
    pub seeds: Vec<String>,
    /// Each shard: its primary, node ids, slot ranges, config epoch, readiness and
    /// `cluster_state`.
    #[serde(default)]
    pub shards: Vec<crate::status::ShardStatus>,
}

impl ClusterModeState {
    /// The CRD form of the reconciler's cluster-mode report.
    pub fn from_report(report: &crate::status::ClusterModeStatus) -> ClusterModeState {
        ClusterModeState {
            shards_ready: format!("{}/{}", report.shards_ready, report.shards.len()),
            seeds: report.seeds.clone(),
            shards: report.shards.clone(),
        }
    }
}

/// One member (pod) as last observed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberState {
    /// Pod name.
    pub name: String,
    /// `primary`, `replica` or `down`.
    pub role: String,
    /// The revision the pod runs (its controller-revision-hash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Answering, and in sync when a replica.
    pub ready: bool,
    /// Replication offset reported by the member.
    pub offset: u64,
    /// When the member last made a snapshot; absent while its server process has made none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_snapshot_time: Option<Time>,
    /// How the member's last snapshot (`BGSAVE`) went: `ok` or `failed`. A failure is shown
    /// even before any success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_snapshot_result: Option<SnapshotResult>,
    /// The member's snapshot schedule (5-field cron, UTC) from the snapshot-schedule plugin;
    /// absent when it does not snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_schedule: Option<String>,
    /// When the operator snapshots the member next, at the earliest: the first firing of its
    /// schedule after its last snapshot, or the retry time after a failed one. In the past
    /// while the member is due and waits for its turn (`snapshotDue`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_snapshot_time: Option<Time>,
    /// Due now and waiting for its turn: another member of the shard is saving, the member
    /// is not ready or is syncing, or a rollout runs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub snapshot_due: bool,
    /// Its last snapshot failed; it is retried at `nextSnapshotTime` (the wait doubles with
    /// each failure in a row, up to 10 minutes).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub snapshot_retrying: bool,
    /// What the member last answered with its dataset loaded: role, replication history and
    /// key count. While it is down, hung or loading, the operator promotes no member that
    /// lacks what it held; `fencePending` is set while a demoted primary's clients are not
    /// confirmed disconnected. Read back when the operator restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_known: Option<crate::observe::LastKnown>,
}

/// The result of a member's last snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SnapshotResult {
    Ok,
    Failed,
}

/// One plugin decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DecisionState {
    /// `replica-selection`, `snapshot-schedule` or `rollout-order`.
    pub hook: String,
    /// `builtin:NAME` or the PolicyPlugin that answered.
    pub plugin: String,
    /// Digest of the plugin's WebAssembly component.
    pub sha256: String,
    /// The validated answer (a JSON value).
    #[serde(with = "crate::policy::json_text")]
    #[schemars(schema_with = "super::schema::any_json")]
    pub answer: String,
    /// The request the plugin answered, config included (a JSON value), for `kvpilot policy
    /// replay`; absent when it was larger than 8 KiB.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::policy::json_text::option"
    )]
    #[schemars(schema_with = "super::schema::any_json")]
    pub request: Option<String>,
    /// How long the call took, in microseconds.
    pub latency_micros: u64,
    /// When the decision was taken.
    pub time: Time,
    /// Set when the configured plugin failed and the builtin default answered: the failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_from: Option<String>,
}

/// What the conversion needs besides the reconcile report.
#[derive(Debug, Clone)]
pub struct StatusContext<'a> {
    /// `metadata.generation` of the KvCluster that was reconciled.
    pub generation: Option<i64>,
    /// The status currently stored, so unchanged conditions keep their transition time.
    pub previous: Option<&'a KvClusterStatus>,
    /// The time to stamp on conditions that changed.
    pub now: Timestamp,
}

impl KvClusterStatus {
    /// The CRD status for one reconcile's report.
    pub fn from_report(report: &ClusterStatus, ctx: &StatusContext<'_>) -> KvClusterStatus {
        let update_revision = Some(report.desired_revision.clone()).filter(|r| !r.is_empty());
        let mut status = KvClusterStatus {
            conditions: report
                .conditions
                .iter()
                .map(|c| condition(c, ctx))
                .collect(),
            observed_generation: ctx.generation,
            primary: report.primary.clone(),
            members: report
                .members
                .iter()
                .map(|m| MemberState {
                    name: m.name.clone(),
                    role: m.role.clone(),
                    revision: m.revision.clone(),
                    ready: m.ready,
                    offset: m.offset,
                    last_snapshot_time: m.last_snapshot_unix.map(seconds_to_time),
                    last_snapshot_result: m.last_snapshot_ok.map(|ok| {
                        if ok {
                            SnapshotResult::Ok
                        } else {
                            SnapshotResult::Failed
                        }
                    }),
                    snapshot_schedule: m.snapshot_schedule.clone(),
                    next_snapshot_time: m.next_snapshot_unix.map(seconds_to_time),
                    snapshot_due: m.snapshot_due,
                    snapshot_retrying: m.snapshot_retrying,
                    last_known: m.last_known.clone(),
                })
                .collect(),
            current_revision: current_revision(report),
            update_revision,
            last_decisions: report
                .last_decisions
                .iter()
                .map(|d| {
                    // Bounded when recorded; again here, whatever built the report.
                    let decision = d.decision.bounded();
                    DecisionState {
                        hook: decision.hook.as_str().to_string(),
                        plugin: decision.plugin,
                        sha256: decision.sha256,
                        answer: decision.answer,
                        request: decision.request,
                        latency_micros: u64::try_from(decision.latency.as_micros())
                            .unwrap_or(u64::MAX),
                        time: Time(millis_to_timestamp(d.time_ms)),
                        fallback_from: decision.fallback_from,
                    }
                })
                .collect(),
            cluster: report.cluster.as_ref().map(ClusterModeState::from_report),
        };
        status.shrink_to(MAX_STATUS_BYTES);
        status
    }

    /// The size of the status as JSON, in bytes.
    pub fn json_bytes(&self) -> usize {
        serde_json::to_vec(self).map_or(usize::MAX, |v| v.len())
    }

    /// Keeps the status within `max` bytes of JSON: first the oldest decisions go, then
    /// condition messages are cut short. (Members are bounded by the spec's limits.)
    fn shrink_to(&mut self, max: usize) {
        let mut total = self.json_bytes();
        let mut drop = 0;
        while total > max && drop < self.last_decisions.len() {
            // The decision and the comma that separated it.
            total -= serde_json::to_vec(&self.last_decisions[drop]).map_or(0, |v| v.len() + 1);
            drop += 1;
        }
        self.last_decisions.drain(..drop);
        if self.json_bytes() > max {
            for c in &mut self.conditions {
                c.message = text::clean(&c.message, SHRUNK_MESSAGE_BYTES);
            }
        }
    }

    /// The condition of type `kind`, if set.
    pub fn condition(&self, kind: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == kind)
    }
}

fn condition(c: &crate::status::Condition, ctx: &StatusContext<'_>) -> Condition {
    let status = if c.status { "True" } else { "False" }.to_string();
    // A condition keeps its transition time until its status flips.
    let last_transition_time = ctx
        .previous
        .and_then(|p| p.condition(&c.kind))
        .filter(|p| p.status == status)
        .map(|p| p.last_transition_time.clone())
        .unwrap_or(Time(ctx.now));
    Condition {
        type_: c.kind.clone(),
        status,
        // The API requires a non-empty CamelCase reason.
        reason: if c.reason.is_empty() {
            c.kind.clone()
        } else {
            c.reason.clone()
        },
        message: text::clean(&c.message, MAX_MESSAGE_BYTES),
        last_transition_time,
        observed_generation: ctx.generation,
    }
}

/// The revision of the members not yet on the desired one (the most common, ties broken by
/// name order), or the desired revision when every member runs it.
fn current_revision(report: &ClusterStatus) -> Option<String> {
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for m in &report.members {
        if let Some(r) = m.revision.as_deref()
            && r != report.desired_revision
        {
            *counts.entry(r).or_default() += 1;
        }
    }
    let stale = counts
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(r, _)| r.to_string());
    stale.or_else(|| {
        report
            .members
            .iter()
            .any(|m| m.revision.as_deref() == Some(report.desired_revision.as_str()))
            .then(|| report.desired_revision.clone())
    })
}

fn seconds_to_time(unix: i64) -> Time {
    Time(Timestamp::from_second(unix).unwrap_or(Timestamp::UNIX_EPOCH))
}

fn millis_to_timestamp(ms: u64) -> Timestamp {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{DecisionRecord, Hook};
    use crate::status::{MemberStatus, TimedDecision};
    use std::time::Duration;

    /// From JSON, so fields added to the reconciler's status later keep their defaults.
    fn member(name: &str, role: &str, revision: &str) -> MemberStatus {
        serde_json::from_value(serde_json::json!({
            "name": name,
            "address": "10.0.0.1:6379",
            "role": role,
            "revision": revision,
            "ready": true,
            "offset": 42,
            "keys": 3,
            "linkUp": true,
        }))
        .unwrap()
    }

    fn report() -> ClusterStatus {
        let mut report = ClusterStatus {
            primary: Some("demo-0-0".into()),
            desired_revision: "new".into(),
            members: vec![
                member("demo-0-0", "primary", "old"),
                member("demo-0-1", "replica", "new"),
                member("demo-0-2", "replica", "old"),
            ],
            ..Default::default()
        };
        report.conditions = CONDITION_TYPES
            .iter()
            .map(|t| crate::status::Condition {
                kind: t.to_string(),
                status: *t == "Progressing",
                reason: if *t == "Degraded" {
                    String::new()
                } else {
                    "Because".into()
                },
                message: "m".into(),
            })
            .collect();
        report.last_decisions.push(TimedDecision {
            decision: DecisionRecord {
                hook: Hook::RolloutOrder,
                plugin: "builtin:replicas-first".into(),
                sha256: "ab".repeat(32),
                answer: "[\"demo-0-2\"]".into(),
                request: None,
                latency: Duration::from_micros(1500),
                fallback_from: None,
            },
            time_ms: 1_700_000_000_123,
        });
        report
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    #[test]
    fn report_becomes_status_with_revisions_members_and_decisions() {
        let ctx = StatusContext {
            generation: Some(7),
            previous: None,
            now: at(1_000),
        };
        let s = KvClusterStatus::from_report(&report(), &ctx);
        assert_eq!(s.observed_generation, Some(7));
        assert_eq!(s.primary.as_deref(), Some("demo-0-0"));
        assert_eq!(s.update_revision.as_deref(), Some("new"));
        assert_eq!(s.current_revision.as_deref(), Some("old"));
        assert_eq!(s.members.len(), 3);
        assert_eq!(s.members[1].role, "replica");
        assert_eq!(s.members[1].offset, 42);
        let d = &s.last_decisions[0];
        assert_eq!(d.hook, "rollout-order");
        assert_eq!(d.latency_micros, 1500);
        assert_eq!(
            d.time.0,
            Timestamp::from_millisecond(1_700_000_000_123).unwrap()
        );
        let progressing = s.condition("Progressing").unwrap();
        assert_eq!(progressing.status, "True");
        assert_eq!(progressing.observed_generation, Some(7));
        assert_eq!(s.condition("Ready").unwrap().status, "False");
        // An empty reason is replaced: the API rejects it.
        assert_eq!(s.condition("Degraded").unwrap().reason, "Degraded");
    }

    #[test]
    fn each_members_snapshot_standing_is_in_status() {
        let mut report = report();
        let snap = &mut report.members[1];
        snap.last_snapshot_unix = Some(1_800_000_000);
        snap.last_snapshot_ok = Some(true);
        snap.snapshot_schedule = Some("0 3 * * *".into());
        snap.next_snapshot_unix = Some(1_800_010_800);
        let failing = &mut report.members[2];
        failing.last_snapshot_ok = Some(false);
        failing.snapshot_schedule = Some("10 3 * * *".into());
        failing.next_snapshot_unix = Some(1_800_000_030);
        failing.snapshot_retrying = true;
        failing.snapshot_due = false;
        let ctx = StatusContext {
            generation: Some(1),
            previous: None,
            now: at(1_800_000_100),
        };
        let s = KvClusterStatus::from_report(&report, &ctx);
        let primary = &s.members[0];
        assert_eq!(
            (
                &primary.last_snapshot_time,
                primary.last_snapshot_result,
                &primary.snapshot_schedule,
                &primary.next_snapshot_time,
            ),
            (&None, None, &None, &None)
        );
        let m = &s.members[1];
        assert_eq!(m.last_snapshot_time, Some(Time(at(1_800_000_000))));
        assert_eq!(m.last_snapshot_result, Some(SnapshotResult::Ok));
        assert_eq!(m.snapshot_schedule.as_deref(), Some("0 3 * * *"));
        assert_eq!(m.next_snapshot_time, Some(Time(at(1_800_010_800))));
        assert!(!m.snapshot_due && !m.snapshot_retrying);
        let f = &s.members[2];
        assert_eq!(f.last_snapshot_time, None, "never saved");
        assert_eq!(f.last_snapshot_result, Some(SnapshotResult::Failed));
        assert!(f.snapshot_retrying);
        // As the API sees it: RFC 3339 times and camelCase names; false flags are left out.
        let json = serde_json::to_value(&s.members).unwrap();
        assert_eq!(json[1]["lastSnapshotTime"], "2027-01-15T08:00:00Z");
        assert_eq!(json[1]["lastSnapshotResult"], "ok");
        assert_eq!(json[1]["nextSnapshotTime"], "2027-01-15T11:00:00Z");
        assert_eq!(json[2]["lastSnapshotResult"], "failed");
        assert_eq!(json[2]["snapshotRetrying"], true);
        assert!(json[1].get("snapshotDue").is_none());
        assert!(json[0].get("snapshotSchedule").is_none());
    }

    #[test]
    fn unchanged_conditions_keep_their_transition_time() {
        let first = KvClusterStatus::from_report(
            &report(),
            &StatusContext {
                generation: Some(1),
                previous: None,
                now: at(1_000),
            },
        );
        let mut next = report();
        next.conditions[0].status = true; // Ready flips
        next.members
            .iter_mut()
            .for_each(|m| m.revision = Some("new".into()));
        let second = KvClusterStatus::from_report(
            &next,
            &StatusContext {
                generation: Some(1),
                previous: Some(&first),
                now: at(2_000),
            },
        );
        assert_eq!(
            second.condition("Ready").unwrap().last_transition_time.0,
            at(2_000)
        );
        assert_eq!(
            second
                .condition("Progressing")
                .unwrap()
                .last_transition_time
                .0,
            at(1_000)
        );
        assert_eq!(second.current_revision.as_deref(), Some("new"));
    }

    /// A hostile plugin's texts (huge, ANSI escapes, NULs) in every place a report can carry
    /// them: the status written is clean, within the API's limits and within
    /// [`MAX_STATUS_BYTES`], oldest decisions first to go.
    #[test]
    fn a_hostile_report_becomes_a_bounded_clean_status() {
        let hostile = format!(
            "\u{1b}[2J\u{1b}]0;owned\u{7}\0{}\u{9b}31m",
            "x".repeat(3 << 20)
        );
        let mut report = report();
        for c in &mut report.conditions {
            c.message = hostile.clone();
        }
        // Not through `ClusterStatus::record` (which bounds them too): the conversion holds
        // on its own.
        let large = hostile[..64 * 1024].to_string();
        report.last_decisions = (0..200u64)
            .map(|i| TimedDecision {
                decision: DecisionRecord {
                    hook: Hook::RolloutOrder,
                    plugin: large.clone(),
                    sha256: large.clone(),
                    answer: large.clone(),
                    request: None,
                    latency: Duration::from_micros(i),
                    fallback_from: Some(large.clone()),
                },
                time_ms: 1_700_000_000_000 + i,
            })
            .collect();
        let ctx = StatusContext {
            generation: Some(1),
            previous: None,
            now: at(1_000),
        };
        let s = KvClusterStatus::from_report(&report, &ctx);
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.len() <= MAX_STATUS_BYTES, "{} bytes", json.len());
        assert!(
            !json.chars().any(|c| c.is_control() && c != '\n'),
            "no raw control character"
        );
        assert!(
            !json.contains("\\u001b") && !json.contains("\\u0000"),
            "none escaped either"
        );
        for c in &s.conditions {
            assert!(
                c.message.len() <= MAX_MESSAGE_BYTES + 32,
                "{}",
                c.message.len()
            );
            assert!(c.message.contains("more bytes]"), "cut visibly");
        }
        assert!(!s.last_decisions.is_empty(), "some decisions are kept");
        // The newest are the ones kept.
        assert_eq!(
            s.last_decisions.last().unwrap().latency_micros,
            199,
            "the newest decision stays"
        );
    }
}
