//! Bodies of the cluster and health endpoints: `GET /v1/cluster` ([`ClusterView`]),
//! `GET /readyz` ([`Readiness`]), `GET /healthz` ([`Health`]), and the membership
//! changes `POST /v1/cluster/nodes` ([`AddNodeRequest`]) and `DELETE
//! /v1/cluster/nodes/{id}`, both answered with a [`MembershipAnswer`].

use serde::{Deserialize, Serialize};

use crate::NodeId;

/// `GET` this path for a backup file (`baton snapshot save`; admin access).
pub const BACKUP_PATH: &str = "/v1/cluster/backup";

/// A node's Raft role, as `state` in [`ClusterView`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    /// Receives the log but does not vote (e.g. a node waiting for its first snapshot).
    Learner,
    /// Raft has stopped on this node.
    Shutdown,
}

impl Role {
    /// The wire text (`leader`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Learner => "learner",
            Role::Shutdown => "shutdown",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `GET /v1/cluster`: the cluster as the answering node sees it.
///
/// `quorum` and `peers` are newer than the rest: a client reads an answer without them
/// as "not reported" (`None` / empty), never as "no quorum".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    pub node_id: NodeId,
    pub state: Role,
    pub leader_id: Option<NodeId>,
    pub term: u64,
    pub members: Vec<MemberView>,
    pub last_log_index: Option<u64>,
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    /// Highest cluster time applied on this node.
    pub applied_cluster_time_ms: u64,
    pub locks_stored: u64,
    /// Whether a majority of voters can be reached, as this node judges it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<QuorumView>,
    /// The other members and whether this node reaches them.
    #[serde(default)]
    pub peers: Vec<PeerView>,
    /// On the leader, while a membership change it runs is under way: what it does and
    /// how far it got. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub membership_change: Option<MembershipChangeView>,
}

/// A membership change the leader is running, as `membership_change` in [`ClusterView`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipChangeView {
    /// `add` or `remove`.
    pub action: String,
    pub node_id: NodeId,
    /// `catching_up` (a learner receiving the log), `promoting` (joint consensus to make
    /// it a voter) or `removing`.
    pub phase: String,
    /// When the change started, RFC 3339 with milliseconds.
    pub since: String,
    /// While catching up: the log index the learner has, and the index it must reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_index: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_index: Option<u64>,
}

/// `POST /v1/cluster/nodes`: add node `id` as a learner, wait until it has caught up,
/// then make it a voter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddNodeRequest {
    /// A node id never used in this cluster before (non-zero).
    pub id: NodeId,
    /// Its HTTP API address (`host:port`), where followers relay to it when it leads.
    pub api: String,
    /// Its Raft RPC address (`host:port`), where the leader replicates to it.
    pub raft: String,
}

/// The answer to a membership change: the node, whether anything changed (an add of a
/// node that already votes with the same addresses changes nothing), and the membership
/// after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipAnswer {
    pub node_id: NodeId,
    /// `added` or `removed`.
    pub action: String,
    pub changed: bool,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
}

/// One voter or learner in the membership.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    pub id: NodeId,
    /// Its HTTP API address (`host:port`).
    pub api: String,
    /// Its Raft RPC address.
    pub raft: String,
    pub voter: bool,
    /// The last log index the leader knows this member has; reported by the leader
    /// only (`None` from a follower, or from a node older than this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_index: Option<u64>,
    /// Entries this member is behind the leader's last log index (0 for the leader);
    /// reported by the leader only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<u64>,
}

/// Whether the answering node can reach a majority of the voters (itself included).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumView {
    pub ok: bool,
    pub voters: u64,
    /// Voters this node reached recently, itself included.
    pub reachable_voters: u64,
    /// A sentence for people, e.g. "no quorum: 1 of 3 voters reachable (node 2 unreachable
    /// since …, node 3 …)".
    pub detail: String,
}

/// Another member as the answering node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerView {
    pub id: NodeId,
    pub reachable: bool,
    /// When it became (un)reachable, RFC 3339 with milliseconds; `null` if unknown.
    pub since: Option<String>,
    /// The last error talking to it, while unreachable.
    pub error: Option<String>,
}

/// `GET /readyz`: 200 with `ready: true` when the node serves (leader known, applied up
/// to commit), 503 with `ready: false` and a sentence in `reason` otherwise.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    pub ready: bool,
    pub node_id: NodeId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_id: Option<NodeId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `GET /healthz`: `{"status":"ok","node_id":N}`, or 503 `{"status":"stopped"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<NodeId>,
}

impl ClusterView {
    /// The members this node reports as unreachable.
    pub fn unreachable_peers(&self) -> impl Iterator<Item = &PeerView> {
        self.peers.iter().filter(|p| !p.reachable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body a node sent before quorum visibility existed.
    const OLD: &str = r#"{"node_id":1,"state":"leader","leader_id":1,"term":3,"members":[{"id":1,"api":"127.0.0.1:7001","raft":"127.0.0.1:7101","voter":true}],"last_log_index":9,"committed_index":9,"applied_index":9,"snapshot_index":null,"purged_index":null,"applied_cluster_time_ms":1700000000000,"locks_stored":2}"#;

    #[test]
    fn an_answer_without_quorum_fields_reads_as_not_reported() {
        let v: ClusterView = serde_json::from_str(OLD).unwrap();
        assert_eq!(v.state, Role::Leader);
        assert_eq!(v.quorum, None);
        assert!(v.peers.is_empty());
        // And writes back the same bytes, apart from the (empty) peers.
        let again = serde_json::to_string(&v).unwrap();
        let without_brace = &OLD[..OLD.len() - 1];
        assert_eq!(again, format!(r#"{without_brace},"peers":[]}}"#));
    }

    #[test]
    fn quorum_and_peers_have_the_agreed_shape() {
        let json = r#"{"node_id":1,"state":"leader","leader_id":1,"term":3,"members":[],"last_log_index":null,"committed_index":null,"applied_index":null,"snapshot_index":null,"purged_index":null,"applied_cluster_time_ms":0,"locks_stored":0,"quorum":{"ok":false,"voters":3,"reachable_voters":1,"detail":"no quorum"},"peers":[{"id":2,"reachable":false,"since":"2026-11-30T10:00:00.000Z","error":"connection refused"},{"id":3,"reachable":true,"since":null,"error":null}]}"#;
        let v: ClusterView = serde_json::from_str(json).unwrap();
        assert_eq!(v.quorum.as_ref().map(|q| q.reachable_voters), Some(1));
        assert_eq!(v.unreachable_peers().map(|p| p.id).collect::<Vec<_>>(), [2]);
        assert_eq!(serde_json::to_string(&v).unwrap(), json);
    }

    #[test]
    fn readiness_leaves_out_what_does_not_apply() {
        let not_ready = Readiness {
            ready: false,
            node_id: 2,
            leader_id: None,
            reason: Some("no known leader".into()),
        };
        assert_eq!(
            serde_json::to_string(&not_ready).unwrap(),
            r#"{"ready":false,"node_id":2,"reason":"no known leader"}"#
        );
    }
}
