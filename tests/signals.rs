//! Obeying the server (Retry-After, rate-limit headers) and safe retries, against loopback
//! servers that count what reaches them.

mod common;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use common::{Reply, burst, client, polite_error, serve};
use reqwest_polite::{Backoff, Breaker, Deadline, Jitter, Polite, RetryBudget};

/// Quick retries, so tests do not sleep through the 100 ms default base.
fn fast_backoff() -> Backoff {
    Backoff::exponential(Duration::from_millis(5), Duration::from_millis(20)).jitter(Jitter::None)
}

/// The server asked for a pause longer than `max_retry_after`: the first call gets its answer
/// back (with `status`) without sleeping, the next fails fast with `CoolingDown`, and nothing
/// more reaches the server. Returns the `retry_in` of that error.
async fn answered_then_cooling_down(
    client: &reqwest_middleware::ClientWithMiddleware,
    server: &common::TestServer,
    status: u16,
) -> Duration {
    let started = Instant::now();
    let resp = client
        .get(server.url("/"))
        .send()
        .await
        .expect("the answer comes back");
    assert_eq!(
        resp.status().as_u16(),
        status,
        "the server's answer is returned"
    );
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "no sleeping past the cap ({:?})",
        started.elapsed()
    );
    let err = client
        .get(server.url("/"))
        .send()
        .await
        .expect_err("the host is cooling down");
    let retry_in = match polite_error(&err) {
        Some(reqwest_polite::Error::CoolingDown { retry_in, .. }) => *retry_in,
        other => panic!("expected CoolingDown, got {other:?}"),
    };
    assert_eq!(
        server.stats.hits(),
        1,
        "nothing more reaches a host that asked for a long pause"
    );
    retry_in
}

/// A fixed-window limiter that says what is left: `X-RateLimit-Limit/Remaining/Reset-After`
/// on every answer, `Retry-After` on refusals.
struct FixedWindow {
    limit: u64,
    window: Duration,
    state: Mutex<(Instant, u64)>,
}

impl FixedWindow {
    fn new(limit: u64, window: Duration) -> Self {
        FixedWindow {
            limit,
            window,
            state: Mutex::new((Instant::now(), 0)),
        }
    }

    /// `(allowed, remaining, reset_in)`
    fn take(&self) -> (bool, u64, Duration) {
        let now = Instant::now();
        let mut state = self.state.lock().expect("window lock");
        if now >= state.0 + self.window {
            *state = (now, 0);
        }
        let reset_in = state.0 + self.window - now;
        if state.1 >= self.limit {
            return (false, 0, reset_in);
        }
        state.1 += 1;
        (true, self.limit - state.1, reset_in)
    }

    fn x_ratelimit(&self) -> Reply {
        let (allowed, remaining, reset_in) = self.take();
        let reply = if allowed {
            Reply::ok()
        } else {
            Reply::status(429).header("retry-after", reset_in.as_secs_f64().ceil() as u64)
        };
        reply
            .header("x-ratelimit-limit", self.limit)
            .header("x-ratelimit-remaining", remaining)
            .header(
                "x-ratelimit-reset-after",
                format!("{:.3}", reset_in.as_secs_f64()),
            )
    }

    fn ietf(&self) -> Reply {
        let (allowed, remaining, reset_in) = self.take();
        let reply = if allowed {
            Reply::ok()
        } else {
            Reply::status(429)
        };
        reply
            .header(
                "ratelimit-policy",
                format!("\"fixed\";q={};w={}", self.limit, self.window.as_secs()),
            )
            .header(
                "ratelimit",
                format!(
                    "\"fixed\";r={remaining};t={}",
                    reset_in.as_secs_f64().ceil() as u64
                ),
            )
    }
}

