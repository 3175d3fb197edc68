//! Pure parsers of a member's cluster view: `CLUSTER INFO` and `CLUSTER NODES`.
//!
//! Unit-tested on text captured from real Valkey 8.0.1 and Redis 7.0.15 (a healthy cluster,
//! a failed and a suspected primary, a handshake, a node with no slots, a slot being migrated
//! and imported). Malformed input is a [`ParseError`] that names the line, never a panic;
//! the quoted line is cut and stripped of control characters (safety rule 10).

use std::collections::BTreeMap;

use super::info::{ParseError, info_fields};
use super::slots::{MAX_SLOT, SlotRange};

/// Longest node id accepted. Valkey/Redis ids are 40 hex digits; Dragonfly's are strings
/// chosen by its cluster manager (or its replication id), so only the length is bounded.
pub const MAX_NODE_ID: usize = 128;
/// How much of a bad line an error quotes.
const QUOTE_LIMIT: usize = 120;

/// `cluster_state` of `CLUSTER INFO`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterState {
    /// `ok`: this member serves queries.
    Ok,
    /// `fail`: some slot is unassigned or its owner failed (with
    /// `cluster-require-full-coverage yes`), or this member is in a minority partition.
    Fail,
    /// Any other value.
    Other(String),
}

/// `CLUSTER INFO` of one member.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClusterInfo {
    /// `cluster_state`.
    pub state: ClusterState,
    /// `cluster_slots_assigned`: slots with an owner, as this member sees it.
    pub slots_assigned: u32,
    /// `cluster_slots_ok`: assigned slots whose owner is neither `fail` nor `fail?`.
    pub slots_ok: u32,
    /// `cluster_slots_pfail`.
    pub slots_pfail: u32,
    /// `cluster_slots_fail`.
    pub slots_fail: u32,
    /// `cluster_known_nodes`, this member included (handshakes count too).
    pub known_nodes: u32,
    /// `cluster_size`: primaries that own at least one slot.
    pub size: u32,
    /// `cluster_current_epoch`: the highest epoch this member has seen.
    pub current_epoch: u64,
    /// `cluster_my_epoch`: the config epoch of this member's primary (itself if primary);
    /// `None` where the engine does not report it (Dragonfly).
    pub my_epoch: Option<u64>,
}

impl ClusterInfo {
    /// Parses `CLUSTER INFO` (CRLF or LF lines; unknown fields ignored).
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let fields = info_fields(text);
        let get = |name: &str| -> Result<&str, ParseError> {
            fields.get(name).copied().ok_or_else(|| ParseError {
                field: format!("CLUSTER INFO {name}"),
                problem: "missing".into(),
            })
        };
        let number = |name: &str| -> Result<u64, ParseError> {
            let value = get(name)?;
            value.parse().map_err(|_| ParseError {
                field: format!("CLUSTER INFO {name}"),
                problem: format!("not a number: {:?}", quote(value)),
            })
        };
        let small = |name: &str| -> Result<u32, ParseError> {
            u32::try_from(number(name)?).map_err(|_| ParseError {
                field: format!("CLUSTER INFO {name}"),
                problem: "out of range".into(),
            })
        };
        let state = match get("cluster_state")? {
            "ok" => ClusterState::Ok,
            "fail" => ClusterState::Fail,
            other => ClusterState::Other(quote(other)),
        };
        Ok(Self {
            state,
            slots_assigned: small("cluster_slots_assigned")?,
            slots_ok: small("cluster_slots_ok")?,
            slots_pfail: small("cluster_slots_pfail").unwrap_or(0),
            slots_fail: small("cluster_slots_fail").unwrap_or(0),
            known_nodes: small("cluster_known_nodes")?,
            size: small("cluster_size")?,
            current_epoch: number("cluster_current_epoch")?,
            my_epoch: fields
                .contains_key("cluster_my_epoch")
                .then(|| number("cluster_my_epoch"))
                .transpose()?,
        })
    }
}

