//! Human durations on the command line: `500ms`, `30s`, `5m`, `1h`.
//!
//! [`parse_duration`] is a clap `value_parser`: a whole number followed by one unit, no
//! spaces inside, no fractions and no compound forms (`1m30s`); write `90s` instead. A
//! bare number is refused rather than guessed, because `--ttl 30` could mean seconds or
//! milliseconds.

use std::time::Duration;

/// Units and how many milliseconds one of them is; longest suffix first so that `ms`
/// is not read as `m` + `s`.
const UNITS: &[(&str, u64)] = &[("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000)];

/// Parses `<whole number><unit>` with unit `ms`, `s`, `m` or `h`.
///
/// ```
/// use std::time::Duration;
/// use baton::cli::duration::parse_duration;
/// assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
/// assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
/// assert!(parse_duration("5").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("expected a duration such as 500ms, 30s, 5m or 1h, got an empty value".into());
    }
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    if number.is_empty() {
        return Err(format!(
            "expected a whole number before the unit in {text:?} (e.g. 500ms, 30s, 5m, 1h)"
        ));
    }
    if unit.is_empty() {
        return Err(format!(
            "duration {text:?} has no unit: write {text}ms, {text}s, {text}m or {text}h"
        ));
    }
    let Some(&(_, unit_ms)) = UNITS.iter().find(|(name, _)| *name == unit) else {
        return Err(format!(
            "unknown unit {unit:?} in {text:?}: expected ms, s, m or h"
        ));
    };
    let value: u64 = number
        .parse()
        .map_err(|_| format!("duration {text:?} is too large"))?;
    value
        .checked_mul(unit_ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration {text:?} is too large"))
}

/// Formats a duration the way [`parse_duration`] reads it, in the largest exact unit.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for &(name, unit_ms) in UNITS.iter().rev() {
        let unit_ms = u128::from(unit_ms);
        if ms >= unit_ms && ms.is_multiple_of(unit_ms) {
            return format!("{}{name}", ms / unit_ms);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    #[test_case("500ms", 500 ; "milliseconds")]
    #[test_case("30s", 30_000 ; "seconds")]
    #[test_case("5m", 300_000 ; "minutes")]
    #[test_case("1h", 3_600_000 ; "hours")]
    #[test_case("0s", 0 ; "zero")]
    #[test_case(" 2s ", 2_000 ; "surrounding spaces")]
    #[test_case("0010ms", 10 ; "leading zeros")]
    fn parses_whole_numbers_with_a_unit(text: &str, ms: u64) {
        assert_eq!(parse_duration(text), Ok(Duration::from_millis(ms)));
    }

    #[test_case("", "empty" ; "empty")]
    #[test_case("30", "no unit" ; "bare number")]
    #[test_case("s", "whole number" ; "unit without number")]
    #[test_case("1.5s", "unknown unit" ; "fraction")]
    #[test_case("10sec", "unknown unit" ; "long unit")]
    #[test_case("1m30s", "unknown unit" ; "compound")]
    #[test_case("-1s", "whole number" ; "negative")]
    #[test_case("5 s", "unknown unit" ; "space before unit")]
    #[test_case("99999999999999999999s", "too large" ; "does not fit u64")]
    #[test_case("9999999999999999h", "too large" ; "overflows milliseconds")]
    fn refuses_with_a_message(text: &str, expected: &str) {
        let err = parse_duration(text).unwrap_err();
        assert!(err.contains(expected), "{text:?}: {err}");
    }

    #[test_case(500, "500ms")]
    #[test_case(30_000, "30s")]
    #[test_case(90_000, "90s")]
    #[test_case(120_000, "2m")]
    #[test_case(7_200_000, "2h")]
    #[test_case(0, "0ms")]
    fn formats_in_the_largest_exact_unit(ms: u64, text: &str) {
        let d = Duration::from_millis(ms);
        assert_eq!(format_duration(d), text);
        assert_eq!(parse_duration(text), Ok(d));
    }
}
