//! One scope's pacing schedule: GCRA (the generic cell rate algorithm, as in governor), made
//! window-exact and late-tolerant.
//!
//! - The emission interval comes from the *window*: with a burst of `b`,
//!   `interval = window × (1 + margin) / (n − b + 1)`, so the `b` that start at once plus the
//!   refills that fit in any window never exceed `n` (see [`Limit`]).
//! - Every start has a slot on a *virtual* schedule. A request that starts late (timers wake on
//!   a millisecond tick, a busy runtime polls late) keeps its slot while it is less than
//!   `slack` late, so a waker that finds several slots due takes them all and lateness is not
//!   capacity lost for good. Actual starts lag virtual ones by less than `slack`, a quarter of
//!   the safety margin and at most 5 ms; the rest covers network jitter. Later than that, the
//!   schedule restarts from now (the host was idle, or the process stalled).
//! - At rates the timer can space one by one (an interval of two ticks or more) and without a
//!   burst, consecutive starts also keep `min_gap` apart: the server's own spacing plus a
//!   [gap margin](GAP_MARGIN_NANOS) in absolute time, so that a leaky-bucket server that judges
//!   every gap to the millisecond (nginx `limit_req`, burst 0) does not see two requests closer
//!   than it allows when one of them was delayed on the way more than the other. Lateness is
//!   caught up by what is left of the interval's margin, a little per interval.
//!
//! A slower interval (server hints, the adaptive rate) stretches the increments but never the
//! burst tolerance, so slowing down can only move the next slot later.
//!
//! [`Limit`]: crate::Limit

use crate::limit::{Limit, SAFETY_MARGIN_PERCENT};

/// tokio's timer resolution: sleeps end on the next millisecond tick.
pub(crate) const TICK_NANOS: u64 = 1_000_000;

/// The most a start may lag its slot and keep it: a few timer ticks, enough for a waker to
/// catch up at high rates; the rest of the margin stays for the network.
const MAX_SLACK_NANOS: u64 = 5 * TICK_NANOS;

/// Below this interval the timer cannot space requests one by one: they go in batches per tick.
const SPACED_MIN_NANOS: u64 = 2 * TICK_NANOS;

/// True when waits for slots `interval` nanoseconds apart should end on the slot itself
/// rather than on the timer tick after it: the slots are spaced one by one (at least
/// [`SPACED_MIN_NANOS`]; closer ones go in batches per tick) and a tick matters to them (up to
/// 100 ms: a wait that ends on the tick after the slot gives up a noticeable share of the rate).
pub(crate) fn wakes_on_the_slot(interval: u64) -> bool {
    (SPACED_MIN_NANOS..=100 * TICK_NANOS).contains(&interval)
}

/// The gap margin of a spaced schedule, in absolute time: how much more than the server's
/// spacing (`window / n`) two consecutive starts keep apart, at least.
///
/// What it absorbs is the difference in delay between two requests on their way (our runtime
/// handing the request to a connection, the kernel, the server's own scheduling), which does
/// not shrink with the interval: on loopback, on this 2-core machine, tens of microseconds
/// when idle, up to milliseconds when the cores are busy. A share of the interval is not
/// enough at high rates: the 1% the interval's margin leaves is 50 µs at 200 per second. The
/// gap margin is the larger of that 1% and 250 µs, but never more than
/// [`GAP_MARGIN_MAX_PERCENT`] of the spacing: at 200 per second, 5.25 ms instead of 5 ms
/// (95% of the rate at most, where the window margin alone allows 98%); at 100 per second,
/// 97.6%; at 10 per second the 1% (1 ms) is larger and nothing changes; at 500 per second the
/// cap (100 µs) binds. The cost falls on every spaced schedule, whatever the server counts
/// (a sliding window would have taken 98%); a delay beyond the margin costs a refusal, which
/// widens the margin by half (see [`Pacer::widen_gap`]) and dips the
/// [adaptive rate](super::adaptive) for a second. How much jitter a machine has is learned
/// from refusals, not assumed (docs/measurements.md compares a fixed margin and a learned one
/// against nginx `limit_req`).
pub(crate) const GAP_MARGIN_NANOS: u64 = 250_000;

/// The most the gap margin may take, in percent of the server's spacing.
const GAP_MARGIN_MAX_PERCENT: u64 = 5;

/// The most a gap margin learned from refusals may take, in percent of the server's spacing
/// (half the rate at worst: the [adaptive rate](super::adaptive)'s floor on a configured scope).
const LEARNED_GAP_MAX_PERCENT: u64 = 100;

/// Each refusal of a spaced schedule multiplies its gap margin by this (as a fraction): a
/// refusal on a quiet machine is a rare spike of a millisecond or two, and doubling overshoots
/// it (3 refusals take 250 µs to 2 ms, where ×1.5 stops near 0.84 ms); a busy machine's few
/// milliseconds take a few more refusals. docs/measurements.md has the runs behind this.
const LEARNED_GAP_GROWTH: (u64, u64) = (3, 2);

