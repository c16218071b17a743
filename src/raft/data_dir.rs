//! The data dir's identity: its storage format version and the cluster it belongs to,
//! recorded in [`META_FILE`] beside the database and checked before RocksDB is opened.
//!
//! # Format version
//! [`FORMAT_VERSION`] names everything a node reads back from disk: the column families
//! and their keys, the postcard encodings of log entries, votes, lock records, events
//! and snapshot files. A node refuses a data dir of another version (or one without the
//! file that has a database: written before versioning) with a message naming both, and
//! never gets as far as a decode error. Changing any of those encodings means raising
//! the version and either migrating the old one here or refusing it;
//! `tests/storage_format.rs` opens a data dir written by version 1 to hold that line.
//!
//! # Cluster id
//! Made once, when a cluster is initialised: random, or `raft.cluster_id` when the config
//! pins one. It is not an entry of the Raft log but the identity *of* that log, carried
//! in a header ([`CLUSTER_HEADER`]) on every Raft RPC (`network`). A receiver with an id
//! refuses RPCs of another id (`rpc_server`); a fresh receiver adopts the
//! first id it is sent, and writes it to its data dir (synced) before it handles the
//! request, so every node that holds a byte of the log also holds the log's id. A node
//! of another cluster (a stale data dir, a wrong address in `[[nodes]]`, an old member
//! after a restore from a backup) can thus neither vote nor replicate here.
//!
//! With `raft.cluster_id` set, a node also refuses at start-up a data dir that records
//! another id, and a fresh node takes that id at once.
//!
//! # Caveats
//! - An RPC without an id is served: only a node that has none sends it, a fresh one,
//!   which has no log to push and no term to raise. The check is against mistakes (a
//!   stale data dir, a wrong address); strangers are kept out by the secret.
//! - Without `raft.cluster_id`, a fresh node belongs to whichever cluster reaches it
//!   first (as etcd's members do).
//! - The file is small TOML written by Baton; a damaged one is refused, not repaired.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::sync::LockUnpoisoned;

/// The storage format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// The data dir's record of its format and cluster, beside `db/` and `snapshots/`.
pub const META_FILE: &str = "baton-data-dir.toml";

/// Header carrying the sender's cluster id on every Raft RPC.
pub const CLUSTER_HEADER: &str = "x-baton-cluster";

/// Longest cluster id (a pinned one; generated ids are 32 hex digits).
const MAX_ID_LEN: usize = 64;

/// What to do when a data dir is not this node's: said in every refusal.
const MOVE_AWAY: &str = "or move the data dir away and start this node with an empty one \
     (it then catches up from the cluster, or initialises a new one)";

/// A cluster's identity: 1-64 characters of `[A-Za-z0-9._-]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClusterId(String);

impl ClusterId {
    /// A new random id (128 bits, as 32 hex digits).
    pub fn random() -> ClusterId {
        use rand::RngCore;
        let mut bytes = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        ClusterId(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Parses an id; the error says what is wrong with it.
    pub fn parse(s: &str) -> Result<ClusterId, String> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if s.is_empty() || s.len() > MAX_ID_LEN || !s.chars().all(allowed) {
            return Err(format!(
                "cluster id {s:?} must be 1-{MAX_ID_LEN} characters of A-Z a-z 0-9 . _ -"
            ));
        }
        Ok(ClusterId(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ClusterId {
    type Error = String;
    fn try_from(s: String) -> Result<ClusterId, String> {
        ClusterId::parse(&s)
    }
}

impl From<ClusterId> for String {
    fn from(id: ClusterId) -> String {
        id.0
    }
}

impl std::fmt::Display for ClusterId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A data dir that this node must not use, or cannot read the identity of.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error(
        "data dir {dir} is in storage format {found}, but this Baton ({version}) reads format \
         {FORMAT_VERSION} only; run the Baton version that wrote it, {MOVE_AWAY}",
        version = env!("CARGO_PKG_VERSION")
    )]
    Format { dir: PathBuf, found: u32 },
    #[error(
        "data dir {dir} has a database but no {META_FILE}: it was written by a Baton from \
         before storage versioning, or the file was removed; {MOVE_AWAY}"
    )]
    Unversioned { dir: PathBuf },
    #[error(
        "data dir {dir} belongs to cluster {found}, but raft.cluster_id in the config is \
         {expected}; point data_dir at this cluster's data, correct raft.cluster_id, {MOVE_AWAY}"
    )]
    OtherCluster {
        dir: PathBuf,
        found: ClusterId,
        expected: ClusterId,
    },
    #[error(
        "{path} is damaged ({reason}); it records the data dir's format and cluster: {MOVE_AWAY}"
    )]
    Damaged { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The contents of [`META_FILE`].
#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    format: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cluster_id: Option<ClusterId>,
}

