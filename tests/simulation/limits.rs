//! Promise 1: no configured limit ever sees more than `n` starts in any window `w`, per scope
//! and per partition, with the limits as they stand when each attempt begins (run-time
//! changes included).

use std::collections::HashMap;

use reqwest_polite::Limit;
use tokio::time::Instant;

use super::checks::{LIMITS, Violation, elapsed, partition, violation};
use super::server::{Log, Start};
use super::world::{Configured, LimitOn, World};

/// The configured limits in force once the first `epoch` run-time changes are made.
pub fn limits_in(world: &World, epoch: usize) -> Vec<Configured> {
    let mut limits = world.config.limits.clone();
    for change in &world.relimits[..epoch] {
        let on = change.on();
        limits.retain(|c| c.on != on);
        if let Some(limit) = change.limit {
            limits.push(Configured { limit, on });
        }
    }
    limits
}

/// The configured quotas an attempt takes a slot in under `limits`, with how much it takes
/// in each: the middleware's routing, restated from its documentation.
fn quotas_of(world: &World, limits: &[Configured], start: &Start) -> Vec<(String, Limit, u32)> {
    let (host, _) = start.authority.split_once(':').unwrap_or_default();
    let p = credential_name(world, start);
    let find = |on: &dyn Fn(&LimitOn) -> bool| {
        let mut found = limits.iter().filter(|c| on(&c.on));
        found.next().map(|c| c.limit)
    };
    let own_port = find(&|on| *on == LimitOn::Authority(start.authority.clone()));
    let host_wide = find(&|on| *on == LimitOn::Host(host.to_owned()));
    let own = own_port.or_else(|| match host_wide {
        None => find(&|on| *on == LimitOn::Default),
        Some(_) => None,
    });
    let mut quotas = Vec::new();
    if let Some(limit) = own {
        quotas.push((format!("own {} {p}", start.authority), limit, start.cost));
    }
    if let Some(limit) = host_wide {
        quotas.push((format!("host {host} {p}"), limit, start.cost));
    }
    let route = find(
        &|on| matches!(on, LimitOn::Route(h, prefix) if h == host && start.path.starts_with(prefix.as_str())),
    );
    if let Some(limit) = route {
        quotas.push((format!("route {host} {p}"), limit, start.cost));
    }
    let units = find(&|on| matches!(on, LimitOn::Units(h) if h == host));
    if let (Some(limit), Some(units)) = (units, start.units) {
        quotas.push((format!("units {host} {p}"), limit, units));
    }
    quotas
}

/// Which credential (by number) a start's partition is, for the violation's text.
fn credential_name(world: &World, start: &Start) -> String {
    let credential = partition(world, start);
    let i = credential.and_then(|c| world.credentials.iter().position(|k| k == c));
    i.map_or("-".into(), |i| format!("credential {i}"))
}

/// For each start, how many run-time changes were made before its request came in, or `None`
/// when another change was made before it started: a change takes effect "from the next
/// request on", so a request that came in before it (all its attempts) and one that waited
/// across it may be paced by the limit its record had.
fn epochs(log: &Log) -> Vec<Option<usize>> {
    let before = |seq: u64| log.relimits.iter().filter(|r| **r < seq).count();
    let epoch = |s: &Start| Some(before(s.entered_seq)).filter(|e| *e == before(s.seq));
    log.starts.iter().map(epoch).collect()
}

pub fn limits_kept(world: &World, log: &Log, found: &mut Vec<Violation>) {
    let epochs = epochs(log);
    let tables: Vec<Vec<Configured>> = (0..=log.relimits.len())
        .map(|e| limits_in(world, e))
        .collect();
    let mut starts: HashMap<String, (Limit, Vec<(Instant, u32)>)> = HashMap::new();
    for (start, epoch) in log.starts.iter().zip(&epochs) {
        let Some(epoch) = epoch else { continue };
        for (key, limit, weight) in quotas_of(world, &tables[*epoch], start) {
            let key = format!("{key} (limits after {epoch} changes)");
            let entry = starts.entry(key).or_insert((limit, Vec::new()));
            entry.1.push((start.at, weight));
        }
    }
    let mut keys: Vec<_> = starts.keys().cloned().collect();
    keys.sort();
    for key in keys {
        let (limit, at) = &starts[&key];
        if let Some(detail) = over(log, limit.count(), window(world, *limit), at) {
            let detail = format!("{key}: {detail} burst {}", limit.burst_size());
            return violation(found, LIMITS, detail);
        }
    }
    across_changes(world, log, &tables, found);
}

