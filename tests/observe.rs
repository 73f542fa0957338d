//! The observer hook against loopback servers: every wait, retry, refusal, rejection, breaker
//! transition and finished request is reported once, with its host, and never a credential.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Reply, client, polite_error, serve};
use reqwest_polite::{
    Backoff, Breaker, BreakerEvent, BreakerPhase, Cost, Deadline, Jitter, Limit, Observer, Polite,
    RefusalEvent, RejectReason, RejectedEvent, RequestEvent, RequestOutcome, RetryEvent, WaitEvent,
    WaitReason,
};

/// Every event, owned, in the order they came; and each one's `Debug` text.
#[derive(Default)]
struct Recorded {
    waits: Vec<(WaitReason, Duration, Option<String>)>,
    retries: Vec<(Option<u16>, u32)>,
    refusals: Vec<(u16, Option<Duration>)>,
    rejections: Vec<RejectReason>,
    breaker: Vec<BreakerPhase>,
    requests: Vec<(RequestOutcome, u32)>,
    hosts: Vec<String>,
    partitions: Vec<Option<String>>,
    debug: Vec<String>,
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Recorded>>);

impl Recorder {
    fn get(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.0.lock().expect("recorder lock")
    }
    fn note(&self, host: &str, partition: Option<String>, debug: String) {
        let mut r = self.get();
        r.hosts.push(host.to_string());
        r.partitions.push(partition);
        r.debug.push(debug);
    }
}

impl Observer for Recorder {
    fn on_wait(&self, e: &WaitEvent<'_>) {
        self.note(e.host, e.partition.map(|p| p.to_string()), format!("{e:?}"));
        let scope = e.scope.map(str::to_string);
        self.get().waits.push((e.reason, e.waited, scope));
    }
    fn on_retry(&self, e: &RetryEvent<'_>) {
        self.note(e.host, e.partition.map(|p| p.to_string()), format!("{e:?}"));
        let status = e.status.map(|s| s.as_u16());
        self.get().retries.push((status, e.resend_count));
    }
    fn on_refusal(&self, e: &RefusalEvent<'_>) {
        self.note(e.host, e.partition.map(|p| p.to_string()), format!("{e:?}"));
        self.get().refusals.push((e.status.as_u16(), e.retry_after));
    }
    fn on_rejected(&self, e: &RejectedEvent<'_>) {
        self.note(e.host, e.partition.map(|p| p.to_string()), format!("{e:?}"));
        assert_eq!(e.reason, RejectReason::of(e.error), "reason matches error");
        self.get().rejections.push(e.reason);
    }
    fn on_breaker(&self, e: &BreakerEvent<'_>) {
        self.note(e.host, e.partition.map(|p| p.to_string()), format!("{e:?}"));
        self.get().breaker.push(e.phase);
    }
    fn on_request(&self, e: &RequestEvent<'_>) {
        self.note(e.host, e.partition.map(|p| p.to_string()), format!("{e:?}"));
        self.get().requests.push((e.outcome, e.attempts));
    }
}

fn fast_backoff() -> Backoff {
    Backoff::exponential(Duration::from_millis(5), Duration::from_millis(20)).jitter(Jitter::None)
}

