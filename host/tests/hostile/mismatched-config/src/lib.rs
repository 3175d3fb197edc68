//! Exports `kvpilot:policy/plugin@0.1.0` with a `validate-config` that takes a `u32`, and a
//! well-formed rollout-order hook. The host must refuse it at load, naming `validate-config`.

wit_bindgen::generate!({
    world: "rollout-planner",
    path: "wit",
});

use exports::kvpilot::policy::plugin;
use exports::kvpilot::policy::rollout_order::{self, Request, Step};

struct Component;

impl plugin::Guest for Component {
    fn info() -> plugin::PluginInfo {
        plugin::PluginInfo {
            name: "hostile-mismatched-config".into(),
            version: "0.1.0".into(),
            description: "Exports validate-config with another signature.".into(),
        }
    }

    fn validate_config(_config: u32) -> Result<(), String> {
        Ok(())
    }
}

impl rollout_order::Guest for Component {
    fn next(_request: Request) -> Result<Step, String> {
        Ok(Step::Done)
    }
}

export!(Component);
