//! What one quota covers (a *scope*), and which scopes a request falls in.
//!
//! Every request is paced by its host record (scheme + host + port, see [`crate::host`]) and,
//! on top of it, by every other scope it falls in: a host-wide limit shared by all the ports
//! of a host, a route limit for paths under a prefix, a unit limit (tokens), a quota the server
//! named (GitHub's resources, Discord's buckets). A request takes a slot in each, or waits for
//! the last of them; a cooldown (Retry-After, a spent quota) holds back the scope it came from,
//! never a sibling. With [`partition_by_header`](crate::PoliteBuilder::partition_by_header),
//! each credential has its own set of all of these.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;
use url::Url;

use crate::limit::Limit;
use crate::pacing::Decision;
use crate::partition::Partition;
use crate::record::{Record, Schedule, View};
use crate::snapshot::{ScopeKind, ScopeSnapshot};

/// Every configured quota: what the builder (and [`set_host_limit`](crate::Polite::set_host_limit))
/// say, as data; the record of each host and scope is made from it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Limits {
    /// Every host record (scheme, host and port), unless a host limit covers the host.
    pub(crate) default: Option<Limit>,
    /// Keys in [`host_limit_key`] form: `host` (every port, one shared quota) or `host:port`.
    pub(crate) hosts: HashMap<String, Limit>,
    pub(crate) routes: Vec<RouteLimit>,
    pub(crate) units: Vec<UnitLimit>,
}

/// [`route_limit`](crate::PoliteBuilder::route_limit): paths of `host` under `prefix`.
#[derive(Debug, Clone)]
pub(crate) struct RouteLimit {
    /// In [`host_limit_key`] form.
    pub(crate) host: String,
    pub(crate) prefix: String,
    pub(crate) limit: Limit,
}

/// [`unit_limit`](crate::PoliteBuilder::unit_limit): `unit` of `host`.
#[derive(Debug, Clone)]
pub(crate) struct UnitLimit {
    /// In [`host_limit_key`] form.
    pub(crate) host: String,
    pub(crate) unit: String,
    pub(crate) limit: Limit,
}

/// What the configuration says about one host record ([`Limits::for_host`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct HostLimits {
    /// The limit the record's own schedule paces by: `limit`, or a `host_limit` naming the
    /// port.
    pub(crate) own: Option<Limit>,
    /// The user's word on the host's quota, which the record adapts around (refusals never
    /// take it below half, refusals in a row pause a quarter of its window): `own`, or the
    /// port-less `host_limit` whose scope paces the record from outside.
    pub(crate) configured: Option<Limit>,
}

impl HostLimits {
    /// A record paced by its own limit (or by nothing).
    pub(crate) fn own(limit: Option<Limit>) -> Self {
        HostLimits {
            own: limit,
            configured: limit,
        }
    }
}

/// A URL's host as [`host_limit_key`] spells keys, and `host:port`.
pub(crate) fn host_names(url: &Url) -> (String, Option<String>) {
    let host = match url.host() {
        Some(url::Host::Ipv6(addr)) => format!("[{addr}]"),
        _ => url.host_str().unwrap_or_default().to_owned(),
    };
    let with_port = url
        .port_or_known_default()
        .map(|port| format!("{host}:{port}"));
    (host, with_port)
}

impl Limits {
    /// True when anything beyond host records is configured: host-wide, route or unit limits.
    pub(crate) fn has_scopes(&self) -> bool {
        !self.routes.is_empty()
            || !self.units.is_empty()
            || self.hosts.keys().any(|key| !has_port(key))
    }

    /// What the configuration says about a URL's host record: the limit it paces by (its
    /// `host:port` limit, or the default when no host-wide limit covers its host), and the
    /// limit it adapts around (that one, or the host-wide limit that paces it from outside).
    pub(crate) fn for_host(&self, url: &Url) -> HostLimits {
        if self.hosts.is_empty() {
            return HostLimits::own(self.default);
        }
        let (host, with_port) = host_names(url);
        if let Some(limit) = with_port.and_then(|key| self.hosts.get(&key)) {
            return HostLimits::own(Some(*limit));
        }
        match self.hosts.get(&host) {
            // the host-wide scope paces it; the record adapts around the same word
            Some(limit) => HostLimits {
                own: None,
                configured: Some(*limit),
            },
            None => HostLimits::own(self.default),
        }
    }

