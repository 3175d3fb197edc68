//! `KvCluster.spec`: the same shape on every platform, so a local spec file can be copied into
//! a Kubernetes manifest unchanged. The Kubernetes-only settings (resources, storage, auth, TLS,
//! Services, PDB) live in [`super::workload`] and are ignored by the local platform.

use super::schema;
use super::snapshots::SnapshotSpec;
use super::status::KvClusterStatus;
use super::workload::{AuthSpec, PdbSpec, ServiceSpec, StorageSpec, TlsSpec};
use crate::policy::{FailurePolicy, Hook};
use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::{CustomResource, KubeSchema};
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
    /// Read by the local platform only: `zone.local.kvpilot.dev/<member>` and
    /// `node.local.kvpilot.dev/<member>` give a local member the zone and node a topology-aware
    /// plugin sees (on Kubernetes they come from the pod's node). Annotations keep the
    /// manifest valid for `kubectl apply`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The desired state of one replication group (or, later, a sharded cluster).
#[derive(CustomResource, KubeSchema, Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
// Each printer column repeats `type_ = "string"`, which clippy reads as a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[kube(
    group = "kvpilot.dev",
    version = "v1alpha1",
    kind = "KvCluster",
    namespaced,
    shortname = "kvc",
    category = "kvpilot",
    status = "KvClusterStatus",
    derive = "PartialEq",
    doc = "A Redis-protocol datastore (Valkey, Redis, Dragonfly) run by kvpilot: one primary and \
           its replicas per shard, rolled out and failed over safely, with WebAssembly policy \
           plugins answering the judgement calls.",
    printcolumn(
        name = "Engine",
        type_ = "string",
        json_path = ".spec.engine.kind",
        description = "The datastore engine"
    ),
    printcolumn(
        name = "Primary",
        type_ = "string",
        json_path = ".status.primary",
        description = "The member that is primary"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether every member is ready and settled"
    ),
    printcolumn(
        name = "Shards",
        type_ = "string",
        json_path = ".status.cluster.shardsReady",
        description = "Cluster mode: shards ready / shards"
    ),
    printcolumn(
        name = "Revision",
        type_ = "string",
        json_path = ".status.currentRevision",
        description = "The revision the members run"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
// Cluster mode (shards > 1) runs Valkey or Redis Cluster; Dragonfly's cluster is not driven
// (validate_spec says the same, naming `shards`).
#[x_kube(validation = Rule::new("self.shards == 1 || self.engine.kind != 'dragonfly'").message(
    "shards > 1 (cluster mode) runs Valkey or Redis Cluster: Dragonfly's cluster is not driven by kvpilot yet, use shards: 1"
).field_path(".shards").reason(Reason::FieldValueInvalid))]
#[x_kube(validation = Rule::new(
    "!has(self.snapshots) || !has(self.snapshots.mode) || self.snapshots.mode != 'replicasOnly' || self.replicas >= 2"
).message("snapshots.mode replicasOnly needs at least 2 replicas").field_path(".snapshots.mode").reason(Reason::FieldValueInvalid))]
#[x_kube(validation = Rule::new(
    "!has(self.snapshots) || !has(self.snapshots.location) || self.snapshots.location != 'persistentVolume' || has(self.storage)"
).message("snapshots.location persistentVolume needs spec.storage").field_path(".snapshots.location").reason(Reason::FieldValueInvalid))]
#[serde(rename_all = "camelCase")]
pub struct KvClusterSpec {
    /// Which datastore runs, and which build of it.
    pub engine: EngineSpec,
    /// Replicas per shard, not counting the primary: 0 to 8.
    #[serde(default = "default_replicas")]
    #[schemars(range(max = 8))]
    pub replicas: u32,
    /// Number of shards, 1 to 100. More than 1 is cluster mode (Valkey/Redis Cluster, 16384
    /// slots in balanced ranges; not Dragonfly). It is fixed once members run: changing it on
    /// a live cluster (resharding) is not supported yet and is refused with a condition.
    #[serde(default = "default_shards")]
    #[schemars(range(min = 1, max = 100))]
    pub shards: u32,
    /// Server settings applied to every member (`CONFIG SET` names and values). Settings
    /// kvpilot manages (port, bind, dir, replicaof, requirepass, ...) and settings that would
    /// undermine a safety rule (replica-read-only, repl-diskless-sync-delay, rename-command,
    /// the announce addresses, ...) are refused, naming the key; a value is one line of at
    /// most 4096 bytes. Changing a value rolls the members out, one at a time.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    /// How planned rollouts hand over the primary.
    #[serde(default)]
    pub rollout: RolloutSpec,
    /// How fast a lost primary is detected: probe interval, probe timeout and the number of
    /// failed probes before a failover. Unset: 200 ms, 1000 ms, 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_detection: Option<super::FailureDetectionSpec>,
    /// Which plugin answers each hook; unset hooks use their builtin default with `Fail`.
    #[serde(default)]
    pub policies: PoliciesSpec,
    /// Snapshots scheduled by the snapshot-schedule plugin and taken by the operator
    /// (`BGSAVE`); the engine's own `save` schedule is turned off. Unset: no snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshots: Option<SnapshotSpec>,
    /// CPU and memory of each member's container (Kubernetes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// A persistent volume per member (Kubernetes only); without it, members keep their data
    /// in an `emptyDir` and a restarted member comes back empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSpec>,
    /// Client and replication authentication from Secrets (Kubernetes only). With
    /// `passwordSecret` alone it is the `default` user's password (`requirepass`, and
    /// `masterauth` for replicas). With `aclSecret` the ACL file defines the users and
    /// replicas and the operator authenticate as `username` with the password from
    /// `passwordSecret`. Changing the password Secret moves the running members to the new
    /// password (see `passwordSecret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,
    /// TLS for clients and replication from a Secret (Kubernetes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// How clients reach the members (Kubernetes only).
    #[serde(default, skip_serializing_if = "ServiceSpec::is_default")]
    pub service: ServiceSpec,
    /// The PodDisruptionBudget of each shard (Kubernetes only).
    #[serde(default, skip_serializing_if = "PdbSpec::is_default")]
    pub pdb: PdbSpec,
}

