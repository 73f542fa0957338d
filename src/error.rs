//! The one error type of the crate.

use std::time::Duration;

/// Why the middleware refused to send a request.
///
/// Returned inside [`reqwest_middleware::Error::Middleware`]; get it back with [`Error::of`]:
///
/// ```
/// # fn inspect(err: reqwest_middleware::Error) {
/// match reqwest_polite::Error::of(&err) {
///     Some(refused) => match refused.retry_in() {
///         Some(wait) => eprintln!("{} refused; try again in {wait:?}", refused.host()),
///         None => eprintln!("not sent: {refused}"),
///     },
///     None => eprintln!("the request failed: {err}"),
/// }
/// # }
/// ```
///
/// Every variant means **nothing was sent** for the attempt it describes: the caller may act on
/// it (wait `retry_in`, give up, try another host) without fearing a duplicate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The host's circuit breaker is open: it failed recently and is being left alone.
    #[error("circuit open for {host}: not calling it for another {retry_in:?}")]
    CircuitOpen {
        /// The host key (`scheme://host:port`).
        host: String,
        /// How long until the breaker lets a probe through.
        retry_in: Duration,
    },
    /// The server's word holds the host back for longer than `max_retry_after` (a
    /// `Retry-After`, a spent quota until its reset, a low quota spread over its reset, a rate
    /// lowered after refusals), and that time has not passed yet.
    #[error("{host} asked us to wait; it reopens in {retry_in:?}")]
    CoolingDown {
        /// The host key (`scheme://host:port`).
        host: String,
        /// How long until the server's `Retry-After` (or rate-limit reset) passes.
        retry_in: Duration,
    },
    /// Waiting for a slot (or for the next retry) would pass the request's [`Deadline`].
    ///
    /// [`Deadline`]: crate::Deadline
    #[error(
        "deadline would pass before {host} could be called (after {attempts} attempts){}",
        would_wait_text(*.would_wait)
    )]
    DeadlineExceeded {
        /// The host key (`scheme://host:port`).
        host: String,
        /// Attempts already sent for this request (0: none was sent).
        attempts: u32,
        /// How long the request would have had to wait for its slot, when known. A request is
        /// refused before its deadline only when that wait is certain (the configured limit's
        /// schedule, a server's cooldown); otherwise it waits until the deadline itself.
        would_wait: Option<Duration>,
    },
    /// The shared store (Redis, feature `redis`) did not answer and its fallback is
    /// `FailClosed`: nothing is sent that the fleet's schedule did not admit.
    #[error("the shared quota store is unavailable for {host}: {reason}")]
    StoreUnavailable {
        /// The host key (`scheme://host:port`).
        host: String,
        /// What the store said.
        reason: String,
    },
    /// The request's [`Cost`] is larger than the whole quota of its host's [`Limit`]: it could
    /// never be sent without breaking the limit's promise.
    ///
    /// [`Cost`]: crate::Cost
    /// [`Limit`]: crate::Limit
    #[error("request cost {cost} exceeds {host}'s limit of {limit} per window")]
    CostExceedsLimit {
        /// The host key (`scheme://host:port`).
        host: String,
        /// The request's cost.
        cost: u32,
        /// The limit's count per window.
        limit: u32,
    },
}

impl Error {
    /// Our error inside a [`reqwest_middleware::Error`], if the middleware refused the request;
    /// `None` for a transport error or another middleware's error.
    ///
    /// One call instead of matching `Error::Middleware` and downcasting the `anyhow::Error`
    /// inside; it also finds our error when another middleware wrapped it as a source.
    ///
    /// ```
    /// use std::time::Duration;
    /// use reqwest_polite::Error;
    ///
    /// let err: reqwest_middleware::Error = Error::CoolingDown {
    ///     host: "https://api.example.com".to_string(),
    ///     retry_in: Duration::from_secs(30),
    /// }
    /// .into();
    ///
    /// let refused = Error::of(&err).expect("the middleware refused it");
    /// assert_eq!(refused.host(), "https://api.example.com");
    /// assert_eq!(refused.retry_in(), Some(Duration::from_secs(30)));
    /// ```
    pub fn of(err: &reqwest_middleware::Error) -> Option<&Error> {
        match err {
            reqwest_middleware::Error::Middleware(inner) => inner
                .chain()
                .find_map(|cause| cause.downcast_ref::<Error>()),
            reqwest_middleware::Error::Reqwest(_) => None,
        }
    }

    /// The host key the error is about.
    pub fn host(&self) -> &str {
        match self {
            Error::CircuitOpen { host, .. }
            | Error::CoolingDown { host, .. }
            | Error::DeadlineExceeded { host, .. }
            | Error::StoreUnavailable { host, .. }
            | Error::CostExceedsLimit { host, .. } => host,
        }
    }

    /// How long until trying again could succeed, when the error knows.
    pub fn retry_in(&self) -> Option<Duration> {
        match self {
            Error::CircuitOpen { retry_in, .. } | Error::CoolingDown { retry_in, .. } => {
                Some(*retry_in)
            }
            _ => None,
        }
    }
}

fn would_wait_text(would_wait: Option<Duration>) -> String {
    would_wait.map_or_else(String::new, |w| format!(": it would wait another {w:?}"))
}

impl From<Error> for reqwest_middleware::Error {
    fn from(err: Error) -> Self {
        reqwest_middleware::Error::middleware(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn circuit_open() -> Error {
        Error::CircuitOpen {
            host: "http://127.0.0.1:9".to_string(),
            retry_in: Duration::from_secs(5),
        }
    }

    #[test]
    fn of_finds_our_error_inside_a_middleware_error() {
        let err = reqwest_middleware::Error::from(circuit_open());
        assert_eq!(Error::of(&err), Some(&circuit_open()));
    }

    #[test]
    fn of_finds_our_error_wrapped_by_another_middleware() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer middleware gave up")]
        struct Outer(#[source] Error);

        let err = reqwest_middleware::Error::middleware(Outer(circuit_open()));
        assert_eq!(
            Error::of(&err),
            Some(&circuit_open()),
            "our error is the source of the outer one"
        );
    }

    #[test]
    fn of_is_none_for_another_middleware_error() {
        let err = reqwest_middleware::Error::middleware(std::fmt::Error);
        assert_eq!(Error::of(&err), None);
    }
}
