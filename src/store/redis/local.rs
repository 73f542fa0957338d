//! Pacing while Redis is away ([`Fallback::Local`](super::Fallback)): one local schedule per
//! shared schedule, at this process's share of its limit.
//!
//! A schedule is named by its shared key, so every request that would have reserved a slot in
//! one shared schedule takes it in one local schedule: a port-less `host_limit` paces all the
//! ports of its host as one, as the shared schedule did, and a host record's limit and a
//! scope's limit are never charged to one schedule. The schedules belong to the store (one per
//! process) and are forgotten when Redis answers again, or, while it stays away, once idle.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::limit::Limit;
use crate::pacing::Clock;
use crate::pacing::gcra::Pacer;

/// Past this many schedules, idle ones are forgotten before another is made (and past twice
/// as many as a sweep kept, so that many busy schedules are not scanned for every new one).
const SWEEP_AT: usize = 256;

/// The limit one of `processes` pacing alone should keep so that together they keep `limit`:
/// `n / processes` per window (rounded down), the burst shared the same way.
///
/// With more processes than the limit's count, no split keeps "at most `n` in any window"
/// without talking to each other; each then gets one per `processes / n` windows, which keeps
/// the fleet's long-run rate, not the window.
pub(crate) fn local_share(limit: &Limit, processes: u32) -> Limit {
    let processes = processes.max(1);
    let n = limit.count();
    if n >= processes {
        let share = n / processes;
        let burst = (limit.burst_size() / processes).clamp(1, share);
        return Limit::per(share, limit.window()).burst(burst);
    }
    let windows = processes.div_ceil(n);
    let window = limit.window().checked_mul(windows).unwrap_or(Duration::MAX);
    Limit::per(1, window)
}

/// This process's local schedules, by shared key.
#[derive(Debug, Default)]
pub(crate) struct LocalSchedules {
    map: Mutex<Map>,
}

/// The schedules, and how many of them the next sweep waits for (0: [`SWEEP_AT`]).
#[derive(Debug, Default)]
struct Map {
    schedules: HashMap<Box<str>, Schedule>,
    sweep_at: usize,
}

/// One local schedule: the share it paces at, and its pacer on its own clock.
#[derive(Debug)]
struct Schedule {
    share: Limit,
    pacer: Pacer,
    clock: Clock,
}

impl LocalSchedules {
    /// Reserve `cost` units of the schedule `key` at one of `processes`' share of `limit`, and
    /// answer when the request may start; if that is further than `max_wait` from `now`,
    /// nothing is reserved and the answer is the wait.
    ///
    /// A cost above the share's count waits until the share has accrued it: its units are
    /// charged at the share's spacing, the request starting with the last of them (the
    /// fleet keeps its long-run rate; no split lets one process start more than its share at
    /// once within a window).
    pub(crate) fn reserve(
        &self,
        key: &str,
        limit: &Limit,
        processes: u32,
        cost: u32,
        now: Instant,
        max_wait: Duration,
    ) -> Result<Instant, Duration> {
        let share = local_share(limit, processes);
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let Map {
            schedules,
            sweep_at,
        } = &mut *map;
        if schedules.len() >= (*sweep_at).max(SWEEP_AT) && !schedules.contains_key(key) {
            schedules.retain(|_, s| !s.pacer.is_idle(s.clock.nanos(now)));
            *sweep_at = schedules.len().saturating_mul(2);
        }
        let schedule = schedules.entry(key.into()).or_insert_with(|| Schedule {
            share,
            pacer: Pacer::new(Some(&share)),
            clock: Clock::starting(now),
        });
        if schedule.share != share {
            schedule.pacer = schedule.pacer.relimit(Some(&share));
            schedule.share = share;
        }
        let now_ns = schedule.clock.nanos(now);
        let cost = cost.max(1);
        // within the count, the pacer takes the cost at once (growing its burst, as any
        // schedule does); beyond it, a first burst, and the rest after it at the spacing
        let first = if cost > share.count() {
            cost.min(share.burst_size())
        } else {
            cost
        };
        let due = schedule.pacer.check(now_ns, first, None).unwrap_or(now_ns);
        let rest = u64::from(cost - first).saturating_mul(schedule.pacer.interval());
        let start = due.saturating_add(rest);
        let wait = Duration::from_nanos(start.saturating_sub(now_ns));
        if wait > max_wait {
            return Err(wait);
        }
        schedule.pacer.take(due, first, None);
        schedule.pacer.postpone(rest);
        Ok(schedule.clock.instant(start))
    }

