//! Acquires that wait in a key's FIFO queue (`wait_ms > 0`), and cancelling a wait.
//!
//! The request is served by the leader (followers relay it, with a timeout that covers
//! the wait). The handler subscribes to this key's applied events *before* proposing,
//! proposes the acquire (from a node task, see `Proposal`), and — if the answer is "queued" — waits for an event that ends
//! the wait for its owner: `acquired` (answer the grant), or `wait_timeout` /
//! `wait_cancelled` (answer `WAIT_TIMEOUT`). Every node applies every entry, so this
//! works on even if leadership moves during the wait.
//!
//! Ending a wait early goes through Raft too ([`crate::locks::Command::CancelWait`]):
//! when the wait runs out here, or the client goes away (the handler future is
//! dropped) — at any point, also while the acquire itself is being proposed — the node
//! cancels the wait; if the queue granted the key meanwhile, the
//! cancel releases that grant, so no lock is left held by nobody. A cancel proposed on
//! a node that no longer leads is relayed to the leader's `POST /v1/locks/{key}/cancel`
//! by [`super::relay`], like a client's request.
//!
//! # Caveats
//! - Waiting is bounded by `lease.max_wait_ms`; the queue itself drops a waiter at its
//!   deadline in cluster time even if no cancel ever arrives (a crashed node).
//! - A grant from the queue starts its lease when it is applied, long after the client
//!   sent its request. A client that counts its lease from its send time (DESIGN.md)
//!   stays safe but may think a long wait ate the whole lease: renew at once after a
//!   waited grant and count from that renew.

use std::time::{Duration, Instant};

use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, Method};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::oneshot;

use super::problem::ApiError;
use super::quota::Admission;
use super::relay::{self, Outgoing};
use super::App;
use crate::locks::{
    same_app, AcquireOptions, AppName, CancelReason, Command, Event, EventKind, Grant, Key, Owner,
    Reply, Token,
};
use crate::node::{KeyUpdate, NodeError};
use crate::wire::{CancelReason as WireCancelReason, CancelRequest};

/// Attempts (with a pause between) to get a cancel committed before giving up on it.
const CANCEL_ATTEMPTS: u32 = 20;
const CANCEL_PAUSE: Duration = Duration::from_millis(250);

/// Acquires `key` for `owner`, waiting in its queue for up to `options.wait_ms`.
pub async fn acquire(
    app: &App,
    key: Key,
    owner: Owner,
    options: AcquireOptions,
    caller: Option<AppName>,
    admission: Admission,
) -> Result<Grant, ApiError> {
    let started = Instant::now();
    // Subscribed before proposing, so no event of this wait is missed; this key only,
    // so other keys' writes do not wake the request.
    let mut events = app.node.subscribe_key_events(&key);
    let mut proposal = Proposal::start(
        app,
        key.clone(),
        owner.clone(),
        options,
        caller.clone(),
        admission,
    );
    let reply = proposal.reply().await?;
    let queued = match reply {
        Reply::Granted(g) => return Ok(g),
        Reply::Refused(e) => return Err(e.into()),
        Reply::Queued(q) => q,
        other => return Err(ApiError::Internal(format!("unexpected reply {other:?}"))),
    };
    tracing::debug!(position = queued.position, "queued");
    crate::metrics::metrics().acquire(crate::metrics::AcquireOutcome::Queued);
    // Taken over from the proposal with no await in between: a dropped future (client
    // gone) cancels the wait.
    let mut guard = CancelOnDrop {
        app: app.clone(),
        key: key.clone(),
        owner: owner.clone(),
        caller: caller.clone(),
        armed: true,
    };
    let deadline = tokio::time::Instant::from_std(started + Duration::from_millis(options.wait_ms));
    let outcome = loop {
        tokio::select! {
            received = events.recv() => match received {
                Ok(KeyUpdate::Events(batch)) => {
                    if let Some(outcome) = outcome_in(&batch, &key, &owner, caller.as_ref()) {
                        break outcome;
                    }
                }
                // Missed events (or a snapshot installed, whose entries publish none):
                // the table says where the wait stands.
                Ok(KeyUpdate::Restarted { .. }) | Err(RecvError::Lagged(_)) => {
                    if let Some(outcome) = outcome_from_table(app, &key, &owner, caller.as_ref()) {
                        break outcome;
                    }
                }
                Err(RecvError::Closed) => {
                    return Err(ApiError::Internal("event stream closed".into()));
                }
            },
            _ = tokio::time::sleep_until(deadline) => break Outcome::TimedOut,
        }
    };
    guard.armed = false;
    match outcome {
        Outcome::Granted(g) => {
            tracing::debug!(token = g.token.0, "granted from the queue");
            Ok(g)
        }
        Outcome::LeftQueue => Err(wait_timeout(&key, options.wait_ms)),
        Outcome::TimedOut => {
            cancel(app, &key, &owner, caller, CancelReason::Timeout).await;
            Err(wait_timeout(&key, options.wait_ms))
        }
    }
}

