//! A rollout-order plugin that loads and validates fine but fails every call, as its config
//! says: `{"mode": "error", "message": "..."}` returns that error, `{"mode": "trap",
//! "message": "..."}` panics with it (a trap). The end-to-end tests check `failurePolicy`.

wit_bindgen::generate!({
    world: "rollout-planner",
    path: "../../../wit/0.1.0",
});

use exports::kvpilot::policy::plugin::{self, PluginInfo};
use exports::kvpilot::policy::rollout_order::{self, Request, Step};

struct Component;

/// `(mode, message)` from the config.
fn settings(config: &str) -> Result<(String, String), String> {
    let value: serde_json::Value =
        serde_json::from_str(config).map_err(|e| format!("config: {e}"))?;
    let field = |name: &str| {
        value
            .get(name)
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("{name}: a string is required"))
    };
    let mode = field("mode")?;
    if mode != "error" && mode != "trap" {
        return Err(format!("mode: expected error or trap, found {mode:?}"));
    }
    Ok((mode, field("message")?))
}

impl plugin::Guest for Component {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "e2e-failing-rollout".into(),
            version: "0.1.0".into(),
            description: "Fails every call with an error or a trap.".into(),
        }
    }

    fn validate_config(config: String) -> Result<(), String> {
        settings(&config).map(drop)
    }
}

impl rollout_order::Guest for Component {
    fn next(request: Request) -> Result<Step, String> {
        let (mode, message) = settings(&request.config)?;
        if mode == "trap" {
            panic!("{message}");
        }
        Err(message)
    }
}

export!(Component);
