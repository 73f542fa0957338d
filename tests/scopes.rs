//! Quota scopes and API dialects against loopback servers that meter per credential, per
//! resource, per route and per unit, and count what reached them.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{FixedWindowPolicies, Reply, burst, client, polite_error, serve, serve_with_headers};
use reqwest_polite::{Breaker, Limit, Polite, ScopeKind, Units};

/// Most instants of `at` within any span of `window`.
fn most_in_any_window(at: &[Instant], window: Duration) -> usize {
    at.iter()
        .map(|&s| at.iter().filter(|&&t| t >= s && t < s + window).count())
        .max()
        .unwrap_or(0)
}

fn epoch_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

#[tokio::test]
async fn each_credential_has_its_own_quota_and_is_never_shown() {
    // the server meters each Authorization value on its own: 5 per second each, strictly
    let log: Arc<Mutex<HashMap<String, Vec<Instant>>>> = Arc::default();
    let seen = Arc::clone(&log);
    let server = serve_with_headers(move |_, _, headers| {
        let key = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_string();
        let now = Instant::now();
        let mut log = seen.lock().expect("log lock");
        let arrivals = log.entry(key).or_default();
        let recent = arrivals
            .iter()
            .filter(|&&t| now.duration_since(t) < Duration::from_secs(1))
            .count();
        if recent >= 5 {
            return Reply::status(429).header("retry-after", 1);
        }
        arrivals.push(now);
        Reply::ok()
    });
    let polite = Polite::builder()
        .host_limit("127.0.0.1", Limit::per_second(5))
        .partition_by_header("authorization")
        .build();
    let client = client(&polite);
    let started = Instant::now();
    let calls = (0..20).map(|i| {
        let secret = if i % 2 == 0 {
            "Bearer sk-ALPHA-SECRET"
        } else {
            "Bearer sk-BRAVO-SECRET"
        };
        client
            .get(server.url("/v1/things"))
            .header("authorization", secret)
            .send()
    });
    let results = futures::future::join_all(calls).await;
    for result in &results {
        assert_eq!(result.as_ref().expect("answered").status(), 200);
    }
    assert_eq!(
        server.stats.refused(),
        0,
        "each credential kept its own quota"
    );
    let log = log.lock().expect("log lock");
    let first_second: usize = log
        .values()
        .map(|at| {
            at.iter()
                .filter(|&&t| t < started + Duration::from_secs(1))
                .count()
        })
        .sum();
    assert!(
        first_second > 5,
        "{first_second} requests in the first second: two credentials must not share one quota"
    );
    for at in log.values() {
        assert!(most_in_any_window(at, Duration::from_secs(1)) <= 5);
    }
    let hosts = polite.snapshot();
    assert_eq!(hosts.len(), 2, "one record per credential");
    let scopes = polite.scope_snapshot();
    assert_eq!(
        scopes.len(),
        2,
        "one host-wide quota per credential: {scopes:?}"
    );
    let shown = format!("{hosts:?} {scopes:?}")
        + &hosts.iter().map(ToString::to_string).collect::<String>()
        + &scopes.iter().map(ToString::to_string).collect::<String>();
    assert!(!shown.contains("SECRET"), "a credential leaked: {shown}");
    assert!(hosts.iter().all(|h| h.partition.is_some()));
}

#[tokio::test]
async fn thousands_of_credentials_stay_bounded_and_are_evicted() {
    let server = serve(|_, _| Reply::ok());
    let polite = Polite::builder()
        .partition_by_header("x-api-key")
        .idle_timeout(Duration::from_millis(200))
        .build();
    let client = client(&polite);
    for i in 0..2000 {
        let huge = format!("{i}-{}", "k".repeat(4096));
        client
            .get(server.url("/"))
            .header("x-api-key", huge)
            .send()
            .await
            .expect("answered");
    }
    assert!(polite.host_count() <= 2000);
    tokio::time::sleep(Duration::from_millis(500)).await;
    client.get(server.url("/")).send().await.expect("answered");
    assert!(
        polite.host_count() <= 2,
        "{} records left after the idle time",
        polite.host_count()
    );
}