/// The flags of one `CLUSTER NODES` line.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeFlags {
    /// `myself`: the line is the answering member.
    pub myself: bool,
    /// `master`.
    pub primary: bool,
    /// `slave`.
    pub replica: bool,
    /// `fail?`: this member suspects the node (no pong within `cluster-node-timeout`).
    pub pfail: bool,
    /// `fail`: a majority of primaries agreed the node failed.
    pub fail: bool,
    /// `handshake`: a MEET in progress; the id is provisional.
    pub handshake: bool,
    /// `noaddr`: the address is not known.
    pub noaddr: bool,
    /// `nofailover`: the node runs with `cluster-replica-no-failover yes`.
    pub nofailover: bool,
    /// Flags this version does not know (`noflags` is not kept).
    pub other: Vec<String>,
}

impl NodeFlags {
    fn parse(text: &str) -> Self {
        let mut flags = Self::default();
        for flag in text.split(',') {
            match flag {
                "myself" => flags.myself = true,
                "master" => flags.primary = true,
                "slave" => flags.replica = true,
                "fail?" => flags.pfail = true,
                "fail" => flags.fail = true,
                "handshake" => flags.handshake = true,
                "noaddr" => flags.noaddr = true,
                "nofailover" => flags.nofailover = true,
                "noflags" | "" => {}
                other => flags.other.push(quote(other)),
            }
        }
        flags
    }
}

/// The state of this member's bus link to the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    /// `connected`.
    Connected,
    /// `disconnected`.
    Disconnected,
}

/// A slot of the answering member in the middle of a migration (only the answering member's
/// own line carries these).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SlotMove {
    /// `[slot->-id]`: this member is migrating `slot` to node `to`.
    Migrating {
        /// The slot.
        slot: u16,
        /// The destination node id.
        to: String,
    },
    /// `[slot-<-id]`: this member is importing `slot` from node `from`.
    Importing {
        /// The slot.
        slot: u16,
        /// The source node id.
        from: String,
    },
}

/// One line of `CLUSTER NODES`: a node as the answering member sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClusterNode {
    /// Node id.
    pub id: String,
    /// Announced IP (empty with `noaddr`).
    pub ip: String,
    /// Client port.
    pub port: u16,
    /// Cluster bus port.
    pub bus_port: u16,
    /// `cluster-announce-hostname`, when the node announces one.
    pub hostname: Option<String>,
    /// Flags.
    pub flags: NodeFlags,
    /// For a replica, the id of its primary.
    pub primary_id: Option<String>,
    /// When this member sent the ping still unanswered (ms since the epoch), 0 if none.
    pub ping_sent: u64,
    /// When this member last received a pong (ms since the epoch).
    pub pong_received: u64,
    /// The node's config epoch (for a replica: as last advertised).
    pub config_epoch: u64,
    /// This member's bus link to the node.
    pub link: LinkState,
    /// The slots the node owns (as this member sees it).
    pub slots: Vec<SlotRange>,
    /// Slots being migrated or imported (the answering member's own line only).
    pub moves: Vec<SlotMove>,
}

impl ClusterNode {
    /// `master` flag.
    pub fn is_primary(&self) -> bool {
        self.flags.primary
    }

    /// `fail` or `fail?` as seen by the answering member.
    pub fn is_failing(&self) -> bool {
        self.flags.fail || self.flags.pfail
    }

    /// How many slots the node owns.
    pub fn slot_count(&self) -> u32 {
        self.slots.iter().map(SlotRange::len).sum()
    }

    /// Whether the node owns `slot`.
    pub fn owns(&self, slot: u16) -> bool {
        self.slots.iter().any(|r| r.contains(slot))
    }
}

/// A member's whole `CLUSTER NODES` answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClusterNodes {
    /// Every line, in the order the member wrote them.
    pub nodes: Vec<ClusterNode>,
}

