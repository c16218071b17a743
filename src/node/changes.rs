//! One log line per change of the membership this node knows (`info`, `membership
//! changed`): the voters and learners, and the log index of the entry that made it.
//!
//! The other state changes an operator cares about are logged where they happen: the
//! leader (`leader changed`, `crate::metrics::count_leader_changes`; `became the
//! leader` / `stopped leading`, [`super::leader`]), snapshots (`built snapshot`,
//! `installed snapshot`, `crate::raft`), an admin's release of another application's
//! lock (`lock force-released`, `warn`, `crate::api::locks`), and a fail-stop
//! (`error`, `crate::server`).

use openraft::async_runtime::WatchReceiver;

use super::Node;
use crate::NodeId;

/// Runs until Raft stops: logs each membership this node learns, the one it starts
/// with included.
pub(crate) async fn log_membership_changes(node: Node) {
    let mut rx = node.raft().metrics();
    let mut known = None;
    loop {
        let (log_id, voters, learners) = {
            let m = rx.borrow_watched();
            let config = &m.membership_config;
            let membership = config.membership();
            let voters: Vec<NodeId> = membership.voter_ids().collect();
            let learners: Vec<NodeId> = membership.learner_ids().collect();
            (*config.log_id(), voters, learners)
        };
        if known.as_ref() != Some(&log_id) {
            // An uninitialised node has no membership yet: nothing to say.
            if !voters.is_empty() {
                tracing::info!(
                    index = log_id.as_ref().map(|l| l.index),
                    ?voters,
                    ?learners,
                    "membership changed"
                );
            }
            known = Some(log_id);
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}
