//! A node's life: [`Node::start`], its background tasks, and [`Node::shutdown`].
//!
//! The node owns every task it starts: they run in one [`JoinSet`] held by the node, in
//! the tracing span the node was started in (`node{node_id}`), and each one ends when
//! the node's one stop signal is raised (`Node::spawn` wraps the task in a `select!`
//! on it), so no loop needs to poll the node's state to learn that it should stop.
//!
//! Shutdown, in order: raise the stop signal, close the leadership watch and the duty
//! task, wait (bounded) for the tasks to end, shut Raft down, then close the database
//! (sync the WAL, wait for the last handle). Serving HTTP is not the node's business:
//! `server::serve` stops accepting and drains requests before it calls
//! [`Node::shutdown`].
//!
//! # Caveats
//! - A task that does not end within [`TASKS_STOP_WAIT`] is aborted (at its next await).
//! - A node that is dropped without `shutdown` keeps its tasks (they hold clones of it)
//!   until the runtime ends.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use tokio::task::{AbortHandle, JoinSet};
use tracing::Instrument;

use super::clock::ClusterClock;
use super::{compaction, leader, Inner, Node, POLL_INTERVAL};
use crate::config::{Config, ConfigError};
use crate::raft::data_dir::{DataDirError, Identity};
use crate::raft::event_log::EventLog;
use crate::raft::log_store::LogStore;
use crate::raft::network::NetworkFactory;
use crate::raft::peers::{PeerTiming, Peers};
use crate::raft::state_machine::StateMachine;
use crate::raft::store::{open_db, StoreError};
use crate::raft::typ;
use crate::sync::LockUnpoisoned;
use crate::NodeId;

/// Log indexes of applied events kept for watchers that resume (`event_log`): at
/// thousands of writes per second, some minutes; a watcher further behind starts over.
const EVENT_RETENTION_ENTRIES: u64 = 1_000_000;

/// How long shutdown waits for the node's tasks to end once they are told to.
pub const TASKS_STOP_WAIT: Duration = Duration::from_secs(5);

/// How long shutdown waits for Raft's tasks to release the database.
pub const DB_CLOSE_WAIT: Duration = Duration::from_secs(5);

