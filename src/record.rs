//! The record every schedule is kept in, a host's and a scope's alike.
//!
//! A request is paced by its host's record (scheme, host and port, see [`crate::host`]) and
//! by the record of every scope it falls in (see [`crate::scope`]). Both are a [`Record`]: a
//! key, the partition it is for, a [`Schedule`] behind one short-held lock, and a FIFO queue
//! for the requests it holds back. What only a host has (its breaker, retry budget, adaptive
//! rate, in-flight cap and lock-free lane) and what only a scope has (its kind and label) sit
//! beside the record, in [`Host`](crate::host::Host) and [`Scope`](crate::scope::Scope).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::limit::Limit;
use crate::pacing::Pacing;
use crate::pacing::cooldown::Why;
use crate::partition::Partition;
use crate::signals::{ServerHint, ServerScope, is_refusal};
use crate::snapshot::ServerQuota;

/// One record: its key, the partition (credential) it is for, its state `S` (a [`Schedule`]
/// and what its kind adds) behind one lock, and its pacing queue.
#[derive(Debug)]
pub(crate) struct Record<S> {
    /// The store key: scheme, host and port for a host; partition, kind, host and name for a
    /// scope.
    pub(crate) key: Arc<str>,
    /// The partition this record is for, if requests are partitioned.
    pub(crate) partition: Option<Partition>,
    state: Mutex<S>,
    /// The pacing queue: requests this record holds back wait here, one at a time computing
    /// and sleeping. tokio's semaphore is FIFO, and a dropped waiter gives its turn back
    /// without having taken a slot.
    pub(crate) turnstile: Semaphore,
}

impl<S> Record<S> {
    pub(crate) fn new(key: Arc<str>, partition: Option<Partition>, state: S) -> Self {
        Record {
            key,
            partition,
            state: Mutex::new(state),
            turnstile: Semaphore::new(1),
        }
    }

    /// Lock the state. A panic while the lock was held cannot leave it inconsistent in a way
    /// that matters more than losing the record's pacing, so a poisoned lock is used as is.
    pub(crate) fn lock(&self) -> MutexGuard<'_, S> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What every record paces by: the pacing (cooldown, server quota, configured schedule), the
/// configuration generation its limit comes from, and when it was last used.
#[derive(Debug)]
pub(crate) struct Schedule {
    pub(crate) pacing: Pacing,
    /// The configuration generation the limit (the pacing's) comes from.
    pub(crate) generation: u64,
    /// When the record was last used, in nanoseconds on the pacing's clock.
    last_used: u64,
}

/// An answer, read once: every record it concerns learns from this one value (the host's
/// through [`HostState::observe`](crate::host::HostState::observe), each scope's through the
/// [`Lesson`] made from it).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reply<'a> {
    pub(crate) status: http::StatusCode,
    /// What the server said about pacing.
    pub(crate) hint: &'a ServerHint,
    /// When the attempt was sent.
    pub(crate) sent_at: Instant,
    /// A refusal: a 429, or a 403 that says it is a rate limit (see [`is_refusal`]).
    pub(crate) refused: bool,
    /// The quota the server named for the request, when the answer's quota headers or pause
    /// are about it (they go to that scope, not the host's record, unless the refusal is
    /// global).
    pub(crate) named: Option<&'a ServerScope>,
}

impl<'a> Reply<'a> {
    /// An answer with `status` and `hint` to an attempt sent at `sent_at`.
    pub(crate) fn read(status: http::StatusCode, hint: &'a ServerHint, sent_at: Instant) -> Self {
        Reply {
            status,
            hint,
            sent_at,
            refused: is_refusal(status, hint),
            // a named quota takes the answer's pause and quota, unless it has neither (then
            // the host does, so that every refusal slows something)
            named: hint
                .server_scope
                .as_ref()
                .filter(|_| hint.remaining.is_some() || hint.retry_after.is_some()),
        }
    }
}

/// What one answer tells one schedule, worked out once per answer: the host's record and every
/// scope the answer concerns take theirs through [`Schedule::observe`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lesson<'a> {
    /// When the attempt was sent.
    pub(crate) sent_at: Instant,
    /// The server's pause for this schedule (`Retry-After`), capped.
    pub(crate) retry_after: Option<Duration>,
    /// What the answer says of the quota this schedule counts.
    pub(crate) quota: Quota<'a>,
    /// The quota this schedule counts is spent until then (a unit's: OpenAI's tokens).
    pub(crate) spent_until: Option<Instant>,
    /// Answers were accepted lately (a refusal then says the rate is too high, not that the
    /// quota is unknown).
    pub(crate) accepted_any: bool,
    /// The answer is a refusal this schedule takes its part of: unless a cooldown says it all
    /// (a spent quota; a `Retry-After` with nothing accepted to learn a rate from), a spaced
    /// schedule widens the gap between its starts.
    pub(crate) refused: bool,
    /// The answer to the schedule's first request (its scout) came this long after it was sent:
    /// the server may have seen the scout as late as that, so the schedule starts from the
    /// answer, while the scout is still its last start.
    pub(crate) first_answer: Option<Duration>,
}

/// What an answer says of the quota a schedule counts (see [`Lesson`]).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Quota<'a> {
    /// Nothing this schedule counts.
    Silent,
    /// Its quota headers are about a quota the server named, not this one: a scout's answer
    /// still ends the schedule's first contact.
    Elsewhere { scout: bool },
    /// Count the answer (its status and headers); `scout`: it answers the schedule's scout;
    /// `sent`: when the request was sent (a host's record learns from it where the server's
    /// fixed windows start; a quota the server named, which window an answer is from: see
    /// `QuotaTracker::observe`).
    Count {
        scout: bool,
        status: u16,
        hint: &'a ServerHint,
        sent: Option<Instant>,
    },
}

