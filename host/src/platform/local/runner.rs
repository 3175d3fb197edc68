//! [`LocalCluster`]: `kvpilot local up` as a library. It reads the `KvCluster` manifest file,
//! keeps reconciling (reloading the file when it changes), and writes `status.json` for
//! `kvpilot local status`. The demo and the end-to-end tests drive it in-process.

use super::LocalPlatform;
use crate::api::{KvClusterManifest, KvClusterSpec, PoliciesSpec};
use crate::decide::Settings;
use crate::engine::Dialect;
use crate::observe::Clients;
use crate::platform::Platform;
use crate::policy::{
    Hook, HookSetting, Limits, PolicyError, PolicyRuntime, PolicySettings, WasmPolicies,
};
use crate::reconcile::{Outcome, Reconciler, now_ms};
use crate::status::ClusterStatus;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Status file written after every reconcile.
pub const STATUS_FILE: &str = "status.json";
/// Pid file of the running `kvpilot local up`.
pub const PID_FILE: &str = "operator.pid";

/// The error of the local runner, naming the file or step.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("{path}: {message}")]
    Spec { path: PathBuf, message: String },
    #[error(transparent)]
    Platform(#[from] crate::platform::PlatformError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Reads a `KvCluster` manifest (YAML or JSON) and names the file and field on error.
pub fn read_manifest(path: &Path) -> Result<KvClusterManifest, LocalError> {
    let text = std::fs::read_to_string(path).map_err(|source| LocalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let manifest: KvClusterManifest =
        serde_norway::from_str(&text).map_err(|e| LocalError::Spec {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    if manifest.kind != "KvCluster" {
        return Err(LocalError::Spec {
            path: path.to_path_buf(),
            message: format!("kind: expected KvCluster, found {}", manifest.kind),
        });
    }
    if manifest.metadata.name.is_empty() {
        return Err(LocalError::Spec {
            path: path.to_path_buf(),
            message: "metadata.name: must not be empty".into(),
        });
    }
    Ok(manifest)
}

/// The policy settings of a spec, as the runtime takes them.
pub fn policy_settings(policies: &PoliciesSpec) -> PolicySettings {
    let setting = |hook: Hook| {
        let r = policies.for_hook(hook);
        HookSetting {
            source: r.plugin.clone(),
            config: r.config_json(),
            failure: r.failure_policy,
            limits: Limits::default(),
        }
    };
    PolicySettings {
        replica_selection: Some(setting(Hook::ReplicaSelection)),
        snapshot_schedule: Some(setting(Hook::SnapshotSchedule)),
        rollout_order: Some(setting(Hook::RolloutOrder)),
    }
}

/// One local group and its reconciler.
pub struct LocalCluster {
    spec_path: PathBuf,
    spec_mtime: Option<SystemTime>,
    spec: KvClusterSpec,
    runtime: PolicyRuntime,
    policies: Result<WasmPolicies, PolicyError>,
    bound_policies: PoliciesSpec,
    pub reconciler: Reconciler<LocalPlatform>,
    status_tx: tokio::sync::watch::Sender<ClusterStatus>,
}

impl LocalCluster {
    /// Opens the group described by `spec_path` under `state_root/<name>`, adopting members
    /// that still run. `endpoint` fixes the primary endpoint address on first use. With a
    /// `password`, members require it from clients and each other (`requirepass`,
    /// `masterauth`), and the reconciler authenticates with it; a group keeps the password
    /// it was first started with.
    pub async fn open(
        spec_path: &Path,
        state_root: &Path,
        endpoint: Option<SocketAddr>,
        password: Option<String>,
        settings: Settings,
    ) -> Result<LocalCluster, LocalError> {
        let manifest = read_manifest(spec_path)?;
        let name = manifest.metadata.name.clone();
        let spec = manifest.spec;
        // Members chdir into their own directory: every path they get must be absolute.
        let dir = std::path::absolute(state_root)
            .map_err(|source| LocalError::Io {
                path: state_root.to_path_buf(),
                source,
            })?
            .join(&name);
        let platform = LocalPlatform::open(&dir, &name, &spec, endpoint, password.clone()).await?;
        let dialect = match spec.engine.kind {
            kvpilot_sdk::Engine::Valkey => Dialect::Valkey,
            kvpilot_sdk::Engine::Redis => Dialect::Redis,
            kvpilot_sdk::Engine::Dragonfly => Dialect::Dragonfly,
        };
        let runtime = PolicyRuntime::global()?;
        let policies = WasmPolicies::bind(&runtime, &policy_settings(&spec.policies)).await;
        let namespace = manifest
            .metadata
            .namespace
            .unwrap_or_else(|| "local".into());
        let mut reconciler = Reconciler::new(
            &name,
            &namespace,
            platform,
            Clients::new(dialect, password),
            settings,
        );
        // The last run's status: what it recorded of each member (history, role, pending
        // fences) is all there is to know of a member that is down or loading now (rules 2
        // and 7). A missing or unreadable file starts from nothing.
        if let Some(previous) = std::fs::read(dir.join(STATUS_FILE))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<ClusterStatus>(&bytes).ok())
        {
            reconciler.status = previous;
        }
        Ok(LocalCluster {
            spec_path: spec_path.to_path_buf(),
            spec_mtime: mtime(spec_path),
            bound_policies: spec.policies.clone(),
            spec,
            runtime,
            policies,
            reconciler,
            status_tx: tokio::sync::watch::Sender::new(ClusterStatus::default()),
        })
    }

    pub fn spec(&self) -> &KvClusterSpec {
        &self.spec
    }

    pub fn platform(&self) -> &LocalPlatform {
        &self.reconciler.platform
    }

    /// The address clients use.
    pub fn endpoint(&self) -> SocketAddr {
        self.reconciler.platform.endpoint_addr()
    }

    /// Rereads the spec file if it changed. A file that does not parse changes nothing: the
    /// error becomes a Warning event and the previous spec stays in force.
    async fn reload(&mut self) {
        let now = mtime(&self.spec_path);
        if now == self.spec_mtime {
            return;
        }
        self.spec_mtime = now;
        match read_manifest(&self.spec_path) {
            Ok(m) => {
                if let Err(e) = self.reconciler.platform.update_spec(&m.spec) {
                    self.reconciler
                        .status
                        .event(now_ms(), true, "InvalidSpec", e.to_string());
                    return;
                }
                tracing::info!(file = %self.spec_path.display(), "spec reloaded");
                self.spec = m.spec;
            }
            Err(e) => self
                .reconciler
                .status
                .event(now_ms(), true, "InvalidSpec", e.to_string()),
        }
        if self.spec.policies != self.bound_policies {
            self.bound_policies = self.spec.policies.clone();
            self.policies =
                WasmPolicies::bind(&self.runtime, &policy_settings(&self.spec.policies)).await;
        }
    }

    /// One reconcile (after a reload check); writes the status file.
    pub async fn step(&mut self) -> Outcome {
        self.reload().await;
        let outcome = match &self.policies {
            Ok(policies) => self.reconciler.reconcile(&self.spec, policies).await,
            Err(e) => {
                // Plugins that cannot be bound act like a failing plugin under `Fail`:
                // nothing changes, the condition says why, and binding is retried.
                let message = e.to_string();
                self.reconciler
                    .status
                    .event(now_ms(), true, "PolicyFailed", message.clone());
                self.policies =
                    WasmPolicies::bind(&self.runtime, &policy_settings(&self.spec.policies)).await;
                let mut plan = crate::decide::Plan::new(self.reconciler.settings.policy_retry);
                plan.wait = Some(crate::decide::Wait {
                    blocker: crate::decide::Blocker::PolicyFailed,
                    reason: message,
                });
                Outcome { plan, error: None }
            }
        };
        self.write_status();
        self.status_tx.send_replace(self.reconciler.status.clone());
        outcome
    }

    /// The status after every reconcile.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<ClusterStatus> {
        self.status_tx.subscribe()
    }

    /// SIGKILLs a member, as a crash would.
    pub fn kill(&self, member: &str) -> Result<(), LocalError> {
        Ok(self.reconciler.platform.kill(member)?)
    }

    /// SIGKILLs a member and starts it again at once without asking the reconciler, as a
    /// kubelet restarting a crashed container would: it comes back empty and parked.
    pub async fn crash_and_restart(&self, member: &str) -> Result<(), LocalError> {
        let platform = &self.reconciler.platform;
        platform.kill(member)?;
        platform
            .wait_stopped(member, Duration::from_secs(5))
            .await?;
        platform.start(&[member.to_string()], None).await?;
        Ok(())
    }

    fn write_status(&self) {
        let path = self.reconciler.platform.dir().join(STATUS_FILE);
        let tmp = path.with_extension("json.tmp");
        let written = serde_json::to_vec_pretty(&self.reconciler.status)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "cannot write status");
        }
    }

    /// Reconciles until `shutdown` resolves. Every wait is bounded: requeue delays are capped
    /// at `max_sleep` so a changed file is noticed promptly.
    pub async fn run_until(&mut self, shutdown: impl Future<Output = ()>, max_sleep: Duration) {
        tokio::pin!(shutdown);
        loop {
            let outcome = self.step().await;
            let sleep = outcome.plan.requeue_after.min(max_sleep);
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// Stops every member and the endpoint.
    pub async fn shutdown(self) -> Result<(), LocalError> {
        self.reconciler.platform.shutdown().await?;
        Ok(())
    }
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
