//! Proactive rollouts: no acknowledged write lost under a running writer, one member at a
//! time, the primary handed over gracefully; and an operator killed mid-rollout resumes
//! without a second primary change.

use kvpilot::decide::Action;
use kvpilot::demo::{verify, writer::Writer};
use kvpilot::policy::Hook;
use kvpilot_e2e::availability::Availability;
use kvpilot_e2e::{Engine, Group, PHASE_LIMIT, Spec, StepRecord, probe};
use std::collections::BTreeMap;
use std::time::Duration;

macro_rules! for_each_engine {
    ($scenario:ident: $($test:ident => $engine:expr),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                $scenario($engine).await;
            }
        )+
    };
}

for_each_engine!(killed_operator_resumes:
    valkey_a_killed_operator_resumes_the_rollout_without_a_second_failover => Engine::Valkey,
    redis_a_killed_operator_resumes_the_rollout_without_a_second_failover => Engine::Redis,
);

for_each_engine!(rollout_under_writes:
    valkey_rollout_under_writes_loses_no_acknowledged_write => Engine::Valkey,
    redis_rollout_under_writes_loses_no_acknowledged_write => Engine::Redis,
);

async fn rollout_under_writes(engine: Engine) {
    let spec = Spec::new("roll", engine);
    let mut group = Group::start(spec.clone()).await;
    let old_primary = group.primary();
    let old_revision = group.status().desired_revision;
    let members = group.members();

    let writer = Writer::start(group.endpoint(), "e2e", Duration::from_secs(300));
    probe::eventually(
        "the writer is acknowledged",
        PHASE_LIMIT,
        async || match writer.acked().await {
            n if n >= 200 => Ok(()),
            n => Err(format!("{n} acknowledged writes")),
        },
    )
    .await;
    let sampler = Availability::start(group.addresses());
    let first_step = group.history.len();

    group.write_spec(spec.with_hz(11));
    let done = group.settle("rollout to hz 11").await;
    let acked_at_end = writer.acked().await;
    // A little more writing on the new primary, through the moved endpoint.
    probe::eventually(
        "writes continue after the rollout",
        PHASE_LIMIT,
        async || match writer.acked().await {
            n if n >= acked_at_end + 100 => Ok(()),
            n => Err(format!("{} writes since the rollout", n - acked_at_end)),
        },
    )
    .await;
    let log = writer.stop().await;
    let seen = sampler.stop().await;

    // Every member on the new revision, the primary changed.
    assert_ne!(done.status.desired_revision, old_revision);
    let new_primary = done.status.primary.clone().expect("a primary");
    assert_ne!(
        new_primary, old_primary,
        "the primary must have been handed over"
    );

    // The primary changed through exactly one handover, chosen by replica-selection; no
    // reactive promotion happened.
    let rollout: Vec<&StepRecord> = group.history[first_step..].iter().collect();
    let handovers: Vec<&StepRecord> = rollout
        .iter()
        .copied()
        .filter(|r| matches!(r.done(), Some(Action::Handover { .. })))
        .collect();
    let attempts: Vec<String> = rollout
        .iter()
        .filter(|r| matches!(r.action, Some(Action::Handover { .. })))
        .map(|r| format!("{:?} error {:?}", r.action, r.error))
        .collect();
    assert_eq!(
        handovers.len(),
        1,
        "exactly one handover, carried out without error; attempts: {attempts:#?}"
    );
    let Some(Action::Handover { from, to }) = handovers[0].done() else {
        unreachable!()
    };
    let story: Vec<String> = rollout
        .iter()
        .filter(|r| r.action.is_some() || r.error.is_some())
        .map(|r| {
            format!(
                "{:?} error {:?} primary {:?}",
                r.action.as_ref().map(Action::describe),
                r.error,
                r.status.primary
            )
        })
        .collect();
    assert_eq!(
        (from, to),
        (&old_primary, &new_primary),
        "the handover's target stays the primary: {story:#?}"
    );
    assert!(
        handovers[0]
            .decisions
            .iter()
            .any(|d| d.hook == Hook::ReplicaSelection && d.answer.contains(to.as_str())),
        "the handover target comes from a replica-selection decision: {:#?}",
        handovers[0].decisions
    );
    assert!(
        !rollout
            .iter()
            .any(|r| matches!(r.action, Some(Action::Failover { .. }))),
        "no failover during a planned rollout"
    );

    // Each member restarted exactly once, one at a time.
    let mut restarts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &rollout {
        if let Some(Action::Restart { member, .. }) = r.done() {
            *restarts.entry(member.as_str()).or_default() += 1;
        }
    }
    let expected: BTreeMap<&str, usize> = members.iter().map(|(n, _)| (n.as_str(), 1)).collect();
    assert_eq!(restarts, expected, "every member restarted once");
    for r in &rollout {
        let unready: Vec<&str> = r
            .status
            .members
            .iter()
            .filter(|m| !m.ready)
            .map(|m| m.name.as_str())
            .collect();
        assert!(
            unready.len() <= 1,
            "more than one member unready at once: {unready:?}"
        );
    }
    assert!(seen.rounds > 0, "the availability sampler ran");
    assert!(
        seen.max_down <= 1,
        "more than one member down at the same time: {seen:?}"
    );

    // No acknowledged write is missing, on any member.
    assert!(log.acks.len() > acked_at_end, "writes went on");
    let seqs: Vec<u64> = log.acks.iter().map(|a| a.seq).collect();
    let primary_addr = group.addr(&new_primary);
    let keys = probe::dbsize(primary_addr).await.expect("DBSIZE");
    assert!(
        keys >= seqs.len() as u64,
        "{keys} keys < {} acks",
        seqs.len()
    );
    probe::all_hold(&group.addresses(), keys, PHASE_LIMIT).await;
    for (name, addr) in group.members() {
        let lost = verify::missing(addr, "e2e", &seqs).await.expect("verify");
        assert!(
            lost.is_empty(),
            "{name} lost {} acknowledged writes, first {:?}",
            lost.len(),
            &lost[..lost.len().min(10)]
        );
    }
    group.shutdown().await;
}

