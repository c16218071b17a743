//! [`ApiError`] → `application/problem+json` (RFC 9457): the one table of codes and statuses.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::locks::LockError;
use crate::node::{MembershipError, NodeError};
use crate::wire::{rfc3339_ms, ErrorCode, Lease, Problem};

/// The `error` of an `INVALID_API_KEY` answer (the Release Lock API's text).
pub const INVALID_API_KEY_ERROR: &str = "Invalid API key";

/// Seconds a client should wait before retrying a 503.
pub const RETRY_AFTER_SECS: u64 = 1;
/// Seconds a client should wait before retrying a 429 (a quota frees up as others
/// release or stop waiting, not within a second).
pub const QUOTA_RETRY_AFTER_SECS: u64 = 5;

/// Every error the HTTP API returns.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidKey(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The request target is longer than the server reads (414, hyper's limit).
    #[error("{0}")]
    UriTooLong(String),
    /// The request head is larger than the server buffers (431).
    #[error("{0}")]
    HeaderTooLarge(String),
    /// A Raft RPC without the right cluster secret (401, the Raft listener only).
    #[error("{0}")]
    Unauthorized(String),
    #[error("{detail}")]
    LockHeld { detail: String, holder: Box<Lease> },
    /// Nobody holds the key, but a lock-delay or the queue keeps it from a non-waiting
    /// acquire (code `LOCK_HELD`).
    #[error("{detail}")]
    LockUnavailable {
        detail: String,
        available_at: Option<String>,
    },
    #[error("{0}")]
    WaitTimeout(String),
    #[error("{0}")]
    LockLost(String),
    #[error("{0}")]
    LockNotFound(String),
    #[error("{0}")]
    NotOwner(String),
    #[error("{0}")]
    NoLeader(String),
    #[error("{0}")]
    OutcomeUnknown(String),
    #[error("{0}")]
    QueueFull(String),
    #[error("{0}")]
    TooManyLocks(String),
    #[error("{0}")]
    TooManyStreams(String),
    #[error("{0}")]
    Internal(String),
    /// No API key, or one the node does not know (auth on).
    #[error("{0}")]
    InvalidApiKey(String),
    /// The caller's application lacks the permission (auth on).
    #[error("{0}")]
    Forbidden(String),
    /// Another membership change is under way.
    #[error("{0}")]
    MembershipChangeInProgress(String),
    /// The node is not a member.
    #[error("{0}")]
    NodeNotFound(String),
    /// The node id or an address is taken.
    #[error("{0}")]
    NodeConflict(String),
    /// The change would leave no voter or no reachable majority.
    #[error("{0}")]
    MembershipUnsafe(String),
    /// The added node did not catch up in time.
    #[error("{0}")]
    NotCaughtUp(String),
}

impl ApiError {
    /// The stable `code`, the HTTP status and the title.
    pub fn parts(&self) -> (ErrorCode, StatusCode, &'static str) {
        use ApiError::*;
        use ErrorCode as C;
        match self {
            InvalidKey(_) => (C::InvalidKey, StatusCode::BAD_REQUEST, "Invalid key"),
            InvalidRequest(_) => (
                C::InvalidRequest,
                StatusCode::BAD_REQUEST,
                "Invalid request",
            ),
            NotFound(_) => (C::InvalidRequest, StatusCode::NOT_FOUND, "No such endpoint"),
            MethodNotAllowed(_) => (
                C::InvalidRequest,
                StatusCode::METHOD_NOT_ALLOWED,
                "Method not allowed",
            ),
            PayloadTooLarge(_) => (
                C::PayloadTooLarge,
                StatusCode::PAYLOAD_TOO_LARGE,
                "Payload too large",
            ),
            UriTooLong(_) => (C::InvalidRequest, StatusCode::URI_TOO_LONG, "URI too long"),
            HeaderTooLarge(_) => (
                C::InvalidRequest,
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "Request header too large",
            ),
            Unauthorized(_) => (C::Unauthorized, StatusCode::UNAUTHORIZED, "Unauthorized"),
            LockHeld { .. } => (C::LockHeld, StatusCode::CONFLICT, "Lock is held"),
            LockUnavailable { .. } => (C::LockHeld, StatusCode::CONFLICT, "Lock is not available"),
            WaitTimeout(_) => (C::WaitTimeout, StatusCode::CONFLICT, "Wait timed out"),
            LockLost(_) => (C::LockLost, StatusCode::CONFLICT, "Lock lost"),
            LockNotFound(_) => (C::LockNotFound, StatusCode::NOT_FOUND, "Lock not found"),
            NotOwner(_) => (C::NotOwner, StatusCode::FORBIDDEN, "Not the owner"),
            InvalidApiKey(_) => (
                C::InvalidApiKey,
                StatusCode::UNAUTHORIZED,
                "Invalid API key",
            ),
            Forbidden(_) => (C::Forbidden, StatusCode::FORBIDDEN, "Forbidden"),
            MembershipChangeInProgress(_) => (
                C::MembershipChangeInProgress,
                StatusCode::CONFLICT,
                "Membership change in progress",
            ),
            NodeNotFound(_) => (C::NodeNotFound, StatusCode::NOT_FOUND, "Node not found"),
            NodeConflict(_) => (C::NodeConflict, StatusCode::CONFLICT, "Node conflict"),
            MembershipUnsafe(_) => (
                C::MembershipUnsafe,
                StatusCode::CONFLICT,
                "Membership change unsafe",
            ),
            NotCaughtUp(_) => (C::NotCaughtUp, StatusCode::CONFLICT, "Node not caught up"),
            NoLeader(_) => (C::NoLeader, StatusCode::SERVICE_UNAVAILABLE, "No leader"),
            OutcomeUnknown(_) => (
                C::OutcomeUnknown,
                StatusCode::SERVICE_UNAVAILABLE,
                "Outcome unknown",
            ),
            QueueFull(_) => (C::QueueFull, StatusCode::TOO_MANY_REQUESTS, "Queue full"),
            TooManyLocks(_) => (
                C::TooManyLocks,
                StatusCode::TOO_MANY_REQUESTS,
                "Too many locks",
            ),
            TooManyStreams(_) => (
                C::TooManyStreams,
                StatusCode::SERVICE_UNAVAILABLE,
                "Too many event streams",
            ),
            Internal(_) => (
                C::Internal,
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal error",
            ),
        }
    }
}

