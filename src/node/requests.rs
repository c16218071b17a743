//! Proposals and reads: how the API's requests reach Raft and the lock table.
//!
//! - [`Node::write`] waits (bounded by `api.leader_wait_ms`) until this node leads with a
//!   ready cluster clock, stamps the command with the cluster time and proposes it on
//!   condition that this leadership still holds when it is appended, then waits (bounded
//!   by `api.request_timeout_ms`) for the applied reply.
//! - [`Node::read`] runs a query on the lock table: `Local` on this replica as applied,
//!   `Linearizable` after a read-index round confirms leadership, judged at the last
//!   applied cluster time ([`linearizable_read_time_ms`]).
//! - Events, for watchers and waiting acquires, and the admin request `allow_rejoin`.
//!
//! Nothing here relays: a follower answers [`NodeError::NotLeader`] and `api::relay`
//! decides what to do with the request.

use std::time::{Duration, Instant};

use openraft::impls::ProgressResponder;
use openraft::ReadPolicy;

use super::{Node, POLL_INTERVAL};
use crate::locks::{Command, Event, Key, LockTable, Reply};
use crate::raft::state_machine::with_table;
use crate::raft::typ::{self, CommittedLeaderId};
use crate::sync::LockUnpoisoned;
use crate::NodeId;

/// Why a write or linearizable read did not produce an answer here.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NodeError {
    /// This node is not the leader (or its leadership is not yet ready); nothing was proposed.
    #[error("this node is not the leader")]
    NotLeader,
    /// This node knows it has no quorum, or a majority did not confirm a read; the
    /// message is a sentence starting with `no quorum`.
    #[error("{0}")]
    NoQuorum(String),
    /// The command was proposed but its outcome is unknown (timeout, discarded entry).
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// Raft has stopped on this node.
    #[error("raft stopped: {0}")]
    Stopped(String),
    /// Raft refused an admin request (unknown node, not the leader any more).
    #[error("refused: {0}")]
    Refused(String),
}

/// The cluster time at which a linearizable read judges leases: the time of the last
/// applied entry, never the leader's running clock.
///
/// A lease ends for everyone only when an entry stamped at or after its end is
/// committed (an acquire, a renew, the leader's sweep). Judging a read by the leader's
/// clock instead would let it report "free" for a lease whose end no entry has reached;
/// if that leader is then cut off before its sweep commits, the next leader — whose
/// refresh judges liveness at the last applied time (DESIGN.md "Time and leases") —
/// extends the very lease the read called expired, and the history is no longer
/// linearizable (found by the chaos suite: isolate the leader, heal, read, kill it).
/// The cost: a read shows an expired lock until the sweep (every
/// `raft.sweep_interval_ms`) commits its expiry.
pub fn linearizable_read_time_ms(table: &LockTable) -> u64 {
    table.now_ms()
}

/// Read consistency requested by a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    /// Confirm leadership with a quorum (read-index) and read at the leader's cluster time.
    Linearizable,
    /// Read this node's replica as applied, at its last applied cluster time.
    Local,
}

impl Node {
    /// Proposes the command `make(now_ms)` stamped with the leader's cluster time, and
    /// returns the state machine's reply once it is committed and applied.
    pub async fn write(&self, make: impl FnOnce(u64) -> Command) -> Result<Reply, NodeError> {
        let (leader, now_ms) = self.ready_leadership().await?;
        self.propose(leader, make(now_ms)).await
    }

