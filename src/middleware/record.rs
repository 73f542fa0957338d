//! An answer read into every record it concerns (the host, the scopes the request falls in,
//! the quotas the server names), and the retry planned from it.

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use tokio::time::Instant;

use super::admit::{Attempt, report_transition};
use super::{Safety, jitter_rng};
use crate::builder::{Config, Polite};
use crate::extensions::RequestOptions;
use crate::host::{Host, NoRetry, Observed};
use crate::observe;
use crate::record::{Lesson, Quota, Reply};
use crate::retry::{Delays, Outcome, Verdict, classify, heed_server};
use crate::scope::{Cooldowns, Scope};
use crate::signals::{MAX_HINT, ServerHint, ServerScope, ServerScopeKind};
use crate::snapshot::ScopeKind;

/// What [`record`] needs to know about the request beside its attempt.
pub(super) struct Answer<'a> {
    /// The scopes the request falls in beside its host.
    pub(super) scopes: &'a [(Arc<Scope>, u32)],
    pub(super) path: &'a str,
    pub(super) safety: &'a Safety,
    /// Attempts sent before this one.
    pub(super) resend_count: u32,
}

/// An attempt's outcome, read once by the adapter into what the engine needs: its status
/// (or the transport error's kind) and what the server said about pacing.
pub(super) struct Reading {
    pub(super) outcome: Outcome,
    /// Empty unless the server answered.
    pub(super) hint: ServerHint,
}

impl Reading {
    /// An answer with `status` and `headers`.
    pub(super) fn answer(status: http::StatusCode, headers: &http::HeaderMap) -> Self {
        Reading {
            outcome: Outcome::Status(status),
            hint: ServerHint::read(headers),
        }
    }

    /// No answer: the transport failed (`outcome` says how).
    pub(super) fn failed(outcome: Outcome) -> Self {
        Reading {
            outcome,
            hint: ServerHint::default(),
        }
    }
}

/// Read an attempt's outcome into the host's state (and the scopes the server named), and
/// classify it. `None`: another middleware failed, which is neither the host's doing nor ours
/// to retry.
///
/// Also returns the cooldowns a `Retry-After` set (the host's, each named scope's), for
/// sharing them.
pub(super) fn record(
    polite: &Polite,
    host: &Host,
    mut attempt: Attempt,
    answer: &Answer<'_>,
    reading: Option<Reading>,
) -> (Verdict, Cooldowns) {
    let config = &polite.inner.config;
    attempt.recorded = true;
    let now = Instant::now();
    let Some(Reading { outcome, hint }) = reading else {
        attempt.release_slots();
        return (Verdict::Return, Cooldowns::new());
    };
    let reply = match outcome {
        Outcome::Status(status) => Some(Reply::read(status, &hint, attempt.sent_at.unwrap_or(now))),
        Outcome::Connect | Outcome::Timeout | Outcome::Other => None,
    };
    let heard = hear(polite, host, &attempt, answer, reply.as_ref(), now);
    let mut cooldowns: Cooldowns = heard
        .paused_for
        .map(|wait| (None, wait))
        .into_iter()
        .collect();
    if let Some(reply) = &reply {
        cooldowns.extend(feed_scopes(
            polite,
            host,
            answer,
            reply,
            heard.host_limit,
            now,
        ));
        if let Some(observed) = &heard.observed {
            tell_host_wide_scopes(host, answer, observed, now, reply.sent_at);
        }
    }
    report_transition(host, config, heard.transition);
    if let (Some(observer), Some(reply)) = (config.observers.get(), &reply)
        && reply.refused
    {
        // the policy that says it is spent, if one does
        let spent = hint.policies.iter().find(|p| p.remaining == 0);
        let scope = reply
            .named
            .and_then(|n| spent.map(|p| &p.id).or(n.quotas.first()))
            .map(|quota| quota.name.as_str());
        observe::refused(
            observer,
            host,
            scope,
            reply.status,
            hint.retry_after,
            answer.resend_count,
        );
    }
    if heard.wake {
        host.answered.notify_waiters();
    }
    (
        classify_answer(config, answer, outcome, reply.as_ref()),
        cooldowns,
    )
}

