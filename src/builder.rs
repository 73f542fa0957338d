//! [`Polite`], its builder, and the configuration defaults.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::breaker::Breaker;
use crate::limit::Limit;
use crate::observe::{Observer, Observers};
use crate::partition::Partitioner;
use crate::retry::{Backoff, RetryBudget, Retryable};
use crate::scope::{Limits, RouteLimit, UnitLimit, host_limit_key};
use crate::snapshot::{HostSnapshot, ScopeSnapshot};
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
    /// The configured quotas in force, replaced whole by `set_host_limit`, and their
    /// generation: records made from an older one take the new limits at their next request.
    limits: RwLock<Arc<Limits>>,
    generation: AtomicU64,
    /// Retried requests so far that drew a jitter RNG from `Config::jitter_seed`.
    pub(crate) jitter_draws: AtomicU64,
    pub(crate) partitioner: Option<Partitioner>,
    /// With a shared store, the partitioner keyed by the fleet's secret, made at the first
    /// partitioned request.
    #[cfg(feature = "redis")]
    pub(crate) fleet_partitioner: tokio::sync::OnceCell<Partitioner>,
    pub(crate) store: MemoryStore,
}

/// Everything [`PoliteBuilder`] sets.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Every configured quota (changed at run time through `Inner::limits`).
    pub(crate) limits: Limits,
    pub(crate) partition_header: Option<http::HeaderName>,
    /// The store that shares quotas across processes, if any.
    #[cfg(feature = "redis")]
    pub(crate) shared: Option<Arc<crate::store::RedisStore>>,
    pub(crate) max_in_flight: Option<u32>,
    pub(crate) max_retries: u32,
    pub(crate) backoff: Backoff,
    pub(crate) jitter_seed: Option<u64>,
    pub(crate) max_retry_after: Duration,
    pub(crate) breaker: Arc<Breaker>,
    pub(crate) retryable: Retryable,
    pub(crate) retry_budget: Arc<RetryBudget>,
    pub(crate) idle_timeout: Duration,
    pub(crate) is_failure: fn(Option<http::StatusCode>) -> bool,
    pub(crate) observers: Observers,
    /// What the metrics' `host` label holds (feature `metrics`).
    #[cfg(feature = "metrics")]
    pub(crate) metrics_host_label: crate::metrics::HostLabel,
}

/// The default breaker classification: 5xx and transport errors are failures; 4xx (429
/// included: that is pacing, handled by the server signals) are not.
fn default_is_failure(status: Option<http::StatusCode>) -> bool {
    status.is_none_or(|s| s.is_server_error())
}

impl Default for Config {
    fn default() -> Self {
        Config {
            limits: Limits::default(),
            partition_header: None,
            #[cfg(feature = "redis")]
            shared: None,
            max_in_flight: None,
            max_retries: 3,
            backoff: Backoff::default(),
            jitter_seed: None,
            max_retry_after: Duration::from_secs(120),
            breaker: Arc::new(Breaker::default()),
            retryable: Retryable::SafeOnly,
            retry_budget: Arc::new(RetryBudget::default()),
            idle_timeout: Duration::from_secs(300),
            is_failure: default_is_failure,
            observers: Observers::default(),
            #[cfg(feature = "metrics")]
            metrics_host_label: crate::metrics::HostLabel::default(),
        }
    }
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

    /// How many scope records (beside host records) are held now; idle ones are evicted like
    /// hosts.
    pub fn scope_count(&self) -> usize {
        self.inner.store.scope_count()
    }

    /// Every scope beside the host records right now (host-wide, route, unit and
    /// server-named quotas), sorted by kind and name.
    pub fn scope_snapshot(&self) -> Vec<ScopeSnapshot> {
        self.inner.store.scope_snapshot()
    }

    /// Pace `host` (`"host"` or `"host:port"`, as [`PoliteBuilder::host_limit`] takes it) to
    /// `limit` from its next request on, without rebuilding the client. What was already
    /// taken stands, so the next slot never comes earlier than the old limit had it.
    pub fn set_host_limit(&self, host: impl AsRef<str>, limit: Limit) {
        self.change_limits(|limits| {
            limits.hosts.insert(host_limit_key(host.as_ref()), limit);
        });
    }

