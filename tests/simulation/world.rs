//! One random world: the middleware's configuration, the servers behind each authority, and
//! the load, all drawn from one seed.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use reqwest_polite::{Backoff, Breaker, Jitter, Limit, Polite, RetryBudget, Retryable};

/// The hosts a world may call; every authority has an explicit port.
pub const HOSTS: [&str; 2] = ["a.sim", "b.sim"];
pub const PORTS: [u16; 2] = [8080, 8081];
/// The paths requests take; `/search/` may be a route limit and a server-named quota.
pub const PATHS: [&str; 4] = ["/items/1", "/items/2", "/search/q", "/upload"];
/// The header requests are partitioned by, and the prefix every credential value carries (so a
/// leak is found by a plain substring search).
pub const CREDENTIAL_HEADER: &str = "authorization";
pub const SECRET_MARK: &str = "sim-secret";

/// A known defect the simulation finds, and what is left out while it is open (listed in
/// `OPEN_DEFECTS`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Defect {
    /// `Stripe-Should-Retry: true` is obeyed on a 2xx, for a non-idempotent request and under
    /// `Retryable::Never`. Left out: the servers send `true` only on a 5xx to a request that
    /// may be retried anyway.
    StripeShouldRetryObeyedWhereUnsafe,
    /// A request admitted before its host's breaker opened, and waiting for its pacing slot
    /// (or its in-flight place) when it opened, is sent while the breaker is open. Left out: a
    /// start while the breaker is open counts only if its attempt began after it opened.
    QueuedRequestsSentWhileBreakerOpen,
    /// A retry refused before it is sent (its deadline, a pause past `max_retry_after`, the
    /// breaker opened during the backoff) ends the request with our error instead of the
    /// last answer. Left out: an error of ours after an answer is not compared with it.
    LastAnswerLostWhenRetryRefused,
    /// A run-time change of the form of the limit that paces a host (its own or the default,
    /// to or from a port-less `host_limit`) starts a fresh schedule, so a window across the
    /// change sees more than `n`. Left out: across a change, only an unchanged form is
    /// checked.
    FreshScheduleOnFormChange,
    /// Scope records (one per credential and scope) stay once the load stops: they are swept
    /// only when a new scope is made while 64 or more are held and no host record was made
    /// since the last sweep. Left out: the scopes held after the load are not counted.
    ScopesPerCredentialNeverSwept,
}

/// Whether `defect` is listed as open.
pub fn open(defect: Defect) -> bool {
    crate::OPEN_DEFECTS.contains(&defect)
}

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
    /// Two named IETF policies: the quota and a day's.
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
        b.build()
    }
}