/// What [`hear`] did to the host's record, for the rest of [`record`].
struct Heard {
    /// What the host's record learned from the server's answer.
    observed: Option<Observed>,
    /// The host was paused by a `Retry-After` for this long.
    paused_for: Option<Duration>,
    transition: Option<crate::breaker::Transition>,
    /// The host record's configured limit.
    host_limit: Option<crate::Limit>,
    /// Someone waiting on the host may go sooner now.
    wake: bool,
}

/// The answer's part in the host's record: its schedule, the breaker, the counters. `reply`:
/// the server's answer (`None`: the transport failed).
fn hear(
    polite: &Polite,
    host: &Host,
    attempt: &Attempt,
    answer: &Answer<'_>,
    reply: Option<&Reply<'_>>,
    now: Instant,
) -> Heard {
    let failure = (polite.inner.config.is_failure)(reply.map(|reply| reply.status));
    let mut heard = Heard {
        observed: None,
        paused_for: None,
        transition: None,
        host_limit: None,
        wake: false,
    };
    let mut state = host.state();
    state.schedule.touch(now);
    state.sent -= 1;
    if let Some(reply) = reply {
        let status = reply.status;
        state
            .breaker
            .note_answer_time(now.saturating_duration_since(reply.sent_at));
        let observed = state.observe(now, reply, attempt.scout, attempt.cost);
        if let Some(retry_after) = observed.retry_after {
            tracing::debug!(host = %host.record.key, %status, ?retry_after, "Retry-After: host cooling down");
            heard.paused_for = Some(retry_after);
        }
        if let Some(change) = observed.rate_change {
            tracing::debug!(host = %host.record.key, from = change.from, to = ?change.to, "adaptive rate changed (units/s)");
        }
        if let Some(gap) = observed.gap {
            tracing::debug!(host = %host.record.key, ?gap, "a bare refusal widened the gap between starts");
        }
        heard.observed = Some(observed);
        if let Some(scope) = &reply.hint.server_scope {
            // unpartitioned, every credential's answers teach this route: without their
            // `pk`s, so that one credential's answer does not move another's requests
            match host.record.partition {
                Some(_) => state.learn_route(answer.path, scope),
                None => state.learn_route(answer.path, &scope.without_partitions()),
            }
        }
    } else if attempt.scout {
        state.release_scout();
    }
    if failure {
        state.counters.failures += 1;
    }
    heard.transition = state.breaker.record(now, &attempt.admission, failure);
    heard.host_limit = state.limit();
    // the requests an answer may let go sleep in the pacing queue (or wait for the breaker),
    // which they joined under the lock they decided under: with nobody in it, one deciding
    // from now on sees what this answer changed here without a wake-up (not so for what
    // `feed_scopes` changes; `tell_host_wide_scopes` only ever moves slots later, which wakes
    // nobody)
    heard.wake = state.queued > 0
        || reply.is_some_and(|reply| reply.named.is_some() || reply.hint.tokens.is_some())
        || heard.transition.is_some();
    heard
}

/// Whether the answer may be retried: the classifier's verdict, a rate-limit 403 counted as
/// the refusal it is, and `Stripe-Should-Retry` where the server vouches for a retry.
fn classify_answer(
    config: &Config,
    answer: &Answer<'_>,
    outcome: Outcome,
    reply: Option<&Reply<'_>>,
) -> Verdict {
    // a 403 that says it is a rate limit is a refusal, retried like a 429
    let outcome = match reply {
        Some(reply) if reply.refused => Outcome::Status(http::StatusCode::TOO_MANY_REQUESTS),
        _ => outcome,
    };
    let verdict = classify(
        config.retryable,
        &answer.safety.method,
        answer.safety.idempotency_key,
        &outcome,
    );
    let should_retry = reply.and_then(|reply| reply.hint.should_retry);
    heed_server(verdict, config.retryable, &outcome, should_retry)
}

