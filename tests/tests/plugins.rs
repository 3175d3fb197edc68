//! Rollout-order plugins from `tests/plugins/` in a real group: a plugin answering `wait`
//! blocks the rollout with its reason in status; a failing plugin blocks under
//! `failurePolicy: Fail` and is replaced by the builtin under `Fallback`.

use kvpilot::decide::Action;
use kvpilot::platform::local::server::read_state;
use kvpilot::policy::Hook;
use kvpilot_e2e::plugins::{self, FAILING_ROLLOUT, WAIT_ROLLOUT};
use kvpilot_e2e::{Engine, Group, PolicyChoice, Spec, StepRecord};
use std::collections::BTreeMap;

/// Steps taken while blocked, to show nothing moves.
const BLOCKED_STEPS: usize = 8;

/// Member name → pid, from the state files the members write.
fn pids(group: &Group) -> BTreeMap<String, u32> {
    group
        .members()
        .into_iter()
        .map(|(name, _)| {
            let pid = read_state(&group.member_dir(&name))
                .expect("member state")
                .pid;
            (name, pid)
        })
        .collect()
}

/// Steps `n` more times and checks that no member was touched and none moved to `revision`.
async fn stays_blocked(
    group: &mut Group,
    n: usize,
    old_revision: &str,
    check: impl Fn(&StepRecord),
) {
    for _ in 0..n {
        let r = group.step().await;
        assert!(
            !matches!(
                r.action,
                Some(Action::Restart { .. } | Action::Handover { .. } | Action::Failover { .. })
            ),
            "nothing may be restarted or promoted while blocked: {r:#?}"
        );
        assert!(
            r.status
                .members
                .iter()
                .all(|m| m.revision.as_deref() == Some(old_revision)),
            "every member stays on the old revision"
        );
        check(&r);
        tokio::time::sleep(r.requeue_after.min(std::time::Duration::from_millis(300))).await;
    }
}

fn restarted_members(history: &[StepRecord]) -> Vec<String> {
    let mut names: Vec<String> = history
        .iter()
        .filter_map(|r| match r.done() {
            Some(Action::Restart { member, .. }) => Some(member.clone()),
            _ => None,
        })
        .collect();
    names.sort();
    names
}

fn member_names(group: &Group) -> Vec<String> {
    let mut names: Vec<String> = group.members().into_iter().map(|(n, _)| n).collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_answering_wait_blocks_the_rollout_with_its_reason() {
    let wasm = plugins::wasm(WAIT_ROLLOUT);
    let spec = Spec::new("waiting", Engine::Valkey);
    let mut group = Group::start(spec.clone()).await;
    let old_revision = group.status().desired_revision;
    let before = pids(&group);
    let first_step = group.history.len();

    let reason = "change freeze until the e2e test lifts it";
    let waiting = spec.with_hz(11).with_rollout_order(PolicyChoice {
        plugin: wasm.display().to_string(),
        config: Some(serde_json::json!({ "reason": reason })),
        failure_policy: "Fail",
    });
    group.write_spec(waiting);
    let blocked = group
        .run_until("RolloutBlocked", |r| r.condition("RolloutBlocked"))
        .await;
    assert_ne!(
        blocked.status.desired_revision, old_revision,
        "the spec change was seen"
    );
    let condition = blocked
        .status
        .condition("RolloutBlocked")
        .expect("condition");
    assert_eq!(condition.message, reason);
    let decision = blocked
        .decisions
        .iter()
        .find(|d| d.hook == Hook::RolloutOrder)
        .expect("a rollout-order decision");
    assert_eq!(decision.plugin, wasm.display().to_string());
    assert!(decision.answer.contains(reason), "{decision:?}");
    assert!(decision.fallback_from.is_none());

    stays_blocked(&mut group, BLOCKED_STEPS, &old_revision, |r| {
        let c = r.status.condition("RolloutBlocked").expect("condition");
        assert!(c.status, "still blocked");
        assert_eq!(c.message, reason);
    })
    .await;
    assert_eq!(pids(&group), before, "no member was restarted");
    assert!(
        group.history[first_step..]
            .iter()
            .all(|r| !matches!(r.action, Some(Action::Restart { .. }))),
    );

    // Back to the builtin: the same rollout goes through.
    group.write_spec(spec.with_hz(11));
    let done = group.settle("rollout with builtin:replicas-first").await;
    assert!(!done.condition("RolloutBlocked"));
    assert_eq!(
        restarted_members(&group.history[first_step..]),
        member_names(&group)
    );
    group.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_plugin_under_fail_blocks_the_rollout() {
    let wasm = plugins::wasm(FAILING_ROLLOUT);
    let spec = Spec::new("failing", Engine::Valkey);
    let mut group = Group::start(spec.clone()).await;
    let old_revision = group.status().desired_revision;
    let before = pids(&group);

    let message = "e2e: no rollouts today";
    group.write_spec(spec.with_hz(11).with_rollout_order(PolicyChoice {
        plugin: wasm.display().to_string(),
        config: Some(serde_json::json!({ "mode": "error", "message": message })),
        failure_policy: "Fail",
    }));
    let failed = group
        .run_until("PolicyFailed", |r| r.condition("PolicyFailed"))
        .await;
    let condition = failed.status.condition("PolicyFailed").expect("condition");
    assert!(
        condition.message.contains(message) && condition.message.contains("rollout-order"),
        "{condition:?}"
    );
    assert!(failed.action.is_none());
    assert!(!failed.condition("Ready"));
    stays_blocked(&mut group, BLOCKED_STEPS, &old_revision, |r| {
        let c = r.status.condition("PolicyFailed").expect("condition");
        assert!(c.status && c.message.contains(message), "{c:?}");
    })
    .await;
    assert_eq!(pids(&group), before, "no member was restarted");
    group.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_plugin_under_fallback_is_replaced_by_the_builtin() {
    let wasm = plugins::wasm(FAILING_ROLLOUT);
    let spec = Spec::new("fallback", Engine::Valkey);
    let mut group = Group::start(spec.clone()).await;
    let first_step = group.history.len();

    group.write_spec(spec.with_hz(11).with_rollout_order(PolicyChoice {
        plugin: wasm.display().to_string(),
        config: Some(serde_json::json!({ "mode": "trap", "message": "e2e: trap on purpose" })),
        failure_policy: "Fallback",
    }));
    let done = group.settle("rollout through the fallback").await;
    let rollout = &group.history[first_step..];
    assert!(rollout.iter().all(|r| !r.condition("PolicyFailed")));
    assert_eq!(restarted_members(rollout), member_names(&group));
    assert!(
        rollout
            .iter()
            .filter_map(|r| r.done())
            .any(|a| matches!(a, Action::Handover { .. })),
        "the builtin handed the primary over"
    );

    let decisions: Vec<_> = rollout
        .iter()
        .flat_map(|r| &r.decisions)
        .filter(|d| d.hook == Hook::RolloutOrder)
        .collect();
    assert!(!decisions.is_empty());
    for d in &decisions {
        assert_eq!(d.plugin, "builtin:replicas-first", "{d:?}");
        let why = d
            .fallback_from
            .as_deref()
            .expect("the decision says it fell back");
        assert!(
            why.contains("trapped") && why.contains(&wasm.display().to_string()),
            "{why}"
        );
    }
    let fell_back = rollout.iter().flat_map(|r| &r.status.events).any(|e| {
        e.kind == "Warning" && e.reason == "PolicyDecision" && e.message.contains("(fallback:")
    });
    assert!(fell_back, "a Warning event says the builtin answered");
    assert!(done.settled());
    group.shutdown().await;
}
