//! `Observed`: everything `decide` may look at, as plain data. Built by [`super::collect`] on a
//! real platform and by hand in tests.

use kvpilot_sdk::{Engine, Role};
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
    /// Keys in every database (`INFO keyspace`).
    pub keys: u64,
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

impl ObservedMember {
    /// The member answered and reported `role`.
    pub fn is(&self, role: Role) -> bool {
        self.report.as_ref().is_some_and(|r| r.role == role)
    }

    pub fn on_revision(&self, desired: &str) -> bool {
        self.revision.as_deref() == Some(desired)
    }

    pub fn holds_data(&self) -> bool {
        self.report.as_ref().is_some_and(|r| r.keys > 0)
    }

    /// Running, answering and not loading.
    pub fn ready(&self) -> bool {
        self.running && self.report.as_ref().is_some_and(|r| !r.loading)
    }
}
