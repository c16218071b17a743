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
pub mod trouble;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use reqwest::header::{HeaderValue, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;

use crate::wire::{self, AcquireRequest, ListQuery, ReleaseRequest, RenewRequest, ValidateRequest};
pub use crate::wire::{
    ClusterView, ErrorCode, Lease, LockInfo, LockPage, NotReleased, Problem, Released, Validation,
};
pub use guard::{LockGuard, LostReason};
pub use memory::{LockService, MemoryLocks};
pub use retry::{safe_deadline, safety_margin, Backoff};
pub use trouble::Trouble;

/// Longest a call keeps retrying before it gives up with [`ClientError::NoAnswer`].
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for one HTTP answer (the server answers `OUTCOME_UNKNOWN` after 5 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// What a backup may take beyond [`REQUEST_TIMEOUT`]: the leader may build a snapshot
/// for it (bounded there by 60 s).
const BACKUP_WAIT: Duration = Duration::from_secs(60);
/// A call that is still retrying after this long reports its progress (see
/// [`Client::with_progress`]); a leader election usually ends well before.
pub const PROGRESS_AFTER: Duration = Duration::from_secs(2);
/// At most one progress report per this interval.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);

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
    /// Any other refusal, with the server's problem code (or, for a key that cannot
    /// be sent, the code a node would have answered).
    #[error("{detail} ({code}, HTTP {status})")]
    Rejected {
        code: ErrorCode,
        status: u16,
        detail: String,
    },
    /// No node gave a final answer before the call timed out; `trouble` says what the
    /// nodes answered instead, the nodes' own explanation first.
    #[error("no node could serve the request within {}: {trouble}", trouble::secs(.waited))]
    NoAnswer {
        attempts: u32,
        waited: Duration,
        trouble: Trouble,
    },
    /// A node answered with something that is not the v1 API's answer.
    #[error("unexpected answer from {endpoint}: {detail}")]
    UnexpectedAnswer { endpoint: String, detail: String },
    /// The client was configured wrongly (no endpoints, bad address).
    #[error("{0}")]
    Config(String),
}

impl ClientError {
    /// The problem code behind this error, if a node (or the key check) gave one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Held { .. } | ClientError::Unavailable(_) => Some(ErrorCode::LockHeld),
            ClientError::Lost(_) => Some(ErrorCode::LockLost),
            ClientError::WaitTimeout(_) => Some(ErrorCode::WaitTimeout),
            ClientError::Rejected { code, .. } => Some(*code),
            ClientError::NoAnswer { trouble, .. } => trouble.code(),
            ClientError::UnexpectedAnswer { .. } | ClientError::Config(_) => None,
        }
    }
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

/// Called while a call retries: what went wrong so far and how long it keeps trying.
pub type ProgressFn = dyn Fn(&Trouble, Duration) + Send + Sync;

/// A Baton client. Share one per process (behind an `Arc`): it keeps its connections.
pub struct Client {
    http: reqwest::Client,
    endpoints: Vec<String>,
    /// The endpoint to try first (the last one that gave a final answer).
    preferred: AtomicUsize,
    backoff: Backoff,
    call_timeout: Duration,
    progress: Option<Arc<ProgressFn>>,
    /// Sent with every request (the API key).
    headers: reqwest::header::HeaderMap,
    /// CA certificates trusted for `https://` endpoints instead of the system's roots.
    ca: Vec<reqwest::Certificate>,
}

/// The HTTP client of a [`Client`], sending `headers` with every request and trusting
/// `ca` (when given; else the system's roots, loaded only if an endpoint is `https://`).
fn http_client(
    headers: reqwest::header::HeaderMap,
    ca: &[reqwest::Certificate],
    endpoints: &[String],
) -> Result<reqwest::Client, ClientError> {
    let any_tls = endpoints.iter().any(|e| wire::endpoint_authority(e).1);
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(1))
        .pool_idle_timeout(wire::CLIENT_IDLE_REUSE)
        .tcp_nodelay(true)
        .default_headers(headers)
        .tls_built_in_root_certs(any_tls && ca.is_empty());
    for cert in ca {
        builder = builder.add_root_certificate(cert.clone());
    }
    builder
        .build()
        .map_err(|e| ClientError::Config(e.to_string()))
}

