//! Local platform primitives against real servers: member processes (start, adopt, terminate,
//! kill) and the primary-endpoint forwarder.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use kvpilot::platform::local::forwarder::Forwarder;
use kvpilot::platform::local::server::{
    STATE_FILE, Server, ServerError, ServerSpec, next_loopback_ip, read_state,
};
use support::{Lab, exec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn member_is_adopted_from_its_state_file() {
    let mut lab = Lab::new("valkey-server");
    let mut spec = lab.spec();
    spec.revision = "rev-7".into();
    let mut started = lab.start(&spec).await;
    let state = read_state(&spec.dir).unwrap();
    assert_eq!(state.pid, started.pid());
    assert_eq!(state.addr(), spec.addr());
    assert_eq!(state.revision, "rev-7");
    // Its own process group: Ctrl-C on kvpilot's terminal does not reach it.
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", started.pid())).unwrap();
    let pgrp: u32 = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(pgrp, started.pid());

    let mut adopted = Server::adopt(&spec.dir).expect("adopt a running member");
    assert_eq!(adopted.pid(), started.pid());
    assert!(adopted.is_alive());
    exec(adopted.addr(), None, &["SET", "k", "v"])
        .await
        .unwrap();

    adopted.terminate(Duration::from_secs(5)).await.unwrap();
    assert!(!adopted.is_alive());
    // The spawning handle reaps it too. `terminate` waits for the last thread (a zombie
    // leader alone is not gone: CI once caught that); the parent's wait may still lag the
    // thread list by a moment, hence a short bounded wait rather than one look.
    let mut waits = 0;
    while started.is_alive() && waits < 100 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        waits += 1;
    }
    assert!(
        !started.is_alive(),
        "the spawner still sees it alive after 1 s"
    );
    assert!(
        !spec.dir.join(STATE_FILE).exists(),
        "a clean stop removes the state file"
    );
    assert!(matches!(
        Server::adopt(&spec.dir),
        Err(ServerError::Io { .. })
    ));
}

#[tokio::test]
async fn killed_member_is_not_adopted() {
    let mut lab = Lab::new("redis-server");
    let spec = lab.spec();
    let mut server = lab.start(&spec).await;
    server.kill().unwrap();
    for _ in 0..250 {
        if !server.is_alive() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!server.is_alive());
    // The state file survives the crash, but names a dead process.
    let err = Server::adopt(&spec.dir).expect_err("dead member");
    assert!(matches!(err, ServerError::NotRunning { .. }), "{err}");
    // A restart in the same directory is adopted again.
    let restarted = lab.start(&spec).await;
    assert_ne!(restarted.pid(), server.pid());
    assert_eq!(Server::adopt(&spec.dir).unwrap().pid(), restarted.pid());
}

#[tokio::test]
async fn start_failures_are_explained() {
    let mut lab = Lab::new("valkey-server");
    let mut spec = lab.spec();
    spec.binary = "/nonexistent/valkey-server".into();
    let err = Server::start(&spec).await.expect_err("missing binary");
    assert!(err.to_string().contains("apt install"), "{err}");

    let mut spec = lab.spec();
    spec.config.insert("no-such-directive".into(), "1".into());
    let err = Server::start(&spec).await.expect_err("bad config");
    assert!(matches!(err, ServerError::Exited { .. }), "{err}");
    assert!(err.to_string().contains("no-such-directive"), "{err}");
}

/// Sends PING as raw RESP and returns the first reply line; `None` if the connection closed.
async fn ping(stream: &mut TcpStream) -> Option<String> {
    stream.write_all(b"*1\r\n$4\r\nPING\r\n").await.ok()?;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("reply or close within 5 s")
        .ok()?;
    (n > 0).then(|| String::from_utf8_lossy(&buf[..n]).trim_end().to_owned())
}

