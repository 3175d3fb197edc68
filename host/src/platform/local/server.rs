//! Real `valkey-server`/`redis-server` processes for the local platform.
//!
//! A member is started in its own process group, so it outlives the kvpilot process that
//! started it (Ctrl-C on the terminal does not reach it) and a restarted reconciler re-adopts it
//! from the small JSON state file written into its data directory ([`STATE_FILE`]).
//!
//! Liveness is judged by PID *and* process start time (from `/proc`), so a recycled PID is never
//! mistaken for a member, and a zombie counts as dead.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process, test_kill_process};
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep};

use crate::engine::{
    Client, ClientIdentity, ConnectOptions, Credentials, Dialect, HostPort, TlsConfig,
    TlsConfigError,
};

/// Name of the state file in a member's data directory.
pub const STATE_FILE: &str = "member.json";
/// Name of the server's log file in its data directory (`--logfile`).
pub const LOG_FILE: &str = "server.log";
/// Where the server's stdout/stderr go (startup errors before the log file is open).
pub const STDIO_FILE: &str = "server.stdio.log";
/// The member's config file with its password (only when it has one).
pub const AUTH_FILE: &str = "auth.conf";
/// In cluster mode, the file where the server keeps its node id, epochs and view of the
/// cluster (`cluster-config-file`), inside the data directory so it lives and dies with the
/// data (a member that comes back with its data also comes back with its identity).
pub const NODES_CONF: &str = "nodes.conf";
/// How long [`Server::start`] waits for the new process to answer `PING`.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Poll interval while waiting for a process to come up or go away.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// After `SIGKILL`, how long to wait for the process to disappear before reporting it stuck.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// Settings owned by [`ServerSpec`] fields; `config` may not set them.
pub const RESERVED_KEYS: &[&str] = &[
    "daemonize",
    "bind",
    "port",
    "dir",
    "logfile",
    "pidfile",
    "protected-mode",
    "requirepass",
    "masterauth",
    "replicaof",
    "slaveof",
    "replica-announce-ip",
    "replica-announce-port",
    "masteruser",
    "tls-port",
    "tls-cert-file",
    "tls-key-file",
    "tls-ca-cert-file",
    "tls-replication",
    "cluster-enabled",
    "cluster-config-file",
    "cluster-port",
    "cluster-node-timeout",
    "cluster-replica-no-failover",
    "cluster-slave-no-failover",
    "cluster-announce-ip",
    "cluster-announce-hostname",
    "cluster-announce-bus-port",
    "cluster-announce-port",
    "cluster-allow-replica-migration",
    "cluster-require-full-coverage",
    "cluster-preferred-endpoint-type",
];

/// Cluster mode for a member (`cluster-enabled yes`); unused by replication mode.
///
/// The settings, and why (docs/architecture.md, rules 2, 3 and 8):
/// - `cluster-config-file` is [`NODES_CONF`] in the data directory.
/// - `cluster-port` is [`ServerCluster::bus_port`], chosen free like the client port: on
///   loopback `port + 10000` may belong to someone else.
/// - `cluster-replica-no-failover yes`: a replica never promotes itself when its primary
///   fails. The operator picks the new primary (the replica-selection hook, within the
///   data-holding guard) and promotes it with `CLUSTER FAILOVER FORCE`, so the engine's own
///   election cannot race the hook. A manual `CLUSTER FAILOVER` still works with it.
/// - `cluster-allow-replica-migration no`: replicas stay in the shard the operator put them
///   in (the engine would otherwise move a replica to a primary left without one, and a
///   primary that lost its last slot would turn itself into a replica).
/// - `cluster-require-full-coverage no`: one shard without a primary does not stop the other
///   shards from serving (rule 8: shards fail independently). A member in a minority
///   partition still refuses queries (`CLUSTERDOWN`): that check does not depend on this
///   setting. Bootstrap therefore waits for `cluster_slots_assigned` and `cluster_slots_ok`
///   to reach 16384, not only for `cluster_state:ok`.
/// - `cluster-announce-ip` is the bind address; with [`ServerCluster::announce_hostname`]
///   the member also announces that name and clients are sent to it
///   (`cluster-preferred-endpoint-type hostname`), as on Kubernetes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCluster {
    /// `cluster-port`: the cluster bus port.
    pub bus_port: u16,
    /// `cluster-node-timeout`: how long a peer may not answer before it is suspected
    /// (`fail?`); a majority of primaries then marks it `fail`.
    pub node_timeout: Duration,
    /// `cluster-announce-hostname`; `None` announces the IP only.
    pub announce_hostname: Option<String>,
    /// Start parked (see above); the operator's local platform always does.
    pub parked: bool,
}

pub use crate::engine::park::PARKED_RULES;

impl ServerCluster {
    /// Cluster mode with this bus port and node timeout, announcing the bind IP.
    pub fn new(bus_port: u16, node_timeout: Duration) -> Self {
        Self {
            bus_port,
            node_timeout,
            announce_hostname: None,
            parked: false,
        }
    }
}

/// TLS for a member: it serves TLS only (`port 0`, `tls-port` = [`ServerSpec::port`]) and
/// replicates over TLS, presenting its own certificate to its primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// `tls-cert-file`: the member's certificate (PEM).
    pub cert_file: PathBuf,
    /// `tls-key-file`: its private key (PEM).
    pub key_file: PathBuf,
    /// `tls-ca-cert-file`: the CA that peers' certificates must chain to.
    pub ca_file: PathBuf,
    /// A name the member's certificate is valid for (DNS name or IP), which
    /// [`Server::start`] verifies when it checks that the member answers.
    pub server_name: String,
}

