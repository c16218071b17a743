//! Building, storing and installing snapshots of the lock table.
//!
//! A snapshot is the postcard encoding of a [`TableSnapshot`] (cluster time and every
//! stored grant); openraft carries its [`SnapshotMeta`] beside it. It is built from one
//! RocksDB snapshot, so the meta (last applied id, membership) and the data describe the
//! same point in the log: reading meta first and data later could pair a log position
//! with a state that already includes later entries.
//!
//! The newest snapshot is kept as one file, `snapshot-<index>.bin` in the node's snapshot
//! directory, written to a temporary name, synced and renamed, so a crash never leaves a
//! torn snapshot behind; older files are removed once the new one is in place.

use std::fs;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::RaftSnapshotBuilder;
use rocksdb::{IteratorMode, DB};
use serde::{Deserialize, Serialize};

use super::state_machine::{read_sm_meta_at, SmMeta};
use super::store::{cf, StoreError, CF_LOCKS};
use super::typ::{Snapshot, SnapshotMeta};
use super::TypeConfig;
use crate::codec;
use crate::locks::{KeyState, TableSnapshot};

const FILE_PREFIX: &str = "snapshot-";
const FILE_SUFFIX: &str = ".bin";

/// What a snapshot file holds: openraft's meta and the encoded table.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// Builds snapshots from the database; runs beside `apply`.
pub struct SnapshotBuilder {
    pub(super) db: Arc<DB>,
    pub(super) dir: PathBuf,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(&mut self) -> Result<Snapshot, std::io::Error> {
        let db = self.db.clone();
        let dir = self.dir.clone();
        let started = std::time::Instant::now();
        let (snapshot, locks) = tokio::task::spawn_blocking(move || build(&db, &dir))
            .await
            .map_err(std::io::Error::other)??;
        tracing::info!(
            index = snapshot.meta.last_log_id.as_ref().map(|l| l.index),
            locks,
            bytes = snapshot.snapshot.get_ref().len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "built snapshot"
        );
        Ok(snapshot)
    }
}

/// Reads meta and locks through one RocksDB snapshot, encodes them and stores the file.
/// Returns the snapshot and the number of locks in it.
fn build(db: &DB, dir: &Path) -> Result<(Snapshot, usize), StoreError> {
    let view = db.snapshot();
    let SmMeta {
        last_applied,
        membership,
        now_ms,
    } = read_sm_meta_at(|key| view.get_cf(cf(db, super::store::CF_SM_META), key))?;
    let mut keys: Vec<KeyState> = Vec::new();
    for item in view.iterator_cf(cf(db, CF_LOCKS), IteratorMode::Start) {
        let (_, value) = item?;
        keys.push(codec::decode(&value)?);
    }
    let locks = keys.iter().filter(|k| k.holder.is_some()).count();
    let data = codec::encode(&TableSnapshot { now_ms, keys })?;
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
        locks,
    ))
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
