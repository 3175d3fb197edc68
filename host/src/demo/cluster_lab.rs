//! A hand-driven Valkey/Redis Cluster on loopback for the tests, the cluster bench and the
//! phase-2 experiments: members with the cluster arguments of
//! [`crate::platform::local::server::ServerCluster`], bootstrapped step by step with the
//! engine primitives (MEET → ADDSLOTSRANGE → REPLICATE → wait for `cluster_state:ok`).
//!
//! This is not the operator's bootstrap (that is a decide/act procedure, resumable after a
//! kill); every wait here is bounded and fails with what it last saw.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::{Instant, sleep};

use crate::engine::slots::balanced_ranges;
use crate::engine::{Client, ClusterNodes, ClusterState, Dialect, HostPort};
use crate::platform::local::server::{
    Server, ServerCluster, ServerGuard, ServerSpec, free_port, next_loopback_ip,
};

/// How often the waits poll.
const POLL: Duration = Duration::from_millis(20);

/// One member of the lab: how it was started, its process and its node id.
pub struct LabMember {
    /// How to (re)start it.
    pub spec: ServerSpec,
    /// The running process; `None` while it is stopped.
    pub server: Option<Server>,
    /// Its node id (updated by [`ClusterLab::refresh_id`]).
    pub id: String,
}

impl LabMember {
    /// The client address.
    pub fn addr(&self) -> HostPort {
        HostPort::from(self.spec.addr())
    }

    /// The cluster bus port.
    pub fn bus_port(&self) -> u16 {
        self.spec.cluster.as_ref().map_or(0, |c| c.bus_port)
    }
}

/// A cluster of `shards` × (1 primary + `replicas`) members.
pub struct ClusterLab {
    /// Members: primaries of shards `0..shards` first, then the replicas, shard by shard.
    pub members: Vec<LabMember>,
    /// Shards.
    pub shards: usize,
    /// Dialect of the binary.
    pub dialect: Dialect,
    guard: ServerGuard,
}

