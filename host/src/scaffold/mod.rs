//! `kvpilot policy new`: the files of a new plugin crate. Pure: it returns paths and texts,
//! the CLI writes them.
//!
//! The crate builds at once for `wasm32-wasip2` (the README's "Write a policy in 15 minutes"):
//! the decisions as a [`kvpilot_sdk::Policy`] in `src/policy.rs`, the component glue in
//! `src/lib.rs` (`export_policy!`), the contract in `wit/` (copied from the one this binary
//! was built with), a sample request per hook in `samples/` (for `kvpilot policy run`), and
//! scenarios in `scenarios/` that `cargo test` runs natively and `kvpilot policy test` runs
//! in the sandbox.

mod hooks;

use kvpilot_sdk::Hook;
use std::path::{Path, PathBuf};

/// The contract this binary speaks, written into every new plugin as
/// `wit/deps/kvpilot-policy/policy.wit`.
pub const POLICY_WIT: &str = include_str!("../../../wit/0.1.0/policy.wit");
/// Its version (the `@…` of every interface name the plugin's world uses).
pub const CONTRACT_VERSION: &str = "0.1.0";
/// The wit-bindgen the new crate uses: the version the builtins are built with.
pub const WIT_BINDGEN: &str = "0.63";
/// The sdk version a crate depends on when no source tree of it is at hand: the one this
/// binary was built with.
pub const SDK_VERSION: &str = kvpilot_sdk::VERSION;

/// Why a plugin crate cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScaffoldError {
    #[error(
        "name: `{0}` is not a plugin name: use lower-case words of letters and digits joined \
         by `-`, each starting with a letter (e.g. `zone-aware`), at most 64 characters"
    )]
    Name(String),
    #[error(
        "hooks: `{0}` is not a hook (one of replica-selection, snapshot-schedule, rollout-order)"
    )]
    UnknownHook(String),
    #[error("hooks: `{0}` is given twice")]
    DuplicateHook(String),
    #[error("hooks: give at least one hook before the name")]
    NoHook,
}

/// Where the new crate gets `kvpilot-sdk` from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdkSource {
    /// A checkout of kvpilot's `plugins/sdk`.
    Path(PathBuf),
    /// The registry, at this version.
    Version(String),
}

impl SdkSource {
    /// The dependency's TOML value, with `extra` fields (e.g. `features = ["std"]`).
    fn toml(&self, extra: &str) -> String {
        let extra = if extra.is_empty() {
            String::new()
        } else {
            format!(", {extra}")
        };
        match self {
            SdkSource::Path(path) => {
                format!(
                    "{{ path = {}{extra} }}",
                    toml_string(&path.display().to_string())
                )
            }
            SdkSource::Version(version) => {
                format!("{{ version = {}{extra} }}", toml_string(version))
            }
        }
    }
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// What the new plugin is: its name and hooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The plugin's (and crate's) name, kebab-case.
    pub name: String,
    /// The hooks, in the order given.
    pub hooks: Vec<Hook>,
}

impl Plan {
    /// `hooks… name`, as `kvpilot policy new` takes them.
    pub fn parse(args: &[String]) -> Result<Plan, ScaffoldError> {
        let Some((name, hooks)) = args.split_last() else {
            return Err(ScaffoldError::NoHook);
        };
        if hooks.is_empty() {
            // One word: a hook without a name reads better as "name missing".
            if Hook::parse(name).is_some() {
                return Err(ScaffoldError::Name(String::new()));
            }
            return Err(ScaffoldError::NoHook);
        }
        check_name(name)?;
        let mut parsed = Vec::new();
        for hook in hooks {
            let h = Hook::parse(hook).ok_or_else(|| ScaffoldError::UnknownHook(hook.clone()))?;
            if parsed.contains(&h) {
                return Err(ScaffoldError::DuplicateHook(hook.clone()));
            }
            parsed.push(h);
        }
        Ok(Plan {
            name: name.clone(),
            hooks: parsed,
        })
    }

    /// `zone-aware` → `zone_aware`.
    pub fn crate_ident(&self) -> String {
        self.name.replace('-', "_")
    }

    /// `zone-aware` → `ZoneAware`.
    pub fn type_name(&self) -> String {
        self.name
            .split('-')
            .map(|word| {
                let mut chars = word.chars();
                chars.next().map_or(String::new(), |first| {
                    first.to_ascii_uppercase().to_string() + chars.as_str()
                })
            })
            .collect()
    }

    /// The `.wasm` cargo builds: `target/wasm32-wasip2/release/zone_aware.wasm`.
    pub fn wasm_path(&self) -> PathBuf {
        Path::new("target/wasm32-wasip2/release").join(format!("{}.wasm", self.crate_ident()))
    }
}

