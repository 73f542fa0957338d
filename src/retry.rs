//! When a failed request may be sent again, how long to wait first, and how many retries a host
//! can take before retrying makes an outage worse.
//!
//! Three separate questions, answered by three separate pieces, none of which sleeps or sends
//! (the middleware loop does both):
//!
//! - [`classify`]: may this outcome be retried at all, given the method and the [`Retryable`] policy?
//! - [`Backoff`]: how long to wait before retry *i*, as an endless [`Iterator`] of delays.
//! - [`BudgetState`]: has this host had too many retries lately (a [`RetryBudget`])?

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use rand::Rng;
use tokio::time::Instant;

use crate::window::Window;

// ---------------------------------------------------------------------------------------------
// Backoff and jitter
// ---------------------------------------------------------------------------------------------

/// How the delay between attempts grows: exponentially, capped, with jitter.
///
/// Retry `i` (0 for the first retry) has the *ceiling* `min(max, base * 2^i)`; the [`Jitter`]
/// then picks the actual delay at or below that ceiling. Waiting longer after each failure gives
/// a struggling server room to recover; jitter spreads clients that failed together so they do
/// not all come back in the same instant.
///
/// The delay is a lower bound chosen by the client: a server hint (`Retry-After`) that asks for
/// longer wins.
///
/// # Default
///
/// `Backoff::default()` is `Backoff::exponential(100 ms, 20 s)` with [`Jitter::Full`].
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use rand::{SeedableRng, rngs::SmallRng};
/// use reqwest_polite::{Backoff, Jitter};
///
/// let backoff = Backoff::exponential(Duration::from_millis(100), Duration::from_millis(500))
///     .jitter(Jitter::None);
/// let delays: Vec<Duration> = backoff.delays(SmallRng::seed_from_u64(1)).take(4).collect();
/// assert_eq!(delays, [100, 200, 400, 500].map(Duration::from_millis));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    jitter: Jitter,
}

impl Backoff {
    /// Exponential backoff starting at `base` and never waiting longer than `max`.
    ///
    /// `base` is the ceiling of the first retry's delay, `max` the longest any delay may be.
    /// Jitter is [`Jitter::Full`]; change it with [`Backoff::jitter`].
    ///
    /// # Panics
    ///
    /// If `base` is zero (the delays would never grow) or `max < base`. Use
    /// [`Backoff::try_exponential`] for values read at run time.
    #[track_caller]
    pub fn exponential(base: Duration, max: Duration) -> Self {
        match Self::try_exponential(base, max) {
            Ok(backoff) => backoff,
            Err(err) => panic!("Backoff::exponential: {err}"),
        }
    }

    /// Like [`Backoff::exponential`], but returns an error instead of panicking.
    ///
    /// # Errors
    ///
    /// [`InvalidBackoff`] if `base` is zero or `max < base`.
    pub fn try_exponential(base: Duration, max: Duration) -> Result<Self, InvalidBackoff> {
        if base.is_zero() {
            return Err(InvalidBackoff::ZeroBase);
        }
        if max < base {
            return Err(InvalidBackoff::MaxBelowBase { base, max });
        }
        Ok(Self {
            base,
            max,
            jitter: Jitter::Full,
        })
    }

    /// Chooses how the delay is picked below each ceiling.
    ///
    /// # Default
    ///
    /// [`Jitter::Full`], which spreads retries the most (see [`Jitter`]).
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The ceiling of the first retry's delay.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The longest delay this backoff ever yields.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The jitter in use (named `jitter_kind` because [`Backoff::jitter`] is the setter).
    pub fn jitter_kind(&self) -> Jitter {
        self.jitter
    }

    /// The ceiling for retry `retry` (0-based): `min(max, base * 2^retry)`.
    ///
    /// Saturates instead of overflowing, so any `retry` up to `u32::MAX` is fine.
    ///
    /// ```
    /// use std::time::Duration;
    /// use reqwest_polite::Backoff;
    ///
    /// let backoff = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(1));
    /// assert_eq!(backoff.ceiling(0), Duration::from_millis(100));
    /// assert_eq!(backoff.ceiling(3), Duration::from_millis(800));
    /// assert_eq!(backoff.ceiling(u32::MAX), Duration::from_secs(1));
    /// ```
    pub fn ceiling(&self, retry: u32) -> Duration {
        let max_nanos = self.max.as_nanos();
        // Duration::MAX is below 2^94 ns, so any shift past 127 is over `max` anyway.
        let nanos = 1u128
            .checked_shl(retry)
            .and_then(|factor| self.base.as_nanos().checked_mul(factor))
            .unwrap_or(u128::MAX);
        if nanos >= max_nanos {
            return self.max;
        }
        // `nanos < max_nanos`, so the seconds fit in a u64 like `max`'s do.
        let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
        let subsec = u32::try_from(nanos % 1_000_000_000).unwrap_or(0);
        Duration::new(secs, subsec)
    }

    /// The delays to wait before each retry, first retry first.
    ///
    /// Endless: the caller decides how many retries to make (`.take(n)`). Every delay is at most
    /// [`Backoff::max`], at least the floor of the [`Jitter`], and computing it never overflows
    /// however many are taken. `rng` supplies the jitter; pass a seeded RNG
    /// (`SmallRng::seed_from_u64`) for reproducible delays, or `SmallRng::from_os_rng()` in
    /// production. `&mut rng` works too.
    pub fn delays<R: Rng>(&self, rng: R) -> Delays<R> {
        Delays {
            backoff: *self,
            rng,
            retry: 0,
            prev: self.base,
        }
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::exponential(Duration::from_millis(100), Duration::from_secs(20))
    }
}

