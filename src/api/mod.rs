//! The HTTP API (axum): `/v1` locks and cluster, health, and the follower → leader relay.
//!
//! [`router`] builds the public API; [`raft_rpc::router`] the peer-only Raft listener.
//! Layers, outside in: request span (method, path, request id), body limit, relay to
//! the leader (writes and linearizable reads on a follower), handler.

pub mod cluster;
pub mod events;
pub mod extract;
pub mod health;
pub mod locks;
pub mod problem;
pub mod raft_rpc;
pub mod waiting;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::node::forward::{ForwardError, Forwarder, FORWARDED_BY_HEADER, REQUEST_ID_HEADER};
use crate::node::Node;
use problem::ApiError;

/// Shared state of the API handlers.
#[derive(Clone)]
pub struct App {
    pub node: Node,
    pub forwarder: Forwarder,
    request_ids: Arc<AtomicU64>,
}

impl App {
    /// API state over a running node.
    pub fn new(node: Node) -> Result<App, reqwest::Error> {
        let timeout = Duration::from_millis(node.config().api.request_timeout_ms + 1_000);
        let forwarder = Forwarder::new(node.id(), timeout)?;
        Ok(App {
            node,
            forwarder,
            request_ids: Arc::new(AtomicU64::new(0)),
        })
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
pub fn router(app: App) -> Router {
    let max_body = app.node.config().api.max_body_bytes;
    Router::new()
        .route("/v1/locks", get(locks::list))
        .route(
            "/v1/locks/{key}",
            get(locks::get).delete(locks::force_release),
        )
        .route("/v1/locks/{key}/acquire", post(locks::acquire))
        .route("/v1/locks/{key}/renew", post(locks::renew))
        .route("/v1/locks/{key}/release", post(locks::release))
        .route("/v1/locks/{key}/validate", post(locks::validate))
        .route("/v1/locks/{key}/cancel", post(locks::cancel))
        .route("/v1/locks/{key}/events", get(events::events))
        .route("/v1/cluster", get(cluster::cluster))
        .route(
            "/v1/cluster/nodes/{id}/allow-rejoin",
            post(cluster::allow_rejoin),
        )
        .route("/v1/cluster/snapshot", post(cluster::snapshot_now))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(app.clone(), relay_to_leader))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(app.clone(), request_span))
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

/// Opens the `request` span; the request id is taken from the client (or a relaying
/// node) or made here, and travels with a relayed request.
async fn request_span(State(app): State<App>, mut req: Request, next: Next) -> Response {
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
    next.run(req).instrument(span).await
}

/// Whether a request must be served by the leader: every `/v1/locks` request except
/// reads asking for `consistency=local`.
fn needs_leader(req: &Request) -> bool {
    let path = req.uri().path();
    // Every node applies every entry, so any node serves the event stream.
    if !path.starts_with("/v1/locks") || (req.method() == Method::GET && path.ends_with("/events"))
    {
        return false;
    }
    let local = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "consistency=local"));
    !(req.method() == Method::GET && local)
}

/// The relay timeout of requests that take longer than the usual request timeout: an
/// acquire that waits in a queue (`wait_ms`, bounded by `lease.max_wait_ms`) and the
/// event stream (no timeout). `None`: the forwarder's default.
fn relay_timeout(app: &App, parts: &axum::http::request::Parts, body: &[u8]) -> Option<Duration> {
    let path = parts.uri.path();
    // Followers relay every write: parse the body only when it can hold a wait.
    if !path.ends_with("/acquire") || !body.windows(7).any(|w| w == b"wait_ms") {
        return None;
    }
    let wait_ms = serde_json::from_slice::<serde_json::Value>(body)
        .ok()?
        .get("wait_ms")?
        .as_u64()?
        .min(app.node.config().lease.max_wait_ms);
    let usual = app.node.config().api.request_timeout_ms + 1_000;
    Some(Duration::from_millis(usual.saturating_add(wait_ms)))
}

/// On a follower, relays leader-only requests to the leader (see `node::forward`). A
/// relayed request is never relayed again: the handler answers `NO_LEADER` if this node
/// is not the leader after all.
async fn relay_to_leader(State(app): State<App>, req: Request, next: Next) -> Response {
    if !needs_leader(&req)
        || req.headers().contains_key(FORWARDED_BY_HEADER)
        || app.node.is_leader()
    {
        return next.run(req).await;
    }
    let max_body = app.node.config().api.max_body_bytes;
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, max_body).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::PayloadTooLarge("request body exceeds api.max_body_bytes".into())
                .into_response()
        }
    };
    let wait = Duration::from_millis(app.node.config().api.leader_wait_ms);
    let Some(leader) = app.node.wait_for_leader(wait).await else {
        return ApiError::NoLeader(format!("no leader known within {wait:?}")).into_response();
    };
    if leader.id == app.node.id() {
        return next
            .run(Request::from_parts(parts, Body::from(bytes)))
            .await;
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let is_write = parts.method != Method::GET;
    let timeout = relay_timeout(&app, &parts, &bytes);
    match app
        .forwarder
        .relay(
            leader.id,
            &leader.api,
            parts.method.clone(),
            path,
            &parts.headers,
            bytes,
            timeout,
        )
        .await
    {
        Ok(r) => {
            let mut resp = Response::new(Body::from(r.body));
            *resp.status_mut() = r.status;
            resp.headers_mut().extend(r.headers);
            resp
        }
        Err(e @ ForwardError::Unreachable { .. }) => {
            ApiError::NoLeader(e.to_string()).into_response()
        }
        Err(e @ ForwardError::NoAnswer { .. }) if is_write => {
            ApiError::OutcomeUnknown(e.to_string()).into_response()
        }
        Err(e) => ApiError::NoLeader(e.to_string()).into_response(),
    }
}
