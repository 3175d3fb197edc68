//! Shared helpers for tests against real servers: find the binaries, start members on free
//! loopback addresses under a guard, send raw commands, wait with bounds.
#![allow(dead_code)] // each test binary uses a different subset

pub mod cluster_cases;
pub mod engine_cases;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use kvpilot::platform::local::server::{Server, ServerGuard, ServerSpec, free_loopback_addr};
use redis::Value;

/// The server binary, or a panic that says what to install (CI installs both; a missing binary
/// must fail the test, not skip it).
pub fn binary(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` not found on PATH: install it (Debian: `apt install {name}`; valkey-server \
                 from bookworm-backports) to run these tests"
            )
        })
}

/// A test's members: a temp dir, a guard that kills every member on drop (also on panic).
pub struct Lab {
    pub binary: PathBuf,
    pub dir: tempfile::TempDir,
    pub guard: ServerGuard,
    count: usize,
}

impl Lab {
    pub fn new(binary_name: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let guard = ServerGuard::new();
        guard.track_dir(dir.path());
        Self {
            binary: binary(binary_name),
            dir,
            guard,
            count: 0,
        }
    }

    /// A spec for a new member on its own 127.0.0.x address and free port.
    pub fn spec(&mut self) -> ServerSpec {
        self.count += 1;
        let addr = free_loopback_addr().expect("free loopback address");
        let SocketAddr::V4(v4) = addr else {
            unreachable!()
        };
        let mut spec = ServerSpec::new(
            self.binary.clone(),
            *v4.ip(),
            v4.port(),
            self.dir.path().join(format!("m{}", self.count)),
        );
        // Start a full sync at once instead of waiting for more replicas (default 5 s).
        spec.config
            .insert("repl-diskless-sync-delay".into(), "0".into());
        spec.revision = "r1".into();
        spec
    }

    pub async fn start(&mut self, spec: &ServerSpec) -> Server {
        let server = Server::start(spec).await.expect("start member");
        self.guard.track(&server);
        server
    }

    pub async fn start_new(&mut self) -> Server {
        let spec = self.spec();
        self.start(&spec).await
    }
}

/// Sends one command over a fresh connection and returns the reply (errors as `Err`).
pub async fn exec(
    addr: SocketAddr,
    password: Option<&str>,
    args: &[&str],
) -> redis::RedisResult<Value> {
    let url = match password {
        Some(p) => format!("redis://:{p}@{addr}/"),
        None => format!("redis://{addr}/"),
    };
    query(redis::Client::open(url)?, args).await
}

/// Sends one command as ACL user `user` over a fresh plain connection.
pub async fn exec_as(
    addr: SocketAddr,
    user: &str,
    password: &str,
    args: &[&str],
) -> redis::RedisResult<Value> {
    use redis::IntoConnectionInfo;
    let info = redis::ConnectionAddr::Tcp(addr.ip().to_string(), addr.port())
        .into_connection_info()?
        .set_redis_settings(
            redis::RedisConnectionInfo::default()
                .set_username(user)
                .set_password(password),
        );
    query(redis::Client::open(info)?, args).await
}

/// Sends `args` over a fresh connection of `client` (connect bounded to 2 s).
async fn query(client: redis::Client, args: &[&str]) -> redis::RedisResult<Value> {
    let mut conn = tokio::time::timeout(
        Duration::from_secs(2),
        client.get_multiplexed_async_connection(),
    )
    .await
    .map_err(|_| redis::RedisError::from(std::io::Error::other("connect timeout")))??;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(&mut conn).await
}

/// Polls `check` every 20 ms until it returns `Some`, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = tokio::time::Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
