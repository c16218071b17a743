//! The closed loop of one connection: send a request, wait for the answer, record it,
//! send the next.
//!
//! One [`Worker`] per `--conns`, each with its own [`Conn`]. What a worker sends depends
//! on the [`Mode`]:
//! - `uncontended`: acquire a fresh key per request, `bench-<run>-<conn>-<n>`, as owner
//!   `bench-<run>-<conn>` (the locks are left to expire after `--ttl`);
//! - `cycle`: acquire `bench-<run>-<conn>`, then release it with the token (two requests);
//! - `contended`: every connection acquires `bench-<run>-contended`; `LOCK_HELD` is an
//!   expected refusal, and a granted lock is released at once;
//! - `read`: linearizable `GET /v1/locks/bench-<run>-read` (acquired by the runner);
//! - `queue`: every connection waits in the FIFO queue of `bench-<run>-queue`
//!   ([`QUEUE_WAIT_MS`]) and releases the lock as soon as it is granted, so the key is
//!   handed from one waiter to the next; an acquire's latency is its time in the queue,
//!   and `WAIT_TIMEOUT` is an expected refusal (the worker queues again at the back).
//!
//! A request is recorded when it *started* inside the measured window
//! `[measure_from, end)`; no request starts at or after `end`, and the one in flight then
//! is awaited (its latency is real and belongs in the tail). After an error the worker
//! pauses [`ERROR_BACKOFF`] so a dead endpoint does not turn the loop into a busy spin.
//!
//! Caveat: a closed loop sends the next request only after the previous answer, so when
//! the service stalls the client stalls too and sends fewer requests ("coordinated
//! omission"): the percentiles describe the requests that were sent, not the latency an
//! open stream of arrivals would have seen.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use serde::Deserialize;
use tokio::time::Instant;

use super::conn::{Answer, Conn, TransportError};
use super::stats::{Op, Outcome, Recorder};
use super::Mode;
use crate::wire::{AcquireRequest, ErrorCode, ReleaseRequest};

/// Pause after an error before the next request.
pub const ERROR_BACKOFF: Duration = Duration::from_millis(20);
/// `wait_ms` of a `queue` acquire: below the client's [`super::conn::REQUEST_TIMEOUT`],
/// so a wait that runs out is the server's `WAIT_TIMEOUT`, not a transport timeout.
pub const QUEUE_WAIT_MS: u64 = 8_000;

/// What every worker of a run shares.
#[derive(Clone, Debug)]
pub struct Plan {
    pub mode: Mode,
    /// Distinguishes this run's keys and owners from earlier runs'.
    pub run_id: String,
    pub ttl_ms: u64,
    /// Requests started before this are warmup: sent, counted live, not recorded.
    pub measure_from: Instant,
    /// No request starts at or after this.
    pub end: Instant,
}

/// The key every worker reads in `read` mode; the runner acquires it before the run.
pub fn read_key(run_id: &str) -> String {
    format!("bench-{run_id}-read")
}

/// Counters of every request (warmup included), for the live progress line.
#[derive(Debug, Default)]
pub struct Live {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
}

/// The part of a problem+json body the benchmark reads (the rest is skipped, not
/// decoded: contended runs classify thousands of refusals a second).
#[derive(Deserialize)]
struct ProblemCode {
    code: Option<ErrorCode>,
}

/// The part of a grant ([`crate::wire::Lease`]) the benchmark reads.
#[derive(Deserialize)]
struct GrantToken {
    token: u64,
}

