//! The Tracker-compatible REST API on a real three-node cluster: every row of the
//! contract, concurrent creates, relays through followers, pagination, a leader killed
//! between create and unlock, and 503s in Tracker's shape without a leader.

mod common;

use std::time::{Duration, Instant};

use common::{TestCluster, READY_TIMEOUT};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn cluster() -> TestCluster {
    TestCluster::start().await
}

async fn create(c: &TestCluster, node: u64, body: Value) -> (StatusCode, Value) {
    c.call(node, Method::POST, "/api/v1alpha1/lock", Some(body))
        .await
}

async fn get(c: &TestCluster, node: u64, path: &str) -> (StatusCode, Value) {
    c.call(node, Method::GET, path, None).await
}

/// The live locks' total, read through `node`.
async fn total(c: &TestCluster, node: u64) -> u64 {
    let (status, body) = get(c, node, "/api/v1alpha1/locks/list").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["total"].as_u64().expect("total")
}

fn is_created_at(s: &str) -> bool {
    // 2024-01-15T10:00:00Z: whole seconds, UTC, with a Z.
    let b = s.as_bytes();
    b.len() == 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'Z'
        && s.chars()
            .enumerate()
            .all(|(i, ch)| [4, 7, 10, 13, 16, 19].contains(&i) || ch.is_ascii_digit())
}

