//! Forwarding policy: which requests a follower relays to the leader, and for how long.
//!
//! This module is the one owner of that decision; [`crate::node::forward`] is only the
//! transport (and states the relay rules: one hop, `NO_LEADER` vs `OUTCOME_UNKNOWN`,
//! bounded). Routes declare what they need from the leader where they are registered
//! ([`super::router`]): each group of routes gets its [`Need`] with its layer
//! ([`super::each_route`], which calls [`to_leader`]); [`Need::AnyNode`] routes are
//! served by whichever node receives them (health, cluster view, event streams, `POST
//! /v1/cluster/snapshot`). Unmatched paths and methods are answered where they arrive.
//!
//! On a follower, a leader route's request is relayed byte for byte (method, path and
//! query, body) to the leader's API address, and the leader's answer is passed back. The
//! relay's deadline is the forwarder's (`api.request_timeout_ms` plus a second), except
//! for an acquire that waits in a queue: its relay may last as long as the wait its body
//! asks for (`wait_ms`, bounded by `lease.max_wait_ms`), read by parsing the body.
//!
//! When this node learns of another leader while a relay is in flight, it stops waiting
//! for the old one, which may be paused or cut off and would answer only when it wakes
//! (found by the chaos suite, seed 2026: writes through followers hung for the length of
//! a leader's SIGSTOP): a write answers `OUTCOME_UNKNOWN` at once (it may have reached the
//! old leader's log and still commit), a read is relayed to the new leader (up to
//! three leaders). A waiting acquire is left alone: the node that has it
//! follows the key's events whoever leads.
//!
//! [`send_to_leader`] is the same relay for requests the node makes itself (a waiting
//! client's cancel, see [`super::waiting`]).
//!
//! # Caveats
//! - A leader route buffers the (size-limited) body on a follower before relaying it;
//!   on the leader the body is not touched here.
//! - A relayed request that reaches a node that does not lead is served there and
//!   answered `NO_LEADER` by the handler (one hop, never a chain).

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request};
use axum::http::{HeaderMap, HeaderValue, Method, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::auth::{relayed_identity, Caller, PRINCIPAL_HEADER};
use super::problem::ApiError;
use super::App;
use crate::locks::AppName;
use crate::metrics::RelayResult;
use crate::node::forward::{ForwardError, FORWARDED_BY_HEADER};
use crate::wire::{AcquireRequest, Consistency};

/// What a route needs from the leader, declared where the route is registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Writes, and reads confirmed with a quorum (`validate`): served by the leader.
    Leader,
    /// Reads: served by the leader unless the query asks for `consistency=local`.
    LeaderUnlessLocal,
    /// An acquire: served by the leader; its relay lasts as long as the `wait_ms` its
    /// body asks for.
    LeaderForWait,
    /// A write sent as a `GET` (Tracker's `unlock`): served by the leader, and a relay
    /// that gets no answer says `OUTCOME_UNKNOWN` as for any write, never `NO_LEADER`.
    LeaderGetWrite,
    /// A membership change: served by the leader; its relay lasts as long as an added
    /// node may take to catch up (`raft.catch_up_timeout_ms`).
    LeaderForMembership,
    /// Served by whichever node receives it: this node's own view and duties.
    AnyNode,
}

/// The state of one route's layer ([`super::each_route`]): the API and the route's need.
#[derive(Clone)]
pub struct Declared {
    app: App,
    need: Need,
}

impl Declared {
    /// The layer state of a route that needs `need`.
    pub fn new(app: &App, need: Need) -> Declared {
        Declared {
            app: app.clone(),
            need,
        }
    }

    /// The API.
    pub fn app(&self) -> &App {
        &self.app
    }
}

/// The part of a read's query the relay looks at; the handler validates the whole query.
#[derive(Deserialize)]
struct ConsistencyOf {
    #[serde(default)]
    consistency: Consistency,
}

impl Need {
    /// Whether a request to this route (with this target) must be served by the leader.
    fn requires_leader(self, uri: &Uri) -> bool {
        match self {
            Need::Leader
            | Need::LeaderForWait
            | Need::LeaderGetWrite
            | Need::LeaderForMembership => true,
            Need::AnyNode => false,
            // A query that does not parse goes to the leader, whose handler refuses it
            // as it would here.
            Need::LeaderUnlessLocal => !matches!(
                Query::<ConsistencyOf>::try_from_uri(uri),
                Ok(Query(ConsistencyOf {
                    consistency: Consistency::Local
                }))
            ),
        }
    }

    /// The relay's deadline; `None` is the forwarder's own.
    fn relay_timeout(self, app: &App, body: &[u8]) -> Option<Duration> {
        if self == Need::LeaderForMembership {
            let catch_up = Duration::from_millis(app.node.config().raft.catch_up_timeout_ms);
            return Some(app.forwarder.timeout() + catch_up);
        }
        if self != Need::LeaderForWait {
            return None;
        }
        let wait_ms = acquire_wait_ms(body, app.node.config().lease.max_wait_ms)?;
        Some(app.forwarder.timeout() + Duration::from_millis(wait_ms))
    }
}

