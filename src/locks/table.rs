//! [`LockTable`]: `apply()` and queries. The only place lock rules live.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use super::command::{
    AcquireOptions, CancelReason, Command, Grant, NotReleased, Queued, Release, Reply,
};
use super::error::{LockError, SnapshotError};
use super::event::{Event, EventKind};
use super::key_state::{same_app, KeyState, Waiter};
use super::types::{AppName, Key, Owner, Token};

/// The result of applying one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub reply: Reply,
    /// Keys whose stored state was inserted, changed or removed; the storage adapter
    /// persists exactly these.
    pub changed: Vec<Key>,
    /// What happened, in order.
    pub events: Vec<Event>,
}

impl Applied {
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

/// Answer of [`LockTable::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListPage<'a> {
    /// Live grants in key order.
    pub grants: Vec<&'a Grant>,
    /// Set when the walk stopped at its scan bound with keys left in range: the next
    /// walk starts after this key (which may hold no live grant).
    pub resume_after: Option<Key>,
}

/// The serialised table: what a snapshot carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSnapshot {
    pub now_ms: u64,
    pub keys: Vec<KeyState>,
}

/// Every stored key, with an expiry index, a token index, the keys that have waiters or
/// a lock-delay, the number of waiters, and the table's clock.
///
/// Invariants: `expiry` holds exactly one `(expires_at_ms, key)` per stored holder;
/// `tokens` maps exactly every stored holder's token to its key (tokens are unique: each
/// is the index of the entry that granted it);
/// `pending` holds exactly the keys with waiters or a lock-delay set; `waiters` is the
/// sum of every stored key's queue length; no stored key is idle (no holder, no
/// waiters, no delay).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LockTable {
    keys: BTreeMap<Key, KeyState>,
    expiry: BTreeSet<(u64, Key)>,
    /// Token -> key of every stored holder, for lookups by token alone (the Tracker
    /// compat API's lock ids). Derived like `expiry`: never stored, rebuilt by
    /// [`LockTable::from_parts`] at start-up and on snapshot install.
    tokens: BTreeMap<Token, Key>,
    pending: BTreeSet<Key>,
    /// Waiters in all queues, including those whose wait ran out and that no entry has
    /// removed yet (the API's quota reads it on every waiting acquire: no walk).
    waiters: usize,
    /// Highest `now_ms` applied: state-machine time never goes backwards.
    now_ms: u64,
}

/// The context of applying one entry.
///
/// One entry grants at most one lock: a token is the index of the entry that granted it,
/// and two grants in one entry would share it. A release that frees a key with waiters
/// grants the first one in the same entry; anything that would need a second grant is
/// left to a later [`Command::Handoff`].
struct Step {
    index: u64,
    now: u64,
    granted: bool,
    events: Vec<Event>,
    changed: BTreeSet<Key>,
    /// The application the command came from ([`Command::AsApp`]); `None`: auth off.
    caller: Option<AppName>,
    /// The caller may release any lock on the key (`admin`).
    release_any: bool,
}

impl Step {
    /// An event about a grant or wait of application `app`.
    fn event(
        &mut self,
        key: &Key,
        kind: EventKind,
        (owner, app): (&Owner, Option<&AppName>),
        token: Option<Token>,
        at_ms: u64,
    ) {
        self.events.push(Event {
            index: self.index,
            key: key.clone(),
            kind,
            owner: owner.clone(),
            token,
            at_ms,
            expires_at_ms: None,
            app: app.cloned(),
            by: None,
        });
    }

    /// An `acquired` or `renewed` event of `grant`, at this step's time.
    fn grant_event(&mut self, kind: EventKind, grant: &Grant) {
        let who = (&grant.owner, grant.app.as_ref());
        self.event(&grant.key, kind, who, Some(grant.token), self.now);
        if let Some(e) = self.events.last_mut() {
            e.expires_at_ms = Some(grant.expires_at_ms);
        }
    }

    /// Does `recorded` (a grant's or waiter's application) belong to the caller?
    fn owns(&self, recorded: Option<&AppName>) -> bool {
        same_app(recorded, self.caller.as_ref())
    }

    /// The refusal of a caller acting on another application's lock or wait.
    fn not_yours(&self, key: &Key) -> Reply {
        match &self.caller {
            Some(app) => Reply::Refused(LockError::NotYourLock {
                key: key.clone(),
                app: app.clone(),
            }),
            // `owns` is true for every grant without a caller; kept total all the same.
            None => Reply::Nothing,
        }
    }
}

