//! Per-cluster policy selection in Kubernetes: each hook's `plugin` is `builtin:NAME` or the
//! name of a `PolicyPlugin`, whose source (a builtin, a ConfigMap's `binaryData` or a URL,
//! pinned by sha256) is loaded here and whose status (Loaded, Valid, hooks, sha256, message)
//! is kept.

pub mod fetch;

use crate::api::{KvClusterSpec, PluginSource, PoliciesSpec, PolicyPlugin, PolicyPluginStatus};
use crate::platform::local::policy_settings;
use crate::policy::{Hook, Limits, Plugin, PolicyRuntime, PolicySettings, WasmPolicies};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

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

/// One cluster's plugins, loaded: what [`WasmPolicies::bind_with`] takes, and a key that
/// changes when the spec's policies or a referenced PolicyPlugin change.
pub struct Resolved {
    pub settings: PolicySettings,
    pub preloaded: BTreeMap<String, Plugin>,
    pub key: String,
}

impl Resolved {
    /// Binds the hooks (checking each config with the plugin).
    pub async fn bind(&self, runtime: &PolicyRuntime) -> Result<WasmPolicies, String> {
        WasmPolicies::bind_with(runtime, &self.settings, &self.preloaded)
            .await
            .map_err(|e| e.to_string())
    }
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
/// settings. A missing or refused plugin is an error naming it.
pub async fn resolve(
    client: &Client,
    runtime: &PolicyRuntime,
    spec: &KvClusterSpec,
) -> Result<Resolved, PluginProblem> {
    let mut settings = policy_settings(&spec.policies);
    let mut preloaded = BTreeMap::new();
    let mut key = serde_json::to_string(&spec.policies).unwrap_or_default();
    let api: Api<PolicyPlugin> = Api::all(client.clone());
    for name in referenced_plugins(&spec.policies) {
        let pp = api
            .get_opt(&name)
            .await
            .map_err(|e| PluginProblem {
                plugin: name.clone(),
                loaded: false,
                message: format!("cannot read it: {e}"),
            })?
            .ok_or_else(|| PluginProblem {
                plugin: name.clone(),
                loaded: false,
                message: "not found".into(),
            })?;
        let plugin = load_and_record(client, runtime, &pp).await?;
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
        preloaded.insert(name, plugin);
    }
    Ok(Resolved {
        settings,
        preloaded,
        key,
    })
}

/// Loads `pp` and writes what was found into its status.
pub async fn load_and_record(
    client: &Client,
    runtime: &PolicyRuntime,
    pp: &PolicyPlugin,
) -> Result<Plugin, PluginProblem> {
    let result = load(client, runtime, pp).await;
    let status = plugin_status(pp, &result);
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
    let problem = |loaded: bool, message: String| PluginProblem {
        plugin: name.clone(),
        loaded,
        message,
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
        let bytes = fetch::fetch_pinned(url, declared)
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