/// Whether an RPC's cluster id may be served here (see [`Identity::admit`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Same cluster (or neither side has an id yet).
    Same,
    /// This node was fresh and now belongs to the sender's cluster.
    Adopted(ClusterId),
    /// Another cluster: refused.
    Refused { ours: ClusterId, theirs: ClusterId },
}

/// The checked identity of one node's data dir; shared by the RPC client and server.
#[derive(Debug)]
pub struct Identity {
    path: PathBuf,
    id: Mutex<Option<ClusterId>>,
}

impl Identity {
    /// Checks the data dir `dir` (creating its record if it is new) against this build's
    /// format and against `pinned`, the configured `raft.cluster_id`.
    pub fn open(dir: &Path, pinned: Option<&ClusterId>) -> Result<Arc<Identity>, DataDirError> {
        let path = dir.join(META_FILE);
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| DataDirError::Io { path, source }
        };
        let meta = match fs::read(&path) {
            Ok(bytes) => Some(parse(&path, &bytes)?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(&path)(e)),
        };
        let id = match meta {
            Some(meta) if meta.format != FORMAT_VERSION => {
                return Err(DataDirError::Format {
                    dir: dir.to_owned(),
                    found: meta.format,
                })
            }
            Some(meta) => meta.cluster_id,
            None if dir.join("db").exists() => {
                return Err(DataDirError::Unversioned {
                    dir: dir.to_owned(),
                })
            }
            None => None,
        };
        let identity = Identity {
            path: path.clone(),
            id: Mutex::new(id.clone()),
        };
        match (id, pinned) {
            (Some(found), Some(expected)) if found != *expected => {
                return Err(DataDirError::OtherCluster {
                    dir: dir.to_owned(),
                    found,
                    expected: expected.clone(),
                })
            }
            (Some(_), _) => {}
            (None, pinned) => {
                // New (or fresh, never joined): record the format now, and the pinned id.
                fs::create_dir_all(dir).map_err(io_err(dir))?;
                write(&path, pinned).map_err(io_err(&path))?;
                *identity.id.lock_unpoisoned() = pinned.cloned();
            }
        }
        Ok(Arc::new(identity))
    }

    /// This node's cluster id, if it has one yet.
    pub fn cluster_id(&self) -> Option<ClusterId> {
        self.id.lock_unpoisoned().clone()
    }

    /// The id of the cluster this node is about to initialise: its own if it has one,
    /// else a new random one, recorded first.
    pub fn for_initialise(&self) -> Result<ClusterId, DataDirError> {
        let mut id = self.id.lock_unpoisoned();
        if let Some(id) = &*id {
            return Ok(id.clone());
        }
        let new = ClusterId::random();
        write(&self.path, Some(&new)).map_err(|source| DataDirError::Io {
            path: self.path.clone(),
            source,
        })?;
        *id = Some(new.clone());
        Ok(new)
    }

    /// Decides on an RPC sent by a node of cluster `theirs`; a fresh node adopts it,
    /// recorded (synced) before this returns.
    pub fn admit(&self, theirs: Option<ClusterId>) -> Result<Admission, DataDirError> {
        let mut id = self.id.lock_unpoisoned();
        match (&*id, theirs) {
            (Some(ours), Some(theirs)) if *ours != theirs => Ok(Admission::Refused {
                ours: ours.clone(),
                theirs,
            }),
            (Some(_), _) | (None, None) => Ok(Admission::Same),
            (None, Some(theirs)) => {
                write(&self.path, Some(&theirs)).map_err(|source| DataDirError::Io {
                    path: self.path.clone(),
                    source,
                })?;
                *id = Some(theirs.clone());
                Ok(Admission::Adopted(theirs))
            }
        }
    }
}

/// Parses a [`META_FILE`]: the format first, so that a future layout is reported as a
/// format and not as damage.
fn parse(path: &Path, bytes: &[u8]) -> Result<Meta, DataDirError> {
    let damaged = |reason: String| DataDirError::Damaged {
        path: path.to_owned(),
        reason,
    };
    let text = std::str::from_utf8(bytes).map_err(|_| damaged("not UTF-8 text".into()))?;
    let table: toml::Table = text.parse().map_err(|e| damaged(format!("{e}")))?;
    let format = match table.get("format") {
        Some(toml::Value::Integer(v)) => {
            u32::try_from(*v).map_err(|_| damaged(format!("format {v} is out of range")))?
        }
        Some(other) => return Err(damaged(format!("format is {other}, not a number"))),
        None => return Err(damaged("no format".into())),
    };
    if format != FORMAT_VERSION {
        return Ok(Meta {
            format,
            cluster_id: None,
        });
    }
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| damaged(e.message().to_string()))
}