fn lab_error(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

impl ClusterLab {
    /// Starts the members (not yet a cluster) in `dir`, each on its own 127.0.0.x with a free
    /// client port and a free bus port.
    pub async fn start_members(
        binary: &Path,
        dialect: Dialect,
        dir: &Path,
        shards: usize,
        replicas: usize,
        node_timeout: Duration,
    ) -> Result<ClusterLab, String> {
        let guard = ServerGuard::new();
        guard.track_dir(dir);
        let mut lab = ClusterLab {
            members: Vec::new(),
            shards,
            dialect,
            guard,
        };
        for i in 0..shards * (1 + replicas) {
            let ip: Ipv4Addr = next_loopback_ip();
            let port = free_port(ip).map_err(|e| lab_error("free port", e))?;
            let mut bus = free_port(ip).map_err(|e| lab_error("free port", e))?;
            for _ in 0..10 {
                if bus != port {
                    break;
                }
                bus = free_port(ip).map_err(|e| lab_error("free port", e))?;
            }
            let mut spec = ServerSpec::new(binary, ip, port, dir.join(format!("m{i}")));
            spec.config
                .insert("repl-diskless-sync-delay".into(), "0".into());
            spec.cluster = Some(ServerCluster::new(bus, node_timeout));
            lab.members.push(LabMember {
                spec,
                server: None,
                id: String::new(),
            });
        }
        for i in 0..lab.members.len() {
            lab.start_member(i).await?;
            lab.refresh_id(i).await?;
        }
        Ok(lab)
    }

    /// Starts and bootstraps a cluster: [`Self::start_members`] then [`Self::bootstrap`].
    pub async fn start(
        binary: &Path,
        dialect: Dialect,
        dir: &Path,
        shards: usize,
        replicas: usize,
        node_timeout: Duration,
    ) -> Result<ClusterLab, String> {
        let mut lab =
            Self::start_members(binary, dialect, dir, shards, replicas, node_timeout).await?;
        lab.bootstrap(Duration::from_secs(30)).await?;
        Ok(lab)
    }

    /// Index of shard `shard`'s `n`-th replica.
    pub fn replica_index(&self, shard: usize, n: usize) -> usize {
        let per = (self.members.len() - self.shards) / self.shards.max(1);
        self.shards + shard * per + n
    }

    /// (Re)starts member `i` from its spec (its data dir is kept).
    pub async fn start_member(&mut self, i: usize) -> Result<(), String> {
        let server = Server::start(&self.members[i].spec)
            .await
            .map_err(|e| lab_error("start member", e))?;
        self.guard.track(&server);
        self.members[i].server = Some(server);
        Ok(())
    }

    /// `SIGKILL` member `i` and waits until it is gone.
    pub async fn kill(&mut self, i: usize) -> Result<(), String> {
        if let Some(mut server) = self.members[i].server.take() {
            server.kill().map_err(|e| lab_error("kill", e))?;
            let started = Instant::now();
            while server.is_alive() {
                if started.elapsed() > Duration::from_secs(5) {
                    return Err(format!("member {i} still alive 5 s after SIGKILL"));
                }
                sleep(POLL).await;
            }
        }
        Ok(())
    }

    /// The running process of member `i`.
    pub fn server(&self, i: usize) -> Option<&Server> {
        self.members[i].server.as_ref()
    }

    /// The data directory of member `i`.
    pub fn dir(&self, i: usize) -> PathBuf {
        self.members[i].spec.dir.clone()
    }

    /// A client of member `i` (with its password, if its spec has one).
    pub async fn client(&self, i: usize) -> Result<Client, String> {
        let password = self.members[i].spec.password.as_deref();
        Client::connect(self.members[i].addr(), password, self.dialect)
            .await
            .map_err(|e| lab_error("connect", e))
    }

    /// Reads member `i`'s node id.
    pub async fn refresh_id(&mut self, i: usize) -> Result<String, String> {
        let id = self
            .client(i)
            .await?
            .cluster_myid()
            .await
            .map_err(|e| lab_error("CLUSTER MYID", e))?;
        self.members[i].id = id.clone();
        Ok(id)
    }

    /// Every member's client address, as seeds for a cluster client.
    pub fn seeds(&self) -> Vec<HostPort> {
        self.members.iter().map(LabMember::addr).collect()
    }

    /// The client address of member `i`.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.members[i].spec.addr()
    }

    /// MEET every member from member 0, ADDSLOTSRANGE balanced ranges on the first `shards`
    /// members, REPLICATE the others, then wait for [`Self::wait_formed`].
    pub async fn bootstrap(&mut self, limit: Duration) -> Result<(), String> {
        let first = self.client(0).await?;
        for m in &self.members[1..] {
            let ip = m.spec.bind.to_string();
            first
                .cluster_meet(&ip, m.spec.port, Some(m.bus_port()))
                .await
                .map_err(|e| lab_error("CLUSTER MEET", e))?;
        }
        let everyone = self.members.len();
        self.wait_all(limit, "every member knows every member", |_, nodes| {
            nodes.nodes.len() == everyone && nodes.nodes.iter().all(|n| !n.flags.handshake)
        })
        .await?;
        for (shard, range) in balanced_ranges(self.shards).into_iter().enumerate() {
            self.client(shard)
                .await?
                .cluster_addslotsrange(&[range])
                .await
                .map_err(|e| lab_error("CLUSTER ADDSLOTSRANGE", e))?;
        }
        let per = (self.members.len() - self.shards) / self.shards.max(1);
        for shard in 0..self.shards {
            for n in 0..per {
                let r = self.replica_index(shard, n);
                let primary = self.members[shard].id.clone();
                // The replica must know the primary before it can follow it.
                self.wait_member(r, limit, "the replica knows its primary", |nodes| {
                    nodes.get(&primary).is_some()
                })
                .await?;
                self.client(r)
                    .await?
                    .cluster_replicate(&primary)
                    .await
                    .map_err(|e| lab_error("CLUSTER REPLICATE", e))?;
            }
        }
        self.wait_formed(limit).await
    }

    /// Waits until every member reports `cluster_state:ok` with all 16384 slots assigned and
    /// ok, and sees every replica following its shard's primary.
    pub async fn wait_formed(&self, limit: Duration) -> Result<(), String> {
        let started = Instant::now();
        let mut last = String::new();
        while started.elapsed() < limit {
            let mut all = true;
            for i in 0..self.members.len() {
                let seen = async {
                    let c = self.client(i).await?;
                    let info = c.cluster_info().await.map_err(|e| e.to_string())?;
                    Ok::<_, String>(info)
                }
                .await;
                match seen {
                    Ok(info)
                        if info.state == ClusterState::Ok
                            && info.slots_assigned == 16384
                            && info.slots_ok == 16384 => {}
                    Ok(info) => {
                        all = false;
                        last = format!("member {i}: {info:?}");
                    }
                    Err(e) => {
                        all = false;
                        last = format!("member {i}: {e}");
                    }
                }
            }
            if all {
                let shape = self.roles_everywhere().await;
                match shape {
                    Ok(()) => return Ok(()),
                    Err(e) => last = e,
                }
            }
            sleep(POLL).await;
        }
        Err(format!(
            "cluster not formed within {limit:?}; last seen: {last}"
        ))
    }

    /// Waits until every running member reports `cluster_state:ok` with all 16384 slots ok
    /// (members that are down are skipped).
    pub async fn wait_serving(&self, limit: Duration) -> Result<(), String> {
        let started = Instant::now();
        let mut last = String::new();
        while started.elapsed() < limit {
            let mut all = true;
            for i in (0..self.members.len()).filter(|&i| self.members[i].server.is_some()) {
                let info = match self.client(i).await {
                    Ok(c) => c.cluster_info().await.map_err(|e| e.to_string()),
                    Err(e) => Err(e),
                };
                match info {
                    Ok(info) if info.state == ClusterState::Ok && info.slots_ok == 16384 => {}
                    Ok(info) => {
                        all = false;
                        last = format!("member {i}: {info:?}");
                    }
                    Err(e) => {
                        all = false;
                        last = format!("member {i}: {e}");
                    }
                }
            }
            if all {
                return Ok(());
            }
            sleep(POLL).await;
        }
        Err(format!("not serving within {limit:?}; last seen: {last}"))
    }

    /// Every member sees shard `s`'s replicas following shard `s`'s primary.
    async fn roles_everywhere(&self) -> Result<(), String> {
        let per = (self.members.len() - self.shards) / self.shards.max(1);
        for i in 0..self.members.len() {
            let nodes = self.nodes(i).await?;
            for shard in 0..self.shards {
                for n in 0..per {
                    let r = &self.members[self.replica_index(shard, n)].id;
                    let follows = nodes.get(r).and_then(|node| node.primary_id.as_deref())
                        == Some(self.members[shard].id.as_str());
                    if !follows {
                        return Err(format!(
                            "member {i} does not see {r} following shard {shard}"
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Waits until member `i` sees every other running member healthy over a connected bus
    /// link, and every running member sees `i` healthy. A member that just restarted can be
    /// refused a planned `CLUSTER FAILOVER` ("Master is down or failed"), or lose its
    /// election for lack of votes, until the views have settled.
    pub async fn wait_settled(&self, i: usize, limit: Duration) -> Result<(), String> {
        let id = self.members[i].id.clone();
        let running: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.server.is_some())
            .map(|m| m.id.clone())
            .collect();
        self.wait_member(i, limit, "sees every member healthy", |n| {
            running.iter().filter(|r| **r != id).all(|r| {
                n.get(r).is_some_and(|node| {
                    !node.is_failing() && node.link == crate::engine::LinkState::Connected
                })
            })
        })
        .await?;
        self.wait_all(limit, "everyone sees the member healthy", |_, n| {
            n.get(&id).is_some_and(|node| !node.is_failing())
        })
        .await
    }

    /// Member `i`'s `CLUSTER NODES`.
    pub async fn nodes(&self, i: usize) -> Result<ClusterNodes, String> {
        self.client(i)
            .await?
            .cluster_nodes()
            .await
            .map_err(|e| lab_error("CLUSTER NODES", e))
    }

    /// Polls member `i`'s `CLUSTER NODES` until `check` holds, at most `limit`.
    pub async fn wait_member(
        &self,
        i: usize,
        limit: Duration,
        what: &str,
        check: impl Fn(&ClusterNodes) -> bool,
    ) -> Result<ClusterNodes, String> {
        let started = Instant::now();
        let mut last = String::new();
        while started.elapsed() < limit {
            match self.nodes(i).await {
                Ok(nodes) if check(&nodes) => return Ok(nodes),
                Ok(nodes) => last = format!("{} nodes", nodes.nodes.len()),
                Err(e) => last = e,
            }
            sleep(POLL).await;
        }
        Err(format!(
            "member {i}: not `{what}` within {limit:?} (last: {last})"
        ))
    }

    /// Polls every running member until `check(i, nodes)` holds on all of them.
    pub async fn wait_all(
        &self,
        limit: Duration,
        what: &str,
        check: impl Fn(usize, &ClusterNodes) -> bool,
    ) -> Result<(), String> {
        let started = Instant::now();
        let mut last = String::new();
        while started.elapsed() < limit {
            let mut all = true;
            for i in 0..self.members.len() {
                if self.members[i].server.is_none() {
                    continue;
                }
                match self.nodes(i).await {
                    Ok(nodes) if check(i, &nodes) => {}
                    Ok(_) => {
                        all = false;
                        last = format!("member {i} does not agree yet");
                    }
                    Err(e) => {
                        all = false;
                        last = e;
                    }
                }
            }
            if all {
                return Ok(());
            }
            sleep(POLL).await;
        }
        Err(format!("not `{what}` within {limit:?} (last: {last})"))
    }

    /// Waits until every running primary that owns slots shows, in its `CLUSTER NODES`, `id`
    /// as a primary with a
    /// config epoch of at least `epoch` that owns slots (the agreement a planned handover
    /// waits for before the old primary may be restarted). Returns how long it took.
    pub async fn wait_primaries_agree(
        &self,
        id: &str,
        epoch: u64,
        limit: Duration,
    ) -> Result<Duration, String> {
        let started = Instant::now();
        let mut last = String::new();
        while started.elapsed() < limit {
            let mut all = true;
            for i in 0..self.members.len() {
                if self.members[i].server.is_none() {
                    continue;
                }
                let nodes = match self.nodes(i).await {
                    Ok(n) => n,
                    Err(e) => {
                        all = false;
                        last = e;
                        continue;
                    }
                };
                // Primaries that own slots: the voters. A new, empty node is a primary
                // without slots until it is made a replica.
                if !nodes
                    .myself()
                    .is_some_and(|me| me.flags.primary && !me.slots.is_empty())
                {
                    continue;
                }
                let agrees = nodes.get(id).is_some_and(|n| {
                    n.flags.primary && n.config_epoch >= epoch && !n.slots.is_empty()
                });
                if !agrees {
                    all = false;
                    last = format!("member {i} does not show {id} as primary of epoch {epoch}");
                }
            }
            if all {
                return Ok(started.elapsed());
            }
            sleep(Duration::from_millis(2)).await;
        }
        Err(format!("primaries did not agree within {limit:?}: {last}"))
    }
}
