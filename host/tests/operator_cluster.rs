//! Cluster mode (`spec.shards` > 1) through Kubernetes: the operator's reconcile against the
//! in-memory API, with the StatefulSet/kubelet stand-in backing each Pod with a real
//! `valkey-server` in cluster mode on its own 127.0.0.x (bus port from the rendered config,
//! the announced name from the pod's args, `nodes.conf` on the pod's claim).
//!
//! The stand-in restarts a crashed container at once, as a real kubelet restarts a first
//! crash: the killed primary comes back with its `nodes.conf` (owning its slots) before the
//! operator can promote its replica. It comes back parked (rule 2, docs/architecture.md), so
//! its replica does not sync from it, and the operator forces the replica over.

mod operator_support;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::Api;
use kvpilot::api::{KvClusterSpec, KvClusterStatus};
use kvpilot::demo::cluster_writer::{ClusterWriter, missing};
use kvpilot::engine::{Client, Dialect, HostPort};
use kvpilot::platform::local::server::{free_port, next_loopback_ip};
use operator_support::kubelet::Kubelet;
use operator_support::*;
use std::time::{Duration, Instant};

const PHASE: Duration = Duration::from_secs(90);
const NAME: &str = "kvc";

/// The operator: one reconcile every 100 ms with a context of its own; aborted when dropped
/// (also when the test fails).
struct Operator(tokio::task::JoinHandle<()>);

