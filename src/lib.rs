//! placeholder docs
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod adaptive;
mod breaker;
mod builder;
mod error;
mod extensions;
mod host;
mod limit;
mod middleware;
mod retry;
mod signals;
mod store;

pub use crate::breaker::{Breaker, BreakerConfigError, BreakerPhase, BreakerSnapshot};
pub use crate::builder::{Polite, PoliteBuilder, bench_support};
pub use crate::error::Error;
pub use crate::extensions::{Cost, Deadline, NoRetry};
pub use crate::host::{Counters, HostSnapshot};
pub use crate::limit::{InvalidLimit, Limit, SAFETY_MARGIN_PERCENT};
pub use crate::retry::{Backoff, Delays, InvalidBackoff, Jitter, RetryBudget, Retryable};
