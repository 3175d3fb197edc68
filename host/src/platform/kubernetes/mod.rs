//! The Kubernetes platform's desired objects: pure functions from a `KvCluster` to the
//! StatefulSets, Services, PodDisruptionBudgets and ConfigMaps that run it. The controller
//! applies them (server-side apply, one field manager); nothing here does I/O.
//!
//! - [`statefulset`]: one StatefulSet per shard (`OnDelete`: the reconciler restarts pods).
//! - [`services`]: headless, `-primary`, `-replicas` (cluster mode: `-seeds`) and per-pod
//!   Services.
//! - [`pdb`]: one PodDisruptionBudget per shard.
//! - [`config`]: the member configuration, rendered into a ConfigMap.
//! - [`gating`]: settings only some engine versions accept.
//!
//! The operator (I/O): [`platform`] (the `Platform` over pods), [`apply`], [`policies`]
//! (PolicyPlugin loading), [`access`] (the Secrets members are reached with), [`controller`]
//! and the watch events that trigger it ([`triggers`]),
//! [`leader`] (Lease) and [`metrics`].

pub mod access;
pub mod apply;
pub mod config;
pub mod controller;
pub mod credentials;
pub mod gating;
pub mod leader;
pub mod metrics;
pub mod pdb;
pub mod platform;
pub mod policies;
pub mod services;
pub mod statefulset;
pub mod triggers;

use crate::api::KvCluster;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;

/// Label: the KvCluster a pod or object belongs to.
pub const LABEL_CLUSTER: &str = "kvpilot.dev/cluster";
/// Label: the shard (StatefulSet) a pod belongs to.
pub const LABEL_SHARD: &str = "kvpilot.dev/shard";
/// Label: `primary` or `replica`, kept on pods by the reconciler; the `-primary` and
/// `-replicas` Services select on it.
pub const LABEL_ROLE: &str = "kvpilot.dev/role";
/// Role label value of the primary.
pub const ROLE_PRIMARY: &str = "primary";
/// Role label value of a replica (every pod starts as one).
pub const ROLE_REPLICA: &str = "replica";
/// Label the StatefulSet controller puts on each pod: its name.
pub const LABEL_POD_NAME: &str = "statefulset.kubernetes.io/pod-name";

/// The longest KvCluster name whose generated names stay within Kubernetes limits:
/// `<name>-s<shard>-<ordinal>` pod names carry a `controller-revision-hash` label value of the
/// StatefulSet name plus 11 characters, which must fit in 63.
pub const MAX_NAME_LEN: usize = 40;

/// Why the objects of a KvCluster cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("KvCluster {0} has no namespace")]
    NoNamespace(String),
    #[error("KvCluster {0} has no uid yet (not read from the API server)")]
    NoUid(String),
    #[error("KvCluster name {name:?} is longer than {MAX_NAME_LEN} characters")]
    NameTooLong { name: String },
    #[error("KvCluster {name}: {message}")]
    Invalid { name: String, message: String },
}

/// Every object one KvCluster needs, for one apply pass.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredObjects {
    pub config_map: ConfigMap,
    pub statefulsets: Vec<StatefulSet>,
    pub services: Vec<Service>,
    pub pdbs: Vec<PodDisruptionBudget>,
}

/// Builds every object of `kc`.
pub fn desired_objects(kc: &KvCluster) -> Result<DesiredObjects, BuildError> {
    crate::api::validate_spec(&kc.spec).map_err(|e| BuildError::Invalid {
        name: kc.name_any(),
        message: e.to_string(),
    })?;
    if let Some(message) = gating::cluster_mode_refusal(&kc.spec) {
        return Err(BuildError::Invalid {
            name: kc.name_any(),
            message,
        });
    }
    let rendered = config::render(kc)?;
    let statefulsets = (0..kc.spec.shards)
        .map(|shard| statefulset::statefulset(kc, shard, &rendered))
        .collect::<Result<Vec<_>, _>>()?;
    let pdbs = (0..kc.spec.shards)
        .map(|shard| pdb::pdb(kc, shard))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect();
    Ok(DesiredObjects {
        config_map: config::config_map(kc, &rendered)?,
        statefulsets,
        services: services::services(kc)?,
        pdbs,
    })
}