/// May [`LockTable::settle`] grant the first waiter?
#[derive(Clone, Copy, PartialEq, Eq)]
enum Grants {
    Allowed,
    Forbidden,
}

impl LockTable {
    /// Applies the command of log entry `index`. Deterministic: the same commands at the
    /// same indexes give the same table, replies and events on every replica.
    pub fn apply(&mut self, index: u64, cmd: &Command) -> Applied {
        let now = cmd.now_ms().max(self.now_ms);
        self.now_ms = now;
        let (cmd, caller, release_any) = match cmd {
            Command::AsApp {
                app,
                release_any,
                command,
            } => (&**command, Some(app.clone()), *release_any),
            other => (other, None, false),
        };
        let mut step = Step {
            index,
            now,
            granted: false,
            events: Vec::new(),
            changed: BTreeSet::new(),
            caller,
            release_any,
        };
        let reply = match cmd {
            Command::Sweep { .. } => self.sweep(&mut step),
            Command::RefreshLeases { live_at_ms, .. } => {
                self.refresh((*live_at_ms).min(now), &mut step)
            }
            _ => match cmd.key() {
                Some(key) => {
                    let mut state = self.take(key);
                    let reply = self.apply_to_key(&mut state, cmd, &mut step);
                    self.put_back(state, now);
                    reply
                }
                // Every command but the two above names a key.
                None => Reply::Nothing,
            },
        };
        Applied {
            reply,
            changed: step.changed.into_iter().collect(),
            events: step.events,
        }
    }

    fn apply_to_key(&mut self, st: &mut KeyState, cmd: &Command, step: &mut Step) -> Reply {
        match cmd {
            Command::Acquire {
                owner,
                ttl_ms,
                wait_ms,
                lock_delay_ms,
                ..
            } => {
                let options = AcquireOptions {
                    ttl_ms: *ttl_ms,
                    wait_ms: *wait_ms,
                    lock_delay_ms: *lock_delay_ms,
                };
                self.settle(st, step, Grants::Allowed);
                acquire(st, owner, options, step)
            }
            Command::Renew { token, ttl_ms, .. } => {
                self.settle(st, step, Grants::Allowed);
                match st.holder.as_ref() {
                    Some(h) if !step.owns(h.app.as_ref()) => step.not_yours(&st.key),
                    _ => renew(st, *token, *ttl_ms, step),
                }
            }
            Command::Release { token, .. } => {
                self.settle(st, step, Grants::Allowed);
                let reply = match st.holder.as_ref() {
                    Some(h) if !step.owns(h.app.as_ref()) && !step.release_any => {
                        step.not_yours(&st.key)
                    }
                    Some(h) if h.token == *token => {
                        let kind = release_kind(step, h);
                        release(st, kind, step)
                    }
                    Some(_) => not_released(&st.key, NotReleased::TokenMismatch, step.now),
                    None => not_released(&st.key, NotReleased::NotHeld, step.now),
                };
                self.settle(st, step, Grants::Allowed);
                reply
            }
            Command::ReleaseByApp { app, .. } => {
                self.settle(st, step, Grants::Allowed);
                let reply = match st.holder.as_ref() {
                    Some(h) if h.app.as_ref() == Some(app) => {
                        release(st, EventKind::Released, step)
                    }
                    _ => not_released(&st.key, NotReleased::NotHeld, step.now),
                };
                self.settle(st, step, Grants::Allowed);
                reply
            }
            Command::ReleaseByOwner { owner, .. } => {
                self.settle(st, step, Grants::Allowed);
                let reply = match st.holder.as_ref() {
                    Some(h) if !step.owns(h.app.as_ref()) && !step.release_any => {
                        step.not_yours(&st.key)
                    }
                    Some(h) if &h.owner == owner => {
                        let kind = release_kind(step, h);
                        release(st, kind, step)
                    }
                    Some(_) => Reply::Refused(LockError::NotOwner {
                        key: st.key.clone(),
                        owner: owner.clone(),
                    }),
                    None => not_released(&st.key, NotReleased::NotHeld, step.now),
                };
                self.settle(st, step, Grants::Allowed);
                reply
            }
            Command::ForceRelease { .. } => {
                self.settle(st, step, Grants::Allowed);
                // An admin frees the key outright: a running lock-delay ends too.
                if st.delay_until_ms > 0 {
                    st.delay_until_ms = 0;
                    step.changed.insert(st.key.clone());
                }
                let reply = if st.holder.is_some() {
                    release(st, EventKind::ForceReleased, step)
                } else {
                    not_released(&st.key, NotReleased::NotHeld, step.now)
                };
                self.settle(st, step, Grants::Allowed);
                reply
            }
            Command::CancelWait { owner, reason, .. } => {
                // The queue must not grant this owner just to take it back.
                self.settle(st, step, Grants::Forbidden);
                let reply = cancel_wait(st, owner, *reason, step);
                self.settle(st, step, Grants::Allowed);
                reply
            }
            Command::Handoff { .. } => {
                let before = step.granted;
                self.settle(st, step, Grants::Allowed);
                let granted = (step.granted && !before)
                    .then(|| st.holder.clone())
                    .flatten();
                Reply::HandedOff { granted }
            }
            Command::AcquireExclusive { owner, ttl_ms, .. } => {
                self.settle(st, step, Grants::Allowed);
                match st.holder.as_ref() {
                    Some(h) => Reply::Refused(LockError::Held { holder: h.clone() }),
                    None => acquire(st, owner, AcquireOptions::ttl(*ttl_ms), step),
                }
            }
            // Table-wide commands are applied by `apply` itself, which also unwraps one
            // `AsApp`; a nested one is never proposed.
            Command::Sweep { .. } | Command::RefreshLeases { .. } | Command::AsApp { .. } => {
                Reply::Nothing
            }
        }
    }

