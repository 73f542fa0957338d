//! The rate core against loopback servers that count what reaches them: a refusal never
//! collapses a configured host, slowing down never breaks the window, every refusal slows its
//! scope, and every wait the server's word imposes is bounded by `max_retry_after`.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Reply, SlidingWindow, burst, client, polite_error, serve};
use reqwest_polite::{Limit, Polite};

#[tokio::test]
async fn a_stray_refusal_never_takes_a_configured_host_below_half_its_limit() {
    let limit = Limit::per_second(100);
    a_stray_refusal(Polite::builder().limit(limit).build(), limit).await;
}

/// The same on a host configured by a port-less `host_limit` (the README's first example),
/// whose host-wide scope paces the host record from outside: the record adapts around that
/// limit, as a record with its own does. (It used to adapt as if nothing were configured:
/// the refusal of its 2nd request made a guess of 5/s, a twentieth of the limit, still
/// ramping back 3 s later.)
#[tokio::test]
async fn a_stray_refusal_never_takes_a_host_under_a_portless_host_limit_below_half() {
    let limit = Limit::per_second(100);
    a_stray_refusal(
        Polite::builder().host_limit("127.0.0.1", limit).build(),
        limit,
    )
    .await;
}

async fn a_stray_refusal(polite: Polite, limit: Limit) {
    // the server refuses its 2nd request with a bare 429 and accepts everything else
    let seen = AtomicU64::new(0);
    let server = serve(move |_, _| {
        if seen.fetch_add(1, Ordering::SeqCst) == 1 {
            Reply::status(429)
        } else {
            Reply::ok()
        }
    });
    let client = client(&polite);
    let url = server.url("/");
    let watched = polite.clone();
    let lowest = tokio::spawn(async move {
        // the lowest adaptive rate seen while the burst runs (sampled every 20 ms, bounded)
        let mut lowest = f64::INFINITY;
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if let Some(rate) = watched.snapshot().first().and_then(|h| h.adaptive_rate) {
                lowest = lowest.min(rate);
            }
        }
        lowest
    });
    let statuses = burst(&client, &url, 300).await;
    assert!(statuses.iter().all(|s| *s == Ok(200)), "{statuses:?}");
    assert_eq!(server.stats.refused(), 1);
    let host = &polite.snapshot()[0];
    assert_eq!(
        host.adaptive_rate, None,
        "three seconds of successes bring the configured rate back: {host:?}"
    );
    let lowest = lowest.await.expect("watcher");
    let half = 0.5 / limit.interval().as_secs_f64();
    assert!(
        lowest >= half - 1e-9,
        "lowest rate {lowest}/s, below half the configured {half}/s"
    );
}

#[tokio::test]
async fn slowing_down_after_a_refusal_never_breaks_a_burst_limit() {
    // burst 10 of 10 per second, and the 10th answer is a bare 429: the 11th start must still
    // wait for the window (slowing down must never move the next slot earlier)
    let seen = AtomicU64::new(0);
    let server = serve(move |_, _| {
        if seen.fetch_add(1, Ordering::SeqCst) == 9 {
            Reply::status(429)
        } else {
            Reply::ok()
        }
    });
    let polite = Polite::builder()
        .limit(Limit::per_second(10).burst(10))
        .max_retries(0)
        .build();
    let client = client(&polite);
    let url = server.url("/");
    burst(&client, &url, 10).await; // the whole burst, answered (the 10th refused)
    for _ in 0..2 {
        let _ = client.get(&url).send().await;
    }
    let most = server.stats.max_in_any_window(Duration::from_secs(1));
    assert!(most <= 10, "{most} requests started within one second");
}

#[tokio::test]
async fn a_429_with_only_remaining_zero_still_slows_the_host() {
    // no reset, no Retry-After: nothing to close the host on, but a refusal all the same
    let server = serve(|_, _| Reply::status(429).header("x-ratelimit-remaining", 0));
    let polite = Polite::builder().max_retries(0).build();
    let client = client(&polite);
    let url = server.url("/");
    let started = Instant::now();
    let mut calls = 0;
    // as fast as the middleware lets us, for one second (bounded: at most 2000 calls)
    while started.elapsed() < Duration::from_secs(1) && calls < 2000 {
        let _ = client.get(&url).send().await;
        calls += 1;
    }
    let hits = server.stats.hits();
    assert!(
        hits <= 20,
        "{hits} requests reached a server refusing everything within one second"
    );
}