/// A name that is a crate name, a WIT package name and a plugin name at once.
fn check_name(name: &str) -> Result<(), ScaffoldError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.split('-').all(|word| {
            word.starts_with(|c: char| c.is_ascii_lowercase())
                && word
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        });
    if ok {
        Ok(())
    } else {
        Err(ScaffoldError::Name(name.to_string()))
    }
}

/// `config.schema.json`: the JSON Schema of the example config (`avoid`), for `kvpilot policy
/// annotate`; it says what `validate_config` in `src/policy.rs` accepts.
const CONFIG_SCHEMA: &str = r#"{
  "type": "object",
  "description": "Members this plugin never chooses.",
  "properties": {
    "avoid": {
      "type": "array",
      "description": "Member names, e.g. [\"cache-2\"].",
      "items": {"type": "string", "minLength": 1}
    }
  },
  "additionalProperties": false
}
"#;

/// Every file of the new crate: its path inside the crate and its text.
pub fn files(plan: &Plan, sdk: &SdkSource) -> Vec<(PathBuf, String)> {
    let mut files = vec![
        (PathBuf::from("Cargo.toml"), cargo_toml(plan, sdk)),
        (PathBuf::from(".gitignore"), "/target\n".to_string()),
        (PathBuf::from("README.md"), readme(plan)),
        (PathBuf::from("wit/world.wit"), world_wit(plan)),
        (
            PathBuf::from("wit/deps/kvpilot-policy/policy.wit"),
            POLICY_WIT.to_string(),
        ),
        (PathBuf::from("src/lib.rs"), lib_rs(plan)),
        (PathBuf::from("src/policy.rs"), hooks::policy_rs(plan)),
        (PathBuf::from("tests/scenarios.rs"), scenarios_test(plan)),
        (
            PathBuf::from("config.schema.json"),
            CONFIG_SCHEMA.to_string(),
        ),
    ];
    for hook in &plan.hooks {
        files.push((
            PathBuf::from(format!("samples/{hook}.json")),
            hooks::sample(*hook),
        ));
        for (name, text) in hooks::scenarios(*hook) {
            files.push((PathBuf::from(format!("scenarios/{name}.json")), text));
        }
    }
    files
}

fn fill(template: &str, plan: &Plan) -> String {
    let hooks: Vec<&str> = plan.hooks.iter().map(|h| h.as_str()).collect();
    template
        .replace("{{name}}", &plan.name)
        .replace("{{crate}}", &plan.crate_ident())
        .replace("{{Type}}", &plan.type_name())
        .replace("{{hooks}}", &hooks.join(", "))
        .replace("{{first_hook}}", hooks.first().copied().unwrap_or_default())
        .replace("{{wasm}}", &plan.wasm_path().display().to_string())
        .replace("{{version}}", CONTRACT_VERSION)
}

fn cargo_toml(plan: &Plan, sdk: &SdkSource) -> String {
    fill(include_str!("templates/Cargo.toml.in"), plan)
        .replace("{{sdk}}", &sdk.toml(""))
        .replace("{{sdk_std}}", &sdk.toml("features = [\"std\"]"))
        .replace("{{wit_bindgen}}", WIT_BINDGEN)
}

fn readme(plan: &Plan) -> String {
    fill(include_str!("templates/README.md.in"), plan)
}

fn world_wit(plan: &Plan) -> String {
    let exports: String = plan
        .hooks
        .iter()
        .map(|h| format!("    export kvpilot:policy/{h}@{CONTRACT_VERSION};\n"))
        .collect();
    fill(include_str!("templates/world.wit.in"), plan).replace("{{exports}}\n", &exports)
}

fn lib_rs(plan: &Plan) -> String {
    let modules: Vec<&str> = plan
        .hooks
        .iter()
        .map(|h| match h {
            Hook::ReplicaSelection => "replica_selection",
            Hook::SnapshotSchedule => "snapshot_schedule",
            Hook::RolloutOrder => "rollout_order",
        })
        .collect();
    fill(include_str!("templates/lib.rs.in"), plan).replace("{{modules}}", &modules.join(", "))
}

