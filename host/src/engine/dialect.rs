//! Datastore dialects: which command does what on Valkey, Redis 7 and Dragonfly.
//!
//! Only command *building* lives here (pure, unit-tested); [`super::Client`] sends them.

use std::fmt;
use std::time::Duration;

/// The datastore dialect of a group.
///
/// Valkey and Redis 7 share every command used here. Dragonfly is **experimental**: its commands
/// and INFO fields are implemented from its documentation and source, and unit-tested only;
/// no test runs against a Dragonfly server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// Valkey 7.2+/8.
    Valkey,
    /// Redis 7.
    Redis,
    /// Dragonfly (experimental).
    Dragonfly,
}

/// How a dialect hands the primary role over without losing acknowledged writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandoverStyle {
    /// `FAILOVER TO host port TIMEOUT ms`, sent to the current primary (Valkey, Redis).
    FailoverOnPrimary,
    /// `REPLTAKEOVER seconds`, sent to the replica being promoted (Dragonfly).
    TakeoverOnReplica,
}

/// One command as a list of arguments. `Display` shows it with secrets redacted, for errors
/// and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineCommand {
    args: Vec<String>,
}

impl EngineCommand {
    /// A command from its arguments (name first).
    pub fn new<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            args: args.into_iter().map(Into::into).collect(),
        }
    }

    /// The arguments, name first.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// The `redis` crate command to send.
    pub fn to_cmd(&self) -> redis::Cmd {
        let mut iter = self.args.iter();
        let mut cmd = redis::cmd(iter.next().map(String::as_str).unwrap_or("PING"));
        for arg in iter {
            cmd.arg(arg.as_str());
        }
        cmd
    }
}

impl fmt::Display for EngineCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.args.first().map(|s| s.to_ascii_uppercase());
        let second_is = |word: &str| {
            self.args
                .get(1)
                .is_some_and(|s| s.eq_ignore_ascii_case(word))
        };
        let is_config_set = name.as_deref() == Some("CONFIG") && second_is("SET");
        let is_acl_setuser = name.as_deref() == Some("ACL") && second_is("SETUSER");
        let arg_before = |i: usize, back: usize, word: &str| {
            i >= back && self.args[i - back].eq_ignore_ascii_case(word)
        };
        for (i, arg) in self.args.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            let secret = match name.as_deref() {
                Some("AUTH") => i > 0,
                // CONFIG SET requirepass/masterauth <secret>
                _ if is_config_set => i >= 3 && i % 2 == 1 && is_secret_key(&self.args[i - 1]),
                // ACL SETUSER user >password <password #hash !hash
                _ if is_acl_setuser => i >= 3 && arg.starts_with(['>', '<', '#', '!']),
                // MIGRATE ... AUTH <secret> | AUTH2 user <secret> ... KEYS
                Some("MIGRATE") => arg_before(i, 1, "AUTH") || arg_before(i, 2, "AUTH2"),
                _ => false,
            };
            f.write_str(if secret { "<redacted>" } else { arg })?;
        }
        Ok(())
    }
}

/// Config keys whose values are secrets (`requirepass`, `masterauth`).
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("pass") || key == "masterauth"
}