impl Lesson<'_> {
    /// An answer to an attempt sent at `sent_at` that tells the schedule nothing yet.
    pub(crate) fn none(sent_at: Instant) -> Self {
        Lesson {
            sent_at,
            retry_after: None,
            quota: Quota::Silent,
            spent_until: None,
            accepted_any: true,
            refused: false,
            first_answer: None,
        }
    }
}

/// What a schedule learned from a [`Lesson`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Learned {
    /// The refusal slowed the schedule (no cooldown said it all).
    pub(crate) slowed: bool,
    /// A spaced schedule's gap between starts widened to this.
    pub(crate) gap: Option<Duration>,
}

/// The part of a snapshot every record has (see [`Schedule::view`]).
pub(crate) struct View {
    pub(crate) limit: Option<Limit>,
    pub(crate) next_slot_in: Duration,
    pub(crate) interval: Duration,
    pub(crate) cooldown_in: Option<Duration>,
    pub(crate) server_quota: Option<ServerQuota>,
}

impl Schedule {
    /// A schedule paced by `limit` (or unpaced) from `now`, as in [`Pacing::new`].
    pub(crate) fn new(
        limit: Option<&Limit>,
        configured: bool,
        generation: u64,
        now: Instant,
        first_contact: bool,
    ) -> Self {
        Schedule {
            pacing: Pacing::new(limit, configured, now, first_contact),
            generation,
            last_used: 0, // the clock starts now
        }
    }

    /// The configured limit, if any (the pacing holds it).
    pub(crate) fn limit(&self) -> Option<Limit> {
        self.pacing.limit()
    }

    /// Mark the record as used at `now`.
    pub(crate) fn touch(&mut self, now: Instant) {
        self.last_used = self.pacing.nanos(now);
    }

    /// Pace by `limit` (configured: see [`Pacing::new`]) from the next request on, as
    /// configuration generation `generation` says; what was taken stands. True when the limit
    /// changed.
    pub(crate) fn relimit(
        &mut self,
        limit: Option<Limit>,
        configured: bool,
        generation: u64,
    ) -> bool {
        self.generation = generation;
        if self.limit() == limit {
            // a limit that paces the record from outside may have come or gone
            if self.pacing.quota.is_configured() != configured {
                self.pacing.quota.set_configured(configured);
            }
            return false;
        }
        self.pacing.relimit(limit.as_ref(), configured);
        true
    }

    /// True when forgetting the schedule changes nothing at `now`: unused for `idle_after`,
    /// and no promise pending (a slot ahead, a cooldown, a quota window).
    pub(crate) fn is_idle(&self, now: Instant, idle_after: Duration) -> bool {
        let unused = self.pacing.nanos(now).saturating_sub(self.last_used);
        Duration::from_nanos(unused) >= idle_after && self.pacing.is_idle(now)
    }

    /// Take an answer's lesson at `now`: the server's pause, the first answer, the quota's
    /// count, and a refusal's slowing, in that order (a spent quota's cooldown is exact and
    /// says all a refusal does).
    pub(crate) fn observe(&mut self, now: Instant, lesson: &Lesson<'_>) -> Learned {
        let pacing = &mut self.pacing;
        if let Some(wait) = lesson.retry_after {
            pacing.cool_down(crate::time::far_add(now, wait), Why::RetryAfter);
        }
        if let Some(latency) = lesson.first_answer {
            pacing.first_answer_of(lesson.sent_at, latency);
        }
        let spent = match lesson.quota {
            Quota::Silent => None,
            Quota::Elsewhere { scout } => {
                if scout {
                    pacing.quota.release_scout();
                }
                pacing.quota.end_first_contact();
                None
            }
            Quota::Count {
                scout,
                status,
                hint,
                sent,
            } => pacing.observe_quota(now, sent, scout, status, hint, lesson.accepted_any),
        };
        if let Some(until) = lesson.spent_until {
            pacing.cool_down(until, Why::QuotaSpent);
        }
        let spent = spent.is_some() || lesson.spent_until.is_some();
        let said_it_all = spent || (lesson.retry_after.is_some() && !lesson.accepted_any);
        let slowed = lesson.refused && !said_it_all;
        let gap = if slowed {
            pacing.widen_gap(now, lesson.sent_at)
        } else {
            None
        };
        self.touch(now);
        Learned { slowed, gap }
    }

    /// Until when the server's word holds requests back here, at `now`: the end of a cooldown,
    /// or of the quota window counted.
    pub(crate) fn holds_until(&self, now: Instant) -> Option<Instant> {
        let counted = self.pacing.quota.remaining(now);
        let reset = counted.map(|quota| now + quota.resets_in);
        self.pacing.cooldown_until(now).max(reset)
    }

    /// What a snapshot shows of the schedule at `now`; `extra` as in [`Pacing::peek`].
    pub(crate) fn view(&self, now: Instant, extra: Option<u64>) -> View {
        View {
            limit: self.limit(),
            next_slot_in: self.pacing.next_slot_in(now, extra),
            interval: self.pacing.interval(now, extra),
            cooldown_in: self
                .pacing
                .cooldown_until(now)
                .map(|until| until.saturating_duration_since(now)),
            server_quota: self.pacing.quota.remaining(now),
        }
    }
}
