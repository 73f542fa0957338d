//! The simulated servers: the last middleware of the stack, answering without a socket, and
//! the log of everything that reached them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use http::Extensions;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use reqwest_middleware::{Middleware, Next};
use reqwest_polite::{BreakerPhase, Cost, Units};
use tokio::time::Instant;

use super::load::current_request;

use super::world::{CREDENTIAL_HEADER, Dialect, HANG, Quota, RetryAfterForm, SECRET_MARK, World};

use super::answers::{DATE_SLACK, count, dialect, quota_count, refusal};

/// One attempt that reached a server.
#[derive(Debug, Clone)]
pub struct Start {
    pub seq: u64,
    /// When its request came into the middleware.
    pub entered_seq: u64,
    pub at: Instant,
    pub request: u32,
    pub authority: String,
    pub path: String,
    pub method: http::Method,
    pub credential: Option<String>,
    pub cost: u32,
    pub units: Option<u32>,
    pub answer: Option<Answered>,
}

#[derive(Debug, Clone, Copy)]
pub struct Answered {
    pub seq: u64,
    pub at: Instant,
    /// `None`: the connection was reset.
    pub status: Option<u16>,
    /// A refusal as the middleware defines it (429, or a 403 with `Retry-After` or nothing left).
    pub refusal: bool,
    pub stripe: Option<bool>,
}

/// A server-ordered pause: no start on `authority` (in `partition`; on `path` only, when the
/// server named a quota) before `until`, after the answer numbered `seq`.
#[derive(Debug, Clone)]
pub struct Closure {
    pub seq: u64,
    /// The request whose answer it was, and when it was answered.
    pub request: u32,
    pub at: Instant,
    pub authority: String,
    pub partition: Option<String>,
    pub path: Option<String>,
    pub until: Instant,
}

/// The breaker of `host` (in `partition`) changed phase at `seq`.
#[derive(Debug, Clone)]
pub struct BreakerMark {
    pub seq: u64,
    pub at: Instant,
    /// Opened: for how long.
    pub open_for: Option<Duration>,
    pub host: String,
    pub partition: Option<String>,
    pub phase: BreakerPhase,
}

/// Everything a world saw; the checks read it afterwards.
#[derive(Debug)]
pub struct Log {
    pub t0: Instant,
    seq: u64,
    pub starts: Vec<Start>,
    pub closures: Vec<Closure>,
    pub breaker: Vec<BreakerMark>,
    /// Text that carried a credential: where it was seen.
    pub leaks: Vec<String>,
    /// When each request came into the middleware.
    pub entered: HashMap<u32, u64>,
    /// When each run-time limit change was made.
    pub relimits: Vec<u64>,
    pub trace: Vec<String>,
    rng: SmallRng,
    /// Per quota key, the arrivals it counts (sliding and fixed windows) or the leaky bucket's
    /// theoretical arrival time.
    pub counted: HashMap<String, VecDeque<Instant>>,
    pub buckets: HashMap<String, Instant>,
}

impl Log {
    pub fn new(seed: u64) -> Self {
        Log {
            t0: Instant::now(),
            seq: 0,
            starts: Vec::new(),
            closures: Vec::new(),
            breaker: Vec::new(),
            leaks: Vec::new(),
            entered: HashMap::new(),
            relimits: Vec::new(),
            trace: Vec::new(),
            rng: SmallRng::seed_from_u64(seed ^ 0x5e4f_e400),
            counted: HashMap::new(),
            buckets: HashMap::new(),
        }
    }

    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    pub fn note(&mut self, line: impl FnOnce(f64) -> String) {
        let t = self.t0.elapsed().as_secs_f64();
        let line = line(t);
        if live() {
            eprintln!("SIM {line}");
        }
        self.trace.push(line);
    }

    /// Look for a credential in `text`, shown by `place`.
    pub fn scan(&mut self, place: &str, text: &str) {
        if text.contains(SECRET_MARK) {
            self.leaks.push(format!("{place}: {text}"));
        }
    }
}

/// Whether trace lines are printed as they happen, among the middleware's tracing events
/// (`POLITE_SIM_TRACING`).
fn live() -> bool {
    static LIVE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *LIVE.get_or_init(|| std::env::var_os("POLITE_SIM_TRACING").is_some())
}

pub type SharedLog = Arc<Mutex<Log>>;

