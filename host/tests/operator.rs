//! The operator's reconcile against an in-memory Kubernetes API (`kube-fake-client`, a real
//! `kube::Client`; it has no watch, so reconciles are driven directly), and end to end with a
//! stand-in StatefulSet controller/kubelet backing each Pod with a real `valkey-server`.

mod operator_support;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, PostParams};
use kube::{Resource, ResourceExt};
use kvpilot::api::{KvCluster, PolicyPlugin, PolicyPluginSpec};
use kvpilot::demo::{verify, writer::Writer};
use kvpilot::platform::local::forwarder::Forwarder;
use kvpilot::platform::local::server::{free_port, next_loopback_ip};
use operator_support::kubelet::Kubelet;
use operator_support::*;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const PHASE: Duration = Duration::from_secs(60);

fn owned_by(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, kc: &KvCluster) {
    let owner = &meta.owner_references.as_ref().expect("owner references")[0];
    assert_eq!(owner.kind, "KvCluster");
    assert_eq!(Some(&owner.uid), kc.meta().uid.as_ref());
    assert_eq!(owner.controller, Some(true));
}

#[tokio::test]
async fn reconcile_creates_owned_objects_and_reports_status() {
    let client = fake_client().await;
    let kc = create_cluster(
        &client,
        "cache",
        spec("engine: {kind: valkey, version: \"8.0\"}\nreplicas: 2\n"),
    )
    .await;
    let ctx = context(&client, 6379);
    reconcile_once(&client, &ctx, "cache").await;

    let sts = Api::<StatefulSet>::namespaced(client.clone(), NS)
        .get("cache-s0")
        .await
        .unwrap();
    owned_by(&sts.metadata, &kc);
    let sts_spec = sts.spec.unwrap();
    assert_eq!(sts_spec.replicas, Some(3));
    assert_eq!(
        sts_spec.update_strategy.unwrap().type_.as_deref(),
        Some("OnDelete")
    );
    let services = Api::<Service>::namespaced(client.clone(), NS)
        .list(&Default::default())
        .await
        .unwrap();
    let mut names: Vec<String> = services.items.iter().map(|s| s.name_any()).collect();
    names.sort();
    assert_eq!(names, ["cache-headless", "cache-primary", "cache-replicas"]);
    for s in &services.items {
        owned_by(&s.metadata, &kc);
    }
    let primary = services
        .items
        .iter()
        .find(|s| s.name_any() == "cache-primary")
        .unwrap();
    assert_eq!(
        primary.spec.as_ref().unwrap().selector.as_ref().unwrap()["kvpilot.dev/role"],
        "primary"
    );
    let pdb = Api::<PodDisruptionBudget>::namespaced(client.clone(), NS)
        .get("cache-s0")
        .await
        .unwrap();
    owned_by(&pdb.metadata, &kc);
    let cms = Api::<ConfigMap>::namespaced(client.clone(), NS)
        .list(&Default::default())
        .await
        .unwrap();
    assert_eq!(cms.items.len(), 1);
    owned_by(&cms.items[0].metadata, &kc);
    assert!(
        cms.items[0].data.as_ref().unwrap()["server.conf"]
            .contains("replicaof cache-primary.shop.svc 6379")
    );

    let status = get_cluster(&client, "cache").await.status.expect("status");
    assert_eq!(status.observed_generation, kc.metadata.generation);
    assert_eq!(status.members.len(), 3, "{status:?}");
    assert!(
        status.members.iter().all(|m| m.role == "down"),
        "{status:?}"
    );
    assert_eq!(status.condition("Ready").unwrap().status, "False");

    // A spec change renders a new ConfigMap; the old one goes once nothing mounts it.
    let api: Api<KvCluster> = Api::namespaced(client.clone(), NS);
    let mut changed = get_cluster(&client, "cache").await;
    changed.spec.config.insert("hz".into(), "20".into());
    api.replace("cache", &PostParams::default(), &changed)
        .await
        .unwrap();
    reconcile_once(&client, &ctx, "cache").await;
    let cms = Api::<ConfigMap>::namespaced(client.clone(), NS)
        .list(&Default::default())
        .await
        .unwrap();
    assert_eq!(cms.items.len(), 1);
    assert!(cms.items[0].data.as_ref().unwrap()["server.conf"].contains("hz 20"));
}

/// Rule 9: an operator that does not lead (its lease expired while it was paused, or another
/// holds it) writes nothing: no object, no status, no event.
#[tokio::test]
async fn an_operator_that_does_not_lead_writes_nothing() {
    struct Follower;
    impl kvpilot::leadership::Leadership for Follower {
        fn check(&self) -> Result<(), kvpilot::leadership::NotLeader> {
            Err(kvpilot::leadership::NotLeader(
                "another operator holds the lease".into(),
            ))
        }
    }
    let client = fake_client().await;
    create_cluster(
        &client,
        "cache",
        spec("engine: {kind: valkey}\nreplicas: 2\n"),
    )
    .await;
    let ctx = context_with_leadership(&client, 6379, Arc::new(Follower));
    reconcile_once(&client, &ctx, "cache").await;
    let statefulsets = Api::<StatefulSet>::namespaced(client.clone(), NS)
        .list(&Default::default())
        .await
        .unwrap();
    assert!(statefulsets.items.is_empty(), "no StatefulSet");
    let services = Api::<Service>::namespaced(client.clone(), NS)
        .list(&Default::default())
        .await
        .unwrap();
    assert!(services.items.is_empty(), "no Service");
    assert!(
        get_cluster(&client, "cache").await.status.is_none(),
        "no status"
    );
    assert!(events_about(&client, "cache").await.is_empty(), "no event");
    // The leader does it all.
    let leader = context(&client, 6379);
    reconcile_once(&client, &leader, "cache").await;
    assert!(
        Api::<StatefulSet>::namespaced(client.clone(), NS)
            .get_opt("cache-s0")
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn an_invalid_spec_sets_a_condition_and_creates_nothing() {
    let client = fake_client().await;
    create_cluster(
        &client,
        "big",
        // Dragonfly's cluster is not driven (the CRD rule says so too).
        spec("engine: {kind: dragonfly}\nreplicas: 1\nshards: 3\n"),
    )
    .await;
    let ctx = context(&client, 6379);
    reconcile_once(&client, &ctx, "big").await;
    let status = get_cluster(&client, "big").await.status.expect("status");
    let ready = status.condition("Ready").expect("Ready");
    assert_eq!(ready.status, "False");
    assert_eq!(ready.reason, "InvalidSpec");
    assert!(ready.message.contains("shards"), "{}", ready.message);
    let sts = Api::<StatefulSet>::namespaced(client.clone(), NS)
        .list(&Default::default())
        .await
        .unwrap();
    assert!(sts.items.is_empty());
    let cms = Api::<ConfigMap>::namespaced(client.clone(), NS)
        .list(&Default::default())
        .await
        .unwrap();
    assert!(cms.items.is_empty());
}

/// A setting that would undermine a safety rule is refused naming the key, as a condition and
/// an Event, and nothing is applied; so is a Dragonfly value that would inject a flag.
#[tokio::test]
async fn a_forbidden_config_key_is_a_condition_and_an_event_naming_it() {
    let client = fake_client().await;
    for (name, yaml, field) in [
        (
            "renamed",
            "engine: {kind: valkey}\nconfig: {rename-command: \"CONFIG ''\"}\n",
            "spec.config.rename-command",
        ),
        (
            "writable",
            "engine: {kind: valkey}\nconfig: {replica-read-only: \"no\"}\n",
            "spec.config.replica-read-only",
        ),
        (
            "injected",
            "engine: {kind: dragonfly}\nconfig: {maxmemory: \"1gb\\n--admin_nopass=true\"}\n",
            "spec.config.maxmemory",
        ),
        (
            "crowded",
            "engine: {kind: valkey}\nreplicas: 9\n",
            "spec.replicas",
        ),
    ] {
        create_cluster(&client, name, spec(yaml)).await;
        let ctx = context(&client, 6379);
        reconcile_once(&client, &ctx, name).await;
        let status = get_cluster(&client, name).await.status.expect("status");
        let (on, reason, message) = condition_of(&status, "Ready");
        assert_eq!((on.as_str(), reason.as_str()), ("False", "InvalidSpec"));
        assert!(message.contains(field), "{name}: {message}");
        let event = event(&client, name, "InvalidSpec")
            .await
            .unwrap_or_else(|| panic!("{name}: no InvalidSpec event"));
        let note = event.note.unwrap_or_default();
        assert!(note.contains(field), "{name}: {note}");
        assert!(
            !note.contains('\n'),
            "{name}: the note is one line: {note:?}"
        );
    }
    let sts = Api::<StatefulSet>::namespaced(client.clone(), NS)
        .list(&Default::default())
        .await
        .unwrap();
    assert!(
        sts.items.is_empty(),
        "nothing is applied for an invalid spec"
    );
}

/// The controller's own actions are Events on the KvCluster, naming the object: a Service
/// recreated (headless ↔ ClusterIP), per-pod Services pruned, the ConfigMap of the old
/// revision collected.
#[tokio::test]
async fn recreating_pruning_and_collecting_are_events() {
    let client = fake_client().await;
    create_cluster(
        &client,
        "cache",
        spec("engine: {kind: valkey}\nreplicas: 1\nservice: {perPod: true, type: ClusterIP}\n"),
    )
    .await;
    let ctx = context(&client, 6379);
    reconcile_once(&client, &ctx, "cache").await;
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    assert!(services.get_opt("cache-s0-1").await.unwrap().is_some());
    let old_cm = Api::<ConfigMap>::namespaced(client.clone(), NS)
        .list(&Default::default())
        .await
        .unwrap()
        .items[0]
        .name_any();

    let mut kc = get_cluster(&client, "cache").await;
    kc.spec.service.per_pod = false;
    kc.spec.service.service_type = kvpilot::api::ServiceType::Headless;
    kc.spec.config.insert("hz".into(), "20".into());
    Api::<KvCluster>::namespaced(client.clone(), NS)
        .replace("cache", &PostParams::default(), &kc)
        .await
        .unwrap();
    reconcile_once(&client, &ctx, "cache").await;

    assert!(services.get_opt("cache-s0-1").await.unwrap().is_none());
    let events = events_about(&client, "cache").await;
    let about = |reason: &str, object: &str| {
        events.iter().find(|e| {
            e.reason.as_deref() == Some(reason)
                && e.related.as_ref().and_then(|r| r.name.as_deref()) == Some(object)
        })
    };
    let recreated = about("ServiceRecreated", "cache-primary").expect("ServiceRecreated");
    assert_eq!(recreated.type_.as_deref(), Some("Normal"));
    assert!(
        recreated
            .note
            .as_deref()
            .unwrap_or_default()
            .contains("clusterIP"),
        "{recreated:?}"
    );
    assert!(
        about("ServiceRecreated", "cache-replicas").is_some(),
        "{events:?}"
    );
    for pod in ["cache-s0-0", "cache-s0-1"] {
        let pruned = about("Pruned", pod).unwrap_or_else(|| panic!("{pod} pruned: {events:?}"));
        assert_eq!(
            pruned.related.as_ref().and_then(|r| r.kind.as_deref()),
            Some("Service")
        );
    }
    let collected = about("ConfigMapCollected", &old_cm).expect("ConfigMapCollected");
    assert_eq!(collected.type_.as_deref(), Some("Normal"));
}

/// A call the API refuses is a Warning event naming the object; the other objects are still
/// applied, and the reconcile goes on to write status.
#[tokio::test]
async fn a_refused_apply_is_a_warning_and_the_rest_is_still_applied() {
    use kube_fake_client::interceptor::Funcs;
    let refuse_pdbs = Funcs::new().patch(|ctx| {
        if ctx.patch["kind"] == "PodDisruptionBudget" {
            return Err(kube_fake_client::Error::InvalidRequest(
                "poddisruptionbudgets.policy is forbidden (test)".into(),
            ));
        }
        Ok(None)
    });
    let client = fake_client_with(refuse_pdbs).await;
    create_cluster(
        &client,
        "cache",
        spec("engine: {kind: valkey}\nreplicas: 1\n"),
    )
    .await;
    let ctx = context(&client, 6379);
    reconcile_once(&client, &ctx, "cache").await;

    let warning = event(&client, "cache", "ApplyFailed")
        .await
        .expect("an ApplyFailed event");
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    let note = warning.note.clone().unwrap_or_default();
    assert!(
        note.contains("PodDisruptionBudget shop/cache-s0") && note.contains("forbidden"),
        "{note}"
    );
    assert_eq!(
        warning.related.as_ref().and_then(|r| r.name.as_deref()),
        Some("cache-s0")
    );
    assert!(
        Api::<StatefulSet>::namespaced(client.clone(), NS)
            .get_opt("cache-s0")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        Api::<Service>::namespaced(client.clone(), NS)
            .get_opt("cache-primary")
            .await
            .unwrap()
            .is_some()
    );
    let status = get_cluster(&client, "cache").await.status.expect("status");
    assert_eq!(status.members.len(), 2, "{status:?}");
}

/// `volumeClaimTemplates` cannot change on a live StatefulSet (the fake API refuses it here
/// as the real one does). A storage change keeps the live claims, applies everything else,
/// and says what happened and what to do in a condition and one Warning event.
#[tokio::test]
async fn a_storage_change_keeps_the_live_claims_and_says_so() {
    use kube_fake_client::interceptor::Funcs;
    use std::sync::Mutex;
    let first: Arc<Mutex<BTreeMap<String, serde_json::Value>>> = Arc::default();
    let seen = first.clone();
    let immutable_claims = Funcs::new().patch(move |ctx| {
        if ctx.patch["kind"] != "StatefulSet" {
            return Ok(None);
        }
        let claims = ctx.patch["spec"]["volumeClaimTemplates"].clone();
        let mut seen = seen.lock().unwrap();
        match seen.get(ctx.name) {
            Some(before) if *before != claims => {
                Err(kube_fake_client::Error::InvalidRequest(format!(
                    "StatefulSet.apps \"{}\" is invalid: spec: Forbidden: updates to statefulset \
                     spec for fields other than 'replicas', 'ordinals', 'template', \
                     'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and \
                     'minReadySeconds' are forbidden",
                    ctx.name
                )))
            }
            Some(_) => Ok(None),
            None => {
                seen.insert(ctx.name.to_string(), claims);
                Ok(None)
            }
        }
    });
    let client = fake_client_with(immutable_claims).await;
    create_cluster(
        &client,
        "cache",
        spec("engine: {kind: valkey}\nreplicas: 1\nstorage: {size: 5Gi}\n"),
    )
    .await;
    let ctx = context(&client, 6379);
    reconcile_once(&client, &ctx, "cache").await;
    let storage = |kc: &KvCluster| {
        kc.status
            .as_ref()
            .and_then(|s| s.condition("StorageChangeBlocked"))
            .map(|c| (c.status.clone(), c.message.clone()))
    };
    assert_eq!(
        storage(&get_cluster(&client, "cache").await).map(|c| c.0),
        Some("False".to_string())
    );

    // Bigger volumes and a config change in one edit.
    let mut kc = get_cluster(&client, "cache").await;
    kc.spec.storage.as_mut().unwrap().size =
        k8s_openapi::apimachinery::pkg::api::resource::Quantity("10Gi".into());
    kc.spec.config.insert("hz".into(), "20".into());
    Api::<KvCluster>::namespaced(client.clone(), NS)
        .replace("cache", &PostParams::default(), &kc)
        .await
        .unwrap();
    reconcile_once(&client, &ctx, "cache").await;
    reconcile_once(&client, &ctx, "cache").await;

    assert!(
        event(&client, "cache", "ApplyFailed").await.is_none(),
        "the StatefulSet apply failed"
    );
    let sts = Api::<StatefulSet>::namespaced(client.clone(), NS)
        .get("cache-s0")
        .await
        .unwrap();
    let sts_spec = sts.spec.unwrap();
    let size = &sts_spec.volume_claim_templates.as_ref().unwrap()[0]
        .spec
        .as_ref()
        .unwrap()
        .resources
        .as_ref()
        .unwrap()
        .requests
        .as_ref()
        .unwrap()["storage"];
    assert_eq!(size.0, "5Gi", "the live claims are kept");
    let cm = sts_spec.template.spec.unwrap().volumes.unwrap()[0]
        .config_map
        .clone()
        .unwrap()
        .name;
    let text = Api::<ConfigMap>::namespaced(client.clone(), NS)
        .get(&cm)
        .await
        .unwrap()
        .data
        .unwrap()["server.conf"]
        .clone();
    assert!(
        text.contains("hz 20"),
        "the config change was applied: {text}"
    );

    let (on, message) = storage(&get_cluster(&client, "cache").await).expect("condition");
    assert_eq!(on, "True");
    assert!(
        message.contains("10Gi") && message.contains("5Gi") && message.contains("not applied"),
        "{message}"
    );
    assert!(message.contains("--cascade=orphan"), "{message}");
    let warnings: Vec<_> = events_about(&client, "cache")
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("StorageChangeNotApplied"))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].type_.as_deref(), Some("Warning"));
    assert!(
        warnings[0].series.is_none(),
        "reported once, not every reconcile"
    );

    // Set back: the condition clears.
    let mut kc = get_cluster(&client, "cache").await;
    kc.spec.storage.as_mut().unwrap().size =
        k8s_openapi::apimachinery::pkg::api::resource::Quantity("5Gi".into());
    Api::<KvCluster>::namespaced(client.clone(), NS)
        .replace("cache", &PostParams::default(), &kc)
        .await
        .unwrap();
    reconcile_once(&client, &ctx, "cache").await;
    assert_eq!(
        storage(&get_cluster(&client, "cache").await).map(|c| c.0),
        Some("False".to_string())
    );
}

