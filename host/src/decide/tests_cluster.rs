//! Observations of cluster-mode groups for the unit tests of `decide`: views are built as
//! `CLUSTER NODES` / `CLUSTER INFO` text and parsed by the engine's own parsers.

use crate::engine::slots::balanced_ranges;
use crate::engine::{ClusterInfo, ClusterNodes};
use crate::observe::{ClusterView, History, Observed, ObservedMember, Replication};
use kvpilot_sdk::{Engine, Role};
use std::net::SocketAddr;

/// Node id of member `i` of shard `s` (40 hex digits, as the engines make them).
pub fn id_of(s: u32, i: u32) -> String {
    format!("{:040x}", 0xabc000 + s * 100 + i)
}

pub fn addr_of(s: u32, i: u32) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 10 + (s * 10 + i) as u8], 7000))
}

fn name_of(s: u32, i: u32) -> String {
    format!("c-s{s}-{i}")
}

fn history(replid: &str, offset: u64) -> History {
    History {
        replid: replid.to_string(),
        replid2: None,
        previous_until_offset: None,
        offset,
    }
}

fn member(s: u32, i: u32, role: Role, keys: u64, offset: u64) -> ObservedMember {
    ObservedMember {
        name: name_of(s, i),
        shard: s,
        ordinal: i,
        addr: addr_of(s, i),
        revision: Some("r1".into()),
        running: true,
        zone: None,
        node: None,
        retiring: false,
        report: Some(Replication {
            role,
            following: (role == Role::Replica).then(|| addr_of(s, 0)),
            link_up: role == Role::Replica,
            offset,
            history: Some(history(&format!("repl{s}"), offset)),
            keys: Some(keys),
            ..Default::default()
        }),
        last_known: None,
        cluster: None,
    }
}

fn line(
    id: &str,
    addr: SocketAddr,
    flags: &str,
    primary: Option<&str>,
    epoch: u64,
    slots: &str,
) -> String {
    format!(
        "{id} {addr}@{} {flags} {} 0 0 {epoch} connected {slots}",
        addr.port() + 10000,
        primary.unwrap_or("-")
    )
}

fn info(ok: bool, assigned: u32, epoch: u64) -> ClusterInfo {
    ClusterInfo::parse(&format!(
        "cluster_state:{}\r\ncluster_slots_assigned:{assigned}\r\ncluster_slots_ok:{assigned}\r\n\
         cluster_slots_pfail:0\r\ncluster_slots_fail:0\r\ncluster_known_nodes:6\r\n\
         cluster_size:3\r\ncluster_current_epoch:{epoch}\r\ncluster_my_epoch:{epoch}\r\n",
        if ok { "ok" } else { "fail" }
    ))
    .unwrap()
}

fn observed(members: Vec<ObservedMember>, shards: u32) -> Observed {
    Observed {
        name: "c".into(),
        namespace: "local".into(),
        engine: Engine::Valkey,
        engine_version: "8.0.1".into(),
        desired_revision: "r1".into(),
        members,
        endpoint: None,
        primary_missing_probes: 0,
        shard_missing_probes: vec![0; shards as usize],
        now_unix: 1_800_000_000,
    }
}

/// `shards` × (1 + `replicas`) members that run but were never bootstrapped: each is an
/// empty primary that knows only itself.
pub fn fresh_cluster(shards: u32, replicas: u32) -> Observed {
    let mut members = Vec::new();
    for s in 0..shards {
        for i in 0..=replicas {
            let mut m = member(s, i, Role::Primary, 0, 0);
            let text = line(&id_of(s, i), m.addr, "myself,master", None, 0, "");
            m.cluster = ClusterView::new(info(false, 0, 0), ClusterNodes::parse(&text).unwrap());
            members.push(m);
        }
    }
    observed(members, shards)
}

/// How far a bootstrap got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Everyone knows everyone; no slots.
    Met,
    /// Member 0 of each shard owns its range; the others are empty primaries.
    Assigned,
    /// The others are replicas of member 0 too.
    Formed,
}

/// The text of a formed cluster's `CLUSTER NODES` as seen by member (`me_s`, `me_i`).
fn formed_nodes(shards: u32, replicas: u32, me: (u32, u32)) -> ClusterNodes {
    staged_nodes(shards, replicas, me, Stage::Formed)
}

