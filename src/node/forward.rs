//! Follower → leader relay of client requests.
//!
//! Which requests are relayed, and with which deadline, is decided by `api::relay`; this
//! module only carries them. A follower that receives a write or a linearizable read
//! sends the same request (method, path and query, content type, body, and with auth
//! on the caller's signed identity instead of its API key) to the leader's
//! API address and relays the answer unchanged. Rules, after the forwarding bugs Jepsen found in other Raft stores:
//! - **One hop.** A relayed request carries [`FORWARDED_BY_HEADER`]; a node that gets such
//!   a request and is not the leader answers `NO_LEADER` instead of relaying it again, so
//!   requests never bounce between nodes during an election.
//! - **No retries here.** If the leader cannot be reached before the request was sent, the
//!   answer is `NO_LEADER`; if it was sent and no answer came, `OUTCOME_UNKNOWN` for writes
//!   (it may have committed) — never a failure. Clients retry; every write is idempotent.
//! - **Bounded.** The relay has the API request timeout (a waiting acquire: plus its
//!   bounded wait); waiting for an unknown leader is bounded by `api.leader_wait_ms`.
//!
//! # Caveats
//! The relay buffers the (size-limited) body; streaming is not needed for lock requests.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode};

use crate::NodeId;

/// Set on a relayed request to the id of the node that relayed it.
pub const FORWARDED_BY_HEADER: &str = "x-baton-forwarded-by";
/// The caller's application, bound to the request and the cluster secret (auth on; see
/// `auth::relayed`). The API key itself is not relayed: the receiving node checked it.
pub const PRINCIPAL_HEADER: &str = "x-baton-principal";
/// Request id that travels with a relayed request, for log correlation.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Why a relay produced no answer from the leader.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The request did not reach the leader; nothing happened there.
    #[error("leader {leader} unreachable: {source}")]
    Unreachable {
        leader: NodeId,
        source: reqwest::Error,
    },
    /// The request was sent but no answer came back; it may have taken effect.
    #[error("no answer from leader {leader}: {source}")]
    NoAnswer {
        leader: NodeId,
        source: reqwest::Error,
    },
}

/// The leader's answer, to be passed back to the client as is.
#[derive(Debug)]
pub struct Relayed {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Relays requests to the leader over pooled keep-alive connections.
#[derive(Clone)]
pub struct Forwarder {
    http: reqwest::Client,
    node_id: NodeId,
    timeout: Duration,
    scheme: &'static str,
}

impl Forwarder {
    /// A forwarder for node `node_id` whose relays give up after `timeout`; `client`
    /// carries the `[tls]` settings (see `tls::peer_client`) and leaders are reached with
    /// `scheme` (`http` or `https`).
    pub fn new(
        node_id: NodeId,
        timeout: Duration,
        client: reqwest::ClientBuilder,
        scheme: &'static str,
    ) -> Result<Forwarder, reqwest::Error> {
        let http = client
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .build()?;
        Ok(Forwarder {
            http,
            node_id,
            timeout,
            scheme,
        })
    }

    /// The deadline of a relay that does not ask for its own.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends the request to the leader at `leader_api` and returns its answer; `timeout`
    /// replaces the forwarder's own (a waiting acquire needs longer).
    #[allow(clippy::too_many_arguments)]
    pub async fn relay(
        &self,
        leader: NodeId,
        leader_api: &str,
        method: Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Bytes,
        timeout: Option<Duration>,
    ) -> Result<Relayed, ForwardError> {
        let mut req = self
            .http
            .request(
                method,
                format!("{}://{leader_api}{path_and_query}", self.scheme),
            )
            .timeout(timeout.unwrap_or(self.timeout))
            .header(FORWARDED_BY_HEADER, self.node_id.to_string())
            .body(body);
        for name in [CONTENT_TYPE.as_str(), REQUEST_ID_HEADER, PRINCIPAL_HEADER] {
            if let Some(v) = headers.get(name) {
                req = req.header(name, v.clone());
            }
        }
        let resp = req.send().await.map_err(|source| {
            if source.is_connect() {
                ForwardError::Unreachable { leader, source }
            } else {
                ForwardError::NoAnswer { leader, source }
            }
        })?;
        let status = resp.status();
        let mut out = HeaderMap::new();
        for name in [CONTENT_TYPE, RETRY_AFTER] {
            if let Some(v) = resp.headers().get(&name) {
                out.insert(name, v.clone());
            }
        }
        out.insert(
            HeaderName::from_static("x-baton-served-by"),
            HeaderValue::from(leader),
        );
        let body = resp
            .bytes()
            .await
            .map_err(|source| ForwardError::NoAnswer { leader, source })?;
        Ok(Relayed {
            status,
            headers: out,
            body,
        })
    }
}
