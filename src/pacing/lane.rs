//! The lock-free lane of a host's schedule: while nothing but the configured limit paces the
//! host, a request takes its slot with one compare-and-swap, as governor does, and no lock.
//!
//! The schedule has one owner at a time. While the lane is *open* it holds the theoretical
//! arrival time, and requests advance it with [`Lane::try_take`]. Whoever takes the host's
//! lock first [closes](Lane::close) the lane: one swap of the same word, after which no
//! compare-and-swap can succeed, hands the schedule (and what the lane admitted since it
//! opened) to the locked state. When the lock is released and the host is still quiet (see
//! `HostState::quiet_schedule`), the lane [opens](Lane::open) again at the schedule's new
//! position. A request in the lane never waits: a slot not free yet, or a closed lane, sends
//! it to the locked path, which queues it fairly.
//!
//! A lane request that read the word before a close and tries its swap after it fails (the
//! word changed); one that read it before and swaps after a reopen at the same value (the lock
//! holder took nothing) sees the schedule exactly as it was. Reopening with different
//! parameters at the word the lane left moves it by a nanosecond, so a stale reader fails
//! there too.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

use super::Clock;
use super::gcra::Plain;

/// The word of a closed lane: no theoretical arrival time is this far out.
const CLOSED: u64 = u64::MAX;

/// Sends the lane admitted since the lock last drained it, packed in one word: the count in
/// the low bits, their units above. The count is bounded by the requests in flight at once
/// (each one's answer takes the lock, which drains the word), far below 2^24.
const COUNT_BITS: u32 = 24;

/// What a close hands the lock: the schedule, and what the lane admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Admitted {
    /// The theoretical arrival time the lane left, if it was open.
    pub(crate) tat: Option<u64>,
    /// Requests and units sent since the last close, and the lane's last start, if any (set
    /// whenever `sends` is not zero).
    pub(crate) sends: u32,
    pub(crate) units: u64,
    pub(crate) last: Option<u64>,
}

/// A host's lock-free lane; see the [module](self).
#[derive(Debug)]
pub(crate) struct Lane {
    clock: Clock,
    /// The theoretical arrival time while open; [`CLOSED`] while the lock holds the schedule.
    tat: AtomicU64,
    /// The schedule's parameters: written only while the lane is closed, read after the word.
    interval: AtomicU64,
    tolerance: AtomicU64,
    slack: AtomicU64,
    burst: AtomicU64,
    min_gap: AtomicU64,
    /// Packed sends (see [`COUNT_BITS`]), and the last start admitted.
    sends: AtomicU64,
    last: AtomicU64,
    /// The word the last close took (only the lock holder reads or writes it).
    left: AtomicU64,
}

impl Lane {
    /// A closed lane for a schedule on `clock`.
    pub(crate) fn new(clock: Clock) -> Self {
        Lane {
            clock,
            tat: AtomicU64::new(CLOSED),
            interval: AtomicU64::new(0),
            tolerance: AtomicU64::new(0),
            slack: AtomicU64::new(0),
            burst: AtomicU64::new(0),
            min_gap: AtomicU64::new(0),
            sends: AtomicU64::new(0),
            last: AtomicU64::new(CLOSED),
            left: AtomicU64::new(CLOSED),
        }
    }

    /// Take `cost` units at `now` if the lane is open and their slot is free; `false`: ask the
    /// locked path (nothing was taken).
    pub(crate) fn try_take(&self, now: Instant, cost: u32) -> bool {
        let cost = u64::from(cost.max(1));
        let mut tat = self.tat.load(Ordering::Acquire);
        if tat == CLOSED {
            return false;
        }
        let now = self.clock.nanos(now);
        loop {
            let plain = Plain {
                interval: self.interval.load(Ordering::Relaxed),
                tolerance: self.tolerance.load(Ordering::Relaxed),
                slack: self.slack.load(Ordering::Relaxed),
                burst: self.burst.load(Ordering::Relaxed),
                min_gap: self.min_gap.load(Ordering::Relaxed),
            };
            let Some(next) = plain.step(tat, now, cost) else {
                return false;
            };
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(CLOSED) => return false,
                Err(current) => tat = current,
            }
        }
        // the start first: a close that counts this send sees it
        self.last.store(now, Ordering::Relaxed);
        self.sends
            .fetch_add(1 | (cost << COUNT_BITS), Ordering::Release);
        true
    }

    /// Close the lane (the lock is held): the schedule, if the lane held it, and what it
    /// admitted that the lock has not counted yet (a request counts its send just after its
    /// swap, so a send may come after the close that took its slot: the next close counts it).
    pub(crate) fn close(&self) -> Admitted {
        let tat = self.tat.swap(CLOSED, Ordering::AcqRel);
        if tat != CLOSED {
            self.left.store(tat, Ordering::Relaxed);
        }
        let sends = match self.sends.load(Ordering::Relaxed) {
            0 => 0,
            _ => self.sends.swap(0, Ordering::AcqRel),
        };
        let last = self.last.load(Ordering::Relaxed);
        Admitted {
            tat: (tat != CLOSED).then_some(tat),
            sends: (sends & ((1 << COUNT_BITS) - 1)) as u32,
            units: sends >> COUNT_BITS,
            last: (last != CLOSED).then_some(last),
        }
    }

    /// Open the lane (the lock is held, the lane closed) on `plain` at `tat`.
    pub(crate) fn open(&self, plain: Plain, tat: u64) {
        let current = Plain {
            interval: self.interval.load(Ordering::Relaxed),
            tolerance: self.tolerance.load(Ordering::Relaxed),
            slack: self.slack.load(Ordering::Relaxed),
            burst: self.burst.load(Ordering::Relaxed),
            min_gap: self.min_gap.load(Ordering::Relaxed),
        };
        let mut tat = tat.min(CLOSED - 2);
        if plain != current {
            self.interval.store(plain.interval, Ordering::Relaxed);
            self.tolerance.store(plain.tolerance, Ordering::Relaxed);
            self.slack.store(plain.slack, Ordering::Relaxed);
            self.burst.store(plain.burst, Ordering::Relaxed);
            self.min_gap.store(plain.min_gap, Ordering::Relaxed);
            // a reader of the word the lane left must not swap in a step on the old
            // parameters: move the word
            if tat == self.left.load(Ordering::Relaxed) {
                tat += 1;
            }
        }
        self.tat.store(tat, Ordering::Release);
    }
}