/// Why a [`Backoff`] could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidBackoff {
    /// `base` was zero: `0 * 2^i` stays zero, so the backoff would never back off.
    #[error("base delay must be greater than zero")]
    ZeroBase,
    /// `max` was below `base`: even the first retry would exceed the cap.
    #[error("max delay ({max:?}) must be at least the base delay ({base:?})")]
    MaxBelowBase {
        /// The requested base delay.
        base: Duration,
        /// The requested maximum delay.
        max: Duration,
    },
}

/// The delays of a [`Backoff`], made by [`Backoff::delays`]. Endless; see there.
#[derive(Debug, Clone)]
pub struct Delays<R> {
    backoff: Backoff,
    rng: R,
    /// 0-based index of the retry whose delay comes next; saturates at `u32::MAX`, by which point
    /// the ceiling has long been `max`.
    retry: u32,
    /// The previous delay, for [`Jitter::Decorrelated`]; starts at `base`.
    prev: Duration,
}

impl<R: Rng> Iterator for Delays<R> {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let Backoff { base, max, jitter } = self.backoff;
        let ceiling = self.backoff.ceiling(self.retry);
        self.retry = self.retry.saturating_add(1);
        let delay = match jitter {
            Jitter::None => ceiling,
            Jitter::Full => self.rng.random_range(Duration::ZERO..=ceiling),
            Jitter::Equal => {
                let half = ceiling / 2;
                half + self.rng.random_range(Duration::ZERO..=ceiling - half)
            }
            Jitter::Decorrelated => {
                // `prev >= base`, so `prev * 3 >= base` and the range is never empty.
                let next = self.rng.random_range(base..=self.prev.saturating_mul(3));
                next.min(max)
            }
        };
        self.prev = delay;
        Some(delay)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::MAX, None)
    }
}

/// How the actual delay is picked below each retry's ceiling (see [`Backoff`]).
///
/// Why jitter at all: clients that failed together (one outage, one deploy) retry together, and
/// without jitter every one of their retries lands on the server in the same instant. See
/// AWS's "Exponential Backoff And Jitter" for the comparison behind these four.
///
/// ```
/// use std::time::Duration;
/// use reqwest_polite::{Backoff, Jitter};
///
/// let backoff = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(20))
///     .jitter(Jitter::Equal); // half the ceiling fixed, half random
/// assert_eq!(backoff.jitter_kind(), Jitter::Equal);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Jitter {
    /// No randomness: the delay is the ceiling. Predictable, and herds clients together; for
    /// tests and for servers you alone call.
    None,
    /// Uniform in `[0, ceiling]`. Spreads load the most and finishes the soonest on average; a
    /// delay can be near zero.
    #[default]
    Full,
    /// `ceiling / 2` plus uniform in `[0, ceiling / 2]`: always waits at least half the ceiling,
    /// with less spread than [`Jitter::Full`].
    Equal,
    /// AWS "decorrelated jitter": `next = min(max, uniform[base, prev * 3])`, with `prev`
    /// starting at `base`. Each delay grows from the last one drawn rather than from the retry
    /// count, so the exponential ceiling does not apply; delays stay within `[base, max]`.
    Decorrelated,
}

// ---------------------------------------------------------------------------------------------
// Classification
// ---------------------------------------------------------------------------------------------

/// Which failures a request may be retried on.
///
/// Why not retry every failure: a `POST` that timed out or got a `503` may already have been
/// carried out by the server (the response, not the request, was lost). Sending it again can
/// create a second order or charge a card twice. Only requests that are safe to repeat, because
/// their method is idempotent or they carry an `Idempotency-Key` the server deduplicates on, are
/// replayed after such failures.
///
/// # Default
///
/// [`Retryable::SafeOnly`].
///
/// ```
/// use reqwest_polite::{Polite, Retryable};
///
/// // this API deduplicates every write itself: retry POSTs after a 5xx too
/// let polite = Polite::builder().retryable(Retryable::Always).build();
/// assert_eq!(polite.host_count(), 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Retryable {
    /// Retry what cannot do harm. Any method: `429 Too Many Requests` (the server refused the
    /// request without acting on it) and connect errors (the request never left). Only idempotent
    /// methods (`GET`, `HEAD`, `OPTIONS`, `TRACE`, `PUT`, `DELETE`) or requests with an
    /// `Idempotency-Key` header: other `5xx` (except `501`, `505`, `511`), `408 Request Timeout`,
    /// timeouts and connections reset mid-flight.
    #[default]
    SafeOnly,
    /// Also retry non-idempotent requests after `5xx`, timeouts and resets: you vouch that the
    /// server tolerates duplicates.
    Always,
    /// Never retry; each request is sent once.
    Never,
}

/// What happened on one attempt, as the classifier sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A response arrived with this status.
    Status(StatusCode),
    /// The request never left: connection refused, DNS failure, TLS handshake failure.
    Connect,
    /// No response in time; the server may or may not have acted on the request.
    Timeout,
    /// Anything else after the request was sent: connection reset mid-flight, body error.
    Other,
}

/// Whether an attempt's outcome may be retried at all.
///
/// Only the outcome and the request's safety: the retry count, the budget and the deadline are
/// the caller's to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Give this outcome back to the caller.
    Return,
    /// The outcome may be retried.
    Retry,
}

