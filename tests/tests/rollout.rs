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
    assert_eq!((from, to), (&old_primary, &new_primary));
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
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_operator_resumes_the_rollout_without_a_second_failover() {
    let spec = Spec::new("resume", Engine::Valkey);
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
