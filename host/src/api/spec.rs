//! `KvCluster.spec`: the same shape on every platform, so a local spec file can be copied into
//! a Kubernetes manifest unchanged.

use crate::policy::{FailurePolicy, Hook};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A `KvCluster` manifest as read from a file (`apiVersion`, `kind`, `metadata`, `spec`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KvClusterManifest {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: KvClusterSpec,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Metadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// The desired state of one replication group (or, later, a sharded cluster).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KvClusterSpec {
    pub engine: EngineSpec,
    /// Replicas per shard, not counting the primary.
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    /// Number of shards; only 1 (plain replication) is accepted until cluster mode exists.
    #[serde(default = "default_shards")]
    pub shards: u32,
    /// Server settings applied to every member (`CONFIG SET` names and values).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    #[serde(default)]
    pub rollout: RolloutSpec,
    #[serde(default)]
    pub policies: PoliciesSpec,
}

fn default_replicas() -> u32 {
    2
}

fn default_shards() -> u32 {
    1
}

/// Which datastore runs, and which build of it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EngineSpec {
    pub kind: kvpilot_sdk::Engine,
    /// Container image (Kubernetes). On the local platform, an optional path to the server
    /// binary; by default `valkey-server` / `redis-server` from `PATH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Declared engine version, e.g. `8.0`; part of the desired revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// How planned rollouts behave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// Server-side timeout of a graceful handover (`FAILOVER … TIMEOUT`).
    #[serde(default = "default_handover_timeout")]
    pub handover_timeout_seconds: u32,
    /// A replica is in sync when its lag is at most this many bytes.
    #[serde(default = "default_max_lag")]
    pub max_lag_bytes: u64,
}

impl Default for RolloutSpec {
    fn default() -> Self {
        RolloutSpec {
            handover_timeout_seconds: default_handover_timeout(),
            max_lag_bytes: default_max_lag(),
        }
    }
}

fn default_handover_timeout() -> u32 {
    10
}

fn default_max_lag() -> u64 {
    1024 * 1024
}

/// Which plugin answers each hook.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoliciesSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_selection: Option<PolicyRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_schedule: Option<PolicyRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_order: Option<PolicyRef>,
}

impl PoliciesSpec {
    /// The settings for `hook`, defaulting to its builtin with `{}` and `Fail`.
    pub fn for_hook(&self, hook: Hook) -> PolicyRef {
        let configured = match hook {
            Hook::ReplicaSelection => &self.replica_selection,
            Hook::SnapshotSchedule => &self.snapshot_schedule,
            Hook::RolloutOrder => &self.rollout_order,
        };
        configured.clone().unwrap_or_else(|| PolicyRef {
            plugin: format!("builtin:{}", hook.default_builtin()),
            config: None,
            failure_policy: FailurePolicy::Fail,
        })
    }
}

/// One hook's plugin choice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRef {
    /// `builtin:NAME`, the name of a `PolicyPlugin`, or (local platform) a path to a `.wasm` file.
    pub plugin: String,
    /// Plugin settings, handed to the plugin as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
    #[serde(default)]
    pub failure_policy: FailurePolicy,
}

impl PolicyRef {
    /// The config as the JSON text the plugin receives (`{}` when none).
    pub fn config_json(&self) -> String {
        match &self.config {
            Some(v) => v.to_string(),
            None => "{}".to_string(),
        }
    }
}
