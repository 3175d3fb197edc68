//! The `KvCluster` manifest a test runs, written to the file the reconciler watches.

use kvpilot_sdk::Engine;

/// Which plugin answers the rollout-order hook, with what config and failure policy.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyChoice {
    /// `builtin:NAME` or the path of a `.wasm` file.
    pub plugin: String,
    pub config: Option<serde_json::Value>,
    /// `Fail` or `Fallback`.
    pub failure_policy: &'static str,
}

impl PolicyChoice {
    /// The default: `builtin:replicas-first`, failing closed.
    pub fn builtin() -> PolicyChoice {
        PolicyChoice {
            plugin: "builtin:replicas-first".into(),
            config: None,
            failure_policy: "Fail",
        }
    }
}

/// `spec.snapshots`, as the manifest spells it.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshots {
    /// `all`, `primaryOnly` or `replicasOnly`.
    pub mode: &'static str,
    /// A 5-field cron expression.
    pub schedule: String,
    /// `10m`, `0m`, `1h`…
    pub stagger: String,
}

/// The parts of a `KvCluster` spec the tests change.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub name: String,
    pub engine: Engine,
    pub replicas: u32,
    /// A harmless config value: changing it changes the desired revision (a rollout).
    pub hz: u32,
    pub rollout_order: PolicyChoice,
    /// Snapshot settings (none: the operator leaves snapshots alone).
    pub snapshots: Option<Snapshots>,
    /// The members' password (given to `LocalCluster::open`, as `--password-file` would).
    pub password: Option<String>,
    /// More `spec.config` settings, after `hz`.
    pub config: Vec<(String, String)>,
    /// Shards (more than 1: cluster mode).
    pub shards: u32,
}

impl Spec {
    /// One primary and two replicas of `engine`, `hz 10`, the builtin policies.
    pub fn new(name: &str, engine: Engine) -> Spec {
        Spec {
            name: name.into(),
            engine,
            replicas: 2,
            hz: 10,
            rollout_order: PolicyChoice::builtin(),
            snapshots: None,
            password: None,
            config: Vec::new(),
            shards: 1,
        }
    }

    /// The same spec in cluster mode: `shards` shards of 1 primary and `replicas` replicas.
    pub fn with_shards(&self, shards: u32, replicas: u32) -> Spec {
        Spec {
            shards,
            replicas,
            ..self.clone()
        }
    }

    /// The same spec with one more `spec.config` setting (a new desired revision).
    pub fn with_config(&self, key: &str, value: &str) -> Spec {
        let mut config = self.config.clone();
        config.push((key.into(), value.into()));
        Spec {
            config,
            ..self.clone()
        }
    }

    /// The same spec with another `hz` (a new desired revision).
    pub fn with_hz(&self, hz: u32) -> Spec {
        Spec { hz, ..self.clone() }
    }

    /// The same spec with members that require `password`.
    pub fn with_password(&self, password: &str) -> Spec {
        Spec {
            password: Some(password.into()),
            ..self.clone()
        }
    }

    /// The same spec with another rollout-order plugin.
    pub fn with_rollout_order(&self, choice: PolicyChoice) -> Spec {
        Spec {
            rollout_order: choice,
            ..self.clone()
        }
    }

    /// The same spec with snapshots in `mode` on `schedule`, members `stagger` apart.
    pub fn with_snapshots(&self, mode: &'static str, schedule: &str, stagger: &str) -> Spec {
        Spec {
            snapshots: Some(Snapshots {
                mode,
                schedule: schedule.into(),
                stagger: stagger.into(),
            }),
            ..self.clone()
        }
    }

