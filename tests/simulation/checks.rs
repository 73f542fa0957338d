//! The promises, each a named check over what a world saw.

use std::collections::HashMap;
use std::time::Duration;

use reqwest_polite::{BreakerPhase, Polite, Retryable};
use tokio::time::Instant;

use super::load::{Ended, Ending};
use super::server::{Log, Start};
use super::world::{Body, CREDENTIAL_HEADER, World};

/// A broken promise: the check's name and what it saw.
#[derive(Debug, Clone)]
pub struct Violation {
    pub check: &'static str,
    pub detail: String,
}

pub const LIMITS: &str = "1 limits_kept";
pub const PAUSES: &str = "2 pauses_obeyed";
pub const UNSAFE: &str = "3 unsafe_sent_once";
pub const ENDS: &str = "4 requests_end";
pub const SWEPT: &str = "5 records_swept";
pub const SECRETS: &str = "6 no_panic_no_secret";
pub const QUOTA: &str = "7 quota_used";

/// Every check over the load's log; `ended[i]` is request `i`'s end (`None`: still running).
pub fn after_load(world: &World, log: &Log, ended: &[Option<Ended>]) -> Vec<Violation> {
    let mut found = Vec::new();
    super::limits::limits_kept(world, log, &mut found);
    pauses_obeyed(world, log, &mut found);
    unsafe_sent_once(world, log, &mut found);
    requests_end(world, log, ended, &mut found);
    no_panic_no_secret(log, ended, &mut found);
    quota_used(world, log, &mut found);
    found
}

pub fn violation(found: &mut Vec<Violation>, check: &'static str, detail: String) {
    found.push(Violation { check, detail });
}

pub fn partition<'a>(world: &World, start: &'a Start) -> Option<&'a str> {
    start
        .credential
        .as_deref()
        .filter(|_| world.config.partitioned)
}

pub fn elapsed(log: &Log, at: Instant) -> f64 {
    (at - log.t0).as_secs_f64()
}

/// 2. No start while a `Retry-After` the server sent for its scope runs, nor while its
///    host's breaker is open (probes come after the breaker half-opens).
fn pauses_obeyed(world: &World, log: &Log, found: &mut Vec<Violation>) {
    for closure in &log.closures {
        let early = log.starts.iter().find(|s| {
            s.seq > closure.seq
                && s.at < closure.until
                && s.authority == closure.authority
                && partition(world, s) == closure.partition.as_deref()
                && closure.path.as_ref().is_none_or(|p| *p == s.path)
        });
        if let Some(s) = early {
            let detail = format!(
                "#{} {} {}{} (came in at t={:.4}) started at t={:.4}, while a Retry-After answered to #{} at t={:.4} held it until t={:.4}",
                s.request,
                s.method,
                s.authority,
                s.path,
                world.requests[s.request as usize].at.as_secs_f64(),
                elapsed(log, s.at),
                closure.request,
                elapsed(log, closure.at),
                elapsed(log, closure.until)
            );
            return violation(found, PAUSES, detail);
        }
    }
    // a breaker fails fast for its open time; after it, the next request is its probe (or,
    // once the record has been idle, a request to a record made afresh)
    let mut open: HashMap<(&str, Option<&str>), (u64, Instant)> = HashMap::new();
    let mut marks = log.breaker.iter().peekable();
    for s in &log.starts {
        while let Some(mark) = marks.next_if(|m| m.seq < s.seq) {
            let key = (mark.host.as_str(), mark.partition.as_deref());
            match mark.phase {
                BreakerPhase::Open => {
                    let until = mark.at + mark.open_for.unwrap_or_default();
                    open.insert(key, (mark.seq, until))
                }
                _ => open.remove(&key),
            };
        }
        let host = format!("http://{}", s.authority);
        let key = (host.as_str(), partition(world, s));
        let open_now = open.get(&key).filter(|(_, until)| s.at < *until);
        if let Some((since, _)) = open_now {
            let opened = log.breaker.iter().find(|m| m.seq == *since).map(|m| m.at);
            let detail = format!(
                "#{} {} {}{} (attempt {}, entered at t={:.4}) started at t={:.4} while its breaker was open (since t={:.4})",
                s.request,
                s.method,
                s.authority,
                s.path,
                attempt_of(log, s),
                world.requests[s.request as usize].at.as_secs_f64(),
                elapsed(log, s.at),
                opened.map_or(f64::NAN, |at| elapsed(log, at)),
            );
            return violation(found, PAUSES, detail);
        }
    }
    half_open_probes(world, log, found);
}

