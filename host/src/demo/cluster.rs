//! `kvpilot demo cluster`: three shards of one primary and one replica on loopback, driven
//! by the operator's reconcile loop as `kvpilot local up` drives them, a cluster writer over
//! keys of every slot, and three disruptions in one run — (a) a proactive rolling restart of
//! every member after a config change, (b) one shard's primary SIGKILLed, (c) one shard's
//! primary restarted at once with its data wiped but its `nodes.conf` kept (it still owns its
//! slots; it comes back parked and its replica, which keeps the data, is forced over). Every
//! acknowledged key is read back at the end.

use super::cluster_writer::{ClusterWriter, missing};
use super::writer::max_gap;
use super::{DemoError, Harness, fail, interruptible, ms, ready, wait_status};
use crate::platform::Platform;
use crate::platform::local::LocalCluster;
use crate::platform::local::server::NODES_CONF;
use crate::status::ClusterStatus;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, watch};

/// Shards of the demo cluster, each one primary and [`REPLICAS`] replica.
pub const SHARDS: u32 = 3;
const REPLICAS: u32 = 1;
/// The shard whose primary is SIGKILLed in (b).
const KILLED_SHARD: usize = 1;
/// The shard whose primary comes back empty in (c).
const WIPED_SHARD: usize = 2;

/// How the demo runs.
#[derive(Debug, Clone, Copy)]
pub struct Durations {
    /// How long the writer runs before and after each disruption.
    pub steady: Duration,
    /// Also roll a cluster of its own by hand with the engine's CLI, for comparison
    /// ([`super::cluster_cli`]), when the CLI is installed.
    pub cli_rollout: bool,
}

impl Default for Durations {
    fn default() -> Self {
        Durations {
            steady: Duration::from_millis(1500),
            cli_rollout: true,
        }
    }
}

/// (a): the planned rollout of every member.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutReport {
    /// Writes acknowledged from the writer's start until the end of the phase.
    pub acked: usize,
    pub lost: usize,
    /// The longest the writer went without an acknowledgement during the phase.
    pub max_gap_ms: u64,
    /// From the config change until every member runs the new revision and the cluster is
    /// formed again.
    pub seconds: f64,
    /// The longest any one key waited, from its first try to its acknowledgement.
    pub max_key_wait_ms: u64,
}

/// (b): a shard's primary SIGKILLed.
#[derive(Debug, Clone, Serialize)]
pub struct FailoverReport {
    /// From SIGKILL until the shard's replica answers as primary.
    pub detect_and_promote_ms: u64,
    pub acked: usize,
    pub lost: usize,
    pub max_gap_ms: u64,
    pub shard: usize,
}

