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

/// One hook, bound.
enum Bound {
    /// The configured plugin, its config, and the builtin to fall back on (present when the
    /// failure policy is `Fallback`).
    Plugin {
        plugin: Plugin,
        config: String,
        fallback: Option<Plugin>,
    },
    /// The configured plugin could not be bound (it did not load, lacks the hook, or rejected
    /// its config) and the failure policy is `Fallback`: the builtin answers every call, and
    /// `failure` goes into each decision record as `fallback_from`.
    Unbound { failure: String, builtin: Plugin },
}

/// Who answers a call first.
enum First<'a> {
    /// The configured plugin, with its config.
    Plugin(&'a Plugin, &'a str),
    /// The builtin, because binding failed.
    Builtin(&'a Plugin, &'a str),
}

impl Bound {
    /// Binds `hook` as `setting` says. A bind-time failure is an error under `Fail`; under
    /// `Fallback` the hook is bound to its builtin instead, remembering the failure.
    async fn bind(
        runtime: &PolicyRuntime,
        hook: Hook,
        setting: Option<&HookSetting>,
        preloaded: &BTreeMap<String, Plugin>,
    ) -> Result<Bound, PolicyError> {
        let setting = setting
            .cloned()
            .unwrap_or_else(|| HookSetting::default_for(hook));
        let bound = Self::bind_plugin(runtime, hook, &setting, preloaded).await;
        match (bound, setting.failure) {
            (Ok(plugin), FailurePolicy::Fail) => Ok(Bound::Plugin {
                plugin,
                config: setting.config,
                fallback: None,
            }),
            (Ok(plugin), FailurePolicy::Fallback) => Ok(Bound::Plugin {
                plugin,
                config: setting.config,
                fallback: Some(runtime.load_builtin(hook.default_builtin()).await?),
            }),
            (Err(error), FailurePolicy::Fail) => Err(error),
            (Err(error), FailurePolicy::Fallback) => Ok(Bound::Unbound {
                failure: error.to_string(),
                builtin: runtime.load_builtin(hook.default_builtin()).await?,
            }),
        }
    }

    /// Loads the configured plugin, checks that it exports `hook` and that it accepts its
    /// config.
    async fn bind_plugin(
        runtime: &PolicyRuntime,
        hook: Hook,
        setting: &HookSetting,
        preloaded: &BTreeMap<String, Plugin>,
    ) -> Result<Plugin, PolicyError> {
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
        Ok(plugin)
    }

    fn first(&self) -> First<'_> {
        match self {
            Bound::Plugin { plugin, config, .. } => First::Plugin(plugin, config),
            Bound::Unbound { failure, builtin } => First::Builtin(builtin, failure),
        }
    }

    /// The builtin to ask after `error`, or `error` itself under `FailurePolicy::Fail`.
    fn fallback(&self, error: PolicyError) -> Result<(&Plugin, String), PolicyError> {
        match self {
            Bound::Plugin {
                fallback: Some(builtin),
                ..
            }
            | Bound::Unbound { builtin, .. } => Ok((builtin, error.to_string())),
            Bound::Plugin { fallback: None, .. } => Err(error),
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
    /// is `PolicyError::InvalidConfig`, a plugin without the hook `MissingHook`. Under
    /// `FailurePolicy::Fallback` such a failure binds the hook to its builtin instead, and
    /// every decision of that hook names the failure in `fallback_from`.
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
        let (builtin, failure) = match bound.first() {
            First::Plugin(plugin, config) => {
                request.config.clear();
                request.config.push_str(config);
                match plugin.select(&request).await {
                    Ok(answer) => return Ok(decided(hook, plugin, answer, started, None)),
                    Err(error) => bound.fallback(error)?,
                }
            }
            First::Builtin(builtin, failure) => (builtin, failure.to_string()),
        };
        request.config = kvpilot_sdk::empty_config();
        let answer = builtin.select(&request).await?;
        Ok(decided(hook, builtin, answer, started, Some(failure)))
    }

    async fn schedule_snapshots(
        &self,
        mut request: ScheduleRequest,
    ) -> Result<Decided<Vec<MemberSchedule>>, PolicyError> {
        let hook = Hook::SnapshotSchedule;
        let bound = &self.snapshot_schedule;
        let started = Instant::now();
        let (builtin, failure) = match bound.first() {
            First::Plugin(plugin, config) => {
                request.config.clear();
                request.config.push_str(config);
                match plugin.schedule(&request).await {
                    Ok(answer) => return Ok(decided(hook, plugin, answer, started, None)),
                    Err(error) => bound.fallback(error)?,
                }
            }
            First::Builtin(builtin, failure) => (builtin, failure.to_string()),
        };
        request.config = kvpilot_sdk::empty_config();
        let answer = builtin.schedule(&request).await?;
        Ok(decided(hook, builtin, answer, started, Some(failure)))
    }

    async fn rollout_step(
        &self,
        mut request: RolloutRequest,
    ) -> Result<Decided<Step>, PolicyError> {
        let hook = Hook::RolloutOrder;
        let bound = &self.rollout_order;
        let started = Instant::now();
        let (builtin, failure) = match bound.first() {
            First::Plugin(plugin, config) => {
                request.config.clear();
                request.config.push_str(config);
                match plugin.next(&request).await {
                    Ok(answer) => return Ok(decided(hook, plugin, answer, started, None)),
                    Err(error) => bound.fallback(error)?,
                }
            }
            First::Builtin(builtin, failure) => (builtin, failure.to_string()),
        };
        request.config = kvpilot_sdk::empty_config();
        let answer = builtin.next(&request).await?;
        Ok(decided(hook, builtin, answer, started, Some(failure)))
    }
}
