//! kvpilot's plugin SDK: the Rust mirror of the WIT records, a small cron library, and the
//! default policies as plain functions.
//!
//! The default plugin components in `plugins/components/` are thin wit-bindgen wrappers around
//! [`defaults`]; the host links the same functions natively to benchmark them against their
//! wasm builds and to test `decide` without a sandbox.

#![no_std]

// `alloc` only: the default plugins are built without std, so their components import no
// WASI at all and instantiate faster (see `no_std_guest!`).
extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod arena;
pub mod cron;
pub mod defaults;
mod guest;
mod prelude;
pub mod types;

pub use types::*;
