//! Builds [`Observed`] from the platform and one `observe()` round trip per running member.

use super::{Clients, ClusterView, History, Observed, ObservedMember, Replication};
use crate::api::KvClusterSpec;
use crate::engine::{self, Dialect, FailoverState, MemberReport};
use crate::platform::{Platform, PlatformError};
use futures::future::join_all;
use kvpilot_sdk::Role;
use std::net::SocketAddr;
use std::time::Duration;

/// What observe remembers between reconciles: only the failure-detection counter, which is
/// about time and so cannot be read off the members. Losing it (restart) only delays a failover.
#[derive(Debug, Default)]
pub struct Tracker {
    primary_missing_probes: u32,
    /// Cluster mode: the same, per shard.
    shard_missing_probes: Vec<u32>,
}

/// Reads the platform and every running member. Members that do not answer are reported with
/// `report: None`; only a platform failure is an error.
pub async fn collect<P: Platform>(
    platform: &P,
    spec: &KvClusterSpec,
    name: &str,
    namespace: &str,
    clients: &Clients,
    tracker: &mut Tracker,
    probe_timeout: Duration,
) -> Result<Observed, PlatformError> {
    let members = platform.members().await?;
    let now_unix = crate::reconcile::now_ms() as i64 / 1000;
    // The snapshot setting is only compared when the spec manages snapshots: skip the round
    // trip otherwise.
    let snapshots = spec.snapshots.is_some();
    // An invalid spec changes nothing (decide waits): observe the group as it runs.
    let cluster_mode = spec.shards > 1 && crate::api::validate_spec(spec).is_ok();
    let reports = join_all(members.iter().map(|m| async move {
        if !m.running {
            return None;
        }
        // The whole probe (connect, AUTH, INFO) is bounded: a member that does not answer
        // in time counts as not answering (spec.failureDetection.probeTimeoutMs).
        tokio::time::timeout(
            probe_timeout,
            probe(
                clients,
                &m.name,
                m.addr,
                snapshots,
                cluster_mode,
                probe_timeout,
            ),
        )
        .await
        .ok()
        .flatten()
    }))
    .await;
    let engine_version = reports
        .iter()
        .flatten()
        .map(|(r, _, _)| r.server.version.clone())
        .next()
        .or_else(|| spec.engine.version.clone())
        .unwrap_or_default();
    let observed_members: Vec<ObservedMember> = members
        .into_iter()
        .zip(reports)
        .map(|(m, probed)| {
            let (report, cluster) = match probed {
                Some((r, snapshot, view)) => (Some(replication(&r, &snapshot)), view),
                None => (None, None),
            };
            ObservedMember {
                name: m.name,
                shard: m.shard,
                ordinal: m.ordinal,
                addr: m.addr,
                revision: m.revision,
                running: m.running,
                zone: m.zone,
                node: m.node,
                retiring: m.retiring,
                report,
                // Filled from status by the reconciler: observe reads only the members.
                last_known: None,
                cluster,
            }
        })
        .collect();
    if observed_members
        .iter()
        .any(|m| m.running && m.is(Role::Primary))
    {
        tracker.primary_missing_probes = 0;
    } else {
        tracker.primary_missing_probes = tracker.primary_missing_probes.saturating_add(1);
    }
    if cluster_mode {
        let shards = spec.shards as usize;
        tracker.shard_missing_probes.resize(shards, 0);
        for (shard, missing) in tracker.shard_missing_probes.iter_mut().enumerate() {
            let served = observed_members.iter().any(|m| {
                m.shard as usize == shard
                    && m.running
                    && m.cluster.as_ref().is_some_and(|v| v.owns_slots())
            });
            *missing = if served { 0 } else { missing.saturating_add(1) };
        }
    } else {
        tracker.shard_missing_probes.clear();
    }
    Ok(Observed {
        name: name.to_string(),
        namespace: namespace.to_string(),
        engine: spec.engine.kind,
        engine_version,
        desired_revision: platform.desired_revision(),
        members: observed_members,
        endpoint: platform.endpoint(),
        primary_missing_probes: tracker.primary_missing_probes,
        shard_missing_probes: tracker.shard_missing_probes.clone(),
        now_unix,
    })
}

/// The settings that decide whether a member saves on its own or deletes its snapshot.
#[derive(Debug, Clone, Default)]
struct SnapshotSettings {
    /// `save` / `snapshot_cron`.
    schedule: Option<String>,
    /// `rdb-del-sync-files` (Valkey/Redis).
    del_sync_files: Option<bool>,
}