/// Waits for the peer to close the connection (bounded).
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(limit, stream.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// The port of the member behind an established raw connection (`CONFIG GET port`).
async fn port_behind_on(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$4\r\nport\r\n")
        .await
        .expect("send CONFIG GET port");
    // `*2 $4 port $N <port>`: five lines.
    let mut reply = Vec::new();
    let mut buf = [0u8; 128];
    while reply.iter().filter(|b| **b == b'\n').count() < 5 {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("a reply within 5 s")
            .expect("read");
        assert!(n > 0, "the connection closed");
        reply.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8(reply).expect("text");
    text.lines().nth(4).expect("the port").trim().to_owned()
}

async fn port_behind(endpoint: SocketAddr) -> String {
    let info = exec(endpoint, None, &["INFO", "server"]).await.unwrap();
    let redis::Value::BulkString(bytes) = info else {
        panic!("INFO is a bulk string")
    };
    let text = String::from_utf8(bytes).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("tcp_port:"))
        .unwrap()
        .trim()
        .to_owned()
}

#[tokio::test]
async fn forwarder_follows_the_primary() {
    let mut lab = Lab::new("valkey-server");
    let a = lab.start_new().await;
    let b = lab.start_new().await;
    let listen = SocketAddr::new(next_loopback_ip().into(), 0);
    let forwarder = Forwarder::bind(listen).await.unwrap();
    let endpoint = forwarder.local_addr();
    assert_eq!(forwarder.target(), None);

    forwarder.set_target(Some(a.addr()));
    assert_eq!(forwarder.target(), Some(a.addr()));
    exec(endpoint, None, &["SET", "via", "endpoint"])
        .await
        .unwrap();
    let direct = exec(a.addr(), None, &["GET", "via"]).await.unwrap();
    assert_eq!(direct, redis::Value::BulkString(b"endpoint".to_vec()));
    assert_eq!(port_behind(endpoint).await, a.addr().port().to_string());

    let mut old = TcpStream::connect(endpoint).await.unwrap();
    assert_eq!(ping(&mut old).await.as_deref(), Some("+PONG"));
    // Setting the same target again keeps connections open.
    forwarder.set_target(Some(a.addr()));
    assert_eq!(ping(&mut old).await.as_deref(), Some("+PONG"));

    // Like a Kubernetes Service: a new target gets the new connections, and an established
    // one stays with the member it reached (fencing that member is the operator's job).
    forwarder.set_target(Some(b.addr()));
    assert_eq!(port_behind(endpoint).await, b.addr().port().to_string());
    assert_eq!(ping(&mut old).await.as_deref(), Some("+PONG"));
    assert_eq!(
        port_behind_on(&mut old).await,
        a.addr().port().to_string(),
        "the established connection still reaches the old target"
    );

    forwarder.shutdown().await;
    assert!(
        TcpStream::connect(endpoint).await.is_err(),
        "no longer listening"
    );
}

#[tokio::test]
async fn forwarder_without_target_waits_then_closes() {
    let mut lab = Lab::new("valkey-server");
    let a = lab.start_new().await;
    let forwarder = Forwarder::bind(SocketAddr::new(next_loopback_ip().into(), 0))
        .await
        .unwrap();
    let endpoint = forwarder.local_addr();

    // No target: the connection is held, then closed.
    let mut waiting = TcpStream::connect(endpoint).await.unwrap();
    assert!(closed_within(&mut waiting, Duration::from_secs(5)).await);

    // A target that appears while a client waits is used.
    let mut early = TcpStream::connect(endpoint).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    forwarder.set_target(Some(a.addr()));
    assert_eq!(ping(&mut early).await.as_deref(), Some("+PONG"));

    // Losing the target keeps established connections, and new ones wait for a target.
    forwarder.set_target(None);
    assert_eq!(ping(&mut early).await.as_deref(), Some("+PONG"));

    // A dropped forwarder closes what it forwarded.
    forwarder.set_target(Some(a.addr()));
    let mut live = TcpStream::connect(endpoint).await.unwrap();
    assert_eq!(ping(&mut live).await.as_deref(), Some("+PONG"));
    drop(forwarder);
    assert!(closed_within(&mut live, Duration::from_secs(5)).await);
}

#[tokio::test]
async fn spec_rejects_reserved_keys_before_starting() {
    let mut spec = ServerSpec::new(
        support::binary("valkey-server"),
        next_loopback_ip(),
        1,
        "/nonexistent",
    );
    spec.config.insert("bind".into(), "0.0.0.0".into());
    let err = Server::start(&spec).await.expect_err("reserved key");
    assert!(matches!(err, ServerError::ReservedKey { .. }), "{err}");
}
