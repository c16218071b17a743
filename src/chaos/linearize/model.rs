//! The lock model of one key: its state, how each operation changes it, and which
//! history operations take part (see the parent module's docs for the rules).

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Holding {
    pub(super) owner: u32,
    pub(super) token: u64,
    pub(super) expires: u64,
}

/// What an operation says about its key (owners interned per key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Effect {
    Acquire(Holding),
    /// `LOCK_HELD` for owner `.0`: another owner held the lock (`.1`, when recorded).
    Refused(u32, Option<Holding>),
    Renew {
        token: u64,
        expires: u64,
    },
    Released {
        token: u64,
    },
    /// A release that freed nothing, or `LOCK_LOST`: the token held no live lease.
    NotHeld {
        token: u64,
    },
    Read(Option<Holding>),
    MaybeAcquire {
        owner: u32,
    },
    MaybeRenew {
        token: u64,
    },
    MaybeRelease {
        token: u64,
    },
}

/// One operation of a key's history.
#[derive(Clone, Copy, Debug)]
pub(super) struct Event {
    /// Index in the whole history.
    pub(super) index: usize,
    pub(super) invoke: u64,
    pub(super) complete: u64,
    /// Cluster time of application, when the history shows it.
    pub(super) time: Option<u64>,
    pub(super) effect: Effect,
}

/// A grant's token: known, or granted by an unknown acquire and not yet observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Tok {
    Known(u64),
    /// Some token greater than this.
    Above(u64),
}

/// The stored grant of the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Lease {
    pub(super) owner: u32,
    pub(super) token: Tok,
    /// The lease is certainly live before this cluster time (a refresh may extend it).
    pub(super) expires: u64,
}

/// The model state of one key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(super) struct State {
    pub(super) holder: Option<Lease>,
    /// Highest known token granted on the key (0: none).
    pub(super) max_token: u64,
    /// Lower bound on the cluster time of the last applied operation.
    pub(super) now_lb: u64,
}

impl State {
    /// The state at an operation's time: `None` if a known time is before `now_lb`.
    pub(super) fn at(self, time: Option<u64>) -> Option<State> {
        match time {
            Some(t) if t < self.now_lb => None,
            Some(t) => Some(State { now_lb: t, ..self }),
            None => Some(self),
        }
    }

    /// The state with the holder's lease over at `time` (the state already [`State::at`]
    /// it), or `None` if a known time is before the lease end.
    pub(super) fn expired(self, time: Option<u64>) -> Option<State> {
        let Some(h) = self.holder else {
            return Some(self);
        };
        let free = State {
            holder: None,
            ..self
        };
        match time {
            Some(t) => (t >= h.expires).then_some(free),
            None => Some(State {
                now_lb: self.now_lb.max(h.expires),
                ..free
            }),
        }
    }

    /// The state with the live holder's token being `token` (an unknown one is pinned).
    pub(super) fn pinned(self, token: u64) -> Option<State> {
        let mut h = self.holder?;
        match h.token {
            Tok::Known(t) if t == token => {}
            Tok::Above(above) if token > above => h.token = Tok::Known(token),
            _ => return None,
        }
        let max_token = self.max_token.max(token);
        Some(State {
            holder: Some(h),
            max_token,
            ..self
        })
    }

    /// The state with the holder's lease ending at `expires`.
    pub(super) fn until(self, expires: u64) -> State {
        let holder = self.holder.map(|h| Lease { expires, ..h });
        State { holder, ..self }
    }

    /// The state after the holder was seen as `seen` (a read or a refusal, time unknown).
    pub(super) fn observed(self, seen: Holding) -> Option<State> {
        let h = self.holder?;
        // Live at the observation, which is no earlier than `now_lb`; and only renews
        // (operations of their own) shorten a lease.
        if h.owner != seen.owner || seen.expires <= self.now_lb || seen.expires < h.expires {
            return None;
        }
        Some(self.pinned(seen.token)?.until(seen.expires))
    }

    /// A fresh grant (the lock free) of `token` to `owner`.
    pub(super) fn granted(self, owner: u32, token: Tok, expires: u64) -> State {
        let max_token = match token {
            Tok::Known(t) => self.max_token.max(t),
            Tok::Above(_) => self.max_token,
        };
        let lease = Lease {
            owner,
            token,
            expires,
        };
        State {
            holder: Some(lease),
            max_token,
            ..self
        }
    }

    pub(super) fn holds(&self, pred: impl Fn(&Lease) -> bool) -> bool {
        self.holder.as_ref().is_some_and(pred)
    }
}

