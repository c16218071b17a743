//! `baton server --config cluster.toml --node N`: run one node until SIGTERM/SIGINT.
//!
//! Starts the node and runs it ([`crate::server::run`]) until SIGTERM or SIGINT, then
//! stops accepting HTTP, drains in-flight requests (bounded), shuts Raft down and closes
//! the database; exits with 70 if Raft stopped on a storage error (fail-stop), and with
//! 78 if the data dir is of another storage format or cluster (`raft::data_dir`).
//!
//! `--join ENDPOINT` starts a node that waits to be added to the running cluster at
//! ENDPOINT instead of initialising one (see [`crate::node::join`]); a node that is not
//! in the file's `[[nodes]]` takes its addresses from `--api`, `--raft` and
//! `--data-dir` (the file still gives `[raft]`, `[tls]`, `[auth]`, …).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use super::exposure;
use crate::compat::tracker::grpc::GRPC_MAX_CONNECTIONS;
use crate::config::{Config, NodeConfig};
use crate::node::join::JoinError;
use crate::node::{Node, Start, StartError};
use crate::serve::{bind_listener, fit_connection_caps, raise_open_files_limit, ServeLimits};
use crate::server::{self, Stopped};
use crate::telemetry::LogFormat;
use crate::tls::ServerTls;
use crate::NodeId;

/// Exit code when the node stopped itself on a storage error.
const EXIT_FAIL_STOP: u8 = 70;
/// Exit code when the data dir is refused: another storage format or another cluster
/// (EX_CONFIG). Restarting cannot help: a service manager should not
/// (`RestartPreventExitStatus=78`).
pub const EXIT_DATA_DIR_REFUSED: u8 = 78;

/// Arguments of `baton server`.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Cluster description.
    #[arg(long, env = "BATON_CONFIG", default_value = "cluster.toml")]
    pub config: PathBuf,
    /// Id of this node in the config's `[[nodes]]`.
    #[arg(long, env = "BATON_NODE")]
    pub node: NodeId,
    /// Override this node's data_dir.
    #[arg(long, env = "BATON_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// This node's API address (`ip:port`), for a node not in `[[nodes]]` or to override it.
    #[arg(long, value_name = "IP:PORT")]
    pub api: Option<String>,
    /// This node's Raft address (`ip:port`), for a node not in `[[nodes]]` or to override it.
    #[arg(long, value_name = "IP:PORT")]
    pub raft: Option<String>,
    /// Do not initialise a cluster: wait to be added (`baton cluster add`) to the running
    /// cluster that answers at ENDPOINT (any member's API address). Ignored once this
    /// node is a member: a restart uses the membership in its data.
    #[arg(long, env = "BATON_JOIN", value_name = "ENDPOINT")]
    pub join: Option<String>,
    /// With --join: give up (exit 1) when no running cluster answers at ENDPOINT within
    /// this long, e.g. 30s or 2m.
    #[arg(long, default_value = "60s", value_parser = super::duration::parse_duration)]
    pub join_timeout: std::time::Duration,
    /// Log level: error, warn, info, debug or trace (Baton's own lines), or a RUST_LOG
    /// filter such as `baton=debug,openraft=info`. Default: RUST_LOG, else
    /// `baton=info,openraft=error`.
    #[arg(long, env = "BATON_LOG_LEVEL", value_name = "LEVEL", value_parser = parse_log_level)]
    pub log_level: Option<String>,
    /// Log line format: `text` for people, `json` (one object per line) for a log
    /// pipeline.
    #[arg(long, env = "BATON_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Start even though this node listens on a non-loopback address without access
    /// control, with the default Raft secret or without TLS (a warning names each on
    /// every start). Only for a trusted, isolated network.
    #[arg(long)]
    pub insecure: bool,
}

