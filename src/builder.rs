//! [`Polite`], its builder, and the configuration defaults.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use tokio::time::Instant;

use crate::breaker::Breaker;
use crate::host::{Host, HostConfig, HostSnapshot};
use crate::limit::Limit;
use crate::retry::{Backoff, RetryBudget, Retryable};
use crate::store::MemoryStore;

/// The middleware: attach it with `reqwest_middleware::ClientBuilder::with`.
///
/// Cloning is cheap and clones share one state: every client built with clones of one `Polite`
/// paces the same hosts together.
///
/// ```
/// use std::time::Duration;
/// use reqwest_polite::{Limit, Polite};
///
/// let polite = Polite::builder()
///     .limit(Limit::per_second(10))
///     .host_limit("api.github.com", Limit::per_hour(5000))
///     .max_in_flight(8)
///     .build();
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(polite.clone())
///     .build();
/// assert!(polite.snapshot().is_empty(), "no host called yet");
/// ```
#[derive(Debug, Clone)]
pub struct Polite {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: Config,
    pub(crate) store: MemoryStore,
}

/// Everything [`PoliteBuilder`] sets.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) limit: Option<Limit>,
    /// Keys: lower-cased `host` or `host:port`.
    pub(crate) host_limits: HashMap<String, Limit>,
    pub(crate) max_in_flight: Option<u32>,
    pub(crate) max_retries: u32,
    pub(crate) backoff: Backoff,
    pub(crate) max_retry_after: Duration,
    pub(crate) breaker: Breaker,
    pub(crate) retryable: Retryable,
    pub(crate) retry_budget: RetryBudget,
    pub(crate) idle_timeout: Duration,
    pub(crate) is_failure: fn(Option<http::StatusCode>) -> bool,
}

/// The default breaker classification: 5xx and transport errors are failures; 4xx (429
/// included: that is pacing, handled by the server signals) are not.
fn default_is_failure(status: Option<http::StatusCode>) -> bool {
    status.is_none_or(|s| s.is_server_error())
}

impl Default for Config {
    fn default() -> Self {
        Config {
            limit: None,
            host_limits: HashMap::new(),
            max_in_flight: None,
            max_retries: 3,
            backoff: Backoff::default(),
            max_retry_after: Duration::from_secs(120),
            breaker: Breaker::default(),
            retryable: Retryable::SafeOnly,
            retry_budget: RetryBudget::default(),
            idle_timeout: Duration::from_secs(300),
            is_failure: default_is_failure,
        }
    }
}

impl Config {
    /// The limit for a URL's host: `host:port` override, then `host`, then the default.
    fn limit_for(&self, url: &Url) -> Option<Limit> {
        if !self.host_limits.is_empty() {
            // The spelling `host_limit_key` gives keys: an IPv6 literal in brackets, canonical.
            let host = match url.host() {
                Some(url::Host::Ipv6(addr)) => format!("[{addr}]"),
                _ => url.host_str().unwrap_or_default().to_owned(),
            };
            if let Some(port) = url.port_or_known_default()
                && let Some(limit) = self.host_limits.get(&format!("{host}:{port}"))
            {
                return Some(*limit);
            }
            if let Some(limit) = self.host_limits.get(&host) {
                return Some(*limit);
            }
        }
        self.limit
    }
}

/// The form a [`PoliteBuilder::host_limit`] key is kept in: lower case, and an IPv6 literal,
/// with or without brackets (`::1`, `[::1]`, `[::1]:8080`), in brackets and spelled as
/// [`Ipv6Addr`]'s `Display` does, so that any spelling of one address matches the URL's.
fn host_limit_key(host: &str) -> String {
    let host = host.to_ascii_lowercase();
    if let Ok(addr) = host.parse::<Ipv6Addr>() {
        return format!("[{addr}]");
    }
    if let Some((inside, after)) = host.strip_prefix('[').and_then(|rest| rest.split_once(']'))
        && let Ok(addr) = inside.parse::<Ipv6Addr>()
    {
        return format!("[{addr}]{after}");
    }
    host
}

impl Polite {
    /// Start configuring. See [`PoliteBuilder`] for every setting and its default.
    pub fn builder() -> PoliteBuilder {
        PoliteBuilder::new()
    }

