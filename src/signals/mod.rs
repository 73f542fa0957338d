//! Reading what a server says about pacing.
//!
//! Servers tell clients to slow down in many dialects: RFC 9110 `Retry-After`, three generations of
//! the IETF `RateLimit` draft, the de facto `X-RateLimit-*` family (GitHub, Discord) and OpenAI's
//! `x-ratelimit-*-requests`. This module turns all of them into one [`ServerHint`] of plain
//! durations relative to when the response arrived, so the limiters never see a header.
//!
//! Why never fail: these values come from the network. A malformed value is treated as if the
//! server had not sent it (the field stays `None`); nothing here panics or returns an error,
//! because a bad header must not turn a successful response into a failed request.

mod ietf;
mod numbers;
#[cfg(test)]
mod tests;

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue, header::RETRY_AFTER};

use crate::partition::Partition;
use ietf::ietf_structured;
use numbers::*;

/// Longest delay any hint may express; larger values are capped to this (so `Instant + d` never overflows).
///
/// One year (365 × 86 400 s): longer than any real quota window, far shorter than the point where
/// adding it to an `Instant` could overflow on any platform.
pub const MAX_HINT: Duration = Duration::from_secs(365 * 24 * 3600);

/// A reset value at or above this many seconds is a Unix timestamp, below it a delay.
///
/// 10⁹ s is September 2001 as a timestamp and 31 years as a delay: no server means either of the
/// wrong readings, so the two cannot be confused.
const EPOCH_THRESHOLD_SECS: u64 = 1_000_000_000;

/// What one response said about pacing. All durations are relative to `now` (when the response arrived).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServerHint {
    /// `Retry-After`: stay away this long.
    pub retry_after: Option<Duration>,
    /// Requests left in the current quota window.
    pub remaining: Option<u64>,
    /// The quota (requests per window), if the server said.
    pub limit: Option<u64>,
    /// Time until the quota window resets.
    pub reset_in: Option<Duration>,
    /// `reset_in` was given in whole seconds (a timestamp or a delay without a fraction): a
    /// server that rounds its reset up may end the window up to a second before it.
    pub reset_whole_seconds: bool,
    /// The quotas the server says these headers are about: GitHub's `x-ratelimit-resource`
    /// (`core`, `search`, ...), Discord's `x-ratelimit-bucket`, or the IETF policies of
    /// [`policies`](Self::policies).
    pub server_scope: Option<ServerScope>,
    /// IETF `RateLimit` policies, each its own quota, when the answer lists several (or one
    /// with a partition key, `pk`); empty otherwise (a single policy is the host's quota, in
    /// `remaining`, `limit` and `reset_in`).
    pub policies: Vec<PolicyQuota>,
    /// Discord: the refusal is global (`x-ratelimit-global: true`, `x-ratelimit-scope: global`),
    /// so it cools the whole host down, not the bucket.
    pub global: bool,
    /// Stripe's `Stripe-Should-Retry: true|false`: a veto on a retry, or a failure the server
    /// vouches is safe to retry (see `retry::heed_server`).
    pub should_retry: Option<bool>,
    /// OpenAI's token quota (`x-ratelimit-{limit,remaining,reset}-tokens`).
    pub tokens: Option<UnitQuota>,
}

/// The quotas the server names in its headers, that an answer (and its route) counts in: one
/// resource or bucket, or every IETF policy the answer lists (all count each request at once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerScope {
    /// Which dialect named them.
    pub kind: ServerScopeKind,
    /// One name for a resource or a bucket; one per policy, in the order the server lists them.
    pub quotas: Vec<QuotaName>,
}

/// One quota a server names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaName {
    /// The name (at most 64 visible ASCII characters; longer or other values are ignored).
    pub name: String,
    /// The partition an IETF policy's `pk` names, hashed (the key itself is never kept: a
    /// server may derive it from the credential).
    pub(crate) partition: Option<Partition>,
}

impl ServerScope {
    /// The same quotas without the partitions their `pk` names, each name once: what a host
    /// record shared by every credential learns (see `Polite::named_scope`).
    pub(crate) fn without_partitions(&self) -> ServerScope {
        let mut quotas: Vec<QuotaName> = Vec::with_capacity(self.quotas.len());
        for quota in &self.quotas {
            if !quotas.iter().any(|q| q.name == quota.name) {
                quotas.push(QuotaName {
                    name: quota.name.clone(),
                    partition: None,
                });
            }
        }
        ServerScope {
            kind: self.kind,
            quotas,
        }
    }

    /// A resource or a bucket: one quota, no partition.
    pub(crate) fn one(kind: ServerScopeKind, name: &str) -> Self {
        ServerScope {
            kind,
            quotas: vec![QuotaName {
                name: name.to_owned(),
                partition: None,
            }],
        }
    }
}

