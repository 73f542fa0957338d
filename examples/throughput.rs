//! The throughput harness: how much of a quota each client *uses*, and what the server refused.
//!
//! ```text
//! cargo run --release --example throughput              # every scenario (about 2 minutes)
//! cargo run --release --example throughput -- sweep     # some of them: sweep leaky stray half learn stripe queue hosts
//! ```
//!
//! The politeness harness (`--example politeness`) asks whether a client keeps the server's
//! quota; this one asks whether it keeps the *user's*: a polite client that throws throughput
//! away gets switched off. Every row runs on a fresh server (loopback, its own thread) and a
//! fresh client; "used" is the share of the quota the accepted requests used between the first
//! and the last accepted arrival: `(accepted − 1) / (rate × span)`.
//!
//! Scenarios:
//! - `sweep`: a strict sliding window of r per 1 s, r in 10, 100, 1000, 5000, 10 000; 2 s worth
//!   of requests issued at once. Ours (`Limit::per_second(r)`, `max_in_flight(64)`), governor
//!   with burst 1, governor with its documented burst (r), bare reqwest.
//! - `leaky`: a leaky bucket like nginx `limit_req` (rate r, burst 0, millisecond accounting, bare
//!   429): 100 requests at 10/s and 1000 at 200/s, issued at once, the rate configured (ours
//!   twice: by `limit`, and by a port-less `host_limit`, the README's first form). Each row
//!   ends with the CPU time of the whole process (client and server threads) per request;
//!   below it: the gaps between consecutive arrivals (min, 0.1%, 1%, median) and, before each
//!   refusal, its arrival number and the gap to the last accepted arrival, in µs.
//! - `stray`: `Limit::per_second(200)`, and the server refuses the 2nd request with a bare 429
//!   (then accepts everything within its quota): what is left of the next seconds' throughput.
//!   Ours by `limit` and by a port-less `host_limit`, here and in `half`.
//! - `half`: `Limit::per_second(200)` configured, the server's real quota is 100/s (strict window,
//!   bare 429s): refusals until the client finds it, and the share of the real quota used.
//! - `learn`: nothing configured, a 10/s limiter with bare 429s (a strict sliding window, and a
//!   leaky bucket); 50 requests at once: refusals and the share of the quota over those 50.
//! - `stripe`: nothing configured, a Stripe-like 5 in any second (strict sliding window, bare
//!   429s); 100 requests at once: refusals and the share of the quota over the run. Governor
//!   told the quota (burst 1) and reqwest-retry beside it.
//! - `queue`: 10 000 requests at once to one host, `Limit::per_second(2000)`, `max_in_flight(64)`:
//!   wall time against the 5 s the quota allows.
//! - `hosts`: 10 000 requests at once spread over 1000 hosts (10 each; 1000 loopback servers on
//!   distinct ports, each a strict window of 2 per 1 s), `Limit::per_second(2)`,
//!   `max_in_flight(64)`: refusals (and where in each host's sequence they fell), whether the
//!   run finishes (a deadlock would hit the run's timeout), and the wall time against the 4.5 s
//!   the quota's schedule needs (each host's 10th request 9 × 500 ms after its first). Then the
//!   same over 100 hosts (1000 requests), a tenth of the load on the machine.
//! - `github`: a GitHub-like API (core 50/s, search 5/s, resources named in
//!   `x-ratelimit-resource`, 403 + `Retry-After` beyond): 100 core and 20 search requests at
//!   once. Ours with the documented quotas (host and `/search/` route) and with defaults,
//!   governor with one limiter per resource, bare reqwest. "used": the quota's best time over
//!   the wall time.
//! - `tokens`: GitHub's primary limit, scaled down: per token 30 requests per fixed window of
//!   10 s from the token's first request, `x-ratelimit-limit/remaining/used/reset` (epoch
//!   seconds) on every answer, 403 with remaining 0 when over; 150 GETs at once over two
//!   tokens, `partition_by_header("authorization")`. Ours with defaults and with
//!   `Limit::per(30, 10 s)`, reqwest-retry. "used": 20 s (each token's third window) over the
//!   wall time. Then ours with defaults against the same server announcing its reset rounded
//!   down (up to a second early).
//! - `openai`: an OpenAI-like API (20 requests/s and 2000 tokens/s): 40 requests of 300
//!   tokens at once. Ours with `unit_limit` + `Units`, governor with a request and a token
//!   limiter (`until_n_ready`), bare reqwest.

