//! Strict reading of JSON records: serde ignores fields a record does not have, so a typo such
//! as `lag_bytes` for `lag-bytes` would silently default. [`first_unknown`] walks the JSON as
//! given beside the record as parsed and written back, and names the first field the record
//! lacks by its path.

use crate::prelude::*;
use serde_json::Value;

/// A field of the given JSON that the record at its place does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unknown {
    /// Where the field is, e.g. `candidates[1].lag_bytes`.
    pub path: String,
    /// The field's name.
    pub field: String,
    /// The fields the record at that place has.
    pub expected: Vec<String>,
}

impl Unknown {
    /// ` (did you mean `lag-bytes`?)` when only the spelling is off (the WIT names are
    /// kebab-case; the commonest typo is a snake_case or camelCase name), else empty.
    pub fn did_you_mean(&self) -> String {
        let mut kebab = String::new();
        for c in self.field.chars() {
            match c {
                '_' => kebab.push('-'),
                c if c.is_ascii_uppercase() => {
                    kebab.push('-');
                    kebab.push(c.to_ascii_lowercase());
                }
                c => kebab.push(c),
            }
        }
        self.expected
            .iter()
            .find(|e| **e == kebab)
            .map(|e| format!(" (did you mean `{e}`?)"))
            .unwrap_or_default()
    }
}

/// Walks `given` and `known` together (`known`: the parsed record written back, in which
/// every field is present); the first key of a `given` object that the matching `known`
/// object lacks. `path` prefixes the reported path. Where `known` is not an object or array
/// (e.g. `config`, given as an inline object but kept as JSON text), `given` is not walked.
pub fn first_unknown(given: &Value, known: &Value, path: &str) -> Option<Unknown> {
    match (given, known) {
        (Value::Object(given), Value::Object(known)) => given.iter().find_map(|(key, value)| {
            let here = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            match known.get(key) {
                Some(known_value) => first_unknown(value, known_value, &here),
                None => Some(Unknown {
                    path: here,
                    field: key.clone(),
                    expected: known.keys().cloned().collect(),
                }),
            }
        }),
        (Value::Array(given), Value::Array(known)) => given
            .iter()
            .zip(known)
            .enumerate()
            .find_map(|(i, (g, k))| first_unknown(g, k, &format!("{path}[{i}]"))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_first_unknown_field_is_named_by_its_path_with_a_hint() {
        let known = json!({"a": 1, "list": [{"lag-bytes": 0}], "config": "{}"});
        let given = json!({"a": 2, "list": [{"lag-bytes": 1}, {"lag_bytes": 2}]});
        // Only as many array items as the record has are walked: the record was parsed
        // from `given`, so both have the same length in practice.
        assert_eq!(first_unknown(&given, &known, ""), None);
        let given = json!({"list": [{"lag_bytes": 1}], "config": {"anything": 1}});
        let unknown = first_unknown(&given, &known, "request").expect("found");
        assert_eq!(unknown.path, "request.list[0].lag_bytes");
        assert_eq!(unknown.did_you_mean(), " (did you mean `lag-bytes`?)");
        let camel = first_unknown(&json!({"list": [{"lagBytes": 1}]}), &known, "").unwrap();
        assert_eq!(camel.did_you_mean(), " (did you mean `lag-bytes`?)");
        let other = first_unknown(&json!({"zz": 1}), &known, "").unwrap();
        assert_eq!(
            (other.path.as_str(), other.did_you_mean()),
            ("zz", String::new())
        );
    }
}
