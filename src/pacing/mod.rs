//! The rate core: what decides when the next request of a scope may start.
//!
//! One owner per concern, asked in this order by [`HostState::decide`](crate::host::HostState):
//!
//! - [`cooldown`]: every server-ordered "not before T" (Retry-After, a spent quota);
//! - [`quota`]: the server's quota as we count it, and first contact with a host whose quota we
//!   do not know yet (at most a window of scouts out at once);
//! - [`adaptive`]: the rate we adapt to after refusals that say nothing, bounded by the
//!   configured limit;
//! - [`gcra`]: the schedule itself, pure GCRA, window-exact, slowed by the two above;
//! - [`lane`]: the lock-free path a host's requests take while nothing but its configured
//!   limit paces it;
//! - [`timer`]: waits that end on a sub-millisecond slot;
//! - [`window_start`]: where a fixed window ends, inferred from its first answer.

pub(crate) mod adaptive;
pub(crate) mod cooldown;
pub(crate) mod gcra;
pub(crate) mod lane;
pub(crate) mod quota;
pub(crate) mod timer;
pub(crate) mod window_start;

use std::time::Duration;

use tokio::time::Instant;

use crate::limit::Limit;
use crate::signals::ServerHint;
use crate::time::{far_add, saturating_nanos};
use cooldown::{Cooldown, Why};
use gcra::{Pacer, Plain};
use lane::Admitted;
use quota::{Gate, QuotaTracker};

/// The pacing decision for one attempt, all owners (and all scopes) considered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Send now; the slots are taken. `scout`: this attempt reads a quota we do not know yet.
    Admit { scout: bool },
    /// A configured limit's schedule: not before this instant.
    Wait(Instant),
    /// The server's word slows the scope (a low quota spread over its reset, or the adaptive
    /// rate after refusals): not before this instant, unless an answer changes it.
    Slowed(Instant),
    /// The server's word cools the scope down (Retry-After, spent quota) until this instant.
    CoolingDown(Instant),
    /// First contact: the scouts are out; wait for an answer, or until this instant.
    Hold(Instant),
}

/// Where a schedule stands, in instants: what a limit carries when it moves between a host's
/// record and its host-wide scope at run time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Position {
    /// The earliest the next unit may start.
    earliest: Instant,
    last_start: Option<Instant>,
}

/// One scope's pacing state: every owner, asked in order (cooldown, first contact, schedule).
#[derive(Debug)]
pub(crate) struct Pacing {
    clock: Clock,
    pacer: Pacer,
    cooldown: Cooldown,
    pub(crate) quota: QuotaTracker,
}

impl Pacing {
    /// A scope paced by `limit` (or unpaced); `configured`: the user configured its quota (by
    /// `limit`, or by a limit that paces it from outside); `first_contact`: its quota is
    /// unknown, so it is learned with scouts (see [`quota`]).
    pub(crate) fn new(
        limit: Option<&Limit>,
        configured: bool,
        now: Instant,
        first_contact: bool,
    ) -> Self {
        Pacing {
            clock: Clock::starting(now),
            pacer: Pacer::new(limit),
            cooldown: Cooldown::default(),
            quota: QuotaTracker::new(now, configured, first_contact),
        }
    }

    /// The scope's time scale.
    pub(crate) fn clock(&self) -> Clock {
        self.clock
    }

    /// The plain schedule and where the [lane](lane) starts it, when nothing but the
    /// configured limit paces the scope: no cooldown, no quota being counted or learned.
    pub(crate) fn quiet(&self) -> Option<(Plain, u64)> {
        (self.cooldown.is_clear() && self.quota.is_unmetered()).then(|| self.pacer.plain())
    }

    /// Take the schedule back from the lane.
    pub(crate) fn resume(&mut self, admitted: &Admitted) {
        self.pacer
            .resume(admitted.tat.unwrap_or_default(), admitted.last);
    }

    /// Nanoseconds of `now` on this scope's clock.
    pub(crate) fn nanos(&self, now: Instant) -> u64 {
        self.clock.nanos(now)
    }

    /// The configured limit, if any.
    pub(crate) fn limit(&self) -> Option<Limit> {
        self.pacer.limit()
    }

    /// Pace to a new limit from the next request on; what was taken stands. `configured` as
    /// in [`Pacing::new`].
    pub(crate) fn relimit(&mut self, limit: Option<&Limit>, configured: bool) {
        self.pacer = self.pacer.relimit(limit);
        self.quota.set_configured(configured);
    }

    /// Where the schedule stands, for a limit that moves to another record (see
    /// [`Pacing::take_over`]); `None` while unpaced.
    pub(crate) fn position(&self) -> Option<Position> {
        let (earliest, last_start) = self.pacer.position()?;
        Some(Position {
            earliest: self.clock.instant(earliest),
            last_start: last_start.map(|at| self.clock.instant(at)),
        })
    }

    /// Take over the position of the schedule a limit moved from: nothing starts sooner than
    /// either allows.
    pub(crate) fn take_over(&mut self, from: Position) {
        let earliest = self.clock.nanos(from.earliest);
        let last_start = from.last_start.map(|at| self.clock.nanos(at));
        self.pacer.take_over(earliest, last_start);
    }

    /// True when waits should end on the slot itself (see [`gcra`]).
    pub(crate) fn wants_precise_wakes(&self) -> bool {
        self.pacer.wants_precise_wakes()
    }

