//! Tracker compatibility: Tracker's REST API (`/api/v1alpha1/...`) and its gRPC
//! service (`tracker.lock.v1alpha1.LockService`), served on Baton's lock table.
//!
//! Mapping ([`mapping`]): `service` is the key (Baton's key rules), `who` the owner,
//! `id` the fencing token in decimal. A create is a [`crate::locks::Command::AcquireExclusive`]
//! (Tracker locks are not re-entrant: the same `who` is refused too) with the lease
//! `[compat] tracker_ttl_ms` or the request's `ttl_ms`; `unlock` releases by token
//! without an owner check; a lookup by id uses the table's token index.
//!
//! Where things live: [`rest`] has one function per operation (create, get, unlock,
//! list) that runs on the leader, and the routes, registered in [`crate::api::router`]
//! with their relay `Need` like Baton's own (so forwarding, limits and any later
//! auth layer apply to them alike). [`grpc`] serves the gRPC service on a node's
//! optional `grpc` address: each call runs the matching REST route through that same
//! router, so gRPC and REST share one code path.
//!
//! # Caveats
//! - A create whose proposal's outcome is unknown is proposed again (bounded); the
//!   retry is the barrier that decides the first one, and a refusal by a grant to the
//!   same `who` stamped with one of this request's cluster times is recognised as this
//!   request's own grant. Two creates by the same `who` for the same service stamped in
//!   the same millisecond, one of them with an unknown outcome, cannot be told apart.
//!   When the outcome stays unknown (leader lost), the answer is 503 and a retry by the
//!   client may be refused (409) by its own earlier grant; it expires after its lease.
//! - Bodies are Tracker's plain JSON, not problem+json: the relay's own answers
//!   (`NO_LEADER`, `OUTCOME_UNKNOWN`) are rewritten into `{"error": ...}` on these routes.

pub mod grpc;
pub mod mapping;
pub mod rest;
