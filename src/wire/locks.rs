//! Bodies and queries of `/v1/locks`: what a client sends, what a node answers, and the
//! JSON of the event stream. Conversions from the state machine's types are here, so a
//! node and the in-memory double produce the same answers.

use serde::{Deserialize, Serialize};

use super::time::{parse_rfc3339_ms, rfc3339_ms, TimeError};
use crate::locks;

/// Checks `raw` as a lock key (1–255 bytes of `[A-Za-z0-9._:-]`) before it goes into a
/// URL path: a key with a `/` would otherwise name another endpoint.
pub fn check_key(raw: &str) -> Result<(), locks::InvalidInput> {
    locks::Key::parse(raw).map(drop)
}

// ---- requests ----

/// `POST /v1/locks/{key}/acquire`. Absent durations take the server's defaults
/// (`lease.default_ttl_ms`; no wait; no lock-delay).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcquireRequest {
    pub owner: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// Wait up to this long in the key's FIFO queue when it is held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
    /// After this grant's lease expires, keep the key from everyone this long.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock_delay_ms: Option<u64>,
}

/// `POST /v1/locks/{key}/renew`; without `ttl_ms` the grant keeps its lease length.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    pub token: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}

/// `POST /v1/locks/{key}/release`: exactly one of `token` and `owner` (the server
/// refuses both or neither).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl ReleaseRequest {
    /// Release the lock held under `token`.
    pub fn by_token(token: u64) -> ReleaseRequest {
        ReleaseRequest {
            token: Some(token),
            owner: None,
        }
    }
}

/// `POST /v1/locks/{key}/validate`
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateRequest {
    pub token: u64,
}

/// `POST /v1/locks/{key}/cancel`: leave the key's queue (and release the key if the
/// queue granted it meanwhile).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    pub owner: String,
    #[serde(default)]
    pub reason: CancelReason,
}

/// Why a wait is cancelled; recorded in the `wait_timeout` / `wait_cancelled` event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CancelReason {
    Timeout,
    #[default]
    Disconnected,
}

impl From<CancelReason> for locks::CancelReason {
    fn from(r: CancelReason) -> locks::CancelReason {
        match r {
            CancelReason::Timeout => locks::CancelReason::Timeout,
            CancelReason::Disconnected => locks::CancelReason::Disconnected,
        }
    }
}

/// `?consistency=` of reads: `linearizable` (read-index on the leader, the default) or
/// `local` (this node's replica, possibly stale).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    #[default]
    Linearizable,
    Local,
}

/// Query of `GET /v1/locks/{key}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    #[serde(default)]
    pub consistency: Consistency,
    /// List the waiters of the key's queue (`waiter_list`), one page at a time.
    #[serde(default)]
    pub waiters: bool,
    /// Most waiters in the page (default 100, at most `api.max_list_limit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiters_limit: Option<usize>,
    /// The `waiters_next_cursor` of the previous page: the owner the page ended with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiters_cursor: Option<String>,
}

/// Query of `GET /v1/locks`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only keys that start with this.
    #[serde(default)]
    pub prefix: String,
    /// Most locks in the page (default 100, at most `api.max_list_limit`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    #[serde(default)]
    pub consistency: Consistency,
}

/// Query of `GET /v1/locks/{key}/events`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Replay stored events after this log index (as `Last-Event-ID` does).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
}

/// Query of `GET /v1/events`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedQuery {
    /// Only keys that start with this (every key when empty).
    #[serde(default)]
    pub prefix: String,
}

// ---- answers ----

/// The answer to acquire and renew, and the `holder` of a `LOCK_HELD` problem.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub key: String,
    pub owner: String,
    /// The fencing token: the log index of the entry that granted the lock.
    pub token: u64,
    pub acquired_at: String,
    /// In cluster time; count your lease on your own clock from the send instead.
    pub expires_at: String,
    pub ttl_ms: u64,
}

impl Lease {
    /// `expires_at` as milliseconds since the epoch.
    pub fn expires_at_ms(&self) -> Result<u64, TimeError> {
        parse_rfc3339_ms(&self.expires_at)
    }
}

impl From<&locks::Grant> for Lease {
    fn from(g: &locks::Grant) -> Lease {
        Lease {
            key: g.key.to_string(),
            owner: g.owner.to_string(),
            token: g.token.0,
            acquired_at: rfc3339_ms(g.acquired_at_ms),
            expires_at: rfc3339_ms(g.expires_at_ms),
            ttl_ms: g.ttl_ms,
        }
    }
}

/// A lock as `get` and `list` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub key: String,
    pub owner: String,
    pub token: u64,
    pub acquired_at: String,
    pub renewed_at: String,
    pub expires_at: String,
    pub ttl_ms: u64,
    /// Clients waiting in the key's queue.
    pub waiters: u64,
    /// The queue in order, with `?waiters=true`: one page of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiter_list: Option<Vec<WaiterInfo>>,
    /// More waiters follow `waiter_list`: pass this as `waiters_cursor` for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiters_next_cursor: Option<String>,
}