/// The reconciler is dropped right after a replica restart and again right after the
/// handover; each new one finishes the work from what it observes, without a second
/// primary change.
async fn killed_operator_resumes(engine: Engine) {
    let spec = Spec::new("resume", engine);
    let mut group = Group::start(spec.clone()).await;
    probe::fill(group.endpoint(), "k", 2000)
        .await
        .expect("fill");
    probe::all_hold(&group.addresses(), 2000, PHASE_LIMIT).await;
    let old_primary = group.primary();
    let first_step = group.history.len();

    group.write_spec(spec.with_hz(11));
    let restarted = group
        .run_until("the first replica restart", |r| {
            matches!(r.done(), Some(Action::Restart { .. }))
        })
        .await;
    let Some(Action::Restart { member, .. }) = restarted.done() else {
        unreachable!()
    };
    assert_ne!(member, &old_primary, "replicas first");
    group.abort().await;
    group.reopen().await;

    let handed = group
        .run_until("the handover", |r| {
            matches!(r.done(), Some(Action::Handover { .. }))
        })
        .await;
    let Some(Action::Handover { from, to }) = handed.done().cloned() else {
        unreachable!()
    };
    assert_eq!(from, old_primary);
    group.abort().await;
    group.reopen().await;

    let done = group.settle("the rest of the rollout").await;
    assert_eq!(group.history.last().map(|r| r.run), Some(2));

    let rollout = &group.history[first_step..];
    let promotions: Vec<&Action> = rollout
        .iter()
        .filter_map(|r| r.action.as_ref())
        .filter(|a| matches!(a, Action::Handover { .. } | Action::Failover { .. }))
        .collect();
    assert_eq!(
        promotions.len(),
        1,
        "one primary change over all three runs: {promotions:#?}"
    );
    // The primary as each run saw it changed exactly once, to the handover's target.
    let mut seen: Vec<&str> = Vec::new();
    for p in rollout.iter().filter_map(|r| r.status.primary.as_deref()) {
        if seen.last() != Some(&p) {
            seen.push(p);
        }
    }
    assert_eq!(seen, vec![old_primary.as_str(), to.as_str()]);
    assert_eq!(done.status.primary.as_deref(), Some(to.as_str()));
    assert!(
        !done.status.desired_revision.is_empty()
            && done
                .status
                .members
                .iter()
                .all(|m| m.revision.as_deref() == Some(done.status.desired_revision.as_str()))
    );
    // Every member restarted exactly once overall.
    let mut restarts: Vec<&str> = rollout
        .iter()
        .filter_map(|r| match r.done() {
            Some(Action::Restart { member, .. }) => Some(member.as_str()),
            _ => None,
        })
        .collect();
    restarts.sort();
    let mut names: Vec<String> = group.members().into_iter().map(|(n, _)| n).collect();
    names.sort();
    assert_eq!(
        restarts,
        names.iter().map(String::as_str).collect::<Vec<_>>()
    );
    probe::all_hold(&group.addresses(), 2000, PHASE_LIMIT).await;
    group.shutdown().await;
}

