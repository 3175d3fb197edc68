//! `most-caught-up` as a WebAssembly component: converts the WIT records to `kvpilot-sdk`
//! types and calls [`kvpilot_sdk::defaults::most_caught_up`].

wit_bindgen::generate!({
    world: "replica-selector",
    path: "../../../wit/0.1.0",
});

use exports::kvpilot::policy::plugin::{self, PluginInfo};
use exports::kvpilot::policy::replica_selection::{self, Decision, Reason, Request};
use kvpilot::policy::types::{Cluster, Engine, Member, Role};
use kvpilot_sdk::defaults::most_caught_up;

struct Component;

impl plugin::Guest for Component {
    fn info() -> PluginInfo {
        let info = most_caught_up::info();
        PluginInfo {
            name: info.name,
            version: info.version,
            description: info.description,
        }
    }

    fn validate_config(config: String) -> Result<(), String> {
        most_caught_up::validate_config(&config)
    }
}

impl replica_selection::Guest for Component {
    fn select(request: Request) -> Result<Decision, String> {
        let request = kvpilot_sdk::SelectionRequest {
            reason: match request.reason {
                Reason::PlannedHandover => kvpilot_sdk::SelectionReason::PlannedHandover,
                Reason::PrimaryLost => kvpilot_sdk::SelectionReason::PrimaryLost,
                Reason::PrimaryEmpty => kvpilot_sdk::SelectionReason::PrimaryEmpty,
            },
            cluster: cluster(request.cluster),
            primary: request.primary.map(member),
            candidates: request.candidates.into_iter().map(member).collect(),
            config: request.config,
        };
        Ok(match most_caught_up::select(&request)? {
            kvpilot_sdk::Selection::Promote(name) => Decision::Promote(name),
            kvpilot_sdk::Selection::Wait(reason) => Decision::Wait(reason),
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
