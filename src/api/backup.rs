//! `GET /v1/cluster/backup` (admin `*`, on the leader): a backup file of the whole lock
//! table at a linearizable point (`raft::backup` describes the file).
//!
//! The leader first confirms its leadership with a read-index round, which also waits
//! until everything committed before the request is applied; then it takes a snapshot
//! that covers that point (an existing one, or one built now, coalesced with `POST
//! /v1/cluster/snapshot`), so the backup holds every write acknowledged before the
//! request arrived. A follower relays the request (`api::relay`, `Need::Leader`).
//!
//! # Caveats
//! - The file is answered in one body, built in memory like the snapshot it wraps; a
//!   relayed request waits at most the relay's deadline (`api.request_timeout_ms` + 1 s):
//!   for a table that takes longer to snapshot, ask the leader directly.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use openraft::async_runtime::WatchReceiver;

use super::problem::ApiError;
use super::App;
use crate::node::Consistency;
use crate::raft::backup;

/// Header of the answer naming the last log index the backup covers.
pub const BACKUP_INDEX_HEADER: &str = "x-baton-backup-index";

/// `GET /v1/cluster/backup`.
pub async fn backup(State(app): State<App>) -> Result<Response, ApiError> {
    // Leadership confirmed by a quorum, and everything committed before now applied.
    app.node.read(Consistency::Linearizable, |_, _| ()).await?;
    let raft = app.node.raft();
    let point = raft
        .metrics()
        .borrow_watched()
        .last_applied
        .map_or(0, |l| l.index);
    super::cluster::snapshot_covering(&app, point).await?;
    let snapshot = raft
        .get_snapshot()
        .await
        .map_err(|e| ApiError::Internal(format!("raft stopped: {e}")))?
        .ok_or_else(|| ApiError::Internal("no snapshot after building one".into()))?;
    let index = snapshot.meta.last_log_id.map_or(0, |l| l.index);
    if index < point {
        return Err(ApiError::Internal(format!(
            "the snapshot covers index {index}, short of {point}"
        )));
    }
    let file = backup::encode(
        &snapshot.meta,
        snapshot.snapshot.into_inner(),
        app.node.identity().cluster_id(),
    )
    .map_err(|e| ApiError::Internal(format!("cannot write the backup: {e}")))?;
    tracing::info!(index, bytes = file.len(), "backup taken");
    let mut resp = file.into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(BACKUP_INDEX_HEADER, HeaderValue::from(index));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use axum::http::Method;

    use crate::api::auth::{access, Access};
    use crate::auth::Permission;
    use crate::wire::BACKUP_PATH;

    #[test]
    fn a_backup_needs_admin_on_every_key() {
        assert_eq!(
            access(&Method::GET, BACKUP_PATH, None, None),
            Access::All(Permission::Admin)
        );
    }
}
