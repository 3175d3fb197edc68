//! `kvpilot demo`: a three-member group on loopback, a writer through the primary endpoint,
//! and four disruptions in one run — (a) a proactive rolling restart after a config change,
//! (b) the reactive baseline: the primary crashes and restarts with no handover, (c) the
//! primary is SIGKILLed and stays down, (d) the primary hangs (SIGSTOP) past the failover while
//! clients hold persistent connections to it, then resumes. Every acknowledged key is checked
//! at the end.

pub mod cluster;
pub mod cluster_cli;
pub mod cluster_client;
pub mod cluster_lab;
pub mod cluster_writer;
pub mod snapshots;
pub mod verify;
pub mod writer;

use crate::api::FailureDetectionSpec;
use crate::decide::Settings;
use crate::platform::local::LocalCluster;
use crate::platform::local::server::Server;
use crate::platform::local::server::ServerGuard;
use crate::status::ClusterStatus;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, watch};
use writer::{Writer, max_gap};

/// Longest the demo waits for any one phase to settle.
const PHASE_LIMIT: Duration = Duration::from_secs(60);
/// Writes before and after each disruption, so gaps are measured on a steady stream.
const STEADY: Duration = Duration::from_millis(1500);

/// The demo's error: which phase failed and why.
#[derive(Debug, thiserror::Error)]
#[error("demo: {phase}: {message}")]
pub struct DemoError {
    pub phase: &'static str,
    pub message: String,
}

pub(crate) fn fail(phase: &'static str, message: impl ToString) -> DemoError {
    DemoError {
        phase,
        message: message.to_string(),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    pub acked_writes: usize,
    pub lost_acked_writes: usize,
    pub max_write_gap_ms: u64,
    pub rollout_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailoverReport {
    pub detect_and_promote_ms: u64,
    pub lost_acked_writes: usize,
}

/// Phase (d): the primary hangs past the failover, then resumes.
#[derive(Debug, Clone, Serialize)]
pub struct HungReport {
    /// From SIGSTOP until a survivor answers as primary.
    pub detect_and_promote_ms: u64,
    /// Writes acknowledged during the phase on the persistent connections (whose writes
    /// queue on the hung primary's sockets) and by the demo's writer.
    pub acked_writes: usize,
    pub lost_acked_writes: usize,
    /// The failure detection in force (`spec.failureDetection` or the demo's defaults).
    pub probe_interval_ms: u64,
    pub probe_timeout_ms: u64,
    pub failure_threshold: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub engine: String,
    pub proactive: PhaseReport,
    pub reactive: PhaseReport,
    pub failover: FailoverReport,
    pub hung: HungReport,
}

/// Clients on persistent connections in phase (d).
const PATIENT_WRITERS: usize = 2;
/// How long they wait on their connection for an acknowledgement: longer than the primary
/// stays stopped, so their writes stay queued on its sockets until it resumes or dies.
const PATIENCE: Duration = Duration::from_secs(60);

/// The server binary for `engine`, or what to install.
pub fn find_engine(engine: kvpilot_sdk::Engine) -> Result<PathBuf, String> {
    let (binary, install) = match engine {
        kvpilot_sdk::Engine::Valkey => (
            "valkey-server",
            "apt-get install -t bookworm-backports valkey-server (Debian 12; add the bookworm-backports suite first), or run with --engine redis",
        ),
        kvpilot_sdk::Engine::Redis => ("redis-server", "apt-get install redis-server"),
        kvpilot_sdk::Engine::Dragonfly => {
            return Err("the demo runs Valkey or Redis; Dragonfly support is experimental".into());
        }
    };
    which(binary)
        .ok_or_else(|| format!("{binary} was not found on PATH: install it with `{install}`"))
}

fn which(binary: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(binary))
            .find(|p| p.is_file())
    })
}

