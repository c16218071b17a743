//! This node's view of the cluster (`/v1/cluster`), its readiness (`/readyz`) and
//! whether it has a quorum.
//!
//! All are read from openraft's metrics, the peer reachability the Raft network
//! client records ([`crate::raft::peers`]) and the local lock table; nothing here
//! talks to peers or changes state. `watch_quorum` logs one line each time the
//! quorum is lost or regained.
//!
//! The quorum is judged from what this node saw: a voter counts as reachable unless
//! recent RPCs to it failed, and a leader also needs openraft's last acknowledgement
//! by a majority to be recent. A follower with a working leader sends no RPCs, so it
//! reports its peers as not known to be unreachable; once it loses its leader its
//! votes tell it which voters are gone.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use openraft::ServerState;
use serde::Serialize;

use super::{Node, NodeError, Role};
use crate::raft::peers::PeerView;
use crate::raft::state_machine::with_table;
use crate::raft::typ::RaftMetrics;
use crate::raft::NodeAddr;
use crate::sync::LockUnpoisoned;
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
    /// Whether a majority of the voters is reachable from here.
    pub quorum: QuorumStatus,
    /// The other members, as this node's Raft RPCs found them (the API shows them
    /// with RFC 3339 times, see `api::cluster`).
    #[serde(skip)]
    pub peers: Vec<PeerStatus>,
}

/// Whether this node, as far as it knows, is with a majority of the voters.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct QuorumStatus {
    pub ok: bool,
    pub voters: u64,
    /// Voters this node reaches, itself included when it is a voter.
    pub reachable_voters: u64,
    /// One sentence: `node 1 (leader, term 4) reaches 3 of 3 voters`, or starting with
    /// `no quorum:` and naming the unreachable voters.
    pub detail: String,
}

/// One other member as this node sees it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PeerStatus {
    pub id: NodeId,
    /// False when recent RPCs to it failed, or when the leader refuses it (its log
    /// went backwards).
    pub reachable: bool,
    /// Wall-clock milliseconds since which it is in this state; `None` when this node
    /// has not talked to it recently.
    pub since_ms: Option<u64>,
    /// What went wrong, as a phrase; `None` while reachable.
    pub error: Option<String>,
}

/// One voter or learner in the membership.
#[derive(Clone, Debug, Serialize)]
pub struct MemberStatus {
    pub id: NodeId,
    pub api: String,
    pub raft: String,
    pub voter: bool,
    /// The last log index the leader knows this member has (`None` unless this node
    /// leads: only the leader tracks replication).
    pub matched_index: Option<u64>,
    /// Entries this member is behind the leader's last log index (0 for the leader
    /// itself; `None` unless this node leads).
    pub lag: Option<u64>,
}

