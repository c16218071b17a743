//! The HTTP/1.1 server both listeners (the API and the Raft RPCs) run on: a cap on
//! connections, header and body read timeouts, and graceful shutdown.
//!
//! A lock service is shared infrastructure: one careless or hostile client must not be
//! able to take a node's descriptors, memory or attention from everyone else.
//! - **Connection cap.** At most [`ServeLimits::max_connections`] connections are open at
//!   once. A connection beyond it evicts the connection that has been idle longest (no
//!   request in flight, including one that sent part of a header and stalled); when
//!   every connection has a request in flight, the newcomer gets `503` problem+json with
//!   `Retry-After` and is closed. So idle connections can never lock others out, and the
//!   process keeps descriptors for its storage (see [`raise_open_files_limit`]).
//! - **Header read timeout.** A connection must deliver a request's complete header
//!   within [`ServeLimits::header_read_timeout`], counted from when it connected or
//!   finished its previous request: this is also the idle keep-alive timeout (hyper
//!   starts the timer whenever the connection waits for a request head).
//! - **Body read timeout.** A request body must arrive within
//!   [`ServeLimits::body_read_timeout`]; the handler sees a body error (answered 400).
//! - **Bounded header buffer** ([`MAX_HEADER_BUFFER_BYTES`]) per connection.
//! - **Every answer is problem+json**, also hyper's own to a request head it cannot
//!   parse (module `automatic`).
//! - **TLS** (`[tls]`): the handshake is part of the connection's first header read. A
//!   connection that has not completed it within the header read timeout is closed, and
//!   until it completes the connection counts as idle, so the cap can evict it: a client
//!   that opens TCP and never sends a ClientHello holds no slot for long. A plain-HTTP
//!   client gets a `400` in the clear (module `tls`); a failed handshake closes only its
//!   own connection.
//! - **Accept errors are never fatal.** `EMFILE` and friends are logged (once per
//!   [`ACCEPT_ERROR_LOG_INTERVAL`]) and the loop goes on after a short pause.
//!
//! # Caveats
//! A response that streams forever (the event stream) keeps its connection busy, so it
//! is never evicted; graceful shutdown waits for such connections only as long as the
//! caller lets it (the caller bounds the drain).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, HttpBody};
use axum::Router;
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// Largest request head (request line and headers) a connection may buffer. hyper's
/// minimum is 8 KiB; lock requests have small heads.
pub const MAX_HEADER_BUFFER_BYTES: usize = 64 * 1024;
/// Accept errors (out of descriptors, say) are logged at most this often.
pub const ACCEPT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Pause after an accept error, so that a persistent one does not spin a core.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// How long the `503` written to a refused connection may take.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Limits of one listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeLimits {
    /// Connections open at once; at the cap the longest-idle one is evicted.
    pub max_connections: usize,
    /// Time to deliver a complete request head, from connect or the previous response
    /// (so also the idle keep-alive timeout).
    pub header_read_timeout: Duration,
    /// Time to deliver a request body.
    pub body_read_timeout: Duration,
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting, asks
/// every connection to finish its request and close, and returns when all have closed.
/// Bound the drain with a timeout around this future's end if responses may stream.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) {
    let tls = tls.map(TlsAcceptor::from);
    let registry = Arc::new(Registry::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut accept_errors = AcceptErrorLog::default();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
            // Reap finished connection tasks so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                accept_errors.record(&e);
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        // Answers are small and latency-bound; Nagle would hold a segment back until
        // the previous one is acknowledged.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let Some(conn) = registry.admit(limits.max_connections) else {
            connections.spawn(refuse(stream, tls.clone()));
            continue;
        };
        let (router, limits, stop) = (router.clone(), limits.clone(), stop_rx.clone());
        let (registry, tls) = (registry.clone(), tls.clone());
        connections.spawn(async move {
            match tls {
                None => serve_connection(stream, router, &limits, &conn, stop).await,
                Some(tls) => serve_tls_connection(stream, tls, router, &limits, &conn, stop).await,
            }
            registry.remove(conn.id);
        });
    }
    let _ = stop_tx.send(true);
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// One TLS connection: the handshake, bounded by the header read timeout and given up
/// when the connection is evicted or the server stops, then [`serve_connection`].
async fn serve_tls_connection(
    stream: TcpStream,
    acceptor: TlsAcceptor,
    router: Router,
    limits: &ServeLimits,
    conn: &Arc<ConnState>,
    mut stop: watch::Receiver<bool>,
) {
    let handshake =
        tokio::time::timeout(limits.header_read_timeout, tls::accept(stream, &acceptor));
    let stream = tokio::select! {
        done = handshake => match done {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                // A client's mistake (or a peer with the wrong CA): its connection only.
                tracing::debug!(error = %e, "connection refused in the tls handshake");
                return;
            }
            Err(_) => {
                tracing::debug!("closing a connection that did not complete the tls handshake in time");
                return;
            }
        },
        _ = conn.evict.notified() => return,
        _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
    };
    serve_connection(stream, router, limits, conn, stop).await;
}

