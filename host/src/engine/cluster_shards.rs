//! Pure parser of `CLUSTER SHARDS` (Valkey 7+, Redis 7+, Dragonfly): the shards, their slot
//! ranges and their nodes, as the answering member sees them.
//!
//! The reply is an array of shards; each shard is a map (RESP3) or a flat key/value array
//! (RESP2) with `slots` (a flat list of range bounds) and `nodes` (maps of `id`, `port`,
//! `tls-port`, `ip`, `endpoint`, `hostname`, `role`, `replication-offset`, `health`). Unknown
//! keys are ignored; a shape that does not fit is a [`ParseError`] naming the shard, node and
//! field.

use redis::Value;

use super::cluster_nodes::{MAX_NODE_ID, quote};
use super::info::ParseError;
use super::slots::{MAX_SLOT, SlotRange};

/// `role` of a node in `CLUSTER SHARDS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShardRole {
    /// `master`.
    Primary,
    /// `replica`.
    Replica,
}

/// `health` of a node in `CLUSTER SHARDS`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShardHealth {
    /// `online`.
    Online,
    /// `failed` (Valkey/Redis) or `fail` (Dragonfly).
    Failed,
    /// `loading`. Redis 7.0 also says this of a replica whose replication offset is still 0,
    /// so it is not proof of a load in progress.
    Loading,
    /// Any other value (e.g. Dragonfly's `hidden`).
    Other(String),
}

/// One node of a shard.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShardNode {
    /// Node id.
    pub id: String,
    /// Announced IP.
    pub ip: String,
    /// The endpoint clients should use (IP, hostname or `?`, per
    /// `cluster-preferred-endpoint-type`).
    pub endpoint: String,
    /// `cluster-announce-hostname`, when set.
    pub hostname: Option<String>,
    /// Plain-text client port, when the node serves one.
    pub port: Option<u16>,
    /// TLS client port, when the node serves one.
    pub tls_port: Option<u16>,
    /// Primary or replica.
    pub role: ShardRole,
    /// Replication offset.
    pub replication_offset: u64,
    /// Health.
    pub health: ShardHealth,
}

/// One shard of `CLUSTER SHARDS`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShardRecord {
    /// The slot ranges the shard owns (empty for a primary without slots).
    pub slots: Vec<SlotRange>,
    /// Its nodes, primary first as the server lists them.
    pub nodes: Vec<ShardNode>,
}

impl ShardRecord {
    /// The shard's serving primary, if the member knows one. After a failover the old,
    /// failed primary may still be listed with role `master` in the same shard until it
    /// comes back, so a primary that is not failed is preferred.
    pub fn primary(&self) -> Option<&ShardNode> {
        let primaries = || self.nodes.iter().filter(|n| n.role == ShardRole::Primary);
        primaries()
            .find(|n| n.health == ShardHealth::Online)
            .or_else(|| primaries().find(|n| n.health != ShardHealth::Failed))
            .or_else(|| primaries().next())
    }
}

/// Parses a `CLUSTER SHARDS` reply.
pub fn parse_shards(value: &Value) -> Result<Vec<ShardRecord>, ParseError> {
    let shards = array(value, "CLUSTER SHARDS")?;
    shards
        .iter()
        .enumerate()
        .map(|(i, shard)| parse_shard(shard, &format!("CLUSTER SHARDS shard {i}")))
        .collect()
}

fn parse_shard(value: &Value, at: &str) -> Result<ShardRecord, ParseError> {
    let mut slots = None;
    let mut nodes = None;
    for (key, value) in pairs(value, at)? {
        match key.as_str() {
            "slots" => slots = Some(parse_slots(value, &format!("{at} slots"))?),
            "nodes" => {
                let list = array(value, &format!("{at} nodes"))?;
                nodes = Some(
                    list.iter()
                        .enumerate()
                        .map(|(j, n)| parse_node(n, &format!("{at} node {j}")))
                        .collect::<Result<Vec<_>, _>>()?,
                );
            }
            _ => {}
        }
    }
    Ok(ShardRecord {
        slots: slots.ok_or_else(|| err(at, "no `slots`"))?,
        nodes: nodes.ok_or_else(|| err(at, "no `nodes`"))?,
    })
}

