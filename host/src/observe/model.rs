//! `Observed`: everything `decide` may look at, as plain data. Built by [`super::collect`] on a
//! real platform and by hand in tests.

use crate::engine::{ClusterInfo, ClusterNode, ClusterNodes};
use kvpilot_sdk::{Engine, Role};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// One cluster (one shard for now) as seen at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub name: String,
    pub namespace: String,
    pub engine: Engine,
    /// Engine version reported by the members (or declared), empty when unknown.
    pub engine_version: String,
    /// The revision every member should run.
    pub desired_revision: String,
    /// Every member the spec asks for, running or not, and the retiring ones a scale-down
    /// has not removed yet, ordered by ordinal.
    pub members: Vec<ObservedMember>,
    /// Where the primary endpoint (the `-primary` Service) sends clients now.
    pub endpoint: Option<SocketAddr>,
    /// Consecutive observations in which no member answered as primary (0 when one did).
    pub primary_missing_probes: u32,
    /// Cluster mode: per shard (by index), consecutive observations in which no member of the
    /// shard answered as a primary that owns slots (rule 8: failure counting per shard).
    /// Empty in replication mode.
    pub shard_missing_probes: Vec<u32>,
    /// When this was observed (Unix seconds): the only clock `decide` sees.
    pub now_unix: i64,
}

/// One member as seen by the platform and over RESP.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedMember {
    pub name: String,
    pub shard: u32,
    pub ordinal: u32,
    /// The address the member serves on (pod IP / 127.0.0.x) and replicas connect to.
    pub addr: SocketAddr,
    /// The revision the member runs; `None` when it is not running.
    pub revision: Option<String>,
    /// The process/pod exists and runs (says nothing about answering).
    pub running: bool,
    pub zone: Option<String>,
    pub node: Option<String>,
    /// The spec no longer asks for it (a scale-down): it is removed once it is not the
    /// primary, and never chosen to take over from a primary while members that stay can.
    pub retiring: bool,
    /// What the member answered, if it answered.
    pub report: Option<Replication>,
    /// What the member last answered when it had its dataset loaded, as kept in status (so
    /// it survives an operator restart): what it may still hold while it is down, hung or
    /// loading (safety rule 2), and whether it was a primary whose clients still need a fence
    /// (safety rule 7).
    pub last_known: Option<LastKnown>,
    /// Cluster mode: the member's own view of the cluster, when it answered `CLUSTER INFO`
    /// and `CLUSTER NODES`.
    pub cluster: Option<ClusterView>,
}

/// One cluster-mode member's view: its node id, its `CLUSTER INFO` and `CLUSTER NODES`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterView {
    /// Its node id (`myself` in `CLUSTER NODES`).
    pub id: String,
    pub info: ClusterInfo,
    pub nodes: ClusterNodes,
    /// It started parked and was not released yet: no replica can sync from it and no
    /// client write to it (`engine::park`).
    pub parked: bool,
}

impl ClusterView {
    /// Builds the view; `None` when `nodes` has no `myself` line.
    pub fn new(info: ClusterInfo, nodes: ClusterNodes) -> Option<ClusterView> {
        let id = nodes.myself()?.id.clone();
        Some(ClusterView {
            id,
            info,
            nodes,
            parked: false,
        })
    }

    /// Its own line of `CLUSTER NODES`.
    pub fn myself(&self) -> Option<&ClusterNode> {
        self.nodes.myself()
    }

    /// It is a primary that owns slots, in its own view.
    pub fn owns_slots(&self) -> bool {
        self.myself()
            .is_some_and(|me| me.flags.primary && !me.slots.is_empty())
    }

    /// It knows node `id` (past the handshake).
    pub fn knows(&self, id: &str) -> bool {
        self.nodes.get(id).is_some_and(|n| !n.flags.handshake)
    }
}

/// Where a member stands in the replication history: the stream it follows or writes
/// (`master_replid`), how far it got in it (the offset), and the stream it came from before
/// its ID last changed (a promotion, or a primary that loaded a snapshot).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct History {
    /// `master_replid`.
    #[serde(rename = "replicationId")]
    pub replid: String,
    /// `master_replid2`, when the member has one.
    #[serde(
        rename = "previousReplicationId",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub replid2: Option<String>,
    /// `second_repl_offset`: the previous ID holds for offsets below this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_until_offset: Option<u64>,
    /// The replication offset reached (applied, on a replica).
    pub offset: u64,
}

