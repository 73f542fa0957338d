//! The six clients under test, each built fresh for one (scenario, client) run.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::{StatusCode, Url};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use reqwest_polite::{Limit, Polite};
use reqwest_retry::RetryTransientMiddleware;
use reqwest_retry::policies::ExponentialBackoff;

/// Longest a caller waits for one request, retries included; past it the call counts as an error.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A quota as a server documents it: at most `count` requests per `window`.
#[derive(Debug, Clone, Copy)]
pub struct Documented {
    pub count: u32,
    pub window: Duration,
}

impl Documented {
    pub const fn per_second(count: u32) -> Self {
        Documented {
            count,
            window: Duration::from_secs(1),
        }
    }
}

/// One server a client is told about: its `host:port` and its documented quota, if any.
#[derive(Debug, Clone)]
pub struct Target {
    pub authority: String,
    pub quota: Option<Documented>,
}

/// The clients under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// reqwest through reqwest-middleware with no middleware.
    Bare,
    /// reqwest-retry 0.9, exponential backoff, 3 retries.
    ReqwestRetry,
    /// governor with each server's documented quota, awaited before every send.
    Governor,
    /// reqwest 0.13's own retry policy, retrying 429 and 5xx, 3 retries.
    ReqwestBuiltinRetry,
    /// `Polite::new()`.
    PoliteDefaults,
    /// `Polite` told each server's documented quota.
    PoliteWithQuota,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Bare,
        Kind::ReqwestRetry,
        Kind::Governor,
        Kind::ReqwestBuiltinRetry,
        Kind::PoliteDefaults,
        Kind::PoliteWithQuota,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Bare => "bare reqwest",
            Kind::ReqwestRetry => "reqwest-retry",
            Kind::Governor => "governor",
            Kind::ReqwestBuiltinRetry => "reqwest retry()",
            Kind::PoliteDefaults => "polite defaults",
            Kind::PoliteWithQuota => "polite + quota",
        }
    }
}

/// How one call ended, as its caller saw it.
#[derive(Debug)]
pub struct Call {
    pub started: Instant,
    pub finished: Instant,
    /// The final status, or what went wrong when there was no response.
    pub result: Result<u16, String>,
}

/// A client under test: a middleware stack, and for governor the limiters it awaits.
pub struct Client {
    http: ClientWithMiddleware,
    /// governor's limiter per `host:port`; empty for every other client.
    governors: HashMap<String, DefaultDirectRateLimiter>,
}

impl Client {
    /// A fresh client of `kind` for the servers in `targets`.
    pub fn build(kind: Kind, targets: &[Target]) -> Client {
        let http = match kind {
            Kind::Bare | Kind::Governor => bare(),
            Kind::ReqwestRetry => reqwest_retry(),
            Kind::ReqwestBuiltinRetry => reqwest_builtin_retry(),
            Kind::PoliteDefaults => polite_defaults(),
            Kind::PoliteWithQuota => polite_with_quota(targets),
        };
        let governors = match kind {
            Kind::Governor => governors(targets),
            _ => HashMap::new(),
        };
        Client { http, governors }
    }

    /// GET `url`, read the body, and report how it went. Never panics on a network result.
    pub async fn get(&self, url: &Url) -> Call {
        let started = Instant::now();
        let call = async {
            if let Some(governor) = self.governors.get(&authority(url)) {
                governor.until_ready().await;
            }
            let response = self.http.get(url.clone()).send().await?;
            let status = response.status().as_u16();
            response.bytes().await?;
            Ok::<u16, reqwest_middleware::Error>(status)
        };
        let result = match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(err)) => Err(describe(&err)),
            Err(_) => Err("timed out".to_string()),
        };
        Call {
            started,
            finished: Instant::now(),
            result,
        }
    }
}

/// Client 1: reqwest with no middleware.
fn bare() -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::new()).build()
}

/// Client 2: reqwest-retry 0.9 as its README shows it.
fn reqwest_retry() -> ClientWithMiddleware {
    let policy = ExponentialBackoff::builder().build_with_max_retries(3);
    ClientBuilder::new(reqwest::Client::new())
        .with(RetryTransientMiddleware::new_with_policy(policy))
        .build()
}

/// Client 3: governor, the usual way: each server's documented quota, awaited before every
/// send (the client itself is bare). For a 1 s window this is exactly
/// `Quota::per_second(count)`. A direct limiter per `host:port` rather than one keyed limiter,
/// because a keyed limiter has one quota for every key and the hosts of (e) differ.
fn governors(targets: &[Target]) -> HashMap<String, DefaultDirectRateLimiter> {
    targets
        .iter()
        .filter_map(|target| {
            let quota = target.quota?;
            let burst = NonZeroU32::new(quota.count)?;
            let governed = Quota::with_period(quota.window / quota.count)?.allow_burst(burst);
            Some((target.authority.clone(), RateLimiter::direct(governed)))
        })
        .collect()
}

/// Client 4: reqwest 0.13's built-in retry, told to retry 429 and 5xx, 3 retries, with its
/// default retry budget (20 % extra load). It has no delay between attempts.
fn reqwest_builtin_retry() -> ClientWithMiddleware {
    let policy = reqwest::retry::for_host("127.0.0.1")
        .max_retries_per_request(3)
        .classify_fn(|attempt| match attempt.status() {
            Some(status) if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() => {
                attempt.retryable()
            }
            _ => attempt.success(),
        });
    let client = reqwest::Client::builder()
        .retry(policy)
        .build()
        .expect("a plain HTTP client builds");
    ClientBuilder::new(client).build()
}

/// Client 5: ours, every default.
fn polite_defaults() -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::new())
        .with(Polite::new())
        .build()
}

/// Client 6: ours, told each server's documented quota (defaults for servers without one).
fn polite_with_quota(targets: &[Target]) -> ClientWithMiddleware {
    let polite = targets
        .iter()
        .fold(Polite::builder(), |builder, target| match target.quota {
            Some(quota) => {
                builder.host_limit(&target.authority, Limit::per(quota.count, quota.window))
            }
            None => builder,
        })
        .build();
    ClientBuilder::new(reqwest::Client::new())
        .with(polite)
        .build()
}

/// `host:port` of a URL, as the targets name servers.
fn authority(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port_or_known_default() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// A short name for an error, to group them in the progress lines.
fn describe(err: &reqwest_middleware::Error) -> String {
    if let Some(refused) = reqwest_polite::Error::of(err) {
        return match refused {
            reqwest_polite::Error::CircuitOpen { .. } => "circuit open".to_string(),
            reqwest_polite::Error::CoolingDown { .. } => "cooling down".to_string(),
            other => format!("polite: {other}"),
        };
    }
    match err {
        reqwest_middleware::Error::Middleware(inner) => format!("middleware: {inner}"),
        reqwest_middleware::Error::Reqwest(err) if err.is_connect() => "connect".to_string(),
        reqwest_middleware::Error::Reqwest(err) if err.is_timeout() => "timeout".to_string(),
        reqwest_middleware::Error::Reqwest(err) => format!("reqwest: {err}"),
    }
}
