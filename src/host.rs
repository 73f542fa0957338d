//! Host keys and the per-host state record.
//!
//! Everything the middleware knows about one host lives in one [`Host`]: its pacing schedule,
//! server-ordered cooldown, in-flight cap, and counters. The [store](crate::store) keeps one
//! record per key and evicts idle ones.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use reqwest::Url;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::adaptive::{Gate, ServerPacing};
use crate::breaker::{Breaker, BreakerSnapshot, BreakerState};
use crate::limit::{Limit, Pace, Pacer};
use crate::retry::{BudgetState, RetryBudget};
use crate::snapshot::{RetryBudgetSnapshot, ServerQuota};

/// The key of a host record: `scheme://host:port` as the URL serialises it (default ports are
/// omitted by the URL parser, so `http://a:80` and `http://a` share a record; user info is not
/// part of the key).
///
/// Borrowed from the URL in the common case, so looking up a known host allocates nothing.
pub(crate) fn host_key(url: &Url) -> Option<Cow<'_, str>> {
    url.host_str()?;
    let end = url[..url::Position::AfterPort].len();
    if url.username().is_empty() && url.password().is_none() {
        return Some(Cow::Borrowed(&url.as_str()[..end]));
    }
    let scheme = &url[..url::Position::AfterScheme];
    let authority = &url[url::Position::BeforeHost..url::Position::AfterPort];
    Some(Cow::Owned(format!("{scheme}://{authority}")))
}

/// What one host's requests have done so far (since its record was created).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Requests handed to the middleware for this host.
    pub requests: u64,
    /// Attempts sent to the network (retries included).
    pub attempts: u64,
    /// Attempts that had to wait for a pacing slot or a cooldown.
    pub waited: u64,
    /// Retries sent.
    pub retries: u64,
    /// `429 Too Many Requests` responses received.
    pub throttled: u64,
    /// Attempts that failed (5xx responses, transport errors).
    pub failures: u64,
    /// Requests refused without sending: circuit open, cooling down, deadline, cost.
    pub rejected: u64,
    /// Retries the retry budget refused.
    pub budget_denied: u64,
}

/// A view of one host's state, from [`Polite::snapshot`](crate::Polite::snapshot).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HostSnapshot {
    /// The host key, `scheme://host:port`.
    pub key: String,
    /// The configured limit, if any.
    pub limit: Option<Limit>,
    /// How long a new request would wait for a pacing slot (zero: one is free now). This is
    /// the schedule, not a backlog: right after a request took the last free slot it is above
    /// zero with nothing waiting; [`queued`](Self::queued) says whether anything waits.
    pub next_slot_in: Duration,
    /// Time until a server-ordered cooldown ends, if one is running.
    pub cooldown_in: Option<Duration>,
    /// Requests sent and not yet answered.
    pub in_flight: u32,
    /// Requests waiting for a pacing slot.
    pub queued: u32,
    /// The spacing in force between requests (zero: unpaced): the limit's, or longer when the
    /// server's quota runs low or the rate was lowered after a refusal.
    pub interval: Duration,
    /// The rate (requests per second) we lowered to after refusals without a hint, while it
    /// recovers; `None` when not throttled.
    pub adaptive_rate: Option<f64>,
    /// The server's quota as we count it, while one is known.
    pub server_quota: Option<ServerQuota>,
    /// The circuit breaker.
    pub breaker: BreakerSnapshot,
    /// The retry budget in its window.
    pub retry_budget: RetryBudgetSnapshot,
    /// What this host's requests have done so far.
    pub counters: Counters,
}

/// The mutable part of a host record, behind one short-held lock.
#[derive(Debug)]
pub(crate) struct HostState {
    pub(crate) pacer: Pacer,
    /// Cost of the requests waiting in the pacing queue (for deadline estimates).
    pub(crate) queued_cost: u64,
    pub(crate) queued: u32,
    pub(crate) counters: Counters,
    pub(crate) last_used: Instant,
    pub(crate) server: ServerPacing,
    pub(crate) breaker: BreakerState,
    pub(crate) budget: BudgetState,
}

/// The pacing decision for one attempt, all layers considered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Send now; the slot is taken. `probe`: this attempt reads a quota we do not know yet.
    Admit { probe: bool },
    /// Our own pacing: not before this instant.
    Wait(Instant),
    /// The server closed the host (Retry-After, spent quota) until this instant.
    Closed(Instant),
    /// A first-contact probe is out: wait for its answer, or until this instant.
    Hold(Instant),
}

