//! Tracker's gRPC service (`tracker.lock.v1alpha1.LockService`) on a real three-node
//! cluster, with a tonic client and with `grpcurl` through server reflection: every
//! row of the contract and its status codes, concurrent creates, unlock through a
//! follower, pagination, a leader killed between create and unlock, bad input that
//! changes nothing, and a listener that survives hostile connections and stops with
//! the node.
//!
//! The grpcurl test needs `grpcurl` (`GRPCURL` or the `PATH`, see
//! [`common::grpcurl`]); it fails without one in CI and is skipped elsewhere.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use baton::compat::tracker::grpc::proto::lock_service_client::LockServiceClient;
use baton::compat::tracker::grpc::proto::{
    CreateLockRequest, GetLockRequest, ListLocksRequest, ListLocksResponse, Lock, UnLockRequest,
};
use common::{Options, TestCluster, READY_TIMEOUT};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;
use tonic::Code;

const SERVICE: &str = "tracker.lock.v1alpha1.LockService";

async fn cluster_with(api_extra: &str) -> TestCluster {
    TestCluster::start_with(Options {
        grpc: true,
        api_extra: api_extra.to_string(),
        ..Options::default()
    })
    .await
}

async fn cluster() -> TestCluster {
    cluster_with("").await
}

async fn client(c: &TestCluster, node: u64) -> LockServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{}", c.grpc(node)))
        .expect("a valid uri")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .expect("connect to the grpc listener");
    LockServiceClient::new(channel)
}

fn create_req(service: &str, who: &str) -> CreateLockRequest {
    CreateLockRequest {
        service: service.into(),
        who: who.into(),
        ttl_ms: 0,
    }
}

async fn create(
    client: &mut LockServiceClient<Channel>,
    service: &str,
    who: &str,
) -> Result<Lock, tonic::Status> {
    client
        .create_lock(create_req(service, who))
        .await
        .map(|r| r.into_inner())
}

async fn list(
    client: &mut LockServiceClient<Channel>,
    page: i32,
    per_page: i32,
) -> Result<ListLocksResponse, tonic::Status> {
    client
        .list_locks(ListLocksRequest { page, per_page })
        .await
        .map(|r| r.into_inner())
}

fn assert_lock(lock: &Lock, service: &str, who: &str) {
    assert!(lock.id.parse::<u64>().is_ok(), "id {} is a token", lock.id);
    assert_eq!((lock.service.as_str(), lock.who.as_str()), (service, who));
    let b = lock.created_at.as_bytes();
    assert!(
        b.len() == 20 && b[10] == b'T' && b[19] == b'Z',
        "createdAt {} is RFC 3339 UTC in whole seconds",
        lock.created_at
    );
}

