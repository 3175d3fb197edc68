//! The local platform: real datastore processes on 127.0.0.x, and a primary endpoint.

pub mod forwarder;
mod group;
pub mod lock;
pub mod server;
pub mod topology;

pub use group::{Layout, LocalPlatform, PARKED, STOP_GRACE, member_dir};
mod runner;

pub use runner::{
    LocalCluster, LocalError, PID_FILE, SOURCE_FILE, STATUS_FILE, group_dir, local_policy_settings,
    policy_settings, read_manifest, read_valid_manifest,
};
