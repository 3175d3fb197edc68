//! `kvpilot demo snapshots`: what snapshots cost the write path. A three-member group holds a
//! dataset large enough for the fork to matter; a writer measures write latency through the
//! primary endpoint while the group runs (1) without snapshots, (2) `primaryOnly` and
//! (3) `replicasOnly` with a stagger. A sampler watches every member's
//! `rdb_bgsave_in_progress` to count concurrent snapshots.

use super::writer::{Ack, Writer};
use super::{DemoError, Harness, fail, ready, settled, wait_status};
use crate::status::ClusterStatus;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How often the sampler reads every member's persistence state.
const SAMPLE_EVERY: Duration = Duration::from_millis(25);
/// Keys are written in pipelines of this many.
const LOAD_BATCH: usize = 1000;
/// Size of each loaded value.
const VALUE_BYTES: usize = 1024;

/// Write latency through the endpoint during one phase.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub writes: usize,
    /// Snapshots (BGSAVE) seen during the phase, by role.
    pub bgsaves_on_primary: u32,
    pub bgsaves_on_replicas: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct SnapshotReport {
    pub engine: String,
    pub dataset_mib: u64,
    pub baseline: Latency,
    pub primary_only: Latency,
    pub replicas_only: Latency,
    pub max_concurrent_bgsave_per_shard: u32,
}

/// How long each phase runs.
#[derive(Debug, Clone, Copy)]
pub struct Durations {
    pub baseline: Duration,
    pub primary_only: Duration,
    pub replicas_only: Duration,
}

impl Default for Durations {
    fn default() -> Self {
        // Cron fires once a minute: each snapshot phase spans enough minutes for every
        // snapshotting member to save at least once.
        Durations {
            baseline: Duration::from_secs(60),
            primary_only: Duration::from_secs(75),
            replicas_only: Duration::from_secs(135),
        }
    }
}

fn manifest(engine: kvpilot_sdk::Engine, snapshots: Option<(&str, &str, &str)>) -> String {
    let kind = match engine {
        kvpilot_sdk::Engine::Redis => "redis",
        _ => "valkey",
    };
    let mut m = format!(
        "apiVersion: kvpilot.dev/v1alpha1\nkind: KvCluster\nmetadata:\n  name: snapdemo\nspec:\n  engine:\n    kind: {kind}\n  replicas: 2\n  rollout:\n    maxLagBytes: 67108864\n"
    );
    if let Some((mode, schedule, stagger)) = snapshots {
        m.push_str(&format!(
            "  snapshots:\n    mode: {mode}\n    schedule: \"{schedule}\"\n    staggerInterval: {stagger}\n"
        ));
    }
    m
}

/// Runs the snapshot demo in `work` with a dataset of `dataset_mib` MiB.
pub async fn run(
    engine: kvpilot_sdk::Engine,
    work: &Path,
    dataset_mib: u64,
    durations: Durations,
    progress: impl Fn(&str),
) -> Result<SnapshotReport, DemoError> {
    let mut h = Harness::start(engine, work, "snapdemo.yaml", manifest(engine, None)).await?;
    let spec_path = h.spec_path.clone();
    let result = phases(
        engine,
        &spec_path,
        h.endpoint,
        &mut h.status,
        dataset_mib,
        durations,
        &progress,
    )
    .await;
    h.finish(result).await
}

