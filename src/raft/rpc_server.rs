//! The peer-only Raft listener: `POST /raft/*` with postcard bodies and the cluster secret;
//! the receiving side of [`super::network`].
//!
//! A request without the right secret gets 401; a body that does not decode gets 400.
//! Neither reaches Raft. A Raft error (the node is stopping) is 503, which the sending
//! side treats as "unreachable". Nothing here knows the node or the public API: the
//! router serves one Raft handle with one secret.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::network::{path, INITIALIZED_PATH, SECRET_HEADER};
use super::typ::{
    self, AppendEntriesRequest, SnapshotMeta, TransferLeaderRequest, Vote, VoteRequest,
};
use crate::codec;

/// Largest Raft message other than a snapshot.
const MAX_RPC_BYTES: usize = 64 * 1024 * 1024;
/// Largest snapshot accepted.
const MAX_SNAPSHOT_BYTES: usize = 4 * 1024 * 1024 * 1024;

/// What the handlers serve: the node's Raft and the secret its peers must present.
#[derive(Clone)]
struct Peer {
    raft: typ::Raft,
    secret: Arc<str>,
}

/// The Raft RPC router of `raft`, open to peers that present `secret`.
pub fn router(raft: typ::Raft, secret: &str) -> Router {
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
        .with_state(Peer {
            raft,
            secret: secret.into(),
        })
}

fn authorized(peer: &Peer, headers: &HeaderMap) -> bool {
    let expected = peer.secret.as_bytes();
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
    peer: &Peer,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, (StatusCode, String)> {
    if !authorized(peer, headers) {
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

async fn append(State(peer): State<Peer>, headers: HeaderMap, body: Bytes) -> Response {
    match decode_body::<AppendEntriesRequest>(&peer, &headers, &body) {
        Ok(req) => encode_answer(peer.raft.append_entries(req).await),
        Err(refusal) => refusal.into_response(),
    }
}

async fn vote(State(peer): State<Peer>, headers: HeaderMap, body: Bytes) -> Response {
    match decode_body::<VoteRequest>(&peer, &headers, &body) {
        Ok(req) => encode_answer(peer.raft.vote(req).await),
        Err(refusal) => refusal.into_response(),
    }
}

async fn pre_vote(State(peer): State<Peer>, headers: HeaderMap, body: Bytes) -> Response {
    match decode_body::<VoteRequest>(&peer, &headers, &body) {
        Ok(req) => encode_answer(peer.raft.pre_vote(req).await),
        Err(refusal) => refusal.into_response(),
    }
}

async fn snapshot(State(peer): State<Peer>, headers: HeaderMap, body: Bytes) -> Response {
    match decode_body::<(Vote, SnapshotMeta, Vec<u8>)>(&peer, &headers, &body) {
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

async fn transfer_leader(State(peer): State<Peer>, headers: HeaderMap, body: Bytes) -> Response {
    match decode_body::<TransferLeaderRequest>(&peer, &headers, &body) {
        Ok(req) => encode_answer(peer.raft.handle_transfer_leader(req).await),
        Err(refusal) => refusal.into_response(),
    }
}

async fn initialized(State(peer): State<Peer>, headers: HeaderMap) -> Response {
    if !authorized(&peer, &headers) {
        return (StatusCode::UNAUTHORIZED, "missing or wrong cluster secret").into_response();
    }
    encode_answer(peer.raft.is_initialized().await)
}
