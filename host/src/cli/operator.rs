//! `kvpilot operator`: the Kubernetes controller, with `/metrics` and `/healthz`, and leader
//! election through a Lease when several replicas run.

use crate::decide::Settings;
use crate::platform::kubernetes::config::PORT;
use crate::platform::kubernetes::controller::{self, Context, Scope};
use crate::platform::kubernetes::leader::{self, LeaderElector, LeaseGate, LeaseState};
use crate::platform::kubernetes::metrics::{self, Metrics};
use crate::policy::{DEFAULT_MAX_PLUGIN_BYTES, LoadLimits, PolicyRuntime};
use clap::{Args, ValueEnum};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct OperatorArgs {
    /// Where `/metrics` and `/healthz` are served.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Log as text lines or JSON lines (also `KVPILOT_LOG_FORMAT=json`).
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Only watch KvClusters (and their objects) in this namespace; all namespaces by default.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Stand by for the `kvpilot-operator` Lease and reconcile only while holding it (for
    /// more than one replica). Without it the operator still takes the Lease, and refuses to
    /// start when another operator keeps renewing it.
    #[arg(long)]
    pub leader_election: bool,
    /// Namespace of the Lease; defaults to `$POD_NAMESPACE`, else `default`.
    #[arg(long)]
    pub lease_namespace: Option<String>,
    /// Seconds a Lease stays valid without renewal. The leader renews every 2/15 of it and
    /// stops (exits) when no renewal succeeded for 2/3 of it; a standby takes over once the
    /// Lease has gone unrenewed for all of it, as it observes.
    #[arg(long, default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// Largest policy plugin accepted, in MiB (ConfigMap keys and URL downloads): a larger one
    /// is refused before it is read or compiled.
    #[arg(long, default_value_t = DEFAULT_MAX_PLUGIN_BYTES >> 20)]
    pub max_plugin_mib: usize,
}

/// The name of the Lease replicas compete for.
const LEASE_NAME: &str = "kvpilot-operator";

pub async fn run(args: OperatorArgs) -> Result<ExitCode, String> {
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("cannot build a Kubernetes client: {e}"))?;
    let runtime = PolicyRuntime::global_with(LoadLimits {
        max_plugin_bytes: args.max_plugin_mib.saturating_mul(1 << 20),
        ..LoadLimits::default()
    })
    .map_err(|e| e.to_string())?;
    let metrics = Arc::new(Metrics::new());
    // Every operator takes the Lease, with or without --leader-election: its gate is asked
    // right before every action (rule 9), and a second operator cannot act beside it.
    let namespace = args
        .lease_namespace
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| "default".into());
    let identity = std::env::var("POD_NAME")
        .ok()
        .unwrap_or_else(|| format!("kvpilot-{}", std::process::id()));
    let elector = LeaderElector::new(
        client.clone(),
        &namespace,
        LEASE_NAME,
        &identity,
        Duration::from_secs(args.lease_duration_seconds.max(3)),
    );
    let timing = elector.timing();
    let (tx, mut lease) = tokio::sync::watch::channel(LeaseState::default());
    tokio::spawn(elector.run(tx));
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            runtime,
            metrics.clone(),
            Settings::default(),
            PORT as u16,
        )
        .with_leadership(Arc::new(LeaseGate::new(lease.clone()))),
    );
    let (addr, _server) = metrics::spawn(args.metrics_addr, metrics, ctx.health.clone())
        .await
        .map_err(|e| format!("cannot serve metrics on {}: {e}", args.metrics_addr))?;
    tracing::info!(%addr, "serving /metrics and /healthz");
    let scope = Scope {
        namespace: args.namespace.clone(),
    };
    tracing::info!(%identity, lease = %format!("{namespace}/{LEASE_NAME}"), election = args.leader_election, "waiting for the lease");
    // A standby is healthy while it waits: it beats until it leads.
    let health = ctx.health.clone();
    let standby = async move {
        let mut tick = tokio::time::interval(metrics::BEAT_INTERVAL);
        loop {
            tick.tick().await;
            health.beat();
        }
    };
    if args.leader_election {
        tokio::select! {
            acquired = lease.wait_for(|l| l.leading) => {
                acquired.map_err(|_| "leader election stopped".to_string())?;
            }
            _ = standby => {}
        }
    } else {
        let holder = leader::lease_holder(client, &namespace, LEASE_NAME);
        tokio::select! {
            acquired = leader::acquire_exclusive(&mut lease, timing, holder) => acquired?,
            _ = standby => {}
        }
    }
    tracing::info!(%identity, "leading");
    // Losing the lease ends the process: another replica takes over, and this one restarts
    // as a candidate (the usual controller pattern). Actions stop before that, at the first
    // check after the renew deadline.
    tokio::select! {
        () = controller::run(ctx, scope) => Ok(ExitCode::SUCCESS),
        lost = lease.wait_for(|l| !l.leading) => {
            let _ = lost;
            Err("lost the leader lease; exiting".into())
        }
    }
}
