//! Calling an OpenAI-like API politely: requests per second *and* tokens per second, on an
//! embedded loopback server that meters both (20 requests/s, 2000 tokens/s) and answers with
//! `x-ratelimit-*-tokens`.
//!
//! ```text
//! cargo run --example openai_like
//! ```

#[path = "throughput/limiters.rs"]
#[allow(dead_code)] // the throughput harness's limiters; this example uses one
mod limiters;

use std::sync::Arc;
use std::time::Instant;

use futures::future::join_all;
use reqwest_polite::{Limit, Polite, Units};

use crate::limiters::{OpenAiLike, Server};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::start(Arc::new(OpenAiLike::new(20, 2000)))?;
    let base = server.url();
    let host = &server.authority(); // 127.0.0.1:<port>

    let polite = Polite::builder()
        .host_limit(host, Limit::per_second(20))
        .unit_limit(host, "tokens", Limit::per_second(2000))
        .build();
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(polite.clone())
        .build();

    // each request says what it will spend: the prompt's tokens plus the completion's budget
    let started = Instant::now();
    let calls = (0..20).map(|_| {
        client
            .post(format!("{base}v1/chat/completions"))
            .header("x-tokens", 300) // the embedded server reads the cost from here
            .with_extension(Units::new("tokens", 300))
            .body("{}")
            .send()
    });
    let results = join_all(calls).await;
    let ok = results
        .iter()
        .filter(|r| r.as_ref().is_ok_and(|resp| resp.status().is_success()))
        .count();
    let refused = server.arrivals().iter().filter(|a| a.status == 429).count();
    println!(
        "20 requests of 300 tokens in {:.2} s: {ok} succeeded, {refused} refused by the server",
        started.elapsed().as_secs_f64()
    );
    for scope in polite.scope_snapshot() {
        println!("  {scope}");
    }
    Ok(())
}
