//! The KvCluster controller: validate → build → apply → observe/decide/act (the shared
//! [`Reconciler`]) → status, plus an Event for every decision and action.
//!
//! No finalizer: every object a KvCluster needs carries a controller owner reference, so the
//! garbage collector deletes them with it, and nothing outside the API needs cleaning up.

use super::access;
use super::apply;
use super::credentials;
use super::metrics::{BEAT_INTERVAL, Health, Metrics, RolloutTracker};
use super::platform::KubernetesPlatform;
use super::policies::{self, ClusterPolicies, PluginProblem, RetryBackoff};
use super::services::member_host;
use super::{LABEL_CLUSTER, LABEL_SHARD, desired_objects, triggers};
use crate::api::{KvCluster, KvClusterStatus, PolicyPlugin, StatusContext, validate_spec};
use crate::decide::Settings;
use crate::leadership::{Alone, Leadership};
use crate::observe::{Access, Clients};
use crate::policy::{
    FailurePolicy, HookProblem, Policies, PolicyRuntime, WasmPolicies, retry, text,
};
use crate::reconcile::Reconciler;
use crate::status::{ClusterStatus, Condition, MemberStatus};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long an invalid spec waits before it is looked at again (a spec change requeues at
/// once through the watch).
const INVALID_SPEC_REQUEUE: Duration = Duration::from_secs(300);
/// Requeue after an unexpected error.
const ERROR_REQUEUE: Duration = Duration::from_secs(5);
/// The condition saying that a `spec.storage` change could not be applied.
pub const STORAGE_CONDITION: &str = "StorageChangeBlocked";
/// The condition saying that a `spec.shards` change of a live cluster is not applied.
pub const SHARDS_CONDITION: &str = "ShardsChangeBlocked";
/// Kubernetes caps an Event note at 1 kB.
const MAX_NOTE_BYTES: usize = 1024;
/// A status that differs only in volatile fields (replication offsets, which move with every
/// write) is written at most this often: each write costs an API call and a watch event.
const VOLATILE_STATUS_REFRESH: Duration = Duration::from_secs(30);

/// The error of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("KvCluster {0} has no namespace")]
    NoNamespace(String),
    #[error("KvCluster {cluster}: {action}: {source}")]
    Kube {
        cluster: String,
        action: &'static str,
        #[source]
        source: kube::Error,
    },
}

/// One cluster's state that survives between reconciles: the reconciler (member connections,
/// failure-detection counter, policy backoff) and the bound policies. All of it may be lost
/// (an operator restart): it is rebuilt from what is observed.
struct ClusterState {
    reconciler: Reconciler<KubernetesPlatform>,
    /// The bound policies and what they were bound from.
    bound: Option<BoundPolicies>,
    /// When this operator last wrote the cluster's status.
    last_status_write: Option<Instant>,
    rollouts: RolloutTracker,
    /// The storage drift last reported (an Event when it changes, a condition always).
    storage_drift: Option<String>,
    /// `spec.shards` and the shard count the live cluster keeps, while they differ.
    shards_blocked: Option<(u32, u32)>,
}

/// A cluster's policies as bound for the key of [`policies::Resolved`].
struct BoundPolicies {
    key: String,
    policies: WasmPolicies,
    /// The hooks that could not be bound, as last reported (an Event each, once).
    problems: Vec<HookProblem>,
    /// Binds in a row of this key that left a hook unusable.
    failures: u32,
    /// When to bind the unusable hooks again (a plugin may have been fixed in place, or its
    /// `validate-config` timed out); `None` when every hook is bound.
    retry_at: Option<Instant>,
}

/// A cluster by (namespace, name).
type ClusterKey = (String, String);
type SharedState = Arc<tokio::sync::Mutex<ClusterState>>;
/// A cluster's state and the uid of the KvCluster it was made for: a KvCluster deleted and
/// created again under the same name is another cluster and starts afresh (also when the
/// watch missed the deletion while it was relisting).
type Tracked = (Option<String>, SharedState);

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub runtime: PolicyRuntime,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    /// The port members serve on (6379; tests use another).
    pub member_port: u16,
    /// Whether the controller loop is alive (`/healthz`).
    pub health: Arc<Health>,
    /// Failed PolicyPlugin loads, shared by every cluster and the PolicyPlugin controller.
    pub plugin_retry: RetryBackoff,
    /// Asked right before every write: applying objects, moving credentials, each step of a
    /// plan, status and events (rule 9).
    pub leadership: Arc<dyn Leadership>,
    clusters: tokio::sync::Mutex<HashMap<ClusterKey, Tracked>>,
}

