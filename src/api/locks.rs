//! `/v1/locks` handlers: extract, validate into domain types, one call on the node, map
//! the reply to a view. No lock rules here.

use axum::extract::State;
use axum::Json;
use tracing::instrument;

use super::auth::MaybeCaller;
use super::extract::{ApiJson, ApiQuery, LockKey};
use super::problem::ApiError;
use super::{waiting, App};
use crate::locks::{AcquireOptions, Command, Key, KeyState, Owner, Reply, Token, Waiter};
use crate::metrics::AcquireOutcome;
use crate::node::Consistency;
use crate::wire::{
    self, AcquireRequest, CancelRequest, Cancelled, Lease, ListQuery, LockInfo, LockPage,
    ReadQuery, ReleaseRequest, Released, RenewRequest, ValidateRequest, Validation, WaiterInfo,
};

impl From<wire::Consistency> for Consistency {
    fn from(c: wire::Consistency) -> Consistency {
        match c {
            wire::Consistency::Linearizable => Consistency::Linearizable,
            wire::Consistency::Local => Consistency::Local,
        }
    }
}

/// Number of locks in a list page when `limit` is not given.
pub const DEFAULT_LIST_LIMIT: usize = 100;

/// Stored keys without a live holder (queued, in lock-delay, expired and not yet swept)
/// that one list page steps over at most: the walk holds the table's read lock, so it
/// is bounded. A page that reaches it is shorter than `limit` and has a `next_cursor`.
pub const LIST_SCAN_SLACK: usize = 10_000;

fn owner(raw: String) -> Result<Owner, ApiError> {
    Owner::parse(raw).map_err(|e| ApiError::InvalidRequest(e.to_string()))
}

fn granted(reply: Reply) -> Result<Json<Lease>, ApiError> {
    match reply {
        Reply::Granted(g) => Ok(Json(Lease::from(&g))),
        Reply::Refused(e) => Err(e.into()),
        other => Err(ApiError::Internal(format!("unexpected reply {other:?}"))),
    }
}

fn released(reply: Reply, caller: &MaybeCaller) -> Result<Json<Released>, ApiError> {
    match reply {
        Reply::Released(r) => {
            if r.released {
                crate::metrics::metrics().released(r.forced_from.is_some());
            }
            if let Some(h) = &r.forced_from {
                // The audit trail of an admin taking a lock away (also in the event).
                tracing::warn!(
                    key = %r.key,
                    token = h.token.0,
                    owner = %h.owner,
                    holder_app = h.app.as_ref().map(|a| a.as_str()),
                    by = caller.app().as_ref().map(|a| a.as_str()),
                    "lock force-released"
                );
            }
            Ok(Json(Released::from(&r)))
        }
        Reply::Refused(e) => Err(e.into()),
        other => Err(ApiError::Internal(format!("unexpected reply {other:?}"))),
    }
}

