//! One StatefulSet per shard. `updateStrategy: OnDelete`: Kubernetes never restarts a member on
//! its own; the reconciler deletes stale pods one at a time, after a handover when the pod is
//! the primary.

use super::config::{
    self, ACL_DIR, ACL_FILE, BUS_PORT, CONFIG_DIR, CONFIG_FILE, DATA_DIR, PORT, TLS_DIR,
};
use super::{
    BuildError, LABEL_ROLE, LABEL_SHARD, ROLE_REPLICA, cluster_labels, cluster_selector,
    owned_meta, shard_name, shard_selector,
};
use crate::api::{EngineSpec, KvCluster};
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, KeyToPath, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, SeccompProfile, SecretKeySelector, SecretVolumeSource, SecurityContext,
    TCPSocketAction, Volume, VolumeMount, VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kvpilot_sdk::Engine;
use std::collections::BTreeMap;

/// Seconds a pod gets beyond the handover timeout to stop: the shutdown (a final save, a
/// failover on SIGTERM) waits up to the handover timeout, and must finish before SIGKILL.
pub const SHUTDOWN_MARGIN_SECONDS: i64 = 30;
/// The user and group of the official Valkey and Redis images.
pub const SERVER_UID: i64 = 999;
/// The environment variable the password Secret is exposed as (expanded in the args).
pub const PASSWORD_ENV: &str = "KVPILOT_PASSWORD";
/// Cluster mode: the environment variable holding the pod's name (downward API), expanded in
/// the args into the member's `cluster-announce-hostname`.
pub const POD_NAME_ENV: &str = "KVPILOT_POD_NAME";
/// The Valkey release members run when the spec names neither an image nor a version.
pub const DEFAULT_VALKEY: &str = "8.1";
/// The Redis release members run when the spec names neither an image nor a version.
pub const DEFAULT_REDIS: &str = "7.4";
/// The pod volume holding the member configuration (the ConfigMap).
pub const CONFIG_VOLUME: &str = "config";
/// The name of the server container.
pub const SERVER_CONTAINER: &str = "server";
/// The data volume: the claim template's name with `spec.storage`, else an `emptyDir`.
pub const DATA_VOLUME: &str = "data";

