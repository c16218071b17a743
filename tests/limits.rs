//! A node survives careless and hostile clients: more idle connections than it has
//! descriptors, and connections that send half a request and stall.

mod common;

use std::time::{Duration, Instant};

use common::{Options, TestCluster};
use reqwest::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound for "answers promptly" on a slow, busy machine (the target is far lower).
const PROMPTLY: Duration = Duration::from_secs(5);

/// `GET /healthz` on a fresh connection; the time it took.
async fn healthz(api: &str) -> Duration {
    let started = Instant::now();
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(PROMPTLY)
        .build()
        .expect("client");
    let r = http
        .get(format!("http://{api}/healthz"))
        .send()
        .await
        .expect("healthz answers while the node is flooded");
    assert_eq!(r.status(), StatusCode::OK);
    started.elapsed()
}

async fn snapshot_index(cluster: &TestCluster, id: u64) -> Option<u64> {
    cluster.cluster_view(id).await?["snapshot_index"].as_u64()
}

/// Regression: 1,100 idle connections to a node limited to 1,024 open files used up its
/// descriptors; its next snapshot failed with "Too many open files" and the node
/// stopped for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_idle_connections_than_descriptors_do_not_stop_a_node() {
    let mut cluster = TestCluster::start_with(Options {
        open_files_limit: Some(1_024),
        ..Options::default()
    })
    .await;
    let leader = cluster.leader().await;
    let target = cluster.other_than(leader);
    let api = cluster.api(target).to_string();
    let (status, _) = cluster.acquire(target, "before", "a", 60_000).await;
    assert_eq!(status, StatusCode::OK);

    let mut idle = Vec::new();
    for _ in 0..1_100 {
        match TcpStream::connect(&api).await {
            Ok(s) => idle.push(s),
            Err(e) => panic!("connect {}: {e}", idle.len()),
        }
    }
    healthz(&api).await;

    // A snapshot needs files: it must still be built.
    let before = snapshot_index(&cluster, target).await;
    let (status, body) = cluster
        .call(target, Method::POST, "/v1/cluster/snapshot", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while snapshot_index(&cluster, target).await <= before {
        assert!(
            Instant::now() < deadline,
            "no snapshot built; log:\n{}",
            cluster.log(target)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = cluster.acquire(target, "during", "b", 60_000).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(cluster
        .nodes
        .get_mut(&target)
        .is_some_and(|n| n
            .child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())));
    assert!(cluster
        .log(target)
        .contains("api.max_connections lowered to fit the open-files limit"));
    drop(idle);
}

/// Connections that send nothing, half a header, or a header and half a body are
/// closed by the node after its read timeouts, and others are served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_at_the_read_timeouts() {
    let cluster = TestCluster::start_with(Options {
        api_extra: "header_read_timeout_ms = 1000\nbody_read_timeout_ms = 1000".into(),
        ..Options::default()
    })
    .await;
    let api = cluster.api(cluster.leader().await).to_string();
    let partial: [&[u8]; 3] = [
        b"",
        b"POST /v1/locks/k/acquire HTTP/1.1\r\nhost: x\r\ncontent-ty",
        b"POST /v1/locks/k/acquire HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n{\"owner\":",
    ];
    let mut slow = Vec::new();
    for i in 0..300 {
        let mut s = TcpStream::connect(&api).await.expect("connect");
        s.write_all(partial[i % 3]).await.expect("write");
        slow.push(s);
    }
    healthz(&api).await;
    let started = Instant::now();
    for (i, s) in slow.iter_mut().enumerate() {
        // Read whatever the node answers (a 400 for the stalled body) until it closes.
        let mut buf = [0u8; 1024];
        loop {
            let deadline = Duration::from_secs(20).saturating_sub(started.elapsed());
            match tokio::time::timeout(deadline, s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => continue,
                Err(_) => panic!("slow connection {i} still open after 20 s"),
            }
        }
    }
    let (status, _) = cluster.acquire(1, "after", "a", 60_000).await;
    assert_eq!(status, StatusCode::OK);
}
