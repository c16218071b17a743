//! Running a node: its public API and its Raft listener around a [`Node`], until a
//! shutdown signal or a fail-stop, then a clean stop.
//!
//! [`run`] takes the shutdown signal as a future (as mini-redis does), so the binary
//! passes SIGTERM/SIGINT and a test passes a channel: a node runs in-process and stops
//! the same way. Stopping, in order: stop accepting connections, let in-flight requests
//! finish (bounded by [`DRAIN_TIMEOUT`]), then [`Node::shutdown`] (its tasks, Raft, the
//! database). When `run` returns, the node's database is closed. The HTTP server
//! itself (connection caps, read timeouts) is [`crate::serve`]; a node with a `grpc`
//! address also serves Tracker's gRPC service ([`crate::compat::tracker::grpc`]) over
//! the same API router, stopped and drained with the others.
//!
//! # Caveats
//! - Requests still running after the drain timeout are dropped (an event stream never
//!   ends by itself; a waiting acquire's wait ends at its deadline in the queue).

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::Instrument;

use crate::api;
use crate::compat::tracker::grpc::{self, GrpcLimits};
use crate::compat::tracker::rest::CREATE_ATTEMPTS;
use crate::config::Config;
use crate::node::Node;
use crate::raft::rpc_server;
use crate::serve::{self as http, ServeLimits};
use crate::tls::ServerTls;

/// How long in-flight requests may take to finish at shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest a graceful stop takes after SIGTERM: the drain, the node's tasks and the
/// database close, each bounded (a service manager's stop timeout goes a little above).
pub const GRACEFUL_STOP_BOUND: Duration = Duration::from_secs(
    DRAIN_TIMEOUT.as_secs()
        + crate::node::lifecycle::TASKS_STOP_WAIT.as_secs()
        + crate::node::lifecycle::DB_CLOSE_WAIT.as_secs(),
);

/// Body read timeout of the Raft listener: a snapshot is sent in one request.
pub const RAFT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Why [`run`] returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// The shutdown signal resolved.
    Requested,
    /// Raft stopped on an error (a storage failure): the node stopped itself rather than
    /// acknowledge what it could not persist.
    FailStop(String),
}