/// Which attempt of its request `start` is (1: the first).
fn attempt_of(log: &Log, start: &Start) -> usize {
    let earlier = log.starts.iter().take_while(|s| s.seq <= start.seq);
    earlier.filter(|s| s.request == start.request).count()
}

/// While a breaker is half-open, at most `half_open_probes` attempts out at once on its host.
fn half_open_probes(world: &World, log: &Log, found: &mut Vec<Violation>) {
    for (i, mark) in log.breaker.iter().enumerate() {
        if mark.phase != BreakerPhase::HalfOpen {
            continue;
        }
        let same =
            |m: &&super::server::BreakerMark| m.host == mark.host && m.partition == mark.partition;
        let until = log.breaker[i + 1..]
            .iter()
            .find(same)
            .map_or(u64::MAX, |m| m.seq);
        let probes = log.starts.iter().filter(|s| {
            s.seq > mark.seq
                && s.seq < until
                && format!("http://{}", s.authority) == mark.host
                && partition(world, s) == mark.partition.as_deref()
        });
        // at a time: a probe that ends without an answer (cancelled, refused before it was
        // sent) frees its place; one without an answer here counts as over at once
        let probes: Vec<&Start> = probes.collect();
        let most = probes.iter().map(|p| {
            let out = |q: &&&Start| q.seq <= p.seq && q.answer.is_some_and(|a| a.seq > p.seq);
            probes.iter().filter(out).count()
        });
        if most.max().unwrap_or(0) as u32 > world.config.probes {
            let probes: Vec<String> = probes
                .iter()
                .map(|s| format!("#{} at t={:.4}", s.request, elapsed(log, s.at)))
                .collect();
            let detail = format!(
                "{probes:?} out at once on {} while its breaker was half-open from t={:.4} ({} probes allowed)",
                mark.host,
                elapsed(log, mark.at),
                world.config.probes
            );
            return violation(found, PAUSES, detail);
        }
    }
}

/// 3. A request is sent at most `max_retries + 1` times, never again after a success, and a
///    non-idempotent request without a key only again after a refusal or a failure the server
///    vouched for with `Stripe-Should-Retry: true` (`SafeOnly`), or never (`Never`, `NoRetry`,
///    a streaming body).
fn unsafe_sent_once(world: &World, log: &Log, found: &mut Vec<Violation>) {
    let mut attempts: HashMap<u32, Vec<&Start>> = HashMap::new();
    for s in &log.starts {
        attempts.entry(s.request).or_default().push(s);
    }
    let mut ids: Vec<_> = attempts.keys().copied().collect();
    ids.sort();
    let config = &world.config;
    for id in ids {
        let sent = &attempts[&id];
        let r = &world.requests[id as usize];
        let once = r.no_retry || r.body == Body::Stream || config.retryable == Retryable::Never;
        let most = if once { 1 } else { config.max_retries + 1 };
        let repeatable = r.idempotency_key || r.method != http::Method::POST;
        let mut problem = None;
        if sent.len() as u32 > most {
            problem = Some(format!("sent {} times, at most {most} allowed", sent.len()));
        }
        for pair in sent.windows(2) {
            let before = pair[0].answer;
            let status = before.and_then(|a| a.status);
            if status.is_some_and(|s| s < 400) {
                let stripe = before.and_then(|a| a.stripe);
                problem = Some(format!(
                    "sent again after a {status:?} (Stripe-Should-Retry {stripe:?})"
                ));
            }
            let refused = before.is_some_and(|a| a.refusal);
            // a server that says `Stripe-Should-Retry: true` on a failure vouches for the retry
            let stripe = before.and_then(|a| a.stripe);
            let vouched = stripe == Some(true) && status.is_some_and(|s| s >= 400);
            if !repeatable && config.retryable == Retryable::SafeOnly && !refused && !vouched {
                problem = Some(format!(
                    "a POST without a key sent again after {status:?} (Stripe-Should-Retry {stripe:?})"
                ));
            }
        }
        if let Some(problem) = problem {
            let detail = format!("#{id} {} {}{}: {problem}", r.method, r.authority, r.path);
            return violation(found, UNSAFE, detail);
        }
    }
}

