//! A plugin's log lines: what the guest wrote to stderr during a call (`eprintln!`, a
//! panic message). The sandbox already captures stderr (bounded, see `stderr.rs`); after each
//! hook call, failed or not, the captured text is split into lines, each cleaned and cut
//! (rule 10), at most [`LINES_PER_CALL`] per call (the last ones: those nearest a panic), and
//! at most [`LINES_PER_MINUTE`] per component across calls (a token bucket). Every line names
//! its plugin, hook and cluster. A dropped line is counted, and the count is said once in the
//! next line that goes out.
//!
//! The lines go where the plugin's [`LogSink`] says: by default to the process log (`tracing`,
//! target `kvpilot::plugin`: operator log lines on Kubernetes, the terminal of `kvpilot local
//! up`), or collected for `kvpilot policy run --verbose`. A memoized answer makes no call, so
//! it writes no line.
//!
//! This uses no new import in the contract: a plugin logs with `eprintln!` (any WASI stderr
//! write), which every contract version already allows.

use super::Hook;
use super::text;
use serde::Serialize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// The longest line kept, in bytes (longer ones are cut with a marker).
pub const LINE_BYTES: usize = 512;
/// The most lines one call may log; the last ones are kept.
pub const LINES_PER_CALL: usize = 20;
/// The most lines one component may log per minute, over all its calls (a bucket of this
/// many lines, refilled evenly over a minute).
pub const LINES_PER_MINUTE: u32 = 120;
/// The most lines a collecting sink holds.
const COLLECTED_LINES: usize = 1000;

/// One log line of a plugin, attributed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    pub plugin: String,
    pub hook: Hook,
    /// `namespace/name` of the cluster in the request.
    pub cluster: String,
    /// The line, cleaned and cut.
    pub line: String,
}

impl std::fmt::Display for LogLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[plugin {} {} {}] {}",
            self.plugin, self.hook, self.cluster, self.line
        )
    }
}

/// Where a plugin's lines go.
#[derive(Debug, Clone, Default)]
pub enum LogSink {
    /// The process log, `tracing` at info, target `kvpilot::plugin`.
    #[default]
    Tracing,
    /// Kept in memory (at most 1000 lines) for the caller to show.
    Collect(Collected),
    /// Dropped.
    Off,
}

/// Lines a [`LogSink::Collect`] kept. Cheap to clone; clones share the lines.
#[derive(Debug, Clone, Default)]
pub struct Collected(Arc<Mutex<Vec<LogLine>>>);

impl Collected {
    /// Every line collected so far, emptied.
    pub fn take(&self) -> Vec<LogLine> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl LogSink {
    /// A sink that collects, and the handle to read it.
    pub fn collect() -> (LogSink, Collected) {
        let collected = Collected::default();
        (LogSink::Collect(collected.clone()), collected)
    }

    fn emit(&self, line: LogLine) {
        match self {
            LogSink::Tracing => tracing::info!(
                target: "kvpilot::plugin",
                plugin = %line.plugin,
                hook = %line.hook,
                cluster = %line.cluster,
                "{}",
                line.line
            ),
            LogSink::Collect(collected) => {
                let mut lines = collected.0.lock().unwrap_or_else(PoisonError::into_inner);
                if lines.len() < COLLECTED_LINES {
                    lines.push(line);
                }
            }
            LogSink::Off => {}
        }
    }
}

/// The lines of one call's stderr: cleaned and cut, blank lines and Rust's backtrace hint
/// left out, at most [`LINES_PER_CALL`] (the last); and how many were left out for that bound.
pub(crate) fn split(stderr: &str) -> (Vec<String>, usize) {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
        .collect();
    let skipped = lines.len().saturating_sub(LINES_PER_CALL);
    let kept = lines[skipped..]
        .iter()
        .map(|l| text::clean(l, LINE_BYTES))
        .collect();
    (kept, skipped)
}

/// The per-component bucket of lines.
#[derive(Debug)]
pub(crate) struct RateLimit {
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
    /// Lines dropped since the last line that went out.
    dropped: u64,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            state: Mutex::new(Bucket {
                tokens: f64::from(LINES_PER_MINUTE),
                refilled: Instant::now(),
                dropped: 0,
            }),
        }
    }
}