/// A GitHub-like server: `/search/` is the `search` resource (2 per minute), everything else
/// `core` (plenty); quota headers name the resource, the reset is in epoch seconds.
fn github_like() -> common::TestServer {
    let search_used = AtomicU64::new(0);
    serve(move |_, path| {
        let reset = epoch_secs() + 60;
        if path.starts_with("/search/") {
            let used = search_used.fetch_add(1, Ordering::SeqCst) + 1;
            let remaining = 2u64.saturating_sub(used);
            let reply = if used > 2 {
                Reply::status(403).header("retry-after", 60)
            } else {
                Reply::ok()
            };
            reply
                .header("x-ratelimit-resource", "search")
                .header("x-ratelimit-limit", 2)
                .header("x-ratelimit-remaining", remaining)
                .header("x-ratelimit-reset", reset)
        } else {
            Reply::ok()
                .header("x-ratelimit-resource", "core")
                .header("x-ratelimit-limit", 5000)
                .header("x-ratelimit-remaining", 4000)
                .header("x-ratelimit-reset", reset)
        }
    })
}

#[tokio::test]
async fn a_spent_search_resource_never_closes_core() {
    let server = github_like();
    let polite = Polite::builder()
        .max_retry_after(Duration::from_secs(1))
        .build();
    let client = client(&polite);
    for _ in 0..2 {
        let resp = client
            .get(server.url("/search/issues"))
            .send()
            .await
            .expect("answered");
        assert_eq!(resp.status(), 200);
    }
    let err = client
        .get(server.url("/search/code"))
        .send()
        .await
        .expect_err("the search quota is spent for a minute");
    assert!(
        matches!(
            polite_error(&err),
            Some(reqwest_polite::Error::CoolingDown { .. })
        ),
        "{err}"
    );
    let started = Instant::now();
    for _ in 0..3 {
        let resp = client
            .get(server.url("/repos/a/b"))
            .send()
            .await
            .expect("core is not spent");
        assert_eq!(resp.status(), 200);
    }
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "core waited"
    );
    assert_eq!(
        server.stats.hits(),
        2 + 3,
        "the spent search was never sent"
    );
    let scopes = polite.scope_snapshot();
    assert!(
        scopes
            .iter()
            .any(|s| s.kind == ScopeKind::Resource && s.scope.ends_with(" search")),
        "{scopes:?}"
    );
}

#[tokio::test]
async fn a_spent_resource_closes_the_route_of_the_credential_that_spent_it() {
    // partitioned: the quota the server named is fed and read under the same partition
    let server = github_like();
    let polite = Polite::builder()
        .partition_by_header("authorization")
        .max_retry_after(Duration::from_secs(1))
        .build();
    let client = client(&polite);
    let search = |client: &reqwest_middleware::ClientWithMiddleware| {
        client
            .get(server.url("/search/issues"))
            .header("authorization", "token A")
            .send()
    };
    for _ in 0..2 {
        assert_eq!(search(&client).await.expect("answered").status(), 200);
    }
    let err = search(&client).await.expect_err("spent for a minute");
    assert!(
        matches!(
            polite_error(&err),
            Some(reqwest_polite::Error::CoolingDown { .. })
        ),
        "{err}"
    );
    assert_eq!(server.stats.hits(), 2, "the spent search was never sent");
}

#[tokio::test]
async fn a_403_with_retry_after_closes_the_host_like_a_429() {
    // GitHub's secondary limit: 403 + Retry-After, then fine
    let seen = AtomicU64::new(0);
    let server = serve(move |_, _| {
        if seen.fetch_add(1, Ordering::SeqCst) == 0 {
            Reply::status(403).header("retry-after", 1)
        } else {
            Reply::ok()
        }
    });
    let polite = Polite::builder().max_retries(0).build();
    let client = client(&polite);
    let first = client.get(server.url("/")).send().await.expect("answered");
    assert_eq!(first.status(), 403);
    let second = client.get(server.url("/")).send().await.expect("answered");
    assert_eq!(second.status(), 200);
    let arrivals = server.stats.arrivals();
    let gap = arrivals[1] - arrivals[0];
    assert!(
        gap >= Duration::from_millis(950),
        "the next went after {gap:?}"
    );
    let host = &polite.snapshot()[0];
    assert_eq!(host.counters.throttled, 1);
    assert_eq!(
        host.breaker.consecutive_failures, 0,
        "a rate limit is no failure"
    );
}

