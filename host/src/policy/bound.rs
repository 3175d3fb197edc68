//! [`Policies`] over wasm plugins, bound to one cluster's settings: which plugin answers each
//! hook, with what config, under what limits and failure policy.

use super::source::BUILTIN_PREFIX;
use super::{
    Decided, DecisionRecord, FailurePolicy, Hook, HookProblem, Limits, Plugin, Policies,
    PolicyError, PolicyRuntime,
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
    /// The configured plugin could not be bound and the failure policy is `Fail`: every call
    /// of this hook fails with this error (a `PolicyError::Unbound`), and only this hook's
    /// (docs/architecture.md, rule 11: one hook's broken plugin never stops another hook).
    Broken(PolicyError),
}

/// Who answers a call first.
enum First<'a> {
    /// The configured plugin, with its config.
    Plugin(&'a Plugin, &'a str),
    /// The builtin, because binding failed.
    Builtin(&'a Plugin, &'a str),
    /// Nobody: binding failed under `Fail`.
    Broken(&'a PolicyError),
}

impl Bound {
    /// Binds `hook` as `setting` says. A bind-time failure leaves the hook `Broken` under
    /// `Fail`; under `Fallback` the hook is bound to its builtin instead, remembering the
    /// failure. Either way the failure is returned as a [`HookProblem`] for status.
    async fn bind(
        runtime: &PolicyRuntime,
        hook: Hook,
        setting: Option<&HookSetting>,
        preloaded: &Preloaded,
    ) -> (Bound, Option<HookProblem>) {
        let setting = setting
            .cloned()
            .unwrap_or_else(|| HookSetting::default_for(hook));
        // The reason goes to status and events: cleaned and cut (rule 10).
        let bound = Self::bind_plugin(runtime, hook, &setting, preloaded)
            .await
            .map_err(|message| super::text::clean(&message, super::text::MESSAGE_BYTES));
        let broken = |message: String| {
            Bound::Broken(PolicyError::Unbound {
                plugin: setting.source.clone(),
                hook,
                message,
            })
        };
        let problem = |message: &str| HookProblem {
            hook,
            plugin: setting.source.clone(),
            failure: setting.failure,
            message: message.to_string(),
        };
        match (bound, setting.failure) {
            (Ok(plugin), FailurePolicy::Fail) => (
                Bound::Plugin {
                    plugin,
                    config: setting.config,
                    fallback: None,
                },
                None,
            ),
            (Ok(plugin), FailurePolicy::Fallback) => {
                match runtime.load_builtin(hook.default_builtin()).await {
                    Ok(builtin) => (
                        Bound::Plugin {
                            plugin,
                            config: setting.config,
                            fallback: Some(builtin),
                        },
                        None,
                    ),
                    // The embedded builtins always load; if one did not, the hook cannot
                    // honour `Fallback` and fails like `Fail`.
                    Err(e) => {
                        let message = e.to_string();
                        let problem = problem(&message);
                        (broken(message), Some(problem))
                    }
                }
            }
            (Err(message), FailurePolicy::Fail) => {
                let problem = problem(&message);
                (broken(message), Some(problem))
            }
            (Err(message), FailurePolicy::Fallback) => {
                match runtime.load_builtin(hook.default_builtin()).await {
                    Ok(builtin) => (
                        Bound::Unbound {
                            failure: message.clone(),
                            builtin,
                        },
                        Some(problem(&message)),
                    ),
                    Err(e) => {
                        let message = format!("{message}; and the builtin: {e}");
                        let problem = problem(&message);
                        (broken(message), Some(problem))
                    }
                }
            }
        }
    }

    /// Loads the configured plugin, checks that it exports `hook` and that it accepts its
    /// config; `Err` is why not, as a status message.
    async fn bind_plugin(
        runtime: &PolicyRuntime,
        hook: Hook,
        setting: &HookSetting,
        preloaded: &Preloaded,
    ) -> Result<Plugin, String> {
        let plugin = match preloaded.get(&setting.source) {
            Some(Ok(plugin)) => plugin.clone(),
            Some(Err(message)) => return Err(message.clone()),
            None => runtime
                .load(&setting.source)
                .await
                .map_err(|e| e.to_string())?,
        }
        .with_limits(setting.limits);
        if !plugin.exports(hook) {
            return Err(PolicyError::MissingHook {
                plugin: plugin.name().to_string(),
                hook,
            }
            .to_string());
        }
        plugin
            .validate_config(&setting.config)
            .await
            .map_err(|e| e.to_string())?;
        Ok(plugin)
    }

    fn first(&self) -> First<'_> {
        match self {
            Bound::Plugin { plugin, config, .. } => First::Plugin(plugin, config),
            Bound::Unbound { failure, builtin } => First::Builtin(builtin, failure),
            Bound::Broken(error) => First::Broken(error),
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
            Bound::Plugin { fallback: None, .. } | Bound::Broken(_) => Err(error),
        }
    }
}