impl Drop for Operator {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn operator_loop(client: &kube::Client, port: u16) -> Operator {
    let ctx = context(client, port);
    let c = client.clone();
    Operator(tokio::spawn(async move {
        loop {
            reconcile_once(&c, &ctx, NAME).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }))
}

async fn status(client: &kube::Client) -> KvClusterStatus {
    get_cluster(client, NAME).await.status.unwrap_or_default()
}

fn condition_true(s: &KvClusterStatus, kind: &str) -> bool {
    s.condition(kind).is_some_and(|c| c.status == "True")
}

/// Formed and settled: every shard ready, `ClusterFormed`, `SlotsAssigned` and `Ready` true.
async fn wait_formed(client: &kube::Client, what: &str) -> KvClusterStatus {
    eventually(what, PHASE, || async {
        let s = status(client).await;
        let ready = s.cluster.as_ref().map(|c| c.shards_ready.as_str()) == Some("3/3");
        if ready
            && condition_true(&s, "ClusterFormed")
            && condition_true(&s, "SlotsAssigned")
            && condition_true(&s, "Ready")
        {
            Ok(s)
        } else {
            Err(format!("{:?} {:?}", s.cluster, s.conditions))
        }
    })
    .await
}

/// Every pod's address (the announced names do not resolve on this host).
async fn seeds(kubelet: &Kubelet) -> Vec<HostPort> {
    kubelet
        .addrs()
        .await
        .values()
        .map(|a| HostPort::new(a.ip().to_string(), a.port()))
        .collect()
}

/// A cluster writer (keys `prefix`-…, for at most `limit`) over every pod, once it has `n`
/// acknowledged writes.
async fn writing(kubelet: &Kubelet, prefix: &str, limit: Duration, n: usize) -> ClusterWriter {
    let writer = ClusterWriter::start(seeds(kubelet).await, prefix, limit)
        .await
        .expect("cluster writer");
    more_acks(&writer, n, "writes are acknowledged").await;
    writer
}

/// Waits until `writer` has `n` more acknowledged writes than now; returns the count now.
async fn more_acks(writer: &ClusterWriter, n: usize, what: &str) -> usize {
    let from = writer.acked().await;
    eventually(what, PHASE, || async {
        match writer.acked().await {
            a if a >= from + n => Ok(()),
            a => Err(format!("{} acks since", a - from)),
        }
    })
    .await;
    from
}

/// Every write in `acked` (sequence numbers of the writer with `prefix`) reads back. A read
/// that fails (the announced names do not resolve here, so a redirect can cost a failed
/// connect) is tried again within [`PHASE`]; a key read back missing fails at once.
async fn assert_none_lost(kubelet: &Kubelet, prefix: &str, acked: &[u64]) {
    let lost = eventually("every acknowledged key read back", PHASE, || async {
        missing(seeds(kubelet).await, prefix, acked)
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
}

/// Three shards × (primary + replica) of `engine` on claims.
fn three_shards(engine: &str, version: &str) -> KvClusterSpec {
    spec(&format!(
        "engine: {{kind: {engine}, version: \"{version}\"}}\nreplicas: 1\nshards: 3\nstorage: {{size: 1Gi}}\n"
    ))
}

/// Three shards × (primary + replica) on claims: the objects, the bootstrap to
/// `cluster_state:ok` with per-shard status, conditions and the printer column's data, then
/// a SIGKILL of shard 1's primary under a cluster writer: the operator promotes its replica,
/// the killed member rejoins (its `nodes.conf` on its claim) as a replica, and no
/// acknowledged write is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_shards_bootstrap_and_a_killed_primary_is_promoted_without_loss() {
    bootstrap_and_failover("valkey", "8.0").await;
}

/// The same on Redis 7.0 (`redis-server` in the pods).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_redis_shards_bootstrap_and_a_killed_primary_is_promoted_without_loss() {
    bootstrap_and_failover("redis", "7.0").await;
}

async fn bootstrap_and_failover(engine: &str, version: &str) {
    let client = fake_client().await;
    let port = free_port(next_loopback_ip()).expect("port");
    create_cluster(&client, NAME, three_shards(engine, version)).await;
    let kubelet = Kubelet::start(&client, port);
    let _operator = operator_loop(&client, port);

    // The objects: a StatefulSet and a PDB per shard, the bus port, no primary endpoint.
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), NS);
    let statefulsets = eventually("three StatefulSets", PHASE, || async {
        let list = sts_api
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        match list.items.len() {
            3 => Ok(list.items),
            n => Err(format!("{n} StatefulSets")),
        }
    })
    .await;
    let mut names: Vec<String> = statefulsets.iter().map(|s| s.name_any()).collect();
    names.sort();
    assert_eq!(names, ["kvc-s0", "kvc-s1", "kvc-s2"]);
    for sts in &statefulsets {
        assert_eq!(sts.spec.as_ref().unwrap().replicas, Some(2));
    }
    let pdb_api = Api::<PodDisruptionBudget>::namespaced(client.clone(), NS);
    let pdbs = eventually("three PDBs", PHASE, || async {
        let list = pdb_api
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        match list.items.len() {
            3 => Ok(list),
            n => Err(format!("{n} PDBs")),
        }
    })
    .await;
    let mut pdb_names: Vec<String> = pdbs.items.iter().map(|p| p.name_any()).collect();
    pdb_names.sort();
    assert_eq!(pdb_names, ["kvc-s0", "kvc-s1", "kvc-s2"]);
    for p in &pdbs.items {
        assert_eq!(
            p.spec.as_ref().unwrap().max_unavailable,
            Some(IntOrString::Int(1))
        );
    }
    let services = Api::<Service>::namespaced(client.clone(), NS)
        .list(&Default::default())
        .await
        .unwrap();
    let mut svc_names: Vec<String> = services.items.iter().map(|s| s.name_any()).collect();
    svc_names.sort();
    assert_eq!(
        svc_names,
        ["kvc-headless", "kvc-seeds"],
        "no -primary/-replicas"
    );
    let headless = services
        .items
        .iter()
        .find(|s| s.name_any() == "kvc-headless")
        .unwrap();
    assert!(
        headless
            .spec
            .as_ref()
            .unwrap()
            .ports
            .iter()
            .flatten()
            .any(|p| p.name.as_deref() == Some("bus") && p.port == 16379),
        "{headless:?}"
    );

    // Bootstrap, from empty members, to a formed cluster.
    let s = wait_formed(&client, "the cluster forms").await;
    let cluster = s.cluster.clone().expect("status.cluster");
    assert_eq!(cluster.shards.len(), 3);
    let ranges = [["0-5460"], ["5461-10922"], ["10923-16383"]];
    for (i, shard) in cluster.shards.iter().enumerate() {
        assert_eq!(shard.shard as usize, i);
        assert!(shard.ready, "{shard:?}");
        assert_eq!(shard.cluster_state, "ok", "{shard:?}");
        assert_eq!(shard.slots, ranges[i], "{shard:?}");
        let primary = shard.primary.clone().expect("a primary");
        assert!(primary.starts_with(&format!("kvc-s{i}-")), "{primary}");
        assert_eq!(shard.nodes.len(), 2, "{shard:?}");
        for n in &shard.nodes {
            assert!(n.member.starts_with(&format!("kvc-s{i}-")), "{n:?}");
            assert_eq!(n.node_id.len(), 40, "{n:?}");
        }
    }
    let mut want_seeds: Vec<String> = (0..3)
        .flat_map(|s| (0..2).map(move |i| format!("kvc-s{s}-{i}.kvc-headless.shop.svc:{port}")))
        .collect();
    want_seeds.sort();
    let mut got_seeds = cluster.seeds.clone();
    got_seeds.sort();
    assert_eq!(got_seeds, want_seeds);
    assert!(condition_true(&s, "Ready"), "{:?}", s.conditions);
    assert!(
        !condition_true(&s, "ShardsChangeBlocked"),
        "{:?}",
        s.conditions
    );
    // The printer column reads `.status.cluster.shardsReady`.
    let raw = serde_json::to_value(&s).unwrap();
    assert_eq!(raw["cluster"]["shardsReady"], "3/3");

