//! Authentication and authorization of API requests when `[auth] enabled`.
//!
//! [`admit`] runs on every matched route before the relay and the handler. It takes
//! the API key from `Authorization: Bearer <key>` or `X-API-Key: <key>` (headers only:
//! no body is read for a client's request), finds the application in the keys file
//! ([`crate::auth::KeyStore`]), checks the permission the endpoint needs on the key or
//! prefix it names ([`access`]), and puts the [`Caller`] in the request's extensions
//! for the handlers. `/healthz` and `/readyz` stay open.
//!
//! A request relayed by another node carries no key but [`PRINCIPAL_HEADER`]: the
//! application, bound to the request and the cluster secret
//! ([`crate::auth::relayed`]). It is checked, and the application's permissions are
//! looked up here again. A client that sends that header (or `X-Baton-Forwarded-By`)
//! itself cannot produce a valid one; the header of a request that came with a key is
//! dropped, so it never reaches a handler or the leader.
//!
//! The pieces are public for other front ends (a compat API):
//! [`authenticate`] (headers → principal) and [`check`] (principal, access → allowed).

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{MatchedPath, RawPathParams, Request};
use axum::http::{header, HeaderMap, Method};
use axum::response::{IntoResponse, Response};

use super::problem::ApiError;
use super::App;
use crate::auth::relayed::{self, Bound};
use crate::auth::{KeyStore, Permission, Principal};
use crate::locks::AppName;
use crate::node::forward::FORWARDED_BY_HEADER;

pub use crate::node::forward::PRINCIPAL_HEADER;
/// The other header an API key may come in.
pub const API_KEY_HEADER: &str = "x-api-key";

/// The authenticated application of a request (auth on), for the handlers.
#[derive(Clone, Debug)]
pub struct Caller {
    pub principal: Principal,
    /// `admin` on the request's key: may release another application's lock there.
    pub release_any: bool,
}

impl Caller {
    /// The application, as the state machine records it.
    pub fn app(&self) -> AppName {
        self.principal.app.clone()
    }
}

/// What an endpoint needs from its caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// Nothing: health and readiness.
    Open,
    /// Any known key (the cluster view: no lock data).
    AnyKey,
    /// Any known key here; the operation checks the permission on the key once it
    /// knows it (Tracker's API names its lock in the body or by id).
    KeyInOperation,
    /// The permission on this key.
    Key(Permission, String),
    /// The permission on every key starting with this prefix (a list).
    Prefix(Permission, String),
    /// The permission on every key (`PERMISSION=*`): cluster maintenance.
    All(Permission),
}

/// The access a route needs: `matched` is the route's pattern, `key` its `{key}`.
/// Routes this table does not know need `admin=*` (deny by default).
pub fn access(method: &Method, matched: &str, key: Option<&str>, query: Option<&str>) -> Access {
    let key = || key.unwrap_or_default().to_string();
    match (method.as_str(), matched) {
        // The API contract and the status page hold no data (see `api::openapi`,
        // `api::ui`).
        (_, "/healthz" | "/readyz") | ("GET", "/v1/openapi.json" | "/ui") => Access::Open,
        // Counts and Raft state, no lock data: any application may scrape (see
        // `api::metrics`).
        ("GET", "/v1/cluster" | "/metrics") => Access::AnyKey,
        (
            "POST",
            "/v1/locks/{key}/acquire"
            | "/v1/locks/{key}/renew"
            | "/v1/locks/{key}/release"
            | "/v1/locks/{key}/cancel",
        ) => Access::Key(Permission::Lock, key()),
        ("GET", "/v1/locks/{key}" | "/v1/locks/{key}/events")
        | ("POST", "/v1/locks/{key}/validate") => Access::Key(Permission::Read, key()),
        ("DELETE", "/v1/locks/{key}") => Access::Key(Permission::Admin, key()),
        ("GET", "/v1/locks" | "/v1/events") => Access::Prefix(Permission::Read, list_prefix(query)),
        ("GET", "/api/v1alpha1/locks/list") => Access::Prefix(Permission::Read, String::new()),
        ("POST", "/api/v1alpha1/lock")
        | (
            "GET",
            "/api/v1alpha1/lock/{id}"
            | "/api/v1alpha1/unlock/{id}"
            | "/api/v1alpha1/lock/"
            | "/api/v1alpha1/unlock/",
        ) => Access::KeyInOperation,
        _ => Access::All(Permission::Admin),
    }
}

