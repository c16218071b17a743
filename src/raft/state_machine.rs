//! The state-machine adapter: committed entries → [`LockTable::apply`] → one RocksDB batch.
//!
//! The lock rules live in [`crate::locks`]; this adapter only decodes, applies, persists
//! and answers. For each `apply` call it writes the changed locks, the last applied log
//! id, the membership and the cluster time in one batch, then sends the replies.
//!
//! The in-memory table is shared (read-only) with the node for queries; it is only
//! mutated here, under a short `std::sync::RwLock` write section that is never held
//! across an `.await`.

use std::collections::BTreeSet;
use std::io::{self, Cursor};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use futures::{Stream, TryStreamExt};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use rocksdb::{WriteBatch, WriteOptions, DB};

use super::snapshot::{self, SnapshotBuilder};
use super::store::{cf, StoreError, CF_LOCKS, CF_SM_META};
use super::typ::{LogId, Snapshot, SnapshotMeta, StoredMembership};
use super::TypeConfig;
use crate::codec;
use crate::locks::{Key, LockTable, Reply};

const KEY_LAST_APPLIED: &[u8] = b"last_applied";
const KEY_MEMBERSHIP: &[u8] = b"membership";
const KEY_NOW_MS: &[u8] = b"now_ms";

/// The lock table as the node reads it: updated by `apply`, replaced by snapshot installs.
pub type SharedTable = Arc<RwLock<LockTable>>;

/// State-machine metadata persisted beside the locks.
#[derive(Clone, Debug, Default)]
pub struct SmMeta {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    /// Highest cluster time applied (the table's clock).
    pub now_ms: u64,
}

/// Reads [`SmMeta`] with `get` (a DB or a DB snapshot).
pub fn read_sm_meta_at(
    get: impl Fn(&[u8]) -> Result<Option<Vec<u8>>, rocksdb::Error>,
) -> Result<SmMeta, StoreError> {
    let last_applied = get(KEY_LAST_APPLIED)?.map(|b| codec::decode(&b)).transpose()?;
    let membership = get(KEY_MEMBERSHIP)?
        .map(|b| codec::decode(&b))
        .transpose()?
        .unwrap_or_default();
    let now_ms = get(KEY_NOW_MS)?.map(|b| codec::decode(&b)).transpose()?.unwrap_or(0);
    Ok(SmMeta {
        last_applied,
        membership,
        now_ms,
    })
}

/// The Raft state machine of one node.
pub struct StateMachine {
    db: Arc<DB>,
    table: SharedTable,
    meta: SmMeta,
    snapshot_dir: PathBuf,
}

impl StateMachine {
    /// Loads the persisted table and meta from `db`.
    pub fn open(db: Arc<DB>, snapshot_dir: PathBuf) -> Result<StateMachine, StoreError> {
        let meta = read_sm_meta_at(|k| db.get_cf(cf(&db, CF_SM_META), k))?;
        let mut grants = Vec::new();
        for item in db.iterator_cf(cf(&db, CF_LOCKS), rocksdb::IteratorMode::Start) {
            let (_, value) = item?;
            grants.push(codec::decode(&value)?);
        }
        let table = LockTable::from_parts(meta.now_ms, grants)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        tracing::info!(
            locks = table.len(),
            last_applied = meta.last_applied.as_ref().map(|l| l.index),
            "state machine loaded"
        );
        Ok(StateMachine {
            db,
            table: Arc::new(RwLock::new(table)),
            meta,
            snapshot_dir,
        })
    }

    /// The table handle the node reads from.
    pub fn table(&self) -> SharedTable {
        self.table.clone()
    }

    fn write_meta(&self, batch: &mut WriteBatch) -> Result<(), StoreError> {
        let meta_cf = cf(&self.db, CF_SM_META);
        batch.put_cf(meta_cf, KEY_LAST_APPLIED, codec::encode(&self.meta.last_applied)?);
        batch.put_cf(meta_cf, KEY_MEMBERSHIP, codec::encode(&self.meta.membership)?);
        batch.put_cf(meta_cf, KEY_NOW_MS, codec::encode(&self.meta.now_ms)?);
        Ok(())
    }
}

