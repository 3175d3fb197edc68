//! Plain Rust mirrors of the records in `wit/0.1.0/policy.wit`.
//!
//! The host builds these from what it observed, the plugins receive them (converted from the
//! WIT bindings), and `kvpilot policy run --input` reads them as JSON. JSON field and variant
//! names are the WIT names (kebab-case), so the WIT file is the reference for both.

use crate::prelude::*;
use serde::{Deserialize, Deserializer, Serialize};

/// The replication role a member reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Primary,
    Replica,
    #[default]
    Unknown,
}

/// The datastore dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Engine {
    #[default]
    Valkey,
    Redis,
    Dragonfly,
}

/// One datastore process.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub struct Member {
    pub name: String,
    #[serde(default)]
    pub shard: u32,
    #[serde(default)]
    pub ordinal: u32,
    #[serde(default)]
    pub role: Role,
    #[serde(default)]
    pub ready: bool,
    #[serde(default)]
    pub on_desired_revision: bool,
    #[serde(default)]
    pub link_up: bool,
    #[serde(default)]
    pub syncing: bool,
    #[serde(default)]
    pub offset: u64,
    #[serde(default)]
    pub lag_bytes: u64,
    #[serde(default)]
    pub keys: u64,
    // Written even when `None`: `kvpilot policy run` checks an input's field names against
    // the request as written back, so every field must appear.
    #[serde(default)]
    pub zone: Option<String>,
    #[serde(default)]
    pub node: Option<String>,
}

impl Member {
    /// A replica that is proven in sync: link up, not loading or syncing, lag within `max_lag`.
    pub fn in_sync(&self, max_lag: u64) -> bool {
        self.ready && self.link_up && !self.syncing && self.lag_bytes <= max_lag
    }

    /// The member holds no data.
    pub fn is_empty(&self) -> bool {
        self.keys == 0
    }
}

/// What the plugin is deciding for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub struct Cluster {
    pub name: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub engine: Engine,
    #[serde(default)]
    pub engine_version: String,
    #[serde(default = "one")]
    pub shards: u32,
    #[serde(default)]
    pub replicas_per_shard: u32,
}

fn one() -> u32 {
    1
}

/// Plugin metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub description: String,
}

/// Why a new primary is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SelectionReason {
    PlannedHandover,
    PrimaryLost,
    PrimaryEmpty,
}

/// Input of the replica-selection hook.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SelectionRequest {
    pub reason: SelectionReason,
    pub cluster: Cluster,
    #[serde(default)]
    pub primary: Option<Member>,
    pub candidates: Vec<Member>,
    #[serde(default = "empty_config", deserialize_with = "config_text")]
    pub config: String,
}

/// Answer of the replica-selection hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Selection {
    Promote(String),
    Wait(String),
}

/// Which members snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SnapshotMode {
    All,
    PrimaryOnly,
    #[default]
    ReplicasOnly,
}

/// Input of the snapshot-schedule hook.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ScheduleRequest {
    pub mode: SnapshotMode,
    pub cluster: Cluster,
    pub schedule: String,
    #[serde(default)]
    pub stagger_minutes: u32,
    pub members: Vec<Member>,
    #[serde(default = "empty_config", deserialize_with = "config_text")]
    pub config: String,
}

/// One member's snapshot schedule; `cron: None` means the member does not snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MemberSchedule {
    pub member: String,
    pub cron: Option<String>,
}

/// Input of the rollout-order hook (one shard).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RolloutRequest {
    pub cluster: Cluster,
    pub members: Vec<Member>,
    #[serde(default = "one")]
    pub max_in_flight: u32,
    #[serde(default)]
    pub max_lag_bytes: u64,
    #[serde(default = "empty_config", deserialize_with = "config_text")]
    pub config: String,
}

/// Answer of the rollout-order hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    Restart(String),
    Handover { from: String, to: String },
    Wait(String),
    Done,
}

/// `{}`: the config a hook gets when the cluster gives none.
pub fn empty_config() -> String {
    "{}".to_string()
}

/// Accept `config` as JSON text (as in WIT) or as an inline JSON object (handier in input files).
fn config_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    Ok(match value {
        serde_json::Value::String(s) => s,
        serde_json::Value::Null => empty_config(),
        other => other.to_string(),
    })
}
