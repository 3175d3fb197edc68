//! The policy runtime: one engine, one linker (the granted WASI interfaces), the compile
//! cache, and loading plugins from bytes, files or builtins.

use super::cache::{Cache, CacheLimits};
use super::contract::v0_1_0::exports::kvpilot::policy::plugin as plugin_if;
use super::contract::{PolicyExport, policy_export};
use super::memo::{Memo, MemoLimits, MemoStats};
use super::plugin::{Compiled, Exports, Limits, Plugin};
use super::sandbox::{self, Sandbox};
use super::{Hook, PolicyError, call, source};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use wasmtime::Engine;
use wasmtime::component::{Component, ComponentExportIndex, Linker};

/// What loading one plugin may take (docs/architecture.md, rule 11). The size is checked
/// before a file is read whole and before any other work; the preamble next; then the code
/// sections are read (not compiled) and a function body or code beyond the limits is refused;
/// only then is the component compiled, on a blocking thread, one function at a time (see
/// `engine.rs`), under a deadline. Cranelift's memory grows with the size of the function it
/// compiles, so the body limit is what bounds the memory of a compile. Measured in release on
/// the CI machine (`tests/policy_compile.rs`): a 1 MiB body compiles in 0.7-0.9 s with a
/// peak RSS of 160-250 MiB; a 3 MiB one would take 2.5-3.8 s and 460-720 MiB (more than the
/// operator's 512 MiB memory limit) and is refused in a few milliseconds instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadLimits {
    /// Largest component accepted, in bytes: files, ConfigMap keys and URL downloads.
    pub max_plugin_bytes: usize,
    /// Largest body of one function of any core module in the component.
    pub max_function_bytes: usize,
    /// Largest sum of all function bodies of all core modules.
    pub max_code_bytes: usize,
    /// Longest compile; a component not compiled by then is refused and not cached.
    pub compile_timeout: Duration,
    /// What the compile cache may hold (least recently used first out).
    pub cache: CacheLimits,
}

/// The default [`LoadLimits::max_plugin_bytes`].
pub const DEFAULT_MAX_PLUGIN_BYTES: usize = 16 << 20;

impl Default for LoadLimits {
    fn default() -> Self {
        LoadLimits {
            max_plugin_bytes: DEFAULT_MAX_PLUGIN_BYTES,
            // A release-built Rust plugin's largest functions are tens of KiB; a 1 MiB body
            // compiles in under a second (see above).
            max_function_bytes: 1 << 20,
            max_code_bytes: 8 << 20,
            compile_timeout: Duration::from_secs(30),
            cache: CacheLimits::default(),
        }
    }
}

/// Loads and caches plugins. Cheap to clone; [`PolicyRuntime::global`] is the process-wide one.
#[derive(Clone)]
pub struct PolicyRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<Sandbox>,
    cache: Cache<Compiled>,
    /// Validated answers by component, limits and request (see `memo.rs`).
    memo: Arc<Memo>,
    limits: LoadLimits,
    /// One compile at a time: a compile that outlives its deadline keeps running on its
    /// thread (cranelift cannot be interrupted), and must not be joined by others.
    compiling: Arc<tokio::sync::Semaphore>,
}

/// The contract version of the generated bindings in `contract::v0_1_0`.
pub(crate) const BINDINGS_VERSION: &str = "0.1.0";

/// The label used for errors that concern the runtime itself rather than a plugin.
const RUNTIME: &str = "<runtime>";

impl PolicyRuntime {
    /// A runtime with its own engine, epoch ticker and cache, under the default
    /// [`LoadLimits`].
    pub fn new() -> Result<PolicyRuntime, PolicyError> {
        Self::with_limits(LoadLimits::default())
    }

