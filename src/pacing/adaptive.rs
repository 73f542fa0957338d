//! The rate a scope adapts to after refusals that say nothing (a 429 without a quota to read,
//! with or without `Retry-After`), bounded by the configured limit.
//!
//! The algorithm, chosen on the throughput harness (`cargo run --release --example throughput`):
//!
//! - **A refusal is read against what the server accepted.** When the server accepted clearly
//!   less than we sent over the last second, its quota is what it accepted: the rate drops to
//!   95% of that and holds there. When it accepted about what we sent (or we have not been
//!   sending long enough to tell, and it is not a first-second burst that filled a window,
//!   below), the refusal says our timing was off, not that the quota is lower: the rate drops
//!   to 70% and climbs back to where it was within two seconds; on a configured scope, where
//!   the user's word says the quota is the limit, it dips to 85% and climbs back within one
//!   second (a stray refusal costs under 1% of the next ten seconds, where 70% for two
//!   seconds cost 3%). A second refusal within ten seconds of the first
//!   lowers where it climbs back to by 5%, and so on: a quota just below the level is found in
//!   a few refusals, and a refusal that was only jitter costs 5% until the held level probes
//!   upward again. On a configured scope, that walk stops at 85.5% of the limit (95% of 90%):
//!   a quota lower still shows in what the server accepted, and refusals that are only jitter
//!   (a busy machine delays one request past the margin now and then, whatever the rate) must
//!   not walk the rate down to half the limit.
//! - **Refusals in a row pause the scope.** When nothing gets through between two refusals, the
//!   server is counting a window we overran: the scope cools down 100 ms, then 200 ms, 400 ms...
//!   (up to 10 s) while refusals keep coming, so the window drains instead of being refused
//!   request after request. A send after the pause for a filled window (below), refused
//!   before a sliding count would have forgotten the burst, says the server counts refused
//!   requests too (HAProxy's stick tables): the scope pauses until then, instead of feeding
//!   it.
//! - **Never below half of a configured limit.** A refusal on a scope the user configured means
//!   our timing was off, not that the quota is a fiftieth of the user's word.
//! - **With nothing configured, a rate learned from a few answers is a guess** (fewer than five
//!   accepted before the refusal): it starts at 95% of what was accepted (never below 5 per
//!   second) and grows, tripling each second, until the next refusal, which tells the real
//!   rate: it settles 20% below it. The rate that was refused is up to a quarter above the
//!   quota (the ramp grows between two sends, and the send after a raise still goes at the
//!   spacing before it), so settling 15% below it could stay above the quota and be refused
//!   again (docs/measurements.md has the leaky-bucket runs). Five or more accepted at once are
//!   a window's worth: held, after a pause as long as that window (a burst that filled it is
//!   refused until it passes); so is a refusal of a guess made from the first few answers of a
//!   burst, once the rest of them are in.
//! - **With nothing configured, a full window never pins the rate low.** Refusals in a row
//!   say the server's window is full, not that its rate is below what it accepted a moment
//!   ago; a burst's refusal may come before the rest of its acceptances. A rate held at what
//!   such a window showed climbs (over two seconds, once the window has drained) to 95% of
//!   the most the server accepted in a second, from the first of those refusals to a second
//!   after the last (a first refusal that finds nothing accepted in the last second, as after
//!   a pause against a limiter that counts refused requests too, keeps the best second before
//!   it).
//! - What the server accepted is read as its rate only when ours did not ramp over the last
//!   second (and, when held, has held for a whole second).
//! - A held rate probes upward again (2% of it per second) after 30 s without refusal, so a
//!   quota that grows back is found; a configured limit stays the upper bound.
//!
//! Refusals of attempts sent before the last decrease are the same signal as the one that
//! caused it (TCP counts one loss per window) and change nothing.

use std::num::NonZeroU32;
use std::time::Duration;

use tokio::time::Instant;

use crate::window::Window;

