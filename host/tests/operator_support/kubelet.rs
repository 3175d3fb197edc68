//! A stand-in for the StatefulSet controller and the kubelet, over the fake API:
//! - each StatefulSet gets `status.updateRevision` = `<name>-<digest of its pod template>` and
//!   `status.observedGeneration` = its generation;
//! - each missing Pod is created with the template's labels, the update revision's
//!   `controller-revision-hash`, and a real server (the container's command: `valkey-server` or
//!   `redis-server`) on a fresh 127.0.0.x pod IP, started
//!   as a replica of the pod labelled primary or parked when there is none (what the rendered
//!   `replicaof <name>-primary` resolves to), with the rendered config's settings;
//! - a deleted Pod's server gets SIGTERM and the Pod is recreated on the current update revision;
//!   a Pod force-deleted (`gracePeriodSeconds: 0`) gets SIGKILL 2 s after the SIGTERM, as a
//!   real kubelet's minimum window, while its replacement may already start;
//! - when a StatefulSet's `replicas` shrinks, its Pods at ordinals past the new count are
//!   deleted and their servers get SIGTERM (the real controller deletes the highest ordinals,
//!   whatever role they have: that is what the reconciler must guard against);
//! - with [`Kubelet::start_on_nodes`], pod ordinal `i` is scheduled on node `i % nodes`
//!   (`spec.nodeName`), so zone-aware policies see zones;
//! - a server that dies is restarted in place after [`restart_delay`]: at once the first time,
//!   then with the kubelet's back-off (crash loop);
//! - like a kubelet, it starts a container only once the Secrets its environment and volumes
//!   name exist (until then the Pod is `Pending`), writes each Secret volume to disk where the
//!   rendered config expects its mount, and expands `$(VAR)` in the container args. So the
//!   rendered TLS settings (`port 0`, `tls-port`, the certificate files) and auth settings
//!   (`requirepass`/`masterauth` from the args, `masteruser`, `aclfile`) are honoured.
//!
//! - cluster mode (`cluster-enabled yes` rendered): the server runs with the rendered cluster
//!   settings ([`ServerCluster`]; any rendered cluster setting the stand-in would not pass on
//!   unchanged is an error, as is `replicaof` beside `cluster-enabled`, which a real server
//!   refuses), its bus port from `cluster-port` free on its pod IP, and the name the args give
//!   `--cluster-announce-hostname` once `$(VAR)` is expanded (the downward API's
//!   `metadata.name` included), parked as the args' `--user default … -psync -sync` says
//!   (the server applies exactly those rules). Those names do not resolve here: clients reach members by IP;
//! - with `volumeClaimTemplates` (`spec.storage`) a pod's data directory is its claim: it
//!   survives a crash and a new pod of the same name, `nodes.conf` and all. Without, each
//!   container start gets a fresh directory (harsher than an emptyDir, which survives a
//!   container restart).
//!
//! Every process is killed when the [`Kubelet`] is dropped (also on panic).

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, PodTemplateSpec, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use kvpilot::platform::local::PARKED;
use kvpilot::platform::local::server::{
    RESERVED_KEYS, Server, ServerCluster, ServerGuard, ServerSpec, ServerTls, next_loopback_ip,
};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

use super::NS;

/// A force-deleted pod's container gets SIGTERM and, this much later, SIGKILL: a real
/// kubelet never grants less (`minimumGracePeriodInSeconds`), whatever the deletion asked.
pub const FORCE_KILL_AFTER: Duration = Duration::from_secs(2);
/// How long a crashed container stays down before the kubelet restarts it, after `restarts`
/// earlier restarts of this pod: like a real kubelet, the first crash is restarted at once
/// (the next sync) and later ones back off from 10 s, doubling, up to 5 min (CrashLoopBackOff).
/// A delay here would give the operator a head start production does not give it.
pub fn restart_delay(restarts: u32) -> Duration {
    match restarts {
        0 => Duration::ZERO,
        n => Duration::from_secs(10u64.saturating_mul(1 << (n - 1).min(5)).min(300)),
    }
}
/// Period of the stand-in's loop.
const TICK: Duration = Duration::from_millis(50);
/// Rendered settings the stand-in turns into [`ServerSpec`] fields instead of passing on.
const TLS_KEYS: &[&str] = &[
    "tls-port",
    "tls-cert-file",
    "tls-key-file",
    "tls-ca-cert-file",
    "tls-replication",
];

