//! The `kvpilot` command line.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = kvpilot::cli::Cli::parse();
    kvpilot::cli::run(cli)
}
