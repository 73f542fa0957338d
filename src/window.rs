//! One sliding counter: how many events happened in the last window, in fixed buckets.
//!
//! Used wherever a rate over "the last N seconds" is needed: the rate a server accepted (the
//! adaptive rate), and the breaker's and the retry budget's windows. Buckets are kept in a
//! ring, so counting is O(1) and memory is fixed; the count is exact to one bucket's width.

use std::time::Duration;

/// Buckets per window: the count is exact to a tenth of the window.
const BUCKETS: usize = 10;

/// Events in the last `window`, counted in [`BUCKETS`] buckets of `window / BUCKETS`; `K`
/// counters side by side (calls and failures, requests and retries).
#[derive(Debug, Clone)]
pub(crate) struct Window<const K: usize = 1> {
    /// Bucket width in nanoseconds (at least 1).
    width: u64,
    /// Index (time / width) of the newest bucket written.
    newest: u64,
    counts: [[u32; K]; BUCKETS],
}

impl<const K: usize> Window<K> {
    pub(crate) fn new(window: Duration) -> Self {
        let width = u64::try_from(window.as_nanos() / BUCKETS as u128)
            .unwrap_or(u64::MAX)
            .max(1);
        Window {
            width,
            newest: 0,
            counts: [[0; K]; BUCKETS],
        }
    }

    /// Forget everything counted, as a new window of the same length.
    pub(crate) fn clear(&mut self) {
        self.newest = 0;
        self.counts = [[0; K]; BUCKETS];
    }

    /// Move the ring forward to the bucket of `now_ns`, clearing the buckets passed over.
    fn advance(&mut self, now_ns: u64) {
        let index = now_ns / self.width;
        if index <= self.newest {
            return;
        }
        let passed = index - self.newest;
        if passed >= BUCKETS as u64 {
            self.counts = [[0; K]; BUCKETS];
        } else {
            for i in 1..=passed {
                self.counts[((self.newest + i) % BUCKETS as u64) as usize] = [0; K];
            }
        }
        self.newest = index;
    }

    /// Count `n[k]` events of each counter `k` at `now_ns` (nanoseconds on any monotonic
    /// scale; a time before the newest bucket counts in the newest).
    pub(crate) fn add_each(&mut self, now_ns: u64, n: [u32; K]) {
        self.advance(now_ns);
        let bucket = &mut self.counts[(self.newest % BUCKETS as u64) as usize];
        for (count, n) in bucket.iter_mut().zip(n) {
            *count = count.saturating_add(n);
        }
    }

    /// Events of each counter in the window ending at `now_ns`.
    pub(crate) fn totals(&mut self, now_ns: u64) -> [u32; K] {
        self.advance(now_ns);
        self.counts.iter().fold([0; K], |mut sum, bucket| {
            for (total, &c) in sum.iter_mut().zip(bucket) {
                *total = total.saturating_add(c);
            }
            sum
        })
    }

    /// [`Window::totals`] without moving the ring: for readers that hold it shared.
    pub(crate) fn totals_at(&self, now_ns: u64) -> [u32; K] {
        let index = now_ns / self.width;
        let newest = self.newest;
        (0..BUCKETS as u64)
            .filter(|age| newest >= *age && index.saturating_sub(newest - age) < BUCKETS as u64)
            .map(|age| self.counts[((newest - age) % BUCKETS as u64) as usize])
            .fold([0; K], |mut sum, bucket| {
                for (total, c) in sum.iter_mut().zip(bucket) {
                    *total = total.saturating_add(c);
                }
                sum
            })
    }
}

impl Window {
    /// Count `n` events at `now_ns` (nanoseconds on any monotonic scale, never going back).
    pub(crate) fn add(&mut self, now_ns: u64, n: u32) {
        self.add_each(now_ns, [n]);
    }

    /// Events in the window ending at `now_ns`.
    pub(crate) fn count(&mut self, now_ns: u64) -> u32 {
        self.totals(now_ns)[0]
    }

    /// True when the window holds nothing at `now_ns`: forgetting it changes nothing.
    pub(crate) fn is_empty(&mut self, now_ns: u64) -> bool {
        self.count(now_ns) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn counts_what_happened_in_the_last_window_only() {
        let mut w = Window::new(Duration::from_secs(1));
        w.add(0, 3);
        w.add(450 * MS, 2);
        assert_eq!(w.count(900 * MS), 5);
        assert_eq!(w.count(1_050 * MS), 2, "the first bucket has aged out");
        assert_eq!(w.count(1_500 * MS), 0, "everything has aged out");
        assert!(w.is_empty(1_500 * MS));
    }

    #[test]
    fn a_long_silence_clears_every_bucket() {
        let mut w = Window::new(Duration::from_secs(1));
        for i in 0..10 {
            w.add(i * 100 * MS, 1);
        }
        assert_eq!(w.count(999 * MS), 10);
        w.add(50_000 * MS, 1);
        assert_eq!(w.count(50_000 * MS), 1);
    }

    #[test]
    fn time_going_back_counts_in_the_newest_bucket() {
        let mut w = Window::new(Duration::from_secs(1));
        w.add(500 * MS, 1);
        w.add(100 * MS, 1);
        assert_eq!(w.count(500 * MS), 2);
    }

    #[test]
    fn counters_side_by_side_age_together() {
        let mut w: Window<2> = Window::new(Duration::from_secs(1));
        w.add_each(0, [3, 1]);
        w.add_each(450 * MS, [2, 0]);
        assert_eq!(w.totals_at(900 * MS), [5, 1]);
        assert_eq!(
            w.totals_at(1_050 * MS),
            [2, 0],
            "read without moving the ring"
        );
        assert_eq!(w.totals(1_050 * MS), [2, 0]);
        assert_eq!(w.totals_at(1_500 * MS), [0, 0]);
        assert_eq!(
            w.totals_at(100 * MS),
            [2, 0],
            "a reading before the newest bucket"
        );
    }

    #[test]
    fn absurd_windows_do_not_panic() {
        let mut w = Window::new(Duration::ZERO);
        w.add(u64::MAX, u32::MAX);
        w.add(u64::MAX, 1);
        assert_eq!(w.count(u64::MAX), u32::MAX);
        let mut w = Window::new(Duration::MAX);
        w.add(0, 1);
        assert_eq!(w.count(u64::MAX), 1);
    }
}
