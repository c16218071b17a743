//! A test double for applications: [`MemoryLocks`] answers like a cluster, in process.
//!
//! Applications write their lock-using code against [`LockService`] and run their tests
//! against [`MemoryLocks`] — no cluster, no network — while production uses
//! [`Client`]. It is Baton's real lock state machine ([`LockTable`]) with a clock that is
//! tokio's (so `tokio::time::pause` and `advance` move lease expiry in tests) and a
//! counter for log indexes (tokens still strictly increase). Waiting (`wait > 0`) is not
//! simulated: a held key is refused at once.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::{Client, ClientError, Granted, Lease, LockInfo, Released, Validation};
use crate::locks::{Command, Key, LockError, LockTable, Owner, Reply, Token};
use crate::sync::LockUnpoisoned;
use crate::wire::ErrorCode;

/// The lock operations an application uses, by a remote cluster or in process.
#[allow(async_fn_in_trait)]
pub trait LockService {
    async fn try_acquire(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Granted, ClientError>;
    async fn renew(
        &self,
        key: &str,
        token: u64,
        ttl: Option<Duration>,
    ) -> Result<Granted, ClientError>;
    async fn release(&self, key: &str, token: u64) -> Result<Released, ClientError>;
    async fn get(&self, key: &str) -> Result<Option<LockInfo>, ClientError>;
    async fn validate(&self, key: &str, token: u64) -> Result<Validation, ClientError>;
}

impl LockService for Client {
    async fn try_acquire(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Granted, ClientError> {
        Client::try_acquire(self, key, owner, ttl).await
    }
    async fn renew(
        &self,
        key: &str,
        token: u64,
        ttl: Option<Duration>,
    ) -> Result<Granted, ClientError> {
        Client::renew(self, key, token, ttl).await
    }
    async fn release(&self, key: &str, token: u64) -> Result<Released, ClientError> {
        Client::release(self, key, token).await
    }
    async fn get(&self, key: &str) -> Result<Option<LockInfo>, ClientError> {
        Client::get(self, key).await
    }
    async fn validate(&self, key: &str, token: u64) -> Result<Validation, ClientError> {
        Client::validate(self, key, token).await
    }
}

/// An in-process lock service with the cluster's rules (see the module docs).
pub struct MemoryLocks {
    started: Instant,
    state: Mutex<(LockTable, u64)>,
}

impl Default for MemoryLocks {
    fn default() -> Self {
        MemoryLocks::new()
    }
}

impl MemoryLocks {
    pub fn new() -> MemoryLocks {
        MemoryLocks {
            started: Instant::now(),
            state: Mutex::new((LockTable::default(), 0)),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Applies `make(now)` as the next "log entry".
    fn apply(&self, make: impl FnOnce(u64) -> Command) -> Reply {
        let now = self.now_ms();
        let mut guard = self.state.lock_unpoisoned();
        let (table, index) = &mut *guard;
        *index += 1;
        table.apply(*index, &make(now)).reply
    }

    fn read<T>(&self, f: impl FnOnce(&LockTable, u64) -> T) -> T {
        let now = self.now_ms();
        let guard = self.state.lock_unpoisoned();
        f(&guard.0, now)
    }
}

fn key(raw: &str) -> Result<Key, ClientError> {
    Key::parse(raw).map_err(|e| rejected(ErrorCode::InvalidKey, 400, e.to_string()))
}

fn rejected(code: ErrorCode, status: u16, detail: String) -> ClientError {
    ClientError::Rejected {
        code,
        status,
        detail,
    }
}

/// The client's view of a state-machine reply.
fn granted(reply: Reply, sent_at: Instant) -> Result<Granted, ClientError> {
    match reply {
        Reply::Granted(g) => Ok(Granted {
            lease: Lease::from(&g),
            sent_at,
        }),
        Reply::Refused(e) => Err(refused(e)),
        other => Err(rejected(
            ErrorCode::Internal,
            500,
            format!("unexpected reply {other:?}"),
        )),
    }
}

fn refused(e: LockError) -> ClientError {
    match e {
        LockError::Held { ref holder } => ClientError::Held {
            key: holder.key.to_string(),
            holder: Box::new(Lease::from(holder)),
        },
        LockError::Unavailable { .. } => ClientError::Unavailable(e.to_string()),
        LockError::Lost { .. } => ClientError::Lost(e.to_string()),
        LockError::NotOwner { .. } | LockError::NotYourLock { .. } => {
            rejected(ErrorCode::NotOwner, 403, e.to_string())
        }
    }
}

impl LockService for MemoryLocks {
    async fn try_acquire(
        &self,
        raw_key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Granted, ClientError> {
        let key = key(raw_key)?;
        let owner = Owner::parse(owner)
            .map_err(|e| rejected(ErrorCode::InvalidRequest, 400, e.to_string()))?;
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let sent_at = Instant::now();
        granted(
            self.apply(|now| Command::acquire(key, owner, ttl_ms, now)),
            sent_at,
        )
    }

    async fn renew(
        &self,
        raw_key: &str,
        token: u64,
        ttl: Option<Duration>,
    ) -> Result<Granted, ClientError> {
        let key = key(raw_key)?;
        let ttl_ms = ttl.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
        let sent_at = Instant::now();
        granted(
            self.apply(|now| Command::renew(key, Token(token), ttl_ms, now)),
            sent_at,
        )
    }

    async fn release(&self, raw_key: &str, token: u64) -> Result<Released, ClientError> {
        let key = key(raw_key)?;
        match self.apply(|now| Command::release(key, Token(token), now)) {
            Reply::Released(r) => Ok(Released::from(&r)),
            Reply::Refused(e) => Err(refused(e)),
            other => Err(rejected(
                ErrorCode::Internal,
                500,
                format!("unexpected reply {other:?}"),
            )),
        }
    }

    async fn get(&self, raw_key: &str) -> Result<Option<LockInfo>, ClientError> {
        let key = key(raw_key)?;
        Ok(self.read(|t, now| {
            t.get(&key, now).map(|g| LockInfo {
                waiters: t.waiting(&key, now) as u64,
                ..LockInfo::from(g)
            })
        }))
    }

    async fn validate(&self, raw_key: &str, token: u64) -> Result<Validation, ClientError> {
        let key = key(raw_key)?;
        let v = self.read(|t, now| t.validate(&key, Token(token), now));
        Ok(Validation::from(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Application code written once against the trait.
    async fn run_job(locks: &impl LockService, who: &str) -> Result<u64, ClientError> {
        let g = locks
            .try_acquire("nightly", who, Duration::from_secs(10))
            .await?;
        Ok(g.lease.token)
    }

    #[tokio::test(start_paused = true)]
    async fn the_double_honours_holders_tokens_and_expiry() {
        let locks = MemoryLocks::new();
        let first = run_job(&locks, "a").await.unwrap();
        assert!(matches!(
            run_job(&locks, "b").await,
            Err(ClientError::Held { .. })
        ));
        assert!(locks.validate("nightly", first).await.unwrap().valid);
        // The lease runs out with (paused) time; the next grant has a larger token.
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(locks.get("nightly").await.unwrap(), None);
        let second = run_job(&locks, "b").await.unwrap();
        assert!(second > first);
        assert!(matches!(
            locks.renew("nightly", first, None).await,
            Err(ClientError::Lost(_))
        ));
        let r = locks.release("nightly", second).await.unwrap();
        assert!(r.released);
        assert!(matches!(
            locks
                .try_acquire("bad key", "a", Duration::from_secs(1))
                .await,
            Err(ClientError::Rejected {
                code: ErrorCode::InvalidKey,
                ..
            })
        ));
    }
}
