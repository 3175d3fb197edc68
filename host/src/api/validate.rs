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

/// The most replicas per shard (CRD `maximum` and [`validate_spec`]). Every member is rolled
/// one at a time, so each replica adds a restart and a full sync to every rollout, and a
/// primary feeds every replica's full sync from its own bandwidth; managed Redis services stop
/// at 5 read replicas. 8 leaves room above that while keeping a shard's rollout and the
/// members listed in status small.
pub const MAX_REPLICAS: u32 = 8;
/// The most shards a rollout may have in flight (`rollout.maxShardsInFlight`): half of
/// [`MAX_SHARDS`]; the minority-of-primaries cap applies below it anyway.
pub const MAX_SHARDS_IN_FLIGHT: u32 = 50;

/// The most shards (CRD `maximum` and [`validate_spec`]): 100 shards of up to 9 members are
/// 900 pods and a status listing as many members, well under what one object may hold in the
/// API server (1.5 MiB) and what one operator reconciles at the probe interval.
pub const MAX_SHARDS: u32 = 100;
/// The longest `spec.config` name and value (rule 10: user text is bounded).
const MAX_CONFIG_KEY: usize = 128;
const MAX_CONFIG_VALUE: usize = 4096;

/// Checks cross-field rules of the spec.
pub fn validate_spec(spec: &KvClusterSpec) -> Result<(), SpecError> {
    if spec.replicas > MAX_REPLICAS {
        return Err(err(
            "replicas",
            format!(
                "{} replicas requested; at most {MAX_REPLICAS} per shard are supported",
                spec.replicas
            ),
        ));
    }
    if spec.shards == 0 || spec.shards > MAX_SHARDS {
        return Err(err(
            "shards",
            format!(
                "{} shards requested; between 1 and {MAX_SHARDS} are supported",
                spec.shards
            ),
        ));
    }
    if spec.shards > 1 && spec.engine.kind == kvpilot_sdk::Engine::Dragonfly {
        // Dragonfly's cluster (`DFLYCLUSTER CONFIG` pushed by the operator) has no server to
        // test against here; cluster mode runs Valkey/Redis Cluster only.
        return Err(err(
            "shards",
            format!(
                "{} shards requested on Dragonfly: cluster mode runs Valkey or Redis Cluster; \
                 Dragonfly's cluster is experimental and not driven by kvpilot yet (use shards: 1)",
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
    if let Some(n) = spec.rollout.max_shards_in_flight
        && !(1..=MAX_SHARDS_IN_FLIGHT).contains(&n)
    {
        return Err(err(
            "rollout.maxShardsInFlight",
            format!("{n}: between 1 and {MAX_SHARDS_IN_FLIGHT} shards may roll at once"),
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
    for (key, value) in spec.config.iter() {
        validate_config_entry(key, value)?;
    }
    Ok(())
}

/// One `spec.config` entry: a plain setting name, a one-line bounded value, and not a setting
/// that would undermine a safety rule. Every member gets these as config-file lines (Valkey,
/// Redis) or command-line flags (Dragonfly): a name or value that could start another line or
/// flag is refused here rather than escaped, since a Dragonfly flag file has no escapes.
fn validate_config_entry(key: &str, value: &str) -> Result<(), SpecError> {
    let plain_name = !key.is_empty()
        && key.len() <= MAX_CONFIG_KEY
        && key.starts_with(|c: char| c.is_ascii_alphanumeric())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !plain_name {
        return Err(err(
            &format!("config.{}", shown(key)),
            format!(
                "a server setting name is 1 to {MAX_CONFIG_KEY} letters, digits, `-`, `_` or \
                 `.`, starting with a letter or digit"
            ),
        ));
    }
    let field = format!("config.{key}");
    if value.len() > MAX_CONFIG_VALUE {
        return Err(err(
            &field,
            format!(
                "the value has {} bytes; at most {MAX_CONFIG_VALUE} are accepted",
                value.len()
            ),
        ));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(err(
            &field,
            format!(
                "the value contains the control character {:?}: settings are one line (a line \
                 break would start another setting or flag)",
                c
            ),
        ));
    }
    if let Some(why) = forbidden(key) {
        return Err(err(&field, format!("cannot be set in spec.config: {why}")));
    }
    Ok(())
}

/// A refused setting name as the error shows it: escaped (a control character shows as
/// `\u{1b}`, never as itself) and cut to [`MAX_CONFIG_KEY`] characters (rule 10).
fn shown(key: &str) -> String {
    let escaped: String = key.escape_debug().collect();
    match escaped.char_indices().nth(MAX_CONFIG_KEY) {
        Some((end, _)) => format!("{}…", &escaped[..end]),
        None => escaped,
    }
}

/// Why `key` may not be set in `spec.config`, if it may not. Names are compared in lower case
/// with `_` read as `-`, so one entry covers Valkey's `replica-read-only` and a Dragonfly flag
/// spelled `replica_read_only`.
pub fn forbidden(key: &str) -> Option<&'static str> {
    let name = key.to_ascii_lowercase().replace('_', "-");
    if name.starts_with("cluster-announce-") {
        return Some(ANNOUNCE);
    }
    FORBIDDEN_CONFIG
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, why)| *why)
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
    if spec.shards > 1 && auth.acl_secret.is_some() {
        // Cluster-mode members start with the `default` user parked (no PSYNC, no writes)
        // until the operator has judged their data (rule 2, docs/architecture.md). Replicas
        // that authenticate as an ACL file's user would sync past that.
        return Err(err(
            "auth.aclSecret",
            "cluster mode (shards > 1) needs replicas to authenticate as the default user, \
             which starts parked until the operator has judged each member's data; use \
             auth.passwordSecret alone",
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

const MANAGED: &str = "kvpilot sets it (the member's address, files and process)";
const TOPOLOGY: &str = "only the operator decides who replicates from whom: members start \
    parked and only the reconciler promotes (docs/architecture.md, rule 2)";
const AUTH: &str = "authentication comes from spec.auth, and the operator must keep \
    authenticating to every member";
const TLS: &str = "TLS comes from spec.tls (it names mounted files and decides how the operator \
    connects)";
const ANNOUNCE: &str = "it changes the address a member is known by, which the operator uses to \
    tell members apart (handover target, in-sync replicas; rules 3 and 5)";
const ELSEWHERE: &str = "it reads settings or code from elsewhere, which could set any of the \
    settings kvpilot manages";
const CLUSTER: &str = "cluster mode is set up by kvpilot from spec.shards";
const ROLES: &str = "it would let the engine move replicas or change roles on its own; only the \
    operator does (rules 3 and 8)";

/// Settings `spec.config` may not set, by normalised name, and why (see [`forbidden`]). The TLS
/// and ACL ones come from `spec.tls` and `spec.auth`.
const FORBIDDEN_CONFIG: &[(&str, &str)] = &[
    ("port", MANAGED),
    ("bind", MANAGED),
    ("dir", MANAGED),
    ("daemonize", MANAGED),
    ("pidfile", MANAGED),
    ("logfile", MANAGED),
    ("protected-mode", MANAGED),
    ("replicaof", TOPOLOGY),
    ("slaveof", TOPOLOGY),
    ("requirepass", AUTH),
    ("masterauth", AUTH),
    ("masteruser", AUTH),
    ("primaryauth", AUTH),
    ("primaryuser", AUTH),
    ("aclfile", AUTH),
    ("user", AUTH),
    ("tls", TLS),
    ("tls-port", TLS),
    ("tls-cert-file", TLS),
    ("tls-key-file", TLS),
    ("tls-key-file-pass", TLS),
    ("tls-client-cert-file", TLS),
    ("tls-client-key-file", TLS),
    ("tls-client-key-file-pass", TLS),
    ("tls-ca-cert-file", TLS),
    ("tls-ca-cert-dir", TLS),
    ("tls-replication", TLS),
    ("tls-auth-clients", TLS),
    ("tls-cluster", TLS),
    ("no-tls-on-admin-port", TLS),
    (
        "replica-read-only",
        "a writable replica acknowledges writes that its next sync discards; only the primary \
         may acknowledge writes (rule 7)",
    ),
    (
        "slave-read-only",
        "a writable replica acknowledges writes that its next sync discards; only the primary \
         may acknowledge writes (rule 7)",
    ),
    (
        "repl-diskless-sync-delay",
        "kvpilot sets it: the data-holding guard reasons about when a full sync starts (rule 2)",
    ),
    (
        "rename-command",
        "renaming or disabling a command the operator sends (REPLICAOF, FAILOVER, CLIENT, \
         CONFIG, INFO, ROLE) breaks failover, handover and fencing (rules 3 and 7)",
    ),
    ("include", ELSEWHERE),
    ("loadmodule", ELSEWHERE),
    ("sentinel", ELSEWHERE),
    ("flagfile", ELSEWHERE),
    ("fromenv", ELSEWHERE),
    ("tryfromenv", ELSEWHERE),
    ("undefok", ELSEWHERE),
    ("replica-announce-ip", ANNOUNCE),
    ("replica-announce-port", ANNOUNCE),
    ("slave-announce-ip", ANNOUNCE),
    ("slave-announce-port", ANNOUNCE),
    ("announce-port", ANNOUNCE),
    ("bind-source-addr", ANNOUNCE),
    ("cluster-enabled", CLUSTER),
    ("cluster-mode", CLUSTER),
    ("cluster-config-file", CLUSTER),
    ("cluster-port", CLUSTER),
    ("cluster-allow-replica-migration", ROLES),
    ("cluster-replica-no-failover", ROLES),
    ("cluster-slave-no-failover", ROLES),
    (
        "admin-port",
        "Dragonfly's admin port is a second way in that the operator neither watches nor fences",
    ),
    (
        "admin-bind",
        "Dragonfly's admin port is a second way in that the operator neither watches nor fences",
    ),
    (
        "admin-nopass",
        "it would open Dragonfly's admin port without the password (spec.auth)",
    ),
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
        // Cluster mode parks the default user at start: an ACL file's user would bypass it.
        let mut sharded = acl.clone();
        sharded.shards = 3;
        let e = validate_spec(&sharded).unwrap_err();
        assert_eq!(e.field, "auth.aclSecret", "{e}");
        assert!(e.to_string().contains("parked"), "{e}");
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
    fn the_local_cluster_example_is_valid_cluster_mode() {
        let m: crate::api::KvClusterManifest =
            serde_norway::from_str(include_str!("../../../examples/local-cluster.yaml"))
                .expect("examples/local-cluster.yaml parses");
        assert_eq!(m.spec.shards, 3);
        assert_eq!(validate_spec(&m.spec), Ok(()));
    }

    #[test]
    fn more_than_one_shard_is_cluster_mode_but_not_on_dragonfly() {
        for kind in [kvpilot_sdk::Engine::Valkey, kvpilot_sdk::Engine::Redis] {
            let mut spec = KvClusterSpec {
                shards: 3,
                ..Default::default()
            };
            spec.engine.kind = kind;
            assert_eq!(validate_spec(&spec), Ok(()), "{kind:?}");
        }
        let mut spec = KvClusterSpec {
            shards: 3,
            ..Default::default()
        };
        spec.engine.kind = kvpilot_sdk::Engine::Dragonfly;
        let e = validate_spec(&spec).unwrap_err();
        assert_eq!(e.field, "shards");
        assert!(e.to_string().contains("Dragonfly"), "{e}");
    }

    #[test]
    fn shards_in_flight_are_bounded() {
        let mut spec = KvClusterSpec {
            shards: 5,
            ..Default::default()
        };
        for (n, ok) in [
            (0, false),
            (1, true),
            (MAX_SHARDS_IN_FLIGHT, true),
            (51, false),
        ] {
            spec.rollout.max_shards_in_flight = Some(n);
            match validate_spec(&spec) {
                Ok(()) => assert!(ok, "{n} accepted"),
                Err(e) => {
                    assert!(!ok, "{n}: {e}");
                    assert_eq!(e.field, "rollout.maxShardsInFlight");
                }
            }
        }
    }

    #[test]
    fn replicas_and_shards_have_upper_bounds() {
        let ok = KvClusterSpec {
            shards: 1,
            replicas: MAX_REPLICAS,
            ..Default::default()
        };
        assert_eq!(validate_spec(&ok), Ok(()));
        let too_many = KvClusterSpec {
            replicas: MAX_REPLICAS + 1,
            ..ok.clone()
        };
        let e = validate_spec(&too_many).unwrap_err();
        assert_eq!(e.field, "replicas", "{e}");
        assert!(e.message.contains("at most 8"), "{e}");
        let huge = KvClusterSpec {
            replicas: u32::MAX,
            ..ok.clone()
        };
        assert_eq!(validate_spec(&huge).unwrap_err().field, "replicas");
        for shards in [0, MAX_SHARDS + 1, u32::MAX] {
            let spec = KvClusterSpec {
                shards,
                ..ok.clone()
            };
            let e = validate_spec(&spec).unwrap_err();
            assert_eq!(e.field, "shards", "{e}");
            assert!(e.message.contains("between 1 and 100"), "{e}");
        }
        // Within the bound, more than one shard is cluster mode.
        let sharded = KvClusterSpec {
            shards: MAX_SHARDS,
            ..ok
        };
        assert_eq!(validate_spec(&sharded), Ok(()));
    }

    #[test]
    fn settings_that_undermine_a_safety_rule_are_refused_with_the_key_named() {
        for key in [
            "replica-read-only",
            "slave-read-only",
            "REPLICA-READ-ONLY",
            "replica_read_only",
            "repl-diskless-sync-delay",
            "rename-command",
            "replica-announce-ip",
            "replica-announce-port",
            "slave-announce-ip",
            "cluster-announce-ip",
            "cluster-announce-port",
            "cluster-announce-tls-port",
            "cluster-announce-bus-port",
            "cluster-announce-hostname",
            "cluster_announce_ip",
            "cluster-enabled",
            "cluster-config-file",
            "cluster-replica-no-failover",
            "replicaof",
            "slaveof",
            "primaryauth",
            "masterauth",
            "requirepass",
            "include",
            "loadmodule",
            "user",
            "bind-source-addr",
            "admin_nopass",
            "admin_port",
            "flagfile",
            "tls_replication",
        ] {
            let mut spec = KvClusterSpec {
                shards: 1,
                ..Default::default()
            };
            spec.config.insert(key.into(), "x".into());
            let e = validate_spec(&spec).unwrap_err();
            assert_eq!(e.field, format!("config.{key}"), "{e}");
            assert!(
                e.message.starts_with("cannot be set in spec.config: "),
                "{e}"
            );
        }
        // Tuning is the user's.
        for key in [
            "maxmemory",
            "hz",
            "repl-backlog-size",
            "min-replicas-to-write",
        ] {
            let mut spec = KvClusterSpec {
                shards: 1,
                ..Default::default()
            };
            spec.config.insert(key.into(), "10".into());
            assert_eq!(validate_spec(&spec), Ok(()), "{key}");
        }
    }

    #[test]
    fn config_names_and_values_cannot_start_another_setting_or_flag() {
        let with = |key: &str, value: &str| {
            let mut spec = KvClusterSpec {
                shards: 1,
                ..Default::default()
            };
            spec.config.insert(key.into(), value.into());
            validate_spec(&spec)
        };
        // A value may hold spaces, `=` and `--`: it stays one argument or one quoted value.
        assert_eq!(with("save", "3600 1 300 100"), Ok(()));
        assert_eq!(with("notify-keyspace-events", "--requirepass=x"), Ok(()));
        assert_eq!(with("client-output-buffer-limit", "a=b c"), Ok(()));
        for value in [
            "noeviction\n--requirepass=owned",
            "noeviction\r\nreplicaof 10.0.0.1 6379",
            "x\0y",
            "tab\there",
            "\u{1b}[31mred",
        ] {
            let e = with("maxmemory-policy", value).unwrap_err();
            assert_eq!(e.field, "config.maxmemory-policy", "{e}");
            assert!(e.message.contains("control character"), "{e}");
        }
        let e = with("maxmemory-policy", &"x".repeat(MAX_CONFIG_VALUE + 1)).unwrap_err();
        assert!(e.message.contains("at most 4096"), "{e}");
        for key in [
            "",
            "two words",
            "--flagfile",
            "-x",
            "a=b",
            "hz\n--requirepass",
            "k\u{1b}[2J",
        ] {
            let e = with(key, "1").unwrap_err();
            assert!(e.message.contains("setting name"), "{key:?}: {e}");
            assert!(
                !e.field.chars().any(char::is_control),
                "the field shows no control character: {:?}",
                e.field
            );
        }
        let long = "k".repeat(500);
        let e = with(&long, "1").unwrap_err();
        assert!(e.field.len() < 200, "{}", e.field);
        // Module settings (`name.setting`) are plain names.
        assert_eq!(with("search.timeout", "10"), Ok(()));
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
