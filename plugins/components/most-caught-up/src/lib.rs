//! `most-caught-up` as a WebAssembly component: converts the WIT records to `kvpilot-sdk`
//! types and calls [`kvpilot_sdk::defaults::most_caught_up`].

#![no_std]

wit_bindgen::generate!({
    world: "replica-selector",
    path: "../../../wit/0.1.0",
});

use alloc::string::String;
use exports::kvpilot::policy::plugin::{self, PluginInfo};
use exports::kvpilot::policy::replica_selection::{self, Decision, Reason, Request};
use kvpilot_sdk::defaults::most_caught_up;

// No std, hence no WASI imports; every call runs in a fresh instance, so an arena that never
// frees is the cheapest allocator.
kvpilot_sdk::no_std_guest!();

struct Component;

impl plugin::Guest for Component {
    fn info() -> PluginInfo {
        plugin_info(most_caught_up::info())
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

kvpilot_sdk::guest_records!();

export!(Component);
