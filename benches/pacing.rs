//! The cost of the per-request pacing decision, next to governor's keyed limiter.
//!
//! Both limiters are set so high that a slot is always free: this measures the admit path
//! (host lookup plus schedule check), not waiting.
//!
//! Run: `cargo bench --bench pacing -- --quick`

use std::hint::black_box;
use std::num::NonZeroU32;

use criterion::{Criterion, criterion_group, criterion_main};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use reqwest::Url;
use reqwest_polite::{Breaker, Limit, Polite, bench_support};

const HOSTS: usize = 1000;

fn polite() -> Polite {
    Polite::builder()
        .limit(Limit::per_second(u32::MAX / 2))
        .breaker(Breaker::disabled())
        .build()
}

fn governor_keyed() -> DefaultKeyedRateLimiter<String> {
    let quota = Quota::per_second(NonZeroU32::new(u32::MAX / 2).expect("non-zero"));
    RateLimiter::keyed(quota)
}

/// `HOSTS` distinct hosts on one port, as URLs and as governor keys.
fn many_hosts() -> (Vec<Url>, Vec<String>) {
    (0..HOSTS)
        .map(|i| {
            let origin = format!("http://10.0.{}.{}:8080", i / 256, i % 256);
            let url = Url::parse(&format!("{origin}/x")).expect("valid url");
            (url, origin)
        })
        .unzip()
}

fn pacing(c: &mut Criterion) {
    eprintln!(
        "host record size: {} bytes",
        bench_support::host_record_size()
    );

    let mut group = c.benchmark_group("pacing");

    // One known host with a free slot.
    let one = polite();
    let url = Url::parse("http://127.0.0.1:8080/x").expect("valid url");
    bench_support::mark_answered(&one, &url);
    assert!(
        bench_support::pacing_decision(&one, &url),
        "polite must admit, or this measures a refusal"
    );
    group.bench_function("polite/known_host_slot_free", |b| {
        b.iter(|| bench_support::pacing_decision(black_box(&one), black_box(&url)))
    });

    let limiter = governor_keyed();
    let key = String::from("http://127.0.0.1:8080");
    assert!(
        limiter.check_key(&key).is_ok(),
        "governor must admit, or this measures a refusal"
    );
    group.bench_function("governor/keyed_check", |b| {
        b.iter(|| black_box(&limiter).check_key(black_box(&key)).is_ok())
    });

    // The same, rotating over HOSTS known hosts: lookup cost with a populated map.
    let (urls, keys) = many_hosts();
    let many = polite();
    for url in &urls {
        bench_support::mark_answered(&many, url);
        assert!(bench_support::pacing_decision(&many, url), "must admit");
    }
    let mut i = 0;
    group.bench_function("polite/known_hosts_1000", |b| {
        b.iter(|| {
            i = (i + 1) % HOSTS;
            bench_support::pacing_decision(black_box(&many), black_box(&urls[i]))
        })
    });

    let many_limiter = governor_keyed();
    for key in &keys {
        assert!(many_limiter.check_key(key).is_ok(), "must admit");
    }
    let mut i = 0;
    group.bench_function("governor/keyed_check_1000", |b| {
        b.iter(|| {
            i = (i + 1) % HOSTS;
            black_box(&many_limiter)
                .check_key(black_box(&keys[i]))
                .is_ok()
        })
    });

    group.finish();
}

criterion_group!(benches, pacing);
criterion_main!(benches);
