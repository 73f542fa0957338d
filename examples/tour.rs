//! A tour of reqwest-polite against an embedded rate-limited server on loopback.
//!
//! The server enforces a strict sliding window (20 requests in any 1 s) and answers 429 with
//! `Retry-After` beyond it, as an API gateway enforcing its documented quota does. We fire 100
//! requests at it all at once, through a client configured with that same quota, and watch
//! them go out evenly spaced: no refusals, at 98% of the quota's throughput.
//!
//! Run: `cargo run --example tour`

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest_polite::{Limit, Polite};

const REQUESTS: usize = 100;
const QUOTA: u32 = 20;
const WINDOW: Duration = Duration::from_secs(1);

#[tokio::main]
async fn main() {
    let server = common::sliding_window_server(QUOTA as usize, WINDOW);
    println!(
        "server: http://{} allows {QUOTA} requests in any {WINDOW:?}, 429 beyond",
        server.addr
    );

    let polite = Polite::builder().limit(Limit::per(QUOTA, WINDOW)).build();
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(polite.clone())
        .build();
    println!("client: Limit::per({QUOTA}, {WINDOW:?}), {REQUESTS} requests issued at once\n");

    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let progress = tokio::spawn(show_progress(
        Arc::clone(&done),
        Arc::clone(&server.stats),
        started,
    ));

    let url = server.url("/");
    let calls = (0..REQUESTS).map(|_| {
        let (client, url, done) = (client.clone(), url.clone(), Arc::clone(&done));
        tokio::spawn(async move {
            let result = client.get(&url).send().await;
            done.fetch_add(1, Ordering::SeqCst);
            result.map(|resp| resp.status().as_u16())
        })
    });
    let results = futures::future::join_all(calls).await;
    let elapsed = started.elapsed();
    progress.abort();

    let ok = results.iter().filter(|r| matches!(r, Ok(Ok(200)))).count();
    let errors = results.len() - ok;
    let quota_time = WINDOW.as_secs_f64() * (REQUESTS as f64 - 1.0) / f64::from(QUOTA);
    println!("\r{}", bar(REQUESTS, REQUESTS));
    println!("\nsummary");
    println!("  sent      {}", server.stats.hits());
    println!("  succeeded {ok}");
    println!("  failed    {errors}");
    println!(
        "  refused   {} (429s the server had to send)",
        server.stats.refused()
    );
    println!(
        "  elapsed   {:.2} s (the quota allows {REQUESTS} in {quota_time:.2} s at best: {:.0}% of its throughput)",
        elapsed.as_secs_f64(),
        100.0 * quota_time / elapsed.as_secs_f64()
    );
    println!(
        "  busiest   {} requests in one {WINDOW:?} window, as seen by the server",
        server.stats.max_in_any_window(WINDOW)
    );
    println!("\nsnapshot");
    for host in polite.snapshot() {
        println!("  {host}");
    }
}

async fn show_progress(done: Arc<AtomicUsize>, stats: Arc<common::Stats>, started: Instant) {
    loop {
        let line = format!(
            "{}  {:>5.1} s  refused {}",
            bar(done.load(Ordering::SeqCst), REQUESTS),
            started.elapsed().as_secs_f64(),
            stats.refused()
        );
        print!("\r{line}");
        let _ = std::io::stdout().flush();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn bar(done: usize, total: usize) -> String {
    let width = 40;
    let filled = done * width / total;
    format!(
        "[{}{}] {done:>3}/{total}",
        "#".repeat(filled),
        ".".repeat(width - filled)
    )
}
