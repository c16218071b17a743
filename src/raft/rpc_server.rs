//! The peer-only Raft listener: `POST /raft/*` with postcard bodies and the cluster secret;
//! the receiving side of [`super::network`].
//!
//! Order of checks, cheapest first, so that a stranger costs the node nothing:
//! 1. **The secret, from the headers**, before a byte of the body is read (a middleware
//!    in front of every route, unknown paths included). A wrong or missing secret is
//!    `401 UNAUTHORIZED` problem+json; the body is never read (hyper gives up on it and
//!    closes the connection). The secret is compared as SHA-256 digests in constant
//!    time, so neither its bytes nor its length leak through timing. Refusals are
//!    logged at `warn`, at most once per [`REFUSAL_LOG_INTERVAL`] with a count of the
//!    ones not logged: a misconfigured peer is visible at the default level, a flood is
//!    not a log flood.
//! 2. **The size.** An RPC body is read up to `raft.max_message_bytes`; a snapshot up
//!    to the size its request announces (`content-length`), which must be at most
//!    `raft.max_snapshot_bytes`. A declared size over the limit is refused (`413
//!    PAYLOAD_TOO_LARGE`) before reading; a body that grows past it while being read
//!    is refused when it does. The snapshot is held in memory, as openraft installs it
//!    from a buffer (the table it rebuilds is in memory anyway).
//! 3. **The message.** A body that does not decode is `400 INVALID_REQUEST`.
//!
//! Between 1 and 2, **the cluster id** ([`CLUSTER_HEADER`]) on every RPC but the
//! `initialized` probe: a request of another cluster is `403 FORBIDDEN` (logged like a
//! wrong secret, naming both ids), and a fresh node adopts the first id it is sent
//! (`data_dir::Identity::admit`, which writes it to disk: rare, so done in place) before
//! the request reaches Raft. A request without an id comes from a fresh node and passes.
//!
//! None of these reaches Raft. A Raft error (the node is stopping) is 503, which the
//! sending side treats as "unreachable". Nothing here knows the node or the public API:
//! the router serves one Raft handle with one secret.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::data_dir::{Admission, ClusterId, Identity, CLUSTER_HEADER};
use super::network::{path, INITIALIZED_PATH, SECRET_HEADER};
use super::typ::{
    self, AppendEntriesRequest, SnapshotMeta, TransferLeaderRequest, Vote, VoteRequest,
};
use crate::api::problem::ApiError;
use crate::codec;
use crate::sync::LockUnpoisoned;

/// Refused Raft requests are logged at most this often (with a count of the others).
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Body limits of the Raft listener, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyLimits {
    /// Any RPC but a snapshot (`raft.max_message_bytes`).
    pub message: u64,
    /// A snapshot (`raft.max_snapshot_bytes`).
    pub snapshot: u64,
}

impl BodyLimits {
    /// The limits of `[raft]` in `config`.
    pub fn of(config: &crate::config::RaftConfig) -> BodyLimits {
        BodyLimits {
            message: config.max_message_bytes,
            snapshot: config.max_snapshot_bytes,
        }
    }
}

/// What the handlers serve: the node's Raft, the digest of the secret its peers must
/// present, and the body limits.
#[derive(Clone)]
struct Peer {
    raft: typ::Raft,
    identity: Arc<Identity>,
    secret_digest: [u8; 32],
    limits: BodyLimits,
    refusals: Arc<Mutex<RefusalLog>>,
    /// Refusals of another cluster's RPCs, logged apart from secret refusals.
    strangers: Arc<Mutex<RefusalLog>>,
}