    /// Proposes `cmd` on condition that `leader` still leads when it is appended, so a
    /// deposed leader's time-stamped command cannot commit.
    pub(crate) async fn propose(
        &self,
        leader: CommittedLeaderId,
        cmd: Command,
    ) -> Result<Reply, NodeError> {
        let (responder, rx) = ProgressResponder::complete_only();
        let started = Instant::now();
        self.inner
            .raft
            .write(cmd)
            .with_leader(leader)
            .responder(responder)
            .await
            .map_err(|e| NodeError::Stopped(e.to_string()))?;
        let timeout = Duration::from_millis(self.inner.config.api.request_timeout_ms);
        let result = match tokio::time::timeout(timeout, rx).await {
            Err(_) => {
                return Err(NodeError::OutcomeUnknown(format!(
                    "no answer within {} ms",
                    timeout.as_millis()
                )))
            }
            Ok(Err(_)) => {
                return Err(NodeError::OutcomeUnknown(
                    "raft dropped the proposal".into(),
                ))
            }
            Ok(Ok(result)) => result,
        };
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "proposal done"
        );
        match result {
            Ok(resp) => Ok(resp.data),
            Err(typ::ClientWriteError::ForwardToLeader(_)) => Err(NodeError::NotLeader),
            Err(typ::ClientWriteError::LogEntryDiscarded(_)) => Err(NodeError::OutcomeUnknown(
                "entry discarded on leader change; it may or may not commit".into(),
            )),
            Err(other) => Err(NodeError::OutcomeUnknown(other.to_string())),
        }
    }

    /// Waits (bounded) until this node leads with a ready clock; returns the leadership
    /// and the current cluster time. A leader that knows it has no quorum answers at
    /// once (`NoQuorum`), before proposing anything, instead of letting the request wait
    /// for its timeout.
    async fn ready_leadership(&self) -> Result<(CommittedLeaderId, u64), NodeError> {
        let deadline = Instant::now() + Duration::from_millis(self.inner.config.api.leader_wait_ms);
        loop {
            let leader = self
                .inner
                .raft
                .as_leader()
                .map_err(|_| NodeError::NotLeader)?
                .to_committed_leader_id();
            self.check_quorum()?;
            let applied_ms = self.applied_time_ms();
            if let Some(now_ms) = self
                .inner
                .clock
                .ready_now_ms(&leader, applied_ms, Instant::now())
            {
                return Ok((leader, now_ms));
            }
            if Instant::now() >= deadline {
                return Err(NodeError::NotLeader);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Runs `query` on the lock table at the right cluster time for `consistency`.
    pub async fn read<T>(
        &self,
        consistency: Consistency,
        query: impl FnOnce(&LockTable, u64) -> T,
    ) -> Result<T, NodeError> {
        match consistency {
            Consistency::Local => Ok(with_table(&self.inner.table, |t| query(t, t.now_ms()))),
            Consistency::Linearizable => {
                self.ready_leadership().await?;
                let timeout = Duration::from_millis(self.inner.config.api.request_timeout_ms);
                let confirm = async {
                    let confirmed = tokio::time::timeout(
                        timeout,
                        self.inner.raft.ensure_linearizable(ReadPolicy::ReadIndex),
                    )
                    .await
                    .map_err(|_| {
                        NodeError::NoQuorum(format!(
                            "no quorum: a majority of voters did not confirm this leader within {} ms",
                            timeout.as_millis()
                        ))
                    })?;
                    match confirmed {
                        Ok(_) => Ok(()),
                        Err(typ::RaftError::APIError(
                            openraft::errors::LinearizableReadError::ForwardToLeader(_),
                        )) => Err(NodeError::NotLeader),
                        // openraft's message dumps the membership: say it as a sentence.
                        Err(typ::RaftError::APIError(_)) => {
                            let q = self.quorum();
                            Err(NodeError::NoQuorum(if q.ok {
                                format!(
                                    "no quorum: a majority of voters did not confirm this leader ({})",
                                    q.detail
                                )
                            } else {
                                q.detail
                            }))
                        }
                        Err(typ::RaftError::Fatal(e)) => Err(NodeError::Stopped(e.to_string())),
                    }
                };
                confirm.await?;
                Ok(with_table(&self.inner.table, |t| {
                    query(t, linearizable_read_time_ms(t))
                }))
            }
        }
    }

    /// Runs `f` on this node's replica of the table as applied (no consistency check).
    pub fn with_local_table<T>(&self, f: impl FnOnce(&LockTable) -> T) -> T {
        with_table(&self.inner.table, f)
    }

    /// Events applied on this node from now on, and restarts of the history by a
    /// snapshot install (every node applies every entry, so any node can serve watchers).
    pub fn subscribe_events(&self) -> tokio::sync::broadcast::Receiver<super::KeyUpdate> {
        self.inner.events.subscribe()
    }

    /// Stored events of `key` after log index `after` (about `limit` of them, never
    /// splitting an entry), and the index from which the stored history is complete.
    pub fn events_after(
        &self,
        key: &Key,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<Event>, u64), NodeError> {
        let db = self
            .inner
            .db
            .lock_unpoisoned()
            .clone()
            .ok_or_else(|| NodeError::Stopped("node is shutting down".into()))?;
        let first = self.inner.events.first_index();
        let events = self
            .inner
            .events
            .read_after(&db, key, after, limit)
            .map_err(|e| NodeError::Stopped(format!("reading events: {e}")))?;
        Ok((events, first))
    }

    /// On the leader: lets node `id` come back with an empty data directory. Raft assumes
    /// a node never loses what it acknowledged, so the leader refuses to send a follower
    /// whose log went backwards anything (see `raft::peers::Peers::check_conflict`);
    /// after this call it replicates to `id` from the start once (by snapshot). It works
    /// whether the wiped node was started before or after this call.
    pub async fn allow_rejoin(&self, id: NodeId) -> Result<(), NodeError> {
        self.inner
            .raft
            .as_leader()
            .map_err(|_| NodeError::NotLeader)?;
        // openraft's flag first: a conflict let through before it is set would be
        // taken as an ordinary one and leave the follower waiting.
        match self.inner.raft.trigger().allow_next_revert(&id, true).await {
            Ok(Ok(())) => {}
            Ok(Err(openraft::errors::AllowNextRevertError::ForwardToLeader(_))) => {
                return Err(NodeError::NotLeader)
            }
            Ok(Err(openraft::errors::AllowNextRevertError::NodeNotFound(_))) => {
                return Err(NodeError::Refused(format!(
                    "node {id} is not a member this leader replicates to"
                )))
            }
            Err(fatal) => return Err(NodeError::Stopped(fatal.to_string())),
        }
        self.inner.peers.allow_rejoin(id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locks::{Key, Owner};

    /// Regression (chaos seed 2027): the leader's clock ran past a lease's end while it
    /// was cut off and could commit nothing; a read judged by that clock said "free",
    /// then the next leader's refresh (liveness at the last applied time) extended the
    /// lease. Reads judged at the applied time agree with the refresh.
    #[test]
    fn a_read_never_sees_an_expiry_the_log_has_not_reached() {
        let key = Key::parse("deploy").unwrap();
        let owner = Owner::parse("ci").unwrap();
        let mut table = LockTable::default();
        table.apply(1, &Command::acquire(key.clone(), owner, 1_000, 0));
        // The old leader's clock is at 1_500 now, but nothing was committed since 0.
        let read_before = table
            .get(&key, linearizable_read_time_ms(&table))
            .map(|g| g.token);
        // The next leader refreshes every lease live at the last applied time (0).
        table.apply(2, &Command::refresh_leases(1_600, 0));
        let read_after = table
            .get(&key, linearizable_read_time_ms(&table))
            .map(|g| g.token);
        assert_eq!(read_before, Some(crate::locks::Token(1)));
        assert_eq!(read_after, read_before);
    }
}
