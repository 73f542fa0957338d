//! The per-host circuit breaker: its configuration ([`Breaker`]) and the state machine the
//! middleware consults before and after every attempt ([`BreakerState`]).
//!
//! The state machine only decides. It never sleeps and never logs: the middleware holds one
//! [`BreakerState`] per host under a lock, passes in `now`, acts on the [`Admission`] it gets back,
//! and emits a `tracing` event (it knows the host name) for every [`Transition`].

mod state;
#[cfg(test)]
mod tests;

use std::time::Duration;

pub(crate) use state::{Admission, BreakerState, Transition};

const DEFAULT_OPEN_FOR: Duration = Duration::from_secs(5);
const DEFAULT_GROWTH: f64 = 2.0;
const DEFAULT_MAX_OPEN: Duration = Duration::from_secs(60);
const DEFAULT_PROBES: u32 = 1;

/// Circuit breaker configuration for each host.
///
/// Why a breaker? When a host is down, every request to it waits for a timeout or a 5xx, retries
/// multiply the load on a server that is already struggling, and callers pile up. A breaker notices
/// the failures, *opens*, and for a while fails every request to that host at once, without
/// touching the network. When the open time is over it goes *half-open* and lets a few probe
/// requests through: a probe that succeeds closes the breaker, one that fails opens it again, for
/// longer each time (up to a cap).
///
/// A breaker trips on either or both of two triggers:
/// - **consecutive failures**: `n` failures in a row, whatever their age;
/// - **failure rate**: the share of failures over a sliding time window, counted only once the
///   window holds enough calls that the share means something.
///
/// Which outcomes count as failures (5xx and transport errors by default) is the middleware's
/// decision, not the breaker's.
///
/// # Default
///
/// [`Breaker::default()`] (the same as [`Breaker::new()`]):
/// - trips at 50 % failures over 30 s once the window holds at least 10 calls,
///   **or** on 5 consecutive failures;
/// - stays open 5 s, doubling after each failed probe, never above 60 s;
/// - lets 1 probe through at a time when half-open.
///
/// # Examples
///
/// ```
/// use reqwest_polite::Breaker;
/// use std::time::Duration;
///
/// // Trip after 5 failures in a row; fail fast for 10 s before probing with 2 requests.
/// let breaker = Breaker::consecutive_failures(5)
///     .open_for(Duration::from_secs(10))
///     .half_open_probes(2);
/// assert!(!breaker.is_disabled());
///
/// // The default combines both triggers.
/// let default = Breaker::failure_rate(0.5, 10, Duration::from_secs(30)).or_consecutive_failures(5);
/// assert_eq!(Breaker::default(), default);
///
/// assert!(Breaker::disabled().is_disabled());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Breaker {
    /// Trip on this many failures in a row; `None`: no consecutive trigger.
    consecutive: Option<u32>,
    /// Trip on a failure rate over a window; `None`: no rate trigger.
    rate: Option<RateTrigger>,
    /// Open time after the breaker trips from closed.
    open_for: Duration,
    /// Open time multiplier after each failed probe (>= 1.0).
    growth: f64,
    /// Cap on the grown open time.
    max_open: Duration,
    /// Probes let through at a time when half-open (>= 1).
    probes: u32,
}

/// The failure-rate trigger, validated.
#[derive(Debug, Clone, Copy, PartialEq)]
struct RateTrigger {
    /// Trip when failures / calls >= ratio; in (0, 1].
    ratio: f64,
    /// Calls the window must hold before the ratio counts; >= 1.
    min_calls: u32,
    /// Length of the sliding window; > 0.
    window: Duration,
}

impl Breaker {
    /// The recommended breaker; the same as [`Breaker::default()`].
    ///
    /// # Default
    ///
    /// 50 % failures over 30 s with at least 10 calls, or 5 consecutive failures; open 5 s,
    /// growing x2 per failed probe up to 60 s; 1 half-open probe.
    pub fn new() -> Self {
        Self::failure_rate(0.5, 10, Duration::from_secs(30)).or_consecutive_failures(5)
    }

    /// A breaker that trips on `n` consecutive failures only (no failure-rate trigger).
    ///
    /// Counting runs of failures reacts quickly to a host that is hard down, and needs no window:
    /// a single success resets the count.
    ///
    /// # Default
    ///
    /// Open time, growth and probes as in [`Breaker::default()`]: open 5 s, x2 up to 60 s, 1 probe.
    ///
    /// # Panics
    ///
    /// If `n` is 0 (the breaker would trip without any failure). Use
    /// [`Breaker::try_consecutive_failures`] for a value read at run time.
    #[track_caller]
    pub fn consecutive_failures(n: u32) -> Self {
        valid(Self::try_consecutive_failures(n))
    }

