//! What the server told us about its quota, and the rate we adapt to when it refuses without
//! saying why.
//!
//! Three things slow a host down on the server's word, on top of the configured [`Limit`]:
//!
//! - **The quota window** (`RateLimit`, `X-RateLimit-*`): we keep our own count of what is left
//!   until the reset. At zero, the host waits for the reset; when little is left, what is left is
//!   spread evenly over the time to the reset.
//! - **First contact**: until a host has answered once, one request goes alone, like TCP's slow
//!   start, so a burst never lands on a quota we have not read yet. The same when a quota window
//!   has expired and we do not know the new one. A host whose answers carry no quota headers is
//!   not gated again.
//! - **Refusals without a hint** (a 429 with no header we can read): the host's rate is halved,
//!   and grows back additively on success (AIMD), never above the configured limit.
//!
//! [`Limit`]: crate::Limit

use std::time::Duration;

use tokio::time::Instant;

use crate::signals::ServerHint;

/// Extra wait past a quota reset, for the server's clock and the whole-second resolution of
/// most reset headers.
const RESET_MARGIN: Duration = Duration::from_millis(50);

/// "Little is left": at most this share (1/n) of the quota, or this many when the quota is unknown.
const LOW_SHARE: u64 = 10;
const LOW_UNKNOWN: u64 = 10;

/// How long the others wait for a first-contact probe before going anyway.
pub(crate) const PROBE_HOLD: Duration = Duration::from_secs(1);

/// Rate bounds for AIMD, in requests per second.
const MIN_RATE: f64 = 0.1;
const START_RATE: f64 = 10.0;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Quota {
    /// Nothing read yet (or the window expired): gate behind one probe.
    Unknown { probing: bool, since: Instant },
    /// Answers carry no quota headers: nothing to gate on.
    Unmetered,
    /// `remaining` units until `reset_at`.
    Known {
        remaining: u64,
        limit: Option<u64>,
        reset_at: Instant,
    },
}

/// The decision of the server-side view for one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    /// Go (and, if `probe`, be the one request that reads the quota).
    Open { probe: bool },
    /// The quota is spent: nothing before this instant.
    Closed(Instant),
    /// A probe is out: wait for its answer (or until this instant).
    Hold(Instant),
}

/// One host's server-side pacing state.
#[derive(Debug, Clone)]
pub(crate) struct ServerPacing {
    quota: Quota,
    /// AIMD rate (requests/s) after a hintless refusal; `None` when not throttled.
    rate: Option<f64>,
    /// The rate to recover to (the configured limit's, or the rate we had before).
    ceiling: Option<f64>,
    last_decrease: Option<Instant>,
    /// The host has a configured limit: trust it over successful answers' quota headers.
    configured: bool,
    /// Our own sends per second (this second and the last), to start AIMD from the rate we
    /// were at. Integer counts: this runs on every send.
    sends: SendRate,
}

impl ServerPacing {
    pub(crate) fn new(now: Instant, configured_rate: Option<f64>) -> Self {
        let quota = if configured_rate.is_some() {
            Quota::Unmetered
        } else {
            Quota::Unknown {
                probing: false,
                since: now,
            }
        };
        ServerPacing {
            quota,
            configured: configured_rate.is_some(),
            rate: None,
            ceiling: configured_rate,
            last_decrease: None,
            sends: SendRate::default(),
        }
    }

    /// May an attempt go at `now`?
    pub(crate) fn gate(&mut self, now: Instant) -> Gate {
        if let Quota::Known { reset_at, .. } = self.quota
            && now >= reset_at
        {
            self.quota = if self.configured {
                Quota::Unmetered
            } else {
                Quota::Unknown {
                    probing: false,
                    since: now,
                }
            };
        }
        match self.quota {
            Quota::Unmetered => Gate::Open { probe: false },
            Quota::Unknown { probing: false, .. } => Gate::Open { probe: true },
            Quota::Unknown {
                probing: true,
                since,
            } => {
                if now >= since + PROBE_HOLD {
                    // the probe is slow: stop holding the others for it
                    self.quota = Quota::Unmetered;
                    Gate::Open { probe: false }
                } else {
                    Gate::Hold(since + PROBE_HOLD)
                }
            }
            Quota::Known {
                remaining: 0,
                reset_at,
                ..
            } => Gate::Closed(reset_at),
            Quota::Known { .. } => Gate::Open { probe: false },
        }
    }

    /// The spacing the server's word asks for right now, if any: what is left spread over the
    /// time to the reset when little is left, or the AIMD rate.
    pub(crate) fn interval(&self, now: Instant) -> Option<Duration> {
        let spread = match self.quota {
            Quota::Known {
                remaining,
                limit,
                reset_at,
            } if remaining > 0 && is_low(remaining, limit) => Some(
                reset_at.saturating_duration_since(now)
                    / u32::try_from(remaining).unwrap_or(u32::MAX),
            ),
            _ => None,
        };
        let aimd = self.rate.map(|r| Duration::from_secs_f64(1.0 / r));
        spread.max(aimd)
    }

