//! Hand-written OpenAPI schemas for the few spec types that come from crates without a
//! `JsonSchema` derive (the SDK's engine enum, the policy runtime's failure policy) or whose
//! derived schema Kubernetes would reject (free-form JSON).

use schemars::{Schema, SchemaGenerator, json_schema};

/// `engine.kind`: the SDK's `Engine`, serialized in kebab-case.
pub(super) fn engine_kind(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "enum": ["valkey", "redis", "dragonfly"],
    })
}

/// `failurePolicy`: the policy runtime's `FailurePolicy`.
pub(super) fn failure_policy(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "enum": ["Fail", "Fallback"],
        "default": "Fail",
    })
}

/// A free-form JSON object kept as written (plugin settings).
pub(super) fn free_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// Any JSON value kept as written (a plugin's answer, a recorded request).
pub(super) fn any_json(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "x-kubernetes-preserve-unknown-fields": true,
    })
}