impl Context {
    pub fn new(
        client: Client,
        runtime: PolicyRuntime,
        metrics: Arc<Metrics>,
        settings: Settings,
        member_port: u16,
    ) -> Context {
        let reporter = Reporter {
            controller: "kvpilot".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            runtime,
            metrics,
            settings,
            member_port,
            health: Arc::new(Health::default()),
            plugin_retry: RetryBackoff::default(),
            leadership: Arc::new(Alone),
            clusters: Default::default(),
        }
    }

    /// The same context, acting only while `leadership` allows.
    pub fn with_leadership(mut self, leadership: Arc<dyn Leadership>) -> Context {
        self.leadership = leadership;
        self
    }

    /// The same context, waiting `base` (doubling up to `max`) before loading a failed
    /// PolicyPlugin again.
    pub fn with_plugin_retry(mut self, base: Duration, max: Duration) -> Context {
        self.plugin_retry = RetryBackoff::new(base, max);
        self
    }

    async fn state(
        &self,
        kc: &KvCluster,
        namespace: &str,
    ) -> Arc<tokio::sync::Mutex<ClusterState>> {
        let key = (namespace.to_string(), kc.name_any());
        let uid = kc.uid();
        let mut clusters = self.clusters.lock().await;
        if let Some((tracked_uid, s)) = clusters.get(&key)
            && *tracked_uid == uid
        {
            return s.clone();
        }
        let platform = KubernetesPlatform::new(
            self.client.clone(),
            namespace,
            &kc.name_any(),
            kc.spec.shards,
            kc.spec.replicas + 1,
            self.member_port,
        );
        let mut reconciler = Reconciler::new(
            &kc.name_any(),
            namespace,
            platform,
            // Configured from the Secrets at the start of every reconcile.
            Clients::with_access(access::dialect(kc), Access::default()),
            self.settings.clone(),
        );
        reconciler.leadership = self.leadership.clone();
        // What the last operator recorded of each member (history, role, pending fences):
        // all there is to know of a member that is down or loading now (rules 2 and 7).
        reconciler.status.members = kc
            .status
            .iter()
            .flat_map(|s| &s.members)
            .map(|m| MemberStatus::remembered(&m.name, m.last_known.clone()))
            .collect();
        let state = Arc::new(tokio::sync::Mutex::new(ClusterState {
            reconciler,
            bound: None,
            last_status_write: None,
            rollouts: RolloutTracker::default(),
            storage_drift: None,
            shards_blocked: None,
        }));
        clusters.insert(key, (uid, state.clone()));
        state
    }

    /// Drops the state of a deleted cluster (its member connections go with it).
    fn forget(self: &Arc<Self>, kc: &KvCluster) {
        let Some(namespace) = kc.namespace() else {
            return;
        };
        let key = (namespace, kc.name_any());
        let ctx = self.clone();
        tokio::spawn(async move {
            ctx.clusters.lock().await.remove(&key);
        });
    }

    async fn publish(&self, kc: &KvCluster, warning: bool, reason: &str, message: &str) {
        self.publish_about(kc, warning, reason, message, None).await;
    }

    /// Publishes an Event about `kc`; `related` is the object the event is about besides it
    /// (kube's recorder merges events with the same reason and related object into a series,
    /// so distinct objects keep distinct events).
    async fn publish_about(
        &self,
        kc: &KvCluster,
        warning: bool,
        reason: &str,
        message: &str,
        related: Option<ObjectReference>,
    ) {
        if self.leadership.check().is_err() {
            return;
        }
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.chars().take(128).collect(),
            // It may quote a plugin or a user: cleaned and cut (rule 10).
            note: Some(text::clean(message, MAX_NOTE_BYTES)),
            action: reason.chars().take(128).collect(),
            secondary: related,
        };
        if let Err(e) = self.recorder.publish(&event, &kc.object_ref(&())).await {
            tracing::warn!(cluster = %kc.name_any(), error = %e, "cannot publish an event");
        }
    }
}

/// One reconcile of one KvCluster.
pub async fn reconcile(kc: Arc<KvCluster>, ctx: Arc<Context>) -> Result<Action, OperatorError> {
    let started = Instant::now();
    let result = {
        let _tracked = ctx.health.reconciling(format!(
            "{}/{}",
            kc.namespace().unwrap_or_default(),
            kc.name_any()
        ));
        reconcile_inner(&kc, &ctx).await
    };
    ctx.health.beat();
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    result
}