/// The role a member answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum KnownRole {
    Primary,
    Replica,
}

/// What a member last answered with its dataset loaded (kept in status).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastKnown {
    /// `primary` or `replica`.
    pub role: KnownRole,
    /// Its place in the replication history then (the offset is refreshed at most every 30
    /// seconds on Kubernetes, so it is a lower bound).
    pub history: History,
    /// Its key count then.
    pub keys: u64,
    /// When its server process started (Unix seconds, on the member's clock): a restarted
    /// process has none of the old one's clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_unix: Option<i64>,
    /// It was demoted from primary, and the clients it had then are not known to be
    /// disconnected yet: the operator fences it (`CLIENT KILL TYPE normal`) until that
    /// succeeds.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fence_pending: bool,
}

/// The replication facts `decide` needs from one member's `INFO`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Replication {
    pub role: Role,
    /// Replicas: the primary they follow (`master_host:master_port`).
    pub following: Option<SocketAddr>,
    /// Replicas: `master_link_status:up`.
    pub link_up: bool,
    /// A full synchronisation is in progress (`master_sync_in_progress`).
    pub syncing: bool,
    /// The member is loading its dataset (`loading:1`).
    pub loading: bool,
    /// `master_repl_offset` on a primary, the processed offset on a replica.
    pub offset: u64,
    /// Its place in the replication history; `None` while it loads a dataset (until the load
    /// ends the server reports a throwaway ID) or when the engine reports no ID.
    pub history: Option<History>,
    /// Keys in every database (`INFO keyspace`); `None` while it loads (unknown, not 0).
    pub keys: Option<u64>,
    /// Primaries: the replicas it lists as `online` (FAILOVER only accepts those).
    pub online_replicas: Vec<SocketAddr>,
    /// A `BGSAVE` (or a sync's snapshot) is running (`rdb_bgsave_in_progress`).
    pub bgsave_in_progress: bool,
    /// When the member last saved (`rdb_last_save_time`; its start time if it never saved).
    pub last_save_unix: Option<i64>,
    /// Whether the last `BGSAVE` succeeded (`rdb_last_bgsave_status`; "ok" also when it
    /// never saved).
    pub last_bgsave_ok: Option<bool>,
    /// Snapshots made since the server started (`rdb_saves`; not reported by Dragonfly).
    pub saves_since_start: Option<u64>,
    /// The member's own snapshot setting: `save` on Valkey/Redis, `snapshot_cron` on
    /// Dragonfly (`None` when it could not be read).
    pub snapshot_config: Option<String>,
    /// `rdb-del-sync-files` (Valkey/Redis), read with the snapshot setting: with managed
    /// snapshots it must be off, or a full sync deletes the last snapshot.
    pub del_sync_files: Option<bool>,
    /// The member's own clock when it answered (`server_time_usec`, Unix seconds): the clock
    /// its `LASTSAVE` is on.
    pub clock_unix: Option<i64>,
    /// When the server process started, on its own clock (`clock_unix - uptime_in_seconds`).
    pub started_unix: Option<i64>,
    /// A `FAILOVER` is under way on this member (`master_failover_state` is not `no-failover`).
    pub failover_in_progress: bool,
}

impl Observed {
    /// Cluster mode: the number of shards (collect sizes `shard_missing_probes` to it);
    /// `None` in replication mode.
    pub fn cluster_shards(&self) -> Option<u32> {
        u32::try_from(self.shard_missing_probes.len())
            .ok()
            .filter(|&n| n > 1)
    }
}

impl ObservedMember {
    /// The member answered and reported `role`.
    pub fn is(&self, role: Role) -> bool {
        self.report.as_ref().is_some_and(|r| r.role == role)
    }

    pub fn on_revision(&self, desired: &str) -> bool {
        self.revision.as_deref() == Some(desired)
    }

    /// It answered with its dataset loaded and holds at least one key.
    pub fn holds_data(&self) -> bool {
        self.report
            .as_ref()
            .is_some_and(|r| r.keys.is_some_and(|k| k > 0))
    }

    /// Running, answering and not loading.
    pub fn ready(&self) -> bool {
        self.running && self.report.as_ref().is_some_and(|r| !r.loading)
    }
}