/// Decides whether `outcome` may be retried under `policy` for a request with `method`;
/// `idempotency_key` says whether the request carries an `Idempotency-Key` header.
///
/// Statuses that never succeed on a retry are returned even for idempotent requests:
/// `501 Not Implemented`, `505 HTTP Version Not Supported` and `511 Network Authentication
/// Required` describe the server or network, not a passing condition. `408 Request Timeout` is
/// treated like a timeout. Every other status below 500, except `429`, is returned.
pub(crate) fn classify(
    policy: Retryable,
    method: &Method,
    idempotency_key: bool,
    outcome: &Outcome,
) -> Verdict {
    let repeatable = match policy {
        Retryable::Never => return Verdict::Return,
        Retryable::Always => true,
        Retryable::SafeOnly => idempotency_key || is_idempotent(method),
    };
    let retry = match *outcome {
        // Refused before acting on it, or never sent: safe for every method.
        Outcome::Connect | Outcome::Status(StatusCode::TOO_MANY_REQUESTS) => true,
        Outcome::Status(
            StatusCode::NOT_IMPLEMENTED
            | StatusCode::HTTP_VERSION_NOT_SUPPORTED
            | StatusCode::NETWORK_AUTHENTICATION_REQUIRED,
        ) => false,
        // The server may have acted on the request: only if repeating it is harmless.
        Outcome::Status(StatusCode::REQUEST_TIMEOUT) | Outcome::Timeout | Outcome::Other => {
            repeatable
        }
        Outcome::Status(status) => status.is_server_error() && repeatable,
    };
    if retry {
        Verdict::Retry
    } else {
        Verdict::Return
    }
}

/// Weighs a server's own word on retrying (Stripe's `Stripe-Should-Retry`) into `verdict`.
///
/// `false` vetoes any retry. `true` turns a failure the server answered (a `4xx` or `5xx`
/// status) into a retry: the server knows whether it acted on the request, and vouches that
/// repeating it is harmless. It never turns a success or a redirect into a retry (the request
/// took effect, and repeating a `POST` would act twice), and never overrides
/// [`Retryable::Never`]: the user's word that each request is sent once comes first.
pub(crate) fn heed_server(
    verdict: Verdict,
    policy: Retryable,
    outcome: &Outcome,
    should_retry: Option<bool>,
) -> Verdict {
    match (should_retry, outcome) {
        (Some(false), _) => Verdict::Return,
        (Some(true), Outcome::Status(status))
            if policy != Retryable::Never
                && (status.is_client_error() || status.is_server_error()) =>
        {
            Verdict::Retry
        }
        _ => verdict,
    }
}

/// Whether sending a request with `method` twice has the same effect as sending it once
/// (RFC 9110 §9.2.2): `GET`, `HEAD`, `OPTIONS`, `TRACE`, `PUT`, `DELETE`.
pub(crate) fn is_idempotent(method: &Method) -> bool {
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::PUT,
        Method::DELETE,
    ]
    .contains(method)
}

// ---------------------------------------------------------------------------------------------
// Retry budget
// ---------------------------------------------------------------------------------------------

/// Ratios are kept in millionths so that `0.29 * 100` is exactly 29 retries, not 28.999….
const RATIO_SCALE: u128 = 1_000_000;
const NANOS_PER_SEC: u128 = 1_000_000_000;

/// How many retries one host may take, as a share of its recent requests plus a small floor.
///
/// Within any window, retries allowed = `min_per_sec * window_secs + ratio * requests in the
/// window` (like tower's `TpsBudget`).
///
/// Why budgets and not only a maximum number of retries: with "up to 3 retries", a host that is
/// down receives 4 requests for every one the application makes, so the outage draws four times
/// the load just as the server tries to recover. A budget of 20% caps the extra load at 20%,
/// however many requests fail; the floor still lets a quiet client retry its occasional failure.
///
/// # Default
///
/// Window 10 s, `min_per_sec` 10, ratio 0.2 (the same as `RetryBudget::new(10 s, 10, 0.2)`).
///
/// ```
/// use std::time::Duration;
/// use reqwest_polite::{Polite, RetryBudget};
///
/// // retries may add at most 10% to a host's requests over 30 s, and 1 a second when quiet
/// let budget = RetryBudget::new(Duration::from_secs(30), 1, 0.1);
/// let polite = Polite::builder().retry_budget(budget).build();
/// assert_eq!(polite.host_count(), 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudget {
    kind: BudgetKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BudgetKind {
    Limited {
        window: Duration,
        /// `min_per_sec * window`, in millionths of a retry.
        floor_scaled: u128,
        /// `ratio`, in millionths.
        ratio_scaled: u128,
    },
    Unlimited,
}

impl RetryBudget {
    /// A budget allowing `min_per_sec * window_secs + ratio * requests` retries per `window`.
    ///
    /// `window` is how far back requests and retries count; `min_per_sec` is retries per
    /// second allowed even without requests; `ratio` is retries allowed per request (0.2: one
    /// retry per five requests), kept to six decimal places.
    ///
    /// # Panics
    ///
    /// If `window` is zero, or `ratio` is not within `[0, 1000]` (this includes NaN). Use
    /// [`RetryBudget::try_new`] for values read at run time.
    #[track_caller]
    pub fn new(window: Duration, min_per_sec: u32, ratio: f64) -> Self {
        match Self::try_new(window, min_per_sec, ratio) {
            Ok(budget) => budget,
            Err(err) => panic!("RetryBudget::new: {err}"),
        }
    }

