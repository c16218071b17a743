//! Fair waiting on a real cluster: FIFO grants, wait timeouts, disconnecting waiters,
//! the queue across a leader kill, and lock-delay.

mod common;

use std::time::{Duration, Instant};

use common::{TestCluster, READY_TIMEOUT};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// An acquire that waits up to `wait_ms` in the queue, sent to `node`; retried on other
/// nodes after 503s and transport errors (a retried acquire keeps its place in the queue).
async fn acquire_waiting(
    cluster: &TestCluster,
    node: u64,
    key: &str,
    owner: &str,
    ttl_ms: u64,
    wait_ms: u64,
) -> (StatusCode, Value) {
    let deadline = Instant::now() + READY_TIMEOUT + Duration::from_millis(wait_ms);
    let mut target = node;
    loop {
        let (status, value) =
            send_waiting(cluster, target, key, owner, ttl_ms, wait_ms, None).await;
        if status != StatusCode::SERVICE_UNAVAILABLE && status != StatusCode::BAD_GATEWAY {
            return (status, value);
        }
        assert!(
            Instant::now() < deadline,
            "acquire of {key} kept failing: {status} {value}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let ids = cluster.running_ids();
        let pos = ids.iter().position(|i| *i == target).unwrap_or(0);
        target = ids[(pos + 1) % ids.len()];
    }
}

/// One waiting acquire; `give_up_after` makes the client hang up early.
async fn send_waiting(
    cluster: &TestCluster,
    node: u64,
    key: &str,
    owner: &str,
    ttl_ms: u64,
    wait_ms: u64,
    give_up_after: Option<Duration>,
) -> (StatusCode, Value) {
    let timeout = give_up_after.unwrap_or(Duration::from_millis(wait_ms) + Duration::from_secs(30));
    let resp = cluster
        .http
        .post(format!(
            "http://{}/v1/locks/{key}/acquire",
            cluster.api(node)
        ))
        .timeout(timeout)
        .json(&json!({"owner": owner, "ttl_ms": ttl_ms, "wait_ms": wait_ms}))
        .send()
        .await;
    match resp {
        Ok(r) => {
            let status = r.status();
            (status, r.json().await.unwrap_or(Value::Null))
        }
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            json!({"transport_error": e.to_string()}),
        ),
    }
}

/// The key's lock with its waiter list (linearizable, retried).
async fn lock_with_waiters(cluster: &TestCluster, node: u64, key: &str) -> (StatusCode, Value) {
    cluster
        .call_retry(
            node,
            Method::GET,
            &format!("/v1/locks/{key}?waiters=true"),
            None,
        )
        .await
}

