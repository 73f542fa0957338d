//! Per-request overrides, carried as request extensions.
//!
//! ```
//! # async fn run(client: reqwest_middleware::ClientWithMiddleware) -> reqwest_middleware::Result<()> {
//! use std::time::Duration;
//! use reqwest_polite::{Cost, Deadline, NoRetry};
//!
//! client
//!     .post("http://127.0.0.1:8080/v1/embeddings")
//!     .with_extension(Cost(20))                                   // this call uses 20 units of quota
//!     .with_extension(Deadline::after(Duration::from_secs(30)))  // give up rather than wait longer
//!     .with_extension(NoRetry)                                    // one attempt only
//!     .send()
//!     .await?;
//! # Ok(()) }
//! ```

use std::time::Duration;

use http::Extensions;
use tokio::time::Instant;

/// How many units of the host's [`Limit`](crate::Limit) this request uses (default 1).
///
/// For APIs that meter work rather than calls: a request of cost 5 waits for five slots and
/// takes them all. A cost of 0 counts as 1. A cost above the limit's count can never be sent
/// and fails with [`Error::CostExceedsLimit`](crate::Error::CostExceedsLimit).
///
/// ```
/// use reqwest_polite::{Cost, Polite};
///
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(Polite::new())
///     .build();
/// // a batch call the API counts as 20 requests
/// let request = client.post("https://api.example.com/batch").with_extension(Cost(20));
/// drop(request);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost(pub u32);

/// The latest instant at which this request may still be sent.
///
/// Bounds every wait the middleware would make: pacing, server cooldowns, retry backoffs. A
/// request whose next wait would pass its deadline fails at once with
/// [`Error::DeadlineExceeded`](crate::Error::DeadlineExceeded) and sends nothing more; waiting
/// and then failing anyway would waste the caller's time and a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(pub Instant);

impl Deadline {
    /// `timeout` from now (on the tokio clock).
    ///
    /// A `timeout` too long for the clock to name (`Duration::MAX`) means no deadline in
    /// practice: the deadline is then about 100 years from now, never a panic.
    ///
    /// ```
    /// use std::time::Duration;
    /// use reqwest_polite::Deadline;
    ///
    /// let forever = Deadline::after(Duration::MAX);
    /// assert!(forever.0 > tokio::time::Instant::now() + Duration::from_secs(50 * 365 * 24 * 3600));
    /// ```
    pub fn after(timeout: Duration) -> Self {
        Deadline(crate::time::far_add(Instant::now(), timeout))
    }

    /// At `instant`.
    pub fn at(instant: Instant) -> Self {
        Deadline(instant)
    }
}

/// How many units of a second quota this request uses, beside requests: OpenAI's tokens.
///
/// Paced by the host's [`unit_limit`](crate::PoliteBuilder::unit_limit) for that unit; a unit
/// without a limit configured for the host is not paced. [`Cost`] keeps its meaning (units of
/// the request limit).
///
/// ```
/// # async fn run(client: reqwest_middleware::ClientWithMiddleware) -> reqwest_middleware::Result<()> {
/// use reqwest_polite::Units;
///
/// client
///     .post("http://127.0.0.1:8080/v1/chat/completions")
///     .with_extension(Units::new("tokens", 1200))
///     .send()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Units {
    unit: std::borrow::Cow<'static, str>,
    count: u32,
}

impl Units {
    /// `count` units of `unit` (a count of 0 counts as 1).
    pub fn new(unit: impl Into<std::borrow::Cow<'static, str>>, count: u32) -> Self {
        Units {
            unit: unit.into(),
            count: count.max(1),
        }
    }

    /// The unit's name.
    pub fn unit(&self) -> &str {
        &self.unit
    }

    /// How many units.
    pub fn count(&self) -> u32 {
        self.count
    }
}

