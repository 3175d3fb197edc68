//! Cluster mode (`spec.shards` > 1) on the local platform, driven by the real reconciler
//! against real Valkey and Redis: bootstrap, an operator killed between bootstrap steps, a
//! per-shard failover after SIGKILL of a shard's primary under a cluster-aware writer, and
//! members back empty with their `nodes.conf` or with their data without it.

use kvpilot::decide::Action;
use kvpilot::demo::cluster::{Wipe, restart_wiped};
use kvpilot::demo::cluster_writer::{ClusterWriter, missing};
use kvpilot::engine::HostPort;
use kvpilot::engine::slots::balanced_ranges;
use kvpilot_e2e::group::StepRecord;
use kvpilot_e2e::{Engine, Group, PHASE_LIMIT, Spec};
use kvpilot_sdk::SelectionReason;
use std::time::{Duration, Instant};

const SHARDS: u32 = 3;

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

for_each_engine!(bootstrap_and_shard_failover:
    valkey_cluster_bootstrap_and_failover_of_one_shard => Engine::Valkey,
    redis_cluster_bootstrap_and_failover_of_one_shard => Engine::Redis,
);

for_each_engine!(bootstrap_resumes_after_operator_kills:
    valkey_cluster_bootstrap_resumes_after_operator_kills => Engine::Valkey,
    redis_cluster_bootstrap_resumes_after_operator_kills => Engine::Redis,
);

/// Ready, formed, every shard ready, every member on the desired revision.
fn formed(r: &StepRecord) -> bool {
    let s = &r.status;
    r.condition("Ready")
        && r.condition("ClusterFormed")
        && r.condition("SlotsAssigned")
        && s.cluster
            .as_ref()
            .is_some_and(|c| c.shards_ready == SHARDS && c.shards.len() == SHARDS as usize)
        && s.members
            .iter()
            .all(|m| m.revision.as_deref() == Some(s.desired_revision.as_str()))
}

fn seeds(group: &Group) -> Vec<HostPort> {
    group
        .members()
        .into_iter()
        .map(|(_, a)| HostPort::from(a))
        .collect()
}

/// More than `at_least` writes were acknowledged and every one reads back (`prefix` is the
/// writer's).
async fn assert_none_lost(group: &Group, prefix: &str, acked: &[u64], at_least: usize) {
    assert!(acked.len() > at_least, "{} acknowledged", acked.len());
    let lost = missing(seeds(group), prefix, acked)
        .await
        .expect("read back every acknowledged key");
    assert_eq!(lost, Vec::<u64>::new(), "acknowledged writes lost");
}

/// The status shows each shard's primary, balanced slot ranges and node ids, and the seeds.
fn check_status(r: &StepRecord, members: usize) {
    let c = r.status.cluster.as_ref().expect("cluster status");
    assert_eq!(c.seeds.len(), members, "{c:?}");
    let ranges = balanced_ranges(SHARDS as usize);
    for (i, sh) in c.shards.iter().enumerate() {
        assert_eq!(sh.shard as usize, i);
        assert!(sh.primary.is_some(), "{sh:?}");
        assert_eq!(sh.slots, vec![ranges[i].to_string()], "{sh:?}");
        assert_eq!(sh.cluster_state, "ok");
        assert!(sh.ready);
        assert!(
            sh.nodes.iter().all(|n| n.node_id.len() == 40),
            "node ids: {sh:?}"
        );
    }
}

