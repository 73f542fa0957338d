//! Cancellation at every await: a request future polled `k` times and then dropped, for every
//! `k` up to completion, leaves its host clean (no place in the pacing queue, no in-flight count
//! or permit, no half-open probe or first-contact scout slot, the turnstile free), and the next
//! request proceeds. One test per path a request can wait in: the pacing schedule, the
//! `max_in_flight` cap, the first-contact hold (behind a scout, and as the scout), the half-open
//! probe, and the sleep before a retry.
//!
//! The request is polled as an executor would poll it: once, then again each time its waker
//! fires (see [`poll_k`]), so `k` walks through every await the request passes.
//!
//! These tests run on real time, not paused time. The request waits on a loopback server that
//! runs on its own thread; with a paused clock, tokio advances time to the next timer whenever
//! the runtime idles, including while it waits on that socket, so a pacing sleep or a backoff
//! would end "early" whenever the server is slower than nothing, and the bound on each wait
//! here would report a hang that is not one. Real waits of tens of milliseconds keep the file
//! at a few seconds. Every assertion is about counts and states (what reached the server, what
//! the snapshot holds, whether the next request went out on its first poll); the only
//! durations are upper bounds on a wait that a leaked slot would make endless.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use common::{Reply, TestServer, client, polite_error, serve};
use reqwest_polite::{Backoff, Breaker, BreakerPhase, HostSnapshot, Jitter, Limit, Polite};
use tokio::sync::Notify;

/// Most polls a request may need; a request still pending after this many is stuck.
const MAX_POLLS: usize = 200;
/// How long `/slow` holds its answer.
const SLOW: Duration = Duration::from_millis(150);
/// Bound on any wait that only a leaked slot could make endless.
const STUCK: Duration = Duration::from_secs(10);

/// A waker that lets the test wait for the request's next wake.
struct Wakes(Notify);

impl Wake for Wakes {
    fn wake(self: Arc<Self>) {
        self.0.notify_one(); // stores a permit if nobody waits yet: no wake is lost
    }
}

/// Poll `fut` at most `k` times: the first at once, each next one after the future's waker
/// fired, as an executor does. `Some` if it completed within those polls.
async fn poll_k<F: Future + ?Sized>(mut fut: Pin<&mut F>, k: usize) -> Option<F::Output> {
    let wakes = Arc::new(Wakes(Notify::new()));
    let waker = Waker::from(Arc::clone(&wakes));
    for i in 0..k {
        if i > 0 {
            tokio::time::timeout(STUCK, wakes.0.notified())
                .await
                .unwrap_or_else(|_| panic!("a pending request was never woken after poll {i}"));
        }
        if let Poll::Ready(out) = fut.as_mut().poll(&mut Context::from_waker(&waker)) {
            return Some(out);
        }
    }
    None
}

/// A loopback server: `/slow` answers 200 after [`SLOW`], `/503` answers 503, anything else 200
/// at once; it counts what reached each.
struct Paths {
    server: TestServer,
    slow: Arc<AtomicU64>,
    failing: Arc<AtomicU64>,
    fast: Arc<AtomicU64>,
}

impl Paths {
    fn start() -> Self {
        let (slow, failing, fast) = (Arc::default(), Arc::default(), Arc::default());
        let counts: [Arc<AtomicU64>; 3] =
            [Arc::clone(&slow), Arc::clone(&failing), Arc::clone(&fast)];
        let server = serve(move |_, path| {
            let (i, reply) = match path {
                "/slow" => (0, Reply::ok().delay(SLOW)),
                "/503" => (1, Reply::status(503)),
                _ => (2, Reply::ok()),
            };
            counts[i].fetch_add(1, Ordering::SeqCst);
            reply
        });
        Paths {
            server,
            slow,
            failing,
            fast,
        }
    }

    fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    fn slow(&self) -> u64 {
        self.slow.load(Ordering::SeqCst)
    }
    fn failing(&self) -> u64 {
        self.failing.load(Ordering::SeqCst)
    }
    fn fast(&self) -> u64 {
        self.fast.load(Ordering::SeqCst)
    }
}

/// A limit that holds nobody back: configured, so there is no first contact in the way, and
/// with a burst, so a slot a dropped request took (it may have reached the server) leaves the
/// next request free to go at once.
fn roomy() -> Limit {
    Limit::per_second(1000).burst(100)
}

/// The one host's state.
fn host(polite: &Polite) -> HostSnapshot {
    let hosts = polite.snapshot();
    assert_eq!(hosts.len(), 1, "one host in these tests: {hosts:?}");
    hosts.into_iter().next().expect("one host")
}