async fn phases(
    engine: kvpilot_sdk::Engine,
    spec_path: &Path,
    endpoint: SocketAddr,
    status: &mut watch::Receiver<ClusterStatus>,
    dataset_mib: u64,
    durations: Durations,
    progress: &impl Fn(&str),
) -> Result<SnapshotReport, DemoError> {
    progress("starting a three-member group");
    settled(status, None, "bootstrap").await?;
    progress(&format!(
        "loading {dataset_mib} MiB through the primary endpoint"
    ));
    load(endpoint, dataset_mib).await?;
    progress("waiting for the replicas to catch up");
    wait_status(status, "load", |s| {
        ready(s) && s.members.iter().all(|m| m.keys >= dataset_mib * 1024)
    })
    .await?;

    let writer = Writer::start(endpoint, "lat", Duration::from_secs(1800));
    let sampler = Sampler::start(status.clone());

    progress("baseline: no snapshots");
    let t0 = Instant::now();
    tokio::time::sleep(durations.baseline).await;
    let t1 = Instant::now();

    progress("primaryOnly: the primary snapshots every minute");
    std::fs::write(
        spec_path,
        manifest(engine, Some(("primaryOnly", "* * * * *", "1m"))),
    )
    .map_err(|e| fail("primaryOnly", e))?;
    tokio::time::sleep(durations.primary_only).await;
    let t2 = Instant::now();

    progress("replicasOnly: replicas snapshot every two minutes, staggered by one");
    std::fs::write(
        spec_path,
        manifest(engine, Some(("replicasOnly", "*/2 * * * *", "1m"))),
    )
    .map_err(|e| fail("replicasOnly", e))?;
    // Let a primaryOnly snapshot that is still running finish before measuring.
    wait_status(status, "replicasOnly", |s| {
        s.members
            .iter()
            .all(|m| m.role != "primary" || m.snapshot_schedule.is_none())
    })
    .await?;
    sampler.wait_idle().await;
    let t2b = Instant::now();
    tokio::time::sleep(durations.replicas_only).await;
    let t3 = Instant::now();

    let log = writer.stop().await;
    let samples = sampler.stop().await;
    if log.acks.is_empty() {
        return Err(fail(
            "measure",
            format!("no write was acknowledged ({:?})", log.last_error),
        ));
    }
    let phase = |from: Instant, to: Instant| {
        let (on_primary, on_replicas) = samples.started_between(from, to);
        Latency {
            bgsaves_on_primary: on_primary,
            bgsaves_on_replicas: on_replicas,
            ..latency(&log.acks, from, to)
        }
    };
    Ok(SnapshotReport {
        engine: super::engine_name(engine).to_string(),
        dataset_mib,
        baseline: phase(t0, t1),
        primary_only: phase(t1, t2),
        replicas_only: phase(t2b, t3),
        max_concurrent_bgsave_per_shard: samples.max_concurrent,
    })
}

/// Writes `mib` MiB of 1 KiB values in pipelines.
async fn load(endpoint: SocketAddr, mib: u64) -> Result<(), DemoError> {
    let client =
        redis::Client::open(format!("redis://{endpoint}/")).map_err(|e| fail("load", e))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(30)));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| fail("load", e))?;
    let value = "x".repeat(VALUE_BYTES);
    let keys = mib * 1024;
    let mut next = 0u64;
    while next < keys {
        let mut pipe = redis::pipe();
        for k in next..(next + LOAD_BATCH as u64).min(keys) {
            pipe.cmd("SET")
                .arg(format!("data:{k}"))
                .arg(&value)
                .ignore();
        }
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(|e| fail("load", e))?;
        next += LOAD_BATCH as u64;
    }
    Ok(())
}

