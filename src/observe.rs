//! Hooks for users: an [`Observer`] is told of every wait, retry, refusal, rejection, breaker
//! transition and finished request, with the host (and scope) each is about.
//!
//! Why a trait and not only `tracing`: counting and alerting code wants typed values (a
//! `Duration`, a `StatusCode`, which breaker opened) rather than parsing log fields, and the
//! `metrics` feature is itself one observer, so both go through one path. An unused hook
//! costs one `Option` check per decision: no event is built when nobody listens.
//!
//! Events carry the host key (`scheme://host:port`, never user info) and, for requests
//! partitioned with [`partition_by_header`](crate::PoliteBuilder::partition_by_header), the
//! partition's [tag](PartitionTag): never the credential.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use reqwest::Response;

use crate::breaker::Transition;
use crate::error::Error;
use crate::host::Host;
use crate::partition::Partition;
use crate::snapshot::BreakerPhase;

/// Told of what the middleware does, as it does it. Every method has a default that does
/// nothing: implement the ones you need.
///
/// Methods are called on the request's own task, after the middleware released its locks;
/// keep them quick and never block (hand the event to a channel for slow work).
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
/// use reqwest_polite::{Observer, Polite, RefusalEvent, RetryEvent};
///
/// #[derive(Default)]
/// struct Counts {
///     retries: AtomicU64,
///     refusals: AtomicU64,
/// }
///
/// struct Count(Arc<Counts>);
///
/// impl Observer for Count {
///     fn on_retry(&self, event: &RetryEvent<'_>) {
///         self.0.retries.fetch_add(1, Ordering::Relaxed);
///         eprintln!("retrying {} in {:?}", event.host, event.delay);
///     }
///     fn on_refusal(&self, _: &RefusalEvent<'_>) {
///         self.0.refusals.fetch_add(1, Ordering::Relaxed);
///     }
/// }
///
/// let counts = Arc::new(Counts::default());
/// let polite = Polite::builder().observer(Count(Arc::clone(&counts))).build();
/// # let _ = polite;
/// assert_eq!(counts.retries.load(Ordering::Relaxed), 0);
/// ```
pub trait Observer: Send + Sync + 'static {
    /// An attempt was held back before it went: by the pacing schedule, a server's closure, a
    /// slowed rate, first contact, the in-flight cap, or the backoff before a retry. Called
    /// when the wait is over (a wait that ends in a rejection is reported by
    /// [`on_rejected`](Self::on_rejected) instead; a cancelled one by nothing).
    fn on_wait(&self, event: &WaitEvent<'_>) {
        let _ = event;
    }

    /// An attempt failed in a way that may be retried, and the retry is planned: it goes
    /// after `delay` (and whatever pacing then asks).
    fn on_retry(&self, event: &RetryEvent<'_>) {
        let _ = event;
    }

    /// The server refused an attempt for its rate limit: a 429, or a 403 that says it is a
    /// rate limit (`Retry-After`, or nothing remaining).
    fn on_refusal(&self, event: &RefusalEvent<'_>) {
        let _ = event;
    }

    /// The middleware refused to send an attempt: circuit open, cooling down, deadline, cost,
    /// shared store unavailable. Nothing was sent for that attempt. A first attempt refused
    /// fails the request with `event.error`; a retry refused (`resend_count` above 0) ends it
    /// with the outcome of the attempt before, as when retries run out. (A request whose partition key cannot be had from the shared store fails
    /// before it has a host record, and is reported to no observer.)
    fn on_rejected(&self, event: &RejectedEvent<'_>) {
        let _ = event;
    }

    /// A host's circuit breaker changed phase.
    fn on_breaker(&self, event: &BreakerEvent<'_>) {
        let _ = event;
    }

    /// A request handed to the middleware is over: its response or error goes back to the
    /// caller now.
    fn on_request(&self, event: &RequestEvent<'_>) {
        let _ = event;
    }
}

/// The partition a request belongs to when requests are partitioned by a credential header:
/// a tag of the credential's keyed hash (`p1a2b3c4d`), the same the snapshots show. It cannot
/// be turned back into the credential, and means nothing outside this process.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PartitionTag(Partition);

impl fmt::Display for PartitionTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for PartitionTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PartitionTag({})", self.0)
    }
}

/// What held an attempt back, in a [`WaitEvent`] (and the `reason` field of the `tracing`
/// events for waits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WaitReason {
    /// A configured limit's schedule, or the queue of requests ahead for it.
    Pacing,
    /// The server closed the host or scope: `Retry-After`, a spent quota, or a pause after
    /// refusals in a row.
    Cooldown,
    /// The server's word slowed the rate: a low remaining quota spread over its reset, or the
    /// rate lowered after a refusal.
    Slowed,
    /// First contact with a host whose quota we do not know yet: held until the first answer
    /// says it.
    FirstContact,
    /// The host's [`max_in_flight`](crate::PoliteBuilder::max_in_flight) cap.
    InFlight,
    /// The backoff before a retry.
    Backoff,
}