#[path = "throughput/limiters.rs"]
mod limiters;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use reqwest_polite::{Limit, Polite};
use tokio::sync::Semaphore;

use crate::limiters::{
    Arrival, GithubLike, LeakyBucket, Logged, OpenAiLike, PerTokenFixedWindow, Rule, Server,
    SlidingWindow, StrayRefusal,
};

/// Concurrency the callers of peers without a cap of their own are held to (file descriptors).
const CALLER_CAP: usize = 256;
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Peer {
    Polite,
    PoliteDefaults,
    GovernorBurst1,
    GovernorBurst,
    Bare,
    ReqwestRetry,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Polite => "polite + limit",
            Peer::PoliteDefaults => "polite defaults",
            Peer::GovernorBurst1 => "governor burst 1",
            Peer::GovernorBurst => "governor burst r",
            Peer::Bare => "bare reqwest",
            Peer::ReqwestRetry => "reqwest-retry",
        }
    }
}

/// reqwest through reqwest-middleware, with `polite` as its middleware if there is one.
fn http_client(polite: Option<&Polite>) -> ClientWithMiddleware {
    let builder = ClientBuilder::new(reqwest::Client::new());
    match polite {
        Some(polite) => builder.with(polite.clone()).build(),
        None => builder.build(),
    }
}

/// reqwest-retry 0.9 as its README shows it (exponential backoff, 3 retries).
fn reqwest_retry() -> ClientWithMiddleware {
    let policy = reqwest_retry::policies::ExponentialBackoff::builder().build_with_max_retries(3);
    ClientBuilder::new(reqwest::Client::new())
        .with(reqwest_retry::RetryTransientMiddleware::new_with_policy(
            policy,
        ))
        .build()
}

/// One client under test.
struct Client {
    http: ClientWithMiddleware,
    governor: Option<DefaultDirectRateLimiter>,
    caller_cap: Option<Semaphore>,
    polite: Option<Polite>,
}

impl Client {
    fn build(peer: Peer, per_second: u32, polite_config: impl FnOnce(Limit) -> Polite) -> Client {
        let rate = NonZeroU32::new(per_second).expect("rates are positive");
        let (polite, governor) = match peer {
            Peer::Polite => (Some(polite_config(Limit::per_second(per_second))), None),
            Peer::PoliteDefaults => (Some(Polite::new()), None),
            Peer::GovernorBurst1 => (
                None,
                Some(RateLimiter::direct(
                    Quota::per_second(rate).allow_burst(NonZeroU32::MIN),
                )),
            ),
            Peer::GovernorBurst => (None, Some(RateLimiter::direct(Quota::per_second(rate)))),
            Peer::Bare | Peer::ReqwestRetry => (None, None),
        };
        let http = if peer == Peer::ReqwestRetry {
            reqwest_retry()
        } else {
            http_client(polite.as_ref())
        };
        let caller_cap = polite.is_none().then(|| Semaphore::new(CALLER_CAP));
        Client {
            http,
            governor,
            caller_cap,
            polite,
        }
    }

    async fn get(&self, url: &str) -> Result<u16, String> {
        let call = async {
            let _cap = match &self.caller_cap {
                Some(cap) => Some(cap.acquire().await.expect("never closed")),
                None => None,
            };
            if let Some(governor) = &self.governor {
                governor.until_ready().await;
            }
            let response = self.http.get(url).send().await.map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            response.bytes().await.map_err(|e| e.to_string())?;
            Ok(status)
        };
        tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .unwrap_or_else(|_| Err("timed out".into()))
    }
}

/// What one run produced.
struct Row {
    scenario: String,
    peer: &'static str,
    issued: usize,
    accepted: usize,
    refused: usize,
    errors: usize,
    wall: Duration,
    /// Share of the quota used between the first and last accepted arrival.
    used: f64,
    /// CPU time of the whole process (client and server threads) per request issued, in µs.
    cpu_per_request: f64,
}

impl Row {
    /// The share used, or "-" where it means nothing (a client that sent past the quota).
    fn used_text(&self) -> String {
        if self.used > 1.2 {
            "-".to_string()
        } else {
            format!("{:.1}%", self.used * 100.0)
        }
    }

