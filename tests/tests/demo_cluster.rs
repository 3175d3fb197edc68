//! `kvpilot demo cluster` end to end, small (short steady phases): three shards under the
//! operator's loop, (a) a rolling restart, (b) a SIGKILLed shard primary, (c) a shard primary
//! back empty with its nodes.conf. Every acknowledged key must be readable at the end, and
//! the JSON report has the shape the issue gives.

use kvpilot::demo::cluster::{Durations, run};
use std::time::Duration;

async fn demo(engine: kvpilot_sdk::Engine) {
    let dir = tempfile::tempdir().expect("temp dir");
    let durations = Durations {
        steady: Duration::from_millis(500),
        cli_rollout: true,
    };
    let report = run(engine, dir.path(), durations, |step| eprintln!("{step}"))
        .await
        .expect("the cluster demo runs");
    eprintln!("{}", report.table());
    let json = serde_json::to_value(&report).expect("json");
    for (phase, fields) in [
        ("rollout", &["acked", "lost", "max_gap_ms", "seconds"][..]),
        ("failover", &["detect_and_promote_ms", "lost"][..]),
        ("empty_restart", &["lost"][..]),
    ] {
        for field in fields {
            assert!(json[phase][field].is_number(), "{phase}.{field}: {json}");
        }
        assert_eq!(json[phase]["lost"], 0, "{phase}: {json}");
    }
    assert!(report.rollout.acked > 100, "{json}");
    assert!(
        report.failover.acked > 0 && report.empty_restart.acked > 0,
        "{json}"
    );
    assert_eq!(report.lost, 0, "{json}");
    // The hand-driven baseline ran and is reported beside it.
    assert!(json["cli_rollout"]["max_gap_ms"].is_number(), "{json}");
    assert!(
        json["cli_rollout"]["acked"].as_u64().unwrap_or(0) > 100,
        "{json}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valkey_cluster_demo_loses_no_acknowledged_write() {
    demo(kvpilot_sdk::Engine::Valkey).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_demo_loses_no_acknowledged_write() {
    demo(kvpilot_sdk::Engine::Redis).await;
}