impl Node {
    /// This node's view of the cluster.
    pub fn status(&self) -> ClusterStatus {
        let m = self.inner.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let nodes: BTreeMap<NodeId, NodeAddr> =
            membership.nodes().map(|(id, n)| (*id, n.clone())).collect();
        // Only a leader has replication progress; openraft lists the leader in it too.
        let matched = |id: NodeId| -> Option<u64> {
            let progress = m.replication.as_ref()?;
            if id == self.inner.id {
                return m.last_log_index;
            }
            Some(progress.get(&id)?.as_ref().map_or(0, |l| l.index))
        };
        let last = m.last_log_index.unwrap_or(0);
        let members = nodes
            .into_iter()
            .map(|(id, n)| MemberStatus {
                id,
                api: n.api,
                raft: n.raft,
                voter: voters.contains(&id),
                matched_index: matched(id),
                lag: matched(id).map(|i| last.saturating_sub(i)),
            })
            .collect();
        let (now_ms, stored) = with_table(&self.inner.table, |t| (t.now_ms(), t.len()));
        let (quorum, peers) = self.quorum_from(&m);
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
            quorum,
            peers,
        }
    }

    /// Whether a majority of the voters is reachable, as far as this node knows.
    pub fn quorum(&self) -> QuorumStatus {
        let m = self.inner.raft.metrics().borrow_watched().clone();
        self.quorum_from(&m).0
    }

    /// `Err(NoQuorum)` when this node knows it has no quorum: a proposal or a read-index
    /// round would only wait for its timeout.
    ///
    /// Every write and linearizable read asks, so a judgement is reused for
    /// [`QUORUM_CHECK_REUSE`]: judging clones openraft's metrics and formats sentences
    /// (at 13k writes/s that cost the leader ~10 % of its throughput).
    pub(crate) fn check_quorum(&self) -> Result<(), NodeError> {
        let mut last = self.inner.quorum_check.lock_unpoisoned();
        let fresh = last
            .as_ref()
            .filter(|c| c.at.elapsed() < QUORUM_CHECK_REUSE);
        let check = match fresh {
            Some(c) => c.clone(),
            None => {
                let q = self.quorum();
                let c = QuorumCheck {
                    at: Instant::now(),
                    missing: (!q.ok).then_some(q.detail),
                };
                *last = Some(c.clone());
                c
            }
        };
        match check.missing {
            None => Ok(()),
            Some(detail) => Err(NodeError::NoQuorum(detail)),
        }
    }

    fn quorum_from(&self, m: &RaftMetrics) -> (QuorumStatus, Vec<PeerStatus>) {
        let membership = m.membership_config.membership();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let me = self.inner.id;
        let peers: Vec<PeerStatus> = membership
            .nodes()
            .map(|(id, _)| *id)
            .filter(|id| *id != me)
            .map(|id| self.peer_status(id))
            .collect();
        let reachable_peers = peers
            .iter()
            .filter(|p| p.reachable && voters.contains(&p.id))
            .count();
        let reachable_voters = (reachable_peers + usize::from(voters.contains(&me))) as u64;
        let n = voters.len() as u64;
        let who = format!(
            "node {me} ({}, term {})",
            Role::from(m.state),
            m.current_term
        );
        let mut ok = reachable_voters * 2 > n;
        let mut detail = format!("{who} reaches {reachable_voters} of {n} voters");
        // The leader also has openraft's own account: the last time a majority
        // acknowledged it. Peers may answer while not acknowledging this leader.
        // A lone voter is its own majority: openraft refreshes its acknowledgement only
        // as it commits, so a single node that commits nothing for a while (a busy
        // machine) would otherwise refuse every write as "no quorum" (seen as flaky
        // single-node tests under load).
        let window = Duration::from_millis(self.inner.config.raft.election_timeout_max_ms);
        let lone_voter = n == 1 && voters.contains(&me);
        if ok && m.state == ServerState::Leader && !lone_voter {
            if let Some(acked) = &m.last_quorum_acked {
                let age = openraft::Instant::elapsed(&**acked);
                if age > window {
                    ok = false;
                    detail = format!(
                        "{detail}, but a majority has not acknowledged it for {:.1} s",
                        age.as_secs_f64()
                    );
                }
            }
        }
        if !ok {
            let gone: Vec<String> = peers
                .iter()
                .filter(|p| !p.reachable && voters.contains(&p.id))
                .map(|p| {
                    PeerView {
                        id: p.id,
                        reachable: false,
                        since_ms: p.since_ms,
                        error: p.error.clone(),
                    }
                    .describe()
                })
                .collect();
            detail = format!("no quorum: {detail}");
            if !gone.is_empty() {
                detail = format!("{detail}; {}", gone.join(", "));
            }
        }
        let quorum = QuorumStatus {
            ok,
            voters: n,
            reachable_voters,
            detail,
        };
        (quorum, peers)
    }

    pub(crate) fn peer_status(&self, id: NodeId) -> PeerStatus {
        let view = self.inner.peers.view(id);
        if self.inner.peers.is_refused(id) {
            return PeerStatus {
                id,
                reachable: false,
                since_ms: view.and_then(|v| v.since_ms),
                error: Some(format!(
                    "its log went backwards (data directory lost?); the leader waits for POST /v1/cluster/nodes/{id}/allow-rejoin"
                )),
            };
        }
        match view {
            Some(v) => PeerStatus {
                id,
                reachable: v.reachable,
                since_ms: v.since_ms,
                error: v.error,
            },
            None => PeerStatus {
                id,
                reachable: true,
                since_ms: None,
                error: None,
            },
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
        let (quorum, _) = self.quorum_from(&m);
        if !quorum.ok {
            return Err(quorum.detail);
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

/// How long the write path reuses a quorum judgement: far below an election timeout,
/// so a lost quorum is noticed about as soon as without reuse.
pub(crate) const QUORUM_CHECK_REUSE: Duration = Duration::from_millis(50);

/// One quorum judgement of the write path.
#[derive(Clone, Debug)]
pub(crate) struct QuorumCheck {
    at: Instant,
    /// Why there is no quorum; `None` when there is one.
    missing: Option<String>,
}

/// How often [`watch_quorum`] looks.
const QUORUM_CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// Runs until Raft stops: logs a warning when this node loses its quorum and an info
/// line when it has one again (changes only, never per check).
pub(crate) async fn watch_quorum(node: Node) {
    let mut had_quorum = true;
    let mut ticker = tokio::time::interval(QUORUM_CHECK_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let m = node.inner.raft.metrics().borrow_watched().clone();
        if m.state == ServerState::Shutdown || m.running_state.is_err() {
            return;
        }
        // A node outside the membership (an empty data dir) has no voters to count.
        if !m
            .membership_config
            .membership()
            .voter_ids()
            .any(|id| id == node.id())
        {
            continue;
        }
        let (q, _) = node.quorum_from(&m);
        if q.ok != had_quorum {
            if q.ok {
                tracing::info!(
                    voters = q.voters,
                    reachable_voters = q.reachable_voters,
                    "quorum regained: {}",
                    q.detail
                );
            } else {
                tracing::warn!(
                    voters = q.voters,
                    reachable_voters = q.reachable_voters,
                    "{}",
                    q.detail
                );
            }
            had_quorum = q.ok;
        }
    }
}
