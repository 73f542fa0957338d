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

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue, header::RETRY_AFTER};
use sfv::{BareItem, Dictionary, Item, List, ListEntry, Parser};

use crate::partition::Partition;

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
    /// The quotas the server says these headers are about: GitHub's `x-ratelimit-resource`
    /// (`core`, `search`, ...), Discord's `x-ratelimit-bucket`, or the IETF policies of
    /// [`policies`](Self::policies).
    pub server_scope: Option<ServerScope>,
    /// IETF `RateLimit` policies, each its own quota, when the answer lists several (or one
    /// with a partition key, `pk`); empty otherwise (a single policy is the host's quota, in
    /// `remaining`, `limit` and `reset_in`).
    pub policies: Vec<PolicyQuota>,
    /// Discord: the refusal is global (`x-ratelimit-global: true`, `x-ratelimit-scope: global`),
    /// so it closes the whole host, not the bucket.
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
        ServerHint {
            retry_after: headers
                .get(RETRY_AFTER)
                .and_then(|v| parse_retry_after(v, now)),
            remaining: sources.iter().find_map(|s| s.remaining),
            limit: sources.iter().find_map(|s| s.limit),
            reset_in: sources.iter().find_map(|s| s.reset_in),
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
}

/// IETF `RateLimit` and `RateLimit-Policy` as structured fields (draft -05 and later): the
/// most restrictive policy as the host's quota, and every policy on its own when there are
/// several (or one names a partition).
///
/// Draft -07 and later send a List of named policies, `"default";r=50;t=30`; drafts -05/-06 a
/// Dictionary, `limit=100, remaining=50, reset=5`. The List form is tried first; a field that
/// parses as a List but carries no `r` parameter is read as a Dictionary.
fn ietf_structured(headers: &HeaderMap) -> (Quota, Vec<PolicyQuota>) {
    let rate_limit = joined(headers, "ratelimit");
    let policy = joined(headers, "ratelimit-policy");
    let policy_list: Option<List> = policy.as_deref().and_then(|v| Parser::new(v).parse().ok());

    let mut quota = Quota::default();
    let mut policies = Vec::new();
    let current = rate_limit.as_deref().and_then(current_policies);
    if let Some(current) = current {
        // the most restrictive: smallest `r`, the first on a tie
        let tightest = current
            .iter()
            .min_by_key(|policy| policy.remaining)
            .expect("current_policies is never empty");
        quota.remaining = Some(tightest.remaining);
        quota.reset_in = tightest.reset_in;
        quota.limit = policy_list
            .as_ref()
            .and_then(|list| policy_quota(list, tightest.name.as_deref(), tightest.partition));
        policies = each_policy(&current, policy_list.as_ref());
    } else if let Some(dict) = rate_limit
        .as_deref()
        .and_then(|v| Parser::new(v).parse::<Dictionary>().ok())
    {
        let member = |key: &str| match dict.get(key) {
            Some(ListEntry::Item(item)) => Some(&item.bare_item),
            _ => None,
        };
        quota.remaining = member("remaining").and_then(sf_count);
        quota.limit = member("limit").and_then(sf_count);
        quota.reset_in = member("reset").and_then(sf_seconds);
    }
    if quota.limit.is_none() {
        quota.limit = policy_list
            .as_ref()
            .and_then(|list| policy_quota(list, None, None));
    }
    (quota, policies)
}

/// One policy of a draft -07+ `RateLimit` List.
struct CurrentPolicy {
    name: Option<String>,
    partition: Option<Partition>,
    remaining: u64,
    reset_in: Option<Duration>,
}

/// The policies of a `RateLimit` List that carry a valid `r` (at most [`MAX_POLICIES`]).
/// `None` when the value is not a List or no member has a valid `r`.
fn current_policies(value: &[u8]) -> Option<Vec<CurrentPolicy>> {
    let list: List = Parser::new(value).parse().ok()?;
    let current: Vec<_> = list_items(&list)
        .filter_map(|item| {
            let remaining = item.params.get("r").and_then(sf_count)?;
            Some(CurrentPolicy {
                name: sf_name(&item.bare_item),
                partition: sf_partition(item),
                remaining,
                reset_in: item.params.get("t").and_then(sf_seconds),
            })
        })
        .take(MAX_POLICIES)
        .collect();
    (!current.is_empty()).then_some(current)
}

/// Every named policy on its own, each with its quota and window from `RateLimit-Policy`; empty
/// unless there are several, or one names a partition (a single policy is the host's quota).
/// A name and partition listed twice count once (the first).
fn each_policy(current: &[CurrentPolicy], policy_list: Option<&List>) -> Vec<PolicyQuota> {
    let mut policies: Vec<PolicyQuota> = Vec::new();
    for policy in current {
        let Some(name) = policy.name.as_deref().filter(|name| valid_name(name)) else {
            continue;
        };
        let id = QuotaName {
            name: name.to_owned(),
            partition: policy.partition,
        };
        if policies.iter().any(|p| p.id == id) {
            continue;
        }
        let member = policy_list.and_then(|list| {
            list_items(list).find(|item| {
                sf_name(&item.bare_item).as_deref() == Some(name)
                    && sf_partition(item) == policy.partition
            })
        });
        policies.push(PolicyQuota {
            id,
            remaining: policy.remaining,
            limit: member
                .and_then(|item| item.params.get("q"))
                .and_then(sf_count),
            window: member
                .and_then(|item| item.params.get("w"))
                .and_then(sf_seconds),
            reset_in: policy.reset_in,
        });
    }
    let several = policies.len() > 1 || policies.iter().any(|p| p.id.partition.is_some());
    if !several {
        policies.clear();
    }
    policies
}

