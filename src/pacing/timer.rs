//! Waits that end on a sub-millisecond slot, without a busy task.
//!
//! tokio's timer has a resolution of one millisecond, and wakes up to two ticks after the
//! instant asked (the deadline rounds up to a tick, and the driver's park rounds up once
//! more): a spaced schedule woken by it alone starts its requests about 0.6 ms late on
//! average at 200 per second, and a server that counts the gap between two requests (nginx's
//! `limit_req` with burst 0) refuses the one that follows a late one early.
//!
//! So a precise wait sleeps on tokio's timer to two ticks before the slot, and hands the
//! rest to one timer thread per process: the thread sleeps on the operating system's
//! high-resolution timer (a futex wait with a timeout) until [`SPIN`] before the earliest
//! instant it holds, spins the rest (the OS wakes a sleeping thread up to its timer slack
//! late), then wakes the task through a oneshot channel: a few tens of microseconds after the
//! instant, for at most [`SPIN`] of one thread's time per wait. The task races that wake against tokio's
//! own timer for the same instant, and a thread that could not start only costs precision. A
//! paused clock (tests: two reads of it are equal) leaves every wait to tokio's timer, so a
//! run on it replays exactly.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// The part of a wait tokio's timer may overshoot: two of its ticks.
const TWO_TICKS: Duration = Duration::from_millis(2);

/// How late the OS wakes a thread sleeping to an instant, about (Linux's default timer slack
/// is 50 µs): the timer thread sleeps to this much before a wake it owes and spins the rest.
const SPIN: Duration = Duration::from_micros(60);

/// Sleep until `until`, ending within tens of microseconds of it (on a paused clock, on
/// tokio's timer tick at or after it).
pub(crate) async fn sleep_precisely(until: Instant) {
    if let Some(early) = until.checked_sub(TWO_TICKS)
        && early > Instant::now()
    {
        tokio::time::sleep_until(early).await;
    }
    let now = Instant::now();
    if now >= until {
        return;
    }
    // a clock that does not move between two reads is paused (tests): tokio's timer alone ends
    // the wait, so that nothing outside the paused clock decides when the task runs
    let paused = Instant::now() == now;
    let woken = Timer::shared()
        .filter(|_| !paused)
        .map(|timer| timer.wake_in(until - now));
    match woken {
        Some(woken) => {
            // whichever comes first: the thread's wake, or tokio's timer
            let mut woken = std::pin::pin!(woken);
            let mut timer = std::pin::pin!(tokio::time::sleep_until(until));
            std::future::poll_fn(|cx| {
                if woken.as_mut().poll(cx).is_ready() || timer.as_mut().poll(cx).is_ready() {
                    std::task::Poll::Ready(())
                } else {
                    std::task::Poll::Pending
                }
            })
            .await;
        }
        None => tokio::time::sleep_until(until).await,
    }
    // a wake a few microseconds early (the thread's clock read before the task's)
    if Instant::now() < until {
        tokio::time::sleep_until(until).await;
    }
}

/// One wake the timer thread owes: at `at`, through `wake` (dropped unsent when the waiting
/// task was cancelled: its receiver is gone).
struct Due {
    at: std::time::Instant,
    seq: u64,
    wake: oneshot::Sender<()>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// The wakes owed, earliest first.
#[derive(Default)]
struct Queue {
    due: BinaryHeap<Reverse<Due>>,
    seq: u64,
}

/// The process's timer thread and what it owes.
struct Timer {
    queue: Mutex<Queue>,
    changed: Condvar,
}

impl Timer {
    /// The process's timer, its thread started on first use; `None` if the thread could not
    /// be started (the waits then end on tokio's timer alone).
    fn shared() -> Option<&'static Timer> {
        static TIMER: OnceLock<Option<&'static Timer>> = OnceLock::new();
        *TIMER.get_or_init(|| {
            let timer: &'static Timer = Box::leak(Box::new(Timer {
                queue: Mutex::new(Queue::default()),
                changed: Condvar::new(),
            }));
            std::thread::Builder::new()
                .name("reqwest-polite-timer".into())
                .spawn(move || timer.run())
                .ok()
                .map(|_| timer)
        })
    }

    /// A receiver that completes `after` from now.
    fn wake_in(&self, after: Duration) -> oneshot::Receiver<()> {
        let (wake, woken) = oneshot::channel();
        let at = std::time::Instant::now() + after;
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let earliest = queue.due.peek().is_none_or(|Reverse(first)| at < first.at);
        queue.seq = queue.seq.wrapping_add(1);
        let seq = queue.seq;
        queue.due.push(Reverse(Due { at, seq, wake }));
        drop(queue);
        if earliest {
            self.changed.notify_one();
        }
        woken
    }

    /// The thread: sleep to the earliest instant owed, send every wake that is due, again.
    fn run(&self) {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let now = std::time::Instant::now();
            while queue
                .due
                .peek()
                .is_some_and(|Reverse(first)| first.at <= now)
            {
                if let Some(Reverse(due)) = queue.due.pop() {
                    let _ = due.wake.send(()); // the waiter may have gone: nothing to do
                }
            }
            queue = match queue.due.peek() {
                Some(Reverse(first)) if first.at - now <= SPIN => {
                    // the OS timer would wake this late: spin the rest, the lock released
                    let at = first.at;
                    drop(queue);
                    while std::time::Instant::now() < at {
                        std::hint::spin_loop();
                    }
                    self.queue.lock().unwrap_or_else(|e| e.into_inner())
                }
                Some(Reverse(first)) => {
                    let wait = first.at - now - SPIN;
                    self.changed
                        .wait_timeout(queue, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => self.changed.wait(queue).unwrap_or_else(|e| e.into_inner()),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn on_a_paused_clock_a_precise_wait_ends_on_tokios_timer() {
        // the clock advances to the timer's tick at or after the instant, as for any sleep
        for micros in [1u64, 500, 1_999, 2_000, 5_250, 1_000_000] {
            let until = Instant::now() + Duration::from_micros(micros);
            sleep_precisely(until).await;
            let late = Instant::now() - until;
            assert!(
                late < Duration::from_millis(1),
                "a wait of {micros} µs ended {late:?} late"
            );
        }
    }

    #[tokio::test]
    async fn a_precise_wait_ends_on_its_instant_without_a_busy_task() {
        // the wake comes from the timer thread: the task is polled a handful of times, not
        // once per yield for the last two milliseconds
        let until = Instant::now() + Duration::from_millis(5);
        let mut polls = 0u32;
        let wait = sleep_precisely(until);
        tokio::pin!(wait);
        std::future::poll_fn(|cx| {
            polls += 1;
            wait.as_mut().poll(cx)
        })
        .await;
        assert!(Instant::now() >= until, "never early");
        assert!(polls <= 4, "polled {polls} times: a busy wait");
    }

    #[tokio::test]
    async fn a_cancelled_precise_wait_leaves_the_timer_working() {
        let cancelled = sleep_precisely(Instant::now() + Duration::from_millis(1));
        drop(cancelled);
        let abandoned = tokio::time::timeout(
            Duration::from_micros(100),
            sleep_precisely(Instant::now() + Duration::from_secs(5)),
        )
        .await;
        assert!(abandoned.is_err(), "timed out, and its wake is owed still");
        let until = Instant::now() + Duration::from_micros(1_500);
        sleep_precisely(until).await;
        assert!(Instant::now() >= until);
    }
}
