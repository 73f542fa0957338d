//! Drawing a world from its seed: configuration, servers, faults, load and run-time changes.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use reqwest_polite::{Backoff, Breaker, Jitter, Limit, Retryable};

use super::world::{
    Body, Config, Configured, Dialect, HOSTS, LimitOn, Named, PATHS, PORTS, Quota, Relimit,
    Request, RetryAfterForm, SECRET_MARK, Server, World,
};

fn pick<T: Copy>(rng: &mut SmallRng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

fn millis(rng: &mut SmallRng, from: u64, to: u64) -> Duration {
    Duration::from_millis(rng.random_range(from..=to))
}

fn random_limit(rng: &mut SmallRng) -> Limit {
    let n = pick(rng, &[1, 2, 3, 5, 10, 20, 50]);
    let w = pick(rng, &[100, 1000, 2000, 10_000, 60_000]);
    let limit = Limit::per(n, Duration::from_millis(w));
    if rng.random_bool(0.3) {
        limit.burst(rng.random_range(1..=n))
    } else {
        limit
    }
}

/// Draw a world from `seed`.
pub fn generate(seed: u64) -> World {
    let mut rng = SmallRng::seed_from_u64(seed);
    if rng.random_bool(0.2) {
        return kept_world(seed, &mut rng);
    }
    let mut authorities: Vec<String> = Vec::new();
    for _ in 0..rng.random_range(1..=3) {
        let a = format!("{}:{}", pick(&mut rng, &HOSTS), pick(&mut rng, &PORTS));
        if !authorities.contains(&a) {
            authorities.push(a);
        }
    }
    let config = random_config(&mut rng, &authorities);
    let servers = authorities
        .iter()
        .map(|_| random_server(&mut rng, &config))
        .collect();
    let credentials = (0..pick(&mut rng, &[1, 2, 3, 6, 40]))
        .map(|i| format!("Bearer {SECRET_MARK}-{seed}-{i}"))
        .collect();
    let mut world = World {
        seed,
        config,
        authorities,
        servers,
        credentials,
        requests: Vec::new(),
        relimits: Vec::new(),
        real_time: false,
        kept: false,
    };
    world.relimits = random_relimits(&mut rng, &world);
    world.requests = random_load(&mut rng, &world);
    world
}

fn random_config(rng: &mut SmallRng, authorities: &[String]) -> Config {
    let mut limits = Vec::new();
    let a = &authorities[0];
    let host = a.split(':').next().unwrap_or_default().to_owned();
    let mut add = |rng: &mut SmallRng, p: f64, on: LimitOn| {
        if rng.random_bool(p) {
            limits.push(Configured {
                limit: random_limit(rng),
                on,
            });
        }
    };
    add(rng, 0.5, LimitOn::Default);
    add(rng, 0.3, LimitOn::Host(host.clone()));
    add(rng, 0.25, LimitOn::Authority(a.clone()));
    add(rng, 0.25, LimitOn::Route(host.clone(), "/search/".into()));
    add(rng, 0.2, LimitOn::Units(host));
    let base = millis(rng, 10, 500);
    let backoff = Backoff::exponential(base, base * rng.random_range(1..=60)).jitter(pick(
        rng,
        &[
            Jitter::None,
            Jitter::Full,
            Jitter::Equal,
            Jitter::Decorrelated,
        ],
    ));
    let open_for = millis(rng, 100, 10_000);
    let breaker = match rng.random_range(0..10) {
        0..=3 => Breaker::default(),
        4 | 5 => Breaker::disabled(),
        6..=8 => Breaker::consecutive_failures(rng.random_range(1..=5)).open_for(open_for),
        _ => Breaker::failure_rate(0.5, rng.random_range(4..=10), Duration::from_secs(10))
            .open_for(open_for),
    };
    let probes = rng.random_range(1..=3);
    let breaker = breaker.half_open_probes(probes);
    Config {
        limits,
        partitioned: rng.random_bool(0.4),
        max_in_flight: rng.random_bool(0.3).then(|| rng.random_range(1..=4)),
        max_retries: rng.random_range(0..=4),
        retryable: match rng.random_range(0..20) {
            0..=13 => Retryable::SafeOnly,
            14..=16 => Retryable::Always,
            _ => Retryable::Never,
        },
        budget: pick(rng, &["default", "default", "unlimited", "tight"]),
        breaker,
        probes,
        backoff,
        max_retry_after: Duration::from_secs(pick(rng, &[1, 5, 30, 120, 600])),
        idle_timeout: Duration::from_secs(pick(rng, &[1, 10, 60, 300])),
    }
}

fn random_quota(rng: &mut SmallRng, n: u32, w: Duration) -> Quota {
    match rng.random_range(0..10) {
        0..=3 => Quota::Sliding { n, w },
        4..=6 => Quota::Fixed { n, w },
        _ => Quota::Leaky {
            n,
            w,
            burst: rng.random_range(0..=n),
        },
    }
}

fn random_server(rng: &mut SmallRng, config: &Config) -> Server {
    let configured = config.limits.first().map(|c| c.limit);
    let quota = match (rng.random_range(0..20), configured) {
        (0..=5, _) => Quota::None,
        (6..=12, Some(l)) => random_quota(rng, l.count(), l.window()),
        (13..=16, Some(l)) => random_quota(rng, (l.count() / 2).max(1), l.window()),
        _ => {
            let n = pick(rng, &[1, 3, 10, 30]);
            let w = Duration::from_millis(pick(rng, &[1000, 5000, 60_000]));
            random_quota(rng, n, w)
        }
    };
    let window = |rng: &mut SmallRng| {
        let from = millis(rng, 0, 60_000);
        (from, from + millis(rng, 100, 30_000))
    };
    Server {
        quota,
        per_credential: config.partitioned && rng.random_bool(0.7),
        counts_refused: rng.random_bool(0.3),
        refusal_status: pick(rng, &[429, 429, 429, 403, 503]),
        retry_after: pick(
            rng,
            &[
                RetryAfterForm::None,
                RetryAfterForm::Seconds,
                RetryAfterForm::Seconds,
                RetryAfterForm::HttpDate,
                RetryAfterForm::Fraction,
                RetryAfterForm::Absurd,
            ],
        ),
        dialect: pick(
            rng,
            &[
                Dialect::None,
                Dialect::None,
                Dialect::IetfStructured,
                Dialect::IetfPolicies,
                Dialect::IetfTinyWindow,
                Dialect::IetfSeparate,
                Dialect::XRateLimitDelta,
                Dialect::XRateLimitEpoch,
                Dialect::ResetAfter,
                Dialect::Contradictory,
                Dialect::Absurd,
            ],
        ),
        error_rate: pick(rng, &[0.0, 0.0, 0.05, 0.3]),
        burst_5xx: rng.random_bool(0.2).then(|| window(rng)),
        outage: rng.random_bool(0.15).then(|| window(rng)),
        outage_retry_after: rng.random_bool(0.5),
        outage_resets: rng.random_bool(0.3),
        hang_rate: pick(rng, &[0.0, 0.0, 0.0, 0.05]),
        slowest: Duration::from_millis(pick(rng, &[0, 0, 50, 2000])),
        stripe_rate: pick(rng, &[0.0, 0.0, 0.0, 0.2]),
        named: rng.random_bool(0.2).then(|| {
            let (from, to) = window(rng);
            Named {
                bucket: rng.random_bool(0.5),
                from,
                to,
                n: pick(rng, &[1, 2, 5]),
                w: Duration::from_millis(pick(rng, &[1000, 10_000])),
            }
        }),
    }
}

fn random_relimits(rng: &mut SmallRng, world: &World) -> Vec<Relimit> {
    if !rng.random_bool(0.25) {
        return Vec::new();
    }
    let authority = world.authorities[0].clone();
    let host = authority.split(':').next().unwrap_or_default().to_owned();
    let mut changes: Vec<Relimit> = (0..rng.random_range(1..=3))
        .map(|_| {
            let key = if rng.random_bool(0.5) {
                host.clone()
            } else {
                authority.clone()
            };
            // the same limit in the other form, a new one, or none
            let same = world.config.limits.first().map(|c| c.limit);
            let limit = match rng.random_range(0..10) {
                0..=3 => same.or_else(|| Some(random_limit(rng))),
                4..=7 => Some(random_limit(rng)),
                _ => None,
            };
            Relimit {
                at: millis(rng, 0, 60_000),
                key,
                limit,
            }
        })
        .collect();
    changes.sort_by_key(|c| c.at);
    changes
}

fn random_load(rng: &mut SmallRng, world: &World) -> Vec<Request> {
    let count = if rng.random_bool(0.1) {
        rng.random_range(60..=200)
    } else {
        rng.random_range(1..=40)
    };
    let span = millis(rng, 0, 120_000);
    let shape = rng.random_range(0..3); // 0: one burst, 1: a trickle, 2: a few bursts
    let burst_starts: Vec<Duration> = (0..4).map(|_| millis(rng, 0, 60_000)).collect();
    let has_units = world
        .config
        .limits
        .iter()
        .any(|c| matches!(c.on, LimitOn::Units(_)));
    (0..count)
        .map(|id| {
            let at = match shape {
                0 => Duration::ZERO,
                1 => span.mul_f64(rng.random::<f64>()),
                _ => pick(rng, &burst_starts),
            };
            let method = match rng.random_range(0..20) {
                0..=9 => http::Method::GET,
                10..=14 => http::Method::POST,
                15..=17 => http::Method::PUT,
                _ => http::Method::DELETE,
            };
            let body = if method == http::Method::POST || method == http::Method::PUT {
                pick(rng, &[Body::None, Body::Bytes, Body::Bytes, Body::Stream])
            } else {
                Body::None
            };
            Request {
                id,
                at,
                authority: pick(rng, &world.authorities.iter().collect::<Vec<_>>()).clone(),
                path: pick(rng, &PATHS),
                idempotency_key: method == http::Method::POST && rng.random_bool(0.3),
                method,
                credential: (!world.credentials.is_empty() && rng.random_bool(0.8))
                    .then(|| rng.random_range(0..world.credentials.len())),
                body,
                cost: rng.random_bool(0.1).then(|| rng.random_range(2..=3)),
                units: (has_units && rng.random_bool(0.5)).then(|| rng.random_range(1..=5)),
                deadline: rng.random_bool(0.3).then(|| millis(rng, 100, 60_000)),
                no_retry: rng.random_bool(0.05),
                cancel_after: rng.random_bool(0.1).then(|| millis(rng, 0, 10_000)),
            }
        })
        .collect()
}

/// A world whose one server keeps exactly the configured quota and never fails: a backlog of
/// GETs sent at once must see no refusal and use the quota.
fn kept_world(seed: u64, rng: &mut SmallRng) -> World {
    let authority = format!("{}:{}", HOSTS[0], PORTS[0]);
    let n = pick(rng, &[1, 2, 5, 10, 20, 50]);
    let w = Duration::from_millis(pick(rng, &[100, 1000, 2000, 10_000]));
    let on = if rng.random_bool(0.5) {
        LimitOn::Default
    } else {
        LimitOn::Host(HOSTS[0].into())
    };
    let mut config = random_config(rng, std::slice::from_ref(&authority));
    config.limits = vec![Configured {
        limit: Limit::per(n, w),
        on,
    }];
    config.partitioned = false;
    config.max_in_flight = None;
    let server = Server {
        quota: Quota::Sliding { n, w },
        per_credential: false,
        counts_refused: false,
        refusal_status: 429,
        retry_after: RetryAfterForm::None,
        dialect: Dialect::None,
        error_rate: 0.0,
        burst_5xx: None,
        outage: None,
        outage_retry_after: false,
        outage_resets: false,
        hang_rate: 0.0,
        slowest: Duration::from_millis(pick(rng, &[0, 0, 20])),
        stripe_rate: 0.0,
        named: None,
    };
    let count = rng.random_range(2 * n..=4 * n).max(3);
    let requests = (0..count)
        .map(|id| Request {
            id,
            at: Duration::ZERO,
            authority: authority.clone(),
            path: PATHS[0],
            method: http::Method::GET,
            idempotency_key: false,
            credential: None,
            body: Body::None,
            cost: None,
            units: None,
            deadline: None,
            no_retry: false,
            cancel_after: None,
        })
        .collect();
    World {
        seed,
        config,
        authorities: vec![authority],
        servers: vec![server],
        credentials: Vec::new(),
        requests,
        relimits: Vec::new(),
        real_time: false,
        kept: true,
    }
}
