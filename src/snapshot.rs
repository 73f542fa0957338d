//! The public views of the state: [`HostSnapshot`] (with its one-line
//! [`Display`](fmt::Display)) and the named parts it is made of, [`ScopeSnapshot`], and the
//! breaker's phase. A leaf: it imports nothing of the crate but [`Limit`].

use std::fmt;
use std::time::Duration;

use crate::limit::Limit;

/// A host's retry budget over its window, in [`HostSnapshot::retry_budget`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryBudgetSnapshot {
    /// Requests counted in the window.
    pub requests: u32,
    /// Retries sent in the window.
    pub retries: u32,
    /// Retries the budget still allows in the window (`u32::MAX` when it is unlimited).
    pub allowed: u32,
}

/// The server's quota for a host as we count it, in [`HostSnapshot::server_quota`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerQuota {
    /// Requests left before the reset, by the server's last word and what we sent since.
    pub remaining: u64,
    /// Time until the quota resets.
    pub resets_in: Duration,
}

/// One line a person can read, for logs and status pages.
///
/// The host key, then the limit and the share of it the pacing runs at now (98% of a smooth
/// limit, for the [safety margin](crate::SAFETY_MARGIN_PERCENT); less while the server's quota
/// runs low or after refusals), then a wait only if there is one (requests queued, or a next
/// slot still ahead), the server's quota and a lowered rate if known, the counters, the breaker
/// and any server-ordered cooldown:
///
/// ```text
/// https://api.example.com: limit 10/s, paced at 98%; 3 queued, next slot in 80 ms; 120 requests, 122 attempts (14 waited for a slot, 2 retries), 1 refused by the server; breaker closed
/// ```
impl fmt::Display for HostSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.key)?;
        if let Some(partition) = &self.partition {
            write!(f, " [{partition}]")?;
        }
        f.write_str(": ")?;
        match (&self.limit, self.interval.is_zero()) {
            (Some(limit), true) => write!(f, "limit {}", LimitText(limit))?,
            (Some(limit), false) => write!(
                f,
                "limit {}, paced at {:.0}%",
                LimitText(limit),
                100.0 * limit.window().as_secs_f64()
                    / f64::from(limit.count())
                    / self.interval.as_secs_f64()
            )?,
            (None, true) => f.write_str("no limit")?,
            (None, false) => write!(
                f,
                "no limit, paced at {}",
                Rate(1.0 / self.interval.as_secs_f64())
            )?,
        }
        if let Some(rate) = self.adaptive_rate {
            write!(f, ", lowered to {} after refusals", Rate(rate))?;
        }

        match (self.queued, self.next_slot_in.is_zero()) {
            (0, true) => {}
            (0, false) => write!(f, "; next slot in {}", Span(self.next_slot_in))?,
            (queued, true) => write!(f, "; {queued} queued")?,
            (queued, false) => write!(
                f,
                "; {queued} queued, next slot in {}",
                Span(self.next_slot_in)
            )?,
        }
        if self.in_flight > 0 {
            write!(f, "; {} in flight", self.in_flight)?;
        }
        if let Some(quota) = self.server_quota {
            write!(
                f,
                "; server quota {} left, resets in {}",
                quota.remaining,
                Span(quota.resets_in)
            )?;
        }

        let c = &self.counters;
        write!(
            f,
            "; {} requests, {} attempts ({} waited for a slot, {} retries), {} refused by the server",
            c.requests, c.attempts, c.waited, c.retries, c.throttled
        )?;
        if c.failures > 0 {
            write!(f, ", {} attempts failed", c.failures)?;
        }
        if c.rejected > 0 {
            write!(f, ", {} not sent", c.rejected)?;
        }

        write!(f, "; breaker {}", self.breaker.phase)?;
        if let (BreakerPhase::Open, Some(retry_in)) = (self.breaker.phase, self.breaker.retry_in) {
            write!(f, ", probe in {}", Span(retry_in))?;
        }
        if let Some(cooldown) = self.cooldown_in {
            write!(f, "; cooling down for {}", Span(cooldown))?;
        }
        Ok(())
    }
}

/// A limit as `10/s`, `100/min`, `5000/h`, or `7 per 2.5 s`, with its burst.
struct LimitText<'a>(&'a Limit);

