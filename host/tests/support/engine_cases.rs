//! Engine behaviour against real servers, shared by `engine_valkey.rs` and `engine_redis.rs`
//! through [`engine_tests!`].

use std::time::Duration;

use kvpilot::engine::{
    Client, Dialect, EngineError, FailoverState, HostPort, MemberReport, Role, ServerKind,
};
use kvpilot::platform::local::server::Server;

use super::{Lab, eventually, exec};

/// Generates one `#[tokio::test]` per case for a server binary and dialect.
#[macro_export]
macro_rules! engine_tests {
    ($binary:expr, $dialect:expr, $kind:expr) => {
        #[tokio::test]
        async fn observe_replication() {
            support::engine_cases::observe_replication($binary, $dialect, $kind).await;
        }
        #[tokio::test]
        async fn failover_swaps_roles() {
            support::engine_cases::failover_swaps_roles($binary, $dialect).await;
        }
        #[tokio::test]
        async fn failover_timeout_aborts() {
            support::engine_cases::failover_timeout_aborts($binary, $dialect).await;
        }
        #[tokio::test]
        async fn kill_fences_clients_but_not_ours() {
            support::engine_cases::kill_fences_clients_but_not_ours($binary, $dialect).await;
        }
        #[tokio::test]
        async fn auth_with_requirepass() {
            support::engine_cases::auth_with_requirepass($binary, $dialect).await;
        }
        #[tokio::test]
        async fn config_and_snapshots() {
            support::engine_cases::config_and_snapshots($binary, $dialect).await;
        }
        #[tokio::test]
        async fn dead_member_fails_fast() {
            support::engine_cases::dead_member_fails_fast($binary, $dialect).await;
        }
    };
}

const SYNC_LIMIT: Duration = Duration::from_secs(15);

async fn client(server: &Server, password: Option<&str>, dialect: Dialect) -> Client {
    Client::connect(server.addr(), password, dialect)
        .await
        .expect("connect")
}

/// Starts a primary and one replica (attached with REPLICAOF) and waits until the replica is
/// in sync. Returns (lab, primary, replica, primary client, replica client).
async fn pair(binary: &str, dialect: Dialect) -> (Lab, Server, Server, Client, Client) {
    let mut lab = Lab::new(binary);
    let p = lab.start_new().await;
    let r = lab.start_new().await;
    let pc = client(&p, None, dialect).await;
    let rc = client(&r, None, dialect).await;
    for i in 0..100 {
        exec(p.addr(), None, &["SET", &format!("k{i}"), "v"])
            .await
            .unwrap();
    }
    rc.replicaof(&HostPort::from(p.addr())).await.unwrap();
    wait_in_sync(&pc, &rc).await;
    (lab, p, r, pc, rc)
}

/// Waits until `replica` reports link up, not syncing, and the primary's offset, and the
/// primary lists it as `online` (Redis 7 marks a replica online only at its first ACK after
/// the load, a moment after the replica itself reports the link up).
async fn wait_in_sync(primary: &Client, replica: &Client) -> (MemberReport, MemberReport) {
    let target = replica.addr().clone();
    eventually(SYNC_LIMIT, "replica in sync", || async {
        let p = primary.observe().await.ok()?;
        let r = replica.observe().await.ok()?;
        let listed_online = p
            .replication
            .replicas
            .iter()
            .any(|e| e.online() && e.ip == target.host && e.port == target.port);
        (listed_online
            && r.link_up()
            && !r.syncing()
            && r.offset() == p.offset()
            && r.keys == p.keys)
            .then_some((p, r))
    })
    .await
}