fn scenarios_test(plan: &Plan) -> String {
    fill(include_str!("templates/scenarios.rs.in"), plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn hooks_then_a_name() {
        let plan = Plan::parse(&args(&[
            "rollout-order",
            "replica-selection",
            "zone-aware2",
        ]))
        .expect("parses");
        assert_eq!(plan.hooks, [Hook::RolloutOrder, Hook::ReplicaSelection]);
        assert_eq!(
            (plan.crate_ident(), plan.type_name()),
            ("zone_aware2".to_string(), "ZoneAware2".to_string())
        );
        assert_eq!(
            plan.wasm_path(),
            Path::new("target/wasm32-wasip2/release/zone_aware2.wasm")
        );
    }

    #[test]
    fn bad_arguments_name_what_is_wrong() {
        let cases: [(&[&str], ScaffoldError); 6] = [
            (&["replica-selection"], ScaffoldError::Name(String::new())),
            (&["mine"], ScaffoldError::NoHook),
            (
                &["replica-selection", "My_Plugin"],
                ScaffoldError::Name("My_Plugin".into()),
            ),
            (
                &["replica-selection", "2fast"],
                ScaffoldError::Name("2fast".into()),
            ),
            (
                &["replica-selecton", "mine"],
                ScaffoldError::UnknownHook("replica-selecton".into()),
            ),
            (
                &["rollout-order", "rollout-order", "mine"],
                ScaffoldError::DuplicateHook("rollout-order".into()),
            ),
        ];
        for (words, error) in cases {
            assert_eq!(Plan::parse(&args(words)), Err(error), "{words:?}");
        }
        assert!(Plan::parse(&args(&["replica-selection", &"a".repeat(65)])).is_err());
        assert!(Plan::parse(&args(&["replica-selection", "a--b"])).is_err());
    }

    #[test]
    fn the_config_schema_is_checkable_and_says_what_the_example_accepts() {
        use crate::policy::config_schema;
        let schema: serde_json::Value = serde_json::from_str(CONFIG_SCHEMA).expect("JSON");
        assert!(config_schema::unsupported(&schema).is_empty());
        let check = |config: serde_json::Value| config_schema::check(&schema, &config, "config");
        assert_eq!(check(serde_json::json!({})), Ok(()));
        assert_eq!(check(serde_json::json!({"avoid": ["cache-2"]})), Ok(()));
        assert!(check(serde_json::json!({"avoid": "cache-2"})).is_err());
        assert!(check(serde_json::json!({"avid": []})).is_err());
    }

    #[test]
    fn the_crate_has_the_contract_the_names_samples_and_scenarios() {
        let plan = Plan::parse(&args(&["replica-selection", "rollout-order", "my-plugin"]))
            .expect("parses");
        let files = files(&plan, &SdkSource::Path("/src/kv\"pilot/plugins/sdk".into()));
        let get = |path: &str| {
            files
                .iter()
                .find(|(p, _)| p == Path::new(path))
                .map(|(_, text)| text.as_str())
                .unwrap_or_else(|| panic!("{path} is written"))
        };
        assert_eq!(get("wit/deps/kvpilot-policy/policy.wit"), POLICY_WIT);
        let world = get("wit/world.wit");
        assert!(world.contains("package local:my-plugin;"), "{world}");
        assert!(
            world.contains("export kvpilot:policy/plugin@0.1.0;"),
            "{world}"
        );
        assert!(
            world.contains("export kvpilot:policy/replica-selection@0.1.0;"),
            "{world}"
        );
        assert!(
            world.contains("export kvpilot:policy/rollout-order@0.1.0;"),
            "{world}"
        );
        assert!(!world.contains("snapshot-schedule"), "{world}");
        let toml = get("Cargo.toml");
        assert!(toml.contains("name = \"my-plugin\""), "{toml}");
        assert!(
            toml.contains(r#"kvpilot-sdk = { path = "/src/kv\"pilot/plugins/sdk" }"#),
            "{toml}"
        );
        let lib = get("src/lib.rs");
        assert!(
            lib.contains("export_policy!(MyPlugin: replica_selection, rollout_order)"),
            "{lib}"
        );
        assert!(get("src/policy.rs").contains("pub struct MyPlugin;"));
        assert!(get("tests/scenarios.rs").contains("my_plugin::MyPlugin"));
        for (path, text) in &files {
            assert!(
                !text.contains("{{"),
                "{} has an unfilled placeholder",
                path.display()
            );
            if path.extension().is_some_and(|e| e == "json") {
                let value: serde_json::Value = serde_json::from_str(text)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                if path.starts_with("scenarios") {
                    kvpilot_sdk::scenario::parse(text, &path.display().to_string())
                        .unwrap_or_else(|e| panic!("{e}"));
                } else {
                    assert!(value.is_object(), "{}", path.display());
                }
            }
        }
        assert!(
            files
                .iter()
                .any(|(p, _)| p == Path::new("samples/rollout-order.json"))
        );
        assert!(
            !files
                .iter()
                .any(|(p, _)| p.starts_with("samples/snapshot-schedule"))
        );
    }

    #[test]
    fn a_registry_sdk_is_a_version() {
        let toml = SdkSource::Version("0.1.0".into()).toml("features = [\"std\"]");
        assert_eq!(toml, r#"{ version = "0.1.0", features = ["std"] }"#);
    }
}