/// Stores `bytes` in ConfigMap `plugins/<name>` and a PolicyPlugin `name` pointing at it,
/// declaring `declared` as its sha256.
async fn store_plugin(client: &kube::Client, name: &str, bytes: &[u8], declared: &str) {
    store_plugin_pinned(client, name, bytes, Some(declared)).await;
}

/// [`store_plugin`], with no sha256 in the PolicyPlugin when `declared` is `None`.
async fn store_plugin_pinned(
    client: &kube::Client,
    name: &str,
    bytes: &[u8],
    declared: Option<&str>,
) {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "plugins");
    let mut cm = ConfigMap {
        binary_data: Some(BTreeMap::from([(
            "plugin.wasm".to_string(),
            ByteString(bytes.to_vec()),
        )])),
        ..Default::default()
    };
    cm.metadata.name = Some(name.into());
    cm.metadata.namespace = Some("plugins".into());
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let mut source = serde_json::json!({
        "configMap": {"namespace": "plugins", "name": name, "key": "plugin.wasm"}
    });
    if let Some(declared) = declared {
        source["sha256"] = declared.into();
    }
    let pp_spec: PolicyPluginSpec = serde_json::from_value(serde_json::json!({
        "source": source,
        "limits": {"timeoutMs": 500}
    }))
    .unwrap();
    let pps: Api<PolicyPlugin> = Api::all(client.clone());
    pps.create(&PostParams::default(), &PolicyPlugin::new(name, pp_spec))
        .await
        .unwrap();
}

fn builtin_wasm(name: &str) -> &'static [u8] {
    kvpilot::policy::builtin::builtin(name)
        .expect("builtin")
        .wasm
}

#[tokio::test]
async fn a_plugin_with_the_wrong_sha256_is_refused_and_the_cluster_reports_policy_failed() {
    let client = fake_client().await;
    let bytes = builtin_wasm("most-caught-up");
    let wrong = hex::encode(Sha256::digest(b"something else"));
    store_plugin(&client, "tampered", bytes, &wrong).await;
    create_cluster(
        &client,
        "cache",
        spec("engine: {kind: valkey}\nreplicas: 1\npolicies:\n  replicaSelection: {plugin: tampered}\n"),
    )
    .await;
    let ctx = context(&client, 6379);
    reconcile_once(&client, &ctx, "cache").await;

    let status = get_cluster(&client, "cache").await.status.expect("status");
    let failed = status.condition("PolicyFailed").expect("PolicyFailed");
    assert_eq!(failed.status, "True");
    assert!(
        failed.message.contains("sha256 mismatch"),
        "{}",
        failed.message
    );
    assert!(
        failed
            .message
            .starts_with("replica-selection: PolicyPlugin tampered:"),
        "{}",
        failed.message
    );
    let warning = event(&client, "cache", "PolicyFailed")
        .await
        .expect("a PolicyFailed event");
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    // The failure is counted on the hook and the plugin the cluster names.
    let metrics = ctx.metrics.encode();
    assert!(
        metrics.contains(
            "kvpilot_plugin_failures_total{hook=\"replica-selection\",plugin=\"tampered\"} 1"
        ),
        "{metrics}"
    );
    assert!(!metrics.contains("plugin=\"\""), "{metrics}");
    let pp = Api::<PolicyPlugin>::all(client.clone())
        .get("tampered")
        .await
        .unwrap();
    let pp_status = pp.status.expect("plugin status");
    let valid = pp_status
        .conditions
        .iter()
        .find(|c| c.type_ == "Valid")
        .unwrap();
    assert_eq!(valid.status, "False");
    let loaded = pp_status
        .conditions
        .iter()
        .find(|c| c.type_ == "Loaded")
        .unwrap();
    assert_eq!(loaded.status, "False");
    assert!(pp_status.message.unwrap().contains(&wrong));
    assert!(pp_status.sha256.is_none());
}

/// The events about PolicyPlugin `name`, with reason `reason`, oldest first.
async fn plugin_events(
    client: &kube::Client,
    name: &str,
    reason: &str,
) -> Vec<k8s_openapi::api::events::v1::Event> {
    Api::<k8s_openapi::api::events::v1::Event>::all(client.clone())
        .list(&kube::api::ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some("PolicyPlugin") && r.name.as_deref() == Some(name)
                })
        })
        .collect()
}

