//! Dragonfly cluster mode (experimental): the `DFLYCLUSTER CONFIG` JSON that the operator
//! pushes to every member (primaries and replicas alike) from a [`SlotMap`].
//!
//! Dragonfly members do not gossip: a cluster manager owns the topology and pushes it whole.
//! The format follows Dragonfly's `docs/cluster-mode.md` (§4.1) and its parser
//! `src/server/cluster/cluster_config.cc` (`BuildClusterConfigFromJson`, `IsConfigValid`), as
//! read at commit f8eca6d0b05c915cee9439036b5b04aebbb973bb of dragonflydb/dragonfly:
//!
//! ```text
//! [ { "slot_ranges": [ {"start": 0, "end": 8191} ],
//!     "master":   {"id": "...", "ip": "...", "port": 7000, "health": "online"},
//!     "replicas": [ {"id": "...", "ip": "...", "port": 7000, "health": "online"} ],
//!     "migrations": [ {"node_id": "...", "ip": "...", "port": 7001,
//!                      "slot_ranges": [ {"start": 4096, "end": 8191} ]} ] } ]
//! ```
//!
//! The server rejects a config (`-ERR Invalid cluster configuration.`) unless every slot is
//! owned exactly once, every node id is unique, and every migration targets another shard's
//! primary with non-empty, non-overlapping ranges the source owns. [`DragonflyConfig::to_json`]
//! checks the same before anything is sent, so a bad map is refused here with the field named.
//! No Dragonfly server runs in the tests (none is installed here); the shape is checked against
//! the documented format and the parser's field names.

use std::collections::BTreeMap;

use serde::Serialize;

use super::cluster_nodes::quote;
use super::slots::{MapNode, SlotMap, SlotMapInvalid, SlotRange};

/// `health` of a node in the config: informational for clients (it never changes slot
/// ownership); `online` when not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DragonflyHealth {
    /// Serving.
    Online,
    /// Loading a dataset.
    Loading,
    /// Failed: clients should not use it.
    Fail,
    /// Hidden from clients (`CLUSTER SHARDS/SLOTS/NODES` leave it out).
    Hidden,
}

/// An outgoing slot migration of one shard: its slots move to another shard's primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DragonflyMigration {
    /// Index of the source shard in the [`SlotMap`].
    pub from_shard: usize,
    /// Index of the target shard.
    pub to_shard: usize,
    /// The target primary's admin port (`--admin_port`), which `DFLYMIGRATE` uses.
    pub target_admin_port: u16,
    /// The slots that move; non-empty, owned by the source.
    pub slots: Vec<SlotRange>,
}

/// Why a config cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DragonflyConfigError {
    /// The slot map itself is invalid.
    #[error("slot map: {0}")]
    Map(#[from] SlotMapInvalid),
    /// A migration entry is invalid; `field` names it (`migrations[i].slot_ranges`, ...).
    #[error("{field}: {problem}")]
    Migration {
        /// Which entry and field.
        field: String,
        /// What is wrong.
        problem: String,
    },
}

/// A Dragonfly cluster config: the slot map plus node health and migrations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DragonflyConfig {
    map: SlotMap,
    health: BTreeMap<String, DragonflyHealth>,
    migrations: Vec<DragonflyMigration>,
}

#[derive(Serialize)]
struct JsonRange {
    start: u16,
    end: u16,
}

#[derive(Serialize)]
struct JsonNode<'a> {
    id: &'a str,
    ip: &'a str,
    port: u16,
    health: DragonflyHealth,
}

#[derive(Serialize)]
struct JsonMigration<'a> {
    node_id: &'a str,
    ip: &'a str,
    port: u16,
    slot_ranges: Vec<JsonRange>,
}

#[derive(Serialize)]
struct JsonShard<'a> {
    slot_ranges: Vec<JsonRange>,
    master: JsonNode<'a>,
    replicas: Vec<JsonNode<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    migrations: Vec<JsonMigration<'a>>,
}

fn ranges(slots: &[SlotRange]) -> Vec<JsonRange> {
    let mut sorted = slots.to_vec();
    sorted.sort();
    sorted
        .iter()
        .map(|r| JsonRange {
            start: r.start,
            end: r.end,
        })
        .collect()
}

impl DragonflyConfig {
    /// A config for `map`, every node `online`, no migrations.
    pub fn new(map: SlotMap) -> Self {
        Self {
            map,
            health: BTreeMap::new(),
            migrations: Vec::new(),
        }
    }

    /// Sets the `health` advertised for node `id`.
    pub fn with_health(mut self, id: &str, health: DragonflyHealth) -> Self {
        self.health.insert(id.to_owned(), health);
        self
    }

    /// Adds an outgoing migration.
    pub fn with_migration(mut self, migration: DragonflyMigration) -> Self {
        self.migrations.push(migration);
        self
    }

    fn node<'a>(&'a self, node: &'a MapNode) -> JsonNode<'a> {
        JsonNode {
            id: &node.id,
            ip: &node.host,
            port: node.port,
            health: self
                .health
                .get(&node.id)
                .copied()
                .unwrap_or(DragonflyHealth::Online),
        }
    }

