//! Membership changes on real processes: grow 3 → 5 under a lock workload, shrink 5 → 3
//! removing the leader too, replace a killed node, and a join to a cluster that does not
//! exist. The refusals (each error code) are in `tests/api_inprocess.rs`.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Options, TestCluster, READY_TIMEOUT};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// What a workload saw: every token it was granted, in order, and every answer that was
/// not a success after its retries.
#[derive(Debug, Default)]
struct Seen {
    tokens: Vec<u64>,
    failures: Vec<String>,
}

/// Acquires and releases keys `w0..w3` in turn through `endpoints` (round robin) until
/// `stop`, retrying 503s and transport errors as a client does (every write is
/// idempotent), for at most `READY_TIMEOUT` per operation.
async fn workload(endpoints: Vec<String>, stop: Arc<AtomicBool>) -> Seen {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client");
    let mut seen = Seen::default();
    let mut turn = 0usize;
    let mut op = 0u64;
    let mut call = |path: String, body: Value| {
        turn += 1;
        let http = http.clone();
        let endpoints = endpoints.clone();
        async move {
            let deadline = Instant::now() + READY_TIMEOUT;
            let mut i = turn;
            loop {
                let url = format!("http://{}{path}", endpoints[i % endpoints.len()]);
                match http.post(&url).json(&body).send().await {
                    Ok(r) if r.status() != StatusCode::SERVICE_UNAVAILABLE => {
                        let status = r.status();
                        return (status, r.json::<Value>().await.unwrap_or(Value::Null));
                    }
                    _ => {}
                }
                if Instant::now() > deadline {
                    return (StatusCode::SERVICE_UNAVAILABLE, json!({"gave_up": path}));
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    while !stop.load(Ordering::Relaxed) {
        op += 1;
        let key = format!("w{}", op % 4);
        let owner = format!("worker-{op}");
        let (status, grant) = call(
            format!("/v1/locks/{key}/acquire"),
            json!({"owner": owner, "ttl_ms": 30_000}),
        )
        .await;
        if status != StatusCode::OK {
            seen.failures
                .push(format!("acquire {key}: {status} {grant}"));
            continue;
        }
        let token = grant["token"].as_u64().expect("a token");
        seen.tokens.push(token);
        let (status, released) =
            call(format!("/v1/locks/{key}/release"), json!({"token": token})).await;
        // A release retried after a lost answer says `released: false`: still an answer.
        if status != StatusCode::OK {
            seen.failures
                .push(format!("release {key} {token}: {status} {released}"));
        }
    }
    seen
}

/// `POST /v1/cluster/nodes` for node `id` through node `via`.
async fn add(c: &TestCluster, via: u64, id: u64) -> (StatusCode, Value) {
    let body = json!({"id": id, "api": c.api(id), "raft": c.nodes[&id].raft});
    c.call(via, Method::POST, "/v1/cluster/nodes", Some(body))
        .await
}

/// `DELETE /v1/cluster/nodes/{id}` through `via` (or the next running node), retried
/// while there is no leader or the previous change is not committed yet as the new
/// leader sees it (right after the leader removed itself).
async fn remove(c: &TestCluster, via: u64, id: u64) -> (StatusCode, Value) {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let path = format!("/v1/cluster/nodes/{id}");
        let (status, body) = c.call_retry(via, Method::DELETE, &path, None).await;
        if body["code"] != "MEMBERSHIP_CHANGE_IN_PROGRESS" || Instant::now() > deadline {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The voters node `id` reports.
async fn voters(c: &TestCluster, id: u64) -> Vec<u64> {
    let view = c.cluster_view(id).await.expect("a view");
    view["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter(|m| m["voter"] == true)
        .map(|m| m["id"].as_u64().expect("an id"))
        .collect()
}

/// Waits until every running node reports exactly `expected` as voters.
async fn wait_voters(c: &TestCluster, expected: &[u64]) {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let mut all = true;
        for id in c.running_ids() {
            if voters(c, id).await != expected {
                all = false;
            }
        }
        if all {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "voters never became {expected:?} everywhere"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the leader reports node `id` unreachable.
async fn wait_unreachable(c: &TestCluster, id: u64) {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let leader = c.leader().await;
        let view = c.cluster_view(leader).await.expect("a view");
        let down = view["peers"]
            .as_array()
            .expect("peers")
            .iter()
            .any(|p| p["id"] == id && p["reachable"] == false);
        if down {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {id} still reachable: {view}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn strictly_increasing(tokens: &[u64]) -> bool {
    tokens.windows(2).all(|w| w[0] < w[1])
}

#[tokio::test]
async fn growing_from_three_to_five_under_load_loses_nothing() {
    let mut c = TestCluster::start().await;
    let endpoints: Vec<String> = (1..=3).map(|id| c.api(id).to_string()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(workload(endpoints, stop.clone()));
    for id in [4, 5] {
        // A follower relays the add to the leader. (Asked first: a node waiting to be
        // added knows no leader, and `leader()` wants every running node to agree.)
        let via = c.other_than(c.leader().await);
        c.spawn_joining(id, 1);
        let (status, body) = add(&c, via, id).await;
        assert_eq!(status, StatusCode::OK, "{body}\n{}", c.log(id));
        assert_eq!(body["changed"], true, "{body}");
        assert!(
            body["voters"].as_array().unwrap().contains(&json!(id)),
            "{body}"
        );
    }
    wait_voters(&c, &[1, 2, 3, 4, 5]).await;
    stop.store(true, Ordering::Relaxed);
    let seen = load.await.expect("workload");
    assert!(seen.failures.is_empty(), "{:?}", seen.failures);
    assert!(seen.tokens.len() > 10, "the workload ran: {seen:?}");
    assert!(strictly_increasing(&seen.tokens), "{:?}", seen.tokens);
    // The new voters serve: a lock taken through node 5 is seen on node 4.
    let (status, grant) = c.acquire(5, "after-grow", "o", 30_000).await;
    assert_eq!(status, StatusCode::OK, "{grant}");
    assert!(grant["token"].as_u64().unwrap() > *seen.tokens.last().unwrap());
    let (status, view) = c.call(4, Method::GET, "/v1/locks/after-grow", None).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["token"], grant["token"]);
    // Adding the same node again changes nothing.
    let (status, body) = add(&c, 1, 5).await;
    assert_eq!(
        (status, &body["changed"]),
        (StatusCode::OK, &json!(false)),
        "{body}"
    );
    c.wait_ready(READY_TIMEOUT).await;
}

#[tokio::test]
async fn shrinking_from_five_to_three_removes_the_leader_too() {
    let mut c = TestCluster::start_with(Options {
        nodes: 5,
        ..Options::default()
    })
    .await;
    let (status, first) = c.acquire(1, "before-shrink", "o", 60_000).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let leader = c.leader().await;
    let follower = c.other_than(leader);
    // A follower first, asked through the leader.
    let (status, body) = remove(&c, leader, follower).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    c.forget(follower);
    // Then the leader itself, asked through a follower.
    let via = c.other_than(leader);
    let (status, body) = remove(&c, via, leader).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        !body["voters"].as_array().unwrap().contains(&json!(leader)),
        "{body}"
    );
    c.forget(leader);
    let remaining = c.running_ids();
    assert_eq!(remaining.len(), 3);
    wait_voters(&c, &remaining).await;
    let new_leader = c.leader().await;
    assert!(remaining.contains(&new_leader));
    // The lock survived and tokens keep increasing.
    let (status, held) = c
        .call(new_leader, Method::GET, "/v1/locks/before-shrink", None)
        .await;
    assert_eq!(
        (status, &held["token"]),
        (StatusCode::OK, &first["token"]),
        "{held}"
    );
    let (status, next) = c.acquire(remaining[0], "after-shrink", "o", 30_000).await;
    assert_eq!(status, StatusCode::OK, "{next}");
    assert!(next["token"].as_u64() > first["token"].as_u64());
    // A restart uses the committed membership, not cluster.toml (which lists five).
    let restarted = remaining[1];
    c.terminate(restarted);
    c.spawn(restarted);
    c.wait_ready(READY_TIMEOUT).await;
    assert_eq!(voters(&c, restarted).await, remaining);
    // Removing down to one voter works; the last one cannot go.
    for id in &remaining[..2] {
        let (status, body) = remove(&c, remaining[2], *id).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        c.forget(*id);
    }
    let last = remaining[2];
    wait_voters(&c, &[last]).await;
    let (status, body) = remove(&c, last, last).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "MEMBERSHIP_UNSAFE", "{body}");
}

#[tokio::test]
async fn a_killed_node_is_replaced_by_a_new_one() {
    let mut c = TestCluster::start().await;
    let (status, first) = c.acquire(1, "before-replace", "o", 60_000).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    c.kill(3);
    wait_unreachable(&c, 3).await;
    // Removing a live voter now would leave {1, 3} with only one answering: refused.
    let (status, body) = remove(&c, 1, 2).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "MEMBERSHIP_UNSAFE", "{body}");
    // Add the new node first, then remove the dead one.
    c.spawn_joining(4, 1);
    let (status, body) = add(&c, 2, 4).await;
    assert_eq!(status, StatusCode::OK, "{body}\n{}", c.log(4));
    let (status, body) = remove(&c, 1, 3).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    c.forget(3);
    wait_voters(&c, &[1, 2, 4]).await;
    // Node 4 is a real voter: with node 1 gone, 2 and 4 are a majority.
    c.kill(1);
    let (status, next) = c.acquire(4, "after-replace", "o", 30_000).await;
    assert_eq!(status, StatusCode::OK, "{next}");
    assert!(next["token"].as_u64() > first["token"].as_u64());
    let (status, held) = c
        .call(2, Method::GET, "/v1/locks/before-replace", None)
        .await;
    assert_eq!(
        (status, &held["token"]),
        (StatusCode::OK, &first["token"]),
        "{held}"
    );
    // A restart of the joined node uses its data (the --join it is started with again
    // is ignored).
    c.terminate(4);
    c.spawn(4);
    c.spawn(1);
    c.wait_ready(READY_TIMEOUT).await;
    assert_eq!(voters(&c, 4).await, [1, 2, 4]);
}

#[tokio::test]
async fn a_join_to_a_cluster_that_does_not_exist_fails_clearly() {
    let mut c = TestCluster::start_with(Options {
        nodes: 1,
        ..Options::default()
    })
    .await;
    // Point node 9 at an address where nothing listens.
    let nowhere = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a port")
        .local_addr()
        .expect("an address")
        .to_string();
    c.spawn_joining(9, 1);
    c.kill(9);
    let node = c.nodes.get_mut(&9).expect("node 9");
    node.args[1] = nowhere.clone();
    node.args
        .extend(["--join-timeout".to_string(), "2s".to_string()]);
    c.spawn(9);
    let code = c.wait_exit(9, Duration::from_secs(20));
    assert_eq!(code, Some(1), "{}", c.log(9));
    let log = c.log(9);
    assert!(
        log.contains(&format!("no running cluster answers at {nowhere}")),
        "{log}"
    );
    // A node the file does not list, without --join, is refused with the way to add it.
    let node = c.nodes.get_mut(&9).expect("node 9");
    node.args = node.args[2..].to_vec();
    c.spawn(9);
    assert_eq!(c.wait_exit(9, Duration::from_secs(20)), Some(1));
    assert!(c.log(9).contains("is not in [[nodes]]"), "{}", c.log(9));
}