/// The name of shard `shard`'s StatefulSet (and PDB): `<name>-s<shard>`.
pub fn shard_name(cluster: &str, shard: u32) -> String {
    format!("{cluster}-s{shard}")
}

/// The name of member `ordinal` of shard `shard`: the StatefulSet's pod name.
pub fn member_name(cluster: &str, shard: u32, ordinal: u32) -> String {
    format!("{}-{ordinal}", shard_name(cluster, shard))
}

/// Labels every object of the cluster carries.
pub fn cluster_labels(kc: &KvCluster) -> BTreeMap<String, String> {
    let engine = match kc.spec.engine.kind {
        kvpilot_sdk::Engine::Valkey => "valkey",
        kvpilot_sdk::Engine::Redis => "redis",
        kvpilot_sdk::Engine::Dragonfly => "dragonfly",
    };
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), engine.to_string()),
        ("app.kubernetes.io/instance".to_string(), kc.name_any()),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "kvpilot".to_string(),
        ),
        (LABEL_CLUSTER.to_string(), kc.name_any()),
    ])
}

/// The selector of every member of the cluster.
pub fn cluster_selector(kc: &KvCluster) -> BTreeMap<String, String> {
    BTreeMap::from([(LABEL_CLUSTER.to_string(), kc.name_any())])
}

/// The selector of one shard's members.
pub fn shard_selector(kc: &KvCluster, shard: u32) -> BTreeMap<String, String> {
    let mut s = cluster_selector(kc);
    s.insert(LABEL_SHARD.to_string(), shard.to_string());
    s
}

/// Metadata of an object owned by `kc`: its namespace, the cluster labels, and a controller
/// owner reference so Kubernetes deletes it with the KvCluster.
pub fn owned_meta(
    kc: &KvCluster,
    name: String,
    extra_labels: BTreeMap<String, String>,
) -> Result<ObjectMeta, BuildError> {
    let mut labels = cluster_labels(kc);
    labels.extend(extra_labels);
    Ok(ObjectMeta {
        name: Some(name),
        namespace: Some(namespace(kc)?),
        labels: Some(labels),
        owner_references: Some(vec![owner_reference(kc)?]),
        ..Default::default()
    })
}

/// The KvCluster's namespace (a namespaced resource always has one once stored).
pub fn namespace(kc: &KvCluster) -> Result<String, BuildError> {
    kc.namespace()
        .ok_or_else(|| BuildError::NoNamespace(kc.name_any()))
}