/// (c): a shard's primary restarted empty with its `nodes.conf`.
#[derive(Debug, Clone, Serialize)]
pub struct EmptyRestartReport {
    pub acked: usize,
    pub lost: usize,
    pub max_gap_ms: u64,
    /// From the restart until the shard's replica answers as primary.
    pub replica_promoted_ms: u64,
    pub shard: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterReport {
    pub engine: String,
    pub shards: u32,
    pub rollout: RolloutReport,
    pub failover: FailoverReport,
    pub empty_restart: EmptyRestartReport,
    /// Acknowledged writes in the whole run, and how many are missing at the end.
    pub acked: usize,
    pub lost: usize,
    /// The same config change rolled by hand with `valkey-cli`/`redis-cli`
    /// ([`super::cluster_cli`]); absent when not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cli_rollout: Option<super::cluster_cli::CliRolloutReport>,
}

fn manifest(engine: kvpilot_sdk::Engine, hz: u32) -> String {
    let kind = super::engine_name(engine);
    format!(
        "apiVersion: kvpilot.dev/v1alpha1\nkind: KvCluster\nmetadata:\n  name: demo\nspec:\n  engine:\n    kind: {kind}\n  shards: {SHARDS}\n  replicas: {REPLICAS}\n  config:\n    hz: \"{hz}\"\n  rollout:\n    handoverTimeoutSeconds: 5\n"
    )
}

/// Runs the cluster demo in `work`.
pub async fn run(
    engine: kvpilot_sdk::Engine,
    work: &Path,
    durations: Durations,
    progress: impl Fn(&str),
) -> Result<ClusterReport, DemoError> {
    if engine == kvpilot_sdk::Engine::Dragonfly {
        return Err(fail("setup", "the cluster demo runs Valkey or Redis"));
    }
    let mut h = Harness::start(engine, work, "demo-cluster.yaml", manifest(engine, 10)).await?;
    let spec_path = h.spec_path.clone();
    let result = interruptible(scenario(
        engine,
        &spec_path,
        &h.cluster,
        &mut h.status,
        durations,
        &progress,
    ))
    .await;
    let mut report = h.finish(result).await?;
    if durations.cli_rollout {
        progress("the same rollout by hand with the engine's CLI, on a cluster of its own");
        report.cli_rollout = Some(super::cluster_cli::run(engine, work, durations.steady).await?);
    }
    Ok(report)
}

/// Ready and formed: every shard ready, every member on the desired revision (not
/// `old_revision`, when given).
fn formed(s: &ClusterStatus, old_revision: Option<&str>) -> bool {
    ready(s)
        && ["ClusterFormed", "SlotsAssigned"]
            .iter()
            .all(|c| s.condition(c).is_some_and(|c| c.status))
        && s.cluster
            .as_ref()
            .is_some_and(|c| c.shards_ready == SHARDS && c.shards.len() == SHARDS as usize)
        && old_revision.is_none_or(|old| s.desired_revision != old)
        && s.members
            .iter()
            .all(|m| m.revision.as_deref() == Some(s.desired_revision.as_str()))
}

fn shard_primary(s: &ClusterStatus, shard: usize) -> Option<String> {
    s.cluster.as_ref()?.shards.get(shard)?.primary.clone()
}

/// The client addresses of the other members of `shard` than `primary`.
fn shard_others(s: &ClusterStatus, shard: usize, primary: &str) -> Vec<SocketAddr> {
    let Some(sh) = s.cluster.as_ref().and_then(|c| c.shards.get(shard)) else {
        return Vec::new();
    };
    sh.nodes
        .iter()
        .filter(|n| n.member != primary)
        .filter_map(|n| s.members.iter().find(|m| m.name == n.member))
        .filter_map(|m| m.address.parse().ok())
        .collect()
}

fn seeds(s: &ClusterStatus) -> Vec<crate::engine::HostPort> {
    s.cluster
        .iter()
        .flat_map(|c| c.seeds.iter())
        .filter_map(|a| a.parse::<SocketAddr>().ok())
        .map(crate::engine::HostPort::from)
        .collect()
}

async fn scenario(
    engine: kvpilot_sdk::Engine,
    spec_path: &Path,
    cluster: &Arc<Mutex<LocalCluster>>,
    status: &mut watch::Receiver<ClusterStatus>,
    durations: Durations,
    progress: &impl Fn(&str),
) -> Result<ClusterReport, DemoError> {
    let steady = durations.steady;
    progress("starting three shards of one primary and one replica");
    let boot = wait_status(status, "bootstrap", |s| formed(s, None)).await?;
    let writer = ClusterWriter::start(seeds(&boot), "demo", Duration::from_secs(600))
        .await
        .map_err(|e| fail("bootstrap", e))?;
    tokio::time::sleep(steady).await;
    if writer.acked().await == 0 {
        return Err(fail(
            "bootstrap",
            "the cluster writer got no acknowledgement",
        ));
    }

    // (a) a config change rolls every member, one shard at a time, replicas first, each
    // primary handing over by CLUSTER FAILOVER.
    progress("(a) proactive rolling restart of every member after a config change");
    let a_start = Instant::now();
    std::fs::write(spec_path, manifest(engine, 11)).map_err(|e| fail("rollout", e))?;
    let rolled = wait_status(status, "rollout", |s| {
        formed(s, Some(&boot.desired_revision))
    })
    .await?;
    let a_done = Instant::now();
    tokio::time::sleep(steady).await;
    let a_end = Instant::now();

    // (b) one shard's primary is SIGKILLed; the operator forces its replica over and starts
    // the old primary again as a replica.
    progress("(b) SIGKILL of one shard's primary");
    let victim = shard_primary(&rolled, KILLED_SHARD)
        .ok_or_else(|| fail("failover", "the shard has no primary"))?;
    let survivors = shard_others(&rolled, KILLED_SHARD, &victim);
    let b_start = Instant::now();
    cluster
        .lock()
        .await
        .kill(&victim)
        .map_err(|e| fail("failover", e))?;
    let promoted_after = super::wait_for_promotion(&survivors, b_start).await?;
    let healed = wait_status(status, "failover", |s| {
        formed(s, None) && shard_primary(s, KILLED_SHARD).is_some_and(|p| p != victim)
    })
    .await?;
    tokio::time::sleep(steady).await;
    let b_end = Instant::now();

    // (c) one shard's primary crashes and is started again at once, as a kubelet restarts a
    // container, with its data gone but its nodes.conf kept: it still owns its slots. It
    // comes back parked, so its replica keeps the data and no write is acknowledged by it.
    progress("(c) one shard's primary restarts empty with its nodes.conf");
    let wiped = shard_primary(&healed, WIPED_SHARD)
        .ok_or_else(|| fail("empty restart", "the shard has no primary"))?;
    let replicas = shard_others(&healed, WIPED_SHARD, &wiped);
    let c_start = Instant::now();
    restart_empty(cluster, &wiped).await?;
    let replica_promoted_after = super::wait_for_promotion(&replicas, c_start).await?;
    wait_status(status, "empty restart", |s| {
        formed(s, None) && shard_primary(s, WIPED_SHARD).is_some_and(|p| p != wiped)
    })
    .await?;
    tokio::time::sleep(steady).await;
    let c_end = Instant::now();

    let log = writer.stop().await;
    let last = status.borrow().clone();
    progress("reading back every acknowledged key");
    let acked = log.acked();
    let lost = missing(seeds(&last), "demo", &acked)
        .await
        .map_err(|e| fail("verify", e))?;
    let acks = &log.log.acks;
    let lost_between = |from: Instant, to: Instant| {
        acks.iter()
            .filter(|a| a.at >= from && a.at < to && lost.binary_search(&a.seq).is_ok())
            .count()
    };
    let acked_between =
        |from: Instant, to: Instant| acks.iter().filter(|a| a.at >= from && a.at < to).count();
    let first = acks.first().map_or(a_start, |a| a.at);
    let key_wait = acks
        .iter()
        .filter(|a| a.at >= a_start && a.at < a_end)
        .map(|a| a.since_first_try)
        .max()
        .unwrap_or_default();
    Ok(ClusterReport {
        engine: super::engine_name(engine).to_string(),
        shards: SHARDS,
        // Writes before the change count with the rollout: all of them must survive.
        rollout: RolloutReport {
            acked: acked_between(first, a_end),
            lost: lost_between(first, a_end),
            max_gap_ms: ms(max_gap(acks, a_start, a_end)),
            seconds: (a_done - a_start).as_secs_f64(),
            max_key_wait_ms: ms(key_wait),
        },
        failover: FailoverReport {
            detect_and_promote_ms: ms(promoted_after),
            acked: acked_between(b_start, b_end),
            lost: lost_between(b_start, b_end),
            max_gap_ms: ms(max_gap(acks, b_start, b_end)),
            shard: KILLED_SHARD,
        },
        empty_restart: EmptyRestartReport {
            acked: acked_between(c_start, c_end),
            lost: lost_between(c_start, c_end),
            max_gap_ms: ms(max_gap(acks, c_start, c_end)),
            replica_promoted_ms: ms(replica_promoted_after),
            shard: WIPED_SHARD,
        },
        acked: acked.len(),
        lost: lost.len(),
        cli_rollout: None,
    })
}

/// SIGKILL `member`, remove its dataset (its `.rdb`/`.aof` files, not its `nodes.conf`) and
/// start it again at once, without asking the reconciler, as a kubelet restarts a crashed
/// container.
async fn restart_empty(cluster: &Arc<Mutex<LocalCluster>>, member: &str) -> Result<(), DemoError> {
    let c = cluster.lock().await;
    restart_wiped(&c, member, Wipe::Data).await
}

/// What [`restart_wiped`] removes from a member's data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wipe {
    /// Its dataset (`.rdb`/`.aof` files); it comes back with its `nodes.conf`.
    Data,
    /// Its `nodes.conf`; it comes back with its dataset as a new node.
    NodesConf,
}

