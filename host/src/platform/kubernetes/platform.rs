//! [`KubernetesPlatform`]: the [`Platform`] of one KvCluster in Kubernetes. Members are the
//! pods of the shard's StatefulSet; the StatefulSet (`OnDelete`) starts and recreates them, so
//! starting is a no-op and restarting deletes the pod; the primary endpoint is the
//! `<name>-primary` Service, which follows the `kvpilot.dev/role=primary` pod label. In cluster
//! mode there is no endpoint to move (decide never asks): the same members, per shard, are
//! met, assigned and promoted over the cluster bus, and each reports its own bus port in its
//! `CLUSTER NODES` line.

use super::statefulset::SERVER_CONTAINER;
use super::{LABEL_CLUSTER, LABEL_ROLE, ROLE_PRIMARY, ROLE_REPLICA, member_name, shard_name};
use crate::platform::{Platform, PlatformError, PlatformMember};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;

/// The label the StatefulSet controller puts on each pod: the revision it was created from.
pub const LABEL_REVISION: &str = "controller-revision-hash";

/// How long [`Platform::stop_hung`] waits after force-deleting a pod: the kubelet's minimum
/// of 2 seconds between SIGTERM and SIGKILL, plus time for it to see the deletion.
pub const FORCE_DELETE_WINDOW: std::time::Duration = std::time::Duration::from_secs(4);

/// The well-known Node label that names its zone; a member's zone is its node's.
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";

/// What the last [`Platform::members`] call saw; `desired_revision` and `endpoint` are
/// synchronous and answer from it (observe calls `members` first).
#[derive(Debug, Default)]
struct Seen {
    desired_revision: String,
    endpoint: Option<SocketAddr>,
    /// Pod name → address, of running pods.
    addrs: BTreeMap<String, SocketAddr>,
    /// Pod name → uid, of every pod seen: a pod is force-deleted only if it is still the
    /// one that was judged hung, never its replacement.
    uids: BTreeMap<String, String>,
}

/// One KvCluster's members, as pods.
pub struct KubernetesPlatform {
    client: Client,
    namespace: String,
    cluster: String,
    shards: u32,
    /// Members per shard (primary + replicas).
    members_per_shard: u32,
    /// The port members serve on ([`super::config::PORT`] in a real cluster).
    port: u16,
    seen: Mutex<Seen>,
    /// Node name → zone (`None`: the node has no zone label). A node's zone does not change
    /// while it exists, so each node is read once.
    zones: Mutex<BTreeMap<String, Option<String>>>,
}

impl KubernetesPlatform {
    /// The platform of KvCluster `namespace/cluster` with `shards` StatefulSets of
    /// `members_per_shard` pods each, serving on `port`.
    pub fn new(
        client: Client,
        namespace: &str,
        cluster: &str,
        shards: u32,
        members_per_shard: u32,
        port: u16,
    ) -> Self {
        KubernetesPlatform {
            client,
            namespace: namespace.to_string(),
            cluster: cluster.to_string(),
            shards,
            members_per_shard,
            port,
            seen: Mutex::new(Seen::default()),
            zones: Mutex::new(BTreeMap::new()),
        }
    }

