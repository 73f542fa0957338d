//! A deterministic simulation: the real middleware against simulated servers, on tokio's
//! paused clock, over many random worlds (configuration, servers, faults and load all drawn
//! from one seed), with every promise of the crate checked in each.
//!
//! `POLITE_SIM_SEEDS=N` runs N worlds (default [`DEFAULT_SEEDS`]), from seed
//! `POLITE_SIM_FIRST_SEED` (default 0); `POLITE_SIM_TRACE=1` prints the whole trace of each
//! world that breaks a promise, `POLITE_SIM_TRACING=1` prints it as it happens among the
//! middleware's own tracing events. With feature `redis`, `POLITE_SIM_REDIS_SEEDS` worlds
//! (default `shared::DEFAULT_SEEDS`) share their quotas through a redis-server of their own,
//! on real time. The last line printed is `SIMULATION seeds=N violations=V`;
//! the run fails when V > 0.

#[path = "simulation/answers.rs"]
mod answers;
#[path = "simulation/checks.rs"]
mod checks;
#[path = "simulation/generate.rs"]
mod generate;
#[path = "simulation/limits.rs"]
mod limits;
#[path = "simulation/load.rs"]
mod load;
#[path = "simulation/observer.rs"]
mod observer;
#[cfg(feature = "redis")]
#[path = "support/redis_server.rs"]
mod redis_server;
#[path = "simulation/server.rs"]
mod server;
#[cfg(feature = "redis")]
#[path = "simulation/shared.rs"]
mod shared;
#[path = "simulation/world.rs"]
mod world;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use checks::Violation;
use observer::SimObserver;
use server::{Log, SimServer, lock};
use world::World;

/// One world in this many is run twice, and must replay exactly.
const REPLAY_EVERY: u64 = 25;

/// Worlds run by a plain `cargo test`.
const DEFAULT_SEEDS: u64 = 1000;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// How long the load of `world` may run, on the paused clock, before a request still running
/// counts as hung: far past every wait the configuration allows.
fn horizon(world: &World) -> Duration {
    let c = &world.config;
    let attempts = c.max_retries + 1;
    let widest = c.limits.iter().map(|l| l.limit.window()).max();
    let per_slot = widest.unwrap_or_default() * 3 + Duration::from_secs(60);
    let per_attempt = c.max_retry_after + c.backoff.max() + world::HANG;
    let slots = world.requests.len() as u32 * attempts;
    Duration::from_secs(24 * 3600) + per_slot * slots + per_attempt * attempts
}

/// What one world did: its violations, its trace, and what reached its servers (request,
/// nanoseconds from the start, status), which a replay of the seed must repeat exactly.
pub struct Run {
    pub found: Vec<Violation>,
    pub trace: Vec<String>,
    pub fingerprint: Vec<(u32, u128, Option<u16>)>,
}

/// Run one world.
fn run_world(seed: u64, client: &reqwest::Client) -> Run {
    let world = Arc::new(world::generate(seed));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(async {
        let log = Arc::new(Mutex::new(Log::new(seed)));
        let observer = SimObserver {
            world: Arc::clone(&world),
            log: Arc::clone(&log),
        };
        let polite = world.polite(observer);
        let client = reqwest_middleware::ClientBuilder::new(client.clone())
            .with(polite.clone())
            .with(SimServer {
                world: Arc::clone(&world),
                log: Arc::clone(&log),
            })
            .build();
        let ended = load::run(
            &world,
            &polite,
            std::slice::from_ref(&client),
            &log,
            horizon(&world),
        )
        .await;
        let mut found = checks::after_load(&world, &lock(&log), &ended);
        found.extend(checks::swept(&world, &polite, &log, &client).await);
        let mut log = lock(&log);
        let fingerprint = log
            .starts
            .iter()
            .map(|s| {
                let status = s.answer.and_then(|a| a.status);
                (s.request, (s.at - log.t0).as_nanos(), status)
            })
            .collect();
        Run {
            found,
            trace: std::mem::take(&mut log.trace),
            fingerprint,
        }
    })
}

