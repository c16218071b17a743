//! The HTTP API (axum): `/v1` locks and cluster, health, and the follower → leader relay.
//!
//! [`router`] builds the public API and the status page [`ui`] (the peer-only Raft
//! listener is [`crate::raft::rpc_server`]).
//! Layers, outside in: the front door (request span with method, path and request id;
//! dot segments refused), body limit, then one layer per route ([`each_route`]): its
//! timing, the access check ([`auth`], with `[auth] enabled`), the relay to the leader
//! ([`relay`]: writes and linearizable reads on a follower), handler.

pub mod auth;
pub mod backup;
pub mod cluster;
pub mod events;
pub mod exact_path;
pub mod extract;
pub mod feed;
pub mod health;
pub mod locks;
pub mod metrics;
pub mod openapi;
pub mod problem;
pub mod quota;
pub mod relay;
pub mod ui;
pub mod waiting;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;

use crate::auth::store::{KeyFileError, KeyStore};
use crate::node::forward::{Forwarder, REQUEST_ID_HEADER};
use crate::node::Node;
use problem::ApiError;
use relay::Need;

/// Shared state of the API handlers, behind one `Arc`: every request clones it once
/// per middleware and once for its handler, so a clone is one counter increment.
#[derive(Clone)]
pub struct App(Arc<AppState>);

/// What [`App`] shares.
pub struct AppState {
    pub node: Node,
    forwarder: Forwarder,
    request_ids: AtomicU64,
    /// The keys file, with `[auth] enabled`.
    keys: Option<Arc<KeyStore>>,
    pub(crate) quotas: Arc<quota::Quotas>,
}

impl std::ops::Deref for App {
    type Target = AppState;

    fn deref(&self) -> &AppState {
        &self.0
    }
}

