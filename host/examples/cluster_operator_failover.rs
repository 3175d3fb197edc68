//! The operator's own cluster-mode failover, measured: a local 3 × (1 primary + 1 replica)
//! cluster bootstrapped and healed by the real reconciler (observe → decide → act, the
//! builtin replica-selection plugin, `CLUSTER FAILOVER FORCE`), with a cluster-aware writer
//! logging every acknowledged key. Each round SIGKILLs one shard's primary (shard 0, 1, 2, 0,
//! …) and reports:
//!
//! - `kill_to_promoted_ms`: SIGKILL → the promotion step finished (the replica owns the slots);
//! - `kill_to_first_ack_ms`: SIGKILL → the writer's first acknowledged write to a slot of that
//!   shard (the shard's write outage as a client sees it; the writer is blocked on that
//!   shard's key meanwhile, so this is also its longest wait);
//! - `kill_to_healed_ms`: SIGKILL → the cluster is formed again with the old primary back as a
//!   replica.
//!
//! At the end every acknowledged key is read back (`lost` must be 0).
//!
//! ```text
//! cargo run --release -p kvpilot --example cluster_operator_failover -- [--engine valkey|redis]
//!     [--rounds 3] [--probe-interval-ms 100] [--json]
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use kvpilot::decide::{Action, Settings};
use kvpilot::demo::cluster_writer::{ClusterWriter, missing, slot_of_seq};
use kvpilot::engine::HostPort;
use kvpilot::engine::slots::balanced_ranges;
use kvpilot::platform::local::LocalCluster;
use kvpilot::platform::local::server::ServerGuard;
use serde::Serialize;

const SHARDS: usize = 3;
/// Longest any phase may take.
const LIMIT: Duration = Duration::from_secs(60);

#[derive(Serialize)]
struct Round {
    shard: usize,
    killed: String,
    promoted: String,
    kill_to_promoted_ms: f64,
    kill_to_first_ack_ms: Option<f64>,
    kill_to_healed_ms: f64,
}

