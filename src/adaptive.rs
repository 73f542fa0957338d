//! What the server told us about its quota, and the rate we adapt to when it refuses without
//! saying why.
//!
//! Three things slow a host down on the server's word, on top of the configured [`Limit`]:
//!
//! - **The quota window** (`RateLimit`, `X-RateLimit-*`): we keep our own count of what is left
//!   until the reset. At zero, the host waits for the reset; when little is left, what is left is
//!   spread evenly over the time to the reset.
//! - **First contact**: until we know a host's quota, at most a window of requests is out at
//!   once: 1, doubling each round trip to 4, then one more each round trip (TCP's slow start and
//!   congestion avoidance), so a burst never lands whole on a quota we have not read. The same
//!   when a quota window has expired. Quota headers, a refusal, or the window reaching 32
//!   (about 30 round trips without either) end it.
//! - **Refusals without a quota to read** (a 429, with or without `Retry-After`): the host's
//!   rate drops to 95% of what the server accepted in the last second (to half when it accepted
//!   nothing), and grows back by 2% of that each second of successes (AIMD), never above the
//!   configured limit. Without this, a host reopening at its `Retry-After` instant would
//!   release its whole queue at once into the same refusal.
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

/// How long the others wait for a learning probe's answer before going anyway.
pub(crate) const PROBE_HOLD: Duration = Duration::from_secs(1);

/// The learning window at which a host that never refused us and sends no quota headers is
/// considered unmetered.
const LEARNED: u32 = 32;

/// The learning window doubles each round trip up to this, then grows by one each round trip.
const SLOW_START_END: u32 = 4;

/// After a refusal, the rate drops to this share of what the server accepted in the last
/// second (or to half, whichever is lower).
const ACCEPTED_SHARE: f64 = 0.95;

/// The additive step, as a share of the lowered rate, per second of successes: 2% a second
/// probes above a quota about once every few seconds.
const STEP_SHARE: f64 = 0.02;

/// Rate bounds for AIMD, in requests per second.
const MIN_RATE: f64 = 0.1;
const START_RATE: f64 = 10.0;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Quota {
    /// Learning (first contact, or the quota window expired): at most `window` attempts out
    /// at once. The window doubles each round trip up to `SLOW_START_END`, then grows by one
    /// each round trip, like TCP's slow start and congestion avoidance, so the round that meets
    /// an unknown quota overshoots it by a few requests, not by the quota. Ends on quota headers (`Known`), a refusal (the rate
    /// is learned by AIMD) or `LEARNED` answers (`Unmetered`).
    Learning {
        window: u32,
        in_flight: u32,
        /// Answers since the window last grew.
        acked: u32,
        /// The last send or answer: a server silent for `PROBE_HOLD` stops the learning.
        since: Instant,
    },
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
    /// The last AIMD change, and the additive step after a decrease (requests/s per second).
    last_change: Option<Instant>,
    step: f64,
    /// 95% of the rate we were refused at: late acceptances never raise the rate past it.
    wave_cap: f64,
    /// Successful answers per second, the server's capacity as we saw it.
    accepted: SendRate,
    origin: Instant,
    /// The host has a configured limit: trust it over successful answers' quota headers.
    configured: bool,
    /// Our own sends per second (this second and the last), to start AIMD from the rate we
    /// were at. Integer counts: this runs on every send.
    sends: SendRate,
}

impl Quota {
    fn learning(now: Instant) -> Self {
        Quota::Learning {
            window: 1,
            in_flight: 0,
            acked: 0,
            since: now,
        }
    }
}

impl ServerPacing {
    pub(crate) fn new(now: Instant, configured_rate: Option<f64>) -> Self {
        let quota = if configured_rate.is_some() {
            Quota::Unmetered
        } else {
            Quota::learning(now)
        };
        ServerPacing {
            quota,
            configured: configured_rate.is_some(),
            rate: None,
            ceiling: configured_rate,
            last_decrease: None,
            last_change: None,
            step: 0.0,
            wave_cap: 0.0,
            accepted: SendRate::default(),
            origin: now,
            sends: SendRate::default(),
        }
    }

