//! The whole middleware's overhead on a loopback GET, next to bare reqwest, an empty
//! reqwest-middleware stack and reqwest-retry.
//!
//! The server (hyper, HTTP/1, its own thread and runtime) answers 200 "ok" at once, so the
//! figures are the client stack's cost plus one loopback round trip. Every client is built once
//! and reused: the connection stays pooled and kept alive. `polite_with_limit` has a limit so
//! high that a slot is always free: it measures the pacing overhead, not waiting.
//!
//! Run: `cargo bench --bench middleware -- --warm-up-time 1 --measurement-time 3`

#[path = "support/loopback.rs"]
mod loopback;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use reqwest_middleware::ClientWithMiddleware;
use tokio::runtime::Runtime;

/// Requests sent through each client before measuring. `Polite::new()` has no limit, so its
/// first contact with a host is a learning phase (a concurrency window that grows over the
/// first few hundred answers) before the host counts as unmetered; 1000 sequential requests
/// take every client past it, so the steady state is what is measured.
const WARM_UP_REQUESTS: usize = 1000;

async fn get_bare(client: &reqwest::Client, url: &str) -> Bytes {
    let resp = client.get(url).send().await.expect("bare GET");
    resp.bytes().await.expect("bare body")
}

async fn get_stack(client: &ClientWithMiddleware, url: &str) -> Bytes {
    let resp = client.get(url).send().await.expect("middleware GET");
    resp.bytes().await.expect("middleware body")
}

fn middleware(c: &mut Criterion) {
    let addr = loopback::serve_ok();
    let url = format!("http://{addr}/x");
    let rt: Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");

    let bare = reqwest::Client::new();
    let (polite, stacks) = loopback::stacks();

    // Warm up every client (connection, pool, and Polite's learning phase); check each answers.
    rt.block_on(async {
        for _ in 0..WARM_UP_REQUESTS {
            assert_eq!(&get_bare(&bare, &url).await[..], b"ok");
        }
        for (name, client) in &stacks {
            for _ in 0..WARM_UP_REQUESTS {
                assert_eq!(&get_stack(client, &url).await[..], b"ok", "{name}");
            }
        }
    });
    let hosts = polite.snapshot();
    assert_eq!(hosts.len(), 1, "one host");
    assert_eq!(hosts[0].in_flight, 0, "nothing left in flight");
    assert_eq!(hosts[0].cooldown_in, None, "no cooldown");

    let mut group = c.benchmark_group("middleware");
    group.bench_function("bare_reqwest", |b| {
        b.to_async(&rt).iter(|| get_bare(&bare, &url))
    });
    for (name, client) in &stacks {
        group.bench_function(*name, |b| b.to_async(&rt).iter(|| get_stack(client, &url)));
    }
    group.finish();
}

criterion_group!(benches, middleware);
criterion_main!(benches);
