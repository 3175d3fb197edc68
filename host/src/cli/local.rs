//! `kvpilot local up|down|kill|pause|status`: run a group of real server processes on
//! loopback, and break it on purpose.

use crate::decide::Settings;
use crate::platform::local::{LocalCluster, PID_FILE, STATUS_FILE, lock, member_dir, server};
use crate::status::ClusterStatus;
use clap::Subcommand;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// How long `local down` waits (in 100 ms steps) for a running `local up` to stop its members.
const DOWN_WAIT_STEPS: u32 = 300;

#[derive(Debug, Subcommand)]
pub enum LocalCommand {
    /// Start (or adopt) the group described by a KvCluster manifest and reconcile until Ctrl-C.
    Up {
        /// The KvCluster manifest (YAML). Edit it while running to roll the group.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Where members keep their data and state.
        #[arg(long, default_value = ".kvpilot")]
        state_dir: PathBuf,
        /// Address of the primary endpoint (first run only; later runs reuse it).
        #[arg(long)]
        endpoint: Option<SocketAddr>,
        /// A file holding the password members require from clients and each other (one
        /// line; a trailing newline is ignored). A group keeps the password it was first
        /// started with.
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Stop every member of a group and the `local up` that runs it.
    Down {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        #[arg(long, default_value = ".kvpilot")]
        state_dir: PathBuf,
    },
    /// Send a signal to one member's server process (default SIGKILL: a crash), to try a
    /// failover.
    Kill {
        /// The member, e.g. `cache-0` (see `kvpilot local status`).
        member: String,
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        #[arg(long, default_value = ".kvpilot")]
        state_dir: PathBuf,
        /// KILL, TERM, INT, HUP, QUIT, STOP or CONT (with or without `SIG`).
        #[arg(long, default_value = "KILL")]
        signal: String,
    },
    /// Freeze one member (SIGSTOP) for a while, then resume it (SIGCONT): a hung primary.
    /// Ctrl-C resumes it at once.
    Pause {
        /// The member, e.g. `cache-0`.
        member: String,
        /// How long: `500ms`, `10s`, `2m` (at most 10 minutes).
        duration: String,
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        #[arg(long, default_value = ".kvpilot")]
        state_dir: PathBuf,
    },
    /// Show members, roles, offsets, revisions, hook failures and the last decisions.
    Status {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        #[arg(long, default_value = ".kvpilot")]
        state_dir: PathBuf,
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cmd: LocalCommand) -> Result<ExitCode, String> {
    match cmd {
        LocalCommand::Up {
            file,
            state_dir,
            endpoint,
            password_file,
        } => {
            let password = password_file.as_deref().map(read_password).transpose()?;
            up(&file, &state_dir, endpoint, password).await
        }
        LocalCommand::Down { file, state_dir } => down(&file, &state_dir).await,
        LocalCommand::Kill {
            member,
            file,
            state_dir,
            signal,
        } => kill(&file, &state_dir, &member, &signal),
        LocalCommand::Pause {
            member,
            duration,
            file,
            state_dir,
        } => pause(&file, &state_dir, &member, &duration).await,
        LocalCommand::Status {
            file,
            state_dir,
            json,
        } => status(&file, &state_dir, json),
    }
}

fn group_dir(file: &Path, state_dir: &Path) -> Result<PathBuf, String> {
    crate::platform::local::group_dir(file, state_dir).map_err(|e| e.to_string())
}

/// The password in `path`: its first line, which must not be empty. It is passed to the
/// servers on their command line, so it cannot hold a line break either.
fn read_password(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let password = text.strip_suffix('\n').unwrap_or(&text);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        return Err(format!("{}: the password is empty", path.display()));
    }
    if password.contains(['\n', '\r']) {
        return Err(format!(
            "{}: the password must be a single line",
            path.display()
        ));
    }
    Ok(password.to_string())
}

async fn up(
    file: &Path,
    state_dir: &Path,
    endpoint: Option<SocketAddr>,
    password: Option<String>,
) -> Result<ExitCode, String> {
    let mut cluster = LocalCluster::open(file, state_dir, endpoint, password, Settings::default())
        .await
        .map_err(|e| e.to_string())?;
    // `open` took the group's lock (PID_FILE, with this pid in it) or refused to run.
    let dir = cluster.platform().dir().to_path_buf();
    // Cluster mode has no primary endpoint: clients start from any member and follow
    // MOVED/ASK.
    let entry = if cluster.platform().cluster_mode() {
        let seeds: Vec<String> = cluster
            .platform()
            .member_addrs()
            .iter()
            .map(|a| a.to_string())
            .collect();
        format!("cluster mode, seeds {}", seeds.join(" "))
    } else {
        format!("primary endpoint {}", cluster.endpoint())
    };
    println!(
        "kvpilot local: group {} — {entry} — state in {} (Ctrl-C or `kvpilot local down -f {}` to stop)",
        cluster.reconciler.name,
        dir.display(),
        file.display()
    );
    cluster
        .run_until(crate::shutdown::signal(), Duration::from_secs(1))
        .await;
    println!("stopping members…");
    // The lock goes with `cluster`, after the members: `local down` waits for it before it
    // stops leftovers itself.
    cluster.shutdown().await.map_err(|e| e.to_string())?;
    println!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn down(file: &Path, state_dir: &Path) -> Result<ExitCode, String> {
    // The manifest may not parse any more (it was being edited): the group is found anyway.
    let dir = group_dir(file, state_dir)?;
    // Ask a running `local up` to stop (it stops the members itself). Only a pid whose run
    // holds the group's lock is signalled: one left by a killed run may be another process.
    let held = |dir: &Path| {
        lock::holder(dir).map_err(|e| format!("{}: {e}", dir.join(PID_FILE).display()))
    };
    if let Some(pid) = held(&dir)? {
        if let Some(pid) = pid
            .and_then(|p| i32::try_from(p).ok())
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        for _ in 0..DOWN_WAIT_STEPS {
            if held(&dir)?.is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if let Some(pid) = held(&dir)? {
            return Err(format!(
                "the `kvpilot local up` of {} (pid {}) did not stop within {} s; its members \
                 were left alone",
                dir.display(),
                pid.map_or_else(|| "unknown".into(), |p| p.to_string()),
                DOWN_WAIT_STEPS / 10
            ));
        }
    }
    // Members left behind (the runner was killed): stop them directly.
    let members = dir.join("members");
    let mut stopped = 0;
    if let Ok(entries) = std::fs::read_dir(&members) {
        for entry in entries.flatten() {
            if let Ok(mut server) = crate::platform::local::server::Server::adopt(&entry.path()) {
                server
                    .terminate(crate::platform::local::STOP_GRACE)
                    .await
                    .map_err(|e| e.to_string())?;
                stopped += 1;
            }
        }
    }
    println!(
        "group in {} is down ({stopped} leftover members stopped)",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The longest `local pause`.
const MAX_PAUSE: Duration = Duration::from_secs(600);

/// A signal by name: `KILL` or `SIGKILL`, any case.
fn parse_signal(name: &str) -> Result<(rustix::process::Signal, &'static str), String> {
    use rustix::process::Signal;
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    Ok(match bare {
        "KILL" => (Signal::KILL, "SIGKILL"),
        "TERM" => (Signal::TERM, "SIGTERM"),
        "INT" => (Signal::INT, "SIGINT"),
        "HUP" => (Signal::HUP, "SIGHUP"),
        "QUIT" => (Signal::QUIT, "SIGQUIT"),
        "STOP" => (Signal::STOP, "SIGSTOP"),
        "CONT" => (Signal::CONT, "SIGCONT"),
        _ => {
            return Err(format!(
                "--signal: unknown signal `{}` (KILL, TERM, INT, HUP, QUIT, STOP or CONT)",
                crate::policy::text::one_line(name, 32)
            ));
        }
    })
}

/// `500ms`, `10s`, `2m`: at least 1 ms, at most [`MAX_PAUSE`].
fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, unit) = t
        .find(|c: char| !c.is_ascii_digit())
        .map_or((t, ""), |i| t.split_at(i));
    let n: u64 = number.parse().map_err(|_| {
        format!(
            "duration: `{}` is not a number with a unit (500ms, 10s, 2m)",
            crate::policy::text::one_line(text, 32)
        )
    })?;
    let duration = match unit {
        "ms" => Duration::from_millis(n),
        "s" | "" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        other => {
            return Err(format!(
                "duration: unknown unit `{}` (ms, s or m)",
                crate::policy::text::one_line(other, 16)
            ));
        }
    };
    if duration.is_zero() || duration > MAX_PAUSE {
        return Err(format!(
            "duration: {duration:?} is outside 1 ms to {} minutes",
            MAX_PAUSE.as_secs() / 60
        ));
    }
    Ok(duration)
}

/// The running server of `member` in the group of `file` (its recorded process, checked to be
/// the same process that was started).
fn member_server(
    file: &Path,
    state_dir: &Path,
    member: &str,
) -> Result<crate::platform::local::server::Server, String> {
    let dir = group_dir(file, state_dir)?;
    let known = dir.join("members");
    let names: Vec<String> = std::fs::read_dir(&known)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if !names.iter().any(|n| n == member) {
        let mut names = names;
        names.sort();
        return Err(format!(
            "no member `{}` in {} (members: {})",
            crate::policy::text::one_line(member, crate::policy::text::NAME_BYTES),
            dir.display(),
            if names.is_empty() {
                "none; is the group up?".to_string()
            } else {
                names.join(", ")
            }
        ));
    }
    crate::platform::local::server::Server::adopt(&member_dir(&dir, member))
        .map_err(|e| format!("{member}: {e}"))
}

fn kill(file: &Path, state_dir: &Path, member: &str, signal: &str) -> Result<ExitCode, String> {
    let (signal, name) = parse_signal(signal)?;
    let server = member_server(file, state_dir, member)?;
    server.send(signal, name).map_err(|e| e.to_string())?;
    println!("sent {name} to {member} (pid {})", server.pid());
    Ok(ExitCode::SUCCESS)
}

async fn pause(
    file: &Path,
    state_dir: &Path,
    member: &str,
    duration: &str,
) -> Result<ExitCode, String> {
    let duration = parse_duration(duration)?;
    let server = member_server(file, state_dir, member)?;
    server.pause().map_err(|e| e.to_string())?;
    println!(
        "paused {member} (pid {}, SIGSTOP) for {duration:?}; Ctrl-C resumes it now",
        server.pid()
    );
    let interrupted = tokio::select! {
        () = tokio::time::sleep(duration) => false,
        () = crate::shutdown::signal() => true,
    };
    server.resume().map_err(|e| e.to_string())?;
    println!(
        "resumed {member} (SIGCONT){}",
        if interrupted { ", interrupted" } else { "" }
    );
    Ok(ExitCode::SUCCESS)
}

fn status(file: &Path, state_dir: &Path, json: bool) -> Result<ExitCode, String> {
    let dir = group_dir(file, state_dir)?;
    let path = dir.join(STATUS_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "{}: {e} (is `kvpilot local up -f {}` running?)",
            path.display(),
            file.display()
        )
    })?;
    let mut status: ClusterStatus =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let reconciler = match lock::holder(&dir) {
        Ok(Some(pid)) => Reconciler::Running { pid },
        Ok(None) => Reconciler::Stopped,
        Err(e) => return Err(format!("{}: {e}", dir.join(PID_FILE).display())),
    };
    if reconciler == Reconciler::Stopped {
        mark_stale(&mut status);
    }
    let pids = member_pids(&dir, &status);
    if json {
        let mut value = serde_json::to_value(&status).map_err(|e| e.to_string())?;
        if let Some(members) = value.get_mut("members").and_then(|m| m.as_array_mut()) {
            for member in members {
                let pid = member
                    .get("name")
                    .and_then(|n| n.as_str())
                    .and_then(|n| pids.get(n).copied());
                if let Some(member) = member.as_object_mut() {
                    member.insert("pid".into(), serde_json::json!(pid));
                }
            }
        }
        if let Some(map) = value.as_object_mut() {
            map.insert(
                "reconciler".into(),
                match reconciler {
                    Reconciler::Running { pid } => {
                        serde_json::json!({"running": true, "pid": pid})
                    }
                    Reconciler::Stopped => serde_json::json!({"running": false}),
                },
            );
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?
        );
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", render_with_pids(&status, reconciler, &pids));
    Ok(ExitCode::SUCCESS)
}

/// The pid of each member of `status` whose recorded process still runs (for `kill -STOP`
/// and friends while trying a failover).
fn member_pids(dir: &Path, status: &ClusterStatus) -> BTreeMap<String, u32> {
    status
        .members
        .iter()
        .filter_map(|m| {
            server::running_pid(&member_dir(dir, &m.name)).map(|pid| (m.name.clone(), pid))
        })
        .collect()
}

/// Whether a `kvpilot local up` runs the group (it holds the group's lock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconciler {
    Running { pid: Option<u32> },
    Stopped,
}

/// The reason of the conditions of a group whose reconciler does not run.
pub const NOT_RUNNING: &str = "ReconcilerNotRunning";

/// A status file nobody updates any more: what it says was true at its last reconcile, but
/// nothing watches the members now, so it must not read as Ready. Every condition turns
/// False, saying so and when the last reconcile was.
pub fn mark_stale(status: &mut ClusterStatus) {
    let when = if status.updated_ms == 0 {
        "never".to_string()
    } else {
        format!(
            "{} UTC",
            utc(i64::try_from(status.updated_ms / 1000).unwrap_or(i64::MAX))
        )
    };
    for c in &mut status.conditions {
        c.message = format!(
            "no `kvpilot local up` runs for this group: nothing watches or heals it (it said \
             {} {}: {} at its last reconcile, {when})",
            c.kind,
            if c.status { "True" } else { "False" },
            c.reason
        );
        c.status = false;
        c.reason = NOT_RUNNING.to_string();
    }
}

/// The human status table, saying first when no reconciler runs the group.
pub fn render(s: &ClusterStatus, reconciler: Reconciler) -> String {
    render_with_pids(s, reconciler, &BTreeMap::new())
}

/// [`render`], with the pids of the members' running processes (`-` for the others).
pub fn render_with_pids(
    s: &ClusterStatus,
    reconciler: Reconciler,
    pids: &BTreeMap<String, u32>,
) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if reconciler == Reconciler::Stopped {
        let _ = writeln!(
            out,
            "reconciler: NOT RUNNING (start it with `kvpilot local up`); the status below is \
             from its last reconcile"
        );
    }
    let _ = writeln!(
        out,
        "primary: {}   desired revision: {}",
        s.primary.as_deref().unwrap_or("-"),
        s.desired_revision
    );
    let _ = writeln!(
        out,
        "{:<12} {:>8} {:<21} {:<8} {:<6} {:<13} {:>12} {:>10}",
        "MEMBER", "PID", "ADDRESS", "ROLE", "READY", "REVISION", "OFFSET", "KEYS"
    );
    for m in &s.members {
        let _ = writeln!(
            out,
            "{:<12} {:>8} {:<21} {:<8} {:<6} {:<13} {:>12} {:>10}",
            m.name,
            pids.get(&m.name)
                .map_or_else(|| "-".to_string(), |p| p.to_string()),
            m.address,
            m.role,
            if m.ready { "yes" } else { "no" },
            m.revision.as_deref().unwrap_or("-"),
            m.offset,
            m.keys
        );
    }
    if let Some(c) = &s.cluster {
        let _ = writeln!(
            out,
            "cluster mode: {}/{} shards ready; seeds (a cluster client follows MOVED/ASK from \
             any): {}",
            c.shards_ready,
            c.shards.len(),
            c.seeds.join(" ")
        );
        let _ = writeln!(
            out,
            "  {:<6} {:<16} {:<6} {:<6} {:<7} {:<14} NODES",
            "SHARD", "PRIMARY", "READY", "STATE", "EPOCH", "SLOTS"
        );
        for sh in &c.shards {
            let nodes: Vec<String> = sh
                .nodes
                .iter()
                .map(|n| format!("{}={}", n.member, n.node_id))
                .collect();
            let _ = writeln!(
                out,
                "  {:<6} {:<16} {:<6} {:<6} {:<7} {:<14} {}",
                sh.shard,
                sh.primary.as_deref().unwrap_or("-"),
                if sh.ready { "yes" } else { "no" },
                sh.cluster_state,
                sh.config_epoch,
                if sh.slots.is_empty() {
                    "-".to_string()
                } else {
                    sh.slots.join(",")
                },
                nodes.join(" ")
            );
        }
    }
    // Rule 7: a demoted primary whose clients are not confirmed disconnected yet.
    let pending: Vec<&str> = s
        .members
        .iter()
        .filter(|m| m.last_known.as_ref().is_some_and(|k| k.fence_pending))
        .map(|m| m.name.as_str())
        .collect();
    if !pending.is_empty() {
        let _ = writeln!(
            out,
            "fence pending (retried every reconcile): {}",
            pending.join(", ")
        );
    }
    if s.members.iter().any(|m| m.snapshot_schedule.is_some()) {
        let _ = writeln!(out, "snapshots:");
        let _ = writeln!(
            out,
            "  {:<12} {:<18} {:<22} {:<7} {:<22} STATE",
            "MEMBER", "SCHEDULE", "LAST (UTC)", "RESULT", "NEXT (UTC)"
        );
        for m in &s.members {
            // Due: the next time has passed and the member waits for its turn.
            let state = match (m.snapshot_due, m.snapshot_retrying) {
                (true, _) => "due",
                (false, true) => "retrying",
                (false, false) => "",
            };
            let _ = writeln!(
                out,
                "  {:<12} {:<18} {:<22} {:<7} {:<22} {}",
                m.name,
                m.snapshot_schedule.as_deref().unwrap_or("-"),
                m.last_snapshot_unix.map(utc).unwrap_or_else(|| "-".into()),
                match m.last_snapshot_ok {
                    Some(true) => "ok",
                    Some(false) => "failed",
                    None => "-",
                },
                m.next_snapshot_unix.map(utc).unwrap_or_else(|| "-".into()),
                state,
            );
        }
    }
    let _ = writeln!(out, "conditions:");
    for c in &s.conditions {
        let _ = writeln!(
            out,
            "  {:<15} {:<5} {:<12} {}",
            c.kind, c.status, c.reason, c.message
        );
    }
    // Hook failures: failed calls and hooks that could not be bound (their events).
    let failures: Vec<_> = s
        .events
        .iter()
        .filter(|e| matches!(e.reason.as_str(), "PolicyFailed" | "PolicyFallback"))
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(out, "hook failures:");
        for e in failures.iter().rev().take(5) {
            let _ = writeln!(
                out,
                "  {:<19} {:<14} {}",
                utc(i64::try_from(e.time_ms / 1000).unwrap_or(i64::MAX)),
                e.reason,
                e.message
            );
        }
    }
    let _ = writeln!(out, "last decisions:");
    for d in s.last_decisions.iter().rev().take(5) {
        let _ = writeln!(
            out,
            "  {:<19} {:<18} {:<26} {:>6} µs  {}",
            utc(i64::try_from(d.time_ms / 1000).unwrap_or(i64::MAX)),
            d.decision.hook.as_str(),
            d.decision.plugin,
            d.decision.latency.as_micros(),
            d.decision.answer
        );
    }
    out
}

