//! Every server-ordered "not before T" for one scope: a `Retry-After`, or a quota the server
//! says (or we counted) is spent until its reset. One owner, so the decision, the retry plan
//! and the snapshot all read the same instant.

use tokio::time::Instant;

/// Why a scope is cooling down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    /// `Retry-After` on a refusal or an unavailable server.
    RetryAfter,
    /// The quota is spent until its reset.
    QuotaSpent,
    /// Refusals in a row without a hint: a pause while the server's window drains.
    Refused,
}

/// The instant a scope's cooldown ends, if the server's word started one.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Cooldown {
    until: Option<(Instant, Why)>,
}

impl Cooldown {
    /// Cool down until `until` (never shortens a cooldown already in force).
    pub(crate) fn cool_down(&mut self, until: Instant, why: Why) {
        if self.until.is_none_or(|(current, _)| until > current) {
            self.until = Some((until, why));
        }
    }

    /// When the cooldown ends, and why it runs, if it runs at `now`.
    pub(crate) fn until(&self, now: Instant) -> Option<(Instant, Why)> {
        self.until.filter(|&(until, _)| until > now)
    }

    /// Forget a cooldown that has ended by `now`.
    pub(crate) fn clear_passed(&mut self, now: Instant) {
        if self.until(now).is_none() {
            self.until = None;
        }
    }

    /// True when no cooldown is recorded, ended or not.
    pub(crate) fn is_clear(&self) -> bool {
        self.until.is_none()
    }

    /// True when forgetting this changes nothing.
    pub(crate) fn is_idle(&self, now: Instant) -> bool {
        self.until(now).is_none()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_cooldown_is_never_shortened_and_ends_at_its_instant() {
        let t0 = Instant::now();
        let mut c = Cooldown::default();
        assert!(c.is_idle(t0));
        c.cool_down(t0 + Duration::from_secs(5), Why::RetryAfter);
        c.cool_down(t0 + Duration::from_secs(1), Why::QuotaSpent);
        assert_eq!(
            c.until(t0),
            Some((t0 + Duration::from_secs(5), Why::RetryAfter))
        );
        c.cool_down(t0 + Duration::from_secs(9), Why::QuotaSpent);
        assert_eq!(
            c.until(t0 + Duration::from_secs(6)),
            Some((t0 + Duration::from_secs(9), Why::QuotaSpent))
        );
        assert_eq!(
            c.until(t0 + Duration::from_secs(9)),
            None,
            "open at the instant"
        );
    }
}