/// SIGKILL `member`, remove what `wipe` says and start it again at once, without asking the
/// reconciler.
pub async fn restart_wiped(c: &LocalCluster, member: &str, wipe: Wipe) -> Result<(), DemoError> {
    let platform = c.platform();
    platform
        .kill(member)
        .map_err(|e| fail("empty restart", e))?;
    platform
        .wait_stopped(member, Duration::from_secs(5))
        .await
        .map_err(|e| fail("empty restart", e))?;
    let dir = platform.dir().join("members").join(member);
    let entries = std::fs::read_dir(&dir)
        .map_err(|e| fail("empty restart", format!("{}: {e}", dir.display())))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let data = name.ends_with(".rdb") || name.ends_with(".aof") || name == "appendonlydir";
        let remove = match wipe {
            Wipe::Data => data,
            Wipe::NodesConf => name == NODES_CONF,
        };
        if remove {
            let path = entry.path();
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.map_err(|e| fail("empty restart", format!("{}: {e}", path.display())))?;
        }
    }
    if wipe == Wipe::Data && !dir.join(NODES_CONF).is_file() {
        return Err(fail(
            "empty restart",
            format!("{member} has no {NODES_CONF} to come back with"),
        ));
    }
    platform
        .start(&[member.to_string()], None)
        .await
        .map_err(|e| fail("empty restart", e))?;
    Ok(())
}

