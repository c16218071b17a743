//! Tracker's REST API, `/api/v1alpha1/...`: one function per operation ([`create`],
//! [`get`], [`unlock`], [`list`]) that runs on the leader, thin handlers around them,
//! and [`routes`], which the API router merges in with each route's relay `Need`.
//!
//! The operations run where the relay lets them: on the leader, or on a follower that
//! got a relayed request (which then answers 503, one hop, never a chain).

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tracing::instrument;

use super::mapping::{
    parse_id, Create, CreateRequest, ExistingLock, ListQuery, LockList, Page, TrackerError,
    TrackerLock, UnlockReply, NOT_FOUND, UNLOCK_OK,
};
use crate::api::auth::{self, Access, Caller, MaybeCaller};
use crate::api::problem::ApiError;
use crate::api::relay::{Declared, Need};
use crate::api::{each_route, App};
use crate::auth::Permission;
use crate::locks::{Command, Grant, LockError, Reply};
use crate::node::{Consistency, NodeError};

/// The path prefix of Tracker's API.
pub const PREFIX: &str = "/api/v1alpha1";
/// How many times a create is proposed when the outcome stays unknown: each retry is
/// the barrier that decides the attempts before it (see [`create`]).
pub const CREATE_ATTEMPTS: usize = 3;
/// Largest problem+json body rewritten into Tracker's shape (the relay's own answers
/// are a few hundred bytes).
const MAX_PROBLEM_BYTES: usize = 64 * 1024;

impl From<NodeError> for TrackerError {
    fn from(e: NodeError) -> TrackerError {
        match e {
            NodeError::NotLeader => {
                TrackerError::Unavailable("no leader: this node is not the leader; retry".into())
            }
            NodeError::NoQuorum(m) => TrackerError::Unavailable(m),
            NodeError::OutcomeUnknown(m) => TrackerError::Unavailable(format!(
                "outcome unknown: {m}; the request may or may not have taken effect"
            )),
            NodeError::Stopped(m) | NodeError::Refused(m) => TrackerError::Internal(m),
        }
    }
}

/// With auth on, 403 unless the caller has `permission` on `key`. Tracker's routes name
/// their lock in the body or by id, so the operation checks this once it knows the key
/// (the guard in front only authenticates: [`Access::KeyInOperation`]).
fn permitted(
    caller: Option<&Caller>,
    permission: Permission,
    key: &str,
) -> Result<(), TrackerError> {
    match caller {
        None => Ok(()),
        Some(c) => Ok(auth::check(
            &c.principal,
            &Access::Key(permission, key.to_string()),
        )?),
    }
}

fn existing(g: &Grant) -> ExistingLock {
    let lock = TrackerLock::from(g);
    ExistingLock {
        id: lock.id,
        who: lock.who,
        created_at: lock.created_at,
    }
}