/// The window over which "what the server accepted" and "what we sent" are counted.
const SAMPLE: Duration = Duration::from_secs(1);
/// The server accepted "clearly less than we sent" below this share of it.
const ACCEPTED_CLEARLY_LESS: f64 = 0.9;
/// Settle this far below a quota found by refusals.
const BELOW_QUOTA: f64 = 0.95;
/// A refusal that is no evidence of a lower quota takes the rate down to this share...
const BACK_OFF: f64 = 0.7;
/// ...which climbs back to where it was over this long.
const RECOVERY: Duration = Duration::from_secs(2);
/// On a configured scope the same refusal dips to this share, and climbs back over this long.
const DIP: f64 = 0.85;
const DIP_RECOVERY: Duration = Duration::from_secs(1);
/// A configured scope sending below this share of its limit is paced by its caller's demand,
/// not by the limit: a refusal is read against what it sent.
const BELOW_DEMAND: f64 = 0.75;
/// A second refusal this soon after a decrease means the quota is just below the refused rate.
const RECENT: Duration = Duration::from_secs(10);
/// A held rate probes upward after this long without refusal...
const PROBE_AFTER: Duration = Duration::from_secs(30);
/// ...by this share of itself per second.
const PROBE_SHARE: f64 = 0.02;
/// A guessed rate (nothing configured, few answers) grows by this factor per second...
const RAMP_PER_SECOND: f64 = 3.0;
/// ...and settles this far below the rate at which the next refusal came, once it has grown
/// past the guess by this factor (a refusal before that is still the first burst's).
const RAMP_SETTLE: f64 = 0.8;
const RAMP_GROWN: f64 = 1.2;
/// Fewer answers than this accepted before a refusal are a guess, not a window's worth.
const MIN_SAMPLE: f64 = 5.0;
/// Refusals in a row (nothing accepted between them) pause the scope: this long after the
/// second, doubling with each one after it, up to `MAX_PAUSE`. A window the server counts
/// (a strict sliding window we overran) must drain before anything gets through again. On a
/// configured scope the first pause is a quarter of the configured window, if longer: the
/// user's word on how long the server's window is (a per-minute quota drains in about three
/// refusals, not eight).
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const FIRST_PAUSE_SHARE_OF_WINDOW: u32 = 4;
const MAX_PAUSE: Duration = Duration::from_secs(10);
/// Rate bounds with nothing configured, in units per second.
const MIN_RATE: f64 = 0.1;
const START_RATE: f64 = 10.0;
const MAX_RATE: f64 = 1e6;

/// How the throttled rate moves on successes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Climbing back to `target` by `per_second`.
    Recover { target: f64, per_second: f64 },
    /// At the quota we found: hold until `probe_at`, then grow slowly.
    Hold { probe_at: Instant },
    /// A guess, made at `from`: grow by `RAMP_PER_SECOND` until the next refusal.
    Ramp { from: f64 },
}

/// A change of the adaptive rate, in units per second (`to`: `None` when no longer throttled).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RateChange {
    pub(crate) from: f64,
    pub(crate) to: Option<f64>,
    /// Refusals keep coming: cool the scope down this long.
    pub(crate) pause: Option<Duration>,
}

/// One scope's adaptive rate.
#[derive(Debug, Clone)]
pub(crate) struct AdaptiveRate {
    /// What the user configured for the scope, if anything.
    configured: Option<Configured>,
    /// Successful answers, and our sends, over the last `SAMPLE`.
    accepted: Window,
    sent: Window,
    /// When we started sending (nanoseconds on the scope's clock): a sample shorter than
    /// `SAMPLE` is not a rate.
    first_send: Option<u64>,
    /// What refusals taught, from the first one on. Boxed: most scopes are never refused, and
    /// a host record stays small.
    learned: Option<Box<Learned>>,
}

/// What a scope's configured limit says to its adaptive rate.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Configured {
    /// The limit's rate (safety margin included): the upper bound, and half of it the floor.
    ceiling: f64,
    /// The first pause of refusals in a row (see [`FIRST_PAUSE`]), in microseconds (at most
    /// [`MAX_PAUSE`]; never zero, which leaves `None` a spare value: a host record stays small).
    first_pause_micros: NonZeroU32,
}

/// What a scope's refusals taught its adaptive rate.
#[derive(Debug, Clone, Copy)]
struct Learned {
    /// The throttled rate; `None`: not throttled (any more).
    rate: Option<f64>,
    phase: Phase,
    last_update: Instant,
    last_decrease: Instant,
    /// Refusals counted since the last acceptance.
    refusals_in_a_row: u32,
    /// The most the server accepted in a second (a `SAMPLE`) around the last refusals: since
    /// the first of those in a row, and in the second after the last.
    best_accepted: f64,
    /// With nothing configured, a rate held at what a full window showed (refusals in a row,
    /// a burst that filled it) climbs to 95% of `best_accepted`: answers still on their way
    /// when the refusal came count too.
    climbs_to_best: bool,
    /// After a burst that filled a window: when a limiter that counts refused requests in a
    /// sliding window has forgotten them (see [`forgotten_at`]). A refusal of a send after the
    /// pause, before then, says the server is one: the scope pauses until then. Successes do
    /// not clear it (the burst's own acceptances may be answered after its first refusal).
    forgotten_at: Option<Instant>,
}

impl AdaptiveRate {
    /// The adaptive rate of a scope paced by `limit`: bounded by the rate the limit's schedule
    /// sustains, margins included (`None`: nothing configured).
    pub(crate) fn for_limit(limit: Option<&crate::limit::Limit>) -> Self {
        Self::configured(limit.map(|l| Configured {
            ceiling: 1e9 / crate::pacing::gcra::sustained_interval(l) as f64,
            first_pause_micros: micros(
                (l.window() / FIRST_PAUSE_SHARE_OF_WINDOW).clamp(FIRST_PAUSE, MAX_PAUSE),
            ),
        }))
    }

