//! Tries to read a host file named in its config (the sandbox grants no files). With config `{}` it answers correctly: it promotes the first candidate.

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
            name: "hostile-fs-read".into(),
            version: "0.1.0".into(),
            description:
                "Tries to read a host file named in its config (the sandbox grants no files)."
                    .into(),
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

fn misbehave(request: &Request) -> Result<Decision, String> {
    // Config: `{"mode":"hostile","path":"/some/file"}`; a tiny hand parser keeps the crate small.
    let path = request
        .config
        .split("\"path\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("/etc/passwd");
    match std::fs::read_to_string(path) {
        // Leaking the contents through a valid answer is exactly what the sandbox must prevent.
        Ok(contents) => Ok(Decision::Wait(contents)),
        Err(e) => Err(format!("cannot read {path}: {e}")),
    }
}

export!(Component);
