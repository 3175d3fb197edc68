//! The baseline beside `kvpilot demo cluster`'s rollout: the same three-shard cluster, the
//! same config change rolled by hand with the engine's own CLI (`valkey-cli`/`redis-cli`),
//! as an operator without kvpilot would script it. Per shard: restart the replica on the new
//! config, wait until `INFO replication` says its link is up and it is not syncing, `CLUSTER
//! FAILOVER` on it, wait until it answers `role:master` and `--cluster check` passes, then
//! restart the old primary and wait for its link. No parking, no history checks, no epoch
//! agreement across every primary: only what the CLI shows.

use super::cluster_lab::ClusterLab;
use super::cluster_writer::{ClusterWriter, missing};
use super::writer::max_gap;
use super::{DemoError, fail, ms};
use serde::Serialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long one wait of the script may take (longer than the server's manual-failover
/// timeout, 5 s, so a failover that gave up is seen as such before it is tried again).
const STEP_LIMIT: Duration = Duration::from_secs(8);
/// `CLUSTER FAILOVER` attempts per shard.
const FAILOVER_TRIES: u32 = 3;
/// Longest a member may take to stop on SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The hand-driven rollout's figures, in the shape of the operator's.
#[derive(Debug, Clone, Serialize)]
pub struct CliRolloutReport {
    pub acked: usize,
    pub lost: usize,
    pub max_gap_ms: u64,
    pub seconds: f64,
    pub max_key_wait_ms: u64,
}

struct Cli {
    binary: PathBuf,
}

impl Cli {
    /// Runs the CLI against `addr` with `args`; its stdout, or why it failed.
    async fn run(&self, addr: SocketAddr, args: &[&str]) -> Result<String, String> {
        let out = tokio::process::Command::new(&self.binary)
            .arg("-h")
            .arg(addr.ip().to_string())
            .arg("-p")
            .arg(addr.port().to_string())
            .args(args)
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(10), out)
            .await
            .map_err(|_| format!("{args:?} on {addr}: no answer in 10 s"))?
            .map_err(|e| format!("{}: {e}", self.binary.display()))?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!("{args:?} on {addr}: {}: {text}", out.status))
        }
    }

    /// Polls `args` on `addr` until `done(stdout)`, at most [`STEP_LIMIT`].
    async fn until(
        &self,
        addr: SocketAddr,
        args: &[&str],
        what: &str,
        done: impl Fn(&str) -> bool,
    ) -> Result<(), DemoError> {
        let started = Instant::now();
        let mut last = String::new();
        while started.elapsed() < STEP_LIMIT {
            match self.run(addr, args).await {
                Ok(text) if done(&text) => return Ok(()),
                Ok(text) => last = text.lines().take(3).collect::<Vec<_>>().join(" | "),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(fail(
            "cli rollout",
            format!("{addr}: not `{what}` within {STEP_LIMIT:?} (last: {last})"),
        ))
    }
}

/// A replica whose link is up and that is not syncing.
fn linked(info: &str) -> bool {
    info.contains("master_link_status:up") && info.contains("master_sync_in_progress:0")
}

/// Runs the hand-driven rollout on a cluster of its own in `work`.
pub async fn run(
    engine: kvpilot_sdk::Engine,
    work: &Path,
    steady: Duration,
) -> Result<CliRolloutReport, DemoError> {
    let (dialect, cli) = match engine {
        kvpilot_sdk::Engine::Valkey => (crate::engine::Dialect::Valkey, "valkey-cli"),
        kvpilot_sdk::Engine::Redis => (crate::engine::Dialect::Redis, "redis-cli"),
        kvpilot_sdk::Engine::Dragonfly => {
            return Err(fail("cli rollout", "Valkey or Redis only"));
        }
    };
    let binary = super::find_engine(engine).map_err(|e| fail("cli rollout", e))?;
    let cli = Cli {
        binary: super::which(cli)
            .ok_or_else(|| fail("cli rollout", format!("{cli} was not found on PATH")))?,
    };
    let shards = super::cluster::SHARDS as usize;
    let mut lab = ClusterLab::start(
        &binary,
        dialect,
        &work.join("cli"),
        shards,
        1,
        Duration::from_millis(1500),
    )
    .await
    .map_err(|e| fail("cli rollout", e))?;
    let result = script(&cli, &mut lab, shards, steady).await;
    for i in 0..lab.members.len() {
        let _ = lab.kill(i).await;
    }
    result
}

async fn restart(lab: &mut ClusterLab, i: usize) -> Result<(), DemoError> {
    if let Some(mut server) = lab.members[i].server.take() {
        server
            .terminate(STOP_GRACE)
            .await
            .map_err(|e| fail("cli rollout", e))?;
    }
    lab.members[i].spec.config.insert("hz".into(), "11".into());
    lab.start_member(i)
        .await
        .map_err(|e| fail("cli rollout", e))
}

async fn script(
    cli: &Cli,
    lab: &mut ClusterLab,
    shards: usize,
    steady: Duration,
) -> Result<CliRolloutReport, DemoError> {
    let writer = ClusterWriter::start(lab.seeds(), "cli", Duration::from_secs(600))
        .await
        .map_err(|e| fail("cli rollout", e))?;
    tokio::time::sleep(steady).await;
    let start = Instant::now();
    for shard in 0..shards {
        let (p, r) = (shard, lab.replica_index(shard, 0));
        let (p_addr, r_addr) = (lab.addr(p), lab.addr(r));
        restart(lab, r).await?;
        cli.until(r_addr, &["INFO", "replication"], "linked", linked)
            .await?;
        let seed = r_addr.to_string();
        // As a careful script would: the cluster looks healthy from the restarted replica
        // before it is asked to take over, and the failover is tried again if the replica
        // is not primary once the server's own manual-failover timeout (5 s) has passed.
        cli.until(
            r_addr,
            &["--cluster", "check", &seed],
            "cluster check ok",
            |t| t.contains("[OK] All 16384 slots covered") && !t.contains("[ERR]"),
        )
        .await?;
        let mut tries = 0;
        loop {
            tries += 1;
            let answer = cli
                .run(r_addr, &["CLUSTER", "FAILOVER"])
                .await
                .map_err(|e| fail("cli rollout", e))?;
            let promoted = cli
                .until(r_addr, &["INFO", "replication"], "role:master", |t| {
                    t.contains("role:master")
                })
                .await;
            match promoted {
                Ok(()) => break,
                Err(e) if tries >= FAILOVER_TRIES => {
                    return Err(fail(
                        "cli rollout",
                        format!("CLUSTER FAILOVER answered {answer:?}, {tries} tries: {e}"),
                    ));
                }
                Err(_) => {}
            }
        }
        cli.until(
            r_addr,
            &["--cluster", "check", &seed],
            "cluster check ok",
            |t| t.contains("[OK] All 16384 slots covered") && !t.contains("[ERR]"),
        )
        .await?;
        restart(lab, p).await?;
        cli.until(p_addr, &["INFO", "replication"], "linked", linked)
            .await?;
    }
    let done = Instant::now();
    tokio::time::sleep(steady).await;
    let end = Instant::now();
    let log = writer.stop().await;
    let acked = log.acked();
    let lost = missing(lab.seeds(), "cli", &acked)
        .await
        .map_err(|e| fail("cli rollout", e))?;
    let key_wait = log
        .log
        .acks
        .iter()
        .filter(|a| a.at >= start && a.at < end)
        .map(|a| a.since_first_try)
        .max()
        .unwrap_or_default();
    Ok(CliRolloutReport {
        acked: acked.len(),
        lost: lost.len(),
        max_gap_ms: ms(max_gap(&log.log.acks, start, end)),
        seconds: (done - start).as_secs_f64(),
        max_key_wait_ms: ms(key_wait),
    })
}