#[tokio::test]
async fn retry_after_closes_the_whole_host_until_that_instant() {
    let first = AtomicU64::new(0);
    let server = serve(move |_, _| {
        if first.fetch_add(1, Ordering::SeqCst) == 0 {
            Reply::status(429).header("retry-after", 1)
        } else {
            Reply::ok()
        }
    });
    let polite = Polite::builder().backoff(fast_backoff()).build();
    let client = client(&polite);
    // the first request probes; the others queue behind it and must wait out the refusal
    let statuses = burst(&client, &server.url("/"), 8).await;
    assert!(statuses.iter().all(|s| *s == Ok(200)), "{statuses:?}");
    let arrivals = server.stats.arrivals();
    let refused_at = arrivals[0];
    for later in &arrivals[1..] {
        assert!(
            *later >= refused_at + Duration::from_secs(1),
            "a request reached the server {:?} after the refusal, before Retry-After: 1 s",
            later.duration_since(refused_at)
        );
    }
    assert_eq!(server.stats.refused(), 1, "one refusal for the whole burst");
    assert_eq!(server.stats.hits(), 9, "8 requests and one retry");
}

#[tokio::test]
async fn an_http_date_retry_after_is_obeyed_never_early() {
    let first = AtomicU64::new(0);
    let until = Mutex::new(None);
    let server = serve(move |_, _| {
        if first.fetch_add(1, Ordering::SeqCst) == 0 {
            let at = SystemTime::now() + Duration::from_secs(2);
            *until.lock().expect("lock") = Some(at);
            Reply::status(503).header("retry-after", httpdate::fmt_http_date(at))
        } else {
            Reply::ok()
        }
    });
    let polite = Polite::builder().backoff(fast_backoff()).build();
    let client = client(&polite);
    let resp = client
        .get(server.url("/"))
        .send()
        .await
        .expect("loopback answers");
    assert_eq!(resp.status(), 200, "the GET is retried after the date");
    let arrivals = server.stats.arrivals();
    let waited = arrivals[1].duration_since(arrivals[0]);
    // the date has whole-second resolution: it names a second 1 to 2 s away
    assert!(
        waited >= Duration::from_secs(1),
        "retried {waited:?} after the 503"
    );
}

#[tokio::test]
async fn a_retry_after_past_the_cap_returns_the_response_then_fails_fast() {
    let server = serve(|_, _| Reply::status(429).header("retry-after", 3600));
    let polite = Polite::builder()
        .max_retry_after(Duration::from_secs(2))
        .build();
    let client = client(&polite);
    let retry_in = answered_then_cooling_down(&client, &server, 429).await;
    assert!(
        retry_in > Duration::from_secs(3500),
        "retry_in {retry_in:?}"
    );
    let snapshot = &polite.snapshot()[0];
    assert!(
        snapshot.cooldown_in.is_some(),
        "the snapshot shows the cooldown"
    );
}

#[tokio::test]
async fn forty_at_once_against_x_ratelimit_headers_all_succeed_with_few_refusals() {
    let limiter = FixedWindow::new(10, Duration::from_secs(1));
    let server = serve(move |_, _| limiter.x_ratelimit());
    let polite = Polite::new(); // no limit configured: the headers are all we know
    let client = client(&polite);
    let statuses = burst(&client, &server.url("/"), 40).await;
    assert!(statuses.iter().all(|s| *s == Ok(200)), "{statuses:?}");
    let refused = server.stats.refused();
    eprintln!(
        "40 at once, 10 per 1 s fixed window, X-RateLimit-*: {refused} refused of {} hits",
        server.stats.hits()
    );
    assert!(
        refused <= 4,
        "the server refused {refused} requests (at most one per window)"
    );
}

#[tokio::test]
async fn ietf_ratelimit_headers_pace_the_host_before_it_refuses() {
    let limiter = FixedWindow::new(5, Duration::from_secs(1));
    let server = serve(move |_, _| limiter.ietf());
    let polite = Polite::new();
    let client = client(&polite);
    let statuses = burst(&client, &server.url("/"), 15).await;
    assert!(statuses.iter().all(|s| *s == Ok(200)), "{statuses:?}");
    let refused = server.stats.refused();
    eprintln!(
        "15 at once, 5 per 1 s fixed window, IETF RateLimit: {refused} refused of {} hits",
        server.stats.hits()
    );
    assert!(refused <= 3, "the server refused {refused} requests");
}

