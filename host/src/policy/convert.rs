//! Conversions between the sdk records (what the host builds) and the generated WIT bindings
//! (what crosses into the sandbox).

use super::contract::v0_1_0::exports::kvpilot::policy::{
    plugin, replica_selection as rs, rollout_order as ro, snapshot_schedule as ss,
};
use super::contract::v0_1_0::kvpilot::policy::types as wit;
use kvpilot_sdk as sdk;

fn role(r: sdk::Role) -> wit::Role {
    match r {
        sdk::Role::Primary => wit::Role::Primary,
        sdk::Role::Replica => wit::Role::Replica,
        sdk::Role::Unknown => wit::Role::Unknown,
    }
}

fn engine(e: sdk::Engine) -> wit::Engine {
    match e {
        sdk::Engine::Valkey => wit::Engine::Valkey,
        sdk::Engine::Redis => wit::Engine::Redis,
        sdk::Engine::Dragonfly => wit::Engine::Dragonfly,
    }
}

fn member(m: &sdk::Member) -> wit::Member {
    wit::Member {
        name: m.name.clone(),
        shard: m.shard,
        ordinal: m.ordinal,
        role: role(m.role),
        ready: m.ready,
        on_desired_revision: m.on_desired_revision,
        link_up: m.link_up,
        syncing: m.syncing,
        offset: m.offset,
        lag_bytes: m.lag_bytes,
        keys: m.keys,
        zone: m.zone.clone(),
        node: m.node.clone(),
    }
}

fn members(ms: &[sdk::Member]) -> Vec<wit::Member> {
    ms.iter().map(member).collect()
}

fn cluster(c: &sdk::Cluster) -> wit::Cluster {
    wit::Cluster {
        name: c.name.clone(),
        namespace: c.namespace.clone(),
        engine: engine(c.engine),
        engine_version: c.engine_version.clone(),
        shards: c.shards,
        replicas_per_shard: c.replicas_per_shard,
    }
}

/// The replica-selection request as the guest receives it.
pub fn selection_request(r: &sdk::SelectionRequest) -> rs::Request {
    rs::Request {
        reason: match r.reason {
            sdk::SelectionReason::PlannedHandover => rs::Reason::PlannedHandover,
            sdk::SelectionReason::PrimaryLost => rs::Reason::PrimaryLost,
            sdk::SelectionReason::PrimaryEmpty => rs::Reason::PrimaryEmpty,
        },
        cluster: cluster(&r.cluster),
        primary: r.primary.as_ref().map(member),
        candidates: members(&r.candidates),
        config: r.config.clone(),
    }
}

/// The snapshot-schedule request as the guest receives it.
pub fn schedule_request(r: &sdk::ScheduleRequest) -> ss::Request {
    ss::Request {
        mode: match r.mode {
            sdk::SnapshotMode::All => ss::Mode::All,
            sdk::SnapshotMode::PrimaryOnly => ss::Mode::PrimaryOnly,
            sdk::SnapshotMode::ReplicasOnly => ss::Mode::ReplicasOnly,
        },
        cluster: cluster(&r.cluster),
        schedule: r.schedule.clone(),
        stagger_minutes: r.stagger_minutes,
        members: members(&r.members),
        config: r.config.clone(),
    }
}

/// The rollout-order request as the guest receives it.
pub fn rollout_request(r: &sdk::RolloutRequest) -> ro::Request {
    ro::Request {
        cluster: cluster(&r.cluster),
        members: members(&r.members),
        max_in_flight: r.max_in_flight,
        max_lag_bytes: r.max_lag_bytes,
        config: r.config.clone(),
    }
}

/// A replica-selection answer in sdk terms.
pub fn selection(d: rs::Decision) -> sdk::Selection {
    match d {
        rs::Decision::Promote(name) => sdk::Selection::Promote(name),
        rs::Decision::Wait(reason) => sdk::Selection::Wait(reason),
    }
}

/// A snapshot-schedule answer in sdk terms.
pub fn schedules(list: Vec<ss::MemberSchedule>) -> Vec<sdk::MemberSchedule> {
    list.into_iter()
        .map(|s| sdk::MemberSchedule {
            member: s.member,
            cron: s.cron,
        })
        .collect()
}

/// A rollout-order answer in sdk terms.
pub fn step(s: ro::Step) -> sdk::Step {
    match s {
        ro::Step::Restart(name) => sdk::Step::Restart(name),
        ro::Step::Handover(h) => sdk::Step::Handover {
            from: h.from,
            to: h.to,
        },
        ro::Step::Wait(reason) => sdk::Step::Wait(reason),
        ro::Step::Done => sdk::Step::Done,
    }
}

/// Plugin metadata in sdk terms.
pub fn info(i: plugin::PluginInfo) -> sdk::PluginInfo {
    sdk::PluginInfo {
        name: i.name,
        version: i.version,
        description: i.description,
    }
}

/// Bytes of text in an answer: what the answer-size bound counts.
pub fn selection_bytes(s: &sdk::Selection) -> usize {
    match s {
        sdk::Selection::Promote(t) | sdk::Selection::Wait(t) => t.len(),
    }
}

/// Bytes of text in a schedule answer.
pub fn schedules_bytes(list: &[sdk::MemberSchedule]) -> usize {
    list.iter()
        .map(|s| s.member.len() + s.cron.as_ref().map_or(0, String::len) + 16)
        .sum()
}

/// Bytes of text in a rollout answer.
pub fn step_bytes(s: &sdk::Step) -> usize {
    match s {
        sdk::Step::Restart(t) | sdk::Step::Wait(t) => t.len(),
        sdk::Step::Handover { from, to } => from.len() + to.len(),
        sdk::Step::Done => 0,
    }
}
