//! The `baton` command line: one file per subcommand.

pub mod bench;
pub mod chaos;
pub mod cluster;
pub mod duration;
pub mod exit;
mod exposure;
pub mod keys;
pub mod lock;
pub mod locks;
pub mod server;
pub mod snapshot;
mod status;
pub mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Baton: a highly available lock service with leases and fencing tokens.
#[derive(Debug, Parser)]
#[command(name = "baton", version, about, after_help = exit::HELP)]
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
    /// Run a command while holding a lock: `baton lock deploy -- ./deploy.sh`.
    Lock(lock::LockArgs),
    #[command(flatten)]
    Locks(locks::LockCommand),
    /// Membership: `baton cluster add ID --api IP:PORT --raft IP:PORT`, `remove ID`, `status`.
    Cluster(cluster::ClusterArgs),
    /// Follow a key's events (acquired, released, expired, queued, …) as they happen.
    Watch(watch::WatchArgs),
    /// Backups: `baton snapshot save FILE`; `baton snapshot restore FILE --node N` builds
    /// a data dir of a new cluster from one.
    Snapshot(snapshot::SnapshotArgs),
    /// API keys for a cluster with auth on: `baton keys create NAME --allow lock=PREFIX`.
    Keys(keys::KeysArgs),
    /// Print a shell completion script: `baton completions bash > /etc/bash_completion.d/baton`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Chaos-suite tools (used by scripts/chaos).
    #[command(hide = true)]
    Chaos(chaos::ChaosArgs),
}

/// Parses the command line and runs the subcommand; the exit code is the command's.
pub fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // `--help` and `--version` "fail" to stdout; real usage errors go to stderr.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    match cli.command {
        Commands::Server(args) => server::run(args),
        Commands::Bench(args) => bench::run(args),
        Commands::Lock(args) => lock::run(args),
        Commands::Locks(cmd) => locks::run(cmd),
        Commands::Cluster(args) => cluster::run(args),
        Commands::Watch(args) => watch::run(args),
        Commands::Keys(args) => keys::run(args),
        Commands::Snapshot(args) => snapshot::run(args),
        Commands::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut completion_command(),
                "baton",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        Commands::Chaos(args) => chaos::run(args),
    }
}

/// The command line as completions offer it: without hidden subcommands (the shell
/// generators list every subcommand, hidden or not).
pub fn completion_command() -> clap::Command {
    use clap::CommandFactory;
    let full = Cli::command();
    let visible: Vec<clap::Command> = full
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .cloned()
        .collect();
    clap::Command::new("baton")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommands(visible)
}

/// How the client commands find the cluster.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// Comma-separated API addresses (host:port, or https://host:port with TLS)
    /// [default: every node's `api` in --config].
    #[arg(
        long,
        env = "BATON_ENDPOINTS",
        value_delimiter = ',',
        value_name = "HOST:PORT,..."
    )]
    pub endpoints: Vec<String>,
    /// Cluster description to take the endpoints from when --endpoints is not given.
    #[arg(long, env = "BATON_CONFIG", default_value = "cluster.toml")]
    pub config: std::path::PathBuf,
    /// How long to keep retrying while no node can serve (no leader, no quorum, nodes
    /// down), e.g. 10s or 1m30s; then exit 69. An acquire's --wait comes on top.
    #[arg(long, env = "BATON_TIMEOUT", default_value = "30s", value_parser = duration::parse_duration)]
    pub timeout: std::time::Duration,
    /// Print JSON on stdout instead of text (errors too: {"error", "code", "holder"}).
    #[arg(long)]
    pub json: bool,
    /// API key of a cluster with auth on (sent as `Authorization: Bearer`); prefer the
    /// environment variable, which other users cannot read from the process list.
    #[arg(long, env = "BATON_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// PEM file of the CA that signed the nodes' certificates (`https://` endpoints of a
    /// cluster with `[tls]`); without it the system's roots are trusted.
    #[arg(long, env = "BATON_CA_FILE", value_name = "PEM")]
    pub ca_file: Option<std::path::PathBuf>,
}

impl ClientArgs {
    /// A client for the endpoints these arguments name, which reports on stderr while
    /// it retries (one line every few seconds).
    pub fn connect(&self) -> anyhow::Result<crate::client::Client> {
        let endpoints = resolve_endpoints(&self.endpoints, &self.config)?;
        let mut client = crate::client::Client::new(&endpoints)?;
        if let Some(key) = &self.api_key {
            client = client.with_api_key(key)?;
        }
        if let Some(ca) = &self.ca_file {
            client = client.with_ca_file(ca)?;
        }
        Ok(client
            .with_call_timeout(self.timeout)
            .with_progress(|trouble, remaining| {
                eprintln!(
                    "baton: {trouble}; retrying for {} more",
                    crate::client::trouble::secs(&remaining)
                )
            }))
    }
}

/// The API endpoints to talk to: `--endpoints` (or `BATON_ENDPOINTS`) when given, else
/// every node's `api` address in the cluster file.
pub fn resolve_endpoints(
    endpoints: &[String],
    config: &std::path::Path,
) -> anyhow::Result<Vec<String>> {
    if !endpoints.is_empty() {
        return endpoints
            .iter()
            .map(|e| {
                crate::wire::parse_endpoint(e).map_err(|e| anyhow::anyhow!("--endpoints: {e}"))
            })
            .collect();
    }
    // The config error already names the file and the cause; no chain to repeat it.
    let config = crate::config::Config::load(config, std::env::vars())
        .map_err(|e| anyhow::anyhow!("no --endpoints given, and {e}"))?;
    let scheme = if config.tls.enabled() { "https://" } else { "" };
    Ok(config
        .nodes
        .iter()
        .map(|n| format!("{scheme}{}", n.api))
        .collect())
}
