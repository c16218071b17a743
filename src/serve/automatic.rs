//! hyper's automatic answers, as problem+json.
//!
//! When hyper cannot parse a request head (a bad request line or header, a target or a
//! head too long) it answers by itself — `400`, `414` or `431` with an empty body —
//! and closes the connection; the service never sees the request, and hyper has no
//! hook to shape that answer. Every answer a client sees should be problem+json with a
//! `code`, so [`ProblemAnswers`] wraps the connection's stream and replaces exactly that
//! answer on its way out.
//!
//! Recognising it: hyper writes its automatic answer only when no response is being
//! written (`Writing::Init` in hyper's connection), so it starts a write, and it is a
//! bare head — one of those three status lines, `content-length: 0`, and no
//! `content-type`. Every answer the services send carries a `content-type` (errors are
//! [`ApiError`]s), so none is taken for it.
//!
//! # Caveats
//! If the automatic answer is queued behind the unsent tail of the previous response
//! (a pipelining client that does not read), it does not start a write and goes out
//! as hyper wrote it.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::api::problem::ApiError;

/// Makes the error an automatic answer becomes.
type MakeError = fn() -> ApiError;

/// The status lines hyper writes for a request head it cannot parse, and the error each
/// becomes.
const AUTOMATIC: [(&[u8], MakeError); 3] = [
    (b"HTTP/1.1 400 Bad Request\r\n", || {
        ApiError::InvalidRequest("malformed request line or header".into())
    }),
    (b"HTTP/1.1 414 URI Too Long\r\n", || {
        ApiError::UriTooLong("the request target is longer than this server reads".into())
    }),
    (b"HTTP/1.1 431 Request Header Fields Too Large\r\n", || {
        ApiError::HeaderTooLarge(format!(
            "the request head exceeds {} bytes",
            super::MAX_HEADER_BUFFER_BYTES
        ))
    }),
];

/// A stream whose hyper automatic answers go out as problem+json (see the module doc).
pub struct ProblemAnswers<S> {
    io: S,
    /// A replacement answer accepted from hyper and not yet written, and how much of it
    /// has been.
    pending: Option<(Vec<u8>, usize)>,
}

impl<S> ProblemAnswers<S> {
    pub fn new(io: S) -> ProblemAnswers<S> {
        ProblemAnswers { io, pending: None }
    }
}

impl<S: AsyncWrite + Unpin> ProblemAnswers<S> {
    /// Writes what is left of a replacement answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.pending {
            if *written == bytes.len() {
                self.pending = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }

    /// Takes `buf` as written if it is an automatic answer, queueing its replacement.
    fn replace(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Option<Poll<io::Result<usize>>> {
        let replacement = rewrite(buf)?;
        self.pending = Some((replacement, 0));
        // Start writing now; what is left goes out on the next write, flush or shutdown.
        if let Poll::Ready(Err(e)) = self.poll_pending(cx) {
            return Some(Poll::Ready(Err(e)));
        }
        Some(Poll::Ready(Ok(buf.len())))
    }
}

/// The problem+json answer that replaces `head`, if `head` is one of hyper's automatic
/// answers.
pub fn rewrite(head: &[u8]) -> Option<Vec<u8>> {
    let (status_line, error) = AUTOMATIC.iter().find(|(line, _)| head.starts_with(line))?;
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    if end != head.len() {
        return None;
    }
    let headers = std::str::from_utf8(&head[status_line.len()..end - 2]).ok()?;
    let mut kept = String::new();
    let mut bare = false;
    for line in headers.split_terminator("\r\n") {
        let (name, value) = line.split_once(':')?;
        match name.to_ascii_lowercase().as_str() {
            "content-type" => return None,
            "content-length" => bare = value.trim() == "0",
            // The connection closes after this answer whatever was asked.
            "connection" => {}
            _ => {
                kept.push_str(line);
                kept.push_str("\r\n");
            }
        }
    }
    if !bare {
        return None;
    }
    let (_, problem) = error().to_problem();
    let body = serde_json::to_vec(&problem).expect("a problem always serializes");
    let mut out = Vec::with_capacity(status_line.len() + kept.len() + body.len() + 128);
    out.extend_from_slice(status_line);
    out.extend_from_slice(kept.as_bytes());
    out.extend_from_slice(
        format!(
            "content-type: application/problem+json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(&body);
    Some(out)
}

impl<S: AsyncRead + Unpin> AsyncRead for ProblemAnswers<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ProblemAnswers<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        if let Some(done) = this.replace(cx, buf) {
            return done;
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        // An automatic answer is a lone head: one slice.
        if let [only] = bufs {
            if let Some(done) = this.replace(cx, only) {
                return done;
            }
        }
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_bare_400_becomes_an_invalid_request_problem() {
        let head = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: Mon, 30 Nov 2026 20:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(rewrite(head).unwrap()).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert!(
            head.contains("date: Mon, 30 Nov 2026 20:00:00 GMT"),
            "{head}"
        );
        assert!(head.contains("content-type: application/problem+json"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let problem: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(problem["code"], "INVALID_REQUEST");
        assert_eq!(problem["status"], 400);
    }

    #[test]
    fn answers_with_a_content_type_or_a_body_are_left_alone() {
        for head in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nHTTP/1.1 200 OK\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n",
        ] {
            assert_eq!(rewrite(head), None, "{}", String::from_utf8_lossy(head));
        }
    }
}