    // Every member announces its stable name, which the others know it by.
    let addrs = kubelet.addrs().await;
    assert_eq!(addrs.len(), 6);
    let some = addrs.values().next().unwrap();
    let dialect = if engine == "redis" {
        Dialect::Redis
    } else {
        Dialect::Valkey
    };
    let view = Client::connect(
        HostPort::new(some.ip().to_string(), some.port()),
        None,
        dialect,
    )
    .await
    .expect("connect")
    .cluster_nodes()
    .await
    .expect("CLUSTER NODES");
    for (pod, addr) in &addrs {
        let node = view
            .nodes
            .iter()
            .find(|n| n.ip == addr.ip().to_string())
            .unwrap_or_else(|| panic!("{pod} unknown to its peer: {view:?}"));
        assert_eq!(
            node.hostname.as_deref(),
            Some(format!("{pod}.kvc-headless.shop.svc").as_str())
        );
        assert_eq!(node.bus_port, 16379);
    }
    // The pods name the bus port.
    for pod in Api::<Pod>::namespaced(client.clone(), NS)
        .list(&Default::default())
        .await
        .unwrap()
        .items
    {
        let ports = pod.spec.unwrap().containers[0].ports.clone().unwrap();
        assert!(ports.iter().any(|p| p.container_port == 16379));
    }

    // A SIGKILL of shard 1's primary under writes.
    let writer = writing(&kubelet, "k8s", Duration::from_secs(240), 300).await;
    let victim = cluster.shards[1].primary.clone().unwrap();
    kubelet.kill(&victim).await;
    let killed = Instant::now();
    let promoted = eventually("shard 1's replica is promoted", PHASE, || async {
        let s = status(&client).await;
        let shard = s
            .cluster
            .as_ref()
            .map(|c| c.shards[1].clone())
            .unwrap_or_default();
        match &shard.primary {
            Some(p) if *p != victim && shard.slots == ["5461-10922"] => Ok(p.clone()),
            other => Err(format!(
                "primary {other:?}, {shard:?}; members {:?}; conditions {:?}",
                s.members
                    .iter()
                    .map(|m| format!("{} {} {}", m.name, m.role, m.ready))
                    .collect::<Vec<_>>(),
                s.conditions
                    .iter()
                    .map(|c| format!("{}={} {}", c.type_, c.status, c.message))
                    .collect::<Vec<_>>(),
            )),
        }
    })
    .await;
    let promote_ms = killed.elapsed().as_millis();
    let acked_then = more_acks(&writer, 300, "writes go on").await;
    // The killed member comes back on its claim (nodes.conf) and rejoins as a replica.
    let s = wait_formed(&client, "the old primary rejoins as a replica").await;
    let shard1 = &s.cluster.as_ref().unwrap().shards[1];
    assert_eq!(shard1.primary.as_deref(), Some(promoted.as_str()));
    assert!(
        shard1.nodes.iter().any(|n| n.member == victim),
        "{shard1:?}"
    );
    assert!(
        shard1.config_epoch > cluster.shards[1].config_epoch,
        "{shard1:?}"
    );
    let history = kubelet.history().await;
    assert!(
        !history.deleted.contains(&victim),
        "the crashed container restarts in place: {history:?}"
    );

    let log = writer.stop().await;
    let acked = log.acked();
    assert!(acked.len() > acked_then, "{} acks", acked.len());
    assert_none_lost(&kubelet, "k8s", &acked).await;
    eprintln!(
        "operator_cluster {engine}: SIGKILL → {promoted} promoted (status) in {promote_ms} ms; {} acknowledged writes, 0 lost; {} MOVED, {} refreshes",
        acked.len(),
        log.redirects.moved,
        log.redirects.refreshes
    );
}

