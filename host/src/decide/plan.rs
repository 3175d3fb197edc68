//! What `decide` returns: at most one step to take now, or why not, and when to look again.

use crate::engine::slots::SlotRange;
use crate::policy::DecisionRecord;
use kvpilot_sdk::SelectionReason;
use std::time::Duration;

/// One step for `act`. Each is small enough to finish in one reconcile and leaves the cluster
/// in a state the next `observe` can read, so the operator can stop after any of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start members that are not running, as replicas of `replica_of` (or parked, following
    /// nothing that answers, when no primary is known). A member never starts as a primary:
    /// only `Failover` promotes, so a member that comes back empty can never become a sync source.
    Start {
        members: Vec<String>,
        replica_of: Option<String>,
    },
    /// Promote `promote` (`REPLICAOF NO ONE`), point `repoint` at it, move the endpoint to it
    /// and fence `fence` (a demoted primary). Used when the primary is lost or came back empty.
    Failover {
        promote: String,
        reason: SelectionReason,
        repoint: Vec<String>,
        fence: Vec<String>,
    },
    /// Stop `members` through the platform at once, without a grace period (SIGKILL locally,
    /// a pod deleted with `gracePeriodSeconds: 0` on Kubernetes): they may still be acting as
    /// the primary but do not answer (hung, partitioned from the operator), and another
    /// member is about to be promoted. A hung process that is killed never acknowledges the
    /// writes queued on its connections (safety rule 7).
    StopHung { members: Vec<String> },
    /// Disconnect the normal clients of `members` (`CLIENT KILL TYPE normal`): demoted
    /// primaries whose clients were not confirmed disconnected (safety rule 7).
    Fence { members: Vec<String> },
    /// Make `members` replicate `primary` (`REPLICAOF`).
    Replicate {
        members: Vec<String>,
        primary: String,
    },
    /// Point the primary endpoint at `primary`, then fence the clients of `fence`.
    PointEndpoint { primary: String, fence: Vec<String> },
    /// Graceful handover: `FAILOVER TO` `to`, confirm the roles, move the endpoint, fence `from`.
    Handover { from: String, to: String },
    /// Restart a stale member on the desired revision, as a replica of `replica_of`.
    Restart {
        member: String,
        replica_of: Option<String>,
    },
    /// Remove retiring `members` for good (a scale-down). Only ever replicas: a retiring
    /// primary hands over first.
    Retire { members: Vec<String> },
    /// Take a snapshot now (`BGSAVE`).
    Snapshot { member: String },
    /// Cluster mode: `CLUSTER MEET` each of `members` from `via` (bootstrap, and members
    /// that came back without their `nodes.conf`).
    ClusterMeet { via: String, members: Vec<String> },
    /// Cluster mode: `CLUSTER ADDSLOTSRANGE` on each member, of the ranges given (a shard's
    /// range of the balanced map, on the shard's first empty primary).
    AssignSlots {
        assign: Vec<(String, Vec<SlotRange>)>,
    },
    /// Cluster mode: `CLUSTER REPLICATE primary_id` on `member`.
    ClusterReplicate {
        member: String,
        primary: String,
        primary_id: String,
    },
    /// Cluster mode: shard `shard` lost its primary; promote `promote` (the replica the
    /// replica-selection hook chose) with `CLUSTER FAILOVER FORCE` (retried once), or
    /// `TAKEOVER` when no majority of primaries can vote and the old primary is stopped.
    ClusterFailover {
        shard: u32,
        promote: String,
        reason: SelectionReason,
        takeover: bool,
    },
    /// Cluster mode: `CLUSTER FORGET id` on each of `on` (every member that knows it): a node
    /// no member is any more (a member that came back without its `nodes.conf` has a new
    /// id; its old one lingers, failed, in every table).
    ClusterForget { id: String, on: Vec<String> },
    /// Cluster mode: release parked `members` (`ACL SETUSER default +@write +psync +sync`):
    /// each is a replica, a primary without slots, or a primary that holds everything the
    /// other members of its shard hold, so a replica may sync from it (rule 2 per shard).
    ClusterUnpark { members: Vec<String> },
    /// Cluster mode: `CLUSTER BUMPEPOCH` on `member`, which owns shard `shard`'s slots and
    /// holds everything a parked rival claiming them at a higher epoch holds (a member back
    /// with an older dataset and without its `nodes.conf` claims the slots of its keys).
    ClusterBumpEpoch { shard: u32, member: String },
    /// Cluster mode, planned: `CLUSTER FAILOVER` (graceful) on `to`, a replica of `from` in
    /// shard `shard`, then wait until every primary that owns slots shows `to` at its new
    /// config epoch (rule 3 in cluster mode).
    ClusterHandover {
        shard: u32,
        from: String,
        to: String,
    },
    /// Correct a drifted setting (`CONFIG SET key value`).
    Configure {
        member: String,
        key: String,
        value: String,
    },
}

impl Action {
    /// A step of a rollout (a handover or a restart onto the desired revision), as opposed to
    /// healing steps: a failed one blocks the rollout rather than the cluster.
    pub fn is_rollout_step(&self) -> bool {
        matches!(
            self,
            Action::Handover { .. } | Action::Restart { .. } | Action::ClusterHandover { .. }
        )
    }

