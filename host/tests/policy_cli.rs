//! `kvpilot policy …` as a user runs it: the real binary, its exit code, its stdout and stderr.

#[path = "hostile/built.rs"]
mod built;

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn kvpilot(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvpilot"))
        .args(args)
        .output()
        .expect("run kvpilot")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs and expects success; the parsed JSON of stdout.
fn json_of(args: &[&str]) -> Value {
    let output = kvpilot(args);
    assert!(
        output.status.success(),
        "{args:?} failed: {}",
        stderr(&output)
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: stdout is not JSON ({e}): {}", stdout(&output)))
}

/// Runs and expects a failure; its stderr.
fn failure_of(args: &[&str]) -> String {
    let output = kvpilot(args);
    assert!(
        !output.status.success(),
        "{args:?} should fail, printed {}",
        stdout(&output)
    );
    assert!(
        output.stdout.is_empty(),
        "a failure prints nothing on stdout: {}",
        stdout(&output)
    );
    stderr(&output)
}

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/policy-inputs")
        .join(name)
        .display()
        .to_string()
}

fn keys(value: &Value) -> BTreeSet<&str> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect()
}

fn is_sha256(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

const BUILTINS: [(&str, &str); 3] = [
    ("builtin:most-caught-up", "replica-selection"),
    ("builtin:stagger", "snapshot-schedule"),
    ("builtin:replicas-first", "rollout-order"),
];

#[test]
fn list_shows_every_builtin_with_its_hook_version_and_digest() {
    let output = kvpilot(&["policy", "list"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("a header").split_whitespace().collect();
    assert_eq!(header, ["NAME", "HOOKS", "VERSION", "SHA256"]);
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), BUILTINS.len(), "{text}");
    for ((name, hook), row) in BUILTINS.iter().zip(&rows) {
        assert_eq!(&row[..3], [*name, *hook, "0.1.0"], "{text}");
        assert!(is_sha256(row[3]), "{text}");
    }
}

#[test]
fn check_json_has_exactly_the_documented_keys() {
    for (name, hook) in BUILTINS {
        let report = json_of(&["policy", "check", name, "--json"]);
        assert_eq!(
            keys(&report),
            BTreeSet::from([
                "name",
                "version",
                "description",
                "hooks",
                "imports",
                "sha256",
                "empty_config"
            ]),
            "{report}"
        );
        assert_eq!(report["name"], name.trim_start_matches("builtin:"));
        assert_eq!(report["hooks"], serde_json::json!([hook]));
        assert!(report["imports"].as_array().is_some_and(|a| !a.is_empty()));
        assert!(report["sha256"].as_str().is_some_and(is_sha256), "{report}");
    }
}

#[test]
fn check_refuses_a_file_that_is_not_a_plugin_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.wasm");
    std::fs::write(&bad, "not wasm at all").expect("write");
    let bad = bad.display().to_string();
    let message = failure_of(&["policy", "check", &bad]);
    assert!(
        message.contains(&bad) && message.contains("not a WebAssembly file"),
        "{message}"
    );
    let missing = failure_of(&["policy", "check", "/nonexistent/plugin.wasm"]);
    assert!(
        missing.contains("/nonexistent/plugin.wasm") && missing.contains("cannot read"),
        "{missing}"
    );
    let config = failure_of(&[
        "policy",
        "check",
        "builtin:stagger",
        "--config",
        r#"{"nope": 1}"#,
    ]);
    assert!(
        config.contains("builtin:stagger") && config.contains("config rejected"),
        "{config}"
    );
}