    /// True when [`AdaptiveRate::for_limit`] of `limit` would bound this rate the same way.
    pub(crate) fn is_for(&self, limit: Option<&crate::limit::Limit>) -> bool {
        self.configured == Self::for_limit(limit).configured
    }

    fn configured(configured: Option<Configured>) -> Self {
        AdaptiveRate {
            configured,
            accepted: Window::new(SAMPLE),
            sent: Window::new(SAMPLE),
            first_send: None,
            learned: None,
        }
    }

    /// The configured limit's rate, the upper bound, if any.
    fn ceiling(&self) -> Option<f64> {
        self.configured.map(|c| c.ceiling)
    }

    /// `cost` units were sent at `now_ns`.
    pub(crate) fn on_send(&mut self, now_ns: u64, cost: u32) {
        self.sent.add(now_ns, cost);
        self.first_send.get_or_insert(now_ns);
    }

    /// The server accepted something in the last second.
    pub(crate) fn accepted_any(&mut self, now_ns: u64) -> bool {
        !self.accepted.is_empty(now_ns)
    }

    /// The spacing the rate asks for (nanoseconds per unit), when throttled.
    pub(crate) fn interval(&self) -> Option<u64> {
        self.rate().map(|r| (1e9 / r) as u64)
    }

    /// The throttled rate, for snapshots.
    pub(crate) fn rate(&self) -> Option<f64> {
        self.learned.as_ref()?.rate
    }

    /// A successful answer at `now` to an attempt sent at `sent_at`.
    pub(crate) fn on_success(
        &mut self,
        now: Instant,
        now_ns: u64,
        cost: u32,
    ) -> Option<RateChange> {
        self.accepted.add(now_ns, cost);
        let bound = self.ceiling().unwrap_or(MAX_RATE);
        let learned = self.learned.as_deref_mut()?;
        learned.refusals_in_a_row = 0;
        let rate = learned.rate?;
        if learned.climbs_to_best {
            if now < learned.last_decrease + SAMPLE {
                let accepted = f64::from(self.accepted.count(now_ns));
                learned.best_accepted = learned.best_accepted.max(accepted);
            }
            learned.phase = climb_to(learned.phase, rate, BELOW_QUOTA * learned.best_accepted);
        }
        let dt = now
            .saturating_duration_since(learned.last_update)
            .as_secs_f64();
        learned.last_update = now;
        let next = match learned.phase {
            Phase::Recover { target, per_second } => {
                let next = rate + per_second * dt;
                if next >= target {
                    learned.phase = Phase::Hold {
                        probe_at: now + PROBE_AFTER,
                    };
                    target
                } else {
                    next
                }
            }
            Phase::Hold { probe_at } if now >= probe_at => rate * (1.0 + PROBE_SHARE * dt),
            Phase::Hold { .. } => rate,
            Phase::Ramp { .. } => rate * RAMP_PER_SECOND.powf(dt.min(10.0)),
        };
        let next = (next != rate).then_some(next)?;
        learned.rate = (next < bound).then_some(next);
        Some(RateChange {
            from: rate,
            to: learned.rate,
            pause: None,
        })
    }

    /// A refusal that said nothing, at `now`, of an attempt sent at `sent_at`.
    pub(crate) fn on_refusal(
        &mut self,
        now: Instant,
        now_ns: u64,
        sent_at: Instant,
    ) -> Option<RateChange> {
        if self
            .learned
            .as_ref()
            .is_some_and(|learned| sent_at <= learned.last_decrease)
        {
            return None; // sent before the last decrease: the same signal
        }
        let sent = f64::from(self.sent.count(now_ns));
        let accepted = f64::from(self.accepted.count(now_ns));
        let sampled_long = self
            .first_send
            .is_some_and(|first| now_ns.saturating_sub(first) >= SAMPLE.as_nanos() as u64);
        // the rate we were refused at: the configured one, unless we have been sending
        // clearly slower than it for a while (the caller's demand, not the limit, paced us)
        let current = self.rate().unwrap_or(match self.ceiling() {
            Some(ceiling) if sampled_long && sent < BELOW_DEMAND * ceiling => {
                sent.max(ceiling / 2.0)
            }
            Some(ceiling) => ceiling,
            None if sent > 0.0 => sent,
            None => START_RATE,
        });
        let (rate, phase, pause) = self.lower(now, current, sent, accepted, sampled_long);
        let in_a_row_before = self.learned.as_ref().map_or(0, |l| l.refusals_in_a_row);
        // a first refusal when nothing was accepted for a second (after a pause) keeps the
        // best second it follows
        let best_accepted = match self.learned.as_deref() {
            Some(l) if in_a_row_before > 0 || accepted == 0.0 => l.best_accepted.max(accepted),
            _ => accepted,
        };
        let floor = self.ceiling().map_or(MIN_RATE, |c| c / 2.0);
        let top = self.ceiling().unwrap_or(MAX_RATE).max(floor);
        let rate = rate.clamp(floor, top);
        let recovery = match self.ceiling() {
            Some(_) => DIP_RECOVERY,
            None => RECOVERY,
        };
        let phase = match phase {
            Phase::Recover { target, .. } => {
                let target = target.clamp(rate, top);
                Phase::Recover {
                    target,
                    per_second: (target - rate) / recovery.as_secs_f64(),
                }
            }
            other => other,
        };
        let refusals_in_a_row = in_a_row_before + 1;
        let still_counted = self.still_counted(now);
        let learned = Learned {
            rate: Some(rate),
            phase,
            last_update: now,
            last_decrease: now,
            refusals_in_a_row,
            best_accepted,
            climbs_to_best: self.ceiling().is_none() && (in_a_row_before > 0 || pause.is_some()),
            forgotten_at: pause.map(|window| forgotten_at(now, window, sent, accepted)),
        };
        match self.learned.as_deref_mut() {
            Some(known) => *known = learned,
            None => self.learned = Some(Box::new(learned)),
        }
        Some(RateChange {
            from: current,
            to: Some(rate),
            pause: pause
                .max(self.pause_in_a_row(refusals_in_a_row))
                .max(still_counted),
        })
    }

