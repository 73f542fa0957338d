//! The per-host circuit breaker against loopback servers that go down and heal.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Reply, burst, client, polite_error, serve};
use reqwest_polite::{Breaker, BreakerPhase, Polite};

/// A server that answers 503 until healed.
fn flaky(delay: Duration) -> (common::TestServer, Arc<AtomicBool>) {
    let healed = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&healed);
    let server = serve(move |_, _| {
        let status = if flag.load(Ordering::SeqCst) {
            200
        } else {
            503
        };
        Reply::status(status).delay(delay)
    });
    (server, healed)
}

fn is_circuit_open(result: &Result<reqwest::Response, reqwest_middleware::Error>) -> bool {
    matches!(
        result.as_ref().err().and_then(polite_error),
        Some(reqwest_polite::Error::CircuitOpen { .. })
    )
}

#[tokio::test]
async fn an_outage_reaches_the_server_only_trip_count_plus_one_probe_per_open_period() {
    let (server, healed) = flaky(Duration::ZERO);
    let open_for = Duration::from_millis(300);
    let polite = Polite::builder()
        .max_retries(0)
        .breaker(
            Breaker::consecutive_failures(5)
                .open_for(open_for)
                .open_growth(1.0, open_for),
        )
        .build();
    let client = client(&polite);
    let started = Instant::now();
    let mut fast_failures = 0;
    for _ in 0..100 {
        let result = client.get(server.url("/")).send().await;
        if is_circuit_open(&result) {
            fast_failures += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    let open_periods = (elapsed.as_millis() / open_for.as_millis()) as u64 + 1;
    let hits = server.stats.hits();
    assert!(
        hits <= 5 + open_periods,
        "{hits} requests reached a dead server in {elapsed:?} (5 to trip + one probe per {open_for:?})"
    );
    assert_eq!(fast_failures + hits, 100, "every other request failed fast");
    assert_eq!(polite.snapshot()[0].breaker.phase, BreakerPhase::Open);

    // healed: a request succeeds within one open period
    healed.store(true, Ordering::SeqCst);
    let healed_at = Instant::now();
    loop {
        let result = client.get(server.url("/")).send().await;
        if result.as_ref().is_ok_and(|resp| resp.status() == 200) {
            break;
        }
        assert!(
            healed_at.elapsed() < open_for * 2,
            "no recovery within an open period"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(polite.snapshot()[0].breaker.phase, BreakerPhase::Closed);
}

#[tokio::test]
async fn half_open_lets_exactly_k_probes_through_at_a_time() {
    let (server, healed) = flaky(Duration::from_millis(200));
    let open_for = Duration::from_millis(200);
    let polite = Polite::builder()
        .max_retries(0)
        .breaker(
            Breaker::consecutive_failures(2)
                .open_for(open_for)
                .half_open_probes(3),
        )
        .build();
    let client = client(&polite);
    burst(&client, &server.url("/"), 2).await; // trips it
    assert_eq!(polite.snapshot()[0].breaker.phase, BreakerPhase::Open);
    healed.store(true, Ordering::SeqCst);
    tokio::time::sleep(open_for).await;
    let before = server.stats.hits();
    let statuses = burst(&client, &server.url("/"), 12).await;
    let probes = server.stats.hits() - before;
    assert_eq!(
        probes, 3,
        "exactly 3 probes may go while half-open: {statuses:?}"
    );
    let ok = statuses.iter().filter(|s| **s == Ok(200)).count();
    assert_eq!(ok, 3, "the probes succeed; the rest fail fast");
    assert_eq!(polite.snapshot()[0].breaker.phase, BreakerPhase::Closed);
}

#[tokio::test]
async fn one_dead_host_never_blocks_another() {
    let (dead, _) = flaky(Duration::ZERO);
    let alive = serve(|_, _| Reply::ok());
    let polite = Polite::builder()
        .max_retries(0)
        .breaker(Breaker::consecutive_failures(3))
        .build();
    let client = client(&polite);
    for _ in 0..10 {
        let _ = client.get(dead.url("/")).send().await;
        let resp = client
            .get(alive.url("/"))
            .send()
            .await
            .expect("alive host answers");
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(
        dead.stats.hits(),
        3,
        "the dead host is left alone after 3 failures"
    );
    assert_eq!(alive.stats.hits(), 10);
}

#[tokio::test]
async fn client_errors_and_429_do_not_trip_the_breaker() {
    let server = serve(|_, path| match path {
        "/missing" => Reply::status(404),
        _ => Reply::status(429),
    });
    let polite = Polite::builder()
        .max_retries(0)
        .breaker(Breaker::consecutive_failures(2))
        .build();
    let client = client(&polite);
    for path in ["/missing", "/missing", "/missing", "/busy", "/busy"] {
        let result = client.get(server.url(path)).send().await;
        assert!(
            !is_circuit_open(&result),
            "{path} must not open the circuit"
        );
    }
    assert_eq!(polite.snapshot()[0].breaker.phase, BreakerPhase::Closed);
}

#[tokio::test]
async fn retries_are_not_slept_on_a_circuit_that_just_opened() {
    let (server, _) = flaky(Duration::ZERO);
    let polite = Polite::builder()
        .max_retries(5)
        .backoff(reqwest_polite::Backoff::exponential(
            Duration::from_secs(1),
            Duration::from_secs(1),
        ))
        .breaker(Breaker::consecutive_failures(2).open_for(Duration::from_secs(10)))
        .build();
    let client = client(&polite);
    let started = Instant::now();
    let resp = client
        .get(server.url("/"))
        .send()
        .await
        .expect("the last 503 comes back");
    assert_eq!(resp.status(), 503);
    assert_eq!(
        server.stats.hits(),
        2,
        "the retry that tripped the breaker is the last"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1_500),
        "no backoff slept into an open circuit"
    );
}

#[tokio::test]
async fn what_counts_as_a_failure_is_configurable() {
    let server = serve(|_, _| Reply::status(404));
    let polite = Polite::builder()
        .max_retries(0)
        .breaker(Breaker::consecutive_failures(3))
        .breaker_failures(|status| status.is_none_or(|s| s.is_server_error() || s == 404))
        .build();
    let client = client(&polite);
    let mut open = 0;
    for _ in 0..6 {
        if is_circuit_open(&client.get(server.url("/")).send().await) {
            open += 1;
        }
    }
    assert_eq!(
        server.stats.hits(),
        3,
        "404s counted as failures trip the breaker at 3"
    );
    assert_eq!(open, 3);
}

/// Regression: reqwest has no default timeout, so a half-open probe can hang
/// at the server forever. Its hold must be bounded (by the open time): past it, the probe counts
/// as failed and the next probe goes, instead of every request failing with `CircuitOpen`.
#[tokio::test]
async fn a_probe_that_never_returns_does_not_block_the_host() {
    let hits = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = Arc::clone(&hits);
    let server = serve(move |_, _| match counter.fetch_add(1, Ordering::SeqCst) {
        0 => Reply::status(503),                            // trips the breaker
        1 => Reply::ok().delay(Duration::from_secs(3_600)), // the probe hangs
        _ => Reply::ok(),                                   // healthy again
    });
    let open_for = Duration::from_millis(300);
    let polite = Polite::builder()
        .max_retries(0)
        .breaker(Breaker::consecutive_failures(1).open_for(open_for))
        .build();
    let client = client(&polite);
    let first = client
        .get(server.url("/"))
        .send()
        .await
        .expect("503 answer");
    assert_eq!(first.status(), 503);
    tokio::time::sleep(open_for).await;
    let hung = tokio::spawn({
        let (client, url) = (client.clone(), server.url("/"));
        async move { client.get(url).send().await.map(|r| r.status()) }
    });
    let started = Instant::now();
    while server.stats.hits() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the probe never reached the server"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // open 300 ms, probe held 300 ms, reopened for 600 ms (grown): the next probe is due about
    // 900 ms after the hung one left. Allow generous slack, but far less than "never".
    let mut open_rejections = 0;
    loop {
        let result =
            tokio::time::timeout(Duration::from_secs(5), client.get(server.url("/")).send())
                .await
                .expect("no request but the hung probe may hang");
        if result.as_ref().is_ok_and(|resp| resp.status() == 200) {
            break;
        }
        assert!(
            is_circuit_open(&result),
            "only CircuitOpen is expected while the probe hangs, got {result:?}"
        );
        open_rejections += 1;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a hung probe kept the host blocked for {:?} ({open_rejections} rejections)",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !hung.is_finished(),
        "the hung probe is still out; the breaker went on without it"
    );
    assert_eq!(
        server.stats.hits(),
        3,
        "trip, hung probe, then exactly one more probe that closed the breaker"
    );
    assert_eq!(polite.snapshot()[0].breaker.phase, BreakerPhase::Closed);
    hung.abort();
}

/// A half-open probe that is refused after its admission (a unit cost no scope can hold; a
/// pacing wait certain to pass its deadline) gives its probe slot back: the next request goes
/// as the probe and closes the breaker. A probe slot kept would fail every later request fast.
#[tokio::test]
async fn a_probe_refused_before_it_is_sent_frees_the_probe_slot() {
    const OPEN: Duration = Duration::from_millis(200);
    let (server, healed) = flaky(Duration::ZERO);
    let authority = server.addr.to_string();
    let polite = Polite::builder()
        .max_retries(0)
        .limit(reqwest_polite::Limit::per_second(2))
        .unit_limit(&authority, "tokens", reqwest_polite::Limit::per_second(10))
        .breaker(Breaker::consecutive_failures(1).open_for(OPEN))
        .build();
    let client = client(&polite);
    let url = server.url("/");
    type Refusal = fn(&reqwest_polite::Error) -> bool;
    let refusals: [(&str, Refusal); 2] = [
        ("a cost no scope can hold", |e| {
            matches!(e, reqwest_polite::Error::CostExceedsLimit { .. })
        }),
        ("a wait past the deadline", |e| {
            matches!(e, reqwest_polite::Error::DeadlineExceeded { .. })
        }),
    ];
    for (what, refused) in refusals {
        healed.store(false, Ordering::SeqCst);
        let tripped = client.get(&url).send().await.expect("answered");
        assert_eq!(tripped.status(), 503);
        assert!(is_circuit_open(&client.get(&url).send().await), "{what}");
        tokio::time::sleep(OPEN + Duration::from_millis(20)).await;
        healed.store(true, Ordering::SeqCst);
        // the probe: admitted by the breaker, then refused before it is sent (the host's next
        // slot is 500 ms after the tripping request, past a 10 ms deadline)
        let probe = match what {
            "a cost no scope can hold" => client
                .get(&url)
                .with_extension(reqwest_polite::Units::new("tokens", 1000)),
            _ => client
                .get(&url)
                .with_extension(reqwest_polite::Deadline::after(Duration::from_millis(10))),
        };
        let result = probe.send().await;
        assert!(
            result
                .as_ref()
                .err()
                .and_then(polite_error)
                .is_some_and(refused),
            "{what}: {result:?}"
        );
        let next = client.get(&url).send().await;
        assert_eq!(
            next.map(|r| r.status().as_u16()).ok(),
            Some(200),
            "{what}: the next request goes as the probe"
        );
        assert_eq!(
            polite.snapshot()[0].breaker.phase,
            BreakerPhase::Closed,
            "{what}"
        );
    }
}

#[tokio::test]
async fn a_record_whose_breaker_closed_while_a_second_probe_was_out_is_evicted_when_idle() {
    // 503 until healed; `/slow` answers after 300 ms, so its probe is still out when the
    // quick probe's success closes the breaker
    let healed = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&healed);
    let server = serve(move |_, path| {
        let status = if flag.load(Ordering::SeqCst) {
            200
        } else {
            503
        };
        let delay = if path == "/slow" { 300 } else { 0 };
        Reply::status(status).delay(Duration::from_millis(delay))
    });
    let other = serve(|_, _| Reply::ok());
    let open_for = Duration::from_millis(100);
    let idle = Duration::from_millis(300);
    let polite = Polite::builder()
        .max_retries(0)
        .idle_timeout(idle)
        .breaker(
            Breaker::consecutive_failures(1)
                .open_for(open_for)
                .half_open_probes(2),
        )
        .build();
    let client = client(&polite);
    let tripped = client.get(server.url("/")).send().await.expect("answered");
    assert_eq!(tripped.status(), 503);
    healed.store(true, Ordering::SeqCst);
    tokio::time::sleep(open_for + Duration::from_millis(20)).await;
    let slow = tokio::spawn({
        let client = client.clone();
        let url = server.url("/slow");
        async move { client.get(url).send().await.map(|r| r.status()) }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let quick = client.get(server.url("/")).send().await.expect("a probe");
    assert_eq!(quick.status(), 200);
    assert_eq!(polite.snapshot()[0].breaker.phase, BreakerPhase::Closed);
    let slow = slow.await.expect("no panic").expect("the second probe");
    assert_eq!(slow, 200);
    tokio::time::sleep(idle + Duration::from_millis(100)).await;
    // a new record sweeps the idle ones
    let fresh = client.get(other.url("/")).send().await.expect("answered");
    assert_eq!(fresh.status(), 200);
    assert_eq!(
        polite.host_count(),
        1,
        "the healed host's record, idle for longer than idle_timeout, is kept: {:?}",
        polite.snapshot()
    );
}
