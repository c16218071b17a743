//! The applied [`Event`]s of this node: persisted in the `events` column family (in the
//! apply batch, so they survive a restart exactly as far as the state they describe) and
//! published to live subscribers after each batch is written.
//!
//! Events are keyed by big-endian `(log index, sequence within the entry)`, so key order
//! is log order and a watcher resumes with a range scan from the index after the last
//! one it saw. The column family keeps about the last `retain_entries` log indexes of
//! events; older ones, and every event before an installed snapshot (a snapshot carries
//! the state, not how it came about), are dropped. [`EventLog::first_index`] says from
//! which index on the history is complete, so that a watcher can tell a gap.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rocksdb::{IteratorMode, WriteBatch, DB};
use tokio::sync::broadcast;

use super::store::{cf, StoreError, CF_EVENTS, CF_SM_META};
use crate::codec;
use crate::locks::{Event, Key};

/// `sm_meta` key: the first log index from which on the stored events are complete.
const KEY_EVENTS_FROM: &[u8] = b"events_from";
/// Batches of events buffered per live subscriber before it lags (and re-reads storage).
const CHANNEL_CAPACITY: usize = 4096;
/// Prune once this many indexes have passed since the last prune.
const PRUNE_EVERY: u64 = 1024;

/// Persisted and live events; cheap to clone.
#[derive(Clone)]
pub struct EventLog {
    inner: Arc<Inner>,
}

struct Inner {
    live: broadcast::Sender<Arc<[Event]>>,
    /// Events before this index are gone (pruned, or before an installed snapshot).
    first_index: AtomicU64,
    retain_entries: u64,
}

impl EventLog {
    /// Opens the event log stored in `db`, keeping about `retain_entries` log indexes.
    /// It holds no handle of `db` (the node closes it at shutdown): every call that
    /// touches storage takes it.
    pub fn open(db: &DB, retain_entries: u64) -> Result<EventLog, StoreError> {
        let first_index = db
            .get_cf(cf(db, CF_SM_META), KEY_EVENTS_FROM)?
            .map(|b| codec::decode::<u64>(&b))
            .transpose()?
            .unwrap_or(0);
        let (live, _) = broadcast::channel(CHANNEL_CAPACITY);
        Ok(EventLog {
            inner: Arc::new(Inner {
                live,
                first_index: AtomicU64::new(first_index),
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
        let mut seq = 0u32;
        let mut prev = None;
        for e in events {
            if prev != Some(e.index) {
                seq = 0;
                prev = Some(e.index);
            }
            batch.put_cf(events_cf, event_key(e.index, seq), codec::encode(e)?);
            seq += 1;
        }
        Ok(())
    }

    /// Adds to `batch` the removal of every event before `index`.
    pub fn drop_before(
        &self,
        db: &DB,
        batch: &mut WriteBatch,
        index: u64,
    ) -> Result<(), StoreError> {
        batch.delete_range_cf(cf(db, CF_EVENTS), event_key(0, 0), event_key(index, 0));
        batch.put_cf(cf(db, CF_SM_META), KEY_EVENTS_FROM, codec::encode(&index)?);
        Ok(())
    }

    /// Call after a batch staged with [`Self::stage`] or [`Self::drop_before`] is written:
    /// updates the retention mark to `first_index` (if given) and publishes `events`.
    pub fn written(&self, events: Vec<Event>, first_index: Option<u64>) {
        if let Some(i) = first_index {
            self.inner.first_index.fetch_max(i, Ordering::Relaxed);
        }
        if !events.is_empty() {
            // No subscribers is fine.
            let _ = self.inner.live.send(events.into());
        }
    }

    /// Where to drop events before, once the applied index reached `last_index` (every
    /// so often, keeping about `retain_entries` indexes); `None`: not yet.
    pub fn prune_mark(&self, last_index: u64) -> Option<u64> {
        let keep_from = last_index.saturating_sub(self.inner.retain_entries);
        (keep_from >= self.first_index() + PRUNE_EVERY).then_some(keep_from)
    }

    /// Live events from now on, in batches in log order.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<[Event]>> {
        self.inner.live.subscribe()
    }

    /// Events before this index are no longer stored.
    pub fn first_index(&self) -> u64 {
        self.inner.first_index.load(Ordering::Relaxed)
    }

    /// About `limit` (never splitting an entry) stored events of `key` with an index above `after`, in log order.
    pub fn read_after(
        &self,
        db: &DB,
        key: &Key,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let start = event_key(after.saturating_add(1), 0);
        let mut out = Vec::new();
        let iter = db.iterator_cf(
            cf(db, CF_EVENTS),
            IteratorMode::From(&start, rocksdb::Direction::Forward),
        );
        for item in iter {
            let (_, value) = item?;
            let event: Event = codec::decode(&value)?;
            if out.len() >= limit && out.last().is_some_and(|l: &Event| l.index != event.index) {
                // Never split one entry's events between two reads.
                break;
            }
            if &event.key == key {
                out.push(event);
            }
        }
        Ok(out)
    }
}

fn event_key(index: u64, seq: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&index.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}
