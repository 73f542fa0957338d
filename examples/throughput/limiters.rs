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

    /// One server per rule, each on its own 127.0.0.1 port (so each is its own host to a
    /// client); one thread serves them all.
    pub fn start_each(rules: Vec<Arc<dyn Rule>>) -> std::io::Result<Server> {
        server::Servers::start(rules).map(Server)
    }

    pub fn url(&self) -> String {
        self.0.url(0).to_string()
    }

    /// `127.0.0.1:<port>`: the host a client configures its limits for.
    pub fn authority(&self) -> String {
        self.url()
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string()
    }

    /// The URL of every server, in the order of their rules.
    pub fn urls(&self) -> Vec<String> {
        self.0.urls().iter().map(ToString::to_string).collect()
    }

    pub fn arrivals(&self) -> Vec<Arrival> {
        self.0.arrivals()
    }
}

/// A strict sliding window: at most `count` accepted in any `window`; beyond it, 429 (with
/// `Retry-After` in whole seconds, rounded up, unless built `bare`).
pub struct SlidingWindow {
    pub count: usize,
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

impl SlidingWindow {
    /// Requests accepted in the window ending at `now`.
    pub fn used(&self, now: Instant) -> usize {
        let accepted = self.accepted.lock().unwrap_or_else(|e| e.into_inner());
        accepted
            .iter()
            .filter(|&&t| now.duration_since(t) < self.window)
            .count()
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

/// `inner`, logging when each request arrived and what it was answered (one host's own log,
/// where a scenario serves many hosts).
pub struct Logged<R> {
    inner: R,
    log: Mutex<Vec<(Instant, u16)>>,
}

impl<R> Logged<R> {
    pub fn new(inner: R) -> Self {
        Logged {
            inner,
            log: Mutex::new(Vec::new()),
        }
    }

    /// Arrival time and status of every request, in arrival order.
    pub fn log(&self) -> Vec<(Instant, u16)> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl<R: Rule> Rule for Logged<R> {
    fn reply(&self, now: Instant) -> Reply {
        let reply = self.inner.reply(now);
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.push((now, reply.status));
        reply
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

/// A GitHub-like API, scaled down: `/search/` is the `search` resource (`search` per second),
/// everything else `core` (`core` per second), each a strict sliding window that names its
/// resource in `x-ratelimit-resource` with `X-RateLimit-*` (epoch reset) on every answer; a
/// spent resource answers 403 + `Retry-After` (GitHub's secondary limits look the same).
pub struct GithubLike {
    core: SlidingWindow,
    search: SlidingWindow,
}

impl GithubLike {
    pub fn new(core: u32, search: u32) -> Self {
        GithubLike {
            core: SlidingWindow::new(core, Duration::from_secs(1)),
            search: SlidingWindow::new(search, Duration::from_secs(1)),
        }
    }
}

impl Rule for GithubLike {
    fn reply(&self, now: Instant) -> Reply {
        self.reply_to(now, "/", &http::HeaderMap::new())
    }

    fn reply_to(&self, now: Instant, path: &str, _headers: &http::HeaderMap) -> Reply {
        let (name, window) = if path.starts_with("/search/") {
            ("search", &self.search)
        } else {
            ("core", &self.core)
        };
        let inner = window.reply(now);
        let used = window.used(now);
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let reply = if inner.status == 429 {
            Reply::status(403).header("retry-after", 1)
        } else {
            Reply::ok()
        };
        reply
            .header("x-ratelimit-resource", name)
            .header("x-ratelimit-limit", window.count)
            .header("x-ratelimit-remaining", window.count.saturating_sub(used))
            .header("x-ratelimit-reset", epoch + 1)
    }
}

/// An OpenAI-like API: `requests` per second and `tokens` per second, strict sliding windows;
/// a request's tokens are in its `x-tokens` header (a stand-in for the prompt). Beyond either,
/// 429 with `x-ratelimit-*-tokens` and `-requests`, reset as a Go duration.
pub struct OpenAiLike {
    requests: SlidingWindow,
    tokens: u64,
    spent: Mutex<VecDeque<(Instant, u64)>>,
}

impl OpenAiLike {
    pub fn new(requests: u32, tokens: u64) -> Self {
        OpenAiLike {
            requests: SlidingWindow::new(requests, Duration::from_secs(1)),
            tokens,
            spent: Mutex::new(VecDeque::new()),
        }
    }
}

impl Rule for OpenAiLike {
    fn reply(&self, now: Instant) -> Reply {
        self.reply_to(now, "/", &http::HeaderMap::new())
    }

    fn reply_to(&self, now: Instant, _path: &str, headers: &http::HeaderMap) -> Reply {
        let cost: u64 = headers
            .get("x-tokens")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let mut spent = self.spent.lock().unwrap_or_else(|e| e.into_inner());
        while spent
            .front()
            .is_some_and(|&(t, _)| now.duration_since(t) >= Duration::from_secs(1))
        {
            spent.pop_front();
        }
        let used: u64 = spent.iter().map(|&(_, n)| n).sum();
        let reply = if used + cost > self.tokens {
            Reply::status(429)
        } else {
            let answer = self.requests.reply(now);
            if answer.status == 200 {
                spent.push_back((now, cost));
            }
            answer
        };
        let used: u64 = spent.iter().map(|&(_, n)| n).sum();
        let reset_ms = spent.front().map_or(0, |&(t, _)| {
            (t + Duration::from_secs(1))
                .saturating_duration_since(now)
                .as_millis()
        });
        reply
            .header("x-ratelimit-limit-tokens", self.tokens)
            .header(
                "x-ratelimit-remaining-tokens",
                self.tokens.saturating_sub(used),
            )
            .header("x-ratelimit-reset-tokens", format!("{reset_ms}ms"))
    }
}

/// GitHub's primary limit, scaled down: per credential (`authorization`), `count` requests
/// per fixed window of `window` that starts at the credential's first request after the
/// previous one ended. Every answer carries `x-ratelimit-limit/remaining/used/reset` (reset in
/// epoch seconds, rounded up); over the quota, 403 with remaining 0 and nothing else.
pub struct PerTokenFixedWindow {
    count: u64,
    window: Duration,
    /// Per credential: when its window started and how many it has accepted in it.
    windows: Mutex<std::collections::HashMap<String, (Instant, u64)>>,
    /// The reset is announced rounded down to the whole second, up to a second early.
    reset_rounded_down: bool,
    /// The windows are aligned to the clock (each starts at a multiple of `window` since the
    /// epoch, the reset is exact), not started by a credential's first request.
    aligned: bool,
    /// Every answer names the quota, as GitHub does (`x-ratelimit-resource: core`).
    named: bool,
}

impl PerTokenFixedWindow {
    pub fn new(count: u64, window: Duration) -> Self {
        PerTokenFixedWindow {
            count,
            window,
            windows: Mutex::new(std::collections::HashMap::new()),
            reset_rounded_down: false,
            aligned: false,
            named: false,
        }
    }

    /// Name the quota in every answer (`x-ratelimit-resource: core`).
    pub fn named(self) -> Self {
        PerTokenFixedWindow {
            named: true,
            ..self
        }
    }

    /// Windows aligned to the clock, with an exact reset (Kong's rate limiting, many
    /// hand-written counters): a window's first answer looks like one from a window that the
    /// request started.
    pub fn aligned(self) -> Self {
        PerTokenFixedWindow {
            aligned: true,
            ..self
        }
    }

    /// Announce the reset rounded down: the window ends up to a second after it.
    pub fn reset_rounded_down(self) -> Self {
        PerTokenFixedWindow {
            reset_rounded_down: true,
            ..self
        }
    }
}

impl Rule for PerTokenFixedWindow {
    fn reply(&self, now: Instant) -> Reply {
        self.reply_to(now, "/", &http::HeaderMap::new())
    }

    fn reply_to(&self, now: Instant, _path: &str, headers: &http::HeaderMap) -> Reply {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let new_start = if self.aligned {
            let into = since_epoch.as_nanos() % self.window.as_nanos().max(1);
            now - Duration::from_nanos(u64::try_from(into).unwrap_or(0))
        } else {
            now
        };
        let (start, used) = windows.entry(token).or_insert((new_start, 0));
        if now >= *start + self.window {
            (*start, *used) = (new_start, 0);
        }
        let accepted = *used < self.count;
        if accepted {
            *used += 1;
        }
        let reset_in = (*start + self.window).duration_since(now);
        let ends = since_epoch + reset_in;
        let reset = if self.aligned {
            // a multiple of the window, read a few microseconds off
            (ends + Duration::from_millis(1)).as_secs()
        } else {
            ends.as_secs() + u64::from(ends.subsec_nanos() > 0 && !self.reset_rounded_down)
        };
        let reply = if accepted {
            Reply::ok()
        } else {
            Reply::status(403)
        };
        let reply = if self.named {
            reply.header("x-ratelimit-resource", "core")
        } else {
            reply
        };
        reply
            .header("x-ratelimit-limit", self.count)
            .header("x-ratelimit-remaining", self.count - *used)
            .header("x-ratelimit-used", *used)
            .header("x-ratelimit-reset", reset)
    }
}
