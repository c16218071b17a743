//! Quotas on lock state and on this node's resources: waiters per key and in total,
//! stored keys, open event streams, and one snapshot build at a time.
//!
//! # Where each cap is enforced, and why
//! - **Waiters and locks** are admitted by the leader's acquire handler *before* it
//!   proposes (followers relay acquires, so every acquire passes here on the node that
//!   proposes it). The check reads the applied table (the queue length, the stored keys
//!   and [`crate::locks::LockTable::waiters_total`], each O(1) or O(one queue)) plus the
//!   acquires this leader has in flight, which reserve their place until their entry is
//!   applied: a burst of concurrent acquires cannot overshoot while one leader serves
//!   them. A cap inside the state machine would be exact across leader changes, but it
//!   would have to travel in every replicated command (a replica must never read its
//!   own config at apply time, or replicas with different configs diverge) and change
//!   the command format three helpers share this round. These are resource guards, not
//!   lock semantics; the price is a bounded overshoot: acquires a deposed leader had in
//!   flight, and an acquire whose request timed out (`OUTCOME_UNKNOWN`) but commits later.
//! - **An owner already queued on, or holding, the key** is always admitted: a retry
//!   adds nothing, and a client must be able to retry after a lost reply.
//! - **Event streams** are a per-node resource: a semaphore here, one permit per open
//!   stream, returned when the stream ends.
//! - **Snapshots**: `POST /v1/cluster/snapshot` while one is being built waits for that
//!   build instead of starting another (see [`SnapshotGate`]).
//!
//! Refusals are 429 (`QUEUE_FULL`, `TOO_MANY_LOCKS`: a quota that frees up as others let
//! go) or 503 (`TOO_MANY_STREAMS`: this node is busy, another may not be), each with a
//! `Retry-After`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::problem::ApiError;
use crate::config::ApiConfig;
use crate::locks::{Key, Owner};
use crate::node::Node;
use crate::sync::LockUnpoisoned;

/// The quotas of one node's API.
pub struct Quotas {
    max_waiters_per_key: usize,
    max_waiters: usize,
    max_locks: usize,
    max_event_streams: usize,
    in_flight: Mutex<InFlight>,
    streams: Arc<Semaphore>,
    /// Serialises `POST /v1/cluster/snapshot` calls.
    pub snapshot: SnapshotGate,
}

/// Acquires admitted here whose entries are not applied yet.
#[derive(Debug, Default)]
struct InFlight {
    waiters: usize,
    waiters_by_key: BTreeMap<Key, usize>,
    new_keys: usize,
}

/// The place an admitted acquire holds until its entry is applied (or its proposal
/// failed); dropping it gives the place back.
#[must_use = "the place is given back when this is dropped"]
pub struct Admission {
    quotas: Option<Arc<Quotas>>,
    key: Key,
    waiter: bool,
    new_key: bool,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let Some(quotas) = self.quotas.take() else {
            return;
        };
        let mut f = quotas.in_flight.lock_unpoisoned();
        if self.new_key {
            f.new_keys -= 1;
        }
        if self.waiter {
            f.waiters -= 1;
            if let Some(n) = f.waiters_by_key.get_mut(&self.key) {
                *n -= 1;
                if *n == 0 {
                    f.waiters_by_key.remove(&self.key);
                }
            }
        }
    }
}

/// What the applied table says about an acquire of `key` by `owner`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TableView {
    /// The key is stored (held, queued or in lock-delay).
    stored: bool,
    /// The owner holds the key or waits in its queue already.
    known_owner: bool,
    /// Waiters in the key's queue.
    key_waiters: usize,
    /// Stored keys.
    locks: usize,
    /// Waiters in all queues.
    waiters: usize,
}

impl Quotas {
    pub fn new(api: &ApiConfig) -> Quotas {
        Quotas {
            max_waiters_per_key: api.max_waiters_per_key,
            max_waiters: api.max_waiters,
            max_locks: api.max_locks,
            max_event_streams: api.max_event_streams,
            in_flight: Mutex::new(InFlight::default()),
            streams: Arc::new(Semaphore::new(api.max_event_streams)),
            snapshot: SnapshotGate::default(),
        }
    }

    /// Admits an acquire of `key` by `owner` (`waits`: with `wait_ms > 0`, so it may
    /// queue) against the waiter and lock quotas, or refuses it.
    pub fn admit_acquire(
        self: &Arc<Self>,
        node: &Node,
        key: &Key,
        owner: &Owner,
        waits: bool,
    ) -> Result<Admission, ApiError> {
        // Held across the table read, so two admissions cannot both see the last place.
        let mut f = self.in_flight.lock_unpoisoned();
        let view = node.with_local_table(|t| {
            let st = t.stored(key);
            TableView {
                stored: st.is_some(),
                known_owner: st.is_some_and(|st| {
                    st.holder.as_ref().is_some_and(|h| &h.owner == owner)
                        || st.waiters.iter().any(|w| &w.owner == owner)
                }),
                key_waiters: st.map_or(0, |st| st.waiters.len()),
                locks: t.len(),
                waiters: t.waiters_total(),
            }
        });
        let (waiter, new_key) = self.check(&f, key, view, waits)?;
        if new_key {
            f.new_keys += 1;
        }
        if waiter {
            f.waiters += 1;
            *f.waiters_by_key.entry(key.clone()).or_default() += 1;
        }
        Ok(Admission {
            quotas: Some(self.clone()),
            key: key.clone(),
            waiter,
            new_key,
        })
    }