    /// The host-wide scope a URL falls in: its host's name and limit.
    pub(crate) fn host_wide(&self, url: &Url) -> Option<(String, Limit)> {
        if self.hosts.is_empty() {
            return None;
        }
        let (host, _) = host_names(url);
        let limit = *self.hosts.get(&host)?;
        Some((host, limit))
    }

    /// The route limits whose host and path prefix a URL falls under.
    pub(crate) fn routes<'a>(&'a self, url: &Url) -> impl Iterator<Item = &'a RouteLimit> {
        let (host, with_port) = host_names(url);
        let path = url.path().to_owned();
        self.routes.iter().filter(move |route| {
            (route.host == host || with_port.as_deref() == Some(route.host.as_str()))
                && path.starts_with(&route.prefix)
        })
    }

    /// The limit of `unit` for a URL's host, if one is configured.
    pub(crate) fn unit(&self, url: &Url, unit: &str) -> Option<&UnitLimit> {
        if self.units.is_empty() {
            return None;
        }
        let (host, with_port) = host_names(url);
        self.units.iter().find(|limit| {
            limit.unit == unit
                && (limit.host == host || with_port.as_deref() == Some(limit.host.as_str()))
        })
    }

    /// The most specific limit that covers a URL: `host:port`, then `host`, then the default.
    #[cfg(test)]
    pub(crate) fn most_specific(&self, url: &Url) -> Option<Limit> {
        let (host, with_port) = host_names(url);
        with_port
            .and_then(|key| self.hosts.get(&key).copied())
            .or_else(|| self.hosts.get(&host).copied())
            .or(self.default)
    }
}

/// True for a `host:port` key (an IPv6 literal's colons are inside its brackets).
fn has_port(key: &str) -> bool {
    match key.rsplit_once(']') {
        Some((_, after)) => after.starts_with(':'),
        None => key.contains(':'),
    }
}

