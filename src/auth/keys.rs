//! The keys file: which applications exist, the SHA-256 hash of each one's API key, and
//! what each may do on which key prefixes.
//!
//! # Format
//! One application per line; blank lines and lines starting with `#` are ignored:
//! ```text
//! # name    key hash (sha256 of the key)     permissions
//! billing   sha256:5e884898da28047151d0e5…   lock=billing: read=billing: read=shared:
//! ops       sha256:a665a45920422f9d417e48…   admin=*
//! ```
//! A permission is `lock`, `read` or `admin`, `=`, and a key prefix (`*`: every key).
//! `lock` acquires, renews, releases and cancels the application's own locks; `read`
//! gets, lists, validates and watches; `admin` also releases anyone's lock on its
//! prefixes and, with `admin=*`, uses the cluster endpoints. `admin` includes `lock`
//! and `read` on the same prefixes. `baton keys create` prints a new key and its line.
//!
//! Keys are long random strings (256 bits), so a plain SHA-256 of the key is enough to
//! keep the file from revealing them: there is nothing to brute-force. A presented key
//! is hashed and compared with every entry in constant time.

use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::locks::{AppName, Key};

/// What an application may do on a key prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Permission {
    /// Acquire, renew, release and cancel its own locks.
    Lock,
    /// Get, list, validate, watch.
    Read,
    /// Release anyone's lock; with every key (`admin=*`), the cluster endpoints.
    Admin,
}

impl Permission {
    /// The name used in the keys file.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Lock => "lock",
            Permission::Read => "read",
            Permission::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Option<Permission> {
        match s {
            "lock" => Some(Permission::Lock),
            "read" => Some(Permission::Read),
            "admin" => Some(Permission::Admin),
            _ => None,
        }
    }

