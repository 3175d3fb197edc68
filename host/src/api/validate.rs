//! Spec checks that the schema cannot express. A failing check becomes a status condition and
//! an event; nothing changes until the spec is fixed.

use super::{KvClusterSpec, SnapshotLocation, SnapshotModeSpec, parse_minutes};
use crate::policy::{FailurePolicy, Hook};
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
        // How many members take turns. In primaryOnly a single member snapshots, at the
        // base schedule unshifted: the interval has nothing to spread, so it is not checked.
        let staggered = match snap.mode {
            SnapshotModeSpec::All => Some(members),
            SnapshotModeSpec::PrimaryOnly => None,
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
                Some(spec.replicas)
            }
        };
        if let Some(n) = staggered {
            let period = cron.min_period_minutes();
            if stagger.saturating_mul(n) > period {
                return Err(err(
                    "snapshots.staggerInterval",
                    format!(
                        "{} × {n} snapshotting members = {} minutes does not fit in the {period}-minute period of `{}`",
                        snap.stagger_interval,
                        stagger.saturating_mul(n),
                        snap.schedule
                    ),
                ));
            }
            if builtin_schedules(spec) {
                expressible_shifts(&cron, stagger, n, snap)?;
            }
        }
        if snap.location == SnapshotLocation::PersistentVolume && spec.storage.is_none() {
            return Err(err(
                "snapshots.location",
                "persistentVolume needs spec.storage (a volume per member)",
            ));
        }
        for (key, _) in spec.config.iter() {
            let lower = key.to_ascii_lowercase();
            if SNAPSHOT_CONFIG.contains(&lower.as_str()) {
                return Err(err(
                    &format!("config.{key}"),
                    format!(
                        "cannot be set while spec.snapshots manages snapshots: the engine's own \
                         schedule is off (`save \"\"`, Dragonfly `snapshot_cron` unset until the \
                         operator sets it), the operator takes the snapshots, and a full sync \
                         must not delete the last one (`rdb-del-sync-files no`); remove \
                         spec.config.{key}, or spec.snapshots to let the engine save on its own"
                    ),
                ));
            }
        }
    }
    validate_auth(spec)?;
    if let Some(fd) = &spec.failure_detection {
        fd.validate()
            .map_err(|(field, message)| err(field, message))?;
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

/// Whether the snapshot schedules come from `builtin:stagger`: it is the configured plugin, or
/// the fallback when the configured one fails. Another plugin may place members differently,
/// so only the builtin's shifts can be checked ahead of time; what any plugin answers is
/// validated when it answers (an invalid answer is a plugin failure).
fn builtin_schedules(spec: &KvClusterSpec) -> bool {
    let policy = spec.policies.for_hook(Hook::SnapshotSchedule);
    policy.plugin == format!("builtin:{}", Hook::SnapshotSchedule.default_builtin())
        || policy.failure_policy == FailurePolicy::Fallback
}

/// The builtin gives the member of rank r (0 ≤ r < `members`) the base schedule shifted by
/// r × `stagger` minutes. Cron cannot express every shift (a firing moved past midnight on a
/// restricted day, hours and minutes that no longer combine), and the plugin would then fail
/// at every reconcile: refuse the spec instead, naming the first shift that does not work.
fn expressible_shifts(
    cron: &Cron,
    stagger: u32,
    members: u32,
    snap: &super::SnapshotSpec,
) -> Result<(), SpecError> {
    for rank in 1..members {
        let shift = rank.saturating_mul(stagger);
        if let Err(e) = cron.shifted(shift) {
            return Err(err(
                "snapshots.staggerInterval",
                format!(
                    "`{}` with staggerInterval {} cannot be staggered over {members} members: \
                     the member of rank {rank} is {shift} minutes later and {e}; choose a \
                     schedule whose shifted firings stay on the same days, or a shorter interval",
                    snap.schedule, snap.stagger_interval
                ),
            ));
        }
    }
    Ok(())
}

/// Settings that would make the engine snapshot on its own, or delete the operator's
/// snapshot, refused while `spec.snapshots` is set.
const SNAPSHOT_CONFIG: &[&str] = &["save", "snapshot_cron", "rdb-del-sync-files"];

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
    fn shifts_cron_cannot_express_are_rejected_before_the_plugin_sees_them() {
        // 23:50 on the 1st, 20 minutes later for the second replica: 00:10 on the 2nd.
        let spec = with_snapshots(3, SnapshotModeSpec::ReplicasOnly, "50 23 1 * *", "20m");
        let e = validate_spec(&spec).unwrap_err();
        assert_eq!(e.field, "snapshots.staggerInterval");
        assert!(e.message.contains("rank 1 is 20 minutes later"), "{e}");
        assert!(e.message.contains("day-of-month"), "{e}");
        // The same schedule fits when the shifts stay on the 1st…
        let early = with_snapshots(3, SnapshotModeSpec::ReplicasOnly, "10 23 1 * *", "20m");
        assert_eq!(validate_spec(&early), Ok(()));
        // …and when the days are not restricted, a shift past midnight is fine.
        let daily = with_snapshots(3, SnapshotModeSpec::All, "50 23 * * *", "20m");
        assert_eq!(validate_spec(&daily), Ok(()));
        // Hours and minutes that no longer combine: 10:00 and 10:40, 20 minutes later, are
        // 10:20 and 11:00 (the 40-minute period holds 2 × 20 minutes).
        let e = validate_spec(&with_snapshots(
            2,
            SnapshotModeSpec::ReplicasOnly,
            "0,40 10 * * *",
            "20m",
        ))
        .unwrap_err();
        assert_eq!(e.field, "snapshots.staggerInterval");
        assert!(e.message.contains("rank 1"), "{e}");
        assert!(e.message.contains("combination"), "{e}");
        // Every shift the builtin would make is what validation accepted.
        let ok = with_snapshots(4, SnapshotModeSpec::All, "50 23 * * 1", "20m");
        assert_eq!(validate_spec(&ok), Ok(()));
        let base: Cron = "50 23 * * 1".parse().unwrap();
        for rank in 0..5 {
            assert!(base.shifted(rank * 20).is_ok());
        }
    }

    #[test]
    fn a_custom_snapshot_plugin_is_not_held_to_the_builtins_shifts() {
        let mut spec = with_snapshots(3, SnapshotModeSpec::ReplicasOnly, "50 23 1 * *", "20m");
        spec.policies.snapshot_schedule = Some(crate::api::PolicyRef {
            plugin: "my-scheduler".into(),
            config: None,
            failure_policy: FailurePolicy::Fail,
        });
        assert_eq!(validate_spec(&spec), Ok(()));
        // With Fallback the builtin may answer: checked again.
        if let Some(p) = spec.policies.snapshot_schedule.as_mut() {
            p.failure_policy = FailurePolicy::Fallback;
        }
        assert_eq!(
            validate_spec(&spec).unwrap_err().field,
            "snapshots.staggerInterval"
        );
    }

    #[test]
    fn primary_only_does_not_stagger_so_the_interval_need_not_fit() {
        // One member snapshots at the base schedule: a 30-minute interval on a 15-minute
        // schedule spreads nothing.
        let spec = with_snapshots(2, SnapshotModeSpec::PrimaryOnly, "*/15 * * * *", "30m");
        assert_eq!(validate_spec(&spec), Ok(()));
        let spec = with_snapshots(2, SnapshotModeSpec::PrimaryOnly, "50 23 1 * *", "20m");
        assert_eq!(validate_spec(&spec), Ok(()));
        // It must still be a duration.
        let spec = with_snapshots(2, SnapshotModeSpec::PrimaryOnly, "0 3 * * *", "5s");
        assert_eq!(
            validate_spec(&spec).unwrap_err().field,
            "snapshots.staggerInterval"
        );
    }

    #[test]
    fn the_engines_own_save_settings_are_refused_while_snapshots_are_managed() {
        for key in ["save", "SAVE", "snapshot_cron", "rdb-del-sync-files"] {
            let mut spec = with_snapshots(2, SnapshotModeSpec::ReplicasOnly, "0 3 * * *", "10m");
            spec.config.insert(key.into(), "3600 1".into());
            let e = validate_spec(&spec).unwrap_err();
            assert_eq!(e.field, format!("config.{key}"));
            assert!(e.message.contains("spec.snapshots"), "{e}");
            // Without managed snapshots the engine's own schedule is the user's business.
            spec.snapshots = None;
            assert_eq!(validate_spec(&spec), Ok(()));
        }
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
    fn failure_detection_outside_its_bounds_is_refused() {
        let mut spec: KvClusterSpec = serde_norway::from_str(
            "engine: {kind: valkey}\nfailureDetection: {probeTimeoutMs: 100, failureThreshold: 2}\n",
        )
        .unwrap();
        assert_eq!(validate_spec(&spec), Ok(()));
        if let Some(fd) = spec.failure_detection.as_mut() {
            fd.failure_threshold = Some(1);
        }
        let e = validate_spec(&spec).unwrap_err();
        assert_eq!(e.field, "failureDetection.failureThreshold", "{e}");
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
