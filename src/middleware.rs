//! The request loop: admit -> pace -> send -> record -> retry or return.
//!
//! Decisions are made elsewhere (the host's state decides pacing, reads answers and plans
//! retries; the breaker admits; the classifier says what may be retried); this file only
//! waits, sends and resends.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Extensions, Method};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use crate::breaker::{Admission, Transition};
use crate::builder::{Config, Polite};
use crate::error::Error;
use crate::extensions::RequestOptions;
use crate::extensions::Units;
use crate::host::{Host, NoRetry, Queued, StateGuard};
use crate::observe::{self, WaitReason};
use crate::pacing::Decision;
use crate::pacing::closure::Why;
use crate::retry::{Delays, Outcome, Verdict, classify, is_idempotent};
use crate::scope::{Scope, ScopeKind};
use crate::signals::{MAX_HINT, ServerHint, ServerScope, ServerScopeKind};

type Result<T> = reqwest_middleware::Result<T>;

#[async_trait::async_trait]
impl Middleware for Polite {
    async fn handle(
        &self,
        req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> Result<Response> {
        // borrowed in this block only: a request borrowed in the body would stay in this future
        // (boxed, and moved) beside the one `send` holds
        let (host, req) = {
            let req = req;
            let partition = self.partition_of(req.headers()).await?;
            (self.host_for(req.url(), partition), req)
        };
        let Some(host) = host else {
            return next.run(req, extensions).await; // no host: nothing to pace, reqwest decides
        };
        let mut attempts = 0;
        let Some(observer) = self.inner.config.observers.get() else {
            let sent = self.send(&host, req, extensions, next, &mut attempts).await;
            return sent.unwrap_or_else(|refused| Err(refused.into()));
        };
        let started = Instant::now();
        let sent = self.send(&host, req, extensions, next, &mut attempts).await;
        observe::finished(observer, &host, &sent, attempts, started.elapsed());
        sent.unwrap_or_else(|refused| Err(refused.into()))
    }
}

impl Polite {
    /// Admit, pace, send, record, and retry or return. `Err`: the middleware refused to send
    /// (nothing was sent for that attempt); `Ok`: the last attempt's outcome.
    ///
    /// Not an `async fn`: one keeps each argument twice in its future (as passed, and as bound
    /// in its body), and a request is 264 bytes, moved with the future.
    #[allow(clippy::manual_async_fn)]
    fn send(
        &self,
        host: &Arc<Host>,
        mut req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
        attempts: &mut u32,
    ) -> impl Future<Output = std::result::Result<Result<Response>, Error>> {
        async move {
            let config = &self.inner.config;
            let opts = RequestOptions::from_extensions(extensions);
            let safety = Safety::of(&req);
            let units = extensions.get::<Units>().cloned();
            // the request's own URL while it is here (no copy): before each send, req holds it
            let scopes_for = |url: &reqwest::Url, named: Option<&ServerScope>| {
                self.scopes_for(host, url, opts.cost, units.as_ref(), named)
            };
            // the first attempt: counted and admitted under one lock (see `begin`)
            let (mut named, mut attempt) = begin(self, host, req.url(), &opts, config)?;
            let mut scopes = scopes_for(req.url(), named.as_ref());
            // made on the first retry, and boxed: most requests never need it
            let mut backoff: Option<Box<Delays<SmallRng>>> = None;
            loop {
                let retries_left = !opts.no_retry && *attempts < config.max_retries;
                let spare = if retries_left { req.try_clone() } else { None };
                // the waits are boxed: the common case (a free place, a free slot) never builds
                // them, and this future stays small
                let in_flight = match host
                    .in_flight
                    .as_ref()
                    .map(|cap| Arc::clone(cap).try_acquire_owned())
                {
                    None => None,
                    Some(Ok(permit)) => Some(permit),
                    Some(Err(_)) => {
                        Box::pin(in_flight_permit(host, config, &opts, *attempts)).await?
                    }
                };
                let quiet = scopes.is_empty() && {
                    // a quiet host with a free slot: no lock, no queue (see `pacing::lane`)
                    let now = Instant::now();
                    let admitted = host.try_admit(now, opts.cost);
                    if admitted {
                        attempt.sent_at = Some(now);
                    }
                    admitted
                };
                // the server may name this route's quota while the request waits: pace again,
                // in that scope too
                while !quiet
                    && let Err(learned) = Box::pin(pace(
                        host,
                        &scopes,
                        req.url().path(),
                        named.as_ref(),
                        config,
                        &opts,
                        &mut attempt,
                        *attempts,
                    ))
                    .await?
                {
                    named = Some(learned);
                    scopes = scopes_for(req.url(), named.as_ref());
                }
                #[cfg(feature = "redis")]
                if let Some(store) = self.shared() {
                    let max_wait = config.max_retry_after;
                    crate::shared::pace(store, host, &scopes, &opts, max_wait, *attempts).await?;
                }
                if *attempts > 0 {
                    observe::record_resend(*attempts);
                }
                // the answer may teach its route's quota: the path is read from the copy kept for
                // a retry, or kept here when there is none
                let own_path: Option<Box<str>> = spare.is_none().then(|| req.url().path().into());
                let result = next.clone().run(req, extensions).await;
                drop(in_flight);
                let path = match (&spare, &own_path) {
                    (Some(spare), _) => spare.url().path(),
                    (None, own) => own.as_deref().unwrap_or_default(),
                };
                let answer = Answer {
                    scopes: &scopes,
                    path,
                    safety: &safety,
                    resend_count: *attempts,
                };
                *attempts += 1;
                let (verdict, closed_for) = record(self, host, attempt, &answer, &result);
                #[cfg(feature = "redis")]
                if let (Some(store), Some(wait)) = (self.shared(), closed_for) {
                    crate::shared::close(store, host, wait).await;
                }
                #[cfg(not(feature = "redis"))]
                let _ = closed_for;
                let Some(spare) = spare else {
                    return Ok(result); // out of retries, or a body that cannot be cloned: sent once
                };
                let Some(delay) = plan_retry(host, config, &opts, verdict, *attempts, &mut backoff)
                else {
                    return Ok(result);
                };
                if let Some(observer) = config.observers.get() {
                    observe::retrying(observer, host, &result, *attempts, delay);
                }
                drop(result);
                let slept = Instant::now();
                Box::pin(tokio::time::sleep(delay)).await; // boxed: most requests never sleep here
                if let Some(observer) = config.observers.get() {
                    let waited = slept.elapsed();
                    observe::waited(observer, host, None, WaitReason::Backoff, waited, *attempts);
                }
                req = spare;
                attempt = admit(host, config, &opts, *attempts)?;
            }
        }
    }
}

/// What [`record`] needs to know about the request beside its attempt.
struct Answer<'a> {
    /// The scopes the request falls in beside its host.
    scopes: &'a [(Arc<Scope>, u32)],
    path: &'a str,
    safety: &'a Safety,
    /// Attempts sent before this one.
    resend_count: u32,
}

