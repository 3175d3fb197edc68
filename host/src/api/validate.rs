//! Spec checks that the schema cannot express. A failing check becomes a status condition and
//! an event; nothing changes until the spec is fixed.

use super::KvClusterSpec;

/// A spec problem, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spec.{field}: {message}")]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

fn err(field: &str, message: impl Into<String>) -> SpecError {
    SpecError {
        field: field.to_string(),
        message: message.into(),
    }
}

/// Checks cross-field rules of the spec.
pub fn validate_spec(spec: &KvClusterSpec) -> Result<(), SpecError> {
    if spec.shards != 1 {
        return Err(err(
            "shards",
            format!(
                "{} shards requested, but only 1 (plain replication) is supported until cluster mode exists",
                spec.shards
            ),
        ));
    }
    if spec.rollout.handover_timeout_seconds == 0 {
        return Err(err(
            "rollout.handoverTimeoutSeconds",
            "must be at least 1 second",
        ));
    }
    for (key, _) in spec.config.iter() {
        if key.trim().is_empty() || key.contains(char::is_whitespace) {
            return Err(err(
                &format!("config.{key}"),
                "a server setting name may not be empty or contain spaces",
            ));
        }
        if FORBIDDEN_CONFIG.contains(&key.to_ascii_lowercase().as_str()) {
            return Err(err(
                &format!("config.{key}"),
                "is managed by kvpilot and cannot be set in spec.config",
            ));
        }
    }
    Ok(())
}

/// Settings the operator owns: letting a user set them would break replication or safety.
const FORBIDDEN_CONFIG: &[&str] = &[
    "port",
    "bind",
    "dir",
    "replicaof",
    "slaveof",
    "daemonize",
    "pidfile",
    "logfile",
    "requirepass",
    "masterauth",
    "cluster-enabled",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_than_one_shard_is_rejected_with_the_field() {
        let spec = KvClusterSpec {
            shards: 3,
            ..Default::default()
        };
        let e = validate_spec(&spec).unwrap_err();
        assert_eq!(e.field, "shards");
        assert!(e.to_string().contains("only 1"));
    }

    #[test]
    fn managed_settings_are_rejected() {
        let mut spec = KvClusterSpec {
            shards: 1,
            ..Default::default()
        };
        spec.config.insert("replicaof".into(), "x 1".into());
        assert_eq!(validate_spec(&spec).unwrap_err().field, "config.replicaof");
        spec.config.clear();
        spec.config
            .insert("maxmemory-policy".into(), "noeviction".into());
        assert!(validate_spec(&spec).is_ok());
    }
}
