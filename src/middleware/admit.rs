//! The breaker's word for each attempt: asked when the attempt begins, and again right before
//! it is sent (a breaker that opened while the request waited for its slot stops it).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::breaker::{Admission, Transition};
use crate::builder::{Config, Polite};
use crate::error::Error;
use crate::extensions::RequestOptions;
use crate::host::{Host, HostState, Moved, StateGuard};
use crate::observe;
use crate::scope::Scope;
use crate::signals::ServerScope;

/// One attempt between admission and its recorded outcome. Dropped unrecorded (the request
/// future was cancelled, or pacing failed), it gives back the probe and scout slots it held.
pub(super) struct Attempt {
    pub(super) host: Arc<Host>,
    pub(super) admission: Admission,
    /// This attempt reads a quota we do not know yet (first contact).
    pub(super) scout: bool,
    pub(super) cost: u32,
    /// When the attempt took its slot.
    pub(super) sent_at: Option<Instant>,
    pub(super) recorded: bool,
}

impl Attempt {
    fn new(host: &Arc<Host>, admission: Admission, cost: u32) -> Self {
        Attempt {
            host: Arc::clone(host),
            admission,
            scout: false,
            cost,
            sent_at: None,
            recorded: false,
        }
    }

    /// Free the slots this attempt holds (breaker half-open probe, first-contact scout), so the
    /// next request can take them.
    pub(super) fn release_slots(&self) {
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

/// The host's record (its `state`, locked) paced by the limits configured now: changed at
/// run time, they are applied, and a limit that moved between the record and its host-wide
/// scope takes its schedule along (the change lets nothing more through than either form
/// allows). Requests that begin and requests that were waiting when the limits changed both
/// come through here.
pub(super) fn up_to_date<'a>(
    polite: &Polite,
    host: &'a Host,
    url: &url::Url,
    state: StateGuard<'a>,
) -> StateGuard<'a> {
    if state.schedule.generation == polite.generation() {
        return state;
    }
    drop(state);
    let (limits, generation) = polite.limits();
    let configured = limits.host_wide(url);
    let wide = configured.is_some();
    let host_wide = polite.host_wide_scope(host, url, configured, generation);
    let mut state = host.state();
    if let Some(moved) = state.relimit(limits.for_host(url), generation) {
        // out to the host-wide scope configured now, or in from the one that paced the record
        if matches!((moved, wide), (Moved::Out(_), true) | (Moved::In, false)) {
            carry_schedule(&mut state, moved, host_wide.as_deref());
        }
    }
    state
}

/// A limit moved between a host's record (its `state`, locked) and `host_wide`, its host's
/// host-wide scope: the schedule moves with it, so the change lets nothing through sooner than
/// the old form allowed. The scope's lock is taken inside the record's, in the usual order.
fn carry_schedule(state: &mut HostState, moved: Moved, host_wide: Option<&Scope>) {
    let Some(scope) = host_wide else {
        return;
    };
    match moved {
        Moved::Out(position) => scope.state().schedule.pacing.take_over(position),
        Moved::In => {
            if let Some(position) = scope.state().schedule.pacing.position() {
                state.schedule.pacing.take_over(position);
            }
        }
    }
}

/// Bring the host's limit up to date, count the request, deposit in the retry budget, refuse
/// a cost that can never fit, and ask the breaker for its first attempt: one lock for all.
/// Returns the quota the server named for its route, if any, the attempt (`None` when the
/// breaker refused and the request waits for it, [`WaitIfOpen`](crate::WaitIfOpen)), and the
/// configured limits' generation the record paces by.
pub(super) fn begin(
    polite: &Polite,
    host: &Arc<Host>,
    url: &url::Url,
    opts: &RequestOptions,
) -> Result<(Option<ServerScope>, Option<Attempt>, u64), Error> {
    let now = Instant::now();
    let mut state = up_to_date(polite, host, url, host.state());
    state.counters.requests += 1;
    state.budget.deposit(now);
    if let Some(limit) = state.limit()
        && opts.cost > limit.count()
    {
        return Err(Error::CostExceedsLimit {
            host: host.record.key.to_string(),
            cost: opts.cost,
            limit: limit.count(),
        });
    }
    let named = state.named_scope(url.path()).cloned();
    let generation = state.schedule.generation;
    let (admission, transition) = state.breaker.admit(now);
    let refused = refusal(host, &state, admission, now);
    drop(state);
    report_transition(host, &polite.inner.config, transition);
    match refused {
        None => Ok((
            named,
            Some(Attempt::new(host, admission, opts.cost)),
            generation,
        )),
        Some(_) if opts.wait_if_open.is_some() => Ok((named, None, generation)),
        Some(refused) => Err(refused),
    }
}

