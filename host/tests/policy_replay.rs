//! Recorded decisions and `kvpilot policy replay` (issue 14 item 4): a decision made through
//! the real wasm policies keeps its request and its answer as JSON values, in the local status
//! and in the KvCluster status; replaying them with another plugin shows where it differs.

#[path = "hostile/built.rs"]
mod built;

use kvpilot::api::{KvClusterStatus, StatusContext};
use kvpilot::policy::{Policies, PolicyRuntime, PolicySettings, WasmPolicies};
use kvpilot::status::{ClusterStatus, TimedDecision};
use kvpilot_sdk::{Cluster, Member, Role, SelectionReason, SelectionRequest};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn member(name: &str, ordinal: u32, offset: u64) -> Member {
    Member {
        name: name.into(),
        ordinal,
        role: Role::Replica,
        ready: true,
        on_desired_revision: true,
        link_up: true,
        offset,
        keys: 10,
        ..Member::default()
    }
}

/// cache-2 is further ahead: most-caught-up promotes it, the logger plugin (first candidate)
/// promotes cache-1.
fn request() -> SelectionRequest {
    SelectionRequest {
        reason: SelectionReason::PrimaryLost,
        cluster: Cluster {
            name: "cache".into(),
            namespace: "shop".into(),
            shards: 1,
            replicas_per_shard: 2,
            ..Cluster::default()
        },
        primary: None,
        candidates: vec![member("cache-1", 1, 900), member("cache-2", 2, 1000)],
        config: "{}".into(),
    }
}

/// A local status holding one real decision of the default replica-selection plugin, and a
/// rollout decision recorded too large to keep its request.
async fn local_status() -> ClusterStatus {
    let runtime = PolicyRuntime::global().expect("runtime");
    let policies = WasmPolicies::bind(&runtime, &PolicySettings::default()).await;
    let decided = policies.select_replica(request()).await.expect("decides");
    let big = kvpilot::policy::bench::rollout_request(1000);
    let rollout = policies.rollout_step(big).await.expect("decides");
    assert!(
        rollout.record.request.is_none(),
        "a 1000-member request is not kept"
    );
    ClusterStatus {
        last_decisions: vec![
            TimedDecision {
                decision: decided.record,
                time_ms: 1_764_849_600_000,
            },
            TimedDecision {
                decision: rollout.record,
                time_ms: 1_764_849_601_000,
            },
        ],
        ..ClusterStatus::default()
    }
}

fn context() -> StatusContext<'static> {
    StatusContext {
        generation: Some(1),
        previous: None,
        now: k8s_openapi::jiff::Timestamp::now(),
    }
}

fn replay(plugin: &str, from: &Path, extra: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kvpilot"))
        .args(["policy", "replay", plugin, "--from"])
        .arg(from)
        .args(extra)
        .output()
        .expect("run kvpilot");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    (stdout, stderr)
}

#[tokio::test]
async fn a_decision_keeps_its_request_and_its_answer_as_json() {
    let status = local_status().await;
    let json = serde_json::to_value(&status).expect("json");
    let d = &json["lastDecisions"][0];
    assert_eq!(
        d["answer"],
        serde_json::json!({"promote": "cache-2"}),
        "{d:#}"
    );
    assert_eq!(d["request"]["candidates"][1]["name"], "cache-2", "{d:#}");
    assert_eq!(d["request"]["reason"], "primary-lost");
    assert!(d["timeMs"].is_u64() && d["sha256"].as_str().is_some_and(|s| s.len() == 64));
    // Read back, the same JSON values.
    let back: ClusterStatus = serde_json::from_value(json.clone()).expect("reads back");
    let value = |text: &Option<String>| -> Value {
        serde_json::from_str(text.as_deref().expect("a request")).expect("json")
    };
    let (before, after) = (
        &status.last_decisions[0].decision,
        &back.last_decisions[0].decision,
    );
    assert_eq!(value(&after.request), value(&before.request));
    assert_eq!(after.answer, before.answer);
    assert_eq!(serde_json::to_value(&back).expect("json"), json);
    // In the KvCluster status too.
    let kube = KvClusterStatus::from_report(&status, &context());
    let kube = serde_json::to_value(&kube).expect("json");
    let d = &kube["lastDecisions"][0];
    assert_eq!(d["answer"]["promote"], "cache-2", "{d:#}");
    assert_eq!(d["request"]["cluster"]["name"], "cache", "{d:#}");
    assert!(d["time"].is_string());
}

#[tokio::test]
async fn replay_shows_where_a_candidate_differs() {
    let status = local_status().await;
    let dir = std::env::temp_dir().join(format!("kvpilot-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let local = dir.join("status.json");
    std::fs::write(&local, serde_json::to_vec(&status).expect("json")).expect("write");
    let kube = dir.join("kvcluster.json");
    let status = KvClusterStatus::from_report(&status, &context());
    let object = serde_json::json!({"kind": "KvCluster", "status": status});
    std::fs::write(&kube, serde_json::to_vec(&object).expect("json")).expect("write");

    // The same plugin: the same answer.
    let (out, _) = replay("builtin:most-caught-up", &local, &[]);
    assert!(
        out.contains("same     ") && out.contains("{\"promote\":\"cache-2\"}"),
        "{out}"
    );
    assert!(
        out.contains("skipped") && out.contains("its request was not kept"),
        "{out}"
    );
    assert!(
        out.contains("2 decisions: 1 same, 0 differ, 0 failed, 1 not replayable"),
        "{out}"
    );

    // Another plugin, from the KvCluster's status: it differs, and says how.
    let logger = built::wasm_path("logger");
    let logger = logger.to_str().expect("path");
    let (out, _) = replay(logger, &kube, &[]);
    assert!(
        out.contains("DIFFERS")
            && out.contains(
                "recorded {\"promote\":\"cache-2\"}, candidate {\"promote\":\"cache-1\"}"
            ),
        "{out}"
    );
    let (out, _) = replay(logger, &kube, &["--json"]);
    let rows: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(rows[0]["outcome"], "differs");
    assert_eq!(rows[0]["candidate"]["promote"], "cache-1");
    // A failing candidate: its error, not a crash.
    let (out, _) = replay(logger, &kube, &["--config", r#"{"mode":"hostile"}"#]);
    assert!(
        out.contains("FAILED") && out.contains("logger plugin panicked"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
