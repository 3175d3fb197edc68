//! Conversions between the records wit-bindgen generates inside a plugin component and the
//! sdk's records. wit-bindgen generates its types in each component crate, so the functions
//! are written into the calling crate by a macro instead of living here.

/// Writes `member`, `cluster` and `plugin_info` into a component crate that called
/// `wit_bindgen::generate!` on one of the `kvpilot:policy@0.1.0` worlds (at its crate root).
// `crate::` deliberately names the calling component's crate: that is where wit-bindgen put
// the generated records.
#[allow(clippy::crate_in_macro_def)]
#[macro_export]
macro_rules! guest_records {
    () => {
        fn member(m: crate::kvpilot::policy::types::Member) -> $crate::Member {
            use crate::kvpilot::policy::types::Role;
            $crate::Member {
                name: m.name,
                shard: m.shard,
                ordinal: m.ordinal,
                role: match m.role {
                    Role::Primary => $crate::Role::Primary,
                    Role::Replica => $crate::Role::Replica,
                    Role::Unknown => $crate::Role::Unknown,
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

        fn cluster(c: crate::kvpilot::policy::types::Cluster) -> $crate::Cluster {
            use crate::kvpilot::policy::types::Engine;
            $crate::Cluster {
                name: c.name,
                namespace: c.namespace,
                engine: match c.engine {
                    Engine::Valkey => $crate::Engine::Valkey,
                    Engine::Redis => $crate::Engine::Redis,
                    Engine::Dragonfly => $crate::Engine::Dragonfly,
                },
                engine_version: c.engine_version,
                shards: c.shards,
                replicas_per_shard: c.replicas_per_shard,
            }
        }

        fn plugin_info(
            info: $crate::PluginInfo,
        ) -> crate::exports::kvpilot::policy::plugin::PluginInfo {
            crate::exports::kvpilot::policy::plugin::PluginInfo {
                name: info.name,
                version: info.version,
                description: info.description,
            }
        }
    };
}