/// Everything needed to start one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    /// `valkey-server`, `redis-server` or `dragonfly` (path or name on `PATH`).
    pub binary: PathBuf,
    /// Which engine the binary is: Valkey and Redis take `--name value` pairs, Dragonfly
    /// (experimental) `--name=value` flags.
    pub dialect: Dialect,
    /// Loopback address to listen on (127.0.0.x).
    pub bind: Ipv4Addr,
    /// TCP port.
    pub port: u16,
    /// Data directory (created if missing); holds the RDB, the log and the state file.
    pub dir: PathBuf,
    /// Extra settings passed as `--key value`, after the defaults (`save ""`,
    /// `appendonly no`), which they override. Keys in the reserved list (bind, port, dir,
    /// logfile, requirepass, replicaof, ...) are rejected: they come from the fields.
    pub config: BTreeMap<String, String>,
    /// Sets both `requirepass` and `masterauth`, so members of a group authenticate to each
    /// other; with `username`, only `masterauth` (an ACL file from `config` defines users).
    pub password: Option<String>,
    /// The ACL user replicas authenticate to their primary as (`masteruser`), with `password`;
    /// `None` is `default`.
    pub username: Option<String>,
    /// Serve TLS only, from these files.
    pub tls: Option<ServerTls>,
    /// Start as a replica of this primary (replication mode only: a cluster-mode member is
    /// made a replica with `CLUSTER REPLICATE`).
    pub replicaof: Option<SocketAddr>,
    /// Cluster mode; `None` is replication mode.
    pub cluster: Option<ServerCluster>,
    /// The caller's revision string, recorded in the state file (the reconciler compares it with
    /// the desired revision to find stale members).
    pub revision: String,
}

