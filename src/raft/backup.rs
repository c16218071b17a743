//! Backup files (`baton snapshot save`) and building a data dir from one
//! (`baton snapshot restore`).
//!
//! # The file
//! ```text
//! BATON-BACKUP 1\n
//! {"storage_format":1,"cluster_id":"…","index":812,"term":3,"leader_node":1,"locks":40,"bytes":2731}\n
//! <bytes: postcard of (last log id, snapshot data)>
//! \nsha256 <64 hex digits of everything above>\n
//! ```
//! The header is for people (`head -2 FILE`) and is checked against the payload; the
//! trailer's checksum covers header and payload, so a truncated, extended or altered
//! file is refused before anything is decoded, and decoding errors are errors, not
//! panics. The payload is a snapshot as the leader built it (one RocksDB view: the table
//! and the log position it covers, see `snapshot`), taken after a read-index round, so it
//! holds every write acknowledged before the save was asked for.
//!
//! # Restoring
//! [`restore`] makes a data dir from which a *new* cluster starts: the snapshot is
//! installed as the state machine's, the log is empty up to the snapshot's index (its
//! entries are "purged"), and the membership is the config's `[[nodes]]`. The first
//! leader writes at index + 1, and since a fencing token is the log index of its grant,
//! every token handed out after a restore is above every token in the backup. `above`
//! raises that floor (the old cluster's last index, when it went on after the backup),
//! so that no token an old holder may still present is handed out again.
//!
//! The new cluster's id is derived from the backup's checksum and the config's members,
//! so every node restored from one file with one config agrees on it without talking,
//! and it is never the backed-up cluster's: the old cluster's nodes cannot talk to the
//! new ones (see `data_dir`). A `raft.cluster_id` in the config is taken instead,
//! unless it is the backed-up cluster's.
//!
//! # Caveats
//! - The file is built in memory, as snapshots are (see `raft`'s caveats).
//! - Restoring on one node and starting the others empty also works (the leader sends
//!   them the snapshot); restoring every node avoids that transfer.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::path::Path;

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::data_dir::{ClusterId, DataDirError, Identity, FORMAT_VERSION};
use super::event_log::EventLog;
use super::log_store::LogStore;
use super::state_machine::StateMachine;
use super::store::{open_db, sync_wal, StoreError};
use super::typ::{LogId, SnapshotMeta, StoredMembership, Vote};
use super::NodeAddr;
use crate::codec;
use crate::config::Config;
use crate::locks::LockTable;
use crate::NodeId;

/// First line of a backup file: what it is and the version of this layout.
pub const MAGIC: &[u8] = b"BATON-BACKUP 1\n";
/// What precedes the checksum at the end of a file.
const TRAILER_PREFIX: &[u8] = b"\nsha256 ";
/// Length of the trailer: prefix, 64 hex digits, newline.
const TRAILER_LEN: usize = TRAILER_PREFIX.len() + 64 + 1;
/// Retained events a restored node starts with (none: its history begins at the backup).
const EVENT_RETENTION_ENTRIES: u64 = 1_000_000;

/// The header line: what the backup covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupHeader {
    /// Storage format of the data the payload holds (`data_dir::FORMAT_VERSION`).
    pub storage_format: u32,
    /// The backed-up cluster's id.
    pub cluster_id: Option<ClusterId>,
    /// The last log index the backup covers: every token in it is at most this.
    pub index: u64,
    /// Term of that entry.
    pub term: u64,
    /// The node that led that term.
    pub leader_node: NodeId,
    /// Keys stored (held, queued or in lock-delay).
    pub locks: usize,
    /// Length of the payload in bytes.
    pub bytes: u64,
}

/// A checked backup: its header, the log id it covers and the table data.
#[derive(Debug)]
pub struct Backup {
    pub header: BackupHeader,
    pub last_log_id: LogId,
    pub data: Vec<u8>,
    /// SHA-256 of the file (its trailer), hex.
    pub checksum: String,
}

/// A file that is not a backup this Baton can restore, or a restore that cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("not a Baton backup file (it does not start with {:?})", String::from_utf8_lossy(MAGIC).trim())]
    NotABackup,
    #[error("the backup is truncated or damaged: {0}")]
    Damaged(String),
    #[error("the backup's checksum does not match: expected {expected}, the file hashes to {found} (damaged or truncated)")]
    Checksum { expected: String, found: String },
    #[error("the backup holds storage format {found}, but this Baton reads format {FORMAT_VERSION}; restore it with the Baton version that saved it")]
    Format { found: u32 },
    #[error("the backup has no log position (an empty cluster): nothing to restore")]
    Empty,
    #[error("{0}")]
    Target(String),
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("storage: {0}")]
    Io(#[from] std::io::Error),
}

