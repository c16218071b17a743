//! Validated newtypes: [`Key`], [`Owner`], [`Token`], [`AppName`].
//!
//! A `Key` or `Owner` exists only if it is valid, so the rest of the crate never checks
//! again. Deserialisation validates too (`serde(try_from)`), so a corrupt snapshot or a
//! peer's bad message cannot smuggle an invalid key into the table.
//!
//! Both hold their text in an `Arc<str>`: a key is kept four times per lock (the table's
//! map, the key state, the grant and the expiry index) and copied into every event,
//! reply and change set, so a clone shares the text instead of allocating a copy. They
//! serialise as plain strings.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize, Serializer};

/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 255;
/// Longest owner, in bytes.
pub const MAX_OWNER_LEN: usize = 255;
/// Longest application name, in bytes.
pub const MAX_APP_LEN: usize = 64;
/// How much of a bad input an error message quotes.
const QUOTE_LEN: usize = 40;

/// Input that is not a valid key or owner; the message says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInput {
    #[error("{0}")]
    Key(String),
    #[error("{0}")]
    Owner(String),
    #[error("{0}")]
    App(String),
}

/// A lock name: 1 to 255 bytes of `[A-Za-z0-9._:-]`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Key(Arc<str>);

/// The identity that holds a lock: 1 to 255 bytes of printable ASCII (0x20..=0x7e).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Owner(Arc<str>);

/// An authenticated application (a name from the keys file): 1 to 64 bytes of
/// `[A-Za-z0-9._-]`. Recorded on grants and waiters when auth is on, so that only the
/// application that acquired a lock may renew or release it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct AppName(Arc<str>);

/// A fencing token: the Raft log index of the entry that granted the lock.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Token(pub u64);

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-')
}

fn is_app_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

fn is_owner_byte(b: u8) -> bool {
    (0x20..=0x7e).contains(&b)
}

/// Checks length and charset; returns the problem in words.
fn check(
    s: &str,
    what: &str,
    max: usize,
    allowed: fn(u8) -> bool,
    charset: &str,
) -> Result<(), String> {
    if s.is_empty() || s.len() > max {
        return Err(format!(
            "{what} must be 1 to {max} bytes of {charset}, got {} bytes",
            s.len()
        ));
    }
    if let Some(pos) = s.bytes().position(|b| !allowed(b)) {
        let shown: String = s.chars().take(QUOTE_LEN).collect();
        return Err(format!(
            "{what} {shown:?} has a byte outside {charset} at offset {pos}"
        ));
    }
    Ok(())
}

