//! Requests that try to leave lock state behind or change a lock nobody named: waiting
//! acquires whose client hangs up at once, dot segments in paths, and floods that reach
//! the quotas. Each test performs the attack on real nodes, then checks that `/healthz`
//! still answers and that the state is what it was.

mod common;

use std::time::{Duration, Instant};

use common::sse::SseReader;
use common::{Options, TestCluster};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Bound for "answers promptly" on a slow, busy machine (the target is far lower).
const PROMPTLY: Duration = Duration::from_secs(5);
/// How long state may take to settle after an attack (polled, not slept).
const SETTLE: Duration = Duration::from_secs(20);

/// `GET /healthz` on a fresh connection answers 200 within [`PROMPTLY`].
async fn assert_healthy(api: &str) {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(PROMPTLY)
        .build()
        .expect("client");
    let r = http
        .get(format!("http://{api}/healthz"))
        .send()
        .await
        .expect("healthz answers after the attack");
    assert_eq!(r.status(), StatusCode::OK);
}

/// Sends one request on a fresh connection and closes it without reading an answer.
async fn send_and_hang_up(api: &str, method: &str, target: &str, body: &str) {
    let mut s = TcpStream::connect(api).await.expect("connect");
    let req = format!(
        "{method} {target} HTTP/1.1\r\nhost: {api}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("send");
    drop(s);
}

/// One request with its raw target (no client-side normalisation); status and body.
async fn raw_request(api: &str, method: &str, target: &str, body: &str) -> (u16, String) {
    use tokio::io::AsyncReadExt;
    let mut s = TcpStream::connect(api).await.expect("connect");
    let req = format!(
        "{method} {target} HTTP/1.1\r\nhost: {api}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut answer))
        .await
        .expect("an answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

/// The lock on `key` as the leader sees it, with its whole queue.
async fn lock_view(cluster: &TestCluster, leader: u64, key: &str) -> (StatusCode, Value) {
    cluster
        .call(
            leader,
            Method::GET,
            &format!("/v1/locks/{key}?waiters=true&waiters_limit=1000"),
            None,
        )
        .await
}

/// Regression (issue 13 item 6): a waiting acquire whose client hung up right after
/// sending stayed in the queue (10 of 10 to the leader, 1 of 10 through a follower) and
/// was later granted a lock nobody held. 100 such requests to the leader and 100
/// through a follower leave no waiter, and no attacker ever holds the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_acquires_whose_client_hangs_up_leave_no_waiter_and_no_grant() {
    let cluster = TestCluster::start().await;
    let leader = cluster.leader().await;
    let follower = cluster.other_than(leader);
    let (status, holder) = cluster.acquire(leader, "hung", "holder", 60_000).await;
    assert_eq!(status, StatusCode::OK, "{holder}");
    let mut events = SseReader::open(
        &cluster.http,
        &format!("http://{}/v1/locks/hung/events", cluster.api(leader)),
        None,
    )
    .await;

    for (node, tag) in [(leader, "l"), (follower, "f")] {
        let api = cluster.api(node).to_string();
        for i in 0..100 {
            let body = json!({"owner": format!("{tag}{i}"), "ttl_ms": 60_000, "wait_ms": 30_000});
            send_and_hang_up(&api, "POST", "/v1/locks/hung/acquire", &body.to_string()).await;
        }
        assert_healthy(&api).await;
    }

    // Every attacker that got queued is taken out again; the attack did reach the queue.
    let deadline = Instant::now() + SETTLE;
    let (mut queued, mut cancelled) = (0, 0);
    loop {
        let (status, view) = lock_view(&cluster, leader, "hung").await;
        assert_eq!(status, StatusCode::OK, "{view}");
        assert_eq!(view["token"], holder["token"], "the holder kept its lock");
        while let Some(m) = events.next(Duration::from_millis(50)).await {
            match m.event.as_str() {
                "queued" => queued += 1,
                "wait_cancelled" => cancelled += 1,
                "renewed" | "acquired" | "released" | "force_released" | "expired" => {
                    panic!("the attack changed the holder: {m:?}")
                }
                _ => {}
            }
        }
        if view["waiters"] == 0 && queued > 0 && queued == cancelled {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "waiters left behind: {view}; {queued} queued, {cancelled} cancelled"
        );
    }
    // No grant appears later either: releasing the holder frees the key outright.
    let token = holder["token"].as_u64().expect("a token");
    let (status, body) = cluster
        .call(
            leader,
            Method::POST,
            "/v1/locks/hung/release",
            Some(json!({"token": token})),
        )
        .await;
    assert_eq!((status, &body["released"]), (StatusCode::OK, &json!(true)));
    let (status, probe) = cluster.acquire(follower, "hung", "probe", 60_000).await;
    assert_eq!(status, StatusCode::OK, "{probe}");
    assert_eq!(probe["owner"], "probe");
}

/// Regression (issue 13 item 7): `DELETE /v1/locks/x/../victim` was 404 on the leader,
/// but a follower relayed it normalised to `/v1/locks/victim` and the leader
/// force-released `victim`; keys `.` and `..` worked on the leader only. Every node now
/// gives a dot segment the same 400, and `victim` keeps its holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_mean_the_same_on_every_node_and_touch_no_lock() {
    let cluster = TestCluster::start().await;
    let leader = cluster.leader().await;
    let follower = cluster.other_than(leader);
    let (status, victim) = cluster.acquire(leader, "victim", "owner-v", 60_000).await;
    assert_eq!(status, StatusCode::OK, "{victim}");
    let acquire = r#"{"owner":"dots","ttl_ms":60000}"#;
    let attacks = [
        ("DELETE", "/v1/locks/x/../victim", "", "INVALID_REQUEST"),
        ("DELETE", "/v1/locks/x/%2e%2E/victim", "", "INVALID_REQUEST"),
        (
            "POST",
            "/v1/locks/victim/x/../release",
            r#"{"owner":"owner-v"}"#,
            "INVALID_REQUEST",
        ),
        ("DELETE", "/v1/locks/..", "", "INVALID_KEY"),
        ("POST", "/v1/locks/./acquire", acquire, "INVALID_KEY"),
        ("POST", "/v1/locks/../acquire", acquire, "INVALID_KEY"),
        ("POST", "/v1/locks/%2E/acquire", acquire, "INVALID_KEY"),
        ("GET", "/v1/locks/..", "", "INVALID_KEY"),
    ];
    for node in [leader, follower] {
        let api = cluster.api(node).to_string();
        for (method, target, body, code) in attacks {
            let (status, answer) = raw_request(&api, method, target, body).await;
            let problem: Value = serde_json::from_str(&answer)
                .unwrap_or_else(|e| panic!("{method} {target} on {node}: {e}: {answer:?}"));
            assert_eq!(
                (status, problem["code"].as_str()),
                (400, Some(code)),
                "{method} {target} on node {node}: {answer}"
            );
        }
        assert_healthy(&api).await;
    }
    for node in [leader, follower] {
        let (status, view) = cluster
            .call(node, Method::GET, "/v1/locks/victim", None)
            .await;
        assert_eq!(status, StatusCode::OK, "{view}");
        assert_eq!(
            (&view["owner"], &view["token"]),
            (&victim["owner"], &victim["token"])
        );
    }
    // Keys made of dots elsewhere in the name are keys like any other, on every node.
    for (node, key) in [(leader, "..."), (follower, "a..b")] {
        let (status, body) = cluster.acquire(node, key, "dots", 60_000).await;
        assert_eq!(status, StatusCode::OK, "{key} on node {node}: {body}");
    }
}

/// Starts a waiting acquire that stays open; abort the task to hang up.
fn spawn_waiting_acquire(
    http: &reqwest::Client,
    api: &str,
    key: &str,
    owner: &str,
) -> tokio::task::JoinHandle<(StatusCode, Option<String>, Value)> {
    let req = http
        .post(format!("http://{api}/v1/locks/{key}/acquire"))
        .json(&json!({"owner": owner, "ttl_ms": 60_000, "wait_ms": 60_000}));
    tokio::spawn(async move {
        match req.send().await {
            Ok(r) => {
                let status = r.status();
                let retry_after = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                (status, retry_after, r.json().await.unwrap_or(Value::Null))
            }
            Err(e) => (
                StatusCode::BAD_GATEWAY,
                None,
                json!({"transport_error": e.to_string()}),
            ),
        }
    })
}

/// Regression (issue 13 item 8): 1,000 waiting acquires built a queue of 544, and
/// `?waiters=true` answered 194 KB. With the waiter quotas, 1,000 waiting acquires on
/// two held keys (half through a follower) queue up to the caps and the rest get 429
/// `QUEUE_FULL` at once; the queue is listed a page at a time; the lock quota refuses
/// a new key; the holders keep their locks; and hanging up empties the queues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiter_and_lock_floods_stop_at_the_quotas() {
    let cluster = TestCluster::start_with(Options {
        api_extra: "max_waiters_per_key = 50\nmax_waiters = 80\nmax_locks = 40".into(),
        ..Options::default()
    })
    .await;
    let leader = cluster.leader().await;
    let follower = cluster.other_than(leader);
    let mut holders = Vec::new();
    for key in ["q1", "q2"] {
        let (status, g) = cluster.acquire(leader, key, "holder", 60_000).await;
        assert_eq!(status, StatusCode::OK, "{g}");
        holders.push(g);
    }
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(90))
        .build()
        .expect("client");
    let mut tasks = Vec::new();
    for (key, n) in [("q1", 500), ("q2", 500)] {
        for i in 0..n {
            let node = if i % 2 == 0 { leader } else { follower };
            let owner = format!("{key}-w{i}");
            tasks.push(spawn_waiting_acquire(&http, cluster.api(node), key, &owner));
        }
    }
    // The refused ones answer at once; the admitted ones stay queued.
    let deadline = Instant::now() + SETTLE;
    loop {
        let refused = tasks.iter().filter(|t| t.is_finished()).count();
        let (_, q1) = lock_view(&cluster, leader, "q1").await;
        let (_, q2) = lock_view(&cluster, leader, "q2").await;
        let queued = (
            q1["waiters"].as_u64().unwrap_or(0),
            q2["waiters"].as_u64().unwrap_or(0),
        );
        assert!(
            queued.0 <= 50 && queued.1 <= 50,
            "over the per-key cap: {queued:?}"
        );
        assert!(queued.0 + queued.1 <= 80, "over the total cap: {queued:?}");
        if refused == 1_000 - 80 && queued.0 + queued.1 == 80 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{refused} refused, queued {queued:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for t in tasks.iter_mut().filter(|t| t.is_finished()) {
        let (status, retry_after, body) = t.await.expect("task");
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        assert_eq!(body["code"], "QUEUE_FULL", "{body}");
        assert!(retry_after.is_some(), "429 carries Retry-After");
    }
    assert_healthy(cluster.api(leader)).await;
    assert_healthy(cluster.api(follower)).await;

    // `?waiters=true` pages through the queue in order, 20 at a time.
    let mut owners = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/v1/locks/q1?waiters=true&waiters_limit=20".to_string();
        if let Some(c) = &cursor {
            path.push_str(&format!("&waiters_cursor={c}"));
        }
        let (status, page) = cluster.call(follower, Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let list = page["waiter_list"].as_array().expect("a waiter list");
        assert!(list.len() <= 20);
        owners.extend(
            list.iter()
                .map(|w| w["owner"].as_str().unwrap_or("").to_string()),
        );
        match page["waiters_next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let unique: std::collections::BTreeSet<&String> = owners.iter().collect();
    let (_, q1) = lock_view(&cluster, leader, "q1").await;
    let expected = q1["waiters"].as_u64().expect("a count") as usize;
    assert!(expected > 20, "a queue of {expected} takes one page");
    assert_eq!(
        (owners.len(), unique.len()),
        (expected, expected),
        "{owners:?}"
    );

    // The lock quota: 40 stored keys (q1 and q2 among them), then 429 TOO_MANY_LOCKS.
    for i in 0..38 {
        let (status, body) = cluster
            .acquire(follower, &format!("l-{i}"), "many", 60_000)
            .await;
        assert_eq!(status, StatusCode::OK, "l-{i}: {body}");
    }
    let (status, body) = cluster.acquire(follower, "l-38", "many", 60_000).await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::TOO_MANY_REQUESTS, &json!("TOO_MANY_LOCKS")),
        "{body}"
    );
    let (status, body) = cluster.acquire(leader, "l-0", "many", 60_000).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the owner of a stored key renews at the cap: {body}"
    );

    // Hanging up takes every waiter out; the holders never changed.
    for t in &tasks {
        t.abort();
    }
    let deadline = Instant::now() + SETTLE;
    loop {
        let (_, q1) = lock_view(&cluster, leader, "q1").await;
        let (_, q2) = lock_view(&cluster, leader, "q2").await;
        for (view, holder) in [(&q1, &holders[0]), (&q2, &holders[1])] {
            assert_eq!(view["token"], holder["token"], "{view}");
        }
        if q1["waiters"] == 0 && q2["waiters"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "waiters left: {q1} {q2}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Regression (issue 13 item 8): nothing capped event streams, and 200 `POST
/// /v1/cluster/snapshot` calls built 9 full snapshots. Streams beyond
/// `api.max_event_streams` get 503 `TOO_MANY_STREAMS`; 200 snapshot calls at once are
/// all answered by at most two builds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_and_snapshot_floods_are_capped_and_coalesced() {
    let cluster = TestCluster::start_with(Options {
        api_extra: "max_event_streams = 20".into(),
        ..Options::default()
    })
    .await;
    let leader = cluster.leader().await;
    let follower = cluster.other_than(leader);
    for i in 0..200 {
        let (status, body) = cluster
            .acquire(leader, &format!("s-{i}"), "o", 60_000)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let api = cluster.api(follower).to_string();
    let url = format!("http://{api}/v1/locks/s-0/events");
    let mut streams = Vec::new();
    for _ in 0..20 {
        streams.push(SseReader::open(&cluster.http, &url, None).await);
    }
    let refused = cluster.http.get(&url).send().await.expect("an answer");
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.expect("problem+json");
    assert_eq!(body["code"], "TOO_MANY_STREAMS", "{body}");
    assert_healthy(&api).await;
    drop(streams.pop());
    let deadline = Instant::now() + SETTLE;
    loop {
        let r = cluster.http.get(&url).send().await.expect("an answer");
        if r.status() == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a closed stream's place never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let calls: Vec<_> = (0..200)
        .map(|_| {
            let req = cluster
                .http
                .post(format!("http://{api}/v1/cluster/snapshot"))
                .timeout(Duration::from_secs(60));
            tokio::spawn(async move {
                let r = req.send().await.expect("snapshot answers");
                (r.status(), r.json::<Value>().await.unwrap_or(Value::Null))
            })
        })
        .collect();
    let mut built = 0;
    for c in calls {
        let (status, body) = c.await.expect("task");
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body["snapshot_index"].as_u64() >= Some(200), "{body}");
        built += usize::from(body["built"] == true);
    }
    assert!((1..=2).contains(&built), "200 calls started {built} builds");
    assert_healthy(&api).await;
    let (status, view) = cluster
        .call(leader, Method::GET, "/v1/locks/s-7", None)
        .await;
    assert_eq!((status, &view["owner"]), (StatusCode::OK, &json!("o")));
}