async fn bootstrap_and_shard_failover(engine: Engine) {
    let spec = Spec::new("shards", engine).with_shards(SHARDS, 1);
    let mut group = Group::open(spec).await;
    let first = group.run_until("the cluster forms", formed).await;
    check_status(&first, 6);
    // `kvpilot local status` shows the shards, their slots, node ids and the seeds.
    let shown = kvpilot::cli::local::render(
        &first.status,
        kvpilot::cli::local::Reconciler::Running { pid: None },
    );
    let c = first.status.cluster.as_ref().unwrap();
    assert!(shown.contains("3/3 shards ready"), "{shown}");
    for seed in &c.seeds {
        assert!(shown.contains(seed.as_str()), "{shown}");
    }
    for sh in &c.shards {
        assert!(shown.contains(&sh.slots[0]), "{shown}");
        for n in &sh.nodes {
            assert!(
                shown.contains(&format!("{}={}", n.member, n.node_id)),
                "{shown}"
            );
        }
    }
    eprintln!("{shown}");
    // No client fence in cluster mode (a demoted primary redirects with MOVED).
    assert!(!shown.contains("fence pending"), "{shown}");
    // Members are named per shard and each has its own loopback address.
    let members = group.members();
    assert_eq!(members[0].0, "shards-s0-0");
    assert_eq!(members[5].0, "shards-s2-1");
    let mut ips: Vec<_> = members.iter().map(|(_, a)| a.ip()).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 6, "one 127.0.0.x per member: {members:?}");
    // The bootstrap steps, each once.
    let actions = group.done_actions();
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::ClusterMeet { .. }))
    );
    assert_eq!(
        actions
            .iter()
            .filter(|a| matches!(a, Action::AssignSlots { .. }))
            .count(),
        1
    );
    assert_eq!(
        actions
            .iter()
            .filter(|a| matches!(a, Action::ClusterReplicate { .. }))
            .count(),
        3
    );

    // A writer over keys of every slot, through a cluster client (MOVED/ASK).
    let writer = ClusterWriter::start(seeds(&group), "w", PHASE_LIMIT)
        .await
        .expect("cluster writer");
    let until = Instant::now() + Duration::from_secs(5);
    while writer.acked().await < 300 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(writer.acked().await >= 300, "the writer writes");

    let shard = 1usize;
    let victim = first.status.cluster.as_ref().unwrap().shards[shard]
        .primary
        .clone()
        .unwrap();
    let others: Vec<Option<String>> = first
        .status
        .cluster
        .as_ref()
        .unwrap()
        .shards
        .iter()
        .map(|s| s.primary.clone())
        .collect();
    let before = group.history.len();
    let killed_at = Instant::now();
    group.cluster().kill(&victim).expect("SIGKILL the primary");
    let promoted = group
        .run_until("shard 1 has a new primary", |r| {
            r.status.cluster.as_ref().is_some_and(|c| {
                c.shards[shard]
                    .primary
                    .as_ref()
                    .is_some_and(|p| *p != victim)
            })
        })
        .await;
    let to_promotion = killed_at.elapsed();
    let new_primary = promoted.status.cluster.as_ref().unwrap().shards[shard]
        .primary
        .clone()
        .unwrap();
    // Exactly one promotion, in shard 1, by FORCE, of the shard's replica; the other shards'
    // primaries were never touched (rule 8).
    let promotions: Vec<Action> = group.history[before..]
        .iter()
        .filter_map(|r| r.done().cloned())
        .filter(|a| matches!(a, Action::ClusterFailover { .. }))
        .collect();
    assert_eq!(
        promotions,
        vec![Action::ClusterFailover {
            shard: 1,
            promote: new_primary.clone(),
            reason: SelectionReason::PrimaryLost,
            takeover: false,
        }]
    );
    let healed = group.run_until("the cluster heals", formed).await;
    let after: Vec<Option<String>> = healed
        .status
        .cluster
        .as_ref()
        .unwrap()
        .shards
        .iter()
        .map(|s| s.primary.clone())
        .collect();
    assert_eq!(after[0], others[0]);
    assert_eq!(after[2], others[2]);
    assert_eq!(after[1].as_deref(), Some(new_primary.as_str()));
    // The old primary came back (with its nodes.conf) as a replica of the new one.
    let shard1 = &healed.status.cluster.as_ref().unwrap().shards[shard];
    assert!(shard1.ready && shard1.config_epoch > 0, "{shard1:?}");
    assert!(
        healed
            .status
            .members
            .iter()
            .any(|m| m.name == victim && m.ready && m.role == "replica"),
        "{:?}",
        healed.status.members
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = writer.stop().await;
    let acked = log.acked();
    assert_none_lost(&group, "w", &acked, 300).await;
    eprintln!(
        "{engine:?}: SIGKILL → new primary visible in status: {} ms; {} writes acknowledged, 0 lost",
        to_promotion.as_millis(),
        acked.len()
    );
    group.shutdown().await;
}

