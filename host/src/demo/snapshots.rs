//! `kvpilot demo snapshots`: what snapshots cost the write path. A three-member group holds a
//! dataset large enough for the fork to matter; a writer measures write latency through the
//! primary endpoint while the group runs (1) without snapshots, (2) `primaryOnly` and
//! (3) `replicasOnly` with a stagger. A sampler watches every member's
//! `rdb_bgsave_in_progress` to count concurrent snapshots.

use super::writer::{Log, Writer};
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

/// Write latency through the endpoint during one phase: each write from its first try to its
/// acknowledgement, so a write that timed out (and was retried) counts at least the timeout.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Writes measured (acknowledged, plus one still waiting when the writer stopped).
    pub writes: usize,
    /// Tries that got no answer within the writer's timeout (2 s).
    pub timeouts: usize,
    /// Tries that were not acknowledged, timeouts included.
    pub errors: usize,
    /// The phase's writes split by whether some member was saving when they were
    /// acknowledged: on one machine a replica's save competes with the primary for CPU,
    /// memory bandwidth and disk, which separate nodes would not share.
    pub during_bgsave: Split,
    pub outside_bgsave: Split,
    /// The longest fork of a save in the phase (`latest_fork_usec`): it blocks the forking
    /// server, so on the primary it is a write stall.
    pub max_fork_ms: f64,
    /// Snapshots (BGSAVE) seen during the phase, by role.
    pub bgsaves_on_primary: u32,
    pub bgsaves_on_replicas: u32,
}

