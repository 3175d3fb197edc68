//! Says too much: an oversized info(), config rejection and error (the host must bound them). With config `{}` it answers correctly: it promotes the first candidate.

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
            name: format!("hostile-verbose\u{1b}[31m{}", "n".repeat(HUGE)),
            version: "0.1.0\nsecond line".into(),
            description: "d".repeat(HUGE),
        }
    }

    fn validate_config(config: String) -> Result<(), String> {
        if config.len() > 2 {
            return Err(format!("config rejected: {}", "r".repeat(HUGE)));
        }
        Ok(())
    }
}

impl replica_selection::Guest for Component {
    fn select(request: Request) -> Result<Decision, String> {
        if request.config.len() > 2 {
            return misbehave(&request);
        }
        match request.candidates.first() {
            Some(first) => Ok(Decision::Promote(first.name.clone())),
            None => Ok(Decision::Wait("no candidates".into())),
        }
    }
}

/// Far more than any status message should carry.
const HUGE: usize = 1 << 20;

/// Under the answer bound (1 MiB), far over a status message.
fn misbehave(_request: &Request) -> Result<Decision, String> {
    Err(format!("error: {}", "e".repeat(HUGE / 10)))
}

export!(Component);