pub async fn observe_replication(binary: &str, dialect: Dialect, kind: ServerKind) {
    let (_lab, p, r, pc, rc) = pair(binary, dialect).await;
    // Writes after the full sync travel the replication stream and advance the offsets.
    exec(p.addr(), None, &["SET", "streamed", "1"])
        .await
        .unwrap();
    let (pr, rr) = wait_in_sync(&pc, &rc).await;

    assert_eq!(pr.role(), Role::Primary);
    assert_eq!(pr.server.kind, kind);
    assert_eq!(pr.server.tcp_port, Some(p.addr().port()));
    assert_eq!(pr.keys, Some(101));
    assert_eq!(pr.replication.connected_replicas, 1);
    let entry = &pr.replication.replicas[0];
    // The replica announces its own 127.0.0.x address, not the connection's source address.
    assert_eq!(
        (entry.ip.as_str(), entry.port),
        (&*r.addr().ip().to_string(), r.addr().port())
    );
    assert!(entry.online());
    assert_eq!(
        pr.replication.failover_state,
        Some(FailoverState::NoFailover)
    );
    assert!(pr.offset().unwrap() > 0);

    assert_eq!(rr.role(), Role::Replica);
    assert_eq!(rr.replica_of(), Some(HostPort::from(p.addr())));
    assert!(rr.link_up());
    assert!(!rr.syncing());
    assert_eq!(rr.keys, Some(101));
    assert_eq!(rr.offset(), pr.offset());
    assert_eq!(rr.replication.replid, pr.replication.replid);
    assert!(!rr.persistence.loading);

    let role = rc.role().await.unwrap();
    assert!(
        matches!(role, kvpilot::engine::RoleReply::Replica { port, .. } if port == p.addr().port())
    );
}

pub async fn failover_swaps_roles(binary: &str, dialect: Dialect) {
    let (_lab, p, r, pc, rc) = pair(binary, dialect).await;
    pc.failover_to(&HostPort::from(r.addr()), Duration::from_secs(3))
        .await
        .expect("failover");
    let old = pc.observe().await.unwrap();
    assert_eq!(old.role(), Role::Replica);
    assert_eq!(old.replica_of(), Some(HostPort::from(r.addr())));
    let new = rc.observe().await.unwrap();
    assert_eq!(new.role(), Role::Primary);
    // The new primary takes writes and the old one follows it.
    exec(r.addr(), None, &["SET", "after", "1"]).await.unwrap();
    let (_, follower) = wait_in_sync(&rc, &pc).await;
    assert_eq!(follower.keys, Some(101));
    // A replica refuses writes: no acknowledged write can land on the demoted member.
    let refused = exec(p.addr(), None, &["SET", "x", "1"]).await.unwrap_err();
    assert_eq!(refused.code(), Some("READONLY"));
}

pub async fn failover_timeout_aborts(binary: &str, dialect: Dialect) {
    let (_lab, p, r, pc, _rc) = pair(binary, dialect).await;
    // A frozen replica never acknowledges the primary's offset, so the handover cannot finish.
    r.pause().unwrap();
    exec(p.addr(), None, &["SET", "pending", "1"])
        .await
        .unwrap();
    let err = pc
        .failover_to(&HostPort::from(r.addr()), Duration::from_millis(300))
        .await
        .expect_err("handover to a frozen replica must fail");
    r.resume().unwrap();
    let message = err.to_string();
    assert!(
        matches!(err, EngineError::HandoverFailed { .. }),
        "{message}"
    );
    assert!(message.contains(&p.addr().to_string()), "{message}");
    assert!(message.contains("FAILOVER TO"), "{message}");
    let after = pc.observe().await.unwrap();
    assert_eq!(after.role(), Role::Primary);
    assert_eq!(
        after.replication.failover_state,
        Some(FailoverState::NoFailover)
    );
    exec(p.addr(), None, &["SET", "writable", "1"])
        .await
        .unwrap();

    // A target that is not a replica is refused by the server at once.
    let err = pc
        .failover_to(&HostPort::new("127.0.0.1", 1), Duration::from_millis(300))
        .await
        .expect_err("not a replica");
    assert!(matches!(err, EngineError::Command { .. }), "{err}");
}

pub async fn kill_fences_clients_but_not_ours(binary: &str, dialect: Dialect) {
    let mut lab = Lab::new(binary);
    let p = lab.start_new().await;
    let ours = client(&p, None, dialect).await;
    let others = [
        client(&p, None, dialect).await,
        client(&p, None, dialect).await,
    ];
    for o in &others {
        o.ping().await.unwrap();
    }
    let killed = ours.kill_normal_clients().await.unwrap();
    assert_eq!(killed, 2);
    ours.ping().await.expect("our own connection survives");
    for o in &others {
        let err = o.ping().await.expect_err("fenced connection");
        assert!(err.is_unreachable(), "{err}");
    }
}

