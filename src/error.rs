//! The one error type of the crate.

use std::time::Duration;

/// Why the middleware refused to send a request.
///
/// Returned inside [`reqwest_middleware::Error::Middleware`]; get it back with
/// `downcast_ref`:
///
/// ```
/// # fn inspect(err: reqwest_middleware::Error) {
/// if let reqwest_middleware::Error::Middleware(inner) = &err {
///     match inner.downcast_ref::<reqwest_polite::Error>() {
///         Some(reqwest_polite::Error::CircuitOpen { host, retry_in }) => {
///             eprintln!("{host} is down; try again in {retry_in:?}");
///         }
///         Some(other) => eprintln!("not sent: {other}"),
///         None => eprintln!("another middleware failed: {inner}"),
///     }
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
    /// The server asked us to stay away for longer than `max_retry_after`, and that time has
    /// not passed yet.
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
    #[error("deadline would pass before {host} could be called (after {attempts} attempts)")]
    DeadlineExceeded {
        /// The host key (`scheme://host:port`).
        host: String,
        /// Attempts already sent for this request (0: none was sent).
        attempts: u32,
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
    /// The host key the error is about.
    pub fn host(&self) -> &str {
        match self {
            Error::CircuitOpen { host, .. }
            | Error::CoolingDown { host, .. }
            | Error::DeadlineExceeded { host, .. }
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

impl From<Error> for reqwest_middleware::Error {
    fn from(err: Error) -> Self {
        reqwest_middleware::Error::middleware(err)
    }
}
