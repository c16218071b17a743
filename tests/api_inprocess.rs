//! The HTTP API in-process: a single-node cluster in a temp dir, requests sent through
//! `api::router(..).oneshot(..)` without sockets or child processes.
//!
//! Covers every error code of the README's table that one node can produce — each bad
//! input is one row of a table: status, `code`, `application/problem+json`, and no
//! state changed — and the success shapes. `NO_LEADER` comes from a node whose peer
//! never starts (it cannot initialise a cluster), `INTERNAL` from a node that was shut
//! down. Each test starts its own node (about 0.3 s) and shuts it down at the end, so
//! RocksDB closes before the test's runtime ends. What needs several nodes is in
//! `tests/api.rs`: the relay through a follower, and `OUTCOME_UNKNOWN` / `NO_LEADER`
//! from a leader cut off from its quorum.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use baton::api;
use baton::config::{ApiConfig, AuthConfig, Config, LeaseConfig, NodeConfig, RaftConfig};
use baton::node::Node;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

/// How long a test waits for the node to lead or for a lease to run out.
const DEADLINE: Duration = Duration::from_secs(20);

const JSON: Option<&str> = Some("application/json");

/// One node and the API router over it; the data dir lives as long as this.
struct TestApi {
    node: Node,
    router: Router,
    _dir: tempfile::TempDir,
}

/// One answer: status, headers and the JSON body (`Null` when there is none).
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

/// `n` distinct unused loopback addresses: nothing answers there (the API of a single
/// node is never dialled; a peer there is unreachable). The listeners are held until
/// all are chosen, so no port is handed out twice.
fn unused_addrs(n: u64) -> Vec<String> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind loopback"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").to_string())
        .collect()
}

/// A cluster of `nodes` nodes of which this test runs node 1, with short timings so
/// that leases and sweeps take milliseconds.
fn config(dir: &std::path::Path, nodes: u64) -> Config {
    let mut addrs = unused_addrs(2 * nodes).into_iter();
    let mut addr = move || addrs.next().expect("an address per listener");
    let config = Config {
        nodes: (1..=nodes)
            .map(|id| NodeConfig {
                id,
                api: addr(),
                raft: addr(),
                data_dir: dir.join(format!("n{id}")),
                grpc: None,
            })
            .collect(),
        raft: RaftConfig {
            heartbeat_interval_ms: 50,
            election_timeout_min_ms: 200,
            election_timeout_max_ms: 400,
            sweep_interval_ms: 50,
            // A node added at an address where nothing answers is NOT_CAUGHT_UP soon.
            catch_up_timeout_ms: 1_500,
            ..RaftConfig::default()
        },
        lease: LeaseConfig {
            min_ttl_ms: 100,
            ..LeaseConfig::default()
        },
        api: ApiConfig {
            leader_wait_ms: 300,
            ..ApiConfig::default()
        },
        auth: AuthConfig::default(),
        compat: Default::default(),
        tls: Default::default(),
    };
    config.validate().expect("test config is valid");
    config
}

impl TestApi {
    /// A single-node cluster: node 1 initialises it alone and leads.
    async fn start() -> TestApi {
        let api = Self::start_node(1).await;
        api.wait_ready().await;
        api
    }