    /// Brings a key up to date at the step's time: an expired holder is removed (and its
    /// lock-delay starts), waiters whose wait ran out leave the queue, and — when allowed
    /// and this entry has granted nothing yet — a free key goes to its first waiter.
    fn settle(&mut self, st: &mut KeyState, step: &mut Step, grants: Grants) {
        let now = step.now;
        if let Some(h) = st.holder.take_if(|h| !h.is_live(now)) {
            st.delay_until_ms = st
                .delay_until_ms
                .max(h.expires_at_ms.saturating_add(h.lock_delay_ms));
            step.event(
                &st.key,
                EventKind::Expired,
                (&h.owner, h.app.as_ref()),
                Some(h.token),
                h.expires_at_ms,
            );
            step.changed.insert(st.key.clone());
        }
        if st.waiters.iter().any(|w| !w.is_live(now)) {
            let (live, gone): (Vec<Waiter>, Vec<Waiter>) =
                st.waiters.drain(..).partition(|w| w.is_live(now));
            st.waiters = live.into();
            for w in gone {
                step.event(
                    &st.key,
                    EventKind::WaitTimeout,
                    (&w.owner, w.app.as_ref()),
                    None,
                    w.wait_until_ms,
                );
            }
            step.changed.insert(st.key.clone());
        }
        if st.holder.is_none() && st.delay_until_ms > 0 && st.delay_until_ms <= now {
            st.delay_until_ms = 0;
            step.changed.insert(st.key.clone());
        }
        if grants == Grants::Allowed
            && !step.granted
            && st.holder.is_none()
            && st.delay_until_ms == 0
        {
            if let Some(w) = st.waiters.pop_front() {
                let grant = new_grant(&st.key, &w, step);
                st.holder = Some(grant);
            }
        }
    }

    fn sweep(&mut self, step: &mut Step) -> Reply {
        let now = step.now;
        let expired: Vec<Key> = self
            .expiry
            .iter()
            .take_while(|(expires_at, _)| *expires_at <= now)
            .map(|(_, key)| key.clone())
            .collect();
        let cleanup: Vec<Key> = self
            .pending
            .iter()
            .filter(|k| {
                self.keys
                    .get(*k)
                    .and_then(KeyState::next_cleanup_ms)
                    .is_some_and(|t| t <= now)
            })
            .cloned()
            .collect();
        let keys: BTreeSet<Key> = expired.iter().chain(&cleanup).cloned().collect();
        for key in &keys {
            let mut st = self.take(key);
            // A sweep grants nothing: many keys may free up in one sweep, and one entry
            // grants at most one lock. The leader hands each freed key off on its own.
            self.settle(&mut st, step, Grants::Forbidden);
            self.put_back(st, now);
        }
        Reply::Swept {
            expired: expired.len() as u64,
        }
    }

