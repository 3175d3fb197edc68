//! [`export_policy!`](crate::export_policy): a [`Policy`](crate::Policy) as a component. It
//! writes the wit-bindgen `Guest` impls, the `From` conversions both ways between the records
//! wit-bindgen generated in the calling crate and the sdk's serde types, and calls the crate's
//! `export!`. wit-bindgen generates its types in each component crate, so these are written
//! into that crate by macros instead of living here.

/// Exports a [`Policy`](crate::Policy) as a component. Call it at the crate root, after
/// `wit_bindgen::generate!` on a world that exports `kvpilot:policy/plugin@0.1.0` and exactly
/// the hooks listed (`replica_selection`, `snapshot_schedule`, `rollout_order`):
///
/// ```ignore
/// wit_bindgen::generate!({ world: "plugin", path: "wit" });
/// pub struct MyPolicy;
/// impl kvpilot_sdk::Policy for MyPolicy { /* … */ }
/// kvpilot_sdk::export_policy!(MyPolicy: replica_selection);
/// ```
///
/// The hooks must be those of `Policy::HOOKS` (checked at compile time). Besides the exports it
/// writes `From` conversions both ways for `types::{Member, Cluster, Role, Engine}`, and for
/// each listed hook its request and answer records, so code written against either set of
/// types can use the other with `.into()`.
#[allow(clippy::crate_in_macro_def)]
#[macro_export]
macro_rules! export_policy {
    ($policy:ident : $($hook:ident),+ $(,)?) => {
        const _: () = ::core::assert!(
            $crate::Hook::same_set(
                <$policy as $crate::Policy>::HOOKS,
                &[$($crate::__hook!($hook)),+]
            ),
            "the hooks given to export_policy! differ from Policy::HOOKS"
        );
        $crate::wit_types_conversions!();
        // `crate::` names the calling component's crate, where wit-bindgen put the records.
        const _: () = {
            use crate::exports::kvpilot::policy::plugin as __plugin;
            use $crate::__private::String;
            impl __plugin::Guest for $policy {
                fn info() -> __plugin::PluginInfo {
                    let info = <$policy as $crate::Policy>::info();
                    __plugin::PluginInfo {
                        name: info.name,
                        version: info.version,
                        description: info.description,
                    }
                }

                fn validate_config(config: String) -> Result<(), String> {
                    <$policy as $crate::Policy>::validate_config(&config)
                }
            }
        };
        $( $crate::__export_hook!($policy, $hook); )+
        export!($policy);
    };
}

/// The sdk's [`Hook`](crate::Hook) for a hook's module name.
#[doc(hidden)]
#[macro_export]
macro_rules! __hook {
    (replica_selection) => {
        $crate::Hook::ReplicaSelection
    };
    (snapshot_schedule) => {
        $crate::Hook::SnapshotSchedule
    };
    (rollout_order) => {
        $crate::Hook::RolloutOrder
    };
}

/// `From` conversions both ways between `kvpilot::policy::types::{Member, Cluster, Role,
/// Engine}` as wit-bindgen generated them in the calling crate and the sdk's types. Written by
/// [`export_policy!`](crate::export_policy); call it yourself only without that macro.
#[allow(clippy::crate_in_macro_def)]
#[macro_export]
macro_rules! wit_types_conversions {
    () => {
        const _: () = {
            use crate::kvpilot::policy::types as __wit;
            use $crate as __sdk;

            impl From<__wit::Role> for __sdk::Role {
                fn from(role: __wit::Role) -> Self {
                    match role {
                        __wit::Role::Primary => __sdk::Role::Primary,
                        __wit::Role::Replica => __sdk::Role::Replica,
                        __wit::Role::Unknown => __sdk::Role::Unknown,
                    }
                }
            }

            impl From<__sdk::Role> for __wit::Role {
                fn from(role: __sdk::Role) -> Self {
                    match role {
                        __sdk::Role::Primary => __wit::Role::Primary,
                        __sdk::Role::Replica => __wit::Role::Replica,
                        __sdk::Role::Unknown => __wit::Role::Unknown,
                    }
                }
            }

            impl From<__wit::Engine> for __sdk::Engine {
                fn from(engine: __wit::Engine) -> Self {
                    match engine {
                        __wit::Engine::Valkey => __sdk::Engine::Valkey,
                        __wit::Engine::Redis => __sdk::Engine::Redis,
                        __wit::Engine::Dragonfly => __sdk::Engine::Dragonfly,
                    }
                }
            }

            impl From<__sdk::Engine> for __wit::Engine {
                fn from(engine: __sdk::Engine) -> Self {
                    match engine {
                        __sdk::Engine::Valkey => __wit::Engine::Valkey,
                        __sdk::Engine::Redis => __wit::Engine::Redis,
                        __sdk::Engine::Dragonfly => __wit::Engine::Dragonfly,
                    }
                }
            }

            impl From<__wit::Member> for __sdk::Member {
                fn from(m: __wit::Member) -> Self {
                    __sdk::Member {
                        name: m.name,
                        shard: m.shard,
                        ordinal: m.ordinal,
                        role: m.role.into(),
                        ready: m.ready,
                        on_desired_revision: m.on_desired_revision,
                        link_up: m.link_up,
                        syncing: m.syncing,
                        offset: m.offset,
                        lag_bytes: m.lag_bytes,
                        keys: m.keys,
                        zone: m.zone,
                        node: m.node,
                    }
                }
            }

            impl From<__sdk::Member> for __wit::Member {
                fn from(m: __sdk::Member) -> Self {
                    __wit::Member {
                        name: m.name,
                        shard: m.shard,
                        ordinal: m.ordinal,
                        role: m.role.into(),
                        ready: m.ready,
                        on_desired_revision: m.on_desired_revision,
                        link_up: m.link_up,
                        syncing: m.syncing,
                        offset: m.offset,
                        lag_bytes: m.lag_bytes,
                        keys: m.keys,
                        zone: m.zone,
                        node: m.node,
                    }
                }
            }

            impl From<__wit::Cluster> for __sdk::Cluster {
                fn from(c: __wit::Cluster) -> Self {
                    __sdk::Cluster {
                        name: c.name,
                        namespace: c.namespace,
                        engine: c.engine.into(),
                        engine_version: c.engine_version,
                        shards: c.shards,
                        replicas_per_shard: c.replicas_per_shard,
                    }
                }
            }

            impl From<__sdk::Cluster> for __wit::Cluster {
                fn from(c: __sdk::Cluster) -> Self {
                    __wit::Cluster {
                        name: c.name,
                        namespace: c.namespace,
                        engine: c.engine.into(),
                        engine_version: c.engine_version,
                        shards: c.shards,
                        replicas_per_shard: c.replicas_per_shard,
                    }
                }
            }
        };
    };
}

