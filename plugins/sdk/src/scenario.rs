//! Scenario files: a request, a config and what the plugin must answer, in one JSON file. The
//! same files run in the real sandbox (`kvpilot policy test plugin.wasm scenarios/`) and
//! natively in `cargo test` ([`check_dir`], with the `std` feature).
//!
//! ```json
//! {
//!   "description": "the most caught-up replica wins",
//!   "hook": "replica-selection",
//!   "config": {"maxLagBytes": 1048576},
//!   "request": {
//!     "reason": "planned-handover",
//!     "cluster": {"name": "cache"},
//!     "candidates": [{"name": "cache-1", "ready": true, "offset": 900, "keys": 5}]
//!   },
//!   "expect": {"answer": {"promote": "cache-1"}}
//! }
//! ```
//!
//! - `hook`: the hook called, by its WIT name.
//! - `request`: that hook's request record as JSON, the same as `kvpilot policy run --input`
//!   reads (kebab-case names; missing fields take their defaults, unknown fields are refused).
//! - `config`: the plugin's settings, a JSON object (or its text); `{}` when absent. It is
//!   checked with `validate-config` first, then given to the hook as `request.config`.
//! - `expect`: exactly one of
//!   - `answer`: the answer, as `kvpilot policy run` prints it (`{"promote": "x"}`,
//!     `{"wait": "…"}`, `[{"member": "x", "cron": "0 3 * * *"}]`, `{"restart": "x"}`,
//!     `{"handover": {"from": "x", "to": "y"}}`, `"done"`); cron expressions are compared in
//!     their canonical form;
//!   - `error`: a part of the hook's error message (the plugin's `Err`, a trap, an answer the
//!     host refuses);
//!   - `config-rejected`: a part of `validate-config`'s message.
//! - `description`: optional, for people.

use crate::cron::Cron;
use crate::hook::Hook;
use crate::policy::{Policy, not_exported};
use crate::prelude::*;
use crate::schema::first_unknown;
use crate::types::{
    MemberSchedule, RolloutRequest, ScheduleRequest, Selection, SelectionRequest, Step,
};
use core::fmt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// The fields of a scenario file.
pub const FIELDS: [&str; 5] = ["description", "hook", "config", "request", "expect"];
/// The fields of `expect`, exactly one of which is given.
pub const EXPECT_FIELDS: [&str; 3] = ["answer", "error", "config-rejected"];

/// One parsed scenario file.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// What the scenario is about (may be empty).
    pub description: String,
    /// The request, its `config` set from the scenario's `config`.
    pub request: Request,
    /// What the plugin must do.
    pub expect: Expect,
}

/// A request to one hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Request {
    ReplicaSelection(SelectionRequest),
    SnapshotSchedule(ScheduleRequest),
    RolloutOrder(RolloutRequest),
}

impl Request {
    /// The hook the request is for.
    pub fn hook(&self) -> Hook {
        match self {
            Request::ReplicaSelection(_) => Hook::ReplicaSelection,
            Request::SnapshotSchedule(_) => Hook::SnapshotSchedule,
            Request::RolloutOrder(_) => Hook::RolloutOrder,
        }
    }

    /// The plugin's settings in the request.
    pub fn config(&self) -> &str {
        match self {
            Request::ReplicaSelection(r) => &r.config,
            Request::SnapshotSchedule(r) => &r.config,
            Request::RolloutOrder(r) => &r.config,
        }
    }
}

/// A hook's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Answer {
    Selection(Selection),
    Schedule(Vec<MemberSchedule>),
    Step(Step),
}

impl Answer {
    /// The same answer with every cron expression in its canonical text (as the host keeps
    /// it); an expression that does not parse is left as it is.
    pub fn canonical(self) -> Answer {
        match self {
            Answer::Schedule(entries) => Answer::Schedule(
                entries
                    .into_iter()
                    .map(|mut e| {
                        if let Some(cron) = e.cron.as_ref().and_then(|c| c.parse::<Cron>().ok()) {
                            e.cron = Some(cron.to_string());
                        }
                        e
                    })
                    .collect(),
            ),
            other => other,
        }
    }

    /// The answer as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("<cannot print: {e}>"))
    }
}

/// What a scenario expects.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// This answer.
    Answer(Answer),
    /// The hook fails with a message containing this text.
    Error(String),
    /// `validate-config` refuses the config with a message containing this text.
    ConfigRejected(String),
}

