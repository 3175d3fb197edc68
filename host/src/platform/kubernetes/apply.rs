//! Applies a KvCluster's [`DesiredObjects`]: server-side apply under one field manager,
//! recreating Services that switch between headless and ClusterIP, keeping the live
//! `volumeClaimTemplates` of a StatefulSet whose storage changed (they are immutable), and
//! deleting what the cluster no longer needs (per-pod Services turned off, ConfigMaps of old
//! revisions).
//!
//! One failing object does not stop the others: every error is collected, and everything
//! done besides plain applies is reported as a [`Change`], so the controller can say it in an
//! Event.

use super::statefulset::{CONFIG_VOLUME, DATA_VOLUME};
use super::{DesiredObjects, LABEL_CLUSTER, services};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    ConfigMap, EmptyDirVolumeSource, ObjectReference, PersistentVolumeClaim, Pod, Service, Volume,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeSet;
use std::fmt::Debug;

/// The field manager of every object kvpilot applies.
pub const FIELD_MANAGER: &str = "kvpilot";

/// A failed API call, naming the object.
#[derive(Debug, thiserror::Error)]
#[error("{verb} {kind} {namespace}/{name}: {source}")]
pub struct ApplyError {
    pub verb: &'static str,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    #[source]
    pub source: kube::Error,
}

/// Something an apply pass did besides applying, for an Event about the KvCluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// `ServiceRecreated`, `Pruned` or `ConfigMapCollected`.
    pub reason: &'static str,
    pub message: String,
    /// The object it was done to.
    pub object: ObjectReference,
}

/// A StatefulSet whose `spec.storage` change could not be applied: its live
/// `volumeClaimTemplates` were kept (they cannot change on a live StatefulSet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageDrift {
    pub statefulset: String,
    /// The volumes the StatefulSet has, and the ones the spec asks for, in words.
    pub live: String,
    pub wanted: String,
}

impl StorageDrift {
    /// What happened and what to do about it.
    pub fn message(&self) -> String {
        let sts = &self.statefulset;
        format!(
            "spec.storage asks for {wanted}, but StatefulSet {sts} has {live}: a live \
             StatefulSet's volumeClaimTemplates cannot change, so the storage change was not \
             applied (everything else was). To apply it, expand each PVC data-{sts}-N if its \
             StorageClass allows (a size change only), then run `kubectl delete statefulset \
             {sts} --cascade=orphan`: kvpilot recreates the StatefulSet with the new \
             template, the pods and volumes stay, and members that need the new volumes are \
             rolled one at a time. Or set spec.storage back.",
            wanted = self.wanted,
            live = self.live,
        )
    }
}

/// What one apply pass did.
#[derive(Debug, Default)]
pub struct Applied {
    pub changes: Vec<Change>,
    /// Every call that failed; the other objects were still applied.
    pub errors: Vec<ApplyError>,
    pub storage_drift: Vec<StorageDrift>,
}

/// Applies every object of one cluster in `namespace`, then prunes.
pub async fn apply_all(
    client: &Client,
    namespace: &str,
    cluster: &str,
    objects: &DesiredObjects,
) -> Applied {
    let mut out = Applied::default();
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let config_applied = match apply(&configmaps, &objects.config_map).await {
        Ok(_) => true,
        Err(e) => {
            out.errors.push(e);
            false
        }
    };
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    // StatefulSets mount the ConfigMap by name: without it their new pods could not start.
    if config_applied {
        for sts in &objects.statefulsets {
            if let Err(e) = apply_statefulset(&sts_api, sts, namespace, &mut out).await {
                out.errors.push(e);
            }
        }
    }
    let svc_api: Api<Service> = Api::namespaced(client.clone(), namespace);
    for svc in &objects.services {
        if let Err(e) = apply_service(&svc_api, svc, namespace, &mut out).await {
            out.errors.push(e);
        }
    }
    let pdb_api: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), namespace);
    for pdb in &objects.pdbs {
        if let Err(e) = apply(&pdb_api, pdb).await {
            out.errors.push(e);
        }
    }
    let selector = ListParams::default().labels(&format!("{LABEL_CLUSTER}={cluster}"));
    let wanted: BTreeSet<String> = objects.services.iter().map(|s| s.name_any()).collect();
    prune(&svc_api, &selector, &wanted, namespace, &mut out).await;
    let wanted: BTreeSet<String> = objects.pdbs.iter().map(|p| p.name_any()).collect();
    prune(&pdb_api, &selector, &wanted, namespace, &mut out).await;
    collect_config_maps(client, namespace, &selector, objects, &mut out).await;
    out
}

