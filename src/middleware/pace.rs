//! The wait for a pacing slot: FIFO per host (and per scope while a scope holds the request
//! back), bounded by the deadline and `max_retry_after`, with the in-flight cap's place taken
//! only when the slot is.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, SemaphorePermit};
use tokio::time::Instant;

use super::admit::{self, Attempt};
use crate::builder::Config;
use crate::error::Error;
use crate::extensions::RequestOptions;
use crate::host::{Host, Queued};
use crate::observe::{self, WaitReason};
use crate::pacing::Decision;
use crate::scope::Scope;
use crate::signals::ServerScope;

/// How pacing ended for an attempt that may be sent.
pub(super) enum Paced {
    /// Send now: the slots are taken; the in-flight place, if the host has a cap, comes with it.
    Go(Option<OwnedSemaphorePermit>),
    /// The request's scopes changed since they were worked out: nothing was taken; work them
    /// out again and pace again. With the quota the server named for its route since (it paces
    /// in that scope too), or `None`: the configured limits changed at run time (the host's
    /// record follows the new ones, and so must the scopes).
    Rescope(Option<ServerScope>),
}

/// A quiet host's free slot, without the lock or the queue (see `pacing::lane`): the in-flight
/// place (if free) and the slot, or `None` to pace under the lock.
#[inline]
pub(super) fn quietly(
    host: &Host,
    scopes: &[(Arc<Scope>, u32)],
    attempt: &mut Attempt,
) -> Option<Option<OwnedSemaphorePermit>> {
    if !scopes.is_empty() {
        return None;
    }
    let permit = match &host.in_flight {
        None => None,
        Some(cap) => Some(Arc::clone(cap).try_acquire_owned().ok()?),
    };
    let now = Instant::now();
    if !host.try_admit(now, attempt.cost) {
        return None;
    }
    attempt.sent_at = Some(now);
    if attempt.admission.is_probe() {
        host.state().breaker.probe_sent(&attempt.admission, now);
    }
    Some(permit)
}

/// What a paced attempt waits with.
pub(super) struct Waits<'a> {
    pub(super) host: &'a Arc<Host>,
    /// The scopes the request falls in beside its host, with the units it takes in each.
    pub(super) scopes: &'a [(Arc<Scope>, u32)],
    pub(super) path: &'a str,
    /// The quota the server named for the route when the scopes were worked out.
    pub(super) named: Option<&'a ServerScope>,
    /// The configured limits' generation the host's record had when the scopes were worked
    /// out.
    pub(super) generation: u64,
    pub(super) config: &'a Config,
    pub(super) opts: &'a RequestOptions,
    /// Attempts already sent.
    pub(super) attempts: u32,
}

/// Where a waiting attempt stands in the queues it waits in.
#[derive(Default)]
struct Place<'a> {
    /// Its turn at the host's pacing queue (one waiter at a time decides and sleeps).
    turn: Option<SemaphorePermit<'a>>,
    /// Its turn at the queue of the scope that holds it back, and which scope.
    scope_turn: Option<(usize, SemaphorePermit<'a>)>,
    /// Counted in the host's queue.
    queued: Option<Queued<'a>>,
    /// After waiting its turn in a scope's queue, it asks the host once more without queueing
    /// behind the host's other requests again (it would wait for all of them).
    cut_in: bool,
    /// Its place under the in-flight cap, held only while it decides.
    in_flight: Option<OwnedSemaphorePermit>,
}

/// One decision and what it holds the attempt back for.
struct Decided {
    decision: Decision,
    /// The scope that holds it back (an index in `scopes`); `None`: the host.
    blocker: Option<usize>,
    /// The wait should end on the slot itself, not the timer tick after it.
    precise: bool,
}

