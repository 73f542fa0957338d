//! Feature `metrics`: what the middleware does, as counters, a histogram and a gauge on the
//! [`metrics`] facade, so any exporter the program installs (Prometheus, StatsD, ...) reports
//! them. It is one [`Observer`]: the same events users can hook, counted.
//!
//! | name | kind | labels | counts |
//! |---|---|---|---|
//! | `reqwest_polite_requests_total` | counter | `host`, `outcome` | requests finished, by [`RequestOutcome`](crate::RequestOutcome) |
//! | `reqwest_polite_retries_total` | counter | `host` | retries planned |
//! | `reqwest_polite_throttled_total` | counter | `host` | rate-limit refusals (429, rate-limit 403) |
//! | `reqwest_polite_rejected_total` | counter | `host`, `reason` | attempts not sent (a first attempt: the request fails; a retry: the last outcome is returned), by [`RejectReason`](crate::RejectReason) |
//! | `reqwest_polite_wait_seconds` | histogram | `host` | each wait before an attempt, in seconds |
//! | `reqwest_polite_breaker_open` | gauge | `host` | 1 from the breaker opening until it closes (half-open included), then 0 |
//!
//! Label cardinality is bounded by the hosts a program calls, and by
//! [`HostLabel`]: `Drop` leaves the host out, `Map` folds hosts into names of your choosing.
//! Values are written on events only, so a host no longer called stops reporting (give the
//! exporter an idle timeout to drop its series; the breaker gauge keeps its last value until
//! then).

use std::sync::Arc;

use ::metrics::{Label, SharedString, counter, gauge, histogram};

use crate::observe::{
    BreakerEvent, Observer, RefusalEvent, RejectedEvent, RequestEvent, RetryEvent, WaitEvent,
};
use crate::snapshot::BreakerPhase;

/// What the `host` label of the metrics holds (feature `metrics`); set with
/// [`PoliteBuilder::metrics_host_label`](crate::PoliteBuilder::metrics_host_label).
///
/// ```
/// use reqwest_polite::{HostLabel, Polite};
///
/// // one series per API, whatever host of it was called; everything else under "other"
/// fn api(host: &str) -> Option<String> {
///     host.ends_with(".github.com").then(|| "github".to_string())
/// }
/// let polite = Polite::builder().metrics_host_label(HostLabel::Map(api)).build();
/// # let _ = polite;
/// ```
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub enum HostLabel {
    /// The host key, `scheme://host:port` (the default): one series per host called.
    #[default]
    Full,
    /// No `host` label: one series for all hosts.
    Drop,
    /// The function's answer for the host key; `None` puts the host under `other`.
    Map(fn(&str) -> Option<String>),
}

/// Counts the events into the `metrics` facade.
pub(crate) struct MetricsObserver {
    host_label: HostLabel,
}

impl MetricsObserver {
    pub(crate) fn new(host_label: HostLabel) -> Self {
        MetricsObserver { host_label }
    }

    /// The labels of a host's series: `host` (unless dropped) and `extra`.
    fn labels(&self, key: &Arc<str>, extra: Option<(&'static str, &'static str)>) -> Vec<Label> {
        let mut labels = Vec::with_capacity(2);
        let host: Option<SharedString> = match self.host_label {
            HostLabel::Full => Some(SharedString::from(Arc::clone(key))), // no copy
            HostLabel::Drop => None,
            HostLabel::Map(map) => Some(map(key).unwrap_or_else(|| "other".to_string()).into()),
        };
        if let Some(host) = host {
            labels.push(Label::new("host", host));
        }
        if let Some((name, value)) = extra {
            labels.push(Label::from_static_parts(name, value));
        }
        labels
    }
}

impl Observer for MetricsObserver {
    fn on_wait(&self, event: &WaitEvent<'_>) {
        histogram!("reqwest_polite_wait_seconds", self.labels(event.host, None))
            .record(event.waited.as_secs_f64());
    }

    fn on_retry(&self, event: &RetryEvent<'_>) {
        counter!(
            "reqwest_polite_retries_total",
            self.labels(event.host, None)
        )
        .increment(1);
    }

    fn on_refusal(&self, event: &RefusalEvent<'_>) {
        counter!(
            "reqwest_polite_throttled_total",
            self.labels(event.host, None)
        )
        .increment(1);
    }

    fn on_rejected(&self, event: &RejectedEvent<'_>) {
        let reason = Some(("reason", event.reason.as_str()));
        counter!(
            "reqwest_polite_rejected_total",
            self.labels(event.host, reason)
        )
        .increment(1);
    }

    fn on_breaker(&self, event: &BreakerEvent<'_>) {
        let open = match event.phase {
            BreakerPhase::Closed => 0.0,
            BreakerPhase::Open | BreakerPhase::HalfOpen => 1.0,
        };
        gauge!("reqwest_polite_breaker_open", self.labels(event.host, None)).set(open);
    }

    fn on_request(&self, event: &RequestEvent<'_>) {
        let outcome = Some(("outcome", event.outcome.as_str()));
        counter!(
            "reqwest_polite_requests_total",
            self.labels(event.host, outcome)
        )
        .increment(1);
    }
}