impl fmt::Display for LimitText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (count, window) = (self.0.count(), self.0.window());
        match window.as_secs() {
            1 if window.subsec_nanos() == 0 => write!(f, "{count}/s")?,
            60 if window.subsec_nanos() == 0 => write!(f, "{count}/min")?,
            3600 if window.subsec_nanos() == 0 => write!(f, "{count}/h")?,
            _ => write!(f, "{count} per {}", Span(window))?,
        }
        if self.0.burst_size() > 1 {
            write!(f, " (burst {})", self.0.burst_size())?;
        }
        Ok(())
    }
}

/// Requests per second, in the unit that keeps a digit before the point.
struct Rate(f64);

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per_second = self.0;
        if per_second >= 1.0 {
            write!(f, "{per_second:.1}/s")
        } else if per_second * 60.0 >= 1.0 {
            write!(f, "{:.1}/min", per_second * 60.0)
        } else {
            write!(f, "{:.1}/h", per_second * 3600.0)
        }
    }
}

/// A duration rounded for reading: `850 µs`, `80 ms`, `2.5 s`, `4 min 10 s`, `2 h 5 min`.
struct Span(Duration);

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        let secs = d.as_secs();
        if d < Duration::from_millis(1) {
            write!(f, "{} µs", d.as_micros())
        } else if d < Duration::from_secs(1) {
            write!(f, "{} ms", d.as_millis())
        } else if secs < 60 {
            write!(f, "{:.1} s", d.as_secs_f64())
        } else if secs < 3600 {
            write!(f, "{} min {} s", secs / 60, secs % 60)
        } else {
            write!(f, "{} h {} min", secs / 3600, secs % 3600 / 60)
        }
    }
}

/// What one host's requests have done so far (since its record was created).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Requests handed to the middleware for this host.
    pub requests: u64,
    /// Attempts sent to the network (retries included).
    pub attempts: u64,
    /// Attempts that had to wait for a pacing slot or a server-ordered pause (a request and
    /// its retries count once each).
    pub waited: u64,
    /// Retries sent.
    pub retries: u64,
    /// Refusals the server answered: `429 Too Many Requests`, and `403`s that say they are a
    /// rate limit (GitHub's).
    pub throttled: u64,
    /// Attempts that failed (5xx responses, transport errors): a request that succeeded on a
    /// retry counts its failed attempts here.
    pub failures: u64,
    /// Attempts the middleware did not send (circuit open, a pause past `max_retry_after`, a
    /// deadline, a cost above the limit, the shared store unavailable): each is an
    /// [`Error`](crate::Error) to the caller, or its last response when a retry was not sent.
    pub rejected: u64,
    /// Retries the retry budget refused.
    pub budget_denied: u64,
}

/// A view of one host's state, from [`Polite::snapshot`](crate::Polite::snapshot). Its
/// `Display` is one line a person can read.
///
/// ```no_run
/// # async fn run(polite: reqwest_polite::Polite) {
/// for host in polite.snapshot() {
///     println!("{host}"); // https://api.example.com: limit 10/s, paced at 98%; ...
///     if let Some(left) = host.cooldown_in {
///         eprintln!("{} asked for a pause of {left:?}", host.key);
///     }
/// }
/// # }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HostSnapshot {
    /// The host key, `scheme://host:port`.
    pub key: String,
    /// The partition tag (a keyed hash of the credential, never the credential itself) when
    /// requests are partitioned by a header; `None` for requests without it, or unpartitioned.
    pub partition: Option<String>,
    /// The configured limit, if any.
    pub limit: Option<Limit>,
    /// How long a new request would wait for a pacing slot (zero: one is free now). This is
    /// the schedule, not a backlog: right after a request took the last free slot it is above
    /// zero with nothing waiting; [`queued`](Self::queued) says whether anything waits.
    pub next_slot_in: Duration,
    /// Time until a server-ordered cooldown ends, if one is running.
    pub cooldown_in: Option<Duration>,
    /// Requests sent and not yet answered.
    pub in_flight: u32,
    /// Requests waiting for a pacing slot.
    pub queued: u32,
    /// The spacing in force between requests (zero: unpaced): the limit's, or longer when the
    /// server's quota runs low or the rate was lowered after a refusal.
    pub interval: Duration,
    /// The rate (requests per second) we lowered to after refusals without a hint, while it
    /// recovers; `None` when not throttled.
    pub adaptive_rate: Option<f64>,
    /// The server's quota as we count it, while one is known.
    pub server_quota: Option<ServerQuota>,
    /// The circuit breaker.
    pub breaker: BreakerSnapshot,
    /// The retry budget in its window.
    pub retry_budget: RetryBudgetSnapshot,
    /// What this host's requests have done so far.
    pub counters: Counters,
}

