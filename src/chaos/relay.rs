//! The recording relay: how the chaos workload sees every request the Rust client makes.
//!
//! The holders that use the Rust client — [`LockGuard`](crate::client::LockGuard) work
//! in the main process and the `baton lock` processes ([`super::holders`]) — talk to the
//! cluster through this relay: one plain-HTTP listener on loopback per node, forwarding
//! each request to that node (with the run's API key and CA) and recording each lock
//! operation (acquire, renew, release, read) as one history [`Op`], classified exactly as
//! the workload's own requests (`Answer`). So every attempt of the client — its retries
//! after `NO_LEADER`, `OUTCOME_UNKNOWN` or a lost answer included — is in the history
//! with its own outcome, and every check applies to those keys as to any other.
//!
//! An attempt's `invoke_ms` is when the relay got it: a loopback hop after the client
//! sent it, and the node's lease starts later still. Checks that count a lease from its
//! send time (lease not cut short, the safe deadline) are therefore looser by that hop
//! than on the client's own clock, never stricter. Its `complete_ms` is when the node's
//! answer reached the relay, before the client sees it.
//!
//! Each attempt is forwarded and recorded in a task of its own: a client that gives up
//! and drops the connection must not take the record with it, since the node may still
//! apply the request. A request the relay cannot get an answer to is answered 503
//! `NO_LEADER` when the node refused the connection, else `OUTCOME_UNKNOWN` (the client
//! retries either way, as after a refused connection or a lost answer). Event streams
//! (`…/events`) are passed through as they come and not recorded.
//!
//! # Caveats
//! A client that hangs up does not hang up on the node: the relay waits for the answer
//! (up to [`UPSTREAM_TIMEOUT`]). A waiting acquire would not be cancelled by a client's
//! disconnect, so the holders behind the relay never wait in a queue.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::de::DeserializeOwned;

use super::history::{Op, OpKind};
use super::workload::{Answer, Recorder};
use crate::sync::LockUnpoisoned;
use crate::wire::{AcquireRequest, ErrorCode, Problem, ReleaseRequest, RenewRequest};

/// Longest wait for a node's answer: the Rust client's own per-attempt limit, so the
/// client, not the relay, decides when an attempt has taken too long.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(10);

/// Headers a client request carries that matter to a node.
const FORWARDED: [header::HeaderName; 2] = [header::CONTENT_TYPE, header::ACCEPT];
/// The event stream's resume header.
const LAST_EVENT_ID: &str = "last-event-id";

/// A node's answer as the relay passes it on: status, `Content-Type`, `Retry-After`, body.
type Reply = (
    StatusCode,
    Option<header::HeaderValue>,
    Option<header::HeaderValue>,
    Bytes,
);

/// What one relay listener forwards to, and where it records.
#[derive(Clone)]
struct Upstream {
    http: reqwest::Client,
    /// The node's API endpoint (`https://host:port`).
    node: String,
    rec: Recorder,
    /// Owner of each token granted through the relay: renewals and releases name only
    /// the token.
    owners: Arc<Mutex<BTreeMap<u64, String>>>,
}

/// Starts one listener per node on an ephemeral loopback port; returns their addresses
/// (`127.0.0.1:port`, in the order of `nodes`), the endpoints to give the Rust client.
pub(super) async fn start(
    http: reqwest::Client,
    nodes: &[String],
    rec: Recorder,
) -> Result<Vec<String>, String> {
    let owners = Arc::default();
    let mut addrs = Vec::new();
    for node in nodes {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("cannot start the relay: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let up = Upstream {
            http: http.clone(),
            node: node.clone(),
            rec: rec.clone(),
            owners: Arc::clone(&owners),
        };
        let app = Router::new().fallback(forward).with_state(up);
        tokio::spawn(async move { axum::serve(listener, app).await });
        addrs.push(addr.to_string());
    }
    Ok(addrs)
}

