//! What one (scenario, client) run produced, seen from both ends of the wire.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::clients::Call;
use crate::server::Arrival;

/// The figures of one (scenario, client) run.
#[derive(Debug)]
pub struct Outcome {
    pub scenario: &'static str,
    pub client: &'static str,
    /// Calls the caller made.
    pub issued: usize,
    /// Calls that ended in a 2xx.
    pub ok: usize,
    /// Calls that ended in another status (429, 503 handed back to the caller).
    pub not_ok: usize,
    /// Calls that ended without a response (refused by a middleware, transport error, timeout).
    pub errors: usize,
    /// Error kinds and how often each happened.
    pub error_kinds: BTreeMap<String, usize>,
    /// Requests that reached the servers, retries included.
    pub reached: usize,
    /// 429s the servers sent.
    pub refused: usize,
    /// Scenario (d) only.
    pub outage: Option<OutageFigures>,
    /// From the first call's start to the last call's end.
    pub wall: Duration,
    pub p50: Duration,
    pub p99: Duration,
    /// When each request reached a server, since the first call started.
    pub arrivals: Vec<Duration>,
}

/// How a client behaved towards a host that was down, then healed.
#[derive(Debug, Clone, Copy)]
pub struct OutageFigures {
    /// Requests that reached the server while it was down.
    pub absorbed: usize,
    /// From healing to the end of the caller's first successful call; `None`: never succeeded.
    pub recovered_after: Option<Duration>,
}

impl Outcome {
    pub fn new(
        scenario: &'static str,
        client: &'static str,
        calls: &[Call],
        arrivals: &[Arrival],
    ) -> Outcome {
        let start = calls.iter().map(|c| c.started).min();
        let end = calls.iter().map(|c| c.finished).max();
        let mut error_kinds = BTreeMap::new();
        for call in calls {
            if let Err(kind) = &call.result {
                *error_kinds.entry(kind.clone()).or_default() += 1;
            }
        }
        let mut latencies: Vec<Duration> = calls.iter().map(|c| c.finished - c.started).collect();
        latencies.sort();
        let since_start =
            |t: Instant| start.map_or(Duration::ZERO, |s| t.saturating_duration_since(s));
        Outcome {
            scenario,
            client,
            issued: calls.len(),
            ok: calls
                .iter()
                .filter(|c| c.result.as_ref().is_ok_and(is_success))
                .count(),
            not_ok: calls
                .iter()
                .filter(|c| c.result.as_ref().is_ok_and(|s| !is_success(s)))
                .count(),
            errors: error_kinds.values().sum(),
            error_kinds,
            reached: arrivals.len(),
            refused: arrivals.iter().filter(|a| a.status == 429).count(),
            outage: None,
            wall: match (start, end) {
                (Some(start), Some(end)) => end - start,
                _ => Duration::ZERO,
            },
            p50: percentile(&latencies, 50),
            p99: percentile(&latencies, 99),
            arrivals: arrivals.iter().map(|a| since_start(a.at)).collect(),
        }
    }

    /// Add the outage figures for a server that healed at `heals_at`.
    pub fn with_outage(mut self, heals_at: Instant, calls: &[Call], arrivals: &[Arrival]) -> Self {
        let recovered = calls
            .iter()
            .filter(|c| c.finished >= heals_at && c.result.as_ref().is_ok_and(is_success))
            .map(|c| c.finished - heals_at)
            .min();
        self.outage = Some(OutageFigures {
            absorbed: arrivals.iter().filter(|a| a.at < heals_at).count(),
            recovered_after: recovered,
        });
        self
    }
}

fn is_success(status: &u16) -> bool {
    (200..300).contains(status)
}

/// The nearest-rank percentile of sorted values.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank - 1]
}
