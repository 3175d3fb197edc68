//! Exports `kvpilot:policy/replica-selection@0.1.0` with a `select` that takes a string: the
//! right names, the wrong shape. The host must refuse it at load, naming the hook.

wit_bindgen::generate!({
    world: "replica-selector",
    path: "wit",
});

use exports::kvpilot::policy::plugin;
use exports::kvpilot::policy::replica_selection;

struct Component;

impl plugin::Guest for Component {
    fn info() -> plugin::PluginInfo {
        plugin::PluginInfo {
            name: "hostile-mismatched".into(),
            version: "0.1.0".into(),
            description: "Exports replica-selection@0.1.0 with another signature.".into(),
        }
    }

    fn validate_config(_config: String) -> Result<(), String> {
        Ok(())
    }
}

impl replica_selection::Guest for Component {
    fn select(request: String) -> Result<String, String> {
        Ok(request)
    }
}

export!(Component);