/// The window a limit is checked over: its own, less what a timer on real time may be late
/// by (the Redis worlds).
fn window(world: &World, limit: Limit) -> std::time::Duration {
    let late = std::time::Duration::from_millis(if world.real_time { 50 } else { 0 });
    limit.window().saturating_sub(late)
}

/// The first window of `w` in which the weights of `at` add up to more than `n`.
fn over(log: &Log, n: u32, w: std::time::Duration, at: &[(Instant, u32)]) -> Option<String> {
    let mut sum = 0u32;
    let mut first = 0;
    for (last, (t, weight)) in at.iter().enumerate() {
        sum += weight;
        while *t - at[first].0 >= w {
            sum -= at[first].1;
            first += 1;
        }
        if sum > n {
            return Some(format!(
                "{sum} in {:?} from t={:.4} to t={:.4} ({} starts), limit {n} per {w:?}",
                *t - at[first].0,
                elapsed(log, at[first].0),
                elapsed(log, *t),
                last - first + 1,
            ));
        }
    }
    None
}

/// The one limit that paces `authority` under `limits` (its own, or its host-wide one), if
/// exactly one does, and whether it is the host-wide one.
fn only_limit(limits: &[Configured], authority: &str) -> Option<(Limit, bool)> {
    let (host, _) = authority.split_once(':').unwrap_or_default();
    let covering: Vec<(Limit, bool)> = limits
        .iter()
        .filter_map(|c| match &c.on {
            LimitOn::Authority(a) if a == authority => Some((c.limit, false)),
            LimitOn::Host(h) if h == host => Some((c.limit, true)),
            _ => None,
        })
        .collect();
    match covering[..] {
        [one] => Some(one),
        [] => limits
            .iter()
            .find(|c| c.on == LimitOn::Default)
            .map(|c| (c.limit, false)),
        _ => None,
    }
}

/// Across a run-time change of the limit that paces an authority, from one window length to
/// the same: what was taken stands, so no window holds more than the larger count (a change
/// between the `host` and `host:port` forms must not start a fresh schedule).
fn across_changes(
    world: &World,
    log: &Log,
    tables: &[Vec<Configured>],
    found: &mut Vec<Violation>,
) {
    let authority = &world.authorities[0];
    for change in 1..tables.len() {
        // the same limit in another form (`host:port` or port-less) counts as the same limit
        let (Some((old, _)), Some((new, _))) = (
            only_limit(&tables[change - 1], authority),
            only_limit(&tables[change], authority),
        ) else {
            continue;
        };
        if old.window() != new.window() {
            continue;
        }
        let mut by_partition: HashMap<String, Vec<(Instant, u32)>> = HashMap::new();
        // the starts of requests that came in under either limit, and started under either
        let before = |seq: u64| log.relimits.iter().filter(|r| **r < seq).count();
        let either = |seq: u64| (change - 1..=change).contains(&before(seq));
        for s in &log.starts {
            if s.authority == *authority && either(s.entered_seq) && either(s.seq) {
                let at = by_partition.entry(credential_name(world, s)).or_default();
                at.push((s.at, s.cost));
            }
        }
        let n = old.count().max(new.count());
        let mut partitions: Vec<_> = by_partition.into_iter().collect();
        partitions.sort();
        for (p, at) in partitions {
            if let Some(detail) = over(log, n, window(world, old), &at) {
                let detail = format!(
                    "{authority} {p} across run-time change {change} ({} per {:?} to {} per {:?}): {detail}",
                    old.count(),
                    old.window(),
                    new.count(),
                    new.window()
                );
                return violation(found, LIMITS, detail);
            }
        }
    }
}
