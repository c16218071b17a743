//! Health probes: `/healthz` (the process serves HTTP and Raft runs) and `/readyz`
//! (this node can serve requests; see [`crate::node::Node::readiness`]).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::App;
use crate::node::Role;

/// `GET /healthz`: 200 while Raft runs on this node, 503 once it has stopped.
pub async fn healthz(State(app): State<App>) -> Response {
    match app.node.role() {
        Role::Shutdown => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "stopped"})),
        )
            .into_response(),
        _ => Json(json!({"status": "ok", "node_id": app.node.id()})).into_response(),
    }
}

/// `GET /readyz`: 200 when this node can serve, else 503 with the reason.
pub async fn readyz(State(app): State<App>) -> Response {
    match app.node.readiness() {
        Ok(()) => Json(json!({"ready": true, "node_id": app.node.id(), "leader_id": app.node.leader().map(|l| l.id)}))
            .into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "node_id": app.node.id(), "reason": reason})),
        )
            .into_response(),
    }
}
