//! Error answers: the stable [`ErrorCode`]s and the RFC 9457 problem body that carries
//! them (`application/problem+json`). Which HTTP status goes with which error is decided
//! in `api::problem`, the one table on the server side; the README lists both.

use serde::{Deserialize, Serialize};

use super::locks::Lease;

/// The stable `code` of a problem answer, `SCREAMING_SNAKE` on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The key is empty, too long, or has a byte outside `[A-Za-z0-9._:-]` (400).
    InvalidKey,
    /// Malformed JSON, unknown field, bad owner or ttl, bad query; also unknown
    /// endpoints (404) and methods (405).
    InvalidRequest,
    /// The body is over `api.max_body_bytes` (413).
    PayloadTooLarge,
    /// Another owner holds the key (`holder`), or the queue or a lock-delay keeps it
    /// (`available_at`) (409).
    LockHeld,
    /// An acquire's `wait_ms` ran out before the queue granted it (409).
    WaitTimeout,
    /// The token no longer holds the lock (409).
    LockLost,
    /// No live lock on the key (404).
    LockNotFound,
    /// A release by owner from an owner that does not hold the lock (403).
    NotOwner,
    /// No leader is known, or the leader has no quorum: retry (503).
    NoLeader,
    /// A write may or may not have taken effect: retry it, it is idempotent (503).
    OutcomeUnknown,
    /// The node serves its maximum number of connections, all busy: retry, or use
    /// another node (503).
    TooManyConnections,
    /// The key's queue holds `api.max_waiters_per_key` waiters, or all queues together
    /// hold `api.max_waiters`: retry after `Retry-After` (429).
    QueueFull,
    /// `api.max_locks` keys are stored; an acquire of another key waits until some are
    /// freed (429).
    TooManyLocks,
    /// The node serves `api.max_event_streams` event streams: retry, or use another
    /// node (503).
    TooManyStreams,
    /// A bug or a stopped node (500).
    Internal,
    /// A request to the peer-only Raft listener without the right cluster secret (401).
    Unauthorized,
    /// Auth is on and the request carries no API key, or one the node does not know
    /// (401). The body also has `"success": false` and `"error": "Invalid API key"`.
    InvalidApiKey,
    /// The caller's application lacks the permission for this key or endpoint (403).
    Forbidden,
    /// Another membership change is under way (an add waiting for its learner, or a
    /// joint configuration not yet committed): wait for it, then retry (409).
    MembershipChangeInProgress,
    /// The node id is not in the membership (404).
    NodeNotFound,
    /// The node id is already a member with other addresses, or another member has one
    /// of these addresses (409).
    NodeConflict,
    /// The change would leave no voter, or voters of which no majority is reachable
    /// now (409).
    MembershipUnsafe,
    /// The added node did not catch up with the leader's log within
    /// `raft.catch_up_timeout_ms`; it stays a learner, and the same add resumes (409).
    NotCaughtUp,
    /// Never sent by a node: what a client makes of a code it does not know (a newer
    /// server) or of an error answer without one (a proxy in between).
    #[default]
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// Every code a node sends, in the README's order.
    pub const ALL: [ErrorCode; 23] = [
        ErrorCode::InvalidKey,
        ErrorCode::InvalidRequest,
        ErrorCode::PayloadTooLarge,
        ErrorCode::LockHeld,
        ErrorCode::WaitTimeout,
        ErrorCode::LockLost,
        ErrorCode::LockNotFound,
        ErrorCode::NotOwner,
        ErrorCode::NoLeader,
        ErrorCode::OutcomeUnknown,
        ErrorCode::TooManyConnections,
        ErrorCode::QueueFull,
        ErrorCode::TooManyLocks,
        ErrorCode::TooManyStreams,
        ErrorCode::Internal,
        ErrorCode::Unauthorized,
        ErrorCode::InvalidApiKey,
        ErrorCode::Forbidden,
        ErrorCode::MembershipChangeInProgress,
        ErrorCode::NodeNotFound,
        ErrorCode::NodeConflict,
        ErrorCode::MembershipUnsafe,
        ErrorCode::NotCaughtUp,
    ];

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidKey => "INVALID_KEY",
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::LockHeld => "LOCK_HELD",
            ErrorCode::WaitTimeout => "WAIT_TIMEOUT",
            ErrorCode::LockLost => "LOCK_LOST",
            ErrorCode::LockNotFound => "LOCK_NOT_FOUND",
            ErrorCode::NotOwner => "NOT_OWNER",
            ErrorCode::NoLeader => "NO_LEADER",
            ErrorCode::OutcomeUnknown => "OUTCOME_UNKNOWN",
            ErrorCode::TooManyConnections => "TOO_MANY_CONNECTIONS",
            ErrorCode::QueueFull => "QUEUE_FULL",
            ErrorCode::TooManyLocks => "TOO_MANY_LOCKS",
            ErrorCode::TooManyStreams => "TOO_MANY_STREAMS",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::InvalidApiKey => "INVALID_API_KEY",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::MembershipChangeInProgress => "MEMBERSHIP_CHANGE_IN_PROGRESS",
            ErrorCode::NodeNotFound => "NODE_NOT_FOUND",
            ErrorCode::NodeConflict => "NODE_CONFLICT",
            ErrorCode::MembershipUnsafe => "MEMBERSHIP_UNSAFE",
            ErrorCode::NotCaughtUp => "NOT_CAUGHT_UP",
            ErrorCode::Unknown => "UNKNOWN",
        }
    }

    /// The problem `type` URI: `https://baton.dev/errors/lock-held`.
    pub fn type_uri(self) -> String {
        format!(
            "https://baton.dev/errors/{}",
            self.as_str().to_ascii_lowercase().replace('_', "-")
        )
    }

    /// Whether a client may send the same request again (to any node) at once: the
    /// cluster could not decide now, and every write is idempotent. The quotas
    /// (`QUEUE_FULL`, `TOO_MANY_LOCKS`) are not: they last until others let go.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::NoLeader
                | ErrorCode::OutcomeUnknown
                | ErrorCode::TooManyConnections
                | ErrorCode::TooManyStreams
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An RFC 9457 problem body. Fields are declared in alphabetical order, the order the
/// server has always written them in.
///
/// Read leniently: an error answer from something that is not a node (a proxy's 502)
/// still reads as a `Problem`, with [`ErrorCode::Unknown`] and empty texts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Problem {
    /// With a `LOCK_HELD` kept by a lock-delay: when the key becomes available.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_at: Option<String>,
    pub code: ErrorCode,
    /// A sentence saying what went wrong, for people.
    pub detail: String,
    /// With `INVALID_API_KEY`: `"Invalid API key"`, as the Release Lock API answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// With a `LOCK_HELD` from another owner: its grant (written with its fields in
    /// alphabetical order, as the server always wrote it here).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "holder_in_alphabetical_order"
    )]
    pub holder: Option<Lease>,
    /// The HTTP status, repeated in the body.
    pub status: u16,
    /// With `INVALID_API_KEY`: `false`, as the Release Lock API answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success: Option<bool>,
    /// A short title of the code.
    pub title: String,
    /// [`ErrorCode::type_uri`].
    #[serde(rename = "type")]
    pub type_uri: String,
}

