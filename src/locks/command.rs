//! [`Command`]: the replicated input, stamped with the leader's cluster time; [`Reply`]
//! and the records it carries ([`Grant`], [`Release`]).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::error::LockError;
use super::types::{AppName, Key, Owner, Token};

/// One state-machine input. Every variant carries `now_ms`, the proposing leader's
/// cluster time; applying a command never reads a clock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Take `key` for `owner` for `ttl_ms`, or extend the owner's own grant. When another
    /// owner holds it and `wait_ms > 0`, join the key's FIFO queue for up to `wait_ms`.
    /// `lock_delay_ms`: after this grant's lease *expires*, nobody gets the key for that
    /// long (a clean release frees it at once).
    Acquire {
        key: Key,
        owner: Owner,
        ttl_ms: u64,
        wait_ms: u64,
        lock_delay_ms: u64,
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
    /// Take `owner` out of `key`'s queue; if the queue already granted it the key, release
    /// that grant (the waiting request is gone or its wait ended: nobody would use it).
    CancelWait {
        key: Key,
        owner: Owner,
        reason: CancelReason,
        now_ms: u64,
    },
    /// Grant a free `key` to its first waiter (the leader proposes one per key whose
    /// holder expired or whose lock-delay ended while waiters queue; one entry grants at
    /// most one lock, so every token stays a distinct log index).
    Handoff { key: Key, now_ms: u64 },
    /// Remove every grant whose lease has run out (the leader's periodic sweep).
    Sweep { now_ms: u64 },
    /// Extend every lease that was live at `live_at_ms` to at least `now_ms + ttl`
    /// (committed once by a new leader). `live_at_ms` is the highest cluster time applied
    /// when the leader took over, so a forward jump of the new leader's clock cannot
    /// expire leases that were live under the old leader.
    RefreshLeases { now_ms: u64, live_at_ms: u64 },
    /// Take a free `key` for `owner` for `ttl_ms`, refusing any live holder — the same
    /// owner too (Tracker's create: two pipelines that both call themselves `owner` must
    /// not both hold the key). Never waits and sets no lock-delay. Appended last so that
    /// entries written before it existed still decode (postcard numbers variants).
    AcquireExclusive {
        key: Key,
        owner: Owner,
        ttl_ms: u64,
        now_ms: u64,
    },
    /// `command` sent by the authenticated application `app` (auth on). Grants and
    /// waiters it creates record `app`; renew, release and cancel of another
    /// application's lock or wait are refused (`NotYourLock`), except that
    /// `release_any` (the caller's `admin` permission on the key) may release any lock,
    /// and such a release names `app` as the actor in its event. Added after the
    /// variants above so that log entries written before auth existed still decode.
    AsApp {
        app: AppName,
        release_any: bool,
        command: Box<Command>,
    },
    /// Free `key` if application `app` holds it, whatever the token or owner (the
    /// "release by key" of the Release Lock API).
    ReleaseByApp { key: Key, app: AppName, now_ms: u64 },
}

impl Command {
    /// An acquire that does not wait and sets no lock-delay.
    pub fn acquire(key: Key, owner: Owner, ttl_ms: u64, now_ms: u64) -> Command {
        Command::acquire_with(key, owner, AcquireOptions::ttl(ttl_ms), now_ms)
    }

    pub fn acquire_with(key: Key, owner: Owner, options: AcquireOptions, now_ms: u64) -> Command {
        Command::Acquire {
            key,
            owner,
            ttl_ms: options.ttl_ms,
            wait_ms: options.wait_ms,
            lock_delay_ms: options.lock_delay_ms,
            now_ms,
        }
    }