fn staged_nodes(shards: u32, replicas: u32, me: (u32, u32), stage: Stage) -> ClusterNodes {
    let ranges = balanced_ranges(shards as usize);
    let mut lines = Vec::new();
    for s in 0..shards {
        for i in 0..=replicas {
            let myself = if (s, i) == me { "myself," } else { "" };
            let l = if stage == Stage::Met || (stage == Stage::Assigned && i > 0) {
                line(
                    &id_of(s, i),
                    addr_of(s, i),
                    &format!("{myself}master"),
                    None,
                    0,
                    "",
                )
            } else if i == 0 {
                let r = ranges[s as usize];
                line(
                    &id_of(s, 0),
                    addr_of(s, 0),
                    &format!("{myself}master"),
                    None,
                    u64::from(s) + 1,
                    &format!("{}-{}", r.start, r.end),
                )
            } else {
                line(
                    &id_of(s, i),
                    addr_of(s, i),
                    &format!("{myself}slave"),
                    Some(&id_of(s, 0)),
                    u64::from(s) + 1,
                    "",
                )
            };
            lines.push(l);
        }
    }
    ClusterNodes::parse(&lines.join("\n")).unwrap()
}

/// A bootstrapped cluster: member 0 of each shard is its primary, holding 10 keys.
pub fn formed_cluster(shards: u32, replicas: u32) -> Observed {
    let mut members = Vec::new();
    for s in 0..shards {
        for i in 0..=replicas {
            let role = if i == 0 { Role::Primary } else { Role::Replica };
            let mut m = member(s, i, role, 10, 1000);
            if i == 0
                && let Some(r) = m.report.as_mut()
            {
                r.online_replicas = (1..=replicas).map(|r| addr_of(s, r)).collect();
            }
            m.cluster = ClusterView::new(
                info(true, 16384, u64::from(shards)),
                formed_nodes(shards, replicas, (s, i)),
            );
            members.push(m);
        }
    }
    observed(members, shards)
}

/// A bootstrap that got as far as `stage` (every member empty).
pub fn staged_cluster(shards: u32, replicas: u32, stage: Stage) -> Observed {
    let assigned = if stage == Stage::Met { 0 } else { 16384 };
    let mut members = Vec::new();
    for s in 0..shards {
        for i in 0..=replicas {
            let replica = stage == Stage::Formed && i > 0;
            let role = if replica {
                Role::Replica
            } else {
                Role::Primary
            };
            let mut m = member(s, i, role, 0, 0);
            m.cluster = ClusterView::new(
                info(stage == Stage::Formed, assigned, 0),
                staged_nodes(shards, replicas, (s, i), stage),
            );
            members.push(m);
        }
    }
    observed(members, shards)
}

/// Changes the view of member `c-<short>` with `f`.
pub fn set_view(obs: &mut Observed, short: &str, f: impl FnOnce(&mut ClusterNodes)) {
    let name = format!("c-{short}");
    let m = obs.members.iter_mut().find(|m| m.name == name).unwrap();
    let v = m.cluster.as_mut().unwrap();
    f(&mut v.nodes);
}

/// In `nodes`, `new` took over `old`'s slots at config epoch `epoch` and `old` failed.
pub fn promote_in(nodes: &mut ClusterNodes, new: &str, old: &str, epoch: u64) {
    let slots = nodes.get(old).map(|n| n.slots.clone()).unwrap_or_default();
    for n in &mut nodes.nodes {
        if n.id == new {
            n.flags.primary = true;
            n.flags.replica = false;
            n.primary_id = None;
            n.slots = slots.clone();
            n.config_epoch = epoch;
        } else if n.id == old {
            n.slots.clear();
            n.flags.fail = true;
        } else if n.primary_id.as_deref() == Some(old) {
            n.primary_id = Some(new.to_string());
        }
    }
}

/// Member `c-<short>` is gone (its process died).
pub fn kill(obs: &mut Observed, short: &str) {
    let name = format!("c-{short}");
    let m = obs.members.iter_mut().find(|m| m.name == name).unwrap();
    m.running = false;
    m.report = None;
    m.cluster = None;
    m.revision = None;
}

pub fn get<'a>(obs: &'a Observed, short: &str) -> &'a ObservedMember {
    let name = format!("c-{short}");
    obs.members.iter().find(|m| m.name == name).unwrap()
}

pub fn get_mut<'a>(obs: &'a mut Observed, short: &str) -> &'a mut ObservedMember {
    let name = format!("c-{short}");
    obs.members.iter_mut().find(|m| m.name == name).unwrap()
}
