//! Per-host pacing against real loopback servers that count what reaches them.

mod common;

use std::time::{Duration, Instant};

use common::{
    Reply, SlidingWindow, burst, client, polite_error, serve, serve_ipv6, sliding_window_server,
};
use reqwest_polite::{Cost, Deadline, Limit, Polite};

const WINDOW: Duration = Duration::from_millis(500);

#[tokio::test]
async fn the_test_server_refuses_an_unpaced_burst() {
    // the control for the next test: without pacing this server does refuse
    let server = sliding_window_server(10, WINDOW);
    let bare = reqwest_middleware::ClientBuilder::new(reqwest::Client::new()).build();
    let statuses = burst(&bare, &server.url("/"), 30).await;
    let refused = statuses.iter().filter(|s| **s == Ok(429)).count();
    assert!(
        refused >= 15,
        "an unpaced burst of 30 into 10 per window must be refused, got {refused} refusals"
    );
}

#[tokio::test]
async fn a_configured_quota_sees_no_refusals_from_a_strict_sliding_window() {
    let server = sliding_window_server(10, WINDOW);
    let polite = Polite::builder().limit(Limit::per(10, WINDOW)).build();
    let client = client(&polite);
    let started = Instant::now();
    let statuses = burst(&client, &server.url("/"), 30).await;
    let elapsed = started.elapsed();
    assert!(
        statuses.iter().all(|s| *s == Ok(200)),
        "every request must succeed: {statuses:?}"
    );
    assert_eq!(server.stats.refused(), 0, "the server must refuse nothing");
    assert_eq!(server.stats.hits(), 30, "no request sent twice");
    let most = server.stats.max_in_any_window(WINDOW);
    assert!(
        most <= 10,
        "{most} requests reached the server within one window"
    );
    // 29 intervals of 51 ms: the promise costs 2%, not more
    assert!(
        elapsed < Duration::from_millis(1_480 + 500),
        "30 requests at 10 per 500 ms took {elapsed:?}"
    );
}

#[tokio::test]
async fn hosts_are_paced_separately() {
    let slow = sliding_window_server(2, Duration::from_secs(1));
    let fast = serve(|_, _| Reply::ok());
    let polite = Polite::builder()
        .host_limit(
            format!("127.0.0.1:{}", slow.addr.port()),
            Limit::per_second(2),
        )
        .build();
    let client = client(&polite);
    let slow_url = slow.url("/");
    let slow_calls = burst(&client, &slow_url, 4);
    let fast_calls = async {
        let started = Instant::now();
        let statuses = burst(&client, &fast.url("/"), 20).await;
        (statuses, started.elapsed())
    };
    let (slow_statuses, (fast_statuses, fast_elapsed)) = tokio::join!(slow_calls, fast_calls);
    assert!(
        slow_statuses.iter().all(|s| *s == Ok(200)),
        "{slow_statuses:?}"
    );
    assert!(
        fast_statuses.iter().all(|s| *s == Ok(200)),
        "{fast_statuses:?}"
    );
    assert_eq!(slow.stats.refused(), 0);
    assert!(
        fast_elapsed < Duration::from_millis(900),
        "an unlimited host must not wait behind a limited one ({fast_elapsed:?})"
    );
    let snapshot = polite.snapshot();
    let limits: Vec<_> = snapshot.iter().map(|h| (h.key.clone(), h.limit)).collect();
    assert_eq!(
        limits,
        {
            let mut expected = vec![
                (format!("http://{}", slow.addr), Some(Limit::per_second(2))),
                (format!("http://{}", fast.addr), None),
            ];
            expected.sort_by(|a, b| a.0.cmp(&b.0));
            expected
        },
        "host:port overrides match that authority only"
    );
}

