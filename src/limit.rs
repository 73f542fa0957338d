//! [`Limit`], the promise we make to a server, and the pacing algorithm that keeps it.
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

use tokio::time::Instant;

/// The safety margin, in percent of the window, added to every [`Limit`].
///
/// `Limit::per(100, 60 s)` spaces requests as if the window were 61.2 s long: 98% of the quota's
/// throughput, with 1.2 s of slack for the network to delay one request relative to another
/// before a strict server-side sliding window could count one too many.
pub const SAFETY_MARGIN_PERCENT: u32 = 2;

/// tokio's timer resolution: sleeps end on the next millisecond tick.
const TIMER_TICK_NANOS: u64 = 1_000_000;

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

    fn interval_nanos(&self) -> u64 {
        let window = self.window.as_nanos() * u128::from(100 + SAFETY_MARGIN_PERCENT) / 100;
        let slots = u128::from(self.count - self.burst + 1);
        // a window past u64 nanoseconds (584 years) paces as if it were that long
        u64::try_from(window.div_ceil(slots)).unwrap_or(u64::MAX)
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

/// The pacing decision for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pace {
    /// The slot was free and is now taken: send.
    Admit,
    /// Not before this instant; nothing was taken.
    Wait(Instant),
}

/// One host's pacing schedule: GCRA in nanoseconds since `origin`, plus the instant before which
/// the host is closed (server-ordered cooldown).
///
/// All methods take `now`, so the schedule is plain data that tests drive on paused time.
#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    origin: Instant,
    /// Theoretical arrival time of the next unit: the bucket is full when `tat <= now`.
    tat: u64,
    /// Nanoseconds per unit; 0 means unpaced.
    interval: u64,
    /// The configured limit's interval, below which `interval` never goes.
    base: u64,
    /// Bucket capacity in units.
    burst: u64,
    /// How late after its slot a start may still keep the slot: a timer tick, but never more
    /// than the safety margin of the window, which is what absorbs the lag.
    slack: u64,
    /// Nothing starts before this (nanoseconds since `origin`).
    closed_until: u64,
}

impl Pacer {
    /// A schedule for `limit` (or unpaced), with a full bucket at `now`.
    pub(crate) fn new(limit: Option<&Limit>, now: Instant) -> Self {
        let (interval, burst) = limit.map_or((0, 1), |l| (l.interval_nanos(), u64::from(l.burst)));
        let slack = limit.map_or(0, |l| {
            let margin = l.window.as_nanos() * u128::from(SAFETY_MARGIN_PERCENT)
                / u128::from(100 + SAFETY_MARGIN_PERCENT);
            u64::try_from(margin)
                .unwrap_or(u64::MAX)
                .min(TIMER_TICK_NANOS)
        });
        Pacer {
            origin: now,
            tat: 0,
            interval,
            base: interval,
            burst,
            slack,
            closed_until: 0,
        }
    }

    /// `at` in this schedule's nanoseconds; read once per decision and passed to the `_at`
    /// methods, since the conversion is a good part of the decision's cost.
    pub(crate) fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    fn instant(&self, nanos: u64) -> Instant {
        self.origin + Duration::from_nanos(nanos)
    }

    /// The earliest nanosecond at which `cost` units may start.
    fn earliest(&self, cost: u64) -> u64 {
        let need = cost.saturating_mul(self.interval);
        let capacity = self.burst.saturating_mul(self.interval);
        self.tat
            .saturating_add(need)
            .saturating_sub(capacity)
            .max(self.closed_until)
    }

    /// Take `cost` units now if the schedule allows, else say when.
    #[cfg(test)]
    pub(crate) fn acquire(&mut self, now: Instant, cost: u32) -> Pace {
        self.acquire_at(self.nanos(now), cost)
    }

    /// [`Pacer::acquire`] at `now_ns` (from [`Pacer::nanos`]).
    pub(crate) fn acquire_at(&mut self, now_ns: u64, cost: u32) -> Pace {
        let cost = u64::from(cost);
        let earliest = self.earliest(cost);
        if earliest > now_ns {
            return Pace::Wait(self.instant(earliest));
        }
        // Timers wake on a millisecond tick: a request that arrives or wakes less than a tick
        // after its slot keeps the slot, so timer rounding does not erode high rates. The
        // schedule stays exact; actual starts lag it by under `slack`, which the safety margin
        // covers.
        let start = if now_ns - self.tat.min(now_ns) < self.slack {
            self.tat.max(earliest)
        } else {
            now_ns
        };
        self.tat = self
            .tat
            .max(start)
            .saturating_add(cost.saturating_mul(self.interval));
        Pace::Admit
    }