struct Member {
    uid: String,
    server: Server,
    ip: Ipv4Addr,
    revision: String,
    restart_at: Option<Instant>,
    /// Container restarts so far (the kubelet's back-off grows with them).
    restarts: u32,
}

/// What the stand-in did, for assertions.
#[derive(Debug, Default, Clone)]
pub struct History {
    /// Pods whose deletion was seen, in order.
    pub deleted: Vec<String>,
    /// Pods created, with their revision, in order.
    pub created: Vec<(String, String)>,
    /// Pods the StatefulSet controller removed because `replicas` shrank, in order, with the
    /// role label each carried when it was removed.
    pub removed: Vec<(String, Option<String>)>,
}

/// A Pod that exists but whose container waits for its Secrets.
struct Pending {
    uid: String,
    ip: Ipv4Addr,
    revision: String,
}

#[derive(Default)]
struct State {
    members: HashMap<String, Member>,
    pending: HashMap<String, Pending>,
    history: History,
    incarnation: u32,
}

pub struct Kubelet {
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
    _guard: Arc<ServerGuard>,
    _dir: tempfile::TempDir,
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
        // `_guard` kills every server when the last reference (the aborted task's) is gone.
    }
}

struct Env {
    client: Client,
    port: u16,
    root: PathBuf,
    guard: Arc<ServerGuard>,
    /// Node names pods are scheduled on, by ordinal (none: pods have no node).
    nodes: Vec<String>,
}

impl Kubelet {
    /// Starts the stand-in for namespace [`NS`]; members serve on `port`.
    pub fn start(client: &Client, port: u16) -> Kubelet {
        Kubelet::start_on_nodes(client, port, Vec::new())
    }

    /// [`Kubelet::start`], scheduling pod ordinal `i` on `nodes[i % nodes.len()]`, as a
    /// scheduler would bind it (the Node objects are the test's to create).
    pub fn start_on_nodes(client: &Client, port: u16, nodes: Vec<String>) -> Kubelet {
        let dir = tempfile::tempdir().expect("tempdir");
        let guard = Arc::new(ServerGuard::new());
        guard.track_dir(dir.path());
        let state = Arc::new(Mutex::new(State::default()));
        let env = Env {
            client: client.clone(),
            port,
            root: dir.path().to_path_buf(),
            guard: guard.clone(),
            nodes,
        };
        let task_state = state.clone();
        let task = tokio::spawn(async move {
            loop {
                if let Err(e) = step(&env, &task_state).await {
                    eprintln!("kubelet stand-in: {e}");
                }
                tokio::time::sleep(TICK).await;
            }
        });
        Kubelet {
            state,
            task,
            _guard: guard,
            _dir: dir,
        }
    }

    /// SIGKILLs the server of `pod`, as a crash would.
    pub async fn kill(&self, pod: &str) {
        let mut state = self.state.lock().await;
        let m = state.members.get_mut(pod).expect("a running pod");
        m.server.kill().expect("kill");
    }

    /// SIGSTOPs the server of `pod`: it keeps its connections but answers nothing, as a
    /// member behind a network partition or a hung process.
    pub async fn pause(&self, pod: &str) {
        self.state.lock().await.members[pod]
            .server
            .pause()
            .expect("SIGSTOP");
    }

    /// SIGCONTs a server paused by [`Kubelet::pause`].
    pub async fn resume(&self, pod: &str) {
        self.state.lock().await.members[pod]
            .server
            .resume()
            .expect("SIGCONT");
    }