#[tokio::test]
async fn stripe_should_retry_overrides_the_retry_decision_either_way() {
    let server = serve(|method, _| match method {
        "GET" => Reply::status(503).header("stripe-should-retry", "false"),
        _ => Reply::status(409).header("stripe-should-retry", "true"),
    });
    let polite = Polite::builder()
        .backoff(reqwest_polite::Backoff::exponential(
            Duration::from_millis(5),
            Duration::from_millis(10),
        ))
        .max_retries(2)
        .build();
    let client = client(&polite);
    let get = client.get(server.url("/")).send().await.expect("answered");
    assert_eq!(get.status(), 503);
    assert_eq!(server.stats.hits(), 1, "a GET the server says not to retry");
    let post = client
        .post(server.url("/"))
        .body("x")
        .send()
        .await
        .expect("answered");
    assert_eq!(post.status(), 409);
    assert_eq!(
        server.stats.hits(),
        1 + 3,
        "a POST the server vouches for: retried"
    );
}

#[tokio::test]
async fn stripe_should_retry_true_never_repeats_a_success_nor_overrides_the_users_no() {
    // the path says what to answer; every answer says `Stripe-Should-Retry: true`
    let server = serve(|_, path| {
        let status = match path {
            "/created" => 200,
            "/moved" => 301, // no Location: reqwest hands it back as it is
            _ => 503,
        };
        Reply::status(status).header("stripe-should-retry", "true")
    });
    let fast = || {
        Polite::builder().backoff(reqwest_polite::Backoff::exponential(
            Duration::from_millis(1),
            Duration::from_millis(2),
        ))
    };
    let default = client(&fast().build());
    let sent = |path: &str| {
        let hits = server.stats.hits();
        let req = default.post(server.url(path)).body("order");
        async move { (req.send().await.expect("answered").status(), hits) }
    };
    let (status, before) = sent("/created").await;
    assert_eq!(status, 200);
    assert_eq!(
        server.stats.hits() - before,
        1,
        "a POST without an Idempotency-Key answered 200: it took effect, sent once"
    );
    let (status, before) = sent("/moved").await;
    assert_eq!(status, 301);
    assert_eq!(server.stats.hits() - before, 1, "a redirect is no failure");
    let (status, before) = sent("/failed").await;
    assert_eq!(status, 503);
    assert_eq!(
        server.stats.hits() - before,
        4,
        "a failure the server vouches for is retried (3 retries by default)"
    );

    let users_no = [
        (
            "Retryable::Never",
            client(&fast().retryable(reqwest_polite::Retryable::Never).build()),
            false,
        ),
        (
            "max_retries(0)",
            client(&fast().max_retries(0).build()),
            false,
        ),
        ("NoRetry", client(&fast().build()), true),
    ];
    for (what, client, no_retry) in users_no {
        let before = server.stats.hits();
        let mut req = client.get(server.url("/failed"));
        if no_retry {
            req = req.with_extension(reqwest_polite::NoRetry);
        }
        let status = req.send().await.expect("answered").status();
        assert_eq!(status, 503);
        assert_eq!(
            server.stats.hits() - before,
            1,
            "{what}: the server's `true` does not override the user's no"
        );
    }
}

#[tokio::test]
async fn a_credential_never_shows_in_debug_snapshots_or_errors() {
    let polite = Polite::builder()
        .partition_by_header("authorization")
        .max_retries(0)
        .breaker(Breaker::consecutive_failures(1).open_for(Duration::from_secs(60)))
        .build();
    let shown = common::shown_after_a_credential(&polite, "Bearer sk-LOCAL-CREDENTIAL").await;
    assert!(
        shown.contains("authorization"),
        "the header is shown: {shown}"
    );
    assert!(
        !shown.contains("sk-LOCAL-CREDENTIAL"),
        "a credential leaked: {shown}"
    );
}

