//! `baton server --config cluster.toml --node N`: run one node until SIGTERM/SIGINT.
//!
//! Starts the node, serves the API and the Raft listener, and exits non-zero if Raft
//! stops on a storage error (fail-stop). On SIGTERM or SIGINT it stops accepting HTTP,
//! drains in-flight requests (bounded), shuts Raft down and closes the database.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio::net::TcpListener;

use crate::api;
use crate::config::Config;
use crate::node::Node;
use crate::serve::{self as http, fit_connection_caps, raise_open_files_limit, ServeLimits};
use crate::NodeId;

/// How long in-flight requests may take to finish at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Exit code when the node stopped itself on a storage error.
const EXIT_FAIL_STOP: u8 = 70;
/// Body read timeout of the Raft listener: a snapshot is sent in one request.
const RAFT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

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
}

/// Runs the server; returns the process exit code.
pub fn run(args: ServerArgs) -> ExitCode {
    crate::telemetry::init();
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
            ExitCode::FAILURE
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
    let (api_limits, raft_limits) = listener_limits(&config)?;
    let api_listener = TcpListener::bind(&me.api)
        .await
        .with_context(|| format!("cannot listen on api address {}", me.api))?;
    let raft_listener = TcpListener::bind(&me.raft)
        .await
        .with_context(|| format!("cannot listen on raft address {}", me.raft))?;
    let node = Node::start(config.clone(), args.node)
        .await
        .context("cannot start node")?;
    let app = api::App::new(node.clone())?;
    tracing::info!(api = %me.api, raft = %me.raft, data_dir = %me.data_dir.display(), "node started");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let api_server = tokio::spawn(http::serve(
        api_listener,
        api::router(app),
        api_limits,
        stopped(stop_rx.clone()),
    ));
    let raft_server = tokio::spawn(http::serve(
        raft_listener,
        crate::raft::rpc_server::router(node.raft().clone(), &node.config().raft.secret),
        raft_limits,
        stopped(stop_rx.clone()),
    ));

    let code = tokio::select! {
        signal = shutdown_signal() => {
            tracing::info!(signal, "shutting down");
            ExitCode::SUCCESS
        }
        reason = node.stopped_with_error() => {
            tracing::error!(reason, "raft stopped on an error; exiting (fail-stop)");
            ExitCode::from(EXIT_FAIL_STOP)
        }
    };
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        let _ = api_server.await;
        let _ = raft_server.await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!("in-flight requests did not finish within {DRAIN_TIMEOUT:?}");
    }
    node.shutdown().await;
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
fn listener_limits(config: &Config) -> anyhow::Result<(ServeLimits, ServeLimits)> {
    let (api, raft) = (config.api.max_connections, config.raft.max_connections);
    let open_files = raise_open_files_limit().context("cannot read the open-files limit")?;
    let (api_cap, raft_cap) = fit_connection_caps(open_files, api, raft).with_context(|| {
        format!(
            "the open-files limit {open_files} leaves too few descriptors for connections; \
             raise it (ulimit -n, LimitNOFILE=) to at least {}",
            crate::serve::RESERVED_DESCRIPTORS + raft as u64 + crate::serve::MIN_CONNECTIONS as u64
        )
    })?;
    if api_cap < api {
        tracing::warn!(
            open_files,
            configured = api,
            using = api_cap,
            "api.max_connections lowered to fit the open-files limit; raise the limit (ulimit -n, LimitNOFILE=) to serve more clients"
        );
    }
    let header_read_timeout = Duration::from_millis(config.api.header_read_timeout_ms);
    let api_limits = ServeLimits {
        max_connections: api_cap,
        header_read_timeout,
        body_read_timeout: Duration::from_millis(config.api.body_read_timeout_ms),
    };
    let raft_limits = ServeLimits {
        max_connections: raft_cap,
        header_read_timeout,
        body_read_timeout: RAFT_BODY_READ_TIMEOUT,
    };
    Ok((api_limits, raft_limits))
}
