//! `/v1/cluster`: this node's view of the cluster, and the admin actions on it
//! (add and remove nodes, allow a wiped node to rejoin, take a snapshot now).

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use openraft::async_runtime::WatchReceiver;
use serde::Serialize;
use serde_json::json;

use super::extract::{ApiJson, PathText};
use super::problem::ApiError;
use super::App;
use crate::node::{ChangeProgress, ClusterStatus, MembershipOutcome, PeerStatus};
use crate::raft::NodeAddr;
use crate::wire::{rfc3339_ms, AddNodeRequest, MembershipAnswer, MembershipChangeView};

/// The answer to `GET /v1/cluster`: the node's status with its peers' times in RFC 3339.
#[derive(Debug, Serialize)]
pub struct ClusterView {
    #[serde(flatten)]
    pub status: ClusterStatus,
    pub peers: Vec<PeerView>,
    /// On the leader, the membership change it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub membership_change: Option<MembershipChangeView>,
}

impl From<&ChangeProgress> for MembershipChangeView {
    fn from(p: &ChangeProgress) -> MembershipChangeView {
        MembershipChangeView {
            action: p.action.to_string(),
            node_id: p.node_id,
            phase: p.phase.as_str().to_string(),
            since: rfc3339_ms(p.since_ms),
            matched_index: p.matched_index,
            target_index: p.target_index,
        }
    }
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
    let membership_change = app
        .node
        .membership_change()
        .as_ref()
        .map(MembershipChangeView::from);
    Json(ClusterView {
        status,
        peers,
        membership_change,
    })
}

/// `POST /v1/cluster/nodes` (admin, on the leader): add a node as a learner, wait
/// (bounded by `raft.catch_up_timeout_ms`) until it has caught up, then make it a voter
/// (see [`crate::node::membership`]).
pub async fn add_node(
    State(app): State<App>,
    ApiJson(body): ApiJson<AddNodeRequest>,
) -> Result<Json<MembershipAnswer>, ApiError> {
    if body.id == 0 {
        return Err(ApiError::InvalidRequest("id must be non-zero".into()));
    }
    for (field, addr) in [("api", &body.api), ("raft", &body.raft)] {
        check_advertised(field, addr)?;
    }
    if body.api == body.raft {
        return Err(ApiError::InvalidRequest(format!(
            "api and raft are both {:?}; a node needs two listeners",
            body.api
        )));
    }
    let addr = NodeAddr {
        raft: body.raft,
        api: body.api,
    };
    let outcome = app.node.add_node(body.id, addr).await?;
    Ok(Json(answer(outcome)))
}

/// `DELETE /v1/cluster/nodes/{id}` (admin, on the leader): remove a voter or a learner
/// (the leader too: it hands over leadership once the change is committed).
pub async fn remove_node(
    State(app): State<App>,
    PathText(raw): PathText,
) -> Result<Json<MembershipAnswer>, ApiError> {
    let id = node_id(&raw)?;
    let outcome = app.node.remove_node(id).await?;
    Ok(Json(answer(outcome)))
}

fn node_id(raw: &str) -> Result<crate::NodeId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::InvalidRequest(format!("node id must be a number, got {raw:?}")))
}

/// An address others connect to: `ip:port`, not the unspecified address (as
/// `[[nodes]]` in `cluster.toml`, see `Config::validate`).
fn check_advertised(field: &str, addr: &str) -> Result<(), ApiError> {
    match addr.parse::<std::net::SocketAddr>() {
        Ok(a) if !a.ip().is_unspecified() && a.port() != 0 => Ok(()),
        Ok(_) => Err(ApiError::InvalidRequest(format!(
            "{field} {addr:?} is not an address others can connect to; give the node's ip:port"
        ))),
        Err(_) => Err(ApiError::InvalidRequest(format!(
            "{field} {addr:?} is not an ip:port address"
        ))),
    }
}