/// The proposal of a waiting acquire, run by a node task so that it completes even when
/// the client hangs up while it is in flight — before, the acquire could be appended
/// after the request was gone, and queue (or be granted) for nobody.
///
/// The answer comes back over a oneshot channel. Whoever ends up with it when the
/// client is gone cleans up: the task, when the handler is gone before the answer; the
/// handler's drop, when the answer arrived but was not taken yet (the receiver is
/// closed first, so the answer is never lost between the two). Once the handler takes
/// the answer, [`CancelOnDrop`] covers a queued wait.
struct Proposal {
    answer: Option<oneshot::Receiver<Result<Reply, NodeError>>>,
    app: App,
    key: Key,
    owner: Owner,
    caller: Option<AppName>,
}

impl Proposal {
    /// Proposes the acquire; `admission` holds its place in the quotas until it is
    /// applied.
    fn start(
        app: &App,
        key: Key,
        owner: Owner,
        options: AcquireOptions,
        caller: Option<AppName>,
        admission: Admission,
    ) -> Proposal {
        let (tx, rx) = oneshot::channel();
        let task = {
            let (app, key, owner, caller) =
                (app.clone(), key.clone(), owner.clone(), caller.clone());
            async move {
                let result = {
                    let (key, owner, caller) = (key.clone(), owner.clone(), caller.clone());
                    app.node
                        .write(move |now_ms| {
                            Command::acquire_with(key, owner, options, now_ms).as_app(caller, false)
                        })
                        .await
                };
                // Applied (or failed): the table counts the waiter from here on.
                drop(admission);
                if let Err(result) = tx.send(result) {
                    clean_up_abandoned(&app, &key, &owner, caller, result).await;
                }
            }
        };
        app.node.spawn(task);
        Proposal {
            answer: Some(rx),
            app: app.clone(),
            key,
            owner,
            caller,
        }
    }

    /// The acquire's reply; from here on the caller is responsible for a queued wait.
    async fn reply(&mut self) -> Result<Reply, ApiError> {
        let rx = self
            .answer
            .as_mut()
            .expect("reply is awaited once, right after start");
        let result = rx.await;
        self.answer = None;
        match result {
            Ok(result) => Ok(result?),
            // The node stopped its tasks.
            Err(_) => Err(ApiError::Internal("node is shutting down".into())),
        }
    }
}

impl Drop for Proposal {
    fn drop(&mut self) {
        let Some(mut rx) = self.answer.take() else {
            return;
        };
        // No send succeeds after this: either the answer is here now, or the task gets
        // it back from its send and cleans up itself.
        rx.close();
        if let Ok(result) = rx.try_recv() {
            let (app, key, owner) = (self.app.clone(), self.key.clone(), self.owner.clone());
            let caller = self.caller.take();
            let node = app.node.clone();
            node.spawn(async move { clean_up_abandoned(&app, &key, &owner, caller, result).await });
        }
    }
}

/// Undoes what a waiting acquire did for a client that is gone: a queued wait is
/// cancelled, a grant made by this acquire is released (through the same `CancelWait`);
/// an acquire whose outcome is unknown is cancelled too, in case it lands. A refusal, an
/// acquire never proposed, or the extension of a grant the owner already held leaves
/// nothing to undo.
async fn clean_up_abandoned(
    app: &App,
    key: &Key,
    owner: &Owner,
    caller: Option<AppName>,
    result: Result<Reply, NodeError>,
) {
    let undo = match &result {
        Ok(Reply::Queued(_)) => true,
        // A grant this entry made starts now: acquired and renewed at the same time. An
        // owner that re-acquires the key it holds keeps its earlier `acquired_at_ms`.
        Ok(Reply::Granted(g)) => g.acquired_at_ms == g.renewed_at_ms,
        Ok(_) => false,
        Err(NodeError::NotLeader | NodeError::NoQuorum(_) | NodeError::Refused(_)) => false,
        Err(NodeError::OutcomeUnknown(_) | NodeError::Stopped(_)) => true,
    };
    if undo {
        tracing::debug!(key = %key, owner = %owner, "waiting client went away before its acquire was answered; undoing it");
        cancel(app, key, owner, caller, CancelReason::Disconnected).await;
    }
}

fn wait_timeout(key: &Key, wait_ms: u64) -> ApiError {
    ApiError::WaitTimeout(format!("{key} was not granted within wait_ms {wait_ms}"))
}

enum Outcome {
    Granted(Grant),
    /// The queue dropped the waiter (its deadline in cluster time, or a cancel).
    LeftQueue,
    TimedOut,
}

