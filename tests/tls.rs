//! TLS on real processes: a three-node cluster with `[tls]` and mutual TLS between nodes
//! elects a leader over TLS Raft and serves a lock through a follower's TLS relay; a
//! plain-HTTP client on a TLS port gets a clean refusal; the Raft listener refuses a
//! caller without a client certificate; a node with a certificate from another CA is
//! shut out while the others stay healthy; and bad certificate files stop the start with
//! an error naming the setting.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::certs::TestCa;
use common::{Options, TestCluster, TlsOptions, READY_TIMEOUT};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn mtls_cluster() -> TestCluster {
    TestCluster::start_with(Options {
        tls: Some(TlsOptions { client_auth: true }),
        ..Options::default()
    })
    .await
}

#[tokio::test]
async fn mutual_tls_cluster_elects_a_leader_and_serves_a_lock_through_a_follower() {
    let cluster = mtls_cluster().await;
    let leader = cluster.leader().await;
    let follower = cluster.other_than(leader);
    let resp = cluster
        .http
        .post(cluster.url(follower, "/v1/locks/tls-deploy/acquire"))
        .json(&json!({"owner": "ci-1", "ttl_ms": 30_000}))
        .send()
        .await
        .expect("an answer over https");
    assert_eq!(resp.status(), StatusCode::OK);
    let served_by = resp
        .headers()
        .get("x-baton-served-by")
        .map(|v| v.to_str().unwrap().to_string());
    assert_eq!(served_by, Some(leader.to_string()), "relayed to the leader");
    let grant: Value = resp.json().await.unwrap();
    let token = grant["token"].as_u64().expect("a token");
    let (status, body) = cluster
        .call_retry(
            follower,
            Method::POST,
            "/v1/locks/tls-deploy/release",
            Some(json!({"token": token})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["released"], true, "{body}");
}

#[tokio::test]
async fn plain_http_on_a_tls_port_is_refused_with_a_problem() {
    let cluster = mtls_cluster().await;
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    let resp = plain
        .get(format!("http://{}/v1/cluster", cluster.api(1)))
        .send()
        .await
        .expect("an answer in the clear");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "INVALID_REQUEST", "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("https://"),
        "{body}"
    );
    // The node goes on serving TLS.
    let (status, _) = cluster.call(1, Method::GET, "/readyz", None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn raft_listener_with_client_auth_refuses_a_caller_without_a_node_certificate() {
    let cluster = mtls_cluster().await;
    let raft = &cluster.nodes[&1].raft;
    let url = format!("https://{raft}/raft/initialized");
    let dir = cluster.dir.path();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(dir.join("ca.pem")).unwrap()).unwrap();
    let client = |identity: Option<reqwest::Identity>| {
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca.clone())
            .timeout(Duration::from_secs(5));
        if let Some(id) = identity {
            b = b.identity(id);
        }
        b.build().unwrap()
    };
    // The secret alone does not get past the handshake.
    let refused = client(None)
        .get(&url)
        .header("x-baton-secret", "test-secret")
        .send()
        .await;
    assert!(refused.is_err(), "answered without a client certificate");
    // A node's certificate does.
    let mut pem = std::fs::read(dir.join("node2.pem")).unwrap();
    pem.extend(std::fs::read(dir.join("node2.key")).unwrap());
    let admitted = client(Some(reqwest::Identity::from_pem(&pem).unwrap()))
        .get(&url)
        .header("x-baton-secret", "test-secret")
        .send()
        .await
        .expect("an answer with a node certificate");
    assert_eq!(admitted.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_node_with_a_certificate_from_another_ca_is_shut_out_and_the_cluster_stays_healthy() {
    let mut cluster = mtls_cluster().await;
    cluster.leader().await;
    // Node 3 comes back with a certificate and a CA of its own: same secret, same data.
    cluster.kill(3);
    let rogue = TestCa::new("rogue CA");
    let (cert, key) = rogue.node_cert();
    let dir = cluster.dir.path().to_path_buf();
    std::fs::write(dir.join("node3.pem"), cert).unwrap();
    std::fs::write(dir.join("node3.key"), key).unwrap();
    std::fs::write(dir.join("ca3.pem"), rogue.pem()).unwrap();
    cluster.spawn(3);

    let leader = wait_for_leader_among(&cluster, &[1, 2]).await;
    // The healthy two keep serving writes.
    let (status, body) = cluster.acquire(leader, "after-rogue", "ci-1", 30_000).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The leader cannot reach node 3 over TLS, and says why.
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let view = cluster.cluster_view(leader).await.unwrap_or(Value::Null);
        let peer3 = view["peers"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["id"] == 3).cloned())
            .unwrap_or(Value::Null);
        let error = peer3["error"].as_str().unwrap_or("").to_lowercase();
        if peer3["reachable"] == false && (error.contains("certificate") || error.contains("tls")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 3 still reachable or no TLS error: {view}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Node 3 never learns the new lock (nothing it is sent passes the handshake).
    let trusts_rogue = reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(rogue.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let local: Value = trusts_rogue
        .get(cluster.url(3, "/v1/locks/after-rogue?consistency=local"))
        .send()
        .await
        .expect("node 3 answers clients that trust its CA")
        .json()
        .await
        .unwrap();
    assert_eq!(
        local["code"], "LOCK_NOT_FOUND",
        "node 3 applied an entry from a cluster it should not reach: {local}"
    );
    // And the leader stays the leader.
    assert_eq!(wait_for_leader_among(&cluster, &[1, 2]).await, leader);
}

/// Polls nodes `ids` until both agree on a leader among them.
async fn wait_for_leader_among(cluster: &TestCluster, ids: &[u64]) -> u64 {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let mut seen = Vec::new();
        for id in ids {
            let view = cluster.cluster_view(*id).await.unwrap_or(Value::Null);
            seen.push(view["leader_id"].as_u64());
        }
        if let Some(Some(l)) = seen.first() {
            if ids.contains(l) && seen.iter().all(|s| *s == Some(*l)) {
                return *l;
            }
        }
        assert!(Instant::now() < deadline, "no agreed leader: {seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A one-node loopback config with `[tls]` files `cert`, `key` in `dir`.
fn single_node_config(dir: &Path, tls: &str) -> std::path::PathBuf {
    let path = dir.join("cluster.toml");
    std::fs::write(
        &path,
        format!(
            "[[nodes]]\nid = 1\napi = \"127.0.0.1:1\"\nraft = \"127.0.0.1:2\"\ndata_dir = \"{}\"\n[tls]\n{tls}",
            dir.join("n1").display()
        ),
    )
    .unwrap();
    path
}

fn start_error(config: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["server", "--node", "1", "--config"])
        .arg(config)
        .output()
        .expect("run baton server");
    assert!(!out.status.success(), "started with bad tls files");
    assert!(
        out.status.code().is_some(),
        "died by a signal: {:?}",
        out.status
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn bad_certificate_files_stop_the_start_with_an_error_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = TestCa::new("test CA");
    let (cert, key) = ca.node_cert();
    let (_, other_key) = ca.node_cert();
    std::fs::write(d.join("good.pem"), &cert).unwrap();
    std::fs::write(d.join("good.key"), &key).unwrap();
    std::fs::write(d.join("other.key"), &other_key).unwrap();
    std::fs::write(d.join("garbage.pem"), "not a certificate\n").unwrap();
    let files = |cert: &str, key: &str| {
        format!(
            "cert_file = \"{}\"\nkey_file = \"{}\"\n",
            d.join(cert).display(),
            d.join(key).display()
        )
    };
    for (tls, expected) in [
        (files("missing.pem", "good.key"), "tls.cert_file"),
        (files("garbage.pem", "good.key"), "tls.cert_file"),
        (files("good.pem", "garbage.pem"), "tls.key_file"),
        (files("good.pem", "good.pem"), "tls.key_file"),
        (files("good.pem", "other.key"), "tls.key_file"),
        (
            format!(
                "{}ca_file = \"{}\"\nclient_auth = true\n",
                files("good.pem", "good.key"),
                d.join("garbage.pem").display()
            ),
            "tls.ca_file",
        ),
    ] {
        let err = start_error(&single_node_config(d, &tls));
        assert!(err.contains(expected), "{expected} not in: {err}");
    }
}

/// `https://` endpoints of the cluster, comma-separated.
fn https_endpoints(cluster: &TestCluster) -> String {
    (1..=3)
        .map(|id| format!("https://{}", cluster.api(id)))
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test(flavor = "multi_thread")]
async fn rust_client_cli_and_bench_speak_tls_with_the_cluster_ca() {
    let cluster = mtls_cluster().await;
    cluster.leader().await;
    let endpoints = https_endpoints(&cluster);
    let ca = cluster.dir.path().join("ca.pem");

    // The Rust client, trusting the cluster's CA.
    let list: Vec<String> = endpoints.split(',').map(String::from).collect();
    let client = baton::client::Client::new(&list)
        .unwrap()
        .with_ca_file(&ca)
        .unwrap();
    let granted = client
        .try_acquire("tls-client", "rust", Duration::from_secs(30))
        .await
        .expect("an acquire over https");
    assert!(granted.lease.token > 0);
    // Without the CA, the system's roots do not vouch for the test CA.
    let untrusting = baton::client::Client::new(&list)
        .unwrap()
        .with_call_timeout(Duration::from_millis(500));
    assert!(untrusting
        .try_acquire("tls-client-2", "rust", Duration::from_secs(30))
        .await
        .is_err());

    // The CLI, with --ca-file and with BATON_CA_FILE.
    let baton = |args: &[&str], ca_env: Option<&Path>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_baton"));
        c.args(args).env_remove("BATON_CA_FILE");
        if let Some(ca) = ca_env {
            c.env("BATON_CA_FILE", ca);
        }
        c.output().expect("run baton")
    };
    let ca_arg = ca.display().to_string();
    let out = baton(
        &[
            "acquire",
            "tls-cli",
            "--owner",
            "cli",
            "--endpoints",
            &endpoints,
            "--ca-file",
            &ca_arg,
        ],
        None,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(token.parse::<u64>().is_ok(), "not a token: {token:?}");
    let out = baton(
        &["release", "tls-cli", &token, "--endpoints", &endpoints],
        Some(&ca),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // `baton bench` over TLS: one handshake per connection, then keep-alive.
    let out = baton(
        &[
            "bench",
            "--endpoints",
            &endpoints,
            "--ca-file",
            &ca_arg,
            "--mode",
            "cycle",
            "--conns",
            "2",
            "--target",
            "all",
            "--duration",
            "500ms",
            "--warmup",
            "0s",
            "--json",
        ],
        None,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {err}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(report["errors_total"], 0, "{report}");
    assert!(
        report["by_op"]["acquire"]["ops"].as_u64().unwrap() > 0,
        "{report}"
    );
}
