//! The breaker's state machine for one host: admissions, outcomes, and what time alone
//! changes.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Breaker, RateTrigger};
use crate::snapshot::{BreakerPhase, BreakerSnapshot};
use crate::window::Window;

/// The breaker's decision on one attempt; the middleware acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Closed: send the request, then [`BreakerState::record`] its outcome.
    Allow,
    /// Half-open: send the request as one of the probes. The caller should later call
    /// [`BreakerState::record`] with this admission, or [`BreakerState::release`] if the
    /// request ended without an outcome (dropped future), so the slot is free at once. A probe
    /// that does neither within the open time (a request that hangs: reqwest has no default
    /// timeout) counts as failed, and its slot is free then.
    Probe {
        /// The half-open period that admitted it, so that an answer arriving after that period
        /// ended (the probe's hold ran out, or another probe decided) is told apart; see
        /// [`BreakerState::record`].
        period: u32,
    },
    /// Open, or half-open with every probe slot taken: fail fast without sending.
    Reject {
        /// How long until the breaker may let a probe through. Open: the rest of the open time.
        /// Half-open with all slots taken: until the outstanding probes' hold ends (the open
        /// time after the last one left); by then they have answered, closing the breaker or
        /// opening it again, or they count as failed and it opened again.
        retry_in: Duration,
    },
}

impl Admission {
    /// True for [`Admission::Probe`].
    pub(crate) fn is_probe(&self) -> bool {
        matches!(self, Admission::Probe { .. })
    }
}

/// A change of phase, for the caller to report (it knows the host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    /// The breaker opened: requests fail fast for `open_for`.
    Opened {
        /// The count that tripped it: consecutive failures if that trigger fired, otherwise the
        /// failures in the rate window. After a failed probe: the consecutive failure count,
        /// which includes the probe.
        failures: u32,
        /// How long it stays open before probing.
        open_for: Duration,
    },
    /// The open time is over; probes may go through.
    HalfOpened,
    /// A probe succeeded, or the host stayed quiet long enough for the breaker to forget it
    /// (see [`BreakerState::is_idle`]); requests go through again and counts start from zero.
    Closed,
}

/// The failure-rate trigger's sliding window of calls (`[0]`) and failures (`[1]`): a fixed
/// ring of buckets, so recording is allocation-free and memory is constant. The trigger itself
/// stays in the shared configuration.
#[derive(Debug, Clone)]
struct RateWindow {
    origin: Instant,
    counts: Window<2>,
}

impl RateWindow {
    fn new(trigger: RateTrigger, origin: Instant) -> Self {
        Self {
            origin,
            counts: Window::new(trigger.window),
        }
    }

    fn nanos(&self, now: Instant) -> u64 {
        crate::time::saturating_nanos(now.saturating_duration_since(self.origin))
    }

    fn record(&mut self, now: Instant, failure: bool) {
        let now = self.nanos(now);
        self.counts.add_each(now, [1, u32::from(failure)]);
    }

    /// (calls, failures) over the buckets still inside the window at `now`.
    fn totals(&self, now: Instant) -> (u32, u32) {
        let [calls, failures] = self.counts.totals_at(self.nanos(now));
        (calls, failures)
    }

    /// The failure count if `trigger` fires at `now`.
    fn tripped(&self, now: Instant, trigger: &RateTrigger) -> Option<u32> {
        let (calls, failures) = self.totals(now);
        (calls >= trigger.min_calls && f64::from(failures) >= trigger.ratio * f64::from(calls))
            .then_some(failures)
    }

    fn clear(&mut self) {
        self.counts.clear();
    }
}