fn owner_reference(kc: &KvCluster) -> Result<OwnerReference, BuildError> {
    let name = kc.name_any();
    if name.len() > MAX_NAME_LEN {
        return Err(BuildError::NameTooLong { name });
    }
    kc.controller_owner_ref(&()).ok_or(BuildError::NoUid(name))
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! A stored KvCluster (namespace and uid set) for the builders' tests.

    use crate::api::{KvCluster, KvClusterSpec};

    /// `examples/kvcluster.yaml`-like cluster named `cache` in namespace `shop`.
    pub fn cluster(spec: KvClusterSpec) -> KvCluster {
        let mut kc = KvCluster::new("cache", spec);
        kc.metadata.namespace = Some("shop".into());
        kc.metadata.uid = Some("8e1c6a8e-0000-4000-8000-000000000001".into());
        kc
    }

    pub fn valkey(version: &str) -> KvClusterSpec {
        let mut spec: KvClusterSpec = serde_norway::from_str(&format!(
            "engine: {{kind: valkey, version: \"{version}\"}}\nreplicas: 2\n"
        ))
        .unwrap();
        spec.config
            .insert("maxmemory-policy".into(), "noeviction".into());
        spec
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    #[test]
    fn every_object_is_owned_and_labelled() {
        let kc = cluster(valkey("8.0"));
        let objects = desired_objects(&kc).unwrap();
        let mut metas: Vec<&ObjectMeta> = vec![&objects.config_map.metadata];
        metas.extend(objects.statefulsets.iter().map(|o| &o.metadata));
        metas.extend(objects.services.iter().map(|o| &o.metadata));
        metas.extend(objects.pdbs.iter().map(|o| &o.metadata));
        assert_eq!(metas.len(), 1 + 1 + 3 + 1);
        for meta in metas {
            assert_eq!(meta.namespace.as_deref(), Some("shop"));
            assert_eq!(meta.labels.as_ref().unwrap()[LABEL_CLUSTER], "cache");
            let owner = &meta.owner_references.as_ref().unwrap()[0];
            assert_eq!(owner.kind, "KvCluster");
            assert_eq!(owner.api_version, "kvpilot.dev/v1alpha1");
            assert_eq!(owner.controller, Some(true));
            assert_eq!(owner.uid, "8e1c6a8e-0000-4000-8000-000000000001");
        }
    }

    #[test]
    fn cluster_mode_builds_a_statefulset_and_pdb_per_shard() {
        let mut kc = cluster(valkey("8.0"));
        kc.spec.shards = 3;
        kc.spec.replicas = 1;
        let objects = desired_objects(&kc).unwrap();
        let names = |metas: Vec<&ObjectMeta>| -> Vec<String> {
            metas.iter().map(|m| m.name.clone().unwrap()).collect()
        };
        assert_eq!(
            names(objects.statefulsets.iter().map(|o| &o.metadata).collect()),
            ["cache-s0", "cache-s1", "cache-s2"]
        );
        assert_eq!(
            names(objects.pdbs.iter().map(|o| &o.metadata).collect()),
            ["cache-s0", "cache-s1", "cache-s2"]
        );
        for pdb in &objects.pdbs {
            let spec = pdb.spec.as_ref().unwrap();
            assert_eq!(
                spec.max_unavailable,
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
            );
        }
        for (shard, sts) in objects.statefulsets.iter().enumerate() {
            let spec = sts.spec.as_ref().unwrap();
            assert_eq!(spec.replicas, Some(2));
            assert_eq!(
                spec.selector.match_labels.as_ref().unwrap()[LABEL_SHARD],
                shard.to_string()
            );
        }
        // No primary endpoint in cluster mode: the seeds Service replaces it.
        assert_eq!(
            names(objects.services.iter().map(|o| &o.metadata).collect()),
            ["cache-headless", "cache-seeds"]
        );
    }

    #[test]
    fn cluster_mode_is_gated_on_the_engine_version() {
        let mut kc = cluster(valkey("6.2"));
        kc.spec.engine.kind = kvpilot_sdk::Engine::Redis;
        kc.spec.shards = 3;
        let e = desired_objects(&kc).unwrap_err().to_string();
        assert!(
            e.contains("engine.version") && e.contains("Redis 7.0"),
            "{e}"
        );
        kc.spec.engine.version = Some("7.0".into());
        desired_objects(&kc).unwrap();
        // One shard is replication mode, whatever the version.
        kc.spec.engine.version = Some("6.2".into());
        kc.spec.shards = 1;
        desired_objects(&kc).unwrap();
    }

    #[test]
    fn a_cluster_not_read_from_the_api_is_refused() {
        let mut kc = cluster(valkey("8.0"));
        kc.metadata.uid = None;
        assert_eq!(
            desired_objects(&kc).unwrap_err(),
            BuildError::NoUid("cache".into())
        );
        let mut kc = cluster(valkey("8.0"));
        kc.metadata.namespace = None;
        assert!(matches!(
            desired_objects(&kc).unwrap_err(),
            BuildError::NoNamespace(_)
        ));
    }

    #[test]
    fn long_names_are_refused() {
        let mut kc = cluster(valkey("8.0"));
        kc.metadata.name = Some("x".repeat(MAX_NAME_LEN + 1));
        assert!(matches!(
            desired_objects(&kc).unwrap_err(),
            BuildError::NameTooLong { .. }
        ));
    }
}
