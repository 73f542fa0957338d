//! Where features meet: partitions x scopes and the sweep, run-time limits x host-wide scopes,
//! retries x refusals before a send, in-flight caps x routes, the breaker x the pacing queue.
//! Each test runs against a loopback server that counts what reached it.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Reply, client, polite_error, serve};
use reqwest_polite::{Backoff, Breaker, Deadline, Jitter, Limit, Polite, WaitIfOpen};

/// A new credential per request leaves scope records behind (a port-less host limit, a route):
/// they are swept with the host records once idle, however many there were.
#[tokio::test]
async fn scope_records_of_idle_credentials_are_swept_with_their_hosts() {
    let server = serve(|_, _| Reply::ok());
    let polite = Polite::builder()
        .partition_by_header("authorization")
        .host_limit("127.0.0.1", Limit::per_second(100_000))
        .route_limit("127.0.0.1", "/api/", Limit::per_second(100_000))
        .idle_timeout(Duration::from_secs(1))
        .build();
    let client = client(&polite);
    for i in 0..300 {
        client
            .get(server.url("/api/items"))
            .header("authorization", format!("token-{i}"))
            .send()
            .await
            .expect("answered");
    }
    // (a slow machine may already have swept the first credentials' scopes)
    assert!(
        polite.scope_count() >= 100,
        "every credential has its scopes while in use: {}",
        polite.scope_count()
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    client
        .get(server.url("/api/items"))
        .header("authorization", "token-new")
        .send()
        .await
        .expect("answered");
    assert!(
        polite.scope_count() <= 4,
        "{} scope records left after the idle time",
        polite.scope_count()
    );
}

/// A server that names a new quota (a Discord-like bucket) in every answer, to a new credential
/// each time, leaves scope records behind: they are swept once idle.
#[tokio::test]
async fn server_named_scopes_are_swept_once_idle() {
    let next = AtomicU64::new(0);
    let server = serve(move |_, _| {
        let bucket = next.fetch_add(1, Ordering::SeqCst);
        Reply::ok()
            .header("x-ratelimit-bucket", format!("b{bucket}"))
            .header("x-ratelimit-limit", 1000)
            .header("x-ratelimit-remaining", 999)
            .header("x-ratelimit-reset-after", "0.1")
    });
    let polite = Polite::builder()
        .partition_by_header("authorization")
        .idle_timeout(Duration::from_secs(1))
        .build();
    let client = client(&polite);
    for i in 0..200 {
        client
            .get(server.url(&format!("/r{i}/x")))
            .header("authorization", format!("token-{i}"))
            .send()
            .await
            .expect("answered");
    }
    assert!(polite.scope_count() >= 100, "{}", polite.scope_count());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    client
        .get(server.url("/last"))
        .send()
        .await
        .expect("answered");
    assert!(
        polite.scope_count() <= 4,
        "{} server-named scope records left after the idle time",
        polite.scope_count()
    );
}

/// Moving a limit between a host's `host:port` form and its port-less form keeps the schedule:
/// under one request per minute, the request after the change waits for the minute.
#[tokio::test]
async fn moving_a_limit_between_port_and_portless_forms_keeps_its_schedule() {
    for to_portless in [true, false] {
        let server = serve(|_, _| Reply::ok());
        let with_port = format!("127.0.0.1:{}", server.addr.port());
        let (from, to) = if to_portless {
            (with_port.as_str(), "127.0.0.1")
        } else {
            ("127.0.0.1", with_port.as_str())
        };
        let polite = Polite::builder()
            .host_limit(from, Limit::per_minute(1))
            .build();
        let client = client(&polite);
        client.get(server.url("/")).send().await.expect("answered");
        polite.set_host_limit(to, Limit::per_minute(1));
        polite.clear_host_limit(from);
        let second = client
            .get(server.url("/"))
            .with_extension(Deadline::after(Duration::from_secs(2)))
            .send()
            .await;
        assert_eq!(
            server.stats.hits(),
            1,
            "{from} -> {to}: a second request within the minute ({second:?})"
        );
        let err = second.expect_err("the slot is a minute away");
        assert!(
            matches!(
                polite_error(&err),
                Some(reqwest_polite::Error::DeadlineExceeded { .. })
            ),
            "{from} -> {to}: {err}"
        );
    }
}

/// A GitHub-like 403 for a spent resource whose reset is far past `max_retry_after`: the retry
/// is refused before it is sent, and the caller gets the 403 it already had.
#[tokio::test]
async fn a_retry_refused_before_it_is_sent_returns_the_last_response() {
    let reset = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 600;
    let server = serve(move |_, _| {
        Reply::status(403)
            .header("x-ratelimit-resource", "core")
            .header("x-ratelimit-limit", 60)
            .header("x-ratelimit-remaining", 0)
            .header("x-ratelimit-reset", reset)
    });
    let polite = Polite::builder()
        .backoff(
            Backoff::exponential(Duration::from_millis(10), Duration::from_millis(10))
                .jitter(Jitter::None),
        )
        .build();
    let client = client(&polite);
    let resp = client
        .get(server.url("/repos/x"))
        .send()
        .await
        .expect("the response already received, not an error");
    assert_eq!(resp.status(), 403);
    assert_eq!(server.stats.hits(), 1, "nothing more was sent");

    // the same with a deadline the retry's wait would pass
    let server = serve(|_, _| Reply::status(503).header("retry-after", 5));
    let resp = client
        .get(server.url("/"))
        .with_extension(Deadline::after(Duration::from_secs(1)))
        .send()
        .await
        .expect("the 503 already received, not an error");
    assert_eq!(resp.status(), 503);
    assert_eq!(server.stats.hits(), 1);
}

/// A breaker that opens while a retry backs off: the retry is not sent, and the caller gets the
/// last response.
#[tokio::test]
async fn a_breaker_opening_during_a_backoff_returns_the_last_response() {
    let server = serve(|_, _| Reply::status(500));
    let polite = Polite::builder()
        .breaker(Breaker::consecutive_failures(3).open_for(Duration::from_secs(30)))
        .backoff(
            Backoff::exponential(Duration::from_millis(300), Duration::from_millis(300))
                .jitter(Jitter::None),
        )
        .max_retries(1)
        .build();
    let client = client(&polite);
    let first = tokio::spawn({
        let client = client.clone();
        let url = server.url("/first");
        async move { client.get(url).send().await.map(|r| r.status().as_u16()) }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // two more failures open the breaker (three in a row) while the first request backs off
    for _ in 0..2 {
        let _ = client
            .get(server.url("/"))
            .with_extension(reqwest_polite::NoRetry)
            .send()
            .await;
    }
    let status = first.await.expect("task").map_err(|e| e.to_string());
    assert_eq!(status, Ok(500), "the last response, not an error");
    assert_eq!(
        server.stats.hits(),
        3,
        "the retry was not sent to an open breaker"
    );
}

/// With an in-flight cap, requests waiting on a spent route leave their places to the host's
/// other routes.
#[tokio::test]
async fn a_request_waiting_on_a_route_holds_no_in_flight_place() {
    let server = serve(|_, _| Reply::ok());
    let polite = Polite::builder()
        .max_in_flight(2)
        .route_limit("127.0.0.1", "/search/", Limit::per_second(1))
        .build();
    let client = client(&polite);
    let searches: Vec<_> = (0..4)
        .map(|_| {
            let (client, url) = (client.clone(), server.url("/search/code"));
            tokio::spawn(async move { client.get(url).send().await.map(|r| r.status()) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    client
        .get(server.url("/core"))
        .send()
        .await
        .expect("answered");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "/core waited {:?} behind the spent /search/ route",
        started.elapsed()
    );
    for search in searches {
        assert!(search.await.expect("task").is_ok());
    }
}

/// Requests queued for pacing when the breaker opens are not sent while it is open: they fail
/// with `CircuitOpen`.
#[tokio::test]
async fn requests_queued_for_pacing_are_not_sent_while_the_breaker_is_open() {
    let server = serve(|_, _| Reply::status(500));
    let polite = Polite::builder()
        .limit(Limit::per_second(5))
        .breaker(Breaker::consecutive_failures(3).open_for(Duration::from_secs(5)))
        .max_retries(0)
        .build();
    let client = client(&polite);
    let calls = (0..30).map(|_| {
        let (client, url) = (client.clone(), server.url("/"));
        async move { client.get(url).send().await }
    });
    let results = tokio::time::timeout(Duration::from_secs(4), futures::future::join_all(calls))
        .await
        .expect("every queued request ends while the breaker is open");
    assert!(
        server.stats.hits() <= 4,
        "{} requests reached a host whose breaker was open",
        server.stats.hits()
    );
    let open = results
        .iter()
        .filter(|r| {
            r.as_ref()
                .err()
                .and_then(polite_error)
                .is_some_and(|e| matches!(e, reqwest_polite::Error::CircuitOpen { .. }))
        })
        .count();
    assert!(open >= 26, "{open} of 30 failed with CircuitOpen");
}

/// While a probe is in flight, `retry_in` says when its answer can decide (not the whole open
/// period), and a request that sleeps `retry_in` and tries again gets through once the host
/// has healed.
#[tokio::test]
async fn retry_in_says_when_a_probe_in_flight_can_decide() {
    let failures_left = Arc::new(AtomicU64::new(3));
    let left = Arc::clone(&failures_left);
    let server = serve(move |_, _| {
        let failing = left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let reply = if failing {
            Reply::status(500)
        } else {
            Reply::ok()
        };
        reply.delay(Duration::from_millis(100))
    });
    let polite = Polite::builder()
        .breaker(Breaker::consecutive_failures(3).open_for(Duration::from_millis(500)))
        .max_retries(0)
        .build();
    let client = client(&polite);
    for _ in 0..3 {
        let _ = client.get(server.url("/")).send().await;
    }
    tokio::time::sleep(Duration::from_millis(550)).await;
    let probe = tokio::spawn({
        let (client, url) = (client.clone(), server.url("/"));
        async move { client.get(url).send().await.map(|r| r.status().as_u16()) }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let err = client
        .get(server.url("/"))
        .send()
        .await
        .expect_err("a probe is out");
    let Some(reqwest_polite::Error::CircuitOpen { retry_in, .. }) = polite_error(&err) else {
        panic!("expected CircuitOpen, got {err}");
    };
    assert!(
        *retry_in < Duration::from_millis(400),
        "retry_in {retry_in:?}: the probe answers long before the open period ends"
    );
    let mut ok = 0;
    for _ in 0..10 {
        let (client, url) = (client.clone(), server.url("/"));
        let mut tries = 0;
        loop {
            match client.get(&url).send().await {
                Ok(resp) if resp.status() == 200 => {
                    ok += 1;
                    break;
                }
                Err(err) if tries < 3 => match polite_error(&err) {
                    Some(reqwest_polite::Error::CircuitOpen { retry_in, .. }) => {
                        tries += 1;
                        tokio::time::sleep(*retry_in).await;
                    }
                    _ => break,
                },
                _ => break,
            }
        }
    }
    assert_eq!(probe.await.expect("task").ok(), Some(200));
    assert_eq!(ok, 10, "every request got through after sleeping retry_in");
}

/// `WaitIfOpen`: a batch job waits for the host to heal (bounded by its deadline) instead of
/// failing fast.
#[tokio::test]
async fn wait_if_open_waits_for_the_host_to_heal() {
    let failures_left = Arc::new(AtomicU64::new(3));
    let left = Arc::clone(&failures_left);
    let server = serve(move |_, _| {
        let failing = left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    });
    let polite = Polite::builder()
        .breaker(Breaker::consecutive_failures(3).open_for(Duration::from_millis(300)))
        .max_retries(0)
        .build();
    let client = client(&polite);
    for _ in 0..3 {
        let _ = client.get(server.url("/")).send().await;
    }
    let calls = (0..20).map(|_| {
        client
            .get(server.url("/"))
            .with_extension(WaitIfOpen)
            .with_extension(Deadline::after(Duration::from_secs(5)))
            .send()
    });
    let results = futures::future::join_all(calls).await;
    let ok = results
        .iter()
        .filter(|r| r.as_ref().is_ok_and(|r| r.status() == 200))
        .count();
    assert_eq!(
        ok, 20,
        "every waiting request got through once the host healed"
    );

    // bounded by the deadline: a host that stays down fails the wait in time
    let server = serve(|_, _| Reply::status(500));
    for _ in 0..3 {
        let _ = client.get(server.url("/")).send().await;
    }
    let started = Instant::now();
    let err = client
        .get(server.url("/"))
        .with_extension(WaitIfOpen)
        .with_extension(Deadline::after(Duration::from_millis(200)))
        .send()
        .await
        .expect_err("the breaker stays open past the deadline");
    assert!(started.elapsed() < Duration::from_millis(600));
    assert!(polite_error(&err).is_some(), "{err}");
}

/// `WaitIfOpen` requests already queued for pacing when the breaker opens wait for it too, and
/// go once the host has healed.
#[tokio::test]
async fn wait_if_open_holds_for_requests_queued_when_the_breaker_opens() {
    let failures_left = Arc::new(AtomicU64::new(3));
    let left = Arc::clone(&failures_left);
    let server = serve(move |_, _| {
        let failing = left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    });
    let polite = Polite::builder()
        .limit(Limit::per_second(10))
        .breaker(Breaker::consecutive_failures(3).open_for(Duration::from_millis(300)))
        .max_retries(0)
        .build();
    let client = client(&polite);
    let calls = (0..12).map(|_| {
        client
            .get(server.url("/"))
            .with_extension(WaitIfOpen)
            .with_extension(Deadline::after(Duration::from_secs(10)))
            .send()
    });
    let results = futures::future::join_all(calls).await;
    let statuses: Vec<_> = results
        .iter()
        .map(|r| {
            r.as_ref()
                .map(|r| r.status().as_u16())
                .map_err(|e| e.to_string())
        })
        .collect();
    let ok = statuses.iter().filter(|s| **s == Ok(200)).count();
    assert_eq!(
        ok, 9,
        "the three failures, then every other request: {statuses:?}"
    );
    assert_eq!(server.stats.hits(), 12, "nothing was lost or sent twice");
}

/// A half-open breaker's second probe, still waiting for its pacing slot when the first probe
/// fails and the breaker opens again, is not sent: its half-open period is over.
#[tokio::test]
async fn a_probe_of_a_past_half_open_period_is_not_sent() {
    let server = serve(|_, _| Reply::status(500));
    let polite = Polite::builder()
        .limit(Limit::per_second(2))
        .breaker(
            Breaker::consecutive_failures(3)
                .open_for(Duration::from_millis(300))
                .half_open_probes(2),
        )
        .max_retries(0)
        .build();
    let client = client(&polite);
    for _ in 0..3 {
        let _ = client.get(server.url("/")).send().await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let probes = (0..2).map(|_| client.get(server.url("/")).send());
    let results = futures::future::join_all(probes).await;
    assert_eq!(
        server.stats.hits(),
        4,
        "the second probe reached a host whose breaker had opened again: {results:?}"
    );
    let open = results
        .iter()
        .filter(|r| {
            r.as_ref()
                .err()
                .and_then(polite_error)
                .is_some_and(|e| matches!(e, reqwest_polite::Error::CircuitOpen { .. }))
        })
        .count();
    assert_eq!(open, 1, "{results:?}");
}

/// A limit moved to a form with a larger burst keeps the old schedule's position: the burst
/// does not come on top of what the old form just let through.
#[tokio::test]
async fn a_limit_moved_to_a_form_with_a_burst_keeps_the_window() {
    let server = serve(|_, _| Reply::ok());
    let with_port = format!("127.0.0.1:{}", server.addr.port());
    let polite = Polite::builder()
        .host_limit("127.0.0.1", Limit::per_second(10))
        .build();
    let client = client(&polite);
    let burst = |n| {
        let calls = (0..n).map(|_| client.get(server.url("/")).send());
        futures::future::join_all(calls)
    };
    burst(10).await;
    polite.set_host_limit(&with_port, Limit::per_second(10).burst(3));
    polite.clear_host_limit("127.0.0.1");
    burst(10).await;
    let most = server.stats.max_in_any_window(Duration::from_secs(1));
    assert!(
        most <= 10,
        "{most} starts in one second under 10 per second"
    );
}

/// Requests already waiting for their slot when a limit moves to the port-less form follow the
/// new form: they are paced by the host-wide scope, not let go by the record it left.
#[tokio::test]
async fn requests_waiting_across_a_change_of_form_follow_the_new_limit() {
    let server = serve(|_, _| Reply::ok());
    let polite = Polite::builder().limit(Limit::per_second(1)).build();
    let client = client(&polite);
    client.get(server.url("/")).send().await.expect("answered");
    let queued: Vec<_> = (0..3)
        .map(|_| {
            let (client, url) = (client.clone(), server.url("/"));
            tokio::spawn(async move {
                let deadline = reqwest_polite::Deadline::after(Duration::from_secs(3));
                client.get(url).with_extension(deadline).send().await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    polite.set_host_limit("127.0.0.1", Limit::per_minute(1));
    // a new request brings the host's record to the new limits
    let _ = client
        .get(server.url("/"))
        .with_extension(Deadline::after(Duration::from_millis(100)))
        .send()
        .await;
    for request in queued {
        let _ = request.await.expect("task");
    }
    assert_eq!(
        server.stats.hits(),
        1,
        "requests queued under 1/s went out under 1/min: {:?}",
        server.stats.arrivals()
    );
}

/// Requests waiting for a slow schedule's slot when the breaker opens fail at once with
/// `CircuitOpen`, not when their slot comes.
#[tokio::test]
async fn requests_queued_on_a_slow_schedule_fail_as_soon_as_the_breaker_opens() {
    let server = serve(|_, _| Reply::status(500));
    let polite = Polite::builder()
        .limit(Limit::per_minute(6).burst(3))
        .breaker(Breaker::consecutive_failures(3).open_for(Duration::from_secs(30)))
        .max_retries(0)
        .build();
    let client = client(&polite);
    let started = Instant::now();
    let calls = (0..10).map(|_| client.get(server.url("/")).send());
    let results = tokio::time::timeout(Duration::from_secs(5), futures::future::join_all(calls))
        .await
        .expect("the queue fails fast once the breaker opens, not at its slots 10 s apart");
    assert_eq!(server.stats.hits(), 3, "only the burst reached the host");
    let open = results
        .iter()
        .filter(|r| {
            r.as_ref()
                .err()
                .and_then(polite_error)
                .is_some_and(|e| matches!(e, reqwest_polite::Error::CircuitOpen { .. }))
        })
        .count();
    assert_eq!(open, 7, "{:?} later: {results:?}", started.elapsed());
}

/// A record swept while idle forgets its schedule: a request of several units on a fresh
/// record goes at once (its burst grows to its cost), so a record is only idle a whole window
/// after its last start. 3 per 2 s: one unit, then 3 units once the first record would have been
/// swept, must not share a window (found by the simulation: 4 units in 55 s under 3 per 60 s).
#[tokio::test]
async fn a_record_swept_while_idle_keeps_the_window_for_a_costly_request() {
    let server = serve(|_, _| Reply::ok());
    let other = serve(|_, _| Reply::ok());
    let window = Duration::from_secs(2);
    let polite = Polite::builder()
        .limit(Limit::per(3, window))
        .idle_timeout(Duration::from_millis(100))
        .build();
    let client = client(&polite);
    client
        .get(server.url("/one"))
        .send()
        .await
        .expect("answered");
    // the first unit's slot is long past, and the record unused for longer than idle_timeout
    tokio::time::sleep(Duration::from_millis(900)).await;
    // a new host's record sweeps the idle ones
    client.get(other.url("/")).send().await.expect("answered");
    client
        .get(server.url("/three"))
        .with_extension(reqwest_polite::Cost(3))
        .send()
        .await
        .expect("answered");
    assert_a_window_apart(&server.stats.arrivals(), window, "4 units under 3");
}

/// The host's record is the only way to the quotas the server named for its routes: while one
/// of them holds requests back (a `Retry-After` on a spent IETF policy), the record is not
/// swept, or the next request on that route would forget the quota and go at once (found by
/// the simulation).
#[tokio::test]
async fn a_host_record_is_kept_while_a_quota_named_for_its_routes_holds_requests() {
    let server = serve(|_, _| {
        Reply::status(429)
            .header("retry-after", "30")
            .header("ratelimit", "\"burst\";r=0;t=30, \"daily\";r=500;t=0")
            .header(
                "ratelimit-policy",
                "\"burst\";q=10;w=30, \"daily\";q=1000;w=86400",
            )
    });
    let other = serve(|_, _| Reply::ok());
    let polite = Polite::builder()
        .idle_timeout(Duration::from_millis(100))
        .max_retries(0)
        .build();
    let client = client(&polite);
    let first = client
        .get(server.url("/items/1"))
        .send()
        .await
        .expect("answered");
    assert_eq!(first.status(), 429);
    // the host's own record holds nothing (the pause is the policy's), and sits unused for
    // longer than idle_timeout; a new host's record sweeps the idle ones
    tokio::time::sleep(Duration::from_millis(300)).await;
    client.get(other.url("/")).send().await.expect("answered");
    let again = client
        .get(server.url("/items/2"))
        .with_extension(Deadline::after(Duration::from_millis(500)))
        .send();
    let again = tokio::time::timeout(Duration::from_secs(2), again).await;
    assert_eq!(
        server.stats.hits(),
        1,
        "a request on the paused route was sent: {again:?}"
    );
}

/// A retry waits for the pause its own answer asked for, whichever scope took it: here a
/// Discord-like bucket pauses the route for 1 s, and before the backoff ends, another answer on
/// the same route names other quotas (IETF policies) instead; the retry still waits the second
/// (found by the simulation: the retry went 0.39 s into the pause).
#[tokio::test]
async fn a_retry_waits_for_its_own_answers_pause_when_its_route_is_renamed() {
    let paused = Arc::new(AtomicU64::new(0));
    let server = {
        let paused = Arc::clone(&paused);
        serve(move |_, path| {
            let policies = Reply::ok()
                .header("ratelimit", "\"burst\";r=99;t=1, \"daily\";r=9999;t=0")
                .header(
                    "ratelimit-policy",
                    "\"burst\";q=100;w=1, \"daily\";q=10000;w=86400",
                );
            match path {
                "/search/first" => return policies,
                "/search/slow" => return policies.delay(Duration::from_millis(300)),
                _ => {}
            }
            if paused.fetch_add(1, Ordering::SeqCst) == 0 {
                return Reply::status(429)
                    .header("retry-after", "1")
                    .header("x-ratelimit-bucket", "b1")
                    .header("x-ratelimit-remaining", "0")
                    .header("x-ratelimit-reset-after", "0.2");
            }
            Reply::ok()
        })
    };
    let polite = Polite::builder()
        .backoff(
            Backoff::exponential(Duration::from_millis(500), Duration::from_millis(500))
                .jitter(Jitter::None),
        )
        .build();
    let client = client(&polite);
    // the route's first answer names the policies, and the slow request is out when the pause
    // comes: its answer names the policies again, 0.3 s later
    client
        .get(server.url("/search/first"))
        .send()
        .await
        .expect("answered");
    let slow = tokio::spawn({
        let client = client.clone();
        let url = server.url("/search/slow");
        async move { client.get(url).send().await.map(|r| r.status()) }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let started = Instant::now();
    let answer = client
        .get(server.url("/search/q"))
        .send()
        .await
        .expect("answered");
    assert_eq!(answer.status(), 200, "retried after the pause");
    assert!(
        started.elapsed() >= Duration::from_millis(990),
        "the retry went {:?} after the first attempt, inside its answer's 1 s pause",
        started.elapsed()
    );
    assert_eq!(slow.await.expect("joined").expect("answered"), 200);
}

/// Requests waiting when a port-less limit is cleared, and then told of a quota the server
/// named for their route, bring the host's record to the limits configured now (here the
/// default, with a burst) with the schedule the host-wide scope had: before, they went at once
/// on the record's old state, unpaced (found by the simulation: 6 starts in 6.1 s under 5 per
/// 10 s).
#[tokio::test]
async fn requests_waiting_when_a_portless_limit_is_cleared_keep_the_window() {
    let answered = Arc::new(AtomicU64::new(0));
    let server = {
        let answered = Arc::clone(&answered);
        serve(move |_, _| {
            if answered.fetch_add(1, Ordering::SeqCst) == 0 {
                return Reply::ok();
            }
            // from the second answer on, the route's quota has a name
            Reply::ok()
                .header("x-ratelimit-bucket", "b1")
                .header("x-ratelimit-remaining", "100")
                .header("x-ratelimit-reset-after", "1")
        })
    };
    let window = Duration::from_secs(2);
    let polite = Polite::builder()
        .limit(Limit::per(5, window).burst(3))
        .host_limit("127.0.0.1", Limit::per(5, window))
        .build();
    let client = client(&polite);
    let requests: Vec<_> = (0..6)
        .map(|_| {
            let (client, url) = (client.clone(), server.url("/items/1"));
            tokio::spawn(async move { client.get(url).send().await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    polite.clear_host_limit("127.0.0.1");
    for request in requests {
        request.await.expect("task").expect("answered");
    }
    assert_eq!(server.stats.hits(), 6);
    assert!(
        server.stats.max_in_any_window(window) <= 5,
        "more than 5 in {window:?}: {:?}",
        server.stats.arrivals()
    );
}

/// A limit moved to the host-wide form takes along when its schedule's next unit is due, a
/// burst grown by a costly request included: 2 units, then a move, then 1 unit must not share a
/// window of 2 per 2 s (found by the simulation: 3 units in 5.1 s under 2 per 10 s).
#[tokio::test]
async fn a_limit_moved_after_a_costly_request_keeps_the_window() {
    let server = serve(|_, _| Reply::ok());
    let window = Duration::from_secs(2);
    let polite = Polite::builder().limit(Limit::per(2, window)).build();
    let client = client(&polite);
    client
        .get(server.url("/two"))
        .with_extension(reqwest_polite::Cost(2))
        .send()
        .await
        .expect("answered");
    polite.set_host_limit("127.0.0.1", Limit::per(2, window));
    client
        .get(server.url("/one"))
        .send()
        .await
        .expect("answered");
    assert_a_window_apart(&server.stats.arrivals(), window, "3 units under 2");
}

/// Two requests reached the server, the second at least `window` after the first (`what`:
/// their units, and the limit's count).
fn assert_a_window_apart(arrivals: &[Instant], window: Duration, what: &str) {
    assert_eq!(arrivals.len(), 2);
    let apart = arrivals[1] - arrivals[0];
    assert!(apart >= window, "{what} per {window:?} within {apart:?}");
}

/// A port-less limit cleared at run time, with no default limit left, hands the host back to
/// the server's word: successful answers' quota headers count again (a configured quota trusts
/// its limit over them, an unconfigured one must not).
#[tokio::test]
async fn a_cleared_portless_limit_hands_the_host_back_to_the_servers_word() {
    let server = serve(|_, _| {
        Reply::ok()
            .header("x-ratelimit-limit", 10)
            .header("x-ratelimit-remaining", 0)
            .header("x-ratelimit-reset-after", 2)
    });
    let polite = Polite::builder()
        .host_limit("127.0.0.1", Limit::per_second(100))
        .build();
    let client = client(&polite);
    client.get(server.url("/")).send().await.expect("answered");
    polite.clear_host_limit("127.0.0.1");
    // answered "nothing left for 2 s": with nothing configured, that is the quota
    client.get(server.url("/")).send().await.expect("answered");
    client.get(server.url("/")).send().await.expect("answered");
    let arrivals = server.stats.arrivals();
    let apart = arrivals[2] - arrivals[1];
    assert!(
        apart >= Duration::from_millis(1500),
        "sent {apart:?} after an answer that said nothing is left for 2 s"
    );
}
