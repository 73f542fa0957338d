//! Time as the crate counts it: saturating arithmetic on `tokio::time::Instant`s and
//! nanoseconds, and one far future. A leaf: it imports nothing of the crate.

use std::time::Duration;

use tokio::time::Instant;

/// How far ahead "never, in practice" is: about 100 years. A wait or deadline too long for the
/// platform's clock to name is taken as this far.
pub(crate) const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `d` in nanoseconds, saturating (past 584 years).
pub(crate) fn saturating_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// `at + d`, or [`FAR_FUTURE`] from `at` when that would overflow the platform's instant (a
/// day from `at` where even that cannot be named).
pub(crate) fn far_add(at: Instant, d: Duration) -> Instant {
    at.checked_add(d.min(FAR_FUTURE))
        .or_else(|| at.checked_add(Duration::from_secs(24 * 3600)))
        .unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn far_add_saturates_instead_of_overflowing() {
        let now = Instant::now();
        assert_eq!(far_add(now, Duration::MAX), now + FAR_FUTURE);
        assert_eq!(
            far_add(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
        assert_eq!(saturating_nanos(Duration::MAX), u64::MAX);
    }
}