/// Nothing waits in the host's pacing queue, and at most `in_flight` requests are out.
fn assert_clean(polite: &Polite, in_flight: u32, path: &str, k: usize) {
    let host = host(polite);
    assert_eq!(
        (host.queued, host.in_flight),
        (0, in_flight),
        "{path}: after dropping the request at poll {k}, the queue and in-flight count must be clean: {host}"
    );
}

/// Poll a fresh request to `url` once: `true` if that one poll sent it (the host's in-flight
/// count rose to `in_flight`, and nothing is queued), as a request to a clean host is sent at
/// once. Then let it finish, and return its status.
async fn goes_at_once(
    polite: &Polite,
    client: &reqwest_middleware::ClientWithMiddleware,
    url: &str,
    in_flight: u32,
) -> (bool, u16) {
    let mut next = Box::pin(client.get(url).send());
    let went = match poll_k(next.as_mut(), 1).await {
        Some(result) => panic!(
            "the next request ended on its first poll instead of going out (a slot still taken?): {result:?}"
        ),
        None => {
            let host = host(polite);
            (host.queued, host.in_flight) == (0, in_flight)
        }
    };
    let answer = tokio::time::timeout(STUCK, next)
        .await
        .expect("the next request is not stuck")
        .expect("the next request is answered");
    (went, answer.status().as_u16())
}