/// Latency of part of a phase's writes.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Split {
    pub p99_ms: f64,
    pub max_ms: f64,
    pub writes: usize,
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
    let result = super::interruptible(phases(
        engine,
        &spec_path,
        h.endpoint,
        &mut h.status,
        dataset_mib,
        durations,
        &progress,
    ))
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
        let during = |t: Instant| samples.saving_at(t);
        Latency {
            bgsaves_on_primary: on_primary,
            bgsaves_on_replicas: on_replicas,
            during_bgsave: split(&log, from, to, during),
            outside_bgsave: split(&log, from, to, |t| !during(t)),
            max_fork_ms: samples.max_fork_ms(from, to),
            ..latency(&log, from, to)
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

/// Each write's latency (from its first try) in milliseconds, sorted, for the writes that
/// ended in `[from, to)` where `keep` holds: the acknowledged ones, and the write still
/// waiting when the writer stopped, counted until then.
fn latencies(log: &Log, from: Instant, to: Instant, keep: impl Fn(Instant) -> bool) -> Vec<f64> {
    let within = |t: Instant| t >= from && t < to && keep(t);
    let mut ms: Vec<f64> = log
        .acks
        .iter()
        .filter(|a| within(a.at))
        .map(|a| a.since_first_try.as_secs_f64() * 1000.0)
        .collect();
    if let Some((first, stopped)) = log.unfinished
        && within(stopped)
    {
        ms.push((stopped - first).as_secs_f64() * 1000.0);
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    ms
}

/// The `q` quantile of sorted `ms` (nearest rank), 0 when empty.
fn quantile(ms: &[f64], q: f64) -> f64 {
    if ms.is_empty() {
        return 0.0;
    }
    let i = ((ms.len() as f64 - 1.0) * q).round() as usize;
    round3(ms[i.min(ms.len() - 1)])
}

/// Latency of the writes of `[from, to)` and the tries that failed in it.
fn latency(log: &Log, from: Instant, to: Instant) -> Latency {
    let ms = latencies(log, from, to, |_| true);
    let failures = || log.failures.iter().filter(|f| f.at >= from && f.at < to);
    Latency {
        p50_ms: quantile(&ms, 0.50),
        p99_ms: quantile(&ms, 0.99),
        max_ms: round3(ms.last().copied().unwrap_or(0.0)),
        writes: ms.len(),
        timeouts: failures().filter(|f| f.timed_out).count(),
        errors: failures().count(),
        during_bgsave: Split::default(),
        outside_bgsave: Split::default(),
        max_fork_ms: 0.0,
        bgsaves_on_primary: 0,
        bgsaves_on_replicas: 0,
    }
}

/// Latency of the writes of `[from, to)` acknowledged when `keep` holds.
fn split(log: &Log, from: Instant, to: Instant, keep: impl Fn(Instant) -> bool) -> Split {
    let ms = latencies(log, from, to, keep);
    Split {
        p99_ms: quantile(&ms, 0.99),
        max_ms: round3(ms.last().copied().unwrap_or(0.0)),
        writes: ms.len(),
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Watches `rdb_bgsave_in_progress` on every member. Dropped without [`Sampler::stop`] (a
/// demo that failed half way), it stops sampling.
struct Sampler {
    stop: Arc<AtomicBool>,
    running: Arc<AtomicU32>,
    task: Option<tokio::task::JoinHandle<Samples>>,
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[derive(Debug, Default)]
struct Samples {
    max_concurrent: u32,
    /// (when a BGSAVE was first seen running, whether on the primary).
    started: Vec<(Instant, bool)>,
    /// When some member was saving: (the start of the last round that saw none saving, the
    /// first round after that saw none).
    busy: Vec<(Instant, Instant)>,
    /// (when a save was first seen, its fork time in µs, whether on the primary).
    forks: Vec<(Instant, u64, bool)>,
}

impl Samples {
    /// Whether some member was saving at `t` (as far as 25 ms samples tell).
    fn saving_at(&self, t: Instant) -> bool {
        self.busy.iter().any(|(from, to)| t >= *from && t < *to)
    }

    /// The longest fork of a save first seen in `[from, to)`, in ms.
    fn max_fork_ms(&self, from: Instant, to: Instant) -> f64 {
        let us = self
            .forks
            .iter()
            .filter(|(at, _, _)| *at >= from && *at < to)
            .map(|(_, us, _)| *us)
            .max()
            .unwrap_or(0);
        round3(us as f64 / 1000.0)
    }

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
            task: Some(task),
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

    async fn stop(mut self) -> Samples {
        self.stop.store(true, Ordering::SeqCst);
        match self.task.take() {
            Some(task) => task.await.unwrap_or_default(),
            None => Samples::default(),
        }
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
    let mut busy_since: Option<Instant> = None;
    // A fork blocks the forking server, and a save is only seen once its fork returned: an
    // interval of saving starts at the last round that saw none, so the writes the primary's
    // fork held up count as during the save.
    let mut last_idle_round = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let round = Instant::now();
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
                .arg("stats")
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
                let on_primary = m.role == "primary";
                out.started.push((Instant::now(), on_primary));
                // The fork just returned: `latest_fork_usec` is this save's.
                if let Some(us) = info
                    .lines()
                    .find_map(|l| l.strip_prefix("latest_fork_usec:"))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                {
                    out.forks.push((Instant::now(), us, on_primary));
                }
            }
        }
        let now = Instant::now();
        match (busy_since, concurrent > 0) {
            (None, true) => busy_since = Some(last_idle_round),
            (Some(since), false) => {
                out.busy.push((since, now));
                busy_since = None;
            }
            _ => {}
        }
        if concurrent == 0 {
            last_idle_round = round;
        }
        out.max_concurrent = out.max_concurrent.max(concurrent);
        running.store(concurrent, Ordering::SeqCst);
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    if let Some(since) = busy_since {
        out.busy.push((since, Instant::now()));
    }
    out
}

impl SnapshotReport {
    pub fn table(&self) -> String {
        let row = |name: &str, l: &Latency| {
            format!(
                "{:<16} {:>9.3} {:>9.3} {:>9.3} {:>11.3} {:>11.3} {:>9.3} {:>9} {:>8} {:>8} {:>10} {:>10}\n",
                name,
                l.p50_ms,
                l.p99_ms,
                l.max_ms,
                l.during_bgsave.p99_ms,
                l.outside_bgsave.p99_ms,
                l.max_fork_ms,
                l.writes,
                l.timeouts,
                l.errors,
                l.bgsaves_on_primary,
                l.bgsaves_on_replicas
            )
        };
        format!(
            "engine: {}   dataset: {} MiB\n{:<16} {:>9} {:>9} {:>9} {:>11} {:>11} {:>9} {:>9} {:>8} {:>8} {:>10} {:>10}\n{}{}{}max concurrent BGSAVE per shard: {}\n",
            self.engine,
            self.dataset_mib,
            "phase",
            "p50 ms",
            "p99 ms",
            "max ms",
            "p99 saving",
            "p99 idle",
            "fork ms",
            "writes",
            "timeouts",
            "errors",
            "bgsave P",
            "bgsave R",
            row("baseline", &self.baseline),
            row("primaryOnly", &self.primary_only),
            row("replicasOnly", &self.replicas_only),
            self.max_concurrent_bgsave_per_shard
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::writer::{ACK_TIMEOUT, Ack, Failure};

    #[test]
    fn saves_are_placed_in_time_and_their_forks_measured() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let samples = Samples {
            max_concurrent: 1,
            started: vec![(t0 + ms(110), true), (t0 + ms(510), false)],
            busy: vec![(t0 + ms(100), t0 + ms(300)), (t0 + ms(500), t0 + ms(900))],
            forks: vec![(t0 + ms(110), 40_500, true), (t0 + ms(510), 9_000, false)],
        };
        assert!(!samples.saving_at(t0 + ms(99)));
        assert!(samples.saving_at(t0 + ms(100)));
        assert!(!samples.saving_at(t0 + ms(300)));
        assert!(samples.saving_at(t0 + ms(899)));
        assert_eq!(samples.max_fork_ms(t0, t0 + ms(1000)), 40.5);
        assert_eq!(samples.max_fork_ms(t0 + ms(200), t0 + ms(1000)), 9.0);
        assert_eq!(samples.max_fork_ms(t0 + ms(600), t0 + ms(1000)), 0.0);
        assert_eq!(samples.started_between(t0, t0 + ms(1000)), (1, 1));
    }

    #[test]
    fn a_write_that_timed_out_counts_at_least_its_timeout() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // 49 quick writes, then one that timed out once and was acknowledged on its retry.
        let mut log = Log::default();
        for i in 0..49 {
            log.acks.push(Ack {
                seq: i,
                at: t0 + ms(10 * i + 1),
                latency: ms(1),
                since_first_try: ms(1),
            });
        }
        let stalled_from = t0 + ms(1000);
        log.failures.push(Failure {
            at: stalled_from + ACK_TIMEOUT,
            waited: ACK_TIMEOUT,
            timed_out: true,
        });
        log.failures.push(Failure {
            at: stalled_from + ACK_TIMEOUT + ms(1),
            waited: ms(1),
            timed_out: false,
        });
        let retried = stalled_from + ACK_TIMEOUT + ms(3);
        log.acks.push(Ack {
            seq: 49,
            at: retried,
            latency: ms(2),
            since_first_try: retried - stalled_from,
        });
        let l = latency(&log, t0, t0 + ms(10_000));
        assert_eq!(l.writes, 50);
        assert_eq!((l.timeouts, l.errors), (1, 2));
        assert!(l.max_ms >= ACK_TIMEOUT.as_millis() as f64, "{l:?}");
        // One write in 50 is above the 98th percentile: it is the p99 here.
        assert!(l.p99_ms >= ACK_TIMEOUT.as_millis() as f64, "{l:?}");
        assert!(l.p50_ms <= 1.001, "{l:?}");

        // A write still waiting when the writer stopped counts until then.
        log.unfinished = Some((t0 + ms(5000), t0 + ms(9000)));
        let l = latency(&log, t0, t0 + ms(10_000));
        assert_eq!(l.writes, 51);
        assert_eq!(l.max_ms, 4000.0);
        // Split by a predicate: the stalled write alone, and the others.
        let stalled = split(&log, t0, t0 + ms(10_000), |t| t == retried);
        assert_eq!(stalled.writes, 1);
        assert!(stalled.p99_ms >= ACK_TIMEOUT.as_millis() as f64);
        let others = split(&log, t0, t0 + ms(10_000), |t| t != retried);
        assert_eq!(others.writes, 50);
        assert_eq!(others.max_ms, 4000.0, "the unfinished write");
        // Outside the phase, none of it counts.
        let l = latency(&log, t0 + ms(20_000), t0 + ms(30_000));
        assert_eq!((l.writes, l.timeouts, l.errors, l.max_ms), (0, 0, 0, 0.0));
    }
}