/// A request carrying it may be retried like an idempotent one (draft-ietf-httpapi-idempotency-key-header).
const IDEMPOTENCY_KEY: http::HeaderName = http::HeaderName::from_static("idempotency-key");

/// What the retry classifier needs to know about the request.
struct Safety {
    method: Method,
    /// Read only for a method that is not idempotent (for the others it changes nothing).
    idempotency_key: bool,
}

impl Safety {
    fn of(req: &Request) -> Self {
        let method = req.method();
        Safety {
            idempotency_key: !is_idempotent(method) && req.headers().contains_key(IDEMPOTENCY_KEY),
            method: method.clone(),
        }
    }
}

/// Bring the host's limit up to date, count the request, deposit in the retry budget, refuse
/// a cost that can never fit, and [admit](admit_locked) its first attempt: one lock for all.
/// Returns the quota the server named for its route, if any, and the attempt.
fn begin(
    polite: &Polite,
    host: &Arc<Host>,
    url: &reqwest::Url,
    opts: &RequestOptions,
    config: &Config,
) -> std::result::Result<(Option<ServerScope>, Attempt), Error> {
    let now = Instant::now();
    let mut state = host.state();
    if state.generation != polite.generation() {
        let (limits, generation) = polite.limits();
        state.relimit(limits.for_host(url), generation);
    }
    state.counters.requests += 1;
    state.budget.deposit(now);
    let named = match state.limit() {
        Some(limit) if opts.cost > limit.count() => {
            state.counters.rejected += 1;
            return Err(Error::CostExceedsLimit {
                host: host.key.to_string(),
                cost: opts.cost,
                limit: limit.count(),
            });
        }
        _ => state.named_scope(url.path()).cloned(),
    };
    let attempt = admit_locked(host, state, now, config, opts, 0)?;
    Ok((named, attempt))
}

/// Refuse units that can never fit in one of the request's scopes (a cost above its limit's
/// count would break the window promise).
fn fits(host: &Host, scopes: &[(Arc<Scope>, u32)]) -> std::result::Result<(), Error> {
    for (scope, units) in scopes {
        let limit = scope.state().limit; // the scope's lock is released here: never held with the host's
        if let Some(limit) = limit
            && *units > limit.count()
        {
            host.state().counters.rejected += 1;
            return Err(Error::CostExceedsLimit {
                host: scope.label.to_string(),
                cost: *units,
                limit: limit.count(),
            });
        }
    }
    Ok(())
}

/// One attempt between admission and its recorded outcome. Dropped unrecorded (the request
/// future was cancelled, or pacing failed), it gives back the probe and scout slots it held.
struct Attempt {
    host: Arc<Host>,
    admission: Admission,
    /// This attempt reads a quota we do not know yet (first contact).
    scout: bool,
    cost: u32,
    /// When the attempt took its slot.
    sent_at: Option<Instant>,
    recorded: bool,
}

impl Attempt {
    /// Free the slots this attempt holds (breaker half-open probe, first-contact scout), so the
    /// next request can take them.
    fn release_slots(&self) {
        if !self.admission.is_probe() && !self.scout && self.sent_at.is_none() {
            return;
        }
        let mut state = self.host.state();
        state.breaker.release(&self.admission);
        if self.scout {
            state.release_scout();
        }
        if self.sent_at.is_some() {
            state.sent -= 1; // sent, and cancelled before its answer
        }
        drop(state);
        self.host.answered.notify_waiters();
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.recorded {
            self.release_slots();
        }
    }
}

/// Ask the circuit breaker. Open: fail fast, nothing sent.
fn admit(
    host: &Arc<Host>,
    config: &Config,
    opts: &RequestOptions,
    attempts: u32,
) -> std::result::Result<Attempt, Error> {
    admit_locked(host, host.state(), Instant::now(), config, opts, attempts)
}