#[tokio::test]
async fn a_unit_limit_paces_tokens_beside_requests() {
    let server = serve(|_, _| Reply::ok());
    let polite = Polite::builder()
        .unit_limit("127.0.0.1", "tokens", Limit::per_second(1000))
        .build();
    let client = client(&polite);
    let calls = (0..6).map(|_| {
        client
            .post(server.url("/v1/chat/completions"))
            .with_extension(Units::new("tokens", 400))
            .send()
    });
    for result in futures::future::join_all(calls).await {
        assert_eq!(result.expect("answered").status(), 200);
    }
    let arrivals = server.stats.arrivals();
    let most = most_in_any_window(&arrivals, Duration::from_secs(1));
    assert!(
        most <= 2,
        "{most} requests of 400 tokens in one second (1000 allowed)"
    );
    let err = client
        .post(server.url("/v1/chat/completions"))
        .with_extension(Units::new("tokens", 5000))
        .send()
        .await
        .expect_err("more tokens than the whole quota can never be sent");
    assert!(
        matches!(
            polite_error(&err),
            Some(reqwest_polite::Error::CostExceedsLimit { cost: 5000, .. })
        ),
        "{err}"
    );
}

#[tokio::test]
async fn openai_token_headers_feed_the_tokens_scope() {
    // the server says the token quota is spent for 2 s: the next token request waits for it
    let server = serve(|_, _| {
        Reply::ok()
            .header("x-ratelimit-limit-tokens", 1000)
            .header("x-ratelimit-remaining-tokens", 0)
            .header("x-ratelimit-reset-tokens", "2s")
    });
    let polite = Polite::builder()
        .unit_limit("127.0.0.1", "tokens", Limit::per_second(100_000))
        .max_retry_after(Duration::from_millis(500))
        .build();
    let client = client(&polite);
    let url = server.url("/v1/chat/completions");
    client
        .post(&url)
        .with_extension(Units::new("tokens", 10))
        .send()
        .await
        .expect("the first goes");
    let err = client
        .post(&url)
        .with_extension(Units::new("tokens", 10))
        .send()
        .await
        .expect_err("the token quota is spent past max_retry_after");
    assert!(
        matches!(
            polite_error(&err),
            Some(reqwest_polite::Error::CoolingDown { .. })
        ),
        "{err}"
    );
    // requests without tokens do not fall in the tokens scope
    client.get(&url).send().await.expect("not a token request");
    assert_eq!(server.stats.hits(), 2);
}

#[tokio::test]
async fn a_route_limit_applies_to_its_paths_only() {
    let server = serve(|_, _| Reply::ok());
    let polite = Polite::builder()
        .host_limit("127.0.0.1", Limit::per_second(100))
        .route_limit("127.0.0.1", "/search/", Limit::per_second(2))
        .build();
    let client = client(&polite);
    let started = Instant::now();
    let searches = (0..4).map(|_| client.get(server.url("/search/x")).send());
    let others = (0..6).map(|_| client.get(server.url("/repos/x")).send());
    let (searches, others) = futures::future::join(
        futures::future::join_all(searches),
        futures::future::join_all(others),
    )
    .await;
    assert!(searches.iter().chain(&others).all(|r| r.is_ok()));
    let arrivals = server.stats.arrivals();
    assert_eq!(arrivals.len(), 10);
    assert!(
        most_in_any_window(&arrivals, Duration::from_secs(1)) <= 2 + 6,
        "only the searches are held to 2 per second"
    );
    // the six other requests are paced at 100/s, not behind the searches (which would take
    // them past 1.5 s)
    let early = arrivals
        .iter()
        .filter(|&&t| t < started + Duration::from_secs(1))
        .count();
    assert!(
        early > 6,
        "{early} requests in the first second: the six others and a search"
    );
    let scopes = polite.scope_snapshot();
    let route = scopes
        .iter()
        .find(|s| s.kind == ScopeKind::Route)
        .expect("the route scope");
    assert_eq!(route.taken, 4);
}

/// A bare 429 on a host paced by a port-less `host_limit` widens the gap between the
/// host-wide scope's starts, as it widens a host's own spaced schedule: the scope is what paces
/// the host, so the learned margin must land there.
#[tokio::test]
async fn a_bare_refusal_widens_the_gap_of_a_portless_host_limit() {
    let (before, after) = gaps_around_a_refusal(|_| {
        Polite::builder().host_limit("127.0.0.1", Limit::per_second(100))
    })
    .await;
    assert!(
        before >= Limit::per_second(100).interval() && after > before,
        "the gap was {before:?} before the refusal and {after:?} after it"
    );
}

