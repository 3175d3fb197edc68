//! [`LocalPlatform`]: one replication group of real server processes on 127.0.0.x, laid out
//! under a state directory, with a TCP forwarder as its primary endpoint.
//!
//! Everything that matters survives the process that runs it: the members run in their own
//! sessions and record themselves in `member.json`, and `layout.json` fixes each member's
//! address. A new `kvpilot local up` adopts what is running and carries on.

use super::forwarder::Forwarder;
use super::server::{self, Server, ServerSpec};
use crate::api::KvClusterSpec;
use crate::platform::{Platform, PlatformError, PlatformMember};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

/// Where a parked member "replicates" from: nothing listens there, so it stays an empty,
/// read-only replica that refuses to serve syncs until the reconciler repoints it.
pub const PARKED: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1));

/// How long a member gets to exit on SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long a SIGKILLed member may take to disappear before stopping it counts as failed.
const KILL_WAIT: Duration = Duration::from_secs(5);

const LAYOUT_FILE: &str = "layout.json";

/// `cluster-node-timeout` of local cluster-mode members. The operator detects a lost primary
/// by its own probes and promotes with `CLUSTER FAILOVER FORCE`, which needs no `fail` flag;
/// this only bounds how long the cluster itself takes to flag a dead node.
const CLUSTER_NODE_TIMEOUT: Duration = Duration::from_secs(2);

/// Fixed addresses of the group, kept across runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub name: String,
    pub endpoint: SocketAddr,
    /// Member addresses by ordinal.
    pub members: Vec<SocketAddr>,
    /// sha256 of the password the members were started with (none: no password). A later run
    /// must bring the same one: members keep their `requirepass`, and with another password
    /// every member would look unreachable to the reconciler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_sha256: Option<String>,
    /// Cluster mode: each member's cluster bus port, by ordinal (empty in replication mode).
    /// A member keeps its address and bus port for good: the others know it by them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bus_ports: Vec<u16>,
}

impl Layout {
    /// Reads `dir/layout.json`, or allocates free loopback addresses for `count` members.
    pub fn load_or_create(
        dir: &Path,
        name: &str,
        endpoint: Option<SocketAddr>,
        count: usize,
        password: Option<&str>,
        cluster: bool,
    ) -> Result<Layout, PlatformError> {
        let path = dir.join(LAYOUT_FILE);
        let given = password.map(password_digest);
        let mut layout = match std::fs::read(&path) {
            Ok(bytes) => {
                let layout = serde_json::from_slice::<Layout>(&bytes)
                    .map_err(|e| err("read layout", format!("{}: {e}", path.display())))?;
                check_password(&layout, given.as_deref(), dir)?;
                layout
            }
            Err(_) => {
                let endpoint = match endpoint {
                    Some(e) => e,
                    None => server::free_loopback_addr()
                        .map_err(|e| err("allocate endpoint address", e.to_string()))?,
                };
                Layout {
                    name: name.to_string(),
                    endpoint,
                    members: Vec::new(),
                    password_sha256: given,
                    bus_ports: Vec::new(),
                }
            }
        };
        if !layout.members.is_empty() && layout.bus_ports.is_empty() == cluster {
            // The members' data and nodes.conf belong to the other mode.
            return Err(err(
                "open",
                format!(
                    "the group in {} was laid out for {}; `kvpilot local down` and remove the \
                     state directory to change spec.shards between 1 and more",
                    dir.display(),
                    if cluster {
                        "replication mode (shards: 1)"
                    } else {
                        "cluster mode (shards > 1)"
                    }
                ),
            ));
        }
        while layout.members.len() < count {
            let addr = server::free_loopback_addr()
                .map_err(|e| err("allocate member address", e.to_string()))?;
            layout.members.push(addr);
        }
        if cluster {
            while layout.bus_ports.len() < layout.members.len() {
                let addr = layout.members[layout.bus_ports.len()];
                let SocketAddr::V4(v4) = addr else {
                    return Err(err("allocate bus port", format!("{addr} is not IPv4")));
                };
                let mut bus = 0;
                for _ in 0..10 {
                    bus = server::free_port(*v4.ip())
                        .map_err(|e| err("allocate bus port", e.to_string()))?;
                    if bus != v4.port() {
                        break;
                    }
                }
                layout.bus_ports.push(bus);
            }
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| err("create state dir", format!("{}: {e}", dir.display())))?;
        let text =
            serde_json::to_vec_pretty(&layout).map_err(|e| err("write layout", e.to_string()))?;
        std::fs::write(&path, text)
            .map_err(|e| err("write layout", format!("{}: {e}", path.display())))?;
        Ok(layout)
    }
}

