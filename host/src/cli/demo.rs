//! `kvpilot demo [--engine valkey|redis] [--json]`.

use crate::demo;
use clap::{Args, ValueEnum};
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DemoEngine {
    Valkey,
    Redis,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Which server to run (default: Valkey if installed, else Redis 7).
    #[arg(long, value_enum)]
    pub engine: Option<DemoEngine>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
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
    let result = demo::run(engine, &work, |step| {
        if !json {
            println!("· {step}");
        }
    })
    .await;
    let _ = std::fs::remove_dir_all(&work);
    let report = result.map_err(|e| e.to_string())?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", report.table());
    }
    Ok(ExitCode::SUCCESS)
}
