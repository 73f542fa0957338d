//! The per-host circuit breaker: its configuration ([`Breaker`]) and the state machine the
//! middleware consults before and after every attempt ([`BreakerState`]).
//!
//! The state machine only decides. It never sleeps and never logs: the middleware holds one
//! [`BreakerState`] per host under a lock, passes in `now`, acts on the [`Admission`] it gets back,
//! and emits a `tracing` event (it knows the host name) for every [`Transition`].

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::snapshot::{BreakerPhase, BreakerSnapshot};
use crate::window::Window;

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

/// The breaker's decision on one attempt; the middleware acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Closed: send the request, then [`BreakerState::record`] its outcome.
    Allow,
    /// Half-open: send the request as one of the probes. The caller should later call
    /// [`BreakerState::record`] with this admission, or [`BreakerState::release`] if the
    /// request ended without an outcome (dropped future), so the slot is free at once. A probe
    /// that does neither within the open time (a request that hangs: reqwest has no default
    /// timeout) counts as failed, and its slot is free then.
    Probe {
        /// The half-open period that admitted it, so that an answer arriving after that period
        /// ended (the probe's hold ran out, or another probe decided) is told apart; see
        /// [`BreakerState::record`].
        period: u32,
    },
    /// Open, or half-open with every probe slot taken: fail fast without sending.
    Reject {
        /// How long until the breaker may let a probe through. Open: the rest of the open time.
        /// Half-open with all slots taken: until the outstanding probes' hold ends (the open
        /// time after the last one left); by then they have answered, closing the breaker or
        /// opening it again, or they count as failed and it opened again.
        retry_in: Duration,
    },
}

impl Admission {
    /// True for [`Admission::Probe`].
    pub(crate) fn is_probe(&self) -> bool {
        matches!(self, Admission::Probe { .. })
    }
}

/// A change of phase, for the caller to report (it knows the host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    /// The breaker opened: requests fail fast for `open_for`.
    Opened {
        /// The count that tripped it: consecutive failures if that trigger fired, otherwise the
        /// failures in the rate window. After a failed probe: the consecutive failure count,
        /// which includes the probe.
        failures: u32,
        /// How long it stays open before probing.
        open_for: Duration,
    },
    /// The open time is over; probes may go through.
    HalfOpened,
    /// A probe succeeded, or the host stayed quiet long enough for the breaker to forget it
    /// (see [`BreakerState::is_idle`]); requests go through again and counts start from zero.
    Closed,
}

/// The failure-rate trigger's sliding window of calls (`[0]`) and failures (`[1]`): a fixed
/// ring of buckets, so recording is allocation-free and memory is constant. The trigger itself
/// stays in the shared configuration.
#[derive(Debug, Clone)]
struct RateWindow {
    origin: Instant,
    counts: Window<2>,
}

impl RateWindow {
    fn new(trigger: RateTrigger, origin: Instant) -> Self {
        Self {
            origin,
            counts: Window::new(trigger.window),
        }
    }

    fn nanos(&self, now: Instant) -> u64 {
        crate::time::saturating_nanos(now.saturating_duration_since(self.origin))
    }

    fn record(&mut self, now: Instant, failure: bool) {
        let now = self.nanos(now);
        self.counts.add_each(now, [1, u32::from(failure)]);
    }

    /// (calls, failures) over the buckets still inside the window at `now`.
    fn totals(&self, now: Instant) -> (u32, u32) {
        let [calls, failures] = self.counts.totals_at(self.nanos(now));
        (calls, failures)
    }

    /// The failure count if `trigger` fires at `now`.
    fn tripped(&self, now: Instant, trigger: &RateTrigger) -> Option<u32> {
        let (calls, failures) = self.totals(now);
        (calls >= trigger.min_calls && f64::from(failures) >= trigger.ratio * f64::from(calls))
            .then_some(failures)
    }

    fn clear(&mut self) {
        self.counts.clear();
    }
}

/// One host's breaker: the phase, the counts, and the open time. The caller keeps it under a lock
/// and passes the current time, so tests can drive it with any instants they like.
///
/// Lifecycle: [`admit`](Self::admit) before each attempt; [`record`](Self::record) its outcome,
/// or [`release`](Self::release) for a probe that ended without one.
///
/// Time alone also moves it, so that nothing it holds outlives its use:
/// - **a probe's hold is bounded by the open time**: a probe that has not answered within the
///   open time after the last probe left counts as failed (the breaker opens again, for longer),
///   and its slot is free. If it answers after all, a success still closes the breaker (the
///   host is up, only slow; the open time grows with each such reopening, and with it the hold,
///   so a slow host is not shut out for ever); a failure was already counted;
/// - **a quiet host is forgotten** once the longest open time (the cap of
///   [`Breaker::open_growth`], 60 s by default) passes without news from it: that long after
///   the last failure of a run, after the end of an open time nobody came for, or after the
///   last probe of a half-open period with none left out. The breaker never shuts a host out
///   for longer, so older failures say less about the host than the next request will. It is
///   then a closed breaker with nothing counted, as if new. Failures in the rate window leave
///   it as the window slides.
///
/// These changes are applied when the state is next looked at ([`admit`](Self::admit),
/// [`record`](Self::record), [`snapshot`](Self::snapshot), [`is_idle`](Self::is_idle)), dated at
/// the instant they were due, so the result does not depend on when that is. When one call
/// applies several, it reports the last [`Transition`].
#[derive(Debug, Clone)]
pub(crate) struct BreakerState {
    config: Arc<Breaker>,
    phase: BreakerPhase,
    /// When the current phase began.
    since: Instant,
    /// Open time for the next (or current) opening: the base, grown by failed probes.
    open_time: Duration,
    consecutive: u32,
    /// The last news that counts for the phase (one field: no phase needs two). Closed: when
    /// the last failure of the run was recorded (meaningful while `consecutive > 0`). Half-open:
    /// when the last probe of this period was admitted. (Open counts from `since`.)
    last_news: Instant,
    /// Boxed: most breakers count failures in a row only, and a host record stays small.
    rate: Option<Box<RateWindow>>,
    /// Half-open periods begun so far (wrapping); the current one's number is in its probes'
    /// admissions.
    period: u32,
    /// Probes of the current half-open period in flight (at most `config.probes`).
    probes_out: u32,
    /// The last half-open period whose probes' hold ran out (0: none): their late success
    /// still closes the breaker.
    expired_period: u32,
    times_opened: u64,
    /// How long the host's last answer took, in milliseconds (saturating): when a probe out
    /// can be expected to decide.
    answer_ms: u16,
}

