//! Building, storing and installing snapshots of the lock table.
//!
//! A snapshot is the postcard encoding of a [`TableSnapshot`] (cluster time and every
//! stored key's state); openraft carries its [`SnapshotMeta`] beside it. It is built from one
//! RocksDB snapshot, so the meta (last applied id, membership) and the data describe the
//! same point in the log: reading meta first and data later could pair a log position
//! with a state that already includes later entries.
//!
//! The newest snapshot is kept as one file, `snapshot-<index>.bin` in the node's snapshot
//! directory, written to a temporary name, synced and renamed, so a crash never leaves a
//! torn snapshot behind; older files are removed once the new one is in place.
//!
//! A build that runs out of file descriptors (`EMFILE`/`ENFILE`, from RocksDB opening a
//! table file or from the snapshot file itself) is retried with backoff instead of
//! failing: a failed build is a storage error, which stops Raft on this node
//! (fail-stop), and nothing is at stake in a build — it reads a consistent view and
//! publishes nothing until its file is complete and synced. Descriptors come back when
//! connections close; the next attempt starts over from a new view. Between attempts
//! the builder holds no handle on the database, so a node that shuts down meanwhile
//! closes it and the build ends. Any other error is still returned (fail-stop).

use std::fs;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::Weak;
use std::time::Duration;

use openraft::RaftSnapshotBuilder;
use rocksdb::{IteratorMode, DB};
use serde::{Deserialize, Serialize};

use super::state_machine::{read_sm_meta_at, SmMeta};
use super::store::{cf, StoreError, CF_LOCKS};
use super::typ::{Snapshot, SnapshotMeta};
use super::TypeConfig;
use crate::codec;
use crate::locks::TableSnapshot;

const FILE_PREFIX: &str = "snapshot-";
const FILE_SUFFIX: &str = ".bin";

/// What a snapshot file holds: openraft's meta and the encoded table.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// First pause before retrying a build that ran out of descriptors; it doubles up to
/// [`RETRY_MAX_PAUSE`].
pub const RETRY_FIRST_PAUSE: Duration = Duration::from_millis(100);
/// Longest pause between attempts of a build that runs out of descriptors.
pub const RETRY_MAX_PAUSE: Duration = Duration::from_secs(5);

/// Builds snapshots from the database; runs beside `apply`.
pub struct SnapshotBuilder {
    /// The state machine's database; weak, so that a build waiting to retry does not
    /// keep a closing node's database open.
    pub(super) db: Weak<DB>,
    pub(super) dir: PathBuf,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(&mut self) -> Result<Snapshot, std::io::Error> {
        let started = std::time::Instant::now();
        let mut pause = RETRY_FIRST_PAUSE;
        let mut attempt = 1u32;
        let (snapshot, keys) = loop {
            let db = self.db.upgrade().ok_or_else(|| {
                std::io::Error::other("the database was closed while a snapshot was built")
            })?;
            let dir = self.dir.clone();
            let built = tokio::task::spawn_blocking(move || build(&db, &dir))
                .await
                .map_err(std::io::Error::other)?;
            match built {
                Ok(built) => break built,
                Err(e) if e.is_out_of_descriptors() => {
                    tracing::warn!(
                        error = %e,
                        attempt,
                        retry_in_ms = pause.as_millis() as u64,
                        "cannot build a snapshot: out of file descriptors; retrying"
                    );
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RETRY_MAX_PAUSE);
                    attempt += 1;
                }
                Err(e) => return Err(e.into()),
            }
        };
        crate::metrics::metrics().snapshot_built(started.elapsed());
        tracing::info!(
            index = snapshot.meta.last_log_id.as_ref().map(|l| l.index),
            keys,
            bytes = snapshot.snapshot.get_ref().len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "built snapshot"
        );
        Ok(snapshot)
    }
}

/// Reads meta and key states through one RocksDB snapshot, encodes them and stores the
/// file. Returns the snapshot and the number of keys in it.
fn build(db: &DB, dir: &Path) -> Result<(Snapshot, usize), StoreError> {
    let view = db.snapshot();
    let SmMeta {
        last_applied,
        membership,
        now_ms,
    } = read_sm_meta_at(|key| view.get_cf(cf(db, super::store::CF_SM_META), key))?;
    let (data, keys) = encode_table(
        now_ms,
        view.iterator_cf(cf(db, CF_LOCKS), IteratorMode::Start)
            .map(|item| item.map(|(_, value)| value)),
    )?;
    let meta = SnapshotMeta {
        last_log_id: last_applied,
        last_membership: membership,
    };
    save(dir, &meta, &data)?;
    Ok((
        Snapshot {
            meta,
            snapshot: Cursor::new(data),
        },
        keys,
    ))
}