/// The local platform for one group.
pub struct LocalPlatform {
    dir: PathBuf,
    layout: Layout,
    spec: RwLock<Built>,
    servers: Mutex<HashMap<String, Server>>,
    forwarder: Forwarder,
    password: Option<String>,
    /// Each member's zone and node from the manifest's annotations ([`super::topology`]).
    topology: RwLock<super::topology::Topology>,
    /// Shards (1: replication mode) and members per shard, fixed while the group runs.
    shards: usize,
    per_shard: usize,
}

/// What members are built from, and its digest.
#[derive(Debug, Clone)]
struct Built {
    spec: KvClusterSpec,
    binary: PathBuf,
    revision: String,
}

impl LocalPlatform {
    /// Lays out (or re-reads) the group under `dir`, binds the endpoint and adopts members
    /// that are still running. Starts nothing: the reconciler does.
    pub async fn open(
        dir: &Path,
        name: &str,
        spec: &KvClusterSpec,
        endpoint: Option<SocketAddr>,
        password: Option<String>,
    ) -> Result<LocalPlatform, PlatformError> {
        let per_shard = spec.replicas as usize + 1;
        let shards = spec.shards.max(1) as usize;
        let count = per_shard * shards;
        let layout =
            Layout::load_or_create(dir, name, endpoint, count, password.as_deref(), shards > 1)?;
        if layout.members.len() > count {
            // The extra members would keep running unobserved: say so instead.
            return Err(err(
                "open",
                format!(
                    "the spec asks for {count} members (replicas: {}, shards: {shards}) but the group in {} has {}: \
                     the local platform does not remove members; `kvpilot local down` first \
                     to start over with fewer",
                    spec.replicas,
                    dir.display(),
                    layout.members.len()
                ),
            ));
        }
        let forwarder = Forwarder::bind(layout.endpoint)
            .await
            .map_err(|e| err("bind the primary endpoint", e.to_string()))?;
        let built = build(spec)?;
        Ok(LocalPlatform {
            dir: dir.to_path_buf(),
            layout,
            spec: RwLock::new(built),
            servers: Mutex::new(HashMap::new()),
            forwarder,
            password,
            topology: RwLock::new(super::topology::Topology::default()),
            shards,
            per_shard,
        })
    }

    /// Takes the members' zones and nodes (the manifest was read or changed).
    pub fn set_topology(&self, topology: super::topology::Topology) -> Result<(), PlatformError> {
        *self.topology.write().map_err(|_| poisoned())? = topology;
        Ok(())
    }