/// What the worlds broke so far, by check.
#[derive(Default)]
struct Tally {
    violations: usize,
    by_check: std::collections::BTreeMap<&'static str, Vec<u64>>,
}

impl Tally {
    /// Print what world `seed` (described by `summary`) broke, with the end of its trace.
    fn report(&mut self, seed: u64, summary: impl FnOnce() -> String, run: &Run, full: bool) {
        if run.found.is_empty() {
            return;
        }
        println!("seed {seed}: {}", summary());
        for v in &run.found {
            println!("  VIOLATION {} (seed {seed}): {}", v.check, v.detail);
            self.by_check.entry(v.check).or_default().push(seed);
        }
        let shown = if full { run.trace.len() } else { 12 };
        for line in &run.trace[run.trace.len().saturating_sub(shown)..] {
            println!("    {line}");
        }
        self.violations += run.found.len();
    }
}

/// Run world `seed` with `run`; a panic is a violation of promise 6.
fn guarded(run: impl FnOnce() -> Run) -> Run {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).unwrap_or_else(|_| Run {
        found: vec![Violation {
            check: checks::SECRETS,
            detail: "the world panicked".into(),
        }],
        trace: Vec::new(),
        fingerprint: Vec::new(),
    })
}

/// The worlds whose processes share a redis-server of their own (`POLITE_SIM_REDIS_SEEDS`);
/// how many ran.
#[cfg(feature = "redis")]
fn run_shared(first: u64, client: &reqwest::Client, tally: &mut Tally, full_trace: bool) -> u64 {
    let shared = env_u64("POLITE_SIM_REDIS_SEEDS", shared::DEFAULT_SEEDS);
    let started = std::time::Instant::now();
    let redis = redis_server::RedisServer::start().expect("a redis-server of our own");
    for seed in first..first + shared {
        let run = guarded(|| shared::run_world(seed, &redis.url(), client));
        let summary = || world::summary(&shared::generate(seed));
        tally.report(seed, summary, &run, full_trace);
    }
    let took = started.elapsed().as_secs_f64();
    eprintln!("{shared} worlds sharing Redis in {took:.1} s");
    shared
}

fn main() {
    let seeds = env_u64("POLITE_SIM_SEEDS", DEFAULT_SEEDS);
    let first = env_u64("POLITE_SIM_FIRST_SEED", 0);
    let full_trace = std::env::var_os("POLITE_SIM_TRACE").is_some();
    if std::env::var_os("POLITE_SIM_TRACING").is_some() {
        // the middleware's own tracing events, for replaying one seed
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .without_time()
            .init();
    }
    let client = reqwest::Client::new();
    let started = std::time::Instant::now();
    let mut tally = Tally::default();
    for seed in first..first + seeds {
        let mut run = guarded(|| run_world(seed, &client));
        // one world in REPLAY_EVERY runs twice: a seed must replay exactly
        let replayed = seed % REPLAY_EVERY == 0 && !world::generate(seed).reads_wall_clock();
        if replayed && guarded(|| run_world(seed, &client)).fingerprint != run.fingerprint {
            run.found.push(Violation {
                check: "0 replays_exactly",
                detail: "a second run of the seed reached the servers differently".into(),
            });
        }
        tally.report(
            seed,
            || world::summary(&world::generate(seed)),
            &run,
            full_trace,
        );
    }
    eprintln!("{seeds} worlds in {:.1} s", started.elapsed().as_secs_f64());
    #[cfg(feature = "redis")]
    let shared = run_shared(first, &client, &mut tally, full_trace);
    #[cfg(not(feature = "redis"))]
    let shared = 0;
    let worlds = seeds + shared;
    for (check, seeds) in &tally.by_check {
        println!(
            "{check}: {} worlds, first seeds {:?}",
            seeds.len(),
            &seeds[..seeds.len().min(10)]
        );
    }
    let violations = tally.violations;
    println!("SIMULATION seeds={worlds} violations={violations}");
    if violations > 0 {
        std::process::exit(1);
    }
}