impl From<LockError> for ApiError {
    fn from(e: LockError) -> ApiError {
        match e {
            LockError::Held { ref holder } => ApiError::LockHeld {
                detail: e.to_string(),
                holder: Box::new(Lease::from(holder)),
            },
            LockError::Unavailable { until_ms, .. } => ApiError::LockUnavailable {
                detail: e.to_string(),
                available_at: until_ms.map(rfc3339_ms),
            },
            LockError::Lost { .. } => ApiError::LockLost(e.to_string()),
            LockError::NotOwner { .. } | LockError::NotYourLock { .. } => {
                ApiError::NotOwner(e.to_string())
            }
        }
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> ApiError {
        match e {
            NodeError::NotLeader => ApiError::NoLeader("this node is not the leader; retry".into()),
            NodeError::NoQuorum(m) => ApiError::NoLeader(m),
            NodeError::OutcomeUnknown(m) => ApiError::OutcomeUnknown(format!(
                "{m}; the write may or may not have taken effect, retry it"
            )),
            NodeError::Stopped(m) => ApiError::Internal(m),
            NodeError::Refused(m) => ApiError::InvalidRequest(m),
        }
    }
}

impl From<MembershipError> for ApiError {
    fn from(e: MembershipError) -> ApiError {
        match e {
            MembershipError::InProgress(m) => ApiError::MembershipChangeInProgress(m),
            MembershipError::NotFound(m) => ApiError::NodeNotFound(m),
            MembershipError::Conflict(m) => ApiError::NodeConflict(m),
            MembershipError::Unsafe(m) => ApiError::MembershipUnsafe(m),
            MembershipError::NotCaughtUp(m) => ApiError::NotCaughtUp(m),
            MembershipError::Node(e) => e.into(),
        }
    }
}

impl ApiError {
    /// The status and the problem body of this error.
    pub fn to_problem(&self) -> (StatusCode, Problem) {
        let (code, status, title) = self.parts();
        let mut body = Problem::new(code, status.as_u16(), title, self.to_string());
        match self {
            ApiError::LockHeld { holder, .. } => body.holder = Some(holder.as_ref().clone()),
            ApiError::LockUnavailable { available_at, .. } => {
                body.available_at.clone_from(available_at)
            }
            // The Release Lock API's shape, so its clients read this answer too.
            ApiError::InvalidApiKey(_) => {
                body.success = Some(false);
                body.error = Some(INVALID_API_KEY_ERROR.to_string());
            }
            _ => {}
        }
        (status, body)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = self.to_problem();
        crate::metrics::metrics().problem(body.code);
        let code = body.code.as_str();
        match status {
            StatusCode::INTERNAL_SERVER_ERROR => {
                tracing::error!(code, detail = %self, "request failed")
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                tracing::debug!(code, detail = %self, "request unavailable")
            }
            _ => tracing::debug!(code, detail = %self, "request refused"),
        }
        let mut resp = (status, axum::Json(body)).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"baton\""),
            );
        }
        let retry_after = match status {
            StatusCode::SERVICE_UNAVAILABLE => Some(RETRY_AFTER_SECS),
            StatusCode::TOO_MANY_REQUESTS => Some(QUOTA_RETRY_AFTER_SECS),
            _ => None,
        };
        if let Some(secs) = retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}
