//! Access control on a real three-node cluster with `[auth] enabled`: each permission
//! on each endpoint, 401 for missing, unknown and malformed keys, ownership bound to
//! the application (directly and through a follower), release by key with `{}`, the
//! audited admin release, a forged relayed identity, and reloading the keys file.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use baton::auth::keys::hash_field;
use baton::auth::relayed;
use common::sse::SseReader;
use common::{Options, TestCluster, READY_TIMEOUT};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const LOCKER: &str = "key-locker-0123456789";
const OTHER: &str = "key-other-0123456789";
const READER: &str = "key-reader-0123456789";
const OPS: &str = "key-ops-0123456789";

fn keys_file() -> String {
    format!(
        "# test applications\n\
         locker {} lock=app: read=app:\n\
         other {} lock=app: read=app:\n\
         reader {} read=app:\n\
         ops {} admin=*\n",
        hash_field(LOCKER),
        hash_field(OTHER),
        hash_field(READER),
        hash_field(OPS)
    )
}

async fn cluster() -> TestCluster {
    TestCluster::start_with(Options {
        auth: Some((keys_file(), OPS.to_string())),
        ..Options::default()
    })
    .await
}

/// One request with `headers`; the status, and the JSON body (Null for none or for an
/// event stream, whose body is not read).
async fn send(
    c: &TestCluster,
    node: u64,
    method: Method,
    path: &str,
    headers: &[(&str, String)],
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = c
        .http
        .request(method, format!("http://{}{}", c.api(node), path));
    for (name, value) in headers {
        req = req.header(*name, value);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("an answer");
    let status = resp.status();
    let is_stream = resp
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if is_stream {
        return (status, Value::Null);
    }
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn bearer(key: &str) -> Vec<(&'static str, String)> {
    vec![("authorization", format!("Bearer {key}"))]
}

/// `send` with `key`, retrying 503s (a write during a leader change).
async fn as_app(
    c: &TestCluster,
    node: u64,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let (status, value) = send(c, node, method.clone(), path, &bearer(key), body.clone()).await;
        if status != StatusCode::SERVICE_UNAVAILABLE || Instant::now() > deadline {
            return (status, value);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_code(what: &str, got: &(StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(got.0, status, "{what}: {}", got.1);
    assert_eq!(got.1["code"], json!(code), "{what}: {}", got.1);
}

#[tokio::test]
async fn each_permission_opens_exactly_its_endpoints() {
    let c = cluster().await;
    let leader = c.leader().await;
    // (method, path, body, permission the endpoint needs: "lock", "read", "admin" on
    // the key, "admin*" on every key, "any" for any known key).
    let endpoints: Vec<(Method, String, Option<Value>, &str)> = vec![
        (
            Method::POST,
            "/v1/locks/{k}/acquire".into(),
            Some(json!({"owner": "m", "ttl_ms": 60000})),
            "lock",
        ),
        (
            Method::POST,
            "/v1/locks/{k}/renew".into(),
            Some(json!({"token": 1})),
            "lock",
        ),
        (
            Method::POST,
            "/v1/locks/{k}/release".into(),
            Some(json!({"token": 1})),
            "lock",
        ),
        (
            Method::POST,
            "/v1/locks/{k}/cancel".into(),
            Some(json!({"owner": "m"})),
            "lock",
        ),
        (Method::GET, "/v1/locks/{k}".into(), None, "read"),
        (
            Method::POST,
            "/v1/locks/{k}/validate".into(),
            Some(json!({"token": 1})),
            "read",
        ),
        (Method::GET, "/v1/locks?prefix={k}".into(), None, "read"),
        (
            Method::GET,
            "/v1/locks/{k}/events?after=0".into(),
            None,
            "read",
        ),
        (Method::GET, "/v1/events?prefix={k}".into(), None, "read"),
        (Method::DELETE, "/v1/locks/{k}".into(), None, "admin"),
        (Method::POST, "/v1/cluster/snapshot".into(), None, "admin*"),
        (
            Method::POST,
            "/v1/cluster/nodes/9/allow-rejoin".into(),
            None,
            "admin*",
        ),
        (Method::GET, "/v1/cluster".into(), None, "any"),
        (Method::GET, "/metrics".into(), None, "any"),
    ];
    // (application key, its permissions on keys under `app:`).
    let apps = [
        (LOCKER, &["lock", "read"][..]),
        (READER, &["read"][..]),
        (OPS, &["lock", "read", "admin", "admin*"][..]),
    ];
    for (key, perms) in apps {
        for inside in [true, false] {
            let k = if inside { "app:matrix" } else { "zz:matrix" };
            for (method, path, body, needs) in &endpoints {
                let path = path.replace("{k}", k);
                let allowed = *needs == "any" || (perms.contains(needs) && (inside || key == OPS));
                let got = as_app(&c, leader, key, method.clone(), &path, body.clone()).await;
                let what = format!("{key} {method} {path}");
                if allowed {
                    assert!(
                        got.0 != StatusCode::FORBIDDEN && got.0 != StatusCode::UNAUTHORIZED,
                        "{what} must be allowed: {} {}",
                        got.0,
                        got.1
                    );
                } else {
                    assert_code(&what, &got, StatusCode::FORBIDDEN, "FORBIDDEN");
                }
            }
        }
    }
    // X-API-Key works as well as Authorization: Bearer.
    let got = send(
        &c,
        leader,
        Method::GET,
        "/v1/locks?prefix=app:",
        &[("x-api-key", READER.to_string())],
        None,
    )
    .await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
}

#[tokio::test]
async fn a_missing_unknown_or_malformed_key_is_401_and_changes_nothing() {
    let c = cluster().await;
    let leader = c.leader().await;
    let follower = c.other_than(leader);
    let acquire = json!({"owner": "m", "ttl_ms": 60000});
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("missing", vec![]),
        ("unknown", bearer("key-nobody-0123456789")),
        ("unknown x-api-key", vec![("x-api-key", "nope".to_string())]),
        (
            "basic scheme",
            vec![("authorization", format!("Basic {LOCKER}"))],
        ),
        (
            "empty bearer",
            vec![("authorization", "Bearer ".to_string())],
        ),
        ("no scheme", vec![("authorization", LOCKER.to_string())]),
        (
            "two different keys",
            vec![
                ("authorization", format!("Bearer {LOCKER}")),
                ("x-api-key", OTHER.to_string()),
            ],
        ),
    ];
    for node in [leader, follower] {
        for (what, headers) in &cases {
            let got = send(
                &c,
                node,
                Method::POST,
                "/v1/locks/app:k/acquire",
                headers,
                Some(acquire.clone()),
            )
            .await;
            let what = format!("{what} on node {node}");
            assert_code(&what, &got, StatusCode::UNAUTHORIZED, "INVALID_API_KEY");
            assert_eq!(got.1["success"], json!(false), "{what}");
            assert_eq!(got.1["error"], json!("Invalid API key"), "{what}");
            let got = send(&c, node, Method::GET, "/v1/cluster", headers, None).await;
            assert_code(&what, &got, StatusCode::UNAUTHORIZED, "INVALID_API_KEY");
        }
        // The status page holds no data; it asks for a key in the browser.
        for open in ["/healthz", "/readyz", "/v1/openapi.json", "/ui"] {
            let got = send(&c, node, Method::GET, open, &[], None).await;
            assert_eq!(got.0, StatusCode::OK, "{open} stays open: {}", got.1);
        }
    }
    let got = as_app(&c, leader, OPS, Method::GET, "/v1/locks/app:k", None).await;
    assert_code(
        "nothing was acquired",
        &got,
        StatusCode::NOT_FOUND,
        "LOCK_NOT_FOUND",
    );
}

#[tokio::test]
async fn only_the_acquiring_application_renews_releases_or_cancels_directly_or_through_a_follower()
{
    let c = cluster().await;
    let leader = c.leader().await;
    let follower = c.other_than(leader);
    let got = as_app(
        &c,
        follower,
        LOCKER,
        Method::POST,
        "/v1/locks/app:x/acquire",
        Some(json!({"owner": "w1", "ttl_ms": 60000})),
    )
    .await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    let token = got.1["token"].as_u64().expect("token");
    for node in [leader, follower] {
        for (path, body) in [
            ("renew", json!({"token": token})),
            ("release", json!({"token": token})),
            ("release", json!({"owner": "w1"})),
            ("cancel", json!({"owner": "w1"})),
        ] {
            let got = as_app(
                &c,
                node,
                OTHER,
                Method::POST,
                &format!("/v1/locks/app:x/{path}"),
                Some(body.clone()),
            )
            .await;
            assert_code(
                &format!("other {path} {body} on node {node}"),
                &got,
                StatusCode::FORBIDDEN,
                "NOT_OWNER",
            );
        }
        // The same owner name in another application is another owner.
        let got = as_app(
            &c,
            node,
            OTHER,
            Method::POST,
            "/v1/locks/app:x/acquire",
            Some(json!({"owner": "w1"})),
        )
        .await;
        assert_code("other acquires", &got, StatusCode::CONFLICT, "LOCK_HELD");
    }
    let got = as_app(
        &c,
        follower,
        LOCKER,
        Method::POST,
        "/v1/locks/app:x/renew",
        Some(json!({"token": token})),
    )
    .await;
    assert_eq!(
        got.0,
        StatusCode::OK,
        "the owner renews through a follower: {}",
        got.1
    );
    // Release by key: `{}` frees the calling application's lock, idempotently.
    let got = as_app(
        &c,
        follower,
        OTHER,
        Method::POST,
        "/v1/locks/app:x/release",
        Some(json!({})),
    )
    .await;
    assert_eq!(
        (got.0, &got.1["released"], &got.1["reason"]),
        (StatusCode::OK, &json!(false), &json!("not_held")),
        "{}",
        got.1
    );
    for (released, reason) in [(true, Value::Null), (false, json!("not_held"))] {
        let got = as_app(
            &c,
            follower,
            LOCKER,
            Method::POST,
            "/v1/locks/app:x/release",
            Some(json!({})),
        )
        .await;
        assert_eq!(got.0, StatusCode::OK, "{}", got.1);
        assert_eq!(
            (&got.1["released"], &got.1["reason"]),
            (&json!(released), &reason),
            "{}",
            got.1
        );
    }
}

#[tokio::test]
async fn an_admin_release_of_another_applications_lock_is_audited_in_the_event_stream() {
    let c = cluster().await;
    let leader = c.leader().await;
    let follower = c.other_than(leader);
    let got = as_app(
        &c,
        leader,
        LOCKER,
        Method::POST,
        "/v1/locks/app:audit/acquire",
        Some(json!({"owner": "w1", "ttl_ms": 60000})),
    )
    .await;
    let token = got.1["token"].as_u64().expect("token");
    let got = as_app(
        &c,
        follower,
        OPS,
        Method::DELETE,
        "/v1/locks/app:audit",
        None,
    )
    .await;
    assert_eq!(
        (got.0, &got.1["released"]),
        (StatusCode::OK, &json!(true)),
        "{}",
        got.1
    );
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "authorization",
        format!("Bearer {READER}").parse().expect("header"),
    );
    let http = reqwest::Client::builder()
        .no_proxy()
        .default_headers(headers)
        .build()
        .expect("client");
    let url = format!(
        "http://{}/v1/locks/app:audit/events?after=0",
        c.api(follower)
    );
    let mut events = SseReader::open(&http, &url, None).await;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let e = events.next(Duration::from_secs(5)).await.expect("an event");
        if e.event == "force_released" {
            assert_eq!(
                (
                    &e.data["app"],
                    &e.data["by"],
                    &e.data["owner"],
                    &e.data["token"]
                ),
                (&json!("locker"), &json!("ops"), &json!("w1"), &json!(token)),
                "{}",
                e.data
            );
            break;
        }
        assert!(Instant::now() < deadline, "no force_released event");
    }
    let deadline = Instant::now() + READY_TIMEOUT;
    // The leader served the relayed request, and logs it.
    while !c.log(leader).contains("lock force-released") {
        assert!(
            Instant::now() < deadline,
            "no warn line on node {leader}:\n{}",
            c.log(leader)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_client_sent_identity_header_is_ignored_or_refused() {
    let c = cluster().await;
    let leader = c.leader().await;
    let got = as_app(
        &c,
        leader,
        LOCKER,
        Method::POST,
        "/v1/locks/app:f/acquire",
        Some(json!({"owner": "w1", "ttl_ms": 60000})),
    )
    .await;
    let token = got.1["token"].as_u64().expect("token");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis();
    let forged = format!("v1 locker {now} {}", "ab".repeat(32));
    // With a key: the header is dropped, the key decides (other is not the owner).
    let mut headers = bearer(OTHER);
    headers.push(("x-baton-principal", forged.clone()));
    let got = send(
        &c,
        leader,
        Method::POST,
        "/v1/locks/app:f/release",
        &headers,
        Some(json!({"token": token})),
    )
    .await;
    assert_code(
        "key plus forged identity",
        &got,
        StatusCode::FORBIDDEN,
        "NOT_OWNER",
    );
    // Posing as a relaying node: refused without a valid MAC, key or not.
    for key in [None, Some(OTHER)] {
        let mut headers = vec![
            ("x-baton-forwarded-by", "2".to_string()),
            ("x-baton-principal", forged.clone()),
        ];
        if let Some(k) = key {
            headers.extend(bearer(k));
        }
        let got = send(
            &c,
            leader,
            Method::POST,
            "/v1/locks/app:f/release",
            &headers,
            Some(json!({"token": token})),
        )
        .await;
        assert_code(
            "forged relay",
            &got,
            StatusCode::UNAUTHORIZED,
            "INVALID_API_KEY",
        );
    }
    // A genuine relayed identity from a node whose clock is two minutes behind: the
    // relaying node's trouble (503 NO_LEADER, retry elsewhere), not the caller's key.
    let body = serde_json::to_vec(&json!({"token": token})).unwrap();
    let target = "/v1/locks/app:f/release";
    let bound = relayed::Bound {
        method: "POST",
        target,
        body: &body,
    };
    let app = baton::locks::AppName::parse("locker").unwrap();
    let stale = relayed::sign("test-secret", &bound, &app, now as u64 - 120_000);
    let headers = vec![
        ("x-baton-forwarded-by", "2".to_string()),
        ("x-baton-principal", stale),
    ];
    let got = send(
        &c,
        leader,
        Method::POST,
        target,
        &headers,
        Some(json!({"token": token})),
    )
    .await;
    assert_code(
        "stale relay",
        &got,
        StatusCode::SERVICE_UNAVAILABLE,
        "NO_LEADER",
    );
    let got = as_app(&c, leader, READER, Method::GET, "/v1/locks/app:f", None).await;
    assert_eq!(
        (got.0, &got.1["token"]),
        (StatusCode::OK, &json!(token)),
        "still held: {}",
        got.1
    );
}

#[tokio::test]
async fn a_changed_keys_file_grants_and_revokes_without_restart_and_a_bad_one_is_kept_out() {
    let c = cluster().await;
    let leader = c.leader().await;
    let newcomer = "key-newcomer-0123456789";
    let ok = |got: &(StatusCode, Value)| got.0 == StatusCode::OK;
    assert!(!ok(&as_app(
        &c,
        leader,
        newcomer,
        Method::GET,
        "/v1/cluster",
        None
    )
    .await));
    // Grant `newcomer`, revoke `locker`.
    let text = keys_file().replace(
        &format!("locker {} lock=app: read=app:\n", hash_field(LOCKER)),
        &format!("newcomer {} read=*\n", hash_field(newcomer)),
    );
    std::fs::write(&c.keys_path, text).expect("rewrite keys");
    let deadline = Instant::now() + READY_TIMEOUT;
    for id in c.running_ids() {
        loop {
            let granted = ok(&as_app(&c, id, newcomer, Method::GET, "/v1/cluster", None).await);
            let revoked = as_app(&c, id, LOCKER, Method::GET, "/v1/cluster", None)
                .await
                .0
                == StatusCode::UNAUTHORIZED;
            if granted && revoked {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {id} did not reload the keys file"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // A malformed file is refused (logged) and the keys stay as they were.
    std::fs::write(&c.keys_path, "newcomer not-a-hash read=*\n").expect("break keys");
    for id in c.running_ids() {
        while !c.log(id).contains("keeping the keys loaded before") {
            assert!(
                Instant::now() < deadline,
                "node {id} did not log the bad file:\n{}",
                c.log(id)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ok(&as_app(
            &c,
            id,
            newcomer,
            Method::GET,
            "/v1/cluster",
            None
        )
        .await));
    }
}

/// Tracker's routes with auth on: the same keys, the same permissions as Baton's own
/// (`lock` to create and unlock, `admin` to unlock another application's lock, `read`
/// on every key to list), errors in Tracker's `{"error"}` shape, and the grant bound to
/// the creating application.
#[tokio::test]
async fn tracker_routes_take_the_same_keys_and_permissions() {
    let c = cluster().await;
    let leader = c.leader().await;
    let follower = c.other_than(leader);
    let create = json!({"service": "app:deploy", "who": "ci"});

    // No key, an unknown key: 401 in Tracker's shape, no id, nothing created.
    for headers in [vec![], bearer("not-a-known-key")] {
        let got = send(
            &c,
            follower,
            Method::POST,
            "/api/v1alpha1/lock",
            &headers,
            Some(create.clone()),
        )
        .await;
        assert_eq!(got.0, StatusCode::UNAUTHORIZED, "{}", got.1);
        assert!(got.1["error"].is_string(), "{}", got.1);
        assert!(got.1.get("id").is_none(), "{}", got.1);
    }
    // `read` only, or `lock` outside the key's prefix: 403.
    for (key, service) in [(READER, "app:deploy"), (LOCKER, "elsewhere")] {
        let body = json!({"service": service, "who": "ci"});
        let got = as_app(
            &c,
            follower,
            key,
            Method::POST,
            "/api/v1alpha1/lock",
            Some(body),
        )
        .await;
        assert_eq!(got.0, StatusCode::FORBIDDEN, "{service}: {}", got.1);
        assert!(got.1["error"].is_string(), "{}", got.1);
    }
    let got = as_app(
        &c,
        leader,
        OPS,
        Method::GET,
        "/api/v1alpha1/locks/list",
        None,
    )
    .await;
    assert_eq!(
        (got.0, got.1["total"].clone()),
        (StatusCode::OK, json!(0)),
        "{}",
        got.1
    );

    // `locker` creates through a follower; `reader` may read it, not list every key.
    let got = as_app(
        &c,
        follower,
        LOCKER,
        Method::POST,
        "/api/v1alpha1/lock",
        Some(create.clone()),
    )
    .await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    let id = got.1["id"].as_str().expect("id").to_string();
    let got = as_app(
        &c,
        follower,
        READER,
        Method::GET,
        &format!("/api/v1alpha1/lock/{id}"),
        None,
    )
    .await;
    assert_eq!(
        (got.0, got.1["who"].clone()),
        (StatusCode::OK, json!("ci")),
        "{}",
        got.1
    );
    let got = as_app(
        &c,
        follower,
        READER,
        Method::GET,
        "/api/v1alpha1/locks/list",
        None,
    )
    .await;
    assert_eq!(got.0, StatusCode::FORBIDDEN, "{}", got.1);

    // Another application's unlock is refused (directly and relayed); the lock stays.
    for node in [leader, follower] {
        let got = as_app(
            &c,
            node,
            OTHER,
            Method::GET,
            &format!("/api/v1alpha1/unlock/{id}"),
            None,
        )
        .await;
        assert_eq!(got.0, StatusCode::FORBIDDEN, "node {node}: {}", got.1);
    }
    let got = as_app(
        &c,
        leader,
        OPS,
        Method::GET,
        &format!("/api/v1alpha1/lock/{id}"),
        None,
    )
    .await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    // `admin` unlocks anything.
    let got = as_app(
        &c,
        follower,
        OPS,
        Method::GET,
        &format!("/api/v1alpha1/unlock/{id}"),
        None,
    )
    .await;
    assert_eq!(
        (got.0, got.1["success"].clone()),
        (StatusCode::OK, json!(true)),
        "{}",
        got.1
    );

    // The grant is the creating application's: its release by key with `{}` frees it.
    let got = as_app(
        &c,
        leader,
        LOCKER,
        Method::POST,
        "/api/v1alpha1/lock",
        Some(create),
    )
    .await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    let release = "/v1/locks/app:deploy/release";
    let got = as_app(&c, follower, OTHER, Method::POST, release, Some(json!({}))).await;
    assert_eq!(got.1["released"], json!(false), "{}", got.1);
    let got = as_app(&c, follower, LOCKER, Method::POST, release, Some(json!({}))).await;
    assert_eq!(got.1["released"], json!(true), "{}", got.1);
}