/// What happened when a scenario's request was run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The hook answered.
    Answer(Answer),
    /// The hook failed; the message.
    Error(String),
    /// `validate-config` refused the config; its message.
    ConfigRejected(String),
}

/// Why a scenario file was refused: the file, the field (a path such as
/// `request.candidates[0].lag_bytes`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError {
    pub file: String,
    pub field: String,
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.field, self.message)
        }
    }
}

/// Parses the text of the scenario file `file` (named in errors).
pub fn parse(text: &str, file: &str) -> Result<Scenario, ScenarioError> {
    let error = |field: &str, message: String| ScenarioError {
        file: file.into(),
        field: field.into(),
        message,
    };
    let value: Value = serde_json::from_str(text)
        .map_err(|e| error("", format!("not a scenario: invalid JSON: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(error("", "not a scenario: expected a JSON object".into()));
    };
    if let Some(unknown) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(error(
            unknown,
            format!("unknown field (expected one of: {})", FIELDS.join(", ")),
        ));
    }
    let description = match fields.get("description") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(error(
                "description",
                format!("expected text, got `{other}`"),
            ));
        }
    };
    let hook_names = Hook::ALL.map(Hook::as_str).join(", ");
    let hook = match fields.get("hook") {
        None => return Err(error("hook", format!("missing (one of {hook_names})"))),
        Some(Value::String(name)) => Hook::parse(name).ok_or_else(|| {
            error(
                "hook",
                format!("unknown hook `{name}` (one of {hook_names})"),
            )
        })?,
        Some(other) => {
            return Err(error(
                "hook",
                format!("expected a hook name, got `{other}`"),
            ));
        }
    };
    let config = match fields.get("config") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text.clone()),
        Some(object @ Value::Object(_)) => Some(object.to_string()),
        Some(other) => {
            return Err(error(
                "config",
                format!("expected a JSON object (or its text), got `{other}`"),
            ));
        }
    };
    let given = fields
        .get("request")
        .ok_or_else(|| error("request", format!("missing (a {hook} request)")))?;
    if config.is_some() && given.get("config").is_some() {
        return Err(error(
            "request.config",
            "the config is given twice: keep the scenario's `config` only".into(),
        ));
    }
    let mut request = match hook {
        Hook::ReplicaSelection => Request::ReplicaSelection(strict(given, "request", &error)?),
        Hook::SnapshotSchedule => Request::SnapshotSchedule(strict(given, "request", &error)?),
        Hook::RolloutOrder => Request::RolloutOrder(strict(given, "request", &error)?),
    };
    if let Some(config) = config {
        match &mut request {
            Request::ReplicaSelection(r) => r.config = config,
            Request::SnapshotSchedule(r) => r.config = config,
            Request::RolloutOrder(r) => r.config = config,
        }
    }
    let expect = parse_expect(fields.get("expect"), hook, &error)?;
    Ok(Scenario {
        description,
        request,
        expect,
    })
}

fn parse_expect(
    given: Option<&Value>,
    hook: Hook,
    error: &impl Fn(&str, String) -> ScenarioError,
) -> Result<Expect, ScenarioError> {
    let one_of = EXPECT_FIELDS.join(", ");
    let Some(Value::Object(expect)) = given else {
        return Err(error(
            "expect",
            match given {
                None => format!("missing (an object with one of: {one_of})"),
                Some(other) => format!("expected an object with one of {one_of}, got `{other}`"),
            },
        ));
    };
    if let Some(unknown) = expect.keys().find(|k| !EXPECT_FIELDS.contains(&k.as_str())) {
        return Err(error(
            &format!("expect.{unknown}"),
            format!("unknown field (expected one of: {one_of})"),
        ));
    }
    if expect.len() != 1 {
        return Err(error(
            "expect",
            format!(
                "give exactly one of {one_of} (got {})",
                if expect.is_empty() {
                    "none".into()
                } else {
                    expect.keys().cloned().collect::<Vec<_>>().join(", ")
                }
            ),
        ));
    }
    let text = |field: &str, expect: &Map<String, Value>| -> Result<String, ScenarioError> {
        let path = format!("expect.{field}");
        match expect.get(field) {
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
            Some(Value::String(_)) => Err(error(
                &path,
                "empty: give a part of the expected message".into(),
            )),
            other => Err(error(
                &path,
                format!(
                    "expected a part of the message as text, got `{}`",
                    other.unwrap_or(&Value::Null)
                ),
            )),
        }
    };
    if expect.contains_key("error") {
        return text("error", expect).map(Expect::Error);
    }
    if expect.contains_key("config-rejected") {
        return text("config-rejected", expect).map(Expect::ConfigRejected);
    }
    let answer = expect.get("answer").unwrap_or(&Value::Null);
    let field = "expect.answer";
    let answer = match hook {
        Hook::ReplicaSelection => Answer::Selection(strict(answer, field, error)?),
        Hook::SnapshotSchedule => {
            let entries: Vec<MemberSchedule> = strict(answer, field, error)?;
            for (i, entry) in entries.iter().enumerate() {
                if let Some(cron) = &entry.cron
                    && let Err(e) = cron.parse::<Cron>()
                {
                    return Err(error(&format!("{field}[{i}].cron"), e));
                }
            }
            Answer::Schedule(entries)
        }
        Hook::RolloutOrder => Answer::Step(strict(answer, field, error)?),
    };
    Ok(Expect::Answer(answer.canonical()))
}