    /// The data directory of `pod`'s server (to adopt it: pause, resume).
    pub async fn server_dir(&self, pod: &str) -> PathBuf {
        self.state.lock().await.members[pod]
            .server
            .dir()
            .to_path_buf()
    }

    /// The address of `pod`'s server.
    pub async fn addr(&self, pod: &str) -> SocketAddr {
        self.state.lock().await.members[pod].server.addr()
    }

    /// Every pod's server address.
    pub async fn addrs(&self) -> BTreeMap<String, SocketAddr> {
        let state = self.state.lock().await;
        state
            .members
            .iter()
            .map(|(n, m)| (n.clone(), m.server.addr()))
            .collect()
    }

    pub async fn history(&self) -> History {
        self.state.lock().await.history.clone()
    }
}

async fn step(env: &Env, state: &Mutex<State>) -> Result<(), String> {
    let sts_api: Api<StatefulSet> = Api::namespaced(env.client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), NS);
    let list = sts_api
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    let mut state = state.lock().await;
    for sts in list.items {
        let name = sts.name_any();
        let spec = sts.spec.clone().ok_or("a StatefulSet without spec")?;
        let template = spec.template.clone();
        let digest = hex::encode(Sha256::digest(
            serde_json::to_vec(&template).map_err(|e| e.to_string())?,
        ));
        let revision = format!("{name}-{}", &digest[..10]);
        let replicas = spec.replicas.unwrap_or(1);
        let status = sts.status.as_ref();
        // Like the StatefulSet controller: the status follows every spec change (generation).
        if status.and_then(|s| s.update_revision.as_deref()) != Some(&revision)
            || status.and_then(|s| s.observed_generation) != sts.metadata.generation
        {
            let patch = serde_json::json!({"status": {
                "replicas": replicas, "updateRevision": revision, "currentRevision": revision,
                "observedGeneration": sts.metadata.generation,
            }});
            sts_api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| e.to_string())?;
        }
        let config = rendered_settings(env, &template).await?;
        // A claim per pod: its data outlives the container and the pod.
        let persistent = spec
            .volume_claim_templates
            .as_ref()
            .is_some_and(|c| !c.is_empty());
        let service = spec.service_name.clone().unwrap_or_default();
        for ordinal in 0..replicas {
            let pod_name = format!("{name}-{ordinal}");
            let pod = pods.get_opt(&pod_name).await.map_err(|e| e.to_string())?;
            if let Some(p) = state.pending.get(&pod_name)
                && pod.as_ref().and_then(|p| p.uid()).as_deref() != Some(p.uid.as_str())
            {
                state.pending.remove(&pod_name);
            }
            let deleted = match (&pod, state.members.get(&pod_name)) {
                (None, Some(_)) => true,
                (Some(p), Some(m)) => p.uid().as_deref() != Some(m.uid.as_str()),
                _ => false,
            };
            if deleted {
                let mut m = state.members.remove(&pod_name).expect("present");
                if super::force_deleted(&m.uid) {
                    // A force deletion (grace period 0): the kubelet still sends SIGTERM first
                    // and SIGKILL only after its minimum window, and the pod name is free at
                    // once, so the replacement may start while the old process runs.
                    tokio::spawn(async move {
                        let _ = m.server.terminate(FORCE_KILL_AFTER).await;
                    });
                } else {
                    // The kubelet's SIGTERM, with the pod's grace period.
                    let _ = m.server.terminate(Duration::from_secs(10)).await;
                }
                state.history.deleted.push(pod_name.clone());
            }
            let pod = if deleted { None } else { pod };
            let crashed = state
                .members
                .get_mut(&pod_name)
                .is_some_and(|m| !m.server.is_alive());
            match pod {
                None => {
                    let mut labels = template
                        .metadata
                        .as_ref()
                        .and_then(|m| m.labels.clone())
                        .unwrap_or_default();
                    labels.insert("controller-revision-hash".into(), revision.clone());
                    labels.insert(
                        "statefulset.kubernetes.io/pod-name".into(),
                        pod_name.clone(),
                    );
                    let mut new = Pod {
                        spec: template.spec.clone(),
                        ..Default::default()
                    };
                    if let (Some(spec), false) = (new.spec.as_mut(), env.nodes.is_empty()) {
                        let node = &env.nodes[ordinal as usize % env.nodes.len()];
                        spec.node_name = Some(node.clone());
                    }
                    new.metadata.name = Some(pod_name.clone());
                    new.metadata.namespace = Some(NS.into());
                    new.metadata.labels = Some(labels);
                    let created = pods
                        .create(&PostParams::default(), &new)
                        .await
                        .map_err(|e| e.to_string())?;
                    state.pending.insert(
                        pod_name.clone(),
                        Pending {
                            uid: created.uid().unwrap_or_default(),
                            ip: free_ip(env.port, bus_port(&config)?)?,
                            revision: revision.clone(),
                        },
                    );
                    state
                        .history
                        .created
                        .push((pod_name.clone(), revision.clone()));
                    set_pending(&pods, &pod_name).await?;
                }
                Some(_) if crashed => {
                    let m = state.members.get_mut(&pod_name).expect("present");
                    match m.restart_at {
                        None => {
                            m.restart_at = Some(Instant::now() + restart_delay(m.restarts));
                            let ip = m.ip;
                            set_status(&pods, &pod_name, ip, false).await?;
                        }
                        Some(at) if at <= Instant::now() => {
                            let (ip, revision) = (m.ip, m.revision.clone());
                            let started = start_server(
                                env, &mut state, &pod_name, ip, &config, &revision, &template,
                                &service, persistent,
                            )
                            .await?;
                            // A Secret that vanished since leaves the container down, retried
                            // at the next tick.
                            if let Some(server) = started {
                                let m = state.members.get_mut(&pod_name).expect("present");
                                m.server = server;
                                m.restart_at = None;
                                m.restarts += 1;
                                set_status(&pods, &pod_name, ip, true).await?;
                            }
                        }
                        Some(_) => {}
                    }
                }
                Some(_) => {}
            }
            // A container waiting for its Secrets starts once they exist.
            if let Some(p) = state.pending.get(&pod_name) {
                let (uid, ip, revision) = (p.uid.clone(), p.ip, p.revision.clone());
                let started = start_server(
                    env, &mut state, &pod_name, ip, &config, &revision, &template, &service,
                    persistent,
                )
                .await?;
                if let Some(server) = started {
                    state.pending.remove(&pod_name);
                    state.members.insert(
                        pod_name.clone(),
                        Member {
                            uid,
                            server,
                            ip,
                            revision,
                            restart_at: None,
                            restarts: 0,
                        },
                    );
                    set_status(&pods, &pod_name, ip, true).await?;
                }
            }
        }
        remove_past(&pods, &mut state, &sts, replicas).await?;
    }
    Ok(())
}