    /// The spacing in force (nanoseconds per unit) when the server's word slows the scope:
    /// a low quota spread over its reset, or `extra` (the adaptive rate).
    fn slower(&self, now: Instant, extra: Option<u64>) -> Option<u64> {
        let spread = self.quota.spread(now).map(saturating_nanos);
        spread.max(extra)
    }

    /// May `cost` units start at `now`? `Ok(scout)` if so (nothing taken yet), else why not.
    pub(crate) fn peek(
        &mut self,
        now: Instant,
        cost: u32,
        extra: Option<u64>,
    ) -> Result<bool, Decision> {
        if let Some((until, _)) = self.cooldown.until(now) {
            return Err(Decision::CoolingDown(until));
        }
        self.cooldown.clear_passed(now);
        let scout = match self.quota.gate(now) {
            Gate::Hold(until) => return Err(Decision::Hold(until)),
            Gate::Go { scout } => scout,
        };
        let slower = self.slower(now, extra);
        match self.pacer.check(self.clock.nanos(now), cost, slower) {
            None => Ok(scout),
            Some(at) => {
                let until = self.clock.instant(at);
                Err(if slower.is_some_and(|s| s > self.pacer.interval()) {
                    Decision::Slowed(until)
                } else {
                    Decision::Wait(until)
                })
            }
        }
    }

    /// Take the slot [`Pacing::peek`] allowed.
    pub(crate) fn take(&mut self, now: Instant, cost: u32, scout: bool, extra: Option<u64>) {
        let slower = self.slower(now, extra);
        self.pacer.take(self.clock.nanos(now), cost, slower);
        if let Some(reset) = self.quota.on_send(now, cost, scout) {
            self.cooldown.cool_down(reset, Why::QuotaSpent);
        }
    }

    /// A refusal at `now` of an attempt that started at `sent_at`: on a spaced schedule, the
    /// gap between starts widens (see [`Pacer::widen_gap`]). Returns the new gap if it grew.
    pub(crate) fn widen_gap(&mut self, now: Instant, sent_at: Instant) -> Option<Duration> {
        self.pacer
            .widen_gap(self.clock.nanos(now), self.clock.nanos(sent_at))
            .then(|| Duration::from_nanos(self.pacer.min_gap()))
    }

    /// Cool the scope down until `until` (never shortens a cooldown in force).
    pub(crate) fn cool_down(&mut self, until: Instant, why: Why) {
        self.cooldown.cool_down(until, why);
    }

    /// The instant the scope's cooldown ends, if one is running.
    pub(crate) fn cooldown_until(&self, now: Instant) -> Option<Instant> {
        self.cooldown.until(now).map(|(until, _)| until)
    }

    /// The first answer to a scope's scout, sent at `sent_at`, came `latency` later: the
    /// server may have seen the scout as late as that, so the schedule starts from the answer,
    /// but only while the scout is still the scope's last start (a scope shared with other
    /// records, a host-wide one, is not stalled by a slow first answer on one port).
    pub(crate) fn first_answer_of(&mut self, sent_at: Instant, latency: Duration) {
        let sent = self.clock.nanos(sent_at);
        self.pacer.postpone_after(sent, saturating_nanos(latency));
    }

    /// Read an answer's quota (see [`QuotaTracker::observe`]); a quota it says is spent cools
    /// the scope down until its reset, which is returned.
    pub(crate) fn observe_quota(
        &mut self,
        now: Instant,
        sent_at: Option<Instant>,
        scout: bool,
        status: u16,
        hint: &ServerHint,
        accepted_any: bool,
    ) -> Option<Instant> {
        let spent = self
            .quota
            .observe(now, sent_at, scout, status, hint, accepted_any);
        if let Some(reset) = spent {
            self.cooldown.cool_down(reset, Why::QuotaSpent);
        }
        spent
    }

    /// When a request of `cost` alone would get its slot on the configured schedule or after a
    /// cooldown: the part of a wait that is certain (no answer can shorten it).
    pub(crate) fn certain_wait(&self, now: Instant, cost: u32) -> Instant {
        let slot = self
            .clock
            .instant(self.pacer.estimate(self.clock.nanos(now), 0, cost, None));
        self.cooldown_until(now)
            .map_or(slot, |until| until.max(slot))
    }

    /// How long a new request would wait for its slot now.
    pub(crate) fn next_slot_in(&self, now: Instant, extra: Option<u64>) -> Duration {
        let now_ns = self.clock.nanos(now);
        let at = self.pacer.estimate(now_ns, 0, 1, self.slower(now, extra));
        Duration::from_nanos(at - now_ns)
    }

    /// The spacing in force (zero: unpaced), a spaced schedule's gap between starts included.
    pub(crate) fn interval(&self, now: Instant, extra: Option<u64>) -> Duration {
        Duration::from_nanos(
            self.slower(now, extra)
                .unwrap_or(0)
                .max(self.pacer.spacing_in_force()),
        )
    }

    /// True when forgetting this changes nothing at `now`.
    pub(crate) fn is_idle(&self, now: Instant) -> bool {
        self.pacer.is_idle(self.clock.nanos(now))
            && self.cooldown.is_idle(now)
            && self.quota.is_idle(now)
    }
}

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
        saturating_nanos(at.saturating_duration_since(self.origin))
    }

    /// The instant of `nanos` on this scale, saturating far in the future rather than
    /// overflowing.
    pub(crate) fn instant(&self, nanos: u64) -> Instant {
        far_add(self.origin, Duration::from_nanos(nanos))
    }
}