/// `given` as a `T`, refusing fields `T` does not have; errors name the field under `at`.
fn strict<T: DeserializeOwned + Serialize>(
    given: &Value,
    at: &str,
    error: &impl Fn(&str, String) -> ScenarioError,
) -> Result<T, ScenarioError> {
    let parsed: T = serde_json::from_value(given.clone()).map_err(|e| error(at, e.to_string()))?;
    let known = serde_json::to_value(&parsed).map_err(|e| error(at, e.to_string()))?;
    if let Some(unknown) = first_unknown(given, &known, at) {
        return Err(error(
            &unknown.path,
            format!(
                "unknown field{} (expected one of: {})",
                unknown.did_you_mean(),
                unknown.expected.join(", ")
            ),
        ));
    }
    Ok(parsed)
}

impl Expect {
    fn describe(&self) -> String {
        match self {
            Expect::Answer(answer) => format!("the answer {}", answer.to_json()),
            Expect::Error(part) => format!("an error containing `{part}`"),
            Expect::ConfigRejected(part) => format!("a config rejection containing `{part}`"),
        }
    }

    fn field(&self) -> &'static str {
        match self {
            Expect::Answer(_) => "expect.answer",
            Expect::Error(_) => "expect.error",
            Expect::ConfigRejected(_) => "expect.config-rejected",
        }
    }
}

impl Outcome {
    fn describe(&self) -> String {
        match self {
            Outcome::Answer(answer) => format!("the answer {}", answer.to_json()),
            Outcome::Error(message) => format!("the error: {message}"),
            Outcome::ConfigRejected(message) => format!("a config rejection: {message}"),
        }
    }
}

impl Scenario {
    /// The hook the scenario calls.
    pub fn hook(&self) -> Hook {
        self.request.hook()
    }

    /// `Ok` when `outcome` is what the scenario expects, else the mismatch, starting with the
    /// `expect` field it broke.
    pub fn check(&self, outcome: &Outcome) -> Result<(), String> {
        let matches = match (&self.expect, outcome) {
            (Expect::Answer(want), Outcome::Answer(got)) => *want == got.clone().canonical(),
            (Expect::Error(part), Outcome::Error(message))
            | (Expect::ConfigRejected(part), Outcome::ConfigRejected(message)) => {
                message.contains(part.as_str())
            }
            _ => false,
        };
        if matches {
            return Ok(());
        }
        Err(format!(
            "{}: expected {}, got {}",
            self.expect.field(),
            self.expect.describe(),
            outcome.describe()
        ))
    }
}

/// Runs `request` natively through `P`, as the host runs it in the sandbox: `validate-config`
/// first, then the hook. (The host also refuses answers outside what it offered, e.g. a
/// promoted member that is not a candidate; a scenario of such an answer passes natively but
/// fails in `kvpilot policy test`.)
pub fn run<P: Policy>(request: &Request) -> Outcome {
    if let Err(message) = P::validate_config(request.config()) {
        return Outcome::ConfigRejected(message);
    }
    let hook = request.hook();
    if !P::HOOKS.contains(&hook) {
        return Outcome::Error(not_exported(hook));
    }
    let answer = match request {
        Request::ReplicaSelection(r) => P::select(r).map(Answer::Selection),
        Request::SnapshotSchedule(r) => P::schedule(r).map(Answer::Schedule),
        Request::RolloutOrder(r) => P::next(r).map(Answer::Step),
    };
    match answer {
        Ok(answer) => Outcome::Answer(answer.canonical()),
        Err(message) => Outcome::Error(message),
    }
}