impl ServerSpec {
    /// A primary with no password, no extra config and an empty revision.
    pub fn new(
        binary: impl Into<PathBuf>,
        bind: Ipv4Addr,
        port: u16,
        dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            binary: binary.into(),
            dialect: Dialect::Valkey,
            bind,
            port,
            dir: dir.into(),
            config: BTreeMap::new(),
            password: None,
            username: None,
            tls: None,
            replicaof: None,
            cluster: None,
            revision: String::new(),
        }
    }

    /// The address the member listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.bind, self.port))
    }

    /// The config file that carries the password, if any: `requirepass` and `masterauth`
    /// (with `username`: `masteruser` and `masterauth`) with every byte hex-escaped, so any
    /// password survives the server's quoting. It is a file (mode 0600) rather than
    /// arguments, which any local user could read in `ps`.
    pub fn auth_conf(&self) -> Option<String> {
        let password = self.password.as_ref()?;
        if self.dialect == Dialect::Dragonfly {
            // An absl flag file: one `--name=value` argument per line, no escapes
            // ([`ServerSpec::args`] refuses a password that is not one plain line).
            return Some(match &self.username {
                None => format!("--requirepass={password}\n--masterauth={password}\n"),
                Some(user) => format!("--masteruser={user}\n--masterauth={password}\n"),
            });
        }
        let hex = |s: &str| s.bytes().map(|b| format!("\\x{b:02x}")).collect::<String>();
        let quoted = hex(password);
        let mut conf = match &self.username {
            None => format!("requirepass \"{quoted}\"\nmasterauth \"{quoted}\"\n"),
            Some(user) => format!("masteruser \"{}\"\nmasterauth \"{quoted}\"\n", hex(user)),
        };
        if self.parked() {
            // The user line resets `default`, so it carries the password itself.
            conf.push_str(&format!("user default on \">{quoted}\" {PARKED_RULES}\n"));
        }
        Some(conf)
    }

    /// Starts parked: cluster mode with [`ServerCluster::parked`] (Valkey/Redis only).
    fn parked(&self) -> bool {
        self.dialect != Dialect::Dragonfly && self.cluster.as_ref().is_some_and(|c| c.parked)
    }

    /// The config file [`Server::start`] writes and passes first: the password
    /// ([`Self::auth_conf`]), and the parked `default` user without one.
    pub fn conf_file(&self) -> Option<String> {
        self.auth_conf().or_else(|| {
            self.parked()
                .then(|| format!("user default on nopass {PARKED_RULES}\n"))
        })
    }

    /// How to connect to this member: its credentials and, with TLS, its CA, its own
    /// certificate as the client certificate (a member that demands one accepts its peers')
    /// and its server name.
    pub fn connect_options(&self) -> Result<ConnectOptions, ServerError> {
        let credentials = self.password.clone().map(|password| Credentials {
            username: self.username.clone(),
            password,
        });
        let Some(tls) = &self.tls else {
            return Ok(ConnectOptions {
                credentials,
                ..ConnectOptions::default()
            });
        };
        let read = |path: &PathBuf| {
            fs::read(path).map_err(|source| ServerError::Io {
                path: path.clone(),
                source,
            })
        };
        let (ca, cert, key) = (
            read(&tls.ca_file)?,
            read(&tls.cert_file)?,
            read(&tls.key_file)?,
        );
        let config = TlsConfig::from_pem(
            &ca,
            Some(ClientIdentity {
                cert_pem: &cert,
                key_pem: &key,
            }),
        )
        .map_err(|source| ServerError::Tls {
            dir: self.dir.clone(),
            source,
        })?;
        Ok(ConnectOptions {
            credentials,
            tls: Some(config),
            server_name: Some(tls.server_name.clone()),
        })
    }

    /// The cluster-mode settings (see [`ServerCluster`] for why each is set).
    fn cluster_args(&self, cluster: &ServerCluster) -> Vec<(&'static str, String)> {
        let mut args = vec![
            ("cluster-enabled", "yes".to_owned()),
            // Relative to `dir`: the server enters `dir` before it opens the file, so this
            // holds for a relative data directory too.
            ("cluster-config-file", NODES_CONF.to_owned()),
            ("cluster-port", cluster.bus_port.to_string()),
            (
                "cluster-node-timeout",
                cluster.node_timeout.as_millis().max(1).to_string(),
            ),
            ("cluster-replica-no-failover", "yes".to_owned()),
            ("cluster-allow-replica-migration", "no".to_owned()),
            ("cluster-require-full-coverage", "no".to_owned()),
            ("cluster-announce-ip", self.bind.to_string()),
        ];
        if let Some(name) = &cluster.announce_hostname {
            args.push(("cluster-announce-hostname", name.clone()));
            args.push(("cluster-preferred-endpoint-type", "hostname".to_owned()));
        }
        args
    }

    /// The full argument list (without the binary). With a password, the first argument is
    /// the path of [`AUTH_FILE`], which [`Server::start`] writes from [`Self::auth_conf`].
    pub fn args(&self) -> Result<Vec<String>, ServerError> {
        // Dragonfly spells its flags with `_`: `replica_announce_ip` is reserved too.
        if let Some(key) = self
            .config
            .keys()
            .find(|k| RESERVED_KEYS.contains(&k.to_ascii_lowercase().replace('_', "-").as_str()))
        {
            return Err(ServerError::ReservedKey {
                dir: self.dir.clone(),
                key: key.clone(),
            });
        }
        if self.dialect == Dialect::Dragonfly {
            return self.dragonfly_args();
        }
        // Defaults a caller may override: no persistence unless asked for.
        let mut settings: BTreeMap<String, String> = [("save", ""), ("appendonly", "no")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        settings.extend(self.config.clone());
        let dir = self.dir.display().to_string();
        let path = |p: &PathBuf| p.display().to_string();
        let mut fixed = vec![
            ("daemonize", "no".to_owned()),
            ("bind", self.bind.to_string()),
            (
                "port",
                if self.tls.is_some() {
                    "0".to_owned()
                } else {
                    self.port.to_string()
                },
            ),
            ("dir", dir.clone()),
            ("logfile", self.dir.join(LOG_FILE).display().to_string()),
            // Loopback only, and a password is optional locally.
            ("protected-mode", "no".to_owned()),
            // Replicas connect from 127.0.0.1 whatever they bind; announce the real address so
            // the primary's replica list (and FAILOVER TO) use it.
            ("replica-announce-ip", self.bind.to_string()),
        ];
        if let Some(cluster) = &self.cluster {
            if self.replicaof.is_some() {
                return Err(ServerError::ClusterConflict {
                    dir: self.dir.clone(),
                    problem: "a cluster-mode member cannot start with `replicaof` \
                              (it is made a replica with CLUSTER REPLICATE)"
                        .into(),
                });
            }
            if cluster.bus_port == self.port {
                return Err(ServerError::ClusterConflict {
                    dir: self.dir.clone(),
                    problem: format!("bus port {} is the client port", cluster.bus_port),
                });
            }
            if cluster.parked && self.username.is_some() {
                // Replicas would authenticate as that user, which parking does not restrict.
                return Err(ServerError::ClusterConflict {
                    dir: self.dir.clone(),
                    problem: "a parked member parks the `default` user: it cannot replicate \
                              as another user"
                        .into(),
                });
            }
            fixed.extend(self.cluster_args(cluster));
        }
        if let Some(tls) = &self.tls {
            fixed.extend([
                ("tls-port", self.port.to_string()),
                ("tls-cert-file", path(&tls.cert_file)),
                ("tls-key-file", path(&tls.key_file)),
                ("tls-ca-cert-file", path(&tls.ca_file)),
                ("tls-replication", "yes".to_owned()),
            ]);
        }
        let mut args = Vec::new();
        if self.conf_file().is_some() {
            args.push(self.dir.join(AUTH_FILE).display().to_string());
        }
        for (key, value) in fixed {
            args.push(format!("--{key}"));
            args.push(value);
        }
        for (key, value) in settings {
            args.push(format!("--{key}"));
            args.push(value);
        }
        if let Some(primary) = self.replicaof {
            args.push("--replicaof".to_owned());
            args.push(format!("{} {}", primary.ip(), primary.port()));
        }
        Ok(args)
    }

    /// Dragonfly's arguments (experimental): every setting is one `--name=value` argument, so
    /// a value holding spaces, `=` or `--` stays that flag's value and never becomes another
    /// flag (a `--name value` pair would let a value starting with `--` be read as a flag).
    /// `--replicaof` takes `host:port` (Dragonfly splits it at the last `:`). The password
    /// goes into a mode-0600 flag file ([`AUTH_FILE`]) rather than onto the command line.
    fn dragonfly_args(&self) -> Result<Vec<String>, ServerError> {
        let unsupported = |problem: &str| ServerError::Unsupported {
            dir: self.dir.clone(),
            problem: problem.to_string(),
        };
        if self.tls.is_some() {
            return Err(unsupported(
                "TLS is not supported for local Dragonfly members (experimental engine)",
            ));
        }
        // A flag file has no escapes, and a Dragonfly replica sends `AUTH <password>` as an
        // inline command, which splits at whitespace.
        let plain =
            |s: &str| !s.is_empty() && !s.chars().any(|c| c.is_control() || c.is_whitespace());
        if self.password.as_deref().is_some_and(|p| !plain(p))
            || self.username.as_deref().is_some_and(|u| !plain(u))
        {
            return Err(unsupported(
                "a Dragonfly password or user name must be one word without spaces or control \
                 characters",
            ));
        }
        let one_flag = |k: &str, v: &str| {
            !k.is_empty()
                && !k.starts_with('-')
                && !k.contains('=')
                && ![k, v].iter().any(|s| s.chars().any(char::is_control))
        };
        if let Some(key) = self
            .config
            .iter()
            .find(|(k, v)| !one_flag(k, v))
            .map(|(k, _)| k)
        {
            return Err(unsupported(&format!(
                "config {key:?} cannot be passed as one Dragonfly flag"
            )));
        }
        let mut args = Vec::new();
        if self.password.is_some() {
            args.push(format!("--flagfile={}", self.dir.join(AUTH_FILE).display()));
        }
        args.extend([
            format!("--bind={}", self.bind),
            format!("--port={}", self.port),
            format!("--dir={}", self.dir.display()),
            // Logs to stderr, which goes to STDIO_FILE (the tail in start errors).
            "--logtostderr".to_owned(),
            // Replicas connect from 127.0.0.1 whatever they bind; announce the real address.
            format!("--replica_announce_ip={}", self.bind),
            // No check for new releases over the network.
            "--version_check=false".to_owned(),
        ]);
        // Defaults a caller may override: no snapshot unless asked for (an empty file name
        // turns saving on shutdown off).
        let mut settings: BTreeMap<String, String> =
            BTreeMap::from([("dbfilename".to_owned(), String::new())]);
        settings.extend(self.config.clone());
        args.extend(settings.iter().map(|(k, v)| format!("--{k}={v}")));
        if let Some(primary) = self.replicaof {
            args.push(format!("--replicaof={}:{}", primary.ip(), primary.port()));
        }
        Ok(args)
    }
}

