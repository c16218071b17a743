//! Raft RPCs between nodes over HTTP: the client side ([`Network`]).
//!
//! Each RPC is one `POST http(s)://<peer raft addr>/raft/<rpc>` whose body is the postcard
//! encoding of the openraft request and whose `200` answer is the postcard encoding of
//! the response. Every request carries the cluster secret in [`SECRET_HEADER`]; the
//! receiving side (`rpc_server`) refuses requests without it. Once this node belongs to
//! a cluster, every request also carries the cluster's id in [`CLUSTER_HEADER`], and a
//! node of another cluster refuses it (see `data_dir`). Connections are pooled and kept
//! alive by one shared `reqwest::Client` per node.
//!
//! Error mapping: a refused connection is `Unreachable` (openraft backs off); any other
//! transport failure, a timeout or a non-200 answer is a `NetworkError` or `Unreachable`.
//! A peer that answers with an error is treated as unreachable: it is shutting down.
//!
//! Every outcome is reported to [`Peers`] (reachability per peer, for `/v1/cluster`,
//! `/readyz` and the quorum check), and append answers pass through
//! [`Peers::check_conflict`], which keeps a follower whose log went backwards from
//! confusing the leader's replication until `allow-rejoin` is called.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::entry::RaftEntry;
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::OptionalSend;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::data_dir::{Identity, CLUSTER_HEADER};
use super::peers::{ConflictVerdict, Peers};
use super::typ::{
    AppendEntriesRequest, AppendEntriesResponse, Snapshot, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, Vote, VoteRequest, VoteResponse,
};
use super::{NodeAddr, TypeConfig};
use crate::codec;

/// Header that carries the cluster secret on Raft RPCs.
pub const SECRET_HEADER: &str = "x-baton-secret";

/// RPC paths, shared with the server side.
pub mod path {
    pub const APPEND: &str = "/raft/append";
    pub const VOTE: &str = "/raft/vote";
    pub const PRE_VOTE: &str = "/raft/pre-vote";
    pub const SNAPSHOT: &str = "/raft/snapshot";
    pub const TRANSFER_LEADER: &str = "/raft/transfer-leader";
}

/// Makes one [`Network`] per peer, all sharing one connection pool.
#[derive(Clone)]
pub struct NetworkFactory {
    http: reqwest::Client,
    secret: String,
    identity: Arc<Identity>,
    peers: Peers,
    scheme: &'static str,
}

impl NetworkFactory {
    /// A factory whose clients send `secret` with every RPC and report to `peers`;
    /// `client` carries the `[tls]` settings (see `tls::peer_client`), and peers are
    /// reached with `scheme` (`http` or `https`).
    pub fn new(
        secret: String,
        identity: Arc<Identity>,
        peers: Peers,
        client: reqwest::ClientBuilder,
        scheme: &'static str,
    ) -> Result<NetworkFactory, reqwest::Error> {
        let http = client
            .connect_timeout(Duration::from_millis(500))
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()?;
        Ok(NetworkFactory {
            http,
            secret,
            identity,
            peers,
            scheme,
        })
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Network;

    async fn new_client(&mut self, target: u64, node: &NodeAddr) -> Network {
        Network {
            target,
            base: format!("{}://{}", self.scheme, node.raft),
            http: self.http.clone(),
            secret: self.secret.clone(),
            identity: self.identity.clone(),
            peers: self.peers.clone(),
        }
    }
}

/// The RPC client for one peer.
pub struct Network {
    target: u64,
    base: String,
    http: reqwest::Client,
    secret: String,
    identity: Arc<Identity>,
    peers: Peers,
}

impl Network {
    /// One RPC, its outcome reported to [`Peers`].
    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RPCError<TypeConfig>> {
        let result = self.send(path, req, timeout).await;
        match &result {
            Ok(_) => self.peers.record_success(self.target),
            Err(e) => self.peers.record_failure(self.target, &e.1),
        }
        result.map_err(|e| e.0)
    }

