//! [`LockGuard`]: a held lock that renews itself and says when it is lost.
//!
//! A background task renews the lease about every third of its TTL, and another follows
//! the key's event stream. The lock counts as lost — and [`LockGuard::lost`] resolves —
//! at once when the stream reports it released, force-released or expired under this
//! token (an admin's `DELETE`), when a renewal is refused (`LOCK_LOST`), or when no
//! renewal succeeded before the
//! client-side safe deadline ([`super::safe_deadline`]: send time of the last granted
//! acquire/renew + TTL − margin, on this process's monotonic clock). After that the
//! holder must stop acting on the lock; its fencing token is what protects the resource
//! if it cannot stop in time.
//!
//! Dropping the guard stops the renewals and releases the lock in the background;
//! [`LockGuard::release`] does it and waits for the answer.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Client, ClientError, Granted, Released};
use crate::wire::EventKind;

/// Why a lock was lost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LostReason {
    /// The server refused a renewal: the token no longer holds the key.
    Refused(String),
    /// No renewal succeeded before the safe deadline.
    DeadlinePassed,
}

impl std::fmt::Display for LostReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LostReason::Refused(detail) => write!(f, "renewal refused: {detail}"),
            LostReason::DeadlinePassed => {
                f.write_str("no renewal succeeded before the lease's safe deadline")
            }
        }
    }
}

/// A held lock; see the module docs.
pub struct LockGuard {
    client: Arc<Client>,
    key: String,
    owner: String,
    token: u64,
    lost: watch::Receiver<Option<LostReason>>,
    safe_until: watch::Receiver<Instant>,
    keeper: JoinHandle<()>,
    watcher: JoinHandle<()>,
    released: bool,
}