#[test]
fn run_prints_the_decision_as_json() {
    let input = example("replica-selection.json");
    let args = [
        "policy",
        "run",
        "replica-selection",
        "builtin:most-caught-up",
        "--input",
        &input,
    ];
    let report = json_of(&args);
    assert_eq!(
        keys(&report),
        BTreeSet::from(["hook", "plugin", "sha256", "answer", "latency_us"])
    );
    assert_eq!(report["hook"], "replica-selection");
    assert_eq!(report["plugin"], "builtin:most-caught-up");
    // cache-2 has the highest offset.
    assert_eq!(report["answer"], serde_json::json!({"promote": "cache-2"}));
    // --config replaces the input's config: the preferred zone wins.
    let mut with_config = args.to_vec();
    with_config.extend(["--config", r#"{"preferZone": "zone-b"}"#]);
    let report = json_of(&with_config);
    assert_eq!(report["answer"], serde_json::json!({"promote": "cache-1"}));

    let rollout = json_of(&[
        "policy",
        "run",
        "rollout-order",
        "builtin:replicas-first",
        "--input",
        &example("rollout-order.json"),
    ]);
    assert_eq!(rollout["answer"], serde_json::json!({"restart": "cache-1"}));
}

#[test]
fn run_refuses_an_input_with_a_misspelt_nested_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = std::fs::read_to_string(example("replica-selection.json")).expect("read");
    let typo = text.replacen("\"lag-bytes\": 0", "\"lag_bytes\": 0", 1);
    assert_ne!(typo, text);
    let file = dir.path().join("typo.json");
    std::fs::write(&file, typo).expect("write");
    let file = file.display().to_string();
    let message = failure_of(&[
        "policy",
        "run",
        "replica-selection",
        "builtin:most-caught-up",
        "--input",
        &file,
    ]);
    assert!(
        message.contains(&file)
            && message.contains("unknown field `primary.lag_bytes` (did you mean `lag-bytes`?)"),
        "{message}"
    );
}

#[test]
fn run_fails_clearly_when_the_plugin_fails() {
    let input = example("replica-selection.json");
    let panic: PathBuf = built::wasm_path("panic");
    let panic = panic.display().to_string();
    let message = failure_of(&[
        "policy",
        "run",
        "replica-selection",
        &panic,
        "--input",
        &input,
        "--config",
        r#"{"mode":"hostile"}"#,
    ]);
    assert!(
        message.contains(&format!("plugin {panic}: replica-selection: trapped:"))
            && message.contains("hostile plugin panicked on purpose with 2 candidates"),
        "{message}"
    );
    // A config the plugin rejects, and a hook the plugin does not export.
    let rejected = failure_of(&[
        "policy",
        "run",
        "replica-selection",
        "builtin:most-caught-up",
        "--input",
        &input,
        "--config",
        r#"{"maxLagBytes": "lots"}"#,
    ]);
    assert!(
        rejected.contains("plugin builtin:most-caught-up: config rejected: maxLagBytes"),
        "{rejected}"
    );
    let missing = failure_of(&[
        "policy",
        "run",
        "rollout-order",
        "builtin:most-caught-up",
        "--input",
        &example("rollout-order.json"),
    ]);
    assert!(
        missing.contains("does not export the rollout-order hook"),
        "{missing}"
    );
}

#[test]
fn bench_json_has_a_row_per_plugin_and_size() {
    let rows = json_of(&[
        "policy",
        "bench",
        "--json",
        "--iterations",
        "20",
        "--warmup",
        "2",
    ]);
    let rows = rows.as_array().expect("an array");
    let mut seen = BTreeSet::new();
    for row in rows {
        let fields = keys(row);
        for key in [
            "hook",
            "plugin",
            "members",
            "wasm_p50_us",
            "wasm_p99_us",
            "native_p50_us",
            "wasm_p50_bare_us",
            "cached_load_us",
            "hit_p50_us",
            "hit_p99_us",
        ] {
            assert!(fields.contains(key), "{key} missing in {row}");
        }
        for key in [
            "wasm_p50_us",
            "wasm_p99_us",
            "native_p50_us",
            "wasm_p50_bare_us",
            "cached_load_us",
            "hit_p50_us",
        ] {
            assert!(row[key].as_f64().is_some_and(|v| v > 0.0), "{key} in {row}");
        }
        assert!(row["wasm_p99_us"].as_f64() >= row["wasm_p50_us"].as_f64());
        assert!(row["hit_p99_us"].as_f64() >= row["hit_p50_us"].as_f64());
        let plugin = row["plugin"].as_str().expect("plugin").to_string();
        let hook = row["hook"].as_str().expect("hook").to_string();
        assert!(
            BUILTINS.contains(&(plugin.as_str(), hook.as_str())),
            "{row}"
        );
        seen.insert((plugin, row["members"].as_u64().expect("members")));
    }
    let expected: BTreeSet<(String, u64)> = BUILTINS
        .iter()
        .flat_map(|(name, _)| [3, 100, 1000].map(|n| (name.to_string(), n)))
        .collect();
    assert_eq!(seen, expected);
    assert_eq!(rows.len(), expected.len());
}
