//! One keep-alive HTTP/1.1 connection, owned by one load task.
//!
//! The benchmark promises N real TCP connections for `--conns N`, so each load task owns
//! a [`Conn`]: a raw hyper HTTP/1.1 client connection (no pool, no shared client), with
//! `TCP_NODELAY` so small requests are not held back by Nagle's algorithm. A request
//! that fails in transport drops the connection; the next request reconnects, and
//! [`Conn::connects`] tells how often that happened.
//!
//! An `https://` endpoint gets a TLS session over the TCP connection (rustls, the roots
//! of [`Dial::tls`]): one handshake per connection, as a real client with keep-alive.
//!
//! It deliberately does not retry, follow redirects, or decode bodies: the caller gets
//! the status and the raw body and decides what the answer means.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Longest wait for a TCP connection to be accepted.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait for a whole answer; above the server's default `api.request_timeout_ms`
/// (5 s) so that a slow write is reported as the server's `OUTCOME_UNKNOWN`, not here.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A request that got no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The TCP connection could not be made (refused, unreachable, ...).
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// No connection or no complete answer within the timeout.
    #[error("no answer from {addr} within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    /// The HTTP exchange failed (connection closed or reset, malformed answer).
    #[error("http exchange with {addr} failed: {source}")]
    Http {
        addr: String,
        #[source]
        source: hyper::Error,
    },
    /// The request could not be built (a bad address or path).
    #[error("cannot build a request to {0}")]
    Request(String),
    /// The TLS handshake failed (an untrusted certificate, say).
    #[error("tls handshake with {addr} failed: {source}")]
    Tls {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// How connections are made: the API key they send (auth on) and the TLS client for
/// `https://` endpoints.
#[derive(Clone, Default)]
pub struct Dial {
    pub api_key: Option<String>,
    /// Required for `https://` endpoints.
    pub tls: Option<TlsConnector>,
}

impl TransportError {
    /// A short stable label for error counts: `transport:<kind>`.
    pub fn kind(&self) -> String {
        match self {
            // Out of descriptors or ports says which limit bounded a run; the generic
            // kinds of these errors do not.
            TransportError::Connect { source, .. } => match source.raw_os_error() {
                Some(libc::EMFILE) | Some(libc::ENFILE) => {
                    "transport:connect_out_of_descriptors".to_string()
                }
                Some(libc::EADDRNOTAVAIL) => "transport:connect_out_of_ports".to_string(),
                _ => {
                    let kind = source.kind().to_string().replace(' ', "_");
                    format!("transport:connect_{kind}")
                }
            },
            TransportError::Timeout { .. } => "transport:timeout".to_string(),
            TransportError::Http { source, .. } if source.is_incomplete_message() => {
                "transport:closed".to_string()
            }
            TransportError::Http { source, .. } if source.is_canceled() => {
                "transport:canceled".to_string()
            }
            TransportError::Http { .. } => "transport:http".to_string(),
            TransportError::Request(_) => "transport:request".to_string(),
            TransportError::Tls { .. } => "transport:tls".to_string(),
        }
    }
}

/// The status and raw body of an answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

/// One HTTP/1.1 connection to one `host:port`, reconnected on demand.
pub struct Conn {
    /// The endpoint as given (`host:port` or `https://host:port`).
    addr: String,
    /// `host:port` to dial.
    authority: String,
    /// With TLS: the connector and the name the certificate must carry.
    tls: Option<(TlsConnector, rustls::pki_types::ServerName<'static>)>,
    host: HeaderValue,
    /// `Authorization: Bearer <key>` with auth on.
    auth: Option<HeaderValue>,
    sender: Option<SendRequest<Full<Bytes>>>,
    connects: u64,
}

impl Conn {
    /// A connection to `addr` (a parsed endpoint: `host:port` or `https://host:port`)
    /// made as `dial` says; nothing is dialled until [`Conn::connect`] or the first
    /// request.
    pub fn new(addr: &str, dial: &Dial) -> Result<Conn, TransportError> {
        let (authority, https) = crate::wire::endpoint_authority(addr);
        let bad = || TransportError::Request(addr.to_string());
        let host = HeaderValue::from_str(authority).map_err(|_| bad())?;
        let auth = dial
            .api_key
            .as_deref()
            .map(|k| HeaderValue::from_str(&format!("Bearer {k}")))
            .transpose()
            .map_err(|_| TransportError::Request("the API key cannot be a header".into()))?;
        let tls = match (https, &dial.tls) {
            (false, _) => None,
            (true, None) => return Err(bad()),
            (true, Some(connector)) => {
                let (name, _) = authority.rsplit_once(':').ok_or_else(bad)?;
                let name = name.trim_start_matches('[').trim_end_matches(']');
                let name =
                    rustls::pki_types::ServerName::try_from(name.to_string()).map_err(|_| bad())?;
                Some((connector.clone(), name))
            }
        };
        Ok(Conn {
            addr: addr.to_string(),
            authority: authority.to_string(),
            tls,
            host,
            auth,
            sender: None,
            connects: 0,
        })
    }

    /// The `host:port` this connection goes to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether the connection is made and not closed (by either side).
    pub fn is_open(&self) -> bool {
        self.sender.as_ref().is_some_and(|s| !s.is_closed())
    }

    /// How many TCP connections were made so far (1 when keep-alive held throughout).
    pub fn connects(&self) -> u64 {
        self.connects
    }

    /// Makes the TCP connection now (if there is none) so that the first timed request
    /// does not pay for it.
    pub async fn connect(&mut self) -> Result<(), TransportError> {
        if self.sender.as_ref().is_some_and(|s| !s.is_closed()) {
            return Ok(());
        }
        let timeout = |_| TransportError::Timeout {
            addr: self.addr.clone(),
            timeout: CONNECT_TIMEOUT,
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.authority))
            .await
            .map_err(timeout)?
            .map_err(|source| TransportError::Connect {
                addr: self.addr.clone(),
                source,
            })?;
        stream
            .set_nodelay(true)
            .map_err(|source| TransportError::Connect {
                addr: self.addr.clone(),
                source,
            })?;
        let http_err = |source| TransportError::Http {
            addr: self.addr.clone(),
            source,
        };
        // The connection future drives the socket; it ends when `sender` is dropped or
        // the peer closes, and its error also surfaces on the pending request.
        let sender = match &self.tls {
            None => {
                let (sender, connection) = http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(http_err)?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                sender
            }
            Some((connector, name)) => {
                let stream =
                    tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name.clone(), stream))
                        .await
                        .map_err(timeout)?
                        .map_err(|source| TransportError::Tls {
                            addr: self.addr.clone(),
                            source,
                        })?;
                let (sender, connection) = http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(http_err)?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                sender
            }
        };
        self.sender = Some(sender);
        self.connects += 1;
        Ok(())
    }

    /// Sends one request and reads the whole answer. On a transport error the
    /// connection is dropped, so the next call reconnects.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Answer, TransportError> {
        let result = tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(method, path, body)).await;
        let result = result.unwrap_or_else(|_| {
            Err(TransportError::Timeout {
                addr: self.addr.clone(),
                timeout: REQUEST_TIMEOUT,
            })
        });
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    async fn exchange(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Answer, TransportError> {
        let response = self.request(method, path, body).await?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|source| TransportError::Http {
                addr: self.addr.clone(),
                source,
            })?
            .to_bytes();
        Ok(Answer { status, body })
    }

    /// Sends a `GET` and returns the answer with its body unread: an event stream,
    /// read by the caller for as long as it likes. Only the head is bounded by
    /// [`REQUEST_TIMEOUT`]. The connection carries nothing else while the body is open.
    pub async fn open_stream(
        &mut self,
        path: &str,
    ) -> Result<hyper::Response<hyper::body::Incoming>, TransportError> {
        let result =
            tokio::time::timeout(REQUEST_TIMEOUT, self.request(Method::GET, path, None)).await;
        let result = result.unwrap_or_else(|_| {
            Err(TransportError::Timeout {
                addr: self.addr.clone(),
                timeout: REQUEST_TIMEOUT,
            })
        });
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    /// Sends one request (connecting first if needed) and returns the answer's head.
    async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, TransportError> {
        self.connect().await?;
        let http_err = |addr: &str| {
            let addr = addr.to_string();
            move |source| TransportError::Http { addr, source }
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.host.clone());
        if let Some(auth) = &self.auth {
            builder = builder.header(AUTHORIZATION, auth.clone());
        }
        if body.is_some() {
            builder = builder.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let request = builder
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|_| TransportError::Request(format!("{}{path}", self.addr)))?;
        let sender = self
            .sender
            .as_mut()
            .ok_or_else(|| TransportError::Request(self.addr.clone()))?;
        sender.ready().await.map_err(http_err(&self.addr))?;
        sender
            .send_request(request)
            .await
            .map_err(http_err(&self.addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refused_connection_is_a_connect_error() {
        // Bind then drop a listener: its port is (almost certainly) closed now.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .to_string();
        let mut conn = Conn::new(&addr, &Dial::default()).unwrap();
        let err = conn.send(Method::GET, "/healthz", None).await.unwrap_err();
        assert_eq!(err.kind(), "transport:connect_connection_refused");
        assert_eq!(conn.connects(), 0);
    }

    #[tokio::test]
    async fn keeps_one_connection_alive_across_requests() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        // A minimal HTTP/1.1 server: one accepted connection, two answers on it.
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            for _ in 0..2 {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(String::from_utf8_lossy(&buf[..n]).contains("host: "));
                socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                    .await
                    .unwrap();
            }
        });
        let mut conn = Conn::new(&addr, &Dial::default()).unwrap();
        for _ in 0..2 {
            let answer = conn.send(Method::GET, "/x", None).await.unwrap();
            assert_eq!(answer.status, StatusCode::OK);
            assert_eq!(&answer.body[..], b"{}");
        }
        assert_eq!(conn.connects(), 1);
        server.await.unwrap();
    }
}