/// Wait (bounded) until `polite`'s one host has `n` requests in flight.
async fn until_in_flight(polite: &Polite, n: u32) {
    for _ in 0..2_000 {
        if polite.snapshot().first().is_some_and(|h| h.in_flight == n) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("{n} requests never got in flight: {:?}", polite.snapshot());
}

#[tokio::test]
async fn a_request_dropped_while_paced_gives_back_its_place_and_takes_no_slot() {
    let server = Paths::start();
    let url = server.url("/");
    let mut waited = 0; // drops while the request waited for its pacing slot
    for k in 0..=MAX_POLLS {
        assert!(k < MAX_POLLS, "the paced request never completed");
        // 5/s: the second request waits ~204 ms for its slot (no precise-wake yielding)
        let polite = Polite::builder()
            .limit(Limit::per_second(5))
            .max_retries(0)
            .build();
        let client = client(&polite);
        let first = client.get(&url).send().await.expect("first request");
        assert_eq!(first.status(), 200);
        let mut request = Box::pin(client.get(&url).send());
        let done = poll_k(request.as_mut(), k).await;
        let at_drop = host(&polite);
        drop(request);
        assert_clean(&polite, 0, "pacing", k);
        if done.is_none() && at_drop.queued == 1 {
            waited += 1;
            assert_eq!(
                host(&polite).counters.attempts,
                1,
                "pacing (poll {k}): a request dropped while it waited took no slot"
            );
        }
        let before = server.fast();
        let (_, status) = goes_at_once(&polite, &client, &url, 1).await;
        assert_eq!(status, 200, "pacing (poll {k}): the next request is served");
        assert!(
            server.fast() > before,
            "pacing (poll {k}): the next request reached the server"
        );
        assert_clean(&polite, 0, "pacing, after the next request", k);
        if done.is_some() {
            break;
        }
    }
    assert!(
        waited > 0,
        "some drops must have happened while the request waited for its slot"
    );
}

#[tokio::test]
async fn a_request_dropped_while_waiting_under_the_in_flight_cap_holds_no_permit() {
    let server = Paths::start();
    let mut waited = 0; // drops while the request waited for a place under the cap
    for k in 0..=MAX_POLLS {
        assert!(k < MAX_POLLS, "the capped request never completed");
        let polite = Polite::builder()
            .limit(Limit::per_second(1000)) // configured: no first contact in the way
            .max_in_flight(1)
            .max_retries(0)
            .build();
        let client = client(&polite);
        let slow_before = server.slow();
        let blocker = tokio::spawn({
            let (client, url) = (client.clone(), server.url("/slow"));
            async move { client.get(url).send().await.map(|r| r.status().as_u16()) }
        });
        until_in_flight(&polite, 1).await;
        let fast_before = server.fast();
        let mut request = Box::pin(client.get(server.url("/")).send());
        let done = poll_k(request.as_mut(), k).await;
        let at_drop = host(&polite);
        let blocker_out = !blocker.is_finished();
        drop(request);
        if done.is_none() && blocker_out && server.fast() == fast_before {
            waited += 1;
            assert_eq!(
                (at_drop.in_flight, at_drop.queued),
                (1, 0),
                "in-flight (poll {k}): only the blocker is out while the request waits for a permit"
            );
        }
        let blocker = tokio::time::timeout(STUCK, blocker)
            .await
            .expect("the blocker is not stuck")
            .expect("the blocker did not panic");
        assert_eq!(blocker.expect("answered"), 200);
        assert_clean(&polite, 0, "in-flight", k);
        // two at once under a cap of one: both are served, one after the other; a leaked
        // permit would leave them waiting forever
        let slow = server.url("/slow");
        let (a, b) = tokio::time::timeout(
            STUCK,
            futures::future::join(client.get(&slow).send(), client.get(&slow).send()),
        )
        .await
        .expect("the next requests are not stuck under the cap");
        assert_eq!(
            (
                a.expect("answered").status().as_u16(),
                b.expect("answered").status().as_u16()
            ),
            (200, 200),
            "in-flight (poll {k})"
        );
        assert_clean(&polite, 0, "in-flight, after the next requests", k);
        assert_eq!(
            server.slow() - slow_before,
            3,
            "in-flight (poll {k}): the blocker and the two next requests reached the server, once each"
        );
        if done.is_some() {
            break;
        }
    }
    assert!(
        waited > 0,
        "some drops must have happened while the request waited for a permit"
    );
    // `/` answers without an await, so only `/slow` requests can overlap at the server
    assert_eq!(
        server.server.stats.max_concurrent(),
        1,
        "never more than max_in_flight(1) at the server: a dropped waiter made no extra permit"
    );
}

#[tokio::test]
async fn a_request_dropped_while_held_behind_a_first_contact_scout_leaves_the_queue() {
    let server = Paths::start();
    let url = server.url("/");
    let mut held = 0; // drops while the request was held behind the scout
    for k in 0..=MAX_POLLS {
        assert!(k < MAX_POLLS, "the held request never completed");
        // no limit configured: the host's quota is unknown, one scout goes first
        let polite = Polite::builder().max_retries(0).build();
        let client = client(&polite);
        let scout = tokio::spawn({
            let (client, url) = (client.clone(), server.url("/slow"));
            async move { client.get(url).send().await.map(|r| r.status().as_u16()) }
        });
        until_in_flight(&polite, 1).await;
        let mut request = Box::pin(client.get(&url).send());
        let done = poll_k(request.as_mut(), k).await;
        let at_drop = host(&polite);
        drop(request);
        if done.is_none() && at_drop.queued == 1 {
            held += 1;
        }
        let after = host(&polite);
        assert!(
            after.queued == 0 && after.in_flight <= 1,
            "first contact (poll {k}): after the drop, nothing queued and at most the scout out: {after}"
        );
        let scout = tokio::time::timeout(STUCK, scout)
            .await
            .expect("the scout is not stuck")
            .expect("the scout did not panic");
        assert_eq!(scout.expect("answered"), 200);
        let (went, status) = goes_at_once(&polite, &client, &url, 1).await;
        assert!(
            went,
            "first contact (poll {k}): after the scout's answer, the next request goes at once"
        );
        assert_eq!(status, 200);
        assert_clean(&polite, 0, "first contact, after the next request", k);
        if done.is_some() {
            break;
        }
    }
    assert!(
        held > 0,
        "some drops must have happened while the request was held behind the scout"
    );
}

#[tokio::test]
async fn a_scout_dropped_before_its_answer_frees_first_contact_for_the_next_request() {
    let server = Paths::start();
    let mut out = 0; // drops while the scout was out at the server
    for k in 0..=MAX_POLLS {
        assert!(k < MAX_POLLS, "the scout never completed");
        let polite = Polite::builder().max_retries(0).build();
        let client = client(&polite);
        let mut scout = Box::pin(client.get(server.url("/slow")).send());
        let done = poll_k(scout.as_mut(), k).await;
        let at_drop = polite.snapshot();
        drop(scout);
        if done.is_none() && at_drop.first().is_some_and(|h| h.in_flight == 1) {
            out += 1;
        }
        if done.is_some() || !at_drop.is_empty() {
            assert_clean(&polite, 0, "scout", k);
        }
        // a scout slot still taken would hold this one for a second (the scout hold)
        let (went, status) = goes_at_once(&polite, &client, &server.url("/"), 1).await;
        assert!(
            went,
            "scout (poll {k}): with the scout dropped, the next request goes at once"
        );
        assert_eq!(status, 200);
        assert_clean(&polite, 0, "scout, after the next request", k);
        if done.is_some() {
            break;
        }
    }
    assert!(
        out > 0,
        "some drops must have happened while the scout was out"
    );
}

#[tokio::test]
async fn a_half_open_probe_dropped_before_its_answer_frees_the_probe_slot() {
    const OPEN: Duration = Duration::from_millis(200);
    let server = Paths::start();
    let polite = Polite::builder()
        .limit(roomy())
        .max_retries(0)
        .breaker(
            Breaker::consecutive_failures(1)
                .open_for(OPEN)
                .open_growth(1.0, OPEN),
        )
        .build();
    let client = client(&polite);
    let mut probing = 0; // drops while the probe was out
    for k in 0..=MAX_POLLS {
        assert!(k < MAX_POLLS, "the probe never completed");
        let tripped = client.get(server.url("/503")).send().await;
        assert_eq!(tripped.expect("answered").status(), 503);
        assert_eq!(host(&polite).breaker.phase, BreakerPhase::Open);
        let failing = client.get(server.url("/")).send().await;
        assert!(
            matches!(
                failing.as_ref().err().and_then(polite_error),
                Some(reqwest_polite::Error::CircuitOpen { .. })
            ),
            "probe (poll {k}): open means failing fast: {failing:?}"
        );
        tokio::time::sleep(OPEN + Duration::from_millis(20)).await;
        let mut probe = Box::pin(client.get(server.url("/slow")).send());
        let done = poll_k(probe.as_mut(), k).await;
        let at_drop = host(&polite);
        drop(probe);
        if done.is_none() && at_drop.in_flight == 1 {
            probing += 1;
            assert_eq!(
                at_drop.breaker.phase,
                BreakerPhase::HalfOpen,
                "probe (poll {k}): the request out is the half-open probe"
            );
        }
        assert_clean(&polite, 0, "probe", k);
        // the one probe slot is free again: the next request goes (it is the probe, and it
        // closes the breaker); a slot still taken would make it fail fast with CircuitOpen
        let (went, status) = goes_at_once(&polite, &client, &server.url("/"), 1).await;
        assert!(
            went,
            "probe (poll {k}): with the probe dropped, the next request is let through at once"
        );
        assert_eq!(status, 200);
        assert_eq!(
            host(&polite).breaker.phase,
            BreakerPhase::Closed,
            "probe (poll {k}): the next request's success closes the breaker"
        );
        assert_clean(&polite, 0, "probe, after the next request", k);
        if done.is_some() {
            break;
        }
    }
    assert!(
        probing > 0,
        "some drops must have happened while the probe was out"
    );
}

#[tokio::test]
async fn a_request_dropped_while_sleeping_before_a_retry_sends_nothing_more() {
    const BACKOFF: Duration = Duration::from_millis(50);
    let server = Paths::start();
    let url = server.url("/503");
    let mut sleeping = 0; // drops during the sleep before a retry
    for k in 0..=MAX_POLLS {
        assert!(k < MAX_POLLS, "the retried request never completed");
        let polite = Polite::builder()
            .limit(roomy())
            .max_retries(2)
            .backoff(Backoff::exponential(BACKOFF, BACKOFF).jitter(Jitter::None))
            .breaker(Breaker::disabled())
            .build();
        let client = client(&polite);
        let before = server.failing();
        let mut request = Box::pin(client.get(&url).send());
        let done = poll_k(request.as_mut(), k).await;
        let at_drop = host_or_none(&polite);
        let sent_at_drop = server.failing() - before;
        drop(request);
        let out_at_drop = at_drop.as_ref().map_or(0, |h| h.in_flight);
        if let Some(h) = &at_drop {
            assert_clean(&polite, 0, "retry", k);
            if done.is_none() && sent_at_drop > 0 && h.in_flight == 0 {
                sleeping += 1;
            }
        }
        // longer than the rest of the backoff and the retries after it
        tokio::time::sleep(4 * BACKOFF).await;
        let sent = server.failing() - before;
        assert!(
            sent <= 3,
            "retry (poll {k}): at most 3 attempts (max_retries 2), got {sent}"
        );
        if done.is_none() {
            assert!(
                sent <= sent_at_drop + u64::from(out_at_drop),
                "retry (poll {k}): a dropped request sends nothing more ({sent_at_drop} sent at the drop, {sent} now)"
            );
        }
        let (went, status) = goes_at_once(&polite, &client, &server.url("/"), 1).await;
        assert!(
            went,
            "retry (poll {k}): the next request goes at once (no turn or slot left taken)"
        );
        assert_eq!(status, 200);
        assert_clean(&polite, 0, "retry, after the next request", k);
        if let Some(result) = done {
            assert_eq!(
                result.expect("answered").status(),
                503,
                "retries exhausted: the last answer is returned"
            );
            assert_eq!(sent, 3, "a completed request made all 3 attempts");
            break;
        }
    }
    assert!(
        sleeping > 0,
        "some drops must have happened during the sleep before a retry"
    );
}

/// The one host's state, if the request got as far as making its record.
fn host_or_none(polite: &Polite) -> Option<HostSnapshot> {
    polite.snapshot().into_iter().next()
}
