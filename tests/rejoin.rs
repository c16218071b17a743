//! A node that lost its data directory rejoins by the README's procedure ("A node that
//! lost its data directory"): stop the node; on any node, `POST
//! /v1/cluster/nodes/{id}/allow-rejoin`; delete the data dir; start the node — and also
//! when the operator starts the wiped node first and calls `allow-rejoin` after.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Options, TestCluster, READY_TIMEOUT};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Keys taken before the node is wiped; the rejoined node must hold each of them.
const KEYS: usize = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_rejoins_whichever_order_the_restart_and_allow_rejoin_come_in() {
    // Small snapshots with little log behind them: the wiped node can only catch up by
    // a snapshot, as on a long-running cluster.
    let mut cluster = TestCluster::start_with(Options {
        snapshot_after_entries: 20,
        keep_entries_after_snapshot: 5,
        ..Options::default()
    })
    .await;
    let leader = cluster.leader().await;
    let mut acked = BTreeMap::new();
    for i in 0..KEYS {
        let key = format!("rejoin-{i}");
        let (status, grant) = cluster.acquire(leader, &key, "o", 600_000).await;
        assert_eq!(status, StatusCode::OK, "{grant}");
        acked.insert(key, grant["token"].as_u64().expect("token"));
    }
    let wiped = cluster.other_than(leader);
    let via = cluster.other_than(wiped);

    // 1. The README's order: stop, allow-rejoin, delete the data dir, start.
    cluster.kill(wiped);
    allow_rejoin(&cluster, via, wiped).await;
    std::fs::remove_dir_all(cluster.data_dir(wiped)).expect("wipe the data dir");
    cluster.spawn(wiped);
    wait_until_ready_with(&cluster, wiped, &acked).await;

    // 2. and 3. The careless order, twice: stop, delete, start — the leader refuses the
    // node and says how to let it in — then allow-rejoin.
    for cycle in 2..=3 {
        cluster.kill(wiped);
        std::fs::remove_dir_all(cluster.data_dir(wiped)).expect("wipe the data dir");
        cluster.spawn(wiped);
        wait_until_refused(&cluster, leader, wiped).await;
        let (status, ready) = cluster.call(wiped, Method::GET, "/readyz", None).await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "cycle {cycle}: {ready}"
        );
        allow_rejoin(&cluster, via, wiped).await;
        wait_until_ready_with(&cluster, wiped, &acked).await;
    }

    // The leader said what was wrong and how to fix it, once per refusal.
    let log = cluster.log(leader);
    let refusals = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains(&format!("refusing node {wiped}")))
        .count();
    assert_eq!(refusals, 2, "leader log:\n{log}");
    assert!(
        log.contains(&format!("POST /v1/cluster/nodes/{wiped}/allow-rejoin")),
        "leader log:\n{log}"
    );
}

/// `POST /v1/cluster/nodes/{wiped}/allow-rejoin`, sent to `via` (retried on 503 while a
/// leader is being elected) — it must answer `allowed: true`.
async fn allow_rejoin(cluster: &TestCluster, via: u64, wiped: u64) {
    let (status, body) = cluster
        .call_retry(
            via,
            Method::POST,
            &format!("/v1/cluster/nodes/{wiped}/allow-rejoin"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["allowed"], json!(true), "{body}");
}

/// Waits until the leader's `/v1/cluster` shows `wiped` refused (its log went backwards).
async fn wait_until_refused(cluster: &TestCluster, leader: u64, wiped: u64) {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let view = cluster.cluster_view(leader).await.unwrap_or(Value::Null);
        let refused = view["peers"].as_array().is_some_and(|peers| {
            peers.iter().any(|p| {
                p["id"] == json!(wiped)
                    && p["error"]
                        .as_str()
                        .is_some_and(|e| e.contains("log went backwards"))
            })
        });
        if refused {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "leader {leader} never refused wiped node {wiped}: {view}\nleader log:\n{}",
            cluster.log(leader)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `node` is ready and its own replica holds every acknowledged grant.
async fn wait_until_ready_with(cluster: &TestCluster, node: u64, acked: &BTreeMap<String, u64>) {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let (status, _) = cluster.call(node, Method::GET, "/readyz", None).await;
        let mut all = status == StatusCode::OK;
        for (key, token) in acked {
            if !all {
                break;
            }
            let (status, lock) = cluster.get_local(node, key).await;
            all = status == StatusCode::OK && lock["token"] == json!(token);
        }
        if all {
            return;
        }
        let (_, ready) = cluster.call(node, Method::GET, "/readyz", None).await;
        assert!(
            Instant::now() < deadline,
            "node {node} did not rejoin: {ready}; log:\n{}",
            cluster.log(node)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
