//! [`LocalCluster`]: `kvpilot local up` as a library. It reads the `KvCluster` manifest file,
//! keeps reconciling (reloading the file when it changes), and writes `status.json` for
//! `kvpilot local status`. The demo and the end-to-end tests drive it in-process.

use super::LocalPlatform;
use super::lock::StateLock;
use super::topology;
use crate::api::{KvClusterManifest, KvClusterSpec, PoliciesSpec, validate_spec};
use crate::decide::Settings;
use crate::engine::Dialect;
use crate::observe::Clients;
use crate::platform::Platform;
use crate::policy::{
    Hook, HookProblem, HookSetting, Limits, Policies, PolicyError, PolicyRuntime, PolicySettings,
    WasmPolicies, retry,
};
use crate::reconcile::{Outcome, Reconciler, now_ms};
use crate::status::ClusterStatus;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Status file written after every reconcile.
pub const STATUS_FILE: &str = "status.json";
/// The largest manifest file read.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// Pid file of the running `kvpilot local up`, which it holds locked while it runs
/// ([`super::lock`]).
pub const PID_FILE: &str = super::lock::LOCK_FILE;
/// Which manifest file the group was last started from (`{"manifest": "/abs/path"}`), so
/// that `local down` and `local status` find the group even when that file no longer parses.
pub const SOURCE_FILE: &str = "source.json";