/// The `prefix` of a list query ("" when absent or unreadable: every key).
fn list_prefix(query: Option<&str>) -> String {
    query
        .and_then(|q| serde_urlencoded::from_str::<HashMap<String, String>>(q).ok())
        .and_then(|mut m| m.remove("prefix"))
        .unwrap_or_default()
}

/// The API key a request presents, if it presents one; a malformed `Authorization`
/// header or two different keys are refused.
pub fn presented_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let bad = |why: &str| ApiError::InvalidApiKey(why.to_string());
    let bearer = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(v) => {
            let v = v
                .to_str()
                .map_err(|_| bad("the Authorization header is not ASCII"))?;
            let (scheme, key) = v
                .split_once(' ')
                .ok_or_else(|| bad("expected Authorization: Bearer <key>"))?;
            if !scheme.eq_ignore_ascii_case("bearer") || key.trim().is_empty() {
                return Err(bad("expected Authorization: Bearer <key>"));
            }
            Some(key.trim())
        }
    };
    let x_api_key = match headers.get(API_KEY_HEADER) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| bad("the X-API-Key header is not ASCII"))?
                .trim(),
        ),
    };
    match (bearer, x_api_key) {
        (Some(a), Some(b)) if a != b => Err(bad(
            "Authorization and X-API-Key carry different keys; send one",
        )),
        (Some(k), _) | (None, Some(k)) => Ok(Some(k)),
        (None, None) => Ok(None),
    }
}

/// The application whose key the headers present: 401 `INVALID_API_KEY` for none, a
/// malformed one or an unknown one.
pub fn authenticate(store: &KeyStore, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let key = presented_key(headers)?.ok_or_else(|| {
        ApiError::InvalidApiKey(
            "an API key is required: Authorization: Bearer <key> or X-API-Key: <key>".into(),
        )
    })?;
    store
        .authenticate(key)
        .ok_or_else(|| ApiError::InvalidApiKey("the API key is not known".into()))
}

