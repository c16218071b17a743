//! [`LockTable`]: `apply()` and queries. The only place lock rules live.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use super::command::{Command, Grant, NotReleased, Release, Reply};
use super::error::{LockError, SnapshotError};
use super::types::{Key, Owner, Token};

/// The result of applying one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub reply: Reply,
    /// Keys whose stored grant was inserted, changed or removed; the storage adapter
    /// persists exactly these.
    pub changed: Vec<Key>,
}

impl Applied {
    fn unchanged(reply: Reply) -> Applied {
        Applied {
            reply,
            changed: Vec::new(),
        }
    }

    fn changed(reply: Reply, key: &Key) -> Applied {
        Applied {
            reply,
            changed: vec![key.clone()],
        }
    }

    /// The grant of a successful acquire or renew.
    pub fn grant(&self) -> Option<&Grant> {
        self.reply.grant()
    }
}

/// Answer of [`LockTable::validate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validation {
    /// The token holds the key's live lease right now.
    pub valid: bool,
    /// The live holder's token, if any.
    pub current_token: Option<Token>,
}

/// The serialised table: what a snapshot carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSnapshot {
    pub now_ms: u64,
    pub grants: Vec<Grant>,
}

/// Every stored grant, with an expiry index and the table's clock.
///
/// Invariant: `expiry` holds exactly one `(expires_at_ms, key)` per grant in `locks`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LockTable {
    locks: BTreeMap<Key, Grant>,
    expiry: BTreeSet<(u64, Key)>,
    /// Highest `now_ms` applied: state-machine time never goes backwards.
    now_ms: u64,
}

impl LockTable {
    /// Applies the command of log entry `index`. Deterministic: the same commands at the
    /// same indexes give the same table and replies on every replica.
    pub fn apply(&mut self, index: u64, cmd: &Command) -> Applied {
        let now = cmd.now_ms().max(self.now_ms);
        self.now_ms = now;
        match cmd {
            Command::Acquire {
                key, owner, ttl_ms, ..
            } => self.acquire(index, key, owner, *ttl_ms, now),
            Command::Renew {
                key, token, ttl_ms, ..
            } => self.renew(key, *token, *ttl_ms, now),
            Command::Release { key, token, .. } => {
                let held_by = self.get(key, now).map(|g| g.token);
                match held_by {
                    Some(t) if t == *token => self.remove_released(key, now),
                    Some(_) => {
                        Applied::unchanged(not_released(key, NotReleased::TokenMismatch, now))
                    }
                    None => Applied::unchanged(not_released(key, NotReleased::NotHeld, now)),
                }
            }
            Command::ReleaseByOwner { key, owner, .. } => {
                let held_by = self.get(key, now).map(|g| &g.owner);
                match held_by {
                    Some(o) if o == owner => self.remove_released(key, now),
                    Some(_) => Applied::unchanged(Reply::Refused(LockError::NotOwner {
                        key: key.clone(),
                        owner: owner.clone(),
                    })),
                    None => Applied::unchanged(not_released(key, NotReleased::NotHeld, now)),
                }
            }
            Command::ForceRelease { key, .. } => {
                if self.get(key, now).is_some() {
                    self.remove_released(key, now)
                } else {
                    Applied::unchanged(not_released(key, NotReleased::NotHeld, now))
                }
            }
            Command::Sweep { .. } => self.sweep(now),
            Command::RefreshLeases { live_at_ms, .. } => self.refresh((*live_at_ms).min(now), now),
        }
    }

    fn acquire(&mut self, index: u64, key: &Key, owner: &Owner, ttl_ms: u64, now: u64) -> Applied {
        let grant = match self.get(key, now) {
            Some(g) if &g.owner != owner => {
                return Applied::unchanged(Reply::Refused(LockError::Held { holder: g.clone() }));
            }
            // Idempotent for its owner: the same grant, its lease extended.
            Some(g) => Grant {
                ttl_ms,
                expires_at_ms: now.saturating_add(ttl_ms),
                renewed_at_ms: now,
                ..g.clone()
            },
            None => Grant {
                key: key.clone(),
                owner: owner.clone(),
                token: Token(index),
                acquired_at_ms: now,
                renewed_at_ms: now,
                expires_at_ms: now.saturating_add(ttl_ms),
                ttl_ms,
            },
        };
        self.put(grant.clone());
        Applied::changed(Reply::Granted(grant), key)
    }

    fn renew(&mut self, key: &Key, token: Token, ttl_ms: Option<u64>, now: u64) -> Applied {
        let grant = match self.get(key, now) {
            Some(g) if g.token == token => {
                let ttl_ms = ttl_ms.unwrap_or(g.ttl_ms);
                Grant {
                    ttl_ms,
                    expires_at_ms: now.saturating_add(ttl_ms),
                    renewed_at_ms: now,
                    ..g.clone()
                }
            }
            other => {
                return Applied::unchanged(Reply::Refused(LockError::Lost {
                    key: key.clone(),
                    token,
                    current: other.map(|g| g.token),
                }));
            }
        };
        self.put(grant.clone());
        Applied::changed(Reply::Granted(grant), key)
    }

