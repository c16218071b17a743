//! `baton server --config cluster.toml --node N`: run one node until SIGTERM/SIGINT.
//!
//! Starts the node, serves the API and the Raft listener, and exits non-zero if Raft
//! stops on a storage error (fail-stop). On SIGTERM or SIGINT it stops accepting HTTP,
//! drains in-flight requests (bounded), shuts Raft down and closes the database.

use std::future::IntoFuture;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use clap::Args;
use tokio::net::{TcpListener, TcpStream};

use crate::api;
use crate::config::Config;
use crate::node::Node;
use crate::NodeId;

/// How long in-flight requests may take to finish at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Exit code when the node stopped itself on a storage error.
const EXIT_FAIL_STOP: u8 = 70;

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
    // TCP_NODELAY on accepted connections: answers are small and latency-bound, and
    // Nagle's algorithm would hold a segment back until the previous one is acknowledged.
    let api_listener = TcpListener::bind(&me.api)
        .await
        .with_context(|| format!("cannot listen on api address {}", me.api))?
        .tap_io(set_nodelay);
    let raft_listener = TcpListener::bind(&me.raft)
        .await
        .with_context(|| format!("cannot listen on raft address {}", me.raft))?
        .tap_io(set_nodelay);
    let node = Node::start(config.clone(), args.node)
        .await
        .context("cannot start node")?;
    let app = api::App::new(node.clone())?;
    tracing::info!(api = %me.api, raft = %me.raft, data_dir = %me.data_dir.display(), "node started");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let api_server = {
        let mut rx = stop_rx.clone();
        tokio::spawn(
            axum::serve(api_listener, api::router(app))
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .into_future(),
        )
    };
    let raft_server = {
        let mut rx = stop_rx.clone();
        tokio::spawn(
            axum::serve(raft_listener, api::raft_rpc::router(node.clone()))
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .into_future(),
        )
    };

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

fn set_nodelay(tcp: &mut TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
}