/// The form a [`PoliteBuilder::host_limit`](crate::PoliteBuilder::host_limit) key is kept in:
/// lower case, and an IPv6 literal, with or without brackets (`::1`, `[::1]`, `[::1]:8080`), in
/// brackets and spelled as [`Ipv6Addr`]'s `Display` does, so that any spelling of one address
/// matches the URL's.
pub(crate) fn host_limit_key(host: &str) -> String {
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

/// The end of a policy's fixed window in which it sends nothing (see [`ScopeState::peek`]):
/// twice the margin our reset keeps past the server's, and at most a quarter of the window.
///
/// A tail as long as the window would close the policy again at every renewal, for good (a
/// `w=0.05` policy would never send after its first reset): windows up to 400 ms keep three
/// quarters of each window open.
fn renewal_tail(window: Duration) -> Duration {
    (crate::pacing::quota::RESET_MARGIN * 2).min(window / 4)
}

/// The cooldowns (`Retry-After`) an answer set, for the fleet to share: a scope's, or the host's
/// (`None`), and how long each lasts.
pub(crate) type Cooldowns = Vec<(Option<Arc<Scope>>, Duration)>;

/// One scope's record, and what only scopes have beside it: what kind of quota it is, and
/// what it covers.
#[derive(Debug)]
pub(crate) struct Scope {
    /// Its key: partition, kind, host and name. Requests held back by this scope wait in its
    /// queue, not in their host's, so a spent route never blocks the host's other routes.
    pub(crate) record: Record<ScopeState>,
    pub(crate) kind: ScopeKind,
    /// What it covers, for people: `api.github.com /search/`, `api.openai.com tokens`.
    pub(crate) label: Arc<str>,
}

/// The mutable part of a scope's record.
#[derive(Debug)]
pub(crate) struct ScopeState {
    pub(crate) schedule: Schedule,
    /// Units taken so far (requests, or the scope's unit).
    pub(crate) taken: u64,
    /// An IETF policy's quota and window (`q`, `w`): its windows are fixed, so at each reset
    /// its count starts again at the quota.
    pub(crate) renewal: Option<(u64, Duration)>,
}

impl ScopeState {
    /// May `units` start here at `now`? As [`Pacing::peek`]; a policy's window that has reset
    /// starts again at its quota first.
    ///
    /// Our reset of a fixed window runs a little behind the server's (a margin for clocks and
    /// whole-second `t`), so a request sent in that tail lands in the server's next window,
    /// which the renewal hands out in full: a policy sends nothing in the last
    /// [`renewal_tail`] of its window.
    pub(crate) fn peek(&mut self, now: Instant, units: u32) -> Result<bool, Decision> {
        let pacing = &mut self.schedule.pacing;
        if let Some((quota, window)) = self.renewal {
            pacing.quota.renew(now, quota, window);
            if let Some(quota) = pacing.quota.remaining(now)
                && quota.resets_in < renewal_tail(window)
            {
                return Err(Decision::CoolingDown(now + quota.resets_in));
            }
        }
        pacing.peek(now, units, None)
    }

    /// Take the slot [`Pacing::peek`] allowed, `units` of it.
    pub(crate) fn take(&mut self, now: Instant, units: u32) {
        self.schedule.pacing.take(now, units, false, None);
        self.schedule.touch(now);
        self.taken += u64::from(units);
    }
}

impl Scope {
    /// A scope paced by `limit`, or by what the server says (`None`: a quota the server named).
    pub(crate) fn new(
        key: &str,
        kind: ScopeKind,
        label: &str,
        partition: Option<Partition>,
        limit: Option<Limit>,
        generation: u64,
        now: Instant,
    ) -> Self {
        let state = ScopeState {
            schedule: Schedule::new(limit.as_ref(), limit.is_some(), generation, now, false),
            taken: 0,
            renewal: None,
        };
        Scope {
            record: Record::new(Arc::from(key), partition, state),
            kind,
            label: Arc::from(label),
        }
    }

    /// Lock the state.
    pub(crate) fn state(&self) -> MutexGuard<'_, ScopeState> {
        self.record.lock()
    }

    /// True when the record carries nothing worth keeping at `now`.
    pub(crate) fn is_idle(&self, now: Instant, idle_after: Duration) -> bool {
        self.state().schedule.is_idle(now, idle_after)
    }

    pub(crate) fn snapshot(&self, now: Instant) -> ScopeSnapshot {
        let state = self.state();
        let View {
            limit,
            next_slot_in,
            interval,
            cooldown_in,
            server_quota,
        } = state.schedule.view(now, None);
        ScopeSnapshot {
            kind: self.kind,
            scope: self.label.to_string(),
            partition: self.record.partition.map(|p| p.to_string()),
            limit,
            next_slot_in,
            interval,
            cooldown_in,
            server_quota,
            taken: state.taken,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_of_any_short_window_reopens_at_each_reset() {
        // q=10 per `w`, spent at once; the first reset is a whole second away (`t` rounded up)
        for window_us in [
            1_000, 10_000, 50_000, 100_000, 250_000, 1_000_000, 60_000_000,
        ] {
            let window = Duration::from_micros(window_us);
            let t0 = Instant::now();
            let scope = Scope::new("p", ScopeKind::Policy, "p", None, None, 0, t0);
            let mut state = scope.state();
            state.renewal = Some((10, window));
            let spent = crate::signals::ServerHint {
                remaining: Some(0),
                limit: Some(10),
                reset_in: Some(Duration::from_secs(1)),
                ..Default::default()
            };
            state
                .schedule
                .pacing
                .observe_quota(t0, None, false, 200, &spent, true);
            // follow the scope's own word on when to ask again, for three windows past the
            // first reset: 10 go in each
            let (mut now, mut sent, mut asked) = (t0, 0, 0);
            let until =
                t0 + Duration::from_secs(1) + crate::pacing::quota::RESET_MARGIN + 3 * window;
            while now < until {
                asked += 1;
                assert!(
                    asked < 10_000,
                    "w={window:?}: asked {asked} times, {sent} sent"
                );
                match state.peek(now, 1) {
                    Ok(_) => {
                        state.take(now, 1);
                        sent += 1;
                    }
                    Err(Decision::CoolingDown(at) | Decision::Wait(at) | Decision::Slowed(at)) => {
                        assert!(at > now, "w={window:?}: a wait that ends now");
                        now = at;
                    }
                    Err(other) => panic!("w={window:?}: {other:?}"),
                }
            }
            // each window lets its quota go, but for the last unit, which the spread of a low
            // quota may hold to the next reset
            assert!(
                sent >= 3 * 9,
                "w={window:?}: {sent} sent in three windows after the first reset: the policy \
                 did not reopen at each"
            );
        }
    }
}
