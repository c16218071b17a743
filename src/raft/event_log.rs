//! The applied [`Event`]s of this node: persisted in the apply batch (so they survive a
//! restart exactly as far as the state they describe) and published to live subscribers
//! after each batch is written.
//!
//! Two column families hold them:
//! - `events_by_key`: the event itself, keyed by `lock key, 0x00, big-endian log index,
//!   big-endian sequence within the entry`. A watcher of one key resumes with a range
//!   scan of that key's prefix from the index after the last one it saw, so the cost of
//!   a resume is the events of its key, whatever other keys did meanwhile. Lock keys are
//!   `[A-Za-z0-9._:-]`, so the `0x00` separator makes the prefix of one key never a
//!   prefix of another's. The family's prefix extractor is that prefix, and its
//!   memtable a hash of per-key skip lists (`store::cf_options` says why): reads of it
//!   stay inside one lock key, or ask for total order.
//! - `events`: the lock key of each event, keyed by big-endian `(log index, sequence)`:
//!   log order, which is what retention needs to find the index entries to delete.
//!
//! Retention: about the last `retain_entries` log indexes of events are kept; older
//! ones, and every event before an installed snapshot (a snapshot carries the state,
//! not how it came about), are dropped from both families in one batch. A resume may
//! also reach back at most [`RESUME_REACH_ENTRIES`] log indexes behind the newest event,
//! so the work one request can cause is bounded. [`EventLog::first_index`] says from
//! which index on a resume is served; a watcher further behind is told to start over.
//!
//! Upgrade: a data directory written before `events_by_key` existed holds events only in
//! the old layout. They are dropped when the log is opened, and the history starts
//! after them (a resume from before gets the `reset` event, as after retention).
//!
//! Live events go out two ways: every batch to [`EventLog::subscribe`] (for code that
//! watches many keys: the prefix feed `GET /v1/events`), and to
//! [`EventLog::subscribe_key`] only the batches that touch that key, so an idle watcher
//! is not woken by every write of the cluster. Both are told when a snapshot install
//! restarts the history.
//!
//! Caveats: the old-layout events are not migrated; retention is counted in log
//! indexes, not events.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rocksdb::{Direction, IteratorMode, WriteBatch, DB};
use tokio::sync::broadcast;

use super::store::{cf, StoreError, CF_EVENTS, CF_EVENTS_BY_KEY, CF_SM_META};
use crate::codec;
use crate::locks::{Event, Key};

/// `sm_meta` key: the first log index from which on the stored events are complete.
const KEY_EVENTS_FROM: &[u8] = b"events_from";
/// `sm_meta` key, present once the events are stored in the by-key layout.
const KEY_EVENTS_BY_KEY: &[u8] = b"events_by_key";
/// Batches of events buffered per live all-keys subscriber before it lags.
const CHANNEL_CAPACITY: usize = 4096;
/// Batches of one key's events buffered per watcher of that key before it lags (and
/// re-reads storage).
const KEY_CHANNEL_CAPACITY: usize = 256;
/// Prune once this many indexes have passed since the last prune.
const PRUNE_EVERY: u64 = 1024;
/// How many log indexes behind the newest stored event a resume may reach; a watcher
/// further behind gets a `reset` and the events from there on.
pub const RESUME_REACH_ENTRIES: u64 = 100_000;

/// Persisted and live events; cheap to clone.
#[derive(Clone)]
pub struct EventLog {
    inner: Arc<Inner>,
}

struct Inner {
    live: broadcast::Sender<KeyUpdate>,
    /// Watchers of one key. An entry exists while its key has a watcher (it is removed
    /// when the last one is dropped), so the map is as large as the number of distinct
    /// watched keys, which connection caps bound.
    by_key: Mutex<HashMap<Key, broadcast::Sender<KeyUpdate>>>,
    /// Events before this index are gone (pruned, or before an installed snapshot).
    stored_from: AtomicU64,
    /// Index of the newest stored event (0: none).
    newest: AtomicU64,
    retain_entries: u64,
}

