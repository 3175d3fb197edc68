//! The member configuration file, rendered into a ConfigMap that every pod mounts as its server
//! config. Every member starts as a replica of the `<name>-primary` Service: while no pod
//! carries the primary role label that Service has no endpoints, so the member is parked
//! (following nothing that answers) until the reconciler promotes one.
//!
//! The ConfigMap is named after a digest of its content, so each StatefulSet revision keeps
//! reading the configuration it was built with, even when a pod of an old revision restarts
//! in place.

use super::{BuildError, gating, namespace, owned_meta};
use crate::api::{KvCluster, TlsClientAuth};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kvpilot_sdk::Engine;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The port members serve on (plain or TLS).
pub const PORT: i32 = 6379;
/// Cluster mode: the cluster bus port (`cluster-port`), the engines' default `PORT + 10000`,
/// written out so the pods, the headless Service and a NetworkPolicy can name it.
pub const BUS_PORT: i32 = 16379;
/// Cluster mode: `cluster-config-file`, relative to `dir` (the data volume, a PVC with
/// `spec.storage`), so a member that comes back on its volume rejoins with its node id.
pub const NODES_CONF: &str = "nodes.conf";
/// Cluster mode: `cluster-node-timeout` in milliseconds. The operator detects a lost primary
/// by its own probes and promotes with `CLUSTER FAILOVER FORCE`, which needs no `fail` flag;
/// this bounds how long the cluster takes to flag a dead node (before its id is forgotten)
/// while tolerating a few seconds of network jitter between nodes.
pub const CLUSTER_NODE_TIMEOUT_MS: u32 = 5000;
/// Where the ConfigMap is mounted.
pub const CONFIG_DIR: &str = "/etc/kvpilot/config";
/// The key (file name) of the server config in the ConfigMap.
pub const CONFIG_FILE: &str = "server.conf";
/// The data directory (the PVC or an emptyDir).
pub const DATA_DIR: &str = "/data";
/// Where the TLS Secret is mounted.
pub const TLS_DIR: &str = "/etc/kvpilot/tls";
/// Where the ACL Secret key is mounted.
pub const ACL_DIR: &str = "/etc/kvpilot/acl";
/// The file name the ACL Secret key is mounted as.
pub const ACL_FILE: &str = "users.acl";

/// A rendered member configuration and the digest that names its ConfigMap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedConfig {
    pub text: String,
    /// First 10 hex digits of the SHA-256 of `text`.
    pub digest: String,
}

/// The `<name>-primary` Service's DNS name, which every member replicates from.
pub fn primary_host(kc: &KvCluster) -> Result<String, BuildError> {
    Ok(format!("{}-primary.{}.svc", kc.name_any(), namespace(kc)?))
}

/// Renders the server config of `kc`'s members.
pub fn render(kc: &KvCluster) -> Result<RenderedConfig, BuildError> {
    let spec = &kc.spec;
    let settings = member_settings(kc)?;
    let mut text = format!(
        "# Rendered by kvpilot for KvCluster {}/{}: do not edit.\n",
        namespace(kc)?,
        kc.name_any()
    );
    for (name, value) in &settings {
        match spec.engine.kind {
            // Dragonfly reads an absl flag file: each line is one `--name=value` argument,
            // with no quoting or escapes, so a value is safe as long as it is one line
            // (spaces, `=` and `--` inside it stay part of the value). `validate_spec`
            // refuses control characters; this is the last line of defence.
            Engine::Dragonfly => {
                if let Some(bad) = [name, value]
                    .into_iter()
                    .find(|s| s.chars().any(char::is_control))
                {
                    return Err(BuildError::Invalid {
                        name: kc.name_any(),
                        message: format!(
                            "spec.config.{name}: {bad:?} cannot be one line of a Dragonfly \
                             flag file"
                        ),
                    });
                }
                text.push_str(&format!("--{name}={value}\n"));
            }
            // kvpilot's own values are written as the parser expects them (`replicaof` takes
            // two arguments); a user's value is one argument, quoted when needed.
            Engine::Valkey | Engine::Redis if spec.config.contains_key(name) => {
                text.push_str(&format!("{name} {}\n", quote(value)));
            }
            Engine::Valkey | Engine::Redis => text.push_str(&format!("{name} {value}\n")),
        }
    }
    let digest = hex::encode(&Sha256::digest(text.as_bytes())[..5]);
    Ok(RenderedConfig { text, digest })
}

