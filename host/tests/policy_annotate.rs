//! Plugin metadata (issue 14 item 7): `kvpilot policy annotate` embeds the config JSON Schema
//! and the hooks in a custom section; the component still loads and answers; `policy check`
//! shows them with the description and `validate-config({})`, and checks `--config` against
//! the schema, naming the field.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn kvpilot(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvpilot"))
        .args(args)
        .output()
        .expect("run kvpilot")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn built() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/wasm-plugins/wasm32-wasip2/release/most_caught_up.wasm")
}

const SCHEMA: &str = r#"{
  "type": "object",
  "description": "most-caught-up settings",
  "properties": {
    "maxLagBytes": {"type": "integer", "minimum": 0},
    "preferZone": {"type": "string", "minLength": 1}
  },
  "additionalProperties": false
}"#;

#[test]
fn annotate_then_check_validates_the_config_against_the_schema() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wasm = dir.path().join("picker.wasm");
    std::fs::copy(built(), &wasm).expect("copy");
    let schema = dir.path().join("schema.json");
    std::fs::write(&schema, SCHEMA).expect("write");
    let annotated = dir.path().join("picker.annotated.wasm");
    let (wasm_s, schema_s, out_s) = (
        wasm.to_str().expect("utf-8"),
        schema.to_str().expect("utf-8"),
        annotated.to_str().expect("utf-8"),
    );

    // Before: no schema; validate-config({}) is shown.
    let out = kvpilot(&["policy", "check", wasm_s]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("schema:  none"), "{}", text(&out));
    assert!(text(&out).contains("{}:      accepted"), "{}", text(&out));

    let out = kvpilot(&[
        "policy", "annotate", wasm_s, "--schema", schema_s, "-o", out_s,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("hooks: replica-selection"),
        "{}",
        text(&out)
    );

    // After: the schema is shown, a good config passes both checks, a bad one is refused by
    // the schema with the field's path.
    let out = kvpilot(&["policy", "check", out_s, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        report["config_schema"]["properties"]["preferZone"]["minLength"],
        1
    );
    assert!(report["empty_config"].is_null(), "{report}");
    assert!(
        report["description"]
            .as_str()
            .is_some_and(|d| !d.is_empty())
    );
    let out = kvpilot(&[
        "policy",
        "check",
        out_s,
        "--config",
        r#"{"preferZone":"b"}"#,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("config:  accepted (schema and validate-config)"));
    let out = kvpilot(&[
        "policy",
        "check",
        out_s,
        "--config",
        r#"{"maxLagBytes":-1}"#,
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("config.maxLagBytes: must be at least 0"),
        "{}",
        text(&out)
    );
    let out = kvpilot(&["policy", "check", out_s, "--config", r#"{"zone":"b"}"#]);
    assert!(
        !out.status.success()
            && text(&out).contains("config.zone: unknown field (known: maxLagBytes, preferZone)"),
        "{}",
        text(&out)
    );

    // The annotated component still answers.
    let input = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/policy-inputs/replica-selection.json");
    let out = kvpilot(&[
        "policy",
        "run",
        "replica-selection",
        out_s,
        "--input",
        input.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("\"promote\""), "{}", text(&out));

    // Annotating twice, or with a keyword check cannot check, is refused.
    let out = kvpilot(&["policy", "annotate", out_s, "--schema", schema_s]);
    assert!(!out.status.success() && text(&out).contains("already has a kvpilot-metadata"));
    std::fs::write(&schema, r#"{"type":"object","oneOf":[]}"#).expect("write");
    let out = kvpilot(&["policy", "annotate", wasm_s, "--schema", schema_s]);
    assert!(
        !out.status.success() && text(&out).contains("schema.oneOf"),
        "{}",
        text(&out)
    );
}
