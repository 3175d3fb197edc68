//! The operator's reconcile against an in-memory Kubernetes API (`kube-fake-client`, a real
//! `kube::Client`; it has no watch, so reconciles are driven directly), and end to end with a
//! stand-in StatefulSet controller/kubelet backing each Pod with a real `valkey-server`.

mod operator_support;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, PostParams};
use kube::{Resource, ResourceExt};
use kvpilot::api::{KvCluster, PolicyPlugin, PolicyPluginSpec};
use kvpilot::demo::{verify, writer::Writer};
use kvpilot::platform::local::forwarder::Forwarder;
use kvpilot::platform::local::server::{free_port, next_loopback_ip};
use operator_support::kubelet::Kubelet;
use operator_support::*;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const PHASE: Duration = Duration::from_secs(60);

fn owned_by(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, kc: &KvCluster) {
    let owner = &meta.owner_references.as_ref().expect("owner references")[0];
    assert_eq!(owner.kind, "KvCluster");
    assert_eq!(Some(&owner.uid), kc.meta().uid.as_ref());
    assert_eq!(owner.controller, Some(true));
}

#[tokio::test]
async fn reconcile_creates_owned_objects_and_reports_status() {
    let client = fake_client().await;
    let kc = create_cluster(
        &client,
        "cache",
        spec("engine: {kind: valkey, version: \"8.0\"}\nreplicas: 2\n"),
    )
    .await;
    let ctx = context(&client, 6379);
    reconcile_once(&client, &ctx, "cache").await;

    let sts = Api::<StatefulSet>::namespaced(client.clone(), NS)
        .get("cache-s0")
        .await
        .unwrap();
    owned_by(&sts.metadata, &kc);
    let sts_spec = sts.spec.unwrap();
    assert_eq!(sts_spec.replicas, Some(3));
    assert_eq!(
        sts_spec.update_strategy.unwrap().type_.as_deref(),
        Some("OnDelete")
    );
    let services = Api::<Service>::namespaced(client.clone(), NS)
        .list(&Default::default())
        .await
        .unwrap();
    let mut names: Vec<String> = services.items.iter().map(|s| s.name_any()).collect();
    names.sort();
    assert_eq!(names, ["cache-headless", "cache-primary", "cache-replicas"]);
    for s in &services.items {
        owned_by(&s.metadata, &kc);
    }
    let primary = services
        .items
        .iter()
        .find(|s| s.name_any() == "cache-primary")
        .unwrap();
    assert_eq!(
        primary.spec.as_ref().unwrap().selector.as_ref().unwrap()["kvpilot.dev/role"],
        "primary"
    );
    let pdb = Api::<PodDisruptionBudget>::namespaced(client.clone(), NS)
        .get("cache-s0")
        .await
        .unwrap();
    owned_by(&pdb.metadata, &kc);
    let cms = Api::<ConfigMap>::namespaced(client.clone(), NS)
        .list(&Default::default())
        .await
        .unwrap();
    assert_eq!(cms.items.len(), 1);
    owned_by(&cms.items[0].metadata, &kc);
    assert!(
        cms.items[0].data.as_ref().unwrap()["server.conf"]
            .contains("replicaof cache-primary.shop.svc 6379")
    );

    let status = get_cluster(&client, "cache").await.status.expect("status");
    assert_eq!(status.observed_generation, kc.metadata.generation);
    assert_eq!(status.members.len(), 3, "{status:?}");
    assert!(
        status.members.iter().all(|m| m.role == "down"),
        "{status:?}"
    );
    assert_eq!(status.condition("Ready").unwrap().status, "False");

    // A spec change renders a new ConfigMap; the old one goes once nothing mounts it.
    let api: Api<KvCluster> = Api::namespaced(client.clone(), NS);
    let mut changed = get_cluster(&client, "cache").await;
    changed.spec.config.insert("hz".into(), "20".into());
    api.replace("cache", &PostParams::default(), &changed)
        .await
        .unwrap();
    reconcile_once(&client, &ctx, "cache").await;
    let cms = Api::<ConfigMap>::namespaced(client.clone(), NS)
        .list(&Default::default())
        .await
        .unwrap();
    assert_eq!(cms.items.len(), 1);
    assert!(cms.items[0].data.as_ref().unwrap()["server.conf"].contains("hz 20"));
}