    /// The address clients use: the primary endpoint.
    pub fn endpoint_addr(&self) -> SocketAddr {
        self.forwarder.local_addr()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes a new spec (the file changed). Members are not touched here: a changed revision
    /// makes them stale and the rollout replaces them one at a time.
    pub fn update_spec(&self, spec: &KvClusterSpec) -> Result<(), PlatformError> {
        let have = self.layout.members.len();
        if spec.shards.max(1) as usize != self.shards {
            return Err(err(
                "update spec",
                format!(
                    "shards changed to {} but this group has {}: the local platform does not \
                     add or remove shards; the running spec is kept",
                    spec.shards, self.shards
                ),
            ));
        }
        if (spec.replicas as usize + 1) * self.shards != have {
            // Addresses are laid out when the group opens; a silent mismatch would leave
            // members unstarted or running unobserved.
            return Err(err(
                "update spec",
                format!(
                    "replicas changed to {} but this group has {have} members: restart \
                     `kvpilot local up` to add members (removing them is not supported \
                     locally); the running spec is kept",
                    spec.replicas
                ),
            ));
        }
        let built = build(spec)?;
        let mut current = self.spec.write().map_err(|_| poisoned())?;
        *current = built;
        Ok(())
    }

    /// `<name>-<ordinal>` in replication mode, `<name>-s<shard>-<i>` in cluster mode, where
    /// layout index = shard × members per shard + i.
    fn member_name(&self, index: usize) -> String {
        if self.shards > 1 {
            let (shard, i) = self.shard_of(index);
            format!("{}-s{shard}-{i}", self.layout.name)
        } else {
            format!("{}-{index}", self.layout.name)
        }
    }

    /// (shard, ordinal within the shard) of layout index `index`.
    fn shard_of(&self, index: usize) -> (usize, usize) {
        let per = self.per_shard.max(1);
        (index / per, index % per)
    }

    /// Whether the group runs in cluster mode.
    pub fn cluster_mode(&self) -> bool {
        self.shards > 1
    }

    /// Every member's client address (a cluster client's seeds).
    pub fn member_addrs(&self) -> Vec<SocketAddr> {
        self.layout.members.clone()
    }

    fn member_dir(&self, name: &str) -> PathBuf {
        member_dir(&self.dir, name)
    }

    fn ordinal_of(&self, name: &str) -> Result<usize, PlatformError> {
        (0..self.layout.members.len())
            .find(|&i| self.member_name(i) == name)
            .ok_or_else(|| err("find member", format!("no member named {name}")))
    }

    /// Stops every member and the endpoint (`local down`, Ctrl-C).
    pub async fn shutdown(self) -> Result<(), PlatformError> {
        let names: Vec<String> = (0..self.layout.members.len())
            .map(|i| self.member_name(i))
            .collect();
        let mut first = Ok(());
        for name in names {
            if let Err(e) = self.stop(&name).await
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        self.forwarder.shutdown().await;
        first
    }

    /// SIGKILLs a member, as a crash would (demo and tests).
    pub fn kill(&self, name: &str) -> Result<(), PlatformError> {
        let mut servers = self.servers.lock().map_err(|_| poisoned())?;
        self.adopt_into(&mut servers, name);
        match servers.get_mut(name) {
            Some(s) => s.kill().map_err(|e| err("kill", e.to_string())),
            None => Ok(()),
        }
    }

    /// Waits (bounded) until a killed member's process is gone.
    pub async fn wait_stopped(&self, name: &str, limit: Duration) -> Result<(), PlatformError> {
        let started = std::time::Instant::now();
        loop {
            let alive = {
                let mut servers = self.servers.lock().map_err(|_| poisoned())?;
                servers.get_mut(name).is_some_and(|s| s.is_alive())
            };
            if !alive {
                return Ok(());
            }
            if started.elapsed() > limit {
                return Err(err(
                    "wait for stop",
                    format!("{name} still runs after {limit:?}"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn stop(&self, name: &str) -> Result<(), PlatformError> {
        let server = {
            let mut servers = self.servers.lock().map_err(|_| poisoned())?;
            self.adopt_into(&mut servers, name);
            servers.remove(name)
        };
        if let Some(mut s) = server {
            s.terminate(STOP_GRACE)
                .await
                .map_err(|e| err("stop member", e.to_string()))?;
        }
        Ok(())
    }

    /// Makes sure `servers` holds `name` if its process runs (adopting it from its state file).
    fn adopt_into(&self, servers: &mut HashMap<String, Server>, name: &str) {
        // A dead entry may have been replaced by a process someone else started.
        if servers.get_mut(name).is_some_and(|s| !s.is_alive()) {
            servers.remove(name);
        }
        if !servers.contains_key(name)
            && let Ok(s) = Server::adopt(&self.member_dir(name))
        {
            servers.insert(name.to_string(), s);
        }
    }

    async fn start_one(
        &self,
        name: &str,
        replica_of: Option<SocketAddr>,
    ) -> Result<(), PlatformError> {
        let ordinal = self.ordinal_of(name)?;
        let addr = self.layout.members[ordinal];
        let SocketAddr::V4(v4) = addr else {
            return Err(err(
                "start member",
                format!("{addr} is not an IPv4 loopback address"),
            ));
        };
        let built = self.spec.read().map_err(|_| poisoned())?.clone();
        let cluster = match self.layout.bus_ports.get(ordinal) {
            Some(&bus) if self.shards > 1 => Some(server::ServerCluster {
                parked: true,
                ..server::ServerCluster::new(bus, CLUSTER_NODE_TIMEOUT)
            }),
            _ => None,
        };
        let server_spec = ServerSpec {
            binary: built.binary.clone(),
            dialect: dialect(built.spec.engine.kind),
            bind: *v4.ip(),
            port: v4.port(),
            dir: self.member_dir(name),
            config: member_config(&built.spec),
            password: self.password.clone(),
            username: None,
            tls: None,
            // A cluster-mode member starts on its nodes.conf (or empty and alone); the
            // reconciler MEETs and REPLICATEs it.
            replicaof: if cluster.is_some() {
                None
            } else {
                Some(replica_of.unwrap_or(PARKED))
            },
            cluster,
            revision: built.revision.clone(),
        };
        let server = Server::start(&server_spec)
            .await
            .map_err(|e| err("start member", format!("{name}: {e}")))?;
        self.servers
            .lock()
            .map_err(|_| poisoned())?
            .insert(name.to_string(), server);
        Ok(())
    }
}

/// The data directory of member `name` of the group whose state is in `group_dir`.
pub fn member_dir(group_dir: &Path, name: &str) -> PathBuf {
    group_dir.join("members").join(name)
}

impl Platform for LocalPlatform {
    async fn members(&self) -> Result<Vec<PlatformMember>, PlatformError> {
        let count =
            (self.spec.read().map_err(|_| poisoned())?.spec.replicas as usize + 1) * self.shards;
        let topology = self.topology.read().map_err(|_| poisoned())?.clone();
        let mut servers = self.servers.lock().map_err(|_| poisoned())?;
        let mut out = Vec::with_capacity(count);
        for (ordinal, addr) in self.layout.members.iter().enumerate().take(count) {
            let name = self.member_name(ordinal);
            self.adopt_into(&mut servers, &name);
            let (running, revision) = match servers.get_mut(&name) {
                Some(s) => {
                    let alive = s.is_alive();
                    (alive, alive.then(|| s.state().revision.clone()))
                }
                None => (false, None),
            };
            let place = topology.get(&name).cloned().unwrap_or_default();
            let (shard, within) = self.shard_of(ordinal);
            out.push(PlatformMember {
                name,
                shard: u32::try_from(shard).unwrap_or(u32::MAX),
                ordinal: u32::try_from(within).unwrap_or(u32::MAX),
                addr: *addr,
                revision,
                running,
                zone: place.zone,
                node: place.node,
                // The member count is fixed while the group runs (`update_spec` refuses a
                // change of replicas), so nothing is ever retiring here.
                retiring: false,
            });
        }
        Ok(out)
    }

    fn desired_revision(&self) -> String {
        self.spec
            .read()
            .map(|b| b.revision.clone())
            .unwrap_or_default()
    }

    fn endpoint(&self) -> Option<SocketAddr> {
        self.forwarder.target()
    }

    async fn start(
        &self,
        members: &[String],
        replica_of: Option<SocketAddr>,
    ) -> Result<(), PlatformError> {
        let results =
            futures::future::join_all(members.iter().map(|m| self.start_one(m, replica_of))).await;
        results.into_iter().collect()
    }

    async fn restart(
        &self,
        member: &str,
        replica_of: Option<SocketAddr>,
    ) -> Result<(), PlatformError> {
        self.stop(member).await?;
        self.start_one(member, replica_of).await
    }

    /// Never asked for: no local member is ever retiring (see `members`). Should it be, the
    /// member is kept and the reason given, rather than a process stopped that the layout
    /// still counts.
    async fn retire(&self, members: &[String]) -> Result<(), PlatformError> {
        Err(err(
            "retire",
            format!(
                "{}: the local platform does not remove members while it runs; \
                 `kvpilot local down` and `local up` with fewer replicas instead",
                members.join(", ")
            ),
        ))
    }

    /// SIGKILL by PID (it works on a stopped process too), and wait until the process is gone.
    async fn stop_hung(&self, members: &[String]) -> Result<(), PlatformError> {
        for name in members {
            self.kill(name)?;
            self.wait_stopped(name, KILL_WAIT).await?;
        }
        Ok(())
    }

    async fn point_endpoint(&self, primary: SocketAddr) -> Result<(), PlatformError> {
        self.forwarder.set_target(Some(primary));
        Ok(())
    }
}

/// Settings every local member gets unless the spec overrides them: start full syncs at
/// once instead of after Valkey's 5 s batching delay, and delete the RDB a replica receives
/// during a full sync when persistence is off, so a member that restarts comes back empty
/// instead of loading a stale copy that could pass for data. With managed snapshots that
/// file is the operator's last snapshot and is kept (see the Kubernetes member config).
///
/// Dragonfly (experimental) has neither setting; with managed snapshots it gets a snapshot
/// file name (its local default is none) and no schedule until the operator sets one.
fn member_config(spec: &KvClusterSpec) -> std::collections::BTreeMap<String, String> {
    let pairs: &[(&str, &str)] = match (spec.engine.kind, spec.snapshots.is_some()) {
        (kvpilot_sdk::Engine::Dragonfly, false) => &[],
        (kvpilot_sdk::Engine::Dragonfly, true) => &[("dbfilename", "dump"), ("snapshot_cron", "")],
        (_, false) => &[
            ("repl-diskless-sync-delay", "0"),
            ("rdb-del-sync-files", "yes"),
        ],
        (_, true) => &[
            ("repl-diskless-sync-delay", "0"),
            ("rdb-del-sync-files", "no"),
        ],
    };
    let mut config: std::collections::BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    config.extend(spec.config.clone());
    config
}

/// The dialect members of `engine` speak (and take their arguments in).
fn dialect(engine: kvpilot_sdk::Engine) -> crate::engine::Dialect {
    match engine {
        kvpilot_sdk::Engine::Valkey => crate::engine::Dialect::Valkey,
        kvpilot_sdk::Engine::Redis => crate::engine::Dialect::Redis,
        kvpilot_sdk::Engine::Dragonfly => crate::engine::Dialect::Dragonfly,
    }
}

/// Resolves the server binary and computes the desired revision: a digest of everything a
/// member is built from (engine, binary and its version, declared version, config).
fn build(spec: &KvClusterSpec) -> Result<Built, PlatformError> {
    let binary = PathBuf::from(spec.engine.image.clone().unwrap_or_else(|| {
        match spec.engine.kind {
            kvpilot_sdk::Engine::Valkey => "valkey-server",
            kvpilot_sdk::Engine::Redis => "redis-server",
            kvpilot_sdk::Engine::Dragonfly => "dragonfly",
        }
        .to_string()
    }));
    let version = binary_version(&binary)?;
    let mut h = Sha256::new();
    h.update(format!("{:?}\0", spec.engine.kind));
    h.update(binary.display().to_string());
    h.update("\0");
    h.update(&version);
    h.update("\0");
    h.update(spec.engine.version.as_deref().unwrap_or(""));
    for (k, v) in &spec.config {
        h.update(format!("\0{k}={v}"));
    }
    let revision = hex::encode(&h.finalize()[..6]);
    Ok(Built {
        spec: spec.clone(),
        binary,
        revision,
    })
}

/// `BINARY --version`, so that upgrading the installed server makes members stale.
fn binary_version(binary: &Path) -> Result<String, PlatformError> {
    let out = std::process::Command::new(binary).arg("--version").output().map_err(|e| {
        err(
            "find the server binary",
            format!(
                "cannot run {}: {e}. Install it, e.g. `apt-get install valkey-server` (Debian bookworm-backports) or `apt-get install redis-server`",
                binary.display()
            ),
        )
    })?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn password_digest(password: &str) -> String {
    hex::encode(Sha256::digest(password.as_bytes()))
}

/// A group keeps the password it was started with; say which way a new run differs.
fn check_password(layout: &Layout, given: Option<&str>, dir: &Path) -> Result<(), PlatformError> {
    let problem = match (layout.password_sha256.as_deref(), given) {
        (Some(recorded), Some(given)) if recorded == given => return Ok(()),
        (None, None) => return Ok(()),
        (Some(_), Some(_)) => "the password differs from the one its members were started with",
        (Some(_), None) => {
            "its members were started with a password: give it again (--password-file)"
        }
        (None, Some(_)) => {
            "its members were started without a password and cannot be given one in place: \
             run `kvpilot local down`, remove the state directory, and start it again"
        }
    };
    Err(err(
        "check password",
        format!("group {} in {}: {problem}", layout.name, dir.display()),
    ))
}

fn err(action: &str, message: String) -> PlatformError {
    PlatformError {
        platform: "local",
        action: action.to_string(),
        message,
    }
}

fn poisoned() -> PlatformError {
    err(
        "lock",
        "a previous panic poisoned the platform state".to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path, password: Option<&str>) -> Result<Layout, PlatformError> {
        Layout::load_or_create(dir, "cache", None, 2, password, false)
    }

    #[test]
    fn a_group_keeps_the_password_it_was_started_with() {
        let dir = tempfile::tempdir().unwrap();
        let first = open(dir.path(), Some("s3cret")).unwrap();
        let text = std::fs::read_to_string(dir.path().join(LAYOUT_FILE)).unwrap();
        assert!(
            !text.contains("s3cret"),
            "the layout holds only a digest: {text}"
        );
        assert_eq!(first.password_sha256, Some(password_digest("s3cret")));

        assert_eq!(open(dir.path(), Some("s3cret")).unwrap(), first);
        let other = open(dir.path(), Some("other")).unwrap_err().to_string();
        assert!(other.contains("password differs"), "{other}");
        let none = open(dir.path(), None).unwrap_err().to_string();
        assert!(none.contains("--password-file"), "{none}");
        assert!(none.contains("group cache"), "{none}");
    }

    fn spec(replicas: u32) -> KvClusterSpec {
        let yaml = format!("engine: {{kind: valkey}}\nreplicas: {replicas}\n");
        serde_norway::from_str(&yaml).unwrap()
    }

    #[tokio::test]
    async fn the_member_count_changes_only_by_growing_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let platform = LocalPlatform::open(dir.path(), "cache", &spec(2), None, None)
            .await
            .unwrap();
        let grown = platform.update_spec(&spec(3)).unwrap_err().to_string();
        assert!(grown.contains("restart `kvpilot local up`"), "{grown}");
        platform.update_spec(&spec(2)).unwrap();

        // A layout grows at open; a smaller spec is refused before anything is bound.
        let other = tempfile::tempdir().unwrap();
        open(other.path(), None).unwrap();
        let grown = Layout::load_or_create(other.path(), "cache", None, 4, None, false).unwrap();
        assert_eq!(grown.members.len(), 4);
        let shrunk = LocalPlatform::open(other.path(), "cache", &spec(1), None, None)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(shrunk.contains("does not remove members"), "{shrunk}");
    }

    #[test]
    fn a_group_without_a_password_cannot_be_given_one_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let first = open(dir.path(), None).unwrap();
        assert_eq!(first.password_sha256, None);
        assert_eq!(open(dir.path(), None).unwrap(), first);
        let late = open(dir.path(), Some("s3cret")).unwrap_err().to_string();
        assert!(late.contains("started without a password"), "{late}");
    }
}
