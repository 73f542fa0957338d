//! The politeness harness: six clients against five server behaviours, all on loopback.
//!
//! ```text
//! cargo run --release --example politeness
//! ```
//!
//! Every (scenario, client) pair runs on fresh servers, which count what reaches them, and a
//! fresh client. The table goes to stdout and to `target/politeness/results.md` and
//! `results.csv`; `rate.svg` charts, for scenario (a), the requests reaching the server in the
//! trailing second (what the server compares with its quota), sampled every 50 ms.
//!
//! The whole run takes about two minutes. To run some scenarios only, name them:
//! `cargo run --release --example politeness -- a d` (the files then hold those only).
//!
//! Scenarios (every quota is per 1 s, so the run stays short):
//! - (a) a strict sliding window of 10, 429 + `Retry-After` beyond it; 60 requests at once.
//! - (b) a fixed window of 10 with `X-RateLimit-*` on every answer, `Retry-After` on 429;
//!   40 at once.
//! - (c) a fixed window of 10 with the IETF draft `RateLimit` / `RateLimit-Policy` headers, no
//!   `Retry-After`; 40 at once.
//! - (d) 503 for everything for 3 s, then healed; one request at a time, 20 ms apart, for 7 s.
//! - (e) 50 hosts, each a sliding window of 5 to 15; 20 requests to each, all at once.

#[path = "politeness/clients.rs"]
mod clients;
#[path = "politeness/outcome.rs"]
mod outcome;
#[path = "politeness/report.rs"]
mod report;
#[path = "politeness/rules.rs"]
mod rules;
#[path = "politeness/server.rs"]
mod server;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use reqwest::Url;

use crate::clients::{Call, Client, Documented, Kind, Target};
use crate::outcome::Outcome;
use crate::rules::{Dialect, FixedWindow, Outage, SlidingWindow};
use crate::server::{Rule, Servers};

/// The quota of the single-host scenarios (a), (b) and (c).
const QUOTA: Documented = Documented::per_second(10);
/// Requests issued at once in scenario (a).
const SLIDING_BURST: usize = 60;
/// Requests issued at once in scenarios (b) and (c).
const FIXED_BURST: usize = 40;
/// How long the host of scenario (d) is down.
const OUTAGE: Duration = Duration::from_secs(3);
/// How long the caller of scenario (d) keeps calling, and the pause between its calls.
const OUTAGE_CALLING: Duration = Duration::from_secs(7);
const OUTAGE_PAUSE: Duration = Duration::from_millis(20);
/// Hosts in scenario (e), the requests sent to each, and their quotas (5 to 15 per second).
const HOSTS: u32 = 50;
const PER_HOST: usize = 20;
fn host_quota(i: u32) -> Documented {
    Documented::per_second(5 + i % 11)
}

#[derive(Debug, Clone, Copy)]
enum Scenario {
    SlidingWindow,
    XRateLimit,
    IetfDraft,
    Outage,
    ManyHosts,
}

impl Scenario {
    const ALL: [Scenario; 5] = [
        Scenario::SlidingWindow,
        Scenario::XRateLimit,
        Scenario::IetfDraft,
        Scenario::Outage,
        Scenario::ManyHosts,
    ];

    fn key(self) -> &'static str {
        match self {
            Scenario::SlidingWindow => "a",
            Scenario::XRateLimit => "b",
            Scenario::IetfDraft => "c",
            Scenario::Outage => "d",
            Scenario::ManyHosts => "e",
        }
    }

    fn describe(self) -> String {
        let quota = QUOTA.count;
        match self {
            Scenario::SlidingWindow => format!(
                "(a) strict sliding window, {quota} per 1 s, 429 + Retry-After beyond; \
                 {SLIDING_BURST} requests at once"
            ),
            Scenario::XRateLimit => format!(
                "(b) fixed window, {quota} per 1 s, X-RateLimit-Limit/-Remaining/-Reset on every \
                 answer, Retry-After on 429; {FIXED_BURST} requests at once"
            ),
            Scenario::IetfDraft => format!(
                "(c) fixed window, {quota} per 1 s, IETF draft RateLimit + RateLimit-Policy on \
                 every answer, 429 without Retry-After; {FIXED_BURST} requests at once"
            ),
            Scenario::Outage => format!(
                "(d) 503 for everything for {} s, then 200; one call at a time, {} ms apart, \
                 for {} s",
                OUTAGE.as_secs(),
                OUTAGE_PAUSE.as_millis(),
                OUTAGE_CALLING.as_secs()
            ),
            Scenario::ManyHosts => format!(
                "(e) {HOSTS} hosts, strict sliding windows of 5..=15 per 1 s; {PER_HOST} requests \
                 to each, all at once"
            ),
        }
    }

    async fn run(self, kind: Kind) -> io::Result<Outcome> {
        match self {
            Scenario::SlidingWindow => sliding_window(kind).await,
            Scenario::XRateLimit => fixed_window(kind, Dialect::XRateLimit, self.key()).await,
            Scenario::IetfDraft => fixed_window(kind, Dialect::Ietf, self.key()).await,
            Scenario::Outage => outage(kind).await,
            Scenario::ManyHosts => many_hosts(kind).await,
        }
    }
}