/// Where a host's breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerPhase {
    /// Requests go through; outcomes are counted.
    Closed,
    /// Requests fail fast without touching the network until the open time is over.
    Open,
    /// A limited number of probe requests go through to test whether the host has recovered.
    HalfOpen,
}

impl fmt::Display for BreakerPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half-open",
        })
    }
}

/// What a host's breaker looks like at one instant, for observability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerSnapshot {
    /// The current phase.
    pub phase: BreakerPhase,
    /// How long the breaker has been in this phase (for a new, never-tripped breaker: since the
    /// host record was created).
    pub since: Duration,
    /// Failures in a row among counted outcomes (0 after a success).
    pub consecutive_failures: u32,
    /// Failures in the failure-rate window (0 without a rate trigger).
    pub window_failures: u32,
    /// Calls in the failure-rate window (0 without a rate trigger).
    pub window_calls: u32,
    /// When open: time left before a probe may go through (zero once it is due).
    pub retry_in: Option<Duration>,
    /// How many times this breaker has opened, including reopenings after failed probes.
    pub times_opened: u64,
}

/// What a scope covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ScopeKind {
    /// Every scheme and port of one host ([`host_limit`](crate::PoliteBuilder::host_limit)
    /// without a port).
    Host,
    /// Paths under a prefix ([`route_limit`](crate::PoliteBuilder::route_limit)).
    Route,
    /// A quota the server named: GitHub's `x-ratelimit-resource`.
    Resource,
    /// A quota the server named: Discord's `x-ratelimit-bucket`.
    Bucket,
    /// A quota the server named: one of the IETF `RateLimit` policies an answer lists (each
    /// its own quota, every one counting each request), within the partition its `pk` names.
    Policy,
    /// A unit other than requests ([`unit_limit`](crate::PoliteBuilder::unit_limit)).
    Unit,
}

impl fmt::Display for ScopeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ScopeKind::Host => "host",
            ScopeKind::Route => "route",
            ScopeKind::Resource => "resource",
            ScopeKind::Bucket => "bucket",
            ScopeKind::Policy => "policy",
            ScopeKind::Unit => "unit",
        })
    }
}

/// A view of one scope beside the host records, from
/// [`Polite::scope_snapshot`](crate::Polite::scope_snapshot).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ScopeSnapshot {
    /// What the scope covers.
    pub kind: ScopeKind,
    /// Which one: `api.github.com`, `api.github.com /search/`, `api.openai.com tokens`,
    /// `https://api.github.com:443 search`.
    pub scope: String,
    /// The partition tag (never the credential), when requests are partitioned.
    pub partition: Option<String>,
    /// The configured limit; `None` for a quota the server named (paced by what it says).
    pub limit: Option<Limit>,
    /// How long a new request would wait for a slot here now.
    pub next_slot_in: Duration,
    /// The spacing between starts in force (zero: unpaced): the limit's, or slower when the
    /// server's quota is spread; a spaced schedule's gap, widened by bare refusals, included.
    pub interval: Duration,
    /// Time until this scope's cooldown (a server-ordered pause) ends, if one is running.
    pub cooldown_in: Option<Duration>,
    /// The server's quota as we count it, while one is known.
    pub server_quota: Option<ServerQuota>,
    /// Units taken in this scope since it was made (requests, or the scope's unit). A scope the
    /// server names is made from the answer that named it, so the request that learned it is
    /// not counted here.
    pub taken: u64,
}

