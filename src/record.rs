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
use crate::partition::Partition;
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
