//! Loopback HTTP servers that count what reaches them, for tests and examples.
//!
//! Each server runs on its own thread and runtime, so its clock and scheduling are independent
//! of the client under test.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// What a server answers to one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Hold the response this long before answering.
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            delay: Duration::ZERO,
        }
    }
    pub fn ok() -> Self {
        Self::status(200)
    }
    pub fn header(mut self, name: &str, value: impl ToString) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// What reached one server.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests that reached the handler.
    pub hits: AtomicU64,
    /// Requests answered 429.
    pub refused: AtomicU64,
    /// Requests answered 5xx.
    pub failed: AtomicU64,
    /// Most requests being handled at once.
    pub max_concurrent: AtomicU64,
    concurrent: AtomicU64,
    /// Arrival time and method of every request.
    pub arrivals: Mutex<Vec<(Instant, String)>>,
}

impl Stats {
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }
    pub fn max_concurrent(&self) -> u64 {
        self.max_concurrent.load(Ordering::SeqCst)
    }
    pub fn arrivals(&self) -> Vec<Instant> {
        self.arrivals
            .lock()
            .expect("stats lock")
            .iter()
            .map(|(t, _)| *t)
            .collect()
    }
    pub fn methods(&self) -> Vec<String> {
        self.arrivals
            .lock()
            .expect("stats lock")
            .iter()
            .map(|(_, m)| m.clone())
            .collect()
    }
    /// Most arrivals within any span of `window`.
    pub fn max_in_any_window(&self, window: Duration) -> usize {
        let arrivals = self.arrivals();
        arrivals
            .iter()
            .map(|&s| {
                arrivals
                    .iter()
                    .filter(|&&t| t >= s && t < s + window)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }
}

/// A running loopback server.
pub struct TestServer {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

/// Serve `handler` on 127.0.0.1 (a free port) until the process ends.
pub fn serve<F>(handler: F) -> TestServer
where
    F: Fn(&str, &str) -> Reply + Send + Sync + 'static,
{
    serve_with_headers(move |method, path, _| handler(method, path))
}

/// Like [`serve`], for handlers that read the request's headers.
pub fn serve_with_headers<F>(handler: F) -> TestServer
where
    F: Fn(&str, &str, &http::HeaderMap) -> Reply + Send + Sync + 'static,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    serve_on(listener, handler)
}

/// Serve `handler` on the IPv6 loopback `[::1]` (a free port), or `None` where this machine
/// cannot bind it (no IPv6).
pub fn serve_ipv6<F>(handler: F) -> Option<TestServer>
where
    F: Fn(&str, &str) -> Reply + Send + Sync + 'static,
{
    let listener = std::net::TcpListener::bind("[::1]:0").ok()?;
    Some(serve_on(listener, move |method, path, _| {
        handler(method, path)
    }))
}

fn serve_on<F>(listener: std::net::TcpListener, handler: F) -> TestServer
where
    F: Fn(&str, &str, &http::HeaderMap) -> Reply + Send + Sync + 'static,
{
    let stats = Arc::new(Stats::default());
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("local addr");
    let handler = Arc::new(handler);
    let server_stats = Arc::clone(&stats);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("server runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (handler, stats) = (Arc::clone(&handler), Arc::clone(&server_stats));
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<Incoming>| {
                        let (handler, stats) = (Arc::clone(&handler), Arc::clone(&stats));
                        async move { Ok::<_, Infallible>(handle(req, &*handler, &stats).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
    TestServer { addr, stats }
}

async fn handle<F>(
    req: hyper::Request<Incoming>,
    handler: &F,
    stats: &Stats,
) -> hyper::Response<Full<Bytes>>
where
    F: Fn(&str, &str, &http::HeaderMap) -> Reply,
{
    let now = Instant::now();
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let headers = req.headers().clone();
    // read the whole body, so a request counts once it has fully arrived
    let _ = req.into_body().collect().await;
    stats.hits.fetch_add(1, Ordering::SeqCst);
    stats
        .arrivals
        .lock()
        .expect("stats lock")
        .push((now, method.clone()));
    let concurrent = stats.concurrent.fetch_add(1, Ordering::SeqCst) + 1;
    stats.max_concurrent.fetch_max(concurrent, Ordering::SeqCst);
    let reply = handler(&method, &path, &headers);
    if reply.status == 429 {
        stats.refused.fetch_add(1, Ordering::SeqCst);
    }
    if reply.status >= 500 {
        stats.failed.fetch_add(1, Ordering::SeqCst);
    }
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    stats.concurrent.fetch_sub(1, Ordering::SeqCst);
    let mut resp = hyper::Response::builder().status(reply.status);
    for (name, value) in &reply.headers {
        resp = resp.header(name.as_str(), value.as_str());
    }
    resp.body(Full::new(Bytes::from_static(b"ok")))
        .expect("valid test response")
}

/// A strict sliding-window limiter, as an API gateway enforces a documented quota: at most
/// `limit` accepted requests in any `window`; beyond it, 429 with `Retry-After` (whole seconds,
/// rounded up) until the oldest accepted request leaves the window.
pub struct SlidingWindow {
    limit: usize,
    window: Duration,
    accepted: Mutex<VecDeque<Instant>>,
}

impl SlidingWindow {
    pub fn new(limit: usize, window: Duration) -> Self {
        SlidingWindow {
            limit,
            window,
            accepted: Mutex::new(VecDeque::new()),
        }
    }

    pub fn reply(&self) -> Reply {
        self.reply_with_headers(false)
    }

    /// Like [`SlidingWindow::reply`]; with `headers`, every answer also carries
    /// `X-RateLimit-Limit/Remaining/Reset` as Flask-Limiter sends them: the reset in whole epoch
    /// seconds, rounded up past the instant the oldest request leaves the window.
    pub fn reply_with_headers(&self, headers: bool) -> Reply {
        let now = Instant::now();
        let mut accepted = self.accepted.lock().expect("window lock");
        while accepted
            .front()
            .is_some_and(|&t| now.duration_since(t) >= self.window)
        {
            accepted.pop_front();
        }
        let reply = if accepted.len() < self.limit {
            accepted.push_back(now);
            Reply::ok()
        } else {
            let oldest = *accepted.front().expect("full window has a front");
            let wait = (oldest + self.window).duration_since(now);
            Reply::status(429).header("retry-after", wait.as_secs_f64().ceil() as u64)
        };
        if !headers {
            return reply;
        }
        let oldest = accepted.front().copied().unwrap_or(now);
        let reset_in = (oldest + self.window).saturating_duration_since(now);
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970");
        reply
            .header("x-ratelimit-limit", self.limit)
            .header("x-ratelimit-remaining", self.limit - accepted.len())
            .header("x-ratelimit-reset", (epoch + reset_in).as_secs() + 1)
    }
}

/// A server enforcing `limit` per `window` with a strict sliding window.
pub fn sliding_window_server(limit: usize, window: Duration) -> TestServer {
    let limiter = SlidingWindow::new(limit, window);
    serve(move |_, _| limiter.reply())
}

/// A client with `polite` as its only middleware.
pub fn client(polite: &reqwest_polite::Polite) -> reqwest_middleware::ClientWithMiddleware {
    reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(polite.clone())
        .build()
}

/// The crate's error inside a middleware error, if it is one.
pub fn polite_error(err: &reqwest_middleware::Error) -> Option<&reqwest_polite::Error> {
    match err {
        reqwest_middleware::Error::Middleware(inner) => inner.downcast_ref(),
        reqwest_middleware::Error::Reqwest(_) => None,
    }
}

/// Send `n` GETs to `url` at once; the status of each, or the error's text.
pub async fn burst(
    client: &reqwest_middleware::ClientWithMiddleware,
    url: &str,
    n: usize,
) -> Vec<Result<u16, String>> {
    let calls = (0..n).map(|_| async move {
        match client.get(url).send().await {
            Ok(resp) => Ok(resp.status().as_u16()),
            Err(err) => Err(err.to_string()),
        }
    });
    futures::future::join_all(calls).await
}

/// Sends `credential` through `polite` to a server that answers `/` and fails `/down`, until a
/// breaker of one failure opens, and returns all that could show it: `Debug` of `polite`,
/// its snapshots (`Debug` and `Display`), and the error of the request the open breaker
/// refused (`Display` and `Debug`). `polite` is built with `partition_by_header
/// ("authorization")`, `max_retries(0)` and `Breaker::consecutive_failures(1)`.
pub async fn shown_after_a_credential(polite: &reqwest_polite::Polite, credential: &str) -> String {
    let server = serve(|_, path| match path {
        "/down" => Reply::status(500),
        _ => Reply::ok(),
    });
    let client = client(polite);
    let send = |path: &str| {
        client
            .get(server.url(path))
            .header("authorization", credential)
            .send()
    };
    assert_eq!(send("/").await.expect("answered").status(), 200);
    assert_eq!(send("/down").await.expect("answered").status(), 500);
    let err = send("/down").await.expect_err("the breaker is open");
    assert!(
        matches!(
            polite_error(&err),
            Some(reqwest_polite::Error::CircuitOpen { .. })
        ),
        "{err}"
    );
    assert_eq!(server.stats.hits(), 2, "the open breaker sent nothing");
    let (hosts, scopes) = (polite.snapshot(), polite.scope_snapshot());
    assert!(
        hosts.iter().all(|h| h.partition.is_some()),
        "partitioned: {hosts:?}"
    );
    let mut shown = format!("{polite:?} {hosts:?} {scopes:?} {err} {err:?}");
    for host in &hosts {
        shown += &host.to_string();
    }
    for scope in &scopes {
        shown += &scope.to_string();
    }
    shown
}

/// IETF `RateLimit` policies metered on fixed windows from the server's start, all at once:
/// a request counts in every policy, and is refused (429, no `Retry-After`) when any of them
/// is spent. Every answer carries `RateLimit` (`r`, and `t` in whole seconds rounded up, as
/// the draft sends it) and `RateLimit-Policy` (`q`, `w`) for each policy.
pub struct FixedWindowPolicies {
    started: Instant,
    /// Name, quota, window.
    policies: Vec<(&'static str, u64, Duration)>,
    /// Each policy's current window (its index from the start) and what it accepted in it.
    used: Mutex<Vec<(u128, u64)>>,
}

impl FixedWindowPolicies {
    pub fn new(policies: &[(&'static str, u64, Duration)]) -> Self {
        FixedWindowPolicies {
            started: Instant::now(),
            policies: policies.to_vec(),
            used: Mutex::new(vec![(0, 0); policies.len()]),
        }
    }

    pub fn reply(&self) -> Reply {
        let now = Instant::now();
        let elapsed = now - self.started;
        let mut used = self.used.lock().expect("policies lock");
        for ((_, _, window), (index, count)) in self.policies.iter().zip(used.iter_mut()) {
            let current = elapsed.as_nanos() / window.as_nanos();
            if current != *index {
                (*index, *count) = (current, 0);
            }
        }
        let spent = self
            .policies
            .iter()
            .zip(used.iter())
            .any(|((_, quota, _), (_, count))| count >= quota);
        if !spent {
            for (_, count) in used.iter_mut() {
                *count += 1;
            }
        }
        let (mut current, mut declared) = (Vec::new(), Vec::new());
        for ((name, quota, window), (index, count)) in self.policies.iter().zip(used.iter()) {
            let reset = window.as_nanos() * (index + 1) - elapsed.as_nanos();
            let t = reset.div_ceil(1_000_000_000);
            current.push(format!("\"{name}\";r={};t={t}", quota - count));
            // `w` in seconds, a Decimal below one (at most three fractional digits)
            let w = match window.subsec_millis() {
                0 => window.as_secs().to_string(),
                ms => format!("{}.{ms:03}", window.as_secs()),
            };
            declared.push(format!("\"{name}\";q={quota};w={w}"));
        }
        let reply = if spent {
            Reply::status(429)
        } else {
            Reply::ok()
        };
        reply
            .header("ratelimit", current.join(", "))
            .header("ratelimit-policy", declared.join(", "))
    }
}
