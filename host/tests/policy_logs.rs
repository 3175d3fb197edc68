//! Plugin log lines (issue 14 item 3): what a plugin writes to stderr during a call comes out
//! attributed to plugin, hook and cluster, cleaned, bounded per call and per minute, also
//! when the call panics; through `tracing` (the operator's and `local up`'s log) by default,
//! and in `kvpilot policy run --verbose`.

#[path = "hostile/built.rs"]
mod built;

use kvpilot::policy::logs::{LINES_PER_CALL, LINES_PER_MINUTE, LogSink};
use kvpilot::policy::{Hook, Limits, Plugin, PolicyError, PolicyRuntime};
use kvpilot_sdk::{Cluster, Member, SelectionReason, SelectionRequest};
use std::io::Write;
use std::process::Command;
use std::sync::{Arc, Mutex};

/// A primary and two replicas in step, each holding data (the SDK's builders).
fn request(config: &str) -> SelectionRequest {
    let holding = |m: Member| m.offset(1000).keys(10);
    SelectionRequest::new(
        SelectionReason::PrimaryLost,
        vec![
            holding(Member::replica("cache-1")),
            holding(Member::replica("cache-2")),
        ],
    )
    .cluster(
        Cluster::new("cache")
            .namespace("shop")
            .replicas_per_shard(2),
    )
    .primary(holding(Member::primary("cache-0")))
    .config(config)
}

/// The logger plugin in a runtime of its own (its per-minute bucket is this test's alone),
/// with a deadline its hundred writes fit in whatever the build and the machine's load: these
/// tests are about the lines, not the deadline.
async fn logger() -> Plugin {
    let runtime = PolicyRuntime::new().expect("runtime");
    let limits = Limits {
        timeout: std::time::Duration::from_secs(5),
        ..Limits::default()
    };
    runtime
        .load_file(&built::wasm_path("logger"))
        .await
        .expect("load")
        .with_limits(limits)
}

#[tokio::test]
async fn lines_are_attributed_and_cleaned() {
    let (sink, collected) = LogSink::collect();
    let plugin = logger().await.logging_to(sink);
    plugin.select(&request("{}")).await.expect("answers");
    let lines = collected.take();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines.iter().all(|l| l.hook == Hook::ReplicaSelection
        && l.cluster == "shop/cache"
        && l.plugin.ends_with("hostile_logger.wasm")));
    assert_eq!(lines[0].line, "deciding for cache with 2 candidates");
    // The escape that would clear a terminal is gone.
    assert_eq!(lines[1].line, " [2Jcleared?");
    assert!(!lines[1].to_string().contains('\u{1b}'));
    // A memoized answer makes no call, so no line.
    plugin.select(&request("{}")).await.expect("answers");
    assert!(collected.take().is_empty());
}

#[tokio::test]
async fn the_lines_before_a_panic_are_kept() {
    let (sink, collected) = LogSink::collect();
    let plugin = logger().await.logging_to(sink);
    let error = plugin
        .select(&request(r#"{"mode":"hostile"}"#))
        .await
        .expect_err("it panics");
    assert!(matches!(error, PolicyError::Trap { .. }), "{error}");
    let lines: Vec<String> = collected.take().into_iter().map(|l| l.line).collect();
    assert_eq!(
        lines[0], "deciding for cache with 2 candidates",
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("logger plugin panicked after its lines")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn lines_are_bounded_per_call_and_per_minute() {
    let (sink, collected) = LogSink::collect();
    let plugin = logger().await.logging_to(sink).unmemoized();
    // 102 lines a call: the last 20 go out, after a line that counts the others.
    plugin
        .select(&request(r#"{"mode":"flood"}"#))
        .await
        .expect("answers");
    let first = collected.take();
    assert_eq!(first.len(), LINES_PER_CALL + 1, "{first:?}");
    assert!(
        first[0].line.starts_with("[82 earlier lines dropped"),
        "{:?}",
        first[0]
    );
    assert_eq!(first.last().map(|l| l.line.as_str()), Some("flood line 99"));
    // Many more calls: at most the bucket (plus one counting line per burst) per minute.
    for _ in 0..20 {
        plugin
            .select(&request(r#"{"mode":"flood"}"#))
            .await
            .expect("answers");
    }
    let rest = collected.take();
    let lines = first.len() + rest.len();
    let counting = first
        .iter()
        .chain(&rest)
        .filter(|l| l.line.contains("earlier lines dropped"))
        .count();
    assert!(
        lines - counting <= LINES_PER_MINUTE as usize + LINES_PER_CALL,
        "{lines} lines, {counting} counting lines"
    );
}

/// A `tracing` writer into a buffer.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn by_default_lines_go_to_the_process_log() {
    let plugin = logger().await;
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    plugin.select(&request("{}")).await.expect("answers");
    let text = String::from_utf8(buffer.0.lock().expect("buffer").clone()).expect("utf-8");
    let line = text
        .lines()
        .find(|l| l.contains("deciding for cache with 2 candidates"))
        .unwrap_or_else(|| panic!("no plugin line in {text:?}"));
    assert!(
        line.contains("kvpilot::plugin")
            && line.contains("hook=replica-selection")
            && line.contains("cluster=shop/cache")
            && line.contains("hostile_logger.wasm"),
        "{line}"
    );
}

#[test]
fn policy_run_verbose_shows_the_lines() {
    let input = std::env::temp_dir().join(format!("kvpilot-logs-{}.json", std::process::id()));
    std::fs::write(&input, serde_json::to_string(&request("{}")).expect("json"))
        .expect("write the input");
    let wasm = built::wasm_path("logger");
    let run = |verbose: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kvpilot"));
        cmd.args(["policy", "run", "replica-selection"])
            .arg(&wasm)
            .arg("--input")
            .arg(&input);
        if verbose {
            cmd.arg("--verbose");
        }
        cmd.output().expect("run kvpilot")
    };
    let quiet = run(false);
    let verbose = run(true);
    let _ = std::fs::remove_file(&input);
    assert!(quiet.status.success() && verbose.status.success());
    let quiet_err = String::from_utf8_lossy(&quiet.stderr);
    let verbose_err = String::from_utf8_lossy(&verbose.stderr);
    assert!(!quiet_err.contains("deciding for"), "{quiet_err}");
    assert!(
        verbose_err.contains("replica-selection shop/cache] deciding for cache with 2 candidates"),
        "{verbose_err}"
    );
    assert!(String::from_utf8_lossy(&verbose.stdout).contains("\"cache-1\""));
}
