//! The Raft listener and the storage path against hostile or unlucky conditions: huge
//! bodies without the secret, forged RPCs, requests hyper cannot parse, and a node
//! that runs out of file descriptors while it builds a snapshot.

mod common;

use std::time::{Duration, Instant};

use common::{Options, TestCluster};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound for "answers promptly" on a slow, busy machine.
const PROMPTLY: Duration = Duration::from_secs(5);

/// A single-node cluster with `raft_extra` in its `[raft]` section.
async fn one_node(raft_extra: &str) -> TestCluster {
    TestCluster::start_with(Options {
        nodes: 1,
        raft_extra: raft_extra.into(),
        ..Options::default()
    })
    .await
}

fn pid(cluster: &TestCluster, id: u64) -> u32 {
    cluster.nodes[&id].child.as_ref().expect("running").id()
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`).
fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// `GET /healthz` answers 200 promptly.
async fn assert_healthy(cluster: &TestCluster, id: u64) {
    let started = Instant::now();
    let r = cluster
        .http
        .get(format!("http://{}/healthz", cluster.api(id)))
        .timeout(PROMPTLY)
        .send()
        .await
        .expect("healthz answers");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(started.elapsed() < PROMPTLY);
}

/// Reads one answer (head and a content-length body) from `s`: status, head, body.
async fn read_answer(s: &mut TcpStream) -> (u16, String, String) {
    read_answer_within(s, PROMPTLY).await
}

/// Reads one HTTP answer, each read within `wait`.
async fn read_answer_within(s: &mut TcpStream, wait: Duration) -> (u16, String, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if body.len() >= len {
                return (
                    head[9..12].parse().expect("status"),
                    head.to_string(),
                    body.to_string(),
                );
            }
        }
        let n = tokio::time::timeout(wait, s.read(&mut chunk))
            .await
            .expect("an answer in time")
            .unwrap_or(0);
        assert!(n > 0, "closed before a full answer: {text:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Asserts that `head`/`body` are a problem+json answer with `code`.
fn assert_problem(head: &str, body: &str, code: &str) {
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{head}"
    );
    let problem: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(problem["code"], code, "{body}");
}

/// Sends a request head announcing `declared` body bytes, then streams up to `send`
/// bytes of body until the node answers or closes; returns the answer and the bytes
/// sent.
async fn post_big(
    addr: &str,
    path: &str,
    secret: Option<&str>,
    declared: u64,
    send: u64,
) -> ((u16, String, String), u64) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let secret = secret
        .map(|v| format!("x-baton-secret: {v}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\n{secret}content-type: application/octet-stream\r\ncontent-length: {declared}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.expect("write head");
    let chunk = vec![0xAAu8; 1 << 20];
    let mut sent = 0u64;
    let (mut rd, mut wr) = s.into_split();
    let answer = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(30), rd.read_to_end(&mut buf)).await;
        String::from_utf8_lossy(&buf).to_string()
    });
    while sent < send {
        match tokio::time::timeout(PROMPTLY, wr.write_all(&chunk)).await {
            Ok(Ok(())) => sent += chunk.len() as u64,
            // Reset, closed, or the node stopped reading: it has answered.
            Ok(Err(_)) | Err(_) => break,
        }
    }
    drop(wr);
    let text = answer.await.expect("reader");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no answer after {sent} bytes: {text:?}"));
    let status = head[9..12].parse().expect("status");
    ((status, head.to_string(), body.to_string()), sent)
}

/// Regression: a 256 MiB POST without the secret raised a node's RSS from 48 MB to
/// 573 MB before it answered 401. The secret is now checked from the headers, and the
/// body is never read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_raft_post_without_the_secret_is_refused_before_its_body_is_read() {
    let cluster = one_node("").await;
    let (status, _) = cluster.acquire(1, "before", "a", 60_000).await;
    assert_eq!(status, StatusCode::OK);
    let pid = pid(&cluster, 1);
    let raft = cluster.nodes[&1].raft.clone();
    let (rss_before, hwm_before) = (proc_kib(pid, "VmRSS"), proc_kib(pid, "VmHWM"));

    const BODY: u64 = 256 << 20;
    for (secret, path) in [
        (None, "/raft/append"),
        (Some("wrong-secret"), "/raft/snapshot"),
        (Some("test-secret-but-longer"), "/raft/vote"),
    ] {
        let ((status, head, body), sent) = post_big(&raft, path, secret, BODY, BODY).await;
        assert_eq!(status, 401, "{head}");
        assert_problem(&head, &body, "UNAUTHORIZED");
        assert!(sent < BODY, "the node read all {sent} bytes");
    }
    let (rss_after, hwm_after) = (proc_kib(pid, "VmRSS"), proc_kib(pid, "VmHWM"));
    eprintln!("RSS {rss_before} kB -> {rss_after} kB, peak {hwm_before} kB -> {hwm_after} kB");
    assert!(
        hwm_after < hwm_before + 32 * 1024,
        "peak RSS grew from {hwm_before} kB to {hwm_after} kB"
    );
    assert_healthy(&cluster, 1).await;
    let (status, body) = cluster.call(1, Method::GET, "/v1/locks/before", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["owner"], "a");
}

/// Authenticated RPCs are bounded too: a declared size over `raft.max_message_bytes`
/// (or, for a snapshot, `raft.max_snapshot_bytes`) is refused before reading, and a
/// body that grows past the limit without declaring it is refused when it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_bodies_over_their_limits_are_refused_with_413() {
    let cluster = one_node("max_message_bytes = 1048576\nmax_snapshot_bytes = 4194304").await;
    let raft = cluster.nodes[&1].raft.clone();
    let pid = pid(&cluster, 1);
    let hwm_before = proc_kib(pid, "VmHWM");
    for (path, declared) in [
        ("/raft/append", 2 << 20),
        ("/raft/vote", 64 << 20),
        ("/raft/snapshot", 5 << 20),
        ("/raft/snapshot", 256 << 20),
    ] {
        let ((status, head, body), _) =
            post_big(&raft, path, Some("test-secret"), declared, declared).await;
        assert_eq!(status, 413, "{path} {declared}: {head}");
        assert_problem(&head, &body, "PAYLOAD_TOO_LARGE");
    }
    // No content-length: the body is read until it passes the limit.
    let mut s = TcpStream::connect(&raft).await.expect("connect");
    s.write_all(
        b"POST /raft/append HTTP/1.1\r\nhost: x\r\nx-baton-secret: test-secret\r\ntransfer-encoding: chunked\r\n\r\n",
    )
    .await
    .expect("head");
    let chunk = format!("100000\r\n{}\r\n", "a".repeat(0x10_0000));
    for _ in 0..4 {
        if s.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let (status, head, body) = read_answer(&mut s).await;
    assert_eq!(status, 413, "{head}");
    assert_problem(&head, &body, "PAYLOAD_TOO_LARGE");
    assert!(proc_kib(pid, "VmHWM") < hwm_before + 32 * 1024);
    assert_healthy(&cluster, 1).await;
}

/// Regression: with the shipped secret a forged `vote` moved leadership and bumped the
/// term. Without the right secret (same length, other length, none) it changes nothing,
/// and the refusals are logged at `warn` once per interval with a count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_votes_without_the_secret_change_nothing_and_are_logged_once() {
    let cluster = one_node("").await;
    let raft = cluster.nodes[&1].raft.clone();
    let term = |v: Option<Value>| v.expect("cluster view")["term"].as_u64();
    let term_before = term(cluster.cluster_view(1).await);
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    for i in 0..20 {
        let mut req = http
            .post(format!("http://{raft}/raft/vote"))
            .header("content-type", "application/octet-stream")
            .body(vec![0u8; 64]);
        match i % 3 {
            0 => req = req.header("x-baton-secret", "test-secreT"),
            1 => req = req.header("x-baton-secret", "x"),
            _ => {}
        }
        let r = req.send().await.expect("answer");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "refusal {i}"
        );
    }
    assert_eq!(term(cluster.cluster_view(1).await), term_before);
    // Deterministic: the first refusal is logged at once; the others fall in the
    // same interval (10 s) and are counted.
    let deadline = Instant::now() + PROMPTLY;
    loop {
        let log = cluster.log(1);
        let lines = log.matches("refused a raft request").count();
        if lines >= 1 {
            assert_eq!(lines, 1, "{log}");
            assert!(log.contains("WARN"), "{log}");
            break;
        }
        assert!(Instant::now() < deadline, "no refusal logged:\n{log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_healthy(&cluster, 1).await;
}

/// Requests hyper cannot parse, and path segments that are not UTF-8, are answered
/// with problem+json on both listeners.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparseable_requests_get_problem_answers_on_both_listeners() {
    let cluster = one_node("").await;
    let api = cluster.api(1).to_string();
    let raft = cluster.nodes[&1].raft.clone();
    let long_header = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\nx-long: {}\r\n\r\n",
        "a".repeat(70_000)
    );
    let cases: Vec<(&str, Vec<u8>, &[u16], &str)> = vec![
        (&api, b"GARBAGE\r\n\r\n".to_vec(), &[400], "INVALID_REQUEST"),
        (&raft, b"GARBAGE\r\n\r\n".to_vec(), &[400], "INVALID_REQUEST"),
        (&api, long_header.clone().into_bytes(), &[431], "INVALID_REQUEST"),
        (&raft, long_header.into_bytes(), &[431], "INVALID_REQUEST"),
        (
            &api,
            b"POST /v1/cluster/nodes/%FF/allow-rejoin HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n".to_vec(),
            &[400],
            "INVALID_REQUEST",
        ),
        (
            &raft,
            b"GET /nope HTTP/1.1\r\nhost: x\r\nx-baton-secret: test-secret\r\n\r\n".to_vec(),
            &[404],
            "INVALID_REQUEST",
        ),
    ];
    for (addr, request, statuses, code) in cases {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let _ = s.write_all(&request).await;
        let (status, head, body) = read_answer(&mut s).await;
        assert!(statuses.contains(&status), "{addr}: {head}");
        assert_problem(&head, &body, code);
    }
    assert_healthy(&cluster, 1).await;
}

/// Sets the soft open-files limit of process `pid`; returns the previous limit.
fn set_open_files_limit(pid: u32, soft: Option<u64>) -> libc::rlimit {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit reads `new` and writes `old`, both valid for the call.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            std::ptr::null(),
            &mut old,
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let new = libc::rlimit {
        rlim_cur: soft.unwrap_or(old.rlim_max),
        rlim_max: old.rlim_max,
    };
    // SAFETY: as above.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &new,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    old
}

/// Sends `request` on an open connection and reads the answer.
async fn exchange(s: &mut TcpStream, request: &str) -> (u16, String, String) {
    s.write_all(request.as_bytes()).await.expect("write");
    read_answer(s).await
}

/// Regression: a node out of descriptors failed its next snapshot and stopped for good
/// (fail-stop). Now the build is retried until descriptors come back, and the node
/// serves meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_build_out_of_descriptors_is_retried_until_it_succeeds() {
    let mut cluster = one_node("").await;
    let (status, _) = cluster.acquire(1, "before", "a", 60_000).await;
    assert_eq!(status, StatusCode::OK);
    let before = cluster.cluster_view(1).await.expect("view")["snapshot_index"].as_u64();
    let pid = pid(&cluster, 1);
    // Connections opened now keep working when no new descriptor can be opened: one for
    // the snapshot request (answered once the build is done), one for health checks.
    let mut conn = TcpStream::connect(cluster.api(1)).await.expect("connect");
    let mut snapshot_conn = TcpStream::connect(cluster.api(1)).await.expect("connect");
    let health = "GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n";
    assert_eq!(exchange(&mut conn, health).await.0, 200);

    // Descriptors 0-2 are open, so with a limit of 3 every open fails with EMFILE.
    set_open_files_limit(pid, Some(3));
    snapshot_conn
        .write_all(b"POST /v1/cluster/snapshot HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
        .await
        .expect("write");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cluster.log(1).contains("out of file descriptors; retrying") {
        assert!(
            Instant::now() < deadline,
            "no retry logged:\n{}",
            cluster.log(1)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Still up and serving on the open connection, and no fail-stop.
    assert_eq!(exchange(&mut conn, health).await.0, 200);
    assert!(cluster
        .nodes
        .get_mut(&1)
        .and_then(|n| n.child.as_mut())
        .is_some_and(|c| c.try_wait().ok().flatten().is_none()));

    set_open_files_limit(pid, None);
    // The request waited for the build (a snapshot request joins the build in flight).
    let (status, _, body) = read_answer_within(&mut snapshot_conn, Duration::from_secs(30)).await;
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let view = cluster.cluster_view(1).await;
        let now = view.as_ref().and_then(|v| v["snapshot_index"].as_u64());
        if now > before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no snapshot built:\n{}",
            cluster.log(1)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!cluster.log(1).contains("fail-stop"), "{}", cluster.log(1));
    let (status, body) = cluster.call(1, Method::GET, "/v1/locks/before", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_healthy(&cluster, 1).await;
}