/// The error of the local runner, naming the file or step.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("{path}: {message}")]
    Spec { path: PathBuf, message: String },
    #[error(transparent)]
    Platform(#[from] crate::platform::PlatformError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Lock(#[from] super::lock::LockError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Reads a `KvCluster` manifest and checks its spec ([`validate_spec`]): what `local up`
/// runs. Errors name the file and the field.
pub fn read_valid_manifest(path: &Path) -> Result<KvClusterManifest, LocalError> {
    let manifest = read_manifest(path)?;
    validate_spec(&manifest.spec).map_err(|e| LocalError::Spec {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    topology::read(&manifest).map_err(|message| LocalError::Spec {
        path: path.to_path_buf(),
        message,
    })?;
    Ok(manifest)
}

/// Reads a `KvCluster` manifest (YAML or JSON) and names the file and field on error.
pub fn read_manifest(path: &Path) -> Result<KvClusterManifest, LocalError> {
    // A manifest is a few KiB (Kubernetes stores an object of at most about 1.5 MiB): a larger
    // file is refused before it is read.
    use crate::policy::input::{InputError, read_bounded};
    let text = read_bounded(path, MAX_MANIFEST_BYTES).map_err(|e| match e {
        InputError::Read { source, .. } => LocalError::Io {
            path: path.to_path_buf(),
            source,
        },
        other => LocalError::Spec {
            path: path.to_path_buf(),
            message: match other {
                InputError::TooLarge { bytes, limit, .. } => {
                    format!("is {bytes} bytes or more; the limit is {limit} bytes")
                }
                other => other.to_string(),
            },
        },
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
    if !plain_name(&manifest.metadata.name) {
        return Err(LocalError::Spec {
            path: path.to_path_buf(),
            message: format!(
                "metadata.name: {:?} is not a plain name (1 to 63 letters, digits, `-`, `_` or \
                 `.`, not starting with `.`): it names the group's directory",
                manifest.metadata.name.chars().take(80).collect::<String>()
            ),
        });
    }
    Ok(manifest)
}

/// A group name that is safe as one directory name: no `/`, no `..`, no hidden file.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The directory of the group that `file` describes, under `state_root`. When the file does
/// not parse as a manifest any more (`local down` and `local status` must still work), its
/// `metadata.name` is read leniently, and failing that the group started from this very file
/// is looked up ([`SOURCE_FILE`]); the error names the file and what is wrong with it.
pub fn group_dir(file: &Path, state_root: &Path) -> Result<PathBuf, LocalError> {
    let error = match read_manifest(file) {
        Ok(m) => return Ok(state_root.join(m.metadata.name)),
        Err(e) => e,
    };
    let lenient = std::fs::read_to_string(file)
        .ok()
        .and_then(|text| serde_norway::from_str::<serde_norway::Value>(&text).ok())
        .and_then(|v| {
            v.get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(|n| n.as_str())
                .map(str::to_string)
        })
        .filter(|name| plain_name(name));
    if let Some(name) = lenient {
        return Ok(state_root.join(name));
    }
    if let Some(dir) = started_from(file, state_root) {
        return Ok(dir);
    }
    Err(LocalError::Spec {
        path: file.to_path_buf(),
        message: format!(
            "{}; and no group under {} was started from this file",
            match error {
                LocalError::Spec { message, .. } => message,
                other => other.to_string(),
            },
            state_root.display()
        ),
    })
}

/// The group under `state_root` whose [`SOURCE_FILE`] names `file`.
fn started_from(file: &Path, state_root: &Path) -> Option<PathBuf> {
    let wanted = std::fs::canonicalize(file).ok()?;
    std::fs::read_dir(state_root)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|dir| {
            std::fs::read(dir.join(SOURCE_FILE))
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Source>(&bytes).ok())
                .is_some_and(|s| s.manifest == wanted)
        })
}

/// What [`SOURCE_FILE`] holds.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Source {
    manifest: PathBuf,
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

/// The policy settings of a local manifest: a relative `.wasm` path is resolved from the
/// manifest's folder (not from wherever `kvpilot local up` was started), so a manifest can
/// sit beside its plugin.
pub fn local_policy_settings(policies: &PoliciesSpec, manifest: &Path) -> PolicySettings {
    let mut settings = policy_settings(policies);
    let folder = manifest.parent().unwrap_or(Path::new(""));
    for setting in [
        &mut settings.replica_selection,
        &mut settings.snapshot_schedule,
        &mut settings.rollout_order,
    ]
    .into_iter()
    .flatten()
    {
        if let crate::policy::source::Source::File(path) =
            crate::policy::source::parse(&setting.source)
            && Path::new(path).is_relative()
        {
            setting.source = folder.join(path).display().to_string();
        }
    }
    settings
}

/// When the hooks that could not be bound are bound again: after `policy_retry`, doubling
/// with each attempt that still finds a hook unusable, up to `retry::MAX_HOOK_BACKOFF`.
#[derive(Debug, Default)]
struct Rebind {
    /// Binds in a row that left a hook unusable.
    failures: u32,
    at_ms: u64,
    /// The problems last reported, so each is an event once, not once per attempt.
    reported: Vec<HookProblem>,
}

/// One local group and its reconciler.
pub struct LocalCluster {
    spec_path: PathBuf,
    spec_mtime: Option<SystemTime>,
    spec: KvClusterSpec,
    runtime: PolicyRuntime,
    /// Each hook bound on its own: one that cannot be bound fails (or falls back) alone.
    policies: WasmPolicies,
    bound_policies: PoliciesSpec,
    /// Hooks that could not be bound are bound again on a backoff.
    rebind: Rebind,
    /// The `.wasm` files the hooks were bound from and their modification times: a rebuilt
    /// plugin is bound again on the next reconcile.
    plugin_files: Vec<(PathBuf, Option<SystemTime>)>,
    pub reconciler: Reconciler<LocalPlatform>,
    status_tx: tokio::sync::watch::Sender<ClusterStatus>,
    /// Held while this value lives: a second run on the same group is refused.
    _lock: StateLock,
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
        let manifest = read_valid_manifest(spec_path)?;
        let name = manifest.metadata.name.clone();
        // Checked by `read_valid_manifest`.
        let places = topology::read(&manifest).unwrap_or_default();
        let spec = manifest.spec;
        // Members chdir into their own directory: every path they get must be absolute.
        let dir = std::path::absolute(state_root)
            .map_err(|source| LocalError::Io {
                path: state_root.to_path_buf(),
                source,
            })?
            .join(&name);
        // Before anything else touches the group: one reconciler per state directory.
        let lock = StateLock::acquire(&dir)?;
        if let Ok(manifest) = std::fs::canonicalize(spec_path)
            && let Ok(json) = serde_json::to_vec(&Source { manifest })
        {
            let path = dir.join(SOURCE_FILE);
            std::fs::write(&path, json).map_err(|source| LocalError::Io { path, source })?;
        }
        let platform = LocalPlatform::open(&dir, &name, &spec, endpoint, password.clone()).await?;
        platform.set_topology(places)?;
        let dialect = match spec.engine.kind {
            kvpilot_sdk::Engine::Valkey => Dialect::Valkey,
            kvpilot_sdk::Engine::Redis => Dialect::Redis,
            kvpilot_sdk::Engine::Dragonfly => Dialect::Dragonfly,
        };
        let runtime = PolicyRuntime::global()?;
        let policy = local_policy_settings(&spec.policies, spec_path);
        // Before loading: a file rebuilt while it loads is bound again at the first step.
        let files = plugin_files(&policy);
        let policies = WasmPolicies::bind(&runtime, &policy).await;
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
        let mut cluster = LocalCluster {
            spec_path: spec_path.to_path_buf(),
            spec_mtime: mtime(spec_path),
            bound_policies: spec.policies.clone(),
            spec,
            runtime,
            policies,
            rebind: Rebind::default(),
            plugin_files: files,
            reconciler,
            status_tx: tokio::sync::watch::Sender::new(ClusterStatus::default()),
            _lock: lock,
        };
        cluster.bound(now_ms());
        Ok(cluster)
    }

    /// Binds every hook again (a changed spec, a rebuilt plugin, or the retry of hooks that
    /// could not be bound).
    async fn bind(&mut self, now: u64) {
        let settings = local_policy_settings(&self.spec.policies, &self.spec_path);
        self.plugin_files = plugin_files(&settings);
        self.policies = WasmPolicies::bind(&self.runtime, &settings).await;
        self.reconciler.policies_rebound();
        self.bound(now);
    }

    /// After a bind: an event per new problem, and when to try the unusable hooks again.
    fn bound(&mut self, now: u64) {
        let problems = self.policies.bind_problems();
        if problems.is_empty() {
            self.rebind = Rebind::default();
            return;
        }
        self.rebind.failures = self.rebind.failures.saturating_add(1);
        let wait = retry::backoff(self.reconciler.settings.policy_retry, self.rebind.failures);
        self.rebind.at_ms = now.saturating_add(u64::try_from(wait.as_millis()).unwrap_or(0));
        for p in &problems {
            if self.rebind.reported.contains(p) {
                continue;
            }
            let (reason, message) = p.event(wait);
            self.reconciler.status.event(now, true, reason, message);
        }
        self.rebind.reported = problems;
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

    /// Rereads the spec file if it changed. A file that does not parse, or whose spec is
    /// invalid, changes nothing: the error (naming the file and the field) becomes a Warning
    /// event and the previous spec stays in force, so a typo never stops failover.
    async fn reload(&mut self) {
        let now = mtime(&self.spec_path);
        if now == self.spec_mtime {
            return;
        }
        self.spec_mtime = now;
        match read_valid_manifest(&self.spec_path) {
            Ok(m) => {
                // Checked by `read_valid_manifest`.
                let places = topology::read(&m).unwrap_or_default();
                if let Err(e) = self.reconciler.platform.set_topology(places) {
                    tracing::warn!(error = %e, "member topology not updated");
                }
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
            self.rebind = Rebind::default();
            self.bind(now_ms()).await;
        }
    }

    /// One reconcile (after a reload check); writes the status file.
    pub async fn step(&mut self) -> Outcome {
        self.reload().await;
        if self
            .plugin_files
            .iter()
            .any(|(path, seen)| mtime(path) != *seen)
        {
            tracing::info!("a plugin file changed: binding the hooks again");
            self.rebind = Rebind::default();
            self.bind(now_ms()).await;
        }
        let now = now_ms();
        if !self.rebind.reported.is_empty() && now >= self.rebind.at_ms {
            // The file may have been rebuilt, the plugin fixed: try the unusable hooks again.
            self.bind(now).await;
        }
        let outcome = self.reconciler.reconcile(&self.spec, &self.policies).await;
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

/// The `.wasm` files of `settings` with their modification times now.
fn plugin_files(settings: &PolicySettings) -> Vec<(PathBuf, Option<SystemTime>)> {
    [
        &settings.replica_selection,
        &settings.snapshot_schedule,
        &settings.rollout_order,
    ]
    .into_iter()
    .flatten()
    .filter_map(|s| match crate::policy::source::parse(&s.source) {
        crate::policy::source::Source::File(path) => {
            let path = PathBuf::from(path);
            let seen = mtime(&path);
            Some((path, seen))
        }
        crate::policy::source::Source::Builtin(_) => None,
    })
    .collect()
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
