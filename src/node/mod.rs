//! One running Baton node: owns the Raft instance, the database, the cluster clock and the
//! background tasks (leader duties, fail-stop watch, self-initialisation).
//!
//! The API layer talks to a node through three calls: [`Node::write`] (propose a command
//! stamped with cluster time and wait for its applied reply), [`Node::read`] (query the
//! lock table, linearizable by read-index or local), and [`Node::status`].

pub mod clock;
pub mod compaction;
mod events;
pub mod forward;
pub mod leader;
pub mod status;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use openraft::impls::ProgressResponder;
use openraft::ReadPolicy;

use crate::config::{Config, ConfigError};
use crate::locks::{Command, Event, Key, LockTable, Reply};
use crate::raft::event_log::EventLog;
use crate::raft::log_store::LogStore;
use crate::raft::network::NetworkFactory;
use crate::raft::state_machine::{with_table, SharedTable, StateMachine};
use crate::raft::store::{open_db, StoreError};
use crate::raft::typ::{self, CommittedLeaderId};
use crate::NodeId;
use clock::ClusterClock;
pub use status::{ClusterStatus, MemberStatus};

/// Log indexes of applied events kept for watchers that resume (`event_log`): at
/// thousands of writes per second, some minutes; a watcher further behind starts over.
const EVENT_RETENTION_ENTRIES: u64 = 1_000_000;

/// How often waiting loops re-check leadership and readiness.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("raft config: {0}")]
    RaftConfig(#[from] openraft::ConfigError),
    #[error("raft: {0}")]
    Raft(String),
    #[error("http client: {0}")]
    Http(#[from] reqwest::Error),
}

/// Why a write or linearizable read did not produce an answer here.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NodeError {
    /// This node is not the leader (or its leadership is not yet ready); nothing was proposed.
    #[error("this node is not the leader")]
    NotLeader,
    /// The leader cannot reach a quorum to confirm a read.
    #[error("no quorum: {0}")]
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

/// The leader as this node knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderContact {
    pub id: NodeId,
    /// `host:port` of the leader's HTTP API.
    pub api: String,
}

/// A running node; cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    id: NodeId,
    config: Arc<Config>,
    raft: typ::Raft,
    table: SharedTable,
    events: EventLog,
    clock: ClusterClock,
    leader_duties: Mutex<Option<leader::Duties>>,
    /// The node's database; closed explicitly at shutdown (see [`Node::shutdown`]).
    db: Mutex<Option<Arc<rocksdb::DB>>>,
    watch: Mutex<Option<openraft::raft::WatchChangeHandle<crate::raft::TypeConfig>>>,
}

impl Node {
    /// Opens storage, starts Raft and the background tasks of node `id`.
    pub async fn start(config: Arc<Config>, id: NodeId) -> Result<Node, StartError> {
        let me = config.node(id)?.clone();
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
        let network = NetworkFactory::new(r.secret.clone())?;
        let raft = typ::Raft::new(id, Arc::new(raft_config), network, log_store, state_machine)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let node = Node {
            inner: Arc::new(Inner {
                id,
                config,
                raft,
                table,
                events,
                clock: ClusterClock::default(),
                leader_duties: Mutex::new(None),
                db: Mutex::new(Some(db)),
                watch: Mutex::new(None),
            }),
        };
        leader::watch_leadership(&node);
        tokio::spawn(leader::initialize_when_all_fresh(node.clone()));
        tokio::spawn(compaction::snapshot_when_due(node.clone()));
        Ok(node)
    }

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

    /// The Raft handle (for the Raft RPC endpoints).
    pub fn raft(&self) -> &typ::Raft {
        &self.inner.raft
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
                    "no answer within {timeout:?}"
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
    /// and the current cluster time.
    async fn ready_leadership(&self) -> Result<(CommittedLeaderId, u64), NodeError> {
        let deadline = Instant::now() + Duration::from_millis(self.inner.config.api.leader_wait_ms);
        loop {
            let leader = self
                .inner
                .raft
                .as_leader()
                .map_err(|_| NodeError::NotLeader)?
                .to_committed_leader_id();
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
                        NodeError::NoQuorum(format!("leadership not confirmed within {timeout:?}"))
                    })?;
                    match confirmed {
                        Ok(_) => Ok(()),
                        Err(typ::RaftError::APIError(
                            openraft::errors::LinearizableReadError::ForwardToLeader(_),
                        )) => Err(NodeError::NotLeader),
                        Err(typ::RaftError::APIError(e)) => Err(NodeError::NoQuorum(e.to_string())),
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

    /// Events applied on this node from now on (every node applies every entry, so any
    /// node can serve watchers).
    pub fn subscribe_events(&self) -> tokio::sync::broadcast::Receiver<Arc<[Event]>> {
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
            .lock()
            .unwrap_or_else(|p| p.into_inner())
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
    /// whose log went backwards anything; after this call it replicates to `id` from the
    /// start once (by snapshot). Operators: stop the node, call this, wipe its data dir,
    /// start it.
    pub async fn allow_rejoin(&self, id: NodeId) -> Result<(), NodeError> {
        self.inner
            .raft
            .as_leader()
            .map_err(|_| NodeError::NotLeader)?;
        match self.inner.raft.trigger().allow_next_revert(&id, true).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(NodeError::Refused(e.to_string())),
            Err(fatal) => Err(NodeError::Stopped(fatal.to_string())),
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

    /// Stops leader duties and Raft, then closes the database. Idempotent.
    ///
    /// RocksDB must be closed before the process exits: exiting with a live database
    /// races its background threads against C++ static destructors (seen as
    /// `pthread lock: Invalid argument` and an abort).
    pub async fn shutdown(&self) {
        let watch = self
            .inner
            .watch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(mut w) = watch {
            w.close().await;
        }
        leader::stop_duties(self);
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        let db = self
            .inner
            .db
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(db) = db {
            close_db(db).await;
        }
    }
}

/// How long shutdown waits for Raft's tasks to release the database.
const DB_CLOSE_WAIT: Duration = Duration::from_secs(5);

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