impl fmt::Display for ScopeSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.scope)?;
        if let Some(partition) = &self.partition {
            write!(f, " [{partition}]")?;
        }
        match &self.limit {
            Some(limit) => write!(f, ": limit {limit:?}")?,
            None => f.write_str(": named by the server")?,
        }
        write!(f, ", {} units taken since it was made", self.taken)?;
        if !self.next_slot_in.is_zero() {
            write!(f, "; next slot in {:?}", self.next_slot_in)?;
        }
        if let Some(quota) = &self.server_quota {
            write!(
                f,
                "; server quota {} left, resets in {:?}",
                quota.remaining, quota.resets_in
            )?;
        }
        if let Some(cooldown) = self.cooldown_in {
            write!(f, "; cooling down for {cooldown:?}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A host that has done nothing yet, limited to 10 per second.
    fn fresh() -> HostSnapshot {
        HostSnapshot {
            partition: None,
            key: "https://api.example.com".to_string(),
            limit: Some(Limit::per_second(10)),
            next_slot_in: Duration::ZERO,
            cooldown_in: None,
            in_flight: 0,
            queued: 0,
            interval: Limit::per_second(10).interval(),
            adaptive_rate: None,
            server_quota: None,
            breaker: BreakerSnapshot {
                phase: BreakerPhase::Closed,
                since: Duration::from_secs(3),
                consecutive_failures: 0,
                window_failures: 0,
                window_calls: 0,
                retry_in: None,
                times_opened: 0,
            },
            retry_budget: RetryBudgetSnapshot::default(),
            counters: Counters::default(),
        }
    }

    #[test]
    fn an_idle_host_reads_as_its_limit_counters_and_breaker() {
        assert_eq!(
            fresh().to_string(),
            "https://api.example.com: limit 10/s, paced at 98%; \
             0 requests, 0 attempts (0 waited for a slot, 0 retries), 0 refused by the server; breaker closed"
        );
    }

    #[test]
    fn a_wait_shows_only_when_something_queues_or_the_next_slot_is_ahead() {
        let mut host = fresh();
        host.next_slot_in = 80 * MS;
        assert!(
            host.to_string().contains("; next slot in 80 ms;")
                && !host.to_string().contains("queued"),
            "a slot still ahead with nothing queued is a wait for the next request, not a backlog: {host}"
        );

        host.queued = 3;
        assert!(
            host.to_string().contains("; 3 queued, next slot in 80 ms;"),
            "queued requests and the next slot: {host}"
        );

        host.next_slot_in = Duration::ZERO;
        assert!(
            host.to_string().contains("; 3 queued;"),
            "queued behind something other than pacing: {host}"
        );

        host.queued = 0;
        assert!(
            !host.to_string().contains("next slot") && !host.to_string().contains("queued"),
            "nothing pending reads as nothing pending: {host}"
        );
    }

    #[test]
    fn a_troubled_host_shows_quota_rate_breaker_and_cooldown() {
        let mut host = fresh();
        host.limit = None;
        host.interval = 250 * MS;
        host.adaptive_rate = Some(4.0);
        host.server_quota = Some(ServerQuota {
            remaining: 0,
            resets_in: Duration::from_millis(2500),
        });
        host.cooldown_in = Some(Duration::from_secs(125));
        host.in_flight = 2;
        host.breaker.phase = BreakerPhase::Open;
        host.breaker.retry_in = Some(Duration::from_secs(5));
        host.counters = Counters {
            requests: 120,
            attempts: 130,
            waited: 14,
            retries: 10,
            throttled: 3,
            failures: 5,
            rejected: 7,
            budget_denied: 0,
        };
        assert_eq!(
            host.to_string(),
            "https://api.example.com: no limit, paced at 4.0/s, lowered to 4.0/s after refusals; \
             2 in flight; server quota 0 left, resets in 2.5 s; \
             120 requests, 130 attempts (14 waited for a slot, 10 retries), 3 refused by the server, \
             5 attempts failed, 7 not sent; \
             breaker open, probe in 5.0 s; cooling down for 2 min 5 s"
        );
    }

    #[test]
    fn the_paced_share_falls_when_the_pacing_slows_below_the_limit() {
        let mut host = fresh();
        host.interval = 200 * MS;
        assert!(
            host.to_string()
                .starts_with("https://api.example.com: limit 10/s, paced at 50%;"),
            "half the limit's rate: {host}"
        );
    }

    #[test]
    fn limits_read_in_their_own_unit() {
        let text = |l: Limit| LimitText(&l).to_string();
        assert_eq!(text(Limit::per_minute(100)), "100/min");
        assert_eq!(text(Limit::per_hour(5000)), "5000/h");
        assert_eq!(text(Limit::per(7, 2500 * MS)), "7 per 2.5 s");
        assert_eq!(text(Limit::per_second(10).burst(5)), "10/s (burst 5)");
    }

    #[test]
    fn rates_and_spans_round_for_reading() {
        assert_eq!(Rate(12.34).to_string(), "12.3/s");
        assert_eq!(Rate(0.5).to_string(), "30.0/min");
        assert_eq!(Rate(1.0 / 3600.0).to_string(), "1.0/h");
        assert_eq!(Span(Duration::from_micros(850)).to_string(), "850 µs");
        assert_eq!(Span(80 * MS).to_string(), "80 ms");
        assert_eq!(Span(Duration::from_secs(61)).to_string(), "1 min 1 s");
        assert_eq!(Span(Duration::from_secs(7500)).to_string(), "2 h 5 min");
    }
}
