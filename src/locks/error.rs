//! Deterministic refusals of the state machine, and snapshot validation errors.

use serde::{Deserialize, Serialize};

use super::command::Grant;
use super::types::{AppName, Key, Owner, Token};

/// A command the rules refuse. Part of the replicated [`super::Reply`]: every replica
/// refuses the same command the same way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum LockError {
    /// Another owner holds a live lease on the key.
    #[error("lock {} is held by {} with token {}", holder.key, holder.owner, holder.token)]
    Held { holder: Grant },
    /// The token no longer holds the key (expired, released, or re-granted).
    #[error("token {token} no longer holds {key}")]
    Lost {
        key: Key,
        token: Token,
        current: Option<Token>,
    },
    /// Nobody holds the key, but its lock-delay (after an expired lease) or its queue
    /// keeps it from a caller that does not wait.
    #[error(
        "lock {key} has no holder but is not available: waiters are ahead or a lock-delay runs"
    )]
    Unavailable { key: Key, until_ms: Option<u64> },
    /// Release by owner from an owner that does not hold the key.
    #[error("{owner} does not hold {key}")]
    NotOwner { key: Key, owner: Owner },
    /// Renew, release or cancel by an application other than the one that acquired or
    /// queued (auth on). Last, so that older variants keep their encoding.
    #[error("application {app} does not hold {key}: another application acquired it")]
    NotYourLock { key: Key, app: AppName },
}

/// A snapshot or stored table that breaks the table's invariants.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("key {0} appears twice")]
    DuplicateKey(Key),
    #[error("the grant stored under key {0} names another key")]
    KeyMismatch(Key),
}