/// The wait an acquire body asks for, capped at `max_wait_ms` (the leader refuses more
/// at once); `None` without a wait, or for a body the leader refuses at once.
fn acquire_wait_ms(body: &[u8], max_wait_ms: u64) -> Option<u64> {
    let wait_ms = serde_json::from_slice::<AcquireRequest>(body)
        .ok()?
        .wait_ms?;
    Some(wait_ms.min(max_wait_ms))
}

/// The relay step of every route's layer ([`super::each_route`]): on a follower,
/// relays a request its route needs the leader for (see the module docs); on the
/// leader, for a request that was relayed already, or one any node serves, runs the
/// handler.
pub async fn to_leader(route: &Declared, req: Request, next: Next) -> Response {
    let app = &route.app;
    if req.headers().contains_key(FORWARDED_BY_HEADER)
        || app.node.is_leader()
        || !route.need.requires_leader(req.uri())
    {
        return next.run(req).await;
    }
    let max_body = app.node.config().api.max_body_bytes;
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, max_body).await else {
        return ApiError::PayloadTooLarge("request body exceeds api.max_body_bytes".into())
            .into_response();
    };
    let outgoing = Outgoing {
        method: parts.method.clone(),
        target: parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        headers: &parts.headers,
        body: bytes.clone(),
        timeout: route.need.relay_timeout(app, &bytes),
        caller: parts.extensions.get::<Caller>().map(Caller::app),
        write: parts.method != Method::GET || route.need == Need::LeaderGetWrite,
    };
    match send_to_leader(app, outgoing).await {
        Some(answer) => answer,
        // This node became the leader while waiting for one.
        None => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
    }
}

/// A request to relay to the leader.
pub struct Outgoing<'a> {
    pub method: Method,
    /// Path and query, sent byte for byte.
    pub target: &'a str,
    /// The forwarder copies the content type, request id and credentials from these.
    pub headers: &'a HeaderMap,
    pub body: Bytes,
    /// The relay's deadline; `None` is the forwarder's own.
    pub timeout: Option<Duration>,
    /// The authenticated application (auth on), passed on as a signed identity.
    pub caller: Option<AppName>,
    /// Whether the request may change state: a relay that gets no answer then says
    /// `OUTCOME_UNKNOWN` (it may have happened), not `NO_LEADER`.
    pub write: bool,
}

/// Waits (up to `api.leader_wait_ms`) for a known leader and relays `req` to it.
/// Returns the leader's answer, or this node's problem answer when there is none
/// (`NO_LEADER` if the request did not reach the leader, `OUTCOME_UNKNOWN` if a write
/// got no answer); `None` when this node is the leader, so the caller serves it here.
pub async fn send_to_leader(app: &App, req: Outgoing<'_>) -> Option<Response> {
    let wait = Duration::from_millis(app.node.config().api.leader_wait_ms);
    let Some(leader) = app.node.wait_for_leader(wait).await else {
        crate::metrics::metrics().relayed(RelayResult::NoLeader);
        return Some(no_leader(
            app,
            format!("no leader known within {} ms", wait.as_millis()),
        ));
    };
    if leader.id == app.node.id() {
        return None;
    }
    // The HTTP client parses the target as a URL and may rewrite it (dot segments,
    // backslashes); a rewritten target would name something else on the leader.
    if let Err(e) = exact_target(req.target) {
        return Some(e.into_response());
    }
    let mut headers = req.headers.clone();
    headers.remove(PRINCIPAL_HEADER);
    if let Some(caller) = &req.caller {
        let identity = relayed_identity(app, caller, &req.method, req.target, &req.body);
        match HeaderValue::from_str(&identity) {
            Ok(v) => {
                headers.insert(PRINCIPAL_HEADER, v);
            }
            Err(e) => {
                return Some(ApiError::Internal(format!("relayed identity: {e}")).into_response())
            }
        }
    }
    let is_write = req.write;
    let m = crate::metrics::metrics();
    let mut leader = leader;
    let mut relays = 0;
    loop {
        relays += 1;
        let relayed = app.forwarder.relay(
            leader.id,
            &leader.api,
            req.method.clone(),
            req.target,
            &headers,
            req.body.clone(),
            req.timeout,
        );
        // A waiting acquire (its own deadline) keeps waiting on the node that has it:
        // that node follows the key's events whoever leads (see `api::waiting`).
        let replaced = async {
            match req.timeout {
                None => app.node.leader_other_than(leader.id).await,
                Some(_) => std::future::pending().await,
            }
        };
        let next = tokio::select! {
            relayed = relayed => return Some(match relayed {
                Ok(r) => {
                    m.relayed(RelayResult::Answered);
                    let mut resp = Response::new(Body::from(r.body));
                    *resp.status_mut() = r.status;
                    resp.headers_mut().extend(r.headers);
                    resp
                }
                Err(e @ ForwardError::NoAnswer { .. }) if is_write => {
                    m.relayed(RelayResult::OutcomeUnknown);
                    ApiError::OutcomeUnknown(e.to_string()).into_response()
                }
                Err(e) => {
                    m.relayed(RelayResult::NoLeader);
                    no_leader(app, e.to_string())
                }
            }),
            next = replaced => next,
        };
        // Another node leads now: the old leader may be paused or cut off and answer
        // only when it wakes, up to the relay's timeout. A write may have reached its
        // log (and may still commit through the new leader), so its outcome is unknown;
        // a read changed nothing and goes to the new leader.
        let why = format!(
            "node {} stopped leading (node {} leads now) while the request was relayed to it",
            leader.id, next.id
        );
        tracing::debug!(
            old = leader.id,
            new = next.id,
            write = is_write,
            "leader replaced during a relay"
        );
        if is_write {
            m.relayed(RelayResult::OutcomeUnknown);
            return Some(
                ApiError::OutcomeUnknown(format!(
                    "{why}; the request may or may not have taken effect"
                ))
                .into_response(),
            );
        }
        if next.id == app.node.id() {
            return None;
        }
        if relays >= MAX_READ_RELAYS {
            m.relayed(RelayResult::NoLeader);
            return Some(no_leader(app, format!("{why}; relayed {relays} times")));
        }
        leader = next;
    }
}

