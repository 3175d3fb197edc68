//! The local platform: real datastore processes on 127.0.0.x, and a primary endpoint.

pub mod forwarder;
mod group;
pub mod lock;
pub mod server;

pub use group::{Layout, LocalPlatform, PARKED, STOP_GRACE};
mod runner;

pub use runner::{
    LocalCluster, LocalError, PID_FILE, SOURCE_FILE, STATUS_FILE, group_dir, policy_settings,
    read_manifest, read_valid_manifest,
};
