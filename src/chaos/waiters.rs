//! The queue and lock-delay part of the chaos workload.
//!
//! - **Waiters** queue on a few hot `queue-*` keys with `wait_ms`, from random nodes
//!   (a follower relays the wait to the leader). Each request names an owner of its own
//!   (`waiter-N#M`; the history's process is `waiter-N`), so that every event and every
//!   grant names exactly one request. One request in ten drops its connection mid-wait
//!   (the node must cancel the wait, or the grant must expire on its own), one in ten
//!   is cancelled from a second connection (`POST /v1/locks/{key}/cancel`); the others
//!   hold a granted key briefly and release it.
//! - The **delayer** takes `delay-*` keys with a `lock_delay_ms` and mostly lets the
//!   lease run out; its **watcher** polls until it gets the key, so grants right after a
//!   lock-delay (and refusals naming `available_at`) are recorded.

use std::time::{Duration, Instant};

use rand::Rng;

use super::history::{OpKind, Outcome};
use super::workload::{Client, REQUEST_TIMEOUT};
use crate::wire::{AcquireRequest, CancelReason, CancelRequest, Cancelled};

/// Hot keys the waiters share.
pub const QUEUE_KEYS: usize = 3;
/// Keys the delayer cycles through.
pub const DELAY_KEYS: usize = 2;
/// TTL of waiters' grants: short, so that an orphan grant must end soon.
const WAITER_TTL_MS: u64 = 1_000;
/// Longest wait a waiter asks for.
const MAX_WAIT_MS: u64 = 2_500;
/// TTL of the delayer's grants, and the range of its lock-delays.
const DELAY_TTL_MS: u64 = 400;
const DELAY_MS: std::ops::Range<u64> = 200..1_200;
/// TTL of the delay watcher's grants, and how often it tries.
const DELAY_WATCH_TTL_MS: u64 = 300;
const DELAY_WATCH_PERIOD: Duration = Duration::from_millis(50);
/// How long the delay watcher keeps trying before it gives a key up.
const DELAY_WATCH_LIMIT: Duration = Duration::from_secs(15);

/// The keys followed for events: every key whose history the queue and event checks read.
pub fn followed_keys() -> Vec<String> {
    let queue = (0..QUEUE_KEYS).map(|i| format!("queue-{i}"));
    queue
        .chain((0..DELAY_KEYS).map(|i| format!("delay-{i}")))
        .collect()
}

impl Client {
    /// Acquires `key` for `self.name`, waiting up to `wait_ms` in its queue; gives up
    /// (drops the connection) after `disconnect_after` if set. Returns the token granted.
    async fn wait_acquire(
        &mut self,
        key: &str,
        wait_ms: u64,
        disconnect_after: Option<Duration>,
    ) -> Option<u64> {
        let t = self.rec.now_ms();
        // The node answers within the wait plus a relay and a commit; allow a request
        // timeout on top before calling the outcome unknown.
        let timeout = disconnect_after.unwrap_or(Duration::from_millis(wait_ms) + REQUEST_TIMEOUT);
        let a = self
            .call_within(
                reqwest::Method::POST,
                &format!("/v1/locks/{key}/acquire"),
                Some(&AcquireRequest {
                    owner: self.name.clone(),
                    ttl_ms: Some(WAITER_TTL_MS),
                    wait_ms: Some(wait_ms),
                    ..Default::default()
                }),
                timeout,
            )
            .await;
        let mut op = self.op(OpKind::Acquire, key, None, t, &a);
        op.wait_ms = Some(wait_ms);
        op.ttl_ms = op.ttl_ms.or(Some(WAITER_TTL_MS));
        if disconnect_after.is_some() && op.error.as_deref() == Some("timeout") {
            op.error = Some("disconnected".into());
        }
        let token = (a.outcome == Outcome::Ok).then_some(op.token).flatten();
        self.rec.push(op);
        token
    }