impl BreakerState {
    /// A closed breaker for one host, configured by `config`.
    pub(crate) fn new(config: impl Into<Arc<Breaker>>, now: Instant) -> Self {
        let config = config.into();
        Self {
            phase: BreakerPhase::Closed,
            since: now,
            open_time: config.open_for,
            rate: config
                .rate
                .map(|trigger| Box::new(RateWindow::new(trigger, now))),
            config,
            consecutive: 0,
            last_news: now,
            period: 0,
            probes_out: 0,
            expired_period: 0,
            times_opened: 0,
            answer_ms: 0,
        }
    }

    /// Decides whether a request may go now.
    ///
    /// Closed (and always, for a disabled breaker): [`Admission::Allow`]. Open: reject with the
    /// time left, unless the open time is over, in which case the breaker goes half-open
    /// (returning [`Transition::HalfOpened`]). Half-open: [`Admission::Probe`] while fewer than
    /// the configured number of probes are in flight, otherwise reject. What time alone changes
    /// (see [`BreakerState`]) is applied first.
    pub(crate) fn admit(&mut self, now: Instant) -> (Admission, Option<Transition>) {
        let settled = self.settle(now);
        let (admission, transition) = match self.phase {
            BreakerPhase::Closed => (Admission::Allow, None),
            BreakerPhase::Open => {
                let elapsed = now.saturating_duration_since(self.since);
                if elapsed < self.open_time {
                    let retry_in = self.open_time - elapsed;
                    return (Admission::Reject { retry_in }, settled);
                }
                self.phase = BreakerPhase::HalfOpen;
                self.since = now;
                self.period = self.period.wrapping_add(1).max(1); // 0 means "none"
                self.probes_out = 0;
                (self.admit_probe(now), Some(Transition::HalfOpened))
            }
            BreakerPhase::HalfOpen => (self.admit_probe(now), None),
        };
        (admission, transition.or(settled))
    }

    fn admit_probe(&mut self, now: Instant) -> Admission {
        if self.probes_out < self.config.probes {
            self.probes_out += 1;
            self.last_news = now;
            Admission::Probe {
                period: self.period,
            }
        } else {
            // `settle` already handled a hold that is over, so what is left is not zero
            // (unless the hold's end cannot be named: then the open time).
            let retry_in = self
                .probe_hold_end()
                .map_or(self.open_time, |end| end.saturating_duration_since(now));
            Admission::Reject { retry_in }
        }
    }

    /// Records the outcome of an attempt. `admission` is what [`admit`](Self::admit) returned
    /// for it; `failure` is the caller's classification (5xx or transport error).
    ///
    /// - Closed: updates the consecutive count and the rate window; opens the breaker for the
    ///   current open time when a failure fires a trigger.
    /// - A probe's outcome while half-open: success closes (counts and open time reset), failure
    ///   opens again for the open time grown by the factor, capped.
    /// - Outcomes of requests sent before the breaker opened ([`Admission::Allow`] arriving while
    ///   open or half-open), and of probes whose half-open period is over (another probe
    ///   decided, or their hold ran out and they counted as failed), are ignored while the
    ///   breaker is open or half-open; except the success of a probe whose hold ran out, which
    ///   closes it. Arriving after the breaker closed, they count as closed outcomes.
    /// - [`Admission::Reject`] (nothing was sent) and a disabled breaker: nothing happens.
    ///
    /// What time alone changes (see [`BreakerState`]) is applied first, so a probe answering
    /// after its hold ended finds that it already counted as failed; the transition returned is
    /// then the one that caused, if nothing else changed.
    pub(crate) fn record(
        &mut self,
        now: Instant,
        admission: &Admission,
        failure: bool,
    ) -> Option<Transition> {
        let settled = self.settle(now);
        self.record_settled(now, admission, failure).or(settled)
    }

    fn record_settled(
        &mut self,
        now: Instant,
        admission: &Admission,
        failure: bool,
    ) -> Option<Transition> {
        match admission {
            Admission::Allow => {}
            Admission::Probe { period } if self.is_current_probe(*period) => {
                self.probes_out -= 1;
                return Some(if failure {
                    self.reopen(now)
                } else {
                    self.close(now)
                });
            }
            // Its hold ran out and it counted as failed, but the host did answer.
            Admission::Probe { period }
                if *period == self.expired_period
                    && !failure
                    && self.phase != BreakerPhase::Closed =>
            {
                return Some(self.close(now));
            }
            // Its period ended (another probe decided, or its hold ran out) and its slot went
            // with it: like a request sent before the breaker opened.
            Admission::Probe { .. } => {}
            Admission::Reject { .. } => return None,
        }
        if self.phase != BreakerPhase::Closed || self.config.is_disabled() {
            return None;
        }
        if !failure {
            self.consecutive = 0;
            if let Some(rate) = &mut self.rate {
                rate.record(now, false);
            }
            return None;
        }
        self.consecutive = self.consecutive.saturating_add(1);
        self.last_news = now;
        let mut tripped = None;
        if let Some(rate) = &mut self.rate {
            rate.record(now, true);
            tripped = self
                .config
                .rate
                .as_ref()
                .and_then(|trigger| rate.tripped(now, trigger));
        }
        if self
            .config
            .consecutive
            .is_some_and(|n| self.consecutive >= n)
        {
            tripped = Some(self.consecutive);
        }
        tripped.map(|failures| self.open(now, failures))
    }

    /// Frees the slot of a probe that ended without an outcome (its request future was dropped
    /// or cancelled). No transition: nothing was learnt about the host. Nothing happens for
    /// other admissions, or for a probe whose half-open period is over (its slot went with it).
    pub(crate) fn release(&mut self, admission: &Admission) {
        if let Admission::Probe { period } = admission
            && self.is_current_probe(*period)
        {
            self.probes_out -= 1;
        }
    }

    /// True while a probe admitted in `period` still holds a slot.
    fn is_current_probe(&self, period: u32) -> bool {
        self.phase == BreakerPhase::HalfOpen && period == self.period && self.probes_out > 0
    }

