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

/// Authentication of clients, of replicas to their primary, and of the operator:
/// - `passwordSecret` alone: the password of the `default` user (`requirepass`); replicas
///   use it as `masterauth`, the operator sends `AUTH password`.
/// - `aclSecret` + `passwordSecret` (+ `username`): the ACL file defines the users and no
///   `requirepass` is set; replicas (`masteruser`/`masterauth`) and the operator authenticate
///   as `username` with the password from `passwordSecret`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.passwordSecret)").message(
    "auth needs passwordSecret: the password of the default user, or with aclSecret the password \
     of auth.username, which replicas and the operator authenticate with"
).reason(Reason::FieldValueRequired))]
#[x_kube(validation = Rule::new("!has(self.username) || has(self.aclSecret)").message(
    "auth.username needs auth.aclSecret: without an ACL file the only user is default"
).field_path(".username").reason(Reason::FieldValueInvalid))]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// The Secret key holding the password replicas and the operator authenticate with: the
    /// `default` user's (`requirepass`), or with `aclSecret` that of `username`. Required.
    /// It is read on every reconcile. To rotate it, change the Secret: the operator moves each
    /// running member to the new password over its still-authenticated connection (`CONFIG
    /// SET masterauth`, then `requirepass`; with `aclSecret`, `ACL SETUSER username >new
    /// <old`, then `masterauth`) and reconnects with it; pods started later read the new
    /// Secret. With `aclSecret`, also put the new password into the ACL file, which restarted
    /// members load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<SecretKeyRef>,
    /// The Secret key holding an ACL file (`aclfile`), mounted read-only into each member
    /// (Valkey and Redis). It defines the users; `requirepass` is not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl_secret: Option<SecretKeyRef>,
    /// With `aclSecret`: the ACL user replicas (`masteruser`) and the operator authenticate
    /// as; `default` when unset. The ACL file must define it with the password from
    /// `passwordSecret` and these commands (what the operator sends, and what a replica sends
    /// its primary): `+@connection +info +role +dbsize +replicaof +failover +client|kill
    /// +config|get +config|set +acl|setuser +bgsave +lastsave +psync +replconf`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^\S+$"))]
    pub username: Option<String>,
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
    /// A Secret (type `kubernetes.io/tls`, e.g. from cert-manager) with `tls.crt`, `tls.key`
    /// and `ca.crt`, in the KvCluster's namespace. Members serve TLS only (`port 0`,
    /// `tls-port 6379`) and replicate over TLS, presenting `tls.crt` to their primary.
    /// The operator dials pod IPs and verifies each member's certificate against `ca.crt`
    /// and the pod's DNS name `<pod>.<name>-headless.<namespace>.svc`, so the certificate
    /// must carry that name as a DNS SAN; a wildcard `*.<name>-headless.<namespace>.svc`
    /// covers every member. The Secret is read on every reconcile, so a renewed certificate
    /// is used for new operator connections at once (members load theirs when they restart).
    #[schemars(length(min = 1))]
    pub secret_name: String,
    /// Whether members demand a client certificate (`tls-auth-clients`): `Optional` (the
    /// default) verifies one when presented; `Required` refuses clients without one. With
    /// `Required` the operator presents the Secret's `tls.crt`/`tls.key`, so that certificate
    /// must also allow client authentication (no extended key usage, or `clientAuth`), as it
    /// must anyway for replication.
    #[serde(default)]
    pub client_auth: TlsClientAuth,
}

/// Whether members demand a client certificate.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum TlsClientAuth {
    /// A presented certificate is verified; none is fine (`tls-auth-clients optional`).
    #[default]
    Optional,
    /// Clients must present a certificate from the CA (`tls-auth-clients yes`).
    Required,
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
