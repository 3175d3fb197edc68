//! The default plugins through the real wasm runtime: they load as builtins, answer
//! representative inputs exactly as their native builds do, and their answers pass the host's
//! validation. Also the failure policy of the wasm-backed `Policies`.

use kvpilot::policy::{
    FailurePolicy, Hook, HookSetting, Limits, Policies, PolicyError, PolicyRuntime, PolicySettings,
    WasmPolicies, bench, native,
};
use kvpilot_sdk::{
    Cluster, Member, Role, RolloutRequest, ScheduleRequest, Selection, SelectionReason,
    SelectionRequest, SnapshotMode, Step,
};

fn runtime() -> PolicyRuntime {
    PolicyRuntime::global().expect("policy runtime")
}

fn member(name: &str, ordinal: u32, role: Role) -> Member {
    Member {
        name: name.into(),
        ordinal,
        role,
        ready: true,
        on_desired_revision: true,
        link_up: true,
        offset: 5000,
        keys: 100,
        ..Member::default()
    }
}

fn cluster() -> Cluster {
    Cluster {
        name: "cache".into(),
        namespace: "default".into(),
        shards: 1,
        replicas_per_shard: 2,
        ..Cluster::default()
    }
}

#[tokio::test]
async fn builtins_load_with_their_hook_and_metadata() {
    let runtime = runtime();
    for hook in Hook::ALL {
        let plugin = runtime
            .load(&format!("builtin:{}", hook.default_builtin()))
            .await
            .expect("builtin loads");
        assert_eq!(plugin.hooks(), [hook]);
        assert_eq!(plugin.info().name, hook.default_builtin());
        assert_eq!(plugin.sha256_hex().len(), 64);
        // Builtins are no_std guests: they import no WASI, only the policy's type interface.
        assert_eq!(
            plugin.imports(),
            ["kvpilot:policy/types@0.1.0"],
            "{:?}",
            plugin.imports()
        );
    }
}

#[tokio::test]
async fn most_caught_up_promotes_the_highest_offset() {
    let plugin = runtime()
        .load("builtin:most-caught-up")
        .await
        .expect("load");
    let mut behind = member("cache-1", 1, Role::Replica);
    behind.offset = 4000;
    behind.lag_bytes = 1000;
    let ahead = member("cache-2", 2, Role::Replica);
    let request = SelectionRequest {
        reason: SelectionReason::PlannedHandover,
        cluster: cluster(),
        primary: Some(member("cache-0", 0, Role::Primary)),
        candidates: vec![behind.clone(), ahead],
        config: "{}".into(),
    };
    let answer = plugin.select(&request).await.expect("select");
    assert_eq!(answer, Selection::Promote("cache-2".into()));
    assert_eq!(answer, native::select(&request).expect("native"));

    // Primary lost, the only other candidate is empty: the data holder wins even if stale.
    let mut stale_holder = behind;
    stale_holder.on_desired_revision = false;
    let mut empty = member("cache-2", 2, Role::Replica);
    empty.keys = 0;
    empty.offset = 0;
    let lost = SelectionRequest {
        reason: SelectionReason::PrimaryLost,
        primary: None,
        candidates: vec![stale_holder, empty],
        ..request.clone()
    };
    let answer = plugin.select(&lost).await.expect("select");
    assert_eq!(answer, Selection::Promote("cache-1".into()));
    assert_eq!(answer, native::select(&lost).expect("native"));

    // Nobody eligible: wait, with a reason.
    let mut syncing = member("cache-1", 1, Role::Replica);
    syncing.syncing = true;
    let none = SelectionRequest {
        candidates: vec![syncing],
        ..request
    };
    let answer = plugin.select(&none).await.expect("select");
    assert!(
        matches!(&answer, Selection::Wait(reason) if !reason.is_empty()),
        "{answer:?}"
    );
}