/// Every state `effect` (at `time`) can lead to from `s`; none if it cannot happen.
pub(super) fn step(effect: Effect, time: Option<u64>, s: State, out: &mut Vec<State>) {
    let Some(s) = s.at(time) else { return };
    match effect {
        Effect::Acquire(g) => {
            // The owner's own live grant, reset (idempotent re-acquire) ...
            if s.holds(|h| h.owner == g.owner) {
                out.extend(s.pinned(g.token).map(|p| p.until(g.expires)));
            }
            // ... or a fresh grant once the holder, if any, has expired.
            if let Some(free) = s.expired(time).filter(|f| g.token > f.max_token) {
                out.push(free.granted(g.owner, Tok::Known(g.token), g.expires));
            }
        }
        Effect::Refused(owner, seen) => match (s.holder, seen) {
            (Some(h), _) if h.owner == owner => {}
            (Some(_), Some(seen)) => out.extend(s.observed(seen)),
            (Some(_), None) => out.push(s),
            (None, _) => {}
        },
        Effect::Renew { token, expires } => out.extend(s.pinned(token).map(|p| p.until(expires))),
        Effect::Released { token } => {
            out.extend(s.pinned(token).map(|p| State { holder: None, ..p }));
        }
        Effect::NotHeld { token } if s.holds(|h| h.token == Tok::Known(token)) => {
            out.extend(s.expired(time));
        }
        Effect::NotHeld { .. } => out.push(s),
        Effect::Read(None) => out.extend(s.expired(None)),
        Effect::Read(Some(seen)) => out.extend(s.observed(seen)),
        // Unknown operations: only effects that change the state are worth trying.
        Effect::MaybeAcquire { owner } => {
            if s.holds(|h| h.owner == owner && h.expires > s.now_lb) {
                // Re-acquired with an unknown lease: it may end from now on.
                out.push(s.until(s.now_lb));
            }
            if let Some(free) = s.expired(None) {
                let next = free.granted(owner, Tok::Above(free.max_token), free.now_lb);
                if next != s {
                    out.push(next);
                }
            }
        }
        Effect::MaybeRenew { token } => {
            if s.holds(|h| h.token == Tok::Known(token) && h.expires > s.now_lb) {
                out.push(s.until(s.now_lb));
            }
        }
        Effect::MaybeRelease { token } => {
            if s.holds(|h| h.token == Tok::Known(token)) {
                out.push(State { holder: None, ..s });
            }
        }
    }
}

/// Owner names of one key, interned.
#[derive(Default)]
pub(super) struct Owners {
    pub(super) names: Vec<String>,
    pub(super) ids: HashMap<String, u32>,
}

impl Owners {
    pub(super) fn id(&mut self, name: &str) -> u32 {
        let next = u32::try_from(self.names.len()).expect("fewer than 2^32 owners per key");
        let names = &mut self.names;
        *self.ids.entry(name.to_string()).or_insert_with(|| {
            names.push(name.to_string());
            next
        })
    }

    pub(super) fn seen(&mut self, h: &Option<Holder>) -> Option<Holding> {
        h.as_ref().map(|h| Holding {
            owner: self.id(&h.owner),
            token: h.token,
            expires: h.expires_at_ms,
        })
    }
}

/// What `op` says about its key, its cluster time, and whether it must be linearized
/// (`false`: unknown); `None` if it takes no part.
pub(super) fn classify(op: &Op, owners: &mut Owners) -> Option<(Effect, Option<u64>, bool)> {
    let owner = owners.id(op.owner.as_deref().unwrap_or_default());
    // Cluster time of an `ok` acquire or renew.
    let applied = |expires: u64| op.ttl_ms.and_then(|ttl| expires.checked_sub(ttl));
    let error = op.error.as_deref();
    let ok = op.outcome == Outcome::Ok;
    let (effect, time) = match (op.kind, op.outcome, op.token) {
        (OpKind::ResourceWrite | OpKind::Cancel, ..)
        | (OpKind::Read, Outcome::Unknown | Outcome::Fail, _) => return None,
        (OpKind::Acquire, Outcome::Fail, _) if error == Some(LOCK_HELD) => {
            (Effect::Refused(owner, owners.seen(&op.holder)), None)
        }
        (OpKind::Renew, Outcome::Fail, Some(token)) if error == Some(LOCK_LOST) => {
            (Effect::NotHeld { token }, None)
        }
        (_, Outcome::Fail, _) | (OpKind::Renew | OpKind::Release, _, None) => return None,
        (OpKind::Read, ..) => (Effect::Read(owners.seen(&op.holder)), None),
        (OpKind::Acquire, _, token) => match (ok, token, op.expires_at_ms) {
            (true, Some(token), Some(expires)) => {
                let g = Holding {
                    owner,
                    token,
                    expires,
                };
                (Effect::Acquire(g), applied(expires))
            }
            _ => return Some((Effect::MaybeAcquire { owner }, None, false)),
        },
        (OpKind::Renew, _, Some(token)) => match (ok, op.expires_at_ms) {
            (true, Some(expires)) => (Effect::Renew { token, expires }, applied(expires)),
            _ => return Some((Effect::MaybeRenew { token }, None, false)),
        },
        (OpKind::Release, _, Some(token)) => match (ok, op.released) {
            (true, Some(true)) => (Effect::Released { token }, op.at_ms),
            (true, Some(false)) => (Effect::NotHeld { token }, op.at_ms),
            _ => return Some((Effect::MaybeRelease { token }, None, false)),
        },
    };
    Some((effect, time, true))
}