fn latency(acks: &[Ack], from: Instant, to: Instant) -> Latency {
    let mut ms: Vec<f64> = acks
        .iter()
        .filter(|a| a.at >= from && a.at < to)
        .map(|a| a.latency.as_secs_f64() * 1000.0)
        .collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| {
        if ms.is_empty() {
            return 0.0;
        }
        let i = ((ms.len() as f64 - 1.0) * q).round() as usize;
        round3(ms[i.min(ms.len() - 1)])
    };
    Latency {
        p50_ms: pick(0.50),
        p99_ms: pick(0.99),
        max_ms: round3(ms.last().copied().unwrap_or(0.0)),
        writes: ms.len(),
        bgsaves_on_primary: 0,
        bgsaves_on_replicas: 0,
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Watches `rdb_bgsave_in_progress` on every member.
struct Sampler {
    stop: Arc<AtomicBool>,
    running: Arc<AtomicU32>,
    task: tokio::task::JoinHandle<Samples>,
}

#[derive(Debug, Default)]
struct Samples {
    max_concurrent: u32,
    /// (when a BGSAVE was first seen running, whether on the primary).
    started: Vec<(Instant, bool)>,
}

impl Samples {
    fn started_between(&self, from: Instant, to: Instant) -> (u32, u32) {
        let mut p = 0;
        let mut r = 0;
        for (at, on_primary) in &self.started {
            if *at >= from && *at < to {
                if *on_primary {
                    p += 1;
                } else {
                    r += 1;
                }
            }
        }
        (p, r)
    }
}

impl Sampler {
    fn start(status: watch::Receiver<ClusterStatus>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let running = Arc::new(AtomicU32::new(0));
        let task = tokio::spawn(sample(status, stop.clone(), running.clone()));
        Sampler {
            stop,
            running,
            task,
        }
    }

    /// Waits until no member has been seen saving for two samples (at most a minute).
    async fn wait_idle(&self) {
        let started = Instant::now();
        let mut quiet = 0;
        while quiet < 2 && started.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(SAMPLE_EVERY * 2).await;
            if self.running.load(Ordering::SeqCst) == 0 {
                quiet += 1;
            } else {
                quiet = 0;
            }
        }
    }

    async fn stop(self) -> Samples {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap_or_default()
    }
}

async fn sample(
    status: watch::Receiver<ClusterStatus>,
    stop: Arc<AtomicBool>,
    running: Arc<AtomicU32>,
) -> Samples {
    let mut out = Samples::default();
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(500)))
        .set_response_timeout(Some(Duration::from_millis(500)));
    let mut conns: BTreeMap<String, redis::aio::MultiplexedConnection> = BTreeMap::new();
    let mut saving: BTreeMap<String, bool> = BTreeMap::new();
    while !stop.load(Ordering::SeqCst) {
        let snapshot = status.borrow().clone();
        let mut concurrent = 0;
        for m in &snapshot.members {
            if !conns.contains_key(&m.address)
                && let Ok(c) = redis::Client::open(format!("redis://{}/", m.address))
                && let Ok(conn) = c
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
            {
                conns.insert(m.address.clone(), conn);
            }
            let Some(conn) = conns.get_mut(&m.address) else {
                continue;
            };
            let info: Result<String, _> = redis::cmd("INFO")
                .arg("persistence")
                .query_async(conn)
                .await;
            let Ok(info) = info else {
                conns.remove(&m.address);
                continue;
            };
            let now_saving = info.contains("rdb_bgsave_in_progress:1");
            if now_saving {
                concurrent += 1;
            }
            let was = saving
                .insert(m.address.clone(), now_saving)
                .unwrap_or(false);
            if now_saving && !was {
                out.started.push((Instant::now(), m.role == "primary"));
            }
        }
        out.max_concurrent = out.max_concurrent.max(concurrent);
        running.store(concurrent, Ordering::SeqCst);
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    out
}

impl SnapshotReport {
    pub fn table(&self) -> String {
        let row = |name: &str, l: &Latency| {
            format!(
                "{:<16} {:>9.3} {:>9.3} {:>9.3} {:>9} {:>10} {:>10}\n",
                name,
                l.p50_ms,
                l.p99_ms,
                l.max_ms,
                l.writes,
                l.bgsaves_on_primary,
                l.bgsaves_on_replicas
            )
        };
        format!(
            "engine: {}   dataset: {} MiB\n{:<16} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10}\n{}{}{}max concurrent BGSAVE per shard: {}\n",
            self.engine,
            self.dataset_mib,
            "phase",
            "p50 ms",
            "p99 ms",
            "max ms",
            "writes",
            "bgsave P",
            "bgsave R",
            row("baseline", &self.baseline),
            row("primaryOnly", &self.primary_only),
            row("replicasOnly", &self.replicas_only),
            self.max_concurrent_bgsave_per_shard
        )
    }
}
