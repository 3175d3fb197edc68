//! The operator's Prometheus metrics and health, and `/metrics` + `/healthz` on a tiny HTTP/1.1
//! responder (tokio only: hyper's server feature would need crates that are not in the lock).

use crate::decide::{Action, Plan};
use crate::policy::Hook;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Labels of a hook call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HookLabels {
    pub hook: String,
    pub plugin: String,
}

/// Labels of a cluster-level counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub namespace: String,
    pub cluster: String,
}

fn latency_histogram() -> Histogram {
    // 10 µs .. ~40 s.
    Histogram::new(exponential_buckets(0.000_01, 4.0, 12))
}

/// Every metric the operator exports.
pub struct Metrics {
    registry: Registry,
    pub reconcile_duration: Histogram,
    pub hook_latency: Family<HookLabels, Histogram>,
    pub plugin_failures: Family<HookLabels, Counter>,
    pub failovers: Family<ClusterLabels, Counter>,
    pub handovers: Family<ClusterLabels, Counter>,
    pub rollouts: Family<ClusterLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `kvpilot` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("kvpilot");
        let reconcile_duration = latency_histogram();
        let hook_latency =
            Family::<HookLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        let plugin_failures = Family::<HookLabels, Counter>::default();
        let failovers = Family::<ClusterLabels, Counter>::default();
        let handovers = Family::<ClusterLabels, Counter>::default();
        let rollouts = Family::<ClusterLabels, Counter>::default();
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one KvCluster reconcile",
            reconcile_duration.clone(),
        );
        registry.register(
            "hook_latency_seconds",
            "Latency of policy hook calls, failed ones included, by hook and plugin",
            hook_latency.clone(),
        );
        registry.register(
            "plugin_failures",
            "Policy plugin failures by hook and the plugin the KvCluster names: failed hook \
             calls (trap, timeout, invalid answer), fallbacks to the builtin, and plugins that \
             cannot be used (missing, refused, rejected config)",
            plugin_failures.clone(),
        );
        registry.register(
            "failovers",
            "Reactive promotions after a lost or empty primary",
            failovers.clone(),
        );
        registry.register(
            "handovers",
            "Graceful handovers of the primary (planned, before restarting it in a rollout)",
            handovers.clone(),
        );
        registry.register(
            "rollouts",
            "Rollouts completed: every member of a KvCluster runs a new StatefulSet revision",
            rollouts.clone(),
        );
        Metrics {
            registry,
            reconcile_duration,
            hook_latency,
            plugin_failures,
            failovers,
            handovers,
            rollouts,
        }
    }

    /// Records one reconcile's action; `acted` is true when it succeeded. (Hook calls are
    /// recorded as they happen, by `policies::ClusterPolicies`.)
    pub fn observe_plan(&self, namespace: &str, cluster: &str, plan: &Plan, acted: bool) {
        let counter = match plan.action {
            Some(Action::Failover { .. }) if acted => &self.failovers,
            Some(Action::Handover { .. }) if acted => &self.handovers,
            _ => return,
        };
        counter
            .get_or_create(&cluster_labels(namespace, cluster))
            .inc();
    }

    /// Counts a completed rollout of a cluster.
    pub fn rollout_completed(&self, namespace: &str, cluster: &str) {
        self.rollouts
            .get_or_create(&cluster_labels(namespace, cluster))
            .inc();
    }

    /// Records the latency of one hook call answered (or failed) by `plugin`.
    pub fn hook_call(&self, hook: Hook, plugin: &str, latency: Duration) {
        self.hook_latency
            .get_or_create(&HookLabels {
                hook: hook.as_str().to_string(),
                plugin: plugin.to_string(),
            })
            .observe(latency.as_secs_f64());
    }

    /// Counts a failure of `plugin` answering `hook`.
    pub fn plugin_failure(&self, hook: &str, plugin: &str) {
        self.plugin_failures
            .get_or_create(&HookLabels {
                hook: hook.to_string(),
                plugin: plugin.to_string(),
            })
            .inc();
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }
}

fn cluster_labels(namespace: &str, cluster: &str) -> ClusterLabels {
    ClusterLabels {
        namespace: namespace.to_string(),
        cluster: cluster.to_string(),
    }
}

/// Follows one cluster's member revisions to count each rollout once, when it completes:
/// a member was seen on another revision than the desired one, and now every member runs the
/// desired one. A rollout superseded by a newer spec counts once, when the newer one is done.
#[derive(Debug, Default)]
pub struct RolloutTracker {
    rolling_to: Option<String>,
}

impl RolloutTracker {
    /// Looks at one reconcile's member revisions (`None`: not running) against `desired`
    /// (empty: not known yet); true when a rollout has just completed.
    pub fn observe<'a>(
        &mut self,
        revisions: impl IntoIterator<Item = Option<&'a str>>,
        desired: &str,
    ) -> bool {
        if desired.is_empty() {
            return false;
        }
        let revisions: Vec<Option<&str>> = revisions.into_iter().collect();
        if revisions.iter().flatten().any(|r| *r != desired) {
            self.rolling_to = Some(desired.to_string());
            return false;
        }
        if revisions.is_empty() || revisions.iter().any(Option::is_none) {
            // A member is down: not done yet (nor rolling).
            return false;
        }
        self.rolling_to.take().is_some_and(|r| r == desired)
    }
}