    fn check_migrations(&self) -> Result<(), DragonflyConfigError> {
        let shards = &self.map.shards;
        let mut seen: Vec<(usize, usize, SlotRange)> = Vec::new();
        for (i, m) in self.migrations.iter().enumerate() {
            let bad = |field: &str, problem: String| DragonflyConfigError::Migration {
                field: format!("migrations[{i}].{field}"),
                problem,
            };
            if m.from_shard >= shards.len() {
                return Err(bad("from_shard", format!("no shard {}", m.from_shard)));
            }
            if m.to_shard >= shards.len() {
                return Err(bad("to_shard", format!("no shard {}", m.to_shard)));
            }
            if m.from_shard == m.to_shard {
                return Err(bad("to_shard", "the target is the source shard".into()));
            }
            if m.slots.is_empty() {
                return Err(bad("slot_ranges", "empty".into()));
            }
            if seen
                .iter()
                .any(|(from, to, _)| *from == m.from_shard && *to == m.to_shard)
            {
                return Err(bad(
                    "to_shard",
                    format!(
                        "shard {} already migrates to shard {} (one migration per pair)",
                        m.from_shard, m.to_shard
                    ),
                ));
            }
            let owned = &shards[m.from_shard].slots;
            for r in &m.slots {
                if !owned.iter().any(|o| o.start <= r.start && r.end <= o.end) {
                    return Err(bad(
                        "slot_ranges",
                        format!("{r} is not owned by shard {}", m.from_shard),
                    ));
                }
                if let Some((_, _, prev)) = seen.iter().find(|(from, _, p)| {
                    *from == m.from_shard && p.start <= r.end && r.start <= p.end
                }) {
                    return Err(bad(
                        "slot_ranges",
                        format!(
                            "{r} overlaps {prev}, already migrating from shard {}",
                            m.from_shard
                        ),
                    ));
                }
                seen.push((m.from_shard, m.to_shard, *r));
            }
        }
        Ok(())
    }

