//! Reactive paths: failover after SIGKILL of the primary, the data-holding guard against an
//! empty restarted primary, and election when no member answers yet.

use kvpilot::decide::{Action, Blocker};
use kvpilot::platform::local::server::{Server, ServerSpec};
use kvpilot_e2e::group::settings;
use kvpilot_e2e::probe::{self, Role};
use kvpilot_e2e::spec::server_binary;
use kvpilot_e2e::{Engine, Group, PHASE_LIMIT, Spec};
use kvpilot_sdk::SelectionReason;
use std::net::SocketAddr;

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

for_each_engine!(failover_after_sigkill:
    valkey_failover_after_sigkill_of_the_primary => Engine::Valkey,
    redis_failover_after_sigkill_of_the_primary => Engine::Redis,
);

const KEYS: u64 = 1000;

async fn failover_after_sigkill(engine: Engine) {
    let mut group = Group::start(Spec::new("failover", engine)).await;
    let endpoint = group.endpoint();
    probe::fill(endpoint, "k", KEYS).await.expect("fill");
    probe::all_hold(&group.addresses(), KEYS, PHASE_LIMIT).await;
    let victim = group.primary();
    let victim_addr = group.addr(&victim);
    let first_step = group.history.len();

    group.cluster().kill(&victim).expect("SIGKILL the primary");
    let healed = group
        .run_until("a new primary, every member back", |r| {
            r.settled() && r.status.primary.as_deref().is_some_and(|p| p != victim)
        })
        .await;
    let new_primary = healed.status.primary.clone().expect("a primary");
    let new_addr = group.addr(&new_primary);

    // A replica was promoted because the primary was lost.
    let after = &group.history[first_step..];
    let promotions: Vec<&Action> = after
        .iter()
        .filter_map(|r| r.done())
        .filter(|a| matches!(a, Action::Failover { .. }))
        .collect();
    assert_eq!(promotions.len(), 1, "one promotion: {promotions:#?}");
    let Action::Failover {
        promote, reason, ..
    } = promotions[0]
    else {
        unreachable!()
    };
    assert_eq!(promote, &new_primary);
    assert_eq!(*reason, SelectionReason::PrimaryLost);
    // The dead member was started again as a replica of the new primary.
    assert!(
        after.iter().filter_map(|r| r.done()).any(|a| matches!(
            a,
            Action::Start { members, replica_of: Some(p) } if members.contains(&victim) && p == &new_primary
        )),
        "{victim} restarted as a replica of {new_primary}"
    );

    // The endpoint follows: a write through it lands on the new primary.
    probe::eventually("a write through the endpoint", PHASE_LIMIT, async || {
        probe::set(endpoint, "after-failover", "yes").await
    })
    .await;
    assert_eq!(
        probe::get(new_addr, "after-failover").await.expect("GET"),
        Some("yes".to_string())
    );
    assert_eq!(probe::role(new_addr).await.expect("role"), Role::Primary);
    // The old primary is a replica of the new one and holds all the data again.
    probe::eventually(
        "the old primary replicates the new one",
        PHASE_LIMIT,
        async || match probe::role(victim_addr).await? {
            Role::Replica { of, link_up: true } if of == new_addr => Ok(()),
            other => Err(format!("{victim} is {other:?}")),
        },
    )
    .await;
    probe::all_hold(&group.addresses(), KEYS + 1, PHASE_LIMIT).await;
    group.shutdown().await;
}