    /// Like [`RetryBudget::new`], but returns an error instead of panicking, for values read at
    /// run time (configuration files, environment).
    ///
    /// # Errors
    ///
    /// [`InvalidRetryBudget::ZeroWindow`] if `window` is zero,
    /// [`InvalidRetryBudget::Ratio`] if `ratio` is not within `[0, 1000]` (or is NaN).
    ///
    /// ```
    /// use std::time::Duration;
    /// use reqwest_polite::{InvalidRetryBudget, RetryBudget};
    ///
    /// assert_eq!(
    ///     RetryBudget::try_new(Duration::from_secs(10), 10, 0.2),
    ///     Ok(RetryBudget::default())
    /// );
    /// assert_eq!(
    ///     RetryBudget::try_new(Duration::ZERO, 10, 0.2),
    ///     Err(InvalidRetryBudget::ZeroWindow)
    /// );
    /// ```
    pub fn try_new(
        window: Duration,
        min_per_sec: u32,
        ratio: f64,
    ) -> Result<Self, InvalidRetryBudget> {
        if window.is_zero() {
            return Err(InvalidRetryBudget::ZeroWindow);
        }
        if !(0.0..=1000.0).contains(&ratio) {
            return Err(InvalidRetryBudget::Ratio(ratio));
        }
        let floor_scaled = u128::from(min_per_sec)
            .saturating_mul(window.as_nanos())
            .saturating_mul(RATIO_SCALE)
            / NANOS_PER_SEC;
        // Within [0, 1e9] after the check above, so the cast is exact after rounding.
        let ratio_scaled = (ratio * RATIO_SCALE as f64).round() as u128;
        Ok(Self {
            kind: BudgetKind::Limited {
                window,
                floor_scaled,
                ratio_scaled,
            },
        })
    }

    /// A budget that never denies a retry: only the retry count and deadline limit retries.
    pub fn unlimited() -> Self {
        Self {
            kind: BudgetKind::Unlimited,
        }
    }
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self::new(Duration::from_secs(10), 10, 0.2)
    }
}

/// Why a [`RetryBudget`] could not be made.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidRetryBudget {
    /// The window was zero: no request or retry could ever be counted in it.
    #[error("window must be greater than zero")]
    ZeroWindow,
    /// The ratio was not within `[0, 1000]` (or was NaN); it carries the value given.
    #[error("ratio must be within [0, 1000], got {0}")]
    Ratio(f64),
}

/// The runtime state of a [`RetryBudget`] for one host.
///
/// Requests and retries are counted in one sliding [`Window`] (fixed buckets, no allocation
/// per call); an entry is forgotten between 0.9 and 1.0 windows after it was recorded, never
/// later.
#[derive(Debug, Clone)]
pub(crate) struct BudgetState {
    /// Shared by every host of a client: one copy, not one per record.
    config: Arc<RetryBudget>,
    start: Instant,
    /// Requests (`[0]`) and retries (`[1]`) over the window.
    counts: Window<2>,
}

impl BudgetState {
    /// Fresh state for one host: nothing counted yet.
    pub(crate) fn new(config: impl Into<Arc<RetryBudget>>, now: Instant) -> Self {
        let config = config.into();
        let window = match config.kind {
            BudgetKind::Limited { window, .. } => window,
            BudgetKind::Unlimited => Duration::from_secs(10),
        };
        Self {
            config,
            start: now,
            counts: Window::new(window),
        }
    }

    /// Records one original request (not a retry): each adds `ratio` to the retries allowed.
    pub(crate) fn deposit(&mut self, now: Instant) {
        let now = self.nanos(now);
        self.counts.add_each(now, [1, 0]);
    }

    /// Asks for one retry: `true`, and counted, if the budget allows it; `false`, and not
    /// counted, if the budget is spent.
    pub(crate) fn withdraw(&mut self, now: Instant) -> bool {
        let (_, _, remaining) = self.snapshot(now);
        if remaining == 0 {
            return false;
        }
        let now = self.nanos(now);
        self.counts.add_each(now, [0, 1]);
        true
    }

    /// `(requests, retries, retries still allowed)` within the window ending at `now`.
    ///
    /// For an unlimited budget, retries still allowed is `u32::MAX`.
    pub(crate) fn snapshot(&self, now: Instant) -> (u32, u32, u32) {
        let [requests, retries] = self.counts.totals_at(self.nanos(now));
        let allowed = match self.config.kind {
            BudgetKind::Unlimited => u32::MAX,
            BudgetKind::Limited {
                floor_scaled,
                ratio_scaled,
                ..
            } => {
                let scaled =
                    floor_scaled.saturating_add(ratio_scaled.saturating_mul(u128::from(requests)));
                u32::try_from(scaled / RATIO_SCALE).unwrap_or(u32::MAX)
            }
        };
        (requests, retries, allowed.saturating_sub(retries))
    }

    /// Whether nothing was recorded within the window, so the host's state may be evicted.
    #[cfg(test)]
    pub(crate) fn is_idle(&self, now: Instant) -> bool {
        let (requests, retries, _) = self.snapshot(now);
        requests == 0 && retries == 0
    }