    /// Like [`Breaker::consecutive_failures`], but returns an error instead of panicking, for
    /// values read at run time (configuration files, environment).
    ///
    /// # Errors
    ///
    /// [`BreakerConfigError::ZeroConsecutiveFailures`] if `n` is 0.
    pub fn try_consecutive_failures(n: u32) -> Result<Self, BreakerConfigError> {
        Ok(Self {
            consecutive: Some(check_consecutive(n)?),
            ..Self::disabled()
        })
    }

    /// A breaker that trips when `failures / calls >= ratio` over the last `window` (no
    /// consecutive trigger), counting only once the window holds at least `min_calls` calls.
    ///
    /// A rate catches a host that fails often but not always (a bad node behind a load balancer),
    /// which a consecutive count never sees; `min_calls` stops one failure out of one call from
    /// reading as 100 %. The window slides in steps of `window / 10`, so an outcome is forgotten
    /// between 9/10 of `window` and `window` after it happened. The rate is checked when a failure
    /// is recorded: a success never opens the breaker.
    ///
    /// # Default
    ///
    /// Open time, growth and probes as in [`Breaker::default()`]: open 5 s, x2 up to 60 s, 1 probe.
    ///
    /// # Panics
    ///
    /// Unless `0 < ratio <= 1`, `min_calls >= 1` and `window > 0`. Use
    /// [`Breaker::try_failure_rate`] for values read at run time.
    #[track_caller]
    pub fn failure_rate(ratio: f64, min_calls: u32, window: Duration) -> Self {
        valid(Self::try_failure_rate(ratio, min_calls, window))
    }

    /// Like [`Breaker::failure_rate`], but returns an error instead of panicking, for values read
    /// at run time.
    ///
    /// # Errors
    ///
    /// [`BreakerConfigError::InvalidRatio`], [`BreakerConfigError::ZeroMinCalls`] or
    /// [`BreakerConfigError::ZeroWindow`], for the first argument that is out of range.
    pub fn try_failure_rate(
        ratio: f64,
        min_calls: u32,
        window: Duration,
    ) -> Result<Self, BreakerConfigError> {
        Ok(Self {
            rate: Some(check_rate(ratio, min_calls, window)?),
            ..Self::disabled()
        })
    }

    /// A breaker that never trips: every request goes to the network, whatever the host does.
    pub fn disabled() -> Self {
        Self {
            consecutive: None,
            rate: None,
            open_for: DEFAULT_OPEN_FOR,
            growth: DEFAULT_GROWTH,
            max_open: DEFAULT_MAX_OPEN,
            probes: DEFAULT_PROBES,
        }
    }

    /// Adds the consecutive-failures trigger (replacing any previous one), so the breaker trips on
    /// `n` failures in a row *or* on its failure rate, whichever fires first.
    ///
    /// # Panics
    ///
    /// If `n` is 0.
    #[track_caller]
    pub fn or_consecutive_failures(mut self, n: u32) -> Self {
        self.consecutive = Some(valid(check_consecutive(n)));
        self
    }

    /// Adds the failure-rate trigger (replacing any previous one), so the breaker trips on its
    /// failure rate *or* on consecutive failures, whichever fires first. See
    /// [`Breaker::failure_rate`] for the meaning of the arguments.
    ///
    /// # Panics
    ///
    /// Unless `0 < ratio <= 1`, `min_calls >= 1` and `window > 0`.
    #[track_caller]
    pub fn or_failure_rate(mut self, ratio: f64, min_calls: u32, window: Duration) -> Self {
        self.rate = Some(valid(check_rate(ratio, min_calls, window)));
        self
    }

    /// How long the breaker stays open (failing fast) after it trips, before it lets a probe
    /// through. Long enough for a restarting host to come back, short enough not to shut out a
    /// host that has recovered.
    ///
    /// # Default
    ///
    /// 5 s.
    ///
    /// # Panics
    ///
    /// If `d` is zero (the breaker would probe at once, so it would never fail fast).
    #[track_caller]
    pub fn open_for(mut self, d: Duration) -> Self {
        assert!(
            !d.is_zero(),
            "Breaker::open_for: the open time must be greater than zero"
        );
        self.open_for = d;
        self
    }

