//! Cluster-mode failover timings on a local 3 × (1 primary + 1 replica) Valkey (or Redis)
//! cluster, bootstrapped by hand with the engine primitives.
//!
//! - **unplanned**: SIGKILL a shard's primary; a probe PINGs it every `--probe-ms` until it
//!   is seen dead (the operator's detection), then `CLUSTER FAILOVER FORCE` is sent to its
//!   replica at once, and the replica is written to until it acknowledges as primary. Reported:
//!   kill → seen dead, seen dead → acknowledged write, kill → acknowledged write (the
//!   server-side part of the 3 s goal), and kill → every slot-owning primary shows the new
//!   primary with its new epoch.
//! - **planned**: `CLUSTER FAILOVER` on a replica; reported: until the replica is primary,
//!   and until every slot-owning primary agrees on the new epoch (what a rollout waits for
//!   before it restarts the old primary).
//!
//! ```text
//! cargo run --release -p kvpilot --example cluster_failover -- [--engine valkey|redis]
//!     [--rounds 5] [--node-timeout-ms 1000] [--probe-ms 10] [--json]
//! ```

use std::path::PathBuf;
use std::time::Duration;

use kvpilot::demo::cluster_lab::ClusterLab;
use kvpilot::engine::slots::{balanced_ranges, slot_tags};
use kvpilot::engine::{Client, Dialect, FailoverMode, MANUAL_FAILOVER_TIMEOUT};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};

#[derive(Serialize)]
struct Unplanned {
    shard: usize,
    detect_ms: f64,
    promote_ms: f64,
    kill_to_ack_ms: f64,
    kill_to_agree_ms: f64,
}

#[derive(Serialize)]
struct Planned {
    shard: usize,
    attempts: u32,
    promote_ms: f64,
    agree_ms: f64,
}

#[derive(Serialize)]
struct Summary {
    min: f64,
    median: f64,
    max: f64,
}

#[derive(Serialize)]
struct Report {
    engine: String,
    node_timeout_ms: u64,
    probe_ms: u64,
    unplanned: Vec<Unplanned>,
    planned: Vec<Planned>,
    unplanned_kill_to_ack_ms: Summary,
    planned_agree_ms: Summary,
}

