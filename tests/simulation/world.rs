//! One random world: the middleware's configuration, the servers behind each authority, and
//! the load, all drawn from one seed.

use std::time::Duration;

use reqwest_polite::{Backoff, Breaker, Limit, Polite, PoliteBuilder, RetryBudget, Retryable};

pub use super::generate::generate;

/// The hosts a world may call; every authority has an explicit port.
pub const HOSTS: [&str; 2] = ["a.sim", "b.sim"];
pub const PORTS: [u16; 2] = [8080, 8081];
/// The paths requests take; `/search/` may be a route limit and a server-named quota.
pub const PATHS: [&str; 4] = ["/items/1", "/items/2", "/search/q", "/upload"];
/// The header requests are partitioned by, and the prefix every credential value carries (so a
/// leak is found by a plain substring search).
pub const CREDENTIAL_HEADER: &str = "authorization";
pub const SECRET_MARK: &str = "sim-secret";

/// One configured limit, as the checks mirror it.
#[derive(Debug, Clone)]
pub struct Configured {
    pub limit: Limit,
    pub on: LimitOn,
}

/// What a configured limit covers.
#[derive(Debug, Clone, PartialEq)]
pub enum LimitOn {
    /// `limit`: every authority on its own.
    Default,
    /// `host_limit("host", ..)`: every port of the host together.
    Host(String),
    /// `host_limit("host:port", ..)`: that authority.
    Authority(String),
    /// `route_limit(host, prefix, ..)`: paths under the prefix, on every port of the host.
    Route(String, String),
    /// `unit_limit(host, "tokens", ..)`: the units requests carry.
    Units(String),
}

/// How the middleware is configured.
#[derive(Debug, Clone)]
pub struct Config {
    pub limits: Vec<Configured>,
    pub partitioned: bool,
    pub max_in_flight: Option<u32>,
    pub max_retries: u32,
    pub retryable: Retryable,
    pub budget: &'static str,
    pub breaker: Breaker,
    /// The breaker's `half_open_probes`.
    pub probes: u32,
    pub backoff: Backoff,
    pub max_retry_after: Duration,
    pub idle_timeout: Duration,
}

/// How a server refuses and what it says about its quota.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Dialect {
    None,
    IetfStructured,
    /// Two named IETF policies: the quota and an hour's.
    IetfPolicies,
    /// Two named IETF policies: the quota and one with a window of a tenth of a second.
    IetfTinyWindow,
    IetfSeparate,
    XRateLimitDelta,
    XRateLimitEpoch,
    ResetAfter,
    /// Two dialects that disagree.
    Contradictory,
    /// Negative, huge and garbage values.
    Absurd,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RetryAfterForm {
    None,
    Seconds,
    HttpDate,
    Fraction,
    Absurd,
}

/// The quota a server enforces.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Quota {
    None,
    /// At most `n` accepted in any `w`.
    Sliding {
        n: u32,
        w: Duration,
    },
    /// At most `n` in each window `[k w, (k+1) w)` from the world's start.
    Fixed {
        n: u32,
        w: Duration,
    },
    /// One drains every `w / n`; `burst` may wait in the bucket.
    Leaky {
        n: u32,
        w: Duration,
        burst: u32,
    },
}

/// One authority's server.
#[derive(Debug, Clone)]
pub struct Server {
    pub quota: Quota,
    /// The quota is counted per credential rather than for everyone.
    pub per_credential: bool,
    /// Refused requests count against the quota (HAProxy's stick tables).
    pub counts_refused: bool,
    pub refusal_status: u16,
    pub retry_after: RetryAfterForm,
    pub dialect: Dialect,
    /// Share of answers that are a 500 or 502 anyway.
    pub error_rate: f64,
    /// `[from, to)`: every answer a 500 or 502.
    pub burst_5xx: Option<(Duration, Duration)>,
    /// `[from, to)`: every answer a 503 (with a `Retry-After` if `outage_retry_after`), or a
    /// reset connection.
    pub outage: Option<(Duration, Duration)>,
    pub outage_retry_after: bool,
    pub outage_resets: bool,
    /// Share of requests held for [`HANG`] and then reset.
    pub hang_rate: f64,
    /// Answers take up to this long.
    pub slowest: Duration,
    /// Share of answers carrying `Stripe-Should-Retry` (`true` or `false`).
    pub stripe_rate: f64,
    /// `/search/` paths are a quota the server names (`x-ratelimit-resource`, or Discord's
    /// bucket) in `[from, to)`, with its own count.
    pub named: Option<Named>,
}

#[derive(Debug, Clone, Copy)]
pub struct Named {
    pub bucket: bool,
    pub from: Duration,
    pub to: Duration,
    pub n: u32,
    pub w: Duration,
}

/// A run-time change: `set_host_limit(key, limit)`, or `clear_host_limit(key)` for `None`.
#[derive(Debug, Clone)]
pub struct Relimit {
    pub at: Duration,
    /// `"host"` or `"host:port"`.
    pub key: String,
    pub limit: Option<Limit>,
}