    fn print(&self) {
        println!(
            "  {:<28} {:<17} issued {:>6}  accepted {:>6}  refused {:>5}  errors {:>4}  wall {:>7.2} s  used {:>6}  cpu {:>6.0} µs/request",
            self.scenario,
            self.peer,
            self.issued,
            self.accepted,
            self.refused,
            self.errors,
            self.wall.as_secs_f64(),
            self.used_text(),
            self.cpu_per_request,
        );
    }
}

/// Nanoseconds every thread of this process has run on a CPU (`/proc/self/task/*/schedstat`;
/// 0 where there is none).
fn cpu_nanos() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Share of `per_second` the accepted arrivals used between the first and the last of them.
fn used_share(arrivals: &[Arrival], per_second: f64) -> f64 {
    let accepted: Vec<Instant> = arrivals
        .iter()
        .filter(|a| a.status < 400)
        .map(|a| a.at)
        .collect();
    match (accepted.first(), accepted.last()) {
        (Some(&first), Some(&last)) if accepted.len() > 1 && last > first => {
            (accepted.len() - 1) as f64 / (per_second * (last - first).as_secs_f64())
        }
        _ => 0.0,
    }
}

/// Run `issued` requests at once through a fresh `peer` told the rate `configured`, against a
/// fresh server running `rule` whose real quota is `per_second`.
async fn run(
    scenario: String,
    peer: Peer,
    rule: Arc<dyn Rule>,
    (configured, per_second): (u32, u32),
    issued: usize,
    polite_config: impl FnOnce(Limit) -> Polite,
) -> Row {
    let server = Server::start(rule).expect("a loopback server starts");
    let client = Client::build(peer, configured, polite_config);
    let url = server.url();
    let started = Instant::now();
    let cpu_before = cpu_nanos();
    let watch = std::env::var_os("THROUGHPUT_WATCH").is_some();
    let callers = Semaphore::new(callers_from_env().unwrap_or(issued));
    let calls = join_all((0..issued).map(|_| async {
        let _caller = callers.acquire().await.expect("never closed");
        client.get(&url).await
    }));
    let results = match (&client.polite, watch) {
        (Some(polite), true) => {
            // print the host's state every 250 ms while the calls run (debugging aid)
            tokio::pin!(calls);
            loop {
                tokio::select! {
                    results = &mut calls => break results,
                    () = tokio::time::sleep(Duration::from_millis(250)) => {
                        for host in polite.snapshot() {
                            eprintln!("    {:>6.2} s  {host}", started.elapsed().as_secs_f64());
                        }
                    }
                }
            }
        }
        _ => calls.await,
    };
    let wall = started.elapsed();
    let cpu_per_request = cpu_nanos().saturating_sub(cpu_before) as f64 / 1e3 / issued as f64;
    let arrivals = server.arrivals();
    drop(client.polite);
    Row {
        scenario,
        peer: peer.name(),
        issued,
        accepted: results
            .iter()
            .filter(|r| matches!(r, Ok(s) if *s < 400))
            .count(),
        refused: arrivals.iter().filter(|a| a.status == 429).count(),
        errors: results.iter().filter(|r| r.is_err()).count(),
        wall,
        used: used_share(&arrivals, f64::from(per_second)),
        cpu_per_request,
    }
}

fn callers_from_env() -> Option<usize> {
    std::env::var("THROUGHPUT_CALLERS").ok()?.parse().ok()
}

fn with_cap(limit: Limit) -> Polite {
    Polite::builder().limit(limit).max_in_flight(64).build()
}

fn with_limit(limit: Limit) -> Polite {
    Polite::builder().limit(limit).build()
}

/// How a row's client is configured from the quota.
type Configure = fn(Limit) -> Polite;

/// The rows of a scenario with the rate configured: ours by `limit` and by a port-less
/// `host_limit` (the row's name gets the form's suffix), and governor.
const CONFIGURED_PEERS: [(Peer, &str, Configure); 3] = [
    (Peer::Polite, "", with_limit),
    (Peer::Polite, " host_limit", with_host_limit),
    (Peer::GovernorBurst1, "", with_limit),
];

/// The README's first form: a port-less `host_limit`, whose host-wide scope paces the host.
fn with_host_limit(limit: Limit) -> Polite {
    Polite::builder().host_limit("127.0.0.1", limit).build()
}

