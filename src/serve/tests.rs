//! The limits of [`serve`] against real sockets on loopback.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Notify};

use super::*;

/// Generous bound for anything that should happen "at once" on a busy machine.
const PROMPTLY: Duration = Duration::from_secs(10);

struct Server {
    addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
    /// Requests currently inside `/slow`.
    slow_inside: Arc<AtomicUsize>,
    /// Releases every `/slow` request.
    release: Arc<Notify>,
}

async fn start(limits: ServeLimits) -> Server {
    start_with(limits, None).await
}

async fn start_with(limits: ServeLimits, tls: Option<Arc<rustls::ServerConfig>>) -> Server {
    let slow_inside = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Notify::new());
    let router = {
        let (inside, release) = (slow_inside.clone(), release.clone());
        Router::new()
            .route("/fast", get(|| async { "fast" }))
            .route(
                "/slow",
                get(move || {
                    let (inside, release) = (inside.clone(), release.clone());
                    async move {
                        let released = release.notified();
                        inside.fetch_add(1, Ordering::SeqCst);
                        released.await;
                        "slow"
                    }
                }),
            )
            .route(
                "/echo",
                post(|body: axum::body::Bytes| async move { body.len().to_string() }),
            )
    };
    let listener = bind_listener("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop_tx, stop_rx) = oneshot::channel();
    let done = tokio::spawn(serve(listener, router, limits, tls, async {
        let _ = stop_rx.await;
    }));
    Server {
        addr,
        stop: Some(stop_tx),
        done,
        slow_inside,
        release,
    }
}

fn limits(max_connections: usize) -> ServeLimits {
    ServeLimits {
        max_connections,
        header_read_timeout: Duration::from_secs(30),
        body_read_timeout: Duration::from_secs(30),
    }
}

/// Sends `request` on `stream` and reads the answer's status line and body (the
/// responses here are small and carry content-length).
async fn exchange<S>(stream: &mut S, request: &str) -> (u16, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(PROMPTLY, stream.read(&mut chunk))
            .await
            .expect("an answer in time")
            .expect("read");
        buf.extend_from_slice(&chunk[..n]);
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
                let status = head[9..12].parse().expect("status code");
                return (status, body.to_string());
            }
        }
        assert!(n > 0, "connection closed before a full answer: {text:?}");
    }
}

fn get_request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n")
}

/// Waits until the peer closes `stream` (EOF or reset).
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    matches!(
        tokio::time::timeout(PROMPTLY, stream.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn a_new_connection_evicts_the_longest_idle_one_at_the_cap() {
    let server = start(limits(4)).await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(server.addr).await.expect("connect");
        // One request each, so the connection is registered and idle afterwards.
        assert_eq!(exchange(&mut s, &get_request("/fast")).await.0, 200);
        idle.push(s);
    }
    let mut newcomer = TcpStream::connect(server.addr).await.expect("connect");
    assert_eq!(exchange(&mut newcomer, &get_request("/fast")).await.0, 200);
    // The first (longest idle) connection was closed to make room.
    assert!(closed_by_server(&mut idle[0]).await);
    assert_eq!(exchange(&mut idle[3], &get_request("/fast")).await.0, 200);
}

#[tokio::test]
async fn connections_that_never_send_anything_cannot_lock_others_out() {
    let server = start(limits(8)).await;
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(TcpStream::connect(server.addr).await.expect("connect"));
    }
    let mut client = TcpStream::connect(server.addr).await.expect("connect");
    assert_eq!(exchange(&mut client, &get_request("/fast")).await.0, 200);
}

#[tokio::test]
async fn when_every_connection_is_busy_a_newcomer_gets_503_problem() {
    let server = start(limits(3)).await;
    let mut busy = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(server.addr).await.expect("connect");
        s.write_all(get_request("/slow").as_bytes())
            .await
            .expect("write");
        busy.push(s);
    }
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    while server.slow_inside.load(Ordering::SeqCst) < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "requests not started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut newcomer = TcpStream::connect(server.addr).await.expect("connect");
    let (status, body) = exchange(&mut newcomer, &get_request("/fast")).await;
    assert_eq!(status, 503);
    let problem: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(problem["code"], "TOO_MANY_CONNECTIONS");
    // The busy ones are untouched and finish their requests.
    server.release.notify_waiters();
    for s in &mut busy {
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(PROMPTLY, s.read(&mut buf))
            .await
            .expect("answer in time")
            .expect("read");
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    }
}