/// Like the StatefulSet controller when `replicas` shrinks: deletes the StatefulSet's Pods at
/// ordinals `replicas` and above (whatever their role), and, like the kubelet, stops their
/// servers with SIGTERM.
async fn remove_past(
    pods: &Api<Pod>,
    state: &mut State,
    sts: &StatefulSet,
    replicas: i32,
) -> Result<(), String> {
    let prefix = format!("{}-", sts.name_any());
    let past = |pod: &str| {
        pod.strip_prefix(&prefix)
            .and_then(|o| o.parse::<i32>().ok())
            .is_some_and(|o| o >= replicas)
    };
    let selector = sts
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.as_ref())
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let listed = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| e.to_string())?;
    let role = |pod: &str| {
        listed
            .items
            .iter()
            .find(|p| p.name_any() == pod)
            .and_then(|p| p.labels().get("kvpilot.dev/role").cloned())
    };
    let mut doomed: Vec<String> = listed.items.iter().map(|p| p.name_any()).collect();
    doomed.extend(state.members.keys().cloned());
    doomed.extend(state.pending.keys().cloned());
    doomed.retain(|p| past(p));
    doomed.sort();
    doomed.dedup();
    for pod in doomed {
        let role = role(&pod);
        match pods.delete(&pod, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(format!("delete {pod}: {e}")),
        }
        state.pending.remove(&pod);
        if let Some(mut m) = state.members.remove(&pod) {
            // The kubelet's SIGTERM, with the pod's grace period.
            let _ = m.server.terminate(Duration::from_secs(10)).await;
        }
        state.history.removed.push((pod, role));
    }
    Ok(())
}