    /// When the probes out in this half-open period count as failed: the open time after the
    /// last one left. `None` when none is out, or when that instant cannot be named.
    fn probe_hold_end(&self) -> Option<Instant> {
        (self.phase == BreakerPhase::HalfOpen && self.probes_out > 0)
            .then(|| self.last_news.checked_add(self.open_time))
            .flatten()
    }

    /// When the breaker forgets a quiet host (see [`BreakerState`]); `None` when it holds
    /// nothing time should clear (or the instant cannot be named).
    fn forget_at(&self) -> Option<Instant> {
        let memory = self.config.longest_open();
        match self.phase {
            BreakerPhase::Closed if self.consecutive > 0 => self.last_news.checked_add(memory),
            BreakerPhase::Closed => None,
            BreakerPhase::Open => self.since.checked_add(self.open_time)?.checked_add(memory),
            BreakerPhase::HalfOpen if self.probes_out == 0 => self.last_news.checked_add(memory),
            // The probes' hold ends first, and opens the breaker again.
            BreakerPhase::HalfOpen => None,
        }
    }

    /// Applies what time alone changes by `now`, each change dated when it was due; returns
    /// the last transition.
    fn settle(&mut self, now: Instant) -> Option<Transition> {
        let mut transition = None;
        if let Some(end) = self.probe_hold_end()
            && now >= end
        {
            // The probes out are as good as failed: the first to fail would have reopened it.
            self.probes_out = 0;
            self.expired_period = self.period;
            transition = Some(self.reopen(end));
        }
        if let Some(at) = self.forget_at()
            && now >= at
        {
            if self.phase != BreakerPhase::Closed {
                self.phase = BreakerPhase::Closed;
                self.since = at;
                transition = Some(Transition::Closed);
            }
            // The rate window is left alone: its failures leave it as it slides.
            self.consecutive = 0;
            self.open_time = self.config.open_for;
            self.probes_out = 0;
        }
        transition
    }

