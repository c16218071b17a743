//! `baton status`: every node's own view, one line each, then a line that says whether
//! the cluster can serve — and if not, why ("no quorum: …", unreachable peers).
//!
//! Each endpoint is asked once, directly (no retry, no relay): a node that does not
//! answer is itself the news. Exit 0 when some node reports a leader that has (or is
//! not known to lack) a quorum, [`exit::UNAVAILABLE`] otherwise.

use serde_json::json;

use super::exit;
use super::locks::Outcome;
use crate::client::{Client, ClientError, ClusterView};
use crate::wire::Role;

/// Asks every endpoint of `client` for its view and sums the answers up.
pub(super) async fn status(client: &Client) -> Outcome {
    let asks = client
        .endpoints()
        .iter()
        .map(|e| async move { (e.clone(), client.node_status(e).await) });
    let answers = futures::future::join_all(asks).await;
    summarize(&answers)
}

fn summarize(answers: &[(String, Result<ClusterView, ClientError>)]) -> Outcome {
    let views: Vec<&ClusterView> = answers
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .collect();
    let mut lines = Vec::new();
    let mut nodes_json = Vec::new();
    for (endpoint, answer) in answers {
        match answer {
            Ok(v) => {
                lines.push(format!(
                    "node {:<3} {endpoint:<21} {:<10} term {:<4} applied {:<8} committed {:<8} locks {}",
                    v.node_id,
                    v.state.as_str(),
                    v.term,
                    index(v.applied_index),
                    index(v.committed_index),
                    v.locks_stored
                ));
                nodes_json.push(json!({"endpoint": endpoint, "view": v}));
            }
            Err(e) => {
                let id = views
                    .iter()
                    .flat_map(|v| v.members.iter())
                    .find(|m| &m.api == endpoint)
                    .map_or("?".to_string(), |m| m.id.to_string());
                let why = unreachable_reason(e).unwrap_or_else(|| e.to_string());
                lines.push(format!("node {id:<3} {endpoint:<21} unreachable: {why}"));
                nodes_json.push(json!({"endpoint": endpoint, "error": e.to_string()}));
            }
        }
    }
    let serving = views.iter().any(|v| can_serve(v));
    lines.push(verdict(&views));
    let leader_id = views.iter().find_map(|v| v.leader_id);
    Outcome {
        human: lines.join("\n"),
        json: json!({"nodes": nodes_json, "leader_id": leader_id, "serving": serving}),
        code: if serving { exit::OK } else { exit::UNAVAILABLE },
    }
}

/// The short reason a node gave no answer (the transport error without the framing).
fn unreachable_reason(e: &ClientError) -> Option<String> {
    match e {
        ClientError::NoAnswer { trouble, .. } => trouble.nodes().first().map(|(_, t)| match t {
            crate::client::trouble::NodeTrouble::Unreachable(why) => why.clone(),
            crate::client::trouble::NodeTrouble::Busy(p) => format!("{}: {}", p.code, p.detail),
        }),
        _ => None,
    }
}

/// Whether `view` reports a leader that has (or is not known to lack) a quorum.
fn can_serve(view: &ClusterView) -> bool {
    view.leader_id.is_some() && view.quorum.as_ref().is_none_or(|q| q.ok)
}

fn index(i: Option<u64>) -> String {
    i.map_or("-".into(), |i| i.to_string())
}

