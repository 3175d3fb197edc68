//! Writes a mebibyte to stderr, then answers or panics (the capture must not fail the call). With config `{}` it answers correctly: it promotes the first candidate.

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
            name: "hostile-noisy".into(),
            version: "0.1.0".into(),
            description: "Writes a mebibyte to stderr, then answers or panics (the capture must not fail the call).".into(),
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

/// The flood: 1 MiB of log lines.
const FLOOD_BYTES: usize = 1 << 20;

fn misbehave(request: &Request) -> Result<Decision, String> {
    use std::io::Write;
    // 4 KiB per write, the most one WASI `blocking-write-and-flush` takes: the fewest host
    // calls, so the flood fits the call's deadline even in a debug build of the host.
    let mut chunk = [b'n'; 4096];
    chunk[4095] = b'\n';
    let mut stderr = std::io::stderr();
    for _ in 0..FLOOD_BYTES / chunk.len() {
        stderr.write_all(&chunk).map_err(|e| e.to_string())?;
    }
    if request.config.contains("hostile") {
        panic!("noisy plugin panicked after {FLOOD_BYTES} bytes of stderr");
    }
    match request.candidates.first() {
        Some(first) => Ok(Decision::Promote(first.name.clone())),
        None => Ok(Decision::Wait("no candidates".into())),
    }
}

export!(Component);