#[tokio::test]
async fn a_post_is_not_replayed_after_a_500_or_503_but_a_get_is() {
    for status in [500, 502, 503, 504] {
        let server = serve(move |_, _| Reply::status(status));
        let polite = Polite::builder()
            .backoff(fast_backoff())
            .breaker(Breaker::disabled())
            .build();
        let client = client(&polite);
        let resp = client
            .post(server.url("/"))
            .body("charge")
            .send()
            .await
            .expect("answer");
        assert_eq!(
            resp.status().as_u16(),
            status,
            "the last response comes back"
        );
        assert_eq!(
            server.stats.hits(),
            1,
            "a POST must not be replayed after {status}"
        );
        let resp = client.get(server.url("/")).send().await.expect("answer");
        assert_eq!(resp.status().as_u16(), status);
        assert_eq!(
            server.stats.hits(),
            1 + 4,
            "a GET is retried 3 times after {status}"
        );
    }
}

#[tokio::test]
async fn a_post_is_retried_after_429_and_with_an_idempotency_key() {
    let server = serve(|method, _| {
        if method == "POST" {
            Reply::status(503)
        } else {
            Reply::ok()
        }
    });
    let polite = Polite::builder()
        .backoff(fast_backoff())
        .breaker(Breaker::disabled())
        .build();
    let client = client(&polite);
    client
        .post(server.url("/"))
        .header("idempotency-key", "order-42")
        .send()
        .await
        .expect("answer");
    assert_eq!(server.stats.hits(), 4, "a keyed POST is safe to retry");

    let throttled = serve(|_, _| Reply::status(429));
    client
        .post(throttled.url("/"))
        .send()
        .await
        .expect("answer");
    assert_eq!(
        throttled.stats.hits(),
        4,
        "a 429 was refused before acting: retried for POST"
    );
}

#[tokio::test]
async fn a_streaming_body_is_sent_once_and_its_response_returned() {
    let server = serve(|_, _| Reply::status(503));
    let polite = Polite::builder().backoff(fast_backoff()).build();
    let client = client(&polite);
    // a body wrapped from an http_body is a stream to reqwest: it cannot be cloned
    let body = reqwest::Body::wrap(http_body_util::Full::new(bytes::Bytes::from_static(b"ab")));
    let resp = client
        .put(server.url("/"))
        .body(body)
        .send()
        .await
        .expect("a body that cannot be cloned is not an error");
    assert_eq!(resp.status(), 503);
    assert_eq!(
        server.stats.hits(),
        1,
        "sent once, though PUT after 503 is retryable"
    );
}

#[tokio::test]
async fn the_retry_budget_stops_a_retry_storm() {
    let server = serve(|_, _| Reply::status(500));
    let polite = Polite::builder()
        .backoff(fast_backoff())
        .breaker(Breaker::disabled())
        .retry_budget(RetryBudget::new(Duration::from_secs(10), 0, 0.2))
        .build();
    let client = client(&polite);
    for _ in 0..20 {
        client.get(server.url("/")).send().await.expect("answer");
    }
    // 20 requests deposit; 20% of them may be retried
    assert_eq!(
        server.stats.hits(),
        24,
        "20 requests and 4 budgeted retries"
    );
    let counters = polite.snapshot()[0].counters;
    assert_eq!(counters.retries, 4);
    assert_eq!(
        counters.budget_denied, 20,
        "every request ended on a denied retry"
    );
}

#[tokio::test]
async fn the_deadline_bounds_the_backoff() {
    let server = serve(|_, _| Reply::status(503));
    let polite = Polite::builder()
        .backoff(
            Backoff::exponential(Duration::from_secs(5), Duration::from_secs(5))
                .jitter(Jitter::None),
        )
        .build();
    let client = client(&polite);
    let started = Instant::now();
    let resp = client
        .get(server.url("/"))
        .with_extension(Deadline::after(Duration::from_secs(1)))
        .send()
        .await
        .expect("the last response comes back");
    assert_eq!(resp.status(), 503);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "no 5 s sleep past a 1 s deadline"
    );
    assert_eq!(server.stats.hits(), 1);
}

#[tokio::test]
async fn a_hintless_429_lowers_the_rate_and_shows_in_the_snapshot() {
    let server = serve(|_, _| Reply::status(429));
    let polite = Polite::builder().max_retries(0).build();
    let client = client(&polite);
    for _ in 0..3 {
        let resp = client.get(server.url("/")).send().await.expect("answer");
        assert_eq!(resp.status(), 429);
    }
    let host = &polite.snapshot()[0];
    assert!(
        host.adaptive_rate.is_some(),
        "the rate must drop after a hintless 429: {host:?}"
    );
    assert!(host.interval > Duration::ZERO, "the host is paced now");
    assert_eq!(host.counters.throttled, 3);
}