    /// Each time a probe fails and the breaker opens again, multiply the open time by `factor`,
    /// never above `max`; a successful probe resets it to [`Breaker::open_for`]. A host that stays
    /// down is then probed less and less often. `open_growth(1.0, ..)` disables growth; a `max`
    /// below the open time also means no growth (the open time never shrinks).
    ///
    /// # Default
    ///
    /// Factor 2, max 60 s.
    ///
    /// # Panics
    ///
    /// If `factor` is below 1.0 or not finite.
    #[track_caller]
    pub fn open_growth(mut self, factor: f64, max: Duration) -> Self {
        assert!(
            factor.is_finite() && factor >= 1.0,
            "Breaker::open_growth: the factor must be a finite number >= 1.0, got {factor}"
        );
        self.growth = factor;
        self.max_open = max;
        self
    }

    /// How many probe requests the half-open breaker lets through at a time. The first probe to
    /// succeed closes the breaker; the first to fail opens it again. More probes decide sooner on
    /// a host with occasional failures, at the cost of more load on a host that is still down.
    ///
    /// # Default
    ///
    /// One probe at a time.
    ///
    /// # Panics
    ///
    /// If `k` is 0 (a half-open breaker could never close).
    #[track_caller]
    pub fn half_open_probes(mut self, k: u32) -> Self {
        assert!(
            k > 0,
            "Breaker::half_open_probes: at least one probe is needed to close the breaker"
        );
        self.probes = k;
        self
    }

    /// True when the breaker has no trigger, so it never trips (see [`Breaker::disabled`]).
    pub fn is_disabled(&self) -> bool {
        self.consecutive.is_none() && self.rate.is_none()
    }

    /// The longest the breaker ever stays open: the growth cap, never below the base open time.
    fn longest_open(&self) -> Duration {
        self.max_open.max(self.open_for)
    }

    /// The open time after a failed probe: `current` grown by the factor, capped at the maximum,
    /// never below the base open time.
    fn grow(&self, current: Duration) -> Duration {
        if self.growth <= 1.0 {
            return current;
        }
        let cap = self.longest_open();
        Duration::try_from_secs_f64(current.as_secs_f64() * self.growth)
            .map_or(cap, |grown| grown.min(cap))
    }
}

impl Default for Breaker {
    /// See [`Breaker`]'s `# Default` section.
    fn default() -> Self {
        Self::new()
    }
}

/// The value, or a panic with the error's message at the caller's location (the panicking
/// constructors are `#[track_caller]` too, so that is the user's line).
#[track_caller]
fn valid<T>(result: Result<T, BreakerConfigError>) -> T {
    match result {
        Ok(value) => value,
        Err(err) => panic!("{err}"),
    }
}

fn check_consecutive(n: u32) -> Result<u32, BreakerConfigError> {
    if n == 0 {
        return Err(BreakerConfigError::ZeroConsecutiveFailures);
    }
    Ok(n)
}

fn check_rate(
    ratio: f64,
    min_calls: u32,
    window: Duration,
) -> Result<RateTrigger, BreakerConfigError> {
    // Written so that NaN fails too.
    if !(ratio > 0.0 && ratio <= 1.0) {
        return Err(BreakerConfigError::InvalidRatio(ratio));
    }
    if min_calls == 0 {
        return Err(BreakerConfigError::ZeroMinCalls);
    }
    if window.is_zero() {
        return Err(BreakerConfigError::ZeroWindow);
    }
    Ok(RateTrigger {
        ratio,
        min_calls,
        window,
    })
}

/// A breaker configuration value that cannot make sense, returned by the `try_` constructors of
/// [`Breaker`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BreakerConfigError {
    /// `consecutive_failures(0)`: the breaker would trip without any failure.
    #[error("breaker: consecutive failures must be at least 1")]
    ZeroConsecutiveFailures,
    /// The failure ratio is not in `(0, 1]` (or is NaN); it carries the value given.
    #[error("breaker: failure ratio must be greater than 0 and at most 1, got {0}")]
    InvalidRatio(f64),
    /// `min_calls` is 0: a single failure would read as a 100 % failure rate.
    #[error("breaker: min_calls must be at least 1")]
    ZeroMinCalls,
    /// The failure-rate window is zero long, so it could never hold a call.
    #[error("breaker: the failure-rate window must be greater than zero")]
    ZeroWindow,
}