    fn refresh(&mut self, live_at: u64, step: &mut Step) -> Reply {
        let now = step.now;
        let extended: Vec<Key> = self
            .keys
            .values()
            .filter_map(|st| st.holder.as_ref())
            .filter(|g| g.is_live(live_at) && g.expires_at_ms < now.saturating_add(g.ttl_ms))
            .map(|g| g.key.clone())
            .collect();
        for key in &extended {
            let mut st = self.take(key);
            if let Some(g) = st.holder.as_mut() {
                g.expires_at_ms = now.saturating_add(g.ttl_ms);
            }
            self.put_back(st, now);
            step.changed.insert(key.clone());
        }
        Reply::Refreshed {
            leases: extended.len() as u64,
        }
    }

    /// Removes `key` from the map and indexes (a fresh state if it is not stored); pair
    /// with [`Self::put_back`].
    fn take(&mut self, key: &Key) -> KeyState {
        match self.keys.remove(key) {
            Some(st) => {
                if let Some(h) = &st.holder {
                    self.expiry.remove(&(h.expires_at_ms, key.clone()));
                    self.tokens.remove(&h.token);
                }
                self.pending.remove(key);
                self.waiters -= st.waiters.len();
                st
            }
            None => KeyState::new(key.clone()),
        }
    }

    /// Stores `st` again with its index entries, or drops it when idle.
    fn put_back(&mut self, st: KeyState, now: u64) {
        if st.is_idle(now) {
            return;
        }
        if let Some(h) = &st.holder {
            self.expiry.insert((h.expires_at_ms, st.key.clone()));
            self.tokens.insert(h.token, st.key.clone());
        }
        if !st.waiters.is_empty() || st.delay_until_ms > 0 {
            self.pending.insert(st.key.clone());
        }
        self.waiters += st.waiters.len();
        self.keys.insert(st.key.clone(), st);
    }

    /// The table's clock: the highest `now_ms` applied.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Stored keys (held, queued or in lock-delay), including expired holders not yet
    /// swept.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The stored state of `key` (for persistence and the waiter list).
    pub fn stored(&self, key: &Key) -> Option<&KeyState> {
        self.keys.get(key)
    }

    /// The live grant of `key` at cluster time `now_ms`.
    pub fn get(&self, key: &Key, now_ms: u64) -> Option<&Grant> {
        self.keys.get(key).and_then(|st| st.live_holder(now_ms))
    }

    /// The live grant whose token is `token` at cluster time `now_ms`, whatever its key.
    pub fn get_by_token(&self, token: Token, now_ms: u64) -> Option<&Grant> {
        let key = self.tokens.get(&token)?;
        self.get(key, now_ms).filter(|g| g.token == token)
    }

    /// Number of live grants at `now_ms` (walks the expiry index from the first lease
    /// still running: cheap when few leases are expired and not yet swept).
    pub fn live_count(&self, now_ms: u64) -> usize {
        let expired = self
            .expiry
            .iter()
            .take_while(|(expires_at, _)| *expires_at <= now_ms)
            .count();
        self.expiry.len() - expired
    }

    /// Number of waiters of `key` still waiting at `now_ms`.
    pub fn waiting(&self, key: &Key, now_ms: u64) -> usize {
        self.keys
            .get(key)
            .map_or(0, |st| st.live_waiters(now_ms).count())
    }

    /// Waiters in all queues (some may have timed out and not been removed yet).
    pub fn waiters_total(&self) -> usize {
        self.waiters
    }

