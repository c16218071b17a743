//! How a node's API address is written on the command line, in `BATON_ENDPOINTS` and in
//! the client: `host:port`, optionally with `http://` in front and a `/` behind, or
//! `https://host:port` for a cluster with `[tls]`.
//!
//! A parsed endpoint is `host:port` (plain HTTP) or `https://host:port` (TLS): messages
//! name it as the user wrote it, and [`endpoint_url`] makes request URLs from it.

/// Longest a client keeps an idle keep-alive connection to a node for reuse.
///
/// A node closes a connection that sends no request for `api.header_read_timeout_ms`
/// (10 s by default) after its previous answer. A client reusing a connection idle about
/// that long races the close and loses the request to a reset now and then; the Rust
/// client's lease renewals come every `ttl / 3`, exactly 10 s with the default 30 s TTL.
/// Well below the node's default, such a connection is dropped by the client first and
/// the request goes over a new one.
pub const CLIENT_IDLE_REUSE: std::time::Duration = std::time::Duration::from_secs(4);

/// An endpoint that cannot name a node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("empty endpoint: expected host:port")]
    Empty,
    #[error("endpoint {0:?}: Baton speaks HTTP or HTTPS; write host:port, http://host:port or https://host:port")]
    Scheme(String),
    #[error("endpoint {0:?}: expected host:port without a path")]
    Path(String),
    #[error("endpoint {0:?}: expected host:port with a port number from 1 to 65535")]
    Port(String),
}

/// Parses an endpoint into the `host:port` the client connects to, or `https://host:port`
/// for TLS: strips surrounding spaces, an optional `http://` and trailing `/`; refuses
/// other schemes, paths and a missing or bad port (a port is never guessed: nodes often
/// share a host).
///
/// ```
/// assert_eq!(baton::wire::parse_endpoint(" http://127.0.0.1:7001/ ").unwrap(), "127.0.0.1:7001");
/// assert_eq!(baton::wire::parse_endpoint("https://n1:7001/").unwrap(), "https://n1:7001");
/// assert!(baton::wire::parse_endpoint("localhost").is_err());
/// ```
pub fn parse_endpoint(raw: &str) -> Result<String, EndpointError> {
    let s = raw.trim();
    let (tls, s) = match s.strip_prefix(HTTPS) {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix("http://").unwrap_or(s)),
    };
    let s = s.trim_end_matches('/');
    if s.is_empty() {
        return Err(EndpointError::Empty);
    }
    if s.contains("://") {
        return Err(EndpointError::Scheme(raw.trim().to_string()));
    }
    if s.contains('/') {
        return Err(EndpointError::Path(raw.trim().to_string()));
    }
    // The port follows the last colon; an IPv6 host is in brackets (`[::1]:7001`).
    match s.rsplit_once(':') {
        Some((host, port))
            if !host.is_empty()
                && (!host.contains(':') || host.starts_with('['))
                && port.parse::<u16>().is_ok_and(|p| p > 0) =>
        {
            Ok(if tls {
                format!("{HTTPS}{s}")
            } else {
                s.to_string()
            })
        }
        _ => Err(EndpointError::Port(raw.trim().to_string())),
    }
}

const HTTPS: &str = "https://";

/// A parsed endpoint's `host:port` and whether it speaks TLS.
pub fn endpoint_authority(endpoint: &str) -> (&str, bool) {
    match endpoint.strip_prefix(HTTPS) {
        Some(authority) => (authority, true),
        None => (endpoint, false),
    }
}

/// The URL of `path` (starting with `/`) on a parsed endpoint.
///
/// ```
/// assert_eq!(baton::wire::endpoint_url("127.0.0.1:7001", "/readyz"), "http://127.0.0.1:7001/readyz");
/// assert_eq!(baton::wire::endpoint_url("https://n1:7001", "/readyz"), "https://n1:7001/readyz");
/// ```
pub fn endpoint_url(endpoint: &str, path: &str) -> String {
    match endpoint_authority(endpoint) {
        (authority, true) => format!("{HTTPS}{authority}{path}"),
        (authority, false) => format!("http://{authority}{path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    #[test_case("127.0.0.1:7001", "127.0.0.1:7001" ; "plain")]
    #[test_case(" http://127.0.0.1:7001/ ", "127.0.0.1:7001" ; "scheme and slash")]
    #[test_case("localhost:7001", "localhost:7001" ; "host name")]
    #[test_case("[::1]:7001", "[::1]:7001" ; "ipv6")]
    #[test_case(" https://n1.example:7001/ ", "https://n1.example:7001" ; "tls")]
    fn accepts_host_and_port(raw: &str, expected: &str) {
        assert_eq!(parse_endpoint(raw).as_deref(), Ok(expected));
    }

    #[test_case("" ; "empty")]
    #[test_case("http://" ; "scheme only")]
    #[test_case("ftp://a:1" ; "other scheme")]
    #[test_case("https://" ; "tls scheme only")]
    #[test_case("https://a:1/v1" ; "tls with a path")]
    #[test_case("a:1/v1" ; "path")]
    #[test_case("localhost" ; "no port")]
    #[test_case("a:0" ; "port zero")]
    #[test_case("a:99999" ; "port too large")]
    #[test_case(":7001" ; "no host")]
    #[test_case("::1:7001" ; "ipv6 without brackets")]
    fn refuses_what_is_not_host_and_port(raw: &str) {
        assert!(parse_endpoint(raw).is_err(), "{raw:?}");
    }
}