/// How often the controller loop beats while it runs.
pub const BEAT_INTERVAL: Duration = Duration::from_secs(5);
/// `/healthz` fails when the controller loop has not beaten for this long.
pub const BEAT_TIMEOUT: Duration = Duration::from_secs(30);
/// `/healthz` fails when one reconcile has been running for this long: the longest legitimate
/// one (a handover waits the handover timeout, a plugin download 30 s) is far shorter, so it
/// is wedged (an API or datastore call that never returns).
pub const STUCK_AFTER: Duration = Duration::from_secs(600);

/// Whether the controller is alive, for `/healthz`: its loop beats while it runs (and stops
/// beating when it returns or its task is not scheduled any more), and every reconcile is
/// tracked from start to end, so a wedged reconcile is seen too.
#[derive(Debug)]
pub struct Health {
    epoch: Instant,
    /// Milliseconds after `epoch` of the last beat.
    last_beat_ms: AtomicU64,
    stopped: AtomicBool,
    /// Reconciles in flight, by cluster, with their start.
    in_flight: Mutex<HashMap<String, Instant>>,
    beat_timeout: Duration,
    stuck_after: Duration,
}

impl Default for Health {
    fn default() -> Self {
        Health::new(BEAT_TIMEOUT, STUCK_AFTER)
    }
}

impl Health {
    /// A health that counts as beating from now.
    pub fn new(beat_timeout: Duration, stuck_after: Duration) -> Health {
        Health {
            epoch: Instant::now(),
            last_beat_ms: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            in_flight: Mutex::new(HashMap::new()),
            beat_timeout,
            stuck_after,
        }
    }

    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// The controller loop (or, on a standby replica, the wait for the lease) is running.
    pub fn beat(&self) {
        self.beat_at(Instant::now());
    }

    fn beat_at(&self, at: Instant) {
        self.last_beat_ms
            .fetch_max(self.millis(at), Ordering::Relaxed);
    }

    /// The controller loop has returned: nothing reconciles any more.
    pub fn stopped(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        // Plain bookkeeping: a poisoned lock is still usable.
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Tracks the reconcile of `cluster` until the guard is dropped (however it ends).
    pub fn reconciling(&self, cluster: String) -> Reconciling<'_> {
        self.reconciling_at(cluster, Instant::now())
    }

    fn reconciling_at(&self, cluster: String, at: Instant) -> Reconciling<'_> {
        self.in_flight().insert(cluster.clone(), at);
        Reconciling {
            health: self,
            cluster,
        }
    }

    /// `Ok` while healthy at `now`, else why not.
    pub fn check(&self, now: Instant) -> Result<(), String> {
        if self.stopped.load(Ordering::Relaxed) {
            return Err("the controller loop has stopped".into());
        }
        let silent = Duration::from_millis(
            self.millis(now)
                .saturating_sub(self.last_beat_ms.load(Ordering::Relaxed)),
        );
        if silent > self.beat_timeout {
            return Err(format!(
                "the controller loop has not run for {} s",
                silent.as_secs()
            ));
        }
        let oldest = self
            .in_flight()
            .iter()
            .map(|(c, at)| (c.clone(), now.saturating_duration_since(*at)))
            .max_by_key(|(_, d)| *d);
        match oldest {
            Some((cluster, running)) if running > self.stuck_after => Err(format!(
                "the reconcile of {cluster} has been running for {} s",
                running.as_secs()
            )),
            _ => Ok(()),
        }
    }
}

/// A reconcile in flight ([`Health::reconciling`]).
pub struct Reconciling<'a> {
    health: &'a Health,
    cluster: String,
}

impl Drop for Reconciling<'_> {
    fn drop(&mut self) {
        self.health.in_flight().remove(&self.cluster);
    }
}

/// How long a client may take to send its request line.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `GET /metrics` and `GET /healthz` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, health: Arc<Health>) {
    loop {
        let (mut stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "metrics listener");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        let health = health.clone();
        tokio::spawn(async move {
            if let Err(e) = respond(&mut stream, &metrics, &health).await {
                tracing::debug!(%peer, error = %e, "metrics request");
            }
        });
    }
}

/// Binds `addr` and serves in a background task.
pub async fn spawn(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((local, tokio::spawn(serve(listener, metrics, health))))
}