/// Writes the record with `id` to `path` atomically: a temporary file, synced, renamed,
/// and the directory synced, so a crash leaves the old record or the new one.
fn write(path: &Path, id: Option<&ClusterId>) -> io::Result<()> {
    let meta = Meta {
        format: FORMAT_VERSION,
        cluster_id: id.cloned(),
    };
    let body = toml::to_string(&meta).map_err(io::Error::other)?;
    let text = format!(
        "# Baton's record of this data dir: its storage format and the cluster it belongs to.\n\
         # Written by Baton; do not edit.\n{body}"
    );
    let tmp = path.with_extension("toml.tmp");
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ClusterId {
        ClusterId::parse(s).unwrap()
    }

    #[test]
    fn a_new_dir_is_recorded_and_adopts_the_first_cluster_that_reaches_it() {
        let dir = tempfile::tempdir().unwrap();
        let identity = Identity::open(dir.path(), None).unwrap();
        assert_eq!(identity.cluster_id(), None);
        assert!(dir.path().join(META_FILE).exists());
        assert_eq!(identity.admit(None).unwrap(), Admission::Same);
        assert_eq!(
            identity.admit(Some(id("a"))).unwrap(),
            Admission::Adopted(id("a"))
        );
        assert_eq!(identity.admit(Some(id("a"))).unwrap(), Admission::Same);
        assert_eq!(
            identity.admit(Some(id("b"))).unwrap(),
            Admission::Refused {
                ours: id("a"),
                theirs: id("b")
            }
        );
        assert_eq!(identity.admit(None).unwrap(), Admission::Same);
        // The adoption is on disk.
        let reopened = Identity::open(dir.path(), None).unwrap();
        assert_eq!(reopened.cluster_id(), Some(id("a")));
        assert_eq!(reopened.for_initialise().unwrap(), id("a"));
    }

    #[test]
    fn a_pinned_id_is_taken_by_a_new_dir_and_another_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pinned = Identity::open(dir.path(), Some(&id("prod-1"))).unwrap();
        assert_eq!(pinned.cluster_id(), Some(id("prod-1")));
        let err = Identity::open(dir.path(), Some(&id("prod-2"))).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, DataDirError::OtherCluster { .. }), "{text}");
        assert!(text.contains("prod-1") && text.contains("prod-2"), "{text}");
        assert!(text.contains("move the data dir away"), "{text}");
        Identity::open(dir.path(), None).unwrap();
    }

    #[test]
    fn initialising_makes_one_random_id_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let identity = Identity::open(dir.path(), None).unwrap();
        let made = identity.for_initialise().unwrap();
        assert_eq!(made.as_str().len(), 32);
        assert_eq!(identity.for_initialise().unwrap(), made);
        assert_ne!(ClusterId::random(), made);
    }

    #[test]
    fn another_format_a_missing_record_and_damage_are_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let meta = dir.path().join(META_FILE);
        fs::write(&meta, "format = 7\ncluster_id = [\"future\", 1]\n").unwrap();
        let err = Identity::open(dir.path(), None).unwrap_err().to_string();
        assert!(
            err.contains("format 7") && err.contains("format 1"),
            "{err}"
        );

        for garbled in [
            &b"format = \"one\""[..],
            b"cluster_id = \"x\"",
            b"format = 1\ncluster_id = \"not an id!\"",
            b"format = 1\nformat = 1",
            b"\xff\xfe\x00",
            b"format = -1",
            b"",
        ] {
            fs::write(&meta, garbled).unwrap();
            let err = Identity::open(dir.path(), None).unwrap_err();
            assert!(matches!(err, DataDirError::Damaged { .. }), "{err}");
        }

        fs::remove_file(&meta).unwrap();
        fs::create_dir(dir.path().join("db")).unwrap();
        let err = Identity::open(dir.path(), None).unwrap_err();
        assert!(matches!(err, DataDirError::Unversioned { .. }), "{err}");
    }

    #[test]
    fn cluster_ids_are_short_plain_names() {
        for ok in ["a", "prod-eu.1_x", &"x".repeat(64)] {
            ClusterId::parse(ok).unwrap();
        }
        for bad in ["", "a b", "é", &"x".repeat(65), "a/b"] {
            assert!(ClusterId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