    /// A runtime with its own engine, epoch ticker and cache, loading under `limits`.
    pub fn with_limits(limits: LoadLimits) -> Result<PolicyRuntime, PolicyError> {
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
                cache: Cache::new(limits.cache),
                memo: Arc::new(Memo::new(MemoLimits::default())),
                limits,
                compiling: Arc::new(tokio::sync::Semaphore::new(1)),
            }),
        })
    }

    /// The process-wide runtime (created on first use, under the default [`LoadLimits`]
    /// unless [`PolicyRuntime::global_with`] came first).
    pub fn global() -> Result<PolicyRuntime, PolicyError> {
        Self::global_with(LoadLimits::default())
    }

    /// The process-wide runtime, created under `limits` if this is the first use.
    pub fn global_with(limits: LoadLimits) -> Result<PolicyRuntime, PolicyError> {
        static GLOBAL: OnceLock<Result<PolicyRuntime, String>> = OnceLock::new();
        GLOBAL
            .get_or_init(|| PolicyRuntime::with_limits(limits).map_err(|e| e.to_string()))
            .clone()
            .map_err(|message| PolicyError::Load {
                plugin: RUNTIME.to_string(),
                message,
            })
    }

    /// The limits this runtime loads under.
    pub fn limits(&self) -> LoadLimits {
        self.inner.limits
    }

    /// The checks every component gets before anything else: its size, then its preamble.
    /// `Err` says why not.
    pub fn check_bytes(&self, bytes: &[u8]) -> Result<(), String> {
        check_size(bytes.len(), self.inner.limits.max_plugin_bytes)?;
        match not_a_component(bytes) {
            Some(problem) => Err(problem.to_string()),
            None => Ok(()),
        }
    }

    /// Number of compiled components in the cache.
    pub fn cached_components(&self) -> usize {
        self.inner.cache.len()
    }

    /// Bytes of compiled code in the cache.
    pub fn cached_bytes(&self) -> usize {
        self.inner.cache.bytes()
    }

    /// What the memo of validated answers holds, and its hits and misses so far.
    pub fn memo_stats(&self) -> MemoStats {
        self.inner.memo.stats()
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

    /// Loads a component from a file; the plugin is named by the path. Its size is checked
    /// before it is read, and its preamble before the rest is.
    pub async fn load_file(&self, path: &Path) -> Result<Plugin, PolicyError> {
        use tokio::io::AsyncReadExt;
        let label = path.display().to_string();
        let load_error = |message: String| PolicyError::Load {
            plugin: label.clone(),
            message,
        };
        let max = self.inner.limits.max_plugin_bytes;
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| load_error(format!("cannot read the file: {e}")))?;
        let size = file
            .metadata()
            .await
            .map_err(|e| load_error(format!("cannot read the file: {e}")))?
            .len();
        check_size(usize::try_from(size).unwrap_or(usize::MAX), max).map_err(load_error)?;
        let mut preamble = Vec::with_capacity(8);
        (&mut file)
            .take(8)
            .read_to_end(&mut preamble)
            .await
            .map_err(|e| load_error(format!("cannot read the file: {e}")))?;
        if let Some(problem) = not_a_component(&preamble) {
            return Err(load_error(problem.to_string()));
        }
        // The file may have grown since: never read more than the limit allows.
        let mut bytes = preamble;
        file.take(u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1))
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| load_error(format!("cannot read the file: {e}")))?;
        self.load_bytes(&label, &bytes).await
    }

    /// Loads a component from bytes, compiling it unless the same bytes were compiled before.
    /// The plugin runs under the default [`Limits`]; see [`Plugin::with_limits`].
    pub async fn load_bytes(&self, name: &str, bytes: &[u8]) -> Result<Plugin, PolicyError> {
        let load_error = |message: String| PolicyError::Load {
            plugin: name.to_string(),
            message,
        };
        // The cheap checks first: the size, then the preamble.
        self.check_bytes(bytes).map_err(load_error)?;
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        let compiled = match self.inner.cache.get(&digest) {
            Some(compiled) => compiled,
            None => {
                let compiled = self.compile(name, bytes.to_vec(), digest).await?;
                let code_bytes = compiled.code_bytes;
                self.inner
                    .cache
                    .insert(digest, Arc::new(compiled), code_bytes)
            }
        };
        Ok(Plugin {
            name: name.to_string(),
            compiled,
            limits: Limits::default(),
            engine: self.inner.engine.clone(),
            memo: Some(self.inner.memo.clone()),
            log: Default::default(),
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
        let limits = self.inner.limits;
        check_code(&bytes, &limits).map_err(load_error)?;
        let engine = self.inner.engine.clone();
        let timeout_ms = limits.compile_timeout.as_millis();
        let compiling = self.inner.compiling.clone();
        // Compilation is CPU-bound (tens to hundreds of ms for a plugin; seconds for a huge
        // function): off the async workers, one at a time, under a deadline. The permit goes
        // with the compile, so a compile that outlives its deadline still holds it.
        let compile = async move {
            let permit = compiling
                .acquire_owned()
                .await
                .map_err(|e| format!("compilation did not start: {e}"))?;
            tokio::task::spawn_blocking(move || {
                let compiled = Component::new(&engine, &bytes);
                drop(permit);
                compiled
            })
            .await
            .map_err(|e| format!("compilation did not finish: {e}"))?
            .map_err(|e| format!("not a valid component: {e:#}"))
        };
        let component = tokio::time::timeout(limits.compile_timeout, compile)
            .await
            .map_err(|_| {
                load_error(format!(
                    "did not compile within {timeout_ms} ms (the limit); refused"
                ))
            })?
            .map_err(load_error)?;
        let engine = &self.inner.engine;
        let image = component.image_range();
        let code_bytes = (image.end as usize).saturating_sub(image.start as usize);

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
            code_bytes,
            pre,
            exports,
            imports,
            hooks,
            info,
            instantiations: Default::default(),
            log_limit: Default::default(),
        })
    }
}

/// Refuses `size` bytes beyond `max`.
fn check_size(size: usize, max: usize) -> Result<(), String> {
    if size > max {
        return Err(format!(
            "the component is {size} bytes; the limit is {max} bytes"
        ));
    }
    Ok(())
}

/// Reads the code sections of every core module in the component (without compiling) and
/// refuses a function body or a total of code beyond `limits`. The parse stops at the first
/// refusal; malformed bytes are left to the compiler, which says more about them.
fn check_code(bytes: &[u8], limits: &LoadLimits) -> Result<(), String> {
    use wasmparser::{Encoding, Parser, Payload};
    let mut module: Option<usize> = None;
    let mut function = 0usize;
    let mut total = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        let Ok(payload) = payload else {
            return Ok(());
        };
        match payload {
            Payload::Version {
                encoding: Encoding::Module,
                ..
            } => {
                module = Some(module.map_or(0, |m| m + 1));
                function = 0;
            }
            Payload::CodeSectionEntry(body) => {
                let size = body.range().len();
                if size > limits.max_function_bytes {
                    return Err(format!(
                        "function {function} of core module {} has a body of {size} bytes; the \
                         limit is {} bytes",
                        module.unwrap_or(0),
                        limits.max_function_bytes
                    ));
                }
                total = total.saturating_add(size);
                if total > limits.max_code_bytes {
                    return Err(format!(
                        "the component has code of more than {} bytes (the limit)",
                        limits.max_code_bytes
                    ));
                }
                function += 1;
            }
            _ => {}
        }
    }
    Ok(())
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
