//! What the pacing benches share: limiters with a slot always free, and many hosts.

use std::num::NonZeroU32;

use governor::clock::MonotonicClock;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use reqwest::Url;
use reqwest_polite::{Breaker, Limit, Polite};

/// Distinct hosts for the many-host benches.
pub const HOSTS: usize = 1000;

/// Ours, with a limit so high that a slot is always free and no breaker: the admit path.
pub fn polite() -> Polite {
    Polite::builder()
        .limit(Limit::per_second(u32::MAX / 2))
        .breaker(Breaker::disabled())
        .build()
}

/// governor's keyed limiter with the same quota.
pub fn governor_keyed() -> DefaultKeyedRateLimiter<String> {
    let quota = Quota::per_second(NonZeroU32::new(u32::MAX / 2).expect("non-zero"));
    RateLimiter::keyed(quota)
}

/// governor's keyed limiter with the same quota, on the clock we use (`std::time::Instant`,
/// which tokio's wraps) instead of its default TSC-based one: the same lookup and
/// compare-and-swap, with the clock read costing what ours costs.
pub fn governor_keyed_std_clock() -> RateLimiter<
    String,
    DefaultKeyedStateStore<String>,
    MonotonicClock,
    NoOpMiddleware<std::time::Instant>,
> {
    let quota = Quota::per_second(NonZeroU32::new(u32::MAX / 2).expect("non-zero"));
    RateLimiter::new(quota, DefaultKeyedStateStore::default(), MonotonicClock)
}

/// `HOSTS` distinct hosts on one port, as URLs and as governor keys.
pub fn many_hosts() -> (Vec<Url>, Vec<String>) {
    (0..HOSTS)
        .map(|i| {
            let origin = format!("http://10.0.{}.{}:8080", i / 256, i % 256);
            let url = Url::parse(&format!("{origin}/x")).expect("valid url");
            (url, origin)
        })
        .unzip()
}
