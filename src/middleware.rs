//! The request loop: admit -> pace -> send -> classify -> record -> retry or return.
//!
//! Decisions are made elsewhere (the host's schedule, the breaker, the classifier, the budget);
//! this file only waits, sends and resends.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Extensions, Method, StatusCode};
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
use crate::host::{Decision, Host, Queued};
use crate::retry::{Delays, Outcome, Verdict, classify};
use crate::signals::{MAX_HINT, ServerHint};

type Result<T> = reqwest_middleware::Result<T>;

#[async_trait::async_trait]
impl Middleware for Polite {
    async fn handle(
        &self,
        mut req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> Result<Response> {
        let Some(host) = self.host_for(req.url()) else {
            return next.run(req, extensions).await; // no host: nothing to pace, reqwest decides
        };
        let config = &self.inner.config;
        let opts = RequestOptions::from_extensions(extensions);
        let safety = Safety::of(&req);
        begin(&host, &opts)?;
        let mut backoff: Option<Delays<SmallRng>> = None;
        let mut attempts = 0;
        loop {
            let retries_left = !opts.no_retry && attempts < config.max_retries;
            let spare = if retries_left { req.try_clone() } else { None };
            let mut attempt = admit(&host, attempts)?;
            let in_flight = in_flight_permit(&host, &opts, attempts).await?;
            pace(&host, config, &opts, &mut attempt, attempts).await?;
            let result = next.clone().run(req, extensions).await;
            drop(in_flight);
            attempts += 1;
            let verdict = record(&host, config, attempt, &safety, &result);
            let Some(spare) = spare else {
                return result; // out of retries, or a body that cannot be cloned: sent once
            };
            let Some(delay) = plan_retry(&host, config, &opts, verdict, attempts, &mut backoff)
            else {
                return result;
            };
            drop(result);
            tokio::time::sleep(delay).await;
            req = spare;
        }
    }
}

/// A request carrying it may be retried like an idempotent one (draft-ietf-httpapi-idempotency-key-header).
const IDEMPOTENCY_KEY: http::HeaderName = http::HeaderName::from_static("idempotency-key");

/// What the retry classifier needs to know about the request.
struct Safety {
    method: Method,
    idempotency_key: bool,
}

impl Safety {
    fn of(req: &Request) -> Self {
        Safety {
            method: req.method().clone(),
            idempotency_key: req.headers().contains_key(IDEMPOTENCY_KEY),
        }
    }
}

/// Count the request, deposit in the retry budget, and refuse a cost that can never fit.
fn begin(host: &Host, opts: &RequestOptions) -> std::result::Result<(), Error> {
    let mut state = host.state();
    state.counters.requests += 1;
    state.budget.deposit(Instant::now());
    match host.limit {
        Some(limit) if opts.cost > limit.count() => {
            state.counters.rejected += 1;
            Err(Error::CostExceedsLimit {
                host: host.key.to_string(),
                cost: opts.cost,
                limit: limit.count(),
            })
        }
        _ => Ok(()),
    }
}

/// One attempt between admission and its recorded outcome. Dropped unrecorded (the request
/// future was cancelled, or pacing failed), it gives back the probe slots it held.
struct Attempt {
    host: Arc<Host>,
    admission: Admission,
    quota_probe: bool,
    /// When the attempt took its slot.
    sent_at: Option<Instant>,
    recorded: bool,
}

impl Attempt {
    /// Free the probe slots this attempt holds (breaker half-open, first-contact quota read),
    /// so the next request can probe.
    fn release_probes(&self) {
        if !self.admission.is_probe() && !self.quota_probe {
            return;
        }
        let mut state = self.host.state();
        state.breaker.release(&self.admission);
        if self.quota_probe {
            state.server.release_probe();
        }
        drop(state);
        self.host.answered.notify_waiters();
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.recorded {
            self.release_probes();
        }
    }
}

/// Ask the circuit breaker. Open: fail fast, nothing sent.
fn admit(host: &Arc<Host>, attempts: u32) -> std::result::Result<Attempt, Error> {
    let now = Instant::now();
    let mut state = host.state();
    let (admission, transition) = state.breaker.admit(now);
    report_transition(host, transition);
    if let Admission::Reject { retry_in } = admission {
        state.counters.rejected += 1;
        tracing::debug!(host = %host.key, ?retry_in, attempts, "circuit open: failing fast");
        return Err(Error::CircuitOpen {
            host: host.key.to_string(),
            retry_in,
        });
    }
    Ok(Attempt {
        host: Arc::clone(host),
        admission,
        quota_probe: false,
        sent_at: None,
        recorded: false,
    })
}

fn report_transition(host: &Host, transition: Option<Transition>) {
    match transition {
        Some(Transition::Opened { failures, open_for }) => {
            tracing::warn!(host = %host.key, failures, ?open_for, "circuit breaker opened")
        }
        Some(Transition::HalfOpened) => {
            tracing::info!(host = %host.key, "circuit breaker half-open: probing")
        }
        Some(Transition::Closed) => tracing::info!(host = %host.key, "circuit breaker closed"),
        None => {}
    }
}

/// Wait (FIFO, bounded by the deadline) for a place under the host's in-flight cap. The
/// permit is released when dropped: on success, on error, and when the request is cancelled.
async fn in_flight_permit(
    host: &Host,
    opts: &RequestOptions,
    attempts: u32,
) -> std::result::Result<Option<OwnedSemaphorePermit>, Error> {
    let Some(cap) = &host.in_flight else {
        return Ok(None);
    };
    let permit = until_deadline(host, opts, attempts, Arc::clone(cap).acquire_owned()).await?;
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
            .map_err(|_| deadline_exceeded(host, attempts)),
    }
}

