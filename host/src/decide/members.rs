//! Turning observed members into the records plugins see.

use crate::api::KvClusterSpec;
use crate::observe::{Observed, ObservedMember};
use kvpilot_sdk::{Cluster, Member, Role};

/// The cluster record every hook receives.
pub(super) fn cluster(observed: &Observed, spec: &KvClusterSpec) -> Cluster {
    Cluster {
        name: observed.name.clone(),
        namespace: observed.namespace.clone(),
        engine: observed.engine,
        engine_version: observed.engine_version.clone(),
        shards: spec.shards,
        replicas_per_shard: spec.replicas,
    }
}

/// `m` as a plugin sees it, relative to the current primary `primary` (if any).
pub(super) fn member(
    m: &ObservedMember,
    primary: Option<&ObservedMember>,
    desired: &str,
) -> Member {
    let report = m.report.as_ref();
    let role = report.map(|r| r.role).unwrap_or(Role::Unknown);
    let is_primary = primary.is_some_and(|p| p.name == m.name);
    let link_up = match (report, primary) {
        (Some(_), _) if is_primary => true,
        // A replica is only "linked" when it follows the current primary, not a former one.
        // ...and when the primary lists it as online (FAILOVER refuses any other).
        (Some(r), Some(p)) => {
            r.link_up
                && r.following == Some(p.addr)
                && p.report
                    .as_ref()
                    .is_some_and(|pr| pr.online_replicas.contains(&m.addr))
        }
        (Some(r), None) => r.link_up,
        (None, _) => false,
    };
    let offset = report.map(|r| r.offset).unwrap_or(0);
    let lag_bytes = match primary.and_then(|p| p.report.as_ref()) {
        Some(p) if !is_primary => p.offset.saturating_sub(offset),
        _ => 0,
    };
    Member {
        name: m.name.clone(),
        shard: m.shard,
        ordinal: m.ordinal,
        role,
        ready: m.ready(),
        // A retiring member (a scale-down) is never where the spec wants it: a retiring primary
        // must hand over.
        on_desired_revision: m.on_revision(desired) && !m.retiring,
        link_up,
        syncing: report.is_some_and(|r| r.syncing || r.loading),
        offset,
        lag_bytes,
        // The contract has no "unknown": a loading member reports 0 keys and `syncing`, and
        // the host's data-holding guard (rule 2) judges by history, never by this count.
        keys: report.and_then(|r| r.keys).unwrap_or(0),
        zone: m.zone.clone(),
        node: m.node.clone(),
    }
}
