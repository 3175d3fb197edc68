//! The local platform's own faults: a member that cannot start, and a spec file that turns
//! invalid while the group runs.

use kvpilot::decide::Action;
use kvpilot::platform::Platform;
use kvpilot::platform::local::{LocalCluster, LocalError};
use kvpilot_e2e::group::settings;
use kvpilot_e2e::{Engine, Group, Spec, probe};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

/// Most reconciles the endpoint may take to point at the primary.
const STEPS: usize = 30;

/// A replica whose address is taken by another process cannot start; the reconciler started
/// again after a crash must still point the endpoint at the healthy primary, and clients get
/// through while the start keeps failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_cannot_start_does_not_keep_the_endpoint_from_the_primary() {
    let mut group = Group::start(Spec::new("unstartable", Engine::Valkey)).await;
    let primary = group.primary();
    let primary_addr = group.addr(&primary);
    let (victim, victim_addr) = group
        .members()
        .into_iter()
        .find(|(n, _)| *n != primary)
        .expect("a replica");

    // The replica crashes and its address is taken before anyone restarts it; then the
    // reconciler dies (its endpoint goes with it) and is started again.
    group.cluster().kill(&victim).expect("SIGKILL the replica");
    wait_gone(victim_addr).await;
    let squatter = TcpListener::bind(victim_addr).expect("take the replica's address");
    group.abort().await;
    group.reopen().await;
    let mut pointed_at = None;
    for step in 0..STEPS {
        let record = group.step().await;
        if group.cluster().platform().endpoint() == Some(primary_addr) {
            pointed_at = Some(step);
            break;
        }
        tokio::time::sleep(record.requeue_after.min(Duration::from_millis(300))).await;
    }
    let history: Vec<String> = group
        .history
        .iter()
        .rev()
        .take(10)
        .map(|r| {
            format!(
                "{:?} {:?}",
                r.action.as_ref().map(Action::describe),
                r.error
            )
        })
        .collect();
    assert!(
        pointed_at.is_some(),
        "the endpoint never pointed at {primary} within {STEPS} reconciles: {history:#?}"
    );
    // Clients get through to the primary.
    probe::fill(group.endpoint(), "through", 10)
        .await
        .expect("write through the endpoint");
    assert_eq!(
        probe::role(group.endpoint()).await,
        Ok(probe::Role::Primary)
    );
    // And the member that cannot start is still being tried, and says why.
    let mut start_failed = false;
    for _ in 0..STEPS {
        let record = group.step().await;
        if matches!(&record.action, Some(Action::Start { members, .. }) if members.contains(&victim))
            && record.error.as_deref().is_some_and(|e| e.contains(&victim))
        {
            start_failed = true;
            break;
        }
        tokio::time::sleep(record.requeue_after.min(Duration::from_millis(300))).await;
    }
    assert!(start_failed, "the start of {victim} is retried and fails");
    assert_eq!(
        group.cluster().platform().endpoint(),
        Some(primary_addr),
        "a failing start does not move the endpoint"
    );
    drop(squatter);
    group
        .settle("the replica starts once its address is free")
        .await;
    group.shutdown().await;
}

/// `local up` refuses a spec that sets a forbidden key, naming the file and the field; a
/// running group that is handed such a spec keeps its previous one and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_spec_file_is_refused_naming_the_file_and_the_field() {
    let spec = Spec::new("invalidspec", Engine::Valkey);
    let mut group = Group::start(spec.clone()).await;
    let revision = group.status().desired_revision;

    group.write_spec(spec.with_config("replica-read-only", "no"));
    // Past the file's modification time granularity: the reload sees a new file.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let path = group.spec_path().display().to_string();
    let warned = group
        .run_until("the invalid spec is reported", |r| {
            r.status.events.iter().any(|e| {
                e.reason == "InvalidSpec"
                    && e.message.contains(&path)
                    && e.message.contains("spec.config.replica-read-only")
            })
        })
        .await;
    assert_eq!(
        warned.status.desired_revision, revision,
        "the previous spec stays in force"
    );
    assert!(warned.condition("Ready"), "the group keeps running");

    // A new run is refused before it touches anything, naming the file and the field.
    group.abort().await;
    let refused = LocalCluster::open(
        group.spec_path(),
        group.state_root(),
        None,
        None,
        settings(),
    )
    .await
    .err()
    .expect("refused");
    assert!(matches!(refused, LocalError::Spec { .. }), "{refused}");
    let text = refused.to_string();
    assert!(
        text.starts_with(&path) && text.contains("spec.config.replica-read-only"),
        "{text}"
    );
    group.write_spec(spec);
    group.reopen().await;
    group.settle("back with the valid spec").await;
    group.shutdown().await;
}

/// Waits (bounded) until nothing accepts connections at `addr`.
async fn wait_gone(addr: SocketAddr) {
    for _ in 0..200 {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{addr} still accepts connections");
}