impl Relimit {
    /// What the limit it sets covers.
    pub fn on(&self) -> LimitOn {
        if self.key.contains(':') {
            LimitOn::Authority(self.key.clone())
        } else {
            LimitOn::Host(self.key.clone())
        }
    }
}

/// How long a hung answer holds before its connection is reset.
pub const HANG: Duration = Duration::from_secs(30);

/// One request of the load.
#[derive(Debug, Clone)]
pub struct Request {
    pub id: u32,
    pub at: Duration,
    pub authority: String,
    pub path: &'static str,
    pub method: http::Method,
    pub idempotency_key: bool,
    pub credential: Option<usize>,
    pub body: Body,
    pub cost: Option<u32>,
    pub units: Option<u32>,
    pub deadline: Option<Duration>,
    pub no_retry: bool,
    pub cancel_after: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Body {
    None,
    Bytes,
    /// A body reqwest cannot clone: sent once.
    Stream,
}

#[derive(Debug, Clone)]
pub struct World {
    pub seed: u64,
    pub config: Config,
    pub authorities: Vec<String>,
    pub servers: Vec<Server>,
    pub credentials: Vec<String>,
    pub requests: Vec<Request>,
    /// Run-time limit changes, in time order.
    pub relimits: Vec<Relimit>,
    /// Runs on real time (sharing Redis): a timer may wake a little late.
    pub real_time: bool,
    /// The server keeps exactly the one configured quota and nothing goes wrong: no refusal
    /// is allowed, and a backlog must use the quota.
    pub kept: bool,
}

impl World {
    /// Whether a server writes instants on the wall clock (an HTTP-date `Retry-After`, an
    /// epoch reset): the middleware reads them against the wall clock, which moves while the
    /// paused one stands, so such a world need not replay to the nanosecond.
    pub fn reads_wall_clock(&self) -> bool {
        self.servers.iter().any(|s| {
            s.retry_after == RetryAfterForm::HttpDate || s.dialect == Dialect::XRateLimitEpoch
        })
    }

    pub fn server(&self, authority: &str) -> &Server {
        let i = self.authorities.iter().position(|a| a == authority);
        &self.servers[i.expect("a world's requests go to its own authorities")]
    }

    /// The middleware as configured.
    pub fn polite(&self, observer: impl reqwest_polite::Observer) -> Polite {
        self.builder(observer).build()
    }

    /// The middleware's builder as configured.
    pub fn builder(&self, observer: impl reqwest_polite::Observer) -> PoliteBuilder {
        let c = &self.config;
        let mut b = Polite::builder()
            .jitter_seed(self.seed)
            .max_retries(c.max_retries)
            .retryable(c.retryable)
            .breaker(c.breaker.clone())
            .backoff(c.backoff)
            .max_retry_after(c.max_retry_after)
            .idle_timeout(c.idle_timeout)
            .observer(observer);
        b = match c.budget {
            "unlimited" => b.retry_budget(RetryBudget::unlimited()),
            "tight" => b.retry_budget(RetryBudget::new(Duration::from_secs(10), 0, 0.1)),
            _ => b,
        };
        if let Some(n) = c.max_in_flight {
            b = b.max_in_flight(n);
        }
        if c.partitioned {
            b = b.partition_by_header(CREDENTIAL_HEADER);
        }
        for Configured { limit, on } in &c.limits {
            b = match on {
                LimitOn::Default => b.limit(*limit),
                LimitOn::Host(h) | LimitOn::Authority(h) => b.host_limit(h, *limit),
                LimitOn::Route(h, prefix) => b.route_limit(h, prefix, *limit),
                LimitOn::Units(h) => b.unit_limit(h, "tokens", *limit),
            };
        }
        b
    }
}

/// One line saying what a world is made of, printed beside its violations.
pub fn summary(world: &World) -> String {
    let c = &world.config;
    let limits: Vec<String> = c
        .limits
        .iter()
        .map(|l| {
            format!(
                "{:?} {}/{:?} burst {}",
                l.on,
                l.limit.count(),
                l.limit.window(),
                l.limit.burst_size()
            )
        })
        .collect();
    let servers: Vec<String> = world
        .servers
        .iter()
        .map(|s| {
            format!(
                "{:?} per credential {} refusal {} {:?} dialect {:?} errors {} 5xx burst {:?} outage {:?} hangs {} slowest {:?} stripe {} named {:?}",
                s.quota,
                s.per_credential,
                s.refusal_status,
                s.retry_after,
                s.dialect,
                s.error_rate,
                s.burst_5xx,
                s.outage,
                s.hang_rate,
                s.slowest,
                s.stripe_rate,
                s.named
            )
        })
        .collect();
    format!(
        "servers {servers:?}\n  changes {:?}\n  {} requests to {:?}; limits [{}]; partitioned {}; in-flight {:?}; retries {} {:?}; budget {}; max_retry_after {:?}; {:?}; {}",
        world.relimits,
        world.requests.len(),
        world.authorities,
        limits.join(", "),
        c.partitioned,
        c.max_in_flight,
        c.max_retries,
        c.retryable,
        c.budget,
        c.max_retry_after,
        c.breaker,
        if world.kept { "kept quota" } else { "" },
    )
}
