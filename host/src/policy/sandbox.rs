//! The per-call host state of a plugin and the WASI interfaces the host grants.
//!
//! A Rust std guest built for `wasm32-wasip2` imports, even when it never touches them:
//! `wasi:cli/{environment, exit, stdin, stdout, stderr, terminal-input, terminal-output,
//! terminal-stdin, terminal-stdout, terminal-stderr}` and `wasi:io/{error, poll, streams}`
//! (13 interfaces). They are satisfied by wasmtime-wasi over an EMPTY `WasiCtx`: no
//! environment, no arguments, no preopened directories, stdin closed, stdout discarded, and
//! stderr captured (bounded, never refusing a write) so a guest's panic message reaches the
//! error.
//!
//! `wasi:clocks/{wall-clock, monotonic-clock}` (imported by `SystemTime`/`Instant`) and
//! `wasi:random/{random, insecure, insecure-seed}` (imported by `HashMap::new()`) are granted
//! with implementations that grant nothing: both clocks are frozen at 0 and randomness is one
//! fixed byte stream, the same at every call (see `determinism.rs`). A decision stays a
//! pure, reproducible function of its request.
//!
//! `wasi:filesystem/{types, preopens}` (imported as soon as a guest uses `std::fs`) is
//! provided with ZERO preopens: a guest can link, but it can never obtain a descriptor, so
//! every file operation fails inside the guest and the call goes on (its error is the
//! plugin's). We grant it rather than refuse the plugin because a library the plugin
//! depends on may reference `std::fs` on a path it never takes; refusing would reject
//! harmless plugins without protecting anything.
//!
//! Not provided (a plugin importing them is refused at load): sockets, http, and anything
//! outside `wasi:cli`, `wasi:io`, `wasi:clocks`, `wasi:random`, `wasi:filesystem`.
//!
//! Memory: the cap is the total of every linear memory of the call's store (a component may
//! contain several core modules, each with its own memory). wasmtime asks the limiter both
//! when a memory is created (from 0 to its initial size) and when it grows, so the sum of
//! what was granted is the store's whole footprint.

use super::contract::{InterfaceName, PACKAGE};
use super::determinism;
use super::stderr::StderrCapture;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{HasData, Linker, ResourceTable};
use wasmtime::{Engine, ResourceLimiter};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Interfaces granted in full: `(package, interface)`, any `0.2.x` version of WASI.
const GRANTED: &[(&str, &str)] = &[
    ("wasi:cli", "environment"),
    ("wasi:cli", "exit"),
    ("wasi:cli", "stdin"),
    ("wasi:cli", "stdout"),
    ("wasi:cli", "stderr"),
    ("wasi:cli", "terminal-input"),
    ("wasi:cli", "terminal-output"),
    ("wasi:cli", "terminal-stdin"),
    ("wasi:cli", "terminal-stdout"),
    ("wasi:cli", "terminal-stderr"),
    ("wasi:io", "error"),
    ("wasi:io", "poll"),
    ("wasi:io", "streams"),
    ("wasi:clocks", "wall-clock"),
    ("wasi:clocks", "monotonic-clock"),
    ("wasi:random", "random"),
    ("wasi:random", "insecure"),
    ("wasi:random", "insecure-seed"),
    ("wasi:filesystem", "types"),
    ("wasi:filesystem", "preopens"),
];

/// Interfaces a plugin may import for their type definitions only (no functions).
const TYPES_ONLY: &[(&str, &str)] = &[(PACKAGE, "types")];

/// The state of one store: one call of one plugin.
pub struct Sandbox {
    /// Built on the first WASI call only: most calls never touch WASI, and building a
    /// `WasiCtx` (its builder seeds RNGs from the OS before ours replace them) is the
    /// costliest part of a fresh sandbox.
    wasi: Option<WasiCtx>,
    table: ResourceTable,
    stderr: Option<StderrCapture>,
    memory_limit: usize,
    /// Bytes of linear memory granted so far in this store, over all its memories.
    memory_granted: usize,
    memory_exceeded: bool,
}

impl Sandbox {
    /// A sandbox whose linear memories may hold `memory_limit` bytes in total.
    pub fn new(memory_limit: usize) -> Self {
        Sandbox {
            wasi: None,
            table: ResourceTable::new(),
            stderr: None,
            memory_limit,
            memory_granted: 0,
            memory_exceeded: false,
        }
    }

    /// The guest tried to grow a memory beyond the limit during this call.
    pub fn memory_exceeded(&self) -> bool {
        self.memory_exceeded
    }

    /// What the guest wrote to stderr (lossy UTF-8, trimmed), if anything.
    pub fn stderr_text(&self) -> Option<String> {
        let text = self.stderr.as_ref()?.text();
        let text = text.trim();
        (!text.is_empty()).then(|| text.to_string())
    }
}

impl WasiView for Sandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let wasi = match &mut self.wasi {
            Some(wasi) => wasi,
            none => {
                let capture = StderrCapture::new();
                self.stderr = Some(capture.clone());
                // The builder's defaults are: no env, no args, no preopens, stdin closed,
                // stdout discarded, no inherited stdio, no network. Stderr is captured, and
                // clocks and randomness are replaced by ones that reveal nothing.
                let mut builder = WasiCtx::builder();
                builder.stderr(capture);
                none.insert(determinism::apply(&mut builder).build())
            }
        };
        WasiCtxView {
            ctx: wasi,
            table: &mut self.table,
        }
    }
}

