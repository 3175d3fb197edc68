//! `stagger` as a WebAssembly component: converts the WIT records to `kvpilot-sdk` types and
//! calls [`kvpilot_sdk::defaults::stagger`].

wit_bindgen::generate!({
    world: "snapshot-scheduler",
    path: "../../../wit/0.1.0",
});

use exports::kvpilot::policy::plugin::{self, PluginInfo};
use exports::kvpilot::policy::snapshot_schedule::{self, MemberSchedule, Mode, Request};
use kvpilot::policy::types::{Cluster, Engine, Member, Role};
use kvpilot_sdk::defaults::stagger;

struct Component;

impl plugin::Guest for Component {
    fn info() -> PluginInfo {
        let info = stagger::info();
        PluginInfo {
            name: info.name,
            version: info.version,
            description: info.description,
        }
    }

    fn validate_config(config: String) -> Result<(), String> {
        stagger::validate_config(&config)
    }
}

impl snapshot_schedule::Guest for Component {
    fn schedule(request: Request) -> Result<Vec<MemberSchedule>, String> {
        let request = kvpilot_sdk::ScheduleRequest {
            mode: match request.mode {
                Mode::All => kvpilot_sdk::SnapshotMode::All,
                Mode::PrimaryOnly => kvpilot_sdk::SnapshotMode::PrimaryOnly,
                Mode::ReplicasOnly => kvpilot_sdk::SnapshotMode::ReplicasOnly,
            },
            cluster: cluster(request.cluster),
            schedule: request.schedule,
            stagger_minutes: request.stagger_minutes,
            members: request.members.into_iter().map(member).collect(),
            config: request.config,
        };
        let schedules = stagger::schedule(&request)?;
        Ok(schedules
            .into_iter()
            .map(|s| MemberSchedule {
                member: s.member,
                cron: s.cron,
            })
            .collect())
    }
}

fn member(m: Member) -> kvpilot_sdk::Member {
    kvpilot_sdk::Member {
        name: m.name,
        shard: m.shard,
        ordinal: m.ordinal,
        role: match m.role {
            Role::Primary => kvpilot_sdk::Role::Primary,
            Role::Replica => kvpilot_sdk::Role::Replica,
            Role::Unknown => kvpilot_sdk::Role::Unknown,
        },
        ready: m.ready,
        on_desired_revision: m.on_desired_revision,
        link_up: m.link_up,
        syncing: m.syncing,
        offset: m.offset,
        lag_bytes: m.lag_bytes,
        keys: m.keys,
        zone: m.zone,
        node: m.node,
    }
}

fn cluster(c: Cluster) -> kvpilot_sdk::Cluster {
    kvpilot_sdk::Cluster {
        name: c.name,
        namespace: c.namespace,
        engine: match c.engine {
            Engine::Valkey => kvpilot_sdk::Engine::Valkey,
            Engine::Redis => kvpilot_sdk::Engine::Redis,
            Engine::Dragonfly => kvpilot_sdk::Engine::Dragonfly,
        },
        engine_version: c.engine_version,
        shards: c.shards,
        replicas_per_shard: c.replicas_per_shard,
    }
}

export!(Component);
