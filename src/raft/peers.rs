//! What this node knows about reaching its peers, learnt from its own Raft RPCs.
//!
//! The Raft network client ([`super::network`]) reports the outcome of every RPC it
//! sends: a leader sends heartbeats to every follower each `raft.heartbeat_interval_ms`,
//! a follower that lost its leader sends (pre-)votes to every voter each election
//! timeout. [`Peers`] turns these outcomes into one state per peer — reachable or not,
//! since when, and the last error — which `/v1/cluster`, `/readyz` and the quorum
//! check of writes read, and logs one line per change of state (not per RPC).
//!
//! It also guards the leader against a follower whose log went backwards (a node
//! restarted on an empty or restored data directory), see [`Peers::check_conflict`].
//!
//! Invariants and choices:
//! - A peer becomes unreachable only when no RPC to it succeeded for
//!   [`PeerTiming::unreachable_after`], so that one slow heartbeat does not flap the
//!   state (and the log); it becomes reachable again with the first success.
//! - An observation older than [`PeerTiming::stale_after`] is forgotten: a follower with
//!   a working leader sends no RPCs, so an old failure says nothing about today.
//! - No IO and no clock reads in the decisions: every method has an `_at` form taking
//!   the instant, for tests.
//!
//! Caveats: a follower learns nothing about peers while its leader is healthy (it only
//! receives RPCs); those peers are "not known to be unreachable".

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::typ::{LogId, Vote};
use crate::NodeId;

/// How long observations take to count (see the module docs).
#[derive(Clone, Copy, Debug)]
pub struct PeerTiming {
    /// No success for this long (and a failure) makes a peer unreachable.
    pub unreachable_after: Duration,
    /// Observations older than this are forgotten.
    pub stale_after: Duration,
}

impl PeerTiming {
    /// Timing for a cluster whose election timeout is at most `election_timeout_max`:
    /// a peer is unreachable after half an election timeout without an answer (five
    /// missed heartbeats at the defaults), and observations last three election
    /// timeouts (a leaderless node retries its votes well within that).
    pub fn for_election_timeout(election_timeout_max: Duration) -> PeerTiming {
        PeerTiming {
            unreachable_after: election_timeout_max / 2,
            stale_after: election_timeout_max * 3,
        }
    }
}

/// This node's view of one peer, for `/v1/cluster`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerView {
    pub id: NodeId,
    /// False only when recent RPCs to the peer failed; true when they succeed or when
    /// this node has not talked to the peer recently (nothing known against it).
    pub reachable: bool,
    /// Wall-clock milliseconds since which the peer is in this state; `None` when this
    /// node has not talked to it recently.
    pub since_ms: Option<u64>,
    /// The last failure while unreachable, as a short phrase (`connection refused`).
    pub error: Option<String>,
}

impl PeerView {
    /// `node 2 unreachable since 17:40:01Z (connection refused)`.
    pub fn describe(&self) -> String {
        let state = if self.reachable {
            "reachable"
        } else {
            "unreachable"
        };
        let mut s = format!("node {} {state}", self.id);
        if let Some(ms) = self.since_ms {
            s.push_str(&format!(" since {}", clock_time(ms)));
        }
        if let Some(e) = &self.error {
            s.push_str(&format!(" ({e})"));
        }
        s
    }
}

/// Formats wall-clock milliseconds as `HH:MM:SSZ` (UTC), for sentences.
pub fn clock_time(ms: u64) -> String {
    let secs = ms / 1_000;
    let day = secs % 86_400;
    format!(
        "{:02}:{:02}:{:02}Z",
        day / 3_600,
        (day % 3_600) / 60,
        day % 60
    )
}

#[derive(Clone, Debug)]
struct PeerState {
    reachable: bool,
    /// When the state last changed (monotonic, and wall clock for display).
    changed_at: Instant,
    changed_at_ms: u64,
    last_success: Option<Instant>,
    last_observed: Instant,
    error: Option<String>,
}

/// What the leader knows a follower acknowledged under one leadership.
#[derive(Clone, Debug)]
struct Acked {
    vote: Vote,
    log_id: Option<LogId>,
}