impl WaitReason {
    /// The reason as a short snake_case word: `pacing`, `cooldown`, `slowed`,
    /// `first_contact`, `in_flight`, `backoff`.
    pub fn as_str(&self) -> &'static str {
        match self {
            WaitReason::Pacing => "pacing",
            WaitReason::Cooldown => "cooldown",
            WaitReason::Slowed => "slowed",
            WaitReason::FirstContact => "first_contact",
            WaitReason::InFlight => "in_flight",
            WaitReason::Backoff => "backoff",
        }
    }
}

impl fmt::Display for WaitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An attempt waited before it went ([`Observer::on_wait`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WaitEvent<'a> {
    /// The host key, `scheme://host:port` (shared: keeping a clone copies nothing).
    pub host: &'a Arc<str>,
    /// The request's partition, when requests are partitioned by a credential header.
    pub partition: Option<PartitionTag>,
    /// The scope that held it last, when it was not the host record itself: a host-wide,
    /// route, unit or server-named quota (`api.github.com /search/`).
    pub scope: Option<&'a str>,
    /// What held it last (a request queued behind others for the schedule reads `Pacing`).
    pub reason: WaitReason,
    /// How long it waited, measured.
    pub waited: Duration,
    /// Attempts sent before this one for the same request (0: the first attempt).
    pub resend_count: u32,
}

/// A retry is planned ([`Observer::on_retry`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RetryEvent<'a> {
    /// The host key, `scheme://host:port` (shared: keeping a clone copies nothing).
    pub host: &'a Arc<str>,
    /// The request's partition, when requests are partitioned by a credential header.
    pub partition: Option<PartitionTag>,
    /// The status of the failed attempt; `None` when no response came (connect error,
    /// timeout, reset).
    pub status: Option<StatusCode>,
    /// The retry's number: 1 for the first retry (OpenTelemetry's `http.request.resend_count`
    /// of the attempt to come).
    pub resend_count: u32,
    /// The backoff before it (pacing may add to it: a server's `Retry-After` is waited out
    /// as a [`WaitReason::Cooldown`]).
    pub delay: Duration,
}

/// The server refused an attempt for its rate limit ([`Observer::on_refusal`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RefusalEvent<'a> {
    /// The host key, `scheme://host:port` (shared: keeping a clone copies nothing).
    pub host: &'a Arc<str>,
    /// The request's partition, when requests are partitioned by a credential header.
    pub partition: Option<PartitionTag>,
    /// The quota the server named for it, if it named one (GitHub's resource, Discord's
    /// bucket).
    pub scope: Option<&'a str>,
    /// 429, or 403.
    pub status: StatusCode,
    /// The server's `Retry-After` (or equivalent), if it sent one.
    pub retry_after: Option<Duration>,
    /// Attempts sent before this one for the same request (0: the first attempt).
    pub resend_count: u32,
}

/// Why the middleware refused to send, in a [`RejectedEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// [`Error::CircuitOpen`].
    CircuitOpen,
    /// [`Error::CoolingDown`].
    CoolingDown,
    /// [`Error::DeadlineExceeded`].
    DeadlineExceeded,
    /// [`Error::CostExceedsLimit`].
    CostExceedsLimit,
    /// [`Error::StoreUnavailable`].
    StoreUnavailable,
}

impl RejectReason {
    /// The reason for an error of ours.
    pub fn of(error: &Error) -> Self {
        match error {
            Error::CircuitOpen { .. } => RejectReason::CircuitOpen,
            Error::CoolingDown { .. } => RejectReason::CoolingDown,
            Error::DeadlineExceeded { .. } => RejectReason::DeadlineExceeded,
            Error::CostExceedsLimit { .. } => RejectReason::CostExceedsLimit,
            Error::StoreUnavailable { .. } => RejectReason::StoreUnavailable,
        }
    }

