//! Pure parsers for what members report: `INFO replication`, `INFO persistence`, `INFO server`,
//! the `ROLE` reply and `INFO keyspace`. No I/O here, so every field is unit-tested on captured output.
//!
//! Fields are read by name and unknown fields are ignored, so the same parsers read Valkey 8,
//! Redis 7 and (experimental) Dragonfly output; a field an engine does not report is `None`.

use std::collections::BTreeMap;

use redis::Value;

/// A parse failure: which field, and what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ParseError {
    /// The INFO field or reply element that did not parse.
    pub field: String,
    /// What was wrong with it.
    pub problem: String,
}

impl ParseError {
    fn new(field: &str, problem: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            problem: problem.into(),
        }
    }
}

/// The `key:value` lines of an INFO reply (section headers, blank lines and comments dropped).
pub fn info_fields(text: &str) -> BTreeMap<&str, &str> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once(':'))
        .collect()
}

/// Role of a member as reported by `INFO replication` or `ROLE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// `role:master`: accepts writes.
    Primary,
    /// `role:slave` (Valkey/Redis) or `role:replica` (Dragonfly).
    Replica,
}

/// The `master_failover_state` of a Valkey/Redis primary (absent on Dragonfly).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailoverState {
    /// `no-failover`
    NoFailover,
    /// `waiting-for-sync`: writes paused, waiting for the target to catch up.
    WaitingForSync,
    /// `failover-in-progress`: the primary is handing over to the target.
    FailoverInProgress,
    /// A value this version does not know.
    Other(String),
}

impl FailoverState {
    fn parse(value: &str) -> Self {
        match value {
            "no-failover" => Self::NoFailover,
            "waiting-for-sync" => Self::WaitingForSync,
            "failover-in-progress" => Self::FailoverInProgress,
            other => Self::Other(other.to_owned()),
        }
    }
}

/// One `slaveN:` line of a primary's `INFO replication`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReplicaEntry {
    /// Address the replica announced (`ip=`).
    pub ip: String,
    /// Listening port the replica announced (`port=`).
    pub port: u16,
    /// Raw link state: `online`, `wait_bgsave`, `send_bulk` (Valkey/Redis);
    /// `preparation`, `full_sync`, `stable_sync` (Dragonfly).
    pub state: String,
    /// Replication offset the replica acknowledged (absent on Dragonfly).
    pub offset: Option<u64>,
    /// Seconds since the last ack (Valkey/Redis) or journal LSN lag (Dragonfly).
    pub lag: Option<u64>,
}

impl ReplicaEntry {
    /// The link finished its full sync and streams commands.
    pub fn online(&self) -> bool {
        matches!(self.state.as_str(), "online" | "stable_sync")
    }

    fn parse(field: &str, value: &str) -> Result<Self, ParseError> {
        let parts: BTreeMap<&str, &str> = value
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let ip = parts
            .get("ip")
            .ok_or_else(|| ParseError::new(field, "no ip="))?;
        let port = parts
            .get("port")
            .ok_or_else(|| ParseError::new(field, "no port="))?
            .parse()
            .map_err(|_| ParseError::new(field, format!("bad port in {value:?}")))?;
        let number = |key: &str| -> Result<Option<u64>, ParseError> {
            parts
                .get(key)
                .map(|v| {
                    v.parse()
                        .map_err(|_| ParseError::new(field, format!("bad {key}= in {value:?}")))
                })
                .transpose()
        };
        Ok(Self {
            ip: (*ip).to_owned(),
            port,
            state: parts.get("state").copied().unwrap_or_default().to_owned(),
            offset: number("offset")?,
            lag: number("lag")?,
        })
    }
}

/// The replica's view of its primary (the `master_*` fields).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PrimaryLink {
    /// `master_host` as configured by `REPLICAOF`.
    pub host: String,
    /// `master_port`.
    pub port: u16,
    /// `master_link_status:up`.
    pub link_up: bool,
    /// `master_sync_in_progress:1`: a full sync is running (transfer or load).
    pub sync_in_progress: bool,
    /// `master_last_io_seconds_ago` (`None` when the server reports -1).
    pub last_io_seconds_ago: Option<u64>,
}