#[cfg(feature = "std")]
mod files {
    use super::*;
    use std::path::{Path, PathBuf};

    /// The `*.json` files of `dir`, by name; `dir` may also be one scenario file.
    pub fn scenario_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
        if dir.is_file() {
            return Ok(vec![dir.to_path_buf()]);
        }
        let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json") && p.is_file())
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(format!("{}: no scenario files (*.json)", dir.display()));
        }
        Ok(files)
    }

    /// One scenario file's name and its result: the parse error or the mismatch, if any.
    pub type FileResult = (String, Result<(), String>);

    /// Runs every scenario file of `dir` natively through `P`, one result per file.
    pub fn run_dir<P: Policy>(dir: &Path) -> Result<Vec<FileResult>, String> {
        let mut results = Vec::new();
        for path in scenario_files(dir)? {
            let file = path.display().to_string();
            let result = std::fs::read_to_string(&path)
                .map_err(|e| format!("{file}: cannot read: {e}"))
                .and_then(|text| parse(&text, &file).map_err(|e| e.to_string()))
                .and_then(|scenario| {
                    scenario
                        .check(&run::<P>(&scenario.request))
                        .map_err(|m| format!("{file}: {m}"))
                });
            results.push((file, result));
        }
        Ok(results)
    }

    /// For a `#[test]`: runs every scenario of `dir` through `P`, prints one line each and
    /// panics naming every failure.
    pub fn check_dir<P: Policy>(dir: impl AsRef<Path>) {
        let results = run_dir::<P>(dir.as_ref()).unwrap_or_else(|e| panic!("{e}"));
        let mut failures = Vec::new();
        for (file, result) in &results {
            match result {
                Ok(()) => std::println!("ok    {file}"),
                Err(message) => {
                    std::println!("FAIL  {message}");
                    failures.push(message.clone());
                }
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} scenarios failed:\n{}",
            failures.len(),
            results.len(),
            failures.join("\n")
        );
    }
}

