//! The HTTP API where it needs a real cluster: requests relayed by a follower keep their
//! codes and change nothing, and a leader cut off from its quorum answers
//! `OUTCOME_UNKNOWN` and `NO_LEADER`. Every code on a single node, one row per bad
//! input, and the success shapes are in `tests/api_inprocess.rs`.

mod common;

use common::{Options, TestCluster};
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

/// A follower relays leader-only requests byte for byte (body, content type, query);
/// the leader's answer, error or not, comes back unchanged. One row per code and per
/// place a bad input is caught: the follower's relay (body limit), the leader's
/// extractors, its handlers and the lock rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_relays_requests_and_their_problems_unchanged() {
    let cluster = TestCluster::start().await;
    let leader = cluster.leader().await;
    let follower = cluster.other_than(leader);
    let third = cluster
        .running_ids()
        .into_iter()
        .find(|id| *id != leader && *id != follower)
        .expect("a third node");
    let (status, grant) = cluster
        .acquire(follower, "existing", "owner-a", 60_000)
        .await;
    assert_eq!(status, StatusCode::OK, "{grant}");
    let token = grant["token"].as_u64().expect("token");
    // The owner's retry through another follower gets the same grant.
    let (status, again) = cluster.acquire(third, "existing", "owner-a", 60_000).await;
    assert_eq!(
        (status, &again["token"]),
        (StatusCode::OK, &json!(token)),
        "{again}"
    );
    let before = state_digest(&cluster, leader).await;

    let json_ct = Some("application/json");
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
            "/v1/locks/k/acquire".into(),
            json_ct,
            "{not json".into(),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
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
            r#"{"owner":"a","ttl_ms":10}"#.into(),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
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
            "/v1/locks/existing?consistency=eventual".into(),
            None,
            String::new(),
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
            "/v1/locks/existing/acquire".into(),
            json_ct,
            r#"{"owner":"owner-b"}"#.into(),
            StatusCode::CONFLICT,
            "LOCK_HELD",
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
            r#"{"owner":"someone-else"}"#.into(),
            StatusCode::FORBIDDEN,
            "NOT_OWNER",
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
            "/v1/locks/missing?consistency=local".into(),
            None,
            String::new(),
            StatusCode::NOT_FOUND,
            "LOCK_NOT_FOUND",
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
    for (method, path, ct, body, want_status, want_code) in &cases {
        let (status, content_type, problem) =
            raw(&cluster, follower, method.clone(), path, *ct, body).await;
        let what = format!(
            "node {follower}: {method} {path} {}",
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
    assert_eq!(
        state_digest(&cluster, leader).await,
        before,
        "a bad request changed state"
    );

    // Relayed reads and writes that succeed.
    let (status, page) = cluster
        .call_retry(
            follower,
            Method::GET,
            "/v1/locks?prefix=exist&limit=1",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["locks"][0]["token"], json!(token), "{page}");
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

/// With both followers gone, the leader cannot commit or confirm its leadership: a
/// write may or may not happen later (`OUTCOME_UNKNOWN`), a linearizable read has no
/// answer (`NO_LEADER`); both say `Retry-After`. Local reads are still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_its_quorum_answers_outcome_unknown_and_no_leader() {
    // A short request timeout: it is how long the cut-off leader waits before answering.
    let mut cluster = TestCluster::start_with(Options {
        request_timeout_ms: 1_000,
        ..Options::default()
    })
    .await;
    let leader = cluster.leader().await;
    let (status, grant) = cluster.acquire(leader, "kept", "o", 60_000).await;
    assert_eq!(status, StatusCode::OK, "{grant}");
    for id in cluster.running_ids() {
        if id != leader {
            cluster.kill(id);
        }
    }
    let request = |method: Method, path: &'static str, body: Option<Value>| {
        let mut req = cluster
            .http
            .request(method, format!("http://{}{path}", cluster.api(leader)));
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move {
            let resp = req.send().await.expect("the leader answers");
            let retry_after = resp.headers().get("retry-after").cloned();
            (
                resp.status(),
                retry_after,
                resp.json::<Value>().await.expect("json"),
            )
        }
    };
    let (write, read) = tokio::join!(
        request(
            Method::POST,
            "/v1/locks/cut-off/acquire",
            Some(json!({"owner": "o"}))
        ),
        request(Method::GET, "/v1/locks/kept", None),
    );
    // Sent at once, the write is proposed before the leader notices its followers are
    // gone (OUTCOME_UNKNOWN); once it has noticed (half an election timeout without an
    // answer), it refuses without proposing (NO_LEADER, "no quorum: ...").
    for ((status, retry_after, problem), codes) in [
        (write, &["OUTCOME_UNKNOWN", "NO_LEADER"][..]),
        (read, &["NO_LEADER"][..]),
    ] {
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
        let code = problem["code"].as_str().unwrap_or_default();
        assert!(codes.contains(&code), "{problem}");
        assert!(retry_after.is_some(), "{code} without Retry-After");
    }
    let (status, lock) = cluster.get_local(leader, "kept").await;
    assert_eq!(
        (status, &lock["token"]),
        (StatusCode::OK, &grant["token"]),
        "{lock}"
    );
}

/// A relay to a paused leader (SIGSTOP: its sockets stay open, nothing answers) would
/// wait for it until the relay's timeout. Once another node leads, a read is relayed to
/// that node and a write is answered `OUTCOME_UNKNOWN` at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_to_a_paused_leader_ends_when_another_node_leads() {
    // Relays would wait 21 s for the paused leader; the client waits longer than that.
    let cluster = TestCluster::start_with(Options {
        request_timeout_ms: 20_000,
        ..Options::default()
    })
    .await;
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap();
    let old = cluster.leader().await;
    let follower = cluster.other_than(old);
    let (status, held) = cluster.acquire(old, "relayed", "holder", 600_000).await;
    assert_eq!(status, StatusCode::OK, "{held}");

    cluster.pause(old);
    // Sent at once: the follower still takes the paused node for the leader.
    let read = http
        .get(format!("http://{}/v1/locks/relayed", cluster.api(follower)))
        .send();
    let write = http
        .post(format!(
            "http://{}/v1/locks/other/acquire",
            cluster.api(follower)
        ))
        .json(&json!({"owner": "w", "ttl_ms": 60_000}))
        .send();
    let (read, write) = tokio::join!(read, write);
    cluster.resume(old);

    let read = read.expect("an answer to the read");
    let status = read.status();
    let body: Value = read.json().await.unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["owner"], "holder", "{body}");
    assert_eq!(body["token"], held["token"], "{body}");

    let write = write.expect("an answer to the write");
    let status = write.status();
    let body: Value = write.json().await.unwrap_or(Value::Null);
    // OK when the follower already knew the new leader as the write arrived.
    if status != StatusCode::OK {
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["code"], "OUTCOME_UNKNOWN", "{body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("stopped leading"), "{body}");
    }
}
