//! `kvpilot policy test` as a user runs it: the builtins pass the scenarios they ship
//! (`plugins/components/<builtin>/scenarios/`, also run natively by the sdk's
//! `builtin_scenarios` test), and failures give one line naming the file and the field, a
//! summary and a failure exit status.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn kvpilot(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvpilot"))
        .args(args)
        .output()
        .expect("run kvpilot")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn scenarios_of(builtin: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/components")
        .join(builtin)
        .join("scenarios")
}

fn json_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .expect("read scenarios")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "json"))
        })
        .count()
}

#[test]
fn every_builtin_passes_the_scenarios_it_ships() {
    for builtin in ["most-caught-up", "stagger", "replicas-first"] {
        let dir = scenarios_of(builtin);
        let count = json_files(&dir);
        assert!(count >= 3, "{builtin} ships scenarios");
        let plugin = format!("builtin:{builtin}");
        let output = kvpilot(&["policy", "test", &plugin, &dir.display().to_string()]);
        let stdout = text(&output.stdout);
        assert!(
            output.status.success(),
            "{builtin}: {stdout}{}",
            text(&output.stderr)
        );
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), count + 1, "one line per scenario: {stdout}");
        assert!(
            lines[..count].iter().all(|l| l.starts_with("ok    ")),
            "{stdout}"
        );
        assert!(
            lines[count].starts_with(&format!(
                "{count} scenarios: {count} passed, 0 failed (builtin:{builtin} "
            )),
            "{stdout}"
        );
    }
}

/// Another plugin's scenarios fail: the check can fail, each failure is one line naming the
/// file and the `expect` field, and the exit status says so.
#[test]
fn failures_name_the_file_and_field_and_fail_the_run() {
    let dir = scenarios_of("most-caught-up");
    let output = kvpilot(&[
        "policy",
        "test",
        "builtin:replicas-first",
        &dir.display().to_string(),
    ]);
    let stdout = text(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    let prefer = format!(
        "FAIL  {}: expect.answer: expected the answer {{\"promote\":\"cache-1\"}}, got a config rejection: plugin builtin:replicas-first: config rejected: preferZone: unknown field",
        dir.join("prefer-zone.json").display()
    );
    assert!(stdout.lines().any(|l| l.starts_with(&prefer)), "{stdout}");
    let lacks = format!(
        "FAIL  {}: expect.answer: expected the answer {{\"promote\":\"cache-2\"}}, got the error: plugin builtin:replicas-first does not export the replica-selection hook",
        dir.join("planned-handover-highest-offset.json").display()
    );
    assert!(stdout.lines().any(|l| l == lacks), "{stdout}");
    // The scenario of a hook it does answer, expecting another plugin's refusal, fails too.
    assert!(stdout.contains("expect.error: expected an error containing `does not export the rollout-order hook`, got the answer"), "{stdout}");
    let count = json_files(&dir);
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!("{count} scenarios: 0 passed, {count} failed")),
        "{stdout}"
    );
}

/// A malformed scenario is a failure naming the file and the field; the others still run.
#[test]
fn a_malformed_scenario_names_its_file_and_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = std::fs::read_to_string(scenarios_of("most-caught-up").join("prefer-zone.json"))
        .expect("read");
    std::fs::write(dir.path().join("a-good.json"), &good).expect("write");
    let typo = good.replacen("\"link-up\"", "\"link_up\"", 1);
    std::fs::write(dir.path().join("b-typo.json"), typo).expect("write");
    let no_expect = r#"{"hook": "replica-selection", "request": {"reason": "primary-lost",
        "cluster": {"name": "c"}, "candidates": []}}"#;
    std::fs::write(dir.path().join("c-no-expect.json"), no_expect).expect("write");
    std::fs::write(dir.path().join("notes.txt"), "not a scenario").expect("write");
    let output = kvpilot(&[
        "policy",
        "test",
        "builtin:most-caught-up",
        &dir.path().display().to_string(),
    ]);
    let stdout = text(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(lines[0].starts_with("ok    "), "{stdout}");
    let file = |name: &str| dir.path().join(name).display().to_string();
    assert_eq!(
        lines[1]
            .split(" (expected one of")
            .next()
            .unwrap_or_default(),
        format!(
            "FAIL  {}: request.candidates[0].link_up: unknown field (did you mean `link-up`?)",
            file("b-typo.json")
        ),
        "{stdout}"
    );
    assert!(
        lines[2].starts_with(&format!(
            "FAIL  {}: expect: missing",
            file("c-no-expect.json")
        )),
        "{stdout}"
    );
    assert!(
        lines[3].starts_with("3 scenarios: 1 passed, 2 failed"),
        "{stdout}"
    );
}

#[test]
fn a_folder_without_scenarios_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shown = dir.path().display().to_string();
    let output = kvpilot(&["policy", "test", "builtin:stagger", &shown]);
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    assert!(
        text(&output.stderr).contains(&format!("{shown}: no scenario files (*.json)")),
        "{}",
        text(&output.stderr)
    );
}