/// The manifest the demo runs; `hz` is what the proactive phase changes.
fn manifest(engine: kvpilot_sdk::Engine, hz: u32, detection: &FailureDetectionSpec) -> String {
    let kind = match engine {
        kvpilot_sdk::Engine::Redis => "redis",
        _ => "valkey",
    };
    let mut fields = Vec::new();
    if let Some(v) = detection.probe_interval_ms {
        fields.push(format!("probeIntervalMs: {v}"));
    }
    if let Some(v) = detection.probe_timeout_ms {
        fields.push(format!("probeTimeoutMs: {v}"));
    }
    if let Some(v) = detection.failure_threshold {
        fields.push(format!("failureThreshold: {v}"));
    }
    let detection = if fields.is_empty() {
        String::new()
    } else {
        format!("  failureDetection: {{{}}}\n", fields.join(", "))
    };
    format!(
        "apiVersion: kvpilot.dev/v1alpha1\nkind: KvCluster\nmetadata:\n  name: demo\nspec:\n  engine:\n    kind: {kind}\n  replicas: 2\n  config:\n    hz: \"{hz}\"\n  rollout:\n    handoverTimeoutSeconds: 5\n{detection}"
    )
}

/// The demo's own timings: probes every 100 ms while something moves, every 500 ms when
/// settled (`spec.failureDetection` overrides the first, and the probe timeout and threshold).
fn demo_settings() -> Settings {
    Settings {
        probe_interval: Duration::from_millis(100),
        steady_interval: Duration::from_millis(500),
        ..Settings::default()
    }
}

/// Runs a scenario until it ends or Ctrl-C/SIGTERM, which becomes the scenario's error so that
/// the caller still stops every server (without this, SIGINT ends the process on the spot and
/// leaves the members running).
pub(crate) async fn interruptible<T>(
    scenario: impl std::future::Future<Output = Result<T, DemoError>>,
) -> Result<T, DemoError> {
    tokio::select! {
        result = scenario => result,
        () = crate::shutdown::signal() => Err(fail("interrupted", "stopping every server the demo started")),
    }
}

/// A local group reconciled in the background while a scenario runs against it.
pub(crate) struct Harness {
    pub spec_path: std::path::PathBuf,
    pub endpoint: SocketAddr,
    pub status: watch::Receiver<ClusterStatus>,
    pub cluster: Arc<Mutex<LocalCluster>>,
    stop_tx: watch::Sender<bool>,
    loop_task: tokio::task::JoinHandle<()>,
    /// Kills (by PID and start time) every member under the state directory if the harness
    /// is dropped without [`Harness::finish`] (a panic); after a clean finish it finds none.
    _guard: ServerGuard,
}

impl Harness {
    /// Writes `manifest` to `work/file`, opens the group and starts reconciling it.
    pub(crate) async fn start(
        engine: kvpilot_sdk::Engine,
        work: &Path,
        file: &str,
        manifest: String,
    ) -> Result<Harness, DemoError> {
        find_engine(engine).map_err(|e| fail("setup", e))?;
        std::fs::create_dir_all(work)
            .map_err(|e| fail("setup", format!("{}: {e}", work.display())))?;
        let spec_path = work.join(file);
        std::fs::write(&spec_path, manifest).map_err(|e| fail("setup", e))?;
        let settings = demo_settings();
        let guard = ServerGuard::new();
        guard.track_dir(work.join("state"));
        let cluster = LocalCluster::open(&spec_path, &work.join("state"), None, None, settings)
            .await
            .map_err(|e| fail("setup", e))?;
        let endpoint = cluster.endpoint();
        let status = cluster.subscribe();
        let cluster = Arc::new(Mutex::new(cluster));
        let (stop_tx, stop_rx) = watch::channel(false);
        let loop_task = tokio::spawn(reconcile_loop(cluster.clone(), stop_rx));
        Ok(Harness {
            spec_path,
            endpoint,
            status,
            cluster,
            stop_tx,
            loop_task,
            _guard: guard,
        })
    }