fn deadline_exceeded(host: &Host, attempts: u32) -> Error {
    host.state().counters.rejected += 1;
    tracing::debug!(host = %host.key, attempts, "deadline would pass: not sending");
    Error::DeadlineExceeded {
        host: host.key.to_string(),
        attempts,
    }
}

fn cooling_down(host: &Host, retry_in: Duration) -> Error {
    host.state().counters.rejected += 1;
    tracing::debug!(host = %host.key, ?retry_in, "server asked for a long pause: failing fast");
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
async fn pace(
    host: &Host,
    config: &Config,
    opts: &RequestOptions,
    attempt: &mut Attempt,
    attempts: u32,
) -> std::result::Result<(), Error> {
    let mut queued: Option<Queued<'_>> = None;
    let _turn = match host.turnstile.try_acquire() {
        Ok(turn) => turn,
        Err(_) => {
            let too_late = {
                let mut state = host.state();
                let ready = state
                    .pacer
                    .estimate(Instant::now(), state.queued_cost, opts.cost);
                let too_late = opts.past_deadline(ready);
                if !too_late {
                    queued = Some(Queued::join(host, &mut state, opts.cost));
                }
                too_late
            };
            if too_late {
                return Err(deadline_exceeded(host, attempts));
            }
            until_deadline(host, opts, attempts, host.turnstile.acquire())
                .await?
                .expect("the turnstile is never closed")
        }
    };
    loop {
        let answered = host.answered.notified();
        tokio::pin!(answered);
        answered.as_mut().enable(); // before deciding, so an answer in between is not missed
        let now = Instant::now();
        let decision = {
            let mut state = host.state();
            let decision = state.decide(now, opts.cost);
            match decision {
                Decision::Admit { .. } => {
                    state.counters.waited += u64::from(queued.is_some());
                }
                _ if queued.is_none() => queued = Some(Queued::join(host, &mut state, opts.cost)),
                _ => {}
            }
            decision
        };
        match decision {
            Decision::Admit { probe } => {
                attempt.quota_probe = probe;
                attempt.sent_at = Some(now);
                return Ok(());
            }
            Decision::Closed(until) if until - now > config.max_retry_after => {
                return Err(cooling_down(host, until - now));
            }
            Decision::Wait(until) | Decision::Closed(until) if opts.past_deadline(until) => {
                return Err(deadline_exceeded(host, attempts));
            }
            Decision::Hold(_) if opts.deadline.is_some_and(|d| now >= d) => {
                return Err(deadline_exceeded(host, attempts));
            }
            Decision::Wait(until) => {
                tracing::trace!(host = %host.key, wait = ?(until - now), "waiting for a pacing slot");
                tokio::time::sleep_until(until).await;
            }
            Decision::Closed(until) => {
                tracing::debug!(host = %host.key, wait = ?(until - now), "host closed by the server: waiting");
                tokio::time::sleep_until(until).await;
            }
            Decision::Hold(until) => {
                // the probe's answer usually comes well before `until`; the deadline may too
                tracing::trace!(host = %host.key, "waiting for the first answer's quota");
                let until = opts.deadline.map_or(until, |d| d.min(until));
                let _ = tokio::time::timeout_at(until, answered).await;
            }
        }
    }
}

/// Read the outcome of an attempt into the host's state, and classify it.
fn record(
    host: &Host,
    config: &Config,
    mut attempt: Attempt,
    safety: &Safety,
    result: &Result<Response>,
) -> Verdict {
    attempt.recorded = true;
    let now = Instant::now();
    let outcome = match result {
        Ok(resp) => Outcome::Status(resp.status()),
        Err(reqwest_middleware::Error::Reqwest(err)) if err.is_connect() => Outcome::Connect,
        Err(reqwest_middleware::Error::Reqwest(err)) if err.is_timeout() => Outcome::Timeout,
        Err(reqwest_middleware::Error::Reqwest(_)) => Outcome::Other,
        // another middleware failed: not the host's doing, and not ours to retry
        Err(reqwest_middleware::Error::Middleware(_)) => {
            attempt.release_probes();
            return Verdict::Return;
        }
    };
    let failure = (config.is_failure)(match outcome {
        Outcome::Status(status) => Some(status),
        Outcome::Connect | Outcome::Timeout | Outcome::Other => None,
    });
    let mut state = host.state();
    state.last_used = now;
    if let Ok(resp) = result {
        let status = resp.status();
        let hint = ServerHint::read(resp.headers());
        if let Some(retry_after) = hint.retry_after.filter(|_| closes_host(status)) {
            let until = now + retry_after.min(MAX_HINT);
            state.pacer.close_until(until);
            tracing::debug!(host = %host.key, %status, ?retry_after, "Retry-After: host closed");
        }
        let sent_at = attempt.sent_at.unwrap_or(now);
        if let Some(change) =
            state
                .server
                .observe_sent(now, sent_at, attempt.quota_probe, status.as_u16(), &hint)
        {
            tracing::debug!(host = %host.key, from = change.from, to = change.to, "adaptive rate changed (req/s)");
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            state.counters.throttled += 1;
        }
    } else if attempt.quota_probe {
        state.server.release_probe();
    }
    if failure {
        state.counters.failures += 1;
    }
    let transition = state.breaker.record(now, &attempt.admission, failure);
    drop(state);
    report_transition(host, transition);
    host.answered.notify_waiters();
    classify(
        config.retryable,
        &safety.method,
        safety.idempotency_key,
        &outcome,
    )
}

/// `Retry-After` closes the host on a refusal or an unavailable server (RFC 9110 §10.2.3).
fn closes_host(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE
}

/// Decide whether to retry, and after how long; `None` returns the last outcome to the caller.
fn plan_retry(
    host: &Host,
    config: &Config,
    opts: &RequestOptions,
    verdict: Verdict,
    attempts: u32,
    backoff: &mut Option<Delays<SmallRng>>,
) -> Option<Duration> {
    if verdict == Verdict::Return {
        return None;
    }
    let now = Instant::now();
    let mut state = host.state();
    if state.breaker.phase() == crate::breaker::BreakerPhase::Open {
        tracing::debug!(host = %host.key, attempts, "circuit open: not retrying");
        return None;
    }
    let delay = backoff
        .get_or_insert_with(|| config.backoff.delays(SmallRng::from_os_rng()))
        .next()
        .unwrap_or(config.backoff.max());
    // the server's word, if it closed the host (Retry-After, or a spent quota until its
    // reset): delay = max(server hint, backoff)
    let reopens = [
        state.pacer.closed_until(now),
        state.server.closed_until(now),
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(now);
    if reopens - now > config.max_retry_after {
        tracing::debug!(host = %host.key, wait = ?(reopens - now), "server wait past max_retry_after: returning the response");
        return None;
    }
    if opts.past_deadline((now + delay).max(reopens)) {
        tracing::debug!(host = %host.key, attempts, "the next attempt would pass the deadline");
        return None;
    }
    if !state.budget.withdraw(now) {
        state.counters.budget_denied += 1;
        tracing::debug!(host = %host.key, attempts, "retry budget spent: not retrying");
        return None;
    }
    state.counters.retries += 1;
    tracing::debug!(host = %host.key, attempts, ?delay, "retrying");
    Some(delay)
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
        let config = crate::host::HostConfig {
            limit: Some(limit),
            max_in_flight: None,
            breaker: crate::Breaker::disabled(),
            retry_budget: crate::RetryBudget::default(),
        };
        let host = Arc::new(Host::new("http://test", &config, Instant::now()));
        host.state().server.assume_unmetered();
        host
    }

    async fn pace(
        host: &Arc<Host>,
        opts: &RequestOptions,
        attempts: u32,
    ) -> std::result::Result<(), Error> {
        let mut attempt = admit(host, attempts)?;
        super::pace(host, &Config::default(), opts, &mut attempt, attempts).await
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
    async fn a_queued_request_is_refused_when_the_queue_ahead_passes_its_deadline() {
        let t0 = Instant::now();
        let host = host(Limit::per_second(10));
        let log = Arc::new(Mutex::new(Vec::new()));
        let tasks = spawn_waiters(&host, 4, &log, t0).await; // slots 0, 102, 204, 306 ms
        let err = pace(&host, &opts(1, Some(t0 + 350 * MS)), 0)
            .await
            .expect_err("behind three waiters, the 5th slot (408 ms) is past 350 ms");
        assert!(matches!(err, Error::DeadlineExceeded { .. }), "got {err:?}");
        assert_eq!(
            Instant::now() - t0,
            4 * MS,
            "refused on arrival, without waiting"
        );
        for task in tasks {
            task.await.expect("waiter finished");
        }
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
        let config = crate::host::HostConfig {
            limit: None,
            max_in_flight: None,
            breaker: crate::Breaker::disabled(),
            retry_budget: crate::RetryBudget::default(),
        };
        let host = Arc::new(Host::new("http://new", &config, t0));
        let mut probe = admit(&host, 0).expect("breaker disabled");
        super::pace(&host, &Config::default(), &opts(1, None), &mut probe, 0)
            .await
            .expect("the first request goes as the probe");
        assert!(
            probe.quota_probe,
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
