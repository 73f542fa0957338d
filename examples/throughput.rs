//! The throughput harness: how much of a quota each client *uses*, and what the server refused.
//!
//! ```text
//! cargo run --release --example throughput              # every scenario (about 2 minutes)
//! cargo run --release --example throughput -- sweep     # some of them: sweep leaky stray half learn queue
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
//!   429): 1000 requests at 10/s and at 200/s... issued at once, the rate configured.
//! - `stray`: `Limit::per_second(200)`, and the server refuses the 2nd request with a bare 429
//!   (then accepts everything within its quota): what is left of the next seconds' throughput.
//! - `half`: `Limit::per_second(200)` configured, the server's real quota is 100/s (strict window,
//!   bare 429s): refusals until the client finds it, and the share of the real quota used.
//! - `learn`: nothing configured, a 10/s limiter with bare 429s (a strict sliding window, and a
//!   leaky bucket); 50 requests at once: refusals and the share of the quota over those 50.
//! - `queue`: 10 000 requests at once to one host, `Limit::per_second(2000)`, `max_in_flight(64)`:
//!   wall time against the 5 s the quota allows.

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

use crate::limiters::{Arrival, LeakyBucket, Rule, Server, SlidingWindow, StrayRefusal};

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
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Polite => "polite + limit",
            Peer::PoliteDefaults => "polite defaults",
            Peer::GovernorBurst1 => "governor burst 1",
            Peer::GovernorBurst => "governor burst r",
            Peer::Bare => "bare reqwest",
        }
    }
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
        let reqwest = reqwest::Client::new();
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
            Peer::Bare => (None, None),
        };
        let http = match &polite {
            Some(polite) => ClientBuilder::new(reqwest).with(polite.clone()).build(),
            None => ClientBuilder::new(reqwest).build(),
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
}

impl Row {
    fn print(&self) {
        println!(
            "  {:<28} {:<17} issued {:>6}  accepted {:>6}  refused {:>5}  errors {:>4}  wall {:>7.2} s  used {:>5.1}%",
            self.scenario,
            self.peer,
            self.issued,
            self.accepted,
            self.refused,
            self.errors,
            self.wall.as_secs_f64(),
            self.used * 100.0
        );
    }
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
    let watch = std::env::var_os("THROUGHPUT_WATCH").is_some();
    let calls = join_all((0..issued).map(|_| client.get(&url)));
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
    }
}

fn with_cap(limit: Limit) -> Polite {
    Polite::builder().limit(limit).max_in_flight(64).build()
}

fn with_limit(limit: Limit) -> Polite {
    Polite::builder().limit(limit).build()
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
        for peer in [Peer::Polite, Peer::GovernorBurst1] {
            let rule = Arc::new(LeakyBucket::new(rate, 0));
            let issued = if rate == 10 { 100 } else { 1000 };
            let row = run(
                format!("leaky {rate}/s"),
                peer,
                rule,
                (rate, rate),
                issued,
                with_limit,
            )
            .await;
            row.print();
            rows.push(row);
        }
    }
}

async fn stray(rows: &mut Vec<Row>) {
    println!("stray: Limit::per_second(200); the server refuses its 2nd request (bare 429)");
    for peer in [Peer::Polite, Peer::GovernorBurst1] {
        let rule = Arc::new(StrayRefusal::new(
            SlidingWindow::new(200, Duration::from_secs(1)),
            2,
        ));
        let row = run(
            "stray 429, 2000 at once".into(),
            peer,
            rule,
            (200, 200),
            2000,
            with_limit,
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
    for peer in [Peer::Polite, Peer::GovernorBurst1] {
        let rule = Arc::new(SlidingWindow::bare(100, Duration::from_secs(1)));
        let row = run(
            "half quota, 1000 at once".into(),
            peer,
            rule,
            (200, 100),
            1000,
            with_limit,
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
    if wants("queue") {
        queue(&mut rows).await;
    }
    println!(
        "\n| scenario | client | issued | accepted | refused | errors | wall (s) | quota used |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.2} | {:.1}% |",
            r.scenario,
            r.peer,
            r.issued,
            r.accepted,
            r.refused,
            r.errors,
            r.wall.as_secs_f64(),
            r.used * 100.0
        );
    }
}