async fn reconcile_inner(kc: &KvCluster, ctx: &Context) -> Result<Action, OperatorError> {
    let name = kc.name_any();
    let namespace = kc
        .namespace()
        .ok_or_else(|| OperatorError::NoNamespace(name.clone()))?;
    if kc.metadata.deletion_timestamp.is_some() {
        // Owner references delete the objects; forget the connections.
        ctx.clusters.lock().await.remove(&(namespace, name));
        return Ok(Action::await_change());
    }
    // Rule 9: nothing below is done by an operator that does not lead (it may have been
    // paused past its lease); each write further down asks again.
    if let Err(e) = ctx.leadership.check() {
        tracing::info!(cluster = %name, reason = %e, "not reconciling");
        return Ok(Action::requeue(ERROR_REQUEUE));
    }
    let state = ctx.state(kc, &namespace).await;
    let mut state = state.lock().await;
    let state = &mut *state;

    // The shard count of a live cluster stays as it is (resharding is not built): the members
    // keep being run, failed over and rolled out as the shards they are.
    let live = live_shards(&ctx.client, &namespace, &name).await?;
    let blocked = live
        .filter(|&n| n != kc.spec.shards)
        .map(|n| (kc.spec.shards, n));
    if blocked.is_some() && blocked != state.shards_blocked {
        // Said once per change; the condition keeps saying it.
        let mut report = ClusterStatus::default();
        shards_condition(&mut report, blocked);
        if let Some(c) = report.conditions.first() {
            ctx.publish(kc, true, "ShardsChangeNotApplied", &c.message)
                .await;
        }
    }
    state.shards_blocked = blocked;
    let pinned;
    let kc = match state.shards_blocked {
        Some((_, live)) => {
            let mut k = kc.clone();
            k.spec.shards = live;
            pinned = k;
            &pinned
        }
        None => kc,
    };

    // validate → build: an invalid spec changes nothing.
    let objects = match validate_spec(&kc.spec)
        .map_err(|e| e.to_string())
        .and_then(|()| desired_objects(kc).map_err(|e| e.to_string()))
    {
        Ok(o) => o,
        Err(message) => {
            return halted(ctx, kc, &namespace, state, "InvalidSpec", &message)
                .await
                .map(|()| Action::requeue(INVALID_SPEC_REQUEUE));
        }
    };
    if ctx.leadership.check().is_err() {
        return Ok(Action::requeue(ERROR_REQUEUE));
    }
    let applied = apply::apply_all(&ctx.client, &namespace, &name, &objects).await;
    report_applied(ctx, kc, state, &applied).await;

    // Credentials and TLS, read fresh: a Secret created after the KvCluster or rotated since
    // the last reconcile takes effect now.
    match access::read(&ctx.client, kc, &namespace).await {
        Ok(member_access) => {
            let warnings = credentials::sync(
                &ctx.client,
                kc,
                &namespace,
                &state.reconciler,
                member_access,
            )
            .await;
            for warning in warnings {
                ctx.publish(kc, true, "CredentialsRecord", &warning).await;
            }
        }
        Err(problem) => {
            let message = format!("{problem}; waiting for it (pods cannot start without it)");
            return halted(ctx, kc, &namespace, state, "SecretUnavailable", &message)
                .await
                .map(|()| Action::requeue(ERROR_REQUEUE));
        }
    }

    // Policies: (re)bind when the spec's policies or a referenced PolicyPlugin changed, and
    // on a backoff while a hook cannot be bound. Each hook is bound on its own: one that
    // cannot be bound fails (or falls back) alone, and the others keep working
    // (docs/architecture.md, rule 11).
    let resolved = policies::resolve(
        &ctx.client,
        &ctx.recorder,
        &ctx.runtime,
        &kc.spec,
        &ctx.plugin_retry,
    )
    .await;
    let now = Instant::now();
    let previous = state.bound.take().filter(|b| b.key == resolved.key);
    let bound = match previous {
        Some(b) if b.retry_at.is_none_or(|at| now < at) => b,
        previous => {
            let policies = resolved.bind(&ctx.runtime).await;
            state.reconciler.policies_rebound();
            let problems = policies.bind_problems();
            let failures = match (&previous, problems.is_empty()) {
                (_, true) => 0,
                (Some(b), false) => b.failures.saturating_add(1),
                (None, false) => 1,
            };
            let wait = retry::backoff(ctx.settings.policy_retry, failures);
            let reported = previous.map(|b| b.problems).unwrap_or_default();
            // Said once per change: status keeps saying it, and each fallback decision
            // repeats it in `fallbackFrom`.
            for p in problems.iter().filter(|p| !reported.contains(p)) {
                if p.failure == FailurePolicy::Fail {
                    ctx.metrics.plugin_failure(p.hook.as_str(), &p.plugin);
                }
                let (reason, message) = p.event(wait);
                ctx.publish(kc, true, reason, &message).await;
            }
            BoundPolicies {
                key: resolved.key,
                policies,
                retry_at: (!problems.is_empty()).then(|| now + wait),
                problems,
                failures,
            }
        }
    };
    let bound = &*state.bound.insert(bound);
    let policies = ClusterPolicies::new(&bound.policies, &ctx.metrics, &kc.spec.policies);

    // observe → decide → act, shared with the local platform.
    state
        .reconciler
        .platform
        .resize(kc.spec.shards, kc.spec.replicas + 1);
    let outcome = state.reconciler.reconcile(&kc.spec, &policies).await;
    ctx.metrics
        .observe_plan(&namespace, &name, &outcome.plan, outcome.error.is_none());
    let report = &state.reconciler.status;
    if state.rollouts.observe(
        report.members.iter().map(|m| m.revision.as_deref()),
        &report.desired_revision,
    ) {
        ctx.metrics.rollout_completed(&namespace, &name);
    }
    for e in std::mem::take(&mut state.reconciler.status.events) {
        ctx.publish(kc, e.kind == "Warning", &e.reason, &e.message)
            .await;
    }
    for note in state.reconciler.clients.take_notes() {
        ctx.publish(kc, false, "CredentialsChanged", &note).await;
    }
    // The reconcile rebuilt the conditions: the storage and shards ones go back on.
    storage_condition(&mut state.reconciler.status, state.storage_drift.as_deref());
    shards_condition(&mut state.reconciler.status, state.shards_blocked);
    patch_status(ctx, kc, &namespace, state).await?;
    let requeue = if applied.errors.is_empty() {
        outcome.plan.requeue_after
    } else {
        outcome.plan.requeue_after.min(ERROR_REQUEUE)
    };
    Ok(Action::requeue(requeue))
}

