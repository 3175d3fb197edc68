//! `kvpilot demo [--engine valkey|redis] [--json] [--probe-interval-ms N] [--probe-timeout-ms N]
//! [--failure-threshold N]`, `kvpilot demo cluster`, `kvpilot demo snapshots`.

use crate::demo;
use clap::{Args, Subcommand, ValueEnum};
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DemoEngine {
    Valkey,
    Redis,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Which server to run (default: Valkey if installed, else Redis 7).
    #[arg(long, value_enum, global = true)]
    pub engine: Option<DemoEngine>,
    /// Print the report as JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// The group's `spec.failureDetection.probeIntervalMs` (50 to 10000; demo default 100).
    #[arg(long)]
    pub probe_interval_ms: Option<u32>,
    /// `spec.failureDetection.probeTimeoutMs` (100 to 10000; default 1000).
    #[arg(long)]
    pub probe_timeout_ms: Option<u32>,
    /// `spec.failureDetection.failureThreshold` (2 to 20; default 3).
    #[arg(long)]
    pub failure_threshold: Option<u32>,
    #[command(subcommand)]
    pub scenario: Option<Scenario>,
}

#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// Cluster mode: three shards of one primary and one replica, a cluster writer over every
    /// slot, (a) a rolling restart of every member, (b) SIGKILL of a shard's primary, (c) a
    /// shard's primary restarted empty with its nodes.conf.
    Cluster,
    /// Write latency without snapshots, with primaryOnly and with staggered replicasOnly
    /// snapshots, on a dataset large enough for the fork to matter.
    Snapshots {
        /// Dataset size in MiB (1 KiB values).
        #[arg(long, default_value_t = 1024)]
        dataset_mib: u64,
    },
}

pub async fn run(args: DemoArgs) -> Result<ExitCode, String> {
    let engine = match args.engine {
        Some(DemoEngine::Valkey) => kvpilot_sdk::Engine::Valkey,
        Some(DemoEngine::Redis) => kvpilot_sdk::Engine::Redis,
        None if demo::find_engine(kvpilot_sdk::Engine::Valkey).is_ok() => {
            kvpilot_sdk::Engine::Valkey
        }
        None if demo::find_engine(kvpilot_sdk::Engine::Redis).is_ok() => kvpilot_sdk::Engine::Redis,
        None => {
            return Err(
                "neither valkey-server nor redis-server was found on PATH: install one, e.g. \
                 `apt-get install -t bookworm-backports valkey-server` (Debian 12, bookworm-backports) \
                 or `apt-get install redis-server`"
                    .into(),
            );
        }
    };
    let work = std::env::temp_dir().join(format!("kvpilot-demo-{}", std::process::id()));
    let json = args.json;
    let progress = |step: &str| {
        if !json {
            println!("· {step}");
        }
    };
    let (value, table) = match args.scenario {
        None => {
            let detection = crate::api::FailureDetectionSpec {
                probe_interval_ms: args.probe_interval_ms,
                probe_timeout_ms: args.probe_timeout_ms,
                failure_threshold: args.failure_threshold,
            };
            let result = demo::run(engine, &work, &detection, progress).await;
            let _ = std::fs::remove_dir_all(&work);
            let report = result.map_err(|e| e.to_string())?;
            (serde_json::to_string_pretty(&report), report.table())
        }
        Some(Scenario::Cluster) => {
            let durations = demo::cluster::Durations::default();
            let result = demo::cluster::run(engine, &work, durations, progress).await;
            let _ = std::fs::remove_dir_all(&work);
            let report = result.map_err(|e| e.to_string())?;
            (serde_json::to_string_pretty(&report), report.table())
        }
        Some(Scenario::Snapshots { dataset_mib }) => {
            let durations = demo::snapshots::Durations::default();
            let result =
                demo::snapshots::run(engine, &work, dataset_mib, durations, progress).await;
            let _ = std::fs::remove_dir_all(&work);
            let report = result.map_err(|e| e.to_string())?;
            (serde_json::to_string_pretty(&report), report.table())
        }
    };
    if json {
        println!("{}", value.map_err(|e| e.to_string())?);
    } else {
        print!("{table}");
    }
    Ok(ExitCode::SUCCESS)
}
