//! [`Limit`], the promise we make to a server. The algorithm that keeps it is in
//! [`pacing::gcra`](crate::pacing::gcra).
//!
//! The algorithm is GCRA (the generic cell rate algorithm, as in governor), with two changes that
//! turn "about n per window" into "never more than n in any window":
//!
//! - the emission interval is derived from the *window*, not from a rate: with a burst of `b`,
//!   `interval = window × (1 + margin) / (n − b + 1)`, so `b` starts at once plus the refills
//!   that fit in any window of length `window` never exceed `n`;
//! - a [safety margin](SAFETY_MARGIN_PERCENT) stretches the window a little, so that network
//!   jitter between our clock and the server's cannot push two windows' worth into one.

use std::fmt;
use std::time::Duration;

/// The safety margin, in percent of the window, added to every [`Limit`].
///
/// `Limit::per(100, 60 s)` spaces requests as if the window were 61.2 s long: 98% of the quota's
/// throughput, with 1.2 s of slack. A quarter of it, at most 5 ms, absorbs our own lateness: a
/// request that starts late (a timer tick, a busy runtime) keeps its slot, so lateness is not
/// capacity lost. The rest absorbs the network delaying one request relative to another,
/// before a strict server-side sliding window could count one too many (15 ms of a 1 s
/// window; for short windows the absolute margin is small: 6 ms of a 300 ms window).
///
/// For servers that judge every gap between two requests (a leaky bucket such as nginx
/// `limit_req` without burst), what counts is the margin of one interval, which is small at
/// high rates: 0.1 ms at 200 per second, less than two requests' delays on their way may
/// differ. Without a burst, and at intervals of 2 ms or more, two starts are therefore never
/// closer than the server's spacing plus a gap margin in absolute time (the larger of 1% of the
/// spacing and 250 µs, at most 5% of it: 5.25 ms at 200 per second, so at most 95% of the rate
/// there), and the wait for a slot ends on the slot itself rather than on the timer's next
/// millisecond tick. Each bare refusal of such a schedule widens that gap margin by half, up to
/// the spacing itself (half the rate), and it halves back after 30 s without one: a machine
/// whose requests are delayed more than the margin covers learns its own jitter in a few
/// refusals (see docs/promises.md).
pub const SAFETY_MARGIN_PERCENT: u32 = 2;

/// How many requests a host may receive, per window of time: a promise to the server.
///
/// `Limit::per(n, window)` never starts more than `n` requests in *any* span of `window`, and
/// sustains `n / window` less the [safety margin](SAFETY_MARGIN_PERCENT). By default requests are
/// spaced evenly (`window / n` apart, smooth shaping); [`Limit::burst`] lets some go at once.
///
/// Compare governor's `Quota::per_minute(100)`, which lets 100 go at once *and* refills one every
/// 600 ms: up to ~200 in the first minute, so a server enforcing its documented quota refuses
/// half of them.
///
/// ```
/// use std::time::Duration;
/// use reqwest_polite::Limit;
///
/// let github = Limit::per_hour(5000);
/// assert_eq!(github.count(), 5000);
/// assert_eq!(github.window(), Duration::from_secs(3600));
/// // evenly spaced, with the 2% safety margin: 3600 s * 1.02 / 5000
/// assert_eq!(github.interval(), Duration::from_micros(734_400));
///
/// // 10 at once, then the sustained rate drops so that no 60 s window sees more than 100
/// let bursty = Limit::per_minute(100).burst(10);
/// // 10 + 90 refills in any 61.2 s: 91 slots, one every 672.5 ms
/// assert_eq!(bursty.interval(), Duration::from_nanos(672_527_473));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limit {
    count: u32,
    window: Duration,
    burst: u32,
}

/// A [`Limit`] that cannot be kept, refused by the `try_` constructors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidLimit {
    /// `n` was zero: a limit must let something through.
    #[error("a limit must allow at least one request per window")]
    ZeroCount,
    /// The window was zero.
    #[error("a limit's window must be longer than zero")]
    ZeroWindow,
    /// The burst was zero or larger than the count.
    #[error("a burst must be between 1 and the limit's count ({count}), got {burst}")]
    Burst {
        /// The requested burst.
        burst: u32,
        /// The limit's count.
        count: u32,
    },
}

impl Limit {
    /// At most `n` requests in any window of length `window`, evenly spaced.
    ///
    /// # Panics
    /// If `n` is zero or `window` is zero; use [`Limit::try_per`] for values read at run time.
    #[track_caller]
    pub fn per(n: u32, window: Duration) -> Self {
        match Self::try_per(n, window) {
            Ok(limit) => limit,
            Err(err) => panic!("Limit::per({n}, {window:?}): {err}"),
        }
    }