/// Says what an apply pass did besides applying: an Event for each recreated or deleted
/// object, a Warning for each failed call (the reconcile goes on with what could be applied)
/// and, when it first appears or changes, for a storage change that could not be applied,
/// which also sets the `StorageChangeBlocked` condition.
async fn report_applied(
    ctx: &Context,
    kc: &KvCluster,
    state: &mut ClusterState,
    applied: &apply::Applied,
) {
    for change in &applied.changes {
        ctx.publish_about(
            kc,
            false,
            change.reason,
            &change.message,
            Some(change.object.clone()),
        )
        .await;
    }
    for e in &applied.errors {
        tracing::warn!(cluster = %kc.name_any(), error = %e, "apply failed");
        let object = ObjectReference {
            kind: Some(e.kind.clone()),
            namespace: Some(e.namespace.clone()),
            name: Some(e.name.clone()),
            ..Default::default()
        };
        ctx.publish_about(kc, true, "ApplyFailed", &e.to_string(), Some(object))
            .await;
    }
    let drift = (!applied.storage_drift.is_empty()).then(|| {
        applied
            .storage_drift
            .iter()
            .map(apply::StorageDrift::message)
            .collect::<Vec<_>>()
            .join(" ")
    });
    if drift.is_some() && drift != state.storage_drift {
        let message = drift.as_deref().unwrap_or_default();
        tracing::warn!(cluster = %kc.name_any(), %message, "storage change not applied");
        ctx.publish(kc, true, "StorageChangeNotApplied", message)
            .await;
    }
    state.storage_drift = drift;
    storage_condition(&mut state.reconciler.status, state.storage_drift.as_deref());
}

/// `StorageChangeBlocked`: true while `spec.storage` differs from what the StatefulSets have.
fn storage_condition(status: &mut ClusterStatus, drift: Option<&str>) {
    match drift {
        Some(message) => set_condition(
            status,
            STORAGE_CONDITION,
            true,
            "ImmutableVolumeClaimTemplates",
            message,
        ),
        None => set_condition(status, STORAGE_CONDITION, false, "AsDesired", ""),
    }
}

