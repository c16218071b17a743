//! # Baton — a highly available lock service
//!
//! Three (or five) nodes replicate one lock state machine with Raft (openraft), persist
//! it in RocksDB and serve it over HTTP/JSON. Every grant has a lease (TTL) and a fencing
//! token: the Raft log index of the entry that granted it, strictly increasing across
//! all keys, restarts and leader changes.
//!
//! The request path of a write, e.g. `POST /v1/locks/deploy/acquire` sent to any node:
//! 1. [`api`] validates the key, owner and TTL (a bad request changes nothing);
//! 2. on a follower, [`node::forward`] relays it to the leader (one hop) and relays the answer;
//! 3. on the leader, [`node::Node::write`] stamps a [`locks::Command`] with the leader's
//!    cluster time ([`node::clock`]) and proposes it, conditional on the leader's term;
//! 4. [`raft`] appends it to the RocksDB log (synced, group commit) and replicates it;
//! 5. once committed, [`raft::state_machine`] applies it with the pure [`locks::LockTable`]
//!    and persists the changed locks in one batch;
//! 6. the applied [`locks::Reply`] becomes the HTTP answer (token, expiry, or a problem).

pub mod api;
pub mod bench;
pub mod chaos;
pub mod cli;
pub mod client;
pub mod codec;
pub mod config;
pub mod locks;
pub mod node;
pub mod raft;
pub mod serve;
pub mod telemetry;

/// A Raft node id, as in `cluster.toml`.
pub type NodeId = u64;
