//! The IETF `RateLimit` and `RateLimit-Policy` fields as Structured Field Values (RFC 9651),
//! drafts -05 to -10: the host's quota, and each named policy on its own.

use std::time::Duration;

use http::HeaderMap;
use sfv::{BareItem, Dictionary, Item, List, ListEntry, Parser};

use super::{MAX_HINT, MAX_POLICIES, PolicyQuota, Quota, QuotaName, joined, valid_name};
use crate::partition::Partition;

/// IETF `RateLimit` and `RateLimit-Policy` as structured fields (draft -05 and later): the
/// most restrictive policy as the host's quota, and every policy on its own when there are
/// several (or one names a partition).
///
/// Draft -07 and later send a List of named policies, `"default";r=50;t=30`; drafts -05/-06 a
/// Dictionary, `limit=100, remaining=50, reset=5`. The List form is tried first; a field that
/// parses as a List but carries no `r` parameter is read as a Dictionary.
pub(super) fn ietf_structured(headers: &HeaderMap) -> (Quota, Vec<PolicyQuota>) {
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
        quota.whole_seconds = tightest.whole_seconds;
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
        quota.whole_seconds =
            quota.reset_in.is_some() && matches!(member("reset"), Some(BareItem::Integer(_)));
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
    /// `t` is an Integer (whole seconds).
    whole_seconds: bool,
}

/// The policies of a `RateLimit` List that carry a valid `r` (at most [`MAX_POLICIES`]).
/// `None` when the value is not a List or no member has a valid `r`.
fn current_policies(value: &[u8]) -> Option<Vec<CurrentPolicy>> {
    let list: List = Parser::new(value).parse().ok()?;
    let current: Vec<_> = list_items(&list)
        .filter_map(|item| {
            let remaining = item.params.get("r").and_then(sf_count)?;
            let reset_in = item.params.get("t").and_then(sf_seconds);
            Some(CurrentPolicy {
                name: sf_name(&item.bare_item),
                partition: sf_partition(item),
                remaining,
                reset_in,
                whole_seconds: reset_in.is_some()
                    && matches!(item.params.get("t"), Some(BareItem::Integer(_))),
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
