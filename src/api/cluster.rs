//! `/v1/cluster`: this node's view of the cluster, and the admin actions on it
//! (allow a wiped node to rejoin, take a snapshot now).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::problem::ApiError;
use super::App;
use crate::node::ClusterStatus;

/// `GET /v1/cluster`: this node's Raft view (see [`ClusterStatus`]).
pub async fn cluster(State(app): State<App>) -> Json<ClusterStatus> {
    Json(app.node.status())
}

/// `POST /v1/cluster/nodes/{id}/allow-rejoin` (admin, on the leader): node `id` may
/// come back with an empty data directory and is sent a snapshot (see
/// [`crate::node::Node::allow_rejoin`]).
pub async fn allow_rejoin(
    State(app): State<App>,
    axum::extract::Path(raw): axum::extract::Path<String>,
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