    /// When `cost` units could start, if `queued` units ahead of them go first.
    pub(crate) fn estimate(&self, now: Instant, queued: u64, cost: u32) -> Instant {
        let earliest = self.earliest(queued.saturating_add(u64::from(cost)));
        self.instant(earliest.max(self.nanos(now)))
    }

    /// When the next single-unit slot frees (`now` if one is free).
    pub(crate) fn next_free(&self, now: Instant) -> Instant {
        self.estimate(now, 0, 1)
    }

    /// Close the host until `until` (never shortens an existing closure).
    pub(crate) fn close_until(&mut self, until: Instant) {
        self.closed_until = self.closed_until.max(self.nanos(until));
    }

    /// The instant the host reopens, if it is closed at `now`.
    pub(crate) fn closed_until(&self, now: Instant) -> Option<Instant> {
        self.closed_until_at(self.nanos(now))
    }

    /// [`Pacer::closed_until`] at `now_ns` (from [`Pacer::nanos`]).
    pub(crate) fn closed_until_at(&self, now_ns: u64) -> Option<Instant> {
        (self.closed_until > now_ns).then(|| self.instant(self.closed_until))
    }

    /// Space requests further apart than the configured limit does (server hints, adaptive
    /// rate), or back to the limit with `None`. The schedule already taken stands.
    pub(crate) fn slow_to(&mut self, interval: Option<Duration>) {
        let extra = interval.map_or(0, |i| u64::try_from(i.as_nanos()).unwrap_or(u64::MAX));
        self.interval = self.base.max(extra);
    }