    /// A refusal at `now` once the pause for a filled window ended (a send after it: the
    /// burst's own refusals are not new signals), before a sliding count forgets the burst:
    /// the server counts refused requests too, and is still counting the burst's. The wait
    /// until it has forgotten them.
    fn still_counted(&self, now: Instant) -> Option<Duration> {
        let forgotten_at = self.learned.as_deref()?.forgotten_at?;
        (now < forgotten_at).then(|| forgotten_at - now)
    }

    /// The pause after `refusals_in_a_row` refusals with nothing accepted between them.
    fn pause_in_a_row(&self, refusals_in_a_row: u32) -> Option<Duration> {
        (refusals_in_a_row >= 2).then(|| {
            let doublings = (refusals_in_a_row - 2).min(16);
            let first = self.configured.map_or(FIRST_PAUSE, |c| {
                Duration::from_micros(c.first_pause_micros.get().into())
            });
            (first * (1 << doublings)).min(MAX_PAUSE)
        })
    }

    /// The decision table of a refusal at `current` units/s: the new rate, how it moves from
    /// there, and a pause if one is due (targets and rates are bounded by the caller).
    fn lower(
        &self,
        now: Instant,
        current: f64,
        sent: f64,
        accepted: f64,
        sampled_long: bool,
    ) -> (f64, Phase, Option<Duration>) {
        let learned = self.learned.as_deref();
        let since_decrease = learned.map(|l| now.saturating_duration_since(l.last_decrease));
        let recent = since_decrease.is_some_and(|since| since < RECENT);
        // What was accepted is a rate only if ours did not ramp over the sample (a guess that
        // grows understates it), and, held, once it has held for a whole sample. With nothing
        // configured, a burst that met a window learns the window from what it accepted,
        // however short the sample; a configured scope wants a full second of it.
        let steady = match learned.and_then(|l| l.rate.map(|_| l.phase)) {
            None | Some(Phase::Recover { .. }) => true,
            Some(Phase::Ramp { .. }) => false,
            Some(Phase::Hold { .. }) => since_decrease.is_none_or(|since| since >= SAMPLE),
        };
        let accepted_less = steady
            && (sampled_long || self.ceiling().is_none())
            && accepted > 0.0
            && accepted < ACCEPTED_CLEARLY_LESS * sent;
        // the level we were recovering to, or holding at
        let level = match learned.map(|l| l.phase) {
            Some(Phase::Recover { target, .. }) => target,
            _ => current,
        };
        if self.burst_filled_window(sent, accepted, sampled_long) {
            return self.filled_window(now, accepted);
        }
        if let Some(&Learned {
            rate: Some(rate),
            phase: Phase::Ramp { from },
            ..
        }) = learned
        {
            return if rate > from {
                // a guess grew past the quota: it lies between where we are and a little below
                (current * RAMP_SETTLE, self.hold(now), None)
            } else {
                // refused at the guess itself: guess lower
                let lower = current * BACK_OFF;
                (lower, Phase::Ramp { from: lower }, None)
            };
        }
        if accepted_less {
            // the server took clearly less than we sent: its rate is what it took
            let rate = accepted * BELOW_QUOTA;
            return if sampled_long {
                (rate, self.hold(now), None)
            } else if accepted >= MIN_SAMPLE {
                self.filled_window(now, accepted)
            } else {
                // a few answers: a guess, from no lower than half the start rate
                let rate = rate.max(START_RATE / 2.0);
                (rate, Phase::Ramp { from: rate }, None)
            };
        }
        self.timing_off(now, current, level, recent)
    }

