//! Per-cluster policy selection in Kubernetes: each hook's `plugin` is `builtin:NAME` or the
//! name of a `PolicyPlugin`, whose source (a builtin, a ConfigMap's `binaryData` or a URL,
//! pinned by sha256) is loaded here and whose status (Loaded, Valid, hooks, sha256, message)
//! is kept.

pub mod fetch;

use super::metrics::Metrics;
use crate::api::{KvClusterSpec, PluginSource, PoliciesSpec, PolicyPlugin, PolicyPluginStatus};
use crate::platform::local::policy_settings;
use crate::policy::{
    Decided, Hook, HookProblem, Limits, Plugin, Policies, PolicyError, PolicyRuntime,
    PolicySettings, Preloaded, WasmPolicies, text,
};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};
use kvpilot_sdk::{
    MemberSchedule, RolloutRequest, ScheduleRequest, Selection, SelectionRequest, Step,
};
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The prefix of a builtin plugin source.
const BUILTIN: &str = "builtin:";

/// Why a PolicyPlugin cannot be used. `loaded` is false when the bytes could not be fetched
/// or did not match the declared digest, true when they loaded but failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("PolicyPlugin {plugin}: {message}")]
pub struct PluginProblem {
    pub plugin: String,
    pub loaded: bool,
    pub message: String,
}

/// One cluster's plugins, loaded: what [`WasmPolicies::bind_with`] takes (a PolicyPlugin that
/// cannot be used is there as the reason why), and a key that changes when the spec's policies
/// or a referenced PolicyPlugin (or its usability) change.
pub struct Resolved {
    pub settings: PolicySettings,
    pub preloaded: Preloaded,
    pub key: String,
}

impl Resolved {
    /// Binds the hooks (checking each config with the plugin), each on its own: a hook whose
    /// PolicyPlugin cannot be used fails alone under `Fail`, or falls back under `Fallback`.
    pub async fn bind(&self, runtime: &PolicyRuntime) -> WasmPolicies {
        WasmPolicies::bind_with(runtime, &self.settings, &self.preloaded).await
    }
}

/// The plugin a policy error is about.
pub fn failing_plugin(e: &PolicyError) -> &str {
    e.plugin()
}

/// First wait after a PolicyPlugin failed to load.
pub const RETRY_BASE: Duration = Duration::from_secs(10);
/// Longest wait between attempts to load a failing PolicyPlugin.
pub const RETRY_MAX: Duration = Duration::from_secs(300);
/// Failing PolicyPlugins remembered; the oldest entry goes first.
const REMEMBERED_FAILURES: usize = 64;

/// Failed PolicyPlugin loads, so a plugin that cannot be used (a URL whose bytes have another
/// digest, a component that does not compile) is not downloaded and compiled again on every
/// reconcile of every cluster that names it. After `n` consecutive failures of one plugin
/// spec the next attempt waits `base × 2^(n-1)`, at most `max`; in between, the remembered
/// problem is the answer. A new PolicyPlugin spec (generation) is a new entry, tried at once.
pub struct RetryBackoff {
    base: Duration,
    max: Duration,
    failures: Mutex<VecDeque<Failed>>,
}

#[derive(Debug, Clone)]
struct Failed {
    key: String,
    problem: PluginProblem,
    count: u32,
    retry_at: Instant,
}

impl Default for RetryBackoff {
    fn default() -> Self {
        RetryBackoff::new(RETRY_BASE, RETRY_MAX)
    }
}

