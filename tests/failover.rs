//! Leader `kill -9`: a new leader serves within seconds and tokens keep increasing.

mod common;

use std::time::{Duration, Instant};

use common::TestCluster;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_elects_a_new_one_and_tokens_keep_increasing() {
    let mut cluster = TestCluster::start().await;
    let old_leader = cluster.leader().await;
    let (status, before) = cluster
        .acquire(old_leader, "held-across-failover", "holder", 60_000)
        .await;
    assert_eq!(status, StatusCode::OK, "{before}");
    let token_before = before["token"].as_u64().expect("token");

    cluster.kill(old_leader);
    let killed_at = Instant::now();
    let survivor = cluster.other_than(old_leader);
    // First successful write after the kill (call_retry rotates over the survivors).
    let (status, after) = cluster
        .acquire(survivor, "after-failover", "writer", 60_000)
        .await;
    assert_eq!(status, StatusCode::OK, "{after}");
    let failover = killed_at.elapsed();
    eprintln!("leader kill -> first successful write: {failover:?}");
    assert!(
        failover < Duration::from_secs(20),
        "failover took {failover:?}"
    );
    let token_after = after["token"].as_u64().expect("token");
    assert!(
        token_after > token_before,
        "{token_after} <= {token_before}"
    );

    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, old_leader);

    // The grant made before the failover is still held, with its token, and its lease was
    // not shortened by the leader change.
    let (status, lock) = cluster
        .call_retry(
            survivor,
            Method::GET,
            "/v1/locks/held-across-failover",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{lock}");
    assert_eq!(lock["token"], json!(token_before));
    assert!(
        lock["expires_at"].as_str() >= before["expires_at"].as_str(),
        "{lock} vs {before}"
    );
    let (status, problem) = cluster
        .acquire(survivor, "held-across-failover", "intruder", 60_000)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");

    // The old leader comes back as a follower and catches up.
    cluster.spawn(old_leader);
    cluster.wait_ready(common::READY_TIMEOUT).await;
    let deadline = Instant::now() + common::READY_TIMEOUT;
    loop {
        let (status, lock) = cluster.get_local(old_leader, "after-failover").await;
        if status == StatusCode::OK {
            assert_eq!(lock["token"], json!(token_after));
            break;
        }
        assert!(Instant::now() < deadline, "old leader did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
