//! Request files for `kvpilot policy run`: a hook's WIT request record as JSON (see
//! `examples/policy-inputs/`). serde ignores fields a record does not have, so a typo such as
//! `lag_bytes` for `lag-bytes` would silently default; every field name is checked, at every
//! level, and the first unknown one is named by its path (`kvpilot_sdk::schema`, which the
//! scenario files of `kvpilot policy test` share).

use super::Hook;
use kvpilot_sdk::schema::first_unknown;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::path::Path;

/// Why a request file was refused. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },

    #[error("{file}: is {bytes} bytes or more; the limit is {limit} bytes")]
    TooLarge {
        file: String,
        bytes: u64,
        limit: u64,
    },

    #[error("{file}: not a {hook} request: {message}")]
    Malformed {
        file: String,
        hook: Hook,
        message: String,
    },

    #[error(
        "{file}: not a {hook} request: unknown field `{path}`{hint} (expected one of: {expected})"
    )]
    UnknownField {
        file: String,
        hook: Hook,
        /// Where the field is, e.g. `candidates[1].lag_bytes`.
        path: String,
        /// ` (did you mean `lag-bytes`?)` when only the spelling is off, else empty.
        hint: String,
        /// The fields the record at that place has.
        expected: String,
    },
}

/// The largest request file read: requests are a few KiB; one for a thousand members is
/// well under a MiB.
pub const MAX_INPUT_BYTES: u64 = 8 << 20;

/// Reads and parses the request file at `path` for `hook`; a file over [`MAX_INPUT_BYTES`]
/// is refused before it is read.
pub fn read<T: DeserializeOwned + Serialize>(path: &Path, hook: Hook) -> Result<T, InputError> {
    let file = path.display().to_string();
    let text = read_bounded(path, MAX_INPUT_BYTES)?;
    parse(&text, &file, hook)
}

/// The text of the file at `path`, refused if it has more than `limit` bytes: its size is
/// checked before it is read, and no more than `limit + 1` bytes are ever read (a file that
/// grows, or `/dev/zero`, cannot make it read more). For every user file the CLI reads.
pub fn read_bounded(path: &Path, limit: u64) -> Result<String, InputError> {
    use std::io::Read;
    let file = path.display().to_string();
    let read_error = |source| InputError::Read {
        file: file.clone(),
        source,
    };
    let handle = std::fs::File::open(path).map_err(read_error)?;
    let size = handle.metadata().map_err(read_error)?.len();
    let too_large = |bytes| InputError::TooLarge {
        file: file.clone(),
        bytes,
        limit,
    };
    if size > limit {
        return Err(too_large(size));
    }
    let mut text = String::new();
    handle
        .take(limit.saturating_add(1))
        .read_to_string(&mut text)
        .map_err(read_error)?;
    let read = u64::try_from(text.len()).unwrap_or(u64::MAX);
    if read > limit {
        return Err(too_large(read));
    }
    Ok(text)
}