#[tokio::test]
async fn stagger_spreads_replica_snapshots() {
    let plugin = runtime().load("builtin:stagger").await.expect("load");
    let request = ScheduleRequest {
        mode: SnapshotMode::ReplicasOnly,
        cluster: cluster(),
        schedule: "50 23 * * *".into(),
        stagger_minutes: 15,
        members: vec![
            member("cache-0", 0, Role::Primary),
            member("cache-1", 1, Role::Replica),
            member("cache-2", 2, Role::Replica),
        ],
        config: "{}".into(),
    };
    let answer = plugin.schedule(&request).await.expect("schedule");
    assert_eq!(answer, native::schedule(&request).expect("native"));
    let cron_of = |name: &str| {
        answer
            .iter()
            .find(|s| s.member == name)
            .map(|s| s.cron.clone())
    };
    assert_eq!(
        cron_of("cache-0"),
        Some(None),
        "the primary never snapshots"
    );
    assert_eq!(cron_of("cache-1"), Some(Some("50 23 * * *".into())));
    // Shifted by one interval: 23:50 + 15 min wraps to 00:05 the next day.
    let second = cron_of("cache-2").flatten().expect("cache-2 snapshots");
    assert!(second.starts_with("5 0 "), "{second}");
}

#[tokio::test]
async fn replicas_first_restarts_stale_replicas_then_hands_over() {
    let plugin = runtime()
        .load("builtin:replicas-first")
        .await
        .expect("load");
    let mut primary = member("cache-0", 0, Role::Primary);
    primary.on_desired_revision = false;
    let mut stale = member("cache-1", 1, Role::Replica);
    stale.on_desired_revision = false;
    let current = member("cache-2", 2, Role::Replica);
    let request = RolloutRequest {
        cluster: cluster(),
        members: vec![primary.clone(), stale, current.clone()],
        max_in_flight: 1,
        max_lag_bytes: 1 << 20,
        config: "{}".into(),
    };
    let answer = plugin.next(&request).await.expect("next");
    assert_eq!(answer, Step::Restart("cache-1".into()));
    assert_eq!(answer, native::next(&request).expect("native"));

    let replicas_done = RolloutRequest {
        members: vec![
            primary,
            member("cache-1", 1, Role::Replica),
            current.clone(),
        ],
        ..request.clone()
    };
    let answer = plugin.next(&replicas_done).await.expect("next");
    assert!(
        matches!(&answer, Step::Handover { from, .. } if from == "cache-0"),
        "{answer:?}"
    );
    assert_eq!(answer, native::next(&replicas_done).expect("native"));

    let all_done = RolloutRequest {
        members: vec![
            member("cache-0", 0, Role::Primary),
            member("cache-1", 1, Role::Replica),
            current,
        ],
        ..request
    };
    assert_eq!(plugin.next(&all_done).await.expect("next"), Step::Done);
}

#[tokio::test]
async fn replicas_first_restarts_a_down_stale_replica_before_the_others() {
    let plugin = runtime()
        .load("builtin:replicas-first")
        .await
        .expect("load");
    let stale = |name: &str, ordinal: u32, role: Role| Member {
        on_desired_revision: false,
        ..member(name, ordinal, role)
    };
    // cache-1 crash-loops on the old revision: it does not answer, so its role is unknown.
    let down = Member {
        ready: false,
        link_up: false,
        offset: 0,
        keys: 0,
        ..stale("cache-1", 1, Role::Unknown)
    };
    let request = RolloutRequest {
        cluster: cluster(),
        members: vec![
            stale("cache-0", 0, Role::Primary),
            down,
            stale("cache-2", 2, Role::Replica),
        ],
        max_in_flight: 1,
        max_lag_bytes: 1 << 20,
        config: "{}".into(),
    };
    let answer = plugin.next(&request).await.expect("next");
    assert_eq!(answer, Step::Restart("cache-1".into()));
    assert_eq!(answer, native::next(&request).expect("native"));
}