async fn sweep(rows: &mut Vec<Row>) {
    println!("sweep: strict sliding window of r per 1 s, 2 s worth of requests at once");
    for rate in [10u32, 100, 1000, 5000, 10_000] {
        for peer in [
            Peer::Polite,
            Peer::GovernorBurst1,
            Peer::GovernorBurst,
            Peer::Bare,
        ] {
            let rule = Arc::new(SlidingWindow::new(rate, Duration::from_secs(1)));
            let row = run(
                format!("sweep {rate}/s"),
                peer,
                rule,
                (rate, rate),
                2 * rate as usize,
                with_cap,
            )
            .await;
            row.print();
            rows.push(row);
        }
    }
}

async fn leaky(rows: &mut Vec<Row>) {
    println!("leaky: nginx-like leaky bucket (burst 0, ms accounting, bare 429), rate configured");
    for rate in [10u32, 200] {
        for (peer, form, config) in CONFIGURED_PEERS {
            let rule = Arc::new(Logged::new(LeakyBucket::new(rate, 0)));
            let issued = if rate == 10 { 100 } else { 1000 };
            let row = run(
                format!("leaky {rate}/s{form}"),
                peer,
                Arc::clone(&rule) as Arc<dyn Rule>,
                (rate, rate),
                issued,
                config,
            )
            .await;
            row.print();
            print_gaps(&rule.log(), rate);
            rows.push(row);
        }
    }
}

/// How close together requests reached a leaky bucket of `rate` per second: the gaps between
/// consecutive arrivals, and the gap before each refusal (to the last accepted arrival).
fn print_gaps(log: &[(Instant, u16)], rate: u32) {
    let spacing = 1e6 / f64::from(rate);
    let mut gaps: Vec<f64> = log
        .windows(2)
        .map(|w| (w[1].0 - w[0].0).as_secs_f64() * 1e6)
        .collect();
    let mut last_accepted: Option<Instant> = None;
    let mut refused: Vec<String> = Vec::new();
    for (i, (at, status)) in log.iter().enumerate() {
        if *status == 429 {
            let gap = last_accepted.map_or(f64::NAN, |l| (*at - l).as_secs_f64() * 1e6);
            refused.push(format!("#{} {gap:.0}", i + 1));
        } else {
            last_accepted = Some(*at);
        }
    }
    gaps.sort_by(f64::total_cmp);
    let pct = |p: usize| gaps.get(gaps.len() * p / 1000).copied().unwrap_or(f64::NAN);
    let short = gaps.iter().filter(|&&g| g < spacing).count();
    println!(
        "    arrival gaps (us): min {:.0}, 0.1% {:.0}, 1% {:.0}, median {:.0}; {short} under {spacing:.0}; before each refusal: [{}]",
        gaps.first().copied().unwrap_or(f64::NAN),
        pct(1),
        pct(10),
        pct(500),
        refused.join(", ")
    );
}

async fn stray(rows: &mut Vec<Row>) {
    println!("stray: Limit::per_second(200); the server refuses its 2nd request (bare 429)");
    let clean: Arc<dyn Rule> = Arc::new(SlidingWindow::new(200, Duration::from_secs(1)));
    let row = run(
        "no refusal, 2000 at once".into(),
        Peer::Polite,
        clean,
        (200, 200),
        2000,
        with_limit,
    )
    .await;
    row.print();
    rows.push(row);
    for (peer, form, config) in CONFIGURED_PEERS {
        let rule = Arc::new(StrayRefusal::new(
            SlidingWindow::new(200, Duration::from_secs(1)),
            2,
        ));
        let row = run(
            format!("stray 429, 2000 at once{form}"),
            peer,
            rule,
            (200, 200),
            2000,
            config,
        )
        .await;
        row.print();
        rows.push(row);
    }
}

async fn half(rows: &mut Vec<Row>) {
    println!(
        "half: Limit::per_second(200) configured; the server's real quota is 100/s (bare 429)"
    );
    for (peer, form, config) in CONFIGURED_PEERS {
        let rule = Arc::new(SlidingWindow::bare(100, Duration::from_secs(1)));
        let row = run(
            format!("half quota, 1000 at once{form}"),
            peer,
            rule,
            (200, 100),
            1000,
            config,
        )
        .await;
        row.print();
        rows.push(row);
    }
}