#[derive(Default)]
struct State {
    peers: BTreeMap<NodeId, PeerState>,
    acked: BTreeMap<NodeId, Acked>,
    /// Followers allowed (by `allow-rejoin`) to come back with a log that went backwards.
    rejoin_allowed: BTreeMap<NodeId, bool>,
    /// Followers currently refused because their log went backwards (for one log line).
    refused: BTreeMap<NodeId, bool>,
}

/// What the network client should do with a `Conflict` answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConflictVerdict {
    /// An ordinary conflict (the leader is still searching for the matching entry).
    Pass,
    /// The follower lost entries it acknowledged, and `allow-rejoin` was called: pass
    /// the conflict to Raft, which resets replication to it (once).
    PassAllowedRevert,
    /// The follower lost entries it acknowledged and nobody allowed it: do not show
    /// Raft the conflict (see [`Peers::check_conflict`]).
    Refuse,
}

/// Shared per-peer state of one node; cheap to clone.
#[derive(Clone)]
pub struct Peers {
    timing: PeerTiming,
    state: Arc<Mutex<State>>,
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Peers {
    /// Empty state: nothing known about any peer.
    pub fn new(timing: PeerTiming) -> Peers {
        Peers {
            timing,
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is plain data updated in place; a panic elsewhere leaves it usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An RPC to `peer` was answered.
    pub fn record_success(&self, peer: NodeId) {
        self.record_success_at(peer, Instant::now(), wall_ms());
    }

    /// An RPC to `peer` failed with `error` (a short phrase).
    pub fn record_failure(&self, peer: NodeId, error: &str) {
        self.record_failure_at(peer, error, Instant::now(), wall_ms());
    }

    pub(crate) fn record_success_at(&self, peer: NodeId, now: Instant, now_ms: u64) {
        let mut st = self.lock();
        let stale = self.timing.stale_after;
        let entry = st.peers.entry(peer).or_insert_with(|| PeerState {
            reachable: true,
            changed_at: now,
            changed_at_ms: now_ms,
            last_success: None,
            last_observed: now,
            error: None,
        });
        // A state nobody observed for a while starts over from this observation.
        if now.saturating_duration_since(entry.last_observed) > stale {
            entry.reachable = true;
            entry.changed_at = now;
            entry.changed_at_ms = now_ms;
        }
        if !entry.reachable {
            let down_ms = now.saturating_duration_since(entry.changed_at).as_millis() as u64;
            tracing::info!(
                peer,
                down_ms,
                "node {peer} is reachable again after {:.1} s",
                down_ms as f64 / 1_000.0
            );
            entry.reachable = true;
            entry.changed_at = now;
            entry.changed_at_ms = now_ms;
        }
        entry.error = None;
        entry.last_success = Some(now);
        entry.last_observed = now;
    }

    pub(crate) fn record_failure_at(&self, peer: NodeId, error: &str, now: Instant, now_ms: u64) {
        let mut st = self.lock();
        let timing = self.timing;
        let entry = st.peers.entry(peer).or_insert_with(|| PeerState {
            reachable: true,
            changed_at: now,
            changed_at_ms: now_ms,
            last_success: None,
            last_observed: now,
            error: None,
        });
        if now.saturating_duration_since(entry.last_observed) > timing.stale_after {
            entry.last_success = None;
            entry.reachable = true;
            entry.changed_at = now;
            entry.changed_at_ms = now_ms;
        }
        entry.last_observed = now;
        entry.error = Some(error.to_string());
        if !entry.reachable {
            return;
        }
        // Unreachable once failures have lasted `unreachable_after` with no success: from
        // the last success, or from the first failure when there was none.
        let since = entry.last_success.unwrap_or(entry.changed_at);
        if now.saturating_duration_since(since) < timing.unreachable_after {
            return;
        }
        tracing::warn!(peer, error, "cannot reach node {peer}: {error}");
        entry.reachable = false;
        entry.changed_at = now;
        entry.changed_at_ms = now_ms;
    }

    /// This node's view of `peer`, or `None` when nothing recent is known.
    pub fn view(&self, peer: NodeId) -> Option<PeerView> {
        self.view_at(peer, Instant::now())
    }

    pub(crate) fn view_at(&self, peer: NodeId, now: Instant) -> Option<PeerView> {
        let st = self.lock();
        let p = st.peers.get(&peer)?;
        if now.saturating_duration_since(p.last_observed) > self.timing.stale_after {
            return None;
        }
        Some(PeerView {
            id: peer,
            reachable: p.reachable,
            since_ms: Some(p.changed_at_ms),
            error: if p.reachable { None } else { p.error.clone() },
        })
    }

    /// Records that `peer` holds the leader's log up to `log_id` under leadership `vote`
    /// (a successful append or snapshot).
    pub fn record_ack(&self, peer: NodeId, vote: &Vote, log_id: Option<LogId>) {
        let mut st = self.lock();
        match st.acked.get_mut(&peer) {
            Some(a) if a.vote == *vote => {
                if log_id > a.log_id {
                    a.log_id = log_id;
                }
            }
            _ => {
                st.acked.insert(
                    peer,
                    Acked {
                        vote: *vote,
                        log_id,
                    },
                );
            }
        }
        if st.refused.remove(&peer).is_some() {
            tracing::info!(peer, "node {peer} is replicating again");
        }
    }

    /// Judges a `Conflict` answer of `peer` to an append under leadership `vote` whose
    /// previous entry was `prev`.
    ///
    /// Within one leadership a follower never loses an entry it acknowledged (it only
    /// truncates entries that differ from the leader's, and the leader's own never
    /// differ), so a conflict at or below an acknowledged entry means its log went
    /// backwards: its data directory was lost or restored. openraft then narrows its
    /// search for the follower's last matching entry to below the entry it holds as
    /// matched, and keeps it there: the reset that `allow_next_revert` permits is only
    /// taken on a conflict below that search bound, so a later `allow-rejoin` would never
    /// take effect and the follower would wait for a snapshot until the leader changes
    /// (openraft 0.10 `progress::entry::update`). Refusing shows openraft an unreachable
    /// follower instead, which leaves its search untouched until `allow-rejoin` is
    /// called — whichever order the operator restarts the node and calls it in.
    pub fn check_conflict(
        &self,
        peer: NodeId,
        vote: &Vote,
        prev: Option<&LogId>,
    ) -> ConflictVerdict {
        let mut st = self.lock();
        let reverted = match (st.acked.get(&peer), prev) {
            (Some(a), Some(prev)) => {
                a.vote == *vote && a.log_id.as_ref().is_some_and(|l| l.index >= prev.index)
            }
            _ => false,
        };
        if !reverted {
            return ConflictVerdict::Pass;
        }
        if st.rejoin_allowed.remove(&peer).is_some() {
            st.acked.remove(&peer);
            st.refused.remove(&peer);
            tracing::info!(
                peer,
                "node {peer} came back with an empty or older log and may rejoin: sending it the leader's state"
            );
            return ConflictVerdict::PassAllowedRevert;
        }
        if st.refused.insert(peer, true).is_none() {
            tracing::warn!(
                peer,
                "refusing node {peer}: its log went backwards (data directory lost or restored); \
                 if that is expected, run POST /v1/cluster/nodes/{peer}/allow-rejoin"
            );
        }
        ConflictVerdict::Refuse
    }

    /// Lets `peer` come back once with a log that went backwards (after openraft was
    /// told the same with `allow_next_revert`).
    pub fn allow_rejoin(&self, peer: NodeId) {
        self.lock().rejoin_allowed.insert(peer, true);
    }

    /// Whether the leader currently refuses `peer` because its log went backwards.
    pub fn is_refused(&self, peer: NodeId) -> bool {
        self.lock().refused.contains_key(&peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers() -> Peers {
        Peers::new(PeerTiming {
            unreachable_after: Duration::from_millis(500),
            stale_after: Duration::from_secs(3),
        })
    }

    #[test]
    fn a_peer_is_unreachable_only_after_failing_for_a_while() {
        let p = peers();
        let t0 = Instant::now();
        p.record_success_at(2, t0, 1_000);
        p.record_failure_at(2, "timed out", t0 + Duration::from_millis(100), 1_100);
        assert!(
            p.view_at(2, t0 + Duration::from_millis(100))
                .unwrap()
                .reachable
        );
        p.record_failure_at(
            2,
            "connection refused",
            t0 + Duration::from_millis(600),
            1_600,
        );
        let v = p.view_at(2, t0 + Duration::from_millis(600)).unwrap();
        assert!(!v.reachable);
        assert_eq!(v.since_ms, Some(1_600));
        assert_eq!(v.error.as_deref(), Some("connection refused"));
        assert_eq!(
            v.describe(),
            "node 2 unreachable since 00:00:01Z (connection refused)"
        );
        p.record_success_at(2, t0 + Duration::from_millis(700), 1_700);
        let v = p.view_at(2, t0 + Duration::from_millis(700)).unwrap();
        assert!(v.reachable);
        assert_eq!(v.error, None);
    }

    #[test]
    fn a_peer_never_answered_is_unreachable_after_failing_for_a_while() {
        let p = peers();
        let t0 = Instant::now();
        p.record_failure_at(3, "connection refused", t0, 0);
        assert!(p.view_at(3, t0).unwrap().reachable);
        p.record_failure_at(
            3,
            "connection refused",
            t0 + Duration::from_millis(500),
            500,
        );
        assert!(
            !p.view_at(3, t0 + Duration::from_millis(500))
                .unwrap()
                .reachable
        );
    }

    #[test]
    fn old_observations_are_forgotten() {
        let p = peers();
        let t0 = Instant::now();
        p.record_failure_at(3, "connection refused", t0, 0);
        p.record_failure_at(3, "connection refused", t0 + Duration::from_secs(1), 1_000);
        assert!(!p.view_at(3, t0 + Duration::from_secs(1)).unwrap().reachable);
        assert_eq!(p.view_at(3, t0 + Duration::from_secs(5)), None);
        // A new failure after a long silence starts a new count.
        p.record_failure_at(3, "connection refused", t0 + Duration::from_secs(5), 5_000);
        assert!(p.view_at(3, t0 + Duration::from_secs(5)).unwrap().reachable);
    }

    fn vote(term: u64) -> Vote {
        Vote::new_committed(term, 1)
    }

    fn log_id(index: u64) -> LogId {
        openraft::testing::log_id::<crate::raft::TypeConfig>(1, 1, index)
    }

    #[test]
    fn a_conflict_at_an_acknowledged_entry_is_refused_until_rejoin_is_allowed() {
        let p = peers();
        p.record_ack(2, &vote(1), Some(log_id(10)));
        // Searching above what the follower acknowledged is ordinary.
        assert_eq!(
            p.check_conflict(2, &vote(1), Some(&log_id(12))),
            ConflictVerdict::Pass
        );
        assert_eq!(
            p.check_conflict(2, &vote(1), Some(&log_id(10))),
            ConflictVerdict::Refuse
        );
        assert!(p.is_refused(2));
        p.allow_rejoin(2);
        assert_eq!(
            p.check_conflict(2, &vote(1), Some(&log_id(10))),
            ConflictVerdict::PassAllowedRevert
        );
        // The allowance is used once; the search that follows is ordinary.
        assert!(!p.is_refused(2));
        assert_eq!(
            p.check_conflict(2, &vote(1), Some(&log_id(5))),
            ConflictVerdict::Pass
        );
    }

    #[test]
    fn acknowledgements_of_an_earlier_leadership_do_not_count() {
        let p = peers();
        p.record_ack(2, &vote(1), Some(log_id(10)));
        // A new leader may legitimately find the follower's tail different.
        assert_eq!(
            p.check_conflict(2, &vote(2), Some(&log_id(10))),
            ConflictVerdict::Pass
        );
        p.record_ack(2, &vote(2), Some(log_id(3)));
        assert_eq!(
            p.check_conflict(2, &vote(2), Some(&log_id(3))),
            ConflictVerdict::Refuse
        );
    }

    #[test]
    fn clock_time_is_utc_hours_minutes_seconds() {
        assert_eq!(clock_time(1_700_000_000_123), "22:13:20Z");
    }
}
