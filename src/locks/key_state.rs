//! [`KeyState`]: everything stored for one key — its holder, its FIFO queue of
//! [`Waiter`]s and its lock-delay. Plain data with small queries; the rules that change it
//! live in `table`.
//!
//! # Stored format
//! A key state is stored (and carried in snapshots, joined without decoding) in one of
//! two postcard layouts. The first, from before auth, is the plain struct: key, holder,
//! waiters, delay — a state without any application is still written that way, so a
//! cluster without auth writes the bytes it always did. A state that records an
//! application starts with an empty string (a key is never empty, so the two cannot be
//! confused) and then the same fields with `app` in the grant and in every waiter.

use std::collections::VecDeque;
use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::command::Grant;
use super::types::{AppName, Key, Owner, Token};

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
    /// The application that queued it (`None`: auth off).
    pub app: Option<AppName>,
}

impl Waiter {
    /// Is this `owner`'s wait, and — when `app` is given (auth on) — `app`'s?
    pub fn is(&self, owner: &Owner, app: Option<&AppName>) -> bool {
        &self.owner == owner && same_app(self.app.as_ref(), app)
    }

    /// Still waiting at cluster time `now_ms`.
    pub fn is_live(&self, now_ms: u64) -> bool {
        self.wait_until_ms > now_ms
    }
}

/// Does a grant or waiter recorded for `recorded` belong to `caller`? Without a caller
/// (auth off) applications are not checked, so a cluster that turns auth off behaves as
/// before; with one, only an exact match does (a grant from before auth belongs to
/// nobody, and only `admin` may release it).
pub fn same_app(recorded: Option<&AppName>, caller: Option<&AppName>) -> bool {
    caller.is_none_or(|c| recorded == Some(c))
}

/// One key's stored state. A key with no holder, no waiters and no running lock-delay
/// is not stored at all. Encoded as described in the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
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

    /// 1-based place of `owner` in the queue, counting only waiters live at `now_ms`;
    /// with `app` (auth on), only that application's waiter of that name.
    pub fn position(&self, owner: &Owner, app: Option<&AppName>, now_ms: u64) -> Option<u64> {
        self.live_waiters(now_ms)
            .position(|w| w.is(owner, app))
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

/// The grant as stored before auth (no `app`).
#[derive(Serialize, Deserialize)]
struct GrantV0 {
    key: Key,
    owner: Owner,
    token: Token,
    acquired_at_ms: u64,
    renewed_at_ms: u64,
    expires_at_ms: u64,
    ttl_ms: u64,
    lock_delay_ms: u64,
}

/// The waiter as stored before auth (no `app`).
#[derive(Serialize, Deserialize)]
struct WaiterV0 {
    owner: Owner,
    ttl_ms: u64,
    lock_delay_ms: u64,
    queued_at_ms: u64,
    wait_until_ms: u64,
}

impl From<GrantV0> for Grant {
    fn from(g: GrantV0) -> Grant {
        Grant {
            key: g.key,
            owner: g.owner,
            token: g.token,
            acquired_at_ms: g.acquired_at_ms,
            renewed_at_ms: g.renewed_at_ms,
            expires_at_ms: g.expires_at_ms,
            ttl_ms: g.ttl_ms,
            lock_delay_ms: g.lock_delay_ms,
            app: None,
        }
    }
}

impl From<&Grant> for GrantV0 {
    fn from(g: &Grant) -> GrantV0 {
        GrantV0 {
            key: g.key.clone(),
            owner: g.owner.clone(),
            token: g.token,
            acquired_at_ms: g.acquired_at_ms,
            renewed_at_ms: g.renewed_at_ms,
            expires_at_ms: g.expires_at_ms,
            ttl_ms: g.ttl_ms,
            lock_delay_ms: g.lock_delay_ms,
        }
    }
}

impl From<WaiterV0> for Waiter {
    fn from(w: WaiterV0) -> Waiter {
        Waiter {
            owner: w.owner,
            ttl_ms: w.ttl_ms,
            lock_delay_ms: w.lock_delay_ms,
            queued_at_ms: w.queued_at_ms,
            wait_until_ms: w.wait_until_ms,
            app: None,
        }
    }
}

impl From<&Waiter> for WaiterV0 {
    fn from(w: &Waiter) -> WaiterV0 {
        WaiterV0 {
            owner: w.owner.clone(),
            ttl_ms: w.ttl_ms,
            lock_delay_ms: w.lock_delay_ms,
            queued_at_ms: w.queued_at_ms,
            wait_until_ms: w.wait_until_ms,
        }
    }
}

/// Fields of the layout with applications (after the empty-string marker).
const FIELDS_WITH_APPS: usize = 5;
/// Fields of the layout from before auth.
const FIELDS_V0: usize = 4;

impl KeyState {
    fn records_an_app(&self) -> bool {
        self.holder.as_ref().is_some_and(|g| g.app.is_some())
            || self.waiters.iter().any(|w| w.app.is_some())
    }
}

impl Serialize for KeyState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.records_an_app() {
            let mut t = serializer.serialize_tuple(FIELDS_WITH_APPS)?;
            t.serialize_element("")?;
            t.serialize_element(&self.key)?;
            t.serialize_element(&self.holder)?;
            t.serialize_element(&self.waiters)?;
            t.serialize_element(&self.delay_until_ms)?;
            t.end()
        } else {
            let mut t = serializer.serialize_tuple(FIELDS_V0)?;
            t.serialize_element(&self.key)?;
            t.serialize_element(&self.holder.as_ref().map(GrantV0::from))?;
            let waiters: Vec<WaiterV0> = self.waiters.iter().map(WaiterV0::from).collect();
            t.serialize_element(&waiters)?;
            t.serialize_element(&self.delay_until_ms)?;
            t.end()
        }
    }
}

