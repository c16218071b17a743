//! Quorum loss is visible: with two of three nodes stopped, the survivor says so on
//! `/readyz`, `/v1/cluster`, in the answer to a write and in its log — and recovers
//! when the others come back.

mod common;

use std::time::{Duration, Instant};

use common::{TestCluster, READY_TIMEOUT};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// A write on a node that knows it has no quorum must be refused well before
/// `api.request_timeout_ms` (5 s in test clusters) would end it.
const PROMPT_REFUSAL: Duration = Duration::from_millis(2_500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_without_quorum_says_so_everywhere_and_recovers() {
    let mut cluster = TestCluster::start().await;
    let survivor = cluster.leader().await;
    let (status, grant) = cluster.acquire(survivor, "before", "o", 600_000).await;
    assert_eq!(status, StatusCode::OK, "{grant}");
    let stopped: Vec<u64> = cluster
        .running_ids()
        .into_iter()
        .filter(|id| *id != survivor)
        .collect();
    for id in &stopped {
        cluster.kill(*id);
    }

    // /readyz: 503 with a sentence naming the quorum and the unreachable nodes.
    let reason = wait_for_unready(&cluster, survivor).await;
    assert!(reason.starts_with("no quorum: "), "{reason}");
    assert!(reason.contains("reaches 1 of 3 voters"), "{reason}");
    for id in &stopped {
        assert!(
            reason.contains(&format!("node {id} unreachable since")),
            "{reason}"
        );
    }
    assert!(!reason.contains('{'), "Debug output in {reason}");

    // /v1/cluster: the quorum and each peer.
    let view = cluster.cluster_view(survivor).await.expect("cluster view");
    assert_eq!(view["quorum"]["ok"], json!(false), "{view}");
    assert_eq!(view["quorum"]["voters"], json!(3), "{view}");
    assert_eq!(view["quorum"]["reachable_voters"], json!(1), "{view}");
    let peers = view["peers"].as_array().expect("peers");
    assert_eq!(peers.len(), 2, "{view}");
    for p in peers {
        assert_eq!(p["reachable"], json!(false), "{view}");
        assert!(
            p["since"].as_str().is_some_and(|s| s.ends_with('Z')),
            "{view}"
        );
        assert!(p["error"].is_string(), "{view}");
    }

    // A write is refused promptly, naming the quorum; so is a linearizable read.
    let started = Instant::now();
    let (status, problem) = cluster
        .call(
            survivor,
            Method::POST,
            "/v1/locks/during/acquire",
            Some(json!({"owner": "o", "ttl_ms": 10_000})),
        )
        .await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
    assert_eq!(problem["code"], json!("NO_LEADER"), "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("no quorum")),
        "{problem}"
    );
    assert!(took < PROMPT_REFUSAL, "write refused after {took:?}");
    let (status, problem) = cluster
        .call(survivor, Method::GET, "/v1/locks/before", None)
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(detail.starts_with("no quorum"), "{problem}");
    assert!(!detail.contains('{'), "Debug output in {problem}");

    // The log says it (the node checks its quorum a few times a second); that it says
    // it once is checked after the recovery below, seconds later.
    let deadline = Instant::now() + READY_TIMEOUT;
    while warn_lines(&cluster.log(survivor), "no quorum: ") == 0 {
        assert!(
            Instant::now() < deadline,
            "no warning in the log:\n{}",
            cluster.log(survivor)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Back to three: everyone ready, writes work, the log says the quorum is back.
    for id in &stopped {
        cluster.spawn(*id);
    }
    cluster.wait_ready(READY_TIMEOUT).await;
    let leader = cluster.leader().await;
    let (status, grant) = cluster.acquire(leader, "after", "o", 600_000).await;
    assert_eq!(status, StatusCode::OK, "{grant}");
    let view = cluster.cluster_view(survivor).await.expect("cluster view");
    assert_eq!(view["quorum"]["ok"], json!(true), "{view}");
    let deadline = Instant::now() + READY_TIMEOUT;
    while !cluster.log(survivor).contains("quorum regained") {
        assert!(
            Instant::now() < deadline,
            "no quorum regained in the log:\n{}",
            cluster.log(survivor)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = cluster.log(survivor);
    assert_eq!(warn_lines(&log, "no quorum: "), 1, "log:\n{log}");
}

/// Waits until `node`'s `/readyz` answers 503; returns its reason.
async fn wait_for_unready(cluster: &TestCluster, node: u64) -> String {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let (status, body) = cluster.call(node, Method::GET, "/readyz", None).await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(body["ready"], json!(false), "{body}");
            assert_eq!(body["node_id"], json!(node), "{body}");
            return body["reason"].as_str().unwrap_or_default().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "node {node} stayed ready without a quorum: {body}\n{:?}",
            cluster.cluster_view(node).await.unwrap_or(Value::Null)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Warning lines of a node's log that contain `text`.
fn warn_lines(log: &str, text: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("WARN") && l.contains(text))
        .count()
}
