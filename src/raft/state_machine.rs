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

use super::event_log::EventLog;
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
    let last_applied = get(KEY_LAST_APPLIED)?
        .map(|b| codec::decode(&b))
        .transpose()?;
    let membership = get(KEY_MEMBERSHIP)?
        .map(|b| codec::decode(&b))
        .transpose()?
        .unwrap_or_default();
    let now_ms = get(KEY_NOW_MS)?
        .map(|b| codec::decode(&b))
        .transpose()?
        .unwrap_or(0);
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
    events: EventLog,
    meta: SmMeta,
    snapshot_dir: PathBuf,
}

impl StateMachine {
    /// Loads the persisted table and meta from `db`; applied events go to `events`.
    pub fn open(
        db: Arc<DB>,
        snapshot_dir: PathBuf,
        events: EventLog,
    ) -> Result<StateMachine, StoreError> {
        let meta = read_sm_meta_at(|k| db.get_cf(cf(&db, CF_SM_META), k))?;
        let mut states = Vec::new();
        for item in db.iterator_cf(cf(&db, CF_LOCKS), rocksdb::IteratorMode::Start) {
            let (_, value) = item?;
            states.push(codec::decode(&value)?);
        }
        let table = LockTable::from_parts(meta.now_ms, states)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        tracing::info!(
            locks = table.len(),
            last_applied = meta.last_applied.as_ref().map(|l| l.index),
            "state machine loaded"
        );
        Ok(StateMachine {
            db,
            table: Arc::new(RwLock::new(table)),
            events,
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
        if let Some(last_applied) = &self.meta.last_applied {
            batch.put_cf(meta_cf, KEY_LAST_APPLIED, codec::encode(last_applied)?);
        }
        batch.put_cf(
            meta_cf,
            KEY_MEMBERSHIP,
            codec::encode(&self.meta.membership)?,
        );
        batch.put_cf(meta_cf, KEY_NOW_MS, codec::encode(&self.meta.now_ms)?);
        Ok(())
    }
}

fn read_table(table: &SharedTable) -> std::sync::RwLockReadGuard<'_, LockTable> {
    // A poisoned lock means a panic inside apply; the table may be half-updated, and
    // serving it would be worse than stopping.
    table
        .read()
        .expect("lock table poisoned by a panic in apply")
}

fn write_table(table: &SharedTable) -> std::sync::RwLockWriteGuard<'_, LockTable> {
    table
        .write()
        .expect("lock table poisoned by a panic in apply")
}