fn parse_slots(value: &Value, at: &str) -> Result<Vec<SlotRange>, ParseError> {
    let bounds = array(value, at)?
        .iter()
        .map(|v| {
            integer(v, at).and_then(|n| {
                u16::try_from(n)
                    .ok()
                    .filter(|&s| s <= MAX_SLOT)
                    .ok_or_else(|| err(at, format!("slot {n} out of range")))
            })
        })
        .collect::<Result<Vec<u16>, _>>()?;
    if bounds.len() % 2 != 0 {
        return Err(err(at, format!("{} bounds, not pairs", bounds.len())));
    }
    bounds
        .chunks(2)
        .map(|pair| {
            SlotRange::new(pair[0], pair[1])
                .ok_or_else(|| err(at, format!("range {}-{} runs backwards", pair[0], pair[1])))
        })
        .collect()
}

fn parse_node(value: &Value, at: &str) -> Result<ShardNode, ParseError> {
    let mut id = None;
    let mut ip = None;
    let mut endpoint = None;
    let mut hostname = None;
    let mut port = None;
    let mut tls_port = None;
    let mut role = None;
    let mut offset = None;
    let mut health = None;
    for (key, value) in pairs(value, at)? {
        let field = format!("{at} {key}");
        match key.as_str() {
            "id" => {
                let text = string(value, &field)?;
                if text.is_empty()
                    || text.len() > MAX_NODE_ID
                    || !text.bytes().all(|b| b.is_ascii_graphic())
                {
                    return Err(err(&field, format!("bad node id {:?}", quote(&text))));
                }
                id = Some(text);
            }
            "ip" => ip = Some(bounded(string(value, &field)?, &field)?),
            "endpoint" => endpoint = Some(bounded(string(value, &field)?, &field)?),
            "hostname" => hostname = Some(bounded(string(value, &field)?, &field)?),
            "port" => port = Some(port_number(value, &field)?),
            "tls-port" => tls_port = Some(port_number(value, &field)?),
            "role" => {
                role = Some(match string(value, &field)?.as_str() {
                    "master" => ShardRole::Primary,
                    "replica" | "slave" => ShardRole::Replica,
                    other => return Err(err(&field, format!("unknown role {:?}", quote(other)))),
                })
            }
            "replication-offset" => {
                offset = Some(
                    u64::try_from(integer(value, &field)?)
                        .map_err(|_| err(&field, "negative offset"))?,
                )
            }
            "health" => {
                health = Some(match string(value, &field)?.as_str() {
                    "online" => ShardHealth::Online,
                    "failed" | "fail" => ShardHealth::Failed,
                    "loading" => ShardHealth::Loading,
                    other => ShardHealth::Other(quote(other)),
                })
            }
            _ => {}
        }
    }
    let missing = |name: &str| err(at, format!("no `{name}`"));
    let ip = ip.ok_or_else(|| missing("ip"))?;
    Ok(ShardNode {
        id: id.ok_or_else(|| missing("id"))?,
        endpoint: endpoint.unwrap_or_else(|| ip.clone()),
        ip,
        hostname: hostname.filter(|h| !h.is_empty()),
        port,
        tls_port,
        role: role.ok_or_else(|| missing("role"))?,
        replication_offset: offset.unwrap_or(0),
        health: health.unwrap_or(ShardHealth::Online),
    })
}

fn err(at: &str, problem: impl Into<String>) -> ParseError {
    ParseError {
        field: at.to_owned(),
        problem: problem.into(),
    }
}

fn array<'a>(value: &'a Value, at: &str) -> Result<&'a [Value], ParseError> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        other => Err(err(at, format!("not an array: {}", kind(other)))),
    }
}

/// Key/value pairs of a RESP3 map or a RESP2 flat array.
fn pairs<'a>(value: &'a Value, at: &str) -> Result<Vec<(String, &'a Value)>, ParseError> {
    match value {
        Value::Map(entries) => entries
            .iter()
            .map(|(k, v)| Ok((string(k, at)?, v)))
            .collect(),
        Value::Array(items) => {
            if items.len() % 2 != 0 {
                return Err(err(
                    at,
                    format!("{} items, not key/value pairs", items.len()),
                ));
            }
            items
                .chunks(2)
                .map(|kv| Ok((string(&kv[0], at)?, &kv[1])))
                .collect()
        }
        other => Err(err(at, format!("not a map: {}", kind(other)))),
    }
}

fn string(value: &Value, at: &str) -> Result<String, ParseError> {
    match value {
        Value::BulkString(bytes) => {
            String::from_utf8(bytes.clone()).map_err(|_| err(at, "not UTF-8"))
        }
        Value::SimpleString(s) => Ok(s.clone()),
        Value::VerbatimString { text, .. } => Ok(text.clone()),
        other => Err(err(at, format!("not a string: {}", kind(other)))),
    }
}