#[tokio::test]
async fn the_cached_load_measure_is_a_load_from_bytes_that_compiles_nothing() {
    let runtime = PolicyRuntime::new().expect("runtime");
    let plugin = runtime.load("builtin:stagger").await.expect("compile");
    assert_eq!(runtime.cached_components(), 1);
    let took = bench::cached_load(&runtime, &plugin)
        .await
        .expect("a cache hit");
    assert!(took > std::time::Duration::ZERO);
    assert_eq!(runtime.cached_components(), 1);
    // Bytes this runtime never compiled are not a cached load: the measure refuses to time it.
    let elsewhere = PolicyRuntime::new().expect("another runtime");
    let error = bench::cached_load(&elsewhere, &plugin)
        .await
        .expect_err("a cache miss");
    assert!(
        error.to_string().contains("the cached load compiled again"),
        "{error}"
    );
}

#[tokio::test]
async fn builtins_agree_with_native_at_bench_sizes() {
    let runtime = runtime();
    // Up to 1000 members through a debug build of the host, beside other builds: a deadline
    // that fits (this test is about the answers, `policy bench` about the time).
    let limits = kvpilot::policy::Limits {
        timeout: std::time::Duration::from_secs(5),
        ..kvpilot::policy::Limits::default()
    };
    let load = async |name: &str| runtime.load(name).await.expect("load").with_limits(limits);
    let select = load("builtin:most-caught-up").await;
    let schedule = load("builtin:stagger").await;
    let next = load("builtin:replicas-first").await;
    for n in bench::SIZES {
        let r = bench::selection_request(n);
        assert_eq!(
            select.select(&r).await.expect("wasm"),
            native::select(&r).expect("native")
        );
        let r = bench::schedule_request(n);
        assert_eq!(
            schedule.schedule(&r).await.expect("wasm"),
            native::schedule(&r).expect("native")
        );
        let r = bench::rollout_request(n);
        assert_eq!(
            next.next(&r).await.expect("wasm"),
            native::next(&r).expect("native")
        );
    }
}

/// 3000 members is far past any real shard; it makes the builtins' arena allocator grow the
/// guest memory many times (and move growing vectors) within one call. The deadline is one a
/// debug build on a loaded machine meets: this test is about memory, not time.
#[tokio::test]
async fn builtins_agree_with_native_on_a_request_that_grows_their_memory() {
    const N: usize = 3000;
    let runtime = runtime();
    let limits = Limits {
        timeout: std::time::Duration::from_secs(5),
        ..Limits::default()
    };
    let load = async |name: &str| runtime.load(name).await.expect("load").with_limits(limits);
    let select = load("builtin:most-caught-up").await;
    let schedule = load("builtin:stagger").await;
    let next = load("builtin:replicas-first").await;
    let r = bench::selection_request(N);
    assert_eq!(
        select.select(&r).await.expect("wasm"),
        native::select(&r).expect("native")
    );
    // Every replica at the same minute: a stagger this long would not fit in a day.
    let mut r = bench::schedule_request(N);
    r.stagger_minutes = 0;
    let answer = schedule.schedule(&r).await.expect("wasm");
    assert_eq!(answer.len(), N);
    assert_eq!(answer, native::schedule(&r).expect("native"));
    let r = bench::rollout_request(N);
    assert_eq!(
        next.next(&r).await.expect("wasm"),
        native::next(&r).expect("native")
    );
}

fn rollout_request() -> RolloutRequest {
    RolloutRequest {
        cluster: cluster(),
        members: vec![member("cache-0", 0, Role::Primary)],
        max_in_flight: 1,
        max_lag_bytes: 0,
        config: String::new(),
    }
}

