//! [`Policies`] over wasm plugins, bound to one cluster's settings: which plugin answers each
//! hook, with what config, under what limits and failure policy.

use super::source::BUILTIN_PREFIX;
use super::{
    Decided, DecisionRecord, FailurePolicy, Hook, Limits, Plugin, Policies, PolicyError,
    PolicyRuntime,
};
use kvpilot_sdk::{
    MemberSchedule, RolloutRequest, ScheduleRequest, Selection, SelectionRequest, Step,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;

/// How one hook is answered in a cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct HookSetting {
    /// `builtin:NAME` or a `.wasm` path.
    pub source: String,
    /// The plugin's settings, a JSON object text (`{}` for none).
    pub config: String,
    pub failure: FailurePolicy,
    pub limits: Limits,
}

impl HookSetting {
    /// The hook's builtin default with no config, failing closed.
    pub fn default_for(hook: Hook) -> HookSetting {
        HookSetting {
            source: format!("{BUILTIN_PREFIX}{}", hook.default_builtin()),
            config: kvpilot_sdk::empty_config(),
            failure: FailurePolicy::Fail,
            limits: Limits::default(),
        }
    }
}

/// A cluster's settings for every hook; `None` means the builtin default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicySettings {
    pub replica_selection: Option<HookSetting>,
    pub snapshot_schedule: Option<HookSetting>,
    pub rollout_order: Option<HookSetting>,
}

/// One hook, bound: the loaded plugin, its config, and the builtin to fall back on.
struct Bound {
    plugin: Plugin,
    config: String,
    /// Present when the failure policy is `Fallback`.
    fallback: Option<Plugin>,
}

impl Bound {
    async fn bind(
        runtime: &PolicyRuntime,
        hook: Hook,
        setting: Option<&HookSetting>,
        preloaded: &BTreeMap<String, Plugin>,
    ) -> Result<Bound, PolicyError> {
        let setting = setting
            .cloned()
            .unwrap_or_else(|| HookSetting::default_for(hook));
        let plugin = match preloaded.get(&setting.source) {
            Some(plugin) => plugin.clone(),
            None => runtime.load(&setting.source).await?,
        }
        .with_limits(setting.limits);
        if !plugin.exports(hook) {
            return Err(PolicyError::MissingHook {
                plugin: plugin.name().to_string(),
                hook,
            });
        }
        plugin.validate_config(&setting.config).await?;
        let fallback = match setting.failure {
            FailurePolicy::Fail => None,
            FailurePolicy::Fallback => Some(runtime.load_builtin(hook.default_builtin()).await?),
        };
        Ok(Bound {
            plugin,
            config: setting.config,
            fallback,
        })
    }

    /// The builtin to ask after `error`, or `error` itself under `FailurePolicy::Fail`.
    fn fallback(&self, error: PolicyError) -> Result<(&Plugin, String), PolicyError> {
        match &self.fallback {
            Some(plugin) => Ok((plugin, error.to_string())),
            None => Err(error),
        }
    }
}

fn decided<T: Serialize>(
    hook: Hook,
    plugin: &Plugin,
    answer: T,
    started: Instant,
    fallback_from: Option<String>,
) -> Decided<T> {
    let record = DecisionRecord {
        hook,
        plugin: plugin.name().to_string(),
        sha256: plugin.sha256_hex(),
        answer: serde_json::to_string(&answer).unwrap_or_default(),
        latency: started.elapsed(),
        fallback_from,
    };
    Decided { answer, record }
}

/// The wasm-backed [`Policies`] of one cluster.
pub struct WasmPolicies {
    replica_selection: Bound,
    snapshot_schedule: Bound,
    rollout_order: Bound,
}

impl WasmPolicies {
    /// Loads every hook's plugin and checks its config (`validate-config`); a rejected config
    /// is `PolicyError::InvalidConfig`, a plugin without the hook `MissingHook`.
    pub async fn bind(
        runtime: &PolicyRuntime,
        settings: &PolicySettings,
    ) -> Result<WasmPolicies, PolicyError> {
        Self::bind_with(runtime, settings, &BTreeMap::new()).await
    }

    /// [`WasmPolicies::bind`], taking the plugins whose `HookSetting::source` is a key of
    /// `preloaded` from there (e.g. `PolicyPlugin`s the operator loaded from a ConfigMap)
    /// instead of loading the source.
    pub async fn bind_with(
        runtime: &PolicyRuntime,
        settings: &PolicySettings,
        preloaded: &BTreeMap<String, Plugin>,
    ) -> Result<WasmPolicies, PolicyError> {
        Ok(WasmPolicies {
            replica_selection: Bound::bind(
                runtime,
                Hook::ReplicaSelection,
                settings.replica_selection.as_ref(),
                preloaded,
            )
            .await?,
            snapshot_schedule: Bound::bind(
                runtime,
                Hook::SnapshotSchedule,
                settings.snapshot_schedule.as_ref(),
                preloaded,
            )
            .await?,
            rollout_order: Bound::bind(
                runtime,
                Hook::RolloutOrder,
                settings.rollout_order.as_ref(),
                preloaded,
            )
            .await?,
        })
    }
}

impl Policies for WasmPolicies {
    async fn select_replica(
        &self,
        mut request: SelectionRequest,
    ) -> Result<Decided<Selection>, PolicyError> {
        let hook = Hook::ReplicaSelection;
        let bound = &self.replica_selection;
        let started = Instant::now();
        request.config.clone_from(&bound.config);
        match bound.plugin.select(&request).await {
            Ok(answer) => Ok(decided(hook, &bound.plugin, answer, started, None)),
            Err(error) => {
                let (builtin, failure) = bound.fallback(error)?;
                request.config = kvpilot_sdk::empty_config();
                let answer = builtin.select(&request).await?;
                Ok(decided(hook, builtin, answer, started, Some(failure)))
            }
        }
    }

    async fn schedule_snapshots(
        &self,
        mut request: ScheduleRequest,
    ) -> Result<Decided<Vec<MemberSchedule>>, PolicyError> {
        let hook = Hook::SnapshotSchedule;
        let bound = &self.snapshot_schedule;
        let started = Instant::now();
        request.config.clone_from(&bound.config);
        match bound.plugin.schedule(&request).await {
            Ok(answer) => Ok(decided(hook, &bound.plugin, answer, started, None)),
            Err(error) => {
                let (builtin, failure) = bound.fallback(error)?;
                request.config = kvpilot_sdk::empty_config();
                let answer = builtin.schedule(&request).await?;
                Ok(decided(hook, builtin, answer, started, Some(failure)))
            }
        }
    }

    async fn rollout_step(
        &self,
        mut request: RolloutRequest,
    ) -> Result<Decided<Step>, PolicyError> {
        let hook = Hook::RolloutOrder;
        let bound = &self.rollout_order;
        let started = Instant::now();
        request.config.clone_from(&bound.config);
        match bound.plugin.next(&request).await {
            Ok(answer) => Ok(decided(hook, &bound.plugin, answer, started, None)),
            Err(error) => {
                let (builtin, failure) = bound.fallback(error)?;
                request.config = kvpilot_sdk::empty_config();
                let answer = builtin.next(&request).await?;
                Ok(decided(hook, builtin, answer, started, Some(failure)))
            }
        }
    }
}
