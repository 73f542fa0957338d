//! Hooks into the crate's internals for `benches/` and `tests/fuzz_headers.rs`.
//!
//! Compiled only with the non-default feature `bench`, and hidden from the docs: nothing here is
//! public API or covered by semver. Each hook does what the middleware does at one step, so the
//! benches time and the fuzz test exercise the same code a request runs through.

use std::time::SystemTime;

use tokio::time::Instant;
use url::Url;

use crate::breaker::{Admission, Breaker, BreakerState};
use crate::builder::Polite;
use crate::host::Host;
use crate::pacing::Decision;

pub use crate::signals::{
    MAX_HINT, ServerHint, parse_duration_str, parse_reset, parse_retry_after,
};

/// The pacing decision for one request to `url`, as the middleware makes it before sending:
/// find the host record, take the slot in its lock-free lane if the host is quiet, else ask
/// its schedule under the lock. Returns whether it was admitted.
pub fn pacing_decision(polite: &Polite, url: &Url) -> bool {
    let Some(host) = polite.host_for(url, None) else {
        return false;
    };
    if host.try_admit(Instant::now(), 1) {
        return true;
    }
    // another thread may have taken the slot after this one read the clock: read it again
    let mut state = host.state();
    matches!(
        state.decide(Instant::now(), 1, &mut []).0,
        Decision::Admit { .. }
    )
}

/// Mark a URL's host as learned and unmetered (no first-contact gate), as a host is after
/// its first answers when it sends no quota headers.
pub fn mark_answered(polite: &Polite, url: &Url) {
    if let Some(host) = polite.host_for(url, None) {
        host.state().schedule.pacing.quota.assume_unmetered();
    }
}

/// Read every pacing header of a response (`Retry-After`, `RateLimit*`, `X-RateLimit-*`),
/// as the middleware does for each answer. Returns whether anything was found.
pub fn parse_hint(headers: &http::HeaderMap) -> bool {
    let hint = ServerHint::read(headers);
    hint.retry_after.is_some() || hint.remaining.is_some() || hint.reset_in.is_some()
}

/// Every pacing header of a response read as of the wall-clock instant `now`, as
/// [`ServerHint::read`] does with the clock's reading.
pub fn server_hint_at(headers: &http::HeaderMap, now: SystemTime) -> ServerHint {
    ServerHint::from_headers(headers, now)
}

/// A host's circuit breaker, as the middleware drives it: admit, then record the outcome.
#[derive(Debug)]
pub struct BreakerBench(BreakerState);

impl BreakerBench {
    /// A closed breaker with `config`.
    pub fn new(config: &Breaker) -> Self {
        BreakerBench(BreakerState::new(config.clone(), Instant::now()))
    }

    /// Admit one call and record it as a success (`failure == false`) or a failure; returns
    /// whether it was admitted.
    pub fn call(&mut self, failure: bool) -> bool {
        let now = Instant::now();
        let (admission, _) = self.0.admit(now);
        if matches!(admission, Admission::Reject { .. }) {
            return false;
        }
        let _ = self.0.record(now, &admission, failure);
        true
    }
}

/// The size in bytes of one host record (its heap part; the key string and the map entry
/// come on top).
pub fn host_record_size() -> usize {
    std::mem::size_of::<Host>()
}

/// One shared reservation through Redis, as the request path will make it: one `EVALSHA` of
/// the GCRA script on `scope`, for `limit`, reserving whatever the wait. Returns whether Redis
/// answered (rather than the store falling back).
#[cfg(feature = "redis")]
pub async fn redis_reserve(store: &crate::RedisStore, scope: &str, limit: &crate::Limit) -> bool {
    store
        .ask(
            scope,
            Some(limit),
            None,
            1,
            std::time::Duration::from_secs(3600),
        )
        .await
        .is_ok()
}
