//! Calling a GitHub-like API politely: a core quota for the host, a tighter one for search, one
//! set of quotas per token, all on an embedded loopback server that meters like GitHub
//! (scaled down: core 50/s, search 5/s, resources named in `x-ratelimit-resource`, 403 +
//! `Retry-After` beyond).
//!
//! ```text
//! cargo run --example github_like
//! ```

#[path = "throughput/limiters.rs"]
#[allow(dead_code)] // the throughput harness's limiters; this example uses one
mod limiters;

use std::sync::Arc;
use std::time::Instant;

use futures::future::join_all;
use reqwest_polite::{Limit, Polite};

use crate::limiters::{GithubLike, Server};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::start(Arc::new(GithubLike::new(50, 5)))?;
    let base = server.url(); // http://127.0.0.1:<port>/
    let host = &server.authority(); // 127.0.0.1:<port>

    // what GitHub documents, scaled down: 5000/h core becomes 50/s, 30/min search 5/s
    let polite = Polite::builder()
        .host_limit(host, Limit::per_second(50))
        .route_limit(host, "/search/", Limit::per_second(5))
        .partition_by_header("authorization")
        .build();
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(polite.clone())
        .build();

    let started = Instant::now();
    let calls = (0..60).map(|i| {
        let path = if i % 6 == 5 {
            "search/issues?q=x"
        } else {
            "repos/o/r"
        };
        client
            .get(format!("{base}{path}"))
            .header("authorization", "token ghp-EXAMPLE")
            .send()
    });
    let results = join_all(calls).await;
    let ok = results
        .iter()
        .filter(|r| r.as_ref().is_ok_and(|resp| resp.status().is_success()))
        .count();
    let refused = server
        .arrivals()
        .iter()
        .filter(|a| a.status == 403 || a.status == 429)
        .count();
    println!(
        "60 requests (10 searches) in {:.2} s: {ok} succeeded, {refused} refused by the server",
        started.elapsed().as_secs_f64()
    );
    for host in polite.snapshot() {
        println!("  {host}");
    }
    for scope in polite.scope_snapshot() {
        println!("  {scope}");
    }
    Ok(())
}
