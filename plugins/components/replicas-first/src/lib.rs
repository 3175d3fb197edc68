//! `replicas-first` as a WebAssembly component: converts the WIT records to `kvpilot-sdk`
//! types and calls [`kvpilot_sdk::defaults::replicas_first`].

wit_bindgen::generate!({
    world: "rollout-planner",
    path: "../../../wit/0.1.0",
});

use exports::kvpilot::policy::plugin::{self, PluginInfo};
use exports::kvpilot::policy::rollout_order::{self, Handover, Request, Step};
use kvpilot::policy::types::{Cluster, Engine, Member, Role};
use kvpilot_sdk::defaults::replicas_first;

struct Component;

impl plugin::Guest for Component {
    fn info() -> PluginInfo {
        let info = replicas_first::info();
        PluginInfo {
            name: info.name,
            version: info.version,
            description: info.description,
        }
    }

    fn validate_config(config: String) -> Result<(), String> {
        replicas_first::validate_config(&config)
    }
}

impl rollout_order::Guest for Component {
    fn next(request: Request) -> Result<Step, String> {
        let request = kvpilot_sdk::RolloutRequest {
            cluster: cluster(request.cluster),
            members: request.members.into_iter().map(member).collect(),
            max_in_flight: request.max_in_flight,
            max_lag_bytes: request.max_lag_bytes,
            config: request.config,
        };
        Ok(match replicas_first::next(&request)? {
            kvpilot_sdk::Step::Restart(name) => Step::Restart(name),
            kvpilot_sdk::Step::Handover { from, to } => Step::Handover(Handover { from, to }),
            kvpilot_sdk::Step::Wait(reason) => Step::Wait(reason),
            kvpilot_sdk::Step::Done => Step::Done,
        })
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
