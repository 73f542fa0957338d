//! Calling a Stripe-like API: a `POST` is retried after a 5xx only when it carries an
//! `Idempotency-Key`, because only then can the server tell a repeat from a second charge.
//!
//! The embedded loopback server answers every other request with a 500, as an API under
//! strain might. Run: `cargo run --example stripe_like`

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicU64, Ordering};

use reqwest_polite::{Limit, Polite};

#[tokio::main]
async fn main() -> Result<(), reqwest_middleware::Error> {
    let arrivals = AtomicU64::new(0);
    let server = common::serve(
        move |_, _| match arrivals.fetch_add(1, Ordering::SeqCst) % 2 {
            0 => common::Reply::status(500),
            _ => common::Reply::ok(),
        },
    );

    let polite = Polite::builder()
        .host_limit(server.addr.to_string(), Limit::per_second(25))
        .build();
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(polite)
        .build();

    // with a key: the 500 is retried, and the server sees the same key twice
    let resp = client
        .post(server.url("/v1/payment_intents"))
        .header("idempotency-key", "order-1042")
        .body("amount=2000&currency=usd")
        .send()
        .await?;
    println!(
        "with an Idempotency-Key: {} ({} attempts)",
        resp.status(),
        server.stats.hits()
    );

    // without one: the 500 comes back after one attempt; retrying could charge twice
    let resp = client
        .post(server.url("/v1/payment_intents"))
        .body("amount=2000&currency=usd")
        .send()
        .await?;
    println!(
        "without: {} (1 attempt; {} in all)",
        resp.status(),
        server.stats.hits()
    );
    Ok(())
}
