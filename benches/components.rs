//! The middleware's parts, each next to a peer where one exists:
//! - `headers`: reading the pacing headers of one answer, as done for every response;
//! - `breaker`: a successful call through a closed breaker, next to failsafe's;
//! - `contention`: the pacing decision from 64 tasks on 2 worker threads over 1000 hosts,
//!   next to governor's keyed limiter under the same load (on its default clock, and on the
//!   clock we use).
//!
//! Every limiter is set so high that a slot is always free: this measures the admit path, not
//! waiting.
//!
//! Run: `cargo bench --bench components -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use failsafe::CircuitBreaker;
use failsafe::backoff;
use failsafe::failure_policy::{self, FailurePolicy};
use http::{HeaderMap, HeaderName, HeaderValue};
use reqwest_polite::Breaker;
use reqwest_polite::bench_support::{self, BreakerBench};
use tokio::runtime::Runtime;

#[path = "support/mod.rs"]
mod support;

#[path = "support/contended.rs"]
mod contended;

use contended::{PER_BATCH, host_index, load, time_batches};
use support::{governor_keyed, governor_keyed_std_clock};

fn header_map(fields: &[(&'static str, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in fields {
        map.append(
            HeaderName::from_static(name),
            HeaderValue::from_str(value).expect("valid header value"),
        );
    }
    map
}

/// Headers most API answers carry, none of them about pacing.
fn ordinary() -> Vec<(&'static str, String)> {
    vec![
        ("content-type", "application/json; charset=utf-8".into()),
        ("date", httpdate::fmt_http_date(SystemTime::now())),
        ("etag", "W/\"7d4b3f3c1e0a9b8c6d5e4f3a2b1c0d9e\"".into()),
        ("server", "github.com".into()),
        ("cache-control", "private, max-age=60, s-maxage=60".into()),
        ("vary", "Accept, Authorization, Cookie, X-GitHub-OTP".into()),
        (
            "x-github-request-id",
            "C2E4:3B0F:1A2B3C4:1B2C3D4:66A1B2C3".into(),
        ),
        ("content-length", "5321".into()),
    ]
}

fn headers(c: &mut Criterion) {
    let epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let mut github = ordinary();
    github.extend([
        ("x-ratelimit-limit", "5000".into()),
        ("x-ratelimit-remaining", "4987".into()),
        ("x-ratelimit-reset", (epoch + 3600).to_string()),
    ]);
    let mut ietf = ordinary();
    ietf.extend([
        ("ratelimit", "\"default\";r=50;t=30".into()),
        ("ratelimit-policy", "\"default\";q=100;w=60".into()),
    ]);
    let mut retry_after = ordinary();
    retry_after.push((
        "retry-after",
        httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3600)),
    ));
    let cases = [
        ("parse_github", header_map(&github), true),
        ("parse_ietf", header_map(&ietf), true),
        ("parse_retry_after_date", header_map(&retry_after), true),
        ("parse_none", header_map(&ordinary()), false),
    ];

    let mut group = c.benchmark_group("headers");
    for (name, map, found) in &cases {
        assert_eq!(bench_support::parse_hint(map), *found, "{name}");
        group.bench_function(*name, |b| {
            b.iter(|| bench_support::parse_hint(black_box(map)))
        });
    }
    group.finish();
}

fn breaker(c: &mut Criterion) {
    let mut group = c.benchmark_group("breaker");

    let mut polite = BreakerBench::new(&Breaker::default());
    assert!(polite.call(false), "a closed breaker must admit");
    group.bench_function("polite_admit_record", |b| {
        b.iter(|| polite.call(black_box(false)))
    });

    // As close to `Breaker::default()` as failsafe goes: 50 % failures (so 50 % successes
    // required) over 30 s with at least 10 calls, or 5 consecutive failures; open 5 s growing
    // up to 60 s.
    let open = || backoff::exponential(Duration::from_secs(5), Duration::from_secs(60));
    let policy =
        failure_policy::success_rate_over_time_window(0.5, 10, Duration::from_secs(30), open())
            .or_else(failure_policy::consecutive_failures(5, open()));
    let failsafe = failsafe::Config::new().failure_policy(policy).build();
    assert!(
        failsafe.call(|| Ok::<(), ()>(())).is_ok(),
        "a closed breaker must admit"
    );
    group.bench_function("failsafe_call", |b| {
        b.iter(|| failsafe.call(|| black_box(Ok::<(), ()>(()))).is_ok())
    });

    group.finish();
}

/// Time enough whole batches to cover `iters` decisions, and return the time scaled to
/// `iters`: one criterion iteration is one decision.
fn contended<F>(rt: &Runtime, iters: u64, decide: F) -> Duration
where
    F: Fn(usize, usize) -> bool + Send + Sync + 'static,
{
    let batches = iters.div_ceil(PER_BATCH as u64).max(1);
    let elapsed = time_batches(rt, batches, &Arc::new(decide));
    elapsed.mul_f64(iters as f64 / (batches * PER_BATCH as u64) as f64)
}

fn contention(c: &mut Criterion) {
    let (rt, urls, keys, polite) = load();

    let limiter = Arc::new(governor_keyed());
    for key in keys.iter() {
        assert!(limiter.check_key(key).is_ok(), "must admit");
    }

    let mut group = c.benchmark_group("contention");
    group.bench_function("2x64x1000", |b| {
        b.iter_custom(|iters| {
            let (polite, urls) = (polite.clone(), Arc::clone(&urls));
            contended(&rt, iters, move |task, i| {
                bench_support::pacing_decision(&polite, black_box(&urls[host_index(task, i)]))
            })
        })
    });
    group.bench_function("governor_2x64x1000", |b| {
        b.iter_custom(|iters| {
            let (limiter, keys) = (Arc::clone(&limiter), Arc::clone(&keys));
            contended(&rt, iters, move |task, i| {
                limiter
                    .check_key(black_box(&keys[host_index(task, i)]))
                    .is_ok()
            })
        })
    });
    let std_clock = Arc::new(governor_keyed_std_clock());
    for key in keys.iter() {
        assert!(std_clock.check_key(key).is_ok(), "must admit");
    }
    group.bench_function("governor_std_clock_2x64x1000", |b| {
        b.iter_custom(|iters| {
            let (limiter, keys) = (Arc::clone(&std_clock), Arc::clone(&keys));
            contended(&rt, iters, move |task, i| {
                limiter
                    .check_key(black_box(&keys[host_index(task, i)]))
                    .is_ok()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, headers, breaker, contention);
criterion_main!(benches);