    /// A short human description for logs, events and status.
    pub fn describe(&self) -> String {
        match self {
            Action::Start {
                members,
                replica_of: Some(p),
            } => format!("start {} as replicas of {p}", members.join(", ")),
            Action::Start { members, .. } => {
                format!(
                    "start {} (parked until a primary is elected)",
                    members.join(", ")
                )
            }
            Action::Failover {
                promote, reason, ..
            } => format!("promote {promote} ({reason:?})"),
            Action::Replicate { members, primary } => {
                format!("make {} replicate {primary}", members.join(", "))
            }
            Action::StopHung { members } => format!(
                "stop {} at once: it does not answer and may still act as the primary",
                members.join(", ")
            ),
            Action::Fence { members } => {
                format!(
                    "fence {}: disconnect the clients it had as primary",
                    members.join(", ")
                )
            }
            Action::PointEndpoint { primary, .. } => {
                format!("point the primary endpoint at {primary}")
            }
            Action::Handover { from, to } => format!("hand over from {from} to {to}"),
            Action::Restart { member, .. } => format!("restart {member} on the desired revision"),
            Action::Retire { members } => {
                format!("remove {} (scale-down)", members.join(", "))
            }
            Action::Snapshot { member } => format!("snapshot {member} (BGSAVE)"),
            Action::ClusterHandover { shard, from, to } => {
                format!("shard {shard}: hand over from {from} to {to} (CLUSTER FAILOVER)")
            }
            Action::ClusterBumpEpoch { shard, member } => {
                format!(
                    "shard {shard}: CLUSTER BUMPEPOCH on {member}, which holds the shard's data"
                )
            }
            Action::ClusterUnpark { members } => format!(
                "release {}: safe to serve writes and replicas",
                members.join(", ")
            ),
            Action::ClusterForget { id, on } => {
                format!("CLUSTER FORGET {id} on {}", on.join(", "))
            }
            Action::ClusterMeet { via, members } => {
                format!("CLUSTER MEET {} from {via}", members.join(", "))
            }
            Action::AssignSlots { assign } => {
                let parts: Vec<String> = assign
                    .iter()
                    .map(|(m, ranges)| {
                        let r: Vec<String> = ranges.iter().map(|r| r.to_string()).collect();
                        format!("{} to {m}", r.join(","))
                    })
                    .collect();
                format!("assign slots {}", parts.join(", "))
            }
            Action::ClusterReplicate {
                member, primary, ..
            } => format!("make {member} a cluster replica of {primary}"),
            Action::ClusterFailover {
                shard,
                promote,
                reason,
                takeover,
            } => format!(
                "shard {shard}: promote {promote} ({reason:?}) with CLUSTER FAILOVER {}",
                if *takeover { "TAKEOVER" } else { "FORCE" }
            ),
            Action::Configure { member, key, value } => {
                format!("set {key} to {value:?} on {member} (drift)")
            }
        }
    }
}

/// Why the reconciler is not acting, as a status condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocker {
    /// The spec is invalid: nothing changes until it is fixed.
    InvalidSpec,
    /// A hook failed under `failurePolicy: Fail`.
    PolicyFailed,
    /// The rollout cannot take its next step safely (or a plugin said wait).
    RolloutBlocked,
    /// Something is still starting, loading or syncing; the next step needs it done.
    InProgress,
    /// No primary can be elected yet.
    NoPrimary,
}

/// A "not yet", always with a requeue (safety rule 6: never drop work).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wait {
    pub blocker: Blocker,
    pub reason: String,
}

/// The outcome of one `decide`.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub action: Option<Action>,
    pub wait: Option<Wait>,
    /// When to reconcile again even if nothing changes.
    pub requeue_after: Duration,
    /// Every hook answer used (or fallen back on) for this plan.
    pub decisions: Vec<DecisionRecord>,
    /// The member `decide` considers the primary, if any.
    pub primary: Option<String>,
    /// A stale member exists (a rollout is in progress).
    pub rolling: bool,
    /// Each member's snapshot schedule and standing, when snapshots were decided on.
    pub schedules: Vec<super::MemberSnapshot>,
    /// Snapshots are configured but were not decided on (something else is moving, or the
    /// hook failed): the schedules last decided still hold.
    pub snapshots_deferred: bool,
    /// Demoted primaries whose clients are not confirmed disconnected yet (rule 7): status
    /// keeps this until a fence of theirs succeeds.
    pub fence_pending: Vec<String>,
}

impl Plan {
    pub(crate) fn new(requeue_after: Duration) -> Plan {
        Plan {
            action: None,
            wait: None,
            requeue_after,
            decisions: Vec::new(),
            primary: None,
            rolling: false,
            schedules: Vec::new(),
            snapshots_deferred: false,
            fence_pending: Vec::new(),
        }
    }

    pub(crate) fn act(mut self, action: Action, requeue_after: Duration) -> Plan {
        self.action = Some(action);
        self.requeue_after = requeue_after;
        self
    }

    pub(crate) fn wait(
        mut self,
        blocker: Blocker,
        reason: impl Into<String>,
        after: Duration,
    ) -> Plan {
        self.wait = Some(Wait {
            blocker,
            reason: reason.into(),
        });
        self.requeue_after = after;
        self
    }
}