/// Who names a [`ServerScope`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerScopeKind {
    /// GitHub `x-ratelimit-resource`: quotas per resource (`core`, `search`, `graphql`).
    Resource,
    /// Discord `x-ratelimit-bucket`: routes that share one bucket.
    Bucket,
    /// IETF `RateLimit` policies (draft -07 and later): several quotas at once.
    Policy,
}

/// One IETF policy of an answer: its quota as the server counts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyQuota {
    /// The policy's name and partition.
    pub id: QuotaName,
    /// `r`: requests left in its window.
    pub remaining: u64,
    /// `q` of the `RateLimit-Policy` member with the same name and partition.
    pub limit: Option<u64>,
    /// `w` of that member: the policy's window.
    pub window: Option<Duration>,
    /// `t`: time until its window resets.
    pub reset_in: Option<Duration>,
}

impl PolicyQuota {
    /// The policy's quota as a hint of its own, for its scope.
    pub(crate) fn hint(&self) -> ServerHint {
        ServerHint {
            remaining: Some(self.remaining),
            limit: self.limit,
            reset_in: self.reset_in,
            ..ServerHint::default()
        }
    }
}

/// Most policies read from one answer; the rest are ignored (bounded work and memory for
/// whatever a server sends).
const MAX_POLICIES: usize = 8;

/// A quota in another unit than requests (OpenAI tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UnitQuota {
    /// Units left in the current window.
    pub remaining: Option<u64>,
    /// Units per window.
    pub limit: Option<u64>,
    /// Time until the window resets.
    pub reset_in: Option<Duration>,
}

impl ServerHint {
    /// Read a response's pacing headers, as of the wall clock now.
    ///
    /// Most answers carry none: one pass over the names, instead of a dozen lookups that each
    /// parse and hash a name (and a clock read), keeps that common case cheap.
    pub fn read(headers: &HeaderMap) -> ServerHint {
        let relevant = headers.keys().any(|name| {
            let name = name.as_str();
            name == "retry-after"
                || name.starts_with("ratelimit")
                || name.starts_with("x-ratelimit")
                || name == "stripe-should-retry"
                || name == "x-shopify-shop-api-call-limit"
        });
        if relevant {
            Self::from_headers(headers, SystemTime::now())
        } else {
            ServerHint::default()
        }
    }

    /// Read every pacing header of a response. Malformed values are ignored (the field stays None), never a panic.
    ///
    /// When several dialects are present, each of `remaining`, `limit` and `reset_in` comes from the
    /// first one that carries a valid value, in this order: IETF `RateLimit` (+ `RateLimit-Policy`),
    /// IETF `RateLimit-Limit/-Remaining/-Reset`, `X-RateLimit-*`, OpenAI `x-ratelimit-*-requests`.
    /// The standard goes first because a server that sends it alongside a legacy family means it.
    pub fn from_headers(headers: &HeaderMap, now: SystemTime) -> ServerHint {
        let (ietf, policies) = ietf_structured(headers);
        let sources = [
            ietf,
            ietf_separate(headers),
            x_ratelimit(headers, now),
            openai(headers, now),
            shopify(headers),
        ];
        let tokens = openai_tokens(headers, now);
        let reset = sources.iter().find(|s| s.reset_in.is_some());
        ServerHint {
            retry_after: headers
                .get(RETRY_AFTER)
                .and_then(|v| parse_retry_after(v, now)),
            remaining: sources.iter().find_map(|s| s.remaining),
            limit: sources.iter().find_map(|s| s.limit),
            reset_in: reset.and_then(|s| s.reset_in),
            reset_whole_seconds: reset.is_some_and(|s| s.whole_seconds),
            server_scope: server_scope(headers).or_else(|| {
                (!policies.is_empty()).then(|| ServerScope {
                    kind: ServerScopeKind::Policy,
                    quotas: policies.iter().map(|p| p.id.clone()).collect(),
                })
            }),
            policies,
            global: text(headers, "x-ratelimit-global")
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
                || text(headers, "x-ratelimit-scope")
                    .is_some_and(|v| v.trim().eq_ignore_ascii_case("global")),
            should_retry: text(headers, "stripe-should-retry").and_then(|v| match v.trim() {
                v if v.eq_ignore_ascii_case("true") => Some(true),
                v if v.eq_ignore_ascii_case("false") => Some(false),
                _ => None,
            }),
            tokens: (tokens.remaining.is_some() || tokens.limit.is_some()).then_some(UnitQuota {
                remaining: tokens.remaining,
                limit: tokens.limit,
                reset_in: tokens.reset_in,
            }),
        }
    }