    /// Remove a limit set with [`set_host_limit`](Self::set_host_limit) or
    /// [`PoliteBuilder::host_limit`]; the host falls back to the default limit, if any.
    pub fn clear_host_limit(&self, host: impl AsRef<str>) {
        self.change_limits(|limits| {
            limits.hosts.remove(&host_limit_key(host.as_ref()));
        });
    }

    fn change_limits(&self, change: impl FnOnce(&mut Limits)) {
        let mut current = self.inner.limits.write().unwrap_or_else(|p| p.into_inner());
        let mut limits = Limits::clone(&current);
        change(&mut limits);
        *current = Arc::new(limits);
        self.inner.generation.fetch_add(1, Ordering::Release);
    }

    /// The configured quotas in force, and their generation.
    pub(crate) fn limits(&self) -> (Arc<Limits>, u64) {
        let limits = self.inner.limits.read().unwrap_or_else(|p| p.into_inner());
        // read under the lock, so the generation is never newer than the limits
        let generation = self.inner.generation.load(Ordering::Acquire);
        (Arc::clone(&limits), generation)
    }

    /// The generation of the configured quotas in force (cheap: no lock).
    pub(crate) fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
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
/// | [`jitter_seed`](Self::jitter_seed) | none: the jitter is drawn from the OS |
/// | [`max_retry_after`](Self::max_retry_after) | 120 s |
/// | [`breaker`](Self::breaker) | [`Breaker::default()`] |
/// | [`breaker_failures`](Self::breaker_failures) | 5xx and transport errors |
/// | [`retryable`](Self::retryable) | [`Retryable::SafeOnly`] |
/// | [`retry_budget`](Self::retry_budget) | [`RetryBudget::default()`] |
/// | [`idle_timeout`](Self::idle_timeout) | 5 minutes |
/// | [`observer`](Self::observer) | none |
/// | `metrics_host_label` (feature `metrics`) | `HostLabel::Full` |
///
/// ```
/// use std::time::Duration;
/// use reqwest_polite::{Breaker, Limit, Polite};
///
/// let polite = Polite::builder()
///     .host_limit("api.github.com", Limit::per_hour(5000))
///     .partition_by_header("authorization")
///     .max_retries(2)
///     .breaker(Breaker::consecutive_failures(5).open_for(Duration::from_secs(10)))
///     .build();
/// assert_eq!(polite.host_count(), 0, "records are made on first use");
/// ```
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

    /// Pace every host (each scheme, host and port on its own) to `limit`, unless
    /// [`host_limit`](Self::host_limit) says otherwise.
    pub fn limit(mut self, limit: Limit) -> Self {
        self.config.limits.default = Some(limit);
        self
    }

    /// Pace one host to `limit`. `"api.example.com"` is one quota for every scheme and port of
    /// that host, together; `"127.0.0.1:8080"` is that port only (both apply to a request that
    /// falls in both). Case does not matter. An IPv6 address may be written with or without
    /// brackets (`"::1"`, `"[::1]"`), with a port only in brackets (`"[::1]:8080"`).
    pub fn host_limit(mut self, host: impl Into<String>, limit: Limit) -> Self {
        self.config
            .limits
            .hosts
            .insert(host_limit_key(&host.into()), limit);
        self
    }

    /// Pace the paths of `host` (as [`host_limit`](Self::host_limit) takes it) that start with
    /// `path_prefix` to `limit`, on top of the host's own limit: GitHub's search, 30 a minute
    /// inside 5000 an hour. A spent route never blocks the host's other routes.
    ///
    /// ```
    /// use reqwest_polite::{Limit, Polite};
    ///
    /// let polite = Polite::builder()
    ///     .host_limit("api.github.com", Limit::per_hour(5000))
    ///     .route_limit("api.github.com", "/search/", Limit::per_minute(30))
    ///     .build();
    /// # let _ = polite;
    /// ```
    pub fn route_limit(
        mut self,
        host: impl Into<String>,
        path_prefix: impl Into<String>,
        limit: Limit,
    ) -> Self {
        self.config.limits.routes.push(RouteLimit {
            host: host_limit_key(&host.into()),
            prefix: path_prefix.into(),
            limit,
        });
        self
    }

