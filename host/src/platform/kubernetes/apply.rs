//! Applies a KvCluster's [`DesiredObjects`]: server-side apply under one field manager,
//! recreating Services that switch between headless and ClusterIP, and deleting what the
//! cluster no longer needs (per-pod Services turned off, ConfigMaps of old revisions).

use super::{DesiredObjects, LABEL_CLUSTER, services};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
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

/// Applies every object of one cluster in `namespace`, then prunes.
pub async fn apply_all(
    client: &Client,
    namespace: &str,
    cluster: &str,
    objects: &DesiredObjects,
) -> Result<(), ApplyError> {
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    apply(&configmaps, &objects.config_map).await?;
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    for sts in &objects.statefulsets {
        apply(&sts_api, sts).await?;
    }
    let svc_api: Api<Service> = Api::namespaced(client.clone(), namespace);
    for svc in &objects.services {
        let name = svc.name_any();
        if let Some(existing) = svc_api
            .get_opt(&name)
            .await
            .map_err(|e| err("get", svc, namespace, e))?
            && services::must_recreate(&existing, svc)
        {
            tracing::info!(service = %name, "recreating the Service: clusterIP is immutable");
            delete(&svc_api, &name, namespace, "Service").await?;
        }
        apply(&svc_api, svc).await?;
    }
    let pdb_api: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), namespace);
    for pdb in &objects.pdbs {
        apply(&pdb_api, pdb).await?;
    }
    let selector = ListParams::default().labels(&format!("{LABEL_CLUSTER}={cluster}"));

    let wanted: BTreeSet<String> = objects.services.iter().map(|s| s.name_any()).collect();
    let existing = svc_api
        .list(&selector)
        .await
        .map_err(|e| list_err("Service", namespace, e))?;
    for svc in existing
        .items
        .iter()
        .filter(|s| !wanted.contains(&s.name_any()))
    {
        delete(&svc_api, &svc.name_any(), namespace, "Service").await?;
    }
    let wanted: BTreeSet<String> = objects.pdbs.iter().map(|p| p.name_any()).collect();
    let existing = pdb_api
        .list(&selector)
        .await
        .map_err(|e| list_err("PodDisruptionBudget", namespace, e))?;
    for pdb in existing
        .items
        .iter()
        .filter(|p| !wanted.contains(&p.name_any()))
    {
        delete(&pdb_api, &pdb.name_any(), namespace, "PodDisruptionBudget").await?;
    }

    // A ConfigMap stays while the desired StatefulSets or any pod (of an older revision that
    // has not been restarted yet) mounts it.
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pods = pods
        .list(&selector)
        .await
        .map_err(|e| list_err("Pod", namespace, e))?;
    let mut used: BTreeSet<String> = BTreeSet::from([objects.config_map.name_any()]);
    let pod_specs = pods.items.iter().filter_map(|p| p.spec.as_ref());
    let sts_specs = objects
        .statefulsets
        .iter()
        .filter_map(|s| s.spec.as_ref()?.template.spec.as_ref());
    for spec in pod_specs.chain(sts_specs) {
        for v in spec.volumes.iter().flatten() {
            if let Some(cm) = &v.config_map {
                used.insert(cm.name.clone());
            }
        }
    }
    let existing = configmaps
        .list(&selector)
        .await
        .map_err(|e| list_err("ConfigMap", namespace, e))?;
    for cm in existing
        .items
        .iter()
        .filter(|c| !used.contains(&c.name_any()))
    {
        tracing::info!(configmap = %cm.name_any(), "deleting a ConfigMap no revision uses");
        delete(&configmaps, &cm.name_any(), namespace, "ConfigMap").await?;
    }
    Ok(())
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
