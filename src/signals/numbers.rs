//! Numbers as servers write them: counts, seconds (fractions too), epoch instants. Plain
//! integer arithmetic, saturating: a value from the network never panics or overflows.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::MAX_HINT;

/// A plain request count: ASCII digits, surrounding whitespace allowed. `None` for signs,
/// fractions and values that do not fit `u64` (no server has that many requests to give).
pub(super) fn parse_count(text: &str) -> Option<u64> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Decimal seconds, `"120"` or `"1.5"`, capped at [`MAX_HINT`] (so an all-digit string too long
/// for `u64` is `MAX_HINT`). No sign, no exponent, at least one digit on each side of a `.`.
pub(super) fn parse_seconds(text: &str) -> Option<Duration> {
    let (whole, fraction) = split_decimal(text)?;
    let nanos = digits_value(whole)
        .saturating_mul(1_000_000_000)
        .saturating_add(fraction_nanos(fraction, 1_000_000_000));
    Some(nanos_to_duration(nanos.min(MAX_HINT.as_nanos())))
}

/// Splits `"12.5"` into `("12", "5")` and `"12"` into `("12", "")`; `None` unless that is all the text is.
pub(super) fn split_decimal(text: &str) -> Option<(&str, &str)> {
    let (whole, rest) = split_digits(text);
    if whole.is_empty() {
        return None;
    }
    match rest.strip_prefix('.') {
        None if rest.is_empty() => Some((whole, "")),
        None => None,
        Some(after_dot) => {
            let (fraction, rest) = split_digits(after_dot);
            (!fraction.is_empty() && rest.is_empty()).then_some((whole, fraction))
        }
    }
}

/// Converts a timestamp in Unix seconds, split as by [`split_decimal`], into the delay from `now`.
pub(super) fn epoch_to_delay(whole: &str, fraction: &str, now: SystemTime) -> Duration {
    let secs = u64::try_from(digits_value(whole)).unwrap_or(u64::MAX);
    // Below 10^9 by construction, so `Duration::new` cannot carry into (and overflow) the seconds.
    let nanos = u32::try_from(fraction_nanos(fraction, 1_000_000_000)).unwrap_or(0);
    match UNIX_EPOCH.checked_add(Duration::new(secs, nanos)) {
        Some(at) => until(at, now),
        // Beyond what the platform's clock can name: as far away as a hint may be.
        None => MAX_HINT,
    }
}

/// How long from `now` until `at`: zero if `at` has passed, capped at [`MAX_HINT`].
pub(super) fn until(at: SystemTime, now: SystemTime) -> Duration {
    at.duration_since(now)
        .unwrap_or(Duration::ZERO)
        .min(MAX_HINT)
}

/// Splits the leading ASCII digits off `s`.
pub(super) fn split_digits(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s.split_at(end)
}

/// The value of a string of ASCII digits, saturating at `u128::MAX`.
pub(super) fn digits_value(digits: &str) -> u128 {
    digits.bytes().fold(0u128, |acc, b| {
        acc.saturating_mul(10)
            .saturating_add(u128::from(b.wrapping_sub(b'0')))
    })
}

/// The digits after a decimal point, times `unit_nanos`, in nanoseconds (truncated).
///
/// Only the first 18 digits count: 10¹⁸ × the largest unit (3.6 × 10¹² ns per hour) still fits
/// `u128`, and further digits are far below a nanosecond.
pub(super) fn fraction_nanos(fraction: &str, unit_nanos: u128) -> u128 {
    let digits = fraction.get(..18).unwrap_or(fraction);
    let scale = 10u128.pow(u32::try_from(digits.len()).unwrap_or(18));
    digits_value(digits).saturating_mul(unit_nanos) / scale
}

/// Nanoseconds to a `Duration`, capped at [`MAX_HINT`].
pub(super) fn nanos_to_duration(nanos: u128) -> Duration {
    let nanos = nanos.min(MAX_HINT.as_nanos());
    let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
    let sub = u32::try_from(nanos % 1_000_000_000).unwrap_or(0);
    Duration::new(secs, sub)
}
