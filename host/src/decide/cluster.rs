//! Cluster mode (`spec.shards` > 1): the next step for a Valkey/Redis Cluster, derived from
//! every member's own view (`CLUSTER NODES`/`INFO`), so that an operator killed between any
//! two steps resumes where the members are.
//!
//! Order of concern:
//! 1. per shard, a lost primary (rule 8: counted, guarded and promoted per shard; another
//!    shard's primary is never a split brain);
//! 2. members to start (never the lost primary of a shard a replica can take over: it would
//!    come back with its `nodes.conf` and an empty dataset, and its replicas would resync
//!    from it);
//! 3. bootstrap: MEET → ADDSLOTSRANGE (balanced) → REPLICATE → `cluster_state:ok` everywhere.
//!
//! The engine's own election is off (`cluster-replica-no-failover yes`): the replica the
//! replica-selection hook chose is promoted with `CLUSTER FAILOVER FORCE`, and `TAKEOVER` is
//! used only when no majority of primaries could vote and the old primary is known stopped.

use super::history::{self, Standing};
use super::in_flight;
use super::park;
use super::plan::{Action, Blocker, Plan};
use super::shards::{self, Shard};
use super::topology;
use super::{Input, Settings};
use crate::engine::slots::SlotRange;
use crate::observe::{Observed, ObservedMember};
use crate::policy::Policies;
use kvpilot_sdk::SelectionReason;

/// Decides the next step of a cluster-mode group.
pub(super) async fn steps<P: Policies>(input: &Input<'_>, policies: &P, plan: Plan) -> Plan {
    let obs = input.observed;
    let s = input.settings;
    let shards = shards::shards(obs, input.spec.shards);
    for shard in &shards {
        if let Some(plan) = lost_primary(input, policies, plan.clone(), shard, &shards).await {
            return plan;
        }
    }
    for shard in &shards {
        if let Some(plan) = wiped_primary(input, policies, plan.clone(), shard).await {
            return plan;
        }
    }
    let release = park::releasable(obs, &shards);
    if !release.is_empty() {
        return plan.act(Action::ClusterUnpark { members: release }, s.probe_interval);
    }
    let start = to_start(obs, &shards);
    if !start.is_empty() {
        return plan.act(
            Action::Start {
                members: start,
                replica_of: None,
            },
            s.probe_interval,
        );
    }
    let silent: Vec<&str> = obs
        .members
        .iter()
        .filter(|m| m.running && m.cluster.is_none())
        .map(|m| m.name.as_str())
        .collect();
    if !silent.is_empty() {
        return plan.wait(
            Blocker::InProgress,
            format!("{} do not answer CLUSTER NODES yet", silent.join(", ")),
            s.probe_interval,
        );
    }
    if let Some(plan) = meet(obs, s, plan.clone()) {
        return plan;
    }
    if let Some(plan) = assign_slots(obs, s, plan.clone(), &shards) {
        return plan;
    }
    for shard in &shards {
        if let Some(plan) = replicate(input, plan.clone(), shard) {
            return plan;
        }
    }
    if let Some(plan) = forget(obs, s, plan.clone()) {
        return plan;
    }
    if !shards::formed(obs) {
        let waiting: Vec<&str> = obs
            .members
            .iter()
            .filter(|m| {
                m.cluster.as_ref().is_none_or(|v| {
                    v.info.state != crate::engine::ClusterState::Ok
                        || v.info.slots_assigned != u32::from(crate::engine::slots::SLOTS)
                })
            })
            .map(|m| m.name.as_str())
            .collect();
        return plan.wait(
            Blocker::InProgress,
            format!(
                "waiting for cluster_state:ok with every slot assigned on {}",
                waiting.join(", ")
            ),
            s.probe_interval,
        );
    }
    rollout(input, policies, plan, &shards).await
}