/// Ask the circuit breaker for an attempt. Open: fail fast with `CircuitOpen`, nothing sent,
/// or with [`WaitIfOpen`](crate::WaitIfOpen) wait until it admits the attempt (bounded by the
/// deadline, else by `max_retry_after`).
pub(super) async fn admit(
    host: &Arc<Host>,
    config: &Config,
    opts: &RequestOptions,
    attempts: u32,
) -> Result<Attempt, Error> {
    loop {
        // made before asking, so an answer in between is not missed
        let answered = host.answered.notified();
        tokio::pin!(answered);
        answered.as_mut().enable();
        let now = Instant::now();
        let (admission, transition, refused) = {
            let mut state = host.state();
            let (admission, transition) = state.breaker.admit(now);
            (admission, transition, refusal(host, &state, admission, now))
        };
        report_transition(host, config, transition);
        let Some(refused) = refused else {
            return Ok(Attempt::new(host, admission, opts.cost));
        };
        let Error::CircuitOpen { retry_in, .. } = refused else {
            return Err(refused);
        };
        let bound = opts.wait_if_open.unwrap_or(now);
        if now >= bound {
            tracing::debug!(host = %host.record.key, ?retry_in, attempts, "circuit open: failing fast");
            return Err(refused);
        }
        tracing::debug!(host = %host.record.key, ?retry_in, attempts, "circuit open: waiting for the host to heal");
        // a probe's answer decides sooner than the open period: wake on answers too
        let until = crate::time::far_add(now, retry_in).min(bound);
        let _ = tokio::time::timeout_at(until, answered).await;
    }
}

/// Right before a send: a breaker that changed since the attempt was admitted (it opened, or
/// the probe's half-open period is over) is asked again. Returns the transition asking it
/// caused (to report once the lock is released), and `Err` when it refuses: the attempt is
/// not sent. An attempt whose admission still holds goes as it is.
pub(super) fn recheck(
    host: &Host,
    state: &mut HostState,
    attempt: &mut Attempt,
    now: Instant,
) -> (Option<Transition>, Result<(), Error>) {
    if state.breaker.still_admits(&attempt.admission) {
        return (None, Ok(()));
    }
    state.breaker.release(&attempt.admission);
    let (admission, transition) = state.breaker.admit(now);
    if let Some(refused) = refusal(host, state, admission, now) {
        return (transition, Err(refused));
    }
    attempt.admission = admission;
    (transition, Ok(()))
}

/// [`recheck`] under the host's lock, now, its transition reported.
#[cfg(feature = "redis")]
pub(super) fn recheck_now(
    host: &Host,
    config: &Config,
    attempt: &mut Attempt,
) -> Result<(), Error> {
    let (transition, admitted) = recheck(host, &mut host.state(), attempt, Instant::now());
    report_transition(host, config, transition);
    admitted
}

/// The error for a breaker's refusal, if `admission` is one. While a probe is out (sent),
/// `retry_in` is when its answer can be expected (as long after it was sent as the host's last
/// answer took), not the whole hold.
#[inline]
fn refusal(host: &Host, state: &HostState, admission: Admission, now: Instant) -> Option<Error> {
    match admission {
        Admission::Reject { retry_in } => Some(circuit_open(host, state, retry_in, now)),
        Admission::Allow | Admission::Probe { .. } => None,
    }
}

#[cold]
fn circuit_open(host: &Host, state: &HostState, retry_in: Duration, now: Instant) -> Error {
    let retry_in = state
        .breaker
        .probe_decides_in(now, MIN_DECISION_WAIT)
        .map_or(retry_in, |decides_in| decides_in.min(retry_in));
    Error::CircuitOpen {
        host: host.record.key.to_string(),
        retry_in,
    }
}

/// The shortest `retry_in` while a probe is out: a caller sleeping it does not spin.
const MIN_DECISION_WAIT: Duration = Duration::from_millis(10);

/// Refuse units that can never fit in one of the request's scopes (a cost above its limit's
/// count would break the window promise).
pub(super) fn fits(scopes: &[(Arc<Scope>, u32)]) -> Result<(), Error> {
    for (scope, units) in scopes {
        let limit = scope.state().schedule.limit(); // the scope's lock is released here: never held with the host's
        if let Some(limit) = limit
            && *units > limit.count()
        {
            return Err(Error::CostExceedsLimit {
                host: scope.label.to_string(),
                cost: *units,
                limit: limit.count(),
            });
        }
    }
    Ok(())
}

/// Report a breaker transition (to `tracing` and the observer); call it with no lock held.
#[inline]
pub(super) fn report_transition(host: &Host, config: &Config, transition: Option<Transition>) {
    if let Some(transition) = transition {
        report(host, config, transition);
    }
}

#[cold]
fn report(host: &Host, config: &Config, transition: Transition) {
    match transition {
        Transition::Opened { failures, open_for } => {
            tracing::warn!(host = %host.record.key, failures, ?open_for, "circuit breaker opened")
        }
        Transition::HalfOpened => {
            tracing::info!(host = %host.record.key, "circuit breaker half-open: probing")
        }
        Transition::Closed => tracing::info!(host = %host.record.key, "circuit breaker closed"),
    }
    if let Some(observer) = config.observers.get() {
        observe::breaker(observer, host, transition);
    }
}