impl Dialect {
    /// Lower-case name, as written in specs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Valkey => "valkey",
            Self::Redis => "redis",
            Self::Dragonfly => "dragonfly",
        }
    }

    /// How this dialect hands over the primary role.
    pub fn handover_style(self) -> HandoverStyle {
        match self {
            Self::Valkey | Self::Redis => HandoverStyle::FailoverOnPrimary,
            Self::Dragonfly => HandoverStyle::TakeoverOnReplica,
        }
    }

    /// `REPLICAOF host port`: make the receiver a replica of `host:port`.
    pub fn replicaof(self, host: &str, port: u16) -> EngineCommand {
        EngineCommand::new(["REPLICAOF", host, &port.to_string()])
    }

    /// `REPLICAOF NO ONE`: promote the receiver, keeping its dataset.
    pub fn replicaof_no_one(self) -> EngineCommand {
        EngineCommand::new(["REPLICAOF", "NO", "ONE"])
    }

    /// `FAILOVER TO host port TIMEOUT ms` for the current primary; `None` on Dragonfly.
    /// The server pauses writes, waits until the target has every write, then swaps roles;
    /// after `timeout` it gives up and resumes writes as primary.
    pub fn failover_to(self, host: &str, port: u16, timeout: Duration) -> Option<EngineCommand> {
        match self.handover_style() {
            HandoverStyle::FailoverOnPrimary => Some(EngineCommand::new([
                "FAILOVER".to_owned(),
                "TO".to_owned(),
                host.to_owned(),
                port.to_string(),
                "TIMEOUT".to_owned(),
                timeout.as_millis().max(1).to_string(),
            ])),
            HandoverStyle::TakeoverOnReplica => None,
        }
    }

    /// `FAILOVER ABORT`; `None` on Dragonfly.
    pub fn failover_abort(self) -> Option<EngineCommand> {
        match self.handover_style() {
            HandoverStyle::FailoverOnPrimary => Some(EngineCommand::new(["FAILOVER", "ABORT"])),
            HandoverStyle::TakeoverOnReplica => None,
        }
    }

    /// `REPLTAKEOVER seconds` for the replica to promote (Dragonfly only; experimental).
    /// Blocks until the replica has caught up and taken over, or the timeout expired.
    pub fn takeover(self, timeout: Duration) -> Option<EngineCommand> {
        match self.handover_style() {
            HandoverStyle::TakeoverOnReplica => {
                // Whole seconds, rounded up: never shorter than asked, at least 1.
                let secs = timeout.as_millis().div_ceil(1000).max(1);
                Some(EngineCommand::new([
                    "REPLTAKEOVER".to_owned(),
                    secs.to_string(),
                ]))
            }
            HandoverStyle::FailoverOnPrimary => None,
        }
    }

    /// `CLIENT KILL TYPE normal SKIPME yes`: drop every normal client except the sender, so
    /// clients of a demoted member reconnect through the primary endpoint. Replication links
    /// (types `master`/`replica`) and pub/sub clients are not touched.
    pub fn kill_normal_clients(self) -> EngineCommand {
        EngineCommand::new(["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"])
    }

    /// Whether [`Dialect::kill_normal_clients`] is understood. Dragonfly's `CLIENT KILL`
    /// takes only `ip:port`, `ADDR`, `LADDR` or `ID`: its clients are closed one by one
    /// ([`super::clients`]).
    pub fn kills_by_type(self) -> bool {
        self != Self::Dragonfly
    }

    /// `CLIENT ID`: the id of the sending connection.
    pub fn client_id(self) -> EngineCommand {
        EngineCommand::new(["CLIENT", "ID"])
    }

    /// `CLIENT LIST`: one line per connection (every dialect, without filters).
    pub fn client_list(self) -> EngineCommand {
        EngineCommand::new(["CLIENT", "LIST"])
    }

    /// `CLIENT KILL ID id`.
    pub fn client_kill_id(self, id: u64) -> EngineCommand {
        EngineCommand::new([
            "CLIENT".to_owned(),
            "KILL".to_owned(),
            "ID".to_owned(),
            id.to_string(),
        ])
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Dialect {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "valkey" => Ok(Self::Valkey),
            "redis" => Ok(Self::Redis),
            "dragonfly" => Ok(Self::Dragonfly),
            other => Err(format!(
                "unknown engine {other:?} (expected valkey, redis or dragonfly)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(c: &EngineCommand) -> Vec<&str> {
        c.args().iter().map(String::as_str).collect()
    }

    #[test]
    fn valkey_and_redis_share_commands() {
        for d in [Dialect::Valkey, Dialect::Redis] {
            assert_eq!(
                args(&d.replicaof("127.0.0.2", 6380)),
                ["REPLICAOF", "127.0.0.2", "6380"]
            );
            assert_eq!(args(&d.replicaof_no_one()), ["REPLICAOF", "NO", "ONE"]);
            let f = d
                .failover_to("127.0.0.3", 7000, Duration::from_millis(2500))
                .unwrap();
            assert_eq!(
                args(&f),
                ["FAILOVER", "TO", "127.0.0.3", "7000", "TIMEOUT", "2500"]
            );
            assert_eq!(args(&d.failover_abort().unwrap()), ["FAILOVER", "ABORT"]);
            assert_eq!(d.takeover(Duration::from_secs(1)), None);
            assert_eq!(d.handover_style(), HandoverStyle::FailoverOnPrimary);
        }
    }

    #[test]
    fn dragonfly_takes_over_on_the_replica() {
        let d = Dialect::Dragonfly;
        assert_eq!(d.handover_style(), HandoverStyle::TakeoverOnReplica);
        assert_eq!(d.failover_to("h", 1, Duration::from_secs(1)), None);
        assert_eq!(d.failover_abort(), None);
        assert_eq!(
            args(&d.takeover(Duration::from_millis(2500)).unwrap()),
            ["REPLTAKEOVER", "3"]
        );
        assert_eq!(
            args(&d.takeover(Duration::from_millis(10)).unwrap()),
            ["REPLTAKEOVER", "1"]
        );
        assert_eq!(
            args(&d.replicaof("10.0.0.1", 6379)),
            ["REPLICAOF", "10.0.0.1", "6379"]
        );
        assert_eq!(args(&d.replicaof_no_one()), ["REPLICAOF", "NO", "ONE"]);
    }

    #[test]
    fn dragonfly_kills_clients_by_id() {
        assert!(Dialect::Valkey.kills_by_type() && Dialect::Redis.kills_by_type());
        assert!(!Dialect::Dragonfly.kills_by_type());
        let d = Dialect::Dragonfly;
        assert_eq!(args(&d.client_id()), ["CLIENT", "ID"]);
        assert_eq!(args(&d.client_list()), ["CLIENT", "LIST"]);
        assert_eq!(args(&d.client_kill_id(42)), ["CLIENT", "KILL", "ID", "42"]);
    }

    #[test]
    fn kill_skips_the_sender() {
        let c = Dialect::Valkey.kill_normal_clients();
        assert_eq!(
            args(&c),
            ["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]
        );
    }

    #[test]
    fn display_redacts_secrets() {
        assert_eq!(
            EngineCommand::new(["AUTH", "s3cret"]).to_string(),
            "AUTH <redacted>"
        );
        assert_eq!(
            EngineCommand::new(["CONFIG", "SET", "requirepass", "s3cret"]).to_string(),
            "CONFIG SET requirepass <redacted>"
        );
        assert_eq!(
            EngineCommand::new(["CONFIG", "SET", "masterauth", "x", "maxmemory", "1mb"])
                .to_string(),
            "CONFIG SET masterauth <redacted> maxmemory 1mb"
        );
        assert_eq!(
            EngineCommand::new(["CONFIG", "SET", "maxmemory", "1mb"]).to_string(),
            "CONFIG SET maxmemory 1mb"
        );
        assert_eq!(
            EngineCommand::new(["ACL", "SETUSER", "kvpilot", ">new", "<old", "on"]).to_string(),
            "ACL SETUSER kvpilot <redacted> <redacted> on"
        );
        assert_eq!(
            EngineCommand::new([
                "MIGRATE", "h", "1", "", "0", "5", "AUTH2", "u", "pw", "KEYS"
            ])
            .to_string(),
            "MIGRATE h 1  0 5 AUTH2 u <redacted> KEYS"
        );
    }

    #[test]
    fn parse_names() {
        assert_eq!("valkey".parse::<Dialect>().unwrap(), Dialect::Valkey);
        assert_eq!("dragonfly".parse::<Dialect>().unwrap(), Dialect::Dragonfly);
        assert!("memcached".parse::<Dialect>().is_err());
    }
}