pub async fn auth_with_requirepass(binary: &str, dialect: Dialect) {
    let mut lab = Lab::new(binary);
    let mut spec = lab.spec();
    spec.password = Some("s3cret".into());
    let p = lab.start(&spec).await;
    let mut rspec = lab.spec();
    rspec.password = Some("s3cret".into());
    rspec.replicaof = Some(p.addr());
    let r = lab.start(&rspec).await;

    let anonymous = client(&p, None, dialect).await;
    let err = anonymous.observe().await.expect_err("NOAUTH");
    assert!(!err.is_unreachable(), "the server answered: {err}");
    assert!(err.to_string().contains("NOAUTH"), "{err}");

    let err = Client::connect(p.addr(), Some("wrong"), dialect)
        .await
        .expect_err("wrong password");
    assert!(matches!(err, EngineError::Connect { .. }), "{err}");
    assert!(!err.to_string().contains("wrong"), "password leaked: {err}");

    let pc = client(&p, Some("s3cret"), dialect).await;
    let rc = client(&r, Some("s3cret"), dialect).await;
    exec(p.addr(), Some("s3cret"), &["SET", "a", "1"])
        .await
        .unwrap();
    // The replica authenticates to the primary with masterauth.
    let (_, rr) = wait_in_sync(&pc, &rc).await;
    assert_eq!(rr.keys, Some(1));
}

pub async fn config_and_snapshots(binary: &str, dialect: Dialect) {
    let mut lab = Lab::new(binary);
    let p = lab.start_new().await;
    let c = client(&p, None, dialect).await;
    c.config_set("maxmemory-policy", "allkeys-lru")
        .await
        .unwrap();
    assert_eq!(
        c.config_get("maxmemory-policy").await.unwrap().as_deref(),
        Some("allkeys-lru")
    );
    assert_eq!(c.config_get("no-such-setting").await.unwrap(), None);
    let err = c.config_set("maxmemory-policy", "bogus").await.unwrap_err();
    assert!(
        err.to_string()
            .contains("CONFIG SET maxmemory-policy bogus"),
        "{err}"
    );

    exec(p.addr(), None, &["SET", "a", "1"]).await.unwrap();
    let before = c.lastsave().await.unwrap();
    // LASTSAVE has one-second resolution: wait for the next second so a new save is visible.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.bgsave().await.unwrap();
    eventually(Duration::from_secs(10), "BGSAVE to finish", || async {
        let report = c.observe().await.ok()?;
        let last = c.lastsave().await.ok()?;
        (!report.persistence.bgsave_in_progress && last > before).then_some(())
    })
    .await;
    let report = c.observe().await.unwrap();
    assert_eq!(report.persistence.last_bgsave_ok, Some(true));
    assert_eq!(report.persistence.changes_since_last_save, Some(0));
    assert!(p.dir().join("dump.rdb").is_file());
}

pub async fn dead_member_fails_fast(binary: &str, dialect: Dialect) {
    let mut lab = Lab::new(binary);
    let mut p = lab.start_new().await;
    let c = client(&p, None, dialect).await;
    p.pause().unwrap();
    let started = std::time::Instant::now();
    let err = c.observe().await.expect_err("frozen member");
    let waited = started.elapsed();
    p.resume().unwrap();
    assert!(matches!(err, EngineError::Timeout { .. }), "{err}");
    assert!(err.is_unreachable());
    // Bounded by the response timeout (not a speed assertion: an unbounded wait would hang).
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    p.kill().unwrap();
    for _ in 0..250 {
        if !p.is_alive() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!p.is_alive(), "SIGKILLed member still alive after 5 s");
    let err = Client::connect(p.addr(), None, dialect)
        .await
        .expect_err("dead member");
    assert!(err.is_unreachable(), "{err}");
    assert!(err.to_string().contains(&p.addr().to_string()), "{err}");
}
