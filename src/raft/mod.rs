//! openraft glue: the type configuration, RocksDB storage, snapshots and the Raft network.
//!
//! Everything that names an openraft type lives under this module (plus `node`, which
//! drives a [`typ::Raft`]), so that an openraft upgrade touches one place.
//!
//! # Durability rules (DESIGN.md, "Raft, storage and durability rules")
//! - One RocksDB instance per node. Its single write-ahead log orders vote, log and
//!   state-machine writes, so a crash recovers a prefix of everything that was written.
//! - `save_vote` syncs the WAL before it returns.
//! - `append` writes the entries as one batch (readable at once) and hands openraft's
//!   flush callback to a single syncer thread. The syncer takes every callback queued
//!   so far, makes one `fsync` of the WAL, and only then completes them all: group
//!   commit, never a thread per append and never a callback before the sync.
//! - `apply` runs the pure [`crate::locks::LockTable`] over the entries and writes the
//!   changed locks, the last-applied log id, the membership and the cluster time in one
//!   batch. It does not sync: the entries it applies are already durable in the log,
//!   and the WAL order means the log is never purged past a state that was lost.
//! - A snapshot is built from one RocksDB snapshot (meta and data read at the same
//!   point), written to a file that is synced before it is reported, streamed to
//!   followers, and the log behind it is purged.
//! - Any RocksDB error is returned to openraft as a storage error, which stops Raft on
//!   this node; `node` then exits the process (fail-stop). Nothing is acknowledged after
//!   an I/O error. One exception, because nothing is at stake: a snapshot build that
//!   runs out of file descriptors is retried (see [`snapshot`]).
//!
//! # Caveats
//! - The lock table is held in memory in full (it is also the read path); RocksDB holds
//!   the durable copy that is loaded at start-up. The expiry index is rebuilt in memory
//!   at load instead of being a column family, since nothing would ever read it from disk.
//! - Snapshots are materialised as one buffer; a table of a million locks is ~100 MB.

pub mod backup;
pub mod data_dir;
pub mod event_log;
pub mod log_store;
pub mod network;
pub mod peers;
pub mod rpc_server;
pub mod snapshot;
pub mod state_machine;
pub mod store;

use serde::{Deserialize, Serialize};

use crate::locks::{Command, Reply};

/// Where to reach a member: the address stored in the Raft membership.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddr {
    /// `host:port` of the peer's Raft RPC listener.
    pub raft: String,
    /// `host:port` of the peer's HTTP API; followers forward client requests here.
    pub api: String,
}

openraft::declare_raft_types!(
    /// Baton's openraft type configuration: lock commands in, lock replies out.
    pub TypeConfig:
        D = Command,
        R = Reply,
        NodeId = u64,
        Node = NodeAddr,
);

/// Concrete aliases of the openraft types Baton uses.
pub mod typ {
    use super::TypeConfig;
    use openraft::alias;

    pub type Raft = openraft::Raft<TypeConfig, super::state_machine::StateMachine>;
    pub type LogId = alias::LogIdOf<TypeConfig>;
    pub type Vote = alias::VoteOf<TypeConfig>;
    pub type Entry = alias::EntryOf<TypeConfig>;
    pub type EntryPayload = alias::EntryPayloadOf<TypeConfig>;
    pub type StoredMembership = alias::StoredMembershipOf<TypeConfig>;
    pub type SnapshotMeta = alias::SnapshotMetaOf<TypeConfig>;
    pub type Snapshot = alias::SnapshotOf<TypeConfig, std::io::Cursor<Vec<u8>>>;
    pub type CommittedLeaderId = alias::CommittedLeaderIdOf<TypeConfig>;
    pub type RaftMetrics = openraft::RaftMetrics<TypeConfig>;
    pub type Fatal = openraft::errors::Fatal<TypeConfig>;
    pub type RaftError<E = openraft::errors::Infallible> =
        openraft::errors::RaftError<TypeConfig, E>;
    pub type ClientWriteError = openraft::errors::ClientWriteError<TypeConfig>;
    pub type ClientWriteResponse = openraft::raft::ClientWriteResponse<TypeConfig>;
    pub type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
    pub type AppendEntriesResponse = openraft::raft::AppendEntriesResponse<TypeConfig>;
    pub type VoteRequest = openraft::raft::VoteRequest<TypeConfig>;
    pub type VoteResponse = openraft::raft::VoteResponse<TypeConfig>;
    pub type SnapshotResponse = openraft::raft::SnapshotResponse<TypeConfig>;
    pub type TransferLeaderRequest = openraft::raft::TransferLeaderRequest<TypeConfig>;
    pub type TransferLeaderResponse = openraft::raft::TransferLeaderResponse<TypeConfig>;
}

#[cfg(test)]
mod storage_suite;
