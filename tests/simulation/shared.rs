//! Worlds whose processes share their quotas through a real redis-server (feature `redis`):
//! two or three `Polite`s, each with its own connection, stand for the processes of a fleet.
//! Redis keeps its own clock, so these worlds run on real time: few, and a few seconds each.
//! Their breakers are off (a breaker is each process's own), and their records are not
//! swept (that takes idle time); every other check runs as in the paused worlds.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use reqwest_polite::{Backoff, Breaker, Limit, RedisStore, Retryable};

use super::checks::{self, SECRETS, Violation};
use super::load;
use super::observer::SimObserver;
use super::server::{Log, SimServer, lock};
use super::world::{
    Body, Config, Configured, Dialect, LimitOn, Quota, Request, RetryAfterForm, SECRET_MARK,
    Server, World,
};
use crate::Run;

/// Worlds run by `cargo test --features redis`.
pub const DEFAULT_SEEDS: u64 = 4;

/// A fleet's world drawn from `seed`: one or two authorities of one host, one configured
/// limit of a second or two, servers that keep it or half of it, a second or two of load.
pub fn generate(seed: u64) -> World {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x7ed1_5000);
    let kept = rng.random_bool(0.3);
    let authorities: Vec<String> = match rng.random_bool(0.5) {
        true if !kept => vec!["a.sim:8080".into(), "a.sim:8081".into()],
        _ => vec!["a.sim:8080".into()],
    };
    let n = [2, 5, 10, 20][rng.random_range(0..4)];
    let w = Duration::from_secs(rng.random_range(1..=2));
    let on = match rng.random_range(0..3) {
        0 => LimitOn::Default,
        1 => LimitOn::Authority(authorities[0].clone()),
        _ => LimitOn::Host("a.sim".into()),
    };
    let partitioned = !kept && rng.random_bool(0.5);
    let config = Config {
        limits: vec![Configured {
            limit: Limit::per(n, w),
            on,
        }],
        partitioned,
        max_in_flight: rng.random_bool(0.3).then(|| rng.random_range(1..=4)),
        max_retries: rng.random_range(0..=3),
        retryable: Retryable::SafeOnly,
        budget: "default",
        breaker: Breaker::disabled(),
        probes: 1,
        backoff: Backoff::exponential(Duration::from_millis(10), Duration::from_millis(200)),
        max_retry_after: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(60),
    };
    let retry_after = match rng.random_bool(0.5) {
        true => RetryAfterForm::Seconds,
        false => RetryAfterForm::None,
    };
    let quota = if kept || rng.random_bool(0.6) {
        n
    } else {
        (n / 2).max(1)
    };
    // the server's window is shorter by what a timer on real time may be late
    let server = Server {
        quota: Quota::Sliding {
            n: quota,
            w: w - Duration::from_millis(50),
        },
        per_credential: partitioned,
        counts_refused: false,
        refusal_status: 429,
        retry_after,
        dialect: [
            Dialect::None,
            Dialect::XRateLimitDelta,
            Dialect::IetfSeparate,
        ][rng.random_range(0..3)],
        error_rate: if kept {
            0.0
        } else {
            [0.0, 0.1][rng.random_range(0..2)]
        },
        burst_5xx: None,
        outage: None,
        outage_retry_after: false,
        outage_resets: false,
        hang_rate: 0.0,
        slowest: Duration::from_millis(rng.random_range(0..=20)),
        stripe_rate: 0.0,
        named: None,
    };
    let credentials: Vec<String> = (0..rng.random_range(1..=3))
        .map(|i| format!("Bearer {SECRET_MARK}-{seed}-{i}"))
        .collect();
    let count = if kept {
        rng.random_range(2 * n..=3 * n)
    } else {
        rng.random_range(10..=40)
    };
    let requests = (0..count)
        .map(|id| {
            let method = match rng.random_range(0..4) {
                _ if kept => http::Method::GET,
                0 => http::Method::POST,
                1 => http::Method::PUT,
                _ => http::Method::GET,
            };
            Request {
                id,
                at: if kept {
                    Duration::ZERO
                } else {
                    Duration::from_millis(rng.random_range(0..1500))
                },
                authority: authorities[rng.random_range(0..authorities.len())].clone(),
                path: "/items/1",
                method,
                idempotency_key: false,
                credential: Some(rng.random_range(0..credentials.len())),
                body: Body::None,
                cost: None,
                units: None,
                deadline: (!kept && rng.random_bool(0.3))
                    .then(|| Duration::from_millis(rng.random_range(500..3000))),
                no_retry: false,
                cancel_after: (!kept && rng.random_bool(0.05))
                    .then(|| Duration::from_millis(rng.random_range(0..1000))),
            }
        })
        .collect();
    let servers = authorities.iter().map(|_| server.clone()).collect();
    World {
        seed,
        config,
        authorities,
        servers,
        credentials,
        requests,
        relimits: Vec::new(),
        real_time: true,
        kept,
    }
}

/// Run the fleet's world `seed` against the redis-server at `url`.
pub fn run_world(seed: u64, url: &str, client: &reqwest::Client) -> Run {
    let world = Arc::new(generate(seed));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(async {
        let log = Arc::new(Mutex::new(Log::new(seed)));
        let processes = 2 + (seed % 2) as usize;
        let (mut polites, mut clients) = (Vec::new(), Vec::new());
        for _ in 0..processes {
            let store = RedisStore::connect(url)
                .await
                .expect("our redis-server answers")
                .prefix(format!("sim{seed}"))
                .timeout(Duration::from_secs(1));
            let observer = SimObserver {
                world: Arc::clone(&world),
                log: Arc::clone(&log),
            };
            let polite = world.builder(observer).store(store).build();
            let server = SimServer {
                world: Arc::clone(&world),
                log: Arc::clone(&log),
            };
            let client = reqwest_middleware::ClientBuilder::new(client.clone())
                .with(polite.clone())
                .with(server)
                .build();
            polites.push(polite);
            clients.push(client);
        }
        let horizon = Duration::from_secs(60);
        let ended = load::run(&world, &polites[0], &clients, &log, horizon).await;
        let mut found = checks::after_load(&world, &lock(&log), &ended);
        for polite in &polites {
            let shown = format!("{:?} {:?}", polite.snapshot(), polite.scope_snapshot());
            if shown.contains(SECRET_MARK) {
                let detail = "a credential in a snapshot".to_string();
                found.push(Violation {
                    check: SECRETS,
                    detail,
                });
            }
        }
        Run {
            found,
            trace: std::mem::take(&mut lock(&log).trace),
            fingerprint: Vec::new(),
        }
    })
}
