//! Membership changes, run by the leader: add a node (learner → catch up → voter) and
//! remove one (a voter or a learner).
//!
//! The membership lives in the Raft log (openraft's membership entries, each member with
//! its [`NodeAddr`]): the network addresses peers by it, the relay finds the leader's API
//! address in it, and a restarted node uses the membership it committed, never
//! `cluster.toml`. This module only decides whether a change is safe and drives openraft:
//!
//! - **Add** (`POST /v1/cluster/nodes`): `add_learner` (non-blocking: openraft's blocking
//!   form waits without a bound), then wait up to `raft.catch_up_timeout_ms` until the
//!   learner holds the entry that added it and is within [`CATCH_UP_LAG`] entries of the
//!   leader's log, then `change_membership(AddVoterIds)` (joint consensus: two entries).
//!   An add of a node that already votes with the same addresses changes nothing; an add
//!   of a learner with the same addresses resumes at the wait. So a retried add is safe.
//! - **Remove** (`DELETE /v1/cluster/nodes/{id}`): `change_membership(RemoveVoters)`
//!   without retaining the node as a learner (`RemoveNodes` for a learner).
//! - **The leader removing itself**: openraft 0.10 keeps leading until the uniform
//!   configuration without it is committed, answers the change, and
//!   `removed_leader_step_down` (default 150 ms) later hands leadership to the most
//!   up-to-date voter (`TransferLeader`), then reverts to a learner outside the
//!   membership. The gap is a leader transfer, not an election timeout. Clients see a
//!   leader change as after any failover.
//!
//! Refusals (typed, see [`MembershipError`]): a second change while one runs here (the
//! gate below) or while a joint configuration is uncommitted; an unknown node; an id or
//! an address already used by another member; a change that leaves no voter, or where
//! the voters before or after it have no majority that acknowledged the leader within an
//! election timeout — joint consensus needs a majority of both to commit the change, and
//! would hold every write of the cluster until it did (found by the chaos suite: two
//! voters, one down, remove the other).
//!
//! # Caveats
//! - The gate is the leader's memory: a new leader does not know a change its
//!   predecessor was running. openraft refuses a change while the previous membership
//!   entry is uncommitted, which covers the joint phase; an interrupted add leaves a
//!   learner, which the same add resumes and a remove drops.
//! - Node ids must never be reused (openraft, "Node IDs Must Not Be Reused"): a wiped
//!   node that comes back under an id the log once had as a voter may adopt an old
//!   configuration while it replays the log. Nothing here can know every id the log
//!   ever held (it is purged); the README says to take a fresh id for every new node.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ChangeMembershipError, ClientWriteError};
use openraft::ChangeMembers;

use super::{Node, NodeError};
use crate::raft::typ::{self, RaftMetrics};
use crate::raft::NodeAddr;
use crate::sync::LockUnpoisoned;
use crate::NodeId;

/// A learner is caught up when it is at most this many entries behind the leader's log
/// (and holds the entry that added it): the rest arrives within a heartbeat or two.
pub const CATCH_UP_LAG: u64 = 1_000;

/// Why a membership change was refused or did not finish.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MembershipError {
    /// Another change is under way.
    #[error("{0}")]
    InProgress(String),
    /// The node is not a member.
    #[error("{0}")]
    NotFound(String),
    /// The id or an address is taken by another member, or the id has other addresses.
    #[error("{0}")]
    Conflict(String),
    /// The change would leave no voter, or no reachable majority of voters.
    #[error("{0}")]
    Unsafe(String),
    /// The learner did not catch up in time; it stays a learner.
    #[error("{0}")]
    NotCaughtUp(String),
    /// Not the leader, no quorum, outcome unknown, stopped.
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// What a change is doing, for `/v1/cluster`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    CatchingUp,
    Promoting,
    Removing,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::CatchingUp => "catching_up",
            Phase::Promoting => "promoting",
            Phase::Removing => "removing",
        }
    }
}

/// The change this leader is running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeProgress {
    /// `add` or `remove`.
    pub action: &'static str,
    pub node_id: NodeId,
    pub phase: Phase,
    /// Wall-clock milliseconds when it started.
    pub since_ms: u64,
    /// While catching up: the index the learner holds and the one it must reach.
    pub matched_index: Option<u64>,
    pub target_index: Option<u64>,
}

