//! Request extractors whose rejections become [`ApiError`]s, so every bad input gets a
//! problem+json answer with its code and nothing reaches the node.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::problem::ApiError;
use crate::locks::Key;

/// A JSON body; malformed, mistyped, unknown-field or oversized bodies are rejected.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(e) => Err(json_rejection(e)),
        }
    }
}

fn json_rejection(e: JsonRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::PayloadTooLarge("request body exceeds api.max_body_bytes".into());
    }
    match e {
        JsonRejection::MissingJsonContentType(_) => ApiError::InvalidRequest(
            "expected a JSON body with content-type: application/json".into(),
        ),
        other => ApiError::InvalidRequest(other.body_text()),
    }
}

/// The `{key}` path segment, validated.
pub struct LockKey(pub Key);

impl<S: Send + Sync> FromRequestParts<S> for LockKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e: PathRejection| ApiError::InvalidKey(e.body_text()))?;
        Key::parse(raw)
            .map(LockKey)
            .map_err(|e| ApiError::InvalidKey(e.to_string()))
    }
}

/// A single path parameter as text (a segment that is not UTF-8 once percent-decoded is
/// an `INVALID_REQUEST` problem, not axum's plain-text rejection).
pub struct PathText(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathText {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(raw)| PathText(raw))
            .map_err(|e: PathRejection| ApiError::InvalidRequest(e.body_text()))
    }
}

/// A query string; unknown parameters and bad values are rejected.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e: QueryRejection| ApiError::InvalidRequest(e.body_text()))
    }
}