    fn sweep(&mut self, now: u64) -> Applied {
        let expired: Vec<Key> = self
            .expiry
            .iter()
            .take_while(|(expires_at, _)| *expires_at <= now)
            .map(|(_, key)| key.clone())
            .collect();
        for key in &expired {
            self.remove(key);
        }
        Applied {
            reply: Reply::Swept {
                expired: expired.len() as u64,
            },
            changed: expired,
        }
    }

    fn refresh(&mut self, live_at: u64, now: u64) -> Applied {
        let extended: Vec<Grant> = self
            .locks
            .values()
            .filter(|g| g.is_live(live_at) && g.expires_at_ms < now.saturating_add(g.ttl_ms))
            .map(|g| Grant {
                expires_at_ms: now.saturating_add(g.ttl_ms),
                ..g.clone()
            })
            .collect();
        let changed: Vec<Key> = extended.iter().map(|g| g.key.clone()).collect();
        for g in extended {
            self.put(g);
        }
        Applied {
            reply: Reply::Refreshed {
                leases: changed.len() as u64,
            },
            changed,
        }
    }

    fn remove_released(&mut self, key: &Key, now: u64) -> Applied {
        self.remove(key);
        Applied::changed(
            Reply::Released(Release {
                key: key.clone(),
                released: true,
                reason: None,
                at_ms: now,
            }),
            key,
        )
    }

    fn put(&mut self, grant: Grant) {
        if let Some(old) = self.locks.get(&grant.key) {
            self.expiry.remove(&(old.expires_at_ms, old.key.clone()));
        }
        self.expiry.insert((grant.expires_at_ms, grant.key.clone()));
        self.locks.insert(grant.key.clone(), grant);
    }

    fn remove(&mut self, key: &Key) {
        if let Some(old) = self.locks.remove(key) {
            self.expiry.remove(&(old.expires_at_ms, old.key));
        }
    }

    /// The table's clock: the highest `now_ms` applied.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Stored grants, including expired ones not yet swept.
    pub fn len(&self) -> usize {
        self.locks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.locks.is_empty()
    }

    /// The stored grant of `key`, live or not (for persistence).
    pub fn stored(&self, key: &Key) -> Option<&Grant> {
        self.locks.get(key)
    }

    /// The live grant of `key` at cluster time `now_ms`.
    pub fn get(&self, key: &Key, now_ms: u64) -> Option<&Grant> {
        self.locks.get(key).filter(|g| g.is_live(now_ms))
    }

    /// Up to `limit` live grants whose keys start with `prefix` and sort after `after`,
    /// in key order.
    pub fn list(
        &self,
        prefix: &str,
        after: Option<&Key>,
        limit: usize,
        now_ms: u64,
    ) -> Vec<&Grant> {
        let start = match after {
            Some(a) if a.as_str() >= prefix => Bound::Excluded(a.as_str()),
            _ => Bound::Included(prefix),
        };
        self.locks
            .range::<str, _>((start, Bound::Unbounded))
            .map(|(_, g)| g)
            .take_while(|g| g.key.as_str().starts_with(prefix))
            .filter(|g| g.is_live(now_ms))
            .take(limit)
            .collect()
    }

    /// Whether `token` holds `key`'s live lease at `now_ms`.
    pub fn validate(&self, key: &Key, token: Token, now_ms: u64) -> Validation {
        let current_token = self.get(key, now_ms).map(|g| g.token);
        Validation {
            valid: current_token == Some(token),
            current_token,
        }
    }

    /// Every stored grant, in key order.
    pub fn grants(&self) -> impl Iterator<Item = &Grant> {
        self.locks.values()
    }

    /// The earliest lease end among stored grants: when a sweep would remove something.
    pub fn next_expiry_ms(&self) -> Option<u64> {
        self.expiry.first().map(|(expires_at, _)| *expires_at)
    }

    /// The table as a snapshot.
    pub fn to_snapshot(&self) -> TableSnapshot {
        TableSnapshot {
            now_ms: self.now_ms,
            grants: self.locks.values().cloned().collect(),
        }
    }

    /// Rebuilds a table (and its expiry index) from a snapshot.
    pub fn from_snapshot(snapshot: TableSnapshot) -> Result<LockTable, SnapshotError> {
        Self::from_parts(snapshot.now_ms, snapshot.grants)
    }

    /// Rebuilds a table from its clock and grants (as loaded from storage).
    pub fn from_parts(
        now_ms: u64,
        grants: impl IntoIterator<Item = Grant>,
    ) -> Result<LockTable, SnapshotError> {
        let mut table = LockTable {
            now_ms,
            ..LockTable::default()
        };
        for grant in grants {
            if table.locks.contains_key(&grant.key) {
                return Err(SnapshotError::DuplicateKey(grant.key));
            }
            table.put(grant);
        }
        Ok(table)
    }

    /// Checks the expiry index against the lock map (tests and debug builds).
    #[cfg(test)]
    pub(crate) fn assert_consistent(&self) {
        let expected: BTreeSet<(u64, Key)> = self
            .locks
            .values()
            .map(|g| (g.expires_at_ms, g.key.clone()))
            .collect();
        assert_eq!(self.expiry, expected, "expiry index out of sync");
        assert!(self.locks.iter().all(|(k, g)| k == &g.key));
    }
}

fn not_released(key: &Key, reason: NotReleased, now: u64) -> Reply {
    Reply::Released(Release {
        key: key.clone(),
        released: false,
        reason: Some(reason),
        at_ms: now,
    })
}