impl Key {
    /// Validates `s` as a key.
    pub fn parse(s: impl Into<String>) -> Result<Key, InvalidInput> {
        let s = s.into();
        check(&s, "key", MAX_KEY_LEN, is_key_byte, "[A-Za-z0-9._:-]").map_err(InvalidInput::Key)?;
        Ok(Key(s.into()))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Owner {
    /// Validates `s` as an owner.
    pub fn parse(s: impl Into<String>) -> Result<Owner, InvalidInput> {
        let s = s.into();
        check(&s, "owner", MAX_OWNER_LEN, is_owner_byte, "printable ASCII")
            .map_err(InvalidInput::Owner)?;
        Ok(Owner(s.into()))
    }

    /// The owner as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Key {
    type Error = InvalidInput;
    fn try_from(s: String) -> Result<Key, InvalidInput> {
        Key::parse(s)
    }
}

impl From<Key> for String {
    fn from(k: Key) -> String {
        k.0.to_string()
    }
}

impl Serialize for Key {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl AppName {
    /// Validates `s` as an application name.
    pub fn parse(s: impl Into<String>) -> Result<AppName, InvalidInput> {
        let s = s.into();
        check(
            &s,
            "application name",
            MAX_APP_LEN,
            is_app_byte,
            "[A-Za-z0-9._-]",
        )
        .map_err(InvalidInput::App)?;
        Ok(AppName(s.into()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AppName {
    type Error = InvalidInput;
    fn try_from(s: String) -> Result<AppName, InvalidInput> {
        AppName::parse(s)
    }
}

impl Serialize for AppName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl fmt::Display for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Owner {
    type Error = InvalidInput;
    fn try_from(s: String) -> Result<Owner, InvalidInput> {
        Owner::parse(s)
    }
}

impl From<Owner> for String {
    fn from(o: Owner) -> String {
        o.0.to_string()
    }
}

impl Serialize for Owner {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Lets the table range over keys by `&str` (prefix scans); `Key`'s order is its
/// string's order, as `Borrow` requires.
impl std::borrow::Borrow<str> for Key {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    #[test]
    fn keys_and_owners_encode_as_their_strings_and_clones_share_the_text() {
        let key = Key::parse("deploy").unwrap();
        let owner = Owner::parse("ci 42").unwrap();
        assert_eq!(serde_json::to_string(&key).unwrap(), "\"deploy\"");
        assert_eq!(serde_json::to_string(&owner).unwrap(), "\"ci 42\"");
        let encoded = crate::codec::encode(&(&key, &owner)).unwrap();
        assert_eq!(encoded, crate::codec::encode(&("deploy", "ci 42")).unwrap());
        let decoded: (Key, Owner) = crate::codec::decode(&encoded).unwrap();
        assert_eq!(decoded, (key.clone(), owner));
        assert!(Arc::ptr_eq(&key.0, &key.clone().0));
        assert!(serde_json::from_str::<Key>("\"bad key\"").is_err());
    }

    #[test_case("deploy" ; "word")]
    #[test_case("order:12345" ; "colon and digits")]
    #[test_case("a.b_c-d:E9" ; "every punctuation")]
    #[test_case("x" ; "one byte")]
    fn valid_keys(s: &str) {
        assert_eq!(Key::parse(s).unwrap().as_str(), s);
    }

    #[test_case("" ; "empty")]
    #[test_case("a/b" ; "slash")]
    #[test_case("a b" ; "space")]
    #[test_case("été" ; "unicode")]
    #[test_case("a\nb" ; "newline")]
    #[test_case("a\u{0}" ; "nul")]
    fn invalid_keys(s: &str) {
        assert!(matches!(Key::parse(s), Err(InvalidInput::Key(_))));
    }

    #[test]
    fn key_length_limit_is_255_bytes() {
        assert!(Key::parse("k".repeat(255)).is_ok());
        let err = Key::parse("k".repeat(256)).unwrap_err().to_string();
        assert!(err.contains("got 256 bytes"), "{err}");
    }

    #[test_case("ci-pipeline-123" ; "simple")]
    #[test_case("host 10.0.0.1 pid=42 {x}" ; "spaces and symbols")]
    #[test_case("~" ; "tilde")]
    fn valid_owners(s: &str) {
        assert_eq!(Owner::parse(s).unwrap().as_str(), s);
    }

    #[test_case("" ; "empty")]
    #[test_case("tab\there" ; "tab")]
    #[test_case("del\u{7f}" ; "del")]
    #[test_case("naïve" ; "unicode")]
    fn invalid_owners(s: &str) {
        assert!(matches!(Owner::parse(s), Err(InvalidInput::Owner(_))));
    }

    #[test_case("billing" ; "word")]
    #[test_case("ops.team_2-eu" ; "punctuation")]
    fn valid_app_names(s: &str) {
        assert_eq!(AppName::parse(s).unwrap().as_str(), s);
    }

    #[test_case("" ; "empty")]
    #[test_case("a:b" ; "colon")]
    #[test_case("a b" ; "space")]
    #[test_case(&"a".repeat(65) ; "too long")]
    fn invalid_app_names(s: &str) {
        assert!(matches!(AppName::parse(s), Err(InvalidInput::App(_))));
    }

    #[test]
    fn owner_length_limit_is_255_bytes() {
        assert!(Owner::parse("o".repeat(255)).is_ok());
        assert!(Owner::parse("o".repeat(256)).is_err());
    }

    #[test]
    fn error_messages_do_not_echo_huge_input() {
        let err = Key::parse(format!("{}/", "k".repeat(200)))
            .unwrap_err()
            .to_string();
        assert!(err.len() < 150, "{err}");
        assert!(err.contains("offset 200"), "{err}");
    }

    #[test]
    fn deserialising_validates() {
        let bytes = postcard::to_stdvec("bad key").unwrap();
        assert!(postcard::from_bytes::<Key>(&bytes).is_err());
        let bytes = postcard::to_stdvec("good-key").unwrap();
        assert_eq!(
            postcard::from_bytes::<Key>(&bytes).unwrap().as_str(),
            "good-key"
        );
    }
}