/// The Raft RPC router of `raft`, open to peers that present `secret` and, once this
/// node has one, its cluster id (`identity`).
pub fn router(
    raft: typ::Raft,
    identity: Arc<Identity>,
    secret: &str,
    limits: BodyLimits,
) -> Router {
    let peer = Peer {
        raft,
        identity,
        secret_digest: Sha256::digest(secret.as_bytes()).into(),
        limits,
        refusals: Arc::default(),
        strangers: Arc::default(),
    };
    Router::new()
        .route(path::APPEND, post(append))
        .route(path::VOTE, post(vote))
        .route(path::PRE_VOTE, post(pre_vote))
        .route(path::TRANSFER_LEADER, post(transfer_leader))
        .route(path::SNAPSHOT, post(snapshot))
        // The probe is answered to any peer with the secret: a fresh node asks it
        // before it has an id, and "this one has data" is what it needs to hear.
        .route_layer(middleware::from_fn_with_state(peer.clone(), same_cluster))
        .route(INITIALIZED_PATH, get(initialized))
        .fallback(|req: Request| async move {
            ApiError::NotFound(format!("no endpoint {} {}", req.method(), req.uri().path()))
        })
        .method_not_allowed_fallback(|req: Request| async move {
            ApiError::MethodNotAllowed(format!(
                "{} is not allowed on {}",
                req.method(),
                req.uri().path()
            ))
        })
        .layer(middleware::from_fn_with_state(peer.clone(), authenticate))
        .with_state(peer)
}

/// Refuses a request without the cluster secret before anything reads its body.
async fn authenticate(State(peer): State<Peer>, req: Request, next: Next) -> Response {
    let refusal = match req.headers().get(SECRET_HEADER) {
        None => "no cluster secret",
        Some(given)
            if digests_equal(
                &Sha256::digest(given.as_bytes()).into(),
                &peer.secret_digest,
            ) =>
        {
            return next.run(req).await
        }
        Some(_) => "wrong cluster secret",
    };
    let logged = peer.refusals.lock_unpoisoned().record(Instant::now());
    if let Some(suppressed) = logged {
        tracing::warn!(
            path = req.uri().path(),
            suppressed,
            "refused a raft request: {refusal} (check raft.secret on every node)"
        );
    }
    let mut resp =
        ApiError::Unauthorized(format!("{refusal}; this listener is for peers")).into_response();
    // The body is left unread: the connection cannot carry another request.
    resp.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    resp
}

/// Refuses an RPC of another cluster; a fresh node joins the sender's (see `data_dir`).
async fn same_cluster(State(peer): State<Peer>, req: Request, next: Next) -> Response {
    let theirs = match req.headers().get(CLUSTER_HEADER).map(|v| v.to_str()) {
        None => None,
        Some(Ok(v)) => match ClusterId::parse(v) {
            Ok(id) => Some(id),
            Err(e) => return ApiError::InvalidRequest(e).into_response(),
        },
        Some(Err(_)) => {
            return ApiError::InvalidRequest("cluster id is not text".into()).into_response()
        }
    };
    match peer.identity.admit(theirs) {
        Ok(Admission::Same) => next.run(req).await,
        Ok(Admission::Adopted(id)) => {
            tracing::info!(cluster_id = %id, "joined cluster {id} (first contact from its leader)");
            next.run(req).await
        }
        Ok(Admission::Refused { ours, theirs }) => {
            let logged = peer.strangers.lock_unpoisoned().record(Instant::now());
            if let Some(suppressed) = logged {
                tracing::warn!(
                    path = req.uri().path(),
                    suppressed,
                    cluster_id = %ours,
                    sender_cluster_id = %theirs,
                    "refused a raft request from a node of cluster {theirs}: this node is in \
                     cluster {ours} (a stale data dir or a wrong [[nodes]] address on the sender)"
                );
            }
            ApiError::Forbidden(format!(
                "this node is in cluster {ours}, the request comes from cluster {theirs}"
            ))
            .into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot record the cluster id");
            ApiError::Internal(format!("cannot record the cluster id: {e}")).into_response()
        }
    }
}

/// Whether two digests are equal, in time independent of where they differ.
fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keep the compiler from turning the fold into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

