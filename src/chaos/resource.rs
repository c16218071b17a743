//! The fenced resource of the chaos workload: a stand-in for the database or file a lock
//! protects.
//!
//! It keeps the highest fencing token it has accepted per key and refuses a write that
//! presents a lower one — the check that makes leases safe against paused or partitioned
//! holders (DESIGN.md "Time and leases"). Every attempt gets a sequence number, so the
//! checker can replay the resource's order exactly.
//!
//! The main workload process owns the resource and serves it over HTTP
//! (`POST /write {"key","token"}` → `{"accepted","seq"}`), so that holders in other
//! processes — the one the chaos script pauses with SIGSTOP — write to the same one.
//! With `ignore_tokens` (the negative control) it accepts everything; the checker must
//! catch that.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::sync::LockUnpoisoned;

/// Highest accepted token per key.
#[derive(Default)]
pub struct Resource {
    state: Mutex<ResourceState>,
    ignore_tokens: bool,
}

#[derive(Default)]
struct ResourceState {
    /// Number of write attempts so far.
    seq: u64,
    highest: BTreeMap<String, u64>,
}

/// A write attempt, as sent over HTTP.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteRequest {
    pub key: String,
    pub token: u64,
}

/// The resource's answer to a write attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteAnswer {
    pub accepted: bool,
    /// The attempt's position in the resource's order.
    pub seq: u64,
}

impl Resource {
    /// A resource that fences (or, for the negative control, does not).
    pub fn new(ignore_tokens: bool) -> Resource {
        Resource {
            ignore_tokens,
            ..Resource::default()
        }
    }

    /// Tries a write with `token` on `key`.
    pub fn write(&self, key: &str, token: u64) -> WriteAnswer {
        let mut state = self.state.lock_unpoisoned();
        state.seq += 1;
        let seq = state.seq;
        let top = state.highest.entry(key.to_string()).or_insert(0);
        let accepted = self.ignore_tokens || token >= *top;
        if accepted {
            *top = (*top).max(token);
        }
        WriteAnswer { accepted, seq }
    }
}

/// The resource's HTTP face.
pub fn router(resource: Arc<Resource>) -> Router {
    Router::new()
        .route("/write", post(write))
        .with_state(resource)
}

async fn write(
    State(resource): State<Arc<Resource>>,
    Json(req): Json<WriteRequest>,
) -> Json<WriteAnswer> {
    Json(resource.write(&req.key, req.token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lower_token_is_refused_after_a_higher_one() {
        let r = Resource::new(false);
        assert!(r.write("k", 5).accepted);
        assert!(r.write("k", 5).accepted);
        assert!(!r.write("k", 4).accepted);
        assert!(r.write("j", 1).accepted);
        assert_eq!(
            r.write("k", 9),
            WriteAnswer {
                accepted: true,
                seq: 5
            }
        );
    }

    #[test]
    fn the_negative_control_accepts_stale_tokens() {
        let r = Resource::new(true);
        assert!(r.write("k", 5).accepted);
        assert!(r.write("k", 4).accepted);
    }
}