impl<'a> Waits<'a> {
    /// Take a pacing slot for one attempt, waiting in FIFO order behind earlier requests.
    ///
    /// One waiter at a time (the holder of the turnstile) asks the schedule and sleeps; the
    /// others queue on the turnstile. Dropping the future at any point leaves the schedule
    /// untouched, so a cancelled waiter costs nobody a slot.
    ///
    /// A request fails at once only when its wait is certain to pass its deadline (the
    /// configured schedule, a server cooldown); waits the server's next answer may shorten
    /// (first contact, a slowed rate) and the queue ahead (whose requests may be cancelled) are
    /// waited out up to the deadline. Every wait the server's word imposes (a cooldown, a slowed
    /// rate) is bounded by `max_retry_after`: past it, the request fails with `CoolingDown`.
    pub(super) async fn pace(&self, attempt: &mut Attempt) -> Result<Paced, Error> {
        admit::fits(self.scopes)?;
        // with an observer, what held the attempt back last (and in which scope), and since when
        let watch = self.config.observers.get().map(|o| (o, Instant::now()));
        let mut held: Option<(WaitReason, Option<usize>)> = None;
        let mut place = self.first_place()?;
        loop {
            if place.turn.is_none() && !std::mem::take(&mut place.cut_in) {
                let acquired = self
                    .until_deadline(self.host.record.turnstile.acquire())
                    .await?;
                place.turn = Some(acquired.expect("the turnstile is never closed"));
            }
            if place.in_flight.is_none() && self.host.in_flight.is_some() {
                place.in_flight = self.in_flight_permit().await?;
            }
            let answered = self.host.answered.notified();
            tokio::pin!(answered);
            answered.as_mut().enable(); // before deciding, so an answer in between is not missed
            let now = Instant::now();
            let decided = match self.decide(now, attempt, &mut place) {
                Ok(decided) => decided,
                Err(changed) => return Ok(Paced::Rescope(changed)),
            }?;
            if let Decision::Admit { scout } = decided.decision {
                attempt.scout = scout;
                attempt.sent_at = Some(now);
                let in_flight = place.in_flight.take();
                if let Some((observer, started)) = watch
                    && place.queued.is_some()
                {
                    drop(place); // leave the queues before calling out
                    let (reason, scope) = held.unwrap_or((WaitReason::Pacing, None));
                    let scope = scope.map(|i| &*self.scopes[i].0.label);
                    let waited = now - started;
                    observe::waited(observer, self.host, scope, reason, waited, self.attempts);
                }
                return Ok(Paced::Go(in_flight));
            }
            self.refuse_past_bounds(&decided.decision, now)?;
            // waiting: the in-flight place goes to a request that can be sent
            place.in_flight = None;
            held = Some((wait_reason(&decided.decision), decided.blocker));
            if let Some(i) = decided.blocker {
                // let the host's other requests go while this one waits for scope `i`
                place.turn = None;
                place.cut_in = true;
                if place.scope_turn.as_ref().is_none_or(|(j, _)| *j != i) {
                    drop(place.scope_turn.take()); // one scope's queue at a time: never two held
                    let waiting = self.scopes[i].0.record.turnstile.acquire();
                    let acquired = self.until_deadline(waiting).await?;
                    place.scope_turn =
                        Some((i, acquired.expect("scope turnstiles are never closed")));
                    continue; // things may have changed while it queued: decide again
                }
            }
            self.sleep(&decided, now, answered).await;
        }
    }