/// One hook's `Guest` impl and the `From` conversions of its request and answer records.
#[doc(hidden)]
#[allow(clippy::crate_in_macro_def)]
#[macro_export]
macro_rules! __export_hook {
    ($policy:ident, replica_selection) => {
        const _: () = {
            use crate::exports::kvpilot::policy::replica_selection as __wit;
            use $crate as __sdk;
            use $crate::__private::{String, Vec};

            impl From<__wit::Reason> for __sdk::SelectionReason {
                fn from(reason: __wit::Reason) -> Self {
                    match reason {
                        __wit::Reason::PlannedHandover => __sdk::SelectionReason::PlannedHandover,
                        __wit::Reason::PrimaryLost => __sdk::SelectionReason::PrimaryLost,
                        __wit::Reason::PrimaryEmpty => __sdk::SelectionReason::PrimaryEmpty,
                    }
                }
            }

            impl From<__sdk::SelectionReason> for __wit::Reason {
                fn from(reason: __sdk::SelectionReason) -> Self {
                    match reason {
                        __sdk::SelectionReason::PlannedHandover => __wit::Reason::PlannedHandover,
                        __sdk::SelectionReason::PrimaryLost => __wit::Reason::PrimaryLost,
                        __sdk::SelectionReason::PrimaryEmpty => __wit::Reason::PrimaryEmpty,
                    }
                }
            }

            impl From<__wit::Request> for __sdk::SelectionRequest {
                fn from(r: __wit::Request) -> Self {
                    __sdk::SelectionRequest {
                        reason: r.reason.into(),
                        cluster: r.cluster.into(),
                        primary: r.primary.map(Into::into),
                        candidates: r.candidates.into_iter().map(Into::into).collect::<Vec<_>>(),
                        config: r.config,
                    }
                }
            }

            impl From<__sdk::SelectionRequest> for __wit::Request {
                fn from(r: __sdk::SelectionRequest) -> Self {
                    __wit::Request {
                        reason: r.reason.into(),
                        cluster: r.cluster.into(),
                        primary: r.primary.map(Into::into),
                        candidates: r.candidates.into_iter().map(Into::into).collect::<Vec<_>>(),
                        config: r.config,
                    }
                }
            }

            impl From<__wit::Decision> for __sdk::Selection {
                fn from(d: __wit::Decision) -> Self {
                    match d {
                        __wit::Decision::Promote(name) => __sdk::Selection::Promote(name),
                        __wit::Decision::Wait(reason) => __sdk::Selection::Wait(reason),
                    }
                }
            }

            impl From<__sdk::Selection> for __wit::Decision {
                fn from(s: __sdk::Selection) -> Self {
                    match s {
                        __sdk::Selection::Promote(name) => __wit::Decision::Promote(name),
                        __sdk::Selection::Wait(reason) => __wit::Decision::Wait(reason),
                    }
                }
            }

            impl __wit::Guest for $policy {
                fn select(request: __wit::Request) -> Result<__wit::Decision, String> {
                    let request = __sdk::SelectionRequest::from(request);
                    <$policy as __sdk::Policy>::select(&request).map(Into::into)
                }
            }
        };
    };
    ($policy:ident, snapshot_schedule) => {
        const _: () = {
            use crate::exports::kvpilot::policy::snapshot_schedule as __wit;
            use $crate as __sdk;
            use $crate::__private::{String, Vec};

            impl From<__wit::Mode> for __sdk::SnapshotMode {
                fn from(mode: __wit::Mode) -> Self {
                    match mode {
                        __wit::Mode::All => __sdk::SnapshotMode::All,
                        __wit::Mode::PrimaryOnly => __sdk::SnapshotMode::PrimaryOnly,
                        __wit::Mode::ReplicasOnly => __sdk::SnapshotMode::ReplicasOnly,
                    }
                }
            }

            impl From<__sdk::SnapshotMode> for __wit::Mode {
                fn from(mode: __sdk::SnapshotMode) -> Self {
                    match mode {
                        __sdk::SnapshotMode::All => __wit::Mode::All,
                        __sdk::SnapshotMode::PrimaryOnly => __wit::Mode::PrimaryOnly,
                        __sdk::SnapshotMode::ReplicasOnly => __wit::Mode::ReplicasOnly,
                    }
                }
            }

            impl From<__wit::Request> for __sdk::ScheduleRequest {
                fn from(r: __wit::Request) -> Self {
                    __sdk::ScheduleRequest {
                        mode: r.mode.into(),
                        cluster: r.cluster.into(),
                        schedule: r.schedule,
                        stagger_minutes: r.stagger_minutes,
                        members: r.members.into_iter().map(Into::into).collect::<Vec<_>>(),
                        config: r.config,
                    }
                }
            }

            impl From<__sdk::ScheduleRequest> for __wit::Request {
                fn from(r: __sdk::ScheduleRequest) -> Self {
                    __wit::Request {
                        mode: r.mode.into(),
                        cluster: r.cluster.into(),
                        schedule: r.schedule,
                        stagger_minutes: r.stagger_minutes,
                        members: r.members.into_iter().map(Into::into).collect::<Vec<_>>(),
                        config: r.config,
                    }
                }
            }

            impl From<__wit::MemberSchedule> for __sdk::MemberSchedule {
                fn from(s: __wit::MemberSchedule) -> Self {
                    __sdk::MemberSchedule {
                        member: s.member,
                        cron: s.cron,
                    }
                }
            }

            impl From<__sdk::MemberSchedule> for __wit::MemberSchedule {
                fn from(s: __sdk::MemberSchedule) -> Self {
                    __wit::MemberSchedule {
                        member: s.member,
                        cron: s.cron,
                    }
                }
            }

            impl __wit::Guest for $policy {
                fn schedule(request: __wit::Request) -> Result<Vec<__wit::MemberSchedule>, String> {
                    let request = __sdk::ScheduleRequest::from(request);
                    <$policy as __sdk::Policy>::schedule(&request)
                        .map(|answer| answer.into_iter().map(Into::into).collect::<Vec<_>>())
                }
            }
        };
    };
    ($policy:ident, rollout_order) => {
        const _: () = {
            use crate::exports::kvpilot::policy::rollout_order as __wit;
            use $crate as __sdk;
            use $crate::__private::{String, Vec};

            impl From<__wit::Request> for __sdk::RolloutRequest {
                fn from(r: __wit::Request) -> Self {
                    __sdk::RolloutRequest {
                        cluster: r.cluster.into(),
                        members: r.members.into_iter().map(Into::into).collect::<Vec<_>>(),
                        max_in_flight: r.max_in_flight,
                        max_lag_bytes: r.max_lag_bytes,
                        config: r.config,
                    }
                }
            }

            impl From<__sdk::RolloutRequest> for __wit::Request {
                fn from(r: __sdk::RolloutRequest) -> Self {
                    __wit::Request {
                        cluster: r.cluster.into(),
                        members: r.members.into_iter().map(Into::into).collect::<Vec<_>>(),
                        max_in_flight: r.max_in_flight,
                        max_lag_bytes: r.max_lag_bytes,
                        config: r.config,
                    }
                }
            }

            impl From<__wit::Step> for __sdk::Step {
                fn from(s: __wit::Step) -> Self {
                    match s {
                        __wit::Step::Restart(name) => __sdk::Step::Restart(name),
                        __wit::Step::Handover(h) => __sdk::Step::Handover {
                            from: h.from,
                            to: h.to,
                        },
                        __wit::Step::Wait(reason) => __sdk::Step::Wait(reason),
                        __wit::Step::Done => __sdk::Step::Done,
                    }
                }
            }

            impl From<__sdk::Step> for __wit::Step {
                fn from(s: __sdk::Step) -> Self {
                    match s {
                        __sdk::Step::Restart(name) => __wit::Step::Restart(name),
                        __sdk::Step::Handover { from, to } => {
                            __wit::Step::Handover(__wit::Handover { from, to })
                        }
                        __sdk::Step::Wait(reason) => __wit::Step::Wait(reason),
                        __sdk::Step::Done => __wit::Step::Done,
                    }
                }
            }

            impl __wit::Guest for $policy {
                fn next(request: __wit::Request) -> Result<__wit::Step, String> {
                    let request = __sdk::RolloutRequest::from(request);
                    <$policy as __sdk::Policy>::next(&request).map(Into::into)
                }
            }
        };
    };
}