/// The settings of the ConfigMap the template mounts, minus what the stand-in sets itself.
async fn rendered_settings(
    env: &Env,
    template: &k8s_openapi::api::core::v1::PodTemplateSpec,
) -> Result<BTreeMap<String, String>, String> {
    let cm_name = template
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .and_then(|v| v.iter().find_map(|v| v.config_map.as_ref()))
        .map(|c| c.name.clone())
        .ok_or("the template mounts no ConfigMap")?;
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), NS);
    let cm = cms
        .get(&cm_name)
        .await
        .map_err(|e| format!("{cm_name}: {e}"))?;
    let text = cm
        .data
        .and_then(|d| d.get("server.conf").cloned())
        .ok_or("no server.conf")?;
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        // `port` and the TLS files become `ServerSpec` fields in `start_server`; the other
        // reserved keys (bind, dir, replicaof, ...) the stand-in sets itself.
        let field = key == "port"
            || key == "masteruser"
            || key == "replicaof"
            || key.starts_with("cluster-")
            || TLS_KEYS.contains(&key);
        if RESERVED_KEYS.contains(&key) && !field {
            continue;
        }
        out.insert(key.to_string(), value.trim_matches('"').to_string());
    }
    Ok(out)
}

/// Starts `pod`'s server from the rendered `config` and the pod `template` (its Secret
/// volumes, environment and args); `None` when a Secret it needs does not exist yet.
#[allow(clippy::too_many_arguments)]
async fn start_server(
    env: &Env,
    state: &mut State,
    pod: &str,
    ip: Ipv4Addr,
    config: &BTreeMap<String, String>,
    revision: &str,
    template: &PodTemplateSpec,
    service: &str,
    persistent: bool,
) -> Result<Option<Server>, String> {
    state.incarnation += 1;
    let dir = if persistent {
        env.root.join(format!("data-{pod}"))
    } else {
        env.root.join(format!("{pod}-{}", state.incarnation))
    };
    let mounts = env.root.join(format!("mounts-{pod}-{}", state.incarnation));
    let Some(container) = Container::prepare(env, template, pod, &mounts).await? else {
        return Ok(None);
    };
    // What `replicaof <name>-primary` resolves to: the pod labelled primary, if any.
    let primary = labelled_primary_addr(env, pod).await?;
    // The binary the container runs (`valkey-server` or `redis-server`).
    let binary = container.command.clone();
    let mut spec = ServerSpec::new(binary.as_str(), ip, env.port, dir);
    spec.dialect = match binary.as_str() {
        "valkey-server" => kvpilot::engine::Dialect::Valkey,
        "redis-server" => kvpilot::engine::Dialect::Redis,
        other => return Err(format!("{pod}: the stand-in runs no {other}")),
    };
    let mut config = container.rewrite(config);
    let flag = |name: &str| container.flag(name);
    spec.password = flag("--masterauth");
    // With an ACL file the password belongs to `masteruser` (or `default`); without, it is
    // `requirepass` too, which the rendered args give as the same value.
    spec.username = match (config.remove("masteruser"), config.contains_key("aclfile")) {
        (Some(user), _) => Some(user),
        (None, true) => Some("default".into()),
        (None, false) => None,
    };
    if spec.username.is_none() && flag("--requirepass") != spec.password {
        return Err(format!("{pod}: --requirepass and --masterauth differ"));
    }
    if config.get("port").map(String::as_str) == Some("0") {
        let file = |key: &str| {
            config
                .get(key)
                .map(PathBuf::from)
                .ok_or_else(|| format!("{pod}: TLS without {key}"))
        };
        spec.tls = Some(ServerTls {
            cert_file: file("tls-cert-file")?,
            key_file: file("tls-key-file")?,
            ca_file: file("tls-ca-cert-file")?,
            // The pod's DNS name through the StatefulSet's (headless) Service.
            server_name: format!("{pod}.{service}.{NS}.svc"),
        });
    }
    config.remove("port");
    config.retain(|k, _| !TLS_KEYS.contains(&k.as_str()));
    spec.cluster = take_cluster(pod, &mut config, &container)?;
    let replicaof = config.remove("replicaof");
    spec.config = config;
    spec.replicaof = match (&spec.cluster, replicaof) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "{pod}: replicaof with cluster-enabled: the server refuses to start"
            ));
        }
        // Alone (or on its nodes.conf) until the operator MEETs it.
        (Some(_), None) => None,
        (None, _) => Some(primary.unwrap_or(PARKED)),
    };
    spec.revision = revision.to_string();
    let server = Server::start(&spec).await.map_err(|e| e.to_string())?;
    env.guard.track(&server);
    Ok(Some(server))
}