pub fn lock(log: &SharedLog) -> MutexGuard<'_, Log> {
    log.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the server will do with one attempt.
pub struct Plan {
    pub delay: Duration,
    pub status: Option<u16>,
    pub headers: Vec<(&'static str, String)>,
    /// The `Retry-After` as the middleware reads it, if it reads one.
    pub retry_after: Option<Duration>,
    pub named: bool,
    pub refusal: bool,
    pub stripe: Option<bool>,
}

impl Plan {
    pub fn answer(status: u16) -> Self {
        Plan {
            delay: Duration::ZERO,
            status: Some(status),
            headers: Vec::new(),
            retry_after: None,
            named: false,
            refusal: false,
            stripe: None,
        }
    }
}

/// The servers of one world, as the last middleware.
pub struct SimServer {
    pub world: Arc<World>,
    pub log: SharedLog,
}

#[async_trait::async_trait]
impl Middleware for SimServer {
    async fn handle(
        &self,
        req: reqwest::Request,
        extensions: &mut Extensions,
        _next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let now = Instant::now();
        let url = req.url();
        let authority = format!(
            "{}:{}",
            url.host_str().unwrap_or(""),
            url.port().unwrap_or(0)
        );
        let Some(request) = current_request() else {
            // the requests after the load, which sweep the records
            let resp = http::Response::new(Vec::<u8>::new());
            return Ok(reqwest::Response::from(resp));
        };
        assert!(
            self.world.authorities.contains(&authority),
            "the load calls its world's authorities only"
        );
        let credential = req
            .headers()
            .get(CREDENTIAL_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let start = Start {
            seq: 0,
            entered_seq: 0,
            at: now,
            request,
            authority: authority.clone(),
            path: url.path().to_owned(),
            method: req.method().clone(),
            credential,
            cost: extensions.get::<Cost>().map_or(1, |c| c.0.max(1)),
            units: extensions.get::<Units>().map(Units::count),
            answer: None,
        };
        let (index, plan) = {
            let mut log = lock(&self.log);
            let plan = decide(&self.world, &mut log, &start, now);
            let mut start = start;
            start.seq = log.next_seq();
            start.entered_seq = log.entered.get(&start.request).copied().unwrap_or(0);
            log.starts.push(start);
            (log.starts.len() - 1, plan)
        };
        tokio::time::sleep(plan.delay).await;
        let answered = Instant::now();
        let closes = closes(&plan);
        let mut headers = plan.headers;
        if let Some(wait) = plan.retry_after
            && self.world.server(&authority).retry_after == RetryAfterForm::HttpDate
        {
            // the date is written at the answer, against the wall clock the middleware reads
            let at = SystemTime::now() + wait + DATE_SLACK + Duration::from_secs(1);
            headers.push(("retry-after", httpdate::fmt_http_date(at)));
        }
        let mut log = lock(&self.log);
        let seq = log.next_seq();
        let start = log.starts[index].clone();
        log.starts[index].answer = Some(Answered {
            seq,
            at: answered,
            status: plan.status,
            refusal: plan.refusal,
            stripe: plan.stripe,
        });
        if let Some(wait) = plan.retry_after.filter(|_| closes) {
            let partition = start
                .credential
                .clone()
                .filter(|_| self.world.config.partitioned);
            log.closures.push(Closure {
                seq,
                request: start.request,
                at: answered,
                authority: authority.clone(),
                partition,
                path: plan.named.then(|| start.path.clone()),
                until: answered + wait,
            });
        }
        let status = plan.status;
        let who = self
            .world
            .requests
            .get(start.request as usize)
            .and_then(|r| r.credential);
        let sent = (start.at - log.t0).as_secs_f64();
        log.note(|t| {
            format!(
                "{t:9.3} #{} (sent {sent:.3}, credential {who:?}, cost {}, units {:?}) {} {}{} -> {:?} {:?}",
                start.request,
                start.cost,
                start.units,
                start.method,
                authority,
                start.path,
                status,
                headers
            )
        });
        drop(log);
        let Some(status) = plan.status else {
            return Err(reset().into());
        };
        let mut resp = http::Response::builder().status(status);
        for (name, value) in headers {
            resp = resp.header(name, value);
        }
        let resp = resp
            .body(Vec::<u8>::new())
            .expect("a valid simulated answer");
        Ok(reqwest::Response::from(resp))
    }
}

/// Whether an answer's `Retry-After` closes its scope: a 429, a 503, or a rate-limit 403.
fn closes(plan: &Plan) -> bool {
    plan.refusal || plan.status == Some(503)
}

/// A transport error that is neither a connect error nor a timeout: a connection reset after
/// the request was sent.
fn reset() -> reqwest::Error {
    let resp = http::Response::builder()
        .status(500)
        .body(Vec::<u8>::new())
        .expect("a valid response");
    reqwest::Response::from(resp)
        .error_for_status()
        .expect_err("a 500 is an error status")
}

fn within(window: Option<(Duration, Duration)>, since: Duration) -> bool {
    window.is_some_and(|(from, to)| since >= from && since < to)
}

/// The server's answer to `start`, counted against its quotas.
fn decide(world: &World, log: &mut Log, start: &Start, now: Instant) -> Plan {
    let server = world.server(&start.authority);
    let since = now - log.t0;
    if within(server.outage, since) {
        if server.outage_resets {
            return Plan {
                status: None,
                ..Plan::answer(0)
            };
        }
        let mut plan = Plan::answer(503);
        if server.outage_retry_after {
            let wait = Duration::from_secs(log.rng.random_range(1..=10));
            plan.headers
                .push(("retry-after", wait.as_secs().to_string()));
            plan.retry_after = Some(wait);
        }
        return plan;
    }
    if log.rng.random_bool(server.hang_rate) {
        return Plan {
            delay: HANG,
            status: None,
            ..Plan::answer(0)
        };
    }
    let delay = server.slowest.mul_f64(log.rng.random::<f64>());
    let mut plan = answer(world, log, start, now, since);
    plan.delay = delay;
    if log.rng.random_bool(server.stripe_rate) {
        let retry = log.rng.random_bool(0.5);
        plan.headers
            .push(("stripe-should-retry", retry.to_string()));
        plan.stripe = Some(retry);
    }
    plan
}

fn answer(world: &World, log: &mut Log, start: &Start, now: Instant, since: Duration) -> Plan {
    let server = world.server(&start.authority);
    let who = match (&start.credential, server.per_credential) {
        (Some(c), true) => c.as_str(),
        _ => "",
    };
    if let Some(named) = server.named
        && start.path.starts_with("/search/")
        && since >= named.from
        && since < named.to
    {
        let quota = Quota::Sliding {
            n: named.n,
            w: named.w,
        };
        let key = format!("{}|{who}|search", start.authority);
        let (name_header, name) = if named.bucket {
            ("x-ratelimit-bucket", "b7c1d2")
        } else {
            ("x-ratelimit-resource", "search")
        };
        let (allowed, remaining, reset) = count(log, &key, quota, now, false);
        let mut plan = if allowed {
            Plan::answer(200)
        } else {
            refusal(429, RetryAfterForm::Seconds, reset)
        };
        plan.named = true;
        plan.headers.push((name_header, name.into()));
        plan.headers
            .push(("x-ratelimit-remaining", remaining.to_string()));
        plan.headers
            .push(("x-ratelimit-reset-after", reset.as_secs_f64().to_string()));
        return plan;
    }
    if within(server.burst_5xx, since) || log.rng.random_bool(server.error_rate) {
        return Plan::answer(if log.rng.random_bool(0.5) { 500 } else { 502 });
    }
    let key = format!("{}|{who}", start.authority);
    let (allowed, remaining, reset) = count(log, &key, server.quota, now, server.counts_refused);
    let mut plan = if allowed {
        Plan::answer(200)
    } else {
        refusal(server.refusal_status, server.retry_after, reset)
    };
    if let Some(n) = quota_count(server.quota) {
        dialect(&mut plan, server.dialect, n, remaining, reset);
        // IETF policies are quotas the server names: a closure holds their routes
        // several IETF policies are quotas the server names (one alone is the host's)
        plan.named = matches!(
            server.dialect,
            Dialect::IetfPolicies | Dialect::IetfTinyWindow
        );
    }
    if plan.status == Some(403) && plan.retry_after.is_none() {
        // GitHub's rate-limit 403 without a Retry-After says nothing is left
        plan.headers.push(("x-ratelimit-remaining", "0".into()));
        plan.headers
            .push(("x-ratelimit-reset", reset.as_secs().max(1).to_string()));
        plan.refusal = true;
    }
    plan
}