/// Parses `text` (the contents of `file`) as a `hook` request, refusing unknown fields.
pub fn parse<T: DeserializeOwned + Serialize>(
    text: &str,
    file: &str,
    hook: Hook,
) -> Result<T, InputError> {
    let malformed = |e: serde_json::Error| InputError::Malformed {
        file: file.to_string(),
        hook,
        message: e.to_string(),
    };
    // Parsed straight from the text first, so type errors keep serde's line and column.
    let request: T = serde_json::from_str(text).map_err(malformed)?;
    let given: Value = serde_json::from_str(text).map_err(malformed)?;
    // The request as parsed, written back: every field of every record is present (the sdk
    // records serialize all their fields), so it is the schema the given text must fit.
    let known = serde_json::to_value(&request).map_err(malformed)?;
    if let Some(unknown) = first_unknown(&given, &known, "") {
        let hint = unknown.did_you_mean();
        return Err(InputError::UnknownField {
            file: file.to_string(),
            hook,
            path: unknown.path,
            hint,
            expected: unknown.expected.join(", "),
        });
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    /// A file over the limit is refused by its size, before it is read (here 1 GiB, sparse).
    #[test]
    fn a_request_file_over_the_limit_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.json");
        std::fs::File::create(&path)
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        let err = read::<kvpilot_sdk::SelectionRequest>(&path, Hook::ReplicaSelection).unwrap_err();
        assert!(
            matches!(err, InputError::TooLarge { bytes, limit, .. } if bytes == 1 << 30 && limit == MAX_INPUT_BYTES),
            "{err}"
        );
        assert!(
            err.to_string().contains("the limit is 8388608 bytes"),
            "{err}"
        );
        // At the limit: read (and then refused as JSON, which it is not).
        std::fs::File::create(&path)
            .unwrap()
            .set_len(MAX_INPUT_BYTES)
            .unwrap();
        let err = read::<kvpilot_sdk::SelectionRequest>(&path, Hook::ReplicaSelection).unwrap_err();
        assert!(matches!(err, InputError::Malformed { .. }), "{err}");
    }

    use super::*;
    use kvpilot_sdk::{RolloutRequest, SelectionRequest};

    fn selection(text: &str) -> Result<SelectionRequest, InputError> {
        parse(text, "in.json", Hook::ReplicaSelection)
    }

    const GOOD: &str = r#"{
        "reason": "primary-lost",
        "cluster": {"name": "cache", "engine": "redis"},
        "primary": null,
        "candidates": [
            {"name": "cache-1", "lag-bytes": 5, "zone": "a"},
            {"name": "cache-2", "zone": null}
        ],
        "config": {"maxLagBytes": 10, "anything": {"nested": true}}
    }"#;

    #[test]
    fn a_request_with_only_known_fields_parses() {
        let request = selection(GOOD).expect("parses");
        assert_eq!(request.candidates[0].lag_bytes, 5);
        assert_eq!(request.candidates[1].zone, None);
        // The config is the plugin's: its fields are not checked here.
        assert!(request.config.contains("anything"), "{}", request.config);
    }

    #[test]
    fn a_typo_inside_a_member_is_named_by_its_path() {
        let text = GOOD.replace(
            r#""name": "cache-2","#,
            r#""name": "cache-2", "lag_bytes": 7,"#,
        );
        let error = selection(&text).expect_err("refused");
        let InputError::UnknownField {
            file,
            path,
            hint,
            expected,
            ..
        } = &error
        else {
            panic!("expected an unknown field, got {error}");
        };
        assert_eq!(
            (file.as_str(), path.as_str()),
            ("in.json", "candidates[1].lag_bytes")
        );
        assert_eq!(hint, " (did you mean `lag-bytes`?)");
        assert!(expected.contains("on-desired-revision"), "{expected}");
        assert!(
            error.to_string().starts_with(
                "in.json: not a replica-selection request: unknown field `candidates[1].lag_bytes` (did you mean `lag-bytes`?)"
            ),
            "{error}"
        );
    }

    #[test]
    fn unknown_fields_are_found_at_every_level() {
        let cases = [
            (
                GOOD.replace(r#""primary": null,"#, r#""primry": null,"#),
                "primry",
            ),
            (
                GOOD.replace(r#""engine": "redis""#, r#""engineVersion": "8""#),
                "cluster.engineVersion",
            ),
            (
                GOOD.replace(
                    r#""primary": null"#,
                    r#""primary": {"name": "cache-0", "keyz": 1}"#,
                ),
                "primary.keyz",
            ),
        ];
        for (text, path) in cases {
            match selection(&text) {
                Err(InputError::UnknownField { path: found, .. }) => assert_eq!(found, path),
                other => panic!("{path}: expected an unknown field, got {other:?}"),
            }
        }
        let camel = GOOD.replace(r#""engine": "redis""#, r#""engineVersion": "8""#);
        let Err(error) = selection(&camel) else {
            panic!("refused")
        };
        assert!(
            error
                .to_string()
                .contains("(did you mean `engine-version`?)"),
            "{error}"
        );
    }

    #[test]
    fn another_hook_s_request_names_the_first_foreign_field() {
        let error = parse::<RolloutRequest>(
            r#"{"cluster": {"name": "c"}, "members": [], "candidates": []}"#,
            "in.json",
            Hook::RolloutOrder,
        )
        .expect_err("refused");
        assert!(
            matches!(&error, InputError::UnknownField { path, .. } if path == "candidates"),
            "{error}"
        );
    }

    #[test]
    fn malformed_files_keep_serde_s_position() {
        let error = selection(r#"{"reason": "primary-lost", "cluster": 3}"#).expect_err("refused");
        let message = error.to_string();
        assert!(
            message.starts_with("in.json: not a replica-selection request: invalid type")
                && message.contains("column"),
            "{message}"
        );
        let missing = selection(r#"{"reason": "primary-lost"}"#).expect_err("refused");
        assert!(
            missing.to_string().contains("missing field `cluster`"),
            "{missing}"
        );
    }

    #[test]
    fn a_missing_file_is_a_read_error_naming_it() {
        let error =
            read::<SelectionRequest>(Path::new("/nonexistent/in.json"), Hook::ReplicaSelection)
                .expect_err("refused");
        assert!(
            error
                .to_string()
                .starts_with("/nonexistent/in.json: cannot read:"),
            "{error}"
        );
    }
}