async fn learn(rows: &mut Vec<Row>) {
    println!("learn: nothing configured; 10/s with bare 429s; 50 requests at once");
    let sliding: Arc<dyn Rule> = Arc::new(SlidingWindow::bare(10, Duration::from_secs(1)));
    let leaky: Arc<dyn Rule> = Arc::new(LeakyBucket::new(10, 0));
    for (name, rule) in [("learn sliding 10/s", sliding), ("learn leaky 10/s", leaky)] {
        let row = run(
            name.into(),
            Peer::PoliteDefaults,
            rule,
            (10, 10),
            50,
            with_limit,
        )
        .await;
        row.print();
        rows.push(row);
    }
}

async fn stripe(rows: &mut Vec<Row>) {
    println!("stripe: 5 in any second (strict sliding window), bare 429s; 100 requests at once");
    for peer in [
        Peer::PoliteDefaults,
        Peer::GovernorBurst1,
        Peer::ReqwestRetry,
    ] {
        let rule: Arc<dyn Rule> = Arc::new(SlidingWindow::bare(5, Duration::from_secs(1)));
        let row = run("stripe 5/s".into(), peer, rule, (5, 5), 100, with_limit).await;
        row.print();
        rows.push(row);
    }
}

async fn queue(rows: &mut Vec<Row>) {
    println!(
        "queue: 10 000 at once, Limit::per_second(2000), max_in_flight(64); the quota allows 5 s"
    );
    let rule = Arc::new(SlidingWindow::new(2000, Duration::from_secs(1)));
    let row = run(
        "queue 10000 @ 2000/s".into(),
        Peer::Polite,
        rule,
        (2000, 2000),
        10_000,
        with_cap,
    )
    .await;
    row.print();
    rows.push(row);
}

/// Requests to each host of the `hosts` scenario, and each host's quota per second.
const PER_HOST: usize = 10;
const HOST_RATE: u32 = 2;
/// A `hosts` run is declared stuck (a deadlock) past this.
const HOSTS_TIMEOUT: Duration = Duration::from_secs(120);

async fn hosts(rows: &mut Vec<Row>) {
    println!(
        "hosts: 10 per host at once, each host a strict window of 2 per 1 s; Limit::per_second(2), max_in_flight(64); the schedule needs 4.5 s"
    );
    // 100 hosts: the same schedule at a tenth of the load on the machine
    for hosts in [1000, 100] {
        many_hosts(rows, hosts).await;
    }
}

/// `PER_HOST` requests to each of `hosts` loopback servers, all issued at once.
async fn many_hosts(rows: &mut Vec<Row>, hosts: usize) {
    let windows: Vec<Arc<Logged<SlidingWindow>>> = (0..hosts)
        .map(|_| {
            Arc::new(Logged::new(SlidingWindow::new(
                HOST_RATE,
                Duration::from_secs(1),
            )))
        })
        .collect();
    let rules = windows.iter().map(|w| Arc::clone(w) as Arc<dyn Rule>);
    let server = Server::start_each(rules.collect()).expect("loopback servers start");
    let urls = server.urls();
    let client = Client::build(Peer::Polite, HOST_RATE, with_cap);
    let polite = client.polite.clone().expect("a polite client");
    let started = Instant::now();
    // host by host in turn, as a crawler's frontier hands them out
    let calls = join_all((0..hosts * PER_HOST).map(|i| client.get(&urls[i % hosts])));
    let Ok(results) = tokio::time::timeout(HOSTS_TIMEOUT, calls).await else {
        println!(
            "  {hosts} hosts: did NOT finish within {HOSTS_TIMEOUT:?} (deadlock?); {} host records",
            polite.host_count()
        );
        return;
    };
    let wall = started.elapsed();
    let left: u32 = polite
        .snapshot()
        .iter()
        .map(|h| h.queued + h.in_flight)
        .sum();
    // where the refusals fell in each host's sequence, and how late the first arrivals came
    let mut refused_at = std::collections::BTreeMap::<usize, usize>::new();
    let mut first_ms: Vec<u128> = Vec::new();
    for window in &windows {
        let log = window.log();
        if let Some((first, _)) = log.first() {
            first_ms.push((*first - started).as_millis());
        }
        for (i, _) in log.iter().enumerate().filter(|(_, (_, s))| *s == 429) {
            *refused_at.entry(i + 1).or_default() += 1;
        }
    }
    first_ms.sort_unstable();
    let pct = |p: usize| first_ms.get(first_ms.len() * p / 100).copied().unwrap_or(0);
    println!(
        "  {hosts} hosts: finished, {} host records, {left} requests left queued or in flight; first arrivals {} ms (median) / {} ms (max) after the start; refusals by arrival number: {refused_at:?}",
        polite.host_count(),
        pct(50),
        first_ms.last().copied().unwrap_or(0),
    );
    // the schedule: each host's 10th request 9 intervals after its first
    let ideal = Duration::from_secs_f64((PER_HOST - 1) as f64 / f64::from(HOST_RATE));
    let row = row_against_ideal(
        &format!("hosts {} over {hosts} @ 2/s", hosts * PER_HOST),
        Peer::Polite.name(),
        &results,
        &server.arrivals(),
        wall,
        ideal,
    );
    row.print();
    rows.push(row);
}