    /// A single-node cluster with `[auth] enabled` and `keys` as its keys file.
    async fn start_with_keys(keys: &str) -> TestApi {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = config(dir.path(), 1);
        let path = dir.path().join("keys");
        std::fs::write(&path, keys).expect("write keys");
        config.auth = AuthConfig {
            enabled: true,
            keys_file: Some(path),
        };
        let api = Self::start_config(dir, config).await;
        let deadline = Instant::now() + DEADLINE;
        while api.send(Method::GET, "/readyz", None, "").await.status != StatusCode::OK {
            assert!(Instant::now() < deadline, "single node not ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        api
    }

    /// A single-node cluster whose `[api]` is changed by `tweak`.
    async fn start_with(tweak: impl FnOnce(&mut ApiConfig)) -> TestApi {
        let api = Self::start_node_with(1, tweak).await;
        api.wait_ready().await;
        api
    }

    /// Node 1 of an `nodes`-node cluster; the others never start.
    async fn start_node(nodes: u64) -> TestApi {
        Self::start_node_with(nodes, |_| {}).await
    }

    async fn start_node_with(nodes: u64, tweak: impl FnOnce(&mut ApiConfig)) -> TestApi {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = config(dir.path(), nodes);
        tweak(&mut config.api);
        config.validate().expect("tweaked test config is valid");
        Self::start_config(dir, config).await
    }

    async fn start_config(dir: tempfile::TempDir, config: Config) -> TestApi {
        let config = Arc::new(config);
        let node = Node::start(config, 1).await.expect("node starts");
        let router = api::router(api::App::new(node.clone()).expect("api state"));
        TestApi {
            node,
            router,
            _dir: dir,
        }
    }

    /// Waits until `/readyz` says ready and a write goes through (the leader's clock is
    /// anchored and its lease refresh committed).
    async fn wait_ready(&self) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let ready = self.send(Method::GET, "/readyz", None, "").await;
            if ready.status == StatusCode::OK {
                let probe = self
                    .post("/v1/locks/ready-probe/release", json!({"owner": "probe"}))
                    .await;
                if probe.status == StatusCode::OK {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "single node not ready: {}",
                ready.body
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn shutdown(self) {
        self.node.shutdown().await;
    }

    /// One request with a raw body.
    async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<Body>,
    ) -> Answer {
        self.request(method, path, content_type, HeaderMap::new(), body)
            .await
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        headers: HeaderMap,
        body: impl Into<Body>,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let mut req = req.body(body.into()).expect("request");
        req.headers_mut().extend(headers);
        let resp = self
            .router
            .clone()
            .oneshot(req)
            .await
            .expect("the router is infallible");
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.expect("body").to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        self.send(Method::POST, path, JSON, body.to_string()).await
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, None, "").await
    }

    /// Every lock with its waiters, and the stored key count: what a bad request must
    /// leave as it was.
    async fn state(&self) -> (Value, usize) {
        let page = self.get("/v1/locks?limit=1000").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let stored = self.node.with_local_table(|t| t.len());
        (page.body, stored)
    }
}

/// Asserts the problem+json shape of an error answer.
fn assert_problem(what: &str, answer: &Answer, status: StatusCode, code: &str) {
    let p = &answer.body;
    assert_eq!(answer.status, status, "{what}: {p}");
    assert_eq!(p["code"], json!(code), "{what}: {p}");
    assert_eq!(answer.content_type(), "application/problem+json", "{what}");
    assert_eq!(p["status"], json!(status.as_u16()), "{what}: {p}");
    assert!(
        p["title"].is_string() && p["detail"].is_string() && p["type"].is_string(),
        "{what}: {p}"
    );
    let retry_after = answer.headers.get(header::RETRY_AFTER);
    assert_eq!(
        retry_after.is_some(),
        status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS,
        "{what}: Retry-After on 503 and 429 only"
    );
}

/// Milliseconds since the epoch of an RFC 3339 time from the API.
fn parse_ms(s: &Value) -> i128 {
    let s = s.as_str().unwrap_or_else(|| panic!("a time, got {s}"));
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .expect("rfc3339");
    t.unix_timestamp_nanos() / 1_000_000
}

/// One bad input: a request and the status and code it must get.
struct Case {
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    header: Option<(&'static str, &'static str)>,
    body: String,
    status: StatusCode,
    code: &'static str,
}

/// `request` is `"METHOD /path"`; a non-empty body is sent as `application/json`.
fn case(request: &str, body: impl Into<String>, status: u16, code: &'static str) -> Case {
    let (method, path) = request.split_once(' ').expect("METHOD /path");
    let body = body.into();
    Case {
        method: method.parse().expect("an HTTP method"),
        path: path.to_string(),
        content_type: (!body.is_empty()).then_some("application/json"),
        header: None,
        body,
        status: StatusCode::from_u16(status).expect("an HTTP status"),
        code,
    }
}

impl Case {
    fn content_type(self, content_type: Option<&'static str>) -> Case {
        Case {
            content_type,
            ..self
        }
    }

    fn header(self, name: &'static str, value: &'static str) -> Case {
        Case {
            header: Some((name, value)),
            ..self
        }
    }
}

/// Every bad input, one per row, against a node where `existing` is held by `owner-a`
/// with `token`. None of them may change state.
#[rustfmt::skip]
fn bad_inputs(token: u64) -> Vec<Case> {
    const KEY: &str = "INVALID_KEY";
    const REQ: &str = "INVALID_REQUEST";
    const TOO_LARGE: &str = "PAYLOAD_TOO_LARGE";
    let long_key = format!("POST /v1/locks/{}/acquire", "k".repeat(256));
    let long_owner = format!(r#"{{"owner":"{}"}}"#, "o".repeat(256));
    let huge = format!(r#"{{"owner":"{}"}}"#, "x".repeat(20_000));
    vec![
        // INVALID_KEY, on every route that takes a key.
        case("POST /v1/locks/bad%2Fkey/acquire", r#"{"owner":"a"}"#, 400, KEY),
        case("POST /v1/locks/sp%20ace/acquire", r#"{"owner":"a"}"#, 400, KEY),
        case(&long_key, r#"{"owner":"a"}"#, 400, KEY),
        case("GET /v1/locks/%C3%A9t%C3%A9", "", 400, KEY),
        case("GET /v1/locks/bad%20key/events", "", 400, KEY),
        case("POST /v1/locks/bad%2Fkey/renew", format!(r#"{{"token":{token}}}"#), 400, KEY),
        case("POST /v1/locks/bad%2Fkey/release", r#"{"owner":"a"}"#, 400, KEY),
        case("POST /v1/locks/bad%2Fkey/validate", r#"{"token":1}"#, 400, KEY),
        case("POST /v1/locks/bad%2Fkey/cancel", r#"{"owner":"a"}"#, 400, KEY),
        case("DELETE /v1/locks/bad%2Fkey", "", 400, KEY),
        // ... and keys no path can name: dot segments are never normalised.
        case("POST /v1/locks/./acquire", r#"{"owner":"a"}"#, 400, KEY),
        case("POST /v1/locks/../acquire", r#"{"owner":"a"}"#, 400, KEY),
        case("POST /v1/locks/%2e%2E/acquire", r#"{"owner":"a"}"#, 400, KEY),
        case("DELETE /v1/locks/..", "", 400, KEY),
        case("GET /v1/locks/./events", "", 400, KEY),
        // INVALID_REQUEST: malformed JSON, unknown field, wrong type, content type.
        case("POST /v1/locks/k/acquire", "{not json", 400, REQ),
        case("POST /v1/locks/k/acquire", "", 400, REQ).content_type(Some("application/json")),
        case("POST /v1/locks/k/acquire", r#"{"owner":"a","extra":1}"#, 400, REQ),
        case("POST /v1/locks/k/acquire", r#"{"owner":5}"#, 400, REQ),
        case("POST /v1/locks/k/acquire", r#"{}"#, 400, REQ),
        case("POST /v1/locks/k/acquire", r#"["a"]"#, 400, REQ),
        case("POST /v1/locks/k/acquire", r#"{"owner":"a"}"#, 400, REQ).content_type(None),
        case("POST /v1/locks/k/acquire", r#"{"owner":"a"}"#, 400, REQ).content_type(Some("text/plain")),
        // ... a bad owner.
        case("POST /v1/locks/k/acquire", r#"{"owner":""}"#, 400, REQ),
        case("POST /v1/locks/k/acquire", long_owner, 400, REQ),
        case("POST /v1/locks/k/acquire", r#"{"owner":"tab\there"}"#, 400, REQ),
        case("POST /v1/locks/k/acquire", r#"{"owner":"été"}"#, 400, REQ),
        // ... ttl, wait and lock-delay outside their [lease] bounds or not integers.
        case("POST /v1/locks/k/acquire", r#"{"owner":"a","ttl_ms":10}"#, 400, REQ),
        case("POST /v1/locks/k/acquire", r#"{"owner":"a","ttl_ms":999999999999}"#, 400, REQ),
        case("POST /v1/locks/k/acquire", r#"{"owner":"a","ttl_ms":-1}"#, 400, REQ),
        case("POST /v1/locks/k/acquire", r#"{"owner":"a","ttl_ms":1.5}"#, 400, REQ),
        case("POST /v1/locks/k/acquire", r#"{"owner":"a","wait_ms":999999999999}"#, 400, REQ),
        case("POST /v1/locks/k/acquire", r#"{"owner":"a","wait_ms":-5}"#, 400, REQ),
        case("POST /v1/locks/k/acquire", r#"{"owner":"a","lock_delay_ms":999999999}"#, 400, REQ),
        case("POST /v1/locks/existing/renew", format!(r#"{{"token":{token},"ttl_ms":10}}"#), 400, REQ),
        case("POST /v1/locks/existing/renew", format!(r#"{{"token":{token},"ttl_ms":999999999999}}"#), 400, REQ),
        // ... tokens and owners of renew, release, validate and cancel.
        case("POST /v1/locks/existing/renew", r#"{"token":"1"}"#, 400, REQ),
        case("POST /v1/locks/existing/renew", r#"{}"#, 400, REQ),
        case("POST /v1/locks/existing/release", format!(r#"{{"token":{token},"owner":"owner-a"}}"#), 400, REQ),
        case("POST /v1/locks/existing/release", r#"{}"#, 400, REQ),
        case("POST /v1/locks/existing/release", r#"{"owner":""}"#, 400, REQ),
        case("POST /v1/locks/existing/validate", r#"{}"#, 400, REQ),
        case("POST /v1/locks/existing/validate", r#"{"token":-1}"#, 400, REQ),
        case("POST /v1/locks/k/cancel", r#"{"owner":"a","reason":"bored"}"#, 400, REQ),
        case("POST /v1/locks/k/cancel", r#"{"reason":"timeout"}"#, 400, REQ),
        // ... the query string: list limit, prefix, cursor, unknown parameters.
        case("GET /v1/locks?limit=0", "", 400, REQ),
        case("GET /v1/locks?limit=1001", "", 400, REQ),
        case("GET /v1/locks?limit=abc", "", 400, REQ),
        case("GET /v1/locks?bogus=1", "", 400, REQ),
        case("GET /v1/locks?prefix=a/b", "", 400, REQ),
        case("GET /v1/locks?cursor=a%20b", "", 400, REQ),
        case("GET /v1/locks?consistency=eventual", "", 400, REQ),
        case("GET /v1/locks/existing?consistency=eventual", "", 400, REQ),
        case("GET /v1/locks/existing?waiters=maybe", "", 400, REQ),
        case("GET /v1/locks/existing?bogus=1", "", 400, REQ),
        case("GET /v1/locks/existing/events?after=abc", "", 400, REQ),
        case("GET /v1/locks/existing/events", "", 400, REQ).header("last-event-id", "not-an-index"),
        // ... a page of the queue.
        case("GET /v1/locks/existing?waiters=true&waiters_limit=0", "", 400, REQ),
        case("GET /v1/locks/existing?waiters=true&waiters_limit=1001", "", 400, REQ),
        case("GET /v1/locks/existing?waiters_limit=5", "", 400, REQ),
        case("GET /v1/locks/existing?waiters=true&waiters_cursor=%09", "", 400, REQ),
        // ... dot segments anywhere else (a relay would have sent another path).
        case("DELETE /v1/locks/x/../existing", "", 400, REQ),
        case("DELETE /v1/locks/x/%2E%2e/existing", "", 400, REQ),
        case("POST /v1/locks/existing/./release", r#"{"owner":"owner-a"}"#, 400, REQ),
        case("GET /v1/./cluster", "", 400, REQ),
        // ... admin paths.
        case("POST /v1/cluster/nodes/abc/allow-rejoin", "", 400, REQ),
        case("POST /v1/cluster/nodes/9/allow-rejoin", "", 400, REQ),
        case("POST /v1/cluster/nodes/%FF/allow-rejoin", "", 400, REQ),
        // ... unknown endpoints (404) and methods (405).
        case("GET /v1/nope", "", 404, REQ),
        case("GET /v1/locks/k/nope", "", 404, REQ),
        case("PUT /v1/locks/existing", "", 405, REQ),
        case("GET /v1/locks/existing/acquire", "", 405, REQ),
        case("DELETE /v1/locks", "", 405, REQ),
        // PAYLOAD_TOO_LARGE: over api.max_body_bytes (16 KiB).
        case("POST /v1/locks/k/acquire", huge.clone(), 413, TOO_LARGE),
        case("POST /v1/locks/existing/release", huge, 413, TOO_LARGE),
        // Refusals of the lock rules.
        case("POST /v1/locks/existing/acquire", r#"{"owner":"owner-b"}"#, 409, "LOCK_HELD"),
        case("POST /v1/locks/existing/renew", format!(r#"{{"token":{}}}"#, token + 1000), 409, "LOCK_LOST"),
        case("POST /v1/locks/never-held/renew", format!(r#"{{"token":{token}}}"#), 409, "LOCK_LOST"),
        case("POST /v1/locks/existing/release", r#"{"owner":"someone-else"}"#, 403, "NOT_OWNER"),
        case("GET /v1/locks/missing", "", 404, "LOCK_NOT_FOUND"),
        case("GET /v1/locks/missing?consistency=local", "", 404, "LOCK_NOT_FOUND"),
    ]
}

#[tokio::test]
async fn every_bad_input_gets_its_code_and_changes_nothing() {
    let api = TestApi::start().await;
    let held = api
        .post(
            "/v1/locks/existing/acquire",
            json!({"owner": "owner-a", "ttl_ms": 600_000}),
        )
        .await;
    assert_eq!(held.status, StatusCode::OK, "{}", held.body);
    let token = held.body["token"].as_u64().expect("token");
    let before = api.state().await;
    let cases = bad_inputs(token);
    for c in &cases {
        let mut headers = HeaderMap::new();
        if let Some((name, value)) = c.header {
            headers.insert(name, value.parse().expect("header value"));
        }
        let answer = api
            .request(
                c.method.clone(),
                &c.path,
                c.content_type,
                headers,
                c.body.clone(),
            )
            .await;
        let what = format!(
            "{} {} {}",
            c.method,
            c.path,
            c.body.chars().take(60).collect::<String>()
        );
        assert_problem(&what, &answer, c.status, c.code);
    }
    // LOCK_HELD names the holder's grant.
    let refused = api
        .post("/v1/locks/existing/acquire", json!({"owner": "owner-b"}))
        .await;
    let holder = &refused.body["holder"];
    assert_eq!(
        (&holder["owner"], &holder["token"], &holder["key"]),
        (&json!("owner-a"), &json!(token), &json!("existing")),
        "{}",
        refused.body
    );
    assert_eq!(api.state().await, before, "a bad request changed state");
    api.shutdown().await;
}

/// The quotas answer 429 `QUEUE_FULL` / `TOO_MANY_LOCKS` and 503 `TOO_MANY_STREAMS`
/// with a `Retry-After`, change nothing, and let an owner already in place retry.
#[tokio::test]
async fn quotas_refuse_with_their_codes_and_change_nothing() {
    let api = TestApi::start_with(|a| {
        a.max_waiters_per_key = 2;
        a.max_waiters = 3;
        a.max_locks = 4;
        a.max_event_streams = 1;
    })
    .await;
    for key in ["q1", "q2"] {
        let held = api
            .post(
                &format!("/v1/locks/{key}/acquire"),
                json!({"owner": "holder", "ttl_ms": 600_000}),
            )
            .await;
        assert_eq!(held.status, StatusCode::OK, "{}", held.body);
    }
    // Waiting acquires stay open: run them beside the test and take them down at the end.
    let mut waiting = Vec::new();
    for (key, owner) in [("q1", "w1"), ("q1", "w2"), ("q2", "w3")] {
        let router = api.router.clone();
        let body = json!({"owner": owner, "ttl_ms": 600_000, "wait_ms": 60_000}).to_string();
        let req = Request::post(format!("/v1/locks/{key}/acquire"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .expect("request");
        waiting.push(tokio::spawn(async move { router.oneshot(req).await }));
    }
    let deadline = Instant::now() + DEADLINE;
    while api.node.with_local_table(|t| t.waiters_total()) < 3 {
        assert!(Instant::now() < deadline, "the three waiters never queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = api.state().await;
    let wait = |owner: &str| json!({"owner": owner, "wait_ms": 60_000}).to_string();
    let cases = [
        case("POST /v1/locks/q1/acquire", wait("w4"), 429, "QUEUE_FULL"),
        case("POST /v1/locks/q2/acquire", wait("w4"), 429, "QUEUE_FULL"),
        case("POST /v1/locks/new-1/acquire", r#"{"owner":"a"}"#, 200, ""),
        case("POST /v1/locks/new-2/acquire", r#"{"owner":"a"}"#, 200, ""),
        case(
            "POST /v1/locks/new-3/acquire",
            r#"{"owner":"a"}"#,
            429,
            "TOO_MANY_LOCKS",
        ),
        // An owner in place retries: the holder re-acquires at the lock cap.
        case("POST /v1/locks/new-1/acquire", r#"{"owner":"a"}"#, 200, ""),
        case("GET /v1/locks/q1/events", "", 200, ""),
        case("GET /v1/locks/q2/events", "", 503, "TOO_MANY_STREAMS"),
    ];
    let mut streams = Vec::new();
    for c in cases {
        let what = format!("{} {} {}", c.method, c.path, c.body);
        let answer = if c.path.ends_with("/events") {
            let req = Request::get(c.path.as_str())
                .body(Body::empty())
                .expect("request");
            let resp = api.router.clone().oneshot(req).await.expect("infallible");
            let status = resp.status();
            let (parts, body) = resp.into_parts();
            if status == StatusCode::OK {
                // Keep the stream open: it holds the node's only stream place.
                streams.push(body);
                continue;
            }
            let bytes = body.collect().await.expect("body").to_bytes();
            Answer {
                status,
                headers: parts.headers,
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            }
        } else {
            api.post(&c.path, serde_json::from_str(&c.body).expect("json"))
                .await
        };
        if c.status == StatusCode::OK {
            assert_eq!(answer.status, StatusCode::OK, "{what}: {}", answer.body);
        } else {
            assert_problem(&what, &answer, c.status, c.code);
        }
    }
    let (locks, stored) = api.state().await;
    assert_eq!(stored, before.1 + 2, "only new-1 and new-2 were stored");
    assert_eq!(locks["locks"].as_array().map(Vec::len), Some(4), "{locks}");
    assert_eq!(api.node.with_local_table(|t| t.waiters_total()), 3);
    // A stream that ends gives its place back.
    drop(streams);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let req = Request::get("/v1/locks/q2/events")
            .body(Body::empty())
            .expect("request");
        let resp = api.router.clone().oneshot(req).await.expect("infallible");
        if resp.status() == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stream place never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for w in waiting {
        w.abort();
    }
    api.shutdown().await;
}

#[tokio::test]
async fn a_wait_that_runs_out_is_wait_timeout_and_leaves_the_queue() {
    let api = TestApi::start().await;
    let held = api
        .post(
            "/v1/locks/busy/acquire",
            json!({"owner": "holder", "ttl_ms": 600_000}),
        )
        .await;
    assert_eq!(held.status, StatusCode::OK, "{}", held.body);
    let started = Instant::now();
    let late = api
        .post(
            "/v1/locks/busy/acquire",
            json!({"owner": "late", "ttl_ms": 5_000, "wait_ms": 300}),
        )
        .await;
    assert_problem(
        "waiting acquire",
        &late,
        StatusCode::CONFLICT,
        "WAIT_TIMEOUT",
    );
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "answered before the wait ran out: {:?}",
        started.elapsed()
    );
    let lock = api.get("/v1/locks/busy?waiters=true").await;
    assert_eq!(lock.status, StatusCode::OK, "{}", lock.body);
    assert_eq!(lock.body["owner"], "holder", "{}", lock.body);
    assert_eq!(lock.body["waiters"], 0, "{}", lock.body);
    assert_eq!(lock.body["waiter_list"], json!([]), "{}", lock.body);
    // The timed-out waiter is not granted when the holder leaves.
    let released = api
        .post(
            "/v1/locks/busy/release",
            json!({"token": held.body["token"]}),
        )
        .await;
    assert_eq!(released.body["released"], true, "{}", released.body);
    let after = api.get("/v1/locks/busy").await;
    assert_problem(
        "after release",
        &after,
        StatusCode::NOT_FOUND,
        "LOCK_NOT_FOUND",
    );
    api.shutdown().await;
}

#[tokio::test]
async fn a_lock_delay_after_an_expiry_is_lock_held_with_available_at() {
    let api = TestApi::start().await;
    let first = api
        .post(
            "/v1/locks/delayed/acquire",
            json!({"owner": "crashed", "ttl_ms": 100, "lock_delay_ms": 60_000}),
        )
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    // Held at first (LOCK_HELD with the holder), then, once the lease has run out and
    // been swept, unavailable until the delay ends (LOCK_HELD with available_at).
    let deadline = Instant::now() + DEADLINE;
    let refused = loop {
        let answer = api
            .post("/v1/locks/delayed/acquire", json!({"owner": "next"}))
            .await;
        assert_problem(
            "acquire during the delay",
            &answer,
            StatusCode::CONFLICT,
            "LOCK_HELD",
        );
        if answer.body.get("available_at").is_some() {
            break answer;
        }
        assert_eq!(answer.body["holder"]["owner"], "crashed", "{}", answer.body);
        assert!(Instant::now() < deadline, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(refused.body.get("holder").is_none(), "{}", refused.body);
    assert_eq!(
        parse_ms(&refused.body["available_at"]),
        parse_ms(&first.body["expires_at"]) + 60_000,
        "{}",
        refused.body
    );
    let lock = api.get("/v1/locks/delayed").await;
    assert_problem(
        "nobody holds it",
        &lock,
        StatusCode::NOT_FOUND,
        "LOCK_NOT_FOUND",
    );
    // A force release ends a running delay.
    let forced = api
        .send(Method::DELETE, "/v1/locks/delayed", None, "")
        .await;
    assert_eq!(forced.status, StatusCode::OK, "{}", forced.body);
    let next = api
        .post("/v1/locks/delayed/acquire", json!({"owner": "next"}))
        .await;
    assert_eq!(next.status, StatusCode::OK, "{}", next.body);
    api.shutdown().await;
}

/// Fields of an acquire or renew answer.
const GRANT: &[&str] = &[
    "acquired_at",
    "expires_at",
    "key",
    "owner",
    "token",
    "ttl_ms",
];
/// Fields of a lock as get and list show it (`waiter_list` only when asked for).
const LOCK: &[&str] = &[
    "acquired_at",
    "expires_at",
    "key",
    "owner",
    "renewed_at",
    "token",
    "ttl_ms",
    "waiters",
];

/// Asserts a 200 `application/json` answer with exactly the fields `shape`, whose
/// values include `values`; RFC 3339 fields (`*_at`, `timestamp`) must parse.
fn assert_shape(what: &str, answer: &Answer, shape: &[&str], values: Value) -> Value {
    let body = &answer.body;
    assert_eq!(answer.status, StatusCode::OK, "{what}: {body}");
    assert_eq!(answer.content_type(), "application/json", "{what}");
    let fields: Vec<&str> = body
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let mut shape = shape.to_vec();
    shape.sort_unstable();
    assert_eq!(fields, shape, "{what}: {body}");
    for (name, want) in values.as_object().expect("values is an object") {
        assert_eq!(&body[name], want, "{what}: {name} in {body}");
    }
    for name in fields {
        if name.ends_with("_at") || name == "timestamp" {
            parse_ms(&body[name]);
        }
    }
    body.clone()
}

#[tokio::test]
async fn successful_requests_answer_their_documented_shapes() {
    let api = TestApi::start().await;
    let acquire = json!({"owner": "ci-1", "ttl_ms": 60_000});
    let g = api.post("/v1/locks/deploy/acquire", acquire.clone()).await;
    let want = json!({"key": "deploy", "owner": "ci-1", "ttl_ms": 60_000});
    let g = assert_shape("acquire", &g, GRANT, want);
    let token = g["token"].as_u64().expect("token");
    let lease_ms = parse_ms(&g["expires_at"]) - parse_ms(&g["acquired_at"]);
    assert_eq!(lease_ms, 60_000, "{g}");
    // The owner's retry gets the same grant.
    let again = api.post("/v1/locks/deploy/acquire", acquire).await;
    assert_shape("acquire again", &again, GRANT, json!({"token": token}));
    // Renew: same token and acquisition, the new ttl, a later expiry.
    let r = api
        .post(
            "/v1/locks/deploy/renew",
            json!({"token": token, "ttl_ms": 90_000}),
        )
        .await;
    let want = json!({"token": token, "ttl_ms": 90_000, "acquired_at": g["acquired_at"]});
    let r = assert_shape("renew", &r, GRANT, want);
    assert!(
        parse_ms(&r["expires_at"]) > parse_ms(&g["expires_at"]),
        "{r}"
    );
    // Get, linearizable and local, with and without the waiter list.
    let want = json!({"key": "deploy", "owner": "ci-1", "token": token, "waiters": 0});
    let with_list = [LOCK, &["waiter_list"]].concat();
    for (path, shape) in [
        ("/v1/locks/deploy", LOCK),
        ("/v1/locks/deploy?consistency=local", LOCK),
        ("/v1/locks/deploy?waiters=true", &with_list),
        (
            "/v1/locks/deploy?consistency=local&waiters=true",
            &with_list,
        ),
    ] {
        let lock = assert_shape(path, &api.get(path).await, shape, want.clone());
        if shape.len() > LOCK.len() {
            assert_eq!(lock["waiter_list"], json!([]), "{path}: {lock}");
        }
    }
    // Validate: the current token is valid, a stale one names the current one.
    let valid = api
        .post("/v1/locks/deploy/validate", json!({"token": token}))
        .await;
    let want = json!({"valid": true, "current_token": token});
    assert_shape("validate", &valid, &["current_token", "valid"], want);
    let stale = api
        .post("/v1/locks/deploy/validate", json!({"token": token - 1}))
        .await;
    let want = json!({"valid": false, "current_token": token});
    assert_shape("validate stale", &stale, &["current_token", "valid"], want);
    // List: one page, the locks in it, no cursor.
    let page = api.get("/v1/locks?prefix=dep").await;
    let page = assert_shape(
        "list",
        &page,
        &["locks", "next_cursor"],
        json!({"next_cursor": null}),
    );
    assert_eq!(page["locks"].as_array().map(Vec::len), Some(1), "{page}");
    assert_eq!(page["locks"][0]["token"], json!(token), "{page}");
    // Release with a stale token, with the token, again, and by owner.
    let release = |body: Value| api.post("/v1/locks/deploy/release", body);
    let shape = &["key", "reason", "released", "timestamp"];
    let want = json!({"key": "deploy", "released": false, "reason": "token_mismatch"});
    assert_shape(
        "stale release",
        &release(json!({"token": token + 1})).await,
        shape,
        want,
    );
    let want = json!({"key": "deploy", "released": true});
    let released = release(json!({"token": token})).await;
    assert_shape(
        "release",
        &released,
        &["key", "released", "timestamp"],
        want,
    );
    let want = json!({"released": false, "reason": "not_held"});
    assert_shape(
        "release again",
        &release(json!({"token": token})).await,
        shape,
        want,
    );
    let mine = api
        .post("/v1/locks/mine/acquire", json!({"owner": "me"}))
        .await;
    assert_shape("default ttl", &mine, GRANT, json!({"ttl_ms": 30_000}));
    let by_owner = api
        .post("/v1/locks/mine/release", json!({"owner": "me"}))
        .await;
    let want = json!({"key": "mine", "released": true});
    assert_shape(
        "release by owner",
        &by_owner,
        &["key", "released", "timestamp"],
        want,
    );
    // Validate after the release: invalid, and no current token.
    let gone = api
        .post("/v1/locks/deploy/validate", json!({"token": token}))
        .await;
    assert_shape(
        "validate released",
        &gone,
        &["valid"],
        json!({"valid": false}),
    );
    // Force release, of a held and of a free key.
    let held = api
        .post("/v1/locks/forced/acquire", json!({"owner": "x"}))
        .await;
    assert_shape("acquire", &held, GRANT, json!({"owner": "x"}));
    let shape = &["key", "released", "timestamp"];
    let forced = api.send(Method::DELETE, "/v1/locks/forced", None, "").await;
    let want = json!({"key": "forced", "released": true});
    assert_shape("force release", &forced, shape, want);
    let free = api.send(Method::DELETE, "/v1/locks/forced", None, "").await;
    assert_eq!(free.body["released"], json!(false), "{}", free.body);
    // Cancel by an owner that does not wait.
    let body = json!({"owner": "x", "reason": "timeout"});
    let cancel = api.post("/v1/locks/forced/cancel", body).await;
    let want = json!({"key": "forced", "was_queued": false});
    assert_shape("cancel", &cancel, &["key", "was_queued"], want);
    // Health, readiness, cluster status, snapshot.
    let want = json!({"status": "ok", "node_id": 1});
    assert_shape(
        "healthz",
        &api.get("/healthz").await,
        &["node_id", "status"],
        want,
    );
    let want = json!({"ready": true, "node_id": 1, "leader_id": 1});
    let shape = &["leader_id", "node_id", "ready"];
    assert_shape("readyz", &api.get("/readyz").await, shape, want);
    let cluster = api.get("/v1/cluster").await;
    let c = &cluster.body;
    assert_eq!(cluster.status, StatusCode::OK, "{c}");
    let want = (&json!(1), &json!("leader"), &json!(1), Some(1));
    let members = c["members"].as_array().map(Vec::len);
    assert_eq!(
        (&c["node_id"], &c["state"], &c["leader_id"], members),
        want,
        "{c}"
    );
    assert_eq!(c["applied_index"], c["committed_index"], "{c}");
    let snapshot = api
        .send(Method::POST, "/v1/cluster/snapshot", None, "")
        .await;
    // Answered once the snapshot covers everything applied when the call arrived.
    assert_eq!(snapshot.status, StatusCode::OK, "{}", snapshot.body);
    assert_eq!(snapshot.body["node_id"], json!(1));
    assert_eq!(snapshot.body["built"], json!(true));
    assert!(
        snapshot.body["snapshot_index"].as_u64() >= c["applied_index"].as_u64(),
        "{}",
        snapshot.body
    );
    api.shutdown().await;
}

#[tokio::test]
async fn the_event_stream_replays_a_keys_events_in_log_order() {
    let api = TestApi::start().await;
    let grant = api
        .post("/v1/locks/watched/acquire", json!({"owner": "w"}))
        .await;
    let token = grant.body["token"].as_u64().expect("token");
    let released = api
        .post("/v1/locks/watched/release", json!({"token": token}))
        .await;
    assert_eq!(released.body["released"], json!(true), "{}", released.body);
    let req = Request::get("/v1/locks/watched/events?after=0")
        .body(Body::empty())
        .expect("request");
    let resp = api.router.clone().oneshot(req).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
    // The stream never ends: read frames until both stored events arrived.
    let mut body = resp.into_body();
    let mut text = String::new();
    let read = async {
        while !text.contains("event: released") {
            let frame = body.frame().await.expect("a frame").expect("body");
            if let Ok(data) = frame.into_data() {
                text.push_str(&String::from_utf8_lossy(&data));
            }
        }
    };
    tokio::time::timeout(DEADLINE, read)
        .await
        .expect("stored events in time");
    let acquired = text.find("event: acquired").expect("acquired event");
    let released_at = text.find("event: released").expect("released event");
    assert!(acquired < released_at, "{text}");
    assert!(text.contains(&format!("\"token\":{token}")), "{text}");
    assert!(text.contains(&format!("id: {token}")), "{text}");
    drop(body);
    api.shutdown().await;
}

#[tokio::test]
async fn list_pages_through_a_prefix_with_a_cursor() {
    let api = TestApi::start().await;
    for i in 0..7 {
        let g = api
            .post(
                &format!("/v1/locks/page-{i}/acquire"),
                json!({"owner": "o"}),
            )
            .await;
        assert_eq!(g.status, StatusCode::OK, "{}", g.body);
    }
    let other = api
        .post("/v1/locks/other-prefix/acquire", json!({"owner": "o"}))
        .await;
    assert_eq!(other.status, StatusCode::OK, "{}", other.body);
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/locks?prefix=page-&limit=3&cursor={c}"),
            None => "/v1/locks?prefix=page-&limit=3".to_string(),
        };
        let page = api.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        pages += 1;
        for l in page.body["locks"].as_array().expect("locks") {
            seen.push(l["key"].as_str().expect("key").to_string());
        }
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let want: Vec<String> = (0..7).map(|i| format!("page-{i}")).collect();
    assert_eq!((seen, pages), (want, 3));
    api.shutdown().await;
}

#[tokio::test]
async fn an_expired_lease_goes_to_the_next_owner_with_a_larger_token() {
    let api = TestApi::start().await;
    let first = api
        .post(
            "/v1/locks/idem/acquire",
            json!({"owner": "me", "ttl_ms": 200}),
        )
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let other = api
            .post(
                "/v1/locks/idem/acquire",
                json!({"owner": "other", "ttl_ms": 200}),
            )
            .await;
        if other.status == StatusCode::OK {
            assert!(
                other.body["token"].as_u64() > first.body["token"].as_u64(),
                "{} vs {}",
                other.body,
                first.body
            );
            break;
        }
        assert_problem(
            "while the lease runs",
            &other,
            StatusCode::CONFLICT,
            "LOCK_HELD",
        );
        assert!(Instant::now() < deadline, "lease never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The first owner's token is lost now.
    let renew = api
        .post(
            "/v1/locks/idem/renew",
            json!({"token": first.body["token"]}),
        )
        .await;
    assert_problem(
        "renew after expiry",
        &renew,
        StatusCode::CONFLICT,
        "LOCK_LOST",
    );
    api.shutdown().await;
}

#[tokio::test]
async fn a_node_that_knows_no_leader_answers_no_leader_and_still_serves_local_reads() {
    // Node 1 of two: its peer never starts, so the cluster is never initialised and
    // there is no leader.
    let api = TestApi::start_node(2).await;
    // Each waits api.leader_wait_ms for a leader to appear.
    let (write, read, list) = tokio::join!(
        api.post("/v1/locks/k/acquire", json!({"owner": "a"})),
        api.get("/v1/locks/k"),
        api.get("/v1/locks"),
    );
    assert_problem(
        "write",
        &write,
        StatusCode::SERVICE_UNAVAILABLE,
        "NO_LEADER",
    );
    assert_problem(
        "linearizable read",
        &read,
        StatusCode::SERVICE_UNAVAILABLE,
        "NO_LEADER",
    );
    assert_problem(
        "linearizable list",
        &list,
        StatusCode::SERVICE_UNAVAILABLE,
        "NO_LEADER",
    );
    // Validation still comes first where the request is not relayed, and local reads
    // are served from this node's replica.
    let local = api.get("/v1/locks/k?consistency=local").await;
    assert_problem(
        "local read",
        &local,
        StatusCode::NOT_FOUND,
        "LOCK_NOT_FOUND",
    );
    let bad = api.get("/v1/locks/bad%20key/events").await;
    assert_problem("events", &bad, StatusCode::BAD_REQUEST, "INVALID_KEY");
    let ready = api.get("/readyz").await;
    assert_eq!(
        (ready.status, &ready.body["ready"]),
        (StatusCode::SERVICE_UNAVAILABLE, &json!(false)),
        "{}",
        ready.body
    );
    let health = api.get("/healthz").await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.body);
    api.shutdown().await;
}

#[tokio::test]
async fn a_stopped_node_answers_internal_and_is_not_healthy() {
    let api = TestApi::start().await;
    api.node.shutdown().await;
    let snapshot = api
        .send(Method::POST, "/v1/cluster/snapshot", None, "")
        .await;
    let what = "snapshot on a stopped node";
    assert_problem(
        what,
        &snapshot,
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL",
    );
    let health = api.get("/healthz").await;
    let want = (StatusCode::SERVICE_UNAVAILABLE, &json!("stopped"));
    assert_eq!(
        (health.status, &health.body["status"]),
        want,
        "{}",
        health.body
    );
    let ready = api.get("/readyz").await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        ready.body
    );
}

/// One request of the auth table: method, path, `Authorization`, body, status, code.
type AuthRow = (
    Method,
    String,
    Option<&'static str>,
    String,
    u16,
    &'static str,
);

/// With auth on, every request without a valid key is 401 `INVALID_API_KEY` (with the
/// Release Lock API's `success` and `error`), every one outside the caller's permissions
/// 403 `FORBIDDEN`, another application's renew or release 403 `NOT_OWNER`; none of
/// them changes state. `/healthz` and `/readyz` stay open.
#[tokio::test]
async fn with_auth_every_bad_key_or_missing_permission_gets_its_code_and_changes_nothing() {
    use baton::auth::keys::hash_field;
    let keys = format!(
        "a {} lock=a: read=a:\nb {} lock=a: read=a:\nr {} read=a:\nops {} admin=*\n",
        hash_field("ka"),
        hash_field("kb"),
        hash_field("kr"),
        hash_field("kops")
    );
    let api = TestApi::start_with_keys(&keys).await;
    let with = |key: &str| {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {key}").parse().expect("header"),
        );
        h
    };
    let held = api
        .request(
            Method::POST,
            "/v1/locks/a:held/acquire",
            JSON,
            with("ka"),
            json!({"owner": "w", "ttl_ms": 600_000}).to_string(),
        )
        .await;
    assert_eq!(held.status, StatusCode::OK, "{}", held.body);
    let token = held.body["token"].as_u64().expect("token");
    let state = || async {
        api.request(Method::GET, "/v1/locks?limit=1000", None, with("kops"), "")
            .await
            .body
    };
    let before = state().await;
    let acquire = json!({"owner": "x"}).to_string();
    #[rustfmt::skip]
    let rows: Vec<AuthRow> = vec![
        (Method::POST, "/v1/locks/a:k/acquire".into(), None, acquire.clone(), 401, "INVALID_API_KEY"),
        (Method::POST, "/v1/locks/a:k/acquire".into(), Some("Bearer nope"), acquire.clone(), 401, "INVALID_API_KEY"),
        (Method::POST, "/v1/locks/a:k/acquire".into(), Some("Basic ka"), acquire.clone(), 401, "INVALID_API_KEY"),
        (Method::POST, "/v1/locks/a:k/acquire".into(), Some("Bearer"), acquire.clone(), 401, "INVALID_API_KEY"),
        (Method::GET, "/v1/cluster".into(), None, String::new(), 401, "INVALID_API_KEY"),
        (Method::POST, "/v1/locks/a:k/acquire".into(), Some("Bearer kr"), acquire.clone(), 403, "FORBIDDEN"),
        (Method::POST, "/v1/locks/z:k/acquire".into(), Some("Bearer ka"), acquire.clone(), 403, "FORBIDDEN"),
        (Method::GET, "/v1/locks?prefix=z".into(), Some("Bearer ka"), String::new(), 403, "FORBIDDEN"),
        (Method::GET, "/v1/locks".into(), Some("Bearer ka"), String::new(), 403, "FORBIDDEN"),
        (Method::DELETE, "/v1/locks/a:held".into(), Some("Bearer ka"), String::new(), 403, "FORBIDDEN"),
        (Method::POST, "/v1/cluster/snapshot".into(), Some("Bearer ka"), String::new(), 403, "FORBIDDEN"),
        (Method::POST, "/v1/cluster/nodes".into(), Some("Bearer ka"), r#"{"id":5,"api":"127.0.0.1:9","raft":"127.0.0.1:10"}"#.into(), 403, "FORBIDDEN"),
        (Method::DELETE, "/v1/cluster/nodes/1".into(), Some("Bearer kr"), String::new(), 403, "FORBIDDEN"),
        (Method::POST, "/v1/locks/a:held/renew".into(), Some("Bearer kb"), format!(r#"{{"token":{token}}}"#), 403, "NOT_OWNER"),
        (Method::POST, "/v1/locks/a:held/release".into(), Some("Bearer kb"), format!(r#"{{"token":{token}}}"#), 403, "NOT_OWNER"),
        (Method::POST, "/v1/locks/a:held/release".into(), Some("Bearer kb"), r#"{"owner":"w"}"#.into(), 403, "NOT_OWNER"),
    ];
    for (method, path, auth, body, status, code) in rows {
        let mut headers = HeaderMap::new();
        if let Some(a) = auth {
            headers.insert(header::AUTHORIZATION, a.parse().expect("header"));
        }
        let ct = (!body.is_empty()).then_some("application/json");
        let answer = api.request(method.clone(), &path, ct, headers, body).await;
        let what = format!("{method} {path} {auth:?}");
        assert_problem(
            &what,
            &answer,
            StatusCode::from_u16(status).expect("status"),
            code,
        );
        if code == "INVALID_API_KEY" {
            assert_eq!(answer.body["success"], json!(false), "{what}");
            assert_eq!(answer.body["error"], json!("Invalid API key"), "{what}");
        }
    }
    assert_eq!(state().await, before, "a refused request changed state");
    for open in ["/healthz", "/readyz"] {
        assert_eq!(api.get(open).await.status, StatusCode::OK, "{open}");
    }
    // The holder's release by key, `{}`: released, then idempotently not_held.
    for (released, reason) in [(true, Value::Null), (false, json!("not_held"))] {
        let answer = api
            .request(
                Method::POST,
                "/v1/locks/a:held/release",
                JSON,
                with("ka"),
                "{}",
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert_eq!(
            (&answer.body["released"], &answer.body["reason"]),
            (&json!(released), &reason)
        );
    }
    api.shutdown().await;
}

/// Every refusal of a membership change has its code, and a refused change leaves the
/// membership as it was: an unknown node, the last voter, an id or address already taken,
/// a bad body, a node that never catches up (it stays a learner), and a second change
/// while one runs.
#[tokio::test]
async fn membership_changes_that_would_be_unsafe_are_refused_with_their_codes() {
    let api = TestApi::start().await;
    let me = api.node.config().node(1).expect("node 1").clone();
    let members = || async {
        let view = api.get("/v1/cluster").await;
        assert_eq!(view.status, StatusCode::OK, "{}", view.body);
        let ids = |voter: bool| -> Vec<u64> {
            view.body["members"]
                .as_array()
                .expect("members")
                .iter()
                .filter(|m| m["voter"] == voter)
                .map(|m| m["id"].as_u64().expect("id"))
                .collect()
        };
        (ids(true), ids(false))
    };
    let [a, b, c, d] = <[String; 4]>::try_from(unused_addrs(4)).expect("four addresses");
    let add =
        |id: u64, api_addr: &str, raft: &str| json!({"id": id, "api": api_addr, "raft": raft});
    #[rustfmt::skip]
    let rows: Vec<(Method, String, Value, u16, &str)> = vec![
        (Method::DELETE, "/v1/cluster/nodes/9".into(), Value::Null, 404, "NODE_NOT_FOUND"),
        (Method::DELETE, "/v1/cluster/nodes/x".into(), Value::Null, 400, "INVALID_REQUEST"),
        (Method::DELETE, "/v1/cluster/nodes/1".into(), Value::Null, 409, "MEMBERSHIP_UNSAFE"),
        (Method::POST, "/v1/cluster/nodes".into(), add(1, &a, &b), 409, "NODE_CONFLICT"),
        (Method::POST, "/v1/cluster/nodes".into(), add(2, &me.api, &b), 409, "NODE_CONFLICT"),
        (Method::POST, "/v1/cluster/nodes".into(), add(2, &a, &me.raft), 409, "NODE_CONFLICT"),
        (Method::POST, "/v1/cluster/nodes".into(), add(0, &a, &b), 400, "INVALID_REQUEST"),
        (Method::POST, "/v1/cluster/nodes".into(), add(2, "localhost", &b), 400, "INVALID_REQUEST"),
        (Method::POST, "/v1/cluster/nodes".into(), add(2, "0.0.0.0:7004", &b), 400, "INVALID_REQUEST"),
        (Method::POST, "/v1/cluster/nodes".into(), add(2, &a, &a), 400, "INVALID_REQUEST"),
        (Method::POST, "/v1/cluster/nodes".into(), json!({"id": 2, "api": a, "raft": b, "x": 1}), 400, "INVALID_REQUEST"),
    ];
    for (method, path, body, status, code) in rows {
        let answer = if body.is_null() {
            api.send(method.clone(), &path, None, "").await
        } else {
            api.send(method.clone(), &path, JSON, body.to_string())
                .await
        };
        let what = format!("{method} {path} {body}");
        assert_problem(
            &what,
            &answer,
            StatusCode::from_u16(status).expect("status"),
            code,
        );
        assert_eq!(
            members().await,
            (vec![1], vec![]),
            "{what} changed the membership"
        );
    }
    // A node where nothing answers never catches up: NOT_CAUGHT_UP, and while its add
    // waits, any other change is MEMBERSHIP_CHANGE_IN_PROGRESS (its progress shows).
    let waiting = api.post("/v1/cluster/nodes", add(5, &a, &b));
    let meanwhile = async {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let view = api.get("/v1/cluster").await;
            let change = &view.body["membership_change"];
            // The target shows once the learner's entry is appended.
            if change["phase"] == "catching_up" && change["target_index"].is_u64() {
                assert_eq!(change["action"], "add", "{change}");
                assert_eq!(change["node_id"], 5, "{change}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no change under way: {}",
                view.body
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let second = api.post("/v1/cluster/nodes", add(6, &c, &d)).await;
        assert_problem(
            "a second add",
            &second,
            StatusCode::CONFLICT,
            "MEMBERSHIP_CHANGE_IN_PROGRESS",
        );
        let remove = api
            .send(Method::DELETE, "/v1/cluster/nodes/5", None, "")
            .await;
        assert_problem(
            "a remove meanwhile",
            &remove,
            StatusCode::CONFLICT,
            "MEMBERSHIP_CHANGE_IN_PROGRESS",
        );
    };
    let (first, ()) = tokio::join!(waiting, meanwhile);
    assert_problem(
        "an add that never catches up",
        &first,
        StatusCode::CONFLICT,
        "NOT_CAUGHT_UP",
    );
    assert_eq!(
        members().await,
        (vec![1], vec![5]),
        "the node stays a learner"
    );
    assert!(api
        .get("/v1/cluster")
        .await
        .body
        .get("membership_change")
        .is_none());
    // The learner is removed like a voter.
    let removed = api
        .send(Method::DELETE, "/v1/cluster/nodes/5", None, "")
        .await;
    assert_eq!(removed.status, StatusCode::OK, "{}", removed.body);
    assert_eq!(
        removed.body,
        json!({"node_id": 5, "action": "removed", "changed": true, "voters": [1], "learners": []})
    );
    assert_eq!(members().await, (vec![1], vec![]));
    api.shutdown().await;
}