fn default_replicas() -> u32 {
    2
}

fn default_shards() -> u32 {
    1
}

/// Which datastore runs, and which build of it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EngineSpec {
    /// The datastore dialect: `valkey`, `redis` or `dragonfly` (experimental).
    #[schemars(schema_with = "schema::engine_kind")]
    pub kind: kvpilot_sdk::Engine,
    /// Container image (Kubernetes); by default the engine's official image for `version`.
    /// On the local platform, an optional path to the server binary; by default
    /// `valkey-server` / `redis-server` from `PATH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Declared engine version, e.g. `8.0`; part of the desired revision. Settings that only
    /// newer engines accept are rendered from this version, or else from the image tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// How planned rollouts behave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("self.handoverTimeoutSeconds >= 1").message(
    "handoverTimeoutSeconds must be at least 1 second"
).field_path(".handoverTimeoutSeconds").reason(Reason::FieldValueInvalid))]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// Server-side timeout of a graceful handover (`FAILOVER … TIMEOUT`), in seconds. Pods
    /// get a termination grace period longer than this.
    #[serde(default = "default_handover_timeout")]
    pub handover_timeout_seconds: u32,
    /// A replica is in sync when its lag is at most this many bytes.
    #[serde(default = "default_max_lag")]
    pub max_lag_bytes: u64,
    /// Cluster mode: how many shards a rollout may have in flight at once, 1 to 50. Unset: 1.
    /// Never more than a minority of the primaries whatever this says (a handover needs a
    /// majority of primaries to vote), and always one member per shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 50))]
    pub max_shards_in_flight: Option<u32>,
}

impl Default for RolloutSpec {
    fn default() -> Self {
        RolloutSpec {
            handover_timeout_seconds: default_handover_timeout(),
            max_lag_bytes: default_max_lag(),
            max_shards_in_flight: None,
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
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoliciesSpec {
    /// Chooses the replica to promote (failover and handover); default
    /// `builtin:most-caught-up`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_selection: Option<PolicyRef>,
    /// Chooses when each member snapshots; default `builtin:stagger`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_schedule: Option<PolicyRef>,
    /// Chooses the order stale members are restarted in; default `builtin:replicas-first`.
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRef {
    /// `builtin:NAME`, the name of a `PolicyPlugin`, or (local platform) a path to a `.wasm` file.
    #[schemars(length(min = 1))]
    pub plugin: String,
    /// Plugin settings, handed to the plugin as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::free_object")]
    pub config: Option<serde_json::Value>,
    /// What happens when the plugin fails (trap, timeout, invalid answer): `Fail` takes no
    /// action and sets `PolicyFailed`; `Fallback` uses the builtin default and says so in an
    /// event.
    #[serde(default)]
    #[schemars(schema_with = "schema::failure_policy")]
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
