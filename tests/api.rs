//! Every bad input gets its problem+json code and changes nothing.

mod common;

use common::TestCluster;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// One raw request; retries while the answer is 503 (no leader during an election on a
/// busy machine) so that the test checks validation, not timing.
async fn raw(
    cluster: &TestCluster,
    node: u64,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: &str,
) -> (StatusCode, String, Value) {
    let deadline = std::time::Instant::now() + common::READY_TIMEOUT;
    loop {
        let mut req = cluster.http.request(
            method.clone(),
            format!("http://{}{}", cluster.api(node), path),
        );
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let resp = req.body(body.to_string()).send().await.expect("send");
        let status = resp.status();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let value = resp.json().await.unwrap_or(Value::Null);
        if status != StatusCode::SERVICE_UNAVAILABLE || std::time::Instant::now() > deadline {
            return (status, ct, value);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// method, path, content type, body, expected status, expected code
type Case = (
    Method,
    String,
    Option<&'static str>,
    String,
    StatusCode,
    &'static str,
);

async fn state_digest(cluster: &TestCluster, node: u64) -> Value {
    let (status, page) = cluster
        .call_retry(node, Method::GET, "/v1/locks?limit=1000", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["locks"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_their_codes_and_change_nothing() {
    let cluster = TestCluster::start().await;
    let leader = cluster.leader().await;
    let follower = cluster.other_than(leader);
    let (status, grant) = cluster.acquire(leader, "existing", "owner-a", 60_000).await;
    assert_eq!(status, StatusCode::OK, "{grant}");
    let token = grant["token"].as_u64().expect("token");
    let before = state_digest(&cluster, leader).await;

    let json_ct = Some("application/json");
    let long_key = "k".repeat(256);
    let long_owner = "o".repeat(256);
    let huge = format!("{{\"owner\":\"{}\"}}", "x".repeat(20_000));
    let cases: Vec<Case> = vec![
        (
            Method::POST,
            "/v1/locks/bad%2Fkey/acquire".into(),
            json_ct,
            r#"{"owner":"a"}"#.into(),
            StatusCode::BAD_REQUEST,
            "INVALID_KEY",
        ),
        (
            Method::POST,
            "/v1/locks/sp%20ace/acquire".into(),
            json_ct,
            r#"{"owner":"a"}"#.into(),
            StatusCode::BAD_REQUEST,
            "INVALID_KEY",
        ),
        (
            Method::POST,
            format!("/v1/locks/{long_key}/acquire"),
            json_ct,
            r#"{"owner":"a"}"#.into(),
            StatusCode::BAD_REQUEST,
            "INVALID_KEY",
        ),
        (
            Method::GET,
            "/v1/locks/%C3%A9t%C3%A9".into(),
            None,
            String::new(),
            StatusCode::BAD_REQUEST,
            "INVALID_KEY",
        ),
        (
            Method::POST,
            "/v1/locks/k/acquire".into(),
            json_ct,
            "{not json".into(),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            Method::POST,
            "/v1/locks/k/acquire".into(),
            json_ct,
            r#"{"owner":"a","extra":1}"#.into(),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            Method::POST,
            "/v1/locks/k/acquire".into(),
            json_ct,
            r#"{"owner":5}"#.into(),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            Method::POST,
            "/v1/locks/k/acquire".into(),
            json_ct,
            r#"{}"#.into(),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            Method::POST,
            "/v1/locks/k/acquire".into(),
            json_ct,
            r#"{"owner":""}"#.into(),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            Method::POST,
            "/v1/locks/k/acquire".into(),
            json_ct,
            format!(r#"{{"owner":"{long_owner}"}}"#),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            Method::POST,
            "/v1/locks/k/acquire".into(),
            json_ct,
            "{\"owner\":\"tab\\there\"}".into(),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            Method::POST,
            "/v1/locks/k/acquire".into(),
            json_ct,
            r#"{"owner":"a","ttl_ms":10}"#.into(),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            Method::POST,
            "/v1/locks/k/acquire".into(),
            json_ct,
            r#"{"owner":"a","ttl_ms":999999999999}"#.into(),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            Method::POST,
            "/v1/locks/k/acquire".into(),
            json_ct,
            r#"{"owner":"a","ttl_ms":-1}"#.into(),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            Method::POST,
            "/v1/locks/k/acquire".into(),
            json_ct,
            r#"{"owner":"a","wait_ms":999999999999}"#.into(),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            Method::POST,
            "/v1/locks/k/acquire".into(),
            json_ct,
            r#"{"owner":"a","lock_delay_ms":999999999}"#.into(),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            Method::POST,
            "/v1/locks/k/cancel".into(),
            json_ct,
            r#"{"owner":"a","reason":"bored"}"#.into(),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            Method::GET,
            "/v1/locks/bad%20key/events".into(),
            None,
            String::new(),
            StatusCode::BAD_REQUEST,
            "INVALID_KEY",
        ),
        (
            Method::POST,
            "/v1/locks/k/acquire".into(),
            None,
            r#"{"owner":"a"}"#.into(),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            Method::POST,
            "/v1/locks/k/acquire".into(),
            json_ct,
            huge,
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
        ),
        (
            Method::POST,
            "/v1/locks/existing/renew".into(),
            json_ct,
            r#"{"token":"1"}"#.into(),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            Method::POST,
            "/v1/locks/existing/renew".into(),
            json_ct,
            format!(r#"{{"token":{}}}"#, token + 1000),
            StatusCode::CONFLICT,
            "LOCK_LOST",
        ),
        (
            Method::POST,
            "/v1/locks/existing/release".into(),
            json_ct,
            format!(r#"{{"token":{token},"owner":"owner-a"}}"#),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            Method::POST,
            "/v1/locks/existing/release".into(),
            json_ct,
            r#"{}"#.into(),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            Method::POST,
            "/v1/locks/existing/release".into(),
            json_ct,
            r#"{"owner":"someone-else"}"#.into(),
            StatusCode::FORBIDDEN,
            "NOT_OWNER",
        ),
        (
            Method::POST,
            "/v1/locks/existing/acquire".into(),
            json_ct,
            r#"{"owner":"owner-b"}"#.into(),
            StatusCode::CONFLICT,
            "LOCK_HELD",
        ),
        (
            Method::GET,
            "/v1/locks/missing".into(),
            None,
            String::new(),
            StatusCode::NOT_FOUND,
            "LOCK_NOT_FOUND",
        ),
        (
            Method::GET,
            "/v1/locks?limit=0".into(),
            None,
            String::new(),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            Method::GET,
            "/v1/locks?limit=abc".into(),
            None,
            String::new(),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            Method::GET,
            "/v1/locks?bogus=1".into(),
            None,
            String::new(),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            Method::GET,
            "/v1/locks?prefix=a/b".into(),
            None,
            String::new(),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            Method::GET,
            "/v1/locks/existing?consistency=eventual".into(),
            None,
            String::new(),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            Method::GET,
            "/v1/nope".into(),
            None,
            String::new(),
            StatusCode::NOT_FOUND,
            "INVALID_REQUEST",
        ),
        (
            Method::PUT,
            "/v1/locks/existing".into(),
            None,
            String::new(),
            StatusCode::METHOD_NOT_ALLOWED,
            "INVALID_REQUEST",
        ),
    ];
    for node in [leader, follower] {
        for (method, path, ct, body, want_status, want_code) in &cases {
            let (status, content_type, problem) =
                raw(&cluster, node, method.clone(), path, *ct, body).await;
            let what = format!(
                "node {node}: {method} {path} {}",
                &body.chars().take(60).collect::<String>()
            );
            assert_eq!(status, *want_status, "{what}: {problem}");
            assert_eq!(problem["code"], json!(want_code), "{what}: {problem}");
            assert_eq!(content_type, "application/problem+json", "{what}");
            assert_eq!(
                problem["status"],
                json!(want_status.as_u16()),
                "{what}: {problem}"
            );
            assert!(
                problem["title"].is_string() && problem["detail"].is_string(),
                "{what}: {problem}"
            );
        }
    }
    assert_eq!(
        state_digest(&cluster, leader).await,
        before,
        "a bad request changed state"
    );

    // Release semantics that are not errors.
    let (status, r) = cluster
        .call_retry(
            follower,
            Method::POST,
            "/v1/locks/existing/release",
            Some(json!({"token": token + 1})),
        )
        .await;
    assert_eq!(
        (status, &r["released"], &r["reason"]),
        (StatusCode::OK, &json!(false), &json!("token_mismatch")),
        "{r}"
    );
    let (status, r) = cluster
        .call_retry(
            follower,
            Method::POST,
            "/v1/locks/never-held/release",
            Some(json!({"token": 1})),
        )
        .await;
    assert_eq!(
        (status, &r["released"], &r["reason"]),
        (StatusCode::OK, &json!(false), &json!("not_held")),
        "{r}"
    );
    let (status, v) = cluster
        .call_retry(
            follower,
            Method::POST,
            "/v1/locks/existing/validate",
            Some(json!({"token": token})),
        )
        .await;
    assert_eq!((status, &v["valid"]), (StatusCode::OK, &json!(true)), "{v}");
    let (status, r) = cluster
        .call_retry(follower, Method::DELETE, "/v1/locks/existing", None)
        .await;
    assert_eq!(
        (status, &r["released"]),
        (StatusCode::OK, &json!(true)),
        "{r}"
    );
    let (status, v) = cluster
        .call_retry(
            leader,
            Method::POST,
            "/v1/locks/existing/validate",
            Some(json!({"token": token})),
        )
        .await;
    assert_eq!(
        (status, &v["valid"], &v.get("current_token")),
        (StatusCode::OK, &json!(false), &None),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_is_idempotent_for_its_owner_and_leases_expire() {
    let cluster = TestCluster::start().await;
    let (status, first) = cluster.acquire(1, "idem", "me", 300).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let (status, again) = cluster.acquire(2, "idem", "me", 300).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(first["token"], again["token"]);
    // After the lease runs out (and a sweep), another owner gets a larger token.
    let deadline = std::time::Instant::now() + common::READY_TIMEOUT;
    loop {
        let (status, other) = cluster.acquire(3, "idem", "other", 300).await;
        if status == StatusCode::OK {
            assert!(
                other["token"].as_u64() > first["token"].as_u64(),
                "{other} vs {first}"
            );
            break;
        }
        assert_eq!(status, StatusCode::CONFLICT, "{other}");
        assert!(std::time::Instant::now() < deadline, "lease never expired");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_paginates_with_a_cursor() {
    let cluster = TestCluster::start().await;
    for i in 0..7 {
        let (status, g) = cluster.acquire(1, &format!("page-{i}"), "o", 60_000).await;
        assert_eq!(status, StatusCode::OK, "{g}");
    }
    let (_, g) = cluster.acquire(1, "other-prefix", "o", 60_000).await;
    assert!(g["token"].is_u64());
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/locks?prefix=page-&limit=3&cursor={c}"),
            None => "/v1/locks?prefix=page-&limit=3".to_string(),
        };
        let (status, page) = cluster.call_retry(2, Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for l in page["locks"].as_array().expect("locks") {
            seen.push(l["key"].as_str().expect("key").to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let want: Vec<String> = (0..7).map(|i| format!("page-{i}")).collect();
    assert_eq!(seen, want);
}