/// A container's view of its pod: where each Secret volume was written on disk, and its
/// args with `$(VAR)` expanded from its environment.
struct Container {
    /// Mount path in the pod → directory on disk.
    mounts: Vec<(String, PathBuf)>,
    /// The container's command (the server binary).
    command: String,
    args: Vec<String>,
}

impl Container {
    /// Writes every Secret volume under `root` and resolves the environment; `None` when a
    /// Secret or key is missing (a real kubelet does not start the container either).
    async fn prepare(
        env: &Env,
        template: &PodTemplateSpec,
        pod: &str,
        root: &std::path::Path,
    ) -> Result<Option<Container>, String> {
        let spec = template
            .spec
            .as_ref()
            .ok_or("a pod template without spec")?;
        let c = spec.containers.first().ok_or("a pod without containers")?;
        let secrets: Api<Secret> = Api::namespaced(env.client.clone(), NS);
        let mut mounts = Vec::new();
        for volume in spec.volumes.iter().flatten() {
            let Some(source) = &volume.secret else {
                continue;
            };
            let name = source.secret_name.clone().unwrap_or_default();
            let Some(data) = secret_data(&secrets, &name).await? else {
                return Ok(None);
            };
            let dir = root.join(&volume.name);
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let files: Vec<(String, String)> = match &source.items {
                Some(items) => items
                    .iter()
                    .map(|i| (i.key.clone(), i.path.clone()))
                    .collect(),
                None => data.keys().map(|k| (k.clone(), k.clone())).collect(),
            };
            for (key, path) in files {
                let Some(bytes) = data.get(&key) else {
                    return Ok(None);
                };
                std::fs::write(dir.join(path), bytes).map_err(|e| e.to_string())?;
            }
            for m in c.volume_mounts.iter().flatten() {
                if m.name == volume.name {
                    mounts.push((m.mount_path.clone(), dir.clone()));
                }
            }
        }
        let mut vars = BTreeMap::new();
        for var in c.env.iter().flatten() {
            let value = match var
                .value_from
                .as_ref()
                .and_then(|f| f.secret_key_ref.as_ref())
            {
                Some(r) => {
                    let Some(data) = secret_data(&secrets, &r.name).await? else {
                        return Ok(None);
                    };
                    match data.get(&r.key) {
                        Some(v) => String::from_utf8(v.clone()).map_err(|e| e.to_string())?,
                        None => return Ok(None),
                    }
                }
                None => match var.value_from.as_ref().and_then(|f| f.field_ref.as_ref()) {
                    // The downward API; only the pod's name is used.
                    Some(f) if f.field_path == "metadata.name" => pod.to_string(),
                    Some(f) => {
                        return Err(format!("{pod}: fieldRef {} not modelled", f.field_path));
                    }
                    None => var.value.clone().unwrap_or_default(),
                },
            };
            vars.insert(var.name.clone(), value);
        }
        let args = c
            .args
            .iter()
            .flatten()
            .map(|a| {
                vars.iter()
                    .fold(a.clone(), |a, (k, v)| a.replace(&format!("$({k})"), v))
            })
            .collect();
        let command = c
            .command
            .iter()
            .flatten()
            .next()
            .cloned()
            .ok_or("a container without command")?;
        Ok(Some(Container {
            mounts,
            command,
            args,
        }))
    }