/// One host's breaker: the phase, the counts, and the open time. The caller keeps it under a lock
/// and passes the current time, so tests can drive it with any instants they like.
///
/// Lifecycle: [`admit`](Self::admit) before each attempt; [`record`](Self::record) its outcome,
/// or [`release`](Self::release) for a probe that ended without one.
///
/// Time alone also moves it, so that nothing it holds outlives its use:
/// - **a probe's hold is bounded by the open time**: a probe that has not answered within the
///   open time after the last probe left counts as failed (the breaker opens again, for longer),
///   and its slot is free. If it answers after all, a success still closes the breaker (the
///   host is up, only slow; the open time grows with each such reopening, and with it the hold,
///   so a slow host is not shut out for ever); a failure was already counted;
/// - **a quiet host is forgotten** once the longest open time (the cap of
///   [`Breaker::open_growth`], 60 s by default) passes without news from it: that long after
///   the last failure of a run, after the end of an open time nobody came for, or after the
///   last probe of a half-open period with none left out. The breaker never shuts a host out
///   for longer, so older failures say less about the host than the next request will. It is
///   then a closed breaker with nothing counted, as if new. Failures in the rate window leave
///   it as the window slides.
///
/// These changes are applied when the state is next looked at ([`admit`](Self::admit),
/// [`record`](Self::record), [`snapshot`](Self::snapshot), [`is_idle`](Self::is_idle)), dated at
/// the instant they were due, so the result does not depend on when that is. When one call
/// applies several, it reports the last [`Transition`].
#[derive(Debug, Clone)]
pub(crate) struct BreakerState {
    config: Arc<Breaker>,
    phase: BreakerPhase,
    /// When the current phase began.
    since: Instant,
    /// Open time for the next (or current) opening: the base, grown by failed probes.
    open_time: Duration,
    consecutive: u32,
    /// The last news that counts for the phase (one field: no phase needs two). Closed: when
    /// the last failure of the run was recorded (meaningful while `consecutive > 0`). Half-open:
    /// when the last probe of this period was admitted. (Open counts from `since`.)
    last_news: Instant,
    /// Boxed: most breakers count failures in a row only, and a host record stays small.
    rate: Option<Box<RateWindow>>,
    /// Half-open periods begun so far (wrapping); the current one's number is in its probes'
    /// admissions.
    period: u32,
    /// Probes of the current half-open period in flight (at most `config.probes`).
    probes_out: u32,
    /// The last half-open period whose probes' hold ran out (0: none): their late success
    /// still closes the breaker.
    expired_period: u32,
    times_opened: u64,
    /// How long the host's last answer took, in milliseconds (saturating): when a probe out
    /// can be expected to decide.
    answer_ms: u16,
    /// A probe of the current half-open period has been sent (not only admitted).
    probe_sent: bool,
}

impl BreakerState {
    /// A closed breaker for one host, configured by `config`.
    pub(crate) fn new(config: impl Into<Arc<Breaker>>, now: Instant) -> Self {
        let config = config.into();
        Self {
            phase: BreakerPhase::Closed,
            since: now,
            open_time: config.open_for,
            rate: config
                .rate
                .map(|trigger| Box::new(RateWindow::new(trigger, now))),
            config,
            consecutive: 0,
            last_news: now,
            period: 0,
            probes_out: 0,
            expired_period: 0,
            times_opened: 0,
            answer_ms: 0,
            probe_sent: false,
        }
    }

    /// Decides whether a request may go now.
    ///
    /// Closed (and always, for a disabled breaker): [`Admission::Allow`]. Open: reject with the
    /// time left, unless the open time is over, in which case the breaker goes half-open
    /// (returning [`Transition::HalfOpened`]). Half-open: [`Admission::Probe`] while fewer than
    /// the configured number of probes are in flight, otherwise reject. What time alone changes
    /// (see [`BreakerState`]) is applied first.
    pub(crate) fn admit(&mut self, now: Instant) -> (Admission, Option<Transition>) {
        let settled = self.settle(now);
        let (admission, transition) = match self.phase {
            BreakerPhase::Closed => (Admission::Allow, None),
            BreakerPhase::Open => {
                let elapsed = now.saturating_duration_since(self.since);
                if elapsed < self.open_time {
                    let retry_in = self.open_time - elapsed;
                    return (Admission::Reject { retry_in }, settled);
                }
                self.phase = BreakerPhase::HalfOpen;
                self.since = now;
                self.period = self.period.wrapping_add(1).max(1); // 0 means "none"
                self.probes_out = 0;
                self.probe_sent = false;
                (self.admit_probe(now), Some(Transition::HalfOpened))
            }
            BreakerPhase::HalfOpen => (self.admit_probe(now), None),
        };
        (admission, transition.or(settled))
    }

