//! The middleware's overhead on a loopback GET, measured so that a noisy machine cancels out:
//! the clients take turns, round after round, and each round's time is divided by bare
//! reqwest's in the same round. Reported: the median of those ratios, in wall time and in CPU
//! time (the whole process's, client and server, from Linux's per-thread scheduler statistics;
//! CPU time does not count the time the VM's other tenants take, which wall time does).
//!
//! Run: `cargo bench --bench overhead` (Linux; `OVERHEAD_ROUNDS` and `OVERHEAD_REQUESTS` set
//! the size, 30 rounds of 2000 requests per client by default)
//!
//! `OVERHEAD_IN_PROCESS=1`: no network. Every stack ends with a middleware that answers 200
//! "ok" itself, and the ratios are to the empty stack's: what the middleware's own code costs,
//! a difference the loopback round trip's noise (a few µs between runs) hides.

#[path = "support/loopback.rs"]
mod loopback;

use std::time::Instant;

use http::Extensions;
use reqwest::{Request, Response};
use reqwest_middleware::{ClientWithMiddleware, Middleware, Next};

/// Answers 200 "ok" without sending (the end of every stack with `OVERHEAD_IN_PROCESS=1`), with
/// the two headers the loopback server's answers carry.
struct AnswerHere;

#[async_trait::async_trait]
impl Middleware for AnswerHere {
    async fn handle(
        &self,
        _req: Request,
        _extensions: &mut Extensions,
        _next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let answer = http::Response::builder()
            .header("content-length", "2")
            .header("date", "Mon, 30 Nov 2026 03:00:00 GMT")
            .body("ok")
            .expect("a valid answer");
        Ok(Response::from(answer))
    }
}

/// Nanoseconds every thread of this process has run on a CPU (`/proc/self/task/*/schedstat`).
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

enum Client<'a> {
    Bare(&'a reqwest::Client),
    Stack(&'a ClientWithMiddleware),
}

impl Client<'_> {
    async fn get(&self, url: &str) {
        let body = match self {
            Client::Bare(c) => c.get(url).send().await.expect("GET").bytes().await,
            Client::Stack(c) => c.get(url).send().await.expect("GET").bytes().await,
        };
        assert_eq!(&body.expect("body")[..], b"ok");
    }
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported
    let rounds = env("OVERHEAD_ROUNDS", 30);
    let requests = env("OVERHEAD_REQUESTS", 2000);
    let addr = loopback::serve_ok();
    let url = format!("http://{addr}/x");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");

    let bare = reqwest::Client::new();
    let in_process = std::env::var_os("OVERHEAD_IN_PROCESS").is_some();
    let (_, stacks) = match in_process {
        false => loopback::stacks(),
        true => loopback::stacks_ending_with(|stack| stack.with(AnswerHere)),
    };
    let clients: Vec<(&str, Client<'_>)> = std::iter::once(("bare_reqwest", Client::Bare(&bare)))
        .filter(|_| !in_process)
        .chain(stacks.iter().map(|(name, c)| (*name, Client::Stack(c))))
        .collect();

    // `OVERHEAD_ONLY=name`: that client alone, for a profiler (the ratios are then to itself)
    let only = std::env::var("OVERHEAD_ONLY").ok();
    let clients: Vec<_> = clients
        .into_iter()
        .filter(|(name, _)| only.as_deref().is_none_or(|o| o == *name))
        .collect();

    // warm up: connections, pools, and Polite's learning phase with a new host
    rt.block_on(async {
        for (_, client) in &clients {
            for _ in 0..1000 {
                client.get(&url).await;
            }
        }
    });

    // (wall, cpu) per request, per client, per round
    let mut per_round: Vec<Vec<(f64, f64)>> = vec![Vec::new(); clients.len()];
    for round in 0..rounds {
        // rotate who goes first, so no client always follows the same one
        for k in 0..clients.len() {
            let i = (k + round) % clients.len();
            let (_, client) = &clients[i];
            let (wall0, cpu0) = (Instant::now(), cpu_nanos());
            rt.block_on(async {
                for _ in 0..requests {
                    client.get(&url).await;
                }
            });
            let wall = wall0.elapsed().as_secs_f64() * 1e6 / requests as f64;
            let cpu = (cpu_nanos() - cpu0) as f64 / 1e3 / requests as f64;
            per_round[i].push((wall, cpu));
        }
    }

    let (answered, first) = match in_process {
        false => ("on loopback", "bare"),
        true => ("answered in the process", "the empty stack"),
    };
    println!(
        "{rounds} rounds x {requests} sequential GETs per client {answered}; medians over rounds"
    );
    println!(
        "| client | wall per request | vs {first} (median of per-round ratios) | CPU per request | vs {first} |"
    );
    println!("|---|---|---|---|---|");
    for (i, (name, _)) in clients.iter().enumerate() {
        let wall = median(per_round[i].iter().map(|r| r.0).collect());
        let cpu = median(per_round[i].iter().map(|r| r.1).collect());
        let ratio = |f: fn(&(f64, f64)) -> f64| {
            median(
                per_round[i]
                    .iter()
                    .zip(&per_round[0])
                    .map(|(r, b)| f(r) / f(b))
                    .collect(),
            )
        };
        println!(
            "| `{name}` | {wall:.1} µs | {:.3}x | {cpu:.1} µs | {:.3}x |",
            ratio(|r| r.0),
            ratio(|r| r.1)
        );
    }
}
