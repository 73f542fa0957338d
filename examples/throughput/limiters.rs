//! Server-side limiters for the throughput harness, served by the politeness harness's loopback
//! servers (which log every arrival).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[path = "../politeness/server.rs"]
#[allow(dead_code)]
mod server;

pub use server::{Arrival, Reply, Rule};

/// One loopback server running one rule.
pub struct Server(server::Servers);

impl Server {
    pub fn start(rule: Arc<dyn Rule>) -> std::io::Result<Server> {
        server::Servers::start(vec![rule]).map(Server)
    }

    pub fn url(&self) -> String {
        self.0.url(0).to_string()
    }

    pub fn arrivals(&self) -> Vec<Arrival> {
        self.0.arrivals()
    }
}

/// A strict sliding window: at most `count` accepted in any `window`; beyond it, 429 (with
/// `Retry-After` in whole seconds, rounded up, unless built `bare`).
pub struct SlidingWindow {
    count: usize,
    window: Duration,
    retry_after: bool,
    accepted: Mutex<VecDeque<Instant>>,
}

impl SlidingWindow {
    pub fn new(count: u32, window: Duration) -> Self {
        SlidingWindow {
            count: count as usize,
            window,
            retry_after: true,
            accepted: Mutex::new(VecDeque::new()),
        }
    }

    /// Refusals carry no header at all.
    pub fn bare(count: u32, window: Duration) -> Self {
        SlidingWindow {
            retry_after: false,
            ..Self::new(count, window)
        }
    }
}

impl Rule for SlidingWindow {
    fn reply(&self, now: Instant) -> Reply {
        let mut accepted = self.accepted.lock().unwrap_or_else(|e| e.into_inner());
        while accepted
            .front()
            .is_some_and(|&t| now.duration_since(t) >= self.window)
        {
            accepted.pop_front();
        }
        match accepted.front() {
            Some(&oldest) if accepted.len() >= self.count => {
                let wait = (oldest + self.window).duration_since(now);
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                let reply = Reply::status(429);
                if self.retry_after {
                    reply.header("retry-after", secs)
                } else {
                    reply
                }
            }
            _ => {
                accepted.push_back(now);
                Reply::ok()
            }
        }
    }
}

/// nginx `limit_req`: `rate` per second, `burst` extra, accounted in whole milliseconds of the
/// wall clock (nginx's cached `ngx_current_msec`); beyond it, a bare 429. With burst 0, every
/// accepted request must come at least `1000 / rate` ms (as the millisecond clock reads it)
/// after the previous accepted one.
pub struct LeakyBucket {
    /// Requests per second, times 1000 (nginx's unit).
    rate: i64,
    burst: i64,
    state: Mutex<(i64, i64)>, // (excess in milli-requests, last accepted ms)
}

impl LeakyBucket {
    pub fn new(rate: u32, burst: u32) -> Self {
        LeakyBucket {
            rate: i64::from(rate) * 1000,
            burst: i64::from(burst) * 1000,
            state: Mutex::new((0, 0)),
        }
    }
}

impl Rule for LeakyBucket {
    fn reply(&self, _now: Instant) -> Reply {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (excess, last) = *state;
        let ms = if last == 0 {
            60_000
        } else {
            (now_ms - last).abs()
        };
        let excess = (excess - self.rate * ms / 1000 + 1000).max(0);
        if excess > self.burst {
            return Reply::status(429);
        }
        *state = (excess, now_ms);
        Reply::ok()
    }
}

/// `inner`, except that the `nth` request (1-based) is refused with a bare 429.
pub struct StrayRefusal<R> {
    inner: R,
    nth: u64,
    seen: AtomicU64,
}

impl<R> StrayRefusal<R> {
    pub fn new(inner: R, nth: u64) -> Self {
        StrayRefusal {
            inner,
            nth,
            seen: AtomicU64::new(0),
        }
    }
}

impl<R: Rule> Rule for StrayRefusal<R> {
    fn reply(&self, now: Instant) -> Reply {
        if self.seen.fetch_add(1, Ordering::SeqCst) + 1 == self.nth {
            return Reply::status(429);
        }
        self.inner.reply(now)
    }
}