/// Parsed `INFO replication`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReplicationInfo {
    /// Primary or replica.
    pub role: Role,
    /// `connected_slaves`.
    pub connected_replicas: u32,
    /// The `slaveN:` lines, in order.
    pub replicas: Vec<ReplicaEntry>,
    /// Set when `role` is [`Role::Replica`].
    pub primary: Option<PrimaryLink>,
    /// `master_repl_offset`: on a primary its write offset; on a replica the offset it applied.
    pub master_repl_offset: Option<u64>,
    /// `slave_repl_offset` (replicas only).
    pub slave_repl_offset: Option<u64>,
    /// `slave_read_repl_offset` (replicas only, Redis 7+/Valkey).
    pub slave_read_repl_offset: Option<u64>,
    /// `master_failover_state` (Valkey/Redis only).
    pub failover_state: Option<FailoverState>,
    /// `master_replid`: the replication history this member belongs to.
    pub replid: Option<String>,
    /// `master_replid2`: the history before the last change of ID (a promotion, or a primary
    /// that loaded an RDB); `None` when the server reports none (all zeros).
    pub replid2: Option<String>,
    /// `second_repl_offset`: `replid2` is valid for offsets below this one; `None` when the
    /// server reports -1.
    pub second_repl_offset: Option<u64>,
}

impl ReplicationInfo {
    /// Parses the text of `INFO replication`.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let f = info_fields(text);
        let role = match f.get("role").copied() {
            Some("master") => Role::Primary,
            Some("slave" | "replica") => Role::Replica,
            Some(other) => return Err(ParseError::new("role", format!("unknown role {other:?}"))),
            None => return Err(ParseError::new("role", "missing")),
        };
        let mut replicas = Vec::new();
        for index in 0.. {
            let key = format!("slave{index}");
            match f.get(key.as_str()) {
                Some(value) => replicas.push(ReplicaEntry::parse(&key, value)?),
                None => break,
            }
        }
        let primary = match role {
            Role::Primary => None,
            Role::Replica => Some(PrimaryLink {
                host: required(&f, "master_host")?.to_owned(),
                port: parse_required(&f, "master_port")?,
                link_up: required(&f, "master_link_status")? == "up",
                sync_in_progress: flag(&f, "master_sync_in_progress")?.unwrap_or(false),
                last_io_seconds_ago: non_negative(&f, "master_last_io_seconds_ago")?,
            }),
        };
        Ok(Self {
            role,
            connected_replicas: parse_optional(&f, "connected_slaves")?.unwrap_or(0),
            replicas,
            primary,
            master_repl_offset: non_negative(&f, "master_repl_offset")?,
            slave_repl_offset: non_negative(&f, "slave_repl_offset")?,
            slave_read_repl_offset: non_negative(&f, "slave_read_repl_offset")?,
            failover_state: f
                .get("master_failover_state")
                .map(|v| FailoverState::parse(v)),
            replid: f.get("master_replid").map(|v| (*v).to_owned()),
            replid2: f
                .get("master_replid2")
                .filter(|v| !v.is_empty() && v.bytes().any(|b| b != b'0'))
                .map(|v| (*v).to_owned()),
            second_repl_offset: non_negative(&f, "second_repl_offset")?,
        })
    }
}

/// Parsed `INFO persistence`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PersistenceInfo {
    /// `loading:1`: loading a dataset (from disk or from the primary's full sync).
    pub loading: bool,
    /// `async_loading:1`: a replica loading a full sync while serving the old dataset.
    pub async_loading: bool,
    /// `rdb_bgsave_in_progress:1`.
    pub bgsave_in_progress: bool,
    /// `rdb_last_save_time` (Unix seconds); Dragonfly reports `last_save`.
    pub last_save_time: Option<i64>,
    /// `rdb_last_bgsave_status:ok`; `None` if not reported.
    pub last_bgsave_ok: Option<bool>,
    /// `rdb_changes_since_last_save`.
    pub changes_since_last_save: Option<u64>,
    /// `rdb_saves`: snapshots this server process has made (Valkey, Redis 7+).
    pub saves: Option<u64>,
}