#[tokio::test]
async fn a_wait_from_quota_headers_past_max_retry_after_fails_fast() {
    // 2 of 5000 left for an hour: spreading them would mean 30 minutes between requests
    let server = serve(|_, _| {
        Reply::ok()
            .header("x-ratelimit-limit", 5000)
            .header("x-ratelimit-remaining", 2)
            .header("x-ratelimit-reset", 3600)
    });
    let polite = Polite::builder()
        .max_retry_after(Duration::from_secs(5))
        .build();
    let client = client(&polite);
    let url = server.url("/");
    client.get(&url).send().await.expect("the first goes");
    let started = Instant::now();
    let err = client
        .get(&url)
        .send()
        .await
        .expect_err("a 30-minute wait is past max_retry_after");
    match polite_error(&err) {
        Some(reqwest_polite::Error::CoolingDown { retry_in, .. }) => {
            assert!(*retry_in > Duration::from_secs(5), "{retry_in:?}");
        }
        other => panic!("expected CoolingDown, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(1), "no sleeping");
    assert_eq!(server.stats.hits(), 1);
}

#[tokio::test]
async fn a_generous_deadline_is_not_refused_for_a_wait_an_answer_may_shorten() {
    // the new user's batch job: a fixed window of 10 per second that says what is left, with
    // resets in whole epoch seconds, and some flaky answers; 60 GETs at once, 30 s deadlines.
    // Spreading "2 left until the reset" over the queue predicted waits past the deadline
    // that never happened, and retries failed at once with DeadlineExceeded.
    let window = std::sync::Mutex::new((0u64, 0u32));
    let seen = AtomicU64::new(0);
    let server = serve(move |_, _| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        if seen.fetch_add(1, Ordering::SeqCst) % 9 == 4 {
            return Reply::status(503);
        }
        let mut window = window.lock().expect("window lock");
        if window.0 != now {
            *window = (now, 0);
        }
        let accepted = window.1 < 10;
        window.1 += u32::from(accepted);
        let reply = if accepted {
            Reply::ok()
        } else {
            Reply::status(429).header("retry-after", 1)
        };
        reply
            .header("x-ratelimit-limit", 10)
            .header("x-ratelimit-remaining", 10 - window.1)
            .header("x-ratelimit-reset", now + 1)
    });
    let polite = Polite::new();
    let client = client(&polite);
    let url = server.url("/");
    let calls = (0..60).map(|_| {
        client
            .get(&url)
            .with_extension(reqwest_polite::Deadline::after(Duration::from_secs(30)))
            .send()
    });
    let results = futures::future::join_all(calls).await;
    let refused: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(ToString::to_string)
        .collect();
    assert!(
        refused.is_empty(),
        "refused within a 30 s deadline: {refused:?}"
    );
}

#[tokio::test]
async fn hosts_that_failed_or_were_refused_are_evicted_once_quiet() {
    // 20 hosts that answered one bare 429, 20 dead ports (connection refused) whose breaker
    // tripped, all quiet for longer than the idle time: a new host sweeps them all out
    let refusing: Vec<common::TestServer> =
        (0..20).map(|_| serve(|_, _| Reply::status(429))).collect();
    // 20 distinct ports: every listener is held until all are bound (a port freed at once
    // could be handed out again, making two of the "hosts" one), then dropped
    let listeners: Vec<std::net::TcpListener> = (0..20)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let dead: Vec<String> = listeners
        .iter()
        .map(|l| format!("http://{}/", l.local_addr().expect("addr")))
        .collect();
    drop(listeners); // nothing listens there now
    let polite = Polite::builder()
        // long enough that the 40 first requests (slow on a busy machine) all land before a
        // sweep could find the first of them idle
        .idle_timeout(Duration::from_secs(1))
        .max_retries(0)
        .breaker(
            reqwest_polite::Breaker::consecutive_failures(1).open_for(Duration::from_millis(100)),
        )
        .build();
    let client = client(&polite);
    for server in &refusing {
        let resp = client.get(server.url("/")).send().await.expect("answered");
        assert_eq!(resp.status(), 429);
    }
    for url in &dead {
        assert!(
            client.get(url).send().await.is_err(),
            "nothing listens at {url}"
        );
    }
    assert_eq!(polite.host_count(), 40);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let fresh = serve(|_, _| Reply::ok());
    client.get(fresh.url("/")).send().await.expect("answered");
    assert_eq!(
        polite.host_count(),
        1,
        "only the new host is left: {:#?}",
        polite.snapshot()
    );
}

/// A configured host's first request can reach the server late (a TCP or TLS handshake, a busy
/// client): the schedule starts from its answer, so the server never counts more than the
/// limit in a window that begins with it.
#[tokio::test]
async fn a_first_request_that_reaches_the_server_late_does_not_crowd_its_window() {
    a_first_request_late(Polite::builder().limit(Limit::per_second(3))).await;
}

/// The same when a port-less `host_limit` paces the host: the host-wide scope's schedule
/// starts from the first answer too.
#[tokio::test]
async fn a_first_request_late_does_not_crowd_the_window_of_a_portless_host_limit() {
    a_first_request_late(Polite::builder().host_limit("127.0.0.1", Limit::per_second(3))).await;
}

async fn a_first_request_late(builder: reqwest_polite::PoliteBuilder) {
    let limiter = SlidingWindow::new(3, Duration::from_secs(1));
    let first = AtomicBool::new(true);
    let server = serve(move |_, _| {
        if first.swap(false, Ordering::SeqCst) {
            // the limiter sees the first request 300 ms after it was sent
            std::thread::sleep(Duration::from_millis(300));
        }
        limiter.reply()
    });
    let polite = builder.max_retries(0).build();
    let statuses = burst(&client(&polite), &server.url("/"), 7).await;
    assert_eq!(server.stats.refused(), 0, "statuses: {statuses:?}");
    assert!(statuses.iter().all(|s| *s == Ok(200)), "{statuses:?}");
}

/// Nothing configured, a Stripe-like quota (5 in any second, bare 429s): the rate learned
/// from the refusals of the first burst ends near the quota, not pinned below it (refusals
/// that came while the server's window was full used to hold it at 2/s for the rest of a run;
/// accepted answers slower than refusals made that the rule, not a chance).
#[tokio::test]
async fn a_rate_learned_from_bare_refusals_ends_near_what_the_server_accepts() {
    let limiter = SlidingWindow::new(5, Duration::from_secs(1));
    let bare = serve(move |_, _| {
        let reply = limiter.reply();
        if reply.status == 429 {
            Reply::status(429) // no Retry-After
        } else {
            // accepted requests take longer to answer than refused ones (they do the work):
            // a burst's first refusal comes before its acceptances
            reply.delay(Duration::from_millis(30))
        }
    });
    let polite = Polite::new();
    let client = client(&polite);
    let statuses = burst(&client, &bare.url("/"), 30).await;
    assert!(statuses.iter().all(|s| *s == Ok(200)), "{statuses:?}");
    let refused = bare.stats.refused();
    assert!(refused <= 6, "{refused} refusals to learn 5/s");
    let host = &polite.snapshot()[0];
    let rate = host.adaptive_rate.expect("learned from refusals");
    assert!(
        rate >= 4.0,
        "the learned rate ends at {rate}/s, below 80% of the 5/s the server accepts: {host:?}"
    );
}

/// HAProxy's `http_req_rate` over periods of `period`: every request counts, refused ones too,
/// and the rate is this period's count plus the last period's, weighed by the share of it
/// still in view; over `limit`, a bare 429.
struct CountsRefusals {
    limit: f64,
    period: Duration,
    /// The current period's start and count, and the last period's count.
    counts: std::sync::Mutex<Option<(Instant, f64, f64)>>,
    /// When each refusal came, from the first request.
    refusals: std::sync::Mutex<(Option<Instant>, Vec<Duration>)>,
}

impl CountsRefusals {
    fn reply(&self) -> Reply {
        let now = Instant::now();
        let mut counts = self.counts.lock().expect("counts lock");
        let (mut start, mut current, mut last) = counts.unwrap_or((now, 0.0, 0.0));
        let periods = now.duration_since(start).as_secs_f64() / self.period.as_secs_f64();
        if periods >= 2.0 {
            (start, current, last) = (now, 0.0, 0.0);
        } else if periods >= 1.0 {
            (start, current, last) = (start + self.period, 0.0, current);
        }
        current += 1.0;
        *counts = Some((start, current, last));
        let into = now.duration_since(start).as_secs_f64() / self.period.as_secs_f64();
        let mut refusals = self.refusals.lock().expect("refusals lock");
        let first = *refusals.0.get_or_insert(now);
        if current + last * (1.0 - into) > self.limit {
            refusals.1.push(now - first);
            Reply::status(429)
        } else {
            Reply::ok()
        }
    }
}

/// A limiter that counts refused requests is met by at most two scouts at once in the first
/// second of contact (each one out when the first is refused is refused and counted too), and
/// a refusal when the pause for the window it filled ends makes the host wait until a sliding
/// count has forgotten the burst, instead of asking again every 100 ms (HAProxy drew 5 to 9
/// refusals of 200 requests, 2 of them when the pause ended: its count was still over the
/// limit).
#[tokio::test]
async fn a_limiter_that_counts_refused_requests_is_not_fed_while_it_drains() {
    let limiter = std::sync::Arc::new(CountsRefusals {
        limit: 20.0,
        period: Duration::from_secs(1),
        counts: std::sync::Mutex::new(None),
        refusals: std::sync::Mutex::new((None, Vec::new())),
    });
    let server = {
        let limiter = std::sync::Arc::clone(&limiter);
        serve(move |_, _| limiter.reply())
    };
    let polite = Polite::new();
    let statuses = burst(&client(&polite), &server.url("/"), 60).await;
    assert!(statuses.iter().all(|s| *s == Ok(200)), "{statuses:?}");
    let refusals = limiter.refusals.lock().expect("refusals lock").1.clone();
    assert!(refusals.len() <= 5, "refusals at {refusals:?}");
    let after_the_burst = refusals
        .iter()
        .filter(|at| **at > Duration::from_millis(500))
        .count();
    assert!(
        after_the_burst <= 1,
        "refused again and again while the count drained: {refusals:?}"
    );
}
