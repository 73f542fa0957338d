//! [`Polite`], its builder, and the configuration defaults.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http::HeaderMap;

use reqwest::Url;
use tokio::time::Instant;

use crate::breaker::Breaker;
use crate::host::{Host, HostConfig, Moved};
use crate::limit::Limit;
use crate::observe::{Observer, Observers};
use crate::partition::{Partition, Partitioner};
use crate::retry::{Backoff, RetryBudget, Retryable};
use crate::scope::{Limits, RouteLimit, Scope, UnitLimit, host_limit_key};
use crate::signals::{QuotaName, ServerScope, ServerScopeKind};
use crate::snapshot::{HostSnapshot, ScopeKind, ScopeSnapshot};
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
    partitioner: Option<Partitioner>,
    /// With a shared store, the partitioner keyed by the fleet's secret, made at the first
    /// partitioned request.
    #[cfg(feature = "redis")]
    fleet_partitioner: tokio::sync::OnceCell<Partitioner>,
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

    /// The partition of a request, when requests are partitioned: keyed per process, or by
    /// the fleet's secret when a shared store is in use (an error if it cannot be had: a
    /// per-process key would split one credential's shared quota).
    pub(crate) async fn partition_of(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<Partition>, crate::Error> {
        let Some(local) = &self.inner.partitioner else {
            return Ok(None);
        };
        #[cfg(feature = "redis")]
        if let Some(store) = &self.inner.config.shared {
            let fleet = self
                .inner
                .fleet_partitioner
                .get_or_try_init(|| async {
                    let secret = store.fleet_secret().await?;
                    Ok::<_, crate::store::RedisStoreError>(Partitioner::with_secret(
                        local.header().clone(),
                        &secret,
                    ))
                })
                .await
                .map_err(|err| crate::Error::StoreUnavailable {
                    host: String::new(),
                    reason: format!("no fleet-wide key for partitions: {err}"),
                })?;
            return Ok(fleet.of(headers));
        }
        Ok(local.of(headers))
    }

    /// The shared store, if quotas are shared across processes.
    #[cfg(feature = "redis")]
    pub(crate) fn shared(&self) -> Option<&crate::store::RedisStore> {
        self.inner.config.shared.as_deref()
    }

    /// The record for a URL's host (in `partition`), or `None` for URLs without a host.
    pub(crate) fn host_for(&self, url: &Url, partition: Option<Partition>) -> Option<Arc<Host>> {
        let authority = crate::host::host_key(url)?;
        let key = match partition {
            None => authority.clone(),
            Some(p) => std::borrow::Cow::Owned(format!("{authority} {}", p.key())),
        };
        let config = &self.inner.config;
        Some(self.inner.store.host(&key, |now: Instant| {
            let (limits, generation) = self.limits();
            let host_config = HostConfig {
                limits: limits.for_host(url),
                generation,
                partition,
                max_in_flight: config.max_in_flight,
                breaker: Arc::clone(&config.breaker),
                retry_budget: Arc::clone(&config.retry_budget),
            };
            Host::new(&authority, &host_config, now)
        }))
    }

    /// Every scope a request falls in beside its host record, with the units it takes in
    /// each, sorted by key (the order their locks are taken in). Empty, without allocating,
    /// when nothing but host records is configured and the server named no quota.
    pub(crate) fn scopes_for(
        &self,
        host: &Host,
        url: &Url,
        cost: u32,
        units: Option<&crate::extensions::Units>,
        named: Option<&ServerScope>,
    ) -> Vec<(Arc<Scope>, u32)> {
        let (limits, generation) = self.limits();
        if !limits.has_scopes() && named.is_none() {
            return Vec::new();
        }
        let p = host.partition;
        let tag = Partition::key_of(p);
        let mut scopes = Vec::new();
        let mut add = |key: String, kind, label: String, limit: Option<Limit>, units: u32| {
            let scope = self.inner.store.scope(&key, |now| {
                Scope::new(&key, kind, &label, p, limit, generation, now)
            });
            {
                let mut state = scope.state();
                if state.generation != generation && limit.is_some() {
                    state.relimit(limit, generation);
                }
            }
            scopes.push((scope, units));
        };
        if let Some((name, limit)) = limits.host_wide(url) {
            add(
                host_wide_key(&tag, &name),
                ScopeKind::Host,
                name,
                Some(limit),
                cost,
            );
        }
        for route in limits.routes(url) {
            let RouteLimit {
                host,
                prefix,
                limit,
            } = route;
            add(
                format!("{tag}|route|{host}|{prefix}"),
                ScopeKind::Route,
                format!("{host} {prefix}"),
                Some(*limit),
                cost,
            );
        }
        if let Some(units) = units
            && let Some(UnitLimit { host, unit, limit }) = limits.unit(url, units.unit())
        {
            add(
                format!("{tag}|unit|{host}|{unit}"),
                ScopeKind::Unit,
                format!("{host} {unit}"),
                Some(*limit),
                units.count(),
            );
        }
        if let Some(named) = named {
            for quota in &named.quotas {
                scopes.push((self.named_scope(host, named.kind, quota), cost));
            }
        }
        scopes.sort_by(|a, b| a.0.key.cmp(&b.0.key));
        scopes.dedup_by(|a, b| a.0.key == b.0.key);
        scopes
    }

    /// A limit moved between `host`'s record and its host-wide scope at run time: the schedule
    /// moves with it, so the change lets nothing through sooner than the old form allowed.
    pub(crate) fn carry_schedule(&self, host: &Host, url: &Url, limits: &Limits, moved: Moved) {
        let tag = Partition::key_of(host.partition);
        match (moved, limits.host_wide(url)) {
            (Moved::Out(position), Some((name, _))) => {
                // made here if it does not exist yet, as the request's scopes will find it
                let key = host_wide_key(&tag, &name);
                let scope = self.inner.store.scope(&key, |now| {
                    Scope::new(&key, ScopeKind::Host, &name, host.partition, None, 0, now)
                });
                scope.state().pacing.take_over(position);
            }
            (Moved::In, None) => {
                let (name, _) = crate::scope::host_names(url);
                let scope = self.inner.store.find_scope(&host_wide_key(&tag, &name));
                let position = scope.and_then(|scope| scope.state().pacing.position());
                if let Some(position) = position {
                    host.state().pacing.take_over(position);
                }
            }
            _ => {}
        }
    }

    /// A quota the server named (its scope is made if it does not exist yet): one requests on
    /// its routes pace in, and one its answers feed. A policy's partition key (`pk`, hashed)
    /// is part of its key and shows as its tag, never as the key itself.
    pub(crate) fn named_scope(
        &self,
        host: &Host,
        kind: ServerScopeKind,
        quota: &QuotaName,
    ) -> Arc<Scope> {
        let generation = self.generation();
        let tag = Partition::key_of(host.partition);
        let (kind, word) = match kind {
            ServerScopeKind::Resource => (ScopeKind::Resource, "resource"),
            ServerScopeKind::Bucket => (ScopeKind::Bucket, "bucket"),
            ServerScopeKind::Policy => (ScopeKind::Policy, "policy"),
        };
        let name = &quota.name;
        // a policy's `pk` splits its quota only where requests are partitioned by credential:
        // a host record every credential shares cannot tell which `pk` its next request is
        // for, so its policies of one name share one (conservative) count
        let pk = quota.partition.filter(|_| host.partition.is_some());
        let key = match pk {
            None => format!("{tag}|{word}|{}|{name}", host.key),
            Some(pk) => format!("{tag}|{word}|{}|{name}|{}", host.key, pk.key()),
        };
        self.inner.store.scope(&key, |now| {
            let label = match pk {
                None => format!("{} {name}", host.key),
                Some(pk) => format!("{} {name} pk {pk}", host.key),
            };
            Scope::new(&key, kind, &label, host.partition, None, generation, now)
        })
    }
}

/// The store key of the host-wide scope of host `name` (every port), in partition `tag`.
fn host_wide_key(tag: &str, name: &str) -> String {
    format!("{tag}|host|{name}")
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
/// | [`observer`](Self::observer) | none |
/// | `metrics_host_label` (feature `metrics`) | `HostLabel::Full` |
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
    /// schedule of every configured limit, and server-ordered closures, are kept in Redis and
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