    /// A refusal with no evidence of a lower quota: our timing was off. Back off and climb back
    /// to `level` (the one recovered to or held at); a second refusal soon after (`recent`)
    /// lowers where we climb back to, 5% each time, so a quota just below the level is found in
    /// a few refusals.
    fn timing_off(
        &self,
        now: Instant,
        current: f64,
        level: f64,
        recent: bool,
    ) -> (f64, Phase, Option<Duration>) {
        let learned = self.learned.as_deref();
        let target = match self.ceiling() {
            // a quota clearly below the configured limit shows in what the server accepted;
            // lowering the level finds the ones just below it, and no lower (refusals that are
            // only jitter would walk it down to half the limit)
            Some(ceiling) if recent => {
                (level * BELOW_QUOTA).max(ceiling * ACCEPTED_CLEARLY_LESS * BELOW_QUOTA)
            }
            _ if recent => level * BELOW_QUOTA,
            _ => level,
        };
        let recover = Phase::Recover {
            target,
            per_second: 0.0,
        };
        if recent && learned.is_some_and(|l| l.refusals_in_a_row > 0) {
            // refused again with nothing accepted in between: back off and hold (and pause);
            // on a configured scope the half-limit floor bounds it (climbing back instead would
            // be refused again and again while the server's window is full)
            return (current * BACK_OFF, self.hold(now), None);
        }
        let rate = match self.ceiling() {
            // a dip from the level, not from the dip before it: refusals that keep coming
            // while it recovers are the same jitter, not a lower quota
            Some(_) => (target * DIP).min(current),
            None => current * BACK_OFF,
        };
        (rate, recover, None)
    }

    /// With nothing configured, a burst filled the server's window: the server accepted a
    /// window's worth, less than we sent, in a sample too short to be a rate. A guess
    /// made from its first few answers, refused before it grew, is read again from all of
    /// them.
    fn burst_filled_window(&self, sent: f64, accepted: f64, sampled_long: bool) -> bool {
        let grown_guess = self
            .learned
            .as_deref()
            .is_some_and(|l| match (l.rate, l.phase) {
                (Some(rate), Phase::Ramp { from }) => rate > from * RAMP_GROWN,
                _ => false,
            });
        // any refusal: first contact keeps the overshoot of a burst small (two scouts), so
        // the server may have accepted more than 90% of it
        self.ceiling().is_none()
            && !grown_guess
            && !sampled_long
            && accepted >= MIN_SAMPLE
            && accepted < sent
    }

    /// A burst of which the server accepted `accepted` filled its window: hold at 95% of
    /// that, after letting the window pass.
    fn filled_window(&self, now: Instant, accepted: f64) -> (f64, Phase, Option<Duration>) {
        let rate = accepted * BELOW_QUOTA;
        let window = Duration::from_secs_f64(accepted / rate.max(MIN_RATE));
        (rate, self.hold(now), Some(window.min(MAX_PAUSE)))
    }

    fn hold(&self, now: Instant) -> Phase {
        Phase::Hold {
            probe_at: now + PROBE_AFTER,
        }
    }
}

/// When a limiter that counts refused requests has forgotten the `sent` of a burst that filled
/// its window of `accepted` (paused for `window` from `now`): a sliding window counter
/// (HAProxy's `http_req_rate`, Cloudflare's published algorithm) weighs the last window's
/// count by the share of it still in view, so the burst leaves room for one more only
/// `1 - (accepted - 1) / sent` of a window into the next one.
fn forgotten_at(now: Instant, window: Duration, sent: f64, accepted: f64) -> Instant {
    let share = 1.0 - (accepted - 1.0) / sent.max(accepted);
    now + window.mul_f64(1.0 + share.clamp(0.0, 1.0))
}

/// `phase` at `rate`, climbing (over [`RECOVERY`]) to `reach` if that is above where it goes.
fn climb_to(phase: Phase, rate: f64, reach: f64) -> Phase {
    let climb = Phase::Recover {
        target: reach,
        per_second: (reach - rate) / RECOVERY.as_secs_f64(),
    };
    match phase {
        Phase::Hold { .. } if reach > rate => climb,
        Phase::Recover { target, .. } if reach > target => climb,
        other => other,
    }
}