#[tokio::test]
async fn paced_requests_report_one_wait_each_for_all_but_the_first() {
    let server = serve(|_, _| Reply::ok());
    let recorder = Recorder::default();
    let polite = Polite::builder()
        .limit(Limit::per_second(20))
        .observer(recorder.clone())
        .build();
    let results = common::burst(&client(&polite), &server.url("/"), 5).await;
    assert!(results.iter().all(|r| r == &Ok(200)), "{results:?}");

    let r = recorder.get();
    assert_eq!(r.waits.len(), 4, "four of five waited: {:?}", r.waits);
    assert!(
        r.waits
            .iter()
            .all(|(reason, waited, scope)| *reason == WaitReason::Pacing
                && *waited > Duration::ZERO
                && scope.is_none()),
        "{:?}",
        r.waits
    );
    let longest = r.waits.iter().map(|w| w.1).max().expect("waits");
    assert!(
        longest >= Duration::from_millis(190),
        "the last of five at 20/s waits about 4 x 51 ms, waited {longest:?}"
    );
    assert_eq!(
        r.requests,
        vec![(RequestOutcome::Success, 1); 5],
        "five requests, one attempt each"
    );
    assert!(r.retries.is_empty() && r.refusals.is_empty() && r.rejections.is_empty());
    let key = format!("http://{}", server.addr);
    assert!(r.hosts.iter().all(|h| *h == key), "{:?}", r.hosts);
    assert_eq!(
        r.waits.len() as u64,
        polite.snapshot()[0].counters.waited,
        "the observer and the snapshot count the same waits"
    );
}

#[tokio::test]
async fn refusals_and_retries_are_reported_with_status_and_backoff_waits() {
    let calls = AtomicU64::new(0);
    let server = serve(move |_, _| match calls.fetch_add(1, Ordering::SeqCst) {
        0 => Reply::status(429),
        1 => Reply::status(503),
        _ => Reply::ok(),
    });
    let recorder = Recorder::default();
    let polite = Polite::builder()
        .limit(Limit::per_second(50))
        .backoff(fast_backoff())
        .observer(recorder.clone())
        .build();
    let resp = client(&polite)
        .get(server.url("/"))
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), 200);

    let r = recorder.get();
    assert_eq!(
        r.refusals,
        vec![(429, None)],
        "one rate-limit refusal; a 503 is not one"
    );
    assert_eq!(
        r.retries,
        vec![(Some(429), 1), (Some(503), 2)],
        "two retries, numbered as OpenTelemetry's resend count"
    );
    let backoffs = r
        .waits
        .iter()
        .filter(|w| w.0 == WaitReason::Backoff)
        .count();
    assert_eq!(backoffs, 2, "each retry sleeps its backoff: {:?}", r.waits);
    assert_eq!(r.requests, vec![(RequestOutcome::Success, 3)]);
    assert_eq!(server.stats.hits(), 3);
}

#[tokio::test]
async fn a_rate_limit_403_is_a_refusal_and_a_plain_403_is_a_client_error() {
    let server = serve(|_, path| {
        if path == "/limited" {
            Reply::status(403).header("x-ratelimit-remaining", 0)
        } else {
            Reply::status(403)
        }
    });
    let recorder = Recorder::default();
    let polite = Polite::builder()
        .limit(Limit::per_second(50))
        .max_retries(0)
        .observer(recorder.clone())
        .build();
    let client = client(&polite);
    client.get(server.url("/plain")).send().await.expect("403");
    client
        .get(server.url("/limited"))
        .send()
        .await
        .expect("403");

    let r = recorder.get();
    assert_eq!(r.refusals, vec![(403, None)], "only the rate-limit 403");
    assert_eq!(
        r.requests,
        vec![
            (RequestOutcome::ClientError, 1),
            (RequestOutcome::Refused, 1)
        ]
    );
}

