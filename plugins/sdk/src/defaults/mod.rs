//! The default policies, one module per plugin, as plain functions of the request.
//!
//! Each module has `info()`, `validate_config(config)` and the hook function; the components
//! in `plugins/components/` wrap exactly these.
pub mod most_caught_up;
pub mod replicas_first;
pub mod stagger;

use crate::prelude::*;
use serde_json::{Map, Value};

/// Parse a plugin's config text as a JSON object and reject fields not in `known`.
/// Blank text counts as `{}`.
fn config_object(config: &str, known: &[&str]) -> Result<Map<String, Value>, String> {
    // Blank and `{}` (what the host sends when nothing is configured) need no JSON parser.
    if matches!(config.trim(), "" | "{}") {
        return Ok(Map::new());
    }
    let value: Value =
        serde_json::from_str(config).map_err(|e| format!("config is not valid JSON: {e}"))?;
    let Value::Object(map) = value else {
        return Err(format!("config must be a JSON object, got `{value}`"));
    };
    if let Some(unknown) = map.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(if known.is_empty() {
            format!("{unknown}: unknown field (this plugin takes no settings)")
        } else {
            format!(
                "{unknown}: unknown field (known fields: {})",
                known.join(", ")
            )
        });
    }
    Ok(map)
}

/// Names a list of members for a message: `a, b and c`.
fn names<'a>(members: impl IntoIterator<Item = &'a str>) -> String {
    let names: Vec<&str> = members.into_iter().collect();
    match names.as_slice() {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_object_accepts_objects_and_blank_text() {
        assert!(config_object("{}", &[]).is_ok_and(|m| m.is_empty()));
        assert!(config_object("  ", &[]).is_ok_and(|m| m.is_empty()));
        let map = config_object(r#"{"a": 1}"#, &["a", "b"]).unwrap();
        assert_eq!(map.get("a"), Some(&Value::from(1)));
    }

    #[test]
    fn config_object_names_what_is_wrong() {
        assert_eq!(
            config_object(r#"{"x": 1}"#, &[]).unwrap_err(),
            "x: unknown field (this plugin takes no settings)"
        );
        assert_eq!(
            config_object(r#"{"a": 1, "zz": 2}"#, &["a", "b"]).unwrap_err(),
            "zz: unknown field (known fields: a, b)"
        );
        assert!(
            config_object("[1]", &[])
                .unwrap_err()
                .starts_with("config must be a JSON object")
        );
        assert!(
            config_object("{", &[])
                .unwrap_err()
                .starts_with("config is not valid JSON")
        );
    }

    #[test]
    fn names_reads_as_a_sentence() {
        assert_eq!(names([]), "");
        assert_eq!(names(["a"]), "a");
        assert_eq!(names(["a", "b"]), "a and b");
        assert_eq!(names(["a", "b", "c"]), "a, b and c");
    }
}

/// Members and clusters for the default policies' tests.
#[cfg(test)]
mod testing {
    use crate::prelude::*;
    use crate::types::{Cluster, Member, Role};

    /// A healthy, current, in-sync member of shard 0 named `cache-{ordinal}` holding 100 keys.
    pub fn member(ordinal: u32, role: Role) -> Member {
        Member {
            name: format!("cache-{ordinal}"),
            shard: 0,
            ordinal,
            role,
            ready: true,
            on_desired_revision: true,
            link_up: true,
            syncing: false,
            offset: 1000,
            lag_bytes: 0,
            keys: 100,
            zone: None,
            node: None,
        }
    }

    /// `cache-0` as the primary and `cache-1..n` as replicas.
    pub fn shard(n: u32) -> Vec<Member> {
        (0..n)
            .map(|i| member(i, if i == 0 { Role::Primary } else { Role::Replica }))
            .collect()
    }

    pub fn cluster() -> Cluster {
        Cluster {
            name: "cache".into(),
            namespace: "default".into(),
            shards: 1,
            replicas_per_shard: 2,
            ..Cluster::default()
        }
    }
}
