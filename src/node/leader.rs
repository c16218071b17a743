//! Leader duties and cluster self-initialisation.
//!
//! When this node becomes the committed leader (openraft's `on_leader_change`, which
//! alternates start/stop), it spawns the duty task `lead`:
//! 1. wait until everything committed before this term is applied (a read-index round),
//!    so the table's clock holds the highest `now_ms` ever applied;
//! 2. anchor the [`super::ClusterClock`] at `max(wall clock, that now_ms)`;
//! 3. commit one `RefreshLeases` entry: every lease live at that applied time runs at
//!    least its full TTL from now (leases may lengthen on failover, never shorten, even
//!    if this node's wall clock is ahead),
//!    then mark the clock ready for client writes;
//! 4. every sweep interval, commit a `Handoff` for each key that freed up while others
//!    wait for it, and a `Sweep` when some lease, wait or lock-delay has run out.
//!
//! Every proposal is conditional on this leadership, so a deposed leader's entries never
//! commit. When leadership ends the task is aborted and the clock cleared. The duty task
//! and the initialisation task are node tasks (`Node::spawn`): they end at shutdown.

use std::time::{Duration, Instant};

use openraft::vote::RaftLeaderId;
use openraft::ReadPolicy;
use tokio::task::AbortHandle;
use tracing::Instrument;

use super::clock::wall_clock_ms;
use super::{Node, NodeError};
use crate::locks::Command;
use crate::raft::network::peer_initialized;
use crate::raft::state_machine::with_table;
use crate::raft::typ::CommittedLeaderId;
use crate::raft::NodeAddr;
use crate::sync::LockUnpoisoned;

/// Pause between attempts of a duty step that failed transiently.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// How often a fresh node checks whether all peers are fresh too.
const INIT_POLL: Duration = Duration::from_millis(300);

/// The running duty task of one leadership (one of the node's tasks).
pub(crate) struct Duties {
    leader: CommittedLeaderId,
    task: AbortHandle,
}

/// Registers the start/stop callbacks for leadership changes. openraft runs them on its
/// own watch task, which the node closes at shutdown; they run in the node's span.
pub(crate) fn watch_leadership(node: &Node) {
    let start_node = node.clone();
    let stop_node = node.clone();
    let handle = node.inner().raft.on_leader_change(
        move |leader_id| {
            let node = start_node.clone();
            let span = node.inner().span.clone();
            async move {
                let leader = leader_id.to_committed();
                let term = leader_id.term();
                tracing::info!(
                    node_id = node.id(),
                    term,
                    "node {} became the leader (term {term})",
                    node.id()
                );
                let task = node.spawn(lead(node.clone(), leader));
                let old = node
                    .inner()
                    .leader_duties
                    .lock_unpoisoned()
                    .replace(Duties { leader, task });
                if let Some(old) = old {
                    old.task.abort();
                }
            }
            .instrument(span)
        },
        move |leader_id| {
            let node = stop_node.clone();
            let span = node.inner().span.clone();
            async move {
                let term = leader_id.term();
                tracing::info!(
                    node_id = node.id(),
                    term,
                    "node {} stopped leading (term {term})",
                    node.id()
                );
                stop_duties(&node);
            }
            .instrument(span)
        },
    );
    *node.inner().watch.lock_unpoisoned() = Some(handle);
}

/// Aborts the duty task, if any, and clears the clock.
pub(crate) fn stop_duties(node: &Node) {
    let duties = node.inner().leader_duties.lock_unpoisoned().take();
    if let Some(d) = duties {
        d.task.abort();
        node.inner().clock.clear(&d.leader);
    }
}

