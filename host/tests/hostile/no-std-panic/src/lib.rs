//! A `#![no_std]` plugin on `kvpilot_sdk::no_std_guest!()`, as a policy author would write one:
//! with config `{}` it promotes the first candidate; with the hostile config it panics, which
//! without std (and so without stderr) can only reach the host as a trap.

#![no_std]

wit_bindgen::generate!({
    world: "replica-selector",
    path: "../../../../wit/0.1.0",
});

use alloc::string::String;
use exports::kvpilot::policy::plugin;
use exports::kvpilot::policy::replica_selection::{self, Decision, Request};

kvpilot_sdk::no_std_guest!();

struct Component;

impl plugin::Guest for Component {
    fn info() -> plugin::PluginInfo {
        plugin::PluginInfo {
            name: "hostile-no-std-panic".into(),
            version: "0.1.0".into(),
            description: "A no_std plugin that panics on purpose.".into(),
        }
    }

    fn validate_config(_config: String) -> Result<(), String> {
        Ok(())
    }
}

impl replica_selection::Guest for Component {
    fn select(request: Request) -> Result<Decision, String> {
        if request.config.contains("hostile") {
            panic!("no_std plugin panicked on purpose");
        }
        match request.candidates.first() {
            Some(first) => Ok(Decision::Promote(first.name.clone())),
            None => Ok(Decision::Wait("no candidates".into())),
        }
    }
}

export!(Component);
