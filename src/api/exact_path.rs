//! One meaning per path on every node: a request target with a dot segment (`.` or
//! `..`, also percent-encoded as `%2e`) is refused before routing, on every node.
//!
//! axum routes the target as sent, but the relay's HTTP client (like any URL library)
//! removes dot segments before sending: `DELETE /v1/locks/x/../victim` was 404 on the
//! leader, yet a follower relayed it as `DELETE /v1/locks/victim` and the leader
//! force-released `victim`; keys `.` and `..` worked on the leader and failed through
//! followers. Refusing such targets everywhere gives them the same answer on every node,
//! and [`super::relay`] checks that what it sends is byte for byte what it received.
//!
//! Keys `.` and `..` are valid [`crate::locks::Key`]s, but no path can name them: they
//! are refused as `INVALID_KEY`; any other dot segment as `INVALID_REQUEST`.

use super::problem::ApiError;

/// The routes whose third segment is a lock key (`/v1/locks/{key}...`).
const LOCKS_PREFIX: &str = "/v1/locks/";

/// A path segment that URL normalisation would remove or climb with: `.` or `..`,
/// each dot possibly written `%2e` / `%2E`.
pub fn is_dot_segment(segment: &str) -> bool {
    // One or two dots, each `.` or `%2e` in either case; no allocation, since every
    // segment of every request passes here.
    let mut rest = segment.as_bytes();
    let mut dots = 0;
    while !rest.is_empty() {
        if rest[0] == b'.' {
            rest = &rest[1..];
        } else if rest.len() >= 3 && rest[..3].eq_ignore_ascii_case(b"%2e") {
            rest = &rest[3..];
        } else {
            return false;
        }
        dots += 1;
        if dots > 2 {
            return false;
        }
    }
    dots > 0
}

/// The problem with `path`, if it has a dot segment.
pub fn check(path: &str) -> Result<(), ApiError> {
    let Some(segment) = path.split('/').find(|s| is_dot_segment(s)) else {
        return Ok(());
    };
    let key_position = path
        .strip_prefix(LOCKS_PREFIX)
        .is_some_and(|rest| rest.split('/').next() == Some(segment));
    if key_position {
        return Err(ApiError::InvalidKey(format!(
            "key {segment:?} cannot be named in a path (a dot segment); use another key"
        )));
    }
    Err(ApiError::InvalidRequest(format!(
        "path {path:?} has the dot segment {segment:?}; paths are taken as sent, never normalised"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ErrorCode;
    use test_case::test_case;

    #[test_case("/v1/locks/x/../victim", Some(ErrorCode::InvalidRequest); "climbing out of a key")]
    #[test_case("/v1/locks/../acquire", Some(ErrorCode::InvalidKey); "key dot dot")]
    #[test_case("/v1/locks/./acquire", Some(ErrorCode::InvalidKey); "key dot")]
    #[test_case("/v1/locks/%2e%2E", Some(ErrorCode::InvalidKey); "percent-encoded key")]
    #[test_case("/v1/locks/.%2e/release", Some(ErrorCode::InvalidKey); "half encoded")]
    #[test_case("/v1/./cluster", Some(ErrorCode::InvalidRequest); "elsewhere")]
    #[test_case("/v1/locks/x/%2e", Some(ErrorCode::InvalidRequest); "trailing")]
    #[test_case("/v1/locks/...", None; "three dots are a key like any other")]
    #[test_case("/v1/locks/a..b/acquire", None; "dots inside a key")]
    #[test_case("/v1/locks/.hidden", None; "a leading dot")]
    #[test_case("/v1/locks/%2e%2e%2E", None; "three encoded dots are a key")]
    #[test_case("/v1/locks/%2", None; "a cut escape is no dot")]
    #[test_case("/v1/locks/x/%2E.", Some(ErrorCode::InvalidRequest); "mixed spelling")]
    #[test_case("/healthz", None; "plain")]
    fn dot_segments_are_refused_everywhere(path: &str, code: Option<ErrorCode>) {
        assert_eq!(check(path).err().map(|e| e.parts().0), code);
    }
}