/// Why the API could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot build the relay's HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error(transparent)]
    Keys(#[from] KeyFileError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

impl App {
    /// API state over a running node. With `[auth] enabled` it reads the keys file (an
    /// error names the file and line) and keeps reloading it as a task of the node.
    pub fn new(node: Node) -> Result<App, StartError> {
        let timeout = Duration::from_millis(node.config().api.request_timeout_ms + 1_000);
        let config = node.config();
        let client = crate::tls::peer_client(config, node.id())?;
        let forwarder = Forwarder::new(node.id(), timeout, client, config.tls.scheme())?;
        let auth = &node.config().auth;
        let keys = match (&auth.keys_file, auth.enabled) {
            (Some(path), true) => {
                let store = Arc::new(KeyStore::open(path)?);
                tracing::info!(apps = store.keys().len(), path = %path.display(), "auth on: keys file loaded");
                node.spawn(store.clone().watch());
                Some(store)
            }
            _ => None,
        };
        let quotas = Arc::new(quota::Quotas::new(&node.config().api));
        Ok(App(Arc::new(AppState {
            node,
            forwarder,
            request_ids: AtomicU64::new(0),
            keys,
            quotas,
        })))
    }

    /// Resolves a requested TTL against `[lease]`.
    pub fn ttl(&self, requested: Option<u64>) -> Result<u64, ApiError> {
        let l = &self.node.config().lease;
        let ttl = requested.unwrap_or(l.default_ttl_ms);
        if ttl < l.min_ttl_ms {
            return Err(ApiError::InvalidRequest(format!(
                "ttl_ms {ttl} is below min_ttl_ms {}",
                l.min_ttl_ms
            )));
        }
        if ttl > l.max_ttl_ms {
            return Err(ApiError::InvalidRequest(format!(
                "ttl_ms {ttl} is above max_ttl_ms {}",
                l.max_ttl_ms
            )));
        }
        Ok(ttl)
    }
}

/// The public API router.
///
/// Each route declares here what it needs from the leader ([`relay::Need`]) with the
/// one layer of its group, [`each_route`]; the front door (`front_door`) runs before
/// routing.
pub fn router(app: App) -> Router {
    let max_body = app.node.config().api.max_body_bytes;
    let route_layer =
        |need| middleware::from_fn_with_state(relay::Declared::new(&app, need), each_route);
    let leader_writes = Router::new()
        .route("/v1/locks/{key}", delete(locks::force_release))
        .route("/v1/locks/{key}/renew", post(locks::renew))
        .route("/v1/locks/{key}/release", post(locks::release))
        .route("/v1/locks/{key}/validate", post(locks::validate))
        .route("/v1/locks/{key}/cancel", post(locks::cancel))
        .route(
            "/v1/cluster/nodes/{id}/allow-rejoin",
            post(cluster::allow_rejoin),
        )
        .route_layer(route_layer(Need::Leader));
    // A backup is taken at a read-index point, which only the leader can confirm.
    let leader_admin = Router::new()
        .route("/v1/cluster/backup", get(backup::backup))
        .route_layer(route_layer(Need::Leader));
    // An add waits for its learner to catch up: relayed for that long.
    let leader_membership = Router::new()
        .route("/v1/cluster/nodes", post(cluster::add_node))
        .route("/v1/cluster/nodes/{id}", delete(cluster::remove_node))
        .route_layer(route_layer(Need::LeaderForMembership));
    let leader_acquire = Router::new()
        .route("/v1/locks/{key}/acquire", post(locks::acquire))
        .route_layer(route_layer(Need::LeaderForWait));
    let leader_reads = Router::new()
        .route("/v1/locks", get(locks::list))
        .route("/v1/locks/{key}", get(locks::get))
        .route_layer(route_layer(Need::LeaderUnlessLocal));
    // This node's own view and duties; every node applies every entry, so any node
    // serves the event stream.
    let any_node = Router::new()
        .route("/v1/locks/{key}/events", get(events::events))
        .route("/v1/events", get(feed::feed))
        .route("/v1/cluster", get(cluster::cluster))
        .route("/v1/cluster/snapshot", post(cluster::snapshot_now))
        .route("/v1/openapi.json", get(openapi::document))
        .route("/ui", get(ui::page))
        .route("/metrics", get(metrics::scrape))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route_layer(route_layer(Need::AnyNode));
    Router::new()
        .merge(leader_writes)
        .merge(leader_admin)
        .merge(leader_membership)
        .merge(leader_acquire)
        .merge(leader_reads)
        .merge(any_node)
        .merge(crate::compat::tracker::rest::routes(&app))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(app.clone(), front_door))
        .with_state(app)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::NotFound(format!("no endpoint {} {}", req.method(), req.uri().path()))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::MethodNotAllowed(format!(
        "{} is not allowed on {}",
        req.method(),
        req.uri().path()
    ))
}

/// The layer outside routing: opens the `request` span (the request id is taken from
/// the client or a relaying node, or made here, and travels with a relayed request),
/// and refuses a target with a dot segment ([`exact_path`]) before it is routed.
async fn front_door(State(app): State<App>, mut req: Request, next: Next) -> Response {
    use tracing::Instrument;
    let id = match req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        Some(v) if v.len() <= 64 => v.to_string(),
        _ => {
            let n = app.request_ids.fetch_add(1, Ordering::Relaxed);
            let id = format!("n{}-{n}", app.node.id());
            if let Ok(v) = HeaderValue::from_str(&id) {
                req.headers_mut().insert(REQUEST_ID_HEADER, v);
            }
            id
        }
    };
    let span = tracing::debug_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id);
    async move {
        match exact_path::check(req.uri().path()) {
            Ok(()) => next.run(req).await,
            Err(e) => e.into_response(),
        }
    }
    .instrument(span)
    .await
}

/// The one layer of every route, in this order: times the request by its route
/// ([`metrics::RequestTimer`]), checks the caller ([`auth::admit`]; a follower checks
/// before it relays), relays it to the leader if its route needs that
/// ([`relay::to_leader`]), and runs the handler. One layer, not one per step: each
/// axum middleware clones and boxes the service below it on every request.
pub async fn each_route(
    State(route): State<relay::Declared>,
    req: Request,
    next: Next,
) -> Response {
    let timer = metrics::RequestTimer::start(&req);
    let resp = match auth::admit(route.app(), req).await {
        Ok(req) => relay::to_leader(&route, req, next).await,
        Err(refused) => refused,
    };
    timer.finish(&resp);
    resp
}
