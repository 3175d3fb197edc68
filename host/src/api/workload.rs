//! The Kubernetes-only parts of `KvCluster.spec`: storage, authentication, TLS, Services and
//! the PodDisruptionBudget. The local platform ignores them.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// A PersistentVolumeClaim template: one volume per member, mounted as the data directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Requested size of each member's volume, e.g. `10Gi`.
    pub size: Quantity,
    /// StorageClass of the volumes; the cluster's default class when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Access modes of the volumes; `ReadWriteOnce` when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_modes: Vec<AccessMode>,
}

/// A PersistentVolume access mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum AccessMode {
    ReadWriteOnce,
    ReadWriteOncePod,
    ReadOnlyMany,
    ReadWriteMany,
}

impl AccessMode {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessMode::ReadWriteOnce => "ReadWriteOnce",
            AccessMode::ReadWriteOncePod => "ReadWriteOncePod",
            AccessMode::ReadOnlyMany => "ReadOnlyMany",
            AccessMode::ReadWriteMany => "ReadWriteMany",
        }
    }
}

/// Authentication: a password (`requirepass`, also used by replicas as `masterauth`) and/or an
/// ACL file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.passwordSecret) || has(self.aclSecret)").message(
    "auth needs passwordSecret, aclSecret or both"
))]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// The Secret key holding the password of the `default` user. Members use it to
    /// authenticate to their primary too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<SecretKeyRef>,
    /// The Secret key holding an ACL file (`aclfile`), mounted read-only into each member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl_secret: Option<SecretKeyRef>,
}

/// One key of a Secret in the KvCluster's namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key inside the Secret.
    #[schemars(length(min = 1))]
    pub key: String,
}

/// TLS for client and replication connections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// A Secret of type `kubernetes.io/tls` with `tls.crt`, `tls.key` and `ca.crt`; members
    /// serve TLS only and replicate over TLS.
    #[schemars(length(min = 1))]
    pub secret_name: String,
}

/// How clients reach the members.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("!self.perPod || self.type != 'Headless'").message(
    "service.perPod needs a ClusterIP, NodePort or LoadBalancer type: with Headless every pod \
     already has a DNS name through the headless Service"
))]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Also create one Service per member pod, e.g. to reach each member from outside the
    /// cluster with `type: LoadBalancer`.
    #[serde(default)]
    pub per_pod: bool,
    /// Type of the `<name>-primary`, `<name>-replicas` and per-pod Services. `Headless`
    /// makes them headless (`clusterIP: None`); switching to or from `Headless` recreates
    /// them, since a Service's cluster IP cannot change.
    #[serde(default, rename = "type")]
    pub service_type: ServiceType,
}

impl ServiceSpec {
    pub(super) fn is_default(&self) -> bool {
        *self == ServiceSpec::default()
    }
}

/// A Service type, plus `Headless` (a ClusterIP Service without a cluster IP).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
    Headless,
}

/// The PodDisruptionBudget of each shard, limiting voluntary evictions (node drains).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PdbSpec {
    /// Create a PodDisruptionBudget per shard.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Members of a shard that may be evicted at the same time. kvpilot itself never has more
    /// than one member of a shard in flight.
    #[serde(default = "default_max_unavailable")]
    #[schemars(range(min = 1))]
    pub max_unavailable: u32,
}

impl Default for PdbSpec {
    fn default() -> Self {
        PdbSpec {
            enabled: true,
            max_unavailable: default_max_unavailable(),
        }
    }
}

impl PdbSpec {
    pub(super) fn is_default(&self) -> bool {
        *self == PdbSpec::default()
    }
}

fn default_true() -> bool {
    true
}

fn default_max_unavailable() -> u32 {
    1
}
