//! Allocates without bound (the memory cap must stop it). With config `{}` it answers correctly: it promotes the first candidate.

wit_bindgen::generate!({
    world: "replica-selector",
    path: "../../../../wit/0.1.0",
});

use exports::kvpilot::policy::plugin;
use exports::kvpilot::policy::replica_selection::{self, Decision, Request};

struct Component;

impl plugin::Guest for Component {
    fn info() -> plugin::PluginInfo {
        plugin::PluginInfo {
            name: "hostile-alloc".into(),
            version: "0.1.0".into(),
            description: "Allocates without bound (the memory cap must stop it).".into(),
        }
    }

    fn validate_config(_config: String) -> Result<(), String> {
        Ok(())
    }
}

impl replica_selection::Guest for Component {
    fn select(request: Request) -> Result<Decision, String> {
        if request.config.contains("hostile") {
            return misbehave(&request);
        }
        match request.candidates.first() {
            Some(first) => Ok(Decision::Promote(first.name.clone())),
            None => Ok(Decision::Wait("no candidates".into())),
        }
    }
}

fn misbehave(_request: &Request) -> Result<Decision, String> {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        // Zeroed chunks come straight from `memory.grow` (already zero), so the guest grows
        // as fast as it can; `black_box` keeps them from being optimised away.
        hoard.push(std::hint::black_box(vec![0u8; 4 << 20]));
    }
}

export!(Component);