#[tokio::test]
async fn a_half_sent_header_is_cut_off_at_the_header_timeout() {
    let server = start(ServeLimits {
        header_read_timeout: Duration::from_millis(300),
        ..limits(8)
    })
    .await;
    let mut s = TcpStream::connect(server.addr).await.expect("connect");
    s.write_all(b"GET /fast HTTP/1.1\r\nhost: te")
        .await
        .expect("write");
    assert!(closed_by_server(&mut s).await);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_at_the_header_timeout() {
    let server = start(ServeLimits {
        header_read_timeout: Duration::from_millis(300),
        ..limits(8)
    })
    .await;
    let mut s = TcpStream::connect(server.addr).await.expect("connect");
    assert_eq!(exchange(&mut s, &get_request("/fast")).await.0, 200);
    assert!(closed_by_server(&mut s).await);
}

#[tokio::test]
async fn a_stalled_body_is_answered_at_the_body_timeout() {
    let server = start(ServeLimits {
        body_read_timeout: Duration::from_millis(300),
        ..limits(8)
    })
    .await;
    let mut s = TcpStream::connect(server.addr).await.expect("connect");
    let request = "POST /echo HTTP/1.1\r\nhost: test\r\ncontent-length: 100\r\n\r\n0123456789";
    let (status, _) = exchange(&mut s, request).await;
    assert_eq!(status, 400);
}

/// Sends `request` and returns the answer's status, content-type and problem `code`.
async fn automatic_answer(server: &Server, request: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect(server.addr).await.expect("connect");
    // The server may answer and close before it has read everything: ignore the error.
    let _ = s.write_all(request).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(PROMPTLY, s.read_to_end(&mut buf))
        .await
        .expect("the server answers and closes");
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("a full answer");
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("content-type: "))
        .unwrap_or_default();
    let problem: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    (
        head[9..12].parse().expect("status"),
        content_type.to_string(),
        problem["code"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test]
async fn requests_hyper_cannot_parse_are_answered_with_problems() {
    let server = start(limits(8)).await;
    let long_header = format!(
        "GET /fast HTTP/1.1\r\nhost: test\r\nx-long: {}\r\n\r\n",
        "a".repeat(MAX_HEADER_BUFFER_BYTES + 1)
    );
    let long_target = format!(
        "GET /{} HTTP/1.1\r\nhost: test\r\n\r\n",
        "a".repeat(MAX_HEADER_BUFFER_BYTES)
    );
    let cases: [(&[u8], &[u16]); 4] = [
        (b"NOT A REQUEST\r\n\r\n", &[400]),
        (b"GET /fast HTTP/1.1\r\nbad header line\r\n\r\n", &[400]),
        (long_header.as_bytes(), &[431]),
        // hyper's target limit and the head limit are about the same size.
        (long_target.as_bytes(), &[414, 431]),
    ];
    for (request, statuses) in cases {
        let (status, content_type, code) = automatic_answer(&server, request).await;
        assert!(statuses.contains(&status), "{status}");
        assert_eq!(content_type, "application/problem+json");
        assert_eq!(code, "INVALID_REQUEST");
    }
    // And the server goes on serving.
    let mut s = TcpStream::connect(server.addr).await.expect("connect");
    assert_eq!(exchange(&mut s, &get_request("/fast")).await.0, 200);
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_returns() {
    let mut server = start(limits(8)).await;
    let mut s = TcpStream::connect(server.addr).await.expect("connect");
    assert_eq!(exchange(&mut s, &get_request("/fast")).await.0, 200);
    let _ = server.stop.take().expect("stop").send(());
    tokio::time::timeout(PROMPTLY, &mut server.done)
        .await
        .expect("serve returns")
        .expect("no panic");
    assert!(closed_by_server(&mut s).await);
}

#[test]
fn connection_caps_fit_in_the_descriptors_left_after_the_reserve() {
    assert_eq!(fit_connection_caps(20_000, 4_096, 64), Some((4_096, 64)));
    assert_eq!(fit_connection_caps(1_024, 4_096, 64), Some((448, 64)));
    assert_eq!(fit_connection_caps(256, 4_096, 64), None);
    assert_eq!(fit_connection_caps(580, 4_096, 64), None);
}

/// A self-signed certificate for 127.0.0.1: the server's config, and a connector that
/// trusts it.
fn test_tls() -> (Arc<rustls::ServerConfig>, tokio_rustls::TlsConnector) {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("a certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pair.serialize_der()));
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (
        Arc::new(server),
        tokio_rustls::TlsConnector::from(Arc::new(client)),
    )
}

/// A TLS connection to `addr` through `connector`.
async fn connect_tls(
    connector: &tokio_rustls::TlsConnector,
    addr: std::net::SocketAddr,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    tokio::time::timeout(PROMPTLY, connector.connect(name, tcp))
        .await
        .expect("a handshake in time")
        .expect("handshake")
}

#[tokio::test]
async fn tls_connections_are_served_and_kept_alive() {
    let (server_tls, connector) = test_tls();
    let server = start_with(limits(8), Some(server_tls)).await;
    let mut stream = connect_tls(&connector, server.addr).await;
    for _ in 0..2 {
        let (status, body) = exchange(&mut stream, &get_request("/fast")).await;
        assert_eq!((status, body.as_str()), (200, "fast"));
    }
}

#[tokio::test]
async fn plain_http_on_a_tls_port_gets_a_400_problem_in_the_clear() {
    let (server_tls, connector) = test_tls();
    let server = start_with(limits(8), Some(server_tls)).await;
    let mut plain = TcpStream::connect(server.addr).await.unwrap();
    let (status, body) = exchange(&mut plain, &get_request("/fast")).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("INVALID_REQUEST") && body.contains("https://"),
        "{body}"
    );
    assert!(closed_by_server(&mut plain).await);
    // The listener goes on serving TLS.
    let mut stream = connect_tls(&connector, server.addr).await;
    assert_eq!(exchange(&mut stream, &get_request("/fast")).await.0, 200);
}

#[tokio::test]
async fn a_client_that_never_sends_a_client_hello_is_closed_after_the_header_timeout() {
    let (server_tls, connector) = test_tls();
    let short = ServeLimits {
        header_read_timeout: Duration::from_millis(300),
        ..limits(8)
    };
    let server = start_with(short, Some(server_tls)).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    assert!(closed_by_server(&mut silent).await);
    // So is one that stalls inside the handshake (a record header and nothing more).
    let mut stalled = TcpStream::connect(server.addr).await.unwrap();
    stalled.write_all(&[22, 3, 1, 0, 200]).await.unwrap();
    assert!(closed_by_server(&mut stalled).await);
    let mut stream = connect_tls(&connector, server.addr).await;
    assert_eq!(exchange(&mut stream, &get_request("/fast")).await.0, 200);
}

#[tokio::test]
async fn connections_stuck_in_the_handshake_are_evicted_at_the_cap() {
    let (server_tls, connector) = test_tls();
    let server = start_with(limits(2), Some(server_tls)).await;
    let mut silent: Vec<TcpStream> = Vec::new();
    for _ in 0..2 {
        silent.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // Both slots are held by connections that never said hello; a real client still
    // gets in, and the idlest silent one is closed for it.
    let mut stream = connect_tls(&connector, server.addr).await;
    assert_eq!(exchange(&mut stream, &get_request("/fast")).await.0, 200);
    assert!(closed_by_server(&mut silent[0]).await);
}

#[tokio::test]
async fn a_failed_handshake_closes_only_its_own_connection() {
    let (server_tls, connector) = test_tls();
    let server = start_with(limits(8), Some(server_tls)).await;
    // A client that trusts another certificate gives up in the handshake.
    let (_, other) = test_tls();
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(server.addr.ip().into());
    assert!(other.connect(name, tcp).await.is_err());
    let mut stream = connect_tls(&connector, server.addr).await;
    assert_eq!(exchange(&mut stream, &get_request("/fast")).await.0, 200);
}

#[tokio::test]
async fn a_listener_binds_with_the_large_backlog_or_says_why_not() {
    let first = bind_listener("127.0.0.1:0").await.expect("bind");
    let addr = first.local_addr().expect("addr").to_string();
    let err = bind_listener(&addr).await.expect_err("the port is taken");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
    assert!(bind_listener("not-an-address").await.is_err());
    // It accepts like any listener.
    let client = tokio::net::TcpStream::connect(&addr);
    let (accepted, connected) = tokio::join!(first.accept(), client);
    assert!(accepted.is_ok() && connected.is_ok());
}