/// What the host-wide scopes that pace a host from outside (a port-less `host_limit`) learn
/// from its answer, as a record's own schedule would: a bare refusal widens the gap between
/// their starts (see `Pacer::widen_gap`), and the first answer starts their schedule.
fn tell_host_wide_scopes(
    host: &Host,
    answer: &Answer<'_>,
    observed: &Observed,
    now: Instant,
    sent_at: Instant,
) {
    if !observed.slowed && observed.first_answer.is_none() {
        return;
    }
    let lesson = Lesson {
        refused: observed.slowed,
        first_answer: observed.first_answer,
        ..Lesson::none(sent_at)
    };
    for (scope, _) in answer
        .scopes
        .iter()
        .filter(|(s, _)| s.kind == ScopeKind::Host)
    {
        if let Some(gap) = scope.state().schedule.observe(now, &lesson).gap {
            tracing::debug!(host = %host.record.key, scope = %scope.label, ?gap, "a bare refusal widened the gap between starts");
        }
    }
}

/// Give an answer's word about other scopes to them: a quota the server named takes its
/// cooldown and quota (a global refusal cools the host down instead, already done), and a unit's
/// count (OpenAI's tokens) goes to that unit's scope. `named` comes with the host record's
/// configured limit.
///
/// A configured limit is the user's word on the quota, here as for a host (see
/// [`crate::pacing::quota`]): when one the request was paced by (the host's, a host-wide or a
/// route limit) allows no more than the server's quota, the quota headers of *successful*
/// answers are not acted on in the scope the server named. A server that rounds its reset up to
/// the next second, or reports a moving window's count against a fixed reset, would otherwise
/// close or slow the scope for up to a second per window. Refusals saying nothing is left
/// still count.
fn feed_scopes(
    polite: &Polite,
    host: &Host,
    answer: &Answer<'_>,
    reply: &Reply<'_>,
    host_limit: Option<crate::Limit>,
    now: Instant,
) -> Cooldowns {
    let mut cooldowns = Cooldowns::new();
    if let Some(named) = reply.named {
        // what the user configured for this request (each scope's lock taken on its own)
        let configured: Vec<crate::Limit> = answer
            .scopes
            .iter()
            .filter(|(scope, _)| matches!(scope.kind, ScopeKind::Host | ScopeKind::Route))
            .filter_map(|(scope, _)| scope.state().schedule.limit())
            .chain(host_limit)
            .collect();
        cooldowns = feed_named(polite, host, named, &configured, reply, now);
    }
    if let Some(tokens) = reply.hint.tokens {
        let unit = answer
            .scopes
            .iter()
            .find(|(scope, _)| scope.kind == ScopeKind::Unit && scope.label.ends_with(" tokens"));
        // the configured unit limit paces; the server's word counts when it says the unit
        // is spent (any status): the scope is paused until its reset
        if let Some((scope, _)) = unit
            && tokens.remaining == Some(0)
            && let Some(reset_in) = tokens.reset_in
        {
            let lesson = Lesson {
                spent_until: Some(crate::time::far_add(now, reset_in.min(MAX_HINT))),
                ..Lesson::none(reply.sent_at)
            };
            scope.state().schedule.observe(now, &lesson);
        }
    }
    cooldowns
}