/// A learned gap margin halves after this long without a refusal that widened it, down to
/// the configured one.
const LEARNED_GAP_RELAX_NANOS: u64 = 30_000_000_000;

/// The nanoseconds per unit `limit` sustains: its interval, or the least gap between two
/// starts where that is longer (see [`GAP_MARGIN_NANOS`]).
pub(crate) fn sustained_interval(limit: &Limit) -> u64 {
    let pacer = Pacer::new(Some(limit));
    pacer.interval.max(pacer.min_gap)
}

/// The least gap between consecutive starts of a spaced schedule of `interval` (window margin
/// included): the server's spacing plus the gap margin (see [`GAP_MARGIN_NANOS`]).
fn min_gap(interval: u64) -> u64 {
    let spacing = spacing(interval);
    let margin = (spacing / 100)
        .max(GAP_MARGIN_NANOS)
        .min(spacing / 100 * GAP_MARGIN_MAX_PERCENT);
    spacing + margin
}

/// The server's own spacing (`window / n`) of a schedule of `interval`, window margin included.
fn spacing(interval: u64) -> u64 {
    interval / u64::from(100 + SAFETY_MARGIN_PERCENT) * 100
}

/// The pacing decision for one request.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pace {
    /// The slot was free and is now taken: send.
    Admit,
    /// Not before this nanosecond; nothing was taken.
    Wait(u64),
}

/// When `cost` units at `interval` per unit are due on a schedule at `tat`: `cost` units past
/// it, less what the burst (`tolerance`) lets go ahead of it.
fn due_at(tat: u64, cost: u64, interval: u64, tolerance: u64) -> u64 {
    tat.saturating_add(cost.saturating_mul(interval))
        .saturating_sub(tolerance.max(interval))
}

/// The theoretical arrival time after `cost` units at `interval` per unit, due at `due`, start at
/// `now`. Less than `slack` late for its slot, a request keeps its slots; later (idle, or a
/// stalled process), the schedule restarts as if it went on time now.
fn advanced(tat: u64, due: u64, now: u64, slack: u64, cost: u64, interval: u64) -> u64 {
    let base = if now.saturating_sub(due.max(tat)) < slack {
        tat
    } else {
        now.saturating_sub(due.saturating_sub(tat))
    };
    base.saturating_add(cost.saturating_mul(interval))
}

/// A schedule with nothing but its configured limit in force (not slowed, the burst not grown
/// by a request, no gap pending): one GCRA step on one number, which the lock-free
/// [lane](super::lane) runs with a compare-and-swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plain {
    /// Nanoseconds per unit; 0: unpaced.
    pub(crate) interval: u64,
    pub(crate) tolerance: u64,
    pub(crate) slack: u64,
    /// The most units one request may take on this schedule.
    pub(crate) burst: u64,
    /// Least gap between consecutive starts (0: none).
    pub(crate) min_gap: u64,
}

impl Plain {
    /// The theoretical arrival time after `cost` units start at `now`, if the schedule at `tat`
    /// lets them; `None`: not yet, or not on this schedule (more than the burst).
    pub(crate) fn step(&self, tat: u64, now: u64, cost: u64) -> Option<u64> {
        if cost > self.burst {
            return None; // the burst would grow: the locked path's work
        }
        if self.interval == 0 {
            return Some(tat);
        }
        let due = due_at(tat, cost, self.interval, self.tolerance);
        // a late start keeps its slot, but the next one still keeps the gap from it
        (due <= now).then(|| {
            let next = advanced(tat, due, now, self.slack, cost, self.interval);
            match self.min_gap {
                0 => next,
                gap => next.max(now.saturating_add(gap)),
            }
        })
    }
}

/// One scope's schedule, in nanoseconds of its [`Clock`](super::Clock).
#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    /// Theoretical arrival time: the virtual slot of the next unit.
    tat: u64,
    /// The configured limit's nanoseconds per unit; 0: unpaced.
    interval: u64,
    /// How far ahead of the schedule a start may be: the burst, at the configured interval.
    tolerance: u64,
    /// How late after its slot a start may still keep it (at most `MAX_SLACK_NANOS`).
    slack: u32,
    /// Least gap between consecutive starts in force (0: none): the configured one, widened
    /// by refusals (see [`Pacer::widen_gap`]).
    min_gap: u64,
    /// When the gap last grew, or last halved back (see [`Pacer::relax_gap`]).
    widened_at: u64,
    /// The last actual start.
    last_start: Option<u64>,
    /// The configured limit, for requests that cost more than its burst.
    limit: Option<Limit>,
    /// The burst the schedule is spaced for: the limit's, or the largest cost met since.
    burst: u32,
}

