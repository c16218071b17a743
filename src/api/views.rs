//! Response bodies (DTOs), separate from the domain types; RFC 3339 formatting lives here.

use serde::Serialize;
use time::macros::format_description;
use time::OffsetDateTime;

use crate::locks::{Grant, Release, Waiter};

/// Formats cluster milliseconds as RFC 3339 UTC with milliseconds.
pub fn rfc3339_ms(ms: u64) -> String {
    let fmt =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    i128::from(ms)
        .checked_mul(1_000_000)
        .and_then(|ns| OffsetDateTime::from_unix_timestamp_nanos(ns).ok())
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| format!("{ms}ms"))
}

/// The answer to acquire and renew, and the `holder` of a `LOCK_HELD` problem.
#[derive(Clone, Debug, Serialize)]
pub struct GrantView {
    pub key: String,
    pub owner: String,
    pub token: u64,
    pub acquired_at: String,
    pub expires_at: String,
    pub ttl_ms: u64,
}

impl From<&Grant> for GrantView {
    fn from(g: &Grant) -> GrantView {
        GrantView {
            key: g.key.to_string(),
            owner: g.owner.to_string(),
            token: g.token.0,
            acquired_at: rfc3339_ms(g.acquired_at_ms),
            expires_at: rfc3339_ms(g.expires_at_ms),
            ttl_ms: g.ttl_ms,
        }
    }
}

/// A lock as shown by get and list.
#[derive(Clone, Debug, Serialize)]
pub struct LockView {
    pub key: String,
    pub owner: String,
    pub token: u64,
    pub acquired_at: String,
    pub renewed_at: String,
    pub expires_at: String,
    pub ttl_ms: u64,
    /// Clients waiting in the key's queue.
    pub waiters: u64,
    /// The queue in order, with `?waiters=true`.
    #[serde(rename = "waiter_list", skip_serializing_if = "Option::is_none")]
    pub waiter_list: Option<Vec<WaiterView>>,
}

/// One waiter of a key's queue.
#[derive(Clone, Debug, Serialize)]
pub struct WaiterView {
    pub owner: String,
    pub ttl_ms: u64,
    pub queued_at: String,
    pub wait_until: String,
}

impl From<&Waiter> for WaiterView {
    fn from(w: &Waiter) -> WaiterView {
        WaiterView {
            owner: w.owner.to_string(),
            ttl_ms: w.ttl_ms,
            queued_at: rfc3339_ms(w.queued_at_ms),
            wait_until: rfc3339_ms(w.wait_until_ms),
        }
    }
}

/// The answer to cancel.
#[derive(Debug, Serialize)]
pub struct CancelView {
    pub key: String,
    /// The owner was in the queue (and is not any more).
    pub was_queued: bool,
    /// The queue had granted the key to the owner already; the cancel released it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub released_token: Option<u64>,
}

impl From<&Grant> for LockView {
    fn from(g: &Grant) -> LockView {
        LockView {
            key: g.key.to_string(),
            owner: g.owner.to_string(),
            token: g.token.0,
            acquired_at: rfc3339_ms(g.acquired_at_ms),
            renewed_at: rfc3339_ms(g.renewed_at_ms),
            expires_at: rfc3339_ms(g.expires_at_ms),
            ttl_ms: g.ttl_ms,
            waiters: 0,
            waiter_list: None,
        }
    }
}

/// One page of `GET /v1/locks`.
#[derive(Debug, Serialize)]
pub struct ListView {
    pub locks: Vec<LockView>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// The answer to release and force release.
#[derive(Debug, Serialize)]
pub struct ReleaseView {
    pub key: String,
    pub released: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    pub timestamp: String,
}

impl From<&Release> for ReleaseView {
    fn from(r: &Release) -> ReleaseView {
        ReleaseView {
            key: r.key.to_string(),
            released: r.released,
            reason: r.reason.map(|n| n.as_str()),
            timestamp: rfc3339_ms(r.at_ms),
        }
    }
}

/// The answer to validate.
#[derive(Debug, Serialize)]
pub struct ValidateView {
    pub valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_token: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_milliseconds_in_utc() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