/// The shard count the cluster's live StatefulSets and pods have (highest shard label + 1),
/// `None` before any exists.
async fn live_shards(
    client: &Client,
    namespace: &str,
    cluster: &str,
) -> Result<Option<u32>, OperatorError> {
    let selector = ListParams::default().labels(&format!("{LABEL_CLUSTER}={cluster}"));
    let kube_err = |action, source| OperatorError::Kube {
        cluster: cluster.to_string(),
        action,
        source,
    };
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let sts = statefulsets
        .list(&selector)
        .await
        .map_err(|e| kube_err("list statefulsets", e))?;
    let pods = pods
        .list(&selector)
        .await
        .map_err(|e| kube_err("list pods", e))?;
    let labels = sts
        .items
        .iter()
        .map(|s| s.labels())
        .chain(pods.items.iter().map(|p| p.labels()));
    Ok(labels
        .filter_map(|l| l.get(LABEL_SHARD)?.parse::<u32>().ok())
        .max()
        .map(|m| m.saturating_add(1)))
}

/// `ShardsChangeBlocked`: true while `spec.shards` (`.0`) differs from the shards the cluster
/// runs (`.1`).
fn shards_condition(status: &mut ClusterStatus, blocked: Option<(u32, u32)>) {
    match blocked {
        Some((wanted, live)) => set_condition(
            status,
            SHARDS_CONDITION,
            true,
            "ReshardingNotSupported",
            &format!(
                "spec.shards asks for {wanted} shards but the cluster runs {live}: changing the \
                 shard count of a live cluster (adding or removing shards, moving slots) is \
                 not supported yet, so it keeps running {live} shards (failover and rollouts \
                 go on). Set spec.shards back to {live}, or create a new KvCluster and move \
                 the data."
            ),
        ),
        None => set_condition(status, SHARDS_CONDITION, false, "AsDesired", ""),
    }
}

/// Requeues after an error; the error is logged.
pub fn error_policy(kc: Arc<KvCluster>, error: &OperatorError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(cluster = %kc.name_any(), error = %error, "reconcile failed");
    Action::requeue(ERROR_REQUEUE)
}

/// Reconciles a PolicyPlugin on its own (so plugins no cluster uses yet still get a status).
pub async fn reconcile_plugin(
    pp: Arc<PolicyPlugin>,
    ctx: Arc<Context>,
) -> Result<Action, PluginProblem> {
    // Rule 9: the PolicyPlugin status is written by the leader only.
    if ctx.leadership.check().is_err() {
        return Ok(Action::requeue(ERROR_REQUEUE));
    }
    match policies::load_and_record(
        &ctx.client,
        &ctx.recorder,
        &ctx.runtime,
        &pp,
        &ctx.plugin_retry,
    )
    .await
    {
        Ok(_) => Ok(Action::await_change()),
        Err(problem) => {
            tracing::warn!(error = %problem, "PolicyPlugin refused");
            // A ConfigMap source is not watched: look again now and then.
            Ok(Action::requeue(INVALID_SPEC_REQUEUE))
        }
    }
}

fn plugin_error_policy(pp: Arc<PolicyPlugin>, error: &PluginProblem, _: Arc<Context>) -> Action {
    tracing::warn!(plugin = %pp.name_any(), %error, "PolicyPlugin reconcile failed");
    Action::requeue(ERROR_REQUEUE)
}

/// The reconcile stops before touching members: Ready and Progressing say why (`reason`), a
/// Warning Event too, and the status is written.
async fn halted(
    ctx: &Context,
    kc: &KvCluster,
    namespace: &str,
    state: &mut ClusterState,
    reason: &str,
    message: &str,
) -> Result<(), OperatorError> {
    let status = &mut state.reconciler.status;
    set_condition(status, "Ready", false, reason, message);
    set_condition(status, "Progressing", false, reason, message);
    ctx.publish(kc, true, reason, message).await;
    patch_status(ctx, kc, namespace, state).await
}