/// The payload: openraft's position and the table as a snapshot encodes it.
#[derive(Serialize, Deserialize)]
struct Payload {
    last_log_id: LogId,
    data: Vec<u8>,
}

/// Writes the backup file of snapshot `meta` + `data` of cluster `cluster_id`.
pub fn encode(
    meta: &SnapshotMeta,
    data: Vec<u8>,
    cluster_id: Option<ClusterId>,
) -> Result<Vec<u8>, BackupError> {
    let last_log_id = meta.last_log_id.ok_or(BackupError::Empty)?;
    let locks = super::snapshot::decode_table(&data)?.keys.len();
    let payload = codec::encode(&Payload { last_log_id, data }).map_err(StoreError::from)?;
    let header = BackupHeader {
        storage_format: FORMAT_VERSION,
        cluster_id,
        index: last_log_id.index,
        term: last_log_id.leader_id.term,
        leader_node: last_log_id.leader_id.node_id,
        locks,
        bytes: payload.len() as u64,
    };
    let mut out = MAGIC.to_vec();
    serde_json::to_writer(&mut out, &header)
        .map_err(|e| BackupError::Damaged(format!("cannot encode the header: {e}")))?;
    out.push(b'\n');
    out.extend_from_slice(&payload);
    let sum = hex(&Sha256::digest(&out));
    out.extend_from_slice(TRAILER_PREFIX);
    out.extend_from_slice(sum.as_bytes());
    out.push(b'\n');
    Ok(out)
}