/// A ConfigMap PolicyPlugin need not pin a sha256: the digest in use is in its status, and
/// each change of it (the ConfigMap's bytes replaced in place) is an Event naming the digest
/// before and after. Issue 11, item 12.
#[tokio::test]
async fn an_unpinned_configmap_plugin_shows_its_digest_and_each_change_is_an_event() {
    let client = fake_client().await;
    let first = builtin_wasm("stagger");
    let first_digest = hex::encode(Sha256::digest(first));
    store_plugin_pinned(&client, "unpinned", first, None).await;
    let ctx = context(&client, 6379);
    let pps: Api<PolicyPlugin> = Api::all(client.clone());
    let reconcile_plugin = async || {
        let pp = pps.get("unpinned").await.unwrap();
        kvpilot::platform::kubernetes::controller::reconcile_plugin(Arc::new(pp), ctx.clone())
            .await
            .expect("reconciled");
        pps.get("unpinned").await.unwrap().status.expect("status")
    };

    let status = reconcile_plugin().await;
    assert_eq!(status.sha256.as_deref(), Some(first_digest.as_str()));
    let loaded = plugin_events(&client, "unpinned", "Loaded").await;
    assert_eq!(loaded.len(), 1);
    assert!(
        loaded[0]
            .note
            .as_deref()
            .is_some_and(|n| n.contains(&first_digest)),
        "{loaded:?}"
    );
    // Nothing changed: no new event.
    reconcile_plugin().await;
    assert_eq!(plugin_events(&client, "unpinned", "Loaded").await.len(), 1);
    assert!(
        plugin_events(&client, "unpinned", "DigestChanged")
            .await
            .is_empty()
    );

    // The ConfigMap's bytes are replaced in place.
    let second = builtin_wasm("replicas-first");
    let second_digest = hex::encode(Sha256::digest(second));
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "plugins");
    let mut cm = cms.get("unpinned").await.unwrap();
    cm.binary_data = Some(BTreeMap::from([(
        "plugin.wasm".to_string(),
        ByteString(second.to_vec()),
    )]));
    cms.replace("unpinned", &PostParams::default(), &cm)
        .await
        .unwrap();
    let status = reconcile_plugin().await;
    assert_eq!(status.sha256.as_deref(), Some(second_digest.as_str()));
    assert_eq!(status.hooks, ["rollout-order"]);
    let changed = plugin_events(&client, "unpinned", "DigestChanged").await;
    assert_eq!(changed.len(), 1, "{changed:?}");
    let note = changed[0].note.clone().unwrap_or_default();
    assert!(
        note.contains(&format!(
            "sha256 {second_digest} is in use (was {first_digest})"
        )),
        "{note}"
    );
}

/// A cluster of real servers (stand-in kubelet), the operator driven in a background loop.
struct Running {
    client: kube::Client,
    kubelet: Kubelet,
    operator: tokio::task::JoinHandle<()>,
    port: u16,
    name: String,
}

impl Running {
    /// Kills the operator and starts a new one with nothing in memory (a fresh context), as
    /// a restarted operator pod.
    fn restart_operator(&mut self) {
        self.operator.abort();
        self.operator = operator_loop(&self.client, self.port, &self.name);
    }
}

