//! `baton server --join ENDPOINT`: a node with no data that waits to be added to a
//! running cluster instead of initialising one.
//!
//! The node never initialises (see [`super::Start::Join`]); the leader brings it up to
//! date once an operator adds it (`baton cluster add`, `POST /v1/cluster/nodes`). Until
//! then [`await_membership`] checks that a cluster answers at `ENDPOINT` (any member's
//! API address): its `/readyz` (open, no API key) must report a ready node. When none
//! does within the bound, the node gives up with a message naming the endpoint and what
//! it answered — a typo or a cluster that does not exist fails clearly instead of
//! waiting forever. Once a cluster answered, the node waits to be added for as long as
//! it takes, reminding the operator of the command now and then.
//!
//! A node that already is in a membership (a restart after it was added) skips all this:
//! it uses the membership it committed, and `ENDPOINT` is not contacted.

use std::time::Duration;

use openraft::async_runtime::WatchReceiver;

use super::Node;
use crate::wire::{endpoint_url, parse_endpoint, Readiness};

/// Pause between two probes of the endpoint.
const PROBE_EVERY: Duration = Duration::from_millis(500);
/// How often a node waiting to be added says so.
const REMIND_EVERY: Duration = Duration::from_secs(30);
/// Deadline of one probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A join that cannot happen.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("--join: {0}")]
    Endpoint(#[from] crate::wire::EndpointError),
    #[error("--join: cannot build the http client: {0}")]
    Http(String),
    /// Nothing that looks like a running cluster answered at the endpoint in time.
    #[error(
        "no running cluster answers at {endpoint} after {} s (last: {last}); \
         start the cluster first, or check the --join address",
        waited.as_secs()
    )]
    NoCluster {
        endpoint: String,
        waited: Duration,
        last: String,
    },
}

/// Whether this node is in the membership it has (it was added, or it initialised).
fn is_member(node: &Node) -> bool {
    node.inner()
        .raft
        .metrics()
        .borrow_watched()
        .membership_config
        .membership()
        .get_node(&node.id())
        .is_some()
}

/// Resolves once this node is a member; fails when no cluster answers at `endpoint`
/// within `find_within` (see the module docs).
pub async fn await_membership(
    node: Node,
    endpoint: &str,
    find_within: Duration,
) -> Result<(), JoinError> {
    if is_member(&node) {
        return Ok(());
    }
    let mut endpoint = parse_endpoint(endpoint)?;
    if node.config().tls.enabled() && !endpoint.starts_with("https://") {
        endpoint = format!("https://{endpoint}");
    }
    let http = crate::tls::peer_client(node.config(), node.id())
        .map_err(|e| JoinError::Http(e.to_string()))?
        .timeout(PROBE_TIMEOUT)
        .build()
        .map_err(|e| JoinError::Http(e.to_string()))?;
    let url = endpoint_url(&endpoint, "/readyz");
    let started = tokio::time::Instant::now();
    let leader = loop {
        if is_member(&node) {
            return Ok(());
        }
        let last = match probe(&http, &url).await {
            Ok(r) if r.ready => break r.leader_id,
            Ok(r) => format!(
                "node {} is not ready: {}",
                r.node_id,
                r.reason.unwrap_or_default()
            ),
            Err(e) => e,
        };
        tracing::debug!(endpoint, last, "no running cluster found yet");
        if started.elapsed() >= find_within {
            return Err(JoinError::NoCluster {
                endpoint,
                waited: started.elapsed(),
                last,
            });
        }
        tokio::time::sleep(PROBE_EVERY).await;
    };
    let me = node.config().node(node.id()).ok();
    let (api, raft) = me.map_or((String::new(), String::new()), |n| {
        (n.api.clone(), n.raft.clone())
    });
    let command = format!(
        "baton cluster add {} --api {api} --raft {raft} --endpoints {endpoint}",
        node.id()
    );
    tracing::info!(
        endpoint,
        leader_id = leader,
        "found the cluster at {endpoint}; waiting to be added: {command}"
    );
    let mut rx = node.inner().raft.metrics();
    let mut remind = tokio::time::Instant::now() + REMIND_EVERY;
    while !is_member(&node) {
        match tokio::time::timeout_at(remind, rx.changed()).await {
            Ok(Ok(())) => {}
            // Raft stopped: the node's own fail-stop path reports it.
            Ok(Err(_)) => std::future::pending::<()>().await,
            Err(_) => {
                tracing::info!("still waiting to be added: {command}");
                remind = tokio::time::Instant::now() + REMIND_EVERY;
            }
        }
    }
    tracing::info!("added to the cluster");
    Ok(())
}

/// One `/readyz` probe: the answer, or why there was none.
async fn probe(http: &reqwest::Client, url: &str) -> Result<Readiness, String> {
    let resp = http.get(url).send().await.map_err(|e| {
        if e.is_connect() {
            "connection refused or host unreachable".to_string()
        } else if e.is_timeout() {
            "timed out".to_string()
        } else {
            e.to_string()
        }
    })?;
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
    serde_json::from_slice::<Readiness>(&bytes)
        .map_err(|_| format!("answered {status}, not a Baton node"))
}
