//! The chaos suite's history format and checker (`baton chaos check DIR`).
//!
//! A chaos run records every client operation as one JSON line of `history.jsonl`
//! ([`history::Op`]): what was asked, when it was invoked and completed (the workload's
//! monotonic clock), and the outcome — `ok`, `fail` (a definite refusal) or `unknown`
//! (a timeout or `OUTCOME_UNKNOWN`: it may or may not have happened). The checker then
//! proves, from the history alone, the safety properties a lock service owes its users
//! ([`check`]).
//!
//! # Caveats
//! This is the first part of the suite: the fault scripts, the workload and the per-key
//! linearizability search are still to come (see the chaos issue).

pub mod check;
pub mod history;
pub mod leases;
pub mod report;
pub mod resource;
pub mod workload;
