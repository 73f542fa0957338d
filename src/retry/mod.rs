//! When a failed request may be sent again, how long to wait first, and how many retries a host
//! can take before retrying makes an outage worse.
//!
//! Three separate questions, answered by three separate pieces, none of which sleeps or sends
//! (the middleware loop does both):
//!
//! - [`classify`]: may this outcome be retried at all, given the method and the [`Retryable`] policy?
//! - [`Backoff`]: how long to wait before retry *i*, as an endless [`Iterator`] of delays.
//! - [`BudgetState`]: has this host had too many retries lately (a [`RetryBudget`])?

mod budget;
#[cfg(test)]
mod tests;

use std::time::Duration;

use http::{Method, StatusCode};
use rand::Rng;

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
    /// Never retry; each request is sent once: the same as
    /// [`max_retries(0)`](crate::PoliteBuilder::max_retries), and as [`NoRetry`](crate::NoRetry)
    /// on every request.
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

pub(crate) use budget::BudgetState;
pub use budget::{InvalidRetryBudget, RetryBudget};
