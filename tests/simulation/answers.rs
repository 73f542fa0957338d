//! What a simulated server writes: its count of a quota, its refusals and its quota headers
//! in every dialect the middleware reads.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::server::{Log, Plan};
use super::world::{Dialect, Quota, RetryAfterForm};

/// The longest wait the middleware takes from a server (its `MAX_HINT`): a year.
const MAX_HINT: Duration = Duration::from_secs(365 * 24 * 3600);
/// An HTTP-date has whole seconds and is read against the wall clock, which moves a little
/// while the paused clock stands: a closure from one may end this much early.
pub const DATE_SLACK: Duration = Duration::from_millis(50);

pub fn quota_count(quota: Quota) -> Option<u32> {
    match quota {
        Quota::None => None,
        Quota::Sliding { n, .. } | Quota::Fixed { n, .. } | Quota::Leaky { n, .. } => Some(n),
    }
}

/// A refusal with `status` and a `Retry-After` in `form` (an HTTP-date is written when the
/// answer leaves).
pub fn refusal(status: u16, form: RetryAfterForm, reset: Duration) -> Plan {
    let mut plan = Plan::answer(status);
    plan.refusal = status == 429 || (status == 403 && form != RetryAfterForm::None);
    let secs = reset.as_secs_f64().ceil().max(1.0) as u64;
    let (value, read) = match form {
        RetryAfterForm::None => (None, None),
        RetryAfterForm::Seconds => (Some(secs.to_string()), Some(Duration::from_secs(secs))),
        RetryAfterForm::HttpDate => (None, Some(Duration::from_secs(secs) - DATE_SLACK)),
        RetryAfterForm::Fraction => {
            let wait = Duration::from_millis(reset.as_millis().max(1) as u64 + 1);
            (Some(format!("{:.3}", wait.as_secs_f64())), Some(wait))
        }
        RetryAfterForm::Absurd => (Some("99999999999999999".into()), Some(MAX_HINT)),
    };
    if let Some(value) = value {
        plan.headers.push(("retry-after", value));
    }
    plan.retry_after = read;
    if status == 403 && form == RetryAfterForm::HttpDate {
        plan.refusal = true;
    }
    plan
}

/// Count an arrival against `quota` under `key`: whether it is accepted, what is left, and
/// how long until the next one would be.
pub fn count(
    log: &mut Log,
    key: &str,
    quota: Quota,
    now: Instant,
    counts_refused: bool,
) -> (bool, u32, Duration) {
    match quota {
        Quota::None => (true, u32::MAX, Duration::ZERO),
        Quota::Sliding { n, w } => {
            let arrivals = log.counted.entry(key.to_owned()).or_default();
            while arrivals.front().is_some_and(|t| now - *t >= w) {
                arrivals.pop_front();
            }
            let allowed = (arrivals.len() as u32) < n;
            if allowed || counts_refused {
                arrivals.push_back(now);
            }
            let left = n.saturating_sub(arrivals.len() as u32);
            let reset = arrivals.front().map_or(Duration::ZERO, |t| (*t + w) - now);
            (allowed, left, reset)
        }
        Quota::Fixed { n, w } => {
            let since = (now - log.t0).as_nanos();
            let window = since / w.as_nanos();
            let ends = log.t0 + w * (window as u32 + 1);
            let key = format!("{key}|{window}");
            let arrivals = log.counted.entry(key).or_default();
            let allowed = (arrivals.len() as u32) < n;
            if allowed || counts_refused {
                arrivals.push_back(now);
            }
            (allowed, n.saturating_sub(arrivals.len() as u32), ends - now)
        }
        Quota::Leaky { n, w, burst } => {
            // GCRA: one drains every `w / n`, `burst` more may wait in the bucket
            let interval = w / n;
            let tolerance = interval * burst;
            let tat = log.buckets.get(key).copied().unwrap_or(now).max(now);
            let allowed = tat - now <= tolerance;
            if allowed || counts_refused {
                log.buckets.insert(key.to_owned(), tat + interval);
            }
            let wait = (tat - now).saturating_sub(tolerance);
            let left = (tolerance.saturating_sub(tat - now).as_nanos() / interval.as_nanos().max(1))
                as u32;
            (allowed, left, wait)
        }
    }
}

/// The quota headers of `dialect`.
pub fn dialect(plan: &mut Plan, dialect: Dialect, n: u32, remaining: u32, reset: Duration) {
    let secs = reset.as_secs_f64().ceil() as u64;
    let mut add = |name: &'static str, value: String| plan.headers.push((name, value));
    match dialect {
        Dialect::None => {}
        Dialect::IetfPolicies | Dialect::IetfTinyWindow => {
            // the quota, and a second policy: an hour's, or one of a tenth of a second
            let (second, q, w) = match dialect {
                Dialect::IetfPolicies => ("hourly", 1_000_000, "3600"),
                _ => ("tiny", n, "0.1"),
            };
            add(
                "ratelimit",
                format!("\"burst\";r={remaining};t={secs}, \"{second}\";r={q};t=0"),
            );
            add(
                "ratelimit-policy",
                format!(
                    "\"burst\";q={n};w={}, \"{second}\";q={q};w={w}",
                    secs.max(1)
                ),
            );
        }
        Dialect::IetfStructured => {
            add("ratelimit", format!("\"default\";r={remaining};t={secs}"));
            add(
                "ratelimit-policy",
                format!("\"default\";q={n};w={}", secs.max(1)),
            );
        }
        Dialect::IetfSeparate => {
            add("ratelimit-limit", n.to_string());
            add("ratelimit-remaining", remaining.to_string());
            add("ratelimit-reset", secs.to_string());
        }
        Dialect::XRateLimitDelta => {
            add("x-ratelimit-limit", n.to_string());
            add("x-ratelimit-remaining", remaining.to_string());
            add("x-ratelimit-reset", secs.to_string());
        }
        Dialect::XRateLimitEpoch => {
            let epoch = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs()
                + secs
                + 1;
            add("x-ratelimit-limit", n.to_string());
            add("x-ratelimit-remaining", remaining.to_string());
            add("x-ratelimit-reset", epoch.to_string());
        }
        Dialect::ResetAfter => {
            add("x-ratelimit-remaining", remaining.to_string());
            add(
                "x-ratelimit-reset-after",
                format!("{:.3}", reset.as_secs_f64()),
            );
        }
        Dialect::Contradictory => {
            add("ratelimit-remaining", n.to_string());
            add("ratelimit-reset", "1".into());
            add("x-ratelimit-remaining", "0".into());
            add("x-ratelimit-reset", "3600".into());
        }
        Dialect::Absurd => {
            add("x-ratelimit-remaining", "-1".into());
            add("x-ratelimit-reset", "99999999999999999999".into());
            add("ratelimit-limit", "0".into());
            add("ratelimit-reset", "-4".into());
        }
    }
}