impl ClusterNodes {
    /// Parses a `CLUSTER NODES` answer. Blank lines are skipped; any other line that does
    /// not parse is an error naming its number (1-based) and quoting it.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut nodes = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            let node = parse_line(line).map_err(|problem| ParseError {
                field: format!("CLUSTER NODES line {}", index + 1),
                problem: format!("{problem} in {:?}", quote(line)),
            })?;
            nodes.push(node);
        }
        let myself = nodes.iter().filter(|n| n.flags.myself).count();
        if myself > 1 {
            return Err(ParseError {
                field: "CLUSTER NODES".into(),
                problem: format!("{myself} lines are flagged `myself`"),
            });
        }
        Ok(Self { nodes })
    }

    /// The answering member's own line.
    pub fn myself(&self) -> Option<&ClusterNode> {
        self.nodes.iter().find(|n| n.flags.myself)
    }

    /// The node with id `id`.
    pub fn get(&self, id: &str) -> Option<&ClusterNode> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// Primaries that own at least one slot.
    pub fn slot_owners(&self) -> impl Iterator<Item = &ClusterNode> {
        self.nodes
            .iter()
            .filter(|n| n.flags.primary && !n.slots.is_empty())
    }

    /// The replicas of primary `id`.
    pub fn replicas_of<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a ClusterNode> {
        self.nodes
            .iter()
            .filter(move |n| n.primary_id.as_deref() == Some(id))
    }

    /// The owner of each slot, as this member sees it (`None` for an unassigned slot).
    pub fn slot_owner_ids(&self) -> BTreeMap<u16, &str> {
        let mut owners = BTreeMap::new();
        for node in &self.nodes {
            for range in &node.slots {
                for slot in range.start..=range.end {
                    owners.insert(slot, node.id.as_str());
                }
            }
        }
        owners
    }
}

fn parse_line(line: &str) -> Result<ClusterNode, String> {
    let mut fields = line.split(' ').filter(|f| !f.is_empty());
    let mut next = |name: &str| fields.next().ok_or_else(|| format!("no {name} field"));
    let id = node_id(next("id")?)?;
    let (ip, port, bus_port, hostname) = parse_addr(next("address")?)?;
    let flags = NodeFlags::parse(next("flags")?);
    let primary_id = match next("primary")? {
        "-" => None,
        other => Some(node_id(other)?),
    };
    let number = |name: &str, text: &str| -> Result<u64, String> {
        text.parse()
            .map_err(|_| format!("{name} is not a number: {:?}", quote(text)))
    };
    let ping_sent = number("ping-sent", next("ping-sent")?)?;
    let pong_received = number("pong-recv", next("pong-recv")?)?;
    let config_epoch = number("config-epoch", next("config-epoch")?)?;
    let link = match next("link-state")? {
        "connected" => LinkState::Connected,
        "disconnected" => LinkState::Disconnected,
        other => return Err(format!("unknown link state {:?}", quote(other))),
    };
    let mut slots = Vec::new();
    let mut moves = Vec::new();
    for field in fields {
        if let Some(inner) = field.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| format!("unclosed `[` in {:?}", quote(field)))?;
            moves.push(parse_move(inner)?);
        } else {
            slots.push(parse_range(field)?);
        }
    }
    Ok(ClusterNode {
        id,
        ip,
        port,
        bus_port,
        hostname,
        flags,
        primary_id,
        ping_sent,
        pong_received,
        config_epoch,
        link,
        slots,
        moves,
    })
}

/// A node id: non-empty, at most [`MAX_NODE_ID`] bytes of visible ASCII.
fn node_id(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > MAX_NODE_ID || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("bad node id {:?}", quote(text)));
    }
    Ok(text.to_owned())
}

/// `ip:port@cport[,hostname[,aux=value...]]`; IPv6 addresses are written without brackets,
/// so the port is after the last `:`. `:0@0` is a node without an address.
fn parse_addr(text: &str) -> Result<(String, u16, u16, Option<String>), String> {
    let bad = |why: &str| format!("bad address {:?}: {why}", quote(text));
    let mut parts = text.split(',');
    let endpoint = parts.next().unwrap_or_default();
    // Valkey 8 may add `key=value` fields after the hostname; only the hostname is kept.
    let hostname = parts
        .next()
        .filter(|h| !h.is_empty() && !h.contains('='))
        .map(quote);
    let (ip_port, bus) = endpoint.split_once('@').ok_or_else(|| bad("no `@`"))?;
    let (ip, port) = ip_port.rsplit_once(':').ok_or_else(|| bad("no `:`"))?;
    let port = port.parse().map_err(|_| bad("port is not a number"))?;
    let bus_port = bus.parse().map_err(|_| bad("bus port is not a number"))?;
    if ip.len() > 64 || !ip.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("not an address"));
    }
    Ok((ip.to_owned(), port, bus_port, hostname))
}