/// The hole a real kubelet opens: it restarts a crashed container at once, here while the
/// operator is down, so the primary is back with its `nodes.conf` (owning its slots) and
/// without the writes since its last save, before anyone could promote its replica. It
/// starts parked (rule 2, docs/architecture.md): its replica does not sync from it and keeps
/// every acknowledged write; the operator, back, forces the replica over and the old
/// primary rejoins as its replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_restarted_by_the_kubelet_while_the_operator_is_down_is_not_synced_from() {
    let client = fake_client().await;
    let port = free_port(next_loopback_ip()).expect("port");
    create_cluster(&client, NAME, three_shards("valkey", "8.0")).await;
    let kubelet = Kubelet::start(&client, port);
    let operator = operator_loop(&client, port);
    let formed = wait_formed(&client, "formed").await;
    let victim = formed.cluster.as_ref().unwrap().shards[1]
        .primary
        .clone()
        .unwrap();
    let replica = if victim.ends_with("-0") {
        "kvc-s1-1"
    } else {
        "kvc-s1-0"
    };
    let connect = |addr: std::net::SocketAddr| async move {
        Client::connect(
            HostPort::new(addr.ip().to_string(), addr.port()),
            None,
            Dialect::Valkey,
        )
        .await
    };

    // Writes over every slot, all of them on the replicas before the crash.
    let writer = writing(&kubelet, "kube", Duration::from_secs(120), 1000).await;
    let log = writer.stop().await;
    let (p_addr, r_addr) = (kubelet.addr(&victim).await, kubelet.addr(replica).await);
    let held = eventually(
        "the replica holds what its primary holds",
        PHASE,
        || async {
            let p = connect(p_addr).await.map_err(|e| e.to_string())?;
            let r = connect(r_addr).await.map_err(|e| e.to_string())?;
            let (p, r) = (
                p.observe().await.map_err(|e| e.to_string())?,
                r.observe().await.map_err(|e| e.to_string())?,
            );
            match (p.keys, r.keys) {
                (Some(pk), Some(rk)) if pk > 0 && pk == rk && p.offset() == r.offset() => Ok(rk),
                other => Err(format!(
                    "keys {other:?}, offsets {:?} {:?}",
                    p.offset(),
                    r.offset()
                )),
            }
        },
    )
    .await;

    // The operator goes away; the primary crashes and the kubelet restarts it at once.
    drop(operator);
    kubelet.kill(&victim).await;
    eventually("the kubelet restarted the primary", PHASE, || async {
        let c = connect(kubelet.addr(&victim).await)
            .await
            .map_err(|e| e.to_string())?;
        c.ping().await.map_err(|e| e.to_string())
    })
    .await;
    // Long enough for the replica to have reconnected and full-synced if it were allowed
    // (its reconnect period is 1 s): it must still hold everything.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = connect(r_addr)
        .await
        .expect("connect to the replica")
        .observe()
        .await
        .expect("observe the replica");
    assert_eq!(
        still.keys,
        Some(held),
        "the replica of a primary restarted without its data must keep its data"
    );

    // The operator is back: the replica that holds the data becomes the primary.
    let _operator = operator_loop(&client, port);
    let s = wait_formed(&client, "formed again after the restarted primary").await;
    let shard1 = &s.cluster.as_ref().unwrap().shards[1];
    assert_eq!(shard1.primary.as_deref(), Some(replica), "{shard1:?}");
    let acked = log.acked();
    assert_none_lost(&kubelet, "kube", &acked).await;
}

