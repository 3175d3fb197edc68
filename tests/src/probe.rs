//! Direct RESP checks on members and the endpoint, independent of the reconciler's own view.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Longest any single command of the harness may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between attempts of [`eventually`].
const RETRY: Duration = Duration::from_millis(50);

/// A member's replication role as it reports it (`INFO replication`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Primary,
    /// A replica of this address, with its link state.
    Replica {
        of: SocketAddr,
        link_up: bool,
    },
}

/// A connection to `addr` with the harness's timeouts.
pub async fn connect(addr: SocketAddr) -> Result<redis::aio::MultiplexedConnection, String> {
    let client =
        redis::Client::open(format!("redis://{addr}/")).map_err(|e| format!("{addr}: {e}"))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(COMMAND_TIMEOUT));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| format!("{addr}: connect: {e}"))
}

/// `DBSIZE` of one member.
pub async fn dbsize(addr: SocketAddr) -> Result<u64, String> {
    let mut conn = connect(addr).await?;
    redis::cmd("DBSIZE")
        .query_async(&mut conn)
        .await
        .map_err(|e| format!("{addr}: DBSIZE: {e}"))
}

/// The role a member reports.
pub async fn role(addr: SocketAddr) -> Result<Role, String> {
    let mut conn = connect(addr).await?;
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut conn)
        .await
        .map_err(|e| format!("{addr}: INFO replication: {e}"))?;
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    match field("role") {
        Some("master") => Ok(Role::Primary),
        Some("slave") => {
            let host = field("master_host").ok_or(format!("{addr}: no master_host"))?;
            let port = field("master_port").ok_or(format!("{addr}: no master_port"))?;
            let of = format!("{host}:{port}")
                .parse()
                .map_err(|e| format!("{addr}: master {host}:{port}: {e}"))?;
            Ok(Role::Replica {
                of,
                link_up: field("master_link_status") == Some("up"),
            })
        }
        other => Err(format!("{addr}: unexpected role {other:?}")),
    }
}

/// Writes `PREFIX:0..n` (value = the number) through `addr` in batches; fails on any error.
pub async fn fill(addr: SocketAddr, prefix: &str, n: u64) -> Result<(), String> {
    let mut conn = connect(addr).await?;
    let mut start = 0;
    while start < n {
        let end = (start + 500).min(n);
        let mut cmd = redis::cmd("MSET");
        for i in start..end {
            cmd.arg(format!("{prefix}:{i}")).arg(i.to_string());
        }
        let () = cmd
            .query_async(&mut conn)
            .await
            .map_err(|e| format!("{addr}: MSET: {e}"))?;
        start = end;
    }
    Ok(())
}

/// `SET key value` on a fresh connection to `addr` (through the endpoint: the current primary).
pub async fn set(addr: SocketAddr, key: &str, value: &str) -> Result<(), String> {
    let mut conn = connect(addr).await?;
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async(&mut conn)
        .await
        .map_err(|e| format!("{addr}: SET: {e}"))
}

/// `CONFIG GET key` on `addr` (the value, `None` if the key is unknown).
pub async fn config_get(addr: SocketAddr, key: &str) -> Result<Option<String>, String> {
    let mut conn = connect(addr).await?;
    let pairs: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(key)
        .query_async(&mut conn)
        .await
        .map_err(|e| format!("{addr}: CONFIG GET {key}: {e}"))?;
    Ok(pairs.get(1).cloned())
}

/// `CONFIG SET key value` on `addr`.
pub async fn config_set(addr: SocketAddr, key: &str, value: &str) -> Result<(), String> {
    let mut conn = connect(addr).await?;
    redis::cmd("CONFIG")
        .arg("SET")
        .arg(key)
        .arg(value)
        .query_async(&mut conn)
        .await
        .map_err(|e| format!("{addr}: CONFIG SET {key} {value}: {e}"))
}

/// `LASTSAVE` on `addr` (Unix seconds).
pub async fn lastsave(addr: SocketAddr) -> Result<i64, String> {
    let mut conn = connect(addr).await?;
    redis::cmd("LASTSAVE")
        .query_async(&mut conn)
        .await
        .map_err(|e| format!("{addr}: LASTSAVE: {e}"))
}

/// `GET key` on `addr`.
pub async fn get(addr: SocketAddr, key: &str) -> Result<Option<String>, String> {
    let mut conn = connect(addr).await?;
    redis::cmd("GET")
        .arg(key)
        .query_async(&mut conn)
        .await
        .map_err(|e| format!("{addr}: GET: {e}"))
}

/// Retries `attempt` until it returns `Ok`, for at most `limit`; panics with the last error.
pub async fn eventually<T>(
    what: &str,
    limit: Duration,
    mut attempt: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let started = Instant::now();
    loop {
        let last = match tokio::time::timeout(limit, attempt()).await {
            Ok(Ok(value)) => return value,
            Ok(Err(e)) => e,
            Err(_) => format!("one attempt took longer than {limit:?}"),
        };
        if started.elapsed() >= limit {
            panic!("{what}: not true after {limit:?}; last: {last}");
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Waits (bounded) until every member holds exactly `keys` keys.
pub async fn all_hold(members: &[SocketAddr], keys: u64, limit: Duration) {
    eventually(
        &format!("every member holds {keys} keys"),
        limit,
        async || {
            let mut sizes = Vec::new();
            for &m in members {
                sizes.push((m, dbsize(m).await?));
            }
            if sizes.iter().all(|(_, n)| *n == keys) {
                Ok(())
            } else {
                Err(format!("DBSIZE per member: {sizes:?}"))
            }
        },
    )
    .await;
}

/// `SAVE` on `addr`: a snapshot (with the member's replication ID and offset) on disk now.
pub async fn save(addr: SocketAddr) -> Result<(), String> {
    let mut conn = connect(addr).await?;
    redis::cmd("SAVE")
        .query_async(&mut conn)
        .await
        .map_err(|e| format!("{addr}: SAVE: {e}"))
}

/// Any command on `addr`, answered with a status or an integer (`REPLICAOF NO ONE`,
/// `FLUSHALL`…).
pub async fn exec(addr: SocketAddr, args: &[&str]) -> Result<redis::Value, String> {
    let mut conn = connect(addr).await?;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(&mut conn)
        .await
        .map_err(|e| format!("{addr}: {}: {e}", args.join(" ")))
}

/// The sequence numbers in `acked` whose key `PREFIX:SEQ` is missing on `addr`.
pub async fn missing(addr: SocketAddr, prefix: &str, acked: &[u64]) -> Result<Vec<u64>, String> {
    kvpilot::demo::verify::missing(addr, prefix, acked).await
}
