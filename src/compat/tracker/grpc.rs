//! Tracker's gRPC service, `tracker.lock.v1alpha1.LockService` (`proto/`), with gRPC
//! server reflection (`grpc.reflection.v1` and `v1alpha`: grpcurl 1.8 speaks only
//! v1alpha), so `grpcurl -plaintext HOST:PORT tracker.lock.v1alpha1.LockService/CreateLock`
//! works without a proto file.
//!
//! **One code path.** Each call becomes the equivalent Tracker REST request and runs
//! through the node's API router ([`crate::api::router`]) in process: the same relay to
//! the leader ([`crate::api::relay`]), the same body limit, request span and access
//! control, and the same operation ([`super::rest`]). Only the API key
//! (`authorization: Bearer …` or `x-api-key`) and the request id are taken from the
//! call's metadata; nothing else a client sends reaches the router (so a client cannot
//! pose as a relaying node). The REST status becomes the gRPC code (`status_of`):
//! 409 `ALREADY_EXISTS`, 404 `NOT_FOUND`, 400/413 `INVALID_ARGUMENT`, 503 `UNAVAILABLE`,
//! 401 `UNAUTHENTICATED`, 403 `PERMISSION_DENIED`, 429 `RESOURCE_EXHAUSTED`, anything
//! else `INTERNAL`.
//!
//! **The listener** ([`serve`]) is HTTP/2 only (hyper), hardened like the HTTP one
//! ([`crate::serve`]):
//! - at most [`GrpcLimits::max_connections`] connections; one beyond is closed at once;
//! - a connection must start a call within [`GrpcLimits::idle_timeout`] of connecting
//!   (so the handshake too) or of its previous call's end, else it is sent a GOAWAY and
//!   closed — after [`CLOSE_GRACE`] if it does not close itself (a client that never
//!   finished its handshake);
//! - one call lasts at most [`GrpcLimits::call_timeout`] (reading its request
//!   included), then it is answered `UNAVAILABLE` (its outcome unknown);
//! - a request message is at most [`GrpcLimits::max_message_bytes`]
//!   (`api.max_body_bytes`; tonic answers a larger one `OUT_OF_RANGE` before decoding
//!   it), headers [`MAX_HEADER_LIST_BYTES`], streams per connection
//!   [`MAX_STREAMS_PER_CONNECTION`], flow-control windows small;
//! - a connection's protocol error (a garbage preface) ends that connection only;
//! - at shutdown, no more connections are accepted and every connection is sent a
//!   GOAWAY: calls in flight finish (bounded by the call timeout, and by the node's
//!   drain timeout), then it closes; an idle one gets [`CLOSE_GRACE`].
//!
//! # Caveats
//! - Unlike the REST route, a gRPC `UnLock` of an id that holds nothing is an error
//!   status (`NOT_FOUND`, the issue's contract), not an `UnLockResponse` with
//!   `success: false`.
//! - proto3 cannot tell an unset number from 0: `page`/`per_page` 0 take the REST
//!   defaults (1 and 100), and `ttl_ms` 0 is `[compat] tracker_ttl_ms`.
//! - The `existingLock` of a REST 409 is not carried by `ALREADY_EXISTS` (a status has
//!   only a code and a message in the contract).

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{to_bytes, Body};
use axum::http::{header, HeaderName, Method, Request as HttpRequest, StatusCode};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tonic::service::Routes;
use tonic::{Code, Request, Response, Status};
use tower::ServiceExt;

use super::mapping::{CreateRequest, LockList, TrackerLock, UnlockReply};
use super::rest::PREFIX;
use crate::node::forward::REQUEST_ID_HEADER;

/// The generated messages, server and (transport-less) client.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("tracker.lock.v1alpha1");

    /// The encoded file descriptor set of `proto/`, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/tracker_descriptor.bin"));
}

use proto::lock_service_server::{LockService, LockServiceServer};

/// Connections the gRPC listener serves at once (it counts against the process's
/// descriptors like `api.max_connections`, see `cli::server`).
pub const GRPC_MAX_CONNECTIONS: usize = 1_024;
/// Concurrent calls (HTTP/2 streams) on one connection.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 64;
/// Largest header list of one call (Tracker calls carry a few short headers).
pub const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
/// HTTP/2 flow-control windows: how much a client may send before the server reads it,
/// per call and per connection (messages are at most `api.max_body_bytes`).
const STREAM_WINDOW_BYTES: u32 = 64 * 1024;
const CONNECTION_WINDOW_BYTES: u32 = 256 * 1024;
/// How long a connection that was sent a GOAWAY for being idle may take to close.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Largest answer read back from the router (a list page of `api.max_list_limit` locks
/// is well below).
const MAX_ANSWER_BYTES: usize = 64 << 20;
/// Pause after an accept error (out of descriptors), so that it does not spin a core.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// The call metadata passed on to the router: the API key and the request id.
const PASSED_METADATA: [&str; 3] = ["authorization", "x-api-key", REQUEST_ID_HEADER];