    /// Pace a second unit beside requests for `host`: a request carrying
    /// [`Units::new(unit, n)`](crate::Units) takes `n` of `limit` (OpenAI's tokens per minute).
    /// The server's own count of that unit, when it sends one (OpenAI's
    /// `x-ratelimit-*-tokens` for the unit `"tokens"`), is read into it.
    ///
    /// ```
    /// use reqwest_polite::{Limit, Polite};
    ///
    /// let polite = Polite::builder()
    ///     .host_limit("api.openai.com", Limit::per_minute(500))
    ///     .unit_limit("api.openai.com", "tokens", Limit::per_minute(90_000))
    ///     .build();
    /// # let _ = polite;
    /// ```
    pub fn unit_limit(
        mut self,
        host: impl Into<String>,
        unit: impl Into<String>,
        limit: Limit,
    ) -> Self {
        self.config.limits.units.push(UnitLimit {
            host: host_limit_key(&host.into()),
            unit: unit.into(),
            limit,
        });
        self
    }

    /// Share quotas across processes and machines through Redis (feature `redis`): the pacing
    /// schedule of every configured limit, and server-ordered cooldowns, are kept in Redis and
    /// read with its clock. See [`RedisStore`](crate::RedisStore) for the failure modes.
    #[cfg(feature = "redis")]
    pub fn store(mut self, store: crate::store::RedisStore) -> Self {
        self.config.shared = Some(Arc::new(store));
        self
    }

    /// Give each distinct value of the header `name` (a credential: `authorization`,
    /// `x-api-key`) its own set of quotas, cooldowns, breaker and retry budget, as APIs that
    /// meter per key do. Requests without the header share one set. The value is hashed with
    /// a key chosen at random per process before any use; it never appears in keys,
    /// snapshots, tracing fields or errors (the snapshots show a tag of the hash).
    ///
    /// # Panics
    /// If `name` is not a valid header name.
    #[track_caller]
    pub fn partition_by_header(mut self, name: &str) -> Self {
        match http::HeaderName::from_bytes(name.as_bytes()) {
            Ok(name) => self.config.partition_header = Some(name),
            Err(_) => panic!("partition_by_header({name:?}): not a valid header name"),
        }
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

    /// Retries after the first attempt (0: never retry, as [`Retryable::Never`] and, per
    /// request, [`NoRetry`](crate::NoRetry)).
    pub fn max_retries(mut self, n: u32) -> Self {
        self.config.max_retries = n;
        self
    }

    /// How long to wait between attempts when the server gives no hint.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// Draw the backoff jitter from `seed` instead of the operating system, so that a run on
    /// a paused clock replays exactly (tests, simulations): each retried request seeds its
    /// jitter from `seed` and its number among this `Polite`'s retried requests.
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.config.jitter_seed = Some(seed);
        self
    }