/// What the state file records about a running member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberState {
    /// Process id.
    pub pid: u32,
    /// Process start time in clock ticks since boot (`/proc/PID/stat` field 22): with the PID,
    /// identifies the process even if the PID is recycled.
    pub start_ticks: u64,
    /// Listen address.
    pub bind: Ipv4Addr,
    /// Listen port.
    pub port: u16,
    /// Binary the member runs.
    pub binary: PathBuf,
    /// The caller's revision string.
    pub revision: String,
}

impl MemberState {
    /// The member's address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.bind, self.port))
    }
}

/// Failures starting, adopting or stopping a member; each names the member.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A `config` key that a [`ServerSpec`] field owns.
    #[error("member in {dir}: config key {key:?} is set by kvpilot and may not be overridden")]
    ReservedKey {
        /// Data directory.
        dir: PathBuf,
        /// The offending key.
        key: String,
    },
    /// The spec asks for something this engine cannot do locally.
    #[error("member in {dir}: {problem}")]
    Unsupported {
        /// Data directory.
        dir: PathBuf,
        /// What cannot be done.
        problem: String,
    },
    /// The binary could not be executed.
    #[error(
        "cannot run {binary}: {source} (is it installed? e.g. `apt install valkey-server` or `apt install redis-server`)"
    )]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// OS error.
        #[source]
        source: io::Error,
    },
    /// The member's TLS files could not be used to check that it answers.
    #[error("member in {dir}: TLS: {source}")]
    Tls {
        /// Data directory.
        dir: PathBuf,
        /// Which part of the TLS material, and why.
        #[source]
        source: TlsConfigError,
    },
    /// Cluster-mode settings that cannot work together.
    #[error("member in {dir}: {problem}")]
    ClusterConflict {
        /// Data directory.
        dir: PathBuf,
        /// What conflicts.
        problem: String,
    },
    /// A file in the data directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// OS error.
        #[source]
        source: io::Error,
    },
    /// The process exited while starting.
    #[error("{binary} for {addr} exited while starting ({status}); last output:\n{output}")]
    Exited {
        /// The binary.
        binary: PathBuf,
        /// Address it was to listen on.
        addr: SocketAddr,
        /// Exit status.
        status: String,
        /// Tail of its log and stdio.
        output: String,
    },
    /// The process runs but did not answer `PING` in time (it was killed).
    #[error(
        "{binary} for {addr} did not answer PING within {waited:?} (killed it); last error: {last_error}; last output:\n{output}"
    )]
    NotReady {
        /// The binary.
        binary: PathBuf,
        /// Its address.
        addr: SocketAddr,
        /// How long we waited.
        waited: Duration,
        /// The last connection error.
        last_error: String,
        /// Tail of its log.
        output: String,
    },
    /// The state file is missing or unreadable.
    #[error("{path}: bad member state file: {problem}")]
    StateFile {
        /// The state file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The state file names a process that is not (or no longer) this member.
    #[error("member in {dir} (pid {pid}, {addr}) is not running: {reason}")]
    NotRunning {
        /// Data directory.
        dir: PathBuf,
        /// Recorded PID.
        pid: u32,
        /// Recorded address.
        addr: SocketAddr,
        /// Why it is not considered this member.
        reason: String,
    },
    /// A signal could not be delivered, or the process did not die after `SIGKILL`.
    #[error("member pid {pid} ({addr}): {action}: {problem}")]
    Signal {
        /// PID.
        pid: u32,
        /// Address.
        addr: SocketAddr,
        /// What was attempted (`SIGTERM`, `SIGKILL`, ...).
        action: &'static str,
        /// What went wrong.
        problem: String,
    },
}

/// A running member process (started here or adopted).
#[derive(Debug)]
pub struct Server {
    dir: PathBuf,
    state: MemberState,
    /// Present when this process spawned the member: lets us reap it and see its exit.
    child: Option<Child>,
}

