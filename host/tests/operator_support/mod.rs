//! Test support for the operator: an in-memory API ([`kube_fake_client`]) and a stand-in for
//! the StatefulSet controller and the kubelet that backs every Pod with a real `valkey-server`
//! on its own 127.0.0.x pod IP.

#![allow(dead_code)]

pub mod kubelet;
pub mod proxy;
pub mod scaling;
/// The engine tests' rcgen certificates, shared.
#[path = "../support/tls.rs"]
pub mod tls;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use kvpilot::api::{KvCluster, KvClusterSpec, PolicyPlugin};
use kvpilot::decide::Settings;
use kvpilot::platform::kubernetes::controller::{self, Context};
use kvpilot::platform::kubernetes::metrics::Metrics;
use kvpilot::policy::PolicyRuntime;
use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const NS: &str = "shop";

/// A fake API server with the kvpilot CRDs (KvCluster status as a subresource).
pub async fn fake_client() -> Client {
    record_deletes(builder().build().await.expect("fake client"))
}

/// [`fake_client`] whose calls go through `interceptors` first (to inject API errors).
pub async fn fake_client_with(interceptors: kube_fake_client::interceptor::Funcs) -> Client {
    record_deletes(
        builder()
            .with_interceptor_funcs(interceptors)
            .build()
            .await
            .expect("fake client"),
    )
}

/// Uids of the pods deleted with `gracePeriodSeconds: 0` (force deletions). A real API server
/// hands the kubelet the grace period with the deleted pod; the fake deletes at once and keeps
/// none, so the calls are watched on their way to it and the kubelet stand-in reads this.
pub static FORCE_DELETED: std::sync::LazyLock<std::sync::Mutex<HashSet<String>>> =
    std::sync::LazyLock::new(Default::default);

/// Whether the pod with `uid` was force-deleted.
pub fn force_deleted(uid: &str) -> bool {
    FORCE_DELETED
        .lock()
        .map(|set| set.contains(uid))
        .unwrap_or(false)
}

fn record_deletes(fake: Client) -> Client {
    Client::new(RecordDeletes { inner: fake }, "default")
}

/// Passes every request to the fake, noting the uid precondition of each pod deletion with
/// a zero grace period in [`FORCE_DELETED`].
#[derive(Clone)]
struct RecordDeletes {
    inner: Client,
}

type Body = kube::client::Body;

impl tower_service::Service<http::Request<Body>> for RecordDeletes {
    type Response = http::Response<Body>;
    type Error = kube::Error;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<http::Response<Body>, kube::Error>> + Send + 'static>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), kube::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move {
            use http_body_util::BodyExt;
            let (parts, body) = request.into_parts();
            let bytes = body.collect().await?.to_bytes();
            if parts.method == http::Method::DELETE && parts.uri.path().contains("/pods/") {
                let options: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                if options["gracePeriodSeconds"] == 0
                    && let Some(uid) = options["preconditions"]["uid"].as_str()
                    && let Ok(mut set) = FORCE_DELETED.lock()
                {
                    set.insert(uid.to_string());
                }
            }
            inner
                .send(http::Request::from_parts(parts, Body::from(bytes.to_vec())))
                .await
        })
    }
}

fn builder() -> kube_fake_client::ClientBuilder {
    kube_fake_client::ClientBuilder::new()
        .with_resource::<KvCluster>()
        // The fake registers every custom resource as namespaced; PolicyPlugin is
        // cluster-scoped, so its plural is registered under another kind, which makes the
        // scope check (by kind) pass for it.
        .with_resource::<PluralOnly<PolicyPlugin>>()
        .with_status_subresource::<StatusOf<KvCluster>>()
        .with_status_subresource::<Pod>()
        .with_status_subresource::<k8s_openapi::api::apps::v1::StatefulSet>()
}

/// A stand-in that names a custom resource's group/version/kind for
/// `with_status_subresource`, which wants a `Default` instance (CRD types have none).
pub struct StatusOf<K> {
    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    _kind: std::marker::PhantomData<K>,
}

impl<K> Default for StatusOf<K> {
    fn default() -> Self {
        StatusOf {
            metadata: Default::default(),
            _kind: std::marker::PhantomData,
        }
    }
}

impl<K: kube::Resource<DynamicType = ()>> serde::Serialize for StatusOf<K> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("apiVersion", &K::api_version(&()))?;
        m.serialize_entry("kind", &K::kind(&()))?;
        m.end()
    }
}