    /// The manifest as YAML (JSON values are valid YAML flow syntax).
    pub fn yaml(&self) -> String {
        let kind = match self.engine {
            Engine::Valkey => "valkey",
            Engine::Redis => "redis",
            Engine::Dragonfly => "dragonfly",
        };
        let r = &self.rollout_order;
        let plugin = serde_json::Value::String(r.plugin.clone());
        let config = r
            .config
            .as_ref()
            .map(|c| format!("      config: {c}\n"))
            .unwrap_or_default();
        let snapshots = self
            .snapshots
            .as_ref()
            .map(|s| {
                format!(
                    "  snapshots:\n    mode: {}\n    schedule: {}\n    staggerInterval: {}\n",
                    s.mode,
                    serde_json::Value::String(s.schedule.clone()),
                    serde_json::Value::String(s.stagger.clone()),
                )
            })
            .unwrap_or_default();
        let extra: String = self
            .config
            .iter()
            .map(|(k, v)| {
                format!(
                    "    {}: {}\n",
                    serde_json::Value::String(k.clone()),
                    serde_json::Value::String(v.clone())
                )
            })
            .collect();
        format!(
            "apiVersion: kvpilot.dev/v1alpha1\n\
             kind: KvCluster\n\
             metadata:\n  name: {name}\n\
             spec:\n\
             \x20 engine:\n    kind: {kind}\n\
             \x20 replicas: {replicas}\n\
             \x20 shards: {shards}\n\
             \x20 config:\n    hz: \"{hz}\"\n{extra}\
             \x20 rollout:\n    handoverTimeoutSeconds: 5\n\
             \x20 policies:\n\
             \x20   replicaSelection:\n      plugin: builtin:most-caught-up\n      failurePolicy: Fail\n\
             \x20   rolloutOrder:\n      plugin: {plugin}\n{config}      failurePolicy: {failure}\n{snapshots}",
            name = self.name,
            replicas = self.replicas,
            shards = self.shards,
            hz = self.hz,
            failure = r.failure_policy,
        )
    }
}

/// The server binary for `engine`, if it is installed (the tests need it).
pub fn server_binary(engine: Engine) -> &'static str {
    match engine {
        Engine::Valkey => "valkey-server",
        Engine::Redis => "redis-server",
        Engine::Dragonfly => "dragonfly",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_parses_as_a_kv_cluster() {
        let mut spec = Spec::new("t", Engine::Redis).with_hz(12);
        spec.rollout_order = PolicyChoice {
            plugin: "/tmp/a b/x.wasm".into(),
            config: Some(serde_json::json!({"reason": "freeze: \"now\""})),
            failure_policy: "Fallback",
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("spec.yaml");
        std::fs::write(&path, spec.yaml()).expect("write");
        let manifest = kvpilot::platform::local::read_manifest(&path).expect("parses");
        assert_eq!(manifest.metadata.name, "t");
        assert_eq!(manifest.spec.engine.kind, Engine::Redis);
        assert_eq!(manifest.spec.replicas, 2);
        assert_eq!(
            manifest.spec.config.get("hz").map(String::as_str),
            Some("12")
        );
        let rollout = manifest.spec.policies.rollout_order.expect("rolloutOrder");
        assert_eq!(rollout.plugin, "/tmp/a b/x.wasm");
        assert_eq!(rollout.config_json(), r#"{"reason":"freeze: \"now\""}"#);
        assert_eq!(
            rollout.failure_policy,
            kvpilot::policy::FailurePolicy::Fallback
        );
        assert!(manifest.spec.snapshots.is_none());
    }

    #[test]
    fn snapshot_settings_reach_the_manifest() {
        let spec =
            Spec::new("s", Engine::Valkey).with_snapshots("replicasOnly", "*/2 * * * *", "1m");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("spec.yaml");
        std::fs::write(&path, spec.yaml()).expect("write");
        let manifest = kvpilot::platform::local::read_manifest(&path).expect("parses");
        let snap = manifest.spec.snapshots.clone().expect("snapshots");
        assert_eq!(snap.mode, kvpilot::api::SnapshotModeSpec::ReplicasOnly);
        assert_eq!(snap.schedule, "*/2 * * * *");
        assert_eq!(snap.stagger_interval, "1m");
        assert_eq!(kvpilot::api::validate_spec(&manifest.spec), Ok(()));
    }
}