#[tokio::test]
async fn a_host_limit_without_port_is_one_quota_for_every_port_of_that_host() {
    // two ports of 127.0.0.1, five per second for the host: together, never more than five
    // in any second (each port used to get its own five)
    let a = serve(|_, _| Reply::ok());
    let b = serve(|_, _| Reply::ok());
    let polite = Polite::builder()
        .limit(Limit::per_second(100))
        .host_limit("127.0.0.1", Limit::per_second(5))
        .host_limit("localhost", Limit::per_second(1))
        .build();
    let client = client(&polite);
    let calls = (0..12).map(|i| {
        let url = if i % 2 == 0 { a.url("/") } else { b.url("/") };
        let client = client.clone();
        async move { client.get(url).send().await.map(|r| r.status().as_u16()) }
    });
    let statuses = futures::future::join_all(calls).await;
    assert!(
        statuses.iter().all(|s| matches!(s, Ok(200))),
        "{statuses:?}"
    );
    let mut arrivals = a.stats.arrivals();
    arrivals.extend(b.stats.arrivals());
    arrivals.sort();
    let most = arrivals
        .iter()
        .map(|&s| {
            arrivals
                .iter()
                .filter(|&&t| t >= s && t < s + Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(most <= 5, "{most} requests to 127.0.0.1 within one second");
    let snapshot = polite.snapshot();
    assert_eq!(snapshot.len(), 2, "one record per host:port");
    assert!(
        snapshot.iter().all(|host| host.limit.is_none()),
        "the host-wide scope paces them, not a limit per port"
    );
    let scopes = polite.scope_snapshot();
    assert_eq!(scopes.len(), 1, "{scopes:?}");
    assert_eq!(scopes[0].kind, reqwest_polite::ScopeKind::Host);
    assert_eq!(scopes[0].limit, Some(Limit::per_second(5)));
    assert_eq!(scopes[0].taken, 12);
}

#[tokio::test]
async fn max_in_flight_caps_concurrency_and_is_released_on_every_path() {
    let server = serve(|_, _| Reply::ok().delay(Duration::from_millis(150)));
    // a limit that never holds a request back: first contact with a host that sends no quota
    // headers would hold it to two at once in its first second
    let polite = Polite::builder()
        .limit(Limit::per_second(1000))
        .max_in_flight(3)
        .build();
    let client = client(&polite);
    let statuses = burst(&client, &server.url("/"), 9).await;
    assert!(statuses.iter().all(|s| *s == Ok(200)), "{statuses:?}");
    assert_eq!(
        server.stats.max_concurrent(),
        3,
        "exactly the cap in flight at once"
    );

    // cancelled requests (dropped futures) give their place back
    for _ in 0..6 {
        let call = client.get(server.url("/")).send();
        let _ = tokio::time::timeout(Duration::from_millis(20), call).await;
    }
    assert_eq!(
        polite.snapshot()[0].in_flight,
        0,
        "dropped requests must release the cap"
    );
    let started = Instant::now();
    let statuses = burst(&client, &server.url("/"), 3).await;
    assert!(statuses.iter().all(|s| *s == Ok(200)), "{statuses:?}");
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "three requests must go at once after cancellations ({:?})",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_wait_past_the_deadline_fails_at_once_and_sends_nothing() {
    let server = serve(|_, _| Reply::ok());
    let polite = Polite::builder().limit(Limit::per_second(1)).build();
    let client = client(&polite);
    client
        .get(server.url("/"))
        .send()
        .await
        .expect("first slot is free");
    let started = Instant::now();
    let err = client
        .get(server.url("/"))
        .with_extension(Deadline::after(Duration::from_millis(200)))
        .send()
        .await
        .expect_err("the next slot is ~1 s away");
    assert!(
        matches!(
            polite_error(&err),
            Some(reqwest_polite::Error::DeadlineExceeded { attempts: 0, .. })
        ),
        "got {err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "must fail without waiting"
    );
    assert_eq!(
        server.stats.hits(),
        1,
        "the refused request must not reach the server"
    );
}

#[tokio::test]
async fn cost_takes_several_slots_and_a_cost_above_the_limit_is_refused() {
    let server = sliding_window_server(10, WINDOW);
    let polite = Polite::builder().limit(Limit::per(10, WINDOW)).build();
    let client = client(&polite);
    let err = client
        .get(server.url("/"))
        .with_extension(Cost(11))
        .send()
        .await
        .expect_err("11 units can never fit in 10 per window");
    assert!(
        matches!(
            polite_error(&err),
            Some(reqwest_polite::Error::CostExceedsLimit {
                cost: 11,
                limit: 10,
                ..
            })
        ),
        "got {err:?}"
    );
    assert_eq!(server.stats.hits(), 0);
    let started = Instant::now();
    for _ in 0..3 {
        let resp = client
            .get(server.url("/"))
            .with_extension(Cost(5))
            .send()
            .await
            .expect("loopback answers");
        assert_eq!(resp.status(), 200);
    }
    // 3 requests of 5 units: the third waits for units 11..15, ten intervals of 51 ms
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "15 units at 10 per 500 ms must take at least one window ({:?})",
        started.elapsed()
    );
}

#[tokio::test]
async fn coarse_quota_headers_do_not_slow_a_configured_limit() {
    // a moving window that says "0 left, reset at the next whole second" after every 10th
    // request, as Flask-Limiter does: a configured limit is trusted over those answers
    let limiter = SlidingWindow::new(10, Duration::from_secs(1));
    let server = serve(move |_, _| limiter.reply_with_headers(true));
    let polite = Polite::builder().limit(Limit::per_second(10)).build();
    let client = client(&polite);
    let started = Instant::now();
    let statuses = burst(&client, &server.url("/"), 20).await;
    let elapsed = started.elapsed();
    assert!(statuses.iter().all(|s| *s == Ok(200)), "{statuses:?}");
    assert_eq!(server.stats.refused(), 0, "the server must refuse nothing");
    // 19 intervals of 102 ms is 1.94 s; obeying each rounded-up reset took 2.9 s when measured
    assert!(
        elapsed < Duration::from_millis(2_450),
        "20 requests at 10/s took {elapsed:?}: coarse resets slowed a configured limit"
    );
}

/// Regression: `host_limit("::1")` must match the host `[::1]` (the URL's host keeps an IPv6
/// literal's brackets); without the bracket handling the host goes unpaced.
#[tokio::test]
async fn an_ipv6_host_limit_paces_that_host_with_or_without_brackets() {
    let Some(server) = serve_ipv6(|_, _| Reply::ok()) else {
        eprintln!("skipped: this machine cannot bind the IPv6 loopback [::1]");
        return;
    };
    // a window of a second: the safety margin (2%) is what absorbs the loopback's jitter, and
    // a busy machine needs more than the 6 ms of a 300 ms window
    let window = Duration::from_secs(1);
    let port = server.addr.port();
    for key in [
        "::1".to_string(),
        "[::1]".to_string(),
        format!("[::1]:{port}"),
    ] {
        let before = server.stats.arrivals().len();
        let polite = Polite::builder()
            .host_limit(key.as_str(), Limit::per(2, window))
            .build();
        let client = client(&polite);
        let statuses = burst(&client, &server.url("/"), 4).await;
        assert!(
            statuses.iter().all(|s| *s == Ok(200)),
            "{key}: every request must succeed: {statuses:?}"
        );
        // a host-wide limit is a scope beside the host record; a port's is the record's
        let limit = polite
            .snapshot()
            .first()
            .and_then(|host| host.limit)
            .or_else(|| {
                polite
                    .scope_snapshot()
                    .first()
                    .and_then(|scope| scope.limit)
            });
        assert_eq!(
            limit,
            Some(Limit::per(2, window)),
            "host_limit({key:?}) must apply to {}",
            server.url("/")
        );
        let arrivals = &server.stats.arrivals()[before..];
        let most = arrivals
            .iter()
            .map(|&s| {
                arrivals
                    .iter()
                    .filter(|&&t| t >= s && t < s + window)
                    .count()
            })
            .max()
            .unwrap_or(0);
        assert!(
            most <= 2,
            "host_limit({key:?}): {most} requests reached [::1] within one window of 2"
        );
    }
}