async fn lead(node: Node, leader: CommittedLeaderId) {
    let inner = node.inner();
    // 1. Apply everything committed before this term.
    loop {
        match inner.raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
            Ok(_) => break,
            Err(e) => {
                if inner.raft.as_leader().is_err() {
                    return;
                }
                tracing::debug!(error = %e, "waiting to confirm leadership");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
    // 2. Anchor cluster time.
    let applied_ms = node.applied_time_ms();
    let wall_ms = wall_clock_ms();
    let base = inner
        .clock
        .anchor(leader, wall_ms, applied_ms, Instant::now());
    tracing::info!(
        wall_ms,
        applied_ms,
        cluster_time_ms = base,
        "cluster clock starts at {}",
        crate::raft::peers::clock_time(base)
    );
    // 3. Refresh every live lease, then open for client writes.
    loop {
        let Some(now_ms) = inner
            .clock
            .now_ms_for(&leader, node.applied_time_ms(), Instant::now())
        else {
            return;
        };
        // Without a quorum the proposal could only time out (and log each time).
        if !node.quorum().ok {
            tokio::time::sleep(RETRY_PAUSE).await;
            continue;
        }
        match node
            .propose(leader, Command::refresh_leases(now_ms, applied_ms))
            .await
        {
            Ok(reply) => {
                let leases = match reply {
                    crate::locks::Reply::Refreshed { leases } => leases,
                    _ => 0,
                };
                tracing::info!(
                    leases,
                    "open for writes: {leases} held lease(s) extended to a full TTL from now"
                );
                break;
            }
            Err(NodeError::NotLeader) | Err(NodeError::Stopped(_)) => return,
            Err(e) => {
                tracing::warn!(error = %e, "lease refresh failed; retrying");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
    inner.clock.set_ready(&leader);
    // 4. Periodic expiry sweep, and handoffs of freed keys to their waiters.
    let mut ticker = tokio::time::interval(node.config().sweep_interval());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        // Without a quorum nothing can commit; `status::watch_quorum` says so once.
        if !node.quorum().ok {
            continue;
        }
        let Some(now_ms) = inner
            .clock
            .now_ms_for(&leader, node.applied_time_ms(), Instant::now())
        else {
            return;
        };
        let (sweep_due, handoffs) = with_table(&inner.table, |t| {
            (
                t.next_sweep_ms().is_some_and(|e| e <= now_ms),
                t.handoffs_due(now_ms),
            )
        });
        // One entry per freed key: an entry grants at most one lock (see `locks`).
        let proposals = handoffs
            .into_iter()
            .map(|key| node.propose(leader, Command::handoff(key, now_ms)));
        for result in futures::future::join_all(proposals).await {
            match result {
                Ok(reply) => tracing::debug!(?reply, "handed off"),
                Err(NodeError::NotLeader) | Err(NodeError::Stopped(_)) => return,
                Err(e) => tracing::warn!(error = %e, "handoff failed; will retry"),
            }
        }
        if !sweep_due {
            continue;
        }
        match node.propose(leader, Command::sweep(now_ms)).await {
            Ok(reply) => tracing::debug!(?reply, "swept"),
            Err(NodeError::NotLeader) | Err(NodeError::Stopped(_)) => return,
            Err(e) => tracing::warn!(error = %e, "sweep failed; will retry"),
        }
    }
}

/// Initialises the cluster from `cluster.toml` when this is the lowest-id node and every
/// node in the file is fresh (never initialised). A node with data, or a fresh node
/// joining a cluster that has data, never initialises: it is brought up to date by the
/// leader instead.
pub(crate) async fn initialize_when_all_fresh(node: Node) {
    let inner = node.inner();
    let config = node.config().clone();
    let lowest = config.nodes.iter().map(|n| n.id).min();
    if lowest != Some(node.id()) {
        return;
    }
    let client = crate::tls::peer_client(&config, node.id())
        .map_err(|e| e.to_string())
        .and_then(|c| {
            c.timeout(Duration::from_secs(1))
                .build()
                .map_err(|e| e.to_string())
        });
    let http = match client {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "cannot build http client; not initialising");
            return;
        }
    };
    loop {
        match inner.raft.is_initialized().await {
            Ok(false) => {}
            Ok(true) | Err(_) => return,
        }
        let mut all_fresh = true;
        for peer in config.nodes.iter().filter(|n| n.id != node.id()) {
            let url = format!("{}://{}", config.tls.scheme(), peer.raft);
            match peer_initialized(&http, &url, &config.raft.secret).await {
                Ok(false) => {}
                Ok(true) => {
                    tracing::info!(
                        peer = peer.id,
                        "peer has data; joining instead of initialising"
                    );
                    return;
                }
                Err(e) => {
                    tracing::debug!(peer = peer.id, error = %e, "peer not reachable yet");
                    all_fresh = false;
                }
            }
        }
        if all_fresh {
            let members = config
                .nodes
                .iter()
                .map(|n| {
                    (
                        n.id,
                        NodeAddr {
                            raft: n.raft.clone(),
                            api: n.api.clone(),
                        },
                    )
                })
                .collect::<std::collections::BTreeMap<_, _>>();
            // The cluster's id is recorded before its first log entry exists.
            match inner.identity.for_initialise() {
                Ok(id) => tracing::info!(cluster_id = %id, "initialising cluster {id}"),
                Err(e) => {
                    tracing::error!(error = %e, "cannot record the cluster id; not initialising");
                    return;
                }
            }
            match inner.raft.initialize(members).await {
                Ok(()) => tracing::info!(nodes = config.nodes.len(), "cluster initialised"),
                Err(e) => tracing::warn!(error = %e, "initialise refused"),
            }
            return;
        }
        tokio::time::sleep(INIT_POLL).await;
    }
}
