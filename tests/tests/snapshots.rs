//! Snapshots against real servers: staggered schedules in status, no snapshot on the primary in
//! replicas-only mode (also after a failover), one `BGSAVE` per shard at a time, and the
//! engine's own `save` schedule turned off again when it drifts.
//!
//! Cron has minute resolution. A member is due when its schedule fired after its `LASTSAVE`,
//! and a started member's `LASTSAVE` is its start time, so with `* * * * *` every snapshotting
//! member becomes due at the next minute boundary: the tests that need a snapshot wait for
//! that boundary (at most a minute), the others only read the schedules from status.

use kvpilot::decide::Action;
use kvpilot::status::{ClusterStatus, MemberStatus};
use kvpilot_e2e::probe;
use kvpilot_e2e::saves::SaveWatch;
use kvpilot_e2e::{Engine, Group, PHASE_LIMIT, Spec, StepRecord};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A phase that waits for the next cron minute, then for the snapshots it triggers.
const CRON_PHASE: Duration = Duration::from_secs(100);
const DAY: i64 = 86_400;

fn now_unix() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(since.as_secs()).expect("seconds fit")
}

/// The first instant strictly after the minute of `t` that is `offset` seconds after midnight UTC.
fn next_daily(t: i64, offset: i64) -> i64 {
    let candidate = t.div_euclid(DAY) * DAY + offset;
    // `next_after` starts at the minute after `t`'s.
    if candidate <= t - t.rem_euclid(60) {
        candidate + DAY
    } else {
        candidate
    }
}

fn member<'a>(status: &'a ClusterStatus, name: &str) -> Option<&'a MemberStatus> {
    status.members.iter().find(|m| m.name == name)
}

/// Whether `name` has snapshotted after `since` and the status says it succeeded.
fn saved_after(status: &ClusterStatus, name: &str, since: i64) -> bool {
    member(status, name).is_some_and(|m| {
        m.last_snapshot_unix.is_some_and(|t| t > since) && m.last_snapshot_ok == Some(true)
    })
}

/// The members' `LASTSAVE`, read directly.
async fn lastsaves(group: &Group) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for (name, addr) in group.members() {
        out.insert(name, probe::lastsave(addr).await.expect("LASTSAVE"));
    }
    out
}