/// One HTTP attempt's outcome, before retry rules.
enum Attempt {
    Final(StatusCode, Bytes),
    /// A node answered 503 with a problem (`NO_LEADER`, `OUTCOME_UNKNOWN`).
    Busy(Box<Problem>),
    /// No answer: connection refused, timeout, unreadable body.
    NoAnswer {
        error: String,
        sent: bool,
    },
}

impl Client {
    /// A client for the nodes at `endpoints` (`host:port`, optionally `http://`, or
    /// `https://host:port` for a cluster with TLS; see [`Client::with_ca_file`]).
    pub fn new(endpoints: &[String]) -> Result<Client, ClientError> {
        let endpoints = endpoints
            .iter()
            .map(|e| wire::parse_endpoint(e))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        if endpoints.is_empty() {
            return Err(ClientError::Config("no endpoints given".into()));
        }
        let http = http_client(reqwest::header::HeaderMap::new(), &[], &endpoints)?;
        Ok(Client {
            http,
            endpoints,
            preferred: AtomicUsize::new(0),
            backoff: Backoff::default(),
            call_timeout: DEFAULT_CALL_TIMEOUT,
            progress: None,
            headers: reqwest::header::HeaderMap::new(),
            ca: Vec::new(),
        })
    }

    /// Trusts the CA certificates in the PEM `bundle` (and no others) for `https://`
    /// endpoints: a cluster whose `[tls]` certificates come from its own CA.
    pub fn with_ca_pem(mut self, bundle: &[u8]) -> Result<Client, ClientError> {
        let certs = reqwest::Certificate::from_pem_bundle(bundle)
            .map_err(|e| ClientError::Config(format!("CA certificates: {e}")))?;
        if certs.is_empty() {
            return Err(ClientError::Config(
                "CA certificates: no CERTIFICATE block in the PEM".into(),
            ));
        }
        self.ca = certs;
        self.http = http_client(self.headers.clone(), &self.ca, &self.endpoints)?;
        Ok(self)
    }

