//! [`Event`]: what happened to a key, as applied. Derived from the log, so every replica
//! produces the same events in the same order; the node streams them to watchers.

use serde::{Deserialize, Serialize};

use super::types::{AppName, Key, Owner, Token};

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// A new grant (from a free key or from the queue).
    Acquired,
    /// A lease was extended (renew, or acquire again by its owner).
    Renewed,
    /// Its holder released it.
    Released,
    /// Its lease ran out.
    Expired,
    /// An admin freed it.
    ForceReleased,
    /// An owner joined the queue.
    Queued,
    /// A waiter's wait ran out before it was granted.
    WaitTimeout,
    /// A waiter left the queue because its client went away.
    WaitCancelled,
}

impl EventKind {
    /// The SSE `event:` name.
    pub fn as_str(&self) -> &'static str {
        match self {
            EventKind::Acquired => "acquired",
            EventKind::Renewed => "renewed",
            EventKind::Released => "released",
            EventKind::Expired => "expired",
            EventKind::ForceReleased => "force_released",
            EventKind::Queued => "queued",
            EventKind::WaitTimeout => "wait_timeout",
            EventKind::WaitCancelled => "wait_cancelled",
        }
    }
}

/// One event on one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Log index of the entry whose application produced it.
    pub index: u64,
    pub key: Key,
    pub kind: EventKind,
    pub owner: Owner,
    /// The grant's token (none for queue events).
    pub token: Option<Token>,
    /// Cluster time at which it happened (for `expired`: when the lease ran out).
    pub at_ms: u64,
    /// For `acquired` and `renewed`: when the lease now runs out.
    pub expires_at_ms: Option<u64>,
    /// The application of the grant or waiter (`None`: auth off).
    pub app: Option<AppName>,
    /// For `force_released`: the application that forced it (auth on), the audit trail
    /// of an admin freeing another application's lock.
    pub by: Option<AppName>,
}

/// An event as stored before auth (no `app`, no `by`): what a data directory written by
/// an older version holds. [`Event::decode_stored`] reads both. Storage is the
/// server's (the client alone has no codec).
#[cfg(feature = "server")]
#[derive(Deserialize)]
struct EventV0 {
    index: u64,
    key: Key,
    kind: EventKind,
    owner: Owner,
    token: Option<Token>,
    at_ms: u64,
    expires_at_ms: Option<u64>,
}

#[cfg(feature = "server")]
impl Event {
    /// Decodes a stored event in today's layout or in the one from before auth. The
    /// two cannot be confused: decoding consumes every byte, and the newer layout is
    /// the older one followed by two more fields.
    pub fn decode_stored(bytes: &[u8]) -> Result<Event, crate::codec::CodecError> {
        match crate::codec::decode::<Event>(bytes) {
            Ok(e) => Ok(e),
            Err(new_err) => match crate::codec::decode::<EventV0>(bytes) {
                Ok(e) => Ok(Event {
                    index: e.index,
                    key: e.key,
                    kind: e.kind,
                    owner: e.owner,
                    token: e.token,
                    at_ms: e.at_ms,
                    expires_at_ms: e.expires_at_ms,
                    app: None,
                    by: None,
                }),
                Err(_) => Err(new_err),
            },
        }
    }
}

#[cfg(all(test, feature = "server"))]
mod tests {
    use super::*;
    use serde::Serialize;

    #[derive(Serialize)]
    struct StoredV0<'a> {
        index: u64,
        key: &'a str,
        kind: EventKind,
        owner: &'a str,
        token: Option<Token>,
        at_ms: u64,
        expires_at_ms: Option<u64>,
    }

    #[test]
    fn an_event_stored_before_auth_decodes_and_a_new_one_round_trips() {
        let old = StoredV0 {
            index: 4,
            key: "deploy",
            kind: EventKind::ForceReleased,
            owner: "a",
            token: Some(Token(3)),
            at_ms: 9,
            expires_at_ms: None,
        };
        let bytes = crate::codec::encode(&old).unwrap();
        let e = Event::decode_stored(&bytes).unwrap();
        assert_eq!(
            (e.index, e.key.as_str(), e.app, e.by),
            (4, "deploy", None, None)
        );
        let new = Event {
            app: Some(AppName::parse("billing").unwrap()),
            by: Some(AppName::parse("ops").unwrap()),
            ..Event::decode_stored(&bytes).unwrap()
        };
        let bytes = crate::codec::encode(&new).unwrap();
        assert_eq!(Event::decode_stored(&bytes).unwrap(), new);
        assert!(Event::decode_stored(&bytes[..bytes.len() - 1]).is_err());
    }
}