/// (a): a strict sliding window, and a burst far beyond it.
async fn sliding_window(kind: Kind) -> io::Result<Outcome> {
    let servers = Servers::start(vec![Arc::new(SlidingWindow::new(QUOTA))])?;
    let client = Client::build(kind, &targets(&servers, &[Some(QUOTA)]));
    let calls = burst(&client, &servers.urls(), SLIDING_BURST).await;
    Ok(Outcome::new("a", kind.name(), &calls, &servers.arrivals()))
}

/// (b) and (c): a fixed window that says how much is left, in one dialect or the other.
async fn fixed_window(kind: Kind, dialect: Dialect, key: &'static str) -> io::Result<Outcome> {
    let servers = Servers::start(vec![Arc::new(FixedWindow::new(QUOTA, dialect))])?;
    let client = Client::build(kind, &targets(&servers, &[Some(QUOTA)]));
    let calls = burst(&client, &servers.urls(), FIXED_BURST).await;
    Ok(Outcome::new(key, kind.name(), &calls, &servers.arrivals()))
}

/// (d): a host that is down, then heals, called steadily by one caller.
async fn outage(kind: Kind) -> io::Result<Outcome> {
    let heals_at = Instant::now() + OUTAGE;
    let servers = Servers::start(vec![Arc::new(Outage { heals_at })])?;
    // no documented quota: "with quota" clients are their defaults here
    let client = Client::build(kind, &targets(&servers, &[None]));
    let url = servers.url(0);
    let stop_at = Instant::now() + OUTAGE_CALLING;
    let mut calls = Vec::new();
    while Instant::now() < stop_at {
        calls.push(client.get(&url).await);
        tokio::time::sleep(OUTAGE_PAUSE).await;
    }
    let arrivals = servers.arrivals();
    Ok(Outcome::new("d", kind.name(), &calls, &arrivals).with_outage(heals_at, &calls, &arrivals))
}

/// (e): many hosts with different quotas, all called at once.
async fn many_hosts(kind: Kind) -> io::Result<Outcome> {
    let quotas: Vec<Documented> = (0..HOSTS).map(host_quota).collect();
    let rules: Vec<Arc<dyn Rule>> = quotas
        .iter()
        .map(|&quota| Arc::new(SlidingWindow::new(quota)) as Arc<dyn Rule>)
        .collect();
    let servers = Servers::start(rules)?;
    let documented: Vec<Option<Documented>> = quotas.into_iter().map(Some).collect();
    let client = Client::build(kind, &targets(&servers, &documented));
    let calls = burst(&client, &servers.urls(), PER_HOST).await;
    Ok(Outcome::new("e", kind.name(), &calls, &servers.arrivals()))
}

/// What a client is told about the servers: their authorities and documented quotas.
fn targets(servers: &Servers, quotas: &[Option<Documented>]) -> Vec<Target> {
    servers
        .authorities()
        .into_iter()
        .zip(quotas)
        .map(|(authority, &quota)| Target { authority, quota })
        .collect()
}

/// Issue `each` GETs to every URL, all at once, and wait for every one of them.
async fn burst(client: &Client, urls: &[Url], each: usize) -> Vec<Call> {
    let calls = urls
        .iter()
        .flat_map(|url| std::iter::repeat_n(url, each))
        .map(|url| client.get(url));
    join_all(calls).await
}

/// One line per run, printed as soon as it ends, with the errors grouped by kind.
fn progress(outcome: &Outcome) -> String {
    let errors: Vec<String> = outcome
        .error_kinds
        .iter()
        .map(|(kind, n)| format!("{n} {kind}"))
        .collect();
    format!(
        "({}) {:<16} ok {:>4}/{:<4} 429 sent {:>4}  reached {:>4}  wall {:>6} ms{}",
        outcome.scenario,
        outcome.client,
        outcome.ok,
        outcome.issued,
        outcome.refused,
        outcome.reached,
        outcome.wall.as_millis(),
        if errors.is_empty() {
            String::new()
        } else {
            format!("  errors: {}", errors.join(", "))
        }
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let chosen: Vec<String> = std::env::args().skip(1).collect();
    let scenarios: Vec<Scenario> = Scenario::ALL
        .into_iter()
        .filter(|s| chosen.is_empty() || chosen.iter().any(|c| c == s.key()))
        .collect();
    let mut outcomes = Vec::new();
    for &scenario in &scenarios {
        println!("{}", scenario.describe());
        for kind in Kind::ALL {
            let outcome = scenario.run(kind).await?;
            println!("  {}", progress(&outcome));
            outcomes.push(outcome);
        }
    }
    let run_time = started.elapsed();
    println!("\n{}", report::text_table(&outcomes));
    println!("whole run: {:.1} s", run_time.as_secs_f64());

    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/politeness");
    std::fs::create_dir_all(&out)?;
    let described: Vec<String> = scenarios.iter().map(|s| s.describe()).collect();
    std::fs::write(
        out.join("results.md"),
        report::markdown(&outcomes, &described, run_time),
    )?;
    std::fs::write(out.join("results.csv"), report::csv(&outcomes))?;
    let sliding: Vec<&Outcome> = outcomes.iter().filter(|o| o.scenario == "a").collect();
    if !sliding.is_empty() {
        report::rate_chart(
            &out.join("rate.svg"),
            "(a) strict sliding window, 10 per 1 s: 60 requests issued at once \
             (counts above 60 clipped)",
            &sliding,
            QUOTA,
            60.0,
        )?;
    }
    println!("wrote {}", out.display());
    Ok(())
}