/// The ConfigMap holding `rendered`, named `<name>-config-<digest>`.
pub fn config_map(kc: &KvCluster, rendered: &RenderedConfig) -> Result<ConfigMap, BuildError> {
    Ok(ConfigMap {
        metadata: owned_meta(kc, config_map_name(kc, rendered), BTreeMap::new())?,
        data: Some(BTreeMap::from([(
            CONFIG_FILE.to_string(),
            rendered.text.clone(),
        )])),
        immutable: Some(true),
        ..Default::default()
    })
}

/// `<name>-config-<digest>`.
pub fn config_map_name(kc: &KvCluster, rendered: &RenderedConfig) -> String {
    format!("{}-config-{}", kc.name_any(), rendered.digest)
}

/// Every setting in the file, by name: what kvpilot manages, then defaults, settings gated on
/// the engine version, and the user's `spec.config` (which `validate_spec` keeps away from the
/// managed names), later ones overriding earlier ones.
fn member_settings(kc: &KvCluster) -> Result<BTreeMap<String, String>, BuildError> {
    let spec = &kc.spec;
    let mut settings = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        settings.insert(k.to_string(), v);
    };
    set("dir", DATA_DIR.to_string());
    match spec.engine.kind {
        Engine::Dragonfly => {
            // Like Valkey members, a Dragonfly member starts as a replica of the primary
            // Service; its flag takes `host:port` (checked against its `--replicaof` parser).
            set("replicaof", format!("{}:{PORT}", primary_host(kc)?));
            if spec.tls.is_some() {
                set("tls", "true".into());
                set("tls_cert_file", format!("{TLS_DIR}/tls.crt"));
                set("tls_key_file", format!("{TLS_DIR}/tls.key"));
                set("tls_ca_cert_file", format!("{TLS_DIR}/ca.crt"));
            }
            set("port", PORT.to_string());
            // Managed snapshots: Dragonfly takes none on its own until the operator sets each
            // member's `snapshot_cron` (an empty flag is Dragonfly's "no schedule").
            if spec.snapshots.is_some() {
                set("snapshot_cron", String::new());
            }
        }
        Engine::Valkey | Engine::Redis => {
            set("bind", "* -::*".into());
            set("protected-mode", "no".into());
            if let Some(tls) = &spec.tls {
                set("port", "0".into());
                set("tls-port", PORT.to_string());
                set("tls-cert-file", format!("{TLS_DIR}/tls.crt"));
                set("tls-key-file", format!("{TLS_DIR}/tls.key"));
                set("tls-ca-cert-file", format!("{TLS_DIR}/ca.crt"));
                set("tls-replication", "yes".into());
                let client_auth = match tls.client_auth {
                    TlsClientAuth::Optional => "optional",
                    TlsClientAuth::Required => "yes",
                };
                set("tls-auth-clients", client_auth.into());
            } else {
                set("port", PORT.to_string());
            }
            if spec.shards > 1 {
                cluster_settings(&mut set);
                if spec.tls.is_some() {
                    // The cluster bus carries every write a replica gets: TLS too.
                    set("tls-cluster", "yes".into());
                }
            } else {
                set("replicaof", format!("{} {PORT}", primary_host(kc)?));
            }
            if let Some(auth) = spec.auth.as_ref().filter(|a| a.acl_secret.is_some()) {
                set("aclfile", format!("{ACL_DIR}/{ACL_FILE}"));
                // The user replicas authenticate to their primary as; its password
                // (`masterauth`) comes from the Secret through the container args.
                if let Some(user) = &auth.username {
                    set("masteruser", user.clone());
                }
            }
            // Start full syncs at once.
            set("repl-diskless-sync-delay", "0".into());
            if spec.snapshots.is_some() {
                // Managed snapshots: the engine saves nothing on its own from its first
                // second (the operator runs BGSAVE; drift is corrected later, but a pod must
                // not fork on the default `save` rules until then, on the primary least of
                // all). With `save ""` the server counts persistence as off and
                // `rdb-del-sync-files yes` would make a replica delete dump.rdb after every
                // full sync: that file is the operator's last snapshot (checked against
                // valkey-server 8.0 and redis-server 7.0), so it is kept. A member restarted
                // from it holds older data with the replication offset the RDB records, and
                // the data-holding guard compares offsets among data holders, so it is only
                // promoted when nothing newer exists, which is what a snapshot is for.
                set("save", "\"\"".into());
                set("rdb-del-sync-files", "no".into());
            } else {
                // Persistence off: drop the RDB a replica received, so a restarted member
                // comes back empty instead of passing a stale copy for data (the
                // data-holding guard relies on it).
                set("rdb-del-sync-files", "yes".into());
            }
        }
    }
    settings.extend(gating::gated_settings(spec));
    settings.extend(spec.config.clone());
    Ok(settings)
}