impl RetryBackoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        RetryBackoff {
            base,
            max,
            failures: Mutex::new(VecDeque::new()),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, VecDeque<Failed>> {
        // Only a memory of failures: a poisoned lock is still usable.
        self.failures.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The remembered problem of `key` and the time left, while it is waiting at `now`.
    pub fn waiting(&self, key: &str, now: Instant) -> Option<(PluginProblem, Duration)> {
        self.entries()
            .iter()
            .find(|f| f.key == key && f.retry_at > now)
            .map(|f| (f.problem.clone(), f.retry_at - now))
    }

    /// Records a failed attempt at `now`; returns the wait before the next one.
    pub fn failed(&self, key: &str, problem: &PluginProblem, now: Instant) -> Duration {
        let mut entries = self.entries();
        let count = match entries.iter().position(|f| f.key == key) {
            Some(i) => entries.remove(i).map_or(1, |f| f.count.saturating_add(1)),
            None => 1,
        };
        let factor = 2u32.saturating_pow(count.saturating_sub(1).min(16));
        let wait = self.base.saturating_mul(factor).min(self.max);
        while entries.len() >= REMEMBERED_FAILURES {
            entries.pop_front();
        }
        entries.push_back(Failed {
            key: key.to_string(),
            problem: problem.clone(),
            count,
            retry_at: now + wait,
        });
        wait
    }

    /// Forgets `key`'s failures after it loaded.
    pub fn succeeded(&self, key: &str) {
        self.entries().retain(|f| f.key != key);
    }
}

/// What identifies one attempt to load `pp`: the object and the spec that says how.
fn retry_key(pp: &PolicyPlugin) -> String {
    format!(
        "{}|{}|{:?}|{}",
        pp.name_any(),
        pp.metadata.uid.as_deref().unwrap_or_default(),
        pp.metadata.generation,
        serde_json::to_string(&pp.spec.source).unwrap_or_default()
    )
}

/// The names of the PolicyPlugins a spec refers to.
pub fn referenced_plugins(policies: &PoliciesSpec) -> Vec<String> {
    let mut names: Vec<String> = Hook::ALL
        .iter()
        .map(|h| policies.for_hook(*h).plugin)
        .filter(|p| !p.starts_with(BUILTIN))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Loads every PolicyPlugin `spec` names (updating each one's status) and returns the hook
/// settings. A PolicyPlugin that cannot be used (missing, refused, failing to load) is in
/// `preloaded` as the reason why: binding then fails that hook alone under
/// `failurePolicy: Fail`, or binds its builtin under `Fallback`.
pub async fn resolve(
    client: &Client,
    recorder: &Recorder,
    runtime: &PolicyRuntime,
    spec: &KvClusterSpec,
    retry: &RetryBackoff,
) -> Resolved {
    let mut settings = policy_settings(&spec.policies);
    let mut preloaded = Preloaded::new();
    let mut key = serde_json::to_string(&spec.policies).unwrap_or_default();
    let api: Api<PolicyPlugin> = Api::all(client.clone());
    for name in referenced_plugins(&spec.policies) {
        let loaded = match api.get_opt(&name).await {
            Ok(Some(pp)) => load_and_record(client, recorder, runtime, &pp, retry).await,
            Ok(None) => Err(PluginProblem {
                plugin: name.clone(),
                loaded: false,
                message: "not found".into(),
            }),
            Err(e) => Err(PluginProblem {
                plugin: name.clone(),
                loaded: false,
                message: format!("cannot read it: {e}"),
            }),
        };
        let plugin = match loaded {
            Ok(plugin) => plugin,
            Err(problem) => {
                // Part of the key: the hooks are bound again once the plugin can be used.
                key.push_str(&format!("|{name}=unusable:{}", problem.message));
                preloaded.insert(name, Err(problem.to_string()));
                continue;
            }
        };
        let limits = plugin.limits();
        key.push_str(&format!(
            "|{name}={}/{:?}/{}",
            plugin.sha256_hex(),
            limits.timeout,
            limits.memory_bytes
        ));
        for setting in [
            &mut settings.replica_selection,
            &mut settings.snapshot_schedule,
            &mut settings.rollout_order,
        ]
        .into_iter()
        .flatten()
        {
            if setting.source == name {
                setting.limits = limits;
            }
        }
        preloaded.insert(name, Ok(plugin));
    }
    Resolved {
        settings,
        preloaded,
        key,
    }
}

/// Loads `pp` and writes what was found into its status. While `pp` is backing off after a
/// failure ([`RetryBackoff`]), the remembered problem is returned without trying (its status
/// already says it).
///
/// The digest in use is always in `status.sha256` (a ConfigMap source need not pin one: its
/// bytes may change in place), and each change of it is an Event on the PolicyPlugin, naming
/// the digest before and after; every decision record names the digest that answered.
pub async fn load_and_record(
    client: &Client,
    recorder: &Recorder,
    runtime: &PolicyRuntime,
    pp: &PolicyPlugin,
    retry: &RetryBackoff,
) -> Result<Plugin, PluginProblem> {
    let key = retry_key(pp);
    if let Some((problem, left)) = retry.waiting(&key, Instant::now()) {
        tracing::debug!(plugin = %pp.name_any(), retry_in = ?left, "PolicyPlugin failed recently; not trying again yet");
        return Err(problem);
    }
    let result = load(client, runtime, pp).await;
    match &result {
        Ok(_) => retry.succeeded(&key),
        Err(problem) => {
            let wait = retry.failed(&key, problem, Instant::now());
            tracing::warn!(plugin = %pp.name_any(), error = %problem, retry_in = ?wait, "PolicyPlugin cannot be used");
        }
    }
    let status = plugin_status(pp, &result);
    let before = pp.status.as_ref().and_then(|s| s.sha256.as_deref());
    if let Ok(plugin) = &result
        && before != Some(plugin.sha256_hex().as_str())
    {
        let now = plugin.sha256_hex();
        let (reason, note) = match before {
            Some(before) => (
                "DigestChanged",
                format!("sha256 {now} is in use (was {before})"),
            ),
            None => ("Loaded", format!("sha256 {now} is in use")),
        };
        let event = Event {
            type_: EventType::Normal,
            reason: reason.into(),
            note: Some(note),
            action: "Load".into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &pp.object_ref(&())).await {
            tracing::warn!(plugin = %pp.name_any(), error = %e, "cannot publish an event");
        }
    }
    if pp.status.as_ref().map(comparable) != Some(comparable(&status)) {
        let api: Api<PolicyPlugin> = Api::all(client.clone());
        let patch = serde_json::json!({ "status": status });
        if let Err(e) = api
            .patch_status(
                &pp.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            tracing::warn!(plugin = %pp.name_any(), error = %e, "cannot update the PolicyPlugin status");
        }
    }
    result
}

/// Fetches the plugin's bytes, checks the digest, compiles and names it, with its limits.
pub async fn load(
    client: &Client,
    runtime: &PolicyRuntime,
    pp: &PolicyPlugin,
) -> Result<Plugin, PluginProblem> {
    let name = pp.name_any();
    // Messages quote URLs, ConfigMap keys and the plugin's own errors: cleaned (rule 10).
    let problem = |loaded: bool, message: String| PluginProblem {
        plugin: name.clone(),
        loaded,
        message: text::clean(&message, text::MESSAGE_BYTES),
    };
    let limits = pp
        .spec
        .limits
        .as_ref()
        .map(|l| Limits::from_settings(l.timeout_ms, l.memory_mib))
        .unwrap_or_default();
    let PluginSource {
        builtin,
        config_map,
        url,
        sha256,
    } = &pp.spec.source;
    let plugin = if let Some(builtin) = builtin {
        runtime
            .load_builtin(builtin)
            .await
            .map_err(|e| problem(false, e.to_string()))?
    } else if let Some(source) = config_map {
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &source.namespace);
        let where_ = format!(
            "ConfigMap {}/{} binaryData key {}",
            source.namespace, source.name, source.key
        );
        let cm = cms
            .get_opt(&source.name)
            .await
            .map_err(|e| problem(false, format!("cannot read {where_}: {e}")))?
            .ok_or_else(|| problem(false, format!("{where_}: ConfigMap not found")))?;
        let bytes = cm
            .binary_data
            .as_ref()
            .and_then(|d| d.get(&source.key))
            .ok_or_else(|| problem(false, format!("{where_}: no such key")))?;
        // Size and preamble before anything else (the digest, the compile).
        runtime
            .check_bytes(&bytes.0)
            .map_err(|message| problem(false, format!("{where_}: {message}")))?;
        let digest = hex::encode(Sha256::digest(&bytes.0));
        if let Some(declared) = sha256
            && *declared != digest
        {
            return Err(problem(
                false,
                format!("{where_}: sha256 mismatch: declared {declared}, found {digest}; refused"),
            ));
        }
        runtime
            .load_bytes(&name, &bytes.0)
            .await
            .map_err(|e| problem(true, e.to_string()))?
    } else if let Some(url) = url {
        let declared = sha256
            .as_deref()
            .ok_or_else(|| problem(false, format!("{url}: a url source needs sha256")))?;
        let bytes = fetch::fetch_pinned(url, declared, runtime.limits().max_plugin_bytes)
            .await
            .map_err(|e| problem(false, e.to_string()))?;
        runtime
            .load_bytes(&name, &bytes)
            .await
            .map_err(|e| problem(true, e.to_string()))?
    } else {
        return Err(problem(
            false,
            "source needs one of builtin, configMap or url".into(),
        ));
    };
    if plugin.hooks().is_empty() {
        return Err(problem(true, "the component exports no hook".into()));
    }
    Ok(plugin.named(name).with_limits(limits))
}

/// The status for a load result; condition times are kept while a condition's status holds.
pub fn plugin_status(
    pp: &PolicyPlugin,
    result: &Result<Plugin, PluginProblem>,
) -> PolicyPluginStatus {
    let (loaded, valid, message) = match result {
        Ok(p) => (true, true, p.info().description.clone()),
        Err(e) => (e.loaded, false, e.message.clone()),
    };
    let previous = pp.status.as_ref();
    let cond = |kind: &str, ok: bool, reason: &str| {
        let status = if ok { "True" } else { "False" }.to_string();
        let last_transition_time = previous
            .and_then(|p| p.conditions.iter().find(|c| c.type_ == kind))
            .filter(|c| c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or(Time(Timestamp::now()));
        Condition {
            type_: kind.to_string(),
            status,
            reason: reason.to_string(),
            message: if ok { String::new() } else { message.clone() },
            last_transition_time,
            observed_generation: pp.metadata.generation,
        }
    };
    PolicyPluginStatus {
        conditions: vec![
            cond(
                "Loaded",
                loaded,
                if loaded { "Loaded" } else { "LoadFailed" },
            ),
            cond("Valid", valid, if valid { "Valid" } else { "Invalid" }),
        ],
        observed_generation: pp.metadata.generation,
        hooks: result
            .as_ref()
            .map(|p| p.hooks().iter().map(|h| h.as_str().to_string()).collect())
            .unwrap_or_default(),
        sha256: result.as_ref().ok().map(|p| p.sha256_hex()),
        message: Some(message).filter(|m| !m.is_empty()),
    }
}

/// A status without condition times, to decide whether a patch is needed.
fn comparable(s: &PolicyPluginStatus) -> String {
    let mut s = s.clone();
    for c in &mut s.conditions {
        c.last_transition_time = Time(Timestamp::UNIX_EPOCH);
    }
    serde_json::to_string(&s).unwrap_or_default()
}

/// One cluster's bound policies as `decide` calls them. Every call is measured: its latency by
/// hook and the plugin that answered (or, for a failed call, the plugin the spec names), and
/// each failure (an error, or a fallback) by hook and the plugin the spec names.
pub struct ClusterPolicies<'a, P> {
    inner: &'a P,
    metrics: &'a Metrics,
    spec: &'a PoliciesSpec,
}

impl<'a, P: Policies> ClusterPolicies<'a, P> {
    pub fn new(inner: &'a P, metrics: &'a Metrics, spec: &'a PoliciesSpec) -> Self {
        ClusterPolicies {
            inner,
            metrics,
            spec,
        }
    }

    fn finish<T>(
        &self,
        hook: Hook,
        started: Instant,
        result: Result<Decided<T>, PolicyError>,
    ) -> Result<Decided<T>, PolicyError> {
        let configured = self.spec.for_hook(hook).plugin;
        match result {
            Ok(decided) => {
                let record = &decided.record;
                self.metrics.hook_call(hook, &record.plugin, record.latency);
                if record.fallback_from.is_some() {
                    self.metrics.plugin_failure(hook.as_str(), &configured);
                }
                Ok(decided)
            }
            Err(e) => {
                self.metrics.hook_call(hook, &configured, started.elapsed());
                self.metrics.plugin_failure(hook.as_str(), &configured);
                Err(e)
            }
        }
    }
}

impl<P: Policies> Policies for ClusterPolicies<'_, P> {
    fn bind_problems(&self) -> Vec<HookProblem> {
        self.inner.bind_problems()
    }

    async fn select_replica(
        &self,
        request: SelectionRequest,
    ) -> Result<Decided<Selection>, PolicyError> {
        let started = Instant::now();
        let result = self.inner.select_replica(request).await;
        self.finish(Hook::ReplicaSelection, started, result)
    }

    async fn schedule_snapshots(
        &self,
        request: ScheduleRequest,
    ) -> Result<Decided<Vec<MemberSchedule>>, PolicyError> {
        let started = Instant::now();
        let result = self.inner.schedule_snapshots(request).await;
        self.finish(Hook::SnapshotSchedule, started, result)
    }

    async fn rollout_step(&self, request: RolloutRequest) -> Result<Decided<Step>, PolicyError> {
        let started = Instant::now();
        let result = self.inner.rollout_step(request).await;
        self.finish(Hook::RolloutOrder, started, result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::native::NativePolicies;

    fn problem(message: &str) -> PluginProblem {
        PluginProblem {
            plugin: "tampered".into(),
            loaded: false,
            message: message.into(),
        }
    }

    #[test]
    fn failed_loads_wait_longer_each_time_and_are_forgotten_on_success() {
        let retry = RetryBackoff::new(Duration::from_secs(10), Duration::from_secs(35));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(retry.waiting("a", t0).is_none(), "never failed: try");
        assert_eq!(
            retry.failed("a", &problem("sha256 mismatch"), t0),
            Duration::from_secs(10)
        );
        let (p, left) = retry.waiting("a", at(4)).expect("waiting");
        assert_eq!(p.message, "sha256 mismatch");
        assert_eq!(left, Duration::from_secs(6));
        assert!(
            retry.waiting("b", at(4)).is_none(),
            "other plugins are not held"
        );
        assert!(retry.waiting("a", at(10)).is_none(), "time to try again");
        assert_eq!(
            retry.failed("a", &problem("again"), at(10)),
            Duration::from_secs(20)
        );
        assert_eq!(retry.waiting("a", at(11)).unwrap().0.message, "again");
        assert_eq!(
            retry.failed("a", &problem("again"), at(30)),
            Duration::from_secs(35),
            "capped"
        );
        retry.succeeded("a");
        assert!(retry.waiting("a", at(31)).is_none());
        assert_eq!(
            retry.failed("a", &problem("new"), at(31)),
            Duration::from_secs(10),
            "counting starts over"
        );
    }

    #[test]
    fn the_memory_of_failures_is_bounded() {
        let retry = RetryBackoff::new(Duration::from_secs(10), Duration::from_secs(10));
        let now = Instant::now();
        for i in 0..=REMEMBERED_FAILURES {
            retry.failed(&format!("p{i}"), &problem("x"), now);
        }
        assert_eq!(retry.entries().len(), REMEMBERED_FAILURES);
        assert!(retry.waiting("p0", now).is_none(), "the oldest went first");
        assert!(
            retry
                .waiting(&format!("p{REMEMBERED_FAILURES}"), now)
                .is_some()
        );
    }

    fn rollout_request() -> RolloutRequest {
        RolloutRequest {
            cluster: kvpilot_sdk::Cluster {
                name: "cache".into(),
                namespace: "shop".into(),
                engine: kvpilot_sdk::Engine::Valkey,
                engine_version: "8.1".into(),
                shards: 1,
                replicas_per_shard: 1,
            },
            members: vec![],
            max_in_flight: 1,
            max_lag_bytes: 0,
            config: kvpilot_sdk::empty_config(),
        }
    }

    /// The counters and histogram counts the metrics text shows for `hook` and `plugin`.
    fn counts(metrics: &Metrics, hook: &str, plugin: &str) -> (bool, bool) {
        let text = metrics.encode();
        let labels = format!("{{hook=\"{hook}\",plugin=\"{plugin}\"}}");
        (
            text.contains(&format!("kvpilot_hook_latency_seconds_count{labels} 1")),
            text.contains(&format!("kvpilot_plugin_failures_total{labels} 1")),
        )
    }

    #[tokio::test]
    async fn calls_are_measured_failures_named_and_fallbacks_marked() {
        let spec: PoliciesSpec =
            serde_norway::from_str("rolloutOrder: {plugin: zone-aware, failurePolicy: Fallback}\n")
                .unwrap();

        // A call that answers: its latency under the plugin that answered, no failure.
        let metrics = Metrics::new();
        let native = NativePolicies::default();
        let policies = ClusterPolicies::new(&native, &metrics, &spec);
        let decided = policies.rollout_step(rollout_request()).await.unwrap();
        assert_eq!(decided.record.fallback_from, None);
        assert_eq!(
            counts(&metrics, "rollout-order", "native:replicas-first"),
            (true, false)
        );

        // The builtin answered for the configured plugin (a fallback): the failure is counted
        // on the plugin the spec names.
        struct FellBack(NativePolicies);
        impl Policies for FellBack {
            async fn select_replica(
                &self,
                request: SelectionRequest,
            ) -> Result<Decided<Selection>, PolicyError> {
                self.0.select_replica(request).await
            }
            async fn schedule_snapshots(
                &self,
                request: ScheduleRequest,
            ) -> Result<Decided<Vec<MemberSchedule>>, PolicyError> {
                self.0.schedule_snapshots(request).await
            }
            async fn rollout_step(
                &self,
                request: RolloutRequest,
            ) -> Result<Decided<Step>, PolicyError> {
                let mut decided = self.0.rollout_step(request).await?;
                decided.record.fallback_from = Some("PolicyPlugin zone-aware: not found".into());
                Ok(decided)
            }
        }
        let metrics = Metrics::new();
        let fell_back = FellBack(NativePolicies::default());
        let policies = ClusterPolicies::new(&fell_back, &metrics, &spec);
        let decided = policies.rollout_step(rollout_request()).await.unwrap();
        assert_eq!(
            decided.record.fallback_from.as_deref(),
            Some("PolicyPlugin zone-aware: not found")
        );
        assert_eq!(
            counts(&metrics, "rollout-order", "zone-aware"),
            (false, true)
        );

        // A failed call: its latency and a failure, both under the plugin the spec names.
        let metrics = Metrics::new();
        let failing = NativePolicies {
            rollout_order_config: r#"{"order": "random"}"#.into(),
            ..NativePolicies::default()
        };
        let policies = ClusterPolicies::new(&failing, &metrics, &spec);
        assert!(policies.rollout_step(rollout_request()).await.is_err());
        assert_eq!(
            counts(&metrics, "rollout-order", "zone-aware"),
            (true, true)
        );
    }
}
