//! This node's view of the cluster (`/v1/cluster`) and its readiness (`/readyz`).
//!
//! Both are read from openraft's metrics and the local lock table; nothing here
//! talks to peers or changes state.

use std::collections::BTreeMap;

use openraft::async_runtime::WatchReceiver;
use serde::Serialize;

use super::{Node, Role};
use crate::raft::state_machine::with_table;
use crate::raft::NodeAddr;
use crate::NodeId;

/// A snapshot of this node's Raft view, for `/v1/cluster` and readiness.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterStatus {
    pub node_id: NodeId,
    pub state: Role,
    pub leader_id: Option<NodeId>,
    pub term: u64,
    pub members: Vec<MemberStatus>,
    pub last_log_index: Option<u64>,
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    /// Highest cluster time applied on this node.
    pub applied_cluster_time_ms: u64,
    pub locks_stored: usize,
}

/// One voter or learner in the membership.
#[derive(Clone, Debug, Serialize)]
pub struct MemberStatus {
    pub id: NodeId,
    pub api: String,
    pub raft: String,
    pub voter: bool,
}

impl Node {
    /// This node's view of the cluster.
    pub fn status(&self) -> ClusterStatus {
        let m = self.inner.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let nodes: BTreeMap<NodeId, NodeAddr> =
            membership.nodes().map(|(id, n)| (*id, n.clone())).collect();
        let members = nodes
            .into_iter()
            .map(|(id, n)| MemberStatus {
                id,
                api: n.api,
                raft: n.raft,
                voter: voters.contains(&id),
            })
            .collect();
        let (now_ms, stored) = with_table(&self.inner.table, |t| (t.now_ms(), t.len()));
        ClusterStatus {
            node_id: self.inner.id,
            state: m.state.into(),
            leader_id: m.current_leader,
            term: m.current_term,
            members,
            last_log_index: m.last_log_index,
            committed_index: m.local_committed.as_ref().map(|l| l.index),
            applied_index: m.last_applied.as_ref().map(|l| l.index),
            snapshot_index: m.snapshot.as_ref().map(|l| l.index),
            purged_index: m.purged.as_ref().map(|l| l.index),
            applied_cluster_time_ms: now_ms,
            locks_stored: stored,
        }
    }

    /// Ready to serve: Raft runs, a leader is known, and this node has applied everything
    /// it knows to be committed. Returns the reason when not ready.
    pub fn readiness(&self) -> Result<(), String> {
        let m = self.inner.raft.metrics().borrow_watched().clone();
        if let Err(e) = &m.running_state {
            return Err(format!("raft stopped: {e}"));
        }
        if m.current_leader.is_none() {
            return Err("no known leader".into());
        }
        // A node started on an empty data dir knows a leader from its first heartbeat
        // but holds nothing until the leader's snapshot arrives.
        if m.membership_config
            .membership()
            .get_node(&self.id())
            .is_none()
        {
            return Err("not in the membership this node has applied (empty data dir: waiting for the leader's snapshot)".into());
        }
        let committed = m.local_committed.as_ref().map(|l| l.index);
        let applied = m.last_applied.as_ref().map(|l| l.index);
        if applied < committed {
            return Err(format!(
                "applying: applied {applied:?} < committed {committed:?}"
            ));
        }
        Ok(())
    }
}