/// Waits until the key's queue lists exactly `owners`, in that order.
async fn wait_for_queue(cluster: &TestCluster, node: u64, key: &str, owners: &[&str]) {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let (status, lock) = lock_with_waiters(cluster, node, key).await;
        let listed: Vec<String> = lock["waiter_list"]
            .as_array()
            .map(|ws| {
                ws.iter()
                    .filter_map(|w| w["owner"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if status == StatusCode::OK && listed == owners {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "queue of {key} is {status} {lock}, expected {owners:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn release(cluster: &TestCluster, node: u64, key: &str, token: u64) -> Value {
    let (status, body) = cluster
        .call_retry(
            node,
            Method::POST,
            &format!("/v1/locks/{key}/release"),
            Some(json!({"token": token})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The key is free (no holder, nobody queued): a read finds no lock, and a
/// non-waiting acquire by a new owner is granted at once. Called once the queue is
/// known to be empty, so nothing can grant the key to an earlier waiter later.
async fn assert_free(cluster: &TestCluster, node: u64, key: &str) {
    let (status, lock) = lock_with_waiters(cluster, node, key).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a lock was left behind: {lock}"
    );
    let (status, probe) = cluster.acquire(node, key, "probe", 5_000).await;
    assert_eq!(status, StatusCode::OK, "the key is not free: {probe}");
    assert_eq!(probe["owner"], "probe", "{probe}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_waiters_are_granted_in_arrival_order_with_increasing_tokens() {
    let cluster = std::sync::Arc::new(TestCluster::start().await);
    let leader = cluster.leader().await;
    let (status, holder) = cluster.acquire(leader, "fifo", "holder", 60_000).await;
    assert_eq!(status, StatusCode::OK, "{holder}");
    let ids = cluster.running_ids();
    let mut waiters = Vec::new();
    let mut queued: Vec<&str> = Vec::new();
    for (i, owner) in ["w1", "w2", "w3", "w4", "w5"].into_iter().enumerate() {
        // Round-robin over the nodes: followers relay the waiting request to the leader.
        let node = ids[i % ids.len()];
        let c = cluster.clone();
        waiters.push(tokio::spawn(async move {
            let (status, grant) = acquire_waiting(&c, node, "fifo", owner, 60_000, 60_000).await;
            assert_eq!(status, StatusCode::OK, "{owner}: {grant}");
            let token = grant["token"].as_u64().expect("token");
            // Hold briefly, then pass the lock on.
            tokio::time::sleep(Duration::from_millis(100)).await;
            release(&c, node, "fifo", token).await;
            (owner, token, Instant::now())
        }));
        queued.push(owner);
        wait_for_queue(&cluster, leader, "fifo", &queued).await;
    }
    release(&cluster, leader, "fifo", holder["token"].as_u64().unwrap()).await;
    let mut granted = Vec::new();
    for w in waiters {
        granted.push(w.await.expect("waiter task"));
    }
    granted.sort_by_key(|(_, token, _)| *token);
    let order: Vec<&str> = granted.iter().map(|(o, _, _)| *o).collect();
    assert_eq!(order, ["w1", "w2", "w3", "w4", "w5"], "{granted:?}");
    assert!(
        granted.windows(2).all(|w| w[0].2 <= w[1].2),
        "releases out of order: {granted:?}"
    );
    assert!(granted[0].1 > holder["token"].as_u64().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_whose_wait_ends_gets_wait_timeout_and_is_never_granted() {
    let cluster = TestCluster::start().await;
    let leader = cluster.leader().await;
    let follower = cluster.other_than(leader);
    let (status, holder) = cluster.acquire(leader, "timeout", "holder", 60_000).await;
    assert_eq!(status, StatusCode::OK, "{holder}");
    let started = Instant::now();
    let (status, problem) =
        acquire_waiting(&cluster, follower, "timeout", "late", 5_000, 700).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(problem["code"], "WAIT_TIMEOUT", "{problem}");
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "answered early: {:?}",
        started.elapsed()
    );
    wait_for_queue(&cluster, leader, "timeout", &[]).await;
    release(
        &cluster,
        leader,
        "timeout",
        holder["token"].as_u64().unwrap(),
    )
    .await;
    // Free: the timed-out waiter was not granted by the release, and with the queue
    // empty nothing can grant it later.
    assert_free(&cluster, leader, "timeout").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_that_disconnects_leaves_no_lock_behind() {
    let cluster = TestCluster::start().await;
    let leader = cluster.leader().await;
    let follower = cluster.other_than(leader);
    let (status, holder) = cluster.acquire(leader, "gone", "holder", 60_000).await;
    assert_eq!(status, StatusCode::OK, "{holder}");
    // One waiter talks to the leader, one through a follower; both hang up while queued.
    for (node, owner) in [(leader, "gone-direct"), (follower, "gone-relayed")] {
        let c = &cluster;
        let send = send_waiting(
            c,
            node,
            "gone",
            owner,
            60_000,
            60_000,
            Some(Duration::from_millis(1_500)),
        );
        let expected = [owner];
        let watch = wait_for_queue(c, leader, "gone", &expected);
        let ((status, body), ()) = tokio::join!(send, watch);
        assert_eq!(
            status,
            StatusCode::BAD_GATEWAY,
            "the client should have hung up: {body}"
        );
        // The server notices and cancels the wait through Raft.
        wait_for_queue(&cluster, leader, "gone", &[]).await;
    }
    release(&cluster, leader, "gone", holder["token"].as_u64().unwrap()).await;
    assert_free(&cluster, leader, "gone").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_survives_a_leader_kill() {
    let cluster = std::sync::Arc::new(tokio::sync::Mutex::new(TestCluster::start().await));
    let (leader, holder) = {
        let c = cluster.lock().await;
        let leader = c.leader().await;
        let (status, holder) = c.acquire(leader, "survivor", "holder", 60_000).await;
        assert_eq!(status, StatusCode::OK, "{holder}");
        (leader, holder)
    };
    let (http, api) = {
        let c = cluster.lock().await;
        (c.http.clone(), c.api(c.other_than(leader)).to_string())
    };
    let mut queued = Vec::new();
    let mut waiters = Vec::new();
    for owner in ["q1", "q2", "q3"] {
        let (http, api) = (http.clone(), api.clone());
        waiters.push(tokio::spawn(async move {
            // Through a follower that survives; retried after the leader dies (a retried
            // acquire keeps its place in the queue).
            let body = json!({"owner": owner, "ttl_ms": 60_000, "wait_ms": 90_000});
            let (status, grant) = post_retry(
                &http,
                &api,
                "/v1/locks/survivor/acquire",
                body,
                Duration::from_secs(90),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{owner}: {grant}");
            let token = grant["token"].as_u64().expect("token");
            tokio::time::sleep(Duration::from_millis(100)).await;
            let (status, body) = post_retry(
                &http,
                &api,
                "/v1/locks/survivor/release",
                json!({"token": token}),
                Duration::from_secs(10),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{owner}: {body}");
            (owner, token)
        }));
        queued.push(owner);
        let c = cluster.lock().await;
        wait_for_queue(&c, leader, "survivor", &queued).await;
    }
    {
        let mut c = cluster.lock().await;
        c.kill(leader);
        let new_leader = c.leader().await;
        assert_ne!(new_leader, leader);
        // The queue is replicated state: still there, in order, on the new leader.
        wait_for_queue(&c, new_leader, "survivor", &["q1", "q2", "q3"]).await;
        release(
            &c,
            new_leader,
            "survivor",
            holder["token"].as_u64().unwrap(),
        )
        .await;
    }
    let mut granted = Vec::new();
    for w in waiters {
        granted.push(w.await.expect("waiter task"));
    }
    granted.sort_by_key(|(_, token)| *token);
    let order: Vec<&str> = granted.iter().map(|(o, _)| *o).collect();
    assert_eq!(order, ["q1", "q2", "q3"], "{granted:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_delay_holds_a_key_after_an_expiry_but_not_after_a_release() {
    let cluster = TestCluster::start().await;
    let leader = cluster.leader().await;
    let acquire = |key: &'static str, owner: &'static str, body: Value| {
        let c = &cluster;
        async move {
            let mut body = body;
            body["owner"] = json!(owner);
            c.call_retry(
                leader,
                Method::POST,
                &format!("/v1/locks/{key}/acquire"),
                Some(body),
            )
            .await
        }
    };
    // Expiry: the key stays unavailable for lock_delay_ms after the lease ran out.
    let (status, first) = acquire(
        "delayed",
        "crashed",
        json!({"ttl_ms": 300, "lock_delay_ms": 3_000}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let expires_at = first["expires_at"].as_str().unwrap().to_string();
    let deadline = Instant::now() + READY_TIMEOUT;
    let second = loop {
        let (status, body) = acquire("delayed", "next", json!({"ttl_ms": 5_000})).await;
        if status == StatusCode::OK {
            break body;
        }
        // Held, then (lease over) unavailable during the lock-delay: LOCK_HELD both times.
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["code"], "LOCK_HELD", "{body}");
        assert!(
            Instant::now() < deadline,
            "never granted after the lock-delay"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Cluster time: granted no earlier than lease end + lock-delay.
    let granted_at = parse_ms(second["acquired_at"].as_str().unwrap());
    assert!(
        granted_at >= parse_ms(&expires_at) + 3_000,
        "granted at {granted_at} before {expires_at} + 3 s"
    );
    // Release: free at once, lock-delay or not.
    let (status, held) = acquire(
        "released",
        "clean",
        json!({"ttl_ms": 5_000, "lock_delay_ms": 3_000}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{held}");
    release(
        &cluster,
        leader,
        "released",
        held["token"].as_u64().unwrap(),
    )
    .await;
    let (status, body) = acquire("released", "next", json!({"ttl_ms": 5_000})).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "lock-delay applied after a clean release: {body}"
    );
}

/// POSTs `body` to `api`, retrying 503s and transport errors for up to 60 s.
async fn post_retry(
    http: &reqwest::Client,
    api: &str,
    path: &str,
    body: Value,
    timeout: Duration,
) -> (StatusCode, Value) {
    let deadline = Instant::now() + Duration::from_secs(60) + timeout;
    loop {
        let resp = http
            .post(format!("http://{api}{path}"))
            .timeout(timeout)
            .json(&body)
            .send()
            .await;
        let (status, value) = match resp {
            Ok(r) => {
                let s = r.status();
                (s, r.json::<Value>().await.unwrap_or(Value::Null))
            }
            Err(e) => (
                StatusCode::BAD_GATEWAY,
                json!({"transport_error": e.to_string()}),
            ),
        };
        if status != StatusCode::SERVICE_UNAVAILABLE && status != StatusCode::BAD_GATEWAY {
            return (status, value);
        }
        assert!(
            Instant::now() < deadline,
            "POST {path} kept failing: {status} {value}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Milliseconds since the epoch of an RFC 3339 time from the API.
fn parse_ms(s: &str) -> i128 {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .expect("rfc3339");
    t.unix_timestamp_nanos() / 1_000_000
}
