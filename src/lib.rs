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
//!
//! The client alone — [`client`] (with the in-memory double `client::MemoryLocks`),
//! [`wire`] and [`locks`] — builds without RocksDB, openraft or axum:
//! `baton = { version = "0.1", default-features = false, features = ["client"] }`.
//! Everything else is behind the default feature `server`.

#[cfg(feature = "server")]
pub mod api;
#[cfg(feature = "server")]
pub mod auth;
#[cfg(feature = "server")]
pub mod bench;
#[cfg(feature = "server")]
pub mod chaos;
#[cfg(feature = "server")]
pub mod cli;
pub mod client;
#[cfg(feature = "server")]
pub mod codec;
#[cfg(feature = "server")]
pub mod compat;
#[cfg(feature = "server")]
pub mod config;
pub mod locks;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod node;
#[cfg(feature = "server")]
pub mod raft;
#[cfg(feature = "server")]
pub mod serve;
#[cfg(feature = "server")]
pub mod server;
pub mod sync;
#[cfg(feature = "server")]
pub mod telemetry;
#[cfg(feature = "server")]
pub mod tls;
pub mod wire;

/// A Raft node id, as in `cluster.toml`.
pub type NodeId = u64;