impl Server {
    /// Starts a member from `spec`, writes its state file and waits (at most [`START_TIMEOUT`])
    /// until it answers `PING` (a `-LOADING` answer counts: the process is serving).
    /// If it does not come up, it is killed and the error carries the tail of its output.
    pub async fn start(spec: &ServerSpec) -> Result<Server, ServerError> {
        let args = spec.args()?;
        let options = spec.connect_options()?;
        fs::create_dir_all(&spec.dir).map_err(|source| ServerError::Io {
            path: spec.dir.clone(),
            source,
        })?;
        if let Some(conf) = spec.conf_file() {
            write_private(&spec.dir.join(AUTH_FILE), &conf)?;
        }
        let stdio_path = spec.dir.join(STDIO_FILE);
        let stdio = fs::File::create(&stdio_path).map_err(|source| ServerError::Io {
            path: stdio_path.clone(),
            source,
        })?;
        let stderr = stdio.try_clone().map_err(|source| ServerError::Io {
            path: stdio_path.clone(),
            source,
        })?;
        let child = Command::new(&spec.binary)
            .args(&args)
            .current_dir(&spec.dir)
            .stdin(Stdio::null())
            .stdout(stdio)
            .stderr(stderr)
            // Own process group: terminal signals to kvpilot do not reach the member, so it
            // survives a reconciler restart.
            .process_group(0)
            .kill_on_drop(false)
            .spawn()
            .map_err(|source| ServerError::Spawn {
                binary: spec.binary.clone(),
                source,
            })?;
        let pid = child.id().ok_or_else(|| ServerError::Exited {
            binary: spec.binary.clone(),
            addr: spec.addr(),
            status: "exited immediately".into(),
            output: tail_output(&spec.dir),
        })?;
        let state = MemberState {
            pid,
            start_ticks: proc_start_ticks(pid).unwrap_or(0),
            bind: spec.bind,
            port: spec.port,
            binary: spec.binary.clone(),
            revision: spec.revision.clone(),
        };
        let mut server = Server {
            dir: spec.dir.clone(),
            state,
            child: Some(child),
        };
        // Recorded before the readiness wait, which can take seconds: a kvpilot killed
        // meanwhile leaves the process (in its own session) with a state file, so `local
        // down` and the next `local up` find it instead of an orphan nobody knows.
        let ready = match server.write_state() {
            Ok(()) => server.wait_ready(&options).await,
            Err(e) => Err(e),
        };
        if let Err(e) = ready {
            // Never leave a half-started process behind, nor a state file naming it.
            let _ = server.kill();
            let _ = server.wait_gone(KILL_WAIT).await;
            let _ = fs::remove_file(spec.dir.join(STATE_FILE));
            return Err(e);
        }
        Ok(server)
    }

    async fn wait_ready(&mut self, options: &ConnectOptions) -> Result<(), ServerError> {
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(ServerError::Exited {
                    binary: self.state.binary.clone(),
                    addr: self.addr(),
                    status: status.to_string(),
                    output: tail_output(&self.dir),
                });
            }
            // PING is the same in every dialect.
            let last_error =
                match Client::connect_with(HostPort::from(self.addr()), options, Dialect::Valkey)
                    .await
                {
                    Ok(client) => match client.ping().await {
                        Ok(()) => return Ok(()),
                        Err(e) if e.is_loading() => return Ok(()),
                        Err(e) => e.to_string(),
                    },
                    Err(e) => e.to_string(),
                };
            if started.elapsed() >= START_TIMEOUT {
                return Err(ServerError::NotReady {
                    binary: self.state.binary.clone(),
                    addr: self.addr(),
                    waited: started.elapsed(),
                    last_error,
                    output: tail_output(&self.dir),
                });
            }
            sleep(POLL_INTERVAL).await;
        }
    }

    fn write_state(&self) -> Result<(), ServerError> {
        let path = self.dir.join(STATE_FILE);
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        let json = serde_json::to_vec_pretty(&self.state).map_err(|e| ServerError::StateFile {
            path: path.clone(),
            problem: e.to_string(),
        })?;
        // Write then rename, so a reader never sees a half-written file.
        fs::write(&tmp, json)
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(|source| ServerError::Io { path, source })
    }

    /// Reads the state file in `dir` and checks that the recorded process is alive and is that
    /// member (same PID and start time, not a zombie, command line naming the port).
    pub fn adopt(dir: &Path) -> Result<Server, ServerError> {
        let state = read_state(dir)?;
        let not_running = |reason: String| ServerError::NotRunning {
            dir: dir.to_path_buf(),
            pid: state.pid,
            addr: state.addr(),
            reason,
        };
        match identity_check(&state) {
            Ok(()) => {}
            Err(reason) => return Err(not_running(reason)),
        }
        let cmdline = fs::read(format!("/proc/{}/cmdline", state.pid))
            .map_err(|e| not_running(format!("cannot read its command line: {e}")))?;
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if !cmdline.contains(&state.port.to_string()) {
            return Err(not_running(format!(
                "its command line {cmdline:?} does not name port {}",
                state.port
            )));
        }
        Ok(Server {
            dir: dir.to_path_buf(),
            state,
            child: None,
        })
    }

    /// The member's process id.
    pub fn pid(&self) -> u32 {
        self.state.pid
    }

    /// The member's address.
    pub fn addr(&self) -> SocketAddr {
        self.state.addr()
    }

    /// The member's data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the state file records (pid, address, binary, revision).
    pub fn state(&self) -> &MemberState {
        &self.state
    }

    /// Whether the process still runs (a zombie or a recycled PID counts as dead).
    pub fn is_alive(&mut self) -> bool {
        if let Some(child) = self.child.as_mut() {
            // Reaps our own child, so it never lingers as a zombie.
            return matches!(child.try_wait(), Ok(None));
        }
        identity_check(&self.state).is_ok()
    }

    fn signal(&self, signal: Signal, action: &'static str) -> Result<(), ServerError> {
        let error = |problem: String| ServerError::Signal {
            pid: self.state.pid,
            addr: self.addr(),
            action,
            problem,
        };
        let pid = i32::try_from(self.state.pid)
            .ok()
            .and_then(Pid::from_raw)
            .ok_or_else(|| error("invalid pid".into()))?;
        kill_process(pid, signal).map_err(|e| error(e.to_string()))
    }

    async fn wait_gone(&mut self, limit: Duration) -> bool {
        let started = Instant::now();
        loop {
            if !self.is_alive() {
                return true;
            }
            if started.elapsed() >= limit {
                return false;
            }
            sleep(POLL_INTERVAL).await;
        }
    }

    /// Stops the member: `SIGTERM` (it saves if persistence is configured and exits), waits up
    /// to `grace`, then `SIGKILL`. Removes the state file once the process is gone.
    pub async fn terminate(&mut self, grace: Duration) -> Result<(), ServerError> {
        if self.is_alive() {
            self.signal(Signal::TERM, "SIGTERM")?;
            if !self.wait_gone(grace).await {
                self.signal(Signal::KILL, "SIGKILL")?;
                if !self.wait_gone(KILL_WAIT).await {
                    return Err(ServerError::Signal {
                        pid: self.state.pid,
                        addr: self.addr(),
                        action: "SIGKILL",
                        problem: format!("still alive {KILL_WAIT:?} after SIGKILL"),
                    });
                }
            }
        }
        let path = self.dir.join(STATE_FILE);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(ServerError::Io { path, source: e })
            }
            _ => Ok(()),
        }
    }

    /// `SIGKILL` at once (a crash, for tests and the demo). The state file is left in place,
    /// as after a real crash. Does not wait; see [`Server::is_alive`].
    pub fn kill(&mut self) -> Result<(), ServerError> {
        if !self.is_alive() {
            return Ok(());
        }
        self.signal(Signal::KILL, "SIGKILL")
    }

    /// `SIGSTOP`: freezes the member (a hung process, for tests). Undo with [`Server::resume`].
    pub fn pause(&self) -> Result<(), ServerError> {
        self.signal(Signal::STOP, "SIGSTOP")
    }

    /// `SIGCONT`: resumes a member frozen by [`Server::pause`].
    pub fn resume(&self) -> Result<(), ServerError> {
        self.signal(Signal::CONT, "SIGCONT")
    }

    /// Any signal (`kvpilot local kill --signal`); `name` is for the error.
    pub fn send(&self, signal: Signal, name: &'static str) -> Result<(), ServerError> {
        self.signal(signal, name)
    }
}

