//! `history.jsonl`: one completed client operation per line.

use std::io::BufRead;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// What the operation was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    Acquire,
    Renew,
    Release,
    Read,
    /// A write to the fenced resource, presenting `token`; `ok` = accepted.
    ResourceWrite,
    /// `POST /v1/locks/{key}/cancel` by `owner`: leave the queue (and release the key if
    /// the queue granted it meanwhile; then `token` is the released token).
    Cancel,
}

/// How the operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Acknowledged: it happened, with the recorded result.
    Ok,
    /// Definitely refused: it did not happen.
    Fail,
    /// Timed out or `OUTCOME_UNKNOWN`: it may or may not have happened.
    Unknown,
}

/// One operation of the history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Op {
    /// The client process (or thread) that ran it.
    pub process: String,
    pub key: String,
    pub kind: OpKind,
    #[serde(default)]
    pub owner: Option<String>,
    /// The token sent (renew, release, resource write) or granted (acquire `ok`).
    #[serde(default)]
    pub token: Option<u64>,
    /// Workload monotonic time when the request was sent.
    pub invoke_ms: u64,
    /// Workload monotonic time when the answer (or the timeout) came.
    pub complete_ms: u64,
    pub outcome: Outcome,
    /// Cluster time of the grant (acquire/renew `ok`).
    #[serde(default)]
    pub acquired_at_ms: Option<u64>,
    /// Cluster time the lease runs out (acquire/renew `ok`).
    #[serde(default)]
    pub expires_at_ms: Option<u64>,
    /// Whether a release freed the lock (release `ok`).
    #[serde(default)]
    pub released: Option<bool>,
    /// Cluster time of a release (release `ok`).
    #[serde(default)]
    pub at_ms: Option<u64>,
    /// The resource's acceptance order (resource writes).
    #[serde(default)]
    pub seq: Option<u64>,
    /// Error code of a `fail` or `unknown` outcome.
    #[serde(default)]
    pub error: Option<String>,
    /// The node API address the request was sent to.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The lease length of an `ok` acquire or renew (so its cluster time of application
    /// is `expires_at_ms - ttl_ms`).
    #[serde(default)]
    pub ttl_ms: Option<u64>,
    /// The holder an `ok` read saw (`None`: the key was free) or a `LOCK_HELD` refusal
    /// named.
    #[serde(default)]
    pub holder: Option<Holder>,
    /// The acquire waited in the key's queue for up to this long (`wait_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
    /// The acquire asked for this lock-delay after its lease expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_delay_ms: Option<u64>,
    /// Cluster time a `LOCK_HELD` refusal said the key is available again (the queue or a
    /// lock-delay keeps it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_at_ms: Option<u64>,
    /// Why a release freed nothing (`released: false`): `not_held`, `token_mismatch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A cancel found the owner in the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub was_queued: Option<bool>,
    /// The `detail` of a problem answer (why a node refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// A resource write by a holder whose client promises to stop it at the lock's
    /// client-side safe deadline (see [`super::deadlines`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientKind>,
}

/// The client that supervised a holder's resource writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientKind {
    /// In-process work under the Rust client's `LockGuard`, which writes only while the
    /// guard is not lost and before its `safe_until`.
    LockGuard,
    /// The child of `baton lock -- CMD`, which `baton lock` stops (SIGTERM, then SIGKILL)
    /// before the safe deadline.
    BatonLock,
}

impl ClientKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientKind::LockGuard => "lock_guard",
            ClientKind::BatonLock => "baton_lock",
        }
    }
}

/// A lock holder as a read or a refusal reported it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Holder {
    pub owner: String,
    pub token: u64,
    /// Cluster time the holder's lease runs out.
    pub expires_at_ms: u64,
}

impl Op {
    /// An operation by `owner` (also its process) on `key`, with no result fields set.
    pub fn new(
        kind: OpKind,
        key: &str,
        owner: &str,
        token: Option<u64>,
        invoke_ms: u64,
        complete_ms: u64,
        outcome: Outcome,
    ) -> Op {
        Op {
            process: owner.to_string(),
            key: key.to_string(),
            kind,
            owner: Some(owner.to_string()),
            token,
            invoke_ms,
            complete_ms,
            outcome,
            acquired_at_ms: None,
            expires_at_ms: None,
            released: None,
            at_ms: None,
            seq: None,
            error: None,
            endpoint: None,
            ttl_ms: None,
            holder: None,
            wait_ms: None,
            lock_delay_ms: None,
            available_at_ms: None,
            reason: None,
            was_queued: None,
            detail: None,
            client: None,
        }
    }
}

/// A history file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Parse {
        path: String,
        line: usize,
        message: String,
    },
}

/// Reads a JSON-lines history; blank lines are skipped.
pub fn read(path: &Path) -> Result<Vec<Op>, HistoryError> {
    let shown = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| HistoryError::Io {
        path: shown.clone(),
        source,
    })?;
    let mut ops = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| HistoryError::Io {
            path: shown.clone(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let op = serde_json::from_str(&line).map_err(|e| HistoryError::Parse {
            path: shown.clone(),
            line: i + 1,
            message: e.to_string(),
        })?;
        ops.push(op);
    }
    Ok(ops)
}

/// Reads a run's histories: `history.jsonl` and every `history-*.jsonl` (one per workload
/// process), in file-name order.
pub fn read_dir(dir: &Path) -> Result<Vec<Op>, HistoryError> {
    let io = |source| HistoryError::Io {
        path: dir.display().to_string(),
        source,
    };
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n == "history.jsonl" || (n.starts_with("history-") && n.ends_with(".jsonl"))
            })
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no history.jsonl or history-*.jsonl",
        )));
    }
    let mut ops = Vec::new();
    for file in files {
        ops.extend(read(&file)?);
    }
    Ok(ops)
}