/// Applies `desired`, keeping the live `volumeClaimTemplates` when the storage changed.
async fn apply_statefulset(
    api: &Api<StatefulSet>,
    desired: &StatefulSet,
    namespace: &str,
    out: &mut Applied,
) -> Result<(), ApplyError> {
    let live = api
        .get_opt(&desired.name_any())
        .await
        .map_err(|e| err("get", desired, namespace, e))?;
    let mut applied = desired.clone();
    hold_scale_down(&mut applied, live.as_ref());
    if let Some(live) = &live
        && let Some(drift) = storage_drift(live, desired)
    {
        keep_live_claims(&mut applied, live);
        out.storage_drift.push(drift);
    }
    apply(api, &applied).await.map(drop)
}

/// Keeps a live StatefulSet's size when the spec shrinks it: its controller would delete the
/// pods past the new size at once, the primary among them. The reconciler shrinks it
/// (`Platform::retire`) once no member past the new size is the primary.
fn hold_scale_down(desired: &mut StatefulSet, live: Option<&StatefulSet>) {
    let live = live.and_then(|l| l.spec.as_ref()).and_then(|s| s.replicas);
    if let (Some(spec), Some(live)) = (desired.spec.as_mut(), live)
        && spec.replicas.is_some_and(|want| want < live)
    {
        spec.replicas = Some(live);
    }
}

/// Applies `desired`, first deleting the live Service when `clusterIP` must change.
async fn apply_service(
    api: &Api<Service>,
    desired: &Service,
    namespace: &str,
    out: &mut Applied,
) -> Result<(), ApplyError> {
    let name = desired.name_any();
    if let Some(existing) = api
        .get_opt(&name)
        .await
        .map_err(|e| err("get", desired, namespace, e))?
        && services::must_recreate(&existing, desired)
    {
        tracing::info!(service = %name, "recreating the Service: clusterIP is immutable");
        delete(api, &name, namespace, "Service").await?;
        let (from, to) = if services::is_headless(desired) {
            ("a cluster IP", "headless")
        } else {
            ("headless", "a cluster IP")
        };
        out.changes.push(Change {
            reason: "ServiceRecreated",
            message: format!(
                "Service {name} deleted and created again: it changes from {from} to {to}, \
                 and spec.clusterIP cannot change in place"
            ),
            object: reference(desired),
        });
    }
    apply(api, desired).await.map(drop)
}

/// Deletes the cluster's objects of `api` that are not in `wanted`.
async fn prune<K>(
    api: &Api<K>,
    selector: &ListParams,
    wanted: &BTreeSet<String>,
    namespace: &str,
    out: &mut Applied,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let kind = K::kind(&()).to_string();
    let existing = match api.list(selector).await {
        Ok(list) => list.items,
        Err(e) => {
            out.errors.push(list_err(&kind, namespace, e));
            return;
        }
    };
    for obj in existing.iter().filter(|o| !wanted.contains(&o.name_any())) {
        let name = obj.name_any();
        match delete(api, &name, namespace, &kind).await {
            Ok(()) => out.changes.push(Change {
                reason: "Pruned",
                message: format!("{kind} {name} deleted: the spec no longer asks for it"),
                object: reference(obj),
            }),
            Err(e) => out.errors.push(e),
        }
    }
}