    /// Stops reconciling and every member; returns the scenario's result, or the teardown's
    /// error if the scenario succeeded but the group did not stop cleanly.
    pub(crate) async fn finish<T>(self, result: Result<T, DemoError>) -> Result<T, DemoError> {
        let _ = self.stop_tx.send(true);
        let _ = self.loop_task.await;
        let cluster = Arc::try_unwrap(self.cluster)
            .map_err(|_| fail("teardown", "the reconcile loop still holds the cluster"))?
            .into_inner();
        let down = cluster.shutdown().await;
        let value = result?;
        down.map_err(|e| fail("teardown", e))?;
        Ok(value)
    }
}

/// Runs the demo in `work`.
/// Runs the demo in `work`, with `detection` as the manifest's `spec.failureDetection`.
pub async fn run(
    engine: kvpilot_sdk::Engine,
    work: &Path,
    detection: &FailureDetectionSpec,
    progress: impl Fn(&str),
) -> Result<Report, DemoError> {
    detection
        .validate()
        .map_err(|(field, message)| fail("setup", format!("spec.{field}: {message}")))?;
    let manifest_text = manifest(engine, 10, detection);
    let mut h = Harness::start(engine, work, "demo.yaml", manifest_text).await?;
    let spec_path = h.spec_path.clone();
    let result = interruptible(scenario(
        engine,
        detection,
        &spec_path,
        h.endpoint,
        &h.cluster,
        &mut h.status,
        &progress,
    ))
    .await;
    h.finish(result).await
}