/// Each quota the server named takes its pause and its count (see [`feed_scopes`]), unless a
/// `configured` limit keeps it already. Returns the cooldowns a `Retry-After` set.
fn feed_named(
    polite: &Polite,
    host: &Host,
    named: &ServerScope,
    configured: &[crate::Limit],
    reply: &Reply<'_>,
    now: Instant,
) -> Cooldowns {
    let Reply {
        status,
        hint,
        refused,
        ..
    } = *reply;
    let (code, mut cooldowns) = (status.as_u16(), Cooldowns::new());
    let retry_after = hint
        .retry_after
        .filter(|_| (refused || code == 503) && !hint.global);
    // IETF policies each take their own count; a Retry-After goes to the policies that say
    // they are spent, or to every policy of the answer when none does
    let any_spent = hint.policies.iter().any(|policy| policy.remaining == 0);
    // the latest a quota named here holds requests back until (a pause, a quota counted to its
    // reset): the host's record, which routes its requests to these quotas, is kept until then
    let mut held = None;
    for (i, quota) in named.quotas.iter().enumerate() {
        let own;
        let mut renewal = None;
        let (quota_hint, retry_after, window) = match hint.policies.get(i) {
            Some(policy) if named.kind == ServerScopeKind::Policy => {
                own = policy.hint();
                renewal = policy.limit.zip(policy.window);
                let pauses = !any_spent || policy.remaining == 0;
                let window = policy.window.or(policy.reset_in);
                (&own, retry_after.filter(|_| pauses), window)
            }
            _ => (hint, retry_after, hint.reset_in),
        };
        // the server's quota is `limit` per `window` at most (the time to its reset is within
        // its window): a configured limit of no more, over at least as long, keeps it
        let user_keeps_it = quota_hint.limit.zip(window).is_some_and(|(quota, window)| {
            configured
                .iter()
                .any(|limit| u64::from(limit.count()) <= quota && limit.window() >= window)
        });
        let spent_refusal = refused && quota_hint.remaining == Some(0);
        let scope = polite.named_scope(host, named.kind, quota);
        let retry_after = retry_after.map(|wait| wait.min(MAX_HINT));
        let lesson = Lesson {
            retry_after,
            quota: match !user_keeps_it || spent_refusal {
                true => Quota::Count {
                    scout: false,
                    status: code,
                    hint: quota_hint,
                    sent: Some(reply.sent_at),
                },
                false => Quota::Silent,
            },
            ..Lesson::none(reply.sent_at)
        };
        let mut state = scope.state();
        if renewal.is_some() {
            state.renewal = renewal;
        }
        state.schedule.observe(now, &lesson);
        held = held.max(state.schedule.holds_until(now));
        drop(state);
        if let Some(retry_after) = retry_after {
            tracing::debug!(host = %host.record.key, scope = %scope.label, ?retry_after, "Retry-After: scope cooling down");
            cooldowns.push((Some(Arc::clone(&scope)), retry_after));
        }
    }
    if let Some(until) = held {
        host.state().routes_held_until(until);
    }
    cooldowns
}

/// Decide whether to retry an answer (its verdict, and the pause it asked for), and after how
/// long; `None` returns the last outcome to the caller.
pub(super) fn plan_retry(
    host: &Host,
    polite: &Polite,
    opts: &RequestOptions,
    (verdict, paused): (Verdict, Option<Duration>),
    attempts: u32,
    backoff: &mut Option<Box<Delays<SmallRng>>>,
) -> Option<Duration> {
    if verdict == Verdict::Return {
        return None;
    }
    let config = &polite.inner.config;
    let delay = backoff
        .get_or_insert_with(|| Box::new(config.backoff.delays(jitter_rng(polite))))
        .next()
        .unwrap_or(config.backoff.max());
    let max_wait = config.max_retry_after;
    let plan = host
        .state()
        .plan_retry(Instant::now(), delay, paused, opts.deadline, max_wait);
    match plan {
        Ok(delay) => {
            tracing::debug!(host = %host.record.key, attempts, reason = "backoff", wait = ?delay, "retrying");
            Some(delay)
        }
        Err(NoRetry::CircuitOpen) => {
            tracing::debug!(host = %host.record.key, attempts, "circuit open: not retrying");
            None
        }
        Err(NoRetry::ServerWaitTooLong(wait)) => {
            tracing::debug!(host = %host.record.key, ?wait, "server wait past max_retry_after: returning the response");
            None
        }
        Err(NoRetry::PastDeadline) => {
            tracing::debug!(host = %host.record.key, attempts, "the next attempt would pass the deadline");
            None
        }
        Err(NoRetry::BudgetSpent) => {
            tracing::debug!(host = %host.record.key, attempts, "retry budget spent: not retrying");
            None
        }
    }
}