/// Changing `spec.shards` of a live cluster is not applied (resharding is not built): the
/// `ShardsChangeBlocked` condition says so, and the objects stay as they are.
#[tokio::test]
async fn a_shard_count_change_on_a_live_cluster_is_blocked_with_a_condition() {
    let client = fake_client().await;
    create_cluster(&client, NAME, spec("engine: {kind: valkey}\nreplicas: 1\n")).await;
    let ctx = context(&client, 6379);
    reconcile_once(&client, &ctx, NAME).await;
    patch_spec(&client, NAME, serde_json::json!({"shards": 3})).await;
    reconcile_once(&client, &ctx, NAME).await;
    let s = status(&client).await;
    let blocked = s.condition("ShardsChangeBlocked").expect("condition");
    assert_eq!(blocked.status, "True");
    assert!(
        blocked.message.contains("spec.shards") && blocked.message.contains("runs 1"),
        "{}",
        blocked.message
    );
    assert!(
        events_about(&client, NAME)
            .await
            .iter()
            .any(|e| e.reason.as_deref() == Some("ShardsChangeNotApplied")),
        "a Warning event says it"
    );
    let sts = Api::<StatefulSet>::namespaced(client.clone(), NS)
        .list(&Default::default())
        .await
        .unwrap();
    assert_eq!(sts.items.len(), 1);
    let services = Api::<Service>::namespaced(client.clone(), NS)
        .list(&Default::default())
        .await
        .unwrap();
    assert!(services.items.iter().any(|s| s.name_any() == "kvc-primary"));
    // Set back: the condition clears.
    patch_spec(&client, NAME, serde_json::json!({"shards": 1})).await;
    reconcile_once(&client, &ctx, NAME).await;
    let s = status(&client).await;
    assert_eq!(s.condition("ShardsChangeBlocked").unwrap().status, "False");
}

/// A config change rolls every member through Kubernetes, shard by shard: pods are deleted
/// (the StatefulSets recreate them on their claims), replicas first, each shard's primary only
/// after a `CLUSTER FAILOVER` to its replica, under a cluster writer that loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_change_rolls_each_shard_through_kubernetes_without_loss() {
    let client = fake_client().await;
    let port = free_port(next_loopback_ip()).expect("port");
    create_cluster(&client, NAME, three_shards("valkey", "8.0")).await;
    let kubelet = Kubelet::start(&client, port);
    let _operator = operator_loop(&client, port);
    let before = wait_formed(&client, "the cluster forms").await;
    let old_revision = before.update_revision.clone().expect("revision");
    let old_primaries: Vec<String> = before
        .cluster
        .as_ref()
        .unwrap()
        .shards
        .iter()
        .map(|s| s.primary.clone().unwrap())
        .collect();
    let writer = writing(&kubelet, "roll", Duration::from_secs(300), 300).await;
    let deleted_before = kubelet.history().await.deleted.len();
    patch_spec(&client, NAME, serde_json::json!({"config": {"hz": "11"}})).await;
    let after = eventually(
        "the rollout completes",
        Duration::from_secs(240),
        || async {
            let s = status(&client).await;
            let new = s.update_revision.clone().unwrap_or_default();
            let done = !new.is_empty()
                && new != old_revision
                && s.members.len() == 6
                && s.members
                    .iter()
                    .all(|m| m.revision.as_deref() == Some(new.as_str()))
                && s.cluster.as_ref().map(|c| c.shards_ready.as_str()) == Some("3/3")
                && condition_true(&s, "ClusterFormed");
            if done {
                Ok(s)
            } else {
                Err(format!(
                    "{:?} / {new}; {:?}",
                    s.members
                        .iter()
                        .map(|m| format!("{} {} {:?}", m.name, m.role, m.revision))
                        .collect::<Vec<_>>(),
                    s.condition("Progressing").map(|c| c.message.clone())
                ))
            }
        },
    )
    .await;
    more_acks(&writer, 200, "writes go on after the rollout").await;
    let log = writer.stop().await;
    let history = kubelet.history().await;
    let deleted = &history.deleted[deleted_before..];
    assert_eq!(deleted.len(), 6, "each pod deleted once: {deleted:?}");
    for (shard, old) in old_primaries.iter().enumerate() {
        // Within the shard the primary goes last, after its handover.
        let mine: Vec<&String> = deleted
            .iter()
            .filter(|p| p.starts_with(&format!("kvc-s{shard}-")))
            .collect();
        assert_eq!(mine.last(), Some(&old), "shard {shard}: {deleted:?}");
        let now = after.cluster.as_ref().unwrap().shards[shard]
            .primary
            .clone();
        assert_ne!(now.as_ref(), Some(old), "shard {shard} handed over");
    }
    let acked = log.acked();
    assert_none_lost(&kubelet, "roll", &acked).await;
    eprintln!(
        "operator_cluster rollout: {} acknowledged writes, 0 lost, longest wait for one key {} ms",
        acked.len(),
        log.max_key_wait().as_millis()
    );
}