/// A port with a limit of its own is paced by its own record, which widens its own gap: the
/// host-wide scope over every port is left as it was.
#[tokio::test]
async fn a_refusal_on_a_port_with_its_own_limit_leaves_the_host_wide_gap() {
    let (before, after) = gaps_around_a_refusal(|authority| {
        Polite::builder()
            .host_limit("127.0.0.1", Limit::per_second(100))
            .host_limit(authority, Limit::per_second(100))
    })
    .await;
    assert_eq!(before, after);
}

/// The host-wide scope's interval before and after a bare 429 on the 20th request, with the
/// client `build` makes for the server's authority.
async fn gaps_around_a_refusal(
    build: impl FnOnce(String) -> reqwest_polite::PoliteBuilder,
) -> (Duration, Duration) {
    let seen = AtomicU64::new(0);
    let server = serve(move |_, _| {
        if seen.fetch_add(1, Ordering::SeqCst) == 19 {
            Reply::status(429)
        } else {
            Reply::ok()
        }
    });
    let polite = build(server.addr.to_string()).build();
    let client = client(&polite);
    let url = server.url("/");
    let gap = |polite: &Polite| {
        let scopes = polite.scope_snapshot();
        let host_wide = scopes.iter().find(|s| s.kind == ScopeKind::Host);
        host_wide.expect("the host-wide scope").interval
    };
    let statuses = burst(&client, &url, 10).await;
    assert!(statuses.iter().all(|s| *s == Ok(200)), "{statuses:?}");
    let before = gap(&polite);
    let statuses = burst(&client, &url, 20).await;
    assert!(statuses.iter().all(|s| *s == Ok(200)), "{statuses:?}");
    assert_eq!(server.stats.refused(), 1);
    (before, gap(&polite))
}

/// The first answer of a record's scout starts a host-wide scope's schedule only while that
/// scout is still the scope's last start: a slow first answer on one port never stalls the
/// other ports' slots.
#[tokio::test]
async fn a_slow_first_answer_on_one_port_does_not_stall_the_others() {
    let fast = serve(|_, _| Reply::ok());
    let slow = serve(|_, _| Reply::ok().delay(Duration::from_millis(800)));
    let polite = Polite::builder()
        .host_limit("127.0.0.1", Limit::per_second(10))
        .build();
    let client = client(&polite);
    let scout = tokio::spawn({
        let (client, url) = (client.clone(), slow.url("/"));
        async move { client.get(url).send().await.map(|r| r.status().as_u16()) }
    });
    // the fast port's requests go one after another at 10/s, before and after the slow
    // port's first answer (0.8 s in)
    let mut done = Vec::new();
    for _ in 0..15 {
        let status = client.get(fast.url("/")).send().await.map(|r| r.status());
        assert_eq!(status.ok(), Some(reqwest::StatusCode::OK));
        done.push(Instant::now());
    }
    let longest = done.windows(2).map(|w| w[1] - w[0]).max().expect("gaps");
    // 100 ms apart; a schedule postponed by the slow answer would hold the next one 0.8 s
    assert!(longest < Duration::from_millis(500), "a gap of {longest:?}");
    assert_eq!(scout.await.expect("scout task").ok(), Some(200));
}

#[tokio::test]
async fn set_host_limit_takes_effect_from_the_next_request() {
    let server = serve(|_, _| Reply::ok());
    let polite = Polite::builder()
        .host_limit("127.0.0.1", Limit::per_second(1000))
        .build();
    let client = client(&polite);
    let url = server.url("/");
    for _ in 0..3 {
        client.get(&url).send().await.expect("answered");
    }
    polite.set_host_limit("127.0.0.1", Limit::per_second(2));
    let before = server.stats.hits() as usize;
    let calls = (0..4).map(|_| client.get(&url).send());
    futures::future::join_all(calls).await;
    let arrivals = &server.stats.arrivals()[before..];
    assert!(
        most_in_any_window(arrivals, Duration::from_secs(1)) <= 2,
        "the new limit holds at once"
    );
    polite.clear_host_limit("127.0.0.1");
    let started = Instant::now();
    let calls = (0..5).map(|_| client.get(&url).send());
    futures::future::join_all(calls).await;
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "cleared: no limit (beyond what was already taken)"
    );
}

