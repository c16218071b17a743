//! The identity a follower passes to the leader with a relayed request.
//!
//! The follower authenticated the caller's API key; the leader must learn *which*
//! application it was without trusting anything a client could send. The relay adds
//! one header value, `v1 APP TIMESTAMP_MS MAC`, where MAC is HMAC-SHA256 under the
//! cluster secret (`raft.secret`) over the method, the request target, the SHA-256 of
//! the body, the timestamp and the application. A client does not know the secret, so
//! it can neither forge the header nor move a captured one to another request; the
//! timestamp bounds how long a captured one can be replayed (and every write is
//! idempotent). The leader then checks that application's permissions in its own keys
//! file.

use sha2::{Digest, Sha256};

use super::keys::{constant_time_eq, hex};
use crate::locks::AppName;

/// Version tag of the header value.
const VERSION: &str = "v1";
/// Domain separation: this MAC is for relayed identities only.
const CONTEXT: &[u8] = b"baton relayed identity v1";
/// How far the relaying node's clock may be from the leader's, and how long a relayed
/// request may take, before the identity is refused (ms).
pub const MAX_SKEW_MS: u64 = 60_000;
/// SHA-256's block size (HMAC pads the key to it).
const BLOCK: usize = 64;

/// HMAC-SHA256 (RFC 2104) of `message` under `secret`.
fn hmac(secret: &[u8], message: &[u8]) -> [u8; 32] {
    let mut key = [0u8; BLOCK];
    if secret.len() > BLOCK {
        key[..32].copy_from_slice(&Sha256::digest(secret));
    } else {
        key[..secret.len()].copy_from_slice(secret);
    }
    let mut inner = Sha256::new();
    inner.update(key.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(key.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// `parts`, each preceded by its length, so that no two part lists give one message.
fn message(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        out.extend((part.len() as u64).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// The request a relayed identity is bound to.
pub struct Bound<'a> {
    pub method: &'a str,
    /// Path and query, byte for byte.
    pub target: &'a str,
    pub body: &'a [u8],
}

fn mac(secret: &str, req: &Bound<'_>, at_ms: u64, app: &str) -> [u8; 32] {
    let body = Sha256::digest(req.body);
    let at = at_ms.to_string();
    hmac(
        secret.as_bytes(),
        &message(&[
            CONTEXT,
            req.method.as_bytes(),
            req.target.as_bytes(),
            &body,
            at.as_bytes(),
            app.as_bytes(),
        ]),
    )
}

/// The header value that tells the leader `app` sent `req`, at `now_ms` (wall clock).
pub fn sign(secret: &str, req: &Bound<'_>, app: &AppName, now_ms: u64) -> String {
    let mac = mac(secret, req, now_ms, app.as_str());
    format!("{VERSION} {app} {now_ms} {}", hex(&mac))
}

/// Why a relayed identity was refused: `Stale` (signed by a node whose clock is off) is
/// the relaying node's trouble and answered as such; the others are not detailed to
/// the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayedError {
    #[error("relayed identity is malformed")]
    Malformed,
    #[error("relayed identity is {age_ms} ms away from this node's clock")]
    Stale { age_ms: u64 },
    #[error("relayed identity does not match the request or the cluster secret")]
    BadMac,
}

/// Checks `value` for `req` at `now_ms`; the application it names.
pub fn verify(
    secret: &str,
    req: &Bound<'_>,
    value: &str,
    now_ms: u64,
) -> Result<AppName, RelayedError> {
    let mut fields = value.split(' ');
    let (Some(VERSION), Some(app), Some(at), Some(mac_hex), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(RelayedError::Malformed);
    };
    let app = AppName::parse(app).map_err(|_| RelayedError::Malformed)?;
    let at: u64 = at.parse().map_err(|_| RelayedError::Malformed)?;
    let expected = hex(&mac(secret, req, at, app.as_str()));
    if !constant_time_eq(expected.as_bytes(), mac_hex.as_bytes()) {
        return Err(RelayedError::BadMac);
    }
    // Checked after the MAC: a stale identity that a node did sign means the two nodes'
    // clocks disagree (or the relay took a minute), not that a client forged it.
    let age_ms = now_ms.abs_diff(at);
    if age_ms > MAX_SKEW_MS {
        return Err(RelayedError::Stale { age_ms });
    }
    Ok(app)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: Bound<'static> = Bound {
        method: "POST",
        target: "/v1/locks/a/release",
        body: b"{}",
    };

    #[test]
    fn hmac_matches_rfc_4231_test_cases() {
        // Test case 2: a short key.
        assert_eq!(
            hex(&hmac(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block, hashed first.
        assert_eq!(
            hex(&hmac(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn a_signed_identity_verifies_only_for_its_request_secret_and_time() {
        let app = AppName::parse("billing").unwrap();
        let v = sign("s3cret", &REQ, &app, 1_000_000);
        assert_eq!(verify("s3cret", &REQ, &v, 1_000_500).unwrap(), app);
        assert_eq!(
            verify("other", &REQ, &v, 1_000_500),
            Err(RelayedError::BadMac)
        );
        let other_body = Bound {
            body: b"{\"token\":3}",
            ..REQ
        };
        assert_eq!(
            verify("s3cret", &other_body, &v, 1_000_500),
            Err(RelayedError::BadMac)
        );
        let other_target = Bound {
            target: "/v1/locks/b/release",
            ..REQ
        };
        assert_eq!(
            verify("s3cret", &other_target, &v, 1_000_500),
            Err(RelayedError::BadMac)
        );
        assert!(matches!(
            verify("s3cret", &REQ, &v, 1_000_000 + MAX_SKEW_MS + 1),
            Err(RelayedError::Stale { .. })
        ));
        // A forged identity is refused as forged, however old its timestamp.
        let forged = format!("v1 billing 1 {}", "0".repeat(64));
        assert_eq!(
            verify("s3cret", &REQ, &forged, 1_000_000),
            Err(RelayedError::BadMac)
        );
        let renamed = v.replace("billing", "ops");
        assert_eq!(
            verify("s3cret", &REQ, &renamed, 1_000_500),
            Err(RelayedError::BadMac)
        );
    }

    #[test]
    fn a_forged_or_garbled_identity_is_refused() {
        for value in [
            "",
            "ops",
            "v1 ops 1000000",
            "v1 ops x abcd",
            "v2 ops 1000000 00",
            "v1 ops 1000000 00 extra",
        ] {
            assert!(verify("s3cret", &REQ, value, 1_000_000).is_err(), "{value}");
        }
        assert_eq!(
            verify(
                "s3cret",
                &REQ,
                &format!("v1 ops 1000000 {}", "0".repeat(64)),
                1_000_000
            ),
            Err(RelayedError::BadMac)
        );
    }
}