/// The last line: who leads, and whether it has a quorum — from the leader's own view
/// when it answered (it knows best), else from any node that reports one.
fn verdict(views: &[&ClusterView]) -> String {
    if views.is_empty() {
        return "no node answered".into();
    }
    let leader_view = views.iter().find(|v| v.state == Role::Leader);
    let judge = leader_view
        .or_else(|| views.iter().find(|v| v.quorum.is_some()))
        .copied();
    let mut line = match (leader_view, views.iter().find_map(|v| v.leader_id)) {
        (Some(l), _) => format!("leader: node {} (term {})", l.node_id, l.term),
        (None, Some(id)) => format!("leader: node {id} (did not answer)"),
        (None, None) => "no leader: no node that answered knows one".into(),
    };
    if let Some(view) = judge {
        if let Some(q) = &view.quorum {
            if q.ok {
                line.push_str(&format!(
                    "; quorum ok: {} of {} voters reachable",
                    q.reachable_voters, q.voters
                ));
            } else {
                // The node's own sentence, prefixed once.
                let detail = q.detail.trim_start_matches("no quorum: ");
                line.push_str(&format!("; no quorum: {detail}"));
            }
        }
        let unreachable: Vec<String> = view
            .unreachable_peers()
            .map(|p| {
                let mut s = format!("node {}", p.id);
                if let Some(since) = &p.since {
                    s.push_str(&format!(" since {since}"));
                }
                if let Some(error) = &p.error {
                    s.push_str(&format!(" ({error})"));
                }
                s
            })
            .collect();
        if !unreachable.is_empty() {
            line.push_str(&format!(
                "; node {} cannot reach {}",
                view.node_id,
                unreachable.join(", ")
            ));
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{MemberView, PeerView, QuorumView};

    fn view(id: u64, state: Role, leader: Option<u64>) -> ClusterView {
        ClusterView {
            node_id: id,
            state,
            leader_id: leader,
            term: 4,
            members: (1..=3)
                .map(|i| MemberView {
                    id: i,
                    api: format!("n{i}:1"),
                    raft: format!("n{i}:2"),
                    voter: true,
                    matched_index: None,
                    lag: None,
                })
                .collect(),
            last_log_index: Some(10),
            committed_index: Some(10),
            applied_index: Some(10),
            snapshot_index: None,
            purged_index: None,
            applied_cluster_time_ms: 0,
            locks_stored: 2,
            quorum: None,
            peers: vec![],
            membership_change: None,
        }
    }

    fn down() -> Result<ClusterView, ClientError> {
        Err(ClientError::Config("cannot connect".into()))
    }

    #[test]
    fn a_healthy_cluster_names_its_leader_and_exits_zero() {
        let answers = vec![
            ("n1:1".to_string(), Ok(view(1, Role::Leader, Some(1)))),
            ("n2:1".to_string(), Ok(view(2, Role::Follower, Some(1)))),
        ];
        let out = summarize(&answers);
        assert_eq!(out.code, exit::OK);
        assert!(out.human.contains("node 1   n1:1"), "{}", out.human);
        assert!(out.human.contains("follower"), "{}", out.human);
        assert!(
            out.human.ends_with("leader: node 1 (term 4)"),
            "{}",
            out.human
        );
        assert_eq!(out.json["serving"], true);
    }

    #[test]
    fn a_leader_without_quorum_is_reported_with_its_unreachable_peers() {
        let mut leader = view(1, Role::Leader, Some(1));
        leader.quorum = Some(QuorumView {
            ok: false,
            voters: 3,
            reachable_voters: 1,
            detail: "no quorum: 1 of 3 voters reachable".into(),
        });
        leader.peers = vec![
            PeerView {
                id: 2,
                reachable: false,
                since: Some("2026-11-30T10:00:00.000Z".into()),
                error: Some("connection refused".into()),
            },
            PeerView {
                id: 3,
                reachable: false,
                since: None,
                error: None,
            },
        ];
        let answers = vec![
            ("n1:1".to_string(), Ok(leader)),
            ("n2:1".to_string(), down()),
            ("n3:1".to_string(), down()),
        ];
        let out = summarize(&answers);
        assert_eq!(out.code, exit::UNAVAILABLE);
        let last = out.human.lines().last().unwrap();
        assert!(
            last.contains("no quorum: 1 of 3 voters reachable")
                && !last.contains("no quorum: no quorum")
                && last.contains("node 2 since 2026-11-30T10:00:00.000Z (connection refused)")
                && last.contains("node 3"),
            "{last}"
        );
        assert!(
            out.human.contains("node 2   n2:1"),
            "ids of silent nodes come from members: {}",
            out.human
        );
        assert!(out.human.contains("unreachable"), "{}", out.human);
    }

    #[test]
    fn no_answer_at_all_exits_unavailable() {
        let out = summarize(&[("n1:1".to_string(), down())]);
        assert_eq!(out.code, exit::UNAVAILABLE);
        assert!(out.human.ends_with("no node answered"), "{}", out.human);
    }
}