    fn admit_probe(&mut self, now: Instant) -> Admission {
        if self.probes_out < self.config.probes {
            self.probes_out += 1;
            self.last_news = now;
            Admission::Probe {
                period: self.period,
            }
        } else {
            // `settle` already handled a hold that is over, so what is left is not zero
            // (unless the hold's end cannot be named: then the open time).
            let retry_in = self
                .probe_hold_end()
                .map_or(self.open_time, |end| end.saturating_duration_since(now));
            Admission::Reject { retry_in }
        }
    }

    /// Records the outcome of an attempt. `admission` is what [`admit`](Self::admit) returned
    /// for it; `failure` is the caller's classification (5xx or transport error).
    ///
    /// - Closed: updates the consecutive count and the rate window; opens the breaker for the
    ///   current open time when a failure fires a trigger.
    /// - A probe's outcome while half-open: success closes (counts and open time reset), failure
    ///   opens again for the open time grown by the factor, capped.
    /// - Outcomes of requests sent before the breaker opened ([`Admission::Allow`] arriving while
    ///   open or half-open), and of probes whose half-open period is over (another probe
    ///   decided, or their hold ran out and they counted as failed), are ignored while the
    ///   breaker is open or half-open; except the success of a probe whose hold ran out, which
    ///   closes it. Arriving after the breaker closed, they count as closed outcomes.
    /// - [`Admission::Reject`] (nothing was sent) and a disabled breaker: nothing happens.
    ///
    /// What time alone changes (see [`BreakerState`]) is applied first, so a probe answering
    /// after its hold ended finds that it already counted as failed; the transition returned is
    /// then the one that caused, if nothing else changed.
    pub(crate) fn record(
        &mut self,
        now: Instant,
        admission: &Admission,
        failure: bool,
    ) -> Option<Transition> {
        let settled = self.settle(now);
        self.record_settled(now, admission, failure).or(settled)
    }

    fn record_settled(
        &mut self,
        now: Instant,
        admission: &Admission,
        failure: bool,
    ) -> Option<Transition> {
        match admission {
            Admission::Allow => {}
            Admission::Probe { period } if self.is_current_probe(*period) => {
                self.probes_out -= 1;
                return Some(if failure {
                    self.reopen(now)
                } else {
                    self.close(now)
                });
            }
            // Its hold ran out and it counted as failed, but the host did answer.
            Admission::Probe { period }
                if *period == self.expired_period
                    && !failure
                    && self.phase != BreakerPhase::Closed =>
            {
                return Some(self.close(now));
            }
            // Its period ended (another probe decided, or its hold ran out) and its slot went
            // with it: like a request sent before the breaker opened.
            Admission::Probe { .. } => {}
            Admission::Reject { .. } => return None,
        }
        if self.phase != BreakerPhase::Closed || self.config.is_disabled() {
            return None;
        }
        if !failure {
            self.consecutive = 0;
            if let Some(rate) = &mut self.rate {
                rate.record(now, false);
            }
            return None;
        }
        self.consecutive = self.consecutive.saturating_add(1);
        self.last_news = now;
        let mut tripped = None;
        if let Some(rate) = &mut self.rate {
            rate.record(now, true);
            tripped = self
                .config
                .rate
                .as_ref()
                .and_then(|trigger| rate.tripped(now, trigger));
        }
        if self
            .config
            .consecutive
            .is_some_and(|n| self.consecutive >= n)
        {
            tripped = Some(self.consecutive);
        }
        tripped.map(|failures| self.open(now, failures))
    }

    /// Frees the slot of a probe that ended without an outcome (its request future was dropped
    /// or cancelled). No transition: nothing was learnt about the host. Nothing happens for
    /// other admissions, or for a probe whose half-open period is over (its slot went with it).
    pub(crate) fn release(&mut self, admission: &Admission) {
        if let Admission::Probe { period } = admission
            && self.is_current_probe(*period)
        {
            self.probes_out -= 1;
        }
    }