/// [`admit`], the host's lock already taken (`state`, released here).
fn admit_locked(
    host: &Arc<Host>,
    mut state: StateGuard<'_>,
    now: Instant,
    config: &Config,
    opts: &RequestOptions,
    attempts: u32,
) -> std::result::Result<Attempt, Error> {
    let (admission, transition) = state.breaker.admit(now);
    if let Admission::Reject { .. } = admission {
        state.counters.rejected += 1;
    }
    drop(state);
    report_transition(host, config, transition);
    if let Admission::Reject { retry_in } = admission {
        tracing::debug!(host = %host.key, ?retry_in, attempts, "circuit open: failing fast");
        return Err(Error::CircuitOpen {
            host: host.key.to_string(),
            retry_in,
        });
    }
    Ok(Attempt {
        host: Arc::clone(host),
        admission,
        scout: false,
        cost: opts.cost,
        sent_at: None,
        recorded: false,
    })
}

/// Report a breaker transition (to `tracing` and the observer); call it with no lock held.
fn report_transition(host: &Host, config: &Config, transition: Option<Transition>) {
    let Some(transition) = transition else {
        return;
    };
    match transition {
        Transition::Opened { failures, open_for } => {
            tracing::warn!(host = %host.key, failures, ?open_for, "circuit breaker opened")
        }
        Transition::HalfOpened => {
            tracing::info!(host = %host.key, "circuit breaker half-open: probing")
        }
        Transition::Closed => tracing::info!(host = %host.key, "circuit breaker closed"),
    }
    if let Some(observer) = config.observers.get() {
        observe::breaker(observer, host, transition);
    }
}

/// Wait (FIFO, bounded by the deadline) for a place under the host's in-flight cap. The
/// permit is released when dropped: on success, on error, and when the request is cancelled.
async fn in_flight_permit(
    host: &Host,
    config: &Config,
    opts: &RequestOptions,
    attempts: u32,
) -> std::result::Result<Option<OwnedSemaphorePermit>, Error> {
    let Some(cap) = &host.in_flight else {
        return Ok(None);
    };
    // (tokio's semaphore hands released permits to waiters first, so this keeps FIFO order)
    if let Ok(permit) = Arc::clone(cap).try_acquire_owned() {
        return Ok(Some(permit));
    }
    tracing::trace!(host = %host.key, reason = "in_flight", "waiting under the in-flight cap");
    let started = Instant::now();
    let permit = until_deadline(host, opts, attempts, Arc::clone(cap).acquire_owned()).await?;
    if let Some(observer) = config.observers.get() {
        let waited = started.elapsed();
        observe::waited(observer, host, None, WaitReason::InFlight, waited, attempts);
    }
    Ok(Some(permit.expect("in-flight semaphores are never closed")))
}

/// Run `fut`, failing with `DeadlineExceeded` if the request's deadline passes first.
async fn until_deadline<T>(
    host: &Host,
    opts: &RequestOptions,
    attempts: u32,
    fut: impl Future<Output = T>,
) -> std::result::Result<T, Error> {
    match opts.deadline {
        None => Ok(fut.await),
        Some(deadline) => tokio::time::timeout_at(deadline, fut)
            .await
            .map_err(|_| deadline_exceeded(host, attempts, None)),
    }
}

fn deadline_exceeded(host: &Host, attempts: u32, would_wait: Option<Duration>) -> Error {
    host.state().counters.rejected += 1;
    tracing::debug!(host = %host.key, attempts, ?would_wait, "deadline would pass: not sending");
    Error::DeadlineExceeded {
        host: host.key.to_string(),
        attempts,
        would_wait,
    }
}

fn cooling_down(host: &Host, retry_in: Duration) -> Error {
    host.state().counters.rejected += 1;
    tracing::debug!(host = %host.key, ?retry_in, "the server asked for a pause past max_retry_after: failing fast");
    Error::CoolingDown {
        host: host.key.to_string(),
        retry_in,
    }
}