/// `YYYY-MM-DD HH:MM:SS` in UTC.
fn utc(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = kvpilot_sdk::cron::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::{History, KnownRole, LastKnown};
    use crate::status::MemberStatus;

    #[test]
    fn a_pending_fence_is_shown_until_it_succeeds() {
        let known = |fence_pending| LastKnown {
            role: KnownRole::Replica,
            history: History::default(),
            keys: 3,
            started_unix: None,
            fence_pending,
        };
        let mut s = ClusterStatus {
            members: vec![
                MemberStatus::remembered("kv-0", Some(known(true))),
                MemberStatus::remembered("kv-1", Some(known(false))),
            ],
            ..Default::default()
        };
        let text = render(&s, Reconciler::Running { pid: None });
        assert!(
            text.contains("fence pending (retried every reconcile): kv-0\n"),
            "{text}"
        );
        s.fence_done(&["kv-0".to_string()]);
        assert!(!render(&s, Reconciler::Running { pid: None }).contains("fence pending"));
    }

    #[test]
    fn members_show_their_pid_and_decisions_their_time_and_plugin() {
        use crate::policy::{DecisionRecord, Hook};
        use crate::status::TimedDecision;
        let s = ClusterStatus {
            members: vec![
                MemberStatus::remembered("kv-0", None),
                MemberStatus::remembered("kv-1", None),
            ],
            last_decisions: vec![TimedDecision {
                decision: DecisionRecord::new(
                    Hook::ReplicaSelection,
                    "/lab/picker.wasm",
                    "ab".repeat(32),
                    &kvpilot_sdk::Selection::Promote("kv-1".into()),
                    None::<&()>,
                    std::time::Duration::from_micros(250),
                    None,
                ),
                time_ms: 1_700_000_000_123,
            }],
            ..Default::default()
        };
        let pids = BTreeMap::from([("kv-1".to_string(), 4242)]);
        let text = render_with_pids(&s, Reconciler::Running { pid: None }, &pids);
        let row = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("{name} in {text}"))
                .split_whitespace()
                .nth(1)
                .map(str::to_string)
        };
        assert_eq!(row("kv-0").as_deref(), Some("-"), "{text}");
        assert_eq!(row("kv-1").as_deref(), Some("4242"), "{text}");
        let decision = text
            .lines()
            .find(|l| l.contains("replica-selection"))
            .unwrap_or_else(|| panic!("a decision line in {text}"));
        assert!(
            decision.contains("2023-11-14 22:13:20")
                && decision.contains("/lab/picker.wasm")
                && decision.contains(r#"{"promote":"kv-1"}"#),
            "{decision}"
        );
        assert!(!text.contains("hook failures:"), "none yet: {text}");
    }

    #[test]
    fn hook_failures_are_shown_newest_first() {
        let mut s = ClusterStatus::default();
        s.event(1_700_000_000_000, false, "PolicyDecision", "fine".into());
        s.event(
            1_700_000_001_000,
            true,
            "PolicyFailed",
            "replica-selection: trapped \u{1b}[2J".into(),
        );
        s.event(
            1_700_000_002_000,
            true,
            "PolicyFallback",
            "rollout-order: config refused".into(),
        );
        let text = render(&s, Reconciler::Running { pid: None });
        let section: Vec<&str> = text
            .lines()
            .skip_while(|l| *l != "hook failures:")
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .collect();
        assert_eq!(section.len(), 2, "{text}");
        assert!(section[0].contains("PolicyFallback") && section[0].contains("config refused"));
        assert!(
            section[1].contains("2023-11-14 22:13:21")
                && section[1].contains("trapped")
                && !section[1].contains('\u{1b}'),
            "{text}"
        );
    }

    #[test]
    fn signals_and_durations_are_parsed_or_refused_naming_the_argument() {
        assert_eq!(parse_signal("kill").map(|s| s.1), Ok("SIGKILL"));
        assert_eq!(parse_signal("SIGSTOP").map(|s| s.1), Ok("SIGSTOP"));
        assert!(parse_signal("SIGWHAT").is_err_and(|e| e.starts_with("--signal: ")));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        for bad in ["", "0s", "11m", "5h", "x"] {
            assert!(
                parse_duration(bad).is_err_and(|e| e.starts_with("duration: ")),
                "{bad}"
            );
        }
    }
}