/// Accepts a `--log-level` only if it makes a filter (see `telemetry::filter`).
fn parse_log_level(s: &str) -> Result<String, String> {
    crate::telemetry::filter(Some(s))
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

/// Runs the server; returns the process exit code.
pub fn run(args: ServerArgs) -> ExitCode {
    match crate::telemetry::filter(args.log_level.as_deref()) {
        Ok(filter) => crate::telemetry::init_with(filter, args.log_format),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }
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
    let span = tracing::info_span!("node", node_id = args.node);
    match runtime.block_on(tracing::Instrument::instrument(serve(args), span)) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            match e.downcast_ref::<StartError>() {
                Some(StartError::DataDir(_)) => ExitCode::from(EXIT_DATA_DIR_REFUSED),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

async fn serve(args: ServerArgs) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(&args.config, std::env::vars())?;
    place_this_node(&mut config, &args)?;
    let config = Arc::new(config);
    let me = config.node(args.node)?.clone();
    let gaps = exposure::unsafe_settings(&config, &me);
    if !gaps.is_empty() {
        if !args.insecure {
            anyhow::bail!(
                "refusing to start on a non-loopback address: {}; fix these settings, or pass --insecure on a trusted network",
                gaps.join("; ")
            );
        }
        for gap in &gaps {
            tracing::warn!("insecure start (--insecure): {gap}");
        }
    }
    let limits = listener_limits(&config, me.grpc.is_some())?;
    let tls = ServerTls::load(&config, args.node)?;
    let api_listener = bind_listener(&me.api)
        .await
        .with_context(|| format!("cannot listen on api address {}", me.api))?;
    let raft_listener = bind_listener(&me.raft)
        .await
        .with_context(|| format!("cannot listen on raft address {}", me.raft))?;
    let grpc_listener = match &me.grpc {
        Some(addr) => Some(
            bind_listener(addr)
                .await
                .with_context(|| format!("cannot listen on grpc address {addr}"))?,
        ),
        None => None,
    };
    let start = if args.join.is_some() {
        Start::Join
    } else {
        Start::FromConfig
    };
    let node = Node::start_with(config.clone(), args.node, start)
        .await
        .context("cannot start node")?;
    tracing::info!(api = %me.api, raft = %me.raft, data_dir = %me.data_dir.display(), "node started");
    // A join that finds no cluster stops the node like a signal, then fails the process.
    let join_failed: Arc<std::sync::Mutex<Option<JoinError>>> = Arc::default();
    let join = {
        let (node, failed) = (node.clone(), join_failed.clone());
        let endpoint = args.join.clone();
        let within = args.join_timeout;
        async move {
            let Some(endpoint) = endpoint else {
                return std::future::pending().await;
            };
            match crate::node::join::await_membership(node, &endpoint, within).await {
                Ok(()) => std::future::pending().await,
                Err(e) => {
                    *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                }
            }
        }
    };
    let mut listeners = server::Listeners {
        api: api_listener,
        api_limits: limits.api,
        raft: raft_listener,
        raft_limits: limits.raft,
        tls,
        grpc: None,
    };
    if let Some(listener) = grpc_listener {
        tracing::info!(grpc = ?me.grpc, max_connections = limits.grpc_cap, "serving Tracker's gRPC service");
        listeners = listeners.with_grpc(listener, &config, limits.grpc_cap);
    }
    let shutdown = async {
        tokio::select! {
            signal = shutdown_signal() => tracing::info!(signal, "shutting down"),
            () = join => tracing::info!("shutting down: the join failed"),
        }
    };
    let code = match server::run(node, listeners, shutdown).await? {
        Stopped::Requested => ExitCode::SUCCESS,
        Stopped::FailStop(_) => ExitCode::from(EXIT_FAIL_STOP),
    };
    let failed = join_failed.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(e) = failed {
        return Err(e.into());
    }
    tracing::info!("stopped");
    Ok(code)
}

/// Applies `--data-dir`, `--api` and `--raft` to this node's `[[nodes]]` entry, or makes
/// one for a node the file does not list (it must join a running cluster).
fn place_this_node(config: &mut Config, args: &ServerArgs) -> anyhow::Result<()> {
    match config.nodes.iter_mut().find(|n| n.id == args.node) {
        Some(me) => {
            if let Some(dir) = &args.data_dir {
                me.data_dir = dir.clone();
            }
            if let Some(api) = &args.api {
                me.api = api.clone();
            }
            if let Some(raft) = &args.raft {
                me.raft = raft.clone();
            }
        }
        None => {
            let (Some(api), Some(raft), Some(data_dir), Some(_)) =
                (&args.api, &args.raft, &args.data_dir, &args.join)
            else {
                anyhow::bail!(
                    "node {} is not in [[nodes]] of {}: to add a node to a running cluster, start it with \
                     --join ENDPOINT --api IP:PORT --raft IP:PORT --data-dir DIR",
                    args.node,
                    args.config.display()
                );
            };
            config.nodes.push(NodeConfig {
                id: args.node,
                api: api.clone(),
                raft: raft.clone(),
                data_dir: data_dir.clone(),
                grpc: None,
            });
        }
    }
    config.validate()?;
    Ok(())
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers, only fail-stop ends the node.
        std::future::pending::<()>().await;
        return "none";
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// The limits of the API and Raft listeners: the configured connection caps, lowered
/// to what the open-files limit (raised to its hard limit first) leaves after the
/// descriptors kept for storage.
fn listener_limits(config: &Config, grpc: bool) -> anyhow::Result<ListenerLimits> {
    let (api, raft) = (config.api.max_connections, config.raft.max_connections);
    let grpc_wanted = if grpc { GRPC_MAX_CONNECTIONS } else { 0 };
    let open_files = raise_open_files_limit().context("cannot read the open-files limit")?;
    let (clients, raft_cap) = fit_connection_caps(open_files, api + grpc_wanted, raft)
        .with_context(|| {
            format!(
                "the open-files limit {open_files} leaves too few descriptors for connections; \
                 raise it (ulimit -n, LimitNOFILE=) to at least {}",
                crate::serve::RESERVED_DESCRIPTORS
                    + raft as u64
                    + crate::serve::MIN_CONNECTIONS as u64
            )
        })?;
    // Client connections that do not all fit are shared between the HTTP and gRPC
    // listeners in proportion to their caps (the gRPC one keeps at least one).
    let grpc_cap = if grpc {
        (clients * grpc_wanted / (api + grpc_wanted)).max(1)
    } else {
        0
    };
    let api_cap = clients - grpc_cap;
    if api_cap < api {
        tracing::warn!(
            open_files,
            configured = api,
            using = api_cap,
            grpc_using = grpc_cap,
            "api.max_connections lowered to fit the open-files limit (the gRPC listener's cap too, when it has one); raise the limit (ulimit -n, LimitNOFILE=) to serve more clients"
        );
    }
    let (api_limits, raft_limits) = server::limits(config, api_cap, raft_cap);
    Ok(ListenerLimits {
        api: api_limits,
        raft: raft_limits,
        grpc_cap,
    })
}

/// The limits [`listener_limits`] found room for.
struct ListenerLimits {
    api: ServeLimits,
    raft: ServeLimits,
    /// Connections of the gRPC listener (0 without one).
    grpc_cap: usize,
}
