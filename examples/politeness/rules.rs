//! What the servers enforce: a strict sliding window, a fixed window that reports itself in
//! headers, and an outage.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::clients::Documented;
use crate::server::{Reply, Rule};

/// Whole seconds, rounded up, as servers write them in headers.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// A strict sliding window, as an API gateway enforces a documented quota: at most `count`
/// accepted requests in any `window`; beyond it, 429 with `Retry-After` (whole seconds, rounded
/// up) until the oldest accepted request leaves the window. No other headers.
pub struct SlidingWindow {
    quota: Documented,
    accepted: Mutex<VecDeque<Instant>>,
}

impl SlidingWindow {
    pub fn new(quota: Documented) -> Self {
        SlidingWindow {
            quota,
            accepted: Mutex::new(VecDeque::new()),
        }
    }
}

impl Rule for SlidingWindow {
    fn reply(&self, now: Instant) -> Reply {
        let mut accepted = self.accepted.lock().unwrap_or_else(|e| e.into_inner());
        while accepted
            .front()
            .is_some_and(|&t| now.duration_since(t) >= self.quota.window)
        {
            accepted.pop_front();
        }
        match accepted.front() {
            Some(&oldest) if accepted.len() >= self.quota.count as usize => {
                let wait = (oldest + self.quota.window).duration_since(now);
                Reply::status(429).header("retry-after", ceil_secs(wait))
            }
            _ => {
                accepted.push_back(now);
                Reply::ok()
            }
        }
    }
}

/// Which headers a [`FixedWindow`] reports its quota in.
#[derive(Debug, Clone, Copy)]
pub enum Dialect {
    /// `X-RateLimit-Limit/-Remaining/-Reset` (delta seconds) on every answer, `Retry-After` on 429.
    XRateLimit,
    /// IETF draft: `RateLimit-Policy: "default";q=..;w=..` and `RateLimit: "default";r=..;t=..`
    /// on every answer; no `Retry-After`.
    Ietf,
}

/// A fixed window: windows of `quota.window` start when the server does; at most `quota.count`
/// accepted in each, 429 beyond.
pub struct FixedWindow {
    quota: Documented,
    dialect: Dialect,
    opened: Instant,
    current: Mutex<Window>,
}

#[derive(Default)]
struct Window {
    index: u128,
    used: u32,
}

impl FixedWindow {
    pub fn new(quota: Documented, dialect: Dialect) -> Self {
        FixedWindow {
            quota,
            dialect,
            opened: Instant::now(),
            current: Mutex::new(Window::default()),
        }
    }
}

impl Rule for FixedWindow {
    fn reply(&self, now: Instant) -> Reply {
        let window_ns = self.quota.window.as_nanos();
        let index = now.duration_since(self.opened).as_nanos() / window_ns;
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.index != index {
            *current = Window { index, used: 0 };
        }
        let accepted = current.used < self.quota.count;
        if accepted {
            current.used += 1;
        }
        let remaining = self.quota.count - current.used;
        let ends_ns = u64::try_from((index + 1) * window_ns).unwrap_or(u64::MAX);
        let reset = ceil_secs((self.opened + Duration::from_nanos(ends_ns)).duration_since(now));
        let reply = if accepted {
            Reply::ok()
        } else {
            Reply::status(429)
        };
        let (count, window) = (self.quota.count, ceil_secs(self.quota.window));
        match self.dialect {
            Dialect::XRateLimit => {
                let reply = reply
                    .header("x-ratelimit-limit", count)
                    .header("x-ratelimit-remaining", remaining)
                    .header("x-ratelimit-reset", reset);
                if accepted {
                    reply
                } else {
                    reply.header("retry-after", reset)
                }
            }
            Dialect::Ietf => reply
                .header(
                    "ratelimit-policy",
                    format!("\"default\";q={count};w={window}"),
                )
                .header("ratelimit", format!("\"default\";r={remaining};t={reset}")),
        }
    }
}

/// A host that is down (503, no headers) until `heals_at`, then answers 200.
pub struct Outage {
    pub heals_at: Instant,
}

impl Rule for Outage {
    fn reply(&self, now: Instant) -> Reply {
        if now < self.heals_at {
            Reply::status(503)
        } else {
            Reply::ok()
        }
    }
}