    /// Skip learning: the host is known to send no quota headers (benches, tests).
    #[cfg(any(test, feature = "bench"))]
    pub(crate) fn assume_unmetered(&mut self) {
        self.quota = Quota::Unmetered;
    }

    /// May an attempt go at `now`?
    pub(crate) fn gate(&mut self, now: Instant) -> Gate {
        if let Quota::Known { reset_at, .. } = self.quota
            && now >= reset_at
        {
            self.quota = if self.configured {
                Quota::Unmetered
            } else {
                Quota::learning(now)
            };
        }
        match self.quota {
            Quota::Unmetered => Gate::Open { probe: false },
            Quota::Learning {
                window, in_flight, ..
            } if in_flight < window => Gate::Open { probe: true },
            Quota::Learning { since, .. } => {
                if now >= since + PROBE_HOLD {
                    // the probes are slow: stop holding the others for them
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
            Quota::Learning {
                in_flight, since, ..
            } if probe => {
                *in_flight += 1;
                *since = now;
            }
            _ => {}
        }
        self.sends.count(now_ns);
    }

    /// A probe ended without an answer (error, cancellation): let the next one go.
    pub(crate) fn release_probe(&mut self) {
        if let Quota::Learning { in_flight, .. } = &mut self.quota {
            *in_flight = in_flight.saturating_sub(1);
        }
    }

    #[cfg(test)]
    pub(crate) fn observe(
        &mut self,
        now: Instant,
        status: u16,
        hint: &ServerHint,
    ) -> Option<RateChange> {
        self.observe_sent(now, now, true, status, hint)
    }

    /// Read an answer to an attempt sent at `sent_at`. Returns the change of the AIMD rate, if
    /// any, for the caller to report. Refusals of attempts sent before the last decrease are
    /// the same signal as the one that caused it (as TCP counts one loss per window): they do
    /// not lower the rate again.
    pub(crate) fn observe_sent(
        &mut self,
        now: Instant,
        sent_at: Instant,
        probe: bool,
        status: u16,
        hint: &ServerHint,
    ) -> Option<RateChange> {
        if probe {
            self.release_probe();
        }
        let refused = status == 429 || status == 403;
        if !self.configured || (refused && hint.remaining == Some(0)) {
            self.read_quota(now, status, hint);
        }
        if (200..300).contains(&status) {
            self.accepted.count(self.nanos(now));
            if self.last_decrease.is_some_and(|last| sent_at <= last) {
                return self.late_acceptance();
            }
            return self.increase(now);
        }
        // A refusal without a quota to read teaches a rate, Retry-After or not: the host
        // reopening at the Retry-After instant must not release the whole queue at once.
        if status == 429
            && hint.remaining.is_none()
            && self.last_decrease.is_none_or(|last| sent_at > last)
        {
            if hint.retry_after.is_some() && self.accepted.per_second().is_none() {
                // nothing accepted to learn a rate from: the closure is the whole signal
                return None;
            }
            return self.decrease(now);
        }
        None
    }

    fn read_quota(&mut self, now: Instant, status: u16, hint: &ServerHint) {
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
                if let Quota::Learning {
                    window,
                    acked,
                    since,
                    ..
                } = &mut self.quota
                {
                    *since = now;
                    if status == 429 && self.accepted.per_second().is_some() {
                        // refused after some were accepted: AIMD takes over from that rate
                        self.quota = Quota::Unmetered;
                    } else if status == 429 {
                        // refused before anything was accepted: start learning again
                        *window = 1;
                    } else if *window + 1 >= LEARNED {
                        self.quota = Quota::Unmetered;
                    } else if *window < SLOW_START_END {
                        *window += 1; // doubles each round trip
                    } else {
                        // one more each round trip: the overshoot in the round that meets the
                        // quota is at most one window
                        *acked += 1;
                        if *acked >= *window {
                            *window += 1;
                            *acked = 0;
                        }
                    }
                }
            }
        }
    }

