//! A local group with a password: members refuse clients without it, replicate with it, and
//! the reconciler rolls the group with authenticated commands; a later run must bring the
//! same password.

use kvpilot::decide::Action;
use kvpilot::platform::local::LocalCluster;
use kvpilot_e2e::group::settings;
use kvpilot_e2e::{Engine, Group, PHASE_LIMIT, Spec, probe};
use std::net::SocketAddr;

const PASSWORD: &str = "s3cret \"quoted\" pass";

/// The answer of `PING` from `addr` with the given password (none: no AUTH).
async fn ping(addr: SocketAddr, password: Option<&str>) -> Result<String, String> {
    let mut conn = probe::connect(addr).await?;
    if let Some(password) = password {
        redis::cmd("AUTH")
            .arg(password)
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| format!("{addr}: AUTH: {e}"))?;
    }
    redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .map_err(|e| format!("{addr}: PING: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_with_a_password_refuses_anonymous_clients_and_still_rolls() {
    let spec = Spec::new("auth", Engine::Valkey).with_password(PASSWORD);
    let mut group = Group::start(spec.clone()).await;

    // Every member requires the password, and the replicas synced with it (masterauth).
    for (name, addr) in group.members() {
        let anonymous = ping(addr, None).await.unwrap_err();
        assert!(anonymous.contains("NOAUTH"), "{name}: {anonymous}");
        assert_eq!(ping(addr, Some(PASSWORD)).await.as_deref(), Ok("PONG"));
    }
    let status = group.status();
    assert!(
        status
            .members
            .iter()
            .filter(|m| status.primary.as_deref() != Some(m.name.as_str()))
            .all(|m| m.ready && m.link_up),
        "replicas in sync: {:#?}",
        status.members
    );
    // The password is in a private file, not on any command line.
    for (name, _) in group.members() {
        let conf = group.member_dir(&name).join("auth.conf");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&conf).expect("auth.conf").permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{}", conf.display());
    }

    // A rollout: restarts, FAILOVER TO and the fencing all run authenticated.
    let old_primary = group.primary();
    let first = group.history.len();
    group.write_spec(spec.with_hz(11));
    let done = group.settle("the rollout").await;
    assert!(
        group.history[first..].iter().any(
            |r| matches!(r.done(), Some(Action::Handover { from, .. }) if *from == old_primary)
        ),
        "a handover from {old_primary}"
    );
    assert_ne!(done.status.primary.as_deref(), Some(old_primary.as_str()));

    // A later run with another password, or none, is refused before touching a member.
    group.abort().await;
    for (password, expected) in [
        (Some("wrong".to_string()), "password differs"),
        (None, "--password-file"),
    ] {
        let refused = LocalCluster::open(
            group.spec_path(),
            group.state_root(),
            None,
            password,
            settings(),
        )
        .await
        .err()
        .map(|e| e.to_string());
        assert!(
            refused.as_deref().is_some_and(|e| e.contains(expected)),
            "{refused:?}"
        );
    }
    // With the same password it adopts the running members and stays settled.
    group.reopen().await;
    group.settle("after reopening").await;
    let endpoint = group.endpoint();
    let pong = probe::eventually("PING through the endpoint", PHASE_LIMIT, async || {
        ping(endpoint, Some(PASSWORD)).await
    })
    .await;
    assert_eq!(pong, "PONG");
    group.shutdown().await;
}