/// The `holder` of a problem, fields in alphabetical order: the bytes the server sent
/// before this type existed (README examples and scripts compare them).
fn holder_in_alphabetical_order<S: serde::Serializer>(
    holder: &Option<Lease>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Sorted<'a> {
        acquired_at: &'a str,
        expires_at: &'a str,
        key: &'a str,
        owner: &'a str,
        token: u64,
        ttl_ms: u64,
    }
    holder
        .as_ref()
        .map(|h| Sorted {
            acquired_at: &h.acquired_at,
            expires_at: &h.expires_at,
            key: &h.key,
            owner: &h.owner,
            token: h.token,
            ttl_ms: h.ttl_ms,
        })
        .serialize(serializer)
}

impl Problem {
    /// A problem with `code`, `status`, `title` and `detail` (no holder, no `available_at`).
    pub fn new(code: ErrorCode, status: u16, title: &str, detail: impl Into<String>) -> Problem {
        Problem {
            available_at: None,
            code,
            detail: detail.into(),
            error: None,
            holder: None,
            status,
            success: None,
            title: title.to_string(),
            type_uri: code.type_uri(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_screaming_snake_on_the_wire() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
        }
        assert_eq!(
            ErrorCode::LockHeld.type_uri(),
            "https://baton.dev/errors/lock-held"
        );
    }

    #[test]
    fn the_connection_cap_refusal_reads_as_a_retryable_problem() {
        // The body `serve` writes by hand to a connection over the cap.
        let body = r#"{"type":"https://baton.dev/errors/too-many-connections","title":"Too many connections","status":503,"code":"TOO_MANY_CONNECTIONS","detail":"all busy"}"#;
        let p: Problem = serde_json::from_str(body).unwrap();
        assert_eq!(p.code, ErrorCode::TooManyConnections);
        assert!(p.code.is_retryable());
        assert_eq!(p.type_uri, p.code.type_uri());
    }

    #[test]
    fn a_code_this_client_does_not_know_reads_as_unknown() {
        let code: ErrorCode = serde_json::from_str("\"RATE_LIMITED\"").unwrap();
        assert_eq!(code, ErrorCode::Unknown);
        let p: Problem = serde_json::from_str(r#"{"title":"Bad Gateway"}"#).unwrap();
        assert_eq!(
            (p.code, p.title.as_str()),
            (ErrorCode::Unknown, "Bad Gateway")
        );
    }

    #[test]
    fn a_lock_held_problem_writes_its_holder_in_alphabetical_order() {
        let mut p = Problem::new(ErrorCode::LockHeld, 409, "Lock is held", "held");
        p.holder = Some(Lease {
            key: "k".into(),
            owner: "o".into(),
            token: 6,
            acquired_at: "a".into(),
            expires_at: "e".into(),
            ttl_ms: 30_000,
        });
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(
            json,
            r#"{"code":"LOCK_HELD","detail":"held","holder":{"acquired_at":"a","expires_at":"e","key":"k","owner":"o","token":6,"ttl_ms":30000},"status":409,"title":"Lock is held","type":"https://baton.dev/errors/lock-held"}"#
        );
        assert_eq!(serde_json::from_str::<Problem>(&json).unwrap(), p);
    }

    #[test]
    fn a_problem_writes_the_fields_the_server_always_wrote() {
        let p = Problem::new(
            ErrorCode::LockLost,
            409,
            "Lock lost",
            "lock k is held under token 9",
        );
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"code":"LOCK_LOST","detail":"lock k is held under token 9","status":409,"title":"Lock lost","type":"https://baton.dev/errors/lock-lost"}"#
        );
    }
}