impl Inner {
    fn by_key(&self) -> MutexGuard<'_, HashMap<Key, broadcast::Sender<KeyUpdate>>> {
        // The map stays consistent whatever a panicking holder did: every change is one
        // insert or remove.
        self.by_key.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a watcher is told (see [`EventLog::subscribe_key`] and [`EventLog::subscribe`]).
#[derive(Clone, Debug)]
pub enum KeyUpdate {
    /// The watched events of one applied batch (the key's, or every key's), in log
    /// order.
    Events(Arc<[Event]>),
    /// A snapshot was installed: the entries up to it were never applied here, so their
    /// events do not exist on this node, and the history goes on from `first_index`.
    /// A watcher that has not seen everything before it must start over (`reset`).
    Restarted { first_index: u64 },
}

/// Live events of one key, in batches in log order (see [`EventLog::subscribe_key`]).
pub struct KeyEvents {
    rx: broadcast::Receiver<KeyUpdate>,
    key: Key,
    inner: Arc<Inner>,
}

impl KeyEvents {
    /// The next batch of this key's events; `Lagged` when some were missed (read them
    /// from storage), `Closed` when the node stopped.
    pub async fn recv(&mut self) -> Result<KeyUpdate, broadcast::error::RecvError> {
        self.rx.recv().await
    }
}

impl Drop for KeyEvents {
    fn drop(&mut self) {
        let mut map = self.inner.by_key();
        // Receivers are only created under this lock, so the count is exact: 1 is us.
        if map
            .get(&self.key)
            .is_some_and(|tx| tx.receiver_count() <= 1)
        {
            map.remove(&self.key);
        }
    }
}

impl EventLog {
    /// Opens the event log stored in `db`, keeping about `retain_entries` log indexes.
    /// It holds no handle of `db` (the node closes it at shutdown): every call that
    /// touches storage takes it. Events stored in the layout before `events_by_key`
    /// are dropped here (see the module docs).
    pub fn open(db: &DB, retain_entries: u64) -> Result<EventLog, StoreError> {
        let meta_cf = cf(db, CF_SM_META);
        let mut stored_from = db
            .get_cf(meta_cf, KEY_EVENTS_FROM)?
            .map(|b| codec::decode::<u64>(&b))
            .transpose()?
            .unwrap_or(0);
        let mut newest = newest_event_index(db)?;
        if db.get_cf(meta_cf, KEY_EVENTS_BY_KEY)?.is_none() {
            let mut batch = WriteBatch::default();
            if let Some(last) = newest {
                batch.delete_range_cf(
                    cf(db, CF_EVENTS),
                    event_key(0, 0),
                    event_key(u64::MAX, u32::MAX),
                );
                stored_from = stored_from.max(last + 1);
                batch.put_cf(meta_cf, KEY_EVENTS_FROM, codec::encode(&stored_from)?);
                tracing::info!(
                    first_index = stored_from,
                    "dropped events stored before the by-key index existed"
                );
                newest = None;
            }
            batch.put_cf(meta_cf, KEY_EVENTS_BY_KEY, [1u8]);
            db.write(batch)?;
        }
        let (live, _) = broadcast::channel(CHANNEL_CAPACITY);
        Ok(EventLog {
            inner: Arc::new(Inner {
                live,
                by_key: Mutex::new(HashMap::new()),
                stored_from: AtomicU64::new(stored_from),
                newest: AtomicU64::new(newest.unwrap_or(0)),
                retain_entries: retain_entries.max(1),
            }),
        })
    }

    /// Adds `events` to `batch` (the apply batch).
    pub fn stage(
        &self,
        db: &DB,
        batch: &mut WriteBatch,
        events: &[Event],
    ) -> Result<(), StoreError> {
        let events_cf = cf(db, CF_EVENTS);
        let by_key_cf = cf(db, CF_EVENTS_BY_KEY);
        let mut seq = 0u32;
        let mut prev = None;
        for e in events {
            if prev != Some(e.index) {
                seq = 0;
                prev = Some(e.index);
            }
            batch.put_cf(events_cf, event_key(e.index, seq), e.key.as_str());
            batch.put_cf(
                by_key_cf,
                by_key_key(e.key.as_str().as_bytes(), e.index, seq),
                codec::encode(e)?,
            );
            seq += 1;
        }
        Ok(())
    }