impl<'de> Deserialize<'de> for KeyState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<KeyState, D::Error> {
        struct StateVisitor;

        impl<'de> Visitor<'de> for StateVisitor {
            type Value = KeyState;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a stored key state")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<KeyState, A::Error> {
                fn next<'de, T: Deserialize<'de>, A: SeqAccess<'de>>(
                    seq: &mut A,
                    i: usize,
                ) -> Result<T, A::Error> {
                    seq.next_element()?
                        .ok_or_else(|| de::Error::invalid_length(i, &"a stored key state"))
                }
                let first: String = next(&mut seq, 0)?;
                if first.is_empty() {
                    Ok(KeyState {
                        key: next(&mut seq, 1)?,
                        holder: next(&mut seq, 2)?,
                        waiters: next(&mut seq, 3)?,
                        delay_until_ms: next(&mut seq, 4)?,
                    })
                } else {
                    let key = Key::parse(first).map_err(de::Error::custom)?;
                    let holder: Option<GrantV0> = next(&mut seq, 1)?;
                    let waiters: Vec<WaiterV0> = next(&mut seq, 2)?;
                    Ok(KeyState {
                        key,
                        holder: holder.map(Grant::from),
                        waiters: waiters.into_iter().map(Waiter::from).collect(),
                        delay_until_ms: next(&mut seq, 3)?,
                    })
                }
            }
        }

        // postcard reads as many elements as the visitor asks for; the larger layout's
        // length is what a length-checking format would need.
        deserializer.deserialize_tuple(FIELDS_WITH_APPS, StateVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    /// The struct as it was derived before auth: its bytes are what old nodes stored.
    #[derive(Serialize)]
    struct KeyStateV0 {
        key: Key,
        holder: Option<GrantV0>,
        waiters: VecDeque<WaiterV0>,
        delay_until_ms: u64,
    }

    fn state(app: Option<&str>) -> KeyState {
        let key = Key::parse("deploy").unwrap();
        let app = app.map(|a| AppName::parse(a).unwrap());
        KeyState {
            key: key.clone(),
            holder: Some(Grant {
                key,
                owner: Owner::parse("a").unwrap(),
                token: Token(3),
                acquired_at_ms: 1,
                renewed_at_ms: 2,
                expires_at_ms: 1002,
                ttl_ms: 1000,
                lock_delay_ms: 0,
                app: app.clone(),
            }),
            waiters: VecDeque::from([Waiter {
                owner: Owner::parse("b").unwrap(),
                ttl_ms: 500,
                lock_delay_ms: 7,
                queued_at_ms: 2,
                wait_until_ms: 9000,
                app,
            }]),
            delay_until_ms: 0,
        }
    }

    #[test]
    fn a_state_stored_before_auth_decodes_without_apps() {
        let st = state(None);
        let old = KeyStateV0 {
            key: st.key.clone(),
            holder: st.holder.as_ref().map(GrantV0::from),
            waiters: st.waiters.iter().map(WaiterV0::from).collect(),
            delay_until_ms: 0,
        };
        let bytes = codec::encode(&old).unwrap();
        assert_eq!(codec::decode::<KeyState>(&bytes).unwrap(), st);
        // Without applications the state is still written in the old layout.
        assert_eq!(codec::encode(&st).unwrap(), bytes);
    }

    #[test]
    fn a_state_with_apps_round_trips_alone_and_in_a_sequence() {
        let with = state(Some("billing"));
        let bytes = codec::encode(&with).unwrap();
        assert_eq!(bytes[0], 0, "marker: the empty string");
        assert_eq!(codec::decode::<KeyState>(&bytes).unwrap(), with);
        let mixed = vec![state(None), with.clone(), state(None)];
        let bytes = codec::encode(&mixed).unwrap();
        assert_eq!(codec::decode::<Vec<KeyState>>(&bytes).unwrap(), mixed);
    }

    #[test]
    fn a_truncated_state_is_an_error() {
        let bytes = codec::encode(&state(Some("billing"))).unwrap();
        assert!(codec::decode::<KeyState>(&bytes[..bytes.len() - 1]).is_err());
    }
}
