//! `/v1/cluster`: this node's view of the cluster, and the admin actions on it
//! (allow a wiped node to rejoin, take a snapshot now).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::json;

use super::extract::PathText;
use super::problem::ApiError;
use super::App;
use crate::node::{ClusterStatus, PeerStatus};
use crate::wire::rfc3339_ms;

/// The answer to `GET /v1/cluster`: the node's status with its peers' times in RFC 3339.
#[derive(Debug, Serialize)]
pub struct ClusterView {
    #[serde(flatten)]
    pub status: ClusterStatus,
    pub peers: Vec<PeerView>,
}

/// One other member as this node sees it.
#[derive(Debug, Serialize)]
pub struct PeerView {
    pub id: crate::NodeId,
    pub reachable: bool,
    /// Since when it is in this state; `null` when this node has not talked to it
    /// recently (followers talk to peers only during elections).
    pub since: Option<String>,
    pub error: Option<String>,
}

impl From<&PeerStatus> for PeerView {
    fn from(p: &PeerStatus) -> PeerView {
        PeerView {
            id: p.id,
            reachable: p.reachable,
            since: p.since_ms.map(rfc3339_ms),
            error: p.error.clone(),
        }
    }
}

/// `GET /v1/cluster`: this node's Raft view (see [`ClusterStatus`]), its quorum and
/// its peers.
pub async fn cluster(State(app): State<App>) -> Json<ClusterView> {
    let status = app.node.status();
    let peers = status.peers.iter().map(PeerView::from).collect();
    Json(ClusterView { status, peers })
}

/// `POST /v1/cluster/nodes/{id}/allow-rejoin` (admin, on the leader): node `id` may
/// come back with an empty data directory and is sent a snapshot (see
/// [`crate::node::Node::allow_rejoin`]).
pub async fn allow_rejoin(
    State(app): State<App>,
    PathText(raw): PathText,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id: crate::NodeId = raw
        .parse()
        .map_err(|_| ApiError::InvalidRequest(format!("node id must be a number, got {raw:?}")))?;
    if app.node.config().nodes.iter().all(|n| n.id != id) {
        return Err(ApiError::InvalidRequest(format!(
            "node {id} is not in the cluster"
        )));
    }
    app.node.allow_rejoin(id).await?;
    tracing::info!(node = id, "node may rejoin with an empty data dir");
    Ok(Json(json!({"node_id": id, "allowed": true})))
}

/// `POST /v1/cluster/snapshot` (admin, this node): build a snapshot now, whatever the
/// policy in `node::compaction` says; the log behind it is purged as usual.
pub async fn snapshot_now(State(app): State<App>) -> Result<Response, ApiError> {
    app.node
        .raft()
        .trigger()
        .snapshot()
        .await
        .map_err(|e| ApiError::Internal(format!("raft stopped: {e}")))?;
    let body = json!({"node_id": app.node.id(), "triggered": true});
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}