/// Reconciles until told to stop; each step holds the lock only while it runs.
async fn reconcile_loop(cluster: Arc<Mutex<LocalCluster>>, mut stop: watch::Receiver<bool>) {
    loop {
        let sleep = {
            let mut c = cluster.lock().await;
            c.step()
                .await
                .plan
                .requeue_after
                .min(Duration::from_millis(500))
        };
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

async fn scenario(
    engine: kvpilot_sdk::Engine,
    detection: &FailureDetectionSpec,
    spec_path: &Path,
    endpoint: SocketAddr,
    cluster: &Arc<Mutex<LocalCluster>>,
    status: &mut watch::Receiver<ClusterStatus>,
    progress: &impl Fn(&str),
) -> Result<Report, DemoError> {
    progress("starting a three-member group");
    let boot = settled(status, None, "bootstrap").await?;
    let writer = Writer::start(endpoint, "demo", Duration::from_secs(600));
    tokio::time::sleep(STEADY).await;
    if writer.acked().await == 0 {
        return Err(fail(
            "bootstrap",
            "the writer got no acknowledgement through the endpoint",
        ));
    }

    // (a) proactive: a config change rolls the group, handing the primary over gracefully.
    progress("(a) proactive rolling restart after a config change");
    let a_start = Instant::now();
    std::fs::write(spec_path, manifest(engine, 11, detection)).map_err(|e| fail("proactive", e))?;
    let rolled = settled(status, Some(&boot.desired_revision), "proactive").await?;
    let a_done = Instant::now();
    tokio::time::sleep(STEADY).await;
    let a_end = Instant::now();

    // (b) reactive baseline: the primary crashes and comes straight back, empty, with no
    // handover; detection and failover are left to the reconciler.
    progress("(b) reactive baseline: the primary crashes and restarts without a handover");
    let primary = rolled
        .primary
        .clone()
        .ok_or_else(|| fail("reactive", "no primary"))?;
    let b_start = Instant::now();
    cluster
        .lock()
        .await
        .crash_and_restart(&primary)
        .await
        .map_err(|e| fail("reactive", e))?;
    let healed = settled_with_new_primary(status, &primary, "reactive").await?;
    let b_done = Instant::now();
    tokio::time::sleep(STEADY).await;
    let b_end = Instant::now();

    // (c) failover: the primary is SIGKILLed and stays down until the reconciler brings it
    // back as a replica.
    progress("(c) the primary is SIGKILLed and not restarted");
    let victim = healed
        .primary
        .clone()
        .ok_or_else(|| fail("failover", "no primary"))?;
    let survivors: Vec<SocketAddr> = healed
        .members
        .iter()
        .filter(|m| m.name != victim)
        .filter_map(|m| m.address.parse().ok())
        .collect();
    let c_start = Instant::now();
    cluster
        .lock()
        .await
        .kill(&victim)
        .map_err(|e| fail("failover", e))?;
    let promoted_after = wait_for_promotion(&survivors, c_start).await?;
    let failed_over = settled_with_new_primary(status, &victim, "failover").await?;
    tokio::time::sleep(STEADY).await;
    let c_end = Instant::now();

    // (d) hung: the primary stops (SIGSTOP) while clients hold persistent connections to it
    // through the endpoint, which keeps them as a Kubernetes Service would; it resumes once
    // a replica was promoted. Their queued writes must not be acknowledged and then lost.
    progress("(d) the primary hangs (SIGSTOP) past the failover, then resumes");
    let hung = failed_over
        .primary
        .clone()
        .ok_or_else(|| fail("hung", "no primary"))?;
    let survivors: Vec<SocketAddr> = failed_over
        .members
        .iter()
        .filter(|m| m.name != hung)
        .filter_map(|m| m.address.parse().ok())
        .collect();
    let patient: Vec<Writer> = (0..PATIENT_WRITERS)
        .map(|i| Writer::start_with(endpoint, &format!("hung{i}"), PHASE_LIMIT * 2, PATIENCE))
        .collect();
    let waited = Instant::now();
    for w in &patient {
        while w.acked().await == 0 {
            if waited.elapsed() > PHASE_LIMIT {
                return Err(fail(
                    "hung",
                    "a persistent connection got no acknowledgement",
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let member_dir = cluster
        .lock()
        .await
        .platform()
        .dir()
        .join("members")
        .join(&hung);
    let frozen = Server::adopt(&member_dir).map_err(|e| fail("hung", e))?;
    let d_start = Instant::now();
    frozen.pause().map_err(|e| fail("hung", e))?;
    let hung_promoted_after = wait_for_promotion(&survivors, d_start).await?;
    // Gone if the operator stopped it before the promotion; else it answers what is queued.
    let _ = frozen.resume();
    settled_with_new_primary(status, &hung, "hung").await?;
    tokio::time::sleep(STEADY).await;
    let d_end = Instant::now();
    let mut patient_logs = Vec::new();
    for w in patient {
        let prefix = w.prefix().to_string();
        patient_logs.push((prefix, w.stop().await));
    }

    let log = writer.stop().await;
    let final_status = status.borrow().clone();
    let final_primary = final_status
        .primary
        .as_ref()
        .and_then(|p| final_status.members.iter().find(|m| &m.name == p))
        .and_then(|m| m.address.parse::<SocketAddr>().ok())
        .ok_or_else(|| fail("verify", "no primary at the end"))?;
    progress("checking every acknowledged write on the final primary");
    let seqs: Vec<u64> = log.acks.iter().map(|a| a.seq).collect();
    let lost = verify::missing(final_primary, "demo", &seqs)
        .await
        .map_err(|e| fail("verify", e))?;
    let lost_between = |from: Instant, to: Instant| {
        log.acks
            .iter()
            .filter(|a| a.at >= from && a.at < to && lost.binary_search(&a.seq).is_ok())
            .count()
    };
    let acked_between = |from: Instant, to: Instant| {
        log.acks
            .iter()
            .filter(|a| a.at >= from && a.at < to)
            .count()
    };
    let phase = |from: Instant, done: Instant, to: Instant| PhaseReport {
        acked_writes: acked_between(from, to),
        lost_acked_writes: lost_between(from, to),
        max_write_gap_ms: ms(max_gap(&log.acks, from, to)),
        rollout_seconds: (done - from).as_secs_f64(),
    };
    let first_ack = log.acks.first().map(|a| a.at).unwrap_or(a_start);
    let mut hung_acked = acked_between(d_start, d_end);
    let mut hung_lost = lost_between(d_start, d_end);
    for (prefix, plog) in &patient_logs {
        let seqs: Vec<u64> = plog.acks.iter().map(|a| a.seq).collect();
        hung_acked += seqs.len();
        hung_lost += verify::missing(final_primary, prefix, &seqs)
            .await
            .map_err(|e| fail("verify", e))?
            .len();
    }
    let settings = detection.apply(&demo_settings());
    Ok(Report {
        engine: engine_name(engine).to_string(),
        // Writes before the change count with the proactive phase: all of them must survive.
        proactive: PhaseReport {
            acked_writes: acked_between(first_ack, a_end),
            lost_acked_writes: lost_between(first_ack, a_end),
            ..phase(a_start, a_done, a_end)
        },
        reactive: phase(b_start, b_done, b_end),
        failover: FailoverReport {
            detect_and_promote_ms: ms(promoted_after),
            lost_acked_writes: lost_between(c_start, c_end),
        },
        hung: HungReport {
            detect_and_promote_ms: ms(hung_promoted_after),
            acked_writes: hung_acked,
            lost_acked_writes: hung_lost,
            probe_interval_ms: ms(settings.probe_interval),
            probe_timeout_ms: ms(settings.probe_timeout),
            failure_threshold: settings.failure_threshold,
        },
    })
}

pub(crate) fn engine_name(engine: kvpilot_sdk::Engine) -> &'static str {
    match engine {
        kvpilot_sdk::Engine::Valkey => "valkey",
        kvpilot_sdk::Engine::Redis => "redis",
        kvpilot_sdk::Engine::Dragonfly => "dragonfly",
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Waits until the group is Ready on a revision other than `old_revision` (when given).
pub(crate) async fn settled(
    status: &mut watch::Receiver<ClusterStatus>,
    old_revision: Option<&str>,
    phase: &'static str,
) -> Result<ClusterStatus, DemoError> {
    wait_status(status, phase, |s| {
        ready(s)
            && old_revision.is_none_or(|old| s.desired_revision != old)
            && s.members
                .iter()
                .all(|m| m.revision.as_deref() == Some(s.desired_revision.as_str()))
    })
    .await
}

/// Waits until the group is Ready with a primary other than `old`.
async fn settled_with_new_primary(
    status: &mut watch::Receiver<ClusterStatus>,
    old: &str,
    phase: &'static str,
) -> Result<ClusterStatus, DemoError> {
    wait_status(status, phase, |s| {
        ready(s) && s.primary.as_deref().is_some_and(|p| p != old)
    })
    .await
}

pub(crate) fn ready(s: &ClusterStatus) -> bool {
    s.condition("Ready").is_some_and(|c| c.status)
}

pub(crate) async fn wait_status(
    status: &mut watch::Receiver<ClusterStatus>,
    phase: &'static str,
    done: impl Fn(&ClusterStatus) -> bool,
) -> Result<ClusterStatus, DemoError> {
    let waited = tokio::time::timeout(PHASE_LIMIT, async {
        status.wait_for(|s| done(s)).await.map(|s| s.clone())
    })
    .await;
    match waited {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(_)) => Err(fail(phase, "the reconciler stopped")),
        Err(_) => {
            let s = status.borrow().clone();
            let why = s
                .conditions
                .iter()
                .filter(|c| c.status && c.kind != "Ready")
                .map(|c| format!("{}: {}", c.kind, c.message))
                .collect::<Vec<_>>()
                .join("; ");
            Err(fail(
                phase,
                format!("not settled after {PHASE_LIMIT:?} ({why})"),
            ))
        }
    }
}

/// Polls the surviving members until one answers as primary; returns the time since `since`.
async fn wait_for_promotion(
    survivors: &[SocketAddr],
    since: Instant,
) -> Result<Duration, DemoError> {
    let clients: Vec<redis::Client> = survivors
        .iter()
        .filter_map(|a| redis::Client::open(format!("redis://{a}/")).ok())
        .collect();
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(200)))
        .set_response_timeout(Some(Duration::from_millis(200)));
    let mut conns = Vec::new();
    for c in &clients {
        if let Ok(conn) = c
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            conns.push(conn);
        }
    }
    while since.elapsed() < PHASE_LIMIT {
        for conn in conns.iter_mut() {
            let info: Result<String, _> = redis::cmd("INFO")
                .arg("replication")
                .query_async(conn)
                .await;
            if info.is_ok_and(|t| t.contains("role:master")) {
                return Ok(since.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Err(fail(
        "failover",
        format!("no survivor was promoted within {PHASE_LIMIT:?}"),
    ))
}

impl Report {
    /// The short table the demo prints.
    pub fn table(&self) -> String {
        format!(
            "engine: {}\n\
             {:<28} {:>12} {:>10} {:>14} {:>10}\n\
             {:<28} {:>12} {:>10} {:>14} {:>10.2}\n\
             {:<28} {:>12} {:>10} {:>14} {:>10.2}\n\
             {:<28} {:>12} {:>10} {:>14} {:>10}\n\
             {:<28} {:>12} {:>10} {:>14} {:>10}\n\
             failure detection: probe every {} ms, timeout {} ms, threshold {}\n",
            self.engine,
            "phase",
            "acked",
            "lost",
            "max gap (ms)",
            "took (s)",
            "(a) proactive rollout",
            self.proactive.acked_writes,
            self.proactive.lost_acked_writes,
            self.proactive.max_write_gap_ms,
            self.proactive.rollout_seconds,
            "(b) reactive restart",
            self.reactive.acked_writes,
            self.reactive.lost_acked_writes,
            self.reactive.max_write_gap_ms,
            self.reactive.rollout_seconds,
            "(c) failover after SIGKILL",
            "-",
            self.failover.lost_acked_writes,
            format!("promote {}", self.failover.detect_and_promote_ms),
            "-",
            "(d) failover after SIGSTOP",
            self.hung.acked_writes,
            self.hung.lost_acked_writes,
            format!("promote {}", self.hung.detect_and_promote_ms),
            "-",
            self.hung.probe_interval_ms,
            self.hung.probe_timeout_ms,
            self.hung.failure_threshold,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{KvClusterManifest, validate_spec};

    #[test]
    fn the_manifest_carries_the_failure_detection_asked_for() {
        let fast = FailureDetectionSpec {
            probe_interval_ms: Some(50),
            probe_timeout_ms: Some(100),
            failure_threshold: Some(2),
        };
        for detection in [FailureDetectionSpec::default(), fast] {
            let text = manifest(kvpilot_sdk::Engine::Valkey, 10, &detection);
            let m: KvClusterManifest = serde_norway::from_str(&text).expect(&text);
            assert_eq!(validate_spec(&m.spec), Ok(()));
            let want = (detection != FailureDetectionSpec::default()).then_some(detection);
            assert_eq!(m.spec.failure_detection, want, "{text}");
        }
    }

    #[test]
    fn the_table_has_a_row_per_phase_and_the_detection_settings() {
        let phase = PhaseReport {
            acked_writes: 1,
            lost_acked_writes: 0,
            max_write_gap_ms: 2,
            rollout_seconds: 0.5,
        };
        let report = Report {
            engine: "valkey".into(),
            proactive: phase.clone(),
            reactive: phase,
            failover: FailoverReport {
                detect_and_promote_ms: 7,
                lost_acked_writes: 0,
            },
            hung: HungReport {
                detect_and_promote_ms: 3812,
                acked_writes: 99,
                lost_acked_writes: 0,
                probe_interval_ms: 100,
                probe_timeout_ms: 1000,
                failure_threshold: 3,
            },
        };
        let table = report.table();
        assert!(table.contains("(d) failover after SIGSTOP"), "{table}");
        assert!(table.contains("promote 3812"), "{table}");
        assert!(table.contains("timeout 1000 ms, threshold 3"), "{table}");
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["hung"]["detect_and_promote_ms"], 3812);
        assert_eq!(json["failover"]["detect_and_promote_ms"], 7);
    }
}
