//! The lock state machine: pure, synchronous and deterministic — no I/O, no clock, no
//! async. Raft feeds it committed commands in log order; every replica computes the same
//! table and the same replies.
//!
//! # Leases
//! A grant holds `key` for `owner` until `expires_at_ms`, in *cluster time*. Cluster time
//! is the leader's monotonic clock anchored at promotion (see `node::clock`), carried in
//! every [`Command`] as `now_ms`. Applying a command never reads a clock: a grant is live
//! iff `expires_at_ms > now`, where `now` is the entry's `now_ms` — or the table's own
//! clock if that is later, since state-machine time never goes backwards
//! (`now = max(cmd.now_ms, highest now_ms applied)`). Expired grants are treated as
//! absent at once; a [`Command::Sweep`] removes them from storage later.
//!
//! # Tokens
//! A new grant's fencing token is the log index of the entry that granted it. Log
//! indexes only grow, so tokens strictly increase across all grants of all keys, across
//! restarts and leader changes, and are never reused. Renewing or re-acquiring keeps the
//! token.
//!
//! # Queue and lock-delay
//! An acquire with `wait_ms > 0` on a held key joins the key's FIFO queue (once per
//! owner). When the key frees up — release, force release, or an expiry noticed by any
//! entry that touches the key — the first waiter whose wait has not run out (in cluster
//! time) is granted. One entry grants at most one lock, so that every token is a
//! distinct log index: a release grants the next waiter in its own entry, while a key
//! freed by a sweep or by the end of a lock-delay waits for the leader's
//! [`Command::Handoff`]. After a lease with `lock_delay_ms` *expires* (not after a
//! release), nobody gets the key until that delay has passed.
//!
//! # Events
//! Every change is also reported as an [`Event`] with the entry's index, so watchers see
//! the same history on every replica.
//!
//! # Applications
//! With auth on, the API sends every lock command as [`Command::AsApp`]: the
//! authenticated application is recorded on the grant or waiter it creates, and a
//! renew, release or cancel of another application's lock or wait is refused
//! ([`LockError::NotYourLock`]) whatever token or owner it names — unless the caller has
//! `admin` on the key (`release_any`), whose release of another application's lock is
//! reported as `force_released` with the admin in `by`. An owner name is unique per
//! application: two applications may both call their worker `w1`.
//! [`Command::ReleaseByApp`] frees the lock an application holds on a key. Without a
//! caller (auth off) applications are never compared.
//!
//! # Idempotency
//! Every command can be retried after a lost reply: acquire by the same owner returns
//! the same grant (lease extended), renew by token extends again, release by token
//! answers `released: false` once the lock is gone.
//! [`Command::AcquireExclusive`] is the exception: it refuses a live holder even when it
//! is the same owner (Tracker's non-re-entrant create), so a retry of one whose reply
//! was lost is refused by its own grant. The caller resolves that (the Tracker compat
//! API recognises its own grant by owner and stamped `acquired_at_ms`).
//!
//! # Lookup by token
//! The table keeps a token -> key index of every stored holder, derived like the expiry
//! index (never stored, rebuilt from the key states at start-up and on snapshot
//! install), so a grant can be found by its token alone.
//!
//! # Promotion
//! A new leader commits [`Command::RefreshLeases`], which extends every lease that was
//! live at the last applied time to at least `now + ttl_ms`: holders could not renew
//! while there was no leader, so a leader change may lengthen leases and never shortens
//! them — not even when the new leader's wall clock (its time anchor) is far ahead.
//!
//! # What this module does not do
//! It does not validate TTL bounds (the API does, from `[lease]`), persist anything
//! (the Raft adapter writes the keys an [`Applied`] lists), or know about Raft.
//!
//! # Caveats
//! - Time comes only from the leader. A leader whose monotonic clock runs fast expires
//!   leases early in real time; fencing tokens, not leases, are the safety mechanism.
//! - `RefreshLeases` walks every grant; it runs once per leader change.

mod command;
mod error;
mod event;
mod key_state;
mod table;
mod types;

#[cfg(test)]
mod golden;
#[cfg(test)]
mod proptests;

pub use command::{
    AcquireOptions, CancelReason, Command, Grant, NotReleased, Queued, Release, Reply,
};
pub use error::{LockError, SnapshotError};
pub use event::{Event, EventKind};
pub use key_state::{same_app, KeyState, Waiter};
pub use table::{Applied, ListPage, LockTable, TableSnapshot, Validation};
pub use types::{
    AppName, InvalidInput, Key, Owner, Token, MAX_APP_LEN, MAX_KEY_LEN, MAX_OWNER_LEN,
};