/// The `LockService` implementation: a translator in front of the API router.
#[derive(Clone)]
pub struct TrackerGrpc {
    router: Router,
}

impl TrackerGrpc {
    /// The service over the node's public API router.
    pub fn new(router: Router) -> TrackerGrpc {
        TrackerGrpc { router }
    }

    /// Runs `method target` (with a JSON `body`) through the router; the 200 answer
    /// parsed as `T`, or the REST status as a gRPC status.
    async fn call<T: serde::de::DeserializeOwned, M>(
        &self,
        request: &Request<M>,
        method: Method,
        target: String,
        body: Option<Vec<u8>>,
    ) -> Result<T, Status> {
        let mut http = HttpRequest::builder().method(method).uri(target);
        for name in PASSED_METADATA {
            if let Some(v) = request.metadata().get(name) {
                http = http.header(HeaderName::from_static(name), v.as_bytes());
            }
        }
        let http = match body {
            Some(b) => http
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b)),
            None => http.body(Body::empty()),
        }
        // A metadata value that is not a valid HTTP header value.
        .map_err(|e| Status::invalid_argument(format!("bad request metadata: {e}")))?;
        let resp = match self.router.clone().oneshot(http).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        };
        let status = resp.status();
        let bytes = to_bytes(resp.into_body(), MAX_ANSWER_BYTES)
            .await
            .map_err(|e| Status::internal(format!("cannot read the answer: {e}")))?;
        if status == StatusCode::OK {
            return serde_json::from_slice(&bytes)
                .map_err(|e| Status::internal(format!("unexpected answer: {e}")));
        }
        Err(status_of(status, &bytes))
    }
}

/// The gRPC status of a REST error answer, with its message (Tracker's `error` or
/// `message`, or a problem's `detail`).
fn status_of(status: StatusCode, body: &[u8]) -> Status {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let message = ["error", "message", "detail"]
        .iter()
        .find_map(|f| value.get(f).and_then(|m| m.as_str()))
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let code = match status {
        StatusCode::CONFLICT => Code::AlreadyExists,
        StatusCode::NOT_FOUND => Code::NotFound,
        StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => Code::InvalidArgument,
        StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
        StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        StatusCode::FORBIDDEN => Code::PermissionDenied,
        StatusCode::TOO_MANY_REQUESTS => Code::ResourceExhausted,
        _ => Code::Internal,
    };
    Status::new(code, message)
}

impl From<TrackerLock> for proto::Lock {
    fn from(l: TrackerLock) -> proto::Lock {
        proto::Lock {
            id: l.id,
            service: l.service,
            who: l.who,
            created_at: l.created_at,
        }
    }
}

/// An id as the route's path segment. Only a decimal number can name a lock (a
/// fencing token); any other id — empty, `..`, `a/b` — is sent as `null`, Tracker's
/// own "no id", which the route answers `lock not found` as it does for such ids over
/// REST (after the same access check). A gRPC id is a field, not a path: it must not
/// become a dot segment or a second path segment on the way.
fn id_segment(id: &str) -> &str {
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) {
        id
    } else {
        "null"
    }
}

/// The list route's target for a page request; 0 (unset) takes the route's default.
fn list_target(page: i32, per_page: i32) -> String {
    let mut query = Vec::new();
    if page != 0 {
        query.push(format!("page={page}"));
    }
    if per_page != 0 {
        query.push(format!("per_page={per_page}"));
    }
    format!("{PREFIX}/locks/list?{}", query.join("&"))
}

#[tonic::async_trait]
impl LockService for TrackerGrpc {
    async fn create_lock(
        &self,
        request: Request<proto::CreateLockRequest>,
    ) -> Result<Response<proto::Lock>, Status> {
        let msg = request.get_ref();
        let body = CreateRequest {
            service: Some(msg.service.clone()),
            who: Some(msg.who.clone()),
            ttl_ms: (msg.ttl_ms > 0).then_some(msg.ttl_ms),
        };
        let body = serde_json::to_vec(&body).map_err(|e| Status::internal(e.to_string()))?;
        let lock: TrackerLock = self
            .call(&request, Method::POST, format!("{PREFIX}/lock"), Some(body))
            .await?;
        Ok(Response::new(lock.into()))
    }