/// Every snapshot the reconciler took, with the primary at the time.
fn snapshots_taken(history: &[StepRecord]) -> Vec<(String, Option<String>)> {
    history
        .iter()
        .filter_map(|r| match r.done() {
            Some(Action::Snapshot { member }) => Some((member.clone(), r.status.primary.clone())),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_are_staggered_by_member_name() {
    let spec = Spec::new("stagger", Engine::Valkey).with_snapshots("all", "0 3 * * *", "10m");
    let mut group = Group::start(spec.clone()).await;
    let before = now_unix();
    let step = group.step().await;
    let after = now_unix();
    assert!(step.settled(), "nothing to do at 03:00 yet: {step:#?}");
    assert!(
        step.decisions
            .iter()
            .any(|d| d.hook == kvpilot::policy::Hook::SnapshotSchedule
                && d.plugin == "builtin:stagger"),
        "the snapshot-schedule hook answered: {:#?}",
        step.decisions
    );
    let mut members = step.status.members.clone();
    members.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(members.len(), 3);
    for (rank, m) in members.iter().enumerate() {
        let minute = 10 * rank as i64;
        let want = format!("{minute} 3 * * *");
        assert_eq!(
            m.snapshot_schedule.as_deref(),
            Some(want.as_str()),
            "{m:#?}"
        );
        let at = 3 * 3600 + minute * 60;
        let next = m.next_snapshot_unix.expect("a next snapshot");
        assert!(
            next == next_daily(before, at) || next == next_daily(after, at),
            "{}: next snapshot {next}, expected {} ({want})",
            m.name,
            next_daily(before, at)
        );
        // The engine saves nothing on its own: the operator runs BGSAVE.
        let addr: SocketAddr = m.address.parse().expect("address");
        assert_eq!(
            probe::config_get(addr, "save").await.expect("CONFIG GET"),
            Some(String::new()),
            "{}",
            m.name
        );
    }

    group.write_spec(spec.with_snapshots("replicasOnly", "0 3 * * *", "10m"));
    let primary = group.primary();
    let step = group
        .run_until("replicas-only schedules", |r| {
            r.settled()
                && r.status
                    .members
                    .iter()
                    .all(|m| (m.name == primary) == m.snapshot_schedule.is_none())
        })
        .await;
    let now = now_unix();
    let p = member(&step.status, &primary).expect("the primary");
    assert_eq!(p.next_snapshot_unix, None, "{p:#?}");
    let mut replicas: Vec<&MemberStatus> = step
        .status
        .members
        .iter()
        .filter(|m| m.name != primary)
        .collect();
    replicas.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(replicas.len(), 2);
    for (rank, m) in replicas.iter().enumerate() {
        let minute = 10 * rank as i64;
        assert_eq!(
            m.snapshot_schedule.as_deref(),
            Some(format!("{minute} 3 * * *").as_str())
        );
        let next = m.next_snapshot_unix.expect("a next snapshot");
        let at = 3 * 3600 + minute * 60;
        assert!(
            next == next_daily(now, at) || next == next_daily(now - 5, at),
            "{}: next snapshot {next}",
            m.name
        );
    }
    group.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_never_saves_in_replicas_only_mode_even_after_a_failover() {
    let spec =
        Spec::new("replonly", Engine::Valkey).with_snapshots("replicasOnly", "* * * * *", "0m");
    let mut group = Group::start(spec).await;
    let old_primary = group.primary();
    let old_primary_addr = group.addr(&old_primary);
    let mut replicas: Vec<String> = group
        .members()
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| *n != old_primary)
        .collect();
    replicas.sort();
    let watch = SaveWatch::start(group.addresses(), Duration::from_millis(50));

    // Phase 1: at the next minute boundary both replicas save, the primary does not.
    let base = lastsaves(&group).await;
    let first = group.history.len();
    group
        .run_until_within("both replicas saved", CRON_PHASE, |r| {
            replicas.iter().all(|n| saved_after(&r.status, n, base[n]))
        })
        .await;
    group.settle("nothing else due").await;
    let mid = lastsaves(&group).await;
    for n in &replicas {
        assert!(mid[n] > base[n], "{n} saved: {} -> {}", base[n], mid[n]);
    }
    assert_eq!(
        mid[&old_primary], base[&old_primary],
        "the primary {old_primary} did not save"
    );
    let taken = snapshots_taken(&group.history[first..]);
    let mut saved: Vec<&str> = taken.iter().map(|(m, _)| m.as_str()).collect();
    saved.sort();
    assert_eq!(saved, replicas, "each replica saved once");

    // Phase 2: the primary is lost; a replica takes over and stops saving, the old primary
    // comes back as a replica and saves at the next minute boundary.
    group
        .cluster()
        .kill(&old_primary)
        .expect("SIGKILL the primary");
    let healed = group
        .run_until("a new primary, every member back", |r| {
            r.settled()
                && r.status
                    .primary
                    .as_deref()
                    .is_some_and(|p| p != old_primary)
        })
        .await;
    let new_primary = healed.status.primary.clone().expect("a primary");
    let new_primary_addr = group.addr(&new_primary);
    let other = replicas
        .iter()
        .find(|n| **n != new_primary)
        .expect("the other replica")
        .clone();
    let p = member(&healed.status, &new_primary).expect("the new primary");
    assert_eq!(p.snapshot_schedule, None, "schedules recomputed: {p:#?}");
    let back = member(&healed.status, &old_primary).expect("the old primary");
    assert_eq!(back.role, "replica");
    assert_eq!(back.snapshot_schedule.as_deref(), Some("* * * * *"));

    let base2 = lastsaves(&group).await;
    assert_eq!(base2[&new_primary], mid[&new_primary]);
    group
        .run_until_within(
            "the old primary and the other replica saved",
            CRON_PHASE,
            |r| {
                saved_after(&r.status, &old_primary, base2[&old_primary])
                    && saved_after(&r.status, &other, base2[&other])
            },
        )
        .await;
    // Anything else due at that minute would be taken before the group is settled again.
    group.settle("nothing else due").await;
    let end = lastsaves(&group).await;
    let seen = watch.stop().await;

    assert_eq!(
        end[&new_primary], mid[&new_primary],
        "the new primary {new_primary} did not save after the failover"
    );
    assert!(end[&old_primary] > base2[&old_primary]);
    for (m, primary) in snapshots_taken(&group.history) {
        assert_ne!(Some(&m), primary.as_ref(), "a snapshot on the primary");
    }
    // Seen from outside, every 50 ms: no member's LASTSAVE moved while it was a primary.
    let on_primary: Vec<_> = seen.saves().into_iter().filter(|s| s.as_primary).collect();
    assert!(on_primary.is_empty(), "saves on a primary: {on_primary:#?}");
    assert_eq!(
        seen.saves_of(new_primary_addr).len(),
        1,
        "{new_primary} saved once, as a replica: {:#?}",
        seen.timelines.get(&new_primary_addr)
    );
    assert_eq!(
        seen.saves_of(old_primary_addr).len(),
        1,
        "{old_primary} saved once, after it came back as a replica: {:#?}",
        seen.timelines.get(&old_primary_addr)
    );
    assert!(
        seen.saves_of(group.addr(&other)).len() >= 2,
        "{other} saved before and after"
    );
    let status = group.status();
    assert!(
        status
            .members
            .iter()
            .all(|m| m.last_snapshot_ok == Some(true)),
        "{:#?}",
        status.members
    );
    group.shutdown().await;
}

/// Keys loaded so that each `BGSAVE`, slowed per key, lasts about a second.
const SLOW_KEYS: u64 = 4000;
/// `rdb-key-save-delay`, microseconds per key.
const KEY_SAVE_DELAY_US: u64 = 250;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_one_bgsave_per_shard_at_a_time() {
    let spec = Spec::new("oneatatime", Engine::Valkey).with_snapshots("all", "* * * * *", "0m");
    let mut group = Group::start(spec).await;
    probe::fill(group.endpoint(), "k", SLOW_KEYS)
        .await
        .expect("fill");
    probe::all_hold(&group.addresses(), SLOW_KEYS, PHASE_LIMIT).await;
    for addr in group.addresses() {
        probe::config_set(addr, "rdb-key-save-delay", &KEY_SAVE_DELAY_US.to_string())
            .await
            .expect("slow saves down");
    }
    let names: Vec<String> = group.members().into_iter().map(|(n, _)| n).collect();
    let watch = SaveWatch::start(group.addresses(), Duration::from_millis(20));

    // Every member becomes due at the same minute boundary.
    let base = lastsaves(&group).await;
    let first = group.history.len();
    group
        .run_until_within("every member saved", CRON_PHASE, |r| {
            names.iter().all(|n| saved_after(&r.status, n, base[n]))
        })
        .await;
    let seen = watch.stop().await;

    assert_eq!(
        seen.max_saving, 1,
        "at most one BGSAVE at a time, {} rounds; worst {:?}",
        seen.rounds, seen.worst
    );
    for (name, addr) in group.members() {
        assert!(
            seen.seen_saving(addr),
            "{name}'s save lasted long enough to be seen: {:#?}",
            seen.timelines.get(&addr)
        );
        assert_eq!(
            seen.saves_of(addr).len(),
            1,
            "{name} saved once: {:#?}",
            seen.timelines.get(&addr)
        );
    }
    // They were all due together: the saves completed within the same minute.
    let minutes: Vec<i64> = seen.saves().iter().map(|s| s.to.div_euclid(60)).collect();
    assert!(
        minutes.windows(2).all(|w| w[0] == w[1]),
        "saves in one minute: {:#?}",
        seen.saves()
    );
    let taken = snapshots_taken(&group.history[first..]);
    let mut saved: Vec<&str> = taken.iter().map(|(m, _)| m.as_str()).collect();
    saved.sort();
    let mut want: Vec<&str> = names.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(saved, want, "each member saved once");
    group.shutdown().await;
}

macro_rules! for_each_engine {
    ($scenario:ident: $($test:ident => $engine:expr),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                $scenario($engine).await;
            }
        )+
    };
}

for_each_engine!(save_drift_is_corrected:
    valkey_save_drift_is_corrected => Engine::Valkey,
    redis_save_drift_is_corrected => Engine::Redis,
);

async fn save_drift_is_corrected(engine: Engine) {
    let spec = Spec::new("drift", engine).with_snapshots("replicasOnly", "0 3 * * *", "10m");
    let mut group = Group::start(spec).await;
    let primary = group.primary();
    let (replica, addr) = group
        .members()
        .into_iter()
        .find(|(n, _)| *n != primary)
        .expect("a replica");
    probe::config_set(addr, "save", "60 1")
        .await
        .expect("CONFIG SET save");
    assert_eq!(
        probe::config_get(addr, "save").await.expect("CONFIG GET"),
        Some("60 1".to_string())
    );

    let first = group.history.len();
    let fixed = group
        .run_until("the drift corrected", |r| {
            matches!(
                r.done(),
                Some(Action::Configure { member, key, value })
                    if *member == replica && key == "save" && value.is_empty()
            )
        })
        .await;
    assert_eq!(
        group.history.len() - first,
        1,
        "corrected by the first reconcile"
    );
    assert_eq!(
        probe::config_get(addr, "save").await.expect("CONFIG GET"),
        Some(String::new())
    );
    assert!(
        fixed.status.events.iter().any(|e| e.reason == "Action"
            && e.kind == "Normal"
            && e.message.contains("save")
            && e.message.contains(&replica)
            && e.message.contains("drift")),
        "an event says so: {:#?}",
        fixed.status.events
    );
    group.settle("settled after the correction").await;
    let fixes = group.history[first..]
        .iter()
        .filter(|r| matches!(r.done(), Some(Action::Configure { .. })))
        .count();
    assert_eq!(fixes, 1, "corrected once");
    for (name, addr) in group.members() {
        assert_eq!(
            probe::config_get(addr, "save").await.expect("CONFIG GET"),
            Some(String::new()),
            "{name}"
        );
    }
    group.shutdown().await;
}

/// The checks above can fail: the watcher sees two saves at once and a save on the primary
/// when they happen (here by hand, without snapshots configured).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_sees_concurrent_saves_and_saves_on_the_primary() {
    let group = Group::start(Spec::new("watcher", Engine::Valkey)).await;
    probe::fill(group.endpoint(), "k", SLOW_KEYS)
        .await
        .expect("fill");
    probe::all_hold(&group.addresses(), SLOW_KEYS, PHASE_LIMIT).await;
    for addr in group.addresses() {
        probe::config_set(addr, "rdb-key-save-delay", &KEY_SAVE_DELAY_US.to_string())
            .await
            .expect("slow saves down");
    }
    let primary = group.addr(&group.primary());
    let base = lastsaves(&group).await;
    let watch = SaveWatch::start(group.addresses(), Duration::from_millis(20));
    // LASTSAVE has second resolution: the saves must end in a later second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for addr in group.addresses() {
        let mut conn = probe::connect(addr).await.expect("connect");
        let _: String = redis::cmd("BGSAVE")
            .query_async(&mut conn)
            .await
            .expect("BGSAVE");
    }
    probe::eventually("every save done", PHASE_LIMIT, async || {
        let now = lastsaves(&group).await;
        if now.iter().all(|(n, t)| *t > base[n]) {
            Ok(())
        } else {
            Err(format!("LASTSAVE {now:?}, before {base:?}"))
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let seen = watch.stop().await;
    assert_eq!(seen.max_saving, 3, "{:#?}", seen.timelines);
    let on_primary: Vec<_> = seen.saves().into_iter().filter(|s| s.as_primary).collect();
    assert_eq!(on_primary.len(), 1, "{:#?}", seen.saves());
    assert_eq!(on_primary[0].member, primary);
    group.shutdown().await;
}