/// Send this request once: no retry, whatever the outcome. For one request what
/// [`Retryable::Never`](crate::Retryable::Never) and
/// [`max_retries(0)`](crate::PoliteBuilder::max_retries) are for every request (the three
/// are one setting at two reaches: none of them keeps a copy of the request for a resend).
///
/// ```
/// use reqwest_polite::{NoRetry, Polite};
///
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(Polite::new())
///     .build();
/// let request = client.get("https://api.example.com/poll").with_extension(NoRetry);
/// drop(request);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoRetry;

/// Wait for the host's circuit breaker to let this request through instead of failing fast
/// with [`Error::CircuitOpen`](crate::Error::CircuitOpen): for batch jobs that would rather
/// finish late than not at all.
///
/// The request waits while the breaker is open, and while a half-open breaker's probes are
/// out, and goes as soon as the breaker admits it (it may be the next probe). The wait is
/// bounded by the request's [`Deadline`], or else by
/// [`max_retry_after`](crate::PoliteBuilder::max_retry_after); past it the request fails with
/// `CircuitOpen` as it would have at once.
///
/// ```
/// # async fn run(client: reqwest_middleware::ClientWithMiddleware) -> reqwest_middleware::Result<()> {
/// use std::time::Duration;
/// use reqwest_polite::{Deadline, WaitIfOpen};
///
/// client
///     .get("http://127.0.0.1:8080/v1/report")
///     .with_extension(WaitIfOpen)
///     .with_extension(Deadline::after(Duration::from_secs(600)))
///     .send()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WaitIfOpen;

/// The overrides of one request, read once from its extensions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestOptions {
    pub(crate) cost: u32,
    pub(crate) deadline: Option<Instant>,
    pub(crate) no_retry: bool,
    /// With [`WaitIfOpen`]: until when the request may wait for its host's breaker, in all
    /// (its deadline, else `max_retry_after` after it came in; see [`Self::bound_waits`]).
    pub(crate) wait_if_open: Option<Instant>,
}

impl RequestOptions {
    pub(crate) fn from_extensions(ext: &Extensions) -> Self {
        RequestOptions {
            cost: ext.get::<Cost>().map_or(1, |c| c.0.max(1)),
            deadline: ext.get::<Deadline>().map(|d| d.0),
            no_retry: ext.get::<NoRetry>().is_some(),
            wait_if_open: ext
                .get::<WaitIfOpen>()
                .map(|_| ext.get::<Deadline>().map_or(Instant::now(), |d| d.0)),
        }
    }

    /// Bound a [`WaitIfOpen`] wait without a deadline: `max_wait` from now, once for the whole
    /// request (however many times the breaker opens again).
    pub(crate) fn bound_waits(&mut self, max_wait: std::time::Duration) {
        if self.wait_if_open.is_some() && self.deadline.is_none() {
            self.wait_if_open = Some(crate::time::far_add(Instant::now(), max_wait));
        }
    }

    /// True when waiting until `until` would pass the deadline.
    pub(crate) fn past_deadline(&self, until: Instant) -> bool {
        self.deadline.is_some_and(|d| until > d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: `Instant + Duration::MAX` overflows; `Deadline::after` must saturate, not panic.
    #[tokio::test(start_paused = true)]
    async fn deadline_after_duration_max_saturates_instead_of_panicking() {
        let now = Instant::now();
        let Deadline(at) = Deadline::after(Duration::MAX);
        assert!(
            at >= now + crate::time::FAR_FUTURE,
            "Duration::MAX must mean a far-future deadline, got {:?} from now",
            at - now
        );
        let huge = Duration::from_secs(u64::MAX / 2);
        assert!(
            Deadline::after(huge).0 > now,
            "any huge timeout saturates too"
        );
        let options = RequestOptions {
            cost: 1,
            deadline: Some(at),
            no_retry: false,
            wait_if_open: None,
        };
        assert!(
            !options.past_deadline(now + Duration::from_secs(365 * 24 * 3600)),
            "a year's wait is within a saturated deadline"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_after_an_ordinary_timeout_is_exact() {
        let now = Instant::now();
        assert_eq!(
            Deadline::after(Duration::from_secs(30)),
            Deadline(now + Duration::from_secs(30))
        );
    }
}
