//! Conversions between the sdk records (what the host builds) and the generated WIT bindings
//! (what crosses into the sandbox).
//!
//! Requests cross as borrowed views ([`SelectionRef`], [`ScheduleRef`], [`RolloutRef`]) that
//! lower straight from the sdk records: the same WIT types (wasmtime checks them against the
//! component's function types, field by field), without copying every member's strings first.

use super::contract::v0_1_0::exports::kvpilot::policy::{
    plugin, replica_selection as rs, rollout_order as ro, snapshot_schedule as ss,
};
use super::contract::v0_1_0::kvpilot::policy::types as wit;
use super::text;
use kvpilot_sdk as sdk;
use wasmtime::component::{ComponentType, Lower};

/// `types.member`, borrowing the sdk record's strings.
#[derive(ComponentType, Lower)]
#[component(record)]
pub struct MemberRef<'a> {
    name: &'a str,
    shard: u32,
    ordinal: u32,
    role: wit::Role,
    ready: bool,
    #[component(name = "on-desired-revision")]
    on_desired_revision: bool,
    #[component(name = "link-up")]
    link_up: bool,
    syncing: bool,
    offset: u64,
    #[component(name = "lag-bytes")]
    lag_bytes: u64,
    keys: u64,
    zone: Option<&'a str>,
    node: Option<&'a str>,
}

/// `types.cluster`, borrowed.
#[derive(ComponentType, Lower)]
#[component(record)]
pub struct ClusterRef<'a> {
    name: &'a str,
    namespace: &'a str,
    engine: wit::Engine,
    #[component(name = "engine-version")]
    engine_version: &'a str,
    shards: u32,
    #[component(name = "replicas-per-shard")]
    replicas_per_shard: u32,
}

/// `replica-selection.request`, borrowed.
#[derive(ComponentType, Lower)]
#[component(record)]
pub struct SelectionRef<'a> {
    reason: rs::Reason,
    cluster: ClusterRef<'a>,
    primary: Option<MemberRef<'a>>,
    candidates: Vec<MemberRef<'a>>,
    config: &'a str,
}

/// `snapshot-schedule.request`, borrowed.
#[derive(ComponentType, Lower)]
#[component(record)]
pub struct ScheduleRef<'a> {
    mode: ss::Mode,
    cluster: ClusterRef<'a>,
    schedule: &'a str,
    #[component(name = "stagger-minutes")]
    stagger_minutes: u32,
    members: Vec<MemberRef<'a>>,
    config: &'a str,
}

/// `rollout-order.request`, borrowed.
#[derive(ComponentType, Lower)]
#[component(record)]
pub struct RolloutRef<'a> {
    cluster: ClusterRef<'a>,
    members: Vec<MemberRef<'a>>,
    #[component(name = "max-in-flight")]
    max_in_flight: u32,
    #[component(name = "max-lag-bytes")]
    max_lag_bytes: u64,
    config: &'a str,
}

fn member_ref(m: &sdk::Member) -> MemberRef<'_> {
    MemberRef {
        name: &m.name,
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
        zone: m.zone.as_deref(),
        node: m.node.as_deref(),
    }
}

fn member_refs(ms: &[sdk::Member]) -> Vec<MemberRef<'_>> {
    ms.iter().map(member_ref).collect()
}

fn cluster_ref(c: &sdk::Cluster) -> ClusterRef<'_> {
    ClusterRef {
        name: &c.name,
        namespace: &c.namespace,
        engine: engine(c.engine),
        engine_version: &c.engine_version,
        shards: c.shards,
        replicas_per_shard: c.replicas_per_shard,
    }
}

/// The replica-selection request as the guest receives it, borrowing `r`.
pub fn selection_ref(r: &sdk::SelectionRequest) -> SelectionRef<'_> {
    SelectionRef {
        reason: reason(r.reason),
        cluster: cluster_ref(&r.cluster),
        primary: r.primary.as_ref().map(member_ref),
        candidates: member_refs(&r.candidates),
        config: &r.config,
    }
}

/// The snapshot-schedule request as the guest receives it, borrowing `r`.
pub fn schedule_ref(r: &sdk::ScheduleRequest) -> ScheduleRef<'_> {
    ScheduleRef {
        mode: mode(r.mode),
        cluster: cluster_ref(&r.cluster),
        schedule: &r.schedule,
        stagger_minutes: r.stagger_minutes,
        members: member_refs(&r.members),
        config: &r.config,
    }
}

/// The rollout-order request as the guest receives it, borrowing `r`.
pub fn rollout_ref(r: &sdk::RolloutRequest) -> RolloutRef<'_> {
    RolloutRef {
        cluster: cluster_ref(&r.cluster),
        members: member_refs(&r.members),
        max_in_flight: r.max_in_flight,
        max_lag_bytes: r.max_lag_bytes,
        config: &r.config,
    }
}

fn reason(r: sdk::SelectionReason) -> rs::Reason {
    match r {
        sdk::SelectionReason::PlannedHandover => rs::Reason::PlannedHandover,
        sdk::SelectionReason::PrimaryLost => rs::Reason::PrimaryLost,
        sdk::SelectionReason::PrimaryEmpty => rs::Reason::PrimaryEmpty,
    }
}

fn mode(m: sdk::SnapshotMode) -> ss::Mode {
    match m {
        sdk::SnapshotMode::All => ss::Mode::All,
        sdk::SnapshotMode::PrimaryOnly => ss::Mode::PrimaryOnly,
        sdk::SnapshotMode::ReplicasOnly => ss::Mode::ReplicasOnly,
    }
}

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

/// Plugin metadata in sdk terms, bounded (see `text.rs`).
pub fn info(i: plugin::PluginInfo) -> sdk::PluginInfo {
    sdk::PluginInfo {
        name: text::one_line(&i.name, text::INFO_NAME_BYTES),
        version: text::one_line(&i.version, text::INFO_NAME_BYTES),
        description: text::one_line(&i.description, text::INFO_DESCRIPTION_BYTES),
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
