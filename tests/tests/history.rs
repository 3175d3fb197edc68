//! Safety rule 2 against real servers: whether a member holds the data is judged by its
//! replication history (ID, offset, last known role), not by its key count. Each scenario is
//! one that a key count gets wrong.

use kvpilot::decide::Action;
use kvpilot::demo::writer::Writer;
use kvpilot::platform::Platform;
use kvpilot::platform::local::server::Server;
use kvpilot_e2e::{Engine, Group, PHASE_LIMIT, Spec, StepRecord, probe};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const KEYS: u64 = 2000;

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

/// Members keep the snapshots they take (persistence is otherwise off locally).
fn persistent(name: &str, engine: Engine) -> Spec {
    Spec::new(name, engine).with_config("rdb-del-sync-files", "no")
}

/// Every member snapshots now (the snapshot records its replication ID and offset), then
/// every member is killed and the reconciler dropped: a full restart, as after a power cut.
/// `empty` loses its snapshot and comes back with nothing.
async fn full_restart(group: &mut Group, empty: &str) -> Vec<String> {
    let names: Vec<String> = group.members().into_iter().map(|(n, _)| n).collect();
    for addr in group.addresses() {
        probe::save(addr).await.expect("SAVE");
    }
    // One more reconcile, so that status records every member as it is now.
    group.step().await;
    group.abort().await;
    for name in &names {
        let mut server = Server::adopt(&group.member_dir(name)).expect("adopt");
        server.kill().expect("SIGKILL");
        let started = Instant::now();
        while server.is_alive() {
            assert!(started.elapsed() < PHASE_LIMIT, "{name} does not die");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    std::fs::remove_file(group.member_dir(empty).join("dump.rdb")).expect("remove a snapshot");
    group.reopen().await;
    names
}

/// No step promoted `member`.
fn never_promoted(history: &[StepRecord], member: &str) {
    for r in history {
        if let Some(Action::Failover { promote, .. }) = r.done() {
            assert_ne!(promote, member, "{member} was promoted: {r:#?}");
        }
    }
}

for_each_engine!(loading_holder:
    valkey_an_empty_member_is_not_promoted_while_the_holders_load => Engine::Valkey,
    redis_an_empty_member_is_not_promoted_while_the_holders_load => Engine::Redis,
);

/// After a full restart the member without a snapshot answers at once, empty; the others
/// load theirs slowly (a large dataset, made slow here with `key-load-delay`). Counting keys,
/// a loading member holds 0 and the empty one looks as good as any; by history, the loading
/// ones may hold the data (status recorded them) and the shard waits for them.
async fn loading_holder(engine: Engine) {
    let spec = persistent("loading", engine)
        // 1 ms per key while loading a snapshot: 2 s for the dataset...
        .with_config("key-load-delay", "1000")
        // ...and the loading member answers INFO meanwhile.
        .with_config("loading-process-events-interval-bytes", "1024");
    let mut group = Group::start(spec).await;
    probe::fill(group.endpoint(), "k", KEYS)
        .await
        .expect("fill");
    probe::all_hold(&group.addresses(), KEYS, PHASE_LIMIT).await;
    let empty = group
        .members()
        .into_iter()
        .map(|(n, _)| n)
        .find(|n| *n != group.primary())
        .expect("a replica");
    full_restart(&mut group, &empty).await;

    let first = group.history.len();
    let done = group.settle("elected after the restart").await;
    let history = &group.history[first..];
    never_promoted(history, &empty);
    assert!(
        history.iter().any(|r| r
            .wait
            .as_ref()
            .is_some_and(|w| w.reason.contains("is loading"))),
        "the shard waited for the loading members, saying why"
    );
    let primary = done.status.primary.clone().expect("a primary");
    assert_ne!(primary, empty);
    probe::all_hold(&group.addresses(), KEYS, PHASE_LIMIT).await;
    group.shutdown().await;
}

for_each_engine!(diskless_sync_delay_zero:
    valkey_no_member_full_syncs_from_an_empty_primary_before_the_holders_answer => Engine::Valkey,
    redis_no_member_full_syncs_from_an_empty_primary_before_the_holders_answer => Engine::Redis,
);

/// The same full restart, but the members holding the data have not answered yet (they are
/// stopped right after they start) while a client writes through the endpoint. Promoting the
/// empty member and letting it take writes would make it hold keys, and the holders would
/// then full-sync from it as soon as they answer; with `repl-diskless-sync-delay 0` (the
/// operator's setting) the empty payload arrives at once and wipes them.
async fn diskless_sync_delay_zero(engine: Engine) {
    let mut group = Group::start(persistent("diskless", engine)).await;
    probe::fill(group.endpoint(), "k", KEYS)
        .await
        .expect("fill");
    probe::all_hold(&group.addresses(), KEYS, PHASE_LIMIT).await;
    for addr in group.addresses() {
        assert_eq!(
            probe::config_get(addr, "repl-diskless-sync-delay")
                .await
                .expect("CONFIG GET")
                .as_deref(),
            Some("0")
        );
    }
    let empty = group
        .members()
        .into_iter()
        .map(|(n, _)| n)
        .find(|n| *n != group.primary())
        .expect("a replica");
    let names = full_restart(&mut group, &empty).await;
    // The holders start (parked) but freeze before the reconciler sees them answer.
    let holders: Vec<String> = names.into_iter().filter(|n| *n != empty).collect();
    group
        .cluster()
        .platform()
        .start(&holders, None)
        .await
        .expect("start the holders");
    let frozen: Vec<Server> = holders
        .iter()
        .map(|n| Server::adopt(&group.member_dir(n)).expect("adopt"))
        .collect();
    for s in &frozen {
        s.pause().expect("SIGSTOP");
    }
    let writer = Writer::start(group.endpoint(), "w", Duration::from_secs(300));
    let first = group.history.len();
    // Long enough for an election several times over.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let r = group.step().await;
        tokio::time::sleep(r.requeue_after.min(Duration::from_millis(200))).await;
    }
    for s in &frozen {
        s.resume().expect("SIGCONT");
    }
    let done = group.settle("elected once the holders answer").await;
    never_promoted(&group.history[first..], &empty);
    let log = writer.stop().await;
    let primary = done.status.primary.clone().expect("a primary");
    let addr = group.addr(&primary);
    let seqs: Vec<u64> = log.acks.iter().map(|a| a.seq).collect();
    let lost = probe::missing(addr, "w", &seqs).await.expect("read back");
    assert!(lost.is_empty(), "{} acknowledged writes lost", lost.len());
    let before: Vec<u64> = (0..KEYS).collect();
    let wiped = probe::missing(addr, "k", &before).await.expect("read back");
    assert!(
        wiped.is_empty(),
        "{} keys written before the restart are gone from {primary}",
        wiped.len()
    );
    group.shutdown().await;
}

for_each_engine!(flushed_primary:
    valkey_a_flushed_primary_is_not_overruled_by_a_replica_restarted_from_an_old_dump => Engine::Valkey,
    redis_a_flushed_primary_is_not_overruled_by_a_replica_restarted_from_an_old_dump => Engine::Redis,
);

/// `FLUSHALL` empties the primary legitimately. A replica restarted from a snapshot taken
/// before holds keys, but an older history: it must resync from the primary (and be emptied),
/// not be promoted over it (which would bring the flushed keys back and drop the primary).
async fn flushed_primary(engine: Engine) {
    let mut group = Group::start(persistent("flushed", engine)).await;
    probe::fill(group.endpoint(), "k", KEYS)
        .await
        .expect("fill");
    probe::all_hold(&group.addresses(), KEYS, PHASE_LIMIT).await;
    let primary = group.primary();
    let old_dump = group
        .members()
        .into_iter()
        .map(|(n, _)| n)
        .find(|n| *n != primary)
        .expect("a replica");
    probe::save(group.addr(&old_dump)).await.expect("SAVE");
    probe::exec(group.endpoint(), &["FLUSHALL"])
        .await
        .expect("FLUSHALL");
    probe::all_hold(&group.addresses(), 0, PHASE_LIMIT).await;
    group.step().await;

    group
        .cluster()
        .crash_and_restart(&old_dump)
        .await
        .expect("restart from the old dump");
    let old_addr = group.addr(&old_dump);
    assert_eq!(probe::dbsize(old_addr).await.expect("DBSIZE"), KEYS);
    let first = group.history.len();
    let done = group
        .run_until("the old dump resynced from the flushed primary", |r| {
            r.settled()
                && r.status
                    .members
                    .iter()
                    .all(|m| m.role != "down" && m.keys == 0)
        })
        .await;
    assert_eq!(done.status.primary.as_deref(), Some(primary.as_str()));
    never_promoted(&group.history[first..], &old_dump);
    probe::all_hold(&group.addresses(), 0, PHASE_LIMIT).await;
    group.shutdown().await;
}

for_each_engine!(split_brain:
    valkey_split_brain_is_won_by_the_newer_history => Engine::Valkey,
    redis_split_brain_is_won_by_the_newer_history => Engine::Redis,
);

/// A replica was promoted (`REPLICAOF NO ONE`, as an operator that died in the middle of a
/// failover leaves it) and took writes, while the old primary kept its follower and the
/// endpoint. The promoted one has the newer history and wins; before, the follower count and
/// the endpoint decided, and its writes were dropped.
async fn split_brain(engine: Engine) {
    let mut group = Group::start(Spec::new("split", engine)).await;
    probe::fill(group.endpoint(), "k", KEYS)
        .await
        .expect("fill");
    probe::all_hold(&group.addresses(), KEYS, PHASE_LIMIT).await;
    let old = group.primary();
    let promoted = group
        .members()
        .into_iter()
        .map(|(n, _)| n)
        .find(|n| *n != old)
        .expect("a replica");
    let promoted_addr: SocketAddr = group.addr(&promoted);
    probe::exec(promoted_addr, &["REPLICAOF", "NO", "ONE"])
        .await
        .expect("REPLICAOF NO ONE");
    probe::fill(promoted_addr, "newer", 10)
        .await
        .expect("write to the promoted member");
    let done = group.settle("one primary again").await;
    assert_eq!(done.status.primary.as_deref(), Some(promoted.as_str()));
    let newer: Vec<u64> = (0..10).collect();
    for addr in group.addresses() {
        probe::eventually(
            "every member has the newer writes",
            PHASE_LIMIT,
            async || match probe::missing(addr, "newer", &newer).await?.len() {
                0 => Ok(()),
                n => Err(format!("{addr} lacks {n} of them")),
            },
        )
        .await;
    }
    probe::all_hold(&group.addresses(), KEYS + 10, PHASE_LIMIT).await;
    group.shutdown().await;
}
