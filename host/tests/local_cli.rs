//! `kvpilot local up|status|down` as a user runs them: the real binary against real
//! `valkey-server` members, killed at the moments that used to leave a group in a bad state.

#[path = "hostile/built.rs"]
mod built;
mod support;

use kvpilot::platform::local::server::ServerGuard;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Longest wait for a group to become Ready, or a process to go.
const LIMIT: Duration = Duration::from_secs(60);

fn kvpilot() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kvpilot"))
}

/// One test's files: a manifest, a state directory, and a guard that kills every member
/// recorded under it when the test ends (also on panic).
struct Bed {
    dir: tempfile::TempDir,
    manifest: PathBuf,
    state: PathBuf,
    name: String,
    _guard: ServerGuard,
}

impl Bed {
    fn new(name: &str, image: Option<&Path>) -> Bed {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        let guard = ServerGuard::new();
        guard.track_dir(&state);
        let manifest = dir.path().join("cluster.yaml");
        let image = image
            .map(|p| format!("    image: {}\n", p.display()))
            .unwrap_or_default();
        std::fs::write(
            &manifest,
            format!(
                "apiVersion: kvpilot.dev/v1alpha1\nkind: KvCluster\nmetadata:\n  name: {name}\n\
                 spec:\n  engine:\n    kind: valkey\n{image}  replicas: 1\n"
            ),
        )
        .expect("write the manifest");
        Bed {
            dir,
            manifest,
            state,
            name: name.to_string(),
            _guard: guard,
        }
    }

    fn args<'a>(&'a self, verb: &'a str) -> Vec<&'a str> {
        vec![
            "local",
            verb,
            "-f",
            self.manifest.to_str().expect("UTF-8 path"),
            "--state-dir",
            self.state.to_str().expect("UTF-8 path"),
        ]
    }