impl Pacer {
    /// A schedule for `limit` (`None`: unpaced), with a full bucket at 0.
    pub(crate) fn new(limit: Option<&Limit>) -> Self {
        let Some(limit) = limit else {
            return Pacer {
                tat: 0,
                interval: 0,
                tolerance: 0,
                slack: 0,
                min_gap: 0,
                widened_at: 0,
                last_start: None,
                limit: None,
                burst: 1,
            };
        };
        let interval = limit.interval_nanos();
        let spaced = limit.burst_size() == 1 && interval >= SPACED_MIN_NANOS;
        let gap = if spaced { min_gap(interval) } else { 0 };
        Pacer {
            tat: 0,
            interval,
            tolerance: interval.saturating_mul(u64::from(limit.burst_size())),
            // at most MAX_SLACK_NANOS (5 ms): fits
            slack: (limit.margin_nanos() / 4).min(MAX_SLACK_NANOS) as u32,
            min_gap: gap,
            widened_at: 0,
            last_start: None,
            limit: Some(*limit),
            burst: limit.burst_size(),
        }
    }

    /// The schedule as it stands for a request of `cost` units: (nanoseconds per unit,
    /// tolerance, theoretical arrival time).
    ///
    /// `cost` units start at once, so they count in every window that holds their start, as a
    /// burst does. A schedule that meets a request costing more than its burst grows its burst
    /// to that cost for good: `window × (1 + margin) / (n − cost + 1)` per unit, the
    /// window-exact spacing of that burst (a request of `c` units of a limit of `n` gets
    /// `(n − c + 1) / n` of the rate, less the margin). Once anything was taken, the capacity
    /// it gains is charged to the schedule at once, so growing never lets more go now than
    /// before.
    fn schedule(&self, cost: u64) -> (u64, u64, u64) {
        match self.limit {
            Some(limit) if cost > u64::from(self.burst) && cost <= u64::from(limit.count()) => {
                let grown = limit
                    .try_burst(u32::try_from(cost).unwrap_or(u32::MAX))
                    .unwrap_or(limit);
                let interval = grown.interval_nanos();
                let tolerance = interval.saturating_mul(cost);
                // nothing taken yet: nothing to charge
                let charge = match self.last_start {
                    Some(_) => tolerance.saturating_sub(self.tolerance),
                    None => 0,
                };
                let tat = self.tat.saturating_add(charge);
                (interval, tolerance, tat)
            }
            _ => (self.interval, self.tolerance, self.tat),
        }
    }

    /// Nanoseconds per unit in force for `cost` units, slowed to at least `slower`.
    fn unit_interval(&self, cost: u64, slower: Option<u64>) -> u64 {
        let (configured, _, _) = self.schedule(cost);
        slower.map_or(configured, |s| s.max(configured))
    }

    /// True when waits on this schedule should end on the slot itself rather than on the
    /// timer tick after it: the interval is short enough that a tick matters (up to 100 ms)
    /// and long enough that requests are spaced one by one.
    pub(crate) fn wants_precise_wakes(&self) -> bool {
        self.min_gap > 0 && wakes_on_the_slot(self.interval)
    }

    /// When `cost` units at `interval` per unit are due: `cost` units past the schedule, less
    /// what the burst lets go ahead of it.
    fn due(&self, cost: u64, interval: u64) -> u64 {
        let (_, tolerance, tat) = self.schedule(cost);
        due_at(tat, cost, interval, tolerance)
    }

    /// The earliest nanosecond at which `cost` units may start, spaced `interval` apart.
    fn earliest(&self, cost: u64, interval: u64) -> u64 {
        let due = self.due(cost, interval);
        // slowed (by the server's word), a scope also keeps the slower spacing from its last
        // start, which the schedule may not have counted at the configured rate (or at all),
        // less what a spaced schedule may catch up of lateness (as its own gap does)
        let gap = if interval > self.interval {
            let catch_up = match self.min_gap {
                0 => 0,
                gap => self.interval.saturating_sub(gap),
            };
            (interval - catch_up).max(self.min_gap)
        } else {
            self.min_gap
        };
        match self.last_start {
            Some(last) => due.max(last.saturating_add(gap)),
            None => due,
        }
    }

    /// Take `cost` units at `now` if the schedule allows, else say when. `slower`: a longer
    /// interval in force (server hints, adaptive rate); never faster than the limit.
    #[cfg(test)]
    pub(crate) fn acquire(&mut self, now: u64, cost: u32, slower: Option<u64>) -> Pace {
        match self.check(now, cost, slower) {
            Some(at) => Pace::Wait(at),
            None => {
                self.take(now, cost, slower);
                Pace::Admit
            }
        }
    }

    /// When `cost` units may start, if not at `now`; takes nothing.
    pub(crate) fn check(&self, now: u64, cost: u32, slower: Option<u64>) -> Option<u64> {
        let cost = u64::from(cost.max(1));
        let interval = self.unit_interval(cost, slower);
        if interval == 0 {
            return None;
        }
        let earliest = self.earliest(cost, interval);
        (earliest > now).then_some(earliest)
    }