fn summary(mut v: Vec<f64>) -> Summary {
    v.sort_by(f64::total_cmp);
    let pick = |i: usize| v.get(i).copied().unwrap_or(f64::NAN);
    Summary {
        min: pick(0),
        median: pick(v.len() / 2),
        max: pick(v.len().saturating_sub(1)),
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `SET key v` on `addr` until it answers `+OK` (a primary that owns the slot).
async fn until_acked(addr: std::net::SocketAddr, key: &str, limit: Duration) -> Result<(), String> {
    let started = Instant::now();
    let frame = format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$1\r\nv\r\n", key.len());
    let mut last = String::new();
    while started.elapsed() < limit {
        let attempt = async {
            let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            stream.set_nodelay(true).map_err(|e| e.to_string())?;
            let mut conn = BufReader::new(stream);
            loop {
                conn.get_mut()
                    .write_all(frame.as_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
                let mut line = String::new();
                conn.read_line(&mut line).await.map_err(|e| e.to_string())?;
                if line.starts_with("+OK") {
                    return Ok::<(), String>(());
                }
                if started.elapsed() >= limit {
                    return Err(line);
                }
            }
        };
        match timeout(limit, attempt).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => last = e,
            Err(_) => last = "no answer".into(),
        }
        sleep(Duration::from_millis(1)).await;
    }
    Err(format!(
        "{addr} did not acknowledge within {limit:?}: {last}"
    ))
}

async fn run() -> Result<Report, String> {
    let args: Vec<String> = std::env::args().collect();
    let engine: String = arg(&args, "--engine", "valkey".to_owned());
    let rounds: usize = arg(&args, "--rounds", 5);
    let node_timeout = Duration::from_millis(arg(&args, "--node-timeout-ms", 1000));
    let probe = Duration::from_millis(arg(&args, "--probe-ms", 10));
    let (binary, dialect) = match engine.as_str() {
        "redis" => ("redis-server", Dialect::Redis),
        _ => ("valkey-server", Dialect::Valkey),
    };
    let binary = std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(binary))
                .find(|p| p.is_file())
        })
        .ok_or_else(|| format!("{binary} not found on PATH"))?;
    let work = tempfile_dir()?;
    let mut lab = ClusterLab::start(&binary, dialect, &work, 3, 1, node_timeout).await?;
    let ranges = balanced_ranges(3);
    // Which member is primary of each shard right now (failovers swap them).
    let mut primary: Vec<usize> = (0..3).collect();
    let mut replica: Vec<usize> = (0..3).map(|s| lab.replica_index(s, 0)).collect();
    let mut unplanned = Vec::new();
    let mut planned = Vec::new();
    for round in 0..rounds {
        let shard = round % 3;
        let key = format!(
            "bench:{{{}}}",
            slot_tags()[usize::from(ranges[shard].start)]
        );
        let (p, r) = (primary[shard], replica[shard]);
        // Unplanned: SIGKILL, detect, FORCE, first acknowledged write.
        let probe_client = Client::connect(lab.members[p].addr(), None, dialect)
            .await
            .map_err(|e| e.to_string())?;
        let heir = lab.client(r).await?;
        let killed = Instant::now();
        lab.kill(p).await?;
        // The probe: any failure to answer within 10 probe intervals counts as dead.
        while let Ok(Ok(())) = timeout(probe * 10, probe_client.ping()).await {
            sleep(probe).await;
        }
        let seen_dead = Instant::now();
        heir.cluster_failover(FailoverMode::Force)
            .await
            .map_err(|e| e.to_string())?;
        until_acked(lab.addr(r), &key, Duration::from_secs(10)).await?;
        let acked = Instant::now();
        let epoch = lab.nodes(r).await?.myself().map_or(0, |m| m.config_epoch);
        lab.wait_primaries_agree(&lab.members[r].id.clone(), epoch, Duration::from_secs(10))
            .await?;
        let agreed = Instant::now();
        unplanned.push(Unplanned {
            shard,
            detect_ms: ms(seen_dead - killed),
            promote_ms: ms(acked - seen_dead),
            kill_to_ack_ms: ms(acked - killed),
            kill_to_agree_ms: ms(agreed - killed),
        });
        // The killed member comes back (with nodes.conf, no data): it learns the newer epoch
        // and follows the heir.
        lab.start_member(p).await?;
        let heir_id = lab.members[r].id.clone();
        lab.wait_member(p, Duration::from_secs(30), "follows the heir", |n| {
            n.myself()
                .is_some_and(|me| me.primary_id.as_deref() == Some(heir_id.as_str()))
        })
        .await?;
        lab.wait_serving(Duration::from_secs(30)).await?;
        wait_synced(&lab, r, p).await?;
        (primary[shard], replica[shard]) = (r, p);

        // Planned: CLUSTER FAILOVER back to the restarted member, once the views settled
        // (right after a restart the election can fail for lack of votes; a failed attempt
        // is retried and counted).
        let (p, r) = (primary[shard], replica[shard]);
        lab.wait_settled(r, Duration::from_secs(30)).await?;
        let target = lab.client(r).await?;
        let mut attempts = 0;
        let (started, epoch) = loop {
            attempts += 1;
            let started = Instant::now();
            match target
                .cluster_failover_and_wait(FailoverMode::Graceful, MANUAL_FAILOVER_TIMEOUT)
                .await
            {
                Ok(epoch) => break (started, epoch),
                Err(e) if attempts >= 3 => return Err(e.to_string()),
                Err(_) => sleep(Duration::from_secs(1)).await,
            }
        };
        let promoted = Instant::now();
        lab.wait_primaries_agree(&lab.members[r].id.clone(), epoch, Duration::from_secs(10))
            .await?;
        let agreed = Instant::now();
        planned.push(Planned {
            shard,
            attempts,
            promote_ms: ms(promoted - started),
            agree_ms: ms(agreed - started),
        });
        lab.wait_serving(Duration::from_secs(30)).await?;
        (primary[shard], replica[shard]) = (r, p);
        wait_synced(&lab, primary[shard], replica[shard]).await?;
    }
    // Stop every member (the lab's guard kills them) before removing their directories.
    drop(lab);
    let _ = std::fs::remove_dir_all(&work);
    Ok(Report {
        engine,
        node_timeout_ms: node_timeout.as_millis() as u64,
        probe_ms: probe.as_millis() as u64,
        unplanned_kill_to_ack_ms: summary(unplanned.iter().map(|u| u.kill_to_ack_ms).collect()),
        planned_agree_ms: summary(planned.iter().map(|p| p.agree_ms).collect()),
        unplanned,
        planned,
    })
}

/// Waits until `replica`'s offset equals `primary`'s and its link is up (bounded).
async fn wait_synced(lab: &ClusterLab, primary: usize, replica: usize) -> Result<(), String> {
    let p = lab.client(primary).await?;
    let r = lab.client(replica).await?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if let (Ok(po), Ok(ro)) = (p.observe().await, r.observe().await)
            && ro.link_up()
            && !ro.syncing()
            && ro.offset().is_some()
            && ro.offset() == po.offset()
        {
            return Ok(());
        }
        sleep(Duration::from_millis(20)).await;
    }
    Err(format!(
        "member {replica} did not catch up with member {primary}"
    ))
}

fn tempfile_dir() -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("kvpilot-cluster-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

#[tokio::main]
async fn main() {
    let json = std::env::args().any(|a| a == "--json");
    match run().await {
        Ok(report) if json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
        }
        Ok(report) => {
            for u in &report.unplanned {
                println!(
                    "unplanned shard {}: detect {:.1} ms, FORCE → ack {:.1} ms, kill → ack {:.1} ms, kill → all primaries agree {:.1} ms",
                    u.shard, u.detect_ms, u.promote_ms, u.kill_to_ack_ms, u.kill_to_agree_ms
                );
            }
            for p in &report.planned {
                println!(
                    "planned shard {} (attempt {}): replica primary after {:.1} ms, all primaries agree after {:.1} ms",
                    p.shard, p.attempts, p.promote_ms, p.agree_ms
                );
            }
        }
        Err(e) => {
            eprintln!("cluster_failover: {e}");
            std::process::exit(1);
        }
    }
}
