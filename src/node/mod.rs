//! One running Baton node: owns the Raft instance, the database, the cluster clock and the
//! background tasks (leader duties, snapshots, self-initialisation).
//!
//! # How a node serves
//! The API layer talks to a node through a few calls: [`Node::write`] proposes a command
//! stamped with cluster time and waits for its applied reply; [`Node::read`] queries the
//! lock table, linearizable (read-index) or local; [`Node::status`] and
//! [`Node::readiness`] report its view. A follower does not relay: it answers
//! [`NodeError::NotLeader`], and `api::relay` sends the request to the leader over
//! [`forward`].
//!
//! Only the leader stamps time. When it becomes the committed leader, [`leader`] anchors
//! the [`clock::ClusterClock`] and commits a lease refresh before it accepts writes,
//! then sweeps expired leases and hands freed keys to their waiters, every proposal
//! conditional on its leadership so a deposed leader's entries never commit.
//!
//! # Files
//! - [`requests`]: proposals, reads, events, `allow_rejoin`; [`NodeError`]. `events`:
//!   one key's event subscription, and resumes read off the runtime.
//! - [`lifecycle`]: [`Node::start`], the task set and stop signal, [`Node::shutdown`].
//! - [`leader`]: leader duties and cluster self-initialisation; [`compaction`]: when to
//!   snapshot; [`clock`]: cluster time; [`forward`]: the relay's transport.
//! - [`membership`]: adding and removing nodes (on the leader).
//!
//! # Tasks and shutdown
//! The node owns its background tasks (one task set, one stop signal every task ends
//! on, all in the node's tracing span); [`Node::shutdown`] stops them, then Raft, then
//! closes the database. Serving HTTP around a node, and stopping that first, is
//! `server::serve`.
//!
//! # Caveats
//! - A node's role is openraft's server state, read from its metrics: it may lag the
//!   truth by a heartbeat. Writes never rely on it (proposals are conditional on the
//!   leadership they were stamped under).
//! - A node dropped without [`Node::shutdown`] leaves its database to the process exit.

mod changes;
pub mod clock;
pub mod compaction;
mod events;
pub mod forward;
pub mod join;
pub mod leader;
pub mod lifecycle;
pub mod membership;
pub mod requests;
pub mod status;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use openraft::ServerState;
use serde::Serialize;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::raft::event_log::EventLog;
pub use crate::raft::event_log::{KeyEvents, KeyUpdate};
use crate::raft::state_machine::{with_table, SharedTable};
use crate::raft::typ;
use crate::NodeId;
use clock::ClusterClock;
pub use lifecycle::{Start, StartError};
pub use membership::{ChangeProgress, MembershipError, MembershipOutcome};
pub use requests::{linearizable_read_time_ms, Consistency, NodeError};
pub use status::{ClusterStatus, MemberStatus, PeerStatus, QuorumStatus};

/// How often waiting loops re-check leadership and readiness.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// The leader as this node knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderContact {
    pub id: NodeId,
    /// `host:port` of the leader's HTTP API.
    pub api: String,
}

/// A node's role in Raft, as its metrics report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Receives the log but does not vote (a node joining, or one not in the membership).
    Learner,
    Follower,
    Candidate,
    Leader,
    /// Raft has stopped on this node (shut down, or stopped on a storage error).
    Shutdown,
}

impl From<ServerState> for Role {
    fn from(s: ServerState) -> Role {
        match s {
            ServerState::Learner => Role::Learner,
            ServerState::Follower => Role::Follower,
            ServerState::Candidate => Role::Candidate,
            ServerState::Leader => Role::Leader,
            ServerState::Shutdown => Role::Shutdown,
        }
    }
}

impl Role {
    /// The role's name, as in `/v1/cluster`'s `state`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Learner => "learner",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
            Role::Shutdown => "shutdown",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A running node; cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    id: NodeId,
    config: Arc<Config>,
    /// The data dir's cluster id, shared with the Raft RPC client and server.
    identity: Arc<crate::raft::data_dir::Identity>,
    raft: typ::Raft,
    table: SharedTable,
    events: EventLog,
    clock: ClusterClock,
    /// Reachability of the peers, as this node's Raft RPCs found it.
    peers: crate::raft::peers::Peers,
    /// The last quorum judgement of the write path (see `status::QUORUM_CHECK_REUSE`).
    quorum_check: Mutex<Option<status::QuorumCheck>>,
    leader_duties: Mutex<Option<leader::Duties>>,
    /// The membership change this node runs as leader (one at a time, see [`membership`]).
    membership_change: Mutex<Option<membership::ChangeProgress>>,
    /// The node's database; closed explicitly at shutdown (see [`Node::shutdown`]).
    db: Mutex<Option<Arc<rocksdb::DB>>>,
    watch: Mutex<Option<openraft::raft::WatchChangeHandle<crate::raft::TypeConfig>>>,
    /// The node's background tasks, joined at shutdown (see [`lifecycle`]).
    tasks: Mutex<JoinSet<()>>,
    /// Raised once, at shutdown; every task ends when it is.
    stop: tokio::sync::watch::Sender<bool>,
    /// The span the node was started in; its tasks run in it.
    span: tracing::Span,
}

impl Node {
    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// The highest `now_ms` this node has applied (its lock table's time).
    pub(crate) fn applied_time_ms(&self) -> u64 {
        with_table(&self.inner.table, |t| t.now_ms())
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The resolved configuration.
    pub fn config(&self) -> &Arc<Config> {
        &self.inner.config
    }

    /// The database, until the node shuts down (for its size metrics).
    pub fn db(&self) -> Option<Arc<rocksdb::DB>> {
        use crate::sync::LockUnpoisoned;
        self.inner.db.lock_unpoisoned().clone()
    }

    /// The data dir's identity (for the Raft RPC endpoints).
    pub fn identity(&self) -> &Arc<crate::raft::data_dir::Identity> {
        &self.inner.identity
    }

    /// The Raft handle (for the Raft RPC endpoints).
    pub fn raft(&self) -> &typ::Raft {
        &self.inner.raft
    }

    /// This node's role as its Raft metrics report it.
    pub fn role(&self) -> Role {
        self.inner.raft.metrics().borrow_watched().state.into()
    }

    /// True while this node is the committed leader.
    pub fn is_leader(&self) -> bool {
        self.inner.raft.as_leader().is_ok()
    }

    /// The leader this node currently knows, with its API address.
    pub fn leader(&self) -> Option<LeaderContact> {
        let metrics = self.inner.raft.metrics().borrow_watched().clone();
        let id = metrics.current_leader?;
        let node = metrics.membership_config.membership().get_node(&id)?;
        Some(LeaderContact {
            id,
            api: node.api.clone(),
        })
    }

    /// Resolves with the leader once this node knows one other than `id`: a request
    /// relayed to `id` may then hang on a paused or cut-off node that no longer leads.
    /// Pending while `id` leads or no leader is known.
    pub async fn leader_other_than(&self, id: NodeId) -> LeaderContact {
        let mut rx = self.inner.raft.metrics();
        loop {
            if let Some(l) = self.leader().filter(|l| l.id != id) {
                return l;
            }
            if rx.changed().await.is_err() {
                // Raft stopped: no other leader will ever be known here.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Waits up to `timeout` for a known leader.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Option<LeaderContact> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.leader() {
                return Some(l);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}