    /// Take `cost` units at `now`, which [`Pacer::check`] allowed.
    pub(crate) fn take(&mut self, now: u64, cost: u32, slower: Option<u64>) {
        let cost = u64::from(cost.max(1));
        let interval = self.unit_interval(cost, slower);
        if interval == 0 {
            self.last_start = Some(now);
            return;
        }
        let (configured, tolerance, tat) = self.schedule(cost);
        if cost > u64::from(self.burst) && configured != self.interval {
            // grow the burst to this cost for good (see `schedule`); bursts go at once, so
            // there is no gap to keep between starts any more
            // `configured` differs only for a cost within the limit's count: a u32
            let burst = u32::try_from(cost).unwrap_or(u32::MAX);
            (self.interval, self.tolerance, self.tat, self.burst) =
                (configured, tolerance, tat, burst);
            self.min_gap = 0;
        }
        self.relax_gap(now);
        self.last_start = Some(now);
        let due = self.due(cost, interval);
        self.tat = advanced(self.tat, due, now, u64::from(self.slack), cost, interval);
    }

    /// The schedule as the lock-free lane runs it while only the configured limit paces the
    /// scope, and the theoretical arrival time to start it from (a gap still to keep since the
    /// last start folded in: with a burst of 1, the next slot is the later of the two).
    pub(crate) fn plain(&self) -> (Plain, u64) {
        let plain = Plain {
            interval: self.interval,
            tolerance: self.tolerance,
            slack: u64::from(self.slack),
            burst: u64::from(self.burst),
            min_gap: self.min_gap,
        };
        let tat = match self.last_start {
            Some(last) if self.min_gap > 0 => self.tat.max(last.saturating_add(self.min_gap)),
            _ => self.tat,
        };
        (plain, tat)
    }

    /// Take the schedule back from the lane: where it left the theoretical arrival time, and
    /// the last start it admitted, if any.
    pub(crate) fn resume(&mut self, tat: u64, last: Option<u64>) {
        self.tat = self.tat.max(tat);
        if let Some(last) = last {
            self.last_start = self.last_start.max(Some(last));
            self.relax_gap(last);
        }
    }

    /// A refusal, at `now`, of a start at `sent`, on a spaced schedule: two requests reached
    /// the server closer together than its spacing, so the difference in their delays on the
    /// way was more than the gap margin covers (a busy machine, a server that reads its clock
    /// once per event loop). The margin grows by half ([`LEARNED_GAP_GROWTH`]), up to
    /// [`LEARNED_GAP_MAX_PERCENT`] of the spacing, and halves back after
    /// [`LEARNED_GAP_RELAX_NANOS`] without such a refusal.
    /// Refusals of starts before the last widening are the same signal and change nothing.
    /// Returns whether the gap grew.
    pub(crate) fn widen_gap(&mut self, now: u64, sent: u64) -> bool {
        let base = self.base_gap();
        if base == 0 || (self.min_gap > base && sent <= self.widened_at) {
            return false;
        }
        let spacing = spacing(self.interval);
        let margin = self.min_gap.saturating_sub(spacing);
        let widest = spacing / 100 * LEARNED_GAP_MAX_PERCENT;
        let (num, den) = LEARNED_GAP_GROWTH;
        let wider = (margin.saturating_mul(num) / den).min(widest).max(margin);
        self.widened_at = now;
        self.min_gap = spacing.saturating_add(wider);
        wider > margin
    }

    /// The configured least gap (0: none), which a widened one relaxes back to: a schedule
    /// without a burst, spaced by the timer (see [`min_gap`]).
    fn base_gap(&self) -> u64 {
        if self.burst == 1 && self.interval >= SPACED_MIN_NANOS {
            min_gap(self.interval)
        } else {
            0
        }
    }

    /// Halve a learned gap margin (towards the configured one) for every
    /// [`LEARNED_GAP_RELAX_NANOS`] since it last grew or halved.
    fn relax_gap(&mut self, now: u64) {
        if now.saturating_sub(self.widened_at) < LEARNED_GAP_RELAX_NANOS {
            return; // the common case: nothing to relax yet
        }
        let base = self.base_gap();
        while self.min_gap > base && now.saturating_sub(self.widened_at) >= LEARNED_GAP_RELAX_NANOS
        {
            let spacing = spacing(self.interval);
            let margin = self.min_gap.saturating_sub(spacing) / 2;
            self.min_gap = spacing.saturating_add(margin).max(base);
            self.widened_at = self.widened_at.saturating_add(LEARNED_GAP_RELAX_NANOS);
        }
    }

    /// [`Pacer::postpone`], if the last start is still the one at `sent`: a schedule that
    /// others have taken slots on since has moved on (a shared scope), and must not stall them.
    pub(crate) fn postpone_after(&mut self, sent: u64, by: u64) {
        if self.last_start == Some(sent) {
            self.postpone(by);
        }
    }

