//! Host keys and the host record.
//!
//! Everything the middleware knows about one host lives in one [`Host`]: a
//! [`Record`](crate::record::Record) whose state holds its [`Schedule`] (as every scope's does)
//! and what only hosts have (the breaker, the retry budget, the adaptive rate, the counters),
//! and beside the record the lock-free lane and the in-flight cap. The [store](crate::store)
//! keeps one record per key and evicts idle ones.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;
use url::Url;

use crate::breaker::{Breaker, BreakerState};
use crate::limit::Limit;
use crate::pacing::Decision;
use crate::pacing::adaptive::{AdaptiveRate, RateChange};
use crate::pacing::cooldown::Why;
use crate::pacing::gcra::Plain;
use crate::pacing::lane::{Admitted, Lane};
use crate::partition::Partition;
use crate::record::{Lesson, Quota, Record, Reply, Schedule, View};
use crate::retry::{BudgetState, RetryBudget};
use crate::scope::{HostLimits, ScopeState};
use crate::signals::{MAX_HINT, ServerScope};
use crate::snapshot::{Counters, HostSnapshot, RetryBudgetSnapshot};

/// The key of a host record: `scheme://host:port` as the URL serialises it (default ports are
/// omitted by the URL parser, so `http://a:80` and `http://a` share a record; user info is not
/// part of the key).
///
/// Borrowed from the URL in the common case, so looking up a known host allocates nothing.
pub(crate) fn host_key(url: &Url) -> Option<Cow<'_, str>> {
    url.host_str()?;
    let origin = &url[..url::Position::AfterPort];
    // user info is the only part before the port that can hold an `@`
    if !origin.contains('@') {
        return Some(Cow::Borrowed(origin));
    }
    let scheme = &url[..url::Position::AfterScheme];
    let authority = &url[url::Position::BeforeHost..url::Position::AfterPort];
    Some(Cow::Owned(format!("{scheme}://{authority}")))
}

/// The mutable part of a host record, behind one short-held lock.
///
/// [`HostState::decide`] asks the host's own pacing (cooldown, first contact, schedule slowed by
/// the adaptive rate and a low quota) and then every other scope the request falls in;
/// [`HostState::observe`] gives each answer to the same owners (the schedule takes its
/// [`Lesson`]), and the snapshot reads them.
#[derive(Debug)]
pub(crate) struct HostState {
    pub(crate) schedule: Schedule,
    adaptive: AdaptiveRate,
    /// Quotas the server named for this host's routes (first path segment), learned from its
    /// answers (GitHub resources, Discord buckets). Boxed, and made on the first one: most hosts
    /// name none, and a record stays small.
    routes: Option<Box<Routes>>,
    /// Attempts sent and not answered yet.
    pub(crate) sent: u32,
    /// Cost of the requests waiting in the pacing queue.
    pub(crate) queued_cost: u64,
    pub(crate) queued: u32,
    pub(crate) counters: Counters,
    pub(crate) breaker: BreakerState,
    pub(crate) budget: BudgetState,
}

/// The quotas a server named for a host's routes, learned from its answers.
#[derive(Debug, Default)]
struct Routes {
    /// By route (first path segment).
    named: HashMap<Box<str>, ServerScope>,
    /// The latest instant one of these quotas holds requests back until (see
    /// [`HostState::routes_held_until`]).
    held_until: Option<Instant>,
}

/// Most route-to-quota names a host remembers; past it, the oldest knowledge is dropped.
const MAX_ROUTES: usize = 64;

/// What an answer changed, for the caller to report.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Observed {
    /// A `Retry-After` cooled the scope down for this long.
    pub(crate) retry_after: Option<Duration>,
    pub(crate) rate_change: Option<RateChange>,
    /// A bare refusal widened the gap between starts of the host's spaced schedule to this.
    pub(crate) gap: Option<Duration>,
    /// A refusal that said nothing the cooldowns could act on slowed a record without a limit
    /// of its own: a host-wide scope pacing it from outside learns the gap its own schedule
    /// would.
    pub(crate) slowed: bool,
    /// The first answer to an unpaced record's scout came this long after it was sent: a
    /// host-wide scope pacing the host from outside starts its schedule from the answer, as
    /// a record's own schedule does.
    pub(crate) first_answer: Option<Duration>,
}