    /// Up to `limit` live grants whose keys start with `prefix` and sort after `after`,
    /// in key order, looking at no more than `max_scan` stored keys: keys without a live
    /// holder (queued, in lock-delay, expired) are stepped over, and a reader holds the
    /// table while it walks, so the walk is bounded. When it stops at `max_scan`,
    /// [`ListPage::resume_after`] says where to go on.
    pub fn list(
        &self,
        prefix: &str,
        after: Option<&Key>,
        limit: usize,
        max_scan: usize,
        now_ms: u64,
    ) -> ListPage<'_> {
        let start = match after {
            Some(a) if a.as_str() >= prefix => Bound::Excluded(a.as_str()),
            _ => Bound::Included(prefix),
        };
        let mut page = ListPage {
            grants: Vec::new(),
            resume_after: None,
        };
        let in_range = self
            .keys
            .range::<str, _>((start, Bound::Unbounded))
            .map(|(_, st)| st)
            .take_while(|st| st.key.as_str().starts_with(prefix));
        let mut last_scanned: Option<&Key> = None;
        for (scanned, st) in in_range.enumerate() {
            if page.grants.len() == limit {
                break;
            }
            // Another key is in range, but the walk has looked at enough.
            if scanned == max_scan {
                page.resume_after = last_scanned.cloned();
                break;
            }
            last_scanned = Some(&st.key);
            if let Some(g) = st.live_holder(now_ms) {
                page.grants.push(g);
            }
        }
        page
    }

    /// Whether `token` holds `key`'s live lease at `now_ms`.
    pub fn validate(&self, key: &Key, token: Token, now_ms: u64) -> Validation {
        let current_token = self.get(key, now_ms).map(|g| g.token);
        Validation {
            valid: current_token == Some(token),
            current_token,
        }
    }

    /// Every stored key's state, in key order.
    pub fn states(&self) -> impl Iterator<Item = &KeyState> {
        self.keys.values()
    }

    /// Every stored grant (live or not yet swept), in key order.
    pub fn grants(&self) -> impl Iterator<Item = &Grant> {
        self.keys.values().filter_map(|st| st.holder.as_ref())
    }

    /// The earliest cluster time at which a sweep would change something: a lease end, a
    /// waiter's deadline, the end of a lock-delay.
    pub fn next_sweep_ms(&self) -> Option<u64> {
        let lease = self.expiry.first().map(|(t, _)| *t);
        let cleanup = self
            .pending
            .iter()
            .filter_map(|k| self.keys.get(k).and_then(KeyState::next_cleanup_ms))
            .min();
        lease.into_iter().chain(cleanup).min()
    }

    /// Keys that a [`Command::Handoff`] at `now_ms` would grant to a waiter: no live
    /// holder, no running lock-delay, someone still waiting.
    pub fn handoffs_due(&self, now_ms: u64) -> Vec<Key> {
        self.pending
            .iter()
            .filter_map(|k| self.keys.get(k))
            .filter(|st| {
                // An expired holder not yet removed starts its lock-delay at its lease end.
                let delay_end = st
                    .holder
                    .as_ref()
                    .map_or(0, |h| h.expires_at_ms.saturating_add(h.lock_delay_ms));
                st.live_holder(now_ms).is_none()
                    && st.delay_until_ms.max(delay_end) <= now_ms
                    && st.live_waiters(now_ms).next().is_some()
            })
            .map(|st| st.key.clone())
            .collect()
    }

    /// The table as a snapshot.
    pub fn to_snapshot(&self) -> TableSnapshot {
        TableSnapshot {
            now_ms: self.now_ms,
            keys: self.keys.values().cloned().collect(),
        }
    }

    /// Rebuilds a table (and its indexes) from a snapshot.
    pub fn from_snapshot(snapshot: TableSnapshot) -> Result<LockTable, SnapshotError> {
        Self::from_parts(snapshot.now_ms, snapshot.keys)
    }

    /// Rebuilds a table from its clock and key states (as loaded from storage).
    pub fn from_parts(
        now_ms: u64,
        states: impl IntoIterator<Item = KeyState>,
    ) -> Result<LockTable, SnapshotError> {
        let mut table = LockTable {
            now_ms,
            ..LockTable::default()
        };
        for st in states {
            if table.keys.contains_key(&st.key) {
                return Err(SnapshotError::DuplicateKey(st.key));
            }
            if st.holder.as_ref().is_some_and(|h| h.key != st.key) {
                return Err(SnapshotError::KeyMismatch(st.key));
            }
            // Idle states are never stored; `now_ms` 0 keeps one with a delay that ended.
            table.put_back(st, 0);
        }
        Ok(table)
    }

    /// Checks the indexes against the key map (tests).
    #[cfg(test)]
    pub(crate) fn assert_consistent(&self) {
        let expiry: BTreeSet<(u64, Key)> = self
            .grants()
            .map(|g| (g.expires_at_ms, g.key.clone()))
            .collect();
        assert_eq!(self.expiry, expiry, "expiry index out of sync");
        let tokens: BTreeMap<Token, Key> =
            self.grants().map(|g| (g.token, g.key.clone())).collect();
        assert_eq!(self.tokens, tokens, "token index out of sync");
        let pending: BTreeSet<Key> = self
            .states()
            .filter(|st| !st.waiters.is_empty() || st.delay_until_ms > 0)
            .map(|st| st.key.clone())
            .collect();
        assert_eq!(self.pending, pending, "pending index out of sync");
        let waiters: usize = self.states().map(|st| st.waiters.len()).sum();
        assert_eq!(self.waiters, waiters, "waiter count out of sync");
        for (k, st) in &self.keys {
            assert_eq!(k, &st.key);
            assert!(st.holder.as_ref().is_none_or(|h| &h.key == k));
            assert!(
                st.holder.is_some() || !st.waiters.is_empty() || st.delay_until_ms > 0,
                "idle key {k} stored"
            );
            let mut owners = BTreeSet::new();
            assert!(
                st.waiters.iter().all(|w| owners.insert((&w.app, &w.owner))),
                "owner queued twice on {k}"
            );
        }
    }
}

