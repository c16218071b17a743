//! A node in-process: started on a temp dir, served until its shutdown future resolves,
//! and started again on the same dir (which only works once the database was closed).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use baton::api::{self, App};
use baton::config::{Config, NodeConfig};
use baton::node::{Node, Role};
use baton::server::{self, Listeners, Stopped};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tower::ServiceExt;

/// How long the test waits for the single node to elect itself and answer.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

fn single_node(api: SocketAddr, raft: SocketAddr, dir: &Path) -> Arc<Config> {
    let mut config = Config {
        nodes: vec![NodeConfig {
            id: 1,
            api: api.to_string(),
            raft: raft.to_string(),
            data_dir: dir.to_path_buf(),
            grpc: None,
        }],
        raft: Default::default(),
        lease: Default::default(),
        api: Default::default(),
        auth: Default::default(),
        compat: Default::default(),
        tls: Default::default(),
    };
    config.raft.heartbeat_interval_ms = 50;
    config.raft.election_timeout_min_ms = 200;
    config.raft.election_timeout_max_ms = 400;
    config.validate().expect("a valid single-node config");
    Arc::new(config)
}

/// Acquires `key` over HTTP, retrying while the node has no leader yet; returns the token.
async fn acquire(api: SocketAddr, key: &str) -> u64 {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("http client");
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let answer = http
            .post(format!("http://{api}/v1/locks/{key}/acquire"))
            .json(&json!({"owner": "ci", "ttl_ms": 60_000}))
            .send()
            .await;
        if let Ok(r) = answer {
            let status = r.status();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            if status == StatusCode::OK {
                return body["token"].as_u64().expect("a token in the grant");
            }
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        }
        assert!(
            Instant::now() < deadline,
            "no grant within {READY_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GET /v1/locks/{key}?consistency=local` through the router, without a listener.
async fn local_lock(node: &Node, key: &str) -> (StatusCode, Value) {
    let router = api::router(App::new(node.clone()).expect("api state"));
    let req = Request::get(format!("/v1/locks/{key}?consistency=local"))
        .body(Body::empty())
        .expect("a request");
    let resp = router.oneshot(req).await.expect("the router answers");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("a body").to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_node_stops_on_its_signal_and_restarts_on_its_dir_with_its_locks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let api_listener = TcpListener::bind("127.0.0.1:0").await.expect("api port");
    let raft_listener = TcpListener::bind("127.0.0.1:0").await.expect("raft port");
    let api_addr = api_listener.local_addr().expect("api addr");
    let raft_addr = raft_listener.local_addr().expect("raft addr");
    let config = single_node(api_addr, raft_addr, dir.path());

    let node = Node::start(config.clone(), 1).await.expect("node starts");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let listeners = Listeners::new(api_listener, raft_listener, &config);
    let serving = tokio::spawn(server::run(node.clone(), listeners, async {
        let _ = stopped.await;
    }));
    let token = acquire(api_addr, "deploy").await;

    stop.send(()).expect("run is waiting for the signal");
    let why = tokio::time::timeout(READY_TIMEOUT, serving)
        .await
        .expect("run returns after its signal")
        .expect("run does not panic")
        .expect("run stops cleanly");
    assert_eq!(why, Stopped::Requested);
    assert!(
        tokio::net::TcpStream::connect(api_addr).await.is_err(),
        "the API listener is closed"
    );
    assert_eq!(node.role(), Role::Shutdown);
    drop(node);

    // RocksDB refuses a second open of a directory this process holds: starting again
    // on the same dir proves the first node closed its database.
    let node = Node::start(config, 1)
        .await
        .expect("node restarts on its dir");
    let (status, lock) = local_lock(&node, "deploy").await;
    assert_eq!(status, StatusCode::OK, "{lock}");
    assert_eq!(lock["token"], json!(token));
    assert_eq!(lock["owner"], "ci");
    node.shutdown().await;
}