/// Writes the KvCluster status (status subresource) for the reconciler's report in `state`,
/// unless only volatile fields changed since the status `kc` carries and it was written
/// recently.
async fn patch_status(
    ctx: &Context,
    kc: &KvCluster,
    namespace: &str,
    state: &mut ClusterState,
) -> Result<(), OperatorError> {
    let last_write = &mut state.last_status_write;
    let mut status = KvClusterStatus::from_report(
        &state.reconciler.status,
        &StatusContext {
            generation: kc.metadata.generation,
            previous: kc.status.as_ref(),
            now: Timestamp::now(),
        },
    );
    if let Some(cluster) = status.cluster.as_mut() {
        // The names members announce (`cluster-announce-hostname`) rather than pod IPs, which
        // change with every new pod.
        cluster.seeds = cluster
            .shards
            .iter()
            .flat_map(|s| &s.nodes)
            .map(|n| format!("{}:{}", member_host(kc, &n.member), ctx.member_port))
            .collect();
    }
    let now = Instant::now();
    if !status_write_needed(kc.status.as_ref(), &status, *last_write, now)
        || ctx.leadership.check().is_err()
    {
        return Ok(());
    }
    let mut value = serde_json::to_value(&status).unwrap_or_default();
    // A merge patch keeps fields it does not mention: clear the ones now unset.
    if let Some(map) = value.as_object_mut() {
        for key in [
            "primary",
            "members",
            "currentRevision",
            "updateRevision",
            "lastDecisions",
            "cluster",
        ] {
            map.entry(key).or_insert(serde_json::Value::Null);
        }
    }
    let api: Api<KvCluster> = Api::namespaced(ctx.client.clone(), namespace);
    api.patch_status(
        &kc.name_any(),
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": value })),
    )
    .await
    .map_err(|source| OperatorError::Kube {
        cluster: kc.name_any(),
        action: "patch status",
        source,
    })?;
    *last_write = Some(now);
    Ok(())
}

/// Whether `next` must be written over `previous`: always when a field other than the
/// volatile ones (member offsets) differs; for volatile changes only, once
/// [`VOLATILE_STATUS_REFRESH`] has passed since the last write.
fn status_write_needed(
    previous: Option<&KvClusterStatus>,
    next: &KvClusterStatus,
    last_write: Option<Instant>,
    now: Instant,
) -> bool {
    let Some(previous) = previous else {
        return true;
    };
    if previous == next {
        return false;
    }
    let without_volatile = |s: &KvClusterStatus| {
        let mut s = s.clone();
        for m in &mut s.members {
            m.offset = 0;
            if let Some(known) = m.last_known.as_mut() {
                known.history.offset = 0;
                known.keys = 0;
            }
        }
        s
    };
    if without_volatile(previous) != without_volatile(next) {
        return true;
    }
    last_write.is_none_or(|at| now.duration_since(at) >= VOLATILE_STATUS_REFRESH)
}

/// Sets (or adds) condition `kind` on the report.
fn set_condition(status: &mut ClusterStatus, kind: &str, on: bool, reason: &str, message: &str) {
    let condition = Condition {
        kind: kind.to_string(),
        status: on,
        reason: reason.to_string(),
        message: text::clean(message, crate::status::CONDITION_MESSAGE_BYTES),
    };
    match status.conditions.iter_mut().find(|c| c.kind == kind) {
        Some(c) => *c = condition,
        None => status.conditions.push(condition),
    }
}

/// Where the operator watches.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// Only this namespace's KvClusters (all namespaces when `None`).
    pub namespace: Option<String>,
}