impl PersistenceInfo {
    /// Parses the text of `INFO persistence`.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let f = info_fields(text);
        let last_save_time = match parse_optional(&f, "rdb_last_save_time")? {
            Some(t) => Some(t),
            None => parse_optional(&f, "last_save")?,
        };
        Ok(Self {
            loading: flag(&f, "loading")?.unwrap_or(false),
            async_loading: flag(&f, "async_loading")?.unwrap_or(false),
            bgsave_in_progress: flag(&f, "rdb_bgsave_in_progress")?.unwrap_or(false),
            last_save_time,
            last_bgsave_ok: f.get("rdb_last_bgsave_status").map(|v| *v == "ok"),
            changes_since_last_save: parse_optional(&f, "rdb_changes_since_last_save")?,
            saves: parse_optional(&f, "rdb_saves")?,
        })
    }
}

/// Which server software answered, from `INFO server`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerKind {
    /// Reports `valkey_version` (or `server_name:valkey`).
    Valkey,
    /// Reports only `redis_version`.
    Redis,
    /// Reports `dragonfly_version`.
    Dragonfly,
}

/// Parsed `INFO server`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServerInfo {
    /// The software.
    pub kind: ServerKind,
    /// The software's own version (`valkey_version`, `dragonfly_version` or `redis_version`).
    pub version: String,
    /// `redis_version`: the Redis compatibility level (Valkey 8 reports 7.2.4).
    pub redis_version: Option<String>,
    /// `process_id`.
    pub process_id: Option<u32>,
    /// `run_id`: changes at every restart.
    pub run_id: Option<String>,
    /// `tcp_port`.
    pub tcp_port: Option<u16>,
    /// `server_time_usec`: the member's own clock (Unix microseconds), the clock its
    /// `LASTSAVE` is read on.
    pub time_usec: Option<u64>,
    /// `uptime_in_seconds`.
    pub uptime_seconds: Option<u64>,
}

impl ServerInfo {
    /// Parses the text of `INFO server`.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let f = info_fields(text);
        let redis_version = f.get("redis_version").map(|v| (*v).to_owned());
        let (kind, version) = if let Some(v) = f.get("valkey_version") {
            (ServerKind::Valkey, (*v).to_owned())
        } else if let Some(v) = f.get("dragonfly_version") {
            (ServerKind::Dragonfly, (*v).to_owned())
        } else if let Some(v) = &redis_version {
            let kind = if f.get("server_name") == Some(&"valkey") {
                ServerKind::Valkey
            } else {
                ServerKind::Redis
            };
            (kind, v.clone())
        } else {
            return Err(ParseError::new("redis_version", "no version field"));
        };
        Ok(Self {
            kind,
            version,
            redis_version,
            process_id: parse_optional(&f, "process_id")?,
            run_id: f.get("run_id").map(|v| (*v).to_owned()),
            tcp_port: parse_optional(&f, "tcp_port")?,
            time_usec: parse_optional(&f, "server_time_usec")?,
            uptime_seconds: parse_optional(&f, "uptime_in_seconds")?,
        })
    }
}

/// The `ROLE` reply.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RoleReply {
    /// `["master", offset, [[ip, port, offset], ...]]`; Dragonfly: `["master", [[ip, port, state], ...]]`.
    Primary {
        /// Replication offset (absent on Dragonfly).
        offset: Option<u64>,
        /// `(ip, port)` of each connected replica.
        replicas: Vec<(String, u16)>,
    },
    /// `["slave", host, port, state, offset]`; Dragonfly: `["replica", host, port, state]`.
    Replica {
        /// Primary host.
        host: String,
        /// Primary port.
        port: u16,
        /// Link state: `connect`, `connecting`, `sync`, `connected`, `handshake` (Valkey/Redis),
        /// `preparation`, `full_sync`, `stable_sync` (Dragonfly).
        state: String,
        /// Offset received (absent on Dragonfly).
        offset: Option<i64>,
    },
    /// `["sentinel", ...]`: not a data member.
    Sentinel,
}