/// A rejected config leaves its hook unbound: under `Fail` each of its calls fails with the
/// binding's error, the problem is listed for status, and the other hooks answer.
#[tokio::test]
async fn a_rejected_config_fails_its_hook_alone() {
    let settings = PolicySettings {
        replica_selection: Some(HookSetting {
            config: r#"{"maxLagBytes":"lots"}"#.into(),
            ..HookSetting::default_for(Hook::ReplicaSelection)
        }),
        ..PolicySettings::default()
    };
    let policies = WasmPolicies::bind(&runtime(), &settings).await;
    let problems = policies.bind_problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].hook, Hook::ReplicaSelection);
    assert_eq!(problems[0].plugin, "builtin:most-caught-up");
    assert_eq!(problems[0].failure, FailurePolicy::Fail);
    assert!(
        problems[0].message.contains("config rejected")
            && problems[0].message.contains("maxLagBytes"),
        "{problems:?}"
    );
    for _ in 0..2 {
        let error = policies
            .select_replica(selection(vec![member("cache-1", 1, Role::Replica)]))
            .await
            .expect_err("the hook is not bound");
        let PolicyError::Unbound {
            plugin,
            hook,
            message,
        } = &error
        else {
            panic!("expected an unbound hook, got {error}");
        };
        assert_eq!(
            (plugin.as_str(), *hook),
            ("builtin:most-caught-up", Hook::ReplicaSelection)
        );
        assert!(message.contains("maxLagBytes"), "{message}");
        assert!(
            error
                .to_string()
                .starts_with("replica-selection: plugin builtin:most-caught-up: config rejected"),
            "{error}"
        );
    }
    let step = policies
        .rollout_step(rollout_request())
        .await
        .expect("rollout-order answers");
    assert_eq!(step.answer, Step::Done);
}

#[tokio::test]
async fn a_plugin_without_the_hook_is_refused_when_binding() {
    let settings = PolicySettings {
        rollout_order: Some(HookSetting {
            source: "builtin:stagger".into(),
            ..HookSetting::default_for(Hook::RolloutOrder)
        }),
        ..PolicySettings::default()
    };
    let policies = WasmPolicies::bind(&runtime(), &settings).await;
    let error = policies
        .rollout_step(rollout_request())
        .await
        .expect_err("the hook is not bound");
    assert!(
        matches!(&error, PolicyError::Unbound { plugin, hook: Hook::RolloutOrder, message }
            if plugin == "builtin:stagger" && message.contains("does not export the rollout-order hook")),
        "{error}"
    );
    assert_eq!(policies.bind_problems().len(), 1);
}

fn selection(candidates: Vec<Member>) -> SelectionRequest {
    SelectionRequest {
        reason: SelectionReason::PlannedHandover,
        cluster: cluster(),
        primary: Some(member("cache-0", 0, Role::Primary)),
        candidates,
        config: "ignored: the binding fills it in".into(),
    }
}