/// A pause in whole microseconds (at least one; a pause is at most [`MAX_PAUSE`]).
fn micros(d: Duration) -> NonZeroU32 {
    NonZeroU32::new(u32::try_from(d.as_micros()).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    /// Drive a rate: `per_second` sends (and their answers) for `secs` seconds from `t0`.
    struct Drive {
        t0: Instant,
        a: AdaptiveRate,
    }

    impl Drive {
        fn new(ceiling: Option<f64>) -> Self {
            let t0 = Instant::now();
            Drive {
                t0,
                a: AdaptiveRate::configured(ceiling.map(|ceiling| Configured {
                    ceiling,
                    first_pause_micros: micros(FIRST_PAUSE),
                })),
            }
        }
        fn ns(&self, at: Instant) -> u64 {
            (at - self.t0).as_nanos() as u64
        }
        fn send_and_accept(&mut self, at: Instant) {
            let ns = self.ns(at);
            self.a.on_send(ns, 1);
            self.a.on_success(at, ns, 1);
        }
        fn refuse(&mut self, at: Instant) -> Option<RateChange> {
            let ns = self.ns(at);
            self.a.on_send(ns, 1);
            self.a.on_refusal(at, ns, at)
        }
        /// Send at the rate in force (or `unthrottled` per second) for `secs`, all accepted.
        fn run(&mut self, from: Instant, secs: f64, unthrottled: f64) -> Instant {
            let mut t = from;
            let end = from + Duration::from_secs_f64(secs);
            while t < end {
                self.send_and_accept(t);
                let rate = self.a.rate().unwrap_or(unthrottled);
                t += Duration::from_secs_f64(1.0 / rate);
            }
            t
        }
    }

    #[test]
    fn a_stray_refusal_on_a_configured_scope_costs_little_and_recovers_within_seconds() {
        let mut d = Drive::new(Some(200.0));
        let t = d.t0;
        d.send_and_accept(t);
        let change = d.refuse(t + Duration::from_millis(5)).expect("lowered");
        assert_eq!(
            change.to,
            Some(170.0),
            "85% of the configured rate, not 1/s"
        );
        assert_eq!(change.pause, None, "one refusal does not pause");
        let end = d.run(t + Duration::from_millis(5), 1.2, 200.0);
        assert_eq!(d.a.rate(), None, "back to the configured limit by {end:?}");
    }

    #[test]
    fn a_configured_scope_never_drops_below_half_its_limit() {
        let mut d = Drive::new(Some(200.0));
        let mut t = d.t0;
        for _ in 0..20 {
            t += Duration::from_millis(100);
            if let Some(change) = d.refuse(t) {
                assert!(change.to.is_some_and(|r| r >= 100.0), "{change:?}");
            }
        }
    }

    #[test]
    fn jitter_refusals_on_a_configured_scope_dip_from_the_level_and_never_walk_it_far() {
        // a refusal every 300 ms, everything else accepted: the server's quota is the limit,
        // what it refuses is one request now and then arriving too close to the one before
        let mut d = Drive::new(Some(200.0));
        let mut t = d.t0;
        let mut lowest = f64::MAX;
        for _ in 0..30 {
            t = d.run(t, 0.3, 200.0);
            if let Some(change) = d.refuse(t) {
                lowest = lowest.min(change.to.expect("throttled"));
            }
        }
        let floor = 200.0 * ACCEPTED_CLEARLY_LESS * BELOW_QUOTA;
        assert!(
            lowest >= floor * DIP - 1e-9,
            "never below a dip from 85.5% of the limit: {lowest}"
        );
        d.run(t, 1.5, 200.0);
        let rate = d.a.rate().expect("recovering to the level");
        assert!(
            rate >= floor - 1e-9,
            "back at the level within a second: {rate}"
        );
    }

    #[test]
    fn a_quota_half_the_configured_one_is_found_and_held() {
        let mut d = Drive::new(Some(200.0));
        // a second at the configured rate, of which the server accepted 100
        let mut t = d.t0;
        for i in 0..200 {
            let ns = d.ns(t);
            d.a.on_send(ns, 1);
            if i % 2 == 0 {
                d.a.on_success(t, ns, 1);
            }
            t += Duration::from_millis(5);
        }
        let change = d.refuse(t).expect("lowered");
        assert_eq!(
            change.to,
            Some(100.0),
            "95 of the 100 accepted, floored at half of 200"
        );
        let end = d.run(t, 20.0, 200.0);
        assert_eq!(d.a.rate(), Some(100.0), "held there (until {end:?})");
    }

    #[test]
    fn a_second_refusal_soon_after_lowers_the_level_by_five_percent() {
        let mut d = Drive::new(Some(200.0));
        d.send_and_accept(d.t0);
        d.refuse(d.t0 + Duration::from_millis(1)).expect("first");
        let t = d.run(d.t0 + Duration::from_millis(1), 1.0, 200.0);
        let change = d.refuse(t).expect("second");
        assert!(change.to.is_some_and(|r| r < 200.0));
        d.run(t, 10.0, 200.0);
        let held = d.a.rate().expect("held below the limit");
        assert!((held - 190.0).abs() < 1e-6, "5% below the level: {held}");
    }

    #[test]
    fn a_refused_burst_learns_the_rate_the_server_accepted() {
        let mut d = Drive::new(None);
        for _ in 0..60 {
            d.a.on_send(0, 1);
        }
        for _ in 0..10 {
            d.a.on_success(d.t0, 0, 1);
        }
        let change = d.a.on_refusal(d.t0, 0, d.t0).expect("lowered");
        assert_eq!(change.to, Some(9.5), "95% of the 10 accepted");
        let pause = change.pause.expect("the burst filled a window");
        assert!((pause.as_secs_f64() - 10.0 / 9.5).abs() < 1e-6, "{pause:?}");
    }

    #[test]
    fn refused_again_after_a_filled_window_the_scope_waits_until_a_sliding_count_forgets() {
        // 14 sent at once, 10 accepted (one answered after the first refusal): the window
        // passes, and the first send after it is refused too (the server counted the 4 refused)
        let mut d = Drive::new(None);
        for _ in 0..13 {
            d.a.on_send(0, 1);
        }
        for _ in 0..9 {
            d.a.on_success(d.t0, 0, 1);
        }
        let filled = d.refuse(d.t0).expect("the burst filled a window");
        let window = filled.pause.expect("paused");
        // one of the burst's acceptances answered after its first refusal
        d.a.on_success(d.t0 + Duration::from_millis(30), 30_000_000, 1);
        let after = d.t0 + window;
        let again = d.refuse(after).expect("refused after the pause");
        // 9 accepted when the burst was refused: room for one more 1 - 8/14 into the next
        let counted = window.mul_f64(2.0 - 8.0 / 14.0);
        let pause = again.pause.expect("paused again");
        assert!(
            (after + pause).duration_since(d.t0 + counted) < Duration::from_millis(1)
                && after + pause >= d.t0 + counted,
            "until the 14 fall to room for one more: {pause:?} after {window:?}"
        );
        let later = d.refuse(after + pause).expect("refused once more");
        assert!(
            later.pause < Some(pause),
            "only the first refusal after the pause reads the burst: {later:?}"
        );
    }

    #[test]
    fn a_guess_from_a_few_answers_ramps_until_the_next_refusal() {
        let mut d = Drive::new(None);
        d.a.on_send(0, 1);
        d.a.on_send(0, 1);
        d.a.on_send(0, 1);
        d.a.on_success(d.t0, 0, 1);
        d.a.on_success(d.t0, 0, 1);
        let change = d.a.on_refusal(d.t0, 0, d.t0).expect("lowered");
        assert_eq!(change.to, Some(5.0), "2 accepted: a guess, from 5/s");
        let t = d.run(d.t0, 2.0, 1.0);
        let rate = d.a.rate().expect("throttled");
        assert!(rate > 20.0, "tripling each second: {rate}");
        let change = d.refuse(t).expect("the next refusal");
        assert!((change.to.expect("throttled") - rate * RAMP_SETTLE).abs() < 1e-9);
        d.run(t, 10.0, 1.0);
        assert_eq!(d.a.rate(), change.to, "held below the refused rate");
    }

    #[test]
    fn refusals_in_a_row_with_nothing_configured_climb_back_to_what_the_server_accepted() {
        // two seconds at 10/s, all accepted; then the server's window is full and refuses two
        // sends in a row; once it has drained, everything is accepted again
        let mut d = Drive::new(None);
        let t = d.run(d.t0, 2.0, 10.0);
        d.refuse(t).expect("the first lowers");
        let second = d
            .refuse(t + Duration::from_millis(150))
            .expect("refused in a row");
        assert!(second.pause.is_some(), "in a row: the scope pauses");
        let low = second.to.expect("throttled");
        assert!(low < 8.0, "held low while the window is full: {low}");
        let end = d.run(t + Duration::from_secs(1), 4.0, 10.0);
        let rate = d.a.rate().expect("still throttled");
        assert!(
            rate >= 8.5 && rate > low,
            "by {end:?}, back near 95% of the 9-10 accepted in the best second, not held at {low}: {rate}"
        );
    }

    #[test]
    fn a_guess_refused_again_while_its_burst_is_answered_learns_the_window() {
        // 8 scouts out at once against 5 per second: the first refusal comes after 4 answers
        // (a guess), the next one after the 5th
        let mut d = Drive::new(None);
        let ms = Duration::from_millis;
        for _ in 0..8 {
            d.a.on_send(0, 1);
        }
        for _ in 0..4 {
            d.a.on_success(d.t0, 0, 1);
        }
        let guess = d.a.on_refusal(d.t0, 0, d.t0).expect("a guess");
        assert_eq!(guess.to, Some(5.0));
        d.a.on_success(d.t0 + ms(1), 1_000_000, 1);
        let t = d.t0 + ms(200);
        let change = d.refuse(t).expect("the window is full");
        assert_eq!(change.to, Some(4.75), "95% of the 5 the window held");
        let pause = change.pause.expect("the window passes first");
        assert!((pause.as_secs_f64() - 5.0 / 4.75).abs() < 1e-6, "{pause:?}");
    }

    #[test]
    fn acceptances_answered_after_a_burst_was_refused_raise_the_rate_it_learned() {
        // 13 sent at once against 10 per second: the refusal comes with 8 answers in, the
        // other 2 acceptances 5 ms later
        let mut d = Drive::new(None);
        for _ in 0..13 {
            d.a.on_send(0, 1);
        }
        for _ in 0..8 {
            d.a.on_success(d.t0, 0, 1);
        }
        let change = d.a.on_refusal(d.t0, 0, d.t0).expect("lowered");
        assert_eq!(change.to, Some(7.6), "95% of the 8 accepted so far");
        let late = d.t0 + Duration::from_millis(5);
        d.a.on_success(late, 5_000_000, 1);
        d.a.on_success(late, 5_000_000, 1);
        let pause = change.pause.expect("the window passes first");
        let end = d.run(d.t0 + pause, 3.0, 1.0);
        let rate = d.a.rate().expect("throttled");
        assert!(
            (rate - 9.5).abs() < 1e-9,
            "95% of the 10 the window held, by {end:?}: {rate}"
        );
    }

    #[test]
    fn refusals_right_after_a_pause_climb_back_to_the_window_before_it() {
        // a limiter that counts refused requests too (HAProxy's http_req_rate) is still over
        // its count when the pause for a filled window ends: the first sends after it are
        // refused, with nothing accepted in the last second
        let mut d = Drive::new(None);
        for _ in 0..15 {
            d.a.on_send(0, 1);
        }
        for _ in 0..8 {
            d.a.on_success(d.t0, 0, 1);
        }
        let filled = d.a.on_refusal(d.t0, 0, d.t0).expect("a filled window");
        // the burst's last two acceptances, answered after its refusal
        let late = d.t0 + Duration::from_millis(2);
        d.a.on_success(late, 2_000_000, 1);
        d.a.on_success(late, 2_000_000, 1);
        let after = d.t0 + filled.pause.expect("paused");
        d.refuse(after).expect("refused after the pause");
        let low = d
            .refuse(after + Duration::from_millis(100))
            .expect("and again")
            .to
            .expect("throttled");
        assert!(low < 7.0, "held low while the count drains: {low}");
        let end = d.run(after + Duration::from_secs(1), 4.0, 1.0);
        let rate = d.a.rate().expect("throttled");
        assert!(
            (rate - 9.5).abs() < 1e-9,
            "back at 95% of the 10 accepted before the pause by {end:?}, not {low}: {rate}"
        );
    }

    #[test]
    fn refusals_in_a_row_pause_the_scope_longer_each_time() {
        let mut d = Drive::new(Some(200.0));
        let mut t = d.t0;
        let mut pauses = Vec::new();
        for _ in 0..5 {
            t += Duration::from_millis(10);
            pauses.push(d.refuse(t).expect("each is a new signal").pause);
        }
        let ms = Duration::from_millis;
        assert_eq!(
            pauses,
            [
                None,
                Some(ms(100)),
                Some(ms(200)),
                Some(ms(400)),
                Some(ms(800))
            ]
        );
        d.send_and_accept(t + S);
        t += 2 * S;
        assert_eq!(
            d.refuse(t).expect("new").pause,
            None,
            "an acceptance resets it"
        );
    }

    #[test]
    fn on_a_configured_scope_the_first_pause_is_a_quarter_of_its_window() {
        let ms = Duration::from_millis;
        let pauses = |limit: crate::Limit| {
            let t0 = Instant::now();
            let mut a = AdaptiveRate::for_limit(Some(&limit));
            (1..=4u64)
                .map(|i| {
                    let t = t0 + ms(10 * i);
                    a.on_refusal(t, 10_000_000 * i, t).expect("new").pause
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            pauses(crate::Limit::per_second(200)),
            [None, Some(ms(250)), Some(ms(500)), Some(ms(1000))]
        );
        assert_eq!(
            pauses(crate::Limit::per_minute(600)),
            [None, Some(ms(10_000)), Some(ms(10_000)), Some(ms(10_000))],
            "a quarter of a minute, capped at the longest pause"
        );
        assert_eq!(
            pauses(crate::Limit::per(10, ms(200))),
            [None, Some(ms(100)), Some(ms(200)), Some(ms(400))],
            "never shorter than the unconfigured first pause"
        );
    }

    #[test]
    fn refusals_of_attempts_sent_before_a_decrease_are_the_same_signal() {
        let mut d = Drive::new(Some(8.0));
        let t0 = d.t0;
        d.a.on_refusal(t0 + S, 1, t0)
            .expect("the first lowers the rate");
        assert!(d.a.on_refusal(t0 + 2 * S, 2, t0).is_none());
        assert!(d.a.on_refusal(t0 + 3 * S, 3, t0 + 2 * S).is_some());
    }
}
