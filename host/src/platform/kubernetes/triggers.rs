//! Which watch events start a KvCluster reconcile.
//!
//! Every reconcile patches the KvCluster's status (member offsets move under writes), and a
//! status patch is a watch event of the KvCluster itself. If every event triggered a reconcile,
//! each reconcile would trigger the next one at once, however long it asked to wait. So the
//! KvCluster and PolicyPlugin watches only pass objects whose `metadata.generation` changed
//! (the API server bumps it for spec changes, never for status), while the owned objects and
//! Pods trigger on every change: their status (a StatefulSet's update revision, a Pod's IP and
//! readiness) is what the reconcile reads.

use super::LABEL_CLUSTER;
use super::policies::referenced_plugins;
use crate::api::{KvCluster, PolicyPlugin};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use std::collections::HashMap;
use std::sync::Arc;

/// Remembers the last generation seen per object (by uid, so a recreated object with the
/// same name and generation still passes).
#[derive(Debug, Default)]
pub struct GenerationFilter {
    seen: HashMap<String, Option<i64>>,
    /// During a re-list (`Init` … `InitDone`): the objects listed so far. Replaces `seen` at
    /// `InitDone`, so objects deleted while the watch was down are forgotten.
    relisting: Option<HashMap<String, Option<i64>>>,
}

impl GenerationFilter {
    /// The object of `event` when it needs a reconcile: an applied object whose generation
    /// differs from the last one seen (or that has none), and, when `deletes` is set, a
    /// deleted object. `Init`/`InitDone` carry no object.
    pub fn pass<K: Resource>(&mut self, event: watcher::Event<K>, deletes: bool) -> Option<K> {
        match event {
            watcher::Event::Init => {
                self.relisting = Some(HashMap::new());
                None
            }
            watcher::Event::InitDone => {
                if let Some(listed) = self.relisting.take() {
                    self.seen = listed;
                }
                None
            }
            watcher::Event::InitApply(obj) | watcher::Event::Apply(obj) => {
                let key = key(&obj);
                let generation = obj.meta().generation;
                let changed = generation.is_none() || self.seen.get(&key) != Some(&generation);
                if let Some(listed) = self.relisting.as_mut() {
                    listed.insert(key.clone(), generation);
                }
                self.seen.insert(key, generation);
                changed.then_some(obj)
            }
            watcher::Event::Delete(obj) => {
                let key = key(&obj);
                self.seen.remove(&key);
                if let Some(listed) = self.relisting.as_mut() {
                    listed.remove(&key);
                }
                deletes.then_some(obj)
            }
        }
    }
}

fn key<K: Resource>(obj: &K) -> String {
    let meta = obj.meta();
    match &meta.uid {
        Some(uid) => uid.clone(),
        None => format!(
            "{}/{}",
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default()
        ),
    }
}