/// One call of a scenario with its own client code: GET/POST `url`, the status or an error.
async fn call(
    http: &ClientWithMiddleware,
    request: reqwest_middleware::RequestBuilder,
) -> Result<u16, String> {
    let _ = http;
    let call = async {
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        response.bytes().await.map_err(|e| e.to_string())?;
        Ok(status)
    };
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

/// A row for a scenario whose "used" is the quota's best time over the wall time.
fn row_against_ideal(
    scenario: &str,
    peer: &'static str,
    results: &[Result<u16, String>],
    arrivals: &[Arrival],
    wall: Duration,
    ideal: Duration,
) -> Row {
    Row {
        scenario: scenario.to_string(),
        peer,
        issued: results.len(),
        accepted: results
            .iter()
            .filter(|r| matches!(r, Ok(s) if *s < 400))
            .count(),
        refused: arrivals
            .iter()
            .filter(|a| a.status == 429 || a.status == 403)
            .count(),
        errors: results.iter().filter(|r| r.is_err()).count(),
        wall,
        used: ideal.as_secs_f64() / wall.as_secs_f64(),
        cpu_per_request: 0.0,
    }
}

async fn github(rows: &mut Vec<Row>) {
    println!(
        "github: core 50/s, search 5/s (x-ratelimit-resource, 403 + Retry-After); 100 core + 20 search at once"
    );
    let one_second = NonZeroU32::MIN;
    for peer in [
        Peer::Polite,
        Peer::PoliteDefaults,
        Peer::GovernorBurst1,
        Peer::Bare,
    ] {
        let server = Server::start(Arc::new(GithubLike::new(50, 5))).expect("server");
        let (url, authority) = (server.url(), server.authority());
        let polite = match peer {
            Peer::Polite => Some(
                Polite::builder()
                    .host_limit(&authority, Limit::per_second(50))
                    .route_limit(&authority, "/search/", Limit::per_second(5))
                    .build(),
            ),
            Peer::PoliteDefaults => Some(Polite::new()),
            _ => None,
        };
        let http = http_client(polite.as_ref());
        let governed = peer == Peer::GovernorBurst1;
        let core = RateLimiter::direct(
            Quota::per_second(NonZeroU32::new(50).expect("50")).allow_burst(one_second),
        );
        let search = RateLimiter::direct(
            Quota::per_second(NonZeroU32::new(5).expect("5")).allow_burst(one_second),
        );
        let started = Instant::now();
        let calls = (0..120).map(|i| {
            let (path, limiter) = if i % 6 == 5 {
                ("search/issues", &search)
            } else {
                ("repos/a/b", &core)
            };
            let http = &http;
            let url = format!("{url}{path}");
            async move {
                if governed {
                    limiter.until_ready().await;
                }
                call(http, http.get(url)).await
            }
        });
        let results = join_all(calls).await;
        let wall = started.elapsed();
        let row = row_against_ideal(
            "github core+search",
            peer.name(),
            &results,
            &server.arrivals(),
            wall,
            Duration::from_secs_f64(19.0 / 5.0),
        );
        row.print();
        rows.push(row);
    }
}

/// Where the `tokens` server's windows start, and how it announces their reset.
#[derive(Clone, Copy)]
enum Windows {
    /// At a credential's first request after the last window ended; reset rounded up.
    FromFirstRequest,
    /// The same, the reset rounded down.
    RoundedDown,
    /// At multiples of the window on the clock; reset exact.
    OnTheClock,
    /// From the first request, rounded up, the quota named `core` as GitHub names it.
    Named,
}

async fn tokens(rows: &mut Vec<Row>) {
    println!(
        "tokens: per token 30 per 10 s fixed windows (x-ratelimit-*, 403 when over); 150 GETs over two tokens at once"
    );
    let window = Duration::from_secs(10);
    let rows_to_run = [
        ("tokens 30/10 s x2", Peer::Polite, Windows::FromFirstRequest),
        (
            "tokens 30/10 s x2",
            Peer::PoliteDefaults,
            Windows::FromFirstRequest,
        ),
        (
            "tokens 30/10 s x2",
            Peer::ReqwestRetry,
            Windows::FromFirstRequest,
        ),
        (
            "tokens, reset rounded down",
            Peer::PoliteDefaults,
            Windows::RoundedDown,
        ),
        (
            "tokens, windows on the clock",
            Peer::PoliteDefaults,
            Windows::OnTheClock,
        ),
        ("tokens, named core", Peer::PoliteDefaults, Windows::Named),
    ];
    for (scenario, peer, windows) in rows_to_run {
        let rule = PerTokenFixedWindow::new(30, window);
        let rule = match windows {
            Windows::FromFirstRequest => rule,
            Windows::RoundedDown => rule.reset_rounded_down(),
            Windows::OnTheClock => rule.aligned(),
            Windows::Named => rule.named(),
        };
        let server = Server::start(Arc::new(rule)).expect("server");
        let url = server.url();
        let polite = match peer {
            Peer::Polite => Some(
                Polite::builder()
                    .limit(Limit::per(30, window))
                    .partition_by_header("authorization")
                    .build(),
            ),
            Peer::PoliteDefaults => Some(
                Polite::builder()
                    .partition_by_header("authorization")
                    .build(),
            ),
            _ => None,
        };
        let http = match peer {
            Peer::ReqwestRetry => reqwest_retry(),
            _ => http_client(polite.as_ref()),
        };
        let started = Instant::now();
        // each token's 75th request starts its third window: 20 s after its first, or on the
        // clock, the second window boundary after the first request
        let ideal = match windows {
            Windows::OnTheClock => {
                let since_epoch = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                let into = since_epoch.as_nanos() % window.as_nanos();
                2 * window - Duration::from_nanos(u64::try_from(into).unwrap_or(0))
            }
            _ => 2 * window,
        };
        let calls = (0..150).map(|i| {
            let http = &http;
            let request = http
                .get(&url)
                .header("authorization", format!("token t{}", i % 2));
            async move { call(http, request).await }
        });
        let results = join_all(calls).await;
        let wall = started.elapsed();
        let row = row_against_ideal(
            scenario,
            peer.name(),
            &results,
            &server.arrivals(),
            wall,
            ideal,
        );
        row.print();
        rows.push(row);
    }
}

async fn openai(rows: &mut Vec<Row>) {
    println!("openai: 20 requests/s and 2000 tokens/s; 40 requests of 300 tokens at once");
    const TOKENS: u32 = 300;
    for peer in [
        Peer::Polite,
        Peer::PoliteDefaults,
        Peer::GovernorBurst1,
        Peer::Bare,
    ] {
        let server = Server::start(Arc::new(OpenAiLike::new(20, 2000))).expect("server");
        let (url, authority) = (server.url(), server.authority());
        let polite = match peer {
            Peer::Polite => Some(
                Polite::builder()
                    .host_limit(&authority, Limit::per_second(20))
                    .unit_limit(&authority, "tokens", Limit::per_second(2000))
                    .build(),
            ),
            Peer::PoliteDefaults => Some(Polite::new()),
            _ => None,
        };
        let http = http_client(polite.as_ref());
        let governed = peer == Peer::GovernorBurst1;
        let requests = RateLimiter::direct(
            Quota::per_second(NonZeroU32::new(20).expect("20")).allow_burst(NonZeroU32::MIN),
        );
        // governor's documented way for weighted costs: a burst as large as the biggest cost
        let tokens = RateLimiter::direct(
            Quota::per_second(NonZeroU32::new(2000).expect("2000"))
                .allow_burst(NonZeroU32::new(TOKENS).expect("300")),
        );
        let started = Instant::now();
        let calls = (0..40).map(|_| {
            let (http, requests, tokens) = (&http, &requests, &tokens);
            let url = format!("{url}v1/chat/completions");
            async move {
                if governed {
                    requests.until_ready().await;
                    let _ = tokens
                        .until_n_ready(NonZeroU32::new(TOKENS).expect("300"))
                        .await;
                }
                let request = http
                    .post(url)
                    .header("x-tokens", TOKENS)
                    .with_extension(reqwest_polite::Units::new("tokens", TOKENS))
                    .body("{}");
                call(http, request).await
            }
        });
        let results = join_all(calls).await;
        let wall = started.elapsed();
        let row = row_against_ideal(
            "openai requests+tokens",
            peer.name(),
            &results,
            &server.arrivals(),
            wall,
            Duration::from_secs_f64(39.0 * f64::from(TOKENS) / 2000.0),
        );
        row.print();
        rows.push(row);
    }
}

#[tokio::main]
async fn main() {
    let chosen: Vec<String> = std::env::args().skip(1).collect();
    let wants = |name: &str| chosen.is_empty() || chosen.iter().any(|c| c == name);
    let mut rows = Vec::new();
    if wants("sweep") {
        sweep(&mut rows).await;
    }
    if wants("leaky") {
        leaky(&mut rows).await;
    }
    if wants("stray") {
        stray(&mut rows).await;
    }
    if wants("half") {
        half(&mut rows).await;
    }
    if wants("learn") {
        learn(&mut rows).await;
    }
    if wants("stripe") {
        stripe(&mut rows).await;
    }
    if wants("queue") {
        queue(&mut rows).await;
    }
    if wants("hosts") {
        hosts(&mut rows).await;
    }
    if wants("github") {
        github(&mut rows).await;
    }
    if wants("tokens") {
        tokens(&mut rows).await;
    }
    if wants("openai") {
        openai(&mut rows).await;
    }
    println!(
        "\n| scenario | client | issued | accepted | refused | errors | wall (s) | quota used |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.2} | {} |",
            r.scenario,
            r.peer,
            r.issued,
            r.accepted,
            r.refused,
            r.errors,
            r.wall.as_secs_f64(),
            r.used_text()
        );
    }
    let sweep: Vec<&Row> = rows
        .iter()
        .filter(|r| r.scenario.starts_with("sweep"))
        .collect();
    if !sweep.is_empty() {
        let out = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/throughput");
        let written = std::fs::create_dir_all(&out)
            .map_err(|e| e.to_string())
            .and_then(|()| sweep_chart(&out.join("sweep.svg"), &sweep).map_err(|e| e.to_string()));
        match written {
            Ok(()) => println!("wrote {}", out.join("sweep.svg").display()),
            Err(err) => eprintln!("could not write the chart: {err}"),
        }
    }
}