impl ResourceLimiter for Sandbox {
    /// Called with `current = 0` when a memory is created and with its sizes when it grows,
    /// so `memory_granted` is the store's total.
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|max| desired > max) {
            // Beyond the memory's own declared maximum: wasmtime refuses it anyway. Not counted,
            // and not ours to report as the host's memory cap.
            return Ok(false);
        }
        let growth = desired.saturating_sub(current);
        match self.memory_granted.checked_add(growth) {
            Some(total) if total <= self.memory_limit => {
                // Once approved, a growth fails only if the OS cannot map the pages; counting
                // it anyway errs on the safe side.
                self.memory_granted = total;
                Ok(true)
            }
            _ => {
                // Refuse the growth (the guest sees `memory.grow` fail, a Rust guest aborts;
                // a memory's creation fails the instantiation) and remember why, so the call
                // is reported as a memory failure, not a plain trap.
                self.memory_exceeded = true;
                Ok(false)
            }
        }
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Table growth bound: generous for real guests (function tables of a few thousand entries).
const MAX_TABLE_ELEMENTS: usize = 100_000;

struct HasIo;

impl HasData for HasIo {
    type Data<'a> = &'a mut ResourceTable;
}

/// Adds exactly the granted interfaces (see the module docs) to `linker`.
pub fn grant(linker: &mut Linker<Sandbox>) -> wasmtime::Result<()> {
    use wasmtime_wasi::cli::{WasiCli, WasiCliView};
    use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
    use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView};
    use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, io, random};
    use wasmtime_wasi::random::{WasiRandom, WasiRandomView};

    let l = linker;
    io::error::add_to_linker::<Sandbox, HasIo>(l, |s| &mut s.table)?;
    io::poll::add_to_linker::<Sandbox, HasIo>(l, |s| &mut s.table)?;
    io::streams::add_to_linker::<Sandbox, HasIo>(l, |s| &mut s.table)?;
    cli::exit::add_to_linker::<Sandbox, WasiCli>(l, Sandbox::cli)?;
    cli::environment::add_to_linker::<Sandbox, WasiCli>(l, Sandbox::cli)?;
    cli::stdin::add_to_linker::<Sandbox, WasiCli>(l, Sandbox::cli)?;
    cli::stdout::add_to_linker::<Sandbox, WasiCli>(l, Sandbox::cli)?;
    cli::stderr::add_to_linker::<Sandbox, WasiCli>(l, Sandbox::cli)?;
    cli::terminal_input::add_to_linker::<Sandbox, WasiCli>(l, Sandbox::cli)?;
    cli::terminal_output::add_to_linker::<Sandbox, WasiCli>(l, Sandbox::cli)?;
    cli::terminal_stdin::add_to_linker::<Sandbox, WasiCli>(l, Sandbox::cli)?;
    cli::terminal_stdout::add_to_linker::<Sandbox, WasiCli>(l, Sandbox::cli)?;
    cli::terminal_stderr::add_to_linker::<Sandbox, WasiCli>(l, Sandbox::cli)?;
    filesystem::types::add_to_linker::<Sandbox, WasiFilesystem>(l, Sandbox::filesystem)?;
    filesystem::preopens::add_to_linker::<Sandbox, WasiFilesystem>(l, Sandbox::filesystem)?;
    clocks::wall_clock::add_to_linker::<Sandbox, WasiClocks>(l, Sandbox::clocks)?;
    clocks::monotonic_clock::add_to_linker::<Sandbox, WasiClocks>(l, Sandbox::clocks)?;
    random::random::add_to_linker::<Sandbox, WasiRandom>(l, Sandbox::random)?;
    random::insecure::add_to_linker::<Sandbox, WasiRandom>(l, Sandbox::random)?;
    random::insecure_seed::add_to_linker::<Sandbox, WasiRandom>(l, Sandbox::random)?;
    // Type-only instances: they define no functions, so they grant nothing.
    for version in super::contract::CONTRACT_VERSIONS {
        l.instance(&format!("{PACKAGE}/types@{version}"))?;
    }
    Ok(())
}

/// Every import of a component, by name, for `policy check`.
pub fn import_names(engine: &Engine, component: &wasmtime::component::Component) -> Vec<String> {
    component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .collect()
}

/// Refuses the first import the host does not provide. `Err` is the offending import,
/// with the function for a type-only interface that imports one.
pub fn check_imports(
    engine: &Engine,
    component: &wasmtime::component::Component,
) -> Result<(), String> {
    for (name, item) in component.component_type().imports(engine) {
        let Some(parsed) = InterfaceName::parse(name) else {
            return Err(name.to_string());
        };
        let key = (parsed.package, parsed.interface);
        let version_ok = if parsed.package == PACKAGE {
            parsed
                .version
                .is_some_and(|v| super::contract::CONTRACT_VERSIONS.contains(&v))
        } else {
            parsed.version.is_some_and(|v| v.starts_with("0.2."))
        };
        if !version_ok {
            return Err(name.to_string());
        }
        if GRANTED.contains(&key) {
            continue;
        }
        if TYPES_ONLY.contains(&key) {
            let ComponentItem::ComponentInstance(instance) = item.ty else {
                return Err(name.to_string());
            };
            if let Some((func, _)) = instance
                .exports(engine)
                .find(|(_, item)| !matches!(item.ty, ComponentItem::Type(_)))
            {
                return Err(format!("{name}#{func}"));
            }
            continue;
        }
        return Err(name.to_string());
    }
    Ok(())
}
