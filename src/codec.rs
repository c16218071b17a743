//! The one place that turns values into bytes and back: Raft messages, log entries,
//! state-machine records and snapshots all go through [`encode`] and [`decode`].
//!
//! The format is [postcard](https://docs.rs/postcard): compact, serde-based and with a
//! documented, stable wire format. bincode was the first choice, but its last release is
//! an empty `compile_error!` and its older lines are flagged unmaintained (DESIGN.md,
//! "Raft, storage and durability rules"). Keeping the codec behind this module means a
//! format change touches one file.
//!
//! Decoding is defensive: bytes from a peer or from disk that do not decode are an error,
//! never a panic.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct CodecError {
    what: &'static str,
    #[source]
    source: postcard::Error,
}

/// Encodes `value` into postcard bytes.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    postcard::to_stdvec(value).map_err(|source| CodecError {
        what: "cannot encode value",
        source,
    })
}

/// Decodes postcard bytes into a `T`; trailing bytes are an error (a sign of corruption
/// or of a peer speaking another format).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(|source| CodecError {
        what: "cannot decode value",
        source,
    })?;
    if !rest.is_empty() {
        return Err(CodecError {
            what: "trailing bytes after value",
            source: postcard::Error::DeserializeBadEncoding,
        });
    }
    Ok(value)
}

/// Appends to `out` the encoding of a sequence (a `Vec` or slice) of `count` elements
/// whose own encodings are `elements`, joined in order. postcard writes a sequence as its
/// length and then each element, so stored encodings can be joined without decoding
/// them; a struct is its fields in order, so a struct ending in a sequence is its other
/// fields' encodings followed by this.
pub fn append_encoded_seq(
    out: &mut Vec<u8>,
    count: usize,
    elements: &[u8],
) -> Result<(), CodecError> {
    out.extend(encode(&count)?);
    out.extend_from_slice(elements);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joined_element_encodings_decode_as_a_sequence() {
        // 0, 1 and 300 elements: a length of one and of two varint bytes.
        for n in [0usize, 1, 300] {
            let items: Vec<(u64, String)> = (0..n).map(|i| (i as u64, format!("k{i}"))).collect();
            let mut joined = Vec::new();
            for item in &items {
                joined.extend(encode(item).unwrap());
            }
            let mut out = encode(&7u64).unwrap();
            append_encoded_seq(&mut out, items.len(), &joined).unwrap();
            assert_eq!(out, encode(&(7u64, &items)).unwrap());
            assert_eq!(
                decode::<(u64, Vec<(u64, String)>)>(&out).unwrap(),
                (7, items)
            );
        }
    }

    #[test]
    fn round_trips_a_struct() {
        let v = (7u64, "deploy".to_string(), Some(3u32));
        let bytes = encode(&v).unwrap();
        assert_eq!(decode::<(u64, String, Option<u32>)>(&bytes).unwrap(), v);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode::<(u64, String)>(&[0xff, 0xff, 0xff]).is_err());
        assert!(decode::<String>(&[]).is_err());
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = encode(&5u64).unwrap();
        bytes.push(0);
        assert!(decode::<u64>(&bytes).is_err());
    }

    /// Entries written before `AcquireExclusive` existed must decode as they were:
    /// appending a variant keeps every older variant's number (postcard writes the
    /// variant index as a varint, then the fields in order).
    #[test]
    fn commands_written_before_the_exclusive_acquire_still_decode() {
        use crate::locks::{Command, Key, Owner};
        let key = Key::parse("deploy").unwrap();
        let owner = Owner::parse("ci").unwrap();
        // Acquire = variant 0: key, owner, ttl_ms 1000 (varint e8 07), wait 0, delay 0, now 5.
        let mut acquire = vec![0u8, 6];
        acquire.extend(b"deploy");
        acquire.extend([2, b'c', b'i', 0xe8, 0x07, 0, 0, 5]);
        assert_eq!(
            decode::<Command>(&acquire).unwrap(),
            Command::acquire(key.clone(), owner.clone(), 1000, 5)
        );
        // RefreshLeases = variant 8, the last one before.
        assert_eq!(
            decode::<Command>(&[8, 9, 4]).unwrap(),
            Command::refresh_leases(9, 4)
        );
        // The new variant takes the next number and round-trips.
        let exclusive = Command::acquire_exclusive(key, owner, 1000, 5);
        let bytes = encode(&exclusive).unwrap();
        assert_eq!(bytes[0], 9);
        assert_eq!(decode::<Command>(&bytes).unwrap(), exclusive);
    }
}