/// The membership after a change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipOutcome {
    pub node_id: NodeId,
    /// `added` or `removed`.
    pub action: &'static str,
    pub changed: bool,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
}

/// The gate of one change: holds the progress slot and empties it when dropped (also
/// when the request that runs the change is dropped because its client hung up).
struct Turn<'a> {
    node: &'a Node,
}

impl Turn<'_> {
    fn update(&self, f: impl FnOnce(&mut ChangeProgress)) {
        if let Some(p) = self
            .node
            .inner()
            .membership_change
            .lock_unpoisoned()
            .as_mut()
        {
            f(p);
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.node.inner().membership_change.lock_unpoisoned().take();
    }
}

impl Node {
    /// The membership change this node runs as leader, if any.
    pub fn membership_change(&self) -> Option<ChangeProgress> {
        self.inner().membership_change.lock_unpoisoned().clone()
    }

    /// Takes the gate for a change of `node_id`, after checking that this node leads and
    /// no joint configuration waits to be committed.
    fn begin_change(
        &self,
        action: &'static str,
        node_id: NodeId,
        phase: Phase,
    ) -> Result<(Turn<'_>, RaftMetrics), MembershipError> {
        self.inner()
            .raft
            .as_leader()
            .map_err(|_| NodeError::NotLeader)?;
        let mut slot = self.inner().membership_change.lock_unpoisoned();
        if let Some(running) = slot.as_ref() {
            return Err(MembershipError::InProgress(format!(
                "a membership change is under way: {} node {} ({}) since {}; wait for it to finish",
                running.action,
                running.node_id,
                running.phase.as_str(),
                crate::raft::peers::clock_time(running.since_ms)
            )));
        }
        let m = self.inner().raft.metrics().borrow_watched().clone();
        if let Some(why) = uncommitted_change(&m) {
            return Err(MembershipError::InProgress(why));
        }
        *slot = Some(ChangeProgress {
            action,
            node_id,
            phase,
            since_ms: super::clock::wall_clock_ms(),
            matched_index: None,
            target_index: None,
        });
        Ok((Turn { node: self }, m))
    }

    /// Adds node `id` reachable at `addr`: as a learner, then (once it caught up) as a
    /// voter. See the module docs.
    pub async fn add_node(
        &self,
        id: NodeId,
        addr: NodeAddr,
    ) -> Result<MembershipOutcome, MembershipError> {
        let (turn, m) = self.begin_change("add", id, Phase::CatchingUp)?;
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        if let Some(known) = membership.get_node(&id) {
            if *known != addr {
                return Err(MembershipError::Conflict(format!(
                    "node {id} is already a member with api {} and raft {}; a new node needs a new id",
                    known.api, known.raft
                )));
            }
            if voters.contains(&id) {
                return Ok(outcome(id, "added", false, &m));
            }
        } else if let Some((other, _)) = membership
            .nodes()
            .find(|(_, n)| n.api == addr.api || n.raft == addr.raft || n.api == addr.raft)
        {
            return Err(MembershipError::Conflict(format!(
                "node {other} already uses one of the addresses api {} / raft {}",
                addr.api, addr.raft
            )));
        }
        tracing::info!(node = id, api = %addr.api, raft = %addr.raft, "adding node {id} as a learner");
        let target = match membership.get_node(&id) {
            // A learner left by an earlier add: resume at the wait.
            Some(_) => m.last_log_index.unwrap_or(0),
            None => {
                let resp = self
                    .inner()
                    .raft
                    .add_learner(id, addr, false)
                    .await
                    .map_err(write_error)?;
                resp.log_id.index
            }
        };
        self.wait_caught_up(&turn, id, target).await?;
        turn.update(|p| p.phase = Phase::Promoting);
        let m = self.inner().raft.metrics().borrow_watched().clone();
        let mut after = voters.clone();
        after.insert(id);
        self.check_reachable_majority(&m, &voters, &after, &format!("adding node {id}"))?;
        tracing::info!(node = id, "node {id} caught up; making it a voter");
        self.inner()
            .raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(write_error)?;
        let m = self.inner().raft.metrics().borrow_watched().clone();
        tracing::info!(node = id, "node {id} is a voter");
        Ok(outcome(id, "added", true, &m))
    }