    /// Move the schedule `by` nanoseconds later, as if everything taken so far had started
    /// that much later.
    pub(crate) fn postpone(&mut self, by: u64) {
        if self.interval == 0 {
            return;
        }
        self.tat = self.tat.saturating_add(by);
        self.last_start = self.last_start.map(|last| last.saturating_add(by));
    }

    /// The same schedule under a new limit (set at run time): what was taken stands, so the
    /// next slot never comes earlier than the old limit had it.
    pub(crate) fn relimit(&self, limit: Option<&Limit>) -> Self {
        let fresh = Pacer::new(limit);
        // a larger burst would let its extra capacity go at once on top of what was just
        // taken: charge it to the schedule, as growing the burst does
        let charge = match self.last_start {
            Some(_) => fresh.tolerance.saturating_sub(self.tolerance),
            None => 0,
        };
        Pacer {
            tat: self.tat.saturating_add(charge),
            last_start: self.last_start,
            ..fresh
        }
    }

    /// Where the schedule stands: the earliest its next unit may start, and its last start
    /// (`None` while unpaced: it holds no promise).
    pub(crate) fn position(&self) -> Option<(u64, Option<u64>)> {
        let next = due_at(self.tat, 1, self.interval, self.tolerance);
        (self.interval > 0).then_some((next, self.last_start))
    }

    /// Take over another schedule's position (a limit that moved here from another record):
    /// nothing starts before `earliest`, whatever burst this schedule allows (it counts as
    /// spent there), nor sooner than this schedule allows.
    pub(crate) fn take_over(&mut self, earliest: u64, last_start: Option<u64>) {
        // the theoretical arrival time at which one unit is due at `earliest`
        let spent = earliest
            .saturating_add(self.tolerance.max(self.interval))
            .saturating_sub(self.interval);
        self.tat = self.tat.max(spent);
        self.last_start = self.last_start.max(last_start);
    }

    /// When `cost` units could start if `queued` units ahead of them go first (never before
    /// `now`).
    pub(crate) fn estimate(&self, now: u64, queued: u64, cost: u32, slower: Option<u64>) -> u64 {
        let cost = u64::from(cost.max(1));
        let interval = self.unit_interval(cost, slower);
        if interval == 0 {
            return now;
        }
        // the queue's units ahead, then this request's, on the schedule
        let ahead = queued.saturating_mul(interval);
        let own = self.due(cost, interval).saturating_sub(self.tat);
        let due = self.tat.saturating_add(ahead).saturating_add(own);
        let gap = self
            .last_start
            .map_or(0, |last| last.saturating_add(self.min_gap));
        due.max(gap).max(now)
    }

    /// The configured limit, if any.
    pub(crate) fn limit(&self) -> Option<Limit> {
        self.limit
    }

    /// The spacing of the configured limit (0: unpaced).
    pub(crate) fn interval(&self) -> u64 {
        self.interval
    }

    /// The least spacing of consecutive starts in force: the configured limit's, or the gap
    /// between starts where that is longer (a spaced schedule, its gap widened by refusals).
    pub(crate) fn spacing_in_force(&self) -> u64 {
        self.interval.max(self.min_gap)
    }

    /// The least gap between consecutive starts in force (0: none).
    pub(crate) fn min_gap(&self) -> u64 {
        self.min_gap
    }

