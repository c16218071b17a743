//! The chaos suite's workload, history format and checker (hidden `baton chaos`).
//!
//! `scripts/chaos/run.sh` starts a cluster, injects faults and runs the workload
//! ([`workload`], with the fenced [`resource`]); every client operation becomes one JSON
//! line ([`history::Op`]): what was asked, when it was invoked and completed (one
//! monotonic clock for every workload process), and the outcome — `ok`, `fail` (a
//! definite refusal) or `unknown` (a timeout or `OUTCOME_UNKNOWN`: it may or may not
//! have happened). `baton chaos check DIR` then proves from the history alone the
//! safety properties a lock service owes its users: token order, leases and the fenced
//! resource and lock-delay ([`check`]), leases on the client's clock and abandoned locks
//! ([`leases`]), holders under the Rust client and `baton lock` ([`holders`], seen
//! through the recording [`relay`]) stopping at their client-side safe deadline
//! ([`deadlines`]), per-key linearizability ([`linearize`]), the event streams the
//! [`followers`] recorded ([`events`]), the queue rebuilt from those events ([`queue`];
//! the [`waiters`] make it busy), and from the run's side files no minority-side writes,
//! equal replicas and no panics ([`report`]).
//!
//! # Caveats
//! The checker sees only what clients saw: lease refreshes by a new leader and the
//! cluster time of reads and refusals are not in the history, so the checks allow them
//! (see each module). Unavailability is measured by the workload's probe, not by the
//! nodes.

pub mod check;
pub mod deadlines;
pub mod events;
pub mod followers;
pub mod history;
pub mod holders;
pub mod leases;
pub mod linearize;
pub mod queue;
pub mod relay;
pub mod report;
pub mod resource;
pub mod waiters;
pub mod workload;