impl RoleReply {
    /// Parses the reply of `ROLE`.
    pub fn parse(value: &Value) -> Result<Self, ParseError> {
        let items = as_array(value, "ROLE")?;
        let kind = items
            .first()
            .map(|v| as_string(v, "ROLE[0]"))
            .transpose()?
            .ok_or_else(|| ParseError::new("ROLE", "empty reply"))?;
        match kind.as_str() {
            "master" => {
                // Valkey/Redis put the offset second; Dragonfly goes straight to the list.
                let (offset, list) = match items.get(1) {
                    Some(Value::Int(o)) => (Some(non_negative_int(*o, "ROLE[1]")?), items.get(2)),
                    other => (None, other),
                };
                let mut replicas = Vec::new();
                if let Some(list) = list {
                    for (i, entry) in as_array(list, "ROLE replicas")?.iter().enumerate() {
                        let field = format!("ROLE replica {i}");
                        let parts = as_array(entry, &field)?;
                        let ip = parts
                            .first()
                            .map(|v| as_string(v, &field))
                            .transpose()?
                            .ok_or_else(|| ParseError::new(&field, "no ip"))?;
                        let port = parts
                            .get(1)
                            .map(|v| as_string(v, &field))
                            .transpose()?
                            .ok_or_else(|| ParseError::new(&field, "no port"))?;
                        let port = port
                            .parse()
                            .map_err(|_| ParseError::new(&field, format!("bad port {port:?}")))?;
                        replicas.push((ip, port));
                    }
                }
                Ok(Self::Primary { offset, replicas })
            }
            "slave" | "replica" => {
                let text = |i: usize| -> Result<String, ParseError> {
                    let field = format!("ROLE[{i}]");
                    items
                        .get(i)
                        .map(|v| as_string(v, &field))
                        .transpose()?
                        .ok_or_else(|| ParseError::new(&field, "missing"))
                };
                let host = text(1)?;
                let port = match items.get(2) {
                    Some(Value::Int(p)) => u16::try_from(*p).ok(),
                    _ => text(2)?.parse().ok(),
                }
                .ok_or_else(|| ParseError::new("ROLE[2]", "bad port"))?;
                let offset = match items.get(4) {
                    Some(Value::Int(o)) => Some(*o),
                    _ => None,
                };
                Ok(Self::Replica {
                    host,
                    port,
                    state: text(3)?,
                    offset,
                })
            }
            "sentinel" => Ok(Self::Sentinel),
            other => Err(ParseError::new(
                "ROLE[0]",
                format!("unknown role {other:?}"),
            )),
        }
    }
}

/// The number of keys in every database, from `INFO keyspace` (`db0:keys=3,expires=0,…`).
/// `DBSIZE` counts only the selected database: a member whose data lives in another would look
/// empty to the data-holding guard.
pub fn parse_keyspace(text: &str) -> Result<u64, ParseError> {
    let mut total: u64 = 0;
    for line in text.lines().map(str::trim) {
        let Some((db, fields)) = line.split_once(':') else {
            continue;
        };
        if !db.starts_with("db") {
            continue;
        }
        let keys = fields
            .split(',')
            .find_map(|f| f.strip_prefix("keys="))
            .ok_or_else(|| ParseError::new(db, format!("no keys= in {line:?}")))?;
        let keys: u64 = keys
            .parse()
            .map_err(|_| ParseError::new(db, format!("keys is not a count: {keys:?}")))?;
        total = total.saturating_add(keys);
    }
    Ok(total)
}

/// The text of a bulk/simple/verbatim string reply (INFO answers a bulk string).
pub fn reply_text(value: &Value, field: &str) -> Result<String, ParseError> {
    as_string(value, field)
}

fn as_array<'a>(value: &'a Value, field: &str) -> Result<&'a [Value], ParseError> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        other => Err(ParseError::new(field, format!("not an array: {other:?}"))),
    }
}

