//! `/v1/locks` handlers: extract, validate into domain types, one call on the node, map
//! the reply to a view. No lock rules here.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use tracing::instrument;

use super::extract::{ApiJson, ApiQuery, LockKey};
use super::problem::ApiError;
use super::views::{GrantView, ListView, LockView, ReleaseView, ValidateView};
use super::App;
use crate::locks::{Command, Key, Owner, Reply, Token};
use crate::node::Consistency;

/// `POST /v1/locks/{key}/acquire`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcquireBody {
    owner: String,
    ttl_ms: Option<u64>,
    wait_ms: Option<u64>,
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
    let ttl_ms = app.ttl(body.ttl_ms)?;
    if body.wait_ms.unwrap_or(0) > 0 {
        return Err(ApiError::InvalidRequest(
            "wait_ms > 0 is not supported yet: waiting in a queue is not implemented; use wait_ms 0 and retry".into(),
        ));
    }
    let reply = app
        .node
        .write(|now_ms| Command::acquire(key, owner, ttl_ms, now_ms))
        .await?;
    if let Some(g) = reply.grant() {
        tracing::debug!(token = g.token.0, "granted");
    }
    granted(reply)
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
    let found = app
        .node
        .read(q.consistency.into(), |t, now_ms| {
            t.get(&key, now_ms).map(LockView::from)
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
                .map(LockView::from)
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
