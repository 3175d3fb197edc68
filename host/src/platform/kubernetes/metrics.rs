//! The operator's Prometheus metrics, and `/metrics` + `/healthz` on a tiny HTTP/1.1 responder
//! (tokio only: hyper's server feature would need crates that are not in the lock).

use crate::decide::{Action, Blocker, Plan};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
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
        let rollouts = Family::<ClusterLabels, Counter>::default();
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one KvCluster reconcile",
            reconcile_duration.clone(),
        );
        registry.register(
            "hook_latency_seconds",
            "Latency of policy hook calls, by hook and plugin",
            hook_latency.clone(),
        );
        registry.register(
            "plugin_failures",
            "Policy hook calls that failed (trap, timeout, invalid answer, refused plugin)",
            plugin_failures.clone(),
        );
        registry.register(
            "failovers",
            "Reactive promotions after a lost primary",
            failovers.clone(),
        );
        registry.register(
            "rollouts",
            "Graceful handovers of the primary during rollouts",
            rollouts.clone(),
        );
        Metrics {
            registry,
            reconcile_duration,
            hook_latency,
            plugin_failures,
            failovers,
            rollouts,
        }
    }

    /// Records one reconcile's plan; `acted` is true when its action succeeded.
    pub fn observe_plan(&self, namespace: &str, cluster: &str, plan: &Plan, acted: bool) {
        for d in &plan.decisions {
            let labels = HookLabels {
                hook: d.hook.as_str().to_string(),
                plugin: d.plugin.clone(),
            };
            self.hook_latency
                .get_or_create(&labels)
                .observe(d.latency.as_secs_f64());
            if d.fallback_from.is_some() {
                self.plugin_failures.get_or_create(&labels).inc();
            }
        }
        if let Some(w) = &plan.wait
            && w.blocker == Blocker::PolicyFailed
        {
            self.plugin_failure("", "");
        }
        let labels = ClusterLabels {
            namespace: namespace.to_string(),
            cluster: cluster.to_string(),
        };
        match plan.action {
            Some(Action::Failover { .. }) if acted => {
                self.failovers.get_or_create(&labels).inc();
            }
            Some(Action::Handover { .. }) if acted => {
                self.rollouts.get_or_create(&labels).inc();
            }
            _ => {}
        }
    }

    /// Counts a plugin failure (empty labels when the failing plugin is not known).
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

/// How long a client may take to send its request line.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `GET /metrics` and `GET /healthz` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
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
        tokio::spawn(async move {
            if let Err(e) = respond(&mut stream, &metrics).await {
                tracing::debug!(%peer, error = %e, "metrics request");
            }
        });
    }
}

/// Binds `addr` and serves in a background task.
pub async fn spawn(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((local, tokio::spawn(serve(listener, metrics))))
}

async fn respond(stream: &mut tokio::net::TcpStream, metrics: &Metrics) -> std::io::Result<()> {
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
        (Some("GET"), Some("/healthz")) => ("200 OK", "text/plain", "ok\n".to_string()),
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
        let (addr, task) = spawn("127.0.0.1:0".parse().unwrap(), metrics)
            .await
            .unwrap();
        let health = get(addr, "/healthz").await;
        assert!(health.starts_with("HTTP/1.1 200 OK"), "{health}");
        assert!(health.ends_with("ok\n"));
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
}