    /// True when `admission` still lets its attempt go: one admitted while closed, while the
    /// breaker is still closed; a probe, while its half-open period is the current one. An
    /// attempt that waited for its slot asks this right before it is sent.
    pub(crate) fn still_admits(&self, admission: &Admission) -> bool {
        match admission {
            Admission::Allow => self.phase == BreakerPhase::Closed,
            Admission::Probe { period } => self.is_current_probe(*period),
            Admission::Reject { .. } => false,
        }
    }

    /// True while a probe admitted in `period` still holds a slot.
    fn is_current_probe(&self, period: u32) -> bool {
        self.phase == BreakerPhase::HalfOpen && period == self.period && self.probes_out > 0
    }

    /// When the probes out in this half-open period count as failed: the open time after the
    /// last one left. `None` when none is out, or when that instant cannot be named.
    fn probe_hold_end(&self) -> Option<Instant> {
        (self.phase == BreakerPhase::HalfOpen && self.probes_out > 0)
            .then(|| self.last_news.checked_add(self.open_time))
            .flatten()
    }

    /// When the breaker forgets a quiet host (see [`BreakerState`]); `None` when it holds
    /// nothing time should clear (or the instant cannot be named).
    fn forget_at(&self) -> Option<Instant> {
        let memory = self.config.longest_open();
        match self.phase {
            BreakerPhase::Closed if self.consecutive > 0 => self.last_news.checked_add(memory),
            BreakerPhase::Closed => None,
            BreakerPhase::Open => self.since.checked_add(self.open_time)?.checked_add(memory),
            BreakerPhase::HalfOpen if self.probes_out == 0 => self.last_news.checked_add(memory),
            // The probes' hold ends first, and opens the breaker again.
            BreakerPhase::HalfOpen => None,
        }
    }

    /// Applies what time alone changes by `now`, each change dated when it was due; returns
    /// the last transition.
    fn settle(&mut self, now: Instant) -> Option<Transition> {
        let mut transition = None;
        if let Some(end) = self.probe_hold_end()
            && now >= end
        {
            // The probes out are as good as failed: the first to fail would have reopened it.
            self.probes_out = 0;
            self.expired_period = self.period;
            transition = Some(self.reopen(end));
        }
        if let Some(at) = self.forget_at()
            && now >= at
        {
            if self.phase != BreakerPhase::Closed {
                self.phase = BreakerPhase::Closed;
                self.since = at;
                transition = Some(Transition::Closed);
            }
            // The rate window is left alone: its failures leave it as it slides.
            self.consecutive = 0;
            self.open_time = self.config.open_for;
            self.probes_out = 0;
        }
        transition
    }

