//! A measuring harness: a fleet of worker processes sharing one quota through Redis (feature
//! `redis`), next to the same fleet without the store and to governor. For the program a user
//! would write, see `examples/shared_quota.rs`.
//!
//! ```text
//! cargo run --release --features redis --example fleet            # 3 workers
//! cargo run --release --features redis --example fleet -- 5      # 5 workers
//! ```
//!
//! Everything runs on loopback: the example starts its own `redis-server` (from PATH, on a free
//! port, no persistence) and an embedded HTTP server that is a strict sliding window of
//! `QUOTA` requests per second (a 429 beyond it). It then runs itself N times as worker
//! processes; each builds its client with the quota and sends its `REQUESTS` at once. Three
//! fleets run one after the other, each against a fresh server: ours with a `RedisStore` on
//! that Redis (one shared schedule), ours without a store, and governor with the quota (burst
//! 1, one limiter per process). Pacing alone, N processes send N times the quota; sharing one
//! schedule, the fleet should see no refusal and use the quota. The share printed is the one
//! `examples/throughput.rs` prints, `(accepted − 1) / (quota × span)`, the span running from the
//! first to the last accepted arrival at the server.

#[path = "throughput/limiters.rs"]
#[allow(dead_code)] // the throughput harness's limiters; this example uses one
mod limiters;

use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::num::NonZeroU32;

use futures::future::join_all;
use governor::{Quota, RateLimiter};
use reqwest_polite::{Limit, Polite, RedisStore};

use crate::limiters::{Reply, Rule, Server, SlidingWindow};

/// The server's quota, per second; every worker is configured with it.
const QUOTA: u32 = 100;
/// Requests each worker sends, all at once.
const REQUESTS: usize = 200;
/// Worker processes, unless the first argument says otherwise.
const WORKERS: usize = 3;

type Failure = Box<dyn std::error::Error>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.first().map(String::as_str) {
        Some("worker") => worker(&args[1..]),
        Some(n) => match n.parse::<usize>() {
            Ok(n) if n > 0 => coordinate(n),
            _ => Err(format!("usage: fleet [number of workers, default {WORKERS}]").into()),
        },
        None => coordinate(WORKERS),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("fleet: {err}");
            ExitCode::FAILURE
        }
    }
}

/// What each worker process paces with.
#[derive(Debug, Clone, Copy)]
enum Client {
    /// Ours, the quota shared through Redis.
    Shared,
    /// Ours, each process on its own (no store): N processes, N times the quota.
    Alone,
    /// governor with the quota (burst 1), one limiter per process, and bare reqwest.
    Governor,
}

impl Client {
    const ALL: [Client; 3] = [Client::Shared, Client::Alone, Client::Governor];

    fn arg(self) -> &'static str {
        match self {
            Client::Shared => "shared",
            Client::Alone => "alone",
            Client::Governor => "governor",
        }
    }

    fn parse(arg: &str) -> Option<Client> {
        Client::ALL.into_iter().find(|c| c.arg() == arg)
    }

    fn label(self) -> &'static str {
        match self {
            Client::Shared => "polite + RedisStore",
            Client::Alone => "polite, no store",
            Client::Governor => "governor burst 1",
        }
    }
}

/// The coordinator: Redis, then for each client a fresh server and N workers, and the report.
fn coordinate(workers: usize) -> Result<(), Failure> {
    let redis = RedisServer::start()?;
    println!(
        "{workers} worker processes × {REQUESTS} requests at once, each configured with the one \
         quota of {QUOTA}/s; the server is a strict sliding window of {QUOTA} per 1 s"
    );
    let mut summary = Vec::new();
    for client in Client::ALL {
        let line = run_fleet(&redis, client, workers)?;
        summary.push(format!("| {} | {line}", client.label()));
    }
    println!(
        "\n| client | accepted | refused at the server | failed requests | share of the quota \
         used | most accepted in any 1 s |\n|---|---|---|---|---|---|"
    );
    for line in summary {
        println!("{line}");
    }
    drop(redis);
    Ok(())
}

/// One fleet of `workers` processes pacing with `client` against a fresh server: prints the
/// per-worker table, and returns the summary row (after the client's column).
fn run_fleet(redis: &RedisServer, client: Client, workers: usize) -> Result<String, Failure> {
    let rule = Arc::new(PerWorker::new(workers));
    let server = Server::start(rule.clone())?;
    let exe = std::env::current_exe()?;
    // every worker connects first, then all start at this instant (the wall clock, which the
    // processes of one machine share): "at once" for the fleet, not per process
    let start_at = SystemTime::now().duration_since(UNIX_EPOCH)? + Duration::from_secs(2);
    let mut children = Workers(Vec::with_capacity(workers));
    for id in 0..workers {
        let child = Command::new(&exe)
            .arg("worker")
            .arg(client.arg())
            .arg(redis.url())
            .arg(server.url())
            .arg(id.to_string())
            .arg(start_at.as_millis().to_string())
            .stdout(Stdio::piped())
            .spawn()?;
        children.0.push(child);
    }
    let mut walls = Vec::with_capacity(workers);
    for id in 0..workers {
        // taken out one at a time: those still in `children` are killed if this one fails
        let output = children.0.remove(0).wait_with_output()?;
        let text = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            return Err(format!("worker {id} failed ({}): {text}", output.status).into());
        }
        // the worker's one line: its wall time and its requests that failed
        let mut line = text.split_whitespace();
        let (wall, errors) = (line.next().unwrap_or("?"), line.next().unwrap_or("?"));
        walls.push((wall.to_string(), errors.parse::<usize>().unwrap_or(0)));
    }

    let counts = rule.counts();
    let arrivals = server.arrivals();
    let accepted: Vec<Instant> = arrivals
        .iter()
        .filter(|a| a.status < 400)
        .map(|a| a.at)
        .collect();
    let refused = arrivals.iter().filter(|a| a.status == 429).count();
    let failed: usize = walls.iter().map(|(_, errors)| errors).sum();
    println!(
        "\n{}\n| worker | accepted | refused | failed | wall (s) |\n|---|---|---|---|---|",
        client.label()
    );
    for (id, ([ok, no], (wall, errors))) in counts.iter().zip(&walls).enumerate() {
        println!("| {id} | {ok} | {no} | {errors} | {wall} |");
    }
    let (first, last) = match (accepted.first(), accepted.last()) {
        (Some(&first), Some(&last)) if last > first => (first, last),
        _ => return Err("fewer than two requests were accepted: nothing to measure".into()),
    };
    let span = last - first;
    let share = (accepted.len() - 1) as f64 / (f64::from(QUOTA) * span.as_secs_f64());
    let most = most_in_any(&accepted, Duration::from_secs(1));
    println!(
        "| fleet | {} | {refused} | {failed} | {:.2} (first to last accepted) |",
        accepted.len(),
        span.as_secs_f64()
    );
    println!(
        "refusals: {refused}; share of the quota used: {:.1}%; most accepted in any 1 s window: \
         {most} (quota {QUOTA})",
        share * 100.0,
    );
    Ok(format!(
        "{} | {refused} | {failed} | {:.1}% | {most} |",
        accepted.len(),
        share * 100.0
    ))
}