    /// Forget every schedule: Redis answers again, and its schedules pace.
    pub(crate) fn clear(&self) {
        *self.map.lock().unwrap_or_else(|p| p.into_inner()) = Map::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test(start_paused = true)]
    async fn one_key_is_one_schedule_at_the_share() {
        let local = LocalSchedules::default();
        let limit = Limit::per_second(10);
        let now = Instant::now();
        // two processes: 5 per second, spaced 204 ms apart (the window's margin included)
        let starts: Vec<Duration> = (0..5)
            .map(|_| {
                let at = local.reserve("h", &limit, 2, 1, now, Duration::MAX);
                at.expect("reserved") - now
            })
            .collect();
        assert_eq!(starts[0], Duration::ZERO, "the first goes at once");
        for pair in starts.windows(2) {
            assert!(
                pair[1] - pair[0] >= 200 * MS,
                "one schedule at 5 per second: {starts:?}"
            );
        }
        let other = local.reserve("other", &limit, 2, 1, now, Duration::MAX);
        assert_eq!(other, Ok(now), "another key is another schedule");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cost_above_the_share_waits_until_the_share_accrued_it() {
        let local = LocalSchedules::default();
        let limit = Limit::per_second(10);
        let now = Instant::now();
        let start = local.reserve("h", &limit, 2, 8, now, Duration::MAX);
        let waited = start.expect("reserved") - now;
        // the share (5 per second, burst 1) lets 1 unit go now, the other 7 at its spacing
        assert!(
            waited >= 7 * 200 * MS && waited < 8 * 210 * MS,
            "8 units of a 5-per-second share started after {waited:?}"
        );
        let next = local.reserve("h", &limit, 2, 1, now, Duration::MAX);
        let after = next.expect("reserved") - now;
        assert!(
            after >= waited + 200 * MS,
            "the next unit keeps the spacing after the 8: {after:?}"
        );
        let refused = local.reserve("h", &limit, 2, 8, now, Duration::from_secs(1));
        assert!(
            matches!(refused, Err(wait) if wait > Duration::from_secs(1)),
            "a wait past max_wait reserves nothing: {refused:?}"
        );
        let again = local.reserve("h", &limit, 2, 1, now, Duration::MAX);
        assert!(
            again.expect("reserved") - now < after + 210 * MS,
            "the refused request took nothing"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_schedules_are_forgotten_and_all_on_clear() {
        let local = LocalSchedules::default();
        let limit = Limit::per_second(10);
        let now = Instant::now();
        for i in 0..SWEEP_AT {
            let _ = local.reserve(&format!("k{i}"), &limit, 1, 1, now, Duration::MAX);
        }
        // idle a whole window (and its margin) after the last start
        let later = now + Duration::from_millis(1_100);
        let _ = local.reserve("fresh", &limit, 1, 1, later, Duration::MAX);
        let len = local.map.lock().expect("lock").schedules.len();
        assert_eq!(len, 1, "only the fresh schedule is kept");
        local.clear();
        assert!(local.map.lock().expect("lock").schedules.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn busy_schedules_are_kept_and_not_scanned_for_every_new_one() {
        let local = LocalSchedules::default();
        let limit = Limit::per_second(10);
        let now = Instant::now();
        for i in 0..=SWEEP_AT {
            let _ = local.reserve(&format!("k{i}"), &limit, 1, 1, now, Duration::MAX);
        }
        let map = local.map.lock().expect("lock");
        assert_eq!(map.schedules.len(), SWEEP_AT + 1, "busy schedules are kept");
        assert_eq!(
            map.sweep_at,
            2 * SWEEP_AT,
            "the next sweep waits for twice what this one kept"
        );
    }
}