impl LockGuard {
    /// Starts keeping `granted` alive.
    pub fn keep(client: Arc<Client>, owner: &str, granted: Granted) -> LockGuard {
        let (lost_tx, lost) = watch::channel(None);
        let (safe_tx, safe_until) = watch::channel(granted.safe_until());
        let key = granted.lease.key.clone();
        let token = granted.lease.token;
        let lost_tx = std::sync::Arc::new(lost_tx);
        let watcher = tokio::spawn(watch_for_loss(
            client.clone(),
            granted.clone(),
            lost_tx.clone(),
        ));
        let keeper = tokio::spawn(keep_alive(client.clone(), granted, lost_tx, safe_tx));
        LockGuard {
            client,
            key,
            owner: owner.to_string(),
            token,
            lost,
            safe_until,
            keeper,
            watcher,
            released: false,
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The fencing token: pass it to every resource the lock protects.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// The current safe deadline (moves forward with each renewal).
    pub fn safe_until(&self) -> Instant {
        *self.safe_until.borrow()
    }

    /// Why the lock was lost, if it was.
    pub fn lost_reason(&self) -> Option<LostReason> {
        self.lost.borrow().clone()
    }

    /// Resolves when the lock is lost (never, while it is held).
    pub async fn lost(&self) -> LostReason {
        let mut rx = self.lost.clone();
        loop {
            if let Some(reason) = rx.borrow_and_update().clone() {
                return reason;
            }
            if rx.changed().await.is_err() {
                // The keeper ended without a reason: the guard was released.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Stops renewing and releases the lock.
    pub async fn release(mut self) -> Result<Released, ClientError> {
        self.released = true;
        self.keeper.abort();
        self.watcher.abort();
        self.client.release(&self.key, self.token).await
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.keeper.abort();
        self.watcher.abort();
        let (client, key, token) = (self.client.clone(), self.key.clone(), self.token);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = client.release(&key, token).await {
                    tracing::warn!(key, token, error = %e, "releasing a dropped lock failed; it expires with its lease");
                }
            });
        }
    }
}

/// The pause before the next renewal: a third of the TTL.
pub fn renew_interval(ttl: Duration) -> Duration {
    ttl / 3
}

/// Follows the key's events from the grant on; reports the lock lost as soon as an
/// event ends this token's hold.
async fn watch_for_loss(
    client: Arc<Client>,
    granted: Granted,
    lost: Arc<watch::Sender<Option<LostReason>>>,
) {
    let token = granted.lease.token;
    let key = granted.lease.key.clone();
    client
        .follow_events(&key, Some(token), |ev| {
            let ended = ev.lock_event().filter(|e| {
                matches!(
                    e.event,
                    EventKind::Released | EventKind::ForceReleased | EventKind::Expired
                ) && e.token == Some(token)
            });
            if let Some(e) = &ended {
                let reason = LostReason::Refused(format!(
                    "{} {} (token {token})",
                    key,
                    e.event.as_str().replace('_', " ")
                ));
                lost.send_if_modified(|r| {
                    r.is_none() && {
                        *r = Some(reason.clone());
                        true
                    }
                });
            }
            ended.is_none()
        })
        .await;
}

async fn keep_alive(
    client: Arc<Client>,
    mut granted: Granted,
    lost: Arc<watch::Sender<Option<LostReason>>>,
    safe_until: watch::Sender<Instant>,
) {
    let key = granted.lease.key.clone();
    let token = granted.lease.token;
    loop {
        let ttl = Duration::from_millis(granted.lease.ttl_ms);
        let deadline = granted.safe_until();
        let _ = safe_until.send(deadline);
        tokio::time::sleep_until((granted.sent_at + renew_interval(ttl)).min(deadline)).await;
        // Renew (retrying inside the client) until it succeeds, is refused, or the
        // safe deadline passes — whichever comes first.
        let renewal = tokio::select! {
            r = client.renew(&key, token, None) => r,
            _ = tokio::time::sleep_until(deadline) => {
                lost.send_if_modified(|r| r.is_none() && { *r = Some(LostReason::DeadlinePassed); true });
                return;
            }
        };
        match renewal {
            Ok(g) => granted = g,
            Err(ClientError::Lost(detail)) => {
                lost.send_if_modified(|r| {
                    r.is_none() && {
                        *r = Some(LostReason::Refused(detail));
                        true
                    }
                });
                return;
            }
            Err(e) => {
                // Retries ran out without a final answer; keep trying until the deadline.
                tracing::debug!(key, token, error = %e, "renewal failed; retrying");
                if Instant::now() >= deadline {
                    lost.send_if_modified(|r| {
                        r.is_none() && {
                            *r = Some(LostReason::DeadlinePassed);
                            true
                        }
                    });
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100).min(deadline - Instant::now())).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewals_come_three_times_per_lease() {
        assert_eq!(
            renew_interval(Duration::from_secs(30)),
            Duration::from_secs(10)
        );
        assert_eq!(
            renew_interval(Duration::from_millis(900)),
            Duration::from_millis(300)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn with_no_node_answering_the_lock_is_lost_at_the_safe_deadline() {
        let client = Arc::new(
            Client::new(&["127.0.0.1:9".to_string()])
                .unwrap()
                .with_call_timeout(Duration::from_secs(60)),
        );
        let sent_at = Instant::now();
        let granted = Granted {
            lease: super::super::Lease {
                key: "k".into(),
                owner: "o".into(),
                token: 5,
                acquired_at: String::new(),
                expires_at: String::new(),
                ttl_ms: 10_000,
            },
            sent_at,
        };
        let guard = LockGuard::keep(client, "o", granted);
        let reason = guard.lost().await;
        assert_eq!(reason, LostReason::DeadlinePassed);
        // 10 s lease, 2 s margin: lost at 8 s after the send, not later.
        let lost_after = Instant::now() - sent_at;
        assert!(
            lost_after >= Duration::from_secs(8) && lost_after < Duration::from_millis(8_010),
            "{lost_after:?}"
        );
        std::mem::forget(guard); // no release against a node that is not there
    }
}