/// A worker process: `worker <client> <redis-url> <server-url> <id> <start, ms since the
/// epoch>`. Prints its wall time, from the common start to its last answer, and how many of
/// its requests failed (no answer, refused by the middleware, or a 429 returned).
fn worker(args: &[String]) -> Result<(), Failure> {
    let [client, redis_url, server_url, id, start_at] = args else {
        return Err(
            "usage: fleet worker <shared|alone|governor> <redis-url> <server-url> <id> <start-ms>"
                .into(),
        );
    };
    let client = Client::parse(client).ok_or("unknown client")?;
    let start_at = Duration::from_millis(start_at.parse()?);
    // one thread per worker: the processes are the fleet's parallelism, and on a small
    // machine fewer threads contend for its cores
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let host = server_url
            .trim_start_matches("http://")
            .trim_end_matches('/');
        let url = format!("{server_url}w/{id}");
        let quota = Limit::per_second(QUOTA); // the whole quota: Redis shares it, or not
        let send: Box<dyn Fn() -> futures::future::BoxFuture<'static, bool>> = match client {
            Client::Shared | Client::Alone => {
                let mut polite = Polite::builder().host_limit(host, quota);
                if let Client::Shared = client {
                    polite = polite.store(
                        RedisStore::connect(redis_url)
                            .await?
                            .prefix("fleet-example"),
                    );
                }
                let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
                    .with(polite.build())
                    .build();
                Box::new(move || {
                    let (client, url) = (client.clone(), url.clone());
                    Box::pin(async move {
                        matches!(client.get(&url).send().await, Ok(r) if r.status().is_success())
                    })
                })
            }
            Client::Governor => {
                let per_second = NonZeroU32::new(QUOTA).ok_or("a zero quota")?;
                let limiter = Arc::new(RateLimiter::direct(
                    Quota::per_second(per_second).allow_burst(NonZeroU32::MIN),
                ));
                let client = reqwest::Client::new();
                Box::new(move || {
                    let (client, url, limiter) = (client.clone(), url.clone(), limiter.clone());
                    Box::pin(async move {
                        limiter.until_ready().await;
                        matches!(client.get(&url).send().await, Ok(r) if r.status().is_success())
                    })
                })
            }
        };
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
        tokio::time::sleep(start_at.saturating_sub(now)).await;
        let started = Instant::now();
        let results = join_all((0..REQUESTS).map(|_| send())).await;
        let wall = started.elapsed();
        let errors = results.iter().filter(|ok| !**ok).count();
        println!("{:.2} {errors}", wall.as_secs_f64());
        Ok(())
    })
}

/// The server's rule: a strict sliding window, counting what it accepted and refused per
/// worker (the path `/w/<id>` names the worker).
struct PerWorker {
    window: SlidingWindow,
    counts: Mutex<Vec<[usize; 2]>>,
}

impl PerWorker {
    fn new(workers: usize) -> PerWorker {
        PerWorker {
            window: SlidingWindow::new(QUOTA, Duration::from_secs(1)),
            counts: Mutex::new(vec![[0; 2]; workers]),
        }
    }

    /// Accepted and refused, per worker.
    fn counts(&self) -> Vec<[usize; 2]> {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Rule for PerWorker {
    fn reply(&self, now: Instant) -> Reply {
        self.window.reply(now)
    }

    fn reply_to(&self, now: Instant, path: &str, _: &http::HeaderMap) -> Reply {
        let reply = self.window.reply(now);
        let worker = path
            .strip_prefix("/w/")
            .and_then(|id| id.parse::<usize>().ok());
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = worker.and_then(|id| counts.get_mut(id)) {
            count[usize::from(reply.status == 429)] += 1;
        }
        reply
    }
}

/// The most instants of `sorted` within any `window`.
fn most_in_any(sorted: &[Instant], window: Duration) -> usize {
    let mut most = 0;
    let mut from = 0;
    for (to, &t) in sorted.iter().enumerate() {
        while t.duration_since(sorted[from]) >= window {
            from += 1;
        }
        most = most.max(to + 1 - from);
    }
    most
}

#[path = "../tests/support/redis_server.rs"]
mod redis_server; // killed on drop, so also when the example fails half-way
use redis_server::RedisServer;

/// The worker processes still running: killed on drop (when the coordinator fails half-way).
struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