impl<K: kube::Resource<DynamicType = ()>> kube::Resource for StatusOf<K> {
    type DynamicType = ();
    type Scope = K::Scope;
    fn kind(_: &()) -> std::borrow::Cow<'_, str> {
        K::kind(&()).into_owned().into()
    }
    fn group(_: &()) -> std::borrow::Cow<'_, str> {
        K::group(&()).into_owned().into()
    }
    fn version(_: &()) -> std::borrow::Cow<'_, str> {
        K::version(&()).into_owned().into()
    }
    fn plural(_: &()) -> std::borrow::Cow<'_, str> {
        K::plural(&()).into_owned().into()
    }
    fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        &mut self.metadata
    }
}

/// Registers `K`'s plural under the kind `<Kind>Plural` (see [`fake_client`]).
pub struct PluralOnly<K>(StatusOf<K>);

impl<K: kube::Resource<DynamicType = ()>> kube::Resource for PluralOnly<K> {
    type DynamicType = ();
    type Scope = K::Scope;
    fn kind(_: &()) -> std::borrow::Cow<'_, str> {
        format!("{}Plural", K::kind(&())).into()
    }
    fn group(_: &()) -> std::borrow::Cow<'_, str> {
        K::group(&()).into_owned().into()
    }
    fn version(_: &()) -> std::borrow::Cow<'_, str> {
        K::version(&()).into_owned().into()
    }
    fn plural(_: &()) -> std::borrow::Cow<'_, str> {
        K::plural(&()).into_owned().into()
    }
    fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        &self.0.metadata
    }
    fn meta_mut(&mut self) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        &mut self.0.metadata
    }
}

/// A spec from YAML.
pub fn spec(yaml: &str) -> KvClusterSpec {
    serde_norway::from_str(yaml).expect("spec")
}

/// Stores KvCluster `name` and returns it as read back (uid, generation set).
pub async fn create_cluster(client: &Client, name: &str, spec: KvClusterSpec) -> KvCluster {
    let api: Api<KvCluster> = Api::namespaced(client.clone(), NS);
    let mut kc = KvCluster::new(name, spec);
    kc.metadata.namespace = Some(NS.into());
    api.create(&PostParams::default(), &kc)
        .await
        .expect("create");
    api.get(name).await.expect("get")
}

pub async fn get_cluster(client: &Client, name: &str) -> KvCluster {
    Api::<KvCluster>::namespaced(client.clone(), NS)
        .get(name)
        .await
        .expect("get KvCluster")
}

/// Merge-patches the spec of KvCluster `name` with `spec`, as `kubectl patch --type merge`
/// would, and returns once the change holds.
///
/// kube-fake-client's update checks the resourceVersion and stores the object under separate
/// locks, so an operator status patch that read the object just before this one can store the
/// old spec back, or refuse this patch with a conflict; a real API server does neither. The
/// patch is sent again when that happens (bounded).
pub async fn patch_spec(client: &Client, name: &str, spec: serde_json::Value) {
    let api: Api<KvCluster> = Api::namespaced(client.clone(), NS);
    let patch = serde_json::json!({ "spec": spec });
    for _ in 0..20 {
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            // The same race seen from the other side: the fake refuses a merge patch whose
            // read went stale before its write.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                eprintln!("the spec patch {spec} of {name} met a conflict; sending it again");
                continue;
            }
            Err(e) => panic!("merge-patch KvCluster {name} spec: {e}"),
        }
        if holds(&api, name, &spec).await {
            return;
        }
        eprintln!("the spec patch {spec} of {name} was written over; sending it again");
    }
    panic!("the spec patch {spec} of {name} never held");
}

/// Whether the stored spec of `name` contains `want`, twice 50 ms apart: a racing status write
/// lands within microseconds of the patch.
async fn holds(api: &Api<KvCluster>, name: &str, want: &serde_json::Value) -> bool {
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let kc = api.get(name).await.expect("get KvCluster");
        let spec = serde_json::to_value(&kc.spec).expect("spec as JSON");
        if !contains(&spec, want) {
            return false;
        }
    }
    true
}