    /// Adds to `batch` the removal of every event before `index`.
    ///
    /// The by-key entries to delete are found from the log-ordered `events` family,
    /// between the current retention mark and `index`: with regular pruning that is
    /// about `PRUNE_EVERY` indexes. When `index` is past every stored event (a
    /// snapshot install), the whole by-key family goes in one range deletion instead.
    pub fn drop_before(
        &self,
        db: &DB,
        batch: &mut WriteBatch,
        index: u64,
    ) -> Result<(), StoreError> {
        let events_cf = cf(db, CF_EVENTS);
        let by_key_cf = cf(db, CF_EVENTS_BY_KEY);
        match newest_event_index(db)? {
            Some(newest) if newest >= index => {
                let from = event_key(self.inner.stored_from.load(Ordering::Relaxed), 0);
                let iter = db.iterator_cf(events_cf, IteratorMode::From(&from, Direction::Forward));
                for item in iter {
                    let (k, lock_key) = item?;
                    let (i, seq) = parse_event_key(&k)?;
                    if i >= index {
                        break;
                    }
                    batch.delete_cf(by_key_cf, by_key_key(&lock_key, i, seq));
                }
            }
            // Lock keys are ASCII, so every by-key entry sorts below 0xff.
            _ => batch.delete_range_cf(by_key_cf, &b""[..], &[0xffu8][..]),
        }
        batch.delete_range_cf(events_cf, event_key(0, 0), event_key(index, 0));
        batch.put_cf(cf(db, CF_SM_META), KEY_EVENTS_FROM, codec::encode(&index)?);
        Ok(())
    }

    /// Call after a batch staged with [`Self::stage`] or [`Self::drop_before`] is written:
    /// updates the retention mark to `first_index` (if given) and publishes `events`.
    pub fn written(&self, events: Vec<Event>, first_index: Option<u64>) {
        if let Some(i) = first_index {
            self.inner.stored_from.fetch_max(i, Ordering::Relaxed);
        }
        let Some(last) = events.last() else {
            return;
        };
        self.inner.newest.fetch_max(last.index, Ordering::Relaxed);
        self.publish_by_key(&events);
        // No subscribers is fine.
        let _ = self.inner.live.send(KeyUpdate::Events(events.into()));
    }

    /// Call after a snapshot install's batch (staged with [`Self::drop_before`]) is
    /// written: the history now starts at `first_index`, and every watcher is told, since
    /// the events of the entries the snapshot covers will never be published here (found
    /// by the chaos suite: a follower that caught up by snapshot after a restart sent its
    /// live watchers the events after the snapshot, silently skipping a thousand entries).
    pub fn restarted(&self, first_index: u64) {
        self.inner
            .stored_from
            .fetch_max(first_index, Ordering::Relaxed);
        for tx in self.inner.by_key().values() {
            let _ = tx.send(KeyUpdate::Restarted { first_index });
        }
        let _ = self.inner.live.send(KeyUpdate::Restarted { first_index });
    }

    /// Sends each watched key its own events of the batch; unwatched keys cost a lookup.
    fn publish_by_key(&self, events: &[Event]) {
        let map = self.inner.by_key();
        if map.is_empty() {
            return;
        }
        let mut mine: HashMap<&Key, Vec<Event>> = HashMap::new();
        for e in events {
            if map.contains_key(&e.key) {
                mine.entry(&e.key).or_default().push(e.clone());
            }
        }
        for (key, events) in mine {
            if let Some(tx) = map.get(key) {
                // A watcher that went away in between is fine.
                let _ = tx.send(KeyUpdate::Events(events.into()));
            }
        }
    }

    /// Where to drop events before, once the applied index reached `last_index` (every
    /// so often, keeping about `retain_entries` indexes); `None`: not yet.
    pub fn prune_mark(&self, last_index: u64) -> Option<u64> {
        let keep_from = last_index.saturating_sub(self.inner.retain_entries);
        let stored_from = self.inner.stored_from.load(Ordering::Relaxed);
        (keep_from >= stored_from + PRUNE_EVERY).then_some(keep_from)
    }

    /// Live events of every key from now on, in batches in log order, and the
    /// restarts of the history (snapshot installs).
    pub fn subscribe(&self) -> broadcast::Receiver<KeyUpdate> {
        self.inner.live.subscribe()
    }