/// The quota of a `RateLimit-Policy` List: the `q` of the policy called `name` (in the same
/// partition) when there is one, else the smallest quota listed. Draft -05/-06 policies are
/// bare integers (`100;w=60`).
fn policy_quota(list: &List, name: Option<&str>, partition: Option<Partition>) -> Option<u64> {
    let quota = |item: &Item| match item.params.get("q") {
        Some(q) => sf_count(q),
        None => sf_count(&item.bare_item),
    };
    let named = name.and_then(|name| {
        list_items(list)
            .find(|item| {
                sf_name(&item.bare_item).as_deref() == Some(name) && sf_partition(item) == partition
            })
            .and_then(quota)
    });
    named.or_else(|| list_items(list).filter_map(quota).min())
}

/// The partition a policy's `pk` parameter (a Byte Sequence) names, hashed at once.
fn sf_partition(item: &Item) -> Option<Partition> {
    let key = item.params.get("pk")?.as_byte_sequence()?;
    Some(Partition::of_server_key(key))
}

/// IETF `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (drafts up to -03).
fn ietf_separate(headers: &HeaderMap) -> Quota {
    Quota {
        // Drafts -00/-01 allowed quota policies after the number: `10, 10;window=1, 50;window=60`.
        limit: text(headers, "ratelimit-limit")
            .and_then(|v| v.split([',', ';']).next())
            .and_then(parse_count),
        remaining: text(headers, "ratelimit-remaining").and_then(parse_count),
        reset_in: text(headers, "ratelimit-reset").and_then(|v| parse_seconds(v.trim())),
    }
}