#[tokio::test]
async fn decisions_are_recorded_and_the_config_is_the_bound_one() {
    let settings = PolicySettings {
        replica_selection: Some(HookSetting {
            config: r#"{"preferZone":"zone-b"}"#.into(),
            ..HookSetting::default_for(Hook::ReplicaSelection)
        }),
        ..PolicySettings::default()
    };
    let policies = WasmPolicies::bind(&runtime(), &settings).await;
    assert!(policies.bind_problems().is_empty());
    let mut in_a = member("cache-1", 1, Role::Replica);
    in_a.zone = Some("zone-a".into());
    let mut in_b = member("cache-2", 2, Role::Replica);
    in_b.zone = Some("zone-b".into());
    let decided = policies
        .select_replica(selection(vec![in_a, in_b]))
        .await
        .expect("decided");
    assert_eq!(decided.answer, Selection::Promote("cache-2".into()));
    let record = &decided.record;
    assert_eq!(record.hook, Hook::ReplicaSelection);
    assert_eq!(record.plugin, "builtin:most-caught-up");
    assert_eq!(record.sha256.len(), 64);
    assert_eq!(record.answer, r#"{"promote":"cache-2"}"#);
    assert!(record.fallback_from.is_none());
    assert!(record.latency > std::time::Duration::ZERO);
}

#[tokio::test]
async fn fallback_uses_the_builtin_and_says_why_while_fail_returns_the_error() {
    let runtime = runtime();
    // A 4-byte answer bound makes the real builtin fail deterministically (its answer
    // `cache-1` is 7 bytes); the fallback builtin runs under the default limits.
    let failing = |failure| PolicySettings {
        replica_selection: Some(HookSetting {
            failure,
            limits: Limits {
                answer_bytes: 4,
                ..Limits::default()
            },
            ..HookSetting::default_for(Hook::ReplicaSelection)
        }),
        ..PolicySettings::default()
    };
    let candidates = vec![member("cache-1", 1, Role::Replica)];

    let fail = WasmPolicies::bind(&runtime, &failing(FailurePolicy::Fail)).await;
    let error = fail
        .select_replica(selection(candidates.clone()))
        .await
        .expect_err("Fail returns the error");
    assert!(
        matches!(error, PolicyError::AnswerTooLarge { limit: 4, .. }),
        "{error}"
    );

    let fallback = WasmPolicies::bind(&runtime, &failing(FailurePolicy::Fallback)).await;
    let decided = fallback
        .select_replica(selection(candidates))
        .await
        .expect("the builtin answers");
    assert_eq!(decided.answer, Selection::Promote("cache-1".into()));
    let why = decided.record.fallback_from.expect("fallback recorded");
    assert!(why.contains("exceeds the limit of 4 bytes"), "{why}");
    assert_eq!(decided.record.plugin, "builtin:most-caught-up");
}

#[tokio::test]
async fn bind_failures_fall_back_to_the_builtin_only_under_fallback() {
    let runtime = runtime();
    // Three ways a replica-selection plugin fails at bind time.
    let broken = [
        (
            HookSetting {
                config: r#"{"maxLagBytes":"lots"}"#.into(),
                ..HookSetting::default_for(Hook::ReplicaSelection)
            },
            "maxLagBytes",
        ),
        (
            HookSetting {
                source: "builtin:stagger".into(),
                ..HookSetting::default_for(Hook::ReplicaSelection)
            },
            "builtin:stagger",
        ),
        (
            HookSetting {
                source: "/nonexistent/kvpilot-test-plugin.wasm".into(),
                ..HookSetting::default_for(Hook::ReplicaSelection)
            },
            "cannot read the file",
        ),
    ];
    let candidates = vec![
        member("cache-1", 1, Role::Replica),
        Member {
            offset: 9000,
            ..member("cache-2", 2, Role::Replica)
        },
    ];
    for (setting, says) in broken {
        let with = |failure| PolicySettings {
            replica_selection: Some(HookSetting {
                failure,
                ..setting.clone()
            }),
            ..PolicySettings::default()
        };

        // Under Fail: the hook's calls fail with the binding's error, the others answer.
        let policies = WasmPolicies::bind(&runtime, &with(FailurePolicy::Fail)).await;
        let error = policies
            .select_replica(selection(candidates.clone()))
            .await
            .expect_err(&format!("Fail must refuse {}", setting.source));
        assert!(error.to_string().contains(says), "{error}");
        let step = policies
            .rollout_step(rollout_request())
            .await
            .expect("rollout");
        assert_eq!(step.answer, Step::Done);
        let problems = policies.bind_problems();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].message.contains(says), "{problems:?}");

        let policies = WasmPolicies::bind(&runtime, &with(FailurePolicy::Fallback)).await;
        assert_eq!(policies.bind_problems()[0].failure, FailurePolicy::Fallback);
        for _ in 0..2 {
            let decided = policies
                .select_replica(selection(candidates.clone()))
                .await
                .expect("the builtin answers");
            assert_eq!(decided.answer, Selection::Promote("cache-2".into()));
            assert_eq!(decided.record.plugin, "builtin:most-caught-up");
            let why = decided.record.fallback_from.expect("fallback recorded");
            assert!(why.contains(says), "{why}");
        }
        // The other hooks are unaffected.
        let step = policies
            .rollout_step(rollout_request())
            .await
            .expect("rollout");
        assert_eq!(step.answer, Step::Done);
        assert!(step.record.fallback_from.is_none());
    }
}