/// The encoding of `TableSnapshot { now_ms, keys }` made from the stored encodings of
/// the key states, without decoding them ([`codec::append_encoded_seq`]). Decoding and
/// re-encoding a million key states took most of a snapshot's build time; the result is
/// checked against `codec::encode` in the tests. A corrupt stored state is not caught
/// here but where it is decoded: by a node installing the snapshot, which refuses it,
/// and at start-up, which decodes every stored state. Returns the data and the number
/// of keys.
fn encode_table<V: AsRef<[u8]>>(
    now_ms: u64,
    stored_states: impl Iterator<Item = Result<V, rocksdb::Error>>,
) -> Result<(Vec<u8>, usize), StoreError> {
    let mut states = Vec::new();
    let mut count = 0usize;
    for value in stored_states {
        states.extend_from_slice(value?.as_ref());
        count += 1;
    }
    let mut data = codec::encode(&now_ms)?;
    codec::append_encoded_seq(&mut data, count, &states)?;
    Ok((data, count))
}

/// Decodes snapshot data received from a leader. Bad bytes are an error, never a panic.
pub fn decode_table(data: &[u8]) -> Result<TableSnapshot, StoreError> {
    Ok(codec::decode(data)?)
}

fn file_name(meta: &SnapshotMeta) -> String {
    let index = meta.last_log_id.as_ref().map_or(0, |l| l.index);
    format!("{FILE_PREFIX}{index:020}{FILE_SUFFIX}")
}

/// Stores a snapshot durably as the node's current one and removes older files.
pub fn save(dir: &Path, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StoreError> {
    fs::create_dir_all(dir)?;
    let name = file_name(meta);
    let tmp = dir.join(format!("{name}.tmp"));
    let bytes = codec::encode(&SnapshotFile {
        meta: meta.clone(),
        data: data.to_vec(),
    })?;
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(&name))?;
    fs::File::open(dir)?.sync_all()?;
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let other = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if other.starts_with(FILE_PREFIX) && other != name {
            fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// The newest stored snapshot, if any.
pub fn load_current(dir: &Path) -> Result<Option<Snapshot>, StoreError> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(None);
    };
    let mut newest: Option<PathBuf> = None;
    for entry in entries {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with(FILE_PREFIX)
            && name.ends_with(FILE_SUFFIX)
            && newest.as_ref().is_none_or(|n| path > *n)
        {
            newest = Some(path);
        }
    }
    let Some(path) = newest else {
        return Ok(None);
    };
    let file: SnapshotFile = codec::decode(&fs::read(&path)?)?;
    Ok(Some(Snapshot {
        meta: file.meta,
        snapshot: Cursor::new(file.data),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locks::{AcquireOptions, Command, Key, KeyState, LockTable, Owner};

    /// A table with `n` held keys; every third key also has a waiter and a lock-delay,
    /// so that the states differ in shape.
    fn table(n: u64) -> LockTable {
        let mut table = LockTable::default();
        let mut index = 1;
        for i in 0..n {
            let key = Key::parse(format!("key-{i}")).unwrap();
            let options = AcquireOptions {
                ttl_ms: 10_000 + i,
                wait_ms: 0,
                lock_delay_ms: if i % 3 == 0 { 500 } else { 0 },
            };
            let holder = Owner::parse("holder").unwrap();
            table.apply(
                index,
                &Command::acquire_with(key.clone(), holder, options, 1_000),
            );
            index += 1;
            if i % 3 == 0 {
                let waiting = AcquireOptions {
                    wait_ms: 5_000,
                    ..options
                };
                let waiter = Owner::parse("waiter").unwrap();
                table.apply(index, &Command::acquire_with(key, waiter, waiting, 1_000));
                index += 1;
            }
        }
        table
    }

    #[test]
    fn joined_stored_states_equal_the_encoded_table() {
        // 0, 1 and 200 keys: the sequence length is a one- and a two-byte varint.
        for n in [0, 1, 200] {
            let table = table(n);
            let states: Vec<KeyState> = table.states().cloned().collect();
            let stored = states
                .iter()
                .map(|s| Ok::<_, rocksdb::Error>(codec::encode(s).unwrap()));
            let (data, count) = encode_table(table.now_ms(), stored).unwrap();
            assert_eq!(count, states.len());
            let expected = codec::encode(&TableSnapshot {
                now_ms: table.now_ms(),
                keys: states.clone(),
            })
            .unwrap();
            assert_eq!(data, expected, "{n} keys");
            let decoded = decode_table(&data).unwrap();
            assert_eq!(decoded.keys, states);
            assert_eq!(LockTable::from_snapshot(decoded).unwrap(), table);
        }
    }
}
