//! `GET /ui`: the status page, for people. One HTML document with its style and script
//! inline (`ui/` beside this file, embedded in the binary: no build step, no CDN, no
//! other route), which reads this node's public API from the browser:
//! `GET /v1/cluster` (nodes, roles, term, indexes, and the lag the leader reports),
//! `GET /v1/locks?prefix=` (holder, token, expiry, waiters) and the live feed
//! `GET /v1/events?prefix=` ([`super::feed`]). Any node serves it.
//!
//! Access: the page itself is open (it holds no data, like the OpenAPI document). With
//! `[auth] enabled` the page asks for an API key when the API answers 401, keeps it in
//! the tab's `sessionStorage` and sends it as `Authorization: Bearer` on every read; the
//! feed is read with `fetch()` streaming, since `EventSource` cannot send that header.
//! What the page shows is what that key may read.
//!
//! The page puts every value from the API into the document as text, never as markup,
//! and its Content-Security-Policy allows only its own inline script and style (by
//! SHA-256) and requests to its own origin.

use std::sync::LazyLock;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};

const STYLE: &str = include_str!("ui/ui.css");
const SCRIPT: &str = include_str!("ui/ui.js");

/// The page.
pub const PAGE: &str = concat!(
    include_str!("ui/head.html"),
    "<style>",
    include_str!("ui/ui.css"),
    "</style>\n",
    include_str!("ui/body.html"),
    "<script>",
    include_str!("ui/ui.js"),
    "</script>\n</body>\n</html>\n"
);

/// Only the page's own script and style run; it talks to its own origin only, and may
/// not be framed.
static CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
    let hash = |s: &str| base64::engine::general_purpose::STANDARD.encode(Sha256::digest(s));
    let policy = format!(
        "default-src 'none'; script-src 'sha256-{}'; style-src 'sha256-{}'; connect-src 'self'; \
         img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        hash(SCRIPT),
        hash(STYLE)
    );
    HeaderValue::from_str(&policy).expect("a policy of ASCII is a valid header value")
});

/// `GET /ui`.
pub async fn page() -> Response {
    let mut resp = PAGE.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CONTENT_SECURITY_POLICY, CSP.clone());
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

#[cfg(test)]
mod tests {
    use super::{PAGE, SCRIPT, STYLE};

    #[test]
    fn the_page_inlines_exactly_the_hashed_script_and_style() {
        assert!(PAGE.contains(&format!("<script>{SCRIPT}</script>")));
        assert!(PAGE.contains(&format!("<style>{STYLE}</style>")));
        assert_eq!(PAGE.matches("<script").count(), 1);
        assert_eq!(PAGE.matches("<style").count(), 1);
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for needle in ["http://", "https://", "src=", "<link", "innerHTML", "eval("] {
            assert!(!PAGE.contains(needle), "the page contains {needle}");
        }
    }
}
