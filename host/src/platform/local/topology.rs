//! Zones and nodes of local members, from the manifest's annotations, so topology-aware
//! plugins can be tried locally:
//!
//! ```yaml
//! metadata:
//!   name: demo
//!   annotations:
//!     zone.local.kvpilot.dev/demo-1: zone-a
//!     node.local.kvpilot.dev/demo-1: node-1
//! ```
//!
//! Annotations rather than a spec field: the manifest stays valid for `kubectl apply`, where
//! the operator takes zones and nodes from the pods' nodes instead.

use crate::api::KvClusterManifest;
use std::collections::BTreeMap;

/// Annotation prefix of a member's zone.
pub const ZONE_PREFIX: &str = "zone.local.kvpilot.dev/";
/// Annotation prefix of a member's node.
pub const NODE_PREFIX: &str = "node.local.kvpilot.dev/";
/// The longest zone or node name (a Kubernetes label value).
pub const MAX_PLACE_BYTES: usize = 63;

/// Where one member runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Place {
    pub zone: Option<String>,
    pub node: Option<String>,
}

/// Each member's place, by member name.
pub type Topology = BTreeMap<String, Place>;

/// The members' places from `manifest`; an annotation naming no member of the group, or a
/// value that is not a label value, is refused naming the annotation.
pub fn read(manifest: &KvClusterManifest) -> Result<Topology, String> {
    let name = &manifest.metadata.name;
    let members: Vec<String> = (0..=manifest.spec.replicas)
        .map(|i| format!("{name}-{i}"))
        .collect();
    let mut topology = Topology::new();
    for (key, value) in &manifest.metadata.annotations {
        let (member, zone) = match (key.strip_prefix(ZONE_PREFIX), key.strip_prefix(NODE_PREFIX)) {
            (Some(member), _) => (member, true),
            (_, Some(member)) => (member, false),
            _ => continue,
        };
        let field = format!("metadata.annotations.{key}");
        if !members.iter().any(|m| m == member) {
            return Err(format!(
                "{field}: `{member}` is not a member of this group (members: {})",
                members.join(", ")
            ));
        }
        let label = !value.is_empty()
            && value.len() <= MAX_PLACE_BYTES
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !label {
            return Err(format!(
                "{field}: `{}` is not a zone or node name (1 to {MAX_PLACE_BYTES} letters, \
                 digits, `-`, `_` or `.`)",
                value.chars().take(80).collect::<String>()
            ));
        }
        let place = topology.entry(member.to_string()).or_default();
        if zone {
            place.zone = Some(value.clone());
        } else {
            place.node = Some(value.clone());
        }
    }
    Ok(topology)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(annotations: &[(&str, &str)]) -> KvClusterManifest {
        let mut m: KvClusterManifest = serde_norway::from_str(
            "apiVersion: kvpilot.dev/v1alpha1\nkind: KvCluster\nmetadata: {name: demo}\nspec: {engine: {kind: valkey}, replicas: 2}\n",
        )
        .expect("manifest");
        m.metadata.annotations = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        m
    }

    #[test]
    fn zones_and_nodes_come_from_annotations() {
        let t = read(&manifest(&[
            ("zone.local.kvpilot.dev/demo-1", "zone-a"),
            ("node.local.kvpilot.dev/demo-1", "node-1"),
            ("zone.local.kvpilot.dev/demo-2", "zone-b"),
            ("example.com/other", "ignored"),
        ]))
        .expect("reads");
        assert_eq!(
            t.get("demo-1"),
            Some(&Place {
                zone: Some("zone-a".into()),
                node: Some("node-1".into())
            })
        );
        assert_eq!(t.get("demo-2").and_then(|p| p.node.clone()), None);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn bad_annotations_are_named() {
        let err = read(&manifest(&[("zone.local.kvpilot.dev/demo-3", "a")])).unwrap_err();
        assert!(
            err.starts_with(
                "metadata.annotations.zone.local.kvpilot.dev/demo-3: `demo-3` is not a member"
            ),
            "{err}"
        );
        let err = read(&manifest(&[("node.local.kvpilot.dev/demo-0", "a b")])).unwrap_err();
        assert!(
            err.starts_with("metadata.annotations.node.local.kvpilot.dev/demo-0: `a b` is not a zone or node name"),
            "{err}"
        );
    }
}