/// The operator: one reconcile of `name` every 100 ms, with a context of its own.
fn operator_loop(client: &kube::Client, port: u16, name: &str) -> tokio::task::JoinHandle<()> {
    let ctx = context(client, port);
    let (c, n) = (client.clone(), name.to_string());
    tokio::spawn(async move {
        loop {
            reconcile_once(&c, &ctx, &n).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

impl Drop for Running {
    fn drop(&mut self) {
        self.operator.abort();
    }
}

async fn run_cluster(name: &str, spec_yaml: &str) -> Running {
    run_cluster_on(fake_client().await, name, spec_yaml).await
}

/// [`run_cluster`] on `client` (which may hold objects already, e.g. PolicyPlugins).
async fn run_cluster_on(client: kube::Client, name: &str, spec_yaml: &str) -> Running {
    let port = free_port(next_loopback_ip()).expect("port");
    create_cluster(&client, name, spec(spec_yaml)).await;
    let kubelet = Kubelet::start(&client, port);
    let operator = operator_loop(&client, port, name);
    Running {
        client,
        kubelet,
        operator,
        port,
        name: name.to_string(),
    }
}

async fn wait_ready(r: &Running, name: &str, what: &str) -> kvpilot::api::KvClusterStatus {
    eventually(what, PHASE, || async {
        let status = get_cluster(&r.client, name)
            .await
            .status
            .unwrap_or_default();
        match status.condition("Ready") {
            Some(c) if c.status == "True" => Ok(status),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_naming_a_configmap_plugin_gets_its_decisions() {
    let bytes = builtin_wasm("most-caught-up");
    let digest = hex::encode(Sha256::digest(bytes));
    let r = run_cluster(
        "pp",
        "engine: {kind: valkey}\nreplicas: 1\npolicies:\n  replicaSelection: {plugin: caught-up-from-cm}\n",
    )
    .await;
    store_plugin(&r.client, "caught-up-from-cm", bytes, &digest).await;
    let status = wait_ready(&r, "pp", "election through the PolicyPlugin").await;
    let decision = status
        .last_decisions
        .iter()
        .find(|d| d.hook == "replica-selection")
        .expect("a replica-selection decision");
    assert_eq!(decision.plugin, "caught-up-from-cm");
    assert_eq!(decision.sha256, digest);
    let pp = Api::<PolicyPlugin>::all(r.client.clone())
        .get("caught-up-from-cm")
        .await
        .unwrap();
    let pp_status = pp.status.expect("status");
    assert_eq!(pp_status.sha256.as_deref(), Some(digest.as_str()));
    assert_eq!(pp_status.hooks, ["replica-selection"]);
    assert!(
        pp_status.conditions.iter().all(|c| c.status == "True"),
        "{pp_status:?}"
    );
    assert_eq!(labelled_primary(&r.client, "pp").await, status.primary);
}

/// Under `failurePolicy: Fallback`, a PolicyPlugin that cannot be used (here: its bytes do
/// not match the declared sha256) does not stop the cluster: the hook's builtin answers, each
/// decision says why in `fallbackFrom`, a Warning event says so, and PolicyFailed stays off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_plugin_under_fallback_is_answered_by_the_builtin() {
    let bytes = builtin_wasm("most-caught-up");
    let wrong = hex::encode(Sha256::digest(b"something else"));
    let client = fake_client().await;
    store_plugin(&client, "tampered", bytes, &wrong).await;
    let r = run_cluster_on(
        client,
        "fb",
        "engine: {kind: valkey}\nreplicas: 1\npolicies:\n  replicaSelection: {plugin: tampered, failurePolicy: Fallback, config: {zones: [a]}}\n",
    )
    .await;
    let status = wait_ready(&r, "fb", "election by the fallback builtin").await;
    let decision = status
        .last_decisions
        .iter()
        .find(|d| d.hook == "replica-selection")
        .expect("a replica-selection decision");
    assert_eq!(decision.plugin, "builtin:most-caught-up");
    let from = decision.fallback_from.as_deref().expect("fallbackFrom");
    assert!(
        from.contains("PolicyPlugin tampered") && from.contains("sha256 mismatch"),
        "{from}"
    );
    assert!(
        status
            .condition("PolicyFailed")
            .is_some_and(|c| c.status == "False"),
        "{status:?}"
    );
    let warning = event(&r.client, "fb", "PolicyFallback")
        .await
        .expect("a PolicyFallback event");
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    let note = warning.note.unwrap_or_default();
    assert!(
        note.contains("builtin:most-caught-up answers instead"),
        "{note}"
    );
    assert_eq!(labelled_primary(&r.client, "fb").await, status.primary);
}

/// A rollout-order PolicyPlugin that cannot be used (its ConfigMap holds bytes that are not
/// WebAssembly, with their true digest) under `failurePolicy: Fail` fails that hook alone: the
/// cluster bootstraps and fails over through replica-selection, while the `PolicyFailed`
/// condition names the hook and the reason, and a Warning event says it once. Issue 11, item 6.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_rollout_plugin_under_fail_stops_only_its_hook() {
    let garbage = b"not a WebAssembly component";
    let client = fake_client().await;
    store_plugin(
        &client,
        "broken-order",
        garbage,
        &hex::encode(Sha256::digest(garbage)),
    )
    .await;
    let r = run_cluster_on(
        client,
        "iso",
        "engine: {kind: valkey}\nreplicas: 1\npolicies:\n  rolloutOrder: {plugin: broken-order}\n",
    )
    .await;
    let status = wait_ready(&r, "iso", "bootstrap with a broken rollout-order plugin").await;
    let failed = status.condition("PolicyFailed").expect("PolicyFailed");
    assert_eq!(failed.status, "True", "{failed:?}");
    assert!(
        failed
            .message
            .starts_with("rollout-order: PolicyPlugin broken-order:")
            && failed.message.contains("not a WebAssembly file"),
        "{}",
        failed.message
    );
    let warning = event(&r.client, "iso", "PolicyFailed")
        .await
        .expect("a PolicyFailed event");
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    assert!(
        warning
            .note
            .as_deref()
            .is_some_and(|n| n.contains("the other hooks keep working")),
        "{warning:?}"
    );

    // Failover through replica-selection, which the broken plugin does not touch. Data first,
    // held by both members: without it an empty replacement of the old primary holds as
    // much as the replica, and may rightly be chosen (rule 2).
    let first = status.primary.clone().expect("a primary");
    let addrs = r.kubelet.addrs().await;
    let writer = Writer::start(addrs[&first], "iso", Duration::from_secs(60));
    eventually("writes acknowledged", PHASE, || async {
        match writer.acked().await {
            n if n >= 50 => Ok(()),
            n => Err(format!("{n} acknowledged")),
        }
    })
    .await;
    let seqs: Vec<u64> = writer.stop().await.acks.iter().map(|a| a.seq).collect();
    let replica = addrs
        .iter()
        .find(|(name, _)| **name != first)
        .map(|(_, a)| *a)
        .expect("a replica");
    eventually("the replica holds the writes", PHASE, || async {
        match verify::missing(replica, "iso", &seqs).await {
            Ok(m) if m.is_empty() => Ok(()),
            Ok(m) => Err(format!("{} missing", m.len())),
            Err(e) => Err(e),
        }
    })
    .await;
    // The primary hangs (a crashed one comes back within the kubelet's restart delay with its
    // data and replication history, and rightly stays the primary): the operator stops it
    // through the platform and promotes the replica the hook chose.
    r.kubelet.pause(&first).await;
    let after = eventually("failover", PHASE, || async {
        let s = get_cluster(&r.client, "iso")
            .await
            .status
            .unwrap_or_default();
        match &s.primary {
            Some(p)
                if *p != first && labelled_primary(&r.client, "iso").await.as_ref() == Some(p) =>
            {
                Ok(s)
            }
            other => Err(format!("primary {other:?}")),
        }
    })
    .await;
    assert_eq!(
        verify::missing(replica, "iso", &seqs).await,
        Ok(vec![]),
        "the promoted replica holds every acknowledged write"
    );
    assert!(
        after
            .condition("PolicyFailed")
            .is_some_and(|c| c.status == "True" && c.message.contains("broken-order")),
        "{after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_rollout_under_writes_and_failover_through_kubernetes() {
    let r = run_cluster("kv", "engine: {kind: valkey}\nreplicas: 2\n").await;
    let status = wait_ready(&r, "kv", "bootstrap (election)").await;
    let first_primary = status.primary.clone().expect("a primary");
    assert_eq!(status.members.len(), 3);
    assert_eq!(
        labelled_primary(&r.client, "kv").await.as_ref(),
        Some(&first_primary)
    );
    let old_revision = status.update_revision.clone().expect("revision");

    // kube-proxy stand-in: the -primary Service's address follows the role label.
    let forwarder = Arc::new(
        Forwarder::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap(),
    );
    let (fc, fw) = (r.client.clone(), forwarder.clone());
    let port = r.kubelet.addr(&first_primary).await.port();
    let proxy =
        tokio::spawn(async move {
            loop {
                if let Some(p) = pods(&fc, "kv").await.into_iter().find(|p| {
                    p.labels().get("kvpilot.dev/role").map(String::as_str) == Some("primary")
                }) && let Some(ip) = p.status.and_then(|s| s.pod_ip)
                {
                    fw.set_target(Some(std::net::SocketAddr::new(ip.parse().unwrap(), port)));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    let writer = Writer::start(forwarder.local_addr(), "k8s", Duration::from_secs(300));
    eventually("writes are acknowledged", PHASE, || async {
        match writer.acked().await {
            n if n >= 200 => Ok(()),
            n => Err(format!("{n} acks")),
        }
    })
    .await;

    // Proactive rollout: a config change → a new StatefulSet revision → pods deleted in the
    // order decide chooses (replicas first, the primary after a handover).
    // A merge patch, as `kubectl patch` would: a read-modify-replace could conflict with the
    // running operator's status writes.
    let deleted_before = r.kubelet.history().await.deleted.len();
    patch_spec(&r.client, "kv", serde_json::json!({"config": {"hz": "11"}})).await;
    let status = eventually(
        "the rollout completes",
        Duration::from_secs(120),
        || async {
            let s = get_cluster(&r.client, "kv")
                .await
                .status
                .unwrap_or_default();
            let new_rev = s.update_revision.clone().unwrap_or_default();
            let done = new_rev != old_revision
                && s.members.len() == 3
                && s.members
                    .iter()
                    .all(|m| m.revision.as_deref() == Some(new_rev.as_str()))
                && s.condition("Ready").is_some_and(|c| c.status == "True");
            if done {
                Ok(s)
            } else {
                Err(format!("{:?}", s.members))
            }
        },
    )
    .await;
    let acked_at_end = writer.acked().await;
    eventually("writes continue after the rollout", PHASE, || async {
        match writer.acked().await {
            n if n >= acked_at_end + 100 => Ok(()),
            n => Err(format!("{} since", n - acked_at_end)),
        }
    })
    .await;
    let log = writer.stop().await;
    let new_primary = status.primary.clone().expect("primary");
    assert_ne!(new_primary, first_primary, "the primary was handed over");
    let history = r.kubelet.history().await;
    let deleted = &history.deleted[deleted_before..];
    assert_eq!(deleted.len(), 3, "each pod deleted once: {deleted:?}");
    assert_eq!(
        deleted.last(),
        Some(&first_primary),
        "the old primary goes last: {deleted:?}"
    );
    assert!(!status.last_decisions.is_empty());

    // 0 acknowledged writes lost, on every member.
    let seqs: Vec<u64> = log.acks.iter().map(|a| a.seq).collect();
    assert!(seqs.len() > acked_at_end);
    let addrs = r.kubelet.addrs().await;
    for (pod, addr) in &addrs {
        let missing = eventually("replicas catch up", PHASE, || async {
            match verify::missing(*addr, "k8s", &seqs).await {
                Ok(m) if m.is_empty() => Ok(m),
                Ok(m) => Err(format!("{pod}: {} missing", m.len())),
                Err(e) => Err(e),
            }
        })
        .await;
        assert!(missing.is_empty());
    }

    // Failover: SIGKILL the primary's server.
    r.kubelet.kill(&new_primary).await;
    let after = eventually("failover", PHASE, || async {
        let s = get_cluster(&r.client, "kv")
            .await
            .status
            .unwrap_or_default();
        match &s.primary {
            Some(p)
                if *p != new_primary
                    && labelled_primary(&r.client, "kv").await.as_ref() == Some(p) =>
            {
                Ok(s)
            }
            other => Err(format!("primary {other:?}")),
        }
    })
    .await;
    let promoted = after.primary.clone().unwrap();
    let keys = verify::missing(addrs[&promoted], "k8s", &seqs)
        .await
        .expect("read");
    assert!(
        keys.is_empty(),
        "the promoted replica holds every acknowledged write"
    );
    // The crashed pod comes back (in place, empty) and rejoins as a replica.
    wait_ready(&r, "kv", "the old primary rejoins").await;
    proxy.abort();
}

/// Rule 7 through Kubernetes: the primary's server is frozen (SIGSTOP) while clients hold
/// persistent connections through the `-primary` Service (its kube-proxy stand-in keeps
/// established connections when the endpoints change, as a real one does). The operator must
/// force-delete the hung pod before it promotes a replica; the frozen server resumes as soon
/// as that happens, inside the kubelet's 2 s window between SIGTERM and SIGKILL, and gets to
/// answer the writes queued on its sockets. Every acknowledged write must be on the final
/// primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_primary_that_resumes_loses_no_acknowledged_write_through_kubernetes() {
    use kvpilot::platform::local::server::Server;
    use operator_support::proxy::PrimaryProxy;
    let r = run_cluster("hung", "engine: {kind: valkey}\nreplicas: 2\n").await;
    let status = wait_ready(&r, "hung", "bootstrap").await;
    let victim = status.primary.clone().expect("a primary");
    // What the operator knows of each member is in the KvCluster status, for the next one.
    for m in &status.members {
        let known = m.last_known.as_ref().expect("recorded in status");
        assert!(!known.history.replid.is_empty(), "{m:?}");
        let want = if m.name == victim {
            kvpilot::observe::KnownRole::Primary
        } else {
            kvpilot::observe::KnownRole::Replica
        };
        assert_eq!(known.role, want, "{m:?}");
    }
    let port = r.kubelet.addr(&victim).await.port();
    let proxy = PrimaryProxy::start(&r.client, "hung", port).await;
    let writers: Vec<Writer> = (0..3)
        .map(|i| {
            Writer::start_with(
                proxy.addr(),
                &format!("w{i}"),
                Duration::from_secs(300),
                Duration::from_secs(60),
            )
        })
        .collect();
    for w in &writers {
        more_acks(w, 0, 50, "writes through the Service").await;
    }
    let frozen = Server::adopt(&r.kubelet.server_dir(&victim).await).expect("adopt");
    frozen.pause().expect("SIGSTOP the primary's server");
    let stopped = std::time::Instant::now();
    eventually("the operator acts on the hung primary", PHASE, || async {
        let deleted = r.kubelet.history().await.deleted.contains(&victim);
        let primary = get_cluster(&r.client, "hung")
            .await
            .status
            .and_then(|s| s.primary);
        if deleted || primary.as_ref().is_some_and(|p| *p != victim) {
            Ok(())
        } else {
            Err(format!("primary {primary:?}"))
        }
    })
    .await;
    // Inside the kill window (or, without the force delete, after the promotion).
    let resumed = frozen.resume().is_ok();
    let after = eventually("a replica promoted and labelled", PHASE, || async {
        let s = get_cluster(&r.client, "hung")
            .await
            .status
            .unwrap_or_default();
        match &s.primary {
            Some(p)
                if *p != victim
                    && labelled_primary(&r.client, "hung").await.as_ref() == Some(p) =>
            {
                Ok(p.clone())
            }
            other => Err(format!("primary {other:?}")),
        }
    })
    .await;
    eprintln!("SIGSTOP to a labelled new primary: {:?}", stopped.elapsed());
    wait_ready(&r, "hung", "every member back").await;
    let counts: Vec<usize> = {
        let mut v = Vec::new();
        for w in &writers {
            v.push(w.acked().await);
        }
        v
    };
    for (w, n) in writers.iter().zip(counts) {
        more_acks(w, n, 20, "writes continue on the new primary").await;
    }
    let addr = r.kubelet.addr(&after).await;
    for w in writers {
        let prefix = w.prefix().to_string();
        let log = w.stop().await;
        let seqs: Vec<u64> = log.acks.iter().map(|a| a.seq).collect();
        let lost = verify::missing(addr, &prefix, &seqs).await.expect("read");
        assert!(
            lost.is_empty(),
            "{prefix}: {} acknowledged writes are not on {after} (old primary resumed: \
             {resumed}): {:?}",
            lost.len(),
            &lost[..lost.len().min(20)]
        );
    }
    assert!(
        r.kubelet.history().await.deleted.contains(&victim),
        "the hung pod was deleted"
    );
}

/// A tiny HTTP/1.1 server on 127.0.0.1 for url PolicyPlugins: `/plugin.wasm` answers 200
/// with `body`, `/moved` a 302 to it, anything else 404. Counts the requests it answered;
/// stops when dropped.
struct PluginServer {
    base: String,
    requests: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PluginServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PluginServer {
    async fn start(body: &'static [u8]) -> PluginServer {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = requests.clone();
        let location = format!("{base}/plugin.wasm");
        let task = tokio::spawn(async move {
            // At most 100 connections: far more than any test here makes.
            for _ in 0..100 {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                // The request head, at most 8 KiB within 5 s.
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                let read = tokio::time::timeout(Duration::from_secs(5), async {
                    while head.len() < 8192 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                })
                .await;
                if read.is_err() {
                    continue;
                }
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let path = String::from_utf8_lossy(&head)
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("")
                    .to_string();
                let (status, extra, payload): (&str, String, &[u8]) = match path.as_str() {
                    "/plugin.wasm" => ("200 OK", String::new(), body),
                    "/moved" => ("302 Found", format!("Location: {location}\r\n"), b""),
                    _ => ("404 Not Found", String::new(), b""),
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
                    payload.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.write_all(payload).await;
                let _ = stream.shutdown().await;
            }
        });
        PluginServer {
            base,
            requests,
            task,
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A PolicyPlugin `name` with a url source pinned to `declared`.
async fn store_url_plugin(client: &kube::Client, name: &str, url: &str, declared: &str) {
    let pp_spec: PolicyPluginSpec = serde_json::from_value(serde_json::json!({
        "source": {"url": url, "sha256": declared},
        "limits": {"timeoutMs": 500}
    }))
    .unwrap();
    Api::<PolicyPlugin>::all(client.clone())
        .create(&PostParams::default(), &PolicyPlugin::new(name, pp_spec))
        .await
        .unwrap();
}

async fn plugin_status(client: &kube::Client, name: &str) -> kvpilot::api::PolicyPluginStatus {
    Api::<PolicyPlugin>::all(client.clone())
        .get(name)
        .await
        .unwrap()
        .status
        .expect("plugin status")
}

fn condition<'a>(
    status: &'a kvpilot::api::PolicyPluginStatus,
    kind: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
        .unwrap_or_else(|| panic!("no {kind} condition: {status:?}"))
}

#[tokio::test]
async fn a_url_plugin_is_downloaded_once_checked_and_loaded() {
    let bytes = builtin_wasm("most-caught-up");
    let digest = hex::encode(Sha256::digest(bytes));
    let server = PluginServer::start(bytes).await;
    let client = fake_client().await;
    let url = format!("{}/plugin.wasm", server.base);
    store_url_plugin(&client, "caught-up-from-url", &url, &digest).await;
    create_cluster(
        &client,
        "cache",
        spec("engine: {kind: valkey}\nreplicas: 1\npolicies:\n  replicaSelection: {plugin: caught-up-from-url}\n"),
    )
    .await;
    let ctx = context(&client, 6379);
    reconcile_once(&client, &ctx, "cache").await;

    let pp_status = plugin_status(&client, "caught-up-from-url").await;
    assert_eq!(
        condition(&pp_status, "Loaded").status,
        "True",
        "{pp_status:?}"
    );
    assert_eq!(
        condition(&pp_status, "Valid").status,
        "True",
        "{pp_status:?}"
    );
    assert_eq!(pp_status.hooks, ["replica-selection"]);
    assert_eq!(pp_status.sha256.as_deref(), Some(digest.as_str()));
    let status = get_cluster(&client, "cache").await.status.expect("status");
    assert!(
        status
            .condition("PolicyFailed")
            .is_none_or(|c| c.status == "False"),
        "{status:?}"
    );
    assert_eq!(server.requests(), 1);

    // Later reconciles use the kept bytes.
    reconcile_once(&client, &ctx, "cache").await;
    assert_eq!(server.requests(), 1);
    let pp_status = plugin_status(&client, "caught-up-from-url").await;
    assert_eq!(
        condition(&pp_status, "Valid").status,
        "True",
        "{pp_status:?}"
    );
}

#[tokio::test]
async fn a_url_plugin_with_the_wrong_sha256_or_a_redirect_is_refused() {
    let bytes = builtin_wasm("most-caught-up");
    let digest = hex::encode(Sha256::digest(bytes));
    let wrong = hex::encode(Sha256::digest(b"something else"));
    let server = PluginServer::start(bytes).await;
    let client = fake_client().await;
    store_url_plugin(
        &client,
        "tampered-url",
        &format!("{}/plugin.wasm", server.base),
        &wrong,
    )
    .await;
    let retry = Duration::from_millis(800);
    store_url_plugin(
        &client,
        "moved-url",
        &format!("{}/moved", server.base),
        &digest,
    )
    .await;
    let ctx = context_with_plugin_retry(&client, 6379, retry, Duration::from_secs(30));
    for (cluster, plugin, expected) in [
        ("tampered", "tampered-url", "sha256 mismatch"),
        ("moved", "moved-url", "redirects are not followed"),
    ] {
        create_cluster(
            &client,
            cluster,
            spec(&format!(
                "engine: {{kind: valkey}}\nreplicas: 1\npolicies:\n  replicaSelection: {{plugin: {plugin}}}\n"
            )),
        )
        .await;
        reconcile_once(&client, &ctx, cluster).await;

        let status = get_cluster(&client, cluster).await.status.expect("status");
        let failed = status.condition("PolicyFailed").expect("PolicyFailed");
        assert_eq!(failed.status, "True");
        assert!(failed.message.contains(expected), "{}", failed.message);
        let pp_status = plugin_status(&client, plugin).await;
        assert_eq!(condition(&pp_status, "Loaded").status, "False");
        assert_eq!(condition(&pp_status, "Valid").status, "False");
        assert!(pp_status.sha256.is_none());
        assert!(pp_status.hooks.is_empty());
        let message = pp_status.message.expect("message");
        assert!(message.contains(expected), "{message}");
        if plugin == "tampered-url" {
            assert!(
                message.contains(&wrong) && message.contains(&digest),
                "{message}"
            );
        }
    }
    // A refused download is not tried again on every reconcile: the next attempt waits,
    // twice as long after each failure; the problem stays in status meanwhile.
    let before = server.requests();
    reconcile_once(&client, &ctx, "tampered").await;
    reconcile_once(&client, &ctx, "tampered").await;
    assert_eq!(
        server.requests(),
        before,
        "downloaded again while backing off"
    );
    let failed = get_cluster(&client, "tampered")
        .await
        .status
        .expect("status");
    assert!(
        failed
            .condition("PolicyFailed")
            .is_some_and(|c| c.status == "True" && c.message.contains("sha256 mismatch")),
        "{failed:?}"
    );
    tokio::time::sleep(retry).await;
    reconcile_once(&client, &ctx, "tampered").await;
    assert_eq!(server.requests(), before + 1, "tried again after the wait");
    // The second failure waits twice as long: not yet after one base interval.
    tokio::time::sleep(retry).await;
    reconcile_once(&client, &ctx, "tampered").await;
    assert_eq!(server.requests(), before + 1, "the wait doubled");
    tokio::time::sleep(retry).await;
    reconcile_once(&client, &ctx, "tampered").await;
    assert_eq!(server.requests(), before + 2);
}

#[tokio::test]
async fn members_carry_their_node_and_the_nodes_zone() {
    use k8s_openapi::api::core::v1::{Node, Pod};
    use kvpilot::platform::Platform;
    use kvpilot::platform::kubernetes::platform::{KubernetesPlatform, LABEL_ZONE};

    let client = fake_client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    for (name, zone) in [("node-a", Some("eu-west-1a")), ("node-b", None)] {
        let mut node = Node::default();
        node.metadata.name = Some(name.into());
        if let Some(zone) = zone {
            node.metadata.labels = Some(BTreeMap::from([(LABEL_ZONE.into(), zone.into())]));
        }
        nodes
            .create(&PostParams::default(), &node)
            .await
            .expect("node");
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    // kv-s0-0 on a zoned node, kv-s0-1 on an unzoned one, kv-s0-2 on a node that does not
    // exist (yet): the reconcile goes on, without a zone for it.
    for (ordinal, node) in [(0, "node-a"), (1, "node-b"), (2, "node-gone")] {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": format!("kv-s0-{ordinal}"),
                "namespace": NS,
                "labels": {"kvpilot.dev/cluster": "kv", "controller-revision-hash": "rev-1"},
            },
            "spec": {"nodeName": node, "containers": [{"name": "server", "image": "valkey"}]},
        }))
        .expect("pod");
        pods.create(&PostParams::default(), &pod)
            .await
            .expect("pod");
        let status = serde_json::json!({"status": {
            "phase": "Running",
            "podIP": format!("10.0.0.{}", ordinal + 1),
        }});
        pods.patch_status(
            &format!("kv-s0-{ordinal}"),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&status),
        )
        .await
        .expect("pod status");
    }

    let platform = KubernetesPlatform::new(client, NS, "kv", 1, 3, 6379);
    let members = platform.members().await.expect("members");
    let seen: Vec<(&str, Option<&str>, Option<&str>)> = members
        .iter()
        .map(|m| (m.name.as_str(), m.node.as_deref(), m.zone.as_deref()))
        .collect();
    assert_eq!(
        seen,
        [
            ("kv-s0-0", Some("node-a"), Some("eu-west-1a")),
            ("kv-s0-1", Some("node-b"), None),
            ("kv-s0-2", Some("node-gone"), None),
        ]
    );
    assert!(members.iter().all(|m| m.running), "{members:?}");
}

fn condition_of(status: &kvpilot::api::KvClusterStatus, kind: &str) -> (String, String, String) {
    let c = status
        .condition(kind)
        .unwrap_or_else(|| panic!("no {kind} condition: {status:?}"));
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

#[tokio::test]
async fn a_password_secret_created_after_the_cluster_is_read_on_the_next_reconcile() {
    let client = fake_client().await;
    create_cluster(
        &client,
        "late",
        spec(
            "engine: {kind: valkey}\nreplicas: 1\n\
             auth: {passwordSecret: {name: late-auth, key: password}}\n",
        ),
    )
    .await;
    let ctx = context(&client, 6379);
    reconcile_once(&client, &ctx, "late").await;
    let status = get_cluster(&client, "late").await.status.expect("status");
    let (on, reason, message) = condition_of(&status, "Ready");
    assert_eq!(
        (on.as_str(), reason.as_str()),
        ("False", "SecretUnavailable")
    );
    assert!(
        message.contains("shop/late-auth") && message.contains("does not exist"),
        "{message}"
    );
    // The objects are applied anyway, so pods start as soon as the Secret exists.
    Api::<StatefulSet>::namespaced(client.clone(), NS)
        .get("late-s0")
        .await
        .expect("the StatefulSet is applied while the Secret is missing");

    put_secret(&client, "late-auth", "Opaque", &[("pass", b"pw")]).await;
    reconcile_once(&client, &ctx, "late").await;
    let status = get_cluster(&client, "late").await.status.expect("status");
    let (_, reason, message) = condition_of(&status, "Ready");
    assert_eq!(reason, "SecretUnavailable");
    assert!(message.contains("has no key \"password\""), "{message}");

    put_secret(&client, "late-auth", "Opaque", &[("password", b"pw")]).await;
    reconcile_once(&client, &ctx, "late").await;
    let status = get_cluster(&client, "late").await.status.expect("status");
    let (on, reason, _) = condition_of(&status, "Ready");
    // No pods run here: the cluster now waits for its members, not for the Secret.
    assert_eq!(on, "False");
    assert_ne!(reason, "SecretUnavailable", "{status:?}");
    assert_eq!(status.members.len(), 2, "{status:?}");
}

/// A Dragonfly replica authenticates with an inline `AUTH <password>`, so a password with
/// whitespace could never work: the cluster waits and says why.
#[tokio::test]
async fn a_dragonfly_password_with_spaces_is_refused_naming_the_secret() {
    let client = fake_client().await;
    put_secret(&client, "df-auth", "Opaque", &[("password", b"two words")]).await;
    create_cluster(
        &client,
        "df",
        spec(
            "engine: {kind: dragonfly}\nreplicas: 1\n\
             auth: {passwordSecret: {name: df-auth, key: password}}\n",
        ),
    )
    .await;
    let ctx = context(&client, 6379);
    reconcile_once(&client, &ctx, "df").await;
    let status = get_cluster(&client, "df").await.status.expect("status");
    let (on, reason, message) = condition_of(&status, "Ready");
    assert_eq!(
        (on.as_str(), reason.as_str()),
        ("False", "SecretUnavailable")
    );
    assert!(
        message.contains("shop/df-auth") && message.contains("one word"),
        "{message}"
    );
    assert!(!message.contains("two words"), "the password is not shown");
}

/// Whether `addr` accepts `password` (as `default`) and answers a PING.
async fn accepts(addr: std::net::SocketAddr, password: &str) -> bool {
    match kvpilot::engine::Client::connect(addr, Some(password), kvpilot::engine::Dialect::Valkey)
        .await
    {
        Ok(c) => c.ping().await.is_ok(),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_password_secret_moves_every_member_through_kubernetes() {
    let r = run_cluster(
        "rot",
        "engine: {kind: valkey}\nreplicas: 2\n\
         auth: {passwordSecret: {name: rot-auth, key: password}}\n",
    )
    .await;
    // Created after the cluster: pods wait for it, then start with it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        r.kubelet.addrs().await.is_empty(),
        "no pod starts without its Secret"
    );
    put_secret(&r.client, "rot-auth", "Opaque", &[("password", b"pw-1")]).await;
    let status = wait_ready(&r, "rot", "bootstrap once the Secret exists").await;
    let addrs = r.kubelet.addrs().await;
    assert_eq!(addrs.len(), 3);
    for addr in addrs.values() {
        assert!(accepts(*addr, "pw-1").await, "{addr} requires pw-1");
    }

    put_secret(&r.client, "rot-auth", "Opaque", &[("password", b"pw-2")]).await;
    eventually("every member moved to the new password", PHASE, || async {
        for (pod, addr) in &addrs {
            if accepts(*addr, "pw-1").await || !accepts(*addr, "pw-2").await {
                return Err(format!("{pod} still has the old password"));
            }
        }
        Ok(())
    })
    .await;
    let after = wait_ready(&r, "rot", "ready with the new password").await;
    assert_eq!(after.primary, status.primary, "a rotation changes no roles");

    // A member restarted now starts with the new password from the Secret, and its
    // replication link authenticates with it.
    let replica = after
        .members
        .iter()
        .find(|m| m.role == "replica")
        .expect("a replica")
        .name
        .clone();
    r.kubelet.kill(&replica).await;
    eventually("the replica goes down", PHASE, || async {
        let s = get_cluster(&r.client, "rot")
            .await
            .status
            .unwrap_or_default();
        match s.members.iter().find(|m| m.name == replica) {
            Some(m) if !m.ready => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    wait_ready(&r, "rot", "the restarted replica rejoins").await;
    assert!(accepts(r.kubelet.addr(&replica).await, "pw-2").await);
}

/// The passwords in the operator's record of `cluster`'s credentials, newest first.
async fn recorded_passwords(client: &kube::Client, cluster: &str) -> Vec<Option<String>> {
    use k8s_openapi::api::core::v1::Secret;
    let Some(secret) = Api::<Secret>::namespaced(client.clone(), NS)
        .get_opt(&format!("{cluster}-kvpilot-auth"))
        .await
        .expect("get the record")
    else {
        return Vec::new();
    };
    let kc = get_cluster(client, cluster).await;
    assert!(
        secret
            .owner_references()
            .iter()
            .any(|o| Some(&o.uid) == kc.metadata.uid.as_ref() && o.controller == Some(true)),
        "the record is owned by the KvCluster"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&secret.data.unwrap()["credentials.json"].0).unwrap();
    json["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["password"].as_str().map(str::to_string))
        .collect()
}

/// Waits until every member in `pods` accepts `password` and refuses every one of `old`.
async fn all_moved(
    r: &Running,
    pods: &[(String, std::net::SocketAddr)],
    password: &str,
    old: &[&str],
) {
    eventually(&format!("{pods:?} on {password}"), PHASE, || async {
        for (pod, addr) in pods {
            for o in old {
                if accepts(*addr, o).await {
                    return Err(format!("{pod} still accepts {o}"));
                }
            }
            if !accepts(*addr, password).await {
                return Err(format!("{pod} does not accept {password}"));
            }
        }
        Ok(())
    })
    .await;
    let _ = r;
}

/// A cluster with a password Secret, Ready, and the replica that will miss the rotation.
async fn rotation_bed(name: &str) -> (Running, String, Vec<(String, std::net::SocketAddr)>) {
    let client = fake_client().await;
    put_secret(
        &client,
        &format!("{name}-auth"),
        "Opaque",
        &[("password", b"pw-1")],
    )
    .await;
    let r = run_cluster_on(
        client,
        name,
        &format!(
            "engine: {{kind: valkey}}\nreplicas: 2\n\
             auth: {{passwordSecret: {{name: {name}-auth, key: password}}}}\n"
        ),
    )
    .await;
    let status = wait_ready(&r, name, "bootstrap with pw-1").await;
    let missed = status
        .members
        .iter()
        .find(|m| m.role == "replica")
        .expect("a replica")
        .name
        .clone();
    let others: Vec<(String, std::net::SocketAddr)> = r
        .kubelet
        .addrs()
        .await
        .into_iter()
        .filter(|(pod, _)| *pod != missed)
        .collect();
    assert_eq!(others.len(), 2);
    assert_eq!(
        recorded_passwords(&r.client, name).await,
        [Some("pw-1".into())]
    );
    (r, missed, others)
}

/// A member that does not answer while the Secret changes (paused, as behind a partition)
/// still has the old password when it answers again: it is moved then, and the operator's
/// record keeps the old password exactly until it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_missed_the_rotation_is_moved_when_it_answers_again() {
    let (r, missed, others) = rotation_bed("missed").await;
    let missed_addr = r.kubelet.addr(&missed).await;
    r.kubelet.pause(&missed).await;
    put_secret(&r.client, "missed-auth", "Opaque", &[("password", b"pw-2")]).await;
    all_moved(&r, &others, "pw-2", &["pw-1"]).await;
    assert_eq!(
        recorded_passwords(&r.client, "missed").await,
        [Some("pw-2".into()), Some("pw-1".into())],
        "the old password is kept while a member may still have it"
    );
    // Several reconciles find the member unreachable.
    tokio::time::sleep(Duration::from_secs(2)).await;
    r.kubelet.resume(&missed).await;
    all_moved(&r, &[(missed.clone(), missed_addr)], "pw-2", &["pw-1"]).await;
    eventually("the record forgets pw-1", PHASE, || async {
        match recorded_passwords(&r.client, "missed").await.as_slice() {
            [Some(p)] if p == "pw-2" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let status = wait_ready(&r, "missed", "ready, every member on pw-2").await;
    let text = serde_json::to_string(&status).unwrap();
    assert!(
        !text.contains("pw-1") && !text.contains("pw-2"),
        "no password in the status: {text}"
    );
    assert!(
        event(&r.client, "missed", "CredentialsChanged")
            .await
            .is_some(),
        "each move is an event"
    );
}

/// The operator restarts between the Secret change and the last member moving, and again
/// while the Secret changes with no operator running: the new operator finds the old
/// password in its record and completes both rotations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_restart_during_a_rotation_still_moves_every_member() {
    let (mut r, missed, others) = rotation_bed("restart").await;
    let missed_addr = r.kubelet.addr(&missed).await;
    r.kubelet.pause(&missed).await;
    put_secret(
        &r.client,
        "restart-auth",
        "Opaque",
        &[("password", b"pw-2")],
    )
    .await;
    all_moved(&r, &others, "pw-2", &["pw-1"]).await;

    // A new operator, with nothing in memory, while one member still has only pw-1.
    r.restart_operator();
    tokio::time::sleep(Duration::from_secs(1)).await;
    r.kubelet.resume(&missed).await;
    all_moved(&r, &[(missed.clone(), missed_addr)], "pw-2", &["pw-1"]).await;
    wait_ready(&r, "restart", "ready after the first rotation").await;

    // No operator runs while the Secret changes; the next one starts after.
    r.operator.abort();
    put_secret(
        &r.client,
        "restart-auth",
        "Opaque",
        &[("password", b"pw-3")],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    r.restart_operator();
    let all: Vec<(String, std::net::SocketAddr)> = r.kubelet.addrs().await.into_iter().collect();
    all_moved(&r, &all, "pw-3", &["pw-1", "pw-2"]).await;
    eventually("the record holds pw-3 alone", PHASE, || async {
        match recorded_passwords(&r.client, "restart").await.as_slice() {
            [Some(p)] if p == "pw-3" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    wait_ready(&r, "restart", "ready after the second rotation").await;
}

/// A Secret of the record's name that the KvCluster does not own is never overwritten.
#[tokio::test]
async fn a_foreign_secret_under_the_records_name_is_left_alone() {
    let client = fake_client().await;
    put_secret(&client, "foreign-auth", "Opaque", &[("password", b"pw")]).await;
    put_secret(
        &client,
        "foreign-kvpilot-auth",
        "Opaque",
        &[("mine", b"do not touch")],
    )
    .await;
    create_cluster(
        &client,
        "foreign",
        spec(
            "engine: {kind: valkey}\nreplicas: 1\n\
             auth: {passwordSecret: {name: foreign-auth, key: password}}\n",
        ),
    )
    .await;
    let ctx = context(&client, 6379);
    reconcile_once(&client, &ctx, "foreign").await;
    let secret = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), NS)
        .get("foreign-kvpilot-auth")
        .await
        .unwrap();
    let data = secret.data.unwrap();
    assert_eq!(data.keys().collect::<Vec<_>>(), ["mine"]);
    let warning = event(&client, "foreign", "CredentialsRecord")
        .await
        .expect("a warning");
    assert!(
        warning
            .note
            .unwrap_or_default()
            .contains("not the credentials record"),
        "says why"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_with_an_acl_user_bootstraps_through_kubernetes() {
    use operator_support::tls::{TestCa, exec_tls};
    let ca = TestCa::new("kvpilot e2e CA");
    // One certificate for every member: a wildcard over the headless Service's pod names.
    let members = ca.issue(&["*.sec-headless.shop.svc"]);
    let app = ca.issue(&["app"]);
    let acl = "user default off\n\
               user kvpilot on >op-pw -@all +@connection +info +role +dbsize +replicaof \
               +failover +client|kill +config|get +config|set +acl|setuser +bgsave +lastsave \
               +psync +replconf\n\
               user app on >app-pw ~* &* +@all\n";
    let r = run_cluster(
        "sec",
        "engine: {kind: valkey}\nreplicas: 2\n\
         tls: {secretName: sec-tls, clientAuth: Required}\n\
         auth:\n  aclSecret: {name: sec-acl, key: users.acl}\n  \
         passwordSecret: {name: sec-acl, key: kvpilot-password}\n  username: kvpilot\n",
    )
    .await;
    put_secret(
        &r.client,
        "sec-tls",
        "kubernetes.io/tls",
        &[
            ("tls.crt", members.cert_pem.as_bytes()),
            ("tls.key", members.key_pem.as_bytes()),
            ("ca.crt", ca.pem().as_bytes()),
        ],
    )
    .await;
    put_secret(
        &r.client,
        "sec-acl",
        "Opaque",
        &[
            ("users.acl", acl.as_bytes()),
            ("kvpilot-password", b"op-pw"),
        ],
    )
    .await;
    let status = wait_ready(
        &r,
        "sec",
        "a TLS cluster elects a primary, replicas in sync",
    )
    .await;
    let primary = status.primary.clone().expect("a primary");
    assert_eq!(
        labelled_primary(&r.client, "sec").await.as_ref(),
        Some(&primary)
    );
    assert_eq!(status.members.len(), 3);
    assert_eq!(
        status
            .members
            .iter()
            .filter(|m| m.role == "replica")
            .count(),
        2
    );
    assert!(status.members.iter().all(|m| m.ready), "{status:?}");

    // Data written over TLS reaches every replica (replication runs over TLS: the members
    // listen on TLS only).
    let addrs = r.kubelet.addrs().await;
    let name = |pod: &str| format!("{pod}.sec-headless.shop.svc");
    let auth = Some(("app", "app-pw"));
    exec_tls(
        addrs[&primary],
        &ca,
        Some(&app),
        &name(&primary),
        auth,
        &["SET", "k", "v"],
    )
    .await
    .expect("write over TLS");
    for (pod, addr) in &addrs {
        eventually("the write replicates over TLS", PHASE, || async {
            match exec_tls(*addr, &ca, Some(&app), &name(pod), auth, &["GET", "k"]).await {
                Ok(redis::Value::BulkString(v)) if v == b"v" => Ok(()),
                other => Err(format!("{pod}: {other:?}")),
            }
        })
        .await;
        // A client without a certificate is refused (clientAuth: Required).
        let refused = exec_tls(*addr, &ca, None, &name(pod), auth, &["PING"]).await;
        assert!(
            refused.is_err(),
            "{pod} accepted a client without a certificate"
        );
    }
    let plain =
        kvpilot::engine::Client::connect(addrs[&primary], None, kvpilot::engine::Dialect::Valkey)
            .await;
    let answered = match plain {
        Ok(c) => c.ping().await.is_ok(),
        Err(_) => false,
    };
    assert!(!answered, "a plain client was answered");
}

/// The examples a user applies first must work as written: every policy config of every
/// example KvCluster is accepted by the plugin it names. Builtins (named directly, or through
/// a PolicyPlugin example with a builtin source) check it themselves through the real runtime;
/// the custom zone-aware plugin, which only a wasm build outside this workspace produces, is
/// checked against the fields its `validate-config` accepts (examples/custom-plugin/src/lib.rs).
#[tokio::test]
async fn every_example_policy_config_is_accepted_by_the_plugin_it_names() {
    use kvpilot::policy::{Hook, PolicyRuntime};

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut clusters = Vec::new();
    let mut plugins = BTreeMap::new();
    for entry in std::fs::read_dir(root.join("examples")).expect("examples") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let value: serde_json::Value = serde_norway::from_str(&text).expect("yaml");
        match value["kind"].as_str() {
            Some("KvCluster") => {
                let kc: KvCluster = serde_norway::from_str(&text).expect("KvCluster");
                clusters.push((path, kc));
            }
            Some("PolicyPlugin") => {
                let pp: PolicyPlugin = serde_norway::from_str(&text).expect("PolicyPlugin");
                plugins.insert(pp.name_any(), pp);
            }
            _ => {}
        }
    }
    let custom = std::fs::read_to_string(root.join("examples/custom-plugin/src/lib.rs"))
        .expect("the custom plugin's source");
    let runtime = PolicyRuntime::global().expect("runtime");
    let mut checked = 0;
    let mut through_policy_plugins = 0;
    for (path, kc) in &clusters {
        for hook in Hook::ALL {
            let r = kc.spec.policies.for_hook(hook);
            let config = r.config_json();
            let what = format!("{}: {hook} ({})", path.display(), r.plugin);
            let builtin = match r.plugin.strip_prefix("builtin:") {
                Some(b) => Some(b.to_string()),
                None => {
                    let pp = plugins
                        .get(&r.plugin)
                        .unwrap_or_else(|| panic!("{what}: no PolicyPlugin example of that name"));
                    through_policy_plugins += 1;
                    pp.spec.source.builtin.clone()
                }
            };
            match builtin {
                Some(b) => {
                    let plugin = runtime.load_builtin(&b).await.expect("builtin");
                    assert!(plugin.exports(hook), "{what}: builtin:{b} lacks the hook");
                    plugin
                        .validate_config(&config)
                        .await
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                }
                None => {
                    // The only non-builtin PolicyPlugin example is the custom zone-aware one.
                    assert!(
                        custom.contains(&format!("name: \"{}\".into()", r.plugin)),
                        "{what}: not the plugin of examples/custom-plugin"
                    );
                    assert!(
                        custom.contains("world: \"replica-selector\"")
                            && hook == Hook::ReplicaSelection,
                        "{what}: examples/custom-plugin only answers replica-selection"
                    );
                    let known = custom
                        .split_once("known fields: ")
                        .and_then(|(_, rest)| rest.split_once(')'))
                        .map(|(fields, _)| {
                            fields.split(", ").map(str::to_string).collect::<Vec<_>>()
                        })
                        .expect("the custom plugin names its known fields");
                    let given: serde_json::Value = serde_json::from_str(&config).expect("json");
                    for key in given.as_object().expect("an object").keys() {
                        assert!(
                            known.contains(key),
                            "{what}: `{key}` is not a field of the plugin (it knows {known:?})"
                        );
                    }
                    let zones = &given["zones"];
                    assert!(
                        zones.is_null()
                            || zones
                                .as_array()
                                .is_some_and(|z| z.iter().all(|z| z.is_string())),
                        "{what}: zones must be a list of zone names"
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(clusters.len() >= 3, "{} KvCluster examples", clusters.len());
    assert_eq!(checked, clusters.len() * Hook::ALL.len());
    assert!(
        through_policy_plugins >= 1,
        "no example names a PolicyPlugin"
    );
}

/// `CONFIG GET key` on a member.
async fn config_get(addr: std::net::SocketAddr, key: &str) -> Option<String> {
    let client = redis::Client::open(format!("redis://{addr}/")).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let pairs: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(key)
        .query_async(&mut conn)
        .await
        .expect("CONFIG GET");
    pairs.get(1).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_snapshots_start_with_save_off_and_show_in_status() {
    let r = run_cluster(
        "snap",
        "engine: {kind: valkey}\nreplicas: 2\nsnapshots: {mode: replicasOnly, schedule: \"0 3 * * *\", staggerInterval: 10m}\n",
    )
    .await;
    let status = eventually("snapshot schedules in status", PHASE, || async {
        let s = get_cluster(&r.client, "snap")
            .await
            .status
            .unwrap_or_default();
        let ready = s.condition("Ready").is_some_and(|c| c.status == "True");
        let scheduled = s
            .members
            .iter()
            .filter(|m| m.snapshot_schedule.is_some())
            .count();
        if ready && scheduled == 2 {
            Ok(s)
        } else {
            Err(format!(
                "ready {ready}, {scheduled} schedules: {:?}",
                s.members
            ))
        }
    })
    .await;
    let primary = status.primary.clone().expect("a primary");
    let mut crons = Vec::new();
    for m in &status.members {
        if m.name == primary {
            assert_eq!(m.snapshot_schedule, None, "{m:?}");
            assert_eq!(m.next_snapshot_time, None, "{m:?}");
        } else {
            crons.push(m.snapshot_schedule.clone().expect("a schedule"));
            assert!(m.next_snapshot_time.is_some(), "{m:?}");
        }
        // Fresh servers have made no snapshot.
        assert_eq!(m.last_snapshot_time, None, "{m:?}");
        let addr = r.kubelet.addr(&m.name).await;
        assert_eq!(
            config_get(addr, "save").await.as_deref(),
            Some(""),
            "{}",
            m.name
        );
        assert_eq!(
            config_get(addr, "rdb-del-sync-files").await.as_deref(),
            Some("no"),
            "{}",
            m.name
        );
    }
    crons.sort();
    assert_eq!(crons, ["0 3 * * *", "10 3 * * *"]);
    // From the first second: the pods' config says so, and no drift correction was needed.
    let cms: Api<ConfigMap> = Api::namespaced(r.client.clone(), NS);
    let rendered: Vec<String> = cms
        .list(&Default::default())
        .await
        .expect("config maps")
        .items
        .into_iter()
        .filter_map(|cm| cm.data?.get("server.conf").cloned())
        .collect();
    assert!(!rendered.is_empty());
    assert!(
        rendered
            .iter()
            .all(|text| text.lines().any(|l| l == "save \"\"")),
        "{rendered:?}"
    );
    // Twenty more reconciles: the schedule decision is not recorded at each of them, only
    // when its answer changed (while a member's role was not known yet, at most).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = get_cluster(&r.client, "snap")
        .await
        .status
        .unwrap_or_default();
    let schedule_decisions = status
        .last_decisions
        .iter()
        .filter(|d| d.hook == "snapshot-schedule")
        .count();
    assert!(
        (1..=3).contains(&schedule_decisions),
        "{:#?}",
        status.last_decisions
    );
    // No member was corrected: nobody ran CONFIG SET on them (the operator's drift
    // correction would have).
    for (name, addr) in r.kubelet.addrs().await {
        let client = redis::Client::open(format!("redis://{addr}/")).expect("client");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut conn)
            .await
            .expect("INFO commandstats");
        assert!(
            stats.contains("cmdstat_config|get:"),
            "{name}: the operator's CONFIG GET is counted: {stats}"
        );
        assert!(!stats.contains("cmdstat_config|set:"), "{name}: {stats}");
    }
}

/// A cluster of real servers like [`run_cluster`], whose pods are scheduled on `nodes` (each
/// created with its zone label), with the controller context (its metrics count handovers
/// and failovers).
async fn run_cluster_on_nodes(
    name: &str,
    spec_yaml: &str,
    nodes: &[(&str, &str)],
) -> (
    Running,
    Arc<kvpilot::platform::kubernetes::controller::Context>,
) {
    use k8s_openapi::api::core::v1::Node;
    use kvpilot::platform::kubernetes::platform::LABEL_ZONE;
    let client = fake_client().await;
    let api: Api<Node> = Api::all(client.clone());
    for (node, zone) in nodes {
        let mut n = Node::default();
        n.metadata.name = Some(node.to_string());
        n.metadata.labels = Some(BTreeMap::from([(LABEL_ZONE.into(), zone.to_string())]));
        api.create(&PostParams::default(), &n).await.expect("node");
    }
    let port = free_port(next_loopback_ip()).expect("port");
    create_cluster(&client, name, spec(spec_yaml)).await;
    let ctx = context(&client, port);
    let names = nodes.iter().map(|(n, _)| n.to_string()).collect();
    let kubelet = Kubelet::start_on_nodes(&client, port, names);
    let (c, n, loop_ctx) = (client.clone(), name.to_string(), ctx.clone());
    let operator = tokio::spawn(async move {
        loop {
            reconcile_once(&c, &loop_ctx, &n).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let running = Running {
        client,
        kubelet,
        operator,
        port,
        name: name.to_string(),
    };
    (running, ctx)
}

/// The value of counter `metric` (`kvpilot_handovers_total`, ...) for cluster `cluster`.
fn counter(
    ctx: &kvpilot::platform::kubernetes::controller::Context,
    metric: &str,
    cluster: &str,
) -> u64 {
    let prefix = format!("{metric}{{namespace=\"{NS}\",cluster=\"{cluster}\"}} ");
    ctx.metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
        .map_or(0, |v| v.trim().parse().expect("a counter value"))
}

/// Makes `want` the primary of a Ready cluster whose replica-selection prefers `want`'s zone:
/// each crash of another primary fails over to `want` (the crashed pod comes back as a
/// replica). Returns the status once `want` is primary and the cluster is Ready.
async fn make_primary(r: &Running, cluster: &str, want: &str) -> kvpilot::api::KvClusterStatus {
    for _ in 0..3 {
        let status = wait_ready(r, cluster, "ready before choosing the primary").await;
        let primary = status.primary.clone().expect("a primary");
        if primary == want {
            return status;
        }
        r.kubelet.kill(&primary).await;
        eventually(
            "the failover away from the crashed primary",
            PHASE,
            || async {
                let s = get_cluster(&r.client, cluster)
                    .await
                    .status
                    .unwrap_or_default();
                match s.primary {
                    Some(p) if p != primary => Ok(()),
                    other => Err(format!("primary {other:?}")),
                }
            },
        )
        .await;
        // The crashed pod restarts in place, empty (at once the first time, as a kubelet
        // does); give the stand-in a few ticks before asking for Ready again.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("{want} did not become the primary");
}

/// Waits for `writer` to have `n` more acknowledged writes than `from`.
async fn more_acks(writer: &Writer, from: usize, n: usize, what: &str) {
    eventually(what, PHASE, || async {
        match writer.acked().await {
            a if a >= from + n => Ok(()),
            a => Err(format!("{} acks since", a - from)),
        }
    })
    .await;
}

/// Every acknowledged write of `log` is on every server in `addrs` (replicas may take a
/// moment to apply the last ones).
async fn nothing_lost(
    addrs: &BTreeMap<String, std::net::SocketAddr>,
    prefix: &str,
    log: &kvpilot::demo::writer::Log,
) {
    let seqs: Vec<u64> = log.acks.iter().map(|a| a.seq).collect();
    assert!(!seqs.is_empty(), "no write was acknowledged");
    for (pod, addr) in addrs {
        eventually(
            "every acknowledged write is on the member",
            PHASE,
            || async {
                match verify::missing(*addr, prefix, &seqs).await {
                    Ok(m) if m.is_empty() => Ok(()),
                    Ok(m) => Err(format!("{pod}: {} of {} missing", m.len(), seqs.len())),
                    Err(e) => Err(e),
                }
            },
        )
        .await;
    }
}

/// Scale-up 1 → 2 replicas on a live cluster under writes: the new pod is observed, joins the
/// primary as a replica and catches up (it holds every acknowledged write), status lists it
/// and the cluster is Ready again; nothing is restarted and the primary stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_up_adds_a_replica_that_joins_in_sync() {
    use operator_support::proxy::PrimaryProxy;
    use operator_support::scaling::{replication, set_replicas};

    let r = run_cluster("grow", "engine: {kind: valkey}\nreplicas: 1\n").await;
    let status = wait_ready(&r, "grow", "bootstrap").await;
    assert_eq!(status.members.len(), 2, "{:?}", status.members);
    let primary = status.primary.clone().expect("a primary");
    let primary_addr = r.kubelet.addr(&primary).await;
    let proxy = PrimaryProxy::start(&r.client, "grow", primary_addr.port()).await;
    let writer = Writer::start(proxy.addr(), "grow", Duration::from_secs(300));
    more_acks(&writer, 0, 200, "writes are acknowledged").await;

    set_replicas(&r.client, "grow", 2).await;
    let status = eventually("the new member is Ready", PHASE, || async {
        let s = get_cluster(&r.client, "grow")
            .await
            .status
            .unwrap_or_default();
        let ready = s.condition("Ready").is_some_and(|c| c.status == "True");
        let new = s.members.iter().find(|m| m.name == "grow-s0-2");
        match new {
            Some(m) if m.role == "replica" && m.ready && ready && s.members.len() == 3 => Ok(s),
            _ => Err(format!("{:?} {:?}", s.members, s.condition("Ready"))),
        }
    })
    .await;
    assert_eq!(status.primary.as_ref(), Some(&primary), "the primary stays");
    let acked = writer.acked().await;
    more_acks(&writer, acked, 100, "writes go on").await;
    let log = writer.stop().await;

    // The datastore agrees: the new server replicates the primary, link up.
    let new_addr = r.kubelet.addr("grow-s0-2").await;
    let info = replication(new_addr).await.expect("INFO replication");
    assert_eq!(
        info.get("role").map(String::as_str),
        Some("slave"),
        "{info:?}"
    );
    assert_eq!(
        info.get("master_host"),
        Some(&primary_addr.ip().to_string()),
        "{info:?}"
    );
    assert_eq!(
        info.get("master_link_status").map(String::as_str),
        Some("up"),
        "{info:?}"
    );
    nothing_lost(&r.kubelet.addrs().await, "grow", &log).await;
    let history = r.kubelet.history().await;
    assert!(history.deleted.is_empty(), "nothing restarted: {history:?}");
    assert!(history.removed.is_empty(), "nothing removed: {history:?}");
    let created: Vec<&str> = history.created.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(created, ["grow-s0-0", "grow-s0-1", "grow-s0-2"]);
}

/// A Ready three-member cluster `name` (pods on nodes in zones a, b, c) whose primary is the
/// member of ordinal `primary`, under writes through its `-primary` Service, just scaled
/// down to one replica.
struct ScaleDown {
    r: Running,
    ctx: Arc<kvpilot::platform::kubernetes::controller::Context>,
    name: String,
    writer: Writer,
    _proxy: operator_support::proxy::PrimaryProxy,
    handovers: u64,
    failovers: u64,
}

async fn scale_down_with_primary_at(name: &str, primary: usize) -> ScaleDown {
    use operator_support::proxy::PrimaryProxy;
    use operator_support::scaling::set_replicas;

    let nodes = [
        ("node-a", "zone-a"),
        ("node-b", "zone-b"),
        ("node-c", "zone-c"),
    ];
    // Failovers land on the preferred zone's pod (ordinal i runs on the i-th node).
    let spec = format!(
        "engine: {{kind: valkey}}\nreplicas: 2\npolicies:\n  replicaSelection: {{plugin: \"builtin:most-caught-up\", config: {{preferZone: {}}}}}\n",
        nodes[primary].1
    );
    let (r, ctx) = run_cluster_on_nodes(name, &spec, &nodes).await;
    let want = format!("{name}-s0-{primary}");
    make_primary(&r, name, &want).await;
    let port = r.kubelet.addr(&want).await.port();
    let proxy = PrimaryProxy::start(&r.client, name, port).await;
    let writer = Writer::start(proxy.addr(), name, Duration::from_secs(300));
    more_acks(&writer, 0, 200, "writes are acknowledged").await;
    let handovers = counter(&ctx, "kvpilot_handovers_total", name);
    let failovers = counter(&ctx, "kvpilot_failovers_total", name);
    set_replicas(&r.client, name, 1).await;
    ScaleDown {
        r,
        ctx,
        name: name.to_string(),
        writer,
        _proxy: proxy,
        handovers,
        failovers,
    }
}

impl ScaleDown {
    /// The pod past the new size.
    fn removed(&self) -> String {
        format!("{}-s0-2", self.name)
    }

    /// Waits until the cluster is Ready with the two remaining members and the removed pod is
    /// gone; returns that status.
    async fn settled(&self) -> kvpilot::api::KvClusterStatus {
        let (name, removed) = (self.name.as_str(), self.removed());
        let want = [format!("{name}-s0-0"), format!("{name}-s0-1")];
        eventually("Ready with the remaining members", PHASE, || async {
            let s = get_cluster(&self.r.client, name)
                .await
                .status
                .unwrap_or_default();
            let names: Vec<&str> = s.members.iter().map(|m| m.name.as_str()).collect();
            let ready = s.condition("Ready").is_some_and(|c| c.status == "True");
            let gone = pods(&self.r.client, name)
                .await
                .iter()
                .all(|p| p.name_any() != removed);
            if ready && gone && names == want {
                Ok(s)
            } else {
                Err(format!("{names:?} ready {ready} pod gone {gone}"))
            }
        })
        .await
    }

    /// Writes go on; `handovers` planned handovers and no failover happened; the removed pod
    /// was a replica when it went and its server is stopped; every acknowledged write is on
    /// every remaining member.
    async fn check(self, handovers: u64) {
        let removed = self.removed();
        let name = self.name.as_str();
        let acked = self.writer.acked().await;
        more_acks(
            &self.writer,
            acked,
            100,
            "writes go on after the scale-down",
        )
        .await;
        let log = self.writer.stop().await;
        assert_eq!(
            counter(&self.ctx, "kvpilot_handovers_total", name),
            self.handovers + handovers,
            "planned handovers"
        );
        assert_eq!(
            counter(&self.ctx, "kvpilot_failovers_total", name),
            self.failovers,
            "no failover"
        );
        let history = self.r.kubelet.history().await;
        assert_eq!(
            history.removed,
            [(removed.clone(), Some("replica".to_string()))],
            "the pod was a replica when the StatefulSet removed it: {history:?}"
        );
        let addrs = self.r.kubelet.addrs().await;
        assert!(!addrs.contains_key(&removed), "its server is stopped");
        nothing_lost(&addrs, name, &log).await;
    }
}

/// Scale-down 2 → 1 replicas while the primary is not among the removed ordinals: no
/// handover, the StatefulSet shrinks at once, the removed pod is gone, no write is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_down_replicas_only_shrinks_at_once() {
    let scale = scale_down_with_primary_at("trim", 0).await;
    let sts_api: Api<StatefulSet> = Api::namespaced(scale.r.client.clone(), NS);
    // At once: a reconcile or two (100 ms apart), nothing to wait for.
    eventually(
        "the StatefulSet shrinks at once",
        Duration::from_secs(10),
        || async {
            let sts = sts_api.get("trim-s0").await.map_err(|e| e.to_string())?;
            match sts.spec.and_then(|s| s.replicas) {
                Some(2) => Ok(()),
                n => Err(format!("replicas {n:?}")),
            }
        },
    )
    .await;
    let status = scale.settled().await;
    assert_eq!(
        status.primary.as_deref(),
        Some("trim-s0-0"),
        "the primary stays"
    );
    scale.check(0).await;
}

/// Scale-down 2 → 1 replicas while the primary is on the removed ordinal: the StatefulSet
/// keeps its size until the primary has handed over (a planned handover, no failover) to a
/// member that stays; only then does it shrink, and the removed pod is a replica when it goes.
/// No acknowledged write is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_down_hands_the_primary_over_before_removing_its_pod() {
    let scale = scale_down_with_primary_at("shrink", 2).await;
    let status = scale.settled().await;
    let primary = status.primary.clone().expect("a primary");
    assert_ne!(
        primary,
        scale.removed(),
        "the primary moved to a member that stays"
    );
    scale.check(1).await;
}
