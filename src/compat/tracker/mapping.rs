//! Tracker's JSON shapes and errors, and how they map onto Baton's types.
//!
//! Field names, status codes and messages are Tracker's contract, exactly: scripts test
//! `jq -r .id` against `null`, so no error body has a top-level `id`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use time::macros::format_description;
use time::OffsetDateTime;

use crate::api::problem::ApiError;
use crate::locks::{Grant, Key, Owner, Token};

/// `Retry-After` (seconds) of a 503: an election takes about a second.
pub const RETRY_AFTER_SECONDS: u64 = 1;
/// `per_page` of a list that names none (Tracker's default).
pub const DEFAULT_PER_PAGE: usize = 100;
/// The deepest lock a page may reach (`page × per_page`). A page is found by walking the
/// table in key order under its read lock, so this bounds the walk one request causes
/// (Baton's own `GET /v1/locks` pages with a cursor and has no such limit).
pub const MAX_PAGE_DEPTH: usize = 100_000;

/// Tracker's lock object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackerLock {
    /// The fencing token, in decimal.
    pub id: String,
    pub service: String,
    pub who: String,
    /// RFC 3339 UTC in whole seconds with a `Z`.
    #[serde(rename = "createdAt")]
    pub created_at: String,
}

impl From<&Grant> for TrackerLock {
    fn from(g: &Grant) -> TrackerLock {
        TrackerLock {
            id: g.token.0.to_string(),
            service: g.key.to_string(),
            who: g.owner.to_string(),
            created_at: rfc3339_seconds(g.acquired_at_ms),
        }
    }
}

/// The holder named in a 409.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExistingLock {
    pub id: String,
    pub who: String,
    #[serde(rename = "createdAt")]
    pub created_at: String,
}

/// `POST /api/v1alpha1/lock`. Unknown fields are ignored, as Tracker does; `ttl_ms` is
/// Baton's extension.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateRequest {
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub who: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}

/// A create validated into Baton's types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Create {
    pub key: Key,
    pub owner: Owner,
    pub ttl_ms: Option<u64>,
}

impl CreateRequest {
    /// Checks `service` and `who`: present, non-empty, valid as Baton's key and owner.
    pub fn validate(self) -> Result<Create, TrackerError> {
        let service = match self.service {
            Some(s) if !s.is_empty() => s,
            _ => return Err(TrackerError::BadRequest("service is required".into())),
        };
        let who = match self.who {
            Some(w) if !w.is_empty() => w,
            _ => return Err(TrackerError::BadRequest("who is required".into())),
        };
        let key = Key::parse(service.clone()).map_err(|e| {
            TrackerError::BadRequest(format!("service {service:?} is not a valid Baton key: {e}"))
        })?;
        let owner = Owner::parse(who.clone())
            .map_err(|e| TrackerError::BadRequest(format!("who {who:?} is not valid: {e}")))?;
        Ok(Create {
            key,
            owner,
            ttl_ms: self.ttl_ms,
        })
    }
}

/// `GET /api/v1alpha1/locks/list` query.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListQuery {
    pub page: Option<i64>,
    pub per_page: Option<i64>,
}

/// A list page request, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    /// 1-based.
    pub page: usize,
    pub per_page: usize,
}

impl ListQuery {
    /// Defaults page 1 and `per_page` 100; `page >= 1`, `per_page` in `1..=max_per_page`.
    pub fn validate(self, max_per_page: usize) -> Result<Page, TrackerError> {
        let page = self.page.unwrap_or(1);
        if page < 1 {
            return Err(TrackerError::BadRequest(format!("page {page} is below 1")));
        }
        let per_page = self
            .per_page
            .unwrap_or(DEFAULT_PER_PAGE.min(max_per_page) as i64);
        if per_page < 1 || per_page > max_per_page as i64 {
            return Err(TrackerError::BadRequest(format!(
                "per_page {per_page} is outside 1..={max_per_page}"
            )));
        }
        let page = usize::try_from(page).unwrap_or(usize::MAX);
        let per_page = per_page as usize;
        if page.saturating_mul(per_page) > MAX_PAGE_DEPTH {
            return Err(TrackerError::BadRequest(format!(
                "page {page} of {per_page} reaches past lock {MAX_PAGE_DEPTH}, the deepest this API pages; \
                 Baton's GET /v1/locks pages any number of locks with a cursor"
            )));
        }
        Ok(Page { page, per_page })
    }
}

/// `GET /api/v1alpha1/locks/list` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockList {
    pub locks: Vec<TrackerLock>,
    /// Every live lock, not only this page's.
    pub total: u64,
    pub page: u64,
    #[serde(rename = "perPage")]
    pub per_page: u64,
}

/// `GET /api/v1alpha1/unlock/{id}` answer, success or 404.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnlockReply {
    pub success: bool,
    pub message: String,
}

/// The message of a successful unlock (Tracker's).
pub const UNLOCK_OK: &str = "Lock released successfully";
/// The 404 message of get and unlock (Tracker's).
pub const NOT_FOUND: &str = "lock not found";
/// The 409 message (Tracker's).
pub const ALREADY_EXISTS: &str = "lock already exists";

/// A lock id: the token in plain decimal. Anything else (`null`, empty, a sign,
/// non-digits, too large) names no lock.
pub fn parse_id(raw: &str) -> Option<Token> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok().map(Token)
}