/// Creates a lock: an exclusive acquire of `service` for `who`.
///
/// When a proposal's outcome is unknown (no answer within `api.request_timeout_ms`, or
/// its entry was discarded at a leader change), the same acquire is proposed again, up
/// to [`CREATE_ATTEMPTS`] times. The later proposal is ordered after the earlier one in
/// the log (or the earlier one can never commit once a new leader has committed
/// anything), so its answer decides: granted — the earlier attempts were not; refused
/// by a grant to the same `who` stamped with an earlier attempt's cluster time — that
/// grant is this request's own, and is answered 200 instead of a spurious 409.
#[instrument(skip_all, fields(key = %create.key, owner = %create.owner))]
pub async fn create(
    app: &App,
    caller: Option<&Caller>,
    create: Create,
) -> Result<TrackerLock, TrackerError> {
    let config = app.node.config();
    let ttl_ms = app
        .ttl(Some(create.ttl_ms.unwrap_or(config.tracker_ttl_ms())))
        .map_err(|e| TrackerError::BadRequest(e.to_string()))?;
    let Create { key, owner, .. } = create;
    permitted(caller, Permission::Lock, key.as_str())?;
    let _admission = app.quotas.admit_acquire(&app.node, &key, &owner, false)?;
    let as_app = caller.map(Caller::app);
    let mut stamps: Vec<u64> = Vec::new();
    let mut unknown: Option<String> = None;
    for _ in 0..CREATE_ATTEMPTS {
        let result = app
            .node
            .write(|now_ms| {
                stamps.push(now_ms);
                Command::acquire_exclusive(key.clone(), owner.clone(), ttl_ms, now_ms)
                    .as_app(as_app.clone(), false)
            })
            .await;
        let earlier = stamps.len().saturating_sub(1);
        match result {
            Ok(Reply::Granted(g)) => return Ok(TrackerLock::from(&g)),
            Ok(Reply::Refused(LockError::Held { holder }))
                if holder.owner == owner && stamps[..earlier].contains(&holder.acquired_at_ms) =>
            {
                tracing::debug!(token = holder.token.0, "an earlier attempt granted it");
                return Ok(TrackerLock::from(&holder));
            }
            Ok(Reply::Refused(LockError::Held { holder })) => {
                return Err(TrackerError::AlreadyExists(Some(existing(&holder))))
            }
            // Free, but Baton clients queue for it or a lock-delay runs: it is taken.
            Ok(Reply::Refused(LockError::Unavailable { .. })) => {
                return Err(TrackerError::AlreadyExists(None))
            }
            Ok(other) => {
                return Err(TrackerError::Internal(format!(
                    "unexpected reply {other:?}"
                )))
            }
            Err(NodeError::OutcomeUnknown(m)) => {
                tracing::debug!(reason = %m, "create outcome unknown; proposing it again");
                unknown = Some(m);
            }
            Err(e) => {
                return Err(match unknown {
                    Some(m) => TrackerError::Unavailable(format!(
                        "outcome unknown: {m}, then {e}; the lock may or may not have been created"
                    )),
                    None => e.into(),
                })
            }
        }
    }
    Err(NodeError::OutcomeUnknown(unknown.unwrap_or_default()).into())
}

/// The live lock whose id is `id`.
#[instrument(skip(app, caller))]
pub async fn get_lock(
    app: &App,
    caller: Option<&Caller>,
    id: &str,
) -> Result<TrackerLock, TrackerError> {
    let token = parse_id(id).ok_or(TrackerError::NotFound)?;
    let lock = app
        .node
        .read(Consistency::Linearizable, |table, now_ms| {
            table.get_by_token(token, now_ms).map(TrackerLock::from)
        })
        .await?
        .ok_or(TrackerError::NotFound)?;
    permitted(caller, Permission::Read, &lock.service)?;
    Ok(lock)
}

/// Releases the lock whose id is `id`, whoever holds it (Tracker's manual clean-up
/// relies on that). A write: an unknown outcome is 503, never a false "not found".
/// With auth on it takes what a release takes: `lock` on the key, and `admin` there
/// for another application's lock.
#[instrument(skip(app, caller))]
pub async fn unlock(
    app: &App,
    caller: Option<&Caller>,
    id: &str,
) -> Result<UnlockReply, TrackerError> {
    let token = parse_id(id).ok_or(TrackerError::NothingToUnlock)?;
    let key = app
        .node
        .read(Consistency::Linearizable, |table, now_ms| {
            table.get_by_token(token, now_ms).map(|g| g.key.clone())
        })
        .await?
        .ok_or(TrackerError::NothingToUnlock)?;
    permitted(caller, Permission::Lock, key.as_str())?;
    let (who, release_any) = match caller {
        Some(c) => (
            Some(c.app()),
            c.principal.allows(Permission::Admin, key.as_str()),
        ),
        None => (None, false),
    };
    // Released by token: if the lock ended between the lookup and this entry, the
    // release frees nothing (a new holder of the key has another token).
    match app
        .node
        .write(|now_ms| Command::release(key, token, now_ms).as_app(who, release_any))
        .await?
    {
        Reply::Released(r) if r.released => Ok(UnlockReply {
            success: true,
            message: UNLOCK_OK.into(),
        }),
        Reply::Released(_) => Err(TrackerError::NothingToUnlock),
        Reply::Refused(e) => Err(ApiError::from(e).into()),
        other => Err(TrackerError::Internal(format!(
            "unexpected reply {other:?}"
        ))),
    }
}