fn pick<T: Copy>(rng: &mut SmallRng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

fn millis(rng: &mut SmallRng, from: u64, to: u64) -> Duration {
    Duration::from_millis(rng.random_range(from..=to))
}

fn random_limit(rng: &mut SmallRng) -> Limit {
    let n = pick(rng, &[1, 2, 3, 5, 10, 20, 50]);
    let w = pick(rng, &[100, 1000, 2000, 10_000, 60_000]);
    let limit = Limit::per(n, Duration::from_millis(w));
    if rng.random_bool(0.3) {
        limit.burst(rng.random_range(1..=n))
    } else {
        limit
    }
}

/// Draw a world from `seed`.
pub fn generate(seed: u64) -> World {
    let mut rng = SmallRng::seed_from_u64(seed);
    if rng.random_bool(0.2) {
        return kept_world(seed, &mut rng);
    }
    let mut authorities: Vec<String> = Vec::new();
    for _ in 0..rng.random_range(1..=3) {
        let a = format!("{}:{}", pick(&mut rng, &HOSTS), pick(&mut rng, &PORTS));
        if !authorities.contains(&a) {
            authorities.push(a);
        }
    }
    let config = random_config(&mut rng, &authorities);
    let servers = authorities
        .iter()
        .map(|_| random_server(&mut rng, &config))
        .collect();
    let credentials = (0..pick(&mut rng, &[1, 2, 3, 6, 40]))
        .map(|i| format!("Bearer {SECRET_MARK}-{seed}-{i}"))
        .collect();
    let mut world = World {
        seed,
        config,
        authorities,
        servers,
        credentials,
        requests: Vec::new(),
        relimits: Vec::new(),
        kept: false,
    };
    world.relimits = random_relimits(&mut rng, &world);
    world.requests = random_load(&mut rng, &world);
    world
}

fn random_config(rng: &mut SmallRng, authorities: &[String]) -> Config {
    let mut limits = Vec::new();
    let a = &authorities[0];
    let host = a.split(':').next().unwrap_or_default().to_owned();
    let mut add = |rng: &mut SmallRng, p: f64, on: LimitOn| {
        if rng.random_bool(p) {
            limits.push(Configured {
                limit: random_limit(rng),
                on,
            });
        }
    };
    add(rng, 0.5, LimitOn::Default);
    add(rng, 0.3, LimitOn::Host(host.clone()));
    add(rng, 0.25, LimitOn::Authority(a.clone()));
    add(rng, 0.25, LimitOn::Route(host.clone(), "/search/".into()));
    add(rng, 0.2, LimitOn::Units(host));
    let base = millis(rng, 10, 500);
    let backoff = Backoff::exponential(base, base * rng.random_range(1..=60)).jitter(pick(
        rng,
        &[
            Jitter::None,
            Jitter::Full,
            Jitter::Equal,
            Jitter::Decorrelated,
        ],
    ));
    let open_for = millis(rng, 100, 10_000);
    let breaker = match rng.random_range(0..10) {
        0..=3 => Breaker::default(),
        4 | 5 => Breaker::disabled(),
        6..=8 => Breaker::consecutive_failures(rng.random_range(1..=5)).open_for(open_for),
        _ => Breaker::failure_rate(0.5, rng.random_range(4..=10), Duration::from_secs(10))
            .open_for(open_for),
    };
    let probes = rng.random_range(1..=3);
    let breaker = breaker.half_open_probes(probes);
    Config {
        limits,
        partitioned: rng.random_bool(0.4),
        max_in_flight: rng.random_bool(0.3).then(|| rng.random_range(1..=4)),
        max_retries: rng.random_range(0..=4),
        retryable: match rng.random_range(0..20) {
            0..=13 => Retryable::SafeOnly,
            14..=16 => Retryable::Always,
            _ => Retryable::Never,
        },
        budget: pick(rng, &["default", "default", "unlimited", "tight"]),
        breaker,
        probes,
        backoff,
        max_retry_after: Duration::from_secs(pick(rng, &[1, 5, 30, 120, 600])),
        idle_timeout: Duration::from_secs(pick(rng, &[1, 10, 60, 300])),
    }
}

fn random_quota(rng: &mut SmallRng, n: u32, w: Duration) -> Quota {
    match rng.random_range(0..10) {
        0..=3 => Quota::Sliding { n, w },
        4..=6 => Quota::Fixed { n, w },
        _ => Quota::Leaky {
            n,
            w,
            burst: rng.random_range(0..=n),
        },
    }
}

fn random_server(rng: &mut SmallRng, config: &Config) -> Server {
    let configured = config.limits.first().map(|c| c.limit);
    let quota = match (rng.random_range(0..20), configured) {
        (0..=5, _) => Quota::None,
        (6..=12, Some(l)) => random_quota(rng, l.count(), l.window()),
        (13..=16, Some(l)) => random_quota(rng, (l.count() / 2).max(1), l.window()),
        _ => {
            let n = pick(rng, &[1, 3, 10, 30]);
            let w = Duration::from_millis(pick(rng, &[1000, 5000, 60_000]));
            random_quota(rng, n, w)
        }
    };
    let window = |rng: &mut SmallRng| {
        let from = millis(rng, 0, 60_000);
        (from, from + millis(rng, 100, 30_000))
    };
    Server {
        quota,
        per_credential: config.partitioned && rng.random_bool(0.7),
        counts_refused: rng.random_bool(0.3),
        refusal_status: pick(rng, &[429, 429, 429, 403, 503]),
        retry_after: pick(
            rng,
            &[
                RetryAfterForm::None,
                RetryAfterForm::Seconds,
                RetryAfterForm::Seconds,
                RetryAfterForm::HttpDate,
                RetryAfterForm::Fraction,
                RetryAfterForm::Absurd,
            ],
        ),
        dialect: pick(
            rng,
            &[
                Dialect::None,
                Dialect::None,
                Dialect::IetfStructured,
                Dialect::IetfPolicies,
                Dialect::IetfTinyWindow,
                Dialect::IetfSeparate,
                Dialect::XRateLimitDelta,
                Dialect::XRateLimitEpoch,
                Dialect::ResetAfter,
                Dialect::Contradictory,
                Dialect::Absurd,
            ],
        ),
        error_rate: pick(rng, &[0.0, 0.0, 0.05, 0.3]),
        burst_5xx: rng.random_bool(0.2).then(|| window(rng)),
        outage: rng.random_bool(0.15).then(|| window(rng)),
        outage_retry_after: rng.random_bool(0.5),
        outage_resets: rng.random_bool(0.3),
        hang_rate: pick(rng, &[0.0, 0.0, 0.0, 0.05]),
        slowest: Duration::from_millis(pick(rng, &[0, 0, 50, 2000])),
        stripe_rate: pick(rng, &[0.0, 0.0, 0.0, 0.2]),
        named: rng.random_bool(0.2).then(|| {
            let (from, to) = window(rng);
            Named {
                bucket: rng.random_bool(0.5),
                from,
                to,
                n: pick(rng, &[1, 2, 5]),
                w: Duration::from_millis(pick(rng, &[1000, 10_000])),
            }
        }),
    }
}

fn random_relimits(rng: &mut SmallRng, world: &World) -> Vec<Relimit> {
    if !rng.random_bool(0.25) {
        return Vec::new();
    }
    let authority = world.authorities[0].clone();
    let host = authority.split(':').next().unwrap_or_default().to_owned();
    let mut changes: Vec<Relimit> = (0..rng.random_range(1..=3))
        .map(|_| {
            let key = if rng.random_bool(0.5) {
                host.clone()
            } else {
                authority.clone()
            };
            // the same limit in the other form, a new one, or none
            let same = world.config.limits.first().map(|c| c.limit);
            let limit = match rng.random_range(0..10) {
                0..=3 => same.or_else(|| Some(random_limit(rng))),
                4..=7 => Some(random_limit(rng)),
                _ => None,
            };
            Relimit {
                at: millis(rng, 0, 60_000),
                key,
                limit,
            }
        })
        .collect();
    changes.sort_by_key(|c| c.at);
    changes
}

fn random_load(rng: &mut SmallRng, world: &World) -> Vec<Request> {
    let count = if rng.random_bool(0.1) {
        rng.random_range(60..=200)
    } else {
        rng.random_range(1..=40)
    };
    let span = millis(rng, 0, 120_000);
    let shape = rng.random_range(0..3); // 0: one burst, 1: a trickle, 2: a few bursts
    let burst_starts: Vec<Duration> = (0..4).map(|_| millis(rng, 0, 60_000)).collect();
    let has_units = world
        .config
        .limits
        .iter()
        .any(|c| matches!(c.on, LimitOn::Units(_)));
    (0..count)
        .map(|id| {
            let at = match shape {
                0 => Duration::ZERO,
                1 => span.mul_f64(rng.random::<f64>()),
                _ => pick(rng, &burst_starts),
            };
            let method = match rng.random_range(0..20) {
                0..=9 => http::Method::GET,
                10..=14 => http::Method::POST,
                15..=17 => http::Method::PUT,
                _ => http::Method::DELETE,
            };
            let body = if method == http::Method::POST || method == http::Method::PUT {
                pick(rng, &[Body::None, Body::Bytes, Body::Bytes, Body::Stream])
            } else {
                Body::None
            };
            Request {
                id,
                at,
                authority: pick(rng, &world.authorities.iter().collect::<Vec<_>>()).clone(),
                path: pick(rng, &PATHS),
                idempotency_key: method == http::Method::POST && rng.random_bool(0.3),
                method,
                credential: (!world.credentials.is_empty() && rng.random_bool(0.8))
                    .then(|| rng.random_range(0..world.credentials.len())),
                body,
                cost: rng.random_bool(0.1).then(|| rng.random_range(2..=3)),
                units: (has_units && rng.random_bool(0.5)).then(|| rng.random_range(1..=5)),
                deadline: rng.random_bool(0.3).then(|| millis(rng, 100, 60_000)),
                no_retry: rng.random_bool(0.05),
                cancel_after: rng.random_bool(0.1).then(|| millis(rng, 0, 10_000)),
            }
        })
        .collect()
}

/// A world whose one server keeps exactly the configured quota and never fails: a backlog of
/// GETs sent at once must see no refusal and use the quota.
fn kept_world(seed: u64, rng: &mut SmallRng) -> World {
    let authority = format!("{}:{}", HOSTS[0], PORTS[0]);
    let n = pick(rng, &[1, 2, 5, 10, 20, 50]);
    let w = Duration::from_millis(pick(rng, &[100, 1000, 2000, 10_000]));
    let on = if rng.random_bool(0.5) {
        LimitOn::Default
    } else {
        LimitOn::Host(HOSTS[0].into())
    };
    let mut config = random_config(rng, std::slice::from_ref(&authority));
    config.limits = vec![Configured {
        limit: Limit::per(n, w),
        on,
    }];
    config.partitioned = false;
    config.max_in_flight = None;
    let server = Server {
        quota: Quota::Sliding { n, w },
        per_credential: false,
        counts_refused: false,
        refusal_status: 429,
        retry_after: RetryAfterForm::None,
        dialect: Dialect::None,
        error_rate: 0.0,
        burst_5xx: None,
        outage: None,
        outage_retry_after: false,
        outage_resets: false,
        hang_rate: 0.0,
        slowest: Duration::from_millis(pick(rng, &[0, 0, 20])),
        stripe_rate: 0.0,
        named: None,
    };
    let count = rng.random_range(2 * n..=4 * n).max(3);
    let requests = (0..count)
        .map(|id| Request {
            id,
            at: Duration::ZERO,
            authority: authority.clone(),
            path: PATHS[0],
            method: http::Method::GET,
            idempotency_key: false,
            credential: None,
            body: Body::None,
            cost: None,
            units: None,
            deadline: None,
            no_retry: false,
            cancel_after: None,
        })
        .collect();
    World {
        seed,
        config,
        authorities: vec![authority],
        servers: vec![server],
        credentials: Vec::new(),
        requests,
        relimits: Vec::new(),
        kept: true,
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
