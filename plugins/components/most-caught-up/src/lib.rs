//! `most-caught-up` as a WebAssembly component:
//! [`kvpilot_sdk::defaults::most_caught_up::MostCaughtUp`] (a `kvpilot_sdk::Policy`) exported
//! through `kvpilot_sdk::export_policy!`, as in a plugin made by `kvpilot policy new`.

#![no_std]

wit_bindgen::generate!({
    world: "replica-selector",
    path: "../../../wit/0.1.0",
});

use kvpilot_sdk::defaults::most_caught_up::MostCaughtUp;

// No std, hence no WASI imports; every call runs in a fresh instance, so an arena that never
// frees is the cheapest allocator.
kvpilot_sdk::no_std_guest!();

kvpilot_sdk::export_policy!(MostCaughtUp: replica_selection);
