//! Pacing shared across processes through a [`RedisStore`] (feature `redis`).
//!
//! Each process first paces locally, as without a store (first contact, the adaptive rate, a
//! spent quota, FIFO order); then, for every configured limit the request falls in (its
//! host's, and the host-wide, route and unit scopes), it reserves its slot in the fleet's
//! shared schedule, one Lua script call per scope, and sleeps until that slot. The shared
//! schedule reads Redis's own clock, so processes whose clocks disagree still keep "never more
//! than n in any window". A `Retry-After` one process receives sets a cooldown, for every
//! process, on the record or scope it was set on there (the host record, or the quota the
//! server named), and every process reads the cooldowns of its request's record and scopes
//! before it sends, limited or not, and again after sleeping for its slots: a cooldown that
//! came meanwhile is waited out, and the slots are reserved again. The breaker stays per
//! process: a host that fails for one process (its network, its DNS) may be fine for another,
//! and failing fast needs no round trip.
//!
//! When Redis does not answer within the store's timeout, [`Fallback::Local`](crate::Fallback)
//! paces that request locally at the limit divided by the processes seen alive, in one local
//! schedule per shared one (see [`LocalSchedules`](crate::store::redis::LocalSchedules)),
//! and [`Fallback::FailClosed`](crate::Fallback) refuses it with [`Error::StoreUnavailable`].
//! Partitioned requests need the fleet's secret once per process: until Redis has given it,
//! they fail with `StoreUnavailable` whatever the fallback (a per-process key would split one
//! credential's quota). A slot further away than `max_retry_after` (or the deadline) is not
//! reserved, in the shared schedule or the local one: the request fails at once with
//! `CoolingDown` (or `DeadlineExceeded`).
//!
//! Known limit: a request that falls in several shared schedules reserves them one after the
//! other and starts at the last slot, which may be later than the slot it reserved in the
//! first; in that schedule a window can then hold one start more than its count.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::Error;
use crate::extensions::RequestOptions;
use crate::host::Host;
use crate::limit::Limit;
use crate::partition::Partition;
use crate::scope::{Cooldowns, Scope};
use crate::store::RedisStore;
use crate::store::redis::Reservation;

/// The shared key of a host record's schedule.
pub(crate) fn host_key(host: &Host) -> String {
    format!(
        "{}|{}",
        Partition::key_of(host.record.partition),
        host.record.key
    )
}

/// Wait out every cooldown the fleet shares for this request's host record and scopes, then
/// reserve its slot in every shared schedule it falls in, and sleep until the last of them.
/// A request that slept reads the cooldowns again: one that came meanwhile (here or in another
/// process) is waited out, and the slots are reserved again. `max_wait`: the longest
/// server-ordered wait accepted (`max_retry_after`).
///
/// A record or scope without a limit has no shared schedule, but may be cooling down (a
/// `Retry-After` another process received): it is read, not reserved in, and first, so that
/// no slot is reserved that a cooldown would leave unused.
pub(crate) async fn pace(
    store: &RedisStore,
    host: &Host,
    scopes: &[(Arc<Scope>, u32)],
    opts: &RequestOptions,
    max_wait: Duration,
    attempts: u32,
) -> Result<(), Error> {
    let ask = Ask {
        store,
        host,
        opts,
        max_wait,
        attempts,
    };
    let mut schedules: Vec<(String, Option<Limit>, u32)> = Vec::with_capacity(1 + scopes.len());
    schedules.push((host_key(host), host.state().limit(), opts.cost));
    for (scope, units) in scopes {
        let limit = scope.state().schedule.limit();
        schedules.push((scope.record.key.to_string(), limit, *units));
    }
    // stable: the cooldowns first, then the schedules in their order
    schedules.sort_by_key(|(_, limit, _)| limit.is_some());
    loop {
        // the local cooldowns in force already (its own slot may have spent a quota) are not
        // waited for again below
        let known = ask.local_cooldown(scopes);
        let mut slept = false;
        for (key, limit, cost) in &schedules {
            slept |= ask.reserve(key, limit.as_ref(), *cost).await?;
        }
        if !slept {
            return Ok(());
        }
        // a `Retry-After` may have come while the request slept for its slots, in this
        // process or another: if one did, it is waited out, and the slots (now in the past,
        // and shared with every request that waited for the same pause) are reserved again
        let mut paused = ask.wait_for_local_cooldown_after(scopes, known).await?;
        for (key, _, cost) in &schedules {
            paused |= ask.reserve(key, None, *cost).await?;
        }
        if !paused {
            return Ok(());
        }
    }
}

/// What every reservation of one request shares.
struct Ask<'a> {
    store: &'a RedisStore,
    host: &'a Host,
    opts: &'a RequestOptions,
    /// The longest server-ordered wait accepted (`max_retry_after`).
    max_wait: Duration,
    /// Attempts sent before this one.
    attempts: u32,
}