    /// Like [`Limit::per`], returning an error instead of panicking.
    pub fn try_per(n: u32, window: Duration) -> Result<Self, InvalidLimit> {
        if n == 0 {
            return Err(InvalidLimit::ZeroCount);
        }
        if window.is_zero() {
            return Err(InvalidLimit::ZeroWindow);
        }
        Ok(Limit {
            count: n,
            window,
            burst: 1,
        })
    }

    /// At most `n` requests per second.
    ///
    /// # Panics
    /// If `n` is zero.
    #[track_caller]
    pub fn per_second(n: u32) -> Self {
        Self::per(n, Duration::from_secs(1))
    }

    /// At most `n` requests per minute.
    ///
    /// # Panics
    /// If `n` is zero.
    #[track_caller]
    pub fn per_minute(n: u32) -> Self {
        Self::per(n, Duration::from_secs(60))
    }

    /// At most `n` requests per hour.
    ///
    /// # Panics
    /// If `n` is zero.
    #[track_caller]
    pub fn per_hour(n: u32) -> Self {
        Self::per(n, Duration::from_secs(3600))
    }

    /// Let up to `b` requests start at once after an idle spell.
    ///
    /// The promise still holds: the sustained rate drops to `(n − b + 1)` per window (less the
    /// safety margin), because the `b` that went at once count against every window that
    /// contains them. `burst(1)` is the default, smooth shaping.
    ///
    /// # Panics
    /// If `b` is zero or larger than the limit's count; see [`Limit::try_burst`].
    #[track_caller]
    pub fn burst(self, b: u32) -> Self {
        match self.try_burst(b) {
            Ok(limit) => limit,
            Err(err) => panic!("Limit::burst({b}): {err}"),
        }
    }

    /// Like [`Limit::burst`], returning an error instead of panicking.
    pub fn try_burst(self, b: u32) -> Result<Self, InvalidLimit> {
        if b == 0 || b > self.count {
            return Err(InvalidLimit::Burst {
                burst: b,
                count: self.count,
            });
        }
        Ok(Limit { burst: b, ..self })
    }

    /// Requests allowed per window.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The window length.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Requests allowed at once after an idle spell (1: smooth).
    pub fn burst_size(&self) -> u32 {
        self.burst
    }

    /// The spacing between two requests once the burst is spent, safety margin included.
    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval_nanos())
    }

    pub(crate) fn interval_nanos(&self) -> u64 {
        let window = self.window.as_nanos() * u128::from(100 + SAFETY_MARGIN_PERCENT) / 100;
        let slots = u128::from(self.count - self.burst + 1);
        // a window past u64 nanoseconds (584 years) paces as if it were that long
        u64::try_from(window.div_ceil(slots)).unwrap_or(u64::MAX)
    }

    /// The safety margin in absolute time: how much longer than `window` the schedule's
    /// window is.
    pub(crate) fn margin_nanos(&self) -> u64 {
        let margin = self.window.as_nanos() * u128::from(SAFETY_MARGIN_PERCENT) / 100;
        u64::try_from(margin).unwrap_or(u64::MAX)
    }
}

impl fmt::Debug for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} per {:?}", self.count, self.window)?;
        if self.burst > 1 {
            write!(f, " (burst {})", self.burst)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn constructors_refuse_limits_that_cannot_be_kept() {
        assert_eq!(Limit::try_per(0, MS), Err(InvalidLimit::ZeroCount));
        assert_eq!(
            Limit::try_per(1, Duration::ZERO),
            Err(InvalidLimit::ZeroWindow)
        );
        assert_eq!(
            Limit::per_second(5).try_burst(6),
            Err(InvalidLimit::Burst { burst: 6, count: 5 })
        );
        assert!(Limit::per_second(5).try_burst(0).is_err());
        assert_eq!(Limit::per_second(5).burst(5).burst_size(), 5);
    }

    #[test]
    #[should_panic(expected = "a limit must allow at least one request per window")]
    fn per_zero_panics_with_a_clear_message() {
        let _ = Limit::per_minute(0);
    }

    #[test]
    #[should_panic(expected = "a burst must be between 1 and the limit's count (3), got 4")]
    fn burst_above_count_panics() {
        let _ = Limit::per_second(3).burst(4);
    }

    #[test]
    fn interval_includes_the_safety_margin() {
        assert_eq!(Limit::per_second(10).interval(), 102 * MS);
        assert_eq!(Limit::per_minute(60).interval(), 1020 * MS);
        // burst 6 of 10: 5 refills per 1.02 s window
        assert_eq!(
            Limit::per_second(10).burst(6).interval(),
            Duration::from_micros(204_000)
        );
        // absurd windows saturate instead of overflowing
        assert_eq!(
            Limit::per(1, Duration::MAX).interval(),
            Duration::from_nanos(u64::MAX)
        );
        assert_eq!(Limit::per_second(10).margin_nanos(), 20_000_000);
    }
}