fn answer(o: MembershipOutcome) -> MembershipAnswer {
    MembershipAnswer {
        node_id: o.node_id,
        action: o.action.to_string(),
        changed: o.changed,
        voters: o.voters,
        learners: o.learners,
    }
}

/// `POST /v1/cluster/nodes/{id}/allow-rejoin` (admin, on the leader): node `id` may
/// come back with an empty data directory and is sent a snapshot (see
/// [`crate::node::Node::allow_rejoin`]).
pub async fn allow_rejoin(
    State(app): State<App>,
    PathText(raw): PathText,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = node_id(&raw)?;
    // The membership, not cluster.toml: nodes added later are not in the file.
    if app.node.status().members.iter().all(|m| m.id != id) {
        return Err(ApiError::InvalidRequest(format!(
            "node {id} is not in the cluster"
        )));
    }
    app.node.allow_rejoin(id).await?;
    tracing::info!(node = id, "node may rejoin with an empty data dir");
    Ok(Json(json!({"node_id": id, "allowed": true})))
}

/// How long a snapshot request waits for its build.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(60);
/// A trigger sent while another build runs is dropped by Raft: trigger again this often.
const SNAPSHOT_RETRIGGER: Duration = Duration::from_secs(1);

/// `POST /v1/cluster/snapshot` (admin, this node): build a snapshot now, whatever the
/// policy in `node::compaction` says, and answer once it is built (the log behind it is
/// purged as usual). Calls are coalesced ([`super::quota::SnapshotGate`]): a call made
/// while a build runs is answered by the next build that covers everything applied when
/// it arrived, so a burst of calls builds at most two snapshots.
pub async fn snapshot_now(State(app): State<App>) -> Result<Json<serde_json::Value>, ApiError> {
    let raft = app.node.raft();
    let arrived_at = index_of(raft.metrics().borrow_watched().last_applied.as_ref());
    let built = snapshot_covering(&app, arrived_at).await?;
    let snapshot_index = index_of(raft.metrics().borrow_watched().snapshot.as_ref());
    Ok(Json(json!({
        "node_id": app.node.id(),
        "snapshot_index": snapshot_index,
        "built": built,
    })))
}

fn index_of(l: Option<&crate::raft::typ::LogId>) -> u64 {
    l.map_or(0, |l| l.index)
}

/// Waits until this node has a snapshot covering log index `arrived_at`, building one if
/// it has none (coalesced with other requests, see [`snapshot_now`]); true if a build
/// was needed.
pub(super) async fn snapshot_covering(app: &App, arrived_at: u64) -> Result<bool, ApiError> {
    let raft = app.node.raft();
    let _turn = app.quotas.snapshot.turn().await;
    let covered = |m: &crate::raft::typ::RaftMetrics| index_of(m.snapshot.as_ref()) >= arrived_at;
    let built = !covered(&raft.metrics().borrow_watched());
    if built {
        let deadline = tokio::time::Instant::now() + SNAPSHOT_WAIT;
        raft.trigger()
            .snapshot()
            .await
            .map_err(|e| ApiError::Internal(format!("raft stopped: {e}")))?;
        let mut metrics = raft.metrics();
        let mut retrigger = tokio::time::Instant::now() + SNAPSHOT_RETRIGGER;
        while !covered(&metrics.borrow_watched()) {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(ApiError::Internal(format!(
                    "no snapshot up to index {arrived_at} within {} s",
                    SNAPSHOT_WAIT.as_secs()
                )));
            }
            if now >= retrigger {
                raft.trigger()
                    .snapshot()
                    .await
                    .map_err(|e| ApiError::Internal(format!("raft stopped: {e}")))?;
                retrigger = now + SNAPSHOT_RETRIGGER;
            }
            // A timeout only means: look at the deadlines again.
            let changed = tokio::time::timeout_at(retrigger.min(deadline), metrics.changed());
            if let Ok(Err(_)) = changed.await {
                return Err(ApiError::Internal("raft stopped".into()));
            }
        }
    }
    Ok(built)
}