    /// Cancels `self.name`'s wait on `key` (and releases a grant the queue made meanwhile).
    async fn cancel(&mut self, key: &str) {
        let t = self.rec.now_ms();
        let a = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/locks/{key}/cancel"),
                Some(&CancelRequest {
                    owner: self.name.clone(),
                    reason: CancelReason::Disconnected,
                }),
            )
            .await;
        let mut op = self.op(OpKind::Cancel, key, None, t, &a);
        if let Ok(c) = serde_json::from_value::<Cancelled>(a.body.clone()) {
            op.was_queued = Some(c.was_queued);
            op.token = c.released_token;
        }
        self.rec.push(op);
    }

    /// Acquires with a lock-delay; returns the token granted.
    async fn acquire_delayed(&mut self, key: &str, delay_ms: u64) -> Option<u64> {
        let t = self.rec.now_ms();
        let a = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/locks/{key}/acquire"),
                Some(&AcquireRequest {
                    owner: self.name.clone(),
                    ttl_ms: Some(DELAY_TTL_MS),
                    lock_delay_ms: Some(delay_ms),
                    ..Default::default()
                }),
            )
            .await;
        let mut op = self.op(OpKind::Acquire, key, None, t, &a);
        op.lock_delay_ms = Some(delay_ms);
        op.ttl_ms = op.ttl_ms.or(Some(DELAY_TTL_MS));
        let token = (a.outcome == Outcome::Ok).then_some(op.token).flatten();
        self.rec.push(op);
        token
    }
}

async fn pause(c: &mut Client, ms: std::ops::Range<u64>) {
    tokio::time::sleep(Duration::from_millis(c.rng.gen_range(ms))).await;
}

/// Queues on the hot keys, one owner per request (module docs).
pub(super) async fn waiter(mut c: Client, until: Instant) {
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        c.name = format!("{}#{n}", c.process);
        let key = format!("queue-{}", c.rng.gen_range(0..QUEUE_KEYS));
        let wait_ms = c.rng.gen_range(200..MAX_WAIT_MS);
        match c.rng.gen_range(0..10) {
            0 => {
                let after = Duration::from_millis(c.rng.gen_range(50..wait_ms));
                c.wait_acquire(&key, wait_ms, Some(after)).await;
            }
            1 => {
                let mut other = c.fork();
                let after = Duration::from_millis(c.rng.gen_range(50..wait_ms));
                let cancel = async {
                    tokio::time::sleep(after).await;
                    other.cancel(&key).await;
                };
                let (token, ()) = tokio::join!(c.wait_acquire(&key, wait_ms, None), cancel);
                // Granted before the cancel landed: the cancel released it, or will be
                // answered `released: false` here.
                if let Some(token) = token {
                    c.release(&key, token).await;
                }
            }
            _ => {
                if let Some(token) = c.wait_acquire(&key, wait_ms, None).await {
                    pause(&mut c, 50..400).await;
                    c.release(&key, token).await;
                }
            }
        }
        pause(&mut c, 10..100).await;
    }
}

/// Takes `delay-*` keys with a lock-delay and mostly abandons them; the watcher polls
/// until it gets each one (module docs).
pub(super) async fn delayer(mut c: Client, mut watcher: Client, until: Instant) {
    let mut round = 0;
    while Instant::now() < until {
        let key = format!("delay-{}", round % DELAY_KEYS);
        round += 1;
        let delay_ms = c.rng.gen_range(DELAY_MS);
        let Some(token) = c.acquire_delayed(&key, delay_ms).await else {
            pause(&mut c, 50..150).await;
            continue;
        };
        if c.rng.gen_ratio(1, 3) {
            pause(&mut c, 20..200).await;
            c.release(&key, token).await;
        }
        let give_up = Instant::now() + DELAY_WATCH_LIMIT;
        while Instant::now() < give_up && Instant::now() < until {
            tokio::time::sleep(DELAY_WATCH_PERIOD).await;
            if let Some(token) = watcher.acquire(&key, DELAY_WATCH_TTL_MS).await {
                watcher.release(&key, token).await;
                break;
            }
        }
    }
}