    /// `now` in nanoseconds since the state was made.
    fn nanos(&self, now: Instant) -> u64 {
        crate::time::saturating_nanos(now.saturating_duration_since(self.start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    const MS: Duration = Duration::from_millis(1);

    fn rng(seed: u64) -> SmallRng {
        SmallRng::seed_from_u64(seed)
    }

    /// Reference ceiling, computed independently of `Backoff::ceiling`.
    fn expected_ceiling(base: Duration, max: Duration, retry: u32) -> Duration {
        let mut c = base;
        for _ in 0..retry {
            c = c.saturating_mul(2);
            if c >= max {
                return max;
            }
        }
        c.min(max)
    }

    // --- Backoff -------------------------------------------------------------------------------

    #[test]
    fn no_jitter_doubles_from_base_and_caps_at_max() {
        let backoff = Backoff::exponential(100 * MS, 2_000 * MS).jitter(Jitter::None);
        let got: Vec<u64> = backoff
            .delays(rng(0))
            .take(8)
            .map(|d| d.as_millis() as u64)
            .collect();
        assert_eq!(
            got,
            [100, 200, 400, 800, 1600, 2000, 2000, 2000],
            "Jitter::None must yield base * 2^i capped at max"
        );
    }

    #[test]
    fn full_jitter_stays_within_zero_and_ceiling() {
        let backoff = Backoff::exponential(100 * MS, 5_000 * MS).jitter(Jitter::Full);
        for (i, d) in backoff.delays(rng(1)).take(64).enumerate() {
            let ceiling = backoff.ceiling(i as u32);
            assert!(
                d <= ceiling,
                "Full: retry {i} waited {d:?} > ceiling {ceiling:?}"
            );
        }
    }

    #[test]
    fn full_jitter_actually_varies() {
        let backoff = Backoff::exponential(100 * MS, 100 * MS).jitter(Jitter::Full);
        let delays: Vec<Duration> = backoff.delays(rng(2)).take(20).collect();
        assert!(
            delays.windows(2).any(|w| w[0] != w[1]),
            "Full jitter gave 20 identical delays: {delays:?}"
        );
    }

    #[test]
    fn equal_jitter_stays_within_half_ceiling_and_ceiling() {
        let backoff = Backoff::exponential(100 * MS, 5_000 * MS).jitter(Jitter::Equal);
        for (i, d) in backoff.delays(rng(3)).take(64).enumerate() {
            let ceiling = backoff.ceiling(i as u32);
            assert!(
                ceiling / 2 <= d && d <= ceiling,
                "Equal: retry {i} waited {d:?}, outside [{:?}, {ceiling:?}]",
                ceiling / 2
            );
        }
    }

    #[test]
    fn decorrelated_jitter_stays_within_base_and_max() {
        let (base, max) = (100 * MS, 5_000 * MS);
        let backoff = Backoff::exponential(base, max).jitter(Jitter::Decorrelated);
        for (i, d) in backoff.delays(rng(4)).take(64).enumerate() {
            assert!(
                base <= d && d <= max,
                "Decorrelated: retry {i} waited {d:?}, outside [{base:?}, {max:?}]"
            );
        }
    }

    #[test]
    fn same_seed_gives_same_delays() {
        let backoff = Backoff::default();
        let a: Vec<Duration> = backoff.delays(rng(42)).take(10).collect();
        let b: Vec<Duration> = backoff.delays(rng(42)).take(10).collect();
        assert_eq!(a, b, "a seeded RNG must make delays reproducible");
    }

    #[test]
    fn default_backoff_is_100ms_to_20s_full_jitter() {
        let backoff = Backoff::default();
        assert_eq!(backoff.base(), 100 * MS, "default base");
        assert_eq!(backoff.max(), Duration::from_secs(20), "default max");
        assert_eq!(backoff.jitter_kind(), Jitter::Full, "default jitter");
    }

    #[test]
    fn ceiling_saturates_for_any_retry_index() {
        let backoff = Backoff::exponential(Duration::from_nanos(1), Duration::MAX);
        for retry in [63, 64, 93, 94, 95, 127, 128, 129, 1000, u32::MAX] {
            assert_eq!(
                backoff.ceiling(retry),
                expected_ceiling(Duration::from_nanos(1), Duration::MAX, retry.min(200)),
                "ceiling({retry}) for base 1 ns, max Duration::MAX"
            );
        }
        assert_eq!(
            backoff.ceiling(u32::MAX),
            Duration::MAX,
            "a huge retry index must saturate at max"
        );
    }

    /// Regression: `Backoff::exponential(x, Duration::MAX)` must not make anything panic here;
    /// every delay stays within `[0, max]`, whatever the jitter, for any number of retries.
    #[test]
    fn backoff_up_to_duration_max_never_panics() {
        for base in [
            Duration::from_nanos(1),
            100 * MS,
            Duration::MAX / 2,
            Duration::MAX,
        ] {
            for jitter in [
                Jitter::None,
                Jitter::Full,
                Jitter::Equal,
                Jitter::Decorrelated,
            ] {
                let backoff = Backoff::exponential(base, Duration::MAX).jitter(jitter);
                for (i, d) in backoff.delays(rng(9)).take(300).enumerate() {
                    let floor = match jitter {
                        Jitter::Decorrelated => base,
                        Jitter::None => backoff.ceiling(i as u32),
                        _ => Duration::ZERO,
                    };
                    assert!(
                        d >= floor,
                        "{jitter:?} from {base:?}: retry {i} waited {d:?} below {floor:?}"
                    );
                }
                assert_eq!(backoff.ceiling(u32::MAX), Duration::MAX);
            }
        }
    }

    #[test]
    fn invalid_backoff_is_refused() {
        assert_eq!(
            Backoff::try_exponential(Duration::ZERO, MS),
            Err(InvalidBackoff::ZeroBase),
            "zero base must be refused"
        );
        assert_eq!(
            Backoff::try_exponential(2 * MS, MS),
            Err(InvalidBackoff::MaxBelowBase {
                base: 2 * MS,
                max: MS
            }),
            "max below base must be refused"
        );
        assert!(
            Backoff::try_exponential(MS, MS).is_ok(),
            "max == base is a constant backoff and must be accepted"
        );
    }

    #[test]
    #[should_panic(expected = "base delay must be greater than zero")]
    fn exponential_panics_on_zero_base() {
        let _ = Backoff::exponential(Duration::ZERO, MS);
    }

    #[test]
    #[should_panic(expected = "must be at least the base delay")]
    fn exponential_panics_when_max_below_base() {
        let _ = Backoff::exponential(2 * MS, MS);
    }

    fn any_jitter() -> impl Strategy<Value = Jitter> {
        prop_oneof![
            Just(Jitter::None),
            Just(Jitter::Full),
            Just(Jitter::Equal),
            Just(Jitter::Decorrelated),
        ]
    }

    /// Checks one delay against the bounds its jitter promises.
    fn check_bounds(backoff: &Backoff, retry: u32, d: Duration) -> Result<(), TestCaseError> {
        let (base, max) = (backoff.base(), backoff.max());
        let ceiling = expected_ceiling(base, max, retry.min(200));
        prop_assert!(d <= max, "retry {retry}: {d:?} above max {max:?}");
        match backoff.jitter_kind() {
            Jitter::None => prop_assert_eq!(d, ceiling, "None: retry {} not the ceiling", retry),
            Jitter::Full => prop_assert!(d <= ceiling, "Full: retry {retry}: {d:?} > {ceiling:?}"),
            Jitter::Equal => prop_assert!(
                ceiling / 2 <= d && d <= ceiling,
                "Equal: retry {retry}: {d:?} outside [{:?}, {ceiling:?}]",
                ceiling / 2
            ),
            Jitter::Decorrelated => {
                prop_assert!(
                    base <= d,
                    "Decorrelated: retry {retry}: {d:?} < base {base:?}"
                )
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn every_delay_within_bounds(
            base_ms in 1u64..10_000,
            max_ms in 1u64..=3_600_000,
            jitter in any_jitter(),
            seed in any::<u64>(),
        ) {
            let base = Duration::from_millis(base_ms);
            let max = Duration::from_millis(max_ms.max(base_ms));
            let backoff = Backoff::exponential(base, max).jitter(jitter);
            for (i, d) in backoff.delays(rng(seed)).take(64).enumerate() {
                check_bounds(&backoff, i as u32, d)?;
            }
        }

        #[test]
        fn long_runs_saturate_without_panicking(
            base_ns in 1u64..1_000,
            max in prop_oneof![
                Just(Duration::MAX),
                Just(Duration::from_secs(u64::MAX / 2)),
                Just(Duration::new(u64::MAX, 0)),
                Just(Duration::from_secs(3_600)),
            ],
            jitter in any_jitter(),
            seed in any::<u64>(),
        ) {
            let backoff = Backoff::exponential(Duration::from_nanos(base_ns), max).jitter(jitter);
            for (i, d) in backoff.delays(rng(seed)).take(200).enumerate() {
                check_bounds(&backoff, i as u32, d)?;
            }
        }
    }

    // --- Classification ------------------------------------------------------------------------

    fn status(code: u16) -> Outcome {
        Outcome::Status(StatusCode::from_u16(code).expect("valid test status code"))
    }

    #[test]
    fn classify_table() {
        use Outcome::{Connect, Other, Timeout};
        use Retryable::{Always, Never, SafeOnly};
        use Verdict::{Retry, Return};
        let (get, post) = (Method::GET, Method::POST);
        #[rustfmt::skip]
        let table: &[(Retryable, &Method, bool, Outcome, Verdict)] = &[
            // Non-idempotent: only what the server cannot have acted on.
            (SafeOnly, &post, false, status(500), Return),
            (SafeOnly, &post, false, status(503), Return),
            (SafeOnly, &post, false, Timeout,     Return),
            (SafeOnly, &post, false, Other,       Return),
            (SafeOnly, &post, false, status(408), Return),
            (SafeOnly, &post, false, status(429), Retry),
            (SafeOnly, &post, false, Connect,     Retry),
            // Idempotent: transient server and transport failures too.
            (SafeOnly, &get, false, status(500), Retry),
            (SafeOnly, &get, false, status(502), Retry),
            (SafeOnly, &get, false, status(503), Retry),
            (SafeOnly, &get, false, status(504), Retry),
            (SafeOnly, &get, false, status(408), Retry),
            (SafeOnly, &get, false, Timeout,     Retry),
            (SafeOnly, &get, false, Other,       Retry),
            (SafeOnly, &get, false, status(429), Retry),
            (SafeOnly, &get, false, Connect,     Retry),
            // Permanent server conditions: never.
            (SafeOnly, &get,  false, status(501), Return),
            (SafeOnly, &get,  false, status(505), Return),
            (SafeOnly, &get,  false, status(511), Return),
            (SafeOnly, &post, true,  status(501), Return),
            (Always,   &post, false, status(501), Return),
            (Always,   &get,  false, status(501), Return),
            // An Idempotency-Key makes a POST safe to repeat.
            (SafeOnly, &post, true, status(503), Retry),
            (SafeOnly, &post, true, Timeout,     Retry),
            // Success, redirects and client errors go back to the caller.
            (SafeOnly, &get, false, status(200), Return),
            (SafeOnly, &get, false, status(304), Return),
            (SafeOnly, &get, false, status(400), Return),
            (SafeOnly, &get, false, status(401), Return),
            (SafeOnly, &get, false, status(404), Return),
            (Always,   &post, false, status(404), Return),
            // Never: nothing.
            (Never, &get,  false, status(429), Return),
            (Never, &get,  false, status(503), Return),
            (Never, &get,  true,  Connect,     Return),
            (Never, &post, true,  Timeout,     Return),
            // Always: the user vouches for non-idempotent requests.
            (Always, &post, false, status(503), Retry),
            (Always, &post, false, Timeout,     Retry),
            (Always, &post, false, status(429), Retry),
        ];
        for (policy, method, key, outcome, want) in table {
            assert_eq!(
                classify(*policy, method, *key, outcome),
                *want,
                "classify({policy:?}, {method}, idempotency_key={key}, {outcome:?})"
            );
        }
    }

    #[test]
    fn stripe_should_retry_turns_only_answered_failures_into_retries() {
        use Outcome::{Connect, Timeout};
        use Retryable::{Always, Never, SafeOnly};
        use Verdict::{Retry, Return};
        #[rustfmt::skip]
        let table: &[(Retryable, Outcome, Option<bool>, Verdict, Verdict)] = &[
            // `true` on a failure the server answered: retried, even a POST's
            (SafeOnly, status(409), Some(true),  Return, Retry),
            (SafeOnly, status(500), Some(true),  Return, Retry),
            (Always,   status(400), Some(true),  Return, Retry),
            // never a success or a redirect: the request took effect
            (SafeOnly, status(200), Some(true),  Return, Return),
            (Always,   status(201), Some(true),  Return, Return),
            (SafeOnly, status(301), Some(true),  Return, Return),
            (SafeOnly, status(304), Some(true),  Return, Return),
            // never against the user's `Never`
            (Never,    status(503), Some(true),  Return, Return),
            (Never,    status(409), Some(true),  Return, Return),
            // `false` vetoes
            (SafeOnly, status(503), Some(false), Retry,  Return),
            (Always,   status(429), Some(false), Retry,  Return),
            // no word: the classification stands
            (SafeOnly, status(503), None,        Retry,  Retry),
            (SafeOnly, status(200), None,        Return, Return),
            (SafeOnly, Connect,     None,        Retry,  Retry),
            (SafeOnly, Timeout,     Some(true),  Return, Return),
        ];
        for (policy, outcome, word, classified, want) in table {
            assert_eq!(
                heed_server(*classified, *policy, outcome, *word),
                *want,
                "heed_server({classified:?}, {policy:?}, {outcome:?}, {word:?})"
            );
        }
    }

    #[test]
    fn idempotent_methods_are_exactly_rfc_9110s() {
        for m in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] {
            let method = Method::from_bytes(m.as_bytes()).expect("valid method");
            assert!(is_idempotent(&method), "{m} is idempotent");
        }
        for m in ["POST", "PATCH", "CONNECT", "PURGE"] {
            let method = Method::from_bytes(m.as_bytes()).expect("valid method");
            assert!(!is_idempotent(&method), "{m} is not idempotent");
        }
    }

    #[test]
    fn every_4xx_except_408_and_429_is_returned_even_when_always() {
        for code in 400..500u16 {
            if code == 408 || code == 429 {
                continue;
            }
            assert_eq!(
                classify(Retryable::Always, &Method::GET, true, &status(code)),
                Verdict::Return,
                "status {code} must not be retried"
            );
        }
    }

    // --- Budget --------------------------------------------------------------------------------

    const WINDOW: Duration = Duration::from_secs(10);

    #[test]
    fn ratio_allows_exactly_its_share_of_deposits() {
        let t0 = Instant::now();
        let mut budget = BudgetState::new(RetryBudget::new(WINDOW, 0, 0.2), t0);
        for _ in 0..100 {
            budget.deposit(t0);
        }
        for i in 0..20 {
            assert!(budget.withdraw(t0), "withdrawal {i} of 20 was denied");
        }
        assert!(
            !budget.withdraw(t0),
            "withdrawal 21 allowed after 100 requests at ratio 0.2"
        );
        assert_eq!(
            budget.snapshot(t0),
            (100, 20, 0),
            "a denied withdrawal must not be counted"
        );
    }

    #[test]
    fn ratio_is_exact_in_decimal() {
        // 0.29 * 100 is 28.999999999999996 in f64; the budget must still allow 29.
        let t0 = Instant::now();
        let mut budget = BudgetState::new(RetryBudget::new(WINDOW, 0, 0.29), t0);
        for _ in 0..100 {
            budget.deposit(t0);
        }
        assert_eq!(budget.snapshot(t0).2, 29, "0.29 of 100 requests");
    }

    #[test]
    fn entries_age_out_after_the_window() {
        let t0 = Instant::now();
        let mut budget = BudgetState::new(RetryBudget::new(WINDOW, 0, 0.5), t0);
        for _ in 0..10 {
            budget.deposit(t0);
        }
        for _ in 0..5 {
            assert!(budget.withdraw(t0), "5 retries allowed after 10 requests");
        }
        assert!(!budget.withdraw(t0), "budget spent");

        let almost = t0 + WINDOW * 9 / 10 - MS;
        assert_eq!(
            budget.snapshot(almost),
            (10, 5, 0),
            "entries must still count 0.9 windows later"
        );
        assert!(
            !budget.withdraw(almost),
            "budget still spent before the window passes"
        );

        let later = t0 + WINDOW;
        assert_eq!(
            budget.snapshot(later),
            (0, 0, 0),
            "entries must be gone one window later"
        );
        assert!(
            budget.is_idle(later),
            "no activity in the window means idle"
        );
        assert!(
            !budget.withdraw(later),
            "no requests and no floor: nothing to retry on"
        );
    }

    #[test]
    fn window_slides_bucket_by_bucket() {
        let t0 = Instant::now();
        let mut budget = BudgetState::new(RetryBudget::new(WINDOW, 0, 1.0), t0);
        // One request per second for 15 s: at most the last 10 seconds' count.
        for s in 0..15u64 {
            budget.deposit(t0 + Duration::from_secs(s));
        }
        let (requests, _, _) = budget.snapshot(t0 + Duration::from_secs(14));
        assert_eq!(
            requests, 10,
            "the window holds the last 10 one-second buckets"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn entries_age_out_on_paused_time() {
        let mut budget = BudgetState::new(RetryBudget::new(WINDOW, 0, 0.2), Instant::now());
        for _ in 0..5 {
            budget.deposit(Instant::now());
        }
        assert!(budget.withdraw(Instant::now()), "0.2 * 5 allows one retry");
        assert!(
            !budget.is_idle(Instant::now()),
            "fresh activity is not idle"
        );
        tokio::time::advance(WINDOW).await;
        assert!(
            budget.is_idle(Instant::now()),
            "idle once the window has passed"
        );
    }

    /// Regression (eviction): what an outage leaves in the budget (requests, retries, a spent
    /// budget) must go away without new traffic, so the host's record can be evicted.
    #[tokio::test(start_paused = true)]
    async fn a_budget_spent_by_an_outage_is_idle_one_window_later() {
        let mut budget = BudgetState::new(RetryBudget::default(), Instant::now());
        for _ in 0..50 {
            budget.deposit(Instant::now());
        }
        while budget.withdraw(Instant::now()) {}
        assert_eq!(budget.snapshot(Instant::now()).2, 0, "spent");
        tokio::time::advance(WINDOW * 9 / 10 - MS).await;
        assert!(!budget.is_idle(Instant::now()), "still within the window");
        tokio::time::advance(WINDOW / 10 + MS).await;
        assert!(
            budget.is_idle(Instant::now()),
            "one window after the last entry nothing is left"
        );
        assert_eq!(
            budget.snapshot(Instant::now()),
            (0, 0, 100),
            "and the floor is whole again"
        );
    }

    #[test]
    fn floor_allows_retries_without_deposits() {
        let t0 = Instant::now();
        let mut budget = BudgetState::new(RetryBudget::new(WINDOW, 2, 0.0), t0);
        assert_eq!(
            budget.snapshot(t0),
            (0, 0, 20),
            "2 per second over 10 s allows 20"
        );
        for i in 0..20 {
            assert!(budget.withdraw(t0), "floor withdrawal {i} of 20 was denied");
        }
        assert!(
            !budget.withdraw(t0),
            "withdrawal 21 beyond the floor of 20 allowed"
        );
        assert!(
            budget.withdraw(t0 + WINDOW),
            "the floor must be available again once the retries age out"
        );
    }

    #[test]
    fn default_budget_is_10s_10_per_sec_20_percent() {
        assert_eq!(
            RetryBudget::default(),
            RetryBudget::new(WINDOW, 10, 0.2),
            "documented default"
        );
        let t0 = Instant::now();
        let mut budget = BudgetState::new(RetryBudget::default(), t0);
        for _ in 0..50 {
            budget.deposit(t0);
        }
        assert_eq!(budget.snapshot(t0).2, 110, "100 floor + 0.2 * 50");
    }

    #[test]
    fn unlimited_never_denies() {
        let t0 = Instant::now();
        let mut budget = BudgetState::new(RetryBudget::unlimited(), t0);
        for i in 0..10_000 {
            assert!(budget.withdraw(t0), "unlimited budget denied retry {i}");
        }
        assert_eq!(budget.snapshot(t0).1, 10_000, "retries are still counted");
    }

    #[test]
    fn time_going_backwards_does_not_rewind_the_window() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(5);
        let mut budget = BudgetState::new(RetryBudget::new(WINDOW, 0, 1.0), later);
        budget.deposit(later + Duration::from_secs(20));
        budget.deposit(t0);
        assert_eq!(
            budget.snapshot(later + Duration::from_secs(20)).0,
            2,
            "an earlier instant counts in the latest bucket"
        );
    }

    #[test]
    fn try_new_returns_errors_instead_of_panicking() {
        assert_eq!(
            RetryBudget::try_new(Duration::ZERO, 1, 0.2),
            Err(InvalidRetryBudget::ZeroWindow)
        );
        assert_eq!(
            RetryBudget::try_new(WINDOW, 1, -0.1),
            Err(InvalidRetryBudget::Ratio(-0.1))
        );
        assert_eq!(
            RetryBudget::try_new(WINDOW, 1, 1000.5),
            Err(InvalidRetryBudget::Ratio(1000.5))
        );
        assert!(
            matches!(
                RetryBudget::try_new(WINDOW, 1, f64::NAN),
                Err(InvalidRetryBudget::Ratio(r)) if r.is_nan()
            ),
            "NaN must be refused"
        );
        assert_eq!(
            RetryBudget::try_new(WINDOW, 10, 0.2),
            Ok(RetryBudget::new(WINDOW, 10, 0.2))
        );
        assert_eq!(
            RetryBudget::try_new(Duration::MAX, u32::MAX, 1000.0),
            Ok(RetryBudget::new(Duration::MAX, u32::MAX, 1000.0)),
            "extremes saturate"
        );
    }

    #[test]
    #[should_panic(expected = "window must be greater than zero")]
    fn budget_panics_on_zero_window() {
        let _ = RetryBudget::new(Duration::ZERO, 1, 0.2);
    }

    #[test]
    #[should_panic(expected = "ratio must be within [0, 1000]")]
    fn budget_panics_on_nan_ratio() {
        let _ = RetryBudget::new(WINDOW, 1, f64::NAN);
    }

    #[test]
    #[should_panic(expected = "ratio must be within [0, 1000]")]
    fn budget_panics_on_negative_ratio() {
        let _ = RetryBudget::new(WINDOW, 1, -0.1);
    }
}
