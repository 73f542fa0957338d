//! A [`reqwest-middleware`](https://crates.io/crates/reqwest-middleware) middleware that makes a
//! `reqwest::Client` a polite consumer of third-party APIs: it paces requests per host so that a
//! quota you configure is never exceeded, obeys what the server says (`Retry-After`, `RateLimit`,
//! `X-RateLimit-*`), retries only what is safe to retry, and stops calling a host that is down.
//!
//! **Why not governor and reqwest-retry?** Against a server that allows 10 requests in any second,
//! governor, given that quota, let its burst *and* its refill into the first second: 13 of 60
//! refused. reqwest-retry, which never sees `Retry-After`, sent 192 requests to get 47 of 60
//! through. reqwest-polite sent 60, all accepted (the crate's `docs/measurements.md`).
//!
//! # Quick start
//!
//! ```toml
//! [dependencies]
//! reqwest = "0.13"              # .json() needs features = ["json"] here
//! reqwest-middleware = "0.5"    # and here: { version = "0.5", features = ["json"] }
//! reqwest-polite = "0.1"
//! tokio = { version = "1", features = ["macros", "rt-multi-thread"] }
//! ```
//!
//! ```no_run
//! use reqwest_polite::{Limit, Polite};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), reqwest_middleware::Error> {
//!     let polite = Polite::builder()
//!         .host_limit("api.github.com", Limit::per_hour(5000)) // the quota its docs give
//!         .build();
//!     let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!         .with(polite.clone())
//!         .build();
//!     let request = client.get("https://api.github.com/rate_limit").header("user-agent", "my-app");
//!     let resp = request.send().await?;
//!     println!("{}: {}", resp.status(), resp.text().await?);
//!     for host in polite.snapshot() {
//!         println!("{host}"); // one line per host: limit, waits, retries, refusals, breaker
//!     }
//!     Ok(())
//! }
//! ```
//!
//! Without a [`Limit`] ([`Polite::new()`]) it still obeys the server, retries and breaks
//! circuits, but must *learn* each quota from headers or refusals: give a documented quota as a
//! `Limit`.
//!
//! # What every request gets
//!
//! - **Pacing per host** by a [`Limit`] that is a promise to the server: `Limit::per(100, 60 s)`
//!   never starts more than 100 requests in *any* 60 s span, and uses about 98% of it. Per
//!   route, per unit (tokens) and per credential too: [`PoliteBuilder::route_limit`],
//!   [`PoliteBuilder::unit_limit`], [`PoliteBuilder::partition_by_header`].
//! - **The server obeyed**: `Retry-After` (seconds or HTTP-date) holds back the whole host
//!   until that instant, and `RateLimit` / `X-RateLimit-*` headers slow it down *before* it
//!   refuses.
//! - **Retries only when that is safe**: 429 and connection failures for any method, other
//!   failures only for idempotent methods or requests with an `Idempotency-Key`, with
//!   exponential [`Backoff`] and [`Jitter`], a per-host [`RetryBudget`] and a [`Deadline`].
//! - **Fail fast while a host is down**, through a per-host circuit [`Breaker`] that probes
//!   carefully to recover.
//! - With feature `redis`, quotas shared by a fleet of processes (`RedisStore`); with feature
//!   `metrics`, counters on the `metrics` facade.
//!
//! # Errors
//! When the middleware refuses to send, the request fails with a [`reqwest_polite::Error`](Error)
//! inside [`reqwest_middleware::Error::Middleware`]; nothing was sent for it, and
//! [`Error::of`] gets it back in one call. When retries are exhausted, the last *response* is
//! returned, as reqwest-retry does.
//!
//! # With reqwest's own retries
//! reqwest 0.12.23+ has `ClientBuilder::retry(policy)`. It runs *inside* this middleware (in
//! the client, below every middleware), so a status-retrying policy there would multiply with
//! ours (3 retries here times 3 there is up to 16 attempts) and its retries would skip our
//! pacing, our `Retry-After` handling and our breaker. Keep reqwest's default, which only
//! resends requests the server refused at the protocol level (such as HTTP/2 `REFUSED_STREAM`)
//! and is harmless; do not add a `reqwest::retry::for_host(..).classify_fn(..)` policy that
//! retries statuses. If you prefer reqwest's retries, set
//! [`max_retries(0)`](PoliteBuilder::max_retries) here and keep the pacing and breaker.
//!
//! # Observability
//! [`Polite::snapshot`] shows each host's state on demand; an [`Observer`] added with
//! [`PoliteBuilder::observer`] is told of every wait, retry, refusal, rejection, breaker
//! transition and finished request; the `metrics` feature counts the same events on the
//! `metrics` facade (`reqwest_polite_requests_total`, ...); and every decision is a `tracing`
//! event, with a `reason` on each wait and OpenTelemetry's `http.request.resend_count` recorded
//! on the current span (when the span declares it) before each resend.
//!
//! # Time
//! All timing uses `tokio::time`, so tests can run on paused time.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