/// What an answer means for the report: the outcome, and the body when it succeeded.
pub fn classify(
    result: Result<Answer, TransportError>,
    expected: Option<ErrorCode>,
) -> (Outcome, Option<Bytes>) {
    match result {
        Ok(a) if a.status.is_success() => (Outcome::Success, Some(a.body)),
        Ok(a) => {
            let code = serde_json::from_slice::<ProblemCode>(&a.body)
                .ok()
                .and_then(|p| p.code);
            match (code, expected) {
                (Some(c), Some(e)) if c == e => (Outcome::Refused(e.as_str()), None),
                (Some(c), _) => (Outcome::Error(c.as_str().to_string()), None),
                (None, _) => (Outcome::Error(format!("HTTP_{}", a.status.as_u16())), None),
            }
        }
        Err(e) => (Outcome::Error(e.kind()), None),
    }
}

/// The token of a grant body, if it is one.
pub fn token_of(body: &[u8]) -> Option<u64> {
    serde_json::from_slice::<GrantToken>(body)
        .ok()
        .map(|g| g.token)
}

/// The body of an acquire request.
pub fn acquire_body(owner: &str, ttl_ms: u64) -> Bytes {
    let body = AcquireRequest {
        owner: owner.to_string(),
        ttl_ms: Some(ttl_ms),
        ..Default::default()
    };
    Bytes::from(serde_json::to_vec(&body).expect("a struct of strings and numbers serialises"))
}

/// The body of an acquire that waits up to `wait_ms` in the key's queue.
pub fn waiting_acquire_body(owner: &str, ttl_ms: u64, wait_ms: u64) -> Bytes {
    let body = AcquireRequest {
        owner: owner.to_string(),
        ttl_ms: Some(ttl_ms),
        wait_ms: Some(wait_ms),
        ..Default::default()
    };
    Bytes::from(serde_json::to_vec(&body).expect("a struct of strings and numbers serialises"))
}

/// The body of a release-by-token request.
pub fn release_body(token: u64) -> Bytes {
    Bytes::from(
        serde_json::to_vec(&ReleaseRequest::by_token(token))
            .expect("a struct of numbers serialises"),
    )
}

/// One connection's closed loop.
pub struct Worker {
    index: usize,
    conn: Conn,
    plan: Arc<Plan>,
    live: Arc<Live>,
    recorder: Recorder,
}

impl Worker {
    /// Worker number `index` (used in its keys and owner) over `conn`.
    pub fn new(index: usize, conn: Conn, plan: Arc<Plan>, live: Arc<Live>) -> Worker {
        Worker {
            index,
            conn,
            plan,
            live,
            recorder: Recorder::default(),
        }
    }

    /// Runs until the plan's end and returns what it recorded.
    pub async fn run(mut self) -> Recorder {
        let run = self.plan.run_id.clone();
        let i = self.index;
        let owner = format!("bench-{run}-{i}");
        let acquire = match self.plan.mode {
            Mode::Queue => waiting_acquire_body(&owner, self.plan.ttl_ms, QUEUE_WAIT_MS),
            _ => acquire_body(&owner, self.plan.ttl_ms),
        };
        let key = match self.plan.mode {
            Mode::Cycle => owner.clone(),
            Mode::Contended => format!("bench-{run}-contended"),
            Mode::Queue => format!("bench-{run}-queue"),
            Mode::Read => read_key(&run),
            Mode::Uncontended | Mode::Watch | Mode::Connect => String::new(),
        };
        let acquire_path = format!("/v1/locks/{key}/acquire");
        let release_path = format!("/v1/locks/{key}/release");
        let read_path = format!("/v1/locks/{key}");
        let mut n: u64 = 0;
        while Instant::now() < self.plan.end {
            match self.plan.mode {
                Mode::Uncontended => {
                    let path = format!("/v1/locks/{owner}-{n}/acquire");
                    n += 1;
                    self.call(
                        Op::Acquire,
                        Method::POST,
                        &path,
                        Some(acquire.clone()),
                        None,
                    )
                    .await;
                }
                Mode::Cycle | Mode::Contended | Mode::Queue => {
                    let expected = match self.plan.mode {
                        Mode::Contended => Some(ErrorCode::LockHeld),
                        Mode::Queue => Some(ErrorCode::WaitTimeout),
                        _ => None,
                    };
                    let body = Some(acquire.clone());
                    let granted = self
                        .call(Op::Acquire, Method::POST, &acquire_path, body, expected)
                        .await;
                    if let Some(token) = granted.as_deref().and_then(token_of) {
                        let body = Some(release_body(token));
                        self.call(Op::Release, Method::POST, &release_path, body, None)
                            .await;
                    }
                }
                Mode::Read => {
                    self.call(Op::Read, Method::GET, &read_path, None, None)
                        .await;
                }
                // Not closed loops: the runner gives these no workers (`bench::crowd`).
                Mode::Watch | Mode::Connect => break,
            }
        }
        self.recorder.reconnects = self.conn.connects().saturating_sub(1);
        self.recorder
    }

