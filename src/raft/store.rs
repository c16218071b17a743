//! Opening the node's one RocksDB instance, its column families, and [`StoreError`].

use std::io;
use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Options, DB};

use crate::codec::CodecError;

/// Raft metadata: the vote and the last purged log id.
pub const CF_RAFT_META: &str = "raft_meta";
/// The Raft log, keyed by big-endian log index so that key order is index order.
pub const CF_LOG: &str = "log";
/// State-machine metadata: last applied log id, membership, cluster time.
pub const CF_SM_META: &str = "sm_meta";
/// One record per stored key (holder, queue, lock-delay), keyed by lock key.
pub const CF_LOCKS: &str = "locks";

/// Applied events, keyed by big-endian (log index, sequence); see `event_log`.
pub const CF_EVENTS: &str = "events";

const ALL_CFS: [&str; 5] = [CF_RAFT_META, CF_LOG, CF_SM_META, CF_LOCKS, CF_EVENTS];

/// A storage failure: RocksDB, the codec, or a broken on-disk invariant.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    #[error("io: {0}")]
    Io(#[from] io::Error),
    #[error("corrupt store: {0}")]
    Corrupt(String),
}

impl From<StoreError> for io::Error {
    fn from(e: StoreError) -> io::Error {
        match e {
            StoreError::Io(e) => e,
            StoreError::Codec(_) | StoreError::Corrupt(_) => {
                io::Error::new(io::ErrorKind::InvalidData, e)
            }
            StoreError::Rocks(_) => io::Error::other(e),
        }
    }
}

/// Opens (creating if needed) the node's database at `path`.
pub fn open_db(path: &Path) -> Result<Arc<DB>, StoreError> {
    std::fs::create_dir_all(path)?;
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    // The WAL is synced with fdatasync, which also makes its length durable; that is
    // all recovery needs.
    opts.set_use_fsync(false);
    opts.set_keep_log_file_num(4);
    let cfs = ALL_CFS
        .iter()
        .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
    let db = DB::open_cf_descriptors(&opts, path, cfs)?;
    Ok(Arc::new(db))
}

/// The handle of a column family that [`open_db`] created.
pub fn cf<'a>(db: &'a DB, name: &str) -> &'a ColumnFamily {
    db.cf_handle(name)
        .expect("open_db creates every column family this module names")
}

/// Syncs the write-ahead log: everything written before this call is durable after it.
pub fn sync_wal(db: &DB) -> Result<(), StoreError> {
    db.flush_wal(true)?;
    Ok(())
}

/// Big-endian bytes of a log index, so RocksDB's key order is index order.
pub fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// The log index of a key written by [`index_key`].
pub fn index_of_key(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("log key of {} bytes, expected 8", key.len())))?;
    Ok(u64::from_be_bytes(bytes))
}