/// The primary is SIGKILLed; once the reconciler has promoted a replica, a careless platform
/// starts the old primary again, empty and as a primary. It must be demoted and resynced from
/// the data holder, never become the source of the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_restarted_primary_does_not_wipe_the_replicas() {
    let mut group = Group::start(Spec::new("empty", Engine::Valkey)).await;
    probe::fill(group.endpoint(), "k", KEYS)
        .await
        .expect("fill");
    probe::all_hold(&group.addresses(), KEYS, PHASE_LIMIT).await;
    let victim = group.primary();
    let victim_addr = group.addr(&victim);
    let revision = group.status().desired_revision;

    group.cluster().kill(&victim).expect("SIGKILL the primary");
    let failed_over = group
        .run_until("the failover", |r| {
            matches!(r.done(), Some(Action::Failover { .. }))
        })
        .await;
    let Some(Action::Failover { promote, .. }) = failed_over.done().cloned() else {
        unreachable!()
    };
    assert_ne!(promote, victim);
    // The old process must be gone before its address is reused.
    probe::eventually(
        "the old primary is gone",
        PHASE_LIMIT,
        async || match probe::dbsize(victim_addr).await {
            Err(_) => Ok(()),
            Ok(n) => Err(format!("{victim} still answers with {n} keys")),
        },
    )
    .await;

    // Outside the reconciler: same directory and address, no replicaof, no data.
    let SocketAddr::V4(v4) = victim_addr else {
        panic!("IPv4 expected")
    };
    let mut careless = ServerSpec::new(
        server_binary(Engine::Valkey),
        *v4.ip(),
        v4.port(),
        group.member_dir(&victim),
    );
    careless.revision = revision;
    let server = Server::start(&careless)
        .await
        .expect("start the empty primary");
    group.guard().track(&server);
    assert_eq!(probe::role(victim_addr).await.expect("role"), Role::Primary);
    assert_eq!(probe::dbsize(victim_addr).await.expect("DBSIZE"), 0);

    let first_step = group.history.len();
    let done = group
        .run_until("the empty member demoted and resynced", |r| {
            r.settled()
                && r.status
                    .members
                    .iter()
                    .all(|m| m.role != "down" && m.keys == KEYS)
        })
        .await;
    let primary = done.status.primary.clone().expect("a primary");
    assert_ne!(
        primary, victim,
        "the empty member never becomes the primary"
    );
    assert!(
        group.history[first_step..]
            .iter()
            .all(|r| r.status.primary.as_deref() != Some(victim.as_str())),
        "the empty member was never taken for the primary"
    );
    assert!(
        group.history[first_step..]
            .iter()
            .filter_map(|r| r.done())
            .any(|a| matches!(a, Action::Replicate { members, primary: p } if members.contains(&victim) && p == &primary)),
        "{victim} demoted to a replica of {primary}"
    );
    match probe::role(victim_addr).await.expect("role") {
        Role::Replica { of, .. } => assert_eq!(of, group.addr(&primary)),
        Role::Primary => panic!("{victim} is still a primary"),
    }
    probe::all_hold(&group.addresses(), KEYS, PHASE_LIMIT).await;
    group.shutdown().await;
}

/// The primary is SIGKILLed and a careless platform starts it again at once, empty, as a
/// primary and with the engine's stock settings, before the reconciler has seen it gone: the
/// replicas still name it as their primary and will full-sync from it as soon as its diskless
/// sync delay (5 s by default) is over. The data-holding guard must promote a data holder
/// first (reason `PrimaryEmpty`), so that no replica is ever wiped.
async fn empty_primary_inside_the_detection_window(engine: Engine) {
    let mut group = Group::start(Spec::new("window", engine)).await;
    probe::fill(group.endpoint(), "k", KEYS)
        .await
        .expect("fill");
    probe::all_hold(&group.addresses(), KEYS, PHASE_LIMIT).await;
    let victim = group.primary();
    let victim_addr = group.addr(&victim);
    let revision = group.status().desired_revision;

    // No reconcile runs between the kill and the restart: the reconciler never sees the
    // primary missing.
    group.cluster().kill(&victim).expect("SIGKILL the primary");
    probe::eventually(
        "the old primary is gone",
        PHASE_LIMIT,
        async || match probe::dbsize(victim_addr).await {
            Err(_) => Ok(()),
            Ok(n) => Err(format!("{victim} still answers with {n} keys")),
        },
    )
    .await;
    let SocketAddr::V4(v4) = victim_addr else {
        panic!("IPv4 expected")
    };
    let mut careless = ServerSpec::new(
        server_binary(engine),
        *v4.ip(),
        v4.port(),
        group.member_dir(&victim),
    );
    careless.revision = revision;
    let server = Server::start(&careless)
        .await
        .expect("start the empty primary");
    group.guard().track(&server);

    let first_step = group.history.len();
    let done = group
        .run_until(
            "a data holder promoted, every member holding the data",
            |r| {
                r.settled()
                    && r.status
                        .members
                        .iter()
                        .all(|m| m.role != "down" && m.keys == KEYS)
            },
        )
        .await;
    let primary = done.status.primary.clone().expect("a primary");
    assert_ne!(
        primary, victim,
        "the empty member never becomes the primary"
    );
    let promotions: Vec<&Action> = group.history[first_step..]
        .iter()
        .filter_map(|r| r.done())
        .filter(|a| matches!(a, Action::Failover { .. }))
        .collect();
    assert_eq!(promotions.len(), 1, "one promotion: {promotions:#?}");
    assert!(
        matches!(
            promotions[0],
            Action::Failover { promote, reason: SelectionReason::PrimaryEmpty, fence, .. }
                if promote == &primary && fence.contains(&victim)
        ),
        "the guard promoted {primary} because {victim} came back empty: {promotions:#?}"
    );
    // Every member held every key at every step: nobody was wiped, even for a moment.
    for r in &group.history[first_step..] {
        for m in r.status.members.iter().filter(|m| m.name != victim) {
            assert!(
                m.role == "down" || m.keys == KEYS,
                "{} held {} keys at some step: {}",
                m.name,
                m.keys,
                r.status.primary.as_deref().unwrap_or("-")
            );
        }
    }
    match probe::role(victim_addr).await.expect("role") {
        Role::Replica { of, .. } => assert_eq!(of, group.addr(&primary)),
        Role::Primary => panic!("{victim} is still a primary"),
    }
    probe::all_hold(&group.addresses(), KEYS, PHASE_LIMIT).await;
    group.shutdown().await;
}

