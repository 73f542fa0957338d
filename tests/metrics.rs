//! Feature `metrics`: the names, labels and values the middleware reports through the
//! `metrics` facade, read back with `metrics-util`'s debugging recorder against loopback
//! servers.
//!
//! One test, in phases: the recorder is global to the process, and each snapshot resets what
//! it read, so parallel tests would read each other's values.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{Reply, burst, client, serve};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use reqwest_polite::{Backoff, Breaker, HostLabel, Jitter, Limit, Polite};

/// One series: its name and labels (`name{k=v,...}`, labels sorted), and its value.
type Series = BTreeMap<String, DebugValue>;

/// The series written since the last read (a snapshot resets each value it reads, and keeps
/// listing the series at zero after).
fn read(snapshotter: &Snapshotter) -> Series {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(_, _, _, value)| match value {
            DebugValue::Counter(n) => *n > 0,
            DebugValue::Gauge(g) => g.0 != 0.0,
            DebugValue::Histogram(values) => !values.is_empty(),
        })
        .map(|(key, _, _, value)| {
            let mut labels: Vec<String> = key
                .key()
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            (
                format!("{}{{{}}}", key.key().name(), labels.join(",")),
                value,
            )
        })
        .collect()
}

fn counter(series: &Series, name: &str) -> u64 {
    match series.get(name) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("{name}: expected a counter, got {other:?} in {series:#?}"),
    }
}

fn fast_backoff() -> Backoff {
    Backoff::exponential(Duration::from_millis(5), Duration::from_millis(20)).jitter(Jitter::None)
}

#[tokio::test]
async fn every_metric_is_reported_with_bounded_labels_and_no_credential() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test binary");
    let mut every_label = String::new();

    // Full host labels: pacing waits, a refusal and its retry
    let calls = AtomicU64::new(0);
    let server = serve(move |_, path| {
        if path == "/refuse-once" && calls.fetch_add(1, Ordering::SeqCst) == 0 {
            Reply::status(429)
        } else {
            Reply::ok()
        }
    });
    let host = format!("http://{}", server.addr);
    let polite = Polite::builder()
        .limit(Limit::per_second(20))
        .backoff(fast_backoff())
        .build();
    let client_a = client(&polite);
    let results = burst(&client_a, &server.url("/"), 5).await;
    assert!(results.iter().all(|r| r == &Ok(200)), "{results:?}");
    let resp = client_a
        .get(server.url("/refuse-once"))
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), 200);

    let series = read(&snapshotter);
    every_label.push_str(&format!("{series:?}"));
    assert_eq!(
        counter(
            &series,
            &format!("reqwest_polite_requests_total{{host={host},outcome=success}}")
        ),
        6,
        "six requests succeeded"
    );
    assert_eq!(
        counter(
            &series,
            &format!("reqwest_polite_throttled_total{{host={host}}}")
        ),
        1
    );
    assert_eq!(
        counter(
            &series,
            &format!("reqwest_polite_retries_total{{host={host}}}")
        ),
        1
    );
    match series.get(&format!("reqwest_polite_wait_seconds{{host={host}}}")) {
        Some(DebugValue::Histogram(waits)) => {
            assert!(
                waits.len() >= 5,
                "four paced waits and one backoff at least: {waits:?}"
            );
            assert!(waits.iter().all(|w| w.0 > 0.0), "{waits:?}");
        }
        other => panic!("wait_seconds: expected a histogram, got {other:?}"),
    }

    // an outage: the breaker gauge and rejections by reason
    let down = serve(|_, _| Reply::status(503));
    let down_host = format!("http://{}", down.addr);
    let polite = Polite::builder()
        .max_retries(0)
        .breaker(Breaker::consecutive_failures(2).open_for(Duration::from_secs(60)))
        .build();
    let client_b = client(&polite);
    for _ in 0..3 {
        let _ = client_b.get(down.url("/")).send().await;
    }
    let series = read(&snapshotter);
    every_label.push_str(&format!("{series:?}"));
    assert_eq!(
        counter(
            &series,
            &format!("reqwest_polite_requests_total{{host={down_host},outcome=server_error}}")
        ),
        2
    );
    assert_eq!(
        counter(
            &series,
            &format!("reqwest_polite_requests_total{{host={down_host},outcome=rejected}}")
        ),
        1
    );
    assert_eq!(
        counter(
            &series,
            &format!("reqwest_polite_rejected_total{{host={down_host},reason=circuit_open}}")
        ),
        1
    );
    match series.get(&format!("reqwest_polite_breaker_open{{host={down_host}}}")) {
        Some(DebugValue::Gauge(open)) => assert_eq!(open.0, 1.0, "the breaker is open"),
        other => panic!("breaker_open: expected a gauge, got {other:?}"),
    }

    // HostLabel::Drop: one series for every host
    let polite = Polite::builder()
        .metrics_host_label(HostLabel::Drop)
        .build();
    let client_c = client(&polite);
    for server in [&server, &down] {
        let _ = client_c.get(server.url("/")).send().await;
    }
    let series = read(&snapshotter);
    every_label.push_str(&format!("{series:?}"));
    assert_eq!(
        counter(&series, "reqwest_polite_requests_total{outcome=success}"),
        1
    );
    assert_eq!(
        counter(
            &series,
            "reqwest_polite_requests_total{outcome=server_error}"
        ),
        1
    );
    assert!(
        series.keys().all(|k| !k.contains("host=")),
        "no host label: {series:#?}"
    );

    // HostLabel::Map: hosts folded into names of the user's choosing
    fn only_loopback(host: &str) -> Option<String> {
        host.starts_with("http://127.0.0.1:")
            .then(|| "loopback".to_string())
    }
    let polite = Polite::builder()
        .metrics_host_label(HostLabel::Map(only_loopback))
        .build();
    client(&polite)
        .get(server.url("/"))
        .send()
        .await
        .expect("answered");
    let series = read(&snapshotter);
    every_label.push_str(&format!("{series:?}"));
    assert_eq!(
        counter(
            &series,
            "reqwest_polite_requests_total{host=loopback,outcome=success}"
        ),
        1
    );

    // a credential the requests are partitioned by: in no name or label
    const SECRET: &str = "sk-LIVE-0123456789abcdef";
    let refused = AtomicU64::new(0);
    let strict = serve(move |_, _| {
        if refused.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
            Reply::status(429)
        } else {
            Reply::ok()
        }
    });
    let polite = Polite::builder()
        .partition_by_header("authorization")
        .limit(Limit::per_second(50))
        .backoff(fast_backoff())
        .build();
    let client_d = client(&polite);
    for _ in 0..3 {
        let resp = client_d
            .get(strict.url("/"))
            .header("authorization", format!("Bearer {SECRET}"))
            .send()
            .await
            .expect("answered");
        assert_eq!(resp.status(), 200);
    }
    let series = read(&snapshotter);
    every_label.push_str(&format!("{series:?}"));
    let strict_host = format!("http://{}", strict.addr);
    assert_eq!(
        counter(
            &series,
            &format!("reqwest_polite_throttled_total{{host={strict_host}}}")
        ),
        3,
        "each request was refused once"
    );
    assert!(
        !every_label.contains(SECRET) && !every_label.contains("Bearer"),
        "a metric name or label shows the credential: {every_label}"
    );
}