/// Take a pacing slot for one attempt, waiting in FIFO order behind earlier requests.
///
/// One waiter at a time (the holder of the turnstile) asks the schedule and sleeps; the others
/// queue on the turnstile. Dropping the future at any point leaves the schedule untouched, so
/// a cancelled waiter costs nobody a slot.
///
/// A request fails at once only when its wait is certain to pass its deadline (the configured
/// schedule, a server closure); waits the server's next answer may shorten (first contact, a
/// slowed rate) and the queue ahead (whose requests may be cancelled) are waited out up to the
/// deadline. Every wait the server's word imposes (a closure, a slowed rate) is bounded by
/// `max_retry_after`: past it, the request fails at once with `CoolingDown`.
///
/// `Ok(Err(scope))`: the server named the quota of this request's route (`path`) since its
/// scopes were worked out (`named`): nothing was taken; pace again with that scope.
#[allow(clippy::too_many_arguments)]
async fn pace(
    host: &Host,
    scopes: &[(Arc<Scope>, u32)],
    path: &str,
    named: Option<&ServerScope>,
    config: &Config,
    opts: &RequestOptions,
    attempt: &mut Attempt,
    attempts: u32,
) -> std::result::Result<std::result::Result<(), ServerScope>, Error> {
    fits(host, scopes)?;
    // with an observer, what held the attempt back last (and in which scope), and since when
    let watch = config
        .observers
        .get()
        .map(|observer| (observer, Instant::now()));
    let mut held: Option<(WaitReason, Option<usize>)> = None;
    // the host's lock first, then the scopes' in key order: every request takes them so
    let lock_scopes = || -> Vec<_> {
        scopes
            .iter()
            .map(|(s, units)| (s.state(), *units))
            .collect()
    };
    let mut queued: Option<Queued<'_>> = None;
    let mut turn = match host.turnstile.try_acquire() {
        Ok(turn) => Some(turn),
        Err(_) => {
            let now = Instant::now();
            let certain = {
                let mut state = host.state();
                let certain = state.certain_wait(now, opts.cost, &lock_scopes());
                if !opts.past_deadline(certain) {
                    queued = Some(Queued::join(host, &mut state, opts.cost));
                }
                certain
            };
            if opts.past_deadline(certain) {
                return Err(deadline_exceeded(host, attempts, Some(certain - now)));
            }
            None
        }
    };
    // while another scope holds the request back, it waits in that scope's queue instead
    let mut scope_turn: Option<(usize, tokio::sync::SemaphorePermit<'_>)> = None;
    // after waiting its turn in a scope's queue, a request asks the host once more without
    // queueing behind the host's other requests again (it would wait for all of them)
    let mut cut_in = false;
    loop {
        if turn.is_none() && !std::mem::take(&mut cut_in) {
            let acquired = until_deadline(host, opts, attempts, host.turnstile.acquire()).await?;
            turn = Some(acquired.expect("the turnstile is never closed"));
        }
        let answered = host.answered.notified();
        tokio::pin!(answered);
        answered.as_mut().enable(); // before deciding, so an answer in between is not missed
        let now = Instant::now();
        let (decision, blocker, precise) = {
            let mut state = host.state();
            if let Some(learned) = state.named_scope(path)
                && Some(learned) != named
            {
                return Ok(Err(learned.clone()));
            }
            let mut locked = lock_scopes();
            let (decision, blocker) = state.decide(now, opts.cost, &mut locked);
            // the schedule that holds the request back says how to wake for its slot; read
            // under the lock: a limit set at run time changes it
            let precise = match blocker {
                Some(i) => locked[i].0.pacing.wants_precise_wakes(),
                None => state.wants_precise_wakes(),
            };
            drop(locked);
            match decision {
                Decision::Admit { .. } => {
                    state.counters.waited += u64::from(queued.is_some());
                }
                _ if queued.is_none() => queued = Some(Queued::join(host, &mut state, opts.cost)),
                _ => {}
            }
            (decision, blocker, precise)
        };
        let waits = match decision {
            Decision::Admit { scout } => {
                attempt.scout = scout;
                attempt.sent_at = Some(now);
                if let Some((observer, started)) = watch
                    && queued.is_some()
                {
                    drop((turn, scope_turn, queued)); // leave the queues before calling out
                    let (reason, scope) = held.unwrap_or((WaitReason::Pacing, None));
                    let scope = scope.map(|i| &*scopes[i].0.label);
                    observe::waited(observer, host, scope, reason, now - started, attempts);
                }
                return Ok(Ok(()));
            }
            Decision::Closed(until) | Decision::Slowed(until)
                if until - now > config.max_retry_after =>
            {
                return Err(cooling_down(host, until - now));
            }
            Decision::Wait(until) | Decision::Closed(until) if opts.past_deadline(until) => {
                return Err(deadline_exceeded(host, attempts, Some(until - now)));
            }
            Decision::Slowed(until) | Decision::Hold(until)
                if opts.deadline.is_some_and(|d| now >= d) =>
            {
                return Err(deadline_exceeded(host, attempts, Some(until - now)));
            }
            other => other,
        };
        held = Some((wait_reason(&waits), blocker));
        if let Some(i) = blocker {
            // let the host's other requests go while this one waits for scope `i`
            turn = None;
            cut_in = true;
            if scope_turn.as_ref().is_none_or(|(j, _)| *j != i) {
                drop(scope_turn.take()); // one scope's queue at a time: never two held
                let waiting = scopes[i].0.turnstile.acquire();
                let acquired = until_deadline(host, opts, attempts, waiting).await?;
                scope_turn = Some((i, acquired.expect("scope turnstiles are never closed")));
                continue; // things may have changed while it queued: decide again
            }
        }
        match waits {
            Decision::Wait(until) if precise => {
                tracing::trace!(host = %host.key, reason = "pacing", wait = ?(until - now), "waiting for a pacing slot");
                sleep_precisely(until).await;
            }
            Decision::Wait(until) => {
                tracing::trace!(host = %host.key, reason = "pacing", wait = ?(until - now), "waiting for a pacing slot");
                tokio::time::sleep_until(until).await;
            }
            Decision::Closed(until) => {
                tracing::debug!(host = %host.key, reason = "cooldown", wait = ?(until - now), "closed by the server: waiting");
                tokio::time::sleep_until(until).await;
            }
            Decision::Slowed(until) | Decision::Hold(until) => {
                // the next answer may change it (a quota reset, first contact ending): wake
                // on answers too, and never sleep past the deadline; a slowed spaced schedule
                // ends its wait on the slot, as the configured one does
                let reason = wait_reason(&waits).as_str();
                tracing::trace!(host = %host.key, reason, wait = ?(until - now), "paced by the server's word");
                let until = opts.deadline.map_or(until, |d| d.min(until));
                if precise && matches!(waits, Decision::Slowed(_)) {
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
            Decision::Admit { .. } => unreachable!("admitted above"),
        }
    }
}

/// What a pacing decision that is not `Admit` holds the attempt back for.
fn wait_reason(decision: &Decision) -> WaitReason {
    match decision {
        Decision::Wait(_) | Decision::Admit { .. } => WaitReason::Pacing,
        Decision::Closed(_) => WaitReason::Cooldown,
        Decision::Slowed(_) => WaitReason::Slowed,
        Decision::Hold(_) => WaitReason::FirstContact,
    }
}

/// Sleep until `until` itself, not the timer tick after it (see [`crate::pacing::timer`]).
async fn sleep_precisely(until: Instant) {
    crate::pacing::timer::sleep_precisely(until).await;
}

/// Read the outcome of an attempt into the host's state (and the scopes the server named),
/// and classify it.
///
/// Also returns how long the host was closed by a `Retry-After`, for sharing it.
fn record(
    polite: &Polite,
    host: &Host,
    mut attempt: Attempt,
    answer: &Answer<'_>,
    result: &Result<Response>,
) -> (Verdict, Option<Duration>) {
    let config = &polite.inner.config;
    attempt.recorded = true;
    let now = Instant::now();
    let outcome = match result {
        Ok(resp) => Outcome::Status(resp.status()),
        Err(reqwest_middleware::Error::Reqwest(err)) if err.is_connect() => Outcome::Connect,
        Err(reqwest_middleware::Error::Reqwest(err)) if err.is_timeout() => Outcome::Timeout,
        Err(reqwest_middleware::Error::Reqwest(_)) => Outcome::Other,
        // another middleware failed: not the host's doing, and not ours to retry
        Err(reqwest_middleware::Error::Middleware(_)) => {
            attempt.release_slots();
            return (Verdict::Return, None);
        }
    };
    let failure = (config.is_failure)(match outcome {
        Outcome::Status(status) => Some(status),
        Outcome::Connect | Outcome::Timeout | Outcome::Other => None,
    });
    let hint = match result {
        Ok(resp) => ServerHint::read(resp.headers()),
        Err(_) => ServerHint::default(),
    };
    // the quota the server named takes this answer's closure and quota, unless it has
    // neither (then the host does, so that every refusal slows something)
    let named = hint
        .server_scope
        .as_ref()
        .filter(|_| hint.remaining.is_some() || hint.retry_after.is_some());
    let mut closed_for = None;
    let mut host_wide_news = None;
    let mut state = host.state();
    state.touch(now);
    state.sent -= 1;
    if let Ok(resp) = result {
        let status = resp.status();
        let sent_at = attempt.sent_at.unwrap_or(now);
        let observed = state.observe(
            now,
            sent_at,
            attempt.scout,
            attempt.cost,
            status,
            &hint,
            named.is_some(),
        );
        if let Some(retry_after) = observed.retry_after {
            tracing::debug!(host = %host.key, %status, ?retry_after, "Retry-After: host closed");
            closed_for = Some(retry_after);
        }
        if let Some(change) = observed.rate_change {
            tracing::debug!(host = %host.key, from = change.from, to = ?change.to, "adaptive rate changed (units/s)");
        }
        if let Some(gap) = observed.gap {
            tracing::debug!(host = %host.key, ?gap, "a bare refusal widened the gap between starts");
        }
        host_wide_news = Some((observed, sent_at));
        if let Some(scope) = &hint.server_scope {
            // unpartitioned, every credential's answers teach this route: without their
            // `pk`s, so that one credential's answer does not move another's requests
            match host.partition {
                Some(_) => state.learn_route(answer.path, scope),
                None => state.learn_route(answer.path, &scope.without_partitions()),
            }
        }
    } else if attempt.scout {
        state.release_scout();
    }
    if failure {
        state.counters.failures += 1;
    }
    let transition = state.breaker.record(now, &attempt.admission, failure);
    let host_limit = state.limit();
    // the requests an answer may let go sleep in the pacing queue, which they joined under the
    // lock they decided under: with nobody in it, one deciding from now on sees what this
    // answer changed here without a wake-up (not so for what `feed_scopes` changes below;
    // `tell_host_wide_scopes` only ever moves slots later, which wakes nobody)
    let wake = state.queued > 0 || named.is_some() || hint.tokens.is_some();
    drop(state);
    if let Ok(resp) = result {
        let named = named.map(|named| (named, host_limit));
        feed_scopes(polite, host, answer, named, resp.status(), &hint, now);
    }
    if let Some((observed, sent_at)) = host_wide_news {
        tell_host_wide_scopes(host, answer, &observed, now, sent_at);
    }
    report_transition(host, config, transition);
    if let (Some(observer), Ok(resp)) = (config.observers.get(), result)
        && crate::host::is_refusal(resp.status(), &hint)
    {
        // the policy that says it is spent, if one does
        let spent = hint.policies.iter().find(|p| p.remaining == 0);
        let scope = named
            .and_then(|n| spent.map(|p| &p.id).or(n.quotas.first()))
            .map(|quota| quota.name.as_str());
        let resend_count = answer.resend_count;
        observe::refused(
            observer,
            host,
            scope,
            resp.status(),
            hint.retry_after,
            resend_count,
        );
    }
    if wake {
        host.answered.notify_waiters();
    }
    // a 403 that says it is a rate limit is a refusal, retried like a 429
    let outcome = match outcome {
        Outcome::Status(status) if crate::host::is_refusal(status, &hint) => {
            Outcome::Status(http::StatusCode::TOO_MANY_REQUESTS)
        }
        other => other,
    };
    let verdict = classify(
        config.retryable,
        &answer.safety.method,
        answer.safety.idempotency_key,
        &outcome,
    );
    // Stripe-Should-Retry overrides the classification either way: the server knows whether
    // the request took effect (Stripe requests carry idempotency keys, and it vouches for a
    // `true` on a POST)
    let verdict = match hint.should_retry {
        Some(true) => Verdict::Retry,
        Some(false) => Verdict::Return,
        None => verdict,
    };
    (verdict, closed_for)
}

/// What the host-wide scopes that pace a host from outside (a port-less `host_limit`) learn
/// from its answer, as a record's own schedule would: a bare refusal widens the gap between
/// their starts (see `Pacer::widen_gap`), and the first answer starts their schedule.
fn tell_host_wide_scopes(
    host: &Host,
    answer: &Answer<'_>,
    observed: &crate::host::Observed,
    now: Instant,
    sent_at: Instant,
) {
    if !observed.slowed && observed.first_answer.is_none() {
        return;
    }
    for (scope, _) in answer
        .scopes
        .iter()
        .filter(|(s, _)| s.kind == ScopeKind::Host)
    {
        let mut state = scope.state();
        if let Some(latency) = observed.first_answer {
            state.pacing.first_answer_of(sent_at, latency);
        }
        if observed.slowed
            && let Some(gap) = state.pacing.widen_gap(now, sent_at)
        {
            tracing::debug!(host = %host.key, scope = %scope.label, ?gap, "a bare refusal widened the gap between starts");
        }
    }
}

/// Give an answer's word about other scopes to them: a quota the server named takes its
/// closure and quota (a global refusal closes the host instead, already done), and a unit's
/// count (OpenAI's tokens) goes to that unit's scope. `named` comes with the host record's
/// configured limit.
///
/// A configured limit is the user's word on the quota, here as for a host (see
/// [`crate::pacing::quota`]): when one the request was paced by (the host's, a host-wide or a
/// route limit) allows no more than the server's quota, the quota headers of *successful*
/// answers are not acted on in the scope the server named. A server that rounds its reset up to
/// the next second, or reports a moving window's count against a fixed reset, would otherwise
/// close or slow the scope for up to a second per window. Refusals saying nothing is left
/// still count.
fn feed_scopes(
    polite: &Polite,
    host: &Host,
    answer: &Answer<'_>,
    named: Option<(&ServerScope, Option<crate::Limit>)>,
    status: http::StatusCode,
    hint: &ServerHint,
    now: Instant,
) {
    let code = status.as_u16();
    if let Some((named, host_limit)) = named {
        // what the user configured for this request (each scope's lock taken on its own)
        let configured: Vec<crate::Limit> = answer
            .scopes
            .iter()
            .filter(|(scope, _)| matches!(scope.kind, ScopeKind::Host | ScopeKind::Route))
            .filter_map(|(scope, _)| scope.state().limit)
            .chain(host_limit)
            .collect();
        let refused = code == 429 || code == 403;
        let retry_after = hint
            .retry_after
            .filter(|_| (refused || code == 503) && !hint.global);
        // IETF policies each take their own count; a Retry-After goes to the policies that say
        // they are spent, or to every policy of the answer when none does
        let any_spent = hint.policies.iter().any(|policy| policy.remaining == 0);
        for (i, quota) in named.quotas.iter().enumerate() {
            let own;
            let mut renewal = None;
            let (quota_hint, retry_after, window) = match hint.policies.get(i) {
                Some(policy) if named.kind == ServerScopeKind::Policy => {
                    own = policy.hint();
                    renewal = policy.limit.zip(policy.window);
                    let closes = !any_spent || policy.remaining == 0;
                    let window = policy.window.or(policy.reset_in);
                    (&own, retry_after.filter(|_| closes), window)
                }
                _ => (hint, retry_after, hint.reset_in),
            };
            // the server's quota is `limit` per `window` at most (the time to its reset is
            // within its window): a configured limit of no more, over at least as long, keeps it
            let user_keeps_it = quota_hint.limit.zip(window).is_some_and(|(quota, window)| {
                configured
                    .iter()
                    .any(|limit| u64::from(limit.count()) <= quota && limit.window() >= window)
            });
            let spent_refusal = refused && quota_hint.remaining == Some(0);
            let scope = polite.named_scope(host, named.kind, quota);
            let mut state = scope.state();
            state.last_used = now;
            if renewal.is_some() {
                state.renewal = renewal;
            }
            if let Some(retry_after) = retry_after {
                state.pacing.close(
                    crate::pacing::far_add(now, retry_after.min(MAX_HINT)),
                    Why::RetryAfter,
                );
                tracing::debug!(host = %host.key, scope = %scope.label, ?retry_after, "Retry-After: scope closed");
            }
            if !user_keeps_it || spent_refusal {
                state
                    .pacing
                    .observe_quota(now, false, code, quota_hint, true);
            }
        }
    }
    if let Some(tokens) = hint.tokens {
        let unit = answer
            .scopes
            .iter()
            .find(|(scope, _)| scope.kind == ScopeKind::Unit && scope.label.ends_with(" tokens"));
        // the configured unit limit paces; the server's word counts when it says the unit
        // is spent (any status): the scope closes until its reset
        if let Some((scope, _)) = unit
            && tokens.remaining == Some(0)
            && let Some(reset_in) = tokens.reset_in
        {
            scope.state().pacing.close(
                crate::pacing::far_add(now, reset_in.min(MAX_HINT)),
                Why::QuotaSpent,
            );
        }
    }
}

/// Decide whether to retry, and after how long; `None` returns the last outcome to the caller.
fn plan_retry(
    host: &Host,
    config: &Config,
    opts: &RequestOptions,
    verdict: Verdict,
    attempts: u32,
    backoff: &mut Option<Box<Delays<SmallRng>>>,
) -> Option<Duration> {
    if verdict == Verdict::Return {
        return None;
    }
    let delay = backoff
        .get_or_insert_with(|| Box::new(config.backoff.delays(SmallRng::from_os_rng())))
        .next()
        .unwrap_or(config.backoff.max());
    let plan =
        host.state()
            .plan_retry(Instant::now(), delay, opts.deadline, config.max_retry_after);
    match plan {
        Ok(delay) => {
            tracing::debug!(host = %host.key, attempts, reason = "backoff", wait = ?delay, "retrying");
            Some(delay)
        }
        Err(NoRetry::CircuitOpen) => {
            tracing::debug!(host = %host.key, attempts, "circuit open: not retrying");
            None
        }
        Err(NoRetry::ServerWaitTooLong(wait)) => {
            tracing::debug!(host = %host.key, ?wait, "server wait past max_retry_after: returning the response");
            None
        }
        Err(NoRetry::PastDeadline) => {
            tracing::debug!(host = %host.key, attempts, "the next attempt would pass the deadline");
            None
        }
        Err(NoRetry::BudgetSpent) => {
            tracing::debug!(host = %host.key, attempts, "retry budget spent: not retrying");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;
    use crate::limit::Limit;

    const MS: Duration = Duration::from_millis(1);

    /// A host paced by `limit` that has answered once without quota headers (no first-contact
    /// gate), as the pacing tests need.
    fn host(limit: Limit) -> Arc<Host> {
        let config = crate::host::HostConfig::test(Some(limit));
        let host = Arc::new(Host::new("http://test", &config, Instant::now()));
        host.state().pacing.quota.assume_unmetered();
        host
    }

    async fn pace(
        host: &Arc<Host>,
        opts: &RequestOptions,
        attempts: u32,
    ) -> std::result::Result<(), Error> {
        let mut attempt = admit(host, &Config::default(), opts, attempts)?;
        pace_attempt(host, opts, &mut attempt, attempts).await
    }

    /// Pace `attempt` (admitted by the caller) on the host alone, with the default config.
    async fn pace_attempt(
        host: &Arc<Host>,
        opts: &RequestOptions,
        attempt: &mut Attempt,
        attempts: u32,
    ) -> std::result::Result<(), Error> {
        super::pace(
            host,
            &[],
            "/",
            None,
            &Config::default(),
            opts,
            attempt,
            attempts,
        )
        .await
        .map(|paced| paced.expect("no server-named scope"))
    }

    fn opts(cost: u32, deadline: Option<Instant>) -> RequestOptions {
        RequestOptions {
            cost,
            deadline,
            no_retry: false,
        }
    }

    /// Spawn `n` requests (one per ms), each recording when it got its slot.
    async fn spawn_waiters(
        host: &Arc<Host>,
        n: usize,
        log: &Arc<Mutex<Vec<(usize, Duration)>>>,
        t0: Instant,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        for i in 0..n {
            let (host, log) = (Arc::clone(host), Arc::clone(log));
            tasks.push(tokio::spawn(async move {
                pace(&host, &opts(1, None), 0)
                    .await
                    .expect("no deadline set");
                log.lock().expect("log lock").push((i, Instant::now() - t0));
            }));
            tokio::time::sleep(MS).await;
        }
        tasks
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_in_arrival_order_at_exact_slots() {
        let t0 = Instant::now();
        let host = host(Limit::per_second(10));
        let log = Arc::new(Mutex::new(Vec::new()));
        for task in spawn_waiters(&host, 5, &log, t0).await {
            task.await.expect("waiter finished");
        }
        let log = log.lock().expect("log lock").clone();
        assert_eq!(
            log,
            vec![
                (0, Duration::ZERO),
                (1, 102 * MS),
                (2, 204 * MS),
                (3, 306 * MS),
                (4, 408 * MS)
            ],
            "FIFO order and one slot per 102 ms"
        );
        assert_eq!(host.state().counters.waited, 4, "four of them had to wait");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_costs_no_throughput() {
        let t0 = Instant::now();
        let host = host(Limit::per_second(10));
        let log = Arc::new(Mutex::new(Vec::new()));
        let tasks = spawn_waiters(&host, 5, &log, t0).await;
        // cancel waiters 1 and 3 while they wait (the one at the head and one further back)
        tasks[1].abort();
        tasks[3].abort();
        for task in tasks {
            let _ = task.await;
        }
        let log = log.lock().expect("log lock").clone();
        assert_eq!(
            log,
            vec![(0, Duration::ZERO), (2, 102 * MS), (4, 204 * MS)],
            "the slots of cancelled waiters go to the next in line"
        );
        let state = host.state();
        assert_eq!(
            (state.queued, state.queued_cost),
            (0, 0),
            "the queue is empty again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_past_the_deadline_fails_at_once() {
        let t0 = Instant::now();
        let host = host(Limit::per_second(10));
        pace(&host, &opts(1, None), 0)
            .await
            .expect("first slot is free");
        // next slot at 102 ms: a deadline at 50 ms cannot be met
        let err = pace(&host, &opts(1, Some(t0 + 50 * MS)), 0)
            .await
            .expect_err("the deadline cannot be met");
        assert!(
            matches!(err, Error::DeadlineExceeded { attempts: 0, .. }),
            "got {err:?}"
        );
        assert_eq!(Instant::now(), t0, "failing must not wait");
        // a deadline at the slot itself is fine
        pace(&host, &opts(1, Some(t0 + 102 * MS)), 0)
            .await
            .expect("slot at the deadline");
        assert_eq!(Instant::now() - t0, 102 * MS);
    }

    #[tokio::test(start_paused = true)]
    async fn a_queued_request_is_refused_at_the_head_of_the_queue_once_its_slot_is_certain() {
        let t0 = Instant::now();
        let host = host(Limit::per_second(10));
        let log = Arc::new(Mutex::new(Vec::new()));
        let tasks = spawn_waiters(&host, 4, &log, t0).await; // slots 0, 102, 204, 306 ms
        // the requests ahead might be cancelled, so the queue is not a certain wait: it queues
        let err = pace(&host, &opts(1, Some(t0 + 350 * MS)), 0)
            .await
            .expect_err("behind three waiters, the 5th slot (408 ms) is past 350 ms");
        assert!(matches!(err, Error::DeadlineExceeded { .. }), "got {err:?}");
        assert_eq!(
            Instant::now() - t0,
            306 * MS,
            "refused once at the head of the queue, where its own slot (408 ms) is certain"
        );
        for task in tasks {
            task.await.expect("waiter finished");
        }
        let state = host.state();
        assert_eq!((state.queued, state.queued_cost), (0, 0), "left the queue");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_before_the_deadline_says_how_long_it_would_have_waited() {
        let t0 = Instant::now();
        let host = host(Limit::per_minute(1));
        pace(&host, &opts(1, None), 0).await.expect("first slot");
        let err = pace(&host, &opts(1, Some(t0 + 30 * 1000 * MS)), 0)
            .await
            .expect_err("the next slot is a minute away");
        match err {
            Error::DeadlineExceeded {
                would_wait: Some(wait),
                ..
            } => assert_eq!(wait, Limit::per_minute(1).interval()),
            other => panic!("got {other:?}"),
        }
        assert_eq!(Instant::now(), t0, "certain: refused at once");
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_counts_sent_attempts_only_and_a_dropped_one_leaves() {
        let host = host(Limit::per_second(10));
        let mut sent = admit(&host, &Config::default(), &opts(1, None), 0).expect("admitted");
        pace_attempt(&host, &opts(1, None), &mut sent, 0)
            .await
            .expect("first slot");
        let waiting = tokio::spawn({
            let host = Arc::clone(&host);
            async move { pace(&host, &opts(1, None), 0).await }
        });
        tokio::task::yield_now().await;
        let snapshot = host.snapshot(Instant::now());
        assert_eq!(
            (snapshot.in_flight, snapshot.queued),
            (1, 1),
            "{snapshot:?}"
        );
        drop(sent); // cancelled before its answer
        waiting.await.expect("joined").expect("its slot comes");
        // the waiter went, and its attempt was dropped unanswered too (by the helper)
        assert_eq!(host.snapshot(Instant::now()).in_flight, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn cost_waits_for_all_its_slots() {
        let t0 = Instant::now();
        let host = host(Limit::per_second(10).burst(2));
        pace(&host, &opts(2, None), 0)
            .await
            .expect("the burst covers cost 2");
        assert_eq!(Instant::now(), t0);
        pace(&host, &opts(2, None), 0).await.expect("waits");
        // two units refill in two intervals of 113.33 ms; the timer wakes on the next ms tick
        assert_eq!(
            Instant::now() - t0,
            227 * MS,
            "two units refill in two intervals"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_held_behind_a_first_contact_probe_respects_its_deadline() {
        let t0 = Instant::now();
        let config = crate::host::HostConfig::test(None);
        let host = Arc::new(Host::new("http://new", &config, t0));
        let mut probe =
            admit(&host, &Config::default(), &opts(1, None), 0).expect("breaker disabled");
        pace_attempt(&host, &opts(1, None), &mut probe, 0)
            .await
            .expect("the first request goes as the probe");
        assert!(
            probe.scout,
            "the first request to an unknown host reads its quota"
        );
        let err = pace(&host, &opts(1, Some(t0 + 200 * MS)), 0)
            .await
            .expect_err("no answer comes: the held request gives up at its deadline");
        assert!(matches!(err, Error::DeadlineExceeded { .. }), "got {err:?}");
        assert_eq!(
            Instant::now() - t0,
            200 * MS,
            "held until the deadline, not past it"
        );
        drop(probe); // the probe is cancelled: the next request probes at once
        pace(&host, &opts(1, Some(t0 + 200 * MS)), 0)
            .await
            .expect("a cancelled probe frees the gate");
    }
}