/// The operator is killed right after each bootstrap step; a new one carries on from what the
/// members say and forms the cluster without repeating a step that was done.
async fn bootstrap_resumes_after_operator_kills(engine: Engine) {
    let spec = Spec::new("resume", engine).with_shards(SHARDS, 1);
    let mut group = Group::open(spec).await;
    type Step = (&'static str, fn(&Action) -> bool);
    let steps: [Step; 3] = [
        ("MEET", |a| matches!(a, Action::ClusterMeet { .. })),
        ("ADDSLOTSRANGE", |a| matches!(a, Action::AssignSlots { .. })),
        ("REPLICATE", |a| {
            matches!(a, Action::ClusterReplicate { .. })
        }),
    ];
    for (what, is) in steps {
        group.run_until(what, |r| r.done().is_some_and(is)).await;
        group.abort().await;
        group.reopen().await;
    }
    let done = group.run_until("the cluster forms", formed).await;
    check_status(&done, 6);
    let actions = group.done_actions();
    // Slots are assigned once: a second ADDSLOTSRANGE of an owned slot would have failed.
    assert_eq!(
        actions
            .iter()
            .filter(|a| matches!(a, Action::AssignSlots { .. }))
            .count(),
        1
    );
    // One REPLICATE per replica, whichever run made it.
    assert_eq!(
        actions
            .iter()
            .filter(|a| matches!(a, Action::ClusterReplicate { .. }))
            .count(),
        3
    );
    assert!(
        group.history.iter().all(|r| r.error.is_none()),
        "no step failed: {:?}",
        group
            .history
            .iter()
            .filter_map(|r| r.error.clone())
            .collect::<Vec<_>>()
    );
    group.shutdown().await;
}

for_each_engine!(rollout_per_shard:
    valkey_cluster_rollout_one_shard_at_a_time_loses_nothing => Engine::Valkey,
    redis_cluster_rollout_one_shard_at_a_time_loses_nothing => Engine::Redis,
);

/// The shard index in a member name `<name>-s<shard>-<i>`.
fn shard_of(member: &str) -> u32 {
    member
        .rsplit_once("-s")
        .and_then(|(_, rest)| rest.split('-').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no shard in {member}"))
}

/// A config change rolls every member, one shard at a time, replicas first, each primary
/// handing over by CLUSTER FAILOVER to its in-sync replica; a cluster writer loses nothing.
async fn rollout_per_shard(engine: Engine) {
    let spec = Spec::new("roll", engine).with_shards(SHARDS, 1);
    let mut group = Group::open(spec.clone()).await;
    let first = group.run_until("the cluster forms", formed).await;
    let old_revision = first.status.desired_revision.clone();
    let writer = ClusterWriter::start(seeds(&group), "r", PHASE_LIMIT)
        .await
        .expect("cluster writer");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = group.history.len();
    group.write_spec(spec.with_hz(20));
    let done = group
        .run_until("the rollout completes", |r| {
            r.status.desired_revision != old_revision && formed(r)
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = writer.stop().await;
    let steps: Vec<Action> = group.history[before..]
        .iter()
        .filter_map(|r| r.done().cloned())
        .filter(|a| a.is_rollout_step())
        .collect();
    let restarts: Vec<&str> = steps
        .iter()
        .filter_map(|a| match a {
            Action::Restart { member, .. } => Some(member.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(restarts.len(), 6, "every member once: {steps:#?}");
    let handovers = steps
        .iter()
        .filter(|a| matches!(a, Action::ClusterHandover { .. }))
        .count();
    assert_eq!(handovers, 3, "one handover per shard: {steps:#?}");
    // One shard at a time: the steps' shards never go back.
    let shards: Vec<u32> = steps
        .iter()
        .map(|a| match a {
            Action::Restart { member, .. } => shard_of(member),
            Action::ClusterHandover { shard, .. } => *shard,
            other => panic!("unexpected step {other:?}"),
        })
        .collect();
    assert!(shards.windows(2).all(|w| w[0] <= w[1]), "{shards:?}");
    assert!(
        done.status
            .members
            .iter()
            .all(|m| m.revision.as_deref() == Some(done.status.desired_revision.as_str()))
    );
    let acked = log.acked();
    assert_none_lost(&group, "r", &acked, 100).await;
    eprintln!(
        "{engine:?}: rollout of 6 members: {} writes acknowledged, 0 lost, longest wait for one key {} ms",
        acked.len(),
        log.max_key_wait().as_millis()
    );
    group.shutdown().await;
}

for_each_engine!(hung_shard_primary:
    valkey_cluster_hung_shard_primary_is_killed_before_its_replica_is_forced => Engine::Valkey,
    redis_cluster_hung_shard_primary_is_killed_before_its_replica_is_forced => Engine::Redis,
);

/// A shard's primary hangs (SIGSTOP) with the writer's next write to that shard queued on its
/// socket. It is counted per shard, killed through the platform, and only then is its replica
/// forced over; resumed afterwards (if it still existed) it could acknowledge the queued write
/// and lose it, so nothing acknowledged may be missing at the end.
async fn hung_shard_primary(engine: Engine) {
    let spec = Spec::new("hang", engine).with_shards(SHARDS, 1);
    let mut group = Group::open(spec).await;
    let first = group.run_until("the cluster forms", formed).await;
    let writer = ClusterWriter::start(seeds(&group), "h", PHASE_LIMIT)
        .await
        .expect("cluster writer");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let shard = 2usize;
    let victim = first.status.cluster.as_ref().unwrap().shards[shard]
        .primary
        .clone()
        .unwrap();
    let frozen = kvpilot::platform::local::server::Server::adopt(&group.member_dir(&victim))
        .expect("adopt the primary");
    frozen.pause().expect("SIGSTOP the primary");
    let before = group.history.len();
    group
        .run_until("shard 2 promoted", |r| {
            matches!(r.done(), Some(Action::ClusterFailover { shard: 2, .. }))
        })
        .await;
    let done: Vec<Action> = group.history[before..]
        .iter()
        .filter_map(|r| r.done().cloned())
        .collect();
    let stop = done
        .iter()
        .position(|a| matches!(a, Action::StopHung { members } if members == &vec![victim.clone()]))
        .expect("the hung primary was stopped");
    let promote = done
        .iter()
        .position(|a| matches!(a, Action::ClusterFailover { .. }))
        .unwrap();
    assert!(stop < promote, "{done:#?}");
    // No other shard was touched.
    assert!(
        done.iter()
            .all(|a| !matches!(a, Action::ClusterFailover { shard, .. } if *shard != 2)),
        "{done:#?}"
    );
    let _ = frozen.resume();
    tokio::time::sleep(Duration::from_millis(500)).await;
    group.run_until("the cluster heals", formed).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = writer.stop().await;
    let acked = log.acked();
    assert_none_lost(&group, "h", &acked, 100).await;
    group.shutdown().await;
}

for_each_engine!(lost_nodes_conf:
    valkey_cluster_member_without_nodes_conf_is_forgotten_and_rejoins => Engine::Valkey,
    redis_cluster_member_without_nodes_conf_is_forgotten_and_rejoins => Engine::Redis,
);

/// A replica comes back empty and without its `nodes.conf`: it is a new node. It is met,
/// made a replica of its shard's primary again, and its old id is forgotten everywhere.
async fn lost_nodes_conf(engine: Engine) {
    let spec = Spec::new("lost", engine).with_shards(SHARDS, 1);
    let mut group = Group::open(spec).await;
    let first = group.run_until("the cluster forms", formed).await;
    let shard = &first.status.cluster.as_ref().unwrap().shards[1];
    let primary = shard.primary.clone().unwrap();
    let victim = shard
        .nodes
        .iter()
        .find(|n| n.member != primary)
        .unwrap()
        .clone();
    let writer = ClusterWriter::start(seeds(&group), "n", PHASE_LIMIT)
        .await
        .expect("cluster writer");
    tokio::time::sleep(Duration::from_millis(300)).await;
    group.cluster().kill(&victim.member).expect("SIGKILL");
    group
        .cluster()
        .platform()
        .wait_stopped(&victim.member, Duration::from_secs(5))
        .await
        .expect("stopped");
    let dir = group.member_dir(&victim.member);
    for entry in std::fs::read_dir(&dir).expect("member dir").flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name == "nodes.conf" || name.ends_with(".rdb") || name.ends_with(".aof") {
            std::fs::remove_file(entry.path()).expect("wipe");
        }
    }
    let before = group.history.len();
    let healed = group
        .run_until("the cluster heals without the old id", |r| {
            formed(r)
                && r.status.cluster.as_ref().is_some_and(|c| {
                    c.shards[1]
                        .nodes
                        .iter()
                        .any(|n| n.member == victim.member && n.node_id != victim.node_id)
                })
                && r.done().is_none()
                && r.wait.is_none()
        })
        .await;
    let done: Vec<Action> = group.history[before..]
        .iter()
        .filter_map(|r| r.done().cloned())
        .collect();
    assert!(
        done.iter().any(
            |a| matches!(a, Action::ClusterForget { id, on } if *id == victim.node_id && on.len() == 5)
        ),
        "{done:#?}"
    );
    assert!(
        done.iter()
            .any(|a| matches!(a, Action::ClusterReplicate { member, primary: p, .. } if *member == victim.member && *p == primary)),
        "{done:#?}"
    );
    assert_eq!(
        healed.status.cluster.as_ref().unwrap().shards[1]
            .primary
            .as_deref(),
        Some(primary.as_str())
    );
    let log = writer.stop().await;
    let acked = log.acked();
    assert_none_lost(&group, "n", &acked, 0).await;
    group.shutdown().await;
}

for_each_engine!(empty_primary_with_nodes_conf:
    valkey_cluster_primary_back_empty_with_nodes_conf_stays_parked_and_its_replica_takes_over => Engine::Valkey,
    redis_cluster_primary_back_empty_with_nodes_conf_stays_parked_and_its_replica_takes_over => Engine::Redis,
);

/// `ACL DRYRUN default PSYNC ? -1` on `addr`: `true` when refused (parked).
async fn parked(addr: std::net::SocketAddr) -> bool {
    let client = redis::Client::open(format!("redis://{addr}/")).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let answer: redis::Value = redis::cmd("ACL")
        .arg(&["DRYRUN", "default", "PSYNC", "?", "-1"])
        .query_async(&mut conn)
        .await
        .expect("ACL DRYRUN");
    !matches!(answer, redis::Value::Okay)
}

fn address(group: &Group, member: &str) -> std::net::SocketAddr {
    group
        .members()
        .into_iter()
        .find(|(n, _)| n == member)
        .map(|(_, a)| a)
        .unwrap_or_else(|| panic!("no member {member}"))
}

/// A shard's primary crashes and is started again at once (as a kubelet would) with its data
/// gone but its `nodes.conf` kept: it still owns its slots and its epoch is the newest. It
/// comes back parked, so its replica cannot full-sync from it (and keeps the shard's data)
/// and no write to it is acknowledged; the operator forces the replica over, the empty
/// member follows it and only then is it released. Nothing acknowledged is lost.
async fn empty_primary_with_nodes_conf(engine: Engine) {
    let spec = Spec::new("empty", engine).with_shards(SHARDS, 1);
    let mut group = Group::open(spec).await;
    let first = group.run_until("the cluster forms", formed).await;
    let shard = 2usize;
    let sh = &first.status.cluster.as_ref().unwrap().shards[shard];
    let victim = sh.primary.clone().unwrap();
    let replica = sh
        .nodes
        .iter()
        .find(|n| n.member != victim)
        .unwrap()
        .member
        .clone();
    let writer = ClusterWriter::start(seeds(&group), "e", PHASE_LIMIT)
        .await
        .expect("cluster writer");
    let until = Instant::now() + Duration::from_secs(5);
    while writer.acked().await < 300 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(writer.acked().await >= 300, "the writer writes");
    let before = group.history.len();
    restart_wiped(group.cluster(), &victim, Wipe::Data)
        .await
        .expect("restart the primary empty");
    // Back with its nodes.conf: it owns its slots in its own view, and is parked.
    assert!(parked(address(&group, &victim)).await, "{victim} parked");
    let promoted = group
        .run_until("shard 2's replica takes over", |r| {
            r.status.cluster.as_ref().is_some_and(|c| {
                c.shards[shard]
                    .primary
                    .as_ref()
                    .is_some_and(|p| *p != victim)
            })
        })
        .await;
    let done: Vec<Action> = group.history[before..]
        .iter()
        .filter_map(|r| r.done().cloned())
        .collect();
    let promotions: Vec<&Action> = done
        .iter()
        .filter(|a| matches!(a, Action::ClusterFailover { .. }))
        .collect();
    assert_eq!(
        promotions,
        vec![&Action::ClusterFailover {
            shard: 2,
            promote: replica.clone(),
            reason: SelectionReason::PrimaryEmpty,
            takeover: false,
        }],
        "{done:#?}"
    );
    // It was never released while it was the shard's primary.
    let promoted_at = done
        .iter()
        .position(|a| matches!(a, Action::ClusterFailover { .. }))
        .unwrap();
    assert!(
        !done[..promoted_at]
            .iter()
            .any(|a| matches!(a, Action::ClusterUnpark { members } if members.contains(&victim))),
        "{done:#?}"
    );
    assert_eq!(
        promoted.status.cluster.as_ref().unwrap().shards[shard]
            .primary
            .as_deref(),
        Some(replica.as_str())
    );
    let healed = group.run_until("the cluster heals", formed).await;
    assert!(
        healed
            .status
            .members
            .iter()
            .any(|m| m.name == victim && m.ready && m.role == "replica"),
        "{:?}",
        healed.status.members
    );
    assert!(
        !parked(address(&group, &victim)).await,
        "released as a replica"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = writer.stop().await;
    let acked = log.acked();
    assert_none_lost(&group, "e", &acked, 0).await;
    group.shutdown().await;
}

for_each_engine!(primary_without_nodes_conf:
    valkey_cluster_primary_back_with_its_data_without_nodes_conf_rejoins => Engine::Valkey,
    redis_cluster_primary_back_with_its_data_without_nodes_conf_rejoins => Engine::Redis,
);

/// A shard's primary comes back with its dataset (a snapshot) but without its `nodes.conf`:
/// a new node that owns nothing and holds data. Its old id is no member's any more, so its
/// replica is forced over; the member is met, made a replica of it (its data lies on the
/// new primary's history, so nothing is dropped that the shard does not hold) and its old id
/// is forgotten everywhere.
async fn primary_without_nodes_conf(engine: Engine) {
    let spec = Spec::new("keep", engine).with_shards(SHARDS, 1);
    let mut group = Group::open(spec).await;
    let first = group.run_until("the cluster forms", formed).await;
    let shard = 0usize;
    let sh = &first.status.cluster.as_ref().unwrap().shards[shard];
    let victim = sh.primary.clone().unwrap();
    let old_id = sh
        .nodes
        .iter()
        .find(|n| n.member == victim)
        .unwrap()
        .node_id
        .clone();
    let replica = sh
        .nodes
        .iter()
        .find(|n| n.member != victim)
        .unwrap()
        .member
        .clone();
    let writer = ClusterWriter::start(seeds(&group), "k", PHASE_LIMIT)
        .await
        .expect("cluster writer");
    let until = Instant::now() + Duration::from_secs(5);
    while writer.acked().await < 300 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let addr = address(&group, &victim);
    let client = redis::Client::open(format!("redis://{addr}/")).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let _: () = redis::cmd("SAVE")
        .query_async(&mut conn)
        .await
        .expect("SAVE");
    drop(conn);
    let before = group.history.len();
    restart_wiped(group.cluster(), &victim, Wipe::NodesConf)
        .await
        .expect("restart the primary without nodes.conf");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let keys: u64 = redis::cmd("DBSIZE")
        .query_async(&mut conn)
        .await
        .expect("DBSIZE");
    assert!(keys > 0, "{victim} came back with its data");
    drop(conn);
    let healed = group
        .run_until("the cluster heals without the old id", |r| {
            formed(r)
                && r.status.cluster.as_ref().is_some_and(|c| {
                    c.shards[shard]
                        .nodes
                        .iter()
                        .any(|n| n.member == victim && n.node_id != old_id)
                })
                && r.done().is_none()
                && r.wait.is_none()
        })
        .await;
    let done: Vec<Action> = group.history[before..]
        .iter()
        .filter_map(|r| r.done().cloned())
        .collect();
    assert!(
        done.iter().any(|a| matches!(a, Action::ClusterFailover { shard: 0, promote, .. } if *promote == replica)),
        "{done:#?}"
    );
    assert!(
        done.iter()
            .any(|a| matches!(a, Action::ClusterForget { id, .. } if *id == old_id)),
        "{done:#?}"
    );
    assert!(
        done.iter().any(|a| matches!(a, Action::ClusterReplicate { member, primary, .. } if *member == victim && *primary == replica)),
        "{done:#?}"
    );
    assert_eq!(
        healed.status.cluster.as_ref().unwrap().shards[shard]
            .primary
            .as_deref(),
        Some(replica.as_str())
    );
    let log = writer.stop().await;
    let acked = log.acked();
    assert_none_lost(&group, "k", &acked, 0).await;
    group.shutdown().await;
}
