//! What sharing quotas through Redis adds to one request (feature `redis`).
//!
//! ```text
//! cargo run --release --features redis --example shared_latency
//! ```
//!
//! Starts its own `redis-server` (from PATH, on a free port, no persistence) and a loopback
//! HTTP server that answers 200 at once, then sends 3000 GETs one after the other through a
//! `Polite` with a `RedisStore`, for each of three configurations, in three rounds (the
//! configurations take turns, so the load of a shared machine weighs on each alike): no limit
//! (the host record's cooldown is read, nothing is reserved), a port-less `host_limit` (the
//! host record's cooldown is read, a slot is reserved in the host-wide schedule) and a host's
//! own `limit` (a slot is reserved in the host record's schedule). The limits are so high that
//! no request waits for its slot: this measures the calls, not pacing. Prints the median and
//! the 90th percentile of the time each request took, and the same without a store.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/support/redis_server.rs"]
mod redis_server;

use std::time::{Duration, Instant};

use reqwest_polite::{Limit, Polite, PoliteBuilder, RedisStore};

/// Requests timed per configuration and round, after as many untimed.
const REQUESTS: usize = 3000;
const ROUNDS: usize = 3;

type Configure = fn(PoliteBuilder) -> PoliteBuilder;

const CONFIGURATIONS: [(&str, Configure); 3] = [
    ("no limit", |polite| polite),
    ("port-less host_limit", |polite| {
        polite.host_limit("127.0.0.1", Limit::per_second(1_000_000))
    }),
    ("own limit", |polite| {
        polite.limit(Limit::per_second(1_000_000))
    }),
];

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let redis = redis_server::RedisServer::start()?;
    let server = common::serve(|_, _| common::Reply::ok());
    let url = server.url("/");
    println!("| round | configuration | store | median | p90 |\n|---|---|---|---|---|");
    for round in 1..=ROUNDS {
        for (name, configure) in CONFIGURATIONS {
            for shared in [true, false] {
                let mut builder = configure(Polite::builder());
                if shared {
                    let store = RedisStore::connect(&redis.url())
                        .await?
                        .prefix(format!("latency-{round}-{name}"))
                        .timeout(Duration::from_secs(1));
                    builder = builder.store(store);
                }
                let client = common::client(&builder.build());
                let mut took = Vec::with_capacity(REQUESTS);
                for timed in [false, true] {
                    for _ in 0..REQUESTS {
                        let started = Instant::now();
                        let resp = client.get(&url).send().await?;
                        if resp.status() != 200 {
                            return Err(format!("answered {}", resp.status()).into());
                        }
                        if timed {
                            took.push(started.elapsed());
                        }
                    }
                }
                took.sort();
                let store = if shared { "RedisStore" } else { "none" };
                let (median, p90) = (took[REQUESTS / 2], took[REQUESTS * 9 / 10]);
                let (median, p90) = (median.as_micros(), p90.as_micros());
                println!("| {round} | {name} | {store} | {median} µs | {p90} µs |");
            }
        }
    }
    Ok(())
}