/// Whether `have` holds every field of `want` with its value (objects compared field by field).
fn contains(have: &serde_json::Value, want: &serde_json::Value) -> bool {
    match (have, want) {
        (serde_json::Value::Object(h), serde_json::Value::Object(w)) => w
            .iter()
            .all(|(k, v)| h.get(k).is_some_and(|hv| contains(hv, v))),
        _ => have == want,
    }
}

/// The controller context, with fast probes and members on `port`.
pub fn context(client: &Client, port: u16) -> Arc<Context> {
    Arc::new(new_context(client, port))
}

/// [`context`], acting only while `leadership` allows (rule 9).
pub fn context_with_leadership(
    client: &Client,
    port: u16,
    leadership: Arc<dyn kvpilot::leadership::Leadership>,
) -> Arc<Context> {
    Arc::new(new_context(client, port).with_leadership(leadership))
}

/// [`context`], trying a failed PolicyPlugin again after `base` (doubling up to `max`).
pub fn context_with_plugin_retry(
    client: &Client,
    port: u16,
    base: Duration,
    max: Duration,
) -> Arc<Context> {
    Arc::new(new_context(client, port).with_plugin_retry(base, max))
}

fn new_context(client: &Client, port: u16) -> Context {
    let settings = Settings {
        probe_interval: Duration::from_millis(100),
        steady_interval: Duration::from_millis(500),
        ..Settings::default()
    };
    Context::new(
        client.clone(),
        PolicyRuntime::global().expect("runtime"),
        Arc::new(Metrics::new()),
        settings,
        port,
    )
}

/// The Events (events.k8s.io/v1, what kube's recorder writes) about KvCluster `cluster`.
pub async fn events_about(
    client: &Client,
    cluster: &str,
) -> Vec<k8s_openapi::api::events::v1::Event> {
    Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), NS)
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().is_some_and(|r| {
                r.kind.as_deref() == Some("KvCluster") && r.name.as_deref() == Some(cluster)
            })
        })
        .collect()
}

/// The event of `reason` about `cluster`, if any.
pub async fn event(
    client: &Client,
    cluster: &str,
    reason: &str,
) -> Option<k8s_openapi::api::events::v1::Event> {
    events_about(client, cluster)
        .await
        .into_iter()
        .find(|e| e.reason.as_deref() == Some(reason))
}

/// One reconcile of the cluster as stored now.
pub async fn reconcile_once(client: &Client, ctx: &Arc<Context>, name: &str) {
    let kc = get_cluster(client, name).await;
    if let Err(e) = controller::reconcile(Arc::new(kc), ctx.clone()).await {
        panic!("reconcile failed: {e}");
    }
}

/// Polls `check` until it returns `Ok`, at most `limit`; panics with the last error.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < limit {
        match check().await {
            Ok(v) => return v,
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not within {limit:?}: {last}");
}

/// The pod names of the cluster.
pub async fn pods(client: &Client, cluster: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), NS)
        .list(&ListParams::default().labels(&format!("kvpilot.dev/cluster={cluster}")))
        .await
        .expect("list pods")
        .items
}

/// The name of the pod labelled primary, if exactly one is.
pub async fn labelled_primary(client: &Client, cluster: &str) -> Option<String> {
    let primaries: Vec<String> = pods(client, cluster)
        .await
        .into_iter()
        .filter(|p| p.labels().get("kvpilot.dev/role").map(String::as_str) == Some("primary"))
        .map(|p| p.name_any())
        .collect();
    assert!(
        primaries.len() <= 1,
        "two pods labelled primary: {primaries:?}"
    );
    primaries.into_iter().next()
}

/// Creates Secret `name` with `data` (bytes by key), or replaces its data.
pub async fn put_secret(client: &Client, name: &str, type_: &str, data: &[(&str, &[u8])]) {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;
    let api: Api<Secret> = Api::namespaced(client.clone(), NS);
    let mut secret = Secret {
        type_: Some(type_.to_string()),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                .collect(),
        ),
        ..Default::default()
    };
    secret.metadata.name = Some(name.to_string());
    secret.metadata.namespace = Some(NS.into());
    match api.get_opt(name).await.expect("get Secret") {
        None => {
            api.create(&PostParams::default(), &secret)
                .await
                .expect("create Secret");
        }
        Some(existing) => {
            secret.metadata.resource_version = existing.metadata.resource_version;
            api.replace(name, &PostParams::default(), &secret)
                .await
                .expect("replace Secret");
        }
    }
}