for_each_engine!(empty_primary_inside_the_detection_window:
    valkey_an_empty_primary_back_inside_the_detection_window_is_not_followed => Engine::Valkey,
    redis_an_empty_primary_back_inside_the_detection_window_is_not_followed => Engine::Redis,
);

/// Every member is started and then frozen (SIGSTOP) before any is elected: each reconcile
/// must requeue with a bounded delay and say why, and election completes once they answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_does_not_answer_yet_is_requeued_until_election_completes() {
    let mut group = Group::open(Spec::new("elect", Engine::Valkey)).await;
    let started = group.step().await;
    let Some(Action::Start {
        members,
        replica_of: None,
    }) = started.done()
    else {
        panic!("the first step starts every member parked: {started:#?}")
    };
    assert_eq!(members.len(), 3);
    let members = members.clone();

    let servers: Vec<Server> = members
        .iter()
        .map(|m| Server::adopt(&group.member_dir(m)).expect("adopt"))
        .collect();
    for s in &servers {
        s.pause().expect("SIGSTOP");
    }
    let probe_interval = settings().probe_interval;
    for i in 0..6 {
        let r = group.step().await;
        assert!(r.action.is_none(), "step {i}: nothing to do yet: {r:#?}");
        let wait = r.wait.as_ref().expect("a reason to wait");
        assert_eq!(wait.blocker, Blocker::NoPrimary, "step {i}: {wait:?}");
        assert!(!wait.reason.is_empty());
        assert!(
            !r.requeue_after.is_zero() && r.requeue_after <= probe_interval,
            "step {i}: requeued after {:?}",
            r.requeue_after
        );
        assert!(!r.condition("Ready"));
        assert!(r.status.primary.is_none());
        tokio::time::sleep(r.requeue_after).await;
    }
    for s in &servers {
        s.resume().expect("SIGCONT");
    }

    let done = group.settle("election after the members answer").await;
    let primary = done.status.primary.clone().expect("a primary");
    let promoted: Vec<&Action> = group
        .done_actions()
        .into_iter()
        .filter(|a| matches!(a, Action::Failover { .. }))
        .collect();
    assert_eq!(promoted.len(), 1, "one election: {promoted:#?}");
    let primary_addr = group.addr(&primary);
    assert_eq!(
        probe::role(primary_addr).await.expect("role"),
        Role::Primary
    );
    for (name, addr) in group.members() {
        if name != primary {
            match probe::role(addr).await.expect("role") {
                Role::Replica { of, .. } => assert_eq!(of, primary_addr, "{name}"),
                Role::Primary => panic!("{name} is a second primary"),
            }
        }
    }
    probe::eventually("a write through the endpoint", PHASE_LIMIT, async || {
        probe::set(group.endpoint(), "elected", "yes").await
    })
    .await;
    group.shutdown().await;
}