    /// [`Client::with_ca_pem`] with the PEM file at `path`.
    pub fn with_ca_file(self, path: &std::path::Path) -> Result<Client, ClientError> {
        let bundle = std::fs::read(path).map_err(|e| {
            ClientError::Config(format!("cannot read CA file {}: {e}", path.display()))
        })?;
        self.with_ca_pem(&bundle).map_err(|e| match e {
            ClientError::Config(m) => ClientError::Config(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Sends `key` as `Authorization: Bearer <key>` with every request (a cluster with
    /// `[auth] enabled`); a key that cannot be a header value is a config error.
    pub fn with_api_key(mut self, key: &str) -> Result<Client, ClientError> {
        let mut value =
            reqwest::header::HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                ClientError::Config("the API key has characters a header cannot carry".into())
            })?;
        // Kept out of debug output.
        value.set_sensitive(true);
        self.headers.insert(reqwest::header::AUTHORIZATION, value);
        self.http = http_client(self.headers.clone(), &self.ca, &self.endpoints)?;
        Ok(self)
    }

    /// How long one call keeps retrying (an acquire's wait comes on top).
    pub fn with_call_timeout(mut self, timeout: Duration) -> Client {
        self.call_timeout = timeout;
        self
    }

    pub fn with_backoff(mut self, backoff: Backoff) -> Client {
        self.backoff = backoff;
        self
    }

    /// Calls `report` while a call keeps retrying: first after [`PROGRESS_AFTER`], then
    /// at most every [`PROGRESS_EVERY`], with what the nodes answered so far and the time
    /// the call keeps trying. `baton` prints it as one line on stderr.
    pub fn with_progress(
        mut self,
        report: impl Fn(&Trouble, Duration) + Send + Sync + 'static,
    ) -> Client {
        self.progress = Some(Arc::new(report));
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
        let body = AcquireRequest {
            owner: owner.to_string(),
            ttl_ms: Some(millis(ttl)),
            ..Default::default()
        };
        self.grant(key, "acquire", &body, Duration::ZERO).await
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
        let body = AcquireRequest {
            owner: owner.to_string(),
            ttl_ms: Some(millis(ttl)),
            wait_ms: Some(millis(wait)),
            lock_delay_ms: None,
        };
        let granted = self.grant(key, "acquire", &body, wait).await?;
        self.renew(key, granted.lease.token, None).await
    }

    /// Extends the lease held under `token` (`ttl`: keep the grant's when `None`).
    pub async fn renew(
        &self,
        key: &str,
        token: u64,
        ttl: Option<Duration>,
    ) -> Result<Granted, ClientError> {
        let body = RenewRequest {
            token,
            ttl_ms: ttl.map(millis),
        };
        self.grant(key, "renew", &body, Duration::ZERO).await
    }

    /// Releases the lock held under `token`; `released: false` when it was not held.
    pub async fn release(&self, key: &str, token: u64) -> Result<Released, ClientError> {
        check_key(key)?;
        let path = format!("/v1/locks/{key}/release");
        let body = encode(&ReleaseRequest::by_token(token))?;
        self.call(Method::POST, &path, Some(body), Duration::ZERO)
            .await
    }

    /// The live lock on `key`, if any (linearizable).
    pub async fn get(&self, key: &str) -> Result<Option<LockInfo>, ClientError> {
        check_key(key)?;
        let path = format!("/v1/locks/{key}");
        match self.call(Method::GET, &path, None, Duration::ZERO).await {
            Ok(lock) => Ok(Some(lock)),
            Err(ClientError::Rejected {
                code: ErrorCode::LockNotFound,
                ..
            }) => Ok(None),
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
        let query = ListQuery {
            prefix: prefix.to_string(),
            limit: Some(limit),
            cursor: cursor.map(str::to_string),
            consistency: wire::Consistency::Linearizable,
        };
        let query = url_query(&query)?;
        let path = format!("/v1/locks?{query}");
        self.call(Method::GET, &path, None, Duration::ZERO).await
    }

    /// Whether `token` is the live holder of `key` right now.
    pub async fn validate(&self, key: &str, token: u64) -> Result<Validation, ClientError> {
        check_key(key)?;
        let path = format!("/v1/locks/{key}/validate");
        let body = encode(&ValidateRequest { token })?;
        self.call(Method::POST, &path, Some(body), Duration::ZERO)
            .await
    }

    /// `GET /v1/cluster` of the first node that answers.
    pub async fn cluster_status(&self) -> Result<ClusterView, ClientError> {
        self.call(Method::GET, "/v1/cluster", None, Duration::ZERO)
            .await
    }

    /// `POST /v1/cluster/nodes` (admin): adds node `id` as a learner, and once it has
    /// caught up with the leader's log makes it a voter. The node may take up to `wait`
    /// to catch up (the server bounds it by `raft.catch_up_timeout_ms`). Retried like
    /// any write: an add of a node that is already a member with the same addresses
    /// resumes or changes nothing.
    pub async fn add_node(
        &self,
        id: crate::NodeId,
        api: &str,
        raft: &str,
        wait: Duration,
    ) -> Result<wire::MembershipAnswer, ClientError> {
        let body = encode(&wire::AddNodeRequest {
            id,
            api: api.to_string(),
            raft: raft.to_string(),
        })?;
        self.call(Method::POST, "/v1/cluster/nodes", Some(body), wait)
            .await
    }

    /// `DELETE /v1/cluster/nodes/{id}` (admin): removes node `id` (a voter, the leader
    /// too, or a learner). A retry after an answer that got lost is refused as
    /// `NODE_NOT_FOUND`: the node is gone.
    pub async fn remove_node(
        &self,
        id: crate::NodeId,
    ) -> Result<wire::MembershipAnswer, ClientError> {
        let path = format!("/v1/cluster/nodes/{id}");
        self.call(Method::DELETE, &path, None, Duration::ZERO).await
    }

    /// `GET /v1/cluster` of one node (no retry, no other node): `baton status` asks
    /// each node for its own view.
    pub async fn node_status(&self, endpoint: &str) -> Result<ClusterView, ClientError> {
        match self
            .attempt(
                endpoint,
                Method::GET,
                "/v1/cluster",
                None,
                self.call_timeout.min(REQUEST_TIMEOUT),
            )
            .await
        {
            Attempt::Final(status, bytes) => answer(endpoint, status, &bytes),
            Attempt::Busy(problem) => Err(refusal(StatusCode::SERVICE_UNAVAILABLE, *problem)),
            Attempt::NoAnswer { error, .. } => {
                let mut trouble = Trouble::default();
                trouble.unreachable(endpoint, error);
                Err(ClientError::NoAnswer {
                    attempts: 1,
                    waited: Duration::ZERO,
                    trouble,
                })
            }
        }
    }

    async fn grant<B: Serialize>(
        &self,
        key: &str,
        action: &str,
        body: &B,
        wait: Duration,
    ) -> Result<Granted, ClientError> {
        check_key(key)?;
        let path = format!("/v1/locks/{key}/{action}");
        let body = encode(body)?;
        let sent_at = Instant::now();
        // The send time of the attempt that succeeded is later than `sent_at`; using the
        // first attempt's is only more conservative.
        let lease = self.call(Method::POST, &path, Some(body), wait).await?;
        Ok(Granted { lease, sent_at })
    }

    /// Sends the request, retrying on `NO_LEADER`, `OUTCOME_UNKNOWN` and transport
    /// failures until the call timeout (plus `wait`) runs out; decodes a 2xx answer, or
    /// returns the typed error of a final refusal.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        wait: Duration,
    ) -> Result<T, ClientError> {
        let (endpoint, status, bytes) = self.call_raw(method, path, body, wait).await?;
        answer(&endpoint, status, &bytes)
    }

    /// `GET /v1/cluster/backup` (an admin key, with auth on): the backup file of every
    /// lock at a linearizable point, as `baton snapshot save` writes it.
    pub async fn backup(&self) -> Result<Bytes, ClientError> {
        let (endpoint, status, bytes) = self
            .call_raw(Method::GET, wire::BACKUP_PATH, None, BACKUP_WAIT)
            .await?;
        if status.is_success() {
            return Ok(bytes);
        }
        match answer::<serde_json::Value>(&endpoint, status, &bytes) {
            Err(e) => Err(e),
            Ok(_) => Err(ClientError::UnexpectedAnswer {
                endpoint,
                detail: format!("HTTP {status}"),
            }),
        }
    }

    /// [`Client::call`] up to the final answer, undecoded: the endpoint that gave it,
    /// its status and body.
    async fn call_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        wait: Duration,
    ) -> Result<(String, StatusCode, Bytes), ClientError> {
        let started = Instant::now();
        let deadline = started + self.call_timeout + wait;
        let mut index = self.preferred.load(Ordering::Relaxed);
        let mut attempt = 0u32;
        let mut trouble = Trouble::default();
        let mut next_report = started + PROGRESS_AFTER;
        loop {
            let endpoint = &self.endpoints[index % self.endpoints.len()];
            // Never wait for one answer past the call's deadline: `--timeout` is a promise.
            let limit =
                (REQUEST_TIMEOUT + wait).min(deadline.saturating_duration_since(Instant::now()));
            match self
                .attempt(endpoint, method.clone(), path, body.clone(), limit)
                .await
            {
                Attempt::Final(status, bytes) => {
                    self.preferred
                        .store(index % self.endpoints.len(), Ordering::Relaxed);
                    return Ok((endpoint.clone(), status, bytes));
                }
                Attempt::Busy(problem) => {
                    tracing::debug!(endpoint, code = %problem.code, detail = problem.detail, "node busy; retrying");
                    trouble.busy(endpoint, *problem, method != Method::GET);
                }
                Attempt::NoAnswer { error, sent } => {
                    tracing::debug!(endpoint, %error, "no answer; retrying");
                    trouble.no_answer(endpoint, error, sent && method != Method::GET);
                }
            }
            let pause = self.backoff.pause(attempt, rand::thread_rng().gen::<f64>());
            attempt += 1;
            let now = Instant::now();
            if now + pause >= deadline {
                return Err(ClientError::NoAnswer {
                    attempts: attempt,
                    waited: now - started,
                    trouble,
                });
            }
            if now >= next_report {
                if let Some(report) = &self.progress {
                    report(&trouble, deadline - now);
                }
                next_report = now + PROGRESS_EVERY;
            }
            tokio::time::sleep(pause).await;
            index += 1;
        }
    }

    async fn attempt(
        &self,
        endpoint: &str,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        limit: Duration,
    ) -> Attempt {
        let mut req = self
            .http
            .request(method, crate::wire::endpoint_url(endpoint, path))
            .timeout(limit);
        if let Some(b) = body {
            req = req
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(b);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                return Attempt::NoAnswer {
                    sent: !e.is_connect(),
                    error: trouble::transport_error(&e, limit),
                }
            }
        };
        let status = resp.status();
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return Attempt::NoAnswer {
                    sent: true,
                    error: format!(
                        "the answer ({status}) broke off: {}",
                        trouble::transport_error(&e, limit)
                    ),
                }
            }
        };
        if status == StatusCode::SERVICE_UNAVAILABLE {
            let mut problem: Problem = serde_json::from_slice(&bytes).unwrap_or_default();
            if problem.detail.is_empty() {
                problem.detail = format!(
                    "HTTP 503 without a problem body: {}",
                    String::from_utf8_lossy(&bytes).trim()
                );
            }
            return Attempt::Busy(Box::new(problem));
        }
        Attempt::Final(status, bytes)
    }
}
/// Takes `key` (waiting up to `wait` in its queue) and returns a guard that renews it.
///
/// A call that retried through a failover can be answered after the grant's safe
/// deadline, which counts from the first send: nobody may act on such a grant, so it is
/// renewed first (and refused as [`ClientError::Lost`] if the renewal comes back just as
/// late). `baton lock` used to start its command on it and stop it at the next tick.
pub async fn lock(
    client: &Arc<Client>,
    key: &str,
    owner: &str,
    ttl: Duration,
    wait: Duration,
) -> Result<LockGuard, ClientError> {
    let mut granted = client.acquire(key, owner, ttl, wait).await?;
    if Instant::now() >= granted.safe_until() {
        granted = client.renew(key, granted.lease.token, None).await?;
        if Instant::now() >= granted.safe_until() {
            return Err(ClientError::Lost(format!(
                "{key}: the grant (token {}) and its renewal were answered after their safe deadline",
                granted.lease.token
            )));
        }
    }
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

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Refuses a key before it goes into a URL, with the answer a node would give.
fn check_key(key: &str) -> Result<(), ClientError> {
    wire::check_key(key).map_err(|e| ClientError::Rejected {
        code: ErrorCode::InvalidKey,
        status: 400,
        detail: e.to_string(),
    })
}

fn encode<B: Serialize>(body: &B) -> Result<Bytes, ClientError> {
    serde_json::to_vec(body)
        .map(Bytes::from)
        .map_err(|e| ClientError::Config(format!("cannot encode the request: {e}")))
}

fn url_query<Q: Serialize>(query: &Q) -> Result<String, ClientError> {
    serde_urlencoded::to_string(query)
        .map_err(|e| ClientError::Config(format!("cannot encode the query: {e}")))
}

/// A final answer: the decoded body of a 2xx, or the typed error of a refusal.
fn answer<T: DeserializeOwned>(
    endpoint: &str,
    status: StatusCode,
    bytes: &[u8],
) -> Result<T, ClientError> {
    if status.is_success() {
        return serde_json::from_slice(bytes).map_err(|e| ClientError::UnexpectedAnswer {
            endpoint: endpoint.to_string(),
            detail: format!("{e}: {}", String::from_utf8_lossy(bytes)),
        });
    }
    let mut problem: Problem = serde_json::from_slice(bytes).unwrap_or_default();
    if problem.detail.is_empty() {
        problem.detail = format!(
            "HTTP {status} without a problem body from {endpoint}: {}",
            String::from_utf8_lossy(bytes).trim()
        );
    }
    Err(refusal(status, problem))
}

/// The typed error of a final non-2xx answer (a problem+json body).
fn refusal(status: StatusCode, problem: Problem) -> ClientError {
    match problem.code {
        ErrorCode::LockHeld => match problem.holder {
            Some(holder) => ClientError::Held {
                key: holder.key.clone(),
                holder: Box::new(holder),
            },
            None => ClientError::Unavailable(problem.detail),
        },
        ErrorCode::LockLost => ClientError::Lost(problem.detail),
        ErrorCode::WaitTimeout => ClientError::WaitTimeout(problem.detail),
        code => ClientError::Rejected {
            code,
            status: status.as_u16(),
            detail: problem.detail,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(code: ErrorCode, detail: &str) -> Problem {
        Problem::new(code, 409, "t", detail)
    }

    #[test]
    fn problems_become_typed_errors() {
        let mut held = problem(ErrorCode::LockHeld, "held");
        held.holder = Some(Lease {
            key: "k".into(),
            owner: "o".into(),
            token: 7,
            acquired_at: "a".into(),
            expires_at: "e".into(),
            ttl_ms: 1000,
        });
        assert!(
            matches!(refusal(StatusCode::CONFLICT, held), ClientError::Held { holder, .. } if holder.token == 7)
        );
        let mut delayed = problem(ErrorCode::LockHeld, "lock-delay");
        delayed.available_at = Some("t".into());
        assert!(matches!(
            refusal(StatusCode::CONFLICT, delayed),
            ClientError::Unavailable(_)
        ));
        assert!(matches!(
            refusal(StatusCode::CONFLICT, problem(ErrorCode::LockLost, "")),
            ClientError::Lost(_)
        ));
        assert!(matches!(
            refusal(StatusCode::CONFLICT, problem(ErrorCode::WaitTimeout, "")),
            ClientError::WaitTimeout(_)
        ));
        let bad = refusal(
            StatusCode::BAD_REQUEST,
            problem(ErrorCode::InvalidKey, "bad"),
        );
        assert!(
            matches!(
                bad,
                ClientError::Rejected {
                    status: 400,
                    code: ErrorCode::InvalidKey,
                    ..
                }
            ),
            "{bad}"
        );
    }

    #[test]
    fn an_error_answer_without_a_problem_body_keeps_what_it_said() {
        let err = answer::<Lease>("n1:1", StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>")
            .unwrap_err();
        assert!(
            matches!(&err, ClientError::Rejected { code: ErrorCode::Unknown, status: 502, detail } if detail.contains("bad gateway")),
            "{err}"
        );
        let err = answer::<Lease>("n1:1", StatusCode::OK, b"{}").unwrap_err();
        assert!(matches!(err, ClientError::UnexpectedAnswer { .. }), "{err}");
    }

    #[test]
    fn a_client_needs_a_well_formed_endpoint() {
        assert!(matches!(Client::new(&[]), Err(ClientError::Config(_))));
        assert!(matches!(
            Client::new(&["ftp://127.0.0.1:7001".to_string()]),
            Err(ClientError::Config(_))
        ));
        let c = Client::new(&["http://127.0.0.1:7001/".to_string()]).unwrap();
        assert_eq!(c.endpoints(), ["127.0.0.1:7001"]);
        let c = Client::new(&["https://127.0.0.1:7001/".to_string()]).unwrap();
        assert_eq!(c.endpoints(), ["https://127.0.0.1:7001"]);
        assert!(matches!(
            c.with_ca_pem(b"not a certificate"),
            Err(ClientError::Config(_))
        ));
    }

    #[tokio::test]
    async fn a_key_that_would_change_the_url_is_refused_as_invalid_key() {
        // Nothing is sent: port 9 would refuse, and the error is not a connection error.
        let c = Client::new(&["127.0.0.1:9".to_string()]).unwrap();
        let err = c
            .try_acquire("a/b", "me", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::InvalidKey), "{err}");
        assert!(err.to_string().contains("key"), "{err}");
    }

    /// A grant answered 900 ms after its send, with a 1 s lease (safe for 800 ms).
    #[cfg(feature = "server")]
    #[tokio::test]
    async fn a_grant_answered_after_its_safe_deadline_is_renewed_before_anyone_holds_it() {
        use axum::routing::post;
        let lease = || {
            axum::Json(Lease {
                key: "k".into(),
                owner: "o".into(),
                token: 5,
                acquired_at: "2026-12-01T00:00:00.000Z".into(),
                expires_at: "2026-12-01T00:00:01.000Z".into(),
                ttl_ms: 1_000,
            })
        };
        let renewals = Arc::new(AtomicUsize::new(0));
        let seen = renewals.clone();
        let app = axum::Router::new()
            .route(
                "/v1/locks/k/acquire",
                post(move || async move {
                    tokio::time::sleep(Duration::from_millis(900)).await;
                    lease()
                }),
            )
            .route(
                "/v1/locks/k/renew",
                post(move || async move {
                    seen.fetch_add(1, Ordering::SeqCst);
                    lease()
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = Arc::new(Client::new(&[addr]).unwrap());
        let guard = lock(&client, "k", "o", Duration::from_secs(1), Duration::ZERO)
            .await
            .unwrap();
        // Before the fix: no renewal, and a guard whose safe deadline had passed.
        assert!(renewals.load(Ordering::SeqCst) >= 1);
        assert!(guard.safe_until() > Instant::now());
        assert_eq!(guard.lost_reason(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_to_nodes_that_never_answer_gives_up_at_its_timeout_and_reports_progress() {
        // Port 9 on loopback: nothing listens, every attempt fails at once.
        let reports = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = reports.clone();
        let c = Client::new(&["127.0.0.1:9".to_string()])
            .unwrap()
            .with_call_timeout(Duration::from_secs(9))
            .with_progress(move |trouble, remaining| {
                seen.lock().unwrap().push((trouble.to_string(), remaining));
            });
        let started = Instant::now();
        let err = c.get("k").await.unwrap_err();
        assert!(
            matches!(&err, ClientError::NoAnswer { attempts, .. } if *attempts > 3),
            "{err}"
        );
        assert!(
            err.to_string().contains("127.0.0.1:9: cannot connect"),
            "{err}"
        );
        assert!(
            started.elapsed() <= Duration::from_secs(9),
            "{:?}",
            started.elapsed()
        );
        let reports = reports.lock().unwrap();
        // After 2 s, then at most every 5 s: one or two reports in 9 s (jitter decides
        // whether a retry falls between the second report time and the deadline).
        assert!((1..=2).contains(&reports.len()), "{reports:?}");
        assert!(reports[0].0.contains("127.0.0.1:9"), "{reports:?}");
        assert!(reports[0].1 <= Duration::from_secs(7), "{reports:?}");
    }
}