/// The decision and its record, which keeps a copy of the request the plugin answered (for
/// `kvpilot policy replay`).
fn decided<T: Serialize, R: Serialize>(
    hook: Hook,
    plugin: &Plugin,
    request: &R,
    answer: T,
    started: Instant,
    fallback_from: Option<String>,
) -> Decided<T> {
    let record = DecisionRecord::new(
        hook,
        plugin.name(),
        plugin.sha256_hex(),
        &answer,
        Some(request),
        started.elapsed(),
        fallback_from.as_deref(),
    );
    Decided { answer, record }
}

/// Plugins loaded beforehand, by the name a `HookSetting::source` gives them (e.g. the
/// `PolicyPlugin`s the operator loaded), or why each could not be loaded.
pub type Preloaded = BTreeMap<String, Result<Plugin, String>>;

/// The wasm-backed [`Policies`] of one cluster. Each hook is bound on its own: a hook whose
/// plugin cannot be bound fails alone (or falls back), the others answer as usual.
pub struct WasmPolicies {
    replica_selection: Bound,
    snapshot_schedule: Bound,
    rollout_order: Bound,
    problems: Vec<HookProblem>,
}

impl WasmPolicies {
    /// Loads every hook's plugin and checks its config (`validate-config`). A hook whose
    /// plugin does not load, lacks the hook or rejects its config is not bound: under
    /// `FailurePolicy::Fail` its calls fail with `PolicyError::Unbound`; under `Fallback` it is
    /// bound to its builtin and every decision names the failure in `fallback_from`. Either
    /// way [`Policies::bind_problems`] lists it.
    pub async fn bind(runtime: &PolicyRuntime, settings: &PolicySettings) -> WasmPolicies {
        Self::bind_with(runtime, settings, &Preloaded::new()).await
    }

    /// [`WasmPolicies::bind`], taking the plugins whose `HookSetting::source` is a key of
    /// `preloaded` from there instead of loading the source; an `Err` there is the reason the
    /// plugin cannot be used.
    pub async fn bind_with(
        runtime: &PolicyRuntime,
        settings: &PolicySettings,
        preloaded: &Preloaded,
    ) -> WasmPolicies {
        let mut problems = Vec::new();
        let mut bind = async |hook: Hook, setting: Option<&HookSetting>| {
            let (bound, problem) = Bound::bind(runtime, hook, setting, preloaded).await;
            problems.extend(problem);
            bound
        };
        let replica_selection =
            bind(Hook::ReplicaSelection, settings.replica_selection.as_ref()).await;
        let snapshot_schedule =
            bind(Hook::SnapshotSchedule, settings.snapshot_schedule.as_ref()).await;
        let rollout_order = bind(Hook::RolloutOrder, settings.rollout_order.as_ref()).await;
        WasmPolicies {
            replica_selection,
            snapshot_schedule,
            rollout_order,
            problems,
        }
    }
}

impl Policies for WasmPolicies {
    fn bind_problems(&self) -> Vec<HookProblem> {
        self.problems.clone()
    }

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
                    Ok(answer) => {
                        return Ok(decided(hook, plugin, &request, answer, started, None));
                    }
                    Err(error) => bound.fallback(error)?,
                }
            }
            First::Builtin(builtin, failure) => (builtin, failure.to_string()),
            First::Broken(error) => return Err(error.clone()),
        };
        request.config = kvpilot_sdk::empty_config();
        let answer = builtin.select(&request).await?;
        Ok(decided(
            hook,
            builtin,
            &request,
            answer,
            started,
            Some(failure),
        ))
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
                    Ok(answer) => {
                        return Ok(decided(hook, plugin, &request, answer, started, None));
                    }
                    Err(error) => bound.fallback(error)?,
                }
            }
            First::Builtin(builtin, failure) => (builtin, failure.to_string()),
            First::Broken(error) => return Err(error.clone()),
        };
        request.config = kvpilot_sdk::empty_config();
        let answer = builtin.schedule(&request).await?;
        Ok(decided(
            hook,
            builtin,
            &request,
            answer,
            started,
            Some(failure),
        ))
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
                    Ok(answer) => {
                        return Ok(decided(hook, plugin, &request, answer, started, None));
                    }
                    Err(error) => bound.fallback(error)?,
                }
            }
            First::Builtin(builtin, failure) => (builtin, failure.to_string()),
            First::Broken(error) => return Err(error.clone()),
        };
        request.config = kvpilot_sdk::empty_config();
        let answer = builtin.next(&request).await?;
        Ok(decided(
            hook,
            builtin,
            &request,
            answer,
            started,
            Some(failure),
        ))
    }
}