#[tokio::test]
async fn each_ietf_policy_is_its_own_quota_and_all_count_every_request() {
    // a short "burst" policy (4 per 1 s) inside a longer "daily" one (10 per 3 s, scaled
    // down), fixed windows from the server's start; 14 requests at once
    let second = Duration::from_secs(1);
    let started = Instant::now();
    let policies = FixedWindowPolicies::new(&[("burst", 4, second), ("daily", 10, 3 * second)]);
    let server = serve(move |_, _| policies.reply());
    let polite = Polite::builder().max_retries(0).build();
    let client = client(&polite);
    let results = burst(&client, &server.url("/v1/things"), 14).await;
    assert!(
        results.iter().all(|r| r == &Ok(200)),
        "every request answered 200: {results:?} {:?}",
        server
            .stats
            .arrivals()
            .iter()
            .map(|&t| t - started)
            .collect::<Vec<_>>()
    );
    assert_eq!(server.stats.refused(), 0, "neither policy was exceeded");
    let arrivals: Vec<Duration> = server
        .stats
        .arrivals()
        .iter()
        .map(|&t| t - started)
        .collect();
    let within = |from: u32, to: u32| {
        arrivals
            .iter()
            .filter(|&&t| t >= from * second && t < to * second)
            .count()
    };
    assert_eq!(within(0, 1), 4, "the burst quota at once: {arrivals:?}");
    assert!(
        within(1, 2) >= 1,
        "a spent burst waits for its own reset, not the daily one: {arrivals:?}"
    );
    assert!(
        within(0, 3) <= 10,
        "the daily policy kept its own count across burst windows: {arrivals:?}"
    );
    assert!(
        within(3, 10) >= 4,
        "a spent daily policy holds everything until its reset: {arrivals:?}"
    );
    let scopes = polite.scope_snapshot();
    let mut policies: Vec<_> = scopes
        .iter()
        .filter(|s| s.kind == ScopeKind::Policy)
        .map(|s| s.scope.rsplit(' ').next().unwrap_or_default().to_string())
        .collect();
    policies.sort();
    assert_eq!(
        policies,
        ["burst", "daily"],
        "one scope per policy: {scopes:?}"
    );
}

#[tokio::test]
async fn an_ietf_policy_with_a_window_of_100_ms_or_less_reopens_at_each_reset() {
    // a "fast" policy of 10 per 50 or 100 ms (`w=0.050`; `t` rounded up to a whole second, as
    // the draft sends it) beside a "slow" one that never binds; 40 requests, 4 windows' worth
    for window_ms in [50, 100] {
        let window = Duration::from_millis(window_ms);
        let policies = FixedWindowPolicies::new(&[
            ("fast", 10, window),
            ("slow", 1000, Duration::from_secs(60)),
        ]);
        let server = serve(move |_, _| policies.reply());
        let polite = Polite::builder().max_retries(0).build();
        let client = client(&polite);
        let url = server.url("/v1/things");
        let answered =
            tokio::time::timeout(Duration::from_secs(20), burst(&client, &url, 40)).await;
        let arrivals = server.stats.arrivals();
        assert!(
            answered.is_ok(),
            "w={window:?}: 40 requests still waiting after 20 s, {} reached the server: the \
             policy's scope never reopened",
            arrivals.len()
        );
        assert_eq!(arrivals.len(), 40, "w={window:?}: every request went out");
    }
}

#[tokio::test]
async fn a_configured_limit_is_trusted_over_a_named_quota_that_rounds_its_reset() {
    // every answer says the `core` resource is spent until the next whole second, as a
    // moving-window server reporting its count against a rounded reset does while paced at
    // its quota; the user configured that quota: the schedule holds, not the headers
    let server = serve(|_, _| {
        Reply::ok()
            .header("x-ratelimit-resource", "core")
            .header("x-ratelimit-limit", 10)
            .header("x-ratelimit-remaining", 0)
            .header("x-ratelimit-reset", epoch_secs() + 1)
    });
    let authority = server.addr.to_string();
    let polite = Polite::builder()
        .host_limit(&authority, Limit::per_second(10))
        .build();
    let client = client(&polite);
    let started = Instant::now();
    let results = burst(&client, &server.url("/repos/a/b"), 12).await;
    assert!(results.iter().all(|r| r == &Ok(200)), "{results:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "12 requests at 10/s took {:?}: the named quota's headers closed it once a second",
        started.elapsed()
    );
    assert!(
        server.stats.max_in_any_window(Duration::from_secs(1)) <= 10,
        "the configured limit still holds"
    );
}