    /// True when no field is set.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        *self == ServerHint::default()
    }
}

/// RFC 9110 Retry-After: delay-seconds, or an HTTP-date in any of the three forms (IMF-fixdate, obsolete RFC 850, asctime; httpdate parses all three). A date in the past means Duration::ZERO. Garbage, negative, non-ASCII -> None. Huge values (10^12 s, u64 overflow) -> capped at MAX_HINT.
///
/// Leniency beyond RFC 9110: surrounding whitespace is trimmed and a decimal fraction of a second
/// (`"1.5"`) is accepted, because a server that bothers to send one means it. A string of digits
/// too long for `u64` is still a (very long) delay and yields [`MAX_HINT`], not `None`.
pub fn parse_retry_after(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Some(delay) = parse_seconds(text) {
        return Some(delay);
    }
    let date = httpdate::parse_http_date(text).ok()?;
    Some(until(date, now))
}

/// A reset value that is either delta seconds or epoch seconds (GitHub's X-RateLimit-Reset is epoch seconds, others send delta seconds). Tell them apart: a value at or above 1_000_000_000 is epoch seconds (converted to the delta from now, past -> ZERO); below, delta seconds. Fractional seconds allowed ("1.5"). Also accepts Go-style duration strings as OpenAI sends in `x-ratelimit-reset-requests`: "6m0s", "20ms", "1h2m3.5s", "0.5s", "1s". Capped at MAX_HINT.
///
/// A string of digits too long for `u64` reads as a timestamp far in the future: [`MAX_HINT`].
pub fn parse_reset(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    let Some((whole, fraction)) = split_decimal(text) else {
        return parse_duration_str(text);
    };
    if digits_value(whole) >= u128::from(EPOCH_THRESHOLD_SECS) {
        Some(epoch_to_delay(whole, fraction, now))
    } else {
        parse_seconds(text)
    }
}

/// Go-style duration string: sequence of `<number><unit>` with units h, m, s, ms, us/µs, ns; decimal fractions allowed. None on garbage.
///
/// Follows Go's `time.ParseDuration`: `"0"` alone needs no unit, a leading `+` is allowed, a
/// number may be `"1."` or `".5"`. A leading `-` yields `None` (a delay cannot be negative).
/// Digits of a fraction beyond the 18th are ignored; the sum is capped at [`MAX_HINT`].
pub fn parse_duration_str(s: &str) -> Option<Duration> {
    let s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() {
        return None;
    }
    let cap = MAX_HINT.as_nanos();
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let (whole, after_whole) = split_digits(rest);
        let (fraction, after_number) = match after_whole.strip_prefix('.') {
            Some(after_dot) => split_digits(after_dot),
            None => ("", after_whole),
        };
        if whole.is_empty() && fraction.is_empty() {
            return None;
        }
        let unit_end = after_number
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after_number.len());
        let (unit, after_unit) = after_number.split_at(unit_end);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            _ => return None,
        };
        let component = digits_value(whole)
            .saturating_mul(unit_nanos)
            .saturating_add(fraction_nanos(fraction, unit_nanos));
        total = total.saturating_add(component).min(cap);
        rest = after_unit;
    }
    Some(nanos_to_duration(total))
}

/// One dialect's reading of the quota fields; [`ServerHint::from_headers`] merges them.
#[derive(Debug, Default)]
struct Quota {
    remaining: Option<u64>,
    limit: Option<u64>,
    reset_in: Option<Duration>,
    /// `reset_in` was read from a whole number of seconds.
    whole_seconds: bool,
}

/// IETF `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (drafts up to -03).
fn ietf_separate(headers: &HeaderMap) -> Quota {
    let reset = text(headers, "ratelimit-reset");
    Quota {
        // Drafts -00/-01 allowed quota policies after the number: `10, 10;window=1, 50;window=60`.
        limit: text(headers, "ratelimit-limit")
            .and_then(|v| v.split([',', ';']).next())
            .and_then(parse_count),
        remaining: text(headers, "ratelimit-remaining").and_then(parse_count),
        reset_in: reset.and_then(|v| parse_seconds(v.trim())),
        whole_seconds: reset.is_some_and(whole_seconds),
    }
}