    async fn get_lock(
        &self,
        request: Request<proto::GetLockRequest>,
    ) -> Result<Response<proto::Lock>, Status> {
        let target = format!("{PREFIX}/lock/{}", id_segment(&request.get_ref().id));
        let lock: TrackerLock = self.call(&request, Method::GET, target, None).await?;
        Ok(Response::new(lock.into()))
    }

    async fn un_lock(
        &self,
        request: Request<proto::UnLockRequest>,
    ) -> Result<Response<proto::UnLockResponse>, Status> {
        let target = format!("{PREFIX}/unlock/{}", id_segment(&request.get_ref().id));
        let reply: UnlockReply = self.call(&request, Method::GET, target, None).await?;
        Ok(Response::new(proto::UnLockResponse {
            success: reply.success,
            message: reply.message,
        }))
    }

    async fn list_locks(
        &self,
        request: Request<proto::ListLocksRequest>,
    ) -> Result<Response<proto::ListLocksResponse>, Status> {
        let msg = request.get_ref();
        let target = list_target(msg.page, msg.per_page);
        let list: LockList = self.call(&request, Method::GET, target, None).await?;
        // The route bounds page and per_page by i32 requests and the list limit; total
        // counts locks in memory.
        let to_i32 = |v: u64| i32::try_from(v).unwrap_or(i32::MAX);
        Ok(Response::new(proto::ListLocksResponse {
            locks: list.locks.into_iter().map(proto::Lock::from).collect(),
            total: i64::try_from(list.total).unwrap_or(i64::MAX),
            page: to_i32(list.page),
            per_page: to_i32(list.per_page),
        }))
    }
}

/// Why the gRPC service could not be built.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    #[error("cannot build gRPC reflection from the compiled proto files: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Limits of the gRPC listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrpcLimits {
    /// Connections open at once; one beyond is closed at once.
    pub max_connections: usize,
    /// Time to start a call, from connect or the end of the previous call.
    pub idle_timeout: Duration,
    /// Time of one call, reading its request included.
    pub call_timeout: Duration,
    /// Largest request message.
    pub max_message_bytes: usize,
}

/// The services the listener serves: `LockService` over `router`, and reflection.
///
/// Each reflection version lists every service the listener serves: it adds its own
/// descriptor, and is given the other version's, so a v1alpha client (grpcurl 1.8) sees
/// that v1 is served too.
pub fn routes(router: Router, max_message_bytes: usize) -> Result<Routes, GrpcError> {
    use tonic_reflection::pb::{v1, v1alpha};
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(v1alpha::FILE_DESCRIPTOR_SET)
        .build_v1()?
        .max_decoding_message_size(max_message_bytes);
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(v1::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?
        .max_decoding_message_size(max_message_bytes);
    let locks = LockServiceServer::new(TrackerGrpc::new(router))
        .max_decoding_message_size(max_message_bytes);
    Ok(Routes::new(locks)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .prepare())
}

/// Serves `routes` on `listener` until `shutdown` resolves, then stops accepting, sends
/// every connection a GOAWAY and returns when all have closed (see the module docs).
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    limits: GrpcLimits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        tracing::debug!(%peer, "grpc connection refused: the connection cap is reached");
                        continue;
                    };
                    connections.spawn(connection(
                        stream,
                        routes.clone(),
                        limits.clone(),
                        stop_rx.clone(),
                        slot,
                    ));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "grpc accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
        }
    }
    drop(listener);
    stop_tx.send_replace(true);
    while connections.join_next().await.is_some() {}
}

/// When a connection last had no call in flight, and how many it has.
#[derive(Debug)]
struct Activity {
    calls: AtomicUsize,
    idle_since: Mutex<Instant>,
}

