//! Which node each load connection talks to: find the leader, then spread the
//! connections according to `--target`.
//!
//! The leader is whatever `GET /v1/cluster` on the endpoints calls `leader_id`; its API
//! address comes from that answer's `members`. Discovery happens once, before the run:
//! the benchmark measures a stable cluster and does not follow a leader change (after
//! one, a `--target leader` run keeps hitting the old leader, which now forwards).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};

use super::conn::{Conn, Dial};
use super::{BenchError, Target};
use crate::wire::ClusterView;
use crate::NodeId;

/// How long discovery waits for some endpoint to report a leader.
pub const LEADER_WAIT: Duration = Duration::from_secs(10);
/// Pause between discovery rounds while no leader is known.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// The cluster as seen at the start of the run.
#[derive(Clone, Debug, PartialEq)]
pub struct Topology {
    /// The endpoints the user gave (or the config named), normalised to `host:port`.
    pub endpoints: Vec<String>,
    pub leader_id: NodeId,
    /// The leader's API address: an endpoint when one matches, else from `members`.
    pub leader_api: String,
}

/// Whether two `host:port` strings name the same socket (exact text, or equal once
/// parsed as IP addresses).
fn same_addr(a: &str, b: &str) -> bool {
    let (a, b) = (
        crate::wire::endpoint_authority(a).0,
        crate::wire::endpoint_authority(b).0,
    );
    match (a.parse::<SocketAddr>(), b.parse::<SocketAddr>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// Asks the endpoints, in order, which node leads; while some answer without knowing
/// a leader (an election), asks again until `wait` (normally [`LEADER_WAIT`]) runs out.
/// Fails at once with [`BenchError::NoEndpoint`] when none of them answers at all, and
/// with [`BenchError::NoLeader`] when they answered without a leader.
pub async fn discover(
    endpoints: &[String],
    dial: &Dial,
    wait: Duration,
) -> Result<Topology, BenchError> {
    let deadline = Instant::now() + wait;
    let mut conns = Vec::with_capacity(endpoints.len());
    for e in endpoints {
        conns.push(Conn::new(e, dial).map_err(|e| BenchError::NoEndpoint(e.to_string()))?);
    }
    let mut answered = false;
    loop {
        let mut failures = Vec::new();
        for conn in &mut conns {
            match ask(conn).await {
                Ok(view) => {
                    answered = true;
                    if let Some(topology) = from_view(endpoints, &view) {
                        return Ok(topology);
                    }
                    failures.push(format!("{}: no leader known", conn.addr()));
                }
                Err(e) => failures.push(format!("{}: {e}", conn.addr())),
            }
        }
        // Nothing listening is not worth waiting for; an election in progress is.
        if !answered || Instant::now() >= deadline {
            let detail = failures.join("; ");
            return Err(if answered {
                BenchError::NoLeader(detail)
            } else {
                BenchError::NoEndpoint(detail)
            });
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

async fn ask(conn: &mut Conn) -> Result<ClusterView, String> {
    let answer = conn
        .send(Method::GET, "/v1/cluster", None)
        .await
        .map_err(|e| e.to_string())?;
    if answer.status != StatusCode::OK {
        return Err(format!("GET /v1/cluster answered {}", answer.status));
    }
    serde_json::from_slice(&answer.body).map_err(|e| format!("unexpected /v1/cluster body: {e}"))
}

fn from_view(endpoints: &[String], view: &ClusterView) -> Option<Topology> {
    let leader_id = view.leader_id?;
    let member_api = view.members.iter().find(|m| m.id == leader_id)?.api.clone();
    let leader_api = endpoints
        .iter()
        .find(|e| same_addr(e, &member_api))
        .cloned()
        // A leader among no endpoint given: reached the way the endpoints are.
        .unwrap_or_else(|| {
            match endpoints
                .first()
                .map(|e| crate::wire::endpoint_authority(e).1)
            {
                Some(true) => format!("https://{member_api}"),
                _ => member_api,
            }
        });
    Some(Topology {
        endpoints: endpoints.to_vec(),
        leader_id,
        leader_api,
    })
}

impl Topology {
    /// The addresses connections are spread over, round robin by connection index.
    pub fn targets(&self, target: Target) -> Result<Vec<String>, BenchError> {
        match target {
            Target::Leader => Ok(vec![self.leader_api.clone()]),
            Target::All => Ok(self.endpoints.clone()),
            Target::Follower => {
                let followers: Vec<String> = self
                    .endpoints
                    .iter()
                    .filter(|e| !same_addr(e, &self.leader_api))
                    .cloned()
                    .collect();
                if followers.is_empty() {
                    Err(BenchError::NoFollower(self.leader_api.clone()))
                } else {
                    Ok(followers)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{MemberView, Role};

    fn view(leader: Option<NodeId>) -> ClusterView {
        ClusterView {
            node_id: 1,
            state: Role::Follower,
            leader_id: leader,
            term: 1,
            members: (1..=3)
                .map(|id| MemberView {
                    id,
                    api: format!("127.0.0.1:700{id}"),
                    raft: format!("127.0.0.1:710{id}"),
                    voter: true,
                    matched_index: None,
                    lag: None,
                })
                .collect(),
            last_log_index: None,
            committed_index: None,
            applied_index: None,
            snapshot_index: None,
            purged_index: None,
            applied_cluster_time_ms: 0,
            locks_stored: 0,
            quorum: None,
            peers: vec![],
            membership_change: None,
        }
    }

    fn eps(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn leader_is_found_among_members() {
        let e = eps(&["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]);
        let t = from_view(&e, &view(Some(2))).unwrap();
        assert_eq!(t.leader_id, 2);
        assert_eq!(t.leader_api, "127.0.0.1:7002");
        assert!(from_view(&e, &view(None)).is_none());
    }

    #[test]
    fn targets_follow_the_choice() {
        let e = eps(&["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]);
        let t = from_view(&e, &view(Some(2))).unwrap();
        assert_eq!(t.targets(Target::Leader).unwrap(), eps(&["127.0.0.1:7002"]));
        assert_eq!(
            t.targets(Target::Follower).unwrap(),
            eps(&["127.0.0.1:7001", "127.0.0.1:7003"])
        );
        assert_eq!(t.targets(Target::All).unwrap(), e);
    }

    #[test]
    fn leader_outside_the_endpoints_comes_from_members() {
        let e = eps(&["127.0.0.1:7001"]);
        let t = from_view(&e, &view(Some(3))).unwrap();
        assert_eq!(t.leader_api, "127.0.0.1:7003");
        assert_eq!(t.targets(Target::Follower).unwrap(), e);
    }

    #[test]
    fn no_follower_when_only_the_leader_is_given() {
        let e = eps(&["127.0.0.1:7002"]);
        let t = from_view(&e, &view(Some(2))).unwrap();
        assert!(matches!(
            t.targets(Target::Follower),
            Err(BenchError::NoFollower(_))
        ));
    }

    #[tokio::test]
    async fn no_endpoint_answering_is_an_error() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .to_string();
        // Fails at once: nothing listens, so there is no election to wait for.
        let started = Instant::now();
        let err = discover(std::slice::from_ref(&closed), &Dial::default(), LEADER_WAIT)
            .await
            .unwrap_err();
        assert!(started.elapsed() < LEADER_WAIT / 2);
        assert!(matches!(err, BenchError::NoEndpoint(_)), "{err}");
        assert!(err.to_string().contains(&closed), "{err}");
    }
}