impl HostState {
    /// Decide, and on `Admit` take the slots, for `cost` units at `now`, in this host's pacing
    /// and in every other scope the request falls in (each with its own cost).
    ///
    /// When another scope is what holds the request back, its index in `scopes` comes with the
    /// decision, so that the request waits in that scope's queue, not the host's.
    pub(crate) fn decide(
        &mut self,
        now: Instant,
        cost: u32,
        scopes: &mut [(MutexGuard<'_, ScopeState>, u32)],
    ) -> (Decision, Option<usize>) {
        let extra = self.adaptive.interval();
        let scout = match self.schedule.pacing.peek(now, cost, extra) {
            Ok(scout) => scout,
            Err(decision) => return (decision, None),
        };
        for (i, (scope, units)) in scopes.iter_mut().enumerate() {
            if let Err(decision) = scope.peek(now, *units) {
                return (decision, Some(i));
            }
        }
        self.schedule.pacing.take(now, cost, scout, extra);
        for (scope, units) in scopes.iter_mut() {
            scope.take(now, *units);
        }
        self.adaptive.on_send(self.schedule.pacing.nanos(now), cost);
        self.counters.attempts += 1;
        self.sent += 1;
        (Decision::Admit { scout }, None)
    }

    /// The part of a wait that is certain for `cost` units at `now`: the configured schedule
    /// and the server's cooldowns, here and in every other scope.
    pub(crate) fn certain_wait(
        &self,
        now: Instant,
        cost: u32,
        scopes: &[(MutexGuard<'_, ScopeState>, u32)],
    ) -> Instant {
        scopes
            .iter()
            .map(|(scope, units)| scope.schedule.pacing.certain_wait(now, *units))
            .fold(self.schedule.pacing.certain_wait(now, cost), Instant::max)
    }

    /// True when waits for this host's slots should end on the slot itself rather than on
    /// the timer tick after it: its schedule is spaced one by one (see
    /// [`Pacing::wants_precise_wakes`]), or the adaptive rate spaces it at a rate a tick
    /// matters to (a host paced from outside by a port-less `host_limit`, or by nothing, is
    /// spaced only by it after a refusal: 6.1 ms slots waking on 7 ms ticks cost 13%).
    pub(crate) fn wants_precise_wakes(&self) -> bool {
        self.schedule.pacing.wants_precise_wakes()
            || self
                .adaptive
                .interval()
                .is_some_and(crate::pacing::gcra::wakes_on_the_slot)
    }

    /// The configured limit, if any (the pacing holds it).
    pub(crate) fn limit(&self) -> Option<Limit> {
        self.schedule.limit()
    }

    /// The instant the host's cooldown ends, if one is running.
    pub(crate) fn cooldown_until(&self, now: Instant) -> Option<Instant> {
        self.schedule.pacing.cooldown_until(now)
    }

    /// The quota the server named for a path's route, if it named one.
    pub(crate) fn named_scope(&self, path: &str) -> Option<&ServerScope> {
        self.routes.as_ref()?.named.get(route_of(path))
    }

    /// Remember that the server counts `path`'s route in `scope`.
    pub(crate) fn learn_route(&mut self, path: &str, scope: &ServerScope) {
        let route = route_of(path);
        let routes = &mut self.routes.get_or_insert_default().named;
        if routes.get(route) == Some(scope) {
            return;
        }
        if routes.len() >= MAX_ROUTES {
            routes.clear();
        }
        routes.insert(route.into(), scope.clone());
    }

    /// A quota the server named for this host's routes holds its requests back until `until`
    /// (a pause, a spent quota): the record, the only way to those quotas, is kept until then.
    pub(crate) fn routes_held_until(&mut self, until: Instant) {
        if let Some(routes) = &mut self.routes {
            routes.held_until = routes.held_until.max(Some(until));
        }
    }

    /// True when no quota the server named for this host's routes holds anything at `now`.
    fn routes_idle(&self, now: Instant) -> bool {
        self.routes
            .as_ref()
            .is_none_or(|routes| routes.held_until.is_none_or(|until| until <= now))
    }

    /// Read an answer into the host's owners: its schedule takes its [`Lesson`], then the
    /// adaptive rate and the counters theirs. `scout` and `cost`: the attempt's.
    pub(crate) fn observe(
        &mut self,
        now: Instant,
        reply: &Reply<'_>,
        scout: bool,
        cost: u32,
    ) -> Observed {
        let Reply {
            status,
            hint,
            sent_at,
            refused,
            named,
        } = *reply;
        let named = named.is_some();
        let now_ns = self.schedule.pacing.nanos(now);
        let here = !named || hint.global;
        let retry_after = hint
            .retry_after
            .filter(|_| here && (refused || status.as_u16() == 503))
            .map(|wait| wait.min(MAX_HINT));
        let mut observed = Observed {
            retry_after,
            ..Observed::default()
        };
        if status.is_success() {
            observed.rate_change = self.adaptive.on_success(now, now_ns, cost);
        }
        // the scout may have reached the server as late as its answer (a slow first
        // connection): the schedule starts from the answer, so no window the server counts
        // holds more
        let first_answer = (scout && self.schedule.pacing.quota.in_first_contact())
            .then(|| now.saturating_duration_since(sent_at));
        let lesson = Lesson {
            retry_after,
            quota: match named {
                true => Quota::Elsewhere { scout },
                false => Quota::Count {
                    scout,
                    status: status.as_u16(),
                    hint,
                    sent: Some(sent_at),
                },
            },
            accepted_any: self.adaptive.accepted_any(now_ns),
            refused: refused && !named,
            first_answer,
            ..Lesson::none(sent_at)
        };
        let learned = self.schedule.observe(now, &lesson);
        if refused {
            self.counters.throttled += 1;
        }
        // a host-wide scope pacing a record without a limit of its own learns what the
        // record's own schedule would
        let unpaced = self.limit().is_none();
        observed.first_answer = first_answer.filter(|_| unpaced);
        if learned.slowed {
            // the adaptive rate learns from a refusal no cooldown says all of, so that a record
            // whose cooldown ends at its Retry-After instant does not release its whole queue
            // into the same wall
            observed.slowed = unpaced;
            observed.gap = learned.gap;
            observed.rate_change = self.adaptive.on_refusal(now, now_ns, sent_at);
            if let Some(pause) = observed.rate_change.and_then(|c| c.pause)
                && retry_after.is_none()
            {
                self.schedule
                    .pacing
                    .cool_down(crate::time::far_add(now, pause), Why::Refused);
            }
        }
        observed
    }

    /// Pace to newly configured limits (generation `generation`) from the next request on.
    /// Returns where the limit went when it moved between this record and the host-wide scope
    /// (a `host:port` limit replaced by a port-less one, or the reverse): the schedule must
    /// move with it (see [`Moved`]).
    pub(crate) fn relimit(&mut self, limits: HostLimits, generation: u64) -> Option<Moved> {
        let configured = limits.configured.as_ref();
        if !self.adaptive.is_for(configured) {
            self.adaptive = AdaptiveRate::for_limit(configured);
        }
        let before = self.limit();
        // where the old schedule stands, read before the relimit forgets it
        let position = self.schedule.pacing.position();
        if !self
            .schedule
            .relimit(limits.own, configured.is_some(), generation)
        {
            return None;
        }
        match (before, limits.own) {
            (Some(_), None) => position.map(Moved::Out),
            (None, Some(_)) => Some(Moved::In),
            _ => None,
        }
    }

    /// Whether to retry after `delay` (the backoff's), at `now`: within the deadline and
    /// `max_retry_after` of the host's cooldown and of `paused`, and if the breaker and the
    /// retry budget allow. Takes a retry from the budget when it says yes. `paused`: the pause
    /// the answer itself asked for (its `Retry-After`), whichever scope took it: the retry
    /// sleeps at least that long, even if its route is counted elsewhere by then.
    pub(crate) fn plan_retry(
        &mut self,
        now: Instant,
        delay: Duration,
        paused: Option<Duration>,
        deadline: Option<Instant>,
        max_retry_after: Duration,
    ) -> Result<Duration, NoRetry> {
        if self.breaker.phase() == crate::snapshot::BreakerPhase::Open {
            return Err(NoRetry::CircuitOpen);
        }
        let paused_until = paused.map(|pause| crate::time::far_add(now, pause));
        let reopens = self.cooldown_until(now).max(paused_until).unwrap_or(now);
        if reopens - now > max_retry_after {
            return Err(NoRetry::ServerWaitTooLong(reopens - now));
        }
        if deadline.is_some_and(|d| crate::time::far_add(now, delay).max(reopens) > d) {
            return Err(NoRetry::PastDeadline);
        }
        if !self.budget.withdraw(now) {
            self.counters.budget_denied += 1;
            return Err(NoRetry::BudgetSpent);
        }
        self.counters.retries += 1;
        Ok(delay.max(paused.unwrap_or_default()))
    }

    /// A scout ended without an answer (error, cancellation): let the next one go.
    pub(crate) fn release_scout(&mut self) {
        self.schedule.pacing.quota.release_scout();
    }

    /// The schedule the host's [lane](crate::pacing::lane) may run, and where it starts,
    /// while nothing but the configured limit paces the host: nobody queued, no adaptive rate,
    /// no route quota learned, and the pacing itself quiet (no cooldown, no quota counted).
    fn quiet_schedule(&self) -> Option<(Plain, u64)> {
        if self.queued > 0 || self.adaptive.rate().is_some() || self.routes.is_some() {
            return None;
        }
        self.schedule.pacing.quiet()
    }

    /// Count what the lane admitted, as [`HostState::decide`] counts its own admissions.
    fn absorb(&mut self, admitted: &Admitted) {
        self.schedule.pacing.resume(admitted);
        if let (1.., Some(last)) = (admitted.sends, admitted.last) {
            let units = u32::try_from(admitted.units).unwrap_or(u32::MAX);
            self.adaptive.on_send(last, units);
            self.counters.attempts += u64::from(admitted.sends);
            self.sent += admitted.sends;
        }
    }
}

/// The host's locked state. Taking it closes the host's lane (the lock owns the schedule
/// while held) and counts what the lane admitted; releasing it reopens the lane if the host
/// is still quiet.
pub(crate) struct StateGuard<'a> {
    lane: &'a Lane,
    state: MutexGuard<'a, HostState>,
}

impl Deref for StateGuard<'_> {
    type Target = HostState;

    fn deref(&self) -> &HostState {
        &self.state
    }
}

impl DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut HostState {
        &mut self.state
    }
}

impl Drop for StateGuard<'_> {
    fn drop(&mut self) {
        if let Some((plain, tat)) = self.state.quiet_schedule() {
            self.lane.open(plain, tat);
        }
    }
}