/// One connection: serve requests until the client closes it, a timeout fires, it is
/// evicted, or the server shuts down.
async fn serve_connection<S>(
    stream: S,
    router: Router,
    limits: &ServeLimits,
    conn: &Arc<ConnState>,
    mut stop: watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let body_timeout = limits.body_read_timeout;
    let service = {
        let conn = conn.clone();
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let busy = BusyGuard::new(conn.clone());
            let router = router.clone();
            async move {
                let req = req.map(|body| Body::new(TimedBody::new(body, body_timeout)));
                let response = router.oneshot(req).await.unwrap_or_else(|e| match e {});
                Ok::<_, Infallible>(response.map(|body| GuardedBody { body, _busy: busy }))
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEADER_BUFFER_BYTES)
        // The buffer limit is checked only between reads (a head could grow to about
        // twice it); this one is exact.
        .max_header_size(MAX_HEADER_BUFFER_BYTES)
        .keep_alive(true);
    let io = TokioIo::new(automatic::ProblemAnswers::new(stream));
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    // Run until done, or until asked to close (evicted, or the server stops); a close
    // lets the request in flight finish.
    let finished = tokio::select! {
        result = connection.as_mut() => Some(result),
        _ = conn.evict.notified() => {
            tracing::debug!("closing an idle connection: the connection cap is reached");
            None
        }
        _ = async { let _ = stop.wait_for(|s| *s).await; } => None,
    };
    let result = match finished {
        Some(result) => result,
        None => {
            connection.as_mut().graceful_shutdown();
            connection.as_mut().await
        }
    };
    if let Err(e) = result {
        // Timeouts, resets and malformed requests from clients: theirs, not ours.
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Writes a `503` problem to a connection over the cap and closes it (with TLS, after a
/// handshake, all within [`REFUSAL_WRITE_TIMEOUT`]).
async fn refuse(mut stream: TcpStream, tls: Option<TlsAcceptor>) {
    let body = r#"{"type":"https://baton.dev/errors/too-many-connections","title":"Too many connections","status":503,"code":"TOO_MANY_CONNECTIONS","detail":"this node serves its maximum number of connections, all busy; retry shortly or use another node"}"#;
    let (status, retry) = ("503 Service Unavailable", [("retry-after", "1")]);
    let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
        match tls {
            None => tls::write_answer(&mut stream, status, &retry, body.as_bytes()).await,
            Some(acceptor) => match tls::accept(stream, &acceptor).await {
                Ok(mut stream) => {
                    tls::write_answer(&mut stream, status, &retry, body.as_bytes()).await
                }
                Err(e) => Err(io::Error::other(e)),
            },
        }
    })
    .await;
    tracing::debug!(
        "refused a connection: the connection cap is reached and every connection is busy"
    );
}

/// The open connections of one listener.
#[derive(Default)]
struct Registry {
    conns: Mutex<RegistryInner>,
}

#[derive(Default)]
struct RegistryInner {
    next_id: u64,
    open: BTreeMap<u64, Arc<ConnState>>,
}

impl Registry {
    /// Registers a new connection, evicting the longest-idle one at the cap; `None` when
    /// every connection is busy.
    fn admit(&self, max: usize) -> Option<Arc<ConnState>> {
        let mut inner = lock(&self.conns);
        if inner.open.len() >= max {
            let idlest = inner
                .open
                .values()
                .filter_map(|c| c.idle_since().map(|t| (t, c.id)))
                .min()?;
            if let Some(victim) = inner.open.remove(&idlest.1) {
                victim.evict.notify_one();
            }
        }
        inner.next_id += 1;
        let conn = Arc::new(ConnState::new(inner.next_id));
        inner.open.insert(conn.id, conn.clone());
        Some(conn)
    }

    fn remove(&self, id: u64) {
        lock(&self.conns).open.remove(&id);
    }
}

/// What the cap needs to know of one connection.
struct ConnState {
    id: u64,
    /// Requests whose response has not been sent completely.
    busy: AtomicUsize,
    /// When the last request finished (or the connection opened).
    idle_since: Mutex<Instant>,
    evict: Notify,
}

impl ConnState {
    fn new(id: u64) -> ConnState {
        ConnState {
            id,
            busy: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            evict: Notify::new(),
        }
    }

    /// Since when the connection has had no request in flight; `None` while it has.
    fn idle_since(&self) -> Option<Instant> {
        (self.busy.load(Ordering::Acquire) == 0).then(|| *lock(&self.idle_since))
    }
}

/// Marks its connection busy from the request head until the response body is sent.
struct BusyGuard(Arc<ConnState>);

impl BusyGuard {
    fn new(conn: Arc<ConnState>) -> BusyGuard {
        conn.busy.fetch_add(1, Ordering::AcqRel);
        BusyGuard(conn)
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        *lock(&self.0.idle_since) = Instant::now();
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its connection marked busy until hyper drops it.
struct GuardedBody {
    body: Body,
    _busy: BusyGuard,
}

impl HttpBody for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The request body was not received within the body read timeout.
#[derive(Debug, thiserror::Error)]
#[error("request body not received within {0:?}")]
pub struct BodyTimeout(Duration);

/// A request body that fails once its deadline passes. The timer is armed only when
/// the body is not there at once: a small body arrives with its header, and a timer
/// per request would cost the hot path.
struct TimedBody {
    body: Incoming,
    limit: Duration,
    started: tokio::time::Instant,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl TimedBody {
    fn new(body: Incoming, limit: Duration) -> TimedBody {
        TimedBody {
            body,
            limit,
            started: tokio::time::Instant::now(),
            deadline: None,
        }
    }
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let at = self.started + self.limit;
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(BodyTimeout(self.limit).into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Logs accept errors at most once per [`ACCEPT_ERROR_LOG_INTERVAL`], with a count.
#[derive(Default)]
struct AcceptErrorLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl AcceptErrorLog {
    fn record(&mut self, e: &io::Error) {
        let due = self
            .last
            .is_none_or(|t| t.elapsed() >= ACCEPT_ERROR_LOG_INTERVAL);
        if !due {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(error = %e, suppressed = self.suppressed, "cannot accept connections; retrying");
        self.last = Some(Instant::now());
        self.suppressed = 0;
    }
}

/// Connections the kernel queues for a listener before they are accepted (Linux caps it
/// at `net.core.somaxconn`, 4096 by default). tokio's `TcpListener::bind` asks for 1024:
/// a reconnect storm of 5,000 clients over three nodes (`baton bench --mode connect`)
/// overflowed it, and every dropped SYN cost its client a 1 s retransmission.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listener on `addr` (`host:port`; the first of its addresses that binds) with
/// [`LISTEN_BACKLOG`] and `SO_REUSEADDR`, as `TcpListener::bind` does with its smaller
/// backlog.
pub async fn bind_listener(addr: &str) -> io::Result<TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let socket = if a.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        let bound = socket
            .set_reuseaddr(true)
            .and_then(|()| socket.bind(a))
            .and_then(|()| socket.listen(LISTEN_BACKLOG));
        match bound {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{addr} resolves to no address"),
        )
    }))
}

/// Descriptors the process keeps for everything but client connections: RocksDB's open
/// files (`raft::store::MAX_OPEN_FILES`), its WAL and logs, snapshots being built or
/// received, peer connections, the relay's pool to the leader.
pub const RESERVED_DESCRIPTORS: u64 = 512;

/// Raises the soft limit on open files to the hard limit (a node needs descriptors for
/// its connections and its storage; many systems start processes at 1,024) and returns
/// the limit now in force.
pub fn raise_open_files_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    Ok(limit.rlim_cur)
}

/// The connection caps that fit in `open_files` descriptors after the reserve: the
/// configured ones, or the Raft listener's (a handful of peers) and whatever is left for
/// the API. `None` if fewer than [`MIN_CONNECTIONS`] API connections would fit.
pub fn fit_connection_caps(open_files: u64, api: usize, raft: usize) -> Option<(usize, usize)> {
    let available = usize::try_from(open_files.checked_sub(RESERVED_DESCRIPTORS)?).ok()?;
    let api = api.min(available.checked_sub(raft)?);
    (api >= MIN_CONNECTIONS).then_some((api, raft))
}

/// Fewest connections a listener may be left with when the caps are scaled down.
pub const MIN_CONNECTIONS: usize = 8;

/// Locks a mutex whose data stays valid if a holder panicked (plain counters and times).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

mod automatic;
#[cfg(test)]
mod tests;
mod tls;