    /// An acquire that refuses any live holder, the same owner included.
    pub fn acquire_exclusive(key: Key, owner: Owner, ttl_ms: u64, now_ms: u64) -> Command {
        Command::AcquireExclusive {
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

    pub fn cancel_wait(key: Key, owner: Owner, reason: CancelReason, now_ms: u64) -> Command {
        Command::CancelWait {
            key,
            owner,
            reason,
            now_ms,
        }
    }

    pub fn handoff(key: Key, now_ms: u64) -> Command {
        Command::Handoff { key, now_ms }
    }

    pub fn release_by_app(key: Key, app: AppName, now_ms: u64) -> Command {
        Command::ReleaseByApp { key, app, now_ms }
    }

    /// `self` on behalf of `app` (see [`Command::AsApp`]); `None` (auth off) leaves it
    /// as it is.
    pub fn as_app(self, app: Option<AppName>, release_any: bool) -> Command {
        match app {
            Some(app) => Command::AsApp {
                app,
                release_any,
                command: Box::new(self),
            },
            None => self,
        }
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
            | Command::CancelWait { now_ms, .. }
            | Command::Handoff { now_ms, .. }
            | Command::Sweep { now_ms }
            | Command::RefreshLeases { now_ms, .. }
            | Command::AcquireExclusive { now_ms, .. }
            | Command::ReleaseByApp { now_ms, .. } => *now_ms,
            Command::AsApp { command, .. } => command.now_ms(),
        }
    }

    /// The key the command is about, if it is about one.
    pub fn key(&self) -> Option<&Key> {
        match self {
            Command::Acquire { key, .. }
            | Command::Renew { key, .. }
            | Command::Release { key, .. }
            | Command::ReleaseByOwner { key, .. }
            | Command::ForceRelease { key, .. }
            | Command::CancelWait { key, .. }
            | Command::Handoff { key, .. }
            | Command::AcquireExclusive { key, .. }
            | Command::ReleaseByApp { key, .. } => Some(key),
            Command::AsApp { command, .. } => command.key(),
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
            Command::CancelWait { .. } => "cancel_wait",
            Command::Handoff { .. } => "handoff",
            Command::Sweep { .. } => "sweep",
            Command::RefreshLeases { .. } => "refresh_leases",
            Command::AcquireExclusive { .. } => "acquire_exclusive",
            Command::ReleaseByApp { .. } => "release_by_app",
            Command::AsApp { command, .. } => command.kind(),
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

/// Lease, wait and lock-delay of an acquire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcquireOptions {
    pub ttl_ms: u64,
    /// 0: fail at once when the key is held; otherwise wait this long in its queue.
    pub wait_ms: u64,
    /// After the lease expires, keep the key from everyone else this long.
    pub lock_delay_ms: u64,
}

impl AcquireOptions {
    /// No wait, no lock-delay.
    pub fn ttl(ttl_ms: u64) -> AcquireOptions {
        AcquireOptions {
            ttl_ms,
            wait_ms: 0,
            lock_delay_ms: 0,
        }
    }
}

/// Why a wait is cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CancelReason {
    /// The waiting request's `wait_ms` ran out.
    Timeout,
    /// The waiting client went away.
    Disconnected,
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
    /// Lock-delay after this lease expires (0: none).
    pub lock_delay_ms: u64,
    /// The application that acquired it (`None`: acquired with auth off).
    pub app: Option<AppName>,
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
    /// A force release, or an admin's release of another application's lock: the
    /// holder it took the lock from (for the node's audit log).
    pub forced_from: Option<Grant>,
}

/// A place in a key's queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queued {
    pub key: Key,
    pub owner: Owner,
    /// 1 = next in line.
    pub position: u64,
    /// Cluster time at which the wait runs out.
    pub wait_until_ms: u64,
}

/// The state machine's answer to one command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// Acquire or renew succeeded.
    Granted(Grant),
    /// Release, release by owner, or force release.
    Released(Release),
    /// The acquire joined (or was already in) the key's queue.
    Queued(Queued),
    /// A cancelled wait: whether the owner was still queued, and the grant that the
    /// cancel released because the queue had granted it already.
    WaitCancelled {
        key: Key,
        was_queued: bool,
        released: Option<Token>,
    },
    /// A handoff granted this (or nothing: the key was taken, or nobody waits any more).
    HandedOff { granted: Option<Grant> },
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
            Reply::Queued(q) => write!(f, "queued {} at {} on {}", q.owner, q.position, q.key),
            Reply::WaitCancelled {
                key,
                was_queued,
                released,
            } => write!(
                f,
                "wait on {key} cancelled (queued={was_queued}, released={released:?})"
            ),
            Reply::HandedOff { granted: Some(g) } => {
                write!(f, "handed {} to {} token {}", g.key, g.owner, g.token)
            }
            Reply::HandedOff { granted: None } => f.write_str("handed off nothing"),
            Reply::Swept { expired } => write!(f, "swept {expired}"),
            Reply::Refreshed { leases } => write!(f, "refreshed {leases}"),
            Reply::Refused(e) => write!(f, "refused: {e}"),
            Reply::Nothing => f.write_str("nothing"),
        }
    }
}
