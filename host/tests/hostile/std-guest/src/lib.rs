//! Reads both clocks and builds a HashMap (the host grants them, frozen and fixed). With config `{}` it answers correctly: it promotes the first candidate.

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
            name: "hostile-std-guest".into(),
            version: "0.1.0".into(),
            description:
                "Reads both clocks and builds a HashMap (the host grants them, frozen and fixed)."
                    .into(),
        }
    }

    fn validate_config(_config: String) -> Result<(), String> {
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

use std::collections::HashMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Waits, saying what the clocks and the hasher showed: the host freezes both clocks at 0 and
/// seeds randomness with a fixed stream, so every call answers the same text.
fn misbehave(request: &Request) -> Result<Decision, String> {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut by_name: HashMap<String, u64> = HashMap::new();
    for m in &request.candidates {
        by_name.insert(m.name.clone(), m.offset);
    }
    // Enough keys that their iteration order, which follows the hasher's random keys, would
    // differ between calls if the seed did.
    for i in 0..16 {
        by_name.insert(format!("k{i}"), i);
    }
    let order: Vec<&str> = by_name.keys().map(String::as_str).collect();
    Ok(Decision::Wait(format!(
        "wall {} ns; monotonic {} ns; map order {}",
        wall.as_nanos(),
        started.elapsed().as_nanos(),
        order.join(",")
    )))
}

export!(Component);