/// One member's report, when `snapshots` its snapshot settings, and in cluster mode its view
/// of the cluster.
async fn probe(
    clients: &Clients,
    member: &str,
    addr: SocketAddr,
    snapshots: bool,
    cluster_mode: bool,
    timeout: Duration,
) -> Option<(MemberReport, SnapshotSettings, Option<ClusterView>)> {
    let client = match clients.get(member, addr).await {
        Ok(c) => c,
        // A member that is down is routine; one that answers but refuses the TLS session or
        // the credentials is a misconfiguration somebody must see.
        Err(e) if e.is_unreachable() => {
            tracing::debug!(member, %addr, error = %e, "member does not answer");
            return None;
        }
        Err(e) => {
            tracing::warn!(member, %addr, error = %e, "member refuses the operator's connection");
            return None;
        }
    };
    let report = match client.observe_within(timeout).await {
        Ok(report) => report,
        Err(e) => {
            tracing::debug!(%addr, error = %e, "observe failed");
            clients.forget_if_broken(addr, &e).await;
            return None;
        }
    };
    let view = if cluster_mode {
        // A member that answers INFO but not CLUSTER INFO/NODES is seen without a view:
        // decide then waits for it rather than guessing its place in the cluster.
        match (client.cluster_info().await, client.cluster_nodes().await) {
            (Ok(info), Ok(nodes)) => match client.parked().await {
                Ok(parked) => ClusterView::new(info, nodes).map(|v| ClusterView { parked, ..v }),
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "parked state unknown");
                    None
                }
            },
            (Err(e), _) | (_, Err(e)) => {
                tracing::debug!(%addr, error = %e, "cluster view failed");
                None
            }
        }
    } else {
        None
    };
    if !snapshots {
        return Some((report, SnapshotSettings::default(), view));
    }
    let settings = match clients.dialect() {
        Dialect::Dragonfly => SnapshotSettings {
            schedule: client.config_get("snapshot_cron").await.ok().flatten(),
            del_sync_files: None,
        },
        Dialect::Valkey | Dialect::Redis => SnapshotSettings {
            schedule: client.config_get("save").await.ok().flatten(),
            del_sync_files: client
                .config_get("rdb-del-sync-files")
                .await
                .ok()
                .flatten()
                .map(|v| v.eq_ignore_ascii_case("yes")),
        },
    };
    Some((report, settings, view))
}

/// The facts decide needs from one report.
fn replication(r: &MemberReport, snapshot: &SnapshotSettings) -> Replication {
    let clock_unix = r
        .server
        .time_usec
        .and_then(|us| i64::try_from(us / 1_000_000).ok());
    Replication {
        role: match r.role() {
            engine::Role::Primary => Role::Primary,
            engine::Role::Replica => Role::Replica,
        },
        following: r
            .replica_of()
            .and_then(|hp| format!("{}:{}", hp.host, hp.port).parse().ok()),
        link_up: r.link_up(),
        syncing: r
            .replication
            .primary
            .as_ref()
            .is_some_and(|p| p.sync_in_progress),
        loading: r.persistence.loading || r.persistence.async_loading || r.keys.is_none(),
        offset: r.offset().unwrap_or(0),
        // While a dataset loads the server reports a throwaway ID at offset 0: unknown.
        history: match (&r.replication.replid, r.keys) {
            (Some(id), Some(_)) if !r.persistence.loading => Some(History {
                replid: id.clone(),
                replid2: r.replication.replid2.clone(),
                previous_until_offset: r.replication.second_repl_offset,
                // The member's own position in the stream, which PSYNC compares (a replica
                // never connected reports `slave_repl_offset:1` but `master_repl_offset:0`).
                offset: r.replication.master_repl_offset.unwrap_or(0),
            }),
            _ => None,
        },
        keys: r.keys,
        online_replicas: r
            .replication
            .replicas
            .iter()
            .filter(|e| e.online())
            .filter_map(|e| format!("{}:{}", e.ip, e.port).parse().ok())
            .collect(),
        bgsave_in_progress: r.persistence.bgsave_in_progress,
        last_save_unix: r.persistence.last_save_time,
        last_bgsave_ok: r.persistence.last_bgsave_ok,
        saves_since_start: r.persistence.saves,
        snapshot_config: snapshot.schedule.clone(),
        del_sync_files: snapshot.del_sync_files,
        clock_unix,
        started_unix: clock_unix
            .zip(r.server.uptime_seconds)
            .and_then(|(now, up)| i64::try_from(up).ok().map(|up| now - up)),
        failover_in_progress: r
            .replication
            .failover_state
            .as_ref()
            .is_some_and(|s| *s != FailoverState::NoFailover),
    }
}