async fn respond(
    stream: &mut tokio::net::TcpStream,
    metrics: &Metrics,
    health: &Health,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    // Read until the end of the headers (or a full buffer): only the request line matters.
    tokio::time::timeout(READ_TIMEOUT, async {
        while len < buf.len() {
            let n = stream.read(&mut buf[len..]).await?;
            if n == 0 {
                break;
            }
            len += n;
            if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        Ok::<(), std::io::Error>(())
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request not received"))??;
    let request = String::from_utf8_lossy(&buf[..len]);
    let mut words = request.split_whitespace();
    let (status, content_type, body) = match (words.next(), words.next()) {
        (Some("GET"), Some("/metrics")) => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        (Some("GET"), Some("/healthz")) => match health.check(Instant::now()) {
            Ok(()) => ("200 OK", "text/plain", "ok\n".to_string()),
            Err(why) => ("503 Service Unavailable", "text/plain", format!("{why}\n")),
        },
        (Some("GET"), _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_string(),
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
            .await
            .unwrap()
            .unwrap();
        out
    }

    #[tokio::test]
    async fn serves_metrics_and_health() {
        let metrics = Arc::new(Metrics::new());
        metrics.reconcile_duration.observe(0.01);
        metrics.plugin_failure("replica-selection", "broken");
        let health = Arc::new(Health::default());
        let (addr, task) = spawn("127.0.0.1:0".parse().unwrap(), metrics, health.clone())
            .await
            .unwrap();
        let ok = get(addr, "/healthz").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK"), "{ok}");
        assert!(ok.ends_with("ok\n"));
        health.stopped();
        let dead = get(addr, "/healthz").await;
        assert!(dead.starts_with("HTTP/1.1 503"), "{dead}");
        assert!(
            dead.ends_with("the controller loop has stopped\n"),
            "{dead}"
        );
        let body = get(addr, "/metrics").await;
        assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
        assert!(
            body.contains("kvpilot_reconcile_duration_seconds_count 1"),
            "{body}"
        );
        assert!(
            body.contains(
                "kvpilot_plugin_failures_total{hook=\"replica-selection\",plugin=\"broken\"} 1"
            ),
            "{body}"
        );
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
        task.abort();
    }

    #[test]
    fn health_fails_when_the_loop_stops_beating_or_a_reconcile_is_wedged() {
        let health = Health::new(Duration::from_secs(30), Duration::from_secs(600));
        let t0 = health.epoch;
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(health.check(at(10)), Ok(()));
        // No beat for longer than the timeout.
        let silent = health.check(at(31)).unwrap_err();
        assert!(silent.contains("has not run for 31 s"), "{silent}");
        health.beat_at(at(31));
        assert_eq!(health.check(at(40)), Ok(()));
        // A reconcile that does not end.
        let wedged = health.reconciling_at("shop/cache".into(), at(40));
        health.beat_at(at(700));
        assert_eq!(health.check(at(640)), Ok(()));
        let stuck = health.check(at(700)).unwrap_err();
        assert!(stuck.contains("shop/cache"), "{stuck}");
        drop(wedged);
        assert_eq!(health.check(at(700)), Ok(()));
        // An older beat does not move the last one back.
        health.beat_at(at(5));
        assert_eq!(health.check(at(720)), Ok(()));
        health.stopped();
        assert!(health.check(at(720)).is_err());
    }

    #[test]
    fn a_rollout_counts_once_when_every_member_runs_the_new_revision() {
        let mut t = RolloutTracker::default();
        // Steady on r1: nothing to count.
        assert!(!t.observe([Some("r1"), Some("r1")], "r1"));
        // The StatefulSet status is not known yet: nothing.
        assert!(!t.observe([Some("r1"), Some("r1")], ""));
        // r2 desired: rolling, one member restarting (down), then done.
        assert!(!t.observe([Some("r1"), Some("r1")], "r2"));
        assert!(!t.observe([Some("r2"), None], "r2"));
        assert!(t.observe([Some("r2"), Some("r2")], "r2"));
        assert!(!t.observe([Some("r2"), Some("r2")], "r2"), "counted once");
        // Superseded mid-way by r4: one rollout, when r4 is everywhere.
        assert!(!t.observe([Some("r3"), Some("r2")], "r3"));
        assert!(!t.observe([Some("r3"), Some("r2")], "r4"));
        assert!(t.observe([Some("r4"), Some("r4")], "r4"));
    }

    #[test]
    fn actions_count_as_failovers_or_handovers_only_when_they_succeeded() {
        let metrics = Metrics::new();
        let mut plan = Plan::new(Duration::from_secs(1));
        plan.action = Some(Action::Handover {
            from: "a".into(),
            to: "b".into(),
        });
        metrics.observe_plan("shop", "cache", &plan, true);
        metrics.observe_plan("shop", "cache", &plan, false);
        metrics.rollout_completed("shop", "cache");
        metrics.hook_call(
            Hook::RolloutOrder,
            "builtin:replicas-first",
            Duration::from_millis(2),
        );
        let text = metrics.encode();
        assert!(
            text.contains("kvpilot_handovers_total{namespace=\"shop\",cluster=\"cache\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("kvpilot_rollouts_total{namespace=\"shop\",cluster=\"cache\"} 1"),
            "{text}"
        );
        assert!(!text.contains("kvpilot_failovers_total{"), "{text}");
        assert!(
            text.contains(
                "kvpilot_hook_latency_seconds_count{hook=\"rollout-order\",plugin=\"builtin:replicas-first\"} 1"
            ),
            "{text}"
        );
    }
}