/// Leaders a read is relayed to in turn when each stops leading during its relay.
const MAX_READ_RELAYS: usize = 3;

/// Refuses a target the relay's HTTP client would not send byte for byte.
fn exact_target(target: &str) -> Result<(), ApiError> {
    let sent = reqwest::Url::parse(&format!("http://leader{target}"))
        .map_err(|e| ApiError::InvalidRequest(format!("request target {target:?}: {e}")))?;
    let mut as_sent = sent.path().to_string();
    if let Some(q) = sent.query() {
        as_sent.push('?');
        as_sent.push_str(q);
    }
    if as_sent != target {
        return Err(ApiError::InvalidRequest(format!(
            "request target {target:?} would reach the leader as {as_sent:?}; send it without dot segments or characters that need escaping"
        )));
    }
    Ok(())
}

/// `NO_LEADER` for `reason`, led by this node's own account of the quorum when it knows
/// it has none: the survivor of a lost majority names the quorum, not only the leader
/// it cannot find.
fn no_leader(app: &App, reason: String) -> Response {
    let quorum = app.node.quorum();
    let detail = if quorum.ok {
        reason
    } else {
        format!("{}; {reason}", quorum.detail)
    };
    ApiError::NoLeader(detail).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    #[test_case("/v1/locks/a", true; "a read without a query is linearizable")]
    #[test_case("/v1/locks/a?consistency=linearizable", true; "linearizable")]
    #[test_case("/v1/locks/a?consistency=local", false; "local")]
    #[test_case("/v1/locks?prefix=a&consistency=local&limit=5", false; "local among others")]
    #[test_case("/v1/locks/a?consistency=%6Cocal", false; "local percent-encoded")]
    #[test_case("/v1/locks/a?consistency=bogus", true; "a bad query goes to the leader")]
    #[test_case("/v1/locks/a?consistency=local&consistency=local", true; "a repeated field goes to the leader")]
    fn reads_need_the_leader_unless_they_ask_for_local(target: &str, leader: bool) {
        let uri: Uri = target.parse().expect("a valid target");
        assert_eq!(Need::LeaderUnlessLocal.requires_leader(&uri), leader);
        assert!(Need::Leader.requires_leader(&uri));
        assert!(!Need::AnyNode.requires_leader(&uri));
    }

    #[test_case("/v1/locks/a/acquire", true; "plain")]
    #[test_case("/v1/locks?prefix=a&limit=5", true; "a query")]
    #[test_case("/v1/locks/x/../victim", false; "dot segments")]
    #[test_case("/v1/locks/%2e%2e", false; "encoded dot segment")]
    #[test_case("/v1/locks/x\\..\\victim", false; "backslashes")]
    fn the_relay_sends_only_targets_it_keeps_byte_for_byte(target: &str, exact: bool) {
        assert_eq!(exact_target(target).is_ok(), exact);
    }

    #[test_case(r#"{"owner":"a"}"#, None; "no wait")]
    #[test_case(r#"{"owner":"a","wait_ms":5000}"#, Some(5_000); "a wait")]
    #[test_case(r#"{"owner":"a","wait_ms":90000}"#, Some(60_000); "capped at the maximum")]
    #[test_case(r#"{"owner":"a","wait_ms":-1}"#, None; "a bad wait is refused at once")]
    #[test_case(r#"{"owner":"a","wait_ms":5000,"x":1}"#, None; "an unknown field is refused at once")]
    #[test_case("not json wait_ms", None; "not json")]
    fn a_waiting_acquire_is_relayed_for_as_long_as_its_wait(body: &str, wait: Option<u64>) {
        assert_eq!(acquire_wait_ms(body.as_bytes(), 60_000), wait);
    }
}