impl Activity {
    fn idle_since(&self) -> Option<Instant> {
        (self.calls.load(Ordering::Acquire) == 0)
            .then(|| *self.idle_since.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A call in flight on its connection; its end restarts the idle time.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> InFlight {
        activity.calls.fetch_add(1, Ordering::AcqRel);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.idle_since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.0.calls.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Resolves once the connection has had no call in flight for `idle_timeout`.
async fn idle_expired(activity: &Activity, idle_timeout: Duration) {
    loop {
        let wake = match activity.idle_since() {
            Some(since) if since.elapsed() >= idle_timeout => return,
            Some(since) => since + idle_timeout,
            // Busy: a call ends within the call timeout; look again then at the latest.
            None => Instant::now() + idle_timeout,
        };
        tokio::time::sleep_until(wake.into()).await;
    }
}

/// One connection: HTTP/2 calls until the client closes it, it errs, it idles past the
/// idle timeout, or the listener stops.
async fn connection(
    stream: TcpStream,
    routes: Routes,
    limits: GrpcLimits,
    mut stop: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity {
        calls: AtomicUsize::new(0),
        idle_since: Mutex::new(Instant::now()),
    });
    let call_timeout = limits.call_timeout;
    let calls = activity.clone();
    let service = tower::service_fn(move |req: HttpRequest<Incoming>| {
        let in_flight = InFlight::start(&calls);
        let routes = routes.clone();
        async move {
            let _in_flight = in_flight;
            match tokio::time::timeout(call_timeout, routes.oneshot(req)).await {
                Ok(Ok(resp)) => Ok::<_, Infallible>(resp),
                Ok(Err(never)) => match never {},
                Err(_) => Ok(Status::unavailable(format!(
                    "the call did not finish within {} ms; a create or unlock may or may not have taken effect",
                    call_timeout.as_millis()
                ))
                .into_http()),
            }
        }
    });
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .max_header_list_size(MAX_HEADER_LIST_BYTES)
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES);
    let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
    tokio::pin!(conn);
    let idle = tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "grpc connection ended with an error");
            }
            return;
        }
        _ = stop.wait_for(|s| *s) => false,
        () = idle_expired(&activity, limits.idle_timeout) => true,
    };
    conn.as_mut().graceful_shutdown();
    // Calls in flight finish within the call timeout; with none, a client has only to
    // close. Either way a client that never finished its handshake is dropped.
    let grace = if activity.idle_since().is_some() {
        CLOSE_GRACE
    } else {
        call_timeout + CLOSE_GRACE
    };
    if tokio::time::timeout(grace, conn).await.is_err() {
        tracing::debug!(idle, "grpc connection did not close after GOAWAY; dropped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    #[test_case("42", "42"; "a token")]
    #[test_case("99999999999999999999999", "99999999999999999999999"; "digits beyond u64 reach the route")]
    #[test_case("a/b c", "null"; "slash and space")]
    #[test_case("..", "null"; "a dot segment")]
    #[test_case("-1", "null"; "a sign")]
    #[test_case("", "null"; "empty")]
    fn ids_reach_the_route_as_one_segment(id: &str, segment: &str) {
        assert_eq!(id_segment(id), segment);
    }

    #[test_case(0, 0, "/api/v1alpha1/locks/list?"; "defaults")]
    #[test_case(2, 0, "/api/v1alpha1/locks/list?page=2"; "page only")]
    #[test_case(-1, 5, "/api/v1alpha1/locks/list?page=-1&per_page=5"; "a negative page reaches the route")]
    fn pages_become_the_list_query(page: i32, per_page: i32, target: &str) {
        assert_eq!(list_target(page, per_page), target);
    }

    #[test_case(
        StatusCode::CONFLICT,
        r#"{"error":"lock already exists","existingLock":{}}"#,
        Code::AlreadyExists,
        "lock already exists"
    )]
    #[test_case(
        StatusCode::NOT_FOUND,
        r#"{"success":false,"message":"lock not found"}"#,
        Code::NotFound,
        "lock not found"
    )]
    #[test_case(
        StatusCode::BAD_REQUEST,
        r#"{"error":"service is missing"}"#,
        Code::InvalidArgument,
        "service is missing"
    )]
    #[test_case(
        StatusCode::PAYLOAD_TOO_LARGE,
        r#"{"error":"too large"}"#,
        Code::InvalidArgument,
        "too large"
    )]
    #[test_case(
        StatusCode::SERVICE_UNAVAILABLE,
        r#"{"error":"no leader"}"#,
        Code::Unavailable,
        "no leader"
    )]
    #[test_case(
        StatusCode::UNAUTHORIZED,
        r#"{"detail":"no key"}"#,
        Code::Unauthenticated,
        "no key"
    )]
    #[test_case(
        StatusCode::FORBIDDEN,
        r#"{"error":"denied"}"#,
        Code::PermissionDenied,
        "denied"
    )]
    #[test_case(StatusCode::INTERNAL_SERVER_ERROR, "boom", Code::Internal, "boom")]
    fn rest_answers_become_grpc_statuses(
        status: StatusCode,
        body: &str,
        code: Code,
        message: &str,
    ) {
        let s = status_of(status, body.as_bytes());
        assert_eq!((s.code(), s.message()), (code, message));
    }
}
