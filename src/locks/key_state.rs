//! [`KeyState`]: everything stored for one key — its holder, its FIFO queue of
//! [`Waiter`]s and its lock-delay. Plain data with small queries; the rules that change it
//! live in `table`.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::command::Grant;
use super::types::{Key, Owner};

/// An acquire waiting in a key's queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiter {
    pub owner: Owner,
    /// Lease of the grant it will get.
    pub ttl_ms: u64,
    /// Lock-delay of the grant it will get.
    pub lock_delay_ms: u64,
    /// Cluster time it joined.
    pub queued_at_ms: u64,
    /// Cluster time its wait runs out: it is never granted at or after this.
    pub wait_until_ms: u64,
}

impl Waiter {
    /// Still waiting at cluster time `now_ms`.
    pub fn is_live(&self, now_ms: u64) -> bool {
        self.wait_until_ms > now_ms
    }
}

/// One key's stored state. A key with no holder, no waiters and no running lock-delay
/// is not stored at all.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyState {
    pub key: Key,
    /// The last grant; it may have expired and not been noticed yet (see `table`).
    pub holder: Option<Grant>,
    /// Waiters in arrival order; some may have timed out and not been noticed yet.
    pub waiters: VecDeque<Waiter>,
    /// After an expired lease with a lock-delay: no grant before this cluster time.
    pub delay_until_ms: u64,
}

impl KeyState {
    pub fn new(key: Key) -> KeyState {
        KeyState {
            key,
            holder: None,
            waiters: VecDeque::new(),
            delay_until_ms: 0,
        }
    }

    /// The holder, if its lease runs at `now_ms`.
    pub fn live_holder(&self, now_ms: u64) -> Option<&Grant> {
        self.holder.as_ref().filter(|g| g.is_live(now_ms))
    }

    /// Waiters still waiting at `now_ms`, in order.
    pub fn live_waiters(&self, now_ms: u64) -> impl Iterator<Item = &Waiter> {
        self.waiters.iter().filter(move |w| w.is_live(now_ms))
    }

    /// 1-based place of `owner` in the queue, counting only waiters live at `now_ms`.
    pub fn position(&self, owner: &Owner, now_ms: u64) -> Option<u64> {
        self.live_waiters(now_ms)
            .position(|w| &w.owner == owner)
            .map(|i| i as u64 + 1)
    }

    /// Nothing left to keep at `now_ms`: no holder, no waiters, no running lock-delay.
    pub fn is_idle(&self, now_ms: u64) -> bool {
        self.holder.is_none() && self.waiters.is_empty() && self.delay_until_ms <= now_ms
    }

    /// The earliest cluster time after which a sweep has something to clean up here that
    /// no expiry of the holder covers: a waiter's deadline or the end of the lock-delay.
    pub fn next_cleanup_ms(&self) -> Option<u64> {
        let waiters = self.waiters.iter().map(|w| w.wait_until_ms);
        let delay =
            (self.holder.is_none() && self.delay_until_ms > 0).then_some(self.delay_until_ms);
        waiters.chain(delay).min()
    }
}
