//! Safety rule 9 against real servers: leadership is checked right before every action. A
//! reconciler whose leadership ends between deciding and acting, or in the middle of a
//! multi-step action, sends nothing more; a new leader finishes the job from what it observes.

use kvpilot::decide::Action;
use kvpilot::leadership::{Alone, Leadership, NotLeader};
use kvpilot_e2e::probe::{self, Role};
use kvpilot_e2e::{Engine, Group, PHASE_LIMIT, Spec};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Leads for `n` more checks, then never again (a lease that runs out at a chosen moment).
struct Countdown(AtomicUsize);

impl Leadership for Countdown {
    fn check(&self) -> Result<(), NotLeader> {
        let left = self.0.load(Ordering::SeqCst);
        if left == 0 {
            return Err(NotLeader("the test's lease ran out".into()));
        }
        self.0.store(left - 1, Ordering::SeqCst);
        Ok(())
    }
}

fn gate(group: &mut Group, leadership: Arc<dyn Leadership>) {
    group.cluster_mut().reconciler.leadership = leadership;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconciler_that_stops_leading_before_or_during_a_failover_sends_nothing_more() {
    let mut group = Group::start(Spec::new("leader", Engine::Valkey)).await;
    probe::fill(group.endpoint(), "k", 100).await.expect("fill");
    let victim = group.primary();
    let survivors: Vec<_> = group
        .members()
        .into_iter()
        .filter(|(n, _)| *n != victim)
        .collect();
    group.cluster().kill(&victim).expect("SIGKILL the primary");

    // The lease runs out after the check before the action and before its first command
    // (`REPLICAOF NO ONE` on the chosen replica): the failover stops there.
    gate(&mut group, Arc::new(Countdown(AtomicUsize::new(1))));
    let stopped = group
        .run_until("a failover cut short", |r| {
            matches!(r.action, Some(Action::Failover { .. })) && r.error.is_some()
        })
        .await;
    assert!(
        stopped
            .error
            .as_deref()
            .is_some_and(|e| e.contains("not the leader")),
        "{stopped:#?}"
    );
    for (name, addr) in &survivors {
        assert!(
            matches!(
                probe::role(*addr).await.expect("role"),
                Role::Replica { .. }
            ),
            "{name} was promoted by a reconciler that no longer led"
        );
    }

    // Not leading at all: the plan is dropped before any action, and status says why.
    gate(&mut group, Arc::new(Countdown(AtomicUsize::new(0))));
    let dropped = group
        .run_until("a plan dropped", |r| {
            r.error
                .as_deref()
                .is_some_and(|e| e.contains("not the leader"))
                && r.action.is_none()
        })
        .await;
    assert!(
        dropped
            .status
            .events
            .iter()
            .any(|e| e.reason == "NotLeader" && e.message.contains("plan is dropped")),
        "{:#?}",
        dropped.status.events
    );
    for (name, addr) in &survivors {
        assert!(
            matches!(
                probe::role(*addr).await.expect("role"),
                Role::Replica { .. }
            ),
            "{name} was promoted by a reconciler that did not lead"
        );
    }

    // Leading again: the failover completes from what is observed.
    gate(&mut group, Arc::new(Alone));
    let done = group
        .run_until("a new primary", |r| {
            r.settled() && r.status.primary.as_deref().is_some_and(|p| p != victim)
        })
        .await;
    let primary = done.status.primary.clone().expect("a primary");
    probe::eventually(
        "the new primary answers as one",
        PHASE_LIMIT,
        async || match probe::role(group.addr(&primary)).await? {
            Role::Primary => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    probe::all_hold(&group.addresses(), 100, PHASE_LIMIT).await;
    group.shutdown().await;
}