    /// Does holding `self` give `wanted`? (`admin` includes the others.)
    fn covers(self, wanted: Permission) -> bool {
        self == wanted || self == Permission::Admin
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One permission on one key prefix (`""`: every key, written `*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub permission: Permission,
    pub prefix: String,
}

impl Rule {
    /// Parses `lock=billing:` or `admin=*`.
    pub fn parse(s: &str) -> Result<Rule, String> {
        let (perm, prefix) = s
            .split_once('=')
            .ok_or_else(|| format!("permission {s:?} is not PERMISSION=PREFIX"))?;
        let permission = Permission::parse(perm)
            .ok_or_else(|| format!("permission {perm:?} is not one of lock, read, admin"))?;
        let prefix = match prefix {
            "*" => String::new(),
            p => {
                // A prefix is the start of a key: key bytes only (a full key is checked).
                Key::parse(p).map_err(|e| format!("prefix {p:?}: {e}"))?;
                p.to_string()
            }
        };
        Ok(Rule { permission, prefix })
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = if self.prefix.is_empty() {
            "*"
        } else {
            &self.prefix
        };
        write!(f, "{}={prefix}", self.permission)
    }
}

/// An authenticated application and what it may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub app: AppName,
    pub rules: Arc<[Rule]>,
}

impl Principal {
    /// May it use `permission` on `key`?
    pub fn allows(&self, permission: Permission, key: &str) -> bool {
        self.rules
            .iter()
            .any(|r| r.permission.covers(permission) && key.starts_with(&r.prefix))
    }

    /// May it use `permission` on every key that starts with `prefix` (a list)?
    pub fn allows_prefix(&self, permission: Permission, prefix: &str) -> bool {
        self.allows(permission, prefix)
    }

    /// May it use `permission` on every key (`PERMISSION=*`)?
    pub fn allows_all(&self, permission: Permission) -> bool {
        self.allows(permission, "")
    }
}

/// A malformed keys file; the message names the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct KeysError {
    pub line: usize,
    pub message: String,
}

#[derive(Clone, Debug)]
struct Entry {
    hash: [u8; 32],
    principal: Principal,
}

/// The parsed keys file.
#[derive(Clone, Debug, Default)]
pub struct Keys {
    entries: Vec<Entry>,
}

/// Prefix of a key hash in the keys file, naming the hash function.
const HASH_PREFIX: &str = "sha256:";

/// The SHA-256 of `key`.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// `key`'s hash as written in the keys file (`sha256:` and 64 hex digits).
pub fn hash_field(key: &str) -> String {
    format!("{HASH_PREFIX}{}", hex(&hash_key(key)))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hash(field: &str) -> Result<[u8; 32], String> {
    let hex = field
        .strip_prefix(HASH_PREFIX)
        .ok_or_else(|| format!("key hash must start with {HASH_PREFIX:?}"))?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("key hash must be 64 hex digits after \"sha256:\"".into());
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.as_bytes().chunks(2)) {
        let digits = std::str::from_utf8(pair).map_err(|e| e.to_string())?;
        *byte = u8::from_str_radix(digits, 16).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// Equal in constant time: the time taken does not depend on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

impl Keys {
    /// Parses the keys file's text.
    pub fn parse(text: &str) -> Result<Keys, KeysError> {
        let mut entries: Vec<Entry> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let bad = |message: String| KeysError { line, message };
            let content = raw.trim();
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            let mut fields = content.split_whitespace();
            let name = fields
                .next()
                .ok_or_else(|| bad("no application name".into()))?;
            let app = AppName::parse(name).map_err(|e| bad(e.to_string()))?;
            let hash =
                parse_hash(fields.next().ok_or_else(|| bad("no key hash".into()))?).map_err(bad)?;
            let rules = fields
                .map(Rule::parse)
                .collect::<Result<Vec<_>, _>>()
                .map_err(bad)?;
            if rules.is_empty() {
                return Err(bad(format!("application {app} has no permissions")));
            }
            if entries.iter().any(|e| e.principal.app == app) {
                return Err(bad(format!("application {app} appears twice")));
            }
            if entries.iter().any(|e| e.hash == hash) {
                return Err(bad(format!(
                    "application {app} has another application's key"
                )));
            }
            entries.push(Entry {
                hash,
                principal: Principal {
                    app,
                    rules: rules.into(),
                },
            });
        }
        Ok(Keys { entries })
    }

    /// The application whose key is `key`, if any. Every entry is compared, each in
    /// constant time, so the answer's timing tells nothing about the stored hashes.
    pub fn authenticate(&self, key: &str) -> Option<Principal> {
        let presented = hash_key(key);
        let mut found = None;
        for e in &self.entries {
            if constant_time_eq(&e.hash, &presented) {
                found = Some(&e.principal);
            }
        }
        found.cloned()
    }

    /// The application named `app` (a relayed request names it; the relaying node
    /// checked the key).
    pub fn by_name(&self, app: &str) -> Option<Principal> {
        self.entries
            .iter()
            .find(|e| e.principal.app.as_str() == app)
            .map(|e| e.principal.clone())
    }

    /// Number of applications.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The keys-file line of application `app` with key `key` and `rules`.
pub fn keys_file_line(app: &AppName, key: &str, rules: &[Rule]) -> String {
    let rules: Vec<String> = rules.iter().map(Rule::to_string).collect();
    format!("{app} {} {}", hash_field(key), rules.join(" "))
}

/// Bytes of randomness in a new key (256 bits).
const KEY_BYTES: usize = 32;
/// Prefix of generated keys, so a leaked one is recognisable (secret scanners).
pub const KEY_PREFIX: &str = "bk_";

/// A new random API key: `bk_` and 64 hex digits from the OS's random source.
pub fn new_key() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; KEY_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{KEY_PREFIX}{}", hex(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    fn file() -> String {
        format!(
            "# apps\n\nbilling {} lock=billing: read=billing: read=shared:\nops {} admin=*\n",
            hash_field("k-billing"),
            hash_field("k-ops")
        )
    }

    #[test]
    fn a_key_authenticates_its_application_and_others_do_not() {
        let keys = Keys::parse(&file()).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(
            keys.authenticate("k-billing").unwrap().app.as_str(),
            "billing"
        );
        assert_eq!(keys.authenticate("k-ops").unwrap().app.as_str(), "ops");
        assert!(keys.authenticate("k-other").is_none());
        assert!(keys.authenticate("").is_none());
    }

    #[test]
    fn permissions_apply_to_their_prefixes_and_admin_includes_the_others() {
        let keys = Keys::parse(&file()).unwrap();
        let billing = keys.authenticate("k-billing").unwrap();
        assert!(billing.allows(Permission::Lock, "billing:invoices"));
        assert!(!billing.allows(Permission::Lock, "shared:x"));
        assert!(billing.allows(Permission::Read, "shared:x"));
        assert!(!billing.allows(Permission::Admin, "billing:invoices"));
        assert!(!billing.allows_all(Permission::Read));
        assert!(billing.allows_prefix(Permission::Read, "billing:inv"));
        assert!(!billing.allows_prefix(Permission::Read, "bill"));
        let ops = keys.authenticate("k-ops").unwrap();
        for p in [Permission::Lock, Permission::Read, Permission::Admin] {
            assert!(ops.allows_all(p));
        }
    }

    #[test_case("billing", "line 1: no key hash" ; "no hash")]
    #[test_case("billing md5:00 lock=*", "must start with" ; "other hash")]
    #[test_case("billing sha256:00 lock=*", "64 hex digits" ; "short hash")]
    #[test_case(&format!("billing {} ", hash_field("k")), "no permissions" ; "no permissions")]
    #[test_case(&format!("billing {} write=*", hash_field("k")), "not one of lock" ; "unknown permission")]
    #[test_case(&format!("billing {} lock", hash_field("k")), "PERMISSION=PREFIX" ; "no prefix")]
    #[test_case(&format!("billing {} lock=a/b", hash_field("k")), "prefix" ; "bad prefix")]
    #[test_case(&format!("bill:ing {} lock=*", hash_field("k")), "application name" ; "bad name")]
    #[test_case(&format!("a {} lock=*\na {} lock=*", hash_field("k"), hash_field("j")), "line 2: application a appears twice" ; "twice")]
    #[test_case(&format!("a {} lock=*\nb {} lock=*", hash_field("k"), hash_field("k")), "another application's key" ; "shared key")]
    fn a_malformed_file_is_refused_naming_the_line(text: &str, expected: &str) {
        let err = Keys::parse(text).unwrap_err().to_string();
        assert!(err.contains(expected), "{err}");
    }

    #[test]
    fn a_created_line_parses_back_and_the_key_authenticates() {
        let key = new_key();
        assert!(key.starts_with(KEY_PREFIX) && key.len() == KEY_PREFIX.len() + 64);
        assert_ne!(key, new_key());
        let app = AppName::parse("ci").unwrap();
        let rules = vec![
            Rule::parse("lock=deploy-").unwrap(),
            Rule::parse("read=*").unwrap(),
        ];
        let line = keys_file_line(&app, &key, &rules);
        assert!(!line.contains(&key), "the line must not contain the key");
        assert!(line.ends_with("lock=deploy- read=*"), "{line}");
        let p = Keys::parse(&line).unwrap().authenticate(&key).unwrap();
        assert_eq!(p.app, app);
        assert!(p.allows(Permission::Read, "anything"));
    }

    #[test]
    fn constant_time_eq_compares_bytes() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