fn assert_lock(v: &Value, service: &str, who: &str) -> String {
    let id = v["id"].as_str().expect("id is a string");
    assert!(id.parse::<u64>().is_ok(), "id {id} is a decimal token");
    assert_eq!(v["service"], service);
    assert_eq!(v["who"], who);
    let created = v["createdAt"].as_str().expect("createdAt");
    assert!(is_created_at(created), "createdAt {created}");
    assert_eq!(
        v.as_object().unwrap().len(),
        4,
        "exactly Tracker's fields: {v}"
    );
    id.to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn rest_rows_follow_the_tracker_contract() {
    let c = cluster().await;
    let leader = c.leader().await;
    let follower = c.other_than(leader);

    // Create through a follower (relayed to the leader); unknown fields are ignored.
    let (status, lock) = create(
        &c,
        follower,
        json!({"service": "deploy-web", "who": "pipeline", "extra": true}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{lock}");
    let id = assert_lock(&lock, "deploy-web", "pipeline");

    // Not re-entrant: the same who is refused like anyone else, with the holder.
    for who in ["pipeline", "someone-else"] {
        let (status, body) = create(&c, leader, json!({"service": "deploy-web", "who": who})).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["error"], "lock already exists");
        assert!(
            body.get("id").is_none(),
            "an error has no top-level id: {body}"
        );
        assert_eq!(body["existingLock"]["id"], id.as_str());
        assert_eq!(body["existingLock"]["who"], "pipeline");
        assert_eq!(body["existingLock"]["createdAt"], lock["createdAt"]);
    }

    // Get by id from every node.
    for node in c.running_ids() {
        let (status, got) = get(&c, node, &format!("/api/v1alpha1/lock/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{got}");
        assert_eq!(got, lock);
    }
    for bad in ["null", "abc", "-1", "999999999", "1.5", "%20"] {
        let (status, body) = get(&c, follower, &format!("/api/v1alpha1/lock/{bad}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "id {bad}: {body}");
        assert_eq!(body, json!({"error": "lock not found"}));
    }
    let (status, body) = get(&c, follower, "/api/v1alpha1/lock/").await;
    assert_eq!(
        (status, body),
        (StatusCode::NOT_FOUND, json!({"error": "lock not found"}))
    );

    // Bad input: 400 with an error, and nothing changes.
    let before = total(&c, leader).await;
    for body in [
        json!({"who": "a"}),
        json!({"service": "", "who": "a"}),
        json!({"service": "s"}),
        json!({"service": "s", "who": ""}),
        json!({"service": "team/app", "who": "a"}),
        json!({"service": "s", "who": 5}),
        json!({"service": "s", "who": "a", "ttl_ms": 1}),
        json!(["s", "a"]),
    ] {
        let (status, answer) = create(&c, follower, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(
            answer["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{answer}"
        );
        assert!(answer.get("id").is_none());
    }
    let (status, answer) = c
        .http
        .post(format!("http://{}/api/v1alpha1/lock", c.api(leader)))
        .body("service=s&who=a")
        .send()
        .await
        .map(|r| r.status())
        .map(|s| (s, ()))
        .expect("sent");
    assert_eq!((status, answer), (StatusCode::BAD_REQUEST, ()));
    let (status, body) = create(&c, leader, json!({"service": "team/app", "who": "a"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("not a valid Baton key"),
        "{body}"
    );
    assert_eq!(total(&c, leader).await, before);

    // Unlock through a follower (a write relayed as a GET), then it is gone.
    let (status, body) = get(&c, follower, &format!("/api/v1alpha1/unlock/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"success": true, "message": "Lock released successfully"})
    );
    for path in [
        format!("/api/v1alpha1/unlock/{id}"),
        "/api/v1alpha1/unlock/null".into(),
        "/api/v1alpha1/unlock/".into(),
        "/api/v1alpha1/unlock/12345678".into(),
    ] {
        let (status, body) = get(&c, follower, &path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_eq!(body, json!({"success": false, "message": "lock not found"}));
    }
    let (status, _) = get(&c, leader, &format!("/api/v1alpha1/lock/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Free again: the same who gets a new id.
    let (status, again) = create(
        &c,
        leader,
        json!({"service": "deploy-web", "who": "pipeline"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_ne!(again["id"], lock["id"]);

    // A Baton key held through Baton's own API is a lock to Tracker's clients too.
    let (status, _) = c.acquire(leader, "native", "svc", 30_000).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = create(&c, leader, json!({"service": "native", "who": "svc"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn list_pages_count_every_live_lock_and_concurrent_creates_give_one_200() {
    let c = cluster().await;
    let leader = c.leader().await;
    let follower = c.other_than(leader);
    for service in ["svc-d", "svc-b", "svc-e", "svc-a", "svc-c"] {
        let (status, body) = create(&c, follower, json!({"service": service, "who": "w"})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let mut seen = Vec::new();
    for page in 1..=3 {
        let (status, body) = get(
            &c,
            follower,
            &format!("/api/v1alpha1/locks/list?page={page}&per_page=2"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["total"], 5);
        assert_eq!(body["page"], page);
        assert_eq!(body["perPage"], 2);
        let locks = body["locks"].as_array().unwrap();
        assert_eq!(locks.len(), if page == 3 { 1 } else { 2 });
        for l in locks {
            assert_lock(l, l["service"].as_str().unwrap(), "w");
            seen.push(l["service"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(seen, ["svc-a", "svc-b", "svc-c", "svc-d", "svc-e"]);
    let (status, body) = get(&c, leader, "/api/v1alpha1/locks/list").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (body["page"].clone(), body["perPage"].clone()),
        (json!(1), json!(100))
    );
    let (_, body) = get(&c, leader, "/api/v1alpha1/locks/list?page=9&per_page=2").await;
    assert_eq!(
        (body["locks"].clone(), body["total"].clone()),
        (json!([]), json!(5))
    );
    for bad in [
        "page=0",
        "per_page=0",
        "per_page=1001",
        "page=-1",
        "page=x",
        "page=1&page=2",
    ] {
        let (status, body) = get(&c, follower, &format!("/api/v1alpha1/locks/list?{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(body["error"].is_string(), "{body}");
    }

    // A lock created with the ttl_ms extension is freed when its lease ends.
    let (status, short) = create(
        &c,
        leader,
        json!({"service": "short", "who": "w", "ttl_ms": 300}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{short}");
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let (status, _) = get(
            &c,
            leader,
            &format!("/api/v1alpha1/lock/{}", short["id"].as_str().unwrap()),
        )
        .await;
        if status == StatusCode::NOT_FOUND {
            break;
        }
        assert!(Instant::now() < deadline, "the short lock never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(total(&c, leader).await, 5);
    concurrent_creates_give_exactly_one_200(&c).await;
    assert_eq!(total(&c, leader).await, 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn unlock_after_the_leader_is_killed_releases_the_lock() {
    let mut c = cluster().await;
    let leader = c.leader().await;
    let (status, lock) = create(&c, leader, json!({"service": "migrate", "who": "job"})).await;
    assert_eq!(status, StatusCode::OK, "{lock}");
    let id = lock["id"].as_str().unwrap().to_string();
    c.kill(leader);
    let survivor = c.other_than(leader);
    let (status, got) = c
        .call_retry(
            survivor,
            Method::GET,
            &format!("/api/v1alpha1/lock/{id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got, lock);
    let (status, body) = c
        .call_retry(
            survivor,
            Method::GET,
            &format!("/api/v1alpha1/unlock/{id}"),
            None,
        )
        .await;
    // A retried unlock may find the lock released by its own lost first attempt.
    assert!(
        status == StatusCode::OK || status == StatusCode::NOT_FOUND,
        "{status} {body}"
    );
    let (status, _) = c
        .call_retry(
            survivor,
            Method::GET,
            &format!("/api/v1alpha1/lock/{id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, again) = c
        .call_retry(
            survivor,
            Method::POST,
            "/api/v1alpha1/lock",
            Some(json!({"service": "migrate", "who": "job"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_without_a_leader_answers_503_in_tracker_shape() {
    let mut c = cluster().await;
    let leader = c.leader().await;
    let follower = c.other_than(leader);
    let (status, lock) = create(&c, leader, json!({"service": "s", "who": "w"})).await;
    assert_eq!(status, StatusCode::OK);
    for id in c.running_ids() {
        if id != follower {
            c.kill(id);
        }
    }
    for (method, path, body) in [
        (
            Method::POST,
            "/api/v1alpha1/lock".to_string(),
            Some(json!({"service": "t", "who": "w"})),
        ),
        (
            Method::GET,
            format!("/api/v1alpha1/lock/{}", lock["id"].as_str().unwrap()),
            None,
        ),
        (
            Method::GET,
            format!("/api/v1alpha1/unlock/{}", lock["id"].as_str().unwrap()),
            None,
        ),
        (Method::GET, "/api/v1alpha1/locks/list".to_string(), None),
    ] {
        let r = c
            .http
            .request(method.clone(), format!("http://{}{path}", c.api(follower)))
            .json(&body)
            .send()
            .await
            .expect("the survivor answers");
        assert_eq!(
            r.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "{method} {path}"
        );
        assert!(r.headers().contains_key("retry-after"));
        assert_eq!(r.headers()["content-type"], "application/json");
        let body: Value = r.json().await.unwrap();
        assert!(
            body["error"].is_string() && body.get("id").is_none(),
            "{body}"
        );
    }
}

/// Eight creates at once through all nodes: exactly one 200, seven 409s, whether
/// the `who`s differ or are all the same.
async fn concurrent_creates_give_exactly_one_200(c: &TestCluster) {
    let ids = c.running_ids();
    for (round, same_who) in [(0, false), (1, true)] {
        let service = format!("race-{round}");
        let mut tasks = Vec::new();
        for i in 0..8 {
            let node = ids[i % ids.len()];
            let who = if same_who {
                "pipeline".to_string()
            } else {
                format!("p{i}")
            };
            let body = json!({"service": service, "who": who});
            let url = format!("http://{}/api/v1alpha1/lock", c.api(node));
            let http = c.http.clone();
            tasks.push(tokio::spawn(async move {
                let r = http.post(url).json(&body).send().await.expect("sent");
                r.status()
            }));
        }
        let mut statuses = Vec::new();
        for t in tasks {
            statuses.push(t.await.unwrap());
        }
        let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
        let conflict = statuses
            .iter()
            .filter(|s| **s == StatusCode::CONFLICT)
            .count();
        assert_eq!((ok, conflict), (1, 7), "same who: {same_who}: {statuses:?}");
    }
}