    /// The reason as a short snake_case word: `circuit_open`, `cooling_down`,
    /// `deadline_exceeded`, `cost_exceeds_limit`, `store_unavailable`.
    pub fn as_str(&self) -> &'static str {
        match self {
            RejectReason::CircuitOpen => "circuit_open",
            RejectReason::CoolingDown => "cooling_down",
            RejectReason::DeadlineExceeded => "deadline_exceeded",
            RejectReason::CostExceedsLimit => "cost_exceeds_limit",
            RejectReason::StoreUnavailable => "store_unavailable",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The middleware refused to send ([`Observer::on_rejected`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RejectedEvent<'a> {
    /// The host key, `scheme://host:port` (shared: keeping a clone copies nothing).
    pub host: &'a Arc<str>,
    /// The request's partition, when requests are partitioned by a credential header.
    pub partition: Option<PartitionTag>,
    /// Why.
    pub reason: RejectReason,
    /// The error the request fails with (its `host` is a scope's name when a scope refused
    /// the cost).
    pub error: &'a Error,
    /// Attempts sent before the refusal for the same request (0: none).
    pub resend_count: u32,
}

/// A host's circuit breaker changed phase ([`Observer::on_breaker`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BreakerEvent<'a> {
    /// The host key, `scheme://host:port` (shared: keeping a clone copies nothing).
    pub host: &'a Arc<str>,
    /// The request's partition, when requests are partitioned by a credential header.
    pub partition: Option<PartitionTag>,
    /// The phase it is in now.
    pub phase: BreakerPhase,
    /// Opened: the failure count that tripped it.
    pub failures: Option<u32>,
    /// Opened: how long it stays open before probing.
    pub open_for: Option<Duration>,
}

/// How a request ended, in a [`RequestEvent`] (and the `outcome` label of
/// `reqwest_polite_requests_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RequestOutcome {
    /// A response that is not an error (1xx to 3xx).
    Success,
    /// The last answer was a rate-limit refusal (429, or a rate-limit 403).
    Refused,
    /// Another 4xx.
    ClientError,
    /// A 5xx.
    ServerError,
    /// No response: connect error, timeout, reset, once retries ran out.
    TransportError,
    /// The middleware refused to send (see [`RejectReason`]).
    Rejected,
    /// Another middleware (inside this one) failed.
    MiddlewareError,
}

impl RequestOutcome {
    /// The outcome as a short snake_case word: `success`, `refused`, `client_error`,
    /// `server_error`, `transport_error`, `rejected`, `middleware_error`.
    pub fn as_str(&self) -> &'static str {
        match self {
            RequestOutcome::Success => "success",
            RequestOutcome::Refused => "refused",
            RequestOutcome::ClientError => "client_error",
            RequestOutcome::ServerError => "server_error",
            RequestOutcome::TransportError => "transport_error",
            RequestOutcome::Rejected => "rejected",
            RequestOutcome::MiddlewareError => "middleware_error",
        }
    }
}

impl fmt::Display for RequestOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request is over ([`Observer::on_request`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RequestEvent<'a> {
    /// The host key, `scheme://host:port` (shared: keeping a clone copies nothing).
    pub host: &'a Arc<str>,
    /// The request's partition, when requests are partitioned by a credential header.
    pub partition: Option<PartitionTag>,
    /// How it ended.
    pub outcome: RequestOutcome,
    /// The status of the response handed back, if one is.
    pub status: Option<StatusCode>,
    /// Attempts sent to the network for it (0: rejected before any).
    pub attempts: u32,
    /// From the middleware receiving it to handing back its outcome, waits included.
    pub elapsed: Duration,
}

/// The observers a [`Polite`](crate::Polite) calls: empty unless the builder added one (or
/// the `metrics` feature is on).
#[derive(Clone, Default)]
pub(crate) struct Observers {
    added: Vec<Arc<dyn Observer>>,
    /// What the middleware calls, set by [`Observers::resolve`] when the builder builds.
    active: Option<Arc<dyn Observer>>,
}

impl fmt::Debug for Observers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observers")
            .field("added", &self.added.len())
            .finish_non_exhaustive()
    }
}

impl Observers {
    pub(crate) fn add(&mut self, observer: Arc<dyn Observer>) {
        self.added.push(observer);
    }

    /// Fix what the middleware calls: `first` (the metrics observer, with feature
    /// `metrics`), then the added ones in order; one directly, several through a fan-out.
    pub(crate) fn resolve(&mut self, first: Option<Arc<dyn Observer>>) {
        let mut all: Vec<Arc<dyn Observer>> = first.into_iter().collect();
        all.extend(self.added.iter().cloned());
        self.active = match all.len() {
            0 => None,
            1 => all.pop(),
            _ => Some(Arc::new(FanOut(all))),
        };
    }

    /// The observer to call, if any.
    #[inline]
    pub(crate) fn get(&self) -> Option<&dyn Observer> {
        self.active.as_deref()
    }
}

/// Several observers, called in order.
struct FanOut(Vec<Arc<dyn Observer>>);