#[tokio::test]
async fn no_retry_sends_a_retryable_get_once() {
    let server = serve(|_, _| Reply::status(503));
    let polite = Polite::builder().backoff(fast_backoff()).build();
    let client = client(&polite);
    let resp = client
        .get(server.url("/"))
        .with_extension(reqwest_polite::NoRetry)
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status(), 503);
    assert_eq!(server.stats.hits(), 1, "NoRetry sends once");
}

#[tokio::test]
async fn an_unknown_quota_without_headers_is_learned_with_few_refusals() {
    // a strict 10-per-second sliding window that says nothing but Retry-After on refusals;
    // unpaced, 40 at once would see 30 refusals (see tests/pacing.rs for that control)
    let server = common::sliding_window_server(10, Duration::from_secs(1));
    let polite = Polite::new();
    let client = client(&polite);
    let statuses = burst(&client, &server.url("/"), 40).await;
    assert!(statuses.iter().all(|s| *s == Ok(200)), "{statuses:?}");
    let refused = server.stats.refused();
    eprintln!("40 at once, unknown 10 per 1 s sliding window: {refused} refused");
    assert!(
        refused <= 10,
        "slow start and the learned rate must keep refusals low: {refused}"
    );
    let host = &polite.snapshot()[0];
    assert!(
        host.adaptive_rate.is_some(),
        "the refusal taught a rate: {host:?}"
    );
}

#[tokio::test]
async fn malformed_and_absurd_headers_are_never_fatal() {
    let garbage: &[(&str, &str)] = &[
        ("retry-after", "soon"),
        ("retry-after", "-5"),
        ("retry-after", "99999999999999999999999"),
        ("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT"), // in the past: now
        ("x-ratelimit-remaining", "-1"),
        ("x-ratelimit-reset", "NaN"),
        ("ratelimit", "\"x\";r=;t=abc"),
        ("ratelimit-policy", ";;;"),
        ("x-ratelimit-reset-after", "1e400"),
    ];
    for (name, value) in garbage {
        let (name, value) = (name.to_string(), value.to_string());
        let server = serve(move |_, _| Reply::status(429).header(&name, &value));
        let polite = Polite::builder()
            .backoff(fast_backoff())
            .max_retries(1)
            .max_retry_after(Duration::from_secs(2))
            .build();
        let client = client(&polite);
        let started = Instant::now();
        let result = client.get(server.url("/")).send().await;
        match result {
            Ok(resp) => assert_eq!(resp.status(), 429, "the last response comes back"),
            Err(err) => assert!(
                matches!(
                    polite_error(&err),
                    Some(reqwest_polite::Error::CoolingDown { .. })
                ),
                "only a typed error may come back: {err:?}"
            ),
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "no hang on a malformed header ({:?})",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn an_absurd_retry_after_closes_the_host_without_overflow() {
    let server = serve(|_, _| Reply::status(503).header("retry-after", 1_000_000_000_000u64));
    let polite = Polite::new();
    let client = client(&polite);
    // past max_retry_after: no sleep, the 503 returns
    let retry_in = answered_then_cooling_down(&client, &server, 503).await;
    assert!(
        retry_in > Duration::from_secs(364 * 24 * 3600),
        "capped at a year, not wrapped: {retry_in:?}"
    );
}

#[tokio::test]
async fn a_spent_quota_with_a_far_reset_returns_the_refusal_then_fails_fast() {
    // GitHub's primary limit: 403 (or 429) with remaining 0 and a reset far away, no Retry-After
    let reset = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
        + 3000;
    let server = serve(move |_, _| {
        Reply::status(429)
            .header("x-ratelimit-limit", 5000)
            .header("x-ratelimit-remaining", 0)
            .header("x-ratelimit-reset", reset)
    });
    let polite = Polite::builder().backoff(fast_backoff()).build();
    let client = client(&polite);
    // no retry into a quota that resets in 50 minutes
    let retry_in = answered_then_cooling_down(&client, &server, 429).await;
    assert!(
        retry_in > Duration::from_secs(2900),
        "retry_in {retry_in:?}"
    );
}