/// Deletes the cluster's ConfigMaps that nothing mounts: not the desired StatefulSets, not the
/// live ones (whose pods the StatefulSet controller may still create), not any pod (of an
/// older revision that has not been restarted yet). When any of that cannot be read, nothing
/// is deleted.
async fn collect_config_maps(
    client: &Client,
    namespace: &str,
    selector: &ListParams,
    objects: &DesiredObjects,
    out: &mut Applied,
) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let (pods, live, existing) = match (
        pods.list(selector).await,
        statefulsets.list(selector).await,
        configmaps.list(selector).await,
    ) {
        (Ok(p), Ok(s), Ok(c)) => (p.items, s.items, c.items),
        (p, s, c) => {
            for (kind, e) in [
                ("Pod", p.err()),
                ("StatefulSet", s.err()),
                ("ConfigMap", c.err()),
            ] {
                if let Some(e) = e {
                    out.errors.push(list_err(kind, namespace, e));
                }
            }
            return;
        }
    };
    let mut used: BTreeSet<String> = BTreeSet::from([objects.config_map.name_any()]);
    let pod_specs = pods.iter().filter_map(|p| p.spec.as_ref());
    let sts_specs = objects
        .statefulsets
        .iter()
        .chain(&live)
        .filter_map(|s| s.spec.as_ref()?.template.spec.as_ref());
    for spec in pod_specs.chain(sts_specs) {
        for v in spec.volumes.iter().flatten() {
            if let Some(cm) = &v.config_map {
                used.insert(cm.name.clone());
            }
        }
    }
    for cm in existing.iter().filter(|c| !used.contains(&c.name_any())) {
        let name = cm.name_any();
        tracing::info!(configmap = %name, "deleting a ConfigMap no revision uses");
        match delete(&configmaps, &name, namespace, "ConfigMap").await {
            Ok(()) => out.changes.push(Change {
                reason: "ConfigMapCollected",
                message: format!(
                    "ConfigMap {name} deleted: no StatefulSet revision or pod mounts it any more"
                ),
                object: reference(cm),
            }),
            Err(e) => out.errors.push(e),
        }
    }
}

/// The shape of a volume claim template kvpilot sets: name, access modes, class and size.
/// Fields the API server defaults (volumeMode, status) are not part of it, and sizes are
/// compared by value (`1Gi` and `1024Mi` are the same request).
#[derive(Debug, PartialEq)]
struct ClaimShape {
    name: String,
    access_modes: Vec<String>,
    storage_class: Option<String>,
    size: Option<String>,
}

fn claim_shapes(sts: &StatefulSet) -> Vec<ClaimShape> {
    let claims = sts
        .spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.as_ref());
    claims
        .into_iter()
        .flatten()
        .map(|c: &PersistentVolumeClaim| {
            let spec = c.spec.as_ref();
            let mut access_modes = spec
                .and_then(|s| s.access_modes.clone())
                .unwrap_or_default();
            access_modes.sort();
            ClaimShape {
                name: c.metadata.name.clone().unwrap_or_default(),
                access_modes,
                storage_class: spec.and_then(|s| s.storage_class_name.clone()),
                size: spec
                    .and_then(|s| s.resources.as_ref())
                    .and_then(|r| r.requests.as_ref())
                    .and_then(|r| r.get("storage"))
                    .map(|q| q.0.clone()),
            }
        })
        .collect()
}

fn same_claims(live: &[ClaimShape], desired: &[ClaimShape]) -> bool {
    live.len() == desired.len()
        && live.iter().zip(desired).all(|(l, d)| {
            l.name == d.name
                && l.access_modes == d.access_modes
                && l.storage_class == d.storage_class
                && same_quantity(l.size.as_deref(), d.size.as_deref())
        })
}

fn same_quantity(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => match (quantity_value(a), quantity_value(b)) {
            (Some(x), Some(y)) => x == y,
            _ => a == b,
        },
        (a, b) => a == b,
    }
}

