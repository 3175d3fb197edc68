//! The policy runtime: one engine, one linker (the granted WASI interfaces), the compile
//! cache, and loading plugins from bytes, files or builtins.

use super::cache::Cache;
use super::contract::v0_1_0::exports::kvpilot::policy::plugin as plugin_if;
use super::contract::{PolicyExport, policy_export};
use super::plugin::{Compiled, Exports, Limits, Plugin};
use super::sandbox::{self, Sandbox};
use super::{Hook, PolicyError, call, source};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use wasmtime::Engine;
use wasmtime::component::{Component, ComponentExportIndex, Linker};

/// Loads and caches plugins. Cheap to clone; [`PolicyRuntime::global`] is the process-wide one.
#[derive(Clone)]
pub struct PolicyRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<Sandbox>,
    cache: Cache,
}

/// The contract version of the generated bindings in `contract::v0_1_0`.
pub(crate) const BINDINGS_VERSION: &str = "0.1.0";

/// The label used for errors that concern the runtime itself rather than a plugin.
const RUNTIME: &str = "<runtime>";

impl PolicyRuntime {
    /// A runtime with its own engine, epoch ticker and cache.
    pub fn new() -> Result<PolicyRuntime, PolicyError> {
        let load_error = |message: String| PolicyError::Load {
            plugin: RUNTIME.to_string(),
            message,
        };
        let engine = super::engine::new_engine().map_err(load_error)?;
        let mut linker = Linker::new(&engine);
        sandbox::grant(&mut linker)
            .map_err(|e| load_error(format!("cannot set up the sandbox: {e}")))?;
        Ok(PolicyRuntime {
            inner: Arc::new(Inner {
                engine,
                linker,
                cache: Cache::default(),
            }),
        })
    }

    /// The process-wide runtime (created on first use).
    pub fn global() -> Result<PolicyRuntime, PolicyError> {
        static GLOBAL: OnceLock<Result<PolicyRuntime, String>> = OnceLock::new();
        GLOBAL
            .get_or_init(|| PolicyRuntime::new().map_err(|e| e.to_string()))
            .clone()
            .map_err(|message| PolicyError::Load {
                plugin: RUNTIME.to_string(),
                message,
            })
    }

    /// Number of distinct components compiled so far.
    pub fn cached_components(&self) -> usize {
        self.inner.cache.len()
    }

    /// Loads `builtin:NAME` or a `.wasm` file path.
    pub async fn load(&self, source: &str) -> Result<Plugin, PolicyError> {
        match source::parse(source) {
            source::Source::Builtin(name) => self.load_builtin(name).await,
            source::Source::File(path) => self.load_file(Path::new(path)).await,
        }
    }

    /// Loads a builtin by its short name (`most-caught-up`) or `builtin:NAME`.
    pub async fn load_builtin(&self, name: &str) -> Result<Plugin, PolicyError> {
        let name = name.strip_prefix(source::BUILTIN_PREFIX).unwrap_or(name);
        let label = format!("{}{name}", source::BUILTIN_PREFIX);
        let bytes = source::builtin_bytes(name).ok_or_else(|| PolicyError::Load {
            plugin: label.clone(),
            message: format!(
                "no such builtin (builtins: {})",
                source::builtin_names().join(", ")
            ),
        })?;
        self.load_bytes(&label, bytes).await
    }

    /// Loads a component from a file; the plugin is named by the path.
    pub async fn load_file(&self, path: &Path) -> Result<Plugin, PolicyError> {
        let label = path.display().to_string();
        let bytes = tokio::fs::read(path).await.map_err(|e| PolicyError::Load {
            plugin: label.clone(),
            message: format!("cannot read the file: {e}"),
        })?;
        self.load_bytes(&label, &bytes).await
    }

    /// Loads a component from bytes, compiling it unless the same bytes were compiled before.
    /// The plugin runs under the default [`Limits`]; see [`Plugin::with_limits`].
    pub async fn load_bytes(&self, name: &str, bytes: &[u8]) -> Result<Plugin, PolicyError> {
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        let compiled = match self.inner.cache.get(&digest) {
            Some(compiled) => compiled,
            None => {
                let compiled = self.compile(name, bytes.to_vec(), digest).await?;
                self.inner.cache.insert(Arc::new(compiled))
            }
        };
        Ok(Plugin {
            name: name.to_string(),
            compiled,
            limits: Limits::default(),
            engine: self.inner.engine.clone(),
        })
    }