/// A config change the server refuses (an unknown `maxmemory-policy`): the first restarted
/// replica cannot come back. The rollout must stop there — no other member restarted, no
/// handover — back off between attempts, say why in RolloutBlocked, keep the primary serving,
/// and finish once the spec is corrected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_fails_to_restart_blocks_the_rollout_with_backoff() {
    let spec = Spec::new("badcfg", Engine::Valkey);
    let mut group = Group::start(spec.clone()).await;
    let primary = group.primary();
    probe::fill(group.endpoint(), "k", 500).await.expect("fill");
    let first_step = group.history.len();

    group.write_spec(spec.with_config("maxmemory-policy", "not-a-policy"));
    let mut failures: Vec<StepRecord> = Vec::new();
    for _ in 0..4 {
        let failed = group
            .run_until("a failed attempt", |r| r.error.is_some())
            .await;
        failures.push(failed);
    }
    let tried: Vec<String> = failures
        .iter()
        .filter_map(|r| r.action.as_ref().map(Action::describe))
        .collect();
    let first = failures[0].action.clone().expect("an action");
    let victim = match &first {
        Action::Restart { member, .. } => member.clone(),
        other => panic!("the rollout starts with a restart: {other:?}"),
    };
    assert_ne!(victim, primary, "replicas go first");
    // Only that member was ever touched, and never the primary.
    for r in &group.history[first_step..] {
        match &r.action {
            None => {}
            Some(Action::Restart { member, .. }) => assert_eq!(member, &victim, "{tried:?}"),
            Some(Action::Start { members, .. }) => {
                assert_eq!(members, &vec![victim.clone()], "{tried:?}")
            }
            Some(other) => panic!("only {victim} may be touched: {other:?} ({tried:?})"),
        }
    }
    // Attempts thin out, and the reason is in status.
    let delays: Vec<Duration> = failures.iter().map(|r| r.requeue_after).collect();
    assert!(
        delays.windows(2).all(|w| w[1] >= w[0]) && delays[3] > delays[0],
        "the retry delay grows: {delays:?}"
    );
    let last = failures.last().expect("failures");
    let blocked = last
        .status
        .condition("RolloutBlocked")
        .expect("a RolloutBlocked condition");
    assert!(blocked.status, "{blocked:?} after {tried:?}");
    assert!(
        blocked.message.contains(&victim) && blocked.message.contains("maxmemory-policy"),
        "the condition names the member and the server's complaint: {blocked:?}"
    );
    // The primary was never touched: writes through the endpoint still land.
    assert_eq!(last.status.primary.as_deref(), Some(primary.as_str()));
    probe::set(group.endpoint(), "during", "yes")
        .await
        .expect("the primary still takes writes");

    // Corrected: the rollout completes, starting with the member that is down.
    group.write_spec(spec.with_hz(12));
    let done = group.settle("the corrected rollout").await;
    assert!(
        !done.condition("RolloutBlocked"),
        "the failure no longer describes the cluster: {:?}",
        done.status.condition("RolloutBlocked")
    );
    probe::all_hold(&group.addresses(), 501, PHASE_LIMIT).await;
    group.shutdown().await;
}
