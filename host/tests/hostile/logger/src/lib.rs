//! Logs to stderr with `eprintln!`: two lines (one with a terminal escape) then, with config
//! `{}`, answers correctly (it promotes the first candidate); with `{"mode":"hostile"}` it
//! panics after its lines; with `{"mode":"flood"}` it writes 100 numbered lines and answers.

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
            name: "hostile-logger".into(),
            version: "0.1.0".into(),
            description: "Logs a few lines to stderr, then answers, panics or floods.".into(),
        }
    }

    fn validate_config(_config: String) -> Result<(), String> {
        Ok(())
    }
}

impl replica_selection::Guest for Component {
    fn select(request: Request) -> Result<Decision, String> {
        eprintln!(
            "deciding for {} with {} candidates",
            request.cluster.name,
            request.candidates.len()
        );
        eprintln!("\u{1b}[2Jcleared?");
        if request.config.contains("flood") {
            for i in 0..100 {
                eprintln!("flood line {i}");
            }
        }
        if request.config.contains("hostile") {
            panic!("logger plugin panicked after its lines");
        }
        match request.candidates.first() {
            Some(first) => Ok(Decision::Promote(first.name.clone())),
            None => Ok(Decision::Wait("no candidates".into())),
        }
    }
}

export!(Component);