    /// An attempt of `cost` units was sent at `now` (`now_ns` on any monotonic nanosecond scale).
    pub(crate) fn on_send(&mut self, now: Instant, now_ns: u64, cost: u32, probe: bool) {
        match &mut self.quota {
            Quota::Known { remaining, .. } => {
                *remaining = remaining.saturating_sub(u64::from(cost))
            }
            Quota::Unknown { probing, since } if probe => {
                *probing = true;
                *since = now;
            }
            _ => {}
        }
        self.sends.count(now_ns);
    }

    /// A probe ended without an answer (error, cancellation): let the next one go.
    pub(crate) fn release_probe(&mut self) {
        if let Quota::Unknown { probing, .. } = &mut self.quota {
            *probing = false;
        }
    }

    /// Read an answer. Returns the change of the AIMD rate, if any, for the caller to report.
    pub(crate) fn observe(
        &mut self,
        now: Instant,
        status: u16,
        hint: &ServerHint,
    ) -> Option<RateChange> {
        let refused = status == 429 || status == 403;
        if !self.configured || (refused && hint.remaining == Some(0)) {
            self.read_quota(now, hint);
        }
        let hintless = hint.retry_after.is_none() && hint.remaining.is_none();
        if status == 429 && hintless {
            return self.decrease(now);
        }
        if (200..300).contains(&status) {
            return self.increase();
        }
        None
    }

    fn read_quota(&mut self, now: Instant, hint: &ServerHint) {
        match (hint.remaining, hint.reset_in) {
            (Some(remaining), Some(reset_in)) => {
                let reset_at = now + reset_in + RESET_MARGIN;
                let limit = hint.limit;
                self.quota = match self.quota {
                    // same window: the lower count wins (our own count includes requests
                    // sent after the one this answer is for)
                    Quota::Known {
                        remaining: ours,
                        reset_at: known,
                        limit: known_limit,
                    } if now < known => Quota::Known {
                        remaining: ours.min(remaining),
                        reset_at: known.min(reset_at),
                        limit: limit.or(known_limit),
                    },
                    _ => Quota::Known {
                        remaining,
                        reset_at,
                        limit,
                    },
                };
            }
            _ => {
                // an answer without a readable quota: stop gating on it
                if let Quota::Unknown { .. } = self.quota {
                    self.quota = Quota::Unmetered;
                }
            }
        }
    }

    fn decrease(&mut self, now: Instant) -> Option<RateChange> {
        let current = self.rate.or_else(|| {
            // the rate we were actually sending at, never above the configured one
            let observed = self.sends.per_second();
            Some(match (observed, self.ceiling) {
                (Some(observed), Some(ceiling)) => observed.min(ceiling),
                (observed, ceiling) => observed.or(ceiling).unwrap_or(START_RATE),
            })
        })?;
        // one decrease per interval: a burst of refusals from one window is one signal
        if let (Some(last), Some(_)) = (self.last_decrease, self.rate)
            && now.saturating_duration_since(last) < Duration::from_secs_f64(1.0 / current)
        {
            return None;
        }
        if self.ceiling.is_none() {
            self.ceiling = Some(current);
        }
        let rate = (current / 2.0).max(MIN_RATE);
        self.rate = Some(rate);
        self.last_decrease = Some(now);
        Some(RateChange {
            from: current,
            to: rate,
        })
    }

    fn increase(&mut self) -> Option<RateChange> {
        let rate = self.rate?;
        let ceiling = self.ceiling.unwrap_or(START_RATE);
        // additive: a twentieth of the ceiling per success
        let next = rate + ceiling / 20.0;
        if next >= ceiling {
            self.rate = None;
        } else {
            self.rate = Some(next);
        }
        Some(RateChange {
            from: rate,
            to: next.min(ceiling),
        })
    }

    /// The AIMD rate when throttled, for snapshots.
    pub(crate) fn adaptive_rate(&self) -> Option<f64> {
        self.rate
    }

    /// The server's quota as we count it: (remaining, time to reset).
    pub(crate) fn quota(&self, now: Instant) -> Option<(u64, Duration)> {
        match self.quota {
            Quota::Known {
                remaining,
                reset_at,
                ..
            } if now < reset_at => Some((remaining, reset_at - now)),
            _ => None,
        }
    }

    /// True when forgetting this changes nothing.
    pub(crate) fn is_idle(&self, now: Instant) -> bool {
        self.rate.is_none()
            && match self.quota {
                Quota::Known { reset_at, .. } => now >= reset_at,
                Quota::Unknown { probing, .. } => !probing,
                Quota::Unmetered => true,
            }
    }
}

/// Sends in the current and the previous one-second bucket.
#[derive(Debug, Clone, Copy, Default)]
struct SendRate {
    bucket_start: u64,
    current: u32,
    previous: u32,
}

impl SendRate {
    const SECOND: u64 = 1_000_000_000;

    fn count(&mut self, now_ns: u64) {
        let elapsed = now_ns.saturating_sub(self.bucket_start);
        if elapsed >= Self::SECOND {
            self.previous = if elapsed < 2 * Self::SECOND {
                self.current
            } else {
                0
            };
            self.current = 0;
            self.bucket_start = now_ns - now_ns % Self::SECOND;
        }
        self.current = self.current.saturating_add(1);
    }

