//! Memoized decisions (issue 14 item 5) against the real sandbox: an identical request to the
//! same component under the same limits is answered without an instance; a failure is never
//! kept, so the same failing request runs the plugin again. Each test has a runtime of its
//! own, so the instance counts are its own.

#[path = "hostile/built.rs"]
mod built;

use kvpilot::policy::{PolicyError, PolicyRuntime, bench};
use kvpilot_sdk::{Cluster, Member, Selection, SelectionReason, SelectionRequest};

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
    .cluster(Cluster::new("cache").replicas_per_shard(2))
    .primary(holding(Member::primary("cache-0")))
    .config(config)
}

#[tokio::test]
async fn an_identical_request_is_answered_without_an_instance() {
    let runtime = PolicyRuntime::new().expect("runtime");
    let plugin = runtime
        .load_builtin("most-caught-up")
        .await
        .expect("builtin");
    let before = plugin.instantiations();
    let first = plugin.select(&request("{}")).await.expect("answers");
    assert_eq!(plugin.instantiations(), before + 1, "the first call runs");
    // The same request, built again (not the same allocation): no instance.
    for _ in 0..5 {
        let again = plugin.select(&request("{}")).await.expect("answers");
        assert_eq!(again, first);
    }
    assert_eq!(plugin.instantiations(), before + 1, "hits make no instance");
    // Another plugin value loaded from the same bytes shares the memo.
    let reloaded = runtime
        .load_builtin("most-caught-up")
        .await
        .expect("builtin");
    assert_eq!(
        reloaded.select(&request("{}")).await.expect("answers"),
        first
    );
    assert_eq!(plugin.instantiations(), before + 1);
    // One field changed: a fresh call, whose answer reflects the change.
    let mut lagging = request("{}");
    lagging.candidates[0].offset = 10;
    lagging.candidates[0].lag_bytes = 990;
    assert_eq!(
        plugin.select(&lagging).await.expect("answers"),
        Selection::Promote("cache-2".into())
    );
    assert_eq!(plugin.instantiations(), before + 2);
    // Other limits: a fresh call.
    let limits = kvpilot::policy::Limits {
        timeout: std::time::Duration::from_millis(250),
        ..plugin.limits()
    };
    let slower = plugin.clone().with_limits(limits);
    assert_eq!(slower.select(&request("{}")).await.expect("answers"), first);
    assert_eq!(plugin.instantiations(), before + 3);
    // Unmemoized: every call runs.
    let fresh = plugin.clone().unmemoized();
    fresh.select(&request("{}")).await.expect("answers");
    fresh.select(&request("{}")).await.expect("answers");
    assert_eq!(plugin.instantiations(), before + 5);
    let stats = runtime.memo_stats();
    assert!(stats.hits >= 6 && stats.entries >= 3, "{stats:?}");
}

#[tokio::test]
async fn every_hook_is_memoized() {
    let runtime = PolicyRuntime::new().expect("runtime");
    let schedule = runtime.load_builtin("stagger").await.expect("builtin");
    let before = schedule.instantiations();
    let first = schedule
        .schedule(&bench::schedule_request(100))
        .await
        .expect("answers");
    let again = schedule
        .schedule(&bench::schedule_request(100))
        .await
        .expect("answers");
    assert_eq!(first, again);
    assert_eq!(schedule.instantiations(), before + 1);

    let rollout = runtime
        .load_builtin("replicas-first")
        .await
        .expect("builtin");
    let before = rollout.instantiations();
    let first = rollout
        .next(&bench::rollout_request(100))
        .await
        .expect("answers");
    let again = rollout
        .next(&bench::rollout_request(100))
        .await
        .expect("answers");
    assert_eq!(first, again);
    assert_eq!(rollout.instantiations(), before + 1);
}

#[tokio::test]
async fn a_failure_is_never_kept_and_is_retried() {
    let runtime = PolicyRuntime::new().expect("runtime");
    let plugin = runtime
        .load_file(&built::wasm_path("panic"))
        .await
        .expect("load");
    let hostile = request(r#"{"mode":"hostile"}"#);
    let before = plugin.instantiations();
    for n in 1..=3 {
        let error = plugin.select(&hostile).await.expect_err("it panics");
        assert!(matches!(error, PolicyError::Trap { .. }), "{error}");
        assert_eq!(plugin.instantiations(), before + n, "each failure runs");
    }
    assert_eq!(runtime.memo_stats().entries, 0, "no failure is kept");
    // The same plugin answers another request, and that answer is kept.
    plugin.select(&request("{}")).await.expect("answers");
    plugin.select(&request("{}")).await.expect("answers");
    assert_eq!(plugin.instantiations(), before + 4);
    assert_eq!(runtime.memo_stats().entries, 1);
}

#[tokio::test]
async fn a_refused_answer_is_never_kept() {
    // most-caught-up with a config it refuses: the plugin's own error, every time.
    let runtime = PolicyRuntime::new().expect("runtime");
    let plugin = runtime
        .load_builtin("most-caught-up")
        .await
        .expect("builtin");
    let bad = request(r#"{"no-such-setting":true}"#);
    let before = plugin.instantiations();
    let first = plugin.select(&bad).await;
    let second = plugin.select(&bad).await;
    assert!(first.is_err() && second.is_err(), "{first:?} {second:?}");
    assert_eq!(plugin.instantiations(), before + 2);
}