impl RateLimit {
    /// How many of `wanted` lines may go out now, and how many were dropped before them (to
    /// be said once); `skipped` lines were already left out by the per-call bound.
    fn admit(&self, wanted: usize, skipped: usize, now: Instant) -> (usize, u64) {
        let mut b = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let per_second = f64::from(LINES_PER_MINUTE) / 60.0;
        let elapsed = now.saturating_duration_since(b.refilled).as_secs_f64();
        b.tokens = (b.tokens + elapsed * per_second).min(f64::from(LINES_PER_MINUTE));
        b.refilled = now;
        b.dropped += skipped as u64;
        let allowed = (b.tokens.floor() as usize).min(wanted);
        b.tokens -= allowed as f64;
        b.dropped += (wanted - allowed) as u64;
        if allowed == 0 {
            return (0, 0);
        }
        (allowed, std::mem::take(&mut b.dropped))
    }
}

/// Sends one call's stderr to `sink`, attributed, within the per-call and per-minute bounds.
pub(crate) fn publish(
    sink: &LogSink,
    limit: &RateLimit,
    stderr: Option<&str>,
    plugin: &str,
    hook: Hook,
    cluster: &str,
) {
    if matches!(sink, LogSink::Off) {
        return;
    }
    let Some(stderr) = stderr else { return };
    let (lines, skipped) = split(stderr);
    let (allowed, dropped) = limit.admit(lines.len(), skipped, Instant::now());
    if allowed == 0 {
        return;
    }
    let attributed = |line: String| LogLine {
        plugin: text::one_line(plugin, text::NAME_BYTES),
        hook,
        cluster: text::one_line(cluster, text::NAME_BYTES),
        line,
    };
    if dropped > 0 {
        sink.emit(attributed(format!(
            "[{dropped} earlier lines dropped: at most {LINES_PER_CALL} per call and {LINES_PER_MINUTE} per minute]"
        )));
    }
    // The last lines of the call: those nearest its end (or its panic).
    let skip = lines.len() - allowed;
    for line in lines.into_iter().skip(skip) {
        sink.emit(attributed(line));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn lines_are_cleaned_cut_and_the_last_kept() {
        let (lines, skipped) =
            split("one\n\n\u{1b}[31mred\u{1b}[0m\nnote: run with `RUST_BACKTRACE=1` x\n");
        assert_eq!(lines, ["one", " [31mred [0m"]);
        assert_eq!(skipped, 0);
        let flood: String = (0..50).map(|i| format!("line {i}\n")).collect();
        let (lines, skipped) = split(&format!("{flood}thread panicked at x.rs\n"));
        assert_eq!((lines.len(), skipped), (LINES_PER_CALL, 31));
        assert_eq!(
            lines.last().map(String::as_str),
            Some("thread panicked at x.rs")
        );
        let (lines, _) = split(&"y".repeat(10_000));
        assert!(lines[0].len() < LINE_BYTES + 40 && lines[0].ends_with("more bytes]"));
    }

    #[test]
    fn the_bucket_bounds_lines_per_minute_and_counts_the_dropped() {
        let limit = RateLimit::default();
        let start = Instant::now();
        let per_call = LINES_PER_CALL;
        let mut out = 0;
        for _ in 0..100 {
            out += limit.admit(per_call, 0, start).0;
        }
        assert_eq!(
            out, LINES_PER_MINUTE as usize,
            "a burst is bounded by the bucket"
        );
        assert_eq!(limit.admit(1, 0, start), (0, 0), "empty");
        // Half a minute later, half the bucket is back; the drops are said once.
        let later = start + Duration::from_secs(30);
        let dropped = (100 * per_call - LINES_PER_MINUTE as usize + 1) as u64;
        assert_eq!(limit.admit(per_call, 0, later), (per_call, dropped));
        assert_eq!(limit.admit(1, 0, later), (1, 0));
    }
}
