//! A loaded plugin: the compiled component (shared per sha256), its instance template, what
//! it exports and imports, and the limits its calls run under.

use super::Hook;
use super::contract::v0_1_0::exports::kvpilot::policy::plugin as plugin_if;
use super::engine::MAX_MEMORY_MIB;
use super::logs::{LogSink, RateLimit};
use super::memo::Memo;
use super::sandbox::Sandbox;
use kvpilot_sdk::PluginInfo;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use wasmtime::Engine;
use wasmtime::component::{ComponentExportIndex, InstancePre};

/// What one call of a plugin may use. Settable per plugin (the `PolicyPlugin` resource
/// carries `timeoutMs` and `memoryMiB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limits {
    /// Wall-clock deadline of one call (epoch deadline; the async timeout adds a small grace).
    pub timeout: Duration,
    /// Linear memory cap, in bytes.
    pub memory_bytes: usize,
    /// Largest answer accepted, in bytes of text.
    pub answer_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_millis(100),
            memory_bytes: 32 << 20,
            answer_bytes: 1 << 20,
        }
    }
}

impl Limits {
    /// Limits from a `PolicyPlugin`'s optional `timeoutMs` and `memoryMiB`; missing values are
    /// the defaults, and the memory cap is at most [`MAX_MEMORY_MIB`].
    pub fn from_settings(timeout_ms: Option<u64>, memory_mib: Option<u64>) -> Limits {
        let default = Limits::default();
        Limits {
            timeout: timeout_ms.map_or(default.timeout, |ms| Duration::from_millis(ms.max(1))),
            memory_bytes: memory_mib.map_or(default.memory_bytes, |mib| {
                (mib.clamp(1, MAX_MEMORY_MIB) as usize) << 20
            }),
            answer_bytes: default.answer_bytes,
        }
    }

    /// The memory cap in MiB (for messages).
    pub fn memory_mib(&self) -> u64 {
        (self.memory_bytes >> 20) as u64
    }
}

/// Export indices of the hooks a component provides, resolved once per component.
pub(crate) struct Exports {
    pub plugin: plugin_if::GuestIndices,
    /// `replica-selection.select`, when exported.
    pub replica_selection: Option<ComponentExportIndex>,
    /// `snapshot-schedule.schedule`, when exported.
    pub snapshot_schedule: Option<ComponentExportIndex>,
    /// `rollout-order.next`, when exported.
    pub rollout_order: Option<ComponentExportIndex>,
}

/// A compiled, checked component: shared by every `Plugin` loaded from the same bytes.
pub(crate) struct Compiled {
    pub sha256: [u8; 32],
    /// Bytes of compiled code (what the cache counts).
    pub code_bytes: usize,
    pub pre: InstancePre<Sandbox>,
    pub exports: Exports,
    pub imports: Vec<String>,
    pub hooks: Vec<Hook>,
    /// Filled in once, from the plugin's own `info()`, when the component is first loaded.
    pub info: PluginInfo,
    /// Instances made for calls (hooks and `validate-config`) since it was compiled: what a
    /// memoized answer saves, and what tests count.
    pub instantiations: AtomicU64,
    /// The bound on the lines its calls log, over all its calls (see `logs.rs`).
    pub log_limit: RateLimit,
}

impl Compiled {
    pub(crate) fn instantiated(&self) {
        self.instantiations.fetch_add(1, Ordering::Relaxed);
    }
}

/// A plugin ready to call. Cheap to clone.
#[derive(Clone)]
pub struct Plugin {
    pub(crate) name: String,
    pub(crate) compiled: Arc<Compiled>,
    pub(crate) limits: Limits,
    pub(crate) engine: Engine,
    /// The runtime's memo of validated answers; `None` calls the plugin every time.
    pub(crate) memo: Option<Arc<Memo>>,
    /// Where the lines its calls write to stderr go.
    pub(crate) log: LogSink,
}

impl Plugin {
    /// How the plugin was named when loaded: `builtin:NAME`, a file path, or a given label.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the plugin says about itself.
    pub fn info(&self) -> &PluginInfo {
        &self.compiled.info
    }

    /// The hooks it exports.
    pub fn hooks(&self) -> &[Hook] {
        &self.compiled.hooks
    }

    /// Whether it exports `hook`.
    pub fn exports(&self, hook: Hook) -> bool {
        self.compiled.hooks.contains(&hook)
    }

    /// Every import of the component, by name.
    pub fn imports(&self) -> &[String] {
        &self.compiled.imports
    }

    /// The sha256 digest of the component bytes, lower-case hex.
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.compiled.sha256)
    }

    /// The limits calls run under.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The same plugin with other limits (no recompilation).
    pub fn with_limits(mut self, limits: Limits) -> Plugin {
        self.limits = limits;
        self
    }

    /// The same plugin under another name (no recompilation), e.g. a `PolicyPlugin` name.
    pub fn named(mut self, name: impl Into<String>) -> Plugin {
        self.name = name.into();
        self
    }

    /// The same plugin, answering every call afresh (no memoized answers are used or kept):
    /// for measuring a call, or for checking that a plugin is deterministic.
    pub fn unmemoized(mut self) -> Plugin {
        self.memo = None;
        self
    }

    /// The same plugin, its log lines sent to `sink` (default: the process log).
    pub fn logging_to(mut self, sink: LogSink) -> Plugin {
        self.log = sink;
        self
    }

    /// Whether identical requests are answered from the runtime's memo.
    pub fn is_memoized(&self) -> bool {
        self.memo.is_some()
    }

    /// Instances made for calls of this component (by any `Plugin` sharing it) since it was
    /// compiled; a memoized answer makes none.
    pub fn instantiations(&self) -> u64 {
        self.compiled.instantiations.load(Ordering::Relaxed)
    }

    /// True when both share one compiled component (the cache returned the same artifact).
    pub fn shares_compiled(&self, other: &Plugin) -> bool {
        Arc::ptr_eq(&self.compiled, &other.compiled)
    }
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("sha256", &self.sha256_hex())
            .field("hooks", &self.compiled.hooks)
            .field("limits", &self.limits)
            .finish()
    }
}
