//! `kvpilot policy bench`: each default plugin at 3, 100 and 1000 members, a fresh sandbox
//! per call, against the same policy linked natively, and the steady-state cost per reconcile:
//! the same request again, answered from the memo (see `memo.rs`).

use super::{Hook, Plugin, PolicyError, PolicyRuntime, native};
use kvpilot_sdk::{
    Cluster, Member, Role, RolloutRequest, ScheduleRequest, SelectionReason, SelectionRequest,
    SnapshotMode,
};
use serde::Serialize;
use std::time::{Duration, Instant};

/// Member counts measured.
pub const SIZES: [usize; 3] = [3, 100, 1000];

/// How many calls are timed and how many run first, untimed.
#[derive(Debug, Clone, Copy)]
pub struct Rounds {
    pub iterations: usize,
    pub warmup: usize,
}

impl Default for Rounds {
    fn default() -> Self {
        Rounds {
            iterations: 2000,
            warmup: 200,
        }
    }
}

/// One measured row; the first six fields are the report format.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    pub hook: Hook,
    pub plugin: String,
    pub members: usize,
    pub wasm_p50_us: f64,
    pub wasm_p99_us: f64,
    pub native_p50_us: f64,
    /// p50 of the same call with every member's zone and node absent (one string per member
    /// instead of three): the difference to `wasm_p50_us` is what crossing those strings into
    /// the sandbox costs (the canonical ABI calls the guest's allocator once per string).
    pub wasm_p50_bare_us: f64,
    /// Median time to load the plugin again from its bytes once they were compiled: what the
    /// operator does for every `PolicyPlugin` it reconciles (see [`cached_load`]).
    pub cached_load_us: f64,
    /// p50 and p99 of the same request answered again (a steady reconcile: nothing changed):
    /// the memo's lookup, no instance. `wasm_p50_us` is the fresh call beside it.
    pub hit_p50_us: f64,
    pub hit_p99_us: f64,
}

fn micros(d: Duration) -> f64 {
    (d.as_nanos() as f64 / 10.0).round() / 100.0
}

/// `q` in 0..=100 of sorted samples.
fn percentile(sorted: &[Duration], q: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(sorted.len() * q / 100).min(sorted.len() - 1)]
}

fn member(i: usize, n: usize) -> Member {
    let primary = i == 0;
    Member {
        name: format!("bench-{i}"),
        shard: 0,
        ordinal: u32::try_from(i).unwrap_or(u32::MAX),
        role: if primary {
            Role::Primary
        } else {
            Role::Replica
        },
        ready: true,
        // The upper half is already rolled out, so rollout has work left and selection has
        // eligible candidates.
        on_desired_revision: i >= n / 2,
        link_up: true,
        syncing: false,
        offset: 1_000_000 - (i as u64 % 7) * 10,
        lag_bytes: (i as u64 % 7) * 10,
        keys: 50_000,
        zone: Some(format!("zone-{}", i % 3)),
        node: Some(format!("node-{i}")),
    }
}

fn cluster(n: usize) -> Cluster {
    Cluster {
        name: "bench".into(),
        namespace: "default".into(),
        engine_version: "8.0.1".into(),
        shards: 1,
        replicas_per_shard: u32::try_from(n.saturating_sub(1)).unwrap_or(u32::MAX),
        ..Cluster::default()
    }
}

/// A planned handover among `n` members (candidates: the replicas).
pub fn selection_request(n: usize) -> SelectionRequest {
    let members: Vec<Member> = (0..n).map(|i| member(i, n)).collect();
    SelectionRequest {
        reason: SelectionReason::PlannedHandover,
        cluster: cluster(n),
        primary: members.first().cloned(),
        candidates: members.into_iter().skip(1).collect(),
        config: kvpilot_sdk::empty_config(),
    }
}