impl From<&locks::Grant> for LockInfo {
    /// The lock without its queue (`waiters: 0`); the caller counts the queue.
    fn from(g: &locks::Grant) -> LockInfo {
        LockInfo {
            key: g.key.to_string(),
            owner: g.owner.to_string(),
            token: g.token.0,
            acquired_at: rfc3339_ms(g.acquired_at_ms),
            renewed_at: rfc3339_ms(g.renewed_at_ms),
            expires_at: rfc3339_ms(g.expires_at_ms),
            ttl_ms: g.ttl_ms,
            waiters: 0,
            waiter_list: None,
            waiters_next_cursor: None,
        }
    }
}

/// One waiter of a key's queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaiterInfo {
    pub owner: String,
    pub ttl_ms: u64,
    pub queued_at: String,
    /// It is never granted at or after this (cluster time).
    pub wait_until: String,
}

impl From<&locks::Waiter> for WaiterInfo {
    fn from(w: &locks::Waiter) -> WaiterInfo {
        WaiterInfo {
            owner: w.owner.to_string(),
            ttl_ms: w.ttl_ms,
            queued_at: rfc3339_ms(w.queued_at_ms),
            wait_until: rfc3339_ms(w.wait_until_ms),
        }
    }
}

/// One page of `GET /v1/locks`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockPage {
    pub locks: Vec<LockInfo>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// The answer to release and force release. `released: false` is an answer, not an
/// error, so that a retried release is harmless.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Released {
    pub key: String,
    pub released: bool,
    /// Why nothing was released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<NotReleased>,
    pub timestamp: String,
}

impl From<&locks::Release> for Released {
    fn from(r: &locks::Release) -> Released {
        Released {
            key: r.key.to_string(),
            released: r.released,
            reason: r.reason.map(NotReleased::from),
            timestamp: rfc3339_ms(r.at_ms),
        }
    }
}

/// Why a release freed nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotReleased {
    /// The key has no live lock.
    NotHeld,
    /// The key is held under another token.
    TokenMismatch,
}

impl NotReleased {
    /// The wire text: `not_held`, `token_mismatch`.
    pub fn as_str(self) -> &'static str {
        match self {
            NotReleased::NotHeld => "not_held",
            NotReleased::TokenMismatch => "token_mismatch",
        }
    }
}

impl From<locks::NotReleased> for NotReleased {
    fn from(n: locks::NotReleased) -> NotReleased {
        match n {
            locks::NotReleased::NotHeld => NotReleased::NotHeld,
            locks::NotReleased::TokenMismatch => NotReleased::TokenMismatch,
        }
    }
}

/// The answer to validate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validation {
    /// The token holds the key's live lease right now.
    pub valid: bool,
    /// The live holder's token, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_token: Option<u64>,
}

impl From<locks::Validation> for Validation {
    fn from(v: locks::Validation) -> Validation {
        Validation {
            valid: v.valid,
            current_token: v.current_token.map(|t| t.0),
        }
    }
}

/// The answer to cancel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancelled {
    pub key: String,
    /// The owner was in the queue (and is not any more).
    pub was_queued: bool,
    /// The queue had granted the key to the owner already; the cancel released it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_token: Option<u64>,
}

// ---- the event stream ----

/// The `data` of one SSE event of `GET /v1/locks/{key}/events`; the SSE `event:` name
/// is `event`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockEvent {
    /// The log index of the entry that produced it (the SSE `id` on an entry's last event).
    pub index: u64,
    pub key: String,
    pub event: EventKind,
    pub owner: String,
    /// The grant's token (none for queue events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<u64>,
    /// Cluster time it happened (for `expired`: when the lease ran out).
    pub at: String,
    /// For `acquired` and `renewed`: when the lease now runs out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// With auth on: the application of the grant or waiter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// With auth on, for `force_released`: the application that forced the release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

impl From<&locks::Event> for LockEvent {
    fn from(e: &locks::Event) -> LockEvent {
        LockEvent {
            index: e.index,
            key: e.key.to_string(),
            event: e.kind.into(),
            owner: e.owner.to_string(),
            token: e.token.map(|t| t.0),
            at: rfc3339_ms(e.at_ms),
            expires_at: e.expires_at_ms.map(rfc3339_ms),
            app: e.app.as_ref().map(|a| a.to_string()),
            by: e.by.as_ref().map(|a| a.to_string()),
        }
    }
}

/// What happened to a key; also the SSE `event:` name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Acquired,
    Renewed,
    Released,
    Expired,
    ForceReleased,
    Queued,
    WaitTimeout,
    WaitCancelled,
}

impl EventKind {
    /// The wire name (`force_released`, …).
    pub fn as_str(self) -> &'static str {
        locks::EventKind::from(self).as_str()
    }
}