/// Cluster mode (`spec.shards` > 1), the settings the local platform uses too (see
/// `platform::local::server::ServerCluster` for why each one):
/// - no `replicaof`: the engine refuses it with `cluster-enabled`; a member starts empty and
///   alone (or on its `nodes.conf`) and the operator MEETs it and REPLICATEs it;
/// - `cluster-replica-no-failover yes`: the engine's own election cannot race the
///   replica-selection hook; the operator promotes with `CLUSTER FAILOVER FORCE`;
/// - `cluster-allow-replica-migration no`, `cluster-require-full-coverage no`;
/// - `cluster-preferred-endpoint-type hostname`: redirections (MOVED/ASK, `CLUSTER SLOTS`/
///   `SHARDS`) name each member by the stable DNS name it announces
///   (`cluster-announce-hostname`, set per pod in the container args), not by its pod IP,
///   which changes whenever the pod is recreated; a client never chases a stale IP, and a TLS
///   client can verify the name against the certificate.
fn cluster_settings(set: &mut impl FnMut(&str, String)) {
    set("cluster-enabled", "yes".into());
    set("cluster-config-file", NODES_CONF.into());
    set("cluster-port", BUS_PORT.to_string());
    set("cluster-node-timeout", CLUSTER_NODE_TIMEOUT_MS.to_string());
    set("cluster-replica-no-failover", "yes".into());
    set("cluster-allow-replica-migration", "no".into());
    set("cluster-require-full-coverage", "no".into());
    set("cluster-preferred-endpoint-type", "hostname".into());
}