    /// This state as it is at `now`, once time has done its part (for the `&self` readers).
    fn settled(&self, now: Instant) -> std::borrow::Cow<'_, Self> {
        let due = |at: Option<Instant>| at.is_some_and(|at| now >= at);
        if due(self.probe_hold_end()) || due(self.forget_at()) {
            let mut state = self.clone();
            state.settle(now);
            std::borrow::Cow::Owned(state)
        } else {
            std::borrow::Cow::Borrowed(self)
        }
    }

    /// The current phase, as last settled. An open breaker whose open time is over still
    /// reads [`BreakerPhase::Open`] until the next [`admit`](Self::admit), and one whose
    /// probes' hold has ended still reads [`BreakerPhase::HalfOpen`].
    pub(crate) fn phase(&self) -> BreakerPhase {
        self.phase
    }

    /// Note how long an answer from the host took: a probe out is expected to take as long.
    pub(crate) fn note_answer_time(&mut self, took: Duration) {
        self.answer_ms = u16::try_from(took.as_millis()).unwrap_or(u16::MAX);
    }

    /// A probe's attempt (`admission`) was sent at `now`, after waiting for its pacing slot:
    /// its hold, and when its answer can be expected, count from here.
    pub(crate) fn probe_sent(&mut self, admission: &Admission, now: Instant) {
        if let Admission::Probe { period } = admission
            && self.is_current_probe(*period)
        {
            self.last_news = now;
            self.probe_sent = true;
        }
    }

    /// While half-open with a probe sent and not answered: how long until its answer can be
    /// expected (as long after it was sent as the host's last answer took), at least `floor`,
    /// at most the probes' hold. `None` otherwise (no probe out, or none sent yet: the hold is
    /// all that is known).
    pub(crate) fn probe_decides_in(&self, now: Instant, floor: Duration) -> Option<Duration> {
        if !self.probe_sent {
            return None;
        }
        let hold_end = self.probe_hold_end()?;
        let expected = Duration::from_millis(u64::from(self.answer_ms)).max(floor);
        let answer = self.last_news.checked_add(expected).unwrap_or(hold_end);
        let left = answer.min(hold_end).saturating_duration_since(now);
        Some(left.max(floor).min(hold_end.saturating_duration_since(now)))
    }

    /// A snapshot of this breaker at `now`, for observability, with what time alone changes by
    /// `now` applied.
    pub(crate) fn snapshot(&self, now: Instant) -> BreakerSnapshot {
        let this = self.settled(now);
        let this = this.as_ref();
        let (window_calls, window_failures) =
            this.rate.as_ref().map_or((0, 0), |rate| rate.totals(now));
        let since = now.saturating_duration_since(this.since);
        BreakerSnapshot {
            phase: this.phase,
            since,
            consecutive_failures: this.consecutive,
            window_failures,
            window_calls,
            retry_in: (this.phase == BreakerPhase::Open)
                .then(|| this.open_time.saturating_sub(since)),
            times_opened: this.times_opened,
        }
    }

    /// True when this state carries nothing worth keeping at `now`: closed, no consecutive
    /// failures, no failures left in the rate window, no probe in flight. The host record may
    /// then be evicted and recreated later with [`BreakerState::new`]; only `times_opened` is
    /// lost.
    ///
    /// A host left in any state becomes idle once it has been quiet long enough (see
    /// [`BreakerState`]): with the default breaker, 60 s after its last failure, or 60 s after
    /// the end of its last open time (5 s, growing to 60 s after failed probes).
    #[cfg(test)]
    pub(crate) fn is_idle(&self, now: Instant) -> bool {
        let this = self.settled(now);
        this.phase == BreakerPhase::Closed
            && this.consecutive == 0
            && this.probes_out == 0
            && this
                .rate
                .as_ref()
                .is_none_or(|rate| rate.totals(now).1 == 0)
    }

    /// True when forgetting this state would not let a request through that it would stop now:
    /// not failing fast (open, with open time left) and no probe out. A host quiet for its record's idle time may
    /// then be evicted with its failure counts; the breaker of a host that is failing fast
    /// keeps its record.
    pub(crate) fn is_quiet(&self, now: Instant) -> bool {
        let this = self.settled(now);
        let failing_fast = this.phase == BreakerPhase::Open
            && now.saturating_duration_since(this.since) < this.open_time;
        !failing_fast && this.probes_out == 0
    }

    fn open(&mut self, now: Instant, failures: u32) -> Transition {
        self.phase = BreakerPhase::Open;
        self.since = now;
        self.times_opened = self.times_opened.saturating_add(1);
        Transition::Opened {
            failures,
            open_for: self.open_time,
        }
    }

    fn reopen(&mut self, now: Instant) -> Transition {
        self.consecutive = self.consecutive.saturating_add(1);
        self.open_time = self.config.grow(self.open_time);
        self.open(now, self.consecutive)
    }

    fn close(&mut self, now: Instant) -> Transition {
        self.phase = BreakerPhase::Closed;
        self.since = now;
        self.consecutive = 0;
        // probes still out count as sent before the close (they find no current period)
        self.probes_out = 0;
        self.open_time = self.config.open_for;
        if let Some(rate) = &mut self.rate {
            rate.clear();
        }
        Transition::Closed
    }
}