/// Retries `op` while it answers `UNAVAILABLE` (an election after a kill), up to the
/// ready timeout.
async fn until_available<T, F, Fut>(mut op: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        match op().await {
            Err(s) if s.code() == Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_rows_answer_tracker_replies_and_status_codes_through_a_follower() {
    let c = cluster().await;
    let leader = c.leader().await;
    let follower = c.other_than(leader);
    let mut grpc = client(&c, follower).await;

    let lock = create(&mut grpc, "deploy-web", "pipeline").await.unwrap();
    assert_lock(&lock, "deploy-web", "pipeline");

    // Not re-entrant: the same who is refused like anyone else.
    for who in ["pipeline", "someone-else"] {
        let s = create(&mut grpc, "deploy-web", who).await.unwrap_err();
        assert_eq!(s.code(), Code::AlreadyExists, "{who}: {s:?}");
        assert_eq!(s.message(), "lock already exists");
    }

    let got = grpc
        .get_lock(GetLockRequest {
            id: lock.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, lock);
    // The same lock table as REST.
    let (status, rest) = c
        .call(
            leader,
            Method::GET,
            &format!("/api/v1alpha1/lock/{}", lock.id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rest}");
    assert_eq!(rest["createdAt"], lock.created_at.as_str());

    for id in [
        "null",
        "",
        "abc",
        "..",
        "1/2",
        "99999999",
        "-1",
        "99999999999999999999999",
    ] {
        let s = grpc
            .get_lock(GetLockRequest { id: id.into() })
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::NotFound, "get {id:?}: {s:?}");
        assert_eq!(s.message(), "lock not found");
        let s = grpc
            .un_lock(UnLockRequest { id: id.into() })
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::NotFound, "unlock {id:?}: {s:?}");
    }

    // Unlock through the follower: whoever holds it.
    let reply = grpc
        .un_lock(UnLockRequest {
            id: lock.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reply.success);
    assert_eq!(reply.message, "Lock released successfully");
    let s = grpc
        .un_lock(UnLockRequest {
            id: lock.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!((s.code(), s.message()), (Code::NotFound, "lock not found"));
    let s = grpc
        .get_lock(GetLockRequest { id: lock.id })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound);
    // Free again.
    let again = create(&mut grpc, "deploy-web", "someone-else")
        .await
        .unwrap();
    assert_lock(&again, "deploy-web", "someone-else");
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_bad_input_is_invalid_argument_and_changes_nothing() {
    let c = cluster().await;
    let leader = c.leader().await;
    let follower = c.other_than(leader);
    let mut grpc = client(&c, follower).await;
    let held = create(&mut grpc, "held", "owner").await.unwrap();
    let before = list(&mut grpc, 0, 0).await.unwrap();
    assert_eq!(before.total, 1);

    let bad_creates = [
        create_req("", "who"),
        create_req("svc", ""),
        create_req("team/deploy", "who"),
        create_req("has space", "who"),
        create_req(&"k".repeat(300), "who"),
        CreateLockRequest {
            service: "svc".into(),
            who: "who".into(),
            // Below the cluster's lease.min_ttl_ms.
            ttl_ms: 1,
        },
    ];
    for req in bad_creates {
        let s = grpc.create_lock(req.clone()).await.unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument, "{req:?}: {s:?}");
        assert!(!s.message().is_empty());
    }
    for (page, per_page) in [(-1, 10), (1, -5), (1, 1_000_000)] {
        let s = list(&mut grpc, page, per_page).await.unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument, "{page} {per_page}: {s:?}");
    }
    // A message above api.max_body_bytes is refused before it is decoded.
    let s = create(&mut grpc, &"x".repeat(64 * 1024), "who")
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::OutOfRange, "{s:?}");

    let after = list(&mut grpc, 0, 0).await.unwrap();
    assert_eq!(after, before, "bad input changed nothing");
    let still = grpc
        .get_lock(GetLockRequest {
            id: held.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(still, held);
    // Every node still serves.
    for id in [1, 2, 3] {
        let mut other = client(&c, id).await;
        assert_eq!(list(&mut other, 0, 0).await.unwrap().total, 1, "node {id}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_concurrent_creates_for_one_service_give_exactly_one_ok() {
    let c = cluster().await;
    let mut tasks = Vec::new();
    for i in 0..9u64 {
        let mut grpc = client(&c, 1 + i % 3).await;
        tasks.push(tokio::spawn(async move {
            create(&mut grpc, "one-service", &format!("job-{i}")).await
        }));
    }
    let mut ok = Vec::new();
    for t in tasks {
        match t.await.expect("task") {
            Ok(lock) => ok.push(lock),
            Err(s) => assert_eq!(s.code(), Code::AlreadyExists, "{s:?}"),
        }
    }
    assert_eq!(ok.len(), 1, "exactly one create wins: {ok:?}");
    let mut grpc = client(&c, 2).await;
    let page = list(&mut grpc, 0, 0).await.unwrap();
    assert_eq!(page.total, 1);
    assert_eq!(page.locks, ok);
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_list_pages_are_sorted_by_service_and_count_every_live_lock() {
    let c = cluster().await;
    let mut grpc = client(&c, c.leader().await).await;
    for service in ["svc-c", "svc-a", "svc-e", "svc-b", "svc-d"] {
        create(&mut grpc, service, "lister").await.unwrap();
    }
    let mut follower = client(&c, c.other_than(c.leader().await)).await;
    let mut seen = Vec::new();
    for page in 1..=3 {
        let p = list(&mut follower, page, 2).await.unwrap();
        assert_eq!((p.total, p.page, p.per_page), (5, page, 2));
        assert!(p.locks.len() <= 2);
        seen.extend(p.locks.into_iter().map(|l| l.service));
    }
    assert_eq!(seen, ["svc-a", "svc-b", "svc-c", "svc-d", "svc-e"]);
    let beyond = list(&mut follower, 4, 2).await.unwrap();
    assert!(beyond.locks.is_empty());
    assert_eq!(beyond.total, 5);
    let all = list(&mut follower, 0, 0).await.unwrap();
    assert_eq!((all.page, all.per_page, all.locks.len()), (1, 100, 5));
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_unlock_after_the_leader_is_killed_releases_the_lock() {
    let mut c = cluster().await;
    let leader = c.leader().await;
    let mut grpc = client(&c, leader).await;
    let lock = create(&mut grpc, "migrate", "job").await.unwrap();
    c.kill(leader);
    let survivor = c.other_than(leader);
    let mut grpc = client(&c, survivor).await;

    let got = until_available(|| {
        let mut g = grpc.clone();
        let id = lock.id.clone();
        async move { g.get_lock(GetLockRequest { id }).await }
    })
    .await
    .expect("the lock survives the leader")
    .into_inner();
    assert_eq!(got, lock);
    let unlocked = until_available(|| {
        let mut g = grpc.clone();
        let id = lock.id.clone();
        async move { g.un_lock(UnLockRequest { id }).await }
    })
    .await;
    // A retried unlock may find the lock released by its own lost first attempt.
    match unlocked {
        Ok(r) => assert!(r.into_inner().success),
        Err(s) => assert_eq!(s.code(), Code::NotFound, "{s:?}"),
    }
    let s = grpc
        .get_lock(GetLockRequest { id: lock.id })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound);
    let again = create(&mut grpc, "migrate", "job").await.unwrap();
    assert_lock(&again, "migrate", "job");
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_without_a_leader_is_unavailable() {
    let mut c = cluster().await;
    let leader = c.leader().await;
    let survivor = c.other_than(leader);
    for id in [1, 2, 3] {
        if id != survivor {
            c.kill(id);
        }
    }
    let mut grpc = client(&c, survivor).await;
    // Until the survivor notices, a read may still find the old leader gone: every
    // answer is UNAVAILABLE, never a false NOT_FOUND or ALREADY_EXISTS.
    let s = create(&mut grpc, "nobody-leads", "who").await.unwrap_err();
    assert_eq!(s.code(), Code::Unavailable, "{s:?}");
    let s = list(&mut grpc, 0, 0).await.unwrap_err();
    assert_eq!(s.code(), Code::Unavailable, "{s:?}");
    let s = grpc
        .un_lock(UnLockRequest { id: "5".into() })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unavailable, "{s:?}");
}

/// Reads from `stream` until the server closes it; how long that took, or `None` when
/// it is still open after `within`.
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = within.checked_sub(start.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            // The server's SETTINGS, a GOAWAY: keep reading until it closes.
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_listener_closes_garbage_and_silent_connections_and_serves_others() {
    // A one-second idle timeout (api.header_read_timeout_ms), as for the HTTP listener.
    let c = cluster_with("header_read_timeout_ms = 1000").await;
    let node = c.other_than(c.leader().await);
    let addr = c.grpc(node).to_string();

    let mut garbage = tokio::net::TcpStream::connect(&addr).await.unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nnot an http/2 preface at all")
        .await
        .unwrap();
    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // A client that sends the preface and then nothing.
    let mut half = tokio::net::TcpStream::connect(&addr).await.unwrap();
    half.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();

    // Meanwhile a real client is served.
    let mut grpc = client(&c, node).await;
    let lock = create(&mut grpc, "beside-garbage", "ok").await.unwrap();
    assert_lock(&lock, "beside-garbage", "ok");

    assert!(
        closed_within(&mut garbage, Duration::from_secs(10))
            .await
            .is_some(),
        "a garbage preface closes its connection"
    );
    for (name, stream) in [("silent", &mut silent), ("half", &mut half)] {
        let took = closed_within(stream, Duration::from_secs(15)).await;
        assert!(
            took.is_some(),
            "a {name} connection is closed after the idle timeout"
        );
    }
    // A client whose connection idled out makes its next call on a new one.
    let got = until_available(|| {
        let mut g = grpc.clone();
        let id = lock.id.clone();
        async move { g.get_lock(GetLockRequest { id }).await }
    })
    .await
    .unwrap()
    .into_inner();
    assert_eq!(got, lock);
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_listener_stops_with_the_node() {
    let mut c = cluster().await;
    let node = c.other_than(c.leader().await);
    let addr = c.grpc(node).to_string();
    let mut grpc = client(&c, node).await;
    list(&mut grpc, 0, 0).await.unwrap();
    // An idle client connection stays open until the node stops.
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let start = Instant::now();
    assert_eq!(c.terminate(node), Some(0), "log:\n{}", c.log(node));
    // Within the node's drain timeout (5 s): the idle connections were closed at once.
    assert!(
        start.elapsed() < baton::server::DRAIN_TIMEOUT,
        "stopped in {:?}",
        start.elapsed()
    );
    assert!(closed_within(&mut idle, Duration::from_secs(5))
        .await
        .is_some());
    assert!(
        tokio::net::TcpStream::connect(&addr).await.is_err(),
        "nothing listens on the gRPC address after the stop"
    );
}

/// Runs `grpcurl -plaintext [-d DATA] ADDR ARGS...`; exit success and stdout + stderr.
async fn grpcurl(bin: &Path, addr: &str, data: Option<&str>, args: &[&str]) -> (bool, String) {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("-plaintext");
    if let Some(d) = data {
        cmd.args(["-d", d]);
    }
    let out = cmd
        .arg(addr)
        .args(args)
        .output()
        .await
        .expect("grpcurl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn grpcurl_calls_every_method_through_reflection_without_a_proto_file() {
    let Some(bin) = common::grpcurl() else {
        return;
    };
    let c = cluster().await;
    let node = c.other_than(c.leader().await);
    let addr = c.grpc(node).to_string();
    let method = |m: &str| format!("{SERVICE}/{m}");

    let (ok, text) = grpcurl(&bin, &addr, None, &["list"]).await;
    assert!(ok, "{text}");
    for service in [
        SERVICE,
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(text.lines().any(|l| l == service), "{service} in {text}");
    }
    let (ok, text) = grpcurl(&bin, &addr, None, &["describe", SERVICE]).await;
    assert!(ok && text.contains("rpc CreateLock"), "{text}");

    // Two concurrent creates for one service: exactly one succeeds.
    let create = method("CreateLock");
    let create = [create.as_str()];
    let leader_addr = c.grpc(c.leader().await).to_string();
    let (a, b) = tokio::join!(
        grpcurl(
            &bin,
            &addr,
            Some(r#"{"service":"grpcurl-svc","who":"a"}"#),
            &create
        ),
        grpcurl(
            &bin,
            &leader_addr,
            Some(r#"{"service":"grpcurl-svc","who":"b"}"#),
            &create
        ),
    );
    assert!(a.0 != b.0, "exactly one create succeeds: {a:?} {b:?}");
    let (created, refused) = if a.0 { (a.1, b.1) } else { (b.1, a.1) };
    assert!(
        refused.contains("Code: AlreadyExists") && refused.contains("lock already exists"),
        "{refused}"
    );
    let lock: Value = serde_json::from_str(&created).expect("grpcurl prints the lock as JSON");
    let id = lock["id"].as_str().expect("id").to_string();
    assert_eq!(lock["service"], "grpcurl-svc");
    assert!(lock["createdAt"].is_string(), "{lock}");

    let (ok, text) = grpcurl(
        &bin,
        &addr,
        Some(&json!({ "id": id }).to_string()),
        &[&method("GetLock")],
    )
    .await;
    assert!(ok, "{text}");
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), lock);

    let (ok, text) = grpcurl(
        &bin,
        &addr,
        Some(r#"{"page":1,"per_page":10}"#),
        &[&method("ListLocks")],
    )
    .await;
    assert!(ok, "{text}");
    let page: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(page["locks"], json!([lock]));
    // proto3 JSON: int64 as a string, int32 as a number.
    assert_eq!(
        (&page["total"], &page["perPage"]),
        (&json!("1"), &json!(10))
    );

    let (ok, text) = grpcurl(
        &bin,
        &addr,
        Some(r#"{"service":"a/b","who":"x"}"#),
        &[&method("CreateLock")],
    )
    .await;
    assert!(!ok && text.contains("Code: InvalidArgument"), "{text}");

    let unlock = json!({ "id": id }).to_string();
    let (ok, text) = grpcurl(&bin, &addr, Some(&unlock), &[&method("UnLock")]).await;
    assert!(ok, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({"success": true, "message": "Lock released successfully"})
    );
    let (ok, text) = grpcurl(&bin, &addr, Some(&unlock), &[&method("UnLock")]).await;
    assert!(
        !ok && text.contains("Code: NotFound") && text.contains("lock not found"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reflection_v1_describes_the_service_to_a_v1_client() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let c = cluster().await;
    let channel = Channel::from_shared(format!("http://{}", c.grpc(1)))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().expect("one answer");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a service list: {answer:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&SERVICE), "{names:?}");
}

const LOCKER: &str = "key-locker-0123456789";
const OTHER: &str = "key-other-0123456789";
const READER: &str = "key-reader-0123456789";
const OPS: &str = "key-ops-0123456789";

/// `msg` with `name: value` metadata.
fn with_meta<T>(msg: T, name: &'static str, value: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert(name, value.parse().expect("an ASCII metadata value"));
    req
}

fn bearer<T>(msg: T, key: &str) -> tonic::Request<T> {
    with_meta(msg, "authorization", &format!("Bearer {key}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_takes_the_same_api_keys_and_permissions_as_rest() {
    use baton::auth::keys::hash_field;
    let keys = format!(
        "locker {} lock=app: read=app:\nother {} lock=app: read=app:\nreader {} read=app:\nops {} admin=*\n",
        hash_field(LOCKER),
        hash_field(OTHER),
        hash_field(READER),
        hash_field(OPS)
    );
    let c = TestCluster::start_with(Options {
        grpc: true,
        auth: Some((keys, OPS.to_string())),
        ..Options::default()
    })
    .await;
    let leader = c.leader().await;
    let follower = c.other_than(leader);
    let mut grpc = client(&c, follower).await;
    let create = || create_req("app:deploy", "ci");

    // No key, an unknown key, a forged relayed identity: UNAUTHENTICATED, nothing made.
    for req in [
        tonic::Request::new(create()),
        bearer(create(), "not-a-known-key"),
        with_meta(create(), "x-baton-principal", "ops"),
        with_meta(create(), "x-baton-forwarded-by", "1"),
    ] {
        let s = grpc.create_lock(req).await.unwrap_err();
        assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    }
    // `read` only, or `lock` outside the key's prefix: PERMISSION_DENIED.
    let s = grpc
        .create_lock(bearer(create(), READER))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    let s = grpc
        .create_lock(bearer(create_req("elsewhere", "ci"), LOCKER))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    let all = grpc
        .list_locks(bearer(ListLocksRequest::default(), OPS))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.total, 0, "refused calls created nothing");

    // `locker` creates (Bearer) through a follower; `reader` reads it (X-API-Key) but
    // may not list every key.
    let lock = grpc
        .create_lock(bearer(create(), LOCKER))
        .await
        .unwrap()
        .into_inner();
    assert_lock(&lock, "app:deploy", "ci");
    let got = grpc
        .get_lock(with_meta(
            GetLockRequest {
                id: lock.id.clone(),
            },
            "x-api-key",
            READER,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, lock);
    let s = grpc
        .list_locks(bearer(ListLocksRequest::default(), READER))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");

    // Another application's unlock is refused, directly and relayed; `admin` unlocks.
    for node in [leader, follower] {
        let mut g = client(&c, node).await;
        let s = g
            .un_lock(bearer(
                UnLockRequest {
                    id: lock.id.clone(),
                },
                OTHER,
            ))
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::PermissionDenied, "node {node}: {s:?}");
    }
    let reply = grpc
        .un_lock(bearer(
            UnLockRequest {
                id: lock.id.clone(),
            },
            OPS,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(reply.success);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_with_grpc_starts_under_a_small_open_files_limit() {
    // 1,024 descriptors cannot hold the API's 4,096 and gRPC's 1,024 connections: both
    // caps are lowered, and the node serves both.
    let c = TestCluster::start_with(Options {
        grpc: true,
        open_files_limit: Some(1_024),
        ..Options::default()
    })
    .await;
    let node = c.other_than(c.leader().await);
    let mut grpc = client(&c, node).await;
    let lock = create(&mut grpc, "small-limit", "ok").await.unwrap();
    assert_lock(&lock, "small-limit", "ok");
    assert!(c.log(node).contains("lowered to fit the open-files limit"));
}