    /// The value after `name` in the args (`--masterauth VALUE`).
    fn flag(&self, name: &str) -> Option<String> {
        self.args
            .windows(2)
            .find(|w| w[0] == name)
            .map(|w| w[1].clone())
    }

    /// `config` with paths inside a mounted volume pointing at where it was written.
    fn rewrite(&self, config: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        config
            .iter()
            .map(|(k, v)| {
                let v = self
                    .mounts
                    .iter()
                    .find_map(|(mount, dir)| {
                        v.strip_prefix(&format!("{mount}/"))
                            .map(|rest| dir.join(rest).display().to_string())
                    })
                    .unwrap_or_else(|| v.clone());
                (k.clone(), v)
            })
            .collect()
    }
}

async fn secret_data(
    secrets: &Api<Secret>,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
    let secret = secrets.get_opt(name).await.map_err(|e| e.to_string())?;
    Ok(secret.map(|s| {
        s.data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect()
    }))
}

async fn labelled_primary_addr(env: &Env, except: &str) -> Result<Option<SocketAddr>, String> {
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), NS);
    let list = pods
        .list(&ListParams::default().labels("kvpilot.dev/role=primary"))
        .await
        .map_err(|e| e.to_string())?;
    Ok(list
        .items
        .iter()
        .filter(|p| p.name_any() != except)
        .find_map(|p| {
            let ip: Ipv4Addr = p.status.as_ref()?.pod_ip.as_deref()?.parse().ok()?;
            Some(SocketAddr::V4(SocketAddrV4::new(ip, env.port)))
        }))
}

