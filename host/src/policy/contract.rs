//! The WIT contract as the host sees it: the generated bindings and the recognition of
//! interface names (`namespace:package/interface@version`).
//!
//! Bindings are generated once, for the `all-hooks` world, so every hook shares one set of
//! record types; a plugin that exports only some hooks is handled with per-interface
//! `GuestIndices` (see `plugin.rs`). A future `kvpilot:policy@0.2.0` gets its own module here
//! and its own entry in [`CONTRACT_VERSIONS`]; plugins built against 0.1.0 keep loading.

use super::Hook;

/// Bindings for `kvpilot:policy@0.1.0`.
pub mod v0_1_0 {
    wasmtime::component::bindgen!({
        world: "all-hooks",
        path: "../wit/0.1.0",
        exports: { default: async },
    });
}

/// The policy package name, without version.
pub const PACKAGE: &str = "kvpilot:policy";

/// Contract versions this host can call.
pub const CONTRACT_VERSIONS: &[&str] = &["0.1.0"];

/// A parsed component-model interface name such as `wasi:cli/stderr@0.2.6`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceName<'a> {
    /// `namespace:package`, e.g. `wasi:cli`.
    pub package: &'a str,
    /// The interface, e.g. `stderr`.
    pub interface: &'a str,
    /// The version, if the name carries one.
    pub version: Option<&'a str>,
}

impl<'a> InterfaceName<'a> {
    /// Parses `ns:pkg/iface[@version]`; `None` for names of another shape (plain functions).
    pub fn parse(name: &'a str) -> Option<Self> {
        let (path, version) = match name.split_once('@') {
            Some((path, version)) => (path, Some(version)),
            None => (name, None),
        };
        let (package, interface) = path.split_once('/')?;
        if !package.contains(':') || interface.is_empty() {
            return None;
        }
        Some(InterfaceName {
            package,
            interface,
            version,
        })
    }
}

/// What an exported interface name means to the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyExport {
    /// `kvpilot:policy/plugin@VERSION`.
    Plugin,
    /// One of the hook interfaces.
    Hook(Hook),
}

/// Recognises a `kvpilot:policy` export. `Ok(None)`: not a policy interface (ignored);
/// `Err`: a policy interface of a contract version this host does not know.
pub fn policy_export(name: &str) -> Result<Option<PolicyExport>, String> {
    let Some(parsed) = InterfaceName::parse(name) else {
        return Ok(None);
    };
    if parsed.package != PACKAGE {
        return Ok(None);
    }
    let version = parsed.version.unwrap_or("");
    if !CONTRACT_VERSIONS.contains(&version) {
        return Err(format!(
            "exports `{name}`, built against {PACKAGE}@{version}; this host knows {}",
            CONTRACT_VERSIONS
                .iter()
                .map(|v| format!("{PACKAGE}@{v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if parsed.interface == "plugin" {
        return Ok(Some(PolicyExport::Plugin));
    }
    Ok(Hook::parse(parsed.interface).map(PolicyExport::Hook))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_interface_names() {
        let n = InterfaceName::parse("wasi:cli/stderr@0.2.6").unwrap();
        assert_eq!(
            (n.package, n.interface, n.version),
            ("wasi:cli", "stderr", Some("0.2.6"))
        );
        assert_eq!(InterfaceName::parse("run"), None);
        assert_eq!(
            InterfaceName::parse("a:b/c").unwrap().version,
            None,
            "a name without a version parses"
        );
    }

    #[test]
    fn recognises_policy_exports_by_package_and_version() {
        assert_eq!(
            policy_export("kvpilot:policy/plugin@0.1.0"),
            Ok(Some(PolicyExport::Plugin))
        );
        assert_eq!(
            policy_export("kvpilot:policy/rollout-order@0.1.0"),
            Ok(Some(PolicyExport::Hook(Hook::RolloutOrder)))
        );
        assert_eq!(policy_export("wasi:cli/run@0.2.0"), Ok(None));
        let err = policy_export("kvpilot:policy/plugin@0.2.0").unwrap_err();
        assert!(err.contains("0.2.0") && err.contains("0.1.0"), "{err}");
    }
}
