//! Opening the node's one RocksDB instance, its column families, and [`StoreError`].

use std::io;
use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, MemtableFactory, Options, SliceTransform, DB};

use crate::codec::CodecError;

/// Raft metadata: the vote and the last purged log id.
pub const CF_RAFT_META: &str = "raft_meta";
/// The Raft log, keyed by big-endian log index so that key order is index order.
pub const CF_LOG: &str = "log";
/// State-machine metadata: last applied log id, membership, cluster time.
pub const CF_SM_META: &str = "sm_meta";
/// One record per stored key (holder, queue, lock-delay), keyed by lock key.
pub const CF_LOCKS: &str = "locks";

/// The lock key of each applied event, keyed by big-endian (log index, sequence); see
/// `event_log`.
pub const CF_EVENTS: &str = "events";
/// Applied events, keyed by (lock key, log index, sequence); see `event_log`.
pub const CF_EVENTS_BY_KEY: &str = "events_by_key";

/// Table files RocksDB keeps open at once (it reopens others as needed).
pub const MAX_OPEN_FILES: i32 = 256;

/// Every column family of the database.
pub const ALL_CFS: [&str; 6] = [
    CF_RAFT_META,
    CF_LOG,
    CF_SM_META,
    CF_LOCKS,
    CF_EVENTS,
    CF_EVENTS_BY_KEY,
];

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

/// The start of `strerror(EMFILE)` ("Too many open files") and `strerror(ENFILE)`
/// ("Too many open files in system") in glibc and musl, which RocksDB puts in its I/O
/// errors (it reports no errno).
const OUT_OF_DESCRIPTORS_TEXT: &str = "Too many open files";

impl StoreError {
    /// Whether this is the process (`EMFILE`) or the system (`ENFILE`) running out of
    /// file descriptors: a condition that passes when descriptors are closed, unlike a
    /// bad disk or corrupt data. RocksDB reports it as an I/O error whose message
    /// carries the OS's text (`IO error: While open a file for random read: ...: Too
    /// many open files`).
    pub fn is_out_of_descriptors(&self) -> bool {
        match self {
            StoreError::Io(e) => matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)),
            StoreError::Rocks(e) => {
                e.kind() == rocksdb::ErrorKind::IOError
                    && AsRef::<str>::as_ref(e).contains(OUT_OF_DESCRIPTORS_TEXT)
            }
            StoreError::Codec(_) | StoreError::Corrupt(_) => false,
        }
    }
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
    // Bounded, so that the descriptors the node keeps for storage
    // (`serve::RESERVED_DESCRIPTORS`) are enough whatever clients do.
    opts.set_max_open_files(MAX_OPEN_FILES);
    // The hashed memtable of `events_by_key` (see `cf_options`) takes one writer at a
    // time; every write here already comes from one task (the log store's group commit,
    // the state machine's apply), so nothing waits on this.
    opts.set_allow_concurrent_memtable_write(false);
    let cfs = ALL_CFS
        .iter()
        .map(|name| ColumnFamilyDescriptor::new(*name, cf_options(name)));
    let db = DB::open_cf_descriptors(&opts, path, cfs)?;
    Ok(Arc::new(db))
}

/// Options of column family `name`.
///
/// The locks column family churns: every release or expiry deletes its key, and a
/// deleted key stays behind as a tombstone that every scan (snapshot build, start-up
/// load) steps over until compaction drops it. With the default 64 MB memtable, a
/// workload of short-lived locks left hundreds of thousands of tombstones in front of a
/// handful of live keys, and a snapshot of one key took 100-150 ms on every node every
/// 20,000 entries. A small memtable moves them to files soon, and files that are mostly
/// deletions are compacted, so scans cost in proportion to the live keys.
fn cf_options(name: &str) -> Options {
    let mut opts = Options::default();
    if name == CF_LOCKS {
        opts.set_write_buffer_size(LOCKS_MEMTABLE_BYTES);
    }
    // Retention deletes the by-key events one by one: the same churn.
    if name == CF_LOCKS || name == CF_EVENTS_BY_KEY {
        opts.add_compact_on_deletion_collector_factory(DELETION_WINDOW, DELETION_WINDOW / 2, 0.5);
    }
    // Every applied event lands at a random place of this family (its lock key comes
    // first), and an insert into RocksDB's default memtable, one skip list of the whole
    // 64 MB, missed the cache at every level: on the 64-connection benchmark that was
    // 4 % of a node's CPU, against 1 % for all other families together. Every read of
    // this family stays inside one lock key (`event_log::read_after`), so the memtable
    // can be a hash of small skip lists, one per lock key, found by the prefix up to the
    // key's `0x00` separator.
    if name == CF_EVENTS_BY_KEY {
        opts.set_prefix_extractor(SliceTransform::create(
            "baton.lock_key",
            lock_key_prefix,
            Some(has_lock_key_prefix),
        ));
        opts.set_memtable_factory(MemtableFactory::HashSkipList {
            bucket_count: EVENT_MEMTABLE_BUCKETS,
            height: 4,
            branching_factor: 4,
        });
    }
    opts
}

/// Hash buckets of the `events_by_key` memtable: more than the keys a busy node touches
/// between two flushes, at 8 bytes each.
const EVENT_MEMTABLE_BUCKETS: usize = 65_536;

/// The `events_by_key` prefix of `key`: its lock key and the `0x00` after it.
fn lock_key_prefix(key: &[u8]) -> &[u8] {
    match key.iter().position(|b| *b == 0) {
        Some(end) => &key[..=end],
        None => key,
    }
}

fn has_lock_key_prefix(key: &[u8]) -> bool {
    key.contains(&0)
}

/// Memtable size of the locks column family (RocksDB's default is 64 MB).
const LOCKS_MEMTABLE_BYTES: usize = 4 << 20;
/// Compact an SST file of the locks column family when half of any this many
/// consecutive entries, or half of all its entries, are deletions.
const DELETION_WINDOW: usize = 1024;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_of_descriptors_is_told_apart_from_other_storage_errors() {
        let emfile = StoreError::Io(io::Error::from_raw_os_error(libc::EMFILE));
        let enfile = StoreError::Io(io::Error::from_raw_os_error(libc::ENFILE));
        let eio = StoreError::Io(io::Error::from_raw_os_error(libc::EIO));
        let corrupt = StoreError::Corrupt("bad".into());
        assert!(emfile.is_out_of_descriptors());
        assert!(enfile.is_out_of_descriptors());
        assert!(!eio.is_out_of_descriptors());
        assert!(!corrupt.is_out_of_descriptors());
        // The OS's own text, as RocksDB quotes it.
        let text = io::Error::from_raw_os_error(libc::EMFILE).to_string();
        assert!(text.starts_with(OUT_OF_DESCRIPTORS_TEXT), "{text}");
    }

    #[test]
    fn rocksdb_out_of_descriptors_is_recognised_from_a_real_open() {
        // Opening a database in a directory that is a file is an I/O error of another
        // kind; it must not count as running out of descriptors.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let err = match rocksdb::DB::open_default(file.join("db")) {
            Err(e) => StoreError::Rocks(e),
            Ok(_) => panic!("a database under a file opened"),
        };
        assert!(!err.is_out_of_descriptors(), "{err}");
    }
}