/// Replica-only snapshots, five minutes apart, for `n` members.
pub fn schedule_request(n: usize) -> ScheduleRequest {
    ScheduleRequest {
        mode: SnapshotMode::ReplicasOnly,
        cluster: cluster(n),
        schedule: "0 3 * * *".into(),
        stagger_minutes: 5,
        members: (0..n).map(|i| member(i, n)).collect(),
        config: kvpilot_sdk::empty_config(),
    }
}

/// A half-done rollout of `n` members.
pub fn rollout_request(n: usize) -> RolloutRequest {
    RolloutRequest {
        cluster: cluster(n),
        members: (0..n).map(|i| member(i, n)).collect(),
        max_in_flight: 1,
        max_lag_bytes: 1 << 20,
        config: kvpilot_sdk::empty_config(),
    }
}

/// Times `rounds` calls of `f`, after the warm-up; sorted samples.
async fn time_async<F, Fut>(rounds: Rounds, mut f: F) -> Result<Vec<Duration>, PolicyError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), PolicyError>>,
{
    for _ in 0..rounds.warmup {
        f().await?;
    }
    let mut samples = Vec::with_capacity(rounds.iterations);
    for _ in 0..rounds.iterations {
        let started = Instant::now();
        f().await?;
        samples.push(started.elapsed());
    }
    samples.sort_unstable();
    Ok(samples)
}

fn time_sync(
    rounds: Rounds,
    mut f: impl FnMut() -> Result<(), PolicyError>,
) -> Result<Vec<Duration>, PolicyError> {
    for _ in 0..rounds.warmup {
        f()?;
    }
    let mut samples = Vec::with_capacity(rounds.iterations);
    for _ in 0..rounds.iterations {
        let started = Instant::now();
        f()?;
        samples.push(started.elapsed());
    }
    samples.sort_unstable();
    Ok(samples)
}

/// The median time of [`PolicyRuntime::load_bytes`] on bytes it compiled before, as the
/// operator loads a `PolicyPlugin` from a ConfigMap or a download: the sha256 of the whole
/// component, the cache lookup, and a `Plugin` sharing the cached artifact. The instance
/// template (`InstancePre`), the export indices, the import check and `info()` were all made
/// when the digest was first compiled and are part of the cache entry, so a cached load makes
/// no instance. A load that compiles (a cache miss) is an error here, not a slow sample.
pub async fn cached_load(
    runtime: &PolicyRuntime,
    plugin: &Plugin,
) -> Result<Duration, PolicyError> {
    let bytes = plugin_bytes(plugin)?;
    let compiled = runtime.cached_components();
    let mut samples = Vec::with_capacity(21);
    for _ in 0..21 {
        let started = Instant::now();
        let loaded = runtime.load_bytes(plugin.name(), &bytes).await?;
        samples.push(started.elapsed());
        if !loaded.shares_compiled(plugin) || runtime.cached_components() != compiled {
            return Err(PolicyError::Load {
                plugin: plugin.name().to_string(),
                message: "the cached load compiled again".into(),
            });
        }
    }
    samples.sort_unstable();
    Ok(percentile(&samples, 50))
}

/// A copy of a builtin's component bytes, as a ConfigMap or a download would hand them over.
fn plugin_bytes(plugin: &Plugin) -> Result<Vec<u8>, PolicyError> {
    super::source::builtin_bytes(
        plugin
            .name()
            .trim_start_matches(super::source::BUILTIN_PREFIX),
    )
    .map(<[u8]>::to_vec)
    .ok_or_else(|| PolicyError::Load {
        plugin: plugin.name().to_string(),
        message: "not a builtin".into(),
    })
}

/// Every member without its zone and node (see [`BenchRow::wasm_p50_bare_us`]).
fn bare(members: &mut [Member]) {
    for m in members {
        m.zone = None;
        m.node = None;
    }
}

/// Samples of one hook at `n` members: the wasm call, the wasm call on bare members, and the
/// native policy.
struct Measured {
    wasm: Vec<Duration>,
    bare: Vec<Duration>,
    native: Vec<Duration>,
    hit: Vec<Duration>,
}