/// The route a server's named quota is learned for: the first path segment (`/search/issues`
/// and `/search/code` are GitHub's `search`; `/repos/..` its `core`).
fn route_of(path: &str) -> &str {
    let path = path.trim_start_matches('/');
    path.split('/').next().unwrap_or_default()
}

/// A limit that moved at run time between a host's record and the host-wide scope of its host.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Moved {
    /// The record's own limit is gone: the scope now pacing it takes over the record's schedule.
    Out(crate::pacing::Position),
    /// The record has a limit of its own now: it takes over the schedule of the host-wide
    /// scope that paced it, if that scope no longer does.
    In,
}

/// Why a failed attempt is not retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoRetry {
    CircuitOpen,
    /// The server's word cooled the scope down for longer than `max_retry_after`.
    ServerWaitTooLong(Duration),
    PastDeadline,
    BudgetSpent,
}

/// What a new host record is made from.
#[derive(Debug, Clone)]
pub(crate) struct HostConfig {
    pub(crate) limits: HostLimits,
    /// The configuration generation `limits` come from.
    pub(crate) generation: u64,
    pub(crate) partition: Option<Partition>,
    pub(crate) max_in_flight: Option<u32>,
    pub(crate) breaker: Arc<Breaker>,
    pub(crate) retry_budget: Arc<RetryBudget>,
}

