//! `kvpilot policy list|check|run|test|replay|annotate|new|bench`: inspect, run, test, scaffold and benchmark
//! policy plugins.

use crate::policy::{
    Hook, PolicyRuntime, bench, config_schema, input, logs, metadata, replay, scenario, source,
    text,
};
use crate::scaffold;
use clap::Subcommand;
use kvpilot_sdk::{RolloutRequest, ScheduleRequest, SelectionRequest};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// List the builtin plugins with their hooks, version and sha256.
    List,
    /// Load a plugin and check it: a component, a known contract, only granted imports.
    Check {
        /// A `.wasm` file or `builtin:NAME`.
        plugin: String,
        /// Also check this config (a JSON object) with the plugin's `validate-config`.
        #[arg(long)]
        config: Option<String>,
        /// Print `{"name","version","description","hooks","imports","sha256","empty_config"}`
        /// (`empty_config`: null when `validate-config("{}")` accepts, else its rejection),
        /// and `config_schema` when one is embedded (`policy annotate`).
        #[arg(long)]
        json: bool,
    },
    /// Call one hook of a plugin on a request read from a JSON file; prints the decision.
    Run {
        /// `replica-selection`, `snapshot-schedule` or `rollout-order`.
        hook: String,
        /// A `.wasm` file or `builtin:NAME`.
        plugin: String,
        /// The request: the hook's WIT request record as JSON (see examples/policy-inputs/).
        #[arg(long)]
        input: PathBuf,
        /// Plugin config (a JSON object); replaces the input's `config`.
        #[arg(long)]
        config: Option<String>,
        /// Also print the plugin's log lines (what it wrote to stderr, `eprintln!`; at most
        /// 20 per call, each cut to 512 bytes) to stderr, before the decision or the error.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Run scenario files (request, config, expected answer, error or config rejection)
    /// through a plugin in the sandbox: one line per file, a summary, and a failure exit
    /// status when any scenario fails.
    Test {
        /// A `.wasm` file or `builtin:NAME`.
        plugin: String,
        /// A folder of scenario files (`*.json`), or one file. The format is documented in
        /// the README ("Write a policy in 15 minutes") and in `kvpilot_sdk::scenario`.
        scenarios: PathBuf,
    },
    /// Embed the plugin's config JSON Schema and its hooks in the component (a custom
    /// section, `kvpilot-metadata`); `policy check` then validates `--config` against it.
    Annotate {
        /// The `.wasm` file cargo built.
        plugin: PathBuf,
        /// The config's JSON Schema (a JSON file).
        #[arg(long)]
        schema: PathBuf,
        /// Where to write the annotated component (default: over the input).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Re-run a candidate plugin on recorded decisions and show where its answers differ:
    /// "what would my plugin have decided". Each decision keeps the request it answered (up
    /// to 8 KiB) and its answer.
    Replay {
        /// The candidate: a `.wasm` file or `builtin:NAME`.
        plugin: String,
        /// A local group's KvCluster manifest (its status is read from the state folder), or
        /// a status as JSON: `kvpilot local status --json`, or `kubectl get kvcluster NAME -o
        /// json`.
        #[arg(long)]
        from: PathBuf,
        /// The state folder of a local group (with a manifest in `--from`).
        #[arg(long, default_value = ".kvpilot")]
        state_dir: PathBuf,
        /// The candidate's config (a JSON object) instead of the recorded one.
        #[arg(long)]
        config: Option<String>,
        /// Print a JSON array: each recorded decision and its `outcome` (`same`, `differs`
        /// with the `candidate` answer, `failed` with the `error`, `not-replayable`).
        #[arg(long)]
        json: bool,
    },
    /// Write a new plugin crate: `kvpilot policy new <hook>… <name>`. It builds at once for
    /// wasm32-wasip2 and holds the contract (WIT), sample requests and scenarios.
    New {
        /// One or more hooks (replica-selection, snapshot-schedule, rollout-order), then the
        /// plugin's name (lower-case words joined by `-`).
        #[arg(required = true, num_args = 1.., value_name = "HOOK… NAME")]
        words: Vec<String>,
        /// The folder of the new crate (default: ./NAME); it must not exist or be empty.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// kvpilot's `plugins/sdk` folder, for a path dependency (default: the one this
        /// binary was built from, when it is still there; else kvpilot-sdk from the registry,
        /// at the version this binary was built with).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Latency per call of each default plugin at 3, 100 and 1000 members: wasm (fresh
    /// sandbox per call) vs native, and a memo hit (the steady-state cost per reconcile).
    Bench {
        /// Print a JSON array of `{"hook","plugin","members","wasm_p50_us","wasm_p99_us",
        /// "native_p50_us","wasm_p50_bare_us","cached_load_us","hit_p50_us","hit_p99_us"}`
        /// (`bare`: the same call with every member's zone and node absent; `hit`: the same
        /// request again, answered from the memo).
        #[arg(long)]
        json: bool,
        /// Timed calls per row.
        #[arg(long, default_value_t = 2000)]
        iterations: usize,
        /// Untimed calls before timing.
        #[arg(long, default_value_t = 200)]
        warmup: usize,
    },
}

pub async fn run(cmd: PolicyCommand) -> Result<ExitCode, String> {
    let runtime = PolicyRuntime::global().map_err(|e| e.to_string())?;
    match cmd {
        PolicyCommand::List => list(&runtime).await,
        PolicyCommand::Check {
            plugin,
            config,
            json,
        } => check(&runtime, &plugin, config.as_deref(), json).await,
        PolicyCommand::Run {
            hook,
            plugin,
            input,
            config,
            verbose,
        } => run_hook(&runtime, &hook, &plugin, &input, config.as_deref(), verbose).await,
        PolicyCommand::Test { plugin, scenarios } => test(&runtime, &plugin, &scenarios).await,
        PolicyCommand::New { words, dir, sdk } => new_plugin(&words, dir, sdk),
        PolicyCommand::Annotate {
            plugin,
            schema,
            output,
        } => annotate(&runtime, &plugin, &schema, output.as_deref()).await,
        PolicyCommand::Replay {
            plugin,
            from,
            state_dir,
            config,
            json,
        } => {
            replay_cmd(
                &runtime,
                &plugin,
                &from,
                &state_dir,
                config.as_deref(),
                json,
            )
            .await
        }
        PolicyCommand::Bench {
            json,
            iterations,
            warmup,
        } => run_bench(&runtime, json, bench::Rounds { iterations, warmup }).await,
    }
}

fn hooks_text(hooks: &[Hook]) -> String {
    hooks
        .iter()
        .map(|h| h.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

async fn list(runtime: &PolicyRuntime) -> Result<ExitCode, String> {
    let mut rows = vec![[
        "NAME".to_string(),
        "HOOKS".into(),
        "VERSION".into(),
        "SHA256".into(),
    ]];
    for name in source::builtin_names() {
        let plugin = runtime
            .load_builtin(name)
            .await
            .map_err(|e| e.to_string())?;
        rows.push([
            plugin.name().to_string(),
            hooks_text(plugin.hooks()),
            plugin.info().version.clone(),
            plugin.sha256_hex(),
        ]);
    }
    let widths: Vec<usize> = (0..4)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    for row in rows {
        println!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct CheckReport<'a> {
    name: &'a str,
    version: &'a str,
    description: &'a str,
    hooks: Vec<&'static str>,
    imports: &'a [String],
    sha256: String,
    /// The embedded config schema (`policy annotate`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    config_schema: Option<&'a serde_json::Value>,
    /// What `validate-config("{}")` said: `null` when it accepts an empty config, else its
    /// rejection.
    empty_config: Option<String>,
}

/// The bytes of a `.wasm` file or a builtin, for reading its metadata.
fn component_bytes(source_name: &str) -> Result<Vec<u8>, String> {
    match source::parse(source_name) {
        source::Source::Builtin(name) => {
            source::builtin_bytes(name.strip_prefix(source::BUILTIN_PREFIX).unwrap_or(name))
                .map(<[u8]>::to_vec)
                .ok_or_else(|| format!("no such builtin `{name}`"))
        }
        source::Source::File(path) => std::fs::read(path).map_err(|e| format!("{path}: {e}")),
    }
}

async fn check(
    runtime: &PolicyRuntime,
    source: &str,
    config: Option<&str>,
    json: bool,
) -> Result<ExitCode, String> {
    let plugin = runtime.load(source).await.map_err(|e| e.to_string())?;
    let metadata = metadata::read(&component_bytes(source)?).map_err(|e| e.to_string())?;
    if let Some(config) = config {
        if let Some(m) = &metadata {
            let value: serde_json::Value =
                serde_json::from_str(config).map_err(|e| format!("--config is not JSON: {e}"))?;
            config_schema::check(&m.config_schema, &value, "config")
                .map_err(|e| format!("--config does not match the plugin's config schema: {e}"))?;
        }
        plugin
            .validate_config(config)
            .await
            .map_err(|e| e.to_string())?;
    }
    let empty_config = plugin.validate_config("{}").await.err().map(|e| match e {
        crate::policy::PolicyError::InvalidConfig { message, .. } => message,
        other => other.to_string(),
    });
    let info = plugin.info();
    let report = CheckReport {
        name: &info.name,
        version: &info.version,
        description: &info.description,
        hooks: plugin.hooks().iter().map(|h| h.as_str()).collect(),
        imports: plugin.imports(),
        sha256: plugin.sha256_hex(),
        config_schema: metadata.as_ref().map(|m| &m.config_schema),
        empty_config,
    };
    if json {
        println!("{}", to_json(&report)?);
    } else {
        println!("{source}: ok");
        println!("  name:    {} {}", report.name, report.version);
        if !info.description.is_empty() {
            println!("  about:   {}", info.description);
        }
        println!("  hooks:   {}", report.hooks.join(", "));
        println!("  sha256:  {}", report.sha256);
        println!("  imports: {}", report.imports.join(", "));
        match &report.empty_config {
            None => println!("  {{}}:      accepted (validate-config)"),
            Some(why) => println!(
                "  {{}}:      rejected: {}",
                text::one_line(why, text::MESSAGE_BYTES)
            ),
        }
        match &metadata {
            Some(m) => println!(
                "  schema:  embedded ({} bytes; annotated hooks: {})",
                m.config_schema.to_string().len(),
                hooks_text(&m.hooks)
            ),
            None => println!("  schema:  none (add one with `kvpilot policy annotate`)"),
        }
        if config.is_some() {
            println!(
                "  config:  accepted{}",
                if metadata.is_some() {
                    " (schema and validate-config)"
                } else {
                    " (validate-config)"
                }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct RunReport<T: Serialize> {
    hook: Hook,
    plugin: String,
    sha256: String,
    answer: T,
    latency_us: u128,
}

/// Pretty JSON for the terminal: a plugin's strings are printed whole, but with every
/// control character escaped (docs/architecture.md, rule 10).
fn to_json<T: Serialize>(value: &T) -> Result<String, String> {
    serde_json::to_string_pretty(value)
        .map(|json| text::json_for_terminal(&json))
        .map_err(|e| format!("cannot print JSON: {e}"))
}

async fn run_hook(
    runtime: &PolicyRuntime,
    hook: &str,
    source: &str,
    input: &Path,
    config: Option<&str>,
    verbose: bool,
) -> Result<ExitCode, String> {
    let hook = Hook::parse(hook).ok_or_else(|| {
        format!(
            "unknown hook `{hook}` (one of {})",
            Hook::ALL.map(Hook::as_str).join(", ")
        )
    })?;
    // The plugin's lines are collected and shown with --verbose, else dropped; a call of its
    // own (unmemoized), since the point is to see what it does.
    let (sink, collected) = logs::LogSink::collect();
    let plugin = runtime
        .load(source)
        .await
        .map_err(|e| e.to_string())?
        .unmemoized()
        .logging_to(if verbose { sink } else { logs::LogSink::Off });
    let show_logs = || {
        for line in collected.take() {
            eprintln!("{line}");
        }
    };
    let config = |from_input: String| config.map_or(from_input, str::to_string);
    macro_rules! call {
        ($request:ty, $method:ident) => {{
            let mut request: $request = input::read(input, hook).map_err(|e| e.to_string())?;
            request.config = config(request.config);
            plugin
                .validate_config(&request.config)
                .await
                .map_err(|e| e.to_string())?;
            let started = Instant::now();
            let answer = plugin.$method(&request).await;
            let latency_us = started.elapsed().as_micros();
            show_logs();
            let answer = answer.map_err(|e| e.to_string())?;
            to_json(&RunReport {
                hook,
                plugin: plugin.name().to_string(),
                sha256: plugin.sha256_hex(),
                answer,
                latency_us,
            })?
        }};
    }
    let text = match hook {
        Hook::ReplicaSelection => call!(SelectionRequest, select),
        Hook::SnapshotSchedule => call!(ScheduleRequest, schedule),
        Hook::RolloutOrder => call!(RolloutRequest, next),
    };
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}

async fn test(runtime: &PolicyRuntime, source: &str, dir: &Path) -> Result<ExitCode, String> {
    let plugin = runtime.load(source).await.map_err(|e| e.to_string())?;
    let results = scenario::run_dir(&plugin, dir)
        .await
        .map_err(|e| e.to_string())?;
    let width = results.iter().map(|r| r.file.len()).max().unwrap_or(0);
    let mut failed = 0;
    for result in &results {
        // A line may quote a plugin's answer or error: one line, cleaned (rule 10).
        let line = match &result.result {
            Ok(()) => format!(
                "ok    {:<width$}  {:<17}  {:>11}",
                result.file,
                result.hook.map_or("", Hook::as_str),
                result.took.map_or("-".into(), |took| format!(
                    "{:.1} µs",
                    took.as_secs_f64() * 1e6
                )),
            ),
            Err(message) => {
                failed += 1;
                format!("FAIL  {message}")
            }
        };
        println!("{}", text::one_line(&line, text::MESSAGE_BYTES));
    }
    let passed = results.len() - failed;
    println!(
        "{} scenario{}: {passed} passed, {failed} failed ({} {})",
        results.len(),
        if results.len() == 1 { "" } else { "s" },
        plugin.name(),
        plugin.sha256_hex()
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn annotate(
    runtime: &PolicyRuntime,
    path: &Path,
    schema: &Path,
    output: Option<&Path>,
) -> Result<ExitCode, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let schema_text =
        std::fs::read_to_string(schema).map_err(|e| format!("{}: {e}", schema.display()))?;
    let config_schema: serde_json::Value = serde_json::from_str(&schema_text)
        .map_err(|e| format!("{}: not JSON: {e}", schema.display()))?;
    if !config_schema.is_object() {
        return Err(format!("{}: a JSON Schema is an object", schema.display()));
    }
    let unsupported = config_schema::unsupported(&config_schema);
    if !unsupported.is_empty() {
        return Err(format!(
            "{}: keywords `policy check` cannot check: {} (supported: type, properties,              required, additionalProperties, enum, const, minimum, maximum, exclusiveMinimum,              exclusiveMaximum, minLength, maxLength, items, minItems, maxItems)",
            schema.display(),
            unsupported.join(", ")
        ));
    }
    // The hooks come from the component itself; it must load.
    let plugin = runtime
        .load_bytes(&path.display().to_string(), &bytes)
        .await
        .map_err(|e| e.to_string())?;
    let annotated = metadata::annotate(
        &bytes,
        &metadata::Metadata {
            hooks: plugin.hooks().to_vec(),
            config_schema,
        },
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    // The annotated component must load as the same plugin.
    let check = runtime
        .load_bytes("annotated", &annotated)
        .await
        .map_err(|e| format!("the annotated component does not load: {e}"))?;
    let out = output.unwrap_or(path);
    std::fs::write(out, &annotated).map_err(|e| format!("{}: {e}", out.display()))?;
    println!(
        "{}: annotated ({} hooks: {}; schema {} bytes); sha256 {}",
        out.display(),
        plugin.info().name,
        hooks_text(plugin.hooks()),
        schema_text.len(),
        check.sha256_hex()
    );
    Ok(ExitCode::SUCCESS)
}

/// The status document `--from` names: JSON as it is, or a manifest's local status file.
fn status_document(from: &Path, state_dir: &Path) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(from).map_err(|e| format!("{}: {e}", from.display()))?;
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) {
        return Ok(value);
    }
    let dir = crate::platform::local::group_dir(from, state_dir).map_err(|e| e.to_string())?;
    let path = dir.join(crate::platform::local::STATUS_FILE);
    let bytes = std::fs::read(&path).map_err(|e| {
        format!(
            "{} is not JSON, so it is taken as a local manifest; its status {}: {e}",
            from.display(),
            path.display()
        )
    })?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

async fn replay_cmd(
    runtime: &PolicyRuntime,
    source: &str,
    from: &Path,
    state_dir: &Path,
    config: Option<&str>,
    json: bool,
) -> Result<ExitCode, String> {
    let document = status_document(from, state_dir)?;
    let decisions = replay::recorded(&document).map_err(|e| format!("{}: {e}", from.display()))?;
    let plugin = runtime.load(source).await.map_err(|e| e.to_string())?;
    if let Some(config) = config {
        plugin
            .validate_config(config)
            .await
            .map_err(|e| e.to_string())?;
    }
    let replayed = replay::replay(&plugin, decisions, config).await;
    if json {
        println!("{}", to_json(&replayed)?);
        return Ok(ExitCode::SUCCESS);
    }
    let (mut same, mut differ, mut failed, mut skipped) = (0, 0, 0, 0);
    for r in &replayed {
        let d = &r.recorded;
        let head = format!("{:<24} {:<17} {}", d.time, d.hook.as_str(), d.plugin);
        let line = match &r.outcome {
            replay::Outcome::Same => {
                same += 1;
                format!("same     {head}: {}", d.answer)
            }
            replay::Outcome::Differs { candidate } => {
                differ += 1;
                format!(
                    "DIFFERS  {head}: recorded {}, candidate {candidate}",
                    d.answer
                )
            }
            replay::Outcome::Failed { error } => {
                failed += 1;
                format!(
                    "FAILED   {head}: recorded {}, candidate failed: {error}",
                    d.answer
                )
            }
            replay::Outcome::NotReplayable { why } => {
                skipped += 1;
                format!("skipped  {head}: {why}")
            }
        };
        // A line quotes answers and errors of plugins: cleaned (rule 10).
        println!("{}", text::one_line(&line, text::MESSAGE_BYTES));
    }
    println!(
        "{} decisions: {same} same, {differ} differ, {failed} failed, {skipped} not replayable ({} {})",
        replayed.len(),
        plugin.name(),
        plugin.sha256_hex()
    );
    Ok(ExitCode::SUCCESS)
}

fn new_plugin(
    words: &[String],
    dir: Option<PathBuf>,
    sdk: Option<PathBuf>,
) -> Result<ExitCode, String> {
    let plan = scaffold::Plan::parse(words).map_err(|e| e.to_string())?;
    let sdk = match sdk {
        Some(path) => {
            let path = std::fs::canonicalize(&path)
                .map_err(|e| format!("--sdk {}: {e}", path.display()))?;
            if !path.join("Cargo.toml").is_file() {
                return Err(format!(
                    "--sdk {}: not a crate folder (no Cargo.toml); give kvpilot's plugins/sdk",
                    path.display()
                ));
            }
            scaffold::SdkSource::Path(path)
        }
        None => built_from_sdk().map_or_else(
            || scaffold::SdkSource::Version(scaffold::SDK_VERSION.to_string()),
            scaffold::SdkSource::Path,
        ),
    };
    let dir = dir.unwrap_or_else(|| PathBuf::from(&plan.name));
    if let Ok(mut entries) = std::fs::read_dir(&dir)
        && entries.next().is_some()
    {
        return Err(format!(
            "--dir {}: exists and is not empty; nothing was written",
            dir.display()
        ));
    }
    let files = scaffold::files(&plan, &sdk);
    for (path, contents) in &files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(&path, contents).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    format_rust(&dir, &files);
    let hooks: Vec<&str> = plan.hooks.iter().map(|h| h.as_str()).collect();
    println!(
        "wrote {} ({} files): plugin `{}` for {}",
        dir.display(),
        files.len(),
        plan.name,
        hooks.join(", ")
    );
    match &sdk {
        scaffold::SdkSource::Path(path) => println!("kvpilot-sdk: path {}", path.display()),
        scaffold::SdkSource::Version(v) => println!("kvpilot-sdk: version {v} from the registry"),
    }
    let wasm = plan.wasm_path();
    println!(
        "next:\n  cd {}\n  cargo test\n  cargo build --release --target wasm32-wasip2\n  kvpilot policy test {} scenarios",
        dir.display(),
        wasm.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Formats the new crate's Rust files with `rustfmt` when it is installed, so that the
/// author's `cargo fmt --check` starts clean whatever the length of the names. Without rustfmt
/// the files are left as written: they build the same.
fn format_rust(dir: &Path, files: &[(PathBuf, String)]) {
    let rust: Vec<PathBuf> = files
        .iter()
        .filter(|(p, _)| p.extension().is_some_and(|e| e == "rs"))
        .map(|(p, _)| dir.join(p))
        .collect();
    let _ = std::process::Command::new("rustfmt")
        .args(["--edition", "2024"])
        .args(&rust)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// The sdk of the source tree this binary was built from, if it is still there.
fn built_from_sdk() -> Option<PathBuf> {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/sdk");
    std::fs::canonicalize(sdk)
        .ok()
        .filter(|p| p.join("Cargo.toml").is_file())
}

async fn run_bench(
    runtime: &PolicyRuntime,
    json: bool,
    rounds: bench::Rounds,
) -> Result<ExitCode, String> {
    let rows = bench::run(runtime, rounds)
        .await
        .map_err(|e| e.to_string())?;
    if json {
        println!("{}", to_json(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<18} {:<24} {:>7} {:>12} {:>12} {:>14} {:>8} {:>12} {:>11}",
        "HOOK",
        "PLUGIN",
        "MEMBERS",
        "WASM p50 µs",
        "WASM p99 µs",
        "NATIVE p50 µs",
        "RATIO",
        "BARE p50 µs",
        "HIT p50 µs"
    );
    for row in &rows {
        let ratio = if row.native_p50_us > 0.0 {
            format!("{:.0}x", row.wasm_p50_us / row.native_p50_us)
        } else {
            "-".into()
        };
        println!(
            "{:<18} {:<24} {:>7} {:>12.2} {:>12.2} {:>14.2} {:>8} {:>12.2} {:>11.2}",
            row.hook.as_str(),
            row.plugin,
            row.members,
            row.wasm_p50_us,
            row.wasm_p99_us,
            row.native_p50_us,
            ratio,
            row.wasm_p50_bare_us,
            row.hit_p50_us
        );
    }
    println!(
        "{} iterations per row after {} warm-up calls; a fresh sandbox (store + instance) per wasm call.\n\
         BARE: the same wasm call with every member's zone and node absent (1 string per member, not 3).\n\
         HIT: the same request again (a steady reconcile), answered from the memo without an instance.",
        rounds.iterations, rounds.warmup
    );
    for row in rows.iter().filter(|r| r.members == bench::SIZES[0]) {
        println!(
            "cached load of {}: {:.1} µs",
            row.plugin, row.cached_load_us
        );
    }
    Ok(ExitCode::SUCCESS)
}