fn api<K>(client: &Client, scope: &Scope) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    match &scope.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the KvCluster and PolicyPlugin controllers until a shutdown signal.
///
/// The KvCluster and PolicyPlugin watches pass only spec changes (see [`triggers`]): the
/// reconciles' own status patches must not start the next reconcile. Owned objects and Pods
/// trigger on every change, since their status is what a reconcile reads.
pub async fn run(ctx: Arc<Context>, scope: Scope) {
    let client = ctx.client.clone();
    let owned = watcher::Config::default().labels(LABEL_CLUSTER);
    let (store, writer) = reflector::store::<KvCluster>();
    let forget = ctx.clone();
    let cluster_events = watcher(
        api::<KvCluster>(&client, &scope),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writer)
    .inspect(move |event| {
        // Without a finalizer, the watch is the only place that sees a cluster go: drop its
        // member connections and state then.
        if let Ok(watcher::Event::Delete(kc)) = event {
            forget.forget(kc);
        }
    });
    let plugin_events = watcher(
        Api::<PolicyPlugin>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff();
    let users = store.clone();
    let clusters =
        Controller::for_stream(triggers::generation_changes(cluster_events, false), store)
            .owns(api::<StatefulSet>(&client, &scope), owned.clone())
            .owns(api::<Service>(&client, &scope), owned.clone())
            .owns(api::<PodDisruptionBudget>(&client, &scope), owned.clone())
            .owns(api::<ConfigMap>(&client, &scope), owned.clone())
            .watches(api::<Pod>(&client, &scope), owned, |pod| {
                triggers::pod_cluster(&pod)
            })
            // A plugin's spec change or deletion requeues every cluster that names it.
            .watches_stream(
                triggers::generation_changes(plugin_events, true),
                move |pp| triggers::plugin_users(&users.state(), &pp),
            )
            .shutdown_on_signal()
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|result| async move {
                match result {
                    Ok((obj, _)) => tracing::debug!(cluster = %obj, "reconciled"),
                    Err(e) => tracing::warn!(error = %e, "controller"),
                }
            });
    let (plugin_store, plugin_writer) = reflector::store::<PolicyPlugin>();
    let plugin_changes = watcher(
        Api::<PolicyPlugin>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(plugin_writer);
    let plugins = Controller::for_stream(
        triggers::generation_changes(plugin_changes, false),
        plugin_store,
    )
    .shutdown_on_signal()
    .run(reconcile_plugin, plugin_error_policy, ctx.clone())
    .for_each(|result| async move {
        if let Err(e) = result {
            tracing::warn!(error = %e, "policy plugin controller");
        }
    });
    // The loop beats while it runs; `/healthz` fails once it stops.
    let health = ctx.health.clone();
    let beat = async move {
        let mut tick = tokio::time::interval(BEAT_INTERVAL);
        loop {
            tick.tick().await;
            health.beat();
        }
    };
    tokio::select! {
        _ = futures::future::join(clusters, plugins) => {}
        _ = beat => {}
    }
    ctx.health.stopped();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::MemberState;

    fn status(offset: u64, ready: bool) -> KvClusterStatus {
        KvClusterStatus {
            primary: Some("cache-s0-0".into()),
            members: vec![MemberState {
                name: "cache-s0-0".into(),
                role: "primary".into(),
                revision: Some("r1".into()),
                ready,
                offset,
                last_snapshot_time: None,
                last_snapshot_result: None,
                snapshot_schedule: None,
                next_snapshot_time: None,
                snapshot_due: false,
                snapshot_retrying: false,
                last_known: None,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn offsets_alone_are_written_at_most_every_refresh_interval() {
        let t0 = Instant::now();
        let just_written = Some(t0);
        // Nothing stored yet, or a real change: written.
        assert!(status_write_needed(
            None,
            &status(1, true),
            just_written,
            t0
        ));
        assert!(status_write_needed(
            Some(&status(1, true)),
            &status(1, false),
            just_written,
            t0
        ));
        // Unchanged: never written.
        assert!(!status_write_needed(
            Some(&status(1, true)),
            &status(1, true),
            None,
            t0
        ));
        // Only the offset moved: not until the refresh interval has passed.
        let moved = status(99, true);
        assert!(!status_write_needed(
            Some(&status(1, true)),
            &moved,
            just_written,
            t0 + Duration::from_secs(1)
        ));
        assert!(status_write_needed(
            Some(&status(1, true)),
            &moved,
            just_written,
            t0 + VOLATILE_STATUS_REFRESH
        ));
        // The recorded offset and key count are volatile too; the recorded role is not.
        let with_known = |offset: u64, role| {
            let mut s = status(1, true);
            s.members[0].last_known = Some(crate::observe::LastKnown {
                role,
                history: crate::observe::History {
                    replid: "r1".into(),
                    offset,
                    ..Default::default()
                },
                keys: offset,
                started_unix: None,
                fence_pending: false,
            });
            s
        };
        let primary = crate::observe::KnownRole::Primary;
        assert!(!status_write_needed(
            Some(&with_known(10, primary)),
            &with_known(99, primary),
            just_written,
            t0 + Duration::from_secs(1)
        ));
        assert!(status_write_needed(
            Some(&with_known(10, primary)),
            &with_known(10, crate::observe::KnownRole::Replica),
            just_written,
            t0 + Duration::from_secs(1)
        ));
        // This operator never wrote it (restart): written.
        assert!(status_write_needed(
            Some(&status(1, true)),
            &moved,
            None,
            t0
        ));
    }
}