impl Ask<'_> {
    /// The longest this request may wait from `now`: `max_wait`, or less before its deadline.
    fn may_wait(&self, now: Instant) -> Duration {
        self.opts.deadline.map_or(self.max_wait, |d| {
            d.saturating_duration_since(now).min(self.max_wait)
        })
    }

    /// When the last cooldown this process set on the request's host record and scopes ends.
    fn local_cooldown(&self, scopes: &[(Arc<Scope>, u32)]) -> Option<Instant> {
        let now = Instant::now();
        let host = self.host.state().cooldown_until(now);
        scopes
            .iter()
            .map(|(scope, _)| scope.state().schedule.pacing.cooldown_until(now))
            .fold(host, Option::max)
    }

    /// Wait out a cooldown this process set on the request's host record or scopes that ends
    /// later than `known` (one set while the request slept). `true` when there was one.
    async fn wait_for_local_cooldown_after(
        &self,
        scopes: &[(Arc<Scope>, u32)],
        known: Option<Instant>,
    ) -> Result<bool, Error> {
        let Some(until) = self
            .local_cooldown(scopes)
            .filter(|&until| Some(until) > known)
        else {
            return Ok(false);
        };
        let now = Instant::now();
        let wait = until.saturating_duration_since(now);
        if wait > self.may_wait(now) {
            return Err(refused(
                self.host,
                self.opts,
                now,
                wait,
                wait,
                self.attempts,
            ));
        }
        tokio::time::sleep_until(until).await;
        Ok(true)
    }

    /// Reserve `cost` units in the shared schedule `key` (paced by `limit`; `None`: only its
    /// cooldown is read) and sleep until the slot. `true` when it slept.
    async fn reserve(&self, key: &str, limit: Option<&Limit>, cost: u32) -> Result<bool, Error> {
        let Ask {
            store,
            host,
            opts,
            attempts,
            ..
        } = *self;
        let now = Instant::now();
        let may_wait = self.may_wait(now);
        let reservation = store
            .reserve(key, limit, None, cost, may_wait)
            .await
            .map_err(|err| unavailable(host, &err))?;
        match (reservation, limit) {
            // a zero-length sleep would still wait for the timer's next tick (a millisecond)
            (Reservation::Go { delay, .. }, _) => {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Ok(!delay.is_zero())
            }
            // nothing was reserved: the fleet's schedule (or a closure) is further away than
            // this request may wait, so it fails now rather than wait without a bound
            (Reservation::Refused { earliest, closed }, _) => {
                Err(refused(host, opts, now, earliest, closed, attempts))
            }
            // no limit: only the cooldowns this process knows of hold it back, and it has
            // waited them out already
            (Reservation::Local { .. }, None) => Ok(false),
            // this process's share of the limit, in the one local schedule of this shared one
            (Reservation::Local { processes }, Some(limit)) => {
                let now = Instant::now();
                let local = store.local();
                match local.reserve(key, limit, processes, cost, now, may_wait) {
                    Ok(start) => {
                        if start > now {
                            tokio::time::sleep_until(start).await;
                        }
                        Ok(start > now)
                    }
                    Err(earliest) => {
                        Err(refused(host, opts, now, earliest, Duration::ZERO, attempts))
                    }
                }
            }
        }
    }
}

/// The error for a slot `earliest` from `now` (of which `closed` is a closure), further than
/// the request may wait: past its deadline, or past `max_retry_after`.
fn refused(
    host: &Host,
    opts: &RequestOptions,
    now: Instant,
    earliest: Duration,
    closed: Duration,
    attempts: u32,
) -> Error {
    if opts.past_deadline(crate::time::far_add(now, earliest)) {
        Error::DeadlineExceeded {
            host: host.record.key.to_string(),
            attempts,
            would_wait: Some(earliest),
        }
    } else {
        Error::CoolingDown {
            host: host.record.key.to_string(),
            retry_in: earliest.max(closed),
        }
    }
}

/// Share the cooldowns an answer set (`Retry-After`): each scope's (`None`: the host record's)
/// is written to its shared key, for every process to read before it sends. A cooldown is
/// never shortened.
pub(crate) async fn close(store: &RedisStore, host: &Host, cooldowns: &Cooldowns) {
    for (scope, wait) in cooldowns {
        let key = match scope {
            Some(scope) => scope.record.key.to_string(),
            None => host_key(host),
        };
        if let Err(err) = store.close(&key, *wait).await {
            tracing::debug!(host = %host.record.key, %err, "could not share a cooldown through Redis");
        }
    }
}

fn unavailable(host: &Host, err: &crate::store::RedisStoreError) -> Error {
    tracing::debug!(host = %host.record.key, %err, "shared store unavailable: failing closed");
    Error::StoreUnavailable {
        host: host.record.key.to_string(),
        reason: err.to_string(),
    }
}
