//! One connection to one member, with bounded timeouts on every command.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, Value,
};
use tokio::time::{Instant, sleep, timeout};

use super::dialect::{Dialect, EngineCommand, HandoverStyle};
use super::error::EngineError;
use super::info::{
    FailoverState, ParseError, PersistenceInfo, ReplicationInfo, Role, RoleReply, ServerInfo,
    parse_dbsize, reply_text,
};

/// Limit for establishing a TCP connection and authenticating. A dead member must not hold up a
/// reconcile; 500 ms is ample on a LAN or loopback.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Limit for a plain command (INFO, DBSIZE, REPLICAOF, CONFIG SET, CLIENT KILL, ...). None of
/// these has a server-side timeout; they answer in microseconds unless the member is stuck.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// How often [`Client::failover_to`] polls `INFO replication` while the handover runs.
pub const HANDOVER_POLL_INTERVAL: Duration = Duration::from_millis(10);
/// How much longer than the server-side handover timeout the client waits before it declares
/// the handover failed (safety rule 3: client timeouts exceed server-side timeouts). It covers
/// the final PSYNC round trip after the server's own deadline and one poll's response time.
pub const HANDOVER_CLIENT_MARGIN: Duration = Duration::from_secs(1);

/// A member address: host name or IP, and port.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct HostPort {
    /// Host name or IP literal, as the members should see it in `REPLICAOF`.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl HostPort {
    /// A member address.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
        }
    }
}

