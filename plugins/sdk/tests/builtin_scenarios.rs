//! The builtins' scenario files (`plugins/components/<builtin>/scenarios/`) run natively
//! through the sdk, as a plugin author's `cargo test` runs theirs. The host's
//! `policy_scenarios` test runs the same files through the builtins' wasm components in the
//! sandbox (`kvpilot policy test`).

use kvpilot_sdk::Policy;
use kvpilot_sdk::defaults::{most_caught_up, replicas_first, stagger};
use kvpilot_sdk::scenario::{self, Scenario};
use std::path::{Path, PathBuf};

fn scenarios(builtin: &str) -> Vec<(PathBuf, Scenario)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../components")
        .join(builtin)
        .join("scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{builtin} ships scenarios: {files:?}");
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("read");
            let scenario = scenario::parse(&text, &path.display().to_string())
                .unwrap_or_else(|e| panic!("{e}"));
            (path, scenario)
        })
        .collect()
}

fn check<P: Policy>(builtin: &str) {
    let mut failures = Vec::new();
    for (path, scenario) in scenarios(builtin) {
        if let Err(mismatch) = scenario.check(&scenario::run::<P>(&scenario.request)) {
            failures.push(format!("{}: {mismatch}", path.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn most_caught_up_passes_its_scenarios() {
    check::<most_caught_up::MostCaughtUp>("most-caught-up");
}

#[test]
fn stagger_passes_its_scenarios() {
    check::<stagger::Stagger>("stagger");
}

#[test]
fn replicas_first_passes_its_scenarios() {
    check::<replicas_first::ReplicasFirst>("replicas-first");
}

/// A scenario of another plugin fails here: the check can fail.
#[test]
fn a_builtin_fails_another_s_scenarios() {
    let (path, scenario) = scenarios("most-caught-up")
        .into_iter()
        .find(|(p, _)| p.ends_with("prefer-zone.json"))
        .expect("the prefer-zone scenario");
    let outcome = scenario::run::<replicas_first::ReplicasFirst>(&scenario.request);
    let mismatch = scenario.check(&outcome).expect_err("fails");
    assert!(
        mismatch.starts_with(
            "expect.answer: expected the answer {\"promote\":\"cache-1\"}, got a config rejection"
        ),
        "{}: {mismatch}",
        path.display()
    );
}