fn as_string(value: &Value, field: &str) -> Result<String, ParseError> {
    match value {
        Value::BulkString(bytes) => {
            String::from_utf8(bytes.clone()).map_err(|_| ParseError::new(field, "not UTF-8"))
        }
        Value::SimpleString(s) => Ok(s.clone()),
        Value::VerbatimString { text, .. } => Ok(text.clone()),
        Value::Okay => Ok("OK".to_owned()),
        Value::Int(n) => Ok(n.to_string()),
        other => Err(ParseError::new(field, format!("not a string: {other:?}"))),
    }
}

fn non_negative_int(n: i64, field: &str) -> Result<u64, ParseError> {
    u64::try_from(n).map_err(|_| ParseError::new(field, format!("negative: {n}")))
}

fn required<'a>(f: &BTreeMap<&str, &'a str>, key: &str) -> Result<&'a str, ParseError> {
    f.get(key)
        .copied()
        .ok_or_else(|| ParseError::new(key, "missing"))
}

fn parse_required<T: std::str::FromStr>(
    f: &BTreeMap<&str, &str>,
    key: &str,
) -> Result<T, ParseError> {
    let raw = required(f, key)?;
    raw.parse()
        .map_err(|_| ParseError::new(key, format!("bad value {raw:?}")))
}

fn parse_optional<T: std::str::FromStr>(
    f: &BTreeMap<&str, &str>,
    key: &str,
) -> Result<Option<T>, ParseError> {
    f.get(key)
        .map(|raw| {
            raw.parse()
                .map_err(|_| ParseError::new(key, format!("bad value {raw:?}")))
        })
        .transpose()
}

/// A number where the server uses -1 for "not applicable".
fn non_negative(f: &BTreeMap<&str, &str>, key: &str) -> Result<Option<u64>, ParseError> {
    Ok(parse_optional::<i64>(f, key)?.and_then(|n| u64::try_from(n).ok()))
}