    /// This state as it is at `now`, once time has done its part (for the `&self` readers).
    fn settled(&self, now: Instant) -> std::borrow::Cow<'_, Self> {
        let due = |at: Option<Instant>| at.is_some_and(|at| now >= at);
        if due(self.probe_hold_end()) || due(self.forget_at()) {
            let mut state = self.clone();
            state.settle(now);
            std::borrow::Cow::Owned(state)
        } else {
            std::borrow::Cow::Borrowed(self)
        }
    }

    /// The current phase, as last settled. An open breaker whose open time is over still
    /// reads [`BreakerPhase::Open`] until the next [`admit`](Self::admit), and one whose
    /// probes' hold has ended still reads [`BreakerPhase::HalfOpen`].
    pub(crate) fn phase(&self) -> BreakerPhase {
        self.phase
    }

    /// Note how long an answer from the host took: a probe out is expected to take as long.
    pub(crate) fn note_answer_time(&mut self, took: Duration) {
        self.answer_ms = u16::try_from(took.as_millis()).unwrap_or(u16::MAX);
    }

    /// While half-open with probes out: how long until the last probe's answer can be
    /// expected (the last answer's time after it was let through), at least `floor`, at most
    /// the probes' hold. `None` otherwise.
    pub(crate) fn probe_decides_in(&self, now: Instant, floor: Duration) -> Option<Duration> {
        let hold_end = self.probe_hold_end()?;
        let expected = Duration::from_millis(u64::from(self.answer_ms)).max(floor);
        let answer = self.last_news.checked_add(expected).unwrap_or(hold_end);
        let left = answer.min(hold_end).saturating_duration_since(now);
        Some(left.max(floor).min(hold_end.saturating_duration_since(now)))
    }

    /// A snapshot of this breaker at `now`, for observability, with what time alone changes by
    /// `now` applied.
    pub(crate) fn snapshot(&self, now: Instant) -> BreakerSnapshot {
        let this = self.settled(now);
        let this = this.as_ref();
        let (window_calls, window_failures) =
            this.rate.as_ref().map_or((0, 0), |rate| rate.totals(now));
        let since = now.saturating_duration_since(this.since);
        BreakerSnapshot {
            phase: this.phase,
            since,
            consecutive_failures: this.consecutive,
            window_failures,
            window_calls,
            retry_in: (this.phase == BreakerPhase::Open)
                .then(|| this.open_time.saturating_sub(since)),
            times_opened: this.times_opened,
        }
    }

    /// True when this state carries nothing worth keeping at `now`: closed, no consecutive
    /// failures, no failures left in the rate window, no probe in flight. The host record may
    /// then be evicted and recreated later with [`BreakerState::new`]; only `times_opened` is
    /// lost.
    ///
    /// A host left in any state becomes idle once it has been quiet long enough (see
    /// [`BreakerState`]): with the default breaker, 60 s after its last failure, or 60 s after
    /// the end of its last open time (5 s, growing to 60 s after failed probes).
    #[cfg(test)]
    pub(crate) fn is_idle(&self, now: Instant) -> bool {
        let this = self.settled(now);
        this.phase == BreakerPhase::Closed
            && this.consecutive == 0
            && this.probes_out == 0
            && this
                .rate
                .as_ref()
                .is_none_or(|rate| rate.totals(now).1 == 0)
    }

    /// True when forgetting this state would not let a request through that it would stop now:
    /// not failing fast (open, with open time left) and no probe out. A host quiet for its record's idle time may
    /// then be evicted with its failure counts; the breaker of a host that is failing fast
    /// keeps its record.
    pub(crate) fn is_quiet(&self, now: Instant) -> bool {
        let this = self.settled(now);
        let failing_fast = this.phase == BreakerPhase::Open
            && now.saturating_duration_since(this.since) < this.open_time;
        !failing_fast && this.probes_out == 0
    }

    fn open(&mut self, now: Instant, failures: u32) -> Transition {
        self.phase = BreakerPhase::Open;
        self.since = now;
        self.times_opened = self.times_opened.saturating_add(1);
        Transition::Opened {
            failures,
            open_for: self.open_time,
        }
    }

    fn reopen(&mut self, now: Instant) -> Transition {
        self.consecutive = self.consecutive.saturating_add(1);
        self.open_time = self.config.grow(self.open_time);
        self.open(now, self.consecutive)
    }

    fn close(&mut self, now: Instant) -> Transition {
        self.phase = BreakerPhase::Closed;
        self.since = now;
        self.consecutive = 0;
        self.open_time = self.config.open_for;
        if let Some(rate) = &mut self.rate {
            rate.clear();
        }
        Transition::Closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn is_probe(admission: Admission) -> bool {
        admission.is_probe()
    }

    /// Records `n` Allow-admitted outcomes at `now`, asserting none of them trips the breaker.
    fn record_n(state: &mut BreakerState, now: Instant, n: u32, failure: bool) {
        for i in 0..n {
            let (admission, _) = state.admit(now);
            assert_eq!(admission, Admission::Allow, "call {i} should be allowed");
            let transition = state.record(now, &admission, failure);
            assert_eq!(
                transition, None,
                "call {i} (failure={failure}) tripped early"
            );
        }
    }

    /// Trips a closed breaker with one more failure, asserting that it opens.
    fn trip(state: &mut BreakerState, now: Instant) -> Transition {
        let (admission, _) = state.admit(now);
        let transition = state.record(now, &admission, true);
        assert!(
            matches!(transition, Some(Transition::Opened { .. })),
            "expected the breaker to open, got {transition:?}"
        );
        transition.unwrap_or(Transition::Closed)
    }

    /// A state on `config` already opened by consecutive failures at `t0`.
    fn opened(config: &Breaker, t0: Instant) -> BreakerState {
        let mut state = BreakerState::new(config.clone(), t0);
        let n = config.consecutive.unwrap_or(1);
        record_n(&mut state, t0, n - 1, true);
        trip(&mut state, t0);
        state
    }

    #[test]
    fn consecutive_trigger_trips_at_exactly_n_and_a_success_resets_the_run() {
        let t0 = Instant::now();
        let mut state = BreakerState::new(Breaker::consecutive_failures(3), t0);
        record_n(&mut state, t0, 2, true);
        record_n(&mut state, t0, 1, false);
        record_n(&mut state, t0, 2, true);
        assert_eq!(
            state.phase(),
            BreakerPhase::Closed,
            "2 failures must not trip at n=3"
        );
        let (admission, _) = state.admit(t0);
        assert_eq!(
            state.record(t0, &admission, true),
            Some(Transition::Opened {
                failures: 3,
                open_for: secs(5)
            }),
            "the 3rd consecutive failure must open the breaker for the default 5 s"
        );
        assert_eq!(state.phase(), BreakerPhase::Open);
    }

    #[test]
    fn open_breaker_rejects_with_the_time_left() {
        let t0 = Instant::now();
        let mut state = opened(&Breaker::consecutive_failures(1), t0);
        assert_eq!(
            state.admit(t0 + secs(2)),
            (Admission::Reject { retry_in: secs(3) }, None),
            "2 s into a 5 s open time a request must be rejected with 3 s left"
        );
        let almost = t0 + secs(5) - Duration::from_nanos(1);
        assert_eq!(
            state.admit(almost).0,
            Admission::Reject {
                retry_in: Duration::from_nanos(1)
            },
            "the breaker must not probe before the open time is over"
        );
    }

    #[test]
    fn after_open_time_exactly_one_probe_goes_when_k_is_1() {
        let t0 = Instant::now();
        let mut state = opened(&Breaker::consecutive_failures(1), t0);
        let t1 = t0 + secs(5);
        assert_eq!(
            state.admit(t1),
            (Admission::Probe { period: 1 }, Some(Transition::HalfOpened)),
            "the first admit after the open time must go half-open and probe"
        );
        assert_eq!(state.phase(), BreakerPhase::HalfOpen);
        assert_eq!(
            state.admit(t1),
            (Admission::Reject { retry_in: secs(5) }, None),
            "a second concurrent admit must be rejected while the single probe is out"
        );
    }

    #[test]
    fn half_open_lets_exactly_k_probes_through() {
        let t0 = Instant::now();
        let config = Breaker::consecutive_failures(1).half_open_probes(3);
        let mut state = opened(&config, t0);
        let t1 = t0 + secs(5);
        let admitted: Vec<Admission> = (0..4).map(|_| state.admit(t1).0).collect();
        assert_eq!(
            admitted,
            [
                Admission::Probe { period: 1 },
                Admission::Probe { period: 1 },
                Admission::Probe { period: 1 },
                Admission::Reject { retry_in: secs(5) }
            ],
            "k=3 must let exactly 3 concurrent probes through"
        );
    }

    #[test]
    fn probe_success_closes_and_resets_counts() {
        let t0 = Instant::now();
        let mut state = opened(&Breaker::consecutive_failures(2), t0);
        let t1 = t0 + secs(5);
        let (probe, _) = state.admit(t1);
        assert_eq!(
            state.record(t1, &probe, false),
            Some(Transition::Closed),
            "a successful probe must close the breaker"
        );
        assert_eq!(state.phase(), BreakerPhase::Closed);
        assert_eq!(
            state.snapshot(t1).consecutive_failures,
            0,
            "closing must reset the consecutive count"
        );
        assert_eq!(state.admit(t1), (Admission::Allow, None));
        // A fresh run of n failures is needed to trip again, and it opens for the base time.
        record_n(&mut state, t1, 1, true);
        assert_eq!(
            trip(&mut state, t1),
            Transition::Opened {
                failures: 2,
                open_for: secs(5)
            }
        );
    }

    #[test]
    fn probe_failure_reopens_with_growing_open_time_capped_at_max() {
        let t0 = Instant::now();
        let config = Breaker::consecutive_failures(1).open_growth(2.0, secs(30));
        let mut state = opened(&config, t0);
        let mut now = t0;
        let mut open_time = secs(5);
        for expected in [10, 20, 30, 30] {
            now += open_time;
            let (probe, _) = state.admit(now);
            assert!(is_probe(probe), "a probe is due after {open_time:?}");
            match state.record(now, &probe, true) {
                Some(Transition::Opened { open_for, .. }) => {
                    assert_eq!(
                        open_for,
                        secs(expected),
                        "a failed probe after {open_time:?} open must reopen for {expected} s"
                    );
                    open_time = open_for;
                }
                other => panic!("a failed probe must reopen the breaker, got {other:?}"),
            }
            assert_eq!(
                state.admit(now + open_time - Duration::from_nanos(1)).0,
                Admission::Reject {
                    retry_in: Duration::from_nanos(1)
                },
                "the grown open time must be enforced"
            );
        }
        // A success resets the open time to the base.
        now += open_time;
        let (probe, _) = state.admit(now);
        state.record(now, &probe, false);
        assert_eq!(
            trip(&mut state, now),
            Transition::Opened {
                failures: 1,
                open_for: secs(5)
            },
            "after closing, the next trip must open for the base time again"
        );
    }

    #[test]
    fn open_growth_of_one_keeps_the_open_time() {
        let t0 = Instant::now();
        let config = Breaker::consecutive_failures(1).open_growth(1.0, secs(60));
        let mut state = opened(&config, t0);
        let t1 = t0 + secs(5);
        let (probe, _) = state.admit(t1);
        assert_eq!(
            state.record(t1, &probe, true),
            Some(Transition::Opened {
                failures: 2,
                open_for: secs(5)
            }),
            "open_growth(1.0, ..) must not grow the open time"
        );
    }

    #[test]
    fn release_probe_frees_the_slot_without_a_transition() {
        let t0 = Instant::now();
        let mut state = opened(&Breaker::consecutive_failures(1), t0);
        let t1 = t0 + secs(5);
        let (probe, _) = state.admit(t1);
        assert!(is_probe(probe));
        assert!(
            matches!(state.admit(t1).0, Admission::Reject { .. }),
            "the only slot is taken"
        );
        state.release(&probe);
        assert_eq!(
            state.phase(),
            BreakerPhase::HalfOpen,
            "releasing must not change phase"
        );
        assert_eq!(
            state.admit(t1),
            (Admission::Probe { period: 1 }, None),
            "a released probe slot must be available again"
        );
    }

    #[test]
    fn releasing_a_probe_of_an_ended_period_frees_no_current_slot() {
        let t0 = Instant::now();
        let config = Breaker::consecutive_failures(1).half_open_probes(2);
        let mut state = opened(&config, t0);
        let t1 = t0 + secs(5);
        let (a, _) = state.admit(t1);
        let (b, _) = state.admit(t1);
        state.record(t1, &a, true);
        let t2 = t1 + secs(10);
        let (c, _) = state.admit(t2);
        let (d, _) = state.admit(t2);
        assert!(is_probe(c) && is_probe(d), "two fresh slots");
        state.release(&b);
        assert!(
            matches!(state.admit(t2).0, Admission::Reject { .. }),
            "a probe from an ended period must not free a slot of this one"
        );
        state.release(&c);
        assert!(is_probe(state.admit(t2).0), "this period's own probe does");
    }

    #[test]
    fn late_probe_outcome_after_reopen_is_ignored_but_frees_its_slot() {
        let t0 = Instant::now();
        let config = Breaker::consecutive_failures(1).half_open_probes(2);
        let mut state = opened(&config, t0);
        let t1 = t0 + secs(5);
        let (a, _) = state.admit(t1);
        let (b, _) = state.admit(t1);
        assert!(matches!(
            state.record(t1, &a, true),
            Some(Transition::Opened { .. })
        ));
        assert_eq!(
            state.record(t1, &b, false),
            None,
            "a probe finishing after another probe reopened the breaker must be ignored"
        );
        assert_eq!(state.phase(), BreakerPhase::Open);
        let t2 = t1 + secs(10);
        assert_eq!(state.admit(t2).0, Admission::Probe { period: 2 });
        assert_eq!(
            state.admit(t2).0,
            Admission::Probe { period: 2 },
            "both probe slots must be free in the next half-open period"
        );
    }

    #[test]
    fn outcome_of_allowed_request_arriving_while_open_is_ignored() {
        let t0 = Instant::now();
        let mut state = BreakerState::new(Breaker::consecutive_failures(1), t0);
        let (first, _) = state.admit(t0);
        let (second, _) = state.admit(t0);
        let (third, _) = state.admit(t0);
        assert!(matches!(
            state.record(t0, &first, true),
            Some(Transition::Opened { .. })
        ));
        assert_eq!(
            state.record(t0, &second, false),
            None,
            "a late success must be ignored"
        );
        assert_eq!(
            state.record(t0, &third, true),
            None,
            "a late failure must be ignored"
        );
        let snapshot = state.snapshot(t0);
        assert_eq!(
            snapshot.phase,
            BreakerPhase::Open,
            "late outcomes must not close it"
        );
        assert_eq!(snapshot.times_opened, 1, "late failures must not reopen it");
        assert_eq!(
            snapshot.consecutive_failures, 1,
            "late outcomes must not count"
        );
    }

    #[test]
    fn allowed_outcome_arriving_while_half_open_is_ignored() {
        let t0 = Instant::now();
        let mut state = BreakerState::new(Breaker::consecutive_failures(1), t0);
        let (first, _) = state.admit(t0);
        let (late, _) = state.admit(t0);
        state.record(t0, &first, true);
        let t1 = t0 + secs(5);
        assert!(is_probe(state.admit(t1).0));
        assert_eq!(
            state.record(t1, &late, false),
            None,
            "only a probe may close a half-open breaker"
        );
        assert_eq!(state.phase(), BreakerPhase::HalfOpen);
    }

    #[test]
    fn rate_trigger_never_trips_below_min_calls() {
        let t0 = Instant::now();
        let mut state = BreakerState::new(Breaker::failure_rate(0.5, 10, secs(30)), t0);
        record_n(&mut state, t0, 9, true);
        assert_eq!(
            state.phase(),
            BreakerPhase::Closed,
            "9 failures out of 9 calls must not trip with min_calls=10"
        );
        assert_eq!(
            trip(&mut state, t0),
            Transition::Opened {
                failures: 10,
                open_for: secs(5)
            }
        );
    }

    #[test]
    fn rate_trigger_trips_when_ratio_reached_at_min_calls() {
        let t0 = Instant::now();
        let mut state = BreakerState::new(Breaker::failure_rate(0.5, 4, secs(30)), t0);
        record_n(&mut state, t0, 1, true);
        record_n(&mut state, t0, 2, false);
        let snapshot = state.snapshot(t0);
        assert_eq!(
            (snapshot.window_calls, snapshot.window_failures),
            (3, 1),
            "the window must count every call and failure"
        );
        assert_eq!(
            trip(&mut state, t0),
            Transition::Opened {
                failures: 2,
                open_for: secs(5)
            },
            "2 failures in 4 calls must trip at ratio 0.5, min_calls 4"
        );
    }

    #[test]
    fn rate_trigger_does_not_trip_below_ratio() {
        let t0 = Instant::now();
        let mut state = BreakerState::new(Breaker::failure_rate(0.5, 4, secs(30)), t0);
        record_n(&mut state, t0, 3, false);
        record_n(&mut state, t0, 2, true);
        assert_eq!(
            state.phase(),
            BreakerPhase::Closed,
            "2/5 failures is below 0.5"
        );
    }

    #[test]
    fn failures_age_out_of_the_rate_window() {
        let t0 = Instant::now();
        let config = Breaker::failure_rate(0.5, 10, secs(30));

        // Within the window, old failures still count.
        let mut state = BreakerState::new(config.clone(), t0);
        record_n(&mut state, t0, 9, true);
        trip(&mut state, t0 + secs(20));

        // Past the window, they do not.
        let mut state = BreakerState::new(config.clone(), t0);
        record_n(&mut state, t0, 9, true);
        let later = t0 + secs(30);
        assert_eq!(
            state.snapshot(later).window_failures,
            0,
            "failures 30 s old must have left a 30 s window"
        );
        record_n(&mut state, later, 9, true);
        assert_eq!(
            state.phase(),
            BreakerPhase::Closed,
            "aged-out failures must not count towards min_calls"
        );
        trip(&mut state, later);
    }

    #[test]
    fn combined_triggers_trip_on_whichever_fires_first() {
        let t0 = Instant::now();
        let config = Breaker::failure_rate(0.5, 100, secs(30)).or_consecutive_failures(3);
        let mut state = BreakerState::new(config.clone(), t0);
        record_n(&mut state, t0, 2, true);
        assert_eq!(
            trip(&mut state, t0),
            Transition::Opened {
                failures: 3,
                open_for: secs(5)
            },
            "the consecutive trigger must fire even though the rate trigger lacks calls"
        );
    }

    #[test]
    fn disabled_breaker_never_trips() {
        let t0 = Instant::now();
        let mut state = BreakerState::new(Breaker::disabled(), t0);
        for i in 0..1000 {
            let now = t0 + Duration::from_millis(i);
            let (admission, transition) = state.admit(now);
            assert_eq!(
                (admission, transition),
                (Admission::Allow, None),
                "disabled must allow call {i}"
            );
            assert_eq!(
                state.record(now, &admission, true),
                None,
                "disabled must not trip"
            );
        }
        assert!(
            state.is_idle(t0),
            "a disabled breaker keeps nothing worth keeping"
        );
    }

    #[test]
    fn default_config_values_are_as_documented() {
        let config = Breaker::default();
        assert_eq!(config, Breaker::new(), "Default must equal new()");
        assert_eq!(config.consecutive, Some(5), "default consecutive trigger");
        assert_eq!(
            config.rate,
            Some(RateTrigger {
                ratio: 0.5,
                min_calls: 10,
                window: secs(30)
            }),
            "default rate trigger"
        );
        assert_eq!(config.open_for, secs(5), "default open time");
        assert_eq!(
            (config.growth, config.max_open),
            (2.0, secs(60)),
            "default growth"
        );
        assert_eq!(config.probes, 1, "default probes");
        assert!(!config.is_disabled());
    }

    #[test]
    fn default_config_behaves_as_documented() {
        let t0 = Instant::now();
        let mut state = BreakerState::new(Breaker::default(), t0);
        record_n(&mut state, t0, 4, true);
        assert_eq!(
            trip(&mut state, t0),
            Transition::Opened {
                failures: 5,
                open_for: secs(5)
            },
            "the default must trip on 5 consecutive failures and open for 5 s"
        );
        let mut now = t0;
        let mut reopened = Vec::new();
        let mut open_time = secs(5);
        for _ in 0..5 {
            now += open_time;
            let (probe, _) = state.admit(now);
            assert_eq!(
                state.admit(now).0,
                Admission::Reject {
                    retry_in: open_time
                },
                "1 probe"
            );
            if let Some(Transition::Opened { open_for, .. }) = state.record(now, &probe, true) {
                open_time = open_for;
                reopened.push(open_for.as_secs());
            }
        }
        assert_eq!(
            reopened,
            [10, 20, 40, 60, 60],
            "default growth must double the open time up to 60 s"
        );
    }

    #[test]
    fn snapshot_reports_phase_counts_and_time_left() {
        let t0 = Instant::now();
        let mut state = BreakerState::new(Breaker::default(), t0);
        record_n(&mut state, t0, 3, true);
        let snapshot = state.snapshot(t0 + secs(1));
        assert_eq!(
            snapshot,
            BreakerSnapshot {
                phase: BreakerPhase::Closed,
                since: secs(1),
                consecutive_failures: 3,
                window_failures: 3,
                window_calls: 3,
                retry_in: None,
                times_opened: 0,
            }
        );
        record_n(&mut state, t0, 1, true);
        trip(&mut state, t0 + secs(2));
        let snapshot = state.snapshot(t0 + secs(4));
        assert_eq!(snapshot.phase, BreakerPhase::Open);
        assert_eq!(snapshot.since, secs(2), "open for 2 s so far");
        assert_eq!(
            snapshot.retry_in,
            Some(secs(3)),
            "3 s of the 5 s open time left"
        );
        assert_eq!(snapshot.times_opened, 1);
        assert_eq!(BreakerPhase::HalfOpen.to_string(), "half-open");
    }

    #[test]
    fn idle_only_when_nothing_worth_keeping() {
        let t0 = Instant::now();
        let mut state = BreakerState::new(Breaker::default(), t0);
        assert!(state.is_idle(t0), "a new breaker is idle");
        record_n(&mut state, t0, 1, true);
        assert!(!state.is_idle(t0), "a consecutive failure must be kept");
        record_n(&mut state, t0, 1, false);
        assert!(
            !state.is_idle(t0),
            "a failure still in the window must be kept"
        );
        assert!(
            state.is_idle(t0 + secs(30)),
            "once the failure has left the window the state is idle"
        );
        let opened = opened(&Breaker::consecutive_failures(1), t0);
        assert!(
            !opened.is_idle(t0 + secs(5)),
            "an open breaker is not idle while its open time and the quiet after it last"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn works_on_paused_tokio_time() {
        let mut state = opened(&Breaker::consecutive_failures(1), Instant::now());
        tokio::time::advance(secs(4)).await;
        assert_eq!(
            state.admit(Instant::now()).0,
            Admission::Reject { retry_in: secs(1) }
        );
        tokio::time::advance(secs(1)).await;
        assert_eq!(
            state.admit(Instant::now()),
            (Admission::Probe { period: 1 }, Some(Transition::HalfOpened))
        );
    }

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    /// Regression: a probe that never answers (reqwest has no default
    /// timeout) must not hold its slot forever. Past the open time it counts as failed: the
    /// breaker reopens for the grown open time, and then the next probe goes.
    #[tokio::test(start_paused = true)]
    async fn a_probe_that_never_answers_counts_as_failed_after_the_open_time() {
        let t0 = Instant::now();
        let config = Breaker::consecutive_failures(1).open_for(ms(300));
        let mut state = opened(&config, t0);
        tokio::time::advance(ms(300)).await;
        let (hung, _) = state.admit(Instant::now());
        assert!(is_probe(hung), "the first probe goes after the open time");
        tokio::time::advance(ms(299)).await;
        assert_eq!(
            state.admit(Instant::now()).0,
            Admission::Reject { retry_in: ms(1) },
            "within its hold the probe keeps its slot, and the rejection says when the hold ends"
        );
        tokio::time::advance(ms(1)).await;
        let (admission, transition) = state.admit(Instant::now());
        assert_eq!(
            (admission, transition),
            (
                Admission::Reject { retry_in: ms(600) },
                Some(Transition::Opened {
                    failures: 2,
                    open_for: ms(600)
                })
            ),
            "a probe silent for the open time counts as failed: reopen for the grown time"
        );
        assert_eq!(state.phase(), BreakerPhase::Open);
        tokio::time::advance(ms(600)).await;
        let (next, transition) = state.admit(Instant::now());
        assert!(
            is_probe(next),
            "after the grown open time the next probe must go, got {next:?}"
        );
        assert_eq!(transition, Some(Transition::HalfOpened));
        assert_eq!(
            state.record(Instant::now(), &hung, true),
            None,
            "the hung probe failing at last must be ignored: it was already counted"
        );
        assert!(
            matches!(state.admit(Instant::now()).0, Admission::Reject { .. }),
            "the late answer must not free the new probe's slot"
        );
        assert_eq!(
            state.record(Instant::now(), &next, false),
            Some(Transition::Closed),
            "the new probe decides"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_probe_that_succeeds_after_its_hold_still_closes() {
        let config = Breaker::consecutive_failures(1).open_for(ms(200));
        let mut state = opened(&config, Instant::now());
        tokio::time::advance(ms(200)).await;
        let (slow, _) = state.admit(Instant::now());
        tokio::time::advance(ms(250)).await;
        assert_eq!(
            state.record(Instant::now(), &slow, false),
            Some(Transition::Closed),
            "a host slower than the open time is up: its late success closes the breaker"
        );
        assert_eq!(state.admit(Instant::now()).0, Admission::Allow);
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_probe_is_seen_by_snapshot_and_record_too() {
        let t0 = Instant::now();
        let mut state = opened(&Breaker::consecutive_failures(1).open_for(ms(300)), t0);
        tokio::time::advance(ms(300)).await;
        let (hung, _) = state.admit(Instant::now());
        tokio::time::advance(ms(300)).await;
        let snapshot = state.snapshot(Instant::now());
        assert_eq!(
            (snapshot.phase, snapshot.retry_in, snapshot.times_opened),
            (BreakerPhase::Open, Some(ms(600)), 2),
            "the snapshot must show the expired probe as a reopening"
        );
        assert!(
            matches!(
                state.record(Instant::now(), &hung, true),
                Some(Transition::Opened { .. })
            ),
            "the late failure itself reports the reopening it comes after"
        );
        assert_eq!(state.phase(), BreakerPhase::Open, "and counts no further");
        assert_eq!(state.snapshot(Instant::now()).consecutive_failures, 2);
    }

    #[test]
    fn a_probe_hold_with_huge_open_time_never_overflows() {
        let t0 = Instant::now();
        let config = Breaker::consecutive_failures(1).open_for(Duration::MAX);
        let mut state = opened(&config, t0);
        assert!(matches!(
            state.admit(t0 + secs(1)).0,
            Admission::Reject { .. }
        ));
        assert!(!state.is_idle(t0 + secs(1)), "open for ever");
        let _ = state.snapshot(t0 + secs(1));
    }

    /// Regression: a host that failed and then went quiet must become idle
    /// so its record can be evicted, whatever state its breaker was left in.
    #[tokio::test(start_paused = true)]
    async fn a_run_of_failures_is_forgotten_after_the_longest_open_time_of_quiet() {
        // open 5 s, growing up to 20 s: the breaker's memory is 20 s
        let config = Breaker::consecutive_failures(3)
            .open_for(secs(5))
            .open_growth(2.0, secs(20));
        let mut state = BreakerState::new(config.clone(), Instant::now());
        record_n(&mut state, Instant::now(), 1, true);
        tokio::time::advance(secs(15)).await;
        record_n(&mut state, Instant::now(), 1, true);
        tokio::time::advance(secs(20) - ms(1)).await;
        assert!(
            !state.is_idle(Instant::now()),
            "a run whose last failure is younger than the longest open time is kept"
        );
        assert_eq!(state.snapshot(Instant::now()).consecutive_failures, 2);
        tokio::time::advance(ms(1)).await;
        assert!(
            state.is_idle(Instant::now()),
            "a run followed by the longest open time of quiet is forgotten"
        );
        assert_eq!(state.snapshot(Instant::now()).consecutive_failures, 0);
        record_n(&mut state, Instant::now(), 2, true);
        assert_eq!(
            state.phase(),
            BreakerPhase::Closed,
            "a forgotten run must not count towards the next one"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_breaker_nobody_calls_is_forgotten() {
        let config = Breaker::consecutive_failures(1)
            .open_for(secs(5))
            .open_growth(2.0, secs(20));
        let mut state = opened(&config, Instant::now());
        tokio::time::advance(secs(25) - ms(1)).await;
        assert!(
            !state.is_idle(Instant::now()),
            "kept until its open time and the longest open time of quiet have passed"
        );
        tokio::time::advance(ms(1)).await;
        assert!(state.is_idle(Instant::now()), "then forgotten");
        assert_eq!(state.snapshot(Instant::now()).phase, BreakerPhase::Closed);
        assert_eq!(
            state.admit(Instant::now()),
            (Admission::Allow, Some(Transition::Closed)),
            "a forgotten breaker is a closed one, and says so once"
        );
        assert_eq!(
            state.snapshot(Instant::now()).times_opened,
            1,
            "history kept"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_probe_then_quiet_is_forgotten() {
        let config = Breaker::consecutive_failures(1)
            .open_for(secs(5))
            .open_growth(2.0, secs(20));
        let mut state = opened(&config, Instant::now());
        tokio::time::advance(secs(5)).await;
        let (hung, _) = state.admit(Instant::now());
        assert!(is_probe(hung));
        // held 5 s, reopened for 10 s, then 20 s of quiet
        tokio::time::advance(secs(35) - ms(1)).await;
        assert!(!state.is_idle(Instant::now()), "not yet");
        tokio::time::advance(ms(1)).await;
        assert!(
            state.is_idle(Instant::now()),
            "a hung probe and then quiet must not pin the record for ever"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_half_open_breaker_whose_probe_was_dropped_is_forgotten() {
        let config = Breaker::consecutive_failures(1)
            .open_for(secs(5))
            .open_growth(2.0, secs(20));
        let mut state = opened(&config, Instant::now());
        tokio::time::advance(secs(5)).await;
        let (dropped, _) = state.admit(Instant::now());
        state.release(&dropped);
        tokio::time::advance(secs(20) - ms(1)).await;
        assert!(!state.is_idle(Instant::now()), "half-open is kept a while");
        tokio::time::advance(ms(1)).await;
        assert!(state.is_idle(Instant::now()), "then forgotten");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_rate_window_empties_without_traffic() {
        let mut state = BreakerState::new(Breaker::default(), Instant::now());
        record_n(&mut state, Instant::now(), 4, true);
        record_n(&mut state, Instant::now(), 1, false);
        tokio::time::advance(secs(30) - ms(1)).await;
        assert!(!state.is_idle(Instant::now()), "failures in the window");
        tokio::time::advance(ms(1)).await;
        assert!(
            state.is_idle(Instant::now()),
            "default breaker: idle once the failures left the 30 s window"
        );

        let mut state = BreakerState::new(Breaker::default(), Instant::now());
        record_n(&mut state, Instant::now(), 4, true);
        tokio::time::advance(secs(60) - ms(1)).await;
        assert!(!state.is_idle(Instant::now()), "a run of 4 is kept 60 s");
        tokio::time::advance(ms(1)).await;
        assert!(
            state.is_idle(Instant::now()),
            "default breaker: idle 60 s after the last failure of a run"
        );
    }

    #[test]
    #[should_panic(expected = "consecutive failures must be at least 1")]
    fn consecutive_failures_zero_panics() {
        let _ = Breaker::consecutive_failures(0);
    }

    #[test]
    #[should_panic(expected = "consecutive failures must be at least 1")]
    fn or_consecutive_failures_zero_panics() {
        let _ = Breaker::disabled().or_consecutive_failures(0);
    }

    #[test]
    #[should_panic(expected = "failure ratio must be greater than 0 and at most 1, got 0")]
    fn failure_rate_zero_ratio_panics() {
        let _ = Breaker::failure_rate(0.0, 10, secs(30));
    }

    #[test]
    #[should_panic(expected = "failure ratio must be greater than 0 and at most 1, got 1.5")]
    fn failure_rate_ratio_above_one_panics() {
        let _ = Breaker::failure_rate(1.5, 10, secs(30));
    }

    #[test]
    #[should_panic(expected = "failure ratio must be greater than 0 and at most 1, got NaN")]
    fn failure_rate_nan_ratio_panics() {
        let _ = Breaker::disabled().or_failure_rate(f64::NAN, 10, secs(30));
    }

    #[test]
    #[should_panic(expected = "min_calls must be at least 1")]
    fn failure_rate_zero_min_calls_panics() {
        let _ = Breaker::failure_rate(0.5, 0, secs(30));
    }

    #[test]
    #[should_panic(expected = "failure-rate window must be greater than zero")]
    fn failure_rate_zero_window_panics() {
        let _ = Breaker::failure_rate(0.5, 10, Duration::ZERO);
    }

    #[test]
    #[should_panic(expected = "the open time must be greater than zero")]
    fn open_for_zero_panics() {
        let _ = Breaker::default().open_for(Duration::ZERO);
    }

    #[test]
    #[should_panic(expected = "the factor must be a finite number >= 1.0, got 0.5")]
    fn open_growth_below_one_panics() {
        let _ = Breaker::default().open_growth(0.5, secs(60));
    }

    #[test]
    #[should_panic(expected = "at least one probe is needed")]
    fn half_open_probes_zero_panics() {
        let _ = Breaker::default().half_open_probes(0);
    }

    #[test]
    fn try_constructors_return_errors_instead_of_panicking() {
        assert_eq!(
            Breaker::try_consecutive_failures(0),
            Err(BreakerConfigError::ZeroConsecutiveFailures)
        );
        assert_eq!(
            Breaker::try_failure_rate(-0.1, 10, secs(30)),
            Err(BreakerConfigError::InvalidRatio(-0.1))
        );
        assert_eq!(
            Breaker::try_failure_rate(0.5, 0, secs(30)),
            Err(BreakerConfigError::ZeroMinCalls)
        );
        assert_eq!(
            Breaker::try_failure_rate(0.5, 10, Duration::ZERO),
            Err(BreakerConfigError::ZeroWindow)
        );
        assert!(
            matches!(
                Breaker::try_failure_rate(f64::NAN, 10, secs(30)),
                Err(BreakerConfigError::InvalidRatio(r)) if r.is_nan()
            ),
            "NaN must be refused"
        );
        assert_eq!(
            Breaker::try_consecutive_failures(3),
            Ok(Breaker::consecutive_failures(3))
        );
        assert_eq!(
            Breaker::try_failure_rate(1.0, 1, Duration::from_nanos(1)),
            Ok(Breaker::failure_rate(1.0, 1, Duration::from_nanos(1)))
        );
    }
}