    /// The spacing in force.
    pub(crate) fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval)
    }

    /// True when forgetting this schedule changes nothing: the bucket is full and the host open.
    pub(crate) fn is_idle(&self, now: Instant) -> bool {
        let now_ns = self.nanos(now);
        self.tat <= now_ns && self.closed_until <= now_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Drive a pacer as the middleware does: acquire, or sleep until told, then acquire again.
    async fn take(p: &mut Pacer, cost: u32) -> Instant {
        loop {
            match p.acquire(Instant::now(), cost) {
                Pace::Admit => return Instant::now(),
                Pace::Wait(until) => tokio::time::sleep_until(until).await,
            }
        }
    }

    fn max_in_any_window(starts: &[Instant], window: Duration) -> usize {
        starts
            .iter()
            .map(|&s| starts.iter().filter(|&&t| t >= s && t < s + window).count())
            .max()
            .unwrap_or(0)
    }

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
    }

    #[tokio::test(start_paused = true)]
    async fn smooth_limit_spaces_requests_exactly() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Some(&Limit::per_second(10)), t0);
        let mut starts = Vec::new();
        for _ in 0..5 {
            starts.push(take(&mut p, 1).await - t0);
        }
        assert_eq!(
            starts,
            vec![Duration::ZERO, 102 * MS, 204 * MS, 306 * MS, 408 * MS],
            "smooth shaping must space starts one interval apart"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn burst_goes_at_once_then_refills_at_the_lowered_rate() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Some(&Limit::per_second(10).burst(4)), t0);
        let mut starts = Vec::new();
        for _ in 0..6 {
            starts.push(take(&mut p, 1).await - t0);
        }
        let interval = Limit::per_second(10).burst(4).interval();
        assert_eq!(interval, Duration::from_nanos(145_714_286));
        assert_eq!(
            &starts[..4],
            &[Duration::ZERO; 4],
            "the burst must go at once"
        );
        // sleeps end on the millisecond tick after the slot
        assert_eq!(
            starts[4],
            146 * MS,
            "the first refill comes one interval later"
        );
        assert_eq!(starts[5], 292 * MS, "no drift from timer rounding");
    }

    #[tokio::test(start_paused = true)]
    async fn never_more_than_n_in_any_window_and_at_least_97_percent_sustained() {
        for limit in [
            Limit::per_second(10),
            Limit::per_second(10).burst(10),
            Limit::per_second(7).burst(3),
            Limit::per_minute(100).burst(25),
        ] {
            let t0 = Instant::now();
            let mut p = Pacer::new(Some(&limit), t0);
            let n = limit.count() as usize * 5;
            let mut starts = Vec::new();
            for i in 0..n {
                // an idle spell in the middle lets the burst refill
                if i == n / 2 {
                    tokio::time::advance(limit.window() * 3).await;
                }
                starts.push(take(&mut p, 1).await);
            }
            let most = max_in_any_window(&starts, limit.window());
            assert!(
                most <= limit.count() as usize,
                "{limit:?}: {most} starts in one window"
            );
            if limit.burst_size() == 1 {
                let span = starts[n / 2 - 1] - starts[0];
                let rate = (n / 2 - 1) as f64 / span.as_secs_f64();
                let promised = f64::from(limit.count()) / limit.window().as_secs_f64();
                assert!(
                    rate >= 0.97 * promised,
                    "{limit:?}: sustained {rate:.3}/s, below 97% of {promised}/s"
                );
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn cost_takes_that_many_slots() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Some(&Limit::per_second(10)), t0);
        assert_eq!(
            take(&mut p, 3).await - t0,
            204 * MS,
            "3 units wait for the 3rd slot"
        );
        assert_eq!(
            take(&mut p, 1).await - t0,
            510 * MS,
            "the next one waits 3 intervals more"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn closure_holds_every_request_until_the_instant() {
        let t0 = Instant::now();
        let mut p = Pacer::new(None, t0);
        assert_eq!(p.acquire(t0, 1), Pace::Admit, "unpaced hosts admit at once");
        p.close_until(t0 + 500 * MS);
        p.close_until(t0 + 100 * MS); // never shortens
        assert_eq!(p.acquire(t0, 1), Pace::Wait(t0 + 500 * MS));
        assert_eq!(p.closed_until(t0 + 499 * MS), Some(t0 + 500 * MS));
        assert_eq!(p.acquire(t0 + 500 * MS, 1), Pace::Admit);
        assert!(p.is_idle(t0 + 500 * MS));
    }

    #[tokio::test(start_paused = true)]
    async fn estimate_counts_the_queue_ahead() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Some(&Limit::per_second(10)), t0);
        assert_eq!(p.acquire(t0, 1), Pace::Admit);
        assert_eq!(p.estimate(t0, 0, 1), t0 + 102 * MS);
        assert_eq!(
            p.estimate(t0, 4, 1),
            t0 + 510 * MS,
            "4 queued ahead: the 5th slot"
        );
        assert_eq!(p.next_free(t0 + 200 * MS), t0 + 200 * MS);
        assert!(!p.is_idle(t0 + 50 * MS));
    }

    proptest::proptest! {
        /// The promise, for any limit and any arrival pattern: requests served one after
        /// another (FIFO, each at the earliest instant the schedule allows, woken on the
        /// timer's millisecond tick) never put more than `n` starts in any window.
        #[test]
        fn no_window_ever_holds_more_than_n(
            n in 1u32..40,
            window_ms in 1u64..5_000,
            burst_share in 0.0f64..1.0,
            gaps_ms in proptest::collection::vec(0u64..300, 1..200),
        ) {
            let window = Duration::from_millis(window_ms);
            let burst = 1 + ((f64::from(n - 1)) * burst_share) as u32;
            let limit = Limit::per(n, window).burst(burst);
            let t0 = Instant::now();
            let mut p = Pacer::new(Some(&limit), t0);
            let mut now = t0;
            let mut starts = Vec::new();
            for gap in gaps_ms {
                now = now.max(starts.last().copied().unwrap_or(t0)) + Duration::from_millis(gap);
                loop {
                    match p.acquire(now, 1) {
                        Pace::Admit => break,
                        // a sleep ends on the next millisecond tick at or after `until`
                        Pace::Wait(until) => {
                            let ns = (until - t0).as_nanos().div_ceil(1_000_000) * 1_000_000;
                            now = t0 + Duration::from_nanos(ns as u64);
                        }
                    }
                }
                starts.push(now);
            }
            let most = max_in_any_window(&starts, window);
            proptest::prop_assert!(most <= n as usize, "{limit:?}: {most} starts in one window");
        }
    }
}