/// Writes `text` to `path`, readable only by this user (also when the file already existed).
fn write_private(path: &Path, text: &str) -> Result<(), ServerError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io_err = |source| ServerError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err)?;
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io_err)?;
    file.write_all(text.as_bytes()).map_err(io_err)
}

/// Reads a member's state file.
pub fn read_state(dir: &Path) -> Result<MemberState, ServerError> {
    let path = dir.join(STATE_FILE);
    let bytes = fs::read(&path).map_err(|source| ServerError::Io {
        path: path.clone(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ServerError::StateFile {
        path,
        problem: e.to_string(),
    })
}

/// The pid of the member whose data directory is `dir`, when its recorded process still runs
/// (the same identity check as adoption: pid and start time), for `kvpilot local status`.
pub fn running_pid(dir: &Path) -> Option<u32> {
    let state = read_state(dir).ok()?;
    identity_check(&state).ok().map(|()| state.pid)
}

/// `Ok` if `state.pid` is alive, not a zombie, and started at `state.start_ticks`.
fn identity_check(state: &MemberState) -> Result<(), String> {
    let pid = i32::try_from(state.pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or("invalid pid")?;
    test_kill_process(pid).map_err(|e| format!("no such process ({e})"))?;
    let stat = fs::read_to_string(format!("/proc/{}/stat", state.pid))
        .map_err(|e| format!("cannot read /proc ({e})"))?;
    let (proc_state, start_ticks) = parse_stat(&stat).ok_or("unreadable /proc stat")?;
    // A thread-group leader turns zombie before its other threads have exited, and until
    // the last one has, the process still holds its listening socket: only then is it gone.
    if matches!(proc_state, 'Z' | 'X') && threads_left(state.pid) <= 1 {
        return Err("it has exited (zombie)".into());
    }
    if start_ticks != state.start_ticks {
        return Err("the PID now belongs to another process".into());
    }
    Ok(())
}

/// How many of `pid`'s threads still exist (the leader included); 0 once it is reaped.
fn threads_left(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |dir| dir.count())
}

/// `(state, starttime)` from the text of `/proc/PID/stat`. The command name (field 2) may
/// contain spaces and parentheses, so fields are counted after its last `)`.
fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // After the state (field 3), starttime is field 22: 18 more fields on.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

fn proc_start_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).map(|(_, start)| start)
}