#[cfg(feature = "bench")]
#[doc(hidden)]
pub mod bench_support;
mod breaker;
mod builder;
mod error;
mod extensions;
mod host;
mod limit;
#[cfg(feature = "metrics")]
mod metrics;
mod middleware;
mod observe;
mod pacing;
mod partition;
mod record;
mod retry;
mod routing;
mod scope;
#[cfg(feature = "redis")]
mod shared;
// `pub` items here are re-exported by `bench_support` (feature `bench`) only
#[cfg_attr(not(feature = "bench"), allow(unreachable_pub))]
mod signals;
mod snapshot;
mod store;
mod time;
mod window;

/// Every Rust block of the README, compiled (and run, unless marked `no_run`) by `cargo test`,
/// exactly as shown. Its Redis recipe is marked `ignore` here: it is `examples/shared_quota.rs`,
/// compiled with feature `redis`, and `tests/readme.rs` checks the two are the same text.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The Rust blocks of docs/observability.md (one needs feature `metrics`).
#[cfg(all(doctest, feature = "metrics"))]
#[doc = include_str!("../docs/observability.md")]
struct ObservabilityDoctests;

/// The Rust blocks of docs/redis.md (feature `redis`).
#[cfg(all(doctest, feature = "redis"))]
#[doc = include_str!("../docs/redis.md")]
struct RedisDoctests;

pub use crate::breaker::{Breaker, BreakerConfigError};
pub use crate::builder::{Polite, PoliteBuilder};
pub use crate::error::Error;
pub use crate::extensions::{Cost, Deadline, NoRetry, Units, WaitIfOpen};
pub use crate::limit::{InvalidLimit, Limit, SAFETY_MARGIN_PERCENT};
#[cfg(feature = "metrics")]
pub use crate::metrics::HostLabel;
pub use crate::observe::{
    BreakerEvent, Observer, PartitionTag, RefusalEvent, RejectReason, RejectedEvent, RequestEvent,
    RequestOutcome, RetryEvent, WaitEvent, WaitReason,
};
pub use crate::retry::{
    Backoff, Delays, InvalidBackoff, InvalidRetryBudget, Jitter, RetryBudget, Retryable,
};
pub use crate::snapshot::{
    BreakerPhase, BreakerSnapshot, Counters, HostSnapshot, RetryBudgetSnapshot, ScopeKind,
    ScopeSnapshot, ServerQuota,
};
#[cfg(feature = "redis")]
pub use crate::store::{Fallback, RedisStore, RedisStoreError};
/// The redis crate (redis-rs) the [`RedisStore`] is built on, for [`RedisStore::from_client`]
/// and [`RedisStore::from_manager`] (and, with feature `redis-cluster`,
/// `RedisStore::from_cluster_client` and `from_cluster_connection`).
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use ::redis;