/// The `X-RateLimit-*` family. `X-RateLimit-Reset` may be a timestamp (GitHub) or a delay;
/// Discord's `X-RateLimit-Reset-After` is always a delay and, being unambiguous, wins.
fn x_ratelimit(headers: &HeaderMap, now: SystemTime) -> Quota {
    let reset_after =
        text(headers, "x-ratelimit-reset-after").and_then(|v| parse_seconds(v.trim()));
    let reset = || {
        headers
            .get("x-ratelimit-reset")
            .and_then(|v| parse_reset(v, now))
    };
    Quota {
        limit: text(headers, "x-ratelimit-limit").and_then(parse_count),
        remaining: text(headers, "x-ratelimit-remaining").and_then(parse_count),
        reset_in: reset_after.or_else(reset),
    }
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

/// The Items of a List, skipping Inner Lists (no rate-limit draft uses them).
fn list_items(list: &List) -> impl Iterator<Item = &Item> {
    list.iter().filter_map(|entry| match entry {
        ListEntry::Item(item) => Some(item),
        ListEntry::InnerList(_) => None,
    })
}

/// A policy name: a String (draft -08+) or a Token (draft -07).
fn sf_name(item: &BareItem) -> Option<String> {
    match item {
        BareItem::String(s) => Some(s.as_str().to_owned()),
        BareItem::Token(t) => Some(t.as_str().to_owned()),
        _ => None,
    }
}

/// A non-negative structured Integer as a request count.
fn sf_count(item: &BareItem) -> Option<u64> {
    u64::try_from(item.as_integer()?).ok()
}

/// A non-negative structured Integer or Decimal as seconds, capped at [`MAX_HINT`].
fn sf_seconds(item: &BareItem) -> Option<Duration> {
    let millis = match item {
        BareItem::Integer(i) => i64::from(*i).checked_mul(1_000)?,
        BareItem::Decimal(d) => i64::from(d.as_integer_scaled_1000()),
        _ => return None,
    };
    let millis = u64::try_from(millis).ok()?;
    Some(Duration::from_millis(millis).min(MAX_HINT))
}

/// A plain request count: ASCII digits, surrounding whitespace allowed. `None` for signs,
/// fractions and values that do not fit `u64` (no server has that many requests to give).
fn parse_count(text: &str) -> Option<u64> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Decimal seconds, `"120"` or `"1.5"`, capped at [`MAX_HINT`] (so an all-digit string too long
/// for `u64` is `MAX_HINT`). No sign, no exponent, at least one digit on each side of a `.`.
fn parse_seconds(text: &str) -> Option<Duration> {
    let (whole, fraction) = split_decimal(text)?;
    let nanos = digits_value(whole)
        .saturating_mul(1_000_000_000)
        .saturating_add(fraction_nanos(fraction, 1_000_000_000));
    Some(nanos_to_duration(nanos.min(MAX_HINT.as_nanos())))
}

/// Splits `"12.5"` into `("12", "5")` and `"12"` into `("12", "")`; `None` unless that is all the text is.
fn split_decimal(text: &str) -> Option<(&str, &str)> {
    let (whole, rest) = split_digits(text);
    if whole.is_empty() {
        return None;
    }
    match rest.strip_prefix('.') {
        None if rest.is_empty() => Some((whole, "")),
        None => None,
        Some(after_dot) => {
            let (fraction, rest) = split_digits(after_dot);
            (!fraction.is_empty() && rest.is_empty()).then_some((whole, fraction))
        }
    }
}

/// Converts a timestamp in Unix seconds, split as by [`split_decimal`], into the delay from `now`.
fn epoch_to_delay(whole: &str, fraction: &str, now: SystemTime) -> Duration {
    let secs = u64::try_from(digits_value(whole)).unwrap_or(u64::MAX);
    // Below 10^9 by construction, so `Duration::new` cannot carry into (and overflow) the seconds.
    let nanos = u32::try_from(fraction_nanos(fraction, 1_000_000_000)).unwrap_or(0);
    match UNIX_EPOCH.checked_add(Duration::new(secs, nanos)) {
        Some(at) => until(at, now),
        // Beyond what the platform's clock can name: as far away as a hint may be.
        None => MAX_HINT,
    }
}

/// How long from `now` until `at`: zero if `at` has passed, capped at [`MAX_HINT`].
fn until(at: SystemTime, now: SystemTime) -> Duration {
    at.duration_since(now)
        .unwrap_or(Duration::ZERO)
        .min(MAX_HINT)
}

/// Splits the leading ASCII digits off `s`.
fn split_digits(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s.split_at(end)
}

/// The value of a string of ASCII digits, saturating at `u128::MAX`.
fn digits_value(digits: &str) -> u128 {
    digits.bytes().fold(0u128, |acc, b| {
        acc.saturating_mul(10)
            .saturating_add(u128::from(b.wrapping_sub(b'0')))
    })
}

/// The digits after a decimal point, times `unit_nanos`, in nanoseconds (truncated).
///
/// Only the first 18 digits count: 10¹⁸ × the largest unit (3.6 × 10¹² ns per hour) still fits
/// `u128`, and further digits are far below a nanosecond.
fn fraction_nanos(fraction: &str, unit_nanos: u128) -> u128 {
    let digits = fraction.get(..18).unwrap_or(fraction);
    let scale = 10u128.pow(u32::try_from(digits.len()).unwrap_or(18));
    digits_value(digits).saturating_mul(unit_nanos) / scale
}

/// Nanoseconds to a `Duration`, capped at [`MAX_HINT`].
fn nanos_to_duration(nanos: u128) -> Duration {
    let nanos = nanos.min(MAX_HINT.as_nanos());
    let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
    let sub = u32::try_from(nanos % 1_000_000_000).unwrap_or(0);
    Duration::new(secs, sub)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_without_partitions_names_each_quota_once() {
        let pk = |n: u8| Some(Partition::of_server_key(&[n]));
        let scope = ServerScope {
            kind: ServerScopeKind::Policy,
            quotas: vec![
                QuotaName {
                    name: "user".into(),
                    partition: pk(1),
                },
                QuotaName {
                    name: "daily".into(),
                    partition: None,
                },
                QuotaName {
                    name: "user".into(),
                    partition: pk(2),
                },
            ],
        };
        let shared = scope.without_partitions();
        let names: Vec<_> = shared
            .quotas
            .iter()
            .map(|q| (q.name.as_str(), q.partition))
            .collect();
        assert_eq!(names, [("user", None), ("daily", None)]);
    }
    use proptest::prelude::*;

    /// 1994-11-06T08:49:37Z, the date of RFC 9110's examples, in Unix seconds.
    const RFC_DATE_SECS: u64 = 784_111_777;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn value(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).expect("test header values are valid")
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, v) in pairs {
            map.append(*name, value(v));
        }
        map
    }

    #[test]
    fn read_skips_answers_without_pacing_headers_and_parses_the_others() {
        let plain = headers(&[("content-type", "text/plain"), ("x-request-id", "abc")]);
        assert_eq!(ServerHint::read(&plain), ServerHint::default());
        let paced = headers(&[
            ("content-type", "text/plain"),
            ("x-ratelimit-remaining", "5"),
            ("x-ratelimit-reset-after", "2"),
            ("retry-after", "3"),
        ]);
        assert_eq!(
            ServerHint::read(&paced),
            ServerHint {
                retry_after: Some(Duration::from_secs(3)),
                remaining: Some(5),
                limit: None,
                reset_in: Some(Duration::from_secs(2)),
                ..ServerHint::default()
            },
            "delta values do not depend on the clock"
        );
    }

    fn retry_after(s: &str) -> Option<Duration> {
        parse_retry_after(&value(s), at(RFC_DATE_SECS))
    }

    #[test]
    fn retry_after_delta_seconds() {
        for (input, want) in [
            ("120", Duration::from_secs(120)),
            ("0", Duration::ZERO),
            (" 5 ", Duration::from_secs(5)),
            ("007", Duration::from_secs(7)),
            ("1.5", Duration::from_millis(1_500)),
        ] {
            assert_eq!(retry_after(input), Some(want), "Retry-After {input:?}");
        }
    }

    #[test]
    fn retry_after_http_date_in_all_three_forms() {
        let now = at(RFC_DATE_SECS - 120);
        for form in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(
                parse_retry_after(&value(form), now),
                Some(Duration::from_secs(120)),
                "date form {form:?} should be 120 s after now"
            );
        }
    }

    #[test]
    fn retry_after_date_in_the_past_is_zero() {
        let now = at(RFC_DATE_SECS + 3_600);
        assert_eq!(
            parse_retry_after(&value("Sun, 06 Nov 1994 08:49:37 GMT"), now),
            Some(Duration::ZERO),
            "a date an hour ago means retry now"
        );
    }

    #[test]
    fn retry_after_garbage_is_none() {
        for input in [
            "",
            " ",
            "abc",
            "-5",
            "-0",
            "+5",
            "1e400",
            "NaN",
            "inf",
            "5 s",
            "1.",
            ".5",
            "0x10",
            "1,5",
            "Sun, 06 Nov 1994 08:49:37",
            "Mon, 32 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(
                retry_after(input),
                None,
                "Retry-After {input:?} is not a delay"
            );
        }
        let non_ascii =
            HeaderValue::from_bytes(b"12\xb5").expect("obs-text is a valid header value");
        assert_eq!(
            parse_retry_after(&non_ascii, at(RFC_DATE_SECS)),
            None,
            "non-ASCII Retry-After must be ignored"
        );
    }

    #[test]
    fn retry_after_huge_values_are_capped() {
        for input in ["1000000000000", "99999999999999999999999", "31536001"] {
            assert_eq!(
                retry_after(input),
                Some(MAX_HINT),
                "{input:?} should cap at MAX_HINT"
            );
        }
        let far_date = parse_retry_after(&value("Fri, 01 Jan 9999 00:00:00 GMT"), at(0));
        assert_eq!(
            far_date,
            Some(MAX_HINT),
            "a date centuries ahead caps at MAX_HINT"
        );
    }

    #[test]
    fn reset_tells_epoch_from_delta() {
        // GitHub: X-RateLimit-Reset: 1372700873 is a Unix timestamp.
        let now = at(1_372_700_873 - 30);
        let reset = |s: &str| parse_reset(&value(s), now);
        assert_eq!(
            reset("1372700873"),
            Some(Duration::from_secs(30)),
            "epoch 30 s ahead"
        );
        assert_eq!(
            reset("1372700873.25"),
            Some(Duration::from_millis(30_250)),
            "fractional epoch"
        );
        assert_eq!(
            reset("1372700000"),
            Some(Duration::ZERO),
            "epoch in the past is zero"
        );
        assert_eq!(
            reset("1000000000"),
            Some(Duration::ZERO),
            "the threshold itself is an epoch"
        );
        assert_eq!(
            reset("60"),
            Some(Duration::from_secs(60)),
            "small values are delays"
        );
        assert_eq!(
            reset(" 1.5 "),
            Some(Duration::from_millis(1_500)),
            "fractional delay"
        );
        assert_eq!(
            reset("999999999"),
            Some(MAX_HINT),
            "just below threshold: a capped delay"
        );
        assert_eq!(
            reset("99999999999999999999999"),
            Some(MAX_HINT),
            "an epoch beyond u64 is far in the future"
        );
        for garbage in ["", "-1", "-0", "1e400", "NaN", "inf", "soon"] {
            assert_eq!(reset(garbage), None, "reset {garbage:?} is not a time");
        }
    }

    #[test]
    fn reset_accepts_go_durations() {
        let now = at(RFC_DATE_SECS);
        for (input, want) in [
            ("6m0s", Duration::from_secs(360)),
            ("20ms", Duration::from_millis(20)),
            ("1h2m3.5s", Duration::from_millis(3_723_500)),
            ("0.5s", Duration::from_millis(500)),
            ("1s", Duration::from_secs(1)),
        ] {
            assert_eq!(
                parse_reset(&value(input), now),
                Some(want),
                "reset {input:?}"
            );
        }
    }

    #[test]
    fn go_duration_strings() {
        for (input, want) in [
            ("0", Some(Duration::ZERO)),
            ("+1s", Some(Duration::from_secs(1))),
            ("1ns", Some(Duration::from_nanos(1))),
            ("1us", Some(Duration::from_micros(1))),
            ("1µs", Some(Duration::from_micros(1))),
            ("1μs", Some(Duration::from_micros(1))),
            ("1.5ms", Some(Duration::from_micros(1_500))),
            (".5s", Some(Duration::from_millis(500))),
            ("1.s", Some(Duration::from_secs(1))),
            ("1h1h", Some(Duration::from_secs(7_200))),
            ("0.1ns", Some(Duration::ZERO)),
            ("99999999999999999999999h", Some(MAX_HINT)),
            (
                "0.333333333333333333333333333333h",
                Some(Duration::from_millis(1_199_999) + Duration::from_nanos(999_999)),
            ),
            ("", None),
            ("5", None),
            ("s", None),
            (".s", None),
            ("-1s", None),
            ("1x", None),
            ("1s5", None),
            ("1 s", None),
            (" 1s", None),
            ("1d", None),
        ] {
            assert_eq!(parse_duration_str(input), want, "Go duration {input:?}");
        }
    }

    #[test]
    fn ietf_list_form() {
        let hint = ServerHint::from_headers(
            &headers(&[
                ("ratelimit", r#""default";r=50;t=30"#),
                ("ratelimit-policy", r#""default";q=100;w=60"#),
            ]),
            at(RFC_DATE_SECS),
        );
        let want = ServerHint {
            retry_after: None,
            remaining: Some(50),
            limit: Some(100),
            reset_in: Some(Duration::from_secs(30)),
            ..ServerHint::default()
        };
        assert_eq!(hint, want, "draft -07+ RateLimit with String names");
        let tokens = ServerHint::from_headers(
            &headers(&[
                ("ratelimit", "default;r=50;t=30"),
                ("ratelimit-policy", "default;q=100;w=60"),
            ]),
            at(RFC_DATE_SECS),
        );
        assert_eq!(tokens, want, "draft -07 RateLimit with Token names");
    }

    #[test]
    fn ietf_list_form_picks_most_restrictive_policy() {
        let now = at(RFC_DATE_SECS);
        let rate_limit = r#""burst";r=5;t=1, "daily";r=2;t=3600"#;
        let hint = ServerHint::from_headers(
            &headers(&[
                ("ratelimit", rate_limit),
                (
                    "ratelimit-policy",
                    r#""burst";q=100;w=60, "daily";q=1000;w=86400"#,
                ),
            ]),
            now,
        );
        assert_eq!(hint.remaining, Some(2), "smallest remaining wins");
        assert_eq!(
            hint.reset_in,
            Some(Duration::from_secs(3_600)),
            "reset of that policy"
        );
        assert_eq!(
            hint.limit,
            Some(1_000),
            "quota of the policy with the same name"
        );

        let unnamed = ServerHint::from_headers(
            &headers(&[
                ("ratelimit", rate_limit),
                (
                    "ratelimit-policy",
                    r#""hourly";q=500;w=3600, "minute";q=50;w=60"#,
                ),
            ]),
            now,
        );
        assert_eq!(
            unnamed.limit,
            Some(50),
            "no policy of that name: smallest quota"
        );

        let split = ServerHint::from_headers(
            &headers(&[
                ("ratelimit", r#""burst";r=5;t=1"#),
                ("ratelimit", r#""daily";r=2;t=3600"#),
            ]),
            now,
        );
        assert_eq!(
            split.remaining,
            Some(2),
            "RateLimit lines are combined into one List"
        );
    }

    #[test]
    fn ietf_policies_are_each_their_own_quota() {
        let now = at(RFC_DATE_SECS);
        let hint = ServerHint::from_headers(
            &headers(&[
                ("ratelimit", r#""burst";r=50;t=30, "daily";r=999;t=3600"#),
                (
                    "ratelimit-policy",
                    r#""burst";q=100;w=60, "daily";q=1000;w=86400"#,
                ),
            ]),
            now,
        );
        let name = |name: &str| QuotaName {
            name: name.into(),
            partition: None,
        };
        assert_eq!(
            hint.policies,
            vec![
                PolicyQuota {
                    id: name("burst"),
                    remaining: 50,
                    limit: Some(100),
                    window: Some(Duration::from_secs(60)),
                    reset_in: Some(Duration::from_secs(30)),
                },
                PolicyQuota {
                    id: name("daily"),
                    remaining: 999,
                    limit: Some(1000),
                    window: Some(Duration::from_secs(86_400)),
                    reset_in: Some(Duration::from_secs(3_600)),
                },
            ],
            "each policy with its own count, quota and window"
        );
        assert_eq!(
            hint.server_scope,
            Some(ServerScope {
                kind: ServerScopeKind::Policy,
                quotas: vec![name("burst"), name("daily")],
            }),
            "both policies name the answer's quotas"
        );
        assert_eq!(
            (hint.remaining, hint.limit),
            (Some(50), Some(100)),
            "the most restrictive still reads as the answer's quota"
        );

        let single = ServerHint::from_headers(
            &headers(&[
                ("ratelimit", r#""default";r=5;t=1"#),
                ("ratelimit-policy", r#""default";q=10;w=1"#),
            ]),
            now,
        );
        assert!(
            single.policies.is_empty() && single.server_scope.is_none(),
            "a single policy stays the host's quota: {single:?}"
        );
        let github = ServerHint::from_headers(
            &headers(&[
                ("ratelimit", r#""a";r=5;t=1, "b";r=6;t=2"#),
                ("x-ratelimit-resource", "core"),
            ]),
            now,
        );
        assert_eq!(
            github.server_scope,
            Some(ServerScope::one(ServerScopeKind::Resource, "core")),
            "a resource the server names wins"
        );
        let many: Vec<String> = (0..40).map(|i| format!("p{i};r=1")).collect();
        let many = ServerHint::from_headers(&headers(&[("ratelimit", &many.join(", "))]), now);
        assert_eq!(many.policies.len(), MAX_POLICIES, "bounded");
    }

    #[test]
    fn ietf_partition_keys_split_policies_and_are_never_kept() {
        let now = at(RFC_DATE_SECS);
        // `pk` is a Byte Sequence: base64 of "user-alice-secret" and "user-bob-secret"
        let alice = "dXNlci1hbGljZS1zZWNyZXQ=";
        let bob = "dXNlci1ib2Itc2VjcmV0";
        let hint = ServerHint::from_headers(
            &headers(&[
                (
                    "ratelimit",
                    &format!(r#""user";r=3;t=10;pk=:{alice}:, "user";r=7;t=10;pk=:{bob}:"#),
                ),
                (
                    "ratelimit-policy",
                    &format!(r#""user";q=5;w=10;pk=:{bob}:, "user";q=10;w=10;pk=:{alice}:"#),
                ),
            ]),
            now,
        );
        assert_eq!(hint.policies.len(), 2, "two partitions, two quotas");
        let (a, b) = (&hint.policies[0], &hint.policies[1]);
        assert_ne!(a.id.partition, None);
        assert_ne!(
            a.id.partition, b.id.partition,
            "distinct keys, distinct partitions"
        );
        assert_eq!(
            (a.limit, b.limit),
            (Some(10), Some(5)),
            "each quota is the member with the same partition key"
        );
        let again = ServerHint::from_headers(
            &headers(&[("ratelimit", &format!(r#""user";r=1;pk=:{alice}:"#))]),
            now,
        );
        assert_eq!(
            again.policies.len(),
            1,
            "one policy with a partition key is a quota of its own"
        );
        assert_eq!(again.policies[0].id, a.id, "stable within the process");
        let shown = format!("{hint:?} {again:?}");
        for secret in ["alice", "bob", alice, bob] {
            assert!(!shown.contains(secret), "a partition key leaked: {shown}");
        }
    }

    #[test]
    fn ietf_dictionary_form() {
        let now = at(RFC_DATE_SECS);
        let hint = ServerHint::from_headers(
            &headers(&[("ratelimit", "limit=100, remaining=50, reset=5")]),
            now,
        );
        let want = ServerHint {
            retry_after: None,
            remaining: Some(50),
            limit: Some(100),
            reset_in: Some(Duration::from_secs(5)),
            ..ServerHint::default()
        };
        assert_eq!(hint, want, "draft -05/-06 RateLimit Dictionary");

        let with_policy = ServerHint::from_headers(
            &headers(&[
                ("ratelimit", "remaining=50, reset=5"),
                ("ratelimit-policy", "1000;w=3600, 100;w=60"),
            ]),
            now,
        );
        assert_eq!(
            with_policy, want,
            "limit from the smallest draft -05 policy"
        );
    }

    #[test]
    fn ietf_separate_fields() {
        let hint = ServerHint::from_headers(
            &headers(&[
                ("ratelimit-limit", "10, 10;window=1, 50;window=60"),
                ("ratelimit-remaining", "3"),
                ("ratelimit-reset", "7"),
            ]),
            at(RFC_DATE_SECS),
        );
        let want = ServerHint {
            retry_after: None,
            remaining: Some(3),
            limit: Some(10),
            reset_in: Some(Duration::from_secs(7)),
            ..ServerHint::default()
        };
        assert_eq!(hint, want, "draft -00..-03 separate fields");
    }

    #[test]
    fn named_quotas_dialects_and_other_units() {
        let now = at(1_700_000_000);
        let github = ServerHint::from_headers(
            &headers(&[
                ("x-ratelimit-resource", "search"),
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1700000030"),
            ]),
            now,
        );
        assert_eq!(
            github.server_scope,
            Some(ServerScope::one(ServerScopeKind::Resource, "search"))
        );
        assert_eq!(github.reset_in, Some(Duration::from_secs(30)));
        let discord = ServerHint::from_headers(
            &headers(&[
                ("x-ratelimit-bucket", "abcd1234"),
                ("x-ratelimit-reset-after", "1.250"),
                ("x-ratelimit-scope", "shared"),
            ]),
            now,
        );
        assert_eq!(
            discord.server_scope,
            Some(ServerScope::one(ServerScopeKind::Bucket, "abcd1234"))
        );
        assert_eq!(discord.reset_in, Some(Duration::from_millis(1250)));
        assert!(!discord.global);
        let global = headers(&[("x-ratelimit-global", "true")]);
        assert!(ServerHint::from_headers(&global, now).global);
        let global = headers(&[("x-ratelimit-scope", "global")]);
        assert!(ServerHint::from_headers(&global, now).global);
        let too_long = "x".repeat(65);
        let odd = headers(&[("x-ratelimit-resource", too_long.as_str())]);
        assert_eq!(ServerHint::from_headers(&odd, now).server_scope, None);

        let stripe = |v| ServerHint::from_headers(&headers(&[("stripe-should-retry", v)]), now);
        assert_eq!(stripe("true").should_retry, Some(true));
        assert_eq!(stripe("false").should_retry, Some(false));
        assert_eq!(stripe("maybe").should_retry, None);

        let shopify =
            ServerHint::from_headers(&headers(&[("x-shopify-shop-api-call-limit", "32/40")]), now);
        assert_eq!(
            (shopify.remaining, shopify.limit, shopify.reset_in),
            (Some(8), Some(40), Some(Duration::from_secs(16)))
        );
        let over = headers(&[("x-shopify-shop-api-call-limit", "50/40")]);
        assert_eq!(ServerHint::from_headers(&over, now).remaining, Some(0));

        let openai = ServerHint::from_headers(
            &headers(&[
                ("x-ratelimit-limit-tokens", "90000"),
                ("x-ratelimit-remaining-tokens", "1200"),
                ("x-ratelimit-reset-tokens", "6m0s"),
            ]),
            now,
        );
        assert_eq!(
            openai.tokens,
            Some(UnitQuota {
                remaining: Some(1200),
                limit: Some(90000),
                reset_in: Some(Duration::from_secs(360))
            })
        );
        assert_eq!(openai.remaining, None, "tokens are not requests");
    }

    #[test]
    fn github_and_discord_x_ratelimit() {
        let now = at(1_372_700_873 - 90);
        let github = ServerHint::from_headers(
            &headers(&[
                ("x-ratelimit-limit", "5000"),
                ("x-ratelimit-remaining", "4999"),
                ("x-ratelimit-reset", "1372700873"),
            ]),
            now,
        );
        let want = ServerHint {
            retry_after: None,
            remaining: Some(4_999),
            limit: Some(5_000),
            reset_in: Some(Duration::from_secs(90)),
            ..ServerHint::default()
        };
        assert_eq!(github, want, "GitHub sends the reset as a timestamp");

        let discord = ServerHint::from_headers(
            &headers(&[
                ("x-ratelimit-reset", "1372700873.5"),
                ("x-ratelimit-reset-after", "1.25"),
            ]),
            now,
        );
        assert_eq!(
            discord.reset_in,
            Some(Duration::from_millis(1_250)),
            "X-RateLimit-Reset-After wins over X-RateLimit-Reset"
        );
    }

    #[test]
    fn openai_request_quota() {
        let hint = ServerHint::from_headers(
            &headers(&[
                ("x-ratelimit-limit-requests", "60"),
                ("x-ratelimit-remaining-requests", "59"),
                ("x-ratelimit-reset-requests", "1s"),
                ("x-ratelimit-reset-tokens", "6m0s"),
            ]),
            at(RFC_DATE_SECS),
        );
        let want = ServerHint {
            retry_after: None,
            remaining: Some(59),
            limit: Some(60),
            reset_in: Some(Duration::from_secs(1)),
            ..ServerHint::default()
        };
        assert_eq!(
            hint, want,
            "OpenAI request quota; the token quota is not read"
        );
    }

    #[test]
    fn precedence_is_per_field() {
        let now = at(RFC_DATE_SECS);
        let all = [
            ("ratelimit", r#""a";r=1;t=1"#),
            ("ratelimit-remaining", "2"),
            ("ratelimit-limit", "20"),
            ("ratelimit-reset", "2"),
            ("x-ratelimit-remaining", "3"),
            ("x-ratelimit-limit", "30"),
            ("x-ratelimit-reset", "3"),
            ("x-ratelimit-remaining-requests", "4"),
            ("x-ratelimit-limit-requests", "40"),
            ("x-ratelimit-reset-requests", "4s"),
            ("retry-after", "9"),
        ];
        let hint = ServerHint::from_headers(&headers(&all), now);
        let want = ServerHint {
            retry_after: Some(Duration::from_secs(9)),
            remaining: Some(1),
            limit: Some(20),
            reset_in: Some(Duration::from_secs(1)),
            ..ServerHint::default()
        };
        assert_eq!(
            hint, want,
            "IETF RateLimit first, then RateLimit-* for the missing limit"
        );

        let hint = ServerHint::from_headers(&headers(&all[4..]), now);
        let want = ServerHint {
            retry_after: Some(Duration::from_secs(9)),
            remaining: Some(3),
            limit: Some(30),
            reset_in: Some(Duration::from_secs(3)),
            ..ServerHint::default()
        };
        assert_eq!(hint, want, "X-RateLimit-* before OpenAI");

        let hint = ServerHint::from_headers(
            &headers(&[
                ("ratelimit-remaining", "-1"),
                ("x-ratelimit-remaining", "1.5"),
                ("x-ratelimit-remaining-requests", "4"),
            ]),
            now,
        );
        assert_eq!(
            hint.remaining,
            Some(4),
            "invalid values fall through to the next source"
        );
    }

    #[test]
    fn malformed_fields_are_ignored() {
        let now = at(RFC_DATE_SECS);
        for bad in [
            "",
            " ",
            "-1",
            "-0",
            "1.5",
            "1e400",
            "NaN",
            "inf",
            "99999999999999999999999",
            "five",
        ] {
            let hint = ServerHint::from_headers(
                &headers(&[
                    ("x-ratelimit-remaining", bad),
                    ("x-ratelimit-limit", bad),
                    ("ratelimit-remaining", bad),
                    ("x-ratelimit-remaining-requests", bad),
                ]),
                now,
            );
            assert_eq!(hint.remaining, None, "remaining {bad:?} must be ignored");
            assert_eq!(hint.limit, None, "limit {bad:?} must be ignored");
        }
        let sfv_broken = ServerHint::from_headers(
            &headers(&[
                ("ratelimit", r#""a";r=-5;t=1, "b;r=3"#),
                ("ratelimit-policy", "q=?"),
                ("ratelimit-remaining", " 8 "),
            ]),
            now,
        );
        assert_eq!(
            sfv_broken,
            ServerHint {
                remaining: Some(8),
                ..ServerHint::default()
            },
            "an unparsable RateLimit falls back to RateLimit-Remaining"
        );
        let negative =
            ServerHint::from_headers(&headers(&[("ratelimit", r#""a";r=-5;t=-1"#)]), now);
        assert!(
            negative.is_empty(),
            "negative r and t are ignored: {negative:?}"
        );
        let non_ascii =
            HeaderValue::from_bytes(b"5\xff").expect("obs-text is a valid header value");
        let mut map = HeaderMap::new();
        map.insert("x-ratelimit-remaining", non_ascii);
        assert!(
            ServerHint::from_headers(&map, now).is_empty(),
            "non-ASCII remaining is ignored"
        );
    }

    #[test]
    fn no_headers_is_empty() {
        let hint = ServerHint::from_headers(&HeaderMap::new(), at(RFC_DATE_SECS));
        assert!(hint.is_empty(), "no headers, no hint: {hint:?}");
        let hint = ServerHint {
            remaining: Some(0),
            ..ServerHint::default()
        };
        assert!(
            !hint.is_empty(),
            "remaining = 0 is a hint, not an empty one"
        );
    }

    const HEADER_NAMES: [&str; 14] = [
        "retry-after",
        "ratelimit",
        "ratelimit-policy",
        "ratelimit-limit",
        "ratelimit-remaining",
        "ratelimit-reset",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "x-ratelimit-reset-after",
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        "x-unrelated",
    ];

    /// Arbitrary bytes, and strings made of the characters these headers use, to reach past the
    /// first check of each parser.
    fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..64),
            "[0-9a-z.;=,\"?*:+ -]{0,40}".prop_map(String::into_bytes),
        ]
    }

    fn any_now() -> impl Strategy<Value = SystemTime> {
        (0u64..=4_102_444_800, 0u32..1_000_000_000)
            .prop_map(|(secs, nanos)| UNIX_EPOCH + Duration::new(secs, nanos))
    }

    fn assert_within_cap(hint: &ServerHint) {
        for d in [hint.retry_after, hint.reset_in].into_iter().flatten() {
            assert!(d <= MAX_HINT, "{d:?} exceeds MAX_HINT in {hint:?}");
        }
    }

    /// Formats whole milliseconds as Go's `Duration.String` does, e.g. `1h2m3.5s` or `20ms`.
    fn go_string(ms: u64) -> String {
        if ms < 1_000 {
            return format!("{ms}ms");
        }
        let (h, m, s, frac) = (
            ms / 3_600_000,
            ms / 60_000 % 60,
            ms / 1_000 % 60,
            ms % 1_000,
        );
        let mut out = String::new();
        if h > 0 {
            out.push_str(&format!("{h}h"));
        }
        if h > 0 || m > 0 {
            out.push_str(&format!("{m}m"));
        }
        out.push_str(&s.to_string());
        if frac > 0 {
            out.push_str(format!(".{frac:03}").trim_end_matches('0'));
        }
        out.push('s');
        out
    }

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in header_bytes(), now in any_now()) {
            if let Ok(v) = HeaderValue::from_bytes(&bytes) {
                for d in [parse_retry_after(&v, now), parse_reset(&v, now)].into_iter().flatten() {
                    prop_assert!(d <= MAX_HINT, "{d:?} from {v:?} exceeds MAX_HINT");
                }
            }
            if let Ok(s) = std::str::from_utf8(&bytes) {
                let parsed = parse_duration_str(s);
                prop_assert!(
                    parsed.is_none_or(|d| d <= MAX_HINT),
                    "{parsed:?} from {s:?} exceeds MAX_HINT"
                );
            }
        }

        #[test]
        fn from_headers_never_panics(
            fields in proptest::collection::vec((0..HEADER_NAMES.len(), header_bytes()), 0..6),
            now in any_now(),
        ) {
            let mut map = HeaderMap::new();
            for (name, bytes) in fields {
                if let (Some(name), Ok(v)) = (HEADER_NAMES.get(name), HeaderValue::from_bytes(&bytes)) {
                    map.append(*name, v);
                }
            }
            assert_within_cap(&ServerHint::from_headers(&map, now));
        }

        #[test]
        fn delta_seconds_round_trip(secs in any::<u32>(), now in any_now()) {
            let want = Duration::from_secs(u64::from(secs)).min(MAX_HINT);
            let v = value(&secs.to_string());
            prop_assert_eq!(parse_retry_after(&v, now), Some(want), "Retry-After {}", secs);
            if u64::from(secs) < EPOCH_THRESHOLD_SECS {
                prop_assert_eq!(parse_reset(&v, now), Some(want), "reset delta {}", secs);
            }
        }

        #[test]
        fn http_date_round_trip(
            date_secs in 315_532_800u64..4_102_444_800,
            now in any_now(),
        ) {
            let date = at(date_secs);
            let want = date.duration_since(now).unwrap_or(Duration::ZERO).min(MAX_HINT);
            let v = value(&httpdate::fmt_http_date(date));
            prop_assert_eq!(parse_retry_after(&v, now), Some(want), "Retry-After {:?}", v);
        }

        #[test]
        fn epoch_reset_round_trip(epoch in EPOCH_THRESHOLD_SECS..4_102_444_800, now in any_now()) {
            let want = at(epoch).duration_since(now).unwrap_or(Duration::ZERO).min(MAX_HINT);
            prop_assert_eq!(parse_reset(&value(&epoch.to_string()), now), Some(want), "epoch {}", epoch);
        }

        #[test]
        fn go_duration_round_trip(ms in 0..=MAX_HINT.as_secs() * 1_000) {
            let want = Duration::from_millis(ms);
            let go = go_string(ms);
            prop_assert_eq!(parse_duration_str(&go), Some(want), "Go form {}", go);
            let minutes = format!("{}m{}.{:03}s", ms / 60_000, ms / 1_000 % 60, ms % 1_000);
            prop_assert_eq!(parse_duration_str(&minutes), Some(want), "XmYs form {}", minutes);
            let millis = format!("{ms}ms");
            prop_assert_eq!(parse_duration_str(&millis), Some(want), "Zms form {}", millis);
        }
    }
}