impl ClusterReport {
    /// The short table the demo prints.
    pub fn table(&self) -> String {
        format!(
            "engine: {}, {} shards × (1 primary + 1 replica)\n\
             {:<34} {:>8} {:>6} {:>14} {:>9}\n\
             {:<34} {:>8} {:>6} {:>14} {:>9.2}\n\
             {:<34} {:>8} {:>6} {:>14} {:>9}\n\
             {:<34} {:>8} {:>6} {:>14} {:>9}\n\
             all phases: {} writes acknowledged, {} lost\n{}",
            self.engine,
            self.shards,
            "phase",
            "acked",
            "lost",
            "max gap (ms)",
            "took (s)",
            "(a) rolling restart (every member)",
            self.rollout.acked,
            self.rollout.lost,
            self.rollout.max_gap_ms,
            self.rollout.seconds,
            format!("(b) SIGKILL of shard {} primary", self.failover.shard),
            self.failover.acked,
            self.failover.lost,
            self.failover.max_gap_ms,
            format!("promote {} ms", self.failover.detect_and_promote_ms),
            format!("(c) shard {} primary back empty", self.empty_restart.shard),
            self.empty_restart.acked,
            self.empty_restart.lost,
            self.empty_restart.max_gap_ms,
            format!("promote {} ms", self.empty_restart.replica_promoted_ms),
            self.acked,
            self.lost,
            self.cli_rollout.as_ref().map_or(String::new(), |c| format!(
                "{:<34} {:>8} {:>6} {:>14} {:>9.2}\n",
                "same rollout by hand (CLI)", c.acked, c.lost, c.max_gap_ms, c.seconds
            )),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{KvClusterManifest, validate_spec};

    #[test]
    fn the_manifest_is_a_valid_three_shard_cluster() {
        for engine in [kvpilot_sdk::Engine::Valkey, kvpilot_sdk::Engine::Redis] {
            let text = manifest(engine, 10);
            let m: KvClusterManifest = serde_norway::from_str(&text).expect(&text);
            assert_eq!(validate_spec(&m.spec), Ok(()));
            assert_eq!(m.spec.shards, SHARDS);
            assert_eq!(m.spec.replicas, REPLICAS);
        }
    }
}
