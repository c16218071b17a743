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
//! processes — the one the chaos script pauses with SIGSTOP, the children of
//! `baton lock` — write to the same one. A write that names its `owner` and the time the
//! writer sent it on the run's clock (`invoke_ms`, the writer's own timestamp) is
//! recorded in the history by the resource itself: a child that `baton lock` kills right
//! after it sent a write could not record it, and every write that reached the resource
//! is one the checker must see. With `ignore_tokens` (the negative control) it accepts
//! everything; the checker must catch that.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::history::{ClientKind, Op, OpKind, Outcome};
use super::workload::Recorder;
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
    /// The writer, when the resource records the write (with `invoke_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// When the writer sent it, on the run's history clock (the writer's own timestamp).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoke_ms: Option<u64>,
    /// The client that supervises the writer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientKind>,
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

    /// Tries a write and records it in `rec` as a `resource_write` by `owner`, sent at
    /// `invoke_ms` (the writer's clock) by a holder under `client`.
    pub(super) fn write_recorded(
        &self,
        rec: &Recorder,
        key: &str,
        token: u64,
        owner: &str,
        invoke_ms: u64,
        client: Option<ClientKind>,
    ) -> WriteAnswer {
        let answer = self.write(key, token);
        let outcome = if answer.accepted {
            Outcome::Ok
        } else {
            Outcome::Fail
        };
        let mut op = Op::new(
            OpKind::ResourceWrite,
            key,
            owner,
            Some(token),
            invoke_ms,
            rec.now_ms().max(invoke_ms),
            outcome,
        );
        op.seq = Some(answer.seq);
        op.client = client;
        rec.push(op);
        answer
    }
}

/// The resource's HTTP face; writes that carry their timestamps are recorded in `rec`.
pub(super) fn router(resource: Arc<Resource>, rec: Recorder) -> Router {
    Router::new()
        .route("/write", post(write))
        .with_state((resource, rec))
}

async fn write(
    State((resource, rec)): State<(Arc<Resource>, Recorder)>,
    Json(req): Json<WriteRequest>,
) -> Json<WriteAnswer> {
    Json(match (&req.owner, req.invoke_ms) {
        (Some(owner), Some(invoke_ms)) => {
            resource.write_recorded(&rec, &req.key, req.token, owner, invoke_ms, req.client)
        }
        _ => resource.write(&req.key, req.token),
    })
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