fn read_table(table: &SharedTable) -> std::sync::RwLockReadGuard<'_, LockTable> {
    // A poisoned lock means a panic inside apply; the table may be half-updated, and
    // serving it would be worse than stopping.
    table.read().expect("lock table poisoned by a panic in apply")
}

fn write_table(table: &SharedTable) -> std::sync::RwLockWriteGuard<'_, LockTable> {
    table.write().expect("lock table poisoned by a panic in apply")
}

/// Reads the shared table for a query.
pub fn with_table<T>(table: &SharedTable, f: impl FnOnce(&LockTable) -> T) -> T {
    f(&read_table(table))
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.meta.last_applied.clone(), self.meta.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut received = Vec::new();
        while let Some(item) = entries.try_next().await? {
            received.push(item);
        }
        let mut replies = Vec::with_capacity(received.len());
        let mut changed: BTreeSet<Key> = BTreeSet::new();
        let mut batch = WriteBatch::default();
        {
            let mut table = write_table(&self.table);
            for (entry, responder) in received {
                let log_id = entry.log_id();
                let reply = match &entry.payload {
                    EntryPayload::Normal(cmd) => {
                        let applied = table.apply(log_id.index, cmd);
                        changed.extend(applied.changed);
                        applied.reply
                    }
                    EntryPayload::Membership(m) => {
                        self.meta.membership = StoredMembership::new(Some(log_id.clone()), m.clone());
                        Reply::Nothing
                    }
                    EntryPayload::Blank => Reply::Nothing,
                };
                self.meta.last_applied = Some(log_id);
                if let Some(r) = responder {
                    replies.push((r, reply));
                }
            }
            self.meta.now_ms = table.now_ms();
            let locks_cf = cf(&self.db, CF_LOCKS);
            for key in &changed {
                match table.stored(key) {
                    Some(grant) => {
                        batch.put_cf(locks_cf, key.as_str(), codec::encode(grant).map_err(StoreError::from)?)
                    }
                    None => batch.delete_cf(locks_cf, key.as_str()),
                }
            }
        }
        self.write_meta(&mut batch)?;
        // Not synced: the applied entries are durable in the log (see the module docs of
        // `raft`), and a lost tail is re-applied from it at start-up.
        self.db.write(batch).map_err(StoreError::from)?;
        for (responder, reply) in replies {
            responder.send(reply);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            dir: self.snapshot_dir.clone(),
        }
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Self::SnapshotData) -> Result<(), io::Error> {
        let data = snapshot.into_inner();
        let decoded = snapshot::decode_table(&data)?;
        let table = LockTable::from_snapshot(decoded)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        let new_meta = SmMeta {
            last_applied: meta.last_log_id.clone(),
            membership: meta.last_membership.clone(),
            now_ms: table.now_ms(),
        };
        let mut batch = WriteBatch::default();
        let locks_cf = cf(&self.db, CF_LOCKS);
        // Keys are ASCII, so every key sorts below 0xff.
        batch.delete_range_cf(locks_cf, b"", [0xff]);
        for grant in table.grants() {
            batch.put_cf(locks_cf, grant.key.as_str(), codec::encode(grant).map_err(StoreError::from)?);
        }
        let old_meta = std::mem::replace(&mut self.meta, new_meta);
        if let Err(e) = self.write_meta(&mut batch) {
            self.meta = old_meta;
            return Err(e.into());
        }
        let db = self.db.clone();
        let dir = self.snapshot_dir.clone();
        let file_meta = meta.clone();
        tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
            let mut opts = WriteOptions::default();
            opts.set_sync(true);
            db.write_opt(batch, &opts)?;
            snapshot::save(&dir, &file_meta, &data)
        })
        .await
        .map_err(io::Error::other)??;
        tracing::info!(
            index = meta.last_log_id.as_ref().map(|l| l.index),
            locks = table.len(),
            "installed snapshot"
        );
        *write_table(&self.table) = table;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let dir = self.snapshot_dir.clone();
        let snapshot = tokio::task::spawn_blocking(move || snapshot::load_current(&dir))
            .await
            .map_err(io::Error::other)??;
        Ok(snapshot)
    }
}