/// A planned rollout, one member per shard in flight and at most
/// [`in_flight::shard_limit`] shards in flight (rules 4 and 8; one by default): a step is
/// taken in a shard only while it is ready with every replica proven in sync, and the
/// cluster agrees on every shard's epoch. Within the shard the replication-mode rollout
/// decides (rollout-order hook, replicas first, rules 3–5) on the shard alone; its handover
/// becomes a `CLUSTER FAILOVER` on the chosen replica.
async fn rollout<P: Policies>(
    input: &Input<'_>,
    policies: &P,
    plan: Plan,
    shards: &[Shard<'_>],
) -> Plan {
    let obs = input.observed;
    let s = input.settings;
    let stale: Vec<bool> = shards
        .iter()
        .map(|sh| {
            sh.members
                .iter()
                .any(|m| !m.on_revision(&obs.desired_revision))
        })
        .collect();
    if !stale.contains(&true) {
        return plan;
    }
    let mut plan = plan;
    plan.rolling = true;
    let max_lag = input.spec.rollout.max_lag_bytes;
    let unsettled: Vec<Option<String>> = shards
        .iter()
        .map(|sh| not_settled(sh, obs, max_lag))
        .collect();
    let in_flight: Vec<bool> = unsettled.iter().map(Option::is_some).collect();
    let primaries = shards.iter().filter(|sh| sh.owner.is_some()).count();
    let setting = input
        .spec
        .rollout
        .max_shards_in_flight
        .unwrap_or(s.max_shards_in_flight);
    let limit = in_flight::shard_limit(setting, primaries);
    let shard = match in_flight::next(&stale, &in_flight, limit) {
        in_flight::Next::Step(i) => &shards[i],
        in_flight::Next::Wait { in_flight } => {
            let why = unsettled
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("; ");
            return plan.wait(
                Blocker::InProgress,
                format!("{in_flight} of at most {limit} shards in flight: {why}"),
                s.probe_interval,
            );
        }
        in_flight::Next::Done => return plan,
    };
    if let Some(why) = epochs_disagree(obs, shards) {
        // Rule 3 in cluster mode: a primary that handed over is restarted only once every
        // primary shows the new owner at its new epoch.
        return plan.wait(Blocker::InProgress, why, s.probe_interval);
    }
    let Some(primary) = shard.primary else {
        return plan;
    };
    let view = shard_observed(obs, shard, 0);
    let Some(p) = view.members.iter().find(|m| m.name == primary.name) else {
        return plan;
    };
    let sub = Input {
        spec: input.spec,
        observed: &view,
        settings: input.settings,
        snapshots: None,
        save_attempts: input.save_attempts,
    };
    let mut plan = super::rollout::next(&sub, policies, plan, p).await;
    plan.primary = None;
    plan.action = plan.action.map(|a| match a {
        Action::Handover { from, to } => Action::ClusterHandover {
            shard: shard.index,
            from,
            to,
        },
        other => other,
    });
    plan
}

/// Why `shard` is not settled for a rollout step, if it is not: its primary must serve and
/// every other member be a ready replica of it, linked and within `max_lag`.
fn not_settled(shard: &Shard<'_>, obs: &Observed, max_lag: u64) -> Option<String> {
    if !shards::shard_ready(shard) {
        return Some(format!(
            "shard {} is not ready: waiting before the next rollout step",
            shard.index
        ));
    }
    if let Some(m) = shard
        .members
        .iter()
        .find(|m| m.cluster.as_ref().is_some_and(|v| v.parked))
    {
        return Some(format!(
            "shard {}: {} is parked until its history is judged",
            shard.index, m.name
        ));
    }
    let primary = shard.primary?;
    shard
        .members
        .iter()
        .filter(|m| m.name != primary.name)
        .find(|m| !super::members::member(m, Some(primary), &obs.desired_revision).in_sync(max_lag))
        .map(|m| {
            format!(
                "shard {}: waiting for {} to sync with {}",
                shard.index, m.name, primary.name
            )
        })
}

/// Whether some answering primary that owns slots sees another shard's owner at another
/// config epoch than that owner reports of itself (a handover not yet agreed on).
fn epochs_disagree(obs: &Observed, shards: &[Shard<'_>]) -> Option<String> {
    let owners: Vec<(&str, &str, u64)> = shards
        .iter()
        .filter_map(|sh| {
            let p = sh.primary?;
            let me = p.cluster.as_ref()?.myself()?;
            Some((p.name.as_str(), me.id.as_str(), me.config_epoch))
        })
        .collect();
    for m in obs.members.iter() {
        let Some(v) = m.cluster.as_ref().filter(|v| v.owns_slots()) else {
            continue;
        };
        for (name, id, epoch) in &owners {
            let agrees = v.nodes.get(id).is_some_and(|n| {
                n.flags.primary && !n.slots.is_empty() && n.config_epoch == *epoch
            });
            if !agrees {
                return Some(format!(
                    "{} does not show {name} as a primary at config epoch {epoch} yet",
                    m.name
                ));
            }
        }
    }
    None
}

/// The shard's primary came back empty (or from an older dump) with its `nodes.conf`: it is
/// parked, so its replicas kept their data and no client could write to it. Promote the
/// replica the hook chooses among those that hold what it lacks, by `CLUSTER FAILOVER FORCE`
/// (the parked primary acknowledged nothing, so there is nothing to fence); it then follows
/// the new primary and is released as a replica (rule 2 per shard).
async fn wiped_primary<P: Policies>(
    input: &Input<'_>,
    policies: &P,
    plan: Plan,
    shard: &Shard<'_>,
) -> Option<Plan> {
    let (primary, holders) = park::wiped_primary(shard)?;
    let s = input.settings;
    let view = shard_observed(input.observed, shard, 0);
    let loaded: Vec<&ObservedMember> = view
        .members
        .iter()
        .filter(|m| holders.iter().any(|h| h.name == m.name))
        .filter(|m| m.report.as_ref().is_some_and(|r| !r.loading))
        .collect();
    let (candidates, blockers) = topology::newest(&loaded, &view, input.spec.rollout.max_lag_bytes);
    if candidates.is_empty() {
        return Some(plan.wait(
            Blocker::NoPrimary,
            format!(
                "shard {}: {} came back without the shard's data and stays parked; waiting \
                 before promoting any of {}: {}",
                shard.index,
                primary.name,
                names(&holders),
                topology::Holdout::describe_all(&blockers)
            ),
            s.probe_interval,
        ));
    }
    let sub = Input {
        spec: input.spec,
        observed: &view,
        settings: input.settings,
        snapshots: None,
        save_attempts: input.save_attempts,
    };
    let last = view.members.iter().find(|m| m.name == primary.name);
    let decided = topology::choose_and_promote(
        &sub,
        policies,
        plan,
        SelectionReason::PrimaryEmpty,
        last,
        &candidates,
        Vec::new(),
        Vec::new(),
        None,
    )
    .await;
    Some(into_cluster_failover(decided, shard.index, false))
}

/// The shard's slot owner is gone or does not answer: promote one of its replicas, or say why
/// not yet. `None` when the shard serves (or was never assigned slots).
async fn lost_primary<P: Policies>(
    input: &Input<'_>,
    policies: &P,
    plan: Plan,
    shard: &Shard<'_>,
    all: &[Shard<'_>],
) -> Option<Plan> {
    let obs = input.observed;
    let s = input.settings;
    let owner = shard.owner.as_ref()?;
    if shard.primary.is_some() {
        return None;
    }
    // The owner's id is no member's any more: the member that was it came back without its
    // `nodes.conf` (a new node, owning nothing), maybe with its data. Once every member of
    // the shard answers, that id is known gone for good and its replicas may take over.
    let gone = shard.owner_member.is_none()
        && shard
            .members
            .iter()
            .all(|m| m.running && m.cluster.as_ref().is_some_and(|v| v.id != owner.id));
    let old = shard.owner_member;
    if old.is_none() && !gone {
        return Some(plan.wait(
            Blocker::NoPrimary,
            format!(
                "shard {}: its slots belong to node {}, which is no member of the shard",
                shard.index, owner.id
            ),
            s.probe_interval,
        ));
    }
    let old_name = old.map_or(owner.id.as_str(), |m| m.name.as_str());
    if let Some(old) = old
        && old.running
        && old.cluster.is_some()
    {
        // It answers but does not own the slots in its own view any more (a promotion is
        // being gossiped): look again.
        return Some(plan.wait(
            Blocker::InProgress,
            format!(
                "shard {}: {} answers but does not own its slots in its own view yet",
                shard.index, old.name
            ),
            s.probe_interval,
        ));
    }
    let missing = obs
        .shard_missing_probes
        .get(shard.index as usize)
        .copied()
        .unwrap_or(0);
    if let Some(old) = old
        && old.running
        && missing < s.failure_threshold
    {
        return Some(plan.wait(
            Blocker::NoPrimary,
            format!(
                "shard {}: its primary {} did not answer in {missing} of {} consecutive probes",
                shard.index, old.name, s.failure_threshold
            ),
            s.probe_interval,
        ));
    }
    // Replicas of the lost primary that are answering, loaded and not full-syncing.
    let replicas: Vec<&ObservedMember> = shard
        .members
        .iter()
        .copied()
        .filter(|m| m.name != old_name && follows(m, &owner.id))
        .collect();
    let ready = topology::promotable(&replicas);
    let view = shard_observed(obs, shard, missing);
    if ready.is_empty() {
        // Nothing to promote: start what is down of the shard (the old primary too: it is the
        // only copy left) and look again.
        let down: Vec<String> = shard
            .members
            .iter()
            .filter(|m| !m.running && !m.retiring)
            .map(|m| m.name.clone())
            .collect();
        if !down.is_empty() {
            return Some(plan.act(
                Action::Start {
                    members: down,
                    replica_of: None,
                },
                s.probe_interval,
            ));
        }
        return Some(plan.wait(
            Blocker::NoPrimary,
            format!(
                "shard {}: {} is lost and no replica of it can be promoted yet",
                shard.index, old_name
            ),
            s.probe_interval,
        ));
    }
    // Rule 2, within the shard: promote only a replica that holds what the shard held.
    let ready_in_view: Vec<&ObservedMember> = view
        .members
        .iter()
        .filter(|m| ready.iter().any(|r| r.name == m.name))
        .collect();
    let (candidates, blockers) =
        topology::newest(&ready_in_view, &view, input.spec.rollout.max_lag_bytes);
    if candidates.is_empty() {
        return Some(plan.wait(
            Blocker::NoPrimary,
            format!(
                "shard {}: waiting before promoting any of {}: {}",
                shard.index,
                names(&ready),
                topology::Holdout::describe_all(&blockers)
            ),
            s.probe_interval,
        ));
    }
    // Rule 7: a primary that does not answer but runs is stopped before anyone is promoted.
    if let Some(old) = old
        && old.running
    {
        return Some(plan.act(
            Action::StopHung {
                members: vec![old.name.clone()],
            },
            s.probe_interval,
        ));
    }
    // FORCE needs the votes of a majority of the primaries that own slots; without them the
    // old primary is known stopped (above), so TAKEOVER cannot race it.
    let owners = all.iter().filter(|sh| sh.owner.is_some()).count();
    let serving = all.iter().filter(|sh| sh.primary.is_some()).count();
    let takeover = serving * 2 <= owners;
    let sub = Input {
        spec: input.spec,
        observed: &view,
        settings: input.settings,
        snapshots: None,
        save_attempts: input.save_attempts,
    };
    let last = view.members.iter().find(|m| m.name == old_name);
    let decided = topology::choose_and_promote(
        &sub,
        policies,
        plan,
        SelectionReason::PrimaryLost,
        last,
        &candidates,
        Vec::new(),
        Vec::new(),
        None,
    )
    .await;
    Some(into_cluster_failover(decided, shard.index, takeover))
}

/// Turns the replication-mode promotion `choose_and_promote` plans into its cluster form.
fn into_cluster_failover(mut plan: Plan, shard: u32, takeover: bool) -> Plan {
    plan.action = plan.action.map(|a| match a {
        Action::Failover {
            promote, reason, ..
        } => Action::ClusterFailover {
            shard,
            promote,
            reason,
            takeover,
        },
        other => other,
    });
    plan
}

/// The shard alone, as `Observed`: what the hook and the data-holding guard see (rule 8).
fn shard_observed(obs: &Observed, shard: &Shard<'_>, missing: u32) -> Observed {
    Observed {
        members: shard.members.iter().map(|m| (*m).clone()).collect(),
        endpoint: None,
        primary_missing_probes: missing,
        shard_missing_probes: Vec::new(),
        ..obs.clone()
    }
}

/// `m` answers and is a replica of node `id` in its own view.
fn follows(m: &ObservedMember, id: &str) -> bool {
    m.running
        && m.cluster
            .as_ref()
            .and_then(|v| v.myself())
            .and_then(|me| me.primary_id.as_deref())
            == Some(id)
}

fn names(members: &[&ObservedMember]) -> String {
    members
        .iter()
        .map(|m| m.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Members to start now: all of them before any slot is assigned; afterwards those of shards
/// whose primary serves (they rejoin with their `nodes.conf`, or come back empty and are
/// made replicas). A shard whose primary is lost starts members only once no replica can
/// take over ([`lost_primary`]).
fn to_start(obs: &Observed, shards: &[Shard<'_>]) -> Vec<String> {
    let fresh = shards::unassigned(obs);
    obs.members
        .iter()
        .filter(|m| !m.running && !m.retiring)
        .filter(|m| {
            fresh
                || shards
                    .iter()
                    .find(|sh| sh.index == m.shard)
                    .is_some_and(|sh| sh.primary.is_some() || sh.owner.is_none())
        })
        .map(|m| m.name.clone())
        .collect()
}

/// MEET every member that the first member does not know yet, from that member.
fn meet(obs: &Observed, s: &Settings, plan: Plan) -> Option<Plan> {
    let seed = obs.members.iter().find(|m| m.cluster.is_some())?;
    let view = seed.cluster.as_ref()?;
    let unknown: Vec<String> = obs
        .members
        .iter()
        .filter(|m| m.name != seed.name)
        .filter(|m| m.cluster.as_ref().is_some_and(|v| !view.knows(&v.id)))
        .map(|m| m.name.clone())
        .collect();
    if !unknown.is_empty() {
        return Some(plan.act(
            Action::ClusterMeet {
                via: seed.name.clone(),
                members: unknown,
            },
            s.probe_interval,
        ));
    }
    // The seed knows everyone; the others learn of each other by gossip.
    let ids: Vec<&str> = obs
        .members
        .iter()
        .filter_map(|m| m.cluster.as_ref().map(|v| v.id.as_str()))
        .collect();
    let behind: Vec<&str> = obs
        .members
        .iter()
        .filter(|m| {
            m.cluster
                .as_ref()
                .is_some_and(|v| ids.iter().any(|id| !v.knows(id)))
        })
        .map(|m| m.name.as_str())
        .collect();
    (!behind.is_empty()).then(|| {
        plan.wait(
            Blocker::InProgress,
            format!("{} do not know every member yet", behind.join(", ")),
            s.probe_interval,
        )
    })
}

/// ADDSLOTSRANGE each unowned shard range on that shard's first empty primary.
fn assign_slots(obs: &Observed, s: &Settings, plan: Plan, shards: &[Shard<'_>]) -> Option<Plan> {
    let mut assign: Vec<(String, Vec<SlotRange>)> = Vec::new();
    for shard in shards.iter().filter(|sh| sh.owner.is_none()) {
        if partly_owned(obs, shard.range) {
            return Some(plan.wait(
                Blocker::InProgress,
                format!(
                    "shard {}: some of its slots {} have an owner and some do not",
                    shard.index, shard.range
                ),
                s.probe_interval,
            ));
        }
        let first = shard.members.iter().find(|m| {
            m.running
                && m.cluster.as_ref().is_some_and(|v| {
                    v.myself()
                        .is_some_and(|me| me.flags.primary && me.slots.is_empty())
                })
        });
        match first {
            Some(m) => assign.push((m.name.clone(), vec![shard.range])),
            None => {
                return Some(plan.wait(
                    Blocker::InProgress,
                    format!(
                        "shard {}: no member answers as an empty primary to take slots {}",
                        shard.index, shard.range
                    ),
                    s.probe_interval,
                ));
            }
        }
    }
    (!assign.is_empty()).then(|| plan.act(Action::AssignSlots { assign }, s.probe_interval))
}

/// Some slot of `range` has an owner in some view.
fn partly_owned(obs: &Observed, range: SlotRange) -> bool {
    obs.members
        .iter()
        .filter_map(|m| m.cluster.as_ref())
        .flat_map(|v| v.nodes.nodes.iter())
        .flat_map(|n| n.slots.iter())
        .any(|r| r.start <= range.end && range.start <= r.end)
}

/// FORGET a node that no member is any more: every member answers with its own id, none has
/// that id, and every view that lists it flags it failed (or without address) with no slots.
/// Only while every member answers: the id of one that does not is not known for sure.
fn forget(obs: &Observed, s: &Settings, plan: Plan) -> Option<Plan> {
    if obs.members.iter().any(|m| m.cluster.is_none()) {
        return None;
    }
    let ids: Vec<&str> = obs
        .members
        .iter()
        .filter_map(|m| m.cluster.as_ref().map(|v| v.id.as_str()))
        .collect();
    let stale = obs
        .members
        .iter()
        .filter_map(|m| m.cluster.as_ref())
        .flat_map(|v| v.nodes.nodes.iter())
        .map(|n| n.id.as_str())
        .find(|id| !ids.contains(id))?;
    let listing: Vec<&ObservedMember> = obs
        .members
        .iter()
        .filter(|m| {
            m.cluster
                .as_ref()
                .is_some_and(|v| v.nodes.get(stale).is_some())
        })
        .collect();
    let gone = listing.iter().all(|m| {
        m.cluster
            .as_ref()
            .and_then(|v| v.nodes.get(stale))
            .is_some_and(|n| (n.flags.fail || n.flags.noaddr) && n.slots.is_empty())
    });
    if !gone {
        return Some(plan.wait(
            Blocker::InProgress,
            format!("node {stale} is no member; waiting until the members flag it failed"),
            s.probe_interval,
        ));
    }
    Some(plan.act(
        Action::ClusterForget {
            id: stale.to_string(),
            on: listing.iter().map(|m| m.name.clone()).collect(),
        },
        s.probe_interval,
    ))
}

/// Make the first member of the shard that does not follow its primary a replica of it.
fn replicate(input: &Input<'_>, plan: Plan, shard: &Shard<'_>) -> Option<Plan> {
    let s = input.settings;
    let primary = shard.primary?;
    let pid = primary.cluster.as_ref()?.id.clone();
    for m in shard.members.iter().filter(|m| m.name != primary.name) {
        let Some(view) = m.cluster.as_ref() else {
            continue;
        };
        if view.myself().and_then(|me| me.primary_id.as_deref()) == Some(pid.as_str()) {
            continue;
        }
        if view.owns_slots() {
            if park::takes_back(m, primary) {
                return Some(plan.act(
                    Action::ClusterBumpEpoch {
                        shard: shard.index,
                        member: m.name.clone(),
                    },
                    s.probe_interval,
                ));
            }
            return Some(plan.wait(
                Blocker::InProgress,
                format!(
                    "shard {}: {} owns slots while {} serves the shard",
                    shard.index, m.name, primary.name
                ),
                s.probe_interval,
            ));
        }
        if !view.knows(&pid) {
            return Some(plan.wait(
                Blocker::InProgress,
                format!(
                    "shard {}: {} does not know its primary {} yet",
                    shard.index, m.name, primary.name
                ),
                s.probe_interval,
            ));
        }
        // Rule 2: a member that holds data the primary lacks is not made to resync from it.
        if let (Standing::Now(held), Standing::Now(source)) =
            (history::standing(m), history::standing(primary))
            && !history::blank(held)
            && !history::covers(source, held, input.spec.rollout.max_lag_bytes)
        {
            return Some(plan.wait(
                Blocker::NoPrimary,
                format!(
                    "shard {}: {} holds data that {} lacks; not making it a replica",
                    shard.index, m.name, primary.name
                ),
                s.probe_interval,
            ));
        }
        return Some(plan.act(
            Action::ClusterReplicate {
                member: m.name.clone(),
                primary: primary.name.clone(),
                primary_id: pid,
            },
            s.probe_interval,
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::tests_cluster::*;
    use super::super::{Action, Blocker, Input, Plan, SaveAttempts, Settings, decide};
    use crate::api::KvClusterSpec;
    use crate::engine::slots::balanced_ranges;
    use crate::observe::Observed;
    use crate::policy::{Decided, DecisionRecord, Hook, Policies, PolicyError};
    use kvpilot_sdk::defaults::{most_caught_up, replicas_first, stagger};
    use kvpilot_sdk::{
        MemberSchedule, RolloutRequest, ScheduleRequest, Selection, SelectionRequest, Step,
    };
    use std::sync::Mutex;
    use std::time::Duration;

    /// The builtin answers, keeping every selection request.
    #[derive(Default)]
    struct Seen {
        selection: Mutex<Vec<SelectionRequest>>,
    }

    fn record(hook: Hook) -> DecisionRecord {
        DecisionRecord {
            hook,
            plugin: "test".into(),
            sha256: String::new(),
            answer: String::new(),
            request: None,
            latency: Duration::ZERO,
            fallback_from: None,
        }
    }

    fn fail(hook: Hook, message: String) -> PolicyError {
        PolicyError::Plugin {
            plugin: "test".into(),
            hook,
            message,
        }
    }

    impl Policies for Seen {
        async fn select_replica(
            &self,
            request: SelectionRequest,
        ) -> Result<Decided<Selection>, PolicyError> {
            self.selection.lock().unwrap().push(request.clone());
            let answer =
                most_caught_up::select(&request).map_err(|m| fail(Hook::ReplicaSelection, m))?;
            Ok(Decided {
                record: record(Hook::ReplicaSelection),
                answer,
            })
        }

        async fn schedule_snapshots(
            &self,
            request: ScheduleRequest,
        ) -> Result<Decided<Vec<MemberSchedule>>, PolicyError> {
            let answer =
                stagger::schedule(&request).map_err(|m| fail(Hook::SnapshotSchedule, m))?;
            Ok(Decided {
                record: record(Hook::SnapshotSchedule),
                answer,
            })
        }

        async fn rollout_step(
            &self,
            request: RolloutRequest,
        ) -> Result<Decided<Step>, PolicyError> {
            let answer = replicas_first::next(&request).map_err(|m| fail(Hook::RolloutOrder, m))?;
            Ok(Decided {
                record: record(Hook::RolloutOrder),
                answer,
            })
        }
    }

    fn spec(shards: u32, replicas: u32) -> KvClusterSpec {
        KvClusterSpec {
            shards,
            replicas,
            ..Default::default()
        }
    }

    async fn plan_with(obs: &Observed, shards: u32, replicas: u32, seen: &Seen) -> Plan {
        plan_settings(obs, shards, replicas, seen, Settings::default()).await
    }

    async fn plan_settings(
        obs: &Observed,
        shards: u32,
        replicas: u32,
        seen: &Seen,
        settings: Settings,
    ) -> Plan {
        plan_spec(obs, &spec(shards, replicas), seen, settings).await
    }

    async fn plan_spec(
        obs: &Observed,
        spec: &KvClusterSpec,
        seen: &Seen,
        settings: Settings,
    ) -> Plan {
        let attempts = SaveAttempts::default();
        let input = Input {
            spec,
            observed: obs,
            settings: &settings,
            snapshots: None,
            save_attempts: &attempts,
        };
        decide(&input, seen).await
    }

    async fn plan(obs: &Observed) -> Plan {
        let shards = obs.cluster_shards().unwrap();
        let replicas = u32::try_from(obs.members.len()).unwrap() / shards - 1;
        plan_with(obs, shards, replicas, &Seen::default()).await
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| format!("c-{n}")).collect()
    }

    #[tokio::test]
    async fn bootstrap_meets_every_member_from_the_first() {
        let obs = fresh_cluster(3, 1);
        let p = plan(&obs).await;
        assert_eq!(
            p.action,
            Some(Action::ClusterMeet {
                via: "c-s0-0".into(),
                members: names(&["s0-1", "s1-0", "s1-1", "s2-0", "s2-1"]),
            })
        );
    }

    #[tokio::test]
    async fn bootstrap_assigns_balanced_ranges_to_each_shards_first_member() {
        let obs = staged_cluster(3, 1, Stage::Met);
        let p = plan(&obs).await;
        let ranges = balanced_ranges(3);
        assert_eq!(
            p.action,
            Some(Action::AssignSlots {
                assign: vec![
                    ("c-s0-0".into(), vec![ranges[0]]),
                    ("c-s1-0".into(), vec![ranges[1]]),
                    ("c-s2-0".into(), vec![ranges[2]]),
                ]
            })
        );
    }

    #[tokio::test]
    async fn bootstrap_makes_the_others_replicas_of_their_shards_primary() {
        let obs = staged_cluster(3, 1, Stage::Assigned);
        let p = plan(&obs).await;
        assert_eq!(
            p.action,
            Some(Action::ClusterReplicate {
                member: "c-s0-1".into(),
                primary: "c-s0-0".into(),
                primary_id: id_of(0, 0),
            })
        );
        // Once every replica follows, the group waits for cluster_state:ok everywhere.
        let mut obs = staged_cluster(3, 1, Stage::Formed);
        obs.members[1].cluster.as_mut().unwrap().info.state = crate::engine::ClusterState::Fail;
        let p = plan(&obs).await;
        assert_eq!(p.action, None);
        let w = p.wait.unwrap();
        assert_eq!(w.blocker, Blocker::InProgress);
        assert!(w.reason.contains("c-s0-1"), "{}", w.reason);
    }

    #[tokio::test]
    async fn a_formed_cluster_is_left_alone() {
        let obs = formed_cluster(3, 1);
        let p = plan(&obs).await;
        assert_eq!(p.action, None);
        assert_eq!(p.wait, None);
    }

    #[tokio::test]
    async fn a_gossip_in_flight_is_waited_for_not_met_again() {
        let mut obs = staged_cluster(2, 1, Stage::Met);
        let unknown = id_of(1, 1);
        set_view(&mut obs, "s0-1", |n| n.nodes.retain(|x| x.id != unknown));
        let p = plan(&obs).await;
        assert_eq!(p.action, None);
        assert!(p.wait.unwrap().reason.contains("c-s0-1"));
    }

    #[tokio::test]
    async fn a_killed_primary_is_replaced_by_its_shards_replica_with_force() {
        let mut obs = formed_cluster(3, 1);
        kill(&mut obs, "s1-0");
        let seen = Seen::default();
        let p = plan_with(&obs, 3, 1, &seen).await;
        assert_eq!(
            p.action,
            Some(Action::ClusterFailover {
                shard: 1,
                promote: "c-s1-1".into(),
                reason: kvpilot_sdk::SelectionReason::PrimaryLost,
                takeover: false,
            })
        );
        // The hook saw shard 1 only (rule 8); each member record carries the shard index.
        let requests = seen.selection.lock().unwrap();
        let request = &requests[0];
        assert_eq!(request.cluster.shards, 3);
        assert_eq!(request.primary.as_ref().unwrap().name, "c-s1-0");
        assert!(request.candidates.iter().all(|c| c.shard == 1));
        assert_eq!(request.candidates.len(), 1);
    }

    #[tokio::test]
    async fn the_lost_primary_is_not_restarted_before_its_replica_took_over() {
        let mut obs = formed_cluster(3, 1);
        kill(&mut obs, "s1-0");
        // Another shard's replica is down too: it may start, but not s1-0.
        kill(&mut obs, "s0-1");
        let p = plan(&obs).await;
        assert!(
            matches!(p.action, Some(Action::ClusterFailover { ref promote, .. }) if promote == "c-s1-1"),
            "{:?}",
            p.action
        );
        // After the promotion (s1-1 owns the slots at a higher epoch everywhere), the old
        // primary is started (it rejoins as a replica) together with the other down member.
        let (new, old) = (id_of(1, 1), id_of(1, 0));
        for short in ["s0-0", "s1-1", "s2-0", "s2-1"] {
            set_view(&mut obs, short, |n| promote_in(n, &new, &old, 9));
        }
        get_mut(&mut obs, "s1-1").report.as_mut().unwrap().role = kvpilot_sdk::Role::Primary;
        let p = plan(&obs).await;
        assert_eq!(
            p.action,
            Some(Action::Start {
                members: names(&["s0-1", "s1-0"]),
                replica_of: None
            })
        );
    }

    #[tokio::test]
    async fn a_silent_primary_is_counted_per_shard_then_stopped_before_promotion() {
        let mut obs = formed_cluster(3, 1);
        let m = get_mut(&mut obs, "s2-0");
        m.report = None;
        m.cluster = None;
        obs.shard_missing_probes = vec![0, 0, 2];
        let p = plan(&obs).await;
        assert_eq!(p.action, None);
        let w = p.wait.unwrap();
        assert_eq!(w.blocker, Blocker::NoPrimary);
        assert!(
            w.reason.contains("shard 2") && w.reason.contains("2 of 3"),
            "{}",
            w.reason
        );
        // Another shard's counter does not count for shard 2.
        obs.shard_missing_probes = vec![5, 0, 2];
        assert_eq!(plan(&obs).await.action, None);
        obs.shard_missing_probes = vec![0, 0, 3];
        assert_eq!(
            plan(&obs).await.action,
            Some(Action::StopHung {
                members: names(&["s2-0"])
            })
        );
    }

    #[tokio::test]
    async fn without_a_majority_of_primaries_the_stopped_primarys_replica_takes_over() {
        let mut obs = formed_cluster(3, 1);
        kill(&mut obs, "s0-0");
        kill(&mut obs, "s1-0");
        let p = plan(&obs).await;
        assert!(
            matches!(
                p.action,
                Some(Action::ClusterFailover {
                    shard: 0,
                    takeover: true,
                    ..
                })
            ),
            "{:?}",
            p.action
        );
    }

    #[tokio::test]
    async fn a_replica_behind_the_lost_primary_is_not_promoted() {
        let mut obs = formed_cluster(3, 1);
        // What status recorded of s1-0: further ahead than its replica got.
        let mut last = crate::observe::LastKnown {
            role: crate::observe::KnownRole::Primary,
            history: get(&obs, "s1-0")
                .report
                .as_ref()
                .unwrap()
                .history
                .clone()
                .unwrap(),
            keys: 10,
            started_unix: None,
            fence_pending: false,
        };
        last.history.offset = 50_000_000;
        kill(&mut obs, "s1-0");
        get_mut(&mut obs, "s1-0").last_known = Some(last);
        let p = plan(&obs).await;
        assert_eq!(p.action, None);
        let w = p.wait.unwrap();
        assert_eq!(w.blocker, Blocker::NoPrimary);
        assert!(w.reason.contains("c-s1-0"), "{}", w.reason);
    }

    #[tokio::test]
    async fn a_member_holding_data_its_primary_lacks_is_not_made_a_replica() {
        let mut obs = staged_cluster(2, 1, Stage::Assigned);
        let r = get_mut(&mut obs, "s0-1").report.as_mut().unwrap();
        r.keys = Some(5);
        r.history.as_mut().unwrap().offset = 9000;
        let p = plan(&obs).await;
        assert_eq!(p.action, None);
        assert!(p.wait.unwrap().reason.contains("lacks"));
    }

    #[tokio::test]
    async fn nothing_runs_yet_so_everything_starts() {
        let mut obs = fresh_cluster(2, 1);
        for short in ["s0-0", "s0-1", "s1-0", "s1-1"] {
            kill(&mut obs, short);
        }
        assert_eq!(
            plan(&obs).await.action,
            Some(Action::Start {
                members: names(&["s0-0", "s0-1", "s1-0", "s1-1"]),
                replica_of: None
            })
        );
    }

    fn stale(obs: &mut Observed, short: &str) {
        get_mut(obs, short).revision = Some("r0".into());
    }

    #[tokio::test]
    async fn a_rollout_restarts_replicas_first_one_shard_at_a_time() {
        let mut obs = formed_cluster(3, 1);
        for short in ["s1-0", "s1-1", "s2-1"] {
            stale(&mut obs, short);
        }
        let p = plan(&obs).await;
        assert!(p.rolling);
        assert!(
            matches!(&p.action, Some(Action::Restart { member, .. }) if member == "c-s1-1"),
            "{:?} {:?}",
            p.action,
            p.wait
        );
        // While that replica syncs again, no other shard moves.
        get_mut(&mut obs, "s1-1").report.as_mut().unwrap().link_up = false;
        stale(&mut obs, "s2-1");
        let p = plan(&obs).await;
        assert_eq!(p.action, None, "{:?}", p.wait);
        assert!(p.wait.unwrap().reason.contains("c-s1-1"));
    }

    #[tokio::test]
    async fn more_shards_step_at_once_only_up_to_the_setting_and_a_minority_of_primaries() {
        let two = Settings {
            max_shards_in_flight: 2,
            ..Settings::default()
        };
        for (shards, setting, want_step) in [(5, two.clone(), true), (3, two, false)] {
            let mut obs = formed_cluster(shards, 1);
            // s0-1 was restarted onto the new revision and is resyncing: shard 0 is in flight.
            get_mut(&mut obs, "s0-1").report.as_mut().unwrap().link_up = false;
            for short in ["s0-0", "s2-0", "s2-1"] {
                stale(&mut obs, short);
            }
            let p = plan_settings(&obs, shards, 1, &Seen::default(), setting).await;
            if want_step {
                assert!(
                    matches!(&p.action, Some(Action::Restart { member, .. }) if member == "c-s2-1"),
                    "{shards} shards: {:?} {:?}",
                    p.action,
                    p.wait
                );
            } else {
                assert_eq!(p.action, None, "{shards} shards");
                let w = p.wait.unwrap();
                assert!(
                    w.reason.contains("1 of at most 1") && w.reason.contains("c-s0-1"),
                    "{}",
                    w.reason
                );
            }
            // The default keeps one shard at a time whatever the size.
            let p = plan(&obs).await;
            assert_eq!(p.action, None, "{shards} shards: {:?}", p.action);
            // The spec's `rollout.maxShardsInFlight` overrides the operator's setting.
            let mut wide = spec(shards, 1);
            wide.rollout.max_shards_in_flight = Some(2);
            let p = plan_spec(&obs, &wide, &Seen::default(), Settings::default()).await;
            assert_eq!(
                matches!(&p.action, Some(Action::Restart { member, .. }) if member == "c-s2-1"),
                want_step,
                "{shards} shards, spec 2: {:?} {:?}",
                p.action,
                p.wait
            );
        }
    }

    fn park(obs: &mut Observed, short: &str) {
        get_mut(obs, short).cluster.as_mut().unwrap().parked = true;
    }

    /// `short` came back empty: a new replication history, no keys.
    fn emptied(obs: &mut Observed, short: &str) {
        let r = get_mut(obs, short).report.as_mut().unwrap();
        r.keys = Some(0);
        r.history = Some(crate::observe::History {
            replid: "fresh".into(),
            replid2: None,
            previous_until_offset: None,
            offset: 0,
        });
    }

    #[tokio::test]
    async fn a_primary_back_empty_with_its_nodes_conf_stays_parked_and_its_replica_takes_over() {
        let mut obs = formed_cluster(3, 1);
        emptied(&mut obs, "s2-0");
        park(&mut obs, "s2-0");
        let p = plan(&obs).await;
        assert_eq!(
            p.action,
            Some(Action::ClusterFailover {
                shard: 2,
                promote: "c-s2-1".into(),
                reason: kvpilot_sdk::SelectionReason::PrimaryEmpty,
                takeover: false,
            })
        );
        // Not parked (an engine that cannot be), nothing to compare against: left alone.
        get_mut(&mut obs, "s2-0").cluster.as_mut().unwrap().parked = false;
        assert_eq!(plan(&obs).await.action, None);
    }

    #[tokio::test]
    async fn parked_members_are_released_once_judged() {
        let mut obs = formed_cluster(3, 1);
        // A replica, and a primary that holds what its replica holds: released together.
        park(&mut obs, "s0-1");
        park(&mut obs, "s1-0");
        // A primary back empty whose replica is down and was recorded with data: kept.
        park(&mut obs, "s2-0");
        emptied(&mut obs, "s2-0");
        let held = get(&obs, "s2-1")
            .report
            .as_ref()
            .unwrap()
            .history
            .clone()
            .unwrap();
        kill(&mut obs, "s2-1");
        get_mut(&mut obs, "s2-1").last_known = Some(crate::observe::LastKnown {
            role: crate::observe::KnownRole::Replica,
            history: held,
            keys: 10,
            started_unix: None,
            fence_pending: false,
        });
        let p = plan(&obs).await;
        assert_eq!(
            p.action,
            Some(Action::ClusterUnpark {
                members: names(&["s0-1", "s1-0"])
            })
        );
    }

    #[tokio::test]
    async fn an_owner_id_no_member_has_any_more_lets_its_replica_take_over() {
        let mut obs = formed_cluster(3, 1);
        // s0-0 came back without its nodes.conf: a new node alone, owning nothing.
        let old = id_of(0, 0);
        let new = format!("{:040x}", 0xbeef);
        set_view(&mut obs, "s0-0", |n| {
            n.nodes.retain(|x| x.id == old);
            let me = &mut n.nodes[0];
            me.id = new.clone();
            me.slots.clear();
            me.config_epoch = 0;
        });
        get_mut(&mut obs, "s0-0").cluster.as_mut().unwrap().id = new;
        let p = plan(&obs).await;
        assert_eq!(
            p.action,
            Some(Action::ClusterFailover {
                shard: 0,
                promote: "c-s0-1".into(),
                reason: kvpilot_sdk::SelectionReason::PrimaryLost,
                takeover: false,
            }),
            "{:?}",
            p.wait
        );
    }

    #[tokio::test]
    async fn a_stale_primary_hands_over_to_its_in_sync_replica_by_cluster_failover() {
        let mut obs = formed_cluster(3, 1);
        stale(&mut obs, "s2-0");
        let p = plan(&obs).await;
        assert_eq!(
            p.action,
            Some(Action::ClusterHandover {
                shard: 2,
                from: "c-s2-0".into(),
                to: "c-s2-1".into()
            })
        );
    }

    #[tokio::test]
    async fn nothing_restarts_while_a_primary_shows_an_older_epoch() {
        let mut obs = formed_cluster(3, 1);
        stale(&mut obs, "s0-1");
        let id = id_of(1, 0);
        set_view(&mut obs, "s2-0", |n| {
            n.nodes
                .iter_mut()
                .find(|x| x.id == id)
                .unwrap()
                .config_epoch = 1;
        });
        let p = plan(&obs).await;
        assert_eq!(p.action, None);
        let w = p.wait.unwrap();
        assert!(
            w.reason.contains("c-s2-0") && w.reason.contains("epoch"),
            "{}",
            w.reason
        );
        // Once it agrees, the restart goes ahead.
        set_view(&mut obs, "s2-0", |n| {
            n.nodes
                .iter_mut()
                .find(|x| x.id == id)
                .unwrap()
                .config_epoch = 2;
        });
        assert!(matches!(
            plan(&obs).await.action,
            Some(Action::Restart { member, .. }) if member == "c-s0-1"
        ));
    }

    #[tokio::test]
    async fn a_replica_that_was_an_empty_primary_before_replicate_needs_no_fence() {
        let mut obs = formed_cluster(2, 1);
        let m = get_mut(&mut obs, "s0-1");
        m.last_known = Some(crate::observe::LastKnown {
            role: crate::observe::KnownRole::Primary,
            history: m.report.as_ref().unwrap().history.clone().unwrap(),
            keys: 0,
            started_unix: None,
            fence_pending: false,
        });
        let p = plan(&obs).await;
        assert_eq!(p.action, None);
        assert_eq!(p.fence_pending, Vec::<String>::new());
    }

    #[tokio::test]
    async fn a_node_no_member_is_any_more_is_forgotten_once_flagged_failed() {
        let mut obs = formed_cluster(2, 1);
        // s1-1 came back without its nodes.conf: a new id, the old one lingers elsewhere.
        let old = id_of(1, 1);
        let new = format!("{:040x}", 0xfeed);
        let m = get_mut(&mut obs, "s1-1");
        let v = m.cluster.as_mut().unwrap();
        v.id = new.clone();
        for n in &mut v.nodes.nodes {
            if n.id == old {
                n.id = new.clone();
            }
        }
        for short in ["s0-0", "s0-1", "s1-0"] {
            set_view(&mut obs, short, |n| {
                let mut line = n.get(&old).unwrap().clone();
                line.id = new.clone();
                n.nodes.push(line);
                let stale = n.nodes.iter_mut().find(|x| x.id == old).unwrap();
                stale.flags.pfail = true;
            });
        }
        // Only suspected so far: wait.
        let p = plan(&obs).await;
        assert_eq!(p.action, None);
        assert!(p.wait.unwrap().reason.contains(&old));
        for short in ["s0-0", "s0-1", "s1-0"] {
            set_view(&mut obs, short, |n| {
                n.nodes.iter_mut().find(|x| x.id == old).unwrap().flags.fail = true;
            });
        }
        assert_eq!(
            plan(&obs).await.action,
            Some(Action::ClusterForget {
                id: old,
                on: names(&["s0-0", "s0-1", "s1-0"]),
            })
        );
    }
}
