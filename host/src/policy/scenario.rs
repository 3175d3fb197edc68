//! Scenario files (`kvpilot_sdk::scenario`) run in the real sandbox: the plugin's
//! `validate-config`, then the hook, with the host's answer validation (rule 1,
//! docs/architecture.md), exactly as a reconcile calls it.

use super::input::{self, InputError};
use super::{Hook, Plugin};
use kvpilot_sdk::scenario::{self, Answer, Outcome, Request, Scenario};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The largest scenario file read (the same bound as a request file).
pub const MAX_SCENARIO_BYTES: u64 = input::MAX_INPUT_BYTES;

/// Why a scenario folder could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioDirError {
    #[error("{dir}: cannot read the scenario folder: {source}")]
    Read { dir: String, source: std::io::Error },
    #[error("{dir}: no scenario files (*.json)")]
    Empty { dir: String },
}

/// The `*.json` files of `dir` by name, or `dir` itself when it is a file.
pub fn files(dir: &Path) -> Result<Vec<PathBuf>, ScenarioDirError> {
    if dir.is_file() {
        return Ok(vec![dir.to_path_buf()]);
    }
    let shown = || dir.display().to_string();
    let entries = std::fs::read_dir(dir).map_err(|source| ScenarioDirError::Read {
        dir: shown(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json") && p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ScenarioDirError::Empty { dir: shown() });
    }
    Ok(files)
}

/// Reads and parses one scenario file; the error names the file and the field.
pub fn read(path: &Path) -> Result<Scenario, String> {
    let file = path.display().to_string();
    let text =
        input::read_bounded(path, MAX_SCENARIO_BYTES).map_err(|e: InputError| e.to_string())?;
    scenario::parse(&text, &file).map_err(|e| e.to_string())
}

/// The host's hook for the sdk's.
fn hook(hook: kvpilot_sdk::Hook) -> Hook {
    match hook {
        kvpilot_sdk::Hook::ReplicaSelection => Hook::ReplicaSelection,
        kvpilot_sdk::Hook::SnapshotSchedule => Hook::SnapshotSchedule,
        kvpilot_sdk::Hook::RolloutOrder => Hook::RolloutOrder,
    }
}

/// Runs `request` through `plugin` in the sandbox; also how long the hook call took (`None`
/// when the config was rejected, so the hook was not called).
pub async fn run(plugin: &Plugin, request: &Request) -> (Outcome, Option<Duration>) {
    if let Err(e) = plugin.validate_config(request.config()).await {
        return (Outcome::ConfigRejected(e.to_string()), None);
    }
    let started = Instant::now();
    let answer = match request {
        Request::ReplicaSelection(r) => plugin.select(r).await.map(Answer::Selection),
        Request::SnapshotSchedule(r) => plugin.schedule(r).await.map(Answer::Schedule),
        Request::RolloutOrder(r) => plugin.next(r).await.map(Answer::Step),
    };
    let took = started.elapsed();
    let outcome = match answer {
        Ok(answer) => Outcome::Answer(answer.canonical()),
        Err(e) => Outcome::Error(e.to_string()),
    };
    (outcome, Some(took))
}

/// The result of one scenario file.
#[derive(Debug)]
pub struct FileResult {
    pub file: String,
    /// The hook called, when the file parsed.
    pub hook: Option<Hook>,
    /// The parse error or the mismatch.
    pub result: Result<(), String>,
    /// How long the hook call took, when it was called.
    pub took: Option<Duration>,
}

/// Runs every scenario file of `dir` (or the one file `dir`) through `plugin`.
pub async fn run_dir(plugin: &Plugin, dir: &Path) -> Result<Vec<FileResult>, ScenarioDirError> {
    let mut results = Vec::new();
    for path in files(dir)? {
        let file = path.display().to_string();
        let result = match read(&path) {
            Err(message) => FileResult {
                file,
                hook: None,
                result: Err(message),
                took: None,
            },
            Ok(scenario) => {
                let (outcome, took) = run(plugin, &scenario.request).await;
                FileResult {
                    hook: Some(hook(scenario.hook())),
                    result: scenario
                        .check(&outcome)
                        .map_err(|mismatch| format!("{file}: {mismatch}")),
                    file,
                    took,
                }
            }
        };
        results.push(result);
    }
    Ok(results)
}
