//! The retry budget: how many retries one host may take, as a share of its recent requests.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::window::Window;

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
