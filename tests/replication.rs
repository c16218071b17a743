//! Election and follower forwarding on a real three-node cluster.

mod common;

use common::TestCluster;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_cluster_elects_one_leader_that_all_nodes_agree_on() {
    let cluster = TestCluster::start().await;
    let leader = cluster.leader().await;
    let mut leaders = 0;
    for id in cluster.running_ids() {
        let view = cluster.cluster_view(id).await.expect("cluster view");
        assert_eq!(view["leader_id"], json!(leader), "node {id}: {view}");
        assert_eq!(
            view["members"].as_array().map(|m| m.len()),
            Some(3),
            "{view}"
        );
        if view["state"] == "leader" {
            leaders += 1;
        }
    }
    assert_eq!(leaders, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_sent_to_a_follower_is_forwarded_to_the_leader() {
    let cluster = TestCluster::start().await;
    let leader = cluster.leader().await;
    let follower = cluster.other_than(leader);
    let (status, grant) = cluster.acquire(follower, "deploy", "ci-1", 30_000).await;
    assert_eq!(status, StatusCode::OK, "{grant}");
    let token = grant["token"].as_u64().expect("token");
    assert_eq!(grant["owner"], "ci-1");

    // A second owner is refused with the holder, through the other follower.
    let other = cluster
        .running_ids()
        .into_iter()
        .find(|i| *i != leader && *i != follower)
        .expect("third node");
    let (status, problem) = cluster.acquire(other, "deploy", "ci-2", 30_000).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(problem["code"], "LOCK_HELD");
    assert_eq!(problem["holder"]["token"], json!(token));

    // A linearizable read on a follower sees the grant at once.
    let (status, lock) = cluster
        .call_retry(other, Method::GET, "/v1/locks/deploy", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{lock}");
    assert_eq!(lock["token"], json!(token));

    // Renew and release through followers too.
    let (status, renewed) = cluster
        .call_retry(
            follower,
            Method::POST,
            "/v1/locks/deploy/renew",
            Some(json!({"token": token})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{renewed}");
    assert_eq!(renewed["token"], json!(token));
    let (status, released) = cluster
        .call_retry(
            other,
            Method::POST,
            "/v1/locks/deploy/release",
            Some(json!({"token": token})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{released}");
    assert_eq!(released["released"], json!(true));
    let (status, _) = cluster
        .call_retry(follower, Method::GET, "/v1/locks/deploy", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Admin requests: allow-rejoin acts on the leader, so a follower relays it (it used
    // to answer NO_LEADER); a snapshot is built by the node that is asked.
    let (status, allowed) = cluster
        .call(
            follower,
            Method::POST,
            &format!("/v1/cluster/nodes/{other}/allow-rejoin"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{allowed}");
    assert_eq!(allowed["allowed"], json!(true));
    let (status, triggered) = cluster
        .call(follower, Method::POST, "/v1/cluster/snapshot", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{triggered}");
    assert_eq!(triggered["node_id"], json!(follower));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_applies_the_same_grants() {
    let cluster = TestCluster::start().await;
    let mut tokens = Vec::new();
    for i in 0..20 {
        let node = 1 + (i % 3);
        let (status, grant) = cluster
            .acquire(node, &format!("job-{i}"), "worker", 60_000)
            .await;
        assert_eq!(status, StatusCode::OK, "{grant}");
        tokens.push(grant["token"].as_u64().expect("token"));
    }
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "tokens must increase: {tokens:?}"
    );
    // Every replica converges on the same locks (local reads, polled).
    for id in cluster.running_ids() {
        let deadline = std::time::Instant::now() + common::READY_TIMEOUT;
        loop {
            let (_, page) = cluster
                .call(
                    id,
                    Method::GET,
                    "/v1/locks?prefix=job-&consistency=local&limit=100",
                    None,
                )
                .await;
            let got: Vec<u64> = page["locks"]
                .as_array()
                .map(|l| l.iter().filter_map(|x| x["token"].as_u64()).collect())
                .unwrap_or_default();
            let mut want = tokens.clone();
            want.sort_unstable();
            let mut got_sorted = got.clone();
            got_sorted.sort_unstable();
            if got_sorted == want {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "node {id} has {got:?}, want {want:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}