impl From<SocketAddr> for HostPort {
    fn from(addr: SocketAddr) -> Self {
        Self::new(addr.ip().to_string(), addr.port())
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Everything one [`Client::observe`] learned about a member, in one round trip.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemberReport {
    /// The member that answered.
    pub addr: HostPort,
    /// `INFO server`: software and version.
    pub server: ServerInfo,
    /// `INFO replication`.
    pub replication: ReplicationInfo,
    /// `INFO persistence`.
    pub persistence: PersistenceInfo,
    /// `DBSIZE`; `None` while the member is loading (it answers `-LOADING`).
    pub keys: Option<u64>,
}

impl MemberReport {
    /// Primary or replica.
    pub fn role(&self) -> Role {
        self.replication.role
    }

    /// For a replica, the primary it follows (`master_host`, `master_port`).
    pub fn replica_of(&self) -> Option<HostPort> {
        self.replication
            .primary
            .as_ref()
            .map(|p| HostPort::new(p.host.clone(), p.port))
    }

    /// A replica whose link to its primary is up. `false` for a primary.
    pub fn link_up(&self) -> bool {
        self.replication.primary.as_ref().is_some_and(|p| p.link_up)
    }

    /// Loading a dataset or in a full sync: not a usable copy of the data yet.
    pub fn syncing(&self) -> bool {
        self.persistence.loading
            || self.persistence.async_loading
            || self
                .replication
                .primary
                .as_ref()
                .is_some_and(|p| p.sync_in_progress)
    }

    /// The replication offset to compare members by: a primary's `master_repl_offset`, a
    /// replica's `slave_repl_offset` (what it applied). `None` where the engine does not report
    /// offsets (Dragonfly).
    pub fn offset(&self) -> Option<u64> {
        match self.replication.role {
            Role::Primary => self.replication.master_repl_offset,
            Role::Replica => self
                .replication
                .slave_repl_offset
                .or(self.replication.master_repl_offset),
        }
    }
}

/// A connection to one member. Cheap to clone (clones share the connection); every method takes
/// `&self`, so observations of one member may run concurrently.
///
/// The connection does not reconnect by itself: after an error for which
/// [`EngineError::is_unreachable`] is true, drop the client and [`Client::connect`] again on the
/// next reconcile. [`Client::kill_normal_clients`] on a member also kills every *other*
/// `Client` connected to it (only the sender is skipped).
#[derive(Clone)]
pub struct Client {
    addr: HostPort,
    dialect: Dialect,
    conn: MultiplexedConnection,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.addr)
            .field("dialect", &self.dialect)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to `addr`, authenticating with `AUTH password` when a password is given.
    /// Bounded by [`CONNECT_TIMEOUT`] plus [`RESPONSE_TIMEOUT`] for the AUTH round trip.
    pub async fn connect(
        addr: impl Into<HostPort>,
        password: Option<&str>,
        dialect: Dialect,
    ) -> Result<Self, EngineError> {
        let addr = addr.into();
        let command = if password.is_some() {
            "connect+AUTH"
        } else {
            "connect"
        };
        let connect_error = |source| EngineError::Connect {
            addr: addr.to_string(),
            command: command.to_owned(),
            source,
        };
        let mut settings = RedisConnectionInfo::default().set_skip_set_lib_name();
        if let Some(password) = password {
            settings = settings.set_password(password);
        }
        let info = ConnectionAddr::Tcp(addr.host.clone(), addr.port)
            .into_connection_info()
            .map_err(connect_error)?
            .set_redis_settings(settings);
        let client = redis::Client::open(info).map_err(connect_error)?;
        // Per-command limits are applied in `run`, so the connection itself has none.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(None);
        let limit = CONNECT_TIMEOUT + RESPONSE_TIMEOUT;
        let conn = timeout(
            limit,
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .map_err(|_| EngineError::Timeout {
            addr: addr.to_string(),
            command: command.to_owned(),
            after: limit,
        })?
        .map_err(connect_error)?;
        Ok(Self {
            addr,
            dialect,
            conn,
        })
    }

    /// The member this client talks to.
    pub fn addr(&self) -> &HostPort {
        &self.addr
    }

    /// The dialect commands are built for.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Sends one command and waits at most `limit` for the answer.
    async fn run(&self, command: &EngineCommand, limit: Duration) -> Result<Value, EngineError> {
        let mut conn = self.conn.clone();
        let reply = timeout(limit, command.to_cmd().query_async::<Value>(&mut conn))
            .await
            .map_err(|_| EngineError::Timeout {
                addr: self.addr.to_string(),
                command: command.to_string(),
                after: limit,
            })?;
        match reply {
            Ok(Value::ServerError(e)) => Err(self.command_error(command, e.into())),
            Ok(value) => Ok(value),
            Err(e) => Err(self.command_error(command, e)),
        }
    }

    fn command_error(&self, command: &EngineCommand, source: redis::RedisError) -> EngineError {
        EngineError::Command {
            addr: self.addr.to_string(),
            command: command.to_string(),
            source,
        }
    }

    fn reply_error(&self, command: &EngineCommand, source: ParseError) -> EngineError {
        EngineError::Reply {
            addr: self.addr.to_string(),
            command: command.to_string(),
            source: Box::new(source),
        }
    }

    /// `PING`.
    pub async fn ping(&self) -> Result<(), EngineError> {
        let command = EngineCommand::new(["PING"]);
        self.run(&command, RESPONSE_TIMEOUT).await.map(drop)
    }

    /// One round trip (a pipeline) of `INFO replication`, `INFO persistence`, `INFO server` and
    /// `DBSIZE`. Never changes anything on the member.
    pub async fn observe(&self) -> Result<MemberReport, EngineError> {
        let commands = [
            EngineCommand::new(["INFO", "replication"]),
            EngineCommand::new(["INFO", "persistence"]),
            EngineCommand::new(["INFO", "server"]),
            EngineCommand::new(["DBSIZE"]),
        ];
        let label = EngineCommand::new(["INFO replication; INFO persistence; INFO server; DBSIZE"]);
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for c in &commands {
            pipe.add_command(c.to_cmd());
        }
        let mut conn = self.conn.clone();
        let replies: Vec<Value> = timeout(RESPONSE_TIMEOUT, pipe.query_async(&mut conn))
            .await
            .map_err(|_| EngineError::Timeout {
                addr: self.addr.to_string(),
                command: label.to_string(),
                after: RESPONSE_TIMEOUT,
            })?
            .map_err(|e| self.command_error(&label, e))?;
        let [repl, persist, server, dbsize] = <[Value; 4]>::try_from(replies).map_err(|r| {
            self.reply_error(
                &label,
                ParseError {
                    field: "pipeline".into(),
                    problem: format!("{} replies instead of 4", r.len()),
                },
            )
        })?;
        let text = |value: Value, command: &EngineCommand| -> Result<String, EngineError> {
            match value {
                Value::ServerError(e) => Err(self.command_error(command, e.into())),
                v => reply_text(&v, "INFO").map_err(|e| self.reply_error(command, e)),
            }
        };
        let replication = ReplicationInfo::parse(&text(repl, &commands[0])?)
            .map_err(|e| self.reply_error(&commands[0], e))?;
        let persistence = PersistenceInfo::parse(&text(persist, &commands[1])?)
            .map_err(|e| self.reply_error(&commands[1], e))?;
        let server = ServerInfo::parse(&text(server, &commands[2])?)
            .map_err(|e| self.reply_error(&commands[2], e))?;
        let keys = match dbsize {
            Value::ServerError(e) if e.code() == "LOADING" => None,
            Value::ServerError(e) => return Err(self.command_error(&commands[3], e.into())),
            v => Some(parse_dbsize(&v).map_err(|e| self.reply_error(&commands[3], e))?),
        };
        Ok(MemberReport {
            addr: self.addr.clone(),
            server,
            replication,
            persistence,
            keys,
        })
    }

    /// `INFO replication` alone (what handover polling uses).
    pub async fn replication(&self) -> Result<ReplicationInfo, EngineError> {
        let command = EngineCommand::new(["INFO", "replication"]);
        let value = self.run(&command, RESPONSE_TIMEOUT).await?;
        reply_text(&value, "INFO")
            .and_then(|t| ReplicationInfo::parse(&t))
            .map_err(|e| self.reply_error(&command, e))
    }

    /// `ROLE`.
    pub async fn role(&self) -> Result<RoleReply, EngineError> {
        let command = EngineCommand::new(["ROLE"]);
        let value = self.run(&command, RESPONSE_TIMEOUT).await?;
        RoleReply::parse(&value).map_err(|e| self.reply_error(&command, e))
    }

    /// `REPLICAOF host port`: the member drops its role and follows `primary`. The command
    /// answers at once; the sync proceeds in the background (watch [`MemberReport::syncing`]).
    pub async fn replicaof(&self, primary: &HostPort) -> Result<(), EngineError> {
        let command = self.dialect.replicaof(&primary.host, primary.port);
        self.run(&command, RESPONSE_TIMEOUT).await.map(drop)
    }

    /// `REPLICAOF NO ONE`: promote this member, keeping its dataset.
    pub async fn replicaof_no_one(&self) -> Result<(), EngineError> {
        let command = self.dialect.replicaof_no_one();
        self.run(&command, RESPONSE_TIMEOUT).await.map(drop)
    }

    /// Graceful handover from this member (the primary) to `target` (one of its replicas),
    /// Valkey/Redis only: sends `FAILOVER TO host port TIMEOUT ms`, which answers at once, then
    /// polls `INFO replication` every [`HANDOVER_POLL_INTERVAL`] until this member reports being
    /// a replica of `target`.
    ///
    /// Fails with [`EngineError::HandoverFailed`] when the server gave up by itself (it stays
    /// primary: the target did not catch up within `timeout`, or refused), or when nothing was
    /// decided within `timeout` + [`HANDOVER_CLIENT_MARGIN`]; in that case `FAILOVER ABORT` is
    /// sent and the error says what it answered. Writes are paused on this member while the
    /// handover runs, at most `timeout`.
    pub async fn failover_to(
        &self,
        target: &HostPort,
        timeout: Duration,
    ) -> Result<(), EngineError> {
        let Some(command) = self.dialect.failover_to(&target.host, target.port, timeout) else {
            return Err(EngineError::Unsupported {
                addr: self.addr.to_string(),
                command: format!("FAILOVER TO {} {}", target.host, target.port),
                dialect: self.dialect.name(),
            });
        };
        self.run(&command, RESPONSE_TIMEOUT).await?;
        let started = Instant::now();
        let deadline = started + timeout + HANDOVER_CLIENT_MARGIN;
        let failed = |detail: String| EngineError::HandoverFailed {
            addr: self.addr.to_string(),
            command: command.to_string(),
            target: target.to_string(),
            detail: detail.into(),
        };
        loop {
            sleep(HANDOVER_POLL_INTERVAL).await;
            let last_seen = match self.replication().await {
                Ok(r) => match (r.role, &r.primary, &r.failover_state) {
                    (Role::Replica, Some(p), _)
                        if p.host == target.host && p.port == target.port =>
                    {
                        return Ok(());
                    }
                    (Role::Replica, Some(p), _) => {
                        return Err(failed(format!(
                            "became a replica of {}:{} instead",
                            p.host, p.port
                        )));
                    }
                    (Role::Primary, _, Some(FailoverState::NoFailover)) => {
                        return Err(failed(format!(
                            "the server ended the failover after {:?} and is still primary \
                             (the target did not catch up within the timeout, or refused)",
                            started.elapsed()
                        )));
                    }
                    (role, _, state) => format!("role {role:?}, failover state {state:?}"),
                },
                // The member may be briefly busy switching roles; the deadline bounds this.
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                let abort = match self.dialect.failover_abort() {
                    Some(abort) => match self.run(&abort, RESPONSE_TIMEOUT).await {
                        Ok(_) => "sent FAILOVER ABORT".to_owned(),
                        Err(e) => format!("FAILOVER ABORT failed: {e}"),
                    },
                    None => String::new(),
                };
                return Err(failed(format!(
                    "no result after {:?} (last seen: {last_seen}); {abort}",
                    started.elapsed()
                )));
            }
        }
    }

    /// Graceful promotion of this member (a replica) on Dragonfly: `REPLTAKEOVER seconds`,
    /// which blocks until the replica caught up and took over. Experimental, Dragonfly only.
    /// The client waits the server-side timeout plus [`HANDOVER_CLIENT_MARGIN`].
    pub async fn take_over(&self, timeout: Duration) -> Result<(), EngineError> {
        let Some(command) = self.dialect.takeover(timeout) else {
            return Err(EngineError::Unsupported {
                addr: self.addr.to_string(),
                command: "REPLTAKEOVER".to_owned(),
                dialect: self.dialect.name(),
            });
        };
        let server_secs = command.args()[1].parse::<u64>().unwrap_or(1);
        let limit = Duration::from_secs(server_secs) + HANDOVER_CLIENT_MARGIN;
        self.run(&command, limit).await?;
        match self.replication().await?.role {
            Role::Primary => Ok(()),
            Role::Replica => Err(EngineError::HandoverFailed {
                addr: self.addr.to_string(),
                command: command.to_string(),
                target: self.addr.to_string(),
                detail: "REPLTAKEOVER answered but the member is still a replica".into(),
            }),
        }
    }

    /// `CLIENT KILL TYPE normal SKIPME yes`: fences a demoted member. Returns how many client
    /// connections were closed. This connection survives; other kvpilot clients do not.
    pub async fn kill_normal_clients(&self) -> Result<u64, EngineError> {
        let command = self.dialect.kill_normal_clients();
        match self.run(&command, RESPONSE_TIMEOUT).await? {
            Value::Int(n) => Ok(u64::try_from(n).unwrap_or(0)),
            other => Err(self.reply_error(
                &command,
                ParseError {
                    field: "CLIENT KILL".into(),
                    problem: format!("not an integer: {other:?}"),
                },
            )),
        }
    }

    /// `CONFIG SET key value`.
    pub async fn config_set(&self, key: &str, value: &str) -> Result<(), EngineError> {
        let command = EngineCommand::new(["CONFIG", "SET", key, value]);
        self.run(&command, RESPONSE_TIMEOUT).await.map(drop)
    }

    /// `CONFIG GET key` for one exact key; `None` if the server does not know it.
    pub async fn config_get(&self, key: &str) -> Result<Option<String>, EngineError> {
        let command = EngineCommand::new(["CONFIG", "GET", key]);
        let value = self.run(&command, RESPONSE_TIMEOUT).await?;
        let pairs: Vec<(Value, Value)> = match value {
            Value::Map(pairs) => pairs,
            Value::Array(items) => {
                let mut it = items.into_iter();
                let mut pairs = Vec::new();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((k, v));
                }
                pairs
            }
            other => {
                return Err(self.reply_error(
                    &command,
                    ParseError {
                        field: "CONFIG GET".into(),
                        problem: format!("not a list: {other:?}"),
                    },
                ));
            }
        };
        for (k, v) in pairs {
            let k = reply_text(&k, "CONFIG GET key").map_err(|e| self.reply_error(&command, e))?;
            if k.eq_ignore_ascii_case(key) {
                return reply_text(&v, "CONFIG GET value")
                    .map(Some)
                    .map_err(|e| self.reply_error(&command, e));
            }
        }
        Ok(None)
    }

    /// `BGSAVE`: starts a background snapshot and returns at once (an error if one is already
    /// running). Watch `persistence.bgsave_in_progress` and [`Client::lastsave`].
    pub async fn bgsave(&self) -> Result<(), EngineError> {
        let command = EngineCommand::new(["BGSAVE"]);
        self.run(&command, RESPONSE_TIMEOUT).await.map(drop)
    }

    /// `LASTSAVE`: Unix time of the last successful snapshot.
    pub async fn lastsave(&self) -> Result<i64, EngineError> {
        let command = EngineCommand::new(["LASTSAVE"]);
        match self.run(&command, RESPONSE_TIMEOUT).await? {
            Value::Int(t) => Ok(t),
            other => Err(self.reply_error(
                &command,
                ParseError {
                    field: "LASTSAVE".into(),
                    problem: format!("not an integer: {other:?}"),
                },
            )),
        }
    }
}

/// Graceful handover from `primary` to `target` in the way the dialect does it:
/// `FAILOVER TO` on the primary (Valkey/Redis, see [`Client::failover_to`]) or `REPLTAKEOVER`
/// on the target (Dragonfly, see [`Client::take_over`]). On success the target is primary and
/// the old primary follows it.
pub async fn handover(
    primary: &Client,
    target: &Client,
    timeout: Duration,
) -> Result<(), EngineError> {
    match primary.dialect().handover_style() {
        HandoverStyle::FailoverOnPrimary => primary.failover_to(target.addr(), timeout).await,
        HandoverStyle::TakeoverOnReplica => target.take_over(timeout).await,
    }
}
