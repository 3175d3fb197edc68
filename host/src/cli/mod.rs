//! Command-line entry points: one module per subcommand.

pub mod crdgen;
pub mod demo;
pub mod local;
pub mod operator;
pub mod policy;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "kvpilot",
    version,
    about = "Redis-protocol datastores with WebAssembly policies"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write the CustomResourceDefinitions as YAML files, one per CRD.
    Crdgen(crdgen::CrdgenArgs),
    /// Run the demo: rollouts and failovers under writes on a local group.
    Demo(demo::DemoArgs),
    /// Run a replication group of real server processes on loopback.
    #[command(subcommand)]
    Local(local::LocalCommand),
    /// Run the Kubernetes operator.
    Operator(operator::OperatorArgs),
    /// Inspect, run and benchmark policy plugins.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
}

/// Runs a parsed command line; errors are printed to stderr and give a non-zero exit.
/// The longest error message the CLI prints.
const CLI_ERROR_BYTES: usize = 64 * 1024;

pub fn run(cli: Cli) -> ExitCode {
    init_logging(
        matches!(&cli.command, Command::Operator(a) if a.log_format == operator::LogFormat::Json),
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Policy(cmd) => policy::run(cmd).await,
            Command::Local(cmd) => local::run(cmd).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Crdgen(args) => crdgen::run(args).await,
            Command::Operator(args) => operator::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(message) => {
            // Errors may quote a plugin's answer or a user's file: no control character
            // reaches the terminal (docs/architecture.md, rule 10).
            eprintln!(
                "error: {}",
                crate::policy::text::clean(&message, CLI_ERROR_BYTES)
            );
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr; `RUST_LOG` filters (default: kvpilot at info), `KVPILOT_LOG_FORMAT=json`
/// (or `json`, from `kvpilot operator --log-format json`) switches to JSON lines.
fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("kvpilot=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json || std::env::var("KVPILOT_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