#[tokio::test]
async fn an_invalid_spec_sets_a_condition_and_creates_nothing() {
    let client = fake_client().await;
    create_cluster(
        &client,
        "big",
        spec("engine: {kind: valkey}\nreplicas: 1\nshards: 3\n"),
    )
    .await;
    let ctx = context(&client, 6379);
    reconcile_once(&client, &ctx, "big").await;
    let status = get_cluster(&client, "big").await.status.expect("status");
    let ready = status.condition("Ready").expect("Ready");
    assert_eq!(ready.status, "False");
    assert_eq!(ready.reason, "InvalidSpec");
    assert!(ready.message.contains("shards"), "{}", ready.message);
    let sts = Api::<StatefulSet>::namespaced(client.clone(), NS)
        .list(&Default::default())
        .await
        .unwrap();
    assert!(sts.items.is_empty());
    let cms = Api::<ConfigMap>::namespaced(client.clone(), NS)
        .list(&Default::default())
        .await
        .unwrap();
    assert!(cms.items.is_empty());
}

/// Stores `bytes` in ConfigMap `plugins/<name>` and a PolicyPlugin `name` pointing at it,
/// declaring `declared` as its sha256.
async fn store_plugin(client: &kube::Client, name: &str, bytes: &[u8], declared: &str) {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "plugins");
    let mut cm = ConfigMap {
        binary_data: Some(BTreeMap::from([(
            "plugin.wasm".to_string(),
            ByteString(bytes.to_vec()),
        )])),
        ..Default::default()
    };
    cm.metadata.name = Some(name.into());
    cm.metadata.namespace = Some("plugins".into());
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let pp_spec: PolicyPluginSpec = serde_json::from_value(serde_json::json!({
        "source": {"configMap": {"namespace": "plugins", "name": name, "key": "plugin.wasm"}, "sha256": declared},
        "limits": {"timeoutMs": 500}
    }))
    .unwrap();
    let pps: Api<PolicyPlugin> = Api::all(client.clone());
    pps.create(&PostParams::default(), &PolicyPlugin::new(name, pp_spec))
        .await
        .unwrap();
}

fn builtin_wasm(name: &str) -> &'static [u8] {
    kvpilot::policy::builtin::builtin(name)
        .expect("builtin")
        .wasm
}

#[tokio::test]
async fn a_plugin_with_the_wrong_sha256_is_refused_and_the_cluster_reports_policy_failed() {
    let client = fake_client().await;
    let bytes = builtin_wasm("most-caught-up");
    let wrong = hex::encode(Sha256::digest(b"something else"));
    store_plugin(&client, "tampered", bytes, &wrong).await;
    create_cluster(
        &client,
        "cache",
        spec("engine: {kind: valkey}\nreplicas: 1\npolicies:\n  replicaSelection: {plugin: tampered}\n"),
    )
    .await;
    let ctx = context(&client, 6379);
    reconcile_once(&client, &ctx, "cache").await;

    let status = get_cluster(&client, "cache").await.status.expect("status");
    let failed = status.condition("PolicyFailed").expect("PolicyFailed");
    assert_eq!(failed.status, "True");
    assert!(
        failed.message.contains("sha256 mismatch"),
        "{}",
        failed.message
    );
    let pp = Api::<PolicyPlugin>::all(client.clone())
        .get("tampered")
        .await
        .unwrap();
    let pp_status = pp.status.expect("plugin status");
    let valid = pp_status
        .conditions
        .iter()
        .find(|c| c.type_ == "Valid")
        .unwrap();
    assert_eq!(valid.status, "False");
    let loaded = pp_status
        .conditions
        .iter()
        .find(|c| c.type_ == "Loaded")
        .unwrap();
    assert_eq!(loaded.status, "False");
    assert!(pp_status.message.unwrap().contains(&wrong));
    assert!(pp_status.sha256.is_none());
}