#[cfg(test)]
impl HostConfig {
    /// A record's configuration for tests: `limit`, no breaker, the default retry budget.
    pub(crate) fn test(limit: Option<Limit>) -> Self {
        HostConfig {
            limits: HostLimits::own(limit),
            generation: 0,
            partition: None,
            max_in_flight: None,
            breaker: Arc::new(Breaker::disabled()),
            retry_budget: Arc::new(RetryBudget::default()),
        }
    }
}

/// One host's record, and what only hosts have beside it.
#[derive(Debug)]
pub(crate) struct Host {
    pub(crate) record: Record<HostState>,
    /// The lock-free path to a slot while the host is quiet.
    lane: Lane,
    /// Wakes requests held behind a first-contact probe when an answer arrives.
    pub(crate) answered: tokio::sync::Notify,
    /// The in-flight cap, when configured: a place is taken when the pacing slot is (never held
    /// while waiting), and held until the answer.
    pub(crate) in_flight: Option<Arc<Semaphore>>,
}

impl Host {
    pub(crate) fn new(key: &str, config: &HostConfig, now: Instant) -> Self {
        let HostLimits { own, configured } = config.limits;
        let schedule = Schedule::new(
            own.as_ref(),
            configured.is_some(),
            config.generation,
            now,
            true,
        );
        let lane = Lane::new(schedule.pacing.clock());
        let state = HostState {
            schedule,
            adaptive: AdaptiveRate::for_limit(configured.as_ref()),
            routes: None,
            sent: 0,
            queued_cost: 0,
            queued: 0,
            counters: Counters::default(),
            breaker: BreakerState::new(Arc::clone(&config.breaker), now),
            budget: BudgetState::new(Arc::clone(&config.retry_budget), now),
        };
        Host {
            record: Record::new(Arc::from(key), config.partition, state),
            lane,
            answered: tokio::sync::Notify::new(),
            in_flight: config
                .max_in_flight
                .map(|n| Arc::new(Semaphore::new(n as usize))),
        }
    }