#[instrument(skip_all, fields(key = %key, owner = %body.owner))]
pub async fn acquire(
    State(app): State<App>,
    caller: MaybeCaller,
    LockKey(key): LockKey,
    ApiJson(body): ApiJson<AcquireRequest>,
) -> Result<Json<Lease>, ApiError> {
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
    let admission = app
        .quotas
        .admit_acquire(&app.node, &key, &owner, options.wait_ms > 0)?;
    let result = if options.wait_ms > 0 {
        waiting::acquire(&app, key, owner, options, caller.app(), admission)
            .await
            .map(|grant| Json(Lease::from(&grant)))
    } else {
        let reply = app
            .node
            .write(|now_ms| {
                Command::acquire_with(key, owner, options, now_ms).as_app(caller.app(), false)
            })
            .await?;
        drop(admission);
        if let Some(g) = reply.grant() {
            tracing::debug!(token = g.token.0, "granted");
        }
        granted(reply)
    };
    let outcome = match &result {
        Ok(_) => Some(AcquireOutcome::Granted),
        Err(ApiError::LockHeld { .. } | ApiError::LockUnavailable { .. }) => {
            Some(AcquireOutcome::Held)
        }
        Err(ApiError::WaitTimeout(_)) => Some(AcquireOutcome::Timeout),
        Err(_) => None,
    };
    if let Some(o) = outcome {
        crate::metrics::metrics().acquire(o);
    }
    result
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
    caller: MaybeCaller,
    LockKey(key): LockKey,
    ApiJson(body): ApiJson<CancelRequest>,
) -> Result<Json<Cancelled>, ApiError> {
    let owner = owner(body.owner)?;
    let reason = body.reason.into();
    let reply = app
        .node
        .write(|now_ms| {
            Command::cancel_wait(key, owner, reason, now_ms).as_app(caller.app(), false)
        })
        .await?;
    match reply {
        Reply::WaitCancelled {
            key,
            was_queued,
            released,
        } => Ok(Json(Cancelled {
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
    caller: MaybeCaller,
    LockKey(key): LockKey,
    ApiJson(body): ApiJson<RenewRequest>,
) -> Result<Json<Lease>, ApiError> {
    let ttl_ms = body.ttl_ms.map(|t| app.ttl(Some(t))).transpose()?;
    let token = Token(body.token);
    let renewed = granted(
        app.node
            .write(|now_ms| Command::renew(key, token, ttl_ms, now_ms).as_app(caller.app(), false))
            .await?,
    );
    if renewed.is_ok() {
        crate::metrics::metrics().renewed();
    }
    renewed
}

#[instrument(skip_all, fields(key = %key))]
pub async fn release(
    State(app): State<App>,
    caller: MaybeCaller,
    LockKey(key): LockKey,
    ApiJson(body): ApiJson<ReleaseRequest>,
) -> Result<Json<Released>, ApiError> {
    let (who, any) = (caller.app(), caller.release_any());
    let reply = match (body.token, body.owner, who.clone()) {
        (Some(token), None, _) => {
            app.node
                .write(|now_ms| Command::release(key, Token(token), now_ms).as_app(who, any))
                .await?
        }
        (None, Some(raw), _) => {
            let owner = owner(raw)?;
            app.node
                .write(|now_ms| Command::release_by_owner(key, owner, now_ms).as_app(who, any))
                .await?
        }
        // `{}` with auth on: the lock the calling application holds on the key.
        (None, None, Some(app_name)) => {
            app.node
                .write(|now_ms| Command::release_by_app(key, app_name, now_ms))
                .await?
        }
        (None, None, None) => {
            return Err(ApiError::InvalidRequest(
                "expected exactly one of \"token\" and \"owner\" ({} releases the calling application's lock, with auth on)".into(),
            ))
        }
        (Some(_), Some(_), _) => {
            return Err(ApiError::InvalidRequest(
                "expected exactly one of \"token\" and \"owner\"".into(),
            ))
        }
    };
    released(reply, &caller)
}

#[instrument(skip_all, fields(key = %key))]
pub async fn force_release(
    State(app): State<App>,
    caller: MaybeCaller,
    LockKey(key): LockKey,
) -> Result<Json<Released>, ApiError> {
    let who = caller.app();
    released(
        app.node
            .write(|now_ms| Command::force_release(key, now_ms).as_app(who, true))
            .await?,
        &caller,
    )
}

#[instrument(skip_all, fields(key = %key))]
pub async fn get(
    State(app): State<App>,
    LockKey(key): LockKey,
    ApiQuery(q): ApiQuery<ReadQuery>,
) -> Result<Json<LockInfo>, ApiError> {
    let page = if q.waiters {
        Some(WaiterPage::of(&app, q.waiters_limit, q.waiters_cursor)?)
    } else if q.waiters_limit.is_some() || q.waiters_cursor.is_some() {
        return Err(ApiError::InvalidRequest(
            "waiters_limit and waiters_cursor need waiters=true".into(),
        ));
    } else {
        None
    };
    let found = app
        .node
        .read(q.consistency.into(), |t, now_ms| {
            t.get(&key, now_ms).map(|g| {
                let mut view = LockInfo::from(g);
                if let Some(st) = t.stored(&key) {
                    view.waiters = st.live_waiters(now_ms).count() as u64;
                    if let Some(page) = &page {
                        let (list, next) = page.read(st, now_ms);
                        view.waiter_list = Some(list);
                        view.waiters_next_cursor = next;
                    }
                }
                if page.is_some() && view.waiter_list.is_none() {
                    view.waiter_list = Some(Vec::new());
                }
                view
            })
        })
        .await?;
    found
        .map(Json)
        .ok_or_else(|| ApiError::LockNotFound(format!("no live lock on {key}")))
}

/// One page of a key's queue (`?waiters=true&waiters_limit=&waiters_cursor=`): a queue
/// may hold `api.max_waiters_per_key` waiters, too many for one answer.
struct WaiterPage {
    limit: usize,
    /// The owner the previous page ended with.
    after: Option<Owner>,
}

impl WaiterPage {
    fn of(app: &App, limit: Option<usize>, cursor: Option<String>) -> Result<WaiterPage, ApiError> {
        let max = app.node.config().api.max_list_limit;
        let limit = limit.unwrap_or(DEFAULT_LIST_LIMIT.min(max));
        if limit == 0 || limit > max {
            return Err(ApiError::InvalidRequest(format!(
                "waiters_limit {limit} is outside [1, {max}]"
            )));
        }
        let after = cursor
            .map(Owner::parse)
            .transpose()
            .map_err(|e| ApiError::InvalidRequest(format!("waiters_cursor: {e}")))?;
        Ok(WaiterPage { limit, after })
    }

    /// The page's waiters, and the cursor of the next page if more follow. A cursor
    /// whose owner has left the queue meanwhile starts again at the head: a page may
    /// repeat a waiter, never skip one.
    fn read(&self, st: &KeyState, now_ms: u64) -> (Vec<WaiterInfo>, Option<String>) {
        let live = || st.live_waiters(now_ms);
        let skip = self
            .after
            .as_ref()
            .and_then(|a| live().position(|w| &w.owner == a))
            .map_or(0, |i| i + 1);
        let mut page: Vec<&Waiter> = live().skip(skip).take(self.limit + 1).collect();
        let next = if page.len() > self.limit {
            page.truncate(self.limit);
            page.last().map(|w| w.owner.to_string())
        } else {
            None
        };
        (page.into_iter().map(WaiterInfo::from).collect(), next)
    }
}

#[instrument(skip_all, fields(prefix = %q.prefix))]
pub async fn list(
    State(app): State<App>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<LockPage>, ApiError> {
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
    let (mut locks, resume_after) = app
        .node
        .read(q.consistency.into(), |t, now_ms| {
            let page = t.list(
                &prefix,
                cursor.as_ref(),
                limit + 1,
                limit + 1 + LIST_SCAN_SLACK,
                now_ms,
            );
            let locks = page
                .grants
                .into_iter()
                .map(|g| {
                    let mut view = LockInfo::from(g);
                    view.waiters = t.waiting(&g.key, now_ms) as u64;
                    view
                })
                .collect::<Vec<_>>();
            (locks, page.resume_after)
        })
        .await?;
    let next_cursor = if locks.len() > limit {
        locks.truncate(limit);
        locks.last().map(|l| l.key.clone())
    } else {
        // A short page that stopped at the scan bound: go on after the last key looked at.
        resume_after.map(|k| k.to_string())
    };
    Ok(Json(LockPage { locks, next_cursor }))
}

#[instrument(skip_all, fields(key = %key, token = body.token))]
pub async fn validate(
    State(app): State<App>,
    LockKey(key): LockKey,
    ApiJson(body): ApiJson<ValidateRequest>,
) -> Result<Json<Validation>, ApiError> {
    let token = Token(body.token);
    let v = app
        .node
        .read(Consistency::Linearizable, |t, now_ms| {
            t.validate(&key, token, now_ms)
        })
        .await?;
    Ok(Json(Validation::from(v)))
}
