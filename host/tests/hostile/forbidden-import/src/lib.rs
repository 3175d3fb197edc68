//! Opens a TCP connection, an import the host does not provide (refused at load). With config `{}` it answers correctly: it promotes the first candidate.

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
            name: "hostile-forbidden-import".into(),
            version: "0.1.0".into(),
            description:
                "Opens a TCP connection, an import the host does not provide (refused at load)."
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

fn misbehave(_request: &Request) -> Result<Decision, String> {
    // Sockets stay refused: a plugin must not reach the network (e.g. to leak the cluster
    // layout it is shown).
    match std::net::TcpStream::connect("127.0.0.1:6379") {
        Ok(_) => Ok(Decision::Wait("connected".into())),
        Err(e) => Err(format!("cannot connect: {e}")),
    }
}

export!(Component);
