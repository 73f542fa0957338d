//! The rate core: what decides when the next request of a scope may start.
//!
//! One owner per concern, asked in this order by [`HostState::decide`](crate::host::HostState):
//!
//! - [`closure`]: every server-ordered "not before T" (Retry-After, a spent quota);
//! - [`quota`]: the server's quota as we count it, and first contact with a host whose quota we
//!   do not know yet (at most a window of scouts out at once);
//! - [`adaptive`]: the rate we adapt to after refusals that say nothing, bounded by the
//!   configured limit;
//! - [`gcra`]: the schedule itself, pure GCRA, window-exact, slowed by the two above.

pub(crate) mod adaptive;
pub(crate) mod closure;
pub(crate) mod gcra;
pub(crate) mod quota;

use std::time::Duration;

use tokio::time::Instant;

/// Nanoseconds since a record was made: the pacing state's time scale, so the hot path does
/// integer arithmetic only.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    origin: Instant,
}

impl Clock {
    pub(crate) fn starting(origin: Instant) -> Self {
        Clock { origin }
    }

    /// `at` on this scale (instants before the origin read as 0; past 584 years, saturates).
    pub(crate) fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The instant of `nanos` on this scale, saturating far in the future rather than
    /// overflowing.
    pub(crate) fn instant(&self, nanos: u64) -> Instant {
        far_add(self.origin, Duration::from_nanos(nanos))
    }
}

/// `at + d`, or about 30 years from `at` when that would overflow the platform's instant.
pub(crate) fn far_add(at: Instant, d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 3600);
    at.checked_add(d.min(FAR))
        .or_else(|| at.checked_add(Duration::from_secs(24 * 3600)))
        .unwrap_or(at)
}