/// `N` or `N-M`.
fn parse_range(text: &str) -> Result<SlotRange, String> {
    let slot = |s: &str| -> Result<u16, String> {
        s.parse::<u16>()
            .ok()
            .filter(|&n| n <= MAX_SLOT)
            .ok_or_else(|| format!("bad slot {:?}", quote(text)))
    };
    let (start, end) = match text.split_once('-') {
        Some((a, b)) => (slot(a)?, slot(b)?),
        None => {
            let s = slot(text)?;
            (s, s)
        }
    };
    SlotRange::new(start, end).ok_or_else(|| format!("slot range {:?} runs backwards", quote(text)))
}

/// `N->-id` (migrating) or `N-<-id` (importing), without the brackets.
fn parse_move(text: &str) -> Result<SlotMove, String> {
    let slot = |s: &str| -> Result<u16, String> {
        s.parse::<u16>()
            .ok()
            .filter(|&n| n <= MAX_SLOT)
            .ok_or_else(|| format!("bad slot in [{}]", quote(text)))
    };
    if let Some((s, id)) = text.split_once("->-") {
        return Ok(SlotMove::Migrating {
            slot: slot(s)?,
            to: node_id(id)?,
        });
    }
    if let Some((s, id)) = text.split_once("-<-") {
        return Ok(SlotMove::Importing {
            slot: slot(s)?,
            from: node_id(id)?,
        });
    }
    Err(format!("unknown slot state [{}]", quote(text)))
}

