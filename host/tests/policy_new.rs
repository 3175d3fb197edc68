//! `kvpilot policy new` end to end, as a plugin author meets it: the crate it writes builds
//! for wasm32-wasip2 at once (offline, against this repository's `plugins/sdk` by path), its
//! scenarios pass in the sandbox (`kvpilot policy test`) and natively (`cargo test` in the
//! crate), and a scenario made wrong fails both.
//!
//! Cost: the nested builds share `target/wasm-scaffold` (like the hostile plugins'
//! `target/wasm-hostile`), so only the first run compiles wit-bindgen and serde (about a
//! minute on two cores); later runs rebuild the small plugin crate alone.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repo root")
}

fn kvpilot(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvpilot"))
        .args(args)
        .output()
        .expect("run kvpilot")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `cargo <args>` in `dir`, offline, into the shared target dir, without the outer build's
/// settings.
fn cargo(dir: &Path, args: &[&str]) -> Output {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(args)
        .args(["--offline", "--target-dir"])
        .arg(repo().join("target/wasm-scaffold"))
        .current_dir(dir);
    for name in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_MANIFEST_DIR",
    ] {
        command.env_remove(name);
    }
    command.output().expect("run cargo")
}

#[test]
fn a_new_plugin_builds_and_passes_its_scenarios_natively_and_in_the_sandbox() {
    let parent = tempfile::tempdir().expect("tempdir");
    let dir = parent.path().join("zone-pick");
    let sdk = repo().join("plugins/sdk");
    let output = kvpilot(&[
        "policy",
        "new",
        "replica-selection",
        "rollout-order",
        "zone-pick",
        "--dir",
        &dir.display().to_string(),
        "--sdk",
        &sdk.display().to_string(),
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let said = text(&output.stdout);
    assert!(
        said.starts_with(&format!("wrote {} (", dir.display())),
        "{said}"
    );
    for file in [
        "Cargo.toml",
        "wit/world.wit",
        "wit/deps/kvpilot-policy/policy.wit",
        "src/lib.rs",
        "src/policy.rs",
        "tests/scenarios.rs",
        "samples/replica-selection.json",
        "samples/rollout-order.json",
        "scenarios/replica-selection-most-caught-up.json",
        "scenarios/rollout-order-handover.json",
    ] {
        assert!(dir.join(file).is_file(), "{file} is written");
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("wit/deps/kvpilot-policy/policy.wit")).expect("read"),
        std::fs::read_to_string(repo().join("wit/0.1.0/policy.wit")).expect("read"),
        "the crate carries the contract this kvpilot speaks"
    );
    let toml = std::fs::read_to_string(dir.join("Cargo.toml")).expect("read");
    assert!(
        toml.contains(&format!("kvpilot-sdk = {{ path = \"{}\" }}", sdk.display())),
        "{toml}"
    );

    let build = cargo(&dir, &["build", "--release", "--target", "wasm32-wasip2"]);
    assert!(build.status.success(), "{}", text(&build.stderr));
    let wasm = repo().join("target/wasm-scaffold/wasm32-wasip2/release/zone_pick.wasm");
    let wasm = wasm.display().to_string();

    let check = kvpilot(&["policy", "check", &wasm, "--json"]);
    assert!(check.status.success(), "{}", text(&check.stderr));
    let report: serde_json::Value = serde_json::from_slice(&check.stdout).expect("json");
    assert_eq!(report["name"], "zone-pick");
    assert_eq!(
        report["hooks"],
        serde_json::json!(["replica-selection", "rollout-order"])
    );

    let sample = dir.join("samples/replica-selection.json");
    let run = kvpilot(&[
        "policy",
        "run",
        "replica-selection",
        &wasm,
        "--input",
        &sample.display().to_string(),
    ]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&run.stdout).expect("json");
    assert_eq!(answer["answer"], serde_json::json!({"promote": "cache-2"}));

    let scenarios = dir.join("scenarios");
    let scenarios = scenarios.display().to_string();
    let tested = kvpilot(&["policy", "test", &wasm, &scenarios]);
    let stdout = text(&tested.stdout);
    assert!(tested.status.success(), "{stdout}{}", text(&tested.stderr));
    assert!(
        stdout
            .lines()
            .last()
            .unwrap_or_default()
            .starts_with("6 scenarios: 6 passed, 0 failed"),
        "{stdout}"
    );

    let native = cargo(&dir, &["test"]);
    assert!(
        native.status.success(),
        "{}{}",
        text(&native.stdout),
        text(&native.stderr)
    );
    assert!(
        text(&native.stdout).contains("test scenarios ... ok"),
        "{}",
        text(&native.stdout)
    );

    // A wrong expectation fails both, naming the file and the field.
    let file = dir.join("scenarios/rollout-order-handover.json");
    let wrong = std::fs::read_to_string(&file)
        .expect("read")
        .replace("\"to\": \"cache-1\"", "\"to\": \"cache-2\"");
    std::fs::write(&file, wrong).expect("write");
    let tested = kvpilot(&["policy", "test", &wasm, &scenarios]);
    let stdout = text(&tested.stdout);
    assert!(!tested.status.success(), "{stdout}");
    let mismatch = format!(
        "{}: expect.answer: expected the answer {{\"handover\":{{\"from\":\"cache-0\",\"to\":\"cache-2\"}}}}, got the answer {{\"handover\":{{\"from\":\"cache-0\",\"to\":\"cache-1\"}}}}",
        file.display()
    );
    assert!(
        stdout.lines().any(|l| l == format!("FAIL  {mismatch}")),
        "{stdout}"
    );
    let native = cargo(&dir, &["test"]);
    let out = text(&native.stdout);
    assert!(!native.status.success(), "{out}");
    assert!(out.contains(&format!("FAIL  {mismatch}")), "{out}");
}

#[test]
fn new_refuses_bad_arguments_and_a_folder_in_use() {
    let parent = tempfile::tempdir().expect("tempdir");
    let dir = parent.path().display().to_string();
    std::fs::write(parent.path().join("keep.txt"), "mine").expect("write");
    let cases: [(&[&str], &str); 3] = [
        (
            &["replica-selecton", "mine"],
            "hooks: `replica-selecton` is not a hook",
        ),
        (
            &["replica-selection", "My_Plugin"],
            "name: `My_Plugin` is not a plugin name",
        ),
        (
            &["replica-selection", "mine", "--dir", &dir],
            "exists and is not empty; nothing was written",
        ),
    ];
    for (args, message) in cases {
        let output = kvpilot(&[&["policy", "new"], args].concat());
        assert!(!output.status.success(), "{args:?}");
        assert!(
            text(&output.stderr).contains(message),
            "{args:?}: {}",
            text(&output.stderr)
        );
    }
    let left: Vec<_> = std::fs::read_dir(parent.path()).expect("read").collect();
    assert_eq!(left.len(), 1, "nothing was written beside keep.txt");
}
