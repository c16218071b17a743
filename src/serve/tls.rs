//! The TLS handshake of a connection, and the answer to a client that speaks plain HTTP
//! to a TLS port.
//!
//! A TLS client opens with a handshake record (content type 22). Anything else is taken
//! for plain HTTP: it gets a `400` problem+json in the clear saying to use `https://`
//! and the connection is closed, instead of a TLS alert the client cannot read (as Go's
//! and nginx's servers do). The caller bounds the whole handshake by the header read
//! timeout and lets the connection be evicted meanwhile (see `serve`).

use std::io;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::api::problem::ApiError;

/// First byte of a TLS handshake record (a ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 22;

/// Why a connection did not become a TLS stream.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The client sent something other than a TLS handshake; it was answered in the clear.
    #[error("plain HTTP (or not TLS) on a TLS port")]
    NotTls,
    /// The client closed before sending anything.
    #[error("closed before the handshake")]
    Closed,
    /// The handshake failed (an untrusted certificate, no common protocol version, …).
    #[error("tls handshake failed: {0}")]
    Failed(#[from] io::Error),
}

/// Runs the server side of the handshake on `stream`.
pub async fn accept(
    stream: TcpStream,
    acceptor: &TlsAcceptor,
) -> Result<TlsStream<TcpStream>, HandshakeError> {
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await? == 0 {
        return Err(HandshakeError::Closed);
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        refuse_plain(stream).await;
        return Err(HandshakeError::NotTls);
    }
    Ok(acceptor.accept(stream).await?)
}

/// Answers a plain-HTTP client `400 INVALID_REQUEST` and closes.
async fn refuse_plain(mut stream: TcpStream) {
    let error = ApiError::InvalidRequest(
        "this port speaks TLS only; use https:// (and the cluster's CA file)".into(),
    );
    let (_, problem) = error.to_problem();
    let body = serde_json::to_vec(&problem).expect("a problem always serializes");
    let _ = write_answer(&mut stream, "400 Bad Request", &[], &body).await;
}

/// Writes one complete HTTP/1.1 answer with a problem+json `body` and shuts the write
/// side down.
pub async fn write_answer<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/problem+json\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}
