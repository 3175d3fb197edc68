//! The examples and docs quote every sha256 digest. `sha256: 0000…` (or any digest of digits
//! only, or digits and one `e`) is an integer or a float to a YAML 1.1 parser, as kubectl
//! uses, and the API server refuses a number where the CRD says string. Quoting is the rule;
//! this test finds every `sha256:` value in the examples and the Markdown docs, and the
//! `sed` lines that write one, and checks that each is quoted.

use kvpilot::api::PolicyPlugin;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every file under `dir` whose name ends with one of `extensions`, skipping build output.
fn files(dir: &Path, extensions: &[&str], found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                files(&path, extensions, found);
            }
        } else if extensions.iter().any(|e| name.ends_with(e)) {
            found.push(path);
        }
    }
}

/// The problems of one text: each `sha256:` YAML value that is not quoted, and each `sed`
/// substitution that writes an unquoted `sha256:` value.
fn unquoted_digests(text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if let Some(at) = line.find("sed ")
            && line[at..].contains("sha256:")
        {
            // `sed "s/PATTERN/REPLACEMENT/"`: the replacement is what lands in the YAML.
            let replacement = line[at..].split('/').nth(2).unwrap_or_default();
            let value = replacement
                .split_once("sha256:")
                .map(|(_, v)| v.trim())
                .unwrap_or_default();
            if !(value.starts_with("\\\"") || value.starts_with('\'')) {
                problems.push(format!(
                    "line {}: sed writes sha256 unquoted: {line}",
                    n + 1
                ));
            }
            continue;
        }
        // A YAML `sha256:` key (in a manifest, or a comment showing one), with a value.
        let trimmed = line.trim_start().trim_start_matches('#').trim_start();
        let Some(value) = trimmed.strip_prefix("sha256:") else {
            continue;
        };
        let value = value.trim();
        if value.is_empty() || value.starts_with('"') || value.starts_with('\'') {
            continue;
        }
        problems.push(format!("line {}: unquoted sha256 value: {line}", n + 1));
    }
    problems
}

#[test]
fn the_check_catches_an_unquoted_digest() {
    let zeros = "0".repeat(64);
    assert_eq!(
        unquoted_digests(&format!("spec:\n  source:\n    sha256: {zeros}\n")).len(),
        1
    );
    assert!(unquoted_digests(&format!("    sha256: \"{zeros}\"\n")).is_empty());
    assert!(unquoted_digests(&format!("    sha256: '{zeros}'\n")).is_empty());
    assert_eq!(
        unquoted_digests(r#"sed "s/^    sha256: .*/    sha256: $digest/" x.yaml"#).len(),
        1
    );
    assert!(
        unquoted_digests(r#"sed "s/^    sha256: .*/    sha256: \"$digest\"/" x.yaml"#).is_empty()
    );
    // Why this is a line check rather than a parse: serde_norway (YAML 1.2-minded) reads the
    // unquoted placeholder as the string it looks like, so parsing the examples here never
    // showed the problem; kubectl's YAML 1.1 parser reads it as the integer 0.
    let value: serde_json::Value =
        serde_norway::from_str(&format!("sha256: {zeros}")).expect("parses");
    assert!(value["sha256"].is_string(), "{value}");
}

#[test]
fn every_example_and_doc_quotes_its_digests() {
    let root = repo();
    let mut found = Vec::new();
    files(
        &root.join("examples"),
        &[".yaml", ".yml", ".md"],
        &mut found,
    );
    files(&root.join("docs"), &[".md"], &mut found);
    files(&root.join("deploy"), &[".yaml", ".yml", ".md"], &mut found);
    found.push(root.join("README.md"));
    assert!(
        found
            .iter()
            .any(|p| p.ends_with("policyplugin-configmap.yaml")),
        "the ConfigMap example is checked: {found:?}"
    );
    let mut problems = Vec::new();
    for path in &found {
        let text = std::fs::read_to_string(path).expect("read");
        for p in unquoted_digests(&text) {
            problems.push(format!("{}: {p}", path.display()));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The ConfigMap example parses as a PolicyPlugin whose digest is the 64-character string.
#[test]
fn the_configmap_example_carries_its_digest_as_a_string() {
    let text =
        std::fs::read_to_string(repo().join("examples/policyplugin-configmap.yaml")).expect("read");
    let pp: PolicyPlugin = serde_norway::from_str(&text).expect("a PolicyPlugin");
    assert_eq!(
        pp.spec.source.sha256.as_deref(),
        Some("0".repeat(64).as_str())
    );
}