/// The last lines of the member's log and stdio, for error messages.
fn tail_output(dir: &Path) -> String {
    let mut out = String::new();
    for name in [STDIO_FILE, LOG_FILE] {
        if let Ok(text) = fs::read_to_string(dir.join(name)) {
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(10);
            for line in &lines[start..] {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// Next loopback address to use for a group of test members: cycles through 127.0.0.2..=254,
/// starting at a point derived from the process id so concurrent test binaries rarely share one.
/// (Linux routes all of 127.0.0.0/8 to `lo` without setup.)
pub fn next_loopback_ip() -> Ipv4Addr {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id() % 253,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    let n = NEXT.fetch_add(1, Ordering::SeqCst) % 253;
    Ipv4Addr::new(127, 0, 0, 2 + u8::try_from(n).unwrap_or(0))
}

/// A currently free port on `ip`, found by binding port 0 and releasing it. Another process may
/// take it before it is used; binding a private 127.0.0.x address makes that unlikely.
pub fn free_port(ip: Ipv4Addr) -> io::Result<u16> {
    let listener = TcpListener::bind(SocketAddrV4::new(ip, 0))?;
    Ok(listener.local_addr()?.port())
}

/// A free address on the next loopback IP ([`next_loopback_ip`] + [`free_port`]).
pub fn free_loopback_addr() -> io::Result<SocketAddr> {
    let ip = next_loopback_ip();
    Ok(SocketAddr::V4(SocketAddrV4::new(ip, free_port(ip)?)))
}

/// Kills (`SIGKILL`, by PID and start time) every member it tracks when dropped, also when a
/// test panics. Tracks individual servers and whole directories: on drop, every member whose
/// state file lies in a tracked directory (or up to three levels below it) is killed too, which catches
/// members a reconciler started or restarted on its own.
#[derive(Debug, Default)]
pub struct ServerGuard {
    members: Mutex<Vec<MemberState>>,
    dirs: Mutex<Vec<PathBuf>>,
}

impl ServerGuard {
    /// An empty guard.
    pub fn new() -> Self {
        Self::default()
    }

    /// Kill this server on drop.
    pub fn track(&self, server: &Server) {
        if let Ok(mut members) = self.members.lock() {
            members.push(server.state.clone());
        }
    }

    /// Kill every member found under `dir` (up to three levels down, e.g. a state root's
    /// `GROUP/members/MEMBER`) on drop.
    pub fn track_dir(&self, dir: impl Into<PathBuf>) {
        if let Ok(mut dirs) = self.dirs.lock() {
            dirs.push(dir.into());
        }
    }

    fn found_members(&self) -> Vec<MemberState> {
        let mut found = Vec::new();
        let dirs = self.dirs.lock().map(|d| d.clone()).unwrap_or_default();
        for dir in dirs {
            collect_states(&dir, GUARD_SEARCH_DEPTH, &mut found);
        }
        found
    }
}

/// How deep below a tracked directory [`ServerGuard`] looks for member state files: a state
/// root holds `GROUP/members/MEMBER/member.json`.
const GUARD_SEARCH_DEPTH: usize = 3;

fn collect_states(dir: &Path, depth: usize, found: &mut Vec<MemberState>) {
    if let Ok(state) = read_state(dir) {
        found.push(state);
    }
    if depth == 0 {
        return;
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for path in entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()) {
            collect_states(&path, depth - 1, found);
        }
    }
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        let mut all = self.members.lock().map(|m| m.clone()).unwrap_or_default();
        all.extend(self.found_members());
        for state in all {
            if identity_check(&state).is_ok()
                && let Some(pid) = i32::try_from(state.pid).ok().and_then(Pid::from_raw)
            {
                let _ = kill_process(pid, Signal::KILL);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_handles_odd_names() {
        let stat = "4242 (valkey-server 1) S 1 4242 4242 0 -1 4194560 700 0 0 0 3 5 0 0 20 0 5 0 987654 0 0";
        assert_eq!(parse_stat(stat), Some(('S', 987654)));
        let stat = "7 (a) b) Z 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 55 0 0";
        assert_eq!(parse_stat(stat), Some(('Z', 55)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_process_is_identified() {
        let pid = std::process::id();
        let start = proc_start_ticks(pid).unwrap();
        let state = MemberState {
            pid,
            start_ticks: start,
            bind: Ipv4Addr::LOCALHOST,
            port: 1,
            binary: "x".into(),
            revision: String::new(),
        };
        assert_eq!(identity_check(&state), Ok(()));
        let recycled = MemberState {
            start_ticks: start + 1,
            ..state
        };
        assert!(
            identity_check(&recycled)
                .unwrap_err()
                .contains("another process")
        );
    }

    #[test]
    fn args_put_fields_first_and_reject_reserved_keys() {
        let mut spec =
            ServerSpec::new("valkey-server", Ipv4Addr::new(127, 0, 0, 9), 7001, "/tmp/m");
        spec.password = Some("p\"w ".into());
        spec.replicaof = Some("127.0.0.8:7000".parse().unwrap());
        spec.config.insert("save".into(), "60 1".into());
        let args = spec.args().unwrap();
        assert_eq!(args[0], "/tmp/m/auth.conf");
        assert!(!args.iter().any(|a| a.contains("p\"w")), "{args:?}");
        assert_eq!(
            spec.auth_conf().unwrap(),
            "requirepass \"\\x70\\x22\\x77\\x20\"\nmasterauth \"\\x70\\x22\\x77\\x20\"\n"
        );
        let pairs: Vec<(&str, &str)> = args[1..]
            .chunks(2)
            .map(|c| (c[0].as_str(), c[1].as_str()))
            .collect();
        assert!(pairs.contains(&("--bind", "127.0.0.9")));
        assert!(pairs.contains(&("--replica-announce-ip", "127.0.0.9")));
        assert!(pairs.contains(&("--save", "60 1")));
        assert!(!pairs.contains(&("--save", "")));
        assert_eq!(pairs.last(), Some(&("--replicaof", "127.0.0.8 7000")));
        spec.config.insert("port".into(), "1".into());
        assert!(matches!(spec.args(), Err(ServerError::ReservedKey { .. })));
    }

    fn pairs(args: &[String]) -> Vec<(&str, &str)> {
        args.chunks(2)
            .map(|c| (c[0].as_str(), c[1].as_str()))
            .collect()
    }

    #[test]
    fn a_parked_cluster_member_starts_with_its_default_user_barred_from_sync_and_writes() {
        let mut spec =
            ServerSpec::new("valkey-server", Ipv4Addr::new(127, 0, 0, 9), 7001, "/tmp/m");
        spec.cluster = Some(ServerCluster {
            parked: true,
            ..ServerCluster::new(17001, Duration::from_millis(1500))
        });
        assert_eq!(
            spec.conf_file().as_deref(),
            Some("user default on nopass ~* &* +@all -@write -psync -sync\n")
        );
        assert_eq!(spec.args().unwrap()[0], "/tmp/m/auth.conf");
        // With a password, the user line carries it (it resets `default`).
        spec.password = Some("pw".into());
        let conf = spec.conf_file().unwrap();
        assert!(
            conf.ends_with("user default on \">\\x70\\x77\" ~* &* +@all -@write -psync -sync\n"),
            "{conf}"
        );
        assert!(conf.starts_with("requirepass"), "{conf}");
        // Replicas authenticating as another user would not be held back.
        spec.username = Some("app".into());
        assert!(matches!(
            spec.args(),
            Err(ServerError::ClusterConflict { .. })
        ));
        // Not parked: no file without a password, as before.
        let mut plain =
            ServerSpec::new("valkey-server", Ipv4Addr::new(127, 0, 0, 9), 7001, "/tmp/m");
        plain.cluster = Some(ServerCluster::new(17001, Duration::from_millis(1500)));
        assert_eq!(plain.conf_file(), None);
    }

    #[test]
    fn cluster_members_get_the_cluster_settings() {
        let mut spec =
            ServerSpec::new("valkey-server", Ipv4Addr::new(127, 0, 0, 9), 7001, "/tmp/m");
        let plain = spec.args().unwrap();
        assert!(
            !plain.iter().any(|a| a.starts_with("--cluster")),
            "{plain:?}"
        );
        spec.cluster = Some(ServerCluster::new(40123, Duration::from_millis(1500)));
        let args = spec.args().unwrap();
        let got = pairs(&args);
        for expected in [
            ("--cluster-enabled", "yes"),
            ("--cluster-config-file", "nodes.conf"),
            ("--cluster-port", "40123"),
            ("--cluster-node-timeout", "1500"),
            ("--cluster-replica-no-failover", "yes"),
            ("--cluster-allow-replica-migration", "no"),
            ("--cluster-require-full-coverage", "no"),
            ("--cluster-announce-ip", "127.0.0.9"),
        ] {
            assert!(got.contains(&expected), "{expected:?} not in {got:?}");
        }
        assert!(!args.iter().any(|a| a.contains("hostname")));
        spec.cluster.as_mut().unwrap().announce_hostname = Some("kv-0-1.kv".into());
        let args = spec.args().unwrap();
        let got = pairs(&args);
        assert!(got.contains(&("--cluster-announce-hostname", "kv-0-1.kv")));
        assert!(got.contains(&("--cluster-preferred-endpoint-type", "hostname")));
        // The field owns these; `config` cannot turn the operator's choices back.
        for key in [
            "cluster-replica-no-failover",
            "cluster-port",
            "cluster-enabled",
        ] {
            let mut bad = spec.clone();
            bad.config.insert(key.into(), "no".into());
            assert!(
                matches!(bad.args(), Err(ServerError::ReservedKey { .. })),
                "{key}"
            );
        }
        let mut both = spec.clone();
        both.replicaof = Some("127.0.0.8:7000".parse().unwrap());
        assert!(matches!(
            both.args(),
            Err(ServerError::ClusterConflict { .. })
        ));
        let mut same = spec.clone();
        same.cluster.as_mut().unwrap().bus_port = 7001;
        assert!(matches!(
            same.args(),
            Err(ServerError::ClusterConflict { .. })
        ));
    }

    #[test]
    fn dragonfly_gets_one_flag_per_setting_and_replicaof_as_host_port() {
        let mut spec = ServerSpec::new("dragonfly", Ipv4Addr::new(127, 0, 0, 9), 7001, "/tmp/m");
        spec.dialect = Dialect::Dragonfly;
        spec.password = Some("s3cret".into());
        spec.replicaof = Some("127.0.0.8:7000".parse().unwrap());
        spec.config.insert(
            "notify_keyspace_events".into(),
            "a b --requirepass=x".into(),
        );
        let args = spec.args().unwrap();
        assert_eq!(
            args,
            [
                "--flagfile=/tmp/m/auth.conf",
                "--bind=127.0.0.9",
                "--port=7001",
                "--dir=/tmp/m",
                "--logtostderr",
                "--replica_announce_ip=127.0.0.9",
                "--version_check=false",
                "--dbfilename=",
                "--notify_keyspace_events=a b --requirepass=x",
                "--replicaof=127.0.0.8:7000",
            ]
        );
        assert!(!args.iter().any(|a| a.contains("s3cret")), "{args:?}");
        assert_eq!(
            spec.auth_conf().unwrap(),
            "--requirepass=s3cret\n--masterauth=s3cret\n"
        );
        // Valkey takes `replicaof` as two words, one argument.
        spec.dialect = Dialect::Valkey;
        spec.config.clear();
        let args = spec.args().unwrap();
        assert_eq!(args[args.len() - 2..], ["--replicaof", "127.0.0.8 7000"]);
        spec.dialect = Dialect::Dragonfly;

        // Nothing that could become a second flag or a second flag-file line.
        for (key, value) in [
            ("maxmemory", "1gb\n--admin_nopass"),
            ("--admin_nopass", "true"),
            ("a=b", "c"),
        ] {
            let mut bad = spec.clone();
            bad.config.insert(key.into(), value.into());
            assert!(
                matches!(bad.args(), Err(ServerError::Unsupported { .. })),
                "{key:?} {value:?}"
            );
        }
        let mut bad = spec.clone();
        bad.config
            .insert("replica_announce_ip".into(), "10.0.0.1".into());
        assert!(matches!(bad.args(), Err(ServerError::ReservedKey { .. })));
        for password in ["two words", "line\n--admin_nopass", ""] {
            let mut bad = spec.clone();
            bad.password = Some(password.into());
            assert!(
                matches!(bad.args(), Err(ServerError::Unsupported { .. })),
                "{password:?}"
            );
        }
    }

    #[test]
    fn loopback_ips_stay_in_range() {
        for _ in 0..600 {
            let ip = next_loopback_ip();
            let last = ip.octets()[3];
            assert!(ip.is_loopback() && (2..=254).contains(&last), "{ip}");
        }
    }
}