    /// A middleware with every default: no pacing limit, but it obeys the server, retries what
    /// is safe, and breaks the circuit of a failing host.
    ///
    /// Without a [`Limit`] it has to learn each host's quota, from `RateLimit` /
    /// `X-RateLimit-*` headers or else from refusals: expect a few refusals per host while it
    /// learns, and less than the quota's throughput where the server's reset is coarse (whole
    /// seconds). When the quota is documented, configure it with
    /// [`PoliteBuilder::host_limit`] or [`PoliteBuilder::limit`].
    pub fn new() -> Self {
        PoliteBuilder::new().build()
    }

    /// Per-host state right now, sorted by host key.
    pub fn snapshot(&self) -> Vec<HostSnapshot> {
        self.inner.store.snapshot()
    }

    /// How many host records are held now (idle ones are evicted after
    /// [`idle_timeout`](PoliteBuilder::idle_timeout)).
    pub fn host_count(&self) -> usize {
        self.inner.store.len()
    }

    /// The record for a URL's host, or `None` for URLs without a host.
    pub(crate) fn host_for(&self, url: &Url) -> Option<Arc<Host>> {
        let key = crate::host::host_key(url)?;
        let config = &self.inner.config;
        Some(self.inner.store.host(&key, |now: Instant| {
            let host_config = HostConfig {
                limit: config.limit_for(url),
                max_in_flight: config.max_in_flight,
                breaker: config.breaker.clone(),
                retry_budget: config.retry_budget,
            };
            Host::new(&key, &host_config, now)
        }))
    }
}

impl Default for Polite {
    fn default() -> Self {
        Self::new()
    }
}

/// Configures a [`Polite`] middleware.
///
/// # Default
/// | setting | default |
/// |---|---|
/// | [`limit`](Self::limit) | none: no pacing until a server asks for it |
/// | [`host_limit`](Self::host_limit) | none |
/// | [`max_in_flight`](Self::max_in_flight) | none |
/// | [`max_retries`](Self::max_retries) | 3 (4 attempts) |
/// | [`backoff`](Self::backoff) | exponential, 100 ms to 20 s, full jitter |
/// | [`max_retry_after`](Self::max_retry_after) | 120 s |
/// | [`breaker`](Self::breaker) | [`Breaker::default()`] |
/// | [`breaker_failures`](Self::breaker_failures) | 5xx and transport errors |
/// | [`retryable`](Self::retryable) | [`Retryable::SafeOnly`] |
/// | [`retry_budget`](Self::retry_budget) | [`RetryBudget::default()`] |
/// | [`idle_timeout`](Self::idle_timeout) | 5 minutes |
#[derive(Debug, Clone, Default)]
pub struct PoliteBuilder {
    config: Config,
}

impl PoliteBuilder {
    /// A builder with every default.
    pub fn new() -> Self {
        PoliteBuilder {
            config: Config::default(),
        }
    }

    /// Pace every host to `limit`, unless [`host_limit`](Self::host_limit) says otherwise.
    pub fn limit(mut self, limit: Limit) -> Self {
        self.config.limit = Some(limit);
        self
    }

    /// Pace one host to `limit`. `host` is `"api.example.com"` (that host on any port) or
    /// `"127.0.0.1:8080"` (that host and port only; the more specific one wins). Case does not
    /// matter. An IPv6 address may be written with or without brackets (`"::1"`, `"[::1]"`),
    /// with a port only in brackets (`"[::1]:8080"`).
    pub fn host_limit(mut self, host: impl Into<String>, limit: Limit) -> Self {
        self.config
            .host_limits
            .insert(host_limit_key(&host.into()), limit);
        self
    }

    /// At most `n` requests to one host waiting for their response at once. A request that
    /// would exceed it waits (FIFO) before it takes a pacing slot. Released when the response
    /// headers arrive, when the request fails, and when the request future is dropped.
    ///
    /// # Panics
    /// If `n` is zero.
    #[track_caller]
    pub fn max_in_flight(mut self, n: u32) -> Self {
        assert!(n > 0, "max_in_flight(0) would never send anything");
        self.config.max_in_flight = Some(n);
        self
    }

    /// Retries after the first attempt (0: never retry).
    pub fn max_retries(mut self, n: u32) -> Self {
        self.config.max_retries = n;
        self
    }