/// `Pending`, no IP: the container waits (for its Secrets).
async fn set_pending(pods: &Api<Pod>, name: &str) -> Result<(), String> {
    let patch = serde_json::json!({"status": {"phase": "Pending"}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// `Running` with its IP; `running` false after a crash: like a kubelet, the container's
/// state says `terminated` (after the process exited) until it is restarted, and the pod is
/// not Ready (its phase stays `Running`: `restartPolicy: Always`).
async fn set_status(
    pods: &Api<Pod>,
    name: &str,
    ip: Ipv4Addr,
    running: bool,
) -> Result<(), String> {
    let ready = if running { "True" } else { "False" };
    let state = if running {
        serde_json::json!({"running": {}})
    } else {
        serde_json::json!({"terminated": {"exitCode": 137, "reason": "Error"}})
    };
    let patch = serde_json::json!({"status": {
        "phase": "Running",
        "podIP": ip.to_string(),
        "conditions": [{"type": "Ready", "status": ready}],
        "containerStatuses": [{
            "name": "server", "image": "valkey", "imageID": "", "ready": running,
            "restartCount": 0, "state": state,
        }],
    }});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// A fresh loopback IP on which `port` (and the cluster bus port, if any) is free.
fn free_ip(port: u16, bus: Option<u16>) -> Result<Ipv4Addr, String> {
    for _ in 0..50 {
        let ip = next_loopback_ip();
        let free = |p: u16| TcpListener::bind(SocketAddrV4::new(ip, p)).is_ok();
        if free(port) && bus.is_none_or(free) {
            return Ok(ip);
        }
    }
    Err(format!("no loopback IP with port {port} free"))
}

/// The rendered `cluster-port`, in cluster mode.
fn bus_port(config: &BTreeMap<String, String>) -> Result<Option<u16>, String> {
    if config.get("cluster-enabled").map(String::as_str) != Some("yes") {
        return Ok(None);
    }
    let port = config
        .get("cluster-port")
        .ok_or("cluster mode without cluster-port")?;
    port.parse()
        .map(Some)
        .map_err(|e| format!("cluster-port {port}: {e}"))
}

/// Whether the args start the member parked: `--user default on <password> <PARKED_RULES>`,
/// with the password `--requirepass` gives (or `nopass` without one). Any other `--user`
/// line is an error: the stand-in would not run what the manifest describes.
fn parked(pod: &str, container: &Container) -> Result<bool, String> {
    let Some(at) = container.args.iter().position(|a| a == "--user") else {
        return Ok(false);
    };
    let words: Vec<&str> = container.args[at + 1..]
        .iter()
        .take_while(|a| !a.starts_with("--"))
        .map(String::as_str)
        .collect();
    let password = match container.flag("--requirepass") {
        Some(p) => format!(">{p}"),
        None => "nopass".to_string(),
    };
    let expected: Vec<&str> = ["default", "on", password.as_str()]
        .into_iter()
        .chain(kvpilot::engine::park::PARKED_RULES.split_whitespace())
        .collect();
    if words != expected {
        return Err(format!("{pod}: a --user line not modelled: {words:?}"));
    }
    Ok(true)
}

/// Takes the rendered cluster settings out of `config`: `None` without `cluster-enabled yes`.
/// [`ServerCluster`] sets some on its own; each must have been rendered with that same value,
/// or the stand-in would run a server kinder than the one the manifest describes.
fn take_cluster(
    pod: &str,
    config: &mut BTreeMap<String, String>,
    container: &Container,
) -> Result<Option<ServerCluster>, String> {
    let keys: Vec<String> = config
        .keys()
        .filter(|k| k.starts_with("cluster-"))
        .cloned()
        .collect();
    let mut rendered: BTreeMap<String, String> = keys
        .into_iter()
        .filter_map(|k| config.remove(&k).map(|v| (k, v)))
        .collect();
    if rendered.remove("cluster-enabled").as_deref() != Some("yes") {
        if rendered.is_empty() {
            return Ok(None);
        }
        return Err(format!(
            "{pod}: cluster settings without cluster-enabled: {rendered:?}"
        ));
    }
    for (key, value) in [
        ("cluster-config-file", "nodes.conf"),
        ("cluster-replica-no-failover", "yes"),
        ("cluster-allow-replica-migration", "no"),
        ("cluster-require-full-coverage", "no"),
        ("cluster-preferred-endpoint-type", "hostname"),
    ] {
        let got = rendered.remove(key);
        if got.as_deref() != Some(value) {
            return Err(format!(
                "{pod}: rendered {key} {got:?}, the stand-in runs {value}"
            ));
        }
    }
    let number = |rendered: &mut BTreeMap<String, String>, key: &str| -> Result<u64, String> {
        let v = rendered.remove(key).ok_or(format!("{pod}: no {key}"))?;
        v.parse().map_err(|e| format!("{pod}: {key} {v}: {e}"))
    };
    let bus_port = u16::try_from(number(&mut rendered, "cluster-port")?)
        .map_err(|e| format!("{pod}: cluster-port: {e}"))?;
    let node_timeout = Duration::from_millis(number(&mut rendered, "cluster-node-timeout")?);
    if !rendered.is_empty() {
        return Err(format!(
            "{pod}: cluster settings not modelled: {rendered:?}"
        ));
    }
    // With `cluster-preferred-endpoint-type hostname` a member must announce a name.
    let hostname = container
        .flag("--cluster-announce-hostname")
        .ok_or(format!(
            "{pod}: cluster mode without --cluster-announce-hostname"
        ))?;
    let mut cluster = ServerCluster::new(bus_port, node_timeout);
    cluster.announce_hostname = Some(hostname);
    cluster.parked = parked(pod, container)?;
    Ok(Some(cluster))
}