/// Whether `principal` may do what `access` needs: 403 `FORBIDDEN` naming the missing
/// permission otherwise.
pub fn check(principal: &Principal, access: &Access) -> Result<(), ApiError> {
    let app = &principal.app;
    let allowed = match access {
        Access::Open | Access::AnyKey | Access::KeyInOperation => true,
        Access::Key(p, key) => principal.allows(*p, key),
        Access::Prefix(p, prefix) => principal.allows_prefix(*p, prefix),
        Access::All(p) => principal.allows_all(*p),
    };
    if allowed {
        return Ok(());
    }
    Err(ApiError::Forbidden(match access {
        Access::Key(p, key) => format!("application {app} has no {p} permission on key {key}"),
        Access::Prefix(p, prefix) => {
            format!("application {app} has no {p} permission on every key starting with {prefix:?}")
        }
        Access::All(p) => format!("application {app} needs {p}=* (every key) here"),
        Access::Open | Access::AnyKey | Access::KeyInOperation => {
            unreachable!("always allowed")
        }
    }))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The header value a relaying node adds for `caller` (see [`crate::auth::relayed`]).
pub fn relayed_identity(
    app: &App,
    caller: &AppName,
    method: &Method,
    target: &str,
    body: &[u8],
) -> String {
    let bound = Bound {
        method: method.as_str(),
        target,
        body,
    };
    relayed::sign(&app.node.config().raft.secret, &bound, caller, now_ms())
}

/// The access check of every route (see the module docs): the request to serve, with
/// its [`Caller`], or the refusal to answer. With auth off it passes every request.
pub async fn admit(app: &App, req: Request) -> Result<Request, Response> {
    let Some(store) = app.keys.clone() else {
        return Ok(req);
    };
    let (mut parts, body) = req.into_parts();
    let matched = parts
        .extensions
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let key = path_key(&mut parts).await;
    let access = access(&parts.method, &matched, key.as_deref(), parts.uri.query());
    if access == Access::Open {
        return Ok(Request::from_parts(parts, body));
    }
    let relayed = parts.headers.remove(PRINCIPAL_HEADER);
    let (principal, body) = if parts.headers.contains_key(FORWARDED_BY_HEADER) {
        // Relayed by a peer: the identity must verify against this exact request.
        let max_body = app.node.config().api.max_body_bytes;
        let Ok(bytes) = axum::body::to_bytes(body, max_body).await else {
            return Err(ApiError::PayloadTooLarge(
                "request body exceeds api.max_body_bytes".into(),
            )
            .into_response());
        };
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let bound = Bound {
            method: parts.method.as_str(),
            target,
            body: &bytes,
        };
        let verified = relayed
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .ok_or(relayed::RelayedError::Malformed)
            .and_then(|v| relayed::verify(&app.node.config().raft.secret, &bound, v, now_ms()));
        let principal = match verified {
            Ok(name) => store.by_name(name.as_str()),
            // Signed by a peer whose clock is off: the relaying node's trouble, not the
            // caller's key. NO_LEADER (503) sends the client to another node.
            Err(relayed::RelayedError::Stale { age_ms }) => {
                tracing::warn!(
                    age_ms,
                    "refusing a relayed request: the relaying node's clock is off"
                );
                return Err(ApiError::NoLeader(format!(
                    "the node that relayed this request signed it {age_ms} ms away from the leader's clock (more than {} s); retry on another node, and align the nodes' clocks",
                    relayed::MAX_SKEW_MS / 1000
                ))
                .into_response());
            }
            Err(e) => {
                tracing::warn!(error = %e, "refusing a relayed request");
                None
            }
        };
        let Some(principal) = principal else {
            return Err(ApiError::InvalidApiKey(
                "a relayed request must carry a valid relayed identity".into(),
            )
            .into_response());
        };
        (principal, axum::body::Body::from(bytes))
    } else {
        match authenticate(&store, &parts.headers) {
            Ok(p) => (p, body),
            Err(e) => return Err(e.into_response()),
        }
    };
    if let Err(e) = check(&principal, &access) {
        return Err(e.into_response());
    }
    let release_any = match &access {
        Access::Key(_, key) => principal.allows(Permission::Admin, key),
        _ => false,
    };
    parts.extensions.insert(Caller {
        principal,
        release_any,
    });
    Ok(Request::from_parts(parts, body))
}

/// `{key}` of the matched route, percent-decoded (`None` for a route without one, or
/// one that does not decode: the handler refuses that key itself).
async fn path_key(parts: &mut axum::http::request::Parts) -> Option<String> {
    use axum::extract::FromRequestParts;
    let params = RawPathParams::from_request_parts(parts, &()).await.ok()?;
    params
        .iter()
        .find(|(name, _)| *name == "key")
        .map(|(_, v)| v.to_string())
}

/// The request's [`Caller`], `None` with auth off: a handler argument.
pub struct MaybeCaller(pub Option<Caller>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for MaybeCaller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<MaybeCaller, Self::Rejection> {
        Ok(MaybeCaller(parts.extensions.get::<Caller>().cloned()))
    }
}

impl MaybeCaller {
    /// The application, as the state machine records it.
    pub fn app(&self) -> Option<AppName> {
        self.0.as_ref().map(Caller::app)
    }

    /// May it release another application's lock on this request's key?
    pub fn release_any(&self) -> bool {
        self.0.as_ref().is_some_and(|c| c.release_any)
    }
}