/// The `X-RateLimit-*` family. `X-RateLimit-Reset` may be a timestamp (GitHub) or a delay;
/// Discord's `X-RateLimit-Reset-After` is always a delay and, being unambiguous, wins.
fn x_ratelimit(headers: &HeaderMap, now: SystemTime) -> Quota {
    let after = text(headers, "x-ratelimit-reset-after");
    let reset_after = after.and_then(|v| parse_seconds(v.trim()));
    let (reset_in, whole_seconds) = match reset_after {
        Some(delay) => (Some(delay), after.is_some_and(whole_seconds)),
        None => {
            let reset = headers.get("x-ratelimit-reset");
            let reset_in = reset.and_then(|v| parse_reset(v, now));
            let whole = reset
                .and_then(|v| v.to_str().ok())
                .is_some_and(whole_seconds);
            (reset_in, reset_in.is_some() && whole)
        }
    };
    Quota {
        limit: text(headers, "x-ratelimit-limit").and_then(parse_count),
        remaining: text(headers, "x-ratelimit-remaining").and_then(parse_count),
        reset_in,
        whole_seconds,
    }
}

/// A reset written as whole seconds: digits only (surrounding whitespace allowed).
fn whole_seconds(text: &str) -> bool {
    let text = text.trim();
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// A refusal: 429, or a 403 that says it is a rate limit (GitHub's primary and secondary
/// limits: `Retry-After`, or nothing left).
pub(crate) fn is_refusal(status: http::StatusCode, hint: &ServerHint) -> bool {
    status == http::StatusCode::TOO_MANY_REQUESTS
        || (status == http::StatusCode::FORBIDDEN
            && (hint.retry_after.is_some() || hint.remaining == Some(0)))
}

/// OpenAI's request quota: `x-ratelimit-limit-requests`, `x-ratelimit-remaining-requests` and
/// `x-ratelimit-reset-requests` (a Go duration such as `6m0s`). The `-tokens` quota is not
/// about request pacing and is not read.
fn openai(headers: &HeaderMap, now: SystemTime) -> Quota {
    Quota {
        limit: text(headers, "x-ratelimit-limit-requests").and_then(parse_count),
        remaining: text(headers, "x-ratelimit-remaining-requests").and_then(parse_count),
        reset_in: headers
            .get("x-ratelimit-reset-requests")
            .and_then(|v| parse_reset(v, now)),
        ..Quota::default()
    }
}

/// OpenAI's token quota: `x-ratelimit-limit-tokens`, `x-ratelimit-remaining-tokens`,
/// `x-ratelimit-reset-tokens` (a Go duration). It feeds a `tokens` unit scope.
fn openai_tokens(headers: &HeaderMap, now: SystemTime) -> Quota {
    Quota {
        limit: text(headers, "x-ratelimit-limit-tokens").and_then(parse_count),
        remaining: text(headers, "x-ratelimit-remaining-tokens").and_then(parse_count),
        reset_in: headers
            .get("x-ratelimit-reset-tokens")
            .and_then(|v| parse_reset(v, now)),
        ..Quota::default()
    }
}

/// Shopify's leaky bucket, `X-Shopify-Shop-Api-Call-Limit: 32/40` (used/size): what is left is
/// `size − used`, and the bucket drains at Shopify's documented 2 calls per second, so it is
/// empty again in `used / 2` seconds.
fn shopify(headers: &HeaderMap) -> Quota {
    const DRAIN_PER_SECOND: u64 = 2;
    let Some((used, size)) = text(headers, "x-shopify-shop-api-call-limit")
        .and_then(|v| v.trim().split_once('/'))
        .and_then(|(used, size)| Some((parse_count(used)?, parse_count(size)?)))
    else {
        return Quota::default();
    };
    let used = used.min(size);
    Quota {
        remaining: Some(size - used),
        limit: Some(size),
        reset_in: Some(Duration::from_secs(used.div_ceil(DRAIN_PER_SECOND)).min(MAX_HINT)),
        ..Quota::default()
    }
}

/// The quota a server names: GitHub's `x-ratelimit-resource`, else Discord's
/// `x-ratelimit-bucket`. Names are short visible ASCII; anything else is ignored.
fn server_scope(headers: &HeaderMap) -> Option<ServerScope> {
    let named = |header: &str, kind| {
        let name = text(headers, header)?.trim();
        valid_name(name).then(|| ServerScope::one(kind, name))
    };
    named("x-ratelimit-resource", ServerScopeKind::Resource)
        .or_else(|| named("x-ratelimit-bucket", ServerScopeKind::Bucket))
}

/// A name a server gives a quota: 1 to 64 visible ASCII characters.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_graphic())
}

/// The first value of a header as text; `None` if absent or not visible ASCII.
fn text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name)?.to_str().ok()
}

/// Every line of a structured header joined with `", "`, as RFC 9651 §4.2 says to combine them.
fn joined(headers: &HeaderMap, name: &str) -> Option<Vec<u8>> {
    let mut values = headers.get_all(name).iter();
    let mut out = values.next()?.as_bytes().to_vec();
    for value in values {
        out.extend_from_slice(b", ");
        out.extend_from_slice(value.as_bytes());
    }
    Some(out)
}
