//! kvpilot's plugin SDK: write a policy plugin in plain Rust.
//!
//! - [`types`]: the records of the contract (`wit/0.1.0/policy.wit`) as serde types, with
//!   builders ([`Member::replica`], [`SelectionRequest::new`], …) for tests and sample inputs;
//! - [`Policy`]: a plugin's decisions as functions of those records, and
//!   [`export_policy!`] to make it a component (the wit-bindgen glue and `From` conversions
//!   both ways between the generated records and these types);
//! - [`scenario`]: scenario files (a request, a config and the expected answer, error or
//!   config rejection) that run natively in `cargo test` and in the real sandbox with
//!   `kvpilot policy test`;
//! - [`cron`]: 5-field cron expressions as the host reads them;
//! - [`defaults`]: the builtin policies (`builtin:most-caught-up`, `builtin:stagger`,
//!   `builtin:replicas-first`) as plain functions; the host links them natively to test
//!   `decide` and to benchmark their wasm builds.
//!
//! `kvpilot policy new <hook>… <name>` writes a plugin crate that uses all of the above.
//!
//! The crate is `no_std` (with `alloc`), so a component built on it can import no WASI at
//! all; the `std` feature adds [`scenario::check_dir`] for native tests.

#![no_std]

// `alloc` only: the default plugins are built without std, so their components import no
// WASI at all and instantiate faster (see `no_std_guest!`).
extern crate alloc;
#[cfg(any(test, feature = "std"))]
extern crate std;

pub mod arena;
mod build;
pub mod cron;
pub mod defaults;
mod export;
mod guest;
mod hook;
mod policy;
mod prelude;
pub mod scenario;
pub mod schema;
pub mod types;

/// This sdk's version: what `kvpilot policy new` asks the registry for when no source tree of
/// the sdk is at hand.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub use hook::Hook;
pub use policy::{Policy, not_exported};
pub use types::*;

/// What the macros name from `alloc`, so they work in `no_std` crates too.
#[doc(hidden)]
pub mod __private {
    pub use alloc::{string::String, vec::Vec};
}
