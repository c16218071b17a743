//! `/v1/locks` handlers: extract, validate into domain types, one call on the node, map
//! the reply to a view. No lock rules here.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use tracing::instrument;

use super::extract::{ApiJson, ApiQuery, LockKey};
use super::problem::ApiError;
use super::views::{
    CancelView, GrantView, ListView, LockView, ReleaseView, ValidateView, WaiterView,
};
use super::{waiting, App};
use crate::locks::{AcquireOptions, CancelReason, Command, Key, Owner, Reply, Token};
use crate::node::Consistency;

/// `POST /v1/locks/{key}/acquire`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcquireBody {
    owner: String,
    ttl_ms: Option<u64>,
    wait_ms: Option<u64>,
    lock_delay_ms: Option<u64>,
}

/// `POST /v1/locks/{key}/cancel`: leave the key's queue (and release the key if the
/// queue granted it meanwhile).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    owner: String,
    #[serde(default)]
    reason: CancelReasonParam,
}

/// Why a wait is cancelled; recorded in the `wait_timeout` / `wait_cancelled` event.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CancelReasonParam {
    Timeout,
    #[default]
    Disconnected,
}

/// `POST /v1/locks/{key}/renew`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewBody {
    token: u64,
    ttl_ms: Option<u64>,
}

/// `POST /v1/locks/{key}/release`: exactly one of `token` and `owner`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseBody {
    token: Option<u64>,
    owner: Option<String>,
}

/// `POST /v1/locks/{key}/validate`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateBody {
    token: u64,
}

/// `?consistency=` of reads.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsistencyParam {
    #[default]
    Linearizable,
    Local,
}

impl From<ConsistencyParam> for Consistency {
    fn from(c: ConsistencyParam) -> Consistency {
        match c {
            ConsistencyParam::Linearizable => Consistency::Linearizable,
            ConsistencyParam::Local => Consistency::Local,
        }
    }
}

/// Query of `GET /v1/locks/{key}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    #[serde(default)]
    consistency: ConsistencyParam,
    /// List the waiters of the key's queue.
    #[serde(default)]
    waiters: bool,
}

/// Query of `GET /v1/locks`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    prefix: String,
    limit: Option<usize>,
    cursor: Option<String>,
    #[serde(default)]
    consistency: ConsistencyParam,
}

/// Number of locks in a list page when `limit` is not given.
pub const DEFAULT_LIST_LIMIT: usize = 100;

fn owner(raw: String) -> Result<Owner, ApiError> {
    Owner::parse(raw).map_err(|e| ApiError::InvalidRequest(e.to_string()))
}

fn granted(reply: Reply) -> Result<Json<GrantView>, ApiError> {
    match reply {
        Reply::Granted(g) => Ok(Json(GrantView::from(&g))),
        Reply::Refused(e) => Err(e.into()),
        other => Err(ApiError::Internal(format!("unexpected reply {other:?}"))),
    }
}

fn released(reply: Reply) -> Result<Json<ReleaseView>, ApiError> {
    match reply {
        Reply::Released(r) => Ok(Json(ReleaseView::from(&r))),
        Reply::Refused(e) => Err(e.into()),
        other => Err(ApiError::Internal(format!("unexpected reply {other:?}"))),
    }
}

#[instrument(skip_all, fields(key = %key, owner = %body.owner))]
pub async fn acquire(
    State(app): State<App>,
    LockKey(key): LockKey,
    ApiJson(body): ApiJson<AcquireBody>,
) -> Result<Json<GrantView>, ApiError> {
    let owner = owner(body.owner)?;
    let options = AcquireOptions {
        ttl_ms: app.ttl(body.ttl_ms)?,
        wait_ms: bounded("wait_ms", body.wait_ms, app.node.config().lease.max_wait_ms)?,
        lock_delay_ms: bounded(
            "lock_delay_ms",
            body.lock_delay_ms,
            app.node.config().lease.max_lock_delay_ms,
        )?,
    };
    if options.wait_ms > 0 {
        let grant = waiting::acquire(&app, key, owner, options).await?;
        return Ok(Json(GrantView::from(&grant)));
    }
    let reply = app
        .node
        .write(|now_ms| Command::acquire_with(key, owner, options, now_ms))
        .await?;
    if let Some(g) = reply.grant() {
        tracing::debug!(token = g.token.0, "granted");
    }
    granted(reply)
}

/// A duration in milliseconds that must not exceed `max` (0 when absent).
fn bounded(name: &str, value: Option<u64>, max: u64) -> Result<u64, ApiError> {
    let v = value.unwrap_or(0);
    if v > max {
        return Err(ApiError::InvalidRequest(format!(
            "{name} {v} is above its maximum {max} (cluster.toml [lease])"
        )));
    }
    Ok(v)
}