    async fn compile(
        &self,
        name: &str,
        bytes: Vec<u8>,
        sha256: [u8; 32],
    ) -> Result<Compiled, PolicyError> {
        // wasmtime's messages may quote names from the component: cleaned (rule 10).
        let load_error = |message: String| PolicyError::Load {
            plugin: name.to_string(),
            message: super::text::clean(&message, super::text::MESSAGE_BYTES),
        };
        if let Some(problem) = not_a_component(&bytes) {
            return Err(load_error(problem.to_string()));
        }
        let engine = self.inner.engine.clone();
        // Compilation is CPU-bound (tens to hundreds of ms): keep it off the async workers.
        let component = tokio::task::spawn_blocking(move || Component::new(&engine, &bytes))
            .await
            .map_err(|e| load_error(format!("compilation did not finish: {e}")))?
            .map_err(|e| load_error(format!("not a valid component: {e:#}")))?;
        let engine = &self.inner.engine;

        let hooks = exported_hooks(engine, &component).map_err(load_error)?;
        sandbox::check_imports(engine, &component).map_err(|import| {
            PolicyError::ForbiddenImport {
                plugin: name.to_string(),
                import,
            }
        })?;
        let imports = sandbox::import_names(engine, &component);
        let pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| load_error(format!("cannot link: {e:#}")))?;
        let index_error = |e: wasmtime::Error| load_error(format!("bad export: {e:#}"));
        // The hook functions of the contract version the host's bindings (and its borrowed
        // request views) are generated for.
        let hook_func =
            |hook: Hook, func: &str| -> Result<Option<ComponentExportIndex>, PolicyError> {
                if !hooks.contains(&hook) {
                    return Ok(None);
                }
                let iface = format!(
                    "{}/{}@{BINDINGS_VERSION}",
                    super::contract::PACKAGE,
                    hook.as_str()
                );
                let component = pre.component();
                component
                    .get_export_index(None, iface.as_str())
                    .and_then(|i| component.get_export_index(Some(&i), func))
                    .map(Some)
                    .ok_or_else(|| {
                        load_error(format!("bad export: `{iface}` has no function `{func}`"))
                    })
            };
        let exports = Exports {
            plugin: plugin_if::GuestIndices::new(&pre).map_err(index_error)?,
            replica_selection: hook_func(Hook::ReplicaSelection, "select")?,
            snapshot_schedule: hook_func(Hook::SnapshotSchedule, "schedule")?,
            rollout_order: hook_func(Hook::RolloutOrder, "next")?,
        };
        let info = call::inspect(engine, &pre, &exports)
            .await
            .map_err(load_error)?;
        Ok(Compiled {
            sha256,
            pre,
            exports,
            imports,
            hooks,
            info,
        })
    }
}

/// A clear message for bytes that are not a component at all.
fn not_a_component(bytes: &[u8]) -> Option<&'static str> {
    const MAGIC: &[u8] = b"\0asm";
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Some("not a WebAssembly file (no `\\0asm` header)");
    }
    // Core modules have layer 0 (version 1); components have layer 1.
    if bytes[6..8] == [0, 0] {
        return Some(
            "a core WebAssembly module, not a component: build for wasm32-wasip2 \
             (or wrap it with `wasm-tools component new`)",
        );
    }
    None
}

/// The hooks a component exports; requires `kvpilot:policy/plugin` and at least one hook.
fn exported_hooks(engine: &Engine, component: &Component) -> Result<Vec<Hook>, String> {
    let mut plugin = false;
    let mut hooks = Vec::new();
    for (name, _) in component.component_type().exports(engine) {
        match policy_export(name)? {
            Some(PolicyExport::Plugin) => plugin = true,
            Some(PolicyExport::Hook(hook)) => hooks.push(hook),
            None => {}
        }
    }
    if !plugin {
        return Err(format!(
            "does not export `{}/plugin@{}`",
            super::contract::PACKAGE,
            super::contract::CONTRACT_VERSIONS.join("|")
        ));
    }
    if hooks.is_empty() {
        return Err(format!(
            "exports no hook interface (one of {})",
            Hook::ALL.map(Hook::as_str).join(", ")
        ));
    }
    hooks.sort();
    Ok(hooks)
}