    /// How long to wait between attempts when the server gives no hint.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// The longest server-ordered wait (`Retry-After`, rate-limit reset) we sleep through.
    /// Past it, the response goes back to the caller, and later requests to the host fail fast
    /// with [`Error::CoolingDown`](crate::Error::CoolingDown) until the host reopens.
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.config.max_retry_after = max;
        self
    }

    /// The per-host circuit breaker; [`Breaker::disabled()`] turns it off.
    pub fn breaker(mut self, breaker: Breaker) -> Self {
        self.config.breaker = breaker;
        self
    }

    /// What the circuit breaker counts as a failure. `status` is `None` when no response came
    /// (connection refused, timeout, reset). Each attempt of a retried request counts.
    ///
    /// ```
    /// use reqwest_polite::Polite;
    ///
    /// // this API answers 404 while it is being redeployed: count that too
    /// let polite = Polite::builder()
    ///     .breaker_failures(|status| status.is_none_or(|s| s.is_server_error() || s == 404))
    ///     .build();
    /// # let _ = polite;
    /// ```
    pub fn breaker_failures(mut self, is_failure: fn(Option<http::StatusCode>) -> bool) -> Self {
        self.config.is_failure = is_failure;
        self
    }

    /// Which failures may be retried for which methods.
    pub fn retryable(mut self, retryable: Retryable) -> Self {
        self.config.retryable = retryable;
        self
    }

    /// The per-host retry budget, which keeps an outage from turning into a retry storm.
    pub fn retry_budget(mut self, budget: RetryBudget) -> Self {
        self.config.retry_budget = budget;
        self
    }

    /// How long a host record must sit unused, with nothing pending, before it is evicted.
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.config.idle_timeout = idle;
        self
    }

    /// The middleware.
    pub fn build(self) -> Polite {
        let store = MemoryStore::new(self.config.idle_timeout);
        Polite {
            inner: Arc::new(Inner {
                config: self.config,
                store,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit_for(builder: PoliteBuilder, url: &str) -> Option<Limit> {
        let url = Url::parse(url).expect("test URLs parse");
        builder.config.limit_for(&url)
    }

    /// Regression (issue 9): `host_limit("::1")` never matched, because `Url::host_str` keeps
    /// an IPv6 literal's brackets.
    #[test]
    fn ipv6_host_limits_match_with_or_without_brackets() {
        let limit = Limit::per_second(7);
        for key in ["::1", "[::1]", "0:0:0:0:0:0:0:1", "[0::1]"] {
            for url in [
                "http://[::1]:8080/x",
                "https://[::1]/",
                "http://[0:0::1]:9/",
            ] {
                assert_eq!(
                    limit_for(Polite::builder().host_limit(key, limit), url),
                    Some(limit),
                    "host_limit({key:?}) must apply to {url}"
                );
            }
        }
        let by_port = Polite::builder()
            .host_limit("::1", Limit::per_second(1))
            .host_limit("[::1]:8080", limit);
        assert_eq!(
            limit_for(by_port.clone(), "http://[::1]:8080/"),
            Some(limit),
            "[host]:port is the more specific key"
        );
        assert_eq!(
            limit_for(by_port, "http://[::1]:8081/"),
            Some(Limit::per_second(1)),
            "another port falls back to the host's limit"
        );
        assert_eq!(
            limit_for(
                Polite::builder().host_limit("[2001:DB8::A]", limit),
                "http://[2001:db8:0::a]/"
            ),
            Some(limit),
            "case and zero compression do not matter"
        );
        assert_eq!(
            limit_for(Polite::builder().host_limit("::2", limit), "http://[::1]/"),
            None,
            "another address does not match"
        );
    }

    #[test]
    fn host_limits_match_names_and_ipv4_as_before() {
        let limit = Limit::per_second(3);
        let other = Limit::per_second(30);
        let builder = Polite::builder()
            .limit(other)
            .host_limit("API.example.com", limit)
            .host_limit("127.0.0.1:8080", limit);
        assert_eq!(
            limit_for(builder.clone(), "https://api.example.com/v1"),
            Some(limit)
        );
        assert_eq!(
            limit_for(builder.clone(), "http://127.0.0.1:8080/"),
            Some(limit)
        );
        assert_eq!(
            limit_for(builder.clone(), "http://127.0.0.1:8081/"),
            Some(other),
            "another port takes the default"
        );
        assert_eq!(limit_for(builder, "http://example.com/"), Some(other));
    }
}