/// A node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data dir is not this build's format or this cluster's (`raft::data_dir`).
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("raft config: {0}")]
    RaftConfig(#[from] openraft::ConfigError),
    #[error("raft: {0}")]
    Raft(#[from] typ::Fatal),
    #[error("http client: {0}")]
    Http(#[from] reqwest::Error),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// How a node with no data comes to be in a cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Start {
    /// The lowest-id node of `[[nodes]]` initialises the cluster when every node there
    /// is fresh; the others wait for it (see `leader::initialize_when_all_fresh`).
    #[default]
    FromConfig,
    /// Never initialise: wait to be added to a running cluster (`baton server --join`,
    /// `POST /v1/cluster/nodes`).
    Join,
}

impl Node {
    /// Opens storage, starts Raft and the background tasks of node `id`; a fresh node
    /// initialises the cluster of `[[nodes]]` (see [`Start::FromConfig`]).
    ///
    /// The node's tasks run in the caller's current tracing span; call it inside the
    /// node's span (`node{node_id}`) so every line they log names the node.
    pub async fn start(config: Arc<Config>, id: NodeId) -> Result<Node, StartError> {
        Self::start_with(config, id, Start::FromConfig).await
    }

    /// [`Node::start`], choosing how a fresh node joins (see [`Start`]).
    pub async fn start_with(
        config: Arc<Config>,
        id: NodeId,
        start: Start,
    ) -> Result<Node, StartError> {
        let me = config.node(id)?.clone();
        // Before RocksDB: a data dir of another format must be refused, not decoded.
        let identity = Identity::open(&me.data_dir, config.raft.cluster_id.as_ref())?;
        tracing::info!(
            format = crate::raft::data_dir::FORMAT_VERSION,
            cluster_id = identity.cluster_id().as_ref().map(|c| c.as_str()),
            "data dir checked"
        );
        let db = open_db(&me.data_dir.join("db"))?;
        let log_store = LogStore::open(db.clone())?;
        let events = EventLog::open(&db, EVENT_RETENTION_ENTRIES)?;
        let state_machine =
            StateMachine::open(db.clone(), me.data_dir.join("snapshots"), events.clone())?;
        let table = state_machine.table();
        let r = &config.raft;
        let raft_config = openraft::Config {
            cluster_name: "baton".to_string(),
            heartbeat_interval: r.heartbeat_interval_ms,
            election_timeout_min: r.election_timeout_min_ms,
            election_timeout_max: r.election_timeout_max_ms,
            // `compaction` decides when (in proportion to the table), not openraft.
            snapshot_policy: openraft::SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: r.keep_entries_after_snapshot,
            install_snapshot_timeout: 60_000,
            enable_pre_vote: Some(true),
            ..Default::default()
        }
        .validate()?;
        let peers = Peers::new(PeerTiming::for_election_timeout(Duration::from_millis(
            r.election_timeout_max_ms,
        )));
        let network = NetworkFactory::new(
            r.secret.clone(),
            identity.clone(),
            peers.clone(),
            crate::tls::peer_client(&config, id)?,
            config.tls.scheme(),
        )?;
        let raft =
            typ::Raft::new(id, Arc::new(raft_config), network, log_store, state_machine).await?;
        let node = Node {
            inner: Arc::new(Inner {
                id,
                config,
                identity,
                raft,
                table,
                events,
                clock: ClusterClock::default(),
                peers,
                quorum_check: Mutex::new(None),
                leader_duties: Mutex::new(None),
                membership_change: Mutex::new(None),
                db: Mutex::new(Some(db)),
                watch: Mutex::new(None),
                tasks: Mutex::new(JoinSet::new()),
                stop: tokio::sync::watch::Sender::new(false),
                span: tracing::Span::current(),
            }),
        };
        leader::watch_leadership(&node);
        if start == Start::FromConfig {
            node.spawn(leader::initialize_when_all_fresh(node.clone()));
        }
        node.spawn(compaction::snapshot_when_due(node.clone()));
        node.spawn(super::status::watch_quorum(node.clone()));
        node.spawn(crate::metrics::count_leader_changes(node.clone()));
        node.spawn(super::changes::log_membership_changes(node.clone()));
        Ok(node)
    }

    /// Runs `task` as one of the node's tasks: in the node's span, ended when the node
    /// stops (at the task's next await), joined by [`Node::shutdown`].
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) -> AbortHandle {
        let stopping = self.stopping();
        let task = async move {
            tokio::select! {
                () = task => {}
                () = stopping => {}
            }
        };
        let mut tasks = self.inner.tasks.lock_unpoisoned();
        // Finished tasks stay in the set until joined: reap them so it holds live ones.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(task.instrument(self.inner.span.clone()))
    }

    /// Resolves once the node has been told to stop (at once if it has been).
    pub(crate) fn stopping(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stop = self.inner.stop.subscribe();
        async move {
            // An error means the sender is gone: the node is gone, so stop too.
            let _ = stop.wait_for(|stopped| *stopped).await;
        }
    }

    /// Resolves when Raft has stopped on this node because of an error (fail-stop).
    pub async fn stopped_with_error(&self) -> String {
        let mut rx = self.inner.raft.metrics();
        loop {
            if let Err(e) = &rx.borrow_watched().running_state {
                return e.to_string();
            }
            if rx.changed().await.is_err() {
                return "raft metrics channel closed".into();
            }
        }
    }

    /// Stops the node's tasks and Raft, then closes the database. Idempotent.
    ///
    /// RocksDB must be closed before the process exits: exiting with a live database
    /// races its background threads against C++ static destructors (seen as
    /// `pthread lock: Invalid argument` and an abort).
    pub async fn shutdown(&self) {
        self.inner.stop.send_replace(true);
        let watch = self.inner.watch.lock_unpoisoned().take();
        if let Some(mut w) = watch {
            w.close().await;
        }
        leader::stop_duties(self);
        let mut tasks = std::mem::take(&mut *self.inner.tasks.lock_unpoisoned());
        let joined = tokio::time::timeout(TASKS_STOP_WAIT, async {
            while let Some(ended) = tasks.join_next().await {
                match ended {
                    Err(e) if e.is_panic() => tracing::warn!(error = %e, "a node task panicked"),
                    _ => {}
                }
            }
        })
        .await;
        if joined.is_err() {
            tracing::warn!(
                tasks = tasks.len(),
                "node tasks still running at shutdown; aborting them"
            );
            tasks.abort_all();
        }
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        let db = self.inner.db.lock_unpoisoned().take();
        if let Some(db) = db {
            close_db(db).await;
        }
    }
}

/// Syncs the WAL, stops RocksDB's background work and waits (bounded) until this is the
/// last handle, so that dropping it closes the database.
async fn close_db(db: Arc<rocksdb::DB>) {
    if let Err(e) = db.flush_wal(true) {
        tracing::warn!(error = %e, "final WAL sync failed");
    }
    db.cancel_all_background_work(true);
    let deadline = Instant::now() + DB_CLOSE_WAIT;
    while Arc::strong_count(&db) > 1 && Instant::now() < deadline {
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    if Arc::strong_count(&db) > 1 {
        tracing::warn!(
            handles = Arc::strong_count(&db),
            "database still in use at shutdown"
        );
    }
    drop(db);
}