    /// Follows a spec change (replicas or shards).
    pub fn resize(&mut self, shards: u32, members_per_shard: u32) {
        self.shards = shards;
        self.members_per_shard = members_per_shard;
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn error(&self, action: impl Into<String>, e: impl std::fmt::Display) -> PlatformError {
        PlatformError {
            platform: "kubernetes",
            action: format!("{}/{}: {}", self.namespace, self.cluster, action.into()),
            message: e.to_string(),
        }
    }

    async fn cluster_pods(&self) -> Result<Vec<Pod>, PlatformError> {
        let selector = format!("{LABEL_CLUSTER}={}", self.cluster);
        self.pods()
            .list(&ListParams::default().labels(&selector))
            .await
            .map(|l| l.items)
            .map_err(|e| self.error("list pods", e))
    }

    /// The zone of each node in `nodes`, from the [`LABEL_ZONE`] label. Zones only inform
    /// policies (`preferZone`), so a node that cannot be read (missing, or RBAC without
    /// `nodes: get`) leaves its members without a zone instead of failing the reconcile.
    async fn zones(&self, nodes: impl Iterator<Item = &str>) -> BTreeMap<String, Option<String>> {
        let api: Api<Node> = Api::all(self.client.clone());
        let mut out = BTreeMap::new();
        for node in nodes {
            if out.contains_key(node) {
                continue;
            }
            let cached = self.zones_cache().get(node).cloned();
            let zone = match cached {
                Some(zone) => zone,
                None => match api.get_opt(node).await {
                    Ok(Some(n)) => {
                        let zone = n.labels().get(LABEL_ZONE).cloned();
                        self.zones_cache().insert(node.to_string(), zone.clone());
                        zone
                    }
                    // Not cached: the node may yet appear.
                    Ok(None) => None,
                    Err(e) => {
                        tracing::warn!(node, error = %e, "cannot read the node's zone; members on it have none");
                        // Forbidden will not change without new RBAC: do not ask again.
                        if matches!(&e, kube::Error::Api(s) if s.code == 403) {
                            self.zones_cache().insert(node.to_string(), None);
                        }
                        None
                    }
                },
            };
            out.insert(node.to_string(), zone);
        }
        out
    }

    fn zones_cache(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Option<String>>> {
        // A cache: a poisoned lock is still usable.
        self.zones.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        // The data is a cache rebuilt on every `members` call: a poisoned lock is still usable.
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The revision pods of `sts` should run: its `status.updateRevision`, once the StatefulSet
/// controller has observed the current spec. Empty when unknown (no status yet, or a status
/// from before the last template change, whose update revision is the previous template's):
/// decide then waits instead of judging every pod stale against it.
pub fn update_revision(sts: &StatefulSet) -> String {
    let Some(status) = sts.status.as_ref() else {
        return String::new();
    };
    let generation = sts.metadata.generation;
    let observed = status.observed_generation;
    if generation.is_some() && observed.is_none_or(|o| Some(o) < generation) {
        return String::new();
    }
    status.update_revision.clone().unwrap_or_default()
}

/// The revision every member should run, from each shard's StatefulSet update revision: with
/// one shard, that revision itself; with more, `<cluster>-<digest of them all>`, which
/// changes whenever any shard's template does. Empty while any shard's is unknown (decide
/// then waits instead of judging members stale).
pub fn cluster_revision(cluster: &str, shard_revisions: &[String]) -> String {
    use sha2::{Digest, Sha256};
    match shard_revisions {
        [] => String::new(),
        [one] => one.clone(),
        many if many.iter().any(String::is_empty) => String::new(),
        many => {
            let digest = Sha256::digest(many.join("\n").as_bytes());
            format!("{cluster}-{}", &hex::encode(digest)[..10])
        }
    }
}

/// The pod's address, when it has an IP.
fn pod_addr(pod: &Pod, port: u16) -> Option<SocketAddr> {
    let ip: IpAddr = pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()?;
    Some(SocketAddr::new(ip, port))
}

/// Running: scheduled, phase `Running`, with an IP, not being deleted, and its server
/// container not reported stopped. A crashed container leaves the pod `Running` (restart
/// policy `Always`) while the kubelet reports its state `terminated` (set only once the
/// process exited) or `waiting` (to be restarted): no process then serves, so the member is
/// down rather than possibly hung (no force-deletion needed before a promotion).
fn pod_running(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    let container_stopped = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.iter().find(|c| c.name == SERVER_CONTAINER))
        .and_then(|c| c.state.as_ref())
        .is_some_and(|s| s.running.is_none() && (s.terminated.is_some() || s.waiting.is_some()));
    pod.metadata.deletion_timestamp.is_none()
        && status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && !container_stopped
}

/// The node the pod is scheduled on.
fn pod_node(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref()
}

fn is_primary(pod: &Pod) -> bool {
    pod.labels().get(LABEL_ROLE).map(String::as_str) == Some(ROLE_PRIMARY)
}

impl Platform for KubernetesPlatform {
    async fn members(&self) -> Result<Vec<PlatformMember>, PlatformError> {
        let pods = self.cluster_pods().await?;
        let by_name: BTreeMap<String, &Pod> = pods.iter().map(|p| (p.name_any(), p)).collect();
        let zones = self.zones(pods.iter().filter_map(pod_node)).await;
        let statefulsets: Api<StatefulSet> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut shard_revisions = Vec::new();
        let mut members = Vec::new();
        let mut seen = Seen::default();
        for shard in 0..self.shards {
            let sts = statefulsets
                .get_opt(&shard_name(&self.cluster, shard))
                .await
                .map_err(|e| self.error("get statefulset", e))?;
            let shard_revision = sts.as_ref().map(update_revision).unwrap_or_default();
            shard_revisions.push(shard_revision);
            // A scale-down leaves the StatefulSet at its size until `retire`: the members past
            // the spec's count are retiring, listed running or not so that one that is down
            // is removed too, rather than holding the StatefulSet at its size.
            let live = sts
                .as_ref()
                .and_then(|s| s.spec.as_ref())
                .and_then(|s| s.replicas)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0);
            for ordinal in 0..self.members_per_shard.max(live) {
                let retiring = ordinal >= self.members_per_shard;
                let name = member_name(&self.cluster, shard, ordinal);
                let pod = by_name.get(&name);
                let addr = pod.and_then(|p| pod_addr(p, self.port));
                let running = pod.is_some_and(|p| pod_running(p)) && addr.is_some();
                // A member without a pod IP is not probed; it still needs an address.
                let addr = addr.unwrap_or(SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    self.port,
                ));
                if let Some(uid) = pod.and_then(|p| p.uid()) {
                    seen.uids.insert(name.clone(), uid);
                }
                if running {
                    seen.addrs.insert(name.clone(), addr);
                    if pod.is_some_and(|p| is_primary(p)) {
                        seen.endpoint = Some(addr);
                    }
                }
                members.push(PlatformMember {
                    name,
                    shard,
                    ordinal,
                    addr,
                    revision: pod
                        .filter(|_| running)
                        .and_then(|p| p.labels().get(LABEL_REVISION).cloned()),
                    running,
                    zone: pod
                        .and_then(|p| pod_node(p))
                        .and_then(|n| zones.get(n).cloned().flatten()),
                    node: pod.and_then(|p| pod_node(p)).map(str::to_string),
                    retiring,
                });
            }
        }
        // Each StatefulSet names its own revisions (`<sts>-<hash>`): one cluster-wide name
        // stands for "every shard's update revision", and a pod on its shard's update
        // revision runs it.
        let desired_revision = cluster_revision(&self.cluster, &shard_revisions);
        for m in &mut members {
            let shard = shard_revisions.get(m.shard as usize);
            if m.revision.is_some()
                && shard.is_some_and(|r| !r.is_empty())
                && m.revision.as_ref() == shard
            {
                m.revision = Some(desired_revision.clone());
            }
        }
        seen.desired_revision = desired_revision;
        *self.seen() = seen;
        Ok(members)
    }

    fn desired_revision(&self) -> String {
        self.seen().desired_revision.clone()
    }

    fn endpoint(&self) -> Option<SocketAddr> {
        self.seen().endpoint
    }

    /// The StatefulSet starts every pod it lacks; nothing to do.
    async fn start(
        &self,
        _members: &[String],
        _replica_of: Option<SocketAddr>,
    ) -> Result<(), PlatformError> {
        Ok(())
    }

    /// Deletes the pod; the StatefulSet recreates it on its update revision, and the new pod
    /// replicates from the `<name>-primary` Service (the rendered config), whatever
    /// `replica_of` says; in cluster mode it starts on its `nodes.conf` (on its claim) or
    /// empty and alone, and decide rejoins it.
    async fn restart(
        &self,
        member: &str,
        _replica_of: Option<SocketAddr>,
    ) -> Result<(), PlatformError> {
        match self.pods().delete(member, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(self.error(format!("delete pod {member}"), e)),
        }
        self.seen().addrs.remove(member);
        Ok(())
    }

    /// Shrinks each StatefulSet to the spec's size; its controller then deletes the pods past
    /// it. Refused for a member the spec still asks for, or one labelled the primary.
    async fn retire(&self, members: &[String]) -> Result<(), PlatformError> {
        let pods = self.cluster_pods().await?;
        for name in members {
            let wanted = (0..self.shards).any(|shard| {
                (0..self.members_per_shard)
                    .any(|ordinal| member_name(&self.cluster, shard, ordinal) == *name)
            });
            if wanted {
                return Err(self.error(
                    format!("remove {name}"),
                    "the spec still asks for this member",
                ));
            }
            if pods.iter().any(|p| p.name_any() == *name && is_primary(p)) {
                return Err(self.error(
                    format!("remove {name}"),
                    "it is labelled the primary: it hands over first",
                ));
            }
        }
        let statefulsets: Api<StatefulSet> = Api::namespaced(self.client.clone(), &self.namespace);
        let size = i32::try_from(self.members_per_shard)
            .map_err(|e| self.error("shrink statefulsets", e))?;
        let patch = serde_json::json!({"spec": {"replicas": size}});
        for shard in 0..self.shards {
            let sts = shard_name(&self.cluster, shard);
            statefulsets
                .patch(&sts, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| self.error(format!("scale statefulset {sts} to {size}"), e))?;
        }
        for name in members {
            self.seen().addrs.remove(name);
        }
        Ok(())
    }

    /// Deletes each pod with `gracePeriodSeconds: 0` (and its uid as a precondition), then
    /// waits [`FORCE_DELETE_WINDOW`]. The kubelet then stops the container at once, but not
    /// instantly: it always grants at least 2 seconds between SIGTERM and SIGKILL. A hung
    /// server that resumes inside that window gets SIGTERM first, and its shutdown waits for
    /// its replicas to take every write it acknowledged (`shutdown-timeout`); the wait here
    /// makes the promotion come after that, not before. A replacement operator cannot act
    /// within the window either (it first waits out the Lease). What no API call can do is
    /// stop a container on a node the control plane cannot reach: see the README.
    async fn stop_hung(&self, members: &[String]) -> Result<(), PlatformError> {
        for member in members {
            let uid = self.seen().uids.get(member).cloned();
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: uid.map(|uid| kube::api::Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match self.pods().delete(member, &params).await {
                Ok(_) => {}
                // Gone already, or already replaced (the uid precondition): nothing hung left.
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => return Err(self.error(format!("force-delete pod {member}"), e)),
            }
            self.seen().addrs.remove(member);
        }
        tokio::time::sleep(FORCE_DELETE_WINDOW).await;
        Ok(())
    }

    /// Labels the pod serving at `primary` as the primary and every other pod as a replica,
    /// demoting first so the `-primary` Service never selects two pods.
    async fn point_endpoint(&self, primary: SocketAddr) -> Result<(), PlatformError> {
        let pods = self.cluster_pods().await?;
        let target = pods
            .iter()
            .find(|p| pod_running(p) && pod_addr(p, self.port) == Some(primary))
            .map(|p| p.name_any())
            .ok_or_else(|| {
                self.error("point the primary endpoint", format!("no pod at {primary}"))
            })?;
        let label = |role: &str| serde_json::json!({"metadata": {"labels": {LABEL_ROLE: role}}});
        let params = PatchParams::default();
        for pod in pods
            .iter()
            .filter(|p| p.name_any() != target && is_primary(p))
        {
            self.pods()
                .patch(&pod.name_any(), &params, &Patch::Merge(label(ROLE_REPLICA)))
                .await
                .map_err(|e| self.error(format!("label {} replica", pod.name_any()), e))?;
        }
        if !pods.iter().any(|p| p.name_any() == target && is_primary(p)) {
            self.pods()
                .patch(&target, &params, &Patch::Merge(label(ROLE_PRIMARY)))
                .await
                .map_err(|e| self.error(format!("label {target} primary"), e))?;
        }
        self.seen().endpoint = Some(primary);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sts(generation: Option<i64>, status: Option<serde_json::Value>) -> StatefulSet {
        let mut sts = StatefulSet::default();
        sts.metadata.generation = generation;
        sts.status = status.map(|s| serde_json::from_value(s).unwrap());
        sts
    }

    #[test]
    fn a_pod_whose_server_container_stopped_is_not_running() {
        let pod = |state: Option<serde_json::Value>, deleting: bool| -> Pod {
            let mut status = serde_json::json!({"phase": "Running", "podIP": "10.0.0.7"});
            if let Some(state) = state {
                status["containerStatuses"] = serde_json::json!([{
                    "name": SERVER_CONTAINER, "image": "valkey", "imageID": "",
                    "ready": false, "restartCount": 1, "state": state,
                }]);
            }
            let mut p: Pod = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "kvc-s1-0"}, "status": status,
            }))
            .unwrap();
            if deleting {
                p.metadata.deletion_timestamp =
                    Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                    ));
            }
            p
        };
        // No container status yet (or none reported): the phase decides.
        assert!(pod_running(&pod(None, false)));
        assert!(pod_running(&pod(
            Some(serde_json::json!({"running": {}})),
            false
        )));
        // Crashed (the process exited), or waiting to be restarted: nothing serves.
        assert!(!pod_running(&pod(
            Some(serde_json::json!({"terminated": {"exitCode": 137}})),
            false
        )));
        assert!(!pod_running(&pod(
            Some(serde_json::json!({"waiting": {"reason": "CrashLoopBackOff"}})),
            false
        )));
        assert!(!pod_running(&pod(
            Some(serde_json::json!({"running": {}})),
            true
        )));
    }

    #[test]
    fn a_cluster_revision_stands_for_every_shards_update_revision() {
        let revs = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            cluster_revision("cache", &revs(&["cache-s0-a"])),
            "cache-s0-a"
        );
        assert_eq!(cluster_revision("cache", &[]), "");
        // Unknown for one shard: unknown for the cluster.
        assert_eq!(cluster_revision("cache", &revs(&["cache-s0-a", ""])), "");
        let both = cluster_revision("cache", &revs(&["cache-s0-a", "cache-s1-b"]));
        assert!(both.starts_with("cache-") && both.len() == "cache-".len() + 10);
        assert_ne!(
            both,
            cluster_revision("cache", &revs(&["cache-s0-a", "cache-s1-c"]))
        );
    }

    #[test]
    fn the_update_revision_counts_only_once_the_current_spec_was_observed() {
        let status = |observed: Option<i64>, revision: Option<&str>| {
            Some(serde_json::json!({
                "replicas": 3, "observedGeneration": observed, "updateRevision": revision,
            }))
        };
        // Just created: no status yet.
        assert_eq!(update_revision(&sts(Some(1), None)), "");
        // Status written, revision not yet.
        assert_eq!(update_revision(&sts(Some(1), status(Some(1), None))), "");
        // A template change the StatefulSet controller has not seen: the old revision is
        // not the desired one.
        assert_eq!(
            update_revision(&sts(Some(2), status(Some(1), Some("cache-s0-aaa")))),
            ""
        );
        assert_eq!(
            update_revision(&sts(Some(2), status(None, Some("cache-s0-aaa")))),
            ""
        );
        assert_eq!(
            update_revision(&sts(Some(2), status(Some(2), Some("cache-s0-bbb")))),
            "cache-s0-bbb"
        );
        // No generation to compare with: the revision as reported.
        assert_eq!(
            update_revision(&sts(None, status(None, Some("cache-s0-bbb")))),
            "cache-s0-bbb"
        );
    }
}