    fn decrease(&mut self, now: Instant) -> Option<RateChange> {
        let current = self.rate.unwrap_or_else(|| {
            // the rate we were actually sending at, never above the configured one
            match (self.sends.per_second(), self.ceiling) {
                (Some(observed), Some(ceiling)) => observed.min(ceiling),
                (observed, ceiling) => observed.or(ceiling).unwrap_or(START_RATE),
            }
        });
        // one decrease per interval: a burst of refusals from one window is one signal
        if let (Some(last), Some(_)) = (self.last_decrease, self.rate)
            && now.saturating_duration_since(last) < Duration::from_secs_f64(1.0 / current)
        {
            return None;
        }
        if self.ceiling.is_none() {
            self.ceiling = Some(current);
        }
        // Drop to a little under what the server accepted in the last second: a burst that met
        // a 10-per-second quota learns "10 per second" from one refusal, instead of halving its
        // way down from 60 while the queue keeps getting refused. Nothing accepted: halve.
        let cap = current * ACCEPTED_SHARE;
        let rate = match self.accepted.per_second() {
            Some(accepted) => (accepted * ACCEPTED_SHARE).min(cap),
            None => current / 2.0,
        }
        .max(MIN_RATE);
        self.rate = Some(rate);
        self.wave_cap = cap;
        self.step = rate * STEP_SHARE;
        self.last_change = Some(now);
        self.last_decrease = Some(now);
        Some(RateChange {
            from: current,
            to: rate,
        })
    }

    /// An acceptance from the wave that was refused arrives after the refusal: the server took
    /// more than we had counted when we lowered the rate, so raise it to match (never above
    /// the rate we were refused at).
    fn late_acceptance(&mut self) -> Option<RateChange> {
        let rate = self.rate?;
        let accepted = self.accepted.per_second()? * ACCEPTED_SHARE;
        let next = accepted.min(self.wave_cap);
        (next > rate).then(|| {
            self.rate = Some(next);
            RateChange {
                from: rate,
                to: next,
            }
        })
    }

