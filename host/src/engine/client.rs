//! One connection to one member, with bounded timeouts on every command.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisConnectionInfo, Value};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};

use super::dialect::{Dialect, EngineCommand};
use super::error::EngineError;
use super::info::{
    FailoverState, ParseError, PersistenceInfo, ReplicationInfo, Role, RoleReply, ServerInfo,
    parse_keyspace, reply_text,
};
use super::tls::TlsConfig;

/// Limit for establishing a TCP connection. A dead member must not hold up a reconcile; 500 ms
/// is ample on a LAN or loopback. The TLS handshake and `AUTH` get [`RESPONSE_TIMEOUT`] each.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Limit for a plain command (INFO, DBSIZE, REPLICAOF, CONFIG SET, CLIENT KILL, ...). None of
/// these has a server-side timeout; they answer in microseconds unless the member is stuck.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// How often [`Client::failover_to`] polls `INFO replication` while the handover runs.
pub const HANDOVER_POLL_INTERVAL: Duration = Duration::from_millis(10);
/// How much longer than `REPLTAKEOVER`'s own timeout a Dragonfly replica waits for the old
/// master to answer the takeover (its socket timeout is the timeout plus 10 s, in
/// `Replica::TakeOver`, src/server/replica.cc).
pub const DRAGONFLY_TAKEOVER_SLACK: Duration = Duration::from_secs(10);
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

/// A user and password to `AUTH` with.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The ACL user; `None` authenticates as `default` (`AUTH password`).
    pub username: Option<String>,
    /// The password.
    pub password: String,
}

impl Credentials {
    /// The `default` user's password (`requirepass`).
    pub fn password(password: impl Into<String>) -> Self {
        Self {
            username: None,
            password: password.into(),
        }
    }

    /// An ACL user and its password.
    pub fn user(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: Some(username.into()),
            password: password.into(),
        }
    }

    /// The user name, `default` when none is given.
    pub fn user_name(&self) -> &str {
        self.username.as_deref().unwrap_or("default")
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user_name())
            .field("password", &"<redacted>")
            .finish()
    }
}