    /// Sends one request, records it, and returns the body when it succeeded.
    async fn call(
        &mut self,
        op: Op,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        expected: Option<ErrorCode>,
    ) -> Option<Bytes> {
        let started = Instant::now();
        let result = self.conn.send(method, path, body).await;
        let latency = started.elapsed();
        let answered = result.is_ok();
        let (outcome, success) = classify(result, expected);
        let failed = matches!(outcome, Outcome::Error(_));
        self.live.requests.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.live.errors.fetch_add(1, Ordering::Relaxed);
        }
        if started >= self.plan.measure_from && started < self.plan.end {
            self.recorder
                .record(op, outcome, answered.then_some(latency));
        }
        if failed && Instant::now() < self.plan.end {
            tokio::time::sleep(ERROR_BACKOFF).await;
        }
        success
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::StatusCode;

    fn answer(status: u16, body: &str) -> Result<Answer, TransportError> {
        Ok(Answer {
            status: StatusCode::from_u16(status).unwrap(),
            body: Bytes::from(body.to_string()),
        })
    }

    #[test]
    fn success_keeps_the_body() {
        let (o, body) = classify(answer(200, r#"{"token":7}"#), None);
        assert_eq!(o, Outcome::Success);
        assert_eq!(token_of(&body.unwrap()), Some(7));
    }

    #[test]
    fn problems_are_errors_by_code_unless_expected() {
        let held = r#"{"status":409,"code":"LOCK_HELD","holder":{}}"#;
        assert_eq!(
            classify(answer(409, held), Some(ErrorCode::LockHeld)).0,
            Outcome::Refused("LOCK_HELD")
        );
        assert_eq!(
            classify(answer(409, held), None).0,
            Outcome::Error("LOCK_HELD".into())
        );
        assert_eq!(
            classify(
                answer(503, r#"{"code":"NO_LEADER"}"#),
                Some(ErrorCode::LockHeld)
            )
            .0,
            Outcome::Error("NO_LEADER".into())
        );
        assert_eq!(
            classify(answer(502, "bad gateway"), None).0,
            Outcome::Error("HTTP_502".into())
        );
    }

    #[test]
    fn transport_failures_are_errors_by_kind() {
        let err = TransportError::Timeout {
            addr: "127.0.0.1:1".into(),
            timeout: Duration::from_secs(1),
        };
        assert_eq!(
            classify(Err(err), None).0,
            Outcome::Error("transport:timeout".into())
        );
    }

    #[test]
    fn bodies_are_the_api_shapes() {
        let v: serde_json::Value =
            serde_json::from_slice(&acquire_body("bench-x-1", 30_000)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"owner": "bench-x-1", "ttl_ms": 30000})
        );
        let v: serde_json::Value =
            serde_json::from_slice(&waiting_acquire_body("bench-x-1", 30_000, 8_000)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"owner": "bench-x-1", "ttl_ms": 30000, "wait_ms": 8000})
        );
        let v: serde_json::Value = serde_json::from_slice(&release_body(42)).unwrap();
        assert_eq!(v, serde_json::json!({"token": 42}));
        assert_eq!(token_of(b"{\"key\":\"k\"}"), None);
    }
}
