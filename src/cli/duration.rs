//! Human durations on the command line: `500ms`, `30s`, `1.5s`, `5m`, `1m30s`, `1h`.
//!
//! [`parse_duration`] is a clap `value_parser`: one or more `<number><unit>` parts with
//! units `ms`, `s`, `m`, `h`, no spaces inside; a number may have a fraction (`1.5s`) as
//! long as the total is whole milliseconds. A bare number is refused rather than
//! guessed, because `--ttl 30` could mean seconds or milliseconds.

use std::time::Duration;

/// Units and how many milliseconds one of them is; longest suffix first so that `ms`
/// is not read as `m` + `s`.
const UNITS: &[(&str, u64)] = &[("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000)];

/// Most fraction digits read (a nanosecond of an hour is already below a millisecond).
const MAX_FRACTION_DIGITS: usize = 9;

const EXAMPLES: &str = "e.g. 500ms, 30s, 1.5s, 5m, 1m30s, 1h";

/// Parses a duration such as `500ms`, `1.5s` or `1m30s` (see the module docs).
///
/// ```
/// use std::time::Duration;
/// use baton::cli::duration::parse_duration;
/// assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
/// assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
/// assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1_500)));
/// assert!(parse_duration("5").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(format!(
            "expected a duration ({EXAMPLES}), got an empty value"
        ));
    }
    let mut rest = text;
    let mut total_ms: u64 = 0;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_end);
        if number.is_empty() {
            return Err(format!(
                "expected a number before the unit in {text:?} ({EXAMPLES})"
            ));
        }
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        if unit.is_empty() {
            return Err(format!(
                "duration {text:?} has no unit after {number}: write {number}ms, {number}s, {number}m or {number}h"
            ));
        }
        let Some(&(_, unit_ms)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(format!(
                "unknown unit {unit:?} in {text:?}: expected ms, s, m or h ({EXAMPLES})"
            ));
        };
        let part = part_ms(number, unit_ms, text)?;
        total_ms = total_ms
            .checked_add(part)
            .ok_or_else(|| format!("duration {text:?} is too large"))?;
        rest = next;
    }
    Ok(Duration::from_millis(total_ms))
}

/// `number` (digits, at most one `.`) times `unit_ms`, in whole milliseconds.
fn part_ms(number: &str, unit_ms: u64, text: &str) -> Result<u64, String> {
    let too_large = || format!("duration {text:?} is too large");
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if fraction.contains('.') || (whole.is_empty() && fraction.is_empty()) {
        return Err(format!("{number:?} in {text:?} is not a number"));
    }
    if fraction.len() > MAX_FRACTION_DIGITS {
        return Err(format!(
            "{number:?} in {text:?} has more than {MAX_FRACTION_DIGITS} decimals"
        ));
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| too_large())?
    };
    let mut ms = whole.checked_mul(unit_ms).ok_or_else(too_large)?;
    if !fraction.is_empty() {
        let scale = 10u64.pow(fraction.len() as u32);
        let digits: u64 = fraction.parse().map_err(|_| too_large())?;
        // At most 10^9 × 3.6·10^6: fits u64 without overflow.
        let scaled = digits * unit_ms;
        if !scaled.is_multiple_of(scale) {
            return Err(format!(
                "{number}{} in {text:?} is not a whole number of milliseconds",
                UNITS.iter().find(|u| u.1 == unit_ms).map_or("", |u| u.0)
            ));
        }
        ms = ms.checked_add(scaled / scale).ok_or_else(too_large)?;
    }
    Ok(ms)
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
    #[test_case("1.5s", 1_500 ; "fraction")]
    #[test_case(".5s", 500 ; "fraction without whole part")]
    #[test_case("1m30s", 90_000 ; "compound")]
    #[test_case("1h2m3s4ms", 3_723_004 ; "every unit")]
    #[test_case("0.25m", 15_000 ; "fraction of a minute")]
    fn parses_numbers_with_units(text: &str, ms: u64) {
        assert_eq!(parse_duration(text), Ok(Duration::from_millis(ms)));
    }

    #[test_case("", "empty" ; "empty")]
    #[test_case("30", "no unit" ; "bare number")]
    #[test_case("1m30", "no unit" ; "compound ending in a bare number")]
    #[test_case("s", "number before the unit" ; "unit without number")]
    #[test_case("10sec", "unknown unit" ; "long unit")]
    #[test_case("-1s", "number before the unit" ; "negative")]
    #[test_case("5 s", "unknown unit" ; "space before unit")]
    #[test_case("1.2.3s", "not a number" ; "two dots")]
    #[test_case(".s", "not a number" ; "dot only")]
    #[test_case("0.5ms", "whole number of milliseconds" ; "below a millisecond")]
    #[test_case("1.0000000001s", "decimals" ; "too many decimals")]
    #[test_case("99999999999999999999s", "too large" ; "does not fit u64")]
    #[test_case("9999999999999999h", "too large" ; "overflows milliseconds")]
    #[test_case("5124095576030h5124095576030h", "too large" ; "sum overflows")]
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
