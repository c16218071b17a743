//! [`Event`]: what happened to a key, as applied. Derived from the log, so every replica
//! produces the same events in the same order; the node streams them to watchers.

use serde::{Deserialize, Serialize};

use super::types::{Key, Owner, Token};

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// A new grant (from a free key or from the queue).
    Acquired,
    /// A lease was extended (renew, or acquire again by its owner).
    Renewed,
    /// Its holder released it.
    Released,
    /// Its lease ran out.
    Expired,
    /// An admin freed it.
    ForceReleased,
    /// An owner joined the queue.
    Queued,
    /// A waiter's wait ran out before it was granted.
    WaitTimeout,
    /// A waiter left the queue because its client went away.
    WaitCancelled,
}

impl EventKind {
    /// The SSE `event:` name.
    pub fn as_str(&self) -> &'static str {
        match self {
            EventKind::Acquired => "acquired",
            EventKind::Renewed => "renewed",
            EventKind::Released => "released",
            EventKind::Expired => "expired",
            EventKind::ForceReleased => "force_released",
            EventKind::Queued => "queued",
            EventKind::WaitTimeout => "wait_timeout",
            EventKind::WaitCancelled => "wait_cancelled",
        }
    }
}

/// One event on one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Log index of the entry whose application produced it.
    pub index: u64,
    pub key: Key,
    pub kind: EventKind,
    pub owner: Owner,
    /// The grant's token (none for queue events).
    pub token: Option<Token>,
    /// Cluster time at which it happened (for `expired`: when the lease ran out).
    pub at_ms: u64,
    /// For `acquired` and `renewed`: when the lease now runs out.
    pub expires_at_ms: Option<u64>,
}