/// Rate limit of the refusal log of one listener.
#[derive(Default)]
struct RefusalLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RefusalLog {
    /// Records a refusal at `now`; `Some(suppressed since the last line)` if this one
    /// is to be logged.
    fn record(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < REFUSAL_LOG_INTERVAL)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// The body of an authenticated request, read up to `limit` bytes: a declared length
/// over it is refused before reading.
async fn read_body(headers: &HeaderMap, body: Body, limit: u64) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = |size: String| {
        ApiError::PayloadTooLarge(format!(
            "raft message of {size} is over the limit of {limit} bytes"
        ))
    };
    if let Some(declared) = declared.filter(|d| *d > limit) {
        return Err(too_large(format!("{declared} bytes")));
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
        {
            too_large("more bytes".into())
        } else {
            ApiError::InvalidRequest(format!("cannot read the raft message: {e}"))
        }
    })
}

/// Reads and decodes the body of an authenticated request.
async fn decode_body<T: DeserializeOwned>(req: Request, limit: u64) -> Result<T, ApiError> {
    let (parts, body) = req.into_parts();
    let bytes = read_body(&parts.headers, body, limit).await?;
    codec::decode(&bytes).map_err(|e| ApiError::InvalidRequest(format!("bad raft message: {e}")))
}

fn encode_answer<T: Serialize, E: std::fmt::Display>(result: Result<T, E>) -> Response {
    match result {
        Ok(v) => match codec::encode(&v) {
            Ok(bytes) => (StatusCode::OK, bytes).into_response(),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        },
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

async fn append(State(peer): State<Peer>, req: Request) -> Response {
    match decode_body::<AppendEntriesRequest>(req, peer.limits.message).await {
        Ok(req) => encode_answer(peer.raft.append_entries(req).await),
        Err(refusal) => refusal.into_response(),
    }
}

async fn vote(State(peer): State<Peer>, req: Request) -> Response {
    match decode_body::<VoteRequest>(req, peer.limits.message).await {
        Ok(req) => encode_answer(peer.raft.vote(req).await),
        Err(refusal) => refusal.into_response(),
    }
}

async fn pre_vote(State(peer): State<Peer>, req: Request) -> Response {
    match decode_body::<VoteRequest>(req, peer.limits.message).await {
        Ok(req) => encode_answer(peer.raft.pre_vote(req).await),
        Err(refusal) => refusal.into_response(),
    }
}

async fn snapshot(State(peer): State<Peer>, req: Request) -> Response {
    match decode_body::<(Vote, SnapshotMeta, Vec<u8>)>(req, peer.limits.snapshot).await {
        Ok((vote, meta, data)) => {
            let snapshot = typ::Snapshot {
                meta,
                snapshot: std::io::Cursor::new(data),
            };
            encode_answer(peer.raft.install_full_snapshot(vote, snapshot).await)
        }
        Err(refusal) => refusal.into_response(),
    }
}

async fn transfer_leader(State(peer): State<Peer>, req: Request) -> Response {
    match decode_body::<TransferLeaderRequest>(req, peer.limits.message).await {
        Ok(req) => encode_answer(peer.raft.handle_transfer_leader(req).await),
        Err(refusal) => refusal.into_response(),
    }
}

async fn initialized(State(peer): State<Peer>) -> Response {
    encode_answer(peer.raft.is_initialized().await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_match_only_when_equal_whatever_their_lengths() {
        let digest = |s: &str| -> [u8; 32] { Sha256::digest(s.as_bytes()).into() };
        let expected = digest("test-secret");
        assert!(digests_equal(&digest("test-secret"), &expected));
        for other in ["", "test-secreT", "test-secret-but-longer", "t"] {
            assert!(!digests_equal(&digest(other), &expected), "{other:?}");
        }
    }

    #[test]
    fn refusals_are_logged_once_per_interval_with_a_count() {
        let mut log = RefusalLog::default();
        let t0 = Instant::now();
        assert_eq!(log.record(t0), Some(0));
        for i in 1..=5 {
            assert_eq!(log.record(t0 + Duration::from_secs(i)), None);
        }
        assert_eq!(log.record(t0 + REFUSAL_LOG_INTERVAL), Some(5));
        assert_eq!(log.record(t0 + REFUSAL_LOG_INTERVAL), None);
    }
}
