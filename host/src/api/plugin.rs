//! `PolicyPlugin`: the cluster-scoped registration of one policy plugin, named by
//! `KvCluster.spec.policies.*.plugin`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// A WebAssembly policy plugin and the limits of each call.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
// Each printer column repeats `type_ = "string"`, which clippy reads as a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[kube(
    group = "kvpilot.dev",
    version = "v1alpha1",
    kind = "PolicyPlugin",
    shortname = "kvpp",
    category = "kvpilot",
    status = "PolicyPluginStatus",
    derive = "PartialEq",
    doc = "A WebAssembly policy plugin (a component built against kvpilot:policy) that \
           KvClusters can name in spec.policies: where its bytes come from, pinned by sha256, \
           and the limits of each call.",
    printcolumn(
        name = "Valid",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Valid\")].status",
        description = "Whether the plugin loaded and passed validation"
    ),
    printcolumn(
        name = "Hooks",
        type_ = "string",
        json_path = ".status.hooks",
        description = "The hooks the plugin answers"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PolicyPluginSpec {
    /// Where the plugin's WebAssembly component comes from.
    pub source: PluginSource,
    /// Resource limits of one call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<PluginLimits>,
}

/// Exactly one of `builtin`, `configMap` or `url`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, KubeSchema)]
#[x_kube(
    validation = Rule::new("[has(self.builtin), has(self.configMap), has(self.url)].filter(x, x).size() == 1")
        .message("source needs exactly one of builtin, configMap or url"),
    validation = Rule::new("!has(self.url) || has(self.sha256)")
        .message("a url source must be pinned by sha256"),
    validation = Rule::new("!has(self.builtin) || !has(self.sha256)")
        .message("sha256 does not apply to a builtin: builtins are carried inside the operator")
)]
#[serde(rename_all = "camelCase")]
pub struct PluginSource {
    /// A plugin carried inside the operator binary, e.g. `most-caught-up`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub builtin: Option<String>,
    /// A ConfigMap whose `binaryData` key holds the component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapSource>,
    /// An `https://` (or `http://`: the sha256 pin still guards the bytes) URL to download
    /// the component from; requires `sha256`. One GET, 200 only, redirects not followed,
    /// at most the operator's plugin size limit (`--max-plugin-mib`, 16 MiB by default)
    /// within 30 s; a body that does not start as WebAssembly is refused on its first bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://"))]
    pub url: Option<String>,
    /// Expected SHA-256 of the component (64 lowercase hex digits, quoted in YAML: an
    /// unquoted `0000…` is a number). Bytes with another digest are refused, and every
    /// KvCluster using the plugin reports `PolicyFailed` for its hooks. Required for a `url`;
    /// optional for a `configMap`, whose bytes may then change in place: the digest in use is
    /// always in `status.sha256`, each change of it is an Event on the PolicyPlugin, and each
    /// decision in a KvCluster's `status.lastDecisions` names the digest that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub sha256: Option<String>,
}

/// A key of a ConfigMap holding a plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapSource {
    /// Namespace of the ConfigMap.
    #[schemars(length(min = 1))]
    pub namespace: String,
    /// Name of the ConfigMap.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key in the ConfigMap's `binaryData`.
    #[schemars(length(min = 1))]
    pub key: String,
}

/// What one call of the plugin may use; unset values are the operator's defaults
/// (100 ms, 32 MiB).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginLimits {
    /// Wall-clock deadline of one call, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 60000))]
    pub timeout_ms: Option<u64>,
    /// Linear memory cap of one call, in MiB.
    #[serde(default, rename = "memoryMiB", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 256))]
    pub memory_mib: Option<u64>,
}

/// What the operator found when it loaded the plugin.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyPluginStatus {
    /// `Loaded` (the bytes were fetched and matched the digest) and `Valid` (the component
    /// compiled, exports at least one hook, and accepted its configuration).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The hooks the component answers, e.g. `replica-selection`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<String>,
    /// SHA-256 of the loaded component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Why loading or validation failed, or the plugin's own description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