/// RFC 3339 UTC in whole seconds (`2024-01-15T10:00:00Z`), truncating the milliseconds.
pub fn rfc3339_seconds(ms: u64) -> String {
    let fmt = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    i64::try_from(ms / 1_000)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| format!("{ms}ms"))
}

/// Why a Tracker request failed; each has Tracker's status and body.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TrackerError {
    /// 400: a missing, empty or invalid field or query parameter.
    #[error("{0}")]
    BadRequest(String),
    /// 409: the service is locked (by anyone, the same `who` too).
    #[error("lock already exists")]
    AlreadyExists(Option<ExistingLock>),
    /// 404 of `GET /lock/{id}`.
    #[error("lock not found")]
    NotFound,
    /// 404 of `GET /unlock/{id}`: that id holds nothing; nothing changed.
    #[error("lock not found")]
    NothingToUnlock,
    /// 503 with `Retry-After`: no leader, no quorum, or the outcome is unknown.
    #[error("{0}")]
    Unavailable(String),
    /// 500: this node cannot serve (Raft stopped) or answered something unexpected.
    #[error("{0}")]
    Internal(String),
    /// Refused by a rule Baton's own API shares: 403 (auth on: the application lacks the
    /// permission on the service, or the lock is another application's) or 429 (a limit).
    #[error("{message}")]
    Refused { status: StatusCode, message: String },
}

impl From<ApiError> for TrackerError {
    fn from(e: ApiError) -> TrackerError {
        let (_, status, _) = e.parts();
        match status {
            StatusCode::SERVICE_UNAVAILABLE => TrackerError::Unavailable(e.to_string()),
            StatusCode::INTERNAL_SERVER_ERROR => TrackerError::Internal(e.to_string()),
            status => TrackerError::Refused {
                status,
                message: e.to_string(),
            },
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    #[serde(rename = "existingLock", skip_serializing_if = "Option::is_none")]
    existing_lock: Option<&'a ExistingLock>,
}

impl TrackerError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            TrackerError::BadRequest(_) => StatusCode::BAD_REQUEST,
            TrackerError::AlreadyExists(_) => StatusCode::CONFLICT,
            TrackerError::NotFound | TrackerError::NothingToUnlock => StatusCode::NOT_FOUND,
            TrackerError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            TrackerError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            TrackerError::Refused { status, .. } => *status,
        }
    }
}

impl IntoResponse for TrackerError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = self.to_string();
        let mut resp = match &self {
            TrackerError::NothingToUnlock => Json(UnlockReply {
                success: false,
                message,
            })
            .into_response(),
            TrackerError::AlreadyExists(existing) => Json(ErrorBody {
                error: &message,
                existing_lock: existing.as_ref(),
            })
            .into_response(),
            _ => Json(ErrorBody {
                error: &message,
                existing_lock: None,
            })
            .into_response(),
        };
        *resp.status_mut() = status;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    #[test_case("42", Some(42); "decimal")]
    #[test_case("0", Some(0); "zero")]
    #[test_case("null", None; "null")]
    #[test_case("", None; "empty")]
    #[test_case("-1", None; "negative")]
    #[test_case("+1", None; "a plus sign")]
    #[test_case("1e3", None; "exponent")]
    #[test_case("99999999999999999999999", None; "too large")]
    fn ids_are_plain_decimal_tokens(raw: &str, token: Option<u64>) {
        assert_eq!(parse_id(raw), token.map(Token));
    }

    #[test]
    fn created_at_is_utc_in_whole_seconds() {
        assert_eq!(rfc3339_seconds(1_705_312_800_999), "2024-01-15T10:00:00Z");
    }

    #[test_case(r#"{"who":"a"}"#, "service is required"; "missing service")]
    #[test_case(r#"{"service":"","who":"a"}"#, "service is required"; "empty service")]
    #[test_case(r#"{"service":"s"}"#, "who is required"; "missing who")]
    #[test_case(r#"{"service":"a/b","who":"a"}"#, "service \"a/b\" is not a valid Baton key"; "slash")]
    fn bad_creates_say_which_field(body: &str, message: &str) {
        let req: CreateRequest = serde_json::from_str(body).unwrap();
        let err = req.validate().unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert!(err.to_string().starts_with(message), "{err}");
    }

    #[test]
    fn unknown_create_fields_are_ignored() {
        let req: CreateRequest =
            serde_json::from_str(r#"{"service":"s","who":"w","extra":1}"#).unwrap();
        assert!(req.validate().is_ok());
    }

    #[test_case(None, None, Ok((1, 100)); "defaults")]
    #[test_case(Some(3), Some(7), Ok((3, 7)); "given")]
    #[test_case(Some(0), None, Err(()); "page zero")]
    #[test_case(None, Some(0), Err(()); "per_page zero")]
    #[test_case(None, Some(1001), Err(()); "per_page above the maximum")]
    #[test_case(Some(100), Some(1000), Ok((100, 1000)); "the deepest page")]
    #[test_case(Some(101), Some(1000), Err(()); "past the deepest page")]
    #[test_case(Some(i64::MAX), Some(2), Err(()); "a page number that overflows")]
    fn list_pages_are_checked(
        page: Option<i64>,
        per_page: Option<i64>,
        want: Result<(usize, usize), ()>,
    ) {
        let got = ListQuery { page, per_page }
            .validate(1_000)
            .map(|p| (p.page, p.per_page))
            .map_err(|_| ());
        assert_eq!(got, want);
    }
}