impl Observer for FanOut {
    fn on_wait(&self, event: &WaitEvent<'_>) {
        self.0.iter().for_each(|o| o.on_wait(event));
    }
    fn on_retry(&self, event: &RetryEvent<'_>) {
        self.0.iter().for_each(|o| o.on_retry(event));
    }
    fn on_refusal(&self, event: &RefusalEvent<'_>) {
        self.0.iter().for_each(|o| o.on_refusal(event));
    }
    fn on_rejected(&self, event: &RejectedEvent<'_>) {
        self.0.iter().for_each(|o| o.on_rejected(event));
    }
    fn on_breaker(&self, event: &BreakerEvent<'_>) {
        self.0.iter().for_each(|o| o.on_breaker(event));
    }
    fn on_request(&self, event: &RequestEvent<'_>) {
        self.0.iter().for_each(|o| o.on_request(event));
    }
}

fn tag(host: &Host) -> Option<PartitionTag> {
    host.record.partition.map(PartitionTag)
}

// The reports the middleware makes: each builds one event and calls the observer.

pub(crate) fn waited(
    observer: &dyn Observer,
    host: &Host,
    scope: Option<&str>,
    reason: WaitReason,
    waited: Duration,
    resend_count: u32,
) {
    observer.on_wait(&WaitEvent {
        host: &host.record.key,
        partition: tag(host),
        scope,
        reason,
        waited,
        resend_count,
    });
}

pub(crate) fn retrying(
    observer: &dyn Observer,
    host: &Host,
    result: &reqwest_middleware::Result<Response>,
    resend_count: u32,
    delay: Duration,
) {
    observer.on_retry(&RetryEvent {
        host: &host.record.key,
        partition: tag(host),
        status: result.as_ref().ok().map(Response::status),
        resend_count,
        delay,
    });
}

pub(crate) fn refused(
    observer: &dyn Observer,
    host: &Host,
    scope: Option<&str>,
    status: StatusCode,
    retry_after: Option<Duration>,
    resend_count: u32,
) {
    observer.on_refusal(&RefusalEvent {
        host: &host.record.key,
        partition: tag(host),
        scope,
        status,
        retry_after,
        resend_count,
    });
}

pub(crate) fn breaker(observer: &dyn Observer, host: &Host, transition: Transition) {
    let (phase, failures, open_for) = match transition {
        Transition::Opened { failures, open_for } => {
            (BreakerPhase::Open, Some(failures), Some(open_for))
        }
        Transition::HalfOpened => (BreakerPhase::HalfOpen, None, None),
        Transition::Closed => (BreakerPhase::Closed, None, None),
    };
    observer.on_breaker(&BreakerEvent {
        host: &host.record.key,
        partition: tag(host),
        phase,
        failures,
        open_for,
    });
}

/// The end of a request: a rejection if the middleware refused to send, then its outcome.
pub(crate) fn rejected(observer: &dyn Observer, host: &Host, error: &Error, resend_count: u32) {
    observer.on_rejected(&RejectedEvent {
        host: &host.record.key,
        partition: tag(host),
        reason: RejectReason::of(error),
        error,
        resend_count,
    });
}

pub(crate) fn finished(
    observer: &dyn Observer,
    host: &Host,
    sent: &Result<reqwest_middleware::Result<Response>, Error>,
    attempts: u32,
    elapsed: Duration,
) {
    let (outcome, status) = match sent {
        Err(_) => (RequestOutcome::Rejected, None),
        Ok(Err(reqwest_middleware::Error::Reqwest(_))) => (RequestOutcome::TransportError, None),
        Ok(Err(reqwest_middleware::Error::Middleware(_))) => {
            (RequestOutcome::MiddlewareError, None)
        }
        Ok(Ok(resp)) => {
            let status = resp.status();
            let outcome = if status == StatusCode::TOO_MANY_REQUESTS
                || (status == StatusCode::FORBIDDEN
                    && crate::signals::is_refusal(
                        status,
                        &crate::signals::ServerHint::read(resp.headers()),
                    )) {
                RequestOutcome::Refused
            } else if status.is_server_error() {
                RequestOutcome::ServerError
            } else if status.is_client_error() {
                RequestOutcome::ClientError
            } else {
                RequestOutcome::Success
            };
            (outcome, Some(status))
        }
    };
    observer.on_request(&RequestEvent {
        host: &host.record.key,
        partition: tag(host),
        outcome,
        status,
        attempts,
        elapsed,
    });
}

/// Set OpenTelemetry's `http.request.resend_count` on the current span before a resend. It
/// takes only where the span declared the field (tracing cannot add fields later): see the
/// README's Observability section, and `examples/otel_tracing.rs`.
pub(crate) fn record_resend(resend_count: u32) {
    tracing::Span::current().record("http.request.resend_count", resend_count);
}