/// The value of a Kubernetes quantity (`5Gi`, `500M`, `1.5e3`), as the API compares them.
fn quantity_value(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let number: f64 = number.parse().ok()?;
    let binary = |exp: i32| 1024f64.powi(exp);
    let multiplier = match suffix {
        "" => 1.0,
        "Ki" => binary(1),
        "Mi" => binary(2),
        "Gi" => binary(3),
        "Ti" => binary(4),
        "Pi" => binary(5),
        "Ei" => binary(6),
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    Some(number * multiplier)
}

fn describe_claims(claims: &[ClaimShape]) -> String {
    if claims.is_empty() {
        return "no volume (members keep their data in an emptyDir)".into();
    }
    claims
        .iter()
        .map(|c| {
            format!(
                "volume {} of {} ({}, StorageClass {})",
                c.name,
                c.size.as_deref().unwrap_or("unknown size"),
                c.access_modes.join("/"),
                c.storage_class.as_deref().unwrap_or("default")
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The drift between what `live` has and `desired` asks for, if their claim templates differ.
fn storage_drift(live: &StatefulSet, desired: &StatefulSet) -> Option<StorageDrift> {
    let (have, want) = (claim_shapes(live), claim_shapes(desired));
    if same_claims(&have, &want) {
        return None;
    }
    Some(StorageDrift {
        statefulset: desired.name_any(),
        live: describe_claims(&have),
        wanted: describe_claims(&want),
    })
}

/// Makes `desired` carry `live`'s volume claim templates (verbatim, so the apply leaves them
/// as they are), and the data volume the pod template needs with them: an `emptyDir` when
/// the live StatefulSet has no data claim, none when it has one.
fn keep_live_claims(desired: &mut StatefulSet, live: &StatefulSet) {
    let claims = live
        .spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.clone());
    let claims_data = claims
        .iter()
        .flatten()
        .any(|c| c.metadata.name.as_deref() == Some(DATA_VOLUME));
    let Some(spec) = desired.spec.as_mut() else {
        return;
    };
    spec.volume_claim_templates = claims;
    if let Some(pod) = spec.template.spec.as_mut() {
        let volumes = pod.volumes.get_or_insert_with(Vec::new);
        volumes.retain(|v| v.name != DATA_VOLUME);
        if !claims_data {
            // Where the StatefulSet builder puts it (after the config volume), so the pod
            // template stays the one the live StatefulSet runs.
            let at = volumes
                .iter()
                .position(|v| v.name == CONFIG_VOLUME)
                .map_or(0, |i| i + 1);
            volumes.insert(
                at,
                Volume {
                    name: DATA_VOLUME.into(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Default::default()
                },
            );
        }
    }
}

/// A reference to `obj` for an Event's related object.
fn reference<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    obj.object_ref(&())
}

/// Server-side apply of `obj` (forced: kvpilot owns these objects).
async fn apply<K>(api: &Api<K>, obj: &K) -> Result<K, ApplyError>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug,
{
    let namespace = obj.namespace().unwrap_or_default();
    api.patch(
        &obj.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map_err(|e| err("apply", obj, &namespace, e))
}

async fn delete<K>(api: &Api<K>, name: &str, namespace: &str, kind: &str) -> Result<(), ApplyError>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(source) => Err(ApplyError {
            verb: "delete",
            kind: kind.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            source,
        }),
    }
}

fn err<K: Resource<DynamicType = ()>>(
    verb: &'static str,
    obj: &K,
    namespace: &str,
    source: kube::Error,
) -> ApplyError {
    ApplyError {
        verb,
        kind: K::kind(&()).to_string(),
        namespace: namespace.to_string(),
        name: obj.meta().name.clone().unwrap_or_default(),
        source,
    }
}

fn list_err(kind: &str, namespace: &str, source: kube::Error) -> ApplyError {
    ApplyError {
        verb: "list",
        kind: kind.to_string(),
        namespace: namespace.to_string(),
        name: "*".to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::super::desired_objects;
    use super::super::fixtures::*;
    use super::*;
    use crate::api::StorageSpec;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn with_storage(size: Option<&str>) -> StatefulSet {
        let mut spec = valkey("8.1");
        // TLS adds a volume after the data one: the order must survive keeping claims.
        spec.tls = Some(crate::api::TlsSpec {
            secret_name: "cache-tls".into(),
            client_auth: Default::default(),
        });
        spec.storage = size.map(|s| StorageSpec {
            size: Quantity(s.into()),
            storage_class_name: None,
            access_modes: vec![],
        });
        desired_objects(&cluster(spec))
            .unwrap()
            .statefulsets
            .remove(0)
    }

    fn volumes(sts: &StatefulSet) -> Vec<(String, bool)> {
        sts.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .volumes
            .iter()
            .flatten()
            .map(|v| (v.name.clone(), v.empty_dir.is_some()))
            .collect()
    }

    #[test]
    fn quantities_compare_by_value() {
        assert!(same_quantity(Some("1Gi"), Some("1024Mi")));
        assert!(same_quantity(Some("1.5G"), Some("1500M")));
        assert!(same_quantity(Some("1e3"), Some("1k")));
        assert!(!same_quantity(Some("5Gi"), Some("10Gi")));
        assert!(!same_quantity(Some("5Gi"), None));
        assert_eq!(quantity_value("2Ki"), Some(2048.0));
        assert_eq!(quantity_value("huge"), None);
    }

    #[test]
    fn only_a_storage_change_is_drift_and_defaulted_fields_are_not() {
        let live = with_storage(Some("5Gi"));
        assert_eq!(storage_drift(&live, &with_storage(Some("5Gi"))), None);
        // The API server defaults volumeMode and status; the request may be re-spelled.
        let mut defaulted = live.clone();
        let claim = &mut defaulted
            .spec
            .as_mut()
            .unwrap()
            .volume_claim_templates
            .as_mut()
            .unwrap()[0];
        let claim_spec = claim.spec.as_mut().unwrap();
        claim_spec.volume_mode = Some("Filesystem".into());
        claim_spec.resources.as_mut().unwrap().requests =
            Some([("storage".to_string(), Quantity("5120Mi".into()))].into());
        claim.status = serde_json::from_value(serde_json::json!({"phase": "Pending"})).unwrap();
        assert_eq!(storage_drift(&defaulted, &with_storage(Some("5Gi"))), None);

        let drift = storage_drift(&defaulted, &with_storage(Some("10Gi"))).expect("drift");
        assert_eq!(drift.statefulset, "cache-s0");
        assert!(
            drift.live.contains("5120Mi") && drift.wanted.contains("10Gi"),
            "{drift:?}"
        );
        let message = drift.message();
        assert!(message.contains("not applied"), "{message}");
        assert!(message.contains("--cascade=orphan"), "{message}");
        assert!(storage_drift(&with_storage(None), &with_storage(Some("5Gi"))).is_some());
        assert!(storage_drift(&with_storage(Some("5Gi")), &with_storage(None)).is_some());
    }

    #[test]
    fn kept_claims_come_with_the_data_volume_they_need() {
        // emptyDir → a claim: the live StatefulSet has none, so the pod keeps its emptyDir.
        let live = with_storage(None);
        let mut desired = with_storage(Some("5Gi"));
        keep_live_claims(&mut desired, &live);
        assert_eq!(desired.spec.as_ref().unwrap().volume_claim_templates, None);
        assert_eq!(
            desired.spec.as_ref().unwrap().template,
            live.spec.as_ref().unwrap().template
        );
        assert!(volumes(&desired).contains(&(DATA_VOLUME.to_string(), true)));

        // A claim → none: the live claim stays, and no emptyDir shadows it.
        let live = with_storage(Some("5Gi"));
        let mut desired = with_storage(None);
        keep_live_claims(&mut desired, &live);
        assert_eq!(
            desired.spec.as_ref().unwrap().volume_claim_templates,
            live.spec.as_ref().unwrap().volume_claim_templates
        );
        assert!(volumes(&desired).iter().all(|(n, _)| n != DATA_VOLUME));
        assert_eq!(
            desired.spec.as_ref().unwrap().template,
            live.spec.as_ref().unwrap().template
        );
    }
}
