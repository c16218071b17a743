//! The Rust client: talks to any node, follows leader changes, retries what is safe.
//!
//! Every write in Baton is idempotent (acquire by the same owner returns the same grant,
//! renew and release by token can be repeated), so a call is retried — against the next
//! endpoint, after a capped exponential backoff with jitter — when the answer is
//! `NO_LEADER` or `OUTCOME_UNKNOWN` (503) or no answer came at all. Any other answer is
//! final and returned as it is: a grant, or a typed [`ClientError`].
//!
//! A [`Granted`] lease carries the moment its request was *sent*; [`Granted::safe_until`]
//! is the client-side deadline after which the holder must assume the lock is lost
//! (see [`retry::safe_deadline`]).

pub mod events;
pub mod guard;
pub mod memory;
pub mod retry;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::time::Instant;

pub use guard::{LockGuard, LostReason};
pub use memory::{LockService, MemoryLocks};
pub use retry::{safe_deadline, safety_margin, Backoff};

/// Longest a call keeps retrying before it gives up with [`ClientError::Unavailable`].
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for one HTTP answer (the server answers `OUTCOME_UNKNOWN` after 5 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Another owner holds the lock.
    #[error("{key} is held by {} (token {})", holder.owner, holder.token)]
    Held { key: String, holder: Box<Lease> },
    /// Free, but kept from non-waiting callers by waiters or a lock-delay.
    #[error("{0}")]
    Unavailable(String),
    /// The token no longer holds the lock.
    #[error("{0}")]
    Lost(String),
    /// The wait in the key's queue ran out.
    #[error("{0}")]
    WaitTimeout(String),
    /// Any other refusal, with the server's problem code.
    #[error("{code} ({status}): {detail}")]
    Rejected {
        code: String,
        status: u16,
        detail: String,
    },
    /// No node gave a final answer before the call timed out.
    #[error("no answer after {attempts} attempts: {last}")]
    NoAnswer { attempts: u32, last: String },
    /// The client was configured wrongly (no endpoints, bad address).
    #[error("{0}")]
    Config(String),
}

/// A grant as the server reports it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Lease {
    pub key: String,
    pub owner: String,
    pub token: u64,
    pub acquired_at: String,
    pub expires_at: String,
    pub ttl_ms: u64,
}

/// A lease and the moment the request that got it was sent.
#[derive(Clone, Debug)]
pub struct Granted {
    pub lease: Lease,
    pub sent_at: Instant,
}

impl Granted {
    /// The client-side deadline: act on the lock only before it.
    pub fn safe_until(&self) -> Instant {
        safe_deadline(self.sent_at, Duration::from_millis(self.lease.ttl_ms))
    }
}

/// A lock as `get` and `list` show it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct LockInfo {
    pub key: String,
    pub owner: String,
    pub token: u64,
    pub acquired_at: String,
    pub renewed_at: String,
    pub expires_at: String,
    pub ttl_ms: u64,
    pub waiters: u64,
}

/// The answer to a release.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Released {
    pub key: String,
    pub released: bool,
    pub reason: Option<String>,
    pub timestamp: String,
}

/// The answer to validate.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub struct Validation {
    pub valid: bool,
    pub current_token: Option<u64>,
}

/// One page of `list`.
#[derive(Clone, Debug, Deserialize)]
pub struct LockPage {
    pub locks: Vec<LockInfo>,
    pub next_cursor: Option<String>,
}

/// A Baton client. Share one per process (behind an `Arc`): it keeps its connections.
pub struct Client {
    http: reqwest::Client,
    endpoints: Vec<String>,
    /// The endpoint to try first (the last one that gave a final answer).
    preferred: AtomicUsize,
    backoff: Backoff,
    call_timeout: Duration,
}

/// One HTTP attempt's outcome, before retry rules.
enum Attempt {
    Final(StatusCode, Value),
    Retry(String),
}

impl Client {
    /// A client for the nodes at `endpoints` (`host:port`, optionally `http://`).
    pub fn new(endpoints: &[String]) -> Result<Client, ClientError> {
        let endpoints: Vec<String> = endpoints
            .iter()
            .map(|e| crate::bench::topology::normalize_endpoint(e))
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(ClientError::Config("no endpoints given".into()));
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        Ok(Client {
            http,
            endpoints,
            preferred: AtomicUsize::new(0),
            backoff: Backoff::default(),
            call_timeout: DEFAULT_CALL_TIMEOUT,
        })
    }

    /// How long one call keeps retrying.
    pub fn with_call_timeout(mut self, timeout: Duration) -> Client {
        self.call_timeout = timeout;
        self
    }