/// A cluster of real servers (stand-in kubelet), the operator driven in a background loop.
struct Running {
    client: kube::Client,
    kubelet: Kubelet,
    operator: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.operator.abort();
    }
}

async fn run_cluster(name: &str, spec_yaml: &str) -> Running {
    let client = fake_client().await;
    let port = free_port(next_loopback_ip()).expect("port");
    create_cluster(&client, name, spec(spec_yaml)).await;
    let ctx = context(&client, port);
    let kubelet = Kubelet::start(&client, port);
    let (c, n) = (client.clone(), name.to_string());
    let operator = tokio::spawn(async move {
        loop {
            reconcile_once(&c, &ctx, &n).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    Running {
        client,
        kubelet,
        operator,
    }
}

async fn wait_ready(r: &Running, name: &str, what: &str) -> kvpilot::api::KvClusterStatus {
    eventually(what, PHASE, || async {
        let status = get_cluster(&r.client, name)
            .await
            .status
            .unwrap_or_default();
        match status.condition("Ready") {
            Some(c) if c.status == "True" => Ok(status),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_naming_a_configmap_plugin_gets_its_decisions() {
    let bytes = builtin_wasm("most-caught-up");
    let digest = hex::encode(Sha256::digest(bytes));
    let r = run_cluster(
        "pp",
        "engine: {kind: valkey}\nreplicas: 1\npolicies:\n  replicaSelection: {plugin: caught-up-from-cm}\n",
    )
    .await;
    store_plugin(&r.client, "caught-up-from-cm", bytes, &digest).await;
    let status = wait_ready(&r, "pp", "election through the PolicyPlugin").await;
    let decision = status
        .last_decisions
        .iter()
        .find(|d| d.hook == "replica-selection")
        .expect("a replica-selection decision");
    assert_eq!(decision.plugin, "caught-up-from-cm");
    assert_eq!(decision.sha256, digest);
    let pp = Api::<PolicyPlugin>::all(r.client.clone())
        .get("caught-up-from-cm")
        .await
        .unwrap();
    let pp_status = pp.status.expect("status");
    assert_eq!(pp_status.sha256.as_deref(), Some(digest.as_str()));
    assert_eq!(pp_status.hooks, ["replica-selection"]);
    assert!(
        pp_status.conditions.iter().all(|c| c.status == "True"),
        "{pp_status:?}"
    );
    assert_eq!(labelled_primary(&r.client, "pp").await, status.primary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_rollout_under_writes_and_failover_through_kubernetes() {
    let r = run_cluster("kv", "engine: {kind: valkey}\nreplicas: 2\n").await;
    let status = wait_ready(&r, "kv", "bootstrap (election)").await;
    let first_primary = status.primary.clone().expect("a primary");
    assert_eq!(status.members.len(), 3);
    assert_eq!(
        labelled_primary(&r.client, "kv").await.as_ref(),
        Some(&first_primary)
    );
    let old_revision = status.update_revision.clone().expect("revision");

    // kube-proxy stand-in: the -primary Service's address follows the role label.
    let forwarder = Arc::new(
        Forwarder::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap(),
    );
    let (fc, fw) = (r.client.clone(), forwarder.clone());
    let port = r.kubelet.addr(&first_primary).await.port();
    let proxy =
        tokio::spawn(async move {
            loop {
                if let Some(p) = pods(&fc, "kv").await.into_iter().find(|p| {
                    p.labels().get("kvpilot.dev/role").map(String::as_str) == Some("primary")
                }) && let Some(ip) = p.status.and_then(|s| s.pod_ip)
                {
                    fw.set_target(Some(std::net::SocketAddr::new(ip.parse().unwrap(), port)));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    let writer = Writer::start(forwarder.local_addr(), "k8s", Duration::from_secs(300));
    eventually("writes are acknowledged", PHASE, || async {
        match writer.acked().await {
            n if n >= 200 => Ok(()),
            n => Err(format!("{n} acks")),
        }
    })
    .await;

    // Proactive rollout: a config change → a new StatefulSet revision → pods deleted in the
    // order decide chooses (replicas first, the primary after a handover).
    let api: Api<KvCluster> = Api::namespaced(r.client.clone(), NS);
    let mut kc = get_cluster(&r.client, "kv").await;
    kc.spec.config.insert("hz".into(), "11".into());
    api.replace("kv", &PostParams::default(), &kc)
        .await
        .unwrap();
    let deleted_before = r.kubelet.history().await.deleted.len();
    let status = eventually(
        "the rollout completes",
        Duration::from_secs(120),
        || async {
            let s = get_cluster(&r.client, "kv")
                .await
                .status
                .unwrap_or_default();
            let new_rev = s.update_revision.clone().unwrap_or_default();
            let done = new_rev != old_revision
                && s.members.len() == 3
                && s.members
                    .iter()
                    .all(|m| m.revision.as_deref() == Some(new_rev.as_str()))
                && s.condition("Ready").is_some_and(|c| c.status == "True");
            if done {
                Ok(s)
            } else {
                Err(format!("{:?}", s.members))
            }
        },
    )
    .await;
    let acked_at_end = writer.acked().await;
    eventually("writes continue after the rollout", PHASE, || async {
        match writer.acked().await {
            n if n >= acked_at_end + 100 => Ok(()),
            n => Err(format!("{} since", n - acked_at_end)),
        }
    })
    .await;
    let log = writer.stop().await;
    let new_primary = status.primary.clone().expect("primary");
    assert_ne!(new_primary, first_primary, "the primary was handed over");
    let history = r.kubelet.history().await;
    let deleted = &history.deleted[deleted_before..];
    assert_eq!(deleted.len(), 3, "each pod deleted once: {deleted:?}");
    assert_eq!(
        deleted.last(),
        Some(&first_primary),
        "the old primary goes last: {deleted:?}"
    );
    assert!(!status.last_decisions.is_empty());

    // 0 acknowledged writes lost, on every member.
    let seqs: Vec<u64> = log.acks.iter().map(|a| a.seq).collect();
    assert!(seqs.len() > acked_at_end);
    let addrs = r.kubelet.addrs().await;
    for (pod, addr) in &addrs {
        let missing = eventually("replicas catch up", PHASE, || async {
            match verify::missing(*addr, "k8s", &seqs).await {
                Ok(m) if m.is_empty() => Ok(m),
                Ok(m) => Err(format!("{pod}: {} missing", m.len())),
                Err(e) => Err(e),
            }
        })
        .await;
        assert!(missing.is_empty());
    }

    // Failover: SIGKILL the primary's server.
    r.kubelet.kill(&new_primary).await;
    let after = eventually("failover", PHASE, || async {
        let s = get_cluster(&r.client, "kv")
            .await
            .status
            .unwrap_or_default();
        match &s.primary {
            Some(p)
                if *p != new_primary
                    && labelled_primary(&r.client, "kv").await.as_ref() == Some(p) =>
            {
                Ok(s)
            }
            other => Err(format!("primary {other:?}")),
        }
    })
    .await;
    let promoted = after.primary.clone().unwrap();
    let keys = verify::missing(addrs[&promoted], "k8s", &seqs)
        .await
        .expect("read");
    assert!(
        keys.is_empty(),
        "the promoted replica holds every acknowledged write"
    );
    // The crashed pod comes back (in place, empty) and rejoins as a replica.
    wait_ready(&r, "kv", "the old primary rejoins").await;
    proxy.abort();
}

/// A tiny HTTP/1.1 server on 127.0.0.1 for url PolicyPlugins: `/plugin.wasm` answers 200
/// with `body`, `/moved` a 302 to it, anything else 404. Counts the requests it answered;
/// stops when dropped.
struct PluginServer {
    base: String,
    requests: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PluginServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PluginServer {
    async fn start(body: &'static [u8]) -> PluginServer {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = requests.clone();
        let location = format!("{base}/plugin.wasm");
        let task = tokio::spawn(async move {
            // At most 100 connections: far more than any test here makes.
            for _ in 0..100 {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                // The request head, at most 8 KiB within 5 s.
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                let read = tokio::time::timeout(Duration::from_secs(5), async {
                    while head.len() < 8192 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                })
                .await;
                if read.is_err() {
                    continue;
                }
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let path = String::from_utf8_lossy(&head)
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("")
                    .to_string();
                let (status, extra, payload): (&str, String, &[u8]) = match path.as_str() {
                    "/plugin.wasm" => ("200 OK", String::new(), body),
                    "/moved" => ("302 Found", format!("Location: {location}\r\n"), b""),
                    _ => ("404 Not Found", String::new(), b""),
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
                    payload.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.write_all(payload).await;
                let _ = stream.shutdown().await;
            }
        });
        PluginServer {
            base,
            requests,
            task,
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A PolicyPlugin `name` with a url source pinned to `declared`.
async fn store_url_plugin(client: &kube::Client, name: &str, url: &str, declared: &str) {
    let pp_spec: PolicyPluginSpec = serde_json::from_value(serde_json::json!({
        "source": {"url": url, "sha256": declared},
        "limits": {"timeoutMs": 500}
    }))
    .unwrap();
    Api::<PolicyPlugin>::all(client.clone())
        .create(&PostParams::default(), &PolicyPlugin::new(name, pp_spec))
        .await
        .unwrap();
}

async fn plugin_status(client: &kube::Client, name: &str) -> kvpilot::api::PolicyPluginStatus {
    Api::<PolicyPlugin>::all(client.clone())
        .get(name)
        .await
        .unwrap()
        .status
        .expect("plugin status")
}

fn condition<'a>(
    status: &'a kvpilot::api::PolicyPluginStatus,
    kind: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
        .unwrap_or_else(|| panic!("no {kind} condition: {status:?}"))
}

#[tokio::test]
async fn a_url_plugin_is_downloaded_once_checked_and_loaded() {
    let bytes = builtin_wasm("most-caught-up");
    let digest = hex::encode(Sha256::digest(bytes));
    let server = PluginServer::start(bytes).await;
    let client = fake_client().await;
    let url = format!("{}/plugin.wasm", server.base);
    store_url_plugin(&client, "caught-up-from-url", &url, &digest).await;
    create_cluster(
        &client,
        "cache",
        spec("engine: {kind: valkey}\nreplicas: 1\npolicies:\n  replicaSelection: {plugin: caught-up-from-url}\n"),
    )
    .await;
    let ctx = context(&client, 6379);
    reconcile_once(&client, &ctx, "cache").await;

    let pp_status = plugin_status(&client, "caught-up-from-url").await;
    assert_eq!(
        condition(&pp_status, "Loaded").status,
        "True",
        "{pp_status:?}"
    );
    assert_eq!(
        condition(&pp_status, "Valid").status,
        "True",
        "{pp_status:?}"
    );
    assert_eq!(pp_status.hooks, ["replica-selection"]);
    assert_eq!(pp_status.sha256.as_deref(), Some(digest.as_str()));
    let status = get_cluster(&client, "cache").await.status.expect("status");
    assert!(
        status
            .condition("PolicyFailed")
            .is_none_or(|c| c.status == "False"),
        "{status:?}"
    );
    assert_eq!(server.requests(), 1);

    // Later reconciles use the kept bytes.
    reconcile_once(&client, &ctx, "cache").await;
    assert_eq!(server.requests(), 1);
    let pp_status = plugin_status(&client, "caught-up-from-url").await;
    assert_eq!(
        condition(&pp_status, "Valid").status,
        "True",
        "{pp_status:?}"
    );
}

#[tokio::test]
async fn a_url_plugin_with_the_wrong_sha256_or_a_redirect_is_refused() {
    let bytes = builtin_wasm("most-caught-up");
    let digest = hex::encode(Sha256::digest(bytes));
    let wrong = hex::encode(Sha256::digest(b"something else"));
    let server = PluginServer::start(bytes).await;
    let client = fake_client().await;
    store_url_plugin(
        &client,
        "tampered-url",
        &format!("{}/plugin.wasm", server.base),
        &wrong,
    )
    .await;
    store_url_plugin(
        &client,
        "moved-url",
        &format!("{}/moved", server.base),
        &digest,
    )
    .await;
    let ctx = context(&client, 6379);
    for (cluster, plugin, expected) in [
        ("tampered", "tampered-url", "sha256 mismatch"),
        ("moved", "moved-url", "redirects are not followed"),
    ] {
        create_cluster(
            &client,
            cluster,
            spec(&format!(
                "engine: {{kind: valkey}}\nreplicas: 1\npolicies:\n  replicaSelection: {{plugin: {plugin}}}\n"
            )),
        )
        .await;
        reconcile_once(&client, &ctx, cluster).await;

        let status = get_cluster(&client, cluster).await.status.expect("status");
        let failed = status.condition("PolicyFailed").expect("PolicyFailed");
        assert_eq!(failed.status, "True");
        assert!(failed.message.contains(expected), "{}", failed.message);
        let pp_status = plugin_status(&client, plugin).await;
        assert_eq!(condition(&pp_status, "Loaded").status, "False");
        assert_eq!(condition(&pp_status, "Valid").status, "False");
        assert!(pp_status.sha256.is_none());
        assert!(pp_status.hooks.is_empty());
        let message = pp_status.message.expect("message");
        assert!(message.contains(expected), "{message}");
        if plugin == "tampered-url" {
            assert!(
                message.contains(&wrong) && message.contains(&digest),
                "{message}"
            );
        }
    }
    // Bytes that did not match were not kept: the next reconcile asks again.
    let before = server.requests();
    reconcile_once(&client, &ctx, "tampered").await;
    assert_eq!(server.requests(), before + 1);
}

#[tokio::test]
async fn members_carry_their_node_and_the_nodes_zone() {
    use k8s_openapi::api::core::v1::{Node, Pod};
    use kvpilot::platform::Platform;
    use kvpilot::platform::kubernetes::platform::{KubernetesPlatform, LABEL_ZONE};

    let client = fake_client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    for (name, zone) in [("node-a", Some("eu-west-1a")), ("node-b", None)] {
        let mut node = Node::default();
        node.metadata.name = Some(name.into());
        if let Some(zone) = zone {
            node.metadata.labels = Some(BTreeMap::from([(LABEL_ZONE.into(), zone.into())]));
        }
        nodes
            .create(&PostParams::default(), &node)
            .await
            .expect("node");
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    // kv-s0-0 on a zoned node, kv-s0-1 on an unzoned one, kv-s0-2 on a node that does not
    // exist (yet): the reconcile goes on, without a zone for it.
    for (ordinal, node) in [(0, "node-a"), (1, "node-b"), (2, "node-gone")] {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": format!("kv-s0-{ordinal}"),
                "namespace": NS,
                "labels": {"kvpilot.dev/cluster": "kv", "controller-revision-hash": "rev-1"},
            },
            "spec": {"nodeName": node, "containers": [{"name": "server", "image": "valkey"}]},
        }))
        .expect("pod");
        pods.create(&PostParams::default(), &pod)
            .await
            .expect("pod");
        let status = serde_json::json!({"status": {
            "phase": "Running",
            "podIP": format!("10.0.0.{}", ordinal + 1),
        }});
        pods.patch_status(
            &format!("kv-s0-{ordinal}"),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&status),
        )
        .await
        .expect("pod status");
    }

    let platform = KubernetesPlatform::new(client, NS, "kv", 1, 3, 6379);
    let members = platform.members().await.expect("members");
    let seen: Vec<(&str, Option<&str>, Option<&str>)> = members
        .iter()
        .map(|m| (m.name.as_str(), m.node.as_deref(), m.zone.as_deref()))
        .collect();
    assert_eq!(
        seen,
        [
            ("kv-s0-0", Some("node-a"), Some("eu-west-1a")),
            ("kv-s0-1", Some("node-b"), None),
            ("kv-s0-2", Some("node-gone"), None),
        ]
    );
    assert!(members.iter().all(|m| m.running), "{members:?}");
}

/// `CONFIG GET key` on a member.
async fn config_get(addr: std::net::SocketAddr, key: &str) -> Option<String> {
    let client = redis::Client::open(format!("redis://{addr}/")).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let pairs: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(key)
        .query_async(&mut conn)
        .await
        .expect("CONFIG GET");
    pairs.get(1).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_snapshots_start_with_save_off_and_show_in_status() {
    let r = run_cluster(
        "snap",
        "engine: {kind: valkey}\nreplicas: 2\nsnapshots: {mode: replicasOnly, schedule: \"0 3 * * *\", staggerInterval: 10m}\n",
    )
    .await;
    let status = eventually("snapshot schedules in status", PHASE, || async {
        let s = get_cluster(&r.client, "snap")
            .await
            .status
            .unwrap_or_default();
        let ready = s.condition("Ready").is_some_and(|c| c.status == "True");
        let scheduled = s
            .members
            .iter()
            .filter(|m| m.snapshot_schedule.is_some())
            .count();
        if ready && scheduled == 2 {
            Ok(s)
        } else {
            Err(format!(
                "ready {ready}, {scheduled} schedules: {:?}",
                s.members
            ))
        }
    })
    .await;
    let primary = status.primary.clone().expect("a primary");
    let mut crons = Vec::new();
    for m in &status.members {
        if m.name == primary {
            assert_eq!(m.snapshot_schedule, None, "{m:?}");
            assert_eq!(m.next_snapshot_time, None, "{m:?}");
        } else {
            crons.push(m.snapshot_schedule.clone().expect("a schedule"));
            assert!(m.next_snapshot_time.is_some(), "{m:?}");
        }
        // Fresh servers have made no snapshot.
        assert_eq!(m.last_snapshot_time, None, "{m:?}");
        let addr = r.kubelet.addr(&m.name).await;
        assert_eq!(
            config_get(addr, "save").await.as_deref(),
            Some(""),
            "{}",
            m.name
        );
        assert_eq!(
            config_get(addr, "rdb-del-sync-files").await.as_deref(),
            Some("no"),
            "{}",
            m.name
        );
    }
    crons.sort();
    assert_eq!(crons, ["0 3 * * *", "10 3 * * *"]);
    // From the first second: the pods' config says so, and no drift correction was needed.
    let cms: Api<ConfigMap> = Api::namespaced(r.client.clone(), NS);
    let rendered: Vec<String> = cms
        .list(&Default::default())
        .await
        .expect("config maps")
        .items
        .into_iter()
        .filter_map(|cm| cm.data?.get("server.conf").cloned())
        .collect();
    assert!(!rendered.is_empty());
    assert!(
        rendered
            .iter()
            .all(|text| text.lines().any(|l| l == "save \"\"")),
        "{rendered:?}"
    );
    // Twenty more reconciles: the schedule decision is not recorded at each of them, only
    // when its answer changed (while a member's role was not known yet, at most).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = get_cluster(&r.client, "snap")
        .await
        .status
        .unwrap_or_default();
    let schedule_decisions = status
        .last_decisions
        .iter()
        .filter(|d| d.hook == "snapshot-schedule")
        .count();
    assert!(
        (1..=3).contains(&schedule_decisions),
        "{:#?}",
        status.last_decisions
    );
    // No member was corrected: nobody ran CONFIG SET on them (the operator's drift
    // correction would have).
    for (name, addr) in r.kubelet.addrs().await {
        let client = redis::Client::open(format!("redis://{addr}/")).expect("client");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut conn)
            .await
            .expect("INFO commandstats");
        assert!(
            stats.contains("cmdstat_config|get:"),
            "{name}: the operator's CONFIG GET is counted: {stats}"
        );
        assert!(!stats.contains("cmdstat_config|set:"), "{name}: {stats}");
    }
}