/// Reads the shared table for a query.
pub fn with_table<T>(table: &SharedTable, f: impl FnOnce(&LockTable) -> T) -> T {
    f(&read_table(table))
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.meta.last_applied, self.meta.membership.clone()))
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
        let mut events = Vec::new();
        let mut batch = WriteBatch::default();
        {
            let mut table = write_table(&self.table);
            for (entry, responder) in received {
                let log_id = entry.log_id();
                let reply = match &entry.payload {
                    EntryPayload::Normal(cmd) => {
                        let applied = table.apply(log_id.index, cmd);
                        crate::metrics::metrics().applied(cmd, &applied.events);
                        changed.extend(applied.changed);
                        events.extend(applied.events);
                        applied.reply
                    }
                    EntryPayload::Membership(m) => {
                        self.meta.membership = StoredMembership::new(Some(log_id), m.clone());
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
                    Some(state) => batch.put_cf(
                        locks_cf,
                        key.as_str(),
                        codec::encode(state).map_err(StoreError::from)?,
                    ),
                    None => batch.delete_cf(locks_cf, key.as_str()),
                }
            }
        }
        self.write_meta(&mut batch)?;
        self.events.stage(&self.db, &mut batch, &events)?;
        let last_index = self.meta.last_applied.as_ref().map_or(0, |l| l.index);
        let prune = self.events.prune_mark(last_index);
        if let Some(before) = prune {
            self.events.drop_before(&self.db, &mut batch, before)?;
        }
        // Not synced: the applied entries are durable in the log (see the module docs of
        // `raft`), and a lost tail is re-applied from it at start-up.
        self.db.write(batch).map_err(StoreError::from)?;
        self.events.written(events, prune);
        for (responder, reply) in replies {
            responder.send(reply);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            db: Arc::downgrade(&self.db),
            dir: self.snapshot_dir.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Self::SnapshotData,
    ) -> Result<(), io::Error> {
        let started = std::time::Instant::now();
        let data = snapshot.into_inner();
        let bytes = data.len();
        let decoded = snapshot::decode_table(&data)?;
        let table = LockTable::from_snapshot(decoded)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        let new_meta = SmMeta {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            now_ms: table.now_ms(),
        };
        let mut batch = WriteBatch::default();
        let locks_cf = cf(&self.db, CF_LOCKS);
        // Keys are ASCII, so every key sorts below 0xff.
        batch.delete_range_cf(locks_cf, &b""[..], &[0xffu8][..]);
        for state in table.states() {
            batch.put_cf(
                locks_cf,
                state.key.as_str(),
                codec::encode(state).map_err(StoreError::from)?,
            );
        }
        // The snapshot carries the state, not the events that led to it: the event
        // history is complete only from after the snapshot on.
        let events_from = meta.last_log_id.as_ref().map_or(0, |l| l.index + 1);
        self.events.drop_before(&self.db, &mut batch, events_from)?;
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
            bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "installed snapshot"
        );
        crate::metrics::metrics().snapshot_installed();
        *write_table(&self.table) = table;
        self.events.restarted(events_from);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locks::{Command, Key, Owner};
    use crate::raft::store::open_db;
    use crate::raft::typ::Entry;
    use openraft::vote::RaftLeaderId;
    use openraft::RaftSnapshotBuilder;

    fn log_id(index: u64) -> LogId {
        let leader = openraft::impls::leader_id_adv::LeaderId::new(1, 1).to_committed();
        LogId::new(leader, index)
    }

    fn acquire(index: u64, key: &str, now_ms: u64) -> Entry {
        let cmd = Command::acquire(
            Key::parse(key).unwrap(),
            Owner::parse("o").unwrap(),
            10_000,
            now_ms,
        );
        Entry {
            log_id: log_id(index),
            payload: EntryPayload::Normal(cmd),
        }
    }

    fn open_sm(db: Arc<DB>, dir: std::path::PathBuf) -> Result<StateMachine, StoreError> {
        let events = EventLog::open(&db, 10_000)?;
        StateMachine::open(db, dir, events)
    }

    async fn apply_all(sm: &mut StateMachine, entries: Vec<Entry>) {
        let stream = futures::stream::iter(entries.into_iter().map(|e| Ok((e, None))));
        sm.apply(stream).await.unwrap();
    }

    #[tokio::test]
    async fn applied_state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let table_before;
        {
            let db = open_db(&dir.path().join("db")).unwrap();
            let mut sm = open_sm(db, dir.path().join("snap")).unwrap();
            apply_all(
                &mut sm,
                vec![
                    acquire(1, "a", 100),
                    acquire(2, "b", 200),
                    acquire(3, "a", 300),
                ],
            )
            .await;
            table_before = with_table(&sm.table(), |t| t.clone());
            assert_eq!(table_before.len(), 2);
        }
        let db = open_db(&dir.path().join("db")).unwrap();
        let mut sm = open_sm(db, dir.path().join("snap")).unwrap();
        assert_eq!(with_table(&sm.table(), |t| t.clone()), table_before);
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied, Some(log_id(3)));
    }

    #[tokio::test]
    async fn a_built_snapshot_installs_into_an_empty_node() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(&dir.path().join("db1")).unwrap();
        let mut sm = open_sm(db, dir.path().join("snap1")).unwrap();
        apply_all(
            &mut sm,
            (1..=50)
                .map(|i| acquire(i, &format!("k{i}"), i * 10))
                .collect(),
        )
        .await;
        let snapshot = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(snapshot.meta.last_log_id, Some(log_id(50)));
        let current = sm
            .get_current_snapshot()
            .await
            .unwrap()
            .expect("stored snapshot");
        assert_eq!(current.meta, snapshot.meta);

        let db2 = open_db(&dir.path().join("db2")).unwrap();
        let mut sm2 = open_sm(db2, dir.path().join("snap2")).unwrap();
        apply_all(&mut sm2, vec![acquire(1, "stale", 1)]).await;
        sm2.install_snapshot(&snapshot.meta, snapshot.snapshot)
            .await
            .unwrap();
        assert_eq!(
            with_table(&sm2.table(), |t| t.clone()),
            with_table(&sm.table(), |t| t.clone())
        );
        assert_eq!(sm2.applied_state().await.unwrap().0, Some(log_id(50)));
        drop(sm2);
        // The install is durable: a reopen sees the snapshot's state, not the stale lock.
        let db2 = open_db(&dir.path().join("db2")).unwrap();
        let sm2 = open_sm(db2, dir.path().join("snap2")).unwrap();
        assert_eq!(
            with_table(&sm2.table(), |t| t.clone()),
            with_table(&sm.table(), |t| t.clone())
        );
    }

    #[tokio::test]
    async fn a_garbled_metadata_value_is_an_error_at_open_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(&dir.path().join("db")).unwrap();
        for key in [KEY_LAST_APPLIED, KEY_MEMBERSHIP, KEY_NOW_MS] {
            db.put_cf(cf(&db, CF_SM_META), key, [0xff; 3]).unwrap();
            let err = open_sm(db.clone(), dir.path().join("snap"));
            assert!(matches!(err, Err(StoreError::Codec(_))), "{key:?}");
            db.delete_cf(cf(&db, CF_SM_META), key).unwrap();
        }
    }

    #[tokio::test]
    async fn a_corrupt_snapshot_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(&dir.path().join("db")).unwrap();
        let mut sm = open_sm(db, dir.path().join("snap")).unwrap();
        let meta = SnapshotMeta {
            last_log_id: Some(log_id(9)),
            last_membership: StoredMembership::default(),
        };
        let err = sm
            .install_snapshot(&meta, Cursor::new(vec![0xff; 16]))
            .await;
        assert!(err.is_err());
        assert_eq!(sm.applied_state().await.unwrap().0, None);
    }
}
