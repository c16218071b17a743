//! The `baton` command line: one file per subcommand.

pub mod bench;
pub mod chaos;
pub mod duration;
pub mod server;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Baton: a highly available lock service with leases and fencing tokens.
#[derive(Debug, Parser)]
#[command(name = "baton", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Commands,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Run one node of the cluster described in the config file.
    Server(server::ServerArgs),
    /// Closed-loop load generator: throughput, latency percentiles, errors, client CPU.
    Bench(bench::BenchArgs),
    /// Chaos-suite tools (used by scripts/chaos).
    #[command(hide = true)]
    Chaos(chaos::ChaosArgs),
}

/// Parses the command line and runs the subcommand; the exit code is the command's.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Commands::Server(args) => server::run(args),
        Commands::Bench(args) => bench::run(args),
        Commands::Chaos(args) => chaos::run(args),
    }
}
