//! What can go wrong with Redis, and what the store does then.

use std::time::Duration;

use ::redis::{ErrorKind, RedisError};

/// What a [`RedisStore`](crate::RedisStore) does when Redis does not answer: unreachable,
/// slower than the [timeout](crate::RedisStore::timeout), or answering errors (out of memory,
/// loading, a key of the wrong type).
///
/// ```no_run
/// # async fn run() -> Result<(), reqwest_polite::RedisStoreError> {
/// use reqwest_polite::{Fallback, RedisStore};
///
/// // refuse to send rather than pace on this process's share alone
/// let store = RedisStore::connect("redis://127.0.0.1/").await?.fallback(Fallback::FailClosed);
/// # let _ = store;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fallback {
    /// Pace locally, at the scope's limit divided by the number of processes seen alive at the
    /// last heartbeat: the fleet as a whole stays near its quota without Redis. Each shared
    /// schedule becomes one local schedule (a port-less `host_limit` paces all its ports as
    /// one). A cost above this process's share waits until the share has accrued it, bounded
    /// by `max_retry_after` and the deadline like any wait for a slot. Redis is asked
    /// again with backoff (100 ms, doubling, at most 2 s), and sharing resumes when it answers.
    /// A warning is logged once per outage (through `tracing`), and again when Redis is back.
    #[default]
    Local,
    /// Refuse the request with the store's [`RedisStoreError`]: nothing is sent that the shared
    /// schedule did not admit.
    FailClosed,
}

/// Why the [`RedisStore`](crate::RedisStore) could not answer.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RedisStoreError {
    /// The URL could not be used: it did not parse, or it names a scheme this build cannot
    /// speak (`rediss://` needs the `redis-tls` feature).
    #[error("invalid Redis URL: {0}")]
    InvalidUrl(#[source] RedisError),
    /// Redis could not be reached, or the connection broke.
    #[error("Redis unreachable: {0}")]
    Unreachable(#[source] RedisError),
    /// Redis did not answer within the store's [timeout](crate::RedisStore::timeout).
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis answered with an error. `code` is its error code: `WRONGTYPE` (a key under the
    /// store's prefix holds something else), `OOM` (`maxmemory` reached), `LOADING`, `NOPERM`...
    #[error("Redis answered {code}: {source}")]
    Server {
        /// The error code Redis sent.
        code: String,
        /// The error as the redis crate reported it.
        source: RedisError,
    },
    /// Redis answered something the store's scripts never return.
    #[error("unexpected answer from Redis: {0}")]
    Reply(String),
    /// Redis failed recently, and the store waits before asking it again (backoff).
    #[error("Redis failed recently; next attempt in {retry_in:?}")]
    Backoff {
        /// How long until the store asks Redis again.
        retry_in: Duration,
    },
    /// The operating system's random source failed, so no fleet secret could be made.
    #[error("no randomness for a fleet secret: {0}")]
    Random(String),
}

impl RedisStoreError {
    pub(super) fn from_redis(err: RedisError) -> Self {
        if let Some(code) = err.code() {
            return RedisStoreError::Server {
                code: code.to_owned(),
                source: err,
            };
        }
        match err.kind() {
            ErrorKind::UnexpectedReturnType | ErrorKind::Parse => {
                RedisStoreError::Reply(err.to_string())
            }
            _ => RedisStoreError::Unreachable(err),
        }
    }

    /// True when the failure concerns Redis as a whole rather than one key: the store then backs
    /// off instead of asking again at once.
    pub(super) fn is_outage(&self) -> bool {
        match self {
            RedisStoreError::Unreachable(_)
            | RedisStoreError::Timeout(_)
            | RedisStoreError::Backoff { .. } => true,
            RedisStoreError::Server { code, .. } => matches!(
                code.as_str(),
                "OOM"
                    | "LOADING"
                    | "BUSY"
                    | "MASTERDOWN"
                    | "CLUSTERDOWN"
                    | "TRYAGAIN"
                    | "READONLY"
                    | "MISCONF"
                    | "NOAUTH"
                    | "WRONGPASS"
                    | "NOPERM"
            ),
            RedisStoreError::InvalidUrl(_)
            | RedisStoreError::Reply(_)
            | RedisStoreError::Random(_) => false,
        }
    }
}
