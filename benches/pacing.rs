//! The cost of the per-request pacing decision, next to governor's keyed limiter.
//!
//! Both limiters are set so high that a slot is always free: this measures the admit path
//! (host lookup plus schedule check), not waiting.
//!
//! Run: `cargo bench --bench pacing -- --quick`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use reqwest::Url;
use reqwest_polite::bench_support;

#[path = "support/mod.rs"]
mod support;

use support::{HOSTS, governor_keyed, governor_keyed_std_clock, many_hosts, polite};

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
    let std_clock = governor_keyed_std_clock();
    assert!(std_clock.check_key(&key).is_ok(), "must admit");
    group.bench_function("governor/keyed_check_std_clock", |b| {
        b.iter(|| black_box(&std_clock).check_key(black_box(&key)).is_ok())
    });
    // what one reading of the clock costs (ours reads tokio's, which reads std's)
    group.bench_function("clock/tokio_instant_now", |b| {
        b.iter(tokio::time::Instant::now)
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
