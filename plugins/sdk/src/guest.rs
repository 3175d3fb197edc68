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

/// The runtime of a `#![no_std]` plugin component: the [`arena`](crate::arena) as its global
/// allocator and as its `cabi_realloc` (std would export one), and a panic handler that traps.
///
/// Without std a component imports no WASI interface, so the host has nothing to link when it
/// instantiates it: about a quarter less per call at 3 members (`kvpilot policy bench`). The
/// price: a panic's message cannot reach the host (there is no stderr to write it to), so it
/// is reported as a bare trap (`unreachable`). The default plugins use it; a plugin that wants
/// its panic messages in the operator's errors stays a std component.
#[macro_export]
macro_rules! no_std_guest {
    () => {
        extern crate alloc;

        // `memcmp`, `memcpy` and the like come from wasi-libc, as in a std build: they are
        // plain functions there, importing nothing.
        #[link(name = "c")]
        unsafe extern "C" {}

        #[global_allocator]
        static ALLOC: $crate::arena::Arena = $crate::arena::Arena;

        // SAFETY: the host calls it as the canonical ABI says (see `Arena::cabi_realloc`).
        #[unsafe(no_mangle)]
        unsafe extern "C" fn cabi_realloc(
            old_ptr: *mut u8,
            old_len: usize,
            align: usize,
            new_len: usize,
        ) -> *mut u8 {
            unsafe { $crate::arena::cabi_realloc(old_ptr, old_len, align, new_len) }
        }

        #[panic_handler]
        fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
            core::arch::wasm32::unreachable()
        }
    };
}