impl From<locks::EventKind> for EventKind {
    fn from(k: locks::EventKind) -> EventKind {
        use locks::EventKind as K;
        match k {
            K::Acquired => EventKind::Acquired,
            K::Renewed => EventKind::Renewed,
            K::Released => EventKind::Released,
            K::Expired => EventKind::Expired,
            K::ForceReleased => EventKind::ForceReleased,
            K::Queued => EventKind::Queued,
            K::WaitTimeout => EventKind::WaitTimeout,
            K::WaitCancelled => EventKind::WaitCancelled,
        }
    }
}

impl From<EventKind> for locks::EventKind {
    fn from(k: EventKind) -> locks::EventKind {
        use locks::EventKind as K;
        match k {
            EventKind::Acquired => K::Acquired,
            EventKind::Renewed => K::Renewed,
            EventKind::Released => K::Released,
            EventKind::Expired => K::Expired,
            EventKind::ForceReleased => K::ForceReleased,
            EventKind::Queued => K::Queued,
            EventKind::WaitTimeout => K::WaitTimeout,
            EventKind::WaitCancelled => K::WaitCancelled,
        }
    }
}

/// The `data` of the SSE `reset` event: the node no longer stores the events the client
/// asked to resume from; re-read the lock, then follow on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamReset {
    /// The first log index whose events the node still has.
    pub first_index: u64,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locks::{Key, Owner, Token};

    fn grant() -> locks::Grant {
        locks::Grant {
            key: Key::parse("deploy").unwrap(),
            owner: Owner::parse("ci").unwrap(),
            token: Token(3),
            acquired_at_ms: 1_000,
            renewed_at_ms: 2_000,
            expires_at_ms: 31_000,
            ttl_ms: 30_000,
            lock_delay_ms: 0,
            app: None,
        }
    }

    #[test]
    fn a_lease_has_the_fields_and_order_of_the_v1_answer() {
        let json = serde_json::to_string(&Lease::from(&grant())).unwrap();
        assert_eq!(
            json,
            r#"{"key":"deploy","owner":"ci","token":3,"acquired_at":"1970-01-01T00:00:01.000Z","expires_at":"1970-01-01T00:00:31.000Z","ttl_ms":30000}"#
        );
        assert_eq!(Lease::from(&grant()).expires_at_ms(), Ok(31_000));
    }

    #[test]
    fn absent_optional_fields_are_left_out_and_read_back_as_none() {
        let info = LockInfo::from(&grant());
        let json = serde_json::to_value(&info).unwrap();
        assert!(json.get("waiter_list").is_none(), "{json}");
        assert_eq!(serde_json::from_value::<LockInfo>(json).unwrap(), info);
        let r = Released {
            key: "k".into(),
            released: true,
            reason: None,
            timestamp: "t".into(),
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"key":"k","released":true,"timestamp":"t"}"#
        );
        let v = Validation {
            valid: false,
            current_token: None,
        };
        assert_eq!(serde_json::to_string(&v).unwrap(), r#"{"valid":false}"#);
        let page = LockPage {
            locks: vec![],
            next_cursor: None,
        };
        assert_eq!(
            serde_json::to_string(&page).unwrap(),
            r#"{"locks":[],"next_cursor":null}"#
        );
    }

    #[test]
    fn requests_leave_out_absent_durations_and_refuse_unknown_fields() {
        let a = AcquireRequest {
            owner: "me".into(),
            ttl_ms: Some(30_000),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"owner":"me","ttl_ms":30000}"#
        );
        assert_eq!(
            serde_json::to_string(&ReleaseRequest::by_token(42)).unwrap(),
            r#"{"token":42}"#
        );
        let typo = serde_json::from_str::<AcquireRequest>(r#"{"owner":"me","ttl":1}"#);
        assert!(typo.is_err());
        let null_ttl: AcquireRequest =
            serde_json::from_str(r#"{"owner":"me","ttl_ms":null}"#).unwrap();
        assert_eq!(null_ttl.ttl_ms, None);
    }

    #[test]
    fn release_reasons_and_event_kinds_use_their_wire_names() {
        assert_eq!(
            serde_json::to_string(&NotReleased::TokenMismatch).unwrap(),
            "\"token_mismatch\""
        );
        for k in [
            locks::EventKind::Acquired,
            locks::EventKind::ForceReleased,
            locks::EventKind::WaitCancelled,
        ] {
            let wire = EventKind::from(k);
            assert_eq!(
                serde_json::to_string(&wire).unwrap(),
                format!("\"{}\"", k.as_str())
            );
            assert_eq!(wire.as_str(), k.as_str());
        }
    }

    #[test]
    fn keys_with_a_slash_are_refused_before_they_reach_a_url() {
        assert!(check_key("deploy:prod").is_ok());
        let err = check_key("a/b").unwrap_err().to_string();
        assert!(err.contains("key"), "{err}");
        assert!(check_key("").is_err());
    }
}