/// Acquire on a settled key: extend the owner's own grant, grant a free key, or queue.
fn acquire(st: &mut KeyState, owner: &Owner, options: AcquireOptions, step: &mut Step) -> Reply {
    let now = step.now;
    if let Some(h) = st.holder.as_mut() {
        if &h.owner == owner && same_app(h.app.as_ref(), step.caller.as_ref()) {
            // Idempotent for its owner: the same grant, its lease extended.
            h.ttl_ms = options.ttl_ms;
            h.lock_delay_ms = options.lock_delay_ms;
            h.renewed_at_ms = now;
            h.expires_at_ms = now.saturating_add(options.ttl_ms);
            step.grant_event(EventKind::Renewed, h);
            step.changed.insert(st.key.clone());
            return Reply::Granted(h.clone());
        }
        if options.wait_ms == 0 {
            return Reply::Refused(LockError::Held { holder: h.clone() });
        }
        return enqueue(st, owner, options, step);
    }
    // Free, unless a lock-delay runs, others wait, or this entry granted already.
    if st.delay_until_ms > now || !st.waiters.is_empty() || step.granted {
        if options.wait_ms == 0 {
            return Reply::Refused(LockError::Unavailable {
                key: st.key.clone(),
                until_ms: (st.delay_until_ms > now).then_some(st.delay_until_ms),
            });
        }
        return enqueue(st, owner, options, step);
    }
    let request = Waiter {
        owner: owner.clone(),
        ttl_ms: options.ttl_ms,
        lock_delay_ms: options.lock_delay_ms,
        queued_at_ms: now,
        wait_until_ms: now,
        app: step.caller.clone(),
    };
    let grant = new_grant(&st.key, &request, step);
    st.holder = Some(grant.clone());
    Reply::Granted(grant)
}

/// Joins the queue, or — for an owner already in it — keeps its place and takes the new
/// deadline and lease (a retried request after a lost reply).
fn enqueue(st: &mut KeyState, owner: &Owner, options: AcquireOptions, step: &mut Step) -> Reply {
    let now = step.now;
    let wait_until_ms = now.saturating_add(options.wait_ms);
    let app = step.caller.clone();
    match st.waiters.iter_mut().find(|w| w.is(owner, app.as_ref())) {
        Some(w) => {
            w.wait_until_ms = wait_until_ms;
            w.ttl_ms = options.ttl_ms;
            w.lock_delay_ms = options.lock_delay_ms;
        }
        None => {
            st.waiters.push_back(Waiter {
                owner: owner.clone(),
                ttl_ms: options.ttl_ms,
                lock_delay_ms: options.lock_delay_ms,
                queued_at_ms: now,
                wait_until_ms,
                app: app.clone(),
            });
            step.event(&st.key, EventKind::Queued, (owner, app.as_ref()), None, now);
        }
    }
    step.changed.insert(st.key.clone());
    Reply::Queued(Queued {
        key: st.key.clone(),
        owner: owner.clone(),
        position: st.position(owner, app.as_ref(), now).unwrap_or(0),
        wait_until_ms,
    })
}