    /// True when forgetting this schedule changes nothing: the bucket is full at `now`, and
    /// a whole window (its margin included) has passed since the last start. A fresh schedule
    /// lets a request of any cost within the limit go at once (its burst grows to the cost,
    /// see `schedule`), which only a full window since the last start keeps within the limit.
    pub(crate) fn is_idle(&self, now: u64) -> bool {
        let window = self.limit.map_or(0, |limit| {
            let window = u64::try_from(limit.window().as_nanos()).unwrap_or(u64::MAX);
            window.saturating_add(limit.margin_nanos())
        });
        self.tat <= now
            && self
                .last_start
                .is_none_or(|l| l.saturating_add(self.min_gap.max(window)) <= now)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const MS: u64 = 1_000_000;

    /// Wake on the timer's millisecond tick at or after `at`, plus `late` (a busy runtime).
    fn wake(at: u64, late: u64) -> u64 {
        at.div_ceil(TICK_NANOS) * TICK_NANOS + late
    }

    /// Serve one request arriving at `now` as the middleware does: ask, or sleep until told
    /// (waking on a tick, `late` after it), and ask again. Returns its start.
    fn take(p: &mut Pacer, mut now: u64, cost: u32, late: u64) -> u64 {
        loop {
            match p.acquire(now, cost, None) {
                Pace::Admit => return now,
                Pace::Wait(at) => now = wake(at, late).max(now),
            }
        }
    }

    fn max_in_any_window(starts: &[u64], window: u64) -> usize {
        let mut most = 0;
        let mut first = 0;
        for (i, &s) in starts.iter().enumerate() {
            while s - starts[first] >= window {
                first += 1;
            }
            most = most.max(i + 1 - first);
        }
        most
    }

    #[test]
    fn smooth_limit_spaces_requests_exactly() {
        let mut p = Pacer::new(Some(&Limit::per_second(10)));
        let mut now = 0;
        let mut starts = Vec::new();
        for _ in 0..5 {
            now = take(&mut p, now, 1, 0);
            starts.push(now / MS);
        }
        assert_eq!(starts, [0, 102, 204, 306, 408]);
    }

    #[test]
    fn burst_goes_at_once_then_refills_at_the_lowered_rate() {
        let limit = Limit::per_second(10).burst(4);
        let mut p = Pacer::new(Some(&limit));
        let starts: Vec<u64> = (0..6).map(|_| take(&mut p, 0, 1, 0)).collect();
        assert_eq!(&starts[..4], &[0; 4], "the burst goes at once");
        assert_eq!(starts[4], wake(145_714_286, 0), "one interval later");
        assert_eq!(starts[5], wake(2 * 145_714_286, 0), "no drift");
    }

    #[test]
    fn a_late_waker_keeps_its_slot_and_the_next_ones_are_due_at_once() {
        // 5000/s: 204 us apart; the timer wakes on 1 ms ticks
        let mut p = Pacer::new(Some(&Limit::per_second(5000)));
        let mut now = 0;
        let mut starts = Vec::new();
        for _ in 0..10_000 {
            now = take(&mut p, now, 1, 0);
            starts.push(now);
        }
        let span = (starts[9_999] - starts[0]) as f64 / 1e9;
        let rate = 9_999.0 / span;
        assert!(rate >= 0.97 * 5000.0, "sustained {rate:.0}/s");
        assert!(max_in_any_window(&starts, 1_000 * MS) <= 5000);
    }

    #[test]
    fn spaced_limits_never_start_two_closer_than_the_server_allows() {
        // 200/s: the server (a leaky bucket, burst 0) wants 5 ms between any two
        let mut p = Pacer::new(Some(&Limit::per_second(200)));
        assert!(p.wants_precise_wakes());
        let mut now = 0;
        let mut starts = Vec::new();
        for i in 0..1_000u64 {
            // every 7th wake is 1 ms late, the others on the slot (precise wakes); at 200/s the
            // gap (5.25 ms) is longer than the interval (5.1 ms), so lateness is not caught up
            let late = if i % 7 == 0 { MS } else { 0 };
            now = loop {
                match p.acquire(now, 1, None) {
                    Pace::Admit => break now,
                    Pace::Wait(at) => now = at + late,
                }
            };
            starts.push(now);
        }
        let closest = starts.windows(2).map(|w| w[1] - w[0]).min().expect("gaps");
        assert!(
            closest >= 5 * MS + GAP_MARGIN_NANOS,
            "closest gap {closest} ns: the server's 5 ms and the gap margin"
        );
        let rate = 999.0 / ((starts[999] - starts[0]) as f64 / 1e9);
        assert!(rate >= 0.90 * 200.0, "sustained {rate:.1}/s");
    }

    #[test]
    fn the_gap_margin_is_absolute_and_bounded_by_a_share_of_the_spacing() {
        let gap = |limit: Limit| Pacer::new(Some(&limit)).min_gap;
        assert_eq!(gap(Limit::per_second(200)), 5_250_000, "250 us on 5 ms");
        assert_eq!(gap(Limit::per_second(100)), 10_250_000, "250 us on 10 ms");
        assert_eq!(gap(Limit::per_second(10)), 101 * MS, "1% of 100 ms is more");
        assert_eq!(
            gap(Limit::per_second(500)),
            2_100_000,
            "capped at 5% of 2 ms"
        );
        assert_eq!(gap(Limit::per_second(1000)), 0, "batched per tick: no gap");
        assert_eq!(gap(Limit::per_second(200).burst(2)), 0, "a burst: no gap");
        assert_eq!(
            sustained_interval(&Limit::per_second(200)),
            5_250_000,
            "the gap is longer than the interval (5.1 ms): it sets the rate"
        );
        assert_eq!(sustained_interval(&Limit::per_second(10)), 102 * MS);
    }

    #[test]
    fn refusals_widen_the_gap_once_per_signal_up_to_a_cap_and_it_relaxes_back() {
        let mut p = Pacer::new(Some(&Limit::per_second(200)));
        let s = 30 * 1000 * MS;
        assert!(p.widen_gap(10 * MS, 9 * MS), "250 us -> 375 us");
        assert_eq!(p.min_gap, 5_375_000);
        assert!(
            !p.widen_gap(12 * MS, 9 * MS),
            "a start before the widening: the same signal"
        );
        assert_eq!(p.min_gap, 5_375_000);
        let mut gaps = vec![p.min_gap];
        for at in 2..20 {
            p.widen_gap(at * 10 * MS, at * 10 * MS - 1);
            gaps.push(p.min_gap);
        }
        assert_eq!(gaps[1], 5_562_500, "x1.5 again");
        assert!(gaps.windows(2).all(|w| w[0] <= w[1]), "{gaps:?}");
        assert_eq!(p.min_gap, 10 * MS, "capped at 100% of the 5 ms spacing");
        let (plain, _) = p.plain();
        assert_eq!(plain.min_gap, 10 * MS, "the lane keeps the learned gap");
        let last = 190 * MS;
        p.take(last + s - 1, 1, None);
        assert_eq!(p.min_gap, 10 * MS, "not yet relaxed");
        p.take(last + s, 1, None);
        assert_eq!(p.min_gap, 7_500_000, "halved after 30 s");
        p.take(last + 10 * s, 1, None);
        assert_eq!(p.min_gap, 5_250_000, "back to the configured gap, no lower");
        let mut burst = Pacer::new(Some(&Limit::per_second(200).burst(5)));
        assert!(!burst.widen_gap(MS, 0), "a burst has no gap to widen");
        assert_eq!(burst.min_gap, 0);
    }

    #[test]
    fn the_lane_keeps_the_gap_after_a_late_start() {
        // 200/s: a start 3 ms late keeps its slot, but the next may not follow 2.1 ms later
        let p = Pacer::new(Some(&Limit::per_second(200)));
        let (plain, tat) = p.plain();
        let late = tat + 3 * MS;
        let next = plain.step(tat, late, 1).expect("due");
        assert_eq!(next, late + 5_250_000, "the gap from the late start");
        assert_eq!(plain.step(next, next - 1, 1), None, "not before it");
        // at 5000/s (no gap) the late start's slot is kept and the next is due at once
        let p = Pacer::new(Some(&Limit::per_second(5000)));
        let (plain, tat) = p.plain();
        let next = plain.step(tat, tat + 3 * MS, 1).expect("due");
        assert!(next < tat + 3 * MS, "lateness is caught up");
    }

    #[test]
    fn a_slowed_spaced_schedule_catches_up_lateness_as_the_configured_one_does() {
        // 10/s (102 ms, gap 101 ms) slowed to 8/s: a start 0.5 ms late is followed by one on
        // its slot, not 125 ms after the late start
        let mut p = Pacer::new(Some(&Limit::per_second(10)));
        let slow = Some(125 * MS);
        assert_eq!(p.acquire(0, 1, slow), Pace::Admit);
        assert_eq!(p.acquire(0, 1, slow), Pace::Wait(125 * MS));
        let late = 125 * MS + MS / 2;
        assert_eq!(p.acquire(late, 1, slow), Pace::Admit);
        assert_eq!(
            p.acquire(late, 1, slow),
            Pace::Wait(250 * MS),
            "the slot itself: the lateness is caught up"
        );
        // at 200/s the gap (5.25 ms) is longer than the interval (5.1 ms): nothing to catch up
        // with, and slowed starts keep the slower spacing from the last one
        let mut p = Pacer::new(Some(&Limit::per_second(200)));
        let slow = Some(6 * MS);
        assert_eq!(p.acquire(0, 1, slow), Pace::Admit);
        assert_eq!(p.acquire(6 * MS + MS / 2, 1, slow), Pace::Admit);
        assert_eq!(
            p.acquire(6 * MS + MS / 2, 1, slow),
            Pace::Wait(12 * MS + MS / 2)
        );
    }

    #[test]
    fn slowing_down_never_moves_the_next_slot_earlier() {
        // burst 10, then slowed to 1/s: the 11th start must still wait for the window
        let limit = Limit::per_second(10).burst(10);
        let mut p = Pacer::new(Some(&limit));
        for _ in 0..10 {
            assert_eq!(p.acquire(0, 1, None), Pace::Admit);
        }
        let slow = Some(1_000 * MS);
        match p.acquire(0, 1, slow) {
            Pace::Wait(at) => assert!(at >= 1_000 * MS, "next slot at {at}"),
            Pace::Admit => panic!("an 11th start within the window"),
        }
        let unslowed = Pacer::new(Some(&limit));
        let _ = unslowed;
    }

    #[test]
    fn cost_takes_that_many_slots() {
        // 3 units at once count like a burst of 3: 8 refills per 1.02 s window, 127.5 ms each
        let mut p = Pacer::new(Some(&Limit::per_second(10)));
        assert_eq!(
            take(&mut p, 0, 3, 0),
            0,
            "the bucket is full: they go at once"
        );
        assert_eq!(
            take(&mut p, 0, 1, 0),
            wake(127_500_000, 0),
            "then one slot of the schedule spaced for bursts of 3"
        );
    }

    #[test]
    fn costs_above_the_burst_keep_the_window_and_their_rate() {
        // 2000 units per second, requests of 300 units: one every 180 ms, not every 306 ms
        let limit = Limit::per_second(2000);
        let mut p = Pacer::new(Some(&limit));
        let starts: Vec<u64> = (0..10).map(|_| take(&mut p, 0, 300, 0)).collect();
        // 300 units count at once, like a burst of 300: (2000 − 300 + 1) per 1.02 s window is
        // what keeps the promise (the best any pacer can do is 6 × 300 = 1800 in a window)
        let span = (starts[9] - starts[0]) as f64 / 1e9;
        let units_per_second = 9.0 * 300.0 / span;
        let promised = 1701.0 / 1.02;
        assert!(
            units_per_second >= 0.99 * promised,
            "{units_per_second:.0} units/s from {starts:?}"
        );
        let mut units: Vec<u64> = Vec::new();
        for s in &starts {
            units.extend(std::iter::repeat_n(*s, 300));
        }
        assert!(
            max_in_any_window(&units, 1_000 * MS) <= 2000,
            "the window holds"
        );
    }

    #[test]
    fn a_larger_burst_set_at_run_time_does_not_let_a_second_window_through() {
        // 10/s, 10 sent in the last second; then the same limit with burst 10
        let limit = Limit::per_second(10);
        let mut p = Pacer::new(Some(&limit));
        let mut starts: Vec<u64> = Vec::new();
        let mut now = 0;
        for _ in 0..10 {
            now = take(&mut p, now, 1, 0);
            starts.push(now);
        }
        let mut p = p.relimit(Some(&limit.burst(10)));
        for _ in 0..10 {
            now = take(&mut p, now, 1, 0);
            starts.push(now);
        }
        assert!(max_in_any_window(&starts, 1_000 * MS) <= 10, "{starts:?}");
    }

    #[test]
    fn estimate_counts_the_queue_ahead() {
        let mut p = Pacer::new(Some(&Limit::per_second(10)));
        assert_eq!(p.acquire(0, 1, None), Pace::Admit);
        assert_eq!(p.estimate(0, 0, 1, None), 102 * MS);
        assert_eq!(p.estimate(0, 4, 1, None), 510 * MS, "4 ahead: the 5th slot");
        assert_eq!(p.estimate(200 * MS, 0, 1, None), 200 * MS);
        assert!(!p.is_idle(50 * MS));
        // the slot is free at 102 ms, but a fresh schedule would let a costly request go at
        // once: idle only a window (and its margin) after the last start
        assert!(!p.is_idle(200 * MS));
        assert!(!p.is_idle(1_000 * MS));
        assert!(p.is_idle(1_100 * MS));
    }

    #[test]
    fn unpaced_admits_at_once_unless_slowed() {
        let mut p = Pacer::new(None);
        assert_eq!(p.acquire(0, 1, None), Pace::Admit);
        assert_eq!(p.acquire(0, 1, None), Pace::Admit);
        assert_eq!(
            p.acquire(0, 1, Some(100 * MS)),
            Pace::Wait(100 * MS),
            "slowed, the spacing counts from the last start"
        );
        assert_eq!(p.acquire(100 * MS, 1, Some(100 * MS)), Pace::Admit);
        assert_eq!(p.acquire(150 * MS, 1, Some(100 * MS)), Pace::Wait(200 * MS));
    }

    proptest::proptest! {
        /// The promise, for any limit, any arrival pattern and any lateness of the wakes:
        /// requests served one after another (FIFO, each woken on the millisecond tick at or
        /// after its slot, then up to 10 ms late) never put more than `n` starts in any window
        /// longer than the schedule's slack.
        #[test]
        fn no_window_ever_holds_more_than_n(
            n in 1u32..40,
            window_ms in 1u64..5_000,
            burst_share in 0.0f64..1.0,
            gaps_ms in proptest::collection::vec(0u64..300, 1..200),
            lateness in proptest::collection::vec(0u64..10_000_000, 1..50),
            costs in proptest::collection::vec(1u32..40, 1..20),
        ) {
            let window = Duration::from_millis(window_ms);
            let burst = 1 + ((f64::from(n - 1)) * burst_share) as u32;
            let limit = Limit::per(n, window).burst(burst);
            let mut p = Pacer::new(Some(&limit));
            let mut now = 0u64;
            let mut starts = Vec::new();
            for (i, gap) in gaps_ms.into_iter().enumerate() {
                now = now.max(starts.last().copied().unwrap_or(0)) + gap * MS;
                let late = lateness[i % lateness.len()];
                // every unit of a request counts at its start
                let cost = costs[i % costs.len()].min(n);
                now = take(&mut p, now, cost, late);
                starts.extend(std::iter::repeat_n(now, cost as usize));
            }
            let most = max_in_any_window(&starts, window_ms * MS);
            proptest::prop_assert!(most <= n as usize, "{limit:?}: {most} starts in one window");
        }
    }
}
