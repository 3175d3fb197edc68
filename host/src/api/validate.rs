//! Spec checks that the schema cannot express. A failing check becomes a status condition and
//! an event; nothing changes until the spec is fixed.

use super::{KvClusterSpec, SnapshotLocation, SnapshotModeSpec, parse_minutes};
use kvpilot_sdk::cron::Cron;

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
    if let Some(snap) = &spec.snapshots {
        let cron: Cron = snap
            .schedule
            .parse()
            .map_err(|e| err("snapshots.schedule", format!("`{}`: {e}", snap.schedule)))?;
        let stagger = parse_minutes(&snap.stagger_interval)
            .map_err(|e| err("snapshots.staggerInterval", e))?;
        let members = spec.replicas + 1;
        let snapshotting = match snap.mode {
            SnapshotModeSpec::All => members,
            SnapshotModeSpec::PrimaryOnly => 1,
            SnapshotModeSpec::ReplicasOnly => {
                if spec.replicas < 2 {
                    return Err(err(
                        "snapshots.mode",
                        format!(
                            "replicasOnly needs at least 2 replicas (has {}): with one, losing it leaves no snapshot source",
                            spec.replicas
                        ),
                    ));
                }
                spec.replicas
            }
        };
        let period = cron.min_period_minutes();
        if stagger.saturating_mul(snapshotting) > period {
            return Err(err(
                "snapshots.staggerInterval",
                format!(
                    "{} × {snapshotting} snapshotting members = {} minutes does not fit in the {period}-minute period of `{}`",
                    snap.stagger_interval,
                    stagger.saturating_mul(snapshotting),
                    snap.schedule
                ),
            ));
        }
        if snap.location == SnapshotLocation::PersistentVolume && spec.storage.is_none() {
            return Err(err(
                "snapshots.location",
                "persistentVolume needs spec.storage (a volume per member)",
            ));
        }
    }
    validate_auth(spec)?;
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

/// The rules of `spec.auth` (also CEL rules, repeated here for specs that did not pass an
/// apiserver: local files, tests).
fn validate_auth(spec: &KvClusterSpec) -> Result<(), SpecError> {
    let Some(auth) = &spec.auth else {
        return Ok(());
    };
    if auth.password_secret.is_none() {
        return Err(err(
            "auth.passwordSecret",
            "is required: it holds the password of the default user, or with aclSecret the \
             password of auth.username, which replicas and the operator authenticate with",
        ));
    }
    if auth.username.is_some() && auth.acl_secret.is_none() {
        return Err(err(
            "auth.username",
            "needs auth.aclSecret: without an ACL file the only user is default",
        ));
    }
    if let Some(user) = &auth.username
        && (user.is_empty() || user.contains(char::is_whitespace))
    {
        return Err(err(
            "auth.username",
            "an ACL user name may not be empty or contain spaces",
        ));
    }
    if auth.acl_secret.is_some() && spec.engine.kind == kvpilot_sdk::Engine::Dragonfly {
        return Err(err(
            "auth.aclSecret",
            "is supported for valkey and redis; kvpilot renders no ACL file for dragonfly",
        ));
    }
    Ok(())
}

/// Settings the operator owns: letting a user set them would break replication or safety.
/// The TLS and ACL ones come from `spec.tls` and `spec.auth` (they name mounted files and
/// decide how the operator connects).
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
    "masteruser",
    "aclfile",
    "tls-port",
    "tls-cert-file",
    "tls-key-file",
    "tls-ca-cert-file",
    "tls-replication",
    "tls-auth-clients",
    "cluster-enabled",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SnapshotSpec;

    fn with_snapshots(
        replicas: u32,
        mode: SnapshotModeSpec,
        schedule: &str,
        stagger: &str,
    ) -> KvClusterSpec {
        KvClusterSpec {
            shards: 1,
            replicas,
            snapshots: Some(SnapshotSpec {
                mode,
                schedule: schedule.into(),
                stagger_interval: stagger.into(),
                location: SnapshotLocation::DataDir,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn auth_needs_a_password_and_a_user_needs_an_acl_file() {
        use crate::api::{AuthSpec, SecretKeyRef};
        let key = |name: &str| SecretKeyRef {
            name: name.into(),
            key: "k".into(),
        };
        let with_auth = |auth: AuthSpec| KvClusterSpec {
            shards: 1,
            auth: Some(auth),
            ..Default::default()
        };
        let acl_only = with_auth(AuthSpec {
            password_secret: None,
            acl_secret: Some(key("acl")),
            username: Some("kvpilot".into()),
        });
        let e = validate_spec(&acl_only).unwrap_err();
        assert_eq!(e.field, "auth.passwordSecret", "{e}");
        let user_without_file = with_auth(AuthSpec {
            password_secret: Some(key("pw")),
            acl_secret: None,
            username: Some("kvpilot".into()),
        });
        let e = validate_spec(&user_without_file).unwrap_err();
        assert_eq!(e.field, "auth.username", "{e}");
        let acl = with_auth(AuthSpec {
            password_secret: Some(key("pw")),
            acl_secret: Some(key("acl")),
            username: Some("kvpilot".into()),
        });
        assert_eq!(validate_spec(&acl), Ok(()));
        let mut dragonfly = acl.clone();
        dragonfly.engine.kind = kvpilot_sdk::Engine::Dragonfly;
        let e = validate_spec(&dragonfly).unwrap_err();
        assert_eq!(e.field, "auth.aclSecret", "{e}");
        let mut tls_port = acl;
        tls_port.config.insert("tls-port".into(), "7000".into());
        let e = validate_spec(&tls_port).unwrap_err();
        assert_eq!(e.field, "config.tls-port", "{e}");
    }

    #[test]
    fn snapshot_settings_are_checked_with_the_field_named() {
        let ok = with_snapshots(2, SnapshotModeSpec::ReplicasOnly, "0 3 * * *", "10m");
        assert_eq!(validate_spec(&ok), Ok(()));
        let one_replica = with_snapshots(1, SnapshotModeSpec::ReplicasOnly, "0 3 * * *", "10m");
        assert_eq!(
            validate_spec(&one_replica).unwrap_err().field,
            "snapshots.mode"
        );
        let bad_cron = with_snapshots(2, SnapshotModeSpec::All, "0 25 * * *", "10m");
        let e = validate_spec(&bad_cron).unwrap_err();
        assert_eq!(e.field, "snapshots.schedule");
        assert!(e.message.contains("hour"), "{e}");
        // Every 15 minutes cannot hold 3 members 10 minutes apart.
        let too_wide = with_snapshots(2, SnapshotModeSpec::All, "*/15 * * * *", "10m");
        let e = validate_spec(&too_wide).unwrap_err();
        assert_eq!(e.field, "snapshots.staggerInterval");
        assert!(e.message.contains("15-minute period"), "{e}");
        let bad_interval = with_snapshots(2, SnapshotModeSpec::All, "0 3 * * *", "30s");
        assert_eq!(
            validate_spec(&bad_interval).unwrap_err().field,
            "snapshots.staggerInterval"
        );
    }

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
