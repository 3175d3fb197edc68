//! The per-shard picture of a cluster-mode group (rule 8), derived only from what the members
//! said about themselves and each other (`CLUSTER NODES`/`INFO` of each), so it is the same
//! after an operator restart.
//!
//! - A shard's slots are its range of the balanced map ([`balanced_ranges`]).
//! - Its owner is the node that owns the first slot of that range; when members disagree
//!   (a promotion not yet gossiped everywhere) the highest config epoch wins, as it does in
//!   the cluster itself.
//! - A member's node id is what it says of itself; for a member that does not answer, the id
//!   the others list at its address.

use crate::engine::slots::{SlotRange, balanced_ranges};
use crate::engine::{ClusterNode, ClusterState};
use crate::observe::{Observed, ObservedMember};

/// One shard as the members see it.
#[derive(Debug, Clone)]
pub struct Shard<'a> {
    pub index: u32,
    /// Its members, in ordinal order.
    pub members: Vec<&'a ObservedMember>,
    /// The slots the balanced map gives it.
    pub range: SlotRange,
    /// The node id that owns the range (highest config epoch among the views), if any.
    pub owner: Option<Owner>,
    /// The member that is the owner, if it is one of this shard's members.
    pub owner_member: Option<&'a ObservedMember>,
    /// The owner answers and owns slots in its own view: the shard's serving primary.
    pub primary: Option<&'a ObservedMember>,
}

/// The owner of a shard's slots as the members see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub id: String,
    pub config_epoch: u64,
    /// The slot ranges that node owns (from the view that showed the highest epoch).
    pub slots: Vec<SlotRange>,
}

/// The node id of `m`: its own, else the one the answering members list at its address.
pub fn node_id(m: &ObservedMember, observed: &Observed) -> Option<String> {
    if let Some(v) = &m.cluster {
        return Some(v.id.clone());
    }
    let at = |n: &&ClusterNode| {
        !n.flags.noaddr
            && !n.flags.handshake
            && n.port == m.addr.port()
            && n.ip == m.addr.ip().to_string()
    };
    // The id most views agree on (a member that came back empty has a new id, and the old
    // one may linger, flagged, at the same address for a while).
    let mut counts: Vec<(String, usize)> = Vec::new();
    for v in observed.members.iter().filter_map(|o| o.cluster.as_ref()) {
        if let Some(n) = v.nodes.nodes.iter().find(at) {
            match counts.iter_mut().find(|(id, _)| *id == n.id) {
                Some((_, c)) => *c += 1,
                None => counts.push((n.id.clone(), 1)),
            }
        }
    }
    counts.into_iter().max_by_key(|(_, c)| *c).map(|(id, _)| id)
}

/// The member whose node id is `id`.
pub fn member_with_id<'a>(observed: &'a Observed, id: &str) -> Option<&'a ObservedMember> {
    observed
        .members
        .iter()
        .find(|m| node_id(m, observed).as_deref() == Some(id))
}

/// Every shard of `observed` (`count` shards).
pub fn shards(observed: &Observed, count: u32) -> Vec<Shard<'_>> {
    balanced_ranges(count as usize)
        .into_iter()
        .enumerate()
        .map(|(i, range)| {
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            let members: Vec<&ObservedMember> = observed
                .members
                .iter()
                .filter(|m| m.shard == index)
                .collect();
            let owner = owner_of(observed, range);
            let owner_member = owner
                .as_ref()
                .and_then(|o| member_with_id(observed, &o.id))
                .filter(|m| m.shard == index);
            let primary = owner_member
                .filter(|m| m.running && m.cluster.as_ref().is_some_and(|v| v.owns_slots()));
            Shard {
                index,
                members,
                range,
                owner,
                owner_member,
                primary,
            }
        })
        .collect()
}

/// Who owns `range.start`, by the highest config epoch any answering member reports.
fn owner_of(observed: &Observed, range: SlotRange) -> Option<Owner> {
    observed
        .members
        .iter()
        .filter_map(|m| m.cluster.as_ref())
        .flat_map(|v| v.nodes.nodes.iter())
        .filter(|n| n.flags.primary && n.owns(range.start))
        .max_by_key(|n| n.config_epoch)
        .map(|n| Owner {
            id: n.id.clone(),
            config_epoch: n.config_epoch,
            slots: n.slots.clone(),
        })
}