/// How to reach and authenticate to one member.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Sent as `AUTH` right after connecting; `None` stays the `default` user unauthenticated.
    pub credentials: Option<Credentials>,
    /// TLS; `None` is plain TCP.
    pub tls: Option<TlsConfig>,
    /// The name the member's certificate must be valid for (a DNS name or an IP address);
    /// `None` uses the host that is dialed. This lets a client dial a pod IP and verify the
    /// pod's DNS name.
    pub server_name: Option<String>,
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
    /// Keys in every database (`INFO keyspace`); `None` while the member loads a dataset.
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
    /// Connects to `addr` over plain TCP, authenticating with `AUTH password` (as `default`)
    /// when a password is given. See [`Client::connect_with`].
    pub async fn connect(
        addr: impl Into<HostPort>,
        password: Option<&str>,
        dialect: Dialect,
    ) -> Result<Self, EngineError> {
        let options = ConnectOptions {
            credentials: password.map(|p| Credentials::password(p.to_owned())),
            ..ConnectOptions::default()
        };
        Self::connect_with(addr, &options, dialect).await
    }

    /// Connects to `addr`: TCP within [`CONNECT_TIMEOUT`]; then, with `options.tls`, the TLS
    /// handshake and a `PING` that proves the member accepted it; then `AUTH` when
    /// `options.credentials` are given; each further step within [`RESPONSE_TIMEOUT`].
    ///
    /// A handshake the member or this client refuses (a certificate not from the trusted CA,
    /// or not valid for the server name; a member that requires a client certificate) is an
    /// [`EngineError::Tls`] naming the member and the name its certificate was checked
    /// against. Credentials the member refuses are an [`EngineError::AuthRefused`].
    pub async fn connect_with(
        addr: impl Into<HostPort>,
        options: &ConnectOptions,
        dialect: Dialect,
    ) -> Result<Self, EngineError> {
        let addr = addr.into();
        let command = if options.tls.is_some() {
            "connect+TLS"
        } else {
            "connect"
        };
        let connect_error = |source| EngineError::Connect {
            addr: addr.to_string(),
            command: command.to_owned(),
            source,
        };
        let timed_out = |command: &str, after| EngineError::Timeout {
            addr: addr.to_string(),
            command: command.to_owned(),
            after,
        };
        let tcp = timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((addr.host.as_str(), addr.port)),
        )
        .await
        .map_err(|_| timed_out(command, CONNECT_TIMEOUT))?
        .map_err(|e| connect_error(e.into()))?;
        // Commands are small and answered one by one: do not let Nagle hold them back.
        tcp.set_nodelay(true).map_err(|e| connect_error(e.into()))?;
        let conn = match &options.tls {
            None => timeout(RESPONSE_TIMEOUT, multiplex(tcp))
                .await
                .map_err(|_| timed_out(command, RESPONSE_TIMEOUT))?
                .map_err(connect_error)?,
            Some(tls) => {
                let server_name = options.server_name.as_deref().unwrap_or(&addr.host);
                let tls_error = |source| EngineError::Tls {
                    addr: addr.to_string(),
                    server_name: server_name.to_owned(),
                    source,
                };
                let name = ServerName::try_from(server_name.to_owned()).map_err(|e| {
                    tls_error(std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("not a valid DNS name or IP address: {e}"),
                    ))
                })?;
                let stream = timeout(RESPONSE_TIMEOUT, tls.connector().connect(name, tcp))
                    .await
                    .map_err(|_| timed_out(command, RESPONSE_TIMEOUT))?
                    .map_err(tls_error)?;
                let mut conn = timeout(RESPONSE_TIMEOUT, multiplex(stream))
                    .await
                    .map_err(|_| timed_out(command, RESPONSE_TIMEOUT))?
                    .map_err(connect_error)?;
                // With TLS 1.3 a member that wants a client certificate refuses the session
                // only after the client considers the handshake done, so the refusal would
                // surface at the first command. A PING makes it an error of this call.
                let ping = redis::cmd("PING");
                match timeout(RESPONSE_TIMEOUT, ping.query_async::<Value>(&mut conn)).await {
                    Err(_) => return Err(timed_out("PING", RESPONSE_TIMEOUT)),
                    // Any answer, even `-NOAUTH`, came over a working TLS session.
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) if e.code().is_some() => {}
                    Ok(Err(e)) => {
                        let hint = if tls.presents_certificate() {
                            "it did not accept the client certificate"
                        } else {
                            "does it require a client certificate?"
                        };
                        return Err(tls_error(std::io::Error::other(format!(
                            "the member closed the session after the handshake ({e}); {hint}"
                        ))));
                    }
                }
                conn
            }
        };
        let client = Self {
            addr,
            dialect,
            conn,
        };
        if let Some(credentials) = &options.credentials {
            client.auth(credentials).await?;
        }
        Ok(client)
    }

    /// `AUTH [username] password` on this connection.
    async fn auth(&self, credentials: &Credentials) -> Result<(), EngineError> {
        let mut args = vec!["AUTH".to_owned()];
        args.extend(credentials.username.clone());
        args.push(credentials.password.clone());
        let command = EngineCommand::new(args);
        match self.run(&command, RESPONSE_TIMEOUT).await {
            Ok(_) => Ok(()),
            Err(EngineError::Command { addr, source, .. }) if source.code().is_some() => {
                Err(EngineError::AuthRefused {
                    addr,
                    user: credentials.user_name().to_owned(),
                    source,
                })
            }
            Err(e) => Err(e),
        }
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
    pub(super) async fn run(
        &self,
        command: &EngineCommand,
        limit: Duration,
    ) -> Result<Value, EngineError> {
        self.run_cmd(command, command.to_cmd(), limit).await
    }

    /// Sends `cmd` (which may carry binary arguments, e.g. keys) and waits at most `limit`;
    /// errors name it by `label`, which never carries the binary arguments.
    pub(super) async fn run_cmd(
        &self,
        label: &EngineCommand,
        cmd: redis::Cmd,
        limit: Duration,
    ) -> Result<Value, EngineError> {
        let command = label;
        let mut conn = self.conn.clone();
        let reply = timeout(limit, cmd.query_async::<Value>(&mut conn))
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

    pub(super) fn command_error(
        &self,
        command: &EngineCommand,
        source: redis::RedisError,
    ) -> EngineError {
        EngineError::Command {
            addr: self.addr.to_string(),
            command: command.to_string(),
            source,
        }
    }

    pub(super) fn reply_error(&self, command: &EngineCommand, source: ParseError) -> EngineError {
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
    /// `INFO keyspace`, within [`RESPONSE_TIMEOUT`]. Never changes anything on the member.
    pub async fn observe(&self) -> Result<MemberReport, EngineError> {
        self.observe_within(RESPONSE_TIMEOUT).await
    }

    /// [`Client::observe`] within `limit` (the probe timeout of failure detection). `INFO` has
    /// no server-side timeout, so any limit keeps client timeouts above server-side ones.
    pub async fn observe_within(&self, limit: Duration) -> Result<MemberReport, EngineError> {
        let commands = [
            EngineCommand::new(["INFO", "replication"]),
            EngineCommand::new(["INFO", "persistence"]),
            EngineCommand::new(["INFO", "server"]),
            EngineCommand::new(["INFO", "keyspace"]),
        ];
        let label =
            EngineCommand::new(["INFO replication; INFO persistence; INFO server; INFO keyspace"]);
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for c in &commands {
            pipe.add_command(c.to_cmd());
        }
        let mut conn = self.conn.clone();
        let replies: Vec<Value> = timeout(limit, pipe.query_async(&mut conn))
            .await
            .map_err(|_| EngineError::Timeout {
                addr: self.addr.to_string(),
                command: label.to_string(),
                after: limit,
            })?
            .map_err(|e| self.command_error(&label, e))?;
        let [repl, persist, server, keyspace] = <[Value; 4]>::try_from(replies).map_err(|r| {
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
        let keys = parse_keyspace(&text(keyspace, &commands[3])?)
            .map_err(|e| self.reply_error(&commands[3], e))?;
        // While a dataset loads the count is partial; an async-loading replica still serves
        // (and counts) the old one.
        let keys = (!persistence.loading).then_some(keys);
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
        // The replica waits for the old master's answer up to the timeout plus
        // DRAGONFLY_TAKEOVER_SLACK (`Replica::TakeOver` sets its socket timeout so); the client
        // waits longer still (rule 3).
        let limit =
            Duration::from_secs(server_secs) + DRAGONFLY_TAKEOVER_SLACK + HANDOVER_CLIENT_MARGIN;
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
        if !self.dialect.kills_by_type() {
            return self.kill_clients_by_id().await;
        }
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

    /// What [`Client::kill_normal_clients`] does, one connection at a time: `CLIENT ID`,
    /// `CLIENT LIST`, then `CLIENT KILL ID` for every normal client but this one (see
    /// [`super::clients::to_close`]). Dragonfly's way; it works on Valkey and Redis too.
    /// A connection that closed in between counts 0. Dragonfly refuses to close a connection
    /// of its admin port from a normal one; such a connection is left open and logged.
    pub async fn kill_clients_by_id(&self) -> Result<u64, EngineError> {
        let id_command = self.dialect.client_id();
        let own = match self.run(&id_command, RESPONSE_TIMEOUT).await? {
            Value::Int(n) => u64::try_from(n).unwrap_or(u64::MAX),
            other => {
                return Err(self.reply_error(
                    &id_command,
                    ParseError {
                        field: "CLIENT ID".into(),
                        problem: format!("not an integer: {other:?}"),
                    },
                ));
            }
        };
        let list_command = self.dialect.client_list();
        let listed = self.run(&list_command, RESPONSE_TIMEOUT).await?;
        let text =
            reply_text(&listed, "CLIENT LIST").map_err(|e| self.reply_error(&list_command, e))?;
        let listed = super::clients::parse_client_list(&text)
            .map_err(|e| self.reply_error(&list_command, e))?;
        let mut killed = 0;
        for id in super::clients::to_close(&listed, own) {
            let command = self.dialect.client_kill_id(id);
            match self.run(&command, RESPONSE_TIMEOUT).await {
                Ok(Value::Int(n)) => killed += u64::try_from(n).unwrap_or(0),
                Ok(Value::Okay) => killed += 1,
                Ok(_) => {}
                Err(e) if e.to_string().contains("admin client") => {
                    tracing::warn!(addr = %self.addr, client = id, "cannot close a connection of the admin port");
                }
                // Gone since the list was taken.
                Err(e) if e.to_string().contains("No such client") => {}
                Err(e) => return Err(e),
            }
        }
        Ok(killed)
    }

    /// `CONFIG SET key value`.
    pub async fn config_set(&self, key: &str, value: &str) -> Result<(), EngineError> {
        let command = EngineCommand::new(["CONFIG", "SET", key, value]);
        self.run(&command, RESPONSE_TIMEOUT).await.map(drop)
    }

    /// `ACL SETUSER user rule...`, e.g. `>password` to add a password, `<password` to remove
    /// one. Secrets in the rules are redacted from errors.
    pub async fn acl_setuser(&self, user: &str, rules: &[&str]) -> Result<(), EngineError> {
        let mut args = vec!["ACL", "SETUSER", user];
        args.extend_from_slice(rules);
        self.run(&EngineCommand::new(args), RESPONSE_TIMEOUT)
            .await
            .map(drop)
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

/// A multiplexed connection over `stream`, without any setup commands (AUTH is sent by
/// [`Client::connect_with`] itself, so that its refusal is told apart). The driver task ends
/// when the last clone of the connection is dropped (its command channel closes).
async fn multiplex<S>(stream: S) -> redis::RedisResult<MultiplexedConnection>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let settings = RedisConnectionInfo::default().set_skip_set_lib_name();
    // Per-command limits are applied in `Client::run`, so the connection itself has none.
    let config = AsyncConnectionConfig::new().set_response_timeout(None);
    let (conn, driver) = MultiplexedConnection::new_with_config(&settings, stream, config).await?;
    tokio::spawn(driver);
    Ok(conn)
}