    /// Lock the state. A panic while the lock was held cannot leave it inconsistent in a way
    /// that matters more than losing the host's pacing, so a poisoned lock is used as is.
    pub(crate) fn state(&self) -> StateGuard<'_> {
        let mut state = self.record.lock();
        state.absorb(&self.lane.close());
        StateGuard {
            lane: &self.lane,
            state,
        }
    }

    /// Take `cost` units' slot at `now` without the lock, if the host is quiet and the slot is
    /// free (see [`lane`](crate::pacing::lane)); `false`: decide under the lock.
    pub(crate) fn try_admit(&self, now: Instant, cost: u32) -> bool {
        self.lane.try_take(now, cost)
    }

    /// True when the record carries nothing worth keeping at `now`: nothing waiting or in
    /// flight, quiet for `idle_after`, no promise pending (a slot ahead, a cooldown, a quota
    /// window, a quota the server named for its routes holding requests back) and the breaker
    /// not failing fast. What it learned (a lowered rate, failure counts, the retry budget) is
    /// forgotten with it.
    pub(crate) fn is_idle(&self, now: Instant, idle_after: Duration) -> bool {
        let state = self.state();
        state.queued == 0
            && state.schedule.is_idle(now, idle_after)
            && state.routes_idle(now)
            && state.breaker.is_quiet(now)
            && state.sent == 0
    }

    pub(crate) fn snapshot(&self, now: Instant) -> HostSnapshot {
        let state = self.state();
        let View {
            limit,
            next_slot_in,
            interval,
            cooldown_in,
            server_quota,
        } = state.schedule.view(now, state.adaptive.interval());
        let (requests, retries, allowed) = state.budget.snapshot(now);
        HostSnapshot {
            key: self.record.key.to_string(),
            partition: self.record.partition.map(|p| p.to_string()),
            limit,
            next_slot_in,
            cooldown_in,
            in_flight: state.sent,
            queued: state.queued,
            interval,
            adaptive_rate: state.adaptive.rate(),
            server_quota,
            breaker: state.breaker.snapshot(now),
            retry_budget: RetryBudgetSnapshot {
                requests,
                retries,
                allowed,
            },
            counters: state.counters,
        }
    }
}

/// Marks a request as waiting in a host's pacing queue; leaves the queue on drop, so a cancelled
/// waiter is forgotten.
pub(crate) struct Queued<'a> {
    host: &'a Host,
    cost: u64,
}