fn bounded(text: String, at: &str) -> Result<String, ParseError> {
    if text.len() > 255 || text.chars().any(char::is_control) {
        return Err(err(at, format!("not a host name: {:?}", quote(&text))));
    }
    Ok(text)
}

fn integer(value: &Value, at: &str) -> Result<i64, ParseError> {
    match value {
        Value::Int(n) => Ok(*n),
        Value::BulkString(bytes) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| err(at, "not an integer")),
        other => Err(err(at, format!("not an integer: {}", kind(other)))),
    }
}

fn port_number(value: &Value, at: &str) -> Result<u16, ParseError> {
    let n = integer(value, at)?;
    u16::try_from(n).map_err(|_| err(at, format!("port {n} out of range")))
}

/// The reply's type, for errors (never its content, which may be long).
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Nil => "nil",
        Value::Int(_) => "integer",
        Value::BulkString(_) => "bulk string",
        Value::Array(_) => "array",
        Value::SimpleString(_) => "simple string",
        Value::Okay => "OK",
        Value::Map(_) => "map",
        Value::ServerError(_) => "error",
        _ => "other reply",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(bytes: &[u8]) -> Value {
        redis::parse_redis_value(bytes).expect("captured RESP parses")
    }

    const VALKEY_OK: &[u8] = include_bytes!("testdata/cluster/valkey8_ok.shards.resp");
    const VALKEY_MIXED: &[u8] = include_bytes!("testdata/cluster/valkey8_mixed.shards.resp");
    const VALKEY_FAIL: &[u8] = include_bytes!("testdata/cluster/valkey8_fail.shards.resp");
    const REDIS_OK: &[u8] = include_bytes!("testdata/cluster/redis7_ok.shards.resp");
    const REDIS_MIXED: &[u8] = include_bytes!("testdata/cluster/redis7_mixed.shards.resp");
    const REDIS_FAIL: &[u8] = include_bytes!("testdata/cluster/redis7_fail.shards.resp");

    #[test]
    fn three_shards_with_a_replica_each() {
        for capture in [VALKEY_OK, REDIS_OK] {
            let shards = parse_shards(&resp(capture)).unwrap();
            assert_eq!(shards.len(), 3);
            let mut ranges: Vec<_> = shards.iter().flat_map(|s| s.slots.clone()).collect();
            ranges.sort();
            assert_eq!(
                ranges,
                crate::engine::slots::balanced_ranges(3),
                "the captures were bootstrapped with the balanced layout"
            );
            for shard in &shards {
                assert_eq!(shard.nodes.len(), 2);
                let primary = shard.primary().unwrap();
                assert_eq!(primary.health, ShardHealth::Online);
                assert!(primary.port.is_some() && primary.tls_port.is_none());
                assert_eq!(primary.endpoint, primary.ip);
                assert_eq!(primary.id.len(), 40);
                assert!(shard.nodes.iter().any(|n| n.role == ShardRole::Replica));
            }
        }
        // Redis 7.0 calls a replica whose offset is still 0 `loading`.
        let redis = parse_shards(&resp(REDIS_OK)).unwrap();
        assert!(
            redis
                .iter()
                .flat_map(|s| &s.nodes)
                .any(|n| n.role == ShardRole::Replica && n.health == ShardHealth::Loading)
        );
    }

    #[test]
    fn node_with_no_slots_and_hostname() {
        for capture in [VALKEY_MIXED, REDIS_MIXED] {
            let shards = parse_shards(&resp(capture)).unwrap();
            let empty = shards.iter().find(|s| s.slots.is_empty()).unwrap();
            let node = empty.primary().unwrap();
            assert_eq!(node.hostname.as_deref(), Some("node7.kv.test"));
            assert_eq!((node.ip.as_str(), node.port), ("127.0.0.207", Some(21013)));
            // The handshake is not a shard.
            assert!(
                shards
                    .iter()
                    .flat_map(|s| &s.nodes)
                    .all(|n| n.port != Some(29999))
            );
        }
    }

    #[test]
    fn failed_primary_is_reported() {
        for capture in [VALKEY_FAIL, REDIS_FAIL] {
            let shards = parse_shards(&resp(capture)).unwrap();
            let failed: Vec<_> = shards
                .iter()
                .filter(|s| s.primary().is_some_and(|p| p.health == ShardHealth::Failed))
                .collect();
            assert_eq!(failed.len(), 1);
            assert_eq!(failed[0].slots, vec![SlotRange::new(10923, 16383).unwrap()]);
        }
    }

    #[test]
    fn the_serving_primary_is_preferred_to_a_failed_one() {
        let node = |id: &str, health| ShardNode {
            id: id.into(),
            ip: "127.0.0.1".into(),
            endpoint: "127.0.0.1".into(),
            hostname: None,
            port: Some(1),
            tls_port: None,
            role: ShardRole::Primary,
            replication_offset: 0,
            health,
        };
        let shard = ShardRecord {
            slots: vec![],
            nodes: vec![
                node("old", ShardHealth::Failed),
                node("new", ShardHealth::Online),
            ],
        };
        assert_eq!(shard.primary().unwrap().id, "new");
        let shard = ShardRecord {
            slots: vec![],
            nodes: vec![node("old", ShardHealth::Failed)],
        };
        assert_eq!(shard.primary().unwrap().id, "old");
    }

    #[test]
    fn resp3_maps_parse_too() {
        let s = |t: &str| Value::BulkString(t.as_bytes().to_vec());
        let node = Value::Map(vec![
            (s("id"), s("node-a")),
            (s("port"), Value::Int(7000)),
            (s("ip"), s("10.0.0.1")),
            (s("endpoint"), s("db-0.kv")),
            (s("hostname"), s("db-0.kv")),
            (s("role"), s("master")),
            (s("replication-offset"), Value::Int(12)),
            (s("health"), s("online")),
        ]);
        let shard = Value::Map(vec![
            (
                s("slots"),
                Value::Array(vec![Value::Int(0), Value::Int(16383)]),
            ),
            (s("nodes"), Value::Array(vec![node])),
        ]);
        let shards = parse_shards(&Value::Array(vec![shard])).unwrap();
        let p = shards[0].primary().unwrap();
        assert_eq!((p.endpoint.as_str(), p.replication_offset), ("db-0.kv", 12));
    }

    #[test]
    fn bad_shapes_name_the_shard_node_and_field() {
        let s = |t: &str| Value::BulkString(t.as_bytes().to_vec());
        let shard = |slots: Vec<Value>, node: Vec<Value>| {
            Value::Array(vec![Value::Array(vec![
                s("slots"),
                Value::Array(slots),
                s("nodes"),
                Value::Array(vec![Value::Array(node)]),
            ])])
        };
        let node = || {
            vec![
                s("id"),
                s("n1"),
                s("ip"),
                s("1.2.3.4"),
                s("role"),
                s("master"),
            ]
        };
        let ok = shard(vec![Value::Int(0), Value::Int(5)], node());
        assert!(parse_shards(&ok).is_ok());
        let e = parse_shards(&shard(vec![Value::Int(0)], node())).unwrap_err();
        assert_eq!(e.field, "CLUSTER SHARDS shard 0 slots");
        let e = parse_shards(&shard(vec![Value::Int(0), Value::Int(16384)], node())).unwrap_err();
        assert!(e.problem.contains("out of range"), "{e}");
        let e = parse_shards(&shard(vec![Value::Int(9), Value::Int(5)], node())).unwrap_err();
        assert!(e.problem.contains("backwards"), "{e}");
        let mut bad_role = node();
        bad_role[5] = s("boss\u{7}");
        let e = parse_shards(&shard(vec![], bad_role)).unwrap_err();
        assert_eq!(e.field, "CLUSTER SHARDS shard 0 node 0 role");
        assert!(!e.problem.contains('\u{7}'));
        let e = parse_shards(&shard(vec![], node()[..4].to_vec())).unwrap_err();
        assert!(e.problem.contains("no `role`"), "{e}");
        let mut port = node();
        port.extend([s("port"), Value::Int(70000)]);
        let e = parse_shards(&shard(vec![], port)).unwrap_err();
        assert_eq!(e.field, "CLUSTER SHARDS shard 0 node 0 port");
        assert!(parse_shards(&Value::Int(3)).is_err());
        assert!(parse_shards(&Value::Array(vec![Value::Array(vec![s("slots")])])).is_err());
    }

    #[test]
    fn truncated_captures_are_errors_not_panics() {
        for capture in [VALKEY_OK, VALKEY_MIXED, REDIS_FAIL] {
            for cut in (1..capture.len()).step_by(7) {
                // A cut RESP reply either does not parse or parses to something smaller;
                // neither may panic the shard parser.
                if let Ok(value) = redis::parse_redis_value(&capture[..cut]) {
                    let _ = parse_shards(&value);
                }
            }
        }
    }
}
