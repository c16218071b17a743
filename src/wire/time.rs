//! Wire times: RFC 3339 UTC with exactly three fractional digits (`2026-11-22T12:35:00.323Z`),
//! converted from and to integer milliseconds since the Unix epoch (cluster time).

use ::time::format_description::well_known::Rfc3339;
use ::time::macros::format_description;
use ::time::OffsetDateTime;

/// A wire time that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("expected an RFC 3339 time such as 2026-11-22T12:35:00.323Z, got {0:?}")]
    Malformed(String),
    #[error("time {0:?} is before 1970")]
    BeforeEpoch(String),
}

/// Formats milliseconds since the epoch as RFC 3339 UTC with milliseconds.
///
/// A value past year 9999 cannot be written as RFC 3339; it becomes `"<ms>ms"` rather
/// than a panic (no lease lives that long: `lease.max_ttl_ms` is a day).
pub fn rfc3339_ms(ms: u64) -> String {
    let fmt =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    i128::from(ms)
        .checked_mul(1_000_000)
        .and_then(|ns| OffsetDateTime::from_unix_timestamp_nanos(ns).ok())
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| format!("{ms}ms"))
}

/// Reads an RFC 3339 time (any offset, any precision) as milliseconds since the epoch,
/// truncating below a millisecond.
pub fn parse_rfc3339_ms(text: &str) -> Result<u64, TimeError> {
    let t = OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|_| TimeError::Malformed(text.to_string()))?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| TimeError::BeforeEpoch(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    #[test]
    fn formats_milliseconds_in_utc() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }

    #[test_case(0 ; "epoch")]
    #[test_case(1_700_000_000_123 ; "with milliseconds")]
    #[test_case(253_402_300_799_999 ; "last millisecond of 9999")]
    fn formatting_then_parsing_gives_the_milliseconds_back(ms: u64) {
        assert_eq!(parse_rfc3339_ms(&rfc3339_ms(ms)), Ok(ms));
    }

    #[test]
    fn parses_other_offsets_and_precisions() {
        assert_eq!(
            parse_rfc3339_ms("2023-11-14T23:13:20.123456+01:00"),
            Ok(1_700_000_000_123)
        );
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:01Z"), Ok(1_000));
    }

    #[test]
    fn refuses_what_is_not_a_time_after_the_epoch() {
        assert!(matches!(
            parse_rfc3339_ms("yesterday"),
            Err(TimeError::Malformed(_))
        ));
        assert!(matches!(
            parse_rfc3339_ms("1969-12-31T23:59:59.000Z"),
            Err(TimeError::BeforeEpoch(_))
        ));
    }
}
