//! Durability: acknowledged grants survive `kill -9` of every node, and a node kept down
//! while the log is purged catches up by snapshot.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Options, TestCluster, READY_TIMEOUT};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_grants_survive_kill_9_of_all_nodes() {
    let mut cluster = TestCluster::start().await;
    let mut acked = BTreeMap::new();
    for i in 0..30 {
        let node = 1 + (i % 3);
        let key = format!("durable-{i}");
        let (status, grant) = cluster
            .acquire(node, &key, &format!("owner-{i}"), 600_000)
            .await;
        assert_eq!(status, StatusCode::OK, "{grant}");
        acked.insert(key, grant["token"].as_u64().expect("token"));
    }
    for id in [1, 2, 3] {
        cluster.kill(id);
    }
    for id in [1, 2, 3] {
        cluster.spawn(id);
    }
    cluster.wait_ready(READY_TIMEOUT).await;
    for (key, token) in &acked {
        let (status, lock) = cluster
            .call_retry(1, Method::GET, &format!("/v1/locks/{key}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{key}: {lock}");
        assert_eq!(lock["token"], json!(token), "{key}");
    }
    // New grants get larger tokens than every grant before the crash.
    let max_before = acked.values().max().copied().unwrap_or(0);
    let (status, grant) = cluster.acquire(2, "after-crash", "o", 60_000).await;
    assert_eq!(status, StatusCode::OK, "{grant}");
    assert!(grant["token"].as_u64().unwrap_or(0) > max_before, "{grant}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_while_the_log_is_purged_catches_up_by_snapshot() {
    let mut cluster = TestCluster::start_with(Options {
        snapshot_after_entries: 50,
        keep_entries_after_snapshot: 5,
        ..Options::default()
    })
    .await;
    let leader = cluster.leader().await;
    let lagging = cluster.other_than(leader);
    cluster.kill(lagging);
    let writer = cluster.other_than(lagging);
    let mut acked = BTreeMap::new();
    for i in 0..150 {
        let key = format!("snap-{i}");
        let (status, grant) = cluster.acquire(writer, &key, "o", 600_000).await;
        assert_eq!(status, StatusCode::OK, "{grant}");
        acked.insert(key, grant["token"].as_u64().expect("token"));
    }
    // Snapshot now (the policy would wait for 2 entries per stored key) and wait until
    // the leader has purged log entries the lagging node never saw.
    let leader = cluster.leader().await;
    let (status, body) = cluster
        .call(leader, Method::POST, "/v1/cluster/snapshot", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let view = cluster.cluster_view(leader).await.expect("view");
        if view["purged_index"].as_u64().unwrap_or(0) > 20 {
            break;
        }
        assert!(Instant::now() < deadline, "leader never purged: {view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.spawn(lagging);
    wait_until_node_has(&cluster, lagging, &acked).await;
    assert!(
        cluster.log(lagging).contains("installed snapshot"),
        "expected a snapshot install:\n{}",
        cluster.log(lagging)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_a_node_down_cleanly_and_it_rejoins() {
    let mut cluster = TestCluster::start().await;
    let (status, grant) = cluster.acquire(1, "graceful", "o", 600_000).await;
    assert_eq!(status, StatusCode::OK, "{grant}");
    let follower = cluster.other_than(cluster.leader().await);
    assert_eq!(
        cluster.terminate(follower),
        Some(0),
        "log:\n{}",
        cluster.log(follower)
    );
    cluster.spawn(follower);
    cluster.wait_ready(READY_TIMEOUT).await;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let (status, lock) = cluster.get_local(follower, "graceful").await;
        if status == StatusCode::OK {
            assert_eq!(lock["token"], grant["token"]);
            break;
        }
        assert!(Instant::now() < deadline, "restarted node lacks the lock");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_rejoins_after_allow_rejoin_and_catches_up_by_snapshot() {
    let mut cluster = TestCluster::start_with(Options {
        snapshot_after_entries: 50,
        keep_entries_after_snapshot: 5,
        ..Options::default()
    })
    .await;
    let leader = cluster.leader().await;
    let mut acked = BTreeMap::new();
    for i in 0..120 {
        let key = format!("wipe-{i}");
        let (status, grant) = cluster.acquire(leader, &key, "o", 600_000).await;
        assert_eq!(status, StatusCode::OK, "{grant}");
        acked.insert(key, grant["token"].as_u64().expect("token"));
    }
    let wiped = cluster.other_than(leader);
    cluster.kill(wiped);
    // The documented procedure: stop it, allow it on the leader (via any node), wipe, start.
    let via = cluster.other_than(wiped);
    let (status, body) = cluster
        .call_retry(
            via,
            Method::POST,
            &format!("/v1/cluster/nodes/{wiped}/allow-rejoin"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    std::fs::remove_dir_all(cluster.data_dir(wiped)).expect("wipe the data dir");
    cluster.spawn(wiped);
    wait_until_node_has(&cluster, wiped, &acked).await;
    // An unknown node id is a clear error.
    let (status, problem) = cluster
        .call_retry(
            leader,
            Method::POST,
            "/v1/cluster/nodes/99/allow-rejoin",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
}

/// Waits until `node`'s own replica holds every acknowledged grant with its token.
async fn wait_until_node_has(cluster: &TestCluster, node: u64, acked: &BTreeMap<String, u64>) {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let mut all = true;
        for (key, token) in acked {
            let (status, lock) = cluster.get_local(node, key).await;
            if status != StatusCode::OK || lock["token"] != json!(token) {
                all = false;
                break;
            }
        }
        if all {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {node} did not catch up; log:\n{}",
            cluster.log(node)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