/// A lock operation as the request shows it.
#[derive(Debug, PartialEq)]
struct Call {
    kind: OpKind,
    key: String,
    owner: Option<String>,
    token: Option<u64>,
    ttl_ms: Option<u64>,
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Option<T> {
    serde_json::from_slice(body).ok()
}

/// The lock operation `method path body` is, if it is one the history records.
fn call_of(method: &Method, path: &str, body: &[u8]) -> Option<Call> {
    let rest = path.strip_prefix("/v1/locks/")?;
    let (key, action) = match rest.split_once('/') {
        Some((key, action)) => (key, Some(action)),
        None => (rest, None),
    };
    let call = |kind, owner, token, ttl_ms| Call {
        kind,
        key: key.to_string(),
        owner,
        token,
        ttl_ms,
    };
    match (method, action) {
        (&Method::GET, None) => Some(call(OpKind::Read, None, None, None)),
        (&Method::POST, Some("acquire")) => {
            let req: AcquireRequest = parse(body)?;
            Some(call(OpKind::Acquire, Some(req.owner), None, req.ttl_ms))
        }
        (&Method::POST, Some("renew")) => {
            let req: RenewRequest = parse(body)?;
            Some(call(OpKind::Renew, None, Some(req.token), req.ttl_ms))
        }
        (&Method::POST, Some("release")) => {
            let req: ReleaseRequest = parse(body)?;
            Some(call(OpKind::Release, req.owner, req.token, None))
        }
        _ => None,
    }
}

async fn forward(
    State(up): State<Upstream>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let invoke_ms = up.rec.now_ms();
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut req = up
        .http
        .request(method.clone(), crate::wire::endpoint_url(&up.node, target));
    for name in FORWARDED
        .iter()
        .chain(&[header::HeaderName::from_static(LAST_EVENT_ID)])
    {
        if let Some(value) = headers.get(name) {
            req = req.header(name, value);
        }
    }
    if uri.path().ends_with("/events") {
        return stream(req).await;
    }
    let call = call_of(&method, uri.path(), &body);
    let req = req.body(body).timeout(UPSTREAM_TIMEOUT);
    let node = up.node.clone();
    // Its own task: see the module docs.
    let task = tokio::spawn(async move {
        let answer = match req.send().await {
            Ok(resp) => {
                let status = resp.status();
                let kind = resp.headers().get(header::CONTENT_TYPE).cloned();
                let retry = resp.headers().get(header::RETRY_AFTER).cloned();
                match resp.bytes().await {
                    Ok(bytes) => Ok((status, kind, retry, bytes)),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        if let Some(call) = call {
            record(&up, call, invoke_ms, &answer);
        }
        answer
    });
    match task.await {
        Ok(Ok((status, kind, retry, bytes))) => {
            let mut resp = (status, bytes).into_response();
            for (name, value) in [(header::CONTENT_TYPE, kind), (header::RETRY_AFTER, retry)] {
                if let Some(v) = value {
                    resp.headers_mut().insert(name, v);
                }
            }
            resp
        }
        Ok(Err(e)) if e.is_connect() => no_answer(
            ErrorCode::NoLeader,
            &format!("relay: cannot connect to {node}: {e}"),
        ),
        Ok(Err(e)) => no_answer(
            ErrorCode::OutcomeUnknown,
            &format!("relay: no answer from {node}: {e}"),
        ),
        Err(e) => no_answer(ErrorCode::OutcomeUnknown, &format!("relay: {e}")),
    }
}

/// 503 `code`: the client retries on the next node, as after a refused connection
/// (`NO_LEADER`: nothing was sent) or a lost answer (`OUTCOME_UNKNOWN`).
fn no_answer(code: ErrorCode, detail: &str) -> Response {
    let problem = Problem::new(code, 503, "No answer through the chaos relay", detail);
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body,
    )
        .into_response()
}

/// Passes an event stream through chunk by chunk.
async fn stream(req: reqwest::RequestBuilder) -> Response {
    let mut resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            return no_answer(
                ErrorCode::OutcomeUnknown,
                &format!("relay: event stream: {e}"),
            )
        }
    };
    let status = resp.status();
    let kind = resp.headers().get(header::CONTENT_TYPE).cloned();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        loop {
            let next = match resp.chunk().await {
                Ok(Some(chunk)) => Ok(chunk),
                Ok(None) => return,
                Err(e) => Err(std::io::Error::other(e)),
            };
            let end = next.is_err();
            // The client hung up: stop reading from the node.
            if tx.send(next).await.is_err() || end {
                return;
            }
        }
    });
    let body = Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let mut out = (status, body).into_response();
    if let Some(v) = kind {
        out.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    out
}

/// Records one attempt as the workload records its own requests.
fn record(up: &Upstream, call: Call, invoke_ms: u64, answer: &Result<Reply, reqwest::Error>) {
    let a = match answer {
        Ok((status, _, _, bytes)) => Answer::new(
            up.node.clone(),
            status.as_u16(),
            serde_json::from_slice(bytes).unwrap_or(serde_json::Value::Null),
        ),
        Err(e) => Answer::lost(up.node.clone(), e),
    };
    let owner = call.owner.clone().or_else(|| {
        let token = call.token?;
        up.owners.lock_unpoisoned().get(&token).cloned()
    });
    let owner = owner.as_deref().unwrap_or("unknown");
    let mut op: Op = a.op(
        call.kind,
        &call.key,
        owner,
        call.token,
        (invoke_ms, up.rec.now_ms()),
    );
    op.ttl_ms = op.ttl_ms.or(call.ttl_ms);
    if let (OpKind::Acquire, Some(token)) = (op.kind, op.token) {
        up.owners.lock_unpoisoned().insert(token, owner.to_string());
    }
    up.rec.push(op);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_operations_are_told_from_their_path_and_body() {
        let acquire = call_of(
            &Method::POST,
            "/v1/locks/client-1/acquire",
            br#"{"owner":"cmd-0#3","ttl_ms":1000}"#,
        );
        assert_eq!(
            acquire,
            Some(Call {
                kind: OpKind::Acquire,
                key: "client-1".into(),
                owner: Some("cmd-0#3".into()),
                token: None,
                ttl_ms: Some(1000),
            })
        );
        let renew = call_of(&Method::POST, "/v1/locks/k/renew", br#"{"token":9}"#).unwrap();
        assert_eq!(
            (renew.kind, renew.token, renew.ttl_ms),
            (OpKind::Renew, Some(9), None)
        );
        let release = call_of(&Method::POST, "/v1/locks/k/release", br#"{"token":9}"#).unwrap();
        assert_eq!((release.kind, release.token), (OpKind::Release, Some(9)));
        assert_eq!(
            call_of(&Method::GET, "/v1/locks/k", b"").unwrap().kind,
            OpKind::Read
        );
        assert_eq!(call_of(&Method::GET, "/v1/locks/k/events", b""), None);
        assert_eq!(
            call_of(&Method::POST, "/v1/locks/k/validate", br#"{"token":9}"#),
            None
        );
        assert_eq!(call_of(&Method::GET, "/v1/cluster", b""), None);
    }
}