/// Shard `shard`'s StatefulSet, whose pods run the config in `rendered`.
pub fn statefulset(
    kc: &KvCluster,
    shard: u32,
    rendered: &config::RenderedConfig,
) -> Result<StatefulSet, BuildError> {
    let spec = &kc.spec;
    let name = shard_name(&kc.name_any(), shard);
    let shard_label = BTreeMap::from([(LABEL_SHARD.to_string(), shard.to_string())]);
    let mut pod_labels = cluster_labels(kc);
    pod_labels.extend(shard_selector(kc, shard));
    // Every pod starts as a replica; the reconciler relabels the one it promotes.
    pod_labels.insert(LABEL_ROLE.to_string(), ROLE_REPLICA.to_string());
    let grace = i64::from(spec.rollout.handover_timeout_seconds) + SHUTDOWN_MARGIN_SECONDS;

    Ok(StatefulSet {
        metadata: owned_meta(kc, name.clone(), shard_label)?,
        spec: Some(StatefulSetSpec {
            replicas: Some(
                i32::try_from(spec.replicas + 1).map_err(|_| BuildError::Invalid {
                    name: name.clone(),
                    message: "too many replicas".into(),
                })?,
            ),
            selector: LabelSelector {
                match_labels: Some(shard_selector(kc, shard)),
                ..Default::default()
            },
            service_name: Some(super::services::headless_name(kc)),
            // Members start together; roles come from the reconciler, not from start order.
            pod_management_policy: Some("Parallel".into()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".into()),
                rolling_update: None,
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..Default::default()
                }),
                spec: Some(pod_spec(kc, rendered, grace)),
            },
            volume_claim_templates: spec.storage.as_ref().map(|s| {
                vec![PersistentVolumeClaim {
                    metadata: ObjectMeta {
                        name: Some(DATA_VOLUME.into()),
                        labels: Some(cluster_labels(kc)),
                        ..Default::default()
                    },
                    spec: Some(PersistentVolumeClaimSpec {
                        access_modes: Some(if s.access_modes.is_empty() {
                            vec!["ReadWriteOnce".to_string()]
                        } else {
                            s.access_modes
                                .iter()
                                .map(|m| m.as_str().to_string())
                                .collect()
                        }),
                        storage_class_name: s.storage_class_name.clone(),
                        resources: Some(VolumeResourceRequirements {
                            requests: Some(BTreeMap::from([(
                                "storage".to_string(),
                                s.size.clone(),
                            )])),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        }),
        status: None,
    })
}

fn pod_spec(kc: &KvCluster, rendered: &config::RenderedConfig, grace: i64) -> PodSpec {
    let spec = &kc.spec;
    let mut volumes = vec![Volume {
        name: CONFIG_VOLUME.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: config::config_map_name(kc, rendered),
            ..Default::default()
        }),
        ..Default::default()
    }];
    let mut mounts = vec![
        mount(CONFIG_VOLUME, CONFIG_DIR, true),
        mount(DATA_VOLUME, DATA_DIR, false),
    ];
    if spec.storage.is_none() {
        volumes.push(Volume {
            name: DATA_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        });
    }
    if let Some(tls) = &spec.tls {
        volumes.push(secret_volume("tls", &tls.secret_name, None));
        mounts.push(mount("tls", TLS_DIR, true));
    }
    let acl = spec.auth.as_ref().and_then(|a| a.acl_secret.as_ref());
    if let Some(acl) = acl {
        volumes.push(secret_volume("acl", &acl.name, Some((&acl.key, ACL_FILE))));
        mounts.push(mount("acl", ACL_DIR, true));
    }

    let config_path = format!("{CONFIG_DIR}/{CONFIG_FILE}");
    let (command, mut args) = match spec.engine.kind {
        Engine::Valkey => ("valkey-server", vec![config_path]),
        Engine::Redis => ("redis-server", vec![config_path]),
        Engine::Dragonfly => ("dragonfly", vec![format!("--flagfile={config_path}")]),
    };
    let mut env = vec![];
    let cluster_mode = spec.shards > 1;
    if cluster_mode {
        env.push(EnvVar {
            name: POD_NAME_ENV.into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        // Each member announces its stable name through the headless Service (one ConfigMap
        // serves every pod, so the per-pod value comes from the args).
        args.extend([
            "--cluster-announce-hostname".to_string(),
            announce_hostname_arg(kc),
        ]);
    }
    if let Some(secret) = spec.auth.as_ref().and_then(|a| a.password_secret.as_ref()) {
        env.push(EnvVar {
            name: PASSWORD_ENV.into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.name.clone(),
                    key: secret.key.clone(),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        // Kubernetes expands `$(VAR)` in args, so the password never lands in the ConfigMap.
        let password = format!("$({PASSWORD_ENV})");
        // With an ACL file the file defines every user's password, and this one is only what
        // replicas authenticate to their primary with (as `masteruser`, in the config).
        let acl = spec.auth.as_ref().is_some_and(|a| a.acl_secret.is_some());
        match spec.engine.kind {
            Engine::Valkey | Engine::Redis if acl => {
                args.extend(["--masterauth".to_string(), password])
            }
            Engine::Valkey | Engine::Redis => {
                if cluster_mode {
                    // The `user` line resets `default`, password included: it carries it.
                    args.extend(parked_user_args(&format!(">{password}")));
                }
                args.extend([
                    "--requirepass".to_string(),
                    password.clone(),
                    "--masterauth".to_string(),
                    password,
                ])
            }
            // One `--name=value` argument each: Kubernetes does not split args, so the
            // password stays one value whatever it holds.
            Engine::Dragonfly => args.extend([
                format!("--requirepass={password}"),
                format!("--masterauth={password}"),
            ]),
        }
    }

    let password_set = spec
        .auth
        .as_ref()
        .is_some_and(|a| a.password_secret.is_some());
    if cluster_mode && !password_set && spec.engine.kind != Engine::Dragonfly {
        args.extend(parked_user_args("nopass"));
    }

    let tcp_probe = |period: i32, failures: i32| Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::String("resp".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Default::default()
    };

    PodSpec {
        termination_grace_period_seconds: Some(grace),
        enable_service_links: Some(false),
        automount_service_account_token: Some(false),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(SERVER_UID),
            run_as_group: Some(SERVER_UID),
            fs_group: Some(SERVER_UID),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        // Spread members over nodes when the scheduler can.
        affinity: Some(Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    WeightedPodAffinityTerm {
                        weight: 100,
                        pod_affinity_term: PodAffinityTerm {
                            label_selector: Some(LabelSelector {
                                match_labels: Some(cluster_selector(kc)),
                                ..Default::default()
                            }),
                            topology_key: "kubernetes.io/hostname".into(),
                            ..Default::default()
                        },
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        containers: vec![Container {
            name: SERVER_CONTAINER.into(),
            image: Some(image(kc)),
            command: Some(vec![command.to_string()]),
            args: Some(args),
            env: (!env.is_empty()).then_some(env),
            ports: Some(container_ports(cluster_mode)),
            resources: spec.resources.clone(),
            volume_mounts: Some(mounts),
            // Readiness only says the server accepts connections; whether a replica is in
            // sync is the reconciler's judgement, from INFO replication.
            readiness_probe: Some(tcp_probe(5, 2)),
            // Generous: killing a member that is loading a large dataset helps nobody.
            liveness_probe: Some(tcp_probe(10, 6)),
            security_context: Some(SecurityContext {
                allow_privilege_escalation: Some(false),
                read_only_root_filesystem: Some(true),
                capabilities: Some(Capabilities {
                    drop: Some(vec!["ALL".into()]),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }],
        volumes: Some(volumes),
        ..Default::default()
    }
}

/// The client port, and in cluster mode the cluster bus port (`bus`).
fn container_ports(cluster_mode: bool) -> Vec<ContainerPort> {
    let port = |name: &str, number: i32| ContainerPort {
        name: Some(name.into()),
        container_port: number,
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    let mut ports = vec![port("resp", PORT)];
    if cluster_mode {
        ports.push(port("bus", BUS_PORT));
    }
    ports
}

/// `--user default on <password> <parked rules>`: a cluster-mode member starts parked, so no
/// replica syncs from it and no client writes to it until the operator has judged its data
/// (rule 2, docs/architecture.md): a pod the kubelet restarts at once with its `nodes.conf`
/// but without its data must not be synced from by its replica. One arg per word: the server
/// reads the words after `--user` as one config line, quoting each (a password with spaces
/// stays one word).
fn parked_user_args(password: &str) -> Vec<String> {
    ["--user", "default", "on", password]
        .into_iter()
        .map(str::to_string)
        .chain(
            crate::engine::park::PARKED_RULES
                .split_whitespace()
                .map(str::to_string),
        )
        .collect()
}

/// `$(KVPILOT_POD_NAME).<name>-headless.<namespace>.svc`: the pod's stable DNS name through
/// the StatefulSets' governing Service, once Kubernetes expands the variable.
pub fn announce_hostname_arg(kc: &KvCluster) -> String {
    format!(
        "$({POD_NAME_ENV}).{}.{}.svc",
        super::services::headless_name(kc),
        kc.namespace().unwrap_or_default()
    )
}

/// The image: `engine.image`, or the engine's official image tagged with `engine.version`.
pub fn image(kc: &KvCluster) -> String {
    image_for(&kc.spec.engine)
}

/// The image members of `engine` run: `engine.image`, or the engine's official image tagged
/// with `engine.version`, or with kvpilot's default release of the engine when none is
/// declared (version gating reads the tag of this image, so it gates on what actually runs).
pub fn image_for(engine: &EngineSpec) -> String {
    if let Some(image) = &engine.image {
        return image.clone();
    }
    let version = engine.version.as_deref();
    match engine.kind {
        Engine::Valkey => format!(
            "docker.io/valkey/valkey:{}",
            version.unwrap_or(DEFAULT_VALKEY)
        ),
        Engine::Redis => format!(
            "docker.io/library/redis:{}",
            version.unwrap_or(DEFAULT_REDIS)
        ),
        Engine::Dragonfly => format!(
            "docker.dragonflydb.io/dragonflydb/dragonfly:{}",
            version.map_or("latest".to_string(), |v| format!("v{v}"))
        ),
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..Default::default()
    }
}

fn secret_volume(name: &str, secret: &str, key_as: Option<(&str, &str)>) -> Volume {
    Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            items: key_as.map(|(key, path)| {
                vec![KeyToPath {
                    key: key.into(),
                    path: path.into(),
                    ..Default::default()
                }]
            }),
            default_mode: Some(0o440),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::{LABEL_CLUSTER, desired_objects};
    use super::*;
    use crate::api::{AuthSpec, SecretKeyRef, StorageSpec};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn build(kc: &KvCluster) -> StatefulSet {
        desired_objects(kc).unwrap().statefulsets.remove(0)
    }

    /// The server container of the first StatefulSet's pods.
    fn server(kc: &KvCluster) -> Container {
        build(kc).spec.unwrap().template.spec.unwrap().containers[0].clone()
    }

    #[test]
    fn on_delete_with_a_grace_period_beyond_the_handover() {
        let mut spec = valkey("9.0");
        spec.rollout.handover_timeout_seconds = 45;
        let sts = build(&cluster(spec));
        assert_eq!(sts.metadata.name.as_deref(), Some("cache-s0"));
        let s = sts.spec.unwrap();
        assert_eq!(
            s.update_strategy.unwrap().type_.as_deref(),
            Some("OnDelete")
        );
        assert_eq!(s.replicas, Some(3));
        assert_eq!(s.service_name.as_deref(), Some("cache-headless"));
        let pod = s.template.spec.unwrap();
        assert!(pod.termination_grace_period_seconds.unwrap() > 45);
    }

    #[test]
    fn cluster_mode_pods_expose_the_bus_port_and_announce_their_stable_name() {
        let mut spec = valkey("8.0");
        spec.shards = 3;
        spec.storage = Some(StorageSpec {
            size: Quantity("1Gi".into()),
            storage_class_name: None,
            access_modes: vec![],
        });
        let kc = cluster(spec);
        let sts = desired_objects(&kc).unwrap().statefulsets.remove(2);
        assert_eq!(sts.metadata.name.as_deref(), Some("cache-s2"));
        let s = sts.spec.unwrap();
        // nodes.conf is in the data dir, which is the claim: it survives a new pod.
        assert_eq!(
            s.volume_claim_templates.unwrap()[0]
                .metadata
                .name
                .as_deref(),
            Some(DATA_VOLUME)
        );
        let pod = s.template.spec.unwrap();
        let c = &pod.containers[0];
        let ports: Vec<(String, i32)> = c
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.clone().unwrap(), p.container_port))
            .collect();
        assert_eq!(
            ports,
            [("resp".to_string(), 6379), ("bus".to_string(), 16379)]
        );
        let env = c.env.as_ref().unwrap();
        let pod_name = env.iter().find(|e| e.name == POD_NAME_ENV).unwrap();
        assert_eq!(
            pod_name
                .value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path,
            "metadata.name"
        );
        let args = c.args.as_ref().unwrap();
        let at = args
            .iter()
            .position(|a| a == "--cluster-announce-hostname")
            .expect("announce hostname");
        assert_eq!(args[at + 1], "$(KVPILOT_POD_NAME).cache-headless.shop.svc");
        // It starts parked (rule 2): no PSYNC/SYNC from it, no writes, until judged.
        let at = args
            .iter()
            .position(|a| a == "--user")
            .expect("parked user");
        assert_eq!(
            args[at + 1..at + 10],
            [
                "default", "on", "nopass", "~*", "&*", "+@all", "-@write", "-psync", "-sync"
            ]
        );
        // Replication mode: neither.
        let one = build(&cluster(valkey("8.0")))
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        let c = &one.containers[0];
        assert_eq!(c.ports.as_ref().unwrap().len(), 1);
        assert!(!c.args.iter().flatten().any(|a| a.contains("announce")));
        assert!(!c.args.iter().flatten().any(|a| a == "--user"));
    }

    #[test]
    fn pods_are_labelled_replicas_of_their_cluster_and_shard() {
        let sts = build(&cluster(valkey("8.0")));
        let s = sts.spec.unwrap();
        let labels = s.template.metadata.unwrap().labels.unwrap();
        assert_eq!(labels[LABEL_CLUSTER], "cache");
        assert_eq!(labels[LABEL_SHARD], "0");
        assert_eq!(labels[LABEL_ROLE], "replica");
        // The selector must not include the role: it changes on live pods.
        let selector = s.selector.match_labels.unwrap();
        assert!(!selector.contains_key(LABEL_ROLE));
        assert!(selector.iter().all(|(k, v)| labels.get(k) == Some(v)));
    }

    #[test]
    fn the_config_map_is_mounted_as_the_server_config() {
        let kc = cluster(valkey("8.0"));
        let objects = desired_objects(&kc).unwrap();
        let pod = objects.statefulsets[0]
            .clone()
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        let c = &pod.containers[0];
        assert_eq!(
            c.command.as_deref(),
            Some(&["valkey-server".to_string()][..])
        );
        assert_eq!(
            c.args.as_ref().unwrap()[0],
            "/etc/kvpilot/config/server.conf"
        );
        let config = pod
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "config")
            .unwrap();
        assert_eq!(
            config.config_map.unwrap().name,
            objects.config_map.metadata.name.unwrap()
        );
        assert_eq!(c.image.as_deref(), Some("docker.io/valkey/valkey:8.0"));
    }

    #[test]
    fn containers_are_non_root_with_a_read_only_root() {
        let pod = build(&cluster(valkey("8.0")))
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(true));
        let sc = pod.containers[0].security_context.clone().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
    }

    #[test]
    fn storage_becomes_a_claim_template_instead_of_an_empty_dir() {
        let mut spec = valkey("8.0");
        spec.storage = Some(StorageSpec {
            size: Quantity("5Gi".into()),
            storage_class_name: Some("fast".into()),
            access_modes: vec![],
        });
        let s = build(&cluster(spec)).spec.unwrap();
        let claim = &s.volume_claim_templates.unwrap()[0];
        assert_eq!(claim.metadata.name.as_deref(), Some("data"));
        let cs = claim.spec.clone().unwrap();
        assert_eq!(cs.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(cs.resources.unwrap().requests.unwrap()["storage"].0, "5Gi");
        let volumes = s.template.spec.unwrap().volumes.unwrap();
        assert!(volumes.iter().all(|v| v.name != "data"));

        let s = build(&cluster(valkey("8.0"))).spec.unwrap();
        assert!(s.volume_claim_templates.is_none());
        let volumes = s.template.spec.unwrap().volumes.unwrap();
        assert!(
            volumes
                .iter()
                .any(|v| v.name == "data" && v.empty_dir.is_some())
        );
    }

    #[test]
    fn the_password_comes_from_the_secret_not_the_config() {
        let mut spec = valkey("8.0");
        spec.auth = Some(AuthSpec {
            password_secret: Some(SecretKeyRef {
                name: "cache-auth".into(),
                key: "password".into(),
            }),
            acl_secret: None,
            username: None,
        });
        let kc = cluster(spec);
        let objects = desired_objects(&kc).unwrap();
        let c = server(&kc);
        let args = c.args.unwrap();
        assert!(
            args.windows(2)
                .any(|w| w == ["--masterauth", "$(KVPILOT_PASSWORD)"])
        );
        let env = &c.env.unwrap()[0];
        let from = env.value_from.clone().unwrap().secret_key_ref.unwrap();
        assert_eq!(
            (from.name.as_str(), from.key.as_str()),
            ("cache-auth", "password")
        );
        assert!(!objects.config_map.data.unwrap()[CONFIG_FILE].contains("requirepass"));
        assert!(!args.iter().any(|a| a == "--user"));

        // Cluster mode: the parked `default` user line carries the password, since it resets
        // what `requirepass` set.
        let mut sharded = kc.spec.clone();
        sharded.shards = 3;
        let args = server(&cluster(sharded)).args.unwrap();
        let at = args
            .iter()
            .position(|a| a == "--user")
            .expect("parked user");
        assert_eq!(
            args[at + 1..at + 4],
            ["default", "on", ">$(KVPILOT_PASSWORD)"]
        );
    }

    #[test]
    fn dragonfly_members_get_the_password_for_clients_and_for_their_primary() {
        let mut spec = valkey("1.27");
        spec.engine.kind = kvpilot_sdk::Engine::Dragonfly;
        spec.auth = Some(AuthSpec {
            password_secret: Some(SecretKeyRef {
                name: "cache-auth".into(),
                key: "password".into(),
            }),
            acl_secret: None,
            username: None,
        });
        let pod = build(&cluster(spec)).spec.unwrap().template.spec.unwrap();
        let c = &pod.containers[0];
        assert_eq!(c.command.as_deref(), Some(&["dragonfly".to_string()][..]));
        assert_eq!(
            c.args.clone().unwrap(),
            [
                "--flagfile=/etc/kvpilot/config/server.conf",
                "--requirepass=$(KVPILOT_PASSWORD)",
                "--masterauth=$(KVPILOT_PASSWORD)",
            ]
        );
    }

    #[test]
    fn with_an_acl_file_the_password_is_only_masterauth() {
        let mut spec = valkey("8.0");
        let key = |name: &str, key: &str| SecretKeyRef {
            name: name.into(),
            key: key.into(),
        };
        spec.auth = Some(AuthSpec {
            password_secret: Some(key("cache-acl", "kvpilot-password")),
            acl_secret: Some(key("cache-acl", "users.acl")),
            username: Some("kvpilot".into()),
        });
        spec.tls = Some(crate::api::TlsSpec {
            secret_name: "cache-tls".into(),
            client_auth: Default::default(),
        });
        let pod = build(&cluster(spec)).spec.unwrap().template.spec.unwrap();
        let args = pod.containers[0].args.clone().unwrap();
        assert!(!args.iter().any(|a| a == "--requirepass"), "{args:?}");
        assert!(
            args.windows(2)
                .any(|w| w == ["--masterauth", "$(KVPILOT_PASSWORD)"]),
            "{args:?}"
        );
        let volumes = pod.volumes.unwrap();
        let secret_of = |name: &str| {
            volumes
                .iter()
                .find(|v| v.name == name)
                .and_then(|v| v.secret.clone())
                .unwrap_or_else(|| panic!("no {name} volume"))
        };
        assert_eq!(secret_of("tls").secret_name.as_deref(), Some("cache-tls"));
        let acl = secret_of("acl");
        assert_eq!(acl.secret_name.as_deref(), Some("cache-acl"));
        assert_eq!(acl.items.unwrap()[0].path, ACL_FILE);
        let mounts = pod.containers[0].volume_mounts.clone().unwrap();
        assert!(
            mounts
                .iter()
                .any(|m| m.name == "tls" && m.mount_path == TLS_DIR)
        );
        assert!(
            mounts
                .iter()
                .any(|m| m.name == "acl" && m.mount_path == ACL_DIR)
        );
    }

    #[test]
    fn the_image_defaults_from_the_engine_and_version() {
        let mut spec = valkey("9.0");
        assert_eq!(image(&cluster(spec.clone())), "docker.io/valkey/valkey:9.0");
        spec.engine.image = Some("registry.local/valkey:custom".into());
        assert_eq!(image(&cluster(spec)), "registry.local/valkey:custom");
    }
}
