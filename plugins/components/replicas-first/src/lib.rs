//! `replicas-first` as a WebAssembly component: converts the WIT records to `kvpilot-sdk`
//! types and calls [`kvpilot_sdk::defaults::replicas_first`].

#![no_std]

wit_bindgen::generate!({
    world: "rollout-planner",
    path: "../../../wit/0.1.0",
});

use alloc::string::String;
use exports::kvpilot::policy::plugin::{self, PluginInfo};
use exports::kvpilot::policy::rollout_order::{self, Handover, Request, Step};
use kvpilot_sdk::defaults::replicas_first;

// No std, hence no WASI imports; every call runs in a fresh instance, so an arena that never
// frees is the cheapest allocator.
kvpilot_sdk::no_std_guest!();

struct Component;

impl plugin::Guest for Component {
    fn info() -> PluginInfo {
        plugin_info(replicas_first::info())
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

kvpilot_sdk::guest_records!();

export!(Component);