    /// Additive increase: a fiftieth of the lowered rate, at most once a second, so a rate
    /// lowered to the server's quota probes above it gently instead of storming back.
    fn increase(&mut self, now: Instant) -> Option<RateChange> {
        let rate = self.rate?;
        if self
            .last_change
            .is_some_and(|last| now.saturating_duration_since(last) < Duration::from_secs(1))
        {
            return None;
        }
        let ceiling = self.ceiling.unwrap_or(START_RATE);
        let next = rate + self.step;
        self.rate = (next < ceiling).then_some(next);
        self.last_change = Some(now);
        Some(RateChange {
            from: rate,
            to: next.min(ceiling),
        })
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The AIMD rate when throttled, for snapshots.
    pub(crate) fn adaptive_rate(&self) -> Option<f64> {
        self.rate
    }

    /// The instant the spent quota resets, if nothing is left at `now`.
    pub(crate) fn closed_until(&self, now: Instant) -> Option<Instant> {
        match self.quota {
            Quota::Known {
                remaining: 0,
                reset_at,
                ..
            } if now < reset_at => Some(reset_at),
            _ => None,
        }
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
                Quota::Learning { in_flight, .. } => in_flight == 0,
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
    fn a_host_without_quota_headers_is_learned_in_slow_start_then_not_gated() {
        let t0 = Instant::now();
        let mut p = ServerPacing::new(t0, None);
        let mut round_trips = 0;
        let mut sent = 0;
        while p.gate(t0) != (Gate::Open { probe: false }) {
            // send what the window allows, then answer them all: one round trip
            let mut out = 0;
            while p.gate(t0) == (Gate::Open { probe: true }) {
                p.on_send(t0, 0, 1, true);
                out += 1;
            }
            for _ in 0..out {
                p.observe(t0, 200, &ServerHint::default());
            }
            sent += out;
            round_trips += 1;
            assert!(round_trips < 100, "learning must end");
        }
        // windows 1, 2, 4 (doubling), then 5, 6, ..., 31: the first answer of that round ends it
        assert_eq!(
            round_trips, 30,
            "doubling to 4, then one more each round trip"
        );
        assert_eq!(sent, 1 + 2 + (4..=31).sum::<u32>());
        assert!(p.is_idle(t0));
    }

    #[test]
    fn a_retry_after_before_anything_was_accepted_restarts_learning_without_a_rate() {
        let t0 = Instant::now();
        let mut p = ServerPacing::new(t0, None);
        p.on_send(t0, 0, 1, true);
        let refusal = ServerHint {
            retry_after: Some(S),
            ..ServerHint::default()
        };
        assert!(
            p.observe(t0, 429, &refusal).is_none(),
            "no rate from nothing accepted"
        );
        assert_eq!(
            p.gate(t0),
            Gate::Open { probe: true },
            "one probe at a time again"
        );
        p.on_send(t0, 0, 1, true);
        assert!(matches!(p.gate(t0), Gate::Hold(_)), "window 1");
    }

    #[test]
    fn a_refusal_ends_learning_with_a_rate() {
        let t0 = Instant::now();
        let mut p = ServerPacing::new(t0, None);
        p.on_send(t0, 0, 1, true);
        p.observe(t0, 200, &ServerHint::default());
        for _ in 0..2 {
            p.on_send(t0, 0, 1, true);
        }
        assert!(matches!(p.gate(t0), Gate::Hold(_)), "window 2 is full");
        assert!(
            p.observe(t0, 429, &ServerHint::default()).is_some(),
            "the rate is learned"
        );
        assert_eq!(
            p.gate(t0),
            Gate::Open { probe: false },
            "AIMD paces from here"
        );
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
        assert!(
            p.observe(t0 + S / 2, 200, &ServerHint::default()).is_none(),
            "at most one increase a second"
        );
        let mut seconds = 0;
        while p.adaptive_rate().is_some() {
            seconds += 1;
            p.observe(t0 + S * seconds, 200, &ServerHint::default());
            assert!(seconds < 100, "the rate must recover");
        }
        assert_eq!(seconds, 50, "4/s grows back to 8/s by 0.08/s each second");
    }

    #[test]
    fn refusals_of_attempts_sent_before_a_decrease_do_not_lower_the_rate_again() {
        let t0 = Instant::now();
        let mut p = ServerPacing::new(t0, Some(8.0));
        p.observe_sent(t0 + S, t0, false, 429, &ServerHint::default())
            .expect("the first refusal lowers the rate");
        assert!(
            p.observe_sent(t0 + 2 * S, t0, false, 429, &ServerHint::default())
                .is_none(),
            "sent before the decrease: the same signal"
        );
        assert!(
            p.observe_sent(t0 + 3 * S, t0 + 2 * S, false, 429, &ServerHint::default())
                .is_some(),
            "sent after it: a new signal"
        );
    }

    #[test]
    fn a_refused_burst_learns_the_rate_the_server_accepted() {
        let t0 = Instant::now();
        let mut p = ServerPacing::new(t0, None);
        // 60 sent at once, 10 accepted, then refusals with Retry-After
        for _ in 0..60 {
            p.on_send(t0, 0, 1, false);
        }
        for _ in 0..10 {
            p.observe(t0, 200, &ServerHint::default());
        }
        let refusal = ServerHint {
            retry_after: Some(S),
            ..ServerHint::default()
        };
        let change = p
            .observe(t0, 429, &refusal)
            .expect("the refusal lowers the rate");
        assert_eq!(
            (change.from, change.to),
            (60.0, 9.5),
            "95% of the 10 accepted"
        );
    }

    #[test]
    fn acceptances_of_the_refused_wave_that_arrive_late_raise_the_rate_to_match() {
        let t0 = Instant::now();
        let mut p = ServerPacing::new(t0, None);
        for _ in 0..60 {
            p.on_send(t0, 0, 1, false);
        }
        for _ in 0..6 {
            p.observe(t0, 200, &ServerHint::default());
        }
        let change = p
            .observe(t0, 429, &ServerHint::default())
            .expect("rate drops");
        assert!(
            (change.to - 5.7).abs() < 1e-9,
            "95% of the 6 accepted so far, got {}",
            change.to
        );
        for _ in 0..4 {
            p.observe_sent(t0 + S / 10, t0, false, 200, &ServerHint::default());
        }
        let rate = p.adaptive_rate().expect("still throttled");
        assert!(
            (rate - 9.5).abs() < 1e-9,
            "10 accepted in all: 9.5/s, got {rate}"
        );
    }
}