/// Quotes a value when the config parser would otherwise split or misread it.
fn quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| !c.is_whitespace() && c != '"' && c != '\'' && c != '\\');
    if plain {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use crate::api::KvClusterSpec;

    fn lines(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn members_start_as_replicas_of_the_primary_service() {
        let kc = cluster(valkey("8.0"));
        let rendered = render(&kc).unwrap();
        let l = lines(&rendered.text);
        assert!(
            l.contains(&"replicaof cache-primary.shop.svc 6379"),
            "{l:?}"
        );
        assert!(l.contains(&"port 6379"));
        assert!(l.contains(&"dir /data"));
        assert!(l.contains(&"bind * -::*"));
        assert!(l.contains(&"maxmemory-policy noeviction"));
        assert!(!rendered.text.contains("shutdown-on-sigterm"));
        let mut kc = kc;
        kc.spec
            .config
            .insert("save".into(), "3600 1 300 100".into());
        let text = render(&kc).unwrap().text;
        assert!(lines(&text).contains(&"save \"3600 1 300 100\""), "{text}");
    }

    fn with_snapshots(mut spec: KvClusterSpec) -> KvClusterSpec {
        spec.snapshots = Some(crate::api::SnapshotSpec {
            mode: crate::api::SnapshotModeSpec::ReplicasOnly,
            schedule: "0 3 * * *".into(),
            stagger_interval: "10m".into(),
            location: crate::api::SnapshotLocation::DataDir,
        });
        spec
    }

    #[test]
    fn managed_snapshots_turn_the_engines_own_saves_off_and_keep_the_rdb() {
        for kind in [Engine::Valkey, Engine::Redis] {
            let mut spec = valkey("8.0");
            spec.engine.kind = kind;
            let without = render(&cluster(spec.clone())).unwrap().text;
            let l = lines(&without);
            // Without spec.snapshots the engine's defaults (or spec.config) apply.
            assert!(!l.iter().any(|l| l.starts_with("save")), "{without}");
            assert!(l.contains(&"rdb-del-sync-files yes"), "{without}");
            let managed = render(&cluster(with_snapshots(spec))).unwrap();
            let l = lines(&managed.text);
            assert!(l.contains(&"save \"\""), "{}", managed.text);
            assert!(l.contains(&"rdb-del-sync-files no"), "{}", managed.text);
            assert!(!l.contains(&"rdb-del-sync-files yes"), "{}", managed.text);
            // A different file, so turning snapshots on rolls the members onto it.
            assert_ne!(
                managed.digest,
                render(&cluster(valkey("8.0"))).unwrap().digest
            );
        }
        let mut spec = valkey("1.27");
        spec.engine.kind = Engine::Dragonfly;
        let without = render(&cluster(spec.clone())).unwrap().text;
        assert!(!without.contains("snapshot_cron"), "{without}");
        let managed = render(&cluster(with_snapshots(spec))).unwrap().text;
        let l = lines(&managed);
        assert!(l.contains(&"--snapshot_cron="), "{managed}");
        assert!(!managed.contains("rdb-del-sync-files"), "{managed}");
        assert!(!l.iter().any(|l| l.starts_with("save")), "{managed}");
    }

    #[test]
    fn cluster_mode_members_start_alone_with_the_local_platforms_cluster_settings() {
        let mut kc = cluster(valkey("8.0"));
        kc.spec.shards = 3;
        let text = render(&kc).unwrap().text;
        let l = lines(&text);
        for want in [
            "cluster-enabled yes",
            "cluster-config-file nodes.conf",
            "dir /data",
            "cluster-port 16379",
            "cluster-node-timeout 5000",
            "cluster-replica-no-failover yes",
            "cluster-allow-replica-migration no",
            "cluster-require-full-coverage no",
            "cluster-preferred-endpoint-type hostname",
        ] {
            assert!(l.contains(&want), "{want} missing: {text}");
        }
        // The engine refuses `replicaof` with cluster-enabled; the announced name is per pod
        // (container args), never in the shared file.
        assert!(!text.contains("replicaof"), "{text}");
        assert!(!text.contains("cluster-announce"), "{text}");
        assert!(!text.contains("tls-cluster"), "{text}");
        kc.spec.tls = Some(crate::api::TlsSpec {
            secret_name: "cache-tls".into(),
            client_auth: TlsClientAuth::Optional,
        });
        assert!(lines(&render(&kc).unwrap().text).contains(&"tls-cluster yes"));
        // One shard stays replication mode.
        let one = render(&cluster(valkey("8.0"))).unwrap().text;
        assert!(!one.contains("cluster-enabled"), "{one}");
    }

    #[test]
    fn valkey_9_gets_failover_on_sigterm() {
        let rendered = render(&cluster(valkey("9.0"))).unwrap();
        assert!(
            lines(&rendered.text).contains(&"shutdown-on-sigterm failover"),
            "{}",
            rendered.text
        );
        assert!(lines(&rendered.text).contains(&"shutdown-timeout 10"));
    }

    #[test]
    fn tls_and_acl_point_at_the_mounted_secrets() {
        let mut spec = valkey("8.0");
        spec.tls = Some(crate::api::TlsSpec {
            secret_name: "cache-tls".into(),
            client_auth: TlsClientAuth::Optional,
        });
        spec.auth = Some(crate::api::AuthSpec {
            password_secret: Some(crate::api::SecretKeyRef {
                name: "cache-acl".into(),
                key: "kvpilot-password".into(),
            }),
            acl_secret: Some(crate::api::SecretKeyRef {
                name: "cache-acl".into(),
                key: "users".into(),
            }),
            username: Some("kvpilot".into()),
        });
        let text = render(&cluster(spec.clone())).unwrap().text;
        let l = lines(&text);
        assert!(l.contains(&"port 0"));
        assert!(l.contains(&"tls-port 6379"));
        assert!(l.contains(&"tls-replication yes"));
        assert!(l.contains(&"tls-auth-clients optional"));
        assert!(l.contains(&"tls-cert-file /etc/kvpilot/tls/tls.crt"));
        assert!(l.contains(&"aclfile /etc/kvpilot/acl/users.acl"));
        assert!(l.contains(&"masteruser kvpilot"));
        assert!(!text.contains("requirepass"));
        spec.tls.as_mut().unwrap().client_auth = TlsClientAuth::Required;
        let text = render(&cluster(spec)).unwrap().text;
        assert!(lines(&text).contains(&"tls-auth-clients yes"), "{text}");
    }

    #[test]
    fn the_config_map_name_follows_the_content() {
        let kc = cluster(valkey("8.0"));
        let a = render(&kc).unwrap();
        assert_eq!(a, render(&kc).unwrap());
        let mut changed = kc.clone();
        changed.spec.config.insert("hz".into(), "20".into());
        let b = render(&changed).unwrap();
        assert_ne!(a.digest, b.digest);
        let cm = config_map(&kc, &a).unwrap();
        assert_eq!(
            cm.metadata.name.as_deref(),
            Some(format!("cache-config-{}", a.digest).as_str())
        );
        assert_eq!(cm.data.unwrap()[CONFIG_FILE], a.text);
        assert_eq!(cm.immutable, Some(true));
    }

    #[test]
    fn values_with_spaces_or_quotes_are_quoted() {
        assert_eq!(quote("noeviction"), "noeviction");
        assert_eq!(quote("3600 1 300 100"), "\"3600 1 300 100\"");
        assert_eq!(quote(""), "\"\"");
        assert_eq!(quote("a\"b"), "\"a\\\"b\"");
    }

    #[test]
    fn dragonfly_gets_a_flag_file() {
        let mut spec = valkey("1.27");
        spec.engine.kind = Engine::Dragonfly;
        let text = render(&cluster(spec)).unwrap().text;
        let l = lines(&text);
        assert!(l.contains(&"--port=6379"), "{l:?}");
        assert!(l.contains(&"--maxmemory-policy=noeviction"));
        // `host:port`, one argument: Dragonfly's flag parser splits at the last `:`.
        assert!(
            l.contains(&"--replicaof=cache-primary.shop.svc:6379"),
            "{l:?}"
        );
    }

    #[test]
    fn a_dragonfly_value_stays_one_flag() {
        let mut spec = valkey("1.27");
        spec.engine.kind = Engine::Dragonfly;
        spec.config.insert(
            "notify_keyspace_events".into(),
            "a b --requirepass=x =y".into(),
        );
        let text = render(&cluster(spec.clone())).unwrap().text;
        let flags: Vec<&str> = lines(&text)
            .into_iter()
            .filter(|l| l.contains("requirepass"))
            .collect();
        // The whole value is the value of one flag, on its own line.
        assert_eq!(
            flags,
            ["--notify_keyspace_events=a b --requirepass=x =y"],
            "{text}"
        );
        // A value that would start another line (another flag) is refused, by validation
        // and by the renderer itself.
        for value in ["noeviction\n--requirepass=owned", "x\r\n--admin_nopass"] {
            let mut bad = spec.clone();
            bad.config.insert("maxmemory_policy".into(), value.into());
            let kc = cluster(bad);
            let e = super::super::desired_objects(&kc).unwrap_err().to_string();
            assert!(e.contains("spec.config.maxmemory_policy"), "{e}");
            let e = render(&kc).unwrap_err().to_string();
            assert!(e.contains("spec.config.maxmemory_policy"), "{e}");
        }
    }
}