    pub fn with_backoff(mut self, backoff: Backoff) -> Client {
        self.backoff = backoff;
        self
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Takes `key` for `owner` if it is free (or already the owner's); `Held` otherwise.
    pub async fn try_acquire(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Granted, ClientError> {
        let body = json!({"owner": owner, "ttl_ms": ttl_ms(ttl)});
        self.grant(&format!("/v1/locks/{key}/acquire"), body, Duration::ZERO)
            .await
    }

    /// Takes `key`, waiting up to `wait` in its FIFO queue. A grant from the queue is
    /// renewed at once, so that its safe deadline counts from a recent send.
    pub async fn acquire(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Granted, ClientError> {
        if wait.is_zero() {
            return self.try_acquire(key, owner, ttl).await;
        }
        let body = json!({"owner": owner, "ttl_ms": ttl_ms(ttl), "wait_ms": ttl_ms(wait)});
        let granted = self
            .grant(&format!("/v1/locks/{key}/acquire"), body, wait)
            .await?;
        self.renew(key, granted.lease.token, None).await
    }

    /// Extends the lease held under `token` (`ttl`: keep the grant's when `None`).
    pub async fn renew(
        &self,
        key: &str,
        token: u64,
        ttl: Option<Duration>,
    ) -> Result<Granted, ClientError> {
        let mut body = json!({"token": token});
        if let Some(ttl) = ttl {
            body["ttl_ms"] = json!(ttl_ms(ttl));
        }
        self.grant(&format!("/v1/locks/{key}/renew"), body, Duration::ZERO)
            .await
    }

    /// Releases the lock held under `token`; `released: false` when it was not held.
    pub async fn release(&self, key: &str, token: u64) -> Result<Released, ClientError> {
        let value = self
            .call(
                Method::POST,
                &format!("/v1/locks/{key}/release"),
                Some(json!({"token": token})),
                Duration::ZERO,
            )
            .await?;
        decode(value)
    }

    /// The live lock on `key`, if any (linearizable).
    pub async fn get(&self, key: &str) -> Result<Option<LockInfo>, ClientError> {
        match self
            .call(
                Method::GET,
                &format!("/v1/locks/{key}"),
                None,
                Duration::ZERO,
            )
            .await
        {
            Ok(value) => decode(value).map(Some),
            Err(ClientError::Rejected { code, .. }) if code == "LOCK_NOT_FOUND" => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One page of live locks whose keys start with `prefix`.
    pub async fn list(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<LockPage, ClientError> {
        let mut path = format!("/v1/locks?prefix={prefix}&limit={limit}");
        if let Some(c) = cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        decode(self.call(Method::GET, &path, None, Duration::ZERO).await?)
    }

    /// Whether `token` is the live holder of `key` right now.
    pub async fn validate(&self, key: &str, token: u64) -> Result<Validation, ClientError> {
        let value = self
            .call(
                Method::POST,
                &format!("/v1/locks/{key}/validate"),
                Some(json!({"token": token})),
                Duration::ZERO,
            )
            .await?;
        decode(value)
    }

    /// `GET /v1/cluster` of the first node that answers.
    pub async fn cluster_status(&self) -> Result<Value, ClientError> {
        self.call(Method::GET, "/v1/cluster", None, Duration::ZERO)
            .await
    }

    async fn grant(&self, path: &str, body: Value, wait: Duration) -> Result<Granted, ClientError> {
        let sent_at = Instant::now();
        let value = self.call(Method::POST, path, Some(body), wait).await?;
        // The send time of the attempt that succeeded is later than `sent_at`; using the
        // first attempt's is only more conservative.
        Ok(Granted {
            lease: decode(value)?,
            sent_at,
        })
    }

    /// Sends the request, retrying on `NO_LEADER`, `OUTCOME_UNKNOWN` and transport
    /// failures; returns the JSON of a 2xx answer or the error of a final refusal.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        wait: Duration,
    ) -> Result<Value, ClientError> {
        let deadline = Instant::now() + self.call_timeout + wait;
        let mut index = self.preferred.load(Ordering::Relaxed);
        let mut attempt = 0u32;
        loop {
            let endpoint = &self.endpoints[index % self.endpoints.len()];
            match self
                .attempt(endpoint, method.clone(), path, body.as_ref(), wait)
                .await
            {
                Attempt::Final(status, value) => {
                    self.preferred
                        .store(index % self.endpoints.len(), Ordering::Relaxed);
                    return if status.is_success() {
                        Ok(value)
                    } else {
                        Err(refusal(status, &value))
                    };
                }
                Attempt::Retry(why) => {
                    let pause = self.backoff.pause(attempt, rand::thread_rng().gen::<f64>());
                    attempt += 1;
                    if Instant::now() + pause >= deadline {
                        return Err(ClientError::NoAnswer {
                            attempts: attempt,
                            last: format!("{endpoint}: {why}"),
                        });
                    }
                    tracing::debug!(endpoint, attempt, %why, "retrying");
                    tokio::time::sleep(pause).await;
                    index += 1;
                }
            }
        }
    }

    async fn attempt(
        &self,
        endpoint: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
        wait: Duration,
    ) -> Attempt {
        let mut req = self
            .http
            .request(method, format!("http://{endpoint}{path}"))
            .timeout(REQUEST_TIMEOUT + wait);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return Attempt::Retry(e.to_string()),
        };
        let status = resp.status();
        let value = match resp.json::<Value>().await {
            Ok(v) => v,
            Err(e) => return Attempt::Retry(format!("unreadable answer ({status}): {e}")),
        };
        if status == StatusCode::SERVICE_UNAVAILABLE {
            let code = value["code"].as_str().unwrap_or("503");
            return Attempt::Retry(format!(
                "{code}: {}",
                value["detail"].as_str().unwrap_or("")
            ));
        }
        Attempt::Final(status, value)
    }
}

/// Takes `key` (waiting up to `wait` in its queue) and returns a guard that renews it.
pub async fn lock(
    client: &Arc<Client>,
    key: &str,
    owner: &str,
    ttl: Duration,
    wait: Duration,
) -> Result<LockGuard, ClientError> {
    let granted = client.acquire(key, owner, ttl, wait).await?;
    Ok(LockGuard::keep(client.clone(), owner, granted))
}

/// Why [`with_lock`] did not return the closure's result.
#[derive(Debug, thiserror::Error)]
pub enum WithLockError {
    /// The lock was not acquired.
    #[error(transparent)]
    Acquire(#[from] ClientError),
    /// The lock was lost while `f` ran; `f` was cancelled (its future dropped).
    #[error("lock lost while running: {0}")]
    Lost(LostReason),
}

/// Runs `f` (given the fencing token) while holding `key`, renewing it meanwhile, and
/// releases it afterwards. If the lock is lost first, `f` is cancelled.
pub async fn with_lock<F, Fut, T>(
    client: &Arc<Client>,
    key: &str,
    owner: &str,
    ttl: Duration,
    f: F,
) -> Result<T, WithLockError>
where
    F: FnOnce(u64) -> Fut,
    Fut: Future<Output = T>,
{
    let guard = lock(client, key, owner, ttl, Duration::ZERO).await?;
    let outcome = tokio::select! {
        value = f(guard.token()) => Ok(value),
        reason = guard.lost() => Err(WithLockError::Lost(reason)),
    };
    if outcome.is_ok() {
        if let Err(e) = guard.release().await {
            tracing::warn!(key, error = %e, "release after with_lock failed; the lease expires");
        }
    }
    outcome
}

fn ttl_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn decode<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, ClientError> {
    // Deserialise from a borrow: the value is kept only for the error message.
    T::deserialize(&value).map_err(|e| ClientError::Rejected {
        code: "UNEXPECTED_ANSWER".into(),
        status: 200,
        detail: format!("{e}: {value}"),
    })
}

/// The typed error of a final non-2xx answer (a problem+json body).
fn refusal(status: StatusCode, problem: &Value) -> ClientError {
    let code = problem["code"].as_str().unwrap_or("UNKNOWN").to_string();
    let detail = problem["detail"].as_str().unwrap_or("").to_string();
    match code.as_str() {
        "LOCK_HELD" => match serde_json::from_value::<Lease>(problem["holder"].clone()) {
            Ok(holder) => ClientError::Held {
                key: holder.key.clone(),
                holder: Box::new(holder),
            },
            Err(_) => ClientError::Unavailable(detail),
        },
        "LOCK_LOST" => ClientError::Lost(detail),
        "WAIT_TIMEOUT" => ClientError::WaitTimeout(detail),
        _ => ClientError::Rejected {
            code,
            status: status.as_u16(),
            detail,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_become_typed_errors() {
        let held = json!({"code": "LOCK_HELD", "detail": "held", "holder": {"key": "k", "owner": "o", "token": 7, "acquired_at": "a", "expires_at": "e", "ttl_ms": 1000}});
        assert!(
            matches!(refusal(StatusCode::CONFLICT, &held), ClientError::Held { holder, .. } if holder.token == 7)
        );
        let delayed = json!({"code": "LOCK_HELD", "detail": "lock-delay", "available_at": "t"});
        assert!(matches!(
            refusal(StatusCode::CONFLICT, &delayed),
            ClientError::Unavailable(_)
        ));
        assert!(matches!(
            refusal(StatusCode::CONFLICT, &json!({"code": "LOCK_LOST"})),
            ClientError::Lost(_)
        ));
        assert!(matches!(
            refusal(StatusCode::CONFLICT, &json!({"code": "WAIT_TIMEOUT"})),
            ClientError::WaitTimeout(_)
        ));
        assert!(matches!(
            refusal(
                StatusCode::BAD_REQUEST,
                &json!({"code": "INVALID_KEY", "detail": "bad"})
            ),
            ClientError::Rejected { status: 400, .. }
        ));
    }

    #[test]
    fn a_client_needs_an_endpoint() {
        assert!(matches!(Client::new(&[]), Err(ClientError::Config(_))));
        let c = Client::new(&["http://127.0.0.1:7001/".to_string()]).unwrap();
        assert_eq!(c.endpoints(), ["127.0.0.1:7001"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_to_nodes_that_never_answer_gives_up_at_its_timeout() {
        // Port 9 on loopback: nothing listens, every attempt fails at once.
        let c = Client::new(&["127.0.0.1:9".to_string()])
            .unwrap()
            .with_call_timeout(Duration::from_secs(3));
        let started = Instant::now();
        let err = c.get("k").await.unwrap_err();
        assert!(
            matches!(err, ClientError::NoAnswer { attempts, .. } if attempts > 3),
            "{err}"
        );
        assert!(
            started.elapsed() <= Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }
}