/// Share of the quota used by each client at each rate of the sweep, for clients that were
/// never refused (a refused client's share is not a share of the quota).
fn sweep_chart(path: &std::path::Path, rows: &[&Row]) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let mut rates: Vec<&str> = rows
        .iter()
        .map(|r| r.scenario.trim_start_matches("sweep "))
        .collect();
    rates.dedup();
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Share of a configured quota used: strict sliding window, 2 s of requests at once",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(-0.3f64..(rates.len() as f64 - 0.7), 0f64..105f64)?;
    chart
        .configure_mesh()
        .x_labels(rates.len())
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                rates
                    .get(i as usize)
                    .map_or(String::new(), |r| r.to_string())
            } else {
                String::new()
            }
        })
        .x_desc("configured rate (and server quota)")
        .y_desc("quota used, % (0 refusals)")
        .draw()?;
    let colours = [RGBColor(31, 119, 180), RGBColor(255, 127, 14)];
    for (peer, colour) in [Peer::Polite, Peer::GovernorBurst1].iter().zip(colours) {
        let points: Vec<(f64, f64)> = rows
            .iter()
            .filter(|r| r.peer == peer.name() && r.refused == 0)
            .filter_map(|r| {
                let rate = r.scenario.trim_start_matches("sweep ");
                let x = rates.iter().position(|&x| x == rate)? as f64;
                Some((x, r.used * 100.0))
            })
            .collect();
        let style = colour.stroke_width(3);
        chart
            .draw_series(LineSeries::new(points.clone(), style))?
            .label(peer.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        chart.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 4, colour.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
