//! `baton server --config cluster.toml --node N`: run one node until SIGTERM/SIGINT.
//!
//! Starts the node and runs it ([`crate::server::run`]) until SIGTERM or SIGINT, then
//! stops accepting HTTP, drains in-flight requests (bounded), shuts Raft down and closes
//! the database; exits with 70 if Raft stopped on a storage error (fail-stop), and with
//! 78 if the data dir is of another storage format or cluster (`raft::data_dir`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use super::exposure;
use crate::compat::tracker::grpc::GRPC_MAX_CONNECTIONS;
use crate::config::Config;
use crate::node::{Node, StartError};
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
    if let Some(dir) = args.data_dir {
        let me = config
            .nodes
            .iter_mut()
            .find(|n| n.id == args.node)
            .with_context(|| format!("node {} is not in [[nodes]]", args.node))?;
        me.data_dir = dir;
    }
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
    let node = Node::start(config.clone(), args.node)
        .await
        .context("cannot start node")?;
    tracing::info!(api = %me.api, raft = %me.raft, data_dir = %me.data_dir.display(), "node started");
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
        let signal = shutdown_signal().await;
        tracing::info!(signal, "shutting down");
    };
    let code = match server::run(node, listeners, shutdown).await? {
        Stopped::Requested => ExitCode::SUCCESS,
        Stopped::FailStop(_) => ExitCode::from(EXIT_FAIL_STOP),
    };
    tracing::info!("stopped");
    Ok(code)
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