impl HostState {
    /// Decide, and on `Admit` take the slot, for `cost` units at `now`.
    pub(crate) fn decide(&mut self, now: Instant, cost: u32) -> Decision {
        let now_ns = self.pacer.nanos(now);
        if let Some(until) = self.pacer.closed_until_at(now_ns) {
            return Decision::Closed(until);
        }
        let probe = match self.server.gate(now) {
            Gate::Closed(until) => return Decision::Closed(until),
            Gate::Hold(until) => return Decision::Hold(until),
            Gate::Open { probe } => probe,
        };
        self.pacer.slow_to(self.server.interval(now));
        match self.pacer.acquire_at(now_ns, cost) {
            Pace::Admit => {
                self.server.on_send(now, now_ns, cost, probe);
                self.counters.attempts += 1;
                Decision::Admit { probe }
            }
            Pace::Wait(until) => Decision::Wait(until),
        }
    }
}

/// What a new host record is made from.
#[derive(Debug, Clone)]
pub(crate) struct HostConfig {
    pub(crate) limit: Option<Limit>,
    pub(crate) max_in_flight: Option<u32>,
    pub(crate) breaker: Breaker,
    pub(crate) retry_budget: RetryBudget,
}

/// One host's record.
#[derive(Debug)]
pub(crate) struct Host {
    pub(crate) key: Arc<str>,
    pub(crate) limit: Option<Limit>,
    state: Mutex<HostState>,
    /// Wakes requests held behind a first-contact probe when an answer arrives.
    pub(crate) answered: tokio::sync::Notify,
    /// The pacing queue: one waiter at a time computes and sleeps; tokio's semaphore is FIFO,
    /// and a dropped waiter gives its turn back without having taken a slot.
    pub(crate) turnstile: Semaphore,
    /// The in-flight cap, when configured.
    pub(crate) in_flight: Option<Arc<Semaphore>>,
    max_in_flight: u32,
}

impl Host {
    pub(crate) fn new(key: &str, config: &HostConfig, now: Instant) -> Self {
        let limit = config.limit;
        let max_in_flight = config.max_in_flight;
        let limit_rate = limit.map(|l| 1.0 / l.interval().as_secs_f64());
        Host {
            key: Arc::from(key),
            limit,
            state: Mutex::new(HostState {
                pacer: Pacer::new(limit.as_ref(), now),
                queued_cost: 0,
                queued: 0,
                counters: Counters::default(),
                last_used: now,
                server: ServerPacing::new(now, limit_rate),
                breaker: BreakerState::new(&config.breaker, now),
                budget: BudgetState::new(&config.retry_budget, now),
            }),
            answered: tokio::sync::Notify::new(),
            turnstile: Semaphore::new(1),
            in_flight: max_in_flight.map(|n| Arc::new(Semaphore::new(n as usize))),
            max_in_flight: max_in_flight.unwrap_or(0),
        }
    }

    /// Lock the state. A panic while the lock was held cannot leave it inconsistent in a way
    /// that matters more than losing the host's pacing, so a poisoned lock is used as is.
    pub(crate) fn state(&self) -> MutexGuard<'_, HostState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Requests sent and not yet answered.
    fn in_flight_count(&self) -> u32 {
        self.in_flight.as_ref().map_or(0, |s| {
            self.max_in_flight
                .saturating_sub(u32::try_from(s.available_permits()).unwrap_or(u32::MAX))
        })
    }

    /// True when the record carries nothing worth keeping at `now`.
    pub(crate) fn is_idle(&self, now: Instant, idle_after: Duration) -> bool {
        let state = self.state();
        state.queued == 0
            && now.saturating_duration_since(state.last_used) >= idle_after
            && state.pacer.is_idle(now)
            && state.server.is_idle(now)
            && state.breaker.is_idle(now)
            && state.budget.is_idle(now)
            && self.in_flight_count() == 0
    }

    pub(crate) fn snapshot(&self, now: Instant) -> HostSnapshot {
        let state = self.state();
        HostSnapshot {
            key: self.key.to_string(),
            limit: self.limit,
            next_slot_in: state.pacer.next_free(now).saturating_duration_since(now),
            cooldown_in: state
                .pacer
                .closed_until(now)
                .map(|until| until.saturating_duration_since(now)),
            in_flight: self.in_flight_count(),
            queued: state.queued,
            interval: state.pacer.interval(),
            adaptive_rate: state.server.adaptive_rate(),
            server_quota: state
                .server
                .quota(now)
                .map(|(remaining, resets_in)| ServerQuota {
                    remaining,
                    resets_in,
                }),
            breaker: state.breaker.snapshot(now),
            retry_budget: {
                let (requests, retries, allowed) = state.budget.snapshot(now);
                RetryBudgetSnapshot {
                    requests,
                    retries,
                    allowed,
                }
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
}