    /// Live events of `key` from now on: only batches with an event of `key` wake the
    /// receiver, and they hold only that key's events.
    pub fn subscribe_key(&self, key: &Key) -> KeyEvents {
        let rx = self
            .inner
            .by_key()
            .entry(key.clone())
            .or_insert_with(|| broadcast::channel(KEY_CHANNEL_CAPACITY).0)
            .subscribe();
        KeyEvents {
            rx,
            key: key.clone(),
            inner: self.inner.clone(),
        }
    }

    /// The first log index a resume is served from: events before it are no longer
    /// stored, or further back than [`RESUME_REACH_ENTRIES`].
    pub fn first_index(&self) -> u64 {
        let stored_from = self.inner.stored_from.load(Ordering::Relaxed);
        let newest = self.inner.newest.load(Ordering::Relaxed);
        stored_from.max(newest.saturating_sub(RESUME_REACH_ENTRIES))
    }

    /// About `limit` (never splitting an entry) events of `key` with an index above
    /// `after` and at least [`Self::first_index`], in log order. Reads only `key`'s
    /// events; blocking (call it off the async runtime).
    pub fn read_after(
        &self,
        db: &DB,
        key: &Key,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let key = key.as_str().as_bytes();
        let from = after.saturating_add(1).max(self.first_index());
        let start = by_key_key(key, from, 0);
        let prefix = &start[..key.len() + 1];
        let mut out = Vec::new();
        // The family's prefix extractor is the lock key: a prefix read is both what is
        // wanted and what its hashed memtable serves.
        let mut read = rocksdb::ReadOptions::default();
        read.set_prefix_same_as_start(true);
        let iter = db.iterator_cf_opt(
            cf(db, CF_EVENTS_BY_KEY),
            read,
            IteratorMode::From(&start, Direction::Forward),
        );
        for item in iter {
            let (k, value) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            let event = Event::decode_stored(&value)?;
            if out.len() >= limit && out.last().is_some_and(|l: &Event| l.index != event.index) {
                // Never split one entry's events between two reads.
                break;
            }
            out.push(event);
        }
        Ok(out)
    }

    /// Watched keys (for tests of the registry's cleanup).
    #[cfg(test)]
    fn watched_keys(&self) -> usize {
        self.inner.by_key().len()
    }
}

/// The log index of the last entry in the `events` family, if any.
fn newest_event_index(db: &DB) -> Result<Option<u64>, StoreError> {
    match db.iterator_cf(cf(db, CF_EVENTS), IteratorMode::End).next() {
        None => Ok(None),
        Some(item) => Ok(Some(parse_event_key(&item?.0)?.0)),
    }
}

fn event_key(index: u64, seq: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&index.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn parse_event_key(k: &[u8]) -> Result<(u64, u32), StoreError> {
    let bytes: [u8; 12] = k
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("event key of {} bytes, expected 12", k.len())))?;
    let (index, seq) = bytes.split_at(8);
    Ok((
        u64::from_be_bytes(index.try_into().expect("split at 8 of 12")),
        u32::from_be_bytes(seq.try_into().expect("split at 8 of 12")),
    ))
}