    /// The attempt's place when it starts: the turn at once if nobody holds it; else in the
    /// queue, unless the wait certain to come (the schedule, a cooldown) passes the deadline.
    fn first_place(&self) -> Result<Place<'a>, Error> {
        let mut place = Place::default();
        if let Ok(turn) = self.host.record.turnstile.try_acquire() {
            place.turn = Some(turn);
            return Ok(place);
        }
        let now = Instant::now();
        let mut state = self.host.state();
        let certain = state.certain_wait(now, self.opts.cost, &self.lock_scopes());
        if self.opts.past_deadline(certain) {
            return Err(deadline_exceeded(
                self.host,
                self.attempts,
                Some(certain - now),
            ));
        }
        place.queued = Some(Queued::join(self.host, &mut state, self.opts.cost));
        Ok(place)
    }

    /// The scopes' locks, in key order (the host's is taken first: every request takes them so).
    fn lock_scopes(&self) -> Vec<(std::sync::MutexGuard<'a, crate::scope::ScopeState>, u32)> {
        self.scopes
            .iter()
            .map(|(s, units)| (s.state(), *units))
            .collect()
    }

    /// Decide under the host's lock (and the scopes'), the breaker asked again first.
    /// `Err`: the scopes changed since they were worked out (see [`Paced::Rescope`]).
    fn decide(
        &self,
        now: Instant,
        attempt: &mut Attempt,
        place: &mut Place<'a>,
    ) -> Result<Result<Decided, Error>, Option<ServerScope>> {
        let mut state = self.host.state();
        if state.schedule.generation != self.generation {
            return Err(None);
        }
        if let Some(learned) = state.named_scope(self.path)
            && Some(learned) != self.named
        {
            return Err(Some(learned.clone()));
        }
        let (transition, admitted) = admit::recheck(self.host, &mut state, attempt, now);
        if let Err(refused) = admitted {
            drop(state);
            admit::report_transition(self.host, self.config, transition);
            return Ok(Err(refused));
        }
        let mut locked = self.lock_scopes();
        let (decision, blocker) = state.decide(now, self.opts.cost, &mut locked);
        // the schedule that holds the request back says how to wake for its slot; read under
        // the lock: a limit set at run time changes it
        let precise = match blocker {
            Some(i) => locked[i].0.schedule.pacing.wants_precise_wakes(),
            None => state.wants_precise_wakes(),
        };
        drop(locked);
        match decision {
            Decision::Admit { .. } => {
                state.counters.waited += u64::from(place.queued.is_some());
                state.breaker.probe_sent(&attempt.admission, now);
            }
            _ if place.queued.is_none() => {
                place.queued = Some(Queued::join(self.host, &mut state, self.opts.cost));
            }
            _ => {}
        }
        drop(state);
        admit::report_transition(self.host, self.config, transition);
        Ok(Ok(Decided {
            decision,
            blocker,
            precise,
        }))
    }

    /// Fail at once when the wait is past what the server's word may impose
    /// (`max_retry_after`) or certain to pass the deadline.
    fn refuse_past_bounds(&self, decision: &Decision, now: Instant) -> Result<(), Error> {
        let (host, attempts, opts) = (self.host, self.attempts, self.opts);
        match *decision {
            Decision::CoolingDown(until) | Decision::Slowed(until)
                if until - now > self.config.max_retry_after =>
            {
                Err(cooling_down(host, until - now))
            }
            Decision::Wait(until) | Decision::CoolingDown(until) if opts.past_deadline(until) => {
                Err(deadline_exceeded(host, attempts, Some(until - now)))
            }
            Decision::Slowed(until) | Decision::Hold(until)
                if opts.deadline.is_some_and(|d| now >= d) =>
            {
                Err(deadline_exceeded(host, attempts, Some(until - now)))
            }
            _ => Ok(()),
        }
    }

    /// Sleep as the decision says: to the slot, to the end of a cooldown, or until an answer
    /// may change a wait the server's word set (never past the deadline).
    async fn sleep(
        &self,
        decided: &Decided,
        now: Instant,
        mut answered: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
    ) {
        let key = &self.host.record.key;
        match decided.decision {
            Decision::Wait(until) => {
                tracing::trace!(host = %key, reason = "pacing", wait = ?(until - now), "waiting for a pacing slot");
                if decided.precise {
                    sleep_precisely(until).await;
                } else if until - now >= LONG_WAIT {
                    // a breaker that opens meanwhile (an answer) fails the queue at once
                    let _ = tokio::time::timeout_at(until, answered).await;
                } else {
                    tokio::time::sleep_until(until).await;
                }
            }
            Decision::CoolingDown(until) => {
                tracing::debug!(host = %key, reason = "cooldown", wait = ?(until - now), "cooling down at the server's word: waiting");
                // answers are rare while cooling down; one may open the breaker
                let _ = tokio::time::timeout_at(until, answered).await;
            }
            Decision::Slowed(until) | Decision::Hold(until) => {
                // the next answer may change it (a quota reset, first contact ending): wake
                // on answers too, and never sleep past the deadline; a slowed spaced schedule
                // ends its wait on the slot, as the configured one does
                let reason = wait_reason(&decided.decision).as_str();
                tracing::trace!(host = %key, reason, wait = ?(until - now), "paced by the server's word");
                let until = self.opts.deadline.map_or(until, |d| d.min(until));
                if decided.precise && matches!(decided.decision, Decision::Slowed(_)) {
                    let slot = sleep_precisely(until);
                    tokio::pin!(slot);
                    // whichever comes first: the slot, or an answer
                    std::future::poll_fn(|cx| {
                        if slot.as_mut().poll(cx).is_ready()
                            || answered.as_mut().poll(cx).is_ready()
                        {
                            std::task::Poll::Ready(())
                        } else {
                            std::task::Poll::Pending
                        }
                    })
                    .await;
                } else {
                    let _ = tokio::time::timeout_at(until, answered).await;
                }
            }
            Decision::Admit { .. } => unreachable!("admitted before sleeping"),
        }
    }

    /// Wait (FIFO, bounded by the deadline) for a place under the host's in-flight cap. The
    /// permit is released when dropped: on success, on error, and when the request is cancelled.
    async fn in_flight_permit(&self) -> Result<Option<OwnedSemaphorePermit>, Error> {
        let Some(cap) = &self.host.in_flight else {
            return Ok(None);
        };
        // (tokio's semaphore hands released permits to waiters first, so this keeps FIFO order)
        if let Ok(permit) = Arc::clone(cap).try_acquire_owned() {
            return Ok(Some(permit));
        }
        tracing::trace!(host = %self.host.record.key, reason = "in_flight", "waiting under the in-flight cap");
        let started = Instant::now();
        let permit = self.until_deadline(Arc::clone(cap).acquire_owned()).await?;
        if let Some(observer) = self.config.observers.get() {
            let waited = started.elapsed();
            observe::waited(
                observer,
                self.host,
                None,
                WaitReason::InFlight,
                waited,
                self.attempts,
            );
        }
        Ok(Some(permit.expect("in-flight semaphores are never closed")))
    }

    /// Run `fut`, failing with `DeadlineExceeded` if the request's deadline passes first.
    async fn until_deadline<T>(&self, fut: impl Future<Output = T>) -> Result<T, Error> {
        match self.opts.deadline {
            None => Ok(fut.await),
            Some(deadline) => tokio::time::timeout_at(deadline, fut)
                .await
                .map_err(|_| deadline_exceeded(self.host, self.attempts, None)),
        }
    }
}