fn flag(f: &BTreeMap<&str, &str>, key: &str) -> Result<Option<bool>, ParseError> {
    match f.get(key).copied() {
        None => Ok(None),
        Some("0") => Ok(Some(false)),
        Some("1") => Ok(Some(true)),
        Some(other) => Err(ParseError::new(key, format!("not 0/1: {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from real valkey-server 8.0.1 and redis-server 7.0.15 (primary + one replica,
    // 3M keys, disk-based full sync so the intermediate states last long enough to capture).
    const VALKEY_PRIMARY: &str = include_str!("testdata/valkey8_primary_synced.repl.txt");
    const VALKEY_REPLICA: &str = include_str!("testdata/valkey8_replica_synced.repl.txt");
    const VALKEY_REPLICA_FULLSYNC: &str =
        include_str!("testdata/valkey8_replica_fullsync.repl.txt");
    const VALKEY_PRIMARY_WAIT_BGSAVE: &str =
        include_str!("testdata/valkey8_primary_wait_bgsave.repl.txt");
    const VALKEY_REPLICA_LOADING: &str = include_str!("testdata/valkey8_replica_loading.repl.txt");
    const VALKEY_REPLICA_LOADING_P: &str =
        include_str!("testdata/valkey8_replica_loading.persist.txt");
    const VALKEY_PRIMARY_BGSAVE_P: &str =
        include_str!("testdata/valkey8_primary_bgsave.persist.txt");
    const VALKEY_SERVER: &str = include_str!("testdata/valkey8.server.txt");
    const REDIS_PRIMARY: &str = include_str!("testdata/redis7_primary_synced.repl.txt");
    const REDIS_REPLICA: &str = include_str!("testdata/redis7_replica_synced.repl.txt");
    const REDIS_REPLICA_FULLSYNC: &str = include_str!("testdata/redis7_replica_fullsync.repl.txt");
    const REDIS_REPLICA_LOADING: &str = include_str!("testdata/redis7_replica_loading.repl.txt");
    const REDIS_REPLICA_LOADING_P: &str =
        include_str!("testdata/redis7_replica_loading.persist.txt");
    const REDIS_PRIMARY_BGSAVE_P: &str = include_str!("testdata/redis7_primary_bgsave.persist.txt");
    const REDIS_SERVER: &str = include_str!("testdata/redis7.server.txt");

    #[test]
    fn valkey_primary_with_online_replica() {
        let r = ReplicationInfo::parse(VALKEY_PRIMARY).unwrap();
        assert_eq!(r.role, Role::Primary);
        assert_eq!(r.connected_replicas, 1);
        assert_eq!(
            r.replicas,
            vec![ReplicaEntry {
                ip: "127.0.0.1".into(),
                port: 26402,
                state: "online".into(),
                offset: Some(0),
                lag: Some(0),
            }]
        );
        assert!(r.replicas[0].online());
        assert_eq!(r.primary, None);
        assert_eq!(r.master_repl_offset, Some(14));
        assert_eq!(r.slave_repl_offset, None);
        assert_eq!(r.failover_state, Some(FailoverState::NoFailover));
        assert_eq!(
            r.replid.as_deref(),
            Some("895e339479feda19a956b392a6f79fdb7b2fb5f2")
        );
    }

    #[test]
    fn the_previous_history_is_read_after_a_promotion_and_absent_before() {
        let r = ReplicationInfo::parse(VALKEY_PRIMARY).unwrap();
        assert_eq!((r.replid2, r.second_repl_offset), (None, None));
        let promoted = "# Replication\r\nrole:master\r\nconnected_slaves:0\r\n\
            master_replid:aa1fe0f1d3b8b1b0f6e3cfd2e0b6a1a0f1e2d3c4\r\n\
            master_replid2:895e339479feda19a956b392a6f79fdb7b2fb5f2\r\n\
            master_repl_offset:5000\r\nsecond_repl_offset:4001\r\n";
        let r = ReplicationInfo::parse(promoted).unwrap();
        assert_eq!(
            r.replid2.as_deref(),
            Some("895e339479feda19a956b392a6f79fdb7b2fb5f2")
        );
        assert_eq!(r.second_repl_offset, Some(4001));
        assert_eq!(r.master_repl_offset, Some(5000));
    }

    #[test]
    fn valkey_replica_in_sync() {
        let r = ReplicationInfo::parse(VALKEY_REPLICA).unwrap();
        assert_eq!(r.role, Role::Replica);
        assert_eq!(
            r.primary,
            Some(PrimaryLink {
                host: "127.0.0.1".into(),
                port: 26401,
                link_up: true,
                sync_in_progress: false,
                last_io_seconds_ago: Some(0),
            })
        );
        assert_eq!(r.slave_repl_offset, Some(14));
        assert_eq!(r.slave_read_repl_offset, Some(14));
        assert_eq!(r.master_repl_offset, Some(14));
        assert!(r.replicas.is_empty());
    }

    #[test]
    fn valkey_full_sync_states() {
        let replica = ReplicationInfo::parse(VALKEY_REPLICA_FULLSYNC).unwrap();
        let link = replica.primary.unwrap();
        assert!(!link.link_up);
        assert!(link.sync_in_progress);
        assert_eq!(link.last_io_seconds_ago, None, "-1 means not applicable");

        let primary = ReplicationInfo::parse(VALKEY_PRIMARY_WAIT_BGSAVE).unwrap();
        assert_eq!(primary.replicas[0].state, "wait_bgsave");
        assert!(!primary.replicas[0].online());

        let loading = ReplicationInfo::parse(VALKEY_REPLICA_LOADING).unwrap();
        assert!(loading.primary.unwrap().sync_in_progress);
        let p = PersistenceInfo::parse(VALKEY_REPLICA_LOADING_P).unwrap();
        assert!(p.loading);
        assert!(!p.async_loading);
        assert!(!p.bgsave_in_progress);
    }

    #[test]
    fn valkey_persistence_during_bgsave() {
        let p = PersistenceInfo::parse(VALKEY_PRIMARY_BGSAVE_P).unwrap();
        assert_eq!(
            p,
            PersistenceInfo {
                loading: false,
                async_loading: false,
                bgsave_in_progress: true,
                last_save_time: Some(1795339799),
                last_bgsave_ok: Some(true),
                changes_since_last_save: Some(1),
                saves: Some(1),
            }
        );
    }

    #[test]
    fn valkey_server_reports_its_own_version() {
        let s = ServerInfo::parse(VALKEY_SERVER).unwrap();
        assert_eq!(s.kind, ServerKind::Valkey);
        assert_eq!(s.version, "8.0.1");
        assert_eq!(s.redis_version.as_deref(), Some("7.2.4"));
        assert_eq!(s.tcp_port, Some(26401));
        assert_eq!(s.process_id, Some(7270));
        assert_eq!(s.time_usec, Some(1795339818535256));
        assert_eq!(s.uptime_seconds, Some(19));
    }

    #[test]
    fn redis_primary_and_replica() {
        let p = ReplicationInfo::parse(REDIS_PRIMARY).unwrap();
        assert_eq!(p.role, Role::Primary);
        assert_eq!(p.replicas.len(), 1);
        assert_eq!(p.replicas[0].port, 26502);
        assert!(p.replicas[0].online());
        assert_eq!(p.failover_state, Some(FailoverState::NoFailover));

        let r = ReplicationInfo::parse(REDIS_REPLICA).unwrap();
        let link = r.primary.clone().unwrap();
        assert_eq!((link.host.as_str(), link.port), ("127.0.0.1", 26501));
        assert!(link.link_up && !link.sync_in_progress);
        assert_eq!(r.slave_repl_offset, r.master_repl_offset);
        assert!(r.slave_repl_offset.is_some());
    }

    #[test]
    fn redis_full_sync_and_loading() {
        let r = ReplicationInfo::parse(REDIS_REPLICA_FULLSYNC).unwrap();
        assert!(r.primary.unwrap().sync_in_progress);
        let r = ReplicationInfo::parse(REDIS_REPLICA_LOADING).unwrap();
        assert!(!r.primary.unwrap().link_up);
        assert!(
            PersistenceInfo::parse(REDIS_REPLICA_LOADING_P)
                .unwrap()
                .loading
        );
        let p = PersistenceInfo::parse(REDIS_PRIMARY_BGSAVE_P).unwrap();
        assert!(p.bgsave_in_progress);
    }

    #[test]
    fn redis_server_kind() {
        let s = ServerInfo::parse(REDIS_SERVER).unwrap();
        assert_eq!(s.kind, ServerKind::Redis);
        assert_eq!(s.version, "7.0.15");
        assert_eq!(s.time_usec, Some(1795339836815466));
        assert_eq!(s.uptime_seconds, Some(18));
    }

    // Dragonfly's INFO replication format, written from its source (server_family.cc);
    // there is no Dragonfly server here to capture from.
    const DRAGONFLY_PRIMARY: &str = "# Replication\r\nrole:master\r\nconnected_slaves:1\r\n\
        slave0:ip=10.0.0.7,port=6379,state=stable_sync,lag=0\r\n\
        master_replid:4c3e4a0d2e1ab6e0cc2f0b7c0d6a2b1e9f8a7c6d\r\n";
    const DRAGONFLY_REPLICA: &str = "# Replication\r\nrole:replica\r\nmaster_host:10.0.0.6\r\n\
        master_port:6379\r\nmaster_link_status:up\r\nmaster_last_io_seconds_ago:0\r\n\
        master_sync_in_progress:0\r\n";

    #[test]
    fn dragonfly_replication_format() {
        let p = ReplicationInfo::parse(DRAGONFLY_PRIMARY).unwrap();
        assert_eq!(p.role, Role::Primary);
        assert_eq!(p.replicas[0].state, "stable_sync");
        assert!(p.replicas[0].online());
        assert_eq!(p.replicas[0].offset, None);
        assert_eq!(p.failover_state, None);
        let r = ReplicationInfo::parse(DRAGONFLY_REPLICA).unwrap();
        assert_eq!(r.role, Role::Replica);
        let link = r.primary.unwrap();
        assert!(link.link_up && !link.sync_in_progress);
        assert_eq!(r.slave_repl_offset, None);
        let s = ServerInfo::parse(
            "# Server\r\nredis_version:6.2.11\r\ndragonfly_version:df-v1.21.0\r\n",
        )
        .unwrap();
        assert_eq!(s.kind, ServerKind::Dragonfly);
        assert_eq!(s.version, "df-v1.21.0");
        let p = PersistenceInfo::parse("# Persistence\r\nlast_save:1700000000\r\nloading:0\r\n")
            .unwrap();
        assert_eq!(p.last_save_time, Some(1700000000));
    }

    #[test]
    fn malformed_fields_are_errors() {
        assert_eq!(
            ReplicationInfo::parse("role:leader\r\n").unwrap_err().field,
            "role"
        );
        assert_eq!(ReplicationInfo::parse("").unwrap_err().field, "role");
        let e =
            ReplicationInfo::parse("role:slave\r\nmaster_host:h\r\nmaster_port:x\r\n").unwrap_err();
        assert_eq!(e.field, "master_port");
        let e = ReplicationInfo::parse("role:master\r\nslave0:ip=a,port=99999,state=online\r\n")
            .unwrap_err();
        assert_eq!(e.field, "slave0");
        let e = PersistenceInfo::parse("loading:yes\r\n").unwrap_err();
        assert_eq!(e.field, "loading");
    }

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn role_reply_valkey_redis() {
        // As captured: primary `master 50 [[127.0.0.1 26402 0]]`, replica `slave 127.0.0.1 26401 sync -1`.
        let primary = Value::Array(vec![
            bulk("master"),
            Value::Int(50),
            Value::Array(vec![Value::Array(vec![
                bulk("127.0.0.1"),
                bulk("26402"),
                bulk("0"),
            ])]),
        ]);
        assert_eq!(
            RoleReply::parse(&primary).unwrap(),
            RoleReply::Primary {
                offset: Some(50),
                replicas: vec![("127.0.0.1".into(), 26402)],
            }
        );
        let replica = Value::Array(vec![
            bulk("slave"),
            bulk("127.0.0.1"),
            Value::Int(26401),
            bulk("sync"),
            Value::Int(-1),
        ]);
        assert_eq!(
            RoleReply::parse(&replica).unwrap(),
            RoleReply::Replica {
                host: "127.0.0.1".into(),
                port: 26401,
                state: "sync".into(),
                offset: Some(-1),
            }
        );
    }

    #[test]
    fn role_reply_dragonfly() {
        let primary = Value::Array(vec![
            bulk("master"),
            Value::Array(vec![Value::Array(vec![
                bulk("10.0.0.7"),
                bulk("6379"),
                bulk("stable_sync"),
            ])]),
        ]);
        assert_eq!(
            RoleReply::parse(&primary).unwrap(),
            RoleReply::Primary {
                offset: None,
                replicas: vec![("10.0.0.7".into(), 6379)],
            }
        );
        let replica = Value::Array(vec![
            bulk("replica"),
            bulk("10.0.0.6"),
            bulk("6379"),
            bulk("stable_sync"),
        ]);
        assert!(matches!(
            RoleReply::parse(&replica).unwrap(),
            RoleReply::Replica {
                port: 6379,
                offset: None,
                ..
            }
        ));
        assert!(RoleReply::parse(&Value::Array(vec![])).is_err());
        assert!(RoleReply::parse(&Value::Int(1)).is_err());
    }

    #[test]
    fn keyspace_counts_every_database() {
        let text = "# Keyspace\r\ndb0:keys=3000000,expires=2,avg_ttl=0\r\ndb5:keys=7,expires=0,avg_ttl=0,subexpiry=0\r\n";
        assert_eq!(parse_keyspace(text).unwrap(), 3_000_007);
        assert_eq!(parse_keyspace("# Keyspace\r\n").unwrap(), 0);
        assert!(parse_keyspace("db0:expires=1").is_err());
        assert!(parse_keyspace("db0:keys=-1,expires=0").is_err());
    }
}