    /// The longest server-ordered wait (`Retry-After`, rate-limit reset) we sleep through.
    /// Past it, the response goes back to the caller, and later requests to the host fail fast
    /// with [`Error::CoolingDown`](crate::Error::CoolingDown) until the host's cooldown ends.
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.config.max_retry_after = max;
        self
    }

    /// The per-host circuit breaker; [`Breaker::disabled()`] turns it off.
    pub fn breaker(mut self, breaker: Breaker) -> Self {
        self.config.breaker = Arc::new(breaker);
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
        self.config.retry_budget = Arc::new(budget);
        self
    }

    /// How long a host record must sit unused, with nothing pending, before it is evicted.
    ///
    /// Pending includes the limit's window: a paced record (and a paced scope) is kept until a
    /// whole window of its limit has passed since its last start, so that forgetting it never
    /// lets a window hold more than the limit (under `Limit::per(5000, hour)`, an hour).
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.config.idle_timeout = idle;
        self
    }

    /// Tell `observer` of every wait, retry, refusal, rejection, breaker transition and
    /// finished request (see [`Observer`]). Each call adds one; they are called in order.
    /// Without one, the hooks cost one `Option` check each.
    pub fn observer(mut self, observer: impl Observer) -> Self {
        self.config.observers.add(Arc::new(observer));
        self
    }

    /// What the `host` label of the metrics holds (feature `metrics`): the host key (the
    /// default), nothing, or a name of your choosing, to keep the number of series bounded
    /// when a program calls many hosts.
    #[cfg(feature = "metrics")]
    pub fn metrics_host_label(mut self, label: crate::metrics::HostLabel) -> Self {
        self.config.metrics_host_label = label;
        self
    }

    /// The middleware.
    pub fn build(mut self) -> Polite {
        #[cfg(feature = "metrics")]
        let metrics: Option<Arc<dyn Observer>> = Some(Arc::new(
            crate::metrics::MetricsObserver::new(self.config.metrics_host_label),
        ));
        #[cfg(not(feature = "metrics"))]
        let metrics = None;
        self.config.observers.resolve(metrics);
        let store = MemoryStore::new(self.config.idle_timeout);
        Polite {
            inner: Arc::new(Inner {
                limits: RwLock::new(Arc::new(self.config.limits.clone())),
                generation: AtomicU64::new(0),
                jitter_draws: AtomicU64::new(0),
                partitioner: self.config.partition_header.clone().map(Partitioner::new),
                #[cfg(feature = "redis")]
                fleet_partitioner: tokio::sync::OnceCell::new(),
                config: self.config,
                store,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use url::Url;

    use super::*;

    fn limit_for(builder: PoliteBuilder, url: &str) -> Option<Limit> {
        let url = Url::parse(url).expect("test URLs parse");
        builder.config.limits.most_specific(&url)
    }

    /// Regression: `host_limit("::1")` must match the host `[::1]`, though `Url::host_str`
    /// keeps an IPv6 literal's brackets.
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

    /// Every way a 32-byte key could be printed: the whole key (bytes, hex), each 64-bit word
    /// (either byte order, decimal and hex), and the XOR of its halves' words.
    fn printed_forms(key: &[u8; 32]) -> Vec<String> {
        let word = |at: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&key[at..at + 8]);
            bytes
        };
        let mut words: Vec<u64> = (0..4)
            .flat_map(|i| {
                [
                    u64::from_le_bytes(word(8 * i)),
                    u64::from_be_bytes(word(8 * i)),
                ]
            })
            .collect();
        words.push(u64::from_le_bytes(word(0)) ^ u64::from_le_bytes(word(16)));
        words.push(u64::from_le_bytes(word(8)) ^ u64::from_le_bytes(word(24)));
        let mut forms = vec![
            format!("{key:?}"),
            key.iter().map(|b| format!("{b:02x}")).collect(),
        ];
        for w in words {
            forms.extend([w.to_string(), format!("{w:x}"), format!("{w:016x}")]);
        }
        forms
    }

    #[test]
    fn debug_of_a_partitioned_polite_never_shows_the_key_credentials_are_hashed_with() {
        let builder = Polite::builder().partition_by_header("authorization");
        let polite = builder.clone().build();
        let key = *polite
            .inner
            .partitioner
            .as_ref()
            .expect("partitioned")
            .key();
        let shown = format!("{builder:?} {polite:?} {:?}", polite.inner.partitioner);
        assert!(
            shown.contains("authorization"),
            "the header is shown: {shown}"
        );
        for form in printed_forms(&key) {
            assert!(!shown.contains(&form), "the key shows as {form}: {shown}");
        }
        let secret = std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(11));
        let fleet =
            Partitioner::with_secret(http::HeaderName::from_static("authorization"), &secret);
        let shown = format!("{fleet:?}");
        for form in printed_forms(&secret) {
            assert!(
                !shown.contains(&form),
                "the fleet's secret shows as {form}: {shown}"
            );
        }
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