#[tokio::test]
async fn an_outage_reports_open_half_open_closed_and_each_fast_failure() {
    let healed = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&healed);
    let server = serve(move |_, _| {
        Reply::status(if flag.load(Ordering::SeqCst) {
            200
        } else {
            503
        })
    });
    let recorder = Recorder::default();
    let open_for = Duration::from_millis(200);
    let polite = Polite::builder()
        .max_retries(0)
        .breaker(Breaker::consecutive_failures(3).open_for(open_for))
        .observer(recorder.clone())
        .build();
    let client = client(&polite);
    for _ in 0..5 {
        let _ = client.get(server.url("/")).send().await;
    }
    healed.store(true, Ordering::SeqCst);
    tokio::time::sleep(open_for + Duration::from_millis(50)).await;
    let resp = client.get(server.url("/")).send().await.expect("probe");
    assert_eq!(resp.status(), 200);

    let r = recorder.get();
    assert_eq!(
        r.breaker,
        vec![
            BreakerPhase::Open,
            BreakerPhase::HalfOpen,
            BreakerPhase::Closed
        ],
        "one trip, one probe, closed"
    );
    assert_eq!(
        r.rejections,
        vec![RejectReason::CircuitOpen; 2],
        "the two calls after the trip failed fast"
    );
    let outcomes: Vec<_> = r.requests.iter().map(|r| r.0).collect();
    assert_eq!(
        outcomes,
        [
            [RequestOutcome::ServerError; 3].as_slice(),
            &[RequestOutcome::Rejected; 2],
            &[RequestOutcome::Success]
        ]
        .concat()
    );
    assert_eq!(r.requests[3].1, 0, "a fast failure sent nothing");
    assert_eq!(server.stats.hits(), 4, "3 to trip, 1 probe");
}

#[tokio::test]
async fn deadline_cost_and_cooldown_rejections_carry_their_reason() {
    let server = serve(|_, path| {
        if path == "/away" {
            Reply::status(429).header("retry-after", 3600)
        } else {
            Reply::ok()
        }
    });
    let recorder = Recorder::default();
    let polite = Polite::builder()
        .limit(Limit::per_minute(2))
        .max_retry_after(Duration::from_secs(1))
        .observer(recorder.clone())
        .build();
    let client = client(&polite);
    let err = client
        .get(server.url("/"))
        .with_extension(Cost(3))
        .send()
        .await
        .expect_err("a cost of 3 never fits 2 a minute");
    assert!(matches!(
        polite_error(&err),
        Some(reqwest_polite::Error::CostExceedsLimit { .. })
    ));
    client
        .get(server.url("/"))
        .send()
        .await
        .expect("first slot");
    let err = client
        .get(server.url("/"))
        .with_extension(Deadline::after(Duration::from_millis(50)))
        .send()
        .await
        .expect_err("the next slot is 30 s away");
    assert!(matches!(
        polite_error(&err),
        Some(reqwest_polite::Error::DeadlineExceeded { .. })
    ));

    // another host (a port of its own) that asks for an hour's pause
    let away = serve(|_, _| Reply::status(429).header("retry-after", 3600));
    let polite = Polite::builder()
        .max_retry_after(Duration::from_secs(1))
        .observer(recorder.clone())
        .build();
    let client = common::client(&polite);
    let resp = client.get(away.url("/")).send().await.expect("answered");
    assert_eq!(
        resp.status(),
        429,
        "past max_retry_after: the answer comes back"
    );
    let err = client.get(away.url("/")).send().await.expect_err("cooling");
    assert!(matches!(
        polite_error(&err),
        Some(reqwest_polite::Error::CoolingDown { .. })
    ));

    let r = recorder.get();
    assert_eq!(
        r.rejections,
        vec![
            RejectReason::CostExceedsLimit,
            RejectReason::DeadlineExceeded,
            RejectReason::CoolingDown
        ]
    );
    assert_eq!(r.refusals, vec![(429, Some(Duration::from_secs(3600)))]);
    assert_eq!(
        away.stats.hits(),
        1,
        "the cooling host was not called again"
    );
}