/// The event in `batch`, if any, that ends `owner`'s wait on `key`.
fn outcome_in(
    batch: &[Event],
    key: &Key,
    owner: &Owner,
    caller: Option<&AppName>,
) -> Option<Outcome> {
    batch
        .iter()
        .filter(|e| &e.key == key && &e.owner == owner && same_app(e.app.as_ref(), caller))
        .find_map(|e| match e.kind {
            EventKind::Acquired => Some(Outcome::Granted(grant_of(e))),
            EventKind::WaitTimeout | EventKind::WaitCancelled => Some(Outcome::LeftQueue),
            _ => None,
        })
}

/// The grant an `acquired` event reports.
fn grant_of(e: &Event) -> Grant {
    let expires_at_ms = e.expires_at_ms.unwrap_or(e.at_ms);
    Grant {
        key: e.key.clone(),
        owner: e.owner.clone(),
        token: e.token.unwrap_or(Token(e.index)),
        acquired_at_ms: e.at_ms,
        renewed_at_ms: e.at_ms,
        expires_at_ms,
        ttl_ms: expires_at_ms.saturating_sub(e.at_ms),
        lock_delay_ms: 0,
        app: e.app.clone(),
    }
}

fn outcome_from_table(
    app: &App,
    key: &Key,
    owner: &Owner,
    caller: Option<&AppName>,
) -> Option<Outcome> {
    app.node.with_local_table(|t| {
        let now = t.now_ms();
        let mine = |g: &&Grant| &g.owner == owner && same_app(g.app.as_ref(), caller);
        if let Some(g) = t.get(key, now).filter(mine) {
            return Some(Outcome::Granted(g.clone()));
        }
        let queued = t
            .stored(key)
            .is_some_and(|st| st.position(owner, caller, now).is_some());
        (!queued).then_some(Outcome::LeftQueue)
    })
}

/// Cancels the wait of a request whose client went away.
struct CancelOnDrop {
    app: App,
    key: Key,
    owner: Owner,
    caller: Option<AppName>,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (app, key, owner) = (self.app.clone(), self.key.clone(), self.owner.clone());
        let caller = self.caller.take();
        tracing::debug!(key = %key, owner = %owner, "waiting client went away; cancelling its wait");
        let node = app.node.clone();
        node.spawn(
            async move { cancel(&app, &key, &owner, caller, CancelReason::Disconnected).await },
        );
    }
}

/// Gets a `CancelWait` committed: proposed here while this node leads, relayed to the
/// leader otherwise; retried (it is idempotent) until it lands or the attempts run out.
pub async fn cancel(
    app: &App,
    key: &Key,
    owner: &Owner,
    caller: Option<AppName>,
    reason: CancelReason,
) {
    for attempt in 1..=CANCEL_ATTEMPTS {
        let result = {
            let (key, owner, caller) = (key.clone(), owner.clone(), caller.clone());
            app.node
                .write(move |now_ms| {
                    Command::cancel_wait(key, owner, reason, now_ms).as_app(caller, false)
                })
                .await
        };
        match result {
            Ok(reply) => {
                tracing::debug!(?reply, "wait cancelled");
                return;
            }
            Err(NodeError::NotLeader) => {
                if relay_cancel(app, key, owner, caller.clone(), reason).await {
                    return;
                }
            }
            Err(e) => tracing::debug!(attempt, error = %e, "cancel not committed; retrying"),
        }
        tokio::time::sleep(CANCEL_PAUSE).await;
    }
    tracing::warn!(key = %key, owner = %owner, "gave up cancelling a wait; the queue drops it at its deadline");
}

/// Sends the cancel to the leader's `POST /v1/locks/{key}/cancel` through the same
/// relay as client requests; true when the leader answered 200.
async fn relay_cancel(
    app: &App,
    key: &Key,
    owner: &Owner,
    caller: Option<AppName>,
    reason: CancelReason,
) -> bool {
    let body = CancelRequest {
        owner: owner.as_str().to_string(),
        reason: match reason {
            CancelReason::Timeout => WireCancelReason::Timeout,
            CancelReason::Disconnected => WireCancelReason::Disconnected,
        },
    };
    let body = serde_json::to_vec(&body).expect("a string and an enum always serialize");
    let target = format!("/v1/locks/{key}/cancel");
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let outgoing = Outgoing {
        method: Method::POST,
        target: &target,
        headers: &headers,
        body: body.into(),
        timeout: None,
        caller,
        write: true,
    };
    match relay::send_to_leader(app, outgoing).await {
        Some(answer) if answer.status().is_success() => true,
        Some(answer) => {
            tracing::debug!(status = %answer.status(), "relaying a cancel failed");
            false
        }
        // This node leads now: the next attempt proposes the cancel here.
        None => false,
    }
}