/// A watch stream reduced to the objects that need a reconcile ([`GenerationFilter::pass`]);
/// errors pass through (the controller logs them and the watcher retries).
pub fn generation_changes<K, S>(
    events: S,
    deletes: bool,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send
where
    K: Resource + Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
{
    let mut filter = GenerationFilter::default();
    events.filter_map(move |event| {
        let out = match event {
            Ok(event) => filter.pass(event, deletes).map(Ok),
            Err(e) => Some(Err(e)),
        };
        futures::future::ready(out)
    })
}

/// The KvCluster a Pod belongs to (its [`LABEL_CLUSTER`] label, in its namespace).
pub fn pod_cluster(pod: &Pod) -> Option<ObjectRef<KvCluster>> {
    let cluster = pod.labels().get(LABEL_CLUSTER)?;
    let r = ObjectRef::<KvCluster>::new(cluster);
    Some(match pod.namespace() {
        Some(ns) => r.within(&ns),
        None => r,
    })
}

/// The KvClusters (of `clusters`, the controller's store) that name PolicyPlugin `pp`.
pub fn plugin_users(clusters: &[Arc<KvCluster>], pp: &PolicyPlugin) -> Vec<ObjectRef<KvCluster>> {
    let name = pp.name_any();
    clusters
        .iter()
        .filter(|kc| referenced_plugins(&kc.spec.policies).contains(&name))
        .map(|kc| ObjectRef::from_obj(kc.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{KvClusterStatus, PolicyPluginSpec};
    use futures::stream;

    fn cluster(generation: i64, offset_marker: Option<&str>) -> KvCluster {
        let spec = serde_norway::from_str("engine: {kind: valkey}\nreplicas: 1\n").unwrap();
        let mut kc = KvCluster::new("cache", spec);
        kc.metadata.namespace = Some("shop".into());
        kc.metadata.uid = Some("uid-1".into());
        kc.metadata.generation = Some(generation);
        kc.status = offset_marker.map(|p| KvClusterStatus {
            primary: Some(p.into()),
            ..Default::default()
        });
        kc
    }

    /// What a status patch looks like to a watch: the same generation, another status (and
    /// resourceVersion). Only the spec changes (generation 2, then 3) may come out.
    #[tokio::test]
    async fn status_only_changes_do_not_trigger_a_reconcile() {
        let mut events = vec![
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(cluster(1, None))),
            Ok(watcher::Event::InitDone),
        ];
        for (i, primary) in ["cache-s0-0", "cache-s0-1", "cache-s0-0"]
            .iter()
            .enumerate()
        {
            let mut kc = cluster(1, Some(primary));
            kc.metadata.resource_version = Some(format!("{}", 10 + i));
            events.push(Ok(watcher::Event::Apply(kc)));
        }
        events.push(Ok(watcher::Event::Apply(cluster(2, Some("cache-s0-0")))));
        events.push(Ok(watcher::Event::Apply(cluster(2, Some("cache-s0-1")))));
        events.push(Ok(watcher::Event::Apply(cluster(3, None))));
        events.push(Ok(watcher::Event::Delete(cluster(3, None))));
        let out: Vec<i64> = generation_changes(stream::iter(events), false)
            .map(|r| r.unwrap().metadata.generation.unwrap())
            .collect()
            .await;
        assert_eq!(out, [1, 2, 3]);
    }

    #[test]
    fn deletions_pass_when_asked_and_a_recreated_object_passes_again() {
        let mut f = GenerationFilter::default();
        assert!(
            f.pass(watcher::Event::Apply(cluster(1, None)), true)
                .is_some()
        );
        assert!(
            f.pass(watcher::Event::Apply(cluster(1, None)), true)
                .is_none()
        );
        assert!(
            f.pass(watcher::Event::Delete(cluster(1, None)), true)
                .is_some()
        );
        // The same name and generation again (a new object): it passes.
        assert!(
            f.pass(watcher::Event::Apply(cluster(1, None)), true)
                .is_some()
        );
        assert!(
            f.pass(watcher::Event::Delete(cluster(1, None)), false)
                .is_none()
        );
        // A re-list forgets what is gone and keeps what is listed.
        let mut other = cluster(5, None);
        other.metadata.uid = Some("uid-2".into());
        assert!(
            f.pass(watcher::Event::Apply(other.clone()), false)
                .is_some()
        );
        f.pass::<KvCluster>(watcher::Event::Init, false);
        assert!(
            f.pass(watcher::Event::InitApply(other.clone()), false)
                .is_none()
        );
        f.pass::<KvCluster>(watcher::Event::InitDone, false);
        assert_eq!(f.seen.len(), 1);
        assert!(f.pass(watcher::Event::Apply(other), false).is_none());
    }

    #[test]
    fn pods_map_to_their_cluster_and_plugins_to_the_clusters_naming_them() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "cache-s0-0", "namespace": "shop",
                         "labels": {LABEL_CLUSTER: "cache"}},
        }))
        .unwrap();
        assert_eq!(
            pod_cluster(&pod),
            Some(ObjectRef::<KvCluster>::new("cache").within("shop"))
        );
        assert_eq!(pod_cluster(&Pod::default()), None);

        let mut uses = cluster(1, None);
        uses.spec.policies = serde_norway::from_str(
            "replicaSelection: {plugin: zone-aware}\nrolloutOrder: {plugin: builtin:replicas-first}\n",
        )
        .unwrap();
        let mut other = cluster(1, None);
        other.metadata.name = Some("other".into());
        let spec: PolicyPluginSpec =
            serde_json::from_value(serde_json::json!({"source": {"builtin": "most-caught-up"}}))
                .unwrap();
        let pp = PolicyPlugin::new("zone-aware", spec);
        let users = plugin_users(&[Arc::new(uses), Arc::new(other)], &pp);
        assert_eq!(users, [ObjectRef::<KvCluster>::new("cache").within("shop")]);
    }
}