/// Why [`run`] could not serve the node (it shut the node down).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The API could not be set up (the relay's HTTP client, the keys file).
    #[error(transparent)]
    Api(#[from] api::StartError),
    #[error(transparent)]
    Grpc(#[from] grpc::GrpcError),
}

/// A node's bound listeners (API, Raft, and gRPC if configured) and their limits.
pub struct Listeners {
    /// The public HTTP API.
    pub api: TcpListener,
    pub api_limits: ServeLimits,
    /// The peer-only Raft RPCs.
    pub raft: TcpListener,
    pub raft_limits: ServeLimits,
    /// `[tls]` of both listeners; `None`: plain HTTP.
    pub tls: Option<ServerTls>,
    /// Tracker's gRPC service, when the node has a `grpc` address.
    pub grpc: Option<(TcpListener, GrpcLimits)>,
}

impl Listeners {
    /// The listeners with the connection caps of `config` as configured (the binary
    /// first lowers them to fit the open-files limit, see `cli::server`).
    pub fn new(api: TcpListener, raft: TcpListener, config: &Config) -> Listeners {
        let (api_limits, raft_limits) = limits(
            config,
            config.api.max_connections,
            config.raft.max_connections,
        );
        Listeners {
            api,
            api_limits,
            raft,
            raft_limits,
            tls: None,
            grpc: None,
        }
    }

    /// The listeners speaking TLS with `tls` (see [`ServerTls::load`]).
    pub fn with_tls(self, tls: Option<ServerTls>) -> Listeners {
        Listeners { tls, ..self }
    }

    /// These listeners and Tracker's gRPC service on `listener`, with the limits of
    /// [`grpc_limits`] for `config` and at most `cap` connections (the binary fits it to
    /// the open-files limit; [`grpc::GRPC_MAX_CONNECTIONS`] otherwise).
    pub fn with_grpc(mut self, listener: TcpListener, config: &Config, cap: usize) -> Listeners {
        self.grpc = Some((listener, grpc_limits(config, cap)));
        self
    }
}

/// The gRPC listener's limits with connection cap `cap`: the idle timeout is the HTTP
/// listener's header read timeout (also its idle keep-alive timeout), a message at most
/// `api.max_body_bytes`, and a call may read its request and then wait as long as the
/// slowest REST answer: a leader to appear, then a create's proposals
/// ([`CREATE_ATTEMPTS`], each bounded by the relay's deadline of
/// `api.request_timeout_ms` and a second).
pub fn grpc_limits(config: &Config, cap: usize) -> GrpcLimits {
    let a = &config.api;
    let per_attempt = a.request_timeout_ms.saturating_add(1_000);
    let call_ms = a
        .body_read_timeout_ms
        .saturating_add(a.leader_wait_ms)
        .saturating_add(per_attempt.saturating_mul(CREATE_ATTEMPTS as u64 + 1));
    GrpcLimits {
        max_connections: cap,
        idle_timeout: Duration::from_millis(a.header_read_timeout_ms),
        call_timeout: Duration::from_millis(call_ms),
        max_message_bytes: a.max_body_bytes,
    }
}

/// The limits of the API and Raft listeners with connection caps `api_cap` and
/// `raft_cap`; the timeouts come from `config`.
pub fn limits(config: &Config, api_cap: usize, raft_cap: usize) -> (ServeLimits, ServeLimits) {
    let header_read_timeout = Duration::from_millis(config.api.header_read_timeout_ms);
    let api = ServeLimits {
        max_connections: api_cap,
        header_read_timeout,
        body_read_timeout: Duration::from_millis(config.api.body_read_timeout_ms),
    };
    let raft = ServeLimits {
        max_connections: raft_cap,
        header_read_timeout,
        body_read_timeout: RAFT_BODY_READ_TIMEOUT,
    };
    (api, raft)
}

/// Serves `node` on `listeners` until `shutdown` resolves or Raft stops on an error,
/// then shuts the node down (also when it fails to start serving).
///
/// The listeners are typically bound before [`Node::start`], so a port that is taken
/// fails before storage is opened. Runs in the caller's tracing span.
pub async fn run(
    node: Node,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<Stopped, RunError> {
    let app = match api::App::new(node.clone()) {
        Ok(app) => app,
        Err(e) => {
            node.shutdown().await;
            return Err(e.into());
        }
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let span = tracing::Span::current();
    let router = api::router(app);
    let grpc_server = match listeners.grpc {
        Some((listener, limits)) => match grpc::routes(router.clone(), limits.max_message_bytes) {
            Ok(routes) => Some(tokio::spawn(
                grpc::serve(listener, routes, limits, stopped(stop_rx.clone()))
                    .instrument(span.clone()),
            )),
            Err(e) => {
                node.shutdown().await;
                return Err(e.into());
            }
        },
        None => None,
    };
    let api_server = tokio::spawn(
        http::serve(
            listeners.api,
            router,
            listeners.api_limits,
            listeners.tls.as_ref().map(|t| t.api.clone()),
            stopped(stop_rx.clone()),
        )
        .instrument(span.clone()),
    );
    let raft_config = &node.config().raft;
    let peers = rpc_server::router(
        node.raft().clone(),
        node.identity().clone(),
        &raft_config.secret,
        rpc_server::BodyLimits::of(raft_config),
    );
    let raft_server = tokio::spawn(
        http::serve(
            listeners.raft,
            peers,
            listeners.raft_limits,
            listeners.tls.as_ref().map(|t| t.raft.clone()),
            stopped(stop_rx),
        )
        .instrument(span),
    );

    let why = tokio::select! {
        () = shutdown => Stopped::Requested,
        reason = node.stopped_with_error() => {
            tracing::error!(reason, "raft stopped on an error; exiting (fail-stop)");
            crate::metrics::metrics().fail_stopped();
            Stopped::FailStop(reason)
        }
    };
    stop_tx.send_replace(true);
    let mut aborts = vec![api_server.abort_handle(), raft_server.abort_handle()];
    aborts.extend(grpc_server.as_ref().map(|s| s.abort_handle()));
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        let _ = api_server.await;
        let _ = raft_server.await;
        if let Some(grpc) = grpc_server {
            let _ = grpc.await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("in-flight requests did not finish within {DRAIN_TIMEOUT:?}");
        for abort in aborts {
            abort.abort();
        }
    }
    node.shutdown().await;
    Ok(why)
}