/// `lock key, 0x00, index, seq` (see the module docs).
fn by_key_key(lock_key: &[u8], index: u64, seq: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(lock_key.len() + 13);
    k.extend_from_slice(lock_key);
    k.push(0);
    k.extend_from_slice(&event_key(index, seq));
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locks::{EventKind, Owner};
    use crate::raft::store::open_db;
    use tokio::sync::broadcast::error::TryRecvError;

    fn event(index: u64, key: &str) -> Event {
        Event {
            index,
            key: Key::parse(key).unwrap(),
            kind: EventKind::Acquired,
            owner: Owner::parse("o").unwrap(),
            token: Some(crate::locks::Token(index)),
            at_ms: index,
            expires_at_ms: None,
            app: None,
            by: None,
        }
    }

    /// Writes `events` as one apply batch would.
    fn write(db: &DB, log: &EventLog, events: Vec<Event>) {
        let mut batch = WriteBatch::default();
        log.stage(db, &mut batch, &events).unwrap();
        db.write(batch).unwrap();
        log.written(events, None);
    }

    fn count(db: &DB, family: &str) -> usize {
        // `events_by_key` has a prefix extractor: only a total-order read sees all keys.
        let mut read = rocksdb::ReadOptions::default();
        read.set_total_order_seek(true);
        db.iterator_cf_opt(cf(db, family), read, IteratorMode::Start)
            .count()
    }

    /// Events of 100 other keys around every event of `mine`.
    fn busy_history(db: &DB, log: &EventLog) {
        let mut events = Vec::new();
        for index in 1..=3_000u64 {
            events.push(event(index, &format!("other-{}", index % 100)));
            if index % 300 == 0 {
                events.push(event(index, "mine"));
                events.push(event(index, "mine"));
            }
        }
        write(db, log, events);
    }

    #[test]
    fn a_resume_reads_only_its_keys_events_in_log_order() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(dir.path()).unwrap();
        let log = EventLog::open(&db, 1_000_000).unwrap();
        busy_history(&db, &log);
        let mine = Key::parse("mine").unwrap();
        let read = log.read_after(&db, &mine, 0, 1_000).unwrap();
        let indexes: Vec<u64> = read.iter().map(|e| e.index).collect();
        let expected: Vec<u64> = (1..=10u64).flat_map(|i| [i * 300, i * 300]).collect();
        assert_eq!(indexes, expected);
        assert!(read.iter().all(|e| e.key == mine));
        // After an index, and a limit that never splits an entry's two events.
        let read = log.read_after(&db, &mine, 900, 3).unwrap();
        let indexes: Vec<u64> = read.iter().map(|e| e.index).collect();
        assert_eq!(indexes, vec![1_200, 1_200, 1_500, 1_500]);
        // A key that is a prefix of another sees none of the other's events.
        let other = Key::parse("other-1").unwrap();
        let read = log.read_after(&db, &other, 0, 1_000).unwrap();
        assert_eq!(read.len(), 30);
        assert!(read.iter().all(|e| e.key == other));
    }

    #[test]
    fn pruning_drops_old_events_from_both_families() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(dir.path()).unwrap();
        let log = EventLog::open(&db, 1_000_000).unwrap();
        busy_history(&db, &log);
        let before = count(&db, CF_EVENTS_BY_KEY);
        assert_eq!(before, 3_020);
        let mut batch = WriteBatch::default();
        log.drop_before(&db, &mut batch, 1_000).unwrap();
        db.write(batch).unwrap();
        log.written(Vec::new(), Some(1_000));
        // Indexes 1..=999 held 999 events of other keys and 6 of `mine`.
        assert_eq!(count(&db, CF_EVENTS_BY_KEY), before - 999 - 6);
        assert_eq!(count(&db, CF_EVENTS), before - 999 - 6);
        assert_eq!(log.first_index(), 1_000);
        let read = log
            .read_after(&db, &Key::parse("mine").unwrap(), 0, 100)
            .unwrap();
        assert_eq!(read.first().map(|e| e.index), Some(1_200));
    }

    #[test]
    fn a_snapshot_install_empties_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(dir.path()).unwrap();
        let log = EventLog::open(&db, 1_000_000).unwrap();
        busy_history(&db, &log);
        let mut batch = WriteBatch::default();
        log.drop_before(&db, &mut batch, 5_001).unwrap();
        db.write(batch).unwrap();
        log.written(Vec::new(), Some(5_001));
        assert_eq!(count(&db, CF_EVENTS_BY_KEY), 0);
        assert_eq!(count(&db, CF_EVENTS), 0);
        assert_eq!(log.first_index(), 5_001);
    }

    #[test]
    fn events_of_the_old_layout_are_dropped_at_open_and_the_history_starts_after_them() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(dir.path()).unwrap();
        // The layout before the index: the encoded event by (index, seq), no marker.
        for index in [7u64, 42] {
            let value = codec::encode(&event(index, "k")).unwrap();
            db.put_cf(cf(&db, CF_EVENTS), event_key(index, 0), value)
                .unwrap();
        }
        let log = EventLog::open(&db, 1_000_000).unwrap();
        assert_eq!(count(&db, CF_EVENTS), 0);
        assert_eq!(log.first_index(), 43);
        // Reopening does not drop the new layout's events.
        write(&db, &log, vec![event(50, "k")]);
        drop(log);
        let log = EventLog::open(&db, 1_000_000).unwrap();
        assert_eq!(log.first_index(), 43);
        let read = log
            .read_after(&db, &Key::parse("k").unwrap(), 0, 10)
            .unwrap();
        assert_eq!(read.iter().map(|e| e.index).collect::<Vec<_>>(), vec![50]);
    }

    #[test]
    fn a_resume_reaches_back_a_bounded_number_of_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(dir.path()).unwrap();
        let log = EventLog::open(&db, 1_000_000).unwrap();
        let newest = 3 * RESUME_REACH_ENTRIES;
        write(&db, &log, vec![event(5, "k"), event(newest, "k")]);
        assert_eq!(log.first_index(), newest - RESUME_REACH_ENTRIES);
        let read = log
            .read_after(&db, &Key::parse("k").unwrap(), 0, 10)
            .unwrap();
        assert_eq!(
            read.iter().map(|e| e.index).collect::<Vec<_>>(),
            vec![newest]
        );
    }

    #[test]
    fn a_key_watcher_wakes_only_for_batches_of_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(dir.path()).unwrap();
        let log = EventLog::open(&db, 1_000_000).unwrap();
        let mut watcher = log.subscribe_key(&Key::parse("a").unwrap());
        let mut all = log.subscribe();
        write(&db, &log, vec![event(1, "b"), event(2, "c")]);
        assert_eq!(watcher.rx.try_recv().unwrap_err(), TryRecvError::Empty);
        assert!(matches!(all.try_recv(), Ok(KeyUpdate::Events(b)) if b.len() == 2));
        write(&db, &log, vec![event(3, "b"), event(3, "a"), event(4, "a")]);
        let Ok(KeyUpdate::Events(batch)) = watcher.rx.try_recv() else {
            panic!("expected the events of key a");
        };
        assert_eq!(
            batch
                .iter()
                .map(|e| (e.index, e.key.as_str()))
                .collect::<Vec<_>>(),
            vec![(3, "a"), (4, "a")]
        );
        assert_eq!(watcher.rx.try_recv().unwrap_err(), TryRecvError::Empty);
        assert!(matches!(all.try_recv(), Ok(KeyUpdate::Events(b)) if b.len() == 3));
    }

    /// Regression (chaos seed 2027): a follower that caught up by snapshot sent its
    /// watchers the events after the snapshot with no word of the entries it skipped.
    #[test]
    fn a_snapshot_install_tells_every_key_watcher_where_history_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(dir.path()).unwrap();
        let log = EventLog::open(&db, 1_000_000).unwrap();
        let mut a = log.subscribe_key(&Key::parse("a").unwrap());
        let mut b = log.subscribe_key(&Key::parse("b").unwrap());
        let mut all = log.subscribe();
        write(&db, &log, vec![event(7, "a")]);
        assert!(matches!(a.rx.try_recv(), Ok(KeyUpdate::Events(_))));
        let mut batch = WriteBatch::default();
        log.drop_before(&db, &mut batch, 1_000).unwrap();
        db.write(batch).unwrap();
        log.restarted(1_000);
        for watcher in [&mut a, &mut b] {
            assert!(matches!(
                watcher.rx.try_recv(),
                Ok(KeyUpdate::Restarted { first_index: 1_000 })
            ));
        }
        assert!(matches!(all.try_recv(), Ok(KeyUpdate::Events(_))));
        assert!(matches!(
            all.try_recv(),
            Ok(KeyUpdate::Restarted { first_index: 1_000 })
        ));
        assert_eq!(log.first_index(), 1_000);
        let read = log
            .read_after(&db, &Key::parse("a").unwrap(), 0, 10)
            .unwrap();
        assert!(read.is_empty(), "the events before the snapshot are gone");
    }

    #[test]
    fn a_key_leaves_the_registry_with_its_last_watcher() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(dir.path()).unwrap();
        let log = EventLog::open(&db, 1_000_000).unwrap();
        let a = Key::parse("a").unwrap();
        let first = log.subscribe_key(&a);
        let second = log.subscribe_key(&a);
        let other = log.subscribe_key(&Key::parse("b").unwrap());
        assert_eq!(log.watched_keys(), 2);
        drop(first);
        assert_eq!(log.watched_keys(), 2);
        drop(second);
        assert_eq!(log.watched_keys(), 1);
        drop(other);
        assert_eq!(log.watched_keys(), 0);
        // Events of a key nobody watches any more go nowhere.
        write(&db, &log, vec![event(1, "a")]);
        assert_eq!(log.watched_keys(), 0);
    }
}
