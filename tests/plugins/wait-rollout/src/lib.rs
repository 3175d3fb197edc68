//! A rollout-order plugin that always answers `wait`, with the reason from its config
//! (`{"reason": "..."}`): the end-to-end tests check that it blocks a rollout and that the
//! reason reaches status. With `{"restart": "..."}` it answers a restart of that member
//! instead, whatever it is called (a name that is no member makes an invalid answer).

wit_bindgen::generate!({
    world: "rollout-planner",
    path: "../../../wit/0.1.0",
});

use exports::kvpilot::policy::plugin::{self, PluginInfo};
use exports::kvpilot::policy::rollout_order::{self, Request, Step};

struct Component;

/// The answer the config asks for, or a message naming what is wrong.
fn answer(config: &str) -> Result<Step, String> {
    let value: serde_json::Value =
        serde_json::from_str(config).map_err(|e| format!("config: {e}"))?;
    if let Some(member) = value.get("restart").and_then(|r| r.as_str()) {
        return Ok(Step::Restart(member.to_string()));
    }
    value
        .get("reason")
        .and_then(|r| r.as_str())
        .map(|r| Step::Wait(r.to_string()))
        .ok_or_else(|| "reason (or restart): a string is required".to_string())
}

impl plugin::Guest for Component {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "e2e-wait-rollout".into(),
            version: "0.1.0".into(),
            description: "Always answers wait, with the reason from its config.".into(),
        }
    }

    fn validate_config(config: String) -> Result<(), String> {
        answer(&config).map(drop)
    }
}

impl rollout_order::Guest for Component {
    fn next(request: Request) -> Result<Step, String> {
        answer(&request.config)
    }
}

export!(Component);