/// Checks and decodes a backup file.
pub fn decode(file: &[u8]) -> Result<Backup, BackupError> {
    if !file.starts_with(MAGIC) {
        return Err(BackupError::NotABackup);
    }
    let damaged = |m: &str| BackupError::Damaged(m.to_string());
    if file.len() < MAGIC.len() + TRAILER_LEN {
        return Err(damaged("the file ends before its checksum"));
    }
    let (body, trailer) = file.split_at(file.len() - TRAILER_LEN);
    let expected = trailer
        .strip_prefix(TRAILER_PREFIX)
        .and_then(|t| t.strip_suffix(b"\n"))
        .and_then(|t| std::str::from_utf8(t).ok())
        .filter(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| damaged("the file does not end with its checksum line"))?;
    let found = hex(&Sha256::digest(body));
    if !found.eq_ignore_ascii_case(expected) {
        return Err(BackupError::Checksum {
            expected: expected.to_string(),
            found,
        });
    }
    let rest = &body[MAGIC.len()..];
    let end = rest
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| damaged("no header line"))?;
    let header: BackupHeader = serde_json::from_slice(&rest[..end])
        .map_err(|e| BackupError::Damaged(format!("header: {e}")))?;
    if header.storage_format != FORMAT_VERSION {
        return Err(BackupError::Format {
            found: header.storage_format,
        });
    }
    let payload = &rest[end + 1..];
    if payload.len() as u64 != header.bytes {
        return Err(BackupError::Damaged(format!(
            "the header announces {} payload bytes, the file has {}",
            header.bytes,
            payload.len()
        )));
    }
    let Payload { last_log_id, data } =
        codec::decode(payload).map_err(|e| BackupError::Damaged(format!("payload: {e}")))?;
    if last_log_id.index != header.index
        || last_log_id.leader_id.term != header.term
        || last_log_id.leader_id.node_id != header.leader_node
    {
        return Err(damaged(
            "the header and the payload name different log positions",
        ));
    }
    // The table must load as a node would load it.
    let table = super::snapshot::decode_table(&data)?;
    LockTable::from_snapshot(table).map_err(|e| BackupError::Damaged(format!("table: {e}")))?;
    Ok(Backup {
        header,
        last_log_id,
        data,
        checksum: found,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What [`restore`] made.
#[derive(Debug)]
pub struct Restored {
    pub cluster_id: ClusterId,
    /// The index the restored log starts after: the first token handed out is above it.
    pub index: u64,
}

/// The new cluster's id for `backup` restored into `config` (see the module docs).
pub fn new_cluster_id(backup: &Backup, config: &Config) -> Result<ClusterId, BackupError> {
    if let Some(pinned) = &config.raft.cluster_id {
        if Some(pinned) == backup.header.cluster_id.as_ref() {
            return Err(BackupError::Target(format!(
                "raft.cluster_id in the config is {pinned}, the backed-up cluster's id; a restored cluster needs a new one: set another raft.cluster_id, or remove it"
            )));
        }
        return Ok(pinned.clone());
    }
    let mut h = Sha256::new();
    h.update(b"baton restore\0");
    h.update(backup.checksum.as_bytes());
    for n in &config.nodes {
        h.update(format!("\0{}={}", n.id, n.raft).as_bytes());
    }
    let id = hex(&h.finalize()[..16]);
    Ok(ClusterId::parse(&id).expect("32 hex digits are a cluster id"))
}

/// Builds node `node`'s data dir `dir` (which must be empty or absent) from `backup`, as
/// a member of the cluster `config` describes, with its log continuing above
/// `max(backup index, above)`.
pub async fn restore(
    backup: &Backup,
    config: &Config,
    node: NodeId,
    dir: &Path,
    above: u64,
) -> Result<Restored, BackupError> {
    let not_empty = std::fs::read_dir(dir)
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false);
    if not_empty {
        return Err(BackupError::Target(format!(
            "data dir {} is not empty; restore into an empty one (move this one away)",
            dir.display()
        )));
    }
    let cluster_id = new_cluster_id(backup, config)?;
    Identity::open(dir, Some(&cluster_id))?;
    let mut last = backup.last_log_id;
    last.index = last.index.max(above);
    let members: BTreeMap<NodeId, NodeAddr> = config
        .nodes
        .iter()
        .map(|n| {
            let addr = NodeAddr {
                raft: n.raft.clone(),
                api: n.api.clone(),
            };
            (n.id, addr)
        })
        .collect();
    let voters: BTreeSet<NodeId> = members.keys().copied().collect();
    let membership = openraft::Membership::new(vec![voters], members)
        .map_err(|e| BackupError::Target(format!("the config's members: {e}")))?;
    let meta = SnapshotMeta {
        last_log_id: Some(last),
        last_membership: StoredMembership::new(Some(last), membership),
    };
    let db = open_db(&dir.join("db"))?;
    {
        let events = EventLog::open(&db, EVENT_RETENTION_ENTRIES)?;
        let mut sm = StateMachine::open(db.clone(), dir.join("snapshots"), events)?;
        sm.install_snapshot(&meta, Cursor::new(backup.data.clone()))
            .await?;
        let mut log = LogStore::open(db.clone())?;
        // As if this node had voted in the backup's last term: the first election of the
        // new cluster is in a later one.
        let vote = Vote::new(last.leader_id.term, last.leader_id.node_id);
        log.save_vote(&vote).await?;
        log.purge(last).await?;
    }
    sync_wal(&db)?;
    // Closed before returning: a database still open at process exit races RocksDB's
    // threads against static destructors (see `node::lifecycle`).
    db.cancel_all_background_work(true);
    drop(db);
    tracing::info!(node, index = last.index, cluster_id = %cluster_id, "restored");
    Ok(Restored {
        cluster_id,
        index: last.index,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locks::{Command, Key, Owner};
    use openraft::vote::RaftLeaderId;

    fn snapshot_of(locks: u64) -> (SnapshotMeta, Vec<u8>) {
        let mut table = LockTable::default();
        for i in 1..=locks {
            let cmd = Command::acquire(
                Key::parse(format!("k{i}")).unwrap(),
                Owner::parse("o").unwrap(),
                60_000,
                i * 10,
            );
            table.apply(i, &cmd);
        }
        let data = codec::encode(&table.to_snapshot()).unwrap();
        let leader = openraft::impls::leader_id_adv::LeaderId::new(3, 2).to_committed();
        let meta = SnapshotMeta {
            last_log_id: Some(LogId::new(leader, locks)),
            last_membership: StoredMembership::default(),
        };
        (meta, data)
    }

    #[test]
    fn a_backup_decodes_to_what_was_encoded() {
        let (meta, data) = snapshot_of(5);
        let file = encode(&meta, data.clone(), Some(ClusterId::parse("c1").unwrap())).unwrap();
        let backup = decode(&file).unwrap();
        assert_eq!(backup.last_log_id, meta.last_log_id.unwrap());
        assert_eq!(backup.data, data);
        assert_eq!(backup.header.index, 5);
        assert_eq!(backup.header.term, 3);
        assert_eq!(backup.header.leader_node, 2);
        assert_eq!(backup.header.locks, 5);
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_refused_without_a_panic() {
        let (meta, data) = snapshot_of(3);
        let file = encode(&meta, data, None).unwrap();
        for len in 0..file.len() {
            assert!(decode(&file[..len]).is_err(), "truncated to {len}");
        }
        for i in 0..file.len() {
            let mut bad = file.clone();
            bad[i] ^= 0x01;
            assert!(decode(&bad).is_err(), "byte {i} flipped");
        }
        let mut longer = file.clone();
        longer.push(b'\n');
        assert!(decode(&longer).is_err());
    }
}
