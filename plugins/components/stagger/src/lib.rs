//! `stagger` as a WebAssembly component: converts the WIT records to `kvpilot-sdk` types and
//! calls [`kvpilot_sdk::defaults::stagger`].

#![no_std]

wit_bindgen::generate!({
    world: "snapshot-scheduler",
    path: "../../../wit/0.1.0",
});

use alloc::{string::String, vec::Vec};
use exports::kvpilot::policy::plugin::{self, PluginInfo};
use exports::kvpilot::policy::snapshot_schedule::{self, MemberSchedule, Mode, Request};
use kvpilot_sdk::defaults::stagger;

// No std, hence no WASI imports; every call runs in a fresh instance, so an arena that never
// frees is the cheapest allocator.
kvpilot_sdk::no_std_guest!();

struct Component;

impl plugin::Guest for Component {
    fn info() -> PluginInfo {
        plugin_info(stagger::info())
    }

    fn validate_config(config: String) -> Result<(), String> {
        stagger::validate_config(&config)
    }
}

impl snapshot_schedule::Guest for Component {
    fn schedule(request: Request) -> Result<Vec<MemberSchedule>, String> {
        let request = kvpilot_sdk::ScheduleRequest {
            mode: match request.mode {
                Mode::All => kvpilot_sdk::SnapshotMode::All,
                Mode::PrimaryOnly => kvpilot_sdk::SnapshotMode::PrimaryOnly,
                Mode::ReplicasOnly => kvpilot_sdk::SnapshotMode::ReplicasOnly,
            },
            cluster: cluster(request.cluster),
            schedule: request.schedule,
            stagger_minutes: request.stagger_minutes,
            members: request.members.into_iter().map(member).collect(),
            config: request.config,
        };
        let schedules = stagger::schedule(&request)?;
        Ok(schedules
            .into_iter()
            .map(|s| MemberSchedule {
                member: s.member,
                cron: s.cron,
            })
            .collect())
    }
}

kvpilot_sdk::guest_records!();

export!(Component);