    /// The rule: whether the acquire may add a waiter and a stored key, counting the
    /// ones in flight; the refusal names the quota.
    fn check(
        &self,
        f: &InFlight,
        key: &Key,
        view: TableView,
        waits: bool,
    ) -> Result<(bool, bool), ApiError> {
        if view.known_owner {
            return Ok((false, false));
        }
        let new_key = !view.stored;
        if new_key && view.locks + f.new_keys >= self.max_locks {
            return Err(ApiError::TooManyLocks(format!(
                "{} keys are stored or being acquired, the most api.max_locks allows ({}); {key} can be acquired once others are released",
                view.locks + f.new_keys,
                self.max_locks
            )));
        }
        if waits {
            let on_key = view.key_waiters + f.waiters_by_key.get(key).copied().unwrap_or(0);
            if on_key >= self.max_waiters_per_key {
                return Err(ApiError::QueueFull(format!(
                    "{key} has {on_key} waiters queued or joining, the most api.max_waiters_per_key allows ({})",
                    self.max_waiters_per_key
                )));
            }
            let all = view.waiters + f.waiters;
            if all >= self.max_waiters {
                return Err(ApiError::QueueFull(format!(
                    "{all} waiters are queued or joining on this cluster, the most api.max_waiters allows ({})",
                    self.max_waiters
                )));
            }
        }
        Ok((waits, new_key))
    }

    /// A place for one more event stream on this node, held as long as the stream runs.
    pub fn open_stream(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.streams.clone().try_acquire_owned().map_err(|_| {
            ApiError::TooManyStreams(format!(
                "this node serves {} event streams, the most api.max_event_streams allows; retry, or use another node",
                self.max_event_streams
            ))
        })
    }
}

/// Coalesces snapshot requests: 200 `POST /v1/cluster/snapshot` calls in a burst built 9
/// full snapshots. A call waits for the build in progress; when it ends, the call is
/// answered by it if it covers every entry applied when the call arrived, and starts
/// (one) build otherwise. A burst builds at most two snapshots.
#[derive(Default)]
pub struct SnapshotGate {
    turn: tokio::sync::Mutex<()>,
}

impl SnapshotGate {
    /// Waits for this call's turn; the guard ends it.
    pub async fn turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.turn.lock().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    fn quotas(per_key: usize, waiters: usize, locks: usize) -> Quotas {
        Quotas::new(&ApiConfig {
            max_waiters_per_key: per_key,
            max_waiters: waiters,
            max_locks: locks,
            ..ApiConfig::default()
        })
    }

    fn view(stored: bool, key_waiters: usize, locks: usize, waiters: usize) -> TableView {
        TableView {
            stored,
            known_owner: false,
            key_waiters,
            locks,
            waiters,
        }
    }

    fn code(r: Result<(bool, bool), ApiError>) -> Result<(bool, bool), crate::wire::ErrorCode> {
        r.map_err(|e| e.parts().0)
    }

    use crate::wire::ErrorCode::{QueueFull, TooManyLocks};

    #[test_case(view(true, 2, 5, 2), true, Ok((true, false)); "room in the queue")]
    #[test_case(view(true, 3, 5, 3), true, Err(QueueFull); "the key's queue is full")]
    #[test_case(view(true, 0, 5, 10), true, Err(QueueFull); "all queues are full")]
    #[test_case(view(true, 3, 5, 3), false, Ok((false, false)); "a non-waiting acquire never queues")]
    #[test_case(view(false, 0, 10, 0), false, Err(TooManyLocks); "a new key beyond the lock cap")]
    #[test_case(view(true, 0, 10, 0), false, Ok((false, false)); "a stored key is no new lock")]
    #[test_case(view(false, 0, 9, 0), true, Ok((true, true)); "the last new key")]
    fn an_acquire_is_admitted_within_the_quotas(
        view: TableView,
        waits: bool,
        expected: Result<(bool, bool), crate::wire::ErrorCode>,
    ) {
        let q = quotas(3, 10, 10);
        let key = Key::parse("k").unwrap();
        assert_eq!(
            code(q.check(&InFlight::default(), &key, view, waits)),
            expected
        );
    }

    #[test]
    fn an_owner_already_queued_or_holding_is_always_admitted() {
        let q = quotas(1, 1, 1);
        let key = Key::parse("k").unwrap();
        let full = TableView {
            known_owner: true,
            ..view(true, 1, 1, 1)
        };
        assert_eq!(
            code(q.check(&InFlight::default(), &key, full, true)),
            Ok((false, false))
        );
    }

    #[test]
    fn acquires_in_flight_count_against_the_quotas() {
        let q = quotas(2, 100, 3);
        let key = Key::parse("k").unwrap();
        let other = Key::parse("other").unwrap();
        let f = InFlight {
            waiters: 1,
            waiters_by_key: BTreeMap::from([(key.clone(), 1)]),
            new_keys: 1,
        };
        assert_eq!(
            code(q.check(&f, &key, view(true, 1, 1, 1), true)),
            Err(QueueFull)
        );
        assert_eq!(
            code(q.check(&f, &other, view(true, 1, 1, 1), true)),
            Ok((true, false))
        );
        assert_eq!(
            code(q.check(&f, &other, view(false, 0, 2, 1), false)),
            Err(TooManyLocks)
        );
    }

    #[test]
    fn streams_beyond_the_cap_are_refused_until_one_ends() {
        let q = Quotas::new(&ApiConfig {
            max_event_streams: 2,
            ..ApiConfig::default()
        });
        let a = q.open_stream().expect("first");
        let _b = q.open_stream().expect("second");
        assert_eq!(
            q.open_stream().map(|_| ()).unwrap_err().parts().0,
            crate::wire::ErrorCode::TooManyStreams
        );
        drop(a);
        assert!(q.open_stream().is_ok());
    }
}