#[instrument(skip_all, fields(key = %key, owner = %body.owner))]
pub async fn cancel(
    State(app): State<App>,
    LockKey(key): LockKey,
    ApiJson(body): ApiJson<CancelBody>,
) -> Result<Json<CancelView>, ApiError> {
    let owner = owner(body.owner)?;
    let reason = match body.reason {
        CancelReasonParam::Timeout => CancelReason::Timeout,
        CancelReasonParam::Disconnected => CancelReason::Disconnected,
    };
    let reply = app
        .node
        .write(|now_ms| Command::cancel_wait(key, owner, reason, now_ms))
        .await?;
    match reply {
        Reply::WaitCancelled {
            key,
            was_queued,
            released,
        } => Ok(Json(CancelView {
            key: key.to_string(),
            was_queued,
            released_token: released.map(|t| t.0),
        })),
        Reply::Refused(e) => Err(e.into()),
        other => Err(ApiError::Internal(format!("unexpected reply {other:?}"))),
    }
}

#[instrument(skip_all, fields(key = %key, token = body.token))]
pub async fn renew(
    State(app): State<App>,
    LockKey(key): LockKey,
    ApiJson(body): ApiJson<RenewBody>,
) -> Result<Json<GrantView>, ApiError> {
    let ttl_ms = body.ttl_ms.map(|t| app.ttl(Some(t))).transpose()?;
    let token = Token(body.token);
    granted(
        app.node
            .write(|now_ms| Command::renew(key, token, ttl_ms, now_ms))
            .await?,
    )
}

#[instrument(skip_all, fields(key = %key))]
pub async fn release(
    State(app): State<App>,
    LockKey(key): LockKey,
    ApiJson(body): ApiJson<ReleaseBody>,
) -> Result<Json<ReleaseView>, ApiError> {
    let reply = match (body.token, body.owner) {
        (Some(token), None) => {
            app.node
                .write(|now_ms| Command::release(key, Token(token), now_ms))
                .await?
        }
        (None, Some(raw)) => {
            let owner = owner(raw)?;
            app.node
                .write(|now_ms| Command::release_by_owner(key, owner, now_ms))
                .await?
        }
        _ => {
            return Err(ApiError::InvalidRequest(
                "expected exactly one of \"token\" and \"owner\"".into(),
            ))
        }
    };
    released(reply)
}

#[instrument(skip_all, fields(key = %key))]
pub async fn force_release(
    State(app): State<App>,
    LockKey(key): LockKey,
) -> Result<Json<ReleaseView>, ApiError> {
    released(
        app.node
            .write(|now_ms| Command::force_release(key, now_ms))
            .await?,
    )
}

#[instrument(skip_all, fields(key = %key))]
pub async fn get(
    State(app): State<App>,
    LockKey(key): LockKey,
    ApiQuery(q): ApiQuery<ReadQuery>,
) -> Result<Json<LockView>, ApiError> {
    let list_waiters = q.waiters;
    let found = app
        .node
        .read(q.consistency.into(), |t, now_ms| {
            t.get(&key, now_ms).map(|g| {
                let mut view = LockView::from(g);
                if let Some(st) = t.stored(&key) {
                    view.waiters = st.live_waiters(now_ms).count() as u64;
                    if list_waiters {
                        view.waiter_list =
                            Some(st.live_waiters(now_ms).map(WaiterView::from).collect());
                    }
                }
                view
            })
        })
        .await?;
    found
        .map(Json)
        .ok_or_else(|| ApiError::LockNotFound(format!("no live lock on {key}")))
}

#[instrument(skip_all, fields(prefix = %q.prefix))]
pub async fn list(
    State(app): State<App>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<ListView>, ApiError> {
    let max = app.node.config().api.max_list_limit;
    let limit = q.limit.unwrap_or(DEFAULT_LIST_LIMIT.min(max));
    if limit == 0 || limit > max {
        return Err(ApiError::InvalidRequest(format!(
            "limit {limit} is outside [1, {max}]"
        )));
    }
    if !q.prefix.is_empty() {
        Key::parse(q.prefix.clone())
            .map_err(|e| ApiError::InvalidRequest(format!("prefix: {e}")))?;
    }
    let cursor = q
        .cursor
        .map(Key::parse)
        .transpose()
        .map_err(|e| ApiError::InvalidRequest(format!("cursor: {e}")))?;
    let prefix = q.prefix;
    let mut locks = app
        .node
        .read(q.consistency.into(), |t, now_ms| {
            t.list(&prefix, cursor.as_ref(), limit + 1, now_ms)
                .into_iter()
                .map(|g| {
                    let mut view = LockView::from(g);
                    view.waiters = t.waiting(&g.key, now_ms) as u64;
                    view
                })
                .collect::<Vec<_>>()
        })
        .await?;
    let next_cursor = if locks.len() > limit {
        locks.truncate(limit);
        locks.last().map(|l| l.key.clone())
    } else {
        None
    };
    Ok(Json(ListView { locks, next_cursor }))
}

#[instrument(skip_all, fields(key = %key, token = body.token))]
pub async fn validate(
    State(app): State<App>,
    LockKey(key): LockKey,
    ApiJson(body): ApiJson<ValidateBody>,
) -> Result<Json<ValidateView>, ApiError> {
    let token = Token(body.token);
    let v = app
        .node
        .read(Consistency::Linearizable, |t, now_ms| {
            t.validate(&key, token, now_ms)
        })
        .await?;
    Ok(Json(ValidateView {
        valid: v.valid,
        current_token: v.current_token.map(|t| t.0),
    }))
}
