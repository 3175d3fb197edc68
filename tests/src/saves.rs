//! Watches snapshots from outside the reconciler: every member's role, `LASTSAVE`
//! (`rdb_last_save_time`) and `rdb_bgsave_in_progress`, read over RESP in rounds; and the
//! helpers the snapshot tests use to count save attempts, save by hand and force a full sync.

use crate::probe;
use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A bound in case nobody stops the watcher.
const LIMIT: Duration = Duration::from_secs(300);

/// One member's persistence state at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// The process (`run_id`): a restarted member starts a new timeline.
    pub run_id: String,
    pub primary: bool,
    /// `rdb_last_save_time`, as `LASTSAVE` reports it.
    pub last_save: i64,
    /// `rdb_bgsave_in_progress` (a `BGSAVE`, or the fork of a full sync on a primary).
    pub saving: bool,
}

/// A completed save seen by the watcher: `LASTSAVE` moved within one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaveSeen {
    pub member: SocketAddr,
    pub from: i64,
    pub to: i64,
    /// Whether the member was a primary in the sample before or after the change.
    pub as_primary: bool,
}

/// What the watcher saw.
#[derive(Debug, Default, Clone)]
pub struct Watched {
    pub rounds: u64,
    /// The most members with `rdb_bgsave_in_progress:1` in one round.
    pub max_saving: usize,
    /// The members saving in that round.
    pub worst: Vec<SocketAddr>,
    /// Rounds in which at least one member was saving.
    pub saving_rounds: u64,
    /// Every member's distinct consecutive states, in order.
    pub timelines: BTreeMap<SocketAddr, Vec<State>>,
}

impl Watched {
    /// Every `LASTSAVE` change within one process, in order per member.
    pub fn saves(&self) -> Vec<SaveSeen> {
        let mut out = Vec::new();
        for (&member, states) in &self.timelines {
            for w in states.windows(2) {
                let (a, b) = (&w[0], &w[1]);
                if a.run_id == b.run_id && a.last_save != b.last_save {
                    out.push(SaveSeen {
                        member,
                        from: a.last_save,
                        to: b.last_save,
                        as_primary: a.primary || b.primary,
                    });
                }
            }
        }
        out
    }

    /// The saves of one member.
    pub fn saves_of(&self, member: SocketAddr) -> Vec<SaveSeen> {
        self.saves()
            .into_iter()
            .filter(|s| s.member == member)
            .collect()
    }

    /// Whether `member` was ever seen saving.
    pub fn seen_saving(&self, member: SocketAddr) -> bool {
        self.timelines
            .get(&member)
            .is_some_and(|t| t.iter().any(|s| s.saving))
    }
}

/// A background task that samples every member every `every`.
pub struct SaveWatch {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Watched>,
}

impl SaveWatch {
    pub fn start(members: Vec<SocketAddr>, every: Duration) -> SaveWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut conns: BTreeMap<SocketAddr, redis::aio::MultiplexedConnection> =
                BTreeMap::new();
            let mut seen = Watched::default();
            loop {
                // Read before the round: once stopped, one more full round is taken, so the
                // watcher has seen whatever happened before `stop`.
                let stopping = flag.load(Ordering::SeqCst) || started.elapsed() >= LIMIT;
                // All members at once, so that one round is one moment.
                let mut round = tokio::task::JoinSet::new();
                for &m in &members {
                    let conn = match conns.entry(m) {
                        Entry::Occupied(e) => e.get().clone(),
                        Entry::Vacant(e) => match probe::connect(m).await {
                            Ok(c) => e.insert(c).clone(),
                            // Killed or restarting: skipped this round.
                            Err(_) => continue,
                        },
                    };
                    round.spawn(async move { (m, sample(conn).await) });
                }
                let mut saving = Vec::new();
                for (m, state) in round.join_all().await {
                    let Some(state) = state else {
                        conns.remove(&m);
                        continue;
                    };
                    if state.saving {
                        saving.push(m);
                    }
                    let timeline = seen.timelines.entry(m).or_default();
                    if timeline.last() != Some(&state) {
                        timeline.push(state);
                    }
                }
                seen.rounds += 1;
                if !saving.is_empty() {
                    seen.saving_rounds += 1;
                }
                if saving.len() > seen.max_saving {
                    seen.max_saving = saving.len();
                    seen.worst = saving;
                }
                if stopping {
                    break;
                }
                tokio::time::sleep(every).await;
            }
            seen
        });
        SaveWatch { stop, task }
    }

    /// Stops after one more round that starts now.
    pub async fn stop(self) -> Watched {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("the save watcher panicked")
    }
}

