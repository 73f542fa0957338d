//! reqwest-tracing's `TracingMiddleware` and ours on one client, following OpenTelemetry's
//! HTTP client conventions: one span per request (reqwest-tracing's, with the `http.*`,
//! `server.*` and `otel.*` fields), `http.request.resend_count` set on it by our retries, and
//! each wait ours imposes (pacing, cooldown, retry backoff) an event inside it with a
//! `reason` field, which an OpenTelemetry exporter turns into a span event.
//!
//! The span must declare `http.request.resend_count` when it is made (`tracing` cannot add a
//! field later), so this example gives reqwest-tracing a span backend that declares it. Order
//! matters: `TracingMiddleware` goes first (outside), so that our middleware runs inside its
//! span.
//!
//! Here the spans and events are printed by `tracing-subscriber`'s `fmt` layer; to export to
//! an OpenTelemetry collector, add `tracing-opentelemetry` and a reqwest-tracing
//! `opentelemetry_0_x` feature (that also propagates the trace context in the headers).
//!
//! Run: `cargo run --example otel_tracing`

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::Extensions;
use reqwest::{Request, Response};
use reqwest_polite::{Backoff, Limit, Polite};
use reqwest_tracing::{
    ReqwestOtelSpanBackend, TracingMiddleware, default_on_request_end, reqwest_otel_span,
};
use tracing::Span;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// reqwest-tracing's default span, plus the field our retries set.
struct WithResendCount;

impl ReqwestOtelSpanBackend for WithResendCount {
    fn on_request_start(req: &Request, _: &mut Extensions) -> Span {
        reqwest_otel_span!(
            name = "GET",
            req,
            http.request.resend_count = tracing::field::Empty
        )
    }

    fn on_request_end(
        span: &Span,
        outcome: &reqwest_middleware::Result<Response>,
        _: &mut Extensions,
    ) {
        default_on_request_end(span, outcome);
    }
}

#[tokio::main]
async fn main() {
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_target(false)
                .with_span_events(FmtSpan::CLOSE), // the span's fields as it ends
        )
        .with(
            Targets::new()
                .with_target("reqwest_polite", LevelFilter::TRACE)
                .with_target("reqwest_tracing", LevelFilter::INFO)
                .with_target("otel_tracing", LevelFilter::INFO),
        )
        .init();

    // answers 429, then 503, then 200
    let calls = AtomicU64::new(0);
    let server = common::serve(move |_, _| match calls.fetch_add(1, Ordering::SeqCst) {
        1 => common::Reply::status(429),
        2 => common::Reply::status(503),
        _ => common::Reply::ok(),
    });

    let polite = Polite::builder()
        .limit(Limit::per_second(5))
        .backoff(Backoff::exponential(
            Duration::from_millis(50),
            Duration::from_millis(500),
        ))
        .build();
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(TracingMiddleware::<WithResendCount>::new()) // first: its span wraps ours
        .with(polite)
        .build();

    for i in 1..=2 {
        let resp = client
            .get(server.url("/"))
            .send()
            .await
            .expect("the server answers");
        tracing::info!(request = i, status = %resp.status(), "done");
    }
}