impl<'a> Queued<'a> {
    pub(crate) fn join(host: &'a Host, state: &mut HostState, cost: u32) -> Self {
        state.queued_cost += u64::from(cost);
        state.queued += 1;
        Queued {
            host,
            cost: u64::from(cost),
        }
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        let mut state = self.host.state();
        state.queued_cost -= self.cost;
        state.queued -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signals::ServerHint;

    fn key(url: &str) -> String {
        let url = Url::parse(url).expect("test URLs parse");
        host_key(&url).expect("test URLs have hosts").into_owned()
    }

    #[test]
    fn host_key_is_scheme_host_and_port() {
        assert_eq!(key("http://127.0.0.1:8080/a?b"), "http://127.0.0.1:8080");
        assert_eq!(key("https://API.example.com/x"), "https://api.example.com");
        assert_eq!(
            key("http://example.com:80/"),
            "http://example.com",
            "the default port is the same host"
        );
        assert_eq!(
            key("http://u:p@[::1]:9/"),
            "http://[::1]:9",
            "user info is not part of the key"
        );
        assert_ne!(
            key("http://a.com/"),
            key("https://a.com/"),
            "schemes are different hosts"
        );
        assert!(host_key(&Url::parse("data:text/plain,hi").expect("parses")).is_none());
    }

    /// A bare refusal on a spaced schedule (a leaky bucket judging every gap) widens the gap
    /// between starts for 30 s, where the adaptive rate's dip is over within a second.
    #[test]
    fn a_bare_refusal_on_a_spaced_schedule_widens_the_gap_between_starts() {
        let t0 = Instant::now();
        let config = HostConfig::test(Some(Limit::per_second(200)));
        let host = Host::new("http://test", &config, t0);
        let mut state = host.state();
        let (mut t, mut starts) = (t0, Vec::new());
        for i in 0..600 {
            let scout = loop {
                match state.decide(t, 1, &mut []).0 {
                    Decision::Admit { scout } => break scout,
                    Decision::Wait(at)
                    | Decision::Slowed(at)
                    | Decision::CoolingDown(at)
                    | Decision::Hold(at) => t = at.max(t + Duration::from_micros(1)),
                }
            };
            starts.push(t);
            let status = if i == 20 { 429 } else { 200 };
            let status = http::StatusCode::from_u16(status).expect("valid");
            state.observe(t, &Reply::read(status, &ServerHint::default(), t), scout, 1);
        }
        let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
        let before = gaps[1..20].iter().min().expect("gaps");
        let settled = gaps[400..].iter().min().expect("gaps");
        assert!(
            *before < Duration::from_micros(5_300),
            "before: the configured gap, {before:?}"
        );
        assert!(
            *settled >= Duration::from_micros(5_375),
            "two seconds after the refusal: the widened gap, {settled:?}"
        );
    }

    /// Refusals in a row on a host configured per second pause it a quarter of that second
    /// (not the 100 ms of a host with nothing configured): the configured window reaches the
    /// adaptive rate, whether the limit is the record's own or the host-wide one (a port-less
    /// `host_limit`) that paces it from outside.
    #[test]
    fn refusals_in_a_row_on_a_configured_host_pause_a_quarter_of_its_window() {
        let limit = Limit::per_second(200);
        let outside = HostLimits {
            own: None,
            configured: Some(limit),
        };
        for limits in [HostLimits::own(Some(limit)), outside] {
            let t0 = Instant::now();
            let config = HostConfig {
                limits,
                ..HostConfig::test(None)
            };
            let host = Host::new("http://test", &config, t0);
            let mut state = host.state();
            state.schedule.pacing.quota.assume_unmetered();
            let refused = http::StatusCode::TOO_MANY_REQUESTS;
            let none = ServerHint::default();
            let mut t = t0;
            for _ in 0..2 {
                t += Duration::from_millis(10);
                assert!(matches!(
                    state.decide(t, 1, &mut []).0,
                    Decision::Admit { .. }
                ));
                state.observe(t, &Reply::read(refused, &none, t), false, 1);
            }
            let closed = state.cooldown_until(t).map(|until| until - t);
            assert_eq!(closed, Some(Duration::from_millis(250)), "{limits:?}");
        }
    }

    /// A record paced from outside (a port-less `host_limit`) has no spaced schedule of its
    /// own, but once a refusal throttles it, its adaptive rate spaces its requests: those waits
    /// end on the slot, not on the timer tick after it (6.1 ms slots on 7 ms ticks cost 13%).
    /// Slots closer than two ticks go in batches per tick, as a configured schedule's do: a
    /// task yielding its way to each would keep a core busy.
    #[test]
    fn a_throttled_record_wakes_precisely_for_spaced_slots() {
        let throttled = |limit: Limit| {
            let t0 = Instant::now();
            let config = HostConfig {
                limits: HostLimits {
                    own: None,
                    configured: Some(limit),
                },
                ..HostConfig::test(None)
            };
            let host = Host::new("http://test", &config, t0);
            let mut state = host.state();
            state.schedule.pacing.quota.assume_unmetered();
            assert!(!state.wants_precise_wakes(), "nothing spaces it yet");
            let t = t0 + Duration::from_millis(10);
            assert!(matches!(
                state.decide(t, 1, &mut []).0,
                Decision::Admit { .. }
            ));
            let refused = http::StatusCode::TOO_MANY_REQUESTS;
            state.observe(
                t,
                &Reply::read(refused, &ServerHint::default(), t),
                false,
                1,
            );
            assert!(state.adaptive.rate().is_some(), "throttled");
            state.wants_precise_wakes()
        };
        assert!(throttled(Limit::per_second(200)), "5.9 ms slots");
        assert!(!throttled(Limit::per_second(2000)), "0.6 ms slots");
    }

    /// The record's own size, a layout fact: the goal is 512 bytes, which needs the
    /// windowed counts to shrink (see docs/measurements.md, "Scale"); this keeps it from growing
    /// back while that is open. 856 bytes.
    #[test]
    fn a_host_record_does_not_grow() {
        let size = std::mem::size_of::<Host>();
        let most = 856;
        assert!(
            size <= most,
            "a host record is {size} bytes, more than {most}"
        );
    }

    /// Threads taking slots through the lane and through the lock at once, while another
    /// keeps taking the lock (closing and reopening the lane), never start more than the limit
    /// in any window, and every admission is counted once.
    #[test]
    fn the_lane_and_the_lock_share_one_schedule() {
        let limit = Limit::per(40, Duration::from_millis(100)).burst(8);
        let config = HostConfig::test(Some(limit));
        let host = Host::new("http://test", &config, Instant::now());
        host.state().schedule.pacing.quota.assume_unmetered();
        let until = Instant::now() + Duration::from_millis(400);
        let (starts, fast) = std::thread::scope(|s| {
            let takers: Vec<_> = (0..3)
                .map(|_| {
                    s.spawn(|| {
                        let (mut starts, mut fast) = (Vec::new(), 0);
                        while Instant::now() < until {
                            let now = Instant::now();
                            if host.try_admit(now, 1) {
                                starts.push(now);
                                fast += 1;
                            } else if matches!(
                                host.state().decide(now, 1, &mut []).0,
                                Decision::Admit { .. }
                            ) {
                                starts.push(now);
                            }
                        }
                        (starts, fast)
                    })
                })
                .collect();
            s.spawn(|| {
                while Instant::now() < until {
                    let _ = host.snapshot(Instant::now());
                    std::thread::yield_now();
                }
            });
            takers
                .into_iter()
                .map(|t| t.join().expect("taker finished"))
                .fold((Vec::new(), 0), |(mut all, n), (starts, fast)| {
                    all.extend(starts);
                    (all, n + fast)
                })
        });
        let mut starts = starts;
        starts.sort();
        let window = Duration::from_millis(100);
        let (mut most, mut first) = (0, 0);
        for (i, &t) in starts.iter().enumerate() {
            while t - starts[first] >= window {
                first += 1;
            }
            most = most.max(i + 1 - first);
        }
        assert!(most <= 40, "{most} starts in one window of 100 ms");
        assert!(starts.len() >= 40, "only {} starts in 400 ms", starts.len());
        assert!(
            fast > 0,
            "the lane admitted nothing: this tested the lock only"
        );
        let state = host.state();
        let admitted = u64::try_from(starts.len()).expect("fits");
        assert_eq!(
            state.counters.attempts, admitted,
            "each admission counted once"
        );
        assert_eq!(u64::from(state.sent), admitted, "each admission in flight");
    }
}