/// 4. Every request ends: with a deadline, by the deadline or its last answer, whichever is
///    later; without, before the horizon.
fn requests_end(world: &World, log: &Log, ended: &[Option<Ended>], found: &mut Vec<Violation>) {
    let mut last_answer: HashMap<u32, Instant> = HashMap::new();
    for s in &log.starts {
        if let Some(a) = s.answer {
            let last = last_answer.entry(s.request).or_insert(a.at);
            *last = (*last).max(a.at);
        }
    }
    let mut last_status: HashMap<u32, Option<u16>> = HashMap::new();
    for s in &log.starts {
        last_status.insert(s.request, s.answer.and_then(|a| a.status));
    }
    for (r, end) in world.requests.iter().zip(ended) {
        let Some(end) = end else {
            let detail = format!(
                "#{} {} {}{} still running at the horizon",
                r.id, r.method, r.authority, r.path
            );
            return violation(found, ENDS, detail);
        };
        // the caller gets the last answer: retries refused or run out, it comes back
        let returned = match &end.how {
            Ending::Answer(status) => Some(Some(*status)),
            Ending::Transport => Some(None),
            // an error of ours after an answer: the answer is lost (0 matches no status)
            Ending::Refused(_) => Some(Some(0)),
            _ => None,
        };
        if let (Some(got), Some(last)) = (returned, last_status.get(&r.id))
            && got != *last
        {
            let detail = format!(
                "#{} {} {}{}: the server's last answer was {last:?}, the caller got {:?}",
                r.id, r.method, r.authority, r.path, end.how
            );
            return violation(found, ENDS, detail);
        }
        let Some(deadline) = r.deadline else { continue };
        if matches!(end.how, Ending::Cancelled) {
            continue;
        }
        let due = end.entered + deadline;
        let bound = last_answer.get(&r.id).map_or(due, |a| due.max(*a));
        // on real time, a timer wakes up to a few milliseconds late
        let slack = Duration::from_millis(if world.real_time { 50 } else { 0 });
        if end.at > bound + slack {
            let detail = format!(
                "#{} {} {}{} with a deadline at t={:.4} ended at t={:.4} ({:?})",
                r.id,
                r.method,
                r.authority,
                r.path,
                elapsed(log, due),
                elapsed(log, end.at),
                end.how
            );
            return violation(found, ENDS, detail);
        }
    }
}

/// 6. Nothing panicked, and no credential showed in an event or an error (snapshots are
///    scanned by [`swept`]).
fn no_panic_no_secret(log: &Log, ended: &[Option<Ended>], found: &mut Vec<Violation>) {
    for end in ended.iter().flatten() {
        if let Ending::Panicked(text) = &end.how {
            return violation(found, SECRETS, format!("#{} panicked: {text}", end.id));
        }
    }
    if let Some(leak) = log.leaks.first() {
        violation(found, SECRETS, format!("a credential in {leak}"));
    }
}

/// 7. With the quota configured and a server that keeps it, no refusal, and a backlog uses at
///    least 97% of the quota (smooth shaping: the schedule's own margin is 2%).
fn quota_used(world: &World, log: &Log, found: &mut Vec<Violation>) {
    if !world.kept {
        return;
    }
    let refused = log
        .starts
        .iter()
        .filter(|s| s.answer.is_some_and(|a| a.refusal))
        .count();
    if refused > 0 {
        return violation(
            found,
            QUOTA,
            format!("{refused} refusals from a server that keeps the configured quota"),
        );
    }
    let limit = world.config.limits[0].limit;
    // the first answer starts a host-wide schedule (the first request is a scout): the
    // quota is measured from the second start
    let (Some(first), Some(last)) = (log.starts.get(1), log.starts.last()) else {
        return;
    };
    let span = (last.at - first.at).as_secs_f64();
    let slots = (log.starts.len() - 2) as f64;
    // the paused clock wakes on whole milliseconds (tokio's timer tick; on a running clock
    // the middleware yields to the slot itself): measured against the schedule's slots
    // rounded up to a tick, so that a schedule kept to the tick scores as it would untimed
    let interval = limit.interval().as_nanos() as f64;
    let ticked = limit.interval().as_nanos().div_ceil(1_000_000) as f64 * 1e6;
    let window = limit.window().as_secs_f64();
    let quota_span = slots * window / f64::from(limit.count()) * ticked / interval;
    if span > 0.0 && quota_span / span < 0.97 {
        let detail = format!(
            "{} starts took {span:.4} s, the quota ({} per {:?}) allows {quota_span:.4} s: {:.1}% used",
            log.starts.len(),
            limit.count(),
            limit.window(),
            100.0 * quota_span / span
        );
        violation(found, QUOTA, detail);
    }
}