    /// One RPC; an error comes with a short phrase for operators (`connection refused`).
    async fn send<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, (RPCError<TypeConfig>, String)> {
        let body = codec::encode(req)
            .map_err(|e| (RPCError::Network(NetworkError::new(&e)), e.to_string()))?;
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header(SECRET_HEADER, &self.secret);
        // Read per call: a fresh node learns its cluster's id from its first leader.
        if let Some(id) = self.identity.cluster_id() {
            request = request.header(CLUSTER_HEADER, id.as_str());
        }
        let resp = request
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| {
                let phrase = describe(&e);
                if e.is_connect() {
                    (RPCError::Unreachable(Unreachable::new(&e)), phrase)
                } else {
                    (RPCError::Network(NetworkError::new(&e)), phrase)
                }
            })?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            let phrase = format!("answered {status}");
            return Err((
                RPCError::Unreachable(Unreachable::from_string(format!(
                    "node {} answered {status}: {text}",
                    self.target
                ))),
                phrase,
            ));
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| (RPCError::Network(NetworkError::new(&e)), describe(&e)))?;
        codec::decode(&bytes).map_err(|e| {
            (
                RPCError::Network(NetworkError::new(&e)),
                format!("undecodable answer: {e}"),
            )
        })
    }
}

impl RaftNetworkV2<TypeConfig> for Network {
    type SnapshotData = std::io::Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse, RPCError<TypeConfig>> {
        let vote = rpc.vote;
        let prev = rpc.prev_log_id;
        let last = rpc.entries.last().map(|e| e.log_id()).or(prev);
        let resp: AppendEntriesResponse = self.call(path::APPEND, &rpc, option.soft_ttl()).await?;
        match &resp {
            AppendEntriesResponse::Success => self.peers.record_ack(self.target, &vote, last),
            AppendEntriesResponse::PartialSuccess(upto) => {
                self.peers.record_ack(self.target, &vote, *upto)
            }
            AppendEntriesResponse::Conflict => {
                match self.peers.check_conflict(self.target, &vote, prev.as_ref()) {
                    ConflictVerdict::Pass | ConflictVerdict::PassAllowedRevert => {}
                    ConflictVerdict::Refuse => {
                        return Err(RPCError::Unreachable(Unreachable::from_string(format!(
                            "node {} lost log entries it acknowledged; \
                             waiting for POST /v1/cluster/nodes/{}/allow-rejoin",
                            self.target, self.target
                        ))))
                    }
                }
            }
            AppendEntriesResponse::HigherVote(_) => {}
        }
        Ok(resp)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest,
        option: RPCOption,
    ) -> Result<VoteResponse, RPCError<TypeConfig>> {
        self.call(path::VOTE, &rpc, option.soft_ttl()).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest,
        option: RPCOption,
    ) -> Result<VoteResponse, RPCError<TypeConfig>> {
        self.call(path::PRE_VOTE, &rpc, option.soft_ttl()).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse, StreamingError<TypeConfig>> {
        let last = snapshot.meta.last_log_id;
        let req = (vote, snapshot.meta, snapshot.snapshot.into_inner());
        let resp: SnapshotResponse = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            res = self.call(path::SNAPSHOT, &req, option.soft_ttl()) => res?,
        };
        // An installed snapshot is acknowledged like the entries it covers.
        if resp.vote == vote {
            self.peers.record_ack(self.target, &vote, last);
        }
        Ok(resp)
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse, RPCError<TypeConfig>> {
        self.call(path::TRANSFER_LEADER, &req, option.soft_ttl())
            .await
    }
}

/// A short phrase for a failed request (`connection refused`, `timed out`), from the
/// innermost cause: reqwest's own message names the URL, not what went wrong.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut innermost = e.to_string();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
                std::io::ErrorKind::ConnectionReset => "connection reset".into(),
                std::io::ErrorKind::TimedOut => "timed out".into(),
                _ => io.to_string(),
            };
        }
        innermost = s.to_string();
        source = s.source();
    }
    innermost
}

/// Path of the "have you been initialised?" probe used before self-initialisation.
pub const INITIALIZED_PATH: &str = "/raft/initialized";

/// Asks the peer whose Raft listener is at `raft_url` (`https://host:port`) whether its
/// Raft has been initialised.
pub async fn peer_initialized(
    http: &reqwest::Client,
    raft_url: &str,
    secret: &str,
) -> Result<bool, String> {
    let resp = http
        .get(format!("{raft_url}{INITIALIZED_PATH}"))
        .header(SECRET_HEADER, secret)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("answered {}", resp.status()));
    }
    let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
    codec::decode(&bytes).map_err(|e| e.to_string())
}