#[derive(Serialize)]
struct Report {
    engine: String,
    probe_interval_ms: u64,
    bootstrap_ms: f64,
    rounds: Vec<Round>,
    acked: usize,
    lost: usize,
    max_kill_to_promoted_ms: f64,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Formed, every shard ready.
fn formed(cluster: &LocalCluster) -> bool {
    let s = &cluster.reconciler.status;
    let ok = |kind: &str| s.condition(kind).is_some_and(|c| c.status);
    ok("Ready")
        && ok("ClusterFormed")
        && s.cluster
            .as_ref()
            .is_some_and(|c| c.shards_ready as usize == SHARDS)
}

/// Steps the reconciler until `done` holds after a step; `Err` after [`LIMIT`].
async fn step_until(
    cluster: &mut LocalCluster,
    what: &str,
    mut done: impl FnMut(&LocalCluster, Option<&Action>) -> bool,
) -> Result<(), String> {
    let started = Instant::now();
    while started.elapsed() < LIMIT {
        let outcome = cluster.step().await;
        let acted = outcome
            .plan
            .action
            .as_ref()
            .filter(|_| outcome.error.is_none());
        if done(cluster, acted) {
            return Ok(());
        }
        tokio::time::sleep(outcome.plan.requeue_after.min(Duration::from_millis(500))).await;
    }
    Err(format!("{what}: not reached within {LIMIT:?}"))
}

async fn run() -> Result<Report, String> {
    let args: Vec<String> = std::env::args().collect();
    let engine: String = arg(&args, "--engine", "valkey".to_string());
    let rounds: usize = arg(&args, "--rounds", 3);
    let probe_ms: u64 = arg(&args, "--probe-interval-ms", 100);
    let dir = tempfile::Builder::new()
        .prefix("kvpilot-cluster-bench-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let spec_path = dir.path().join("cluster.yaml");
    std::fs::write(
        &spec_path,
        format!(
            "apiVersion: kvpilot.dev/v1alpha1\nkind: KvCluster\nmetadata:\n  name: bench\n\
             spec:\n  engine:\n    kind: {engine}\n  replicas: 1\n  shards: {SHARDS}\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let state = dir.path().join("state");
    let guard = ServerGuard::new();
    guard.track_dir(state.join("bench").join("members"));
    let settings = Settings {
        probe_interval: Duration::from_millis(probe_ms),
        steady_interval: Duration::from_millis(500),
        ..Settings::default()
    };
    let mut cluster = LocalCluster::open(&spec_path, &state, None, None, settings)
        .await
        .map_err(|e| e.to_string())?;
    let result = measure(&mut cluster, &engine, rounds, probe_ms, dir.path()).await;
    let _ = cluster.shutdown().await;
    drop(guard);
    result
}

async fn measure(
    cluster: &mut LocalCluster,
    engine: &str,
    rounds: usize,
    probe_ms: u64,
    _dir: &Path,
) -> Result<Report, String> {
    let started = Instant::now();
    step_until(cluster, "bootstrap", |c, _| formed(c)).await?;
    let bootstrap = started.elapsed();
    let seeds: Vec<HostPort> = cluster
        .platform()
        .member_addrs()
        .into_iter()
        .map(HostPort::from)
        .collect();
    let writer = ClusterWriter::start(seeds.clone(), "bench", Duration::from_secs(600))
        .await
        .map_err(|e| e.to_string())?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ranges = balanced_ranges(SHARDS);
    let mut kills = Vec::new();
    let mut out = Vec::new();
    for round in 0..rounds {
        let shard = round % SHARDS;
        let victim = cluster
            .reconciler
            .status
            .cluster
            .as_ref()
            .and_then(|c| c.shards[shard].primary.clone())
            .ok_or("no primary to kill")?;
        let killed_at = Instant::now();
        cluster.kill(&victim).map_err(|e| e.to_string())?;
        let mut promoted: Option<(String, Duration)> = None;
        step_until(cluster, "promotion", |_, acted| {
            if let Some(Action::ClusterFailover { promote, .. }) = acted {
                promoted = Some((promote.clone(), killed_at.elapsed()));
            }
            promoted.is_some()
        })
        .await?;
        step_until(cluster, "healed", |c, _| formed(c)).await?;
        let healed = killed_at.elapsed();
        let (name, to_promoted) = promoted.ok_or("no promotion")?;
        kills.push((shard, killed_at));
        out.push(Round {
            shard,
            killed: victim,
            promoted: name,
            kill_to_promoted_ms: ms(to_promoted),
            kill_to_first_ack_ms: None,
            kill_to_healed_ms: ms(healed),
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let log = writer.stop().await;
    // The first acknowledged write to the killed shard's slots after each kill.
    for (round, (shard, at)) in out.iter_mut().zip(kills) {
        round.kill_to_first_ack_ms = log
            .log
            .acks
            .iter()
            .filter(|a| a.at > at && ranges[shard].contains(slot_of_seq(a.seq)))
            .map(|a| ms(a.at - at))
            .next();
    }
    let acked = log.acked();
    let lost = missing(seeds, "bench", &acked)
        .await
        .map_err(|e| e.to_string())?;
    let max = out
        .iter()
        .map(|r| r.kill_to_promoted_ms)
        .fold(0.0, f64::max);
    Ok(Report {
        engine: engine.to_string(),
        probe_interval_ms: probe_ms,
        bootstrap_ms: ms(bootstrap),
        rounds: out,
        acked: acked.len(),
        lost: lost.len(),
        max_kill_to_promoted_ms: max,
    })
}

#[tokio::main]
async fn main() {
    let json = std::env::args().any(|a| a == "--json");
    match run().await {
        Ok(report) if json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
        }
        Ok(report) => {
            println!(
                "{}: bootstrap {:.0} ms; {} writes acknowledged, {} lost",
                report.engine, report.bootstrap_ms, report.acked, report.lost
            );
            for r in &report.rounds {
                println!(
                    "shard {}: SIGKILL {} → {} promoted {:.0} ms, first ack on the shard {} ms, healed {:.0} ms",
                    r.shard,
                    r.killed,
                    r.promoted,
                    r.kill_to_promoted_ms,
                    r.kill_to_first_ack_ms
                        .map_or("-".to_string(), |v| format!("{v:.0}")),
                    r.kill_to_healed_ms
                );
            }
        }
        Err(e) => {
            eprintln!("cluster_operator_failover: {e}");
            std::process::exit(1);
        }
    }
}
