//! Checks a plugin config against the JSON Schema its metadata embeds (`metadata.rs`). A
//! subset of JSON Schema that covers plugin settings: `type`, `properties`, `required`,
//! `additionalProperties` (a boolean or a schema), `enum`, `const`, `minimum`, `maximum`,
//! `exclusiveMinimum`, `exclusiveMaximum`, `minLength`, `maxLength`, `items`, `minItems`,
//! `maxItems`; `description`, `title`, `default`, `examples` and `$schema` are notes. Any
//! other keyword is reported by [`unsupported`] (at annotate time), never silently taken as
//! satisfied. Every error names the field by its path (`config.maxLagBytes`).

use serde_json::Value;

/// Keywords checked or merely informative.
const KNOWN: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "enum",
    "const",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "items",
    "minItems",
    "maxItems",
    "description",
    "title",
    "default",
    "examples",
    "$schema",
];

/// Deepest schema nesting walked (a schema is written by a person; this bounds a hostile one).
const MAX_DEPTH: usize = 32;

/// The keywords of `schema` (at any depth) this checker does not check, by path.
pub fn unsupported(schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk_keywords(schema, "schema", 0, &mut out);
    out
}

fn walk_keywords(schema: &Value, path: &str, depth: usize, out: &mut Vec<String>) {
    let Some(map) = schema.as_object() else {
        return;
    };
    if depth > MAX_DEPTH {
        out.push(format!("{path}: nested deeper than {MAX_DEPTH}"));
        return;
    }
    for (key, value) in map {
        if !KNOWN.contains(&key.as_str()) {
            out.push(format!("{path}.{key}"));
        }
        match key.as_str() {
            "properties" => {
                for (name, sub) in value.as_object().into_iter().flatten() {
                    walk_keywords(sub, &format!("{path}.properties.{name}"), depth + 1, out);
                }
            }
            "items" | "additionalProperties" => {
                walk_keywords(value, &format!("{path}.{key}"), depth + 1, out)
            }
            _ => {}
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn has_type(v: &Value, t: &str) -> bool {
    let actual = type_name(v);
    actual == t || (t == "number" && actual == "integer")
}

/// Checks `value` (at `path`) against `schema`; the first problem found.
pub fn check(schema: &Value, value: &Value, path: &str) -> Result<(), String> {
    check_at(schema, value, path, 0)
}

fn check_at(schema: &Value, value: &Value, path: &str, depth: usize) -> Result<(), String> {
    let fail = |message: String| Err(format!("{path}: {message}"));
    let Some(s) = schema.as_object() else {
        // `true` accepts anything; `false` nothing.
        return match schema {
            Value::Bool(false) => fail("no value is allowed here".into()),
            _ => Ok(()),
        };
    };
    if depth > MAX_DEPTH {
        return fail(format!("the schema is nested deeper than {MAX_DEPTH}"));
    }
    if let Some(t) = s.get("type") {
        let types: Vec<&str> = match t {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        if !types.is_empty() && !types.iter().any(|t| has_type(value, t)) {
            return fail(format!(
                "must be {}, not {}",
                types.join(" or "),
                type_name(value)
            ));
        }
    }
    if let Some(options) = s.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        let list: Vec<String> = options.iter().map(Value::to_string).collect();
        return fail(format!("must be one of {}", list.join(", ")));
    }
    if let Some(c) = s.get("const")
        && c != value
    {
        return fail(format!("must be {c}"));
    }
    if let Some(n) = value.as_f64() {
        let bound = |k: &str| s.get(k).and_then(Value::as_f64);
        if let Some(min) = bound("minimum")
            && n < min
        {
            return fail(format!("must be at least {min}"));
        }
        if let Some(max) = bound("maximum")
            && n > max
        {
            return fail(format!("must be at most {max}"));
        }
        if let Some(min) = bound("exclusiveMinimum")
            && n <= min
        {
            return fail(format!("must be more than {min}"));
        }
        if let Some(max) = bound("exclusiveMaximum")
            && n >= max
        {
            return fail(format!("must be less than {max}"));
        }
    }
    let count = |k: &str| s.get(k).and_then(Value::as_u64);
    if let Some(text) = value.as_str() {
        let chars = text.chars().count() as u64;
        if let Some(min) = count("minLength")
            && chars < min
        {
            return fail(format!("must be at least {min} characters"));
        }
        if let Some(max) = count("maxLength")
            && chars > max
        {
            return fail(format!("must be at most {max} characters"));
        }
    }
    if let Some(items) = value.as_array() {
        if let Some(min) = count("minItems")
            && (items.len() as u64) < min
        {
            return fail(format!("must have at least {min} items"));
        }
        if let Some(max) = count("maxItems")
            && (items.len() as u64) > max
        {
            return fail(format!("must have at most {max} items"));
        }
        if let Some(item_schema) = s.get("items") {
            for (i, item) in items.iter().enumerate() {
                check_at(item_schema, item, &format!("{path}[{i}]"), depth + 1)?;
            }
        }
    }
    if let Some(object) = value.as_object() {
        for name in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !object.contains_key(name) {
                return fail(format!("`{name}` is required"));
            }
        }
        let properties = s.get("properties").and_then(Value::as_object);
        for (name, field) in object {
            let at = format!("{path}.{name}");
            match properties.and_then(|p| p.get(name)) {
                Some(sub) => check_at(sub, field, &at, depth + 1)?,
                None => match s.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        let known: Vec<&str> = properties
                            .map(|p| p.keys().map(String::as_str).collect())
                            .unwrap_or_default();
                        return Err(format!(
                            "{at}: unknown field (known: {})",
                            if known.is_empty() {
                                "none".to_string()
                            } else {
                                known.join(", ")
                            }
                        ));
                    }
                    Some(extra) => check_at(extra, field, &at, depth + 1)?,
                    None => {}
                },
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "description": "settings",
            "properties": {
                "maxLagBytes": {"type": "integer", "minimum": 0, "maximum": 1000},
                "preferZone": {"type": "string", "minLength": 1},
                "mode": {"enum": ["a", "b"]},
                "zones": {"type": "array", "items": {"type": "string"}, "maxItems": 2}
            },
            "required": ["preferZone"],
            "additionalProperties": false
        })
    }

    #[test]
    fn a_config_is_checked_and_each_error_names_its_field() {
        let s = schema();
        let ok = json!({"preferZone": "z", "maxLagBytes": 10, "zones": ["a"]});
        assert_eq!(check(&s, &ok, "config"), Ok(()));
        let cases = [
            (json!([]), "config: must be object, not array"),
            (json!({}), "config: `preferZone` is required"),
            (
                json!({"preferZone": "z", "maxLagBytes": 5000}),
                "config.maxLagBytes: must be at most 1000",
            ),
            (
                json!({"preferZone": "z", "maxLagBytes": 1.5}),
                "config.maxLagBytes: must be integer, not number",
            ),
            (
                json!({"preferZone": ""}),
                "config.preferZone: must be at least 1 characters",
            ),
            (
                json!({"preferZone": "z", "mode": "c"}),
                "config.mode: must be one of \"a\", \"b\"",
            ),
            (
                json!({"preferZone": "z", "zones": ["a", 1]}),
                "config.zones[1]: must be string, not integer",
            ),
            (
                json!({"preferZone": "z", "zone": "x"}),
                "config.zone: unknown field (known: maxLagBytes, mode, preferZone, zones)",
            ),
        ];
        for (value, error) in cases {
            assert_eq!(
                check(&s, &value, "config"),
                Err(error.to_string()),
                "{value}"
            );
        }
    }

    #[test]
    fn unknown_keywords_are_reported() {
        assert!(unsupported(&schema()).is_empty());
        let s = json!({"type": "object", "properties": {"p": {"type": "string", "pattern": "^a"}}, "oneOf": []});
        assert_eq!(
            unsupported(&s),
            ["schema.oneOf", "schema.properties.p.pattern"]
        );
    }
}