fn renew(st: &mut KeyState, token: Token, ttl_ms: Option<u64>, step: &mut Step) -> Reply {
    let now = step.now;
    match st.holder.as_mut() {
        Some(h) if h.token == token => {
            h.ttl_ms = ttl_ms.unwrap_or(h.ttl_ms);
            h.renewed_at_ms = now;
            h.expires_at_ms = now.saturating_add(h.ttl_ms);
            step.grant_event(EventKind::Renewed, h);
            step.changed.insert(st.key.clone());
            Reply::Granted(h.clone())
        }
        other => Reply::Refused(LockError::Lost {
            key: st.key.clone(),
            token,
            current: other.map(|g| g.token),
        }),
    }
}

/// How a release of `holder` by the step's caller is reported: an admin's release of
/// another application's lock is a force release, and names the admin (audit).
fn release_kind(step: &Step, holder: &Grant) -> EventKind {
    if step.caller.is_some() && holder.app != step.caller {
        EventKind::ForceReleased
    } else {
        EventKind::Released
    }
}

/// Frees a settled key's holder (no lock-delay: that follows only an expiry). A forced
/// release names the acting application, if any.
fn release(st: &mut KeyState, kind: EventKind, step: &mut Step) -> Reply {
    let mut forced_from = None;
    if let Some(h) = st.holder.take() {
        let who = (&h.owner, h.app.as_ref());
        step.event(&st.key, kind, who, Some(h.token), step.now);
        if kind == EventKind::ForceReleased {
            if let Some(e) = step.events.last_mut() {
                e.by = step.caller.clone();
            }
            forced_from = Some(h);
        }
        step.changed.insert(st.key.clone());
    }
    Reply::Released(Release {
        key: st.key.clone(),
        released: true,
        reason: None,
        at_ms: step.now,
        forced_from,
    })
}

fn cancel_wait(st: &mut KeyState, owner: &Owner, reason: CancelReason, step: &mut Step) -> Reply {
    let now = step.now;
    let app = step.caller.clone();
    let queued = st.waiters.iter().position(|w| w.is(owner, app.as_ref()));
    let holds = st
        .holder
        .as_ref()
        .is_some_and(|h| &h.owner == owner && step.owns(h.app.as_ref()));
    // Another application's wait or grant under this owner name: not the caller's to end.
    let foreign = st.waiters.iter().any(|w| &w.owner == owner)
        || st.holder.as_ref().is_some_and(|h| &h.owner == owner);
    if queued.is_none() && !holds && foreign {
        return step.not_yours(&st.key);
    }
    let was_queued = match queued {
        Some(i) => {
            let w = st.waiters.remove(i).expect("position is in the queue");
            let kind = match reason {
                CancelReason::Timeout => EventKind::WaitTimeout,
                CancelReason::Disconnected => EventKind::WaitCancelled,
            };
            step.event(&st.key, kind, (owner, w.app.as_ref()), None, now);
            step.changed.insert(st.key.clone());
            true
        }
        None => false,
    };
    let released = match st.holder.as_ref() {
        Some(h) if holds => {
            let token = h.token;
            release(st, EventKind::Released, step);
            Some(token)
        }
        _ => None,
    };
    Reply::WaitCancelled {
        key: st.key.clone(),
        was_queued,
        released,
    }
}

/// A new grant by this entry for the acquire `w` (a waiter, or a request granted at
/// once): its index is the token.
fn new_grant(key: &Key, w: &Waiter, step: &mut Step) -> Grant {
    // Tokens are the granting entry's index: a second grant in one entry would hand two
    // holders the same token, and fencing would no longer tell them apart.
    assert!(!step.granted, "one entry grants at most one lock");
    step.granted = true;
    let grant = Grant {
        key: key.clone(),
        owner: w.owner.clone(),
        token: Token(step.index),
        acquired_at_ms: step.now,
        renewed_at_ms: step.now,
        expires_at_ms: step.now.saturating_add(w.ttl_ms),
        ttl_ms: w.ttl_ms,
        lock_delay_ms: w.lock_delay_ms,
        app: w.app.clone(),
    };
    step.grant_event(EventKind::Acquired, &grant);
    step.changed.insert(key.clone());
    grant
}

fn not_released(key: &Key, reason: NotReleased, now: u64) -> Reply {
    Reply::Released(Release {
        key: key.clone(),
        released: false,
        reason: Some(reason),
        at_ms: now,
        forced_from: None,
    })
}