    /// Removes node `id` (a voter or a learner) from the membership. See the module docs
    /// for the leader removing itself.
    pub async fn remove_node(&self, id: NodeId) -> Result<MembershipOutcome, MembershipError> {
        let (_turn, m) = self.begin_change("remove", id, Phase::Removing)?;
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        if membership.get_node(&id).is_none() {
            return Err(MembershipError::NotFound(format!(
                "node {id} is not a member (voters {})",
                list(&voters)
            )));
        }
        let change = if voters.contains(&id) {
            let mut after = voters.clone();
            after.remove(&id);
            if after.is_empty() {
                return Err(MembershipError::Unsafe(format!(
                    "node {id} is the last voter; a cluster needs at least one"
                )));
            }
            self.check_reachable_majority(&m, &voters, &after, &format!("removing node {id}"))?;
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        tracing::info!(node = id, "removing node {id}");
        self.inner()
            .raft
            .change_membership(change, false)
            .await
            .map_err(write_error)?;
        let m = self.inner().raft.metrics().borrow_watched().clone();
        if id == self.id() {
            tracing::info!(
                node = id,
                "this node removed itself: it hands leadership to the most up-to-date voter"
            );
        } else {
            tracing::info!(node = id, "node {id} removed");
        }
        Ok(outcome(id, "removed", true, &m))
    }

    /// Waits until learner `id` holds entry `target` and is within [`CATCH_UP_LAG`] of
    /// the leader's log, up to `raft.catch_up_timeout_ms`.
    async fn wait_caught_up(
        &self,
        turn: &Turn<'_>,
        id: NodeId,
        target: u64,
    ) -> Result<(), MembershipError> {
        let limit = Duration::from_millis(self.config().raft.catch_up_timeout_ms);
        let deadline = tokio::time::Instant::now() + limit;
        let mut rx = self.inner().raft.metrics();
        turn.update(|p| p.target_index = Some(target));
        loop {
            let (matched, last, leads) = {
                let m = rx.borrow_watched();
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&id).cloned().flatten())
                    .map(|l| l.index);
                (
                    matched,
                    m.last_log_index.unwrap_or(0),
                    m.replication.is_some(),
                )
            };
            if !leads {
                return Err(NodeError::NotLeader.into());
            }
            turn.update(|p| p.matched_index = matched);
            if caught_up(matched, target, last) {
                return Ok(());
            }
            let changed = tokio::time::timeout_at(deadline, rx.changed()).await;
            match changed {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(NodeError::Stopped("raft stopped".into()).into()),
                Err(_) => {
                    let has = matched.map_or("nothing".to_string(), |i| format!("index {i}"));
                    return Err(MembershipError::NotCaughtUp(format!(
                        "node {id} holds {has} of the leader's {last} after {} ms (raft.catch_up_timeout_ms); \
                         it stays a learner: check that it runs and that its raft address is reachable, \
                         then run the same add again, or remove it",
                        limit.as_millis()
                    )));
                }
            }
        }
    }

    /// Refuses a change from the voter set `before` to `after` unless a majority of each
    /// acknowledged this leader recently: joint consensus commits the change (and every
    /// write after it) only with a majority of both, so the cluster would stall.
    fn check_reachable_majority(
        &self,
        m: &RaftMetrics,
        before: &BTreeSet<NodeId>,
        after: &BTreeSet<NodeId>,
        what: &str,
    ) -> Result<(), MembershipError> {
        self.check_majority_of(m, before, what)?;
        self.check_majority_of(m, after, what)
    }

    fn check_majority_of(
        &self,
        m: &RaftMetrics,
        after: &BTreeSet<NodeId>,
        what: &str,
    ) -> Result<(), MembershipError> {
        // A follower acknowledges every heartbeat; one silent for an election timeout
        // would not keep a leader either.
        let window = Duration::from_millis(self.config().raft.election_timeout_max_ms);
        let me = self.id();
        let heartbeat = m.heartbeat.as_ref();
        let reachable: BTreeSet<NodeId> = after
            .iter()
            .copied()
            .filter(|id| {
                *id == me
                    || (heartbeat
                        .and_then(|h| h.get(id).cloned().flatten())
                        .is_some_and(|t| openraft::Instant::elapsed(&*t) <= window)
                        && self.peer_status(*id).reachable)
            })
            .collect();
        if reachable.len() * 2 > after.len() {
            return Ok(());
        }
        let gone: BTreeSet<NodeId> = after.difference(&reachable).copied().collect();
        Err(MembershipError::Unsafe(format!(
            "{what} needs a majority of voters {} (the voters before and after the change must each have one), \
             but only {} answer this leader (not answering: {}); bring those nodes back first, \
             or add a new node before removing a dead one",
            list(after),
            reachable.len(),
            list(&gone)
        )))
    }
}