/// 5. After the load stops and `idle_timeout` passes, records and scopes return to a handful;
///    and (6.) no snapshot shows a credential.
pub async fn swept(
    world: &World,
    polite: &Polite,
    log: &super::server::SharedLog,
    client: &reqwest_middleware::ClientWithMiddleware,
) -> Vec<Violation> {
    let mut found = Vec::new();
    let texts = [
        ("snapshot", format!("{:?}", polite.snapshot())),
        ("scope snapshot", format!("{:?}", polite.scope_snapshot())),
        ("Debug of Polite", format!("{polite:?}")),
    ];
    for (place, text) in texts {
        if text.contains(super::world::SECRET_MARK) {
            violation(&mut found, SECRETS, format!("a credential in the {place}"));
        }
    }
    let quiet = {
        let log = super::server::lock(log);
        let latest = log.closures.iter().map(|c| c.until).max();
        latest.unwrap_or(log.t0).max(Instant::now())
    };
    let idle = world.config.idle_timeout;
    // past the longest reset a server wrote (an hour) and the longest breaker open time
    let longest = Duration::from_secs(3600 + 600);
    tokio::time::sleep_until(quiet.max(Instant::now() + longest) + idle).await;
    // every pause the servers ordered is over, every breaker's open time too: no path of any
    // authority may still be refused by the middleware (2: pauses end)
    // (an hour apart, so that no probe waits for another's slot, nor for a rate the load's
    // refusals lowered)
    let changed = world.relimits.iter().filter_map(|c| c.limit);
    let configured = world.config.limits.iter().map(|c| c.limit);
    let widest = configured.chain(changed).map(|l| l.window()).max();
    let patience = widest.unwrap_or_default() * 2 + world.config.max_retry_after;
    for authority in &world.authorities {
        for path in super::world::PATHS {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            let req = client.get(format!("http://{authority}{path}"));
            let sent = req.with_extension(reqwest_polite::NoRetry).send();
            let refused = match tokio::time::timeout(patience, sent).await {
                Ok(Ok(_)) => None,
                Ok(Err(err)) => reqwest_polite::Error::of(&err).map(ToString::to_string),
                Err(_) => {
                    let held = polite.snapshot();
                    let held = held.iter().filter(|h| h.key.ends_with(authority.as_str()));
                    let held: Vec<String> = held.map(|h| format!("{h:?}")).collect();
                    Some(format!("not sent within {patience:?}: {held:?}"))
                }
            };
            if let Some(refused) = refused {
                let detail =
                    format!("{authority}{path} still held long after every pause ended: {refused}");
                violation(&mut found, PAUSES, detail);
                return found;
            }
        }
    }
    // the probes above took slots (at a rate refusals may have lowered): let them pass
    tokio::time::sleep(patience.max(Duration::from_secs(3600))).await;
    // records are swept when a new one is made, at most once per idle_timeout / 2: a fresh
    // host sweeps host records; a fresh credential's first request to the first authority
    // makes its record and host-wide scope, and, half an idle time later, its request on a
    // route with units makes its route and unit scopes (a scope sweep, when 64 or more)
    for i in 0..2 {
        tokio::time::sleep(idle + Duration::from_secs(1)).await;
        let fresh = format!("http://sweep.sim:{i}/");
        let _ = nudge(client.get(fresh)).await;
        tokio::time::sleep(idle / 2 + Duration::from_secs(1)).await;
        let credential = format!("Bearer fresh-{i}");
        let authority = &world.authorities[0];
        let req = client.get(format!("http://{authority}/items/1"));
        let _ = nudge(req.header(CREDENTIAL_HEADER, &credential)).await;
        tokio::time::sleep(idle / 2 + Duration::from_secs(1)).await;
        let req = client.get(format!("http://{authority}/search/q"));
        let req = req.header(CREDENTIAL_HEADER, &credential);
        let _ = nudge(req.with_extension(reqwest_polite::Units::new("tokens", 1))).await;
    }
    let (hosts, scopes) = (polite.host_count(), polite.scope_count());
    // a handful: the sweep's own records and scopes
    if hosts > 4 || scopes > 8 {
        let mut held: Vec<String> = polite.snapshot().iter().map(|h| format!("{h:?}")).collect();
        let scope_views = polite.scope_snapshot();
        held.extend(scope_views.iter().take(3).map(|s| format!("{s:?}")));
        let detail = format!(
            "{hosts} host records and {scopes} scopes held after the load stopped and stayed idle: {held:?}"
        );
        violation(&mut found, SWEPT, detail);
    }
    found
}

/// One request of the sweep's, which may not wait: sent once, within a second.
async fn nudge(req: reqwest_middleware::RequestBuilder) {
    let req = req.with_extension(reqwest_polite::NoRetry);
    let req = req.with_extension(reqwest_polite::Deadline::after(Duration::from_secs(1)));
    let _ = tokio::time::timeout(Duration::from_secs(5), req.send()).await;
}