/// One `INFO server replication persistence` of a member.
async fn sample(mut conn: redis::aio::MultiplexedConnection) -> Option<State> {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .arg("replication")
        .arg("persistence")
        .query_async(&mut conn)
        .await
        .ok()?;
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    Some(State {
        run_id: field("run_id")?.to_string(),
        primary: field("role")? == "master",
        last_save: field("rdb_last_save_time")?.parse().ok()?,
        saving: field("rdb_bgsave_in_progress")? == "1",
    })
}

/// `rdb_saves` of `addr`: the snapshots its server process has attempted, failed ones included
/// (Valkey 8 and Redis 7 count a save when its fork starts).
pub async fn attempts(addr: SocketAddr) -> Result<u64, String> {
    let info = info(addr, "persistence").await?;
    field(&info, "rdb_saves")
        .ok_or_else(|| format!("{addr}: no rdb_saves in INFO persistence"))?
        .parse()
        .map_err(|e| format!("{addr}: rdb_saves: {e}"))
}

/// `sync_full` of `addr`: full synchronisations it served as a primary.
pub async fn full_syncs_served(addr: SocketAddr) -> Result<u64, String> {
    let info = info(addr, "stats").await?;
    field(&info, "sync_full")
        .ok_or_else(|| format!("{addr}: no sync_full in INFO stats"))?
        .parse()
        .map_err(|e| format!("{addr}: sync_full: {e}"))
}

/// Starts a `BGSAVE` on `addr` and waits (bounded) until `LASTSAVE` moves past `before`.
/// `LASTSAVE` has second resolution: the save starts once the clock has passed `before`'s
/// second (the members run on this machine's clock).
pub async fn save_by_hand(addr: SocketAddr, before: i64) -> Result<(), String> {
    for _ in 0..30 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_secs();
        if i64::try_from(now).map_err(|e| e.to_string())? > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut conn = probe::connect(addr).await?;
    let _: String = redis::cmd("BGSAVE")
        .query_async(&mut conn)
        .await
        .map_err(|e| format!("{addr}: BGSAVE: {e}"))?;
    probe::eventually(
        &format!("{addr} saved"),
        Duration::from_secs(30),
        async || {
            let now = probe::lastsave(addr).await?;
            if now > before {
                Ok(())
            } else {
                let persistence = info(addr, "persistence").await?;
                Err(format!("LASTSAVE still {now}: {persistence}"))
            }
        },
    )
    .await;
    Ok(())
}

/// Makes the replica `addr` of `primary` do a full synchronisation and waits (bounded) until
/// it is done: `REPLICAOF NO ONE` gives it a history of its own, so when it follows `primary`
/// again a partial resync is impossible.
pub async fn force_full_sync(addr: SocketAddr, primary: SocketAddr) -> Result<(), String> {
    let served = full_syncs_served(primary).await?;
    let mut conn = probe::connect(addr).await?;
    for args in [
        vec!["NO".to_string(), "ONE".to_string()],
        vec![primary.ip().to_string(), primary.port().to_string()],
    ] {
        let _: String = redis::cmd("REPLICAOF")
            .arg(&args)
            .query_async(&mut conn)
            .await
            .map_err(|e| format!("{addr}: REPLICAOF {args:?}: {e}"))?;
    }
    probe::eventually(
        &format!("{addr} fully resynced from {primary}"),
        Duration::from_secs(30),
        async || {
            let replication = info(addr, "replication").await?;
            let up = field(&replication, "master_link_status") == Some("up");
            let syncing = field(&replication, "master_sync_in_progress") != Some("0");
            let now_served = full_syncs_served(primary).await?;
            if up && !syncing && now_served > served {
                Ok(())
            } else {
                Err(format!(
                    "link up {up}, syncing {syncing}, full syncs served {served} -> {now_served}"
                ))
            }
        },
    )
    .await;
    Ok(())
}

async fn info(addr: SocketAddr, section: &str) -> Result<String, String> {
    let mut conn = probe::connect(addr).await?;
    redis::cmd("INFO")
        .arg(section)
        .query_async(&mut conn)
        .await
        .map_err(|e| format!("{addr}: INFO {section}: {e}"))
}

fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}