    /// `kvpilot local up` in the background.
    fn up(&self) -> Up {
        let child = kvpilot()
            .args(self.args("up"))
            .env("KVPILOT_TEST_MARKERS", self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kvpilot local up");
        Up { child }
    }

    fn run(&self, verb: &str, extra: &[&str]) -> Output {
        let mut args = self.args(verb);
        args.extend_from_slice(extra);
        kvpilot().args(args).output().expect("run kvpilot")
    }

    /// `local status --json`, parsed.
    fn status(&self) -> Option<Value> {
        let out = self.run("status", &["--json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).expect("status JSON"))
    }

    fn status_text(&self) -> String {
        let out = self.run("status", &[]);
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Polls `local status --json` until the group is Ready (bounded).
    fn wait_ready(&self) -> Value {
        self.wait_ready_after(0)
    }

    /// [`Bed::wait_ready`], from a reconcile after `after_ms` (Unix ms).
    fn wait_ready_after(&self, after_ms: u64) -> Value {
        let started = Instant::now();
        let mut last = None;
        while started.elapsed() < LIMIT {
            if let Some(status) = self.status() {
                let fresh = status["updatedMs"].as_u64().is_some_and(|t| t > after_ms);
                if fresh && ready(&status) == Some(true) {
                    return status;
                }
                last = Some(status);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("{} not Ready within {LIMIT:?}: {last:#?}", self.name);
    }

    /// The pids the members' state files record.
    fn member_pids(&self) -> Vec<u32> {
        let members = self.state.join(&self.name).join("members");
        std::fs::read_dir(&members)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| std::fs::read(e.path().join("member.json")).ok())
                    .filter_map(|b| serde_json::from_slice::<Value>(&b).ok())
                    .filter_map(|v| v["pid"].as_u64())
                    .map(|p| p as u32)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A running `local up`, killed when dropped.
struct Up {
    child: Child,
}

impl Up {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn sigkill(&mut self) {
        self.child.kill().expect("SIGKILL local up");
        self.child.wait().expect("reap local up");
    }

    /// Waits (bounded) for it to exit; its exit status.
    fn exited(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The status of the Ready condition in a status JSON.
fn ready(status: &Value) -> Option<bool> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?["status"]
        .as_bool()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn alive(pid: u32) -> bool {
    // A zombie has no command line left: it no longer runs.
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
}

fn wait_dead(pids: &[u32]) -> Vec<u32> {
    let started = Instant::now();
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if left.is_empty() || started.elapsed() > Duration::from_secs(20) {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn one_local_up_per_group_and_status_and_down_after_a_crash() {
    let bed = Bed::new("lockedgroup", None);
    let mut first = bed.up();
    let status = bed.wait_ready();
    assert_eq!(
        status["reconciler"],
        serde_json::json!({"running": true, "pid": first.pid()})
    );
    assert!(!bed.status_text().contains("NOT RUNNING"));

    // A second run on the same state directory is refused, naming the first one's pid.
    let mut second = bed.up();
    let exit = second
        .exited(Duration::from_secs(20))
        .expect("the second `local up` exits by itself");
    assert!(!exit.success());
    let mut message = String::new();
    use std::io::Read;
    second
        .child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut message)
        .expect("read stderr");
    assert!(
        message.contains(&format!("already running (pid {})", first.pid())),
        "{message}"
    );
    assert_eq!(
        ready(&bed.wait_ready()),
        Some(true),
        "the first run is untouched"
    );

    // Killed: the status file stays, but no longer reads as Ready.
    first.sigkill();
    let stale = bed.status().expect("status after the crash");
    assert_eq!(stale["reconciler"], serde_json::json!({"running": false}));
    assert_eq!(ready(&stale), Some(false), "{stale:#}");
    let reasons: Vec<&str> = stale["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["reason"].as_str())
        .collect();
    assert!(
        reasons.iter().all(|r| *r == "ReconcilerNotRunning"),
        "{reasons:?}"
    );
    let text = bed.status_text();
    assert!(text.contains("reconciler: NOT RUNNING"), "{text}");
    let ready_line = text
        .lines()
        .find(|l| l.trim_start().starts_with("Ready "))
        .expect("a Ready line");
    assert!(
        !ready_line.contains("true") && ready_line.contains("ReconcilerNotRunning"),
        "{text}"
    );

    // The killed run's lock is not stale: a new run starts and adopts the members.
    let members = bed.member_pids();
    assert_eq!(members.len(), 2, "two members recorded");
    let restarted_ms = now_ms();
    let third = bed.up();
    let status = bed.wait_ready_after(restarted_ms);
    assert_eq!(status["reconciler"]["pid"], third.pid());
    let mut adopted = bed.member_pids();
    adopted.sort();
    let mut before = members.clone();
    before.sort();
    assert_eq!(adopted, before, "the same member processes, adopted");

    // `local down` works while the manifest does not parse at all (half-edited).
    std::fs::write(
        &bed.manifest,
        "kind: KvCluster\nmetadata: {name: [unclosed\n",
    )
    .unwrap();
    let down = bed.run("down", &[]);
    assert!(down.status.success(), "down: {}", stderr(&down));
    let mut third = third;
    assert!(
        third.exited(LIMIT).is_some(),
        "`local up` stops when `local down` asks"
    );
    assert_eq!(
        wait_dead(&members),
        Vec::<u32>::new(),
        "every member stopped"
    );
}

#[test]
fn down_and_status_find_the_group_when_the_spec_no_longer_parses_as_a_kvcluster() {
    let bed = Bed::new("halfedited", None);
    let up = bed.up();
    bed.wait_ready();
    let members = bed.member_pids();
    // Valid YAML, invalid manifest: the name is still read.
    std::fs::write(
        &bed.manifest,
        "apiVersion: kvpilot.dev/v1alpha1\nkind: KvCluster\nmetadata:\n  name: halfedited\n\
         spec:\n  replicas: many\n",
    )
    .unwrap();
    let status = bed.status().expect("status with an invalid manifest");
    assert_eq!(status["reconciler"]["pid"], up.pid());
    let down = bed.run("down", &[]);
    assert!(down.status.success(), "down: {}", stderr(&down));
    assert_eq!(wait_dead(&members), Vec::<u32>::new());
    drop(up);
}

/// A server binary that takes its time to start: it records its pid in
/// `$KVPILOT_TEST_MARKERS/started.<pid>`, sleeps, then becomes `valkey-server` (same pid).
fn slow_server(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let valkey = support::binary("valkey-server");
    let path = dir.join("slow-valkey");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\n\
             if [ \"$1\" = --version ]; then exec {valkey} --version; fi\n\
             echo $$ > \"$KVPILOT_TEST_MARKERS/started.$$\"\n\
             sleep 3\n\
             exec {valkey} \"$@\"\n",
            valkey = valkey.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The pids the slow servers recorded.
fn started(dir: &Path) -> Vec<u32> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("started.")?
                .parse()
                .ok()
        })
        .collect()
}

/// Kills (SIGKILL) the given pids that still run this test's servers, when dropped.
struct Reaper {
    pids: Vec<u32>,
    marker: PathBuf,
}

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in &self.pids {
            // Only a process that is still one of ours: it runs in a member directory under
            // our state dir (a server rewrites its command line, not its working directory).
            let ours = std::fs::read_link(format!("/proc/{pid}/cwd"))
                .is_ok_and(|cwd| cwd.starts_with(&self.marker));
            if ours
                && let Some(pid) = i32::try_from(*pid)
                    .ok()
                    .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

#[test]
fn local_up_killed_while_members_start_leaves_nothing_behind_for_down() {
    let scripts = tempfile::tempdir().unwrap();
    let bed = Bed::new("slowstart", Some(&slow_server(scripts.path())));
    let mut up = bed.up();
    // Both members are between their start and their first PING answer.
    let started_at = Instant::now();
    let pids = loop {
        let pids = started(bed.dir.path());
        if pids.len() == 2 {
            break pids;
        }
        assert!(
            started_at.elapsed() < Duration::from_secs(20),
            "the members did not start: {pids:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let _reaper = Reaper {
        pids: pids.clone(),
        marker: bed.state.clone(),
    };
    up.sigkill();
    assert!(pids.iter().all(|p| alive(*p)), "the members outlive it");

    let down = bed.run("down", &[]);
    assert!(down.status.success(), "down: {}", stderr(&down));
    let left = wait_dead(&pids);
    assert!(
        left.is_empty(),
        "`local down` left {left:?} running: a member started by the killed run was not recorded"
    );
}

/// The local lab (issue 14): a plugin named by a path relative to the manifest's folder is
/// found from there (this test runs `local up` from elsewhere), members carry the zone and
/// node of the manifest's annotations all the way into the plugin's request, and `local
/// status` shows each member's pid.
#[test]
fn a_lab_group_finds_its_plugin_beside_the_manifest_and_members_carry_their_zone() {
    let bed = Bed::new("labgroup", None);
    let plugins = bed.dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("mkdir");
    // The builtin most-caught-up component, as a file of the author's own.
    let built = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/wasm-plugins/wasm32-wasip2/release/most_caught_up.wasm");
    std::fs::copy(&built, plugins.join("picker.wasm")).expect("copy the plugin");
    // Without the zone, a tie (no writes, equal offsets) goes to the lowest ordinal; with
    // preferZone only labgroup-2 can win.
    std::fs::write(
        &bed.manifest,
        "apiVersion: kvpilot.dev/v1alpha1\nkind: KvCluster\nmetadata:\n  name: labgroup\n  \
         annotations:\n    zone.local.kvpilot.dev/labgroup-2: zone-b\n    \
         node.local.kvpilot.dev/labgroup-2: node-7\n    zone.local.kvpilot.dev/labgroup-1: zone-a\n\
         spec:\n  engine:\n    kind: valkey\n  replicas: 2\n  policies:\n    replicaSelection:\n      \
         plugin: plugins/picker.wasm\n      config: {preferZone: zone-b}\n      failurePolicy: Fail\n",
    )
    .expect("write the manifest");
    let _up = bed.up();
    let status = bed.wait_ready();

    // PIDs: the JSON and the table show each member's running process.
    let mut recorded = bed.member_pids();
    recorded.sort();
    let mut shown: Vec<u32> = status["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["pid"].as_u64().map(|p| p as u32))
        .collect();
    shown.sort();
    assert_eq!(shown, recorded, "{status:#}");
    assert_eq!(shown.len(), 3);
    let text = bed.status_text();
    assert!(text.contains(" PID "), "{text}");
    for pid in &recorded {
        assert!(text.contains(&format!(" {pid} ")), "{pid} in {text}");
    }

    // One failover: the plugin (from plugins/, with the zones in its request) must choose
    // labgroup-2, where without zones the tie would go to the lowest ordinal.
    let mut last = status;
    if last["primary"] != "labgroup-2" {
        let primary = last["primary"].as_str().unwrap_or_default().to_string();
        let pid = last["members"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["name"] == primary.as_str()))
            .and_then(|m| m["pid"].as_u64())
            .expect("the primary's pid");
        // `kvpilot local kill` (SIGKILL by default) on the recorded process.
        let out = bed.run("kill", &[&primary]);
        assert!(out.status.success(), "local kill: {}", stderr(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("sent SIGKILL to {primary} (pid {pid})")
        );
        let killed_ms = now_ms();
        let started = Instant::now();
        last = loop {
            assert!(started.elapsed() < LIMIT, "no new primary: {last:#}");
            std::thread::sleep(Duration::from_millis(200));
            if let Some(s) = bed.status()
                && s["updatedMs"].as_u64().is_some_and(|t| t > killed_ms)
                && s["primary"].is_string()
                && s["primary"] != primary.as_str()
            {
                break s;
            }
        };
        assert_eq!(last["primary"], "labgroup-2", "{last:#}");
    }
    let decisions = last["lastDecisions"].as_array().expect("decisions");
    assert!(
        decisions.iter().any(|d| d["hook"] == "replica-selection"
            && d["plugin"]
                .as_str()
                .is_some_and(|p| p.ends_with("plugins/picker.wasm"))
            && d["answer"]["promote"] == "labgroup-2"
            && d["request"]["reason"] == "primary-lost"),
        "{last:#}"
    );

    // Replay from the manifest: the same plugin with its recorded config agrees; without
    // preferZone, the tie goes elsewhere.
    let replay = |extra: &[&str]| {
        let out = kvpilot()
            .args(["policy", "replay", "builtin:most-caught-up", "--from"])
            .arg(&bed.manifest)
            .arg("--state-dir")
            .arg(&bed.state)
            .args(extra)
            .output()
            .expect("run kvpilot policy replay");
        assert!(out.status.success(), "replay: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let same = replay(&[]);
    assert!(
        same.lines().any(|l| l.starts_with("same ")
            && l.contains("replica-selection")
            && l.contains("{\"promote\":\"labgroup-2\"}")),
        "{same}"
    );
    let other = replay(&["--config", "{}"]);
    assert!(
        other.lines().any(
            |l| l.starts_with("DIFFERS") && l.contains("recorded {\"promote\":\"labgroup-2\"}")
        ),
        "{other}"
    );

    // `local kill` refuses a name that is not a member, and names the members.
    let out = bed.run("kill", &["labgroup-9"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no member `labgroup-9`") && stderr(&out).contains("labgroup-1"),
        "{}",
        stderr(&out)
    );
    let out = bed.run("kill", &["labgroup-1", "--signal", "BOGUS"]);
    assert!(!out.status.success() && stderr(&out).contains("--signal: unknown signal `BOGUS`"));

    // `local pause`: the member is stopped (SIGSTOP) while it runs, and resumed after.
    let replica = last["members"]
        .as_array()
        .and_then(|ms| {
            ms.iter()
                .find(|m| m["name"] != "labgroup-2" && m["pid"].as_u64().is_some())
        })
        .expect("a running replica");
    let (name, pid) = (
        replica["name"].as_str().expect("name").to_string(),
        replica["pid"].as_u64().expect("pid") as u32,
    );
    let mut args = bed.args("pause");
    args.insert(2, &name);
    args.insert(3, "2s");
    let mut pause = kvpilot()
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn local pause");
    let proc_state = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(") ")
                    .and_then(|(_, rest)| rest.chars().next())
            })
    };
    let started = Instant::now();
    while proc_state(pid) != Some('T') {
        assert!(started.elapsed() < LIMIT, "{name} was never stopped");
        std::thread::sleep(Duration::from_millis(20));
    }
    let done = loop {
        if let Some(done) = pause.try_wait().expect("wait") {
            break done;
        }
        if started.elapsed() > LIMIT {
            let _ = pause.kill();
            let _ = Command::new("kill")
                .args(["-CONT", &pid.to_string()])
                .status();
            panic!("local pause did not return");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(done.success());
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "resumed too early"
    );
    assert_ne!(proc_state(pid), Some('T'), "{name} still stopped");
    let down = bed.run("down", &[]);
    assert!(down.status.success(), "down: {}", stderr(&down));
}

/// The PolicyFailed condition's status in a status JSON.
fn policy_failed(status: &Value) -> Option<bool> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "PolicyFailed")?["status"]
        .as_bool()
}

/// A `.wasm` rebuilt while `local up` runs is bound again: here it is overwritten with bytes
/// that are no plugin (PolicyFailed names the hook), then restored (PolicyFailed clears),
/// without touching the manifest or restarting `local up`.
#[test]
fn a_rebuilt_plugin_file_is_picked_up_while_local_up_runs() {
    let bed = Bed::new("rebuilt", None);
    let plugin = bed.dir.path().join("picker.wasm");
    let built = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/wasm-plugins/wasm32-wasip2/release/most_caught_up.wasm");
    std::fs::copy(&built, &plugin).expect("copy the plugin");
    std::fs::write(
        &bed.manifest,
        "apiVersion: kvpilot.dev/v1alpha1\nkind: KvCluster\nmetadata:\n  name: rebuilt\n\
         spec:\n  engine:\n    kind: valkey\n  replicas: 1\n  policies:\n    replicaSelection:\n      \
         plugin: picker.wasm\n      failurePolicy: Fail\n",
    )
    .expect("write the manifest");
    let _up = bed.up();
    let status = bed.wait_ready();
    assert_eq!(policy_failed(&status), Some(false), "{status:#}");

    let wait_policy_failed = |want: bool| {
        let started = Instant::now();
        loop {
            let status = bed.status();
            if let Some(s) = &status
                && policy_failed(s) == Some(want)
            {
                return s.clone();
            }
            assert!(
                started.elapsed() < LIMIT,
                "PolicyFailed never became {want}: {status:#?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    std::fs::write(&plugin, "not a plugin any more").expect("overwrite");
    let failed = wait_policy_failed(true);
    let message = failed["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "PolicyFailed"))
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("replica-selection") && message.contains("picker.wasm"),
        "{message}"
    );
    std::fs::copy(&built, &plugin).expect("restore the plugin");
    wait_policy_failed(false);
    let down = bed.run("down", &[]);
    assert!(down.status.success(), "down: {}", stderr(&down));
}

/// Cluster mode through the binary: `local up` bootstraps three shards, `local status` shows
/// each shard's primary, slots, node ids and cluster_state and the seeds, `local down` stops
/// every member.
#[test]
fn local_up_runs_a_cluster_and_status_shows_its_shards() {
    let bed = Bed::new("shardgroup", None);
    let text = std::fs::read_to_string(&bed.manifest)
        .expect("manifest")
        .replace("  replicas: 1\n", "  replicas: 1\n  shards: 3\n");
    std::fs::write(&bed.manifest, text).expect("write the manifest");
    let _up = bed.up();
    let status = bed.wait_ready();
    let cluster = &status["cluster"];
    assert_eq!(cluster["shardsReady"], 3, "{status:#}");
    assert_eq!(cluster["seeds"].as_array().map(Vec::len), Some(6));
    let shards = cluster["shards"].as_array().expect("shards");
    assert_eq!(shards.len(), 3);
    for (i, shard) in shards.iter().enumerate() {
        assert_eq!(shard["clusterState"], "ok", "{shard:#}");
        assert_eq!(
            shard["primary"].as_str(),
            Some(format!("shardgroup-s{i}-0").as_str())
        );
        let nodes = shard["nodes"].as_array().expect("nodes");
        assert_eq!(nodes.len(), 2);
        assert!(
            nodes
                .iter()
                .all(|n| n["nodeId"].as_str().map(str::len) == Some(40))
        );
    }
    let conditions: Vec<(&str, bool)> = status["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .filter_map(|c| Some((c["type"].as_str()?, c["status"].as_bool()?)))
        .collect();
    assert!(
        conditions.contains(&("ClusterFormed", true)),
        "{conditions:?}"
    );
    assert!(
        conditions.contains(&("SlotsAssigned", true)),
        "{conditions:?}"
    );
    let text = bed.status_text();
    assert!(text.contains("3/3 shards ready"), "{text}");
    assert!(
        text.contains("0-5460") && text.contains("10923-16383"),
        "{text}"
    );
    let pids = bed.member_pids();
    assert_eq!(pids.len(), 6);
    let out = bed.run("down", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(wait_dead(&pids), Vec::<u32>::new());
}

#[test]
fn a_plugins_log_lines_show_in_the_local_up_output() {
    let bed = Bed::new("loggroup", None);
    let wasm = built::wasm_path("logger");
    std::fs::write(
        &bed.manifest,
        format!(
            "apiVersion: kvpilot.dev/v1alpha1\nkind: KvCluster\nmetadata:\n  name: loggroup\n\
             spec:\n  engine:\n    kind: valkey\n  replicas: 1\n  policies:\n    \
             replicaSelection:\n      plugin: {}\n      failurePolicy: Fail\n",
            wasm.display()
        ),
    )
    .expect("write the manifest");
    let mut up = bed.up();
    bed.wait_ready();
    // The bootstrap asks replica-selection; its decision is recorded once it is made.
    let started = Instant::now();
    loop {
        assert!(started.elapsed() < LIMIT, "no replica-selection decision");
        if bed.status().is_some_and(|s| {
            s["lastDecisions"]
                .as_array()
                .is_some_and(|ds| ds.iter().any(|d| d["hook"] == "replica-selection"))
        }) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let down = bed.run("down", &[]);
    assert!(down.status.success(), "down: {}", stderr(&down));
    assert!(up.exited(LIMIT).is_some(), "local up did not stop");
    let mut output = String::new();
    use std::io::Read;
    up.child
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut output)
        .expect("read the output");
    let line = output
        .lines()
        .find(|l| l.contains("deciding for loggroup with"))
        .unwrap_or_else(|| panic!("no plugin line in {output}"));
    assert!(
        line.contains("kvpilot::plugin")
            && line.contains("replica-selection")
            && line.contains("loggroup")
            && line.contains("hostile_logger.wasm"),
        "{line}"
    );
    // The terminal escape the plugin wrote is not passed on.
    let cleared = output
        .lines()
        .find(|l| l.contains("cleared?"))
        .unwrap_or_else(|| panic!("no second line in {output}"));
    assert!(!cleared.contains("\u{1b}[2J"), "{cleared:?}");
}
