//! [`Command`]: the replicated input, stamped with the leader's cluster time; [`Reply`]
//! and the records it carries ([`Grant`], [`Release`]).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::error::LockError;
use super::types::{Key, Owner, Token};

/// One state-machine input. Every variant carries `now_ms`, the proposing leader's
/// cluster time; applying a command never reads a clock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Take `key` for `owner` for `ttl_ms`, or extend the owner's own grant.
    Acquire {
        key: Key,
        owner: Owner,
        ttl_ms: u64,
        now_ms: u64,
    },
    /// Extend the live grant held under `token`; `ttl_ms: None` keeps the grant's TTL.
    Renew {
        key: Key,
        token: Token,
        ttl_ms: Option<u64>,
        now_ms: u64,
    },
    /// Free `key` if `token` holds it.
    Release { key: Key, token: Token, now_ms: u64 },
    /// Free `key` if `owner` holds it.
    ReleaseByOwner { key: Key, owner: Owner, now_ms: u64 },
    /// Free `key` whoever holds it (admin).
    ForceRelease { key: Key, now_ms: u64 },
    /// Remove every grant whose lease has run out (the leader's periodic sweep).
    Sweep { now_ms: u64 },
    /// Extend every lease that was live at `live_at_ms` to at least `now_ms + ttl`
    /// (committed once by a new leader). `live_at_ms` is the highest cluster time applied
    /// when the leader took over, so a forward jump of the new leader's clock cannot
    /// expire leases that were live under the old leader.
    RefreshLeases { now_ms: u64, live_at_ms: u64 },
}

impl Command {
    pub fn acquire(key: Key, owner: Owner, ttl_ms: u64, now_ms: u64) -> Command {
        Command::Acquire {
            key,
            owner,
            ttl_ms,
            now_ms,
        }
    }

    pub fn renew(key: Key, token: Token, ttl_ms: Option<u64>, now_ms: u64) -> Command {
        Command::Renew {
            key,
            token,
            ttl_ms,
            now_ms,
        }
    }

    pub fn release(key: Key, token: Token, now_ms: u64) -> Command {
        Command::Release { key, token, now_ms }
    }

    pub fn release_by_owner(key: Key, owner: Owner, now_ms: u64) -> Command {
        Command::ReleaseByOwner { key, owner, now_ms }
    }

    pub fn force_release(key: Key, now_ms: u64) -> Command {
        Command::ForceRelease { key, now_ms }
    }

    pub fn sweep(now_ms: u64) -> Command {
        Command::Sweep { now_ms }
    }

    pub fn refresh_leases(now_ms: u64, live_at_ms: u64) -> Command {
        Command::RefreshLeases { now_ms, live_at_ms }
    }

    /// The cluster time the command was stamped with.
    pub fn now_ms(&self) -> u64 {
        match self {
            Command::Acquire { now_ms, .. }
            | Command::Renew { now_ms, .. }
            | Command::Release { now_ms, .. }
            | Command::ReleaseByOwner { now_ms, .. }
            | Command::ForceRelease { now_ms, .. }
            | Command::Sweep { now_ms }
            | Command::RefreshLeases { now_ms, .. } => *now_ms,
        }
    }

    /// The key the command is about, if it is about one.
    pub fn key(&self) -> Option<&Key> {
        match self {
            Command::Acquire { key, .. }
            | Command::Renew { key, .. }
            | Command::Release { key, .. }
            | Command::ReleaseByOwner { key, .. }
            | Command::ForceRelease { key, .. } => Some(key),
            Command::Sweep { .. } | Command::RefreshLeases { .. } => None,
        }
    }

    /// Short lowercase name, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::Acquire { .. } => "acquire",
            Command::Renew { .. } => "renew",
            Command::Release { .. } => "release",
            Command::ReleaseByOwner { .. } => "release_by_owner",
            Command::ForceRelease { .. } => "force_release",
            Command::Sweep { .. } => "sweep",
            Command::RefreshLeases { .. } => "refresh_leases",
        }
    }
}

/// openraft logs entries with `Display`.
impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.key() {
            Some(key) => write!(f, "{} {key} @{}", self.kind(), self.now_ms()),
            None => write!(f, "{} @{}", self.kind(), self.now_ms()),
        }
    }
}

/// A lock held by an owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub key: Key,
    pub owner: Owner,
    pub token: Token,
    /// Cluster time of the grant.
    pub acquired_at_ms: u64,
    /// Cluster time of the last acquire or renew that extended the lease.
    pub renewed_at_ms: u64,
    /// Cluster time at which the lease runs out; the lock is free from then on.
    pub expires_at_ms: u64,
    /// Lease length of the last acquire or renew.
    pub ttl_ms: u64,
}

impl Grant {
    /// True while the lease runs at cluster time `now_ms` (expired means `expires_at_ms <= now_ms`).
    pub fn is_live(&self, now_ms: u64) -> bool {
        self.expires_at_ms > now_ms
    }
}

/// Why a release freed nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NotReleased {
    /// The key has no live lock.
    NotHeld,
    /// The key is held under another token.
    TokenMismatch,
}

impl NotReleased {
    /// The API's `reason` string.
    pub fn as_str(&self) -> &'static str {
        match self {
            NotReleased::NotHeld => "not_held",
            NotReleased::TokenMismatch => "token_mismatch",
        }
    }
}

/// The outcome of a release or force release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub key: Key,
    pub released: bool,
    pub reason: Option<NotReleased>,
    /// Cluster time of the applied entry.
    pub at_ms: u64,
}

/// The state machine's answer to one command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// Acquire or renew succeeded.
    Granted(Grant),
    /// Release, release by owner, or force release.
    Released(Release),
    /// A sweep removed this many expired grants.
    Swept { expired: u64 },
    /// A refresh extended this many leases.
    Refreshed { leases: u64 },
    /// A deterministic refusal; nothing changed.
    Refused(LockError),
    /// Blank or membership entries (produced by the Raft adapter, never by `apply`).
    Nothing,
}

impl Reply {
    /// The grant of a successful acquire or renew.
    pub fn grant(&self) -> Option<&Grant> {
        match self {
            Reply::Granted(g) => Some(g),
            _ => None,
        }
    }
}

/// openraft logs responses with `Display`.
impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Granted(g) => write!(
                f,
                "granted {} to {} token {} until {}",
                g.key, g.owner, g.token, g.expires_at_ms
            ),
            Reply::Released(r) => write!(f, "release {} released={}", r.key, r.released),
            Reply::Swept { expired } => write!(f, "swept {expired}"),
            Reply::Refreshed { leases } => write!(f, "refreshed {leases}"),
            Reply::Refused(e) => write!(f, "refused: {e}"),
            Reply::Nothing => f.write_str("nothing"),
        }
    }
}
