//! Pacing shared across processes through a [`RedisStore`] (feature `redis`).
//!
//! Each process first paces locally, as without a store (first contact, the adaptive rate, a
//! spent quota, FIFO order); then, for every configured limit the request falls in (its
//! host's, and the host-wide, route and unit scopes), it reserves its slot in the fleet's
//! shared schedule, one Lua script call per scope, and sleeps until that slot. The shared
//! schedule reads Redis's own clock, so processes whose clocks disagree still keep "never more
//! than n in any window". A `Retry-After` one process receives closes the host for every
//! process. The breaker stays per process: a host that fails for one process (its network,
//! its DNS) may be fine for another, and failing fast needs no round trip.
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
use crate::scope::Scope;
use crate::store::RedisStore;
use crate::store::redis::Reservation;

/// The shared key of a host record's schedule.
pub(crate) fn host_key(host: &Host) -> String {
    format!("{}|{}", Partition::key_of(host.partition), host.key)
}

/// Reserve this request's slot in every shared schedule it falls in, and sleep until the last
/// of them. `max_wait`: the longest server-ordered wait accepted (`max_retry_after`).
pub(crate) async fn pace(
    store: &RedisStore,
    host: &Host,
    scopes: &[(Arc<Scope>, u32)],
    opts: &RequestOptions,
    max_wait: Duration,
    attempts: u32,
) -> Result<(), Error> {
    let host_limit = host.state().limit();
    let mut schedules: Vec<(String, Limit, u32)> = Vec::new();
    if let Some(limit) = host_limit {
        schedules.push((host_key(host), limit, opts.cost));
    }
    for (scope, units) in scopes {
        if let Some(limit) = scope.state().limit {
            schedules.push((scope.key.to_string(), limit, *units));
        }
    }
    for (key, limit, cost) in &schedules {
        reserve(store, host, key, limit, *cost, opts, max_wait, attempts).await?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn reserve(
    store: &RedisStore,
    host: &Host,
    key: &str,
    limit: &Limit,
    cost: u32,
    opts: &RequestOptions,
    max_wait: Duration,
    attempts: u32,
) -> Result<(), Error> {
    let now = Instant::now();
    let may_wait = opts
        .deadline
        .map_or(max_wait, |d| d.saturating_duration_since(now).min(max_wait));
    let reservation = store
        .reserve(key, Some(limit), None, cost, may_wait)
        .await
        .map_err(|err| unavailable(host, &err))?;
    match reservation {
        Reservation::Go { delay, .. } => {
            tokio::time::sleep(delay).await;
            Ok(())
        }
        // nothing was reserved: the fleet's schedule (or a closure) is further away than this
        // request may wait, so it fails now rather than wait without a bound
        Reservation::Refused { earliest, closed } => {
            Err(refused(host, opts, now, earliest, closed, attempts))
        }
        // this process's share of the limit, in the one local schedule of this shared one
        Reservation::Local { processes } => {
            let now = Instant::now();
            match store
                .local()
                .reserve(key, limit, processes, cost, now, may_wait)
            {
                Ok(start) => {
                    tokio::time::sleep_until(start).await;
                    Ok(())
                }
                Err(earliest) => Err(refused(host, opts, now, earliest, Duration::ZERO, attempts)),
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
            host: host.key.to_string(),
            attempts,
            would_wait: Some(earliest),
        }
    } else {
        Error::CoolingDown {
            host: host.key.to_string(),
            retry_in: earliest.max(closed),
        }
    }
}

/// Close the host for every process (never shortening a closure), after a `Retry-After`.
pub(crate) async fn close(store: &RedisStore, host: &Host, wait: Duration) {
    if let Err(err) = store.close(&host_key(host), wait).await {
        tracing::debug!(host = %host.key, %err, "could not share a closure through Redis");
    }
}

fn unavailable(host: &Host, err: &crate::store::RedisStoreError) -> Error {
    tracing::debug!(host = %host.key, %err, "shared store unavailable: failing closed");
    Error::StoreUnavailable {
        host: host.key.to_string(),
        reason: err.to_string(),
    }
}