fn deadline_exceeded(host: &Host, attempts: u32, would_wait: Option<Duration>) -> Error {
    Error::DeadlineExceeded {
        host: host.record.key.to_string(),
        attempts,
        would_wait,
    }
}

fn cooling_down(host: &Host, retry_in: Duration) -> Error {
    Error::CoolingDown {
        host: host.record.key.to_string(),
        retry_in,
    }
}

/// A wait for a slot at least this long also wakes on answers (to learn at once that the
/// breaker opened): on schedules this slow, answers are rare, and each wakes one waiter.
const LONG_WAIT: Duration = Duration::from_secs(1);

/// What a pacing decision that is not `Admit` holds the attempt back for.
fn wait_reason(decision: &Decision) -> WaitReason {
    match decision {
        Decision::Wait(_) | Decision::Admit { .. } => WaitReason::Pacing,
        Decision::CoolingDown(_) => WaitReason::Cooldown,
        Decision::Slowed(_) => WaitReason::Slowed,
        Decision::Hold(_) => WaitReason::FirstContact,
    }
}

/// Sleep until `until` itself, not the timer tick after it (see [`crate::pacing::timer`]).
pub(super) async fn sleep_precisely(until: Instant) {
    crate::pacing::timer::sleep_precisely(until).await;
}
