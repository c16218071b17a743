//! The Raft log and vote on RocksDB ([`openraft::storage::RaftLogStorage`]).
//!
//! Invariants:
//! - `save_vote` returns only after the WAL holding the vote is synced.
//! - `append` writes its entries as one batch, so they are readable when it returns, and
//!   queues openraft's flush callback to the syncer thread, which completes callbacks
//!   only after an `fsync` that covers their entries (group commit: one sync for every
//!   callback queued by then).
//! - `truncate_after` is synced too: a conflicting suffix must not come back after a crash.
//! - `purge` records the last purged id before deleting, in one batch; losing a purge in a
//!   crash only leaves entries that openraft ignores.
//!
//! Every RocksDB or decode error is returned to openraft, which stops Raft (fail-stop).

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{mpsc, Arc, Weak};
use std::time::Instant;

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::OptionalSend;
use rocksdb::{Direction, IteratorMode, WriteBatch, DB};

use super::store::{cf, index_key, index_of_key, sync_wal, StoreError, CF_LOG, CF_RAFT_META};
use super::typ::{Entry, LogId, Vote};
use super::TypeConfig;
use crate::codec;

const KEY_VOTE: &[u8] = b"vote";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

/// The log store; cheap to clone (the reader is a clone).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    /// Flush callbacks with the instant their append began (for the flush histogram).
    syncer: mpsc::Sender<(IOFlushed<TypeConfig>, Instant)>,
}

impl LogStore {
    /// Opens the log store over `db` and starts its syncer thread, which ends when the
    /// last clone of the store is dropped.
    pub fn open(db: Arc<DB>) -> Result<LogStore, StoreError> {
        let (tx, rx) = mpsc::channel();
        // A weak handle: the syncer must never be what keeps the database open, or its
        // last drop could race the process exit (RocksDB aborts with
        // `pthread lock: Invalid argument` when a database closes during exit).
        let syncer_db = Arc::downgrade(&db);
        std::thread::Builder::new()
            .name("baton-log-sync".into())
            .spawn(move || run_syncer(&syncer_db, rx))?;
        Ok(LogStore { db, syncer: tx })
    }

    fn get_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        match self.db.get_cf(cf(&self.db, CF_RAFT_META), key)? {
            Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId>, StoreError> {
        let mut it = self.db.iterator_cf(cf(&self.db, CF_LOG), IteratorMode::End);
        match it.next() {
            Some(item) => {
                let (_, value) = item?;
                let entry: Entry = codec::decode(&value)?;
                Ok(Some(entry.log_id()))
            }
            None => Ok(None),
        }
    }
}

/// Group commit: waits for a queued callback, takes every other one already queued, makes
/// one WAL sync, and completes them all with its result.
fn run_syncer(db: &Weak<DB>, rx: mpsc::Receiver<(IOFlushed<TypeConfig>, Instant)>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        let result = match db.upgrade() {
            Some(db) => sync_wal(&db),
            None => Err(StoreError::Io(io::Error::other("the database is closed"))),
        };
        if let Err(e) = &result {
            tracing::error!(error = %e, "log sync failed; raft will stop");
        }
        for (callback, started) in batch {
            let r = match &result {
                Ok(()) => {
                    crate::metrics::metrics().log_flushed(started.elapsed());
                    Ok(())
                }
                Err(e) => Err(io::Error::other(e.to_string())),
            };
            callback.io_completed(r);
        }
    }
}

fn start_index(range: &impl RangeBounds<u64>) -> u64 {
    match range.start_bound() {
        Bound::Included(x) => *x,
        Bound::Excluded(x) => x.saturating_add(1),
        Bound::Unbounded => 0,
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = index_key(start_index(&range));
        let mut entries = Vec::new();
        let it = self.db.iterator_cf(
            cf(&self.db, CF_LOG),
            IteratorMode::From(&start, Direction::Forward),
        );
        for item in it {
            let (key, value) = item.map_err(StoreError::from)?;
            let index = index_of_key(&key)?;
            if !range.contains(&index) {
                break;
            }
            let entry: Entry = codec::decode(&value).map_err(StoreError::from)?;
            if entry.index() != index {
                return Err(StoreError::Corrupt(format!(
                    "log key {index} holds entry {}",
                    entry.index()
                ))
                .into());
            }
            entries.push(entry);
        }
        Ok(entries)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.get_meta(KEY_VOTE)?)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id: Option<LogId> = self.get_meta(KEY_LAST_PURGED)?;
        let last_log_id = self.last_entry_log_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let bytes = codec::encode(vote).map_err(StoreError::from)?;
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
            db.put_cf(cf(&db, CF_RAFT_META), KEY_VOTE, bytes)?;
            sync_wal(&db)
        })
        .await
        .map_err(io::Error::other)??;
        Ok(())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = Instant::now();
        let log = cf(&self.db, CF_LOG);
        let mut batch = WriteBatch::default();
        for entry in entries {
            let bytes = codec::encode(&entry).map_err(StoreError::from)?;
            batch.put_cf(log, index_key(entry.index()), bytes);
        }
        self.db.write(batch).map_err(StoreError::from)?;
        self.syncer
            .send((callback, started))
            .map_err(|_| io::Error::other("log syncer thread is gone"))?;
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |id| id.index() + 1);
        tracing::debug!(from, "truncate log");
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
            db.delete_range_cf(cf(&db, CF_LOG), index_key(from), index_key(u64::MAX))?;
            // delete_range's end is exclusive: remove index u64::MAX explicitly.
            db.delete_cf(cf(&db, CF_LOG), index_key(u64::MAX))?;
            sync_wal(&db)
        })
        .await
        .map_err(io::Error::other)??;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        tracing::debug!(upto = log_id.index(), "purge log");
        let mut batch = WriteBatch::default();
        batch.put_cf(
            cf(&self.db, CF_RAFT_META),
            KEY_LAST_PURGED,
            codec::encode(&log_id).map_err(StoreError::from)?,
        );
        batch.delete_range_cf(
            cf(&self.db, CF_LOG),
            index_key(0),
            index_key(log_id.index() + 1),
        );
        self.db.write(batch).map_err(StoreError::from)?;
        Ok(())
    }
}