/// One page of the live locks, sorted by service, and how many there are in all.
/// With auth on, the guard in front asks `read` on every key.
#[instrument(skip(app))]
pub async fn list(app: &App, page: Page) -> Result<LockList, TrackerError> {
    let skip = (page.page - 1).saturating_mul(page.per_page);
    let (total, locks) = app
        .node
        .read(Consistency::Linearizable, |table, now_ms| {
            let locks: Vec<TrackerLock> = table
                .grants()
                .filter(|g| g.is_live(now_ms))
                .skip(skip)
                .take(page.per_page)
                .map(TrackerLock::from)
                .collect();
            (table.live_count(now_ms), locks)
        })
        .await?;
    Ok(LockList {
        locks,
        total: total as u64,
        page: page.page as u64,
        per_page: page.per_page as u64,
    })
}

/// The Tracker routes, each with what it needs from the leader, and the layer that
/// gives the relay's own answers Tracker's body shape.
pub fn routes(app: &App) -> Router<App> {
    let route_layer = |need| middleware::from_fn_with_state(Declared::new(app, need), each_route);
    let leader = Router::new()
        .route(&format!("{PREFIX}/lock"), post(create_handler))
        .route(&format!("{PREFIX}/lock/{{id}}"), get(get_handler))
        .route(&format!("{PREFIX}/locks/list"), get(list_handler))
        .route_layer(route_layer(Need::Leader));
    let unlock_route = Router::new()
        .route(&format!("{PREFIX}/unlock/{{id}}"), get(unlock_handler))
        .route_layer(route_layer(Need::LeaderGetWrite));
    // An empty id names no lock: answered here, like `null`.
    let empty_ids = Router::new()
        .route(
            &format!("{PREFIX}/lock/"),
            get(|| async { TrackerError::NotFound }),
        )
        .route(
            &format!("{PREFIX}/unlock/"),
            get(|| async { TrackerError::NothingToUnlock }),
        )
        .route_layer(route_layer(Need::AnyNode));
    Router::new()
        .merge(leader)
        .merge(unlock_route)
        .merge(empty_ids)
        // Outside each route's layer: a 401 or 403 gets Tracker's body shape.
        .layer(middleware::from_fn(tracker_bodies))
}

async fn create_handler(
    State(app): State<App>,
    caller: MaybeCaller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<TrackerLock>, TrackerError> {
    let body = body.map_err(|e| TrackerError::BadRequest(e.body_text()))?;
    let bad = |e: String| {
        TrackerError::BadRequest(format!("expected a JSON object with service and who: {e}"))
    };
    // serde would read a struct from a JSON array too: only an object is Tracker's body.
    let value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| bad(e.to_string()))?;
    if !value.is_object() {
        return Err(bad("the body is not an object".into()));
    }
    let request: CreateRequest = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
    Ok(Json(
        create(&app, caller.0.as_ref(), request.validate()?).await?,
    ))
}

async fn get_handler(
    State(app): State<App>,
    caller: MaybeCaller,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<TrackerLock>, TrackerError> {
    let Ok(Path(id)) = id else {
        return Err(TrackerError::NotFound);
    };
    Ok(Json(get_lock(&app, caller.0.as_ref(), &id).await?))
}

async fn unlock_handler(
    State(app): State<App>,
    caller: MaybeCaller,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<UnlockReply>, TrackerError> {
    let Ok(Path(id)) = id else {
        return Err(TrackerError::NothingToUnlock);
    };
    Ok(Json(unlock(&app, caller.0.as_ref(), &id).await?))
}

async fn list_handler(
    State(app): State<App>,
    req: Request,
) -> Result<Json<LockList>, TrackerError> {
    let query = req.uri().query().unwrap_or("");
    // serde refuses a repeated parameter (duplicate field) rather than taking one.
    let query: ListQuery = serde_urlencoded::from_str(query).map_err(|e| {
        TrackerError::BadRequest(format!("page and per_page must be integers: {e}"))
    })?;
    let page = query.validate(app.node.config().api.max_list_limit)?;
    Ok(Json(list(&app, page).await?))
}

/// Rewrites a problem+json answer (the relay's `NO_LEADER`, `OUTCOME_UNKNOWN`, a body
/// too large) into Tracker's `{"error": detail}`, keeping the status and `Retry-After`.
async fn tracker_bodies(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let is_problem = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !is_problem {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let detail = match to_bytes(body, MAX_PROBLEM_BYTES).await {
        Ok(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) => e.to_string(),
    };
    let message = if parts.status == StatusCode::NOT_FOUND {
        NOT_FOUND.to_string()
    } else {
        detail
    };
    let body = serde_json::json!({ "error": message }).to_string();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body)).into_response()
}