    fn per_second(&self) -> Option<f64> {
        let most = self.current.max(self.previous);
        (most > 0).then_some(f64::from(most))
    }
}

fn is_low(remaining: u64, limit: Option<u64>) -> bool {
    match limit {
        Some(limit) => remaining.saturating_mul(LOW_SHARE) <= limit,
        None => remaining <= LOW_UNKNOWN,
    }
}

/// A change of the AIMD rate, in requests per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RateChange {
    pub(crate) from: f64,
    pub(crate) to: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn hint(remaining: u64, reset_in: Duration) -> ServerHint {
        ServerHint {
            remaining: Some(remaining),
            reset_in: Some(reset_in),
            limit: Some(100),
            ..ServerHint::default()
        }
    }

    #[test]
    fn first_contact_sends_one_probe_and_holds_the_rest() {
        let t0 = Instant::now();
        let mut p = ServerPacing::new(t0, None);
        assert_eq!(p.gate(t0), Gate::Open { probe: true });
        p.on_send(t0, 0, 1, true);
        assert_eq!(
            p.gate(t0),
            Gate::Hold(t0 + PROBE_HOLD),
            "others wait for the probe"
        );
        p.observe(t0, 200, &hint(50, 10 * S));
        assert_eq!(
            p.gate(t0),
            Gate::Open { probe: false },
            "the quota is known"
        );
    }

    #[test]
    fn a_host_without_quota_headers_is_not_gated_again() {
        let t0 = Instant::now();
        let mut p = ServerPacing::new(t0, None);
        p.on_send(t0, 0, 1, true);
        p.observe(t0, 200, &ServerHint::default());
        assert_eq!(p.gate(t0), Gate::Open { probe: false });
        assert!(p.is_idle(t0));
    }

    #[test]
    fn a_slow_probe_stops_holding_the_others() {
        let t0 = Instant::now();
        let mut p = ServerPacing::new(t0, None);
        p.on_send(t0, 0, 1, true);
        assert_eq!(p.gate(t0 + PROBE_HOLD), Gate::Open { probe: false });
    }

    #[test]
    fn a_spent_quota_closes_until_the_reset_then_probes() {
        let t0 = Instant::now();
        let mut p = ServerPacing::new(t0, None);
        p.observe(t0, 200, &hint(2, 10 * S));
        p.on_send(t0, 0, 1, false);
        p.on_send(t0, 0, 1, false);
        let reset = t0 + 10 * S + RESET_MARGIN;
        assert_eq!(
            p.gate(t0),
            Gate::Closed(reset),
            "our own count reached zero"
        );
        assert_eq!(
            p.gate(reset),
            Gate::Open { probe: true },
            "a new window is probed"
        );
    }

    #[test]
    fn a_low_remaining_is_spread_over_the_time_to_reset() {
        let t0 = Instant::now();
        let mut p = ServerPacing::new(t0, None);
        p.observe(t0, 200, &hint(50, 10 * S));
        assert_eq!(p.interval(t0), None, "half the quota left is not low");
        p.observe(t0, 200, &hint(5, 10 * S));
        let interval = p.interval(t0).expect("5 of 100 left is low");
        assert_eq!(interval, (10 * S + RESET_MARGIN) / 5);
    }

    #[test]
    fn a_configured_limit_is_trusted_over_successful_answers_but_not_over_refusals() {
        let t0 = Instant::now();
        let mut p = ServerPacing::new(t0, Some(10.0));
        assert_eq!(
            p.gate(t0),
            Gate::Open { probe: false },
            "no first-contact gate"
        );
        p.observe(t0, 200, &hint(0, 2 * S));
        assert_eq!(
            p.gate(t0),
            Gate::Open { probe: false },
            "a 200 saying 0 left is not acted on"
        );
        assert_eq!(p.interval(t0), None);
        p.observe(t0, 429, &hint(0, 2 * S));
        let reset = t0 + 2 * S + RESET_MARGIN;
        assert_eq!(
            p.gate(t0),
            Gate::Closed(reset),
            "a refusal saying 0 left closes the host"
        );
        assert_eq!(
            p.gate(reset),
            Gate::Open { probe: false },
            "and it reopens without a gate"
        );
    }

    #[test]
    fn hintless_429_halves_the_rate_and_success_recovers_it() {
        let t0 = Instant::now();
        let mut p = ServerPacing::new(t0, Some(8.0));
        let change = p
            .observe(t0, 429, &ServerHint::default())
            .expect("rate drops");
        assert_eq!((change.from, change.to), (8.0, 4.0));
        assert_eq!(p.interval(t0), Some(Duration::from_millis(250)));
        assert!(
            p.observe(t0, 429, &ServerHint::default()).is_none(),
            "a second refusal within one interval is the same signal"
        );
        let mut successes = 0;
        while p.adaptive_rate().is_some() {
            p.observe(t0, 200, &ServerHint::default());
            successes += 1;
            assert!(successes < 100, "the rate must recover");
        }
        assert_eq!(successes, 10, "4/s grows back to 8/s by 0.4/s per success");
    }
}
