//! The peer-only Raft listener: `POST /raft/*` with postcard bodies and the cluster secret.
//!
//! A request without the right secret gets 401; a body that does not decode gets 400.
//! Neither reaches Raft. A Raft error (the node is stopping) is 503, which the sending
//! side treats as "unreachable".

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec;
use crate::node::Node;
use crate::raft::network::{path, INITIALIZED_PATH, SECRET_HEADER};
use crate::raft::typ::{
    AppendEntriesRequest, SnapshotMeta, TransferLeaderRequest, Vote, VoteRequest,
};

/// Largest Raft message other than a snapshot.
const MAX_RPC_BYTES: usize = 64 * 1024 * 1024;
/// Largest snapshot accepted.
const MAX_SNAPSHOT_BYTES: usize = 4 * 1024 * 1024 * 1024;

/// The Raft RPC router of `node`.
pub fn router(node: Node) -> Router {
    Router::new()
        .route(path::APPEND, post(append))
        .route(path::VOTE, post(vote))
        .route(path::PRE_VOTE, post(pre_vote))
        .route(path::TRANSFER_LEADER, post(transfer_leader))
        .route(INITIALIZED_PATH, get(initialized))
        .layer(DefaultBodyLimit::max(MAX_RPC_BYTES))
        .merge(
            Router::new()
                .route(path::SNAPSHOT, post(snapshot))
                .layer(DefaultBodyLimit::max(MAX_SNAPSHOT_BYTES)),
        )
        .with_state(node)
}

fn authorized(node: &Node, headers: &HeaderMap) -> bool {
    let expected = node.config().raft.secret.as_bytes();
    let Some(given) = headers.get(SECRET_HEADER).map(|v| v.as_bytes()) else {
        return false;
    };
    // Constant-time comparison: do not leak the secret through timing.
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn decode_body<T: DeserializeOwned>(
    node: &Node,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, (StatusCode, String)> {
    if !authorized(node, headers) {
        return Err((
            StatusCode::UNAUTHORIZED,
            "missing or wrong cluster secret".into(),
        ));
    }
    codec::decode(body).map_err(|e| (StatusCode::BAD_REQUEST, format!("bad raft message: {e}")))
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

async fn append(State(node): State<Node>, headers: HeaderMap, body: Bytes) -> Response {
    match decode_body::<AppendEntriesRequest>(&node, &headers, &body) {
        Ok(req) => encode_answer(node.raft().append_entries(req).await),
        Err(refusal) => refusal.into_response(),
    }
}

async fn vote(State(node): State<Node>, headers: HeaderMap, body: Bytes) -> Response {
    match decode_body::<VoteRequest>(&node, &headers, &body) {
        Ok(req) => encode_answer(node.raft().vote(req).await),
        Err(refusal) => refusal.into_response(),
    }
}

async fn pre_vote(State(node): State<Node>, headers: HeaderMap, body: Bytes) -> Response {
    match decode_body::<VoteRequest>(&node, &headers, &body) {
        Ok(req) => encode_answer(node.raft().pre_vote(req).await),
        Err(refusal) => refusal.into_response(),
    }
}

async fn snapshot(State(node): State<Node>, headers: HeaderMap, body: Bytes) -> Response {
    match decode_body::<(Vote, SnapshotMeta, Vec<u8>)>(&node, &headers, &body) {
        Ok((vote, meta, data)) => {
            let snapshot = crate::raft::typ::Snapshot {
                meta,
                snapshot: std::io::Cursor::new(data),
            };
            encode_answer(node.raft().install_full_snapshot(vote, snapshot).await)
        }
        Err(refusal) => refusal.into_response(),
    }
}

async fn transfer_leader(State(node): State<Node>, headers: HeaderMap, body: Bytes) -> Response {
    match decode_body::<TransferLeaderRequest>(&node, &headers, &body) {
        Ok(req) => encode_answer(node.raft().handle_transfer_leader(req).await),
        Err(refusal) => refusal.into_response(),
    }
}

async fn initialized(State(node): State<Node>, headers: HeaderMap) -> Response {
    if !authorized(&node, &headers) {
        return (StatusCode::UNAUTHORIZED, "missing or wrong cluster secret").into_response();
    }
    encode_answer(node.raft().is_initialized().await)
}