    /// The JSON for `DFLYCLUSTER CONFIG`, after the checks the server makes. Shards are
    /// ordered by primary id and ranges by start (the server compares configs in that order,
    /// so pushing an unchanged map is a no-op).
    pub fn to_json(&self) -> Result<String, DragonflyConfigError> {
        self.map.validate()?;
        self.check_migrations()?;
        let mut shards: Vec<(usize, JsonShard<'_>)> = self
            .map
            .shards
            .iter()
            .enumerate()
            .map(|(index, shard)| {
                let migrations = self
                    .migrations
                    .iter()
                    .filter(|m| m.from_shard == index)
                    .map(|m| {
                        let target = &self.map.shards[m.to_shard].primary;
                        JsonMigration {
                            node_id: &target.id,
                            ip: &target.host,
                            port: m.target_admin_port,
                            slot_ranges: ranges(&m.slots),
                        }
                    })
                    .collect();
                (
                    index,
                    JsonShard {
                        slot_ranges: ranges(&shard.slots),
                        master: self.node(&shard.primary),
                        replicas: shard.replicas.iter().map(|r| self.node(r)).collect(),
                        migrations,
                    },
                )
            })
            .collect();
        shards.sort_by(|a, b| a.1.master.id.cmp(b.1.master.id));
        let shards: Vec<JsonShard<'_>> = shards.into_iter().map(|(_, s)| s).collect();
        serde_json::to_string(&shards).map_err(|e| DragonflyConfigError::Migration {
            field: "config".into(),
            problem: quote(&e.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::slots::{MapShard, SlotMapError, balanced_ranges};

    fn node(id: &str, ip: &str) -> MapNode {
        MapNode {
            id: id.into(),
            host: ip.into(),
            port: 7000,
        }
    }

    fn two_shards() -> SlotMap {
        let r = |a, b| SlotRange::new(a, b).unwrap();
        SlotMap {
            shards: vec![
                MapShard {
                    slots: vec![r(0, 8191)],
                    primary: node("node-A", "10.0.0.1"),
                    replicas: vec![node("node-A-r1", "10.0.0.2")],
                },
                MapShard {
                    slots: vec![r(8192, 16383)],
                    primary: node("node-B", "10.0.0.3"),
                    replicas: vec![],
                },
            ],
        }
    }

    /// The example of Dragonfly's docs/cluster-mode.md §4.1, built from a slot map.
    #[test]
    fn matches_the_documented_example() {
        let config = DragonflyConfig::new(two_shards())
            .with_health("node-A-r1", DragonflyHealth::Loading)
            .with_migration(DragonflyMigration {
                from_shard: 0,
                to_shard: 1,
                target_admin_port: 7000,
                slots: vec![SlotRange::new(4096, 8191).unwrap()],
            });
        let json: serde_json::Value = serde_json::from_str(&config.to_json().unwrap()).unwrap();
        let expected = serde_json::json!([
          {
            "slot_ranges": [ { "start": 0, "end": 8191 } ],
            "master": { "id": "node-A", "ip": "10.0.0.1", "port": 7000, "health": "online" },
            "replicas": [
              { "id": "node-A-r1", "ip": "10.0.0.2", "port": 7000, "health": "loading" }
            ],
            "migrations": [
              {
                "node_id": "node-B",
                "ip": "10.0.0.3",
                "port": 7000,
                "slot_ranges": [ { "start": 4096, "end": 8191 } ]
              }
            ]
          },
          {
            "slot_ranges": [ { "start": 8192, "end": 16383 } ],
            "master": { "id": "node-B", "ip": "10.0.0.3", "port": 7000, "health": "online" },
            "replicas": []
          }
        ]);
        assert_eq!(json, expected);
    }

    #[test]
    fn exact_text_is_compact_and_ordered_by_primary_id() {
        let mut map = two_shards();
        map.shards.swap(0, 1);
        let text = DragonflyConfig::new(map).to_json().unwrap();
        assert_eq!(
            text,
            r#"[{"slot_ranges":[{"start":0,"end":8191}],"master":{"id":"node-A","ip":"10.0.0.1","port":7000,"health":"online"},"replicas":[{"id":"node-A-r1","ip":"10.0.0.2","port":7000,"health":"online"}]},{"slot_ranges":[{"start":8192,"end":16383}],"master":{"id":"node-B","ip":"10.0.0.3","port":7000,"health":"online"},"replicas":[]}]"#
        );
    }

    #[test]
    fn balanced_three_shard_map() {
        let shards = balanced_ranges(3)
            .into_iter()
            .enumerate()
            .map(|(i, r)| MapShard {
                slots: vec![r],
                primary: node(&format!("p{i}"), &format!("10.0.0.{}", 10 + i)),
                replicas: vec![node(&format!("r{i}"), &format!("10.0.1.{}", 10 + i))],
            })
            .collect();
        let text = DragonflyConfig::new(SlotMap { shards }).to_json().unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let shards = json.as_array().unwrap();
        assert_eq!(shards.len(), 3);
        assert_eq!(shards[1]["slot_ranges"][0]["start"], 5461);
        assert_eq!(shards[2]["replicas"][0]["id"], "r2");
        assert!(shards.iter().all(|s| s.get("migrations").is_none()));
    }

    #[test]
    fn refuses_what_the_server_would_refuse() {
        let mut gap = two_shards();
        gap.shards[1].slots = vec![SlotRange::new(8193, 16383).unwrap()];
        assert_eq!(
            DragonflyConfig::new(gap).to_json(),
            Err(DragonflyConfigError::Map(SlotMapInvalid::Slots(
                SlotMapError::Missing {
                    slot: 8192,
                    missing: 1
                }
            )))
        );
        let mut twice = two_shards();
        twice.shards[1].replicas.push(node("node-A", "10.0.0.9"));
        assert!(matches!(
            DragonflyConfig::new(twice).to_json(),
            Err(DragonflyConfigError::Map(
                SlotMapInvalid::DuplicateNode { .. }
            ))
        ));
        let migration = |from, to, a, b| DragonflyMigration {
            from_shard: from,
            to_shard: to,
            target_admin_port: 7001,
            slots: vec![SlotRange::new(a, b).unwrap()],
        };
        let field = |c: DragonflyConfig| match c.to_json() {
            Err(DragonflyConfigError::Migration { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let base = || DragonflyConfig::new(two_shards());
        assert_eq!(
            field(base().with_migration(migration(0, 0, 1, 2))),
            "migrations[0].to_shard"
        );
        assert_eq!(
            field(base().with_migration(migration(0, 5, 1, 2))),
            "migrations[0].to_shard"
        );
        assert_eq!(
            field(base().with_migration(migration(0, 1, 8000, 9000))),
            "migrations[0].slot_ranges"
        );
        assert_eq!(
            field(
                base()
                    .with_migration(migration(0, 1, 0, 10))
                    .with_migration(migration(0, 1, 20, 30))
            ),
            "migrations[1].to_shard"
        );
        let mut empty = migration(0, 1, 0, 1);
        empty.slots.clear();
        assert_eq!(
            field(base().with_migration(empty)),
            "migrations[0].slot_ranges"
        );
        let mut overlap = migration(0, 1, 0, 10);
        overlap.slots.push(SlotRange::new(5, 20).unwrap());
        assert_eq!(
            field(base().with_migration(overlap)),
            "migrations[0].slot_ranges"
        );
        // Two disjoint migrations from one shard to different targets are fine.
        let mut three = two_shards();
        three.shards[1].slots = vec![SlotRange::new(8192, 12000).unwrap()];
        three.shards.push(MapShard {
            slots: vec![SlotRange::new(12001, 16383).unwrap()],
            primary: node("node-C", "10.0.0.5"),
            replicas: vec![],
        });
        assert!(
            DragonflyConfig::new(three)
                .with_migration(migration(0, 1, 0, 10))
                .with_migration(migration(0, 2, 11, 20))
                .to_json()
                .is_ok()
        );
    }
}