/// `memoized` answers a request seen before from the memo; `plugin` (unmemoized) runs every
/// call in a fresh sandbox.
async fn measure(
    memoized: &Plugin,
    hook: Hook,
    n: usize,
    rounds: Rounds,
) -> Result<Measured, PolicyError> {
    let fresh = memoized.clone().unmemoized();
    let plugin = &fresh;
    Ok(match hook {
        Hook::ReplicaSelection => {
            let request = selection_request(n);
            let mut stripped = request.clone();
            bare(&mut stripped.candidates);
            bare(stripped.primary.as_mut_slice());
            Measured {
                wasm: time_async(rounds, || async { plugin.select(&request).await.map(drop) })
                    .await?,
                bare: time_async(rounds, || async {
                    plugin.select(&stripped).await.map(drop)
                })
                .await?,
                native: time_sync(rounds, || native::select(&request).map(drop))?,
                hit: time_async(rounds, || async {
                    memoized.select(&request).await.map(drop)
                })
                .await?,
            }
        }
        Hook::SnapshotSchedule => {
            let request = schedule_request(n);
            let mut stripped = request.clone();
            bare(&mut stripped.members);
            Measured {
                wasm: time_async(rounds, || async {
                    plugin.schedule(&request).await.map(drop)
                })
                .await?,
                bare: time_async(rounds, || async {
                    plugin.schedule(&stripped).await.map(drop)
                })
                .await?,
                native: time_sync(rounds, || native::schedule(&request).map(drop))?,
                hit: time_async(rounds, || async {
                    memoized.schedule(&request).await.map(drop)
                })
                .await?,
            }
        }
        Hook::RolloutOrder => {
            let request = rollout_request(n);
            let mut stripped = request.clone();
            bare(&mut stripped.members);
            Measured {
                wasm: time_async(rounds, || async { plugin.next(&request).await.map(drop) })
                    .await?,
                bare: time_async(rounds, || async { plugin.next(&stripped).await.map(drop) })
                    .await?,
                native: time_sync(rounds, || native::next(&request).map(drop))?,
                hit: time_async(rounds, || async { memoized.next(&request).await.map(drop) })
                    .await?,
            }
        }
    })
}

/// Runs the whole benchmark. Every plugin is compiled before the first timed call, so that
/// compilation (and the compiler's worker threads winding down) does not land in a row.
pub async fn run(runtime: &PolicyRuntime, rounds: Rounds) -> Result<Vec<BenchRow>, PolicyError> {
    // A deadline that no sample reaches: a call over the default 100 ms (1000 members in a
    // debug build beside other work) would end the run rather than show as a slow sample.
    // The deadline does not change what a call costs.
    let limits = super::Limits {
        timeout: Duration::from_secs(2),
        ..super::Limits::default()
    };
    let mut plugins = Vec::new();
    for hook in Hook::ALL {
        let plugin = runtime.load_builtin(hook.default_builtin()).await?;
        plugins.push((hook, plugin.with_limits(limits)));
    }
    let mut rows = Vec::new();
    for (hook, plugin) in plugins {
        let cached = cached_load(runtime, &plugin).await?;
        for n in SIZES {
            let Measured {
                wasm,
                bare,
                native,
                hit,
            } = measure(&plugin, hook, n, rounds).await?;
            rows.push(BenchRow {
                hook,
                plugin: plugin.name().to_string(),
                members: n,
                wasm_p50_us: micros(percentile(&wasm, 50)),
                wasm_p99_us: micros(percentile(&wasm, 99)),
                native_p50_us: micros(percentile(&native, 50)),
                wasm_p50_bare_us: micros(percentile(&bare, 50)),
                cached_load_us: micros(cached),
                hit_p50_us: micros(percentile(&hit, 50)),
                hit_p99_us: micros(percentile(&hit, 99)),
            });
        }
    }
    Ok(rows)
}