/// Whether a learner that holds `matched` has caught up with a leader whose log ends at
/// `last`, having to hold at least `target` (the entry that added it).
fn caught_up(matched: Option<u64>, target: u64, last: u64) -> bool {
    matched.is_some_and(|i| i >= target && last.saturating_sub(i) <= CATCH_UP_LAG)
}

/// Why a change cannot start now because the last one is not committed, if so.
fn uncommitted_change(m: &RaftMetrics) -> Option<String> {
    let joint = m.membership_config.membership().get_joint_config().len() > 1;
    let uncommitted = m.membership_config.log_id() != m.committed_membership_config.log_id();
    (joint || uncommitted).then(|| {
        "the previous membership change is not committed yet (joint configuration); retry when it is"
            .to_string()
    })
}

fn outcome(
    node_id: NodeId,
    action: &'static str,
    changed: bool,
    m: &RaftMetrics,
) -> MembershipOutcome {
    let membership = m.membership_config.membership();
    MembershipOutcome {
        node_id,
        action,
        changed,
        voters: membership.voter_ids().collect(),
        learners: membership.learner_ids().collect(),
    }
}

/// `1, 2, 3`.
fn list(ids: &BTreeSet<NodeId>) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// openraft's refusal of a membership write, as one of ours.
fn write_error(e: typ::RaftError<typ::ClientWriteError>) -> MembershipError {
    let e = match e {
        typ::RaftError::Fatal(f) => return NodeError::Stopped(f.to_string()).into(),
        typ::RaftError::APIError(e) => e,
    };
    match e {
        ClientWriteError::ForwardToLeader(_) => NodeError::NotLeader.into(),
        ClientWriteError::LogEntryDiscarded(_) => NodeError::OutcomeUnknown(
            "the membership entry was discarded on a leader change; it may or may not commit"
                .into(),
        )
        .into(),
        ClientWriteError::PreconditionFailed(p) => MembershipError::InProgress(p.to_string()),
        ClientWriteError::ChangeMembershipError(c) => match c {
            ChangeMembershipError::InProgress(_) => MembershipError::InProgress(
                "the previous membership change is not committed yet; retry when it is".into(),
            ),
            // A new leader commits its first entry within a round trip: retry.
            ChangeMembershipError::UncommittedLeaderLog(_) => NodeError::NotLeader.into(),
            ChangeMembershipError::EmptyMembership(e) => MembershipError::Unsafe(e.to_string()),
            ChangeMembershipError::LearnerNotFound(e) => MembershipError::NotFound(e.to_string()),
            ChangeMembershipError::NodeMetadataChanged(e) => {
                MembershipError::Conflict(e.to_string())
            }
            ChangeMembershipError::UnsupportedMembershipTransition(e) => {
                MembershipError::Unsafe(e.to_string())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_learner_has_caught_up_when_it_holds_its_entry_and_is_close_behind() {
        assert!(!caught_up(None, 10, 10));
        assert!(!caught_up(Some(9), 10, 10));
        assert!(caught_up(Some(10), 10, 10));
        assert!(caught_up(Some(10), 10, 10 + CATCH_UP_LAG));
        assert!(!caught_up(Some(10), 10, 11 + CATCH_UP_LAG));
    }
}
