//! Engine behaviour against real servers, shared by `engine_valkey.rs` and `engine_redis.rs`
//! through [`engine_tests!`].

use std::time::Duration;

use kvpilot::engine::{
    Client, ConnectOptions, Credentials, Dialect, EngineError, FailoverState, HostPort,
    MemberReport, Role, RoleReply, ServerKind,
};
use kvpilot::observe::{Access, Clients};
use kvpilot::platform::local::server::{Server, ServerSpec};
use redis::Value;

use super::tls::{TestCa, exec_tls};
use super::{Lab, eventually, exec, exec_as};

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
        #[tokio::test]
        async fn tls_observe_replicate_and_refuse_a_wrong_ca() {
            support::engine_cases::tls_observe_replicate_and_refuse_a_wrong_ca(
                $binary, $dialect, $kind,
            )
            .await;
        }
        #[tokio::test]
        async fn tls_client_certificates_when_required() {
            support::engine_cases::tls_client_certificates_when_required($binary, $dialect).await;
        }
        #[tokio::test]
        async fn acl_user_observes_replicates_hands_over_and_rotates() {
            support::engine_cases::acl_user_observes_replicates_hands_over_and_rotates(
                $binary, $dialect,
            )
            .await;
        }
        #[tokio::test]
        async fn kill_by_id_keeps_replication_and_ours() {
            support::engine_cases::kill_by_id_keeps_replication_and_ours($binary, $dialect).await;
        }
        #[tokio::test]
        async fn password_rotation_moves_every_member() {
            support::engine_cases::password_rotation_moves_every_member($binary, $dialect).await;
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
/// Polls until the handover target reports the primary role (at most 3 s, as act does).
async fn target_becomes_primary(target: &Client) {
    eventually(
        Duration::from_secs(3),
        "the target to report primary",
        || async {
            match target.observe().await {
                Ok(r) if r.role() == Role::Primary => Some(()),
                _ => None,
            }
        },
    )
    .await;
}

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
    // Keys in another database count too (the data-holding guard must see them).
    let mut db3 = redis::Client::open(format!("redis://{}/3", p.addr()))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let () = redis::cmd("SET")
        .arg("in-db3")
        .arg("1")
        .query_async(&mut db3)
        .await
        .unwrap();
    let (pr, rr) = wait_in_sync(&pc, &rc).await;

    assert_eq!(pr.role(), Role::Primary);
    assert_eq!(pr.server.kind, kind);
    assert_eq!(pr.server.tcp_port, Some(p.addr().port()));
    assert_eq!(pr.keys, Some(102));
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
    assert_eq!(rr.keys, Some(102));
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
    // FAILOVER is done once the old primary has handed over; the target switches roles a
    // moment later (act confirms the same way).
    target_becomes_primary(&rc).await;
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

/// The one-by-one kill Dragonfly uses (`CLIENT LIST` + `CLIENT KILL ID`), on a real primary
/// with a replica attached: normal clients go, the replica's link and our connection stay.
pub async fn kill_by_id_keeps_replication_and_ours(binary: &str, dialect: Dialect) {
    let (_lab, p, _r, pc, rc) = pair(binary, dialect).await;
    // The primary's connection from its replica (flag S), by id.
    let replica_link = || async {
        let list = exec(p.addr(), None, &["CLIENT", "LIST"]).await.unwrap();
        let redis::Value::BulkString(text) = list else {
            panic!("CLIENT LIST: {list:?}")
        };
        let text = String::from_utf8(text).unwrap();
        let links: Vec<String> = text
            .lines()
            .filter(|l| l.split(' ').any(|f| f == "flags=S"))
            .filter_map(|l| l.split(' ').next().map(str::to_string))
            .collect();
        assert_eq!(links.len(), 1, "{text}");
        links[0].clone()
    };
    let link_before = replica_link().await;
    let others = [
        client(&p, None, dialect).await,
        client(&p, None, dialect).await,
    ];
    for o in &others {
        o.ping().await.unwrap();
    }
    let killed = pc.kill_clients_by_id().await.unwrap();
    assert_eq!(killed, 2, "the two normal clients, nothing else");
    pc.ping().await.expect("our own connection survives");
    for o in &others {
        let err = o.ping().await.expect_err("fenced connection");
        assert!(err.is_unreachable(), "{err}");
    }
    // The replica's link was not closed: it is still in sync, and a write reaches it.
    exec(p.addr(), None, &["SET", "after-kill", "1"])
        .await
        .unwrap();
    let (_, r) = wait_in_sync(&pc, &rc).await;
    assert!(r.link_up());
    assert_eq!(
        replica_link().await,
        link_before,
        "the same replication connection"
    );
    let p_report = pc.observe().await.unwrap();
    assert_eq!(
        p_report.replication.replicas.len(),
        1,
        "still one replica: {p_report:?}"
    );
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
    assert!(matches!(err, EngineError::AuthRefused { .. }), "{err}");
    assert!(err.is_auth_refused() && !err.is_unreachable(), "{err}");
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

/// A member serving TLS only, with a certificate for `name` (a DNS name, not its IP) from
/// `ca`; `tls-auth-clients optional` as the operator renders it unless `config` says otherwise.
fn tls_spec(lab: &mut Lab, ca: &TestCa, name: &str) -> ServerSpec {
    let mut spec = lab.spec();
    let issued = ca.issue(&[name]);
    spec.tls = Some(ca.member_files(&spec.dir.join("tls"), &issued, name));
    spec.config
        .insert("tls-auth-clients".into(), "optional".into());
    spec
}

fn tls_options(ca: &TestCa, name: &str) -> ConnectOptions {
    ConnectOptions {
        credentials: None,
        tls: Some(ca.client_config(None)),
        server_name: Some(name.to_string()),
    }
}

pub async fn tls_observe_replicate_and_refuse_a_wrong_ca(
    binary: &str,
    dialect: Dialect,
    kind: ServerKind,
) {
    let ca = TestCa::new("kvpilot test CA");
    let mut lab = Lab::new(binary);
    let (pname, rname) = ("p.members.test", "r.members.test");
    let pspec = tls_spec(&mut lab, &ca, pname);
    let p = lab.start(&pspec).await;
    let rspec = tls_spec(&mut lab, &ca, rname);
    let r = lab.start(&rspec).await;
    // Dial the IP, verify the DNS name: what the operator does with pod IPs.
    let pc = Client::connect_with(p.addr(), &tls_options(&ca, pname), dialect)
        .await
        .expect("TLS connect to the primary");
    let rc = Client::connect_with(r.addr(), &tls_options(&ca, rname), dialect)
        .await
        .expect("TLS connect to the replica");
    for i in 0..50 {
        exec_tls(
            p.addr(),
            &ca,
            None,
            pname,
            None,
            &["SET", &format!("k{i}"), "v"],
        )
        .await
        .expect("write over TLS");
    }
    // The members listen on TLS only (`port 0`), so this replica can only sync over TLS.
    rc.replicaof(&HostPort::from(p.addr())).await.unwrap();
    let (pr, rr) = wait_in_sync(&pc, &rc).await;
    assert_eq!(pr.server.kind, kind);
    assert_eq!(pr.role(), Role::Primary);
    assert_eq!(pr.keys, Some(50));
    assert_eq!(rr.keys, Some(50));
    assert!(rr.link_up());
    assert_eq!(rr.replica_of(), Some(HostPort::from(p.addr())));
    let role = rc.role().await.unwrap();
    assert!(
        matches!(role, RoleReply::Replica { port, .. } if port == p.addr().port()),
        "{role:?}"
    );
    exec_tls(p.addr(), &ca, None, pname, None, &["SET", "streamed", "1"])
        .await
        .unwrap();
    let (_, rr) = wait_in_sync(&pc, &rc).await;
    assert_eq!(rr.keys, Some(51));

    // Plain RESP on the TLS port gets no answer.
    let plain = match Client::connect(p.addr(), None, dialect).await {
        Ok(c) => c.ping().await.map(|()| "PONG"),
        Err(e) => Err(e),
    };
    assert!(
        plain.is_err(),
        "a plain client was answered on the TLS port"
    );

    // A certificate from another CA is refused, naming the member and the name checked.
    let other = TestCa::new("another CA");
    let err = Client::connect_with(p.addr(), &tls_options(&other, pname), dialect)
        .await
        .expect_err("a member whose certificate is not from the trusted CA");
    let message = err.to_string();
    assert!(matches!(err, EngineError::Tls { .. }), "{message}");
    assert!(!err.is_unreachable(), "{message}");
    assert!(message.contains(&p.addr().to_string()), "{message}");
    assert!(message.contains(pname), "{message}");
    assert!(message.contains("UnknownIssuer"), "{message}");
    // The right CA but a name the certificate does not carry: refused too.
    let err = Client::connect_with(p.addr(), &tls_options(&ca, rname), dialect)
        .await
        .expect_err("a certificate for another name");
    assert!(matches!(err, EngineError::Tls { .. }), "{err}");
    assert!(err.to_string().contains(rname), "{err}");
    // Verifying the dialed IP fails: the certificate names DNS names only, which is why the
    // operator verifies pod DNS names.
    let by_ip = ConnectOptions {
        server_name: None,
        ..tls_options(&ca, pname)
    };
    let err = Client::connect_with(p.addr(), &by_ip, dialect)
        .await
        .expect_err("no IP SAN");
    assert!(matches!(err, EngineError::Tls { .. }), "{err}");
}

pub async fn tls_client_certificates_when_required(binary: &str, dialect: Dialect) {
    let ca = TestCa::new("kvpilot test CA");
    let mut lab = Lab::new(binary);
    let name = "p.members.test";
    let mut spec = tls_spec(&mut lab, &ca, name);
    spec.config.insert("tls-auth-clients".into(), "yes".into());
    let p = lab.start(&spec).await;

    let err = Client::connect_with(p.addr(), &tls_options(&ca, name), dialect)
        .await
        .expect_err("no client certificate");
    let message = err.to_string();
    assert!(matches!(err, EngineError::Tls { .. }), "{message}");
    assert!(message.contains(&p.addr().to_string()), "{message}");
    assert!(message.contains("client certificate"), "{message}");

    let operator = ca.issue(&["kvpilot-operator"]);
    let with_cert = ConnectOptions {
        tls: Some(ca.client_config(Some(&operator))),
        ..tls_options(&ca, name)
    };
    let client = Client::connect_with(p.addr(), &with_cert, dialect)
        .await
        .expect("a client certificate from the CA");
    assert_eq!(client.observe().await.unwrap().role(), Role::Primary);

    let stranger = TestCa::new("another CA").issue(&["kvpilot-operator"]);
    let foreign = ConnectOptions {
        tls: Some(ca.client_config(Some(&stranger))),
        ..tls_options(&ca, name)
    };
    let err = Client::connect_with(p.addr(), &foreign, dialect)
        .await
        .expect_err("a client certificate from another CA");
    assert!(matches!(err, EngineError::Tls { .. }), "{err}");
}

/// The operator's ACL user with exactly the commands `spec.auth` documents, the `default`
/// user switched off, and an application user.
fn acl_file(operator_password: &str) -> String {
    format!(
        "user default off\n\
         user kvpilot on >{operator_password} -@all +@connection +info +role +dbsize \
         +replicaof +failover +client|kill +config|get +config|set +acl|setuser +bgsave \
         +lastsave +psync +replconf\n\
         user app on >app-pw ~* &* +@all\n"
    )
}

fn acl_spec(lab: &mut Lab, operator_password: &str) -> ServerSpec {
    let mut spec = lab.spec();
    std::fs::create_dir_all(&spec.dir).unwrap();
    let path = spec.dir.join("users.acl");
    std::fs::write(&path, acl_file(operator_password)).unwrap();
    spec.config
        .insert("aclfile".into(), path.display().to_string());
    spec.username = Some("kvpilot".into());
    spec.password = Some(operator_password.into());
    spec
}

fn acl_access(password: &str) -> Access {
    Access {
        credentials: Some(Credentials::user("kvpilot", password)),
        acl: true,
        ..Access::default()
    }
}

/// Kills `replica`'s link on `primary` (as the application user) and proves it comes back:
/// a key written afterwards reaches the replica, so the replica authenticated again.
async fn relink(primary: &Server, primary_client: &Client, replica_client: &Client, key: &str) {
    let killed = exec_as(
        primary.addr(),
        "app",
        "app-pw",
        &["CLIENT", "KILL", "TYPE", "replica"],
    )
    .await
    .unwrap();
    assert_eq!(killed, Value::Int(1), "one replication link killed");
    exec_as(primary.addr(), "app", "app-pw", &["SET", key, "1"])
        .await
        .unwrap();
    let (p, r) = wait_in_sync(primary_client, replica_client).await;
    assert_eq!(r.keys, p.keys);
}

pub async fn acl_user_observes_replicates_hands_over_and_rotates(binary: &str, dialect: Dialect) {
    let mut lab = Lab::new(binary);
    let pspec = acl_spec(&mut lab, "pw-1");
    let p = lab.start(&pspec).await;
    let mut rspec = acl_spec(&mut lab, "pw-1");
    rspec.replicaof = Some(p.addr());
    let r = lab.start(&rspec).await;
    for i in 0..20 {
        exec_as(p.addr(), "app", "app-pw", &["SET", &format!("k{i}"), "v"])
            .await
            .unwrap();
    }
    let clients = Clients::with_access(dialect, acl_access("pw-1"));
    let pc = clients.get("p", p.addr()).await.expect("AUTH as kvpilot");
    let rc = clients.get("r", r.addr()).await.expect("AUTH as kvpilot");
    // The replica authenticated to its primary as `masteruser kvpilot`.
    let (pr, rr) = wait_in_sync(&pc, &rc).await;
    assert_eq!((pr.keys, rr.keys), (Some(20), Some(20)));

    // `default` is off: an anonymous session is refused every command.
    let anonymous = Client::connect(p.addr(), None, dialect).await.unwrap();
    let err = anonymous.ping().await.expect_err("default user is off");
    assert!(err.is_auth_refused(), "{err}");
    // The operator's user reaches no data.
    let denied = exec_as(p.addr(), "kvpilot", "pw-1", &["GET", "k1"])
        .await
        .expect_err("kvpilot may not read keys");
    assert_eq!(denied.code(), Some("NOPERM"), "{denied}");

    // A handover as the ACL user: the primary's PSYNC to the target authenticates as
    // kvpilot too.
    pc.failover_to(&HostPort::from(r.addr()), Duration::from_secs(5))
        .await
        .expect("FAILOVER as kvpilot");
    target_becomes_primary(&rc).await;
    let (_, follower) = wait_in_sync(&rc, &pc).await;
    assert_eq!(follower.keys, Some(20));

    // Rotation: every member is moved to the new password through its session.
    assert!(clients.configure(dialect, acl_access("pw-2")));
    let new_primary = clients
        .apply_credentials("r", r.addr())
        .await
        .expect("moved to pw-2");
    let new_replica = clients
        .apply_credentials("p", p.addr())
        .await
        .expect("moved to pw-2");
    let notes = clients.take_notes();
    assert_eq!(notes.len(), 2, "{notes:?}");
    for member in [&p, &r] {
        let old = ConnectOptions {
            credentials: Some(Credentials::user("kvpilot", "pw-1")),
            ..ConnectOptions::default()
        };
        let err = Client::connect_with(member.addr(), &old, dialect)
            .await
            .expect_err("the old password is gone");
        assert!(matches!(err, EngineError::AuthRefused { .. }), "{err}");
        assert!(!err.to_string().contains("pw-1"), "password leaked: {err}");
        let new = ConnectOptions {
            credentials: Some(Credentials::user("kvpilot", "pw-2")),
            ..ConnectOptions::default()
        };
        Client::connect_with(member.addr(), &new, dialect)
            .await
            .expect("the new password works");
    }
    // The replica re-authenticates to its primary with the new masterauth.
    relink(&r, &new_primary, &new_replica, "after-rotation").await;
}

pub async fn password_rotation_moves_every_member(binary: &str, dialect: Dialect) {
    let mut lab = Lab::new(binary);
    let mut pspec = lab.spec();
    pspec.password = Some("pw-1".into());
    let p = lab.start(&pspec).await;
    let mut rspec = lab.spec();
    rspec.password = Some("pw-1".into());
    rspec.replicaof = Some(p.addr());
    let r = lab.start(&rspec).await;
    // No password at all: auth is being turned on for it.
    let q = lab.start_new().await;
    exec(p.addr(), Some("pw-1"), &["SET", "a", "1"])
        .await
        .unwrap();

    let clients = Clients::new(dialect, Some("pw-1".into()));
    clients.get("p", p.addr()).await.expect("pw-1");
    assert!(!clients.configure(dialect, clients.access()), "unchanged");
    let rotated = Access {
        credentials: Some(Credentials::password("pw-2")),
        ..Access::default()
    };
    assert!(clients.configure(dialect, rotated));
    // p through its pooled session; r (never connected) refuses pw-2, accepts pw-1 and is
    // moved; q accepts no password and is given one.
    // Observing changes nothing, but still sees r: it is reached with pw-1, which it still
    // has, and keeps it until it is moved.
    let observed = clients
        .get("r", r.addr())
        .await
        .expect("observation falls back to the previous password");
    observed.observe().await.expect("r observed");
    let new = Client::connect(r.addr(), Some("pw-2"), dialect).await;
    let old = Client::connect(r.addr(), Some("pw-1"), dialect).await;
    assert!(new.is_err() && old.is_ok(), "get never moves a member");
    let pc = clients
        .apply_credentials("p", p.addr())
        .await
        .expect("p moved");
    let rc = clients
        .apply_credentials("r", r.addr())
        .await
        .expect("r moved");
    let qc = clients
        .apply_credentials("q", q.addr())
        .await
        .expect("q moved");
    let notes = clients.take_notes();
    assert_eq!(notes.len(), 3, "{notes:?}");
    assert!(
        notes.iter().all(|n| n.contains("new password")),
        "{notes:?}"
    );
    for member in [&p, &r, &q] {
        for stale in [None, Some("pw-1")] {
            let refused = match Client::connect(member.addr(), stale, dialect).await {
                Ok(c) => c.ping().await,
                Err(e) => Err(e),
            };
            let err = refused.expect_err("only the new password is accepted");
            assert!(err.is_auth_refused(), "{err}");
        }
        Client::connect(member.addr(), Some("pw-2"), dialect)
            .await
            .expect("pw-2")
            .ping()
            .await
            .expect("pw-2 is accepted");
    }
    assert_eq!(qc.observe().await.unwrap().role(), Role::Primary);
    // The replica's masterauth moved too: its link comes back after being cut.
    let killed = exec(
        p.addr(),
        Some("pw-2"),
        &["CLIENT", "KILL", "TYPE", "replica"],
    )
    .await
    .unwrap();
    assert_eq!(killed, Value::Int(1));
    exec(p.addr(), Some("pw-2"), &["SET", "b", "1"])
        .await
        .unwrap();
    let (_, rr) = wait_in_sync(&pc, &rc).await;
    assert_eq!(rr.keys, Some(2));
}