/// No answering member reports any slot assigned: a cluster that was never bootstrapped (or
/// whose every member lost its `nodes.conf`).
pub fn unassigned(observed: &Observed) -> bool {
    observed
        .members
        .iter()
        .filter_map(|m| m.cluster.as_ref())
        .all(|v| v.info.slots_assigned == 0)
}

/// Every running member answers with `cluster_state:ok` and all 16384 slots assigned.
pub fn formed(observed: &Observed) -> bool {
    observed.members.iter().all(|m| {
        m.running
            && m.cluster.as_ref().is_some_and(|v| {
                v.info.state == ClusterState::Ok
                    && v.info.slots_assigned == u32::from(crate::engine::slots::SLOTS)
            })
    })
}

/// Every slot has an owner in the view of every answering member.
pub fn slots_assigned(observed: &Observed) -> bool {
    let views: Vec<_> = observed
        .members
        .iter()
        .filter_map(|m| m.cluster.as_ref())
        .collect();
    !views.is_empty()
        && views
            .iter()
            .all(|v| v.info.slots_assigned == u32::from(crate::engine::slots::SLOTS))
}

/// Client addresses of the members that answer (a cluster client's seeds), or of every
/// member when none answers.
pub fn seeds(observed: &Observed) -> Vec<String> {
    let answering: Vec<String> = observed
        .members
        .iter()
        .filter(|m| m.cluster.is_some())
        .map(|m| m.addr.to_string())
        .collect();
    if answering.is_empty() {
        observed
            .members
            .iter()
            .map(|m| m.addr.to_string())
            .collect()
    } else {
        answering
    }
}

/// A shard is ready: its primary serves, every member is ready and every other member is a
/// replica of the primary in its own view.
pub fn shard_ready(shard: &Shard<'_>) -> bool {
    let Some(primary) = shard.primary else {
        return false;
    };
    let Some(pid) = primary.cluster.as_ref().map(|v| v.id.as_str()) else {
        return false;
    };
    shard.members.iter().all(|m| {
        m.ready()
            && (m.name == primary.name
                || m.cluster
                    .as_ref()
                    .and_then(|v| v.myself())
                    .and_then(|me| me.primary_id.as_deref())
                    == Some(pid))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::tests_cluster::*;

    #[test]
    fn the_owner_is_the_highest_epoch_any_member_reports() {
        let mut obs = formed_cluster(2, 1);
        // s0-1 was promoted (epoch 9) and s1-0 already knows; s0-0 is down.
        obs.members[0].running = false;
        obs.members[0].report = None;
        obs.members[0].cluster = None;
        let promoted = id_of(0, 1);
        set_view(&mut obs, "s1-0", |nodes| {
            promote_in(nodes, &promoted, &id_of(0, 0), 9)
        });
        let shards = shards(&obs, 2);
        assert_eq!(shards[0].owner.as_ref().unwrap().id, promoted);
        assert_eq!(shards[0].owner.as_ref().unwrap().config_epoch, 9);
        // The promoted member does not own slots in its own view yet: not serving.
        assert!(shards[0].primary.is_none());
        assert_eq!(shards[0].owner_member.unwrap().name, "c-s0-1");
        assert_eq!(shards[1].primary.unwrap().name, "c-s1-0");
    }

    #[test]
    fn a_member_that_does_not_answer_is_known_by_its_address() {
        let mut obs = formed_cluster(2, 1);
        obs.members[0].cluster = None;
        obs.members[0].report = None;
        assert_eq!(node_id(&obs.members[0], &obs), Some(id_of(0, 0)));
        let shards = shards(&obs, 2);
        assert_eq!(shards[0].owner_member.unwrap().name, "c-s0-0");
        assert!(shards[0].primary.is_none());
        assert!(!shard_ready(&shards[0]));
        assert!(shard_ready(&shards[1]));
    }

    #[test]
    fn formed_needs_every_member_ok_with_every_slot() {
        let mut obs = formed_cluster(3, 1);
        assert!(formed(&obs));
        assert!(slots_assigned(&obs));
        obs.members[3].cluster.as_mut().unwrap().info.state = ClusterState::Fail;
        assert!(!formed(&obs));
        assert!(slots_assigned(&obs));
        let fresh = fresh_cluster(3, 1);
        assert!(unassigned(&fresh));
        assert!(!slots_assigned(&fresh));
        assert_eq!(seeds(&fresh).len(), 6);
    }
}
