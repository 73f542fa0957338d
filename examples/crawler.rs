//! A crawler over many hosts: each host paced on its own schedule, at most two requests
//! waiting on any one of them, and a deadline on every page.
//!
//! Five embedded loopback servers each allow 5 requests in any second (a 429 beyond it); the
//! crawler queues 10 pages from each at once. Run: `cargo run --example crawler` (about 2 s).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use reqwest_polite::{Deadline, Limit, Polite};
use tokio::task::JoinSet;

#[tokio::main]
async fn main() {
    let sites: Vec<_> = (0..5)
        .map(|_| common::sliding_window_server(5, Duration::from_secs(1)))
        .collect();

    let polite = Polite::builder()
        .limit(Limit::per_second(5)) // every host on its own schedule
        .max_in_flight(2) // per host
        .idle_timeout(Duration::from_secs(60)) // forget a host a minute after its last request
        .build();
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(polite.clone())
        .build();

    let started = Instant::now();
    let mut crawl = JoinSet::new();
    for page in 0..10 {
        for site in &sites {
            let request = client
                .get(site.url(&format!("/page/{page}")))
                .with_extension(Deadline::after(Duration::from_secs(10))); // or fail, unsent
            crawl.spawn(async move { request.send().await });
        }
    }
    let mut fetched = 0;
    while let Some(Ok(result)) = crawl.join_next().await {
        match result {
            Ok(resp) if resp.status().is_success() => fetched += 1,
            Ok(resp) => eprintln!("{}: {}", resp.url(), resp.status()),
            Err(err) => eprintln!("{err}"),
        }
    }

    let refused: u64 = sites.iter().map(|site| site.stats.refused()).sum();
    println!(
        "{fetched} pages from {} hosts in {:.1} s; {refused} refused by the sites",
        sites.len(),
        started.elapsed().as_secs_f64()
    );
    for host in polite.snapshot() {
        println!("  {host}");
    }
}