/// `text` cut to [`QUOTE_LIMIT`] bytes with control characters replaced, for error messages
/// and for strings that reach a status (safety rule 10).
pub(crate) fn quote(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if out.len() > QUOTE_LIMIT {
        let mut cut = QUOTE_LIMIT;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALKEY_OK: &str = include_str!("testdata/cluster/valkey8_ok.nodes.txt");
    const VALKEY_MIXED: &str = include_str!("testdata/cluster/valkey8_mixed.nodes.txt");
    const VALKEY_IMPORTING: &str =
        include_str!("testdata/cluster/valkey8_mixed_importing.nodes.txt");
    const VALKEY_PFAIL: &str = include_str!("testdata/cluster/valkey8_pfail.nodes.txt");
    const VALKEY_FAIL: &str = include_str!("testdata/cluster/valkey8_fail.nodes.txt");
    const VALKEY_NOADDR: &str = include_str!("testdata/cluster/valkey8_noaddr.nodes.txt");
    const REDIS_OK: &str = include_str!("testdata/cluster/redis7_ok.nodes.txt");
    const REDIS_MIXED: &str = include_str!("testdata/cluster/redis7_mixed.nodes.txt");
    const REDIS_IMPORTING: &str = include_str!("testdata/cluster/redis7_mixed_importing.nodes.txt");
    const REDIS_PFAIL: &str = include_str!("testdata/cluster/redis7_pfail.nodes.txt");
    const REDIS_FAIL: &str = include_str!("testdata/cluster/redis7_fail.nodes.txt");
    const VALKEY_INFO_OK: &str = include_str!("testdata/cluster/valkey8_ok.info.txt");
    const VALKEY_INFO_FAIL: &str = include_str!("testdata/cluster/valkey8_fail.info.txt");
    const REDIS_INFO_OK: &str = include_str!("testdata/cluster/redis7_ok.info.txt");
    const REDIS_INFO_MIXED: &str = include_str!("testdata/cluster/redis7_mixed.info.txt");
    const REDIS_INFO_FAIL: &str = include_str!("testdata/cluster/redis7_fail.info.txt");

    fn range(a: u16, b: u16) -> SlotRange {
        SlotRange::new(a, b).unwrap()
    }

    #[test]
    fn healthy_cluster_of_three_shards() {
        for text in [VALKEY_OK, REDIS_OK] {
            let nodes = ClusterNodes::parse(text).unwrap();
            assert_eq!(nodes.nodes.len(), 6);
            let me = nodes.myself().unwrap();
            assert_eq!(
                (me.ip.as_str(), me.port, me.bus_port),
                ("127.0.0.201", 21001, 21002)
            );
            assert!(me.flags.primary && me.flags.nofailover && !me.flags.replica);
            assert_eq!(me.slots, vec![range(0, 5460)]);
            let owners: Vec<_> = nodes.slot_owners().collect();
            assert_eq!(owners.len(), 3);
            assert_eq!(owners.iter().map(|n| n.slot_count()).sum::<u32>(), 16384);
            for owner in owners {
                let replicas: Vec<_> = nodes.replicas_of(&owner.id).collect();
                assert_eq!(replicas.len(), 1, "{}", owner.id);
                assert!(replicas[0].flags.replica && replicas[0].slots.is_empty());
                assert_eq!(replicas[0].link, LinkState::Connected);
            }
            assert_eq!(nodes.slot_owner_ids().len(), 16384);
            assert!(
                nodes
                    .nodes
                    .iter()
                    .all(|n| n.hostname.is_none() && n.moves.is_empty())
            );
        }
        let valkey = ClusterNodes::parse(VALKEY_OK).unwrap();
        let replica = valkey
            .get("61b0bf1aaaa3ea865735a0c5b7c3f23dc112d115")
            .unwrap();
        assert_eq!(
            replica.primary_id.as_deref(),
            Some("040672dd2db47d60e14929bf3e86fddfe991b4e8")
        );
        assert_eq!(replica.pong_received, 1796362361078);
        assert_eq!(replica.config_epoch, 2);
    }

    #[test]
    fn handshake_no_slots_hostname_and_migrating_slot() {
        for (text, importing) in [
            (VALKEY_MIXED, VALKEY_IMPORTING),
            (REDIS_MIXED, REDIS_IMPORTING),
        ] {
            let nodes = ClusterNodes::parse(text).unwrap();
            let handshake: Vec<_> = nodes.nodes.iter().filter(|n| n.flags.handshake).collect();
            assert_eq!(handshake.len(), 1);
            assert_eq!((handshake[0].port, handshake[0].bus_port), (29999, 30000));
            assert!(!handshake[0].flags.primary && handshake[0].primary_id.is_none());
            let named = nodes.nodes.iter().find(|n| n.hostname.is_some()).unwrap();
            assert_eq!(named.hostname.as_deref(), Some("node7.kv.test"));
            assert_eq!(
                (named.ip.as_str(), named.port, named.bus_port),
                ("127.0.0.207", 21013, 21014)
            );
            assert!(named.flags.primary && named.slots.is_empty());
            let me = nodes.myself().unwrap();
            assert_eq!(me.slots, vec![range(0, 5460)]);
            let [SlotMove::Migrating { slot: 100, to }] = me.moves.as_slice() else {
                panic!("{:?}", me.moves);
            };
            let target = ClusterNodes::parse(importing).unwrap();
            let target_me = target.myself().unwrap();
            assert_eq!(&target_me.id, to);
            assert_eq!(
                target_me.moves,
                vec![SlotMove::Importing {
                    slot: 100,
                    from: me.id.clone()
                }]
            );
            // Mid-migration the slot still belongs to the source in every view.
            assert_eq!(target.slot_owner_ids()[&100], me.id);
        }
    }

    #[test]
    fn suspected_and_failed_primary() {
        for (pfail, fail) in [(VALKEY_PFAIL, VALKEY_FAIL), (REDIS_PFAIL, REDIS_FAIL)] {
            let suspected = ClusterNodes::parse(pfail).unwrap();
            let s = suspected.nodes.iter().find(|n| n.flags.pfail).unwrap();
            assert!(s.flags.primary && !s.flags.fail && s.is_failing());
            assert!(s.ping_sent > 0, "an unanswered ping is pending");
            assert_eq!(s.slots, vec![range(10923, 16383)]);
            let failed = ClusterNodes::parse(fail).unwrap();
            let f = failed.nodes.iter().find(|n| n.flags.fail).unwrap();
            assert!(f.flags.primary && !f.flags.pfail && f.is_failing());
            assert_eq!(f.id, s.id);
            // Its replica does not take over on its own (`nofailover`).
            let replica = failed.replicas_of(&f.id).next().unwrap();
            assert!(replica.flags.replica && replica.flags.nofailover);
        }
        let valkey = ClusterNodes::parse(VALKEY_FAIL).unwrap();
        let f = valkey.nodes.iter().find(|n| n.flags.fail).unwrap();
        assert_eq!(f.link, LinkState::Disconnected);
    }

    /// A replica came back empty, without `nodes.conf`, at its old address: the other members
    /// meet a node with another id there and flag the old id `noaddr` (captured on Valkey 8
    /// three seconds after the restart; the new node is not met yet).
    #[test]
    fn old_id_of_an_address_taken_by_a_new_node_is_noaddr() {
        let nodes = ClusterNodes::parse(VALKEY_NOADDR).unwrap();
        let old = nodes.nodes.iter().find(|n| n.flags.noaddr).unwrap();
        assert_eq!((old.ip.as_str(), old.port, old.bus_port), ("", 0, 0));
        assert!(old.flags.replica && old.flags.nofailover);
        assert_eq!(old.link, LinkState::Disconnected);
        assert_eq!(
            old.primary_id.as_deref(),
            Some("41922a8c32435406cdabdbb3ecdddcb50c9f2040")
        );
        assert_eq!(nodes.nodes.len(), 6);
    }

    #[test]
    fn cluster_info_fields() {
        let ok = ClusterInfo::parse(VALKEY_INFO_OK).unwrap();
        assert_eq!(
            ok,
            ClusterInfo {
                state: ClusterState::Ok,
                slots_assigned: 16384,
                slots_ok: 16384,
                slots_pfail: 0,
                slots_fail: 0,
                known_nodes: 6,
                size: 3,
                current_epoch: 5,
                my_epoch: Some(0),
            }
        );
        let fail = ClusterInfo::parse(VALKEY_INFO_FAIL).unwrap();
        assert_eq!(fail.state, ClusterState::Fail);
        assert_eq!((fail.slots_ok, fail.slots_fail), (10923, 5461));
        let redis = ClusterInfo::parse(REDIS_INFO_OK).unwrap();
        assert_eq!(
            (redis.state, redis.size, redis.known_nodes),
            (ClusterState::Ok, 3, 6)
        );
        let mixed = ClusterInfo::parse(REDIS_INFO_MIXED).unwrap();
        assert_eq!(mixed.known_nodes, 8, "the handshake counts");
        assert_eq!(
            ClusterInfo::parse(REDIS_INFO_FAIL).unwrap().state,
            ClusterState::Fail
        );
        // Dragonfly reports no my_epoch.
        let dfly = "cluster_state:ok\r\ncluster_slots_assigned:16384\r\ncluster_slots_ok:16384\r\n\
                    cluster_slots_pfail:0\r\ncluster_slots_fail:0\r\ncluster_known_nodes:2\r\n\
                    cluster_size:1\r\ncluster_current_epoch:1\r\n";
        assert_eq!(ClusterInfo::parse(dfly).unwrap().my_epoch, None);
    }

    #[test]
    fn cluster_info_errors_name_the_field() {
        let e = ClusterInfo::parse("cluster_state:ok\n").unwrap_err();
        assert_eq!(e.field, "CLUSTER INFO cluster_slots_assigned");
        let text = VALKEY_INFO_OK.replace(
            "cluster_current_epoch:5",
            "cluster_current_epoch:x\u{1b}[31m",
        );
        let e = ClusterInfo::parse(&text).unwrap_err();
        assert_eq!(e.field, "CLUSTER INFO cluster_current_epoch");
        assert!(!e.problem.contains('\u{1b}'), "{e}");
    }

    #[test]
    fn other_address_forms() {
        let line =
            "07c37dfeb235213a872192d90877d0cd55635b91 :0@0 master,noaddr - 0 0 3 disconnected";
        let n = parse_line(line).unwrap();
        assert!(n.flags.noaddr && n.ip.is_empty() && n.port == 0);
        let line = "07c37dfeb235213a872192d90877d0cd55635b91 ::1:7000@17000,db-0.kv,shard-id=ab master - 0 0 3 connected 0-10 12";
        let n = parse_line(line).unwrap();
        assert_eq!((n.ip.as_str(), n.port, n.bus_port), ("::1", 7000, 17000));
        assert_eq!(n.hostname.as_deref(), Some("db-0.kv"));
        assert_eq!(n.slots, vec![range(0, 10), range(12, 12)]);
        let line = "07c37dfeb235213a872192d90877d0cd55635b91 1.2.3.4:7000@17000,shard-id=ab master - 0 0 3 connected";
        assert_eq!(parse_line(line).unwrap().hostname, None);
        let line = "07c37dfeb235213a872192d90877d0cd55635b91 1.2.3.4:7000@17000 master,future - 0 0 3 connected";
        assert_eq!(parse_line(line).unwrap().flags.other, vec!["future"]);
    }

    #[test]
    fn malformed_lines_are_errors_naming_the_line() {
        let good = VALKEY_OK.lines().next().unwrap();
        let cases = [
            ("x", "no address field"),
            ("id 1.2.3.4:1@2 master", "no primary field"),
            ("id 1.2.3.4@2 master - 0 0 1 connected", "no `:`"),
            ("id 1.2.3.4:1 master - 0 0 1 connected", "no `@`"),
            ("id 1.2.3.4:99999@2 master - 0 0 1 connected", "port"),
            ("id 1.2.3.4:1@2 master - x 0 1 connected", "ping-sent"),
            ("id 1.2.3.4:1@2 master - 0 0 -1 connected", "config-epoch"),
            ("id 1.2.3.4:1@2 master - 0 0 1 sleepy", "link state"),
            ("id 1.2.3.4:1@2 master - 0 0 1 connected 16384", "bad slot"),
            ("id 1.2.3.4:1@2 master - 0 0 1 connected 9-3", "backwards"),
            ("id 1.2.3.4:1@2 master - 0 0 1 connected [5->-x", "unclosed"),
            (
                "id 1.2.3.4:1@2 master - 0 0 1 connected [5-?-x]",
                "unknown slot state",
            ),
            (
                "id 1.2.3.4:1@2 master - 0 0 1 connected [5->-]",
                "bad node id",
            ),
        ];
        for (bad, expect) in cases {
            let text = format!("{good}\n\n{bad}\n");
            let e = ClusterNodes::parse(&text).unwrap_err();
            assert_eq!(e.field, "CLUSTER NODES line 3", "{bad}");
            assert!(e.problem.contains(expect), "{bad}: {e}");
        }
        let twice = format!("{good}\n{good}\n");
        assert!(
            ClusterNodes::parse(&twice)
                .unwrap_err()
                .problem
                .contains("myself")
        );
        let long = format!("{} {good}", "a".repeat(500));
        let e = ClusterNodes::parse(&long).unwrap_err();
        assert!(e.problem.len() < 400, "{}", e.problem.len());
    }

    /// splitmix64: a deterministic stream for the garbling test.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn garbled_input_never_panics() {
        let captures = [
            VALKEY_OK,
            VALKEY_MIXED,
            VALKEY_FAIL,
            REDIS_MIXED,
            REDIS_PFAIL,
        ];
        let alphabet: Vec<char> = " -:@,[]<>?0123456789abcdef\r\n\t\u{0}é{}".chars().collect();
        let mut rng = Rng(0x006b_7670_696c_6f74);
        let mut errors = 0;
        for round in 0..20_000 {
            let base = captures[round % captures.len()];
            let mut chars: Vec<char> = base.chars().collect();
            for _ in 0..=rng.below(6) {
                let at = rng.below(chars.len() + 1);
                match rng.below(4) {
                    0 if at < chars.len() => {
                        chars.remove(at);
                    }
                    1 if at < chars.len() => chars[at] = alphabet[rng.below(alphabet.len())],
                    2 => chars.insert(at, alphabet[rng.below(alphabet.len())]),
                    _ => {
                        let end = (at + rng.below(40)).min(chars.len());
                        chars.drain(at..end);
                    }
                }
            }
            let text: String = chars.into_iter().collect();
            match ClusterNodes::parse(&text) {
                Ok(nodes) => {
                    for n in &nodes.nodes {
                        assert!(
                            n.slots
                                .iter()
                                .all(|r| r.start <= r.end && r.end <= MAX_SLOT)
                        );
                    }
                }
                Err(e) => {
                    errors += 1;
                    assert!(e.field.starts_with("CLUSTER NODES"), "{e}");
                    assert!(!e.problem.chars().any(char::is_control), "{e:?}");
                }
            }
            let _ = ClusterInfo::parse(&text);
        }
        assert!(errors > 1000, "garbling found only {errors} errors");
        // Random bytes, not just edits of real answers.
        for _ in 0..2_000 {
            let len = rng.below(300);
            let bytes: Vec<u8> = (0..len).map(|_| (rng.next() & 0xff) as u8).collect();
            let text = String::from_utf8_lossy(&bytes);
            let _ = ClusterNodes::parse(&text);
            let _ = ClusterInfo::parse(&text);
        }
    }
}