#[tokio::test]
async fn no_event_carries_the_credential_a_request_is_partitioned_by() {
    const SECRET: &str = "sk-LIVE-0123456789abcdef";
    let calls = AtomicU64::new(0);
    let server = serve(move |_, _| {
        if calls.fetch_add(1, Ordering::SeqCst).is_multiple_of(3) {
            Reply::status(429)
        } else {
            Reply::ok()
        }
    });
    let recorder = Recorder::default();
    let polite = Polite::builder()
        .limit(Limit::per_second(50))
        .backoff(fast_backoff())
        .partition_by_header("authorization")
        .observer(recorder.clone())
        .build();
    let client = client(&polite);
    let calls = (0..6).map(|_| {
        client
            .get(server.url("/"))
            .header("authorization", format!("Bearer {SECRET}"))
            .send()
    });
    for result in futures::future::join_all(calls).await {
        assert_eq!(result.expect("answered").status(), 200);
    }

    let r = recorder.get();
    assert!(
        !r.refusals.is_empty() && !r.retries.is_empty() && !r.waits.is_empty(),
        "the run produced refusals, retries and waits to inspect"
    );
    for text in &r.debug {
        assert!(
            !text.contains(SECRET),
            "an event shows the credential: {text}"
        );
        assert!(
            !text.contains("Bearer"),
            "an event shows the header: {text}"
        );
    }
    let tag = polite.snapshot()[0].partition.clone().expect("partitioned");
    assert!(
        r.partitions.iter().all(|p| p.as_deref() == Some(&tag)),
        "every event carries the partition's tag ({tag}), as the snapshot does"
    );
}

#[tokio::test]
async fn several_observers_are_all_called() {
    let server = serve(|_, _| Reply::ok());
    let (first, second) = (Recorder::default(), Recorder::default());
    let polite = Polite::builder()
        .observer(first.clone())
        .observer(second.clone())
        .build();
    client(&polite)
        .get(server.url("/"))
        .send()
        .await
        .expect("answered");
    assert_eq!(first.get().requests.len(), 1);
    assert_eq!(second.get().requests.len(), 1);
}

/// Collects what a `tracing` subscriber sees: values recorded for the span field
/// `http.request.resend_count`, and the `reason` of every event that has one.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<(Vec<u64>, Vec<String>)>>);

struct Fields<'a> {
    resend: &'a mut Vec<u64>,
    reasons: &'a mut Vec<String>,
}

impl tracing::field::Visit for Fields<'_> {
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        if field.name() == "http.request.resend_count" {
            self.resend.push(value);
        }
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "reason" {
            self.reasons.push(value.to_string());
        }
    }
    fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_record(
        &self,
        _: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut seen = self.0.lock().expect("capture lock");
        let (resend, reasons) = &mut *seen;
        values.record(&mut Fields { resend, reasons });
    }
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut seen = self.0.lock().expect("capture lock");
        let (resend, reasons) = &mut *seen;
        event.record(&mut Fields { resend, reasons });
    }
}

#[tokio::test]
async fn resends_set_the_otel_resend_count_on_the_span_and_waits_say_why() {
    use tracing::Instrument;
    use tracing_subscriber::layer::SubscriberExt;

    let capture = Capture::default();
    let _default =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let calls = AtomicU64::new(0);
    let server = serve(move |_, _| match calls.fetch_add(1, Ordering::SeqCst) {
        1 => Reply::status(429),
        2 => Reply::status(503),
        _ => Reply::ok(),
    });
    let polite = Polite::builder()
        .limit(Limit::per_second(5))
        .backoff(fast_backoff())
        .build();
    let client = client(&polite);
    client.get(server.url("/")).send().await.expect("first");
    // the next request waits for its slot, then is refused, fails, and succeeds
    let span = tracing::info_span!("GET", http.request.resend_count = tracing::field::Empty);
    let resp = client
        .get(server.url("/"))
        .send()
        .instrument(span)
        .await
        .expect("answered");
    assert_eq!(resp.status(), 200);

    let seen = capture.0.lock().expect("capture lock");
    assert_eq!(seen.0, vec![1, 2], "the second and third attempts set it");
    assert_eq!(
        seen.1.first().map(String::as_str),
        Some("pacing"),
        "the first wait is for its pacing slot: {:?}",
        seen.1
    );
    assert_eq!(
        seen.1.iter().filter(|r| *r == "backoff").count(),
        2,
        "each retry sleep is an event with its reason: {:?}",
        seen.1
    );
}