#[cfg(feature = "std")]
pub use files::{FileResult, check_dir, run_dir, scenario_files};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Member, PluginInfo};

    struct First;

    impl Policy for First {
        const HOOKS: &'static [Hook] = &[Hook::ReplicaSelection];

        fn info() -> PluginInfo {
            PluginInfo {
                name: "first".into(),
                version: "0.1.0".into(),
                description: "promotes the first candidate".into(),
            }
        }

        fn validate_config(config: &str) -> Result<(), String> {
            if config.contains("bad") {
                Err("bad: not a setting".into())
            } else {
                Ok(())
            }
        }

        fn select(request: &SelectionRequest) -> Result<Selection, String> {
            request
                .candidates
                .first()
                .map(|m| Selection::Promote(m.name.clone()))
                .ok_or_else(|| "no candidates".into())
        }
    }

    const GOOD: &str = r#"{
        "description": "the first wins",
        "hook": "replica-selection",
        "config": {"x": 1},
        "request": {"reason": "primary-lost", "cluster": {"name": "c"},
                    "candidates": [{"name": "c-1"}, {"name": "c-2"}]},
        "expect": {"answer": {"promote": "c-1"}}
    }"#;

    fn run_text(text: &str) -> (Scenario, Outcome) {
        let scenario = parse(text, "s.json").expect("parses");
        let outcome = run::<First>(&scenario.request);
        (scenario, outcome)
    }

    #[test]
    fn a_scenario_parses_and_passes() {
        let (scenario, outcome) = run_text(GOOD);
        assert_eq!(scenario.description, "the first wins");
        assert_eq!(scenario.request.config(), r#"{"x":1}"#);
        assert_eq!(scenario.check(&outcome), Ok(()));
    }

    #[test]
    fn a_wrong_answer_names_both() {
        let (scenario, outcome) =
            run_text(&GOOD.replace(r#""promote": "c-1""#, r#""promote": "c-2""#));
        assert_eq!(
            scenario.check(&outcome).unwrap_err(),
            r#"expect.answer: expected the answer {"promote":"c-2"}, got the answer {"promote":"c-1"}"#
        );
    }

    #[test]
    fn errors_and_config_rejections_match_by_substring() {
        let text = GOOD
            .replace(r#"[{"name": "c-1"}, {"name": "c-2"}]"#, "[]")
            .replace(
                r#"{"answer": {"promote": "c-1"}}"#,
                r#"{"error": "no cand"}"#,
            );
        let (scenario, outcome) = run_text(&text);
        assert_eq!(scenario.check(&outcome), Ok(()));
        let text = GOOD.replace(r#"{"x": 1}"#, r#"{"bad": 1}"#).replace(
            r#"{"answer": {"promote": "c-1"}}"#,
            r#"{"config-rejected": "bad:"}"#,
        );
        let (scenario, outcome) = run_text(&text);
        assert_eq!(scenario.check(&outcome), Ok(()));
        // A rejection where an answer was expected says what came instead.
        let text = GOOD.replace(r#"{"x": 1}"#, r#"{"bad": 1}"#);
        let (scenario, outcome) = run_text(&text);
        assert_eq!(
            scenario.check(&outcome).unwrap_err(),
            r#"expect.answer: expected the answer {"promote":"c-1"}, got a config rejection: bad: not a setting"#
        );
    }

    #[test]
    fn a_hook_the_policy_lacks_is_an_error() {
        let text = r#"{"hook": "rollout-order", "request": {"cluster": {"name": "c"}, "members": []},
                       "expect": {"error": "does not export the rollout-order hook"}}"#;
        let (scenario, outcome) = run_text(text);
        assert_eq!(scenario.check(&outcome), Ok(()));
    }

    #[test]
    fn bad_files_name_the_field() {
        let cases = [
            ("[]", "", "not a scenario: expected a JSON object"),
            (r#"{"hook": "x"}"#, "hook", "unknown hook `x`"),
            (
                &GOOD.replace("\"description\"", "\"descr\""),
                "descr",
                "unknown field",
            ),
            (
                &GOOD.replace(r#"{"name": "c-2"}"#, r#"{"name": "c-2", "lag_bytes": 1}"#),
                "request.candidates[1].lag_bytes",
                "unknown field (did you mean `lag-bytes`?)",
            ),
            (
                &GOOD.replace(r#""reason": "primary-lost","#, ""),
                "request",
                "missing field `reason`",
            ),
            (
                &GOOD.replace(
                    r#""cluster": {"name": "c"},"#,
                    r#""cluster": {"name": "c"}, "config": {},"#,
                ),
                "request.config",
                "the config is given twice",
            ),
            (
                &GOOD.replace(r#""promote": "c-1""#, r#""promte": "c-1""#),
                "expect.answer",
                "unknown variant `promte`",
            ),
            (
                &GOOD.replace(
                    r#"{"promote": "c-1"}"#,
                    r#"{"promote": "c-1"}, "error": "x""#,
                ),
                "expect",
                "give exactly one of",
            ),
            (
                &GOOD.replace(r#""answer": {"promote": "c-1"}"#, r#""eror": "x""#),
                "expect.eror",
                "unknown field",
            ),
            (
                &GOOD.replace(r#""answer": {"promote": "c-1"}"#, r#""error": """#),
                "expect.error",
                "empty",
            ),
            (
                &GOOD.replace(r#""config": {"x": 1},"#, r#""config": [1],"#),
                "config",
                "expected a JSON object",
            ),
        ];
        for (text, field, message) in cases {
            let error = parse(text, "s.json").expect_err(field);
            assert_eq!(
                (error.file.as_str(), error.field.as_str()),
                ("s.json", field),
                "{error}"
            );
            assert!(error.message.contains(message), "{field}: {error}");
        }
    }

    #[test]
    fn cron_answers_compare_in_canonical_form() {
        let text = r#"{"hook": "snapshot-schedule",
            "request": {"mode": "all", "cluster": {"name": "c"}, "schedule": "0 3 * * *",
                        "members": [{"name": "c-0"}]},
            "expect": {"answer": [{"member": "c-0", "cron": "0  3 * *  *"}]}}"#;
        let scenario = parse(text, "s.json").expect("parses");
        let got = Outcome::Answer(Answer::Schedule(vec![MemberSchedule {
            member: "c-0".into(),
            cron: Some("0 3 * * *".into()),
        }]));
        assert_eq!(scenario.check(&got), Ok(()));
        let bad = text.replace("0  3 * *  *", "0 25 * * *");
        assert_eq!(
            parse(&bad, "s.json").unwrap_err().field,
            "expect.answer[0].cron"
        );
        let _ = Member::replica("unused");
    }
}
