//! Cluster mode, rule 2 per shard: every member starts parked (no replica may sync from it,
//! no client may write to it) and is released only once its history is judged. A primary
//! that came back empty with its `nodes.conf` still owns its slots; released, its replicas
//! would full-sync from it and drop the shard's data. It stays parked and a replica that
//! holds more is promoted instead (`cluster::wiped_primary`); once it follows that replica
//! it is released like any replica.

use super::history::{self, Standing};
use super::shards::Shard;
use crate::observe::{Observed, ObservedMember};

/// Parked members that may be released now: replicas (they serve no replica of their own),
/// primaries without slots (no one follows them: a REPLICATE onto one is guarded by its own
/// history check), and primaries that hold everything the rest of their shard holds.
pub(super) fn releasable(obs: &Observed, shards: &[Shard<'_>]) -> Vec<String> {
    obs.members
        .iter()
        .filter(|m| m.running && m.cluster.as_ref().is_some_and(|v| v.parked))
        .filter(|m| {
            let Some(me) = m.cluster.as_ref().and_then(|v| v.myself()) else {
                return false;
            };
            if me.primary_id.is_some() || !me.flags.primary || me.slots.is_empty() {
                return true;
            }
            shards
                .iter()
                .find(|sh| sh.index == m.shard)
                .is_some_and(|sh| holds_the_shard(m, sh))
        })
        .map(|m| m.name.clone())
        .collect()
}

/// `p` answers with its dataset loaded and holds everything every other member of `shard`
/// holds now, or held when last seen if it is down. A member that runs but cannot be judged
/// yet (loading, not answering) keeps `p` parked for now.
pub(super) fn holds_the_shard(p: &ObservedMember, shard: &Shard<'_>) -> bool {
    let Standing::Now(held) = history::standing(p) else {
        return false;
    };
    shard
        .members
        .iter()
        .filter(|o| o.name != p.name)
        .all(|o| match history::standing(o) {
            Standing::Now(h) => history::contains(held, h),
            Standing::Recorded(h) if !o.running => history::contains(held, h),
            Standing::Recorded(_) => false,
            Standing::Unknown => !o.running,
        })
}

/// The shard's serving primary is parked and some answering replica holds what it lacks:
/// it came back empty (or from an older dump) with its `nodes.conf`. Returns it and those
/// replicas, which are the candidates to replace it.
pub(super) fn wiped_primary<'a>(
    shard: &Shard<'a>,
) -> Option<(&'a ObservedMember, Vec<&'a ObservedMember>)> {
    let p = shard.primary?;
    let view = p.cluster.as_ref()?;
    if !view.parked {
        return None;
    }
    let Standing::Now(held) = history::standing(p) else {
        return None;
    };
    let holders: Vec<&ObservedMember> = shard
        .members
        .iter()
        .copied()
        .filter(|m| m.name != p.name && m.running)
        .filter(|m| {
            m.cluster
                .as_ref()
                .and_then(|v| v.myself())
                .and_then(|me| me.primary_id.as_deref())
                == Some(view.id.as_str())
        })
        .filter(|m| matches!(history::standing(m), Standing::Now(h) if !history::contains(held, h)))
        .collect();
    (!holders.is_empty()).then_some((p, holders))
}

/// `m` owns its shard's slots in its own view while `rival`, parked, claims them at a
/// higher epoch, and `m` holds everything `rival` holds but not the other way round: `m`
/// must win the slots back (`CLUSTER BUMPEPOCH`), after which the rival owns nothing and is
/// made a replica of `m` like any member back without its `nodes.conf`.
pub(super) fn takes_back(m: &ObservedMember, rival: &ObservedMember) -> bool {
    let parked = rival.cluster.as_ref().is_some_and(|v| v.parked);
    let (Standing::Now(mine), Standing::Now(theirs)) =
        (history::standing(m), history::standing(rival))
    else {
        return false;
    };
    parked && history::contains(mine, theirs) && !history::contains(theirs, mine)
}
